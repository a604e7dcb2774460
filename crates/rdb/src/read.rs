//! A streaming RDB reader over a byte slice (a memory-mapped file or a DUMP payload).

use crate::{crc64::crc64, lzf, packed, Entry, RdbError, Value};

pub(crate) const OP_SLOT_INFO: u8 = 0xf4;
/// A function library's code (Redis 7.0's RDB_OPCODE_FUNCTION2).
pub(crate) const OP_FUNCTION2: u8 = 0xf5;
/// Function libraries as Redis 7.0's release candidates wrote them.
pub(crate) const OP_FUNCTION_PRE_GA: u8 = 0xf6;
pub(crate) const OP_MODULE_AUX: u8 = 0xf7;
pub(crate) const OP_IDLE: u8 = 0xf8;
pub(crate) const OP_FREQ: u8 = 0xf9;
pub(crate) const OP_AUX: u8 = 0xfa;
pub(crate) const OP_RESIZEDB: u8 = 0xfb;
pub(crate) const OP_EXPIRETIME_MS: u8 = 0xfc;
pub(crate) const OP_EXPIRETIME: u8 = 0xfd;
pub(crate) const OP_SELECTDB: u8 = 0xfe;
pub(crate) const OP_EOF: u8 = 0xff;

pub(crate) const TYPE_STRING: u8 = 0;
pub(crate) const TYPE_LIST: u8 = 1;
pub(crate) const TYPE_SET: u8 = 2;
pub(crate) const TYPE_ZSET: u8 = 3;
pub(crate) const TYPE_HASH: u8 = 4;
pub(crate) const TYPE_ZSET_2: u8 = 5;

type Pair = (Vec<u8>, Vec<u8>);

/// Oldest and newest RDB versions read (Redis 2.x wrote 6; Redis 7.4 writes 12).
pub const MIN_VERSION: u32 = 1;
pub const MAX_VERSION: u32 = 12;

/// What the reader yields, in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Aux(Vec<u8>, Vec<u8>),
    /// Sizes announced for the current database (a hint for pre-sizing).
    ResizeDb {
        db: usize,
        keys: u64,
        expires: u64,
    },
    Entry(Entry),
    /// A function library's code (`#!lua name=...` and the rest), as FUNCTION LOAD
    /// took it.
    Function(Vec<u8>),
}

/// Where a reader's bytes come from: a slice in memory ([`Cursor`]: a mapped file, a
/// DUMP payload) or a connection read as the bytes arrive ([`PulledInput`]: a
/// replica's full sync, parsed while the master is still sending).
pub trait Input {
    /// The next `n` bytes, consumed (an error names the offset and what was missing).
    fn bytes(&mut self, n: usize) -> Result<&[u8], RdbError>;
    /// Bytes consumed so far.
    fn pos(&self) -> usize;
    /// Bytes known to remain, when the input knows where it ends.
    fn left(&self) -> Option<u64>;
    /// The CRC-64 of every byte consumed so far (the RDB trailer's checksum).
    fn checksum(&mut self) -> u64;
}

/// The element counts an input without a known end may announce are trusted only this
/// far ahead of the bytes: a hostile count must not reserve memory before the elements
/// arrive.
const UNBOUNDED_RESERVE: usize = 1 << 16;

/// The typed reads of RDB's encodings over any [`Input`].
pub(crate) trait InputExt: Input {
    fn err(&self, msg: impl Into<String>) -> RdbError {
        RdbError {
            offset: self.pos(),
            message: msg.into(),
        }
    }

    fn u8(&mut self) -> Result<u8, RdbError> {
        Ok(self.bytes(1)?[0])
    }

    fn le_u64(&mut self, n: usize) -> Result<u64, RdbError> {
        Ok(packed::le(self.bytes(n)?))
    }

    /// A length, or a special string encoding (`Err(Ok(kind))`).
    fn length_or_special(&mut self) -> Result<Result<u64, u8>, RdbError> {
        let first = self.u8()?;
        Ok(match first >> 6 {
            0 => Ok(u64::from(first & 0x3f)),
            1 => Ok((u64::from(first & 0x3f) << 8) | u64::from(self.u8()?)),
            2 => match first {
                0x80 => Ok(u64::from(u32::from_be_bytes(
                    self.bytes(4)?.try_into().unwrap_or_default(),
                ))),
                0x81 => Ok(u64::from_be_bytes(
                    self.bytes(8)?.try_into().unwrap_or_default(),
                )),
                _ => return Err(self.err(format!("unknown length encoding 0x{first:02x}"))),
            },
            _ => Err(first & 0x3f),
        })
    }

    fn length(&mut self) -> Result<u64, RdbError> {
        match self.length_or_special()? {
            Ok(n) => Ok(n),
            Err(k) => Err(self.err(format!("string encoding {k} where a length was expected"))),
        }
    }

    /// A count of elements, bounded by what the remaining bytes could hold.
    fn count(&mut self, per_item: usize) -> Result<usize, RdbError> {
        let n = self.length()?;
        if let Some(left) = self.left() {
            if n > left / per_item.max(1) as u64 + 1 {
                return Err(self.err(format!("element count {n} exceeds the data left")));
            }
        }
        usize::try_from(n).map_err(|_| self.err(format!("element count {n} too large")))
    }

    /// Room to reserve for `n` elements counted by [`InputExt::count`].
    fn reserve(&self, n: usize) -> usize {
        if self.left().is_some() {
            n
        } else {
            n.min(UNBOUNDED_RESERVE)
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        match self.length_or_special()? {
            Ok(n) => {
                let n = usize::try_from(n).map_err(|_| self.err("string too long"))?;
                Ok(self.bytes(n)?.to_vec())
            }
            Err(0) => Ok((self.u8()? as i8).to_string().into_bytes()),
            Err(1) => Ok((self.le_u64(2)? as u16 as i16).to_string().into_bytes()),
            Err(2) => Ok((self.le_u64(4)? as u32 as i32).to_string().into_bytes()),
            Err(3) => {
                let clen = self.length()? as usize;
                let len = self.length()? as usize;
                let at = self.pos();
                if len > 1 << 32 {
                    return Err(self.err("LZF string longer than 4 GB"));
                }
                let packed = self.bytes(clen)?;
                lzf::decompress(packed, len).ok_or(RdbError {
                    offset: at,
                    message: "corrupt LZF-compressed string".into(),
                })
            }
            Err(k) => Err(self.err(format!("unknown string encoding {k}"))),
        }
    }

    fn float_text(&mut self) -> Result<f64, RdbError> {
        let n = self.u8()?;
        match n {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            _ => {
                let at = self.pos();
                let s = self.bytes(usize::from(n))?;
                std::str::from_utf8(s)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(RdbError {
                        offset: at,
                        message: "bad score".into(),
                    })
            }
        }
    }

    fn float_binary(&mut self) -> Result<f64, RdbError> {
        Ok(f64::from_bits(self.le_u64(8)?))
    }
}

impl<I: Input + ?Sized> InputExt for I {}

/// Bytes in memory.
pub struct Cursor<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data, pos: 0 }
    }
}

impl Input for Cursor<'_> {
    fn bytes(&mut self, n: usize) -> Result<&[u8], RdbError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(e) => {
                let s = &self.data[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => Err(self.err(format!(
                "unexpected end of data reading {n} bytes ({} left)",
                self.data.len() - self.pos.min(self.data.len())
            ))),
        }
    }

    fn pos(&self) -> usize {
        self.pos
    }

    fn left(&self) -> Option<u64> {
        Some(self.data.len().saturating_sub(self.pos) as u64)
    }

    fn checksum(&mut self) -> u64 {
        crc64(0, &self.data[..self.pos.min(self.data.len())])
    }
}

/// Bytes read from a connection as the parser needs them: `pull` appends what arrived
/// (returning 0 at the end of the connection). Only the unparsed part of the current item
/// is kept, so an RDB of any size passes through a small buffer; the checksum runs over
/// the bytes as they are dropped. What was read beyond the RDB's end (the EOF mark of a
/// diskless transfer, the stream that follows) is handed back by [`PulledInput::rest`].
pub struct PulledInput<F> {
    buf: Vec<u8>,
    /// The next unread byte of `buf`.
    at: usize,
    /// The input offset of `buf[0]`.
    base: usize,
    /// The CRC-64 of the input before `buf[crc_from]`.
    crc: u64,
    crc_from: usize,
    /// The input's length when announced (a `$<len>` payload).
    limit: Option<u64>,
    pull: F,
}

impl<F: FnMut(&mut Vec<u8>) -> std::io::Result<usize>> PulledInput<F> {
    /// `first`: bytes already read (they come before anything `pull` returns).
    pub fn new(first: Vec<u8>, limit: Option<u64>, pull: F) -> PulledInput<F> {
        PulledInput {
            buf: first,
            at: 0,
            base: 0,
            crc: 0,
            crc_from: 0,
            limit,
            pull,
        }
    }

    /// Bytes received so far, parsed or not (progress reporting).
    pub fn received(&self) -> usize {
        self.base + self.buf.len()
    }

    /// The bytes read past what was parsed.
    pub fn rest(self) -> Vec<u8> {
        self.buf[self.at..].to_vec()
    }

    /// Drops the parsed bytes, folding them into the checksum.
    fn compact(&mut self) {
        self.crc = crc64(self.crc, &self.buf[self.crc_from..self.at]);
        self.buf.drain(..self.at);
        self.base += self.at;
        self.at = 0;
        self.crc_from = 0;
    }
}

impl<F: FnMut(&mut Vec<u8>) -> std::io::Result<usize>> Input for PulledInput<F> {
    fn bytes(&mut self, n: usize) -> Result<&[u8], RdbError> {
        if let Some(left) = self.left() {
            if n as u64 > left {
                return Err(self.err(format!(
                    "unexpected end of data reading {n} bytes ({left} left)"
                )));
            }
        }
        if self.buf.len() - self.at < n && self.at > 0 {
            self.compact();
        }
        while self.buf.len() - self.at < n {
            match (self.pull)(&mut self.buf) {
                Ok(0) => {
                    return Err(self.err(format!(
                        "unexpected end of data reading {n} bytes ({} left): the connection closed",
                        self.buf.len() - self.at
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(self.err(format!("reading {n} bytes: {e}"))),
            }
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn pos(&self) -> usize {
        self.base + self.at
    }

    fn left(&self) -> Option<u64> {
        self.limit
            .map(|limit| limit.saturating_sub(self.pos() as u64))
    }

    fn checksum(&mut self) -> u64 {
        self.crc = crc64(self.crc, &self.buf[self.crc_from..self.at]);
        self.crc_from = self.at;
        self.crc
    }
}

fn type_name(t: u8) -> &'static str {
    match t {
        6 | 7 => "module value",
        22..=25 => "hash with field expiration",
        _ => "unknown type",
    }
}

/// Reads the value of RDB type `t` at the cursor.
pub(crate) fn read_value<I: Input + ?Sized>(
    c: &mut I,
    t: u8,
    key: &[u8],
) -> Result<Value, RdbError> {
    let start = c.pos();
    let blob = |c: &mut I, what: &str| -> Result<(usize, Vec<u8>), RdbError> {
        let at = c.pos();
        let b = c.string()?;
        if b.is_empty() {
            return Err(RdbError {
                offset: at,
                message: format!("empty {what}"),
            });
        }
        Ok((at, b))
    };
    let bad = |at: usize, what: &str| RdbError {
        offset: at,
        message: format!("corrupt {what}"),
    };
    let pairs = |items: Vec<Vec<u8>>, at: usize, what: &str| -> Result<Vec<Pair>, RdbError> {
        if !items.len().is_multiple_of(2) {
            return Err(bad(at, what));
        }
        let mut it = items.into_iter();
        let mut out = Vec::new();
        while let (Some(a), Some(b)) = (it.next(), it.next()) {
            out.push((a, b));
        }
        Ok(out)
    };
    let scored =
        |pairs: Vec<(Vec<u8>, Vec<u8>)>, at: usize| -> Result<Vec<(Vec<u8>, f64)>, RdbError> {
            pairs
                .into_iter()
                .map(|(m, s)| {
                    let score = std::str::from_utf8(&s)
                        .ok()
                        .and_then(|s| s.parse::<f64>().ok())
                        .ok_or_else(|| bad(at, "zset score"))?;
                    Ok((m, score))
                })
                .collect()
        };
    Ok(match t {
        TYPE_STRING => Value::String(c.string()?),
        TYPE_LIST => {
            let n = c.count(1)?;
            Value::List((0..n).map(|_| c.string()).collect::<Result<_, _>>()?)
        }
        TYPE_SET => {
            let n = c.count(1)?;
            Value::Set((0..n).map(|_| c.string()).collect::<Result<_, _>>()?)
        }
        TYPE_ZSET | TYPE_ZSET_2 => {
            let n = c.count(2)?;
            let mut v = Vec::with_capacity(c.reserve(n));
            for _ in 0..n {
                let m = c.string()?;
                let s = if t == TYPE_ZSET {
                    c.float_text()?
                } else {
                    c.float_binary()?
                };
                if s.is_nan() {
                    return Err(c.err("zset score is NaN"));
                }
                v.push((m, s));
            }
            Value::ZSet(v)
        }
        TYPE_HASH => {
            let n = c.count(2)?;
            let mut v = Vec::with_capacity(c.reserve(n));
            for _ in 0..n {
                v.push((c.string()?, c.string()?));
            }
            Value::Hash(v)
        }
        9 => {
            let (at, b) = blob(c, "zipmap")?;
            Value::Hash(packed::zipmap(&b).ok_or_else(|| bad(at, "zipmap"))?)
        }
        10 => {
            let (at, b) = blob(c, "ziplist")?;
            Value::List(packed::ziplist(&b).ok_or_else(|| bad(at, "ziplist"))?)
        }
        11 => {
            let (at, b) = blob(c, "intset")?;
            Value::Set(packed::intset(&b).ok_or_else(|| bad(at, "intset"))?)
        }
        12 | 17 => {
            let (at, b) = blob(c, "zset ziplist")?;
            let items = if t == 12 {
                packed::ziplist(&b)
            } else {
                packed::listpack(&b)
            };
            let items = items.ok_or_else(|| bad(at, "zset listpack"))?;
            Value::ZSet(scored(pairs(items, at, "zset listpack")?, at)?)
        }
        13 | 16 => {
            let (at, b) = blob(c, "hash ziplist")?;
            let items = if t == 13 {
                packed::ziplist(&b)
            } else {
                packed::listpack(&b)
            };
            let items = items.ok_or_else(|| bad(at, "hash listpack"))?;
            Value::Hash(pairs(items, at, "hash listpack")?)
        }
        14 | 18 => {
            let nodes = c.count(1)?;
            let mut v = Vec::new();
            for _ in 0..nodes {
                let container = if t == 18 { c.length()? } else { 2 };
                let (at, b) = if container == 1 {
                    (c.pos(), c.string()?)
                } else {
                    blob(c, "quicklist node")?
                };
                match container {
                    1 => v.push(b),
                    2 => {
                        let items = if t == 14 {
                            packed::ziplist(&b)
                        } else {
                            packed::listpack(&b)
                        };
                        v.extend(items.ok_or_else(|| bad(at, "quicklist node"))?);
                    }
                    other => return Err(bad(at, &format!("quicklist container {other}"))),
                }
            }
            Value::List(v)
        }
        crate::stream::TYPE_STREAM
        | crate::stream::TYPE_STREAM_2
        | crate::stream::TYPE_STREAM_3 => {
            Value::Stream(Box::new(crate::stream::read_stream(c, t)?))
        }
        20 => {
            let (at, b) = blob(c, "set listpack")?;
            Value::Set(packed::listpack(&b).ok_or_else(|| bad(at, "set listpack"))?)
        }
        other => {
            return Err(RdbError {
                offset: start - 1,
                message: format!(
                    "cannot load {} (RDB type {other}) of key '{}': Carmine has no such type yet",
                    type_name(other),
                    String::from_utf8_lossy(&key[..key.len().min(128)])
                ),
            })
        }
    })
}

/// Streams the items of an RDB file, from memory ([`Reader::new`]) or from any
/// [`Input`] ([`Reader::from_input`]).
pub struct Reader<I> {
    c: I,
    version: u32,
    db: usize,
    done: bool,
}

impl<'a> Reader<Cursor<'a>> {
    /// Checks the `REDIS0xxx` header.
    pub fn new(data: &'a [u8]) -> Result<Reader<Cursor<'a>>, RdbError> {
        Reader::from_input(Cursor::new(data))
    }
}

impl<I: Input> Reader<I> {
    /// Reads and checks the `REDIS0xxx` header.
    pub fn from_input(mut c: I) -> Result<Reader<I>, RdbError> {
        let mut head = [0u8; 9];
        head.copy_from_slice(c.bytes(9).map_err(|e| RdbError {
            offset: 0,
            message: format!("too short for an RDB header ({})", e.message),
        })?);
        if &head[..5] != b"REDIS" {
            return Err(RdbError {
                offset: 0,
                message: "wrong signature: not an RDB file".into(),
            });
        }
        let version = std::str::from_utf8(&head[5..])
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|v| (MIN_VERSION..=MAX_VERSION).contains(v))
            .ok_or(RdbError {
                offset: 5,
                message: format!(
                    "unsupported RDB version '{}'",
                    String::from_utf8_lossy(&head[5..])
                ),
            })?;
        Ok(Reader {
            c,
            version,
            db: 0,
            done: false,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Bytes consumed so far (progress reporting).
    pub fn offset(&self) -> usize {
        self.c.pos()
    }

    /// Bytes known to remain in the input, when it knows where it ends.
    pub fn left(&self) -> Option<u64> {
        self.c.left()
    }

    /// The input, e.g. to take back what was read past the RDB's end.
    pub fn into_input(self) -> I {
        self.c
    }

    /// The next item; None after EOF (whose checksum, when not zero, was verified).
    pub fn next_item(&mut self) -> Result<Option<Item>, RdbError> {
        if self.done {
            return Ok(None);
        }
        let mut expire_ms = None;
        let mut idle = None;
        let mut freq = None;
        loop {
            let at = self.c.pos();
            let op = self.c.u8()?;
            match op {
                OP_EOF => {
                    self.done = true;
                    if self.version >= 5 {
                        let end = self.c.pos();
                        let computed = self.c.checksum();
                        let stored = self.c.le_u64(8)?;
                        if stored != 0 && stored != computed {
                            return Err(RdbError {
                                offset: end,
                                // "RDB CRC error" is Redis' wording, which tools
                                // and Redis' own tests look for in the log.
                                message: format!(
                                    "RDB CRC error: wrong RDB checksum expected: ({stored:x}) \
                                     got ({computed:x}), the file is damaged"
                                ),
                            });
                        }
                    }
                    return Ok(None);
                }
                OP_SELECTDB => {
                    self.db = usize::try_from(self.c.length()?)
                        .map_err(|_| self.c.err("database index too large"))?;
                }
                OP_RESIZEDB => {
                    let keys = self.c.length()?;
                    let expires = self.c.length()?;
                    return Ok(Some(Item::ResizeDb {
                        db: self.db,
                        keys,
                        expires,
                    }));
                }
                OP_AUX => {
                    let k = self.c.string()?;
                    let v = self.c.string()?;
                    return Ok(Some(Item::Aux(k, v)));
                }
                OP_EXPIRETIME_MS => expire_ms = Some(self.c.le_u64(8)?),
                OP_EXPIRETIME => expire_ms = Some(self.c.le_u64(4)?.saturating_mul(1000)),
                OP_IDLE => idle = Some(self.c.length()?),
                OP_FREQ => freq = Some(self.c.u8()?),
                OP_SLOT_INFO => {
                    for _ in 0..3 {
                        self.c.length()?;
                    }
                }
                OP_MODULE_AUX => {
                    return Err(RdbError {
                        offset: at,
                        message: "cannot load module auxiliary data: Carmine has no modules".into(),
                    })
                }
                OP_FUNCTION2 => return Ok(Some(Item::Function(self.c.string()?))),
                OP_FUNCTION_PRE_GA => {
                    return Err(RdbError {
                        offset: at,
                        message: "cannot load function libraries in the format of Redis 7.0's release candidates".into(),
                    })
                }
                t => {
                    let key = self.c.string()?;
                    let value = read_value(&mut self.c, t, &key)?;
                    return Ok(Some(Item::Entry(Entry {
                        db: self.db,
                        key,
                        value,
                        expire_ms,
                        idle,
                        freq,
                    })));
                }
            }
        }
    }
}
