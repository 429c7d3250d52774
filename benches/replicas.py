#!/usr/bin/env python3
"""Replicas on one database (issue 12, part 7): the feed store and the replica protocol,
measured with real processes. Run by benches/replicas.sh, inside pg_virtualenv (PGHOST,
PGPORT, PGUSER, PGPASSWORD set), with nginx as the upstream serving the zip.

  A. start-up to ready from the store (upstream down) vs a cold start that refreshes
     from upstream, on the same feed, ROUNDS times, alternating;
  B. the cost of storing a new version: the store's own time (its log line), bytes
     written to the blob tables, WAL written, and the process's peak RSS with and
     without a build-and-store (cold vs warm start);
  C. upstream requests per refresh interval for 1, 3 and 5 replicas on one database,
     against the same replicas each on a database of its own (every replica fetching for
     itself, as before the lease), in the same run;
  D. from a new version in the store (`feed_current.updated_at`) to the last replica
     serving it, for 3 and 5 replicas, VERSIONS new versions each.

Prints Markdown tables; writes them to $OUT/results.md.
"""

import hashlib
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("BIN", "target/release/gtfs-fetch")
FIXTURE = os.environ.get("FIXTURE", "wmata")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
INTERVAL = float(os.environ.get("INTERVAL", "5"))
DURATION = float(os.environ.get("DURATION", "30"))
VERSIONS = int(os.environ.get("VERSIONS", "5"))
PORT = int(os.environ.get("PORT", "18600"))
OUT = pathlib.Path(os.environ.get("OUT", "target/replicas-bench"))
ZIP = pathlib.Path(f"../shared/fixtures/gtfs/{FIXTURE}.zip")

work = pathlib.Path(tempfile.mkdtemp(prefix="gtfs-replicas-bench."))
work.chmod(0o755)  # nginx's worker (nobody, under root) reads the zip from here
running = []


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def db_url(name):
    e = os.environ
    return f"postgres://{e['PGUSER']}:{e['PGPASSWORD']}@{e['PGHOST']}:{e['PGPORT']}/{name}"


def psql(db, sql):
    out = subprocess.run(
        ["psql", "-XAtq", "-d", db, "-c", sql], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


dbs = 0


def fresh_db():
    global dbs
    dbs += 1
    name = f"bench_{os.getpid()}_{dbs}"
    subprocess.run(["createdb", name], check=True)
    return name


def get_json(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as res:
        return json.load(res)


def recommented(data, comment):
    """The same zip in new bytes (a new version): a comment in its end record."""
    eocd = len(data) - 22
    assert data[eocd : eocd + 4] == b"PK\x05\x06", "a zip with a comment already"
    c = comment.encode()
    return data[: eocd + 20] + len(c).to_bytes(2, "little") + c


class Upstream:
    """nginx serving the zip as /gtfs/feed.zip, every request in its access log."""

    def __init__(self, port):
        self.port = port
        self.root = work / "www"
        (self.root / "gtfs").mkdir(parents=True, exist_ok=True)
        self.access = work / "access.log"
        self.access.touch()
        self.conf = work / "nginx.conf"
        self.conf.write_text(
            f"""daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    log_format plain '$request_uri $status';
    access_log {self.access} plain;
    server {{
        listen 127.0.0.1:{port};
        root {self.root};
    }}
}}
"""
        )
        self.proc = None

    def put(self, data):
        tmp = self.root / "gtfs" / "feed.zip.tmp"
        tmp.write_bytes(data)
        tmp.rename(self.root / "gtfs" / "feed.zip")

    def start(self):
        self.proc = subprocess.Popen(["nginx", "-p", str(work), "-c", str(self.conf)])
        running.append(self.proc)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/gtfs/feed.zip", timeout=1).read()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("nginx did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(10)
        running.remove(self.proc)

    def requests(self):
        return sum(1 for line in self.access.read_text().splitlines() if line.startswith("/gtfs/feed.zip"))


class Service:
    def __init__(self, db, port, replica, upstream_port):
        self.port = port
        self.replica = replica
        self.db = db
        self.log = work / f"{replica}-{port}.log"
        cfg = work / f"{replica}-{port}.toml"
        cfg.write_text(
            f"""listen = "127.0.0.1:{port}"
[[instances]]
name = "up"
url = "http://127.0.0.1:{upstream_port}"
api = "gtfs"
refresh_interval = {INTERVAL}
[[instances.feeds]]
gtfs_id = "{FIXTURE}"
zip_url = "/gtfs/feed.zip"
"""
        )
        env = dict(os.environ, DATABASE_URL=db_url(db), GTFS_REPLICA_ID=replica, RUST_LOG="info")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [BIN, "--config", str(cfg), "serve"], stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), env=env
        )
        running.append(self.proc)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, within=120):
        while time.monotonic() - self.started < within:
            try:
                with urllib.request.urlopen(self.url("/readyz"), timeout=1) as res:
                    if res.status == 200:
                        return time.monotonic() - self.started
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise SystemExit(f"{self.replica} not ready; see {self.log}:\n{self.log.read_text()[-3000:]}")

    def version(self):
        return get_json(self.url("/feeds"))["feeds"][0].get("version")

    def vmhwm(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stored_lines(self):
        out = []
        for line in self.log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("fields", {}).get("message") == "feed version stored":
                out.append(entry["fields"])
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        running.remove(self.proc)


def mib(b):
    return b / 2**20


def part_a_b(upstream, original):
    log(f"== A/B: warm start from the store vs cold start from upstream, {ROUNDS} rounds")
    rows = []
    for r in range(ROUNDS):
        db = fresh_db()
        url = db_url(db)
        wal0 = psql(url, "SELECT pg_current_wal_lsn()")
        size0 = int(psql(url, "SELECT pg_database_size(current_database())"))
        cold = Service(db, PORT + 1, "cold", upstream.port)
        cold_s = cold.wait_ready()
        # The store runs after the swap: wait for its line before measuring.
        deadline = time.monotonic() + 60
        while not cold.stored_lines():
            if time.monotonic() > deadline:
                raise SystemExit(f"no store line in {cold.log}")
            time.sleep(0.02)
        stored = cold.stored_lines()[0]
        cold_peak = cold.vmhwm()
        cold.stop()
        wal = int(psql(url, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{wal0}')"))
        grown = int(psql(url, "SELECT pg_database_size(current_database())")) - size0
        blob_bytes = int(
            psql(url, "SELECT coalesce(sum(pg_column_size(bytes)), 0) FROM feed_blob_chunk")
        )
        upstream.stop()
        warm = Service(db, PORT + 1, "warm", upstream.port)
        warm_s = warm.wait_ready()
        warm_peak = warm.vmhwm()
        served = warm.version()
        warm.stop()
        upstream.start()
        assert served == stored["version"], (served, stored)
        row = dict(
            cold_s=cold_s,
            warm_s=warm_s,
            store_ms=stored["elapsed_ms"],
            new_bytes=stored["new_bytes"],
            blob_bytes=blob_bytes,
            wal=wal,
            grown=grown,
            cold_peak=cold_peak,
            warm_peak=warm_peak,
        )
        log(f"round {r + 1}: {row}")
        rows.append(row)
    m = lambda k: statistics.median(row[k] for row in rows)
    lo = lambda k: min(row[k] for row in rows)
    hi = lambda k: max(row[k] for row in rows)
    lines = [
        f"### A. Start-up to ready: from the store vs from upstream ({FIXTURE}.zip, {len(original):,} bytes, {ROUNDS} rounds, median (min–max))",
        "",
        "| start | ready (s) | peak RSS |",
        "|---|---:|---:|",
        f"| cold: empty store, refresh from upstream (nginx on loopback), build, store | {m('cold_s'):.3f} ({lo('cold_s'):.3f}–{hi('cold_s'):.3f}) | {mib(m('cold_peak')):.0f} MiB |",
        f"| warm: upstream down, version read from the store, build | {m('warm_s'):.3f} ({lo('warm_s'):.3f}–{hi('warm_s'):.3f}) | {mib(m('warm_peak')):.0f} MiB |",
        f"| warm / cold | {m('warm_s') / m('cold_s'):.2f}x | |",
        "",
        "### B. The cost of storing one new version (the cold starts above)",
        "",
        "| what | median (min–max) |",
        "|---|---:|",
        f"| time of the store (its log line, `elapsed_ms`) | {m('store_ms'):.0f} ms ({lo('store_ms')}–{hi('store_ms')}) |",
        f"| new blob bytes (the zip, once) | {m('new_bytes'):,.0f} |",
        f"| bytes in `feed_blob_chunk` (stored EXTERNAL: not compressed again) | {m('blob_bytes'):,.0f} |",
        f"| WAL written from the empty database to the stop (migrations included) | {mib(m('wal')):.1f} MiB |",
        f"| database growth (migrations included) | {mib(m('grown')):.1f} MiB |",
        "",
    ]
    return lines


def fetches_per_interval(upstream, n, shared):
    dbs_used = [fresh_db()] if shared else [fresh_db() for _ in range(n)]
    services = [
        Service(dbs_used[0] if shared else dbs_used[i], PORT + 1 + i, f"r{i + 1}", upstream.port) for i in range(n)
    ]
    for s in services:
        s.wait_ready()
    time.sleep(INTERVAL)  # past the first refreshes
    before = upstream.requests()
    time.sleep(DURATION)
    count = upstream.requests() - before
    return services, count / (DURATION / INTERVAL)


def convergence(upstream, services, original):
    db = db_url(services[0].db)  # they all share it
    times = []
    for k in range(VERSIONS):
        data = recommented(original, f"bench version {k} {time.time()}")
        version = hashlib.sha256(data).hexdigest()
        upstream.put(data)
        seen = {}
        deadline = time.monotonic() + INTERVAL * 3 + 30
        while len(seen) < len(services):
            for s in services:
                if s.replica not in seen and s.version() == version:
                    seen[s.replica] = time.time()
            if time.monotonic() > deadline:
                raise SystemExit(f"version {version[:12]} not on every replica: {seen}")
            time.sleep(0.005)
        stored = float(
            psql(
                db,
                "SELECT extract(epoch FROM c.updated_at) FROM feed_current c "
                f"JOIN feed_version v ON v.id = c.version_id WHERE v.version = '{version}'",
            )
        )
        last = max(seen.values())
        times.append(last - stored)
        log(f"  version {k + 1}: last replica {last - stored:.3f} s after the store")
    return times


def part_c_d(upstream, original):
    log(f"== C/D: upstream requests per {INTERVAL:g} s interval over {DURATION:g} s; convergence")
    upstream.put(original)
    c_rows = []
    d_rows = []
    for n in (1, 3, 5):
        services, alone = fetches_per_interval(upstream, n, shared=False)
        for s in services:
            s.stop()
        services, shared = fetches_per_interval(upstream, n, shared=True)
        log(f"{n} replicas: {alone:.2f} per interval each on its own database, {shared:.2f} on one")
        c_rows.append((n, alone, shared))
        if n > 1:
            times = convergence(upstream, services, original)
            d_rows.append((n, times))
        for s in services:
            s.stop()
    lines = [
        f"### C. Upstream requests per refresh interval ({INTERVAL:g} s, counted over {DURATION:g} s in nginx's access log)",
        "",
        "| replicas | each on its own database (no shared lease: as before) | on one database (the lease) | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for n, alone, shared in c_rows:
        lines.append(f"| {n} | {alone:.2f} | {shared:.2f} | {shared / alone:.2f}x |")
    lines += [
        "",
        f"### D. From a new version in the store to the last replica serving it ({VERSIONS} versions each)",
        "",
        "| replicas | median | max | each (s) |",
        "|---:|---:|---:|---|",
    ]
    for n, times in d_rows:
        lines.append(
            f"| {n} | {statistics.median(times):.3f} s | {max(times):.3f} s | {', '.join(f'{t:.3f}' for t in times)} |"
        )
    lines.append("")
    return lines


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    original = ZIP.read_bytes()
    upstream = Upstream(PORT)
    upstream.put(original)
    try:
        upstream.start()
        lines = part_a_b(upstream, original)
        lines += part_c_d(upstream, original)
    finally:
        for p in list(running):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    text = "\n".join(lines)
    (OUT / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
