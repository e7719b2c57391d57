//! Command line and environment configuration of the bridge. Every flag has an environment
//! variable (`MCPGW_BRIDGE_*`) so a container can be configured without arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Which callers share a child process (and its state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Isolation {
    /// Every user has children of their own (a child per session, one for their 2026-07-28
    /// requests), each running in the user's private directory, which is also its HOME. The
    /// default: a server that keeps state (a file, a database) keeps it per user.
    User,
    /// A child per session, all in one shared directory: for servers without state on disk.
    Session,
    /// One child for every session and every user: only for servers built for many users.
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
    /// Which callers share a child: `user` (default), `session` or `shared`.
    #[arg(
        long,
        env = "MCPGW_BRIDGE_ISOLATION",
        value_enum,
        default_value = "user"
    )]
    pub isolation: Isolation,
    /// Where the bridge keeps its children's directories: `users/<hash of the subject>/` per user
    /// (isolation `user`), `shared/` otherwise. Created (mode 0700) at startup.
    #[arg(
        long,
        env = "MCPGW_BRIDGE_STATE_DIR",
        default_value = "mcpgw-bridge-state"
    )]
    pub state_dir: PathBuf,
    /// A variable of the child's environment, `NAME=value` (repeatable; in the environment
    /// variable, one per line). `{user_dir}` in a value is the user's directory (isolation `user`
    /// only). The child gets these, `--env-pass` and PATH, nothing else of the bridge's.
    #[arg(long = "env", env = "MCPGW_BRIDGE_ENV", value_delimiter = '\n', value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// Names of the bridge's environment variables passed to the child as they are
    /// (comma-separated, repeatable). PATH always is, unless `--env` sets it.
    #[arg(
        long = "env-pass",
        env = "MCPGW_BRIDGE_ENV_PASS",
        value_delimiter = ','
    )]
    pub env_pass: Vec<String>,
    /// Open sessions one user (subject) may hold; beyond it `initialize` gets 429 with
    /// `Retry-After`.
    #[arg(long, env = "MCPGW_BRIDGE_MAX_SESSIONS_PER_USER", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions_per_user: u32,
    /// `tools/call` requests per second one user (subject) may make (bursts of as many); beyond
    /// it 429 with `Retry-After`. Warning: 0 turns the limit off.
    #[arg(long, env = "MCPGW_BRIDGE_TOOL_CALLS_PER_SECOND", default_value_t = 20)]
    pub tool_calls_per_second: u32,
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
    /// The child's program and arguments, from `-- <command>` or `--command`. A relative
    /// program path (`node_modules/.bin/x`) is resolved against the bridge's working directory
    /// now, since children run in directories of their own.
    pub fn child_argv(&self) -> anyhow::Result<Vec<String>> {
        if let Some((program, args)) = self.child.split_first() {
            let program = if program.contains('/') {
                std::path::absolute(program)?.to_string_lossy().into_owned()
            } else {
                program.clone()
            };
            return Ok(std::iter::once(program)
                .chain(args.iter().cloned())
                .collect());
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

/// `NAME=value`, NAME a portable environment variable name.
fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected NAME=value"))?;
    let portable = name
        .bytes()
        .enumerate()
        .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
    if name.is_empty() || !portable {
        return Err(format!(
            "`{name}`: environment variable names are letters, digits and `_`, not starting with a digit"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}
