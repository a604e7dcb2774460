//! Hashes, lists and sets: a compact encoding while small, a full structure past the same
//! thresholds Redis uses (`hash-max-listpack-entries` ...), reported with Redis' encoding
//! names. A collection never converts back, as in Redis.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// The large hash encoding: an insertion-ordered table, so that a member's position is a
/// stable SCAN cursor (see [`scan_window`]) and a random member is one index away. Values
/// up to 22 bytes are stored inline like fields: no allocation per HSET.
pub type HashTable = indexmap::IndexMap<CompactKey, CompactKey, hashbrown::DefaultHashBuilder>;
/// A borrowed (field, value) pair.
pub type FieldValueRef<'a> = (&'a [u8], &'a [u8]);
/// The large set encoding (see [`HashTable`]).
pub type SetTable = indexmap::IndexSet<CompactKey, hashbrown::DefaultHashBuilder>;

/// The positions an incremental scan visits next, and the cursor to return.
///
/// Large collections are scanned from their last position down to 0. Removal moves the
/// last element into the hole (`swap_remove`), i.e. only ever from a higher position to a
/// lower one, and insertion appends at the end; so every element present for the whole
/// scan sits at or below the cursor until it is visited: none is missed, though one may
/// be returned twice, as Redis allows. Cursor 0 starts a scan and is returned at the end.
pub fn scan_window(len: usize, cursor: u64, count: usize) -> (std::ops::Range<usize>, u64) {
    let top = if cursor == 0 {
        len
    } else {
        (cursor as usize).min(len)
    };
    let take = count.max(1).min(top);
    (top - take..top, (top - take) as u64)
}

use crate::compact::CompactKey;
use crate::packed::Packed;
use crate::value::parse_canonical_i64;

/// The conversion thresholds, mirrored from the configuration.
#[derive(Debug)]
pub struct EncodingLimits {
    pub hash_max_listpack_entries: AtomicUsize,
    pub hash_max_listpack_value: AtomicUsize,
    /// Negative: a byte budget of 4 KB << (-n - 1) (Redis' -1..-5); positive: entries.
    pub list_max_listpack_size: AtomicI64,
    pub set_max_intset_entries: AtomicUsize,
    pub set_max_listpack_entries: AtomicUsize,
    pub set_max_listpack_value: AtomicUsize,
    pub stream_node_max_bytes: AtomicUsize,
    pub stream_node_max_entries: AtomicUsize,
}

impl EncodingLimits {
    /// The stream node limits now in force.
    pub fn stream_nodes(&self) -> crate::stream::NodeLimits {
        crate::stream::NodeLimits {
            max_bytes: self.stream_node_max_bytes.load(Ordering::Relaxed),
            max_entries: self.stream_node_max_entries.load(Ordering::Relaxed),
        }
    }
}

impl Default for EncodingLimits {
    fn default() -> Self {
        EncodingLimits {
            hash_max_listpack_entries: AtomicUsize::new(128),
            hash_max_listpack_value: AtomicUsize::new(64),
            list_max_listpack_size: AtomicI64::new(-2),
            set_max_intset_entries: AtomicUsize::new(512),
            set_max_listpack_entries: AtomicUsize::new(128),
            set_max_listpack_value: AtomicUsize::new(64),
            stream_node_max_bytes: AtomicUsize::new(4096),
            stream_node_max_entries: AtomicUsize::new(100),
        }
    }
}

fn get(a: &AtomicUsize) -> usize {
    a.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------- hashes

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashValue {
    /// Field, value, field, value ...
    Packed(Packed),
    /// Past the listpack thresholds. Both large forms sit behind one box so that the
    /// enum is 16 bytes (the packed buffer's non-null pointer is its tag) and lives in
    /// its keyspace entry's value, not in a box of its own: a small hash costs its key
    /// entry and its packed buffer, nothing more.
    Large(Box<LargeHash>),
}

/// The large forms of a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LargeHash {
    Table(HashTable),
    /// Past `shards::SHARD_AT` fields: shared shards, so a snapshot copies pointers.
    Shards(crate::shards::Sharded<CompactKey>),
}

impl Default for HashValue {
    fn default() -> Self {
        HashValue::Packed(Packed::new())
    }
}

impl LargeHash {
    fn len(&self) -> usize {
        match self {
            LargeHash::Table(t) => t.len(),
            LargeHash::Shards(s) => s.len(),
        }
    }

    fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match self {
            LargeHash::Table(t) => t.get(field).map(CompactKey::as_bytes),
            LargeHash::Shards(s) => s.get(field).map(CompactKey::as_bytes),
        }
    }

    fn insert(&mut self, field: &[u8], value: &[u8]) -> bool {
        match self {
            LargeHash::Table(t) => {
                let new = t
                    .insert(CompactKey::new(field), CompactKey::new(value))
                    .is_none();
                if t.len() > crate::shards::SHARD_AT {
                    let table = std::mem::take(t);
                    *self = LargeHash::Shards(crate::shards::Sharded::split(table.into_iter()));
                }
                new
            }
            LargeHash::Shards(s) => s.insert(field, CompactKey::new(value)),
        }
    }

    fn remove(&mut self, field: &[u8]) -> bool {
        match self {
            LargeHash::Table(t) => t.swap_remove(field).is_some(),
            LargeHash::Shards(s) => s.remove(field),
        }
    }

    /// Every pair, in the encoding's order.
    fn iter(&self) -> Box<dyn Iterator<Item = (&CompactKey, &CompactKey)> + '_> {
        match self {
            LargeHash::Table(t) => Box::new(t.iter()),
            LargeHash::Shards(s) => Box::new(s.iter()),
        }
    }
}

impl HashValue {
    pub fn len(&self) -> usize {
        match self {
            HashValue::Packed(p) => p.len() / 2,
            HashValue::Large(l) => l.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            HashValue::Packed(p) => p.is_empty(),
            HashValue::Large(l) => l.len() == 0,
        }
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            HashValue::Packed(_) => "listpack",
            HashValue::Large(_) => "hashtable",
        }
    }

    /// Whether the hash is split into shared shards (a snapshot copies it cheaply).
    pub fn is_sharded(&self) -> bool {
        matches!(self, HashValue::Large(l) if matches!(**l, LargeHash::Shards(_)))
    }

    /// Index of `field` among the packed pairs.
    fn packed_index(p: &Packed, field: &[u8]) -> Option<usize> {
        p.iter().step_by(2).position(|f| f == field)
    }

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match self {
            HashValue::Packed(p) => Self::packed_index(p, field).and_then(|i| p.get(2 * i + 1)),
            HashValue::Large(l) => l.get(field),
        }
    }

    pub fn contains(&self, field: &[u8]) -> bool {
        self.get(field).is_some()
    }

    /// Sets `field`; returns true if it is new.
    pub fn insert(&mut self, field: &[u8], value: &[u8], limits: &EncodingLimits) -> bool {
        if let HashValue::Packed(p) = self {
            let max_value = get(&limits.hash_max_listpack_value);
            let fits = field.len() <= max_value && value.len() <= max_value;
            if let Some(i) = Self::packed_index(p, field) {
                if fits {
                    p.replace(2 * i + 1, value);
                    return false;
                }
            } else if fits && p.len() / 2 < get(&limits.hash_max_listpack_entries) {
                p.push_all_back(&[field, value]);
                return true;
            }
            self.convert();
        }
        match self {
            HashValue::Large(l) => l.insert(field, value),
            HashValue::Packed(_) => false,
        }
    }

    fn convert(&mut self) {
        if let HashValue::Packed(p) = self {
            let mut t = HashTable::with_capacity_and_hasher(p.len() / 2, Default::default());
            let mut items = p.iter();
            while let (Some(f), Some(v)) = (items.next(), items.next()) {
                t.insert(CompactKey::new(f), CompactKey::new(v));
            }
            drop(items);
            *self = HashValue::Large(Box::new(LargeHash::Table(t)));
        }
    }

    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self {
            HashValue::Packed(p) => {
                Self::packed_index(p, field).is_some_and(|i| p.remove_two(2 * i))
            }
            HashValue::Large(l) => l.remove(field),
        }
    }

    /// Every (field, value) pair, in the encoding's order.
    pub fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::with_capacity(self.len());
        let _ = self.try_for_each_pair(|f, v| {
            out.push((f, v));
            Ok::<(), std::convert::Infallible>(())
        });
        out
    }

    /// Calls `f` with every (field, value) pair in the encoding's order, stopping at its
    /// first error (the RDB writer streams through this without collecting the pairs).
    pub fn try_for_each_pair<'a, E>(
        &'a self,
        mut f: impl FnMut(&'a [u8], &'a [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            HashValue::Packed(p) => {
                let mut items = p.iter();
                while let (Some(field), Some(value)) = (items.next(), items.next()) {
                    f(field, value)?;
                }
            }
            HashValue::Large(l) => {
                for (field, value) in l.iter() {
                    f(field.as_bytes(), value.as_bytes())?;
                }
            }
        }
        Ok(())
    }

    pub fn heap_size(&self) -> usize {
        match self {
            HashValue::Packed(p) => p.heap_size(),
            HashValue::Large(l) => {
                std::mem::size_of::<LargeHash>()
                    + l.iter()
                        .map(|(k, v)| 64 + k.heap_size() + v.heap_size())
                        .sum::<usize>()
            }
        }
    }

    /// One HSCAN step: (next cursor, pairs). A packed hash is returned whole (cursor 0),
    /// as Redis returns a listpack; a table is walked by [`scan_window`].
    pub fn scan(&self, cursor: u64, count: usize) -> (u64, Vec<FieldValueRef<'_>>) {
        let HashValue::Large(l) = self else {
            return (0, self.pairs());
        };
        match &**l {
            LargeHash::Table(t) => {
                let (window, next) = scan_window(t.len(), cursor, count);
                let items = window
                    .rev()
                    .filter_map(|i| t.get_index(i))
                    .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                    .collect();
                (next, items)
            }
            LargeHash::Shards(s) => {
                let (next, items) = s.scan(cursor, count);
                let items = items
                    .into_iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                    .collect();
                (next, items)
            }
        }
    }

    /// The pair at position `i` of a uniform draw (HRANDFIELD): O(1) for both encodings'
    /// large forms.
    pub fn pair_at(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let (k, v) = match self {
            HashValue::Packed(p) => return Some((p.get(2 * i)?, p.get(2 * i + 1)?)),
            HashValue::Large(l) => match &**l {
                LargeHash::Table(t) => t.get_index(i)?,
                LargeHash::Shards(s) => s.at(i)?,
            },
        };
        Some((k.as_bytes(), v.as_bytes()))
    }
}

// ---------------------------------------------------------------- lists

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListValue {
    Packed(Packed),
    /// Shared nodes: a snapshot's copy of a long list costs node pointers only.
    Deque(Box<crate::node_list::NodeList>),
}

impl Default for ListValue {
    fn default() -> Self {
        ListValue::Packed(Packed::new())
    }
}

impl ListValue {
    pub fn len(&self) -> usize {
        match self {
            ListValue::Packed(p) => p.len(),
            ListValue::Deque(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Redis 7.0's name (the version Carmine reports): every list is a "quicklist", its
    /// small form being a quicklist of one listpack node. (7.2 says "listpack".)
    pub fn encoding(&self) -> &'static str {
        "quicklist"
    }

    /// Whether a packed list of this shape is still within `list-max-listpack-size`.
    fn packed_fits(p: &Packed, limits: &EncodingLimits) -> bool {
        let limit = limits.list_max_listpack_size.load(Ordering::Relaxed);
        if limit > 0 {
            p.len() <= limit as usize
        } else {
            let budget = 4096usize << ((-limit).clamp(1, 5) - 1);
            p.bytes() <= budget
        }
    }

    fn convert(&mut self) {
        if let ListValue::Packed(p) = self {
            let mut list = crate::node_list::NodeList::default();
            for item in p.iter() {
                list.push_back(item);
            }
            *self = ListValue::Deque(Box::new(list));
        }
    }

    fn check(&mut self, limits: &EncodingLimits) {
        if let ListValue::Packed(p) = self {
            if !Self::packed_fits(p, limits) {
                self.convert();
            }
        }
    }

    pub fn push(&mut self, item: &[u8], front: bool, limits: &EncodingLimits) {
        match self {
            ListValue::Packed(p) if front => p.push_front(item),
            ListValue::Packed(p) => p.push_back(item),
            ListValue::Deque(d) => d.push(item, front),
        }
        self.check(limits);
    }

    pub fn pop(&mut self, front: bool) -> Option<Vec<u8>> {
        match self {
            ListValue::Packed(p) if front => p.pop_front(),
            ListValue::Packed(p) => p.pop_back(),
            ListValue::Deque(d) => d.pop(front),
        }
    }

    pub fn get(&self, index: usize) -> Option<&[u8]> {
        match self {
            ListValue::Packed(p) => p.get(index),
            ListValue::Deque(d) => d.get(index),
        }
    }

    pub fn set(&mut self, index: usize, item: &[u8], limits: &EncodingLimits) -> bool {
        let ok = match self {
            ListValue::Packed(p) => p.replace(index, item),
            ListValue::Deque(d) => d.set(index, item),
        };
        self.check(limits);
        ok
    }

    pub fn insert(&mut self, index: usize, item: &[u8], limits: &EncodingLimits) {
        match self {
            ListValue::Packed(p) => p.insert(index, item),
            ListValue::Deque(d) => d.insert(index, item),
        }
        self.check(limits);
    }

    pub fn remove(&mut self, index: usize) -> Option<Vec<u8>> {
        match self {
            ListValue::Packed(p) => p.remove(index),
            ListValue::Deque(d) => d.remove(index),
        }
    }

    /// Elements `start..=end` (already clamped by the caller).
    pub fn range(&self, start: usize, end: usize) -> Vec<&[u8]> {
        if start > end || start >= self.len() {
            return Vec::new();
        }
        let n = end - start + 1;
        match self {
            ListValue::Packed(p) => p.iter().skip(start).take(n).collect(),
            ListValue::Deque(d) => d.iter_from(start).take(n).collect(),
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = &[u8]> + '_> {
        match self {
            ListValue::Packed(p) => Box::new(p.iter()),
            ListValue::Deque(d) => Box::new(d.iter()),
        }
    }

    /// Keeps only `start..=end`; an empty range empties the list.
    pub fn trim(&mut self, start: usize, end: usize) {
        let keep: Vec<Vec<u8>> = self
            .range(start, end)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        match self {
            ListValue::Packed(p) => *p = Packed::from_items(keep.iter().map(Vec::as_slice)),
            ListValue::Deque(d) => **d = keep.into_iter().collect(),
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            ListValue::Packed(p) => p.heap_size(),
            ListValue::Deque(d) => {
                std::mem::size_of::<crate::node_list::NodeList>() + d.heap_size()
            }
        }
    }
}

// ---------------------------------------------------------------- sets

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetValue {
    /// Sorted integers, each in the width they all fit (Redis' intset). Inline: the
    /// buffer's non-null pointer is the enum's tag, so a small integer set is its key's
    /// entry and one buffer, as a small hash is.
    Ints(crate::int_set::IntSet),
    /// Every other form, behind one box so that the enum is 16 bytes.
    Large(Box<LargeSet>),
}

/// The forms of a set that holds a member other than an integer, or more integers than
/// `set-max-intset-entries`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LargeSet {
    Packed(Packed),
    Table(Box<SetTable>),
    /// Past `shards::SHARD_AT` members: shared shards, so a snapshot copies pointers.
    Shards(Box<crate::shards::Sharded<()>>),
}

impl Default for SetValue {
    fn default() -> Self {
        SetValue::Ints(crate::int_set::IntSet::default())
    }
}

impl SetValue {
    /// The shards of a set split past `shards::SHARD_AT` members.
    pub fn shards(&self) -> Option<&crate::shards::Sharded<()>> {
        match self {
            SetValue::Large(large) => match &**large {
                LargeSet::Shards(s) => Some(s),
                _ => None,
            },
            SetValue::Ints(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            SetValue::Ints(v) => v.len(),
            SetValue::Large(large) => large.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Redis 7.0's names (the version Carmine reports): small non-integer sets are stored
    /// packed here but were "hashtable" in 7.0 (7.2 says "listpack").
    pub fn encoding(&self) -> &'static str {
        match self {
            SetValue::Ints(_) => "intset",
            SetValue::Large(_) => "hashtable",
        }
    }

    pub fn contains(&self, m: &[u8]) -> bool {
        match self {
            SetValue::Ints(v) => parse_canonical_i64(m).is_some_and(|n| v.contains(n)),
            SetValue::Large(large) => large.contains(m),
        }
    }

    /// Adds `m`; returns true if it was not there.
    pub fn insert(&mut self, m: &[u8], limits: &EncodingLimits) -> bool {
        if self.contains(m) {
            return false;
        }
        match self {
            SetValue::Large(large) => large.insert(m, limits),
            SetValue::Ints(v) => {
                if let Some(n) = parse_canonical_i64(m) {
                    if v.len() < get(&limits.set_max_intset_entries) {
                        return v.insert(n);
                    }
                }
                // Packed first: adding `m` moves it on to the table when it is too many
                // or `m` too long, as for any packed set.
                let members: Vec<Vec<u8>> = v.iter().map(|n| n.to_string().into_bytes()).collect();
                let mut large = Box::new(LargeSet::Packed(Packed::from_items(
                    members.iter().map(Vec::as_slice),
                )));
                let added = large.insert(m, limits);
                *self = SetValue::Large(large);
                added
            }
        }
    }

    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self {
            SetValue::Ints(v) => parse_canonical_i64(m).is_some_and(|n| v.remove(n)),
            SetValue::Large(large) => large.remove(m),
        }
    }

    pub fn members(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len());
        let _ = self.try_for_each_member(|m| {
            out.push(m.to_vec());
            Ok::<(), std::convert::Infallible>(())
        });
        out
    }

    /// Calls `f` with every member in the encoding's order, stopping at its first error
    /// (the RDB writer streams through this without collecting the members).
    pub fn try_for_each_member<E>(
        &self,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            SetValue::Ints(v) => {
                let mut text = itoa::Buffer::new();
                v.iter().try_for_each(|n| f(text.format(n).as_bytes()))
            }
            SetValue::Large(large) => large.try_for_each_member(f),
        }
    }

    /// A uniformly random member.
    pub fn random(&self) -> Option<Vec<u8>> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let i = fastrand::usize(..n);
        match self {
            SetValue::Ints(v) => v.get(i).map(|n| n.to_string().into_bytes()),
            SetValue::Large(large) => large.get(i),
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            SetValue::Ints(v) => v.heap_size(),
            SetValue::Large(large) => std::mem::size_of::<LargeSet>() + large.heap_size(),
        }
    }

    /// One SSCAN step: (next cursor, members); compact encodings are returned whole.
    pub fn scan(&self, cursor: u64, count: usize) -> (u64, Vec<Vec<u8>>) {
        let SetValue::Large(large) = self else {
            return (0, self.members());
        };
        match &**large {
            LargeSet::Table(t) => {
                let (window, next) = scan_window(t.len(), cursor, count);
                let items = window
                    .rev()
                    .filter_map(|i| t.get_index(i))
                    .map(|k| k.as_bytes().to_vec())
                    .collect();
                (next, items)
            }
            LargeSet::Shards(s) => {
                let (next, items) = s.scan(cursor, count);
                let items = items
                    .into_iter()
                    .map(|(k, _)| k.as_bytes().to_vec())
                    .collect();
                (next, items)
            }
            LargeSet::Packed(_) => (0, self.members()),
        }
    }
}

impl LargeSet {
    fn len(&self) -> usize {
        match self {
            LargeSet::Packed(p) => p.len(),
            LargeSet::Table(t) => t.len(),
            LargeSet::Shards(s) => s.len(),
        }
    }

    fn contains(&self, m: &[u8]) -> bool {
        match self {
            LargeSet::Packed(p) => p.position(m).is_some(),
            LargeSet::Table(t) => t.contains(m),
            LargeSet::Shards(s) => s.contains(m),
        }
    }

    /// Adds `m`, known not to be a member, moving to the next form past the limits.
    fn insert(&mut self, m: &[u8], limits: &EncodingLimits) -> bool {
        loop {
            match self {
                LargeSet::Packed(p) => {
                    if p.len() < get(&limits.set_max_listpack_entries)
                        && m.len() <= get(&limits.set_max_listpack_value)
                    {
                        p.push_back(m);
                        return true;
                    }
                    *self = LargeSet::Table(Box::new(p.iter().map(CompactKey::new).collect()));
                }
                LargeSet::Table(t) => {
                    let new = t.insert(CompactKey::new(m));
                    if t.len() > crate::shards::SHARD_AT {
                        let table = std::mem::take(&mut **t);
                        *self = LargeSet::Shards(Box::new(crate::shards::Sharded::split(
                            table.into_iter().map(|k| (k, ())),
                        )));
                    }
                    return new;
                }
                LargeSet::Shards(s) => return s.insert(m, ()),
            }
        }
    }

    fn remove(&mut self, m: &[u8]) -> bool {
        match self {
            LargeSet::Packed(p) => p.remove_item(m),
            LargeSet::Table(t) => t.swap_remove(m),
            LargeSet::Shards(s) => s.remove(m),
        }
    }

    fn try_for_each_member<E>(&self, mut f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        match self {
            LargeSet::Packed(p) => p.iter().try_for_each(f),
            LargeSet::Table(t) => t.iter().try_for_each(|m| f(m.as_bytes())),
            LargeSet::Shards(s) => s.iter().try_for_each(|(m, _)| f(m.as_bytes())),
        }
    }

    /// The member at position `i` in the form's order.
    fn get(&self, i: usize) -> Option<Vec<u8>> {
        match self {
            LargeSet::Packed(p) => p.get(i).map(<[u8]>::to_vec),
            LargeSet::Table(t) => t.get_index(i).map(|k| k.as_bytes().to_vec()),
            LargeSet::Shards(s) => s.at(i).map(|(k, _)| k.as_bytes().to_vec()),
        }
    }

    fn heap_size(&self) -> usize {
        match self {
            LargeSet::Packed(p) => p.heap_size(),
            LargeSet::Table(t) => t.iter().map(|k| 41 + k.heap_size()).sum(),
            LargeSet::Shards(s) => s.iter().map(|(k, _)| 41 + k.heap_size()).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small_limits() -> EncodingLimits {
        let l = EncodingLimits::default();
        l.hash_max_listpack_entries.store(4, Ordering::Relaxed);
        l.hash_max_listpack_value.store(8, Ordering::Relaxed);
        l.list_max_listpack_size.store(4, Ordering::Relaxed);
        l.set_max_intset_entries.store(4, Ordering::Relaxed);
        l.set_max_listpack_entries.store(4, Ordering::Relaxed);
        l.set_max_listpack_value.store(8, Ordering::Relaxed);
        l
    }

    fn item() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (0i64..20).prop_map(|n| n.to_string().into_bytes()),
            "[a-e]{1,3}".prop_map(String::into_bytes),
            "[a-z]{9,12}".prop_map(String::into_bytes),
        ]
    }

    #[test]
    fn compact_headers() {
        // 16: hashes and lists live inline in `Value` (see `HashValue::Large`).
        assert_eq!(std::mem::size_of::<HashValue>(), 16);
        assert_eq!(std::mem::size_of::<ListValue>(), 16);
        assert_eq!(std::mem::size_of::<SetValue>(), 16);
        assert_eq!(std::mem::size_of::<LargeSet>(), 24);
    }

    /// A set goes intset -> packed -> table -> shards as it grows, each step keeping
    /// every member, and reports Redis 7.0's encoding names and a size for each form.
    #[test]
    fn a_set_walks_through_its_forms() {
        let limits = small_limits();
        let mut set = SetValue::default();
        let mut model = std::collections::BTreeSet::new();
        let mut add = |set: &mut SetValue, m: Vec<u8>| {
            assert!(set.insert(&m, &limits));
            assert!(!set.insert(&m, &limits), "a member is added once");
            model.insert(m);
            let mut members = set.members();
            members.sort();
            assert_eq!(members, model.iter().cloned().collect::<Vec<_>>());
            assert!(set.heap_size() > 0);
        };
        for n in [3, -1, 2] {
            add(&mut set, n.to_string().into_bytes());
        }
        assert!(matches!(set, SetValue::Ints(_)));
        assert_eq!(set.encoding(), "intset");
        add(&mut set, b"x".to_vec());
        assert!(matches!(&set, SetValue::Large(l) if matches!(**l, LargeSet::Packed(_))));
        assert_eq!(set.encoding(), "hashtable");
        add(&mut set, b"y".to_vec());
        assert!(matches!(&set, SetValue::Large(l) if matches!(**l, LargeSet::Table(_))));
        for i in 0..crate::shards::SHARD_AT {
            add(&mut set, format!("m{i}").into_bytes());
        }
        assert!(set.shards().is_some());
        assert_eq!(set.encoding(), "hashtable");
        assert_eq!(set.len(), crate::shards::SHARD_AT + 5);
        assert!(set.remove(b"x") && !set.remove(b"x"));
        assert!(set.remove(b"-1") && set.contains(b"3") && !set.contains(b"-1"));
    }

    proptest! {
        #[test]
        fn hash_matches_model_across_conversion(ops in proptest::collection::vec((any::<bool>(), item(), item()), 1..60)) {
            let limits = small_limits();
            let mut h = HashValue::default();
            let mut model = std::collections::HashMap::new();
            for (add, f, v) in ops {
                if add {
                    prop_assert_eq!(h.insert(&f, &v, &limits), model.insert(f, v).is_none());
                } else {
                    prop_assert_eq!(h.remove(&f), model.remove(&f).is_some());
                }
                prop_assert_eq!(h.len(), model.len());
            }
            for (f, v) in &model {
                prop_assert_eq!(h.get(f), Some(v.as_slice()));
            }
            if model.len() > 4 {
                prop_assert_eq!(h.encoding(), "hashtable");
            }
        }

        #[test]
        fn list_matches_model_across_conversion(ops in proptest::collection::vec((0u8..5, item(), 0usize..8), 1..60)) {
            let limits = small_limits();
            let mut l = ListValue::default();
            let mut model: std::collections::VecDeque<Vec<u8>> = Default::default();
            for (op, v, idx) in ops {
                match op {
                    0 => { l.push(&v, true, &limits); model.push_front(v); }
                    1 => { l.push(&v, false, &limits); model.push_back(v); }
                    2 => prop_assert_eq!(l.pop(true), model.pop_front()),
                    3 => prop_assert_eq!(l.pop(false), model.pop_back()),
                    _ => {
                        let ok = l.set(idx, &v, &limits);
                        prop_assert_eq!(ok, idx < model.len());
                        if ok { model[idx] = v; }
                    }
                }
            }
            let got: Vec<Vec<u8>> = l.iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(got, Vec::from(model));
        }

        #[test]
        fn set_matches_model_across_conversion(ops in proptest::collection::vec((any::<bool>(), item()), 1..80)) {
            let limits = small_limits();
            let mut s = SetValue::default();
            let mut model = std::collections::HashSet::new();
            for (add, m) in ops {
                if add {
                    prop_assert_eq!(s.insert(&m, &limits), model.insert(m));
                } else {
                    prop_assert_eq!(s.remove(&m), model.remove(&m));
                }
                prop_assert_eq!(s.len(), model.len());
            }
            let got: std::collections::HashSet<Vec<u8>> = s.members().into_iter().collect();
            prop_assert_eq!(got, model);
        }

        /// SSCAN's guarantee under concurrent writes: every member present from the
        /// scan's start to its end is returned, whatever is added and removed between
        /// steps; and the scan ends.
        #[test]
        fn scan_returns_every_member_present_throughout(
            initial in 130usize..400,
            steps in proptest::collection::vec((0usize..5, 0u32..1000, 1usize..30), 1..200),
        ) {
            let limits = small_limits();
            let mut s = SetValue::default();
            for i in 0..initial {
                s.insert(format!("m{i}").as_bytes(), &limits);
            }
            let start: std::collections::HashSet<Vec<u8>> = s.members().into_iter().collect();
            let mut removed = std::collections::HashSet::new();
            let mut seen = std::collections::HashSet::new();
            let mut cursor = 0;
            let mut calls = 0;
            for (op, n, count) in steps.iter().cycle() {
                let m = format!("m{n}").into_bytes();
                match op {
                    0 if s.remove(&m) => { removed.insert(m); }
                    1 => { s.insert(format!("new{n}").as_bytes(), &limits); }
                    _ => {}
                }
                let (next, items) = s.scan(cursor, *count);
                seen.extend(items);
                calls += 1;
                cursor = next;
                if cursor == 0 {
                    break;
                }
                prop_assert!(calls < 10_000, "the scan must end");
            }
            for m in start.difference(&removed) {
                prop_assert!(seen.contains(m), "{} missed", String::from_utf8_lossy(m));
            }
        }
    }
}
