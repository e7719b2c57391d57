//! The signing key ring: the current key (signs every new access token) and the keys it replaced
//! while tokens they signed may still be accepted (still published in the JWKS, so a rotation
//! never invalidates a live token). The ring persists as one versioned JSON document, either
//! `keys.json` in the configured keys directory or the Redis key `oauth:keys`, so keys survive
//! restarts and every replica signs with the same key. Rotation happens by command
//! (`mcpgw-sidecar rotate-keys`) or on a schedule; running replicas reload the ring every
//! [`RELOAD_INTERVAL`], and write theirs back when the storage lost it (Redis emptied).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgw_core::auth::{DEFAULT_LEEWAY_SECS, TokenCache};
use mcpgw_core::jwk::{Algorithm, Jwks, KeySet};
use mcpgw_core::signing::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::store::{Store, StoreError, hash};

/// How often a running sidecar re-reads the ring (to pick up a rotation made elsewhere, or to
/// write it back when the storage lost it).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Verified tokens remembered by `/verify` (signature checks skipped for them).
const TOKEN_CACHE_CAPACITY: usize = 10_000;
const STORE_KEY: &str = "keys";
const FILE_NAME: &str = "keys.json";
const FORMAT_VERSION: u32 = 1;

/// Why the key ring could not be loaded, created or saved.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The keys file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The stored ring does not parse or holds an unusable key.
    #[error("the stored signing keys are unusable: {0}")]
    Corrupt(String),
    /// Key generation failed.
    #[error(transparent)]
    Generate(#[from] mcpgw_core::signing::KeyGenError),
}

/// One stored key (private key material base64url; never logged).
#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: Algorithm,
    created: u64,
    /// P-256/Ed25519: the 32-byte scalar/seed; RSA: PKCS#8 DER.
    private: String,
}

#[derive(Serialize, Deserialize)]
struct StoredRing {
    version: u32,
    /// Newest first: the current key, then the keys it replaced.
    keys: Vec<StoredKey>,
}

/// The stored ring's JSON as it was read or written (private keys: never logged).
struct RingJson(String);

impl std::fmt::Debug for RingJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RingJson(..)")
    }
}

impl StoredKey {
    fn generate(alg: Algorithm, now: u64) -> Result<StoredKey, KeyRingError> {
        let key = SigningKey::generate(alg)?;
        let private = match &key {
            SigningKey::P256(k) => k.to_bytes().to_vec(),
            SigningKey::Ed25519(k) => k.to_bytes().to_vec(),
            SigningKey::Rsa(k, _) => k
                .to_pkcs8_der()
                .map_err(|e| KeyRingError::Corrupt(e.to_string()))?
                .as_bytes()
                .to_vec(),
        };
        // The kid: a digest of the public key, so the same key always has the same id.
        let jwk = serde_json::to_string(&key.public_jwk("")).unwrap_or_default();
        let kid = hash(&jwk)[..16].to_owned();
        Ok(StoredKey {
            kid,
            alg,
            created: now,
            private: URL_SAFE_NO_PAD.encode(private),
        })
    }

    fn signing_key(&self) -> Result<SigningKey, KeyRingError> {
        let bad = |what: &str| KeyRingError::Corrupt(format!("key `{}`: {what}", self.kid));
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.private)
            .map_err(|_| bad("not base64url"))?;
        match self.alg {
            Algorithm::ES256 => p256::ecdsa::SigningKey::from_slice(&bytes)
                .map(SigningKey::P256)
                .map_err(|_| bad("not a P-256 key")),
            Algorithm::EdDSA => <[u8; 32]>::try_from(bytes.as_slice())
                .map(|b| SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&b)))
                .map_err(|_| bad("not an Ed25519 key")),
            Algorithm::RS256 | Algorithm::PS256 => rsa::RsaPrivateKey::from_pkcs8_der(&bytes)
                .map(|k| SigningKey::Rsa(Box::new(k), self.alg))
                .map_err(|_| bad("not an RSA key")),
        }
    }
}

/// The loaded ring: the signing key, the published JWKS and the parsed verification keys.
#[derive(Debug)]
pub struct KeyRing {
    /// `kid` of the current key.
    pub kid: String,
    /// Creation time of the current key.
    pub created: u64,
    /// The current key.
    pub signing: SigningKey,
    /// The public keys (current first).
    pub jwks: Jwks,
    /// The same keys, parsed for verification (`/verify`, introspection).
    pub keyset: KeySet,
    /// Tokens whose signature `/verify` has checked (cleared with every new ring).
    pub cache: Mutex<TokenCache>,
    /// The document this ring was read from, to write back when the storage lost it.
    stored: RingJson,
}

impl KeyRing {
    fn from_stored(ring: &StoredRing, json: String) -> Result<KeyRing, KeyRingError> {
        if ring.version != FORMAT_VERSION {
            return Err(KeyRingError::Corrupt(format!(
                "unknown format version {}",
                ring.version
            )));
        }
        let Some(current) = ring.keys.first() else {
            return Err(KeyRingError::Corrupt("no keys".into()));
        };
        let mut jwks = Jwks::default();
        let mut signing = None;
        for stored in &ring.keys {
            let key = stored.signing_key()?;
            jwks.keys.push(key.public_jwk(&stored.kid));
            if signing.is_none() {
                signing = Some(key);
            }
        }
        let (keyset, errors) = KeySet::from_jwks(&jwks);
        if let Some(e) = errors.first() {
            return Err(KeyRingError::Corrupt(e.to_string()));
        }
        let signing = signing.ok_or_else(|| KeyRingError::Corrupt("no keys".into()))?;
        Ok(KeyRing {
            kid: current.kid.clone(),
            created: current.created,
            signing,
            jwks,
            keyset,
            cache: Mutex::new(TokenCache::new(TOKEN_CACHE_CAPACITY)),
            stored: RingJson(json),
        })
    }
}

/// Where the ring is persisted.
#[derive(Debug, Clone)]
pub enum KeyStorage {
    /// `keys.json` in this directory.
    Dir(PathBuf),
    /// The Redis key `oauth:keys`.
    Redis(Store),
}

impl KeyStorage {
    async fn read(&self) -> Result<Option<String>, KeyRingError> {
        match self {
            KeyStorage::Redis(store) => Ok(store.get_raw(STORE_KEY).await?),
            KeyStorage::Dir(dir) => {
                let path = dir.join(FILE_NAME);
                match tokio::fs::read_to_string(&path).await {
                    Ok(s) => Ok(Some(s)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(KeyRingError::Io(path, e)),
                }
            }
        }
    }

    /// Writes the ring; `only_if_absent` makes the first of several starting replicas win.
    async fn write(&self, json: &str, only_if_absent: bool) -> Result<bool, KeyRingError> {
        match self {
            KeyStorage::Redis(store) if only_if_absent => {
                Ok(store.set_raw_nx(STORE_KEY, json).await?)
            }
            KeyStorage::Redis(store) => {
                store.set_raw(STORE_KEY, json).await?;
                Ok(true)
            }
            KeyStorage::Dir(dir) => write_private_file(dir, json).await.map(|()| true),
        }
    }
}

async fn write_private_file(dir: &Path, json: &str) -> Result<(), KeyRingError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |p: &Path| {
        let p = p.to_owned();
        move |e| KeyRingError::Io(p, e)
    };
    tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let final_path = dir.join(FILE_NAME);
    let (tmp2, json) = (tmp.clone(), json.to_owned());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp2)?;
        f.write_all(json.as_bytes())?;
        f.sync_all()
    })
    .await
    .map_err(|e| KeyRingError::Io(tmp.clone(), std::io::Error::other(e)))?
    .map_err(io(&tmp))?;
    tokio::fs::rename(&tmp, &final_path)
        .await
        .map_err(io(&final_path))
}

/// The live key ring shared by all handlers.
#[derive(Debug)]
pub struct Keys {
    storage: KeyStorage,
    alg: Algorithm,
    /// How long a replaced key stays in the ring (the longest a token it signed is accepted).
    keep: Duration,
    ring: RwLock<Arc<KeyRing>>,
}

impl Keys {
    /// Loads the ring from `storage`, creating a first `alg` key when there is none. A key
    /// replaced by a rotation stays for `keep` (the access-token lifetime plus the leeway).
    pub async fn load_or_create(
        storage: KeyStorage,
        alg: Algorithm,
        keep: Duration,
        now: u64,
    ) -> Result<Keys, KeyRingError> {
        let ring = match storage.read().await? {
            Some(json) => parse(&json)?,
            None => {
                let stored = StoredRing {
                    version: FORMAT_VERSION,
                    keys: vec![StoredKey::generate(alg, now)?],
                };
                let json = serde_json::to_string(&stored)
                    .map_err(|e| KeyRingError::Corrupt(e.to_string()))?;
                if storage.write(&json, true).await? {
                    tracing::info!(kid = %stored.keys[0].kid, alg = alg.as_str(), "created a signing key");
                    KeyRing::from_stored(&stored, json)?
                } else {
                    // Another replica created the ring first: use theirs.
                    let json = storage
                        .read()
                        .await?
                        .ok_or_else(|| KeyRingError::Corrupt("vanished".into()))?;
                    parse(&json)?
                }
            }
        };
        Ok(Keys {
            storage,
            alg,
            keep,
            ring: RwLock::new(Arc::new(ring)),
        })
    }

    /// The current ring.
    pub fn current(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(r) => r.clone(),
            // A panic while holding the lock cannot leave the Arc half-written: keep using it.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, ring: KeyRing) {
        let ring = Arc::new(ring);
        match self.ring.write() {
            Ok(mut r) => *r = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
    }

    /// Re-reads the stored ring, adopting it when it changed. When the storage lost it (Redis
    /// emptied), writes this ring back unless another replica did first, so tokens signed before
    /// keep verifying across the next restart.
    pub async fn reload(&self) -> Result<(), KeyRingError> {
        match self.storage.read().await? {
            Some(json) => {
                if json != self.current().stored.0 {
                    let ring = parse(&json)?;
                    tracing::info!(kid = %ring.kid, "adopted a rotated signing key ring");
                    self.replace(ring);
                }
            }
            None => {
                let ring = self.current();
                if self.storage.write(&ring.stored.0, true).await? {
                    tracing::warn!(kid = %ring.kid, "the signing key ring was missing from its storage (Redis lost its data?); wrote it back");
                }
            }
        }
        Ok(())
    }

    /// Rotates: a new current key; the keys it replaces stay (still in the JWKS) while tokens
    /// they signed may be accepted, older ones are dropped. Returns the new `kid`.
    pub async fn rotate(&self, now: u64) -> Result<String, KeyRingError> {
        let kid = rotate_stored(&self.storage, self.alg, self.keep, now).await?;
        self.reload().await?;
        Ok(kid)
    }

    /// Rotates when the current key is older than `every`.
    pub async fn rotate_if_due(&self, every: Duration, now: u64) -> Result<(), KeyRingError> {
        self.reload().await?;
        if now.saturating_sub(self.current().created) >= every.as_secs() {
            let kid = self.rotate(now).await?;
            tracing::info!(%kid, "rotated the signing key on schedule");
        }
        Ok(())
    }
}

/// How long a key replaced by a rotation stays: the access-token lifetime plus the verifiers'
/// clock leeway, the longest a token it signed is accepted.
pub fn keep_replaced_keys(config: &Config) -> Duration {
    config.tokens.access_token + Duration::from_secs(DEFAULT_LEEWAY_SECS)
}

fn parse(json: &str) -> Result<KeyRing, KeyRingError> {
    let stored: StoredRing =
        serde_json::from_str(json).map_err(|e| KeyRingError::Corrupt(e.to_string()))?;
    KeyRing::from_stored(&stored, json.to_owned())
}

/// Rotates the ring in `storage` (used by the `rotate-keys` command and [`Keys::rotate`]): a
/// new current key; a replaced key stays until `keep` after its successor was made.
pub async fn rotate_stored(
    storage: &KeyStorage,
    alg: Algorithm,
    keep: Duration,
    now: u64,
) -> Result<String, KeyRingError> {
    let mut keys: Vec<StoredKey> = match storage.read().await? {
        Some(json) => {
            serde_json::from_str::<StoredRing>(&json)
                .map_err(|e| KeyRingError::Corrupt(e.to_string()))?
                .keys
        }
        None => Vec::new(),
    };
    let new = StoredKey::generate(alg, now)?;
    let kid = new.kid.clone();
    keys.insert(0, new);
    // Each key was replaced when the one before it (newer) was made.
    let replaced_at: Vec<u64> = keys.iter().map(|k| k.created).collect();
    let keys = keys
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || now < replaced_at[i - 1].saturating_add(keep.as_secs()))
        .map(|(_, k)| k)
        .collect();
    let stored = StoredRing {
        version: FORMAT_VERSION,
        keys,
    };
    let json = serde_json::to_string(&stored).map_err(|e| KeyRingError::Corrupt(e.to_string()))?;
    storage.write(&json, false).await?;
    Ok(kid)
}
