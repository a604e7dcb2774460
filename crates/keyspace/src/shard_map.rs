//! One shard of a split hash, set or sorted set: an insertion-ordered map whose index a
//! pipeline can prefetch.
//!
//! It keeps `indexmap`'s contract (positions for random draws and SCAN, removal by
//! moving the last element into the hole) with an index of its own, so that a batch of
//! lookups can start loading both of their cache misses before the first one runs (see
//! [`crate::shards::Sharded::prefetch_slot`]). `indexmap` hides its index, so each of a
//! pipeline's HSETs or SADDs on a big value waited for three misses in turn: the
//! index's control bytes, its slot, then the element.
//!
//! The index is a [`PositionIndex`], as key tables use.

use crate::compact::CompactKey;
use crate::position_index::PositionIndex;

/// The hash an element is filed under, in its shard and for the shard itself
/// ([`crate::shards::Sharded`] takes bits 26-31; the index takes the low bits and the
/// top ones): the key tables' hasher, one seed for the process.
pub(crate) use crate::table::hash_of as element_hash;

#[derive(Clone)]
pub(crate) struct ShardMap<V> {
    entries: Vec<(CompactKey, V)>,
    index: PositionIndex,
}

impl<V> ShardMap<V> {
    pub(crate) fn with_capacity(n: usize) -> ShardMap<V> {
        ShardMap {
            entries: Vec::with_capacity(n),
            index: PositionIndex::with_capacity(n),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The slot and the position of `key`, filed under `hash`.
    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Option<(usize, usize)> {
        let entries = &self.entries;
        self.index
            .find(hash, |position| entries[position].0.as_bytes() == key)
    }

    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<&V> {
        self.find(hash, key).map(|(_, i)| &self.entries[i].1)
    }

    pub(crate) fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.find(hash, key).is_some()
    }

    /// Sets `key` (filed under `hash`) to `value`; the value it had.
    pub(crate) fn insert(&mut self, hash: u64, key: &[u8], value: V) -> Option<V> {
        if let Some(i) = self.position(hash, key) {
            return Some(std::mem::replace(self.value_at_mut(i), value));
        }
        self.insert_new(hash, key, value);
        None
    }

    /// Where `key` (filed under `hash`) is in insertion order, if it is here. A clone of
    /// this map holds it at the same position.
    pub(crate) fn position(&self, hash: u64, key: &[u8]) -> Option<usize> {
        self.find(hash, key).map(|(_, i)| i)
    }

    /// The value at a position [`ShardMap::position`] gave.
    pub(crate) fn value_at(&self, i: usize) -> &V {
        &self.entries[i].1
    }

    pub(crate) fn value_at_mut(&mut self, i: usize) -> &mut V {
        &mut self.entries[i].1
    }

    /// Adds `key`, which the caller found absent.
    pub(crate) fn insert_new(&mut self, hash: u64, key: &[u8], value: V) {
        self.entries.push((CompactKey::new(key), value));
        let entries = &self.entries;
        self.index
            .insert(hash, entries.len() - 1, entries.len(), |p| {
                rehash(entries, p)
            });
    }

    /// Removes `key`, moving the last element into its position; its value.
    pub(crate) fn swap_remove(&mut self, hash: u64, key: &[u8]) -> Option<V> {
        let (slot, position) = self.find(hash, key)?;
        let entries = &self.entries;
        self.index.remove(slot, |p| rehash(entries, p));
        let last = entries.len() - 1;
        if position != last {
            self.index.repoint(rehash(entries, last), last, position);
        }
        let (_, value) = self.entries.swap_remove(position);
        let entries = &self.entries;
        self.index
            .shrink_if_sparse(entries.len(), |p| rehash(entries, p));
        Some(value)
    }

    pub(crate) fn get_index(&self, i: usize) -> Option<(&CompactKey, &V)> {
        self.entries.get(i).map(|(k, v)| (k, v))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&CompactKey, &V)> + '_ {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Starts loading the index line a lookup of an element filed under `hash` reads
    /// first.
    #[inline]
    pub(crate) fn prefetch_slot(&self, hash: u64) {
        if let Some(slot) = self.index.home_slot(hash) {
            crate::table::prefetch_line(slot);
        }
    }

    /// Starts loading the element a lookup under `hash` will most likely compare. Reads
    /// the index line (which [`ShardMap::prefetch_slot`] started loading), not the
    /// element.
    #[inline]
    pub(crate) fn prefetch_element(&self, hash: u64) {
        if let Some(element) = self
            .index
            .likely_position(hash)
            .and_then(|p| self.entries.get(p))
        {
            crate::table::prefetch_line(element);
        }
    }
}

fn rehash<V>(entries: &[(CompactKey, V)], position: usize) -> u64 {
    element_hash(entries[position].0.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn key(i: u16) -> Vec<u8> {
        format!("member:{i}").into_bytes()
    }

    proptest! {
        /// Inserts, replacements and removals against a HashMap, with every element
        /// reachable by key and by exactly one position after every step.
        #[test]
        fn matches_a_map(ops in proptest::collection::vec((0u8..3, 0u16..200), 0..800)) {
            let mut map = ShardMap::with_capacity(0);
            let mut model = HashMap::new();
            for (step, (op, i)) in ops.into_iter().enumerate() {
                let k = key(i);
                let h = element_hash(&k);
                if op < 2 {
                    prop_assert_eq!(map.insert(h, &k, step as u32), model.insert(k, step as u32));
                } else {
                    prop_assert_eq!(map.swap_remove(h, &k), model.remove(&k));
                }
                prop_assert_eq!(map.len(), model.len());
                for (k, v) in &model {
                    prop_assert_eq!(map.get(element_hash(k), k), Some(v));
                }
                let mut seen: Vec<&[u8]> =
                    (0..map.len()).filter_map(|i| map.get_index(i)).map(|(k, _)| k.as_bytes()).collect();
                seen.sort();
                seen.dedup();
                prop_assert_eq!(seen.len(), model.len());
            }
        }
    }

    #[test]
    fn prefetching_reads_nothing_past_the_index() {
        let empty: ShardMap<()> = ShardMap::with_capacity(0);
        empty.prefetch_slot(123);
        empty.prefetch_element(123);
        let mut map = ShardMap::with_capacity(0);
        for i in 0..100 {
            let k = key(i);
            map.insert(element_hash(&k), &k, ());
        }
        for i in 0..200 {
            let h = element_hash(&key(i));
            map.prefetch_slot(h);
            map.prefetch_element(h);
        }
        assert_eq!(map.len(), 100);
    }
}
