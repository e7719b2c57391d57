//! One stdio MCP server process: spawning it in its own process group, writing JSON-RPC lines to
//! its stdin, reading its stdout (bounded line length) and routing each message, draining its
//! stderr into the log, and failing every in-flight request the moment it dies. Which HTTP stream
//! a message ends up on is the session's business ([`crate::session`]); this module only knows
//! pending requests (by the bridge's own request ids) and an optional owner for server-initiated
//! messages.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::{Mutex as AsyncMutex, mpsc, watch};
use tracing::{debug, info, warn};

/// JSON-RPC error code for "the MCP server process is gone" (implementation-defined range).
pub const CHILD_EXITED: i64 = -32000;
/// JSON-RPC error code for a request the bridge timed out.
pub const REQUEST_TIMED_OUT: i64 = -32001;

/// Messages for one pending request: notifications about it (progress) and its final response.
pub type RequestSink = mpsc::Sender<Value>;

/// Receives server-initiated messages that belong to no pending request.
pub trait Owner: Send + Sync {
    /// A request or notification from the child, not tied to a pending request. Awaited by the
    /// child's stdout reader, so messages keep their order.
    /// Returns a reply for the child when the owner answers a request itself.
    fn server_message(
        &self,
        msg: Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Value>> + Send + '_>>;
}

/// A request waiting for the child's answer.
#[derive(Debug)]
struct Pending {
    /// The id the client used; restored on the way back.
    client_id: Value,
    /// The client's progress token, replaced by the bridge id on the way in.
    progress_token: Option<Value>,
    sink: RequestSink,
}

/// What the pool learned when it initialised the child itself.
#[derive(Debug, Clone)]
pub struct InitInfo {
    /// The `protocolVersion` the bridge asked for.
    pub requested: String,
    /// The child's `InitializeResult`.
    pub result: Value,
}

/// Errors starting or talking to a child.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The process could not be started.
    #[error("cannot start the MCP server: {0}")]
    Spawn(std::io::Error),
    /// The child exited (or was stopped).
    #[error("the MCP server process exited")]
    Exited,
    /// The child did not answer in time.
    #[error("the MCP server did not answer within {0:?}")]
    Timeout(Duration),
    /// The child answered `initialize` with an error.
    #[error("the MCP server refused initialize: {0}")]
    Refused(String),
}

/// A running child process.
pub struct Child {
    pid: i32,
    /// The child's stdin; `None` once a write failed. Locked in FIFO order, so lines go out in
    /// the order `send` was called.
    stdin: Arc<AsyncMutex<Option<ChildStdin>>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    owner: Mutex<Option<std::sync::Weak<dyn Owner>>>,
    dead: watch::Receiver<bool>,
    dead_tx: watch::Sender<bool>,
    /// Set once the process has been waited for (no zombie left).
    reaped: watch::Receiver<bool>,
    exiting: AtomicBool,
    /// Set when the bridge initialised the child (warm pool).
    pub init: OnceLock<InitInfo>,
    label: String,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .field("label", &self.label)
            .finish()
    }
}

/// Knobs a child needs from the configuration.
#[derive(Debug, Clone)]
pub struct ChildOptions {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Longest accepted stdout line.
    pub max_line: usize,
    /// How long a request's stream may stall the child's stdout reader.
    pub slow_client_timeout: Duration,
    /// Every child started with these options.
    pub registry: Registry,
    /// The environment a child gets (nothing of the bridge's own).
    pub env: crate::env::ChildEnv,
}

/// Every child a bridge started, so shutdown stops and reaps each one, including children still
/// initialising in the pool or for a new session. Once closed, no child can be started.
#[derive(Debug, Clone, Default)]
pub struct Registry(Arc<Mutex<RegistryInner>>);

#[derive(Debug, Default)]
struct RegistryInner {
    children: Vec<std::sync::Weak<Child>>,
    closed: bool,
}

impl Registry {
    /// Refuses further children and returns the live ones.
    pub fn close(&self) -> Vec<Arc<Child>> {
        let mut r = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.closed = true;
        r.children
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }
}

static CHILD_SEQ: AtomicU64 = AtomicU64::new(0);

impl Child {
    /// Starts the child in a process group of its own, with PDEATHSIG so it dies with the bridge,
    /// in `dir` (its working directory and HOME) with exactly the environment `opts` names.
    pub fn spawn(opts: &ChildOptions, dir: &Path) -> Result<Arc<Child>, ChildError> {
        let Some((program, args)) = opts.argv.split_first() else {
            return Err(ChildError::Spawn(std::io::Error::other("empty command")));
        };
        // Held across the spawn so that `Registry::close` never misses a child.
        let mut registry = opts
            .registry
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if registry.closed {
            return Err(ChildError::Spawn(std::io::Error::other(
                "the bridge is shutting down",
            )));
        }
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(opts.env.render(dir))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut proc = cmd.spawn().map_err(ChildError::Spawn)?;
        let pid = proc.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let label = format!("child-{}", CHILD_SEQ.fetch_add(1, Ordering::Relaxed));
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (proc.stdin.take(), proc.stdout.take(), proc.stderr.take())
        else {
            return Err(ChildError::Spawn(std::io::Error::other(
                "missing stdio pipe",
            )));
        };
        let (dead_tx, dead) = watch::channel(false);
        let (reaped_tx, reaped) = watch::channel(false);
        let child = Arc::new(Child {
            pid,
            stdin: Arc::new(AsyncMutex::new(Some(stdin))),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            owner: Mutex::new(None),
            dead,
            dead_tx,
            reaped,
            exiting: AtomicBool::new(false),
            init: OnceLock::new(),
            label: label.clone(),
        });
        registry.children.retain(|c| c.strong_count() > 0);
        registry.children.push(Arc::downgrade(&child));
        drop(registry);
        debug!(pid, %label, "child started");
        tokio::spawn(read_loop(
            stdout,
            Arc::clone(&child),
            opts.max_line,
            opts.slow_client_timeout,
        ));
        tokio::spawn(drain_stderr(stderr, label.clone(), opts.max_line));
        let weak = Arc::downgrade(&child);
        tokio::spawn(async move {
            let status = proc.wait().await;
            info!(pid, %label, ?status, "child exited");
            if let Some(c) = weak.upgrade() {
                c.mark_dead();
            }
            reaped_tx.send_replace(true);
        });
        Ok(child)
    }

    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sets who receives server-initiated messages.
    pub fn set_owner(&self, owner: Option<std::sync::Weak<dyn Owner>>) {
        if let Ok(mut o) = self.owner.lock() {
            *o = owner;
        }
    }

    /// Whether the child has exited or was stopped.
    pub fn is_dead(&self) -> bool {
        *self.dead.borrow()
    }

    /// Resolves once the child is dead.
    pub async fn wait_dead(&self) {
        let mut rx = self.dead.clone();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Number of requests waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Sends a client request: its id (and progress token) are replaced by a bridge id, and
    /// everything the child says about it goes to `sink`. Returns the bridge id.
    pub async fn request(&self, mut msg: Value, sink: RequestSink) -> Result<u64, ChildError> {
        if self.is_dead() {
            return Err(ChildError::Exited);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client_id = msg.get("id").cloned().unwrap_or(Value::Null);
        msg["id"] = json!(id);
        let progress_token = msg
            .pointer_mut("/params/_meta/progressToken")
            .map(|t| std::mem::replace(t, json!(id)));
        if let Ok(mut p) = self.pending.lock() {
            p.insert(
                id,
                Pending {
                    client_id,
                    progress_token,
                    sink,
                },
            );
        }
        if let Err(e) = self.send(&msg).await {
            self.forget(id);
            return Err(e);
        }
        Ok(id)
    }

    /// Sends a message as is (notifications, responses to the child's requests).
    ///
    /// A line up to `PIPE_BUF` bytes is written in place: a pipe write that small is atomic, so
    /// a caller cancelled mid-way (its client went away) never leaves half a line behind. A
    /// longer line is written by a task of its own that owns the lock until the line is out.
    pub async fn send(&self, msg: &Value) -> Result<(), ChildError> {
        let mut line = serde_json::to_vec(msg).map_err(|_| ChildError::Exited)?;
        line.push(b'\n');
        let mut stdin = Arc::clone(&self.stdin).lock_owned().await;
        if line.len() <= libc::PIPE_BUF {
            return write_line(&mut stdin, &line, &self.label).await;
        }
        let label = self.label.clone();
        tokio::spawn(async move { write_line(&mut stdin, &line, &label).await })
            .await
            .unwrap_or(Err(ChildError::Exited))
    }

    /// Drops a pending request and tells the child it is cancelled.
    pub async fn cancel(&self, id: u64, reason: &str) {
        if self.forget(id) {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": id, "reason": reason}});
            let _ = self.send(&note).await;
        }
    }

    fn forget(&self, id: u64) -> bool {
        self.pending
            .lock()
            .map(|mut p| p.remove(&id).is_some())
            .unwrap_or(false)
    }

    /// Sends `initialize` (and `notifications/initialized`) as a client would, for the warm pool
    /// and for 2026-07-28 translation.
    pub async fn initialize(&self, version: &str, timeout: Duration) -> Result<Value, ChildError> {
        let req = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version,
            "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}},
            "clientInfo": {"name": "mcpgw-bridge", "version": env!("CARGO_PKG_VERSION")}}});
        let resp = self.call(req, timeout).await?;
        if let Some(err) = resp.get("error") {
            return Err(ChildError::Refused(err.to_string()));
        }
        let result = resp.get("result").cloned().unwrap_or(Value::Null);
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        let _ = self.init.set(InitInfo {
            requested: version.to_owned(),
            result: result.clone(),
        });
        Ok(result)
    }

    /// One request, one response (anything else about the request is dropped).
    pub async fn call(&self, msg: Value, timeout: Duration) -> Result<Value, ChildError> {
        let (tx, mut rx) = mpsc::channel(16);
        let id = self.request(msg, tx).await?;
        let wait = async {
            while let Some(m) = rx.recv().await {
                if m.get("method").is_none() {
                    return Ok(m);
                }
            }
            Err(ChildError::Exited)
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => {
                self.cancel(id, "timed out").await;
                Err(ChildError::Timeout(timeout))
            }
        }
    }

    /// Resolves once the process has exited and been reaped.
    pub async fn wait_reaped(&self) {
        let mut rx = self.reaped.clone();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Stops the child: SIGTERM to its process group, then SIGKILL after `grace`. Returns once
    /// the process is reaped, so a bridge that exits next leaves no zombie to an init that may
    /// not collect it.
    pub async fn stop(&self, grace: Duration) {
        if self.exiting.swap(true, Ordering::AcqRel) || self.is_dead() {
            // A dead child (stdout closed) was already sent SIGKILL by `mark_dead`.
            self.wait_reaped().await;
            return;
        }
        signal_group(self.pid, libc::SIGTERM);
        if tokio::time::timeout(grace, self.wait_reaped())
            .await
            .is_err()
        {
            signal_group(self.pid, libc::SIGKILL);
            self.wait_reaped().await;
        }
    }

    /// Marks the child dead and fails everything in flight with a JSON-RPC error.
    fn mark_dead(&self) {
        self.dead_tx.send_replace(true);
        let drained: Vec<Pending> = self
            .pending
            .lock()
            .map(|mut p| p.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        for p in drained {
            let err = error_response(p.client_id, CHILD_EXITED, "the MCP server process exited");
            // A full or closed sink means nobody can be told; the request is gone either way.
            let _ = p.sink.try_send(err);
        }
        // The process may outlive its stdout; make sure the whole group is gone.
        signal_group(self.pid, libc::SIGKILL);
    }

    /// Routes one message from the child's stdout.
    async fn route(&self, mut msg: Value, slow: Duration) {
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let target = match method.as_deref() {
            None => {
                // A response: id is ours.
                let Some(id) = msg.get("id").and_then(Value::as_u64) else {
                    warn!(label = %self.label, "child sent a response with an id the bridge never used");
                    return;
                };
                let Some(p) = self.pending.lock().ok().and_then(|mut p| p.remove(&id)) else {
                    debug!(id, "response to a cancelled or unknown request dropped");
                    return;
                };
                msg["id"] = p.client_id;
                Some(p.sink)
            }
            Some("notifications/progress") => {
                let token = msg.pointer("/params/progressToken").and_then(Value::as_u64);
                let found = token.and_then(|t| {
                    self.pending.lock().ok().and_then(|p| {
                        p.get(&t)
                            .map(|p| (p.sink.clone(), p.progress_token.clone()))
                    })
                });
                match found {
                    Some((sink, original)) => {
                        if let (Some(slot), Some(orig)) =
                            (msg.pointer_mut("/params/progressToken"), original)
                        {
                            *slot = orig;
                        }
                        Some(sink)
                    }
                    None => None,
                }
            }
            Some(_) => None,
        };
        match target {
            Some(sink) => {
                if tokio::time::timeout(slow, sink.send(msg)).await.is_err() {
                    debug!(label = %self.label, "slow request stream: message dropped");
                }
            }
            None => match self.owner() {
                Some(o) => {
                    if let Some(reply) = o.server_message(msg).await {
                        let _ = self.send(&reply).await;
                    }
                }
                None => self.refuse_unowned(msg).await,
            },
        }
    }

    /// A server request with no client to forward it to gets an error, so the child never waits.
    async fn refuse_unowned(&self, msg: Value) {
        if let (Some(id), Some(_)) = (msg.get("id"), msg.get("method")) {
            let err = error_response(
                id.clone(),
                -32601,
                "no client connected to answer this request",
            );
            let _ = self.send(&err).await;
        }
    }

    /// The session that currently owns server-initiated messages, if any.
    pub fn owner(&self) -> Option<Arc<dyn Owner>> {
        self.owner
            .lock()
            .ok()
            .and_then(|o| o.as_ref().and_then(std::sync::Weak::upgrade))
    }

    /// The most recently sent pending request's sink (for server messages with no GET stream).
    pub fn latest_pending(&self) -> Option<RequestSink> {
        self.pending.lock().ok().and_then(|p| {
            p.iter()
                .max_by_key(|(k, _)| **k)
                .map(|(_, v)| v.sink.clone())
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.is_dead() {
            signal_group(self.pid, libc::SIGKILL);
        }
    }
}

/// A JSON-RPC error response.
pub fn error_response(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Writes one line to the child's stdin; a failed write closes it for good.
async fn write_line(
    stdin: &mut Option<ChildStdin>,
    line: &[u8],
    label: &str,
) -> Result<(), ChildError> {
    let Some(pipe) = stdin.as_mut() else {
        return Err(ChildError::Exited);
    };
    if pipe.write_all(line).await.is_err() {
        debug!(%label, "child stdin closed");
        *stdin = None;
        return Err(ChildError::Exited);
    }
    Ok(())
}

async fn read_loop(
    stdout: tokio::process::ChildStdout,
    child: Arc<Child>,
    max_line: usize,
    slow: Duration,
) {
    // A quarter of a pipe's buffer: long lines take a few more reads, and every held session
    // keeps less memory resident (a freed and reused larger buffer stays resident in full).
    let mut reader = BufReader::with_capacity(16 * 1024, stdout);
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        buf.clear();
        match read_line_bounded(&mut reader, &mut buf, max_line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(LineError::TooLong) => {
                warn!(label = %child.label, max_line, "child wrote a line longer than the limit; stopping it");
                break;
            }
            Err(LineError::Io) => break,
        }
        let line = trim_line(&buf);
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(msg) if msg.is_object() => child.route(msg, slow).await,
            _ => warn!(label = %child.label, "child wrote a line that is not a JSON-RPC message"),
        }
    }
    // stdout is closed: the child is as good as dead for us.
    child.mark_dead();
}

fn trim_line(buf: &[u8]) -> &[u8] {
    let mut end = buf.len();
    while end > 0 && matches!(buf[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &buf[..end]
}

enum LineError {
    TooLong,
    Io,
}

/// Reads one line into `buf`, refusing lines longer than `max`.
async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<usize, LineError> {
    loop {
        let available = r.fill_buf().await.map_err(|_| LineError::Io)?;
        if available.is_empty() {
            return Ok(buf.len());
        }
        let (used, done) = match memchr_newline(available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + used > max.saturating_add(1) {
            return Err(LineError::TooLong);
        }
        buf.extend_from_slice(&available[..used]);
        r.consume(used);
        if done {
            return Ok(buf.len());
        }
    }
}

/// Discards input up to and including the next newline; false at end of input.
async fn skip_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> bool {
    loop {
        let Ok(available) = r.fill_buf().await else {
            return false;
        };
        if available.is_empty() {
            return false;
        }
        match memchr_newline(available) {
            Some(i) => {
                r.consume(i + 1);
                return true;
            }
            None => {
                let n = available.len();
                r.consume(n);
            }
        }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Reads the child's stderr continuously into the log, so a chatty child never blocks on a full
/// pipe. Over-long lines are cut, not buffered.
async fn drain_stderr(stderr: tokio::process::ChildStderr, label: String, max_line: usize) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    let cap = max_line.min(64 * 1024);
    loop {
        buf.clear();
        match read_line_bounded(&mut reader, &mut buf, cap).await {
            Ok(0) | Err(LineError::Io) => return,
            Ok(_) => info!(target: "child", %label, "{}", String::from_utf8_lossy(trim_line(&buf))),
            Err(LineError::TooLong) => {
                info!(target: "child", %label, "{}…", String::from_utf8_lossy(trim_line(&buf)));
                if !skip_line(&mut reader).await {
                    return;
                }
            }
        }
    }
}

/// Sends `sig` to the process group `pgid` (the child was started as its group leader).
fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) on a process group we created; no memory is touched.
        #[allow(unsafe_code)] // reason: signalling a process group has no safe std API
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Asks the kernel to SIGKILL the child if the bridge dies without cleaning up.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
    #[allow(unsafe_code)] // reason: pre_exec is the only hook between fork and exec
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
