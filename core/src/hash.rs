//! The hash of the maps on the request path (the token cache, the condition memory, the policy
//! filter's streams): a multiply-fold over 8-byte words, a few instructions a word where SipHash
//! takes dozens. Each map seeds it once from `RandomState`, so nobody can aim keys at one bucket
//! without knowing the seed.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// The fold's multiplier (2⁶⁴ / φ).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hasher, and its own builder: a map holds one seeded `Fold` and hashes each key with a
/// copy of it.
#[derive(Debug, Clone, Copy)]
pub struct Fold(u64);

impl Fold {
    /// `bytes` hashed with `seed` (callers seed with what else tells keys apart, such as the
    /// length, since the last word is zero-padded).
    pub fn hash(seed: u64, bytes: &[u8]) -> u64 {
        let mut h = Fold(seed);
        h.write(bytes);
        h.finish()
    }

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(K);
    }
}

impl Default for Fold {
    /// A fold seeded for this map.
    fn default() -> Self {
        Fold(RandomState::new().hash_one(K))
    }
}

impl Hasher for Fold {
    fn write(&mut self, bytes: &[u8]) {
        words(bytes).for_each(|word| self.add(word));
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for Fold {
    type Hasher = Fold;

    fn build_hasher(&self) -> Fold {
        *self
    }
}

/// The little-endian 8-byte words of `bytes`, the last one zero-padded.
pub fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let whole = bytes.chunks_exact(8);
    let rest = whole.remainder();
    let last = (!rest.is_empty()).then(|| {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        u64::from_le_bytes(word)
    });
    whole
        .map(|chunk| {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .chain(last)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn words_are_little_endian_and_the_last_is_zero_padded() {
        let w: Vec<u64> = words(b"abcdefghij").collect();
        assert_eq!(
            w,
            [
                u64::from_le_bytes(*b"abcdefgh"),
                u64::from(b'i') | u64::from(b'j') << 8
            ]
        );
        assert_eq!(words(b"").count(), 0);
    }

    #[test]
    fn the_same_bytes_and_seed_hash_alike_and_near_neighbours_apart() {
        assert_eq!(Fold::hash(3, b"abc"), Fold::hash(3, b"abc"));
        assert_ne!(Fold::hash(3, b"abc"), Fold::hash(4, b"abc"));
        // Keys that differ in one byte anywhere, and sequential ids, all land apart.
        let base = b"eyJhbGciOiJFUzI1NiJ9.payload.signature".to_vec();
        let mut seen = HashSet::new();
        for i in 0..base.len() {
            let mut key = base.clone();
            key[i] ^= 1;
            assert!(seen.insert(Fold::hash(0, &key)), "byte {i}");
        }
        let fold = Fold::default();
        let ids: HashSet<u64> = (0u32..10_000).map(|id| fold.hash_one(id) >> 57).collect();
        assert_eq!(ids.len(), 128, "sequential ids fill every top-7-bit tag");
    }

    #[test]
    fn each_map_gets_its_own_seed() {
        assert_ne!(
            Fold::default().hash_one(1u32),
            Fold::default().hash_one(1u32)
        );
    }
}
