//! A test OpenTripPlanner: a real HTTP/1.1 server on a loopback port that serves GTFS
//! fixture feeds the way OTP does, counts what it sees, and misbehaves on request.
//!
//! ```ignore
//! let sim = OtpSim::start(&["caltrain", "bart"]).await;
//! // OTP 2:  POST {sim.url()}/otp/gtfs/v1 (also /otp/routers/default/index/graphql)
//! // OTP 1:  GET  {sim.url()}/otp/routers/default/index/routes, /routes/{id}, /patterns/{id}, ...
//! // zips:   GET  {sim.url()}/gtfs/caltrain.zip   (ETag, Last-Modified, 304)
//! assert_eq!(sim.connections(), 0);
//! sim.set_fault(Fault::Status(503));              // every following request until cleared
//! sim.clear_fault();
//! sim.set_idle_close(Some(Duration::from_millis(200)));
//! sim.stop_listening().await;                     // connects are refused
//! sim.resume_listening().await;                   // same port again
//! ```
//!
//! It is deliberately independent of the service's own code: the feeds are read with
//! gtfs-structures (`RawGtfs`, so the file order is kept) plus the csv crate where
//! gtfs-structures cannot be used as is (sample-feed's short `stop_times.txt` rows, raw
//! colour strings), and OTP's logic (pattern grouping, pattern ids and names, modes) is
//! re-implemented here from OTP's source. Comparing the service with it compares two
//! implementations.
//!
//! What is simulated, and from where in OTP:
//!
//! * OTP 2 GTFS GraphQL (`apis/gtfs`, dev-2.x): every query is parsed and validated against
//!   `shared/fixtures/otp/2.x/schema/schema.graphqls` with apollo-compiler and executed by
//!   apollo-compiler's executor, so only the selected fields come back, under their aliases,
//!   with fragments, variables and `__typename`. An invalid query gets HTTP 200 and
//!   `{"errors":[...]}` without `data`, as graphql-java answers. A body without `query` gets
//!   400 text/plain "No query found in body", as `GtfsGraphQLAPI` does, with `Connection:
//!   close`. Responses larger than 8 KiB are sent chunked (Jersey buffers 8 KiB before it
//!   gives up on Content-Length). Checked against real OTP 2.5.0 and 2.9.0: error texts are
//!   graphql-java's, answers carry `Vary` and CORS headers and no `Date`.
//!   Fields the simulator does not model answer `null`, or an error when not nullable.
//! * OTP 1 REST index (`index/IndexAPI.java`, dev-1.x; checked against a real OTP 1.4.0):
//!   Jackson with NON_NULL inclusion (null fields are left out), ids `feed:id`, 404 body
//!   `FOUR ZERO FOUR` (unknown route, pattern or feed), 500 text/plain with
//!   `Connection: close` for an id without `:` (OTP's `IllegalArgumentException`), an
//!   unknown path (`NotFoundException`) or method (`NotAllowedException`), Grizzly's HTML
//!   500 page for an unknown router; `Access-Control-Allow-Credentials: false`. Only
//!   routes with patterns are known; a route with a colour and no text colour gets one;
//!   a frequency-based trip is in a pattern's trips once per frequencies.txt row.
//! * Pattern ids and names (`GenerateTripPatternsOperation`, `TripPatternNamer`; 1.x
//!   `TripPattern.generateUniqueIds/Names`): trips with the same route, direction, stops and
//!   pick-up/drop-off types share a pattern, `feed:route:dir:NN` numbered in trips.txt order
//!   for OTP 1 and, for OTP 2, in the order OTP 2 meets the trips (a Java `HashMap` of
//!   every trip by id: see [`java_iteration`]), trips without a known service or with fewer
//!   than 2 stops are dropped. A pattern's
//!   trips are sorted by departure from the first stop and its headsign is the first
//!   trip's, as OTP's timetable does.
//! * Keep-alive like OTP's Grizzly server (OTP does not change its defaults): an idle
//!   connection is closed silently after 30 s, and the 256th response on a connection says
//!   `Connection: close` (the 257th on OTP 1's REST paths, as OTP 1.4.0 does with the
//!   default; OTP 1 also closes after a 500). Both can be changed or switched off per
//!   simulator.
//!
//! OTP 2's `routes` and a route's `patterns` come in the order of OTP's Java hash maps,
//! reproduced here (checked against 2.5.0 and 2.9.0, which differ for patterns).
//! Not simulated: that order for OTP 1's lists (`/routes`: routes.txt order, patterns by
//! code), and for OTP 2 the order of a pattern's trips with the same departure (2.9: by
//! departure, ties here in trips.txt order; 2.5 does not sort them at all), gzip (OTP 2
//! compresses a chunked answer, over 8 KiB, when asked to) and OTP 2's chunk sizes
//! (16 KiB on 2.5; about 16,000 bytes on 2.9; 8 KiB here). `serviceDates` filters, stop
//! times, geometry, alerts and real-time data are left out.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::io::{Cursor, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use apollo_compiler::resolvers::{Execution, FieldError, ObjectValue, ResolveInfo, ResolvedValue};
use apollo_compiler::response::{JsonMap, JsonValue};
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Schema};
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------

/// A misbehaviour applied to every request from `set_fault` until `clear_fault`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally, after this long.
    Delay(Duration),
    /// Answer with this status and a short text/plain body.
    Status(u16),
    /// Answer with this status and `Retry-After: secs`.
    StatusRetryAfter(u16, u32),
    /// 200 with the endpoint's content type and a body that is neither JSON nor a zip.
    Garbage,
    /// The real headers with the full Content-Length, half the body, then the connection closes.
    Truncated,
    /// Read the request, then close the connection without a byte of answer.
    CloseWithoutAnswer,
    /// Read the request and never answer (the connection stays open).
    Hang,
    /// The real answer, its body sent `chunk` bytes at a time, `every` apart.
    SlowBody { chunk: usize, every: Duration },
}

/// Where the fixture feeds are: `shared/fixtures/gtfs/{name}.zip`, next to this repository.
pub const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/gtfs");

/// The bytes of a fixture feed, e.g. `fixture_zip("caltrain")`.
pub fn fixture_zip(name: &str) -> Bytes {
    static CACHE: LazyLock<Mutex<HashMap<String, Bytes>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap();
    cache
        .entry(name.to_owned())
        .or_insert_with(|| {
            let path = format!("{FIXTURE_DIR}/{name}.zip");
            Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}")))
        })
        .clone()
}

/// The simulator. Clones share one server; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct OtpSim {
    inner: Arc<Inner>,
    _lifetime: Arc<Lifetime>,
}

impl OtpSim {
    /// Loads the named fixture feeds (feed ids are the names) and starts listening on
    /// 127.0.0.1 on a free port. Each feed's zip is served at `/gtfs/{name}.zip`.
    pub async fn start(feeds: &[&str]) -> OtpSim {
        let names: Vec<String> = feeds.iter().map(|s| s.to_string()).collect();
        let loaded = tokio::task::spawn_blocking(move || {
            let _ = schema(); // parse it once, off the async threads
            names
                .iter()
                .map(|n| (fixture_feed(n), fixture_zip(n)))
                .collect::<Vec<_>>()
        })
        .await
        .expect("load the fixture feeds");
        let mut data = Data::default();
        for (feed, zip) in loaded {
            data.zips.insert(feed.id.clone(), ZipEntry::new(zip, None));
            data.feeds.push(feed);
        }
        let listener = bind("127.0.0.1:0".parse().unwrap()).expect("bind the OTP simulator");
        let addr = listener.local_addr().unwrap();
        let (settings, _) = watch::channel(Settings::default());
        let inner = Arc::new(Inner {
            addr,
            settings,
            data: RwLock::new(data),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            by_key: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            accept: Mutex::new(None),
        });
        inner.spawn_accept(listener);
        OtpSim {
            _lifetime: Arc::new(Lifetime(inner.clone())),
            inner,
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// HTTP requests received so far (whatever was answered, faults included).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Requests by GraphQL operation name (`"Routes"`; for a query without a name in the
    /// body or the document, `"<anonymous>"`) or by path (`"/gtfs/bart.zip"`, as sent,
    /// without the query string).
    pub fn requests_for(&self, key: &str) -> u64 {
        self.inner
            .by_key
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Sets every counter (connections, requests, by key) back to 0.
    pub fn reset_counts(&self) {
        self.inner.connections.store(0, Ordering::SeqCst);
        self.inner.requests.store(0, Ordering::SeqCst);
        self.inner.by_key.lock().unwrap().clear();
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.inner.live.lock().unwrap().len()
    }

    pub fn set_fault(&self, fault: Fault) {
        self.inner.settings.send_modify(|s| s.fault = Some(fault));
    }

    pub fn clear_fault(&self) {
        self.inner.settings.send_modify(|s| s.fault = None);
    }

    /// Replaces the bytes served at `/gtfs/{name}.zip` (any bytes: an oversized or corrupt
    /// zip too), with a new ETag and a Last-Modified at least a second after the previous
    /// one. The GraphQL and REST answers do not change: see [`OtpSim::set_feed`].
    pub fn set_zip(&self, name: &str, bytes: Vec<u8>) {
        let mut data = self.inner.data.write().unwrap();
        let prev = data.zips.get(name).map(|z| z.modified);
        data.zips
            .insert(name.to_owned(), ZipEntry::new(Bytes::from(bytes), prev));
    }

    /// A new version of feed `name` everywhere: parses `zip` (blocking; fine for test
    /// feeds), then serves it from the GraphQL and REST APIs and at `/gtfs/{name}.zip`.
    /// A feed id not seen before is added.
    pub fn set_feed(&self, name: &str, zip: Vec<u8>) -> Result<(), String> {
        let feed = Arc::new(load_feed(name, &zip)?);
        let mut data = self.inner.data.write().unwrap();
        match data.feeds.iter_mut().find(|f| f.id == name) {
            Some(slot) => *slot = feed,
            None => data.feeds.push(feed),
        }
        let prev = data.zips.get(name).map(|z| z.modified);
        data.zips
            .insert(name.to_owned(), ZipEntry::new(Bytes::from(zip), prev));
        Ok(())
    }

    /// The server closes a keep-alive connection that has been idle this long, silently
    /// (a FIN, no `Connection: close`), as OTP's HTTP server does after its idle timeout.
    /// Applies to open connections too. Default: [`OTP_IDLE_TIMEOUT`] (30 s) like OTP;
    /// `None`: never.
    pub fn set_idle_close(&self, after: Option<Duration>) {
        self.inner.settings.send_modify(|s| s.idle_close = after);
    }

    /// Like Grizzly's `KeepAlive.maxRequestsCount`: the n-th response on a connection carries
    /// `Connection: close` and the server closes the connection after it. Default:
    /// [`OTP_MAX_REQUESTS_PER_CONNECTION`] (256) like OTP; `None`: no limit.
    pub fn set_max_requests_per_connection(&self, n: Option<u32>) {
        self.inner.settings.send_modify(|s| s.max_requests = n);
    }

    /// Answers GraphQL like OTP 2.0 to 2.5, whose schema lacks `Route.sortOrder` (added in
    /// 2.6): a query selecting it gets a validation error naming the field.
    pub fn set_before_2_6(&self, on: bool) {
        self.inner.settings.send_modify(|s| s.before_2_6 = on);
    }

    /// Closes the listening socket (connects are refused) and every open connection.
    pub async fn stop_listening(&self) {
        let task = self.inner.accept.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.stop.send(());
            let _ = task.handle.await;
        }
        let conns: Vec<Arc<ConnCtl>> = self.inner.live.lock().unwrap().values().cloned().collect();
        for c in &conns {
            c.abort();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.inner.live.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Listens again on the same port.
    pub async fn resume_listening(&self) {
        if self.inner.accept.lock().unwrap().is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match bind(self.inner.addr) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind {} again: {e}", self.inner.addr),
            }
        };
        self.inner.spawn_accept(listener);
    }
}

// ---------------------------------------------------------------------------------------
// Server state, accept loop, connections
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Settings {
    fault: Option<Fault>,
    idle_close: Option<Duration>,
    max_requests: Option<u32>,
    /// Validate GraphQL against the schema of OTP before 2.6 (no `Route.sortOrder`).
    before_2_6: bool,
}

/// Grizzly's keep-alive defaults (`KeepAlive`, `Constants.KEEP_ALIVE_TIMEOUT_IN_SECONDS`
/// and `DEFAULT_MAX_KEEP_ALIVE`), which OTP 1 and 2 leave as they are.
pub const OTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const OTP_MAX_REQUESTS_PER_CONNECTION: u32 = 256;

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            fault: None,
            idle_close: Some(OTP_IDLE_TIMEOUT),
            max_requests: Some(OTP_MAX_REQUESTS_PER_CONNECTION),
            before_2_6: false,
        }
    }
}

#[derive(Default)]
struct Data {
    feeds: Vec<Arc<Feed>>,
    zips: HashMap<String, ZipEntry>,
}

struct ZipEntry {
    bytes: Bytes,
    etag: String,
    modified: jiff::Timestamp,
}

impl ZipEntry {
    fn new(bytes: Bytes, previous: Option<jiff::Timestamp>) -> ZipEntry {
        let etag = format!("\"{}\"", hex::encode(Sha256::digest(&bytes)));
        let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
        let modified = match previous {
            Some(p) if p >= now => p + jiff::SignedDuration::from_secs(1),
            _ => now,
        };
        ZipEntry {
            bytes,
            etag,
            modified,
        }
    }
}

struct AcceptTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

struct Inner {
    addr: SocketAddr,
    settings: watch::Sender<Settings>,
    data: RwLock<Data>,
    connections: AtomicU64,
    requests: AtomicU64,
    by_key: Mutex<HashMap<String, u64>>,
    live: Mutex<HashMap<u64, Arc<ConnCtl>>>,
    next_conn: AtomicU64,
    accept: Mutex<Option<AcceptTask>>,
}

/// Stops everything when the last `OtpSim` clone goes.
struct Lifetime(Arc<Inner>);

impl Drop for Lifetime {
    fn drop(&mut self) {
        if let Some(task) = self.0.accept.lock().unwrap().take() {
            task.handle.abort();
        }
        let conns: Vec<Arc<ConnCtl>> = self
            .0
            .live
            .lock()
            .unwrap()
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in conns {
            c.abort();
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Inner {
    fn spawn_accept(self: &Arc<Self>, listener: TcpListener) {
        let (stop, stop_rx) = oneshot::channel();
        let handle = tokio::spawn(accept_loop(self.clone(), listener, stop_rx));
        *self.accept.lock().unwrap() = Some(AcceptTask { stop, handle });
    }

    fn count(&self, key: &str) {
        *self
            .by_key
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_insert(0) += 1;
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    inner.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_nodelay(true);
                    let id = inner.next_conn.fetch_add(1, Ordering::SeqCst);
                    let ctl = Arc::new(ConnCtl::new(id));
                    inner.live.lock().unwrap().insert(id, ctl.clone());
                    let handle = tokio::spawn(serve_connection(inner.clone(), stream, ctl.clone()));
                    let _ = ctl.abort.set(handle.abort_handle());
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
    // The listener is dropped here: connects are refused from now on.
}

/// One accepted connection, as the accept loop, the connection task and the handlers see it.
struct ConnCtl {
    id: u64,
    /// Requests received on this connection.
    served: AtomicU64,
    /// Requests whose response has not been fully sent.
    active: AtomicUsize,
    /// When the connection last became idle (accepted, or a response finished).
    idle_since: Mutex<Instant>,
    /// Wakes the connection task to recompute its idle deadline.
    activity: Notify,
    /// Asks the connection task to drop the connection now.
    kill: Notify,
    abort: OnceLock<AbortHandle>,
}

impl ConnCtl {
    fn new(id: u64) -> ConnCtl {
        ConnCtl {
            id,
            served: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            activity: Notify::new(),
            kill: Notify::new(),
            abort: OnceLock::new(),
        }
    }

    fn abort(&self) {
        match self.abort.get() {
            Some(a) => a.abort(),
            None => self.kill.notify_one(),
        }
    }

    fn idle_deadline(&self, idle: Option<Duration>) -> Option<Instant> {
        let d = idle?;
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap() + d)
    }
}

/// Marks a request in progress from its arrival until its response body is dropped (sent,
/// or abandoned).
struct ActiveGuard(Arc<ConnCtl>);

impl ActiveGuard {
    fn new(ctl: Arc<ConnCtl>) -> ActiveGuard {
        ctl.active.fetch_add(1, Ordering::SeqCst);
        ctl.activity.notify_one();
        ActiveGuard(ctl)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap() = Instant::now();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.activity.notify_one();
    }
}

/// Removes the connection from the live registry however its task ends.
struct LiveGuard(Arc<Inner>, u64);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.lock().unwrap().remove(&self.1);
    }
}

async fn serve_connection(inner: Arc<Inner>, stream: TcpStream, ctl: Arc<ConnCtl>) {
    let _live = LiveGuard(inner.clone(), ctl.id);
    let mut settings = inner.settings.subscribe();
    let service = {
        let inner = inner.clone();
        let ctl = ctl.clone();
        hyper::service::service_fn(move |req| handle(inner.clone(), ctl.clone(), req))
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // OTP 2's Jersey answers have no Date; `handle` adds one to the others.
        .auto_date_header(false);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle = settings.borrow().idle_close;
        let deadline = if closing {
            None
        } else {
            ctl.idle_deadline(idle)
        };
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = ctl.kill.notified() => break,
            changed = settings.changed() => if changed.is_err() { break },
            _ = ctl.activity.notified() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                let idle = settings.borrow().idle_close;
                if ctl.idle_deadline(idle).is_some_and(|d| d <= Instant::now()) {
                    // Closes at once when hyper is between requests: a silent FIN.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// A response before faults are applied.
struct Prepared {
    status: StatusCode,
    content_type: &'static str,
    headers: Vec<(HeaderName, String)>,
    body: Bytes,
    /// Sent like Jersey does: chunked when larger than its 8 KiB buffer.
    jersey: bool,
    /// HEAD: headers only, Content-Length of the body that would have been sent.
    head: bool,
    /// `Connection: close`, and the connection closed (OTP 1 after a 500).
    close: bool,
}

impl Prepared {
    fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Prepared {
        Prepared {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
            jersey: false,
            head: false,
            close: false,
        }
    }

    fn text(status: StatusCode, body: impl Into<String>) -> Prepared {
        Prepared::new(status, "text/plain", body.into())
    }

    fn json(body: Vec<u8>) -> Prepared {
        let mut p = Prepared::new(StatusCode::OK, "application/json", body);
        p.jersey = true;
        p
    }
}

const JERSEY_BUFFER: usize = 8192;

async fn handle(
    inner: Arc<Inner>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let guard = ActiveGuard::new(ctl.clone());
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let served = ctl.served.fetch_add(1, Ordering::SeqCst) + 1;
    let path = parts.uri.path().to_owned();
    inner.requests.fetch_add(1, Ordering::SeqCst);
    inner.count(&path);

    let graphql = is_graphql_path(&path) && parts.method == Method::POST;
    let gql = graphql.then(|| GqlRequest::parse(&parts.headers, &body));
    if let Some(Ok(g)) = &gql {
        inner.count(&g.operation_for_count());
    }

    let settings = inner.settings.borrow().clone();
    // With the same default, OTP 1.4.0's Grizzly (2.3.19) says `Connection: close` one
    // response later than OTP 2's: on the 257th.
    let otp1_rest = path.starts_with("/otp/routers/") && !is_graphql_path(&path);
    let close = settings.max_requests.is_some_and(|n| {
        let late = otp1_rest && n == OTP_MAX_REQUESTS_PER_CONNECTION;
        served >= u64::from(n) + u64::from(late)
    });
    match &settings.fault {
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::CloseWithoutAnswer) => {
            ctl.kill.notify_one();
            std::future::pending::<()>().await
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    let prepared = match &settings.fault {
        Some(Fault::Status(code)) => fault_status(*code, None),
        Some(Fault::StatusRetryAfter(code, secs)) => fault_status(*code, Some(*secs)),
        _ => {
            let data = {
                let d = inner.data.read().unwrap();
                d.feeds.clone()
            };
            match gql {
                Some(Ok(g)) => execute_graphql(&data, &g, settings.before_2_6),
                Some(Err(p)) => p,
                None => route_request(&inner, &data, &parts.method, &path, &parts.headers),
            }
        }
    };
    let mut prepared = prepared;
    if is_graphql_path(&path) && settings.fault.is_none() {
        otp2_headers(&mut prepared, &parts.headers);
    } else {
        let now = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&jiff::Timestamp::now())
            .unwrap();
        prepared.headers.push((header::DATE, now));
    }
    let close = close || prepared.close;
    Ok(respond(prepared, settings.fault.as_ref(), close, guard))
}

fn fault_status(code: u16, retry_after: Option<u32>) -> Prepared {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut p = Prepared::text(
        status,
        format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    );
    if let Some(secs) = retry_after {
        p.headers.push((header::RETRY_AFTER, secs.to_string()));
    }
    p
}

const GARBAGE: &[u8] =
    b"<html><body>Gateway says: this is not JSON {\"data\": [\x00\xff\xfe</body>";

fn respond(
    p: Prepared,
    fault: Option<&Fault>,
    close: bool,
    guard: ActiveGuard,
) -> Response<SimBody> {
    let mut builder = Response::builder().status(p.status);
    if !p.content_type.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, p.content_type);
    }
    for (name, value) in &p.headers {
        builder = builder.header(name, value.as_str());
    }
    if close {
        builder = builder.header(header::CONNECTION, "close");
    }
    let no_body = p.head || p.status == StatusCode::NOT_MODIFIED;
    let body = match fault {
        Some(Fault::Garbage) => {
            builder = builder.status(StatusCode::OK);
            SimBody::exact(Bytes::from_static(GARBAGE), guard)
        }
        Some(Fault::Truncated) if !no_body => {
            let (declared, sent) = if p.body.len() >= 2 {
                (p.body.len(), p.body.slice(..p.body.len() / 2))
            } else {
                (64, Bytes::from_static(b"{"))
            };
            builder = builder.header(header::CONTENT_LENGTH, declared);
            SimBody {
                data: sent,
                chunk: usize::MAX,
                every: None,
                sleep: None,
                first: true,
                exact: false,
                _guard: Some(guard),
            }
        }
        Some(Fault::SlowBody { chunk, every }) if !no_body => {
            builder = builder.header(header::CONTENT_LENGTH, p.body.len());
            SimBody {
                data: p.body,
                chunk: (*chunk).max(1),
                every: Some(*every),
                sleep: None,
                first: true,
                exact: true,
                _guard: Some(guard),
            }
        }
        _ if no_body => {
            if p.head {
                builder = builder.header(header::CONTENT_LENGTH, p.body.len());
            }
            SimBody::exact(Bytes::new(), guard)
        }
        _ if p.jersey && p.body.len() > JERSEY_BUFFER => SimBody {
            data: p.body,
            chunk: JERSEY_BUFFER,
            every: None,
            sleep: None,
            first: true,
            exact: false,
            _guard: Some(guard),
        },
        _ => SimBody::exact(p.body, guard),
    };
    builder.body(body).expect("a valid response")
}

/// The response body: whole, or in chunks, or slowly; it marks its request finished when
/// dropped.
struct SimBody {
    data: Bytes,
    chunk: usize,
    every: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    first: bool,
    /// Tells hyper the exact length (else hyper uses a Content-Length header or chunks).
    exact: bool,
    _guard: Option<ActiveGuard>,
}

impl SimBody {
    fn exact(data: Bytes, guard: ActiveGuard) -> SimBody {
        SimBody {
            data,
            chunk: usize::MAX,
            every: None,
            sleep: None,
            first: true,
            exact: true,
            _guard: Some(guard),
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        if let (Some(every), false) = (this.every, this.first) {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        this.first = false;
        let n = this.chunk.min(this.data.len());
        Poll::Ready(Some(Ok(Frame::data(this.data.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.data.len() as u64)
        } else {
            SizeHint::default()
        }
    }
}

fn is_graphql_path(path: &str) -> bool {
    if path == "/otp/gtfs/v1" || path == "/otp/gtfs/v1/" {
        return true;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(segs.as_slice(), ["otp", "routers", _, "index", "graphql"])
}

fn route_request(
    inner: &Inner,
    feeds: &[Arc<Feed>],
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Prepared {
    let head = *method == Method::HEAD;
    let mut p = if is_graphql_path(path) && method == Method::OPTIONS {
        // Jersey answers a preflight itself; OTP's CORS filter adds the rest.
        let mut p = Prepared::new(StatusCode::OK, "", Bytes::new());
        if headers.contains_key(header::ORIGIN) {
            p.headers.push((
                HeaderName::from_static("access-control-allow-method"),
                "GET,POST".into(),
            ));
        }
        p.headers
            .push((header::ACCESS_CONTROL_MAX_AGE, "3600".into()));
        p
    } else if is_graphql_path(path) {
        // GtfsGraphQLAPI has POST only: Jersey's 405, without a Content-Type.
        let mut p = Prepared::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "",
            "HTTP 405 Method Not Allowed",
        );
        p.headers.push((header::ALLOW, "POST,OPTIONS".into()));
        p
    } else if let Some(rest) = path.strip_prefix("/otp/routers/") {
        if *method != Method::GET && !head {
            // Jersey's NotAllowedException through OTPExceptionMapper.
            let mut p = jersey_500("javax.ws.rs.NotAllowedException: HTTP 405 Method Not Allowed");
            otp1_cors(&mut p);
            p
        } else {
            otp1(feeds, rest)
        }
    } else if let Some(name) = path
        .strip_prefix("/gtfs/")
        .and_then(|n| n.strip_suffix(".zip"))
    {
        if *method != Method::GET && !head {
            Prepared::text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        } else {
            serve_zip(inner, &percent_decode(name), headers)
        }
    } else {
        Prepared::text(StatusCode::NOT_FOUND, "HTTP 404 Not Found")
    };
    p.head = head;
    p
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------------------
// Zips
// ---------------------------------------------------------------------------------------

fn serve_zip(inner: &Inner, name: &str, headers: &HeaderMap) -> Prepared {
    let data = inner.data.read().unwrap();
    let Some(zip) = data.zips.get(name) else {
        return Prepared::text(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let last_modified = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&zip.modified)
        .unwrap();
    let not_modified = if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        // If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2), weak comparison.
        inm.to_str().unwrap_or("").split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == zip.etag
        })
    } else if let Some(ims) = headers.get(header::IF_MODIFIED_SINCE) {
        ims.to_str()
            .ok()
            .and_then(|s| jiff::fmt::rfc2822::parse(s).ok())
            .is_some_and(|since| zip.modified <= since.timestamp())
    } else {
        false
    };
    let mut p = if not_modified {
        Prepared::new(StatusCode::NOT_MODIFIED, "application/zip", Bytes::new())
    } else {
        Prepared::new(StatusCode::OK, "application/zip", zip.bytes.clone())
    };
    p.headers.push((header::ETAG, zip.etag.clone()));
    p.headers.push((header::LAST_MODIFIED, last_modified));
    p
}

// ---------------------------------------------------------------------------------------
// OTP 1 REST index API
// ---------------------------------------------------------------------------------------

type J = JsonValue;

/// A JSON object from (key, value) pairs in order, nulls left out (Jackson's NON_NULL).
fn jobj(pairs: Vec<(&str, J)>) -> J {
    let mut map = JsonMap::new();
    for (k, v) in pairs {
        if !v.is_null() {
            map.insert(k, v);
        }
    }
    J::Object(map)
}

fn jstr(s: &Option<String>) -> J {
    J::from(s.clone())
}

fn otp1_json(v: J) -> Prepared {
    Prepared::json(serde_json::to_vec(&v).unwrap())
}

fn four_zero_four() -> Prepared {
    Prepared::new(StatusCode::NOT_FOUND, "application/json", "FOUR ZERO FOUR")
}

/// `GtfsLibrary.convertIdFromString`: split at the first `:`; no `:` is an
/// IllegalArgumentException, which OTPExceptionMapper turns into a 500.
fn otp1_id<'f>(feeds: &'f [Arc<Feed>], raw: &str) -> Result<Option<(&'f Feed, String)>, Prepared> {
    let id = percent_decode(raw);
    let Some((feed_id, local)) = id.split_once(':') else {
        return Err(jersey_500(&format!(
            "java.lang.IllegalArgumentException: invalid agency-and-id: {id}"
        )));
    };
    Ok(feeds
        .iter()
        .find(|f| f.id == feed_id)
        .map(|f| (&**f, local.to_owned())))
}

fn otp1(feeds: &[Arc<Feed>], rest: &str) -> Prepared {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let (router, segs) = match segs.split_first() {
        Some((r, s)) if s.first() == Some(&"index") => (*r, &s[1..]),
        _ => return Prepared::text(StatusCode::NOT_FOUND, "HTTP 404 Not Found"),
    };
    if router != "default" {
        // OTP 1.4.0: the router lookup fails outside Jersey, Grizzly answers its own page.
        let mut p = Prepared::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/html;charset=ISO-8859-1",
            GRIZZLY_500,
        );
        p.close = true;
        return p;
    }
    // The index knows the routes of patterns only: a route without a usable trip is 404.
    let route_of = |raw: &str| -> Result<(&Feed, usize), Prepared> {
        match otp1_id(feeds, raw)? {
            Some((f, local)) => f
                .route_by_id
                .get(&local)
                .filter(|&&i| !f.routes[i].patterns.is_empty())
                .map(|&i| (f, i))
                .ok_or_else(four_zero_four),
            None => Err(four_zero_four()),
        }
    };
    let pattern_of = |raw: &str| -> Result<(&Feed, usize), Prepared> {
        let code = percent_decode(raw);
        feeds
            .iter()
            .find_map(|f| f.pattern_by_code.get(&code).map(|&i| (&**f, i)))
            .ok_or_else(four_zero_four)
    };
    let result = match segs {
        ["feeds"] => Ok(J::from(
            feeds
                .iter()
                .map(|f| J::from(f.id.clone()))
                .collect::<Vec<_>>(),
        )),
        ["agencies", feed_id] => match feeds.iter().find(|f| f.id == *feed_id) {
            Some(f) => Ok(J::from(
                f.agencies.iter().map(otp1_agency).collect::<Vec<_>>(),
            )),
            None => Ok(J::Array(vec![])),
        },
        ["routes"] => Ok(J::from(
            feeds
                .iter()
                .flat_map(|f| {
                    (0..f.routes.len())
                        .filter(|&i| !f.routes[i].patterns.is_empty())
                        .map(move |i| otp1_route_short(f, i))
                })
                .collect::<Vec<_>>(),
        )),
        ["routes", id] => route_of(id).map(|(f, i)| otp1_route(f, i)),
        ["routes", id, "patterns"] => route_of(id).map(|(f, i)| {
            J::from(
                f.routes[i]
                    .patterns
                    .iter()
                    .map(|&p| otp1_pattern_short(f, p))
                    .collect::<Vec<_>>(),
            )
        }),
        ["routes", id, "stops"] => route_of(id).map(|(f, i)| {
            J::from(
                f.route_stops(i)
                    .into_iter()
                    .map(|s| otp1_stop_short(f, s))
                    .collect::<Vec<_>>(),
            )
        }),
        ["routes", id, "trips"] => route_of(id).map(|(f, i)| {
            J::from(
                f.routes[i]
                    .patterns
                    .iter()
                    .flat_map(|&p| {
                        otp1_trip_entries(f, &f.patterns[p].trips)
                            .map(move |t| otp1_trip_short(f, t))
                    })
                    .collect::<Vec<_>>(),
            )
        }),
        ["patterns", id] => pattern_of(id).map(|(f, p)| {
            let pat = &f.patterns[p];
            jobj(vec![
                ("id", J::from(pat.code.clone())),
                ("desc", J::from(pat.name1.clone())),
                (
                    "routeId",
                    J::from(format!("{}:{}", f.id, f.routes[pat.route].id)),
                ),
                (
                    "stops",
                    J::from(
                        pat.stops
                            .iter()
                            .map(|&s| otp1_stop_short(f, s))
                            .collect::<Vec<_>>(),
                    ),
                ),
                (
                    "trips",
                    J::from(
                        otp1_trip_entries(f, &pat.trips)
                            .map(|t| otp1_trip_short(f, t))
                            .collect::<Vec<_>>(),
                    ),
                ),
            ])
        }),
        ["patterns", id, "stops"] => pattern_of(id).map(|(f, p)| {
            J::from(
                f.patterns[p]
                    .stops
                    .iter()
                    .map(|&s| otp1_stop_short(f, s))
                    .collect::<Vec<_>>(),
            )
        }),
        ["patterns", id, "trips"] => pattern_of(id).map(|(f, p)| {
            J::from(
                otp1_trip_entries(f, &f.patterns[p].trips)
                    .map(|t| otp1_trip_short(f, t))
                    .collect::<Vec<_>>(),
            )
        }),
        _ => Err(jersey_500(
            "javax.ws.rs.NotFoundException: HTTP 404 Not Found",
        )),
    };
    let mut p = match result {
        Ok(v) => otp1_json(v),
        Err(p) => p,
    };
    otp1_cors(&mut p);
    p
}

/// OTP 1's CORS filter, on every answer from Jersey.
fn otp1_cors(p: &mut Prepared) {
    p.headers.push((
        HeaderName::from_static("access-control-allow-credentials"),
        "false".into(),
    ));
}

/// What OTPExceptionMapper makes of an exception: 500, text/plain, the exception twice
/// over (`toString` and message); Grizzly then closes the connection.
fn jersey_500(exception: &str) -> Prepared {
    let message = exception.split_once(": ").map_or(exception, |(_, m)| m);
    let mut p = Prepared::text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{exception} {message}"),
    );
    p.close = true;
    p
}

const GRIZZLY_500: &str = "<html><head><title>Grizzly 2.3.19</title></head><body><div class=\"header\">Request failed.</div><div class=\"body\">Request failed.</div><div class=\"footer\">Grizzly 2.3.19</div></body></html>";

/// org.opentripplanner.model.Agency through Jackson: the plain agency id, no feed.
fn otp1_agency(a: &Agency) -> J {
    jobj(vec![
        ("id", J::from(a.id.clone())),
        ("name", J::from(a.name.clone())),
        ("url", J::from(a.url.clone())),
        ("timezone", J::from(a.timezone.clone())),
        ("lang", jstr(&a.lang)),
        ("phone", jstr(&a.phone)),
        ("fareUrl", jstr(&a.fare_url)),
    ])
}

/// index/model/RouteShort. dev-1.x has no sortOrder here; deployed 1.x servers (TriMet's,
/// in shared/fixtures/otp/1.x) send it, so it is sent when set.
fn otp1_route_short(f: &Feed, i: usize) -> J {
    let r = &f.routes[i];
    jobj(vec![
        ("id", J::from(format!("{}:{}", f.id, r.id))),
        ("shortName", jstr(&r.short_name)),
        ("longName", jstr(&r.long_name)),
        ("mode", J::from(otp1_mode(r.route_type))),
        ("color", jstr(&r.color)),
        (
            "agencyName",
            J::from(r.agency.map(|a| f.agencies[a].name.clone())),
        ),
        ("sortOrder", J::from(r.sort_order)),
    ])
}

/// org.opentripplanner.model.Route through Jackson's getters: `sortOrder` is -999 with
/// `sortOrderSet: false` when routes.txt has none; `eligibilityRestricted` -999 likewise.
fn otp1_route(f: &Feed, i: usize) -> J {
    let r = &f.routes[i];
    jobj(vec![
        ("id", J::from(format!("{}:{}", f.id, r.id))),
        (
            "agency",
            r.agency
                .map(|a| otp1_agency(&f.agencies[a]))
                .unwrap_or(J::Null),
        ),
        ("shortName", jstr(&r.short_name)),
        ("longName", jstr(&r.long_name)),
        ("desc", jstr(&r.desc)),
        ("type", J::from(r.route_type)),
        ("url", jstr(&r.url)),
        ("color", jstr(&r.color)),
        (
            "textColor",
            jstr(
                &r.text_color
                    .clone()
                    .or_else(|| otp1_text_color(r.color.as_deref()?)),
            ),
        ),
        ("routeBikesAllowed", J::from(0)),
        ("bikesAllowed", J::from(0)),
        (
            "sortOrder",
            J::from(r.sort_order.map(i64::from).unwrap_or(-999)),
        ),
        ("eligibilityRestricted", J::from(-999)),
        ("sortOrderSet", J::from(r.sort_order.is_some())),
    ])
}

/// OTP 1's graph builder gives a route with a colour and no text colour one
/// (`GtfsModule.generateRouteColor`): black on a bright colour, else white.
fn otp1_text_color(color: &str) -> Option<String> {
    let rgb = u32::from_str_radix(color.trim_start_matches('#'), 16).ok()?;
    // java.awt.Color components are floats; the sum is computed in doubles.
    let c = |shift: u32| f64::from(((rgb >> shift) & 0xff) as f32 / 255.0);
    let brightness = (0.299 * c(16).powi(2) + 0.587 * c(8).powi(2) + 0.114 * c(0).powi(2)).sqrt();
    Some(if brightness > 0.5 { "000000" } else { "FFFFFF" }.to_owned())
}

fn otp1_pattern_short(f: &Feed, p: usize) -> J {
    let pat = &f.patterns[p];
    jobj(vec![
        ("id", J::from(pat.code.clone())),
        ("desc", J::from(pat.name1.clone())),
    ])
}

/// index/model/StopShort: lat and lon are Java doubles (0.0 when missing); `cluster` is the
/// parent station's plain id.
fn otp1_stop_short(f: &Feed, s: usize) -> J {
    let st = &f.stops[s];
    jobj(vec![
        ("id", J::from(format!("{}:{}", f.id, st.id))),
        ("code", jstr(&st.code)),
        ("name", jstr(&st.name)),
        ("lat", J::from(st.lat.unwrap_or(0.0))),
        ("lon", J::from(st.lon.unwrap_or(0.0))),
        ("url", jstr(&st.url)),
        ("cluster", jstr(&st.parent)),
    ])
}

/// A pattern's trips as OTP 1 lists them (`TripPattern.getTrips`): a frequency-based trip
/// once per frequencies.txt row, as each row adds a `FrequencyEntry` and the trip again.
fn otp1_trip_entries<'a>(f: &'a Feed, trips: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
    trips
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t, f.trips[t].frequency_rows.max(1)))
}

/// index/model/TripShort: `serviceId` is feed-scoped, `shapeId` is not.
fn otp1_trip_short(f: &Feed, t: usize) -> J {
    let tr = &f.trips[t];
    jobj(vec![
        ("id", J::from(format!("{}:{}", f.id, tr.id))),
        ("tripHeadsign", jstr(&tr.headsign)),
        ("serviceId", J::from(format!("{}:{}", f.id, tr.service_id))),
        ("shapeId", jstr(&tr.shape_id)),
        ("direction", J::from(tr.direction)),
    ])
}

/// `GtfsLibrary.getTraverseMode` of dev-1.x.
fn otp1_mode(t: i32) -> &'static str {
    match t {
        100..=199 => "RAIL",
        200..=299 => "BUS",
        401..=402 => "SUBWAY",
        300..=499 => "RAIL",
        500..=699 => "SUBWAY",
        700..=899 => "BUS",
        900..=999 => "TRAM",
        1000..=1099 => "FERRY",
        1100..=1199 => "AIRPLANE",
        1200..=1299 => "FERRY",
        1300..=1399 => "GONDOLA",
        1400..=1499 => "FUNICULAR",
        1500..=1599 => "BUS",
        1600..=1699 => "CAR",
        0 => "TRAM",
        1 => "SUBWAY",
        2 => "RAIL",
        3 => "BUS",
        4 => "FERRY",
        5 => "CABLE_CAR",
        6 => "GONDOLA",
        7 => "FUNICULAR",
        // OTP 1 refuses to build a graph with any other type.
        _ => "BUS",
    }
}

/// `gtfs/mapping/TransitModeMapper` of dev-2.x, with RouteMapper's fallback to BUS.
fn otp2_mode(t: i32) -> &'static str {
    match t {
        100..=199 => "RAIL",
        200..=299 => "COACH",
        401..=402 => "SUBWAY",
        405 => "MONORAIL",
        300..=499 => "RAIL",
        500..=699 => "SUBWAY",
        700..=799 => "BUS",
        800..=899 => "TROLLEYBUS",
        900..=999 => "TRAM",
        1000..=1099 => "FERRY",
        1100..=1199 => "AIRPLANE",
        1200..=1299 => "FERRY",
        1300..=1399 => "GONDOLA",
        1400..=1499 => "FUNICULAR",
        1551..=1560 => "CARPOOL",
        1500..=1598 => "TAXI",
        1600..=1699 => "BUS",
        0 => "TRAM",
        1 => "SUBWAY",
        2 => "RAIL",
        3 => "BUS",
        4 => "FERRY",
        5 => "CABLE_CAR",
        6 => "GONDOLA",
        7 => "FUNICULAR",
        11 => "TROLLEYBUS",
        12 => "MONORAIL",
        _ => "BUS",
    }
}

// ---------------------------------------------------------------------------------------
// OTP 2 GraphQL
// ---------------------------------------------------------------------------------------

// OTP 2 lists routes and patterns, and meets trips when it builds patterns, in the
// iteration order of Java hash maps and sets keyed by FeedScopedId (checked against OTP
// 2.5.0 and 2.9.0 with the fixture feeds). That order is deterministic: by bucket
// (`hash ^ hash >>> 16` masked by the capacity, a power of two that doubles from its
// initial value while the map is over 3/4 full), then by insertion within a bucket.

/// Java's `String.hashCode`.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)))
}

/// `FeedScopedId.hashCode`: the feed's hash xor the id's.
fn feed_scoped_hash(feed: &str, id: &str) -> i32 {
    java_string_hash(feed) ^ java_string_hash(id)
}

/// The bucket of `hash` in a `java.util.HashMap` holding `len` entries, created with
/// capacity `initial`.
fn java_bucket(hash: i32, len: usize, initial: usize) -> usize {
    let mut capacity = initial.max(1);
    while len * 4 > capacity * 3 {
        capacity *= 2;
    }
    let h = hash as u32;
    ((h ^ (h >> 16)) as usize) & (capacity - 1)
}

/// The positions of `keys` (inserted in this order) in the iteration order of a
/// `HashMap` keyed by their hashes, created with capacity `initial` (16 by default).
fn java_iteration(hashes: &[i32], initial: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..hashes.len()).collect();
    order.sort_by_key(|&i| (java_bucket(hashes[i], hashes.len(), initial), i));
    order
}

/// For each of `ids` (trips.txt order), its rank in OTP 2's map of trips by id.
fn java_order(feed_id: &str, ids: &[String]) -> Vec<usize> {
    let hashes: Vec<i32> = ids.iter().map(|id| feed_scoped_hash(feed_id, id)).collect();
    let mut rank = vec![0; ids.len()];
    for (r, i) in java_iteration(&hashes, 16).into_iter().enumerate() {
        rank[i] = r;
    }
    rank
}

/// `routes` as OTP 2 lists them: one map of every route of every feed (feeds in order,
/// then routes.txt order).
fn otp2_route_order(feeds: &[Arc<Feed>]) -> Vec<(usize, usize)> {
    let all: Vec<(usize, usize)> = feeds
        .iter()
        .enumerate()
        .flat_map(|(f, feed)| (0..feed.routes.len()).map(move |r| (f, r)))
        .collect();
    let hashes: Vec<i32> = all
        .iter()
        .map(|&(f, r)| feed_scoped_hash(&feeds[f].id, &feeds[f].routes[r].id))
        .collect();
    java_iteration(&hashes, 16)
        .into_iter()
        .map(|i| all[i])
        .collect()
}

/// A route's `patterns` as OTP 2 lists them. OTP keeps every pattern of every feed in one
/// map (inserted as created); 2.5 lists a route's patterns in that map's order, 2.9 puts
/// them in that order into a set of the route's own and lists that.
fn otp2_pattern_order(feeds: &[Arc<Feed>], f: &Feed, r: usize, before_2_6: bool) -> Vec<usize> {
    let hash = |feed: &Feed, p: usize| {
        let code = &feed.patterns[p].code2;
        feed_scoped_hash(&feed.id, code.split_once(':').map_or("", |(_, id)| id))
    };
    // Every pattern: ((feed, creation), hash), in creation order.
    let mut all: Vec<(usize, usize, usize)> = feeds
        .iter()
        .enumerate()
        .flat_map(|(fi, feed)| {
            (0..feed.patterns.len()).map(move |p| (fi, feed.patterns[p].created2, p))
        })
        .collect();
    all.sort_unstable();
    let hashes: Vec<i32> = all.iter().map(|&(fi, _, p)| hash(&feeds[fi], p)).collect();
    let global: Vec<usize> = java_iteration(&hashes, 16)
        .into_iter()
        .filter(|&i| std::ptr::eq(&*feeds[all[i].0], f) && f.patterns[all[i].2].route == r)
        .map(|i| all[i].2)
        .collect();
    if before_2_6 {
        return global;
    }
    let own: Vec<i32> = global.iter().map(|&p| hash(f, p)).collect();
    java_iteration(&own, 16)
        .into_iter()
        .map(|i| global[i])
        .collect()
}

const SCHEMA_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/otp/2.x/schema/schema.graphqls"
);

fn schema() -> &'static Valid<Schema> {
    static SCHEMA: LazyLock<Valid<Schema>> = LazyLock::new(|| {
        let sdl = std::fs::read_to_string(SCHEMA_PATH)
            .unwrap_or_else(|e| panic!("read {SCHEMA_PATH}: {e}"));
        Schema::parse_and_validate(sdl, "schema.graphqls").expect("OTP's schema is valid")
    });
    &SCHEMA
}

struct GqlRequest {
    query: String,
    operation_name: Option<String>,
    variables: JsonMap,
}

impl GqlRequest {
    /// The body as `GtfsGraphQLAPI` reads it: JSON with `query`, optional `operationName`
    /// and `variables` (an object or a JSON string), or a raw `application/graphql` query.
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<GqlRequest, Prepared> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("application/graphql") {
            return Ok(GqlRequest {
                query: String::from_utf8_lossy(body).into_owned(),
                operation_name: None,
                variables: JsonMap::new(),
            });
        }
        if !content_type.starts_with("application/json") {
            // Jersey's 415: no Content-Type, except when the request had none.
            let mut p = Prepared::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "",
                "HTTP 415 Unsupported Media Type",
            );
            if content_type.is_empty() {
                p.content_type = "application/json";
            }
            return Err(p);
        }
        let no_query = || bad_request("No query found in body".into());
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| bad_request(format!("Unable to process JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(no_query)?;
        let query = match obj.get("query") {
            Some(serde_json::Value::String(q)) => q.clone(),
            Some(_) => return Err(bad_request("query is not a string".into())),
            None => return Err(no_query()),
        };
        let operation_name = obj
            .get("operationName")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let variables = match obj.get("variables") {
            Some(serde_json::Value::Object(m)) => {
                serde_json::from_value(serde_json::Value::Object(m.clone())).unwrap()
            }
            Some(serde_json::Value::String(s)) if !s.is_empty() => serde_json::from_str(s)
                .map_err(|_| bad_request("Variables must be a valid json object".into()))?,
            _ => JsonMap::new(),
        };
        Ok(GqlRequest {
            query,
            operation_name,
            variables,
        })
    }

    /// `operationName`, else the name of the document's only operation.
    fn operation_for_count(&self) -> String {
        if let Some(n) = &self.operation_name {
            return n.clone();
        }
        let doc = apollo_compiler::ast::Document::parse(&self.query, "query.graphql")
            .unwrap_or_else(|e| e.partial);
        doc.definitions
            .iter()
            .find_map(|d| match d {
                apollo_compiler::ast::Definition::OperationDefinition(op) => Some(
                    op.name
                        .as_ref()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "<anonymous>".into()),
                ),
                _ => None,
            })
            .unwrap_or_else(|| "<anonymous>".into())
    }
}

/// GtfsGraphQLAPI's 400 (text/plain): Grizzly then says `Connection: close` and closes,
/// as real OTP 2.5.0 and 2.9.0 do.
fn bad_request(message: String) -> Prepared {
    let mut p = Prepared::text(StatusCode::BAD_REQUEST, message);
    p.close = true;
    p
}

/// What OTP 2's filters add to every answer from its GraphQL path: Jersey's `Vary` and
/// OTP's CORS headers (the Origin echoed when sent).
fn otp2_headers(p: &mut Prepared, request: &HeaderMap) {
    p.headers.push((
        header::VARY,
        "Accept, Accept-Encoding, Accept-Language".into(),
    ));
    if let Some(origin) = request.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        p.headers
            .push((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.to_owned()));
    }
    p.headers
        .push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "false".into()));
}

fn gql_errors(errors: Vec<J>) -> Prepared {
    Prepared::json(serde_json::to_vec(&jobj(vec![("errors", J::Array(errors))])).unwrap())
}

/// graphql-java's error shape, in its order: message, locations, path,
/// extensions.classification.
fn gql_error(err: apollo_compiler::response::GraphQLError, classification: &str) -> J {
    let mut m = JsonMap::new();
    m.insert("message", J::from(err.message));
    if !err.locations.is_empty() {
        let locations = err.locations.iter().map(|l| {
            jobj(vec![
                ("line", J::from(l.line)),
                ("column", J::from(l.column)),
            ])
        });
        m.insert("locations", J::Array(locations.collect()));
    }
    if !err.path.is_empty() {
        m.insert(
            "path",
            serde_json::from_value(serde_json::to_value(&err.path).unwrap()).unwrap(),
        );
    }
    m.insert(
        "extensions",
        jobj(vec![("classification", J::from(classification))]),
    );
    J::Object(m)
}

/// graphql-java's (ANTLR's) message for a syntax error at the location apollo-compiler
/// found: "Invalid syntax with offending token '<EOF>' at line 1 column 30". The token
/// is the one at that location (apollo-compiler and ANTLR agree on where for the
/// errors checked; they may not for every error).
fn graphql_java_syntax_error(query: &str, e: &apollo_compiler::response::GraphQLError) -> J {
    let (line, column) = e.locations.first().map_or((1, 1), |l| (l.line, l.column));
    let at = offset_of(query, line, column);
    let rest = query
        .get(at..)
        .unwrap_or("")
        .trim_start_matches([' ', '\t', ',']);
    let token: String = match rest.chars().next() {
        None => "<EOF>".into(),
        Some(c) if c.is_alphanumeric() || c == '_' || c == '-' => rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.' || *c == '-')
            .collect(),
        Some(c) => c.to_string(),
    };
    let message =
        format!("Invalid syntax with offending token '{token}' at line {line} column {column}");
    let mut m = JsonMap::new();
    m.insert("message", J::from(message));
    m.insert(
        "locations",
        J::Array(vec![jobj(vec![
            ("line", J::from(line)),
            ("column", J::from(column)),
        ])]),
    );
    m.insert(
        "extensions",
        jobj(vec![("classification", J::from("InvalidSyntax"))]),
    );
    J::Object(m)
}

/// The byte offset of 1-based `line` and `column` (in characters) in `text`.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    text[start..]
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(text.len(), |(i, _)| start + i)
}

/// graphql-java's message for a field its type does not have: "Validation error
/// (FieldUndefined@[routes/sortOrder]) : Field 'sortOrder' in type 'Route' is undefined",
/// the path being the names of the fields down to it.
fn graphql_java_field_undefined(
    query: &str,
    e: &apollo_compiler::response::GraphQLError,
) -> String {
    use apollo_compiler::ast::{Definition, Selection};
    // "type `Route` does not have a field `sortOrder`"
    let mut ticks = e.message.split('`').skip(1).step_by(2);
    let (ty, field) = (ticks.next().unwrap_or(""), ticks.next().unwrap_or(""));
    let at = e
        .locations
        .first()
        .map(|l| offset_of(query, l.line, l.column));
    fn walk(sel: &[Selection], at: usize, path: &mut Vec<String>) -> bool {
        for s in sel {
            if let Selection::Field(f) = s {
                path.push(f.name.to_string());
                if walk(&f.selection_set, at, path)
                    || f.location()
                        .is_some_and(|l| (l.offset()..l.end_offset()).contains(&at))
                {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = Vec::new();
    if let (Some(at), Ok(doc)) = (
        at,
        apollo_compiler::ast::Document::parse(query, "query.graphql"),
    ) {
        for d in &doc.definitions {
            let found = match d {
                Definition::OperationDefinition(op) => walk(&op.selection_set, at, &mut path),
                Definition::FragmentDefinition(fr) => walk(&fr.selection_set, at, &mut path),
                _ => false,
            };
            if found {
                break;
            }
        }
    }
    if path.is_empty() {
        path.push(field.to_owned());
    }
    format!(
        "Validation error (FieldUndefined@[{}]) : Field '{field}' in type '{ty}' is undefined",
        path.join("/")
    )
}

/// OTP's schema as releases before 2.6 had it: without `Route.sortOrder`.
fn schema_before_2_6() -> &'static Valid<Schema> {
    static SCHEMA: LazyLock<Valid<Schema>> = LazyLock::new(|| {
        let sdl = std::fs::read_to_string(SCHEMA_PATH)
            .unwrap_or_else(|e| panic!("read {SCHEMA_PATH}: {e}"));
        // The field and the description block before it.
        let field = "\n  sortOrder: Int";
        let at = sdl.find(field).expect("Route.sortOrder is in the schema");
        let opening = sdl[..at]
            .strip_suffix("\"\"\"")
            .and_then(|before| before.rfind("\n  \"\"\""))
            .expect("Route.sortOrder has a block description");
        let older = format!("{}{}", &sdl[..opening], &sdl[at + field.len()..]);
        Schema::parse_and_validate(older, "schema.graphqls").expect("the older schema is valid")
    });
    &SCHEMA
}

fn execute_graphql(feeds: &[Arc<Feed>], req: &GqlRequest, before_2_6: bool) -> Prepared {
    let schema = if before_2_6 {
        schema_before_2_6()
    } else {
        schema()
    };
    let doc = match ExecutableDocument::parse_and_validate(schema, &req.query, "query.graphql") {
        Ok(doc) => doc,
        Err(e) => {
            let errors: Vec<_> = e.errors.iter().map(|d| d.to_json()).collect();
            // graphql-java stops at the first syntax error; apollo-compiler may report
            // one twice, or go on.
            if let Some(syntax) = errors
                .iter()
                .find(|e| e.message.starts_with("syntax error"))
            {
                return gql_errors(vec![graphql_java_syntax_error(&req.query, syntax)]);
            }
            let undefined = |e: &apollo_compiler::response::GraphQLError| {
                e.message.contains("does not have a field")
            };
            let any_undefined = errors.iter().any(undefined);
            let errors = errors
                .into_iter()
                // apollo-compiler's follow-up when every selected field is undefined.
                .filter(|e| !(any_undefined && e.message.contains("must have a subselection")))
                .map(|mut e| {
                    if undefined(&e) {
                        e.message = graphql_java_field_undefined(&req.query, &e);
                    }
                    gql_error(e, "ValidationError")
                })
                .collect();
            return gql_errors(errors);
        }
    };
    let request_error = |e: apollo_compiler::request::RequestError| {
        let mut e = e.to_graphql_error(&doc.sources);
        // graphql-java's words: "Variable 'id' has an invalid value: Variable 'id' has
        // coerced Null value for NonNull type 'String!'".
        if let Some(name) = e
            .message
            .strip_prefix("missing value for non-null variable '")
            .and_then(|rest| rest.strip_suffix('\''))
        {
            let ty = doc
                .operations
                .iter()
                .flat_map(|op| op.variables.iter())
                .find(|v| v.name == name)
                .map(|v| v.ty.to_string())
                .unwrap_or_default();
            e.message = format!(
                "Variable '{name}' has an invalid value: Variable '{name}' has coerced Null \
                 value for NonNull type '{ty}'"
            );
        }
        gql_errors(vec![gql_error(e, "ValidationError")])
    };
    let execution = match Execution::new(schema, &doc).operation_name(req.operation_name.as_deref())
    {
        Ok(x) => x,
        Err(_) if req.operation_name.is_some() && doc.operations.iter().count() > 0 => {
            let name = req.operation_name.as_deref().unwrap_or_default();
            let message = format!("Unknown operation named '{name}'.");
            let (message, class) = if before_2_6 {
                let message = format!(
                    "java.util.concurrent.ExecutionException: \
                     graphql.execution.UnknownOperationException: {message}"
                );
                (message, "ExecutionAborted")
            } else {
                (message, "ValidationError")
            };
            let mut error = JsonMap::new();
            error.insert("message", J::from(message));
            error.insert("extensions", jobj(vec![("classification", J::from(class))]));
            return gql_errors(vec![J::Object(error)]);
        }
        Err(e) => return request_error(e),
    };
    let root = Obj::Query(feeds);
    GQL_CONTEXT.set((feeds.to_vec(), before_2_6));
    // graphql-java answers introspection queries; apollo-compiler needs to be told.
    let executed = execution
        .raw_variable_values(&req.variables)
        .enable_schema_introspection(true)
        .execute_sync(&root);
    GQL_CONTEXT.set((Vec::new(), false));
    match executed {
        Ok(resp) => {
            // graphql-java writes errors first, then data.
            let mut out = Vec::with_capacity(4096);
            out.push(b'{');
            if !resp.errors.is_empty() {
                let errors: Vec<_> = resp
                    .errors
                    .into_iter()
                    .map(|mut e| {
                        // apollo-compiler's prefix; graphql-java's message is ours.
                        if let Some(m) = e.message.strip_prefix("resolver error: ") {
                            e.message = m.to_owned();
                        }
                        gql_error(e, "DataFetchingException")
                    })
                    .collect();
                out.extend_from_slice(b"\"errors\":");
                serde_json::to_writer(&mut out, &errors).unwrap();
                out.push(b',');
            }
            out.extend_from_slice(b"\"data\":");
            serde_json::to_writer(&mut out, &resp.data).unwrap();
            out.push(b'}');
            Prepared::json(out)
        }
        Err(e) => request_error(e),
    }
}

thread_local! {
    /// What resolvers need besides their object, for the query being executed on this
    /// thread (`execute_sync` runs there): every feed, and whether OTP is before 2.6.
    static GQL_CONTEXT: std::cell::RefCell<(Vec<Arc<Feed>>, bool)> = const {
        std::cell::RefCell::new((Vec::new(), false))
    };
}

fn relay_id(type_name: &str, id: &str) -> String {
    base64(format!("{type_name}:{id}").as_bytes())
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The GraphQL object types the simulator models.
#[derive(Clone, Copy)]
enum Obj<'w> {
    Query(&'w [Arc<Feed>]),
    Feed(&'w Feed),
    Publisher(&'w Feed),
    Agency(&'w Feed, usize),
    Route(&'w Feed, usize),
    Pattern(&'w Feed, usize),
    Stop(&'w Feed, usize),
    Trip(&'w Feed, usize),
}

type Resolved<'a> = Result<ResolvedValue<'a>, FieldError>;

fn leaf<'a>(v: impl Into<JsonValue>) -> Resolved<'a> {
    Ok(ResolvedValue::leaf(v))
}

fn object(o: Obj<'_>) -> Resolved<'_> {
    Ok(ResolvedValue::object(o))
}

fn objects(v: Vec<Obj<'_>>) -> Resolved<'_> {
    Ok(ResolvedValue::list(
        v.into_iter().map(ResolvedValue::object),
    ))
}

fn empty_list<'a>() -> Resolved<'a> {
    Ok(ResolvedValue::list(Vec::new()))
}

/// A field of the schema the simulator does not model: null, or an error if the schema
/// says it cannot be null.
fn not_simulated<'a>(type_name: &str, info: &ResolveInfo<'_>) -> Resolved<'a> {
    if info.field_definition().ty.is_non_null() {
        Err(FieldError {
            message: format!(
                "otp_sim does not simulate {type_name}.{}",
                info.field_name()
            ),
        })
    } else {
        Ok(ResolvedValue::null())
    }
}

fn arg_str<'i>(info: &'i ResolveInfo<'_>, name: &str) -> Option<&'i str> {
    info.arguments().get(name).and_then(|v| v.as_str())
}

fn arg_strs(info: &ResolveInfo<'_>, name: &str) -> Option<Vec<String>> {
    info.arguments()
        .get(name)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
}

/// OTP 2's `FeedScopedId.parse` of an id argument: an error (graphql-java's
/// DataFetchingException, the field null) unless empty or `feed:local` with both parts.
fn check_id(info: &ResolveInfo<'_>, id: &str) -> Result<(), FieldError> {
    let missing = |what: &str, value: &str| {
        format!(
            "Missing mandatory {what} on FeedScopeId [Value cannot be null, empty or just \
             whitespace: '{value}']"
        )
    };
    let problem = match id.split_once(':') {
        _ if id.is_empty() => return Ok(()),
        None => format!("invalid feed-scoped-id: {id}"),
        Some((feed, _)) if feed.trim().is_empty() => missing("feedId", feed),
        Some((_, local)) if local.trim().is_empty() => missing("id", local),
        Some(_) => return Ok(()),
    };
    let key = info
        .field_selections()
        .first()
        .map_or(info.field_name(), |f| f.response_key().as_str());
    Err(FieldError {
        message: format!("Exception while fetching data (/{key}) : {problem}"),
    })
}

/// [`check_id`] of the `id` argument.
fn check_id_arg(info: &ResolveInfo<'_>) -> Result<(), FieldError> {
    arg_str(info, "id").map_or(Ok(()), |id| check_id(info, id))
}

/// `feed:local` → the feed and the local id.
fn split_id<'w>(feeds: &'w [Arc<Feed>], id: &str) -> Option<(&'w Feed, String)> {
    let (feed_id, local) = id.split_once(':')?;
    feeds
        .iter()
        .find(|f| f.id == feed_id)
        .map(|f| (&**f, local.to_owned()))
}

impl ObjectValue for Obj<'_> {
    fn type_name(&self) -> &str {
        match self {
            Obj::Query(_) => "QueryType",
            Obj::Feed(_) => "Feed",
            Obj::Publisher(_) => "FeedPublisher",
            Obj::Agency(..) => "Agency",
            Obj::Route(..) => "Route",
            Obj::Pattern(..) => "Pattern",
            Obj::Stop(..) => "Stop",
            Obj::Trip(..) => "Trip",
        }
    }

    fn resolve_field<'a>(&'a self, info: &'a ResolveInfo<'a>) -> Resolved<'a> {
        let field = info.field_name();
        match *self {
            Obj::Query(feeds) => resolve_query(feeds, field, info),
            Obj::Feed(f) => match field {
                "feedId" => leaf(f.id.clone()),
                "agencies" => objects((0..f.agencies.len()).map(|a| Obj::Agency(f, a)).collect()),
                "publisher" => match &f.publisher {
                    Some(_) => object(Obj::Publisher(f)),
                    None => leaf(JsonValue::Null),
                },
                "alerts" => empty_list(),
                _ => not_simulated("Feed", info),
            },
            Obj::Publisher(f) => {
                let (name, url) = f.publisher.clone().unwrap_or_default();
                match field {
                    "name" => leaf(name),
                    "url" => leaf(url),
                    _ => not_simulated("FeedPublisher", info),
                }
            }
            Obj::Agency(f, a) => {
                let ag = &f.agencies[a];
                let gtfs_id = format!("{}:{}", f.id, ag.id);
                match field {
                    "gtfsId" => leaf(gtfs_id),
                    "id" => leaf(relay_id("Agency", &gtfs_id)),
                    "name" => leaf(ag.name.clone()),
                    "url" => leaf(ag.url.clone()),
                    "timezone" => leaf(ag.timezone.clone()),
                    "lang" => leaf(ag.lang.clone()),
                    "phone" => leaf(ag.phone.clone()),
                    "fareUrl" => leaf(ag.fare_url.clone()),
                    "routes" => objects(
                        (0..f.routes.len())
                            .filter(|&r| f.routes[r].agency == Some(a))
                            .map(|r| Obj::Route(f, r))
                            .collect(),
                    ),
                    "alerts" => empty_list(),
                    _ => not_simulated("Agency", info),
                }
            }
            Obj::Route(f, r) => resolve_route(f, r, field, info),
            Obj::Pattern(f, p) => {
                let pat = &f.patterns[p];
                match field {
                    "code" => leaf(pat.code2.clone()),
                    "id" => leaf(relay_id("Pattern", &pat.code2)),
                    "directionId" => leaf(pat.direction),
                    "headsign" => leaf(pat.headsign.clone()),
                    "name" => leaf(pat.name2.clone()),
                    "route" => object(Obj::Route(f, pat.route)),
                    "stops" => objects(pat.stops.iter().map(|&s| Obj::Stop(f, s)).collect()),
                    "trips" => objects(pat.trips.iter().map(|&t| Obj::Trip(f, t)).collect()),
                    "alerts" | "vehiclePositions" => empty_list(),
                    _ => not_simulated("Pattern", info),
                }
            }
            Obj::Stop(f, s) => resolve_stop(f, s, field, info),
            Obj::Trip(f, t) => {
                let tr = &f.trips[t];
                let gtfs_id = format!("{}:{}", f.id, tr.id);
                match field {
                    "gtfsId" => leaf(gtfs_id),
                    "id" => leaf(relay_id("Trip", &gtfs_id)),
                    "tripHeadsign" => leaf(tr.headsign.clone()),
                    "tripShortName" => leaf(tr.short_name.clone()),
                    "routeShortName" => leaf(f.routes[tr.route].short_name.clone()),
                    "serviceId" => leaf(format!("{}:{}", f.id, tr.service_id)),
                    "directionId" => leaf(tr.direction.map(|d| d.to_string())),
                    "shapeId" => leaf(tr.shape_id.as_ref().map(|s| format!("{}:{s}", f.id))),
                    "blockId" => leaf(tr.block_id.clone()),
                    "route" => object(Obj::Route(f, tr.route)),
                    "pattern" => object(Obj::Pattern(f, tr.pattern)),
                    "stops" => objects(
                        f.patterns[tr.pattern]
                            .stops
                            .iter()
                            .map(|&s| Obj::Stop(f, s))
                            .collect(),
                    ),
                    "wheelchairAccessible" => leaf(wheelchair(tr.wheelchair)),
                    "bikesAllowed" => leaf(match tr.bikes {
                        1 => "ALLOWED",
                        2 => "NOT_ALLOWED",
                        _ => "NO_INFORMATION",
                    }),
                    "isReplacement" => leaf(f.routes[tr.route].route_type == 714),
                    "replacementsExist" => leaf(false),
                    "alerts" => empty_list(),
                    _ => not_simulated("Trip", info),
                }
            }
        }
    }
}

fn wheelchair(v: i32) -> &'static str {
    match v {
        1 => "POSSIBLE",
        2 => "NOT_POSSIBLE",
        _ => "NO_INFORMATION",
    }
}

fn resolve_query<'a>(
    feeds: &'a [Arc<Feed>],
    field: &str,
    info: &'a ResolveInfo<'a>,
) -> Resolved<'a> {
    match field {
        "feeds" => objects(feeds.iter().map(|f| Obj::Feed(f)).collect()),
        "agencies" => objects(
            feeds
                .iter()
                .flat_map(|f| (0..f.agencies.len()).map(move |a| Obj::Agency(f, a)))
                .collect(),
        ),
        "agency" => {
            check_id_arg(info)?;
            let found = arg_str(info, "id")
                .and_then(|id| split_id(feeds, id))
                .and_then(|(f, local)| {
                    f.agencies
                        .iter()
                        .position(|a| a.id == local)
                        .map(|a| Obj::Agency(f, a))
                });
            found.map_or_else(|| leaf(JsonValue::Null), object)
        }
        "routes" => {
            // QueryTypeImpl.routes: `ids` alone (in their order, null for an unknown id);
            // else feeds, transportModes, and name (the start of the short or long name,
            // any case). serviceDates is not simulated.
            if let Some(ids) = arg_strs(info, "ids") {
                for id in &ids {
                    check_id(info, id)?;
                }
                let found = ids.iter().map(|id| {
                    split_id(feeds, id)
                        .and_then(|(f, local)| f.route_by_id.get(&local).map(|&r| Obj::Route(f, r)))
                        .map_or_else(ResolvedValue::null, ResolvedValue::object)
                });
                return Ok(ResolvedValue::list(found.collect::<Vec<_>>()));
            }
            let want_feeds = arg_strs(info, "feeds");
            let name = arg_str(info, "name").map(str::to_lowercase);
            let modes = arg_strs(info, "transportModes");
            let mut out = Vec::new();
            for (fi, i) in otp2_route_order(feeds) {
                let f = &*feeds[fi];
                let r = &f.routes[i];
                if want_feeds.as_ref().is_some_and(|w| !w.contains(&f.id)) {
                    continue;
                }
                {
                    if let Some(n) = &name {
                        let hit = [&r.short_name, &r.long_name]
                            .iter()
                            .any(|s| s.as_ref().is_some_and(|s| s.to_lowercase().starts_with(n)));
                        if !hit {
                            continue;
                        }
                    }
                    if modes
                        .as_ref()
                        .is_some_and(|m| !m.iter().any(|m| m == otp2_mode(r.route_type)))
                    {
                        continue;
                    }
                    out.push(Obj::Route(f, i));
                }
            }
            objects(out)
        }
        "route" => {
            check_id_arg(info)?;
            let found = arg_str(info, "id")
                .and_then(|id| split_id(feeds, id))
                .and_then(|(f, local)| f.route_by_id.get(&local).map(|&r| Obj::Route(f, r)));
            found.map_or_else(|| leaf(JsonValue::Null), object)
        }
        "stops" | "stations" => {
            let want_ids = arg_strs(info, "ids");
            let want_feeds = arg_strs(info, "feeds");
            let name = arg_str(info, "name").map(str::to_lowercase);
            let station = field == "stations";
            let mut out = Vec::new();
            for f in feeds {
                if want_feeds.as_ref().is_some_and(|w| !w.contains(&f.id)) {
                    continue;
                }
                for (i, s) in f.stops.iter().enumerate() {
                    if (s.location_type == 1) != station {
                        continue;
                    }
                    if want_ids
                        .as_ref()
                        .is_some_and(|w| !w.contains(&format!("{}:{}", f.id, s.id)))
                    {
                        continue;
                    }
                    if let Some(n) = &name
                        && !s
                            .name
                            .as_ref()
                            .is_some_and(|s| s.to_lowercase().contains(n))
                    {
                        continue;
                    }
                    out.push(Obj::Stop(f, i));
                }
            }
            objects(out)
        }
        "stop" | "station" => {
            check_id_arg(info)?;
            let station = field == "station";
            let found = arg_str(info, "id")
                .and_then(|id| split_id(feeds, id))
                .and_then(|(f, local)| {
                    f.stop_by_id
                        .get(&local)
                        .filter(|&&s| (f.stops[s].location_type == 1) == station)
                        .map(|&s| Obj::Stop(f, s))
                });
            found.map_or_else(|| leaf(JsonValue::Null), object)
        }
        "trips" => {
            let want_feeds = arg_strs(info, "feeds");
            objects(
                feeds
                    .iter()
                    .filter(|f| want_feeds.as_ref().is_none_or(|w| w.contains(&f.id)))
                    .flat_map(|f| (0..f.trips.len()).map(move |t| Obj::Trip(f, t)))
                    .collect(),
            )
        }
        "trip" => {
            check_id_arg(info)?;
            let found = arg_str(info, "id")
                .and_then(|id| split_id(feeds, id))
                .and_then(|(f, local)| f.trip_by_id.get(&local).map(|&t| Obj::Trip(f, t)));
            found.map_or_else(|| leaf(JsonValue::Null), object)
        }
        "patterns" => objects(
            feeds
                .iter()
                .flat_map(|f| (0..f.patterns.len()).map(move |p| Obj::Pattern(f, p)))
                .collect(),
        ),
        "pattern" => {
            check_id_arg(info)?;
            let found = arg_str(info, "id").and_then(|code| {
                feeds.iter().find_map(|f| {
                    let p = f.patterns.iter().position(|p| p.code2 == code)?;
                    Some(Obj::Pattern(f, p))
                })
            });
            found.map_or_else(|| leaf(JsonValue::Null), object)
        }
        _ => not_simulated("QueryType", info),
    }
}

fn resolve_route<'a>(
    f: &'a Feed,
    r: usize,
    field: &str,
    info: &'a ResolveInfo<'a>,
) -> Resolved<'a> {
    let route = &f.routes[r];
    let gtfs_id = format!("{}:{}", f.id, route.id);
    match field {
        "gtfsId" => leaf(gtfs_id),
        "id" => leaf(relay_id("Route", &gtfs_id)),
        "shortName" => leaf(route.short_name.clone()),
        "longName" => leaf(route.long_name.clone()),
        "desc" => leaf(route.desc.clone()),
        "url" => leaf(route.url.clone()),
        "mode" => leaf(otp2_mode(route.route_type)),
        "type" => leaf(route.route_type),
        "color" => leaf(route.color.clone()),
        // OTP 2 before 2.6 gives a route with a colour and no text colour one, as OTP 1
        // does (checked against 2.5.0); 2.9.0 does not.
        "textColor" => leaf(route.text_color.clone().or_else(|| {
            let derive = GQL_CONTEXT.with_borrow(|(_, before_2_6)| *before_2_6);
            otp1_text_color(route.color.as_deref().filter(|_| derive)?)
        })),
        "sortOrder" => leaf(route.sort_order),
        "bikesAllowed" => leaf("NO_INFORMATION"),
        "isReplacement" => leaf(route.route_type == 714),
        "replacementsExist" => leaf(false),
        "agency" => match route.agency {
            Some(a) => object(Obj::Agency(f, a)),
            None => leaf(JsonValue::Null),
        },
        "patterns" => GQL_CONTEXT.with_borrow(|(feeds, before_2_6)| {
            objects(
                otp2_pattern_order(feeds, f, r, *before_2_6)
                    .into_iter()
                    .map(|p| Obj::Pattern(f, p))
                    .collect(),
            )
        }),
        "stops" => objects(
            f.route_stops(r)
                .into_iter()
                .map(|s| Obj::Stop(f, s))
                .collect(),
        ),
        "trips" => objects(
            route
                .patterns
                .iter()
                .flat_map(|&p| f.patterns[p].trips.iter().map(move |&t| Obj::Trip(f, t)))
                .collect(),
        ),
        "alerts" => empty_list(),
        _ => not_simulated("Route", info),
    }
}

fn resolve_stop<'a>(f: &'a Feed, s: usize, field: &str, info: &'a ResolveInfo<'a>) -> Resolved<'a> {
    let stop = &f.stops[s];
    let gtfs_id = format!("{}:{}", f.id, stop.id);
    match field {
        "gtfsId" => leaf(gtfs_id),
        "id" => leaf(relay_id("Stop", &gtfs_id)),
        "name" => leaf(stop.name.clone().unwrap_or_default()),
        "code" => leaf(stop.code.clone()),
        "desc" => leaf(stop.desc.clone()),
        "lat" => leaf(stop.lat),
        "lon" => leaf(stop.lon),
        "zoneId" => leaf(stop.zone_id.clone()),
        "url" => leaf(stop.url.clone()),
        "platformCode" => leaf(stop.platform_code.clone()),
        "timezone" => leaf(stop.timezone.clone()),
        "wheelchairBoarding" => leaf(wheelchair(stop.wheelchair)),
        "locationType" => leaf(match stop.location_type {
            1 => "STATION",
            2 => "ENTRANCE",
            _ => "STOP",
        }),
        "parentStation" => {
            let parent = stop.parent.as_ref().and_then(|p| f.stop_by_id.get(p));
            match parent {
                Some(&p) => object(Obj::Stop(f, p)),
                None => leaf(JsonValue::Null),
            }
        }
        "patterns" => objects(
            (0..f.patterns.len())
                .filter(|&p| f.patterns[p].stops.contains(&s))
                .map(|p| Obj::Pattern(f, p))
                .collect(),
        ),
        "routes" => {
            let mut seen = HashSet::new();
            objects(
                f.patterns
                    .iter()
                    .filter(|p| p.stops.contains(&s))
                    .filter(|p| seen.insert(p.route))
                    .map(|p| Obj::Route(f, p.route))
                    .collect(),
            )
        }
        "alerts" => empty_list(),
        _ => not_simulated("Stop", info),
    }
}

// ---------------------------------------------------------------------------------------
// Feeds, read with gtfs-structures
// ---------------------------------------------------------------------------------------

struct Feed {
    id: String,
    agencies: Vec<Agency>,
    routes: Vec<RouteRec>,
    route_by_id: HashMap<String, usize>,
    stops: Vec<StopRec>,
    stop_by_id: HashMap<String, usize>,
    /// Only trips OTP keeps: known route and service, at least 2 stops.
    trips: Vec<TripRec>,
    trip_by_id: HashMap<String, usize>,
    patterns: Vec<PatternRec>,
    pattern_by_code: HashMap<String, usize>,
    /// feed_info.txt: publisher name and url.
    publisher: Option<(String, String)>,
}

struct Agency {
    id: String,
    name: String,
    url: String,
    timezone: String,
    lang: Option<String>,
    phone: Option<String>,
    fare_url: Option<String>,
}

struct RouteRec {
    id: String,
    agency: Option<usize>,
    short_name: Option<String>,
    long_name: Option<String>,
    desc: Option<String>,
    route_type: i32,
    url: Option<String>,
    /// As written in routes.txt (OTP does not normalise case).
    color: Option<String>,
    text_color: Option<String>,
    sort_order: Option<u32>,
    /// Sorted by code.
    patterns: Vec<usize>,
}

struct StopRec {
    id: String,
    code: Option<String>,
    name: Option<String>,
    desc: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    zone_id: Option<String>,
    url: Option<String>,
    location_type: i32,
    parent: Option<String>,
    platform_code: Option<String>,
    timezone: Option<String>,
    wheelchair: i32,
}

struct TripRec {
    id: String,
    route: usize,
    service_id: String,
    headsign: Option<String>,
    short_name: Option<String>,
    direction: Option<u8>,
    block_id: Option<String>,
    shape_id: Option<String>,
    wheelchair: i32,
    bikes: i32,
    pattern: usize,
    /// Rows of frequencies.txt for this trip (0: a scheduled trip).
    frequency_rows: usize,
}

struct PatternRec {
    /// `feed:route:dir:NN`, dir empty when trips.txt has no direction_id.
    code: String,
    /// OTP 2's code: the same, numbered in the order OTP 2 meets the trips ([`java_order`]
    /// of the trips' ids, every trips.txt row counted), not in trips.txt order.
    code2: String,
    /// When OTP 2 created it: the [`java_order`] rank of its first trip.
    created2: usize,
    route: usize,
    /// 0, 1, or -1 when unknown.
    direction: i32,
    stops: Vec<usize>,
    /// By departure from the first stop, as OTP's timetable sorts them.
    trips: Vec<usize>,
    /// The first trip's headsign.
    headsign: Option<String>,
    /// OTP 1's name (PatternShort.desc).
    name1: String,
    /// OTP 2's name (Pattern.name): the headsign is tried first.
    name2: String,
}

impl Feed {
    /// Distinct stops of a route's patterns, in the order first met.
    fn route_stops(&self, r: usize) -> Vec<usize> {
        let mut seen = HashSet::new();
        self.routes[r]
            .patterns
            .iter()
            .flat_map(|&p| self.patterns[p].stops.iter().copied())
            .filter(|s| seen.insert(*s))
            .collect()
    }
}

fn fixture_feed(name: &str) -> Arc<Feed> {
    type Cell = Arc<OnceLock<Arc<Feed>>>;
    static CACHE: LazyLock<Mutex<HashMap<String, Cell>>> = LazyLock::new(Default::default);
    let cell = CACHE
        .lock()
        .unwrap()
        .entry(name.to_owned())
        .or_default()
        .clone();
    cell.get_or_init(|| {
        Arc::new(
            load_feed(name, &fixture_zip(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}")),
        )
    })
    .clone()
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

fn route_type_code(t: gtfs_structures::RouteType) -> i32 {
    use gtfs_structures::RouteType::*;
    match t {
        Tramway => 0,
        Subway => 1,
        Rail => 2,
        Bus => 3,
        Ferry => 4,
        CableCar => 5,
        Gondola => 6,
        Funicular => 7,
        Extended(e) => e as i32,
        Other(i) => i32::from(i),
    }
}

fn pick_drop(t: gtfs_structures::PickupDropOffType) -> i16 {
    use gtfs_structures::PickupDropOffType::*;
    match t {
        Regular => 0,
        NotAvailable => 1,
        ArrangeByPhone => 2,
        CoordinateWithDriver => 3,
        Unknown(i) => i,
    }
}

/// One stop_times.txt row, as much as patterns need.
struct StopTimeRow {
    trip_id: String,
    stop_id: String,
    sequence: u32,
    pickup: i16,
    drop_off: i16,
    departure: Option<u32>,
}

fn zip_member(zip: &[u8], file: &str) -> Option<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).ok()?;
    let name = archive
        .file_names()
        .find(|n| n.rsplit('/').next() == Some(file))?
        .to_owned();
    let mut out = Vec::new();
    archive.by_name(&name).ok()?.read_to_end(&mut out).ok()?;
    Some(out)
}

/// Reads a GTFS file with the csv crate: flexible rows, trimmed, BOM removed; rows as
/// header → value maps.
fn csv_rows(bytes: &[u8]) -> Vec<HashMap<String, String>> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_owned).collect(),
        Err(_) => return Vec::new(),
    };
    reader
        .records()
        .filter_map(Result::ok)
        .map(|rec| {
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.clone(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn parse_gtfs_time(s: &str) -> Option<u32> {
    let mut it = s.trim().split(':').map(|p| p.parse::<u32>().ok());
    let (h, m, sec) = (it.next()??, it.next()??, it.next()??);
    Some(h * 3600 + m * 60 + sec)
}

/// Parses a GTFS zip into the simulator's model of what OTP builds from it.
fn load_feed(feed_id: &str, zip: &[u8]) -> Result<Feed, String> {
    let raw = gtfs_structures::RawGtfs::from_reader(Cursor::new(zip)).map_err(|e| e.to_string())?;
    let err = |what: &str, e: gtfs_structures::Error| format!("{feed_id}: {what}: {e}");

    let agencies: Vec<Agency> = raw
        .agencies
        .map_err(|e| err("agency.txt", e))?
        .into_iter()
        .map(|a| Agency {
            // onebusaway-gtfs (OTP's reader) falls back to the agency name without an id.
            id: non_empty(a.id).unwrap_or_else(|| a.name.clone()),
            name: a.name,
            url: a.url,
            timezone: a.timezone,
            lang: non_empty(a.lang),
            phone: non_empty(a.phone),
            fare_url: non_empty(a.fare_url),
        })
        .collect();

    // Colours as written: gtfs-structures parses them into RGB values.
    let raw_colors: HashMap<String, (Option<String>, Option<String>)> =
        zip_member(zip, "routes.txt")
            .map(|b| csv_rows(&b))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mut row| {
                let id = row.remove("route_id")?;
                let c = non_empty(row.remove("route_color"));
                let t = non_empty(row.remove("route_text_color"));
                Some((id, (c, t)))
            })
            .collect();

    let mut routes = Vec::new();
    for r in raw.routes.map_err(|e| err("routes.txt", e))? {
        let agency = match non_empty(r.agency_id.clone()) {
            Some(id) => agencies.iter().position(|a| a.id == id),
            None if agencies.len() == 1 => Some(0),
            None => None,
        };
        let (color, text_color) = raw_colors.get(&r.id).cloned().unwrap_or_default();
        routes.push(RouteRec {
            agency,
            short_name: non_empty(r.short_name),
            long_name: non_empty(r.long_name),
            desc: non_empty(r.desc),
            route_type: route_type_code(r.route_type),
            url: non_empty(r.url),
            color,
            text_color,
            sort_order: r.order,
            patterns: Vec::new(),
            id: r.id,
        });
    }
    let route_by_id: HashMap<String, usize> = routes
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();

    let stops: Vec<StopRec> = raw
        .stops
        .map_err(|e| err("stops.txt", e))?
        .into_iter()
        .map(|s| {
            use gtfs_structures::LocationType::*;
            StopRec {
                code: non_empty(s.code),
                name: non_empty(s.name),
                desc: non_empty(s.description),
                lat: s.latitude,
                lon: s.longitude,
                zone_id: non_empty(s.zone_id),
                url: non_empty(s.url),
                location_type: match s.location_type {
                    StopPoint => 0,
                    StopArea => 1,
                    StationEntrance => 2,
                    GenericNode => 3,
                    BoardingArea => 4,
                    Unknown(i) => i32::from(i),
                },
                parent: non_empty(s.parent_station),
                platform_code: non_empty(s.platform_code),
                timezone: non_empty(s.timezone),
                wheelchair: match s.wheelchair_boarding {
                    gtfs_structures::Availability::Available => 1,
                    gtfs_structures::Availability::NotAvailable => 2,
                    _ => 0,
                },
                id: s.id,
            }
        })
        .collect();
    let stop_by_id: HashMap<String, usize> = stops
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();

    // stop_times.txt: gtfs-structures, or the csv crate when its rows are too short for it
    // (sample-feed).
    let stop_times: Vec<StopTimeRow> = match raw.stop_times {
        Ok(rows) => rows
            .into_iter()
            .map(|st| StopTimeRow {
                trip_id: st.trip_id,
                stop_id: st.stop_id,
                sequence: st.stop_sequence,
                pickup: pick_drop(st.pickup_type),
                drop_off: pick_drop(st.drop_off_type),
                departure: st.departure_time.or(st.arrival_time),
            })
            .collect(),
        Err(e) => {
            let bytes =
                zip_member(zip, "stop_times.txt").ok_or_else(|| err("stop_times.txt", e))?;
            csv_rows(&bytes)
                .into_iter()
                .filter_map(|mut row| {
                    let num =
                        |v: Option<String>| v.and_then(|v| v.parse::<i16>().ok()).unwrap_or(0);
                    let departure = row
                        .get("departure_time")
                        .and_then(|t| parse_gtfs_time(t))
                        .or_else(|| row.get("arrival_time").and_then(|t| parse_gtfs_time(t)));
                    Some(StopTimeRow {
                        trip_id: row.remove("trip_id")?,
                        stop_id: row.remove("stop_id")?,
                        sequence: row.remove("stop_sequence")?.parse().ok()?,
                        pickup: num(row.remove("pickup_type")),
                        drop_off: num(row.remove("drop_off_type")),
                        departure,
                    })
                })
                .collect()
        }
    };
    let mut times_by_trip: HashMap<String, Vec<StopTimeRow>> = HashMap::new();
    for st in stop_times {
        times_by_trip
            .entry(st.trip_id.clone())
            .or_default()
            .push(st);
    }

    let mut services: HashSet<String> = HashSet::new();
    if let Some(Ok(cal)) = &raw.calendar {
        services.extend(cal.iter().map(|c| c.id.clone()));
    }
    if let Some(Ok(dates)) = &raw.calendar_dates {
        services.extend(dates.iter().map(|d| d.service_id.clone()));
    }

    let mut frequency_rows: HashMap<String, usize> = HashMap::new();
    for mut row in zip_member(zip, "frequencies.txt")
        .map(|b| csv_rows(&b))
        .unwrap_or_default()
    {
        if let Some(trip) = row.remove("trip_id") {
            *frequency_rows.entry(trip).or_default() += 1;
        }
    }

    // Trips in trips.txt order, grouped into patterns as GenerateTripPatternsOperation does.
    type PatternKey = (usize, Option<u8>, Vec<(usize, i16, i16)>);
    let mut trips = Vec::new();
    let mut first_departure = Vec::new();
    let mut patterns: Vec<PatternRec> = Vec::new();
    let mut pattern_by_key: HashMap<PatternKey, usize> = HashMap::new();
    let mut counters: HashMap<(usize, Option<u8>), u32> = HashMap::new();
    let raw_trips = raw.trips.map_err(|e| err("trips.txt", e))?;
    // OTP 2 builds patterns from a HashMap of every trip by id.
    let raw_trip_ids: Vec<String> = raw_trips.iter().map(|t| t.id.clone()).collect();
    let rank2 = java_order(feed_id, &raw_trip_ids);
    for (raw_index, t) in raw_trips.into_iter().enumerate() {
        let Some(&route) = route_by_id.get(&t.route_id) else {
            continue;
        };
        if !services.contains(&t.service_id) {
            continue; // TripUndefinedService
        }
        let Some(mut times) = times_by_trip.remove(&t.id) else {
            continue;
        };
        times.sort_by_key(|st| st.sequence);
        if times.len() < 2 || times.iter().any(|st| !stop_by_id.contains_key(&st.stop_id)) {
            continue; // TripDegenerate, or a stop OTP would not know
        }
        let direction = t.direction_id.map(|d| match d {
            gtfs_structures::DirectionType::Outbound => 0u8,
            gtfs_structures::DirectionType::Inbound => 1u8,
        });
        let key: PatternKey = (
            route,
            direction,
            times
                .iter()
                .map(|st| (stop_by_id[&st.stop_id], st.pickup, st.drop_off))
                .collect(),
        );
        let trip_index = trips.len();
        let pattern = *pattern_by_key.entry(key).or_insert_with_key(|key| {
            let n = counters.entry((route, direction)).or_insert(0);
            *n += 1;
            let dir = direction.map(|d| d.to_string()).unwrap_or_default();
            patterns.push(PatternRec {
                code: format!("{feed_id}:{}:{dir}:{:02}", routes[route].id, *n),
                code2: String::new(),
                created2: usize::MAX,
                route,
                direction: direction.map_or(-1, i32::from),
                stops: key.2.iter().map(|s| s.0).collect(),
                trips: Vec::new(),
                headsign: None,
                name1: String::new(),
                name2: String::new(),
            });
            patterns.len() - 1
        });
        patterns[pattern].trips.push(trip_index);
        patterns[pattern].created2 = patterns[pattern].created2.min(rank2[raw_index]);
        first_departure.push(times[0].departure.unwrap_or(u32::MAX));
        let wheelchair = match t.wheelchair_accessible {
            gtfs_structures::Availability::Available => 1,
            gtfs_structures::Availability::NotAvailable => 2,
            _ => 0,
        };
        let bikes = match t.bikes_allowed {
            gtfs_structures::BikesAllowedType::AtLeastOneBike => 1,
            gtfs_structures::BikesAllowedType::NoBikesAllowed => 2,
            _ => 0,
        };
        trips.push(TripRec {
            frequency_rows: frequency_rows.get(&t.id).copied().unwrap_or(0),
            id: t.id,
            route,
            service_id: t.service_id,
            headsign: non_empty(t.trip_headsign),
            short_name: non_empty(t.trip_short_name),
            direction,
            block_id: non_empty(t.block_id),
            shape_id: non_empty(t.shape_id),
            wheelchair,
            bikes,
            pattern,
        });
    }
    for p in &mut patterns {
        p.trips.sort_by_key(|&t| first_departure[t]);
        p.headsign = trips[p.trips[0]].headsign.clone();
    }
    for (i, p) in patterns.iter().enumerate() {
        routes[p.route].patterns.push(i);
    }
    // OTP 2 numbers a route and direction's patterns as it creates them.
    let mut by_creation: Vec<usize> = (0..patterns.len()).collect();
    by_creation.sort_by_key(|&p| patterns[p].created2);
    let mut counters2: HashMap<(usize, i32), u32> = HashMap::new();
    for p in by_creation {
        let pat = &mut patterns[p];
        let n = counters2.entry((pat.route, pat.direction)).or_insert(0);
        *n += 1;
        let (prefix, _) = pat.code.rsplit_once(':').expect("feed:route:dir:NN");
        pat.code2 = format!("{prefix}:{:02}", *n);
    }
    for r in &mut routes {
        r.patterns
            .sort_by(|&a, &b| patterns[a].code.cmp(&patterns[b].code));
    }
    name_patterns(feed_id, &routes, &stops, &trips, &mut patterns);

    let trip_by_id = trips
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let pattern_by_code = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| (p.code.clone(), i))
        .collect();
    let publisher = match raw.feed_info {
        Some(Ok(info)) => info.into_iter().next().map(|i| (i.name, i.url)),
        _ => None,
    };
    Ok(Feed {
        id: feed_id.to_owned(),
        agencies,
        routes,
        route_by_id,
        stops,
        stop_by_id,
        trips,
        trip_by_id,
        patterns,
        pattern_by_code,
        publisher,
    })
}

/// OTP 1's `TripPattern.generateUniqueNames` (route names made unique first) and OTP 2's
/// `TripPatternNamer` (a unique headsign is tried first).
fn name_patterns(
    feed_id: &str,
    routes: &[RouteRec],
    stops: &[StopRec],
    trips: &[TripRec],
    patterns: &mut [PatternRec],
) {
    let stop_name = |s: usize| {
        format!(
            "{} ({feed_id}:{})",
            stops[s].name.as_deref().unwrap_or("null"),
            stops[s].id
        )
    };
    let route_name = |r: &RouteRec| {
        r.short_name
            .clone()
            .or_else(|| r.long_name.clone())
            .unwrap_or_else(|| "null".into())
    };
    let mut used = HashSet::new();
    for route in routes.iter().filter(|r| !r.patterns.is_empty()) {
        let base = route_name(route);
        let mut unique1 = base.clone();
        let mut i = 2;
        while used.contains(&unique1) {
            unique1 = format!("{base} {i}");
            i += 1;
        }
        used.insert(unique1.clone());
        for (with_headsign, name) in [(false, unique1), (true, base)] {
            let names = name_route_patterns(
                &name,
                &route.patterns,
                patterns,
                trips,
                with_headsign,
                &stop_name,
            );
            for (&p, n) in route.patterns.iter().zip(names) {
                if with_headsign {
                    patterns[p].name2 = n;
                } else {
                    patterns[p].name1 = n;
                }
            }
        }
    }
}

fn name_route_patterns(
    route_name: &str,
    ids: &[usize],
    patterns: &[PatternRec],
    trips: &[TripRec],
    with_headsign: bool,
    stop_name: &dyn Fn(usize) -> String,
) -> Vec<String> {
    if ids.len() == 1 {
        return vec![route_name.to_owned()];
    }
    let first = |p: usize| patterns[p].stops[0];
    let last = |p: usize| *patterns[p].stops.last().unwrap();
    let count = |f: &dyn Fn(usize) -> bool| ids.iter().filter(|&&p| f(p)).count();
    ids.iter()
        .map(|&p| {
            let pat = &patterns[p];
            let mut name = route_name.to_owned();
            if with_headsign
                && let Some(h) = &pat.headsign
                && count(&|q| patterns[q].headsign.as_ref() == Some(h)) == 1
            {
                return format!("{name} {h}");
            }
            let (start, end) = (first(p), last(p));
            name.push_str(&format!(" to {}", stop_name(end)));
            if count(&|q| last(q) == end) == 1 {
                return name;
            }
            name.push_str(&format!(" from {}", stop_name(start)));
            if count(&|q| first(q) == start) == 1 {
                return name;
            }
            let remaining: Vec<usize> = ids
                .iter()
                .copied()
                .filter(|&q| first(q) == start && last(q) == end)
                .collect();
            if remaining.len() == 1 {
                return name;
            }
            for &via in &pat.stops {
                if via == start || via == end {
                    continue;
                }
                let hits = remaining
                    .iter()
                    .filter(|&&q| patterns[q].stops.contains(&via))
                    .count();
                if hits == 1 {
                    return format!("{name} via {}", stop_name(via));
                }
            }
            if remaining.len() == 2 {
                format!("{name} express")
            } else {
                let trip = &trips[pat.trips[0]];
                let feed_id = pat.code.split(':').next().unwrap_or("");
                // OTP 1 writes the trip's id with `FeedScopedId.toString`: `feed_trip`.
                let sep = if with_headsign { ':' } else { '_' };
                format!("{name} like trip {feed_id}{sep}{}", trip.id)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_otp() {
        // The Relay id of pattern 4:101:0:01 in shared/fixtures/otp/2.x/mock-route-otp2.json.
        assert_eq!(
            super::base64(b"Pattern:4:101:0:01"),
            "UGF0dGVybjo0OjEwMTowOjAx"
        );
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"a"), "YQ==");
    }
}
