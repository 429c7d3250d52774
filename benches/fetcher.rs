//! The fetcher benchmark of issue 4 (results in BENCHMARKS.md): `cargo bench --bench fetcher`.
//!
//! Everything runs against the OTP simulator of the integration tests (the same file,
//! compiled in here) on loopback, in this process, and is compared with a reference measured
//! in the same run, because the machine is shared and noisy:
//!
//! 1. latency and connections: the service's `OtpClient` against the same client with
//!    pooling disabled, 1,000 sequential requests and 1,000 with 50 in flight, for a small
//!    answer (OTP 1 `/feeds`) and a larger one (OTP 1 `/routes` of bart). Each scenario has
//!    a warm-up round, then 3 rounds alternating pooled and unpooled; the median round (by
//!    mean latency) is reported. Connection reuse is measured with the simulator's default
//!    (like OTP's Grizzly: `Connection: close` on the 256th response of a connection) and
//!    without that cap;
//! 2. refresh of the largest fixture (wmata): download through `OtpClient`, sha256,
//!    `FeedSnapshot::from_zip_bytes`, against gtfs-structures' own `Gtfs::from_reader` of
//!    the same bytes, alternating, 5 rounds each after a warm-up, medians; plus the
//!    unchanged refresh (a conditional GET answered 304);
//! 3. peak memory of a refresh, each in a process of its own (this binary run again with
//!    `rss` or `rss-gtfs`), from `/proc/self/status`.
//!
//! It prints markdown tables on stdout, for BENCHMARKS.md. `-- reuse` runs only the reuse
//! table, three times.

#[path = "../tests/it/support/otp_sim/mod.rs"]
#[allow(dead_code)]
mod otp_sim;

use std::collections::HashMap;
use std::io::Cursor;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gtfs_fetch::config::Config;
use gtfs_fetch::feed::snapshot::FeedSnapshot;
use gtfs_fetch::otp::client::{Call, OtpClient, Response};
use gtfs_fetch::otp::otp1;
use otp_sim::OtpSim;
use reqwest::StatusCode;
use reqwest::header::{
    ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use sha2::{Digest, Sha256};
use url::Url;

const REQUESTS: usize = 1000;
const IN_FLIGHT: usize = 50;
const ROUNDS: usize = 3;
/// Requests of the reuse measurement: 100 times the server's cap.
const REUSE_REQUESTS: usize = 100 * 256;
const REFRESH_ROUNDS: usize = 5;
/// The largest fixture feed.
const BIG: &str = "wmata";
const BIG_PATH: &str = "/gtfs/wmata.zip";

fn main() {
    // `cargo bench` appends `--bench`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.first().map(String::as_str) {
        None => runtime().block_on(bench()),
        Some("rss") => runtime().block_on(rss_refresh()),
        Some("rss-gtfs") => rss_gtfs(),
        Some("miss") => runtime().block_on(miss_section()),
        Some("reuse") => runtime().block_on(async {
            let sim = OtpSim::start(&["bart"]).await;
            let config = config(&sim.url());
            for _ in 0..3 {
                reuse_section(&sim, &config).await;
            }
        }),
        Some(other) => {
            eprintln!("usage: fetcher [rss | rss-gtfs | miss | reuse]; unknown argument {other:?}");
            std::process::exit(2);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// One OTP 1 instance at `url`, every other setting at its default.
fn config(url: &str) -> Config {
    let text = format!("[[instances]]\nname = \"sim\"\nurl = \"{url}\"\napi = \"otp1\"\n");
    Config::parse(Some(("bench.toml", &text)), |_| None).expect("a valid bench config")
}

fn client(config: &Config, pooled: bool) -> OtpClient {
    OtpClient::with_pooling(config, &config.instances[0], pooled).expect("a client")
}

// ---------------------------------------------------------------------------------------
// Latency and connections
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Req {
    /// OTP 1 `/feeds`: a few bytes.
    Feeds,
    /// OTP 1 `/routes` with bart loaded.
    Routes,
}

impl Req {
    fn label(self) -> &'static str {
        match self {
            Req::Feeds => "`/feeds`",
            Req::Routes => "`/routes` (bart)",
        }
    }
    fn path(self) -> String {
        match self {
            Req::Feeds => otp1::feeds_path("default"),
            Req::Routes => otp1::routes_path("default"),
        }
    }
}

/// One call, answer parsed as the service parses it; its latency.
async fn one(client: &OtpClient, url: &Url, req: Req) -> Duration {
    let start = Instant::now();
    let n = client
        .call(Call::get(url.clone()), |r: &Response| match req {
            Req::Feeds => otp1::parse_feeds(&r.body)
                .map(|f| f.len())
                .map_err(|e| e.to_string()),
            Req::Routes => otp1::parse_routes("bart", &r.body, &[])
                .map(|r| r.len())
                .map_err(|e| e.to_string()),
        })
        .await
        .expect("a request to the simulator");
    let elapsed = start.elapsed();
    assert!(n > 0, "an empty answer");
    elapsed
}

/// Counters read before and after a round.
#[derive(Clone, Copy)]
struct Counts {
    client_conns: u64,
    sim_conns: u64,
    sent: u64,
    stale: u64,
    retries: u64,
    failures: u64,
}

impl Counts {
    fn read(client: &OtpClient, sim: &OtpSim) -> Counts {
        let r = client.report();
        Counts {
            client_conns: r.connections_opened,
            sim_conns: sim.connections(),
            sent: r.requests_sent,
            stale: r.stale_retries,
            retries: r.retries,
            failures: r.failures,
        }
    }
    fn minus(self, o: Counts) -> Counts {
        Counts {
            client_conns: self.client_conns - o.client_conns,
            sim_conns: self.sim_conns - o.sim_conns,
            sent: self.sent - o.sent,
            stale: self.stale - o.stale,
            retries: self.retries - o.retries,
            failures: self.failures - o.failures,
        }
    }
}

struct Round {
    /// Sorted.
    lat: Vec<Duration>,
    wall: Duration,
    counts: Counts,
}

impl Round {
    fn mean(&self) -> Duration {
        self.lat.iter().sum::<Duration>() / self.lat.len() as u32
    }
    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.lat.len() as f64).ceil() as usize;
        self.lat[rank.clamp(1, self.lat.len()) - 1]
    }
    /// Share of tries that did not open a connection (client's count).
    fn reuse(&self) -> f64 {
        1.0 - self.counts.client_conns as f64 / self.counts.sent as f64
    }
}

async fn round(client: &OtpClient, sim: &OtpSim, req: Req, concurrent: bool, n: usize) -> Round {
    let url = client.url(&req.path());
    let before = Counts::read(client, sim);
    let start = Instant::now();
    let mut lat: Vec<Duration> = if concurrent {
        futures::stream::iter(0..n)
            .map(|_| one(client, &url, req))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await
    } else {
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            lat.push(one(client, &url, req).await);
        }
        lat
    };
    let wall = start.elapsed();
    lat.sort();
    Round {
        lat,
        wall,
        counts: Counts::read(client, sim).minus(before),
    }
}

/// The median of `rounds` by mean latency, and the spread of the round means
/// ((max - min) / median).
fn median_round(mut rounds: Vec<Round>) -> (Round, f64) {
    rounds.sort_by_key(Round::mean);
    let (lo, hi) = (rounds[0].mean(), rounds[rounds.len() - 1].mean());
    let mid = rounds.swap_remove(rounds.len() / 2);
    let spread = (hi.as_secs_f64() - lo.as_secs_f64()) / mid.mean().as_secs_f64();
    (mid, spread)
}

/// Warm-up, then `ROUNDS` rounds of each client, alternating; the median rounds.
async fn scenario(
    sim: &OtpSim,
    clients: &[&OtpClient],
    req: Req,
    concurrent: bool,
) -> Vec<(Round, f64)> {
    for c in clients {
        round(c, sim, req, concurrent, REQUESTS).await;
    }
    let mut rounds: Vec<Vec<Round>> = clients.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (c, r) in clients.iter().zip(rounds.iter_mut()) {
            r.push(round(c, sim, req, concurrent, REQUESTS).await);
        }
    }
    rounds.into_iter().map(median_round).collect()
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn pattern(concurrent: bool) -> &'static str {
    if concurrent {
        "1,000 × 50 in flight"
    } else {
        "1,000 sequential"
    }
}

fn latency_row(req: Req, concurrent: bool, name: &str, (r, spread): &(Round, f64)) -> String {
    let c = &r.counts;
    format!(
        "| {} | {} | {name} | {} | {} | {} | {:.0} | {} / {} | {:.2} % | {:.0} % |",
        req.label(),
        pattern(concurrent),
        us(r.mean()),
        us(r.pct(50.0)),
        us(r.pct(99.0)),
        REQUESTS as f64 / r.wall.as_secs_f64(),
        c.client_conns,
        c.sim_conns,
        100.0 * r.reuse(),
        100.0 * spread,
    )
}

async fn latency_section(sim: &OtpSim, config: &Config) {
    println!(
        "### Latency and connections (simulator default: `Connection: close` after 256 requests)\n"
    );
    println!(
        "Median of {ROUNDS} rounds (by mean latency) after a warm-up round; counts are of that round only \
         (steady state). Latency is per call: request, whole body, parse.\n"
    );
    println!(
        "| request | pattern | client | mean | p50 | p99 | req/s | connections opened (client / sim) | reuse | spread of round means |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    let mut anomalies = Vec::new();
    for req in [Req::Feeds, Req::Routes] {
        for concurrent in [false, true] {
            let pooled = client(config, true);
            let unpooled = client(config, false);
            let res = scenario(sim, &[&pooled, &unpooled], req, concurrent).await;
            println!("{}", latency_row(req, concurrent, "pooled", &res[0]));
            println!("{}", latency_row(req, concurrent, "unpooled", &res[1]));
            for (name, c) in [("pooled", &pooled), ("unpooled", &unpooled)] {
                let r = c.report();
                if r.failures + r.retries + r.stale_retries > 0 {
                    anomalies.push(format!(
                        "{} {} {name}: failures {}, retries {}, stale retries {}",
                        req.label(),
                        pattern(concurrent),
                        r.failures,
                        r.retries,
                        r.stale_retries
                    ));
                }
            }
            ratios.push((req, concurrent, res));
        }
    }
    println!(
        "\nWith 50 in flight, each of the 50 pooled connections serves about 20 requests a round, \
         far from the server's cap of 256: the reuse table below measures the steady state."
    );
    println!("\n#### Pooled / unpooled\n");
    println!(
        "| request | pattern | mean | p99 | connections opened | req/s | per-call saving (unpooled − pooled mean) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (req, concurrent, res) in &ratios {
        let (p, u) = (&res[0].0, &res[1].0);
        let f = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "| {} | {} | {:.2}× | {:.2}× | {} / {} | {:.2}× | {} |",
            req.label(),
            pattern(*concurrent),
            f(p.mean(), u.mean()),
            f(p.pct(99.0), u.pct(99.0)),
            p.counts.client_conns,
            u.counts.client_conns,
            f(u.wall, p.wall),
            us(u.mean().saturating_sub(p.mean())),
        );
    }
    if anomalies.is_empty() {
        println!("\nNo failures, retries or stale-connection retries in any scenario.\n");
    } else {
        println!("\nAnomalies: {}\n", anomalies.join("; "));
    }
}

async fn reuse_section(sim: &OtpSim, config: &Config) {
    println!(
        "### Connection reuse of the pooled client, with and without the server's 256-request cap\n"
    );
    println!(
        "`/feeds`, {REUSE_REQUESTS} requests (100 × 256) after a warm-up of {REQUESTS}, so that \
         with 50 in flight every connection meets the cap too (target: >= 99.9 % of requests \
         on reused connections).\n"
    );
    println!(
        "| server | pattern | requests | connections opened (client / sim) | reuse | stale retries | target met |"
    );
    println!("|---|---|---:|---:|---:|---:|---|");
    for cap in [Some(otp_sim::OTP_MAX_REQUESTS_PER_CONNECTION), None] {
        sim.set_max_requests_per_connection(cap);
        for concurrent in [false, true] {
            let c = client(config, true);
            round(&c, sim, Req::Feeds, concurrent, REQUESTS).await;
            let d = round(&c, sim, Req::Feeds, concurrent, REUSE_REQUESTS)
                .await
                .counts;
            let reuse = 1.0 - d.client_conns as f64 / d.sent as f64;
            println!(
                "| {} | {} | {} | {} / {} | {:.2} % | {} | {} |",
                match cap {
                    Some(n) => format!("`Connection: close` after {n} (OTP's default)"),
                    None => "no cap (`set_max_requests_per_connection(None)`)".into(),
                },
                pattern(concurrent),
                d.sent,
                d.client_conns,
                d.sim_conns,
                100.0 * reuse,
                d.stale,
                if reuse >= 0.999 { "yes" } else { "no" },
            );
        }
    }
    sim.set_max_requests_per_connection(Some(otp_sim::OTP_MAX_REQUESTS_PER_CONNECTION));
    println!();
}

// ---------------------------------------------------------------------------------------
// Refresh
// ---------------------------------------------------------------------------------------

struct Refreshed {
    snapshot: FeedSnapshot,
    etag: Option<String>,
    last_modified: Option<String>,
    download: Duration,
    sha: Duration,
    build: Duration,
    total: Duration,
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_owned)
}

/// What `refresh::load_zip` does for a changed feed: the download through the client,
/// sha256, the snapshot built off the async threads.
async fn refresh(client: &OtpClient, config: &Config) -> Refreshed {
    let start = Instant::now();
    let on_chunk = |_done: u64, _total: Option<u64>| {};
    let call = Call {
        max_bytes: config.max_feed_bytes,
        progress: Some(&on_chunk),
        ..Call::get(client.url(BIG_PATH))
    };
    let (bytes, etag, last_modified) = client
        .call(call, |r: &Response| {
            if r.status.is_success() {
                Ok((
                    r.body.clone(),
                    header_text(&r.headers, ETAG),
                    header_text(&r.headers, LAST_MODIFIED),
                ))
            } else {
                Err(format!("HTTP {}", r.status))
            }
        })
        .await
        .expect("the zip");
    let downloaded = Instant::now();
    let version = hex::encode(Sha256::digest(&bytes));
    let hashed = Instant::now();
    let snapshot = tokio::task::spawn_blocking(move || {
        FeedSnapshot::from_zip_bytes(BIG, &version, BIG_PATH, &bytes)
    })
    .await
    .expect("the parser thread")
    .expect("wmata builds a snapshot");
    let built = Instant::now();
    Refreshed {
        snapshot,
        etag,
        last_modified,
        download: downloaded - start,
        sha: hashed - downloaded,
        build: built - hashed,
        total: built - start,
    }
}

/// What a refresh of an unchanged feed costs: one conditional GET answered 304, no parse.
async fn unchanged_refresh(client: &OtpClient, etag: &str, last_modified: &str) -> Duration {
    let mut headers = HeaderMap::new();
    headers.insert(IF_NONE_MATCH, HeaderValue::from_str(etag).unwrap());
    headers.insert(
        IF_MODIFIED_SINCE,
        HeaderValue::from_str(last_modified).unwrap(),
    );
    let start = Instant::now();
    let len = client
        .call(
            Call {
                headers,
                ..Call::get(client.url(BIG_PATH))
            },
            |r: &Response| match r.status {
                StatusCode::NOT_MODIFIED => Ok(r.body.len()),
                s => Err(format!("expected 304, got {s}")),
            },
        )
        .await
        .expect("a 304");
    let elapsed = start.elapsed();
    assert_eq!(len, 0);
    elapsed
}

/// gtfs-structures' own parse of the same bytes, timed without the drop: `Gtfs::from_reader`,
/// or with `shapes = false` the same without `shapes.txt` (which our snapshot skips too).
async fn gtfs_parse(bytes: bytes::Bytes, shapes: bool) -> Duration {
    let (elapsed, gtfs) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let gtfs = if shapes {
            gtfs_structures::Gtfs::from_reader(Cursor::new(&bytes[..]))
        } else {
            gtfs_structures::GtfsReader::default()
                .read_shapes(false)
                .raw()
                .read_from_reader(Cursor::new(&bytes[..]))
                .and_then(gtfs_structures::Gtfs::try_from)
        }
        .expect("gtfs-structures reads wmata");
        (start.elapsed(), gtfs)
    })
    .await
    .expect("the parser thread");
    drop(gtfs);
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn min_max(v: &[Duration]) -> String {
    format!(
        "{} – {}",
        ms(*v.iter().min().unwrap()),
        ms(*v.iter().max().unwrap())
    )
}

async fn refresh_section(sim: &OtpSim, config: &Config) {
    let bytes = otp_sim::fixture_zip(BIG);
    let client = client(config, true);
    // Warm-up: one of each.
    let first = refresh(&client, config).await;
    let _ = gtfs_parse(bytes.clone(), true).await;
    let _ = gtfs_parse(bytes.clone(), false).await;
    let counts = first.snapshot.counts;
    let approx = first.snapshot.approx_bytes;
    let (etag, last_modified) = (
        first.etag.clone().expect("an ETag"),
        first.last_modified.clone().expect("a Last-Modified"),
    );
    drop(first);
    let (mut ours, mut theirs, mut no_shapes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REFRESH_ROUNDS {
        theirs.push(gtfs_parse(bytes.clone(), true).await);
        no_shapes.push(gtfs_parse(bytes.clone(), false).await);
        let r = refresh(&client, config).await;
        ours.push((r.total, r.download, r.sha, r.build));
        drop(r);
    }
    // The unchanged refresh: one conditional request, answered 304.
    let zip_requests = sim.requests_for(BIG_PATH);
    for _ in 0..50 {
        unchanged_refresh(&client, &etag, &last_modified).await;
    }
    let mut unchanged = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        unchanged.push(unchanged_refresh(&client, &etag, &last_modified).await);
    }
    let conditional_requests = sim.requests_for(BIG_PATH) - zip_requests;
    unchanged.sort();
    let unchanged_round = Round {
        lat: unchanged,
        wall: Duration::ZERO,
        counts: Counts::read(&client, sim),
    };

    let theirs_median = median(theirs.clone());
    let pick = |f: fn(&(Duration, Duration, Duration, Duration)) -> Duration| -> Vec<Duration> {
        ours.iter().map(f).collect()
    };
    let (total, download, sha, build) =
        (pick(|o| o.0), pick(|o| o.1), pick(|o| o.2), pick(|o| o.3));
    let ratio = median(total.clone()).as_secs_f64() / theirs_median.as_secs_f64();
    let ratio_no_shapes =
        median(total.clone()).as_secs_f64() / median(no_shapes.clone()).as_secs_f64();

    println!(
        "### Refresh of the largest fixture ({BIG}.zip, {} bytes)\n",
        bytes.len()
    );
    println!(
        "Alternating, {REFRESH_ROUNDS} rounds of each after a warm-up of each, medians. \
         Snapshot: {} routes, {} trips, {} stops, {} stop_times; approx_bytes {:.1} MiB.\n",
        counts.routes,
        counts.trips,
        counts.stops,
        counts.stop_times,
        approx as f64 / (1024.0 * 1024.0)
    );
    println!("| what | median | min – max |");
    println!("|---|---:|---:|");
    println!(
        "| gtfs-structures `Gtfs::from_reader` of the bytes (reference) | {} | {} |",
        ms(theirs_median),
        min_max(&theirs)
    );
    println!(
        "| gtfs-structures without shapes.txt (`read_shapes(false)`, `Gtfs::try_from`) | {} | {} |",
        ms(median(no_shapes.clone())),
        min_max(&no_shapes)
    );
    println!(
        "| **our refresh**: download + sha256 + `FeedSnapshot::from_zip_bytes` | **{}** | {} |",
        ms(median(total.clone())),
        min_max(&total)
    );
    println!(
        "| ↳ download through `OtpClient` (loopback) | {} | {} |",
        ms(median(download.clone())),
        min_max(&download)
    );
    println!(
        "| ↳ sha256 | {} | {} |",
        ms(median(sha.clone())),
        min_max(&sha)
    );
    println!(
        "| ↳ `FeedSnapshot::from_zip_bytes` | {} | {} |",
        ms(median(build.clone())),
        min_max(&build)
    );
    println!("| **ratio** refresh / `Gtfs::from_reader` (target <= 1.2×) | **{ratio:.2}×** | |");
    println!("| ratio refresh / gtfs-structures without shapes.txt | {ratio_no_shapes:.2}× | |");
    println!(
        "| unchanged refresh: conditional GET (If-None-Match) answered 304, no parse; \
         {REQUESTS} sequential, pooled | mean {}, p50 {}, p99 {} | {} requests to the zip URL for {} refreshes |",
        us(unchanged_round.mean()),
        us(unchanged_round.pct(50.0)),
        us(unchanged_round.pct(99.0)),
        conditional_requests,
        REQUESTS + 50,
    );
    println!();
}

// ---------------------------------------------------------------------------------------
// Peak memory, one process per measurement
// ---------------------------------------------------------------------------------------

/// `VmRSS` or `VmHWM` of this process, KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Resets `VmHWM` to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn jemalloc_allocated_kib() -> u64 {
    let _ = tikv_jemalloc_ctl::epoch::advance();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0) as u64 / 1024
}

/// One line the parent parses: `RSS key=value ...`.
struct Memory {
    reset: bool,
    before: u64,
    before_alloc: u64,
    peak: u64,
    held: u64,
    held_alloc: u64,
    dropped: u64,
    dropped_alloc: u64,
}

impl Memory {
    /// Resets the peak and reads the starting point.
    fn start() -> Memory {
        let reset = reset_peak();
        Memory {
            reset,
            before: status_kib("VmRSS"),
            before_alloc: jemalloc_allocated_kib(),
            peak: 0,
            held: 0,
            held_alloc: 0,
            dropped: 0,
            dropped_alloc: 0,
        }
    }
    /// The work is done, its result still held.
    fn done(&mut self) {
        self.peak = status_kib("VmHWM");
        self.held = status_kib("VmRSS");
        self.held_alloc = jemalloc_allocated_kib();
    }
    /// The result is dropped: prints the line the parent parses.
    fn dropped(mut self) {
        self.dropped = status_kib("VmRSS");
        self.dropped_alloc = jemalloc_allocated_kib();
        let m = self;
        println!(
            "RSS before={} before_alloc={} peak={} held={} held_alloc={} dropped={} dropped_alloc={} peak_reset={}",
            m.before,
            m.before_alloc,
            m.peak,
            m.held,
            m.held_alloc,
            m.dropped,
            m.dropped_alloc,
            m.reset
        );
    }
}

/// `rss`: one full refresh of wmata (download from a simulator in this process that only
/// holds the zip's bytes, sha256, snapshot).
async fn rss_refresh() {
    let sim = OtpSim::start(&["sample-feed"]).await;
    sim.set_zip(BIG, otp_sim::fixture_zip(BIG).to_vec());
    let config = config(&sim.url());
    let client = client(&config, true);
    let mut m = Memory::start();
    let r = refresh(&client, &config).await;
    m.done();
    drop(r);
    m.dropped();
}

/// `rss-gtfs`: only gtfs-structures' `Gtfs::from_reader` of the same zip.
fn rss_gtfs() {
    let bytes = otp_sim::fixture_zip(BIG);
    let mut m = Memory::start();
    let gtfs = gtfs_structures::Gtfs::from_reader(Cursor::new(&bytes[..])).expect("wmata");
    m.done();
    drop(gtfs);
    m.dropped();
}

async fn memory_child(mode: &str) -> HashMap<String, String> {
    let exe = std::env::current_exe().expect("this binary");
    let out = tokio::process::Command::new(exe)
        .arg(mode)
        .output()
        .await
        .expect("run the memory child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{mode}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RSS "))
        .unwrap_or_else(|| panic!("{mode}: no RSS line in {stdout}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn mib(kib: &str) -> String {
    format!("{:.1} MiB", kib.parse::<f64>().unwrap_or(f64::NAN) / 1024.0)
}

async fn memory_section() {
    println!("### Peak memory of one refresh of {BIG} (each in a fresh process)\n");
    println!(
        "`VmHWM` reset to the current RSS just before the work (`/proc/self/clear_refs`), so \
         the peak is the work's; \"after drop\" is still jemalloc's resident memory (it returns \
         freed pages lazily), \"allocated\" is what the program holds per jemalloc.\n"
    );
    println!(
        "| process | RSS before | peak RSS (VmHWM) | peak − before | RSS holding the result | allocated: before → holding the result → after drop | RSS after drop |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (mode, label) in [
        (
            "rss",
            "our refresh: download + sha256 + snapshot (`-- rss`)",
        ),
        ("rss-gtfs", "`Gtfs::from_reader` only (`-- rss-gtfs`)"),
    ] {
        let m = memory_child(mode).await;
        let v = |k: &str| m.get(k).cloned().unwrap_or_default();
        let delta = v("peak").parse::<u64>().unwrap_or(0) as i64
            - v("before").parse::<u64>().unwrap_or(0) as i64;
        println!(
            "| {label}{} | {} | {} | {} | {} | {} → {} → {} | {} |",
            if v("peak_reset") == "true" {
                ""
            } else {
                " (peak not reset)"
            },
            mib(&v("before")),
            mib(&v("peak")),
            mib(&delta.to_string()),
            mib(&v("held")),
            mib(&v("before_alloc")),
            mib(&v("held_alloc")),
            mib(&v("dropped_alloc")),
            mib(&v("dropped")),
        );
    }
    println!();
}

async fn bench() {
    let started = Instant::now();
    let sim = OtpSim::start(&["bart"]).await;
    // The big zip is only served, not loaded into the simulator's OTP model.
    sim.set_zip(BIG, otp_sim::fixture_zip(BIG).to_vec());
    let config = config(&sim.url());
    println!(
        "<!-- cargo bench --bench fetcher, {} -->\n",
        jiff::Timestamp::now()
    );
    latency_section(&sim, &config).await;
    reuse_section(&sim, &config).await;
    refresh_section(&sim, &config).await;
    memory_section().await;
    println!("<!-- total {:.0} s -->", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------
// Read-through miss: the service's added latency over calling OTP directly
// ---------------------------------------------------------------------------------------

/// `cargo bench --bench fetcher -- miss`: the service in-process (embedded PostgreSQL in a
/// temporary directory) over an OTP 2 simulator; the route cache is emptied before each
/// request (outside the timing), so every one is a miss read through to OTP. Alternating with the
/// same GraphQL request sent straight to the simulator, same client, same run.
async fn miss_section() {
    use gtfs_fetch::otp::otp2;
    let sim = OtpSim::start(&["bart"]).await;
    sim.set_max_requests_per_connection(None);
    let dir = tempfile::Builder::new()
        .prefix("gtfs-miss-")
        .tempdir()
        .expect("temp dir");
    let text = format!(
        "[[instances]]\nname = \"sim\"\nurl = \"{}\"\napi = \"otp2\"\n",
        sim.url()
    );
    let data_dir = dir.path().display().to_string();
    let env = [
        ("GTFS_LISTEN", "127.0.0.1:0"),
        ("GTFS_DATA_DIR", data_dir.as_str()),
    ];
    let config = Config::parse(Some(("bench.toml", &text)), |k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .expect("config");
    let listener = gtfs_fetch::server::bind(config.listen).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = gtfs_fetch::app::App::start(config, true)
        .await
        .expect("start the service");
    let router = gtfs_fetch::api::router(app.state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gtfs_fetch::server::serve(
        listener,
        router,
        app.state.clone(),
        async move {
            let _ = rx.await;
        },
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let service_url = format!("http://{addr}/feeds/bart/routes/01");
    for _ in 0..600 {
        if http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let graphql = format!("{}/otp/gtfs/v1", sim.url());
    let body = otp2::route_request("bart", "01", otp2::Dialect::Current);
    let direct = || async {
        let t = Instant::now();
        let r = http
            .post(&graphql)
            .json(&body)
            .send()
            .await
            .expect("direct");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
        t.elapsed()
    };
    let via = || async {
        app.state.cache.invalidate_all();
        // Let moka finish the invalidation now (stats() runs its pending tasks), not
        // inside the next, timed, miss: in service misses do not follow a flush.
        app.state.cache.stats().await;
        let t = Instant::now();
        let r = http.get(&service_url).send().await.expect("service");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cache"], "MISS", "every request must miss");
        r.bytes().await.expect("body");
        t.elapsed()
    };
    for _ in 0..100 {
        direct().await;
        via().await;
    }
    let (mut d, mut v) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        d.push(direct().await);
        v.push(via().await);
    }
    let p = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
    };
    let (d50, v50, d99, v99) = (
        p(&mut d, 0.5),
        p(&mut v, 0.5),
        p(&mut d, 0.99),
        p(&mut v, 0.99),
    );
    println!(
        "## Read-through miss vs OTP directly (bart route 01, 1,000 alternating requests, sequential)\n"
    );
    println!("| path | p50 | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| simulator directly (GraphQL Route) | {} | {} |",
        us(d50),
        us(d99)
    );
    println!(
        "| service, cache miss read through | {} | {} |",
        us(v50),
        us(v99)
    );
    println!(
        "\nmedian added by the service: {} (target <= 200 µs)",
        us(v50.saturating_sub(d50))
    );

    // Where the added time goes: each step of the miss on its own, same answer bytes.
    let answer = http
        .post(&graphql)
        .json(&body)
        .send()
        .await
        .expect("direct")
        .bytes()
        .await
        .expect("body");
    let median_of = |f: &mut dyn FnMut()| {
        let mut times: Vec<Duration> = (0..1000)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect();
        times.sort();
        times[times.len() / 2]
    };
    let detail = otp2::parse_route("bart", &answer)
        .expect("parse")
        .expect("route");
    let encoded = serde_json::to_vec(&detail).expect("encode");
    let parse = median_of(&mut || {
        std::hint::black_box(otp2::parse_route("bart", &answer).ok());
    });
    let encode = median_of(&mut || {
        std::hint::black_box(serde_json::to_vec(&detail).ok());
    });
    let hash = median_of(&mut || {
        std::hint::black_box(gtfs_fetch::cache::CachedRoute::new(
            encoded.clone().into(),
            None,
            Duration::ZERO,
            true,
        ));
    });
    let mut hits = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let r = http.get(&service_url).send().await.expect("service");
        assert_ne!(r.headers()["x-cache"], "MISS");
        r.bytes().await.expect("body");
        hits.push(t.elapsed());
    }
    let hit50 = p(&mut hits, 0.5);
    println!(
        "\nSteps of a miss, medians of 1,000 each: OTP's answer {} bytes, ours {} bytes; \
         `otp2::parse_route` {}, `serde_json::to_vec` {}, ETag (XXH3-128) {}; \
         a cache hit through the same client (the extra HTTP hop and the service's layers) {}.",
        answer.len(),
        encoded.len(),
        us(parse),
        us(encode),
        us(hash),
        us(hit50)
    );
    let _ = tx.send(());
    let _ = server.await;
    app.stop().await.expect("stop");
}
