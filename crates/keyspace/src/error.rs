use std::fmt;

/// Why a keyspace operation failed; `Display` gives Redis' error reply text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyspaceError {
    WrongType,
    NotInteger,
    NotFloat,
    Overflow,
    /// INCRBYFLOAT that would produce NaN or infinity.
    NanOrInfinity,
    /// A string would exceed 512 MB (SETRANGE, APPEND).
    StringTooLong,
    /// A stream entry needs an even, non-zero number of fields and values.
    StreamFieldCount,
    /// The stream used its last possible ID.
    StreamIdExhausted,
    /// The stream or its consumer group does not exist.
    NoGroup,
}

impl fmt::Display for KeyspaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyspaceError::WrongType => {
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            }
            KeyspaceError::NotInteger => "ERR value is not an integer or out of range",
            KeyspaceError::NotFloat => "ERR value is not a valid float",
            KeyspaceError::Overflow => "ERR increment or decrement would overflow",
            KeyspaceError::NanOrInfinity => "ERR increment would produce NaN or Infinity",
            KeyspaceError::StringTooLong => {
                "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
            }
            KeyspaceError::StreamFieldCount => "ERR wrong number of arguments for 'xadd' command",
            KeyspaceError::StreamIdExhausted => {
                "ERR The stream has exhausted the last possible ID, unable to add more items"
            }
            KeyspaceError::NoGroup => "NOGROUP No such key or consumer group",
        })
    }
}

impl std::error::Error for KeyspaceError {}
