//! The MCP request model: JSON-RPC 2.0 messages (request, notification, response, batch) as MCP
//! clients send them over streamable HTTP, parsed with size, depth and batch limits, plus the MCP
//! headers (`Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version`) and their required match against the
//! body (MCP 2026-07-28: an intermediary MUST reject a mismatch with 400 / `HeaderMismatch`).
//!
//! It also rewrites `*/list` responses (JSON bodies and SSE streams) so a caller only sees the
//! entries a predicate keeps. Authorization itself lives in [`crate::policy`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// JSON-RPC 2.0 parse error.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0 invalid request.
pub const INVALID_REQUEST: i64 = -32600;
/// MCP 2026-07-28 `HeaderMismatch`: `Mcp-Method` / `Mcp-Name` disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// JSON-RPC "invalid params": a resource URI the gateway will not read another way.
pub const INVALID_PARAMS: i64 = -32602;
/// mcpgw: the policy denied the call (JSON-RPC leaves -32000..-32099 to implementations).
pub const FORBIDDEN: i64 = -32003;
/// JSON-RPC 2.0 internal error.
pub const INTERNAL_ERROR: i64 = -32603;

/// The first MCP revision whose requests carry the required `Mcp-Method` / `Mcp-Name` headers.
pub const STATELESS_REVISION: &str = "2026-07-28";

/// Bounds on what a client may send; everything beyond them is refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body in bytes (413 beyond it).
    pub max_body_bytes: usize,
    /// Deepest nesting of JSON arrays and objects.
    pub max_depth: usize,
    /// Most messages in one JSON-RPC batch.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_depth: 64,
            max_batch: 32,
        }
    }
}

/// Why a body is not an acceptable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is larger than [`Limits::max_body_bytes`].
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The JSON nests deeper than [`Limits::max_depth`].
    #[error("request body nests deeper than {0} levels")]
    TooDeep(usize),
    /// The body is not JSON.
    #[error("request body is not valid JSON")]
    NotJson,
    /// The body is JSON but not a JSON-RPC 2.0 message (the string says what is wrong).
    #[error("invalid JSON-RPC message: {0}")]
    Invalid(&'static str),
    /// A batch has more than [`Limits::max_batch`] members.
    #[error("batch has more than {0} messages")]
    BatchTooLarge(usize),
    /// A resource URI that an MCP server would read as another URI ([`canonical_uri`]).
    #[error("resource URI is not in canonical form (WHATWG URL): send {0}")]
    NotCanonical(String),
    /// A resource URI that does not parse as a URL.
    #[error("resource URI is not a URL")]
    NotUri,
}

impl ParseError {
    /// The HTTP status this error answers with.
    pub fn http_status(&self) -> u32 {
        match self {
            Self::TooLarge(_) => 413,
            _ => 400,
        }
    }

    /// The JSON-RPC error code this error answers with.
    pub fn rpc_code(&self) -> i64 {
        match self {
            Self::NotJson | Self::TooDeep(_) => PARSE_ERROR,
            Self::NotCanonical(_) | Self::NotUri => INVALID_PARAMS,
            _ => INVALID_REQUEST,
        }
    }
}

/// The kind of one JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A request (has `method` and `id`).
    Request,
    /// A notification (has `method`, no `id`).
    Notification,
    /// A response from the client to a server request (has `result` or `error`).
    Response,
}

/// One JSON-RPC message, reduced to what routing and authorization need. `method` and `name`
/// borrow from the body unless they hold escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'a> {
    /// Request, notification or response.
    pub kind: Kind,
    /// The `id` (requests and responses).
    pub id: Option<Value>,
    /// The `method` (requests and notifications).
    pub method: Option<Cow<'a, str>>,
    /// The target the method acts on: `params.name` for `tools/call` and `prompts/get`,
    /// `params.uri` for `resources/read`, `resources/subscribe`, `resources/unsubscribe`.
    pub name: Option<Cow<'a, str>>,
    /// `params.arguments` of `tools/call` and `prompts/get` (for policy conditions).
    pub arguments: Option<Value>,
}

/// A parsed request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<'a> {
    /// One message.
    Single(Message<'a>),
    /// A JSON-RPC batch (MCP 2025-03-26).
    Batch(Vec<Message<'a>>),
}

impl<'a> Body<'a> {
    /// The messages, in order.
    pub fn messages(&self) -> &[Message<'a>] {
        match self {
            Self::Single(m) => std::slice::from_ref(m),
            Self::Batch(ms) => ms,
        }
    }
}

/// The list methods whose results are filtered per caller, and the method that acts on an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list` → `result.tools[].name`, authorized as `tools/call`.
    Tools,
    /// `prompts/list` → `result.prompts[].name`, authorized as `prompts/get`.
    Prompts,
    /// `resources/list` → `result.resources[].uri`, authorized as `resources/read`.
    Resources,
}

impl ListKind {
    /// The list kind of a method, if it is one of the filtered list methods.
    pub fn of_method(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::Tools),
            "prompts/list" => Some(Self::Prompts),
            "resources/list" => Some(Self::Resources),
            _ => None,
        }
    }

    /// The method that an entry of this list is called with.
    pub fn entry_method(self) -> &'static str {
        match self {
            Self::Tools => "tools/call",
            Self::Prompts => "prompts/get",
            Self::Resources => "resources/read",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Resources => "uri",
            _ => "name",
        }
    }
}

mod headers;
mod request;
mod response;

pub use self::headers::*;
pub use self::request::*;
pub use self::response::*;

/// A JSON-RPC error response body. `message` must name nothing secret.
pub fn error_response(id: Option<&Value>, code: i64, message: &str) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": { "code": code, "message": message },
    })
}

/// Appends [`error_response`] as JSON text to `out`, byte for byte what serialising it gives
/// (members in key order, compact), without building the value.
pub fn write_error_response(out: &mut Vec<u8>, id: Option<&Value>, code: i64, message: &str) {
    out.extend_from_slice(b"{\"error\":{\"code\":");
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    write_json(out, message);
    out.extend_from_slice(b"},\"id\":");
    match id {
        Some(id) => write_json(out, id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"jsonrpc\":\"2.0\"}");
}

/// Appends `v` as compact JSON (serde_json's own formatting).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing a string or a JSON value into a Vec cannot fail.
    let _ = serde_json::to_writer(out, v);
}

#[cfg(test)]
mod tests;
