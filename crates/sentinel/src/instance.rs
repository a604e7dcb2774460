//! The instances a sentinel knows: each monitored master with its replicas and fellow
//! sentinels, and the link (command and pub/sub connections) to each.

use std::collections::VecDeque;

use crate::types::{Addr, ConnId};

pub const S_DOWN: u32 = 1 << 3;
pub const O_DOWN: u32 = 1 << 4;
/// On a sentinel instance: it told us the master is down.
pub const MASTER_DOWN: u32 = 1 << 5;
pub const FAILOVER_IN_PROGRESS: u32 = 1 << 6;
pub const PROMOTED: u32 = 1 << 7;
pub const RECONF_SENT: u32 = 1 << 8;
pub const RECONF_INPROG: u32 = 1 << 9;
pub const RECONF_DONE: u32 = 1 << 10;
pub const FORCE_FAILOVER: u32 = 1 << 11;
pub const SCRIPT_KILL_SENT: u32 = 1 << 12;
pub const MASTER_REBOOT: u32 = 1 << 13;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Master,
    Replica,
    Sentinel,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Master => "master",
            Kind::Replica => "slave",
            Kind::Sentinel => "sentinel",
        }
    }
}

/// What a reply on a connection is for, queued in the order commands were sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyFor {
    Discard,
    Ping,
    Info,
    Publish,
    IsMasterDown,
    /// The pub/sub connection's SUBSCRIBE: every later message on it is a hello.
    Hello,
}

#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub pending: VecDeque<ReplyFor>,
    pub local_ip: Option<String>,
}

impl Conn {
    pub fn new(id: ConnId) -> Conn {
        Conn {
            id,
            pending: VecDeque::new(),
            local_ip: None,
        }
    }
}

/// The two connections to an instance and their timers, as Redis' `instanceLink`.
#[derive(Debug)]
pub struct Link {
    /// Not connected: set until both connections exist (just the command one for a
    /// sentinel).
    pub disconnected: bool,
    pub cc: Option<Conn>,
    pub pc: Option<Conn>,
    pub cc_conn_time: i64,
    pub pc_conn_time: i64,
    pub pc_last_activity: i64,
    pub last_reconn_time: i64,
    pub pending_commands: u32,
    /// When the oldest PING still unanswered was sent; 0 when none is pending.
    pub act_ping_time: i64,
    pub last_ping_time: i64,
    pub last_pong_time: i64,
    /// The last time an acceptable PING reply came.
    pub last_avail_time: i64,
}

impl Link {
    pub fn new(now: i64) -> Link {
        Link {
            disconnected: true,
            cc: None,
            pc: None,
            cc_conn_time: 0,
            pc_conn_time: 0,
            pc_last_activity: 0,
            last_reconn_time: 0,
            pending_commands: 0,
            act_ping_time: now,
            last_ping_time: 0,
            last_pong_time: now,
            last_avail_time: now,
        }
    }
}

#[derive(Debug)]
pub struct Instance {
    /// Unique for the machine's life: connections map back to instances by it.
    pub id: u64,
    pub kind: Kind,
    /// The master's name; `ip:port` for a replica; the run id for a sentinel.
    pub name: String,
    pub addr: Addr,
    pub runid: Option<String>,
    pub flags: u32,
    pub link: Link,
    pub last_pub_time: i64,
    pub last_hello_time: i64,
    pub last_master_down_reply_time: i64,
    pub s_down_since: i64,
    pub o_down_since: i64,
    pub down_after: i64,
    pub master_reboot_since: i64,
    pub info_refresh: i64,
    pub info: Option<String>,
    pub role_reported: Kind,
    pub role_reported_time: i64,
    pub slave_conf_change_time: i64,
    pub master_link_down_time: i64,
    pub slave_priority: i64,
    pub replica_announced: bool,
    pub slave_reconf_sent_time: i64,
    pub slave_master_host: Option<String>,
    pub slave_master_port: i64,
    pub slave_master_link_up: bool,
    pub slave_repl_offset: u64,
    /// On a sentinel instance: whom it voted for, and in which epoch. On a master: our
    /// own vote.
    pub leader: Option<String>,
    pub leader_epoch: u64,
}

impl Instance {
    pub fn new(id: u64, kind: Kind, name: String, addr: Addr, down_after: i64, now: i64) -> Self {
        Instance {
            id,
            kind,
            name,
            addr,
            runid: None,
            flags: 0,
            link: Link::new(now),
            last_pub_time: now,
            last_hello_time: now,
            last_master_down_reply_time: now,
            s_down_since: 0,
            o_down_since: 0,
            down_after,
            master_reboot_since: 0,
            info_refresh: 0,
            info: None,
            role_reported: if kind == Kind::Replica {
                Kind::Replica
            } else {
                Kind::Master
            },
            role_reported_time: now,
            slave_conf_change_time: now,
            master_link_down_time: 0,
            slave_priority: 100,
            replica_announced: true,
            slave_reconf_sent_time: 0,
            slave_master_host: None,
            slave_master_port: 0,
            slave_master_link_up: false,
            slave_repl_offset: 0,
            leader: None,
            leader_epoch: 0,
        }
    }

    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// No SDOWN or ODOWN began in the last `ms` milliseconds.
    pub fn no_down_for(&self, now: i64, ms: i64) -> bool {
        let most_recent = self.s_down_since.max(self.o_down_since);
        most_recent == 0 || now - most_recent > ms
    }

    /// The flags as `SENTINEL MASTER` shows them.
    pub fn flags_text(&self) -> String {
        let mut parts = Vec::new();
        if self.has(S_DOWN) {
            parts.push("s_down");
        }
        if self.has(O_DOWN) {
            parts.push("o_down");
        }
        parts.push(self.kind.name());
        if self.link.disconnected {
            parts.push("disconnected");
        }
        for (flag, name) in [
            (MASTER_DOWN, "master_down"),
            (FAILOVER_IN_PROGRESS, "failover_in_progress"),
            (PROMOTED, "promoted"),
            (RECONF_SENT, "reconf_sent"),
            (RECONF_INPROG, "reconf_inprog"),
            (RECONF_DONE, "reconf_done"),
            (FORCE_FAILOVER, "force_failover"),
            (SCRIPT_KILL_SENT, "script_kill_sent"),
        ] {
            if self.has(flag) {
                parts.push(name);
            }
        }
        parts.join(",")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailoverState {
    None,
    WaitStart,
    SelectSlave,
    SendSlaveofNoOne,
    WaitPromotion,
    ReconfSlaves,
    UpdateConfig,
}

impl FailoverState {
    pub fn name(self) -> &'static str {
        match self {
            FailoverState::None => "none",
            FailoverState::WaitStart => "wait_start",
            FailoverState::SelectSlave => "select_slave",
            FailoverState::SendSlaveofNoOne => "send_slaveof_noone",
            FailoverState::WaitPromotion => "wait_promotion",
            FailoverState::ReconfSlaves => "reconf_slaves",
            FailoverState::UpdateConfig => "update_config",
        }
    }
}

/// A monitored master's settings (what `SENTINEL SET` changes).
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub quorum: u32,
    pub parallel_syncs: i64,
    pub failover_timeout: i64,
    pub master_reboot_down_after: i64,
    pub auth_pass: Option<String>,
    pub auth_user: Option<String>,
    pub notification_script: Option<String>,
    pub client_reconfig_script: Option<String>,
    /// `rename-command`: names to send instead of Redis' own.
    pub renamed: Vec<(String, String)>,
}

impl MasterConfig {
    pub fn map_command(&self, name: &str) -> String {
        self.renamed
            .iter()
            .find(|(from, _)| from.eq_ignore_ascii_case(name))
            .map_or_else(|| name.to_string(), |(_, to)| to.clone())
    }
}

/// A monitored master and what was learned about it.
#[derive(Debug)]
pub struct Master {
    pub inst: Instance,
    pub cfg: MasterConfig,
    pub config_epoch: u64,
    pub failover_epoch: u64,
    pub failover_state: FailoverState,
    pub failover_state_change_time: i64,
    pub failover_start_time: i64,
    pub failover_delay_logged: i64,
    /// The replica chosen for promotion (its instance id).
    pub promoted: Option<u64>,
    pub replicas: Vec<Instance>,
    pub sentinels: Vec<Instance>,
}

impl Master {
    pub fn promoted_replica(&self) -> Option<&Instance> {
        let id = self.promoted?;
        self.replicas.iter().find(|r| r.id == id)
    }

    /// The address clients should use: the promoted replica's once it took the role.
    pub fn current_addr(&self) -> &Addr {
        if self.inst.has(FAILOVER_IN_PROGRESS) && self.failover_state >= FailoverState::ReconfSlaves
        {
            if let Some(p) = self.promoted_replica() {
                return &p.addr;
            }
        }
        &self.inst.addr
    }
}
