//! Replica election and manual failover: a replica of a failed master asks the masters
//! for their votes (FAILOVER_AUTH_REQUEST), each master gives at most one per epoch
//! (FAILOVER_AUTH_ACK), and the replica that gathers a majority takes its master's slots
//! with a new configEpoch. CLUSTER FAILOVER runs the same election without the failure,
//! after the master paused its writers and the replica caught up (default), without
//! waiting for the master (FORCE), or without a vote (TAKEOVER).

use carmine_slots::{Slot, SLOT_COUNT};

use crate::cluster::{Action, Cluster, Level};
use crate::codec::{self, flag, kind, mflag, Body, Header, Message};
use crate::node::NodeIdx;

/// How long a manual failover may take before it is abandoned (Redis' CLUSTER_MF_TIMEOUT).
pub const MANUAL_FAILOVER_TIMEOUT: u64 = 5000;

/// An election starts this long (ms) after the replica sees its master FAIL, plus up to
/// [`ELECTION_JITTER`] at random: long enough for the FAIL broadcast to reach every
/// master and the shard's replicas to exchange offsets on one network.
const ELECTION_DELAY: u64 = 100;
const ELECTION_JITTER: u64 = 100;
/// Extra wait per replica ranked ahead: time for the better one to win first.
const RANK_DELAY: u64 = 500;

#[derive(Clone, Debug, Default)]
pub struct FailoverState {
    /// When this replica may ask for votes (0: no election scheduled).
    pub auth_time: u64,
    pub auth_count: usize,
    pub auth_sent: bool,
    pub auth_rank: usize,
    pub auth_epoch: u64,
    /// Why the replica cannot fail over now, logged once per reason.
    pub cant_reason: Option<&'static str>,
    /// Manual failover in progress until this time (0: none).
    pub mf_end: u64,
    /// Replica side: the master's offset when it paused, which we must reach.
    pub mf_master_offset: Option<u64>,
    /// Replica side: caught up (or FORCE): the election may start.
    pub mf_can_start: bool,
    /// Master side: the replica that asked (MFSTART).
    pub mf_replica: Option<NodeIdx>,
    /// When the replication link to our master went down (0: up).
    pub link_down_since: u64,
    pub repl_ping_period: u64,
    pub validity_factor: u64,
}

impl Cluster {
    /// The server tells the machine about its link to its master: what a replica's data
    /// age (and so its right to be elected) is measured from.
    pub fn set_master_link(&mut self, up: bool, now: u64) {
        if up {
            self.failover.link_down_since = 0;
        } else if self.failover.link_down_since == 0 {
            self.failover.link_down_since = now;
        }
    }

    /// `cluster-replica-validity-factor` and `repl-ping-replica-period` (seconds).
    pub fn set_failover_settings(&mut self, validity_factor: u64, repl_ping_period: u64) {
        self.failover.validity_factor = validity_factor;
        self.failover.repl_ping_period = repl_ping_period;
    }

    /// Replicas of my master ahead of me: a better replication offset, or the same one
    /// and a smaller node id. Redis ranks by offset alone, so replicas with equal
    /// offsets (the usual case after a clean stop of writes) share a rank, start their
    /// elections within the same random window and may split the votes, which costs a
    /// retry of four node timeouts. With ties broken by id, ranks are distinct wherever
    /// the replicas agree on the offsets, which they exchange before the election.
    fn my_rank(&self) -> usize {
        let me = self.myself();
        let Some(m) = me.master else { return 0 };
        let mine = (me.repl_offset, std::cmp::Reverse(me.id));
        self.replicas_of(m)
            .into_iter()
            .filter(|&r| r != self.myself)
            .filter_map(|r| self.node(r))
            .filter(|r| !r.has(flag::NOFAILOVER) && (r.repl_offset, std::cmp::Reverse(r.id)) > mine)
            .count()
    }

    fn cant_failover(&mut self, reason: &'static str, out: &mut Vec<Action>) {
        if self.failover.cant_reason != Some(reason) {
            self.failover.cant_reason = Some(reason);
            out.push(Action::Log(
                Level::Notice,
                format!("Currently unable to failover: {reason}"),
            ));
        }
    }

    /// Replica migration: a master left with slots and no working replica gets one from
    /// the shard with the most, once it has been orphaned for 5 s (Redis' rules: the
    /// donor keeps more than `cluster-migration-barrier` working replicas, and of them
    /// the one with the smallest id moves).
    fn replica_migration_tick(&mut self, now: u64, out: &mut Vec<Action>) {
        let ok_replicas = |c: &Cluster, m: NodeIdx| {
            c.replicas_of(m)
                .into_iter()
                .filter(|&r| c.node(r).is_some_and(|n| !n.failing()))
                .collect::<Vec<_>>()
        };
        // Every master's working replicas counted in one pass: asking each master for
        // its replicas walked every node per master, n^2 per tick, most of a 1,000-node
        // simulation's time.
        let mut ok_counts = vec![0usize; self.nodes.len()];
        for (_, n) in self.nodes() {
            if n.is_replica() && !n.failing() {
                if let Some(count) = n.master.and_then(|m| ok_counts.get_mut(m as usize)) {
                    *count += 1;
                }
            }
        }
        let masters: Vec<NodeIdx> = self
            .nodes()
            .filter(|(_, n)| n.is_master() && n.num_slots > 0)
            .map(|(i, _)| i)
            .collect();
        let mut orphan = None;
        let mut max_replicas = 0;
        for &m in &masters {
            let ok = ok_counts.get(m as usize).copied().unwrap_or(0);
            max_replicas = max_replicas.max(ok);
            let Some(n) = self.node_mut(m) else { continue };
            if ok == 0 && n.has(flag::MIGRATE_TO) && !n.failing() {
                if n.orphaned_since == 0 {
                    n.orphaned_since = now;
                }
                if now.saturating_sub(n.orphaned_since) > 5000 {
                    orphan = Some(m);
                }
            } else {
                n.orphaned_since = 0;
            }
        }
        let me = self.myself();
        if !me.is_replica() || !self.config.allow_replica_migration {
            return;
        }
        let (Some(target), Some(mine)) = (orphan, me.master) else {
            return;
        };
        if self.node(mine).is_none_or(|m| m.failing()) {
            return;
        }
        let siblings = ok_replicas(self, mine);
        if siblings.len() < max_replicas.max(2) || siblings.len() <= self.config.migration_barrier {
            return;
        }
        let candidate = siblings
            .iter()
            .filter_map(|&r| self.node(r))
            .map(|n| n.id)
            .min();
        if candidate != Some(self.my_id()) {
            return;
        }
        let id = self
            .node(target)
            .map(|n| n.id_str().to_string())
            .unwrap_or_default();
        out.push(Action::Log(
            Level::Notice,
            format!("Migrating to orphaned master {id}"),
        ));
        self.set_my_master(target, out);
    }

    /// Called from the timer on a replica.
    pub(crate) fn failover_tick(&mut self, now: u64, out: &mut Vec<Action>) {
        self.manual_failover_tick(now, out);
        self.replica_migration_tick(now, out);
        let me = self.myself();
        if !me.is_replica() {
            return;
        }
        let Some(master) = me.master else { return };
        let manual = self.failover.mf_end != 0 && self.failover.mf_can_start;
        let Some(m) = self.node(master) else { return };
        if !m.has(flag::FAIL) && !manual {
            self.failover.cant_reason = None;
            return;
        }
        if m.num_slots == 0 {
            return;
        }
        if self.config.replica_no_failover && !manual {
            return self.cant_failover(
                "Disconnected from master for too long or no failover allowed by configuration.",
                out,
            );
        }
        let timeout = self.config.node_timeout;
        let auth_timeout = (timeout * 2).max(2000);
        let retry = auth_timeout * 2;
        // How stale our data is, past the node timeout that was spent detecting the failure.
        let mut data_age = if self.failover.link_down_since != 0 {
            now.saturating_sub(self.failover.link_down_since)
        } else {
            now.saturating_sub(m.data_received)
        };
        data_age = data_age.saturating_sub(timeout);
        let limit = timeout * self.failover.validity_factor + self.failover.repl_ping_period * 1000;
        if self.failover.validity_factor > 0 && data_age > limit && !manual {
            return self.cant_failover("Disconnected from master for too long.", out);
        }
        if self.failover.auth_time == 0 || now.saturating_sub(self.failover.auth_time) > retry {
            // Schedule an election: a short delay for the replicas of this master to
            // exchange offsets (the PONG below) and for the FAIL to reach the masters,
            // then half a second per replica ranked ahead of us. Redis waits 500 ms plus
            // up to 500 ms at random plus a second per rank. The delays only order the
            // candidates; safety (one winner per epoch, one vote per master per epoch)
            // comes from the votes, and the simulation checks it with these delays.
            let rank = self.my_rank();
            let delay = ELECTION_DELAY + self.rng.below(ELECTION_JITTER as usize) as u64;
            self.failover.auth_time = now + delay + rank as u64 * RANK_DELAY;
            self.failover.auth_count = 0;
            self.failover.auth_sent = false;
            self.failover.auth_rank = rank;
            if manual {
                self.failover.auth_time = now;
                self.failover.auth_rank = 0;
            }
            out.push(Action::Log(
                Level::Notice,
                format!(
                    "Start of election delayed for {} milliseconds (rank #{}, offset {}).",
                    self.failover.auth_time - now,
                    self.failover.auth_rank,
                    self.myself().repl_offset
                ),
            ));
            self.broadcast_pong_to_shard(out);
            return;
        }
        if !self.failover.auth_sent && !manual {
            let rank = self.my_rank();
            if rank > self.failover.auth_rank {
                let added = (rank - self.failover.auth_rank) as u64 * RANK_DELAY;
                self.failover.auth_time += added;
                self.failover.auth_rank = rank;
            }
        }
        if now < self.failover.auth_time {
            return;
        }
        if now - self.failover.auth_time > auth_timeout {
            return;
        }
        if !self.failover.auth_sent {
            self.current_epoch += 1;
            self.failover.auth_epoch = self.current_epoch;
            out.push(Action::Log(
                Level::Notice,
                format!(
                    "Starting a failover election for epoch {}.",
                    self.current_epoch
                ),
            ));
            let mut header = self.header(kind::FAILOVER_AUTH_REQUEST);
            if manual {
                header.mflags[0] |= mflag::FORCEACK;
            }
            let msg = Message {
                header,
                body: Body::Empty,
            };
            self.broadcast(&msg, out);
            self.failover.auth_sent = true;
            self.changed();
            return;
        }
        let needed = self.cluster_size() / 2 + 1;
        if self.failover.auth_count >= needed {
            out.push(Action::Log(
                Level::Notice,
                "Failover election won: I'm the new master.".into(),
            ));
            let epoch = self.failover.auth_epoch;
            if self.myself().config_epoch < epoch {
                self.myself_mut().config_epoch = epoch;
                out.push(Action::Log(
                    Level::Notice,
                    format!("configEpoch set to {epoch} after successful failover"),
                ));
            }
            self.replace_my_master(now, out);
            self.reset_manual_failover(out);
        }
    }

    /// Takes over the slots of the master we replicate and tells everyone.
    pub(crate) fn replace_my_master(&mut self, now: u64, out: &mut Vec<Action>) {
        let me = self.myself;
        let Some(old) = self.myself().master else {
            return;
        };
        if !self.myself().is_replica() {
            return;
        }
        let m = self.myself_mut();
        m.flags = (m.flags & !flag::SLAVE) | flag::MASTER;
        m.master = None;
        out.push(Action::BecomeMaster);
        for s in 0..SLOT_COUNT as Slot {
            if self.slots.owner(s) == Some(&old) {
                self.unassign_slot(s);
                self.assign_slot(s, me);
            }
        }
        self.changed();
        self.update_state();
        self.broadcast_pong(now, out);
    }

    /// A PONG to the other replicas of my master, so they learn my offset for ranking.
    fn broadcast_pong_to_shard(&mut self, out: &mut Vec<Action>) {
        let Some(m) = self.myself().master else {
            return;
        };
        let links: Vec<_> = self
            .replicas_of(m)
            .into_iter()
            .filter(|&r| r != self.myself)
            .filter_map(|r| self.node(r).and_then(|n| n.link))
            .collect();
        for l in links {
            let msg = self.bare_ping(kind::PONG, 0);
            self.send(l, &msg, out);
        }
    }

    /// A PING or PONG without gossip: what a failover step says to one shard.
    fn bare_ping(&self, kind: u16, mflags0: u8) -> Message {
        let mut header = self.header(kind);
        header.mflags[0] |= mflags0;
        Message {
            header,
            body: Body::Ping {
                gossip: Vec::new(),
                extensions: Vec::new(),
            },
        }
    }

    /// A master's answer to a replica asking for its vote.
    pub(crate) fn vote_if_needed(
        &mut self,
        now: u64,
        sender: NodeIdx,
        h: &Header,
        out: &mut Vec<Action>,
    ) {
        let me = self.myself();
        if me.is_replica() || me.num_slots == 0 {
            return;
        }
        if h.current_epoch < self.current_epoch {
            return;
        }
        if self.last_vote_epoch == self.current_epoch {
            return;
        }
        let Some(node) = self.node(sender) else {
            return;
        };
        let id = node.id_str().to_string();
        let Some(master) = node.master.filter(|_| node.is_replica()) else {
            return;
        };
        let Some(m) = self.node(master) else { return };
        let force = h.mflags[0] & mflag::FORCEACK != 0;
        if !m.has(flag::FAIL) && !force {
            return;
        }
        if now.saturating_sub(m.voted_time) < self.config.node_timeout * 2 && m.voted_time != 0 {
            out.push(Action::Log(
                Level::Warning,
                format!("Failover auth denied to {id}: can't vote about this master before {} milliseconds", self.config.node_timeout * 2 - now.saturating_sub(m.voted_time)),
            ));
            return;
        }
        // The claim must be at least as new as what we know of every slot it asks for.
        for s in 0..SLOT_COUNT as Slot {
            if !codec::slot_bit(&h.slots, s) {
                continue;
            }
            let Some(&owner) = self.slots.owner(s) else {
                continue;
            };
            if self
                .node(owner)
                .is_some_and(|o| o.config_epoch > h.config_epoch)
            {
                out.push(Action::Log(
                    Level::Warning,
                    format!(
                        "Failover auth denied to {id}: slot {s} epoch is newer than the request's"
                    ),
                ));
                return;
            }
        }
        self.last_vote_epoch = self.current_epoch;
        if let Some(m) = self.node_mut(master) {
            m.voted_time = now;
        }
        self.changed();
        let msg = Message {
            header: self.header(kind::FAILOVER_AUTH_ACK),
            body: Body::Empty,
        };
        if let Some(l) = self.node(sender).and_then(|n| n.link) {
            self.send(l, &msg, out);
        }
        out.push(Action::Log(
            Level::Notice,
            format!(
                "Failover auth granted to {id} for epoch {}",
                self.current_epoch
            ),
        ));
    }

    pub(crate) fn count_vote(&mut self, sender: NodeIdx, epoch: u64) {
        let Some(n) = self.node(sender) else { return };
        if n.is_master() && n.num_slots > 0 && epoch >= self.failover.auth_epoch {
            self.failover.auth_count += 1;
        }
    }

    // ---- manual failover --------------------------------------------------------------

    /// CLUSTER FAILOVER [FORCE|TAKEOVER] on a replica.
    pub(crate) fn start_manual_failover(
        &mut self,
        now: u64,
        mode: Option<&str>,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        let me = self.myself();
        if !me.is_replica() {
            return Err("ERR You should send CLUSTER FAILOVER to a replica".into());
        }
        let Some(master) = me.master.filter(|m| self.node(*m).is_some()) else {
            return Err("ERR I'm a replica but my master is unknown to me".into());
        };
        let master_down = self.node(master).is_none_or(|m| m.failing());
        if mode.is_none() && master_down {
            return Err("ERR Master is down or failed, please use CLUSTER FAILOVER FORCE".into());
        }
        self.reset_manual_failover(out);
        self.failover.mf_end = now + MANUAL_FAILOVER_TIMEOUT;
        match mode {
            Some("takeover") => {
                // No vote: a new epoch of our own, as Redis' TAKEOVER does.
                out.push(Action::Log(
                    Level::Notice,
                    "Taking over the master (user request).".into(),
                ));
                self.bump_epoch();
                self.replace_my_master(now, out);
                self.reset_manual_failover(out);
            }
            Some("force") => {
                out.push(Action::Log(
                    Level::Notice,
                    "Forced failover user request accepted.".into(),
                ));
                self.failover.mf_can_start = true;
                self.failover.auth_time = 0;
            }
            _ => {
                out.push(Action::Log(
                    Level::Notice,
                    "Manual failover user request accepted.".into(),
                ));
                let msg = Message {
                    header: self.header(kind::MFSTART),
                    body: Body::Empty,
                };
                if let Some(l) = self.node(master).and_then(|n| n.link) {
                    self.send(l, &msg, out);
                }
                self.failover.auth_time = 0;
            }
        }
        Ok(())
    }

    /// Master side: a replica of ours asked to take over; stop writers and tell it our
    /// offset in a PING flagged PAUSED.
    pub(crate) fn manual_failover_requested(
        &mut self,
        now: u64,
        sender: NodeIdx,
        out: &mut Vec<Action>,
    ) {
        let me = self.myself;
        let Some(n) = self.node(sender) else { return };
        if n.master != Some(me) || !n.is_replica() {
            return;
        }
        let id = n.id_str().to_string();
        self.reset_manual_failover(out);
        self.failover.mf_end = now + MANUAL_FAILOVER_TIMEOUT;
        self.failover.mf_replica = Some(sender);
        out.push(Action::PauseWrites(MANUAL_FAILOVER_TIMEOUT * 2));
        out.push(Action::Log(
            Level::Notice,
            format!("Manual failover requested by replica {id}."),
        ));
        self.send_paused_ping(out);
    }

    fn send_paused_ping(&mut self, out: &mut Vec<Action>) {
        let Some(r) = self.failover.mf_replica else {
            return;
        };
        let Some(l) = self.node(r).and_then(|n| n.link) else {
            return;
        };
        let msg = self.bare_ping(kind::PING, mflag::PAUSED);
        self.send(l, &msg, out);
    }

    /// Replica side: a PING/PONG from our master with PAUSED carries the offset to reach.
    pub(crate) fn note_master_paused(
        &mut self,
        sender: NodeIdx,
        h: &Header,
        out: &mut Vec<Action>,
    ) {
        if self.failover.mf_end == 0 || self.myself().master != Some(sender) {
            return;
        }
        if h.mflags[0] & mflag::PAUSED != 0 && self.failover.mf_master_offset.is_none() {
            self.failover.mf_master_offset = Some(h.offset);
            out.push(Action::Log(
                Level::Notice,
                format!(
                    "Received replication offset for paused master manual failover: {}",
                    h.offset
                ),
            ));
        }
    }

    fn manual_failover_tick(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.failover.mf_end == 0 {
            return;
        }
        if now > self.failover.mf_end {
            out.push(Action::Log(
                Level::Warning,
                "Manual failover timed out.".into(),
            ));
            self.reset_manual_failover(out);
            return;
        }
        if self.myself().is_master() {
            // Keep reminding the replica of our offset while we wait for it.
            if self.failover.mf_replica.is_some() {
                self.send_paused_ping(out);
            }
            return;
        }
        if self.failover.mf_can_start {
            return;
        }
        if let Some(target) = self.failover.mf_master_offset {
            if self.myself().repl_offset >= target {
                self.failover.mf_can_start = true;
                out.push(Action::Log(
                    Level::Notice,
                    "All master replication stream processed, manual failover can start.".into(),
                ));
            }
        }
    }

    pub(crate) fn reset_manual_failover(&mut self, out: &mut Vec<Action>) {
        if self.failover.mf_replica.is_some() {
            out.push(Action::UnpauseWrites);
        }
        self.failover.mf_end = 0;
        self.failover.mf_can_start = false;
        self.failover.mf_master_offset = None;
        self.failover.mf_replica = None;
    }

    /// The header flag a master in a manual failover sets on its messages.
    pub(crate) fn paused(&self) -> bool {
        self.failover.mf_end != 0 && self.failover.mf_replica.is_some() && self.myself().is_master()
    }
}
