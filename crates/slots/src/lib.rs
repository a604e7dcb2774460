//! Redis Cluster key slots.
//!
//! A key's slot is `CRC16-XMODEM(tag) & 16383`, where `tag` is the text between the first
//! `{` and the first `}` after it, when that text is non-empty; otherwise the whole key.
//! Carmine splits every database into one table per slot even outside cluster mode, so
//! this function sits on the path of every keyed command: it is table driven, with a
//! slice-by-two inner loop, and proven equal to the `crc16` crate by a property test.
//!
//! ```
//! use carmine_slots::key_slot;
//! assert_eq!(key_slot(b"foo"), 12182);
//! assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
//! assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}")); // empty tag: whole key
//! ```

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// A slot number, `0..16384`.
pub type Slot = u16;

const POLY: u16 = 0x1021;

/// `TABLES[k][b]`: the CRC (from 0) of byte `b` followed by `k` zero bytes. CRC is linear,
/// so sixteen bytes fold in as sixteen independent lookups XORed together (slice-by-16):
/// the lookups run in parallel instead of as a chain of dependent steps, and a typical
/// 16-byte key is one step. The 16 tables take 8 KiB, comfortably inside L1.
const fn make_tables() -> [[u16; 256]; 16] {
    let mut t = [[0u16; 256]; 16];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut j = 0;
        while j < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ POLY
            } else {
                crc << 1
            };
            j += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 16 {
        let mut i = 0;
        while i < 256 {
            let c = t[k - 1][i];
            t[k][i] = (c << 8) ^ t[0][(c >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

static TABLES: [[u16; 256]; 16] = make_tables();

/// CRC16-XMODEM (poly 0x1021, init 0, no reflection), as Redis' `crc16()`.
#[inline]
pub fn crc16(data: &[u8]) -> u16 {
    let t = &TABLES;
    let mut crc: u16 = 0;
    let mut wide = data.chunks_exact(16);
    for c in &mut wide {
        let b0 = c[0] ^ (crc >> 8) as u8;
        let b1 = c[1] ^ crc as u8;
        crc = t[15][b0 as usize]
            ^ t[14][b1 as usize]
            ^ t[13][c[2] as usize]
            ^ t[12][c[3] as usize]
            ^ t[11][c[4] as usize]
            ^ t[10][c[5] as usize]
            ^ t[9][c[6] as usize]
            ^ t[8][c[7] as usize]
            ^ t[7][c[8] as usize]
            ^ t[6][c[9] as usize]
            ^ t[5][c[10] as usize]
            ^ t[4][c[11] as usize]
            ^ t[3][c[12] as usize]
            ^ t[2][c[13] as usize]
            ^ t[1][c[14] as usize]
            ^ t[0][c[15] as usize];
    }
    let mut chunks = wide.remainder().chunks_exact(8);
    for c in &mut chunks {
        let b0 = c[0] ^ (crc >> 8) as u8;
        let b1 = c[1] ^ crc as u8;
        crc = t[7][b0 as usize]
            ^ t[6][b1 as usize]
            ^ t[5][c[2] as usize]
            ^ t[4][c[3] as usize]
            ^ t[3][c[4] as usize]
            ^ t[2][c[5] as usize]
            ^ t[1][c[6] as usize]
            ^ t[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc << 8) ^ t[0][((crc >> 8) as u8 ^ b) as usize];
    }
    crc
}

/// The part of `key` that is hashed: the first non-empty `{...}` tag, else the whole key.
#[inline]
pub fn hash_tag(key: &[u8]) -> &[u8] {
    // memchr's SIMD scan wins on long keys; a plain loop wins below its call overhead.
    let find = |hay: &[u8], c: u8| {
        if hay.len() < 16 {
            hay.iter().position(|&b| b == c)
        } else {
            memchr::memchr(c, hay)
        }
    };
    if let Some(open) = find(key, b'{') {
        if let Some(len) = find(&key[open + 1..], b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The cluster slot of `key`.
#[inline]
pub fn key_slot(key: &[u8]) -> Slot {
    crc16(hash_tag(key)) & (SLOT_COUNT as u16 - 1)
}

/// What a node knows about one slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotInfo<N> {
    /// The node serving the slot, if assigned.
    pub owner: Option<N>,
    /// Set while this node moves the slot away (CLUSTER SETSLOT MIGRATING).
    pub migrating_to: Option<N>,
    /// Set while this node receives the slot (CLUSTER SETSLOT IMPORTING).
    pub importing_from: Option<N>,
}

impl<N> SlotInfo<N> {
    fn is_marked(&self) -> bool {
        self.migrating_to.is_some() || self.importing_from.is_some()
    }
}

/// The 16384-entry slot -> node table, generic over how a node is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMap<N> {
    slots: Vec<SlotInfo<N>>,
    /// How many slots carry a migrating or importing mark: nodes.conf is written on
    /// every change and lists the marks, and with none (the usual case) that must not
    /// cost a scan of all 16384 slots.
    marks: usize,
}

impl<N: Clone + PartialEq> Default for SlotMap<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<N: Clone + PartialEq> SlotMap<N> {
    pub fn new() -> Self {
        SlotMap {
            slots: vec![
                SlotInfo {
                    owner: None,
                    migrating_to: None,
                    importing_from: None,
                };
                SLOT_COUNT
            ],
            marks: 0,
        }
    }

    pub fn get(&self, slot: Slot) -> Option<&SlotInfo<N>> {
        self.slots.get(slot as usize)
    }

    pub fn owner(&self, slot: Slot) -> Option<&N> {
        self.slots.get(slot as usize).and_then(|s| s.owner.as_ref())
    }

    /// Assigns `slot` to `node`; returns false for a slot number out of range.
    pub fn assign(&mut self, slot: Slot, node: N) -> bool {
        match self.slots.get_mut(slot as usize) {
            Some(s) => {
                s.owner = Some(node);
                true
            }
            None => false,
        }
    }

    pub fn unassign(&mut self, slot: Slot) {
        self.change_slot(slot, |s| {
            *s = SlotInfo {
                owner: None,
                migrating_to: None,
                importing_from: None,
            }
        });
    }

    pub fn set_migrating(&mut self, slot: Slot, to: Option<N>) {
        self.change_slot(slot, |s| s.migrating_to = to);
    }

    pub fn set_importing(&mut self, slot: Slot, from: Option<N>) {
        self.change_slot(slot, |s| s.importing_from = from);
    }

    /// Applies `change` to one slot, keeping the count of marked slots.
    fn change_slot(&mut self, slot: Slot, change: impl FnOnce(&mut SlotInfo<N>)) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let was = s.is_marked();
        change(s);
        match (was, s.is_marked()) {
            (false, true) => self.marks += 1,
            (true, false) => self.marks -= 1,
            _ => {}
        }
    }

    /// Number of slots that have an owner.
    pub fn assigned(&self) -> usize {
        self.slots.iter().filter(|s| s.owner.is_some()).count()
    }

    /// Number of slots `node` owns.
    pub fn count_of(&self, node: &N) -> usize {
        self.slots
            .iter()
            .filter(|s| s.owner.as_ref() == Some(node))
            .count()
    }

    /// Every maximal run of slots with one owner, `(first, last, owner)`, in slot order:
    /// one pass for CLUSTER SLOTS and SHARDS instead of one per node.
    pub fn owned_ranges(&self) -> Vec<(Slot, Slot, N)> {
        let mut out: Vec<(Slot, Slot, N)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let Some(owner) = &s.owner else { continue };
            let i = i as Slot;
            match out.last_mut() {
                Some(last) if last.1 + 1 == i && last.2 == *owner => last.1 = i,
                _ => out.push((i, i, owner.clone())),
            }
        }
        out
    }

    /// Slots with a migrating or importing mark, in slot order.
    pub fn marked(&self) -> impl Iterator<Item = (Slot, &SlotInfo<N>)> {
        let slots = if self.marks == 0 {
            &[][..]
        } else {
            &self.slots[..]
        };
        slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_marked())
            .map(|(i, s)| (i as Slot, s))
    }

    /// Contiguous ranges `(first, last)` owned by `node`, as CLUSTER SLOTS lists them.
    pub fn ranges_of(&self, node: &N) -> Vec<(Slot, Slot)> {
        let mut out: Vec<(Slot, Slot)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if s.owner.as_ref() == Some(node) {
                let i = i as Slot;
                match out.last_mut() {
                    Some(last) if last.1 + 1 == i => last.1 = i,
                    _ => out.push((i, i)),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_examples() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") & 16383);
        assert_eq!(key_slot(b"foo{bar}{zap}"), crc16(b"bar") & 16383);
    }

    #[test]
    fn slot_table_ranges() {
        let mut t: SlotMap<u8> = SlotMap::new();
        for s in 0..=100 {
            t.assign(s, 1);
        }
        t.assign(200, 1);
        t.assign(101, 2);
        assert_eq!(t.ranges_of(&1), vec![(0, 100), (200, 200)]);
        assert_eq!(t.assigned(), 103);
        assert!(!t.assign(16384, 1));
        t.unassign(200);
        assert_eq!(t.owner(200), None);
    }

    proptest! {
        #[test]
        fn table_crc_equals_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let reference = crc16::State::<crc16::XMODEM>::calculate(&data);
            prop_assert_eq!(crc16(&data), reference);
        }

        #[test]
        fn tag_rules(prefix in "[a-z]{0,5}", tag in "[a-z0-9]{1,8}", suffix in "[a-z{}]{0,5}") {
            let key = format!("{prefix}{{{tag}}}{suffix}");
            prop_assert_eq!(key_slot(key.as_bytes()), key_slot(tag.as_bytes()));
        }
    }
}
