//! The cluster bus state machine: the node table, handshakes, the PING/PONG schedule,
//! gossip, epochs, slot ownership, failure detection and nodes.conf — Redis 7.0's
//! `cluster.c` behaviour, driven from outside with the clock and bytes.

use std::collections::HashMap;

use crate::fast_hash::FastState;

use carmine_slots::{Slot, SlotMap, SLOT_COUNT};

use crate::codec::{
    self, flag, kind, mflag, Body, Extension, GossipEntry, Header, Message, NodeId, SlotBits,
    NO_NODE,
};
use crate::node::{LinkId, Node, NodeIdx};

/// How often a node in handshake is greeted again until it answers.
const HANDSHAKE_RETRY_MS: u64 = 1000;

/// What the machine asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to a peer's bus port; what is sent on it before it is up waits.
    Connect {
        link: LinkId,
        ip: String,
        port: u16,
    },
    Send {
        link: LinkId,
        bytes: Vec<u8>,
    },
    Close {
        link: LinkId,
    },
    /// Write nodes.conf (atomically) with this text; `fsync` when an epoch or the vote
    /// changed since the last synced save (what must survive a crash: a node that forgot
    /// its vote could vote twice in one epoch). Slot and address changes are relearned
    /// from the cluster, so resharding's thousands of SETSLOTs do not wait for the disk.
    SaveConfig {
        text: String,
        fsync: bool,
    },
    /// A PUBLISH / SPUBLISH from a peer, for this node's subscribers.
    Deliver {
        channel: Vec<u8>,
        message: Vec<u8>,
        shard: bool,
    },
    /// Replicate from this address (the node became a replica, or its master moved).
    SetMaster {
        ip: String,
        port: u16,
    },
    /// Stop replicating (this node became a master).
    BecomeMaster,
    /// Refuse writes for this many ms (a master in a manual failover lets its replica
    /// catch up).
    PauseWrites(u64),
    /// End that pause.
    UnpauseWrites,
    /// Delete the keys of slots this node lost to another owner.
    DeleteSlotKeys(Vec<Slot>),
    /// This node (as their master or its replica) no longer serves these slots: their
    /// shard channels' subscribers are unsubscribed, each told with `sunsubscribe`.
    DropShardChannels(Vec<Slot>),
    Log(Level, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Verbose,
    Notice,
    Warning,
}

/// Settings the machine reads (`cluster-*` in redis.conf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub port: u16,
    pub cport: u16,
    pub pport: u16,
    pub node_timeout: u64,
    pub announce_ip: String,
    pub announce_hostname: String,
    pub require_full_coverage: bool,
    pub replica_no_failover: bool,
    /// `cluster-allow-replica-migration` and `cluster-migration-barrier`.
    pub allow_replica_migration: bool,
    pub migration_barrier: usize,
    /// `cluster-preferred-endpoint-type`: what CLUSTER SLOTS/SHARDS and redirections
    /// name a node by.
    pub preferred_endpoint: Endpoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Ip,
    Hostname,
    Unknown,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 6379,
            cport: 16379,
            pport: 0,
            node_timeout: 15000,
            announce_ip: String::new(),
            announce_hostname: String::new(),
            require_full_coverage: true,
            replica_no_failover: false,
            allow_replica_migration: true,
            migration_barrier: 1,
            preferred_endpoint: Endpoint::Ip,
        }
    }
}

struct Link {
    node: Option<NodeIdx>,
    inbound: bool,
    connected: bool,
    ctime: u64,
    buf: Vec<u8>,
    peer_ip: String,
    local_ip: String,
    /// Messages sent and received, CLUSTER LINKS' counters.
    send_bytes: u64,
}

/// How long (ms) a master stays in the fail state after it starts.
const WRITABLE_DELAY: u64 = 2000;

/// Message type names as CLUSTER INFO spells them.
pub const TYPE_NAMES: [&str; 11] = [
    "ping",
    "pong",
    "meet",
    "fail",
    "publish",
    "auth-req",
    "auth-ack",
    "update",
    "mfstart",
    "module",
    "publishshard",
];

/// A small, seedable generator (splitmix64): node ids and gossip samples are random,
/// and a simulation replays them from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn node_id(&mut self) -> NodeId {
        let mut id = [0u8; 40];
        for chunk in id.chunks_mut(16) {
            let mut r = self.next_u64();
            for c in chunk {
                *c = b"0123456789abcdef"[(r & 15) as usize];
                r >>= 4;
            }
        }
        id
    }
}

/// Counters the driver and CLUSTER INFO read.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub sent: [u64; 11],
    pub received: [u64; 11],
    /// Messages refused by the decoder (each closed its link).
    pub malformed: u64,
    pub bytes_sent: u64,
    /// Links the driver closed because their unsent output passed
    /// `cluster-link-sendbuf-limit`.
    pub links_buffer_limit_exceeded: u64,
}

pub struct Cluster {
    pub config: Config,
    pub(crate) nodes: Vec<Option<Node>>,
    free: Vec<NodeIdx>,
    by_id: HashMap<NodeId, NodeIdx, FastState>,
    pub(crate) myself: NodeIdx,
    pub(crate) slots: SlotMap<NodeIdx>,
    pub current_epoch: u64,
    pub last_vote_epoch: u64,
    links: HashMap<LinkId, Link, FastState>,
    next_link: LinkId,
    /// FORGET's ban list: ids not re-added from gossip until the time given.
    banned: HashMap<NodeId, u64, FastState>,
    pub(crate) rng: Rng,
    state_ok: bool,
    pub stats: Stats,
    repl_offset: u64,
    ticks: u64,
    save_pending: bool,
    /// Bumped at every change an event loop's routing view depends on.
    generation: u64,
    state_generation: u64,
    /// When this machine was created or loaded, and the latest time it was given.
    pub(crate) born: u64,
    pub(crate) clock: u64,
    /// The state would be ok but for the start-up delay: evaluate it again.
    state_held_back: bool,
    /// Slots this node's shard stopped serving since the last actions were returned.
    slots_left: Vec<Slot>,
    /// (currentEpoch, lastVoteEpoch, our configEpoch) at the last fsynced save.
    synced_epochs: (u64, u64, u64),
    /// The message type dropped on receipt (DEBUG DROP-CLUSTER-PACKET-FILTER).
    pub drop_filter: Option<u16>,
    pub(crate) failover: crate::failover::FailoverState,
}

fn ms_to_secs(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

impl Cluster {
    /// A fresh node: a new random id, master without slots.
    pub fn new(config: Config, now: u64, seed: u64) -> Cluster {
        let mut rng = Rng::new(seed);
        let id = rng.node_id();
        let mut c = Cluster::empty(config, rng);
        (c.born, c.clock) = (now, now);
        let mut me = Node::new(id, flag::MYSELF | flag::MASTER, now);
        me.ip = c.config.announce_ip.clone();
        c.myself = c.insert(me);
        c.sync_myself_address();
        c.save_pending = true;
        c
    }

    fn empty(config: Config, rng: Rng) -> Cluster {
        // The tables' key, from the seed without drawing on it.
        let tables = FastState::new(rng.0.rotate_left(17) ^ 0x5851_F42D_4C95_7F2D);
        Cluster {
            config,
            nodes: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::with_hasher(tables),
            myself: 0,
            slots: SlotMap::new(),
            current_epoch: 0,
            last_vote_epoch: 0,
            links: HashMap::with_hasher(tables),
            next_link: 1,
            banned: HashMap::with_hasher(tables),
            rng,
            state_ok: false,
            stats: Stats::default(),
            repl_offset: 0,
            ticks: 0,
            save_pending: false,
            generation: 1,
            state_generation: 0,
            born: 0,
            clock: 0,
            state_held_back: false,
            slots_left: Vec::new(),
            synced_epochs: (0, 0, 0),
            drop_filter: None,
            failover: crate::failover::FailoverState::default(),
        }
    }

    /// Loads nodes.conf text (Redis' format). Refuses what it cannot trust with the
    /// line number and reason, as Redis refuses to start on a corrupt file.
    pub fn load(config: Config, text: &str, now: u64, seed: u64) -> Result<Cluster, String> {
        let mut c = Cluster::empty(config, Rng::new(seed));
        (c.born, c.clock) = (now, now);
        let mut myself = None;
        let mut masters: Vec<(NodeIdx, NodeId)> = Vec::new();
        let mut marks: Vec<(Slot, bool, NodeId)> = Vec::new();
        let mut slots: Vec<(NodeIdx, Slot, Slot)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let bad = |why: &str| {
                format!("Unrecoverable error: corrupted cluster config file \"{line}\" (line {}): {why}", n + 1)
            };
            let f: Vec<&str> = line.split(' ').filter(|s| !s.is_empty()).collect();
            if f.is_empty() {
                continue;
            }
            if f[0] == "vars" {
                let mut i = 1;
                while i + 1 < f.len() {
                    let v: u64 = f[i + 1].parse().map_err(|_| bad("bad vars value"))?;
                    match f[i] {
                        "currentEpoch" => c.current_epoch = v,
                        "lastVoteEpoch" => c.last_vote_epoch = v,
                        _ => {}
                    }
                    i += 2;
                }
                continue;
            }
            if f.len() < 8 {
                return Err(bad("too few fields"));
            }
            let id = crate::node::to_id(f[0].as_bytes()).ok_or_else(|| bad("bad node id"))?;
            if c.by_id.contains_key(&id) {
                return Err(bad("duplicate node id"));
            }
            let flags = crate::node::parse_flags(f[2]);
            let mut node = Node::new(id, flags & !(flag::HANDSHAKE | flag::MEET), now);
            let (ip, port, cport, hostname) =
                parse_address(f[1]).ok_or_else(|| bad("bad address"))?;
            node.ip = ip;
            node.port = port;
            node.cport = cport;
            node.hostname = hostname;
            node.ping_sent = 0;
            node.pong_received = if f[5] != "0" { now } else { 0 };
            node.config_epoch = f[6].parse().map_err(|_| bad("bad config epoch"))?;
            let idx = c.insert(node);
            if flags & flag::MYSELF != 0 {
                if myself.is_some() {
                    return Err(bad("two nodes flagged myself"));
                }
                myself = Some(idx);
            }
            if f[3] != "-" {
                let m = crate::node::to_id(f[3].as_bytes()).ok_or_else(|| bad("bad master id"))?;
                masters.push((idx, m));
            }
            for s in &f[8..] {
                if let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                    let (slot, rest, importing) = if let Some((a, b)) = inner.split_once("-<-") {
                        (a, b, true)
                    } else if let Some((a, b)) = inner.split_once("->-") {
                        (a, b, false)
                    } else {
                        return Err(bad("bad slot mark"));
                    };
                    let slot = parse_slot(slot).ok_or_else(|| bad("bad slot"))?;
                    let other = crate::node::to_id(rest.as_bytes())
                        .ok_or_else(|| bad("bad node in slot mark"))?;
                    marks.push((slot, importing, other));
                    continue;
                }
                let (a, b) = match s.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (*s, *s),
                };
                let (a, b) = (parse_slot(a), parse_slot(b));
                match (a, b) {
                    (Some(a), Some(b)) if a <= b => slots.push((idx, a, b)),
                    _ => return Err(bad("bad slot range")),
                }
            }
        }
        let Some(me) = myself else {
            return Err(
                "Unrecoverable error: corrupted cluster config file: no node flagged myself".into(),
            );
        };
        c.myself = me;
        for (idx, m) in masters {
            let mi = match c.by_id.get(&m) {
                Some(&mi) => mi,
                None => {
                    // A master we only know by name: Redis creates it without address.
                    c.insert(Node::new(m, flag::MASTER | flag::NOADDR, now))
                }
            };
            if let Some(n) = c.node_mut(idx) {
                n.master = Some(mi);
            }
            c.mark_had_replica(Some(mi));
        }
        for (idx, a, b) in slots {
            for s in a..=b {
                c.assign_slot(s, idx);
            }
        }
        for (slot, importing, other) in marks {
            let Some(&o) = c.by_id.get(&other) else {
                continue;
            };
            if importing {
                c.slots.set_importing(slot, Some(o));
            } else {
                c.slots.set_migrating(slot, Some(o));
            }
        }
        if let Some(m) = c.node_mut(me) {
            m.ping_sent = 0;
        }
        c.sync_myself_address();
        c.update_state();
        Ok(c)
    }

    // ---- the node table -------------------------------------------------------------

    fn insert(&mut self, node: Node) -> NodeIdx {
        let id = node.id;
        let idx = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as NodeIdx
            }
        };
        self.by_id.insert(id, idx);
        self.generation += 1;
        idx
    }

    pub fn node(&self, idx: NodeIdx) -> Option<&Node> {
        self.nodes.get(idx as usize).and_then(|n| n.as_ref())
    }

    pub(crate) fn node_mut(&mut self, idx: NodeIdx) -> Option<&mut Node> {
        self.nodes.get_mut(idx as usize).and_then(|n| n.as_mut())
    }

    pub fn lookup(&self, id: &[u8]) -> Option<NodeIdx> {
        let id: NodeId = id.try_into().ok()?;
        self.by_id.get(&id).copied()
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeIdx, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i as NodeIdx, n)))
    }

    pub fn node_count(&self) -> usize {
        self.by_id.len()
    }

    pub fn myself_idx(&self) -> NodeIdx {
        self.myself
    }

    pub fn myself(&self) -> &Node {
        match self.node(self.myself) {
            Some(n) => n,
            // The table always holds myself: losing it would corrupt every reply.
            None => panic!("cluster node table lost myself"),
        }
    }

    pub(crate) fn myself_mut(&mut self) -> &mut Node {
        let me = self.myself;
        match self.node_mut(me) {
            Some(n) => n,
            None => panic!("cluster node table lost myself"),
        }
    }

    pub fn my_id(&self) -> NodeId {
        self.myself().id
    }

    pub fn state_ok(&self) -> bool {
        self.state_ok
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn slot_map(&self) -> &SlotMap<NodeIdx> {
        &self.slots
    }

    pub fn set_repl_offset(&mut self, offset: u64) {
        self.repl_offset = offset;
        let me = self.myself;
        if let Some(n) = self.node_mut(me) {
            n.repl_offset = offset;
        }
    }

    /// The master whose slots this node's shard serves: itself, or its master.
    pub fn shard_master(&self, idx: NodeIdx) -> Option<NodeIdx> {
        let n = self.node(idx)?;
        if n.is_replica() {
            n.master
        } else {
            Some(idx)
        }
    }

    /// The replicas of `master`, in table order.
    pub fn replicas_of(&self, master: NodeIdx) -> Vec<NodeIdx> {
        self.nodes()
            .filter(|(_, n)| n.is_replica() && n.master == Some(master))
            .map(|(i, _)| i)
            .collect()
    }

    /// configEpoch as Redis reports it: a replica shows its master's.
    pub fn node_epoch(&self, idx: NodeIdx) -> u64 {
        let Some(n) = self.node(idx) else { return 0 };
        match n.master.and_then(|m| self.node(m)) {
            Some(m) if n.is_replica() => m.config_epoch,
            _ => n.config_epoch,
        }
    }

    pub(crate) fn changed(&mut self) {
        self.save_pending = true;
        self.generation += 1;
    }

    fn del_node(&mut self, idx: NodeIdx, out: &mut Vec<Action>) {
        if idx == self.myself {
            return;
        }
        for s in 0..SLOT_COUNT as Slot {
            if let Some(info) = self.slots.get(s) {
                let (own, mig, imp) = (
                    info.owner == Some(idx),
                    info.migrating_to == Some(idx),
                    info.importing_from == Some(idx),
                );
                if mig {
                    self.slots.set_migrating(s, None);
                }
                if imp {
                    self.slots.set_importing(s, None);
                }
                if own {
                    self.unassign_slot(s);
                }
            }
        }
        let Some(node) = self.nodes.get_mut(idx as usize).and_then(|n| n.take()) else {
            return;
        };
        for l in [node.link, node.inbound_link].into_iter().flatten() {
            self.links.remove(&l);
            out.push(Action::Close { link: l });
        }
        self.by_id.remove(&node.id);
        self.free.push(idx);
        for n in self.nodes.iter_mut().flatten() {
            if n.master == Some(idx) {
                n.master = None;
            }
            n.fail_reports.retain(|(r, _)| *r != idx);
        }
        self.changed();
    }

    // ---- slots ----------------------------------------------------------------------

    /// Whether `owner`'s slots are served here: it is this node, or this node
    /// replicates it.
    fn shard_of_mine(&self, owner: NodeIdx) -> bool {
        owner == self.myself || (self.myself().is_replica() && self.myself().master == Some(owner))
    }

    pub(crate) fn assign_slot(&mut self, slot: Slot, idx: NodeIdx) {
        if let Some(prev) = self.slots.owner(slot).copied() {
            if prev == idx {
                return;
            }
            if self.shard_of_mine(prev) && !self.shard_of_mine(idx) {
                self.slots_left.push(slot);
            }
            if let Some(p) = self.node_mut(prev) {
                codec::set_slot_bit(&mut p.slots, slot, false);
                p.num_slots -= 1;
            }
        }
        self.slots.assign(slot, idx);
        if let Some(n) = self.node_mut(idx) {
            codec::set_slot_bit(&mut n.slots, slot, true);
            n.num_slots += 1;
        }
        self.generation += 1;
    }

    /// Unassigns `slot`, keeping its migrating/importing marks untouched.
    pub(crate) fn unassign_slot(&mut self, slot: Slot) {
        let Some(prev) = self.slots.owner(slot).copied() else {
            return;
        };
        if self.shard_of_mine(prev) {
            self.slots_left.push(slot);
        }
        if let Some(p) = self.node_mut(prev) {
            codec::set_slot_bit(&mut p.slots, slot, false);
            p.num_slots -= 1;
        }
        let (mig, imp) = self
            .slots
            .get(slot)
            .map(|i| (i.migrating_to, i.importing_from))
            .unwrap_or((None, None));
        self.slots.unassign(slot);
        self.slots.set_migrating(slot, mig);
        self.slots.set_importing(slot, imp);
        self.generation += 1;
    }

    pub(crate) fn clear_node_slots(&mut self, idx: NodeIdx) {
        let Some(n) = self.node(idx) else { return };
        if n.num_slots == 0 {
            return;
        }
        for s in 0..SLOT_COUNT as Slot {
            if self.slots.owner(s) == Some(&idx) {
                self.unassign_slot(s);
            }
        }
    }

    /// Takes the slots in `claimed` whose owner has an older configEpoch (Redis'
    /// `clusterUpdateSlotsConfigWith`): the rule that makes the newest claim win.
    fn update_slots_with(
        &mut self,
        sender: NodeIdx,
        sender_epoch: u64,
        claimed: &SlotBits,
        out: &mut Vec<Action>,
    ) {
        if sender == self.myself {
            return;
        }
        let me = self.myself;
        let cur_master = if self.myself().is_master() {
            Some(me)
        } else {
            self.myself().master
        };
        let mut new_master = None;
        let mut dirty = Vec::new();
        let mut migrated_ours = 0;
        for s in 0..SLOT_COUNT as Slot {
            if !codec::slot_bit(claimed, s) {
                continue;
            }
            let info = self.slots.get(s).cloned().unwrap_or_default();
            if info.owner == Some(sender) || info.importing_from.is_some() {
                continue;
            }
            let owner_epoch = info
                .owner
                .and_then(|o| self.node(o))
                .map(|o| o.config_epoch);
            if owner_epoch.is_none_or(|e| e < sender_epoch) {
                if info.owner == Some(me) && sender != me {
                    dirty.push(s);
                }
                if info.owner.is_some() && info.owner == cur_master {
                    new_master = Some(sender);
                    migrated_ours += 1;
                }
                self.unassign_slot(s);
                self.assign_slot(s, sender);
                self.changed();
            }
        }
        let cur_has_slots = cur_master
            .and_then(|m| self.node(m))
            .is_some_and(|m| m.num_slots > 0);
        // The sender took all its slots from us: a failover, which the shard follows
        // even with replica migration off (a reshard that empties a master does not
        // move its replicas then).
        let sender_slots = (0..SLOT_COUNT as Slot)
            .filter(|&s| codec::slot_bit(claimed, s))
            .count();
        let follow = self.config.allow_replica_migration || sender_slots == migrated_ours;
        if let Some(nm) = new_master {
            if !cur_has_slots && follow {
                let id = self
                    .node(nm)
                    .map(|n| n.id_str().to_string())
                    .unwrap_or_default();
                out.push(Action::Log(
                    Level::Notice,
                    format!(
                        "Configuration change detected. Reconfiguring myself as a replica of {id}"
                    ),
                ));
                self.set_my_master(nm, out);
                return;
            }
        }
        if !dirty.is_empty() {
            for &s in &dirty {
                self.slots.set_importing(s, None);
            }
            out.push(Action::DeleteSlotKeys(dirty));
        }
    }

    /// Makes this node a replica of `master` (CLUSTER REPLICATE, or losing its slots).
    pub(crate) fn set_my_master(&mut self, master: NodeIdx, out: &mut Vec<Action>) {
        let me = self.myself;
        self.reset_manual_failover(out);
        if self.myself().is_master() {
            self.clear_node_slots(me);
            for s in 0..SLOT_COUNT as Slot {
                self.slots.set_migrating(s, None);
                self.slots.set_importing(s, None);
            }
        }
        let m = self.myself_mut();
        m.flags = (m.flags & !flag::MASTER) | flag::SLAVE;
        m.master = Some(master);
        self.mark_had_replica(Some(master));
        if let Some(n) = self.node(master) {
            out.push(Action::SetMaster {
                ip: n.ip.clone(),
                port: n.port,
            });
        }
        self.changed();
        self.update_state();
    }

    /// A master that has had a replica may receive a migrating one once orphaned
    /// (Redis' MIGRATE_TO flag).
    fn mark_had_replica(&mut self, master: Option<NodeIdx>) {
        if let Some(m) = master.and_then(|m| self.node_mut(m)) {
            if m.is_master() {
                m.flags |= flag::MIGRATE_TO;
            }
        }
    }

    pub(crate) fn set_node_as_master(&mut self, idx: NodeIdx) {
        let me = self.myself;
        let Some(n) = self.node_mut(idx) else { return };
        if n.is_master() && n.master.is_none() {
            return;
        }
        // A promoted replica is a master a migrating replica may join once orphaned.
        if n.is_replica() && idx != me {
            n.flags |= flag::MIGRATE_TO;
        }
        n.flags = (n.flags & !flag::SLAVE) | flag::MASTER;
        n.master = None;
        self.changed();
    }

    // ---- links and messages ---------------------------------------------------------

    fn new_link(&mut self, now: u64, node: Option<NodeIdx>, inbound: bool) -> LinkId {
        let id = self.next_link;
        self.next_link += 1;
        self.links.insert(
            id,
            Link {
                node,
                inbound,
                connected: inbound,
                ctime: now,
                buf: Vec::new(),
                peer_ip: String::new(),
                local_ip: String::new(),
                send_bytes: 0,
            },
        );
        id
    }

    /// A peer connected to our bus port; the driver tells us its address and ours.
    pub fn accept(&mut self, now: u64, peer_ip: &str, local_ip: &str) -> LinkId {
        let id = self.new_link(now, None, true);
        if let Some(l) = self.links.get_mut(&id) {
            l.peer_ip = peer_ip.to_string();
            l.local_ip = local_ip.to_string();
        }
        id
    }

    /// Our outgoing connection completed.
    pub fn link_connected(&mut self, link: LinkId) {
        if let Some(l) = self.links.get_mut(&link) {
            l.connected = true;
        }
    }

    /// A link broke (or failed to connect): the node gets a new one at the next tick.
    pub fn link_closed(&mut self, link: LinkId) {
        if let Some(l) = self.links.remove(&link) {
            if let Some(n) = l.node.and_then(|i| self.node_mut(i)) {
                if n.link == Some(link) {
                    n.link = None;
                }
                if n.inbound_link == Some(link) {
                    n.inbound_link = None;
                }
            }
        }
    }

    fn close_link(&mut self, link: LinkId, out: &mut Vec<Action>) {
        self.link_closed(link);
        out.push(Action::Close { link });
    }

    pub(crate) fn header(&self, kind: u16) -> Header {
        let me = self.myself();
        let master = if me.is_replica() {
            me.master.and_then(|m| self.node(m))
        } else {
            Some(me)
        };
        let mut mflags = [0u8; 3];
        if !self.config.announce_hostname.is_empty()
            && matches!(kind, kind::PING | kind::PONG | kind::MEET)
        {
            mflags[0] |= mflag::EXT_DATA;
        }
        if self.paused() {
            mflags[0] |= mflag::PAUSED;
        }
        Header {
            port: self.config.port,
            kind,
            current_epoch: self.current_epoch,
            config_epoch: master.map_or(0, |m| m.config_epoch),
            offset: self.repl_offset,
            sender: me.id,
            slots: master.map_or_else(|| Box::new([0; 2048]), |m| m.slots.clone()),
            slaveof: if me.is_replica() {
                me.master.and_then(|m| self.node(m)).map(|m| m.id)
            } else {
                None
            },
            myip: self.config.announce_ip.as_bytes().to_vec(),
            pport: self.config.pport,
            cport: self.config.cport,
            flags: me.flags,
            state: if self.state_ok { 0 } else { 1 },
            mflags,
        }
    }

    pub(crate) fn send(&mut self, link: LinkId, msg: &Message, out: &mut Vec<Action>) {
        let bytes = codec::encode(msg);
        if let Some(c) = self.stats.sent.get_mut(msg.header.kind as usize) {
            *c += 1;
        }
        self.stats.bytes_sent += bytes.len() as u64;
        if let Some(l) = self.links.get_mut(&link) {
            l.send_bytes += bytes.len() as u64;
        }
        out.push(Action::Send { link, bytes });
    }

    fn gossip_entry(&self, n: &Node) -> GossipEntry {
        GossipEntry {
            node: n.id,
            ping_sent: ms_to_secs(n.ping_sent),
            pong_received: ms_to_secs(n.pong_received),
            ip: codec::IpField::new(n.ip.as_bytes()),
            port: n.port,
            cport: n.cport,
            flags: n.flags,
            pport: n.pport,
        }
    }

    /// PING, PONG or MEET with a gossip sample: a tenth of the nodes (at least 3) picked
    /// at random, then every node we suspect, so failure reports spread fast.
    fn send_ping(&mut self, now: u64, link: LinkId, kind: u16, out: &mut Vec<Action>) {
        let target = self.links.get(&link).and_then(|l| l.node);
        let total = self.node_count();
        let fresh = total.saturating_sub(2);
        let wanted = (total / 10).max(3).min(fresh);
        // Drawn straight from the node table (a free slot is a wasted try, as Redis'
        // random dict key can be): collecting the known nodes first was O(n) per ping.
        let slots = self.nodes.len();
        let mut chosen: Vec<NodeIdx> = Vec::with_capacity(wanted);
        let mut tries = wanted * 3;
        while chosen.len() < wanted && tries > 0 && slots > 0 {
            tries -= 1;
            let i = self.rng.below(slots) as NodeIdx;
            let Some(n) = self.node(i) else { continue };
            if i == self.myself
                || n.has(flag::PFAIL)
                || n.has(flag::HANDSHAKE | flag::NOADDR)
                || (n.link.is_none() && n.num_slots == 0)
                || chosen.contains(&i)
            {
                continue;
            }
            chosen.push(i);
        }
        for (i, n) in self.nodes() {
            if n.has(flag::PFAIL) && !n.has(flag::HANDSHAKE | flag::NOADDR) && !chosen.contains(&i)
            {
                chosen.push(i);
            }
        }
        let gossip = chosen
            .iter()
            .filter_map(|&i| self.node(i))
            .map(|n| self.gossip_entry(n))
            .collect();
        let mut extensions = Vec::new();
        if !self.config.announce_hostname.is_empty() {
            extensions.push(Extension::Hostname(
                self.config.announce_hostname.as_bytes().to_vec(),
            ));
        }
        let msg = Message {
            header: self.header(kind),
            body: Body::Ping { gossip, extensions },
        };
        if kind == kind::PING {
            if let Some(n) = target.and_then(|t| self.node_mut(t)) {
                if n.ping_sent == 0 {
                    n.ping_sent = now;
                }
            }
        }
        self.send(link, &msg, out);
    }

    /// Sends to every node we have a link to (Redis' clusterBroadcastMessage).
    pub(crate) fn broadcast(&mut self, msg: &Message, out: &mut Vec<Action>) {
        let links: Vec<LinkId> = self
            .nodes()
            .filter(|(i, n)| *i != self.myself && !n.has(flag::HANDSHAKE))
            .filter_map(|(_, n)| n.link)
            .collect();
        for l in links {
            self.send(l, msg, out);
        }
    }

    /// A PONG to every node, so a change (slots, role, epoch) spreads at once.
    pub fn broadcast_pong(&mut self, now: u64, out: &mut Vec<Action>) {
        let links: Vec<LinkId> = self
            .nodes()
            .filter(|(i, n)| *i != self.myself && !n.has(flag::HANDSHAKE))
            .filter_map(|(_, n)| n.link)
            .collect();
        for l in links {
            self.send_ping(now, l, kind::PONG, out);
        }
    }

    /// Bytes from a link. Complete messages are decoded and processed; a malformed one
    /// is counted and closes the link.
    pub fn received(&mut self, now: u64, link: LinkId, data: &[u8]) -> Vec<Action> {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        let Some(l) = self.links.get_mut(&link) else {
            return out;
        };
        // Whole frames are decoded straight from the caller's bytes; only the start of a
        // frame still arriving is kept, in a buffer that lives no longer than that. A
        // buffer kept per link at its largest message's size (10 KB and more with
        // gossip) would cost a 1,000-node cluster's nodes 20 MB each.
        let mut pending = std::mem::take(&mut l.buf);
        let mut input: &[u8] = if pending.is_empty() {
            data
        } else {
            pending.extend_from_slice(data);
            &pending
        };
        loop {
            let len = match codec::frame_len(input) {
                Ok(Some(len)) if input.len() >= len => len,
                Ok(_) => break,
                Err(e) => {
                    self.refuse(link, &e, &mut out);
                    self.finish_message(&mut out);
                    return out;
                }
            };
            let (frame, rest) = input.split_at(len);
            input = rest;
            match codec::decode(frame) {
                Ok(msg) => self.process(now, link, msg, &mut out),
                Err(e) => {
                    self.refuse(link, &e, &mut out);
                    self.finish_message(&mut out);
                    return out;
                }
            }
            if !self.links.contains_key(&link) {
                // The message closed the link: what follows it is not read.
                self.finish_message(&mut out);
                return out;
            }
        }
        if !input.is_empty() {
            if let Some(l) = self.links.get_mut(&link) {
                l.buf = input.to_vec();
            }
        }
        self.finish_message(&mut out);
        out
    }

    /// A message that does not decode: counted, and the link closed (the stream can no
    /// longer be trusted to be cut at message boundaries).
    fn refuse(&mut self, link: LinkId, e: &codec::DecodeError, out: &mut Vec<Action>) {
        self.stats.malformed += 1;
        out.push(Action::Log(
            Level::Warning,
            format!("Cluster bus: {e}; closing the link"),
        ));
        self.close_link(link, out);
    }

    fn finish(&mut self, out: &mut Vec<Action>) {
        self.update_state();
        self.report_slots_left(out);
        if self.save_pending {
            self.save_pending = false;
            out.push(self.save_action(false));
        }
    }

    /// As [`Cluster::finish`] after a bus message, except that a change that leaves this
    /// node's own epochs and vote as they were on disk is written by the next tick (at
    /// most 100 ms later) rather than now: while 1,000 masters settle their config
    /// epochs, every message changes something, and writing the whole file for each one
    /// cost more than all the rest of the gossip. Redis writes once per event-loop turn.
    /// What must be durable before this node says it (a vote, a new epoch) still is.
    fn finish_message(&mut self, out: &mut Vec<Action>) {
        if self.save_pending && self.durable_epochs() == self.synced_epochs {
            self.update_state();
            self.report_slots_left(out);
            return;
        }
        self.finish(out);
    }

    fn report_slots_left(&mut self, out: &mut Vec<Action>) {
        if !self.slots_left.is_empty() {
            let mut slots = std::mem::take(&mut self.slots_left);
            slots.sort_unstable();
            slots.dedup();
            out.push(Action::DropShardChannels(slots));
        }
    }

    /// The part of nodes.conf that must reach the disk before this node acts on it.
    fn durable_epochs(&self) -> (u64, u64, u64) {
        (
            self.current_epoch,
            self.last_vote_epoch,
            self.myself().config_epoch,
        )
    }

    /// nodes.conf to write now; `force_sync` for an explicit save (SAVECONFIG, start-up).
    pub fn save_action(&mut self, force_sync: bool) -> Action {
        let epochs = self.durable_epochs();
        let fsync = force_sync || epochs != self.synced_epochs;
        if fsync {
            self.synced_epochs = epochs;
        }
        Action::SaveConfig {
            text: self.nodes_conf(),
            fsync,
        }
    }

    fn process(&mut self, now: u64, link: LinkId, msg: Message, out: &mut Vec<Action>) {
        let h = &msg.header;
        let t = h.kind;
        if self.drop_filter == Some(t) {
            out.push(Action::Log(
                Level::Warning,
                "Dropping packet that matches debug drop filter".into(),
            ));
            return;
        }
        if let Some(c) = self.stats.received.get_mut(t as usize) {
            *c += 1;
        }
        let sender = self
            .by_id
            .get(&h.sender)
            .copied()
            .filter(|&s| self.node(s).is_some_and(|n| !n.in_handshake()));
        let inbound = self.links.get(&link).is_some_and(|l| l.inbound);
        if let Some(s) = sender {
            if inbound {
                if let Some(l) = self.links.get_mut(&link) {
                    l.node = Some(s);
                }
                if let Some(n) = self.node_mut(s) {
                    n.inbound_link = Some(link);
                }
            }
            if h.current_epoch > self.current_epoch {
                self.current_epoch = h.current_epoch;
                self.changed();
            }
            let (cfg, off) = (h.config_epoch, h.offset);
            if let Some(n) = self.node_mut(s) {
                n.data_received = now;
                n.repl_offset = off;
                if cfg > n.config_epoch {
                    n.config_epoch = cfg;
                    self.changed();
                }
            }
        }
        match t {
            kind::PING | kind::MEET | kind::PONG => self.process_ping(now, link, sender, msg, out),
            kind::FAIL => {
                let (Some(_), Body::Fail { node }) = (sender, &msg.body) else {
                    return;
                };
                let Some(f) = self.by_id.get(node).copied() else {
                    return;
                };
                if f == self.myself {
                    return;
                }
                if let Some(n) = self.node_mut(f) {
                    if !n.has(flag::FAIL) {
                        n.flags = (n.flags | flag::FAIL) & !flag::PFAIL;
                        n.fail_time = now;
                        let id = n.id_str().to_string();
                        out.push(Action::Log(
                            Level::Notice,
                            format!(
                                "FAIL message received from {} about {id}",
                                codec::node_id_str(&h.sender)
                            ),
                        ));
                        self.changed();
                    }
                }
            }
            kind::PUBLISH | kind::PUBLISHSHARD => {
                if sender.is_none() {
                    return;
                }
                if let Body::Publish { channel, message } = msg.body {
                    out.push(Action::Deliver {
                        channel,
                        message,
                        shard: t == kind::PUBLISHSHARD,
                    });
                }
            }
            kind::UPDATE => {
                let (
                    Some(_),
                    Body::Update {
                        config_epoch,
                        node,
                        slots,
                    },
                ) = (sender, &msg.body)
                else {
                    return;
                };
                let Some(n) = self.by_id.get(node).copied() else {
                    return;
                };
                if self.node(n).is_none_or(|n| n.config_epoch >= *config_epoch) {
                    return;
                }
                if self.node(n).is_some_and(|n| n.is_replica()) {
                    self.set_node_as_master(n);
                }
                if let Some(nn) = self.node_mut(n) {
                    nn.config_epoch = *config_epoch;
                }
                self.changed();
                let slots = slots.clone();
                self.update_slots_with(n, *config_epoch, &slots, out);
            }
            kind::FAILOVER_AUTH_REQUEST => {
                if let Some(s) = sender {
                    self.vote_if_needed(now, s, &msg.header, out);
                }
            }
            kind::FAILOVER_AUTH_ACK => {
                if let Some(s) = sender {
                    self.count_vote(s, msg.header.current_epoch);
                }
            }
            kind::MFSTART => {
                if let Some(s) = sender {
                    self.manual_failover_requested(now, s, out);
                }
            }
            _ => {}
        }
    }

    fn process_ping(
        &mut self,
        now: u64,
        link: LinkId,
        sender: Option<NodeIdx>,
        msg: Message,
        out: &mut Vec<Action>,
    ) {
        let h = msg.header;
        let t = h.kind;
        let (gossip, extensions) = match msg.body {
            Body::Ping { gossip, extensions } => (gossip, extensions),
            _ => (Vec::new(), Vec::new()),
        };
        let (peer_ip, local_ip, link_node, inbound) = match self.links.get(&link) {
            Some(l) => (l.peer_ip.clone(), l.local_ip.clone(), l.node, l.inbound),
            None => return,
        };
        let header_ip = String::from_utf8_lossy(&h.myip).into_owned();
        if t == kind::PING || t == kind::MEET {
            // A node learns its own address from the connection a MEET arrived on, unless
            // it announces one.
            if (t == kind::MEET || self.myself().ip.is_empty())
                && self.config.announce_ip.is_empty()
                && !local_ip.is_empty()
                && self.myself().ip != local_ip
            {
                self.myself_mut().ip = local_ip.clone();
                out.push(Action::Log(
                    Level::Notice,
                    format!("IP address for this node updated to {local_ip}"),
                ));
                self.changed();
            }
            if sender.is_none() && t == kind::MEET {
                let ip = if header_ip.is_empty() {
                    peer_ip.clone()
                } else {
                    header_ip.clone()
                };
                self.add_handshake(now, &ip, h.port, h.cport, h.pport, false);
                // A MEET's gossip is trusted even though its sender is not yet known.
                self.process_gossip(now, None, &gossip, out);
            }
            self.send_ping(now, link, kind::PONG, out);
        }
        if !inbound {
            if let Some(ln) = link_node {
                let in_handshake = self.node(ln).is_some_and(|n| n.in_handshake());
                if in_handshake {
                    if let Some(s) = sender {
                        // We already know this node by its real name: the handshake
                        // node was a duplicate address.
                        self.update_address(s, link, &h, &peer_ip, out);
                        self.del_node(ln, out);
                        return;
                    }
                    if self.by_id.contains_key(&h.sender) {
                        // Another handshake for the same real node.
                        self.del_node(ln, out);
                        return;
                    }
                    let old = self.node(ln).map(|n| n.id);
                    if let Some(old) = old {
                        self.by_id.remove(&old);
                    }
                    self.by_id.insert(h.sender, ln);
                    let role = h.flags & (flag::MASTER | flag::SLAVE);
                    if let Some(n) = self.node_mut(ln) {
                        n.id = h.sender;
                        n.flags = (n.flags & !(flag::HANDSHAKE | flag::MEET)) | role;
                    }
                    out.push(Action::Log(
                        Level::Verbose,
                        format!(
                            "Handshake with node {} completed.",
                            codec::node_id_str(&h.sender)
                        ),
                    ));
                    self.changed();
                } else if self.node(ln).is_some_and(|n| n.id != h.sender) {
                    // The node at this address restarted with a new id.
                    if let Some(n) = self.node_mut(ln) {
                        n.flags |= flag::NOADDR;
                        n.ip.clear();
                        n.port = 0;
                        n.cport = 0;
                    }
                    self.close_link(link, out);
                    self.changed();
                    return;
                }
            }
        }
        // The sender is known by now if the handshake just completed.
        let sender = sender.or_else(|| {
            self.by_id
                .get(&h.sender)
                .copied()
                .filter(|&s| self.node(s).is_some_and(|n| !n.in_handshake()))
        });
        if let Some(s) = sender {
            let nofail = h.flags & flag::NOFAILOVER;
            if let Some(n) = self.node_mut(s) {
                n.flags = (n.flags & !flag::NOFAILOVER) | nofail;
            }
            if t == kind::PING && inbound {
                self.update_address(s, link, &h, &peer_ip, out);
            }
            // Redis reads the extensions of every PING/PONG/MEET of a known sender: no
            // hostname extension means the sender announces none (it was removed).
            let hostname = extensions.iter().find_map(|e| match e {
                Extension::Hostname(h) => Some(String::from_utf8_lossy(h).into_owned()),
                _ => None,
            });
            if let Some(n) = self.node_mut(s) {
                let hn = hostname.unwrap_or_default();
                if n.hostname != hn {
                    n.hostname = hn;
                    self.changed();
                }
            }
        }
        if t == kind::PONG {
            if let Some(ln) = link_node.filter(|_| !inbound) {
                let mut cleared = false;
                if let Some(n) = self.node_mut(ln) {
                    n.pong_received = now;
                    if n.ping_sent != 0 {
                        n.ping_answered = n.ping_sent;
                    }
                    n.ping_sent = 0;
                    if n.has(flag::PFAIL) {
                        n.flags &= !flag::PFAIL;
                        cleared = true;
                    } else if n.has(flag::FAIL) && (n.is_replica() || n.num_slots == 0) {
                        n.flags &= !flag::FAIL;
                        cleared = true;
                    }
                }
                if cleared {
                    out.push(Action::Log(
                        Level::Notice,
                        format!(
                            "Clear FAIL state for node {}: is reachable again.",
                            codec::node_id_str(&h.sender)
                        ),
                    ));
                    self.changed();
                }
            }
        }
        let Some(s) = sender else { return };
        // Role.
        match h.slaveof {
            None => self.set_node_as_master(s),
            Some(mid) => {
                let was_master = self.node(s).is_some_and(|n| n.is_master());
                if was_master {
                    self.clear_node_slots(s);
                    if let Some(n) = self.node_mut(s) {
                        n.flags = (n.flags & !(flag::MASTER | flag::MIGRATE_TO)) | flag::SLAVE;
                    }
                    self.changed();
                }
                let m = self.by_id.get(&mid).copied();
                if m.is_some() && self.node(s).is_some_and(|n| n.master != m) {
                    if let Some(n) = self.node_mut(s) {
                        n.master = m;
                    }
                    self.mark_had_replica(m);
                    self.changed();
                }
            }
        }
        // Slots: the sender's claim, if it is a master.
        let sender_master = self.shard_master(s);
        let dirty = sender_master
            .and_then(|m| self.node(m))
            .is_some_and(|m| m.slots[..] != h.slots[..]);
        let sender_is_master = self.node(s).is_some_and(|n| n.is_master());
        if sender_is_master && dirty {
            self.update_slots_with(s, h.config_epoch, &h.slots, out);
        }
        if dirty {
            // Someone has a newer claim on a slot the sender still claims: tell it.
            for slot in 0..SLOT_COUNT as Slot {
                if !codec::slot_bit(&h.slots, slot) {
                    continue;
                }
                let Some(owner) = self.slots.owner(slot).copied() else {
                    continue;
                };
                if Some(owner) == sender_master || owner == s {
                    continue;
                }
                let oe = self.node(owner).map_or(0, |o| o.config_epoch);
                if oe > h.config_epoch {
                    let msg = Message {
                        header: self.header(kind::UPDATE),
                        body: Body::Update {
                            config_epoch: oe,
                            node: self.node(owner).map_or(NO_NODE, |o| o.id),
                            slots: self
                                .node(owner)
                                .map_or_else(|| Box::new([0; 2048]), |o| o.slots.clone()),
                        },
                    };
                    if let Some(l) = self.node(s).and_then(|n| n.link) {
                        self.send(l, &msg, out);
                    }
                    break;
                }
            }
        }
        // configEpoch collision between two masters: the one with the smaller id moves.
        let me = self.myself();
        if sender_is_master
            && me.is_master()
            && h.config_epoch == me.config_epoch
            && h.sender > me.id
        {
            self.current_epoch += 1;
            let e = self.current_epoch;
            self.myself_mut().config_epoch = e;
            self.changed();
            out.push(Action::Log(
                Level::Verbose,
                format!(
                    "WARNING: configEpoch collision with node {}. configEpoch set to {e}",
                    codec::node_id_str(&h.sender)
                ),
            ));
        }
        self.note_master_paused(s, &h, out);
        self.process_gossip(now, Some(s), &gossip, out);
    }

    /// A known node's address changed (it restarted elsewhere): follow it.
    fn update_address(
        &mut self,
        idx: NodeIdx,
        link: LinkId,
        h: &Header,
        peer_ip: &str,
        out: &mut Vec<Action>,
    ) {
        if idx == self.myself {
            return;
        }
        let ip = if h.myip.is_empty() {
            peer_ip.to_string()
        } else {
            String::from_utf8_lossy(&h.myip).into_owned()
        };
        if ip.is_empty() {
            return;
        }
        let Some(n) = self.node(idx) else { return };
        if n.ip == ip && n.port == h.port && n.cport == h.cport {
            return;
        }
        let old_link = n.link;
        if let Some(n) = self.node_mut(idx) {
            n.ip = ip.clone();
            n.port = h.port;
            n.cport = h.cport;
            n.pport = h.pport;
            n.flags &= !flag::NOADDR;
        }
        if let Some(l) = old_link.filter(|&l| l != link) {
            self.close_link(l, out);
        }
        out.push(Action::Log(
            Level::Warning,
            format!(
                "Address updated for node {}, now {ip}:{}",
                codec::node_id_str(&h.sender),
                h.port
            ),
        ));
        if self.myself().master == Some(idx) {
            out.push(Action::SetMaster { ip, port: h.port });
        }
        self.changed();
    }

    fn process_gossip(
        &mut self,
        now: u64,
        sender: Option<NodeIdx>,
        gossip: &[GossipEntry],
        out: &mut Vec<Action>,
    ) {
        let sender_is_master = sender
            .and_then(|s| self.node(s))
            .is_some_and(|n| n.is_master());
        for g in gossip {
            // Compared as bytes: a node's address rarely changes, and turning every
            // entry's into a String was a tenth of a 200-node simulation's allocations.
            let ip = g.ip.as_slice();
            match self.by_id.get(&g.node).copied() {
                Some(n) => {
                    if let (Some(s), true) = (sender, sender_is_master) {
                        if n != self.myself {
                            if g.flags & (flag::FAIL | flag::PFAIL) != 0 {
                                self.add_fail_report(n, s, now);
                                self.mark_fail_if_needed(now, n, out);
                            } else if let Some(nn) = self.node_mut(n) {
                                if !nn.fail_reports.is_empty() {
                                    nn.fail_reports.retain(|(r, _)| *r != s);
                                }
                            }
                        }
                    }
                    let Some(nn) = self.node_mut(n) else { continue };
                    if g.flags & (flag::FAIL | flag::PFAIL) == 0
                        && nn.ping_sent == 0
                        && nn.fail_reports.is_empty()
                    {
                        let pong = u64::from(g.pong_received) * 1000;
                        if pong <= now + 500 && pong > nn.pong_received {
                            nn.pong_received = pong;
                        }
                    }
                    if nn.failing()
                        && g.flags & flag::NOADDR == 0
                        && nn.link.is_none()
                        && (String::from_utf8_lossy(ip) != nn.ip.as_str()
                            || nn.port != g.port
                            || nn.cport != g.cport)
                        && !ip.is_empty()
                    {
                        nn.ip = String::from_utf8_lossy(ip).into_owned();
                        nn.port = g.port;
                        nn.cport = g.cport;
                        nn.flags &= !flag::NOADDR;
                        self.changed();
                    }
                }
                None => {
                    if sender.is_some()
                        && g.flags & flag::NOADDR == 0
                        && self.banned.get(&g.node).is_none_or(|&t| t <= now)
                        && crate::node::valid_id(&g.node)
                        && !ip.is_empty()
                        && g.port != 0
                        && g.cport != 0
                    {
                        // Redis 7.0 adds a node a known peer gossips about under its
                        // real id, and pings it (no MEET, no handshake): a node that
                        // only talks to some peers is known by all but learnt about
                        // (its slots, its role) only from those it answers.
                        let role = g.flags & (flag::MASTER | flag::SLAVE | flag::NOFAILOVER);
                        let mut node = Node::new(g.node, role, now);
                        node.ip = String::from_utf8_lossy(ip).into_owned();
                        node.port = g.port;
                        node.cport = g.cport;
                        node.pport = g.pport;
                        self.insert(node);
                        self.changed();
                    }
                }
            }
        }
    }

    fn add_fail_report(&mut self, node: NodeIdx, reporter: NodeIdx, now: u64) {
        if let Some(n) = self.node_mut(node) {
            match n.fail_reports.iter_mut().find(|(r, _)| *r == reporter) {
                Some(r) => r.1 = now,
                None => n.fail_reports.push((reporter, now)),
            }
        }
    }

    /// PFAIL becomes FAIL when a majority of the slot-owning masters agree (counting
    /// ourselves when we are one); the FAIL is then broadcast.
    fn mark_fail_if_needed(&mut self, now: u64, idx: NodeIdx, out: &mut Vec<Action>) {
        let validity = self.config.node_timeout * 2;
        let needed = self.cluster_size() / 2 + 1;
        let me_master = self.myself().is_master() && self.myself().num_slots > 0;
        let Some(n) = self.node_mut(idx) else { return };
        n.fail_reports
            .retain(|(_, t)| now.saturating_sub(*t) <= validity);
        if !n.has(flag::PFAIL) || n.has(flag::FAIL) {
            return;
        }
        let reports = n.fail_reports.len() + usize::from(me_master);
        if reports < needed {
            return;
        }
        n.flags = (n.flags & !flag::PFAIL) | flag::FAIL;
        n.fail_time = now;
        let id = n.id;
        out.push(Action::Log(
            Level::Notice,
            format!(
                "Marking node {} as failing (quorum reached).",
                codec::node_id_str(&id)
            ),
        ));
        let msg = Message {
            header: self.header(kind::FAIL),
            body: Body::Fail { node: id },
        };
        self.broadcast(&msg, out);
        self.changed();
    }

    /// A master that starts suspecting `suspect` tells the other masters at once, with
    /// a PONG whose gossip carries every node it suspects: only masters' reports count
    /// towards FAIL, and Redis leaves them to the next ping's gossip, up to a second or
    /// more later. One message per master, and only when a suspicion starts.
    fn report_suspect(&mut self, now: u64, suspect: NodeIdx, out: &mut Vec<Action>) {
        let me = self.myself();
        if !me.is_master()
            || me.num_slots == 0
            || self.node(suspect).is_none_or(|n| n.has(flag::FAIL))
        {
            return;
        }
        let links: Vec<LinkId> = self
            .nodes()
            .filter(|(i, n)| {
                *i != self.myself
                    && *i != suspect
                    && n.is_master()
                    && n.num_slots > 0
                    && !n.failing()
                    && !n.has(flag::HANDSHAKE)
            })
            .filter_map(|(_, n)| n.link)
            .collect();
        for l in links {
            self.send_ping(now, l, kind::PONG, out);
        }
    }

    /// Starts a handshake with an address (CLUSTER MEET or gossip). Returns false when
    /// the address is invalid or a handshake with it is already under way.
    pub fn start_handshake(&mut self, now: u64, ip: &str, port: u16, cport: u16) -> bool {
        self.add_handshake(now, ip, port, cport, 0, true)
    }

    /// A node known only by address until it answers: `meet` for one we introduce
    /// ourselves to (CLUSTER MEET, gossip), not for one that sent us a MEET. One
    /// handshake per address at a time.
    fn add_handshake(
        &mut self,
        now: u64,
        ip: &str,
        port: u16,
        cport: u16,
        pport: u16,
        meet: bool,
    ) -> bool {
        if ip.is_empty() || port == 0 || cport == 0 {
            return false;
        }
        let dup = self
            .nodes()
            .any(|(_, n)| n.in_handshake() && n.ip == ip && n.port == port && n.cport == cport);
        if dup {
            return false;
        }
        let id = self.rng.node_id();
        let flags = if meet {
            flag::HANDSHAKE | flag::MEET
        } else {
            flag::HANDSHAKE
        };
        let mut n = Node::new(id, flags, now);
        n.ip = ip.to_string();
        n.port = port;
        n.cport = cport;
        n.pport = pport;
        self.insert(n);
        self.changed();
        true
    }

    // ---- the timer ------------------------------------------------------------------

    /// Runs ten times a second (Redis' clusterCron).
    pub fn tick(&mut self, now: u64) -> Vec<Action> {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        self.ticks += 1;
        let timeout = self.config.node_timeout;
        let handshake_timeout = timeout.max(1000);
        self.banned.retain(|_, t| *t > now);
        let i_serve_slots = self.myself().is_master() && self.myself().num_slots > 0;
        let idxs: Vec<NodeIdx> = self.nodes().map(|(i, _)| i).collect();
        for &i in &idxs {
            if i == self.myself {
                continue;
            }
            let Some(n) = self.node(i) else { continue };
            if n.in_handshake() && now.saturating_sub(n.ctime) > handshake_timeout {
                self.del_node(i, &mut out);
                continue;
            }
            if n.link.is_none() && !n.has(flag::NOADDR) && !n.ip.is_empty() {
                let (ip, cport, meet, old_ping) =
                    (n.ip.clone(), n.cport, n.has(flag::MEET), n.ping_sent);
                let link = self.new_link(now, Some(i), false);
                if let Some(n) = self.node_mut(i) {
                    n.link = Some(link);
                }
                out.push(Action::Connect {
                    link,
                    ip,
                    port: cport,
                });
                self.send_ping(
                    now,
                    link,
                    if meet { kind::MEET } else { kind::PING },
                    &mut out,
                );
                if let Some(n) = self.node_mut(i) {
                    if old_ping != 0 {
                        n.ping_sent = old_ping;
                    }
                    n.hello_sent = now;
                }
            } else if n.in_handshake() && now.saturating_sub(n.hello_sent) >= HANDSHAKE_RETRY_MS {
                // Redis sends its MEET once, so one lost message loses the whole
                // handshake; saying hello again each second until the node answers
                // makes joining survive loss (a duplicate MEET is harmless: the
                // receiver keeps one handshake per address).
                let meet = n.has(flag::MEET);
                if let Some(link) = n.link {
                    self.send_ping(
                        now,
                        link,
                        if meet { kind::MEET } else { kind::PING },
                        &mut out,
                    );
                }
                if let Some(n) = self.node_mut(i) {
                    n.hello_sent = now;
                }
            }
        }
        // Once a second, ping the node we heard from longest ago among five random ones.
        if self.ticks.is_multiple_of(10) && !idxs.is_empty() {
            let mut best: Option<(NodeIdx, u64)> = None;
            for _ in 0..5 {
                let i = idxs[self.rng.below(idxs.len())];
                let Some(n) = self.node(i) else { continue };
                if i == self.myself
                    || n.link.is_none()
                    || n.ping_sent != 0
                    || n.has(flag::HANDSHAKE | flag::MYSELF)
                {
                    continue;
                }
                if best.is_none_or(|(_, p)| n.pong_received < p) {
                    best = Some((i, n.pong_received));
                }
            }
            if let Some((i, _)) = best {
                if let Some(l) = self.node(i).and_then(|n| n.link) {
                    self.send_ping(now, l, kind::PING, &mut out);
                }
            }
        }
        for &i in &idxs {
            if i == self.myself {
                continue;
            }
            let Some(n) = self.node(i) else { continue };
            if n.has(flag::HANDSHAKE | flag::NOADDR) {
                continue;
            }
            let Some(link) = n.link else { continue };
            let lctime = self.links.get(&link).map_or(now, |l| l.ctime);
            // A link that gets no answer is rebuilt: the peer may be fine and only this
            // connection wedged.
            if now.saturating_sub(lctime) > timeout
                && n.ping_sent != 0
                && now.saturating_sub(n.ping_sent) > timeout / 2
                && now.saturating_sub(n.data_received) > timeout / 2
            {
                self.close_link(link, &mut out);
                if let Some(n) = self.node_mut(i) {
                    n.link = None;
                }
                continue;
            }
            // A master with slots also pings the other masters directly every half
            // timeout, whatever gossip says of them: its write lease rests on their
            // answers to its own PINGs.
            let lease_peer = i_serve_slots && n.is_master();
            if n.ping_sent == 0
                && (now.saturating_sub(n.pong_received) > timeout / 2
                    || (lease_peer && now.saturating_sub(n.ping_answered) > timeout / 2))
            {
                self.send_ping(now, link, kind::PING, &mut out);
                continue;
            }
            let delay = if n.ping_sent != 0 {
                now.saturating_sub(n.ping_sent)
            } else {
                0
            };
            let data_delay = now.saturating_sub(n.data_received);
            // Redis waits for a ping unanswered for a whole node timeout, and sends that
            // ping only once the last pong is half a timeout old: detection takes 1 to
            // 1.5 timeouts. A node we have not heard a byte from in a node timeout, with
            // a ping to it unanswered for half of one, is as surely unreachable (a live
            // node pings us every half timeout itself), and that bounds detection by one
            // timeout. PFAIL is only this node's suspicion: FAIL still needs a majority.
            if delay > timeout / 2 && data_delay > timeout && !n.failing() {
                if let Some(n) = self.node_mut(i) {
                    n.flags |= flag::PFAIL;
                    let id = n.id;
                    out.push(Action::Log(
                        Level::Verbose,
                        format!("*** NODE {} possibly failing", codec::node_id_str(&id)),
                    ));
                }
                self.generation += 1;
                // Reports gossiped before we suspected it may already make a majority:
                // Redis waits for the next gossip to count them; counting now saves up
                // to a ping round.
                self.mark_fail_if_needed(now, i, &mut out);
                self.report_suspect(now, i, &mut out);
            }
        }
        // A FAIL on a master with slots is cleared once it is reachable again and no one
        // took its slots within a while.
        for &i in &idxs {
            let Some(n) = self.node(i) else { continue };
            if n.has(flag::FAIL)
                && n.is_master()
                && n.num_slots > 0
                && now.saturating_sub(n.fail_time) > timeout * 2
                && n.ping_sent == 0
                && n.link.is_some()
                && now.saturating_sub(n.pong_received) < timeout
            {
                if let Some(n) = self.node_mut(i) {
                    n.flags &= !flag::FAIL;
                }
                self.changed();
            }
        }
        self.failover_tick(now, &mut out);
        self.finish(&mut out);
        out
    }

    /// The start of this master's write lease: the send time of a PING answered by
    /// enough other masters to make a majority with itself (the oldest of the most
    /// recent ones it needs); None when it serves no slot or is a majority alone.
    ///
    /// Why a node timeout from there is safe: a failover needs a majority of masters
    /// to flag this one PFAIL, and any majority of the others shares a master with the
    /// ones that answered. That master received our PING after we sent it, and flags
    /// PFAIL only after a node timeout without data from us (Carmine's and Redis'
    /// rule), so no replica can be promoted before the lease ends, clocks running at
    /// one rate. Times of receipt would not do: a master can hear from us later than
    /// it last told us anything.
    pub fn lease_start(&self) -> Option<u64> {
        let me = self.myself();
        if !me.is_master() || me.num_slots == 0 {
            return None;
        }
        let mut heard: Vec<u64> = self.lease_masters().map(|(_, n)| n.ping_answered).collect();
        // FAIL needs reports from a majority of the masters with slots, but Redis takes
        // them from any master, slot-less ones included: the masters that answered must
        // meet every such set of reporters, so with `o` other masters and a quorum `q`
        // it takes `o - q + 1` of them (1 of 2 in a three-master cluster).
        let quorum = self.cluster_size() / 2 + 1;
        let others_needed = (heard.len() + 1).saturating_sub(quorum);
        if others_needed == 0 {
            return None;
        }
        heard.sort_unstable_by(|a, b| b.cmp(a));
        Some(heard.get(others_needed - 1).copied().unwrap_or(0))
    }

    /// The other masters whose answers renew this master's write lease: every master
    /// that could report it failing, less the slot-less ones flagged FAIL (a master
    /// killed and replaced stays listed so until it comes back: counting it would take
    /// the lease away from every survivor).
    fn lease_masters(&self) -> impl Iterator<Item = (NodeIdx, &Node)> {
        self.nodes().filter(|(i, n)| {
            *i != self.myself
                && n.is_master()
                && !n.has(flag::HANDSHAKE | flag::NOADDR)
                && !(n.has(flag::FAIL) && n.num_slots == 0)
        })
    }

    /// Masters serving at least one slot.
    pub fn cluster_size(&self) -> usize {
        self.nodes()
            .filter(|(_, n)| n.is_master() && n.num_slots > 0)
            .count()
    }

    pub(crate) fn update_state(&mut self) {
        // Only what moves the generation (slots, flags, roles) can change the state,
        // and the end of the start-up delay below.
        if self.state_generation == self.generation && !self.state_held_back {
            return;
        }
        self.state_generation = self.generation;
        let mut ok = true;
        if self.config.require_full_coverage {
            // Every slot has exactly one owner, counted in that owner's num_slots, so the
            // slots served by nodes not in FAIL add up to 16384 exactly when all are
            // covered: a pass over the nodes, not over 16384 slots, on every change.
            let served: usize = self
                .nodes()
                .filter(|(_, n)| !n.has(flag::FAIL))
                .map(|(_, n)| n.num_slots)
                .sum();
            debug_assert_eq!(
                served == SLOT_COUNT,
                (0..SLOT_COUNT as Slot).all(|s| self
                    .slots
                    .owner(s)
                    .and_then(|&o| self.node(o))
                    .is_some_and(|n| !n.has(flag::FAIL)))
            );
            ok = served == SLOT_COUNT;
        }
        let size = self.cluster_size();
        let reachable = self
            .nodes()
            .filter(|(_, n)| n.is_master() && n.num_slots > 0 && !n.failing())
            .count();
        if reachable < size / 2 + 1 {
            ok = false;
        }
        // Redis' rule: a master that (re)starts stays in the fail state for its first two
        // seconds, so that a node back from a crash with a stale nodes.conf hears that
        // its slots went to its replica (an UPDATE) before it takes writes for them
        // again: with no data, it would acknowledge writes that are then thrown away.
        self.state_held_back = ok
            && !self.state_ok
            && self.myself().is_master()
            && self.clock.saturating_sub(self.born) <= WRITABLE_DELAY;
        if self.state_held_back {
            ok = false;
        }
        if ok != self.state_ok {
            self.state_ok = ok;
            self.generation += 1;
            self.state_generation = self.generation;
        }
    }

    /// Publishes to every peer (PUBLISH) or to this shard's nodes (SPUBLISH).
    pub fn publish(&mut self, channel: &[u8], message: &[u8], shard: bool) -> Vec<Action> {
        let mut out = Vec::new();
        let msg = Message {
            header: self.header(if shard {
                kind::PUBLISHSHARD
            } else {
                kind::PUBLISH
            }),
            body: Body::Publish {
                channel: channel.to_vec(),
                message: message.to_vec(),
            },
        };
        if shard {
            let Some(m) = self.shard_master(self.myself) else {
                return out;
            };
            let mut members = self.replicas_of(m);
            members.push(m);
            for i in members {
                if i == self.myself {
                    continue;
                }
                if let Some(l) = self.node(i).and_then(|n| n.link) {
                    self.send(l, &msg, &mut out);
                }
            }
        } else {
            self.broadcast(&msg, &mut out);
        }
        out
    }

    // ---- operations behind CLUSTER subcommands ---------------------------------------

    pub(crate) fn forget(&mut self, idx: NodeIdx, now: u64, out: &mut Vec<Action>) {
        if let Some(n) = self.node(idx) {
            self.banned.insert(n.id, now + 60_000);
        }
        self.del_node(idx, out);
    }

    /// CLUSTER BUMPEPOCH: true when the epoch moved.
    pub fn bump_epoch(&mut self) -> bool {
        let max = self
            .nodes()
            .map(|(_, n)| n.config_epoch)
            .max()
            .unwrap_or(0)
            .max(self.current_epoch);
        let mine = self.myself().config_epoch;
        if mine == 0 || mine != max {
            self.current_epoch += 1;
            let e = self.current_epoch;
            self.myself_mut().config_epoch = e;
            self.changed();
            true
        } else {
            false
        }
    }

    pub(crate) fn set_config_epoch(&mut self, epoch: u64) {
        self.myself_mut().config_epoch = epoch;
        if self.current_epoch < epoch {
            self.current_epoch = epoch;
        }
        self.changed();
    }

    /// CLUSTER RESET: forget every other node; HARD also takes a new id and zeroes epochs.
    pub(crate) fn reset(&mut self, hard: bool, out: &mut Vec<Action>) {
        let me = self.myself;
        if self.myself().is_replica() {
            let m = self.myself_mut();
            m.flags = (m.flags & !flag::SLAVE) | flag::MASTER;
            m.master = None;
            out.push(Action::BecomeMaster);
        }
        for s in 0..SLOT_COUNT as Slot {
            self.slots.set_migrating(s, None);
            self.slots.set_importing(s, None);
        }
        self.clear_node_slots(me);
        let others: Vec<NodeIdx> = self.nodes().map(|(i, _)| i).filter(|&i| i != me).collect();
        for i in others {
            self.del_node(i, out);
        }
        if hard {
            self.current_epoch = 0;
            self.last_vote_epoch = 0;
            let new_id = self.rng.node_id();
            let old = self.myself().id;
            self.by_id.remove(&old);
            self.by_id.insert(new_id, me);
            let m = self.myself_mut();
            m.id = new_id;
            m.config_epoch = 0;
            out.push(Action::Log(
                Level::Notice,
                format!("Node hard reset, now I'm {}", codec::node_id_str(&new_id)),
            ));
        }
        self.changed();
        self.update_state();
    }

    pub(crate) fn set_slot_owner(&mut self, slot: Slot, idx: NodeIdx) {
        self.unassign_slot(slot);
        self.assign_slot(slot, idx);
        self.changed();
    }

    pub(crate) fn del_slot(&mut self, slot: Slot) {
        self.unassign_slot(slot);
        self.slots.set_migrating(slot, None);
        self.slots.set_importing(slot, None);
        self.changed();
    }

    pub(crate) fn mark_slot(
        &mut self,
        slot: Slot,
        migrating: Option<Option<NodeIdx>>,
        importing: Option<Option<NodeIdx>>,
    ) {
        if let Some(m) = migrating {
            self.slots.set_migrating(slot, m);
        }
        if let Some(i) = importing {
            self.slots.set_importing(slot, i);
        }
        self.changed();
    }

    /// Runs the save and state update a command's change needs, returning its actions.
    pub fn after_command(&mut self, out: &mut Vec<Action>) {
        self.finish(out);
    }

    pub(crate) fn link_info(&self) -> Vec<(LinkId, bool, Option<NodeIdx>, u64, u64)> {
        let mut v: Vec<_> = self
            .links
            .iter()
            .map(|(id, l)| (*id, l.inbound, l.node, l.ctime, l.send_bytes))
            .collect();
        v.sort();
        v
    }

    pub(crate) fn link_connected_state(&self, link: Option<LinkId>) -> bool {
        link.and_then(|l| self.links.get(&l))
            .is_some_and(|l| l.connected)
    }

    fn sync_myself_address(&mut self) {
        let (port, cport, pport, host) = (
            self.config.port,
            self.config.cport,
            self.config.pport,
            self.config.announce_hostname.clone(),
        );
        let ip = self.config.announce_ip.clone();
        let nofailover = self.config.replica_no_failover;
        let m = self.myself_mut();
        m.port = port;
        m.cport = cport;
        m.pport = pport;
        // Peers see `cluster-replica-no-failover` as this flag in our messages.
        if nofailover {
            m.flags |= flag::NOFAILOVER;
        } else {
            m.flags &= !flag::NOFAILOVER;
        }
        m.hostname = host;
        if !ip.is_empty() {
            m.ip = ip;
        }
    }

    /// After CONFIG SET of a `cluster-announce-*` setting.
    pub fn reconfigure(&mut self, config: Config) {
        self.config = config;
        self.sync_myself_address();
        self.changed();
    }
}

fn parse_slot(s: &str) -> Option<Slot> {
    let v: u32 = s.parse().ok()?;
    if (v as usize) < SLOT_COUNT {
        Some(v as Slot)
    } else {
        None
    }
}

/// `ip:port@cport[,hostname]` (also the pre-7 `ip:port` with cport = port + 10000).
pub fn parse_address(s: &str) -> Option<(String, u16, u16, String)> {
    let (addr, hostname) = match s.split_once(',') {
        Some((a, h)) => (a, h.to_string()),
        None => (s, String::new()),
    };
    let (hostport, cport) = match addr.split_once('@') {
        Some((hp, c)) => (hp, Some(c.parse::<u16>().ok()?)),
        None => (addr, None),
    };
    let (ip, port) = hostport.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let cport = cport.unwrap_or_else(|| port.wrapping_add(10000));
    Some((ip.to_string(), port, cport, hostname))
}
