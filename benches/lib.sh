# Sourced by the cache-hit benchmarks (cache_hit.sh, hit_syscalls.sh,
# hit_instructions.sh): a temporary directory, the service on fixture zips read from
# files, and nginx serving files with `gzip_static`, all stopped and removed on exit.
#
#   source benches/lib.sh
#   bench_tmp NAME                 # sets $tmp; nginx serves $tmp/www
#   bench_config FEED...           # $tmp/bench.toml: one `gtfs` instance loading these
#                                  # fixture zips from ../shared (no upstream is asked)
#   bench_serve BIN PORT [WRAPPER...]  # the service (under WRAPPER, e.g. valgrind) on
#                                  # 127.0.0.1:PORT; $svc is its pid; returns once ready
#   bench_nginx PORT WORKERS       # nginx on 127.0.0.1:PORT serving $tmp/www

bench_cleanup() {
    [ -n "${svc:-}" ] && kill "$svc" 2>/dev/null && wait "$svc" 2>/dev/null || true
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    rm -rf "$tmp"
}

bench_tmp() {
    tmp=$(mktemp -d "/tmp/$1.XXXXXX")
    # The embedded PostgreSQL and nginx's workers run as other users (under root).
    chmod 755 "$tmp"
    mkdir "$tmp/www"
    svc=""
    trap bench_cleanup EXIT
}

bench_config() {
    {
        echo '[[instances]]'
        echo 'name = "bench"'
        echo 'url = "http://127.0.0.1:9"'
        echo 'api = "gtfs"'
        local feed
        for feed in "$@"; do
            echo '[[instances.feeds]]'
            echo "gtfs_id = \"$feed\""
            echo "zip_url = \"file://$PWD/../shared/fixtures/gtfs/$feed.zip\""
        done
    } >"$tmp/bench.toml"
}

bench_serve() {
    local bin=$1 port=$2
    shift 2
    GTFS_LISTEN=127.0.0.1:$port GTFS_DATA_DIR=$tmp/data RUST_LOG=warn \
        "$@" "$bin" --config "$tmp/bench.toml" serve >"$tmp/service.log" 2>&1 &
    svc=$!
    # Five minutes: under valgrind the start-up takes a while.
    local _
    for _ in $(seq 1 1500); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
        kill -0 "$svc" 2>/dev/null || break
        sleep 0.2
    done
    echo "the service did not get ready:" >&2
    cat "$tmp/service.log" >&2
    exit 1
}

bench_nginx() {
    local port=$1 workers=$2
    cat >"$tmp/nginx.conf" <<NGINX
worker_processes $workers;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    default_type application/json;
    gzip_static on;
    gzip_vary on;
    server { listen 127.0.0.1:$port; root $tmp/www; }
}
NGINX
    nginx -c "$tmp/nginx.conf"
    sleep 0.5
}
