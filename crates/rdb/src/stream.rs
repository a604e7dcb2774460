//! Streams in RDB files and DUMP payloads: reading RDB types 15, 19 and 21 (Redis 5-6,
//! 7.0, 7.2), writing type 19 as Redis 7.0 does.
//!
//! A stream is written as its nodes (each a 16-byte big-endian master ID and a listpack
//! of entries delta-encoded from it), then the length, last ID, first ID, largest
//! deleted ID and entries-added counter, then the consumer groups: name, last-delivered
//! ID, read counter, the pending entries (raw ID, delivery time, delivery count) and the
//! consumers (name, seen time, the IDs they own).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;

use carmine_keyspace::stream::{
    Consumer, ConsumerGroup, PendingEntry, StreamEntry, ENTRIES_READ_UNKNOWN,
};
use carmine_keyspace::{StreamId, StreamValue};

use crate::packed::{Listpack, ListpackWriter, LpItem};
use crate::read::{Input, InputExt};
use crate::write::{put_length, put_string, Spill, WriteOptions};
use crate::RdbError;

/// RDB_TYPE_STREAM_LISTPACKS (Redis 5 and 6).
pub(crate) const TYPE_STREAM: u8 = 15;
/// RDB_TYPE_STREAM_LISTPACKS_2 (Redis 7.0): first ID, largest deleted ID, entries added,
/// group read counters.
pub(crate) const TYPE_STREAM_2: u8 = 19;
/// RDB_TYPE_STREAM_LISTPACKS_3 (Redis 7.2): consumers' active time.
pub(crate) const TYPE_STREAM_3: u8 = 21;

/// Entry flags in a node's listpack.
const FLAG_DELETED: i64 = 1;
const FLAG_SAMEFIELDS: i64 = 2;

/// Entries per written listpack (Redis' default `stream-node-max-entries`).
const NODE_ENTRIES: usize = 100;
/// A written listpack closes before passing this size (Redis' STREAM_LISTPACK_MAX_SIZE;
/// a listpack's header cannot count past 4 GiB).
const NODE_MAX_BYTES: usize = 1 << 30;

fn corrupt(offset: usize, message: impl Into<String>) -> RdbError {
    RdbError {
        offset,
        message: message.into(),
    }
}

fn read_id<I: Input + ?Sized>(c: &mut I) -> Result<StreamId, RdbError> {
    Ok(StreamId::new(c.length()?, c.length()?))
}

fn read_raw_id<I: Input + ?Sized>(c: &mut I) -> Result<StreamId, RdbError> {
    let at = c.pos();
    StreamId::from_be_bytes(c.bytes(16)?).ok_or_else(|| corrupt(at, "bad stream ID"))
}

/// A stream value of RDB type `t` (15, 19 or 21) at the cursor.
pub(crate) fn read_stream<I: Input + ?Sized>(c: &mut I, t: u8) -> Result<StreamValue, RdbError> {
    let mut s = StreamValue::new();
    // A node takes at least its 17-byte key and a listpack of 7 bytes and more.
    let nodes = c.count(24)?;
    for _ in 0..nodes {
        let at = c.pos();
        let key = c.string()?;
        let master = Some(&key[..])
            .filter(|k| k.len() == 16)
            .and_then(StreamId::from_be_bytes)
            .ok_or_else(|| corrupt(at, "stream node key is not a 16-byte stream ID"))?;
        let at = c.pos();
        let lp = c.string()?;
        read_node(&mut s, master, &lp)
            .map_err(|why| corrupt(at, format!("corrupt stream listpack: {why}")))?;
    }
    let at = c.pos();
    let length = c.length()?;
    let last_id = read_id(c)?;
    let (first_id, max_deleted_id, entries_added) = if t >= TYPE_STREAM_2 {
        (read_id(c)?, read_id(c)?, c.length()?)
    } else {
        // Redis 7.0 loading an older file: every entry counts as added, none deleted,
        // and the first ID is found (MAX-MAX in an empty stream, as streamGetEdgeID
        // gives it).
        let first = if s.is_empty() {
            StreamId::MAX
        } else {
            s.first_id
        };
        (first, StreamId::MIN, length)
    };
    if length != s.len() as u64 {
        return Err(corrupt(
            at,
            format!(
                "stream length {length} disagrees with the {} entries of its nodes",
                s.len()
            ),
        ));
    }
    if !s.is_empty() && s.last_id > last_id {
        return Err(corrupt(
            at,
            format!("stream last ID {last_id} is below its last entry's"),
        ));
    }
    if entries_added < length {
        return Err(corrupt(
            at,
            format!("stream entries-added counter {entries_added} is below its length"),
        ));
    }
    s.set_meta(last_id, first_id, max_deleted_id, entries_added);

    // A group takes at least a name and three numbers; a pending entry 25 bytes; a
    // consumer a name, 8 bytes of time and a count.
    let groups = c.count(4)?;
    for _ in 0..groups {
        let at = c.pos();
        let name = c.string()?;
        if s.groups.contains_key(&name) {
            return Err(corrupt(at, "duplicate consumer group in a stream"));
        }
        let group_last = read_id(c)?;
        let entries_read = if t >= TYPE_STREAM_2 {
            let at = c.pos();
            // Written as Redis' `long long`: -1 (unknown) is 2^64-1.
            let n = c.length()? as i64;
            if n < ENTRIES_READ_UNKNOWN {
                return Err(corrupt(at, "bad consumer group read counter"));
            }
            n
        } else {
            s.entries_before_and_at(group_last)
                .map_or(ENTRIES_READ_UNKNOWN, |n| n as i64)
        };
        let mut g = ConsumerGroup::new(group_last, entries_read);
        let mut unowned: BTreeMap<StreamId, (u64, u64)> = BTreeMap::new();
        let pel = c.count(25)?;
        for _ in 0..pel {
            let at = c.pos();
            let id = read_raw_id(c)?;
            let time = c.le_u64(8)?;
            let count = c.length()?;
            if unowned.insert(id, (time, count)).is_some() {
                return Err(corrupt(at, "duplicate entry in a consumer group's PEL"));
            }
        }
        let consumers = c.count(10)?;
        for _ in 0..consumers {
            let at = c.pos();
            let cname: Arc<[u8]> = Arc::from(c.string()?);
            if g.consumers.contains_key(&cname) {
                return Err(corrupt(at, "duplicate consumer in a consumer group"));
            }
            let seen_time = c.le_u64(8)?;
            if t >= TYPE_STREAM_3 {
                // The active time (Redis 7.2): Carmine keeps the seen time only.
                c.le_u64(8)?;
            }
            let owned = c.count(16)?;
            let mut pending = BTreeSet::new();
            for _ in 0..owned {
                let at = c.pos();
                let id = read_raw_id(c)?;
                let Some((delivery_time, delivery_count)) = unowned.remove(&id) else {
                    return Err(corrupt(
                        at,
                        if g.pel.contains_key(&id) {
                            format!("pending entry {id} owned twice in a consumer group")
                        } else {
                            format!("consumer's pending entry {id} is not in its group's PEL")
                        },
                    ));
                };
                g.pel.insert(
                    id,
                    PendingEntry {
                        consumer: cname.clone(),
                        delivery_time,
                        delivery_count,
                    },
                );
                pending.insert(id);
            }
            g.consumers.insert(cname, Consumer { seen_time, pending });
        }
        if let Some(id) = unowned.keys().next() {
            return Err(corrupt(
                c.pos(),
                format!("pending entry {id} of a consumer group has no consumer"),
            ));
        }
        s.groups.insert(name, g);
    }
    Ok(s)
}

fn next_item<'a>(lp: &mut Listpack<'a>) -> Result<LpItem<'a>, &'static str> {
    match lp.next_item() {
        Some(Some(item)) => Ok(item),
        Some(None) => Err("it ends inside an entry"),
        None => Err("bad listpack encoding"),
    }
}

fn next_int(lp: &mut Listpack<'_>) -> Result<i64, &'static str> {
    next_item(lp)?
        .as_int()
        .ok_or("a string where an integer belongs")
}

fn next_count(lp: &mut Listpack<'_>) -> Result<u64, &'static str> {
    u64::try_from(next_int(lp)?).map_err(|_| "a negative count")
}

fn item_bytes(item: LpItem<'_>) -> Cow<'_, [u8]> {
    match item {
        LpItem::Str(s) => Cow::Borrowed(s),
        LpItem::Int(_) => Cow::Owned(item.to_vec()),
    }
}

/// One node's listpack: the master entry (live count, deleted count, the master fields,
/// a 0), then each entry (flags, ID deltas from `master`, the fields and values or the
/// values alone, the entry's element count). Deleted entries are skipped.
fn read_node(s: &mut StreamValue, master: StreamId, bytes: &[u8]) -> Result<(), &'static str> {
    let mut lp = Listpack::new(bytes).ok_or("bad listpack header")?;
    let live = next_count(&mut lp)?;
    let deleted = next_count(&mut lp)?;
    let master_fields_len = next_count(&mut lp)?;
    let mut master_fields = Vec::new();
    for _ in 0..master_fields_len {
        master_fields.push(item_bytes(next_item(&mut lp)?));
    }
    if next_int(&mut lp)? != 0 {
        return Err("the master entry does not end with 0");
    }
    let mut entries: Vec<(StreamId, Vec<Cow<'_, [u8]>>)> = Vec::new();
    let total = live.checked_add(deleted).ok_or("entry counts overflow")?;
    for _ in 0..total {
        let flags = next_int(&mut lp)?;
        if flags & !(FLAG_DELETED | FLAG_SAMEFIELDS) != 0 {
            return Err("unknown entry flags");
        }
        // Deltas as Redis writes them: 64-bit differences, wrapping.
        let ms = master.ms.wrapping_add(next_int(&mut lp)? as u64);
        let seq = master.seq.wrapping_add(next_int(&mut lp)? as u64);
        let mut fields = Vec::new();
        let elements = if flags & FLAG_SAMEFIELDS != 0 {
            for f in &master_fields {
                fields.push(f.clone());
                fields.push(item_bytes(next_item(&mut lp)?));
            }
            master_fields_len + 3
        } else {
            let n = next_count(&mut lp)?;
            for _ in 0..n {
                fields.push(item_bytes(next_item(&mut lp)?));
                fields.push(item_bytes(next_item(&mut lp)?));
            }
            n.saturating_mul(2).saturating_add(4)
        };
        if next_count(&mut lp)? != elements {
            return Err("an entry's element count disagrees with its elements");
        }
        if flags & FLAG_DELETED == 0 {
            entries.push((StreamId::new(ms, seq), fields));
        }
    }
    if lp.next_item() != Some(None) {
        return Err("the listpack does not end after the last entry");
    }
    if entries.len() as u64 != live {
        return Err("the live entries disagree with the master entry's count");
    }
    let refs: Vec<(StreamId, Vec<&[u8]>)> = entries
        .iter()
        .map(|(id, f)| (*id, f.iter().map(|x| &x[..]).collect()))
        .collect();
    let appended = usize::try_from(total).unwrap_or(usize::MAX);
    if !s.load_node(&refs, appended) {
        return Err("entry IDs do not grow");
    }
    Ok(())
}

fn put_id(out: &mut Vec<u8>, id: StreamId) {
    put_length(out, id.ms);
    put_length(out, id.seq);
}

/// A stream's body (after its type byte and key), RDB type 19 as Redis 7.0 writes it;
/// `spill` is called between nodes and consumers.
pub(crate) fn put_stream(
    out: &mut Vec<u8>,
    s: &StreamValue,
    opts: WriteOptions,
    spill: Spill<'_>,
) -> io::Result<()> {
    put_nodes(out, s, opts, spill, NODE_MAX_BYTES)?;
    put_length(out, s.len() as u64);
    put_id(out, s.last_id);
    put_id(out, s.first_id);
    put_id(out, s.max_deleted_id);
    put_length(out, s.entries_added);
    put_length(out, s.groups.len() as u64);
    for (name, g) in &s.groups {
        put_string(out, name, opts);
        put_id(out, g.last_id);
        // Redis' `long long` as a length: -1 (unknown) is 2^64-1.
        put_length(out, g.entries_read as u64);
        // Only entries a listed consumer owns: Redis refuses a file with any other.
        let owned = |id: &StreamId, p: &PendingEntry| {
            g.consumers
                .get(&p.consumer)
                .is_some_and(|c| c.pending.contains(id))
        };
        put_length(
            out,
            g.pel.iter().filter(|(id, p)| owned(id, p)).count() as u64,
        );
        for (id, p) in g.pel.iter().filter(|(id, p)| owned(id, p)) {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&p.delivery_time.to_le_bytes());
            put_length(out, p.delivery_count);
        }
        spill(out)?;
        put_length(out, g.consumers.len() as u64);
        for (cname, consumer) in &g.consumers {
            put_string(out, cname, opts);
            out.extend_from_slice(&consumer.seen_time.to_le_bytes());
            let mine = |id: &&StreamId| g.pel.get(*id).is_some_and(|p| p.consumer == *cname);
            put_length(out, consumer.pending.iter().filter(mine).count() as u64);
            for id in consumer.pending.iter().filter(mine) {
                out.extend_from_slice(&id.to_be_bytes());
            }
            spill(out)?;
        }
    }
    Ok(())
}

/// The wire size of a listpack element of `len` bytes, at most.
fn element_size(len: usize) -> usize {
    len + 10
}

/// How many entries each written node takes: `NODE_ENTRIES`, fewer where a node's
/// listpack would pass `max_bytes`. A stream whose data is well below that bound in
/// all needs no pass over its entries to know.
fn plan_nodes(s: &StreamValue, max_bytes: usize) -> Vec<usize> {
    let len = s.len();
    if s.heap_size().saturating_mul(8) < max_bytes {
        let mut plan = vec![NODE_ENTRIES; len / NODE_ENTRIES];
        if !len.is_multiple_of(NODE_ENTRIES) {
            plan.push(len % NODE_ENTRIES);
        }
        return plan;
    }
    let mut plan = Vec::new();
    let (mut n, mut bytes) = (0usize, 0usize);
    let mut from = Some(StreamId::MIN);
    while let Some(start) = from {
        let chunk = s.range(start, StreamId::MAX, 256, false);
        for (_, fields) in &chunk {
            let size = 64 + fields.iter().map(|f| element_size(f.len())).sum::<usize>();
            if n > 0 && (n == NODE_ENTRIES || bytes.saturating_add(size) > max_bytes) {
                plan.push(n);
                (n, bytes) = (0, 0);
            }
            if n == 0 {
                // The master entry repeats the first entry's fields.
                bytes = size;
            }
            n += 1;
            bytes = bytes.saturating_add(size);
        }
        from = match chunk.last() {
            Some((id, _)) if chunk.len() == 256 => id.next(),
            _ => None,
        };
    }
    if n > 0 {
        plan.push(n);
    }
    plan
}

fn put_nodes(
    out: &mut Vec<u8>,
    s: &StreamValue,
    opts: WriteOptions,
    spill: Spill<'_>,
    max_bytes: usize,
) -> io::Result<()> {
    let plan = plan_nodes(s, max_bytes);
    put_length(out, plan.len() as u64);
    let mut from = Some(StreamId::MIN);
    for n in plan {
        let Some(start) = from else { break };
        let entries = s.range(start, StreamId::MAX, n, false);
        put_node(out, &entries, opts);
        spill(out)?;
        from = entries.last().and_then(|(id, _)| id.next());
    }
    Ok(())
}

/// One node: its master ID (the first entry's) and its listpack, as Redis' XADD builds
/// one: the master fields are the first entry's, and entries with the same fields
/// store their values alone.
fn put_node(out: &mut Vec<u8>, entries: &[StreamEntry], opts: WriteOptions) {
    let Some((master, first)) = entries.first() else {
        return;
    };
    let master_fields: Vec<&[u8]> = first.chunks_exact(2).map(|p| &p[0][..]).collect();
    let mut lp = ListpackWriter::new();
    lp.push_int(entries.len() as i64);
    lp.push_int(0);
    lp.push_int(master_fields.len() as i64);
    for f in &master_fields {
        lp.push(f);
    }
    lp.push_int(0);
    for (id, fields) in entries {
        let n = fields.len() / 2;
        let same = n == master_fields.len()
            && fields
                .chunks_exact(2)
                .zip(&master_fields)
                .all(|(p, m)| p[0] == *m);
        lp.push_int(if same { FLAG_SAMEFIELDS } else { 0 });
        lp.push_int(id.ms.wrapping_sub(master.ms) as i64);
        lp.push_int(id.seq.wrapping_sub(master.seq) as i64);
        if !same {
            lp.push_int(n as i64);
        }
        for p in fields.chunks_exact(2) {
            if !same {
                lp.push(&p[0]);
            }
            lp.push(&p[1]);
        }
        let elements = if same { n + 3 } else { 2 * n + 4 };
        lp.push_int(elements as i64);
    }
    put_string(out, &master.to_be_bytes(), opts);
    put_string(out, &lp.finish(), opts);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::Cursor;
    use crate::{decode_payload, dump_payload, restore_payload, Value};
    use carmine_keyspace::stream::NodeLimits;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId::new(ms, seq)
    }

    fn add(s: &mut StreamValue, at: StreamId, fields: &[&[u8]]) {
        s.append(at, fields, NodeLimits::default());
    }

    /// Entries, counters, groups: everything a file carries (node layout aside).
    fn assert_same(a: &StreamValue, b: &StreamValue) {
        assert_eq!(a.entries(), b.entries());
        assert_eq!(a.len(), b.len());
        assert_eq!(
            (a.last_id, a.first_id, a.max_deleted_id, a.entries_added),
            (b.last_id, b.first_id, b.max_deleted_id, b.entries_added)
        );
        assert_eq!(a.groups, b.groups);
    }

    fn payload_of(s: &StreamValue, compress: bool) -> Vec<u8> {
        dump_payload(
            &Value::Stream(Box::new(s.clone())),
            WriteOptions { compress },
        )
    }

    fn restored(p: &[u8]) -> StreamValue {
        match restore_payload(p).expect("valid payload") {
            Value::Stream(s) => *s,
            other => panic!("not a stream: {other:?}"),
        }
    }

    /// 250 entries over three nodes: shared and other fields, integers of every
    /// listpack width, long values, deleted entries, two groups with pending entries
    /// and consumers with and without them.
    fn sample() -> StreamValue {
        let mut s = StreamValue::new();
        let long = vec![b'z'; 5000];
        for i in 0..260u64 {
            let n = [
                0i64,
                100,
                -100,
                4000,
                -30_000,
                8_000_000,
                -2_000_000_000,
                i64::MIN,
            ][i as usize % 8]
                .to_string()
                .into_bytes();
            let at = id(1_700_000_000_000 + i / 3, i % 3);
            match i % 10 {
                3 => add(&mut s, at, &[b"other", &n]),
                7 => add(&mut s, at, &[b"name", b"x", b"n", &long]),
                9 => add(&mut s, at, &[b"1", b"2", b"name", b""]),
                _ => add(&mut s, at, &[b"name", format!("v{i}").as_bytes(), b"n", &n]),
            }
        }
        for i in (0..260u64).step_by(27) {
            assert!(s.delete(id(1_700_000_000_000 + i / 3, i % 3)));
        }
        let mut g = ConsumerGroup::new(id(1_700_000_000_010, 1), 32);
        let (alice, _) = g.consumer(b"alice", 1_800_000_000_000);
        let (bob, _) = g.consumer(b"bob", 1_800_000_000_001);
        g.consumer(b"idle", 1_800_000_000_002);
        g.deliver(id(1_700_000_000_000, 1), &alice, 1_800_000_000_005);
        g.deliver(id(1_700_000_000_001, 0), &bob, 1_800_000_000_006);
        // A pending entry since deleted from the stream stays pending.
        g.deliver(id(1_700_000_000_009, 0), &alice, 1_800_000_000_007);
        if let Some(p) = g.pel.get_mut(&id(1_700_000_000_001, 0)) {
            p.delivery_count = 300;
        }
        s.groups.insert(b"workers".to_vec(), g);
        s.groups.insert(
            b"late".to_vec(),
            ConsumerGroup::new(StreamId::MIN, ENTRIES_READ_UNKNOWN),
        );
        s
    }

    #[test]
    fn streams_round_trip_through_payloads_and_files() {
        let s = sample();
        assert!(s.node_count() >= 3);
        for compress in [false, true] {
            let p = payload_of(&s, compress);
            assert_eq!(p[0], TYPE_STREAM_2);
            let back = restored(&p);
            assert_same(&s, &back);
            // Nodes of 100 entries, kept as the file has them.
            assert_eq!(back.node_count(), s.len().div_ceil(100));
            // And the same bytes again.
            assert_eq!(payload_of(&back, compress), p);
        }
        let mut f = Vec::new();
        crate::write::put_header(&mut f);
        crate::write::put_select_db(&mut f, 0, 1, 0);
        crate::write::put_entry(
            &mut f,
            b"s",
            &Value::Stream(Box::new(s.clone())),
            0,
            WriteOptions::default(),
        );
        let crc = crate::crc64::crc64(0, &f);
        crate::write::put_eof(&mut f, crc, true);
        let mut r = crate::Reader::new(&f).expect("header");
        match r.next_item().expect("valid") {
            Some(crate::Item::ResizeDb { .. }) => {}
            other => panic!("{other:?}"),
        }
        match r.next_item().expect("valid") {
            Some(crate::Item::Entry(e)) => match e.value {
                Value::Stream(back) => assert_same(&s, &back),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_streams_keep_their_counters_and_groups() {
        let mut s = StreamValue::new();
        add(&mut s, id(5, 5), &[b"a", b"b"]);
        assert!(s.delete(id(5, 5)));
        let mut g = ConsumerGroup::new(id(5, 5), 1);
        g.consumer(b"c", 77);
        s.groups.insert(b"g".to_vec(), g);
        let back = restored(&payload_of(&s, true));
        assert_same(&s, &back);
        assert_eq!(back.node_count(), 0);
        assert_eq!(back.last_id, id(5, 5));
        assert_eq!(back.max_deleted_id, id(5, 5));
        let fresh = StreamValue::new();
        assert_same(&fresh, &restored(&payload_of(&fresh, false)));
    }

    #[test]
    fn big_entries_split_nodes_by_size() {
        let mut s = StreamValue::new();
        let value = vec![b'v'; 3000];
        for i in 1..=40 {
            add(&mut s, id(i, 0), &[b"f", &value]);
        }
        let mut body = Vec::new();
        put_nodes(
            &mut body,
            &s,
            WriteOptions { compress: false },
            &mut |_| Ok(()),
            10_000,
        )
        .expect("to a Vec");
        let plan = plan_nodes(&s, 10_000);
        assert!(plan.len() >= 13 && plan.iter().all(|&n| n <= 3), "{plan:?}");
        assert_eq!(plan.iter().sum::<usize>(), 40);
        // The nodes read back, followed by the rest of a stream.
        put_length(&mut body, 40);
        for n in [40, 0, 1, 0, 0, 0, 40, 0] {
            put_length(&mut body, n);
        }
        let mut c = Cursor {
            data: &body,
            pos: 0,
        };
        let back = read_stream(&mut c, TYPE_STREAM_2).expect("valid");
        assert_eq!(c.pos, body.len());
        assert_eq!(back.node_count(), plan.len());
        assert_eq!(back.entries(), s.entries());
    }

    /// Written by Redis 7.0.15 (`stream-node-max-entries 4`): DUMP of a stream whose
    /// two nodes hold tombstones (1-2, and 4-0, the second node's master entry), with
    /// entries of other fields and more fields than the master's, a group with pending
    /// entries of two consumers and an idle one, and a group created at `$`.
    const REDIS_STREAM: &str = "130210000000000000000100000000000000014061610000001f00030101010201846e616d6505816e02000102010001000185616c696365060101050103010001010183626f6204f1204e03050100010101dfff020101856f74686572068178020601020102010401856361726f6c06dff9020501ff1000000000000000040000000000000000c3404d4091069100000017000120000f0201846e616d6505816e0200010301002001078364616e04630105200a000120030003a02104836576650420260b050185657874726106e04679e03c0003480a01ff040500010104000602026731030581ffffffffffffffff0300000000000000010000000000000001da67a942a20100000100000000000000020000000000000000da67a942a20100000100000000000000030000000000000005df67a942a20100000103026331da67a942a2010000020000000000000001000000000000000100000000000000020000000000000000026332df67a942a201000001000000000000000300000000000000050469646c65e267a942a20100000002673205000600000a006fbcf520261c35b3";
    /// An emptied stream with a group: `XADD e 7-7 a b`, `XDEL e 7-7`,
    /// `XGROUP CREATE e g $`.
    const REDIS_EMPTY_STREAM: &str =
        "13000007070000070701010167070781ffffffffffffffff00000a004385d6e095a5c367";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn texts(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn redis_payloads_load() {
        let s = restored(&unhex(REDIS_STREAM));
        let entries = s.entries();
        let ids: Vec<StreamId> = entries.iter().map(|e| e.0).collect();
        assert_eq!(ids, [id(1, 1), id(2, 0), id(3, 5), id(5, 0)]);
        assert_eq!(entries[0].1, texts(&["name", "alice", "n", "1"]));
        assert_eq!(entries[1].1, texts(&["other", "x"]));
        assert_eq!(entries[2].1, texts(&["name", "carol", "n", "-7"]));
        let y = "y".repeat(70);
        assert_eq!(entries[3].1, texts(&["name", "eve", "n", "5", "extra", &y]));
        assert_eq!(s.node_count(), 2);
        assert_eq!(
            (s.last_id, s.first_id, s.max_deleted_id, s.entries_added),
            (id(5, 0), id(1, 1), id(4, 0), 6)
        );
        let g1 = &s.groups[&b"g1".to_vec()];
        assert_eq!(
            (g1.last_id, g1.entries_read),
            (id(3, 5), ENTRIES_READ_UNKNOWN)
        );
        let owners: Vec<(StreamId, &[u8], u64)> = g1
            .pel
            .iter()
            .map(|(id, p)| (*id, &p.consumer[..], p.delivery_count))
            .collect();
        assert_eq!(
            owners,
            [
                (id(1, 1), &b"c1"[..], 1),
                (id(2, 0), &b"c1"[..], 1),
                (id(3, 5), &b"c2"[..], 1)
            ]
        );
        assert_eq!(g1.pel[&id(1, 1)].delivery_time, 1_796_414_728_154);
        let names: Vec<&[u8]> = g1.consumers.keys().map(|k| &k[..]).collect();
        assert_eq!(names, [&b"c1"[..], b"c2", b"idle"]);
        assert_eq!(g1.consumers[&b"c2"[..]].seen_time, 1_796_414_728_159);
        assert!(g1.consumers[&b"idle"[..]].pending.is_empty());
        let g2 = &s.groups[&b"g2".to_vec()];
        assert_eq!((g2.last_id, g2.entries_read), (id(5, 0), 6));
        // Appending goes on in Redis' tail node (2 of its 4 entries used).
        let mut grown = s.clone();
        add(&mut grown, id(6, 0), &[b"name", b"f"]);
        assert_eq!(grown.node_count(), 2);

        let e = restored(&unhex(REDIS_EMPTY_STREAM));
        assert!(e.is_empty());
        assert_eq!(
            (e.last_id, e.max_deleted_id, e.entries_added),
            (id(7, 7), id(7, 7), 1)
        );
        assert_eq!(e.groups[&b"g".to_vec()].last_id, id(7, 7));
        // What Carmine writes back reads the same.
        assert_same(&s, &restored(&payload_of(&s, true)));
        assert_same(&e, &restored(&payload_of(&e, true)));
    }

    /// The body of a payload in the format of RDB type 15 (Redis 5, 6) or 21 (7.2),
    /// from the fields of type 19.
    fn body_as(s: &StreamValue, t: u8) -> Vec<u8> {
        let opts = WriteOptions { compress: false };
        let mut out = vec![t];
        put_nodes(&mut out, s, opts, &mut |_| Ok(()), NODE_MAX_BYTES).expect("to a Vec");
        put_length(&mut out, s.len() as u64);
        put_id(&mut out, s.last_id);
        if t != TYPE_STREAM {
            put_id(&mut out, s.first_id);
            put_id(&mut out, s.max_deleted_id);
            put_length(&mut out, s.entries_added);
        }
        put_length(&mut out, s.groups.len() as u64);
        for (name, g) in &s.groups {
            put_string(&mut out, name, opts);
            put_id(&mut out, g.last_id);
            if t != TYPE_STREAM {
                put_length(&mut out, g.entries_read as u64);
            }
            put_length(&mut out, g.pel.len() as u64);
            for (id, p) in &g.pel {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&p.delivery_time.to_le_bytes());
                put_length(&mut out, p.delivery_count);
            }
            put_length(&mut out, g.consumers.len() as u64);
            for (name, c) in &g.consumers {
                put_string(&mut out, name, opts);
                out.extend_from_slice(&c.seen_time.to_le_bytes());
                if t == TYPE_STREAM_3 {
                    out.extend_from_slice(&(c.seen_time + 5).to_le_bytes());
                }
                put_length(&mut out, c.pending.len() as u64);
                for id in &c.pending {
                    out.extend_from_slice(&id.to_be_bytes());
                }
            }
        }
        out
    }

    fn decode(body: &[u8]) -> Result<Value, RdbError> {
        decode_payload(body, body.len())
    }

    #[test]
    fn types_15_and_21_load() {
        let s = sample();
        match decode(&body_as(&s, TYPE_STREAM_3)).expect("type 21") {
            Value::Stream(back) => assert_same(&s, &back),
            other => panic!("{other:?}"),
        }
        // Type 15 has no counters: every entry counts as added, none deleted, and the
        // groups' read counters are estimated as Redis 7.0 does.
        let old = match decode(&body_as(&s, TYPE_STREAM)).expect("type 15") {
            Value::Stream(back) => back,
            other => panic!("{other:?}"),
        };
        assert_eq!(old.entries(), s.entries());
        assert_eq!(old.entries_added, s.len() as u64);
        assert_eq!(old.max_deleted_id, StreamId::MIN);
        assert_eq!(old.first_id, s.entries()[0].0);
        let late = &old.groups[&b"late".to_vec()];
        assert_eq!(late.entries_read, 0, "before the first entry: none read");
        let workers = &old.groups[&b"workers".to_vec()];
        assert_eq!(workers.entries_read, ENTRIES_READ_UNKNOWN);
        assert_eq!(workers.pel, s.groups[&b"workers".to_vec()].pel);
        // An empty one: Redis 7.0 records MAX-MAX as its first ID.
        let empty = match decode(&body_as(&StreamValue::new(), TYPE_STREAM)).expect("type 15") {
            Value::Stream(back) => back,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (empty.len(), empty.first_id, empty.entries_added),
            (0, StreamId::MAX, 0)
        );
    }

    #[test]
    fn damaged_payloads_are_refused_without_panicking() {
        let s = sample();
        let body = body_as(&s, TYPE_STREAM_2);
        assert_eq!(&body[..], &payload_of(&s, false)[..body.len()]);
        for cut in (0..body.len()).step_by(7) {
            assert!(decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        // Every single-bit flip, the checksum aside: an error or a value, never a panic.
        let small = {
            let mut s = StreamValue::new();
            add(&mut s, id(1, 1), &[b"f", b"v", b"g", b"12345"]);
            add(&mut s, id(1, 2), &[b"f", b"w", b"g", b"-3"]);
            add(&mut s, id(2, 0), &[b"h", b"x"]);
            s.delete(id(1, 2));
            let mut g = ConsumerGroup::new(id(1, 2), 2);
            let (c, _) = g.consumer(b"c", 9);
            g.deliver(id(1, 1), &c, 10);
            g.consumer(b"d", 11);
            s.groups.insert(b"g".to_vec(), g);
            s
        };
        for t in [TYPE_STREAM, TYPE_STREAM_2, TYPE_STREAM_3] {
            let body = body_as(&small, t);
            for cut in 0..body.len() {
                assert!(decode(&body[..cut]).is_err(), "cut at {cut}");
            }
            for i in 0..body.len() * 8 {
                let mut b = body.clone();
                b[i / 8] ^= 1 << (i % 8);
                // What loads writes back in a form that loads the same.
                if let Ok(Value::Stream(s)) = decode(&b) {
                    assert_same(&s, &restored(&payload_of(&s, true)));
                }
            }
        }
    }

    #[test]
    fn inconsistent_streams_are_refused() {
        let s = {
            let mut s = StreamValue::new();
            add(&mut s, id(1, 1), &[b"f", b"v"]);
            add(&mut s, id(1, 2), &[b"f", b"w"]);
            let mut g = ConsumerGroup::new(id(1, 2), 2);
            let (c, _) = g.consumer(b"c", 9);
            g.deliver(id(1, 1), &c, 10);
            s.groups.insert(b"g".to_vec(), g);
            s
        };
        let refused = |s: &StreamValue, why: &str| {
            let err = decode(&body_as(s, TYPE_STREAM_2)).expect_err(why);
            assert!(err.message.contains(why), "{err}");
        };
        let mut bad = s.clone();
        bad.last_id = id(1, 1);
        refused(&bad, "below its last entry");
        let mut bad = s.clone();
        bad.entries_added = 1;
        refused(&bad, "entries-added");
        // A pending entry no consumer owns.
        let mut bad = s.clone();
        if let Some(g) = bad.groups.get_mut(b"g".as_slice()) {
            g.consumers.values_mut().for_each(|c| c.pending.clear());
        }
        refused(&bad, "has no consumer");
        // A consumer owning an entry the group's PEL lacks.
        let mut bad = s.clone();
        if let Some(g) = bad.groups.get_mut(b"g".as_slice()) {
            g.pel.clear();
        }
        refused(&bad, "not in its group's PEL");

        // The same, written by put_stream, comes out consistent: the writer keeps only
        // what Redis would load.
        let mut odd = s.clone();
        if let Some(g) = odd.groups.get_mut(b"g".as_slice()) {
            g.pel.clear();
            g.consumer(b"ghost", 1);
        }
        let back = restored(&payload_of(&odd, false));
        let g = &back.groups[&b"g".to_vec()];
        assert!(g.pel.is_empty() && g.consumers.values().all(|c| c.pending.is_empty()));
        assert_eq!(g.consumers.len(), 2);

        // A stream length that disagrees with the entries, a node key of the wrong
        // size, an entry count in a listpack that lies.
        let mut body = body_as(&s, TYPE_STREAM_2);
        let good = body.clone();
        let nodes_end = {
            let mut c = Cursor {
                data: &good,
                pos: 2,
            };
            c.string().expect("key");
            c.string().expect("listpack");
            c.pos
        };
        body[nodes_end] = 3;
        let err = decode(&body).expect_err("length");
        assert!(err.message.contains("stream length 3"), "{err}");
        assert_eq!(err.offset, nodes_end);
        let mut body = good.clone();
        body[2] = 15; // the node key's length
        assert!(decode(&body).is_err());
        let mut body = good.clone();
        // The listpack's first element (the live count, 2) says 1.
        let lp_start = 2 + 17 + 1;
        assert_eq!(body[lp_start + 6], 2);
        body[lp_start + 6] = 1;
        let err = decode(&body).expect_err("count");
        assert!(err.message.starts_with("corrupt stream listpack"), "{err}");
        assert_eq!(err.offset, lp_start - 1);
    }
}
