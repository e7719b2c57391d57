//! Command line and environment configuration of the bridge. Every flag has an environment
//! variable (`MCPGW_BRIDGE_*`) so a container can be configured without arguments.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// How children are assigned to sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChildMode {
    /// One child process per session (isolation; the default).
    PerSession,
    /// One child shared by every session: only for stateless servers.
    Shared,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (Kubernetes).
    Json,
}

/// `mcpgw-bridge --listen 127.0.0.1:3000 -- <command> <args…>`
#[derive(Debug, Clone, Parser)]
#[command(name = "mcpgw-bridge", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "MCPGW_BRIDGE_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Path of the MCP endpoint.
    #[arg(long, env = "MCPGW_BRIDGE_PATH", default_value = "/mcp")]
    pub path: String,
    /// The stdio MCP server command as one shell string, used when no command follows `--`
    /// (run as `sh -c 'exec <command>'`).
    #[arg(long, env = "MCPGW_BRIDGE_COMMAND")]
    pub command: Option<String>,
    /// One child per session (default) or one shared child for stateless servers.
    #[arg(
        long,
        env = "MCPGW_BRIDGE_CHILD_MODE",
        value_enum,
        default_value = "per-session"
    )]
    pub child_mode: ChildMode,
    /// Pre-started, pre-initialised children kept ready (0 disables the pool).
    #[arg(long, env = "MCPGW_BRIDGE_POOL_SIZE", default_value_t = 2)]
    pub pool_size: usize,
    /// Protocol version the pool initialises children with.
    #[arg(
        long,
        env = "MCPGW_BRIDGE_POOL_PROTOCOL_VERSION",
        default_value = "2025-11-25"
    )]
    pub pool_protocol_version: String,
    /// Maximum open sessions; beyond it `initialize` gets 503 with `Retry-After`.
    #[arg(long, env = "MCPGW_BRIDGE_MAX_SESSIONS", default_value_t = 1000)]
    pub max_sessions: usize,
    /// Seconds sent in `Retry-After` with a 503.
    #[arg(long, env = "MCPGW_BRIDGE_RETRY_AFTER", default_value_t = 5)]
    pub retry_after: u64,
    /// A session without requests for this long is closed ("0s" disables).
    #[arg(long, env = "MCPGW_BRIDGE_IDLE_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Per-request timeout ("0s", the default, disables it: tool calls may run long).
    #[arg(long, env = "MCPGW_BRIDGE_REQUEST_TIMEOUT", default_value = "0s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// How long a child may take to start and answer `initialize`.
    #[arg(long, env = "MCPGW_BRIDGE_INIT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub init_timeout: Duration,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "MCPGW_BRIDGE_MAX_BODY", default_value_t = 4 * 1024 * 1024)]
    pub max_body: usize,
    /// Longest accepted line from the child in bytes; a longer one ends the session.
    #[arg(long, env = "MCPGW_BRIDGE_MAX_LINE", default_value_t = 16 * 1024 * 1024)]
    pub max_line: usize,
    /// SSE events kept per session for `Last-Event-ID` replay.
    #[arg(long, env = "MCPGW_BRIDGE_REPLAY_EVENTS", default_value_t = 256)]
    pub replay_events: usize,
    /// How long a slow client may stall its SSE stream before it is disconnected (it can resume
    /// with `Last-Event-ID`).
    #[arg(long, env = "MCPGW_BRIDGE_SLOW_CLIENT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub slow_client_timeout: Duration,
    /// Allowed `Origin` values, comma-separated (`*` allows any). Loopback origins and requests
    /// without `Origin` are always allowed.
    #[arg(long, env = "MCPGW_BRIDGE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// On SIGTERM, how long in-flight requests may finish before children are stopped.
    #[arg(long, env = "MCPGW_BRIDGE_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Threads serving HTTP and the children's pipes. 1, the default, runs everything on one
    /// thread, so no step of a call hands off to another thread (each hand-off is a wake-up on
    /// another core, tens of µs on a small VM); more spread many busy sessions over cores.
    #[arg(long, env = "MCPGW_BRIDGE_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Log format.
    #[arg(
        long,
        env = "MCPGW_BRIDGE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// The stdio MCP server and its arguments.
    #[arg(last = true)]
    pub child: Vec<String>,
}

impl Config {
    /// The child's program and arguments, from `-- <command>` or `--command`.
    pub fn child_argv(&self) -> anyhow::Result<Vec<String>> {
        if !self.child.is_empty() {
            return Ok(self.child.clone());
        }
        match &self.command {
            Some(c) if !c.trim().is_empty() => {
                Ok(vec!["/bin/sh".into(), "-c".into(), format!("exec {c}")])
            }
            _ => anyhow::bail!(
                "no child command: give `-- <command> <args…>` or MCPGW_BRIDGE_COMMAND"
            ),
        }
    }

    /// The per-request timeout, if one is set.
    pub fn request_timeout(&self) -> Option<Duration> {
        (!self.request_timeout.is_zero()).then_some(self.request_timeout)
    }
}
