//! Sorted sets: members ordered by (score, member).
//!
//! Small sets are one packed buffer in (score, member) order (`PackedZSet`, Redis'
//! listpack encoding: linear scans, fine for at most `zset-max-listpack-entries`). Large sets are an
//! order-statistics B+tree with shared nodes (`rank_tree`) plus a member -> score map for
//! ZSCORE.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::compact::CompactKey;
use crate::packed_zset::{PackedZSet, Upsert};
use crate::rank_tree::{cmp, RankTree};
use crate::shards::{Sharded, SHARD_AT};

type ScoreTable = indexmap::IndexMap<CompactKey, f64, hashbrown::DefaultHashBuilder>;

/// Member -> score. Past [`SHARD_AT`] members it splits into shared shards as huge hashes
/// do, so that with the order's shared nodes a snapshot's copy of a huge sorted set is a
/// few pointers.
#[derive(Clone, Debug)]
enum Scores {
    /// Insertion-ordered, so positions serve as ZSCAN cursors (see `scan_window`).
    Table(ScoreTable),
    Shards(Sharded<f64>),
}

impl Scores {
    fn get(&self, member: &[u8]) -> Option<f64> {
        match self {
            Scores::Table(t) => t.get(member).copied(),
            Scores::Shards(s) => s.get(member).copied(),
        }
    }

    /// Sets `member`'s score, in place if it is there; the score it had. An equal score
    /// (0 for -0 too) is left as it was, as Redis and the packed form leave it.
    fn set(&mut self, member: &[u8], score: f64) -> Option<f64> {
        match self {
            Scores::Table(t) => {
                if let Some(s) = t.get_mut(member) {
                    let old = *s;
                    if old != score {
                        *s = score;
                    }
                    return Some(old);
                }
                t.insert(CompactKey::new(member), score);
                if t.len() > SHARD_AT {
                    let table = std::mem::take(t);
                    *self = Scores::Shards(Sharded::split(table.into_iter()));
                }
                None
            }
            Scores::Shards(s) => s.replace_unless(member, score, |old| *old == score),
        }
    }

    fn remove(&mut self, member: &[u8]) -> Option<f64> {
        match self {
            Scores::Table(t) => t.swap_remove(member),
            Scores::Shards(s) => {
                let score = s.get(member).copied()?;
                s.remove(member);
                Some(score)
            }
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (f64, &[u8])> + '_> {
        match self {
            Scores::Table(t) => Box::new(t.iter().map(|(m, s)| (*s, m.as_bytes()))),
            Scores::Shards(sh) => Box::new(sh.iter().map(|(m, s)| (*s, m.as_bytes()))),
        }
    }
}

/// The large form: a tree for order, a map for scores.
#[derive(Clone, Debug)]
pub struct ZTree {
    order: RankTree,
    scores: Scores,
}

#[derive(Clone, Debug)]
pub enum ZSetValue {
    /// Sorted by (score, member); inline in the key's entry.
    Packed(PackedZSet),
    Tree(Box<ZTree>),
}

impl ZSetValue {
    /// The split score table of a big sorted set, for a pipeline's prefetch.
    pub(crate) fn split_scores(&self) -> Option<&Sharded<f64>> {
        match self {
            ZSetValue::Tree(t) => match &t.scores {
                Scores::Shards(s) => Some(s),
                Scores::Table(_) => None,
            },
            ZSetValue::Packed(_) => None,
        }
    }
}

impl Default for ZSetValue {
    fn default() -> Self {
        ZSetValue::Packed(PackedZSet::default())
    }
}

impl PartialEq for ZSetValue {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.range(0, self.len()).eq(other.range(0, other.len()))
    }
}

impl Eq for ZSetValue {}

/// `zset-max-listpack-entries` / `-value`.
#[derive(Debug)]
pub struct ZSetLimits {
    pub max_entries: AtomicUsize,
    pub max_value: AtomicUsize,
}

impl Default for ZSetLimits {
    fn default() -> Self {
        ZSetLimits {
            max_entries: AtomicUsize::new(128),
            max_value: AtomicUsize::new(64),
        }
    }
}

impl ZSetValue {
    pub fn len(&self) -> usize {
        match self {
            ZSetValue::Packed(v) => v.len(),
            ZSetValue::Tree(t) => t.order.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            ZSetValue::Packed(v) => v.is_empty(),
            ZSetValue::Tree(t) => t.order.len() == 0,
        }
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            ZSetValue::Packed(_) => "listpack",
            ZSetValue::Tree(_) => "skiplist",
        }
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        match self {
            ZSetValue::Packed(v) => v.score(member),
            ZSetValue::Tree(t) => t.scores.get(member),
        }
    }

    fn convert(&mut self) {
        if let ZSetValue::Packed(v) = self {
            let mut t = ZTree {
                order: RankTree::default(),
                scores: Scores::Table(ScoreTable::with_capacity_and_hasher(
                    v.len(),
                    Default::default(),
                )),
            };
            for (s, m) in v.iter() {
                t.order.insert(s, m);
                t.scores.set(m, s);
            }
            *self = ZSetValue::Tree(Box::new(t));
        }
    }

    /// Adds or re-scores `member`; returns true if it is new.
    pub fn insert(&mut self, member: &[u8], score: f64, limits: &ZSetLimits) -> bool {
        self.upsert(member, score, limits) == Upsert::Added
    }

    /// Adds or re-scores `member` and says which it did (never [`Upsert::Full`]): a
    /// plain ZADD needs no separate score lookup first.
    pub fn upsert(&mut self, member: &[u8], score: f64, limits: &ZSetLimits) -> Upsert {
        if let ZSetValue::Packed(v) = self {
            let fits = member.len() <= limits.max_value.load(Ordering::Relaxed);
            match v.upsert(
                score,
                member,
                limits.max_entries.load(Ordering::Relaxed),
                fits,
            ) {
                Upsert::Full => self.convert(),
                done => return done,
            }
        }
        let ZSetValue::Tree(t) = self else {
            unreachable!("a packed sorted set converts when full");
        };
        // One map lookup sets the score and tells what it was; a re-score moves the
        // member in the order only.
        match t.scores.set(member, score) {
            Some(old) if old == score => Upsert::Unchanged,
            Some(old) => {
                t.order.remove(old, member);
                t.order.insert(score, member);
                Upsert::Rescored
            }
            None => {
                t.order.insert(score, member);
                Upsert::Added
            }
        }
    }

    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self {
            ZSetValue::Packed(v) => v.remove(member),
            ZSetValue::Tree(t) => match t.scores.remove(member) {
                Some(s) => {
                    t.order.remove(s, member);
                    true
                }
                None => false,
            },
        }
    }

    /// Number of leading elements (in (score, member) order) for which `before` holds; the
    /// predicate must be true for a prefix and false after (score and lex bounds are).
    pub fn count_prefix(&self, before: &dyn Fn(f64, &[u8]) -> bool) -> usize {
        match self {
            ZSetValue::Packed(v) => v.count_prefix(before),
            ZSetValue::Tree(t) => t.order.count_prefix(before),
        }
    }

    /// 0-based rank of `member` in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let s = self.score(member)?;
        Some(self.count_prefix(&|sc, m| cmp((sc, m), (s, member)) == CmpOrdering::Less))
    }

    pub fn get(&self, rank: usize) -> Option<(f64, &[u8])> {
        match self {
            ZSetValue::Packed(v) => v.get(rank),
            ZSetValue::Tree(t) => t.order.select(rank),
        }
    }

    /// Every element, in no particular order: the large form's score map, a sequential
    /// walk (RDB does not need rank order).
    pub fn unordered(&self) -> Box<dyn Iterator<Item = (f64, &[u8])> + '_> {
        match self {
            ZSetValue::Packed(v) => Box::new(v.iter()),
            ZSetValue::Tree(t) => t.scores.iter(),
        }
    }

    /// Whether a clone shares its storage (a huge set: tree nodes and score shards).
    pub fn clone_is_shallow(&self) -> bool {
        matches!(self, ZSetValue::Tree(t) if matches!(t.scores, Scores::Shards(_)))
    }

    /// Elements with ranks `start..end`, ascending.
    pub fn range(&self, start: usize, end: usize) -> Box<dyn Iterator<Item = (f64, &[u8])> + '_> {
        let count = end.min(self.len()).saturating_sub(start);
        match self {
            ZSetValue::Packed(v) => Box::new(v.iter().skip(start).take(count)),
            ZSetValue::Tree(t) => Box::new(t.order.iter_from(start).take(count)),
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            ZSetValue::Packed(v) => v.heap_size(),
            ZSetValue::Tree(t) => {
                std::mem::size_of::<ZTree>()
                    + t.order.heap_size()
                    + match &t.scores {
                        Scores::Table(table) => table.capacity() * 49,
                        Scores::Shards(s) => s.iter().map(|(m, _)| 49 + m.heap_size()).sum(),
                    }
            }
        }
    }

    /// One ZSCAN step: (next cursor, (member, score)); a packed set is returned whole.
    pub fn scan(&self, cursor: u64, count: usize) -> (u64, Vec<(&[u8], f64)>) {
        match self {
            ZSetValue::Packed(v) => (0, v.iter().map(|(s, m)| (m, s)).collect()),
            ZSetValue::Tree(t) => match &t.scores {
                Scores::Table(table) => {
                    let (window, next) =
                        crate::collections::scan_window(table.len(), cursor, count);
                    let items = window
                        .rev()
                        .filter_map(|i| table.get_index(i))
                        .map(|(m, s)| (m.as_bytes(), *s))
                        .collect();
                    (next, items)
                }
                Scores::Shards(sh) => {
                    let (next, items) = sh.scan(cursor, count);
                    (
                        next,
                        items.into_iter().map(|(m, s)| (m.as_bytes(), *s)).collect(),
                    )
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_equal_score_leaves_the_stored_one_in_either_form() {
        let limits = ZSetLimits::default();
        // Packed; a tree with a table of scores (a long member converts it); a tree with
        // sharded scores (past SHARD_AT, 64 in tests).
        for (size, long) in [(3, false), (3, true), (300, false)] {
            let mut z = ZSetValue::default();
            for i in 0..size {
                z.insert(format!("m{i}").as_bytes(), 1.0, &limits);
            }
            if long {
                z.insert(&[b'x'; 100], 2.0, &limits);
                assert!(matches!(&z, ZSetValue::Tree(t) if matches!(t.scores, Scores::Table(_))));
            }
            z.insert(b"zero", 0.0, &limits);
            assert_eq!(z.upsert(b"zero", -0.0, &limits), Upsert::Unchanged);
            let stored = z.score(b"zero").unwrap();
            assert!(
                stored == 0.0 && stored.is_sign_positive(),
                "{size}: {stored}"
            );
            let ranked = z.get(z.rank(b"zero").unwrap()).unwrap().0;
            assert!(ranked.is_sign_positive(), "{size}: {ranked}");
        }
    }

    #[test]
    fn a_sorted_set_fits_inline_in_a_value() {
        // A small one is its packed buffer alone, as a small hash is.
        assert_eq!(std::mem::size_of::<ZSetValue>(), 16);
    }

    proptest! {
        #[test]
        fn matches_a_sorted_model(ops in proptest::collection::vec((any::<bool>(), 0u8..150, -5i32..5), 1..400)) {
            let limits = ZSetLimits::default();
            limits.max_entries.store(8, Ordering::Relaxed);
            let mut z = ZSetValue::default();
            let mut model: std::collections::BTreeMap<Vec<u8>, f64> = Default::default();
            for (add, m, s) in ops {
                let member = format!("m{m}").into_bytes();
                if add {
                    prop_assert_eq!(z.insert(&member, f64::from(s), &limits), !model.contains_key(&member));
                    model.insert(member, f64::from(s));
                } else {
                    prop_assert_eq!(z.remove(&member), model.remove(&member).is_some());
                }
                prop_assert_eq!(z.len(), model.len());
            }
            let mut sorted: Vec<(f64, Vec<u8>)> = model.iter().map(|(m, s)| (*s, m.clone())).collect();
            sorted.sort_by(|a, b| cmp((a.0, &a.1), (b.0, &b.1)));
            let got: Vec<(f64, Vec<u8>)> = z.range(0, z.len()).map(|(s, m)| (s, m.to_vec())).collect();
            prop_assert_eq!(&got, &sorted);
            let mut all: Vec<(f64, Vec<u8>)> = z.unordered().map(|(s, m)| (s, m.to_vec())).collect();
            all.sort_by(|a, b| cmp((a.0, &a.1), (b.0, &b.1)));
            prop_assert_eq!(&all, &sorted);
            // Every window, including ones running past the end.
            for start in 0..=sorted.len() {
                for width in [0, 1, 3, 50] {
                    let window: Vec<(f64, Vec<u8>)> = z.range(start, start + width).map(|(s, m)| (s, m.to_vec())).collect();
                    let want = &sorted[start..(start + width).min(sorted.len())];
                    prop_assert_eq!(&window[..], want);
                }
            }
            for (i, (s, m)) in sorted.iter().enumerate() {
                prop_assert_eq!(z.rank(m), Some(i));
                prop_assert_eq!(z.score(m), Some(*s));
            }
            let below_zero = sorted.iter().filter(|(s, _)| *s < 0.0).count();
            prop_assert_eq!(z.count_prefix(&|s, _| s < 0.0), below_zero);
            // A full ZSCAN returns every member with its score, whichever the score map's form.
            let mut scanned = Vec::new();
            let mut cursor = 0;
            for _ in 0..=sorted.len() + 2 * crate::shards::SHARDS {
                let (next, items) = z.scan(cursor, 7);
                scanned.extend(items.into_iter().map(|(m, s)| (s, m.to_vec())));
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            prop_assert_eq!(cursor, 0);
            scanned.sort_by(|a, b| cmp((a.0, &a.1), (b.0, &b.1)));
            scanned.dedup();
            prop_assert_eq!(&scanned, &sorted);
        }
    }
}
