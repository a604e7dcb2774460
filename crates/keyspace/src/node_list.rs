//! Long lists as a deque of shared nodes, the shape of Redis' quicklist.
//!
//! A snapshot must keep a list as it stood at its start while writers go on changing it.
//! Copying a million-element list for that took a writer (or the snapshot's walk, under
//! the table lock) about 60 ms. Here cloning a list copies node pointers only, and a
//! change copies just the node it touches while a clone still shares it, so a
//! snapshot's copy costs microseconds and its writers pay one node at a time.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::compact::CompactKey;

/// Elements per node: new nodes fill to this; an insertion splits a node past twice it.
const NODE: usize = 128;

/// Elements of up to 22 bytes sit in the node itself (24 bytes each): a list of short
/// elements makes no allocation per element. With a `Vec` per element, LPUSH of 3-byte
/// values spent 7% of its time growing nodes and in malloc, and each element took 56
/// bytes.
type Node = VecDeque<CompactKey>;

/// A node for pushes past a full one: room for all its elements at once. A list's
/// first node grows as it fills instead (a short list stays small).
fn new_node(first: CompactKey, after_full: bool) -> Arc<Node> {
    let mut node = VecDeque::with_capacity(if after_full { NODE } else { 1 });
    node.push_back(first);
    Arc::new(node)
}

#[derive(Clone, Default)]
pub struct NodeList {
    nodes: VecDeque<Arc<Node>>,
    len: usize,
}

impl NodeList {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push_front(&mut self, item: impl Into<CompactKey>) {
        let item = item.into();
        match self.nodes.front_mut() {
            Some(node) if node.len() < NODE => Arc::make_mut(node).push_front(item),
            _ => {
                let node = new_node(item, !self.nodes.is_empty());
                self.nodes.push_front(node);
            }
        }
        self.len += 1;
    }

    pub fn push_back(&mut self, item: impl Into<CompactKey>) {
        let item = item.into();
        match self.nodes.back_mut() {
            Some(node) if node.len() < NODE => Arc::make_mut(node).push_back(item),
            _ => {
                let node = new_node(item, !self.nodes.is_empty());
                self.nodes.push_back(node);
            }
        }
        self.len += 1;
    }

    pub fn pop_front(&mut self) -> Option<Vec<u8>> {
        let node = self.nodes.front_mut()?;
        let item = Arc::make_mut(node).pop_front().map(CompactKey::into_vec);
        if node.is_empty() {
            self.nodes.pop_front();
        }
        self.len -= usize::from(item.is_some());
        item
    }

    pub fn pop_back(&mut self) -> Option<Vec<u8>> {
        let node = self.nodes.back_mut()?;
        let item = Arc::make_mut(node).pop_back().map(CompactKey::into_vec);
        if node.is_empty() {
            self.nodes.pop_back();
        }
        self.len -= usize::from(item.is_some());
        item
    }

    /// (node, offset in it) of element `index`, walking from the nearer end.
    fn locate(&self, index: usize) -> Option<(usize, usize)> {
        if index >= self.len {
            return None;
        }
        if index < self.len / 2 {
            let mut at = index;
            for (i, node) in self.nodes.iter().enumerate() {
                if at < node.len() {
                    return Some((i, at));
                }
                at -= node.len();
            }
        } else {
            let mut from_end = self.len - 1 - index;
            for (i, node) in self.nodes.iter().enumerate().rev() {
                if from_end < node.len() {
                    return Some((i, node.len() - 1 - from_end));
                }
                from_end -= node.len();
            }
        }
        None
    }

    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let (n, at) = self.locate(index)?;
        self.nodes[n].get(at).map(CompactKey::as_bytes)
    }

    /// Replaces element `index`; false if there is none.
    pub fn set(&mut self, index: usize, item: impl Into<CompactKey>) -> bool {
        let Some((n, at)) = self.locate(index) else {
            return false;
        };
        match Arc::make_mut(&mut self.nodes[n]).get_mut(at) {
            Some(slot) => {
                *slot = item.into();
                true
            }
            None => false,
        }
    }

    /// Inserts before element `index` (at the end when `index` is past it).
    pub fn insert(&mut self, index: usize, item: impl Into<CompactKey>) {
        let Some((n, at)) = self.locate(index) else {
            return self.push_back(item);
        };
        let node = Arc::make_mut(&mut self.nodes[n]);
        node.insert(at, item.into());
        if node.len() > 2 * NODE {
            let tail = node.split_off(NODE);
            self.nodes.insert(n + 1, Arc::new(tail));
        }
        self.len += 1;
    }

    pub fn remove(&mut self, index: usize) -> Option<Vec<u8>> {
        let (n, at) = self.locate(index)?;
        let node = Arc::make_mut(&mut self.nodes[n]);
        let item = node.remove(at).map(CompactKey::into_vec);
        if node.is_empty() {
            self.nodes.remove(n);
        }
        self.len -= usize::from(item.is_some());
        item
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.nodes
            .iter()
            .flat_map(|node| node.iter().map(CompactKey::as_bytes))
    }

    /// Elements from `start` on, skipping whole nodes to get there.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let (first, skip) = self.locate(start).unwrap_or((self.nodes.len(), 0));
        self.nodes
            .range(first..)
            .flat_map(|node| node.iter().map(CompactKey::as_bytes))
            .skip(skip)
    }

    pub fn heap_size(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Arc<Node>>()
            + self
                .nodes
                .iter()
                .map(|node| {
                    16 + node.capacity() * std::mem::size_of::<CompactKey>()
                        + node.iter().map(CompactKey::heap_size).sum::<usize>()
                })
                .sum::<usize>()
    }
}

impl FromIterator<Vec<u8>> for NodeList {
    fn from_iter<I: IntoIterator<Item = Vec<u8>>>(items: I) -> Self {
        let mut list = NodeList::default();
        for item in items {
            list.push_back(item);
        }
        list
    }
}

/// Equal when the elements are, however they are split into nodes.
impl PartialEq for NodeList {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for NodeList {}

impl std::fmt::Debug for NodeList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a VecDeque, across node boundaries and splits, with a clone taken
        /// midway that must keep its elements whatever happens to the original.
        #[test]
        fn matches_a_deque_and_clones_stay_put(
            start in 0usize..700,
            ops in proptest::collection::vec((0u8..8, 0usize..900), 0..300),
            clone_at in 0usize..300,
        ) {
            let mut list: NodeList = (0..start).map(|i| format!("e{i}").into_bytes()).collect();
            let mut model: VecDeque<Vec<u8>> = list.iter().map(<[u8]>::to_vec).collect();
            let mut frozen = None;
            for (step, (op, i)) in ops.into_iter().enumerate() {
                if step == clone_at {
                    frozen = Some((list.clone(), model.clone()));
                }
                let item = format!("n{step}").into_bytes();
                match op {
                    0 => { list.push_front(item.clone()); model.push_front(item); }
                    1 => { list.push_back(item.clone()); model.push_back(item); }
                    2 => prop_assert_eq!(list.pop_front(), model.pop_front()),
                    3 => prop_assert_eq!(list.pop_back(), model.pop_back()),
                    4 => {
                        let ok = list.set(i, item.clone());
                        prop_assert_eq!(ok, i < model.len());
                        if ok { model[i] = item; }
                    }
                    5 => {
                        list.insert(i, item.clone());
                        model.insert(i.min(model.len()), item);
                    }
                    6 => prop_assert_eq!(list.remove(i), model.remove(i)),
                    _ => {
                        prop_assert_eq!(list.get(i), model.get(i).map(Vec::as_slice));
                        let tail: Vec<&[u8]> = list.iter_from(i).collect();
                        let want: Vec<&[u8]> = model.iter().skip(i).map(Vec::as_slice).collect();
                        prop_assert_eq!(tail, want);
                    }
                }
                prop_assert_eq!(list.len(), model.len());
            }
            let got: Vec<Vec<u8>> = list.iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(got, Vec::from(model));
            if let Some((copy, then)) = frozen {
                let kept: Vec<Vec<u8>> = copy.iter().map(<[u8]>::to_vec).collect();
                prop_assert_eq!(kept, Vec::from(then));
            }
        }
    }

    #[test]
    fn a_clone_shares_nodes_until_one_is_changed() {
        let mut list: NodeList = (0..10_000).map(|i| vec![i as u8]).collect();
        let copy = list.clone();
        let shared = |a: &NodeList, b: &NodeList| {
            a.nodes
                .iter()
                .zip(&b.nodes)
                .filter(|(x, y)| Arc::ptr_eq(x, y))
                .count()
        };
        assert_eq!(shared(&list, &copy), list.nodes.len());
        list.set(5_000, b"changed".to_vec());
        assert_eq!(
            shared(&list, &copy),
            list.nodes.len() - 1,
            "one node copied"
        );
        assert_eq!(copy.get(5_000), Some(&[(5_000 % 256) as u8][..]));
    }
}
