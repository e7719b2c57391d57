//! mcpgw-bridge: a streamable-HTTP MCP endpoint in front of a stdio MCP server.
//!
//! [`child`] runs one stdio server process; [`session`] holds a session's streams and replay
//! buffer; [`pool`] keeps initialised children ready; [`http`] applies the transport rules of
//! MCP 2025-06-18 / 2025-11-25; [`modern`] serves 2026-07-28 stateless requests by translating
//! them for children that speak an older revision. [`Bridge`] ties them together.

pub mod child;
pub mod config;
pub mod env;
pub mod http;
pub mod limits;
pub mod modern;
pub mod pool;
pub mod session;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcpgw_core::session::Caller;
use tokio::sync::Mutex as AsyncMutex;
use tracing::info;

use crate::child::{Child, ChildError, ChildOptions};
use crate::config::{Config, Isolation};
use crate::env::{ChildEnv, Dirs};
use crate::limits::CallLimiter;
use crate::pool::Pool;
use crate::session::Session;

/// How long a stopped child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The key of the stateless child not tied to a user (isolation `session` and `shared`).
const NO_USER: &str = "";

/// A child the bridge initialised itself, serving 2026-07-28 requests (and, in shared mode,
/// every session), with the `subscriptions/listen` streams it feeds.
#[derive(Debug)]
pub struct Stateless {
    /// The child.
    pub child: Arc<Child>,
    /// Its `subscriptions/listen` streams.
    pub hub: modern::Hub,
    last_used: Mutex<Instant>,
}

/// Where a stateless child lives: empty until started, and while it restarts.
type StatelessSlot = AsyncMutex<Option<Arc<Stateless>>>;

/// Why no child can serve a request.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The user's directory cannot be created.
    #[error(transparent)]
    Dir(#[from] env::EnvError),
    /// The child did not start or initialise.
    #[error(transparent)]
    Child(#[from] ChildError),
}

/// Why a session cannot be opened now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The bridge holds its maximum of sessions, or is draining (503).
    Full,
    /// This user holds their maximum of sessions (429).
    UserFull,
}

/// The bridge's shared state.
#[derive(Debug)]
pub struct Bridge {
    /// The configuration it runs with.
    pub cfg: Config,
    /// How children are started.
    pub child_opts: ChildOptions,
    /// Where children run.
    pub dirs: Dirs,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Sessions being opened (counted against the maximum).
    opening: AtomicUsize,
    /// Sessions open or being opened, per subject.
    per_user: Mutex<HashMap<String, u32>>,
    /// `tools/call` buckets per subject.
    pub limiter: CallLimiter,
    /// Warm children (isolation `session` only: a warm child belongs to no user yet).
    pub pool: Arc<Pool>,
    /// The stateless children: one per user with isolation `user`, else one. Each has a slot of
    /// its own, so one user's child starting never holds up another user's requests.
    stateless: Mutex<HashMap<String, Arc<StatelessSlot>>>,
    draining: AtomicBool,
}

impl Bridge {
    /// Builds the bridge from its configuration: checks the child's environment and creates the
    /// state directory (starts no child yet).
    pub fn new(cfg: Config) -> anyhow::Result<Arc<Bridge>> {
        let dirs = Dirs::create(&cfg.state_dir)?;
        let child_opts = ChildOptions {
            argv: cfg.child_argv()?,
            max_line: cfg.max_line,
            slow_client_timeout: cfg.slow_client_timeout,
            registry: child::Registry::default(),
            env: ChildEnv::from_config(&cfg)?,
        };
        let pool = Pool::new(
            child_opts.clone(),
            dirs.shared(),
            if cfg.isolation == Isolation::Session {
                cfg.pool_size
            } else {
                0
            },
            cfg.pool_protocol_version.clone(),
            cfg.init_timeout,
        );
        Ok(Arc::new(Bridge {
            limiter: CallLimiter::new(cfg.tool_calls_per_second),
            cfg,
            child_opts,
            dirs,
            sessions: Mutex::new(HashMap::new()),
            opening: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
            pool,
            stateless: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
        }))
    }

    /// Starts the background work: pool refills, the idle reaper, and a readiness probe.
    pub fn start(self: &Arc<Self>) {
        Arc::clone(&self.pool).start();
        let weak = Arc::downgrade(self);
        let every = if self.cfg.idle_timeout.is_zero() {
            Duration::from_secs(30)
        } else {
            (self.cfg.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(b) = weak.upgrade() else { return };
                b.limiter.forget_full(Instant::now());
                if !b.cfg.idle_timeout.is_zero() {
                    b.reap_idle().await;
                }
            }
        });
        // Readiness needs a child seen to start and initialise. With isolation `session` or
        // `shared` that is the stateless child, kept for the first request (unless `--pool-size
        // 0` asks for no idle children); with `user` every child belongs to a user, so a probe
        // child is started in the shared directory and stopped.
        let b = Arc::clone(self);
        tokio::spawn(async move {
            let keep = b.cfg.isolation == Isolation::Shared
                || (b.cfg.isolation == Isolation::Session && b.pool.size() > 0);
            if b.stateless_child(None).await.is_err() || keep {
                return;
            }
            let slot = lock(&b.stateless).remove(NO_USER);
            if let Some(slot) = slot
                && let Some(s) = slot.lock().await.take()
            {
                s.hub.close();
                s.child.stop(STOP_GRACE).await;
            }
        });
    }

    /// Whether the child command has been seen to start and initialise.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.pool.is_ready()
    }

    /// Whether SIGTERM was received.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Reserves a place for a new session of `caller` under the bridge's and the user's maximum.
    pub fn reserve_session(self: &Arc<Self>, caller: &Caller<'_>) -> Result<SessionSlot, Refusal> {
        let open = self.session_count() + self.opening.fetch_add(1, Ordering::AcqRel);
        let mut slot = SessionSlot {
            bridge: Arc::clone(self),
            subject: None,
        };
        if open >= self.cfg.max_sessions || self.is_draining() {
            return Err(Refusal::Full);
        }
        let mut per_user = lock(&self.per_user);
        let n = per_user.entry(caller.subject.to_owned()).or_insert(0);
        if *n >= self.cfg.max_sessions_per_user {
            return Err(Refusal::UserFull);
        }
        *n += 1;
        slot.subject = Some(caller.subject.to_owned());
        Ok(slot)
    }

    fn release_user_session(&self, subject: &str) {
        let mut per_user = lock(&self.per_user);
        if let Some(n) = per_user.get_mut(subject) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_user.remove(subject);
            }
        }
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// The session with this id.
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    /// Registers a session opened in `slot`; it ends by itself when its child dies.
    pub fn insert_session(self: &Arc<Self>, mut slot: SessionSlot, session: Arc<Session>) {
        // From now on the session's removal releases the user's place, not the slot.
        slot.subject = None;
        lock(&self.sessions).insert(session.id.clone(), Arc::clone(&session));
        let weak = Arc::downgrade(self);
        let watched = Arc::clone(&session);
        tokio::spawn(async move {
            watched.child.wait_dead().await;
            if let Some(b) = weak.upgrade()
                && b.remove_session(&watched.id).is_some()
            {
                info!(session = %watched.id, "session ended: its MCP server process exited");
            }
        });
    }

    /// Removes a session, closes its streams and stops its child (if it owns one).
    pub fn remove_session(&self, id: &str) -> Option<Arc<Session>> {
        let session = lock(&self.sessions).remove(id)?;
        self.release_user_session(session.owner.subject());
        session.close();
        if session.owns_child {
            let child = Arc::clone(&session.child);
            tokio::spawn(async move { child.stop(STOP_GRACE).await });
        }
        Some(session)
    }

    async fn reap_idle(&self) {
        let idle: Vec<String> = lock(&self.sessions)
            .values()
            .filter(|s| s.idle_for() >= self.cfg.idle_timeout && s.child.in_flight() == 0)
            .map(|s| s.id.clone())
            .collect();
        for id in idle {
            info!(session = %id, "session closed after the idle timeout");
            self.remove_session(&id);
        }
        // A user's stateless child goes when idle; their directory, and so their state, stays.
        let idle: Vec<Arc<Stateless>> = {
            let mut all = lock(&self.stateless);
            let mut idle = Vec::new();
            all.retain(|key, slot| {
                // A slot in use (a child starting) is not idle.
                let Ok(mut slot) = slot.try_lock() else {
                    return true;
                };
                let gone = key.as_str() != NO_USER
                    && slot.as_ref().is_some_and(|s| {
                        s.child.in_flight() == 0
                            && !s.hub.is_listened()
                            && lock(&s.last_used).elapsed() >= self.cfg.idle_timeout
                    });
                if gone {
                    idle.extend(slot.take());
                }
                !gone
            });
            idle
        };
        for s in idle {
            s.hub.close();
            s.child.stop(STOP_GRACE).await;
        }
    }

    /// The directory `caller`'s children run in: their own with isolation `user`, else the
    /// shared one.
    pub fn child_dir(&self, caller: Option<&Caller<'_>>) -> Result<PathBuf, env::EnvError> {
        match caller {
            Some(c) if self.cfg.isolation == Isolation::User => self.dirs.user(c),
            _ => Ok(self.dirs.shared()),
        }
    }

    /// The bridge-initialised child serving `caller`'s 2026-07-28 requests (with isolation
    /// `shared` also every session): the user's own with isolation `user`, else the one shared
    /// child. Started on first use, restarted after it dies.
    pub async fn stateless_child(
        &self,
        caller: Option<&Caller<'_>>,
    ) -> Result<Arc<Stateless>, PlaceError> {
        let key = match caller {
            Some(c) if self.cfg.isolation == Isolation::User => c.storage_key(),
            _ => NO_USER.to_owned(),
        };
        let slot = Arc::clone(lock(&self.stateless).entry(key).or_default());
        let mut slot = slot.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.child.is_dead()) {
            *lock(&s.last_used) = Instant::now();
            return Ok(Arc::clone(s));
        }
        let dir = self.child_dir(caller)?;
        let child = Child::spawn(&self.child_opts, &dir)?;
        match child
            .initialize(&self.cfg.pool_protocol_version, self.cfg.init_timeout)
            .await
        {
            Ok(_) => {
                self.pool.mark_ready(true);
                let s = Arc::new(Stateless {
                    child,
                    hub: modern::Hub::default(),
                    last_used: Mutex::new(Instant::now()),
                });
                s.child.set_owner(Some(s.hub.owner()));
                *slot = Some(Arc::clone(&s));
                Ok(s)
            }
            Err(e) => {
                self.pool.mark_ready(false);
                child.stop(STOP_GRACE).await;
                Err(e.into())
            }
        }
    }

    /// SIGTERM: refuse new sessions, let in-flight requests finish (up to the drain timeout),
    /// then end every session and stop every child, waiting until each one has been reaped.
    pub async fn shutdown(&self) {
        self.draining.store(true, Ordering::Release);
        self.pool.stop_refilling();
        let slots: Vec<Arc<StatelessSlot>> = lock(&self.stateless).values().cloned().collect();
        for slot in slots {
            if let Some(s) = slot.lock().await.as_ref() {
                s.hub.close();
            }
        }
        let deadline = tokio::time::Instant::now() + self.cfg.drain_timeout;
        while tokio::time::Instant::now() < deadline && self.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ids: Vec<String> = lock(&self.sessions).keys().cloned().collect();
        for id in ids {
            if let Some(s) = lock(&self.sessions).remove(&id) {
                s.close();
            }
        }
        // Every child, wherever it is: in a session, warm in the pool, stateless, or starting.
        let children = self.child_opts.registry.close();
        let n = children.len();
        let stops: Vec<_> = children
            .into_iter()
            .map(|c| tokio::spawn(async move { c.stop(STOP_GRACE).await }))
            .collect();
        for s in stops {
            let _ = s.await;
        }
        info!(children = n, "all children stopped");
    }

    fn in_flight(&self) -> usize {
        let sessions: usize = lock(&self.sessions)
            .values()
            .map(|s| s.child.in_flight())
            .sum();
        let stateless: usize = lock(&self.stateless)
            .values()
            .map(|slot| {
                slot.try_lock()
                    .map(|s| s.as_ref().map_or(0, |s| s.child.in_flight()))
                    .unwrap_or(1)
            })
            .sum();
        sessions + stateless
    }
}

/// A reserved place under the session maximums; released when dropped unless a session took it.
#[derive(Debug)]
pub struct SessionSlot {
    bridge: Arc<Bridge>,
    subject: Option<String>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.bridge.opening.fetch_sub(1, Ordering::AcqRel);
        if let Some(subject) = self.subject.take() {
            self.bridge.release_user_session(&subject);
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update of plain data; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A random session id: 32 hex digits (visible ASCII, 128 bits from the OS).
pub fn new_session_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // The OS RNG failing is not recoverable; ids must never be predictable.
        std::process::abort();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
