# Sourced by scripts/browser-test.sh and scripts/schemathesis.sh: a throwaway service on a
# free loopback port with a private embedded PostgreSQL (no DATABASE_URL, GTFS_DATA_DIR
# in a temporary directory), stopped gracefully on exit whatever happens.
#
#   source scripts/lib/service.sh
#   service_workdir                     # sets $work (a temporary directory) and $port
#   (write $work/config.toml)
#   service_start "$bin" NAME=value...  # `serve` with it and these variables; sets $pid, $base
#   service_wait_ready                  # until /readyz answers 200 (at most 120 s)
#   trap 'service_cleanup $? LOG' EXIT  # stop it, show and keep its log as LOG, remove $work

# A free loopback port: bound by the kernel, released, then given to the service. A race
# with another process taking it in between is possible but shows as a clear bind error.
service_workdir() {
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    work=$(mktemp -d)
    # As root the embedded PostgreSQL runs as the postgres user, who must pass through
    # this directory to reach data/ (mktemp makes it 0700).
    chmod o+x "$work"
    pid=""
}

service_start() {
    local bin=$1
    shift
    echo "== starting the service on 127.0.0.1:$port (data in $work)"
    env -u DATABASE_URL \
        GTFS_CONFIG="$work/config.toml" \
        GTFS_LISTEN="127.0.0.1:$port" \
        GTFS_DATA_DIR="$work/data" \
        RUST_LOG="${RUST_LOG:-warn}" \
        "$@" \
        "$bin" serve >"$work/service.log" 2>&1 &
    pid=$!
    base="http://127.0.0.1:$port"
}

service_wait_ready() {
    for _ in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || {
            echo "the service exited before it was ready" >&2
            exit 1
        }
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "the service was not ready within 120 s: $(curl -s "$base/readyz")" >&2
    exit 1
}

# service_cleanup RC LOG: for the EXIT trap; exits with RC.
service_cleanup() {
    local rc=$1 log=$2
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        # SIGTERM: a graceful stop, so the embedded PostgreSQL is stopped too.
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -s "$work/service.log" ]; then
        echo "== last lines of the service's log ($log)"
        tail -n 20 "$work/service.log" >&2 || true
    fi
    [ -s "$work/service.log" ] && cp "$work/service.log" "$log" 2>/dev/null || true
    rm -rf "$work"
    exit "$rc"
}
