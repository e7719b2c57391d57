//! The MCP request headers (`Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version`) and their required
//! match against the body.

use super::*;

/// Whether a request with HTTP method `http_method` carries JSON-RPC messages that must be read
/// before it is decided: `POST` exactly (methods are case-sensitive, RFC 9110 §9.1); `GET` and
/// `DELETE` carry none. The policy and every filter ask this one question.
pub fn carries_messages(http_method: &str) -> bool {
    http_method == "POST"
}

/// The MCP request headers, as received (borrowing the header values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct McpHeaders<'a> {
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Method` (2026-07-28).
    pub method: Option<&'a str>,
    /// `Mcp-Name` (2026-07-28).
    pub name: Option<&'a str>,
}

/// `Mcp-Method` / `Mcp-Name` disagree with the body (400, JSON-RPC [`HEADER_MISMATCH`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderMismatch {
    /// A 2026-07-28 request lacks `Mcp-Method`.
    #[error("`Mcp-Method` header is required")]
    MissingMethod,
    /// A 2026-07-28 request for a named target lacks `Mcp-Name`.
    #[error("`Mcp-Name` header is required")]
    MissingName,
    /// `Mcp-Method` differs from the body's method.
    #[error("`Mcp-Method` header does not match the body")]
    Method,
    /// `Mcp-Name` differs from the body's target.
    #[error("`Mcp-Name` header does not match the body")]
    Name,
    /// The headers name one method but the body is a batch.
    #[error("`Mcp-Method` header cannot describe a batch")]
    Batch,
}

impl McpHeaders<'_> {
    /// Whether this request is of a revision that requires `Mcp-Method` / `Mcp-Name`.
    /// Revisions are dates, so they compare as strings.
    pub fn requires_method_headers(&self) -> bool {
        self.protocol_version
            .is_some_and(|v| v >= STATELESS_REVISION)
    }

    /// Checks the headers against the body. Headers present in any revision must match; in
    /// 2026-07-28 and later they must also be present.
    pub fn check(&self, body: &Body) -> Result<(), HeaderMismatch> {
        let required = self.requires_method_headers();
        let msg = match body {
            Body::Batch(_) if required || self.method.is_some() || self.name.is_some() => {
                return Err(HeaderMismatch::Batch);
            }
            Body::Batch(_) => return Ok(()),
            Body::Single(m) => m,
        };
        match (self.method, &msg.method) {
            (Some(h), Some(b)) if h != b.as_ref() => return Err(HeaderMismatch::Method),
            (Some(_), None) => return Err(HeaderMismatch::Method),
            (None, Some(_)) if required => return Err(HeaderMismatch::MissingMethod),
            _ => {}
        }
        match (self.name, &msg.name) {
            (Some(h), Some(b)) if decode_name_header(h).as_deref() != Some(b.as_ref()) => {
                Err(HeaderMismatch::Name)
            }
            (Some(_), None) => Err(HeaderMismatch::Name),
            (None, Some(_)) if required => Err(HeaderMismatch::MissingName),
            _ => Ok(()),
        }
    }
}

/// `Mcp-Name` as the client meant it. A name that is not plain visible ASCII travels as
/// `=?base64?<standard base64 of its UTF-8>?=` (MCP 2026-07-28); anything else is the name itself.
/// `None` when the encoded form does not decode to UTF-8.
pub fn decode_name_header(value: &str) -> Option<Cow<'_, str>> {
    use base64::Engine;
    match value
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Cow::Owned),
        None => Some(Cow::Borrowed(value)),
    }
}
