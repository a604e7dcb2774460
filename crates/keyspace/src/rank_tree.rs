//! The order of a large sorted set: a B+tree of (score, member) whose inner nodes count
//! the elements under each child (rank and select in O(log n), which Redis gets from its
//! skiplist spans), with nodes behind `Arc`s.
//!
//! The `Arc`s are for snapshots. A snapshot must keep a value as it stood at its start
//! while writers go on changing it; serializing a million-member sorted set for that held
//! its writer 28-40 ms, and copying the arena treap this replaces was slower still. Here a
//! clone is one pointer, and a change copies only the nodes on its path that a clone
//! still shares (`Arc::make_mut`): three or four nodes of at most [`MAX`] entries. Without
//! a clone, `make_mut` finds every node unshared and changes it in place.
//!
//! Leaves hold their elements in one vector each, so walks in order are sequential reads,
//! where the treap chased a pointer per element.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::compact::CompactKey;

/// Elements per leaf and children per inner node; small in tests so that they exercise
/// splits, merges and several levels.
const MAX: usize = if cfg!(test) { 6 } else { 64 };
/// Fewest a node other than the root keeps; below it, it merges with or borrows from a
/// neighbour.
const MIN: usize = if cfg!(test) { 2 } else { MAX / 4 };

pub type Elem = (f64, CompactKey);

/// (score, member) order; Redis never stores a NaN score, so `None` cannot arise from
/// stored data, and falling back to the member keeps the order total regardless.
pub fn cmp(a: (f64, &[u8]), b: (f64, &[u8])) -> Ordering {
    match a.0.partial_cmp(&b.0) {
        Some(Ordering::Equal) | None => a.1.cmp(b.1),
        Some(o) => o,
    }
}

fn cmp_elem(e: &Elem, key: (f64, &[u8])) -> Ordering {
    cmp((e.0, e.1.as_bytes()), key)
}

#[derive(Clone, Debug)]
enum Node {
    Leaf(Vec<Elem>),
    Inner(Inner),
}

#[derive(Clone, Debug)]
struct Inner {
    children: Vec<Arc<Node>>,
    /// Elements under each child.
    counts: Vec<usize>,
    /// `seps[i]` divides `children[i]` from `children[i + 1]`: everything before it is
    /// less, everything after at least as great. It was the right side's least element
    /// when set and may since have been removed, which keeps the division true.
    seps: Vec<Elem>,
}

impl Node {
    /// Entries: elements of a leaf, children of an inner node.
    fn width(&self) -> usize {
        match self {
            Node::Leaf(v) => v.len(),
            Node::Inner(inner) => inner.children.len(),
        }
    }

    fn count(&self) -> usize {
        match self {
            Node::Leaf(v) => v.len(),
            Node::Inner(inner) => inner.counts.iter().sum(),
        }
    }

    /// Splits an overfull node before entry `mid`: the separator and the right side.
    fn split(&mut self, mid: usize) -> (Elem, Node) {
        match self {
            Node::Leaf(v) => {
                let right = new_leaf(v.drain(mid..));
                (right[0].clone(), Node::Leaf(right))
            }
            Node::Inner(inner) => {
                let right = Inner {
                    children: inner.children.split_off(mid),
                    counts: inner.counts.split_off(mid),
                    seps: inner.seps.split_off(mid),
                };
                let sep = inner
                    .seps
                    .pop()
                    .unwrap_or_else(|| unreachable!("split below two children"));
                (sep, Node::Inner(right))
            }
        }
    }

    /// `self` followed by `right`, which `sep` divides from it.
    fn join(&mut self, sep: Elem, right: Node) {
        match (self, right) {
            (Node::Leaf(l), Node::Leaf(r)) => l.extend(r),
            (Node::Inner(l), Node::Inner(r)) => {
                l.children.extend(r.children);
                l.counts.extend(r.counts);
                l.seps.push(sep);
                l.seps.extend(r.seps);
            }
            // Siblings sit at the same depth: every leaf is.
            _ => unreachable!("siblings of different heights"),
        }
    }

    fn heap_size(&self) -> usize {
        match self {
            Node::Leaf(v) => {
                v.capacity() * std::mem::size_of::<Elem>()
                    + v.iter().map(|(_, m)| m.heap_size()).sum::<usize>()
            }
            Node::Inner(inner) => {
                inner.children.capacity() * 8
                    + inner.counts.capacity() * 8
                    + inner.seps.capacity() * std::mem::size_of::<Elem>()
                    + inner
                        .children
                        .iter()
                        .map(|c| 16 + c.heap_size())
                        .sum::<usize>()
            }
        }
    }
}

/// Leaves are allocated one element over [`MAX`] (the most they hold before splitting),
/// so they never reallocate and a split leaves no doubled capacity behind.
fn new_leaf(elems: impl IntoIterator<Item = Elem>) -> Vec<Elem> {
    let mut v = Vec::with_capacity(MAX + 1);
    v.extend(elems);
    v
}

impl Inner {
    /// The child whose range holds `key`.
    fn route(&self, key: (f64, &[u8])) -> usize {
        self.seps
            .partition_point(|s| cmp_elem(s, key) != Ordering::Greater)
    }

    /// Children `a` and `a + 1` merged into one, or evened out when they do not fit one.
    fn rebalance(&mut self, a: usize) {
        let left = self.children.remove(a);
        let right = self.children.remove(a);
        self.counts.drain(a..a + 2);
        let sep = self.seps.remove(a);
        let mut joined = Arc::unwrap_or_clone(left);
        joined.join(sep, Arc::unwrap_or_clone(right));
        if joined.width() > MAX {
            let (sep, right) = joined.split(joined.width() / 2);
            self.children.insert(a, Arc::new(right));
            self.counts.insert(a, self.children[a].count());
            self.seps.insert(a, sep);
        }
        // Joining grew the left leaf's vector past its fixed size: back to it.
        if let Node::Leaf(v) = &mut joined {
            v.shrink_to(MAX + 1);
        }
        self.counts.insert(a, joined.count());
        self.children.insert(a, Arc::new(joined));
    }
}

/// Adds `elem`, and splits `node` if that overfills it: the separator and right side to
/// add next to it. `right_edge` says `node` is the last at its depth.
///
/// Halves fill randomly placed inserts to about 70%, but leave ascending ones (scores that
/// are timestamps or counters) at 50%, since nothing lands left of a split again. So a
/// node on the right edge that overflows at its end keeps all but the new entry, which
/// starts the next node: ascending inserts fill nodes whole, as a log does.
fn insert(node: &mut Arc<Node>, elem: Elem, right_edge: bool) -> Option<(Elem, Node)> {
    let node = Arc::make_mut(node);
    let appended = match node {
        Node::Leaf(v) => {
            let at = v.partition_point(|e| cmp_elem(e, (elem.0, &elem.1)) == Ordering::Less);
            v.insert(at, elem);
            at + 1 == v.len()
        }
        Node::Inner(inner) => {
            let i = inner.route((elem.0, &elem.1));
            let last = i + 1 == inner.children.len();
            inner.counts[i] += 1;
            match insert(&mut inner.children[i], elem, right_edge && last) {
                Some((sep, right)) => {
                    let moved = right.count();
                    inner.counts[i] -= moved;
                    inner.children.insert(i + 1, Arc::new(right));
                    inner.counts.insert(i + 1, moved);
                    inner.seps.insert(i, sep);
                    last
                }
                None => false,
            }
        }
    };
    let width = node.width();
    (width > MAX).then(|| {
        node.split(if right_edge && appended {
            width - 1
        } else {
            width / 2
        })
    })
}

/// Whether `key` was found (and removed). Nodes on the path are copied if shared even
/// when it is not; callers only remove what the score map says is there.
fn remove(node: &mut Arc<Node>, key: (f64, &[u8])) -> bool {
    match Arc::make_mut(node) {
        Node::Leaf(v) => match v.binary_search_by(|e| cmp_elem(e, key)) {
            Ok(i) => {
                v.remove(i);
                true
            }
            Err(_) => false,
        },
        Node::Inner(inner) => {
            let i = inner.route(key);
            if !remove(&mut inner.children[i], key) {
                return false;
            }
            inner.counts[i] -= 1;
            if inner.children[i].width() < MIN && inner.children.len() > 1 {
                inner.rebalance(if i + 1 < inner.children.len() {
                    i
                } else {
                    i - 1
                });
            }
            true
        }
    }
}

#[derive(Clone, Debug)]
pub struct RankTree {
    root: Arc<Node>,
    len: usize,
}

impl Default for RankTree {
    fn default() -> Self {
        RankTree {
            root: Arc::new(Node::Leaf(new_leaf([]))),
            len: 0,
        }
    }
}

impl RankTree {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds an element not already present.
    pub fn insert(&mut self, score: f64, member: &[u8]) {
        if let Some((sep, right)) = insert(&mut self.root, (score, CompactKey::new(member)), true) {
            let left = std::mem::replace(&mut self.root, Arc::new(Node::Leaf(Vec::new())));
            let counts = vec![left.count(), right.count()];
            self.root = Arc::new(Node::Inner(Inner {
                children: vec![left, Arc::new(right)],
                counts,
                seps: vec![sep],
            }));
        }
        self.len += 1;
    }

    pub fn remove(&mut self, score: f64, member: &[u8]) -> bool {
        if !remove(&mut self.root, (score, member)) {
            return false;
        }
        self.len -= 1;
        // A root left with one child hands the root over to it.
        if let Node::Inner(inner) = &*self.root {
            if inner.children.len() == 1 {
                self.root = Arc::clone(&inner.children[0]);
            }
        }
        true
    }

    /// How many leading elements satisfy `before`, a predicate true for a prefix of the
    /// order (score and lex bounds are). Separators need not be elements, but they are
    /// points in the same order, so the predicate splits them the same way.
    pub fn count_prefix(&self, before: &dyn Fn(f64, &[u8]) -> bool) -> usize {
        let (mut node, mut n) = (&*self.root, 0);
        loop {
            match node {
                Node::Leaf(v) => return n + v.partition_point(|(s, m)| before(*s, m)),
                Node::Inner(inner) => {
                    let j = inner.seps.partition_point(|(s, m)| before(*s, m));
                    n += inner.counts[..j].iter().sum::<usize>();
                    node = &inner.children[j];
                }
            }
        }
    }

    pub fn select(&self, k: usize) -> Option<(f64, &[u8])> {
        self.iter_from(k).next()
    }

    /// Elements in order from rank `k` on.
    pub fn iter_from(&self, mut k: usize) -> InOrder<'_> {
        let mut stack = Vec::new();
        let mut node = &*self.root;
        loop {
            match node {
                Node::Leaf(v) => {
                    return InOrder {
                        stack,
                        leaf: v,
                        at: k.min(v.len()),
                    }
                }
                Node::Inner(inner) => {
                    let mut i = 0;
                    while i + 1 < inner.counts.len() && k >= inner.counts[i] {
                        k -= inner.counts[i];
                        i += 1;
                    }
                    stack.push((inner, i));
                    node = &inner.children[i];
                }
            }
        }
    }

    pub fn heap_size(&self) -> usize {
        self.root.heap_size()
    }
}

/// A tree's elements in order, from where [`RankTree::iter_from`] started: the current
/// leaf, and the inner nodes above it with the child taken in each.
pub struct InOrder<'a> {
    stack: Vec<(&'a Inner, usize)>,
    leaf: &'a [Elem],
    at: usize,
}

impl<'a> Iterator for InOrder<'a> {
    type Item = (f64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while self.at == self.leaf.len() {
            // Up to the nearest node with a child to the right, then down its leftmost path.
            let (inner, i) = loop {
                let (inner, i) = self.stack.pop()?;
                if i + 1 < inner.children.len() {
                    break (inner, i + 1);
                }
            };
            self.stack.push((inner, i));
            let mut node = &*inner.children[i];
            while let Node::Inner(down) = node {
                self.stack.push((down, 0));
                node = &down.children[0];
            }
            if let Node::Leaf(v) = node {
                self.leaf = v;
                self.at = 0;
            }
        }
        let (score, member) = &self.leaf[self.at];
        self.at += 1;
        Some((*score, member.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every node holds at most MAX entries and, unless it is on the right edge (where
    /// ascending inserts start new nodes), at least MIN; counts add up, separators divide
    /// their children, and all leaves sit at one depth.
    fn check(node: &Node, right_edge: bool, lo: Option<&Elem>, hi: Option<&Elem>) -> usize {
        assert!(node.width() <= MAX, "overfull node");
        assert!(right_edge || node.width() >= MIN, "underfull node");
        match node {
            Node::Leaf(v) => {
                for w in v.windows(2) {
                    assert_eq!(cmp_elem(&w[0], (w[1].0, &w[1].1)), Ordering::Less);
                }
                for e in v {
                    assert!(lo.is_none_or(|l| cmp_elem(l, (e.0, &e.1)) != Ordering::Greater));
                    assert!(hi.is_none_or(|h| cmp_elem(h, (e.0, &e.1)) == Ordering::Greater));
                }
                1
            }
            Node::Inner(inner) => {
                assert_eq!(inner.counts.len(), inner.children.len());
                assert_eq!(inner.seps.len() + 1, inner.children.len());
                let mut depth = None;
                for (i, child) in inner.children.iter().enumerate() {
                    assert_eq!(inner.counts[i], child.count());
                    let l = if i == 0 { lo } else { Some(&inner.seps[i - 1]) };
                    let h = inner.seps.get(i).or(hi);
                    let edge = right_edge && i + 1 == inner.children.len();
                    let d = check(child, edge, l, h);
                    assert!(depth.is_none_or(|x| x == d), "leaves at different depths");
                    depth = Some(d);
                }
                depth.unwrap_or(0) + 1
            }
        }
    }

    proptest! {
        #[test]
        fn matches_a_sorted_model(
            ops in proptest::collection::vec((any::<bool>(), 0u16..300, -3i8..3), 1..600),
            clone_at in 0usize..600,
            ascending in any::<bool>(),
        ) {
            let mut tree = RankTree::default();
            let mut model: std::collections::BTreeMap<Vec<u8>, f64> = Default::default();
            let mut frozen = None;
            for (n, (add, m, s)) in ops.into_iter().enumerate() {
                if n == clone_at {
                    frozen = Some((tree.clone(), model.clone()));
                }
                let member = format!("m{m}").into_bytes();
                // Ascending scores take the right edge's whole-node splits.
                let score = if ascending { n as f64 } else { f64::from(s) };
                if let Some(old) = model.remove(&member) {
                    prop_assert!(tree.remove(old, &member));
                } else {
                    prop_assert!(!tree.remove(score, &member));
                }
                // An add of a present member re-scores it.
                if add {
                    tree.insert(score, &member);
                    model.insert(member, score);
                }
                prop_assert_eq!(tree.len(), model.len());
            }
            let sorted = |model: &std::collections::BTreeMap<Vec<u8>, f64>| {
                let mut v: Vec<(f64, Vec<u8>)> = model.iter().map(|(m, s)| (*s, m.clone())).collect();
                v.sort_by(|a, b| cmp((a.0, &a.1), (b.0, &b.1)));
                v
            };
            // A clone taken midway still holds what it held, however the tree changed since.
            for (t, m) in [(tree, model)].into_iter().chain(frozen) {
                check(&t.root, true, None, None);
                let want = sorted(&m);
                for start in [0, 1, want.len() / 2, want.len().saturating_sub(1), want.len(), want.len() + 3] {
                    let got: Vec<(f64, Vec<u8>)> = t.iter_from(start).map(|(s, m)| (s, m.to_vec())).collect();
                    prop_assert_eq!(&got[..], &want[start.min(want.len())..]);
                }
                for (i, (s, m)) in want.iter().enumerate() {
                    prop_assert_eq!(t.select(i), Some((*s, &m[..])));
                    let rank = t.count_prefix(&|sc, mm| cmp((sc, mm), (*s, m)) == Ordering::Less);
                    prop_assert_eq!(rank, i);
                }
                prop_assert_eq!(t.select(want.len()), None);
                let below = want.iter().filter(|(s, _)| *s < 0.0).count();
                prop_assert_eq!(t.count_prefix(&|s, _| s < 0.0), below);
            }
        }
    }

    fn leaves(node: &Node) -> usize {
        match node {
            Node::Leaf(_) => 1,
            Node::Inner(inner) => inner.children.iter().map(|c| leaves(c)).sum(),
        }
    }

    #[test]
    fn ascending_inserts_fill_nodes_whole() {
        let mut tree = RankTree::default();
        for i in 0..6000 {
            tree.insert(f64::from(i), b"m");
        }
        check(&tree.root, true, None, None);
        assert_eq!(leaves(&tree.root), 6000 / MAX);
        // Random order fills them about 70%.
        let mut random = RankTree::default();
        for i in 0..6000u32 {
            random.insert(
                f64::from(i.wrapping_mul(2_654_435_761) % 6000),
                &i.to_le_bytes(),
            );
        }
        check(&random.root, true, None, None);
        assert!(leaves(&random.root) > 6000 / MAX * 5 / 4);
    }

    #[test]
    fn a_change_after_a_clone_copies_only_its_path() {
        let mut tree = RankTree::default();
        for i in 0..5000 {
            tree.insert(f64::from(i), format!("m{i}").as_bytes());
        }
        let before = tree.clone();
        tree.insert(2500.5, b"new");
        fn nodes(node: &Arc<Node>, out: &mut Vec<*const Node>) -> usize {
            out.push(Arc::as_ptr(node));
            match &**node {
                Node::Leaf(_) => 1,
                Node::Inner(inner) => {
                    1 + inner
                        .children
                        .iter()
                        .map(|c| nodes(c, out))
                        .max()
                        .unwrap_or(0)
                }
            }
        }
        let (mut old, mut new) = (Vec::new(), Vec::new());
        nodes(&before.root, &mut old);
        let depth = nodes(&tree.root, &mut new);
        let copied = new.iter().filter(|n| !old.contains(n)).count();
        // One node per level, and the halves of any that split.
        assert!(
            copied <= 2 * depth + 1,
            "{copied} of {} nodes copied",
            new.len()
        );
        assert!(new.len() > 1000);
        assert_eq!(before.len(), 5000);
        assert_eq!(before.count_prefix(&|s, _| s < 2501.0), 2501);
        assert_eq!(tree.count_prefix(&|s, _| s < 2501.0), 2502);
    }
}
