//! Discovery and liveness: RFC 8414 authorization server metadata, RFC 9728 protected resource
//! metadata (for an edge that routes `/.well-known/` here, such as Traefik), the JWKS, `/health`
//! and `/ready`. No `/.well-known/openid-configuration`: the sidecar issues no ID tokens and
//! refuses the `openid` scope.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::config::Registration;

/// The discovery, JWKS and health routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(resource_metadata),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// The RFC 8414 metadata document for `state`'s configuration.
pub fn metadata_document(state: &AppState) -> Value {
    let c = &state.config;
    let iss = &c.issuer;
    let mut doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "registration_endpoint": format!("{iss}/register"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "introspection_endpoint": format!("{iss}/introspect"),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": c.scopes_supported(),
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": c.client_metadata.enabled,
        "resource_parameter_supported": true,
    });
    if let (Registration::InitialAccessToken(_), Some(obj)) = (&c.registration, doc.as_object_mut())
    {
        obj.insert("registration_endpoint_auth_required".into(), json!(true));
    }
    doc
}

async fn metadata(State(state): State<AppState>) -> Response {
    cacheable(
        Json(metadata_document(&state)).into_response(),
        "public, max-age=300",
    )
}

/// The RFC 9728 document of the resource whose metadata URL this is, found by core's matching
/// (the JWT filter answers the same on Envoy), with the same CORS header.
async fn resource_metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let Some(resource) = state.config.resources.find_metadata(host, uri.path()) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "error_description": "no protected resource has its metadata here"})),
        )
            .into_response();
    };
    let mut r = cacheable(
        Json(resource.metadata_document()).into_response(),
        "no-store",
    );
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

async fn jwks(State(state): State<AppState>) -> Response {
    let ring = state.keys.current();
    // Short cache: after a rotation the new key must reach verifiers quickly.
    cacheable(Json(&ring.jwks).into_response(), "public, max-age=60")
}

fn cacheable(mut r: Response, value: &'static str) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    r
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: redis unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "redis unreachable", "error": e.to_string() })),
            )
                .into_response()
        }
    }
}
