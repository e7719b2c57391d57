//! Rate limits on the endpoints anyone may call without a token: `/register`, `/authorize` and
//! `/token`, per client address and (on `/authorize` and `/token`) per client id, each a Redis
//! counter over a fixed window. A request over a limit gets 429 `slow_down` with `Retry-After`
//! (the seconds left in the window) and an OAuth JSON body, before it does any other work.

use std::net::SocketAddr;

use axum::http::HeaderMap;

use crate::AppState;
use crate::error::OAuthError;

/// The address a request is counted under: the last `X-Forwarded-For` entry (the one our own
/// proxy added) when trusted, else the peer; `unknown` without either.
pub fn client_address(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trust_forwarded_for: bool,
) -> String {
    let forwarded = trust_forwarded_for
        .then(|| headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()))
        .flatten()
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match (forwarded, peer) {
        (Some(f), _) => f.to_owned(),
        (None, Some(p)) => p.ip().to_string(),
        (None, None) => "unknown".to_owned(),
    }
}

/// Counts one request of `endpoint` from the request's address; refuses it over
/// `[rate_limit] per_address`.
pub async fn check(
    state: &AppState,
    endpoint: &str,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<(), OAuthError> {
    let limits = &state.config.rate_limit;
    let address = client_address(headers, peer, limits.trust_forwarded_for);
    count(state, endpoint, "address", &address, limits.per_address).await
}

/// Counts one request of `endpoint` for `client_id`; refuses it over `[rate_limit] per_client`.
pub async fn check_client(
    state: &AppState,
    endpoint: &str,
    client_id: &str,
) -> Result<(), OAuthError> {
    let limit = state.config.rate_limit.per_client;
    count(state, endpoint, "client", client_id, limit).await
}

async fn count(
    state: &AppState,
    endpoint: &str,
    by: &str,
    id: &str,
    limit: u32,
) -> Result<(), OAuthError> {
    if limit == 0 {
        return Ok(());
    }
    let window = state.config.rate_limit.window;
    let (count, left) = state
        .store
        .hit(&format!("{endpoint}:{by}"), id, window)
        .await?;
    if count > u64::from(limit) {
        tracing::warn!(endpoint, by, %id, limit, "rate limit reached");
        return Err(OAuthError::rate_limited(
            format!("too many requests from this {by}; try again in {left} seconds"),
            left,
        ));
    }
    Ok(())
}
