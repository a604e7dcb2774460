//! Encoding: [`encode`] for whole frames, [`ReplyBuf`] for a server writing replies
//! straight into a connection's output buffer without building frames first.

use bytes::{BufMut, BytesMut};

use crate::Frame;

fn put_int_line(out: &mut BytesMut, prefix: u8, n: i64) {
    let mut b = itoa::Buffer::new();
    let s = b.format(n);
    out.reserve(s.len() + 3);
    out.put_u8(prefix);
    out.put_slice(s.as_bytes());
    out.put_slice(b"\r\n");
}

fn put_bulk(out: &mut BytesMut, prefix: u8, data: &[u8]) {
    put_bulk_head(out, prefix, data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// A bulk reply's `$len` line, with room reserved for the `len` bytes and CRLF after it.
#[inline]
fn put_bulk_head(out: &mut BytesMut, prefix: u8, len: usize) {
    let mut b = itoa::Buffer::new();
    let s = b.format(len);
    out.reserve(s.len() + len + 5);
    out.put_u8(prefix);
    out.put_slice(s.as_bytes());
    out.put_slice(b"\r\n");
}

fn put_line(out: &mut BytesMut, prefix: u8, data: &[u8]) {
    out.reserve(data.len() + 3);
    out.put_u8(prefix);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Formats a double the way Redis' RESP3 replies do: `inf`, `-inf`, `nan`, otherwise the
/// shortest text that reads back to the same value.
pub fn write_double(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"nan");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"inf" } else { b"-inf" });
    } else {
        use std::io::Write;
        let _ = write!(out, "{v}");
    }
}

/// Appends the wire form of `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Simple(s) => put_line(out, b'+', s),
        Frame::Error(s) => put_line(out, b'-', s),
        Frame::Integer(n) => put_int_line(out, b':', *n),
        Frame::Bulk(b) => put_bulk(out, b'$', b),
        Frame::NullBulk => out.put_slice(b"$-1\r\n"),
        Frame::NullArray => out.put_slice(b"*-1\r\n"),
        Frame::Null => out.put_slice(b"_\r\n"),
        Frame::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Frame::Double(d) => {
            let mut s = Vec::with_capacity(24);
            write_double(&mut s, *d);
            put_line(out, b',', &s);
        }
        Frame::BigNumber(s) => put_line(out, b'(', s),
        Frame::BulkError(s) => put_bulk(out, b'!', s),
        Frame::Verbatim(fmt, s) => {
            let mut body = Vec::with_capacity(s.len() + 4);
            body.extend_from_slice(fmt);
            body.push(b':');
            body.extend_from_slice(s);
            put_bulk(out, b'=', &body);
        }
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            let prefix = match frame {
                Frame::Array(_) => b'*',
                Frame::Set(_) => b'~',
                _ => b'>',
            };
            put_int_line(out, prefix, items.len() as i64);
            for item in items {
                encode(item, out);
            }
        }
        Frame::Map(pairs) | Frame::Attribute(pairs) => {
            let prefix = if matches!(frame, Frame::Map(_)) {
                b'%'
            } else {
                b'|'
            };
            put_int_line(out, prefix, pairs.len() as i64);
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
    }
}

/// A connection's output buffer that knows which protocol the client speaks (HELLO 2 / 3),
/// so commands write one reply shape and get RESP2 or RESP3 on the wire.
///
/// It also counts what is written through its methods, so that a dispatcher can check that
/// a command wrote exactly one reply: a second reply would be read by a pipelining client
/// as the answer to its next request, silently, for the rest of the connection.
#[derive(Debug, Default)]
pub struct ReplyBuf {
    pub out: BytesMut,
    pub resp3: bool,
    /// Top-level values started through the methods.
    started: u64,
    /// Elements still owed to the aggregates that are open (all depths together: RESP is
    /// written in prefix order, so one count of owed elements is enough).
    owed: u64,
    /// The codes (first words) of the error replies written since the server last took
    /// them, for INFO errorstats: every error reply is counted once, where it is written.
    pub error_codes: Vec<Box<str>>,
}

/// The code an error reply is counted under in INFO errorstats (Redis' rule): the text
/// before a space in its first 32 bytes, else `ERR`.
pub fn error_code(msg: &str) -> &str {
    let head = &msg.as_bytes()[..msg.len().min(32)];
    match head.iter().position(|&b| b == b' ') {
        Some(end) => &msg[..end],
        None => "ERR",
    }
}

/// Where a [`ReplyBuf`]'s count of values stood; see [`ReplyBuf::values_since`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyMark {
    started: u64,
    owed: u64,
}

impl ReplyBuf {
    pub fn new(resp3: bool) -> Self {
        Self::with_capacity(resp3, 16 * 1024)
    }

    /// A buffer sized for one small message (a pub/sub message or a push that is
    /// frozen and handed to other connections keeps its whole allocation alive).
    pub fn with_capacity(resp3: bool, capacity: usize) -> Self {
        ReplyBuf {
            out: BytesMut::with_capacity(capacity),
            resp3,
            started: 0,
            owed: 0,
            error_codes: Vec::new(),
        }
    }

    /// Counts one value (a scalar, or an aggregate header owing `children` elements):
    /// it fills a slot of the innermost open aggregate, or starts a new top-level reply.
    #[inline]
    fn value(&mut self, children: u64) {
        if self.owed > 0 {
            self.owed -= 1;
        } else {
            self.started += 1;
        }
        self.owed += children;
    }

    /// The count of values now, to compare with later.
    pub fn mark(&self) -> ReplyMark {
        ReplyMark {
            started: self.started,
            owed: self.owed,
        }
    }

    /// How many complete values were written at the level that was current at `mark`
    /// since then: 1 for a command that wrote its one reply (inside EXEC's array too),
    /// 0 for one that wrote nothing (a blocked client), 2 for one that replied twice.
    /// `None` if an aggregate begun since `mark` still owes elements, or more values
    /// were written than the enclosing aggregate had room for.
    pub fn values_since(&self, mark: ReplyMark) -> Option<u64> {
        // Owing more than at `mark` means an aggregate begun since is unfinished (the
        // enclosing one can only owe less as it fills).
        if self.owed > mark.owed {
            return None;
        }
        // Each complete value at mark's level either started a top-level reply or filled
        // one owed slot, so `started - owed` grows by exactly one per value.
        let before = mark.started.wrapping_sub(mark.owed);
        let after = self.started.wrapping_sub(self.owed);
        Some(after.wrapping_sub(before))
    }

    /// Drops what was written since `mark`, taken when the buffer was `len` bytes long.
    pub fn rewind(&mut self, len: usize, mark: ReplyMark) {
        self.out.truncate(len);
        self.started = mark.started;
        self.owed = mark.owed;
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn ok(&mut self) {
        self.value(0);
        self.out.put_slice(b"+OK\r\n");
    }

    pub fn simple(&mut self, s: &str) {
        self.value(0);
        put_line(&mut self.out, b'+', s.as_bytes());
    }

    /// An error reply; `msg` is the full text, e.g. `ERR syntax error`. CR and LF are
    /// replaced by spaces, as Redis does, so an error can never break the framing.
    pub fn error(&mut self, msg: &str) {
        self.error_codes.push(error_code(msg).into());
        self.error_uncounted(msg);
    }

    /// An error reply that was counted already where it arose (a script passing on the
    /// error of a command it called).
    pub fn error_uncounted(&mut self, msg: &str) {
        self.value(0);
        self.out.reserve(msg.len() + 3);
        self.out.put_u8(b'-');
        for &b in msg.as_bytes() {
            self.out
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.out.put_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.value(0);
        match n {
            0 => self.out.put_slice(b":0\r\n"),
            1 => self.out.put_slice(b":1\r\n"),
            _ => put_int_line(&mut self.out, b':', n),
        }
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.value(0);
        put_bulk(&mut self.out, b'$', data);
    }

    /// A bulk reply of `len` bytes given in parts (a big string's pieces).
    pub fn bulk_parts<'a>(&mut self, len: usize, parts: impl Iterator<Item = &'a [u8]>) {
        self.value(0);
        put_bulk_head(&mut self.out, b'$', len);
        for part in parts {
            self.out.put_slice(part);
        }
        self.out.put_slice(b"\r\n");
    }

    /// A bulk reply holding the decimal form of `n` (e.g. GET of an integer value).
    pub fn bulk_int(&mut self, n: i64) {
        self.value(0);
        let mut b = itoa::Buffer::new();
        put_bulk(&mut self.out, b'$', b.format(n).as_bytes());
    }

    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        self.value(0);
        self.out
            .put_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    /// A missing aggregate: `*-1` in RESP2, `_` in RESP3.
    pub fn null_array(&mut self) {
        self.value(0);
        self.out
            .put_slice(if self.resp3 { b"_\r\n" } else { b"*-1\r\n" });
    }

    pub fn array(&mut self, len: usize) {
        self.value(len as u64);
        put_int_line(&mut self.out, b'*', len as i64);
    }

    /// A map of `pairs` entries: `%` in RESP3, a flat array of 2n in RESP2.
    pub fn map(&mut self, pairs: usize) {
        self.value(2 * pairs as u64);
        if self.resp3 {
            put_int_line(&mut self.out, b'%', pairs as i64);
        } else {
            put_int_line(&mut self.out, b'*', 2 * pairs as i64);
        }
    }

    /// A set: `~` in RESP3, an array in RESP2.
    pub fn set(&mut self, len: usize) {
        self.value(len as u64);
        let prefix = if self.resp3 { b'~' } else { b'*' };
        put_int_line(&mut self.out, prefix, len as i64);
    }

    /// An out-of-band push: `>` in RESP3, an array in RESP2 (pub/sub messages).
    pub fn push(&mut self, len: usize) {
        self.value(len as u64);
        let prefix = if self.resp3 { b'>' } else { b'*' };
        put_int_line(&mut self.out, prefix, len as i64);
    }

    /// A double: `,` in RESP3, a bulk string in RESP2.
    pub fn double(&mut self, v: f64) {
        self.value(0);
        let mut s = Vec::with_capacity(24);
        write_double(&mut s, v);
        if self.resp3 {
            put_line(&mut self.out, b',', &s);
        } else {
            put_bulk(&mut self.out, b'$', &s);
        }
    }

    /// A double whose text the caller formatted (Redis prints scores with `%.17g`,
    /// coordinates with 17 decimals): `,text` in RESP3, a bulk string in RESP2.
    pub fn double_text(&mut self, text: &[u8]) {
        self.value(0);
        if self.resp3 {
            put_line(&mut self.out, b',', text);
        } else {
            put_bulk(&mut self.out, b'$', text);
        }
    }

    /// A boolean: `#t`/`#f` in RESP3, `:1`/`:0` in RESP2.
    pub fn boolean(&mut self, v: bool) {
        self.value(0);
        match (self.resp3, v) {
            (true, true) => self.out.put_slice(b"#t\r\n"),
            (true, false) => self.out.put_slice(b"#f\r\n"),
            (false, true) => self.out.put_slice(b":1\r\n"),
            (false, false) => self.out.put_slice(b":0\r\n"),
        }
    }

    /// Verbatim text (`=` with `txt:` in RESP3, a bulk string in RESP2), as INFO replies.
    pub fn verbatim(&mut self, text: &[u8]) {
        self.value(0);
        if self.resp3 {
            let mut body = Vec::with_capacity(text.len() + 4);
            body.extend_from_slice(b"txt:");
            body.extend_from_slice(text);
            put_bulk(&mut self.out, b'=', &body);
        } else {
            put_bulk(&mut self.out, b'$', text);
        }
    }

    pub fn frame(&mut self, frame: &Frame) {
        self.value(0);
        encode(frame, &mut self.out);
    }

    /// Raw, already-encoded bytes. Not counted as a value: the caller answers for them.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.out.put_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_shapes() {
        let mut r2 = ReplyBuf::new(false);
        r2.null();
        r2.map(1);
        r2.double(1.5);
        r2.boolean(true);
        assert_eq!(&r2.out[..], b"$-1\r\n*2\r\n$3\r\n1.5\r\n:1\r\n");
        let mut r3 = ReplyBuf::new(true);
        r3.null();
        r3.map(1);
        r3.double(f64::INFINITY);
        r3.boolean(false);
        assert_eq!(&r3.out[..], b"_\r\n%1\r\n,inf\r\n#f\r\n");
    }

    #[test]
    fn values_are_counted_at_the_level_of_the_mark() {
        let mut r = ReplyBuf::new(false);
        let m = r.mark();
        r.array(2);
        r.map(1);
        r.bulk(b"k");
        r.int(1);
        r.null();
        assert_eq!(r.values_since(m), Some(1));
        let m = r.mark();
        r.error("ERR one");
        r.error("ERR two");
        assert_eq!(r.values_since(m), Some(2));
        let m = r.mark();
        assert_eq!(r.values_since(m), Some(0));
        r.array(3);
        r.int(1);
        assert_eq!(
            r.values_since(m),
            None,
            "an unfinished array is not a reply"
        );
    }

    #[test]
    fn values_inside_an_open_aggregate() {
        // EXEC's array: each queued command must fill exactly one slot.
        let mut r = ReplyBuf::new(true);
        r.array(3);
        let m = r.mark();
        r.set(2);
        r.bulk(b"a");
        r.bulk(b"b");
        assert_eq!(r.values_since(m), Some(1));
        let m = r.mark();
        r.ok();
        r.ok();
        assert_eq!(r.values_since(m), Some(2));
        // The array is full: a third value starts a new top-level reply.
        let m = r.mark();
        r.ok();
        assert_eq!(r.values_since(m), Some(1));
    }

    #[test]
    fn error_strips_newlines() {
        let mut r = ReplyBuf::new(false);
        r.error("ERR a\r\nb");
        assert_eq!(&r.out[..], b"-ERR a  b\r\n");
    }
}
