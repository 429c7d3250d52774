#!/usr/bin/env bash
# Route cache hits vs nginx serving the same bytes as static files (`gzip_static on`), in
# one run, loopback only, as real clients ask (issue 13):
#   identity            no Accept-Encoding
#   gzip                Accept-Encoding: gzip              (nginx sends the .gz file)
#   gzip, deflate, br   what browsers and OkHttp send       (nginx: .gz, it has no brotli;
#                                                           the service: br)
#   304                 Accept-Encoding: gzip + If-None-Match with each server's ETag
# on the largest route answer of two fixture feeds (bart and wmata by default). For each
# feed and case: a warm-up of both, then nginx, service, nginx, service; the ratio is
# service / nginx requests/s of each round, p50 and p99 side by side.
#
#   bash benches/cache_hit.sh               # needs wrk, nginx, curl, jq, python3
#   BIN=/tmp/gtfs-fetch-before bash benches/cache_hit.sh   # another build, same run shape
#
# Env: BIN (default: target/release/gtfs-fetch, built here), FEEDS (default "bart wmata"),
#      DURATION (default 5s), CONNECTIONS (default 50), THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
FEEDS=${FEEDS:-bart wmata}
SVC_PORT=${SVC_PORT:-18000}
NGINX_PORT=${NGINX_PORT:-18080}

for tool in wrk nginx curl jq python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install wrk nginx-light curl jq" >&2; exit 2; }
done
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=./target/release/gtfs-fetch
fi
source benches/lib.sh
bench_tmp gtfs-bench
# shellcheck disable=SC2086 # FEEDS is a list
bench_config $FEEDS
bench_serve "$BIN" "$SVC_PORT"
svc_url="http://127.0.0.1:$SVC_PORT"

# The largest route answer of a feed: every route's detail, by size.
largest_route() {
    local feed=$1 cursor="" ids=()
    while :; do
        local page
        page=$(curl -sf "$svc_url/feeds/$feed/routes?limit=1000&cursor=$cursor")
        mapfile -t -O "${#ids[@]}" ids < <(jq -r '.routes[].route_id | @uri' <<<"$page")
        cursor=$(jq -r '.next_cursor // empty' <<<"$page")
        [ -n "$cursor" ] || break
    done
    local best="" best_size=0 size
    for id in "${ids[@]}"; do
        size=$(curl -sf "$svc_url/feeds/$feed/routes/$id" -o /dev/null -w '%{size_download}')
        if [ "$size" -gt "$best_size" ]; then best=$id; best_size=$size; fi
    done
    echo "$best"
}

declare -A route
for feed in $FEEDS; do
    route[$feed]=$(largest_route "$feed")
    path="/feeds/$feed/routes/${route[$feed]}"
    # nginx gets the service's own bytes: identity, and its gzip form for gzip_static.
    curl -sf "$svc_url$path" -o "$tmp/www/$feed.json"
    curl -sf -H 'Accept-Encoding: gzip' "$svc_url$path" -o "$tmp/www/$feed.json.gz"
    python3 - "$tmp/www/$feed.json" "$tmp/www/$feed.json.gz" <<'PY'
import gzip, sys
plain, coded = (open(p, "rb").read() for p in sys.argv[1:3])
if coded[:2] != b"\x1f\x8b":   # a build that does not compress: gzip it here
    coded = gzip.compress(plain, 9)
    open(sys.argv[2], "wb").write(coded)
assert gzip.decompress(coded) == plain, "the gzip form decodes to the identity bytes"
PY
    touch -r "$tmp/www/$feed.json" "$tmp/www/$feed.json.gz"
done

bench_nginx "$NGINX_PORT" "$THREADS"
ngx_url="http://127.0.0.1:$NGINX_PORT"

etag_of() { curl -sf -o /dev/null -D - -H 'Accept-Encoding: gzip' "$1" | tr -d '\r' | awk 'tolower($1) == "etag:" {print $2}'; }
rps() { awk '/^Requests\/sec/ {print $2}' <<<"$1"; }
pct() { awk -v p="$2" '$1 == p {print $2}' <<<"$1"; }
run() {
    local url=$1 duration=$2
    shift 2
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --latency "$@" "$url"
}
# The status `url` answers with these headers must be `want`.
expect() {
    local want=$1 url=$2 got
    shift 2
    got=$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")
    [ "$got" = "$want" ] || { echo "$url answered $got, wanted $want ($*)" >&2; exit 1; }
}
# One case: warm both, then nginx, service, nginx, service.
measure() {
    local feed=$1 case=$2 nurl=$3 surl=$4
    shift 4
    local -a nh=() sh=()
    case $case in
        identity) ;;
        gzip) nh=(-H 'Accept-Encoding: gzip'); sh=("${nh[@]}") ;;
        "gzip, deflate, br") nh=(-H 'Accept-Encoding: gzip, deflate, br'); sh=("${nh[@]}") ;;
        304)
            nh=(-H 'Accept-Encoding: gzip' -H "If-None-Match: $(etag_of "$nurl")")
            sh=(-H 'Accept-Encoding: gzip' -H "If-None-Match: $(etag_of "$surl")")
            ;;
    esac
    # Each server answers as the case expects before it is timed.
    local want=200
    [ "$case" = 304 ] && want=304
    expect "$want" "$nurl" "${nh[@]}"
    expect "$want" "$surl" "${sh[@]}"
    run "$nurl" 2s "${nh[@]}" >/dev/null
    run "$surl" 2s "${sh[@]}" >/dev/null
    local r n s
    for r in 1 2; do
        n=$(run "$nurl" "$DURATION" "${nh[@]}")
        s=$(run "$surl" "$DURATION" "${sh[@]}")
        awk -v f="$feed" -v c="$case" -v r="$r" -v nr="$(rps "$n")" -v sr="$(rps "$s")" \
            -v n50="$(pct "$n" 50%)" -v n99="$(pct "$n" 99%)" \
            -v s50="$(pct "$s" 50%)" -v s99="$(pct "$s" 99%)" \
            'BEGIN { printf "| %s | %s | %s | %.0f | %.0f | **%.2fx** | %s / %s | %s / %s |\n", f, c, r, nr, sr, sr / nr, n50, s50, n99, s99 }'
    done
}

echo "## Cache hits vs nginx gzip_static ($(date -u +%F), $BIN, wrk -t$THREADS -c$CONNECTIONS -d$DURATION)"
echo
for feed in $FEEDS; do
    echo "- $feed: route ${route[$feed]}, $(stat -c %s "$tmp/www/$feed.json") bytes, gzip $(stat -c %s "$tmp/www/$feed.json.gz") bytes"
done
echo
echo "| feed | case | round | nginx req/s | service req/s | service / nginx | p50 nginx / service | p99 nginx / service |"
echo "|---|---|---|---:|---:|---:|---|---|"
for feed in $FEEDS; do
    for case in identity gzip "gzip, deflate, br" 304; do
        measure "$feed" "$case" "$ngx_url/$feed.json" "$svc_url/feeds/$feed/routes/${route[$feed]}"
    done
done
