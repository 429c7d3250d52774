#!/usr/bin/env bash
# Waybill creation (POST /waybills) against pgbench doing the equivalent insert on the
# same database, in the same run, loopback only. Issue 6's bar: the service creates
# waybills at >= 0.7x pgbench's rate, at 1, 8 and 32 concurrent clients.
#
#   bash benches/waybills.sh     # needs: wrk, curl, PostgreSQL 15 (initdb, pg_ctl, psql, pgbench)
#
# A throwaway PostgreSQL 15 (default settings: fsync on, synchronous_commit on,
# shared_buffers 128MB, max_wal_size 1GB; UTF8, no locale, like the embedded one) on a
# loopback port with trust auth; the service on it (default pool: 20 connections) with
# caltrain loaded from its zip. Every phase starts from empty tables and a CHECKPOINT.
# Each request or transaction creates a waybill of caltrain's route Lo-130, trip 101 on
# 2018-06-01 (a Friday) for a vehicle and driver of its own, so nothing conflicts.
#
#   service         wrk -t1/-t2, one new waybill per request (POST, JSON body)
#   pgbench pair    BEGIN; INSERT waybill; INSERT waybill_trip; COMMIT  (what the service writes)
#   pgbench single  INSERT waybill, autocommit                          (the bare single-row insert)
#
# Round 1 runs service, pair, single at each level; round 2 the reverse order.
# Env: DURATION (seconds per phase, default 10), CLIENTS (default "1 8 32"), ROUNDS
#      (default 2), PG_PORT (default 18432), SVC_PORT (default 18100), PGBIN,
#      GTFS_FETCH_BIN (another build of the service to measure; skips cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-1 8 32}
ROUNDS=${ROUNDS:-2}
PG_PORT=${PG_PORT:-18432}
SVC_PORT=${SVC_PORT:-18100}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

for tool in wrk curl "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/psql" "$PGBIN/pgbench"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install wrk curl postgresql-15" >&2; exit 2; }
done
for port in "$PG_PORT" "$SVC_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use: set PG_PORT / SVC_PORT" >&2; exit 2
    fi
done
if [ -z "${GTFS_FETCH_BIN:-}" ]; then
    cargo build --release --quiet
    GTFS_FETCH_BIN=./target/release/gtfs-fetch
fi

tmp=$(mktemp -d /tmp/gtfs-waybill-bench.XXXXXX)
chmod 755 "$tmp"
mkdir "$tmp/pg" "$tmp/log"
# initdb and postgres refuse to run as root.
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$tmp/pg"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi
cleanup() {
    if [ -n "${svc:-}" ]; then kill "$svc" 2>/dev/null && wait "$svc" 2>/dev/null || true; fi
    if [ -f "$tmp/pg/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$tmp/pg" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg "$PGBIN/initdb" -D "$tmp/pg" -U postgres -A trust --encoding=UTF8 --no-locale \
    --no-sync >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; exit 1; }
as_pg "$PGBIN/pg_ctl" -D "$tmp/pg" -l "$tmp/pg/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $tmp/pg" start >/dev/null
psql_() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE bench"
q() { psql_ -d bench -c "$1"; }

cat > "$tmp/bench.toml" <<TOML
[[instances]]
name = "bench"
url = "http://127.0.0.1:9"
api = "gtfs"
[[instances.feeds]]
gtfs_id = "caltrain"
zip_url = "file://$PWD/../shared/fixtures/gtfs/caltrain.zip"
TOML

DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/bench GTFS_LISTEN=127.0.0.1:$SVC_PORT \
    GTFS_DATA_DIR=$tmp/data RUST_LOG=warn \
    "$GTFS_FETCH_BIN" --config "$tmp/bench.toml" serve >"$tmp/service.log" 2>&1 &
svc=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$SVC_PORT/readyz" >/dev/null && break
    kill -0 "$svc" 2>/dev/null || { cat "$tmp/service.log" >&2; exit 1; }
    sleep 0.2
done
curl -sf "http://127.0.0.1:$SVC_PORT/readyz" >/dev/null || { echo "service not ready" >&2; tail "$tmp/service.log" >&2; exit 1; }

# One waybill through the service: pgbench then writes exactly the values it stored.
base='"service_date":"2018-06-01","gtfs_id":"caltrain","route_id":"Lo-130","trip_ids":["101"]'
code=$(curl -s -o "$tmp/first.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"vehicle_id\":\"probe\",\"driver_id\":\"probe\",$base}" "http://127.0.0.1:$SVC_PORT/waybills")
[ "$code" = 201 ] || { echo "POST /waybills answered $code: $(cat "$tmp/first.json")" >&2; exit 1; }
IFS='|' read -r ver ps pe < <(q "SELECT feed_version, planned_start, planned_end FROM waybill")
IFS='|' read -r ss es tps tpe < <(q "SELECT start_seconds, end_seconds, planned_start, planned_end FROM waybill_trip")

insert_waybill="INSERT INTO waybill (id, service_date, vehicle_id, driver_id, gtfs_id, route_id, feed_version, planned_start, planned_end)
    VALUES (gen_random_uuid(), '2018-06-01', 'v-' || :vid::text, 'd-' || :vid::text, 'caltrain', 'Lo-130', '$ver', '$ps', '$pe')"
cat > "$tmp/pair.sql" <<SQL
\set n :n + 1
\set vid :client_id * 100000000 + :n
BEGIN;
$insert_waybill
    RETURNING id AS wid \gset
INSERT INTO waybill_trip (waybill_id, sequence, trip_id, start_seconds, end_seconds, planned_start, planned_end)
    VALUES (:wid, 1, '101', $ss, $es, '$tps', '$tpe');
COMMIT;
SQL
cat > "$tmp/single.sql" <<SQL
\set n :n + 1
\set vid :client_id * 100000000 + :n
$insert_waybill;
SQL

# wrk: every request a new vehicle and driver, "v-<phase>-<thread>-<n>".
cat > "$tmp/create.lua" <<'LUA'
local n, threads, phase = 0, 0, "x"
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
function init(args)
    phase = args[1] or "x"
end
local headers = { ["Content-Type"] = "application/json" }
function request()
    n = n + 1
    local who = string.format("%s-%d-%d", phase, tid, n)
    local body = '{"vehicle_id":"v-' .. who .. '","driver_id":"d-' .. who ..
        '","service_date":"2018-06-01","gtfs_id":"caltrain","route_id":"Lo-130","trip_ids":["101"]}'
    return wrk.format("POST", "/waybills", headers, body)
end
LUA

reset() { q "TRUNCATE waybill, waybill_trip, idempotency_key; CHECKPOINT"; }
threads() { if [ "$1" -ge 2 ]; then echo 2; else echo 1; fi; }
# "1.23ms" / "456.00us" / "1.02s" -> ms
to_ms() { awk -v v="$1" 'BEGIN { u = v; sub(/^[0-9.]+/, "", u); x = v + 0;
    if (u == "us") x /= 1000; else if (u == "s") x *= 1000; printf "%.2f", x }'; }

# Sets S_RPS S_P50 S_P99 S_ROWS S_BAD.
run_service() {
    local c=$1 tag=$2 out
    reset
    out=$(wrk -t"$(threads "$c")" -c"$c" -d"${DURATION}s" --latency -s "$tmp/create.lua" \
        "http://127.0.0.1:$SVC_PORT/waybills" -- "$tag")
    echo "$out" >"$tmp/log/$tag.wrk"
    S_RPS=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    S_P50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    S_P99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    S_BAD=$(awk '/Non-2xx or 3xx/ {b += $NF} /Socket errors/ {b += 1} END {print b + 0}' <<<"$out")
    S_REQ=$(awk '/requests in/ {print $1}' <<<"$out")
    S_ROWS=$(q "SELECT count(*) FROM waybill")
    if [ "$S_BAD" != 0 ]; then
        echo "service phase $tag: $S_BAD non-2xx answers or socket errors:" >&2; echo "$out" >&2; exit 1
    fi
}
# Sets P_TPS P_P50 P_P99 P_ROWS P_TX.
run_pgbench() {
    local c=$1 script=$2 tag=$3 out
    reset
    out=$("$PGBIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -M prepared \
        -c "$c" -j "$(threads "$c")" -T "$DURATION" -D n=0 -f "$tmp/$script.sql" \
        -l --log-prefix="$tmp/log/$tag" bench 2>&1) || { echo "$out" >&2; exit 1; }
    echo "$out" >"$tmp/log/$tag.out"
    P_TPS=$(awk '/^tps = / {printf "%.0f", $3}' <<<"$out")
    P_TX=$(awk '/actually processed/ {print $NF}' <<<"$out")
    local failed
    failed=$(awk '/number of failed transactions/ {print $5}' <<<"$out")
    [ "${failed:-0}" = 0 ] || { echo "pgbench $tag: $failed failed transactions" >&2; echo "$out" >&2; exit 1; }
    read -r P_P50 P_P99 < <(cat "$tmp/log/$tag".[0-9]* | awk '{print $3}' | sort -n |
        awk '{a[NR] = $1} END { i = int(NR * 0.5); if (i < NR * 0.5) i++; j = int(NR * 0.99); if (j < NR * 0.99) j++;
                                printf "%.2f %.2f\n", a[i] / 1000, a[j] / 1000 }')
    P_ROWS=$(q "SELECT count(*) FROM waybill")
}

# Warm-up of both paths at the highest concurrency (the service's pool opens its connections).
max_c=$(tr ' ' '\n' <<<"$CLIENTS" | sort -n | tail -1)
saved=$DURATION; DURATION=3
run_service "$max_c" warm
run_pgbench "$max_c" pair warm-pair
DURATION=$saved

rows=()
checks=()
for round in $(seq 1 "$ROUNDS"); do
    for c in $CLIENTS; do
        if [ $((round % 2)) = 1 ]; then order="service pair single"; else order="single pair service"; fi
        for what in $order; do
            case $what in
                service) run_service "$c" "r$round-c$c"
                         s=("$S_RPS" "$S_P50" "$S_P99")
                         checks+=("service c=$c round $round: wrk $S_REQ answers (all 2xx), $S_ROWS rows") ;;
                pair)    run_pgbench "$c" pair "r$round-c$c-pair"
                         p=("$P_TPS" "$P_P50" "$P_P99")
                         checks+=("pgbench pair c=$c round $round: $P_TX transactions, $P_ROWS waybill rows, 0 failed") ;;
                single)  run_pgbench "$c" single "r$round-c$c-single"
                         o=("$P_TPS" "$P_P50" "$P_P99")
                         checks+=("pgbench single c=$c round $round: $P_TX transactions, $P_ROWS waybill rows, 0 failed") ;;
            esac
        done
        rows+=("$(awk -v c="$c" -v r="$round" -v o="$order" \
            -v s1="${s[0]}" -v s2="${s[1]}" -v s3="${s[2]}" \
            -v p1="${p[0]}" -v p2="${p[1]}" -v p3="${p[2]}" \
            -v o1="${o[0]}" -v o2="${o[1]}" -v o3="${o[2]}" 'BEGIN {
            printf "| %s | %s (%s) | %.0f | %s ms | %s ms | %s | %s ms | %s ms | **%.2fx** | %s | %s ms | %.2fx |",
                c, r, o, s1, s2, s3, p1, p2, p3, s1 / p1, o1, o3, s1 / o1 }')")
    done
done

echo "## Waybill creation vs pgbench: ${DURATION} s per phase, wrk/pgbench -c N -t/-j min(N,2)"
echo
echo "| clients | round (order) | service created/s | service p50 | service p99 | pgbench tps (waybill+trip) | pgbench p50 | pgbench p99 | ratio | pgbench tps (single row) | pgbench p99 | ratio |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "ratio = service created/s / pgbench tps. PostgreSQL: fsync=$(q 'SHOW fsync'), synchronous_commit=$(q 'SHOW synchronous_commit'), shared_buffers=$(q 'SHOW shared_buffers'), wal_level=$(q 'SHOW wal_level'), max_wal_size=$(q 'SHOW max_wal_size'); $(q 'SELECT version()' | cut -d, -f1)."
echo
echo "Checks (rows counted after each phase; the service may commit a request wrk had no time to count):"
printf -- '- %s\n' "${checks[@]}"
