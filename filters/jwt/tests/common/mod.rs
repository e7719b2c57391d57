//! What the JWT filter's end-to-end tests and its Envoy benchmark share: keys and tokens minted
//! with core's `signing` feature, Envoy bootstraps (written as JSON, which Envoy reads as YAML)
//! that load the built module, and a tiny HTTP/1.1 client and server on loopback. The server
//! stands in for the key server (the sidecar's `/.well-known/jwks.json`) and for the upstream.

#![allow(dead_code)] // reason: each test binary that includes this module uses a different part
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test support fails by panicking

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcpgw_core::claims::{AccessTokenClaims, Audience, Scopes};
use mcpgw_core::jwk::{Algorithm, Jwks};
use mcpgw_core::signing::SigningKey;
use serde_json::{Value, json};

/// The issuer every test token carries.
pub const ISSUER: &str = "http://issuer.test";

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A signing key and the `kid` it is published under.
pub struct Key {
    pub kid: String,
    pub key: SigningKey,
}

impl Key {
    /// A fresh key for `alg`, published as `kid`.
    pub fn generate(alg: Algorithm, kid: &str) -> Key {
        Key {
            kid: kid.to_owned(),
            key: SigningKey::generate(alg).unwrap(),
        }
    }

    /// Signs `claims` as an access token (`typ: at+jwt`) with this key's `kid`.
    pub fn sign(&self, claims: &AccessTokenClaims) -> String {
        self.key.sign_access_token(&self.kid, claims).unwrap()
    }
}

/// The public JWKS document of `keys`.
pub fn jwks(keys: &[&Key]) -> String {
    let jwks = Jwks {
        keys: keys.iter().map(|k| k.key.public_jwk(&k.kid)).collect(),
    };
    serde_json::to_string(&jwks).unwrap()
}

/// Valid claims for `audience` with `scope` (space-separated), valid for an hour.
pub fn claims(audience: &str, scope: &str) -> AccessTokenClaims {
    let now = now();
    AccessTokenClaims {
        iss: ISSUER.to_owned(),
        sub: "github:4242".to_owned(),
        aud: Audience::from(audience),
        client_id: "client-e2e".to_owned(),
        scope: Scopes::parse(scope),
        exp: now + 3600,
        iat: now - 5,
        nbf: Some(now - 5),
        jti: format!("jti-{}", mcpgw_testkit::unique("t")),
        preferred_username: Some("octocat".to_owned()),
        name: Some("The Octocat".to_owned()),
        email: Some("octocat@example.test".to_owned()),
        groups: vec!["acme".to_owned(), "acme/devs".to_owned()],
    }
}

/// A build of the JWT filter: the same tests run against each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The proxy-wasm module in Envoy's V8.
    Wasm,
    /// The Envoy dynamic module (a native shared library).
    Native,
}

/// A built module: `$var`, or `dist/<file>`, checked to be there.
fn built(var: &str, file: &str, make: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| mcpgw_testkit::dist_wasm(file));
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "{} is missing or not a built module ({size} bytes): run `{make}` first",
        path.display()
    );
    path
}

/// The module under test: `$MCPGW_JWT_WASM`, or `dist/mcpgw_filter_jwt.wasm` (`make wasm`).
pub fn wasm_path() -> PathBuf {
    built("MCPGW_JWT_WASM", "mcpgw_filter_jwt.wasm", "make wasm")
}

/// The dynamic module under test: `$MCPGW_JWT_NATIVE`, or `dist/libmcpgw_filter_jwt.so`
/// (`make native`).
pub fn native_path() -> PathBuf {
    built("MCPGW_JWT_NATIVE", "libmcpgw_filter_jwt.so", "make native")
}

/// An `http_filters` entry loading the mcpgw JWT filter's `build` with `plugin_config` (JSON);
/// `vm_id` names the wasm VM.
pub fn jwt_filter(build: Build, vm_id: &str, plugin_config: &Value) -> Value {
    match build {
        Build::Wasm => json!({
            "name": "mcpgw.jwt",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "mcpgw_jwt",
                    "root_id": "mcpgw_jwt",
                    "fail_open": false,
                    "vm_config": {
                        "vm_id": vm_id,
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": wasm_path() } }
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": plugin_config.to_string()
                    }
                }
            }
        }),
        Build::Native => json!({
            "name": "mcpgw.jwt",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                "dynamic_module_config": { "module": { "local": { "filename": native_path() } } },
                "filter_name": "mcpgw_jwt",
                "filter_config": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config.to_string()
                }
            }
        }),
    }
}

/// The terminal router filter.
pub fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    })
}

/// A loopback HTTP listener on `port` running `http_filters`, with one virtual host of `routes`.
pub fn listener(name: &str, port: u16, http_filters: Vec<Value>, routes: Vec<Value>) -> Value {
    json!({
        "name": name,
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {
                    "name": name,
                    "virtual_hosts": [{ "name": name, "domains": ["*"], "routes": routes }]
                },
                "http_filters": http_filters
            }
        }]}]
    })
}

/// A route sending every path to `cluster`.
pub fn route_to(cluster: &str) -> Value {
    json!({ "match": { "prefix": "/" }, "route": { "cluster": cluster, "timeout": "5s" } })
}

/// A cluster of one loopback endpoint.
pub fn cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": "127.0.0.1", "port_value": port }
            }}}]}]
        }
    })
}

/// A bootstrap with the admin interface on `admin_port`.
pub fn bootstrap(admin_port: u16, listeners: Vec<Value>, clusters: Vec<Value>) -> String {
    json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": admin_port } } },
        "static_resources": { "listeners": listeners, "clusters": clusters }
    })
    .to_string()
}

/// An HTTP response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Reads a header block (up to the blank line) from `reader`: the first line and the headers.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Ok((first.trim_end().to_owned(), headers))
}

/// Sends one HTTP/1.1 request to `127.0.0.1:port` (`Connection: close`) and reads the answer.
pub fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("host: 127.0.0.1:{port}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let (status_line, headers) = read_head(&mut reader).unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).unwrap();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(&raw) } else { raw };
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
    out
}

/// A request as the test server saw it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
}

type Handler = dyn Fn(&Request) -> (u16, String) + Send + Sync;

/// A tiny HTTP/1.1 server on a loopback port, one thread per connection, one request per
/// connection. [`HttpServer::stop`] closes the listening socket, so clients get "connection
/// refused" as from a crashed server.
pub struct HttpServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `handler` (request → status and JSON body) on a free port.
    pub fn start(
        handler: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static,
    ) -> HttpServer {
        HttpServer::start_on(mcpgw_testkit::free_port(), Arc::new(handler))
    }

    /// Serves `handler` on `port` (e.g. to come back on the port a stopped server had).
    pub fn start_on(port: u16, handler: Arc<Handler>) -> HttpServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let handler = handler.clone();
                std::thread::spawn(move || serve(conn, &*handler));
            }
        });
        HttpServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listening socket and waits until it is closed.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = thread.join();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(conn: TcpStream, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let Ok((line, headers)) = read_head(&mut reader) else {
        return;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return;
    };
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
    };
    let (status, body) = handler(&request);
    let mut out = write_half;
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// An upstream that answers every request with 200 and a JSON object of what it received:
/// `{"method", "path", "headers": {name: value, ...}}` (repeated headers joined with `,`).
pub fn echo_server() -> HttpServer {
    HttpServer::start(|req| {
        let mut headers: BTreeMap<&str, String> = BTreeMap::new();
        for (n, v) in &req.headers {
            headers
                .entry(n)
                .and_modify(|old| {
                    old.push(',');
                    old.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        let body = json!({ "method": req.method, "path": req.path, "headers": headers });
        (200, body.to_string())
    })
}

/// A key server standing in for the sidecar's `/.well-known/jwks.json`: serves the JWKS it holds
/// at every path; it can be changed, stopped (connections refused) and started again on its port.
pub struct KeyServer {
    pub port: u16,
    document: Arc<Mutex<String>>,
    /// How long each answer takes.
    pub delay: Duration,
    server: Option<HttpServer>,
}

impl KeyServer {
    /// A key server on a free port serving `jwks`, not started yet.
    pub fn new(jwks: String) -> KeyServer {
        KeyServer {
            port: mcpgw_testkit::free_port(),
            document: Arc::new(Mutex::new(jwks)),
            delay: Duration::ZERO,
            server: None,
        }
    }

    /// Starts serving (again) on its port.
    pub fn start(&mut self) {
        let document = self.document.clone();
        let delay = self.delay;
        let handler: Arc<Handler> = Arc::new(move |_: &Request| {
            std::thread::sleep(delay);
            (200, document.lock().unwrap().clone())
        });
        self.server = Some(HttpServer::start_on(self.port, handler));
    }

    /// Replaces the JWKS served from now on.
    pub fn publish(&self, jwks: String) {
        *self.document.lock().unwrap() = jwks;
    }

    /// Stops serving: the port refuses connections.
    pub fn stop(&mut self) {
        self.server = None;
    }
}
