//! The JWT filter: a thin proxy-wasm shell over `mcpgw_core`.
//!
//! - [`JwtRoot`] (one per VM, i.e. per Envoy thread) validates the plugin configuration in
//!   `on_configure` (a bad one makes Envoy reject the filter) and, for a remote JWKS, refreshes
//!   the keys on a timer. The fetched JWKS lives in the VM's shared data so every thread uses one
//!   copy; a lease in shared data makes one thread fetch at a time. With a revocation feed, each
//!   root context also fetches the list of revoked `jti`s (the sidecar's `GET /revoked`) every
//!   `refresh_interval` into its own thread's state: a fetched list replaces the previous one,
//!   and while the feed is down the last list keeps applying (one warning per outage).
//! - [`JwtFilter`] (one per request) strips client-sent identity headers, serves RFC 9728
//!   metadata, lets CORS preflights and unprotected paths through, and asks core for a decision.
//!   With no keys yet, or a token signed by an unknown `kid`, it fetches the JWKS once
//!   (rate-limited), pausing the request until the answer is in. Stale keys keep serving while the
//!   key server is down; without any key the answer is 503 (fail closed). An allowed token
//!   whose `jti` is in the revocation list is refused with core's revoked denial.

pub mod config;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use mcpgw_core::auth::{self, Decision, DenyReason, TokenCache, VerifyError};
use mcpgw_core::identity;
use mcpgw_core::jwk::KeySet;
use mcpgw_core::revocation::RevokedTokens;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

use crate::config::{Config, Fetch, KeySource, Remote};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("mcpgw jwt filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(JwtRoot { context_id, worker: None, fetch: None, feed_fetch: None })
    });
}}

/// Shared-data value format version; bump when the layout below changes.
const SHARED_VERSION: &str = "v1";
/// How often each thread looks at shared data for keys another thread fetched.
const SYNC_EVERY_MS: u64 = 1_000;
/// The root context's tick period (JWKS and revocation feed refreshes).
const TICK_MS: u64 = 1_000;

/// Per-thread state shared by the root context and the request contexts of one VM.
#[derive(Debug)]
struct Worker {
    config: Rc<Config>,
    keys: Rc<KeySet>,
    /// The CAS of the shared-data JWKS the keys came from.
    keys_cas: Option<u32>,
    /// When the fetched keys were fetched (ms since the epoch), 0 when never.
    fetched_at_ms: u64,
    last_sync_ms: u64,
    cache: TokenCache,
    /// The revoked `jti`s as last fetched (empty until the feed first answers).
    revoked: RevokedTokens,
    /// When the revocation feed was last asked (ms since the epoch), 0 when never.
    feed_asked_ms: u64,
    /// Whether the last feed fetch failed (so an outage is reported once).
    feed_down: bool,
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

fn now_ms(ctx: &(impl Context + ?Sized)) -> u64 {
    ctx.get_current_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn read_stamp(ctx: &(impl Context + ?Sized), key: &str) -> (u64, Option<u32>) {
    let (value, cas) = ctx.get_shared_data(key);
    let stamp = value
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (stamp, cas)
}

/// Claims a time-based slot in shared data: succeeds when the stored stamp is older than
/// `now - min_gap_ms` (or absent) and the CAS write wins.
fn claim(ctx: &(impl Context + ?Sized), key: &str, now: u64, min_gap_ms: u64, stamp: u64) -> bool {
    let (last, cas) = read_stamp(ctx, key);
    if last != 0 && now < last.saturating_add(min_gap_ms) {
        return false;
    }
    ctx.set_shared_data(key, Some(stamp.to_string().as_bytes()), cas)
        .is_ok()
}

impl Worker {
    /// Picks up keys another thread stored in shared data, when they changed; true if it did.
    fn sync(&mut self, ctx: &(impl Context + ?Sized), shared: &SharedKeys, now: u64) -> bool {
        self.last_sync_ms = now;
        let (value, cas) = ctx.get_shared_data(&shared.jwks);
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
        self.keys = Rc::new(keys);
        self.keys_cas = cas;
        self.fetched_at_ms = fetched_at_ms;
        // A key may have been withdrawn or replaced under the same `kid`.
        self.cache.clear();
    }

    /// Stores a fetched JWKS for every thread, if it has a usable key; keeps the old keys
    /// otherwise.
    fn store(
        &mut self,
        ctx: &(impl Context + ?Sized),
        shared: &SharedKeys,
        status: Option<String>,
        body: Option<Vec<u8>>,
        now: u64,
    ) {
        let _ = ctx.set_shared_data(&shared.lease, Some(b"0"), None);
        if status.as_deref() != Some("200") {
            log::warn!(
                "jwks fetch answered status {}; keeping {} known key(s)",
                status.as_deref().unwrap_or("none"),
                self.keys.len()
            );
            return;
        }
        let body = body.unwrap_or_default();
        let keys = match KeySet::from_json(&body) {
            Ok((keys, errors)) => {
                for e in errors {
                    log::warn!("jwks: skipping a key: {e}");
                }
                keys
            }
            Err(e) => {
                log::warn!("jwks fetch returned an invalid JWKS ({e}); keeping the old keys");
                return;
            }
        };
        if keys.is_empty() {
            log::warn!("jwks fetch returned no usable key; keeping the old keys");
            return;
        }
        let mut value = format!("{now}\n").into_bytes();
        value.extend_from_slice(&body);
        let _ = ctx.set_shared_data(&shared.jwks, Some(&value), None);
        let (_, cas) = ctx.get_shared_data(&shared.jwks);
        log::info!("jwks: loaded {} key(s)", keys.len());
        self.install(keys, cas, now);
    }

    /// Takes a revocation feed answer: a list replaces the last one; anything else keeps it.
    fn feed_answered(&mut self, context_id: u32, status: Option<String>, body: Option<Vec<u8>>) {
        let list = match status.as_deref() {
            Some("200") => RevokedTokens::from_json(&body.unwrap_or_default())
                .map_err(|e| format!("returned an invalid list ({e})")),
            other => Err(format!("answered status {}", other.unwrap_or("none"))),
        };
        match list {
            Ok(list) => {
                if self.feed_down {
                    log::info!("#{context_id} revocation feed answers again");
                }
                self.feed_down = false;
                if list != self.revoked {
                    log::debug!("#{context_id} revocation list: {} token(s)", list.len());
                }
                self.revoked = list;
            }
            Err(why) => self.feed_failed(context_id, &why),
        }
    }

    /// Notes a failed feed fetch; warns once per outage.
    fn feed_failed(&mut self, context_id: u32, why: &str) {
        if !self.feed_down {
            log::warn!(
                "#{context_id} revocation feed {why}; keeping the last list ({} token(s)) until it answers",
                self.revoked.len()
            );
        }
        self.feed_down = true;
    }
}

/// Starts a GET of `fetch`'s document (the JWKS, the revocation feed) on its cluster.
fn dispatch_fetch(ctx: &(impl Context + ?Sized), fetch: &Fetch) -> Result<u32, Status> {
    ctx.dispatch_http_call(
        &fetch.cluster,
        vec![
            (":method", "GET"),
            (":path", &fetch.path),
            (":authority", &fetch.authority),
            ("accept", "application/json"),
        ],
        None,
        vec![],
        fetch.timeout,
    )
}

/// The per-VM root context.
#[derive(Debug)]
pub struct JwtRoot {
    context_id: u32,
    worker: Option<Rc<RefCell<Worker>>>,
    /// The JWKS fetch in flight.
    fetch: Option<u32>,
    /// The revocation feed fetch in flight.
    feed_fetch: Option<u32>,
}

impl JwtRoot {
    fn remote(&self) -> Option<(Remote, SharedKeys)> {
        let worker = self.worker.as_ref()?.borrow();
        match &worker.config.keys {
            KeySource::Remote(r) => Some((r.clone(), SharedKeys::new(r))),
            KeySource::Inline(_) => None,
        }
    }

    /// Fetches the JWKS when it is due, one thread at a time.
    fn refresh_keys(&mut self, worker: &RefCell<Worker>, now: u64) {
        let Some((remote, shared)) = self.remote() else {
            return;
        };
        let mut w = worker.borrow_mut();
        w.sync(self, &shared, now);
        let due = remote.fetch.due(w.fetched_at_ms, now);
        drop(w);
        if !due || self.fetch.is_some() {
            return;
        }
        // The lease stamp is the deadline of the fetch; `claim` compares against it with gap 0.
        let deadline = now.saturating_add(remote.fetch.timeout_ms());
        if claim(self, &shared.lease, now, 0, deadline) {
            match dispatch_fetch(self, &remote.fetch) {
                Ok(token) => self.fetch = Some(token),
                Err(e) => log::warn!("#{} jwks fetch could not start: {e:?}", self.context_id),
            }
        }
    }

    /// Fetches the revocation list when it is due (every thread for itself).
    fn refresh_revoked(&mut self, worker: &RefCell<Worker>, now: u64) {
        let mut w = worker.borrow_mut();
        let Some(feed) = w.config.revocation.clone() else {
            return;
        };
        // Ticks are not exact: a fetch due within half a tick goes out now, not a whole tick late.
        let due = feed.due(w.feed_asked_ms, now.saturating_add(TICK_MS / 2));
        if !due || self.feed_fetch.is_some() {
            return;
        }
        w.feed_asked_ms = now;
        match dispatch_fetch(self, &feed) {
            Ok(token) => self.feed_fetch = Some(token),
            Err(e) => w.feed_failed(self.context_id, &format!("could not be asked ({e:?})")),
        }
    }
}

impl Context for JwtRoot {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let status = self.get_http_call_response_header(":status");
        let body = self.get_http_call_response_body(0, body_size);
        if self.feed_fetch == Some(token_id) {
            self.feed_fetch = None;
            worker
                .borrow_mut()
                .feed_answered(self.context_id, status, body);
        } else if self.fetch == Some(token_id) {
            self.fetch = None;
            if let Some((_, shared)) = self.remote() {
                worker
                    .borrow_mut()
                    .store(self, &shared, status, body, now_ms(self));
            }
        }
    }
}

impl RootContext for JwtRoot {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log::error!("#{} mcpgw jwt filter: {e}", self.context_id);
                return false;
            }
        };
        let keys = match &config.keys {
            KeySource::Inline(keys) => keys.clone(),
            KeySource::Remote(_) => KeySet::default(),
        };
        if matches!(config.keys, KeySource::Remote(_)) || config.revocation.is_some() {
            self.set_tick_period(Duration::from_millis(TICK_MS));
        }
        let cache = TokenCache::new(config.cache_entries);
        self.worker = Some(Rc::new(RefCell::new(Worker {
            config: Rc::new(config),
            keys: Rc::new(keys),
            keys_cas: None,
            fetched_at_ms: 0,
            last_sync_ms: 0,
            cache,
            revoked: RevokedTokens::default(),
            feed_asked_ms: 0,
            feed_down: false,
        })));
        true
    }

    fn on_tick(&mut self) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let now = now_ms(self);
        self.refresh_keys(&worker, now);
        self.refresh_revoked(&worker, now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(JwtFilter {
            context_id,
            worker,
            pending: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A request paused while the JWKS is fetched.
#[derive(Debug)]
struct Pending {
    token_id: u32,
    resource_index: usize,
    authorization: Option<String>,
}

/// The per-request context.
#[derive(Debug)]
pub struct JwtFilter {
    context_id: u32,
    worker: Rc<RefCell<Worker>>,
    pending: Option<Pending>,
}

impl JwtFilter {
    fn send_json(&self, status: u32, extra: Vec<(&str, &str)>, body: &str, head: bool) {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ];
        headers.extend(extra);
        let body = (!head).then_some(body.as_bytes());
        self.send_http_response(status, headers, body);
    }

    /// Serves RFC 9728 metadata when `path` is a well-known metadata URI of a resource.
    fn serve_metadata(
        &self,
        config: &Config,
        host: Option<&str>,
        path: &str,
        method: &str,
    ) -> bool {
        if method != "GET" && method != "HEAD" {
            return false;
        }
        let Some(resource) = config.resources.find_metadata(host, path) else {
            return false;
        };
        let body = serde_json::to_string(&resource.metadata_document()).unwrap_or_default();
        self.send_json(
            200,
            vec![("access-control-allow-origin", "*")],
            &body,
            method == "HEAD",
        );
        true
    }

    /// Asks core for a decision and acts on it; `may_fetch` allows one JWKS fetch first.
    fn decide(
        &mut self,
        resource_index: usize,
        authorization: Option<String>,
        may_fetch: bool,
    ) -> Action {
        let worker = self.worker.clone();
        let now = now_ms(self);
        let mut w = worker.borrow_mut();
        let config = w.config.clone();
        let remote = match &config.keys {
            KeySource::Remote(r) => Some((r, SharedKeys::new(r))),
            KeySource::Inline(_) => None,
        };
        if let Some((_, shared)) = &remote
            && now >= w.last_sync_ms.saturating_add(SYNC_EVERY_MS)
        {
            w.sync(self, shared, now);
        }
        let Some(resource) = config.resources.iter().nth(resource_index) else {
            return Action::Continue;
        };
        let decide_with = |w: &mut Worker| {
            let keys = w.keys.clone();
            auth::authenticate(
                authorization.as_deref(),
                resource,
                &keys,
                &config.verify,
                now / 1000,
                Some(&mut w.cache),
            )
        };
        let mut decision = decide_with(&mut w);
        // Another thread may have fetched the missing key already: look before fetching.
        if let (Decision::Deny(denial), Some((_, shared))) = (&decision, &remote)
            && wants_keys(&denial.reason)
            && w.sync(self, shared, now)
        {
            decision = decide_with(&mut w);
        }
        let decision = w.revoked.check(decision, resource);
        drop(w);
        if let (Decision::Deny(denial), Some((remote, shared)), true) =
            (&decision, &remote, may_fetch)
        {
            let wants_keys = match &denial.reason {
                DenyReason::NoKeys => claim(
                    self,
                    &shared.lease,
                    now,
                    0,
                    now.saturating_add(remote.fetch.timeout_ms()),
                ),
                DenyReason::InvalidToken(VerifyError::UnknownKeyId(_)) => {
                    let gap = u64::try_from(remote.unknown_kid_refetch_interval.as_millis())
                        .unwrap_or(u64::MAX);
                    claim(self, &shared.kid_refetch, now, gap, now)
                }
                _ => false,
            };
            if wants_keys {
                match dispatch_fetch(self, &remote.fetch) {
                    Ok(token_id) => {
                        log::debug!("#{} fetching jwks before deciding", self.context_id);
                        self.pending = Some(Pending {
                            token_id,
                            resource_index,
                            authorization,
                        });
                        return Action::Pause;
                    }
                    Err(e) => log::warn!("#{} jwks fetch could not start: {e:?}", self.context_id),
                }
            }
        }
        if self.act(decision, config.forward_authorization) {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn act(&self, decision: Decision, forward_authorization: bool) -> bool {
        match decision {
            Decision::Allow(id) => {
                if !forward_authorization {
                    self.set_http_request_header("authorization", None);
                }
                for (name, value) in id.headers() {
                    self.set_http_request_header(name, Some(&value));
                }
                log::debug!(
                    "#{} allow sub={} jti={}",
                    self.context_id,
                    id.subject,
                    id.jti
                );
                true
            }
            Decision::Deny(denial) => {
                log::debug!("#{} deny {:?}", self.context_id, denial.reason);
                let mut extra = Vec::new();
                if let Some(challenge) = &denial.www_authenticate {
                    extra.push(("www-authenticate", challenge.as_str()));
                }
                self.send_json(u32::from(denial.status), extra, &denial.body, false);
                false
            }
        }
    }
}

/// Whether a denial may go away with fresh keys.
fn wants_keys(reason: &DenyReason) -> bool {
    matches!(
        reason,
        DenyReason::NoKeys | DenyReason::InvalidToken(VerifyError::UnknownKeyId(_))
    )
}

impl Context for JwtFilter {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        let Some(pending) = self.pending.take_if(|p| p.token_id == token_id) else {
            return;
        };
        let worker = self.worker.clone();
        let config = worker.borrow().config.clone();
        if let KeySource::Remote(remote) = &config.keys {
            let status = self.get_http_call_response_header(":status");
            let body = self.get_http_call_response_body(0, body_size);
            worker
                .borrow_mut()
                .store(self, &SharedKeys::new(remote), status, body, now_ms(self));
        }
        let action = self.decide(pending.resource_index, pending.authorization, false);
        if matches!(action, Action::Continue) {
            self.resume_http_request();
        }
    }
}

impl HttpContext for JwtFilter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        // No spoofing: identity headers only ever come from this filter.
        for (name, _) in self.get_http_request_headers() {
            if identity::is_identity_header(&name) {
                self.set_http_request_header(&name, None);
            }
        }
        let config = self.worker.borrow().config.clone();
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let host = self.get_http_request_header(":authority");
        let method = self.get_http_request_header(":method").unwrap_or_default();
        if self.serve_metadata(&config, host.as_deref(), &path, &method) {
            return Action::Pause;
        }
        let Some(found) = config.resources.find(host.as_deref(), &path) else {
            return Action::Continue;
        };
        let Some(index) = config.resources.iter().position(|r| std::ptr::eq(r, found)) else {
            return Action::Continue;
        };
        // CORS preflight carries no credentials (Fetch spec); the CORS filter or upstream answers.
        if method == "OPTIONS"
            && self
                .get_http_request_header("access-control-request-method")
                .is_some()
        {
            return Action::Continue;
        }
        let authorization = self.get_http_request_header("authorization");
        self.decide(index, authorization, true)
    }
}
