//! The JWT filter's plugin configuration: [`RawConfig`] is the JSON users write (unknown fields
//! refused), [`Config`] the validated form the contexts share. Every error names its field.

use std::time::Duration;

use mcpgw_core::auth::{DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_BYTES, VerifyOptions};
use mcpgw_core::jwk::{Algorithm, Jwks, KeySet};
use mcpgw_core::resource::{Resource, Resources};
use serde::Deserialize;

/// The plugin configuration, as written in Envoy's `plugin_config` (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The only accepted `iss`, e.g. `http://127.0.0.1:8080`.
    pub issuer: String,
    /// The protected MCP resources; requests matching none pass through unchecked.
    pub resources: Vec<Resource>,
    /// Where the verification keys come from.
    pub jwks: RawJwks,
    /// Accepted signature algorithms. Default: `["ES256", "EdDSA", "RS256", "PS256"]`.
    #[serde(default)]
    pub algorithms: Option<Vec<Algorithm>>,
    /// Clock skew tolerated on `exp`/`nbf`/`iat`, e.g. `"30s"`. Default: 30 s.
    #[serde(default)]
    pub leeway: Option<String>,
    /// Tokens longer than this are refused unparsed. Default: 8192.
    #[serde(default)]
    pub max_token_bytes: Option<usize>,
    /// Warning: forwards the client's token to the MCP server (token passthrough, which the MCP
    /// authorization spec forbids). Default: false (the `Authorization` header is removed).
    #[serde(default)]
    pub forward_authorization: bool,
    /// How many verified tokens each worker remembers (0 turns the cache off). Default: 4096.
    #[serde(default)]
    pub cache_entries: Option<usize>,
    /// The revocation feed (the sidecar's `GET /revoked`): listed tokens are refused before their
    /// `exp`. Default: no feed.
    #[serde(default)]
    pub revocation: Option<RawFetch>,
}

/// The key source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawJwks {
    /// A JWKS document given in the configuration.
    Inline(Jwks),
    /// A JWKS fetched from an Envoy cluster.
    Remote(RawFetch),
}

/// A document the filter fetches periodically from an Envoy cluster: the JWKS (`jwks.remote`,
/// the sidecar's `/.well-known/jwks.json`) or the revocation feed (`revocation`, its `/revoked`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFetch {
    /// The Envoy cluster that serves it.
    pub cluster: String,
    /// The request path. Default: `/.well-known/jwks.json` (JWKS), `/revoked` (feed).
    #[serde(default)]
    pub path: Option<String>,
    /// The `:authority` sent. Default: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// How often it is refetched, e.g. `"300s"` (at least 1 s). Default: 300 s (JWKS), 5 s (feed).
    #[serde(default)]
    pub refresh_interval: Option<String>,
    /// The fetch timeout. Default: 5 s (JWKS), 2 s (feed).
    #[serde(default)]
    pub timeout: Option<String>,
    /// JWKS only (refused in `revocation`): the least time between two fetches triggered by an
    /// unknown `kid`. Default: 10 s.
    #[serde(default)]
    pub unknown_kid_refetch_interval: Option<String>,
}

/// The defaults of one fetched document.
struct FetchDefaults {
    path: &'static str,
    refresh_interval: Duration,
    timeout: Duration,
}

/// The JWKS's defaults.
const JWKS_DEFAULTS: FetchDefaults = FetchDefaults {
    path: "/.well-known/jwks.json",
    refresh_interval: Duration::from_secs(300),
    timeout: Duration::from_secs(5),
};

/// The revocation feed's defaults.
const REVOCATION_DEFAULTS: FetchDefaults = FetchDefaults {
    path: "/revoked",
    refresh_interval: Duration::from_secs(5),
    timeout: Duration::from_secs(2),
};

impl RawFetch {
    /// Validates the fields, named under `prefix` (e.g. `jwks.remote`), with `defaults`.
    fn validate(self, prefix: &str, defaults: &FetchDefaults) -> Result<Fetch, ConfigError> {
        let name = |f: &str| format!("{prefix}.{f}");
        if self.cluster.is_empty() {
            return Err(field(&name("cluster"), "must not be empty"));
        }
        let path = self.path.unwrap_or_else(|| defaults.path.to_owned());
        if !path.starts_with('/') {
            return Err(field(&name("path"), "must start with `/`"));
        }
        let refresh_interval = duration(
            &name("refresh_interval"),
            self.refresh_interval.as_deref(),
            defaults.refresh_interval,
        )?;
        if refresh_interval < Duration::from_secs(1) {
            return Err(field(&name("refresh_interval"), "must be at least 1s"));
        }
        Ok(Fetch {
            authority: self.authority.unwrap_or_else(|| self.cluster.clone()),
            cluster: self.cluster,
            path,
            refresh_interval,
            timeout: duration(&name("timeout"), self.timeout.as_deref(), defaults.timeout)?,
        })
    }
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The resources.
    pub resources: Resources,
    /// Token checks.
    pub verify: VerifyOptions,
    /// Keep the `Authorization` header.
    pub forward_authorization: bool,
    /// Cache size per worker.
    pub cache_entries: usize,
    /// Where keys come from.
    pub keys: KeySource,
    /// The revocation feed, if any.
    pub revocation: Option<Fetch>,
}

/// The validated key source.
#[derive(Debug)]
pub enum KeySource {
    /// Fixed keys.
    Inline(KeySet),
    /// Keys fetched and refreshed.
    Remote(Remote),
}

/// A validated periodic fetch from an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The cluster.
    pub cluster: String,
    /// The path.
    pub path: String,
    /// The authority.
    pub authority: String,
    /// The refresh period.
    pub refresh_interval: Duration,
    /// The fetch timeout.
    pub timeout: Duration,
}

impl Fetch {
    /// Whether a fetch is due at `now_ms` when the last one was at `last_ms` (0: never).
    pub fn due(&self, last_ms: u64, now_ms: u64) -> bool {
        let every = u64::try_from(self.refresh_interval.as_millis()).unwrap_or(u64::MAX);
        last_ms == 0 || now_ms >= last_ms.saturating_add(every)
    }

    /// The timeout in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A validated remote key source.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Where and how often the JWKS is fetched.
    pub fetch: Fetch,
    /// The unknown-`kid` refetch rate limit.
    pub unknown_kid_refetch_interval: Duration,
}

/// A configuration problem, with the field it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, an unknown field, a missing field or a wrong type.
    #[error("invalid plugin configuration: {0}")]
    Json(#[from] serde_json::Error),
    /// A field's value is invalid.
    #[error("{field}: {problem}")]
    Field {
        /// The field path, e.g. `jwks.remote.timeout`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn field(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

fn duration(name: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v)
            .ok_or_else(|| field(name, "must be a duration like \"30s\", \"500ms\" or \"5m\"")),
    }
}

impl Config {
    /// Parses and validates the plugin configuration.
    pub fn from_json(json: &[u8]) -> Result<Config, ConfigError> {
        Config::try_from(serde_json::from_slice::<RawConfig>(json)?)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.issuer.is_empty() {
            return Err(field("issuer", "must not be empty"));
        }
        if raw.resources.is_empty() {
            return Err(field("resources", "must name at least one resource"));
        }
        let resources = Resources::new(raw.resources).map_err(|e| {
            let text = e.to_string();
            match text.split_once(": ") {
                Some((f, p)) => field(f, p),
                None => field("resources", text),
            }
        })?;
        let algorithms = raw.algorithms.unwrap_or_else(|| Algorithm::ALL.to_vec());
        if algorithms.is_empty() {
            return Err(field("algorithms", "must allow at least one algorithm"));
        }
        let leeway = duration(
            "leeway",
            raw.leeway.as_deref(),
            Duration::from_secs(DEFAULT_LEEWAY_SECS),
        )?;
        let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if max_token_bytes == 0 {
            return Err(field("max_token_bytes", "must be positive"));
        }
        let keys = match raw.jwks {
            RawJwks::Inline(jwks) => {
                let (set, errors) = KeySet::from_jwks(&jwks);
                if let Some(e) = errors.first() {
                    return Err(field("jwks.inline", e.to_string()));
                }
                if set.is_empty() {
                    return Err(field("jwks.inline", "has no key"));
                }
                KeySource::Inline(set)
            }
            RawJwks::Remote(r) => KeySource::Remote(Remote {
                unknown_kid_refetch_interval: duration(
                    "jwks.remote.unknown_kid_refetch_interval",
                    r.unknown_kid_refetch_interval.as_deref(),
                    Duration::from_secs(10),
                )?,
                fetch: r.validate("jwks.remote", &JWKS_DEFAULTS)?,
            }),
        };
        let revocation = match raw.revocation {
            Some(r) if r.unknown_kid_refetch_interval.is_some() => {
                return Err(field(
                    "revocation.unknown_kid_refetch_interval",
                    "is a `jwks.remote` field",
                ));
            }
            r => r
                .map(|r| r.validate("revocation", &REVOCATION_DEFAULTS))
                .transpose()?,
        };
        Ok(Config {
            resources,
            verify: VerifyOptions {
                issuer: raw.issuer,
                algorithms,
                leeway_secs: leeway.as_secs(),
                max_token_bytes,
            },
            forward_authorization: raw.forward_authorization,
            cache_entries: raw.cache_entries.unwrap_or(4096),
            keys,
            revocation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"issuer":"http://i","resources":[{"canonical_url":"http://i/a/mcp","path_prefix":"/a/mcp"}],"jwks":{"remote":{"cluster":"sidecar"}}}"#;

    fn with(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn accepts_the_minimal_configuration_with_defaults() {
        let c = Config::from_json(BASE.as_bytes()).unwrap();
        assert_eq!(c.verify.algorithms, Algorithm::ALL.to_vec());
        assert!(!c.forward_authorization);
        let KeySource::Remote(r) = c.keys else {
            panic!("inline")
        };
        assert_eq!(r.fetch.path, "/.well-known/jwks.json");
        assert_eq!(r.fetch.refresh_interval, Duration::from_secs(300));
        assert_eq!(c.revocation, None);
    }

    #[test]
    fn revocation_feed_has_defaults_and_takes_every_field() {
        let c = Config::from_json(&with(|v| {
            v["revocation"] = serde_json::json!({"cluster": "sidecar"})
        }))
        .unwrap();
        assert_eq!(
            c.revocation,
            Some(Fetch {
                cluster: "sidecar".into(),
                path: "/revoked".into(),
                authority: "sidecar".into(),
                refresh_interval: Duration::from_secs(5),
                timeout: Duration::from_secs(2),
            })
        );
        let c = Config::from_json(&with(|v| {
            v["revocation"] = serde_json::json!({
                "cluster": "c", "authority": "a", "path": "/feed",
                "refresh_interval": "2s", "timeout": "500ms"
            })
        }))
        .unwrap();
        assert_eq!(
            c.revocation,
            Some(Fetch {
                cluster: "c".into(),
                path: "/feed".into(),
                authority: "a".into(),
                refresh_interval: Duration::from_secs(2),
                timeout: Duration::from_millis(500),
            })
        );
    }

    #[test]
    fn every_error_names_its_field() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with(|v| v["bogus"] = 1.into()), "bogus"),
            (
                with(|v| v["resources"][0]["path_prefx"] = "/x".into()),
                "path_prefx",
            ),
            (
                with(|v| v["jwks"]["remote"]["refresh"] = "1s".into()),
                "refresh",
            ),
            (with(|v| v["leeway"] = "soon".into()), "leeway"),
            (
                with(|v| v["algorithms"] = serde_json::json!(["HS256"])),
                "HS256",
            ),
            (
                with(|v| v["algorithms"] = serde_json::json!([])),
                "algorithms",
            ),
            (
                with(|v| v["resources"][0]["canonical_url"] = "x".into()),
                "resources[0].canonical_url",
            ),
            (
                with(|v| v["resources"] = serde_json::json!([])),
                "resources",
            ),
            (
                with(|v| v["jwks"] = serde_json::json!({"inline": {"keys": []}})),
                "jwks.inline",
            ),
            (
                with(|v| v["jwks"]["remote"]["timeout"] = "5 seconds".into()),
                "jwks.remote.timeout",
            ),
            (
                with(|v| {
                    v.as_object_mut()
                        .unwrap()
                        .remove("issuer")
                        .map(drop)
                        .unwrap_or(())
                }),
                "issuer",
            ),
            (b"not json".to_vec(), "expected"),
            (
                with(|v| v["revocation"] = serde_json::json!({"cluster": "s", "interval": "2s"})),
                "interval",
            ),
            (
                with(|v| v["revocation"] = serde_json::json!({"path": "/revoked"})),
                "cluster",
            ),
            (
                with(|v| v["revocation"] = serde_json::json!({"cluster": ""})),
                "revocation.cluster",
            ),
            (
                with(|v| v["revocation"] = serde_json::json!({"cluster": "s", "path": "revoked"})),
                "revocation.path",
            ),
            (
                with(|v| {
                    v["revocation"] =
                        serde_json::json!({"cluster": "s", "refresh_interval": "500ms"})
                }),
                "revocation.refresh_interval",
            ),
            (
                with(|v| v["revocation"] = serde_json::json!({"cluster": "s", "timeout": "2"})),
                "revocation.timeout",
            ),
            (
                with(|v| {
                    v["revocation"] =
                        serde_json::json!({"cluster": "s", "unknown_kid_refetch_interval": "1s"})
                }),
                "revocation.unknown_kid_refetch_interval",
            ),
        ];
        for (json, name) in cases {
            let e = Config::from_json(&json).unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "5", "5x", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
