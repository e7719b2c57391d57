//! What the JWT filter does with a request and with what it fetches, without a host: both
//! shells (the proxy-wasm module, [`crate::proxy_wasm`]-side, and the Envoy dynamic module) call
//! these, so they route, decide, answer and forward alike. The shells own only the host's
//! plumbing: reading headers, the JWKS shared between workers, fetches, timers, pausing.

use mcpgw_core::auth::{self, Decision, Denial, DenyReason, TokenCache, VerifyError};
use mcpgw_core::identity;
use mcpgw_core::jwk::KeySet;
use mcpgw_core::revocation::{RevokedFeed, RevokedTokens};
use mcpgw_core::route;

use crate::config::{Config, Fetch};

/// A local answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u32,
    /// Headers besides `:status`.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON answer that is never cached; `head` leaves the body out (a `HEAD` request).
    fn json(status: u32, extra: Vec<(&'static str, String)>, body: Vec<u8>, head: bool) -> Reply {
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", "no-store".to_owned()),
        ];
        headers.extend(extra);
        Reply {
            status,
            headers,
            body: if head { Vec::new() } else { body },
        }
    }

    /// The headers as the hosts take them.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// What a request's headers call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Answer it here (RFC 9728 metadata).
    Answer(Reply),
    /// Not protected (or a CORS preflight): forward it without an identity.
    Pass,
    /// Protected by the resource at this index of `config.resources`: decide.
    Protected(usize),
}

/// Routes a request by its method, `:authority`, `:path` and `access-control-request-method`.
pub fn route(
    config: &Config,
    method: &str,
    host: Option<&str>,
    path: &str,
    access_control_request_method: Option<&str>,
) -> Route {
    if let Some(reply) = metadata(config, host, path, method) {
        return Route::Answer(reply);
    }
    let protected = config
        .resources
        .find(host, path)
        .and_then(|found| config.resources.iter().position(|r| std::ptr::eq(r, found)));
    let preflight = route::is_cors_preflight(method, access_control_request_method);
    match protected.filter(|_| !preflight) {
        Some(resource) => Route::Protected(resource),
        None => Route::Pass,
    }
}

/// RFC 9728 metadata when `path` is a well-known metadata URI of a resource.
fn metadata(config: &Config, host: Option<&str>, path: &str, method: &str) -> Option<Reply> {
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let resource = config.resources.find_metadata(host, path)?;
    let body = serde_json::to_vec(&resource.metadata_document()).unwrap_or_default();
    Some(Reply::json(
        200,
        vec![("access-control-allow-origin", "*".to_owned())],
        body,
        method == "HEAD",
    ))
}

/// The answer to a denial.
pub fn refusal(denial: Denial) -> Reply {
    let extra = denial
        .www_authenticate
        .map(|challenge| vec![("www-authenticate", challenge)])
        .unwrap_or_default();
    Reply::json(
        u32::from(denial.status),
        extra,
        denial.body.into_bytes(),
        false,
    )
}

/// The answer to a request the filter cannot decide: 500, fail closed.
pub fn undecidable() -> Reply {
    Reply::json(
        500,
        Vec::new(),
        br#"{"error":"server_error"}"#.to_vec(),
        false,
    )
}

/// The request headers to remove before forwarding, each name once (removing takes every
/// value): any identity header the client sent (they only ever come from this filter) and,
/// unless kept, `Authorization`.
pub fn removals<'a>(names: &[&'a [u8]], keep_authorization: bool) -> Vec<&'a [u8]> {
    let drop = |name: &[u8]| {
        identity::is_identity_header(name)
            || (!keep_authorization && name.eq_ignore_ascii_case(b"authorization"))
    };
    let mut out: Vec<&[u8]> = Vec::new();
    for name in names {
        if drop(name) && !out.contains(name) {
            out.push(name);
        }
    }
    out
}

/// Core's decision for a token at the resource at index `resource` (`None` when there is no
/// such resource), with `keys`, the token cache and the revocation list applied.
pub fn decide(
    config: &Config,
    resource: usize,
    authorization: Option<&str>,
    keys: &KeySet,
    revoked: &RevokedTokens,
    cache: &mut TokenCache,
    now_ms: u64,
) -> Option<Decision> {
    let found = config.resources.iter().nth(resource)?;
    let decision = auth::authenticate(
        authorization,
        found,
        keys,
        &config.verify,
        now_ms / 1000,
        Some(cache),
    );
    Some(revoked.check(decision, found))
}

/// Whether a denial may go away with fresh keys.
pub fn wants_keys(reason: &DenyReason) -> bool {
    matches!(
        reason,
        DenyReason::NoKeys | DenyReason::InvalidToken(VerifyError::UnknownKeyId(_))
    )
}

/// The request headers of a GET of `fetch`'s document (the JWKS, the revocation feed).
pub fn fetch_headers(fetch: &Fetch) -> [(&str, &str); 4] {
    [
        (":method", "GET"),
        (":path", &fetch.path),
        (":authority", &fetch.authority),
        ("accept", "application/json"),
    ]
}

/// The keys of a JWKS fetch's answer (`status` is its `:status`), when it has a usable one;
/// `None` (with a warning saying why) keeps the `known` keys.
pub fn fetched_keys(status: Option<&str>, body: &[u8], known: usize) -> Option<KeySet> {
    if status != Some("200") {
        log::warn!(
            "jwks fetch answered status {}; keeping {known} known key(s)",
            status.unwrap_or("none")
        );
        return None;
    }
    let keys = match KeySet::from_json(body) {
        Ok((keys, errors)) => {
            for e in errors {
                log::warn!("jwks: skipping a key: {e}");
            }
            keys
        }
        Err(e) => {
            log::warn!("jwks fetch returned an invalid JWKS ({e}); keeping the old keys");
            return None;
        }
    };
    if keys.is_empty() {
        log::warn!("jwks fetch returned no usable key; keeping the old keys");
        return None;
    }
    log::info!("jwks: loaded {} key(s)", keys.len());
    Some(keys)
}

/// The revocation feed's state: the revoked `jti`s every fetched list named, each until its token
/// expires whatever a later list says (core's sticky rule; empty until the feed first answers);
/// while the feed is down the known list keeps applying, with one warning per outage.
#[derive(Debug, Default)]
pub struct Feed {
    revoked: RevokedTokens,
    down: bool,
}

impl Feed {
    /// The list that applies.
    pub fn revoked(&self) -> &RevokedTokens {
        &self.revoked
    }

    /// Takes a feed answer (`status` is its `:status`) at `now_ms`: the listed `jti`s join the
    /// known ones, which leave only once their `exp` plus `leeway_secs` has passed; anything but
    /// a list keeps what is known. `who` prefixes the log lines. True when the known list changed.
    pub fn answered(
        &mut self,
        who: &str,
        status: Option<&str>,
        body: &[u8],
        now_ms: u64,
        leeway_secs: u64,
    ) -> bool {
        let feed = match status {
            Some("200") => {
                RevokedFeed::from_json(body).map_err(|e| format!("returned an invalid list ({e})"))
            }
            other => Err(format!("answered status {}", other.unwrap_or("none"))),
        };
        match feed {
            Ok(feed) => {
                if self.down {
                    log::info!("{who} revocation feed answers again");
                }
                self.down = false;
                let (before, listed) = (self.revoked.len(), feed.revoked.len());
                let added = self
                    .revoked
                    .absorb(feed.revoked, now_ms / 1000, leeway_secs);
                let changed = added > 0 || self.revoked.len() != before;
                if changed {
                    log::debug!(
                        "{who} revocation list: {added} new, {} known token(s)",
                        self.revoked.len()
                    );
                }
                if listed < self.revoked.len() {
                    log::debug!(
                        "{who} revocation feed lists {listed} of {} known token(s); the others stay refused",
                        self.revoked.len()
                    );
                }
                changed
            }
            Err(why) => {
                self.failed(who, &why);
                false
            }
        }
    }

    /// Notes a failed feed fetch; warns once per outage.
    pub fn failed(&mut self, who: &str, why: &str) {
        if !self.down {
            log::warn!(
                "{who} revocation feed {why}; keeping the known list ({} token(s)) until it answers",
                self.revoked.len()
            );
        }
        self.down = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_name_each_identity_header_and_authorization_once() {
        let names: Vec<&[u8]> = vec![
            b":path",
            b"Authorization",
            b"x-mcpgw-subject",
            b"X-MCPGW-Subject",
            b"x-mcpgw-subject",
            b"accept",
        ];
        let want: Vec<&[u8]> = vec![b"Authorization", b"x-mcpgw-subject", b"X-MCPGW-Subject"];
        assert_eq!(removals(&names, false), want);
        assert_eq!(removals(&names, true), want[1..].to_vec());
    }
}
