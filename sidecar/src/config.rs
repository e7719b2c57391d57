//! The sidecar's configuration: one TOML file (`--config`) plus `MCPGW_*` environment overrides,
//! in three stages: [`RawConfig`] (serde, unknown keys refused) → environment overrides applied
//! in one place ([`RawConfig::apply_env`]) → [`Config`] (validated; every problem named by its
//! field path). Secrets (Redis URL, upstream client secret, initial access token) come from the
//! file, from a `*_file` path, or from the environment; their values never appear in messages or
//! `Debug` output.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcpgw_core::jwk::Algorithm;
use mcpgw_core::policy::{Policy, RawPolicy};
use mcpgw_core::resource::{Resource, Resources};
use serde::Deserialize;
use url::Url;

use crate::store::User;

/// A secret string whose `Debug`/`Display` never show the value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value; only for the place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(**redacted**)")
    }
}

/// A duration written as text (`"60s"`, `"10m"`, `"30d"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextDuration(pub Duration);

impl<'de> Deserialize<'de> for TextDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(TextDuration)
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration: {e}")))
    }
}

/// The configuration file as written (snake_case keys, unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The issuer URL (`iss`), the public origin clients use, e.g. `https://mcp.example.com`.
    pub issuer: Option<String>,
    /// Address to listen on; default [`default_listen`].
    pub listen: Option<String>,
    /// Redis URL (may carry a password: prefer `redis_url_file` or `MCPGW_REDIS_URL`).
    pub redis_url: Option<Secret>,
    /// A file holding the Redis URL.
    pub redis_url_file: Option<PathBuf>,
    /// Prefix of every Redis key (several deployments can share one Redis); default empty.
    pub key_prefix: Option<String>,
    /// Log format: `json` (default) or `text`.
    pub log_format: Option<LogFormat>,
    /// Signing algorithm of new keys: `ES256` (default), `EdDSA` or `RS256`.
    pub signing_alg: Option<String>,
    /// Directory holding the signing keys (`keys.json`); unset: the keys live in Redis.
    pub signing_keys_dir: Option<PathBuf>,
    /// Rotate the signing key when it is older than this (e.g. `"30d"`); unset: by command only.
    pub key_rotation: Option<TextDuration>,
    /// Token and code lifetimes.
    #[serde(default)]
    pub tokens: RawTokens,
    /// Dynamic client registration.
    #[serde(default)]
    pub registration: RawRegistration,
    /// The upstream identity provider users log in with.
    pub upstream: Option<RawUpstream>,
    /// Who may log in.
    #[serde(default)]
    pub allow: AllowList,
    /// Client ID Metadata Documents (client_id as an https URL).
    #[serde(default)]
    pub client_metadata: RawClientMetadata,
    /// The protected MCP resources (core's type; the canonical URL is the token audience).
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// Token introspection (RFC 7662).
    #[serde(default)]
    pub introspection: RawIntrospection,
    /// Rate limits of `/register`, `/authorize` and `/token`.
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    /// The MCP authorization policy `/verify` enforces after the token (core's `RawPolicy`, the
    /// policy filter's `servers`, `rules`, `limits`, `other_paths`); unset: `/verify` only
    /// authenticates.
    pub policy: Option<RawPolicy>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (default; Kubernetes).
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// `[tokens]`: lifetimes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    /// Access-token lifetime; default 10 minutes.
    pub access_token_lifetime: Option<TextDuration>,
    /// Refresh-token lifetime (each rotation starts a new one); default 30 days.
    pub refresh_token_lifetime: Option<TextDuration>,
    /// Authorization-code lifetime; default 60 seconds.
    pub code_lifetime: Option<TextDuration>,
    /// Lifetime of a pending login (`oauth:state:*`); default 10 minutes.
    pub state_lifetime: Option<TextDuration>,
    /// How long a registered client lives without being used; default 90 days.
    pub client_lifetime: Option<TextDuration>,
}

/// `[introspection]`: who may introspect which tokens (RFC 7662).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// Client ids of resource servers that may introspect any client's tokens; every other
    /// confidential client learns only about tokens issued to itself. Default none.
    #[serde(default)]
    pub resource_servers: Vec<String>,
}

/// `[rate_limit]`: requests to `/register`, `/authorize` and `/token` per window.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Per client address and endpoint; default 120; 0 turns it off.
    pub per_address: Option<u32>,
    /// Per client id on `/authorize` and `/token`; default 60; 0 turns it off.
    pub per_client: Option<u32>,
    /// The window; default 1 minute.
    pub window: Option<TextDuration>,
    /// Take the address from the last `X-Forwarded-For` entry (behind Envoy/Traefik); default
    /// true.
    pub trust_forwarded_for: Option<bool>,
}

/// Validated rate limits (0: off).
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests per client address, endpoint and window.
    pub per_address: u32,
    /// Requests per client id, endpoint and window.
    pub per_client: u32,
    /// The window.
    pub window: Duration,
    /// Use the last `X-Forwarded-For` entry as the address.
    pub trust_forwarded_for: bool,
}

/// `[registration]`: who may register clients (RFC 7591).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistration {
    /// `open`, `rate_limited` (default) or `initial_access_token`.
    pub mode: Option<RegistrationMode>,
    /// With `rate_limited`: registrations allowed per client address per window; default 20.
    pub rate_limit: Option<u32>,
    /// With `rate_limited`: the window; default 1 hour.
    pub rate_window: Option<TextDuration>,
    /// With `initial_access_token`: the bearer token registration requires.
    pub initial_access_token: Option<Secret>,
    /// A file holding the initial access token.
    pub initial_access_token_file: Option<PathBuf>,
    /// Take the client address for rate limiting from the last `X-Forwarded-For` entry (set this
    /// when the sidecar sits behind Envoy/Traefik); default true.
    pub trust_forwarded_for: Option<bool>,
}

/// How registration is guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Warning: anyone may register any number of clients.
    Open,
    /// Anyone may register, a limited number per address and window.
    RateLimited,
    /// Registration needs `Authorization: Bearer <initial access token>` (RFC 7591 §3).
    InitialAccessToken,
}

/// `[upstream]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// `oidc` or `github`.
    pub kind: UpstreamKind,
    /// OIDC: the provider's issuer URL (discovery at `/.well-known/openid-configuration`).
    pub issuer: Option<String>,
    /// The OAuth client id registered at the upstream provider.
    pub client_id: Option<String>,
    /// The upstream client secret (prefer `client_secret_file` or `MCPGW_UPSTREAM_CLIENT_SECRET`).
    pub client_secret: Option<Secret>,
    /// A file holding the upstream client secret.
    pub client_secret_file: Option<PathBuf>,
    /// Scopes requested upstream; default `openid profile email` (OIDC) or
    /// `read:user user:email read:org` (GitHub).
    pub scopes: Option<Vec<String>>,
    /// OIDC: the ID-token/userinfo claim carrying groups; default `groups`.
    pub groups_claim: Option<String>,
    /// GitHub: the web origin (authorize, access token); default `https://github.com`.
    pub github_url: Option<String>,
    /// GitHub: the API origin; default `https://api.github.com`.
    pub github_api_url: Option<String>,
}

/// Which upstream identity provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// Any OpenID Connect provider.
    Oidc,
    /// GitHub (an OAuth App).
    Github,
}

/// `[allow]`: who may log in and keep refreshing tokens. A user is allowed when `everyone` is
/// set, or their login is in `users`, or one of their groups (GitHub `org` / `org/team`, OIDC
/// groups) is in `orgs` or `groups`. All empty and `everyone` unset is a configuration error.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowList {
    /// Warning: any user the upstream provider authenticates may log in.
    #[serde(default)]
    pub everyone: bool,
    /// Allowed logins (case-insensitive).
    #[serde(default)]
    pub users: Vec<String>,
    /// Allowed GitHub organisations (`org`) and teams (`org/team`), case-insensitive.
    #[serde(default)]
    pub orgs: Vec<String>,
    /// Allowed OIDC groups (exact).
    #[serde(default)]
    pub groups: Vec<String>,
}

impl AllowList {
    /// Whether `user` may log in (or refresh).
    pub fn permits(&self, user: &User) -> bool {
        if self.everyone {
            return true;
        }
        let ci = |list: &[String], v: &str| list.iter().any(|x| x.eq_ignore_ascii_case(v));
        user.login.as_deref().is_some_and(|l| ci(&self.users, l))
            || user
                .groups
                .iter()
                .any(|g| ci(&self.orgs, g) || self.groups.iter().any(|x| x == g))
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.orgs.is_empty() && self.groups.is_empty()
    }
}

/// `[client_metadata]`: Client ID Metadata Documents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientMetadata {
    /// Accept https URLs as `client_id`; default true.
    pub enabled: Option<bool>,
    /// Warning: allow fetching documents from private and loopback addresses (tests only).
    pub allow_private_addresses: Option<bool>,
    /// Largest document accepted, bytes; default 5120.
    pub max_bytes: Option<usize>,
    /// Fetch timeout; default 5 seconds.
    pub timeout: Option<TextDuration>,
    /// How long a fetched document is cached; default 10 minutes.
    pub cache_ttl: Option<TextDuration>,
}

/// Default listen address.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8090))
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Issuer URL, without a trailing slash.
    pub issuer: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Redis URL.
    pub redis_url: Secret,
    /// Redis key prefix.
    pub key_prefix: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Algorithm of new signing keys.
    pub signing_alg: Algorithm,
    /// Keys directory (unset: Redis).
    pub signing_keys_dir: Option<PathBuf>,
    /// Scheduled rotation interval.
    pub key_rotation: Option<Duration>,
    /// Lifetimes.
    pub tokens: Lifetimes,
    /// Registration policy.
    pub registration: Registration,
    /// The upstream provider (None only in configurations without login, e.g. `rotate-keys`).
    pub upstream: Option<Upstream>,
    /// Who may log in.
    pub allow: AllowList,
    /// Client ID Metadata Documents.
    pub client_metadata: ClientMetadataConfig,
    /// The protected resources.
    pub resources: Resources,
    /// Clients that may introspect any client's tokens.
    pub introspection_resource_servers: Vec<String>,
    /// Rate limits of the token-less endpoints.
    pub rate_limit: RateLimit,
    /// The policy `/verify` enforces (unset: authentication only).
    pub policy: Option<Arc<Policy>>,
}

/// Validated lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Access tokens.
    pub access_token: Duration,
    /// Refresh tokens.
    pub refresh_token: Duration,
    /// Authorization codes.
    pub code: Duration,
    /// Pending logins.
    pub state: Duration,
    /// Registered clients.
    pub client: Duration,
}

/// Validated registration policy.
#[derive(Debug, Clone)]
pub enum Registration {
    /// Anyone, unlimited.
    Open,
    /// At most `limit` per address per `window`.
    RateLimited {
        /// Registrations per window.
        limit: u32,
        /// The window.
        window: Duration,
        /// Use the last `X-Forwarded-For` entry as the address.
        trust_forwarded_for: bool,
    },
    /// Bearer initial access token required.
    InitialAccessToken(Secret),
}

/// Validated upstream provider settings.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Which provider.
    pub kind: UpstreamKind,
    /// OIDC issuer (OIDC only).
    pub issuer: Option<Url>,
    /// Upstream client id.
    pub client_id: String,
    /// Upstream client secret (OIDC may use a public client with PKCE).
    pub client_secret: Option<Secret>,
    /// Scopes requested upstream.
    pub scopes: Vec<String>,
    /// OIDC groups claim.
    pub groups_claim: String,
    /// GitHub web origin.
    pub github_url: Url,
    /// GitHub API origin.
    pub github_api_url: Url,
}

/// Validated Client ID Metadata Document settings.
#[derive(Debug, Clone)]
pub struct ClientMetadataConfig {
    /// Enabled.
    pub enabled: bool,
    /// Allow private/loopback addresses.
    pub allow_private_addresses: bool,
    /// Size limit in bytes.
    pub max_bytes: usize,
    /// Fetch timeout.
    pub timeout: Duration,
    /// Cache lifetime.
    pub cache_ttl: Duration,
}

/// Everything wrong with a configuration, one line per problem, each naming its field.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

/// The environment variables read, in one place (the name of each says which field it sets).
pub const ENV_VARS: [&str; 11] = [
    "MCPGW_ISSUER",
    "MCPGW_LISTEN",
    "MCPGW_REDIS_URL",
    "MCPGW_KEY_PREFIX",
    "MCPGW_LOG_FORMAT",
    "MCPGW_SIGNING_ALG",
    "MCPGW_SIGNING_KEYS_DIR",
    "MCPGW_UPSTREAM_CLIENT_ID",
    "MCPGW_UPSTREAM_CLIENT_SECRET",
    "MCPGW_REGISTRATION_INITIAL_ACCESS_TOKEN",
    "MCPGW_REGISTRATION_MODE",
];

impl RawConfig {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(vec![e.to_string().trim().to_owned()]))
    }

    /// Applies the `MCPGW_*` overrides from `env` (a lookup such as `|k| std::env::var(k).ok()`).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        for name in ENV_VARS {
            let Some(v) = env(name) else { continue };
            match name {
                "MCPGW_ISSUER" => self.issuer = Some(v),
                "MCPGW_LISTEN" => self.listen = Some(v),
                "MCPGW_REDIS_URL" => self.redis_url = Some(Secret(v)),
                "MCPGW_KEY_PREFIX" => self.key_prefix = Some(v),
                "MCPGW_LOG_FORMAT" => match v.as_str() {
                    "json" => self.log_format = Some(LogFormat::Json),
                    "text" => self.log_format = Some(LogFormat::Text),
                    _ => errors.push(format!("{name}: must be `json` or `text`")),
                },
                "MCPGW_SIGNING_ALG" => self.signing_alg = Some(v),
                "MCPGW_SIGNING_KEYS_DIR" => self.signing_keys_dir = Some(v.into()),
                "MCPGW_UPSTREAM_CLIENT_ID" | "MCPGW_UPSTREAM_CLIENT_SECRET" => {
                    match self.upstream.as_mut() {
                        Some(u) if name == "MCPGW_UPSTREAM_CLIENT_ID" => u.client_id = Some(v),
                        Some(u) => u.client_secret = Some(Secret(v)),
                        None => errors.push(format!("{name}: set, but there is no [upstream]")),
                    }
                }
                "MCPGW_REGISTRATION_INITIAL_ACCESS_TOKEN" => {
                    self.registration.initial_access_token = Some(Secret(v));
                }
                _ => match v.as_str() {
                    "open" => self.registration.mode = Some(RegistrationMode::Open),
                    "rate_limited" => self.registration.mode = Some(RegistrationMode::RateLimited),
                    "initial_access_token" => {
                        self.registration.mode = Some(RegistrationMode::InitialAccessToken);
                    }
                    _ => errors.push(format!(
                        "{name}: must be `open`, `rate_limited` or `initial_access_token`"
                    )),
                },
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errors))
        }
    }
}

fn read_secret(
    field: &str,
    inline: Option<Secret>,
    file: Option<&Path>,
    errors: &mut Vec<String>,
) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            errors.push(format!("{field}: set both {field} and {field}_file"));
            None
        }
        (Some(s), None) => Some(s),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(s) => Some(Secret(s.trim().to_owned())),
            Err(e) => {
                errors.push(format!("{field}_file: cannot read {}: {e}", path.display()));
                None
            }
        },
        (None, None) => None,
    }
}

fn http_url(field: &str, value: &str, errors: &mut Vec<String>) -> Option<Url> {
    match Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => Some(u),
        _ => {
            errors.push(format!("{field}: must be an absolute http or https URL"));
            None
        }
    }
}

fn nonzero(
    field: &str,
    d: Option<TextDuration>,
    default: Duration,
    errors: &mut Vec<String>,
) -> Duration {
    match d {
        Some(TextDuration(d)) if d.is_zero() => {
            errors.push(format!("{field}: must be longer than zero"));
            default
        }
        Some(TextDuration(d)) => d,
        None => default,
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let issuer = match raw.issuer.as_deref() {
            None => {
                errors.push(
                    "issuer: required (the public origin, e.g. https://mcp.example.com)".into(),
                );
                String::new()
            }
            Some(i) => match http_url("issuer", i, &mut errors) {
                Some(u) if u.query().is_some() => {
                    errors.push("issuer: must not have a query".into());
                    String::new()
                }
                Some(_) => i.trim_end_matches('/').to_owned(),
                None => String::new(),
            },
        };
        let listen = match raw.listen.as_deref() {
            None => default_listen(),
            Some(l) => l.parse().unwrap_or_else(|_| {
                errors.push(format!("listen: `{l}` is not an address like 0.0.0.0:8090"));
                default_listen()
            }),
        };
        let redis_url = read_secret(
            "redis_url",
            raw.redis_url,
            raw.redis_url_file.as_deref(),
            &mut errors,
        )
        .unwrap_or_else(|| {
            errors.push("redis_url: required (or redis_url_file, or MCPGW_REDIS_URL)".into());
            Secret(String::new())
        });
        if !redis_url.0.is_empty() && redis::Client::open(redis_url.0.as_str()).is_err() {
            errors.push("redis_url: not a valid redis:// URL".into());
        }
        let signing_alg = match raw.signing_alg.as_deref() {
            None => Algorithm::ES256,
            Some(name) => match Algorithm::from_name(name) {
                Some(a @ (Algorithm::ES256 | Algorithm::EdDSA | Algorithm::RS256)) => a,
                _ => {
                    errors.push("signing_alg: must be ES256, EdDSA or RS256".into());
                    Algorithm::ES256
                }
            },
        };
        let t = raw.tokens;
        let tokens = Lifetimes {
            access_token: nonzero(
                "tokens.access_token_lifetime",
                t.access_token_lifetime,
                Duration::from_secs(600),
                &mut errors,
            ),
            refresh_token: nonzero(
                "tokens.refresh_token_lifetime",
                t.refresh_token_lifetime,
                Duration::from_secs(30 * 86400),
                &mut errors,
            ),
            code: nonzero(
                "tokens.code_lifetime",
                t.code_lifetime,
                Duration::from_secs(60),
                &mut errors,
            ),
            state: nonzero(
                "tokens.state_lifetime",
                t.state_lifetime,
                Duration::from_secs(600),
                &mut errors,
            ),
            client: nonzero(
                "tokens.client_lifetime",
                t.client_lifetime,
                Duration::from_secs(90 * 86400),
                &mut errors,
            ),
        };
        let r = raw.registration;
        let iat = read_secret(
            "registration.initial_access_token",
            r.initial_access_token,
            r.initial_access_token_file.as_deref(),
            &mut errors,
        );
        let registration = match r.mode.unwrap_or(RegistrationMode::RateLimited) {
            RegistrationMode::Open => Registration::Open,
            RegistrationMode::RateLimited => Registration::RateLimited {
                limit: match r.rate_limit {
                    Some(0) => {
                        errors.push("registration.rate_limit: must be at least 1".into());
                        1
                    }
                    Some(n) => n,
                    None => 20,
                },
                window: nonzero(
                    "registration.rate_window",
                    r.rate_window,
                    Duration::from_secs(3600),
                    &mut errors,
                ),
                trust_forwarded_for: r.trust_forwarded_for.unwrap_or(true),
            },
            RegistrationMode::InitialAccessToken => match iat {
                Some(s) if s.0.len() >= 16 => Registration::InitialAccessToken(s),
                Some(_) => {
                    errors.push(
                        "registration.initial_access_token: must be at least 16 characters".into(),
                    );
                    Registration::Open
                }
                None => {
                    errors.push("registration.initial_access_token: required with mode = \"initial_access_token\" (or MCPGW_REGISTRATION_INITIAL_ACCESS_TOKEN)".into());
                    Registration::Open
                }
            },
        };
        let upstream = raw.upstream.and_then(|u| validate_upstream(u, &mut errors));
        if upstream.is_some() && !raw.allow.everyone && raw.allow.is_empty() {
            errors.push(
                "allow: no user could log in; list users, orgs or groups, or set everyone = true"
                    .into(),
            );
        }
        let c = raw.client_metadata;
        let client_metadata = ClientMetadataConfig {
            enabled: c.enabled.unwrap_or(true),
            allow_private_addresses: c.allow_private_addresses.unwrap_or(false),
            max_bytes: c.max_bytes.unwrap_or(5120),
            timeout: nonzero(
                "client_metadata.timeout",
                c.timeout,
                Duration::from_secs(5),
                &mut errors,
            ),
            cache_ttl: nonzero(
                "client_metadata.cache_ttl",
                c.cache_ttl,
                Duration::from_secs(600),
                &mut errors,
            ),
        };
        let resources = Resources::new(raw.resources).unwrap_or_else(|e| {
            errors.push(e.to_string());
            Resources::default()
        });
        let policy = raw.policy.and_then(|p| match Policy::try_from(p) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                errors.extend(e.0.into_iter().map(|m| format!("policy: {m}")));
                None
            }
        });
        let rate_limit = RateLimit {
            per_address: raw.rate_limit.per_address.unwrap_or(120),
            per_client: raw.rate_limit.per_client.unwrap_or(60),
            window: nonzero(
                "rate_limit.window",
                raw.rate_limit.window,
                Duration::from_secs(60),
                &mut errors,
            ),
            trust_forwarded_for: raw.rate_limit.trust_forwarded_for.unwrap_or(true),
        };
        let key_prefix = raw.key_prefix.unwrap_or_default();
        if key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            errors.push("key_prefix: must not contain spaces or control characters".into());
        }
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Config {
            issuer,
            listen,
            redis_url,
            key_prefix,
            log_format: raw.log_format.unwrap_or_default(),
            signing_alg,
            signing_keys_dir: raw.signing_keys_dir,
            key_rotation: raw.key_rotation.map(|d| d.0),
            tokens,
            registration,
            upstream,
            allow: raw.allow,
            client_metadata,
            resources,
            introspection_resource_servers: raw.introspection.resource_servers,
            rate_limit,
            policy,
        })
    }
}

fn validate_upstream(u: RawUpstream, errors: &mut Vec<String>) -> Option<Upstream> {
    let client_secret = read_secret(
        "upstream.client_secret",
        u.client_secret,
        u.client_secret_file.as_deref(),
        errors,
    );
    let client_id = u.client_id.unwrap_or_else(|| {
        errors.push("upstream.client_id: required (or MCPGW_UPSTREAM_CLIENT_ID)".into());
        String::new()
    });
    let issuer = match (u.kind, u.issuer.as_deref()) {
        (UpstreamKind::Oidc, None) => {
            errors.push("upstream.issuer: required with kind = \"oidc\"".into());
            None
        }
        (UpstreamKind::Oidc, Some(i)) => http_url("upstream.issuer", i, errors),
        (UpstreamKind::Github, Some(_)) => {
            errors.push("upstream.issuer: only with kind = \"oidc\"".into());
            None
        }
        (UpstreamKind::Github, None) => None,
    };
    if u.kind == UpstreamKind::Github && client_secret.is_none() {
        errors.push("upstream.client_secret: required with kind = \"github\" (or client_secret_file, or MCPGW_UPSTREAM_CLIENT_SECRET)".into());
    }
    let scopes = u.scopes.unwrap_or_else(|| {
        let s: &[&str] = match u.kind {
            UpstreamKind::Oidc => &["openid", "profile", "email"],
            UpstreamKind::Github => &["read:user", "user:email", "read:org"],
        };
        s.iter().map(|s| (*s).to_owned()).collect()
    });
    if u.kind == UpstreamKind::Oidc && !scopes.iter().any(|s| s == "openid") {
        errors.push("upstream.scopes: must include `openid` with kind = \"oidc\"".into());
    }
    let github_url = http_url(
        "upstream.github_url",
        u.github_url.as_deref().unwrap_or("https://github.com"),
        errors,
    );
    let github_api_url = http_url(
        "upstream.github_api_url",
        u.github_api_url
            .as_deref()
            .unwrap_or("https://api.github.com"),
        errors,
    );
    Some(Upstream {
        kind: u.kind,
        issuer,
        client_id,
        client_secret,
        scopes,
        groups_claim: u.groups_claim.unwrap_or_else(|| "groups".to_owned()),
        github_url: github_url?,
        github_api_url: github_api_url?,
    })
}

impl Config {
    /// Reads `path`, applies the process environment and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(vec![format!("cannot read {}: {e}", path.display())]))?;
        Config::from_toml(&text, |k| std::env::var(k).ok())
    }

    /// Parses, applies `env`, validates.
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut raw = RawConfig::parse(text)?;
        raw.apply_env(env)?;
        Config::try_from(raw)
    }

    /// The scopes clients may request: every scope any resource requires or announces.
    pub fn scopes_supported(&self) -> Vec<String> {
        let mut set = BTreeSet::new();
        for r in self.resources.iter() {
            set.extend(r.scopes_required.iter().cloned());
            set.extend(r.metadata.scopes_supported.iter().cloned());
        }
        set.into_iter().collect()
    }

    /// The configured resource whose canonical URL is exactly `url` (RFC 8707 `resource`).
    pub fn resource(&self, url: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.canonical_url == url)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
