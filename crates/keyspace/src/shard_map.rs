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
//! The index is linear probing over one `u64` per slot: the element's hash's low 32
//! bits (its tag, whose low bits are also its home slot) above its position plus one
//! (0 is an empty slot). A lookup reads one line of slots, mostly, then the element;
//! removal shifts the probe run back, so there are no tombstones, and the home of a
//! slot's element is read from its tag without touching the element.

use crate::compact::CompactKey;

/// The hash an element is filed under, in its shard and for the shard itself
/// ([`crate::shards::Sharded`] takes the top bits; the map takes the low 32).
pub(crate) fn element_hash(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    static STATE: OnceLock<hashbrown::DefaultHashBuilder> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(key)
}

/// Smallest index made.
const MIN_SLOTS: usize = 16;

#[derive(Clone)]
pub(crate) struct ShardMap<V> {
    entries: Vec<(CompactKey, V)>,
    /// Power-of-two length (or empty); always at least one empty slot, so a probe ends.
    slots: Box<[u64]>,
}

#[inline]
fn tag_of(hash: u64) -> u32 {
    hash as u32
}

#[inline]
fn slot_value(tag: u32, position: usize) -> u64 {
    (u64::from(tag) << 32) | (position as u64 + 1)
}

#[inline]
fn slot_tag(slot: u64) -> u32 {
    (slot >> 32) as u32
}

#[inline]
fn slot_position(slot: u64) -> usize {
    (slot as u32 as usize).wrapping_sub(1)
}

impl<V> ShardMap<V> {
    pub(crate) fn with_capacity(n: usize) -> ShardMap<V> {
        let mut map = ShardMap {
            entries: Vec::with_capacity(n),
            slots: Box::new([]),
        };
        if n > 0 {
            map.rebuild(slots_for(n));
        }
        map
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot and the position of `key`, filed under `hash`.
    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Option<(usize, usize)> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let tag = tag_of(hash);
        let mut at = tag as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if slot_tag(slot) == tag {
                let position = slot_position(slot);
                if self.entries[position].0.as_bytes() == key {
                    return Some((at, position));
                }
            }
            at = (at + 1) & mask;
        }
    }

    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<&V> {
        self.find(hash, key).map(|(_, i)| &self.entries[i].1)
    }

    pub(crate) fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.find(hash, key).is_some()
    }

    /// Sets `key` (filed under `hash`) to `value`; the value it had.
    pub(crate) fn insert(&mut self, hash: u64, key: &[u8], value: V) -> Option<V> {
        if let Some((_, i)) = self.find(hash, key) {
            return Some(std::mem::replace(&mut self.entries[i].1, value));
        }
        let position = self.entries.len();
        // The slot's position field holds position + 1 in 32 bits.
        assert!(position < u32::MAX as usize - 1, "a shard of 4G elements");
        // At most 3/4 full: a miss (every new element's lookup) probes about 8 slots.
        if (position + 1) * 4 > self.slots.len() * 3 {
            self.rebuild(slots_for(position + 1));
        }
        self.place(tag_of(hash), position);
        self.entries.push((CompactKey::new(key), value));
        None
    }

    /// Removes `key`, moving the last element into its position; its value.
    pub(crate) fn swap_remove(&mut self, hash: u64, key: &[u8]) -> Option<V> {
        let (at, position) = self.find(hash, key)?;
        self.clear_slot(at);
        let last = self.entries.len() - 1;
        if position != last {
            // The last element's slot now points at the hole it moves into.
            let moved = self.slot_of_position(last);
            self.slots[moved] = slot_value(slot_tag(self.slots[moved]), position);
        }
        Some(self.entries.swap_remove(position).1)
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
        if let Some(slot) = self.slots.get(tag_of(hash) as usize & self.mask()) {
            crate::table::prefetch_line(slot);
        }
    }

    /// Starts loading the element a lookup under `hash` will most likely compare: the
    /// first one in its probe run with the same tag. Reads the index line (which
    /// [`ShardMap::prefetch_slot`] started loading), not the element.
    #[inline]
    pub(crate) fn prefetch_element(&self, hash: u64) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.mask();
        let tag = tag_of(hash);
        let mut at = tag as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return;
            }
            if slot_tag(slot) == tag {
                if let Some(element) = self.entries.get(slot_position(slot)) {
                    crate::table::prefetch_line(element);
                }
                return;
            }
            at = (at + 1) & mask;
        }
    }

    /// The slot that points at `position`, found through the element's hash.
    fn slot_of_position(&self, position: usize) -> usize {
        let mask = self.mask();
        let tag = tag_of(element_hash(self.entries[position].0.as_bytes()));
        let mut at = tag as usize & mask;
        loop {
            let slot = self.slots[at];
            // Corrupting: every element has a slot, so the run cannot end before it.
            assert!(slot != 0, "an element without an index slot");
            if slot_position(slot) == position {
                return at;
            }
            at = (at + 1) & mask;
        }
    }

    /// Writes the first empty slot of `tag`'s run.
    fn place(&mut self, tag: u32, position: usize) {
        let mask = self.mask();
        let mut at = tag as usize & mask;
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = slot_value(tag, position);
    }

    /// Empties slot `hole` and shifts back the elements after it in its run that may
    /// move closer to their home, so every lookup still finds its element before an
    /// empty slot.
    fn clear_slot(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut next = (hole + 1) & mask;
        loop {
            let slot = self.slots[next];
            if slot == 0 {
                break;
            }
            let home = slot_tag(slot) as usize & mask;
            // The hole lies between the element's home and where it sits: it may move.
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots[hole] = slot;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = 0;
    }

    /// A new index of `slots` slots for the elements as they are.
    fn rebuild(&mut self, slots: usize) {
        self.slots = vec![0; slots].into_boxed_slice();
        for position in 0..self.entries.len() {
            let tag = tag_of(element_hash(self.entries[position].0.as_bytes()));
            self.place(tag, position);
        }
    }
}

/// Slots for `n` elements at most half full, so a grown index has room to fill.
fn slots_for(n: usize) -> usize {
    n.saturating_mul(2).next_power_of_two().max(MIN_SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn key(i: u16) -> Vec<u8> {
        format!("member:{i}").into_bytes()
    }

    fn check_against(
        map: &ShardMap<u32>,
        model: &HashMap<Vec<u8>, u32>,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(map.len(), model.len());
        for (k, v) in model {
            prop_assert_eq!(map.get(element_hash(k), k), Some(v));
        }
        // Positions cover every element once, and each has the slot that names it.
        let mut seen: Vec<&[u8]> = (0..map.len())
            .filter_map(|i| map.get_index(i))
            .map(|(k, _)| k.as_bytes())
            .collect();
        seen.sort();
        seen.dedup();
        prop_assert_eq!(seen.len(), model.len());
        let filled = map.slots.iter().filter(|&&s| s != 0).count();
        prop_assert_eq!(filled, model.len());
        prop_assert!(
            map.slots.is_empty() || filled < map.slots.len(),
            "an empty slot left"
        );
        Ok(())
    }

    proptest! {
        /// Inserts, replacements and removals against a HashMap, with the positions the
        /// map reports and its index checked after every step.
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
                check_against(&map, &model)?;
            }
        }
    }

    /// The index's arithmetic with every element in a few long runs that wrap past the
    /// end of the slots: removal's shift back must keep each element reachable.
    #[test]
    fn long_wrapping_runs_stay_reachable() {
        // The hash is only the index's input here: the map rehashes with element_hash
        // when it grows or moves an element, so keep it from doing either.
        let mut map: ShardMap<u16> = ShardMap::with_capacity(64);
        let slots = map.slots.len();
        let n = (slots * 3 / 4 - 1) as u16;
        // Every element's home is the second-to-last slot; two tags, so keys decide.
        let wrap = |i: u16| (slots as u64 - 2) | (u64::from(i % 2) * slots as u64);
        for i in 0..n {
            // Positions only grow, so no element is ever moved (no rehash).
            map.place(tag_of(wrap(i)), usize::from(i));
            map.entries.push((CompactKey::new(&key(i)), i));
        }
        assert_eq!(map.slots.len(), slots, "no rebuild");
        for i in (0..n).step_by(3) {
            let (at, position) = map.find(wrap(i), &key(i)).expect("present");
            assert_eq!(position, usize::from(i));
            map.clear_slot(at);
            map.entries[position].0 = CompactKey::new(b"removed");
        }
        for i in 0..n {
            let found = map.find(wrap(i), &key(i)).map(|(_, p)| p);
            assert_eq!(found, (i % 3 != 0).then_some(usize::from(i)), "element {i}");
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
