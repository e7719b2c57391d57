//! Signing access tokens (feature `signing`): key generation, the public JWK of a key, and
//! compact JWS signing for every algorithm [`crate::auth`] verifies. The tests of every part use
//! it to mint real tokens; verification never needs it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use sha2::Sha256;

use crate::jwk::{Algorithm, Jwk};

/// A private signing key.
#[derive(Clone, Debug)]
pub enum SigningKey {
    /// ES256.
    P256(p256::ecdsa::SigningKey),
    /// EdDSA (Ed25519).
    Ed25519(ed25519_dalek::SigningKey),
    /// RS256 or PS256, by the algorithm given.
    Rsa(Box<rsa::RsaPrivateKey>, Algorithm),
}

/// Why a key could not be generated.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate an RSA key: {0}")]
pub struct KeyGenError(#[from] rsa::Error);

impl SigningKey {
    /// A fresh key for `alg` (RSA keys are 2048 bits).
    pub fn generate(alg: Algorithm) -> Result<SigningKey, KeyGenError> {
        match alg {
            Algorithm::ES256 => Ok(SigningKey::P256(p256::ecdsa::SigningKey::random(
                &mut rand::rngs::OsRng,
            ))),
            Algorithm::EdDSA => Ok(SigningKey::Ed25519(ed25519_dalek::SigningKey::generate(
                &mut rand::rngs::OsRng,
            ))),
            Algorithm::RS256 | Algorithm::PS256 => SigningKey::generate_rsa(alg, 2048),
        }
    }

    /// A fresh RSA key of `bits` bits for RS256 or PS256.
    pub fn generate_rsa(alg: Algorithm, bits: usize) -> Result<SigningKey, KeyGenError> {
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)?;
        Ok(SigningKey::Rsa(Box::new(key), alg))
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            SigningKey::P256(_) => Algorithm::ES256,
            SigningKey::Ed25519(_) => Algorithm::EdDSA,
            SigningKey::Rsa(_, alg) => *alg,
        }
    }

    /// The public JWK, with `kid`, `use: sig` and `alg` set.
    pub fn public_jwk(&self, kid: &str) -> Jwk {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut jwk = Jwk {
            kid: Some(kid.to_owned()),
            use_: Some("sig".to_owned()),
            alg: Some(self.algorithm().as_str().to_owned()),
            ..Jwk::default()
        };
        match self {
            SigningKey::P256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                jwk.kty = "EC".into();
                jwk.crv = Some("P-256".into());
                jwk.x = point.x().map(|x| b64(x));
                jwk.y = point.y().map(|y| b64(y));
            }
            SigningKey::Ed25519(k) => {
                jwk.kty = "OKP".into();
                jwk.crv = Some("Ed25519".into());
                jwk.x = Some(b64(k.verifying_key().as_bytes()));
            }
            SigningKey::Rsa(k, _) => {
                jwk.kty = "RSA".into();
                jwk.n = Some(b64(&k.n().to_bytes_be()));
                jwk.e = Some(b64(&k.e().to_bytes_be()));
            }
        }
        jwk
    }

    /// The raw signature over `signing_input` (`base64url(header) . base64url(payload)`).
    pub fn sign_bytes(&self, signing_input: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(signing_input);
                sig.to_bytes().to_vec()
            }
            SigningKey::Ed25519(k) => k.sign(signing_input).to_bytes().to_vec(),
            SigningKey::Rsa(k, Algorithm::PS256) => {
                rsa::pss::BlindedSigningKey::<Sha256>::new((**k).clone())
                    .sign_with_rng(&mut rand::rngs::OsRng, signing_input)
                    .to_vec()
            }
            SigningKey::Rsa(k, _) => rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone())
                .sign(signing_input)
                .to_vec(),
        }
    }

    /// Signs a compact JWS from the exact header and payload JSON given.
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(payload_json)
        );
        let signature = URL_SAFE_NO_PAD.encode(self.sign_bytes(input.as_bytes()));
        format!("{input}.{signature}")
    }

    /// Signs an access token (`typ: at+jwt`, RFC 9068) with header `alg` and `kid`.
    pub fn sign_access_token(
        &self,
        kid: &str,
        claims: &impl Serialize,
    ) -> Result<String, serde_json::Error> {
        let header = serde_json::json!({
            "alg": self.algorithm().as_str(),
            "typ": "at+jwt",
            "kid": kid,
        });
        Ok(self.sign_raw(&header.to_string(), &serde_json::to_string(claims)?))
    }
}
