//! The HTTP client towards one OTP instance: a tuned reqwest client plus everything that
//! makes calls to a remote server safe, in the order a call meets it:
//!
//! 1. the instance's circuit breaker ([`super::breaker`]): while open, calls fail at once;
//! 2. for crawls, `rate_limit_delay` between requests to the instance;
//! 3. a concurrency cap of `connection_limit` requests in flight;
//! 4. the request itself, under `http_request_timeout` for the whole try (connect, answer
//!    and body, so a slow body or a hang is a timeout the breaker sees);
//! 5. the verdict: 5xx, timeouts, broken connections and bodies the caller's parser rejects
//!    are failures; 4xx are neutral (neither failure nor success); the rest success;
//!    a body the parser rejects is a failure but is not retried (it is deterministic);
//! 6. retries, for idempotent requests only: a try that met a pooled connection the server
//!    had already closed is retried once at once (the keep-alive race users must not see;
//!    it costs no retry budget while the instance answers, since only a reused connection
//!    can be stale; after a failure it costs budget like the others); other failures up to `retry_attempts` times
//!    with jittered exponential backoff from `retry_delay`, or after the server's
//!    `Retry-After` on 429/503; never while the breaker is open; and only while the retry
//!    budget lasts (each call earns 0.1 retry, spendable for 10 s, so with the instance
//!    down tries stay under 1.1 per call, and a healthy hour banks nothing for an outage).
//!
//! Each instance has its own reqwest client (same settings for all: TCP_NODELAY, a
//! keep-alive pool of `connection_limit` idle connections kept `http_pool_idle_timeout`,
//! TCP keepalive, connect timeout, HTTP/1.1 only as OTP serves no HTTP/2), so its pool and
//! its counters are its own. A connector layer counts every TCP connection opened; with the
//! count of requests sent that gives the reuse ratio shown in `/memory-stats`, `/metrics`
//! and `GET /instances`.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use url::Url;

use super::breaker::{Breaker, BreakerState, Outcome};
use crate::config::{Config, Instance};
use crate::feed::spool::{Spool, SpoolWriter};

/// Longest `Retry-After` honoured; a server asking for more gets no retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Largest JSON answer accepted from an OTP API (a zip has `max_feed_bytes`).
pub const MAX_API_BYTES: u64 = 256 * 1024 * 1024;

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum OtpError {
    #[error("circuit breaker open: instance {0} failed repeatedly, calls are refused for now")]
    BreakerOpen(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before an answer: {0}")]
    Closed(String),
    #[error("answer broken off: {0}")]
    Body(String),
    #[error("upstream answered HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("answer larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Malformed(String),
    #[error("request failed: {0}")]
    Other(String),
}

impl OtpError {
    fn retryable(&self) -> bool {
        match self {
            OtpError::Status { status, .. } => *status >= 500 || *status == 429,
            // A 200 the parser rejects fails the same way on every try: it counts for the
            // breaker but asking again at once only makes the caller wait.
            OtpError::BreakerOpen(_)
            | OtpError::TooLarge { .. }
            | OtpError::Malformed(_)
            | OtpError::Other(_) => false,
            _ => true,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            OtpError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An answer, body read in full: in `body`, or in `spooled` when the call asked for it
/// ([`Call::spool`]; `body` is then empty).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub spooled: Option<Spool>,
}

/// Progress of a body download: bytes so far, and the announced total if any.
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Send + Sync);

/// One request to make.
pub struct Call<'a> {
    pub method: Method,
    pub url: Url,
    pub json: Option<&'a serde_json::Value>,
    pub headers: HeaderMap,
    /// Part of a crawl: spaced by `rate_limit_delay`.
    pub crawl: bool,
    /// GET, HEAD and GraphQL queries are; mutations would not be.
    pub idempotent: bool,
    pub max_bytes: u64,
    pub progress: Option<Progress<'a>>,
    /// Write the body to a [`Spool`] (a temporary file once large: a feed zip) rather than
    /// to memory.
    pub spool: bool,
}

impl<'a> Call<'a> {
    pub fn get(url: Url) -> Self {
        Self {
            method: Method::GET,
            url,
            json: None,
            headers: HeaderMap::new(),
            crawl: false,
            idempotent: true,
            max_bytes: MAX_API_BYTES,
            progress: None,
            spool: false,
        }
    }
    /// A GraphQL query: POST, but idempotent.
    pub fn graphql(url: Url, body: &'a serde_json::Value) -> Self {
        Self {
            method: Method::POST,
            json: Some(body),
            ..Self::get(url)
        }
    }
    pub fn crawl(mut self) -> Self {
        self.crawl = true;
        self
    }
}

/// Counters of one instance's client. All monotonic.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// TCP connections opened, counted by the connector layer (which holds the other `Arc`).
    pub connections_opened: Arc<AtomicU64>,
    /// Tries sent on the network.
    pub requests_sent: AtomicU64,
    /// Calls made by the service (each may make several tries).
    pub calls: AtomicU64,
    pub retries: AtomicU64,
    /// Immediate retries after a pooled connection turned out closed.
    pub stale_retries: AtomicU64,
    pub failures: AtomicU64,
    /// Calls refused by the open breaker, with no socket work.
    pub breaker_rejections: AtomicU64,
    /// Retries not made because the retry budget was spent.
    pub budget_exhausted: AtomicU64,
    pub in_flight: AtomicU64,
}

/// The HTTP client towards an OTP instance: what operators see of it (`GET /instances`,
/// `/memory-stats`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = HttpClientReport)]
pub struct ClientReport {
    /// TCP connections opened since start-up.
    pub connections_opened: u64,
    /// HTTP requests sent (tries, retries included).
    pub requests_sent: u64,
    /// Share of requests that rode an already open connection: 1 - opened / sent.
    #[schema(minimum = 0, maximum = 1)]
    pub reuse_ratio: f64,
    /// Calls made by the service (each may be several tries).
    pub calls: u64,
    pub retries: u64,
    /// Immediate retries after a pooled connection turned out closed by the server.
    pub stale_retries: u64,
    pub failures: u64,
    pub in_flight: u64,
    pub breaker: BreakerReport,
}

/// The instance's circuit breaker.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BreakerReport {
    pub state: BreakerState,
    /// Times it opened.
    pub opened: u64,
    /// Calls refused while open.
    pub rejected: u64,
    /// Times it went half-open (probing).
    pub half_opened: u64,
}

/// The retry budget: each call earns 0.1 retry, a retry spends one, and what was earned
/// expires after [`RetryBudget::WINDOW`] (tower's windowed `TpsBudget`), so a long healthy
/// spell does not bank retries for the start of an outage. One retry is there from the
/// start (it expires like the others).
struct RetryBudget(TpsBudget);

impl RetryBudget {
    /// How long an earned retry stays spendable.
    const WINDOW: Duration = Duration::from_secs(10);
    /// Retries earned per call.
    const PER_CALL: f32 = 0.1;

    fn new() -> Self {
        let budget = TpsBudget::new(Self::WINDOW, 0, Self::PER_CALL);
        for _ in 0..(1.0 / Self::PER_CALL) as u32 {
            budget.deposit();
        }
        Self(budget)
    }
    fn earn(&self) {
        self.0.deposit();
    }
    fn spend(&self) -> bool {
        self.0.withdraw()
    }
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

tokio::task_local! {
    /// Set by the connector when it opens a connection while a try runs in this task:
    /// hyper connects inside the task that sends the request (a connect that finishes
    /// after the request has taken a pooled connection instead finishes in a task of its
    /// own, where this is not set). A try that opened nothing rode a pooled connection.
    static OPENED_CONNECTION: Cell<bool>;
}

/// The tuned reqwest client of DESIGN.md, counting the connections it opens into
/// `connections`. `pooled = false` gives the same client without keep-alive reuse (the
/// benchmark's baseline).
pub fn build_http_client(
    config: &Config,
    connections: Arc<AtomicU64>,
    pooled: bool,
) -> reqwest::Result<reqwest::Client> {
    http_client_builder(config, connections, pooled).build()
}

/// [`build_http_client`]'s settings, for a caller that adds its own (the TLS benchmark
/// adds the certificate it trusts).
pub fn http_client_builder(
    config: &Config,
    connections: Arc<AtomicU64>,
    pooled: bool,
) -> reqwest::ClientBuilder {
    let count = tower::util::MapResponseLayer::new(move |conn| {
        connections.fetch_add(1, Ordering::Relaxed);
        let _ = OPENED_CONNECTION.try_with(|opened| opened.set(true));
        conn
    });
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(if pooled { config.connection_limit } else { 0 })
        .pool_idle_timeout(config.http_pool_idle_timeout)
        .tcp_keepalive(config.http_tcp_keepalive)
        .connect_timeout(config.http_connect_timeout)
        .user_agent(concat!("gtfs-fetch/", env!("CARGO_PKG_VERSION")))
        .connector_layer(count)
}

/// The client of one OTP instance.
pub struct OtpClient {
    name: String,
    base: Url,
    http: reqwest::Client,
    headers: HeaderMap,
    breaker: Breaker,
    limiter: Semaphore,
    budget: RetryBudget,
    /// Whether the last try with a verdict failed (reset by a success): a stale-connection
    /// retry is free only while the instance answers.
    failing: AtomicBool,
    next_crawl: Mutex<Option<Instant>>,
    stats: Arc<ClientStats>,
    retry_attempts: u32,
    retry_delay: Duration,
    request_timeout: Duration,
    rate_limit_delay: Duration,
}

impl std::fmt::Debug for OtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpClient")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl OtpClient {
    pub fn new(config: &Config, instance: &Instance) -> anyhow::Result<Self> {
        Self::with_pooling(config, instance, true)
    }

    pub fn with_pooling(
        config: &Config,
        instance: &Instance,
        pooled: bool,
    ) -> anyhow::Result<Self> {
        let stats = Arc::new(ClientStats::default());
        let http = build_http_client(config, stats.connections_opened.clone(), pooled)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &instance.headers {
            // Validated by the configuration already.
            let name = HeaderName::from_bytes(name.as_bytes())?;
            let mut value = HeaderValue::from_str(value.expose())?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self {
            name: instance.name.clone(),
            base: instance.url.clone(),
            http,
            headers,
            breaker: Breaker::new(config.breaker_failures, config.breaker_open),
            limiter: Semaphore::new(config.connection_limit),
            budget: RetryBudget::new(),
            failing: AtomicBool::new(false),
            next_crawl: Mutex::new(None),
            stats,
            retry_attempts: config.retry_attempts,
            retry_delay: config.retry_delay,
            request_timeout: config.http_request_timeout,
            rate_limit_delay: config.rate_limit_delay,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `path` (which may carry a query) under the instance URL, keeping any path prefix.
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let (path, query) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        url.set_path(&format!(
            "{}{}",
            self.base.path().trim_end_matches('/'),
            path
        ));
        url.set_query(query);
        url
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn report(&self) -> ClientReport {
        let s = &self.stats;
        let opened = s.connections_opened.load(Ordering::Relaxed);
        let sent = s.requests_sent.load(Ordering::Relaxed);
        let b = self.breaker.stats();
        ClientReport {
            connections_opened: opened,
            requests_sent: sent,
            reuse_ratio: if sent == 0 {
                0.0
            } else {
                1.0 - (opened.min(sent) as f64 / sent as f64)
            },
            calls: s.calls.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            stale_retries: s.stale_retries.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            breaker: BreakerReport {
                state: self.breaker.state(),
                opened: b.opened.load(Ordering::Relaxed),
                rejected: b.rejected.load(Ordering::Relaxed),
                half_opened: b.half_opened.load(Ordering::Relaxed),
            },
        }
    }

    /// Makes the call and hands each answer to `parse`, which turns it into a value or
    /// rejects it as malformed (a failure for the breaker, not retried). 4xx answers go to `parse` too
    /// (a 404 may well be an answer), without counting for or against the instance.
    pub async fn call<T>(
        &self,
        call: Call<'_>,
        mut parse: impl FnMut(&Response) -> Result<T, String>,
    ) -> Result<T, OtpError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.budget.earn();
        let mut tries = Tries::default();
        loop {
            let Ok(permit) = self.breaker.try_acquire() else {
                self.stats
                    .breaker_rejections
                    .fetch_add(1, Ordering::Relaxed);
                return Err(OtpError::BreakerOpen(self.name.clone()));
            };
            let (answer, reused) = self.try_once(&call).await;
            let stale =
                reused && !tries.stale_retried && matches!(answer, Err(OtpError::Closed(_)));
            let (outcome, result) = verdict(answer, stale, &mut parse);
            self.breaker.record(permit, outcome);
            match outcome {
                Outcome::Success => self.failing.store(false, Ordering::Relaxed),
                Outcome::Failure => {
                    self.failing.store(true, Ordering::Relaxed);
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Neutral => {}
            }
            let error = match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            match self.next_try(&call, &error, stale, &mut tries) {
                NextTry::Stop => return Err(error),
                NextTry::Now => {}
                NextTry::After(delay) => {
                    tracing::debug!(instance = %self.name, retry = tries.retries, delay_ms = delay.as_millis() as u64, "retrying: {error}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Whether and when to try again after `error`, spending from the budget when so:
    /// never for a call that is not idempotent or an error that would repeat; at once, and
    /// free while the instance answers, for a pooled connection the server had closed
    /// (`stale`); otherwise up to `retry_attempts` times after the backoff or the server's
    /// `Retry-After`, while the breaker is not open and the budget lasts.
    fn next_try(
        &self,
        call: &Call<'_>,
        error: &OtpError,
        stale: bool,
        tries: &mut Tries,
    ) -> NextTry {
        if !call.idempotent || !error.retryable() {
            return NextTry::Stop;
        }
        if stale {
            // Once the instance fails, "pooled" connections may be ones a lost connect
            // race left in the pool unused, so the retry costs budget like any other.
            if self.failing.load(Ordering::Relaxed) && !self.spend_budget() {
                return NextTry::Stop;
            }
            tries.stale_retried = true;
            self.stats.stale_retries.fetch_add(1, Ordering::Relaxed);
            return NextTry::Now;
        }
        if tries.retries >= self.retry_attempts {
            return NextTry::Stop;
        }
        let delay = match error.retry_after() {
            Some(after) if after > MAX_RETRY_AFTER => return NextTry::Stop,
            Some(after) => after,
            None => backoff(self.retry_delay, tries.retries + 1),
        };
        if self.breaker.state() == BreakerState::Open || !self.spend_budget() {
            return NextTry::Stop;
        }
        tries.retries += 1;
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        NextTry::After(delay)
    }

    /// Takes one retry from the budget; counts the refusal when it is spent.
    fn spend_budget(&self) -> bool {
        let spent = self.budget.spend();
        if !spent {
            self.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
        }
        spent
    }

    /// One try: spacing, concurrency cap, the request and its whole body under the timeout.
    /// Also tells whether the try rode a connection opened before it (a pooled one).
    async fn try_once(&self, call: &Call<'_>) -> (Result<Response, OtpError>, bool) {
        if call.crawl {
            self.space_crawl().await;
        }
        let _slot = match self.limiter.acquire().await {
            Ok(slot) => slot,
            Err(e) => return (Err(OtpError::Other(e.to_string())), false),
        };
        self.stats.requests_sent.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let (result, opened) = OPENED_CONNECTION
            .scope(Cell::new(false), async {
                let result = tokio::time::timeout(self.request_timeout, self.send(call)).await;
                (result, OPENED_CONNECTION.with(Cell::get))
            })
            .await;
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        (
            result.unwrap_or(Err(OtpError::Timeout(self.request_timeout))),
            !opened,
        )
    }

    async fn send(&self, call: &Call<'_>) -> Result<Response, OtpError> {
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .headers(self.headers.clone())
            .headers(call.headers.clone());
        if let Some(json) = call.json {
            request = request.json(json);
        }
        let mut resp = request.send().await.map_err(classify_send_error)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let total = resp.content_length();
        if total.is_some_and(|t| t > call.max_bytes) {
            return Err(OtpError::TooLarge {
                limit: call.max_bytes,
            });
        }
        let mut body = Body::new(call.spool, total);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| OtpError::Body(error_chain(&e)))?
        {
            if body.len() + chunk.len() as u64 > call.max_bytes {
                return Err(OtpError::TooLarge {
                    limit: call.max_bytes,
                });
            }
            body.push(&chunk)?;
            if let Some(progress) = call.progress {
                progress(body.len(), total);
            }
        }
        let (body, spooled) = body.finish()?;
        Ok(Response {
            status,
            headers,
            body,
            spooled,
        })
    }

    async fn space_crawl(&self) {
        let mut next = self.next_crawl.lock().await;
        let now = Instant::now();
        let at = next.map_or(now, |t| t.max(now));
        tokio::time::sleep_until(at).await;
        *next = Some(at + self.rate_limit_delay);
    }
}

/// A body being read: in memory, or spooled ([`Call::spool`]).
enum Body {
    Memory(BytesMut),
    Spool(SpoolWriter),
}

impl Body {
    fn new(spool: bool, total: Option<u64>) -> Self {
        if spool {
            Body::Spool(SpoolWriter::new())
        } else {
            Body::Memory(BytesMut::with_capacity(
                total.unwrap_or(0).min(8 << 20) as usize
            ))
        }
    }

    fn len(&self) -> u64 {
        match self {
            Body::Memory(bytes) => bytes.len() as u64,
            Body::Spool(spool) => spool.len(),
        }
    }

    /// Appends a chunk. A spool writes to its temporary file (buffered, into the page
    /// cache) past its first megabytes.
    fn push(&mut self, chunk: &[u8]) -> Result<(), OtpError> {
        match self {
            Body::Memory(bytes) => bytes.extend_from_slice(chunk),
            Body::Spool(spool) => spool.write(chunk).map_err(spool_error)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<(Bytes, Option<Spool>), OtpError> {
        match self {
            Body::Memory(bytes) => Ok((bytes.freeze(), None)),
            Body::Spool(spool) => Ok((Bytes::new(), Some(spool.finish().map_err(spool_error)?))),
        }
    }
}

fn spool_error(e: std::io::Error) -> OtpError {
    OtpError::Other(format!("cannot spool the body to a temporary file: {e}"))
}

/// What one call has spent on retries so far.
#[derive(Default)]
struct Tries {
    /// Retries after failures (each after a delay).
    retries: u32,
    /// Whether the one immediate retry after a stale pooled connection was made.
    stale_retried: bool,
}

/// After a failed try: give up, try again at once, or after a delay.
enum NextTry {
    Stop,
    Now,
    After(Duration),
}

/// What a try's answer means: for the breaker (success, failure, or neither) and for the
/// caller (the parsed value or the error). 5xx and broken exchanges are failures; 429 and
/// other 4xx are neutral (a 4xx goes to `parse`, as a 404 may be an answer); a 200 the
/// parser rejects is a failure; a stale pooled connection is not the instance's fault.
fn verdict<T>(
    answer: Result<Response, OtpError>,
    stale: bool,
    parse: &mut impl FnMut(&Response) -> Result<T, String>,
) -> (Outcome, Result<T, OtpError>) {
    match answer {
        Ok(resp) if resp.status.is_server_error() => (
            Outcome::Failure,
            Err(OtpError::Status {
                status: resp.status.as_u16(),
                retry_after: retry_after(&resp.headers),
            }),
        ),
        Ok(resp) if resp.status == StatusCode::TOO_MANY_REQUESTS => (
            Outcome::Neutral,
            Err(OtpError::Status {
                status: 429,
                retry_after: retry_after(&resp.headers),
            }),
        ),
        Ok(resp) if resp.status.is_client_error() => {
            (Outcome::Neutral, parse(&resp).map_err(OtpError::Malformed))
        }
        Ok(resp) => match parse(&resp) {
            Ok(value) => (Outcome::Success, Ok(value)),
            Err(why) => (Outcome::Failure, Err(OtpError::Malformed(why))),
        },
        Err(e) if stale => (Outcome::Neutral, Err(e)),
        Err(e) => (Outcome::Failure, Err(e)),
    }
}

/// `retry_delay * 2^(n-1)`, times a random factor in [0.5, 1.5).
fn backoff(base: Duration, n: u32) -> Duration {
    let exp = base.saturating_mul(1 << (n - 1).min(16));
    exp.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// `Retry-After` in seconds (the HTTP-date form is rare from OTP and ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// Sorts a failed send into connect errors, stale connections and the rest.
fn classify_send_error(e: reqwest::Error) -> OtpError {
    let text = error_chain(&e);
    if e.is_connect() {
        return OtpError::Connect(text);
    }
    if e.is_timeout() {
        return OtpError::Timeout(Duration::ZERO);
    }
    if is_closed_connection(&e) {
        return OtpError::Closed(text);
    }
    OtpError::Other(text)
}

/// The server closed the connection before answering: hyper's "connection closed before
/// message completed", or a reset or broken pipe while writing the request.
fn is_closed_connection(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled())
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        let s = err.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_retry_budget_earns_a_tenth_per_call_and_forgets_after_its_window() {
        let budget = RetryBudget::new();
        // One retry from the start.
        assert!(budget.spend());
        assert!(!budget.spend());
        // Ten calls earn one retry.
        for _ in 0..10 {
            budget.earn();
        }
        assert!(budget.spend());
        assert!(!budget.spend());

        // A long healthy spell: a thousand calls earn a hundred retries...
        for _ in 0..1000 {
            budget.earn();
        }
        // ...spendable while they are recent...
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(budget.spend());
        // ...but not banked for an outage that starts after the window.
        tokio::time::advance(RetryBudget::WINDOW + Duration::from_secs(1)).await;
        assert!(!budget.spend(), "what a healthy spell earned has expired");
        for _ in 0..10 {
            budget.earn();
        }
        assert!(budget.spend(), "new calls earn again");
    }
}
