#!/usr/bin/env bash
# Replicas on one database (issue 12, part 7), with real processes on loopback: start-up
# from the feed store vs from upstream, the cost of storing a version, upstream requests
# per interval for 1, 3 and 5 replicas, and the time from a stored version to the last
# replica serving it. The measuring is benches/replicas.py (its docstring says what and
# how); this script provides what it needs: a release build, nginx as the upstream, and
# a throwaway PostgreSQL (pg_virtualenv).
#
#   bash benches/replicas.sh                       # wmata, 5 rounds, 5 s interval, 30 s counts
#   FIXTURE=caltrain ROUNDS=3 DURATION=60 bash benches/replicas.sh
#
# Env: FIXTURE, ROUNDS, INTERVAL, DURATION, VERSIONS, PORT (18600..18605), OUT
# (target/replicas-bench), BIN (target/release/gtfs-fetch, built here).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${INSIDE_PG:-}" ]; then
    for tool in nginx python3 pg_virtualenv psql; do
        command -v "$tool" >/dev/null || {
            echo "missing $tool: apt-get install nginx-light python3 postgresql-common postgresql-client" >&2
            exit 2
        }
    done
    [ -n "${BIN:-}" ] || cargo build --release --locked --quiet --bin gtfs-fetch
    # pg_virtualenv runs this script again with PGHOST, PGPORT, PGUSER, ... set.
    exec env INSIDE_PG=1 pg_virtualenv bash "$0" "$@"
fi
exec python3 benches/replicas.py
