//! `GET|POST /verify`: Traefik ForwardAuth. Traefik sends the original request's
//! `Authorization` and `X-Forwarded-Host`/`X-Forwarded-Uri`; the resource is chosen from those
//! with core's matching, and the decision is core's [`authenticate`], so the answer (status,
//! `WWW-Authenticate`, body) is exactly the JWT filter's. On top, the sidecar checks revocation
//! (the `jti` listed in `oauth:revoked`, or seen listed before: the feed's sticky rule) and
//! refuses a revoked token with core's revoked denial, the JWT filter's answer to a token in its
//! revocation feed. Allowed: 200 with
//! the identity headers, which Traefik copies upstream (`authResponseHeaders`). A path that names no configured
//! resource is refused with 404 (fail closed). A CORS preflight (`X-Forwarded-Method: OPTIONS`
//! with `Access-Control-Request-Method`) passes without a token and without identity headers.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mcpgw_core::auth::{Decision, Denial, DenyReason, VerifyOptions, authenticate, deny};
use mcpgw_core::route;

use crate::error::InternalCause;
use crate::{AppState, now};

/// The ForwardAuth route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/verify", get(verify).post(verify))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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

async fn verify(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let host = header_str(&headers, "x-forwarded-host");
    let uri = header_str(&headers, "x-forwarded-uri").unwrap_or("/");
    let Some(resource) = state.config.resources.find(host, uri) else {
        tracing::debug!(?host, path = %uri, "verify: no resource at this path");
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
            header_str(&headers, "authorization"),
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
    let mut response = StatusCode::OK.into_response();
    for (name, value) in identity.headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), v);
        }
    }
    response
}
