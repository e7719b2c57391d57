//! The access-token claims (RFC 9068 JWT profile) that the sidecar signs and the data plane
//! verifies. One type for both sides so they never drift; verification lives in [`crate::auth`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The claims of an mcpgw access token (`typ: at+jwt`, RFC 9068 §2.2).
///
/// Serialises exactly as the sidecar signs it: `aud` as a string when it names one resource,
/// `scope` as a space-separated string, empty optional claims omitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer: the sidecar's issuer URL (compared exactly).
    pub iss: String,
    /// Subject: the stable upstream user id, e.g. `github:123` or `oidc:<sub>`.
    pub sub: String,
    /// Audience: the canonical URL(s) of the MCP resource(s) the token is for (RFC 8707).
    pub aud: Audience,
    /// The OAuth client the token was issued to.
    pub client_id: String,
    /// Granted scopes; on the wire a space-separated string (an array is accepted when reading).
    #[serde(default, skip_serializing_if = "Scopes::is_empty")]
    pub scope: Scopes,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued-at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not-before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The token's unique id (revocation, logs).
    pub jti: String,
    /// The user's login at the upstream identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// The user's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Groups: GitHub organisations and teams as `org` and `org/team`, or OIDC groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// The `aud` claim: one or several audiences (RFC 7519 §4.1.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl Audience {
    /// Whether `audience` is one of the token's audiences (exact string comparison).
    pub fn contains(&self, audience: &str) -> bool {
        self.0.iter().any(|a| a == audience)
    }
}

impl From<String> for Audience {
    fn from(one: String) -> Self {
        Audience(vec![one])
    }
}

impl From<&str> for Audience {
    fn from(one: &str) -> Self {
        Audience(vec![one.to_owned()])
    }
}

impl Serialize for Audience {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Audience(StringOrList::deserialize(d)?.into_list(false)))
    }
}

/// The `scope` claim: a set of scope tokens (RFC 8693 §4.2 / RFC 9068 §2.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(pub Vec<String>);

impl Scopes {
    /// Parses a space-separated scope string (RFC 6749 §3.3).
    pub fn parse(s: &str) -> Scopes {
        Scopes(
            s.split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Whether no scope was granted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `scope` was granted.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s == scope)
    }

    /// The scopes as one space-separated string.
    pub fn to_space_separated(&self) -> String {
        self.0.join(" ")
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_space_separated())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Scopes(StringOrList::deserialize(d)?.into_list(true)))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_list(self, split_spaces: bool) -> Vec<String> {
        match self {
            StringOrList::One(s) if split_spaces => Scopes::parse(&s).0,
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_reads_string_or_array_and_writes_string() {
        let a: Scopes = serde_json::from_str(r#""mcp:read  mcp:write""#).unwrap();
        let b: Scopes = serde_json::from_str(r#"["mcp:read","mcp:write"]"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#""mcp:read mcp:write""#
        );
    }

    #[test]
    fn audience_reads_string_or_array_and_writes_single_as_string() {
        let a: Audience = serde_json::from_str(r#""http://x/mcp""#).unwrap();
        assert!(a.contains("http://x/mcp"));
        assert_eq!(serde_json::to_string(&a).unwrap(), r#""http://x/mcp""#);
        let b: Audience = serde_json::from_str(r#"["http://x/mcp","http://y/mcp"]"#).unwrap();
        assert!(b.contains("http://y/mcp") && !b.contains("http://z/mcp"));
    }
}
