//! RESP2 and RESP3 for Carmine: frames, a streaming zero-copy decoder, an encoder.
//!
//! Two decoders live here because a server and a client want different things:
//!
//! * [`CommandDecoder`] is the server's hot path. It reads what clients send — a multibulk of
//!   bulk strings, or an inline line typed into telnet — and yields [`Args`]: one frozen
//!   [`bytes::Bytes`] holding the whole command plus the offsets of each argument. One
//!   allocation-free split per command, no copy of the payload. It is stateful, so a command
//!   that arrives one byte at a time is never rescanned from its start.
//! * [`FrameDecoder`] decodes any RESP2/RESP3 [`Frame`] (replies, pushes, attributes), with
//!   bounds on bulk length, aggregate length and nesting depth.
//!
//! Both report malformed input as a [`ProtocolError`] whose text is Redis' own
//! (`ERR Protocol error: invalid multibulk length` ...); a server writes it as an error reply
//! and closes the connection.
//!
//! ```
//! use bytes::BytesMut;
//! use carmine_resp::{Args, CommandDecoder, Limits};
//!
//! let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nPING\r\n"[..]);
//! let mut decoder = CommandDecoder::new(Limits::default());
//! let mut args = Args::default();
//! assert!(decoder.decode(&mut buf, &mut args).unwrap());
//! assert_eq!(args.get(0), Some(&b"GET"[..]));
//! assert_eq!(args.get(1), Some(&b"key"[..]));
//! assert!(decoder.decode(&mut buf, &mut args).unwrap()); // an inline command
//! assert_eq!(args.get(0), Some(&b"PING"[..]));
//! assert!(!decoder.decode(&mut buf, &mut args).unwrap()); // nothing more buffered
//! ```

mod command;
mod encode;
mod error;
mod frame;
mod inline;

pub use command::{first_element, first_key, peek_first_keys, Args, ArgsBuilder, CommandDecoder};
pub use encode::{encode, error_code, write_double, ReplyBuf, ReplyMark};
pub use error::ProtocolError;
pub use frame::{Frame, FrameDecoder};
pub use inline::split_inline_args;

/// Size bounds applied while decoding; the defaults are Redis'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `proto-max-bulk-len`: the largest bulk string accepted (512 MB).
    pub max_bulk_len: u64,
    /// The largest multibulk / aggregate element count (Redis: INT_MAX).
    pub max_multibulk_len: u64,
    /// Longest inline command or header line before a CRLF must appear (64 KB in Redis).
    pub max_inline_len: usize,
    /// Deepest nesting of aggregates accepted by [`FrameDecoder`].
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as u64,
            max_inline_len: 64 * 1024,
            max_depth: 128,
        }
    }
}

/// Parses a RESP integer line body (`-12`, `0`, `345`) exactly as Redis' `string2ll` does:
/// no leading `+`, no leading zeros (except `0` itself), no spaces, no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    if neg && digits == b"0" {
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
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}

/// Finds the first `\r\n` in `buf` at or after `from`; returns the index of `\r`.
#[inline]
pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        match buf[i..].iter().position(|&b| b == b'\r') {
            Some(p) => {
                let at = i + p;
                if at + 1 < buf.len() {
                    if buf[at + 1] == b'\n' {
                        return Some(at);
                    }
                    i = at + 1;
                } else {
                    return None;
                }
            }
            None => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_i64_matches_redis_rules() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"01"), None);
        assert_eq!(parse_i64(b"-0"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b" 1"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
    }

    #[test]
    fn find_crlf_skips_lone_cr() {
        assert_eq!(find_crlf(b"ab\rc\r\n", 0), Some(4));
        assert_eq!(find_crlf(b"ab\r", 0), None);
        assert_eq!(find_crlf(b"\r\n", 0), Some(0));
        assert_eq!(find_crlf(b"x\r\n\r\n", 2), Some(3));
    }
}
