//! What a node knows about one cluster node (itself included).

use crate::codec::{flag, NodeId, SlotBits};

/// A link to a peer's bus port, named by the machine; the driver maps it to a socket.
pub type LinkId = u64;

/// Index of a node in the machine's table. Stable while the node is known: a handshake
/// node renamed to its real id keeps its index, so slot owners need no rewrite.
pub type NodeIdx = u32;

#[derive(Clone, Debug)]
pub struct Node {
    pub id: NodeId,
    /// Empty while unknown (a fresh node learns its own address from the first MEET).
    pub ip: String,
    pub port: u16,
    pub cport: u16,
    pub pport: u16,
    pub hostname: String,
    pub flags: u16,
    pub master: Option<NodeIdx>,
    pub config_epoch: u64,
    /// Unix ms of the PING we wait a PONG for; 0 when none is pending.
    pub ping_sent: u64,
    pub pong_received: u64,
    /// When we sent the oldest PING a PONG has answered since: the node had heard
    /// from us by then, so it cannot count us silent for a node timeout before that
    /// time plus the timeout (what a master's write lease rests on).
    pub ping_answered: u64,
    pub data_received: u64,
    /// When the node entered the table (handshakes time out from here).
    pub ctime: u64,
    pub fail_time: u64,
    /// Since when this master serves slots with no working replica (0: it has one).
    pub orphaned_since: u64,
    /// When we last voted for a replica of this master (one vote per 2 x node timeout).
    pub voted_time: u64,
    /// When we last sent a node in handshake its MEET or PING.
    pub hello_sent: u64,
    pub repl_offset: u64,
    /// Our connection to its bus port.
    pub link: Option<LinkId>,
    /// Its connection to ours, once it said who it is.
    pub inbound_link: Option<LinkId>,
    /// Masters that reported it PFAIL or FAIL, with when they last did.
    pub fail_reports: Vec<(NodeIdx, u64)>,
    /// The slots it serves (masters only), kept beside the slot map so a header's claim
    /// compares in one 2 KiB comparison.
    pub slots: Box<SlotBits>,
    pub num_slots: usize,
}

impl Node {
    pub fn new(id: NodeId, flags: u16, now: u64) -> Node {
        Node {
            id,
            ip: String::new(),
            port: 0,
            cport: 0,
            pport: 0,
            hostname: String::new(),
            flags,
            master: None,
            config_epoch: 0,
            ping_sent: 0,
            pong_received: 0,
            ping_answered: 0,
            // A node just learnt (or loaded) has a node timeout to speak before it
            // can be suspected.
            data_received: now,
            ctime: now,
            fail_time: 0,
            hello_sent: 0,
            voted_time: 0,
            orphaned_since: 0,
            repl_offset: 0,
            link: None,
            inbound_link: None,
            fail_reports: Vec::new(),
            slots: Box::new([0; 2048]),
            num_slots: 0,
        }
    }

    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    pub fn is_master(&self) -> bool {
        self.has(flag::MASTER)
    }

    pub fn is_replica(&self) -> bool {
        self.has(flag::SLAVE)
    }

    pub fn in_handshake(&self) -> bool {
        self.has(flag::HANDSHAKE)
    }

    pub fn failing(&self) -> bool {
        self.has(flag::PFAIL | flag::FAIL)
    }

    pub fn id_str(&self) -> &str {
        crate::codec::node_id_str(&self.id)
    }
}

/// Redis' flag names in its order (CLUSTER NODES, nodes.conf).
const FLAG_NAMES: [(u16, &str); 8] = [
    (flag::MYSELF, "myself"),
    (flag::MASTER, "master"),
    (flag::SLAVE, "slave"),
    (flag::PFAIL, "fail?"),
    (flag::FAIL, "fail"),
    (flag::HANDSHAKE, "handshake"),
    (flag::NOADDR, "noaddr"),
    (flag::NOFAILOVER, "nofailover"),
];

pub fn flags_text(flags: u16) -> String {
    let names: Vec<&str> = FLAG_NAMES
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "noflags".to_string()
    } else {
        names.join(",")
    }
}

/// Parses a nodes.conf flags field; unknown names are ignored as Redis ignores them.
pub fn parse_flags(text: &str) -> u16 {
    let mut flags = 0;
    for name in text.split(',') {
        if let Some((f, _)) = FLAG_NAMES.iter().find(|(_, n)| *n == name) {
            flags |= f;
        }
    }
    flags
}

/// A node id is 40 characters of lowercase hex (Redis' verifyClusterNodeId checks only
/// the length; hex keeps ids printable wherever they appear).
pub fn valid_id(id: &[u8]) -> bool {
    id.len() == 40 && id.iter().all(|c| c.is_ascii_hexdigit())
}

pub fn to_id(bytes: &[u8]) -> Option<NodeId> {
    if !valid_id(bytes) {
        return None;
    }
    let mut id = [0u8; 40];
    id.copy_from_slice(bytes);
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_in_redis_order() {
        assert_eq!(flags_text(flag::MYSELF | flag::MASTER), "myself,master");
        assert_eq!(flags_text(flag::SLAVE | flag::PFAIL), "slave,fail?");
        assert_eq!(flags_text(0), "noflags");
        for f in 0..1024u16 {
            let f = f & !(flag::MEET | flag::MIGRATE_TO);
            assert_eq!(parse_flags(&flags_text(f)), f);
        }
    }
}
