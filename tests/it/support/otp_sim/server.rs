//! The server: its state, the accept loop, connections and keep-alive like Grizzly.

use super::*;

// ---------------------------------------------------------------------------------------
// Server state, accept loop, connections
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub(super) fault: Option<Fault>,
    pub(super) idle_close: Option<Duration>,
    pub(super) max_requests: Option<u32>,
    /// Validate GraphQL against the schema of OTP before 2.6 (no `Route.sortOrder`).
    pub(super) before_2_6: bool,
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
pub(super) struct Data {
    pub(super) feeds: Vec<Arc<Feed>>,
    pub(super) zips: HashMap<String, ZipEntry>,
}

pub(super) struct ZipEntry {
    pub(super) bytes: Bytes,
    pub(super) etag: String,
    pub(super) modified: jiff::Timestamp,
}

impl ZipEntry {
    pub(super) fn new(bytes: Bytes, previous: Option<jiff::Timestamp>) -> ZipEntry {
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

pub(super) struct AcceptTask {
    pub(super) stop: oneshot::Sender<()>,
    pub(super) handle: JoinHandle<()>,
}

/// How many requests' headers the simulator keeps (the oldest are forgotten).
pub const RECORDED_REQUESTS: usize = 1000;

pub(super) struct Inner {
    pub(super) addr: SocketAddr,
    pub(super) settings: watch::Sender<Settings>,
    pub(super) data: RwLock<Data>,
    pub(super) connections: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) by_key: Mutex<HashMap<String, u64>>,
    /// The last [`RECORDED_REQUESTS`] requests' keys and headers, oldest first.
    pub(super) recorded: Mutex<std::collections::VecDeque<(String, HeaderMap)>>,
    pub(super) live: Mutex<HashMap<u64, Arc<ConnCtl>>>,
    pub(super) next_conn: AtomicU64,
    pub(super) accept: Mutex<Option<AcceptTask>>,
}

/// Stops everything when the last `OtpSim` clone goes.
pub(super) struct Lifetime(pub(super) Arc<Inner>);

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

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Inner {
    pub(super) fn spawn_accept(self: &Arc<Self>, listener: TcpListener) {
        let (stop, stop_rx) = oneshot::channel();
        let handle = tokio::spawn(accept_loop(self.clone(), listener, stop_rx));
        *self.accept.lock().unwrap() = Some(AcceptTask { stop, handle });
    }

    /// Keeps `key` (as [`Inner::count`] counts it) and the request's headers.
    pub(super) fn record(&self, key: &str, headers: &HeaderMap) {
        let mut recorded = self.recorded.lock().unwrap();
        if recorded.len() == RECORDED_REQUESTS {
            recorded.pop_front();
        }
        recorded.push_back((key.to_owned(), headers.clone()));
    }

    pub(super) fn count(&self, key: &str) {
        *self
            .by_key
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_insert(0) += 1;
    }
}

pub(super) async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
) {
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
pub(super) struct ConnCtl {
    pub(super) id: u64,
    /// Requests received on this connection.
    pub(super) served: AtomicU64,
    /// Requests whose response has not been fully sent.
    pub(super) active: AtomicUsize,
    /// When the connection last became idle (accepted, or a response finished).
    pub(super) idle_since: Mutex<Instant>,
    /// Wakes the connection task to recompute its idle deadline.
    pub(super) activity: Notify,
    /// Asks the connection task to drop the connection now.
    pub(super) kill: Notify,
    pub(super) abort: OnceLock<AbortHandle>,
}

impl ConnCtl {
    pub(super) fn new(id: u64) -> ConnCtl {
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

    pub(super) fn abort(&self) {
        match self.abort.get() {
            Some(a) => a.abort(),
            None => self.kill.notify_one(),
        }
    }

    pub(super) fn idle_deadline(&self, idle: Option<Duration>) -> Option<Instant> {
        let d = idle?;
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap() + d)
    }
}

/// Marks a request in progress from its arrival until its response body is dropped (sent,
/// or abandoned).
pub(super) struct ActiveGuard(pub(super) Arc<ConnCtl>);

impl ActiveGuard {
    pub(super) fn new(ctl: Arc<ConnCtl>) -> ActiveGuard {
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
pub(super) struct LiveGuard(pub(super) Arc<Inner>, pub(super) u64);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.lock().unwrap().remove(&self.1);
    }
}

pub(super) async fn serve_connection(inner: Arc<Inner>, stream: TcpStream, ctl: Arc<ConnCtl>) {
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
