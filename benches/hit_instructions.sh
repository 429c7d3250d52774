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
source benches/lib.sh
bench_tmp gtfs-hit
out=$tmp/callgrind.out
bench_config bart
bench_serve "$bin" "$port" valgrind --tool=callgrind --callgrind-out-file="$out"
pid=$svc
u=http://127.0.0.1:$port/feeds/bart/routes/01
et=$(curl -s -D - -o /dev/null -H 'Accept-Encoding: gzip' $u | tr -d '\r' | awk 'tolower($1)=="etag:"{print $2}')
for _ in 1 2 3; do curl -s -o /dev/null -H 'Accept-Encoding: gzip' $u; done
callgrind_control -z $pid >/dev/null
n=$(wrk -t1 -c1 -d10s -H 'Accept-Encoding: gzip' -H "If-None-Match: $et" $u | awk '/requests in/ {print $1}')
callgrind_control -d $pid >/dev/null
kill "$pid"; wait "$pid" 2>/dev/null || true
svc=""
total=$(callgrind_annotate $out.1 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "$bin: $n requests, $total instructions, $((total / n)) per 304 hit"
