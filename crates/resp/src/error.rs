use std::fmt;

/// Malformed input. `Display` gives the exact text Redis replies with (after the `-`), so a
/// server can write `-{err}\r\n` and close the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    InvalidMultibulkLength,
    InvalidBulkLength,
    /// A multibulk element did not start with `$`; carries the byte found.
    ExpectedDollar(u8),
    UnbalancedQuotes,
    TooBigInline,
    TooBigMultibulkCount,
    TooBigBulkCount,
    /// Before AUTH, Redis accepts only tiny requests.
    UnauthenticatedMultibulkLength,
    UnauthenticatedBulkLength,
    /// A frame type byte this decoder does not know (replies only).
    InvalidFrameType(u8),
    /// Anything else wrong in a reply frame: bad integer, bad double, missing CRLF.
    InvalidFrame(&'static str),
    /// Aggregates nested deeper than the configured limit.
    TooDeep,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ERR Protocol error: ")?;
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::ExpectedDollar(c) => {
                write!(f, "expected '$', got '{}'", char::from(*c))
            }
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::TooBigMultibulkCount => f.write_str("too big mbulk count string"),
            ProtocolError::TooBigBulkCount => f.write_str("too big bulk count string"),
            ProtocolError::UnauthenticatedMultibulkLength => {
                f.write_str("unauthenticated multibulk length")
            }
            ProtocolError::UnauthenticatedBulkLength => f.write_str("unauthenticated bulk length"),
            ProtocolError::InvalidFrameType(c) => write!(f, "invalid frame type byte 0x{c:02x}"),
            ProtocolError::InvalidFrame(why) => f.write_str(why),
            ProtocolError::TooDeep => f.write_str("nesting too deep"),
        }
    }
}

impl std::error::Error for ProtocolError {}
