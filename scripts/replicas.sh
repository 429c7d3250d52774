#!/usr/bin/env bash
# Three replicas of the service on one PostgreSQL behind nginx, on loopback and without
# Docker: the shape of deploy/replicas/docker-compose.yml, with real processes.
#
#   bash scripts/replicas.sh                 # start, check, serve for FOR seconds, stop
#   FOR=0 bash scripts/replicas.sh           # start, check, stop
#   CONFIG=my.toml BIN=target/release/gtfs-fetch bash scripts/replicas.sh
#
# - PostgreSQL: $DATABASE_URL when set; else a throwaway cluster made by pg_virtualenv
#   (Debian's postgresql-common), dropped at the end.
# - The replicas: $BIN (default target/release/gtfs-fetch, built when missing) with
#   $CONFIG (default config/demo.toml: the demo feed, no OTP needed), on 127.0.0.1 ports
#   PORT+1..PORT+3, replica ids r1, r2, r3. Logs: target/replicas/r*.log.
# - nginx (Debian's nginx-light, installed when missing) on 127.0.0.1:PORT (default
#   18100), round robin over the three, a replica that fails taken out for 5 s.
# - The check, once all three are ready: three distinct replica ids; for each instance,
#   the same lease holder on every replica, and one of the three; every feed at the same
#   version on every replica and through nginx.
# - Then it serves for FOR seconds (default 600; Ctrl-C stops sooner) and stops
#   everything, the replicas with SIGTERM (a graceful stop releases the leases).
#
# Env: BIN, CONFIG, PORT, FOR, DATABASE_URL.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
PORT=${PORT:-18100}
FOR=${FOR:-600}
CONFIG=${CONFIG:-config/demo.toml}
BIN=${BIN:-target/release/gtfs-fetch}

if [ -z "${DATABASE_URL:-}" ] && [ -z "${INSIDE_PG:-}" ]; then
    missing=()
    command -v pg_virtualenv >/dev/null || missing+=(postgresql-common)
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v curl >/dev/null || missing+=(curl)
    if [ ${#missing[@]} -gt 0 ]; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "== installing ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # pg_virtualenv runs this script again with PGHOST, PGPORT, PGUSER, ... set.
    exec env INSIDE_PG=1 pg_virtualenv bash "$0" "$@"
fi
if [ -z "${DATABASE_URL:-}" ]; then
    DATABASE_URL="postgres://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/$PGDATABASE"
fi
[ -x "$BIN" ] || cargo build --release --locked --quiet --bin gtfs-fetch

out=target/replicas
mkdir -p "$out"
work=$(mktemp -d /tmp/gtfs-replicas.XXXXXX)
pids=()
nginx_pid=""
stop() {
    local rc=$?
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
    rm -rf "$work"
    exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT TERM

# --- the replicas ---
for i in 1 2 3; do
    GTFS_LISTEN="127.0.0.1:$((PORT + i))" GTFS_REPLICA_ID="r$i" DATABASE_URL="$DATABASE_URL" \
        RUST_LOG=${RUST_LOG:-info} "$BIN" --config "$CONFIG" serve >"$out/r$i.log" 2>&1 &
    pids+=($!)
done

# --- nginx in front ---
cat >"$work/nginx.conf" <<EOF
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
worker_processes 1;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    fastcgi_temp_path $work/fastcgi;
    uwsgi_temp_path $work/uwsgi;
    scgi_temp_path $work/scgi;
    upstream gtfs_fetch {
        server 127.0.0.1:$((PORT + 1)) max_fails=1 fail_timeout=5s;
        server 127.0.0.1:$((PORT + 2)) max_fails=1 fail_timeout=5s;
        server 127.0.0.1:$((PORT + 3)) max_fails=1 fail_timeout=5s;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$PORT;
        location / {
            proxy_pass http://gtfs_fetch;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503;
        }
    }
}
EOF
nginx -p "$work" -c "$work/nginx.conf" &
nginx_pid=$!

# --- ready ---
for i in 1 2 3; do
    ready=""
    for _ in $(seq 1 600); do
        if curl -sf "http://127.0.0.1:$((PORT + i))/readyz" >/dev/null 2>&1; then
            ready=1
            break
        fi
        kill -0 "${pids[$((i - 1))]}" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$ready" ]; then
        echo "replica r$i is not ready after 60 s; last lines of $out/r$i.log:" >&2
        tail -n 20 "$out/r$i.log" >&2
        exit 1
    fi
done
echo "== three replicas ready on 127.0.0.1:$((PORT + 1))-$((PORT + 3)), nginx on 127.0.0.1:$PORT"

# --- the check ---
# A new holder may take a lease a moment after start: give them a few looks to agree.
ok=""
for _ in $(seq 1 50); do
    for i in 1 2 3; do
        curl -sf "http://127.0.0.1:$((PORT + i))/instances" >"$work/instances-$i.json"
        curl -sf "http://127.0.0.1:$((PORT + i))/feeds" >"$work/feeds-$i.json"
    done
    curl -sf "http://127.0.0.1:$PORT/feeds" >"$work/feeds-lb.json"
    if python3 - "$work" <<'EOF'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
inst = [json.loads((work / f"instances-{i}.json").read_text()) for i in (1, 2, 3)]
feeds = [json.loads((work / f"feeds-{i}.json").read_text()) for i in (1, 2, 3)]
lb = json.loads((work / "feeds-lb.json").read_text())
ids = [i["replica_id"] for i in inst]
problems = []
if sorted(ids) != ["r1", "r2", "r3"]:
    problems.append(f"replica ids {ids}")
names = [x["name"] for x in inst[0]["instances"]]
for name in names:
    holders = {next(x for x in i["instances"] if x["name"] == name)["refresh_lease"]["holder"] for i in inst}
    if len(holders) != 1 or not holders <= set(ids):
        problems.append(f"instance {name}: lease holders {sorted(map(str, holders))}")
    else:
        print(f"instance {name}: lease held by {holders.pop()}, the same on every replica")
def versions(doc):
    return {f["gtfs_id"]: f.get("version") for f in doc["feeds"]}
seen = [versions(f) for f in feeds] + [versions(lb)]
if any(v != seen[0] for v in seen) or not seen[0]:
    problems.append(f"feed versions differ: {seen}")
else:
    for gtfs_id, version in seen[0].items():
        print(f"feed {gtfs_id}: version {str(version)[:12]} on every replica and through nginx")
if problems:
    print("not yet: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
EOF
    then
        ok=1
        break
    fi
    sleep 0.2
done
[ -n "$ok" ] || { echo "the replicas do not agree (above)" >&2; exit 1; }
echo "== the replicas act as one"

if [ "$FOR" -gt 0 ]; then
    echo "== serving on http://127.0.0.1:$PORT for $FOR s (Ctrl-C stops)"
    sleep "$FOR"
fi
