//! RESP2/RESP3 frames and a bounded, zero-copy decoder for them.

use bytes::{Bytes, BytesMut};

use crate::{find_crlf, parse_i64, Limits, ProtocolError};

/// One RESP value. RESP2's two null encodings are kept apart from RESP3's `_` so that
/// decoding and re-encoding any input is the identity.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Simple(Bytes),
    Error(Bytes),
    Integer(i64),
    Bulk(Bytes),
    /// RESP2 `$-1`.
    NullBulk,
    /// RESP2 `*-1`.
    NullArray,
    Array(Vec<Frame>),
    /// RESP3 `_`.
    Null,
    Boolean(bool),
    Double(f64),
    /// Digits (with an optional leading `-`), as sent.
    BigNumber(Bytes),
    BulkError(Bytes),
    /// Three-byte format (`txt`, `mkd`) and the text.
    Verbatim([u8; 3], Bytes),
    Map(Vec<(Frame, Frame)>),
    Set(Vec<Frame>),
    /// Attributes that precede the next frame; decoded as a frame of their own.
    Attribute(Vec<(Frame, Frame)>),
    Push(Vec<Frame>),
}

impl Frame {
    /// The bytes of a string-like frame (simple, bulk, verbatim).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::Verbatim(_, b) => Some(b),
            _ => None,
        }
    }
}

/// Decoder for RESP frames of any type, e.g. a client reading replies.
#[derive(Clone, Debug, Default)]
pub struct FrameDecoder {
    limits: Limits,
}

impl FrameDecoder {
    pub fn new(limits: Limits) -> Self {
        FrameDecoder { limits }
    }

    /// Decodes one frame, consuming its bytes. `Ok(None)` means more input is needed and
    /// nothing was consumed. A first pass only measures the frame (no allocation), so a
    /// frame that arrives piecemeal costs no wasted allocations.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let Some(len) = self.measure(buf, 0, 0)? else {
            return Ok(None);
        };
        let bytes = buf.split_to(len).freeze();
        let mut pos = 0;
        let frame = build(&bytes, &mut pos)?;
        debug_assert_eq!(pos, len);
        Ok(Some(frame))
    }

    /// Returns the end offset of the frame starting at `pos`, if complete.
    fn measure(
        &self,
        buf: &[u8],
        pos: usize,
        depth: usize,
    ) -> Result<Option<usize>, ProtocolError> {
        if depth > self.limits.max_depth {
            return Err(ProtocolError::TooDeep);
        }
        if pos >= buf.len() {
            return Ok(None);
        }
        let Some(crlf) = find_crlf(buf, pos + 1) else {
            if buf.len() - pos > self.limits.max_inline_len {
                return Err(ProtocolError::InvalidFrame("line too long"));
            }
            return Ok(None);
        };
        let line = &buf[pos + 1..crlf];
        let after = crlf + 2;
        match buf[pos] {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(Some(after)),
            b'$' | b'!' | b'=' => {
                let n = parse_len(line)?;
                if n < 0 {
                    return if buf[pos] == b'$' && n == -1 {
                        Ok(Some(after))
                    } else {
                        Err(ProtocolError::InvalidBulkLength)
                    };
                }
                if n as u64 > self.limits.max_bulk_len {
                    return Err(ProtocolError::InvalidBulkLength);
                }
                let end = after + n as usize + 2;
                Ok(if buf.len() >= end { Some(end) } else { None })
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = parse_len(line)?;
                if n < 0 {
                    return if buf[pos] == b'*' && n == -1 {
                        Ok(Some(after))
                    } else {
                        Err(ProtocolError::InvalidMultibulkLength)
                    };
                }
                if n as u64 > self.limits.max_multibulk_len {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                let items = if matches!(buf[pos], b'%' | b'|') {
                    n as u64 * 2
                } else {
                    n as u64
                };
                let mut at = after;
                for _ in 0..items {
                    match self.measure(buf, at, depth + 1)? {
                        Some(end) => at = end,
                        None => return Ok(None),
                    }
                }
                Ok(Some(at))
            }
            other => Err(ProtocolError::InvalidFrameType(other)),
        }
    }
}

fn parse_len(line: &[u8]) -> Result<i64, ProtocolError> {
    parse_i64(line).ok_or(ProtocolError::InvalidFrame("invalid length"))
}

/// Builds a frame from a buffer already measured as complete; slices share `bytes`.
fn build(bytes: &Bytes, pos: &mut usize) -> Result<Frame, ProtocolError> {
    let start = *pos;
    let crlf = find_crlf(bytes, start + 1).ok_or(ProtocolError::InvalidFrame("missing CRLF"))?;
    let line = bytes.slice(start + 1..crlf);
    *pos = crlf + 2;
    let kind = bytes[start];
    let frame = match kind {
        b'+' => Frame::Simple(line),
        b'-' => Frame::Error(line),
        b':' => {
            Frame::Integer(parse_i64(&line).ok_or(ProtocolError::InvalidFrame("invalid integer"))?)
        }
        b'_' => {
            if !line.is_empty() {
                return Err(ProtocolError::InvalidFrame("invalid null"));
            }
            Frame::Null
        }
        b'#' => match &line[..] {
            b"t" => Frame::Boolean(true),
            b"f" => Frame::Boolean(false),
            _ => return Err(ProtocolError::InvalidFrame("invalid boolean")),
        },
        b',' => Frame::Double(parse_double(&line)?),
        b'(' => {
            let digits = line.strip_prefix(b"-").unwrap_or(&line);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(ProtocolError::InvalidFrame("invalid big number"));
            }
            Frame::BigNumber(line)
        }
        b'$' | b'!' | b'=' => {
            let n = parse_len(&line)?;
            if n < 0 {
                return Ok(Frame::NullBulk);
            }
            let body = bytes.slice(*pos..*pos + n as usize);
            if &bytes[*pos + n as usize..*pos + n as usize + 2] != b"\r\n" {
                return Err(ProtocolError::InvalidFrame("bulk not terminated by CRLF"));
            }
            *pos += n as usize + 2;
            match kind {
                b'$' => Frame::Bulk(body),
                b'!' => Frame::BulkError(body),
                _ => {
                    if body.len() < 4 || body[3] != b':' {
                        return Err(ProtocolError::InvalidFrame("invalid verbatim string"));
                    }
                    Frame::Verbatim([body[0], body[1], body[2]], body.slice(4..))
                }
            }
        }
        b'*' | b'~' | b'>' => {
            let n = parse_len(&line)?;
            if n < 0 {
                return Ok(Frame::NullArray);
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            for _ in 0..n {
                items.push(build(bytes, pos)?);
            }
            match kind {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                _ => Frame::Push(items),
            }
        }
        b'%' | b'|' => {
            let n = parse_len(&line)?;
            let mut pairs = Vec::with_capacity((n.max(0) as usize).min(1024));
            for _ in 0..n {
                let k = build(bytes, pos)?;
                let v = build(bytes, pos)?;
                pairs.push((k, v));
            }
            if kind == b'%' {
                Frame::Map(pairs)
            } else {
                Frame::Attribute(pairs)
            }
        }
        other => return Err(ProtocolError::InvalidFrameType(other)),
    };
    Ok(frame)
}

fn parse_double(line: &[u8]) -> Result<f64, ProtocolError> {
    let s = std::str::from_utf8(line).map_err(|_| ProtocolError::InvalidFrame("invalid double"))?;
    match s {
        "inf" | "+inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        "nan" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .map_err(|_| ProtocolError::InvalidFrame("invalid double")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(input: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        FrameDecoder::default().decode(&mut BytesMut::from(input))
    }

    #[test]
    fn all_types() {
        assert_eq!(
            dec(b"+OK\r\n").unwrap(),
            Some(Frame::Simple(Bytes::from_static(b"OK")))
        );
        assert_eq!(dec(b":-5\r\n").unwrap(), Some(Frame::Integer(-5)));
        assert_eq!(dec(b"_\r\n").unwrap(), Some(Frame::Null));
        assert_eq!(dec(b"#f\r\n").unwrap(), Some(Frame::Boolean(false)));
        assert_eq!(dec(b",1.5\r\n").unwrap(), Some(Frame::Double(1.5)));
        assert_eq!(
            dec(b",-inf\r\n").unwrap(),
            Some(Frame::Double(f64::NEG_INFINITY))
        );
        assert_eq!(dec(b"$-1\r\n").unwrap(), Some(Frame::NullBulk));
        assert_eq!(dec(b"*-1\r\n").unwrap(), Some(Frame::NullArray));
        assert_eq!(
            dec(b"=8\r\ntxt:abcd\r\n").unwrap(),
            Some(Frame::Verbatim(*b"txt", Bytes::from_static(b"abcd")))
        );
        assert_eq!(
            dec(b"%1\r\n+a\r\n:1\r\n").unwrap(),
            Some(Frame::Map(vec![(
                Frame::Simple(Bytes::from_static(b"a")),
                Frame::Integer(1)
            )]))
        );
        assert_eq!(dec(b"*2\r\n:1\r\n").unwrap(), None);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let input = b"*1\r\n".repeat(1_000_000);
        assert_eq!(dec(&input).unwrap_err(), ProtocolError::TooDeep);
    }

    #[test]
    fn huge_bulk_header_is_refused() {
        assert_eq!(
            dec(b"$10737418240\r\n").unwrap_err(),
            ProtocolError::InvalidBulkLength
        );
    }
}
