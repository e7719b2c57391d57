//! The HTTP outcome: a whole request (server, headers against body, every message of a batch)
//! decided, and the answer the filter sends.

use super::*;

/// One HTTP request as the policy filter sees it (after the JWT filter).
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The server `:authority` and `:path` are for ([`Policy::server_for`]).
    pub server: Option<&'a str>,
    /// `:method`.
    pub http_method: &'a str,
    /// The MCP headers.
    pub mcp: &'a McpHeaders<'a>,
    /// The caller.
    pub caller: &'a Caller<'a>,
    /// The request body (empty for GET and DELETE).
    pub body: &'a [u8],
}

/// Why a request was refused; also the suffix of the filter's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The policy denied it (403).
    Denied,
    /// No configured server matches host and path (403).
    UnknownServer,
    /// `Mcp-Method` / `Mcp-Name` disagree with the body (400, -32020).
    HeaderMismatch,
    /// The body is not an acceptable JSON-RPC message (400).
    Invalid,
    /// The body is over the size limit (413).
    TooLarge,
    /// An identity header is not one the JWT filter writes ([`MalformedIdentity`], 403).
    BadIdentity,
}

impl Refusal {
    /// The stat / access-log name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::UnknownServer => "unknown_server",
            Self::HeaderMismatch => "header_mismatch",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::BadIdentity => "bad_identity",
        }
    }
}

/// The policy filter's answer to one HTTP request, borrowing the policy and the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<'a> {
    /// The matched server's name.
    pub server: Option<&'a str>,
    /// The (first) MCP method, or `http:<METHOD>` for a request without a body.
    pub method: Cow<'a, str>,
    /// The (first) target name.
    pub name: Option<Cow<'a, str>>,
    /// The deciding rule's name (the denying one, or the allowing one of the first message).
    pub rule: Option<&'a str>,
    /// `None`: pass the request on. Otherwise refuse it with this response.
    pub refusal: Option<(Refusal, u32, Vec<u8>)>,
    /// `*/list` requests whose responses must be filtered.
    pub pending_lists: Vec<PendingList>,
}

impl Outcome<'_> {
    pub(super) fn refuse_unparsable(self, e: &mcp::ParseError) -> Self {
        let why = if e.http_status() == 413 {
            Refusal::TooLarge
        } else {
            Refusal::Invalid
        };
        self.refuse(why, e.http_status(), None, e.rpc_code(), &e.to_string())
    }

    /// Refuses with a single JSON-RPC error.
    pub(super) fn refuse(
        self,
        why: Refusal,
        status: u32,
        id: Option<&Value>,
        code: i64,
        msg: &str,
    ) -> Self {
        let mut body = Vec::with_capacity(96);
        mcp::write_error_response(&mut body, id, code, msg);
        self.refuse_with(why, status, body)
    }

    pub(super) fn refuse_with(mut self, why: Refusal, status: u32, body: Vec<u8>) -> Self {
        self.refusal = Some((why, status, body));
        self
    }
}

impl Policy {
    /// Decides a whole HTTP request: server, headers against body, every message of a batch
    /// (one denied member refuses the batch, each member with an `id` gets an error).
    pub fn authorize<'a>(&'a self, req: &HttpRequest<'a>) -> Outcome<'a> {
        let bodiless = !mcp::carries_messages(req.http_method);
        let mut out = Self::outcome_for(req.server, req.http_method);
        let body = if bodiless {
            None
        } else {
            match mcp::parse_body(req.body, &self.limits) {
                Ok(b) => Some(b),
                Err(e) => return out.refuse_unparsable(&e),
            }
        };
        if let Some(first) = body.as_ref().and_then(|b| b.messages().first()) {
            out.method = first.method.clone().unwrap_or(Cow::Borrowed("response"));
            out.name = first.name.clone();
        }
        if let Some(b) = &body
            && let Err(e) = req.mcp.check(b)
        {
            let id = match b {
                Body::Single(m) => m.id.as_ref(),
                Body::Batch(_) => None,
            };
            return out.refuse(
                Refusal::HeaderMismatch,
                400,
                id,
                mcp::HEADER_MISMATCH,
                &e.to_string(),
            );
        }
        let Some(server) = out.server else {
            return out.refuse(
                Refusal::UnknownServer,
                403,
                None,
                mcp::FORBIDDEN,
                FORBIDDEN_MESSAGE,
            );
        };
        let ask = |method: &str, name: Option<&str>, arguments: Option<&Value>| {
            self.evaluate(&Request {
                caller: req.caller,
                server,
                method,
                name,
                arguments,
            })
        };
        let Some(body) = body else {
            let d = ask(&out.method, None, None);
            out.rule = d.rule.map(|i| self.rule_name(i));
            if !d.allowed {
                return out.refuse(
                    Refusal::Denied,
                    403,
                    None,
                    mcp::FORBIDDEN,
                    FORBIDDEN_MESSAGE,
                );
            }
            return out;
        };
        let mut denied = None;
        // Every decision is kept only for a batch (its refusal answers each member).
        let (mut first, mut decisions) = (None, Vec::new());
        for m in body.messages() {
            let method = m.method.as_deref().unwrap_or("response");
            let d = ask(method, m.name.as_deref(), m.arguments.as_ref());
            if !d.allowed && denied.is_none() {
                denied = Some(d);
            }
            first.get_or_insert(d);
            if matches!(body, Body::Batch(_)) {
                decisions.push(d);
            }
        }
        let first = denied.or(first);
        out.rule = first.and_then(|d| d.rule).map(|i| self.rule_name(i));
        if denied.is_some() {
            let id = match &body {
                Body::Single(m) => m.id.as_ref(),
                Body::Batch(ms) => {
                    let mut errors = Vec::with_capacity(96 * ms.len());
                    for (m, d) in ms.iter().zip(&decisions) {
                        if m.kind != Kind::Request {
                            continue;
                        }
                        let msg = if d.allowed {
                            BATCH_REFUSED_MESSAGE
                        } else {
                            FORBIDDEN_MESSAGE
                        };
                        errors.push(if errors.is_empty() { b'[' } else { b',' });
                        mcp::write_error_response(&mut errors, m.id.as_ref(), mcp::FORBIDDEN, msg);
                    }
                    if !errors.is_empty() {
                        errors.push(b']');
                        return out.refuse_with(Refusal::Denied, 403, errors);
                    }
                    None
                }
            };
            return out.refuse(Refusal::Denied, 403, id, mcp::FORBIDDEN, FORBIDDEN_MESSAGE);
        }
        out.pending_lists = body
            .messages()
            .iter()
            .filter_map(|m| {
                let kind = ListKind::of_method(m.method.as_deref()?)?;
                Some(PendingList {
                    id: m.id.clone()?,
                    kind,
                })
            })
            .collect();
        out
    }

    /// Refuses a request whose declared body size (`Content-Length`) is over the limit, before
    /// its body is read (413).
    /// `server` is the request's ([`Policy::server_for`]).
    pub fn refuse_oversized<'a>(&self, server: Option<&'a str>, http_method: &str) -> Outcome<'a> {
        Self::outcome_for(server, http_method)
            .refuse_unparsable(&mcp::ParseError::TooLarge(self.limits.max_body_bytes))
    }

    /// Refuses a request whose identity headers do not decode (fail closed, 403).
    /// `server` is the request's ([`Policy::server_for`]).
    pub fn refuse_malformed<'a>(
        &self,
        server: Option<&'a str>,
        http_method: &str,
        e: MalformedIdentity,
    ) -> Outcome<'a> {
        Self::outcome_for(server, http_method).refuse(
            Refusal::BadIdentity,
            403,
            None,
            mcp::FORBIDDEN,
            &e.to_string(),
        )
    }

    pub(super) fn outcome_for<'a>(server: Option<&'a str>, http_method: &str) -> Outcome<'a> {
        Outcome {
            server,
            method: http_method_name(http_method),
            name: None,
            rule: None,
            refusal: None,
            pending_lists: Vec::new(),
        }
    }

    /// Whether a caller may see one `*/list` entry: the same question as calling it.
    pub fn may_see(&self, caller: &Caller<'_>, server: &str, kind: ListKind, name: &str) -> bool {
        self.evaluate(&Request {
            caller,
            server,
            method: kind.entry_method(),
            name: Some(name),
            arguments: None,
        })
        .allowed
    }
}

/// `http:<METHOD>`, the method of a request without a body; the usual ones are not built.
pub(super) fn http_method_name(http_method: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 7] = [
        "http:GET",
        "http:POST",
        "http:DELETE",
        "http:PUT",
        "http:PATCH",
        "http:HEAD",
        "http:OPTIONS",
    ];
    match KNOWN
        .iter()
        .find(|k| k["http:".len()..].eq_ignore_ascii_case(http_method))
    {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(format!("http:{}", http_method.to_ascii_uppercase())),
    }
}

/// The request header the filter sets to the matched server's name, for Envoy's router (one
/// Envoy can route many MCP servers by it) and for the upstream.
pub const SERVER_HEADER: &str = "x-mcpgw-server";

/// The error message of a denial: it names nothing (not the rule, not what would be allowed).
pub const FORBIDDEN_MESSAGE: &str = "forbidden by policy";
/// The error message for the allowed members of a batch that another member got refused.
pub const BATCH_REFUSED_MESSAGE: &str = "batch refused: another message in it is forbidden";
