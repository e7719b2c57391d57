//! `POST /revoke` (RFC 7009), `POST /introspect` (RFC 7662) and `GET /revoked`, the revocation
//! feed for the edge. The first two authenticate the client as the token endpoint does.
//! Revocation answers 200 whether or not the token was known (§2.2) and only revokes tokens
//! issued to the calling client; revoking a refresh token revokes its whole grant family.
//! Introspection needs a confidential client and answers `{"active": false}` for
//! anything expired, revoked, unknown or malformed, and for a token issued to another client
//! unless the caller is a configured resource server (`[introspection] resource_servers`). The feed lists the `jti`s of revoked access
//! tokens not yet expired (core's `RevokedFeed`), for the JWT filter to refuse them before their
//! `exp`; `jti`s are opaque identifiers, not credentials, but the feed is for the edge only: no
//! shipped proxy configuration routes it publicly.

use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use mcpgw_core::auth::{VerifyOptions, verify_signature};
use mcpgw_core::claims::AccessTokenClaims;
use serde::Deserialize;
use serde_json::json;

use crate::client_auth::{self, Presented};
use crate::error::{ErrorCode, OAuthError, no_store};
use crate::token::form_error;
use crate::{AppState, now};

/// The revocation and introspection routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/revoke", post(revoke))
        .route("/introspect", post(introspect))
        .route("/revoked", get(revoked))
}

/// The form of both endpoints.
#[derive(Debug, Deserialize)]
pub struct TokenParam {
    token: Option<String>,
    /// Accepted and not needed: both token kinds are looked up.
    #[serde(rename = "token_type_hint")]
    _token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn authenticated(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<Form<TokenParam>, FormRejection>,
) -> Result<(crate::store::Client, String), OAuthError> {
    let Form(form) = form.map_err(form_error)?;
    let presented = Presented::from_request(
        headers,
        form.client_id.as_deref(),
        form.client_secret.as_deref(),
    )?;
    let client = client_auth::authenticate(state, &presented).await?;
    let token = form
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidRequest, "token is required"))?;
    Ok((client, token))
}

/// An access token's claims, if it is one of ours (signature and issuer checked; not time).
fn access_claims(state: &AppState, token: &str) -> Option<AccessTokenClaims> {
    let ring = state.keys.current();
    let options = VerifyOptions::new(state.config.issuer.clone());
    verify_signature(token, &ring.keyset, &options)
        .ok()
        .map(|v| v.claims)
        .filter(|c| c.iss == state.config.issuer)
}

async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenParam>, FormRejection>,
) -> Result<Response, OAuthError> {
    let (client, token) = authenticated(&state, &headers, form).await?;
    // Both kinds are tried, so `token_type_hint` needs no reading (RFC 7009 §2.1 allows that).
    if let Some(claims) = access_claims(&state, &token) {
        if claims.client_id == client.client_id {
            state.store.revoke_token(&claims.jti, claims.exp).await?;
            tracing::info!(client_id = %client.client_id, jti = %claims.jti, "revoked an access token");
        }
    } else if let Some(record) = state.store.get_refresh(&token).await?
        && record.client_id == client.client_id
    {
        state.store.revoke_family(&record.family).await?;
        tracing::info!(client_id = %client.client_id, family = %record.family, "revoked a refresh token and its family");
    }
    Ok(no_store(().into_response()))
}

async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenParam>, FormRejection>,
) -> Result<Response, OAuthError> {
    let (client, token) = authenticated(&state, &headers, form).await?;
    if client.is_public() {
        return Err(OAuthError::new(
            ErrorCode::InvalidClient,
            "introspection requires a confidential client",
        ));
    }
    let now = now();
    let inactive = || no_store(Json(json!({ "active": false })).into_response());
    let may_see = |issued_to: &str| {
        issued_to == client.client_id
            || state
                .config
                .introspection_resource_servers
                .contains(&client.client_id)
    };
    if let Some(c) = access_claims(&state, &token) {
        let live = c.exp > now && may_see(&c.client_id) && state.store.token_live(&c.jti).await?;
        if !live {
            return Ok(inactive());
        }
        return Ok(no_store(
            Json(json!({
                "active": true,
                "token_type": "Bearer",
                "scope": c.scope.to_space_separated(),
                "client_id": c.client_id,
                "username": c.preferred_username,
                "sub": c.sub,
                "aud": c.aud,
                "iss": c.iss,
                "exp": c.exp,
                "iat": c.iat,
                "nbf": c.nbf,
                "jti": c.jti,
                "groups": c.groups,
            }))
            .into_response(),
        ));
    }
    match state.store.get_refresh(&token).await? {
        Some(r) if r.exp > now && may_see(&r.client_id) => Ok(no_store(
            Json(json!({
                "active": true,
                "token_type": "refresh_token",
                "scope": r.scope.to_space_separated(),
                "client_id": r.client_id,
                "username": r.user.login,
                "sub": r.user.sub,
                "aud": r.resource,
                "iss": state.config.issuer,
                "exp": r.exp,
            }))
            .into_response(),
        )),
        _ => Ok(inactive()),
    }
}

/// The revocation feed: Redis' list and what this sidecar saw listed before (written back to
/// Redis when it lost it). Without Redis: 503 `temporarily_unavailable` (the edge keeps its list).
async fn revoked(State(state): State<AppState>) -> Result<Response, OAuthError> {
    let feed = state.revocations.sync(&state.store).await?;
    Ok(no_store(Json(feed).into_response()))
}
