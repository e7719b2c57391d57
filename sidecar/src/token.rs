//! `POST /token` (OAuth 2.1 §3.2): the `authorization_code` grant (client authenticated as
//! registered, PKCE S256 verified, the single-use code bound to client, redirect URI, challenge
//! and resource; the code's own client replaying it revokes everything it issued) and the
//! `refresh_token` grant (rotated on every use; its own client reusing it revokes its whole
//! family; the allow-list checked again). A code or refresh token presented by another client is
//! refused and changes nothing; a refused refresh leaves the refresh token usable. Access tokens are RFC 9068 JWTs built from core's
//! [`AccessTokenClaims`] and signed with the current key.

use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgw_core::claims::{AccessTokenClaims, Scopes};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::client_auth::{self, Presented};
use crate::error::{ErrorCode, OAuthError, no_store};
use crate::store::{Client, RefreshLookup, RefreshRecord, TokenRecord, Used, User};
use crate::upstream::random_token;
use crate::{AppState, limits, now};

/// The token endpoint's route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/token", post(token))
}

/// The token request form (every field optional so a missing one gets an RFC 6749 error).
#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// A new refresh token (clients allowed the `refresh_token` grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Granted scopes.
    pub scope: String,
}

/// A body that is not a valid `application/x-www-form-urlencoded` form (or repeats a parameter,
/// RFC 6749 §3.2) is an `invalid_request`.
/// The rejection text is not echoed: it may quote a parameter's value. A body over the limit is
/// a 413.
pub fn form_error(rejection: FormRejection) -> OAuthError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return OAuthError::too_large();
    }
    OAuthError::new(
        ErrorCode::InvalidRequest,
        "the body must be application/x-www-form-urlencoded with each parameter at most once",
    )
}

fn invalid_grant(d: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, d)
}

fn required<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, OAuthError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidRequest, format!("{name} is required")))
}

async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Response, OAuthError> {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    limits::check(&state, "token", &headers, peer).await?;
    let Form(form) = form.map_err(form_error)?;
    let grant_type = required(&form.grant_type, "grant_type")?.to_owned();
    let presented = Presented::from_request(
        &headers,
        form.client_id.as_deref(),
        form.client_secret.as_deref(),
    )?;
    // Before the secret is checked: guessing one is rate-limited per client too.
    if let Some(client_id) = presented.client_id() {
        limits::check_client(&state, "token", client_id).await?;
    }
    let client = client_auth::authenticate(&state, &presented).await?;
    if !matches!(grant_type.as_str(), "authorization_code" | "refresh_token") {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "grant_type must be authorization_code or refresh_token",
        ));
    }
    if !client.grant_types.contains(&grant_type) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the client is not registered for this grant type",
        ));
    }
    let response = if grant_type == "authorization_code" {
        authorization_code(&state, &client, &form).await?
    } else {
        refresh(&state, &client, &form).await?
    };
    Ok(no_store(Json(response).into_response()))
}

/// RFC 7636 §4.1: 43–128 characters of `[A-Za-z0-9-._~]`.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// RFC 7636 §4.6: `BASE64URL(SHA256(verifier)) == challenge`, compared in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

async fn authorization_code(
    state: &AppState,
    client: &Client,
    form: &TokenForm,
) -> Result<TokenResponse, OAuthError> {
    let code = required(&form.code, "code")?;
    let verifier = required(&form.code_verifier, "code_verifier")?;
    // Checked before anything is consumed or revoked: another client's code changes nothing.
    let issued_to = match state.store.get_code(code).await? {
        Some(grant) => Some(grant.client_id),
        None => state
            .store
            .code_used(code)
            .await?
            .map(|used| used.client_id),
    };
    if issued_to.as_ref().is_some_and(|c| *c != client.client_id) {
        tracing::warn!(client_id = %client.client_id, "code presented by another client");
        return Err(invalid_grant("invalid, expired or already used code"));
    }
    let Some(grant) = state.store.take_code(code).await? else {
        if let Some(used) = state.store.code_used(code).await?
            && used.client_id == client.client_id
        {
            // RFC 6749 §4.1.2 / OAuth 2.1 §4.1.3: a replayed code revokes what it issued.
            tracing::warn!(client_id = %client.client_id, family = %used.family, "authorization code replayed: revoking its tokens");
            state.store.revoke_family(&used.family).await?;
        }
        return Err(invalid_grant("invalid, expired or already used code"));
    };
    // The code is consumed from here on: any mismatch burns it.
    if grant.client_id != client.client_id {
        tracing::warn!(client_id = %client.client_id, code_client = %grant.client_id, "code presented by another client");
        return Err(invalid_grant("invalid, expired or already used code"));
    }
    // OAuth 2.1 §4.1.3: required (and the same) when the authorization request had one.
    let redirect_uri = form.redirect_uri.as_deref().filter(|s| !s.is_empty());
    let redirect_matches = match redirect_uri {
        Some(uri) => uri == grant.redirect_uri,
        None => !grant.redirect_uri_sent,
    };
    if !redirect_matches {
        return Err(invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    if !valid_verifier(verifier) || !pkce_matches(verifier, &grant.code_challenge) {
        return Err(invalid_grant("PKCE verification failed"));
    }
    if form
        .resource
        .as_deref()
        .is_some_and(|r| r != grant.resource)
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "resource differs from the authorization request",
        ));
    }
    if !state.config.allow.permits(&grant.user) {
        return Err(OAuthError::new(
            ErrorCode::AccessDenied,
            "user is not allowed",
        ));
    }
    let family = random_token();
    let family_ttl = state.config.tokens.refresh_token;
    state
        .store
        .start_family(&family, &client.client_id, &grant.user.sub, family_ttl)
        .await?;
    let used = Used {
        family: family.clone(),
        client_id: client.client_id.clone(),
    };
    state.store.mark_code_used(code, &used, family_ttl).await?;
    issue(
        state,
        client,
        &family,
        grant.user,
        grant.scope,
        grant.resource,
    )
    .await
}

async fn refresh(
    state: &AppState,
    client: &Client,
    form: &TokenForm,
) -> Result<TokenResponse, OAuthError> {
    let token = required(&form.refresh_token, "refresh_token")?;
    // Every check first, on the token as stored: a refused refresh consumes nothing, and another
    // client's token (live or used) changes nothing.
    let Some(record) = state.store.get_refresh(token).await? else {
        return Err(reused(state, client, token).await?);
    };
    if record.client_id != client.client_id {
        tracing::warn!(client_id = %client.client_id, "refresh token presented by another client");
        return Err(invalid_grant("invalid or expired refresh token"));
    }
    if !state.store.family_alive(&record.family).await? {
        return Err(invalid_grant("the grant was revoked"));
    }
    if !state.config.allow.permits(&record.user) {
        tracing::info!(sub = %record.user.sub, "user no longer allowed: revoking the grant");
        state.store.revoke_family(&record.family).await?;
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "user is no longer allowed",
        ));
    }
    if form
        .resource
        .as_deref()
        .is_some_and(|r| r != record.resource)
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "resource differs from the grant",
        ));
    }
    let scope = match form.scope.as_deref() {
        None => record.scope.clone(),
        Some(s) => {
            let asked = Scopes::parse(s);
            if !asked.0.iter().all(|x| record.scope.contains(x)) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    "scope exceeds the grant",
                ));
            }
            asked
        }
    };
    // Consumed now, atomically: of two concurrent uses, the second is a reuse.
    let lifetime = state.config.tokens.refresh_token;
    let record = match state.store.take_refresh(token, lifetime).await? {
        RefreshLookup::Live(r) => r,
        RefreshLookup::Reused(_) | RefreshLookup::Unknown => {
            return Err(reused(state, client, token).await?);
        }
    };
    let RefreshRecord {
        family,
        user,
        resource,
        ..
    } = record;
    issue(state, client, &family, user, scope, resource).await
}

/// The refusal of a refresh token that is not live: one its own client already rotated revokes
/// its family (RFC 9700 §4.14.2: reuse means it leaked); another client's, or an unknown one,
/// changes nothing.
async fn reused(state: &AppState, client: &Client, token: &str) -> Result<OAuthError, OAuthError> {
    match state.store.refresh_used(token).await? {
        Some(used) if used.client_id == client.client_id => {
            tracing::warn!(client_id = %client.client_id, family = %used.family, "refresh token reused: revoking its family");
            state.store.revoke_family(&used.family).await?;
            Ok(invalid_grant("refresh token already used"))
        }
        _ => Ok(invalid_grant("invalid or expired refresh token")),
    }
}

/// Signs an access token (and, for clients with the `refresh_token` grant, a refresh token) for
/// `user` in grant `family`, recording both in Redis.
async fn issue(
    state: &AppState,
    client: &Client,
    family: &str,
    user: User,
    scope: Scopes,
    resource: String,
) -> Result<TokenResponse, OAuthError> {
    let t = &state.config.tokens;
    let now = now();
    let exp = now + t.access_token.as_secs();
    let jti = random_token();
    let claims = AccessTokenClaims {
        iss: state.config.issuer.clone(),
        sub: user.sub.clone(),
        aud: resource.as_str().into(),
        client_id: client.client_id.clone(),
        scope: scope.clone(),
        exp,
        iat: now,
        nbf: Some(now),
        jti: jti.clone(),
        preferred_username: user.login.clone(),
        name: user.name.clone(),
        email: user.email.clone(),
        groups: user.groups.clone(),
    };
    let ring = state.keys.current();
    let access_token = ring
        .signing
        .sign_access_token(&ring.kid, &claims)
        .map_err(|e| OAuthError::from(crate::keys::KeyRingError::Corrupt(e.to_string())))?;
    let record = TokenRecord {
        client_id: client.client_id.clone(),
        sub: user.sub.clone(),
        family: family.to_owned(),
        exp,
    };
    state
        .store
        .put_token(&jti, &record, t.access_token, t.refresh_token)
        .await?;
    let refresh_token = if client.grant_types.iter().any(|g| g == "refresh_token") {
        let token = random_token();
        let record = RefreshRecord {
            family: family.to_owned(),
            client_id: client.client_id.clone(),
            resource,
            scope: scope.clone(),
            user,
            exp: now + t.refresh_token.as_secs(),
        };
        state
            .store
            .put_refresh(&token, &record, t.refresh_token)
            .await?;
        Some(token)
    } else {
        None
    };
    tracing::info!(client_id = %client.client_id, sub = %record.sub, %jti, "issued an access token");
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: t.access_token.as_secs(),
        refresh_token,
        scope: scope.to_space_separated(),
    })
}
