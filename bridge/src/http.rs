//! The HTTP surface: `POST`/`GET`/`DELETE` on the MCP endpoint with the transport rules of MCP
//! 2025-06-18 and 2025-11-25 (session header, protocol-version header, Origin, Accept,
//! Content-Type, 202 for notifications and responses, JSON or SSE answers, `Last-Event-ID`), plus
//! `/health` and `/ready`. Requests of the 2026-07-28 revision are handed to [`crate::modern`].

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use mcpgw_core::identity::{self, is_underscore_identity_header};
use mcpgw_core::session::{Caller, CallerError, SessionOwner};

use crate::child::{CHILD_EXITED, Child, REQUEST_TIMED_OUT, error_response};
use crate::config::Isolation;
use crate::limits::retry_after_secs;
use crate::session::{Session, StreamError};
use crate::{Bridge, Refusal, new_session_id};

/// `Mcp-Session-Id`.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// `MCP-Protocol-Version`.
pub const VERSION_HEADER: &str = "mcp-protocol-version";
/// Protocol revisions served with sessions (the initialize handshake).
pub const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

pub use mcpgw_core::mcp::{INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR};

/// JSON-RPC: invalid params.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: method not found.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC (implementation-defined range): a per-user limit is reached (HTTP 429).
pub const LIMITED: i64 = -32029;

/// The router: the MCP endpoint, `/health` and `/ready`.
pub fn router(bridge: Arc<Bridge>) -> Router {
    let limit = bridge.cfg.max_body;
    Router::new()
        .route(
            &bridge.cfg.path,
            get(get_mcp).post(post_mcp).delete(delete_mcp),
        )
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(bridge)
}

async fn ready(State(b): State<Arc<Bridge>>) -> Response {
    if b.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the MCP server has not started and initialised",
        )
            .into_response()
    }
}

/// A JSON-RPC error with an HTTP status.
pub fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    json_response(status, &error_response(id, code, message))
}

/// `r` with `Retry-After: secs`.
pub fn with_retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// Takes one of `caller`'s tool calls per second, or answers 429 with `Retry-After`.
#[allow(clippy::result_large_err)] // reason: the error is the response itself, built once per refusal
pub fn admit_tool_call(b: &Bridge, caller: &Caller<'_>, id: &Value) -> Result<(), Response> {
    b.limiter
        .admit(caller.subject, std::time::Instant::now())
        .map_err(|wait| {
            debug!(
                subject = caller.subject,
                "tool call refused: the user's rate is reached"
            );
            let secs = retry_after_secs(wait);
            with_retry_after(
                rpc_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    id.clone(),
                    LIMITED,
                    &format!(
                        "more than {} tool calls per second; retry after {secs} s",
                        b.cfg.tool_calls_per_second
                    ),
                ),
                secs,
            )
        })
}

/// A JSON body.
pub fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An SSE body fed by `rx`, after `backlog`.
pub fn sse_response(backlog: Vec<Bytes>, rx: Option<mpsc::Receiver<Bytes>>) -> Response {
    let head = tokio_stream::iter(backlog);
    let body = match rx {
        Some(rx) => Body::from_stream(head.chain(ReceiverStream::new(rx)).map(Ok::<_, Infallible>)),
        None => Body::from_stream(head.map(Ok::<_, Infallible>)),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// What a JSON-RPC message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `method` and `id`.
    Request,
    /// `method`, no `id`.
    Notification,
    /// `id` with `result` or `error`.
    Response,
}

/// Classifies a JSON-RPC message, or `None` when it is none of the three.
pub fn kind(msg: &Value) -> Option<Kind> {
    let obj = msg.as_object()?;
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return None;
    }
    let id_ok = obj
        .get("id")
        .is_some_and(|i| i.is_string() || i.is_i64() || i.is_u64());
    match obj.get("method") {
        Some(Value::String(_)) if id_ok => Some(Kind::Request),
        Some(Value::String(_)) if !obj.contains_key("id") => Some(Kind::Notification),
        None if obj.contains_key("id")
            && (obj.contains_key("result") || obj.contains_key("error")) =>
        {
            Some(Kind::Response)
        }
        _ => None,
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Whether the `Accept` header admits `mime` (`*/*` and `type/*` count).
pub fn accepts(h: &HeaderMap, mime: &str) -> bool {
    let (ty, _) = mime.split_once('/').unwrap_or((mime, ""));
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|part| {
                let m = part
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                m == mime || m == "*/*" || m == format!("{ty}/*")
            })
        })
}

/// Origin validation (MCP transports: servers MUST validate `Origin` against DNS rebinding).
fn origin_allowed(b: &Bridge, h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if b.cfg
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        rest.split(':').next().unwrap_or("")
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

fn forbidden_origin() -> Response {
    rpc_error(
        StatusCode::FORBIDDEN,
        Value::Null,
        INVALID_REQUEST,
        "origin not allowed",
    )
}

/// The caller, from the identity headers the gateway set (core's rule: exactly one non-empty
/// `x-mcpgw-subject`). A request without one did not come through the gateway and is refused
/// (403); an identity header spelled with `_` is refused (400) whatever else the request holds.
#[allow(clippy::result_large_err)] // reason: the error is the response itself, built once per refusal
pub fn caller(h: &HeaderMap) -> Result<Caller<'_>, Response> {
    if let Some(name) = h.keys().find(|n| is_underscore_identity_header(n.as_str())) {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            &format!("header {name} is refused: identity headers are never written with `_`"),
        ));
    }
    let utf8 = |name: &str| {
        h.get_all(name)
            .iter()
            .all(|v| std::str::from_utf8(v.as_bytes()).is_ok())
    };
    if !(utf8(identity::SUBJECT) && utf8(identity::CLIENT_ID)) {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            "identity headers must be UTF-8",
        ));
    }
    Caller::from_headers(|name| {
        h.get_all(name)
            .iter()
            .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
    })
    .map_err(|e| {
        let status = match e {
            CallerError::NoSubject | CallerError::Undecodable(_) => StatusCode::FORBIDDEN,
            CallerError::Repeated(_) => StatusCode::BAD_REQUEST,
        };
        rpc_error(status, Value::Null, INVALID_REQUEST, &e.to_string())
    })
}

/// The answer to a session that does not exist, is closed or belongs to another caller: the
/// three are indistinguishable.
pub fn session_not_found() -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        Value::Null,
        INVALID_REQUEST,
        "session not found",
    )
}

/// Checks the session header and the protocol-version header; returns the session if `caller`
/// may use it (core's rule: the caller that opened it).
#[allow(clippy::result_large_err)] // reason: the error is the response itself, built once per refusal
fn find_session(b: &Bridge, h: &HeaderMap, caller: &Caller<'_>) -> Result<Arc<Session>, Response> {
    if let Some(v) = header_str(h, VERSION_HEADER)
        && !HANDSHAKE_VERSIONS.contains(&v)
    {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            &format!("unsupported MCP-Protocol-Version: {v}"),
        ));
    }
    let Some(id) = header_str(h, SESSION_HEADER) else {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            "missing Mcp-Session-Id header",
        ));
    };
    match b.session(id) {
        Some(s) if !s.is_closed() && s.owner.admits(caller) => Ok(s),
        _ => Err(session_not_found()),
    }
}

async fn post_mcp(State(b): State<Arc<Bridge>>, h: HeaderMap, body: Bytes) -> Response {
    if !origin_allowed(&b, &h) {
        return forbidden_origin();
    }
    let caller = match caller(&h) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !(accepts(&h, "application/json") && accepts(&h, "text/event-stream")) {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            INVALID_REQUEST,
            "Accept must list application/json and text/event-stream",
        );
    }
    let json_ct = header_str(&h, "content-type")
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
    if !json_ct {
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Value::Null,
            INVALID_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                PARSE_ERROR,
                "parse error",
            );
        }
    };
    if msg.is_array() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            "JSON-RPC batches are not supported",
        );
    }
    let Some(k) = kind(&msg) else {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_REQUEST,
            "not a JSON-RPC 2.0 message",
        );
    };
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    if k == Kind::Request
        && method == "tools/call"
        && let Err(r) = admit_tool_call(&b, &caller, &msg["id"])
    {
        return r;
    }
    if h.get(SESSION_HEADER).is_none() && crate::modern::is_modern(&h, &msg) {
        return crate::modern::handle(&b, &h, &caller, &body, msg, k).await;
    }
    if k == Kind::Request && method == "initialize" {
        if h.get(SESSION_HEADER).is_some() {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                msg["id"].clone(),
                INVALID_REQUEST,
                "initialize must not carry Mcp-Session-Id",
            );
        }
        return initialize(&b, &caller, msg).await;
    }
    let session = match find_session(&b, &h, &caller) {
        Ok(s) => s,
        Err(r) => return r,
    };
    session.touch();
    match k {
        Kind::Request => forward_request(&b, &session.child, msg, Some(&session), None).await,
        Kind::Notification if method == "notifications/initialized" && session.pre_initialised => {
            StatusCode::ACCEPTED.into_response()
        }
        Kind::Notification | Kind::Response => match session.child.send(&msg).await {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(_) => session_not_found(),
        },
    }
}

async fn initialize(b: &Arc<Bridge>, caller: &Caller<'_>, msg: Value) -> Response {
    let id = msg["id"].clone();
    let Some(version) = msg
        .pointer("/params/protocolVersion")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_PARAMS,
            "initialize needs params.protocolVersion",
        );
    };
    let slot = match b.reserve_session(caller) {
        Ok(slot) => slot,
        Err(Refusal::Full) => {
            return with_retry_after(
                rpc_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    id,
                    INTERNAL_ERROR,
                    "too many sessions; retry later",
                ),
                b.cfg.retry_after,
            );
        }
        Err(Refusal::UserFull) => {
            debug!(
                subject = caller.subject,
                "session refused: the user's maximum is reached"
            );
            return with_retry_after(
                rpc_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    id,
                    LIMITED,
                    &format!(
                        "you have {} open sessions on this server, the most allowed; close one (DELETE) or retry later",
                        b.cfg.max_sessions_per_user
                    ),
                ),
                b.cfg.retry_after,
            );
        }
    };
    let started = match b.cfg.isolation {
        Isolation::Shared => b
            .stateless_child(Some(caller))
            .await
            .map(|s| (Arc::clone(&s.child), true, false))
            .map_err(|e| e.to_string()),
        Isolation::Session | Isolation::User => match b.pool.take(&version) {
            Some(c) => Ok((c, true, true)),
            None => b
                .child_dir(Some(caller))
                .map_err(|e| e.to_string())
                .and_then(|dir| Child::spawn(&b.child_opts, &dir).map_err(|e| e.to_string()))
                .map(|c| (c, false, true)),
        },
    };
    let (child, pre_initialised, owns) = match started {
        Ok(s) => s,
        Err(error) => {
            warn!(%error, "cannot start the MCP server for a new session");
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                id,
                INTERNAL_ERROR,
                "cannot start the MCP server",
            );
        }
    };
    let result = if pre_initialised {
        child
            .init
            .get()
            .map(|i| i.result.clone())
            .unwrap_or(Value::Null)
    } else {
        match child.call(msg.clone(), b.cfg.init_timeout).await {
            Ok(resp) if resp.get("result").is_some() => resp["result"].clone(),
            Ok(resp) => {
                child.stop(crate::STOP_GRACE).await;
                return json_response(StatusCode::OK, &resp);
            }
            Err(e) => {
                warn!(error = %e, "the MCP server failed to initialise");
                child.stop(crate::STOP_GRACE).await;
                return rpc_error(
                    StatusCode::BAD_GATEWAY,
                    id,
                    INTERNAL_ERROR,
                    "the MCP server failed to initialise",
                );
            }
        }
    };
    let negotiated = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(&version)
        .to_owned();
    let session = Session::new(
        new_session_id(),
        SessionOwner::new(caller),
        Arc::clone(&child),
        negotiated,
        pre_initialised,
        owns,
        b.cfg.replay_events,
        b.cfg.slow_client_timeout,
    );
    if owns {
        let weak: std::sync::Weak<Session> = Arc::downgrade(&session);
        child.set_owner(Some(weak));
    }
    session.touch();
    b.insert_session(slot, Arc::clone(&session));
    debug!(session = %session.id, pid = child.pid(), pre_initialised, "session opened");
    let mut r = json_response(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "result": result}),
    );
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r
}

/// Rewrites the child's final response to a request before it goes out (2026-07-28 stamping).
pub type ResponseHook = Arc<dyn Fn(&mut Value) + Send + Sync>;

/// Sends a request to `child`; answers with JSON when the response comes first, else with an SSE
/// stream carrying what the child says about the request and then the response (passed through
/// `hook` first). With a session, the SSE stream is resumable; without one, a client that goes
/// away cancels the request at the child.
pub async fn forward_request(
    b: &Bridge,
    child: &Arc<Child>,
    msg: Value,
    session: Option<&Arc<Session>>,
    hook: Option<ResponseHook>,
) -> Response {
    let finish = move |mut m: Value| {
        if let Some(h) = hook.as_ref().filter(|_| m.get("result").is_some()) {
            h(&mut m);
        }
        m
    };
    let client_id = msg["id"].clone();
    let (tx, mut rx) = mpsc::channel(64);
    let bridge_id = match child.request(msg, tx).await {
        Ok(id) => id,
        Err(_) if session.is_some() => {
            return rpc_error(
                StatusCode::NOT_FOUND,
                client_id,
                CHILD_EXITED,
                "session ended: the MCP server exited",
            );
        }
        Err(_) => {
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                client_id,
                CHILD_EXITED,
                "the MCP server exited",
            );
        }
    };
    let deadline = b
        .cfg
        .request_timeout()
        .map(|t| tokio::time::Instant::now() + t);
    let abandoned = CancelOnDrop(Some((Arc::clone(child), bridge_id)));
    let first = recv_until(&mut rx, deadline).await;
    abandoned.disarm();
    let first = match first {
        Some(m) => m,
        None => return timed_out_or_gone(child, bridge_id, client_id, deadline).await,
    };
    if first.get("method").is_none() {
        return json_response(StatusCode::OK, &finish(first));
    }
    let child = Arc::clone(child);
    match session {
        Some(s) => {
            let (stream, body) = s.open_stream();
            let s = Arc::clone(s);
            tokio::spawn(async move {
                s.emit(stream, &first, false).await;
                loop {
                    let next = match recv_until(&mut rx, deadline).await {
                        Some(m) => m,
                        None => {
                            let err =
                                timeout_error(&child, bridge_id, client_id.clone(), deadline).await;
                            s.emit(stream, &err, true).await;
                            return;
                        }
                    };
                    let last = next.get("method").is_none();
                    let next = if last { finish(next) } else { next };
                    s.emit(stream, &next, last).await;
                    if last {
                        return;
                    }
                }
            });
            sse_response(Vec::new(), Some(body))
        }
        None => {
            let (out, body) = mpsc::channel(64);
            tokio::spawn(async move {
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    let last = m.get("method").is_none();
                    let m = if last { finish(m) } else { m };
                    if out.send(crate::session::sse_frame_plain(&m)).await.is_err() {
                        child.cancel(bridge_id, "the client went away").await;
                        return;
                    }
                    if last {
                        return;
                    }
                    next = match recv_until(&mut rx, deadline).await {
                        Some(m) => Some(m),
                        None => Some(
                            timeout_error(&child, bridge_id, client_id.clone(), deadline).await,
                        ),
                    };
                }
            });
            sse_response(Vec::new(), Some(body))
        }
    }
}

/// Cancels a request at the child when the exchange waiting for its first answer is dropped (the
/// client went away), so abandoned requests of a silent child never pile up as in flight.
struct CancelOnDrop(Option<(Arc<Child>, u64)>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some((child, id)) = self.0.take() {
            tokio::spawn(async move { child.cancel(id, "the client went away").await });
        }
    }
}

async fn recv_until(
    rx: &mut mpsc::Receiver<Value>,
    deadline: Option<tokio::time::Instant>,
) -> Option<Value> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, rx.recv()).await.ok().flatten(),
        None => rx.recv().await,
    }
}

async fn timeout_error(
    child: &Child,
    bridge_id: u64,
    client_id: Value,
    deadline: Option<tokio::time::Instant>,
) -> Value {
    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
        child
            .cancel(bridge_id, "request timed out at the bridge")
            .await;
        error_response(client_id, REQUEST_TIMED_OUT, "request timed out")
    } else {
        error_response(client_id, CHILD_EXITED, "the MCP server process exited")
    }
}

async fn timed_out_or_gone(
    child: &Child,
    bridge_id: u64,
    client_id: Value,
    deadline: Option<tokio::time::Instant>,
) -> Response {
    json_response(
        StatusCode::OK,
        &timeout_error(child, bridge_id, client_id, deadline).await,
    )
}

async fn get_mcp(State(b): State<Arc<Bridge>>, h: HeaderMap) -> Response {
    if !origin_allowed(&b, &h) {
        return forbidden_origin();
    }
    let caller = match caller(&h) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !accepts(&h, "text/event-stream") {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            INVALID_REQUEST,
            "Accept must list text/event-stream",
        );
    }
    if h.get(SESSION_HEADER).is_none()
        && header_str(&h, VERSION_HEADER).is_some_and(|v| !HANDSHAKE_VERSIONS.contains(&v))
    {
        // 2026-07-28 has no GET stream (subscriptions/listen replaces it).
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let session = match find_session(&b, &h, &caller) {
        Ok(s) => s,
        Err(r) => return r,
    };
    session.touch();
    if let Some(last) = header_str(&h, "last-event-id") {
        return match session.resume(last) {
            Ok((backlog, live)) => sse_response(backlog, live),
            Err(StreamError::BadEventId) => rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                INVALID_REQUEST,
                "malformed Last-Event-ID",
            ),
            Err(_) => session_not_found(),
        };
    }
    match session.open_get() {
        Ok(rx) => sse_response(Vec::new(), Some(rx)),
        Err(_) => session_not_found(),
    }
}

async fn delete_mcp(State(b): State<Arc<Bridge>>, h: HeaderMap) -> Response {
    if !origin_allowed(&b, &h) {
        return forbidden_origin();
    }
    let caller = match caller(&h) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let session = match find_session(&b, &h, &caller) {
        Ok(s) => s,
        Err(r) => return r,
    };
    b.remove_session(&session.id);
    debug!(session = %session.id, "session deleted by the client");
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_json_rpc_messages() {
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":1,"method":"x"})),
            Some(Kind::Request)
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","method":"x"})),
            Some(Kind::Notification)
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":"a","result":{}})),
            Some(Kind::Response)
        );
        assert_eq!(kind(&json!({"jsonrpc":"2.0","id":null,"method":"x"})), None);
        assert_eq!(kind(&json!({"id":1,"method":"x"})), None);
    }

    #[test]
    fn accept_matching_honours_wildcards() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream;q=0.9"),
        );
        assert!(accepts(&h, "application/json") && accepts(&h, "text/event-stream"));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/*"));
        assert!(accepts(&h, "text/event-stream") && !accepts(&h, "application/json"));
    }
}
