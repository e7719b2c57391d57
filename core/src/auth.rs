//! Access-token verification and the one decision every host acts on.
//!
//! [`verify_signature`] checks a compact JWS against a [`KeySet`] (algorithm allow-list, `kid`
//! selection, `typ`, `crit`, signature, required claims); [`check_claims`] checks the verified
//! claims against the resource being called and the time (`iss`, RFC 8707 `aud`, `exp`/`nbf`/`iat`
//! with leeway, scopes). [`authenticate`] runs both from an `Authorization` header value and turns
//! the outcome into a [`Decision`]: allow with an [`Identity`], or deny with status,
//! `WWW-Authenticate` and a small JSON body. [`TokenCache`] remembers verified signatures so a
//! token seen again costs no signature check; claims are re-checked on every request.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::claims::{AccessTokenClaims, Audience, Scopes};
use crate::hash::{Fold, words};
use crate::identity::Identity;
use crate::jwk::{Algorithm, FastKey, KeyEntry, KeySet, VerifyingKey};
use crate::resource::Resource;

/// Default for [`VerifyOptions::leeway_secs`]: clock skew tolerated on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Default for [`VerifyOptions::max_token_bytes`].
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a token must satisfy besides the resource's own requirements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The only accepted `iss` (exact match).
    pub issuer: String,
    /// The accepted signature algorithms; anything else (and always `none`/HMAC) is refused.
    pub algorithms: Vec<Algorithm>,
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Longer tokens are refused before any parsing.
    pub max_token_bytes: usize,
}

impl VerifyOptions {
    /// Options for tokens from `issuer`: every supported algorithm, default leeway and size limit.
    pub fn new(issuer: impl Into<String>) -> VerifyOptions {
        VerifyOptions {
            issuer: issuer.into(),
            algorithms: Algorithm::ALL.to_vec(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

/// Why a token was refused. The `Display` text is safe to send to the client: it never echoes
/// any part of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Longer than [`VerifyOptions::max_token_bytes`].
    #[error("token too large")]
    TokenTooLarge,
    /// Not three base64url parts with a JSON header and payload.
    #[error("malformed token")]
    Malformed,
    /// `alg` is `none`, an HMAC algorithm, or unknown.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// `alg` is supported but not in the allow-list.
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed(Algorithm),
    /// `typ` is not `at+jwt` (RFC 9068 §4).
    #[error("token type is not at+jwt")]
    WrongTokenType,
    /// The header carries `crit` extensions, none of which are understood (RFC 7515 §4.1.11).
    #[error("unsupported critical header")]
    CriticalHeader,
    /// The header has no `kid`.
    #[error("token header has no kid")]
    MissingKeyId,
    /// No key has this `kid` (the host may refresh its keys once and retry).
    #[error("unknown signing key")]
    UnknownKeyId(String),
    /// The key exists but may not be used with the token's algorithm.
    #[error("key does not fit the algorithm")]
    KeyAlgorithmMismatch,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// A required claim is missing or has the wrong type.
    #[error("missing or invalid claim `{0}`")]
    MissingClaim(&'static str),
    /// An identity claim holds what the gateway cannot pass on exactly
    /// ([`crate::identity::check_claims`]).
    #[error(transparent)]
    Uncarriable(#[from] crate::identity::UncarriableClaim),
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the resource's canonical URL (RFC 8707).
    #[error("token is not for this resource")]
    WrongAudience,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
}

/// The verified result of [`verify_signature`]: the claims and the key that signed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The claims.
    pub claims: AccessTokenClaims,
    /// The `kid` of the signing key.
    pub kid: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// The claims as read from the wire: everything optional so a missing one is named.
#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    client_id: Option<String>,
    #[serde(default)]
    scope: Option<Scopes>,
    exp: Option<u64>,
    iat: Option<u64>,
    nbf: Option<u64>,
    jti: Option<String>,
    preferred_username: Option<String>,
    name: Option<String>,
    email: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

impl RawClaims {
    /// RFC 9068 §2.2: `iss`, `exp`, `aud`, `sub`, `client_id`, `iat` and `jti` are required.
    fn into_claims(self) -> Result<AccessTokenClaims, VerifyError> {
        Ok(AccessTokenClaims {
            iss: self.iss.ok_or(VerifyError::MissingClaim("iss"))?,
            sub: self.sub.ok_or(VerifyError::MissingClaim("sub"))?,
            aud: self.aud.ok_or(VerifyError::MissingClaim("aud"))?,
            client_id: self
                .client_id
                .ok_or(VerifyError::MissingClaim("client_id"))?,
            scope: self.scope.unwrap_or_default(),
            exp: self.exp.ok_or(VerifyError::MissingClaim("exp"))?,
            iat: self.iat.ok_or(VerifyError::MissingClaim("iat"))?,
            nbf: self.nbf,
            jti: self.jti.ok_or(VerifyError::MissingClaim("jti"))?,
            preferred_username: self.preferred_username,
            name: self.name,
            email: self.email,
            groups: self.groups.unwrap_or_default(),
        })
    }
}

/// What a compact JWS must satisfy before its signature is checked.
#[derive(Clone, Copy, Debug)]
pub struct JwsRules<'a> {
    /// The accepted algorithms (`none` and HMAC never are).
    pub algorithms: &'a [Algorithm],
    /// Longer tokens are refused before any parsing.
    pub max_bytes: usize,
    /// Whether `typ` must say `at+jwt` (our access tokens; RFC 9068 §4).
    pub access_token: bool,
}

/// Reads the algorithm and `kid` and checks the header, without verifying anything else.
fn check_header<'k>(
    header_b64: &str,
    keys: &'k KeySet,
    rules: &JwsRules<'_>,
) -> Result<(Algorithm, &'k KeyEntry), VerifyError> {
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| VerifyError::Malformed)?;
    let header: Header =
        serde_json::from_slice(&header_json).map_err(|_| VerifyError::Malformed)?;
    let alg = Algorithm::from_name(&header.alg).ok_or(VerifyError::UnsupportedAlgorithm)?;
    if !rules.algorithms.contains(&alg) {
        return Err(VerifyError::AlgorithmNotAllowed(alg));
    }
    if header.crit.is_some() {
        return Err(VerifyError::CriticalHeader);
    }
    // RFC 9068 §4: `at+jwt`, or the full media type `application/at+jwt`.
    let typ = header.typ.as_deref().unwrap_or("");
    let typ = typ.strip_prefix("application/").unwrap_or(typ);
    if rules.access_token && !typ.eq_ignore_ascii_case("at+jwt") {
        return Err(VerifyError::WrongTokenType);
    }
    let kid = header.kid.ok_or(VerifyError::MissingKeyId)?;
    let key = keys.get(&kid).ok_or(VerifyError::UnknownKeyId(kid))?;
    if !key.allows(alg) {
        return Err(VerifyError::KeyAlgorithmMismatch);
    }
    Ok((alg, key))
}

/// Checks a JWS signature over `signing_input` with `entry`'s key under `alg`: the one place every
/// signature we accept is verified (our access tokens here, upstream ID tokens in the sidecar).
/// Fails with [`VerifyError::KeyAlgorithmMismatch`] or [`VerifyError::BadSignature`].
pub fn check_signature(
    alg: Algorithm,
    entry: &KeyEntry,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<(), VerifyError> {
    use rsa_v010::signature::Verifier;
    fn bad<E>(_: E) -> VerifyError {
        VerifyError::BadSignature
    }
    match (alg, entry.fast(), &entry.key) {
        (Algorithm::ES256, FastKey::P256(k), _) => {
            // RFC 7518 §3.4: the JWS signature is R || S, 32 bytes each.
            let sig = p256_v14::ecdsa::Signature::from_slice(signature).map_err(bad)?;
            k.verify(signing_input, &sig).map_err(bad)
        }
        (Algorithm::EdDSA, FastKey::Ed25519, VerifyingKey::Ed25519(k)) => {
            let sig = ed25519_dalek::Signature::from_slice(signature).map_err(bad)?;
            k.verify_strict(signing_input, &sig).map_err(bad)
        }
        (Algorithm::RS256, FastKey::Rsa(k), _) => {
            let sig = rsa_v010::pkcs1v15::Signature::try_from(signature).map_err(bad)?;
            rsa_v010::pkcs1v15::VerifyingKey::<sha2_v011::Sha256>::new((**k).clone())
                .verify(signing_input, &sig)
                .map_err(bad)
        }
        (Algorithm::PS256, FastKey::Rsa(k), _) => {
            // RFC 7518 §3.5: the salt is as long as the hash.
            let sig = rsa_v010::pss::Signature::try_from(signature).map_err(bad)?;
            rsa_v010::pss::VerifyingKey::<sha2_v011::Sha256>::new((**k).clone())
                .verify(signing_input, &sig)
                .map_err(bad)
        }
        _ => Err(VerifyError::KeyAlgorithmMismatch),
    }
}

/// Verifies a compact JWS access token's structure, header and signature, and reads its claims.
/// Does not look at time, issuer or audience: see [`check_claims`].
pub fn verify_signature(
    token: &str,
    keys: &KeySet,
    options: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    let rules = JwsRules {
        algorithms: &options.algorithms,
        max_bytes: options.max_token_bytes,
        access_token: true,
    };
    let (key, payload) = verify_jws(token, keys, &rules)?;
    let raw: RawClaims = serde_json::from_slice(&payload).map_err(|_| VerifyError::Malformed)?;
    let claims = raw.into_claims()?;
    crate::identity::check_claims(&claims)?;
    Ok(Verified {
        claims,
        kid: key.kid.clone(),
    })
}

/// Verifies a compact JWS under `rules` (structure, header, signature): the one place every
/// token we accept is checked, our access tokens and the upstream providers' ID tokens alike.
/// Returns the key that signed it and the decoded payload, whose claims the caller checks.
pub fn verify_jws<'k>(
    token: &str,
    keys: &'k KeySet,
    rules: &JwsRules<'_>,
) -> Result<(&'k KeyEntry, Vec<u8>), VerifyError> {
    if token.len() > rules.max_bytes {
        return Err(VerifyError::TokenTooLarge);
    }
    let (signing_input, signature_b64) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
    let (header_b64, payload_b64) = signing_input
        .split_once('.')
        .ok_or(VerifyError::Malformed)?;
    if payload_b64.contains('.') {
        return Err(VerifyError::Malformed);
    }
    let (alg, key) = check_header(header_b64, keys, rules)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| VerifyError::Malformed)?;
    check_signature(alg, key, signing_input.as_bytes(), &signature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| VerifyError::Malformed)?;
    Ok((key, payload))
}

/// Checks verified claims against the issuer, the resource's canonical URL (the audience) and
/// the time `now` (seconds since the Unix epoch). Scopes are checked by [`authenticate`].
pub fn check_claims(
    claims: &AccessTokenClaims,
    resource: &Resource,
    options: &VerifyOptions,
    now: u64,
) -> Result<(), VerifyError> {
    if claims.iss != options.issuer {
        return Err(VerifyError::WrongIssuer);
    }
    if !claims.aud.contains(&resource.canonical_url) {
        return Err(VerifyError::WrongAudience);
    }
    let leeway = options.leeway_secs;
    if now >= claims.exp.saturating_add(leeway) {
        return Err(VerifyError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(leeway))
    {
        return Err(VerifyError::NotYetValid);
    }
    if claims.iat > now.saturating_add(leeway) {
        return Err(VerifyError::IssuedInFuture);
    }
    Ok(())
}

/// Verifies `token` for `resource` at time `now`: signature, then claims. Scopes are not checked.
pub fn verify(
    token: &str,
    resource: &Resource,
    keys: &KeySet,
    options: &VerifyOptions,
    now: u64,
) -> Result<AccessTokenClaims, VerifyError> {
    let verified = verify_signature(token, keys, options)?;
    check_claims(&verified.claims, resource, options, now)?;
    Ok(verified.claims)
}

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// No bearer token in the request (RFC 6750 §3.1: no error code is sent).
    MissingToken,
    /// The token was refused.
    InvalidToken(VerifyError),
    /// The token lacks scopes the resource requires.
    InsufficientScope,
    /// No verification key has ever been loaded: fail closed.
    NoKeys,
    /// The token verified but was revoked (the sidecar's store, or the edge's revocation feed:
    /// [`crate::revocation`]).
    Revoked,
}

/// A denial, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why.
    pub reason: DenyReason,
    /// The HTTP status: 401, 403 or 503.
    pub status: u16,
    /// The `WWW-Authenticate` value (absent on 503).
    pub www_authenticate: Option<String>,
    /// A small JSON body: `{"error": "...", "error_description": "..."}`.
    pub body: String,
}

/// The outcome of [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward the request with this identity.
    Allow(Identity),
    /// Answer with this denial.
    Deny(Denial),
}

/// Extracts the token from an `Authorization` header value (`Bearer <token>`, scheme
/// case-insensitive, RFC 6750 §2.1). `None` when there is no bearer credential.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn quoted(s: &str) -> String {
    s.replace(['"', '\\'], "")
}

/// Builds the denial for `reason` at `resource`: the one place every host's 401, 403 and 503
/// (status, `WWW-Authenticate`, JSON body) come from, so the filter and the sidecar answer alike.
pub fn deny(reason: DenyReason, resource: &Resource) -> Denial {
    let metadata = format!(
        "Bearer resource_metadata=\"{}\"",
        quoted(&resource.metadata_url())
    );
    let invalid_token = |description: String| {
        let challenge = format!(
            "{metadata}, error=\"invalid_token\", error_description=\"{}\"",
            quoted(&description)
        );
        (401, "invalid_token", description, Some(challenge))
    };
    let (status, error, description, challenge) = match &reason {
        DenyReason::MissingToken => (
            401,
            "invalid_token",
            "bearer token required".to_owned(),
            Some(metadata.clone()),
        ),
        DenyReason::InvalidToken(e) => invalid_token(e.to_string()),
        DenyReason::Revoked => invalid_token("token revoked".to_owned()),
        DenyReason::InsufficientScope => {
            let scope = quoted(&resource.scopes_required.join(" "));
            let challenge = format!("{metadata}, error=\"insufficient_scope\", scope=\"{scope}\"");
            (
                403,
                "insufficient_scope",
                format!("requires scope: {scope}"),
                Some(challenge),
            )
        }
        DenyReason::NoKeys => (
            503,
            "temporarily_unavailable",
            "token verification keys are not available".to_owned(),
            None,
        ),
    };
    let body = serde_json::json!({ "error": error, "error_description": description }).to_string();
    Denial {
        reason,
        status,
        www_authenticate: challenge,
        body,
    }
}

/// A bounded cache of verified tokens. An entry is found by a fast hash of the token
/// ([`Fold`]) and only used when the whole token is the same, so no other token can hit it;
/// only tokens whose signature verified are ever inserted, so nobody chooses the entries.
/// (Keyed by the token's SHA-256, a hit cost ~25k more wasm instructions per request.) An entry
/// is never used after its token's `exp`, nor once its signing key has left the key set; hosts
/// should [`clear`](TokenCache::clear) it when the key set changes.
#[derive(Debug)]
pub struct TokenCache {
    entries: HashMap<u64, (Box<str>, Verified), Fold>,
    capacity: usize,
}

/// A fast hash of a token (seeded with its length: its last word is zero-padded).
fn token_hash(token: &str) -> u64 {
    Fold::hash(token.len() as u64, token.as_bytes())
}

/// Whether two tokens are the same, compared a word at a time.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && words(a.as_bytes()).eq(words(b.as_bytes()))
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            entries: HashMap::default(),
            capacity,
        }
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn get(&self, token: &str, keys: &KeySet, now: u64) -> Option<&Verified> {
        self.entries
            .get(&token_hash(token))
            .filter(|(cached, _)| same_token(cached, token))
            .map(|(_, v)| v)
            .filter(|v| now < v.claims.exp && keys.get(&v.kid).is_some())
    }

    fn insert(&mut self, token: &str, verified: Verified, now: u64) {
        if self.capacity == 0 || now >= verified.claims.exp {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, v)| now < v.claims.exp);
        }
        if self.entries.len() >= self.capacity {
            // Still full of live tokens: drop one (an arbitrary one; cheap and still bounded).
            let victim = self.entries.keys().next().copied();
            if let Some(victim) = victim {
                self.entries.remove(&victim);
            }
        }
        // Two live tokens with one hash: the newer one takes the entry.
        self.entries
            .insert(token_hash(token), (token.into(), verified));
    }
}

/// Decides a request: `authorization` is the request's `Authorization` header value (if any),
/// `resource` the matched resource, `now` seconds since the Unix epoch. With a `cache`, a token
/// whose signature was verified before is not verified again (its claims still are).
pub fn authenticate(
    authorization: Option<&str>,
    resource: &Resource,
    keys: &KeySet,
    options: &VerifyOptions,
    now: u64,
    cache: Option<&mut TokenCache>,
) -> Decision {
    let Some(token) = authorization.and_then(bearer_token) else {
        return Decision::Deny(deny(DenyReason::MissingToken, resource));
    };
    if keys.is_empty() {
        return Decision::Deny(deny(DenyReason::NoKeys, resource));
    }
    if let Some(v) = cache.as_deref().and_then(|c| c.get(token, keys, now)) {
        return admit(&v.claims, resource, options, now);
    }
    match verify_signature(token, keys, options) {
        Ok(v) => {
            let decision = admit(&v.claims, resource, options, now);
            if let Some(cache) = cache {
                cache.insert(token, v, now);
            }
            decision
        }
        Err(e) => Decision::Deny(deny(DenyReason::InvalidToken(e), resource)),
    }
}

/// The decision for a token whose signature is good: its claims, then the resource's scopes.
fn admit(
    claims: &AccessTokenClaims,
    resource: &Resource,
    options: &VerifyOptions,
    now: u64,
) -> Decision {
    if let Err(e) = check_claims(claims, resource, options, now) {
        return Decision::Deny(deny(DenyReason::InvalidToken(e), resource));
    }
    if !resource
        .scopes_required
        .iter()
        .all(|s| claims.scope.contains(s))
    {
        return Decision::Deny(deny(DenyReason::InsufficientScope, resource));
    }
    Decision::Allow(Identity::from_claims(claims, &resource.canonical_url))
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
