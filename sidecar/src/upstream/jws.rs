//! Signature check of an upstream provider's ID token (a compact JWS) against its JWKS.
//!
//! Core's JWS check ([`verify_jws`]) does it, as for our own access tokens, without their `typ`
//! rule (ID tokens are another token type); the caller checks the claims.

use mcpgw_core::auth::{JwsRules, VerifyError, verify_jws};
use mcpgw_core::jwk::{Algorithm, Jwks, KeySet};

/// Longest ID token accepted.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a JWS did not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three base64url parts with a JSON header and payload.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not one we verify (`none` and HMAC never are).
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
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

/// Verifies `token`'s signature with the key its header names and returns the decoded payload:
/// core's JWS check ([`verify_jws`]) with every algorithm core verifies and no `typ` rule.
pub fn verify(token: &str, keys: &ProviderKeys) -> Result<Vec<u8>, JwsError> {
    let rules = JwsRules {
        algorithms: &Algorithm::ALL,
        max_bytes: MAX_TOKEN_BYTES,
        access_token: false,
    };
    verify_jws(token, &keys.set, &rules)
        .map(|(_, payload)| payload)
        .map_err(|e| match e {
            VerifyError::UnsupportedAlgorithm | VerifyError::AlgorithmNotAllowed(_) => {
                JwsError::UnsupportedAlgorithm
            }
            VerifyError::CriticalHeader => JwsError::CriticalHeader,
            VerifyError::UnknownKeyId(kid) => JwsError::UnknownKeyId(kid),
            VerifyError::MissingKeyId => JwsError::MissingKeyId,
            VerifyError::KeyAlgorithmMismatch => JwsError::KeyAlgorithmMismatch,
            VerifyError::BadSignature => JwsError::BadSignature,
            _ => JwsError::Malformed,
        })
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
        assert_eq!(verify(&none, &set), Err(JwsError::UnsupportedAlgorithm));
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
