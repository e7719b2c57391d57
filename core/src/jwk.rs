//! JSON Web Keys (RFC 7517) as they travel (the sidecar publishes its public keys with [`Jwks`])
//! and as they are used: a [`KeySet`] of parsed verifying keys, selected by `kid`, each bound to
//! the algorithms its type and its own `alg`/`use` allow. Parsing happens once per key-set
//! refresh, never per request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The smallest RSA modulus accepted, in bits.
pub const RSA_MIN_BITS: usize = 2048;
/// The largest RSA modulus accepted, in bits.
pub const RSA_MAX_BITS: usize = 4096;

/// A JSON Web Key Set (RFC 7517 §5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One public JSON Web Key (RFC 7517 §4, RFC 7518 §6, RFC 8037). Members this crate does not
/// use (`x5c`, ...) are ignored when reading.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC`, `OKP` or `RSA`.
    pub kty: String,
    /// Key id; tokens select their key by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended use; only `sig` keys verify tokens.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// The one algorithm this key may be used with (`ES256`, `EdDSA`, `RS256`, `PS256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Curve: `P-256` (EC) or `Ed25519` (OKP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate or OKP public key, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// A JWS algorithm this crate verifies (RFC 7518 §3, RFC 8037 §3.1). `none` and the HMAC
/// algorithms are not representable, so a public key can never be used as an HMAC secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256.
    PS256,
}

impl Algorithm {
    /// Every algorithm this crate verifies.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::PS256,
    ];

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
        }
    }

    /// Parses a JOSE `alg` name; `None` for anything this crate does not verify.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Why a JWK could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key has no `kid`, so no token can select it.
    #[error("key has no `kid`")]
    MissingKeyId,
    /// `use` is present and not `sig`.
    #[error("key `{0}`: `use` is not `sig`")]
    NotForSignatures(String),
    /// The key type / curve is not one this crate supports.
    #[error("key `{0}`: unsupported key type or curve")]
    UnsupportedKeyType(String),
    /// `alg` is present and not one this crate verifies, or does not fit the key type.
    #[error("key `{0}`: `alg` is unsupported or does not fit the key type")]
    UnsupportedAlgorithm(String),
    /// A member is missing or is not valid base64url / key material.
    #[error("key `{0}`: invalid or missing key material")]
    InvalidKeyMaterial(String),
    /// An RSA modulus outside 2048–4096 bits.
    #[error("key `{0}`: RSA modulus must be 2048 to 4096 bits")]
    RsaKeySize(String),
}

/// A parsed public key.
#[derive(Clone, Debug)]
pub enum VerifyingKey {
    /// A P-256 ECDSA key.
    P256(p256::ecdsa::VerifyingKey),
    /// An Ed25519 key.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// An RSA key of 2048–4096 bits.
    Rsa(rsa::RsaPublicKey),
}

/// One usable key of a [`KeySet`].
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// The `kid`.
    pub kid: String,
    /// The algorithm the JWK pinned with `alg`, if it did.
    pub alg: Option<Algorithm>,
    /// The key.
    pub key: VerifyingKey,
    /// The same key for the faster verifiers.
    fast: FastKey,
}

/// A key again, as the verifier crates that are fastest on wasm32 take it (`p256` 0.14 and `rsa`
/// 0.10, see the workspace manifest): what [`crate::auth`] verifies with. [`VerifyingKey`] keeps
/// the types of the crates the sidecar signs with.
#[derive(Clone, Debug)]
pub(crate) enum FastKey {
    /// A P-256 key.
    P256(p256_v14::ecdsa::VerifyingKey),
    /// An RSA key.
    Rsa(Box<rsa_v010::RsaPublicKey>),
    /// Ed25519 keys are verified as [`VerifyingKey::Ed25519`].
    Ed25519,
}

impl KeyEntry {
    /// The key as [`crate::auth`] verifies with it.
    pub(crate) fn fast(&self) -> &FastKey {
        &self.fast
    }

    /// Whether tokens signed with `alg` may be verified with this key.
    pub fn allows(&self, alg: Algorithm) -> bool {
        let fits_type = matches!(
            (&self.key, alg),
            (VerifyingKey::P256(_), Algorithm::ES256)
                | (VerifyingKey::Ed25519(_), Algorithm::EdDSA)
                | (VerifyingKey::Rsa(_), Algorithm::RS256 | Algorithm::PS256)
        );
        fits_type && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// The verifying keys, by `kid`.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<KeyEntry>,
}

impl KeySet {
    /// Parses every usable key; the unusable ones are returned with the reason (for a log line),
    /// never silently dropped. A later key with an already-seen `kid` is ignored.
    pub fn from_jwks(jwks: &Jwks) -> (KeySet, Vec<KeyError>) {
        let mut set = KeySet::default();
        let mut errors = Vec::new();
        for jwk in &jwks.keys {
            match parse_jwk(jwk) {
                Ok(entry) if set.get(&entry.kid).is_none() => set.keys.push(entry),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        (set, errors)
    }

    /// Parses a JWKS document (JSON).
    pub fn from_json(json: &[u8]) -> Result<(KeySet, Vec<KeyError>), serde_json::Error> {
        let jwks: Jwks = serde_json::from_slice(json)?;
        Ok(KeySet::from_jwks(&jwks))
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&KeyEntry> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Whether there is no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many usable keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

fn b64(field: Option<&String>, kid: &str) -> Result<Vec<u8>, KeyError> {
    let invalid = || KeyError::InvalidKeyMaterial(kid.to_owned());
    URL_SAFE_NO_PAD
        .decode(field.ok_or_else(invalid)?)
        .map_err(|_| invalid())
}

fn parse_jwk(jwk: &Jwk) -> Result<KeyEntry, KeyError> {
    let kid = jwk.kid.clone().ok_or(KeyError::MissingKeyId)?;
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(KeyError::NotForSignatures(kid));
    }
    let alg = match &jwk.alg {
        None => None,
        Some(name) => Some(
            Algorithm::from_name(name)
                .ok_or_else(|| KeyError::UnsupportedAlgorithm(kid.clone()))?,
        ),
    };
    let invalid = || KeyError::InvalidKeyMaterial(kid.clone());
    let (key, fast) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("EC", Some("P-256")) => {
            let (x, y) = (b64(jwk.x.as_ref(), &kid)?, b64(jwk.y.as_ref(), &kid)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(invalid());
            }
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            // Both reject points not on the curve and the identity.
            (
                VerifyingKey::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| invalid())?,
                ),
                FastKey::P256(
                    p256_v14::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| invalid())?,
                ),
            )
        }
        ("OKP", Some("Ed25519")) => {
            let x: [u8; 32] = b64(jwk.x.as_ref(), &kid)?
                .try_into()
                .map_err(|_| invalid())?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| invalid())?;
            (VerifyingKey::Ed25519(key), FastKey::Ed25519)
        }
        ("RSA", _) => {
            let (n_bytes, e_bytes) = (b64(jwk.n.as_ref(), &kid)?, b64(jwk.e.as_ref(), &kid)?);
            let n = rsa::BigUint::from_bytes_be(&n_bytes);
            let e = rsa::BigUint::from_bytes_be(&e_bytes);
            if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&n.bits()) {
                return Err(KeyError::RsaKeySize(kid));
            }
            let fast = rsa_v010::RsaPublicKey::new(
                rsa_v010::BoxedUint::from_be_slice_vartime(&n_bytes),
                rsa_v010::BoxedUint::from_be_slice_vartime(&e_bytes),
            )
            .map_err(|_| invalid())?;
            (
                VerifyingKey::Rsa(
                    rsa::RsaPublicKey::new_with_max_size(n, e, RSA_MAX_BITS)
                        .map_err(|_| invalid())?,
                ),
                FastKey::Rsa(Box::new(fast)),
            )
        }
        _ => return Err(KeyError::UnsupportedKeyType(kid)),
    };
    let entry = KeyEntry {
        kid,
        alg,
        key,
        fast,
    };
    if let Some(pinned) = alg
        && !entry.allows(pinned)
    {
        return Err(KeyError::UnsupportedAlgorithm(entry.kid));
    }
    Ok(entry)
}
