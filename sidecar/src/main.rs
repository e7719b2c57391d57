//! `mcpgw-sidecar`: loads the configuration, connects to Redis, loads the signing keys and serves
//! until SIGTERM/SIGINT (graceful shutdown). `rotate-keys` rotates the signing key and exits;
//! `check-config` validates the configuration and exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcpgw_sidecar::config::{Config, LogFormat};
use mcpgw_sidecar::{AppState, durability, key_storage, keys, now, router, store::Store};
use tracing_subscriber::EnvFilter;

/// mcpgw's OAuth 2.1 authorization server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file (TOML; MCPGW_* environment variables override it).
    #[arg(long, env = "MCPGW_CONFIG")]
    config: PathBuf,
    /// Listen address (overrides `listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Rotate the signing key: a new current key, the old one kept in the JWKS.
    RotateKeys,
    /// Validate the configuration and exit.
    CheckConfig,
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("MCPGW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcpgw-sidecar: {}: {e}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    init_logs(config.log_format);
    match run(config, cli.command.unwrap_or(Command::Serve)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "mcpgw-sidecar stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::CheckConfig => {
            println!("configuration is valid");
            Ok(())
        }
        Command::RotateKeys => {
            let store = Store::connect(config.redis_url.expose(), &config.key_prefix).await?;
            let kid = keys::rotate_stored(
                &key_storage(&config, &store),
                config.signing_alg,
                keys::keep_replaced_keys(&config),
                now(),
            )
            .await?;
            println!(
                "rotated: new signing key {kid}; running sidecars adopt it within {}s",
                keys::RELOAD_INTERVAL.as_secs()
            );
            Ok(())
        }
        Command::Serve => serve(config).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let rotation = config.key_rotation;
    let state = AppState::new(config).await?;
    let watch = tokio::spawn(durability::watch(state.clone(), rotation));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, issuer = %state.config.issuer, "mcpgw-sidecar listening");
    mcpgw_serve::serve(
        listener,
        router(state),
        mcpgw_serve::Limits::default(),
        shutdown_signal(),
    )
    .await?;
    watch.abort();
    tracing::info!("mcpgw-sidecar stopped");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
