//! The identity forwarded to upstreams after a token is accepted, and the header names that carry
//! it. The JWT filter and the sidecar's `/verify` both set exactly these; the policy filter and the
//! MCP servers read them. Any header starting with [`HEADER_PREFIX`] that a client sends is removed
//! before these are set, so they cannot be spoofed.
//!
//! Values travel [`encode`]d (percent-escapes for controls, spaces, non-ASCII, `%` and `,`), so a
//! group holding a comma or a name ending in a Unicode space reaches the policy exactly as the
//! token states it; [`decode`] reverses it. Tokens whose claims hold control characters are
//! refused ([`check_claims`]).

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
/// The token's `groups`, each [`encode`]d, comma-separated.
pub const GROUPS: &str = "x-mcpgw-groups";
/// The token's `client_id`.
pub const CLIENT_ID: &str = "x-mcpgw-client-id";
/// The granted scopes, each [`encode`]d, space-separated.
pub const SCOPES: &str = "x-mcpgw-scopes";
/// The canonical URL of the matched resource (the token's audience).
pub const RESOURCE: &str = "x-mcpgw-resource";

/// Every identity header name, in the order [`Identity::headers`] yields them.
pub const ALL_HEADERS: [&str; 7] = [SUBJECT, USER, EMAIL, GROUPS, CLIENT_ID, SCOPES, RESOURCE];

/// Whether a request header name is one of ours and must be dropped if a client sent it: any
/// case, and `_` read as `-` (CGI/WSGI-style upstreams fold `x_mcpgw_user` into `x-mcpgw-user`).
pub fn is_identity_header(name: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    name.len() >= HEADER_PREFIX.len()
        && name
            .iter()
            .zip(HEADER_PREFIX.bytes())
            .all(|(&got, want)| got.to_ascii_lowercase() == want || (got == b'_' && want == b'-'))
}

/// Whether a request header name (any case) is an identity header with `_` written for some `-`
/// (`x_mcpgw_subject`, `X-Mcpgw_User`). Servers that fold `_` into `-` (CGI, WSGI) would read it as
/// ours, so it must never reach an upstream: Envoy drops headers with underscores
/// (`headers_with_underscores_action`) and the bridge refuses a request that still carries one.
pub fn is_underscore_identity_header(name: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    name.contains(&b'_') && is_identity_header(name)
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
    /// Every value is [`encode`]d, lists item by item, so what the policy filter and the
    /// upstream decode is exactly what the token states.
    pub fn headers(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        let values = [
            Some(encode(&self.subject)),
            self.user.as_deref().map(encode),
            self.email.as_deref().map(encode),
            Some(encode_list(&self.groups, ',')),
            Some(encode(&self.client_id)),
            Some(encode_list(&self.scopes, ' ')),
            Some(encode(&self.resource)),
        ];
        ALL_HEADERS
            .into_iter()
            .zip(values)
            .filter_map(|(name, value)| {
                let value = value?;
                (!value.is_empty()).then_some((name, value))
            })
            .collect()
    }
}

/// Why a claim cannot become an identity value; the token carrying it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UncarriableClaim {
    /// The value holds a control character (C0, DEL or C1).
    #[error("claim `{0}` holds a control character")]
    ControlCharacter(&'static str),
    /// A list item (group, scope) is empty.
    #[error("claim `{0}` holds an empty item")]
    EmptyItem(&'static str),
}

/// Checks that every identity claim can be carried exactly: no control characters anywhere, no
/// empty group or scope. The token verifier refuses tokens that fail, and the sidecar refuses such
/// a login, so no rule ever compares a value some component would read differently.
pub fn check_claims(claims: &AccessTokenClaims) -> Result<(), UncarriableClaim> {
    check_value("sub", &claims.sub)?;
    check_value("client_id", &claims.client_id)?;
    for (name, v) in [
        ("preferred_username", &claims.preferred_username),
        ("email", &claims.email),
        ("name", &claims.name),
    ] {
        v.as_deref().map_or(Ok(()), |v| check_value(name, v))?;
    }
    check_items("groups", &claims.groups)?;
    check_items("scope", &claims.scope.0)
}

/// [`check_claims`] for one value of claim `claim`.
pub fn check_value(claim: &'static str, value: &str) -> Result<(), UncarriableClaim> {
    if value.chars().any(char::is_control) {
        return Err(UncarriableClaim::ControlCharacter(claim));
    }
    Ok(())
}

/// [`check_claims`] for the items of list claim `claim`.
pub fn check_items(claim: &'static str, items: &[String]) -> Result<(), UncarriableClaim> {
    items.iter().try_for_each(|v| {
        if v.is_empty() {
            return Err(UncarriableClaim::EmptyItem(claim));
        }
        check_value(claim, v)
    })
}

/// Whether byte `b` travels escaped in an identity header value: controls, space, non-ASCII,
/// `%` and the list separator `,` (space separates scopes).
const fn escaped(b: u8) -> bool {
    b <= b' ' || b >= 0x7f || b == b'%' || b == b','
}

/// [`escaped`] for every byte value: one load per byte on the request path.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = escaped(b as u8);
        b += 1;
    }
    table
};

/// Whether `text` holds no escaped byte but `separator` (a list's; `None` for a single value):
/// every value in it stands as it is, with nothing to decode or refuse. Eight bytes at a time, the
/// rest by the table.
pub fn is_plain(text: &str, separator: Option<u8>) -> bool {
    let mut words = text.as_bytes().chunks_exact(8);
    let plain_words = words.all(|w| {
        let mut word = [0; 8];
        word.copy_from_slice(w);
        plain_word(u64::from_le_bytes(word), separator)
    });
    plain_words
        && words
            .remainder()
            .iter()
            .all(|&b| Some(b) == separator || !ESCAPED[usize::from(b)])
}

/// [`is_plain`] for eight bytes: none below `0x20` or above `0x7e` (controls, DEL, non-ASCII),
/// none `%`, and none `,` or space unless it is `separator` (the bit tricks of "Bit Twiddling
/// Hacks": each test is exact about whether some byte matches).
fn plain_word(w: u64, separator: Option<u8>) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    fn has_zero(v: u64) -> bool {
        v.wrapping_sub(ONES) & !v & HIGHS != 0
    }
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
    let above_tilde = (w.wrapping_add(ONES) | w) & HIGHS != 0;
    let has = |b: u8| Some(b) != separator && has_zero(w ^ (ONES * u64::from(b)));
    !(below_space || above_tilde || has(b'%') || has(b',') || has(b' '))
}

/// An identity value as it travels in a header: UTF-8, each [`escaped`] byte written `%XX`
/// (upper-case hex); a value needing no escape is borrowed. [`decode`] reverses it exactly.
pub fn encode(value: &str) -> Cow<'_, str> {
    if is_plain(value, None) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if escaped(b) {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        } else {
            out.push(char::from(b));
        }
    }
    Cow::Owned(out)
}

/// A list of values as one header: each item [`encode`]d, joined by `separator`.
fn encode_list(items: &[String], separator: char) -> Cow<'static, str> {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(separator);
        }
        out.push_str(&encode(item));
    }
    Cow::Owned(out)
}

/// The value an [`encode`]d header value stands for; `None` when it is not one [`encode`] could
/// have written (a byte that should have been escaped, a bad escape, or not UTF-8): the request
/// carrying it is refused.
pub fn decode(text: &str) -> Option<Cow<'_, str>> {
    if is_plain(text, None) {
        return Some(Cow::Borrowed(text));
    }
    // Not plain: some byte is escaped; everything before the first is copied as it stands.
    let bytes = text.as_bytes();
    let first = bytes
        .iter()
        .position(|&b| ESCAPED[usize::from(b)])
        .unwrap_or(bytes.len());
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |j: usize| char::from(*bytes.get(j)?).to_digit(16);
            let v = u8::try_from(hex(i + 1)? * 16 + hex(i + 2)?).ok()?;
            if !escaped(v) || bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase) {
                return None;
            }
            out.push(v);
            i += 3;
        } else if escaped(b) {
            return None;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time check agrees with the byte table for every byte value at every place
    /// of a word, beside plain and escaped neighbours, with and without each separator.
    #[test]
    fn plain_words_agree_with_the_table() {
        for separator in [None, Some(b','), Some(b' ')] {
            for b in 0..=255u8 {
                for place in 0..8 {
                    for fill in [b'a', b'~', b'!', 0x80, 0xff, 0x00] {
                        let mut word = [fill; 8];
                        word[place] = b;
                        let by_table = word
                            .iter()
                            .all(|&x| Some(x) == separator || !ESCAPED[usize::from(x)]);
                        let got = plain_word(u64::from_le_bytes(word), separator);
                        assert_eq!(got, by_table, "{word:?} sep {separator:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn underscore_spellings_of_identity_headers_are_recognised() {
        for name in [
            "x_mcpgw_subject",
            "X_MCPGW_USER",
            "x-mcpgw_groups",
            "x_mcpgw-client-id",
            "x-mcpgw-user_name",
        ] {
            assert!(is_underscore_identity_header(name), "{name}");
        }
        for name in [
            SUBJECT,
            USER,
            "x-other_header",
            "x_mcpg",
            "mcp-session-id",
            "x_mcpgx_a",
        ] {
            assert!(!is_underscore_identity_header(name), "{name}");
        }
    }
}
