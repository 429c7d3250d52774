#!/usr/bin/env bash
# A real OpenTripPlanner for the tests: fetched from Maven Central, a transit-only graph
# built from fixture feeds, and the real-OTP test suite run against it.
#
#   bash scripts/real-otp.sh                 # the suite on every version of OTP_VERSIONS
#   bash scripts/real-otp.sh test FILTER...  # some of its tests (cargo test filters, flags)
#   bash scripts/real-otp.sh prepare 2.9.0   # fetch + build only; prints the variables
#   bash scripts/real-otp.sh serve 2.9.0 [PORT]   # serve the graph on 127.0.0.1 (foreground)
#
# Everything downloaded or built is cached under OTP_CACHE (default target/otp): the
# Maven repository (m2/), the jars (jars/) and one graph per version (graphs/VERSION/),
# rebuilt only when its build-config.json or a feed changes.
#
# Variables: OTP_VERSIONS (default "2.9.0 2.5.0 1.4.0": the newest 2.x, the last before
# Route.sortOrder, and the newest OTP 1 on Maven Central), OTP_CACHE, OTP_FEEDS (fixture feeds
# in the graph, default "sample-feed caltrain bart": one graph needs one time zone),
# OTP_XMX (heap of each OTP process, default 1g; the build uses 2g).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

OTP_VERSIONS=${OTP_VERSIONS:-"2.9.0 2.5.0 1.4.0"}
OTP_CACHE=${OTP_CACHE:-target/otp}
OTP_FEEDS=${OTP_FEEDS:-"sample-feed caltrain bart"}
OTP_XMX=${OTP_XMX:-1g}
mkdir -p "$OTP_CACHE"
OTP_CACHE=$(cd "$OTP_CACHE" && pwd)
FIXTURES=$(cd ../shared/fixtures/gtfs && pwd)

# The Maven coordinates of a version: otp-shaded from 2.7.0 on, otp:shaded before.
artifact() {
    case "$1" in
        1.* | 2.[0-6].*) echo "org.opentripplanner:otp:$1:jar:shaded" ;;
        *) echo "org.opentripplanner:otp-shaded:$1" ;;
    esac
}

jar_path() {
    case "$1" in
        1.* | 2.[0-6].*) echo "$OTP_CACHE/jars/otp-$1-shaded.jar" ;;
        *) echo "$OTP_CACHE/jars/otp-shaded-$1.jar" ;;
    esac
}

# The Java major version a release needs: 2.9 needs 25, 2.5-2.8 need 21. OTP 1 was built
# for Java 8, which is not here: it runs on 17 with the module system opened to it
# (JAVA_OPENS below).
java_needed() {
    case "$1" in
        1.*) echo 17 ;;
        2.[0-4].*) echo 17 ;;
        2.[5-8].*) echo 21 ;;
        *) echo 25 ;;
    esac
}

java_major() {
    "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*/\1 \3/p' | head -1 \
        | awk '{ print ($1 == 1) ? $2 : $1 }'
}

# A java binary of at least the version `$1` needs: JAVA_HOME, then /usr/lib/jvm/*.
find_java() {
    local need candidate major
    need=$(java_needed "$1")
    for candidate in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} /usr/lib/jvm/*/bin/java "$(command -v java || true)"; do
        [ -x "$candidate" ] || continue
        major=$(java_major "$candidate")
        if [ -n "$major" ] && [ "$major" -ge "$need" ]; then
            echo "$candidate"
            return 0
        fi
    done
    echo "no Java >= $need for OTP $1 (looked at JAVA_HOME and /usr/lib/jvm)" >&2
    return 1
}

fetch() {
    local jar
    jar=$(jar_path "$1")
    if [ ! -s "$jar" ]; then
        echo "== fetching OTP $1 from Maven Central" >&2
        # Plugin 2.8, not 3.x: 3.x reads the artifact's descriptor, and otp-shaded 2.9.0's
        # parent POM (otp-root) is not on Maven Central; 2.8 copies the jar without it.
        mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$OTP_CACHE/m2" \
            org.apache.maven.plugins:maven-dependency-plugin:2.8:copy \
            -Dartifact="$(artifact "$1")" -DoutputDirectory="$OTP_CACHE/jars" >&2
        [ -s "$jar" ] || { echo "OTP $1: Maven did not deliver $jar" >&2; return 1; }
    fi
    echo "$jar"
}

# build-config.json for the fixture feeds: each feedId named, the service window widened
# (the fixtures are years old; OTP drops service outside it, default -P1Y..P3Y).
build_config() {
    local first=1 feed
    printf '{\n  "transitServiceStart": "-P40Y",\n  "transitServiceEnd": "P10Y",\n  "transitFeeds": [\n'
    for feed in $OTP_FEEDS; do
        [ $first -eq 1 ] || printf ',\n'
        first=0
        printf '    { "type": "gtfs", "feedId": "%s", "source": "file://%s/%s.zip" }' \
            "$feed" "$FIXTURES" "$feed"
    done
    printf '\n  ]\n}\n'
}

# What OTP 1's serialization (kryo) reaches into on Java 17.
JAVA_OPENS="--add-opens java.base/java.util=ALL-UNNAMED --add-opens java.base/java.lang=ALL-UNNAMED \
--add-opens java.base/java.io=ALL-UNNAMED --add-opens java.base/java.net=ALL-UNNAMED \
--add-opens java.base/java.text=ALL-UNNAMED --add-opens java.base/java.time=ALL-UNNAMED \
--add-opens java.desktop/java.awt.font=ALL-UNNAMED"

# OTP 1: a router directory `default/` with the feeds in it (it reads every *.gtfs.zip;
# feed ids are assigned "1", "2", ... since the fixtures have no feed_info.feed_id).
graph1() {
    local version=$1 jar=$2 java=$3 dir feed stamp
    dir="$OTP_CACHE/graphs/$version"
    stamp=$(echo "$OTP_FEEDS" | cat - $(for f in $OTP_FEEDS; do echo "$FIXTURES/$f.zip"; done) \
        | sha256sum | cut -c1-64)
    if [ ! -s "$dir/default/Graph.obj" ] || [ "$(cat "$dir/stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "== building the OTP $version graph of: $OTP_FEEDS" >&2
        rm -rf "$dir" && mkdir -p "$dir/default"
        for feed in $OTP_FEEDS; do ln -s "$FIXTURES/$feed.zip" "$dir/default/$feed.gtfs.zip"; done
        # shellcheck disable=SC2086
        "$java" -Xmx2g $JAVA_OPENS -jar "$jar" --build "$dir/default" >"$dir/build.log" 2>&1 || {
            tail -20 "$dir/build.log" >&2
            echo "OTP $version graph build failed: $dir/build.log" >&2
            return 1
        }
        echo "$stamp" >"$dir/stamp"
    fi
    echo "$dir"
}

graph() {
    local version=$1 jar=$2 java=$3 dir stamp
    case "$version" in 1.*) graph1 "$@"; return ;; esac
    dir="$OTP_CACHE/graphs/$version"
    mkdir -p "$dir"
    build_config >"$dir/build-config.json.new"
    stamp=$(cat "$dir/build-config.json.new" $(for f in $OTP_FEEDS; do echo "$FIXTURES/$f.zip"; done) \
        | sha256sum | cut -c1-64)
    if [ -s "$dir/graph.obj" ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp" ]; then
        rm "$dir/build-config.json.new"
    else
        echo "== building the OTP $version graph of: $OTP_FEEDS" >&2
        mv "$dir/build-config.json.new" "$dir/build-config.json"
        rm -f "$dir/graph.obj" "$dir/stamp"
        "$java" -Xmx2g -jar "$jar" --build --save "$dir" >"$dir/build.log" 2>&1 || {
            tail -20 "$dir/build.log" >&2
            echo "OTP $version graph build failed: $dir/build.log" >&2
            return 1
        }
        echo "$stamp" >"$dir/stamp"
    fi
    echo "$dir"
}

# Fetches and builds for `$1`, then prints the variables the tests read.
prepare() {
    local version=$1 jar java dir
    java=$(find_java "$version")
    jar=$(fetch "$version")
    dir=$(graph "$version" "$jar" "$java")
    echo "GTFS_OTP_VERSION=$version"
    echo "GTFS_OTP_JAVA=$java"
    echo "GTFS_OTP_JAR=$jar"
    echo "GTFS_OTP_GRAPH=$dir"
    echo "GTFS_OTP_FEEDS=$OTP_FEEDS"
    echo "GTFS_OTP_CMD=$(GTFS_OTP_VERSION=$version GTFS_OTP_JAVA=$java GTFS_OTP_JAR=$jar \
        GTFS_OTP_GRAPH=$dir serve_command '{port}' '{secure_port}')"
}

# The command line that serves a prepared graph on 127.0.0.1, port $1 (OTP 1 also opens
# an HTTPS port, $2). The tests run it with {port} and {secure_port} filled in.
serve_command() {
    case "$GTFS_OTP_VERSION" in
        1.*) echo "$GTFS_OTP_JAVA -Xmx$OTP_XMX $JAVA_OPENS -jar $GTFS_OTP_JAR --graphs $GTFS_OTP_GRAPH" \
            "--router default --server --bindAddress 127.0.0.1 --port $1 --securePort $2" ;;
        *) echo "$GTFS_OTP_JAVA -Xmx$OTP_XMX -jar $GTFS_OTP_JAR --load --port $1" \
            "--bindAddress 127.0.0.1 $GTFS_OTP_GRAPH" ;;
    esac
}

case "${1:-test}" in
    prepare)
        prepare "${2:?version}"
        ;;
    serve)
        vars=$(prepare "${2:?version}")
        while IFS= read -r line; do export "${line?}"; done <<<"$vars"
        port=${3:-8080}
        # shellcheck disable=SC2046
        exec $(serve_command "$port" $((port + 1)))
        ;;
    test)
        shift || true
        for version in $OTP_VERSIONS; do
            vars=$(prepare "$version")
            echo "== real-OTP suite on OTP $version"
            (
                while IFS= read -r line; do export "${line?}"; done <<<"$vars"
                # The ignored tests of tests/it are the real-OTP ones (tests/it/real_otp.rs).
                cargo test --locked --test it -- --ignored "${@:-real_otp::}"
            )
        done
        ;;
    *)
        echo "usage: $0 [test [cargo test args] | prepare VERSION | serve VERSION [PORT]]" >&2
        exit 2
        ;;
esac
