//! Streams: entries keyed by stream IDs, and consumer groups.
//!
//! Entries live in nodes of up to `stream-node-max-entries` entries (or about
//! `stream-node-max-bytes` bytes), kept in a B-tree by the ID of the node's first entry,
//! as Redis keeps listpacks in a radix tree. A node stores its entries packed into one
//! byte vector: each entry is the ID as a varint delta from the node's master ID, then
//! either a "same fields as the master entry" tag followed by the values alone, or the
//! count of field-value pairs followed by both. The master fields are the fields of the
//! node's first entry, so a stream whose entries share their fields (the common case)
//! stores each entry's values and a few bytes of header only.
//!
//! Nodes are shared (`Arc`) so a snapshot clones a big stream by pointers, and a write
//! copies only the node it changes (the tail node, for XADD).
//!
//! Deleted entries are removed from their node's bytes (Redis keeps tombstones); a node
//! counts every entry ever appended to it, so nodes fill and split where Redis' would.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// A stream entry ID: milliseconds and a sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub const fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    /// The next ID, or None after the largest.
    pub fn next(self) -> Option<StreamId> {
        if self.seq < u64::MAX {
            Some(StreamId::new(self.ms, self.seq + 1))
        } else if self.ms < u64::MAX {
            Some(StreamId::new(self.ms + 1, 0))
        } else {
            None
        }
    }

    /// The previous ID, or None before 0-0.
    pub fn prev(self) -> Option<StreamId> {
        if self.seq > 0 {
            Some(StreamId::new(self.ms, self.seq - 1))
        } else if self.ms > 0 {
            Some(StreamId::new(self.ms - 1, u64::MAX))
        } else {
            None
        }
    }

    pub fn is_zero(self) -> bool {
        self == StreamId::MIN
    }

    /// `ms-seq`, as replies and the replication stream write it.
    pub fn to_bytes(self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// Parses `ms-seq` or `ms` (the sequence then `missing_seq`); no `-`/`+`/`*` forms.
    pub fn parse(b: &[u8], missing_seq: u64) -> Option<StreamId> {
        let s = std::str::from_utf8(b).ok()?;
        let digits = |t: &str| -> Option<u64> {
            if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        match s.split_once('-') {
            Some((ms, seq)) => Some(StreamId::new(digits(ms)?, digits(seq)?)),
            None => Some(StreamId::new(digits(s)?, missing_seq)),
        }
    }

    /// The 16-byte big-endian form Redis uses as a radix-tree key.
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    pub fn from_be_bytes(b: &[u8]) -> Option<StreamId> {
        let ms = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let seq = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        Some(StreamId::new(ms, seq))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// An entry read out of a stream: its ID and its fields and values, flattened
/// `[field, value, field, value, ...]`.
pub type StreamEntry = (StreamId, Vec<Vec<u8>>);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint written by `put_varint`. Node bytes are only ever written by this
/// module, so a malformed varint is a corrupted node: reads stop there (as at the end).
fn get_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        if shift >= 64 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

fn get_bytes<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let n = usize::try_from(get_varint(b, at)?).ok()?;
    let s = b.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(s)
}

/// The most bytes a node holds (Redis' STREAM_LISTPACK_MAX_SIZE): a node is closed past it
/// whatever `stream-node-max-bytes` says.
const MAX_NODE_BYTES: usize = 1 << 30;

/// One node of entries.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    /// The fields of the node's first entry, which later entries may share.
    master_fields: Box<[Box<[u8]>]>,
    /// The packed entries, in ID order.
    data: Vec<u8>,
    /// Entries in the node now.
    live: u32,
    /// Entries ever appended to the node (Redis' count + deleted): a node is full at
    /// `stream-node-max-entries` of them.
    appended: u32,
}

/// Where an entry sits in a node's bytes.
struct Slot {
    id: StreamId,
    start: usize,
    end: usize,
}

impl Node {
    fn new(fields: &[&[u8]]) -> Node {
        Node {
            master_fields: fields
                .iter()
                .step_by(2)
                .map(|f| Box::<[u8]>::from(*f))
                .collect(),
            data: Vec::new(),
            live: 0,
            appended: 0,
        }
    }

    fn same_fields(&self, fields: &[&[u8]]) -> bool {
        fields.len() == self.master_fields.len() * 2
            && fields
                .iter()
                .step_by(2)
                .zip(self.master_fields.iter())
                .all(|(a, b)| *a == &b[..])
    }

    fn push(&mut self, master: StreamId, id: StreamId, fields: &[&[u8]]) {
        let same = self.same_fields(fields);
        let d = &mut self.data;
        put_varint(d, id.ms - master.ms);
        put_varint(
            d,
            if id.ms == master.ms {
                id.seq - master.seq
            } else {
                id.seq
            },
        );
        if same {
            put_varint(d, 0);
            for v in fields.iter().skip(1).step_by(2) {
                put_varint(d, v.len() as u64);
                d.extend_from_slice(v);
            }
        } else {
            put_varint(d, (fields.len() / 2) as u64 + 1);
            for f in fields {
                put_varint(d, f.len() as u64);
                d.extend_from_slice(f);
            }
        }
        self.live += 1;
        self.appended += 1;
    }

    /// The entry starting at `at`: its ID and where it ends.
    fn entry_at(&self, master: StreamId, at: usize) -> Option<Slot> {
        let b = &self.data;
        let mut p = at;
        let ms_delta = get_varint(b, &mut p)?;
        let seq = get_varint(b, &mut p)?;
        let ms = master.ms.checked_add(ms_delta)?;
        let seq = if ms_delta == 0 {
            master.seq.checked_add(seq)?
        } else {
            seq
        };
        let tag = get_varint(b, &mut p)?;
        let items = if tag == 0 {
            self.master_fields.len() as u64
        } else {
            (tag - 1).checked_mul(2)?
        };
        for _ in 0..items {
            get_bytes(b, &mut p)?;
        }
        Some(Slot {
            id: StreamId::new(ms, seq),
            start: at,
            end: p,
        })
    }

    fn fields_of(&self, slot: &Slot) -> Vec<Vec<u8>> {
        let b = &self.data[..slot.end];
        let mut p = slot.start;
        let (Some(_), Some(_), Some(tag)) = (
            get_varint(b, &mut p),
            get_varint(b, &mut p),
            get_varint(b, &mut p),
        ) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if tag == 0 {
            for f in self.master_fields.iter() {
                let Some(v) = get_bytes(b, &mut p) else { break };
                out.push(f.to_vec());
                out.push(v.to_vec());
            }
        } else {
            for _ in 0..(tag - 1).saturating_mul(2) {
                let Some(v) = get_bytes(b, &mut p) else { break };
                out.push(v.to_vec());
            }
        }
        out
    }

    fn slots(&self, master: StreamId) -> Vec<Slot> {
        let mut out = Vec::with_capacity(self.live as usize);
        let mut at = 0;
        while at < self.data.len() {
            let Some(s) = self.entry_at(master, at) else {
                break;
            };
            at = s.end;
            out.push(s);
        }
        out
    }

    fn first_id(&self, master: StreamId) -> Option<StreamId> {
        self.entry_at(master, 0).map(|s| s.id)
    }

    fn last_id(&self, master: StreamId) -> Option<StreamId> {
        self.slots(master).last().map(|s| s.id)
    }

    fn heap_size(&self) -> usize {
        self.data.capacity()
            + self
                .master_fields
                .iter()
                .map(|f| f.len() + 16)
                .sum::<usize>()
            + 64
    }
}

/// An entry delivered to a consumer of a group and not yet acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEntry {
    pub consumer: Arc<[u8]>,
    /// Unix milliseconds of the last delivery.
    pub delivery_time: u64,
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Consumer {
    /// Unix milliseconds of the consumer's last read or claim.
    pub seen_time: u64,
    /// IDs of its pending entries (their details are in the group's PEL).
    pub pending: BTreeSet<StreamId>,
}

/// Stands for an unknown `entries_read` (Redis' SCG_INVALID_ENTRIES_READ).
pub const ENTRIES_READ_UNKNOWN: i64 = -1;

/// A consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroup {
    pub last_id: StreamId,
    pub entries_read: i64,
    pub pel: BTreeMap<StreamId, PendingEntry>,
    pub consumers: BTreeMap<Arc<[u8]>, Consumer>,
}

impl ConsumerGroup {
    pub fn new(last_id: StreamId, entries_read: i64) -> ConsumerGroup {
        ConsumerGroup {
            last_id,
            entries_read,
            pel: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }

    /// The consumer's shared name, creating it (seen now) when missing; returns the
    /// name and whether it was created.
    pub fn consumer(&mut self, name: &[u8], now_ms: u64) -> (Arc<[u8]>, bool) {
        if let Some((k, _)) = self.consumers.get_key_value(name) {
            return (k.clone(), false);
        }
        let k: Arc<[u8]> = Arc::from(name);
        self.consumers.insert(
            k.clone(),
            Consumer {
                seen_time: now_ms,
                pending: BTreeSet::new(),
            },
        );
        (k, true)
    }

    /// The consumer a read or claim acts for: created if missing, seen now either way
    /// (Redis' lookup with refresh). Returns its name and whether it was created.
    pub fn seen(&mut self, name: &[u8], now_ms: u64) -> (Arc<[u8]>, bool) {
        let (c, created) = self.consumer(name, now_ms);
        if let Some(existing) = self.consumers.get_mut(&c) {
            existing.seen_time = now_ms;
        }
        (c, created)
    }

    /// Records a delivery of `id` to `consumer` (delivery count 1, now), taking it from
    /// whoever owned it before.
    pub fn deliver(&mut self, id: StreamId, consumer: &Arc<[u8]>, now_ms: u64) -> &PendingEntry {
        if let Some(old) = self.pel.get(&id) {
            let owner = old.consumer.clone();
            if let Some(c) = self.consumers.get_mut(&owner) {
                c.pending.remove(&id);
            }
        }
        if let Some(c) = self.consumers.get_mut(consumer) {
            c.pending.insert(id);
        }
        self.pel.insert(
            id,
            PendingEntry {
                consumer: consumer.clone(),
                delivery_time: now_ms,
                delivery_count: 1,
            },
        );
        &self.pel[&id]
    }

    /// Removes `id` from the PEL (XACK); true if it was pending.
    pub fn ack(&mut self, id: StreamId) -> bool {
        match self.pel.remove(&id) {
            Some(p) => {
                if let Some(c) = self.consumers.get_mut(&p.consumer) {
                    c.pending.remove(&id);
                }
                true
            }
            None => false,
        }
    }

    /// Deletes a consumer and its pending entries; returns how many it had.
    pub fn delete_consumer(&mut self, name: &[u8]) -> Option<usize> {
        let c = self.consumers.remove(name)?;
        for id in &c.pending {
            self.pel.remove(id);
        }
        Some(c.pending.len())
    }

    /// Moves pending `id` to `consumer` (XCLAIM), which must exist.
    pub fn claim(&mut self, id: StreamId, consumer: &Arc<[u8]>) {
        let Some(p) = self.pel.get_mut(&id) else {
            return;
        };
        if p.consumer != *consumer {
            let old = std::mem::replace(&mut p.consumer, consumer.clone());
            if let Some(c) = self.consumers.get_mut(&old) {
                c.pending.remove(&id);
            }
        }
        if let Some(c) = self.consumers.get_mut(consumer) {
            c.pending.insert(id);
        }
    }
}

/// How XADD and XTRIM trim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    /// Keep at most this many entries.
    MaxLen(u64),
    /// Keep no entry with an ID below this.
    MinId(StreamId),
}

/// Node limits (`stream-node-max-bytes`, `stream-node-max-entries`; 0 is no limit).
#[derive(Clone, Copy, Debug)]
pub struct NodeLimits {
    pub max_bytes: usize,
    pub max_entries: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            max_bytes: 4096,
            max_entries: 100,
        }
    }
}

/// A stream value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamValue {
    nodes: BTreeMap<StreamId, Arc<Node>>,
    length: u64,
    pub last_id: StreamId,
    /// The first entry's ID (0-0 when empty), as XINFO's recorded-first-entry-id.
    pub first_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
    pub groups: BTreeMap<Vec<u8>, ConsumerGroup>,
}

impl StreamValue {
    pub fn new() -> StreamValue {
        StreamValue::default()
    }

    pub fn len(&self) -> usize {
        self.length as usize
    }

    /// A stream is never deleted for being empty (unlike Redis' other collections), so
    /// `is_empty` is only about entries.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Radix-tree keys in Redis' terms: the nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn encoding(&self) -> &'static str {
        "stream"
    }

    pub fn heap_size(&self) -> usize {
        let nodes: usize = self.nodes.values().map(|n| n.heap_size() + 48).sum();
        let groups: usize = self
            .groups
            .iter()
            .map(|(k, g)| k.len() + 64 + g.pel.len() * 64 + g.consumers.len() * 64)
            .sum();
        nodes + groups
    }

    /// Whether a clone shares the entries (always, for nodes are shared until changed).
    pub fn clone_is_shallow(&self) -> bool {
        self.groups.values().all(|g| g.pel.len() < 1024)
    }

    /// The ID an auto-generated XADD (`*`) gets at `now_ms`, or None when the last
    /// possible ID was used.
    pub fn next_id(&self, now_ms: u64) -> Option<StreamId> {
        if now_ms > self.last_id.ms {
            Some(StreamId::new(now_ms, 0))
        } else {
            self.last_id.next()
        }
    }

    /// Appends an entry; `id` must be above `last_id` (the caller checks: XADD replies
    /// its error). `fields` is `[field, value, ...]`.
    pub fn append(&mut self, id: StreamId, fields: &[&[u8]], limits: NodeLimits) {
        assert!(id > self.last_id, "stream IDs only grow");
        let size: usize = fields.iter().map(|f| f.len()).sum();
        let full = match self.nodes.last_key_value() {
            None => true,
            Some((_, n)) => {
                // 0 or more than a node may hold: Redis' 1 GiB cap.
                let max_bytes = match limits.max_bytes {
                    0 => MAX_NODE_BYTES,
                    n => n.min(MAX_NODE_BYTES),
                };
                n.data.len() + size >= max_bytes
                    || (limits.max_entries > 0 && n.appended as usize >= limits.max_entries)
            }
        };
        if full {
            if let Some(mut last) = self.nodes.last_entry() {
                Arc::make_mut(last.get_mut()).data.shrink_to_fit();
            }
            let mut node = Node::new(fields);
            // Room for about half a node of entries like this one, but never more
            // than a node's byte limit nor 8 KiB (a huge first entry reserves nothing).
            let per_entry = size + fields.len() + 4;
            let want = per_entry.saturating_mul(limits.max_entries.clamp(1, 128)) / 2;
            let cap = match limits.max_bytes {
                0 => 8192,
                n => n.min(8192),
            };
            node.data.reserve(want.min(cap));
            node.push(id, id, fields);
            self.nodes.insert(id, Arc::new(node));
        } else if let Some(mut last) = self.nodes.last_entry() {
            let master = *last.key();
            Arc::make_mut(last.get_mut()).push(master, id, fields);
        }
        if self.length == 0 {
            self.first_id = id;
        }
        self.length += 1;
        self.last_id = id;
        self.entries_added += 1;
    }

    /// Entries with IDs in `start..=end`, at most `count` (0: all), newest first when
    /// `rev`.
    pub fn range(
        &self,
        start: StreamId,
        end: StreamId,
        count: usize,
        rev: bool,
    ) -> Vec<StreamEntry> {
        let mut out = Vec::new();
        self.visit(start, end, rev, |id, node, slot| {
            out.push((id, node.fields_of(slot)));
            count == 0 || out.len() < count
        });
        out
    }

    /// Calls `f` for each entry in `start..=end` in order (reversed when `rev`) until it
    /// returns false.
    fn visit(
        &self,
        start: StreamId,
        end: StreamId,
        rev: bool,
        mut f: impl FnMut(StreamId, &Node, &Slot) -> bool,
    ) {
        if start > end {
            return;
        }
        // The node holding `start` begins at or before it.
        let from = self
            .nodes
            .range(..=start)
            .next_back()
            .map_or(start, |(k, _)| *k);
        let nodes = self.nodes.range(from..=end);
        if rev {
            for (master, node) in nodes.rev() {
                for s in node.slots(*master).iter().rev() {
                    if s.id > end {
                        continue;
                    }
                    if s.id < start || !f(s.id, node, s) {
                        return;
                    }
                }
            }
        } else {
            for (master, node) in nodes {
                let mut at = 0;
                while at < node.data.len() {
                    let Some(s) = node.entry_at(*master, at) else {
                        break;
                    };
                    at = s.end;
                    if s.id < start {
                        continue;
                    }
                    if s.id > end || !f(s.id, node, &s) {
                        return;
                    }
                }
            }
        }
    }

    /// The fields of entry `id`, if it is in the stream.
    pub fn get(&self, id: StreamId) -> Option<Vec<Vec<u8>>> {
        self.range(id, id, 1, false).pop().map(|(_, f)| f)
    }

    pub fn first_entry(&self) -> Option<StreamEntry> {
        self.range(StreamId::MIN, StreamId::MAX, 1, false).pop()
    }

    pub fn last_entry(&self) -> Option<StreamEntry> {
        self.range(StreamId::MIN, StreamId::MAX, 1, true).pop()
    }

    /// The ID of the newest entry still in the stream (0-0 when empty).
    pub fn last_live_id(&self) -> StreamId {
        self.nodes
            .iter()
            .next_back()
            .and_then(|(m, n)| n.last_id(*m))
            .unwrap_or_default()
    }

    fn refresh_first_id(&mut self) {
        self.first_id = if self.length == 0 {
            StreamId::MIN
        } else {
            self.nodes
                .iter()
                .next()
                .and_then(|(m, n)| n.first_id(*m))
                .unwrap_or_default()
        };
    }

    /// Deletes entry `id` (XDEL); true if it was there.
    pub fn delete(&mut self, id: StreamId) -> bool {
        let Some((&master, _)) = self.nodes.range(..=id).next_back() else {
            return false;
        };
        let Some(node) = self.nodes.get_mut(&master) else {
            return false;
        };
        let Some(slot) = node.slots(master).into_iter().find(|s| s.id == id) else {
            return false;
        };
        let n = Arc::make_mut(node);
        n.data.drain(slot.start..slot.end);
        n.live -= 1;
        if n.live == 0 {
            self.nodes.remove(&master);
        }
        self.length -= 1;
        if id > self.max_deleted_id {
            self.max_deleted_id = id;
        }
        if id == self.first_id || self.length == 0 {
            self.refresh_first_id();
        }
        true
    }

    /// Trims the stream from its oldest end (XTRIM, XADD's MAXLEN/MINID). With `approx`
    /// only whole nodes go; `limit` (0: none) bounds the entries removed. Returns how
    /// many were removed.
    pub fn trim(&mut self, how: Trim, approx: bool, limit: u64) -> u64 {
        let mut deleted = 0u64;
        loop {
            if let Trim::MaxLen(max) = how {
                if self.length <= max {
                    break;
                }
            }
            let Some((&master, node)) = self.nodes.iter().next() else {
                break;
            };
            let entries = u64::from(node.live);
            if limit > 0 && deleted + entries > limit {
                break;
            }
            let whole = match how {
                Trim::MaxLen(max) => self.length - entries >= max,
                Trim::MinId(min) => node.last_id(master).is_some_and(|l| l < min),
            };
            if whole {
                self.nodes.remove(&master);
                self.length -= entries;
                deleted += entries;
                continue;
            }
            if approx {
                break;
            }
            // Remove entries from within the first node, oldest first.
            let slots = node.slots(master);
            let mut cut = 0;
            let mut removed = 0u64;
            for s in &slots {
                let stop = match how {
                    Trim::MaxLen(max) => self.length - removed <= max,
                    Trim::MinId(min) => s.id >= min,
                };
                if stop {
                    break;
                }
                cut = s.end;
                removed += 1;
            }
            if removed > 0 {
                if let Some(node) = self.nodes.get_mut(&master) {
                    let n = Arc::make_mut(node);
                    n.data.drain(..cut);
                    n.live -= removed as u32;
                }
                self.length -= removed;
                deleted += removed;
            }
            break;
        }
        if deleted > 0 || self.length == 0 {
            self.refresh_first_id();
        }
        deleted
    }

    /// Whether entries in `start..` (or the whole stream from 0-0 when None) may have
    /// been deleted: Redis' test for whether a group's read counter can still be trusted.
    pub fn range_has_tombstones(&self, start: Option<StreamId>) -> bool {
        if self.length == 0 || self.max_deleted_id.is_zero() {
            return false;
        }
        if self.first_id > self.max_deleted_id {
            return false;
        }
        start.unwrap_or_default() <= self.max_deleted_id
    }

    /// How many entries were ever added up to and including `id`, when that can be known
    /// (Redis' streamEstimateDistanceFromFirstEverEntry); None when it cannot.
    pub fn entries_before_and_at(&self, id: StreamId) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if self.length == 0 && id <= self.last_id {
            return Some(self.entries_added);
        }
        match id.cmp(&self.last_id) {
            std::cmp::Ordering::Equal => return Some(self.entries_added),
            std::cmp::Ordering::Greater => return None,
            std::cmp::Ordering::Less => {}
        }
        if self.max_deleted_id.is_zero() || self.max_deleted_id < self.first_id {
            match id.cmp(&self.first_id) {
                std::cmp::Ordering::Less => return Some(self.entries_added - self.length),
                std::cmp::Ordering::Equal => {
                    return Some(self.entries_added - self.length + 1);
                }
                std::cmp::Ordering::Greater => {}
            }
        }
        None
    }

    /// A group's lag (XINFO), or None when it cannot be known.
    /// Negative when a group was told it read more than was ever added (ENTRIESREAD), as
    /// Redis reports it.
    pub fn lag(&self, g: &ConsumerGroup) -> Option<i64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        let added = i64::try_from(self.entries_added).unwrap_or(i64::MAX);
        if g.entries_read != ENTRIES_READ_UNKNOWN && !self.range_has_tombstones(Some(g.last_id)) {
            return Some(added.saturating_sub(g.entries_read));
        }
        self.entries_before_and_at(g.last_id)
            .map(|read| added.saturating_sub(i64::try_from(read).unwrap_or(i64::MAX)))
    }

    /// Moves a group's last-delivered ID to `id`, an entry just delivered after it,
    /// keeping its read counter as Redis does.
    pub fn advance_group(&self, g: &mut ConsumerGroup, id: StreamId) {
        if id <= g.last_id {
            return;
        }
        if g.entries_read != ENTRIES_READ_UNKNOWN && !self.range_has_tombstones(Some(id)) {
            g.entries_read = g.entries_read.saturating_add(1);
        } else if self.entries_added > 0 {
            g.entries_read = self
                .entries_before_and_at(id)
                .map_or(ENTRIES_READ_UNKNOWN, |n| n as i64);
        }
        g.last_id = id;
    }

    /// The entries as one list, for serializers and COPY-like users.
    pub fn entries(&self) -> Vec<StreamEntry> {
        self.range(StreamId::MIN, StreamId::MAX, 0, false)
    }

    /// Restores the counters a loaded stream carries (RDB, RESTORE), after its nodes.
    pub fn set_meta(
        &mut self,
        last_id: StreamId,
        first_id: StreamId,
        max_deleted_id: StreamId,
        entries_added: u64,
    ) {
        self.last_id = last_id;
        self.first_id = if self.length == 0 {
            first_id
        } else {
            self.first_id
        };
        self.max_deleted_id = max_deleted_id;
        self.entries_added = entries_added;
    }
}

/// What a group read or claim did, for the reply and for replicas.
#[derive(Debug, Default)]
pub struct GroupOutcome {
    /// Entries served, in order; None for a pending entry no longer in the stream
    /// (XREADGROUP history) or when only IDs were asked for (JUSTID).
    pub served: Vec<(StreamId, Option<Vec<Vec<u8>>>)>,
    /// The pending entries created or changed, as they are now (a replica is sent each).
    pub changed: Vec<(StreamId, PendingEntry)>,
    /// Pending entries dropped because their entry was deleted, as they were.
    pub dropped: Vec<(StreamId, PendingEntry)>,
    /// The consumer was created by this call.
    pub created_consumer: bool,
    /// The group's position after the call, when it moved.
    pub moved_to: Option<(StreamId, i64)>,
    /// XAUTOCLAIM's cursor: the next pending ID to look at (0-0 when done).
    pub next: StreamId,
}

/// Group operations on a stream: they read the entries and change the group together.
impl StreamValue {
    /// Runs `f` on group `name` with the stream's entries readable; None if no such group.
    fn with_group<R>(
        &mut self,
        name: &[u8],
        f: impl FnOnce(&StreamValue, &mut ConsumerGroup) -> R,
    ) -> Option<R> {
        let (key, mut g) = self.groups.remove_entry(name)?;
        let r = f(self, &mut g);
        self.groups.insert(key, g);
        Some(r)
    }

    /// The consumer `name` of `g`, created if missing, seen now.
    fn touch_consumer(
        g: &mut ConsumerGroup,
        name: &[u8],
        now_ms: u64,
        out: &mut GroupOutcome,
    ) -> Arc<[u8]> {
        let (c, created) = g.seen(name, now_ms);
        out.created_consumer |= created;
        c
    }

    /// XREADGROUP `>`: delivers up to `count` (0: all) entries after the group's
    /// position to `consumer`, adding them to its pending entries unless `noack`. None
    /// when the group is missing or there is nothing new (the consumer is then not
    /// created).
    pub fn read_group_new(
        &mut self,
        group: &[u8],
        consumer: &[u8],
        count: usize,
        noack: bool,
        now_ms: u64,
    ) -> Option<GroupOutcome> {
        self.with_group(group, |s, g| {
            if s.length == 0 || s.last_live_id() <= g.last_id {
                return None;
            }
            let mut out = GroupOutcome::default();
            let c = Self::touch_consumer(g, consumer, now_ms, &mut out);
            let start = g.last_id.next()?;
            for (id, fields) in s.range(start, StreamId::MAX, count, false) {
                s.advance_group(g, id);
                if !noack {
                    let p = g.deliver(id, &c, now_ms).clone();
                    out.changed.push((id, p));
                }
                out.served.push((id, Some(fields)));
            }
            out.moved_to = Some((g.last_id, g.entries_read));
            Some(out)
        })
        .flatten()
    }

    /// XREADGROUP with an ID: `consumer`'s own pending entries after `after`, counted
    /// as delivered again. None when the group is missing.
    pub fn read_group_history(
        &mut self,
        group: &[u8],
        consumer: &[u8],
        after: StreamId,
        count: usize,
        now_ms: u64,
    ) -> Option<GroupOutcome> {
        self.with_group(group, |s, g| {
            let mut out = GroupOutcome::default();
            let c = Self::touch_consumer(g, consumer, now_ms, &mut out);
            let Some(start) = after.next() else {
                return out;
            };
            let ids: Vec<StreamId> = g.consumers.get(&c).map_or_else(Vec::new, |c| {
                let n = if count == 0 { usize::MAX } else { count };
                c.pending.range(start..).take(n).copied().collect()
            });
            for id in ids {
                let fields = s.get(id);
                if fields.is_some() {
                    if let Some(p) = g.pel.get_mut(&id) {
                        p.delivery_time = now_ms;
                        p.delivery_count = p.delivery_count.saturating_add(1);
                    }
                }
                out.served.push((id, fields));
            }
            out
        })
    }

    /// XAUTOCLAIM: gives `consumer` the pending entries from `start` on that were idle at
    /// least `min_idle_ms`, at most `count` of them (entries gone from the stream are
    /// dropped and count too), looking at no more than 10 x `count`.
    #[allow(clippy::too_many_arguments)]
    pub fn autoclaim(
        &mut self,
        group: &[u8],
        consumer: &[u8],
        start: StreamId,
        min_idle_ms: u64,
        count: usize,
        justid: bool,
        now_ms: u64,
    ) -> Option<GroupOutcome> {
        self.with_group(group, |s, g| {
            let mut out = GroupOutcome::default();
            let mut left = count;
            let mut attempts = count.saturating_mul(10);
            // At most what the attempts can look at, and the cursor after them.
            let candidates: Vec<StreamId> = g
                .pel
                .range(start..)
                .map(|(id, _)| *id)
                .take(attempts.saturating_add(1))
                .collect();
            let mut it = candidates.into_iter();
            let mut c: Option<Arc<[u8]>> = None;
            loop {
                if attempts == 0 || left == 0 {
                    out.next = it.next().unwrap_or_default();
                    break;
                }
                let Some(id) = it.next() else {
                    break;
                };
                attempts -= 1;
                let fields = s.get(id);
                if fields.is_none() {
                    if let Some(p) = g.pel.get(&id).cloned() {
                        out.dropped.push((id, p));
                    }
                    g.ack(id);
                    left -= 1;
                    continue;
                }
                let idle = g
                    .pel
                    .get(&id)
                    .map_or(0, |p| now_ms.saturating_sub(p.delivery_time));
                if min_idle_ms > 0 && idle < min_idle_ms {
                    continue;
                }
                let owner = match &c {
                    Some(c) => c.clone(),
                    None => {
                        let n = Self::touch_consumer(g, consumer, now_ms, &mut out);
                        c = Some(n.clone());
                        n
                    }
                };
                g.claim(id, &owner);
                if let Some(p) = g.pel.get_mut(&id) {
                    p.delivery_time = now_ms;
                    if !justid {
                        p.delivery_count = p.delivery_count.saturating_add(1);
                    }
                    out.changed.push((id, p.clone()));
                }
                out.served.push((id, if justid { None } else { fields }));
                left -= 1;
            }
            out
        })
    }
}

/// Loading a stream node by node, as an RDB file holds it.
impl StreamValue {
    /// Appends a node of entries loaded from a file (one listpack of an RDB stream),
    /// keeping the file's node boundaries as Redis does. `appended` is how many entries
    /// the node ever held (Redis' count + deleted), which decides when appends open the
    /// next node. Entries are `[field, value, ...]`; IDs must grow, within the node and
    /// after the entries loaded before: false, and nothing changed, otherwise.
    /// `last_id` and the counters are set afterwards by `set_meta`.
    pub fn load_node(&mut self, entries: &[(StreamId, Vec<&[u8]>)], appended: usize) -> bool {
        let (Some((first, first_fields)), Some((last, _))) = (entries.first(), entries.last())
        else {
            return true;
        };
        if (self.length > 0 && *first <= self.last_id)
            || entries.windows(2).any(|w| w[1].0 <= w[0].0)
        {
            return false;
        }
        let mut node = Node::new(first_fields);
        for (id, fields) in entries {
            node.push(*first, *id, fields);
        }
        node.appended = u32::try_from(appended).unwrap_or(u32::MAX).max(node.live);
        node.data.shrink_to_fit();
        if self.length == 0 {
            self.first_id = *first;
        }
        self.length += entries.len() as u64;
        self.last_id = *last;
        self.nodes.insert(*first, Arc::new(node));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields(i: u64) -> Vec<Vec<u8>> {
        if i % 7 == 3 {
            vec![b"other".to_vec(), i.to_string().into_bytes()]
        } else {
            vec![
                b"a".to_vec(),
                i.to_string().into_bytes(),
                b"b".to_vec(),
                b"x".repeat((i % 5) as usize),
            ]
        }
    }

    fn add(s: &mut StreamValue, id: StreamId, f: &[Vec<u8>], limits: NodeLimits) {
        let refs: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
        s.append(id, &refs, limits);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u64, u64),
        Del(usize),
        TrimLen(u64, bool),
        TrimMin(usize, bool),
        Range(usize, usize, usize, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..3, 0u64..3).prop_map(|(a, b)| Op::Add(a, b)),
            2 => any::<usize>().prop_map(Op::Del),
            1 => (0u64..40, any::<bool>()).prop_map(|(n, a)| Op::TrimLen(n, a)),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(n, a)| Op::TrimMin(n, a)),
            2 => (any::<usize>(), any::<usize>(), 0usize..5, any::<bool>())
                .prop_map(|(a, b, c, r)| Op::Range(a, b, c, r)),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_btreemap(ops in proptest::collection::vec(op(), 1..200), max_entries in 1usize..8) {
            let limits = NodeLimits { max_bytes: 4096, max_entries };
            let mut s = StreamValue::new();
            let mut model: BTreeMap<StreamId, Vec<Vec<u8>>> = BTreeMap::new();
            let mut last = StreamId::MIN;
            let mut n = 0u64;
            for op in ops {
                match op {
                    Op::Add(dms, dseq) => {
                        let id = StreamId::new(last.ms + dms, if dms == 0 { last.seq + 1 + dseq } else { dseq });
                        n += 1;
                        let f = fields(n);
                        add(&mut s, id, &f, limits);
                        model.insert(id, f);
                        last = id;
                    }
                    Op::Del(i) => {
                        let ids: Vec<_> = model.keys().copied().collect();
                        let id = if ids.is_empty() { StreamId::new(5, 5) } else { ids[i % ids.len()] };
                        prop_assert_eq!(s.delete(id), model.remove(&id).is_some());
                        prop_assert!(!s.delete(id));
                    }
                    Op::TrimLen(max, approx) => {
                        let before = model.len() as u64;
                        let removed = s.trim(Trim::MaxLen(max), approx, 0);
                        for _ in 0..removed {
                            let k = *model.keys().next().unwrap();
                            model.remove(&k);
                        }
                        prop_assert_eq!(before - removed, model.len() as u64);
                        if !approx { prop_assert_eq!(model.len() as u64, before.min(max)); }
                    }
                    Op::TrimMin(i, approx) => {
                        let ids: Vec<_> = model.keys().copied().collect();
                        let min = if ids.is_empty() { last } else { ids[i % ids.len()] };
                        let removed = s.trim(Trim::MinId(min), approx, 0);
                        let want: Vec<_> = model.keys().copied().filter(|k| *k < min).take(removed as usize).collect();
                        prop_assert_eq!(want.len() as u64, removed);
                        for k in want { model.remove(&k); }
                        if !approx { prop_assert!(model.keys().all(|k| *k >= min)); }
                    }
                    Op::Range(a, b, count, rev) => {
                        let ids: Vec<_> = model.keys().copied().collect();
                        let (start, end) = if ids.is_empty() { (StreamId::MIN, StreamId::MAX) } else {
                            let (x, y) = (ids[a % ids.len()], ids[b % ids.len()]);
                            (x.min(y), x.max(y))
                        };
                        let mut want: Vec<StreamEntry> = model.range(start..=end).map(|(k, v)| (*k, v.clone())).collect();
                        if rev { want.reverse(); }
                        if count > 0 { want.truncate(count); }
                        prop_assert_eq!(s.range(start, end, count, rev), want);
                    }
                }
                prop_assert_eq!(s.len(), model.len());
                prop_assert_eq!(s.first_id, model.keys().next().copied().unwrap_or_default());
                prop_assert_eq!(s.last_live_id(), model.keys().next_back().copied().unwrap_or_default());
                prop_assert_eq!(s.last_id, last);
            }
            let all: Vec<StreamEntry> = model.into_iter().collect();
            prop_assert_eq!(s.entries(), all);
        }

        #[test]
        fn groups_match_a_model(ops in proptest::collection::vec((0u8..4, 0u64..20, 0usize..3), 1..200)) {
            let names: Vec<Arc<[u8]>> = [&b"alice"[..], b"bob", b"carol"].iter().map(|n| Arc::from(*n)).collect();
            let mut g = ConsumerGroup::new(StreamId::MIN, 0);
            let mut model: BTreeMap<StreamId, usize> = BTreeMap::new();
            for (kind, id, who) in ops {
                let id = StreamId::new(id, 0);
                match kind {
                    0 => {
                        let (name, _) = g.consumer(&names[who], 1);
                        g.deliver(id, &name, 2);
                        model.insert(id, who);
                    }
                    1 => prop_assert_eq!(g.ack(id), model.remove(&id).is_some()),
                    2 => {
                        if g.pel.contains_key(&id) && g.consumers.contains_key(&names[who][..]) {
                            let name = names[who].clone();
                            g.claim(id, &name);
                            model.insert(id, who);
                        }
                    }
                    _ => {
                        let had = model.values().filter(|w| **w == who).count();
                        match g.delete_consumer(&names[who]) {
                            Some(n) => prop_assert_eq!(n, had),
                            None => prop_assert_eq!(had, 0),
                        }
                        model.retain(|_, w| *w != who);
                    }
                }
                prop_assert_eq!(g.pel.len(), model.len());
                for (id, who) in &model {
                    prop_assert_eq!(&g.pel[id].consumer, &names[*who]);
                    prop_assert!(g.consumers[&names[*who]].pending.contains(id));
                }
                let owned: usize = g.consumers.values().map(|c| c.pending.len()).sum();
                prop_assert_eq!(owned, model.len());
            }
        }
    }

    #[test]
    fn ids_parse_and_step() {
        assert_eq!(StreamId::parse(b"5-3", 0), Some(StreamId::new(5, 3)));
        assert_eq!(StreamId::parse(b"5", 9), Some(StreamId::new(5, 9)));
        assert_eq!(StreamId::parse(b"5-", 0), None);
        assert_eq!(StreamId::parse(b"-5", 0), None);
        assert_eq!(StreamId::parse(b"+1-2", 0), None);
        assert_eq!(StreamId::parse(b"18446744073709551616", 0), None);
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(StreamId::MIN.prev(), None);
        assert_eq!(StreamId::new(1, u64::MAX).next(), Some(StreamId::new(2, 0)));
        assert_eq!(StreamId::new(2, 0).prev(), Some(StreamId::new(1, u64::MAX)));
        assert_eq!(StreamId::new(7, 8).to_string(), "7-8");
    }

    #[test]
    fn shared_fields_take_a_few_bytes_per_entry() {
        let mut s = StreamValue::new();
        let limits = NodeLimits::default();
        for i in 0..1000u64 {
            let f = [
                b"name".to_vec(),
                format!("v{i:05}").into_bytes(),
                b"kind".to_vec(),
                b"x".to_vec(),
            ];
            add(&mut s, StreamId::new(1000 + i, 0), &f, limits);
        }
        assert_eq!(s.node_count(), 10);
        // 6 + 1 and 1 + 1 bytes of values and lengths, 3 of header.
        let data: usize = s.nodes.values().map(|n| n.data.len()).sum();
        assert_eq!(data, 1000 * (3 + 7 + 2));
        assert_eq!(s.get(StreamId::new(1500, 0)).unwrap()[1], b"v00500");
        let snapshot = s.clone();
        add(
            &mut s,
            StreamId::new(5000, 0),
            &[b"a".to_vec(), b"b".to_vec()],
            limits,
        );
        assert!(Arc::ptr_eq(
            s.nodes.values().next().unwrap(),
            snapshot.nodes.values().next().unwrap()
        ));
    }

    #[test]
    fn read_counters_follow_redis() {
        let mut s = StreamValue::new();
        let limits = NodeLimits::default();
        for i in 1..=5 {
            add(
                &mut s,
                StreamId::new(i, 0),
                &[b"f".to_vec(), b"v".to_vec()],
                limits,
            );
        }
        let mut g = ConsumerGroup::new(StreamId::MIN, 0);
        assert_eq!(s.lag(&g), Some(5));
        s.advance_group(&mut g, StreamId::new(2, 0));
        assert_eq!((g.entries_read, s.lag(&g)), (1, Some(4)));
        s.delete(StreamId::new(4, 0));
        // A tombstone ahead of the group: the lag cannot be known.
        assert_eq!(s.lag(&g), None);
        s.advance_group(&mut g, StreamId::new(3, 0));
        assert_eq!(g.entries_read, ENTRIES_READ_UNKNOWN);
        s.advance_group(&mut g, StreamId::new(5, 0));
        assert_eq!((g.entries_read, s.lag(&g)), (5, Some(0)));
        let g2 = ConsumerGroup::new(StreamId::MIN, ENTRIES_READ_UNKNOWN);
        s.delete(StreamId::new(1, 0));
        assert_eq!(s.first_id, StreamId::new(2, 0));
        // Deleted entries after the group's position: unknown, as in Redis.
        assert_eq!(s.lag(&g2), None);
    }
}
