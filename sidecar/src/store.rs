//! All state in Redis, with the seeds' key layout under a configurable prefix:
//!
//! | key | value | TTL |
//! |---|---|---|
//! | `oauth:client:{client_id}` | [`Client`] (secrets hashed) | client lifetime |
//! | `oauth:state:{sha256(state)}` | a pending login (the login module's type) | state lifetime |
//! | `oauth:code:{sha256(code)}` | [`CodeGrant`], taken once with GETDEL | code lifetime |
//! | `oauth:code_used:{sha256(code)}` | the family a redeemed code started (replay detection) | refresh lifetime |
//! | `oauth:token:{jti}` | [`TokenRecord`]: an access token that is still valid | access-token lifetime |
//! | `oauth:refresh:{sha256(token)}` | [`RefreshRecord`], taken once with GETDEL | refresh lifetime |
//! | `oauth:refresh_used:{sha256(token)}` | the family of a rotated refresh token (reuse detection) | refresh lifetime |
//! | `oauth:revoked` | sorted set of revoked access tokens' `jti`s, score = the token's `exp` (the edge's revocation feed, `GET /revoked`) | none: members leave [`REVOKED_GRACE_SECS`] after their `exp`, pruned on every write and read |
//! | `oauth:family:{fid}` | set of the keys a grant family issued (`token:…`, `refresh:…`) | refresh lifetime |
//! | `oauth:client_tokens:{client_id}` | set of the client's families (revocation on delete) | refresh lifetime |
//! | `oauth:user_tokens:{sub}` | set of the user's families | refresh lifetime |
//! | `oauth:ratelimit:{kind}:{addr}` | counter | the window |
//! | `oauth:keys` | the signing key ring (when no keys directory is configured) | none: keys outlive every token |
//!
//! Codes, refresh tokens, client secrets and registration access tokens are stored only as
//! SHA-256 hashes. A grant family is everything issued from one authorization code; revoking it
//! deletes every key in its set and lists its live access tokens in `oauth:revoked`, which the
//! edge fetches so it refuses them before they expire. The store knows nothing of HTTP; handlers
//! decide.

use std::time::Duration;

use mcpgw_core::auth::DEFAULT_LEEWAY_SECS;
use mcpgw_core::claims::Scopes;
use mcpgw_core::revocation::RevokedJti;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A Redis failure (connection lost, timeout) or a stored value that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored value does not parse (written by an incompatible version).
    #[error("stored value under `{0}` does not parse")]
    Corrupt(String),
}

/// How a client authenticates at the token endpoint (RFC 7591 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    /// A public client (PKCE only).
    None,
    /// HTTP Basic with the client secret.
    ClientSecretBasic,
    /// `client_secret` in the form body.
    ClientSecretPost,
}

/// A registered client (RFC 7591 metadata plus what the server issued). Secrets are hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The client id.
    pub client_id: String,
    /// SHA-256 (hex) of the client secret; confidential clients only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_hash: Option<String>,
    /// SHA-256 (hex) of the registration access token (RFC 7592); absent for metadata-document
    /// clients, which cannot be managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_access_token_hash: Option<String>,
    /// How the client authenticates at the token endpoint.
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// `authorization_code` and/or `refresh_token`.
    pub grant_types: Vec<String>,
    /// `code`.
    pub response_types: Vec<String>,
    /// Human-readable name (shown on the consent page, escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// Client home page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    /// Logo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    /// Scopes the client may request (space-separated); absent: any supported scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Contacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<String>,
    /// Terms of service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    /// Privacy policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    /// Software id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    /// Software version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    /// When the client was registered (seconds since the epoch).
    pub client_id_issued_at: u64,
    /// When the secret expires (0: never / no secret).
    pub client_secret_expires_at: u64,
}

impl Client {
    /// Whether `redirect_uri` is one of the registered ones (exact string match, OAuth 2.1 §2.3.1).
    pub fn has_redirect_uri(&self, redirect_uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == redirect_uri)
    }

    /// Whether this client is public (no secret).
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == TokenEndpointAuthMethod::None
    }
}

/// A user as the upstream identity provider described them at login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id: `github:<numeric id>` or `oidc:<sub>`.
    pub sub: String,
    /// Login name: GitHub's login, or the OpenID provider's `preferred_username` (never another
    /// claim in its place: an email or a `sub` could read as someone's login).
    #[serde(default)]
    pub login: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Email, only as verified by the provider (OIDC `email_verified`, GitHub's verified
    /// addresses).
    #[serde(default)]
    pub email: Option<String>,
    /// GitHub `org` and `org/team`, or OIDC groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What an authorization code stands for; bound to client, redirect URI, PKCE challenge (S256)
/// and resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    /// The client the code was issued to.
    pub client_id: String,
    /// The redirect URI of the authorization request (or the client's only registered one).
    pub redirect_uri: String,
    /// Whether the authorization request named it (then /token must repeat it).
    pub redirect_uri_sent: bool,
    /// The PKCE S256 code challenge (base64url of SHA-256 of the verifier).
    pub code_challenge: String,
    /// The canonical URL of the resource (the token audience).
    pub resource: String,
    /// Granted scopes.
    pub scope: Scopes,
    /// The user who consented.
    pub user: User,
    /// Issue time, seconds since the epoch.
    pub issued_at: u64,
}

/// A live access token (its existence means "not revoked").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Client.
    pub client_id: String,
    /// User.
    pub sub: String,
    /// The grant family.
    pub family: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// A live refresh token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// The grant family.
    pub family: String,
    /// Client it is bound to.
    pub client_id: String,
    /// Audience of the access tokens it yields.
    pub resource: String,
    /// Scopes.
    pub scope: Scopes,
    /// The user (the allow-list is checked again on every refresh).
    pub user: User,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// A redeemed code or rotated refresh token, kept so that its replay can revoke what it started:
/// its grant family and the client it was issued to (only that client's replay revokes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Used {
    /// The grant family.
    pub family: String,
    /// The client the code or token was issued to.
    pub client_id: String,
}

/// What a refresh-token lookup found.
#[derive(Debug)]
pub enum RefreshLookup {
    /// A live token; it is now consumed.
    Live(RefreshRecord),
    /// A token already rotated: reuse; its family is given so it can be revoked.
    Reused(Used),
    /// Unknown or expired.
    Unknown,
}

/// SHA-256 in lowercase hex: how secrets, codes and tokens are stored and indexed.
pub fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How long after its `exp` a revoked `jti` stays in `oauth:revoked`: verifiers accept a token
/// that long after `exp` (core's default clock leeway), so the edge must keep refusing it as long.
pub const REVOKED_GRACE_SECS: u64 = DEFAULT_LEEWAY_SECS;

/// How long connecting to Redis may take (it is local or in the same cluster).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(150);
/// How long one Redis command may take before it fails.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// The Redis store. Cheap to clone (one multiplexed connection that reconnects by itself).
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Store {
    /// Connects to `url`; every key starts with `prefix`. While Redis is down or hung an operation
    /// fails within [`CONNECT_TIMEOUT`] (one connection attempt, no retry: the next operation
    /// tries again) or [`RESPONSE_TIMEOUT`], so a request answers 503 within half a second; the
    /// connection is re-established once Redis is back.
    pub async fn connect(url: &str, prefix: &str) -> Result<Store, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Store {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// The full key for `oauth:{kind}:{id}`.
    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}oauth:{kind}:{id}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// `PING`: whether Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Stores `value` as JSON under `oauth:{kind}:{id}` for `ttl`.
    pub async fn put_json<T: Serialize>(
        &self,
        kind: &str,
        id: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.key(kind, id);
        let json = serde_json::to_string(value).map_err(|_| StoreError::Corrupt(key.clone()))?;
        let _: () = self.conn().set_ex(key, json, secs(ttl)).await?;
        Ok(())
    }

    fn parse<T: DeserializeOwned>(
        key: String,
        raw: Option<String>,
    ) -> Result<Option<T>, StoreError> {
        raw.map(|s| serde_json::from_str(&s).map_err(|_| StoreError::Corrupt(key)))
            .transpose()
    }

    /// Reads the JSON value under `oauth:{kind}:{id}`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let key = self.key(kind, id);
        let raw: Option<String> = self.conn().get(&key).await?;
        Self::parse(key, raw)
    }

    /// Reads and deletes, atomically (GETDEL): a single-use value.
    pub async fn take_json<T: DeserializeOwned>(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let key = self.key(kind, id);
        let raw: Option<String> = redis::cmd("GETDEL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await?;
        Self::parse(key, raw)
    }

    /// Deletes `oauth:{kind}:{id}`; whether it existed.
    pub async fn delete(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        let n: u64 = self.conn().del(self.key(kind, id)).await?;
        Ok(n > 0)
    }

    /// Stores a client for `ttl` (metadata-document clients: their cache lifetime).
    pub async fn put_client(&self, client: &Client, ttl: Duration) -> Result<(), StoreError> {
        self.put_json("client", &client.client_id, client, ttl)
            .await
    }

    /// The client with this id, if registered (or cached from its metadata document).
    pub async fn get_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        self.get_json("client", client_id).await
    }

    /// Stores a pending login under the hash of its `state` value, single-use.
    pub async fn put_state<T: Serialize>(
        &self,
        state: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.put_json("state", &hash(state), value, ttl).await
    }

    /// Reads the pending login for `state` without consuming it.
    pub async fn get_state<T: DeserializeOwned>(
        &self,
        state: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get_json("state", &hash(state)).await
    }

    /// Takes (reads and deletes) the pending login for `state`.
    pub async fn take_state<T: DeserializeOwned>(
        &self,
        state: &str,
    ) -> Result<Option<T>, StoreError> {
        self.take_json("state", &hash(state)).await
    }

    /// Stores an authorization code (hashed) for `ttl`.
    pub async fn put_code(
        &self,
        code: &str,
        grant: &CodeGrant,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.put_json("code", &hash(code), grant, ttl).await
    }

    /// Takes an authorization code: the first call gets the grant, every later one `None`.
    pub async fn take_code(&self, code: &str) -> Result<Option<CodeGrant>, StoreError> {
        self.take_json("code", &hash(code)).await
    }

    /// Reads an authorization code without consuming it.
    pub async fn get_code(&self, code: &str) -> Result<Option<CodeGrant>, StoreError> {
        self.get_json("code", &hash(code)).await
    }

    /// Records that `code` was redeemed and what it started (so its client's replay revokes it).
    pub async fn mark_code_used(
        &self,
        code: &str,
        used: &Used,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.put_json("code_used", &hash(code), used, ttl).await
    }

    /// What a redeemed code started, if `code` was redeemed before.
    pub async fn code_used(&self, code: &str) -> Result<Option<Used>, StoreError> {
        self.get_json("code_used", &hash(code)).await
    }

    async fn index(
        &self,
        kind: &str,
        id: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.key(kind, id);
        let _: () = redis::pipe()
            .sadd(&key, member)
            .ignore()
            .expire(&key, secs(ttl) as i64)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Starts a grant family: indexes it under its client and user.
    pub async fn start_family(
        &self,
        family: &str,
        client_id: &str,
        sub: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.index("client_tokens", client_id, family, ttl).await?;
        self.index("user_tokens", sub, family, ttl).await
    }

    /// Whether the family still exists (not revoked, not expired).
    pub async fn family_alive(&self, family: &str) -> Result<bool, StoreError> {
        Ok(self.conn().exists(self.key("family", family)).await?)
    }

    /// Records a live access token in its family.
    pub async fn put_token(
        &self,
        jti: &str,
        record: &TokenRecord,
        ttl: Duration,
        family_ttl: Duration,
    ) -> Result<(), StoreError> {
        self.put_json("token", jti, record, ttl).await?;
        self.index(
            "family",
            &record.family,
            &format!("token:{jti}"),
            family_ttl,
        )
        .await
    }

    /// Whether the access token `jti` is still live.
    pub async fn token_live(&self, jti: &str) -> Result<bool, StoreError> {
        Ok(self.conn().exists(self.key("token", jti)).await?)
    }

    /// Stores a refresh token (hashed) in its family.
    pub async fn put_refresh(
        &self,
        token: &str,
        record: &RefreshRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let h = hash(token);
        self.put_json("refresh", &h, record, ttl).await?;
        self.index("family", &record.family, &format!("refresh:{h}"), ttl)
            .await
    }

    /// Reads a refresh token without consuming it (introspection, revocation).
    pub async fn get_refresh(&self, token: &str) -> Result<Option<RefreshRecord>, StoreError> {
        self.get_json("refresh", &hash(token)).await
    }

    /// What a rotated refresh token belonged to, if `token` was rotated before.
    pub async fn refresh_used(&self, token: &str) -> Result<Option<Used>, StoreError> {
        self.get_json("refresh_used", &hash(token)).await
    }

    /// Consumes a refresh token for rotation. A token that was rotated before reports its family
    /// ([`RefreshLookup::Reused`]).
    pub async fn take_refresh(
        &self,
        token: &str,
        used_ttl: Duration,
    ) -> Result<RefreshLookup, StoreError> {
        let h = hash(token);
        match self.take_json::<RefreshRecord>("refresh", &h).await? {
            Some(r) => {
                let used = Used {
                    family: r.family.clone(),
                    client_id: r.client_id.clone(),
                };
                self.put_json("refresh_used", &h, &used, used_ttl).await?;
                Ok(RefreshLookup::Live(r))
            }
            None => Ok(match self.refresh_used(token).await? {
                Some(used) => RefreshLookup::Reused(used),
                None => RefreshLookup::Unknown,
            }),
        }
    }

    /// The key of the revocation feed's sorted set, `oauth:revoked`.
    pub fn revoked_key(&self) -> String {
        format!("{}oauth:revoked", self.prefix)
    }

    /// Deletes `keys` and lists `tokens` in `oauth:revoked`, in one transaction, pruning the
    /// members whose `exp` is past the grace.
    async fn revoke_keys(
        &self,
        keys: Vec<String>,
        tokens: &[RevokedJti],
    ) -> Result<(), StoreError> {
        let revoked = self.revoked_key();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !keys.is_empty() {
            pipe.del(keys).ignore();
        }
        if !tokens.is_empty() {
            let members: Vec<(u64, &str)> =
                tokens.iter().map(|t| (t.exp, t.jti.as_str())).collect();
            pipe.zadd_multiple(&revoked, &members).ignore();
        }
        pipe.zrembyscore(
            &revoked,
            "-inf",
            crate::now().saturating_sub(REVOKED_GRACE_SECS),
        )
        .ignore();
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Revokes the access token `jti`, which expires at `exp`: it is no longer live, and the edge's
    /// revocation feed lists it until then.
    pub async fn revoke_token(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let token = RevokedJti {
            jti: jti.to_owned(),
            exp,
        };
        self.revoke_keys(vec![self.key("token", jti)], &[token])
            .await
    }

    /// Lists `tokens` in `oauth:revoked` again (what a Redis that lost its data gets back).
    pub async fn relist_revoked(&self, tokens: &[RevokedJti]) -> Result<(), StoreError> {
        self.revoke_keys(Vec::new(), tokens).await
    }

    /// The revocation feed: the revoked access tokens whose `exp` is not past the grace (the
    /// others are pruned here).
    pub async fn revoked(&self) -> Result<Vec<RevokedJti>, StoreError> {
        let key = self.revoked_key();
        let (listed,): (Vec<(String, u64)>,) = redis::pipe()
            .atomic()
            .zrembyscore(
                &key,
                "-inf",
                crate::now().saturating_sub(REVOKED_GRACE_SECS),
            )
            .ignore()
            .zrange_withscores(&key, 0, -1)
            .query_async(&mut self.conn())
            .await?;
        Ok(listed
            .into_iter()
            .map(|(jti, exp)| RevokedJti { jti, exp })
            .collect())
    }

    /// Whether `oauth:revoked` lists the access token `jti`.
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let score: Option<u64> = self.conn().zscore(self.revoked_key(), jti).await?;
        Ok(score.is_some())
    }

    /// Revokes a whole family: every access and refresh token it issued. Its live access tokens
    /// go into the revocation feed.
    pub async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        let fkey = self.key("family", family);
        let members: Vec<String> = self.conn().smembers(&fkey).await?;
        let mut keys: Vec<String> = members
            .iter()
            .filter_map(|m| m.split_once(':'))
            .map(|(kind, id)| self.key(kind, id))
            .collect();
        // The family's access tokens, read in one round trip. Absent: expired, or revoked
        // already (then listed already).
        let jtis: Vec<&str> = members
            .iter()
            .filter_map(|m| m.strip_prefix("token:"))
            .collect();
        let mut tokens = Vec::new();
        if !jtis.is_empty() {
            let token_keys: Vec<String> = jtis.iter().map(|jti| self.key("token", jti)).collect();
            let raws: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&token_keys)
                .query_async(&mut self.conn())
                .await?;
            for ((jti, key), raw) in jtis.into_iter().zip(token_keys).zip(raws) {
                if let Some(record) = Self::parse::<TokenRecord>(key, raw)? {
                    tokens.push(RevokedJti {
                        jti: jti.to_owned(),
                        exp: record.exp,
                    });
                }
            }
        }
        keys.push(fkey);
        self.revoke_keys(keys, &tokens).await
    }

    /// Revokes every family of `client_id` (through the index, no scan).
    pub async fn revoke_client_tokens(&self, client_id: &str) -> Result<usize, StoreError> {
        let key = self.key("client_tokens", client_id);
        let families: Vec<String> = self.conn().smembers(&key).await?;
        for f in &families {
            self.revoke_family(f).await?;
        }
        let _: u64 = self.conn().del(key).await?;
        Ok(families.len())
    }

    /// Increments the counter `oauth:ratelimit:{kind}:{id}` in a window; returns the new count and
    /// the seconds left in the window.
    pub async fn hit(
        &self,
        kind: &str,
        id: &str,
        window: Duration,
    ) -> Result<(u64, u64), StoreError> {
        let key = self.key("ratelimit", &format!("{kind}:{id}"));
        let (n, ttl): (u64, i64) = redis::pipe()
            .incr(&key, 1u64)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(secs(window))
            .arg("NX")
            .ignore()
            .ttl(&key)
            .query_async(&mut self.conn())
            .await?;
        Ok((n, u64::try_from(ttl).unwrap_or(0)))
    }

    /// Reads a raw string value (the key ring).
    pub async fn get_raw(&self, kind: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .get(format!("{}oauth:{kind}", self.prefix))
            .await?)
    }

    /// Writes a raw string value without expiry (the key ring: keys outlive every token).
    pub async fn set_raw(&self, kind: &str, value: &str) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .set(format!("{}oauth:{kind}", self.prefix), value)
            .await?;
        Ok(())
    }

    /// Writes a raw value only if absent (first instance to start creates the key ring).
    pub async fn set_raw_nx(&self, kind: &str, value: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .set_nx(format!("{}oauth:{kind}", self.prefix), value)
            .await?)
    }
}
