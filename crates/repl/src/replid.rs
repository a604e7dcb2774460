//! Replication ids: 40 lower-case hex digits, as Redis prints them in INFO and PSYNC.

use std::fmt;

/// A replication id. Its text is always 40 hex digits, so it can be written into a
/// protocol line or an RDB aux field as it is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplId([u8; 40]);

impl ReplId {
    /// The id Redis uses where none is known: forty zeros.
    pub const NONE: ReplId = ReplId([b'0'; 40]);

    /// An id from 20 random bytes the caller drew (the crate owns no randomness, so a
    /// simulation can replay it).
    pub fn from_random(bytes: [u8; 20]) -> ReplId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 40];
        for (i, b) in bytes.iter().enumerate() {
            id[2 * i] = HEX[usize::from(b >> 4)];
            id[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        ReplId(id)
    }

    /// Parses an id a peer sent (PSYNC, +FULLRESYNC, +CONTINUE, an RDB aux field):
    /// exactly 40 hex digits, either case (kept as sent, as Redis compares them).
    pub fn parse(text: &[u8]) -> Option<ReplId> {
        let id: [u8; 40] = text.try_into().ok()?;
        id.iter().all(u8::is_ascii_hexdigit).then_some(ReplId(id))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Redis compares ids case-insensitively (`strcasecmp`).
    pub fn matches(&self, text: &[u8]) -> bool {
        self.0.eq_ignore_ascii_case(text)
    }
}

impl fmt::Display for ReplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only hex digits are ever stored.
        f.write_str(std::str::from_utf8(&self.0).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ReplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_print_as_hex() {
        let id = ReplId::from_random([0xab; 20]);
        assert_eq!(id.to_string(), "ab".repeat(20));
        assert_eq!(ReplId::parse(id.as_bytes()), Some(id));
        assert!(id.matches("AB".repeat(20).as_bytes()));
    }

    #[test]
    fn parse_refuses_what_is_not_an_id() {
        assert_eq!(ReplId::parse(b"?"), None);
        assert_eq!(ReplId::parse(&[b'a'; 39]), None);
        assert_eq!(ReplId::parse(&[b'g'; 40]), None);
        assert_eq!(ReplId::parse(&[b'0'; 40]), Some(ReplId::NONE));
    }
}
