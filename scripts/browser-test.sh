#!/usr/bin/env bash
# The operator console (/ui) in a real browser: Debian's headless Chromium, driven by a
# pinned playwright-core from npm (tests/browser/, `npm ci`; never `playwright install`,
# which would download a browser of its own).
#
#   bash scripts/browser-test.sh            # what .ci/run runs
#   BIN=target/release/gtfs-fetch bash scripts/browser-test.sh   # another build
#
# What it does: installs chromium (and node/npm) from Debian when missing and runs
# `npm ci` in tests/browser/ when its node_modules are not the locked version; builds the
# debug binary (already built after `cargo test`) unless BIN is given; starts it on a free
# loopback port with a throwaway embedded PostgreSQL (no DATABASE_URL, GTFS_DATA_DIR in a
# temp dir), one `api = "gtfs"` instance loading two zips from files: bart from
# ../shared/fixtures (a real feed) and tests/browser/feed/ zipped here (a tiny feed whose
# calendar runs every day, so waybills can be written for today's date); creates three
# waybills for today with curl and moves two of them (in progress, cancelled); then
# tests/browser/console.mjs opens /ui with the network cut (no host name resolves but
# the service's; any request elsewhere is aborted and fails the test), checks what the
# page shows against /instances, /feeds, /memory-stats and /waybills, and saves
# target/console.png and target/console-phone.png (390x844); then it opens the API
# explorer (/docs) the same way and checks that Swagger UI renders every operation of
# /openapi.json with nothing asked of another site (target/docs.png).
# Bounded in time (TIMEOUT_S for the browser part, 120 s for the service to be ready);
# the service and the temp dir are gone on exit, whatever happens. Exit code: non-zero
# on any failed check; the last line says `browser: N passed, M failed`.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "== $("$CHROMIUM" --version 2>/dev/null || echo "chromium at $CHROMIUM"), node $(node --version)"

# npm ci when node_modules is missing or not the locked version.
locked=$(node -e 'console.log(require("./tests/browser/package-lock.json").packages["node_modules/playwright-core"].version)')
installed=$(node -e 'try { console.log(require("./tests/browser/node_modules/playwright-core/package.json").version) } catch { console.log("none") }')
if [ "$locked" != "$installed" ]; then
    echo "== npm ci in tests/browser (playwright-core $locked)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ -z "${BIN:-}" ]; then
    echo "== cargo build"
    cargo build --locked --quiet
    BIN=target/debug/gtfs-fetch
fi

FIXTURES=$(cd ../shared/fixtures/gtfs && pwd)
source scripts/lib/service.sh
service_workdir
mkdir -p target
trap 'service_cleanup $? target/browser-service.log' EXIT
trap 'exit 130' INT TERM

# The tiny feed, zipped from its text files.
python3 - "$work/today.zip" tests/browser/feed <<'EOF'
import os, sys, zipfile
out, src = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for name in sorted(os.listdir(src)):
        z.write(os.path.join(src, name), name)
EOF
chmod o+r "$work/today.zip"

cat >"$work/config.toml" <<EOF
[[instances]]
name = "fixtures"
url = "http://127.0.0.1:9"
api = "gtfs"
[[instances.feeds]]
gtfs_id = "bart"
zip_url = "file://$FIXTURES/bart.zip"
[[instances.feeds]]
gtfs_id = "today"
zip_url = "file://$work/today.zip"
EOF

# An ops token is set: loopback clients (the browser here) still need none.
service_start "$BIN" GTFS_OPS_TOKEN="browser-test-ops-token"
service_wait_ready

# Three waybills for today (the browser's date: same machine, same time zone); one
# stays issued, one is started, one cancelled.
today=$(date +%F)
waybill() { # vehicle driver route trip -> id
    curl -sS --fail-with-body -X POST "$base/waybills" -H 'content-type: application/json' \
        -d "{\"service_date\": \"$today\", \"vehicle_id\": \"$1\", \"driver_id\": \"$2\",
             \"gtfs_id\": \"today\", \"route_id\": \"$3\", \"trip_ids\": [\"$4\"]}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
move() { # id body
    curl -sS --fail-with-body -o /dev/null -X PATCH "$base/waybills/$1" -H 'if-match: 1' \
        -H 'content-type: application/json' -d "$2"
}
echo "== creating waybills for $today"
waybill bus-1 driver-1 1 1-0800 >/dev/null
started=$(waybill bus-2 driver-2 1 1-1000)
cancelled=$(waybill bus-3 driver-3 2 2-0900)
move "$started" '{"status": "in_progress", "odometer_start": 12000}'
move "$cancelled" '{"status": "cancelled"}'
expect='{"issued":1,"in_progress":1,"completed":0,"cancelled":1}'

echo "== the console in Chromium"
BASE="$base" OUT="$PWD/target" CHROMIUM="$CHROMIUM" EXPECT_WAYBILLS="$expect" \
    TIMEOUT_S="${TIMEOUT_S:-120}" timeout 300 node tests/browser/console.mjs
