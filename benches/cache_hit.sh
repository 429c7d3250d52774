#!/usr/bin/env bash
# Route cache hit path vs nginx serving the same bytes as a static file: same wrk,
# same connections, threads and duration, one run, loopback only. Issue 5's bar:
# >= 0.7x nginx's requests/s, p99 < 2 ms.
#
#   bash benches/cache_hit.sh            # needs: wrk, nginx (apt-get install wrk nginx-light)
#
# Env: DURATION (default 10s), CONNECTIONS (default 50), THREADS (default 2),
#      FEED (default bart), ROUTE (default 01).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
FEED=${FEED:-bart}
ROUTE=${ROUTE:-01}
SVC_PORT=18000
NGINX_PORT=18080

for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install wrk nginx-light curl" >&2; exit 2; }
done
cargo build --release --quiet
tmp=$(mktemp -d /tmp/gtfs-bench.XXXXXX)
chmod 755 "$tmp"
cleanup() {
    [ -n "${svc:-}" ] && kill "$svc" 2>/dev/null && wait "$svc" 2>/dev/null || true
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

cat > "$tmp/bench.toml" <<TOML
[[instances]]
name = "bench"
url = "http://127.0.0.1:9"
api = "gtfs"
[[instances.feeds]]
gtfs_id = "$FEED"
zip_url = "$PWD/../shared/fixtures/gtfs/$FEED.zip"
TOML
sed -i "s|zip_url = \"/|zip_url = \"file:///|" "$tmp/bench.toml"

GTFS_LISTEN=127.0.0.1:$SVC_PORT GTFS_DATA_DIR=$tmp/data RUST_LOG=warn \
    ./target/release/gtfs-fetch --config "$tmp/bench.toml" serve >"$tmp/service.log" 2>&1 &
svc=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$SVC_PORT/readyz" >/dev/null && break
    sleep 0.2
done
url="http://127.0.0.1:$SVC_PORT/feeds/$FEED/routes/$ROUTE"
mkdir -p "$tmp/www"
curl -sf "$url" -o "$tmp/www/route.json"
curl -sf "$url" -o /dev/null   # now cached
bytes=$(stat -c %s "$tmp/www/route.json")

cat > "$tmp/nginx.conf" <<NGINX
worker_processes $THREADS;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000;
    default_type application/json;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $tmp/www;
    }
}
NGINX
nginx -c "$tmp/nginx.conf"
sleep 0.5
curl -sf "http://127.0.0.1:$NGINX_PORT/route.json" | cmp - "$tmp/www/route.json"

run() { wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1"; }
# Warm up both, then measure nginx, the service, nginx again (the machine is shared).
run "http://127.0.0.1:$NGINX_PORT/route.json" >/dev/null
run "$url" >/dev/null
n1=$(run "http://127.0.0.1:$NGINX_PORT/route.json")
s1=$(run "$url")
n2=$(run "http://127.0.0.1:$NGINX_PORT/route.json")
s2=$(run "$url")

rps() { awk '/^Requests\/sec/ {print $2}' <<<"$1"; }
pct() { awk -v p="$2" '$1 == p {print $2}' <<<"$1"; }
echo "## Cache hit vs nginx: $bytes-byte route answer ($FEED/$ROUTE), wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
echo
echo "| round | server | requests/s | p50 | p90 | p99 |"
echo "|---|---|---|---|---|---|"
for r in 1 2; do
    n=n$r; s=s$r
    echo "| $r | nginx | $(rps "${!n}") | $(pct "${!n}" 50%) | $(pct "${!n}" 90%) | $(pct "${!n}" 99%) |"
    echo "| $r | gtfs-fetch | $(rps "${!s}") | $(pct "${!s}" 50%) | $(pct "${!s}" 90%) | $(pct "${!s}" 99%) |"
done
for r in 1 2; do
    n=n$r; s=s$r
    awk -v a="$(rps "${!s}")" -v b="$(rps "${!n}")" -v r="$r" 'BEGIN { printf "round %s: gtfs-fetch / nginx requests/s = %.2fx\n", r, a / b }'
done
