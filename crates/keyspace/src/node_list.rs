//! Long lists as a deque of shared nodes, the shape of Redis' quicklist.
//!
//! A snapshot must keep a list as it stood at its start while writers go on changing it.
//! Copying a million-element list for that took a writer (or the snapshot's walk, under
//! the table lock) about 60 ms. Here cloning a list copies node pointers only, and a
//! change copies just the node it touches while a clone still shares it, so a
//! snapshot's copy costs microseconds and its writers pay one node at a time.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::list_node::{encoded_size, ListNode};

/// Elements per node: new nodes fill to this; an insertion splits a node past twice it.
const NODE: usize = 128;

/// Bytes of elements per node, Redis' default `list-max-listpack-size -2` (8 KiB): a
/// node of long elements holds fewer of them, and a longer element has a node alone.
const NODE_BYTES: usize = 8 << 10;

/// Each node packs its elements in one buffer (`ListNode`): a 3-byte element takes 5
/// bytes, as in a listpack, where a node of 24-byte inline keys took 26.
type Node = ListNode;

#[derive(Clone, Default)]
pub struct NodeList {
    nodes: VecDeque<Arc<Node>>,
    len: usize,
}

/// Whether `node` takes one more element of `size` encoded bytes.
fn has_room(node: &Node, size: usize) -> bool {
    node.len() < NODE && node.bytes() + size <= NODE_BYTES
}

/// A node for a push that the end node had no room for. After a full node, room for a
/// whole node of elements like this one, so it is allocated once; a list's first node
/// grows as it fills instead (a short list stays small).
fn new_node(item: &[u8], front: bool, after_full: bool) -> Arc<Node> {
    let size = encoded_size(item.len());
    let room = if after_full {
        size.saturating_mul(NODE).min(NODE_BYTES).max(size)
    } else {
        size
    };
    let mut node = ListNode::with_room(room, front);
    if front {
        node.push_front(item);
    } else {
        node.push_back(item);
    }
    Arc::new(node)
}

/// Gives a node that stopped growing back its spare room, unless a snapshot's copy
/// shares it (sealing it would copy it).
fn seal(node: &mut Arc<Node>) {
    if let Some(node) = Arc::get_mut(node) {
        node.seal();
    }
}

impl NodeList {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push_back(&mut self, item: &[u8]) {
        self.push(item, false);
    }

    /// Adds `item` at the front or the back: into the end node while it has room, else
    /// into a new node, sealing the full one.
    pub fn push(&mut self, item: &[u8], front: bool) {
        let size = encoded_size(item.len());
        let end = if front {
            self.nodes.front_mut()
        } else {
            self.nodes.back_mut()
        };
        match end {
            Some(node) if has_room(node, size) => {
                let node = Arc::make_mut(node);
                if front {
                    node.push_front(item);
                } else {
                    node.push_back(item);
                }
            }
            full => {
                let after_full = full.is_some();
                if let Some(full) = full {
                    seal(full);
                }
                let node = new_node(item, front, after_full);
                if front {
                    self.nodes.push_front(node);
                } else {
                    self.nodes.push_back(node);
                }
            }
        }
        self.len += 1;
    }

    /// Takes the element at the front or the back, dropping its node once empty.
    pub fn pop(&mut self, front: bool) -> Option<Vec<u8>> {
        let node = if front {
            self.nodes.front_mut()?
        } else {
            self.nodes.back_mut()?
        };
        let node_mut = Arc::make_mut(node);
        let item = if front {
            node_mut.pop_front()
        } else {
            node_mut.pop_back()
        };
        if node.is_empty() {
            if front {
                self.nodes.pop_front();
            } else {
                self.nodes.pop_back();
            }
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
        self.nodes[n].get(at)
    }

    /// Replaces element `index`; false if there is none.
    pub fn set(&mut self, index: usize, item: &[u8]) -> bool {
        let Some((n, at)) = self.locate(index) else {
            return false;
        };
        let node = Arc::make_mut(&mut self.nodes[n]);
        let replaced = node.set(at, item);
        self.split_if_big(n);
        replaced
    }

    /// Splits node `n` in two once it holds twice a node's elements or bytes.
    fn split_if_big(&mut self, n: usize) {
        let Some(node) = self.nodes.get_mut(n) else {
            return;
        };
        if node.len() > 1 && (node.len() > 2 * NODE || node.bytes() > 2 * NODE_BYTES) {
            let node = Arc::make_mut(node);
            let tail = node.split_off(node.len() / 2);
            self.nodes.insert(n + 1, Arc::new(tail));
        }
    }

    /// Inserts before element `index` (at the end when `index` is past it).
    pub fn insert(&mut self, index: usize, item: &[u8]) {
        let Some((n, at)) = self.locate(index) else {
            return self.push_back(item);
        };
        Arc::make_mut(&mut self.nodes[n]).insert(at, item);
        self.split_if_big(n);
        self.len += 1;
    }

    pub fn remove(&mut self, index: usize) -> Option<Vec<u8>> {
        let (n, at) = self.locate(index)?;
        let node = Arc::make_mut(&mut self.nodes[n]);
        let item = node.remove(at);
        if node.is_empty() {
            self.nodes.remove(n);
        }
        self.len -= usize::from(item.is_some());
        item
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.nodes.iter().flat_map(|node| node.iter())
    }

    /// Elements from `start` on, skipping whole nodes to get there.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let (first, skip) = self.locate(start).unwrap_or((self.nodes.len(), 0));
        self.nodes
            .range(first..)
            .flat_map(|node| node.iter())
            .skip(skip)
    }

    pub fn heap_size(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Arc<Node>>()
            + self
                .nodes
                .iter()
                .map(|node| 16 + std::mem::size_of::<Node>() + node.heap_size())
                .sum::<usize>()
    }
}

impl FromIterator<Vec<u8>> for NodeList {
    fn from_iter<I: IntoIterator<Item = Vec<u8>>>(items: I) -> Self {
        let mut list = NodeList::default();
        for item in items {
            list.push_back(&item);
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
                // Some elements long enough that nodes fill by bytes, not count.
                let item = if i % 7 == 0 {
                    vec![step as u8; 3000 + i]
                } else {
                    format!("n{step}").into_bytes()
                };
                match op {
                    0 => { list.push(&item, true); model.push_front(item); }
                    1 => { list.push_back(&item); model.push_back(item); }
                    2 => prop_assert_eq!(list.pop(true), model.pop_front()),
                    3 => prop_assert_eq!(list.pop(false), model.pop_back()),
                    4 => {
                        let ok = list.set(i, &item);
                        prop_assert_eq!(ok, i < model.len());
                        if ok { model[i] = item; }
                    }
                    5 => {
                        list.insert(i, &item);
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
        list.set(5_000, b"changed");
        assert_eq!(
            shared(&list, &copy),
            list.nodes.len() - 1,
            "one node copied"
        );
        assert_eq!(copy.get(5_000), Some(&[(5_000 % 256) as u8][..]));
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn short_elements_take_under_six_bytes_each_from_either_end() {
        for front in [true, false] {
            let mut list = NodeList::default();
            for i in 0..100_000u32 {
                let item = [b'x', b'0' + (i % 10) as u8, b'z'];
                if front {
                    list.push(&item, true);
                } else {
                    list.push_back(&item);
                }
            }
            let per_element = list.heap_size() as f64 / list.len() as f64;
            eprintln!(
                "front={front} {per_element:.2} bytes per element, {} nodes",
                list.nodes.len()
            );
            assert!(per_element < 6.0, "{per_element:.2} bytes per element");
        }
    }
}
