//! Issue 9, point 6 (results in BENCHMARKS.md): the service's HTTP client against a real
//! OTP 2, pooled vs unpooled, and a route query over TLS with round-trip time added. Run it
//! with `bash benches/real-otp.sh`, which starts everything this binary talks to (OTP,
//! nginx as the TLS terminator, toxiproxy for the latency, tcpdump counting SYNs), passes
//! the addresses in the environment and stops it all at the end. Without `REAL_OTP_URL`
//! the binary says so and exits 0 (so `cargo bench` over every bench does not fail).
//!
//! (a) `OtpClient::with_pooling(config, instance, pooled)` against OTP directly on
//!     loopback: the GraphQL `Route` request of the service (`otp2::route_request`, answer
//!     parsed by `otp2::parse_route`), 1,000 sequential and 1,000 with 50 in flight, for
//!     each of pooled / unpooled; warm-up round, then 3 rounds alternating the two
//!     clients, the median round (by mean) reported, with the connections the client
//!     counted and the SYNs tcpdump saw on the wire for that round.
//! (b) the same request through `client -> toxiproxy (latency toxic) -> nginx (TLS or
//!     plain) -> OTP`, all on loopback. `build_http_client` takes no root certificate, so
//!     the client here is built with the same settings (HTTP/1.1 only, TCP_NODELAY, pool
//!     of `connection_limit` idle connections kept `http_pool_idle_timeout`, TCP
//!     keepalive, connect timeout, user agent, a connector layer counting connections)
//!     plus `tls_certs_only([self-signed cert])`. Variants run in blocks of 50, blocks of
//!     the variants alternating, 4 blocks each.
//!
//! Environment (set by the script): `REAL_OTP_URL` (OTP, http), `REAL_OTP_ROUTE`
//! (`feed:route`, default `caltrain:Lo-130`), `REAL_OTP_SYN_LOG` (tcpdump's output),
//! `REAL_OTP_SENTINEL_PORT` (a closed port in tcpdump's filter: a connect to it is a SYN
//! that tells all earlier SYNs are in the log), `REAL_OTP_CA` (the PEM certificate),
//! `REAL_OTP_TLS_RTT`, `REAL_OTP_PLAIN_RTT` (through toxiproxy with the latency toxics),
//! `REAL_OTP_TLS_PROXY` (through toxiproxy, no toxic), `REAL_OTP_TLS_DIRECT`,
//! `REAL_OTP_PLAIN_DIRECT` (nginx itself), `REAL_OTP_ADDED_RTT_MS` (what the script set).
//! (b) runs only when `REAL_OTP_CA` is set; `REAL_OTP_SKIP_A=1` skips (a).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gtfs_fetch::config::Config;
use gtfs_fetch::otp::client::{Call, OtpClient, Response, http_client_builder};
use gtfs_fetch::otp::otp2;
use url::Url;

const REQUESTS: usize = 1000;
const IN_FLIGHT: usize = 50;
const ROUNDS: usize = 3;
const WARM_UP: usize = 200;
/// (b): requests per block, blocks per variant.
const BLOCK: usize = 50;
const BLOCKS: usize = 4;

fn main() {
    let Ok(otp) = std::env::var("REAL_OTP_URL") else {
        eprintln!("real_otp: REAL_OTP_URL is not set; run `bash benches/real-otp.sh`");
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(bench(&otp));
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn bench(otp: &str) {
    let started = Instant::now();
    let route = env("REAL_OTP_ROUTE").unwrap_or_else(|| "caltrain:Lo-130".into());
    let (feed, route_id) = route.split_once(':').expect("REAL_OTP_ROUTE is feed:route");
    let body = otp2::route_request(feed, route_id, otp2::Dialect::Current);
    let mut wire = Wire::from_env();
    println!(
        "<!-- cargo bench --bench real_otp (benches/real-otp.sh), {} -->\n",
        jiff::Timestamp::now()
    );
    let config = config(otp);
    let q = Query { feed, body: &body };
    if env("REAL_OTP_SKIP_A").is_none() {
        section_a(&config, &q, &mut wire).await;
    }
    println!(
        "<!-- (a) done at {:.0} s -->\n",
        started.elapsed().as_secs_f64()
    );
    if let Some(ca) = env("REAL_OTP_CA") {
        section_b(&config, &q, &mut wire, &ca).await;
    }
    println!("<!-- total {:.0} s -->", started.elapsed().as_secs_f64());
}

/// One OTP 2 instance at `url`, every other setting at its default.
fn config(url: &str) -> Config {
    let text = format!("[[instances]]\nname = \"otp\"\nurl = \"{url}\"\napi = \"otp2\"\n");
    Config::parse(Some(("bench.toml", &text)), |_| None).expect("a valid bench config")
}

struct Query<'a> {
    feed: &'a str,
    body: &'a serde_json::Value,
}

impl Query<'_> {
    /// The answer parsed as the service parses it; its pattern count.
    fn parse(&self, body: &[u8]) -> Result<usize, String> {
        match otp2::parse_route(self.feed, body) {
            Ok(Some(route)) => Ok(route.patterns.len()),
            Ok(None) => Err("OTP knows no such route".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// SYNs on the wire, from tcpdump's output
// ---------------------------------------------------------------------------------------

struct Wire {
    log: Option<(std::path::PathBuf, u16)>,
}

impl Wire {
    fn from_env() -> Wire {
        let log = env("REAL_OTP_SYN_LOG").map(std::path::PathBuf::from);
        let sentinel = env("REAL_OTP_SENTINEL_PORT").and_then(|p| p.parse().ok());
        Wire {
            log: log.zip(sentinel),
        }
    }

    /// SYNs per destination port so far. `None` without tcpdump.
    fn read(path: &std::path::Path) -> HashMap<u16, u64> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut counts = HashMap::new();
        for line in text.lines() {
            // `12:00:00.000000 IP 127.0.0.1.40000 > 127.0.0.1.19150: Flags [S], ...`
            let Some((_, to)) = line.split_once(" > ") else {
                continue;
            };
            let Some(port) = to
                .split_once(':')
                .and_then(|(addr, _)| addr.rsplit_once('.'))
                .and_then(|(_, port)| port.parse::<u16>().ok())
            else {
                continue;
            };
            *counts.entry(port).or_insert(0) += 1;
        }
        counts
    }

    /// All SYNs sent so far are in the log: one more SYN to the closed sentinel port, and
    /// wait until tcpdump has written it (packets are captured in order).
    async fn snapshot(&mut self) -> Option<HashMap<u16, u64>> {
        let (path, sentinel) = self.log.as_ref()?;
        let before = Self::read(path).get(sentinel).copied().unwrap_or(0);
        let start = Instant::now();
        let mut sent = start;
        let _ = tokio::net::TcpStream::connect(("127.0.0.1", *sentinel)).await;
        loop {
            let counts = Self::read(path);
            if counts.get(sentinel).copied().unwrap_or(0) > before {
                return Some(counts);
            }
            // tcpdump may have dropped it (it reports drops when it stops): once more.
            if sent.elapsed() > Duration::from_millis(500) {
                sent = Instant::now();
                let _ = tokio::net::TcpStream::connect(("127.0.0.1", *sentinel)).await;
            }
            if start.elapsed() > Duration::from_secs(5) {
                eprintln!("real_otp: tcpdump did not log the sentinel SYN within 5 s");
                self.log = None;
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn port_of(url: &str) -> u16 {
    Url::parse(url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .expect("a URL with a port")
}

fn syns_between(
    before: &Option<HashMap<u16, u64>>,
    after: &Option<HashMap<u16, u64>>,
    port: u16,
) -> Option<u64> {
    let (b, a) = (before.as_ref()?, after.as_ref()?);
    Some(a.get(&port).copied().unwrap_or(0) - b.get(&port).copied().unwrap_or(0))
}

fn opt(n: Option<u64>) -> String {
    n.map_or("n/a".into(), |n| n.to_string())
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// Latencies, sorted.
struct Lat(Vec<Duration>);

impl Lat {
    fn new(mut v: Vec<Duration>) -> Lat {
        v.sort();
        Lat(v)
    }
    fn mean(&self) -> Duration {
        self.0.iter().sum::<Duration>() / self.0.len() as u32
    }
    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn msf(secs: f64) -> String {
    format!("{:.2} ms", secs * 1e3)
}

// ---------------------------------------------------------------------------------------
// (a) pooled vs unpooled, OTP directly
// ---------------------------------------------------------------------------------------

async fn one(client: &OtpClient, url: &Url, q: &Query<'_>) -> Duration {
    let start = Instant::now();
    let patterns = client
        .call(Call::graphql(url.clone(), q.body), |r: &Response| {
            q.parse(&r.body)
        })
        .await
        .expect("a route query to OTP");
    let elapsed = start.elapsed();
    assert!(patterns > 0, "a route without patterns");
    elapsed
}

struct Round {
    lat: Lat,
    wall: Duration,
    client_conns: u64,
    sent: u64,
    wire: Option<u64>,
}

async fn round(
    client: &OtpClient,
    q: &Query<'_>,
    wire: &mut Wire,
    port: u16,
    concurrent: bool,
    n: usize,
) -> Round {
    let url = client.url("/otp/gtfs/v1");
    let before = client.report();
    let wire_before = wire.snapshot().await;
    let start = Instant::now();
    let lat: Vec<Duration> = if concurrent {
        futures::stream::iter(0..n)
            .map(|_| one(client, &url, q))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await
    } else {
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            lat.push(one(client, &url, q).await);
        }
        lat
    };
    let wall = start.elapsed();
    let wire_after = wire.snapshot().await;
    let after = client.report();
    Round {
        lat: Lat::new(lat),
        wall,
        client_conns: after.connections_opened - before.connections_opened,
        sent: after.requests_sent - before.requests_sent,
        wire: syns_between(&wire_before, &wire_after, port),
    }
}

fn pattern(concurrent: bool) -> &'static str {
    if concurrent {
        "1,000 × 50 in flight"
    } else {
        "1,000 sequential"
    }
}

async fn section_a(config: &Config, q: &Query<'_>, wire: &mut Wire) {
    let port = port_of(config.instances[0].url.as_str());
    // OTP is a JVM: its first thousands of requests are slower (JIT), on either client.
    let warm = OtpClient::with_pooling(config, &config.instances[0], true).expect("client");
    round(&warm, q, wire, port, true, REQUESTS).await;
    round(&warm, q, wire, port, false, WARM_UP).await;
    drop(warm);

    println!("### (a) Real OTP on loopback: pooled vs unpooled `OtpClient`\n");
    println!(
        "GraphQL `Route` (`otp2::route_request`) POSTed to `/otp/gtfs/v1`, answer parsed by \
         `otp2::parse_route`; latency per call (request, whole body, parse). Per pattern: a \
         warm-up round of {WARM_UP} for each client, then {ROUNDS} rounds of {REQUESTS} \
         alternating pooled and unpooled; the median round by mean is shown, its counts are of \
         that round only. \"SYNs on the wire\": tcpdump on `lo`, SYNs to OTP's port {port} during the round.\n"
    );
    println!(
        "| pattern | client | mean | p50 | p99 | req/s | connections: client counter / SYNs on the wire | requests sent | spread of round means |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    let mut anomalies = Vec::new();
    for concurrent in [false, true] {
        let pooled =
            OtpClient::with_pooling(config, &config.instances[0], true).expect("pooled client");
        let unpooled =
            OtpClient::with_pooling(config, &config.instances[0], false).expect("unpooled");
        let clients = [&pooled, &unpooled];
        for c in clients {
            round(c, q, wire, port, concurrent, WARM_UP).await;
        }
        let mut rounds: Vec<Vec<Round>> = vec![Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (c, r) in clients.iter().zip(rounds.iter_mut()) {
                r.push(round(c, q, wire, port, concurrent, REQUESTS).await);
            }
        }
        let mut medians = Vec::new();
        for (name, mut rs) in ["pooled", "unpooled"].into_iter().zip(rounds) {
            rs.sort_by_key(|r| r.lat.mean());
            let (lo, hi) = (rs[0].lat.mean(), rs[rs.len() - 1].lat.mean());
            let mid = rs.swap_remove(rs.len() / 2);
            let spread = (hi.as_secs_f64() - lo.as_secs_f64()) / mid.lat.mean().as_secs_f64();
            println!(
                "| {} | {name} | {} | {} | {} | {:.0} | {} / {} | {} | {:.0} % |",
                pattern(concurrent),
                us(mid.lat.mean()),
                us(mid.lat.pct(50.0)),
                us(mid.lat.pct(99.0)),
                REQUESTS as f64 / mid.wall.as_secs_f64(),
                mid.client_conns,
                opt(mid.wire),
                mid.sent,
                100.0 * spread,
            );
            medians.push(mid);
        }
        for (name, c) in [("pooled", &pooled), ("unpooled", &unpooled)] {
            let r = c.report();
            if r.failures + r.retries + r.stale_retries > 0 {
                anomalies.push(format!(
                    "{} {name}: failures {}, retries {}, stale-connection retries {}",
                    pattern(concurrent),
                    r.failures,
                    r.retries,
                    r.stale_retries
                ));
            }
        }
        ratios.push((concurrent, medians));
    }
    println!("\n#### (a) pooled / unpooled, same run\n");
    println!(
        "| pattern | mean | p99 | req/s | per-call saving (unpooled − pooled mean) | connections opened pooled / unpooled |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (concurrent, m) in &ratios {
        let (p, u) = (&m[0], &m[1]);
        let f = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "| {} | {:.2}× | {:.2}× | {:.2}× | {} | {} / {} |",
            pattern(*concurrent),
            f(p.lat.mean(), u.lat.mean()),
            f(p.lat.pct(99.0), u.lat.pct(99.0)),
            f(u.wall, p.wall),
            us(u.lat.mean().saturating_sub(p.lat.mean())),
            p.client_conns,
            u.client_conns,
        );
    }
    if anomalies.is_empty() {
        println!("\nNo failures, retries or stale-connection retries in (a).\n");
    } else {
        println!("\nRetries in (a): {}.\n", anomalies.join("; "));
    }
}

// ---------------------------------------------------------------------------------------
// (b) TLS with added latency
// ---------------------------------------------------------------------------------------

/// The service's client settings (`http_client_builder`), trusting only `ca`; connections
/// counted into `conns`.
fn tls_client(
    config: &Config,
    ca: &reqwest::Certificate,
    pooled: bool,
    tls12: bool,
    conns: Arc<AtomicU64>,
) -> reqwest::Client {
    let mut builder = http_client_builder(config, conns, pooled)
        .timeout(Duration::from_secs(10))
        .tls_certs_only([ca.clone()]);
    if tls12 {
        builder = builder.tls_version_max(reqwest::tls::Version::TLS_1_2);
    }
    builder.build().expect("a TLS client")
}

#[derive(Clone, Copy, PartialEq)]
enum Conn {
    /// Pooled client, connection kept open: the service's case.
    Warm,
    /// Unpooled client: a new TCP (+TLS) connection per request; TLS session tickets of
    /// the same client may resume the session.
    Cold,
    /// A new client per request (built outside the timing): a full TLS handshake.
    ColdFresh,
}

struct Variant {
    key: String,
    /// `GET /ping`, answered 204 by nginx itself: the round trip without OTP.
    ping: bool,
    path: &'static str,
    conn: Conn,
    url: String,
    tls12: bool,
    client: Option<reqwest::Client>,
    conns: Arc<AtomicU64>,
    lat: Vec<Duration>,
    wire: Option<u64>,
}

impl Variant {
    fn client(&mut self, config: &Config, ca: &reqwest::Certificate) -> reqwest::Client {
        if self.conn == Conn::ColdFresh {
            return tls_client(config, ca, false, self.tls12, self.conns.clone());
        }
        self.client
            .get_or_insert_with(|| {
                tls_client(
                    config,
                    ca,
                    self.conn == Conn::Warm,
                    self.tls12,
                    self.conns.clone(),
                )
            })
            .clone()
    }

    async fn one(&mut self, config: &Config, ca: &reqwest::Certificate, q: &Query<'_>) -> Duration {
        let client = self.client(config, ca);
        let start = Instant::now();
        let request = if self.ping {
            client.get(self.url.replace("/otp/gtfs/v1", "/ping"))
        } else {
            client.post(&self.url).json(q.body)
        };
        let resp = request
            .header("x-bench", &self.key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", self.key));
        if self.ping {
            assert_eq!(resp.status(), 204, "{}", self.key);
            resp.bytes().await.expect("the body");
            return start.elapsed();
        }
        assert_eq!(resp.status(), 200, "{}", self.key);
        let body = resp.bytes().await.expect("the body");
        let patterns = q.parse(&body).expect("a route");
        let elapsed = start.elapsed();
        assert!(patterns > 0);
        elapsed
    }
}

async fn section_b(config: &Config, q: &Query<'_>, wire: &mut Wire, ca_path: &str) {
    let pem = std::fs::read(ca_path).expect("the CA certificate");
    let ca = reqwest::Certificate::from_pem(&pem).expect("a PEM certificate");
    let rtt_ms: f64 = env("REAL_OTP_ADDED_RTT_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let url = |var: &str| format!("{}/otp/gtfs/v1", env(var).unwrap_or_default());
    let paths = [
        (
            "REAL_OTP_TLS_RTT",
            "TLS 1.3 via toxiproxy + latency",
            false,
            &[Conn::Warm, Conn::Cold, Conn::ColdFresh][..],
        ),
        (
            "REAL_OTP_TLS_RTT",
            "TLS 1.2 via toxiproxy + latency",
            true,
            &[Conn::Warm, Conn::Cold, Conn::ColdFresh][..],
        ),
        (
            "REAL_OTP_PLAIN_RTT",
            "plain HTTP via toxiproxy + latency",
            false,
            &[Conn::Warm, Conn::Cold][..],
        ),
        (
            "REAL_OTP_TLS_PROXY",
            "TLS 1.3 via toxiproxy, no toxic",
            false,
            &[Conn::Warm, Conn::Cold][..],
        ),
        (
            "REAL_OTP_TLS_DIRECT",
            "TLS 1.3 to nginx directly",
            false,
            &[Conn::Warm, Conn::Cold][..],
        ),
        (
            "REAL_OTP_PLAIN_DIRECT",
            "plain HTTP to nginx directly",
            false,
            &[Conn::Warm, Conn::Cold][..],
        ),
    ];
    let mut variants = Vec::new();
    for (var, path) in [
        (
            "REAL_OTP_TLS_RTT",
            "`GET /ping` (nginx: 204), TLS 1.3 via toxiproxy + latency",
        ),
        (
            "REAL_OTP_TLS_PROXY",
            "`GET /ping` (nginx: 204), TLS 1.3 via toxiproxy, no toxic",
        ),
        (
            "REAL_OTP_TLS_DIRECT",
            "`GET /ping` (nginx: 204), TLS 1.3 to nginx directly",
        ),
    ] {
        if env(var).is_some() {
            variants.push(Variant {
                key: format!(
                    "{}-ping-warm",
                    var.trim_start_matches("REAL_OTP_").to_lowercase()
                ),
                ping: true,
                path,
                conn: Conn::Warm,
                url: url(var),
                tls12: false,
                client: None,
                conns: Arc::new(AtomicU64::new(0)),
                lat: Vec::new(),
                wire: Some(0),
            });
        }
    }
    for (var, path, tls12, conns) in paths {
        if env(var).is_none() {
            continue;
        }
        for &conn in conns {
            let c = match conn {
                Conn::Warm => "warm",
                Conn::Cold => "cold",
                Conn::ColdFresh => "fresh",
            };
            let key = format!(
                "{}-{}-{c}",
                var.trim_start_matches("REAL_OTP_").to_lowercase(),
                if tls12 { "tls12" } else { "d" }
            );
            variants.push(Variant {
                key,
                ping: false,
                path,
                conn,
                url: url(var),
                tls12,
                client: None,
                conns: Arc::new(AtomicU64::new(0)),
                lat: Vec::new(),
                wire: Some(0),
            });
        }
    }
    // Warm-up (and the warm clients' connections opened), not counted.
    for v in variants.iter_mut() {
        for _ in 0..10 {
            v.one(config, &ca, q).await;
        }
        v.conns.store(0, Ordering::Relaxed);
    }
    for _ in 0..BLOCKS {
        for v in variants.iter_mut() {
            let port = port_of(&v.url);
            let before = wire.snapshot().await;
            for _ in 0..BLOCK {
                let d = v.one(config, &ca, q).await;
                v.lat.push(d);
            }
            let after = wire.snapshot().await;
            v.wire = match (v.wire, syns_between(&before, &after, port)) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
    }

    println!("### (b) Route query over TLS with added round-trip time\n");
    println!(
        "Added latency: toxiproxy latency toxic {:.1} ms upstream + {:.1} ms downstream \
         (jitter 0), so {rtt_ms:.1} ms of round trip between the client and nginx. \
         {BLOCKS} blocks of {BLOCK} per variant, blocks of all variants alternating, after 10 \
         warm-up requests each; latency per request: request, whole body, parse. \
         \"SYNs on the wire\": tcpdump, SYNs to the port the client dials during the variant's blocks.\n",
        rtt_ms / 2.0,
        rtt_ms / 2.0
    );
    println!(
        "| path | connection | mean | p50 | p99 | connections: client counter / SYNs on the wire |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let mut stats: HashMap<String, Lat> = HashMap::new();
    for v in &mut variants {
        let lat = Lat::new(std::mem::take(&mut v.lat));
        println!(
            "| {} | {} | {} | {} | {} | {} / {} |",
            v.path,
            match v.conn {
                Conn::Warm => "warm (pooled)",
                Conn::Cold => "new connection per request (unpooled)",
                Conn::ColdFresh => "new connection, new client (full handshake)",
            },
            ms(lat.mean()),
            ms(lat.pct(50.0)),
            ms(lat.pct(99.0)),
            v.conns.load(Ordering::Relaxed),
            opt(v.wire),
        );
        stats.insert(v.key.clone(), lat);
    }
    let get = |k: &str| {
        stats
            .get(k)
            .map(|l| (l.mean().as_secs_f64(), l.pct(50.0).as_secs_f64()))
    };
    println!("\n#### (b) derived, same run (means; p50 in brackets)\n");
    println!("| quantity | value |");
    println!("|---|---:|");
    let pair = |cold: &str, warm: &str, label: &str| {
        if let (Some(c), Some(w)) = (get(cold), get(warm)) {
            println!(
                "| {label}: cold / warm | {:.2}× ({:.2}×) |",
                c.0 / w.0,
                c.1 / w.1
            );
            println!(
                "| {label}: overhead per request, cold − warm | {} ({}) |",
                msf(c.0 - w.0),
                msf(c.1 - w.1)
            );
        }
    };
    pair(
        "tls_rtt-d-cold",
        "tls_rtt-d-warm",
        "TLS 1.3 + RTT, unpooled",
    );
    pair(
        "tls_rtt-d-fresh",
        "tls_rtt-d-warm",
        "TLS 1.3 + RTT, new client",
    );
    pair(
        "tls_rtt-tls12-cold",
        "tls_rtt-tls12-warm",
        "TLS 1.2 + RTT, unpooled",
    );
    pair(
        "tls_rtt-tls12-fresh",
        "tls_rtt-tls12-warm",
        "TLS 1.2 + RTT, new client",
    );
    pair(
        "plain_rtt-d-cold",
        "plain_rtt-d-warm",
        "plain HTTP + RTT, unpooled",
    );
    pair(
        "tls_proxy-d-cold",
        "tls_proxy-d-warm",
        "TLS 1.3 via toxiproxy, no toxic, unpooled",
    );
    pair(
        "tls_direct-d-cold",
        "tls_direct-d-warm",
        "TLS 1.3 direct, unpooled",
    );
    pair(
        "plain_direct-d-cold",
        "plain_direct-d-warm",
        "plain direct, unpooled",
    );
    if let (Some(w), Some(p), Some(d)) = (
        get("tls_rtt-d-warm"),
        get("tls_proxy-d-warm"),
        get("tls_direct-d-warm"),
    ) {
        println!("| added RTT set on toxiproxy | {rtt_ms:.2} ms |");
        if let (Some(pr), Some(pd)) = (get("tls_rtt-ping-warm"), get("tls_direct-ping-warm")) {
            println!(
                "| RTT as the client sees it: ping via toxiproxy + latency − ping direct | {} ({}) |",
                msf(pr.0 - pd.0),
                msf(pr.1 - pd.1)
            );
            println!(
                "| that RTT + warm direct to nginx (\"one round trip plus the server's time\") | {} ({}) |",
                msf(pr.0 - pd.0 + d.0),
                msf(pr.1 - pd.1 + d.1)
            );
            println!(
                "| warm over TLS + RTT / (that RTT + warm direct) | {:.2}× ({:.2}×) |",
                w.0 / (pr.0 - pd.0 + d.0),
                w.1 / (pr.1 - pd.1 + d.1)
            );
        }
        println!("| warm over TLS + RTT | {} ({}) |", msf(w.0), msf(w.1));
        println!(
            "| warm − warm via toxiproxy without toxic (the RTT as measured) | {} ({}) |",
            msf(w.0 - p.0),
            msf(w.1 - p.1)
        );
        println!(
            "| warm direct to nginx (the server's time: nginx + OTP + client, loopback) | {} ({}) |",
            msf(d.0),
            msf(d.1)
        );
        println!(
            "| added RTT + server's time (what \"one round trip plus the server\" predicts) | {} ({}) |",
            msf(rtt_ms / 1e3 + d.0),
            msf(rtt_ms / 1e3 + d.1)
        );
        println!(
            "| warm / (added RTT + server's time) | {:.2}× ({:.2}×) |",
            w.0 / (rtt_ms / 1e3 + d.0),
            w.1 / (rtt_ms / 1e3 + d.1)
        );
    }
    println!();
}
