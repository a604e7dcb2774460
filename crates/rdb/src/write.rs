//! RDB writing: version 10 files (what Redis 7.0 writes and loads) with plain value
//! encodings, which every Redis since 2.x loads and re-encodes compactly itself.

use std::io;

use carmine_keyspace::{parse_canonical_i64, Value as KValue};

use crate::crc64::crc64;
use crate::read::*;
use crate::{lzf, Value};

pub const WRITE_VERSION: u32 = 10;

/// Options that change the bytes written.
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    /// `rdbcompression`: LZF-compress strings longer than 20 bytes when it saves space.
    pub compress: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { compress: true }
    }
}

pub fn put_length(out: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

pub fn put_string(out: &mut Vec<u8>, s: &[u8], opts: WriteOptions) {
    // Only 32-bit integers get an integer encoding: longer strings need no parse.
    if let Some(v) = (s.len() <= 11).then(|| parse_canonical_i64(s)).flatten() {
        if let Ok(b) = i8::try_from(v) {
            out.push(0xc0);
            out.push(b as u8);
            return;
        }
        if let Ok(h) = i16::try_from(v) {
            out.push(0xc1);
            out.extend_from_slice(&h.to_le_bytes());
            return;
        }
        if let Ok(w) = i32::try_from(v) {
            out.push(0xc2);
            out.extend_from_slice(&w.to_le_bytes());
            return;
        }
    }
    if opts.compress && s.len() > 20 {
        let start = out.len();
        if lzf::compress_into(s, s.len() - 4, out) {
            put_lzf_head(out, start, s.len());
            return;
        }
    }
    put_length(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Puts the header of an LZF string (whose compressed bytes were written from `start` on,
/// `len` bytes uncompressed) in front of it: its length field needs the compressed size,
/// so the header is written after and rotated into place.
fn put_lzf_head(out: &mut Vec<u8>, start: usize, len: usize) {
    let compressed = out.len() - start;
    out.push(0xc3);
    put_length(out, compressed as u64);
    put_length(out, len as u64);
    let head = out.len() - start - compressed;
    out[start..].rotate_right(head);
}

/// A big string from its pieces, written as `put_string` writes one slice, without
/// joining them. LZF streams concatenate into one valid stream (a back-reference stays
/// inside its piece), so the pieces are compressed in turn; one that does not shrink goes
/// in as literal runs, and the whole is written plain unless it came out shorter.
/// Plain, it is passed to `spill` piece by piece.
pub fn put_string_pieces(
    out: &mut Vec<u8>,
    pieces: &carmine_keyspace::Pieces,
    opts: WriteOptions,
    spill: Spill<'_>,
) -> io::Result<()> {
    let len = pieces.len();
    if opts.compress && len > 20 {
        let start = out.len();
        for piece in pieces.iter() {
            if !lzf::compress_into(piece, piece.len(), out) {
                for run in piece.chunks(32) {
                    // A literal run: its length less one, then the bytes.
                    out.push((run.len() - 1) as u8);
                    out.extend_from_slice(run);
                }
            }
            if out.len() - start >= len - 4 {
                break;
            }
        }
        if out.len() - start < len - 4 {
            put_lzf_head(out, start, len);
            return Ok(());
        }
        out.truncate(start);
    }
    put_length(out, len as u64);
    for piece in pieces.iter() {
        out.extend_from_slice(piece);
        spill(out)?;
    }
    Ok(())
}

/// The RDB type byte for a value as this writer encodes it.
pub fn type_byte(v: &Value) -> u8 {
    match v {
        Value::String(_) => TYPE_STRING,
        Value::List(_) => TYPE_LIST,
        Value::Set(_) => TYPE_SET,
        Value::ZSet(_) => TYPE_ZSET_2,
        Value::Hash(_) => TYPE_HASH,
        Value::Stream(_) => crate::stream::TYPE_STREAM_2,
    }
}

/// The value's body (after its type byte and key).
pub fn put_value(out: &mut Vec<u8>, v: &Value, opts: WriteOptions) {
    match v {
        Value::String(s) => put_string(out, s, opts),
        Value::List(items) | Value::Set(items) => {
            put_length(out, items.len() as u64);
            for it in items {
                put_string(out, it, opts);
            }
        }
        Value::ZSet(items) => {
            put_length(out, items.len() as u64);
            for (m, s) in items {
                put_string(out, m, opts);
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        Value::Hash(pairs) => {
            put_length(out, pairs.len() as u64);
            for (f, v) in pairs {
                put_string(out, f, opts);
                put_string(out, v, opts);
            }
        }
        Value::Stream(s) => {
            // Into a Vec: nothing to spill, nothing to fail.
            let _ = crate::stream::put_stream(out, s, opts, &mut |_| Ok(()));
        }
    }
}

/// One key: its deadline (if any), type, key and value.
pub fn put_entry(out: &mut Vec<u8>, key: &[u8], v: &Value, expire_ms: u64, opts: WriteOptions) {
    put_entry_head(out, key, type_byte(v), expire_ms, opts);
    put_value(out, v, opts);
}

/// What precedes a key's value: its deadline (if any), the type byte and the key.
fn put_entry_head(
    out: &mut Vec<u8>,
    key: &[u8],
    type_byte: u8,
    expire_ms: u64,
    opts: WriteOptions,
) {
    if expire_ms != 0 {
        out.push(OP_EXPIRETIME_MS);
        out.extend_from_slice(&expire_ms.to_le_bytes());
    }
    out.push(type_byte);
    put_string(out, key, opts);
}

/// Called between the members of a collection being written. A streaming writer moves
/// what `out` holds to its destination there, so a large value never sits whole in
/// memory; a writer that keeps the bytes does nothing.
pub type Spill<'a> = &'a mut dyn FnMut(&mut Vec<u8>) -> io::Result<()>;

/// One key written straight from the keyspace's value: the same bytes as
/// [`put_entry`] of its [`crate::from_keyspace`] conversion, without building that copy.
pub fn put_keyspace_entry(
    out: &mut Vec<u8>,
    key: &[u8],
    v: &KValue,
    expire_ms: u64,
    opts: WriteOptions,
    spill: Spill<'_>,
) -> io::Result<()> {
    let type_byte = match v {
        KValue::Str(_) => TYPE_STRING,
        KValue::List(_) => TYPE_LIST,
        KValue::Set(_) => TYPE_SET,
        KValue::ZSet(_) => TYPE_ZSET_2,
        KValue::Hash(_) => TYPE_HASH,
        KValue::Stream(_) => crate::stream::TYPE_STREAM_2,
    };
    put_entry_head(out, key, type_byte, expire_ms, opts);
    match v {
        KValue::Str(s) => match s.pieces() {
            Some(pieces) => put_string_pieces(out, pieces, opts, spill)?,
            None => s.with_bytes(|b| put_string(out, b, opts)),
        },
        KValue::List(l) => {
            put_length(out, l.len() as u64);
            for it in l.iter() {
                put_string(out, it, opts);
                spill(out)?;
            }
        }
        KValue::Set(set) => {
            put_length(out, set.len() as u64);
            set.try_for_each_member(|m| {
                put_string(out, m, opts);
                spill(out)
            })?;
        }
        KValue::ZSet(z) => {
            put_length(out, z.len() as u64);
            // Any order loads the same set; rank order cost a treap walk per element.
            for (score, m) in z.unordered() {
                put_string(out, m, opts);
                out.extend_from_slice(&score.to_le_bytes());
                spill(out)?;
            }
        }
        KValue::Hash(h) => {
            put_length(out, h.len() as u64);
            h.try_for_each_pair(|field, value| {
                put_string(out, field, opts);
                put_string(out, value, opts);
                spill(out)
            })?;
        }
        KValue::Stream(s) => crate::stream::put_stream(out, s, opts, spill)?,
    }
    Ok(())
}

pub fn put_header(out: &mut Vec<u8>) {
    out.extend_from_slice(format!("REDIS{WRITE_VERSION:04}").as_bytes());
}

pub fn put_aux(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.push(OP_AUX);
    put_string(out, key.as_bytes(), WriteOptions { compress: false });
    put_string(out, value, WriteOptions { compress: false });
}

/// A function library's code (RDB_OPCODE_FUNCTION2), as Redis 7.0 writes one before
/// the databases, and FUNCTION DUMP writes its payload.
pub fn put_function(out: &mut Vec<u8>, code: &[u8]) {
    out.push(crate::read::OP_FUNCTION2);
    put_string(out, code, WriteOptions { compress: false });
}

pub fn put_select_db(out: &mut Vec<u8>, db: usize, keys: u64, expires: u64) {
    out.push(OP_SELECTDB);
    put_length(out, db as u64);
    out.push(OP_RESIZEDB);
    put_length(out, keys);
    put_length(out, expires);
}

/// The EOF opcode and the checksum of everything before it (`crc` covers what was
/// already written elsewhere; pass the running value). `checksum` false writes zeros,
/// as `rdbchecksum no` does.
pub fn put_eof(out: &mut Vec<u8>, crc: u64, checksum: bool) {
    out.push(OP_EOF);
    let crc = if checksum { crc64(crc, &[OP_EOF]) } else { 0 };
    out.extend_from_slice(&crc.to_le_bytes());
}
