//! `GET|POST /verify`: Traefik ForwardAuth. Traefik sends the original request's
//! `Authorization`, MCP headers and `X-Forwarded-Method`/`-Host`/`-Uri`, and its body
//! (`forwardBody`); `/verify` answers what Envoy's JWT filter and policy filter answer for that
//! request, through the same core functions. The resource is chosen with core's matching and the
//! token decided by core's [`authenticate`], so a refusal (status, `WWW-Authenticate`, body) is
//! the JWT filter's. The sidecar then checks revocation (the `jti` listed in `oauth:revoked`, or
//! seen listed before: the feed's sticky rule) and refuses a revoked token with core's revoked
//! denial, the JWT filter's answer to a token in its revocation feed. With a configured `policy`,
//! the request is then decided by core's [`Policy::authorize`] for the caller the token makes
//! ([`Caller::from_identity`]), as the policy filter decides it: 403 with its JSON-RPC error when
//! denied, 400 for a malformed body or MCP headers that disagree with it, 413 for a body over the
//! policy's limit. Allowed: 200 with the identity headers, which Traefik copies upstream
//! (`authResponseHeaders`). A path that names no configured resource is refused with 404 (fail
//! closed). A CORS preflight (`X-Forwarded-Method: OPTIONS` with
//! `Access-Control-Request-Method`) passes without a token and without identity headers.

use std::borrow::Cow;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mcpgw_core::auth::{Decision, Denial, DenyReason, VerifyOptions, authenticate, deny};
use mcpgw_core::identity::Identity;
use mcpgw_core::mcp::McpHeaders;
use mcpgw_core::policy::{Caller, HttpRequest, Policy};
use mcpgw_core::route;

use crate::config::Config;
use crate::error::InternalCause;
use crate::{AppState, MAX_BODY_BYTES, now};

/// The ForwardAuth route. The body it reads is limited as the policy limits MCP bodies.
pub fn routes(config: &Config) -> Router<AppState> {
    let limit = config
        .policy
        .as_ref()
        .map_or(MAX_BODY_BYTES, |p| p.limits.max_body_bytes);
    Router::new()
        .route("/verify", get(verify).post(verify))
        .layer(DefaultBodyLimit::max(limit))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `Authorization` value Envoy's JWT filter sees: several headers are joined with `,` (as
/// Envoy's codec merges them), which no bearer token survives, so both edges refuse them alike.
fn authorization(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let mut values = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(|v| v.to_str().unwrap_or_default());
    let first = values.next()?;
    Some(match values.next() {
        None => Cow::Borrowed(first),
        Some(second) => Cow::Owned(
            [first, second]
                .into_iter()
                .chain(values)
                .collect::<Vec<_>>()
                .join(","),
        ),
    })
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Core's denial as a response: status, `WWW-Authenticate` and body exactly as the filter sends.
fn denial_response(denial: Denial) -> Response {
    let status = StatusCode::from_u16(denial.status).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut r = json_response(status, denial.body);
    if let Some(v) = denial
        .www_authenticate
        .and_then(|w| HeaderValue::from_str(&w).ok())
    {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let host = header_str(&headers, "x-forwarded-host");
    let uri = header_str(&headers, "x-forwarded-uri").unwrap_or("/");
    let Some(resource) = state.config.resources.find(host, uri) else {
        // The path only: a query may carry a token (`?access_token=`).
        let path = uri.split(['?', '#']).next().unwrap_or_default();
        tracing::debug!(?host, %path, "verify: no resource at this path");
        return json_response(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found","error_description":"no protected resource at this path"}"#
                .to_owned(),
        );
    };
    let preflight = route::is_cors_preflight(
        header_str(&headers, "x-forwarded-method").unwrap_or_default(),
        header_str(&headers, "access-control-request-method"),
    );
    if preflight {
        return StatusCode::OK.into_response();
    }
    let ring = state.keys.current();
    let options = VerifyOptions::new(state.config.issuer.clone());
    let decision = {
        let mut cache = match ring.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        authenticate(
            authorization(&headers).as_deref(),
            resource,
            &ring.keyset,
            &options,
            now(),
            Some(&mut cache),
        )
    };
    let identity = match decision {
        Decision::Allow(identity) => identity,
        Decision::Deny(denial) => {
            tracing::debug!(reason = ?denial.reason, resource = %resource.canonical_url, "verify: denied");
            return denial_response(denial);
        }
    };
    // Revoked: listed in Redis now, or seen listed before (core's sticky rule, which the JWT
    // filter follows too, so both edges answer alike after Redis lost its data).
    match state.store.is_revoked(&identity.jti).await {
        Ok(false) if !state.revocations.contains(&identity.jti) => {}
        Ok(_) => {
            tracing::debug!(jti = %identity.jti, "verify: token revoked");
            return denial_response(deny(DenyReason::Revoked, resource));
        }
        Err(e) => {
            // Fail closed: without Redis, revocation cannot be checked.
            let mut r = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"temporarily_unavailable"}"#.to_owned(),
            );
            r.extensions_mut().insert(InternalCause(e.to_string()));
            return r;
        }
    }
    let forwarded = identity.headers();
    if let Some(policy) = &state.config.policy
        && let Some(refused) = policy_refusal(policy, &headers, &forwarded, body, &identity)
    {
        return refused;
    }
    let mut response = StatusCode::OK.into_response();
    for (name, value) in forwarded {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), v);
        }
    }
    response
}

/// The policy filter's answer to the forwarded request, made by the same core calls in the same
/// order (server by host and path, requests outside every server, declared and actual body size,
/// then [`Policy::authorize`]); `None` lets it through.
fn policy_refusal(
    policy: &Policy,
    headers: &HeaderMap,
    forwarded: &[(&'static str, Cow<'_, str>)],
    body: Result<Bytes, BytesRejection>,
    identity: &Identity,
) -> Option<Response> {
    let host = header_str(headers, "x-forwarded-host");
    let uri = header_str(headers, "x-forwarded-uri").unwrap_or("/");
    let method = header_str(headers, "x-forwarded-method").unwrap_or("GET");
    let server = policy
        .server_index(host, uri)
        .and_then(|i| policy.server_name(i));
    if policy.passes_unchecked(server) {
        return None;
    }
    let caller = Caller::from_identity(forwarded);
    let mcp = McpHeaders {
        protocol_version: header_str(headers, "mcp-protocol-version"),
        method: header_str(headers, "mcp-method"),
        name: header_str(headers, "mcp-name"),
    };
    let out = match (&caller, &body) {
        (Err(e), _) => policy.refuse_malformed(server, method, *e),
        // The only body that cannot be read whole is one over the limit.
        (Ok(_), Err(_)) => policy.refuse_oversized(server, method),
        (Ok(caller), Ok(body)) => policy.authorize(&HttpRequest {
            server,
            http_method: method,
            mcp: &mcp,
            caller,
            body,
        }),
    };
    let (why, status, body) = out.refusal?;
    tracing::debug!(
        refusal = why.as_str(),
        jti = %identity.jti,
        server = out.server.unwrap_or("-"),
        method = %out.method,
        rule = out.rule.unwrap_or("-"),
        "verify: refused by the policy"
    );
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::FORBIDDEN);
    Some(json_response(
        status,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}
