#!/usr/bin/env bash
# Schemathesis against the running service: requests generated from its own GET
# /openapi.json, every check on, stateful sequences along the document's links
# (POST /waybills -> GET/PATCH /waybills/{id}). Any finding fails the script.
#
#   bash scripts/schemathesis.sh              # what .ci/run runs
#   ST_MAX_EXAMPLES=1000 bash scripts/schemathesis.sh  # more cases per operation
#   ST_SEED=1 bash scripts/schemathesis.sh    # another seed (the default is fixed, so a
#                                             # CI failure replays locally)
#   bash scripts/schemathesis.sh --include-path /waybills   # extra `schemathesis run` flags
#
# What it does: a venv with a pinned schemathesis under target/ (reused while the version
# matches), a debug build of the service (after `cargo test` the binary is already built,
# a release build would cost CI about 6 minutes more), then the service on a free loopback
# port with a throwaway embedded PostgreSQL (no DATABASE_URL; GTFS_DATA_DIR in a temp dir)
# and one `api = "gtfs"` instance loading two fixture zips from ../shared, so routes,
# trips and waybills have real data. api_token and ops_token are set so the auth paths
# are exercised; schemathesis sends them through the document's security schemes
# (scripts/schemathesis.toml). The service is stopped and the temp dir removed on exit,
# whatever happens. Reports (JUnit, and a pytest file replaying each failure) go to
# target/schemathesis/.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

# The newest release when this was written that runs on Debian 12's Python 3.11. Pinned:
# a new schemathesis adds checks and generators, and CI should not fail on its own.
ST_VERSION=4.32.5
# About 2-3 minutes on a 2-core machine (5,000 requests or so); the coverage and stateful
# phases add their own cases.
ST_MAX_EXAMPLES=${ST_MAX_EXAMPLES:-400}
ST_SEED=${ST_SEED:-20251202}
VENV=target/schemathesis-venv
OUT=target/schemathesis
FIXTURES=$(cd ../shared/fixtures/gtfs && pwd)

if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null || true)" != "schemathesis, version $ST_VERSION" ]; then
    echo "== installing schemathesis $ST_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || {
        echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2
        exit 1
    }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi

echo "== cargo build"
cargo build --locked --quiet
bin=target/debug/gtfs-fetch

source scripts/lib/service.sh
service_workdir
trap 'service_cleanup $? "$OUT/service.log"' EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"

# sample-feed (2007-2010) and caltrain (2017-2019): small, both with calendars, so the
# trips and waybill endpoints answer 200/201 for the dates and ids scripts/schemathesis.toml
# feeds the generator. The instance url is never contacted: every feed is a local file.
cat >"$work/config.toml" <<EOF
[[instances]]
name = "fixtures"
url = "http://127.0.0.1:9"
api = "gtfs"
[[instances.feeds]]
gtfs_id = "sample-feed"
zip_url = "file://$FIXTURES/sample-feed.zip"
[[instances.feeds]]
gtfs_id = "caltrain"
zip_url = "file://$FIXTURES/caltrain.zip"
EOF

export ST_API_TOKEN="st-api-token" ST_OPS_TOKEN="st-ops-token"
# GTFS_REFRESH_MIN_SPACING=0: with the default 10 s nearly every generated POST
# /instances/{name}/refresh is a 429 and what lies behind it goes untested; a refresh of
# unchanged local zips costs a hash of each. The 429 itself is tested in tests/it.
service_start "$bin" \
    GTFS_API_TOKEN="$ST_API_TOKEN" \
    GTFS_OPS_TOKEN="$ST_OPS_TOKEN" \
    GTFS_REFRESH_MIN_SPACING=0
service_wait_ready

# The document as tested, beside the reports: a failure is read against it.
curl -s "$base/openapi.json" >"$OUT/openapi.json"

echo "== schemathesis $ST_VERSION: $ST_MAX_EXAMPLES examples per operation, seed $ST_SEED"
started=$SECONDS
# --checks all: every check; the few that do not apply to one operation are turned off
# for that operation only, in scripts/schemathesis.toml, each with the reason.
# --workers 1: one request at a time, so a failure replays the same way with the seed.
"$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml run "$base/openapi.json" \
    --checks all \
    --max-examples "$ST_MAX_EXAMPLES" \
    --seed "$ST_SEED" \
    --workers 1 \
    --generation-database none \
    --report junit,pytest \
    --report-dir "$OUT" \
    --no-color \
    "$@"
echo "== schemathesis found nothing ($((SECONDS - started)) s)"
