//! The OpenID Connect login connector (OpenID Connect Core 1.0, authorization code flow).
//!
//! Discovery (`/.well-known/openid-configuration`, whose `issuer` must equal the configured one)
//! runs on first use and is cached; the JWKS is cached and fetched again when an ID token names a
//! key it does not hold or its signature fails under a known `kid` (key rotation, also under the
//! same `kid`), at most once per [`REFETCH_MIN_INTERVAL`]. The authorization request carries PKCE (S256), `state`
//! and `nonce`; the token request authenticates with `client_secret_basic`. The ID token is
//! verified (signature against the JWKS, `iss`, `aud`/`azp`, `exp`, `iat`, `nonce`) before
//! userinfo is read with the access token; userinfo's `sub` must match the ID token's (§5.3.2).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{OnceCell, RwLock};
use url::Url;

use super::jws::{self, JwsError, ProviderKeys};
use super::{LoginSecrets, UpstreamError, fetch_json, http_client};
use crate::config;
use crate::store::User;

/// Seconds of clock skew tolerated on the ID token's `exp` and `iat`.
const LEEWAY_SECS: u64 = 60;
/// The least time between two JWKS fetches caused by an ID token the cached keys do not verify.
pub const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// The part of the provider's metadata the connector uses.
#[derive(Clone, Debug, Deserialize)]
struct ProviderMetadata {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: Url,
    jwks_uri: Url,
    userinfo_endpoint: Option<Url>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    id_token: Option<String>,
}

/// The ID token claims checked here; the rest is read as JSON.
#[derive(Deserialize)]
struct IdTokenClaims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: u64,
    iat: u64,
    nonce: Option<String>,
    azp: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(a) => a,
        }
    }
}

/// The OIDC connector: configuration, an HTTP client and the cached discovery and JWKS.
#[derive(Debug)]
pub struct OidcConnector {
    config: config::Upstream,
    issuer: Url,
    http: reqwest::Client,
    metadata: OnceCell<ProviderMetadata>,
    keys: RwLock<Option<ProviderKeys>>,
    /// When an ID token the cached keys did not verify last caused a fetch.
    refetched: Mutex<Option<Instant>>,
}

impl OidcConnector {
    /// A connector for `config`.
    pub fn new(config: config::Upstream) -> Result<OidcConnector, UpstreamError> {
        let issuer = config
            .issuer
            .clone()
            .ok_or_else(|| UpstreamError::provider("configuration", "upstream.issuer: required"))?;
        Ok(OidcConnector {
            config,
            issuer,
            http: http_client()?,
            metadata: OnceCell::new(),
            keys: RwLock::new(None),
            refetched: Mutex::new(None),
        })
    }

    /// Whether `iss` is this provider's issuer (trailing slash ignored).
    pub fn is_issuer(&self, iss: &str) -> bool {
        iss.trim_end_matches('/') == self.issuer.as_str().trim_end_matches('/')
    }

    async fn metadata(&self) -> Result<&ProviderMetadata, UpstreamError> {
        self.metadata
            .get_or_try_init(|| async {
                let issuer = self.issuer.as_str().trim_end_matches('/');
                let url = format!("{issuer}/.well-known/openid-configuration");
                let metadata: ProviderMetadata =
                    fetch_json("discovery", self.http.get(url)).await?;
                // OpenID Connect Discovery §4.3: the issuer must be exactly the one we asked.
                if metadata.issuer.trim_end_matches('/') != issuer {
                    return Err(UpstreamError::provider(
                        "discovery",
                        format!("issuer is `{}`, expected `{issuer}`", metadata.issuer),
                    ));
                }
                Ok(metadata)
            })
            .await
    }

    /// The provider's authorization URL for this login.
    pub async fn authorization_url(
        &self,
        secrets: &LoginSecrets,
        redirect_uri: &str,
    ) -> Result<String, UpstreamError> {
        let metadata = self.metadata().await?;
        let mut url = metadata.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &secrets.state)
            .append_pair("nonce", &secrets.nonce)
            .append_pair("code_challenge", &secrets.challenge())
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    async fn fetch_keys(&self, metadata: &ProviderMetadata) -> Result<ProviderKeys, UpstreamError> {
        let jwks: mcpgw_core::jwk::Jwks =
            fetch_json("jwks", self.http.get(metadata.jwks_uri.clone())).await?;
        let (keys, errors) = ProviderKeys::new(jwks);
        for error in errors {
            tracing::warn!(%error, "unusable key in the OpenID provider's JWKS");
        }
        *self.keys.write().await = Some(keys.clone());
        Ok(keys)
    }

    /// Whether a fetch caused by an unverified ID token may happen now (and notes it if so).
    fn may_refetch(&self, now: Instant) -> bool {
        let mut last = match self.refetched.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.is_some_and(|t| now.duration_since(t) < REFETCH_MIN_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Verifies the ID token's signature. When cached keys do not verify it (its `kid` is
    /// unknown, or the key under its `kid` was replaced), fetches the JWKS again, rate-limited.
    async fn verify_signature(
        &self,
        metadata: &ProviderMetadata,
        id_token: &str,
    ) -> Result<Vec<u8>, UpstreamError> {
        let cached = self.keys.read().await.clone();
        let (keys, fresh) = match cached {
            Some(keys) => (keys, false),
            None => (self.fetch_keys(metadata).await?, true),
        };
        match jws::verify(id_token, &keys) {
            Err(e @ (JwsError::UnknownKeyId(_) | JwsError::BadSignature))
                if !fresh && self.may_refetch(Instant::now()) =>
            {
                tracing::info!(error = %e, "the cached OpenID provider keys do not verify an ID token; fetching its JWKS again");
                let keys = self.fetch_keys(metadata).await?;
                jws::verify(id_token, &keys)
            }
            other => other,
        }
        .map_err(|e| UpstreamError::IdToken(e.to_string()))
    }

    fn check_id_token(
        &self,
        metadata: &ProviderMetadata,
        claims: &IdTokenClaims,
        secrets: &LoginSecrets,
        now: u64,
    ) -> Result<(), UpstreamError> {
        let fail = |m: &str| Err(UpstreamError::IdToken(m.into()));
        if claims.iss != metadata.issuer {
            return fail("wrong issuer");
        }
        let aud = claims.aud.as_slice();
        if !aud.contains(&self.config.client_id) {
            return fail("not issued to this client");
        }
        // OpenID Connect Core §3.1.3.7 (4, 5): with several audiences `azp` must name us.
        if (aud.len() > 1 || claims.azp.is_some())
            && claims.azp.as_deref() != Some(&self.config.client_id)
        {
            return fail("authorized party is another client");
        }
        if now >= claims.exp.saturating_add(LEEWAY_SECS) {
            return fail("expired");
        }
        if claims.iat > now.saturating_add(LEEWAY_SECS) {
            return fail("issued in the future");
        }
        let nonce_ok = claims.nonce.as_deref().is_some_and(|n| {
            subtle::ConstantTimeEq::ct_eq(n.as_bytes(), secrets.nonce.as_bytes()).into()
        });
        if !nonce_ok {
            return fail("nonce does not match the login");
        }
        Ok(())
    }

    /// Exchanges the code, verifies the ID token, reads userinfo and returns the user.
    pub async fn finish(
        &self,
        code: &str,
        secrets: &LoginSecrets,
        redirect_uri: &str,
    ) -> Result<User, UpstreamError> {
        let metadata = self.metadata().await?;
        // RFC 6749 §2.3.1: client_secret_basic form-encodes id and secret before base64.
        // A public client (no secret) names itself in the form instead (RFC 6749 §3.2.1).
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &secrets.verifier),
        ];
        let mut request = self
            .http
            .post(metadata.token_endpoint.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        match &self.config.client_secret {
            Some(secret) => {
                request = request.basic_auth(
                    encode(&self.config.client_id),
                    Some(encode(secret.expose())),
                );
            }
            None => form.push(("client_id", &self.config.client_id)),
        }
        let request = request.form(&form);
        let tokens: TokenResponse = fetch_json("token", request).await?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| UpstreamError::IdToken("the token response has none".into()))?;
        let payload = self.verify_signature(metadata, &id_token).await?;
        let claims: IdTokenClaims = serde_json::from_slice(&payload)
            .map_err(|e| UpstreamError::IdToken(format!("claims: {e}")))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.check_id_token(metadata, &claims, secrets, now)?;

        let userinfo = match &metadata.userinfo_endpoint {
            Some(endpoint) => {
                let info: Map<String, Value> = fetch_json(
                    "userinfo",
                    self.http
                        .get(endpoint.clone())
                        .bearer_auth(&tokens.access_token),
                )
                .await?;
                if info.get("sub").and_then(Value::as_str) != Some(claims.sub.as_str()) {
                    return Err(UpstreamError::provider(
                        "userinfo",
                        "`sub` differs from the ID token's",
                    ));
                }
                info
            }
            None => Map::new(),
        };
        Ok(self.user(&claims, &userinfo))
    }

    /// Builds the user from userinfo, falling back to the ID token's claims.
    fn user(&self, claims: &IdTokenClaims, userinfo: &Map<String, Value>) -> User {
        let string = |name: &str| {
            userinfo
                .get(name)
                .or_else(|| claims.other.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let groups = match userinfo
            .get(&self.config.groups_claim)
            .or_else(|| claims.other.get(&self.config.groups_claim))
        {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        User {
            sub: format!("oidc:{}", claims.sub),
            login: string("preferred_username"),
            name: string("name"),
            email: string("email").filter(|_| {
                userinfo
                    .get("email_verified")
                    .or_else(|| claims.other.get("email_verified"))
                    .and_then(Value::as_bool)
                    == Some(true)
            }),
            groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamKind;
    use serde_json::json;

    fn connector() -> OidcConnector {
        let url = |s: &str| Url::parse(s).unwrap();
        OidcConnector::new(config::Upstream {
            kind: UpstreamKind::Oidc,
            issuer: Some(url("https://op.example")),
            client_id: "gateway".into(),
            client_secret: None,
            scopes: vec!["openid".into()],
            groups_claim: "groups".into(),
            github_url: url("https://github.com"),
            github_api_url: url("https://api.github.com"),
        })
        .unwrap()
    }

    fn metadata() -> ProviderMetadata {
        let url = |s: &str| Url::parse(s).unwrap();
        ProviderMetadata {
            issuer: "https://op.example".into(),
            authorization_endpoint: url("https://op.example/auth"),
            token_endpoint: url("https://op.example/token"),
            jwks_uri: url("https://op.example/jwks"),
            userinfo_endpoint: None,
        }
    }

    fn secrets() -> LoginSecrets {
        LoginSecrets {
            state: "s".into(),
            nonce: "the-nonce".into(),
            verifier: "v".into(),
        }
    }

    fn claims(patch: serde_json::Value) -> IdTokenClaims {
        let mut base = serde_json::json!({
            "iss": "https://op.example", "sub": "alice", "aud": "gateway",
            "exp": 2000, "iat": 1000, "nonce": "the-nonce",
            "preferred_username": "alice", "groups": ["engineering"],
        });
        if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                b.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn id_token_claims_are_checked() {
        let c = connector();
        let (m, s) = (metadata(), secrets());
        assert!(
            c.check_id_token(&m, &claims(serde_json::json!({})), &s, 1500)
                .is_ok()
        );
        let refused = [
            serde_json::json!({"iss": "https://evil.example"}),
            serde_json::json!({"aud": "another-client"}),
            serde_json::json!({"aud": ["gateway", "another-client"]}),
            serde_json::json!({"azp": "another-client"}),
            serde_json::json!({"nonce": "replayed"}),
            serde_json::json!({"nonce": null}),
            serde_json::json!({"exp": 1000}),
            serde_json::json!({"iat": 9000}),
        ];
        for patch in refused {
            let result = c.check_id_token(&m, &claims(patch.clone()), &s, 1500);
            assert!(
                matches!(result, Err(UpstreamError::IdToken(_))),
                "{patch} accepted"
            );
        }
        let both = serde_json::json!({"aud": ["gateway", "x"], "azp": "gateway"});
        assert!(c.check_id_token(&m, &claims(both), &s, 1500).is_ok());
    }

    #[test]
    fn user_comes_from_userinfo_with_id_token_fallback() {
        let c = connector();
        let id = claims(serde_json::json!({
            "email": "a@id.example", "email_verified": true, "preferred_username": null
        }));
        let mut info = Map::new();
        info.insert("sub".into(), "alice".into());
        info.insert("groups".into(), serde_json::json!(["eng", 7, "ops"]));
        let user = c.user(&id, &info);
        assert_eq!(user.sub, "oidc:alice");
        assert_eq!(user.login, None, "no preferred_username: no login");
        assert_eq!(user.email.as_deref(), Some("a@id.example"));
        assert_eq!(user.groups, vec!["eng", "ops"]);
        assert!(c.is_issuer("https://op.example/"));
        assert!(!c.is_issuer("https://op.example.evil"));
    }

    /// Neither an email nor a `sub` ever stands in for the login, and an email counts only
    /// when the provider says it is verified (a user could otherwise name themselves `admin`).
    #[test]
    fn login_is_preferred_username_only_and_email_needs_verification() {
        let c = connector();
        for verified in [json!(false), json!("true"), Value::Null] {
            let id = claims(json!({
                "email": "admin", "email_verified": verified, "preferred_username": null
            }));
            let user = c.user(&id, &Map::new());
            assert_eq!((user.login, user.email), (None, None), "{verified}");
        }
        let id =
            claims(json!({"preferred_username": "carol", "email": "c@x", "email_verified": true}));
        let user = c.user(&id, &Map::new());
        assert_eq!(user.login.as_deref(), Some("carol"));
        assert_eq!(user.email.as_deref(), Some("c@x"));
    }
}
