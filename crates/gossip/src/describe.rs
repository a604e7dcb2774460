//! The cluster as text and reply trees: CLUSTER NODES (and nodes.conf, the same lines),
//! CLUSTER INFO, SLOTS and SHARDS, in Redis 7.0's exact shapes.

use std::fmt::Write;

use crate::cluster::{Cluster, Endpoint, TYPE_NAMES};
use crate::codec::flag;
use crate::node::{flags_text, Node, NodeIdx};
use crate::Reply;

impl Cluster {
    /// One CLUSTER NODES line (without the newline).
    pub fn node_line(&self, idx: NodeIdx, conf: bool) -> String {
        let Some(n) = self.node(idx) else {
            return String::new();
        };
        let mut s = String::with_capacity(128);
        let _ = write!(s, "{} {}:{}@{}", n.id_str(), n.ip, n.port, n.cport);
        // 7.0 writes the hostname in CLUSTER NODES but not (yet) in nodes.conf.
        if !conf && !n.hostname.is_empty() {
            let _ = write!(s, ",{}", n.hostname);
        }
        let master = match n.master.and_then(|m| self.node(m)) {
            Some(m) if n.is_replica() => m.id_str().to_string(),
            _ => "-".to_string(),
        };
        let connected = idx == self.myself_idx() || self.link_connected_state(n.link);
        let _ = write!(
            s,
            " {} {} {} {} {} {}",
            flags_text(n.flags & !(flag::MEET | flag::MIGRATE_TO)),
            master,
            n.ping_sent,
            n.pong_received,
            self.node_epoch(idx),
            if connected {
                "connected"
            } else {
                "disconnected"
            }
        );
        if n.is_master() {
            for (a, b) in ranges(n) {
                if a == b {
                    let _ = write!(s, " {a}");
                } else {
                    let _ = write!(s, " {a}-{b}");
                }
            }
        }
        if idx == self.myself_idx() {
            for (slot, info) in self.slot_map().marked() {
                if let Some(t) = info.migrating_to.and_then(|t| self.node(t)) {
                    let _ = write!(s, " [{slot}->-{}]", t.id_str());
                } else if let Some(f) = info.importing_from.and_then(|f| self.node(f)) {
                    let _ = write!(s, " [{slot}-<-{}]", f.id_str());
                }
            }
        }
        s
    }

    /// CLUSTER NODES' payload.
    pub fn nodes_text(&self) -> String {
        let mut out = String::new();
        for (i, _) in self.nodes() {
            out.push_str(&self.node_line(i, false));
            out.push('\n');
        }
        out
    }

    /// nodes.conf: the node lines (handshakes left out, as Redis leaves them) and vars.
    pub fn nodes_conf(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes() {
            if n.in_handshake() {
                continue;
            }
            out.push_str(&self.node_line(i, true));
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "vars currentEpoch {} lastVoteEpoch {}",
            self.current_epoch, self.last_vote_epoch
        );
        out
    }

    /// CLUSTER INFO's payload (CRLF lines, as Redis sends it).
    pub fn info_text(&self) -> String {
        let (mut assigned, mut ok, mut pfail, mut fail) = (0, 0, 0, 0);
        for slot in 0..carmine_slots::SLOT_COUNT as u16 {
            let Some(&owner) = self.slot_map().owner(slot) else {
                continue;
            };
            assigned += 1;
            match self.node(owner) {
                Some(n) if n.has(flag::FAIL) => fail += 1,
                Some(n) if n.has(flag::PFAIL) => pfail += 1,
                _ => ok += 1,
            }
        }
        let mut s = String::new();
        let _ = write!(
            s,
            "cluster_state:{}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{ok}\r\ncluster_slots_pfail:{pfail}\r\ncluster_slots_fail:{fail}\r\ncluster_known_nodes:{}\r\ncluster_size:{}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\n",
            if self.state_ok() { "ok" } else { "fail" },
            self.node_count(),
            self.cluster_size(),
            self.current_epoch,
            self.node_epoch(self.myself_idx()),
        );
        let mut total = 0;
        for (i, name) in TYPE_NAMES.iter().enumerate() {
            if self.stats.sent[i] > 0 {
                let _ = write!(
                    s,
                    "cluster_stats_messages_{name}_sent:{}\r\n",
                    self.stats.sent[i]
                );
                total += self.stats.sent[i];
            }
        }
        let _ = write!(s, "cluster_stats_messages_sent:{total}\r\n");
        let mut total = 0;
        for (i, name) in TYPE_NAMES.iter().enumerate() {
            if self.stats.received[i] > 0 {
                let _ = write!(
                    s,
                    "cluster_stats_messages_{name}_received:{}\r\n",
                    self.stats.received[i]
                );
                total += self.stats.received[i];
            }
        }
        let _ = write!(s, "cluster_stats_messages_received:{total}\r\n");
        let _ = write!(
            s,
            "total_cluster_links_buffer_limit_exceeded:{}\r\n",
            self.stats.links_buffer_limit_exceeded
        );
        s
    }

    /// The name clients should use for a node (Redis' getPreferredEndpoint).
    pub fn preferred_endpoint(&self, n: &Node) -> String {
        match self.config.preferred_endpoint {
            Endpoint::Ip => n.ip.clone(),
            Endpoint::Hostname if n.hostname.is_empty() => "?".into(),
            Endpoint::Hostname => n.hostname.clone(),
            Endpoint::Unknown => String::new(),
        }
    }

    fn endpoint(&self, n: &Node) -> Reply {
        Reply::Bulk(self.preferred_endpoint(n).into_bytes())
    }

    fn slots_node(&self, n: &Node) -> Reply {
        let first = match self.config.preferred_endpoint {
            Endpoint::Unknown => Reply::Nil,
            _ => self.endpoint(n),
        };
        // The other names the node has, beside the preferred one.
        let mut meta = Vec::new();
        if self.config.preferred_endpoint != Endpoint::Ip {
            meta.push((Reply::bulk("ip"), Reply::Bulk(n.ip.as_bytes().to_vec())));
        }
        if self.config.preferred_endpoint != Endpoint::Hostname && !n.hostname.is_empty() {
            meta.push((
                Reply::bulk("hostname"),
                Reply::Bulk(n.hostname.as_bytes().to_vec()),
            ));
        }
        Reply::Array(vec![
            first,
            Reply::Int(i64::from(n.port)),
            Reply::Bulk(n.id.to_vec()),
            Reply::Map(meta),
        ])
    }

    /// CLUSTER SLOTS: each run of slots with its master and non-failed replicas.
    pub fn slots_reply(&self) -> Reply {
        let mut out = Vec::new();
        for (a, b, owner) in self.slot_map().owned_ranges() {
            let Some(m) = self.node(owner) else { continue };
            let mut entry = vec![
                Reply::Int(i64::from(a)),
                Reply::Int(i64::from(b)),
                self.slots_node(m),
            ];
            for r in self.replicas_of(owner) {
                // A failed replica, or one still loading its first sync (offset 0), is
                // not offered to clients, as in Redis 7.0.
                let available = |n: &&Node| !n.has(flag::FAIL) && n.repl_offset != 0;
                if let Some(rn) = self.node(r).filter(available) {
                    entry.push(self.slots_node(rn));
                }
            }
            out.push(Reply::Array(entry));
        }
        Reply::Array(out)
    }

    fn shard_node(&self, idx: NodeIdx) -> Reply {
        let Some(n) = self.node(idx) else {
            return Reply::Nil;
        };
        let mut m = vec![
            (Reply::bulk("id"), Reply::Bulk(n.id.to_vec())),
            (Reply::bulk("port"), Reply::Int(i64::from(n.port))),
            (Reply::bulk("ip"), Reply::Bulk(n.ip.as_bytes().to_vec())),
            (Reply::bulk("endpoint"), self.endpoint(n)),
        ];
        if !n.hostname.is_empty() {
            m.push((
                Reply::bulk("hostname"),
                Reply::Bulk(n.hostname.as_bytes().to_vec()),
            ));
        }
        let health = if n.has(flag::FAIL) {
            "fail"
        } else if n.is_replica() && n.repl_offset == 0 {
            "loading"
        } else {
            "online"
        };
        m.push((
            Reply::bulk("role"),
            Reply::bulk(if n.is_replica() { "replica" } else { "master" }),
        ));
        m.push((
            Reply::bulk("replication-offset"),
            Reply::Int(n.repl_offset as i64),
        ));
        m.push((Reply::bulk("health"), Reply::bulk(health)));
        Reply::Map(m)
    }

    /// CLUSTER SHARDS: one entry per master (with or without slots) and its replicas.
    pub fn shards_reply(&self) -> Reply {
        let ranges = self.slot_map().owned_ranges();
        let mut out = Vec::new();
        for (i, n) in self.nodes() {
            if !n.is_master() || n.in_handshake() {
                continue;
            }
            let mut slots = Vec::new();
            for &(a, b, o) in &ranges {
                if o == i {
                    slots.push(Reply::Int(i64::from(a)));
                    slots.push(Reply::Int(i64::from(b)));
                }
            }
            let mut nodes = vec![self.shard_node(i)];
            nodes.extend(self.replicas_of(i).into_iter().map(|r| self.shard_node(r)));
            out.push(Reply::Map(vec![
                (Reply::bulk("slots"), Reply::Array(slots)),
                (Reply::bulk("nodes"), Reply::Array(nodes)),
            ]));
        }
        Reply::Array(out)
    }

    /// CLUSTER LINKS.
    pub fn links_reply(&self) -> Reply {
        let mut out = Vec::new();
        for (_, inbound, node, ctime, _) in self.link_info() {
            let Some(n) = node.and_then(|n| self.node(n)) else {
                continue;
            };
            out.push(Reply::Map(vec![
                (
                    Reply::bulk("direction"),
                    Reply::bulk(if inbound { "from" } else { "to" }),
                ),
                (Reply::bulk("node"), Reply::Bulk(n.id.to_vec())),
                (Reply::bulk("create-time"), Reply::Int(ctime as i64)),
                (
                    Reply::bulk("events"),
                    Reply::bulk(if inbound { "r" } else { "rw" }),
                ),
                (Reply::bulk("send-buffer-allocated"), Reply::Int(0)),
                (Reply::bulk("send-buffer-used"), Reply::Int(0)),
            ]));
        }
        Reply::Array(out)
    }
}

fn ranges(n: &Node) -> Vec<(u16, u16)> {
    if n.num_slots == 0 {
        return Vec::new();
    }
    slot_ranges(&n.slots)
}

/// The runs of set slots, in order. Eight bytes of the bitmap at a time: a master of a
/// large cluster owns a few dozen slots, and nodes.conf lists every master, so testing
/// 16384 bits per master made writing one file of 1,000 nodes cost 16M bit tests (over
/// half of a 200-node simulation's time).
fn slot_ranges(bits: &crate::codec::SlotBits) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (w, chunk) in bits.chunks_exact(8).enumerate() {
        let mut word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let base = (w * 64) as u16;
        while word != 0 {
            let start = word.trailing_zeros() as u16;
            // The run of ones from `start` up.
            let len = (!(word >> start)).trailing_zeros() as u16;
            let (a, b) = (base + start, base + start + len - 1);
            match out.last_mut() {
                Some(last) if last.1 + 1 == a => last.1 = b,
                _ => out.push((a, b)),
            }
            word = if start + len >= 64 {
                0
            } else {
                word & (u64::MAX << (start + len))
            };
        }
    }
    out
}

#[cfg(test)]
mod slot_range_tests {
    use proptest::prelude::*;

    fn bit_by_bit(bits: &crate::codec::SlotBits) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for s in 0..carmine_slots::SLOT_COUNT as u16 {
            if crate::codec::slot_bit(bits, s) {
                match out.last_mut() {
                    Some(last) if last.1 + 1 == s => last.1 = s,
                    _ => out.push((s, s)),
                }
            }
        }
        out
    }

    proptest! {
        /// Word-at-a-time runs equal the bit-by-bit ones, for runs of any length at any
        /// offset (word edges, the last slot, the whole map).
        #[test]
        fn ranges_equal_a_bit_by_bit_scan(runs in proptest::collection::vec((0u16..16384, 0u16..300), 0..40)) {
            let mut bits: crate::codec::SlotBits = [0; 2048];
            for (start, len) in runs {
                for s in start..start.saturating_add(len).min(16384) {
                    crate::codec::set_slot_bit(&mut bits, s, true);
                }
            }
            prop_assert_eq!(super::slot_ranges(&bits), bit_by_bit(&bits));
        }
    }

    #[test]
    fn full_and_empty_maps() {
        assert_eq!(super::slot_ranges(&[0xff; 2048]), vec![(0, 16383)]);
        assert_eq!(super::slot_ranges(&[0; 2048]), vec![]);
    }
}
