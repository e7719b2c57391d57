//! The identity forwarded to upstreams after a token is accepted, and the header names that carry
//! it. The JWT filter and the sidecar's `/verify` both set exactly these; the policy filter and the
//! MCP servers read them. Any header starting with [`HEADER_PREFIX`] that a client sends is removed
//! before these are set, so they cannot be spoofed.

use std::borrow::Cow;

use crate::claims::AccessTokenClaims;

/// Every identity header starts with this; client-sent headers with it are stripped.
pub const HEADER_PREFIX: &str = "x-mcpgw-";
/// The token's `sub`.
pub const SUBJECT: &str = "x-mcpgw-subject";
/// The token's `preferred_username` (the upstream login).
pub const USER: &str = "x-mcpgw-user";
/// The token's `email`.
pub const EMAIL: &str = "x-mcpgw-email";
/// The token's `groups`, comma-separated.
pub const GROUPS: &str = "x-mcpgw-groups";
/// The token's `client_id`.
pub const CLIENT_ID: &str = "x-mcpgw-client-id";
/// The granted scopes, space-separated.
pub const SCOPES: &str = "x-mcpgw-scopes";
/// The canonical URL of the matched resource (the token's audience).
pub const RESOURCE: &str = "x-mcpgw-resource";

/// Every identity header name, in the order [`Identity::headers`] yields them.
pub const ALL_HEADERS: [&str; 7] = [SUBJECT, USER, EMAIL, GROUPS, CLIENT_ID, SCOPES, RESOURCE];

/// Whether a request header name (any case) is one of ours and must be dropped if a client sent it.
pub fn is_identity_header(name: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    name.len() >= HEADER_PREFIX.len()
        && name[..HEADER_PREFIX.len()].eq_ignore_ascii_case(HEADER_PREFIX.as_bytes())
}

/// Who is calling, as established by a verified access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub subject: String,
    /// `preferred_username`.
    pub user: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `groups`.
    pub groups: Vec<String>,
    /// `client_id`.
    pub client_id: String,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// The canonical URL of the resource the request was for.
    pub resource: String,
    /// `jti` (safe to log).
    pub jti: String,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Identity {
    /// Builds the identity from verified claims for the matched resource.
    pub fn from_claims(claims: &AccessTokenClaims, resource: &str) -> Identity {
        Identity {
            subject: claims.sub.clone(),
            user: claims.preferred_username.clone(),
            email: claims.email.clone(),
            groups: claims.groups.clone(),
            client_id: claims.client_id.clone(),
            scopes: claims.scope.0.clone(),
            resource: resource.to_owned(),
            jti: claims.jti.clone(),
            expires_at: claims.exp,
        }
    }

    /// The identity headers to add to the upstream request; absent or empty values are left out.
    /// Values are made header-safe (control characters, which cannot appear in a header value,
    /// are dropped); a value that already is one is borrowed, not copied.
    pub fn headers(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        let values = [
            Some(Cow::Borrowed(self.subject.as_str())),
            self.user.as_deref().map(Cow::Borrowed),
            self.email.as_deref().map(Cow::Borrowed),
            Some(Cow::Owned(self.groups.join(","))),
            Some(Cow::Borrowed(self.client_id.as_str())),
            Some(Cow::Owned(self.scopes.join(" "))),
            Some(Cow::Borrowed(self.resource.as_str())),
        ];
        ALL_HEADERS
            .into_iter()
            .zip(values)
            .filter_map(|(name, value)| {
                let value = header_safe(value?);
                (!value.is_empty()).then_some((name, value))
            })
            .collect()
    }
}

/// `value` without control characters (which cannot appear in a header value).
fn header_safe(value: Cow<'_, str>) -> Cow<'_, str> {
    if value.chars().any(char::is_control) {
        Cow::Owned(value.chars().filter(|c| !c.is_control()).collect())
    } else {
        value
    }
}
