//! `ListNode`: one node of a long list, its elements packed in one byte buffer, the idea
//! of a listpack inside Redis' quicklist.
//!
//! Nodes held each element as a 24-byte inline key: a list of short elements took 26
//! bytes per element where Redis' listpacks take 5. Here an element is its length (LEB128),
//! its bytes, and its length again written backwards, so a node can be walked, pushed and
//! popped from either end: a 3-byte element takes 5 bytes.
//!
//! The elements sit at the end of the buffer, after a gap that front pushes fill without
//! moving anything; back pushes append. A node that stops growing is [`ListNode::seal`]ed
//! to its exact size.

use std::ops::Range;

use crate::packed::{get_len, len_size, put_len_into};

/// Bytes an element of `n` bytes takes in a node.
pub(crate) fn encoded_size(n: usize) -> usize {
    2 * len_size(n) + n
}

/// Writes `item` as it sits in a node into `out`, which is exactly `encoded_size` long.
fn encode_into(out: &mut [u8], item: &[u8]) {
    let k = put_len_into(out, item.len());
    // Backward: the same bytes mirrored, so low bits come first reading from the end.
    let total = out.len();
    for i in 0..k {
        out[total - 1 - i] = out[i];
    }
    out[k..k + item.len()].copy_from_slice(item);
}

/// (length, trailer bytes) of the element ending just before `end`.
fn read_backward(buf: &[u8], end: usize) -> (usize, usize) {
    let (mut n, mut shift, mut i) = (0usize, 0, end);
    while i > 0 {
        i -= 1;
        let b = buf[i];
        n |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 || shift >= 63 {
            break;
        }
        shift += 7;
    }
    (n, end - i)
}

#[derive(Clone, Default)]
pub(crate) struct ListNode {
    /// `buf[head..]` holds the elements; `buf[..head]` is room for front pushes.
    buf: Vec<u8>,
    head: usize,
    count: u32,
}

impl ListNode {
    /// An empty node with room for `bytes` of elements pushed at either end.
    pub(crate) fn with_room(bytes: usize, front: bool) -> ListNode {
        if front {
            ListNode {
                buf: vec![0; bytes],
                head: bytes,
                count: 0,
            }
        } else {
            ListNode {
                buf: Vec::with_capacity(bytes),
                head: 0,
                count: 0,
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.count as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes its elements take.
    pub(crate) fn bytes(&self) -> usize {
        self.buf.len() - self.head
    }

    pub(crate) fn heap_size(&self) -> usize {
        self.buf.capacity()
    }

    /// Drops the front gap and spare capacity: the node will not grow again soon.
    pub(crate) fn seal(&mut self) {
        if self.head > 0 {
            self.drop_popped();
        }
        self.buf.shrink_to_fit();
    }

    /// Moves the live bytes down over the gap before them.
    fn drop_popped(&mut self) {
        self.buf.drain(..self.head);
        self.head = 0;
    }

    fn bump(&mut self, up: bool) {
        // A node holds at most a few thousand elements (node_list's limits); an overflow
        // here would mean corrupt counts, so it is checked in release builds too.
        self.count = if up {
            self.count.checked_add(1)
        } else {
            self.count.checked_sub(1)
        }
        .expect("list node element count out of range");
    }

    pub(crate) fn push_back(&mut self, item: &[u8]) {
        let size = encoded_size(item.len());
        let at = self.buf.len();
        self.buf.resize(at + size, 0);
        encode_into(&mut self.buf[at..], item);
        self.bump(true);
    }

    pub(crate) fn push_front(&mut self, item: &[u8]) {
        let size = encoded_size(item.len());
        if self.head < size {
            // Room for as many bytes again as the node holds (at least this element),
            // so a run of front pushes moves the elements a logarithmic number of times.
            let gap = size.max(self.bytes());
            let mut grown = Vec::with_capacity(gap + self.bytes());
            grown.resize(gap, 0);
            grown.extend_from_slice(&self.buf[self.head..]);
            self.buf = grown;
            self.head = gap;
        }
        self.head -= size;
        let head = self.head;
        encode_into(&mut self.buf[head..head + size], item);
        self.bump(true);
    }

    /// Payload range of the element whose encoding starts at `at`, and where it ends.
    fn element_at(&self, at: usize) -> (Range<usize>, usize) {
        let (n, k) = get_len(&self.buf, at);
        let data = at + k..at + k + n;
        let end = data.end + k;
        (data, end)
    }

    pub(crate) fn pop_front(&mut self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        let (data, end) = self.element_at(self.head);
        let item = self.buf[data].to_vec();
        self.head = end;
        self.bump(false);
        if self.count == 0 {
            self.buf.clear();
            self.head = 0;
        } else if self.head > self.bytes() {
            // Popped bytes past the live ones: move the live ones down. Back pushes
            // append after them, so a node used as a queue (RPUSH, LPOP) would otherwise
            // grow for ever while its count stays small.
            self.drop_popped();
        }
        Some(item)
    }

    pub(crate) fn pop_back(&mut self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        let end = self.buf.len();
        let (n, k) = read_backward(&self.buf, end);
        let start = end - k - n;
        let item = self.buf[start..end - k].to_vec();
        self.buf.truncate(start - k);
        self.bump(false);
        if self.count == 0 {
            self.buf.clear();
            self.head = 0;
        }
        Some(item)
    }

    /// Byte span (headers included) of element `index`, walking from the nearer end.
    fn span(&self, index: usize) -> Option<Range<usize>> {
        if index >= self.len() {
            return None;
        }
        if index <= self.len() / 2 {
            let mut at = self.head;
            for _ in 0..index {
                at = self.element_at(at).1;
            }
            Some(at..self.element_at(at).1)
        } else {
            let mut end = self.buf.len();
            for _ in 0..self.len() - 1 - index {
                let (n, k) = read_backward(&self.buf, end);
                end -= 2 * k + n;
            }
            let (n, k) = read_backward(&self.buf, end);
            Some(end - 2 * k - n..end)
        }
    }

    fn payload(&self, span: Range<usize>) -> &[u8] {
        let (data, _) = self.element_at(span.start);
        &self.buf[data]
    }

    pub(crate) fn get(&self, index: usize) -> Option<&[u8]> {
        self.span(index).map(|span| self.payload(span))
    }

    /// Replaces element `index`; false if there is none.
    pub(crate) fn set(&mut self, index: usize, item: &[u8]) -> bool {
        let Some(span) = self.span(index) else {
            return false;
        };
        let size = encoded_size(item.len());
        let at = span.start;
        self.resize_span(span, size);
        encode_into(&mut self.buf[at..at + size], item);
        true
    }

    /// Makes `span` of the buffer `len` bytes long, moving what follows it.
    fn resize_span(&mut self, span: Range<usize>, len: usize) {
        crate::packed::resize_vec_range(&mut self.buf, span, len);
    }

    /// Inserts before element `index` (at the end when `index` is past it).
    pub(crate) fn insert(&mut self, index: usize, item: &[u8]) {
        let at = self.span(index).map_or(self.buf.len(), |s| s.start);
        let size = encoded_size(item.len());
        self.resize_span(at..at, size);
        encode_into(&mut self.buf[at..at + size], item);
        self.bump(true);
    }

    pub(crate) fn remove(&mut self, index: usize) -> Option<Vec<u8>> {
        let span = self.span(index)?;
        let item = self.payload(span.clone()).to_vec();
        self.resize_span(span, 0);
        self.bump(false);
        Some(item)
    }

    /// Moves elements `index..` into a new node.
    pub(crate) fn split_off(&mut self, index: usize) -> ListNode {
        let Some(span) = self.span(index) else {
            return ListNode::default();
        };
        let tail = ListNode {
            buf: self.buf.split_off(span.start),
            head: 0,
            count: self.count - index as u32,
        };
        self.count = index as u32;
        self.seal();
        tail
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut at = self.head;
        std::iter::from_fn(move || {
            if at >= self.buf.len() {
                return None;
            }
            let (data, end) = self.element_at(at);
            at = end;
            Some(&self.buf[data])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn element() -> impl Strategy<Value = Vec<u8>> {
        // Mostly short, some past one and two LEB128 bytes of length.
        prop_oneof![
            12 => proptest::collection::vec(any::<u8>(), 0..8),
            3 => proptest::collection::vec(any::<u8>(), 120..140),
            1 => Just(vec![7u8; 16_390]),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_deque(ops in proptest::collection::vec((0u8..9, element(), 0usize..40), 0..80)) {
            let mut node = ListNode::default();
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            for (op, item, index) in ops {
                match op {
                    0 => { node.push_front(&item); model.push_front(item); }
                    1 => { node.push_back(&item); model.push_back(item); }
                    2 => prop_assert_eq!(node.pop_front(), model.pop_front()),
                    3 => prop_assert_eq!(node.pop_back(), model.pop_back()),
                    4 => {
                        let ok = node.set(index, &item);
                        prop_assert_eq!(ok, index < model.len());
                        if ok { model[index] = item; }
                    }
                    5 => {
                        node.insert(index, &item);
                        model.insert(index.min(model.len()), item);
                    }
                    6 => prop_assert_eq!(node.remove(index), model.remove(index)),
                    7 => {
                        let tail = node.split_off(index);
                        let want: VecDeque<Vec<u8>> = model.split_off(index.min(model.len()));
                        let got: Vec<&[u8]> = tail.iter().collect();
                        prop_assert_eq!(got.len(), tail.len());
                        prop_assert_eq!(got, want.iter().map(Vec::as_slice).collect::<Vec<_>>());
                        // Put it back to keep going with the whole model.
                        for e in tail.iter() { node.push_back(e); }
                        model.extend(want);
                    }
                    _ => {
                        node.seal();
                        prop_assert_eq!(node.get(index), model.get(index).map(Vec::as_slice));
                    }
                }
                prop_assert_eq!(node.len(), model.len());
                let encoded: usize = model.iter().map(|e| encoded_size(e.len())).sum();
                prop_assert_eq!(node.bytes(), encoded);
                for (i, e) in model.iter().enumerate() {
                    prop_assert_eq!(node.get(i), Some(e.as_slice()));
                }
            }
            let got: Vec<&[u8]> = node.iter().collect();
            prop_assert_eq!(got, model.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_node_used_as_a_queue_stays_small() {
        // RPUSH + LPOP, then LPUSH + RPOP, a few elements live at a time.
        for pushed_at_front in [false, true] {
            let mut node = ListNode::default();
            for i in 0..100_000u32 {
                if pushed_at_front {
                    node.push_front(&i.to_le_bytes());
                } else {
                    node.push_back(&i.to_le_bytes());
                }
                if node.len() > 3 {
                    if pushed_at_front {
                        node.pop_back();
                    } else {
                        node.pop_front();
                    }
                }
                assert!(
                    node.heap_size() <= 256,
                    "{} bytes after {i}",
                    node.heap_size()
                );
            }
        }
    }

    #[test]
    fn a_short_element_takes_its_length_plus_two_bytes() {
        let mut node = ListNode::default();
        for i in 0..100u8 {
            node.push_front(&[i, i, i]);
        }
        node.seal();
        assert_eq!(node.bytes(), 500);
        assert_eq!(node.heap_size(), 500);
        assert_eq!(encoded_size(127), 129);
        assert_eq!(encoded_size(128), 132);
    }
}
