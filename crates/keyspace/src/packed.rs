//! `Packed`: small collections stored as one byte buffer, the idea of Redis' listpack.
//! Each element is a LEB128 length followed by its bytes. One allocation for the whole
//! collection and no per-element overhead; operations are linear scans, which is why
//! collections convert to real hash tables and deques past the configured thresholds.

use std::ops::Range;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Packed {
    /// Exactly the encoding: no spare capacity and no element count. A boxed slice is
    /// 16 bytes where a `Vec` and a count were 32, which lets a small hash live inside
    /// its keyspace entry's value instead of in a box of its own (48 bytes a key); the
    /// count is a scan of the length headers, over a buffer the thresholds keep small.
    buf: Box<[u8]>,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

pub(crate) fn put_len(out: &mut Vec<u8>, n: usize) {
    let mut bytes = [0u8; 10];
    let k = put_len_into(&mut bytes, n);
    out.extend_from_slice(&bytes[..k]);
}

/// Writes `n` as LEB128 at the start of `out` (which has room for `len_size(n)` bytes);
/// returns the bytes written.
pub(crate) fn put_len_into(out: &mut [u8], mut n: usize) -> usize {
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// Makes `range` of an exact-size buffer `len` bytes long and returns it to be filled:
/// the allocation grows or shrinks to the exact new size, as a listpack reallocs to
/// size (small collections are many, and doubling would leave up to half of each buffer
/// unused). By hand: `Vec::splice`'s generic drain-and-fill was 1% of a ZADD loop.
pub(crate) fn resize_range(buf: &mut Box<[u8]>, range: Range<usize>, len: usize) -> &mut [u8] {
    let mut v = std::mem::take(buf).into_vec();
    // Reserved exactly, so that the resize below does not round the allocation up.
    v.reserve_exact(len.saturating_sub(range.len()));
    let start = range.start;
    resize_vec_range(&mut v, range, len);
    // `into_boxed_slice` shrinks in place what a removal left spare.
    *buf = v.into_boxed_slice();
    &mut buf[start..start + len]
}

/// Makes `range` of `v` `len` bytes long, moving what follows it (the new bytes of a
/// growing range are zeros). Growth takes `Vec`'s usual spare capacity, which a list
/// node keeps for its next pushes; [`resize_range`] reserves exactly first.
pub(crate) fn resize_vec_range(v: &mut Vec<u8>, range: Range<usize>, len: usize) {
    let old_len = v.len();
    let rest = range.start + len;
    if len > range.len() {
        v.resize(old_len + len - range.len(), 0);
        v.copy_within(range.end..old_len, rest);
    } else {
        v.copy_within(range.end..old_len, rest);
        v.truncate(old_len - (range.len() - len));
    }
}

/// Replaces `range` of an exact-size buffer with `with` (see [`resize_range`]).
pub(crate) fn splice_exact(buf: &mut Box<[u8]>, range: Range<usize>, with: &[u8]) {
    resize_range(buf, range, with.len()).copy_from_slice(with);
}

/// Bytes `put_len` writes for `n`.
pub(crate) fn len_size(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits as usize).div_ceil(7).max(1)
}

/// Reads a length at `pos`; returns (length, bytes used). The buffer is only ever written
/// by this module, so a malformed length cannot occur; it reads as 0 defensively.
pub(crate) fn get_len(buf: &[u8], pos: usize) -> (usize, usize) {
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

/// Appends one element: its length, then its bytes.
fn put_item(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn encoded(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(len_size(bytes.len()) + bytes.len());
    put_item(&mut v, bytes);
    v
}

impl Packed {
    pub fn new() -> Packed {
        Packed::default()
    }

    /// Number of elements: a walk over the length headers.
    pub fn len(&self) -> usize {
        self.spans().count()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Total bytes of the encoding.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn heap_size(&self) -> usize {
        self.buf.len()
    }

    /// Replaces the bytes in `range` with `with`, at the exact new size.
    fn splice(&mut self, range: Range<usize>, with: &[u8]) {
        splice_exact(&mut self.buf, range, with);
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
        self.push_all_back(&[item]);
    }

    /// Appends `items` with one reallocation.
    pub fn push_all_back(&mut self, items: &[&[u8]]) {
        let extra: usize = items.iter().map(|i| len_size(i.len()) + i.len()).sum();
        let mut v = std::mem::take(&mut self.buf).into_vec();
        v.reserve_exact(extra);
        for item in items {
            put_item(&mut v, item);
        }
        self.buf = v.into_boxed_slice();
    }

    pub fn push_front(&mut self, item: &[u8]) {
        self.splice(0..0, &encoded(item));
    }

    /// Byte range (header included) of element `index`.
    fn span_of(&self, index: usize) -> Option<Range<usize>> {
        self.spans().nth(index).map(|(start, data)| start..data.end)
    }

    pub fn remove(&mut self, index: usize) -> Option<Vec<u8>> {
        let span = self.span_of(index)?;
        let (n, used) = get_len(&self.buf, span.start);
        let value = self.buf[span.start + used..span.start + used + n].to_vec();
        self.splice(span, &[]);
        Some(value)
    }

    /// Removes the first element equal to `item`, found and removed in one pass with
    /// nothing copied out (SREM); whether there was one.
    pub fn remove_item(&mut self, item: &[u8]) -> bool {
        let found = self
            .spans()
            .find(|(_, data)| &self.buf[data.clone()] == item)
            .map(|(start, data)| start..data.end);
        match found {
            Some(span) => {
                self.splice(span, &[]);
                true
            }
            None => false,
        }
    }

    /// Removes elements `index` and `index + 1` (a hash's field and value) in one move.
    pub fn remove_two(&mut self, index: usize) -> bool {
        let mut spans = self.spans().skip(index);
        let pair = (spans.next(), spans.next());
        drop(spans);
        match pair {
            (Some((start, _)), Some((_, second))) => {
                self.splice(start..second.end, &[]);
                true
            }
            _ => false,
        }
    }

    pub fn replace(&mut self, index: usize, item: &[u8]) -> bool {
        let Some(span) = self.span_of(index) else {
            return false;
        };
        if span.len() == len_size(item.len()) + item.len() {
            // Same encoded size: overwrite in place, no reallocation.
            let at = span.end - item.len();
            self.buf[at..span.end].copy_from_slice(item);
        } else {
            self.splice(span, &encoded(item));
        }
        true
    }

    pub fn insert(&mut self, index: usize, item: &[u8]) {
        let at = self.span_of(index).map_or(self.buf.len(), |s| s.start);
        self.splice(at..at, &encoded(item));
    }

    pub fn pop_front(&mut self) -> Option<Vec<u8>> {
        self.remove(0)
    }

    pub fn pop_back(&mut self) -> Option<Vec<u8>> {
        let last = self.spans().last()?;
        let value = self.buf[last.1.clone()].to_vec();
        self.splice(last.0..last.1.end, &[]);
        Some(value)
    }

    /// Index of the first element equal to `item`.
    pub fn position(&self, item: &[u8]) -> Option<usize> {
        self.iter().position(|e| e == item)
    }

    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Packed {
        let mut v = Vec::new();
        for item in items {
            put_item(&mut v, item);
        }
        Packed {
            buf: v.into_boxed_slice(),
        }
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
        fn behaves_like_a_vec(ops in proptest::collection::vec((0u8..8, proptest::collection::vec(any::<u8>(), 0..200), 0usize..10), 0..60)) {
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
                    5 => {
                        let at = idx.min(model.len());
                        p.insert(at, &item);
                        model.insert(at, item);
                    }
                    6 => {
                        let tail = item.iter().rev().copied().collect::<Vec<u8>>();
                        p.push_all_back(&[&item, &tail]);
                        model.push(item);
                        model.push(tail);
                    }
                    _ => {
                        let ok = p.remove_two(idx);
                        prop_assert_eq!(ok, idx + 1 < model.len());
                        if ok {
                            model.drain(idx..idx + 2);
                        }
                    }
                }
                prop_assert_eq!(p.len(), model.len());
                prop_assert_eq!(p.is_empty(), model.is_empty());
                // Exact size: the buffer holds the encoding and nothing else.
                let encoded: usize = model.iter().map(|m| len_size(m.len()) + m.len()).sum();
                prop_assert_eq!(p.bytes(), encoded);
            }
            let got: Vec<Vec<u8>> = p.iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(got, model);
        }
    }
}
