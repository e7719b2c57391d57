//! Shared by the bridge's integration tests: starts the built `mcpgw-bridge` (via testkit, killed
//! on drop) in front of the built `mcpgw-echo-child`, a small HTTP/1.1 client over hyper that
//! keeps one connection, an SSE reader, and process-table helpers.
#![allow(dead_code)] // reason: each test binary uses a different subset of these helpers
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: test support fails by panicking

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderMap;
use hyper_util::rt::TokioIo;
use mcpgw_testkit::{Proc, free_port, http_get};
use serde_json::{Value, json};

/// The session revision the tests speak unless they say otherwise.
pub const VERSION: &str = "2025-11-25";
/// The stateless revision.
pub const MODERN: &str = "2026-07-28";

/// A bridge process on a free port.
#[derive(Debug)]
pub struct Bridge {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The process (stopped on drop).
    pub proc: Proc,
    /// Its `--state-dir`.
    pub state: std::path::PathBuf,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl Bridge {
    /// Starts the bridge over the echo child with extra flags and child environment, and waits until
    /// `/ready` says the child starts and initialises.
    pub fn echo(flags: &[&str], env: &[(&str, &str)]) -> Bridge {
        Bridge::start(flags, env, &[env!("CARGO_BIN_EXE_mcpgw-echo-child")])
    }

    /// Starts the bridge over `child` (program and arguments) with `child_env` in the child's
    /// environment (`--env`) and a state directory of its own (removed on drop).
    pub fn start(flags: &[&str], child_env: &[(&str, &str)], child: &[&str]) -> Bridge {
        Bridge::start_in(flags, child_env, &[], child)
    }

    /// As [`Bridge::start`], with `bridge_env` added to the bridge process' own environment.
    pub fn start_in(
        flags: &[&str],
        child_env: &[(&str, &str)],
        bridge_env: &[(&str, &str)],
        child: &[&str],
    ) -> Bridge {
        let port = free_port();
        let state =
            std::env::temp_dir().join(format!("mcpgw-bridge-test-{}-{port}", std::process::id()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcpgw-bridge"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(&state)
            .args(flags);
        for (k, v) in child_env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg("--")
            .args(child)
            .env("RUST_LOG", "info")
            .envs(bridge_env.iter().copied());
        let mut proc = Proc::spawn("bridge", cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(port, "/ready").is_none() {
            if Instant::now() > deadline || !proc.is_running() {
                panic!("the bridge did not become ready:\n{}", proc.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Bridge { port, proc, state }
    }

    /// A new connection to the bridge.
    pub async fn client(&self) -> Client {
        Client::connect(self.port).await
    }
}

/// The subject every test client speaks for unless it says otherwise (the identity headers the
/// gateway sets in front of a bridge).
pub const SUBJECT: &str = "oidc:tester";
/// The client id that goes with it.
pub const CLIENT_ID: &str = "test-client";

/// One HTTP/1.1 connection (keep-alive), speaking for one caller.
#[derive(Debug)]
pub struct Client {
    tx: SendRequest<Full<Bytes>>,
    /// The identity headers added to every request (`None`: none, as a request that did not
    /// come through the gateway).
    pub identity: Option<(String, String)>,
}

/// A response read to its end.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The JSON-RPC error message of the body ("" when there is none).
    pub fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON-RPC messages of an SSE body.
    pub fn events(&self) -> Vec<Value> {
        let mut r = SseBuf::default();
        r.buf.extend_from_slice(&self.body);
        std::iter::from_fn(|| r.take_event().map(|(_, v)| v)).collect()
    }

    /// The JSON-RPC message this reply carries: the JSON body, or the last SSE event.
    pub fn message(&self) -> Value {
        if self
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
        {
            self.events().pop().unwrap_or(Value::Null)
        } else {
            self.json()
        }
    }
}

impl Client {
    /// Connects to 127.0.0.1:`port`.
    pub async fn connect(port: u16) -> Client {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the bridge: {e}"));
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap_or_else(|e| panic!("http handshake: {e}"));
        tokio::spawn(conn);
        Client {
            tx,
            identity: Some((SUBJECT.to_owned(), CLIENT_ID.to_owned())),
        }
    }

    /// This connection speaks for `subject` through `client_id` from now on.
    pub fn act_as(&mut self, subject: &str, client_id: &str) {
        self.identity = Some((subject.to_owned(), client_id.to_owned()));
    }

    /// Sends a request and returns the response head with its body still streaming.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> hyper::Response<Incoming> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((subject, client_id)) = &self.identity {
            req = req
                .header("x-mcpgw-subject", subject.as_str())
                .header("x-mcpgw-client-id", client_id.as_str());
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req
            .body(Full::new(bytes))
            .unwrap_or_else(|e| panic!("bad request: {e}"));
        self.tx
            .ready()
            .await
            .unwrap_or_else(|e| panic!("connection closed: {e}"));
        self.tx
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// Sends a request and reads the whole response.
    pub async fn call(
        &mut self,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        read(self.send(method, "/mcp", headers, body).await).await
    }

    /// GET on the MCP endpoint in `session` (`Accept: text/event-stream`), plus `extra` headers.
    pub async fn get(&mut self, session: &str, extra: &[(&str, &str)]) -> Reply {
        let mut h = vec![("accept", "text/event-stream"), ("mcp-session-id", session)];
        h.extend_from_slice(extra);
        self.call("GET", &h, None).await
    }

    /// POSTs a JSON-RPC message in `session` with the usual headers.
    pub async fn post(&mut self, session: &str, msg: &Value) -> Reply {
        self.call("POST", &session_headers(session), Some(msg))
            .await
    }

    /// `initialize` at `version`; returns the session id.
    pub async fn initialize(&mut self, version: &str) -> String {
        let r = self
            .call("POST", &base_headers(), Some(&initialize_msg(version)))
            .await;
        assert_eq!(
            r.status,
            200,
            "initialize: {}",
            String::from_utf8_lossy(&r.body)
        );
        let id = r
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("no Mcp-Session-Id"))
            .to_owned();
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(self.post(&id, &done).await.status, 202);
        id
    }
}

/// The echo child's environment and working directory, asked in `session` (`debug/env`).
pub async fn child_env(c: &mut Client, session: &str) -> (serde_json::Map<String, Value>, String) {
    let r = c
        .post(session, &request(90, "debug/env", json!({})))
        .await
        .json();
    let env = r["result"]["env"].as_object().cloned().unwrap_or_default();
    (env, r["result"]["cwd"].as_str().unwrap_or("").to_owned())
}

/// Reads a response to its end.
pub async fn read(resp: hyper::Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("body: {e}"))
        .to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Accept and Content-Type as a conforming client sends them.
pub fn base_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("accept", "application/json, text/event-stream"),
        ("content-type", "application/json"),
    ]
}

/// The headers of a request inside `session`.
pub fn session_headers(session: &str) -> Vec<(&str, &str)> {
    let mut h = base_headers();
    h.push(("mcp-session-id", session));
    h.push(("mcp-protocol-version", VERSION));
    h
}

/// An `initialize` request.
pub fn initialize_msg(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name": "bridge-tests", "version": "0"}}})
}

/// A JSON-RPC request.
pub fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A 2026-07-28 request: version and capabilities in `_meta`.
pub fn modern_request(id: u64, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    request(id, method, params)
}

/// The headers of a 2026-07-28 request for `method` (and `Mcp-Name`).
pub fn modern_headers<'a>(method: &'a str, name: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = base_headers();
    h.push(("mcp-protocol-version", MODERN));
    h.push(("mcp-method", method));
    if let Some(n) = name {
        h.push(("mcp-name", n));
    }
    h
}

/// An SSE response read event by event.
#[derive(Debug)]
pub struct Sse {
    body: Incoming,
    buf: SseBuf,
}

#[derive(Debug, Default)]
struct SseBuf {
    buf: Vec<u8>,
}

impl SseBuf {
    /// Takes one complete event (`id`, message) off the front of the buffer.
    fn take_event(&mut self) -> Option<(Option<String>, Value)> {
        loop {
            let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
            let frame = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end + 2);
            let mut id = None;
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                let msg = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data}"));
                return Some((id, msg));
            }
        }
    }
}

impl Sse {
    /// Wraps a `text/event-stream` response (asserts the status and content type).
    pub fn new(resp: hyper::Response<Incoming>) -> Sse {
        assert_eq!(resp.status(), 200);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        Sse {
            body: resp.into_body(),
            buf: SseBuf::default(),
        }
    }

    /// The next event's id and message; `None` when the stream ends.
    pub async fn next(&mut self) -> Option<(Option<String>, Value)> {
        loop {
            if let Some(e) = self.buf.take_event() {
                return Some(e);
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next event, or a panic after `within` (a safety net, not a timing assertion).
    pub async fn expect(&mut self, within: Duration) -> (Option<String>, Value) {
        tokio::time::timeout(within, self.next())
            .await
            .unwrap_or_else(|_| panic!("no SSE event within {within:?}"))
            .unwrap_or_else(|| panic!("the SSE stream ended"))
    }
}

/// Process ids whose parent is `pid` (from /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent_of(*p) == Some(pid))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields follow the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split(' ').nth(1)?.parse().ok()
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.get(s.rfind(')')? + 2..)?.to_owned();
            rest.chars().next()
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Whether `pid` is in the process table at all (a zombie counts: nobody reaped it).
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs `work(connection, session, n)` for n in 0..`conns`, each on a connection of its own, all
/// at once, and waits for every one.
pub async fn on_connections<F, Fut>(b: &Bridge, session: &str, conns: u64, work: F)
where
    F: Fn(Client, String, u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tasks = Vec::new();
    for n in 0..conns {
        let c = b.client().await;
        tasks.push(tokio::spawn(work(c, session.to_owned(), n)));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Waits (polling) until `cond` holds; false after `within` (a safety net for slow machines).
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// The pid of the child serving `session` (the echo child's `debug/pid`).
pub async fn child_pid(c: &mut Client, session: &str) -> u32 {
    let r = c.post(session, &request(900, "debug/pid", json!({}))).await;
    let pid = r.json()["result"]["pid"].as_u64().unwrap_or(0);
    u32::try_from(pid).unwrap_or(0)
}
