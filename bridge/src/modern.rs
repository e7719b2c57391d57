//! MCP 2026-07-28 for clients of any stdio server: stateless requests (version and capabilities
//! in `_meta`, no session), the header checks an intermediary must make (`MCP-Protocol-Version`,
//! `Mcp-Method`, `Mcp-Name` against the body: HTTP 400 with JSON-RPC -32020), `server/discover`
//! and `subscriptions/listen`. Most stdio servers speak an older revision, so requests go to a
//! child the bridge initialised itself: the reserved `_meta` keys are stripped on the way in, and
//! results get `resultType` and the server's info on the way out. What cannot be translated (the
//! handshake, server-to-client requests, which 2026-07-28 has no back channel for) gets a clear
//! JSON-RPC error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use mcpgw_core::mcp::{self, HEADER_MISMATCH, Limits, McpHeaders};
use mcpgw_core::session::Caller;

use crate::child::{Owner, error_response};
use crate::http::{
    HANDSHAKE_VERSIONS, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, Kind, METHOD_NOT_FOUND,
    ResponseHook, VERSION_HEADER, forward_request, json_response, rpc_error, sse_response,
};
use crate::session::sse_frame_plain;
use crate::{Bridge, Stateless};

/// The stateless revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// JSON-RPC: the requested protocol version is not served.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

const PROTOCOL_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";
const CLIENT_INFO_KEY: &str = "io.modelcontextprotocol/clientInfo";
const CLIENT_CAPABILITIES_KEY: &str = "io.modelcontextprotocol/clientCapabilities";
const LOG_LEVEL_KEY: &str = "io.modelcontextprotocol/logLevel";
const SERVER_INFO_KEY: &str = "io.modelcontextprotocol/serverInfo";
const SUBSCRIPTION_ID_KEY: &str = "io.modelcontextprotocol/subscriptionId";

/// Whether a session-less POST speaks 2026-07-28 (or claims a version that is not a handshake one).
pub fn is_modern(h: &HeaderMap, msg: &Value) -> bool {
    let header_modern = h
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !HANDSHAKE_VERSIONS.contains(&v));
    header_modern
        || msg
            .pointer("/params/_meta")
            .and_then(|m| m.get(PROTOCOL_VERSION_KEY))
            .is_some()
}

fn header_once<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
    let mut values = h.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    first.map(|v| v.to_str().map_err(|_| ())).transpose()
}

/// The validation ladder of a 2026-07-28 request: envelope, headers against the body (core's
/// rule: `Mcp-Method` and `Mcp-Name`, -32020), version.
fn check(
    h: &HeaderMap,
    body: &[u8],
    msg: &Value,
    limits: &Limits,
) -> Result<(), (i64, String, Option<Value>)> {
    let meta = msg.pointer("/params/_meta").and_then(Value::as_object);
    let Some(meta) = meta.filter(|m| {
        m.contains_key(PROTOCOL_VERSION_KEY) && m.contains_key(CLIENT_CAPABILITIES_KEY)
    }) else {
        return Err((
            INVALID_PARAMS,
            format!("params._meta must carry {PROTOCOL_VERSION_KEY} and {CLIENT_CAPABILITIES_KEY}"),
            None,
        ));
    };
    let mismatch = |what: String| Err((HEADER_MISMATCH, what, None));
    let (Ok(version_h), Ok(method), Ok(name)) = (
        header_once(h, VERSION_HEADER),
        header_once(h, "mcp-method"),
        header_once(h, "mcp-name"),
    ) else {
        return mismatch("a repeated MCP routing header does not match the request body".into());
    };
    let version = meta.get(PROTOCOL_VERSION_KEY);
    if version_h.is_none() || version.and_then(Value::as_str) != version_h {
        return mismatch("MCP-Protocol-Version header does not match the request body".into());
    }
    let parsed = mcp::parse_body(body, limits).map_err(|e| (e.rpc_code(), e.to_string(), None))?;
    let headers = McpHeaders {
        protocol_version: version_h,
        method,
        name,
    };
    if let Err(e) = headers.check(&parsed) {
        return mismatch(e.to_string());
    }
    match version.and_then(Value::as_str) {
        Some(MODERN_VERSION) => Ok(()),
        Some(v) => Err((
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version".into(),
            Some(json!({"supported": [MODERN_VERSION], "requested": v})),
        )),
        None => Err((
            INVALID_PARAMS,
            format!("{PROTOCOL_VERSION_KEY} must be a string"),
            None,
        )),
    }
}

/// HTTP status for a JSON-RPC error code on the 2026-07-28 wire.
fn status_for(code: i64) -> StatusCode {
    match code {
        METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        -32700
        | INVALID_REQUEST
        | INVALID_PARAMS
        | HEADER_MISMATCH
        | -32021
        | UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

fn error_with_data(id: Value, code: i64, message: &str, data: Option<Value>) -> Response {
    let mut e = error_response(id, code, message);
    if let Some(d) = data {
        e["error"]["data"] = d;
    }
    json_response(status_for(code), &e)
}

/// Serves one 2026-07-28 POST.
pub async fn handle(
    b: &Arc<Bridge>,
    h: &HeaderMap,
    caller: &Caller<'_>,
    body: &[u8],
    mut msg: Value,
    k: Kind,
) -> Response {
    match k {
        // The core protocol has no client-to-server notifications on this wire.
        Kind::Notification => return StatusCode::ACCEPTED.into_response(),
        Kind::Response => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                INVALID_REQUEST,
                "2026-07-28 has no server-to-client requests to answer",
            );
        }
        Kind::Request => {}
    }
    let id = msg["id"].clone();
    let limits = Limits {
        max_body_bytes: b.cfg.max_body,
        ..Limits::default()
    };
    if let Err((code, message, data)) = check(h, body, &msg, &limits) {
        return error_with_data(id, code, &message, data);
    }
    let method = msg["method"].as_str().unwrap_or("").to_owned();
    let stateless = match b.stateless_child(Some(caller)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the MCP server for a 2026-07-28 request");
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                id,
                INTERNAL_ERROR,
                "cannot start the MCP server",
            );
        }
    };
    let init = stateless
        .child
        .init
        .get()
        .map(|i| i.result.clone())
        .unwrap_or(Value::Null);
    match method.as_str() {
        "server/discover" => {
            let mut result = json!({
                "supportedVersions": [MODERN_VERSION],
                "capabilities": init.get("capabilities").cloned().unwrap_or(json!({})),
                "resultType": "complete",
                "ttlMs": 0,
                "cacheScope": "private",
                "_meta": {SERVER_INFO_KEY: init.get("serverInfo").cloned().unwrap_or(Value::Null)},
            });
            if let Some(i) = init.get("instructions") {
                result["instructions"] = i.clone();
            }
            json_response(
                StatusCode::OK,
                &json!({"jsonrpc": "2.0", "id": id, "result": result}),
            )
        }
        "subscriptions/listen" => listen(b, &stateless, &init, &msg).await,
        "initialize" | "resources/subscribe" | "resources/unsubscribe" | "logging/setLevel" => {
            error_with_data(
                id,
                METHOD_NOT_FOUND,
                &format!(
                    "{method} has no 2026-07-28 equivalent the bridge can translate (stateless requests; use server/discover or subscriptions/listen)"
                ),
                None,
            )
        }
        _ => {
            strip_reserved_meta(&mut msg);
            let server_info = init.get("serverInfo").cloned();
            let cacheable = cacheable(&method);
            let hook: ResponseHook = Arc::new(move |v: &mut Value| {
                stamp(v, server_info.as_ref(), cacheable);
            });
            let resp = forward_request(b, &stateless.child, msg, None, Some(hook)).await;
            with_error_status(resp).await
        }
    }
}

fn strip_reserved_meta(msg: &mut Value) {
    if let Some(meta) = msg
        .pointer_mut("/params/_meta")
        .and_then(Value::as_object_mut)
    {
        for k in [
            PROTOCOL_VERSION_KEY,
            CLIENT_INFO_KEY,
            CLIENT_CAPABILITIES_KEY,
            LOG_LEVEL_KEY,
        ] {
            meta.remove(k);
        }
        if meta.is_empty()
            && let Some(p) = msg.get_mut("params").and_then(Value::as_object_mut)
        {
            p.remove("_meta");
        }
    }
}

/// Whether 2026-07-28 requires caching hints (`ttlMs`, `cacheScope`) on this method's result.
fn cacheable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// Stamps a result from an older child for the 2026-07-28 wire: `resultType`, the server's info,
/// and for cacheable results `ttlMs: 0` and `cacheScope: "private"` (an older server gives no
/// hint, so nothing is cached and nothing is shared across users).
fn stamp(v: &mut Value, server_info: Option<&Value>, cacheable: bool) {
    let Some(r) = v.get_mut("result").and_then(Value::as_object_mut) else {
        return;
    };
    r.entry("resultType").or_insert(json!("complete"));
    if cacheable {
        r.entry("ttlMs").or_insert(json!(0));
        r.entry("cacheScope").or_insert(json!("private"));
    }
    if let Some(info) = server_info {
        let meta = r.entry("_meta").or_insert(json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.entry(SERVER_INFO_KEY).or_insert(info.clone());
        }
    }
}

/// A JSON error answer gets the HTTP status 2026-07-28 gives its code.
async fn with_error_status(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get("content-type")
        .is_some_and(|c| c.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return resp;
    }
    let Ok(bytes) = axum::body::to_bytes(resp.into_body(), usize::MAX).await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = v
        .pointer("/error/code")
        .and_then(Value::as_i64)
        .map_or(StatusCode::OK, status_for);
    json_response(status, &v)
}

/// `subscriptions/listen`: acknowledges what the child can deliver, then streams the matching
/// notifications until the client goes away or the bridge shuts down.
async fn listen(b: &Bridge, stateless: &Stateless, init: &Value, msg: &Value) -> Response {
    let child = &stateless.child;
    let id = msg["id"].clone();
    let wanted = msg
        .pointer("/params/notifications")
        .cloned()
        .unwrap_or(json!({}));
    let caps = init.get("capabilities").cloned().unwrap_or(json!({}));
    let can = |cap: &str, flag: &str| {
        caps.get(cap)
            .and_then(|c| c.get(flag))
            .and_then(Value::as_bool)
            == Some(true)
    };
    let want = |k: &str| wanted.get(k).and_then(Value::as_bool) == Some(true);
    let mut accepted = Map::new();
    let mut filter = Filter::default();
    for (key, cap, slot) in [
        ("toolsListChanged", "tools", &mut filter.tools),
        ("promptsListChanged", "prompts", &mut filter.prompts),
        ("resourcesListChanged", "resources", &mut filter.resources),
    ] {
        if want(key) && can(cap, "listChanged") {
            *slot = true;
            accepted.insert(key.into(), json!(true));
        }
    }
    if let Some(uris) = wanted
        .get("resourceSubscriptions")
        .and_then(Value::as_array)
        && can("resources", "subscribe")
    {
        for uri in uris.iter().filter_map(Value::as_str) {
            let sub = json!({"jsonrpc": "2.0", "id": 0, "method": "resources/subscribe", "params": {"uri": uri}});
            if matches!(child.call(sub, b.cfg.init_timeout).await, Ok(r) if r.get("result").is_some())
            {
                filter.uris.push(uri.to_owned());
            }
        }
        accepted.insert("resourceSubscriptions".into(), json!(filter.uris));
    }
    let (tx, rx) = mpsc::channel(64);
    let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
        "params": {"notifications": accepted, "_meta": {SUBSCRIPTION_ID_KEY: id}}});
    if tx.try_send(sse_frame_plain(&ack)).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    stateless.hub.add(Listener { id, filter, tx });
    sse_response(Vec::new(), Some(rx))
}

#[derive(Debug, Default)]
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: Vec<String>,
}

#[derive(Debug)]
struct Listener {
    id: Value,
    filter: Filter,
    tx: mpsc::Sender<Bytes>,
}

impl Listener {
    fn wants(&self, msg: &Value) -> bool {
        match msg.get("method").and_then(Value::as_str) {
            Some("notifications/tools/list_changed") => self.filter.tools,
            Some("notifications/prompts/list_changed") => self.filter.prompts,
            Some("notifications/resources/list_changed") => self.filter.resources,
            Some("notifications/resources/updated") => msg
                .pointer("/params/uri")
                .and_then(Value::as_str)
                .is_some_and(|u| self.filter.uris.iter().any(|x| x == u)),
            _ => false,
        }
    }
}

/// The open `subscriptions/listen` streams, fed by the shared child's notifications.
#[derive(Debug, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug, Default)]
struct HubInner {
    listeners: Mutex<Vec<Listener>>,
    closed: AtomicBool,
}

impl Hub {
    /// The owner to install on the shared child.
    pub fn owner(&self) -> std::sync::Weak<dyn Owner> {
        let weak: std::sync::Weak<HubInner> = Arc::downgrade(&self.inner);
        weak
    }

    fn add(&self, l: Listener) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut ls) = self.inner.listeners.lock() {
            ls.retain(|l| !l.tx.is_closed());
            ls.push(l);
        }
    }

    /// Whether a `subscriptions/listen` stream is open.
    pub fn is_listened(&self) -> bool {
        self.inner
            .listeners
            .lock()
            .is_ok_and(|ls| ls.iter().any(|l| !l.tx.is_closed()))
    }

    /// Ends every listen stream with its final result (shutdown).
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let ls: Vec<Listener> = self
            .inner
            .listeners
            .lock()
            .map(|mut l| l.drain(..).collect())
            .unwrap_or_default();
        for l in ls {
            let done = json!({"jsonrpc": "2.0", "id": l.id,
                "result": {"resultType": "complete", "_meta": {SUBSCRIPTION_ID_KEY: l.id}}});
            let _ = l.tx.try_send(sse_frame_plain(&done));
        }
    }
}

impl Owner for HubInner {
    fn server_message(
        &self,
        msg: Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Value>> + Send + '_>> {
        Box::pin(async move {
            if let Some(req_id) = msg.get("id").filter(|_| msg.get("method").is_some()) {
                // No back channel on 2026-07-28: the child must not wait for an answer.
                return Some(error_response(
                    req_id.clone(),
                    METHOD_NOT_FOUND,
                    "the client reached this server over MCP 2026-07-28, which has no server-to-client requests",
                ));
            }
            let targets: Vec<(Value, mpsc::Sender<Bytes>)> = self
                .listeners
                .lock()
                .map(|ls| {
                    ls.iter()
                        .filter(|l| l.wants(&msg))
                        .map(|l| (l.id.clone(), l.tx.clone()))
                        .collect()
                })
                .unwrap_or_default();
            for (sub, tx) in targets {
                let mut m = msg.clone();
                if let Some(p) = m.as_object_mut() {
                    let params = p.entry("params").or_insert(json!({}));
                    if let Some(params) = params.as_object_mut() {
                        let meta = params.entry("_meta").or_insert(json!({}));
                        meta[SUBSCRIPTION_ID_KEY] = sub;
                    }
                }
                // A listener that does not keep up loses the notification, never blocks the child.
                let _ = tx.try_send(sse_frame_plain(&m));
            }
            None
        })
    }
}
