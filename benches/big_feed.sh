#!/usr/bin/env bash
# Feeds of national size (issue 15): the service's time to ready and memory on a fixture
# feed enlarged 1x, 4x, 17x and 50x (every trip copied under new ids by
# benches/enlarge_feed.py: same routes, stops and calendars), against gtfs-structures' own
# `Gtfs::from_reader` of the same zip (examples/gtfs_parse.rs), in the same run.
#
#   bash benches/big_feed.sh                 # wmata (the most stop_times), SIZES="1 4 17 50"
#   SIZES="1 4" ROUNDS=3 bash benches/big_feed.sh bart
#   BIN=/tmp/gtfs-fetch-before bash benches/big_feed.sh   # another build, same run shape
#
# Per size and round, service first then reference, each a fresh process:
#   service   `serve` with one `api = "gtfs"` instance whose feed is the local zip, on a
#             throwaway PostgreSQL (pg_virtualenv, started once, so its start-up is not
#             counted; a fresh database per run, so nothing is warm-started from the
#             feed store); time from exec to `/readyz` 200 (polled every 20 ms); peak RSS
#             (`VmHWM`); the snapshot's size and its build's peak from `/memory-stats`;
#             RSS and allocated bytes 3 s after ready (what a refresh leaves behind).
#   reference gtfs_parse: seconds of `Gtfs::from_reader` over the zip's bytes; its VmHWM.
# Results: a Markdown table on stdout and in $OUT/results.md, the rows in
# $OUT/results.csv, and a plot $OUT/big_feed.png when gnuplot is installed.
# Enlarged zips are kept in $OUT (50x of wmata: about 17.6 million stop_times, ~400 MB).
#
# Env: SIZES, ROUNDS (default 1; the medians are reported), OUT (default
# target/big-feed), BIN (default target/release/gtfs-fetch, built here), PORT (18500).
set -euo pipefail
cd "$(dirname "$0")/.."
FIXTURE=${1:-wmata}
SIZES=${SIZES:-1 4 17 50}
ROUNDS=${ROUNDS:-1}
OUT=${OUT:-target/big-feed}
PORT=${PORT:-18500}

if [ -z "${INSIDE_PG:-}" ]; then
    for tool in curl jq python3 pg_virtualenv; do
        command -v "$tool" >/dev/null || {
            echo "missing $tool: apt-get install curl jq python3 postgresql-common" >&2
            exit 2
        }
    done
    cargo build --release --quiet --bin gtfs-fetch --example gtfs_parse
    mkdir -p "$OUT"
    for n in $SIZES; do
        zip="$OUT/$FIXTURE-x$n.zip"
        [ -s "$zip" ] || {
            echo "== writing $zip" >&2
            python3 benches/enlarge_feed.py "../shared/fixtures/gtfs/$FIXTURE.zip" "$n" "$zip.tmp"
            mv "$zip.tmp" "$zip"
        }
    done
    # pg_virtualenv runs this script again with PGHOST, PGPORT, PGUSER, ... set.
    exec env INSIDE_PG=1 pg_virtualenv bash "$0" "$@"
fi

BIN=${BIN:-target/release/gtfs-fetch}
PARSE=target/release/examples/gtfs_parse
tmp=$(mktemp -d /tmp/gtfs-big.XXXXXX)
cleanup() {
    [ -n "${svc:-}" ] && kill "$svc" 2>/dev/null && wait "$svc" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

now() { date +%s.%N; }
vmhwm() { awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$1/status"; }

# One service run on zip $1 with a new database named $2: prints "ready_s peak_rss snapshot build_peak rss_after alloc_after".
service_run() {
    cat >"$tmp/big.toml" <<TOML
listen = "127.0.0.1:$PORT"
max_feed_bytes = 4294967296
[[instances]]
name = "big"
url = "http://127.0.0.1:9"
api = "gtfs"
refresh_interval = 604800
[[instances.feeds]]
gtfs_id = "big"
zip_url = "$(realpath "$1")"
TOML
    # A database of its own for each run: the feed store would otherwise warm-start the
    # service with the version an earlier run stored.
    createdb "$2"
    local started ready=""
    started=$(now)
    DATABASE_URL="postgres://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/$2" RUST_LOG=warn \
        "$BIN" --config "$tmp/big.toml" serve >"$tmp/service.log" 2>&1 &
    svc=$!
    for _ in $(seq 1 30000); do
        if curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then
            ready=$(now)
            break
        fi
        kill -0 "$svc" 2>/dev/null || break
        sleep 0.02
    done
    [ -n "$ready" ] || { cat "$tmp/service.log" >&2; echo "service not ready" >&2; exit 1; }
    local stats after peak
    stats=$(curl -sf "http://127.0.0.1:$PORT/memory-stats")
    sleep 3
    after=$(curl -sf "http://127.0.0.1:$PORT/memory-stats")
    peak=$(vmhwm "$svc")
    kill "$svc"
    wait "$svc" || true
    svc=""
    echo "$(awk "BEGIN { print $ready - $started }") $peak" \
        "$(jq -r '.feeds[0].approx_bytes, (.feeds[0].build_peak_bytes // 0)' <<<"$stats" | tr '\n' ' ')" \
        "$(jq -r '.process.rss_bytes, .allocator.allocated_bytes' <<<"$after" | tr '\n' ' ')"
}

echo "size,round,stop_times,service_ready_s,service_peak_rss,snapshot_bytes,build_peak_bytes,rss_after,allocated_after,reference_s,reference_peak_rss" >"$OUT/results.csv"
for n in $SIZES; do
    zip="$OUT/$FIXTURE-x$n.zip"
    for round in $(seq 1 "$ROUNDS"); do
        read -r ready peak snapshot build rss alloc < <(service_run "$zip" "big_${n}_$round")
        ref=$("$PARSE" "$zip")
        echo "$n,$round,$(jq -r .stop_times <<<"$ref"),$ready,$peak,$snapshot,$build,$rss,$alloc,$(jq -r '.seconds, .peak_rss_bytes' <<<"$ref" | paste -sd,)" \
            | tee -a "$OUT/results.csv" >&2
    done
done

python3 - "$OUT" "$FIXTURE" <<'PY'
import csv, statistics, sys
out, fixture = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(f"{out}/results.csv")))
by = {}
for r in rows:
    by.setdefault(int(r["size"]), []).append(r)
mib = lambda b: b / 2**20
lines = [
    f"Fixture {fixture}, medians of {len(next(iter(by.values())))} round(s) per size.",
    "",
    "| size | stop_times | ready (s) | gtfs-structures parse (s) | ready / parse | s per M stop_times | peak RSS | snapshot | peak RSS / snapshot | build peak (allocated) | RSS after | allocated after | RSS / allocated after | parse peak RSS |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
plot = []
for size in sorted(by):
    m = lambda k: statistics.median(float(r[k]) for r in by[size])
    st = int(by[size][0]["stop_times"])
    ready, ref = m("service_ready_s"), m("reference_s")
    peak, snap = m("service_peak_rss"), m("snapshot_bytes")
    rss, alloc = m("rss_after"), m("allocated_after")
    lines.append(
        f"| {size}x | {st:,} | {ready:.2f} | {ref:.2f} | {ready / ref:.2f}x | {ready / st * 1e6:.3f} "
        f"| {mib(peak):.0f} MiB | {mib(snap):.0f} MiB | {peak / snap:.1f}x | {mib(m('build_peak_bytes')):.0f} MiB "
        f"| {mib(rss):.0f} MiB | {mib(alloc):.0f} MiB | {rss / alloc:.2f}x | {mib(m('reference_peak_rss')):.0f} MiB |"
    )
    plot.append(f"{st / 1e6} {ready} {ref} {mib(peak)} {mib(m('reference_peak_rss'))} {mib(snap)}")
open(f"{out}/results.md", "w").write("\n".join(lines) + "\n")
open(f"{out}/plot.dat", "w").write("\n".join(plot) + "\n")
print("\n".join(lines))
PY

if command -v gnuplot >/dev/null; then
    gnuplot <<GP
set terminal pngcairo size 1000,420 noenhanced
set output "$OUT/big_feed.png"
set multiplot layout 1,2 title "$FIXTURE enlarged: service vs gtfs-structures"
set xlabel "million stop_times"; set key left top
set ylabel "seconds"
plot "$OUT/plot.dat" using 1:2 with linespoints title "service: ready", \
     "" using 1:3 with linespoints title "gtfs-structures: parse"
set ylabel "MiB"
plot "$OUT/plot.dat" using 1:4 with linespoints title "service: peak RSS", \
     "" using 1:5 with linespoints title "gtfs-structures: peak RSS", \
     "" using 1:6 with linespoints title "snapshot kept"
GP
    echo "plot: $OUT/big_feed.png" >&2
else
    echo "no plot: apt-get install gnuplot-nox" >&2
fi
