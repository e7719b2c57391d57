//! The proxy-wasm shell over `mcpgw_core`, on mcpgw's own ABI binding
//! (`mcpgw_proxy_abi`), exporting only the callbacks it needs, so Envoy enters the VM twice per
//! request (stream creation, request headers) and the filter reads the headers with one call
//! and writes them with one.
//!
//! - [`JwtRoot`] (one per plugin configuration per VM, i.e. per Envoy thread) validates the
//!   configuration in `proxy_on_configure` (a bad one makes Envoy reject the filter) and, for a
//!   remote JWKS, refreshes the keys on a timer. The fetched JWKS lives in the VM's shared data so
//!   every thread uses one copy; a lease in shared data makes one thread fetch at a time. With a
//!   revocation feed, each root also fetches the list of revoked `jti`s (the sidecar's
//!   `GET /revoked`) every `refresh_interval` into its own thread's state: a listed `jti` stays
//!   refused until its token expires, whatever a later list says (a sidecar whose Redis lost its
//!   data lists nothing), and while the feed is down the known list keeps applying (one warning
//!   per outage).
//! - Each request: client-sent identity headers are stripped, RFC 9728 metadata is served, CORS
//!   preflights and unprotected paths go through, and core decides. With no keys yet, or a token
//!   signed by an unknown `kid`, the root fetches the JWKS once (rate-limited) and the request
//!   waits for the answer (requests arriving meanwhile wait for the same fetch). Stale keys keep
//!   serving while the key server is down; without any key the answer is 503 (fail closed). An
//!   allowed token whose `jti` is in the revocation list is refused with core's revoked denial.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use mcpgw_core::auth::{Decision, DenyReason, TokenCache};
use mcpgw_core::identity::Identity;
use mcpgw_core::jwk::KeySet;
use mcpgw_proxy_abi::{self as abi, Action, Buffer, Headers, Map};

use crate::config::{Config, Fetch, KeySource, Remote};
use crate::gate::{self, Feed, Reply, Route};

/// Shared-data value format version; bump when the layout below changes.
const SHARED_VERSION: &str = "v1";
/// How often each thread looks at shared data for keys another thread fetched.
const SYNC_EVERY_MS: u64 = 1_000;
/// The root context's tick period (JWKS and revocation feed refreshes).
const TICK_MS: u64 = 1_000;
/// Streams whose headers have not arrived yet, remembered with their root; older ones (whose
/// headers never came, e.g. an earlier filter answered) are forgotten beyond this many.
const MAX_NEW_STREAMS: usize = 1024;

/// Per-thread state of one plugin configuration.
#[derive(Debug)]
struct Worker {
    config: Config,
    /// The shared-data keys of a remote key source, made once.
    shared: Option<Rc<SharedKeys>>,
    keys: KeySet,
    /// The CAS of the shared-data JWKS the keys came from.
    keys_cas: Option<u32>,
    /// When the fetched keys were fetched (ms since the epoch), 0 when never.
    fetched_at_ms: u64,
    last_sync_ms: u64,
    cache: TokenCache,
    /// This thread's revocation feed.
    feed: Feed,
    /// When the revocation feed was last asked (ms since the epoch), 0 when never.
    feed_asked_ms: u64,
}

/// Shared-data keys for one remote key source.
#[derive(Debug)]
struct SharedKeys {
    /// `<fetched_at_ms>\n<JWKS JSON>`.
    jwks: String,
    /// `<deadline_ms>`: a fetch is in flight until then.
    lease: String,
    /// `<ms>`: the last fetch caused by an unknown `kid`.
    kid_refetch: String,
}

impl SharedKeys {
    fn new(remote: &Remote) -> SharedKeys {
        let base = format!(
            "mcpgw.jwt.{SHARED_VERSION}.{}:{}{}",
            remote.fetch.cluster, remote.fetch.authority, remote.fetch.path
        );
        SharedKeys {
            jwks: format!("{base}.jwks"),
            lease: format!("{base}.lease"),
            kid_refetch: format!("{base}.kid-refetch"),
        }
    }
}

fn read_stamp(key: &str) -> (u64, Option<u32>) {
    let (value, cas) = abi::shared_data(key);
    let stamp = value
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (stamp, cas)
}

/// Claims a time-based slot in shared data: succeeds when the stored stamp is older than
/// `now - min_gap_ms` (or absent) and the CAS write wins.
fn claim(key: &str, now: u64, min_gap_ms: u64, stamp: u64) -> bool {
    let (last, cas) = read_stamp(key);
    if last != 0 && now < last.saturating_add(min_gap_ms) {
        return false;
    }
    abi::set_shared_data(key, stamp.to_string().as_bytes(), cas).is_ok()
}

impl Worker {
    fn new(config: Config) -> Worker {
        let (keys, shared) = match &config.keys {
            KeySource::Inline(keys) => (keys.clone(), None),
            KeySource::Remote(r) => (KeySet::default(), Some(Rc::new(SharedKeys::new(r)))),
        };
        Worker {
            cache: TokenCache::new(config.cache_entries),
            config,
            shared,
            keys,
            keys_cas: None,
            fetched_at_ms: 0,
            last_sync_ms: 0,
            feed: Feed::default(),
            feed_asked_ms: 0,
        }
    }

    fn remote(&self) -> Option<(&Remote, Rc<SharedKeys>)> {
        match (&self.config.keys, &self.shared) {
            (KeySource::Remote(r), Some(shared)) => Some((r, shared.clone())),
            _ => None,
        }
    }

    /// Picks up keys another thread stored in shared data, when they changed; true if it did.
    fn sync(&mut self, shared: &SharedKeys, now: u64) -> bool {
        self.last_sync_ms = now;
        let (value, cas) = abi::shared_data(&shared.jwks);
        if cas.is_none() || cas == self.keys_cas {
            return false;
        }
        let Some(value) = value else { return false };
        let Some(split) = value.iter().position(|b| *b == b'\n') else {
            return false;
        };
        let fetched_at = std::str::from_utf8(&value[..split])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        match KeySet::from_json(&value[split + 1..]) {
            Ok((keys, _)) => {
                self.install(keys, cas, fetched_at);
                true
            }
            Err(_) => false,
        }
    }

    fn install(&mut self, keys: KeySet, cas: Option<u32>, fetched_at_ms: u64) {
        self.keys = keys;
        self.keys_cas = cas;
        self.fetched_at_ms = fetched_at_ms;
        // A key may have been withdrawn or replaced under the same `kid`.
        self.cache.clear();
    }

    /// Stores a fetched JWKS for every thread, if it has a usable key; keeps the old keys
    /// otherwise.
    fn store(&mut self, shared: &SharedKeys, status: Option<&str>, body: &[u8], now: u64) {
        let _ = abi::set_shared_data(&shared.lease, b"0", None);
        let Some(keys) = gate::fetched_keys(status, body, self.keys.len()) else {
            return;
        };
        let mut value = format!("{now}\n").into_bytes();
        value.extend_from_slice(body);
        let _ = abi::set_shared_data(&shared.jwks, &value, None);
        let (_, cas) = abi::shared_data(&shared.jwks);
        self.install(keys, cas, now);
    }

    /// Core's decision for a token at the resource (`None` when there is no such resource),
    /// with the keys this thread has (or that another thread fetched since), and the revocation
    /// list applied.
    fn decide(
        &mut self,
        resource: usize,
        authorization: Option<&str>,
        now: u64,
    ) -> Option<Decision> {
        let shared = self.remote().map(|(_, shared)| shared);
        if let Some(shared) = &shared
            && now >= self.last_sync_ms.saturating_add(SYNC_EVERY_MS)
        {
            self.sync(shared, now);
        }
        let decision = self.authenticate(resource, authorization, now)?;
        // Another thread may have fetched the missing key already: look before fetching.
        if let Decision::Deny(denial) = &decision
            && gate::wants_keys(&denial.reason)
            && let Some(shared) = &shared
            && self.sync(shared, now)
        {
            return self.authenticate(resource, authorization, now);
        }
        Some(decision)
    }

    fn authenticate(
        &mut self,
        resource: usize,
        authorization: Option<&str>,
        now: u64,
    ) -> Option<Decision> {
        gate::decide(
            &self.config,
            resource,
            authorization,
            &self.keys,
            self.feed.revoked(),
            &mut self.cache,
            now,
        )
    }
}

/// Starts a GET of `fetch`'s document (the JWKS, the revocation feed) on its cluster.
fn dispatch_fetch(fetch: &Fetch) -> Result<u32, abi::Status> {
    abi::http_call(
        &fetch.cluster,
        &gate::fetch_headers(fetch),
        u32::try_from(fetch.timeout_ms()).unwrap_or(u32::MAX),
    )
}

/// A request waiting for the root's JWKS fetch.
#[derive(Debug)]
struct Waiting {
    stream: u32,
    resource: usize,
    authorization: Option<String>,
}

/// What a decision leads to.
#[derive(Debug)]
enum Next {
    Decided(Decision),
    /// The request waits for the JWKS fetch in flight.
    Wait,
}

/// The per-configuration, per-VM root context.
#[derive(Debug)]
pub struct JwtRoot {
    context_id: u32,
    worker: Option<Worker>,
    /// The JWKS fetch in flight.
    fetch: Option<u32>,
    /// The revocation feed fetch in flight.
    feed_fetch: Option<u32>,
    /// Requests paused until the JWKS fetch answers.
    waiting: Vec<Waiting>,
}

impl JwtRoot {
    fn configure(&mut self, bytes: &[u8]) -> bool {
        let config = match Config::from_json(bytes) {
            Ok(c) => c,
            Err(e) => {
                log::error!("#{} mcpgw jwt filter: {e}", self.context_id);
                return false;
            }
        };
        if matches!(config.keys, KeySource::Remote(_)) || config.revocation.is_some() {
            abi::set_tick_period(u32::try_from(TICK_MS).unwrap_or(u32::MAX));
        }
        self.worker = Some(Worker::new(config));
        true
    }

    fn tick(&mut self) {
        let now = abi::now_ms();
        self.refresh_keys(now);
        self.refresh_revoked(now);
    }

    /// Starts a JWKS fetch from this root context (so its answer comes here even if the request
    /// that caused it is gone); from a request's callback, `stream` is made current again after.
    fn start_fetch(&mut self, stream: Option<u32>) -> bool {
        let Some(fetch) = self
            .worker
            .as_ref()
            .and_then(|w| Some(w.remote()?.0.fetch.clone()))
        else {
            return false;
        };
        if stream.is_some() && abi::set_effective_context(self.context_id).is_err() {
            return false;
        }
        let started = dispatch_fetch(&fetch);
        if let Some(stream) = stream {
            let _ = abi::set_effective_context(stream);
        }
        match started {
            Ok(token) => {
                self.fetch = Some(token);
                true
            }
            Err(e) => {
                log::warn!("#{} jwks fetch could not start: {e:?}", self.context_id);
                false
            }
        }
    }

    /// Fetches the JWKS when it is due, one thread at a time.
    fn refresh_keys(&mut self, now: u64) {
        let Some(w) = self.worker.as_mut() else {
            return;
        };
        let Some((due, deadline, shared)) = w.remote().map(|(remote, shared)| {
            let due = remote.fetch.due(w.fetched_at_ms, now);
            (due, now.saturating_add(remote.fetch.timeout_ms()), shared)
        }) else {
            return;
        };
        w.sync(&shared, now);
        if !due || self.fetch.is_some() {
            return;
        }
        // The lease stamp is the deadline of the fetch; `claim` compares against it with gap 0.
        if claim(&shared.lease, now, 0, deadline) {
            self.start_fetch(None);
        }
    }

    /// Fetches the revocation list when it is due (every thread for itself).
    fn refresh_revoked(&mut self, now: u64) {
        let Some(w) = self.worker.as_mut() else {
            return;
        };
        let Some(feed) = &w.config.revocation else {
            return;
        };
        // Ticks are not exact: a fetch due within half a tick goes out now, not a whole tick late.
        let due = feed.due(w.feed_asked_ms, now.saturating_add(TICK_MS / 2));
        if !due || self.feed_fetch.is_some() {
            return;
        }
        w.feed_asked_ms = now;
        match dispatch_fetch(feed) {
            Ok(token) => self.feed_fetch = Some(token),
            Err(e) => w.feed.failed(
                &format!("#{}", self.context_id),
                &format!("could not be asked ({e:?})"),
            ),
        }
    }

    fn http_call_response(&mut self, token: u32) {
        let status = abi::header(Map::HttpCallResponseHeaders, ":status");
        let status = status.as_deref();
        let body = abi::buffer(Buffer::HttpCallResponseBody);
        let root = self.context_id;
        let Some(w) = self.worker.as_mut() else {
            return;
        };
        if self.feed_fetch == Some(token) {
            self.feed_fetch = None;
            let leeway = w.config.verify.leeway_secs;
            w.feed
                .answered(&format!("#{root}"), status, &body, abi::now_ms(), leeway);
        } else if self.fetch == Some(token) {
            self.fetch = None;
            if let Some((_, shared)) = w.remote() {
                w.store(&shared, status, &body, abi::now_ms());
            }
            for waiting in std::mem::take(&mut self.waiting) {
                // A request that went away meanwhile has no context any more.
                if abi::set_effective_context(waiting.stream).is_err() {
                    continue;
                }
                let next = self.decide(waiting.resource, waiting.authorization.as_deref(), None);
                if self.conclude(&abi::headers(Map::RequestHeaders), next) == Action::Continue {
                    abi::resume_request();
                }
            }
        }
    }

    /// Decides; with `stream`, a denial that fresh keys could lift makes the request wait for
    /// a JWKS fetch (one in flight, or one this starts when its rate limit allows). `None` when
    /// the request cannot be decided (no configuration or resource: refuse it).
    fn decide(
        &mut self,
        resource: usize,
        authorization: Option<&str>,
        stream: Option<u32>,
    ) -> Option<Next> {
        let now = abi::now_ms();
        let w = self.worker.as_mut()?;
        let decision = w.decide(resource, authorization, now)?;
        let reason = match &decision {
            Decision::Deny(denial) if gate::wants_keys(&denial.reason) => &denial.reason,
            _ => return Some(Next::Decided(decision)),
        };
        let (Some(stream), Some((remote, shared))) = (stream, w.remote()) else {
            return Some(Next::Decided(decision));
        };
        let wait = self.fetch.is_some()
            || (match reason {
                DenyReason::NoKeys => claim(
                    &shared.lease,
                    now,
                    0,
                    now.saturating_add(remote.fetch.timeout_ms()),
                ),
                _ => {
                    let gap = u64::try_from(remote.unknown_kid_refetch_interval.as_millis())
                        .unwrap_or(u64::MAX);
                    claim(&shared.kid_refetch, now, gap, now)
                }
            } && self.start_fetch(Some(stream)));
        if !wait {
            return Some(Next::Decided(decision));
        }
        log::debug!("#{stream} waiting for the jwks before deciding");
        self.waiting.push(Waiting {
            stream,
            resource,
            authorization: authorization.map(str::to_owned),
        });
        Some(Next::Wait)
    }

    /// Acts on a decision for the current stream, whose request headers are `headers`; `true`
    /// lets the request go on.
    fn act(&self, headers: &Headers, decision: Decision) -> bool {
        let forward_authorization = self
            .worker
            .as_ref()
            .is_some_and(|w| w.config.forward_authorization);
        match decision {
            Decision::Allow(id) => {
                log::debug!("allow sub={} jti={}", id.subject, id.jti);
                forward(headers, Some(&id), forward_authorization)
            }
            Decision::Deny(denial) => {
                log::debug!("deny {:?}", denial.reason);
                send(&gate::refusal(denial));
                false
            }
        }
    }

    /// The request headers callback.
    fn request_headers(&mut self, stream: u32) -> Action {
        let headers = abi::headers(Map::RequestHeaders);
        let Some(w) = self.worker.as_ref() else {
            return abi::refuse_undecidable();
        };
        let route = gate::route(
            &w.config,
            &headers.get(":method").unwrap_or_default(),
            headers.get(":authority").as_deref(),
            &headers.get(":path").unwrap_or_default(),
            headers.get("access-control-request-method").as_deref(),
        );
        let resource = match route {
            Route::Answer(reply) => {
                send(&reply);
                return Action::Pause;
            }
            Route::Pass => {
                return if forward(&headers, None, true) {
                    Action::Continue
                } else {
                    Action::Pause
                };
            }
            Route::Protected(resource) => resource,
        };
        let authorization = headers.get("authorization");
        let next = self.decide(resource, authorization.as_deref(), Some(stream));
        self.conclude(&headers, next)
    }

    /// Acts on what [`decide`](Self::decide) said for the current stream.
    fn conclude(&self, headers: &Headers, next: Option<Next>) -> Action {
        match next {
            Some(Next::Wait) => Action::Pause,
            Some(Next::Decided(decision)) => {
                if self.act(headers, decision) {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
            None => abi::refuse_undecidable(),
        }
    }
}

/// Sends the request on with the identity headers (none without an identity), after removing
/// the headers [`gate::removals`] names. One host call per header removed or added: Envoy
/// rebuilds the whole map when it is replaced, which costs more. `false`: a host call failed and
/// the request was refused (500) rather than sent on with a spoofed or missing identity.
fn forward(headers: &Headers, identity: Option<&Identity>, keep_authorization: bool) -> bool {
    let names: Vec<&[u8]> = headers.raw().map(|(name, _)| name).collect();
    let removed = gate::removals(&names, keep_authorization)
        .into_iter()
        .try_for_each(|name| abi::remove_header(Map::RequestHeaders, name));
    let added = removed.and_then(|()| {
        identity
            .map(Identity::headers)
            .unwrap_or_default()
            .iter()
            .try_for_each(|(name, value)| abi::add_header(Map::RequestHeaders, name, value))
    });
    if let Err(status) = added {
        log::error!("identity headers could not be set ({status:?}); refusing the request");
        abi::refuse_undecidable();
        return false;
    }
    true
}

/// Answers the current stream locally.
fn send(reply: &Reply) {
    abi::send_response(reply.status, &reply.header_pairs(), &reply.body);
}

/// Every root context of this VM, and each new stream's root until its headers arrive.
#[derive(Debug, Default)]
struct Contexts {
    roots: Vec<JwtRoot>,
    new_streams: HashMap<u32, u32>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::default();
}

/// Runs `f` on the root context `id` (a root, or the root of a new stream).
fn with_root<T>(id: u32, stream: bool, f: impl FnOnce(&mut JwtRoot) -> T) -> Option<T> {
    CONTEXTS.with_borrow_mut(|c| {
        let root = if stream {
            c.new_streams.remove(&id)?
        } else {
            id
        };
        c.roots.iter_mut().find(|r| r.context_id == root).map(f)
    })
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
                abi::init("mcpgw jwt filter", log::LevelFilter::Info);
                c.roots.push(JwtRoot {
                    context_id: id,
                    worker: None,
                    fetch: None,
                    feed_fetch: None,
                    waiting: Vec::new(),
                });
                return;
            }
            if c.new_streams.len() >= MAX_NEW_STREAMS {
                c.new_streams
                    .retain(|stream, _| *stream > id.saturating_sub(MAX_NEW_STREAMS as u32));
            }
            c.new_streams.insert(id, root);
        });
    }

    /// The plugin configuration; `0` makes Envoy reject the filter.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_configure(root: u32, _: usize) -> u32 {
        let bytes = abi::buffer(Buffer::PluginConfiguration);
        u32::from(with_root(root, false, |r| r.configure(&bytes)).unwrap_or(false))
    }

    /// The root's timer.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_tick(root: u32) {
        with_root(root, false, JwtRoot::tick);
    }

    /// The answer to a root's JWKS or revocation feed fetch.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_http_call_response(
        root: u32,
        token: u32,
        _: usize,
        _: usize,
        _: usize,
    ) {
        with_root(root, false, |r| r.http_call_response(token));
    }

    /// A request's headers: the decision.
    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_request_headers(stream: u32, _: usize, _: u32) -> u32 {
        with_root(stream, true, |r| r.request_headers(stream)).unwrap_or_else(|| {
            log::error!("#{stream} request without a root context; refusing it");
            abi::refuse_undecidable()
        }) as u32
    }
}
