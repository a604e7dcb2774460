//! Big strings as a row of shared fixed-size pieces.
//!
//! A snapshot keeps a value as it stood at its start while writers go on changing it.
//! Held whole, a 100 MB string cost the writer that edited it (APPEND, SETRANGE, SETBIT)
//! a copy of all of it, 70-100 ms and 100 MB, once per snapshot: a bitmap is exactly such
//! a value. In pieces of [`PIECE`] bytes behind `Arc`s, a clone copies pointers and an
//! edit copies only the pieces it writes to while a clone still shares them, as a forked
//! Redis copies the pages it touches.
//!
//! Every piece but the last holds exactly `PIECE` bytes, so byte `i` sits in piece
//! `i / PIECE`; the last holds 1..=PIECE (there are none when the string is empty).

use std::sync::Arc;

pub const PIECE: usize = 64 * 1024;

#[derive(Clone, Debug, Default)]
pub struct Pieces {
    pieces: Vec<Arc<Vec<u8>>>,
    len: usize,
}

impl Pieces {
    pub fn from_slice(bytes: &[u8]) -> Pieces {
        Pieces {
            pieces: bytes.chunks(PIECE).map(|c| Arc::new(c.to_vec())).collect(),
            len: bytes.len(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, piece by piece.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.pieces.iter().map(|p| p.as_slice())
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for p in self.iter() {
            out.extend_from_slice(p);
        }
        out
    }

    /// Bytes `start..end` (within the string) copied out.
    pub fn range_to_vec(&self, start: usize, end: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(end.saturating_sub(start));
        let mut at = start;
        while at < end.min(self.len) {
            let piece = &self.pieces[at / PIECE];
            let from = at % PIECE;
            let to = (from + (end - at)).min(piece.len());
            out.extend_from_slice(&piece[from..to]);
            at += to - from;
        }
        out
    }

    pub fn byte(&self, i: usize) -> Option<u8> {
        self.pieces.get(i / PIECE)?.get(i % PIECE).copied()
    }

    /// Grows the string with zero bytes to `len` (no-op when it is longer already).
    fn zero_extend(&mut self, len: usize) {
        const ZEROS: [u8; 4096] = [0; 4096];
        while self.len < len {
            self.append(&ZEROS[..(len - self.len).min(ZEROS.len())]);
        }
    }

    pub fn append(&mut self, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            let room = PIECE - self.len % PIECE;
            let (now, later) = rest.split_at(room.min(rest.len()));
            if room == PIECE {
                self.pieces.push(Arc::new(now.to_vec()));
            } else if let Some(last) = self.pieces.last_mut() {
                Arc::make_mut(last).extend_from_slice(now);
            }
            self.len += now.len();
            rest = later;
        }
    }

    /// SETRANGE: writes `data` at `offset`, padding with zero bytes up to it.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) {
        self.zero_extend(offset + data.len());
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let piece = Arc::make_mut(&mut self.pieces[at / PIECE]);
            let from = at % PIECE;
            let n = rest.len().min(piece.len() - from);
            piece[from..from + n].copy_from_slice(&rest[..n]);
            at += n;
            rest = &rest[n..];
        }
    }

    /// Byte `i` for an edit, padding with zero bytes up to it.
    pub fn byte_mut(&mut self, i: usize) -> &mut u8 {
        self.zero_extend(i + 1);
        &mut Arc::make_mut(&mut self.pieces[i / PIECE])[i % PIECE]
    }

    pub fn heap_size(&self) -> usize {
        self.pieces.capacity() * 8 + self.pieces.iter().map(|p| 40 + p.capacity()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Edit {
        Append(Vec<u8>),
        WriteAt(usize, Vec<u8>),
        SetByte(usize, u8),
        Clone,
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..3 * PIECE / 2);
        prop_oneof![
            bytes.clone().prop_map(Edit::Append),
            (0..4 * PIECE, bytes).prop_map(|(o, b)| Edit::WriteAt(o, b)),
            (0..4 * PIECE, any::<u8>()).prop_map(|(i, b)| Edit::SetByte(i, b)),
            Just(Edit::Clone),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_a_vec_and_clones_keep_their_bytes(
            start in proptest::collection::vec(any::<u8>(), 0..2 * PIECE + 5),
            edits in proptest::collection::vec(edit(), 1..12),
        ) {
            let mut p = Pieces::from_slice(&start);
            let mut model = start.clone();
            let mut clones: Vec<(Pieces, Vec<u8>)> = Vec::new();
            for e in edits {
                match e {
                    Edit::Append(b) => {
                        p.append(&b);
                        model.extend_from_slice(&b);
                    }
                    Edit::WriteAt(o, b) => {
                        p.write_at(o, &b);
                        if model.len() < o + b.len() {
                            model.resize(o + b.len(), 0);
                        }
                        model[o..o + b.len()].copy_from_slice(&b);
                    }
                    Edit::SetByte(i, b) => {
                        *p.byte_mut(i) = b;
                        if model.len() <= i {
                            model.resize(i + 1, 0);
                        }
                        model[i] = b;
                    }
                    Edit::Clone => clones.push((p.clone(), model.clone())),
                }
                prop_assert_eq!(p.len(), model.len());
                // Every piece but the last is full.
                let sizes: Vec<usize> = p.iter().map(<[u8]>::len).collect();
                if let Some((last, full)) = sizes.split_last() {
                    prop_assert!(full.iter().all(|&s| s == PIECE));
                    prop_assert!((1..=PIECE).contains(last));
                }
            }
            prop_assert_eq!(&p.to_vec(), &model);
            for (i, b) in model.iter().enumerate().step_by(997) {
                prop_assert_eq!(p.byte(i), Some(*b));
            }
            prop_assert_eq!(p.byte(model.len()), None);
            let (a, b) = (model.len() / 3, model.len() / 3 * 2 + 7);
            prop_assert_eq!(p.range_to_vec(a, b), model[a..b.min(model.len())].to_vec());
            for (c, m) in clones {
                prop_assert_eq!(c.to_vec(), m);
            }
        }
    }

    #[test]
    fn an_edit_after_a_clone_copies_one_piece() {
        let mut p = Pieces::from_slice(&vec![7u8; 10 * PIECE]);
        let held = p.clone();
        *p.byte_mut(3 * PIECE + 5) = 1;
        let shared = p
            .pieces
            .iter()
            .zip(&held.pieces)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, 9);
        assert_eq!(held.byte(3 * PIECE + 5), Some(7));
        assert_eq!(p.byte(3 * PIECE + 5), Some(1));
    }
}
