//! The revocation feed: which access tokens were revoked before their `exp`. The sidecar serves
//! it (`GET /revoked`, body [`RevokedFeed`]); the JWT filter fetches it, and both it and the
//! sidecar's `/verify` keep what they learned as a [`RevokedTokens`], which turns an allowed
//! token with a listed `jti` into core's revoked denial.
//!
//! Revocation is sticky (the fail-safe rule): a `jti` once seen revoked stays refused until no
//! verifier would accept its token anyway (`exp` plus the clock leeway), whatever a later feed
//! says. A feed that forgets a `jti` (its store lost its data) never re-admits the token.
//! Fetching, refreshing and what to do while the feed is down are the host's.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::auth::{Decision, DenyReason, deny};
use crate::resource::Resource;

/// One revoked access token: its `jti` (an opaque identifier, not a credential) and its `exp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedJti {
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp` (seconds since the epoch).
    pub exp: u64,
}

/// The body of the sidecar's `GET /revoked`: the revoked tokens not yet expired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedFeed {
    /// Revoked tokens, by `jti`.
    pub revoked: Vec<RevokedJti>,
}

impl RevokedFeed {
    /// Reads a fetched feed body.
    pub fn from_json(body: &[u8]) -> Result<RevokedFeed, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// The revoked `jti`s a host knows of, each with its token's `exp`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevokedTokens {
    jtis: HashMap<String, u64>,
}

impl RevokedTokens {
    /// Takes in what a feed (or the store) lists, the sticky way: every listed `jti` is added and
    /// none leaves because it is no longer listed; an entry leaves only once `now` is past its
    /// `exp` plus `leeway_secs`, when verification refuses the token by itself. Returns how many
    /// `jti`s were new.
    pub fn absorb(
        &mut self,
        listed: impl IntoIterator<Item = RevokedJti>,
        now: u64,
        leeway_secs: u64,
    ) -> usize {
        let live = |exp: u64| now < exp.saturating_add(leeway_secs);
        self.jtis.retain(|_, exp| live(*exp));
        let mut added = 0;
        for RevokedJti { jti, exp } in listed.into_iter().filter(|r| live(r.exp)) {
            match self.jtis.entry(jti) {
                Entry::Vacant(e) => {
                    e.insert(exp);
                    added += 1;
                }
                Entry::Occupied(mut e) => {
                    let known = e.get_mut();
                    *known = (*known).max(exp);
                }
            }
        }
        added
    }

    /// The known `jti`s that `listed` lacks (what a store that lost its data should get back).
    pub fn missing_from(&self, listed: &[RevokedJti]) -> Vec<RevokedJti> {
        let listed: HashSet<&str> = listed.iter().map(|r| r.jti.as_str()).collect();
        let mut missing: Vec<RevokedJti> = self
            .jtis
            .iter()
            .filter(|(jti, _)| !listed.contains(jti.as_str()))
            .map(|(jti, exp)| RevokedJti {
                jti: jti.clone(),
                exp: *exp,
            })
            .collect();
        missing.sort_by(|a, b| a.jti.cmp(&b.jti));
        missing
    }

    /// How many `jti`s are known.
    pub fn len(&self) -> usize {
        self.jtis.len()
    }

    /// Whether no `jti` is known.
    pub fn is_empty(&self) -> bool {
        self.jtis.is_empty()
    }

    /// Whether `jti` is known revoked.
    pub fn contains(&self, jti: &str) -> bool {
        self.jtis.contains_key(jti)
    }

    /// Applies the list to `decision` at `resource`: an allowed token whose `jti` is listed is
    /// denied as [`DenyReason::Revoked`]; anything else is left as it is.
    pub fn check(&self, decision: Decision, resource: &Resource) -> Decision {
        match decision {
            Decision::Allow(identity) if self.contains(&identity.jti) => {
                Decision::Deny(deny(DenyReason::Revoked, resource))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoked(jti: &str, exp: u64) -> RevokedJti {
        RevokedJti {
            jti: jti.into(),
            exp,
        }
    }

    #[test]
    fn reads_the_feed_and_refuses_anything_else() {
        let feed = RevokedFeed::from_json(
            br#"{"revoked": [{"jti": "a", "exp": 5}, {"jti": "b", "exp": 6}]}"#,
        )
        .unwrap();
        assert_eq!(feed.revoked, vec![revoked("a", 5), revoked("b", 6)]);
        assert!(
            RevokedFeed::from_json(br#"{"revoked": []}"#)
                .unwrap()
                .revoked
                .is_empty()
        );
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"revoked": "a"}"#,
            br#"{"revoked": ["a"]}"#,
            br#"{"revoked": [{"jti": "a"}]}"#,
            br#"{"revoked": [], "more": 1}"#,
            br#"["a"]"#,
        ] {
            assert!(RevokedFeed::from_json(bad).is_err(), "{bad:?}");
        }
        let feed = RevokedFeed {
            revoked: vec![revoked("x", 7)],
        };
        assert_eq!(
            serde_json::to_string(&feed).unwrap(),
            r#"{"revoked":[{"jti":"x","exp":7}]}"#
        );
    }

    #[test]
    fn a_jti_stays_revoked_until_its_exp_and_leeway_whatever_a_later_feed_says() {
        let mut known = RevokedTokens::default();
        assert_eq!(
            known.absorb([revoked("a", 100), revoked("b", 200)], 50, 30),
            2
        );
        assert_eq!(known.absorb([revoked("a", 100)], 60, 30), 0);
        // An empty feed (the store lost its data) takes nothing back.
        assert_eq!(known.absorb([], 70, 30), 0);
        assert!(known.contains("a") && known.contains("b") && !known.contains("c"));
        assert_eq!(
            known.missing_from(&[revoked("b", 200)]),
            vec![revoked("a", 100)]
        );
        // Past `exp` but within the leeway: still refused; past both: forgotten.
        known.absorb([], 129, 30);
        assert!(known.contains("a"));
        known.absorb([], 130, 30);
        assert!(!known.contains("a") && known.contains("b"));
        // A jti listed again with a later exp keeps the later one.
        known.absorb([revoked("b", 300)], 131, 30);
        known.absorb([], 250, 30);
        assert_eq!(known.len(), 1);
        // An entry already past its exp is not taken in at all.
        assert_eq!(known.absorb([revoked("old", 10)], 250, 30), 0);
        assert!(!known.contains("old"));
    }
}
