//! `Packed`: small collections stored as one byte buffer, the idea of Redis' listpack.
//! Each element is a LEB128 length followed by its bytes. One allocation for the whole
//! collection and no per-element overhead; operations are linear scans, which is why
//! collections convert to real hash tables and deques past the configured thresholds.

use std::ops::Range;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Packed {
    buf: Vec<u8>,
    len: usize,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a length at `pos`; returns (length, bytes used). The buffer is only ever written
/// by this module, so a malformed length cannot occur; it reads as 0 defensively.
fn get_len(buf: &[u8], pos: usize) -> (usize, usize) {
    let mut n = 0usize;
    let mut shift = 0;
    let mut i = pos;
    while i < buf.len() && shift < 64 {
        let b = buf[i];
        n |= usize::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            return (n, i - pos);
        }
        shift += 7;
    }
    (0, i - pos)
}

fn encoded(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 2);
    put_len(&mut v, bytes.len());
    v.extend_from_slice(bytes);
    v
}

impl Packed {
    pub fn new() -> Packed {
        Packed::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total bytes of the encoding.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn heap_size(&self) -> usize {
        self.buf.capacity()
    }

    /// (header start, payload range) of every element, in order.
    pub fn spans(&self) -> impl Iterator<Item = (usize, Range<usize>)> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= self.buf.len() {
                return None;
            }
            let (n, used) = get_len(&self.buf, pos);
            let start = pos;
            let data = pos + used..(pos + used + n).min(self.buf.len());
            pos = data.end;
            Some((start, data))
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.spans().map(move |(_, r)| &self.buf[r])
    }

    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.iter().nth(index)
    }

    pub fn push_back(&mut self, item: &[u8]) {
        // Exact growth, as a listpack reallocs to size: small collections are many, and
        // doubling would leave up to half of each buffer unused.
        self.buf.reserve_exact(item.len() + 5);
        put_len(&mut self.buf, item.len());
        self.buf.extend_from_slice(item);
        self.len += 1;
    }

    pub fn push_front(&mut self, item: &[u8]) {
        let enc = encoded(item);
        self.buf.reserve_exact(enc.len());
        self.buf.splice(0..0, enc);
        self.len += 1;
    }

    /// Byte range (header included) of element `index`.
    fn span_of(&self, index: usize) -> Option<Range<usize>> {
        self.spans().nth(index).map(|(start, data)| start..data.end)
    }

    pub fn remove(&mut self, index: usize) -> Option<Vec<u8>> {
        let span = self.span_of(index)?;
        let (n, used) = get_len(&self.buf, span.start);
        let value = self.buf[span.start + used..span.start + used + n].to_vec();
        self.buf.drain(span);
        self.len -= 1;
        Some(value)
    }

    pub fn replace(&mut self, index: usize, item: &[u8]) -> bool {
        let Some(span) = self.span_of(index) else {
            return false;
        };
        self.buf.splice(span, encoded(item));
        true
    }

    pub fn insert(&mut self, index: usize, item: &[u8]) {
        let at = self.span_of(index).map_or(self.buf.len(), |s| s.start);
        self.buf.reserve_exact(item.len() + 5);
        self.buf.splice(at..at, encoded(item));
        self.len += 1;
    }

    pub fn pop_front(&mut self) -> Option<Vec<u8>> {
        self.remove(0)
    }

    pub fn pop_back(&mut self) -> Option<Vec<u8>> {
        if self.len == 0 {
            return None;
        }
        self.remove(self.len - 1)
    }

    /// Index of the first element equal to `item`.
    pub fn position(&self, item: &[u8]) -> Option<usize> {
        self.iter().position(|e| e == item)
    }

    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Packed {
        let mut p = Packed::new();
        for i in items {
            p.push_back(i);
        }
        p
    }

    /// Longest element (for the `*-max-listpack-value` checks).
    pub fn longest(&self) -> usize {
        self.spans().map(|(_, r)| r.len()).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn behaves_like_a_vec(ops in proptest::collection::vec((0u8..6, proptest::collection::vec(any::<u8>(), 0..200), 0usize..10), 0..60)) {
            let mut p = Packed::new();
            let mut model: Vec<Vec<u8>> = Vec::new();
            for (op, item, idx) in ops {
                match op {
                    0 => { p.push_back(&item); model.push(item); }
                    1 => { p.push_front(&item); model.insert(0, item); }
                    2 => { prop_assert_eq!(p.pop_front(), if model.is_empty() { None } else { Some(model.remove(0)) }); }
                    3 => { prop_assert_eq!(p.pop_back(), model.pop()); }
                    4 => {
                        let ok = p.replace(idx, &item);
                        prop_assert_eq!(ok, idx < model.len());
                        if ok { model[idx] = item; }
                    }
                    _ => {
                        let at = idx.min(model.len());
                        p.insert(at, &item);
                        model.insert(at, item);
                    }
                }
                prop_assert_eq!(p.len(), model.len());
            }
            let got: Vec<Vec<u8>> = p.iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(got, model);
        }
    }
}
