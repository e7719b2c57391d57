//! mcpgw-bridge: a streamable-HTTP MCP endpoint in front of a stdio MCP server.
//!
//! [`child`] runs one stdio server process; [`session`] holds a session's streams and replay
//! buffer; [`pool`] keeps initialised children ready; [`http`] applies the transport rules of
//! MCP 2025-06-18 / 2025-11-25; [`modern`] serves 2026-07-28 stateless requests by translating
//! them for children that speak an older revision. [`Bridge`] ties them together.

pub mod child;
pub mod config;
pub mod http;
pub mod modern;
pub mod pool;
pub mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;
use tracing::info;

use crate::child::{Child, ChildError, ChildOptions};
use crate::config::Config;
use crate::pool::Pool;
use crate::session::Session;

/// How long a stopped child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The bridge's shared state.
#[derive(Debug)]
pub struct Bridge {
    /// The configuration it runs with.
    pub cfg: Config,
    /// How children are started.
    pub child_opts: ChildOptions,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Sessions being opened (counted against the maximum).
    opening: AtomicUsize,
    /// Warm children.
    pub pool: Arc<Pool>,
    /// The child shared by every session in shared mode, and by 2026-07-28 requests.
    shared: AsyncMutex<Option<Arc<Child>>>,
    /// 2026-07-28 `subscriptions/listen` streams.
    pub modern: modern::Hub,
    draining: AtomicBool,
}

impl Bridge {
    /// Builds the bridge from its configuration (starts nothing yet).
    pub fn new(cfg: Config) -> anyhow::Result<Arc<Bridge>> {
        let child_opts = ChildOptions {
            argv: cfg.child_argv()?,
            max_line: cfg.max_line,
            slow_client_timeout: cfg.slow_client_timeout,
            registry: child::Registry::default(),
        };
        let pool = Pool::new(
            child_opts.clone(),
            if cfg.child_mode == config::ChildMode::PerSession {
                cfg.pool_size
            } else {
                0
            },
            cfg.pool_protocol_version.clone(),
            cfg.init_timeout,
        );
        Ok(Arc::new(Bridge {
            cfg,
            child_opts,
            sessions: Mutex::new(HashMap::new()),
            opening: AtomicUsize::new(0),
            pool,
            shared: AsyncMutex::new(None),
            modern: modern::Hub::default(),
            draining: AtomicBool::new(false),
        }))
    }

    /// Starts the background work: pool refills, the idle reaper, and a readiness probe.
    pub fn start(self: &Arc<Self>) {
        Arc::clone(&self.pool).start();
        if !self.cfg.idle_timeout.is_zero() {
            let weak = Arc::downgrade(self);
            let every = (self.cfg.idle_timeout / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(30));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(b) = weak.upgrade() else { return };
                    b.reap_idle();
                }
            });
        }
        // The child behind 2026-07-28 requests (and every session in shared mode) starts now, so
        // the first stateless request does not wait for a process start; without a pool it is
        // also what proves the command works. `--pool-size 0` in per-session mode asks for no idle
        // children: probe, then stop it.
        let b = Arc::clone(self);
        tokio::spawn(async move {
            if b.shared_child().await.is_ok()
                && b.pool.size() == 0
                && b.cfg.child_mode == config::ChildMode::PerSession
                && let Some(c) = b.shared.lock().await.take()
            {
                c.stop(STOP_GRACE).await;
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

    /// Reserves a slot for a new session, or `None` when the maximum is reached.
    pub fn reserve_session(self: &Arc<Self>) -> Option<SessionSlot> {
        let open = self.session_count() + self.opening.fetch_add(1, Ordering::AcqRel);
        if open >= self.cfg.max_sessions || self.is_draining() {
            self.opening.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(SessionSlot {
            bridge: Arc::clone(self),
        })
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// The session with this id.
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().ok().and_then(|s| s.get(id).cloned())
    }

    /// Registers a session; it ends by itself when its child dies.
    pub fn insert_session(self: &Arc<Self>, session: Arc<Session>) {
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(session.id.clone(), Arc::clone(&session));
        }
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
        let session = self.sessions.lock().ok().and_then(|mut s| s.remove(id))?;
        session.close();
        if session.owns_child {
            let child = Arc::clone(&session.child);
            tokio::spawn(async move { child.stop(STOP_GRACE).await });
        }
        Some(session)
    }

    fn reap_idle(&self) {
        let idle: Vec<String> = self
            .sessions
            .lock()
            .map(|s| {
                s.values()
                    .filter(|s| s.idle_for() >= self.cfg.idle_timeout && s.child.in_flight() == 0)
                    .map(|s| s.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in idle {
            info!(session = %id, "session closed after the idle timeout");
            self.remove_session(&id);
        }
    }

    /// The shared, bridge-initialised child (started on first use, restarted after it dies).
    pub async fn shared_child(&self) -> Result<Arc<Child>, ChildError> {
        let mut slot = self.shared.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_dead()) {
            return Ok(Arc::clone(c));
        }
        let child = Child::spawn(&self.child_opts)?;
        match child
            .initialize(&self.cfg.pool_protocol_version, self.cfg.init_timeout)
            .await
        {
            Ok(_) => {
                self.pool.mark_ready(true);
                child.set_owner(Some(self.modern.owner()));
                *slot = Some(Arc::clone(&child));
                Ok(child)
            }
            Err(e) => {
                self.pool.mark_ready(false);
                child.stop(STOP_GRACE).await;
                Err(e)
            }
        }
    }

    /// SIGTERM: refuse new sessions, let in-flight requests finish (up to the drain timeout),
    /// then end every session and stop every child, waiting until each one has been reaped.
    pub async fn shutdown(&self) {
        self.draining.store(true, Ordering::Release);
        self.pool.stop_refilling();
        self.modern.close();
        let deadline = tokio::time::Instant::now() + self.cfg.drain_timeout;
        while tokio::time::Instant::now() < deadline && self.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ids: Vec<String> = self
            .sessions
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            if let Some(s) = self.sessions.lock().ok().and_then(|mut m| m.remove(&id)) {
                s.close();
            }
        }
        // Every child, wherever it is: in a session, warm in the pool, shared, or still starting.
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
        let sessions: usize = self
            .sessions
            .lock()
            .map(|s| s.values().map(|s| s.child.in_flight()).sum())
            .unwrap_or(0);
        let shared = self
            .shared
            .try_lock()
            .map(|c| c.as_ref().map_or(0, |c| c.in_flight()))
            .unwrap_or(1);
        sessions + shared
    }
}

/// A reserved place under the session maximum; released when dropped.
#[derive(Debug)]
pub struct SessionSlot {
    bridge: Arc<Bridge>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.bridge.opening.fetch_sub(1, Ordering::AcqRel);
    }
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
