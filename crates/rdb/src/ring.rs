//! A fixed byte ring for snapshot captures: space is taken at the head and given back
//! in the same order at the tail, each allocation contiguous.
//!
//! Writers' copies of tables live here instead of in fresh heap blocks. The ring is
//! mapped once when the snapshot begins; growing the heap under captures took the
//! process' mmap lock dozens of times per snapshot (strace: 75 mprotect calls from one
//! event loop in a first BGSAVE), and each waited behind any reader of
//! /proc/PID/smaps_rollup, stalling that loop for up to the reader's whole walk.

/// Where an allocation lies in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub offset: usize,
    pub len: usize,
}

#[derive(Debug)]
pub(crate) struct ByteRing {
    buf: Box<[u8]>,
    /// Next free byte.
    head: usize,
    /// Oldest live byte.
    tail: usize,
    /// The live data runs from `tail` to `top` and on from 0 to `head`.
    wrapped: bool,
    /// With `wrapped`: where the live data before the wrap ends.
    top: usize,
    live: usize,
}

impl ByteRing {
    pub fn new(capacity: usize) -> ByteRing {
        ByteRing {
            buf: vec![0; capacity].into_boxed_slice(),
            head: 0,
            tail: 0,
            wrapped: false,
            top: 0,
            live: 0,
        }
    }

    /// Copies `bytes` in; None when no contiguous space is left (the caller keeps them
    /// elsewhere).
    pub fn push(&mut self, bytes: &[u8]) -> Option<Span> {
        let n = bytes.len();
        if n == 0 || n > self.buf.len() {
            return None;
        }
        let offset = if !self.wrapped {
            if self.buf.len() - self.head >= n {
                self.head
            } else if self.tail >= n {
                self.wrapped = true;
                self.top = self.head;
                0
            } else {
                return None;
            }
        } else if self.tail - self.head >= n {
            self.head
        } else {
            return None;
        };
        self.buf[offset..offset + n].copy_from_slice(bytes);
        self.head = offset + n;
        self.live += 1;
        Some(Span { offset, len: n })
    }

    pub fn get(&self, span: Span) -> &[u8] {
        &self.buf[span.offset..span.offset + span.len]
    }

    /// Gives back the oldest allocation, which must be `span`.
    pub fn pop(&mut self, span: Span) {
        debug_assert!(self.live > 0);
        self.live = self.live.saturating_sub(1);
        if self.live == 0 {
            (self.head, self.tail, self.wrapped, self.top) = (0, 0, false, 0);
            return;
        }
        self.tail = span.offset + span.len;
        if self.wrapped && self.tail >= self.top {
            self.wrapped = false;
            self.tail = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a FIFO of owned copies: every pushed span reads back its bytes until
        /// popped, spans never overlap, and an empty ring takes anything that fits.
        #[test]
        fn matches_a_fifo(ops in proptest::collection::vec((any::<bool>(), 1usize..40), 1..400)) {
            let mut ring = ByteRing::new(100);
            let mut model: std::collections::VecDeque<(Span, Vec<u8>)> = Default::default();
            for (k, (push, n)) in ops.into_iter().enumerate() {
                if push {
                    let bytes = vec![k as u8; n];
                    match ring.push(&bytes) {
                        Some(span) => {
                            for (s, _) in &model {
                                let disjoint = s.offset + s.len <= span.offset || span.offset + span.len <= s.offset;
                                prop_assert!(disjoint, "{:?} overlaps {:?}", span, s);
                            }
                            model.push_back((span, bytes));
                        }
                        None => prop_assert!(!model.is_empty(), "an empty ring refused {} bytes", n),
                    }
                } else if let Some((span, _)) = model.pop_front() {
                    ring.pop(span);
                }
                for (span, bytes) in &model {
                    prop_assert_eq!(ring.get(*span), &bytes[..]);
                }
            }
        }
    }
}
