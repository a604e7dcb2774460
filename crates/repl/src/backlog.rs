//! The replication backlog: the latest `size` bytes of the stream, so a
//! replica that lost its link for a moment continues instead of reloading everything.

use std::collections::VecDeque;

/// Stream bytes in chunks of this many bytes: growing never copies what is held, and
/// dropping the oldest bytes frees whole chunks.
const CHUNK: usize = 64 << 10;

/// The held bytes. Offsets are Redis': the stream's first byte is offset 1, and after `n`
/// bytes `master_repl_offset` is `n` (plus the offset the history started at).
#[derive(Clone, Debug)]
pub struct Backlog {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes at the front of the first chunk already dropped.
    skip: usize,
    /// `repl-backlog-size`: how many of the newest bytes are kept.
    size: usize,
    /// Bytes held: at most `size`, more while pinned.
    histlen: usize,
    /// Offset of the stream's last byte (0 before any).
    master_repl_offset: u64,
    /// Bytes from this offset on are kept whatever `size` says: a replica receiving its
    /// snapshot reads them afterwards (one copy for every replica, as Redis 7's shared
    /// replication buffer).
    pin: Option<u64>,
}

impl Backlog {
    /// An empty backlog of `size` bytes (at least 1) whose next byte is offset
    /// `master_repl_offset + 1`.
    pub fn new(size: usize, master_repl_offset: u64) -> Backlog {
        Backlog {
            chunks: VecDeque::new(),
            skip: 0,
            size: size.max(1),
            histlen: 0,
            master_repl_offset,
            pin: None,
        }
    }

    /// How many bytes must stay: the newest `size`, or every byte from the pin on.
    fn keep(&self) -> usize {
        let pinned = self.pin.map_or(0, |p| {
            usize::try_from((self.master_repl_offset + 1).saturating_sub(p)).unwrap_or(usize::MAX)
        });
        self.size.max(pinned)
    }

    /// Drops the oldest bytes past what must stay.
    fn trim(&mut self) {
        let keep = self.keep();
        while self.histlen > keep {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let drop = (self.histlen - keep).min(front.len() - self.skip);
            self.skip += drop;
            self.histlen -= drop;
            if self.skip == front.len() {
                self.chunks.pop_front();
                self.skip = 0;
            }
        }
    }

    /// Appends stream bytes; the oldest fall out once more than `size` (or the pinned
    /// bytes) are held.
    pub fn append(&mut self, mut data: &[u8]) {
        self.master_repl_offset += data.len() as u64;
        let keep = self.keep();
        if data.len() >= keep {
            // Only the last `keep` bytes can be held.
            data = &data[data.len() - keep..];
            self.chunks.clear();
            self.skip = 0;
            self.histlen = 0;
        }
        self.histlen += data.len();
        while !data.is_empty() {
            if self.chunks.back().is_none_or(|c| c.len() == c.capacity()) {
                self.chunks
                    .push_back(Vec::with_capacity(CHUNK.min(self.size.max(data.len()))));
            }
            let Some(last) = self.chunks.back_mut() else {
                break;
            };
            let room = (last.capacity() - last.len()).max(1);
            let n = room.min(data.len());
            last.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        self.trim();
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes allocated for what is held (INFO's `mem_total_replication_buffers`).
    pub fn allocated(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
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

    /// The bytes from `offset` to the end of the stream, as slices in order, or None when
    /// the backlog does not cover `offset`.
    pub fn range_from(&self, offset: u64) -> Option<Vec<&[u8]>> {
        if !self.covers(offset) {
            return None;
        }
        let mut skip = usize::try_from(offset - self.first_byte_offset()).ok()? + self.skip;
        let mut out = Vec::new();
        for c in &self.chunks {
            if skip >= c.len() {
                skip -= c.len();
                continue;
            }
            out.push(&c[skip..]);
            skip = 0;
        }
        Some(out)
    }

    /// The bytes from `offset` on, in one buffer.
    pub fn copy_from(&self, offset: u64) -> Option<Vec<u8>> {
        self.range_from(offset).map(|parts| parts.concat())
    }

    /// Forgets the bytes held (`repl-backlog-ttl` passed with no replica); the stream's
    /// offset goes on.
    pub fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.skip = 0;
        self.histlen = 0;
    }

    /// Changes the size (CONFIG SET repl-backlog-size), keeping the newest bytes that fit.
    pub fn resize(&mut self, size: usize) {
        self.size = size.max(1);
        self.trim();
    }

    /// Keeps every byte from `pin` on (None: only the newest `size`).
    pub fn set_pin(&mut self, pin: Option<u64>) {
        self.pin = pin;
        self.trim();
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
        assert_eq!(b.copy_from(3).unwrap(), b"cdefghij");
        assert_eq!(b.copy_from(9).unwrap(), b"ij");
        assert_eq!(b.copy_from(11), Some(Vec::new()));
        assert_eq!(b.range_from(2), None);
        assert_eq!(b.range_from(12), None);
    }

    #[test]
    fn an_append_larger_than_the_ring() {
        let mut b = Backlog::new(4, 100);
        b.append(b"0123456789");
        assert_eq!(b.master_repl_offset(), 110);
        assert_eq!(b.copy_from(107).unwrap(), b"6789");
    }

    #[test]
    fn resize_keeps_what_fits() {
        let mut b = Backlog::new(8, 0);
        b.append(b"abcdefghij");
        b.resize(3);
        assert_eq!(b.first_byte_offset(), 8);
        assert_eq!(b.copy_from(8).unwrap(), b"hij");
        b.resize(16);
        b.append(b"kl");
        assert_eq!(b.copy_from(8).unwrap(), b"hijkl");
    }
}
