//! `PackedZSet`: a small sorted set as one byte buffer, the idea of Redis' listpack.
//!
//! A small sorted set was a `Vec` of (score, 24-byte inline member) behind a box of its
//! own: 5 members of 16 bytes took 376 bytes a key where Redis takes 197. Here each entry
//! is the member's length (LEB128), its bytes and its score, in (score, member) order, in
//! a buffer of exactly that size held inline in the key's entry: operations are linear
//! scans, bounded by `zset-max-listpack-entries`. A whole score of up to 53 bits (counts,
//! ranks, millisecond timestamps) takes 1 to 8 bytes as listpack integers do; any other
//! score takes 9.

use std::cmp::Ordering;
use std::ops::Range;

use crate::packed::{get_len, len_size, put_len_into, resize_range, splice_exact};
use crate::rank_tree::cmp;

/// The first byte of a score stored as the 8 bytes of an `f64` that follow it. A whole
/// score is stored as LEB128 of its zigzag code plus one, whose first byte is never 0.
const FLOAT_SCORE: u8 = 0;

/// Largest magnitude stored as an integer: every integer up to it is an exact `f64`.
const MAX_WHOLE: f64 = 9_007_199_254_740_992.0; // 2^53

/// A whole score's code (see [`FLOAT_SCORE`]), or None for the float form.
fn whole_code(score: f64) -> Option<usize> {
    // -0.0 keeps its sign (Redis keeps it too), so it is not stored as the integer 0.
    if score.fract() != 0.0 || score.abs() > MAX_WHOLE || (score == 0.0 && score.is_sign_negative())
    {
        return None;
    }
    // Exact: a whole number within 2^53.
    let whole = score as i64;
    let zigzag = ((whole << 1) ^ (whole >> 63)) as u64;
    // Lengths are `usize`: where that is 32 bits, bigger codes take the float form.
    usize::try_from(zigzag + 1).ok()
}

/// Writes `score` at the start of `out`, given its `whole_code`.
fn put_score_into(out: &mut [u8], score: f64, code: Option<usize>) {
    match code {
        Some(code) => {
            put_len_into(out, code);
        }
        None => {
            out[0] = FLOAT_SCORE;
            out[1..9].copy_from_slice(&score.to_le_bytes());
        }
    }
}

/// Bytes an entry of `member` takes with a score of `whole_code` `code`.
fn entry_size(member: &[u8], code: Option<usize>) -> usize {
    len_size(member.len()) + member.len() + code.map_or(9, len_size)
}

/// Writes an entry (see [`entry_size`]) at the start of `out`.
fn put_entry_into(out: &mut [u8], score: f64, member: &[u8], code: Option<usize>) {
    let k = put_len_into(out, member.len());
    out[k..k + member.len()].copy_from_slice(member);
    put_score_into(&mut out[k + member.len()..], score, code);
}

/// (score, bytes it took) at `at`.
fn get_score(buf: &[u8], at: usize) -> Option<(f64, usize)> {
    if *buf.get(at)? == FLOAT_SCORE {
        let bytes = buf.get(at + 1..at + 9)?;
        return Some((f64::from_le_bytes(bytes.try_into().ok()?), 9));
    }
    let (code, used) = get_len(buf, at);
    let zigzag = (code as u64).checked_sub(1)?;
    let whole = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
    Some((whole as f64, used))
}

/// Bytes `put_score_into` writes for `score`.
#[cfg(test)]
fn score_size(score: f64) -> usize {
    whole_code(score).map_or(9, len_size)
}

#[derive(Clone, Default, PartialEq)]
pub struct PackedZSet {
    buf: Box<[u8]>,
}

/// What [`PackedZSet::upsert`] did.
#[derive(Debug, PartialEq)]
pub enum Upsert {
    Added,
    Rescored,
    Unchanged,
    /// Not added: the set is at its entry limit or the member is too long for it.
    Full,
}

/// One entry as the buffer holds it.
struct Entry<'a> {
    span: Range<usize>,
    score: f64,
    member: &'a [u8],
}

impl std::fmt::Debug for PackedZSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(s, m)| (s, String::from_utf8_lossy(m))))
            .finish()
    }
}

impl PackedZSet {
    fn entries(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= self.buf.len() {
                return None;
            }
            let (n, k) = get_len(&self.buf, at);
            let member = at + k..at + k + n;
            let (score, used) = get_score(&self.buf, member.end)?;
            let entry = Entry {
                span: at..member.end + used,
                score,
                member: &self.buf[member],
            };
            at = entry.span.end;
            Some(entry)
        })
    }

    pub fn len(&self) -> usize {
        self.entries().count()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn heap_size(&self) -> usize {
        self.buf.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (f64, &[u8])> + '_ {
        self.entries().map(|e| (e.score, e.member))
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.entries().find(|e| e.member == member).map(|e| e.score)
    }

    pub fn get(&self, rank: usize) -> Option<(f64, &[u8])> {
        self.iter().nth(rank)
    }

    /// Number of leading entries for which `before` holds (a prefix, by contract).
    pub fn count_prefix(&self, before: &dyn Fn(f64, &[u8]) -> bool) -> usize {
        self.entries()
            .take_while(|e| before(e.score, e.member))
            .count()
    }

    /// Writes the entry in place: no buffer of its own on ZADD's path.
    fn insert_at(&mut self, at: usize, score: f64, member: &[u8]) {
        let code = whole_code(score);
        let gap = resize_range(&mut self.buf, at..at, entry_size(member, code));
        put_entry_into(gap, score, member, code);
    }

    /// Gives the entry at `span` its new score and moves it to `at` (where the scan
    /// found its place, the entry still there): one resize of the entry, then a rotation
    /// of the entries it passes, instead of a removal and an insertion that each
    /// reallocate the buffer.
    fn rescore(&mut self, span: Range<usize>, at: usize, score: f64, member: &[u8]) {
        let code = whole_code(score);
        let size = entry_size(member, code);
        let gap = resize_range(&mut self.buf, span.clone(), size);
        put_entry_into(gap, score, member, code);
        if at < span.start {
            // Earlier: the entries from `at` to it move up past it.
            self.buf[at..span.start + size].rotate_right(size);
        } else if at > span.end {
            // Later: the entries after it up to `at` (now `size - span.len()` further)
            // move down before it.
            self.buf[span.start..at - span.len() + size].rotate_left(size);
        }
    }

    /// ZADD's step: sets `member`'s score, in one pass over the entries that finds the
    /// member and where its score would go and counts them. A new member is added only
    /// while fewer than `max_entries` are there and it `fits`; else nothing changes and
    /// the caller converts to the large form.
    pub fn upsert(&mut self, score: f64, member: &[u8], max_entries: usize, fits: bool) -> Upsert {
        let (mut count, mut insert_at, mut found) = (0, None, None);
        for entry in self.entries() {
            if found.is_none() && entry.member == member {
                found = Some((entry.span.clone(), entry.score));
            }
            if insert_at.is_none()
                && cmp((entry.score, entry.member), (score, member)) != Ordering::Less
            {
                insert_at = Some(entry.span.start);
            }
            count += 1;
        }
        match found {
            Some((_, old)) if old == score => Upsert::Unchanged,
            Some((span, _)) => {
                self.rescore(span, insert_at.unwrap_or(self.buf.len()), score, member);
                Upsert::Rescored
            }
            None if count >= max_entries || !fits => Upsert::Full,
            None => {
                let at = insert_at.unwrap_or(self.buf.len());
                self.insert_at(at, score, member);
                Upsert::Added
            }
        }
    }

    pub fn remove(&mut self, member: &[u8]) -> bool {
        let Some(span) = self.entries().find(|e| e.member == member).map(|e| e.span) else {
            return false;
        };
        splice_exact(&mut self.buf, span, &[]);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn score() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-3i32..3).prop_map(|s| f64::from(s) / 2.0),
            Just(-0.0),
            Just(MAX_WHOLE),
            Just(-MAX_WHOLE),
            Just(MAX_WHOLE * 2.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            any::<i64>().prop_map(|i| i as f64),
            any::<f64>().prop_filter("a score is never NaN", |f| !f.is_nan()),
        ]
    }

    #[test]
    fn scores_round_trip_in_their_smallest_form() {
        for (score, size) in [
            (0.0, 1),
            (-1.0, 1),
            (63.0, 1),
            (64.0, 2),
            (1.7e12, 6),
            (MAX_WHOLE, 8),
            (-MAX_WHOLE, 8),
            (MAX_WHOLE * 2.0, 9),
            (0.5, 9),
            (-0.0, 9),
            (f64::INFINITY, 9),
        ] {
            let mut buf = vec![0; score_size(score)];
            put_score_into(&mut buf, score, whole_code(score));
            assert_eq!(buf.len(), size, "{score}");
            let (back, used) = get_score(&buf, 0).unwrap();
            assert_eq!(used, size);
            assert_eq!(back.to_bits(), score.to_bits(), "{score}");
        }
    }

    proptest! {
        #[test]
        fn stays_sorted_like_a_model(ops in proptest::collection::vec(
            (any::<bool>(), 0u8..40, score(), 0usize..140), 0..120)
        ) {
            let mut set = PackedZSet::default();
            let mut model: Vec<(f64, Vec<u8>)> = Vec::new();
            for (add, m, score, pad) in ops {
                // Members past 127 bytes take two length bytes.
                let mut member = format!("m{m}").into_bytes();
                member.resize(member.len() + if m % 5 == 0 { pad } else { 0 }, b'.');
                let had = model.iter().position(|(_, x)| *x == member);
                if add {
                    let full = had.is_none() && model.len() >= 30;
                    let want = match had {
                        None if full => Upsert::Full,
                        None => Upsert::Added,
                        Some(i) if model[i].0 == score => Upsert::Unchanged,
                        Some(_) => Upsert::Rescored,
                    };
                    prop_assert_eq!(set.upsert(score, &member, 30, true), want);
                    if let Some(i) = had {
                        // An equal score (0 and -0 included) leaves the entry as it was.
                        if model[i].0 != score {
                            model[i].0 = score;
                        }
                    } else if !full {
                        model.push((score, member));
                    }
                    model.sort_by(|a, b| cmp((a.0, &a.1), (b.0, &b.1)));
                } else {
                    prop_assert_eq!(set.remove(&member), had.is_some());
                    if let Some(i) = had { model.remove(i); }
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert_eq!(set.is_empty(), model.is_empty());
                // In order after every step, as a re-score moves entries both ways.
                let now: Vec<(f64, &[u8])> = set.iter().collect();
                let want: Vec<(f64, &[u8])> = model.iter().map(|(s, m)| (*s, m.as_slice())).collect();
                prop_assert_eq!(now, want);
            }
            let got: Vec<(f64, Vec<u8>)> = set.iter().map(|(s, m)| (s, m.to_vec())).collect();
            prop_assert_eq!(&got, &model);
            for (rank, (score, member)) in model.iter().enumerate() {
                prop_assert_eq!(set.score(member), Some(*score));
                prop_assert_eq!(set.get(rank), Some((*score, member.as_slice())));
            }
            let negative = model.iter().filter(|(s, _)| *s < 0.0).count();
            prop_assert_eq!(set.count_prefix(&|s, _| s < 0.0), negative);
            let encoded: usize = model.iter().map(|(s, m)| len_size(m.len()) + m.len() + score_size(*s)).sum();
            prop_assert_eq!(set.heap_size(), encoded);
        }
    }
}
