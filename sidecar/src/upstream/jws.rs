//! Signature check of an upstream provider's ID token (a compact JWS) against its JWKS.
//!
//! Core's token verifier is for our own access tokens (it requires `typ: at+jwt` and access-token
//! claims); ID tokens are a different token type, so this reads their header itself and shares
//! the key parsing ([`KeySet`]: which keys are usable, for which algorithms) and the signature
//! check ([`check_signature`]). The caller checks the claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgw_core::auth::{VerifyError, check_signature};
use mcpgw_core::jwk::{Algorithm, Jwks, KeySet};
use serde::Deserialize;

/// Longest ID token accepted.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// Why a JWS did not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three base64url parts with a JSON header and payload.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not one we verify (`none` and HMAC never are).
    #[error("unsupported algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The header has `crit`, which we do not understand.
    #[error("token has critical header parameters")]
    CriticalHeader,
    /// No key in the provider's JWKS has the token's `kid`.
    #[error("no key `{0}` in the provider's JWKS")]
    UnknownKeyId(String),
    /// The token has no `kid` (core's key set indexes keys by `kid`).
    #[error("token header has no `kid`")]
    MissingKeyId,
    /// The key cannot verify this algorithm.
    #[error("key does not match the algorithm")]
    KeyAlgorithmMismatch,
    /// The signature is wrong.
    #[error("bad signature")]
    BadSignature,
}

/// A provider's signing keys, as core's parsed view of its JWKS.
#[derive(Clone, Debug, Default)]
pub struct ProviderKeys {
    set: KeySet,
}

impl ProviderKeys {
    /// Parses a JWKS; unusable keys are returned with the reason (for a log line).
    pub fn new(jwks: Jwks) -> (ProviderKeys, Vec<mcpgw_core::jwk::KeyError>) {
        let (set, errors) = KeySet::from_jwks(&jwks);
        (ProviderKeys { set }, errors)
    }
}

/// Verifies `token`'s signature with the key its header names and returns the decoded payload.
pub fn verify(token: &str, keys: &ProviderKeys) -> Result<Vec<u8>, JwsError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwsError::Malformed);
    }
    let (signing_input, signature_b64) = token.rsplit_once('.').ok_or(JwsError::Malformed)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(JwsError::Malformed)?;
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| JwsError::Malformed);
    let header: Header =
        serde_json::from_slice(&decode(header_b64)?).map_err(|_| JwsError::Malformed)?;
    let alg = Algorithm::from_name(&header.alg)
        .ok_or_else(|| JwsError::UnsupportedAlgorithm(header.alg.clone()))?;
    if header.crit.is_some() {
        return Err(JwsError::CriticalHeader);
    }
    let kid = header.kid.ok_or(JwsError::MissingKeyId)?;
    let entry = keys.set.get(&kid).ok_or(JwsError::UnknownKeyId(kid))?;
    if !entry.allows(alg) {
        return Err(JwsError::KeyAlgorithmMismatch);
    }
    let signature = decode(signature_b64)?;
    check_signature(alg, entry, signing_input.as_bytes(), &signature).map_err(|e| match e {
        VerifyError::KeyAlgorithmMismatch => JwsError::KeyAlgorithmMismatch,
        _ => JwsError::BadSignature,
    })?;
    decode(payload_b64)
}

#[cfg(test)]
mod tests {
    use mcpgw_core::signing::SigningKey;

    use super::*;

    fn keys(key: &SigningKey) -> ProviderKeys {
        ProviderKeys::new(Jwks {
            keys: vec![key.public_jwk("k1")],
        })
        .0
    }

    #[test]
    fn verifies_signed_tokens_and_refuses_tampering() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let set = keys(&key);
        let token = key.sign_raw(r#"{"alg":"ES256","kid":"k1"}"#, r#"{"sub":"alice"}"#);
        assert_eq!(
            verify(&token, &set).unwrap(),
            br#"{"sub":"alice"}"#.to_vec()
        );

        let forged_payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"mallory"}"#);
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(verify(&forged, &set), Err(JwsError::BadSignature));

        let other = SigningKey::generate(Algorithm::ES256).unwrap();
        let foreign = other.sign_raw(r#"{"alg":"ES256","kid":"k1"}"#, r#"{"sub":"alice"}"#);
        assert_eq!(verify(&foreign, &set), Err(JwsError::BadSignature));
    }

    #[test]
    fn refuses_none_unknown_keys_and_critical_headers() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let set = keys(&key);
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert!(matches!(
            verify(&none, &set),
            Err(JwsError::UnsupportedAlgorithm(_))
        ));
        let unknown = key.sign_raw(r#"{"alg":"ES256","kid":"k2"}"#, "{}");
        assert_eq!(
            verify(&unknown, &set),
            Err(JwsError::UnknownKeyId("k2".into()))
        );
        let no_kid = key.sign_raw(r#"{"alg":"ES256"}"#, "{}");
        assert_eq!(verify(&no_kid, &set), Err(JwsError::MissingKeyId));
        let crit = key.sign_raw(r#"{"alg":"ES256","kid":"k1","crit":["x"]}"#, "{}");
        assert_eq!(verify(&crit, &set), Err(JwsError::CriticalHeader));
        let wrong_alg = key.sign_raw(r#"{"alg":"RS256","kid":"k1"}"#, "{}");
        assert_eq!(
            verify(&wrong_alg, &set),
            Err(JwsError::KeyAlgorithmMismatch)
        );
        assert_eq!(verify("a.b", &set), Err(JwsError::Malformed));
    }
}
