#!/usr/bin/env bash
# Instructions per cache hit answered 304 (Accept-Encoding: gzip + If-None-Match), counted by
# callgrind over the whole process: stable on this shared machine where timings are not.
# The service runs under valgrind on bart (a local zip); counters are zeroed after a
# warm-up, wrk sends 304 requests on one connection for 10 s, then the count is divided
# by the requests wrk saw.
#
#   bash benches/hit_instructions.sh [BINARY]    # default target/release/gtfs-fetch; needs valgrind, wrk, curl
set -eu
cd "$(dirname "$0")/.."
bin=${1:-target/release/gtfs-fetch}
port=${PORT:-18301}
tmp=$(mktemp -d /tmp/gtfs-hit.XXXXXX)
chmod 755 "$tmp"   # the embedded PostgreSQL runs as another user
trap 'kill "${pid:-0}" 2>/dev/null; rm -rf "$tmp"' EXIT
out=$tmp/callgrind.out
cat >"$tmp/bench.toml" <<TOML
[[instances]]
name = "bench"
url = "http://127.0.0.1:9"
api = "gtfs"
[[instances.feeds]]
gtfs_id = "bart"
zip_url = "file://$PWD/../shared/fixtures/gtfs/bart.zip"
TOML
GTFS_LISTEN=127.0.0.1:$port GTFS_DATA_DIR=$tmp/data RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file=$out "$bin" --config "$tmp/bench.toml" serve >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 2; done
curl -sf http://127.0.0.1:$port/readyz >/dev/null || { cat "$tmp/log" >&2; exit 1; }
u=http://127.0.0.1:$port/feeds/bart/routes/01
et=$(curl -s -D - -o /dev/null -H 'Accept-Encoding: gzip' $u | tr -d '\r' | awk 'tolower($1)=="etag:"{print $2}')
for _ in 1 2 3; do curl -s -o /dev/null -H 'Accept-Encoding: gzip' $u; done
callgrind_control -z $pid >/dev/null
n=$(wrk -t1 -c1 -d10s -H 'Accept-Encoding: gzip' -H "If-None-Match: $et" $u | awk '/requests in/ {print $1}')
callgrind_control -d $pid >/dev/null
kill $pid; wait $pid 2>/dev/null || true
total=$(callgrind_annotate $out.1 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "$bin: $n requests, $total instructions, $((total / n)) per 304 hit"
