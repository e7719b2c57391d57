//! Client authentication at the token, revocation and introspection endpoints (RFC 6749 §2.3,
//! OAuth 2.1 §2.4): exactly the method the client registered with. `client_secret_basic` reads
//! the form-urlencoded id and secret from HTTP Basic; `client_secret_post` from the body; public
//! clients (`none`) only name themselves. Secrets are compared as SHA-256 hashes in constant time.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::{ErrorCode, OAuthError};
use crate::store::{Client, TokenEndpointAuthMethod, hash};

/// The credentials a request presented.
#[derive(Default)]
pub struct Presented {
    client_id: Option<String>,
    secret: Option<String>,
    basic: bool,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "**redacted**"))
            .field("basic", &self.basic)
            .finish()
    }
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl Presented {
    /// Collects the credentials from the `Authorization: Basic` header and the form's
    /// `client_id`/`client_secret`. Two methods at once is an error (RFC 6749 §2.3).
    pub fn from_request(
        headers: &HeaderMap,
        client_id: Option<&str>,
        client_secret: Option<&str>,
    ) -> Result<Presented, OAuthError> {
        let invalid = |d: &str| OAuthError::new(ErrorCode::InvalidClient, d);
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
        match basic {
            Some((_, creds)) => {
                if client_secret.is_some() {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidRequest,
                        "more than one client authentication method",
                    ));
                }
                let decoded = STANDARD
                    .decode(creds.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| invalid("malformed basic credentials"))?;
                let (id, secret) = decoded
                    .split_once(':')
                    .ok_or_else(|| invalid("malformed basic credentials"))?;
                let id = form_decode(id);
                if client_id.is_some_and(|c| c != id) {
                    return Err(invalid("client_id does not match the credentials"));
                }
                Ok(Presented {
                    client_id: Some(id),
                    secret: Some(form_decode(secret)),
                    basic: true,
                })
            }
            None => Ok(Presented {
                client_id: client_id.map(str::to_owned),
                secret: client_secret.map(str::to_owned),
                basic: false,
            }),
        }
    }

    /// The client this request claims to be, before authentication.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }
}

/// Whether `secret` hashes to `stored_hash` (constant time).
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    hash(secret).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Authenticates the presented credentials against the registered client.
pub async fn authenticate(state: &AppState, presented: &Presented) -> Result<Client, OAuthError> {
    let failed = || OAuthError::new(ErrorCode::InvalidClient, "client authentication failed");
    let client_id = presented
        .client_id
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidClient, "client_id is required"))?;
    let client = crate::authorize::find_client(state, client_id)
        .await?
        .ok_or_else(failed)?;
    let ok = match (client.token_endpoint_auth_method, &presented.secret) {
        (TokenEndpointAuthMethod::None, None) => !presented.basic,
        (TokenEndpointAuthMethod::ClientSecretBasic, Some(s)) if presented.basic => {
            check_secret(&client, s)
        }
        (TokenEndpointAuthMethod::ClientSecretPost, Some(s)) if !presented.basic => {
            check_secret(&client, s)
        }
        _ => false,
    };
    if !ok {
        tracing::debug!(%client_id, "client authentication failed");
        return Err(failed());
    }
    Ok(client)
}

fn check_secret(client: &Client, secret: &str) -> bool {
    let unexpired =
        client.client_secret_expires_at == 0 || crate::now() < client.client_secret_expires_at;
    unexpired
        && client
            .client_secret_hash
            .as_deref()
            .is_some_and(|h| secret_matches(secret, h))
}
