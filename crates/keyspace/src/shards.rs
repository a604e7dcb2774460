//! Huge hashes and sets as a fixed number of shared shards.
//!
//! A snapshot must keep a value as it stood at its start while writers go on changing
//! it. Serializing a million-field hash for that held its writer 36-57 ms, a
//! million-member set 28-42 ms. Past [`SHARD_AT`] elements such a value is split by
//! element hash into [`SHARDS`] `Arc`'d tables: cloning copies 64 pointers, and a change
//! copies only the shard it touches while a clone still shares it (1/64 of the value).
//!
//! The shard count never changes, so HSCAN/SSCAN keep their guarantee: a cursor names a
//! shard and a position in it, shards are walked from the last down, and inside a shard
//! positions only move down (`swap_remove`) while inserts append, as in one table.

use std::sync::Arc;

use crate::compact::CompactKey;
use crate::shard_map::{element_hash, ShardMap};

/// Elements past which a hash or set table is split into shards (never merged back).
pub const SHARD_AT: usize = if cfg!(test) { 64 } else { 8192 };

/// Shards of a split value.
pub const SHARDS: usize = 64;

/// Cursor bits for a position inside a shard; the shard (plus one) sits above them.
const POSITION_BITS: u32 = 40;
const POSITION_MASK: u64 = (1 << POSITION_BITS) - 1;

type Shard<V> = ShardMap<V>;

/// The shard of an element's hash: bits 26-31, which a shard's index uses neither for
/// the home slot (its low bits, below 2^26 slots) nor for the tag (the top bits above
/// 32 + its slot bits); taking the top bits left every tag in a shard 6 bits weaker.
fn shard_of(hash: u64) -> usize {
    (hash >> 26) as usize % SHARDS
}

/// A split hash (`V` = the field's value) or set (`V` = `()`).
#[derive(Clone)]
pub struct Sharded<V> {
    shards: Vec<Arc<Shard<V>>>,
    len: usize,
}

impl<V: Clone> Sharded<V> {
    /// Splits `items` into shards.
    pub fn split(items: impl ExactSizeIterator<Item = (CompactKey, V)>) -> Sharded<V> {
        let per = items.len() / SHARDS + 1;
        let mut shards: Vec<Shard<V>> = (0..SHARDS).map(|_| Shard::with_capacity(per)).collect();
        for (k, v) in items {
            let hash = element_hash(k.as_bytes());
            shards[shard_of(hash)].insert(hash, k.as_bytes(), v);
        }
        let len = shards.iter().map(|s| s.len()).sum();
        Sharded {
            shards: shards.into_iter().map(Arc::new).collect(),
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        let hash = element_hash(key);
        self.shards[shard_of(hash)].get(hash, key)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        let hash = element_hash(key);
        self.shards[shard_of(hash)].contains(hash, key)
    }

    /// Sets `key`; true if it is new.
    pub fn insert(&mut self, key: &[u8], value: V) -> bool {
        self.replace(key, value).is_none()
    }

    /// Sets `key`; the value it had.
    pub fn replace(&mut self, key: &[u8], value: V) -> Option<V> {
        let hash = element_hash(key);
        let shard = Arc::make_mut(&mut self.shards[shard_of(hash)]);
        let old = shard.insert(hash, key, value);
        self.len += usize::from(old.is_none());
        old
    }

    /// Sets `key` unless `keep` says the value it has should stay (it is equal); the
    /// value it had. One lookup, and a shard a snapshot shares is not copied for a value
    /// that stays.
    pub fn replace_unless(
        &mut self,
        key: &[u8],
        value: V,
        keep: impl FnOnce(&V) -> bool,
    ) -> Option<V> {
        let hash = element_hash(key);
        let at = shard_of(hash);
        match self.shards[at].position(hash, key) {
            Some(i) => {
                let old = self.shards[at].value_at(i);
                if keep(old) {
                    return Some(old.clone());
                }
                // The copy holds the key at the same position.
                let shard = Arc::make_mut(&mut self.shards[at]);
                Some(std::mem::replace(shard.value_at_mut(i), value))
            }
            None => {
                Arc::make_mut(&mut self.shards[at]).insert_new(hash, key, value);
                self.len += 1;
                None
            }
        }
    }

    pub fn remove(&mut self, key: &[u8]) -> bool {
        let hash = element_hash(key);
        let at = shard_of(hash);
        // Not copied for a key it does not hold.
        if !self.shards[at].contains(hash, key) {
            return false;
        }
        let gone = Arc::make_mut(&mut self.shards[at])
            .swap_remove(hash, key)
            .is_some();
        self.len -= usize::from(gone);
        gone
    }

    pub fn iter(&self) -> impl Iterator<Item = (&CompactKey, &V)> + '_ {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// The element at position `i` counting through the shards in order (random draws).
    pub fn at(&self, mut i: usize) -> Option<(&CompactKey, &V)> {
        for shard in &self.shards {
            if i < shard.len() {
                return shard.get_index(i);
            }
            i -= shard.len();
        }
        None
    }

    /// One scan step: up to `count` elements and the next cursor (0 when done). Cursor 0
    /// starts at the top of the last shard; a cursor without a shard (from before the
    /// value was split) starts over, which may repeat elements but misses none.
    pub fn scan(&self, cursor: u64, count: usize) -> (u64, Vec<(&CompactKey, &V)>) {
        let (shard, top) = match cursor >> POSITION_BITS {
            0 => (SHARDS - 1, POSITION_MASK),
            s => (((s - 1) as usize).min(SHARDS - 1), cursor & POSITION_MASK),
        };
        let table = &self.shards[shard];
        let (window, next) =
            crate::collections::scan_window(table.len(), top.min(table.len() as u64), count);
        let items = window.rev().filter_map(|i| table.get_index(i)).collect();
        let next = match (next, shard) {
            (0, 0) => 0,
            (0, s) => (s as u64) << POSITION_BITS | POSITION_MASK,
            (pos, s) => (s as u64 + 1) << POSITION_BITS | pos,
        };
        (next, items)
    }
}

/// The element lookups of a split value, for a pipeline's prefetch
/// ([`crate::Keyspace::prefetch`]), whatever the value's elements map to.
pub(crate) trait PrefetchElements {
    /// Starts loading the index line a lookup of `key` reads first.
    fn prefetch_slot(&self, key: &[u8]);
    /// Starts loading the element a lookup of `key` will compare. It reads the index
    /// line, so a batch calls it after all of its `prefetch_slot`s, and their misses
    /// overlap instead of coming one lookup after another.
    fn prefetch_element(&self, key: &[u8]);
}

impl<V> PrefetchElements for Sharded<V> {
    fn prefetch_slot(&self, key: &[u8]) {
        let hash = element_hash(key);
        self.shards[shard_of(hash)].prefetch_slot(hash);
    }

    fn prefetch_element(&self, key: &[u8]) {
        let hash = element_hash(key);
        self.shards[shard_of(hash)].prefetch_element(hash);
    }
}

/// Equal when the elements are, whichever shard holds them.
impl<V: Clone + PartialEq> PartialEq for Sharded<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(k, v)| other.get(k.as_bytes()) == Some(v))
    }
}

impl<V: Clone + Eq> Eq for Sharded<V> {}

impl<V: Clone + std::fmt::Debug> std::fmt::Debug for Sharded<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k.as_bytes(), v)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::{EncodingLimits, HashValue, SetValue};
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn field(i: u16) -> Vec<u8> {
        format!("field-{i}").into_bytes()
    }

    proptest! {
        /// Across the split at SHARD_AT, against a HashMap: lookups, sizes, every pair
        /// reachable by position exactly once, and a clone taken midway that keeps its
        /// pairs whatever happens to the original.
        #[test]
        fn matches_a_map_across_the_split(
            ops in proptest::collection::vec((0u8..3, 0u16..300), 0..600),
            clone_at in 0usize..600,
        ) {
            let limits = EncodingLimits::default();
            let mut h = HashValue::default();
            let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            let mut frozen = None;
            for (step, (op, i)) in ops.into_iter().enumerate() {
                if step == clone_at {
                    frozen = Some((h.clone(), model.clone()));
                }
                let f = field(i);
                if op < 2 {
                    let v = format!("v{step}").into_bytes();
                    prop_assert_eq!(h.insert(&f, &v, &limits), model.insert(f, v).is_none());
                } else {
                    prop_assert_eq!(h.remove(&f), model.remove(&f).is_some());
                }
                prop_assert_eq!(h.len(), model.len());
            }
            for (f, v) in &model {
                prop_assert_eq!(h.get(f), Some(v.as_slice()));
            }
            let by_position: HashSet<Vec<u8>> =
                (0..h.len()).filter_map(|i| h.pair_at(i)).map(|(f, _)| f.to_vec()).collect();
            prop_assert_eq!(by_position.len(), model.len());
            if let Some((copy, then)) = frozen {
                prop_assert_eq!(copy.len(), then.len());
                for (f, v) in &then {
                    prop_assert_eq!(copy.get(f), Some(v.as_slice()));
                }
            }
        }

        /// HSCAN over a split hash returns every field present for the whole scan, while
        /// fields come and go between its steps.
        #[test]
        fn scan_misses_no_field_present_throughout(
            counts in proptest::collection::vec(1usize..40, 1..200),
            churn in proptest::collection::vec((any::<bool>(), 0u16..400), 0..200),
        ) {
            let limits = EncodingLimits::default();
            let mut h = HashValue::default();
            for i in 0..300 {
                h.insert(&field(i), b"v", &limits);
            }
            prop_assert!(h.is_sharded(), "split");
            // Fields 0..100 stay for the whole scan; others are added and removed.
            let mut seen = HashSet::new();
            let mut cursor = 0;
            let mut churn = churn.into_iter();
            for count in counts.iter().cycle().take(10_000) {
                let (next, items) = h.scan(cursor, *count);
                seen.extend(items.into_iter().map(|(f, _)| f.to_vec()));
                if next == 0 {
                    break;
                }
                cursor = next;
                if let Some((add, i)) = churn.next() {
                    let f = field(100 + i);
                    if add {
                        h.insert(&f, b"new", &limits);
                    } else {
                        h.remove(&f);
                    }
                }
            }
            for i in 0..100 {
                prop_assert!(seen.contains(&field(i)), "field {} missed", i);
            }
        }
    }

    proptest! {
        /// Sets across the split, against a HashSet: membership, size, every member
        /// reachable by position (SRANDMEMBER's draw) exactly once, SSCAN returning every
        /// member present throughout, and a clone taken midway keeping its members.
        #[test]
        fn sets_match_a_model_across_the_split(
            ops in proptest::collection::vec((0u8..3, 0u16..300), 0..600),
            clone_at in 0usize..600,
            count in 1usize..30,
        ) {
            let limits = EncodingLimits::default();
            let mut set = SetValue::default();
            let mut model: HashSet<Vec<u8>> = HashSet::new();
            let mut frozen = None;
            for (step, (op, i)) in ops.into_iter().enumerate() {
                if step == clone_at {
                    frozen = Some((set.clone(), model.clone()));
                }
                let m = field(i);
                if op < 2 {
                    prop_assert_eq!(set.insert(&m, &limits), model.insert(m));
                } else {
                    prop_assert_eq!(set.remove(&m), model.remove(&m));
                }
                prop_assert_eq!(set.len(), model.len());
            }
            let members: HashSet<Vec<u8>> = set.members().into_iter().collect();
            prop_assert_eq!(&members, &model);
            if let Some(s) = set.shards() {
                let by_position: HashSet<Vec<u8>> =
                    (0..s.len()).filter_map(|i| s.at(i)).map(|(k, _)| k.as_bytes().to_vec()).collect();
                prop_assert_eq!(&by_position, &model);
            }
            let mut scanned = HashSet::new();
            let mut cursor = 0;
            for _ in 0..10_000 {
                let (next, items) = set.scan(cursor, count);
                scanned.extend(items);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            prop_assert_eq!(&scanned, &model);
            if let Some((copy, then)) = frozen {
                let kept: HashSet<Vec<u8>> = copy.members().into_iter().collect();
                prop_assert_eq!(kept, then);
            }
        }
    }

    #[test]
    fn a_clone_shares_shards_until_one_is_changed() {
        let mut h = Sharded::split(
            (0..1000u32).map(|i| (CompactKey::new(&i.to_le_bytes()), CompactKey::new(b"v"))),
        );
        let copy = h.clone();
        let shared = |a: &Sharded<CompactKey>, b: &Sharded<CompactKey>| {
            a.shards
                .iter()
                .zip(&b.shards)
                .filter(|(x, y)| Arc::ptr_eq(x, y))
                .count()
        };
        assert_eq!(shared(&h, &copy), SHARDS);
        // A value kept as it is (a ZADD of an equal score) copies nothing.
        let kept = h.replace_unless(&7u32.to_le_bytes(), CompactKey::new(b"w"), |_| true);
        assert_eq!(kept.as_ref().map(CompactKey::as_bytes), Some(&b"v"[..]));
        assert_eq!(shared(&h, &copy), SHARDS, "a kept value copies nothing");
        assert!(!h.insert(&7u32.to_le_bytes(), CompactKey::new(b"changed")));
        assert_eq!(shared(&h, &copy), SHARDS - 1, "one shard copied");
        assert!(!h.remove(b"not there"));
        assert_eq!(shared(&h, &copy), SHARDS - 1, "a miss copies nothing");
        assert_eq!(
            copy.get(&7u32.to_le_bytes()).map(CompactKey::as_bytes),
            Some(&b"v"[..])
        );
        // A value that changes copies its shard only; the copy keeps the old value.
        let key = 500u32.to_le_bytes();
        let before = shared(&h, &copy);
        let old = h.replace_unless(&key, CompactKey::new(b"new"), |_| false);
        assert_eq!(old.as_ref().map(CompactKey::as_bytes), Some(&b"v"[..]));
        assert_eq!(h.get(&key).map(CompactKey::as_bytes), Some(&b"new"[..]));
        assert_eq!(copy.get(&key).map(CompactKey::as_bytes), Some(&b"v"[..]));
        assert_eq!(h.len(), 1000);
        let at = shard_of(element_hash(&key));
        assert!(
            !Arc::ptr_eq(&h.shards[at], &copy.shards[at]),
            "its shard copied"
        );
        assert!(before - shared(&h, &copy) <= 1, "no other shard copied");
    }

    /// A cursor from before the split (a plain position) starts the scan over.
    #[test]
    fn an_old_cursor_restarts_the_scan() {
        let h = Sharded::split((0..500u32).map(|i| (CompactKey::new(&i.to_le_bytes()), ())));
        let mut seen = HashSet::new();
        let mut cursor = 123; // no shard bits
        for _ in 0..10_000 {
            let (next, items) = h.scan(cursor, 10);
            seen.extend(items.into_iter().map(|(f, _)| f.as_bytes().to_vec()));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen.len(), 500);
    }
}
