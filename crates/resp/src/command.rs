//! The server-side request decoder: multibulk commands and inline commands.

use bytes::{Buf, Bytes, BytesMut};

use crate::{find_crlf, parse_i64, split_inline_args, Limits, ProtocolError};

/// One decoded command: a frozen buffer and the (offset, length) of each argument in it.
///
/// Cloning is cheap (a reference count and the offsets); [`Args::bytes`] hands out a
/// zero-copy [`Bytes`] of one argument for values that must outlive the request.
#[derive(Clone, Debug, Default)]
pub struct Args {
    buf: Bytes,
    ranges: Vec<(usize, usize)>,
}

/// Builds [`Args`] one argument at a time into one buffer (a script's `redis.call`,
/// whose arguments come one by one from Lua).
#[derive(Default)]
pub struct ArgsBuilder {
    buf: BytesMut,
    ranges: Vec<(usize, usize)>,
}

impl ArgsBuilder {
    pub fn with_capacity(args: usize, bytes: usize) -> ArgsBuilder {
        ArgsBuilder {
            buf: BytesMut::with_capacity(bytes),
            ranges: Vec::with_capacity(args),
        }
    }

    pub fn push(&mut self, arg: &[u8]) {
        self.ranges.push((self.buf.len(), arg.len()));
        self.buf.extend_from_slice(arg);
    }

    pub fn finish(self) -> Args {
        Args {
            buf: self.buf.freeze(),
            ranges: self.ranges,
        }
    }

    /// Moves what was pushed into `args` and leaves the builder empty with its buffers
    /// kept, so a builder and an [`Args`] used turn about allocate nothing once warm.
    /// [`Args::clear`] the previous arguments before pushing the next ones: the byte
    /// buffer is taken back only once nothing else holds it.
    pub fn finish_into(&mut self, args: &mut Args) {
        std::mem::swap(&mut self.ranges, &mut args.ranges);
        self.ranges.clear();
        args.buf = self.buf.split().freeze();
    }
}

impl Args {
    /// Builds arguments from slices (tests, queued commands, the embedding API).
    pub fn from_slices<A: AsRef<[u8]>>(parts: &[A]) -> Args {
        let total: usize = parts.iter().map(|p| p.as_ref().len()).sum();
        let mut buf = BytesMut::with_capacity(total);
        let mut ranges = Vec::with_capacity(parts.len());
        for p in parts {
            ranges.push((buf.len(), p.as_ref().len()));
            buf.extend_from_slice(p.as_ref());
        }
        Args {
            buf: buf.freeze(),
            ranges,
        }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// No arguments, and no hold on the buffer they were in.
    pub fn clear(&mut self) {
        self.buf = Bytes::new();
        self.ranges.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.ranges
            .get(i)
            .map(|&(off, len)| &self.buf[off..off + len])
    }

    /// A zero-copy owned handle on argument `i` (empty if out of range).
    pub fn bytes(&self, i: usize) -> Bytes {
        match self.ranges.get(i) {
            Some(&(off, len)) => self.buf.slice(off..off + len),
            None => Bytes::new(),
        }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.ranges
            .iter()
            .map(move |&(off, len)| &self.buf[off..off + len])
    }

    /// Total payload bytes of all arguments.
    pub fn payload_len(&self) -> usize {
        self.ranges.iter().map(|r| r.1).sum()
    }
}

impl std::ops::Index<usize> for Args {
    type Output = [u8];
    fn index(&self, i: usize) -> &[u8] {
        let (off, len) = self.ranges[i];
        &self.buf[off..off + len]
    }
}

/// Progress through a multibulk that has not fully arrived yet.
#[derive(Debug)]
struct Partial {
    remaining: u64,
    pos: usize,
    pending_bulk: Option<usize>,
}

/// Streaming decoder for client requests. Keep one per connection: it remembers how far
/// into a partially received command it has parsed, so a command split at any byte (or a
/// 100 MB value arriving in 16 KB reads) is parsed in linear time.
#[derive(Debug)]
pub struct CommandDecoder {
    limits: Limits,
    authenticated: bool,
    partial: Option<Partial>,
    ranges: Vec<(usize, usize)>,
}

/// Bulks at least this large get their buffer space reserved up front, so a big value is
/// read into place instead of being copied on each buffer growth.
const BIG_ARG: usize = 32 * 1024;
/// Before AUTH Redis refuses requests larger than these (see `processMultibulkBuffer`).
const UNAUTH_MAX_MULTIBULK: i64 = 10;
const UNAUTH_MAX_BULK: i64 = 16384;

impl CommandDecoder {
    pub fn new(limits: Limits) -> Self {
        CommandDecoder {
            limits,
            authenticated: true,
            partial: None,
            ranges: Vec::new(),
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// When false, the tiny pre-AUTH request limits apply (as Redis with a password set).
    pub fn set_authenticated(&mut self, yes: bool) {
        self.authenticated = yes;
    }

    /// True while a command has been partly received.
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes the next complete command from `buf` into `args`, consuming its bytes.
    /// `Ok(false)`: more input is needed. Empty commands (`*0`, blank lines) are skipped.
    pub fn decode(&mut self, buf: &mut BytesMut, args: &mut Args) -> Result<bool, ProtocolError> {
        loop {
            if self.partial.is_none() {
                if buf.is_empty() {
                    return Ok(false);
                }
                if buf[0] != b'*' {
                    match self.decode_inline(buf, args)? {
                        Some(true) => return Ok(true),
                        Some(false) => continue,
                        None => return Ok(false),
                    }
                }
                let Some(crlf) = find_crlf(buf, 1) else {
                    if buf.len() > self.limits.max_inline_len {
                        return Err(ProtocolError::TooBigMultibulkCount);
                    }
                    return Ok(false);
                };
                let count = match parse_i64(&buf[1..crlf]) {
                    Some(n) if n <= self.limits.max_multibulk_len as i64 => n,
                    _ => return Err(ProtocolError::InvalidMultibulkLength),
                };
                if !self.authenticated && count > UNAUTH_MAX_MULTIBULK {
                    return Err(ProtocolError::UnauthenticatedMultibulkLength);
                }
                if count <= 0 {
                    buf.advance(crlf + 2);
                    continue;
                }
                self.ranges.clear();
                self.ranges.reserve((count as usize).min(1024));
                self.partial = Some(Partial {
                    remaining: count as u64,
                    pos: crlf + 2,
                    pending_bulk: None,
                });
            }
            return self.continue_multibulk(buf, args);
        }
    }

    fn continue_multibulk(
        &mut self,
        buf: &mut BytesMut,
        args: &mut Args,
    ) -> Result<bool, ProtocolError> {
        let Some(p) = self.partial.as_mut() else {
            return Ok(false);
        };
        while p.remaining > 0 {
            let len = match p.pending_bulk {
                Some(len) => len,
                None => {
                    if p.pos >= buf.len() {
                        return Ok(false);
                    }
                    if buf[p.pos] != b'$' {
                        return Err(ProtocolError::ExpectedDollar(buf[p.pos]));
                    }
                    let Some(crlf) = find_crlf(buf, p.pos + 1) else {
                        if buf.len() - p.pos > self.limits.max_inline_len {
                            return Err(ProtocolError::TooBigBulkCount);
                        }
                        return Ok(false);
                    };
                    let len = match parse_i64(&buf[p.pos + 1..crlf]) {
                        Some(n) if n >= 0 && (n as u64) <= self.limits.max_bulk_len => n,
                        _ => return Err(ProtocolError::InvalidBulkLength),
                    };
                    if !self.authenticated && len > UNAUTH_MAX_BULK {
                        return Err(ProtocolError::UnauthenticatedBulkLength);
                    }
                    let len = len as usize;
                    p.pos = crlf + 2;
                    p.pending_bulk = Some(len);
                    if len >= BIG_ARG {
                        let want = p.pos + len + 2;
                        if want > buf.len() {
                            buf.reserve(want - buf.len());
                        }
                    }
                    len
                }
            };
            // Redis does not check the two bytes after a bulk; neither do we.
            let end = p.pos + len + 2;
            if buf.len() < end {
                return Ok(false);
            }
            self.ranges.push((p.pos, len));
            p.pos = end;
            p.pending_bulk = None;
            p.remaining -= 1;
        }
        let consumed = p.pos;
        self.partial = None;
        args.buf = buf.split_to(consumed).freeze();
        std::mem::swap(&mut args.ranges, &mut self.ranges);
        self.ranges.clear();
        Ok(true)
    }

    /// `Some(true)`: a command; `Some(false)`: a blank line was skipped; `None`: need more.
    fn decode_inline(
        &mut self,
        buf: &mut BytesMut,
        args: &mut Args,
    ) -> Result<Option<bool>, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(None);
        };
        if nl > self.limits.max_inline_len {
            return Err(ProtocolError::TooBigInline);
        }
        let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let parts = split_inline_args(&buf[..line_end])?;
        buf.advance(nl + 1);
        if parts.is_empty() {
            return Ok(Some(false));
        }
        *args = Args::from_slices(&parts);
        Ok(Some(true))
    }
}

/// Commands with more arguments than this end a [`peek_first_keys`] walk: skipping them
/// would cost more than a prefetch can save.
const PEEK_MAX_ARGS: i64 = 64;

/// Walks up to `max` complete multibulk commands at the start of `buf` without consuming
/// anything and hands each one's first key to `each` (see [`first_key`]), with the
/// element it names inside that key's value if it names one (see [`first_element`]), so
/// the caller can prefetch what running them will read. Stops at the first command that is inline,
/// incomplete, malformed or long; [`CommandDecoder::decode`] judges those. `buf` must
/// start at a command boundary.
pub fn peek_first_keys<'b>(
    buf: &'b [u8],
    max: usize,
    mut each: impl FnMut(&'b [u8], Option<&'b [u8]>),
) {
    let mut pos = 0;
    for _ in 0..max {
        if buf.get(pos) != Some(&b'*') {
            return;
        }
        let Some(crlf) = find_crlf(buf, pos + 1) else {
            return;
        };
        let count = match parse_i64(&buf[pos + 1..crlf]) {
            Some(n) if (1..=PEEK_MAX_ARGS).contains(&n) => n,
            _ => return,
        };
        pos = crlf + 2;
        let mut first_args: [&[u8]; 4] = [&[]; 4];
        for i in 0..count {
            if buf.get(pos) != Some(&b'$') {
                return;
            }
            let Some(crlf) = find_crlf(buf, pos + 1) else {
                return;
            };
            let Some(len) = parse_i64(&buf[pos + 1..crlf]).and_then(|n| usize::try_from(n).ok())
            else {
                return;
            };
            let start = crlf + 2;
            let Some(end) = start.checked_add(len).and_then(|e| e.checked_add(2)) else {
                return;
            };
            if end > buf.len() {
                return;
            }
            if let Some(arg) = first_args.get_mut(i as usize) {
                *arg = &buf[start..start + len];
            }
            pos = end;
        }
        let count = (count as usize).min(first_args.len());
        let args = &first_args[..count];
        if let Some(key) = first_key(args) {
            each(key, first_element(args));
        }
    }
}

/// The key a command is most likely to read first, from its first (up to four)
/// arguments: the first declared key of a script or function call (EVAL, EVALSHA,
/// FCALL and their read-only forms: `name body-or-sha numkeys key ...`), none when it
/// declares none; otherwise the second argument, the first key of most commands (a
/// keyless command's guess costs one wasted prefetch).
pub fn first_key<'a>(args: &[&'a [u8]]) -> Option<&'a [u8]> {
    let calls_script = args.first().is_some_and(|name| {
        [
            &b"evalsha"[..],
            b"eval",
            b"fcall",
            b"evalsha_ro",
            b"eval_ro",
            b"fcall_ro",
        ]
        .iter()
        .any(|s| name.eq_ignore_ascii_case(s))
    });
    if !calls_script {
        return args.get(1).copied();
    }
    let declares_keys = args
        .get(2)
        .and_then(|n| parse_i64(n))
        .is_some_and(|n| n >= 1);
    if declares_keys {
        args.get(3).copied()
    } else {
        None
    }
}

/// The field or member a command looks up in its first key's hash, set or sorted set,
/// from its first (up to four) arguments: HSET's field, SADD's member, ZADD's member
/// when no flag comes before its score ... None for other commands.
pub fn first_element<'a>(args: &[&'a [u8]]) -> Option<&'a [u8]> {
    let name = args.first()?;
    let mut lower = [0u8; 12];
    let lower = lower.get_mut(..name.len())?;
    for (to, from) in lower.iter_mut().zip(name.iter()) {
        *to = from.to_ascii_lowercase();
    }
    let at = match &*lower {
        b"hset" | b"hsetnx" | b"hmset" | b"hget" | b"hmget" | b"hexists" | b"hdel" | b"hincrby"
        | b"hincrbyfloat" | b"hstrlen" | b"sadd" | b"srem" | b"sismember" | b"smismember"
        | b"zscore" | b"zmscore" | b"zrem" | b"zrank" | b"zrevrank" => 2,
        // ZADD key score member: a flag (NX, XX, GT, LT, CH, INCR) in the score's place
        // is not a number.
        b"zadd"
            if args
                .get(2)
                .is_some_and(|s| s.first().is_some_and(|c| !c.is_ascii_alphabetic())) =>
        {
            3
        }
        b"zincrby" => 3,
        _ => return None,
    };
    args.get(at).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut d = CommandDecoder::new(Limits::default());
        let mut buf = BytesMut::from(input);
        let mut args = Args::default();
        let mut out = Vec::new();
        while d.decode(&mut buf, &mut args)? {
            out.push(args.iter().map(|a| a.to_vec()).collect());
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline_mix() {
        let got =
            decode_all(b"*1\r\n$4\r\nPING\r\nECHO hi\r\n\r\n*0\r\n*2\r\n$1\r\na\r\n$0\r\n\r\n")
                .unwrap();
        assert_eq!(
            got,
            vec![
                vec![b"PING".to_vec()],
                vec![b"ECHO".to_vec(), b"hi".to_vec()],
                vec![b"a".to_vec(), b"".to_vec()],
            ]
        );
    }

    #[test]
    fn a_reused_builder_gives_each_command_its_own_arguments() {
        let mut builder = ArgsBuilder::default();
        let mut args = Args::default();
        let mut kept = Vec::new();
        for round in 0..100 {
            args.clear();
            let key = format!("key:{round}");
            builder.push(b"SET");
            builder.push(key.as_bytes());
            builder.push(&vec![b'v'; round]);
            builder.finish_into(&mut args);
            assert_eq!(args.len(), 3);
            assert_eq!(args.get(1), Some(key.as_bytes()));
            assert_eq!(args.get(2).map(<[u8]>::len), Some(round));
            // A handle kept past the next command still reads its own bytes.
            if round % 10 == 0 {
                kept.push((round, args.bytes(1)));
            }
        }
        for (round, key) in kept {
            assert_eq!(&key[..], format!("key:{round}").as_bytes());
        }
    }

    #[test]
    fn elements_are_named_for_the_commands_that_look_one_up() {
        type Case<'a> = (&'a [&'a [u8]], Option<&'a [u8]>);
        let cases: [Case<'_>; 9] = [
            (&[b"HSET", b"h", b"f", b"v"], Some(b"f")),
            (&[b"sadd", b"s", b"m"], Some(b"m")),
            (&[b"SISMEMBER", b"s"], None),
            (&[b"zadd", b"z", b"1.5", b"m"], Some(b"m")),
            (&[b"zadd", b"z", b"-1", b"m"], Some(b"m")),
            (&[b"ZADD", b"z", b"NX", b"1"], None),
            (&[b"zincrby", b"z", b"2", b"m"], Some(b"m")),
            (&[b"GET", b"k"], None),
            (&[b"HINCRBYFLOATX", b"h", b"f"], None),
        ];
        for (args, element) in cases {
            assert_eq!(first_element(args), element, "{args:?}");
        }
    }

    #[test]
    fn a_script_calls_first_key_is_its_first_declared_key() {
        let input = b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nsha\r\n$1\r\n1\r\n$1\r\nk\r\n\
*3\r\n$5\r\nfcall\r\n$1\r\nf\r\n$1\r\n0\r\n\
*5\r\n$4\r\neval\r\n$6\r\nreturn\r\n$1\r\n2\r\n$2\r\nk1\r\n$2\r\nk2\r\n\
*3\r\n$7\r\nevalsha\r\n$3\r\nsha\r\n$1\r\n1\r\n\
*2\r\n$3\r\nGET\r\n$1\r\ng\r\n";
        let mut keys = Vec::new();
        peek_first_keys(input, 16, |k, _| keys.push(k.to_vec()));
        // FCALL with no keys and an EVALSHA missing its declared key offer none.
        assert_eq!(keys, vec![b"k".to_vec(), b"k1".to_vec(), b"g".to_vec()]);
    }

    #[test]
    fn peeked_keys_are_the_decoded_second_arguments() {
        let input = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n\
*2\r\n$3\r\nGET\r\n$0\r\n\r\n*2\r\n$3\r\nGET\r\n$3\r\nabc\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nz\r\n";
        let mut keys = Vec::new();
        peek_first_keys(input, 16, |k, _| keys.push(k.to_vec()));
        // The walk stops at the inline PING.
        assert_eq!(keys, vec![b"hello".to_vec(), b"".to_vec(), b"abc".to_vec()]);
        let mut two = Vec::new();
        peek_first_keys(input, 2, |k, _| two.push(k.to_vec()));
        assert_eq!(two, vec![b"hello".to_vec()]);
        for cut in 0..input.len() {
            let mut cut_keys = Vec::new();
            peek_first_keys(&input[..cut], 16, |k, _| cut_keys.push(k.to_vec()));
            assert!(keys.starts_with(&cut_keys), "cut at {cut}: {cut_keys:?}");
        }
    }

    #[test]
    fn every_split_point() {
        let input = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$10\r\nworld\r\n\x00yz\r\nGET \"a b\"\n";
        for cut in 0..=input.len() {
            let mut d = CommandDecoder::new(Limits::default());
            let mut buf = BytesMut::new();
            let mut args = Args::default();
            let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
            for chunk in [&input[..cut], &input[cut..]] {
                buf.extend_from_slice(chunk);
                while d.decode(&mut buf, &mut args).unwrap() {
                    out.push(args.iter().map(|a| a.to_vec()).collect());
                }
            }
            assert_eq!(out.len(), 2, "cut at {cut}");
            assert_eq!(out[0][2], b"world\r\n\x00yz");
            assert_eq!(out[1][1], b"a b");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn errors_use_redis_text() {
        let e = |input: &[u8]| decode_all(input).unwrap_err().to_string();
        assert_eq!(
            e(b"*abc\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(
            e(b"*1\r\n$10000000000\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(b"*1\r\n$-5\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(b"*1\r\n*1\r\n"),
            "ERR Protocol error: expected '$', got '*'"
        );
        assert_eq!(
            e(b"SET \"a\r\n"),
            "ERR Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            e(b"*3000000000\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
    }

    #[test]
    fn header_without_crlf_is_bounded() {
        let mut long = b"*1\r\n$".to_vec();
        long.extend(std::iter::repeat_n(b'1', 70 * 1024));
        assert_eq!(
            decode_all(&long).unwrap_err(),
            ProtocolError::TooBigBulkCount
        );
        let inline = vec![b'a'; 70 * 1024];
        assert_eq!(
            decode_all(&inline).unwrap_err(),
            ProtocolError::TooBigInline
        );
    }

    #[test]
    fn unauthenticated_limits() {
        let mut d = CommandDecoder::new(Limits::default());
        d.set_authenticated(false);
        let mut args = Args::default();
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf, &mut args).unwrap_err(),
            ProtocolError::UnauthenticatedMultibulkLength
        );
    }

    #[test]
    fn big_bulk_reserves_space() {
        let mut d = CommandDecoder::new(Limits::default());
        let mut args = Args::default();
        let mut buf = BytesMut::from(&b"*1\r\n$1000000\r\n"[..]);
        assert!(!d.decode(&mut buf, &mut args).unwrap());
        assert!(buf.capacity() >= 1_000_002);
        buf.extend_from_slice(&vec![7u8; 1_000_000]);
        buf.extend_from_slice(b"\r\n");
        assert!(d.decode(&mut buf, &mut args).unwrap());
        assert_eq!(args[0].len(), 1_000_000);
    }
}
