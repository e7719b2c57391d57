//! The authorization endpoint and the login around it (OAuth 2.1 §4.1, RFC 8707, RFC 9207).
//!
//! The flow has four phases, each a route:
//!
//! 1. `GET /authorize` checks the client and the redirect URI, then the rest of the request:
//!    `response_type=code`, PKCE with `S256` (required; `plain` refused), the RFC 8707 `resource`
//!    (a configured MCP resource, else `invalid_target`) and the scopes. Every failure here is an
//!    HTML page, never a redirect (RFC 9700 §4.11.2: the user is not authenticated yet, and an
//!    openly registered redirect URI is no reason to trust it). It stores a [`PendingLogin`] under
//!    the upstream `state` (`oauth:state:*`, with a TTL) and sends the browser to the upstream
//!    identity provider. A cookie on `Path=/` (`__Host-` on https) binds the login to the browser
//!    that started it (login CSRF); a browser keeps one for all its logins at once.
//! 2. `GET /oauth/callback` checks the pending login's browser, then takes it (single use),
//!    finishes the upstream login, checks the allow-list, and either issues the code right away
//!    (consent remembered for this user, client, redirect URI and the client's redirect URIs) or
//!    shows the consent page. Errors from here on are redirected to the client.
//! 3. `POST /oauth/consent` checks the CSRF token and the browser binding, remembers the consent,
//!    and issues the code.
//! 4. The redirect back to the client carries `code`, `state` and `iss` (RFC 9207).
//!
//! Clients come from the store (dynamic registration) or, when the `client_id` is an https URL,
//! from its Client ID Metadata Document ([`cimd`]). The token endpoint is elsewhere; it redeems the
//! [`CodeGrant`] stored here.

pub mod cimd;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use mcpgw_core::claims::Scopes;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use url::Url;

use crate::error::ErrorCode;
use crate::html;
use crate::store::{Client, CodeGrant, StoreError, User, hash};
use crate::upstream::{LoginSecrets, Upstream, UpstreamError, random_token};
use crate::{AppState, limits, now};

/// The path of the upstream callback (under the issuer).
pub const CALLBACK_PATH: &str = "/oauth/callback";
/// The path the consent form posts to.
pub const CONSENT_PATH: &str = "/oauth/consent";
/// Longest `/authorize` query string accepted.
const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Longest client `state` accepted (it is stored with the pending login).
const MAX_STATE_BYTES: usize = 512;
/// The cookie that binds a login to the browser that started it (http issuers: loopback).
const BROWSER_COOKIE: &str = "mcpgw_login";
/// Its name on an https issuer.
const SECURE_BROWSER_COOKIE: &str = "__Host-mcpgw_login";
/// Scopes a client may always ask for besides the resources' own: `offline_access` (refresh
/// tokens; the MCP SDKs add it when the server lists it).
const ALWAYS_ALLOWED_SCOPES: [&str; 1] = ["offline_access"];

/// The login part's state, built once at start and shared by the handlers.
#[derive(Debug)]
pub struct Login {
    /// The upstream connector (`None`: no `[upstream]` configured; `/authorize` then fails).
    pub upstream: Option<Upstream>,
    /// The Client ID Metadata Document fetcher.
    pub documents: cimd::Documents,
}

impl Login {
    /// Builds the connector and the document fetcher from the configuration.
    pub fn new(config: &crate::config::Config) -> Result<Login, UpstreamError> {
        Ok(Login {
            upstream: config.upstream.as_ref().map(Upstream::new).transpose()?,
            documents: cimd::Documents::new(config.client_metadata.clone()),
        })
    }
}

/// The routes: `GET /authorize`, `GET /oauth/callback`, `POST /oauth/consent`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/authorize", get(authorize))
        .route(CALLBACK_PATH, get(callback))
        .route(CONSENT_PATH, post(consent))
}

/// A validated authorization request: what the code will be bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: String,
    /// The exact registered redirect URI.
    pub redirect_uri: String,
    /// Whether the request named it (then `/token` must repeat it; OAuth 2.1 §4.1.3).
    pub redirect_uri_sent: bool,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The resource's canonical URL.
    pub resource: String,
    /// The scopes requested (all known).
    pub scope: Vec<String>,
    /// The client's `state`, returned unchanged.
    pub state: Option<String>,
}

/// What `oauth:state:*` holds while the user is at the upstream provider (the upstream
/// `state` is the key): the request, the upstream nonce and PKCE verifier, and the SHA-256 of the
/// browser cookie.
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    request: AuthorizationRequest,
    nonce: String,
    verifier: String,
    browser: String,
}

/// What `oauth:consent_pending:*` holds while the consent page is shown.
#[derive(Serialize, Deserialize)]
struct PendingConsent {
    request: AuthorizationRequest,
    user: User,
    csrf: String,
    browser: String,
    /// Where an approval is remembered ([`consent_key`]).
    consent_key: String,
}

/// What the user approved for one client, redirect URI and set of redirect URIs
/// (`oauth:consent:*`): scopes per resource.
#[derive(Default, Serialize, Deserialize)]
struct RememberedConsent {
    resources: BTreeMap<String, BTreeSet<String>>,
}

impl RememberedConsent {
    fn covers(&self, request: &AuthorizationRequest) -> bool {
        self.resources
            .get(&request.resource)
            .is_some_and(|granted| request.scope.iter().all(|s| granted.contains(s)))
    }
}

/// How a step of the flow fails.
#[derive(Debug)]
enum FlowError {
    /// Shown on a page: the client or the redirect URI cannot be trusted with a redirect.
    Page(StatusCode, ErrorCode, String),
    /// Redirected to the (validated) client.
    Redirect(Box<AuthorizationRequest>, ErrorCode, String),
    /// Redis failed.
    Store(StoreError),
}

impl From<StoreError> for FlowError {
    fn from(e: StoreError) -> FlowError {
        FlowError::Store(e)
    }
}

fn page(status: StatusCode, code: ErrorCode, description: impl Into<String>) -> FlowError {
    FlowError::Page(status, code, description.into())
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "server_error".into())
}

/// The redirect back to the client with `params`, the client's `state` and `iss` (RFC 9207).
fn redirect_to_client(
    issuer: &str,
    request: &AuthorizationRequest,
    params: &[(&str, &str)],
) -> Response {
    let Ok(mut url) = Url::parse(&request.redirect_uri) else {
        // Registered redirect URIs are validated URLs; a stored one that no longer parses is
        // corrupt state, shown as a page rather than redirected.
        return html::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the client's redirect URI is not usable",
        );
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
        if let Some(state) = &request.state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", issuer);
    }
    see_other(url.as_str())
}

fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            response.headers_mut().insert(header::LOCATION, value);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => html::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the redirect could not be built",
        ),
    }
}

impl FlowError {
    fn respond(self, issuer: &str) -> Response {
        match self {
            FlowError::Page(status, code, description) => {
                tracing::debug!(error = %code_name(code), %description, "authorization refused on a page");
                html::error_page(status, &code_name(code), &description)
            }
            FlowError::Redirect(request, code, description) => {
                tracing::debug!(client_id = %request.client_id, error = %code_name(code), %description, "authorization refused");
                redirect_to_client(
                    issuer,
                    &request,
                    &[
                        ("error", &code_name(code)),
                        ("error_description", &description),
                    ],
                )
            }
            FlowError::Store(e) => {
                tracing::error!(error = %e, "authorization: store failed");
                html::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the server cannot complete the request right now, try again",
                )
            }
        }
    }
}

/// The query of `GET /authorize`. Every field is optional so that a missing one is reported
/// in the right way (page or redirect) rather than as a generic extractor rejection.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
}

/// Finds the client: registered, or described by its metadata document (an https URL).
pub async fn find_client(state: &AppState, client_id: &str) -> Result<Option<Client>, StoreError> {
    if let Some(client) = state.store.get_client(client_id).await? {
        return Ok(Some(client));
    }
    if !state.login.documents.is_document_url(client_id) {
        return Ok(None);
    }
    match state.login.documents.fetch(client_id).await {
        Ok(client) => {
            state
                .store
                .put_client(&client, state.config.client_metadata.cache_ttl)
                .await?;
            Ok(Some(client))
        }
        Err(e) => {
            tracing::warn!(%client_id, error = %e, "client metadata document refused");
            Ok(None)
        }
    }
}

/// RFC 7636 §4.1: 43–128 characters of `[A-Za-z0-9-._~]`; S256 challenges are 43.
fn valid_challenge(challenge: &str) -> bool {
    (43..=128).contains(&challenge.len())
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

async fn validate(state: &AppState, q: AuthorizeQuery) -> Result<AuthorizationRequest, FlowError> {
    let client_id = q.client_id.filter(|c| !c.is_empty()).ok_or_else(|| {
        page(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "client_id is missing",
        )
    })?;
    let client = find_client(state, &client_id).await?.ok_or_else(|| {
        page(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidClient,
            format!("unknown client `{client_id}`"),
        )
    })?;
    // OAuth 2.1 §2.3.1: exact string comparison; omitted only when exactly one is registered.
    let redirect_uri_sent = q.redirect_uri.is_some();
    let redirect_uri = match q.redirect_uri {
        Some(uri) if client.has_redirect_uri(&uri) => uri,
        Some(uri) => {
            return Err(page(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                format!("redirect_uri `{uri}` is not registered for this client"),
            ));
        }
        None => match client.redirect_uris.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(page(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "redirect_uri is missing",
                ));
            }
        },
    };
    // Kept in Redis with the pending login: bounded like everything stored for a stranger.
    if q.state.as_ref().is_some_and(|s| s.len() > MAX_STATE_BYTES) {
        return Err(page(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!("state is longer than {MAX_STATE_BYTES} bytes"),
        ));
    }
    let mut request = AuthorizationRequest {
        client_id,
        redirect_uri,
        redirect_uri_sent,
        code_challenge: String::new(),
        resource: String::new(),
        scope: Vec::new(),
        state: q.state,
    };
    // RFC 9700 §4.11.2: before the user is authenticated, an error is a page, never a redirect
    // (registration is open, so a registered redirect URI proves nothing).
    let refuse = |code, description: &str| page(StatusCode::BAD_REQUEST, code, description);
    if q.response_type.as_deref() != Some("code") {
        return Err(refuse(
            ErrorCode::UnsupportedResponseType,
            "response_type must be `code`",
        ));
    }
    if !client.response_types.is_empty() && !client.response_types.iter().any(|r| r == "code") {
        return Err(refuse(
            ErrorCode::UnauthorizedClient,
            "the client is not registered for response_type `code`",
        ));
    }
    // OAuth 2.1 §4.1.1: PKCE is required; only S256 (RFC 7636 §4.3 makes `plain` the default
    // when the method is absent, so an absent method is refused too).
    let challenge = q.code_challenge.unwrap_or_default();
    if challenge.is_empty() {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "code_challenge is required (PKCE)",
        ));
    }
    if q.code_challenge_method.as_deref() != Some("S256") {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "code_challenge_method must be S256",
        ));
    }
    if !valid_challenge(&challenge) || challenge.len() != 43 {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "code_challenge is not an S256 challenge",
        ));
    }
    request.code_challenge = challenge;
    // RFC 8707 §2: the resource names one configured MCP server; absent only when there is one.
    let resource = match q.resource {
        Some(r) => state
            .config
            .resource(&r)
            .map(|res| res.canonical_url.clone()),
        None => match state.config.resources.iter().collect::<Vec<_>>().as_slice() {
            [only] => Some(only.canonical_url.clone()),
            _ => None,
        },
    };
    request.resource = resource.ok_or_else(|| {
        refuse(
            ErrorCode::InvalidTarget,
            "resource is not an MCP server of this gateway",
        )
    })?;
    let supported = state.config.scopes_supported();
    let allowed_by_client = client.scope.as_deref().map(Scopes::parse);
    let requested = match q.scope.as_deref().map(str::trim) {
        // RFC 6749 §3.3: without a scope, a pre-defined default: what the resource requires.
        None | Some("") => state
            .config
            .resource(&request.resource)
            .map(|r| r.scopes_required.clone())
            .unwrap_or_default(),
        Some(scope) => Scopes::parse(scope).0,
    };
    for scope in &requested {
        let known = supported.contains(scope) || ALWAYS_ALLOWED_SCOPES.contains(&scope.as_str());
        let permitted = allowed_by_client.as_ref().is_none_or(|a| a.contains(scope));
        if !known || !permitted {
            return Err(refuse(
                ErrorCode::InvalidScope,
                "a requested scope is not available to this client",
            ));
        }
        if !request.scope.contains(scope) {
            request.scope.push(scope.clone());
        }
    }
    Ok(request)
}

/// The browser cookie's name: `__Host-` prefixed (Secure, host-only, `Path=/`) on an https issuer.
fn browser_cookie_name(issuer: &str) -> &'static str {
    if issuer.starts_with("https://") {
        SECURE_BROWSER_COOKIE
    } else {
        BROWSER_COOKIE
    }
}

/// The value of the browser cookie `name`, if the request carries a well-formed one.
fn browser_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, value)| {
            *cookie == name
                && value.len() == 43
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(|(_, value)| value.to_owned())
}

/// Whether the request carries the browser cookie (for `issuer`) whose hash is `expected_hash`.
fn same_browser(headers: &HeaderMap, issuer: &str, expected_hash: &str) -> bool {
    browser_cookie(headers, browser_cookie_name(issuer))
        .is_some_and(|c| hash(&c).as_bytes().ct_eq(expected_hash.as_bytes()).into())
}

async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    uri: Uri,
    query: Result<Query<AuthorizeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    let client_id = query.as_ref().ok().and_then(|q| q.client_id.as_deref());
    let limited = match limits::check(&state, "authorize", &headers, peer).await {
        Ok(()) => match client_id {
            Some(id) => limits::check_client(&state, "authorize", id).await,
            None => Ok(()),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = limited {
        return e.into_response();
    }
    let issuer = state.config.issuer.clone();
    // Everything in the request ends up in Redis for the login's lifetime: keep it small.
    if uri.query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        return page(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "the authorization request is too large",
        )
        .respond(&issuer);
    }
    let Ok(Query(query)) = query else {
        return page(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "the query string is malformed (a parameter may appear only once)",
        )
        .respond(&issuer);
    };
    match start_login(&state, &headers, query).await {
        Ok(response) => response,
        Err(e) => e.respond(&issuer),
    }
}

async fn start_login(
    state: &AppState,
    headers: &HeaderMap,
    query: AuthorizeQuery,
) -> Result<Response, FlowError> {
    let request = validate(state, query).await?;
    let Some(upstream) = &state.login.upstream else {
        return Err(page(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServerError,
            "no upstream login is configured",
        ));
    };
    // One cookie for every login this browser runs at once (a client connecting to several
    // servers): an existing one is kept, so no /authorize breaks a login in progress.
    let cookie_name = browser_cookie_name(&state.config.issuer);
    let cookie = browser_cookie(headers, cookie_name).unwrap_or_else(random_token);
    let secrets = LoginSecrets::generate();
    let callback = format!("{}{CALLBACK_PATH}", state.config.issuer);
    let url = match upstream.begin(&secrets, &callback).await {
        Ok(url) => url,
        Err(e) => {
            tracing::warn!(error = %e, "upstream login could not start");
            return Err(page(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TemporarilyUnavailable,
                "the identity provider is not reachable; try again later",
            ));
        }
    };
    let lifetime = state.config.tokens.state;
    tracing::debug!(client_id = %request.client_id, resource = %request.resource, "login started");
    let pending = PendingLogin {
        request,
        nonce: secrets.nonce.clone(),
        verifier: secrets.verifier.clone(),
        browser: hash(&cookie),
    };
    state
        .store
        .put_state(&secrets.state, &pending, lifetime)
        .await?;
    let mut response = see_other(&url);
    let secure = if cookie_name == SECURE_BROWSER_COOKIE {
        "; Secure"
    } else {
        ""
    };
    // Path=/ so that /authorize sees it too (and `__Host-` requires it).
    let set_cookie = format!(
        "{cookie_name}={cookie}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        lifetime.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&set_cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// The query of `GET /oauth/callback`.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let issuer = state.config.issuer.clone();
    let query = query.map(|Query(q)| q).unwrap_or_default();
    match finish_login(&state, &headers, query).await {
        Ok(response) => response,
        Err(e) => e.respond(&issuer),
    }
}

async fn finish_login(
    state: &AppState,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Result<Response, FlowError> {
    let expired = || {
        page(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "this login has expired or was already used; return to the application and start again",
        )
    };
    let upstream_state = query.state.filter(|s| !s.is_empty()).ok_or_else(expired)?;
    // Read, checked against this browser, and only then consumed: whoever learns the upstream
    // `state` cannot end the user's login from another browser.
    let pending: PendingLogin = state
        .store
        .get_state(&upstream_state)
        .await?
        .ok_or_else(expired)?;
    if !same_browser(headers, &state.config.issuer, &pending.browser) {
        return Err(page(
            StatusCode::FORBIDDEN,
            ErrorCode::AccessDenied,
            "this login was started in another browser",
        ));
    }
    let pending: PendingLogin = state
        .store
        .take_state(&upstream_state)
        .await?
        .ok_or_else(expired)?;
    let request = pending.request;
    let redirect = |code, description: &str| {
        FlowError::Redirect(Box::new(request.clone()), code, description.to_owned())
    };
    if let Some(error) = query.error {
        tracing::debug!(%error, "the identity provider refused the login");
        return Err(redirect(
            ErrorCode::AccessDenied,
            "the login at the identity provider was not completed",
        ));
    }
    let (Some(code), Some(upstream)) = (query.code, &state.login.upstream) else {
        return Err(redirect(
            ErrorCode::AccessDenied,
            "no login code was returned",
        ));
    };
    // RFC 9207 §2.4: an `iss` that is not our provider's means a mix-up; never redeem the code.
    if let Some(iss) = &query.iss
        && !upstream.is_issuer(iss)
    {
        tracing::warn!(%iss, "callback names another issuer");
        return Err(redirect(
            ErrorCode::AccessDenied,
            "the login answer came from another identity provider",
        ));
    }
    let secrets = LoginSecrets {
        state: upstream_state,
        nonce: pending.nonce,
        verifier: pending.verifier,
    };
    let callback = format!("{}{CALLBACK_PATH}", state.config.issuer);
    let user = match upstream.finish(&code, &secrets, &callback).await {
        Ok(user) => user,
        Err(e) => {
            tracing::warn!(error = %e, "upstream login failed");
            return Err(redirect(
                ErrorCode::AccessDenied,
                "the login at the identity provider failed",
            ));
        }
    };
    if !state.config.allow.permits(&user) {
        tracing::info!(sub = %user.sub, login = ?user.login, "login refused by the allow-list");
        return Err(redirect(
            ErrorCode::AccessDenied,
            "this user is not allowed to use this gateway",
        ));
    }
    tracing::debug!(sub = %user.sub, client_id = %request.client_id, "upstream login succeeded");
    let client = find_client(state, &request.client_id)
        .await?
        .ok_or_else(|| redirect(ErrorCode::InvalidRequest, "the client no longer exists"))?;
    // The redirect URI may have been dropped from the client since /authorize (RFC 7592).
    if !client.has_redirect_uri(&request.redirect_uri) {
        return Err(page(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "the client no longer has this redirect URI; return to the application and start again",
        ));
    }
    let consent_key = consent_key(&user, &client, &request.redirect_uri);
    let remembered: RememberedConsent = state
        .store
        .get_json("consent", &consent_key)
        .await?
        .unwrap_or_default();
    if remembered.covers(&request) {
        return issue_code(state, request, user).await;
    }
    let consent_id = random_token();
    let csrf = random_token();
    let pending = PendingConsent {
        request: request.clone(),
        user: user.clone(),
        csrf: hash(&csrf),
        browser: pending.browser,
        consent_key,
    };
    state
        .store
        .put_json(
            "consent_pending",
            &hash(&consent_id),
            &pending,
            state.config.tokens.state,
        )
        .await?;
    let resource_name = state
        .config
        .resource(&request.resource)
        .and_then(|r| r.metadata.resource_name.clone());
    Ok(html::consent_page(&html::Consent {
        action: CONSENT_PATH,
        consent_id: &consent_id,
        csrf: &csrf,
        user: user.login.as_deref().unwrap_or(&user.sub),
        client_name: client.client_name.as_deref().unwrap_or(&client.client_id),
        client_id: &client.client_id,
        redirect_host: &redirect_host(&request.redirect_uri),
        resource: &request.resource,
        resource_name: resource_name.as_deref(),
        scopes: &request.scope,
    }))
}

/// The host a redirect URI delivers to (its scheme for private-use URIs without a host).
fn redirect_host(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => format!("{}:", url.scheme()),
        },
        Err(_) => uri.to_owned(),
    }
}

/// Where a consent is remembered: per user, client, the redirect URI the code goes to and every
/// redirect URI the client has, so that any change of them (RFC 7592, a new metadata document)
/// asks again.
fn consent_key(user: &User, client: &Client, redirect_uri: &str) -> String {
    let mut uris: Vec<&str> = client.redirect_uris.iter().map(String::as_str).collect();
    uris.sort_unstable();
    let bound = serde_json::json!([user.sub, client.client_id, redirect_uri, uris]);
    hash(&bound.to_string())
}

/// The consent form.
#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    consent: String,
    csrf: String,
    decision: String,
}

async fn consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<ConsentForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let issuer = state.config.issuer.clone();
    let result = match form {
        Ok(Form(form)) => decide(&state, &headers, form).await,
        Err(_) => Err(page(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "the consent form is incomplete",
        )),
    };
    match result {
        Ok(response) => response,
        Err(e) => e.respond(&issuer),
    }
}

async fn decide(
    state: &AppState,
    headers: &HeaderMap,
    form: ConsentForm,
) -> Result<Response, FlowError> {
    let pending: PendingConsent = state
        .store
        .take_json("consent_pending", &hash(&form.consent))
        .await?
        .ok_or_else(|| {
            page(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "this consent request has expired or was already answered",
            )
        })?;
    let csrf_ok: bool = hash(&form.csrf)
        .as_bytes()
        .ct_eq(pending.csrf.as_bytes())
        .into();
    if !csrf_ok || !same_browser(headers, &state.config.issuer, &pending.browser) {
        return Err(page(
            StatusCode::FORBIDDEN,
            ErrorCode::AccessDenied,
            "the consent form did not come from this browser's login",
        ));
    }
    let request = pending.request;
    if form.decision != "approve" {
        tracing::debug!(client_id = %request.client_id, "consent denied");
        return Err(FlowError::Redirect(
            Box::new(request),
            ErrorCode::AccessDenied,
            "the user denied access".into(),
        ));
    }
    let key = pending.consent_key;
    let mut remembered: RememberedConsent = state
        .store
        .get_json("consent", &key)
        .await?
        .unwrap_or_default();
    remembered
        .resources
        .entry(request.resource.clone())
        .or_default()
        .extend(request.scope.iter().cloned());
    state
        .store
        .put_json(
            "consent",
            &key,
            &remembered,
            state.config.tokens.refresh_token,
        )
        .await?;
    issue_code(state, request, pending.user).await
}

async fn issue_code(
    state: &AppState,
    request: AuthorizationRequest,
    user: User,
) -> Result<Response, FlowError> {
    let code = random_token();
    let grant = CodeGrant {
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        redirect_uri_sent: request.redirect_uri_sent,
        code_challenge: request.code_challenge.clone(),
        resource: request.resource.clone(),
        scope: Scopes(request.scope.clone()),
        user,
        issued_at: now(),
    };
    state
        .store
        .put_code(&code, &grant, state.config.tokens.code)
        .await?;
    tracing::debug!(client_id = %request.client_id, sub = %grant.user.sub, "authorization code issued");
    Ok(redirect_to_client(
        &state.config.issuer,
        &request,
        &[("code", &code)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_syntax_follows_rfc_7636() {
        assert!(valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!valid_challenge("short"));
        assert!(!valid_challenge(&"a".repeat(129)));
        assert!(!valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c="
        ));
    }

    #[test]
    fn redirect_host_names_where_the_code_goes() {
        assert_eq!(redirect_host("http://127.0.0.1:3000/cb"), "127.0.0.1:3000");
        assert_eq!(redirect_host("https://app.example/cb"), "app.example");
        assert_eq!(redirect_host("com.example.app:/cb"), "com.example.app:");
    }

    #[test]
    fn browser_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        let value = "a".repeat(43);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {BROWSER_COOKIE}={value}; y=2"))
                .unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(
            browser_cookie(&headers, BROWSER_COOKIE),
            Some(value.clone())
        );
        assert!(same_browser(
            &headers,
            "http://127.0.0.1:8080",
            &hash(&value)
        ));
        assert!(!same_browser(
            &headers,
            "http://127.0.0.1:8080",
            &hash("other")
        ));
        assert_eq!(browser_cookie(&HeaderMap::new(), BROWSER_COOKIE), None);
        // On an https issuer only the `__Host-` cookie counts (Secure, host-only, Path=/).
        assert!(!same_browser(
            &headers,
            "https://mcp.example.com",
            &hash(&value)
        ));
        assert_eq!(
            browser_cookie_name("https://mcp.example.com"),
            "__Host-mcpgw_login"
        );
        assert_eq!(browser_cookie_name("http://127.0.0.1:8080"), "mcpgw_login");
    }
}
