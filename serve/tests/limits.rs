//! The listener's limits against real TCP clients: a slow request head is cut, connections beyond
//! the limit wait, and shutdown drains requests in flight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a test fails by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use mcpgw_serve::{Limits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const LIMITS: Limits = Limits {
    header_read_timeout: Duration::from_millis(500),
    max_connections: 2,
};

/// A server whose `/slow` answers once `release` is notified; returns its address.
async fn start(release: Arc<Notify>, shutdown: Arc<Notify>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(move || {
                let release = Arc::clone(&release);
                async move {
                    release.notified().await;
                    "slow"
                }
            }),
        );
    tokio::spawn(async move {
        serve(
            listener,
            app,
            LIMITS,
            async move { shutdown.notified().await },
        )
        .await
        .unwrap();
    });
    addr
}

/// Reads until the peer closes or `within` passes; `None` if it did not close.
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, tcp.read_to_end(&mut got)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_slow_request_head_is_cut() {
    let addr = start(Arc::new(Notify::new()), Arc::new(Notify::new())).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for tcp in [&mut silent, &mut slow] {
        let closed = read_to_close(tcp, Duration::from_secs(5)).await;
        assert!(
            closed.is_some(),
            "a connection without a whole head stays open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // A prompt client is served.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut ok, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_and_shutdown_drains() {
    let (release, shutdown) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let addr = start(Arc::clone(&release), Arc::clone(&shutdown)).await;
    let mut busy = Vec::new();
    for _ in 0..LIMITS.max_connections {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        busy.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut third, Duration::from_millis(300))
            .await
            .is_none(),
        "a third connection was served while two were busy"
    );
    // Shutdown: the requests in flight still get their answers.
    shutdown.notify_one();
    tokio::time::sleep(Duration::from_millis(50)).await;
    release.notify_waiters();
    for mut tcp in busy {
        let answer = read_to_close(&mut tcp, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.ends_with("slow"), "{answer}");
    }
}
