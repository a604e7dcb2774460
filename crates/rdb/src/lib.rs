//! Redis' RDB format for Carmine: a streaming [`Reader`] for every RDB version Redis 7.x
//! writes (and older ones: ziplists, zipmaps, quicklists, intsets, listpacks, LZF strings,
//! the CRC-64 trailer), a writer of version 10 files that Redis 7.0 loads, DUMP/RESTORE
//! payloads, and the conversion between RDB values and keyspace values.
//!
//! ```
//! use carmine_rdb::{dump_payload, restore_payload, Value, WriteOptions};
//!
//! let v = Value::List(vec![b"a".to_vec(), b"12".to_vec()]);
//! let payload = dump_payload(&v, WriteOptions::default());
//! assert_eq!(restore_payload(&payload).unwrap(), v);
//! // A flipped bit is caught by the CRC-64 trailer.
//! let mut bad = payload.clone();
//! bad[3] ^= 1;
//! assert!(restore_payload(&bad).is_err());
//! ```

pub mod convert;
pub mod crc64;
mod file;
pub mod lzf;
mod packed;
mod read;
pub mod snapshot;
mod stream;
pub mod write;

pub use convert::{from_keyspace, to_keyspace};
pub use file::DumpFile;
use read::InputExt;
pub use read::{Cursor, Input, Item, PulledInput, Reader, MAX_VERSION, MIN_VERSION};
pub use snapshot::{
    debug_delay, load_from, load_into, load_observed, load_with_progress, LoadObserver, LoadStats,
    Snapshot, SnapshotProgress, SnapshotStats,
};
pub use write::{WriteOptions, WRITE_VERSION};

/// A value as RDB carries it, independent of in-memory encodings.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    Stream(Box<carmine_keyspace::StreamValue>),
}

/// One key of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub db: usize,
    pub key: Vec<u8>,
    pub value: Value,
    /// Absolute Unix time in milliseconds.
    pub expire_ms: Option<u64>,
    /// Seconds idle (LRU), when the file recorded it.
    pub idle: Option<u64>,
    /// LFU counter, when the file recorded it.
    pub freq: Option<u8>,
}

/// Why a file or payload was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdbError {
    pub offset: usize,
    pub message: String,
}

impl std::fmt::Display for RdbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}", self.message, self.offset)
    }
}

impl std::error::Error for RdbError {}

/// A DUMP payload: the value as RDB encodes it, the RDB version (2 bytes LE) and a
/// CRC-64 of everything before (8 bytes LE).
pub fn dump_payload(v: &Value, opts: WriteOptions) -> Vec<u8> {
    let mut out = vec![write::type_byte(v)];
    write::put_value(&mut out, v, opts);
    out.extend_from_slice(&(WRITE_VERSION as u16).to_le_bytes());
    let crc = crc64::crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// FUNCTION DUMP's payload: each library as RDB writes it, then the RDB version and a
/// CRC-64, as DUMP's.
pub fn dump_functions(libraries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for code in libraries {
        write::put_function(&mut out, code);
    }
    out.extend_from_slice(&(WRITE_VERSION as u16).to_le_bytes());
    let crc = crc64::crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// What FUNCTION RESTORE may say of a payload.
#[derive(Debug, PartialEq, Eq)]
pub enum FunctionsPayloadError {
    /// Redis: "payload version or checksum are wrong".
    Envelope,
    /// Redis: "given type is not a function".
    NotAFunction,
    /// The payload ends inside a library.
    Truncated(RdbError),
}

/// The libraries' code in a FUNCTION DUMP payload (from Carmine or Redis).
pub fn restore_functions(p: &[u8]) -> Result<Vec<Vec<u8>>, FunctionsPayloadError> {
    if p.len() < 10 {
        return Err(FunctionsPayloadError::Envelope);
    }
    let body_end = p.len() - 10;
    let version = u16::from_le_bytes([p[body_end], p[body_end + 1]]);
    let stored = u64::from_le_bytes(p[p.len() - 8..].try_into().unwrap_or_default());
    if u32::from(version) > MAX_VERSION
        || (stored != 0 && crc64::crc64(0, &p[..p.len() - 8]) != stored)
    {
        return Err(FunctionsPayloadError::Envelope);
    }
    let mut c = read::Cursor {
        data: &p[..body_end],
        pos: 0,
    };
    let mut libraries = Vec::new();
    while c.pos < body_end {
        if c.u8().map_err(FunctionsPayloadError::Truncated)? != read::OP_FUNCTION2 {
            return Err(FunctionsPayloadError::NotAFunction);
        }
        libraries.push(c.string().map_err(FunctionsPayloadError::Truncated)?);
    }
    Ok(libraries)
}

/// Decodes a DUMP payload (from Carmine or Redis up to RDB version 12), checking its
/// version and checksum first.
pub fn restore_payload(p: &[u8]) -> Result<Value, RdbError> {
    let body_end = verify_payload(p)?;
    decode_payload(p, body_end)
}

/// Decodes the value of a payload [`verify_payload`] accepted (`body_end` is what it
/// returned).
pub fn decode_payload(p: &[u8], body_end: usize) -> Result<Value, RdbError> {
    let Some(&kind) = p.first().filter(|_| body_end <= p.len()) else {
        return Err(RdbError {
            offset: 0,
            message: "payload too short".into(),
        });
    };
    let mut c = read::Cursor {
        data: &p[..body_end],
        pos: 1,
    };
    let v = read::read_value(&mut c, kind, b"")?;
    if c.pos != body_end {
        return Err(RdbError {
            offset: c.pos,
            message: "trailing bytes after the value".into(),
        });
    }
    Ok(v)
}

/// Checks a DUMP payload's envelope (length, RDB version, CRC-64) without decoding the
/// value; returns where the value ends. RESTORE answers a failure here with "payload
/// version or checksum are wrong", and a failure decoding the value with "Bad data format".
pub fn verify_payload(p: &[u8]) -> Result<usize, RdbError> {
    let bad = |offset, message: &str| RdbError {
        offset,
        message: message.into(),
    };
    if p.len() < 11 {
        return Err(bad(0, "payload too short"));
    }
    let body_end = p.len() - 10;
    let version = u16::from_le_bytes([p[body_end], p[body_end + 1]]);
    if u32::from(version) > MAX_VERSION {
        return Err(bad(body_end, "unsupported RDB version"));
    }
    let stored = u64::from_le_bytes(p[p.len() - 8..].try_into().unwrap_or_default());
    if stored != 0 && crc64::crc64(0, &p[..p.len() - 8]) != stored {
        return Err(bad(p.len() - 8, "checksum mismatch"));
    }
    Ok(body_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn function_payloads_round_trip_and_are_checked() {
        let libs = vec![b"#!lua name=a\nredis.register_function('f', function() end)".to_vec()];
        let p = dump_functions(&libs);
        assert_eq!(restore_functions(&p), Ok(libs));
        assert_eq!(restore_functions(&dump_functions(&[])), Ok(vec![]));
        let mut bad = p.clone();
        bad[3] ^= 1;
        assert_eq!(
            restore_functions(&bad),
            Err(FunctionsPayloadError::Envelope)
        );
        // A key's DUMP is not a function library.
        let key = dump_payload(&Value::String(b"v".to_vec()), WriteOptions::default());
        assert_eq!(
            restore_functions(&key),
            Err(FunctionsPayloadError::NotAFunction)
        );
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<i64>().prop_map(|n| n.to_string().into_bytes()),
            Just(b"abcabcabcabcabcabcabcabcabcabcabc".to_vec()),
        ]
    }

    /// An RDB file of `entries` (database, key, value, with a deadline), sorted by
    /// database, with its checksum.
    fn file_of(entries: &[(usize, Vec<u8>, Value, bool)]) -> Vec<u8> {
        let mut f = Vec::new();
        write::put_header(&mut f);
        write::put_aux(&mut f, "redis-ver", b"7.0.15");
        let mut db = None;
        for (d, k, v, ttl) in entries {
            if db != Some(*d) {
                write::put_select_db(&mut f, *d, 1, 0);
                db = Some(*d);
            }
            let deadline = if *ttl { 1_900_000_000_000 } else { 0 };
            write::put_entry(&mut f, k, v, deadline, WriteOptions::default());
        }
        let crc = crc64::crc64(0, &f);
        write::put_eof(&mut f, crc, true);
        f
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            bytes().prop_map(Value::String),
            proptest::collection::vec(bytes(), 0..20).prop_map(Value::List),
            proptest::collection::vec(bytes(), 0..20).prop_map(Value::Set),
            proptest::collection::vec(
                (bytes(), any::<f64>().prop_filter("no NaN", |f| !f.is_nan())),
                0..20
            )
            .prop_map(Value::ZSet),
            proptest::collection::vec((bytes(), bytes()), 0..20).prop_map(Value::Hash),
            stream(),
        ]
    }

    /// A stream laid out in nodes as a file loads one (100 entries each), with entries
    /// of shared and other fields, IDs far apart, counters and consumer groups.
    fn stream() -> impl Strategy<Value = Value> {
        use carmine_keyspace::stream::ConsumerGroup;
        use carmine_keyspace::{StreamId, StreamValue};
        let field = prop_oneof![Just(b"name".to_vec()), Just(b"7".to_vec()), bytes()];
        let entry = (
            prop_oneof![4 => 0u64..3, 1 => Just(1u64 << 62)],
            0u64..3,
            proptest::collection::vec((field, bytes()), 1..4),
        );
        let group = (
            bytes(),
            (any::<u64>(), any::<u64>()),
            -1i64..100,
            proptest::collection::vec((0u64..150, 0usize..3, any::<u64>(), any::<u64>()), 0..6),
            proptest::collection::vec(any::<bool>(), 3),
        );
        (
            proptest::collection::vec(entry, 0..130),
            (0u64..3, 0u64..3, 0u64..3),
            (any::<u64>(), any::<u64>()),
            proptest::collection::vec(group, 0..3),
        )
            .prop_map(|(entries, (more_ms, more_added, deleted), first, groups)| {
                let mut loaded: Vec<(StreamId, Vec<Vec<u8>>)> = Vec::new();
                let mut at = StreamId::new(1_700_000_000_000, 0);
                for (dms, dseq, pairs) in entries {
                    let next =
                        StreamId::new(at.ms.saturating_add(dms), at.seq.saturating_add(dseq));
                    if !loaded.is_empty() && next <= at {
                        continue;
                    }
                    at = next;
                    loaded.push((at, pairs.into_iter().flat_map(|(f, v)| [f, v]).collect()));
                }
                let mut s = StreamValue::new();
                for chunk in loaded.chunks(100) {
                    let refs: Vec<(StreamId, Vec<&[u8]>)> = chunk
                        .iter()
                        .map(|(id, f)| (*id, f.iter().map(Vec::as_slice).collect()))
                        .collect();
                    assert!(s.load_node(&refs, chunk.len()));
                }
                let last = StreamId::new(at.ms.saturating_add(more_ms), at.seq);
                let len = s.len() as u64;
                s.set_meta(
                    last,
                    StreamId::new(first.0, first.1),
                    StreamId::new(at.ms, deleted),
                    len + more_added,
                );
                for (name, (ms, seq), read, pel, idle) in groups {
                    let mut g = ConsumerGroup::new(StreamId::new(ms, seq), read);
                    let names: Vec<_> = (0..3u8)
                        .filter(|i| !idle[*i as usize])
                        .map(|i| g.consumer(&[b'c', i], 1_800_000_000_000 + u64::from(i)).0)
                        .collect();
                    for (ms, who, time, count) in pel {
                        if let Some(c) = names.get(who) {
                            g.deliver(StreamId::new(ms, 1), c, time);
                            if let Some(p) = g.pel.get_mut(&StreamId::new(ms, 1)) {
                                p.delivery_count = count;
                            }
                        }
                    }
                    s.groups.insert(name, g);
                }
                Value::Stream(Box::new(s))
            })
    }

    proptest! {
        #[test]
        fn payloads_round_trip(v in value(), compress in any::<bool>()) {
            let p = dump_payload(&v, WriteOptions { compress });
            prop_assert_eq!(restore_payload(&p).expect("valid"), v);
        }

        #[test]
        fn files_round_trip(entries in proptest::collection::vec((0usize..3, bytes(), value(), any::<bool>()), 0..20)) {
            let mut sorted = entries.clone();
            sorted.sort_by_key(|e| e.0);
            let f = file_of(&sorted);
            let mut r = Reader::new(&f).expect("header");
            let mut got = Vec::new();
            while let Some(item) = r.next_item().expect("valid file") {
                if let Item::Entry(e) = item {
                    got.push((e.db, e.key, e.value, e.expire_ms.is_some()));
                }
            }
            prop_assert_eq!(got, sorted);
        }

        /// Writing straight from a keyspace value gives the bytes of writing its RDB
        /// conversion, in every encoding (tiny limits force the full structures), and
        /// the pieces a streaming writer receives add up to the same bytes.
        #[test]
        fn keyspace_values_write_as_their_conversion(v in value(), small in any::<bool>(), compress in any::<bool>(), ttl in any::<bool>()) {
            let ks = carmine_keyspace::Keyspace::new();
            if small {
                use std::sync::atomic::Ordering::Relaxed;
                let l = ks.limits();
                l.hash_max_listpack_entries.store(2, Relaxed);
                l.list_max_listpack_size.store(2, Relaxed);
                l.set_max_intset_entries.store(2, Relaxed);
                l.set_max_listpack_entries.store(2, Relaxed);
            }
            let Some(kv) = to_keyspace(v, &ks) else { return Ok(()) };
            let opts = WriteOptions { compress };
            let expire = if ttl { 1_900_000_000_000 } else { 0 };
            let mut want = Vec::new();
            write::put_entry(&mut want, b"key", &from_keyspace(&kv), expire, opts);
            let mut got = Vec::new();
            write::put_keyspace_entry(&mut got, b"key", &kv, expire, opts, &mut |_| Ok(())).expect("to a Vec");
            prop_assert_eq!(&got, &want);
            let mut streamed = Vec::new();
            let mut tail = Vec::new();
            write::put_keyspace_entry(&mut tail, b"key", &kv, expire, opts, &mut |b: &mut Vec<u8>| {
                streamed.append(b);
                Ok(())
            }).expect("streamed");
            streamed.append(&mut tail);
            prop_assert_eq!(streamed, want);
        }

        /// Truncated or bit-flipped files are refused (or, for a flip the format cannot
        /// see, read to the end) — never a panic.
        /// A file read from a connection in pieces of any sizes yields the items of the
        /// same file read from memory, hands back exactly the bytes that followed it, and
        /// is refused when cut short or damaged, as in memory.
        #[test]
        fn pulled_input_reads_as_in_memory(
            entries in proptest::collection::vec((0usize..3, bytes(), value(), any::<bool>()), 0..12),
            pieces in proptest::collection::vec(1usize..300, 1..40),
            after in proptest::collection::vec(any::<u8>(), 0..50),
            announce in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut sorted = entries.clone();
            sorted.sort_by_key(|e| e.0);
            let f = file_of(&sorted);
            let read_pulled = |wire: &[u8], limit: Option<u64>| -> Result<(Vec<Item>, Vec<u8>), RdbError> {
                // The first piece is what the caller had already read.
                let first = wire[..pieces[0].min(wire.len())].to_vec();
                let mut at = first.len();
                let mut sizes = pieces.iter().cycle().skip(1);
                let input = PulledInput::new(first, limit, |buf: &mut Vec<u8>| {
                    let n = sizes.next().copied().unwrap_or(1).min(wire.len() - at);
                    buf.extend_from_slice(&wire[at..at + n]);
                    at += n;
                    Ok(n)
                });
                let mut r = Reader::from_input(input)?;
                let mut items = Vec::new();
                while let Some(item) = r.next_item()? {
                    items.push(item);
                }
                Ok((items, r.into_input().rest()))
            };
            let mut want = Vec::new();
            let mut r = Reader::new(&f).expect("header");
            while let Some(item) = r.next_item().expect("valid") {
                want.push(item);
            }
            let mut wire = f.clone();
            wire.extend_from_slice(&after);
            let limit = announce.then_some(f.len() as u64);
            let (items, rest) = read_pulled(&wire, limit).expect("valid");
            prop_assert_eq!(&items, &want);
            // What was read past the RDB is handed back, whatever the piece sizes.
            let mut rest_all = rest;
            prop_assert!(after.starts_with(&rest_all));
            rest_all.extend_from_slice(&after[rest_all.len()..]);
            prop_assert_eq!(rest_all, after);
            // Cut short: an error, never a hang or a panic.
            let short = &f[..cut.index(f.len())];
            prop_assert!(read_pulled(short, limit).is_err());
            let mut flipped = f.clone();
            let i = flip.index(flipped.len());
            flipped[i] ^= 0x10;
            prop_assert!(read_pulled(&flipped, limit).is_err());
        }

        #[test]
        fn damaged_files_are_refused(v in value(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut f = Vec::new();
            write::put_header(&mut f);
            write::put_select_db(&mut f, 0, 1, 0);
            write::put_entry(&mut f, b"k", &v, 0, WriteOptions::default());
            let crc = crc64::crc64(0, &f);
            write::put_eof(&mut f, crc, true);
            let read_all = |data: &[u8]| -> Result<(), RdbError> {
                let mut r = Reader::new(data)?;
                while r.next_item()?.is_some() {}
                Ok(())
            };
            let short = &f[..cut.index(f.len())];
            prop_assert!(read_all(short).is_err());
            let mut flipped = f.clone();
            let i = flip.index(flipped.len());
            flipped[i] ^= 1 << bit;
            // The CRC-64 trailer catches every single-bit flip.
            prop_assert!(read_all(&flipped).is_err());
        }
    }
}
