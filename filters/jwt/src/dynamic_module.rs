//! The Envoy dynamic-module shell (`libmcpgw_filter_jwt.so`, on mcpgw's own binding
//! `mcpgw_native_abi`): native code in Envoy's process, no VM between Envoy and the filter.
//!
//! - [`JwtConfig`] (one per filter configuration, made on Envoy's main thread, shared by every
//!   worker) validates the configuration (a bad one makes Envoy reject the filter) and holds what
//!   the workers share: the JWKS and the revocation list, each with a generation number the
//!   workers compare against on every request. On the main thread, once a second, it fetches the
//!   JWKS when its refresh interval is due (a remote key source) and the revocation feed every
//!   `refresh_interval`: a listed `jti` stays refused until its token expires, whatever a later
//!   list says, and while the feed is down the known list keeps applying (one warning per
//!   outage).
//! - Each worker has its own token cache and its own view of the keys and the list, cleared and
//!   renewed when the shared generation moves.
//! - Each request goes through [`gate`] as in the proxy-wasm module. With no keys yet, or a token
//!   signed by an unknown `kid`, the request waits for the JWKS fetch in flight, if any (the
//!   configuration's or another request's, on any worker), or else fetches the JWKS itself (one
//!   fetch at a time, unknown `kid`s rate-limited, across all workers) and waits for the answer.
//!   Stale keys keep serving while the key server is down; without any key the answer is 503.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcpgw_core::auth::{Decision, DenyReason, TokenCache};
use mcpgw_core::identity::Identity;
use mcpgw_core::jwk::KeySet;
use mcpgw_core::revocation::RevokedTokens;
use mcpgw_native_abi::{
    self as abi, CalloutResponse, ConfigContext, HeadersStatus, Stream, Ticker, Waker,
};

use crate::config::{Config, Fetch, KeySource, Remote};
use crate::gate::{self, Feed, Route};

mcpgw_native_abi::export_http_filter!("mcpgw jwt filter", JwtConfig, JwtConfig::new);

/// How often the main thread looks whether the JWKS or the revocation feed is due.
const TICK: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Locks a mutex; a worker that panicked holding it left consistent data (every update is one
/// assignment), so a poisoned lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A value every worker reads, renewed by one writer at a time, with its generation.
#[derive(Debug)]
struct Published<T> {
    generation: AtomicU64,
    value: RwLock<Arc<T>>,
}

impl<T> Published<T> {
    fn new(value: T) -> Published<T> {
        Published {
            generation: AtomicU64::new(1),
            value: RwLock::new(Arc::new(value)),
        }
    }

    fn publish(&self, value: T) {
        *self.value.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The value if its generation is not `seen`, with its generation.
    fn newer(&self, seen: u64) -> Option<(u64, Arc<T>)> {
        let generation = self.generation.load(Ordering::Acquire);
        if generation == seen {
            return None;
        }
        let value = self
            .value
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Some((generation, value))
    }
}

/// A time-based slot every worker can claim: taken when its stamp is older than `now - gap`.
#[derive(Debug, Default)]
struct Slot(AtomicU64);

impl Slot {
    fn claim(&self, now: u64, gap: u64, stamp: u64) -> bool {
        let last = self.0.load(Ordering::Acquire);
        if last != 0 && now < last.saturating_add(gap) {
            return false;
        }
        self.0
            .compare_exchange(last, stamp, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether a deadline stamp is still ahead of `now`.
    fn held(&self, now: u64) -> bool {
        now < self.0.load(Ordering::Acquire)
    }

    fn release(&self) {
        self.0.store(0, Ordering::Release);
    }
}

/// What the workers share.
#[derive(Debug)]
struct Shared {
    config: Config,
    keys: Published<KeySet>,
    /// When the published keys were fetched (ms since the epoch), 0 when never.
    fetched_at_ms: AtomicU64,
    revoked: Published<RevokedTokens>,
    /// `<deadline_ms>`: a JWKS fetch is in flight until then.
    lease: Slot,
    /// `<ms>`: the last fetch caused by an unknown `kid`.
    kid_refetch: Slot,
    /// Requests waiting for the JWKS fetch in flight, on any worker.
    waiters: Mutex<Vec<Waker>>,
    /// One per worker thread.
    workers: Vec<Mutex<Worker>>,
}

impl Shared {
    fn remote(&self) -> Option<&Remote> {
        match &self.config.keys {
            KeySource::Remote(remote) => Some(remote),
            KeySource::Inline(_) => None,
        }
    }

    /// Publishes a fetched JWKS if it has a usable key; keeps the old keys otherwise. Ends the
    /// fetch either way.
    fn store(&self, response: Option<CalloutResponse<'_>>) {
        match response {
            Some(response) => {
                let status = response.status.map(String::from_utf8_lossy);
                let known = self.keys.newer(0).map_or(0, |(_, keys)| keys.len());
                if let Some(keys) = gate::fetched_keys(status.as_deref(), &response.body, known) {
                    self.fetched_at_ms.store(now_ms(), Ordering::Release);
                    self.keys.publish(keys);
                }
            }
            None => log::warn!("jwks fetch failed; keeping the known key(s)"),
        }
        self.end_fetch();
    }

    /// Ends the JWKS fetch in flight: frees its lease and wakes the requests waiting for it.
    fn end_fetch(&self) {
        let mut waiters = lock(&self.waiters);
        self.lease.release();
        for waker in waiters.drain(..) {
            waker.wake();
        }
    }

    /// Makes a request whose denial fresh keys could lift wait for them: for the fetch in flight
    /// (`Some(None)`), or for one it starts (`Some(Some(callout))`) when the rate limits allow.
    /// `None`: decide now.
    fn wait_for_keys(
        &self,
        stream: &mut Stream<'_>,
        reason: &DenyReason,
        now: u64,
    ) -> Option<Option<u64>> {
        let remote = self.remote()?;
        {
            // Under the waiters' lock: a fetch seen in flight here wakes this request when it ends.
            let mut waiters = lock(&self.waiters);
            if self.lease.held(now) {
                waiters.push(stream.waker()?);
                return Some(None);
            }
        }
        let claimed = match reason {
            DenyReason::NoKeys => true,
            _ => {
                let gap = u64::try_from(remote.unknown_kid_refetch_interval.as_millis())
                    .unwrap_or(u64::MAX);
                self.kid_refetch.claim(now, gap, now)
            }
        } && self
            .lease
            .claim(now, 0, now.saturating_add(remote.fetch.timeout_ms()));
        if !claimed {
            return None;
        }
        let fetch = &remote.fetch;
        match stream.http_callout(
            &fetch.cluster,
            &gate::fetch_headers(fetch),
            fetch.timeout_ms(),
        ) {
            Ok(callout) => Some(Some(callout)),
            Err(e) => {
                log::warn!("jwks fetch could not start: {e:?}");
                self.end_fetch();
                None
            }
        }
    }

    /// Core's decision at `resource` with this worker's view of the keys and the list, renewed
    /// first when the shared ones moved; `None` when there is no such resource.
    fn decide(
        &self,
        worker: usize,
        resource: usize,
        authorization: Option<&str>,
    ) -> Option<Decision> {
        let index = worker.checked_rem(self.workers.len())?;
        let mut w = lock(self.workers.get(index)?);
        w.sync(self);
        let w = &mut *w;
        gate::decide(
            &self.config,
            resource,
            authorization,
            &w.keys,
            &w.revoked,
            &mut w.cache,
            now_ms(),
        )
    }
}

/// One worker thread's view.
#[derive(Debug)]
struct Worker {
    keys_generation: u64,
    keys: Arc<KeySet>,
    revoked_generation: u64,
    revoked: Arc<RevokedTokens>,
    cache: TokenCache,
}

impl Worker {
    fn sync(&mut self, shared: &Shared) {
        if let Some((generation, keys)) = shared.keys.newer(self.keys_generation) {
            self.keys_generation = generation;
            self.keys = keys;
            // A key may have been withdrawn or replaced under the same `kid`.
            self.cache.clear();
        }
        if let Some((generation, revoked)) = shared.revoked.newer(self.revoked_generation) {
            self.revoked_generation = generation;
            self.revoked = revoked;
        }
    }
}

/// The main thread's fetches.
#[derive(Debug, Default)]
struct Main {
    /// The JWKS fetch in flight.
    jwks_fetch: Option<u64>,
    /// The revocation feed fetch in flight.
    feed_fetch: Option<u64>,
    feed: Feed,
    /// When the revocation feed was last asked (ms since the epoch), 0 when never.
    feed_asked_ms: u64,
}

/// One filter configuration.
#[derive(Debug)]
pub struct JwtConfig {
    shared: Arc<Shared>,
    main: Mutex<Main>,
    /// Wakes [`on_tick`](abi::FilterConfig::on_tick); stopped when the configuration goes.
    _ticker: Option<Ticker>,
}

impl JwtConfig {
    fn new(context: &mut ConfigContext<'_>, _name: &str, bytes: &[u8]) -> Option<JwtConfig> {
        let config = match Config::from_json(bytes) {
            Ok(c) => c,
            Err(e) => {
                log::error!("mcpgw jwt filter: {e}");
                return None;
            }
        };
        let keys = match &config.keys {
            KeySource::Inline(keys) => keys.clone(),
            KeySource::Remote(_) => KeySet::default(),
        };
        let ticker = if matches!(config.keys, KeySource::Remote(_)) || config.revocation.is_some() {
            let ticker = context.ticker(TICK);
            if ticker.is_none() {
                log::error!("mcpgw jwt filter: cannot schedule the key and feed refreshes");
                return None;
            }
            ticker
        } else {
            None
        };
        let workers = (0..abi::concurrency())
            .map(|_| {
                Mutex::new(Worker {
                    keys_generation: 0,
                    keys: Arc::default(),
                    revoked_generation: 0,
                    revoked: Arc::default(),
                    cache: TokenCache::new(config.cache_entries),
                })
            })
            .collect();
        Some(JwtConfig {
            shared: Arc::new(Shared {
                config,
                keys: Published::new(keys),
                fetched_at_ms: AtomicU64::new(0),
                revoked: Published::new(RevokedTokens::default()),
                lease: Slot::default(),
                kid_refetch: Slot::default(),
                waiters: Mutex::default(),
                workers,
            }),
            main: Mutex::new(Main::default()),
            _ticker: ticker,
        })
    }
}

impl abi::FilterConfig for JwtConfig {
    type Filter = JwtFilter;

    fn new_filter(&self) -> Option<JwtFilter> {
        Some(JwtFilter {
            shared: self.shared.clone(),
            waiting: None,
        })
    }

    fn on_tick(&self, context: &mut ConfigContext<'_>) {
        let now = now_ms();
        let shared = &self.shared;
        let mut main = lock(&self.main);
        if let Some(remote) = shared.remote()
            && main.jwks_fetch.is_none()
            && remote
                .fetch
                .due(shared.fetched_at_ms.load(Ordering::Acquire), now)
            && shared
                .lease
                .claim(now, 0, now.saturating_add(remote.fetch.timeout_ms()))
        {
            match start(context, &remote.fetch) {
                Ok(id) => main.jwks_fetch = Some(id),
                Err(e) => {
                    shared.end_fetch();
                    log::warn!("jwks fetch could not start: {e:?}");
                }
            }
        }
        if let Some(feed) = &shared.config.revocation
            && main.feed_fetch.is_none()
            // Ticks are not exact: a fetch due within half a tick goes out now.
            && feed.due(main.feed_asked_ms, now.saturating_add(TICK.as_millis() as u64 / 2))
        {
            main.feed_asked_ms = now;
            match start(context, feed) {
                Ok(id) => main.feed_fetch = Some(id),
                Err(e) => main
                    .feed
                    .failed("mcpgw jwt filter:", &format!("could not be asked ({e:?})")),
            }
        }
    }

    fn on_callout_done(
        &self,
        _context: &mut ConfigContext<'_>,
        id: u64,
        response: Option<CalloutResponse<'_>>,
    ) {
        let mut main = lock(&self.main);
        if main.jwks_fetch == Some(id) {
            main.jwks_fetch = None;
            self.shared.store(response);
        } else if main.feed_fetch == Some(id) {
            main.feed_fetch = None;
            let changed = match response {
                Some(r) => main.feed.answered(
                    "mcpgw jwt filter:",
                    r.status.map(String::from_utf8_lossy).as_deref(),
                    &r.body,
                    now_ms(),
                    self.shared.config.verify.leeway_secs,
                ),
                None => {
                    main.feed.failed("mcpgw jwt filter:", "did not answer");
                    false
                }
            };
            if changed {
                self.shared.revoked.publish(main.feed.revoked().clone());
            }
        }
    }
}

/// Starts a GET of `fetch`'s document from the configuration.
fn start(context: &mut ConfigContext<'_>, fetch: &Fetch) -> Result<u64, abi::CalloutError> {
    context.http_callout(
        &fetch.cluster,
        &gate::fetch_headers(fetch),
        fetch.timeout_ms(),
    )
}

/// A request waiting for a JWKS fetch.
#[derive(Debug)]
struct Waiting {
    /// Its own fetch; `None` when it waits for another request's or the configuration's.
    callout: Option<u64>,
    resource: usize,
    authorization: Option<String>,
    removals: Vec<Vec<u8>>,
}

/// One HTTP stream.
#[derive(Debug)]
pub struct JwtFilter {
    shared: Arc<Shared>,
    waiting: Option<Waiting>,
}

impl JwtFilter {
    /// Acts on a decision; `true` lets the request go on.
    fn act(&self, stream: &mut Stream<'_>, decision: Decision, removals: &[Vec<u8>]) -> bool {
        match decision {
            Decision::Allow(id) => {
                log::debug!("allow sub={} jti={}", id.subject, id.jti);
                forward(stream, removals, Some(&id))
            }
            Decision::Deny(denial) => {
                log::debug!("deny {:?}", denial.reason);
                let reply = gate::refusal(denial);
                stream.send_response(reply.status, &reply.header_pairs(), &reply.body);
                false
            }
        }
    }
}

impl abi::Filter for JwtFilter {
    fn on_request_headers(&mut self, stream: &mut Stream<'_>) -> HeadersStatus {
        let shared = self.shared.clone();
        let config = &shared.config;
        let (route, authorization, removals) = {
            let headers = stream.request_headers();
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| *k == name.as_bytes())
                    .map(|(_, v)| String::from_utf8_lossy(v))
            };
            let route = gate::route(
                config,
                &get(":method").unwrap_or_default(),
                get(":authority").as_deref(),
                &get(":path").unwrap_or_default(),
                get("access-control-request-method").as_deref(),
            );
            let keep_authorization =
                !matches!(route, Route::Protected(_)) || config.forward_authorization;
            let names: Vec<&[u8]> = headers.iter().map(|(k, _)| *k).collect();
            let removals: Vec<Vec<u8>> = gate::removals(&names, keep_authorization)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
            (
                route,
                get("authorization").map(|a| a.into_owned()),
                removals,
            )
        };
        let resource = match route {
            Route::Answer(reply) => {
                stream.send_response(reply.status, &reply.header_pairs(), &reply.body);
                return HeadersStatus::StopIteration;
            }
            Route::Pass => {
                return if forward(stream, &removals, None) {
                    HeadersStatus::Continue
                } else {
                    HeadersStatus::StopIteration
                };
            }
            Route::Protected(resource) => resource,
        };
        let Some(decision) =
            shared.decide(stream.worker_index(), resource, authorization.as_deref())
        else {
            log::error!("no resource or worker state to decide with; refusing the request");
            return refuse_undecidable(stream);
        };
        if let Decision::Deny(denial) = &decision
            && gate::wants_keys(&denial.reason)
            && let Some(callout) = shared.wait_for_keys(stream, &denial.reason, now_ms())
        {
            log::debug!("waiting for the jwks before deciding");
            self.waiting = Some(Waiting {
                callout,
                resource,
                authorization,
                removals,
            });
            return HeadersStatus::StopAllIterationAndBuffer;
        }
        if self.act(stream, decision, &removals) {
            HeadersStatus::Continue
        } else {
            HeadersStatus::StopIteration
        }
    }

    fn on_callout_done(
        &mut self,
        stream: &mut Stream<'_>,
        id: u64,
        response: Option<CalloutResponse<'_>>,
    ) {
        let Some(waiting) = self.waiting.take_if(|w| w.callout == Some(id)) else {
            return;
        };
        self.shared.store(response);
        self.resume(stream, waiting);
    }

    fn on_woken(&mut self, stream: &mut Stream<'_>) {
        if let Some(waiting) = self.waiting.take_if(|w| w.callout.is_none()) {
            self.resume(stream, waiting);
        }
    }
}

impl JwtFilter {
    /// Decides a waiting request with the keys there are now, and lets it go on if allowed.
    fn resume(&self, stream: &mut Stream<'_>, waiting: Waiting) {
        let decision = self.shared.decide(
            stream.worker_index(),
            waiting.resource,
            waiting.authorization.as_deref(),
        );
        let go_on = match decision {
            Some(decision) => self.act(stream, decision, &waiting.removals),
            None => {
                log::error!("no resource or worker state to decide with; refusing the request");
                refuse_undecidable(stream);
                false
            }
        };
        if go_on {
            stream.continue_request();
        }
    }
}

impl Drop for JwtFilter {
    /// A request that goes away during its own JWKS fetch ends it (Envoy cancels the fetch), so
    /// the requests waiting for it are woken and the next one may fetch.
    fn drop(&mut self) {
        if self.waiting.as_ref().is_some_and(|w| w.callout.is_some()) {
            self.shared.end_fetch();
        }
    }
}

/// Sends the request on with the identity headers (none without an identity), after removing
/// the headers [`gate::removals`] named; `true` when it may go on. When Envoy refuses a change
/// the request is refused instead (fail closed: it could carry a client's identity header or
/// lack ours).
fn forward(stream: &mut Stream<'_>, removals: &[Vec<u8>], identity: Option<&Identity>) -> bool {
    let removed = removals
        .iter()
        .all(|name| stream.remove_request_header(name));
    let added = removed
        && identity
            .map(Identity::headers)
            .unwrap_or_default()
            .iter()
            .all(|(name, value)| stream.add_request_header(name, value));
    if !added {
        log::error!("envoy refused a request header change; refusing the request");
        refuse_undecidable(stream);
    }
    added
}

/// Refuses a request the filter cannot decide or change (fail closed).
fn refuse_undecidable(stream: &mut Stream<'_>) -> HeadersStatus {
    let reply = gate::undecidable();
    stream.send_response(reply.status, &reply.header_pairs(), &reply.body);
    HeadersStatus::StopIteration
}
