//! Sorted sets: members ordered by (score, member).
//!
//! Small sets are a sorted vector (Redis' listpack encoding: binary search, memmove on
//! insert, fine for at most `zset-max-listpack-entries`). Large sets are an order-statistics
//! treap in an arena (every node knows its subtree size, so rank and select are O(log n),
//! which Redis gets from its skiplist spans) plus a member -> score map for ZSCORE.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicUsize, Ordering};

type ScoreTable = indexmap::IndexMap<CompactKey, f64, hashbrown::DefaultHashBuilder>;

use crate::compact::CompactKey;

const NIL: u32 = u32::MAX;

fn cmp(a: (f64, &[u8]), b: (f64, &[u8])) -> CmpOrdering {
    match a.0.partial_cmp(&b.0) {
        Some(CmpOrdering::Equal) | None => a.1.cmp(b.1),
        Some(o) => o,
    }
}

#[derive(Clone, Debug)]
struct Node {
    score: f64,
    member: CompactKey,
    left: u32,
    right: u32,
    size: u32,
    prio: u32,
}

/// An order-statistics treap over (score, member).
#[derive(Clone, Debug, Default)]
pub struct Treap {
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
}

impl Treap {
    fn new() -> Treap {
        Treap {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
        }
    }

    fn size(&self, t: u32) -> u32 {
        if t == NIL {
            0
        } else {
            self.nodes[t as usize].size
        }
    }

    fn fix(&mut self, t: u32) {
        let (l, r) = (self.nodes[t as usize].left, self.nodes[t as usize].right);
        self.nodes[t as usize].size = 1 + self.size(l) + self.size(r);
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].prio > self.nodes[b as usize].prio {
            let r = self.nodes[a as usize].right;
            let m = self.merge(r, b);
            self.nodes[a as usize].right = m;
            self.fix(a);
            a
        } else {
            let l = self.nodes[b as usize].left;
            let m = self.merge(a, l);
            self.nodes[b as usize].left = m;
            self.fix(b);
            b
        }
    }

    /// Points whichever link (root or a parent's child) held `old` at `new`.
    fn relink(&mut self, parent: Option<u32>, old: u32, new: u32) {
        match parent {
            None => self.root = new,
            Some(p) => {
                let n = &mut self.nodes[p as usize];
                if n.left == old {
                    n.left = new;
                } else {
                    n.right = new;
                }
            }
        }
    }

    /// Insert by one descent (bumping subtree sizes on the way) and rotations back up by
    /// priority: about one cache line per level, where split/merge touch three.
    fn insert(&mut self, score: f64, member: &[u8]) {
        let node = Node {
            score,
            member: CompactKey::new(member),
            left: NIL,
            right: NIL,
            size: 1,
            prio: fastrand::u32(..),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        if self.root == NIL {
            self.root = id;
            return;
        }
        let mut path: Vec<u32> = Vec::with_capacity(48);
        let mut t = self.root;
        loop {
            self.nodes[t as usize].size += 1;
            path.push(t);
            let n = &self.nodes[t as usize];
            let go_left = cmp((score, member), (n.score, &n.member)) == CmpOrdering::Less;
            let next = if go_left { n.left } else { n.right };
            if next == NIL {
                if go_left {
                    self.nodes[t as usize].left = id;
                } else {
                    self.nodes[t as usize].right = id;
                }
                break;
            }
            t = next;
        }
        // Rotate the new node up while its priority beats its parent's.
        while let Some(p) = path.pop() {
            if self.nodes[id as usize].prio <= self.nodes[p as usize].prio {
                break;
            }
            if self.nodes[p as usize].left == id {
                let moved = self.nodes[id as usize].right;
                self.nodes[p as usize].left = moved;
                self.nodes[id as usize].right = p;
            } else {
                let moved = self.nodes[id as usize].left;
                self.nodes[p as usize].right = moved;
                self.nodes[id as usize].left = p;
            }
            self.fix(p);
            self.fix(id);
            self.relink(path.last().copied(), p, id);
        }
    }

    /// Removes an element known to be present: one descent decrementing sizes, then its
    /// two subtrees merged in its place.
    fn remove(&mut self, score: f64, member: &[u8]) {
        let mut parent = None;
        let mut t = self.root;
        let mut path = Vec::with_capacity(48);
        while t != NIL {
            let n = &self.nodes[t as usize];
            match cmp((score, member), (n.score, &n.member)) {
                CmpOrdering::Equal => break,
                CmpOrdering::Less => {
                    path.push(t);
                    parent = Some(t);
                    t = n.left;
                }
                CmpOrdering::Greater => {
                    path.push(t);
                    parent = Some(t);
                    t = n.right;
                }
            }
        }
        if t == NIL {
            return;
        }
        for p in path {
            self.nodes[p as usize].size -= 1;
        }
        let (l, r) = (self.nodes[t as usize].left, self.nodes[t as usize].right);
        let merged = self.merge(l, r);
        self.relink(parent, t, merged);
        self.nodes[t as usize].member = CompactKey::new(b"");
        self.free.push(t);
    }

    /// How many leading elements satisfy `before` (a predicate true for a prefix).
    fn count_prefix(&self, before: &dyn Fn(f64, &[u8]) -> bool) -> usize {
        let (mut t, mut n) = (self.root, 0usize);
        while t != NIL {
            let node = &self.nodes[t as usize];
            if before(node.score, &node.member) {
                n += self.size(node.left) as usize + 1;
                t = node.right;
            } else {
                t = node.left;
            }
        }
        n
    }

    /// In order from rank `k` on: the path down to rank `k` is stacked (the nodes it
    /// passes on their left side come after it), so a range costs O(log n + count) where
    /// selecting each rank cost O(log n) apiece.
    fn iter_from(&self, mut k: usize) -> InOrder<'_> {
        let mut stack = Vec::new();
        let mut t = self.root;
        while t != NIL {
            let node = &self.nodes[t as usize];
            let ls = self.size(node.left) as usize;
            match k.cmp(&ls) {
                CmpOrdering::Less => {
                    stack.push(t);
                    t = node.left;
                }
                CmpOrdering::Equal => {
                    stack.push(t);
                    break;
                }
                CmpOrdering::Greater => {
                    k -= ls + 1;
                    t = node.right;
                }
            }
        }
        InOrder { treap: self, stack }
    }

    fn select(&self, mut k: usize) -> Option<(f64, &[u8])> {
        let mut t = self.root;
        while t != NIL {
            let node = &self.nodes[t as usize];
            let ls = self.size(node.left) as usize;
            match k.cmp(&ls) {
                CmpOrdering::Less => t = node.left,
                CmpOrdering::Equal => return Some((node.score, &node.member)),
                CmpOrdering::Greater => {
                    k -= ls + 1;
                    t = node.right;
                }
            }
        }
        None
    }
}

/// A treap's elements in order, from where [`Treap::iter_from`] started.
struct InOrder<'a> {
    treap: &'a Treap,
    stack: Vec<u32>,
}

impl<'a> Iterator for InOrder<'a> {
    type Item = (f64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let t = self.stack.pop()?;
        let node = &self.treap.nodes[t as usize];
        let mut c = node.right;
        while c != NIL {
            self.stack.push(c);
            c = self.treap.nodes[c as usize].left;
        }
        Some((node.score, node.member.as_bytes()))
    }
}

/// The large form: treap for order, map for scores.
#[derive(Clone, Debug)]
pub struct ZTree {
    order: Treap,
    /// Insertion-ordered, so positions serve as ZSCAN cursors (see `scan_window`).
    scores: ScoreTable,
}

#[derive(Clone, Debug)]
pub enum ZSetValue {
    /// Sorted by (score, member).
    Packed(Vec<(f64, CompactKey)>),
    Tree(Box<ZTree>),
}

impl Default for ZSetValue {
    fn default() -> Self {
        ZSetValue::Packed(Vec::new())
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
            ZSetValue::Tree(t) => t.scores.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            ZSetValue::Packed(_) => "listpack",
            ZSetValue::Tree(_) => "skiplist",
        }
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        match self {
            ZSetValue::Packed(v) => v
                .iter()
                .find(|(_, m)| m.as_bytes() == member)
                .map(|(s, _)| *s),
            ZSetValue::Tree(t) => t.scores.get(member).copied(),
        }
    }

    fn convert(&mut self) {
        if let ZSetValue::Packed(v) = self {
            let mut t = ZTree {
                order: Treap::new(),
                scores: ScoreTable::with_capacity_and_hasher(v.len(), Default::default()),
            };
            for (s, m) in v.iter() {
                t.order.insert(*s, m);
                t.scores.insert(m.clone(), *s);
            }
            *self = ZSetValue::Tree(Box::new(t));
        }
    }

    /// Adds or re-scores `member`; returns true if it is new.
    pub fn insert(&mut self, member: &[u8], score: f64, limits: &ZSetLimits) -> bool {
        let old = self.score(member);
        if let Some(old) = old {
            if old == score {
                return false;
            }
            // A re-score of a large set moves the member in the order only; its map
            // entry is updated in place.
            if let ZSetValue::Tree(t) = self {
                t.order.remove(old, member);
                t.order.insert(score, member);
                if let Some(s) = t.scores.get_mut(member) {
                    *s = score;
                }
                return false;
            }
            self.remove(member);
        }
        if let ZSetValue::Packed(v) = self {
            if v.len() < limits.max_entries.load(Ordering::Relaxed)
                && member.len() <= limits.max_value.load(Ordering::Relaxed)
            {
                let at =
                    v.partition_point(|(s, m)| cmp((*s, m), (score, member)) == CmpOrdering::Less);
                v.insert(at, (score, CompactKey::new(member)));
                return old.is_none();
            }
            self.convert();
        }
        if let ZSetValue::Tree(t) = self {
            t.order.insert(score, member);
            t.scores.insert(CompactKey::new(member), score);
        }
        old.is_none()
    }

    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self {
            ZSetValue::Packed(v) => match v.iter().position(|(_, m)| m.as_bytes() == member) {
                Some(i) => {
                    v.remove(i);
                    true
                }
                None => false,
            },
            ZSetValue::Tree(t) => match t.scores.swap_remove(member) {
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
            ZSetValue::Packed(v) => v.partition_point(|(s, m)| before(*s, m)),
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
            ZSetValue::Packed(v) => v.get(rank).map(|(s, m)| (*s, m.as_bytes())),
            ZSetValue::Tree(t) => t.order.select(rank),
        }
    }

    /// Every element, in no particular order: the large form's score map in insertion
    /// order, a sequential walk (RDB does not need rank order, and the treap's in-order
    /// walk chases a pointer per element).
    pub fn unordered(&self) -> Box<dyn Iterator<Item = (f64, &[u8])> + '_> {
        match self {
            ZSetValue::Packed(v) => Box::new(v.iter().map(|(s, m)| (*s, m.as_bytes()))),
            ZSetValue::Tree(t) => Box::new(t.scores.iter().map(|(m, s)| (*s, m.as_bytes()))),
        }
    }

    /// Elements with ranks `start..end`, ascending.
    pub fn range(&self, start: usize, end: usize) -> Box<dyn Iterator<Item = (f64, &[u8])> + '_> {
        let count = end.min(self.len()).saturating_sub(start);
        match self {
            ZSetValue::Packed(v) => Box::new(
                v.iter()
                    .skip(start)
                    .take(count)
                    .map(|(s, m)| (*s, m.as_bytes())),
            ),
            ZSetValue::Tree(t) => Box::new(t.order.iter_from(start).take(count)),
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            ZSetValue::Packed(v) => v.capacity() * 32,
            ZSetValue::Tree(t) => t.order.nodes.capacity() * 48 + t.scores.capacity() * 49,
        }
    }

    /// One ZSCAN step: (next cursor, (member, score)); a packed set is returned whole.
    pub fn scan(&self, cursor: u64, count: usize) -> (u64, Vec<(&[u8], f64)>) {
        match self {
            ZSetValue::Packed(v) => (0, v.iter().map(|(s, m)| (m.as_bytes(), *s)).collect()),
            ZSetValue::Tree(t) => {
                let (window, next) = crate::collections::scan_window(t.scores.len(), cursor, count);
                let items = window
                    .rev()
                    .filter_map(|i| t.scores.get_index(i))
                    .map(|(m, s)| (m.as_bytes(), *s))
                    .collect();
                (next, items)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_a_sorted_model(ops in proptest::collection::vec((any::<bool>(), 0u8..40, -5i32..5), 1..300)) {
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
        }
    }
}
