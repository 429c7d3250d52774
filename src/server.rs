//! The HTTP server: listener tuning and graceful shutdown.
//!
//! The listener sets SO_REUSEADDR (a restart does not wait for TIME_WAIT sockets) and
//! TCP_NODELAY on every accepted socket (small responses leave at once instead of waiting
//! for Nagle's algorithm).
//!
//! Every connection runs one front service ([`Front`]): it counts the request in flight,
//! answers a fresh route detail cache hit itself (the hottest request there is: see
//! [`crate::api::routes::detail_hit`], which gives the router's answer byte for byte),
//! and hands everything else to the router with the client's address (`ConnectInfo`).
//! Measured for issue 13: the router, the extractors and the two middlewares cost more
//! than half of a 304 hit's instructions (BENCHMARKS.md, "The floor of the stack").
//!
//! One listener, served by the process's multi-threaded runtime. nginx's model (a
//! current-thread runtime per core, each with its own `SO_REUSEPORT` listener) was built
//! and measured for issue 13 and did not pay: 1-4 % less CPU per cache hit, and a worse
//! p99 under load, since a descheduled worker's connections cannot be stolen
//! (BENCHMARKS.md, "One runtime per core, tried"; commit be27f27 has it).
//!
//! Shutdown, when the `shutdown` future given to [`serve`] resolves (the first SIGINT or
//! SIGTERM in `serve`, see [`shutdown_signals`]): `/readyz` turns 503 at once; after
//! `shutdown_drain` the listener closes and idle connections are closed; requests in
//! flight finish, for at most `shutdown_timeout`; then [`serve`] returns. When the
//! `abort` future resolves first (a second signal: the operator means it), [`serve`]
//! returns at once. Either way [`Drained::abandoned`] counts the requests still in
//! flight that were given up on, and `gtfs-fetch serve` exits 1 when there were any.
//! A request counts as in flight until its handler has produced the response head.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::convert::Infallible;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener, ListenerExt};
use futures::future::BoxFuture;
use tokio::net::{TcpListener, TcpSocket};
use tower::{Service, ServiceExt};

use crate::api::layers::Observation;
use crate::api::routes::{DETAIL_ROUTE, detail_hit};
use crate::state::AppState;

/// Binds `addr` with SO_REUSEADDR and TCP_NODELAY (Linux passes the latter on to accepted
/// sockets; [`serve`] sets it on each one as well).
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("cannot create the listening socket")?;
    socket
        .set_reuseaddr(true)
        .context("cannot set SO_REUSEADDR")?;
    socket.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
    socket
        .listen(1024)
        .with_context(|| format!("cannot listen on {addr}"))
}

/// How the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Requests still in flight when the server stopped waiting for them (a second
    /// signal, or `shutdown_timeout`); 0 after a clean drain.
    pub abandoned: usize,
}

/// Requests in flight, counted by [`Front`] around every request.
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

/// The service each connection runs (module docs); one per connection, cheap to clone.
#[derive(Clone)]
struct Front {
    shared: Arc<Shared>,
    remote: SocketAddr,
}

/// What every connection's [`Front`] shares.
struct Shared {
    router: Router,
    state: AppState,
    in_flight: InFlight,
    /// Whether cache hits are answered before the router: not when CORS is configured,
    /// since its layer, inside the router, must see every answer.
    hits: bool,
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (shared, remote) = (self.shared.clone(), self.remote);
        Box::pin(async move {
            let _guard = shared.in_flight.enter();
            let (mut parts, body) = req.into_parts();
            if shared.hits {
                let start = Instant::now();
                if let Some((mut response, timing)) = detail_hit(&shared.state, &parts).await {
                    Observation::begin(&parts, DETAIL_ROUTE, start).finish_timed(
                        &shared.state,
                        &mut response,
                        &timing,
                    );
                    return Ok(response);
                }
            }
            parts.extensions.insert(ConnectInfo(remote));
            shared
                .router
                .clone()
                .oneshot(Request::from_parts(parts, body))
                .await
        })
    }
}

/// Makes the [`Front`] of each accepted connection.
#[derive(Clone)]
struct MakeFront(Arc<Shared>);

impl<L: Listener<Addr = SocketAddr>> Service<IncomingStream<'_, L>> for MakeFront {
    type Response = Front;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Front, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: IncomingStream<'_, L>) -> Self::Future {
        std::future::ready(Ok(Front {
            shared: self.0.clone(),
            remote: *incoming.remote_addr(),
        }))
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains as described in
/// the module docs; `abort` resolving (after `shutdown`) stops the drain at once. Pass
/// `std::future::pending()` as `abort` to always drain.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    abort: impl Future<Output = ()> + Send + 'static,
) -> Result<Drained> {
    let drain = state.config.shutdown_drain;
    let deadline = state.config.shutdown_timeout;
    let in_flight = InFlight::default();
    let front = MakeFront(Arc::new(Shared {
        router,
        hits: crate::api::cors::layer(&state.config).is_none(),
        state: state.clone(),
        in_flight: in_flight.clone(),
    }));
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY on an accepted socket: {e}");
        }
    });
    let (closing_tx, closing_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!(
            drain_s = drain.as_secs_f64(),
            "shutting down: /readyz now answers 503 (a second signal exits at once)"
        );
        state.begin_shutdown();
        tokio::time::sleep(drain).await;
        tracing::info!("closing the listener; waiting for requests in flight");
        let _ = closing_tx.send(());
    };
    let server = axum::serve(listener, front).with_graceful_shutdown(signal);
    let overdue = async move {
        if closing_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(deadline).await;
    };
    let abandoned = tokio::select! {
        result = server => {
            result.context("the HTTP server failed")?;
            return Ok(Drained { abandoned: 0 });
        }
        () = overdue => {
            let abandoned = in_flight.get();
            tracing::warn!(
                abandoned,
                timeout_s = deadline.as_secs_f64(),
                "requests still in flight after shutdown_timeout: exiting without them"
            );
            abandoned
        }
        () = abort => {
            let abandoned = in_flight.get();
            if abandoned > 0 {
                tracing::warn!(abandoned, "second signal: exiting without the requests in flight");
            } else {
                tracing::info!("second signal: exiting at once (no request in flight)");
            }
            abandoned
        }
    };
    Ok(Drained { abandoned })
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
