//! Values and entries.

use std::sync::Arc;

use crate::pieces::Pieces;

use crate::collections::{HashValue, ListValue, SetValue};

/// Strings up to this many bytes report `embstr` in OBJECT ENCODING, as in Redis.
pub const EMBSTR_MAX: usize = 44;

/// Longest string stored inside the entry itself: with the tag and length byte that is
/// 24 bytes, the size of the other variants, so a `Value` is 24 bytes and a table's
/// (key, entry) pair 64.
pub const INLINE_STR: usize = 22;

/// A string value. Integers that round-trip through their decimal form are stored as
/// `Int` (Redis' "int" encoding): 8 bytes, no allocation, and INCR needs no parsing.
/// Short strings live inline (no allocation, no pointer to follow on GET); longer ones
/// are `Heap`, a boxed slice: its length sits in the 16-byte variant, so the allocation
/// is the bytes alone. Strings edited in place (APPEND, SETRANGE, SETBIT, HyperLogLogs)
/// are `Raw`, which OBJECT ENCODING reports as "raw" whatever the length, as Redis does.
///
/// Strings over [`SHARE_AT`] are `Big`, in shared pieces (`pieces.rs`), for snapshots: a
/// writer that changes a table first copies the values a snapshot has not written yet,
/// and a megabyte string took a megabyte memcpy (and as much memory) even when the change
/// was to a neighbouring key. Now that costs pointers, and an edit of the big string
/// itself copies the 64 KiB pieces it writes to. Reads that need the bytes in one slice
/// (`with_bytes`) join the pieces, so commands that read part of a big string use
/// `byte` and `range_to_vec`, and GET writes the pieces out in turn.
#[derive(Clone, Debug)]
pub enum StrValue {
    Int(i64),
    Inline { len: u8, buf: [u8; INLINE_STR] },
    Heap(Box<[u8]>),
    Raw(Arc<Vec<u8>>),
    Big(Box<Pieces>),
}

/// Strings longer than this are `Big`: the size past which the snapshot writes a value
/// after unlocking its table rather than under the lock.
pub const SHARE_AT: usize = 64 * 1024;

/// Equal bytes are equal strings, whatever their encodings.
impl PartialEq for StrValue {
    fn eq(&self, other: &Self) -> bool {
        self.with_bytes(|a| other.with_bytes(|b| a == b))
    }
}

impl Eq for StrValue {}

impl StrValue {
    /// Stores `bytes`, choosing the integer encoding when it represents the same text.
    pub fn from_bytes(bytes: &[u8]) -> StrValue {
        if bytes.len() <= 20 {
            if let Some(n) = parse_canonical_i64(bytes) {
                return StrValue::Int(n);
            }
        }
        if bytes.len() <= INLINE_STR {
            let mut buf = [0u8; INLINE_STR];
            buf[..bytes.len()].copy_from_slice(bytes);
            return StrValue::Inline {
                len: bytes.len() as u8,
                buf,
            };
        }
        if bytes.len() > SHARE_AT {
            return StrValue::Big(Box::new(Pieces::from_slice(bytes)));
        }
        StrValue::Heap(bytes.into())
    }

    /// Bytes built or edited by a command (BITOP, PFADD): "raw".
    pub fn raw(bytes: Vec<u8>) -> StrValue {
        if bytes.len() > SHARE_AT {
            return StrValue::Big(Box::new(Pieces::from_slice(&bytes)));
        }
        StrValue::Raw(Arc::new(bytes))
    }

    /// The bytes of a value held in one slice: not an integer (which needs formatting),
    /// nor a big string (in pieces). `with_bytes` takes any.
    #[inline]
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            StrValue::Int(_) | StrValue::Big(_) => None,
            StrValue::Inline { len, buf } => Some(&buf[..*len as usize]),
            StrValue::Heap(v) => Some(v),
            StrValue::Raw(v) => Some(v),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            StrValue::Int(n) => itoa::Buffer::new().format(*n).len(),
            StrValue::Inline { len, .. } => *len as usize,
            StrValue::Heap(v) => v.len(),
            StrValue::Raw(v) => v.len(),
            StrValue::Big(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with the value's bytes, formatting an integer on the stack and joining
    /// a big string's pieces (a copy of it: see `byte` and `range_to_vec`).
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            StrValue::Int(n) => f(itoa::Buffer::new().format(*n).as_bytes()),
            StrValue::Inline { len, buf } => f(&buf[..*len as usize]),
            StrValue::Heap(v) => f(v),
            StrValue::Raw(v) => f(v),
            StrValue::Big(p) => f(&p.to_vec()),
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            StrValue::Big(p) => p.to_vec(),
            other => other.with_bytes(<[u8]>::to_vec),
        }
    }

    /// The pieces of a big string (None for any other), for writing it out in turn.
    pub fn pieces(&self) -> Option<&Pieces> {
        match self {
            StrValue::Big(p) => Some(p),
            _ => None,
        }
    }

    /// Byte `i`, if the string is that long.
    pub fn byte(&self, i: usize) -> Option<u8> {
        match self {
            StrValue::Big(p) => p.byte(i),
            other => other.with_bytes(|b| b.get(i).copied()),
        }
    }

    /// Bytes `start..end`, cut to the string's length.
    pub fn range_to_vec(&self, start: usize, end: usize) -> Vec<u8> {
        match self {
            StrValue::Big(p) => p.range_to_vec(start, end),
            other => {
                other.with_bytes(|b| b.get(start..end.min(b.len())).unwrap_or_default().to_vec())
            }
        }
    }

    /// Before an edit that makes the string `len` bytes long: one that grows past
    /// SHARE_AT goes to pieces first.
    fn grow_to(&mut self, len: usize) {
        if len > SHARE_AT && !matches!(self, StrValue::Big(_)) {
            *self = StrValue::Big(Box::new(self.with_bytes(Pieces::from_slice)));
        }
    }

    /// APPEND; the new length.
    pub fn append(&mut self, data: &[u8]) -> usize {
        self.grow_to(self.len() + data.len());
        match &mut *self {
            StrValue::Big(p) => p.append(data),
            other => other.make_raw().extend_from_slice(data),
        }
        self.len()
    }

    /// SETRANGE: writes `data` at `offset`, padding with zero bytes up to it; the new
    /// length.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> usize {
        let end = offset + data.len();
        self.grow_to(end);
        match &mut *self {
            StrValue::Big(p) => p.write_at(offset, data),
            other => {
                let raw = other.make_raw();
                if raw.len() < end {
                    raw.resize(end, 0);
                }
                raw[offset..end].copy_from_slice(data);
            }
        }
        self.len()
    }

    /// Byte `i` for an edit (SETBIT), padding with zero bytes up to it.
    pub fn byte_mut(&mut self, i: usize) -> &mut u8 {
        self.grow_to(i + 1);
        match self {
            StrValue::Big(p) => p.byte_mut(i),
            other => {
                let raw = other.make_raw();
                if raw.len() <= i {
                    raw.resize(i + 1, 0);
                }
                &mut raw[i]
            }
        }
    }

    /// The value as one vector for edits that rewrite it (HyperLogLogs, never big). A big
    /// string is joined into one, as are values a snapshot still shares (one memcpy).
    pub fn make_raw(&mut self) -> &mut Vec<u8> {
        match self {
            StrValue::Raw(_) => {}
            StrValue::Heap(v) => *self = StrValue::Raw(Arc::new(std::mem::take(v).into_vec())),
            _ => *self = StrValue::Raw(Arc::new(self.to_vec())),
        }
        match self {
            StrValue::Raw(v) => Arc::make_mut(v),
            _ => unreachable!("converted above"),
        }
    }

    /// Whether a clone shares the bytes rather than copying them.
    pub fn clone_is_shallow(&self) -> bool {
        matches!(self, StrValue::Raw(_) | StrValue::Big(_))
    }

    /// The value as an integer, if it is one (INCR and friends).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            StrValue::Int(n) => Some(*n),
            _ => self.as_bytes().and_then(parse_canonical_i64),
        }
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            StrValue::Int(_) => "int",
            StrValue::Inline { .. } => "embstr",
            // Strings edited in place are "raw" in Redis whatever their length.
            StrValue::Heap(v) if v.len() <= EMBSTR_MAX => "embstr",
            StrValue::Heap(_) | StrValue::Raw(_) | StrValue::Big(_) => "raw",
        }
    }

    /// Heap bytes held beyond the entry itself.
    pub fn heap_size(&self) -> usize {
        match self {
            StrValue::Int(_) | StrValue::Inline { .. } => 0,
            StrValue::Heap(v) => v.len(),
            // The Arc's counts and the Vec's header, then its buffer.
            StrValue::Raw(v) => 40 + v.capacity(),
            StrValue::Big(p) => 32 + p.heap_size(),
        }
    }
}

/// Parses an i64 written exactly as Redis would print it (no `+`, no leading zeros).
pub fn parse_canonical_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || (digits[0] == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if neg {
        if v > (i64::MAX as u64) + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// A value of any type. Collections are boxed so that every entry stays 32 bytes of value
/// whatever its type; `match` arms in the commands crate make WRONGTYPE cases explicit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(StrValue),
    /// Inline: a small hash is its packed buffer alone (see `HashValue::Large`).
    Hash(HashValue),
    /// Inline, as hashes.
    List(ListValue),
    /// Inline, as hashes: a small integer set is its buffer alone.
    Set(SetValue),
    /// Inline, as hashes: a small sorted set is its packed buffer alone.
    ZSet(crate::zset::ZSetValue),
    Stream(Box<crate::stream::StreamValue>),
}

impl Value {
    /// A big hash's, set's or sorted set's split table, whose element lookups a pipeline
    /// prefetches; none for other values (small ones are their key's entry and one
    /// buffer, loaded with the entry).
    pub(crate) fn split_elements(&self) -> Option<&dyn crate::shards::PrefetchElements> {
        use crate::collections::{HashValue, LargeHash};
        match self {
            Value::Hash(HashValue::Large(large)) => match &**large {
                LargeHash::Shards(s) => Some(s),
                LargeHash::Table(_) => None,
            },
            Value::Set(set) => set.shards().map(|s| s as _),
            Value::ZSet(z) => z.split_scores().map(|s| s as _),
            _ => None,
        }
    }

    /// The name TYPE reports.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Stream(_) => "stream",
        }
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) => s.encoding(),
            Value::Hash(h) => h.encoding(),
            Value::List(l) => l.encoding(),
            Value::Set(s) => s.encoding(),
            Value::ZSet(z) => z.encoding(),
            Value::Stream(x) => x.encoding(),
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            Value::Str(s) => s.heap_size(),
            Value::Hash(h) => h.heap_size(),
            Value::List(l) => l.heap_size(),
            Value::Set(s) => s.heap_size(),
            Value::ZSet(z) => z.heap_size(),
            Value::Stream(x) => 96 + x.heap_size(),
        }
    }

    /// Bytes of a string's heap data, or elements of a collection.
    #[inline]
    pub fn size_hint(&self) -> usize {
        match self {
            Value::Str(s) => s.heap_size(),
            Value::Hash(h) => h.len(),
            Value::List(l) => l.len(),
            Value::Set(s) => s.len(),
            Value::ZSet(z) => z.len(),
            Value::Stream(x) => x.len(),
        }
    }

    /// Reads the value's first heap cache line (a string's first byte, a collection's
    /// header) and returns something derived from it. Called for a run of entries before
    /// they are serialized, it makes their cache misses independent loads that the CPU
    /// overlaps, instead of one miss at a time inside the serializer: a snapshot of 3M
    /// 100-byte strings took 1.16x as long without it.
    #[inline]
    pub fn touch(&self) -> usize {
        match self {
            Value::Str(StrValue::Heap(v)) => v.first().map_or(0, |&b| usize::from(b)),
            other => other.size_hint(),
        }
    }

    /// Whether a clone shares the value's data instead of copying it (long lists' nodes,
    /// huge hashes' and sets' shards, shared until changed): a snapshot copies such a value in
    /// microseconds whatever its size.
    pub fn clone_is_shallow(&self) -> bool {
        match self {
            Value::List(l) => matches!(l, crate::collections::ListValue::Deque(_)),
            Value::Hash(h) => h.is_sharded(),
            Value::Set(s) => s.shards().is_some(),
            Value::ZSet(z) => z.clone_is_shallow(),
            Value::Stream(x) => x.clone_is_shallow(),
            Value::Str(s) => s.clone_is_shallow(),
        }
    }

    pub fn as_str(&self) -> Option<&StrValue> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_str_mut(&mut self) -> Option<&mut StrValue> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Number of elements of a collection (1 for a string).
    pub fn elements(&self) -> usize {
        match self {
            Value::Str(_) => 1,
            Value::Hash(h) => h.len(),
            Value::List(l) => l.len(),
            Value::Set(s) => s.len(),
            Value::ZSet(z) => z.len(),
            Value::Stream(x) => x.len(),
        }
    }
}

/// One key's slot in a table: the value, its deadline and its access clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Value,
    /// Unix time in milliseconds at which the key expires; 0 when it never does.
    /// Private so that only the table changes it and keeps its volatile-key count true.
    pub(crate) expire_at: u64,
    /// Last access, in seconds of the keyspace's LRU clock (OBJECT IDLETIME).
    pub lru: u32,
}

impl Entry {
    pub fn new(value: Value) -> Entry {
        Entry {
            value,
            expire_at: 0,
            lru: 0,
        }
    }

    /// The deadline in Unix milliseconds; 0 when the key never expires.
    #[inline]
    pub fn expire_at(&self) -> u64 {
        self.expire_at
    }

    /// Builds an entry with a deadline (0 for none), e.g. for a table being filled.
    pub fn with_expiry(value: Value, expire_at: u64) -> Entry {
        Entry {
            value,
            expire_at,
            lru: 0,
        }
    }

    #[inline]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at != 0 && self.expire_at <= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_encoding_only_for_canonical_text() {
        assert_eq!(StrValue::from_bytes(b"123"), StrValue::Int(123));
        assert_eq!(StrValue::from_bytes(b"-5"), StrValue::Int(-5));
        assert_eq!(StrValue::from_bytes(b"0123").as_bytes(), Some(&b"0123"[..]));
        assert_eq!(StrValue::from_bytes(b"-0").as_bytes(), Some(&b"-0"[..]));
        assert_eq!(StrValue::from_bytes(b" 1").as_i64(), None);
        assert_eq!(std::mem::size_of::<StrValue>(), 24);
        assert_eq!(std::mem::size_of::<Value>(), 24);
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        assert_eq!(std::mem::size_of::<(crate::Key, Entry)>(), 64);
        let long = vec![b'x'; INLINE_STR + 1];
        assert!(matches!(StrValue::from_bytes(&long), StrValue::Heap(_)));
        assert!(matches!(
            StrValue::from_bytes(&long[1..]),
            StrValue::Inline { .. }
        ));
        let mut v = StrValue::from_bytes(b"abc");
        v.make_raw().extend_from_slice(b"def");
        assert_eq!(v.to_vec(), b"abcdef");
        assert_eq!(v.encoding(), "raw");
        assert_eq!(
            StrValue::from_bytes(b"99999999999999999999").encoding(),
            "embstr"
        );
        assert_eq!(StrValue::Int(-42).len(), 3);
        assert_eq!(StrValue::Int(7).to_vec(), b"7");
    }

    #[test]
    fn big_strings_are_shared_until_edited() {
        let text: Vec<u8> = (0..3 * SHARE_AT + 1).map(|i| (i % 251) as u8).collect();
        let mut live = StrValue::from_bytes(&text);
        assert!(live.clone_is_shallow());
        assert_eq!(live.encoding(), "raw");
        let held = live.clone();
        live.append(b"tail");
        *live.byte_mut(5) = 0xff;
        live.write_at(2 * SHARE_AT, b"mid");
        assert_eq!(held.to_vec(), text, "the clone keeps what it had");
        let mut want = text.clone();
        want.extend_from_slice(b"tail");
        want[5] = 0xff;
        want[2 * SHARE_AT..2 * SHARE_AT + 3].copy_from_slice(b"mid");
        assert_eq!(live.to_vec(), want);
        assert_eq!(live.len(), want.len());
        assert_eq!(live.byte(5), Some(0xff));
        assert_eq!(
            live.range_to_vec(SHARE_AT - 2, SHARE_AT + 2),
            want[SHARE_AT - 2..SHARE_AT + 2]
        );
        assert_eq!(live, StrValue::raw(want.clone()), "equal bytes");
        // A small string edited past SHARE_AT goes to pieces; below it stays one vector.
        let mut grown = StrValue::from_bytes(b"a small string, longer than inline");
        assert_eq!(grown.write_at(SHARE_AT, b"!"), SHARE_AT + 1);
        assert!(grown.pieces().is_some());
        assert_eq!(grown.byte(SHARE_AT - 1), Some(0));
        let small = StrValue::from_bytes(&text[..SHARE_AT]);
        assert!(!small.clone_is_shallow());
        assert!(small.pieces().is_none());
    }
}
