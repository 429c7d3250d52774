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

mod feeds;
mod otp1;
mod otp2;
mod requests;
mod server;
mod zips;

use feeds::*;
use otp1::*;
use otp2::*;
use requests::*;
pub use server::OTP_MAX_REQUESTS_PER_CONNECTION;
use server::*;
use zips::*;

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
            recorded: Mutex::new(Default::default()),
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

    /// Waits until `key` has been asked for ([`OtpSim::requests_for`] above 0), for at
    /// most `within`: how long that took, or `None` if it was not.
    pub async fn first_request_for(
        &self,
        key: &str,
        within: std::time::Duration,
    ) -> Option<std::time::Duration> {
        let started = std::time::Instant::now();
        while self.requests_for(key) == 0 {
            if started.elapsed() >= within {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Some(started.elapsed())
    }

    /// Sets every counter (connections, requests, by key) back to 0, and forgets the
    /// recorded requests.
    pub fn reset_counts(&self) {
        self.inner.connections.store(0, Ordering::SeqCst);
        self.inner.requests.store(0, Ordering::SeqCst);
        self.inner.by_key.lock().unwrap().clear();
        self.inner.recorded.lock().unwrap().clear();
    }

    /// The headers of the requests received (the last [`RECORDED_REQUESTS`]), oldest
    /// first, each with its key as [`OtpSim::requests_for`] counts it (GraphQL operation
    /// name, or path).
    pub fn received(&self) -> Vec<(String, HeaderMap)> {
        self.inner
            .recorded
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
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
