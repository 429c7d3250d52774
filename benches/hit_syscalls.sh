#!/usr/bin/env bash
# Where a cache hit's time goes outside our code: CPU time, context switches and system
# calls per request, for the service and for nginx serving the same bytes (`gzip_static`),
# in one run (issue 13). perf counts them on each server's processes while wrk drives it.
#
#   bash benches/hit_syscalls.sh           # bart route 01; needs perf, wrk, nginx, curl
#   BIN=/tmp/other-build bash benches/hit_syscalls.sh
#
# Cases: `gzip` (Accept-Encoding: gzip) and `304` (the same plus If-None-Match with each
# server's own ETag); wrk -t2 -c50 -d5s each, twice, for each of four servers:
#   nginx     the same bytes as static files, `gzip_static on`, 2 workers
#   hyper     the floor of our HTTP stack: examples/hit_floor.rs on bare hyper
#   axum      the same on an axum Router with one route, served as the service is
#   service   the service's route cache hit
# `hyper` and `axum` show what the stack itself costs per request, before any of our code.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/gtfs-fetch}
[ -x "$BIN" ] || cargo build --release --locked --quiet --bin gtfs-fetch
FLOOR=target/release/examples/hit_floor
[ -x "$FLOOR" ] || cargo build --release --locked --quiet --example hit_floor
SVC_PORT=${SVC_PORT:-18311}
NGINX_PORT=${NGINX_PORT:-18312}
HYPER_PORT=${HYPER_PORT:-18313}
AXUM_PORT=${AXUM_PORT:-18314}
source benches/lib.sh
bench_tmp gtfs-sys
bench_config bart
bench_serve "$BIN" "$SVC_PORT"
bench_nginx "$NGINX_PORT" 2
surl="http://127.0.0.1:$SVC_PORT/feeds/bart/routes/01"
curl -sf "$surl" -o "$tmp/www/r.json"
curl -sf -H 'Accept-Encoding: gzip' "$surl" -o "$tmp/www/r.json.gz"
touch -r "$tmp/www/r.json" "$tmp/www/r.json.gz"
nurl="http://127.0.0.1:$NGINX_PORT/r.json"
ngx_pids=$( (cat "$tmp/nginx.pid"; pgrep -P "$(cat "$tmp/nginx.pid")") | paste -sd,)
floors=()
trap 'kill "${floors[@]}" 2>/dev/null || true; bench_cleanup' EXIT
"$FLOOR" hyper "127.0.0.1:$HYPER_PORT" "$tmp/www/r.json" "$tmp/www/r.json.gz" &
floors+=($!)
"$FLOOR" axum "127.0.0.1:$AXUM_PORT" "$tmp/www/r.json" "$tmp/www/r.json.gz" &
floors+=($!)
sleep 0.5
etag() { curl -sf -o /dev/null -D - -H 'Accept-Encoding: gzip' "$1" | tr -d '\r' | awk 'tolower($1) == "etag:" {print $2}'; }

# One measurement: prints "req/s cpu_ms_per_1k_req ctx_switches_per_req syscalls_per_req".
measure() {
    local url=$1 pids=$2
    shift 2
    wrk -t2 -c50 -d1s "$@" "$url" >/dev/null # warm-up
    perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$pids" \
        -o "$tmp/perf" -- sleep 5 &
    local perf=$!
    local out
    out=$(wrk -t2 -c50 -d5s "$@" "$url")
    wait "$perf"
    local n rps
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    awk -F, -v n="$n" -v rps="$rps" '
        $3 == "task-clock" { cpu = $1 }
        $3 == "context-switches" { cs = $1 }
        $3 == "raw_syscalls:sys_enter" { sc = $1 }
        END { printf "%.0f %.1f %.3f %.2f\n", rps, cpu / n * 1000, cs / n, sc / n }' "$tmp/perf"
}

echo "| case | server | round | req/s | CPU µs per request | context switches per request | system calls per request |"
echo "|---|---|---:|---:|---:|---:|---:|"
for case in gzip 304; do
    for round in 1 2; do
        for server in nginx hyper axum service; do
            case $server in
            nginx) url=$nurl pids=$ngx_pids ;;
            hyper) url="http://127.0.0.1:$HYPER_PORT/r.json" pids=${floors[0]} ;;
            axum) url="http://127.0.0.1:$AXUM_PORT/r.json" pids=${floors[1]} ;;
            service) url=$surl pids=$svc ;;
            esac
            headers=(-H 'Accept-Encoding: gzip')
            [ "$case" = 304 ] && headers+=(-H "If-None-Match: $(etag "$url")")
            read -r rps cpu cs sc < <(measure "$url" "$pids" "${headers[@]}")
            echo "| $case | $server | $round | $rps | $cpu | $cs | $sc |"
        done
    done
done
