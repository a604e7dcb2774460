//! The replication backlog: a ring holding the latest `size` bytes of the stream, so a
//! replica that lost its link for a moment continues instead of reloading everything.

/// The ring. Offsets are Redis': the stream's first byte is offset 1, and after `n` bytes
/// `master_repl_offset` is `n` (plus the offset the history started at).
#[derive(Clone, Debug)]
pub struct Backlog {
    /// Allocated on the first append, not when the backlog is configured.
    ring: Vec<u8>,
    size: usize,
    /// Where the next byte goes in `ring`.
    write_at: usize,
    /// Bytes held: at most `size`.
    histlen: usize,
    /// Offset of the stream's last byte (0 before any).
    master_repl_offset: u64,
}

impl Backlog {
    /// An empty backlog of `size` bytes (at least 1) whose next byte is offset
    /// `master_repl_offset + 1`.
    pub fn new(size: usize, master_repl_offset: u64) -> Backlog {
        Backlog {
            ring: Vec::new(),
            size: size.max(1),
            write_at: 0,
            histlen: 0,
            master_repl_offset,
        }
    }

    /// Appends stream bytes; the oldest fall out once `size` are held.
    pub fn append(&mut self, mut data: &[u8]) {
        self.master_repl_offset += data.len() as u64;
        if self.ring.len() != self.size {
            self.ring.resize(self.size, 0);
        }
        if data.len() > self.size {
            // Only the last `size` bytes can be held.
            data = &data[data.len() - self.size..];
        }
        let first = data.len().min(self.size - self.write_at);
        self.ring[self.write_at..self.write_at + first].copy_from_slice(&data[..first]);
        let rest = &data[first..];
        self.ring[..rest.len()].copy_from_slice(rest);
        self.write_at = (self.write_at + data.len()) % self.size;
        self.histlen = (self.histlen + data.len()).min(self.size);
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes held (INFO's `repl_backlog_histlen`).
    pub fn histlen(&self) -> usize {
        self.histlen
    }

    /// Offset of the stream's last byte.
    pub fn master_repl_offset(&self) -> u64 {
        self.master_repl_offset
    }

    /// Offset of the oldest byte held (INFO's `repl_backlog_first_byte_offset`); one past
    /// the last byte when nothing is held.
    pub fn first_byte_offset(&self) -> u64 {
        self.master_repl_offset + 1 - self.histlen as u64
    }

    /// True if a replica whose next byte is `offset` can continue from here: the byte is
    /// held, or it is the next one the stream will have (nothing to send yet).
    pub fn covers(&self, offset: u64) -> bool {
        offset >= self.first_byte_offset() && offset <= self.master_repl_offset + 1
    }

    /// The bytes from `offset` to the end of the stream, in (at most) two slices, or None
    /// when the backlog does not cover `offset`.
    pub fn range_from(&self, offset: u64) -> Option<(&[u8], &[u8])> {
        if !self.covers(offset) {
            return None;
        }
        let len = usize::try_from(self.master_repl_offset + 1 - offset).ok()?;
        if len == 0 {
            return Some((&[], &[]));
        }
        // `len <= histlen <= size`, so the start is `len` bytes behind the write position.
        let start = (self.write_at + self.size - len) % self.size;
        if start + len <= self.size {
            Some((&self.ring[start..start + len], &[]))
        } else {
            Some((&self.ring[start..], &self.ring[..len - (self.size - start)]))
        }
    }

    /// Forgets the bytes held and gives back the ring (`repl-backlog-ttl` passed with no
    /// replica); the stream's offset goes on.
    pub fn clear(&mut self) {
        self.ring = Vec::new();
        self.write_at = 0;
        self.histlen = 0;
    }

    /// Changes the size (CONFIG SET repl-backlog-size), keeping the newest bytes that fit.
    pub fn resize(&mut self, size: usize) {
        let size = size.max(1);
        if size == self.size {
            return;
        }
        let keep = self.histlen.min(size);
        let mut ring = Vec::new();
        if !self.ring.is_empty() {
            let from = self.master_repl_offset + 1 - keep as u64;
            if let Some((a, b)) = self.range_from(from) {
                ring.reserve_exact(size);
                ring.extend_from_slice(a);
                ring.extend_from_slice(b);
                ring.resize(size, 0);
            }
        }
        self.ring = ring;
        self.size = size;
        self.write_at = keep % size;
        self.histlen = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_keeps_the_newest_bytes() {
        let mut b = Backlog::new(8, 0);
        assert_eq!(b.first_byte_offset(), 1);
        assert!(b.covers(1));
        assert!(!b.covers(2));
        b.append(b"abcdef");
        b.append(b"ghij");
        assert_eq!(b.master_repl_offset(), 10);
        assert_eq!(b.histlen(), 8);
        assert_eq!(b.first_byte_offset(), 3);
        let (x, y) = b.range_from(3).unwrap();
        assert_eq!([x, y].concat(), b"cdefghij");
        let (x, y) = b.range_from(9).unwrap();
        assert_eq!([x, y].concat(), b"ij");
        assert_eq!(b.range_from(11), Some((&b""[..], &b""[..])));
        assert_eq!(b.range_from(2), None);
        assert_eq!(b.range_from(12), None);
    }

    #[test]
    fn an_append_larger_than_the_ring() {
        let mut b = Backlog::new(4, 100);
        b.append(b"0123456789");
        assert_eq!(b.master_repl_offset(), 110);
        let (x, y) = b.range_from(107).unwrap();
        assert_eq!([x, y].concat(), b"6789");
    }

    #[test]
    fn resize_keeps_what_fits() {
        let mut b = Backlog::new(8, 0);
        b.append(b"abcdefghij");
        b.resize(3);
        assert_eq!(b.first_byte_offset(), 8);
        let (x, y) = b.range_from(8).unwrap();
        assert_eq!([x, y].concat(), b"hij");
        b.resize(16);
        b.append(b"kl");
        let (x, y) = b.range_from(8).unwrap();
        assert_eq!([x, y].concat(), b"hijkl");
    }
}
