//! mcpgw's OAuth 2.1 authorization server (the sidecar): axum handlers over a Redis [`store`],
//! signing access tokens with the [`keys`] ring and verifying them for Traefik ForwardAuth with
//! core's decision. [`router`] builds the whole application from an [`AppState`]; `main` only
//! loads the configuration, connects and serves.

pub mod authorize;
pub mod client_auth;
pub mod config;
pub mod discovery;
pub mod durability;
pub mod error;
pub mod html;
pub mod keys;
pub mod limits;
pub mod register;
pub mod revoke;
pub mod store;
pub mod token;
pub mod upstream;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::keys::{KeyRingError, KeyStorage, Keys};
use crate::store::{Store, StoreError};

/// Largest request body accepted (registration metadata, token requests).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest a request may take, from its head to the answer (the login's upstream calls and
/// metadata document fetches have shorter timeouts of their own).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Redis.
    pub store: Store,
    /// The signing key ring.
    pub keys: Arc<Keys>,
    /// The login part: upstream connector, metadata-document fetcher (sidecar/src/authorize/).
    pub login: Arc<authorize::Login>,
    /// The revoked access tokens seen so far, kept across a Redis that lost them.
    pub revocations: Arc<durability::Revocations>,
}

/// Why the state could not be built at startup.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Redis unreachable.
    #[error("cannot connect to Redis: {0}")]
    Store(#[from] StoreError),
    /// Keys unusable.
    #[error(transparent)]
    Keys(#[from] KeyRingError),
    /// The upstream login connector could not be built.
    #[error(transparent)]
    Login(#[from] upstream::UpstreamError),
}

impl AppState {
    /// Connects to Redis and loads (or creates) the signing keys.
    pub async fn new(config: Config) -> Result<AppState, StartError> {
        let store = Store::connect(config.redis_url.expose(), &config.key_prefix).await?;
        let keys = Keys::load_or_create(
            key_storage(&config, &store),
            config.signing_alg,
            keys::keep_replaced_keys(&config),
            now(),
        )
        .await?;
        let login = authorize::Login::new(&config)?;
        Ok(AppState {
            login: Arc::new(login),
            config: Arc::new(config),
            store,
            keys: Arc::new(keys),
            revocations: Arc::default(),
        })
    }
}

/// Where the configuration says the signing keys live.
pub fn key_storage(config: &Config, store: &Store) -> KeyStorage {
    match &config.signing_keys_dir {
        Some(dir) => KeyStorage::Dir(dir.clone()),
        None => KeyStorage::Redis(store.clone()),
    }
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let verify = verify::routes(&state.config);
    Router::new()
        .merge(discovery::routes())
        .merge(register::routes())
        .merge(token::routes())
        .merge(revoke::routes())
        .merge(verify)
        // Mount point of the login part: GET /authorize, /oauth/* (sidecar/src/authorize/).
        .merge(authorize::routes())
        .layer(axum::middleware::map_response(log_internal_error))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A request (its body included) that takes longer is cut: 408.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        // Spans name the path only: query strings carry codes and state (never logged).
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
        }))
        .with_state(state)
}

/// Logs the cause of a 5xx that a handler put into the response (the client got a generic body).
async fn log_internal_error(response: axum::response::Response) -> axum::response::Response {
    if let Some(error::InternalCause(cause)) = response.extensions().get() {
        tracing::error!(status = response.status().as_u16(), %cause, "request failed");
    }
    response
}
