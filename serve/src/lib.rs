//! How mcpgw's HTTP services listen (the sidecar, the bridge): one place for what every listener
//! of ours must do with the connections it accepts, whoever opens them.
//!
//! - A client has [`Limits::header_read_timeout`] to send each request's head; a slow or silent
//!   one is cut (hyper's `header_read_timeout`), so slow-header connections cannot pile up.
//! - At most [`Limits::max_connections`] connections at once; further ones wait in the kernel's
//!   accept queue until one closes.
//! - `TCP_NODELAY`: answers and SSE events are small writes that must not wait for the client's
//!   delayed ACK of the one before.
//! - The peer address as axum's `ConnectInfo<SocketAddr>`.
//! - Graceful shutdown: when `shutdown` resolves, no new connection is accepted, idle ones close,
//!   and the call returns once every request in flight has finished.
//!
//! Timeouts on whole requests belong to each service (a bridge's SSE stream lasts hours; the
//! sidecar's answers take milliseconds).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// What a listener allows each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's head (request line and headers) from its first byte, or from
    /// the connection's start for the first request.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        let service = app.clone().map_request(move |req: Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => log_end(result, peer),
                _ = async { stop.wait_for(|stopping| *stopping).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await, peer);
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it is done: having them all back means drained.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _drained = slots.acquire_many(all).await;
    Ok(())
}

fn log_end(result: Result<(), hyper::Error>, peer: SocketAddr) {
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            tracing::debug!(%peer, "connection closed: request headers not received in time");
        }
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
    }
}
