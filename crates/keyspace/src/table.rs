//! The single-owner core: one slot's keys. No locks here; the concurrent [`crate::Keyspace`]
//! wraps each table in a mutex, and an embedder with its own threading model can use
//! tables directly.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use thin_vec::ThinVec;

use crate::position_index::PositionIndex;
use crate::value::Entry;

/// An owned key: inline up to 22 bytes, boxed beyond.
pub type Key = crate::compact::CompactKey;

/// One process-wide, randomly seeded hasher: a per-table one would cost every table its
/// seed, and there are 16384 tables per database.
pub(crate) fn hash_of(key: &[u8]) -> u64 {
    static STATE: OnceLock<hashbrown::DefaultHashBuilder> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(key)
}

/// The hash of the key at position `i`, for the index's growth and removals.
fn rehash(entries: &Pages, i: usize) -> u64 {
    hash_of(entries.get(i).0.as_bytes())
}

/// Asks the CPU to start loading the cache line holding `p`, without waiting for it. Any
/// address will do: a prefetch never faults.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch_line<T>(p: *const T) {
    // SAFETY: PREFETCHT0 is a hint that reads nothing the program sees and cannot fault
    // on any address; its only requirement, SSE, is part of every x86_64 CPU.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Entries per page of a table's storage.
const PAGE: usize = 8;

/// Pages whose pointers live in the table itself: a lookup goes from the (just locked)
/// table straight to the page holding the entry. A separate array of page pointers cost
/// GET/SET/INCR 5-15% (throughput.sh against the single-vector version): one more
/// dependent cache miss per lookup.
const INLINE_PAGES: usize = 8;

type Page = ThinVec<(Key, Entry)>;

#[cold]
#[inline(never)]
#[allow(clippy::ptr_arg)] // a `Vec` behind the opaque reference: its fields are read here
fn more_page(more: &Vec<Page>, p: usize) -> &Page {
    &more[p - INLINE_PAGES]
}

/// A page's header (length and capacity) before its entries: a `ThinVec` of 8-aligned
/// items puts two `usize`s there.
const PAGE_HEADER: usize = 2 * std::mem::size_of::<usize>();

/// A table's entries, by position, in pages of [`PAGE`] entries: every page but the last
/// is full, and a table's first page grows 1, 2, 4, 8.
///
/// One growing vector per table moved to a new block at each growth, and the blocks it
/// left behind (3-6 KiB each at 61 keys a table) were too big for the smaller requests
/// that followed and too small for the bigger ones: glibc's malloc_info showed 19 MB of
/// free chunks inside the heap after loading 1M keys (19 B/key of RSS). Equal-sized pages
/// are never moved and any freed one fits the next request; the slack is at most one
/// partly filled page. A page is a `ThinVec` (one pointer; its length lives in the
/// allocation), so the first [`INLINE_PAGES`] fit in the table.
#[derive(Debug, Default, Clone)]
#[repr(C)]
struct Pages {
    len: usize,
    head: [Page; INLINE_PAGES],
    more: Vec<Page>,
}

impl Pages {
    #[inline]
    fn page(&self, p: usize) -> &Page {
        match self.head.get(p) {
            Some(page) => page,
            // Through an opaque reference: the compiler otherwise loads `more`'s pointer
            // and length before the branch (hoisted out of a lookup's probe loop), and
            // they live in the table's third cache line, which a lookup of an inline
            // page then waits for.
            None => more_page(std::hint::black_box::<&Vec<Page>>(&self.more), p),
        }
    }

    #[inline]
    fn page_mut(&mut self, p: usize) -> &mut Page {
        match self.head.get_mut(p) {
            Some(page) => page,
            None => &mut self.more[p - INLINE_PAGES],
        }
    }

    #[inline]
    fn get(&self, i: usize) -> &(Key, Entry) {
        &self.page(i / PAGE)[i % PAGE]
    }

    /// Where entry `i`'s page starts (its header, which indexing reads for the length)
    /// and where the entry lives, computed without reading the page; `i` must be a
    /// position the index holds.
    #[inline]
    fn entry_addr(&self, i: usize) -> (*const u8, *const (Key, Entry)) {
        let page = self.page(i / PAGE).as_ptr();
        (
            page.cast::<u8>().wrapping_sub(PAGE_HEADER),
            page.wrapping_add(i % PAGE),
        )
    }

    #[inline]
    fn get_mut(&mut self, i: usize) -> &mut (Key, Entry) {
        &mut self.page_mut(i / PAGE)[i % PAGE]
    }

    fn push(&mut self, kv: (Key, Entry)) {
        let p = self.len / PAGE;
        if p >= INLINE_PAGES && self.more.len() == p - INLINE_PAGES {
            self.more.push(ThinVec::new());
        }
        let page = self.page_mut(p);
        if page.len() == page.capacity() {
            // The first page doubles up to PAGE; the others are allocated whole.
            let want = if p == 0 {
                (page.capacity() * 2).clamp(1, PAGE)
            } else {
                PAGE
            };
            page.reserve_exact(want - page.len());
        }
        page.push(kv);
        self.len += 1;
    }

    /// Removes the entry at `pos`, moving the last entry into its place.
    fn swap_remove(&mut self, pos: usize) -> (Key, Entry) {
        let p = (self.len - 1) / PAGE;
        let page = self.page_mut(p);
        let Some(last) = page.pop() else {
            unreachable!("the last entry's page holds it: positions come from the index")
        };
        if page.is_empty() {
            if p >= INLINE_PAGES {
                self.more.pop();
                if self.more.len() < self.more.capacity() / 4 {
                    self.more.shrink_to(self.more.len() * 2);
                }
            } else {
                *page = ThinVec::new();
            }
        }
        self.len -= 1;
        if pos == self.len {
            last
        } else {
            std::mem::replace(self.get_mut(pos), last)
        }
    }

    fn iter(&self) -> impl Iterator<Item = &(Key, Entry)> {
        self.head.iter().chain(self.more.iter()).flatten()
    }

    fn heap_bytes(&self) -> usize {
        self.more.capacity() * std::mem::size_of::<Page>()
            + self
                .head
                .iter()
                .chain(self.more.iter())
                .filter(|p| p.capacity() > 0)
                .map(|p| PAGE_HEADER + p.capacity() * std::mem::size_of::<(Key, Entry)>())
                .sum::<usize>()
    }
}

/// The keys of one cluster slot in one database.
///
/// Entries live densely by position (see [`Pages`]) and a hash index of 4-byte positions
/// ([`PositionIndex`]) finds them. A hash map storing 72-byte (key, entry) buckets
/// directly sits at 44-87% load, so a table just past a power of two (1M keys spread
/// over 16384 tables is ~61 each, just past 56) wastes half its buckets; here the waste
/// is 4 bytes per empty index slot. Removal moves the last entry into the hole.
///
/// Fields in the order a lookup or a write reads them (`repr(C)`): behind the lock word,
/// the index header, the counts and `partial` (which every write checks) fill the first
/// cache line, the inline page pointers the second; what only overflowing tables and
/// running snapshots read comes last. A write once waited on a third line for `partial`
/// alone (`perf`: 97% of `Locked::get_in`'s samples under a prefetched SET load).
#[derive(Debug, Default, Clone)]
#[repr(C)]
pub struct SlotTable {
    index: PositionIndex,
    /// How many entries carry a deadline: active expiry skips tables where this is 0.
    volatile: usize,
    /// A large table being captured chunk by chunk for the running snapshot.
    partial: Option<Box<PartialCapture>>,
    entries: Pages,
    /// The last snapshot epoch this table was captured for (see `Keyspace::begin_snapshot`).
    pub(crate) snapshot_epoch: u64,
}

/// Entries per chunk when a table is captured piecewise (any table of more than this).
///
/// Small on purpose: under random writes a writer's first touch of an uncaptured table
/// pays for its chunk on the event loop, and nearly every table gets that first touch
/// early in a snapshot. With whole tables (~180 entries at 3M keys) snapshot.sh's writers
/// did 13-18k writes/s during BGSAVE (54-62k before it); with chunks of 32 (and a faster
/// serializer) 31-44k.
pub const CHUNK: usize = 32;

/// A table's capture for a running snapshot, one chunk of positions at a time.
///
/// Capturing a table whole stalls its writers for as long as the copy takes, which for a
/// slot made huge by a hash tag (`{user}:1..10M`) is far too long, and is wasted work for
/// a writer that changes one key. Instead, chunk `c`
/// covers positions `c * CHUNK ..` of the `len_at_start` entries the table held when the
/// snapshot reached it, and is captured just before anything changes one of its
/// positions. Positions only change through an edit in place, a removal (which moves the
/// last entry into the hole, so both positions count) or an append past the end; so an
/// uncaptured chunk still holds exactly its entries from the start, and the walk captures
/// whatever chunks are left, one per lock.
#[derive(Clone)]
struct PartialCapture {
    sink: std::sync::Arc<dyn crate::keyspace::SnapshotSink>,
    db: usize,
    slot: crate::Slot,
    len_at_start: usize,
    done: Vec<bool>,
    left: usize,
}

impl std::fmt::Debug for PartialCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialCapture")
            .field("len_at_start", &self.len_at_start)
            .field("left", &self.left)
            .finish()
    }
}

impl SlotTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len == 0
    }

    /// Entries with a deadline.
    pub fn volatile_len(&self) -> usize {
        self.volatile
    }

    #[inline]
    fn position(&self, key: &[u8]) -> Option<usize> {
        self.position_hashed(hash_of(key), key)
    }

    /// Starts loading the index line a lookup of the key hashed to `hash` (see
    /// [`hash_of`]) reads first. A batch calls this for all of its keys, then
    /// [`SlotTable::prefetch_entry`] for all of them, so that the index misses of a
    /// batch overlap, then its entry misses.
    #[inline]
    pub(crate) fn prefetch_slot(&self, hash: u64) {
        if let Some(slot) = self.index.home_slot(hash) {
            prefetch_line(slot);
        }
    }

    /// Starts loading the entry a lookup under `hash` will most likely read, without
    /// waiting for it: the entry of the first index slot whose hash tag matches
    /// (comparing keys would wait for the entry). Reads the index line.
    pub(crate) fn prefetch_entry(&self, hash: u64) {
        if let Some(i) = self.index.likely_position(hash) {
            let (page, at) = self.entries.entry_addr(i);
            prefetch_line(page);
            prefetch_line(at);
            prefetch_line(
                at.cast::<u8>()
                    .wrapping_add(std::mem::size_of::<(Key, Entry)>() - 1),
            );
        }
    }

    /// The entry, ignoring deadlines (the caller decides what expired means).
    #[inline]
    pub fn peek(&self, key: &[u8]) -> Option<&Entry> {
        self.position(key).map(|i| &self.entries.get(i).1)
    }

    /// Where `key` is, if it is there and alive at `alive_at` (see [`Entry::is_expired`]):
    /// for [`SlotTable::entry_mut_at`] after the caller has done its bookkeeping, so the
    /// key is looked up once.
    #[inline]
    pub(crate) fn live_position(&self, key: &[u8], alive_at: u64) -> Option<usize> {
        let i = self.position(key)?;
        (!self.entries.get(i).1.is_expired(alive_at)).then_some(i)
    }

    /// The entry at a position [`SlotTable::live_position`] gave.
    #[inline]
    pub(crate) fn entry_at(&self, i: usize) -> &Entry {
        &self.entries.get(i).1
    }

    /// Mutable access to the entry at a position [`SlotTable::live_position`] gave, with
    /// nothing changed in the table since.
    #[inline]
    pub(crate) fn entry_mut_at(&mut self, i: usize) -> &mut Entry {
        self.before_change(i);
        &mut self.entries.get_mut(i).1
    }

    /// Mutable access to an entry; the deadline can only be changed through
    /// [`SlotTable::set_expire`].
    #[inline]
    pub fn peek_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        let i = self.position(key)?;
        self.before_change(i);
        Some(&mut self.entries.get_mut(i).1)
    }

    /// Inserts or replaces; returns the previous entry. One hash, one probe.
    pub fn insert(&mut self, key: &[u8], entry: Entry) -> Option<Entry> {
        if self.partial.is_some() {
            // A large table mid-snapshot: the position about to change is the key's own,
            // or the end for a new key.
            let at = self.position(key).unwrap_or(self.entries.len);
            self.before_change(at);
        }
        let new_volatile = entry.expire_at != 0;
        let hash = hash_of(key);
        if let Some(i) = self.position_hashed(hash, key) {
            let old = std::mem::replace(&mut self.entries.get_mut(i).1, entry);
            match (old.expire_at != 0, new_volatile) {
                (true, false) => self.volatile -= 1,
                (false, true) => self.volatile += 1,
                _ => {}
            }
            return Some(old);
        }
        if new_volatile {
            self.volatile += 1;
        }
        self.entries.push((key.into(), entry));
        let entries = &self.entries;
        self.index
            .insert(hash, entries.len - 1, entries.len, |i| rehash(entries, i));
        None
    }

    #[inline]
    fn position_hashed(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(hash, |i| entries.get(i).0.as_bytes() == key)
            .map(|(_, i)| i)
    }

    /// Makes room for `additional` more entries (a dump announcing its size).
    pub fn reserve(&mut self, additional: usize) {
        let pages = (self.entries.len + additional).div_ceil(PAGE);
        let more = pages.saturating_sub(INLINE_PAGES);
        self.entries
            .more
            .reserve(more.saturating_sub(self.entries.more.len()));
        let entries = &self.entries;
        self.index
            .reserve(entries.len + additional, entries.len, |i| {
                rehash(entries, i)
            });
    }

    /// Removes the entry at `pos`: the last entry moves into its place.
    fn remove_at(&mut self, pos: usize, hash: u64) -> Entry {
        if self.partial.is_some() {
            self.before_change(pos);
            self.before_change(self.entries.len - 1);
        }
        // Corrupting: positions come from the index, so the position has its slot.
        let Some((slot, _)) = self.index.find(hash, |i| i == pos) else {
            panic!("entry {pos} has no index slot");
        };
        let entries = &self.entries;
        self.index.remove(slot, |i| rehash(entries, i));
        let last = self.entries.len - 1;
        let (_, old) = self.entries.swap_remove(pos);
        if pos != last {
            let moved = rehash(&self.entries, pos);
            self.index.repoint(moved, last, pos);
        }
        if old.expire_at != 0 {
            self.volatile -= 1;
        }
        let entries = &self.entries;
        self.index
            .shrink_if_sparse(entries.len, |i| rehash(entries, i));
        old
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let pos = self.position(key)?;
        Some(self.remove_at(pos, hash_of(key)))
    }

    /// Sets (or with 0 clears) a key's deadline; false if the key is absent.
    pub fn set_expire(&mut self, key: &[u8], at_ms: u64) -> bool {
        let Some(e) = self.peek_mut(key) else {
            return false;
        };
        let was = e.expire_at != 0;
        e.expire_at = at_ms;
        match (was, at_ms != 0) {
            (true, false) => self.volatile -= 1,
            (false, true) => self.volatile += 1,
            _ => {}
        }
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_bytes(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|(k, _)| k.as_bytes())
    }

    /// The n-th key (RANDOMKEY picks n at random): O(1).
    pub fn nth_key(&self, n: usize) -> Option<&[u8]> {
        (n < self.entries.len).then(|| self.entries.get(n).0.as_bytes())
    }

    /// Removes every expired entry, calling `on_expired` with each key; returns how many
    /// entries were examined (those with deadlines) and how many were removed.
    pub fn remove_expired(
        &mut self,
        now_ms: u64,
        mut on_expired: impl FnMut(&[u8]),
    ) -> (usize, usize) {
        if self.volatile == 0 {
            return (0, 0);
        }
        let examined = self.volatile;
        let mut removed = 0;
        // Downwards: the entry swapped into a hole comes from above, already checked.
        let mut i = self.entries.len;
        while i > 0 {
            i -= 1;
            let (key, entry) = self.entries.get(i);
            if !entry.is_expired(now_ms) {
                continue;
            }
            on_expired(key.as_bytes());
            let hash = hash_of(key.as_bytes());
            self.remove_at(i, hash);
            removed += 1;
        }
        (examined, removed)
    }

    pub fn clear(&mut self) {
        self.finish_capture();
        self.entries = Pages::default();
        self.index = PositionIndex::default();
        self.volatile = 0;
    }

    /// Hands this table to a running snapshot: a small one whole, now; a large one chunk
    /// by chunk as it changes and as the walk asks (see [`PartialCapture`]).
    pub(crate) fn start_capture(
        &mut self,
        sink: &std::sync::Arc<dyn crate::keyspace::SnapshotSink>,
        db: usize,
        slot: crate::Slot,
    ) {
        if self.entries.len <= CHUNK {
            self.prefetch(0..self.entries.len);
            sink.capture(db, slot, &mut self.iter());
            return;
        }
        let chunks = self.entries.len.div_ceil(CHUNK);
        self.partial = Some(Box::new(PartialCapture {
            sink: sink.clone(),
            db,
            slot,
            len_at_start: self.entries.len,
            done: vec![false; chunks],
            left: chunks,
        }));
    }

    /// Captures chunk `c` of a partial capture, dropping the state once all are in.
    fn capture_chunk(&mut self, c: usize) {
        let Some(mut p) = self.partial.take() else {
            return;
        };
        if p.sink.closed() {
            return; // the snapshot ended (or failed): nothing more to hand over
        }
        if p.done.get(c) == Some(&false) {
            p.done[c] = true;
            p.left -= 1;
            let end = ((c + 1) * CHUNK).min(p.len_at_start);
            debug_assert!(end <= self.entries.len, "an uncaptured chunk lost entries");
            // Defensive: a broken invariant must not read past the end in release builds.
            let end = end.min(self.entries.len);
            self.prefetch((c * CHUNK).min(end)..end);
            let entries = &self.entries;
            let mut chunk = ((c * CHUNK).min(end)..end).map(|i| {
                let (k, e) = entries.get(i);
                (k.as_bytes(), e)
            });
            p.sink.capture(p.db, p.slot, &mut chunk);
        }
        if p.left > 0 {
            self.partial = Some(p);
        }
    }

    /// Loads the values at `positions` ahead of their serialization: a snapshot reads
    /// millions of values scattered over the heap, and its copy loop spent most of its
    /// time waiting on their cache misses one by one.
    fn prefetch(&self, positions: std::ops::Range<usize>) {
        let hint: usize = positions.map(|i| self.entries.get(i).1.value.touch()).sum();
        std::hint::black_box(hint);
    }

    /// Before position `pos` changes: captures its chunk if a partial capture needs it.
    #[inline]
    fn before_change(&mut self, pos: usize) {
        if let Some(p) = &self.partial {
            if pos < p.len_at_start {
                self.capture_chunk(pos / CHUNK);
            }
        }
    }

    /// The walk's step on a partially captured table: captures the next chunk still
    /// missing; false once none is.
    pub(crate) fn capture_next_chunk(&mut self) -> bool {
        let Some(c) = self
            .partial
            .as_ref()
            .and_then(|p| p.done.iter().position(|d| !d))
        else {
            self.partial = None;
            return false;
        };
        self.capture_chunk(c);
        true
    }

    /// Captures every chunk still missing (before the table is emptied or moved).
    pub(crate) fn finish_capture(&mut self) {
        while self.capture_next_chunk() {}
    }

    /// Approximate bytes used by this table's keys and values.
    pub fn memory_estimate(&self) -> usize {
        let mut total = self.entries.heap_bytes() + self.index.bytes();
        for (k, e) in self.entries.iter() {
            total += k.heap_size() + e.value.heap_size();
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{StrValue, Value};

    /// What a lookup or a write reads lies in the first two lines of the table's cell
    /// (behind the lock word, at most 8 bytes), the lines `Keyspace::prefetch` loads.
    #[test]
    fn a_lookup_reads_two_cache_lines() {
        use std::mem::{offset_of, size_of};
        let lock = 8;
        assert!(lock + offset_of!(SlotTable, partial) + size_of::<usize>() <= 64);
        assert!(lock + offset_of!(SlotTable, volatile) + size_of::<usize>() <= 64);
        assert!(lock + size_of::<PositionIndex>() <= 64);
        let head_end = lock
            + offset_of!(SlotTable, entries)
            + offset_of!(Pages, head)
            + size_of::<[Page; INLINE_PAGES]>();
        assert!(head_end <= 128, "inline pages end at {head_end}");
        assert_eq!(
            size_of::<parking_lot::Mutex<SlotTable>>(),
            lock + size_of::<SlotTable>()
        );
    }

    fn val(s: &str) -> Value {
        Value::Str(StrValue::from_bytes(s.as_bytes()))
    }

    #[test]
    fn volatile_count_follows_every_change() {
        let mut t = SlotTable::new();
        t.insert(b"a", Entry::with_expiry(val("1"), 100));
        t.insert(b"b", Entry::new(val("2")));
        assert_eq!(t.volatile_len(), 1);
        t.set_expire(b"b", 50);
        assert_eq!(t.volatile_len(), 2);
        t.insert(b"a", Entry::new(val("3")));
        assert_eq!(t.volatile_len(), 1);
        let mut gone = Vec::new();
        assert_eq!(t.remove_expired(60, |k| gone.push(k.to_vec())), (1, 1));
        assert_eq!(gone, vec![b"b".to_vec()]);
        assert_eq!(t.volatile_len(), 0);
        assert_eq!(t.len(), 1);
        t.set_expire(b"a", 10);
        t.remove(b"a");
        assert_eq!(t.volatile_len(), 0);
    }

    proptest::proptest! {
        /// The dense table against a HashMap model: inserts, replaces, removals, deadline
        /// changes and expiry sweeps, with the volatile count and the index kept true.
        #[test]
        fn matches_a_hashmap(ops in proptest::collection::vec((0u8..5, 0u16..300, 0u64..4), 1..600)) {
            let mut t = SlotTable::new();
            let mut model: std::collections::HashMap<Vec<u8>, (String, u64)> = Default::default();
            for (op, k, d) in ops {
                let key = format!("key:{k}").into_bytes();
                match op {
                    0 | 1 => {
                        let v = format!("v{k}{d}");
                        let at = if d == 0 { 0 } else { d * 100 };
                        let old = t.insert(&key, Entry::with_expiry(val(&v), at));
                        proptest::prop_assert_eq!(old.is_some(), model.insert(key, (v, at)).is_some());
                    }
                    2 => {
                        proptest::prop_assert_eq!(t.remove(&key).is_some(), model.remove(&key).is_some());
                    }
                    3 => {
                        let ok = t.set_expire(&key, d * 100);
                        proptest::prop_assert_eq!(ok, model.contains_key(&key));
                        if let Some(m) = model.get_mut(&key) { m.1 = d * 100; }
                    }
                    _ => {
                        let mut gone = Vec::new();
                        t.remove_expired(150, |k| gone.push(k.to_vec()));
                        let before = model.len();
                        model.retain(|_, (_, at)| *at == 0 || *at > 150);
                        proptest::prop_assert_eq!(gone.len(), before - model.len());
                    }
                }
                proptest::prop_assert_eq!(t.len(), model.len());
                proptest::prop_assert_eq!(t.volatile_len(), model.values().filter(|(_, at)| *at != 0).count());
            }
            for (k, (v, at)) in &model {
                let e = t.peek(k).expect("present");
                proptest::prop_assert_eq!(e.expire_at, *at);
                proptest::prop_assert_eq!(e.value.as_str().map(|s| s.to_vec()), Some(v.clone().into_bytes()));
            }
            let keys: std::collections::HashSet<Vec<u8>> = t.keys().map(<[u8]>::to_vec).collect();
            proptest::prop_assert_eq!(keys.len(), model.len());
        }
    }

    /// Records what a snapshot is handed.
    struct Recorder(parking_lot::Mutex<Vec<(Vec<u8>, Vec<u8>)>>);

    impl crate::keyspace::SnapshotSink for Recorder {
        fn capture(
            &self,
            _db: usize,
            _slot: crate::Slot,
            entries: &mut dyn Iterator<Item = (&[u8], &Entry)>,
        ) {
            let mut got = self.0.lock();
            for (k, e) in entries {
                let v = e.value.as_str().map(|s| s.to_vec()).unwrap_or_default();
                got.push((k.to_vec(), v));
            }
        }
    }

    proptest::proptest! {
        /// Chunked capture hands over exactly the table as it stood when the capture
        /// started, each entry once, whatever edits in place, replacements, removals
        /// (which move the last entry into the hole), expiry sweeps and inserts happen
        /// between the walk's chunk steps.
        #[test]
        fn chunked_capture_is_the_table_at_its_start(
            start in 0usize..(4 * CHUNK + 5),
            ops in proptest::collection::vec((0u8..6, 0u16..400), 0..400),
        ) {
            let mut t = SlotTable::new();
            for i in 0..start {
                t.insert(format!("key:{i}").as_bytes(), Entry::with_expiry(val(&format!("v{i}")), 100));
            }
            let mut expected: Vec<(Vec<u8>, Vec<u8>)> = t
                .iter()
                .map(|(k, e)| (k.to_vec(), e.value.as_str().map(|s| s.to_vec()).unwrap_or_default()))
                .collect();
            let recorder = std::sync::Arc::new(Recorder(Default::default()));
            let sink: std::sync::Arc<dyn crate::keyspace::SnapshotSink> = recorder.clone();
            t.start_capture(&sink, 0, 0);
            for (op, k) in ops {
                let key = format!("key:{k}").into_bytes();
                match op {
                    0 => {
                        t.insert(&key, Entry::new(val("changed")));
                    }
                    1 => {
                        t.remove(&key);
                    }
                    2 => {
                        if let Some(e) = t.peek_mut(&key) {
                            e.value = val("edited in place");
                        }
                    }
                    3 => {
                        t.remove_expired(200, |_| {});
                    }
                    4 => {
                        t.insert(format!("new:{k}").as_bytes(), Entry::new(val("after")));
                    }
                    _ => {
                        t.capture_next_chunk();
                    }
                }
            }
            t.finish_capture();
            let mut got = recorder.0.lock().clone();
            got.sort();
            expected.sort();
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
