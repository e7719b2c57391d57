//! Dynamic client registration: `POST /register` (RFC 7591) and the management endpoints
//! `GET`/`PUT`/`DELETE /register/{client_id}` (RFC 7592, registration access token compared in
//! constant time). Redirect URIs follow OAuth 2.1 §2.3 and RFC 8252: https; http only on a
//! loopback host (`localhost`, `127.0.0.1`, `[::1]`, any port); private-use schemes in reverse
//! domain form; stored and later matched as exact strings; no fragments, no wildcards.
//! Registration is open, rate-limited per client address, or needs an initial access token.
//! Deleting a client revokes its tokens through the client → families index.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use url::{Host, Url};

use crate::client_auth::secret_matches;
use crate::config::Registration;
use crate::error::{ErrorCode, OAuthError, no_store};
use crate::store::{Client, TokenEndpointAuthMethod, hash};
use crate::upstream::random_token;
use crate::{AppState, limits, now};

/// Most redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 16;
/// Longest URI accepted in client metadata.
const MAX_URI_LEN: usize = 2000;
/// Longest free-text field (name, software id, ...).
const MAX_TEXT_LEN: usize = 256;
/// Schemes that are never a redirect target, even in private-use form.
const FORBIDDEN_SCHEMES: [&str; 9] = [
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "ftp",
    "ws",
    "wss",
];

/// The registration routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/register", post(register)).route(
        "/register/{client_id}",
        get(read).put(update).delete(delete),
    )
}

/// Client metadata as sent by the client (RFC 7591 §2). Unknown members are ignored (§3.1).
#[derive(Debug, Default, Deserialize)]
pub struct ClientMetadata {
    #[serde(default)]
    redirect_uris: Vec<String>,
    token_endpoint_auth_method: Option<TokenEndpointAuthMethod>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    client_name: Option<String>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    contacts: Vec<String>,
    tos_uri: Option<String>,
    policy_uri: Option<String>,
    software_id: Option<String>,
    software_version: Option<String>,
    /// RFC 7592 §2.2: present in updates, must equal the client being updated.
    client_id: Option<String>,
    /// RFC 7592 §2.2: if present in an update, must be the current secret.
    client_secret: Option<String>,
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3).
#[derive(Debug, Serialize)]
struct ClientInformation<'a> {
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    client_id_issued_at: u64,
    client_secret_expires_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration_access_token: Option<String>,
    registration_client_uri: String,
    redirect_uris: &'a [String],
    token_endpoint_auth_method: TokenEndpointAuthMethod,
    grant_types: &'a [String],
    response_types: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    client_name: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_uri: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logo_uri: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: &'a Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    contacts: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    tos_uri: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_uri: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    software_id: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    software_version: &'a Option<String>,
}

fn information(
    state: &AppState,
    c: &Client,
    client_secret: Option<String>,
    registration_access_token: Option<String>,
) -> Response {
    let info = ClientInformation {
        client_id: &c.client_id,
        client_secret,
        client_id_issued_at: c.client_id_issued_at,
        client_secret_expires_at: c.client_secret_expires_at,
        registration_access_token,
        registration_client_uri: format!("{}/register/{}", state.config.issuer, c.client_id),
        redirect_uris: &c.redirect_uris,
        token_endpoint_auth_method: c.token_endpoint_auth_method,
        grant_types: &c.grant_types,
        response_types: &c.response_types,
        client_name: &c.client_name,
        client_uri: &c.client_uri,
        logo_uri: &c.logo_uri,
        scope: &c.scope,
        contacts: &c.contacts,
        tos_uri: &c.tos_uri,
        policy_uri: &c.policy_uri,
        software_id: &c.software_id,
        software_version: &c.software_version,
    };
    no_store(Json(info).into_response())
}

fn bad_metadata(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, d)
}

fn bad_redirect(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRedirectUri, d)
}

/// Checks one redirect URI against OAuth 2.1 §2.3.1 and RFC 8252 §7.
pub fn check_redirect_uri(uri: &str) -> Result<(), OAuthError> {
    if uri.len() > MAX_URI_LEN {
        return Err(bad_redirect("redirect URI too long"));
    }
    if uri.contains('#') {
        return Err(bad_redirect("redirect URIs must not contain a fragment"));
    }
    if uri.contains('*') {
        return Err(bad_redirect("redirect URIs must not contain wildcards"));
    }
    let url = Url::parse(uri).map_err(|_| bad_redirect("redirect URI is not an absolute URI"))?;
    match url.scheme() {
        "https" => {
            if url.host().is_none() {
                return Err(bad_redirect("https redirect URI without a host"));
            }
        }
        "http" => {
            let loopback = match url.host() {
                Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
                Some(Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
                None => false,
            };
            if !loopback {
                return Err(bad_redirect(
                    "http redirect URIs are allowed only on localhost, 127.0.0.1 or [::1]",
                ));
            }
        }
        scheme => {
            // RFC 8252 §7.1: private-use schemes are reverse domain names (`com.example.app`).
            if FORBIDDEN_SCHEMES.contains(&scheme) || !scheme.contains('.') {
                return Err(bad_redirect(
                    "redirect URI scheme must be https, http on loopback, or a private-use scheme like com.example.app",
                ));
            }
        }
    }
    if url.username() != "" || url.password().is_some() {
        return Err(bad_redirect("redirect URIs must not carry credentials"));
    }
    Ok(())
}

fn check_web_uri(field: &str, uri: &Option<String>) -> Result<(), OAuthError> {
    if let Some(u) = uri {
        let ok = u.len() <= MAX_URI_LEN
            && Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
        if !ok {
            return Err(bad_metadata(format!("{field} must be an http(s) URL")));
        }
    }
    Ok(())
}

/// Whether `c` may appear in text shown to users: no control characters and no invisible
/// formatting ones, bidirectional overrides and isolates above all (they reorder what the consent
/// page shows, e.g. U+202E).
fn displayable(c: char) -> bool {
    !(c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'))
}

fn check_text(field: &str, v: Option<&str>) -> Result<(), OAuthError> {
    if v.is_some_and(|s| s.len() > MAX_TEXT_LEN || !s.chars().all(displayable)) {
        return Err(bad_metadata(format!(
            "{field} must be at most {MAX_TEXT_LEN} bytes without control or bidirectional formatting characters"
        )));
    }
    Ok(())
}

/// The descriptive fields of a client, shown on the consent page or returned to it: from
/// registration (RFC 7591) and from Client ID Metadata Documents alike.
#[derive(Debug, Clone, Copy)]
pub struct Descriptive<'a> {
    /// `client_name`.
    pub client_name: &'a Option<String>,
    /// `client_uri`.
    pub client_uri: &'a Option<String>,
    /// `logo_uri`.
    pub logo_uri: &'a Option<String>,
    /// `tos_uri`.
    pub tos_uri: &'a Option<String>,
    /// `policy_uri`.
    pub policy_uri: &'a Option<String>,
    /// `software_id`.
    pub software_id: &'a Option<String>,
    /// `software_version`.
    pub software_version: &'a Option<String>,
    /// `scope`.
    pub scope: &'a Option<String>,
    /// `contacts`.
    pub contacts: &'a [String],
}

/// One set of rules for every source of client metadata: http(s) URLs, short displayable text.
pub fn check_descriptive(d: &Descriptive<'_>) -> Result<(), OAuthError> {
    for (field, v) in [
        ("client_uri", d.client_uri),
        ("logo_uri", d.logo_uri),
        ("tos_uri", d.tos_uri),
        ("policy_uri", d.policy_uri),
    ] {
        check_web_uri(field, v)?;
    }
    for (field, v) in [
        ("client_name", d.client_name),
        ("software_id", d.software_id),
        ("software_version", d.software_version),
        ("scope", d.scope),
    ] {
        check_text(field, v.as_deref())?;
    }
    if d.contacts.len() > 10 {
        return Err(bad_metadata("contacts: at most 10 entries"));
    }
    for contact in d.contacts {
        check_text("contacts", Some(contact))?;
    }
    Ok(())
}

/// Validates metadata and builds the client record (secrets not yet set).
fn validate(m: ClientMetadata, client_id: String, issued_at: u64) -> Result<Client, OAuthError> {
    let grant_types = m
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    let response_types = m.response_types.unwrap_or_else(|| vec!["code".to_owned()]);
    if grant_types.is_empty()
        || !grant_types
            .iter()
            .all(|g| g == "authorization_code" || g == "refresh_token")
    {
        return Err(bad_metadata(
            "grant_types may contain only authorization_code and refresh_token",
        ));
    }
    if !response_types.iter().all(|r| r == "code") {
        return Err(bad_metadata("response_types may contain only code"));
    }
    let code_flow = grant_types.iter().any(|g| g == "authorization_code");
    if code_flow != response_types.iter().any(|r| r == "code") {
        return Err(bad_metadata(
            "authorization_code grant and code response type go together (RFC 7591 §2.1)",
        ));
    }
    if code_flow && m.redirect_uris.is_empty() {
        return Err(bad_redirect("redirect_uris is required"));
    }
    if m.redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(bad_redirect(format!(
            "at most {MAX_REDIRECT_URIS} redirect URIs"
        )));
    }
    for uri in &m.redirect_uris {
        check_redirect_uri(uri)?;
    }
    check_descriptive(&Descriptive {
        client_name: &m.client_name,
        client_uri: &m.client_uri,
        logo_uri: &m.logo_uri,
        tos_uri: &m.tos_uri,
        policy_uri: &m.policy_uri,
        software_id: &m.software_id,
        software_version: &m.software_version,
        scope: &m.scope,
        contacts: &m.contacts,
    })?;
    Ok(Client {
        client_id,
        client_secret_hash: None,
        registration_access_token_hash: None,
        // RFC 7591 §2: the default is client_secret_basic.
        token_endpoint_auth_method: m
            .token_endpoint_auth_method
            .unwrap_or(TokenEndpointAuthMethod::ClientSecretBasic),
        redirect_uris: m.redirect_uris,
        grant_types,
        response_types,
        client_name: m.client_name,
        client_uri: m.client_uri,
        logo_uri: m.logo_uri,
        scope: m.scope,
        contacts: m.contacts,
        tos_uri: m.tos_uri,
        policy_uri: m.policy_uri,
        software_id: m.software_id,
        software_version: m.software_version,
        client_id_issued_at: issued_at,
        client_secret_expires_at: 0,
    })
}

/// Client metadata from a request: `Content-Type: application/json` (RFC 7591 §3.1; anything
/// else could come from a cross-site form, which can only send form or text bodies).
fn parse_metadata(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ClientMetadata, OAuthError> {
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(OAuthError::too_large());
        }
        Err(_) => return Err(bad_metadata("the body could not be read")),
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(bad_metadata(
            "the body must be client metadata as Content-Type: application/json",
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|_| bad_metadata("the body must be a JSON object of client metadata (RFC 7591)"))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(mcpgw_core::auth::bearer_token)
}

async fn guard(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<(), OAuthError> {
    match &state.config.registration {
        Registration::Open => Ok(()),
        Registration::InitialAccessToken(expected) => {
            let ok = bearer(headers)
                .is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.expose().as_bytes())));
            if ok {
                Ok(())
            } else {
                Err(OAuthError::new(
                    ErrorCode::InvalidToken,
                    "registration requires a valid initial access token",
                ))
            }
        }
        Registration::RateLimited {
            limit,
            window,
            trust_forwarded_for,
        } => {
            let addr = limits::client_address(headers, peer, *trust_forwarded_for);
            let (count, left) = state.store.hit("register", &addr, *window).await?;
            if count > u64::from(*limit) {
                tracing::warn!(%addr, "registration rate limit reached");
                return Err(OAuthError::rate_limited(
                    format!(
                        "too many registrations from this address; try again in {left} seconds"
                    ),
                    left,
                ));
            }
            Ok(())
        }
    }
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    limits::check(&state, "register", &headers, peer).await?;
    guard(&state, &headers, peer).await?;
    let metadata = parse_metadata(&headers, body)?;
    let issued_at = now();
    let mut client = validate(metadata, random_token(), issued_at)?;
    let secret = (!client.is_public()).then(random_token);
    let registration_token = random_token();
    client.client_secret_hash = secret.as_deref().map(hash);
    let lifetime = state.config.tokens.client;
    if secret.is_some() {
        client.client_secret_expires_at = issued_at + lifetime.as_secs();
    }
    client.registration_access_token_hash = Some(hash(&registration_token));
    state.store.put_client(&client, lifetime).await?;
    tracing::info!(client_id = %client.client_id, method = ?client.token_endpoint_auth_method, "registered a client");
    let mut response = information(&state, &client, secret, Some(registration_token));
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// The client a management request may act on: the registration access token must match.
async fn managed_client(
    state: &AppState,
    headers: &HeaderMap,
    client_id: &str,
) -> Result<Client, OAuthError> {
    let denied = || {
        OAuthError::new(
            ErrorCode::InvalidToken,
            "missing or invalid registration access token",
        )
    };
    let token = bearer(headers).ok_or_else(denied)?;
    // An unknown client gets the same answer as a wrong token (RFC 7592 §3: no existence leak).
    let client = state
        .store
        .get_client(client_id)
        .await?
        .ok_or_else(denied)?;
    let ok = client
        .registration_access_token_hash
        .as_deref()
        .is_some_and(|h| secret_matches(token, h));
    if !ok {
        tracing::debug!(%client_id, "wrong registration access token");
        return Err(denied());
    }
    Ok(client)
}

async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Result<Response, OAuthError> {
    let client = managed_client(&state, &headers, &client_id).await?;
    Ok(information(&state, &client, None, None))
}

async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let old = managed_client(&state, &headers, &client_id).await?;
    let metadata = parse_metadata(&headers, body)?;
    if metadata.client_id.as_deref() != Some(client_id.as_str()) {
        return Err(bad_metadata(
            "client_id must be present and equal the client's",
        ));
    }
    if let Some(s) = &metadata.client_secret {
        let matches = old
            .client_secret_hash
            .as_deref()
            .is_some_and(|h| secret_matches(s, h));
        if !matches {
            return Err(bad_metadata("client_secret does not match"));
        }
    }
    let mut client = validate(metadata, client_id, old.client_id_issued_at)?;
    if client.is_public() != old.is_public() {
        return Err(bad_metadata(
            "a client cannot switch between public and confidential",
        ));
    }
    client.client_secret_hash = old.client_secret_hash;
    client.client_secret_expires_at = old.client_secret_expires_at;
    client.registration_access_token_hash = old.registration_access_token_hash;
    state
        .store
        .put_client(&client, state.config.tokens.client)
        .await?;
    tracing::info!(client_id = %client.client_id, "updated a client");
    Ok(information(&state, &client, None, None))
}

async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Result<Response, OAuthError> {
    managed_client(&state, &headers, &client_id).await?;
    state.store.delete("client", &client_id).await?;
    let families = state.store.revoke_client_tokens(&client_id).await?;
    tracing::info!(%client_id, families, "deleted a client and revoked its tokens");
    Ok(no_store(StatusCode::NO_CONTENT.into_response()))
}
