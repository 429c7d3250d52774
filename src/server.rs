//! The HTTP server: worker threads, listener tuning and graceful shutdown.
//!
//! Workers, as in nginx: `http_workers` threads (by default one per available core), each
//! running its own single-threaded tokio runtime and accepting on its own listening
//! socket, all bound to the same address with SO_REUSEPORT, so the kernel spreads the
//! incoming connections over them. A connection, and every request on it, is then served
//! start to finish on one thread: no task is stolen by or handed to another thread, no
//! wake-up crosses threads, and the only state the workers share is the application's
//! own (the route cache, the metrics). Measured on a cache hit against one multi-threaded
//! runtime (BENCHMARKS.md, "One runtime per core"): 1-4 % less CPU on a quiet machine,
//! more requests/s under load, a worse p99 in one of two loaded runs. The
//! application's background work (refreshes, the database pool's housekeeping, the
//! listeners) stays on the runtime that calls [`serve`]. Something a handler spawns
//! (a cache entry's background revalidation) runs on that handler's worker.
//!
//! [`bind`] binds every socket before anything is served, so a bad or busy address fails
//! at start-up; for port 0, the first socket's port is the others' too. An address another
//! process listens on is refused, even one that set SO_REUSEPORT too: a probe socket
//! without it is bound first. Every listener sets SO_REUSEADDR (a restart does not wait
//! for TIME_WAIT sockets) and TCP_NODELAY on every accepted socket (small responses leave
//! at once instead of waiting for Nagle's algorithm).
//!
//! Shutdown, when the `shutdown` future given to [`serve`] resolves (the first SIGINT or
//! SIGTERM in `serve`, see [`shutdown_signals`]): `/readyz` turns 503 at once; after
//! `shutdown_drain` every worker closes its listener and its idle connections; requests
//! in flight finish, for at most `shutdown_timeout`; then [`serve`] returns. When the
//! `abort` future resolves first (a second signal: the operator means it), [`serve`]
//! returns at once. Either way [`Drained::abandoned`] counts the requests still in
//! flight, on every worker, that were given up on, and `gtfs-fetch serve` exits 1 when
//! there were any. A request counts as in flight until its handler has produced the
//! response head.
//!
//! The workers' runtimes outlive [`serve`]: they stop when the [`Served`] it returns is
//! dropped (or [`Served::stop`]ped). Drop it after the application has stopped: database
//! and OTP connections opened by a handler belong to its worker's runtime and go on
//! serving the application's background work until then.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::state::AppState;

/// The longest a worker's runtime waits for its blocking tasks (a cache entry's
/// compression) when it stops.
const WORKER_STOP_WAIT: Duration = Duration::from_millis(500);

/// How many HTTP workers `config` asks for: `http_workers`, or with 0 one per available
/// core (as the process's CPU affinity and cgroup quota allow).
pub fn http_workers(config: &Config) -> usize {
    match config.http_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    }
}

/// The bound listening sockets, one per worker, not yet serving.
#[derive(Debug)]
pub struct Listeners {
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

impl Listeners {
    /// The address they listen on (with the port chosen when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many there are: one per worker.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Never: [`bind`] binds at least one.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

/// Binds `workers` (at least one) listening sockets to `addr` with SO_REUSEADDR and
/// TCP_NODELAY (Linux passes the latter on to accepted sockets; each worker sets it on
/// each one as well), and with SO_REUSEPORT when there are several. Port 0: the first
/// socket's port is the others' too. Call it within a tokio runtime.
pub fn bind(addr: SocketAddr, workers: usize) -> Result<Listeners> {
    let workers = workers.max(1);
    let socket = || -> Result<TcpSocket> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .context("cannot create the listening socket")?;
        socket
            .set_reuseaddr(true)
            .context("cannot set SO_REUSEADDR")?;
        Ok(socket)
    };
    let listen = |socket: TcpSocket, at: SocketAddr| -> Result<std::net::TcpListener> {
        socket.set_nodelay(true).context("cannot set TCP_NODELAY")?;
        socket
            .bind(at)
            .with_context(|| format!("cannot listen on {addr}"))?;
        let listener = socket
            .listen(1024)
            .with_context(|| format!("cannot listen on {addr}"))?;
        listener
            .into_std()
            .with_context(|| format!("cannot listen on {addr}"))
    };
    if workers == 1 {
        let listener = listen(socket()?, addr)?;
        let addr = listener.local_addr()?;
        return Ok(Listeners {
            sockets: vec![listener],
            addr,
        });
    }
    // The probe, without SO_REUSEPORT, cannot bind where anything listens, whatever that
    // set; bound but not listening, it lets the workers' sockets (SO_REUSEADDR) bind
    // beside it, and it reserves port 0's choice for them.
    let probe = socket()?;
    probe
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
    let at = probe.local_addr()?;
    let sockets = (0..workers)
        .map(|_| {
            let socket = socket()?;
            socket
                .set_reuseport(true)
                .context("cannot set SO_REUSEPORT")?;
            listen(socket, at)
        })
        .collect::<Result<Vec<_>>>()?;
    drop(probe);
    Ok(Listeners { sockets, addr: at })
}

/// How the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Requests still in flight when the server stopped waiting for them (a second
    /// signal, or `shutdown_timeout`); 0 after a clean drain.
    pub abandoned: usize,
}

/// What [`serve`] returns: how it stopped, and the workers' runtimes, still up until
/// this is dropped or [`Served::stop`]ped (module docs).
#[derive(Debug)]
pub struct Served {
    pub drained: Drained,
    workers: Workers,
}

impl Served {
    /// Stops the workers' runtimes (whatever still runs there is dropped) and waits for
    /// their threads.
    pub fn stop(self) {
        let Served { workers, .. } = self;
        drop(workers);
    }
}

/// The worker threads, told to stop and joined when dropped.
#[derive(Debug)]
struct Workers {
    phase: watch::Sender<Phase>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Stop);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What the workers are told to do, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serve,
    /// Close the listener and the idle connections; finish the requests in flight.
    Close,
    /// Stop the runtime.
    Stop,
}

/// Resolves once `phase` is at least `at` (or its sender is gone).
async fn reached(mut phase: watch::Receiver<Phase>, at: Phase) {
    let _ = phase.wait_for(|now| *now >= at).await;
}

/// Requests in flight on one worker, counted by a middleware around every request (one
/// counter per worker, so that no cache line is shared between them).
#[derive(Debug, Clone, Default)]
struct InFlight(Arc<AtomicUsize>);

/// One request in flight, for as long as it lives (a dropped request counts down too).
struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

async fn count_in_flight(State(in_flight): State<InFlight>, req: Request, next: Next) -> Response {
    let _guard = in_flight.enter();
    next.run(req).await
}

/// Starts one worker thread serving `router` on `listener`; `done` gets the server's
/// result once it has drained (or failed).
fn spawn_worker(
    index: usize,
    listener: std::net::TcpListener,
    router: Router,
    phase: watch::Receiver<Phase>,
    done: oneshot::Sender<Result<()>>,
) -> Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("http-worker-{index}"))
        .build()
        .context("cannot start an HTTP worker's runtime")?;
    std::thread::Builder::new()
        .name(format!("http-worker-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                let served = async {
                    let listener = TcpListener::from_std(listener)
                        .context("cannot register the listening socket")?
                        .tap_io(|tcp| {
                            if let Err(e) = tcp.set_nodelay(true) {
                                tracing::warn!("cannot set TCP_NODELAY on an accepted socket: {e}");
                            }
                        });
                    axum::serve(
                        listener,
                        router.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(reached(phase.clone(), Phase::Close))
                    .await
                    .context("the HTTP server failed")
                };
                tokio::select! {
                    result = served => {
                        let _ = done.send(result);
                    }
                    // Given up on: the connections left go on until the runtime stops.
                    () = reached(phase.clone(), Phase::Stop) => return,
                }
                reached(phase, Phase::Stop).await;
            });
            runtime.shutdown_timeout(WORKER_STOP_WAIT);
        })
        .context("cannot start an HTTP worker thread")
}

/// Serves `router` on every listener, each on its own worker (module docs), until
/// `shutdown` resolves, then drains as described in the module docs; `abort` resolving
/// (after `shutdown`) stops the drain at once. Pass `std::future::pending()` as `abort`
/// to always drain. Drop the [`Served`] it returns once the application has stopped.
pub async fn serve(
    listeners: Listeners,
    router: Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    abort: impl Future<Output = ()> + Send + 'static,
) -> Result<Served> {
    let drain = state.config.shutdown_drain;
    let deadline = state.config.shutdown_timeout;
    let (phase, _) = watch::channel(Phase::Serve);
    let mut workers = Workers {
        phase,
        threads: Vec::with_capacity(listeners.len()),
    };
    let mut in_flight = Vec::with_capacity(listeners.len());
    let mut done = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.sockets.into_iter().enumerate() {
        let counter = InFlight::default();
        let router = router.clone().layer(middleware::from_fn_with_state(
            counter.clone(),
            count_in_flight,
        ));
        let (done_tx, done_rx) = oneshot::channel();
        let phase = workers.phase.subscribe();
        // On an error the workers already started are stopped as `workers` drops.
        workers
            .threads
            .push(spawn_worker(index, listener, router, phase, done_tx)?);
        in_flight.push(counter);
        done.push(done_rx);
    }
    let in_flight = move || in_flight.iter().map(InFlight::get).sum::<usize>();
    let phase = workers.phase.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!(
            drain_s = drain.as_secs_f64(),
            "shutting down: /readyz now answers 503 (a second signal exits at once)"
        );
        state.begin_shutdown();
        tokio::time::sleep(drain).await;
        tracing::info!("closing the listener; waiting for requests in flight");
        phase.send_replace(Phase::Close);
    };
    let servers = async move {
        for done in done {
            match done.await {
                Ok(result) => result?,
                Err(_) => anyhow::bail!("an HTTP worker stopped unexpectedly"),
            }
        }
        Ok(())
    };
    let overdue = {
        let phase = workers.phase.subscribe();
        async move {
            reached(phase, Phase::Close).await;
            tokio::time::sleep(deadline).await;
        }
    };
    let abandoned = tokio::select! {
        result = servers => {
            result?;
            0
        }
        () = async { signal.await; std::future::pending::<()>().await } => unreachable!(),
        () = overdue => {
            let abandoned = in_flight();
            tracing::warn!(
                abandoned,
                timeout_s = deadline.as_secs_f64(),
                "requests still in flight after shutdown_timeout: exiting without them"
            );
            abandoned
        }
        () = abort => {
            let abandoned = in_flight();
            if abandoned > 0 {
                tracing::warn!(abandoned, "second signal: exiting without the requests in flight");
            } else {
                tracing::info!("second signal: exiting at once (no request in flight)");
            }
            abandoned
        }
    };
    Ok(Served {
        drained: Drained { abandoned },
        workers,
    })
}
/// The first and the second SIGINT or SIGTERM, as two futures: `serve` drains on the
/// first and gives up on the second. The handlers are installed before this returns, so
/// no signal is lost (nor does one kill the process) once it has.
pub fn shutdown_signals() -> Result<(
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
)> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    let (count_tx, count_rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = term.recv() => {}
                Some(()) = int.recv() => {}
                else => return,
            }
            count_tx.send_modify(|n| *n += 1);
        }
    });
    let nth = move |n: u32| {
        let mut rx = count_rx.clone();
        async move {
            if rx.wait_for(|count| *count >= n).await.is_err() {
                // The listener task is gone (the runtime is stopping): no more signals.
                std::future::pending::<()>().await;
            }
        }
    };
    Ok((nth(1), nth(2)))
}
