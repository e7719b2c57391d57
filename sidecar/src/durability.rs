//! What keeps the sidecar's answers across a Redis that lost its data: its own memory of revoked
//! access tokens (core's sticky [`RevokedTokens`]) and the [`watch`] loop, which every
//! [`keys::RELOAD_INTERVAL`] re-reads the key ring and the revocation list and writes back what
//! Redis lost (or rotates the key when it is due).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use mcpgw_core::auth::DEFAULT_LEEWAY_SECS;
use mcpgw_core::revocation::{RevokedFeed, RevokedTokens};

use crate::store::{Store, StoreError};
use crate::{AppState, keys, now};

/// The revoked access tokens this sidecar has seen listed, each until it expires, whatever
/// Redis lists later: `/verify` refuses them as the JWT filter does, and they are listed in
/// Redis again when it lost them.
#[derive(Debug, Default)]
pub struct Revocations {
    known: Mutex<RevokedTokens>,
}

impl Revocations {
    fn known(&self) -> MutexGuard<'_, RevokedTokens> {
        match self.known.lock() {
            Ok(k) => k,
            // Absorbing cannot leave the set half-updated in a way that matters: keep using it.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether `jti` was seen revoked.
    pub fn contains(&self, jti: &str) -> bool {
        self.known().contains(jti)
    }

    /// Reads Redis' list, takes it in, and lists again in Redis what it lacks. Returns the
    /// known list (the revocation feed).
    pub async fn sync(&self, store: &Store) -> Result<RevokedFeed, StoreError> {
        let listed = store.revoked().await?;
        let missing = {
            let mut known = self.known();
            known.absorb(listed.iter().cloned(), now(), DEFAULT_LEEWAY_SECS);
            known.missing_from(&listed)
        };
        if !missing.is_empty() {
            store.relist_revoked(&missing).await?;
            tracing::warn!(
                count = missing.len(),
                "revoked tokens were missing from Redis (it lost its data?); listed them again"
            );
        }
        let mut revoked = listed;
        revoked.extend(missing);
        Ok(RevokedFeed { revoked })
    }
}

/// Every [`keys::RELOAD_INTERVAL`]: rotates the signing key when `rotation` says it is due, else
/// reloads the ring (writing it back when the storage lost it); syncs the revocation list.
pub async fn watch(state: AppState, rotation: Option<Duration>) {
    let mut tick = tokio::time::interval(keys::RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = match rotation {
            Some(every) => state.keys.rotate_if_due(every, now()).await,
            None => state.keys.reload().await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot reload the signing keys");
        }
        if let Err(e) = state.revocations.sync(&state.store).await {
            tracing::debug!(error = %e, "cannot sync the revocation list");
        }
    }
}
