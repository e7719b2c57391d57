//! The revocation feed: which access tokens were revoked before their `exp`. The sidecar serves
//! it (`GET /revoked`, body [`RevokedFeed`]); the JWT filter fetches it and keeps the last list
//! it got as a [`RevokedTokens`], which turns an allowed token with a listed `jti` into core's
//! revoked denial. Fetching, refreshing and what to do while the feed is down are the host's.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::auth::{Decision, DenyReason, deny};
use crate::resource::Resource;

/// The body of the sidecar's `GET /revoked`: the `jti`s of revoked tokens not yet expired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedFeed {
    /// Revoked `jti`s (opaque identifiers, not credentials).
    pub revoked: Vec<String>,
}

/// The revoked `jti`s a host knows of, as last fetched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevokedTokens {
    jtis: HashSet<String>,
}

impl RevokedTokens {
    /// Reads a fetched [`RevokedFeed`] body.
    pub fn from_json(body: &[u8]) -> Result<RevokedTokens, serde_json::Error> {
        let feed: RevokedFeed = serde_json::from_slice(body)?;
        Ok(RevokedTokens {
            jtis: feed.revoked.into_iter().collect(),
        })
    }

    /// How many `jti`s are listed.
    pub fn len(&self) -> usize {
        self.jtis.len()
    }

    /// Whether no `jti` is listed.
    pub fn is_empty(&self) -> bool {
        self.jtis.is_empty()
    }

    /// Whether `jti` is listed.
    pub fn contains(&self, jti: &str) -> bool {
        self.jtis.contains(jti)
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

    #[test]
    fn reads_the_feed_and_refuses_anything_else() {
        let list = RevokedTokens::from_json(br#"{"revoked": ["a", "b", "a"]}"#).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.contains("a") && list.contains("b") && !list.contains("c"));
        assert!(
            RevokedTokens::from_json(br#"{"revoked": []}"#)
                .unwrap()
                .is_empty()
        );
        for bad in [&b"not json"[..], b"{}", br#"{"revoked": "a"}"#, br#"["a"]"#] {
            assert!(RevokedTokens::from_json(bad).is_err(), "{bad:?}");
        }
        let feed = RevokedFeed {
            revoked: vec!["x".into()],
        };
        assert_eq!(
            serde_json::to_string(&feed).unwrap(),
            r#"{"revoked":["x"]}"#
        );
    }
}
