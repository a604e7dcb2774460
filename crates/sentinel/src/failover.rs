//! Down detection, leader election by epoch and the failover state machine.

use crate::instance::{FailoverState, ReplyFor};
use crate::instance::{
    Kind, FAILOVER_IN_PROGRESS, FORCE_FAILOVER, MASTER_DOWN, MASTER_REBOOT, O_DOWN, PROMOTED,
    RECONF_DONE, RECONF_INPROG, RECONF_SENT, SCRIPT_KILL_SENT, S_DOWN,
};
use crate::SIMFAILURE_CRASH_AFTER_ELECTION;
use crate::{describe, send, split, Action, Addr, Level, Reply, Sentinel, Which};

impl Sentinel {
    /// SDOWN: no valid PING reply for `down-after-milliseconds` (or a master that says
    /// it is a replica for long enough, or a rebooted master past its grace period).
    pub(crate) fn check_sdown(&mut self, mi: usize, which: Which) {
        let ah = self.core.announce_hostnames;
        let now = self.core.now;
        let periods = self.core.periods.clone();
        let m = &mut self.masters[mi];
        let script = m.cfg.notification_script.clone();
        let reboot_after = m.cfg.master_reboot_down_after;
        let (minst, inst) = match which {
            Which::Master => (None, &mut m.inst),
            Which::Replica(i) => (Some(&m.inst), &mut m.replicas[i]),
            Which::Sentinel(i) => (Some(&m.inst), &mut m.sentinels[i]),
        };
        let link = &inst.link;
        let elapsed = if link.act_ping_time != 0 {
            now - link.act_ping_time
        } else if link.disconnected {
            now - link.last_avail_time
        } else {
            0
        };
        // A connection that looks up but answers nothing is reopened.
        if link.cc.is_some()
            && now - link.cc_conn_time > periods.min_link_reconnect
            && link.act_ping_time != 0
            && now - link.act_ping_time > inst.down_after / 2
            && now - link.last_pong_time > inst.down_after / 2
        {
            crate::close_link(&mut self.core.out, &mut inst.link, Some(false));
        }
        if inst.link.pc.is_some()
            && now - inst.link.pc_conn_time > periods.min_link_reconnect
            && now - inst.link.pc_last_activity > periods.publish * 3
        {
            crate::close_link(&mut self.core.out, &mut inst.link, Some(true));
        }
        let is_master = inst.kind == Kind::Master;
        let down = elapsed > inst.down_after
            || (is_master
                && inst.role_reported == Kind::Replica
                && now - inst.role_reported_time > inst.down_after + periods.info * 2)
            || (inst.has(MASTER_REBOOT) && now - inst.master_reboot_since > reboot_after);
        if down {
            if !inst.has(S_DOWN) {
                inst.s_down_since = now;
                inst.flags |= S_DOWN;
                let desc = describe(ah, inst, minst);
                self.core
                    .event(Level::Warning, "+sdown", desc, script.as_deref());
            }
        } else if inst.has(S_DOWN) {
            inst.flags &= !(S_DOWN | SCRIPT_KILL_SENT);
            let desc = describe(ah, inst, minst);
            self.core
                .event(Level::Warning, "-sdown", desc, script.as_deref());
        }
    }

    /// ODOWN: we see the master SDOWN and at least `quorum` sentinels (us included)
    /// said so recently.
    pub(crate) fn check_odown(&mut self, mi: usize) {
        let ah = self.core.announce_hostnames;
        let now = self.core.now;
        let m = &mut self.masters[mi];
        let mut votes = 0u32;
        let mut odown = false;
        if m.inst.has(S_DOWN) {
            votes = 1 + m.sentinels.iter().filter(|s| s.has(MASTER_DOWN)).count() as u32;
            odown = votes >= m.cfg.quorum;
        }
        let script = m.cfg.notification_script.clone();
        if odown {
            if !m.inst.has(O_DOWN) {
                m.inst.flags |= O_DOWN;
                m.inst.o_down_since = now;
                let msg = format!(
                    "{} #quorum {}/{}",
                    describe(ah, &m.inst, None),
                    votes,
                    m.cfg.quorum
                );
                self.core
                    .event(Level::Warning, "+odown", msg, script.as_deref());
            }
        } else if m.inst.has(O_DOWN) {
            m.inst.flags &= !O_DOWN;
            let desc = describe(ah, &m.inst, None);
            self.core
                .event(Level::Warning, "-odown", desc, script.as_deref());
        }
    }

    /// A fellow sentinel's answer to IS-MASTER-DOWN-BY-ADDR: its view, and its vote.
    pub(crate) fn on_is_master_down_reply(&mut self, mi: usize, which: Which, reply: &Reply) {
        let now = self.core.now;
        let Which::Sentinel(si) = which else {
            return;
        };
        let ok = match reply {
            Reply::Array(items) => match items.as_slice() {
                [Reply::Int(down), Reply::Bulk(leader), Reply::Int(epoch)] => {
                    Some((*down, String::from_utf8_lossy(leader).into_owned(), *epoch))
                }
                _ => None,
            },
            _ => None,
        };
        let Some((down, leader, epoch)) = ok else {
            self.core.ignored_messages += 1;
            return;
        };
        let s = &mut self.masters[mi].sentinels[si];
        s.last_master_down_reply_time = now;
        if down == 1 {
            s.flags |= MASTER_DOWN;
        } else {
            s.flags &= !MASTER_DOWN;
        }
        if leader != "*" {
            s.leader = Some(leader);
            s.leader_epoch = u64::try_from(epoch).unwrap_or(0);
        }
    }

    /// While we see the master SDOWN, ask the other sentinels about it once an ask
    /// period (at once when `forced`); during a failover the question asks for a vote.
    pub(crate) fn ask_other_sentinels(&mut self, mi: usize, forced: bool) {
        let now = self.core.now;
        let ask = self.core.periods.ask;
        let epoch = self.core.current_epoch;
        let m = &mut self.masters[mi];
        let runid = if m.failover_state > FailoverState::None {
            self.core.myid.clone()
        } else {
            "*".to_string()
        };
        let master_sdown = m.inst.has(S_DOWN);
        let master_sdown_since = m.inst.s_down_since;
        let (host, port) = (m.inst.addr.host.clone(), m.inst.addr.port);
        for s in &mut m.sentinels {
            if now - s.last_master_down_reply_time > ask * 5 {
                s.flags &= !MASTER_DOWN;
                s.leader = None;
            }
            if !master_sdown || s.link.disconnected {
                continue;
            }
            // The tick that sees the master go down asks at once, not up to an ask
            // period later: the quorum (ODOWN) is reached that much sooner.
            let just_down = master_sdown_since == now;
            if !forced && !just_down && now - s.last_master_down_reply_time < ask {
                continue;
            }
            let argv = vec![
                m.cfg.map_command("SENTINEL"),
                "is-master-down-by-addr".into(),
                host.clone(),
                port.to_string(),
                epoch.to_string(),
                runid.clone(),
            ];
            send(
                &mut self.core.out,
                &mut s.link,
                false,
                ReplyFor::IsMasterDown,
                argv,
            );
        }
    }

    /// Votes for `req_runid` as the failover leader in `req_epoch` unless we already
    /// voted in that epoch or a later one; returns our vote and its epoch.
    pub(crate) fn vote_leader(
        &mut self,
        mi: usize,
        req_epoch: u64,
        req_runid: &str,
    ) -> (Option<String>, u64) {
        let now = self.core.now;
        let script = self.masters[mi].cfg.notification_script.clone();
        if req_epoch > self.core.current_epoch {
            self.core.current_epoch = req_epoch;
            self.core.flush_config();
            self.core.event(
                Level::Warning,
                "+new-epoch",
                req_epoch.to_string(),
                script.as_deref(),
            );
        }
        let current = self.core.current_epoch;
        let m = &mut self.masters[mi];
        if m.inst.leader_epoch < req_epoch && current <= req_epoch {
            m.inst.leader = Some(req_runid.to_string());
            m.inst.leader_epoch = current;
            self.core.flush_config();
            let msg = format!("{req_runid} {current}");
            self.core
                .event(Level::Warning, "+vote-for-leader", msg, script.as_deref());
            if !req_runid.eq_ignore_ascii_case(&self.core.myid) {
                let d = self.core.desync();
                self.masters[mi].failover_start_time = now + d;
            }
        }
        let m = &self.masters[mi];
        (m.inst.leader.clone(), m.inst.leader_epoch)
    }

    /// The leader of `epoch`: the sentinel with an absolute majority of the known
    /// sentinels' votes and at least `quorum` of them, counting our own vote (cast for
    /// the front-runner, or for ourselves when nobody has votes).
    pub(crate) fn get_leader(&mut self, mi: usize, epoch: u64) -> Option<String> {
        let current = self.core.current_epoch;
        let m = &self.masters[mi];
        let voters = m.sentinels.len() as u64 + 1;
        let mut counts: Vec<(String, u64)> = Vec::new();
        for s in &m.sentinels {
            if let Some(l) = &s.leader {
                if s.leader_epoch == current {
                    match counts.iter_mut().find(|(r, _)| r == l) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((l.clone(), 1)),
                    }
                }
            }
        }
        let mut winner: Option<String> = None;
        let mut max_votes = 0;
        for (r, n) in &counts {
            if *n > max_votes {
                max_votes = *n;
                winner = Some(r.clone());
            }
        }
        let candidate = winner.clone().unwrap_or_else(|| self.core.myid.clone());
        let (my_vote, vote_epoch) = self.vote_leader(mi, epoch, &candidate);
        if let Some(v) = my_vote.filter(|_| vote_epoch == epoch) {
            let n = match counts.iter_mut().find(|(r, _)| *r == v) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    counts.push((v.clone(), 1));
                    1
                }
            };
            if n > max_votes {
                max_votes = n;
                winner = Some(v);
            }
        }
        let quorum = u64::from(self.masters[mi].cfg.quorum);
        winner.filter(|_| max_votes > voters / 2 && max_votes >= quorum)
    }

    /// MULTI; SLAVEOF host port (or NO ONE); CONFIG REWRITE; CLIENT KILL TYPE normal
    /// and pubsub; EXEC. Replies are ignored: INFO shows what happened.
    pub(crate) fn send_slaveof(&mut self, mi: usize, which: Which, to: Option<&Addr>) -> bool {
        let (cfg, inst) = split(&mut self.masters[mi], which);
        if inst.link.cc.is_none() {
            return false;
        }
        let (host, port) = match to {
            Some(a) => (a.host.clone(), a.port.to_string()),
            None => ("NO".to_string(), "ONE".to_string()),
        };
        let cmds: Vec<Vec<String>> = vec![
            vec![cfg.map_command("MULTI")],
            vec![cfg.map_command("SLAVEOF"), host, port],
            vec![cfg.map_command("CONFIG"), "REWRITE".into()],
            vec![
                cfg.map_command("CLIENT"),
                "KILL".into(),
                "TYPE".into(),
                "normal".into(),
            ],
            vec![
                cfg.map_command("CLIENT"),
                "KILL".into(),
                "TYPE".into(),
                "pubsub".into(),
            ],
            vec![cfg.map_command("EXEC")],
        ];
        for argv in cmds {
            send(
                &mut self.core.out,
                &mut inst.link,
                false,
                ReplyFor::Discard,
                argv,
            );
        }
        // Read the outcome at once rather than at the next INFO period.
        send(
            &mut self.core.out,
            &mut inst.link,
            false,
            ReplyFor::Info,
            vec![cfg.map_command("INFO")],
        );
        true
    }

    pub(crate) fn start_failover(&mut self, mi: usize) {
        let ah = self.core.announce_hostnames;
        let now = self.core.now;
        self.core.current_epoch += 1;
        let epoch = self.core.current_epoch;
        let d = self.core.desync();
        let m = &mut self.masters[mi];
        m.failover_state = FailoverState::WaitStart;
        m.inst.flags |= FAILOVER_IN_PROGRESS;
        m.failover_epoch = epoch;
        m.failover_start_time = now + d;
        m.failover_state_change_time = now;
        let script = m.cfg.notification_script.clone();
        let desc = describe(ah, &m.inst, None);
        self.core.event(
            Level::Warning,
            "+new-epoch",
            epoch.to_string(),
            script.as_deref(),
        );
        self.core
            .event(Level::Warning, "+try-failover", desc, script.as_deref());
    }

    pub(crate) fn start_failover_if_needed(&mut self, mi: usize) -> bool {
        let now = self.core.now;
        let m = &mut self.masters[mi];
        if !m.inst.has(O_DOWN) || m.inst.has(FAILOVER_IN_PROGRESS) {
            return false;
        }
        if now - m.failover_start_time < m.cfg.failover_timeout * 2 {
            if m.failover_delay_logged != m.failover_start_time {
                m.failover_delay_logged = m.failover_start_time;
                let at = m.failover_start_time + m.cfg.failover_timeout * 2;
                self.core.event(
                    Level::Debug,
                    "-failover-delay",
                    format!("Next failover delay: I will not start a failover before {at} ms"),
                    None,
                );
            }
            return false;
        }
        self.start_failover(mi);
        true
    }

    /// The replica to promote: reachable, fresh INFO, not too long disconnected from
    /// the master, priority not 0; then lowest priority, highest offset, smallest run id.
    pub(crate) fn select_replica(&self, mi: usize) -> Option<usize> {
        let now = self.core.now;
        let p = &self.core.periods;
        let m = &self.masters[mi];
        let mut max_down = m.inst.down_after * 10;
        if m.inst.has(S_DOWN) {
            max_down += now - m.inst.s_down_since;
        }
        let validity = if m.inst.has(S_DOWN) {
            p.ping * 5
        } else {
            p.info * 3
        };
        let mut best: Option<usize> = None;
        for (i, r) in m.replicas.iter().enumerate() {
            if r.flags & (S_DOWN | O_DOWN) != 0
                || r.link.disconnected
                || now - r.link.last_avail_time > p.ping * 5
                || r.slave_priority == 0
                || now - r.info_refresh > validity
                || r.master_link_down_time > max_down
            {
                continue;
            }
            best = match best {
                None => Some(i),
                Some(b) => {
                    let o = &m.replicas[b];
                    let better = (r.slave_priority, std::cmp::Reverse(r.slave_repl_offset))
                        .cmp(&(o.slave_priority, std::cmp::Reverse(o.slave_repl_offset)))
                        .then_with(|| match (&r.runid, &o.runid) {
                            (Some(a), Some(b)) => a.to_lowercase().cmp(&b.to_lowercase()),
                            (Some(_), None) => std::cmp::Ordering::Less,
                            (None, Some(_)) => std::cmp::Ordering::Greater,
                            (None, None) => std::cmp::Ordering::Equal,
                        });
                    Some(if better == std::cmp::Ordering::Less {
                        i
                    } else {
                        b
                    })
                }
            };
        }
        best
    }

    pub(crate) fn failover_state_machine(&mut self, mi: usize) {
        if !self.masters[mi].inst.has(FAILOVER_IN_PROGRESS) {
            return;
        }
        match self.masters[mi].failover_state {
            FailoverState::WaitStart => self.failover_wait_start(mi),
            FailoverState::SelectSlave => self.failover_select(mi),
            FailoverState::SendSlaveofNoOne => self.failover_send_noone(mi),
            FailoverState::WaitPromotion => {
                let m = &self.masters[mi];
                if self.core.now - m.failover_state_change_time > m.cfg.failover_timeout {
                    self.abort_with(mi, "-failover-abort-slave-timeout");
                }
            }
            FailoverState::ReconfSlaves => self.failover_reconf_next(mi),
            FailoverState::None | FailoverState::UpdateConfig => {}
        }
    }

    fn notify(&mut self, mi: usize, which: Which, channel: &str, level: Level) {
        let ah = self.core.announce_hostnames;
        let m = &self.masters[mi];
        let desc = describe(ah, self.inst(mi, which), Some(&m.inst));
        let script = m.cfg.notification_script.clone();
        self.core.event(level, channel, desc, script.as_deref());
    }

    fn abort_with(&mut self, mi: usize, channel: &str) {
        self.notify(mi, Which::Master, channel, Level::Warning);
        self.abort_failover(mi);
    }

    fn failover_wait_start(&mut self, mi: usize) {
        let epoch = self.masters[mi].failover_epoch;
        let leader = self.get_leader(mi, epoch);
        let is_leader = leader
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(&self.core.myid));
        let m = &self.masters[mi];
        if !is_leader && !m.inst.has(FORCE_FAILOVER) {
            let timeout = self
                .core
                .periods
                .election_timeout
                .min(m.cfg.failover_timeout);
            if self.core.now - m.failover_start_time > timeout {
                self.abort_with(mi, "-failover-abort-not-elected");
            }
            return;
        }
        self.notify(mi, Which::Master, "+elected-leader", Level::Warning);
        if self.core.simfailure & SIMFAILURE_CRASH_AFTER_ELECTION != 0 {
            self.core.push(Action::Crash);
        }
        let m = &mut self.masters[mi];
        m.failover_state = FailoverState::SelectSlave;
        m.failover_state_change_time = self.core.now;
        self.notify(
            mi,
            Which::Master,
            "+failover-state-select-slave",
            Level::Warning,
        );
    }

    fn failover_select(&mut self, mi: usize) {
        match self.select_replica(mi) {
            None => self.abort_with(mi, "-failover-abort-no-good-slave"),
            Some(ri) => {
                self.notify(mi, Which::Replica(ri), "+selected-slave", Level::Warning);
                let m = &mut self.masters[mi];
                m.replicas[ri].flags |= PROMOTED;
                m.promoted = Some(m.replicas[ri].id);
                m.failover_state = FailoverState::SendSlaveofNoOne;
                m.failover_state_change_time = self.core.now;
                self.notify(
                    mi,
                    Which::Replica(ri),
                    "+failover-state-send-slaveof-noone",
                    Level::Notice,
                );
            }
        }
    }

    fn promoted_index(&self, mi: usize) -> Option<usize> {
        let m = &self.masters[mi];
        let id = m.promoted?;
        m.replicas.iter().position(|r| r.id == id)
    }

    fn failover_send_noone(&mut self, mi: usize) {
        let Some(ri) = self.promoted_index(mi) else {
            return self.abort_with(mi, "-failover-abort-slave-timeout");
        };
        let m = &self.masters[mi];
        if m.replicas[ri].link.disconnected {
            if self.core.now - m.failover_state_change_time > m.cfg.failover_timeout {
                self.abort_with(mi, "-failover-abort-slave-timeout");
            }
            return;
        }
        if !self.send_slaveof(mi, Which::Replica(ri), None) {
            return;
        }
        self.notify(
            mi,
            Which::Replica(ri),
            "+failover-state-wait-promotion",
            Level::Notice,
        );
        let m = &mut self.masters[mi];
        m.failover_state = FailoverState::WaitPromotion;
        m.failover_state_change_time = self.core.now;
    }

    fn failover_reconf_next(&mut self, mi: usize) {
        let now = self.core.now;
        let reconf_timeout = self.core.periods.slave_reconf_timeout;
        let Some(pi) = self.promoted_index(mi) else {
            return;
        };
        let promoted_addr = self.masters[mi].replicas[pi].addr.clone();
        let mut in_progress = self.masters[mi]
            .replicas
            .iter()
            .filter(|r| r.flags & (RECONF_SENT | RECONF_INPROG) != 0)
            .count() as i64;
        for ri in 0..self.masters[mi].replicas.len() {
            if in_progress >= self.masters[mi].cfg.parallel_syncs {
                break;
            }
            let r = &self.masters[mi].replicas[ri];
            if r.flags & (PROMOTED | RECONF_DONE) != 0 {
                continue;
            }
            if r.has(RECONF_SENT) && now - r.slave_reconf_sent_time > reconf_timeout {
                self.notify(
                    mi,
                    Which::Replica(ri),
                    "-slave-reconf-sent-timeout",
                    Level::Notice,
                );
                let r = &mut self.masters[mi].replicas[ri];
                r.flags = (r.flags & !RECONF_SENT) | RECONF_DONE;
            }
            let r = &self.masters[mi].replicas[ri];
            if r.flags & (RECONF_SENT | RECONF_INPROG | RECONF_DONE) != 0 || r.link.disconnected {
                continue;
            }
            if self.send_slaveof(mi, Which::Replica(ri), Some(&promoted_addr)) {
                let r = &mut self.masters[mi].replicas[ri];
                r.flags |= RECONF_SENT;
                r.slave_reconf_sent_time = now;
                self.notify(mi, Which::Replica(ri), "+slave-reconf-sent", Level::Notice);
                in_progress += 1;
            }
        }
        self.failover_detect_end(mi);
    }

    fn failover_detect_end(&mut self, mi: usize) {
        let now = self.core.now;
        let Some(pi) = self.promoted_index(mi) else {
            return;
        };
        let m = &self.masters[mi];
        if m.replicas[pi].has(S_DOWN) {
            return;
        }
        let mut not_reconfigured = m
            .replicas
            .iter()
            .filter(|r| r.flags & (PROMOTED | RECONF_DONE) == 0 && !r.has(S_DOWN))
            .count();
        let timeout = now - m.failover_state_change_time > m.cfg.failover_timeout;
        if timeout {
            not_reconfigured = 0;
            self.notify(
                mi,
                Which::Master,
                "+failover-end-for-timeout",
                Level::Warning,
            );
        }
        if not_reconfigured == 0 {
            self.notify(mi, Which::Master, "+failover-end", Level::Warning);
            let m = &mut self.masters[mi];
            m.failover_state = FailoverState::UpdateConfig;
            m.failover_state_change_time = now;
        }
        if timeout {
            let promoted_addr = self.masters[mi].replicas[pi].addr.clone();
            for ri in 0..self.masters[mi].replicas.len() {
                let r = &self.masters[mi].replicas[ri];
                if r.flags & (PROMOTED | RECONF_DONE | RECONF_SENT) != 0 || r.link.disconnected {
                    continue;
                }
                if self.send_slaveof(mi, Which::Replica(ri), Some(&promoted_addr)) {
                    self.notify(
                        mi,
                        Which::Replica(ri),
                        "+slave-reconf-sent-be",
                        Level::Notice,
                    );
                    self.masters[mi].replicas[ri].flags |= RECONF_SENT;
                }
            }
        }
    }

    /// The failover is over: the promoted replica becomes the monitored master.
    pub(crate) fn switch_to_promoted(&mut self, mi: usize) {
        let m = &self.masters[mi];
        let to = m
            .promoted_replica()
            .map_or_else(|| m.inst.addr.clone(), |p| p.addr.clone());
        let to_host = to.announced(self.core.announce_hostnames).to_string();
        self.switch_master(mi, &to_host, to.port);
    }

    /// `+switch-master <name> <old ip> <old port> <new ip> <new port>`, then the master
    /// is the new address and its old self a replica.
    pub(crate) fn switch_master(&mut self, mi: usize, host: &str, port: u16) {
        let m = &self.masters[mi];
        let from = m.inst.addr.clone();
        let script = m.cfg.notification_script.clone();
        let msg = format!(
            "{} {} {} {host} {port}",
            m.inst.name,
            from.announced(self.core.announce_hostnames),
            from.port
        );
        self.core
            .event(Level::Warning, "+switch-master", msg, script.as_deref());
        self.reset_master_and_change_address(mi, host, port);
    }

    pub(crate) fn abort_failover(&mut self, mi: usize) {
        let now = self.core.now;
        let m = &mut self.masters[mi];
        // Past the promotion a failover cannot be undone, only finished.
        assert!(
            m.failover_state <= FailoverState::WaitPromotion,
            "sentinel: abort of a failover past the promotion"
        );
        m.inst.flags &= !(FAILOVER_IN_PROGRESS | FORCE_FAILOVER);
        m.failover_state = FailoverState::None;
        m.failover_state_change_time = now;
        if let Some(id) = m.promoted.take() {
            if let Some(r) = m.replicas.iter_mut().find(|r| r.id == id) {
                r.flags &= !PROMOTED;
            }
        }
    }

    /// Forgets replicas (and unless `keep_sentinels`, sentinels), the failover and the
    /// links, as Redis' `sentinelResetMaster`.
    pub(crate) fn reset_master(&mut self, mi: usize, keep_sentinels: bool, event: bool) {
        let ah = self.core.announce_hostnames;
        let now = self.core.now;
        let out = &mut self.core.out;
        let m = &mut self.masters[mi];
        for mut r in m.replicas.drain(..) {
            crate::close_link(out, &mut r.link, None);
        }
        if !keep_sentinels {
            for mut s in m.sentinels.drain(..) {
                crate::close_link(out, &mut s.link, None);
            }
        }
        crate::close_link(out, &mut m.inst.link, None);
        m.inst.flags = 0;
        m.inst.leader = None;
        m.failover_state = FailoverState::None;
        m.failover_state_change_time = 0;
        m.failover_start_time = 0;
        m.promoted = None;
        m.inst.runid = None;
        m.inst.slave_master_host = None;
        m.inst.link.act_ping_time = now;
        m.inst.link.last_ping_time = 0;
        m.inst.link.last_avail_time = now;
        m.inst.link.last_pong_time = now;
        m.inst.role_reported_time = now;
        m.inst.role_reported = Kind::Master;
        if event {
            let script = m.cfg.notification_script.clone();
            let desc = describe(ah, &m.inst, None);
            self.core
                .event(Level::Warning, "+reset-master", desc, script.as_deref());
        }
    }

    pub(crate) fn reset_master_and_change_address(&mut self, mi: usize, host: &str, port: u16) {
        let m = &self.masters[mi];
        let mut keep: Vec<Addr> = m
            .replicas
            .iter()
            .filter(|r| !r.addr.same(host, port))
            .map(|r| r.addr.clone())
            .collect();
        if !m.inst.addr.same(host, port) {
            keep.push(m.inst.addr.clone());
        }
        self.reset_master(mi, true, false);
        let addr = self.core.learned_addr(host, port);
        let m = &mut self.masters[mi];
        m.inst.addr = addr;
        m.inst.o_down_since = 0;
        m.inst.s_down_since = 0;
        for a in keep {
            self.add_replica(mi, &a.host, a.port);
            if let Some(r) = self.masters[mi].replicas.last_mut() {
                r.addr.ip = a.ip.clone();
            }
        }
        self.core.flush_config();
    }

    pub(crate) fn client_reconfig_script(
        &mut self,
        mi: usize,
        role: &str,
        state: &str,
        from: &Addr,
        to: &Addr,
    ) {
        let m = &self.masters[mi];
        if let Some(path) = &m.cfg.client_reconfig_script {
            self.core.push(Action::RunScript {
                path: path.clone(),
                args: vec![
                    m.inst.name.clone(),
                    role.to_string(),
                    state.to_string(),
                    from.host.clone(),
                    from.port.to_string(),
                    to.host.clone(),
                    to.port.to_string(),
                ],
            });
        }
    }
}
