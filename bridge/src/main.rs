//! `mcpgw-bridge --listen 127.0.0.1:3000 -- <command> <args…>`: serves one MCP endpoint over a
//! stdio MCP server. Logs go to stderr; SIGTERM drains and stops every child before exiting.
//! Runs on one thread unless `--threads` asks for more.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mcpgw_bridge::Bridge;
use mcpgw_bridge::config::{Config, LogFormat};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Text => fmt.init(),
    }
    raise_fd_limit();
    // One thread by default: a call's steps (HTTP request, write to the child, the child's
    // answer read, HTTP response) then run on the thread that is already awake.
    let runtime = match cfg.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(serve(cfg))
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let listen = cfg.listen;
    let bridge = Bridge::new(cfg)?;
    // mcpgw_serve: header-read timeout, connection limit, TCP_NODELAY (each SSE event is a small
    // write of its own), graceful shutdown.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    info!(%listen, path = %bridge.cfg.path, command = ?bridge.child_opts.argv, "mcpgw-bridge listening");
    bridge.start();
    let app = mcpgw_bridge::http::router(Arc::clone(&bridge));
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let drainer = Arc::clone(&bridge);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down: draining sessions");
        drainer.shutdown().await;
        let _ = stopped_tx.send(());
    });
    let server = mcpgw_serve::serve(listener, app, mcpgw_serve::Limits::default(), async {
        let _ = stopped_rx.await;
    });
    let served = tokio::spawn(server);
    match served.await {
        Ok(r) => r.context("server failed")?,
        Err(e) => warn!(error = %e, "server task failed"),
    }
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still dies on SIGTERM, and PDEATHSIG takes the
        // children with it.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // A second signal while draining means "now".
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        std::process::exit(1);
    });
}

/// Each session holds three pipes; lift the soft descriptor limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from a local struct only.
    #[allow(unsafe_code)] // reason: no safe std API for rlimits
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
