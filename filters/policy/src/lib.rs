//! The policy filter: a thin proxy-wasm shell over `mcpgw_core::policy`, on mcpgw's own ABI
//! binding (`mcpgw_proxy_abi`: only the callbacks below are exported, the request headers are
//! read with one call). It runs after the JWT filter and trusts the `x-mcpgw-*` identity headers
//! that filter set.
//!
//! - [`PolicyRoot`] (one per VM, i.e. per Envoy worker) validates the plugin configuration (the
//!   policy JSON, README "Policy") in `on_configure`: a bad one makes Envoy reject the filter.
//! - [`PolicyStream`] (one per request) buffers the JSON-RPC request body (up to
//!   `limits.max_body_bytes`, 413 beyond), asks core for the decision and acts on it: a refusal
//!   becomes a local JSON-RPC error response (403 / 400 / 413), an allowed request gets the
//!   matched server's name in `x-mcpgw-server` for the router. Responses to `tools/list`,
//!   `prompts/list` and `resources/list` are buffered and rewritten (JSON or SSE) so the caller
//!   sees only the entries it may call; one that cannot be filtered is refused (fail closed).
//! - Every decision is counted in Envoy stats (`wasmcustom.mcpgw_policy.<outcome>.<server>.
//!   <method>`) and written to filter state for the access log
//!   (`%FILTER_STATE(wasm.mcpgw_policy.decision:PLAIN)%`, `…server`, `…method`, `…name`, `…rule`).

use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use mcpgw_core::hash::Fold;
use mcpgw_core::identity;
use mcpgw_core::mcp::{self, ListKind, McpHeaders, PendingList};
use mcpgw_core::policy::{
    CALLER_HEADERS, Caller, HttpRequest, MalformedIdentity, Outcome, Policy, SERVER_HEADER,
};
use mcpgw_core::route;
use mcpgw_proxy_abi::{self as abi, Action, Buffer, Headers, Map};

/// The stat name prefix (Envoy adds `wasmcustom.`).
const STAT_PREFIX: &str = "mcpgw_policy";
/// The access-log properties, in filter state (Envoy adds `wasm.`).
const PROPERTIES: [&str; 5] = [
    "mcpgw_policy.decision",
    "mcpgw_policy.server",
    "mcpgw_policy.method",
    "mcpgw_policy.name",
    "mcpgw_policy.rule",
];

/// One counter: `<STAT_PREFIX>.<event>.<server>[.<method>]`.
#[derive(Debug)]
struct Counter {
    event: &'static str,
    server: Option<String>,
    /// The [`stat_method`] segment; empty for a counter without one.
    method: &'static str,
    id: u32,
}

/// Per-VM state shared by the root context and the request contexts.
#[derive(Debug)]
struct Worker {
    policy: Policy,
    /// Counter ids, defined on first use. Servers come from the policy and methods from
    /// [`stat_method`], so the list stays short.
    counters: RefCell<Vec<Counter>>,
}

impl Worker {
    fn count(&self, event: &'static str, server: Option<&str>, method: &'static str, by: usize) {
        let mut counters = self.counters.borrow_mut();
        let known = counters
            .iter()
            .find(|c| c.event == event && c.method == method && c.server.as_deref() == server);
        let id = match known {
            Some(c) => c.id,
            None => {
                let mut name = format!("{STAT_PREFIX}.{event}.{}", stat_server(server));
                if !method.is_empty() {
                    name.push('.');
                    name.push_str(method);
                }
                match abi::define_counter(&name) {
                    Ok(id) => {
                        counters.push(Counter {
                            event,
                            server: server.map(str::to_owned),
                            method,
                            id,
                        });
                        id
                    }
                    Err(e) => {
                        log::warn!("cannot define the counter {name}: {e:?}");
                        return;
                    }
                }
            }
        };
        abi::increment(id, i64::try_from(by).unwrap_or(i64::MAX));
    }
}

/// The stat segment for a method. Methods come from clients: only the ones MCP defines get a
/// counter of their own, so a client cannot create stats without bound.
fn stat_method(method: &str) -> &'static str {
    const KNOWN: &[(&str, &str)] = &[
        ("initialize", "initialize"),
        ("ping", "ping"),
        ("tools/list", "tools_list"),
        ("tools/call", "tools_call"),
        ("prompts/list", "prompts_list"),
        ("prompts/get", "prompts_get"),
        ("resources/list", "resources_list"),
        ("resources/templates/list", "resources_templates_list"),
        ("resources/read", "resources_read"),
        ("resources/subscribe", "resources_subscribe"),
        ("resources/unsubscribe", "resources_unsubscribe"),
        ("completion/complete", "completion_complete"),
        ("logging/setLevel", "logging_setLevel"),
        ("server/discover", "server_discover"),
        ("subscriptions/listen", "subscriptions_listen"),
        ("response", "response"),
        ("http:GET", "http_get"),
        ("http:DELETE", "http_delete"),
        ("http:POST", "http_post"),
    ];
    if method.starts_with("notifications/") {
        return "notifications";
    }
    KNOWN
        .iter()
        .find(|(m, _)| *m == method)
        .map_or("other", |(_, s)| s)
}

/// The stat segment for a server name (dots would split Envoy's tag extraction).
fn stat_server(server: Option<&str>) -> String {
    server.map_or_else(|| "none".to_owned(), |s| s.replace('.', "_"))
}

/// The per-configuration, per-VM root context.
#[derive(Debug)]
pub struct PolicyRoot {
    context_id: u32,
    worker: Option<Rc<Worker>>,
}

impl PolicyRoot {
    fn configure(&mut self, bytes: &[u8]) -> bool {
        match Policy::from_json(bytes) {
            Ok(policy) => {
                log::info!(
                    "#{} mcpgw policy filter: {} rule(s) loaded",
                    self.context_id,
                    policy.rule_count()
                );
                self.worker = Some(Rc::new(Worker {
                    policy,
                    counters: RefCell::default(),
                }));
                true
            }
            Err(e) => {
                log::error!("#{} mcpgw policy filter: {e}", self.context_id);
                false
            }
        }
    }
}

/// The request headers the filter reads, found in one pass over the map ([`RequestHead`]).
#[derive(Debug, Clone, Copy)]
enum Wanted {
    Authority,
    Path,
    Method,
    PreflightMethod,
    ProtocolVersion,
    McpMethod,
    McpName,
    Subject,
    User,
    Email,
    Groups,
    Scopes,
    ClientId,
    ContentLength,
    Server,
    AcceptEncoding,
}

/// How many [`Wanted`] headers there are.
const WANTED: usize = Wanted::AcceptEncoding as usize + 1;

impl Wanted {
    const fn of(name: &[u8]) -> Option<Wanted> {
        const SUBJECT: &[u8] = identity::SUBJECT.as_bytes();
        const USER: &[u8] = identity::USER.as_bytes();
        const EMAIL: &[u8] = identity::EMAIL.as_bytes();
        const GROUPS: &[u8] = identity::GROUPS.as_bytes();
        const SCOPES: &[u8] = identity::SCOPES.as_bytes();
        const CLIENT_ID: &[u8] = identity::CLIENT_ID.as_bytes();
        const SERVER: &[u8] = SERVER_HEADER.as_bytes();
        Some(match name {
            b":authority" => Wanted::Authority,
            b":path" => Wanted::Path,
            b":method" => Wanted::Method,
            b"access-control-request-method" => Wanted::PreflightMethod,
            b"mcp-protocol-version" => Wanted::ProtocolVersion,
            b"mcp-method" => Wanted::McpMethod,
            b"mcp-name" => Wanted::McpName,
            SUBJECT => Wanted::Subject,
            USER => Wanted::User,
            EMAIL => Wanted::Email,
            GROUPS => Wanted::Groups,
            SCOPES => Wanted::Scopes,
            CLIENT_ID => Wanted::ClientId,
            b"content-length" => Wanted::ContentLength,
            SERVER => Wanted::Server,
            b"accept-encoding" => Wanted::AcceptEncoding,
            _ => return None,
        })
    }
}

/// The [`CALLER_HEADERS`], in order.
const CALLER: [Wanted; 6] = [
    Wanted::Subject,
    Wanted::User,
    Wanted::Email,
    Wanted::Groups,
    Wanted::Scopes,
    Wanted::ClientId,
];

// The build fails if CALLER and CALLER_HEADERS disagree.
const _: () = {
    let mut i = 0;
    while i < CALLER.len() {
        assert!(matches!(
            Wanted::of(CALLER_HEADERS[i].as_bytes()),
            Some(w) if w as usize == CALLER[i] as usize
        ));
        i += 1;
    }
};

/// The request headers, kept until the body is in (and, for a `*/list` call, until its
/// response is filtered): the host's bytes, and where the headers the filter reads are. Values
/// are borrowed from it at decision time, not copied.
#[derive(Debug)]
struct RequestHead {
    headers: Headers,
    /// Per [`Wanted`] header: the index of its first value in `headers`.
    at: [Option<u16>; WANTED],
    /// The server `:authority` and `:path` are for ([`Policy::server_index`]).
    server: Option<usize>,
}

/// The [`Wanted`] header values as text (borrowed unless a value is not UTF-8), each read on
/// first use.
struct Texts<'h> {
    head: &'h RequestHead,
    text: [OnceCell<Option<Cow<'h, str>>>; WANTED],
}

impl<'h> Texts<'h> {
    fn get(&self, w: Wanted) -> Option<&str> {
        self.text[w as usize]
            .get_or_init(|| {
                let i = self.head.at[w as usize]?;
                Some(self.head.headers.value(usize::from(i)))
            })
            .as_deref()
    }

    fn caller(&self) -> Result<Caller<'_>, MalformedIdentity> {
        Caller::from_values(CALLER.map(|w| self.get(w)))
    }

    fn mcp(&self) -> McpHeaders<'_> {
        McpHeaders {
            protocol_version: self.get(Wanted::ProtocolVersion),
            method: self.get(Wanted::McpMethod),
            name: self.get(Wanted::McpName),
        }
    }
}

impl RequestHead {
    /// Reads the request headers (one host call) and finds the wanted ones (one pass).
    fn read() -> RequestHead {
        let headers = abi::headers(Map::RequestHeaders);
        let mut at = [None; WANTED];
        for (i, (name, _)) in headers.raw().enumerate() {
            if let (Some(w), Ok(i)) = (Wanted::of(name), u16::try_from(i)) {
                at[w as usize].get_or_insert(i);
            }
        }
        RequestHead {
            headers,
            at,
            server: None,
        }
    }

    fn has(&self, w: Wanted) -> bool {
        self.at[w as usize].is_some()
    }

    fn texts(&self) -> Texts<'_> {
        Texts {
            head: self,
            text: Default::default(),
        }
    }
}

/// How a `*/list` response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Json,
    Sse,
}

/// The per-request context.
#[derive(Debug)]
pub struct PolicyStream {
    context_id: u32,
    worker: Rc<Worker>,
    /// The request headers, while the decision or a list response needs them.
    request: Option<RequestHead>,
    /// The headers went on; the decision waits for the end of the body.
    awaiting_body: bool,
    /// The matched server of an allowed request with list responses to filter.
    server: Option<String>,
    /// `*/list` requests whose responses are filtered.
    pending_lists: Vec<PendingList>,
    /// The framing of a response being filtered.
    response: Option<Framing>,
    /// A list response that could not be filtered was replaced; the rest of it is dropped.
    discarding: bool,
}

impl PolicyStream {
    fn new(context_id: u32, worker: Rc<Worker>) -> PolicyStream {
        PolicyStream {
            context_id,
            worker,
            request: None,
            awaiting_body: false,
            server: None,
            pending_lists: Vec::new(),
            response: None,
            discarding: false,
        }
    }

    fn send_json(&self, status: u32, body: &[u8]) {
        abi::send_response(
            status,
            &[
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ],
            body,
        );
    }

    fn record(worker: &Worker, decision: &'static str, out: &Outcome<'_>) {
        let values = [
            Some(decision),
            out.server,
            Some(&*out.method),
            out.name.as_deref(),
            out.rule,
        ];
        for (name, value) in PROPERTIES.iter().zip(values) {
            if let Some(v) = value {
                abi::set_property(name, v.as_bytes());
            }
        }
        worker.count(decision, out.server, stat_method(&out.method), 1);
    }

    /// Decides on the request in `head` with its `body` and acts; `true` lets the request
    /// through.
    fn decide(&mut self, worker: &Worker, head: &RequestHead, body: &[u8]) -> bool {
        let t = head.texts();
        let policy = &worker.policy;
        let server = head.server.and_then(|i| policy.server_name(i));
        let http_method = t.get(Wanted::Method).unwrap_or_default();
        let caller = match t.caller() {
            Ok(caller) => caller,
            Err(e) => {
                return self.act(
                    worker,
                    policy.refuse_malformed(server, http_method, e),
                    None,
                );
            }
        };
        let mcp = t.mcp();
        let out = policy.authorize(&HttpRequest {
            server,
            http_method,
            mcp: &mcp,
            caller: &caller,
            body,
        });
        self.act(worker, out, caller.subject.as_deref())
    }

    /// Keeps the request headers of an allowed request whose list responses are filtered
    /// (they name the caller).
    fn keep_for_lists(&mut self, head: RequestHead) {
        if !self.pending_lists.is_empty() {
            self.request = Some(head);
        }
    }

    /// Answers a refused request, or records an allowed one and keeps what its response
    /// needs; `true` lets the request through.
    fn act(&mut self, worker: &Worker, out: Outcome<'_>, subject: Option<&str>) -> bool {
        if let Some((why, status, body)) = &out.refusal {
            Self::record(worker, why.as_str(), &out);
            log::debug!(
                "#{} refuse {} sub={} server={} method={} rule={}",
                self.context_id,
                why.as_str(),
                subject.unwrap_or("-"),
                out.server.unwrap_or("-"),
                out.method,
                out.rule.unwrap_or("-"),
            );
            self.send_json(*status, body);
            return false;
        }
        Self::record(worker, "allowed", &out);
        if !out.pending_lists.is_empty() {
            self.server = out.server.map(str::to_owned);
            self.pending_lists = out.pending_lists;
        }
        true
    }

    /// Names the matched server for the router (replacing any client value) and asks the
    /// upstream for an uncompressed answer (a compressed list could not be filtered): only the
    /// headers that change, one host call each. A failed host call refuses the request (500):
    /// a client's own server name must never route it. `Continue` or that refusal's `Pause`.
    fn route(head: &RequestHead, server: Option<&str>) -> Action {
        let set = [
            (Wanted::Server, SERVER_HEADER),
            (Wanted::AcceptEncoding, "accept-encoding"),
        ]
        .into_iter()
        .filter(|(w, _)| head.has(*w))
        .try_for_each(|(_, name)| abi::remove_header(Map::RequestHeaders, name.as_bytes()))
        .and_then(|()| {
            server.map_or(Ok(()), |s| {
                abi::add_header(Map::RequestHeaders, SERVER_HEADER, s)
            })
        });
        match set {
            Ok(()) => Action::Continue,
            Err(status) => fail_closed("routing headers could not be set", status),
        }
    }

    /// Replaces the buffered response body; if the host refuses, the stream is reset rather than
    /// the unfiltered body sent on.
    fn set_body(body_size: usize, body: &[u8]) -> Action {
        match abi::set_buffer(Buffer::ResponseBody, 0, body_size, body) {
            Ok(()) => Action::Continue,
            Err(status) => fail_closed("a list response could not be rewritten", status),
        }
    }

    /// Rewrites a buffered list response; `None` when it cannot be filtered.
    fn filter_lists(&self, framing: Framing, body: &[u8]) -> Option<(Vec<u8>, usize)> {
        let texts = self.request.as_ref()?.texts();
        let caller = texts.caller().ok()?;
        let server = self.server.as_deref()?;
        let policy = &self.worker.policy;
        let mut views = [None, None, None];
        let mut keep = |kind: ListKind, name: &str| {
            views[kind as usize]
                .get_or_insert_with(|| policy.list_view(&caller, server, kind))
                .may_see(name)
        };
        let filtered = match framing {
            Framing::Json => mcp::filter_json_response(body, &self.pending_lists, &mut keep),
            Framing::Sse => mcp::filter_sse_response(body, &self.pending_lists, &mut keep),
        };
        filtered.ok()
    }

    /// Replaces a list response that cannot be filtered by a JSON-RPC error (fail closed: its
    /// headers already went downstream, so the status stays; no entry leaks).
    fn replace_response(&mut self, framing: Framing, body_size: usize, message: &str) -> Action {
        log::warn!(
            "#{} {message}; replacing the response with an error",
            self.context_id
        );
        let id = self.pending_lists.first().map(|p| &p.id);
        let mut body = Vec::new();
        if framing == Framing::Sse {
            body.extend_from_slice(b"event: message\ndata: ");
        }
        mcp::write_error_response(&mut body, id, mcp::INTERNAL_ERROR, message);
        if framing == Framing::Sse {
            body.extend_from_slice(b"\n\n");
        }
        self.discarding = true;
        Self::set_body(body_size, &body)
    }
}

/// The stream callbacks.
impl PolicyStream {
    fn request_headers(&mut self, end_of_stream: bool) -> Action {
        let worker = Rc::clone(&self.worker);
        let policy = &worker.policy;
        let mut head = RequestHead::read();
        head.server = {
            let t = head.texts();
            policy.server_index(
                t.get(Wanted::Authority),
                t.get(Wanted::Path).unwrap_or_default(),
            )
        };
        let t = head.texts();
        let method = t.get(Wanted::Method).unwrap_or_default();
        let preflight = route::is_cors_preflight(method, t.get(Wanted::PreflightMethod));
        let server = head.server.and_then(|i| policy.server_name(i));
        if preflight || policy.passes_unchecked(server) {
            return Action::Continue;
        }
        let is_post = mcp::carries_messages(method);
        let declared = || {
            t.get(Wanted::ContentLength)
                .and_then(|v| v.trim().parse::<usize>().ok())
        };
        if is_post && declared().is_some_and(|n| n > policy.limits.max_body_bytes) {
            let out = policy.refuse_oversized(server, method);
            self.act(&worker, out, t.get(Wanted::Subject));
            return Action::Pause;
        }
        if is_post && !end_of_stream {
            // The decision needs the JSON-RPC message. Envoy turns a paused header phase into
            // "stop everything" (no body callbacks), so the headers go on now, with the route
            // choice (host and path decide the server), and the body is held until decided.
            let routed = Self::route(&head, server);
            drop(t);
            self.request = Some(head);
            self.awaiting_body = true;
            return routed;
        }
        drop(t);
        if self.decide(&worker, &head, &[]) {
            let routed = Self::route(&head, server);
            self.keep_for_lists(head);
            routed
        } else {
            Action::Pause
        }
    }

    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.awaiting_body {
            return Action::Continue;
        }
        let worker = Rc::clone(&self.worker);
        let limits = worker.policy.limits;
        if body_size > limits.max_body_bytes {
            let Some(head) = self.request.take() else {
                return Action::Continue;
            };
            let t = head.texts();
            let server = head.server.and_then(|i| worker.policy.server_name(i));
            let out = worker
                .policy
                .refuse_oversized(server, t.get(Wanted::Method).unwrap_or_default());
            self.act(&worker, out, t.get(Wanted::Subject));
            return Action::Pause;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let Some(head) = self.request.take() else {
            return Action::Continue;
        };
        let body = abi::buffer(Buffer::RequestBody);
        let allowed = self.decide(&worker, &head, &body);
        self.awaiting_body = false;
        if allowed {
            self.keep_for_lists(head);
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn response_headers(&mut self, end_of_stream: bool) -> Action {
        if self.pending_lists.is_empty() || end_of_stream {
            return Action::Continue;
        }
        let content_type = abi::header(Map::ResponseHeaders, "content-type").unwrap_or_default();
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        self.response = match media.as_str() {
            "application/json" => Some(Framing::Json),
            "text/event-stream" => Some(Framing::Sse),
            _ => None,
        };
        if self.response.is_none() {
            return Action::Continue;
        }
        // The body changes size. Envoy would stop all processing if the headers paused, so
        // they go on now (chunked) and the body is held until it is rewritten.
        match abi::remove_header(Map::ResponseHeaders, b"content-length") {
            Ok(()) => Action::Continue,
            Err(status) => fail_closed("a list response's length could not be removed", status),
        }
    }

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.discarding {
            return Self::set_body(body_size, b"");
        }
        let Some(framing) = self.response else {
            return Action::Continue;
        };
        if body_size > self.worker.policy.max_response_bytes {
            return self.replace_response(
                framing,
                body_size,
                "list response is too large to filter",
            );
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = abi::buffer(Buffer::ResponseBody);
        match self.filter_lists(framing, &body) {
            Some((rewritten, hidden)) => {
                if hidden > 0 {
                    self.worker
                        .count("list_entries_hidden", self.server.as_deref(), "", hidden);
                }
                Self::set_body(body_size, &rewritten)
            }
            None => {
                self.replace_response(framing, body_size, "list response could not be filtered")
            }
        }
    }
}

/// A host call on the security path failed: the stream is answered 500 (reset, if the response
/// already started) and held, never let through unchecked.
fn fail_closed(what: &str, status: abi::Status) -> Action {
    log::error!("{what} ({status:?}); refusing the stream");
    abi::refuse_undecidable()
}

/// Every root context of this VM and every request in flight.
#[derive(Debug, Default)]
struct Contexts {
    roots: Vec<PolicyRoot>,
    streams: HashMap<u32, PolicyStream, Fold>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::default();
}

/// Runs a stream callback; a stream without state (its root has no configuration, which Envoy
/// does not allow) is refused: fail closed.
fn on_stream(id: u32, f: impl FnOnce(&mut PolicyStream) -> Action) -> u32 {
    let action = CONTEXTS.with_borrow_mut(|c| c.streams.get_mut(&id).map(f));
    action.unwrap_or_else(|| {
        log::error!("#{id} request without policy state; refusing it");
        abi::refuse_undecidable()
    }) as u32
}

/// The callbacks this module exports: Envoy enters the VM for these and no others.
#[allow(unsafe_code)] // reason: exporting a callback is a `no_mangle` declaration
mod exports {
    use super::*;

    /// Envoy creates a root context per plugin configuration, then one context per request.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_context_create(id: u32, root: u32) {
        CONTEXTS.with_borrow_mut(|c| {
            if root == 0 {
                abi::init("mcpgw policy filter", log::LevelFilter::Info);
                c.roots.push(PolicyRoot {
                    context_id: id,
                    worker: None,
                });
            } else if let Some(worker) = c
                .roots
                .iter()
                .find(|r| r.context_id == root)
                .and_then(|r| r.worker.clone())
            {
                c.streams.insert(id, PolicyStream::new(id, worker));
            }
        });
    }

    /// The plugin configuration; `0` makes Envoy reject the filter.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_configure(root: u32, _: usize) -> u32 {
        let bytes = abi::buffer(Buffer::PluginConfiguration);
        CONTEXTS.with_borrow_mut(|c| {
            let root = c.roots.iter_mut().find(|r| r.context_id == root);
            u32::from(root.is_some_and(|r| r.configure(&bytes)))
        })
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_request_headers(id: u32, _: usize, end_of_stream: u32) -> u32 {
        on_stream(id, |s| s.request_headers(end_of_stream != 0))
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_request_body(id: u32, size: usize, end_of_stream: u32) -> u32 {
        on_stream(id, |s| s.request_body(size, end_of_stream != 0))
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_response_headers(id: u32, _: usize, end_of_stream: u32) -> u32 {
        on_stream(id, |s| s.response_headers(end_of_stream != 0))
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_response_body(id: u32, size: usize, end_of_stream: u32) -> u32 {
        on_stream(id, |s| s.response_body(size, end_of_stream != 0))
    }

    /// The request is over: its state goes.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_delete(id: u32) {
        CONTEXTS.with_borrow_mut(|c| c.streams.remove(&id));
    }
}
