//! A hash index of positions whose slots a pipeline can prefetch.
//!
//! Key tables ([`crate::table::SlotTable`]) and the shards of big hashes and sets
//! ([`crate::shard_map::ShardMap`]) keep their elements densely by position and find
//! them through this index. It replaced `hashbrown`'s table, whose layout is private:
//! a batch of lookups could not start loading the index's lines before reading them,
//! so each lookup's index miss came in turn (`SlotTable::prefetch_entry` was 11% of a
//! loop serving pipelined INCRs).
//!
//! Linear probing over 4-byte slots, at most 3/4 full. A slot holds the element's
//! position plus one in its low bits (as many as the index has slots, so a position
//! always fits: there are more slots than elements) and the top bits of the element's
//! hash above them, a tag that lets a probe pass other elements without reading them.
//! An element's home slot is its hash's low bits. Removal shifts the rest of the probe
//! run back (no tombstones), reading the hash of each element it considers moving
//! through the owner's `rehash`, which at 3/4 full is a few elements.

/// Smallest index made: 6 elements.
const MIN_SLOTS: usize = 8;

#[derive(Clone, Debug, Default)]
pub(crate) struct PositionIndex {
    /// Power-of-two length, or empty; always at least a quarter empty, so a probe ends.
    slots: Box<[u32]>,
}

impl PositionIndex {
    /// An index with room for `n` elements.
    pub(crate) fn with_capacity(n: usize) -> PositionIndex {
        let mut index = PositionIndex::default();
        if n > 0 {
            index.slots = vec![0; slots_for(n)].into_boxed_slice();
        }
        index
    }

    /// Elements this index holds before it must grow.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len() / 4 * 3
    }

    /// Heap bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<u32>()
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Bits a slot gives the position (plus one).
    #[inline]
    fn position_bits(&self) -> u32 {
        self.slots.len().trailing_zeros()
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask()
    }

    /// The tag of `hash` as it sits in a slot: the hash's top bits, above the position.
    #[inline]
    fn tag(&self, hash: u64) -> u32 {
        let bits = self.position_bits();
        // Tables never reach 2^32 slots (see `insert`), so the shift is below 64.
        ((hash >> (32 + bits)) << bits) as u32
    }

    #[inline]
    fn slot_position(&self, slot: u32) -> usize {
        ((slot & (self.mask() as u32)) as usize).wrapping_sub(1)
    }

    /// The slot and position of the element filed under `hash` that `is_it` accepts.
    #[inline]
    pub(crate) fn find(
        &self,
        hash: u64,
        mut is_it: impl FnMut(usize) -> bool,
    ) -> Option<(usize, usize)> {
        if self.slots.is_empty() {
            return None;
        }
        let (mask, tag) = (self.mask(), self.tag(hash));
        let tag_mask = !(mask as u32);
        let mut at = self.home(hash);
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if slot & tag_mask == tag {
                let position = self.slot_position(slot);
                if is_it(position) {
                    return Some((at, position));
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// The position a lookup under `hash` will most likely compare first (its first slot
    /// with the same tag), for a prefetch: compares nothing.
    #[inline]
    pub(crate) fn likely_position(&self, hash: u64) -> Option<usize> {
        self.find(hash, |_| true).map(|(_, position)| position)
    }

    /// Where a lookup under `hash` starts reading, for a prefetch.
    #[inline]
    pub(crate) fn home_slot(&self, hash: u64) -> Option<&u32> {
        self.slots.get(self.home(hash))
    }

    /// Files a new element at `position` under `hash`. `len` is the number of elements
    /// once it is in; `rehash` gives the hash of the element at a position, for a grown
    /// index.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        position: usize,
        len: usize,
        rehash: impl Fn(usize) -> u64,
    ) {
        if len > self.capacity() {
            // Corrupting: a position must fit below the tag, and the tag's shift must
            // stay below 64.
            assert!(len < 1 << 30, "a table of 2^30 elements");
            self.rebuild(slots_for(len), len - 1, &rehash);
        }
        self.place(hash, position);
    }

    /// Makes room for `n` elements in all (the `len` elements there now are re-filed).
    pub(crate) fn reserve(&mut self, n: usize, len: usize, rehash: impl Fn(usize) -> u64) {
        if n > self.capacity() {
            assert!(n < 1 << 30, "a table of 2^30 elements");
            self.rebuild(slots_for(n), len, &rehash);
        }
    }

    /// Empties `slot` (from [`PositionIndex::find`]) and shifts back the rest of its probe
    /// run where an element may move closer to its home, so that every lookup still
    /// meets its element before an empty slot. `rehash` gives the hash of the element at
    /// a position.
    pub(crate) fn remove(&mut self, slot: usize, rehash: impl Fn(usize) -> u64) {
        let mask = self.mask();
        let mut hole = slot;
        let mut next = (hole + 1) & mask;
        loop {
            let moving = self.slots[next];
            if moving == 0 {
                break;
            }
            let home = self.home(rehash(self.slot_position(moving)));
            // The hole lies between the element's home and where it sits: it may move.
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots[hole] = moving;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = 0;
    }

    /// Points the slot of the element filed under `hash` at `from` to `to` instead (the
    /// last element moved into a removed one's position).
    pub(crate) fn repoint(&mut self, hash: u64, from: usize, to: usize) {
        let found = self.find(hash, |position| position == from);
        // Corrupting: every element has a slot.
        let Some((at, _)) = found else {
            panic!("position {from} has no index slot");
        };
        self.slots[at] = self.tag(hash) | (to as u32 + 1);
    }

    /// Gives memory back once under a quarter of the room is used (`len` elements).
    pub(crate) fn shrink_if_sparse(&mut self, len: usize, rehash: impl Fn(usize) -> u64) {
        if self.slots.len() > 2 * MIN_SLOTS && len < self.capacity() / 4 {
            self.rebuild(slots_for(len), len, &rehash);
        }
    }

    fn place(&mut self, hash: u64, position: usize) {
        let mask = self.mask();
        let mut at = self.home(hash);
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = self.tag(hash) | (position as u32 + 1);
    }

    /// A new index of `slots` slots for the elements at positions `0..len`.
    fn rebuild(&mut self, slots: usize, len: usize, rehash: &impl Fn(usize) -> u64) {
        self.slots = vec![0; slots].into_boxed_slice();
        for position in 0..len {
            self.place(rehash(position), position);
        }
    }
}

/// Slots for `n` elements, at most 3/4 full (a miss, which every new element's lookup
/// is, probes about 8 slots then: half a cache line).
fn slots_for(n: usize) -> usize {
    (n.saturating_mul(4).div_ceil(3))
        .next_power_of_two()
        .max(MIN_SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Elements by position, as an owner keeps them, and their hashes.
    struct Owner {
        index: PositionIndex,
        hashes: Vec<u64>,
    }

    impl Owner {
        fn position(&self, hash: u64) -> Option<usize> {
            self.index
                .find(hash, |p| self.hashes[p] == hash)
                .map(|(_, p)| p)
        }

        fn insert(&mut self, hash: u64) {
            self.hashes.push(hash);
            let hashes = &self.hashes;
            self.index
                .insert(hash, hashes.len() - 1, hashes.len(), |p| hashes[p]);
        }

        fn remove(&mut self, hash: u64) {
            let hashes = &self.hashes;
            let Some((slot, position)) = self.index.find(hash, |p| hashes[p] == hash) else {
                return;
            };
            self.index.remove(slot, |p| hashes[p]);
            let last = self.hashes.len() - 1;
            if position != last {
                self.index.repoint(self.hashes[last], last, position);
            }
            self.hashes.swap_remove(position);
            let hashes = &self.hashes;
            self.index.shrink_if_sparse(hashes.len(), |p| hashes[p]);
        }
    }

    proptest! {
        /// Against the owner's own list: every element found at its position, absent ones
        /// not found, one slot per element, a quarter of the slots empty. Hashes come from
        /// a few values in their low and high bits, so runs collide, grow long and wrap.
        #[test]
        fn finds_every_element_at_its_position(
            ops in proptest::collection::vec((any::<bool>(), 0u64..40, 0u64..4), 0..600),
        ) {
            let mut owner = Owner { index: PositionIndex::default(), hashes: Vec::new() };
            for (add, low, high) in ops {
                // The low bits pick the home slot, the top ones the tag.
                let hash = (low.wrapping_mul(0x9E37) & 0xFF) | (high << 61) | (low << 20);
                let present = owner.hashes.contains(&hash);
                if add && !present {
                    owner.insert(hash);
                } else if !add {
                    owner.remove(hash);
                }
                for (p, &h) in owner.hashes.iter().enumerate() {
                    prop_assert_eq!(owner.position(h), Some(p));
                }
                let filled = owner.index.slots.iter().filter(|&&s| s != 0).count();
                prop_assert_eq!(filled, owner.hashes.len());
                prop_assert!(filled <= owner.index.capacity());
                if !add {
                    prop_assert_eq!(owner.position(hash), None);
                }
            }
        }
    }

    #[test]
    fn positions_fit_below_the_tag_at_every_size() {
        for n in [1usize, 6, 7, 12, 13, 100, 1000, 100_000] {
            let index = PositionIndex::with_capacity(n);
            assert!(index.capacity() >= n);
            // The largest position plus one, n, below the tag's lowest bit.
            assert!(n < index.slots.len(), "{n} in {}", index.slots.len());
            assert_eq!(index.tag(u64::MAX) & index.mask() as u32, 0);
        }
    }

    #[test]
    fn prefetch_helpers_read_only_the_index() {
        let empty = PositionIndex::default();
        assert!(empty.home_slot(7).is_none());
        assert_eq!(empty.likely_position(7), None);
        let mut owner = Owner {
            index: PositionIndex::default(),
            hashes: Vec::new(),
        };
        for h in 0..50u64 {
            owner.insert(h.wrapping_mul(0x9E3779B97F4A7C15));
        }
        for (p, &h) in owner.hashes.iter().enumerate() {
            assert!(owner.index.home_slot(h).is_some());
            assert_eq!(owner.index.likely_position(h), Some(p));
        }
    }
}
