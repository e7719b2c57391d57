//! Upstream login: where the users of the gateway prove who they are.
//!
//! Two connectors, chosen by configuration: any OpenID Connect provider ([`oidc`]: discovery,
//! PKCE, nonce, ID-token verification against the provider's JWKS, userinfo, a groups claim) and
//! GitHub ([`github`]: an OAuth App; user, e-mails, organisations and teams). Both follow the same
//! two steps: [`Upstream::begin`] builds the URL the browser is sent to together with the
//! [`LoginSecrets`] to keep until the callback, and [`Upstream::finish`] exchanges the callback's
//! code for a [`User`]. The configuration ([`config::Upstream`]) and the allow-list
//! ([`config::AllowList`]) live in `config`.
//!
//! This module owns no storage and no routes: `authorize` keeps the secrets in Redis under the
//! flow's state, serves `/oauth/callback` and checks the allow-list.

pub mod github;
pub mod jws;
pub mod oidc;

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use mcpgw_core::identity;

use crate::config::{self, UpstreamKind};
use crate::store::User;

/// Timeout of every request to an identity provider.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response body accepted from an upstream (discovery, JWKS, tokens, user info).
pub const MAX_UPSTREAM_BODY: usize = 256 * 1024;

/// What the sidecar keeps between sending the browser upstream and the callback: the upstream
/// `state`, the OIDC `nonce` and the PKCE verifier. `Debug` redacts them.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginSecrets {
    /// The `state` sent upstream (also the key of the pending flow).
    pub state: String,
    /// The OIDC `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE `code_verifier` for the upstream token request.
    pub verifier: String,
}

impl fmt::Debug for LoginSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginSecrets(redacted)")
    }
}

impl LoginSecrets {
    /// Fresh random secrets (256 bits each).
    pub fn generate() -> LoginSecrets {
        LoginSecrets {
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
        }
    }

    /// The PKCE S256 challenge of the verifier (RFC 7636 §4.2).
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

/// 32 random bytes from the OS, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Why an upstream login failed. Messages name the step, never a token or code.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The user (or the provider) refused the login at the provider.
    #[error("the identity provider refused the login: {0}")]
    Refused(String),
    /// A request to the provider failed or its answer was unusable.
    #[error("identity provider {step}: {reason}")]
    Provider {
        /// The step that failed (`discovery`, `token`, `userinfo`, ...).
        step: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The ID token did not verify.
    #[error("ID token rejected: {0}")]
    IdToken(String),
}

impl UpstreamError {
    fn provider(step: &'static str, reason: impl fmt::Display) -> UpstreamError {
        UpstreamError::Provider {
            step,
            reason: reason.to_string(),
        }
    }
}

/// A configured connector.
#[derive(Debug)]
pub enum Upstream {
    /// OpenID Connect.
    Oidc(Box<oidc::OidcConnector>),
    /// GitHub.
    Github(Box<github::GithubConnector>),
}

impl Upstream {
    /// Builds the connector for `config`; nothing is fetched yet (OIDC discovery runs on first
    /// use and is cached).
    pub fn new(config: &config::Upstream) -> Result<Upstream, UpstreamError> {
        match config.kind {
            UpstreamKind::Oidc => Ok(Upstream::Oidc(Box::new(oidc::OidcConnector::new(
                config.clone(),
            )?))),
            UpstreamKind::Github => Ok(Upstream::Github(Box::new(github::GithubConnector::new(
                config.clone(),
            )?))),
        }
    }

    /// The URL to send the browser to, for a callback at `redirect_uri`.
    pub async fn begin(
        &self,
        secrets: &LoginSecrets,
        redirect_uri: &str,
    ) -> Result<String, UpstreamError> {
        match self {
            Upstream::Oidc(c) => c.authorization_url(secrets, redirect_uri).await,
            Upstream::Github(c) => Ok(c.authorization_url(secrets, redirect_uri)),
        }
    }

    /// Exchanges the callback's `code` and returns the user.
    pub async fn finish(
        &self,
        code: &str,
        secrets: &LoginSecrets,
        redirect_uri: &str,
    ) -> Result<User, UpstreamError> {
        let user = match self {
            Upstream::Oidc(c) => c.finish(code, secrets, redirect_uri).await,
            Upstream::Github(c) => c.finish(code, secrets, redirect_uri).await,
        }?;
        carriable(&user).map_err(|e| UpstreamError::provider("user", e))?;
        Ok(user)
    }

    /// Whether `iss` (RFC 9207, on the callback) names this provider. GitHub sends none; an
    /// OIDC provider's must equal its issuer.
    pub fn is_issuer(&self, iss: &str) -> bool {
        match self {
            Upstream::Oidc(c) => c.is_issuer(iss),
            Upstream::Github(_) => false,
        }
    }
}

/// Refuses a user whose claims the gateway could not pass on exactly (core's rule for the access
/// tokens it would carry): better at login than on every request.
fn carriable(user: &User) -> Result<(), identity::UncarriableClaim> {
    identity::check_value("sub", &user.sub)?;
    for (claim, v) in [
        ("preferred_username", &user.login),
        ("name", &user.name),
        ("email", &user.email),
    ] {
        v.as_deref()
            .map_or(Ok(()), |v| identity::check_value(claim, v))?;
    }
    identity::check_items("groups", &user.groups)
}

/// The HTTP client the connectors use: a timeout, no redirects (an identity provider's API
/// answers directly; following a redirect could carry credentials elsewhere).
fn http_client() -> Result<reqwest::Client, UpstreamError> {
    reqwest::Client::builder()
        .timeout(UPSTREAM_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcpgw-sidecar/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UpstreamError::provider("client", e))
}

/// Reads a response body of at most `limit` bytes.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            // Truncated on purpose: the caller's JSON parse fails and reports the body as unusable.
            body.clear();
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Sends `request`, requires a 2xx status and parses the JSON body (at most
/// [`MAX_UPSTREAM_BODY`] bytes).
async fn fetch_json<T: serde::de::DeserializeOwned>(
    step: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<T, UpstreamError> {
    let response = request
        .send()
        .await
        .map_err(|e| UpstreamError::provider(step, e.without_url()))?;
    let status = response.status();
    let body = read_limited(response, MAX_UPSTREAM_BODY)
        .await
        .map_err(|e| UpstreamError::provider(step, e.without_url()))?;
    if !status.is_success() {
        return Err(UpstreamError::provider(
            step,
            format!("status {}", status.as_u16()),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| UpstreamError::provider(step, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_is_s256_of_the_verifier() {
        // RFC 7636 Appendix B.
        let secrets = LoginSecrets {
            state: String::new(),
            nonce: String::new(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
        };
        assert_eq!(
            secrets.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(format!("{secrets:?}"), "LoginSecrets(redacted)");
    }
}
