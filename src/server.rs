//! The HTTP server: listener tuning and graceful shutdown.
//!
//! The listener sets SO_REUSEADDR (a restart does not wait for TIME_WAIT sockets) and
//! TCP_NODELAY on every accepted socket (small responses leave at once instead of waiting
//! for Nagle's algorithm).
//!
//! Shutdown, when the `shutdown` future given to [`serve`] resolves (SIGINT or SIGTERM in
//! `serve`): `/readyz` turns 503 at once; after `shutdown_drain` the listener closes and
//! idle connections are closed; requests in flight finish, for at most
//! `shutdown_timeout`; then [`serve`] returns.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpSocket};

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

/// Serves `router` on `listener` until `shutdown` resolves, then drains as described in
/// the module docs.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let drain = state.config.shutdown_drain;
    let deadline = state.config.shutdown_timeout;
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
            "shutting down: /readyz now answers 503"
        );
        state.begin_shutdown();
        tokio::time::sleep(drain).await;
        tracing::info!("closing the listener; waiting for requests in flight");
        let _ = closing_tx.send(());
    };
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal);
    let overdue = async move {
        if closing_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(deadline).await;
    };
    tokio::select! {
        result = server => result.context("the HTTP server failed")?,
        () = overdue => tracing::warn!(
            timeout_s = deadline.as_secs_f64(),
            "requests still in flight after shutdown_timeout: exiting without them"
        ),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
