//! A keyed hasher for the node and link tables, which every gossip entry and every
//! tick look up: std's SipHash over a 40-byte node id, and over a link id for each node
//! at each tick, was a sixth of a 100-node chaos simulation. Keyed per node (from its
//! seed), so a peer cannot choose ids that collide everywhere.

use std::hash::{BuildHasher, Hasher};

#[derive(Clone, Copy, Debug)]
pub(crate) struct FastState {
    key: u64,
}

impl FastState {
    pub(crate) fn new(key: u64) -> FastState {
        FastState { key }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.key)
    }
}

pub(crate) struct FastHasher(u64);

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl FastHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(MULTIPLIER).rotate_left(26);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ (rest.len() as u64) << 59);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Murmur3's finalizer: every input bit reaches the top bits hashbrown tags with.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn ids_that_differ_anywhere_hash_apart_and_tables_work() {
        let state = FastState::new(7);
        let mut hashes = HashSet::new();
        let base = [b'a'; 40];
        for at in 0..40 {
            for byte in [b'0', b'f'] {
                let mut id = base;
                id[at] = byte;
                assert!(hashes.insert(state.hash_one(id)), "{at} {byte}");
            }
        }
        let mut table: HashMap<[u8; 40], usize, FastState> = HashMap::with_hasher(state);
        for (i, at) in (0..40).enumerate() {
            let mut id = base;
            id[at] = b'z';
            table.insert(id, i);
        }
        for (i, at) in (0..40).enumerate() {
            let mut id = base;
            id[at] = b'z';
            assert_eq!(table.get(&id), Some(&i));
        }
        assert_eq!(table.get(&base), None);
        // Another key, other hashes.
        assert_ne!(FastState::new(8).hash_one(base), state.hash_one(base));
    }
}
