//! The warm pool: children started and initialised ahead of time, so `initialize` from a client
//! is answered without waiting for a process start. Refilled in the background; a command that
//! cannot start backs off instead of spinning. Readiness (`/ready`) reflects whether the last
//! attempt to start and initialise a child succeeded.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::warn;

use crate::STOP_GRACE;
use crate::child::{Child, ChildOptions};

/// Pre-initialised children.
#[derive(Debug)]
pub struct Pool {
    opts: ChildOptions,
    dir: PathBuf,
    size: usize,
    version: String,
    init_timeout: Duration,
    ready: Mutex<VecDeque<Arc<Child>>>,
    wake: Notify,
    healthy: AtomicBool,
    stopped: AtomicBool,
}

impl Pool {
    /// A pool of `size` children initialised with protocol `version`, running in `dir`.
    pub fn new(
        opts: ChildOptions,
        dir: PathBuf,
        size: usize,
        version: String,
        init_timeout: Duration,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            opts,
            dir,
            size,
            version,
            init_timeout,
            ready: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            healthy: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        })
    }

    /// The configured number of warm children.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Starts the refill task.
    pub fn start(self: Arc<Self>) {
        if self.size == 0 {
            return;
        }
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                if self.stopped.load(Ordering::Acquire) {
                    return;
                }
                if self.len() >= self.size {
                    self.wake.notified().await;
                    continue;
                }
                match self.start_one().await {
                    Some(child) => {
                        backoff = Duration::from_millis(200);
                        if let Ok(mut r) = self.ready.lock() {
                            r.push_back(child);
                        }
                        if self.stopped.load(Ordering::Acquire) {
                            self.drain_and_stop().await;
                            return;
                        }
                    }
                    None => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }

    async fn start_one(&self) -> Option<Arc<Child>> {
        let child = match Child::spawn(&self.opts, &self.dir) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot start a pool child");
                self.mark_ready(false);
                return None;
            }
        };
        match child.initialize(&self.version, self.init_timeout).await {
            Ok(_) => {
                self.mark_ready(true);
                Some(child)
            }
            Err(e) => {
                warn!(error = %e, "a pool child failed to initialise");
                self.mark_ready(false);
                child.stop(STOP_GRACE).await;
                None
            }
        }
    }

    /// Number of warm children.
    pub fn len(&self) -> usize {
        self.ready.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A warm child that fits a client asking for `version`, if there is one.
    pub fn take(&self, version: &str) -> Option<Arc<Child>> {
        let child = {
            let mut r = self.ready.lock().ok()?;
            r.retain(|c| !c.is_dead());
            let fits = r.front().and_then(|c| c.init.get()).is_some_and(|i| {
                i.requested == version
                    || i.result.get("protocolVersion").and_then(|v| v.as_str()) == Some(version)
            });
            if fits { r.pop_front() } else { None }
        };
        self.wake.notify_one();
        child
    }

    /// Records whether a child could be started and initialised.
    pub fn mark_ready(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Release);
    }

    /// Whether the last start-and-initialise succeeded.
    pub fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Stops refilling (shutdown).
    pub fn stop_refilling(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Takes every warm child out (shutdown).
    pub fn drain(&self) -> Vec<Arc<Child>> {
        self.ready
            .lock()
            .map(|mut r| r.drain(..).collect())
            .unwrap_or_default()
    }

    async fn drain_and_stop(&self) {
        for c in self.drain() {
            c.stop(STOP_GRACE).await;
        }
    }
}
