//! Shared by the Envoy end-to-end tests and `make bench`: an Envoy bootstrap with the JWT filter
//! in front of the policy filter, tokens signed with a key generated here (the JWT filter gets
//! it as an inline JWKS), a small MCP upstream that answers like an MCP server would (it is the
//! filter's upstream, not a part of ours), and a plain HTTP/1.1 client.

#![allow(dead_code)] // reason: each test binary that includes this module uses a different part

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcpgw_core::jwk::{Algorithm, Jwks};
use mcpgw_core::signing::SigningKey;
use serde_json::{Value, json};

/// The issuer the JWT filter accepts.
pub const ISSUER: &str = "http://issuer.test";
/// The key id of the test key.
pub const KID: &str = "policy-test-key";

/// A built module in `dist/` (`make wasm`).
pub fn wasm(name: &str) -> PathBuf {
    let path = mcpgw_testkit::dist_wasm(name);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "{} is missing ({size} bytes): run `make wasm` first",
        path.display()
    );
    path
}

/// The test's signing key and the tokens it signs.
pub struct Issuer {
    key: SigningKey,
}

impl Issuer {
    /// A fresh ES256 key.
    pub fn new() -> Issuer {
        Issuer {
            key: SigningKey::generate(Algorithm::ES256).unwrap(),
        }
    }

    /// The JWKS the JWT filter is configured with.
    pub fn jwks(&self) -> Value {
        serde_json::to_value(Jwks {
            keys: vec![self.key.public_jwk(KID)],
        })
        .unwrap()
    }

    /// An access token for `audience` (RFC 9068 claims, contracts.md).
    pub fn token(
        &self,
        sub: &str,
        user: &str,
        groups: &[&str],
        scope: &str,
        audience: &str,
    ) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({
            "iss": ISSUER, "sub": sub, "aud": audience, "client_id": "client-a", "scope": scope,
            "exp": now + 3600, "iat": now, "nbf": now, "jti": mcpgw_testkit::unique("jti"),
            "preferred_username": user, "groups": groups,
        });
        self.key.sign_access_token(KID, &claims).unwrap()
    }
}

/// The canonical URL of server `name` behind the gateway on `port`.
pub fn canonical(port: u16, name: &str) -> String {
    format!("http://127.0.0.1:{port}/{name}/mcp")
}

/// The JWT filter's configuration for servers `names` (filters/jwt/src/config.rs).
pub fn jwt_config(port: u16, issuer: &Issuer, names: &[&str]) -> Value {
    let resources: Vec<Value> = names
        .iter()
        .map(|n| json!({"canonical_url": canonical(port, n), "path_prefix": format!("/{n}/mcp")}))
        .collect();
    json!({"issuer": ISSUER, "resources": resources, "jwks": {"inline": issuer.jwks()}})
}

/// An `http_filters` entry loading `module` with `plugin_config`.
pub fn wasm_filter(name: &str, module: &str, plugin_config: &Value) -> Value {
    wasm_filter_from(name, &wasm(module), &plugin_config.to_string())
}

/// An `http_filters` entry loading the module at `path` with the plugin configuration `text`.
pub fn wasm_filter_from(name: &str, path: &Path, text: &str) -> Value {
    json!({
        "name": format!("mcpgw.{name}"),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": format!("mcpgw_{name}"),
                "root_id": format!("mcpgw_{name}"),
                "fail_open": false,
                "vm_config": {
                    "vm_id": format!("mcpgw_{name}"),
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": path } }
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": text
                }
            }
        }
    })
}

/// The access-log line: the policy decision as the filter wrote it to filter state.
pub const ACCESS_LOG_FORMAT: &str = "policy %RESPONSE_CODE% decision=%FILTER_STATE(wasm.mcpgw_policy.decision:PLAIN)% \
server=%FILTER_STATE(wasm.mcpgw_policy.server:PLAIN)% method=%FILTER_STATE(wasm.mcpgw_policy.method:PLAIN)% \
rule=%FILTER_STATE(wasm.mcpgw_policy.rule:PLAIN)% upstream=%UPSTREAM_CLUSTER%\n";

/// A bootstrap: one listener on `port` running `filters`, routing by the `x-mcpgw-server`
/// header the policy filter sets to one cluster per `(server, upstream port)`.
pub fn bootstrap(
    admin_port: u16,
    port: u16,
    filters: Vec<Value>,
    upstreams: &[(&str, u16)],
    access_log: &str,
) -> String {
    let mut http_filters = filters;
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    }));
    let mut routes: Vec<Value> = upstreams
        .iter()
        .map(|(name, _)| {
            json!({
                "match": { "prefix": "/", "headers": [{ "name": "x-mcpgw-server", "string_match": { "exact": name } }] },
                "route": { "cluster": name, "timeout": "5s" }
            })
        })
        .collect();
    // Without the policy filter in the chain, route by path.
    routes.extend(upstreams.iter().map(|(name, _)| {
        json!({ "match": { "prefix": format!("/{name}/") }, "route": { "cluster": name, "timeout": "5s" } })
    }));
    let clusters: Vec<Value> = upstreams
        .iter()
        .map(|(name, p)| {
            json!({
                "name": name, "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                    "address": { "socket_address": { "address": "127.0.0.1", "port_value": p } } } }] }] }
            })
        })
        .collect();
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "mcp",
        // As envoy/gateway.yaml: the filters see the path the router matches.
        "normalize_path": true,
        "merge_slashes": true,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "route_config": { "name": "mcp", "virtual_hosts": [{ "name": "mcp", "domains": ["*"], "routes": routes }] },
        "http_filters": http_filters
    });
    if !access_log.is_empty() {
        hcm["access_log"] = json!([{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": access_log,
                "log_format": { "text_format_source": { "inline_string": ACCESS_LOG_FORMAT } }
            }
        }]);
    }
    json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": admin_port } } },
        "static_resources": {
            "listeners": [{
                "name": "mcp",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
                "filter_chains": [{ "filters": [{ "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm }] }]
            }],
            "clusters": clusters
        }
    })
    .to_string()
}

/// An HTTP response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one HTTP/1.1 message head: the first line and the headers (names lower-case).
fn read_head(reader: &mut impl BufRead) -> Option<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    Some((first.trim_end().to_owned(), headers))
}

/// Reads a body framed by `content-length` or chunked encoding.
fn read_body(reader: &mut impl BufRead, headers: &[(String, String)]) -> Option<Vec<u8>> {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                return Some(body);
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let n: usize = get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; n];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// One HTTP/1.1 request on a new connection.
pub fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    request_on(&mut stream, port, method, path, headers, body)
}

/// One HTTP/1.1 request on an open (keep-alive) connection.
pub fn request_on(
    stream: &mut TcpStream,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).unwrap();
    let mut reader = BufReader::new(stream);
    let (status_line, headers) = read_head(&mut reader).expect("no response");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = read_body(&mut reader, &headers).expect("truncated body");
    Response {
        status,
        headers,
        body,
    }
}

/// The tools the fake MCP upstream lists.
pub const TOOLS: [&str; 4] = ["echo", "add", "printEnv", "longRunningOperation"];

/// The answer of the fake MCP server `name` to one JSON-RPC message (`None` for a notification).
fn answer(name: &str, msg: &Value, headers: &[(String, String)]) -> Option<Value> {
    let id = msg.get("id")?.clone();
    let result = match msg["method"].as_str() {
        Some("tools/list") => {
            json!({ "tools": TOOLS.iter().map(|t| json!({"name": t, "inputSchema": {"type": "object"}})).collect::<Vec<_>>() })
        }
        _ => {
            let seen: serde_json::Map<String, Value> = headers
                .iter()
                .filter(|(k, _)| k.starts_with("x-mcpgw-") || k == "authorization")
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            json!({ "server": name, "headers": seen })
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// A fake MCP server over streamable HTTP: lists [`TOOLS`], answers every other request with
/// its own name and the `x-mcpgw-*` headers it received; SSE when the request says
/// `x-test-sse: 1`, JSON otherwise. It is the upstream of the filter under test.
pub struct Upstream {
    /// Its port.
    pub port: u16,
}

impl Upstream {
    /// Starts it on a free port (threads live as long as the test binary).
    pub fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || serve(name, conn));
            }
        });
        Upstream { port }
    }
}

fn serve(name: &str, conn: TcpStream) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Some((_, headers)) = read_head(&mut reader) {
        let Some(body) = read_body(&mut reader, &headers) else {
            return;
        };
        let sse = headers.iter().any(|(k, v)| k == "x-test-sse" && v == "1");
        let reply = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => {
                let answers: Vec<Value> = items
                    .iter()
                    .filter_map(|m| answer(name, m, &headers))
                    .collect();
                (!answers.is_empty()).then_some(Value::Array(answers))
            }
            Ok(msg) => answer(name, &msg, &headers),
            Err(_) => Some(json!({"jsonrpc": "2.0", "id": null, "result": {"server": name}})),
        };
        let response = match reply {
            None => "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_owned(),
            Some(v) if sse => {
                let progress = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "working"}});
                let events =
                    format!("event: message\ndata: {progress}\n\nevent: message\ndata: {v}\n\n");
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{events}",
                    events.len()
                )
            }
            Some(v) => {
                let text = v.to_string();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                )
            }
        };
        if out.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
