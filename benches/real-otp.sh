#!/usr/bin/env bash
# Issue 9, point 6: the service's HTTP client against a real OTP 2.9.0 (benches/real_otp.rs,
# results in BENCHMARKS.md), all on loopback, in one run:
#   (a) pooled vs unpooled OtpClient, OTP directly;
#   (b) a route query over TLS with round-trip time added:
#       client -> toxiproxy (latency toxic) -> nginx (TLS terminator) -> OTP.
# tcpdump on lo counts the SYNs to every port the clients dial. Every process started here
# is stopped at the end (trap), every load is bounded (requests counted, `timeout` around
# the bench).
#
#   bash benches/real-otp.sh
#
# Needs: a JDK for OTP (see scripts/real-otp.sh), nginx, openssl, curl, tcpdump (root or
# CAP_NET_RAW), toxiproxy-server (found on PATH, in TOXIPROXY_SERVER, or built into
# target/toxiproxy with `go install`).
# Env: OTP_CACHE (scripts/real-otp.sh's, default target/otp: fetched and built there once), OTP_VERSION
# (2.9.0), BASE_PORT (19150; uses BASE_PORT..BASE_PORT+9), LATENCY_MS (latency toxic per
# direction, default 2, so 4 ms of round trip), ROUTE (caltrain:Lo-130), KEEP (a directory:
# the logs are copied there: tcpdump's SYNs, nginx's access log, OTP's and toxiproxy's).
set -euo pipefail
cd "$(dirname "$0")/.."

OTP_VERSION=${OTP_VERSION:-2.9.0}
BASE_PORT=${BASE_PORT:-19150}
LATENCY_MS=${LATENCY_MS:-2}
ROUTE=${ROUTE:-caltrain:Lo-130}
export OTP_CACHE=${OTP_CACHE:-target/otp}

OTP_PORT=$BASE_PORT               # OTP also takes OTP_PORT+1 (unused on 2.x)
NGINX_TLS=$((BASE_PORT + 2))
NGINX_PLAIN=$((BASE_PORT + 3))
TOXI_API=$((BASE_PORT + 4))
TOXI_TLS_RTT=$((BASE_PORT + 5))   # -> nginx TLS, latency toxics
TOXI_PLAIN_RTT=$((BASE_PORT + 6)) # -> nginx plain, latency toxics
TOXI_TLS_PROXY=$((BASE_PORT + 7)) # -> nginx TLS, no toxic
SENTINEL=$((BASE_PORT + 9))       # nothing listens: a SYN to it marks a point in tcpdump's log

started=$(date +%s)
log() { echo "[$(($(date +%s) - started)) s] $*" >&2; }
for tool in nginx openssl curl tcpdump timeout; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done
for port in $(seq "$BASE_PORT" $((BASE_PORT + 9))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use on 127.0.0.1; set BASE_PORT" >&2
        exit 2
    fi
done

# toxiproxy: PATH, TOXIPROXY_SERVER, or built once into target/toxiproxy. The module proxy's
# @latest of github.com/Shopify/toxiproxy/v2 is v2.5.0, whose commands live in cmd/server
# (there is no cmd/toxiproxy-server); v2.12.0 is the newest release.
TOXIPROXY_SERVER=${TOXIPROXY_SERVER:-$(command -v toxiproxy-server || true)}
if [ -z "$TOXIPROXY_SERVER" ]; then
    TOXIPROXY_SERVER=$PWD/target/toxiproxy/toxiproxy-server
    if [ ! -x "$TOXIPROXY_SERVER" ]; then
        command -v go >/dev/null || { echo "no toxiproxy-server and no go to build it" >&2; exit 2; }
        mkdir -p target/toxiproxy
        GOBIN=$PWD/target/toxiproxy go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0
        mv target/toxiproxy/server "$TOXIPROXY_SERVER"
    fi
fi

# Build before starting anything (the target dir is shared: this may wait on its lock).
build_log=$(mktemp /tmp/gtfs-real-otp-build.XXXXXX)
bench_bin=$(cargo bench --bench real_otp --no-run --message-format=json 2>"$build_log" \
    | grep -o '"executable":"[^"]*"' | sed 's/"executable":"//; s/"$//' | grep real_otp | tail -1 || true)
if [ ! -x "$bench_bin" ]; then
    echo "cannot build the real_otp bench:" >&2
    tail -30 "$build_log" >&2
    rm -f "$build_log"
    exit 1
fi
rm -f "$build_log"

log "built $bench_bin"
tmp=$(mktemp -d /tmp/gtfs-real-otp.XXXXXX)
chmod 755 "$tmp"
pids=()
stop() { # pid: TERM, up to 10 s, then KILL
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}
cleanup() {
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done
    if [ -f "$tmp/nginx.pid" ]; then stop "$(cat "$tmp/nginx.pid")"; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A self-signed CA and nginx's certificate for 127.0.0.1 signed by it (RSA 2048). Not one
# self-signed certificate: openssl's has CA:TRUE, which rustls (webpki) refuses as a
# server's certificate (CaUsedAsEndEntity).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=gtfs-fetch bench CA" \
    -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.csr" 2>/dev/null
printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$tmp/cert.ext"
openssl x509 -req -in "$tmp/cert.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
    -days 2 -extfile "$tmp/cert.ext" -out "$tmp/cert.pem" 2>/dev/null

log "starting OTP $OTP_VERSION on 127.0.0.1:$OTP_PORT"
bash scripts/real-otp.sh serve "$OTP_VERSION" "$OTP_PORT" >"$tmp/otp.log" 2>&1 &
pids+=($!)
otp_up=""
for _ in $(seq 240); do # 120 s
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 -X POST -H 'Content-Type: application/json' \
        -d '{"query":"{feeds{feedId}}"}' "http://127.0.0.1:$OTP_PORT/otp/gtfs/v1" || true)
    [ "$code" = 200 ] && { otp_up=1; break; }
    kill -0 "${pids[0]}" 2>/dev/null || break
    sleep 0.5
done
[ -n "$otp_up" ] || { echo "OTP did not come up:" >&2; tail -20 "$tmp/otp.log" >&2; exit 1; }

log "OTP answers"
# nginx: TLS and plain listeners, both proxying to OTP over kept-alive upstream connections
# (closed by nginx before OTP's own limits: 256 requests, ~30 s idle).
proxy='location / {
            proxy_pass http://otp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffers 16 16k;
            proxy_max_temp_file_size 0;
        }
        location = /ping { return 204; }'
cat >"$tmp/nginx.conf" <<NGINX
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 1024; }
http {
    log_format bench '\$http_x_bench \$ssl_protocol \$ssl_session_reused \$connection \$connection_requests';
    access_log $tmp/access.log bench buffer=256k flush=1s;
    client_body_temp_path $tmp/body;
    proxy_temp_path $tmp/proxy;
    fastcgi_temp_path $tmp/fastcgi;
    uwsgi_temp_path $tmp/uwsgi;
    scgi_temp_path $tmp/scgi;
    keepalive_requests 100000;
    keepalive_timeout 75s;
    tcp_nodelay on;
    upstream otp {
        server 127.0.0.1:$OTP_PORT;
        keepalive 64;
        keepalive_requests 200;
        keepalive_timeout 20s;
    }
    server {
        listen 127.0.0.1:$NGINX_TLS ssl;
        ssl_certificate $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3; # nginx 1.22's default has no TLSv1.3
        $proxy
    }
    server {
        listen 127.0.0.1:$NGINX_PLAIN;
        $proxy
    }
}
NGINX
nginx -c "$tmp/nginx.conf"
for _ in $(seq 50); do [ -s "$tmp/nginx.pid" ] && break; sleep 0.1; done
curl -sf --cacert "$tmp/ca.pem" -o /dev/null -X POST -H 'Content-Type: application/json' \
    -d '{"query":"{feeds{feedId}}"}' "https://127.0.0.1:$NGINX_TLS/otp/gtfs/v1" \
    || { echo "nginx TLS does not answer" >&2; cat "$tmp/nginx.err" >&2; exit 1; }

# toxiproxy: three proxies; the latency toxic on both streams of two of them.
LOG_LEVEL=warn "$TOXIPROXY_SERVER" -host 127.0.0.1 -port "$TOXI_API" >"$tmp/toxiproxy.log" 2>&1 &
pids+=($!)
api=http://127.0.0.1:$TOXI_API
for _ in $(seq 50); do curl -sf "$api/version" >/dev/null && break; sleep 0.1; done
proxy() { # name listen upstream
    curl -sf -X POST "$api/proxies" -d "{\"name\":\"$1\",\"listen\":\"127.0.0.1:$2\",\"upstream\":\"127.0.0.1:$3\",\"enabled\":true}" >/dev/null
}
latency() { # proxy stream
    curl -sf -X POST "$api/proxies/$1/toxics" -d "{\"name\":\"latency_$2\",\"type\":\"latency\",\"stream\":\"$2\",\"toxicity\":1.0,\"attributes\":{\"latency\":$LATENCY_MS,\"jitter\":0}}" >/dev/null
}
proxy tls_rtt "$TOXI_TLS_RTT" "$NGINX_TLS"
proxy plain_rtt "$TOXI_PLAIN_RTT" "$NGINX_PLAIN"
proxy tls_proxy "$TOXI_TLS_PROXY" "$NGINX_TLS"
for p in tls_rtt plain_rtt; do latency "$p" upstream; latency "$p" downstream; done
echo "toxiproxy: $(curl -sf "$api/proxies" | tr -d '\n')" >&2

# tcpdump: SYNs (without ACK) to every port a client dials, and the sentinel.
# --immediate-mode: packets reach tcpdump at once, not when a kernel buffer block fills;
# -B 65536 (KiB): with the default buffer it dropped SYNs during the unpooled bursts.
filter="tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and (dst port $OTP_PORT"
for port in $NGINX_TLS $NGINX_PLAIN $TOXI_TLS_RTT $TOXI_PLAIN_RTT $TOXI_TLS_PROXY $SENTINEL; do
    filter="$filter or dst port $port"
done
filter="$filter)"
tcpdump -i lo -nn -l -U --immediate-mode -B 65536 "tcp and $filter" >"$tmp/syn.log" 2>"$tmp/tcpdump.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$tmp/tcpdump.err" && break; sleep 0.1; done
grep -q "listening on" "$tmp/tcpdump.err" || { echo "tcpdump did not start:" >&2; cat "$tmp/tcpdump.err" >&2; exit 1; }

log "running the bench"
echo "<!-- benches/real-otp.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), nproc $(nproc), $(uname -r), OTP $OTP_VERSION, route $ROUTE, latency toxic ${LATENCY_MS} ms each way -->"
echo
REAL_OTP_URL=http://127.0.0.1:$OTP_PORT \
    REAL_OTP_ROUTE=$ROUTE \
    REAL_OTP_SYN_LOG=$tmp/syn.log \
    REAL_OTP_SENTINEL_PORT=$SENTINEL \
    REAL_OTP_CA=$tmp/ca.pem \
    REAL_OTP_TLS_RTT=https://127.0.0.1:$TOXI_TLS_RTT \
    REAL_OTP_PLAIN_RTT=http://127.0.0.1:$TOXI_PLAIN_RTT \
    REAL_OTP_TLS_PROXY=https://127.0.0.1:$TOXI_TLS_PROXY \
    REAL_OTP_TLS_DIRECT=https://127.0.0.1:$NGINX_TLS \
    REAL_OTP_PLAIN_DIRECT=http://127.0.0.1:$NGINX_PLAIN \
    REAL_OTP_ADDED_RTT_MS=$((2 * LATENCY_MS)) \
    timeout 300 "$bench_bin" || bench_rc=$?

log "bench done"
# What nginx saw per variant of (b): TLS version and whether the session was resumed.
kill -QUIT "$(cat "$tmp/nginx.pid")" # graceful: flushes the access log
for _ in $(seq 100); do kill -0 "$(cat "$tmp/nginx.pid" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
echo "nginx, requests of (b) per variant (x-bench header), TLS protocol, session reused (r) or not (.):"
echo
echo '```'
awk '$1 != "-" { n[$1 " " $2 " " $3]++ } END { for (k in n) print k, n[k] }' "$tmp/access.log" | sort
echo '```'
echo
upstream_syns=$(grep -c "> 127.0.0.1.$OTP_PORT:" "$tmp/syn.log" || true)
echo "SYNs to OTP's port over the whole run (a's clients and nginx's upstream connections): $upstream_syns."
stop "${pids[2]}" # tcpdump prints its counters when it stops
echo "tcpdump: $(grep -E 'captured|received|dropped' "$tmp/tcpdump.err" | tr '\n' ' ')"
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$tmp"/*.log "$tmp"/*.err "$KEEP"/; fi
echo "<!-- script total $(($(date +%s) - started)) s -->"
exit "${bench_rc:-0}"
