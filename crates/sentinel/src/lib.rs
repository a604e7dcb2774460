//! Redis Sentinel as a sans-IO state machine.
//!
//! A [`Sentinel`] watches masters, their replicas and fellow sentinels, agrees with the
//! others that a master is down, elects a leader by epoch and drives the failover, as
//! Redis 7.0's Sentinel does, with Redis' hello format, event names and config file
//! lines. It owns no sockets, threads or clocks: the host feeds it the time
//! ([`Sentinel::tick`], about ten times a second), what happens on its connections
//! ([`Sentinel::handle`]) and the `SENTINEL` commands clients send
//! ([`Sentinel::command`]), and performs the [`Action`]s it returns. Randomness comes
//! from the seed given to [`Sentinel::new`], so a simulation replays exactly.
//!
//! ```
//! use carmine_sentinel::{Action, Sentinel};
//!
//! let mut s = Sentinel::new("0123456789012345678901234567890123456789".into(), 26379, 7);
//! s.configure(&["monitor", "mymaster", "127.0.0.1", "6379", "2"]).unwrap();
//! s.start(0);
//! let actions = s.tick(100);
//! // The first tick connects to the master (commands and pub/sub).
//! assert!(actions.iter().any(|a| matches!(a, Action::Connect { port: 6379, .. })));
//! ```

mod commands;
mod config;
mod failover;
mod hello;
mod info;
mod instance;
mod types;

pub use config::{rewrite_config_text, ConfigLine};
pub use hello::Hello;
pub use instance::{FailoverState, Kind};
pub use types::{Action, Addr, ConnId, Event, Level, Periods, Reply};

use instance::{Conn, Instance, Master, ReplyFor};

/// Where an instance sits: its master's index, and which of the master's instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Master,
    Replica(usize),
    Sentinel(usize),
}

/// State that is not per master: identity, epoch, timing, and the action queue.
pub(crate) struct Core {
    pub myid: String,
    pub current_epoch: u64,
    pub periods: Periods,
    pub now: i64,
    pub tilt: bool,
    pub tilt_start: i64,
    pub previous_time: i64,
    /// The port this sentinel listens on (announced in hellos unless `announce-port`).
    pub port: u16,
    pub announce_ip: Option<String>,
    pub announce_port: u16,
    pub deny_scripts_reconfig: bool,
    pub resolve_hostnames: bool,
    pub announce_hostnames: bool,
    pub sentinel_user: Option<String>,
    pub sentinel_pass: Option<String>,
    /// This sentinel's own `requirepass`: used with fellow sentinels when
    /// `sentinel-pass` is not set, as Redis does.
    pub requirepass: Option<String>,
    pub simfailure: u32,
    /// Hellos, INFO replies and vote replies that were malformed or came from nobody
    /// we know, and were ignored.
    pub ignored_messages: u64,
    /// Resolves a host name to an IP (the host passes one in; by default only IP
    /// literals resolve, to themselves).
    pub resolver: fn(&str) -> Option<String>,
    rng: u64,
    next_id: u64,
    out: Vec<Action>,
}

fn literal_only(host: &str) -> Option<String> {
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

pub(crate) const SIMFAILURE_CRASH_AFTER_ELECTION: u32 = 1;
pub(crate) const SIMFAILURE_CRASH_AFTER_PROMOTION: u32 = 2;
const MAX_PENDING_COMMANDS: u32 = 100;
const MAX_DESYNC: u64 = 1000;
const FAILOVER_INFO_PERIOD: i64 = 100;
pub(crate) const HELLO_CHANNEL: &str = "__sentinel__:hello";

impl Core {
    pub fn random(&mut self) -> u64 {
        // xorshift64*: deterministic per seed, good enough for desynchronising timers.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn desync(&mut self) -> i64 {
        (self.random() % MAX_DESYNC) as i64
    }

    /// Redis' `createSentinelAddr`: a name is resolved only with `resolve-hostnames
    /// yes`; an address that does not resolve is refused, or with `accept_unresolved`
    /// kept with the IP `?` (to be resolved when connecting).
    pub fn make_addr(
        &self,
        host: &str,
        port: u16,
        accept_unresolved: bool,
    ) -> Result<Addr, String> {
        let ip = if self.resolve_hostnames {
            (self.resolver)(host)
        } else {
            literal_only(host)
        };
        match ip {
            Some(ip) => Ok(Addr {
                host: host.to_string(),
                ip,
                port,
            }),
            None if self.resolve_hostnames && accept_unresolved => Ok(Addr {
                host: host.to_string(),
                ip: "?".to_string(),
                port,
            }),
            None => Err("Can't resolve instance hostname.".to_string()),
        }
    }

    /// An address learned from a peer or an instance: kept even if it does not
    /// resolve now.
    pub fn learned_addr(&self, host: &str, port: u16) -> Addr {
        self.make_addr(host, port, true)
            .unwrap_or_else(|_| Addr::literal(host, port))
    }

    pub fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn push(&mut self, a: Action) {
        self.out.push(a);
    }

    /// A new replica instance of a master, named by its announced address.
    pub fn new_replica(&mut self, addr: Addr, down_after: i64) -> Instance {
        let id = self.new_id();
        let name = addr.name(self.announce_hostnames);
        Instance::new(id, Kind::Replica, name, addr, down_after, self.now)
    }

    pub fn flush_config(&mut self) {
        if !self.out.contains(&Action::FlushConfig) {
            self.out.push(Action::FlushConfig);
        }
    }

    /// Logs and publishes an event; a warning also runs the master's notification script.
    pub fn event(&mut self, level: Level, channel: &str, message: String, script: Option<&str>) {
        if level == Level::Warning {
            if let Some(path) = script {
                self.out.push(Action::RunScript {
                    path: path.to_string(),
                    args: vec![channel.to_string(), message.clone()],
                });
            }
        }
        self.out.push(Action::Event {
            level,
            channel: channel.to_string(),
            message,
        });
    }

    /// The address an instance is announced with (`announce-hostnames` aside, as given).
    pub fn announce_port(&self) -> u16 {
        if self.announce_port != 0 {
            self.announce_port
        } else {
            self.port
        }
    }
}

/// Redis' `%@` prefix: `<type> <name> <ip> <port>`, and for a replica or sentinel
/// `@ <master name> <master ip> <master port>` after it.
pub(crate) fn describe(ah: bool, inst: &Instance, master: Option<&Instance>) -> String {
    let mut s = format!(
        "{} {} {} {}",
        inst.kind.name(),
        inst.name,
        inst.addr.announced(ah),
        inst.addr.port
    );
    if let Some(m) = master.filter(|_| inst.kind != Kind::Master) {
        s.push_str(&format!(
            " @ {} {} {}",
            m.name,
            m.addr.announced(ah),
            m.addr.port
        ));
    }
    s
}

/// Writes one command on an instance's command (or pub/sub) connection, remembering
/// what its reply is for. False when that connection does not exist.
pub(crate) fn send(
    out: &mut Vec<Action>,
    link: &mut instance::Link,
    pubsub: bool,
    what: ReplyFor,
    argv: Vec<String>,
) -> bool {
    let conn = if pubsub {
        link.pc.as_mut()
    } else {
        link.cc.as_mut()
    };
    let Some(conn) = conn else {
        return false;
    };
    conn.pending.push_back(what);
    if what != ReplyFor::Hello {
        link.pending_commands += 1;
    }
    out.push(Action::Send {
        conn: conn.id,
        argv: argv.into_iter().map(String::into_bytes).collect(),
    });
    true
}

/// Closes one or both connections of a link (`None`: both).
pub(crate) fn close_link(out: &mut Vec<Action>, link: &mut instance::Link, pubsub: Option<bool>) {
    if pubsub != Some(true) {
        if let Some(c) = link.cc.take() {
            out.push(Action::Close { conn: c.id });
            link.pending_commands = 0;
            link.disconnected = true;
        }
    }
    if pubsub != Some(false) {
        if let Some(c) = link.pc.take() {
            out.push(Action::Close { conn: c.id });
            link.disconnected = true;
        }
    }
}

/// A Redis Sentinel: see the crate documentation.
pub struct Sentinel {
    core: Core,
    masters: Vec<Master>,
}

impl Sentinel {
    /// A sentinel with this run id (40 hex characters), listening on `port`, with its
    /// randomness seeded by `seed`.
    pub fn new(myid: String, port: u16, seed: u64) -> Sentinel {
        Sentinel {
            core: Core {
                myid,
                current_epoch: 0,
                periods: Periods::default(),
                now: 0,
                tilt: false,
                tilt_start: 0,
                previous_time: 0,
                port,
                announce_ip: None,
                announce_port: 0,
                deny_scripts_reconfig: true,
                resolve_hostnames: false,
                announce_hostnames: false,
                sentinel_user: None,
                sentinel_pass: None,
                requirepass: None,
                simfailure: 0,
                ignored_messages: 0,
                resolver: literal_only,
                rng: seed | 1,
                next_id: 0,
                out: Vec::new(),
            },
            masters: Vec::new(),
        }
    }

    pub fn myid(&self) -> &str {
        &self.core.myid
    }

    pub fn current_epoch(&self) -> u64 {
        self.core.current_epoch
    }

    pub fn in_tilt(&self) -> bool {
        self.core.tilt
    }

    /// How long a user script may run before it is killed, in milliseconds.
    pub fn script_max_runtime(&self) -> u64 {
        u64::try_from(self.core.periods.script_max_runtime).unwrap_or(0)
    }

    /// The first retry delay of a failed user script, in milliseconds.
    pub fn script_retry_delay(&self) -> u64 {
        u64::try_from(self.core.periods.script_retry_delay).unwrap_or(0)
    }

    pub fn ignored_messages(&self) -> u64 {
        self.core.ignored_messages
    }

    /// The sentinel's own `requirepass`, used to authenticate with fellow sentinels.
    pub fn set_requirepass(&mut self, pass: Option<String>) {
        self.core.requirepass = pass.filter(|p| !p.is_empty());
    }

    /// How host names resolve (`resolve-hostnames yes`); the host passes DNS in.
    pub fn set_resolver(&mut self, resolver: fn(&str) -> Option<String>) {
        self.core.resolver = resolver;
    }

    pub fn set_port(&mut self, port: u16) {
        self.core.port = port;
    }

    /// Names and current addresses of the monitored masters.
    pub fn masters(&self) -> Vec<(String, Addr)> {
        self.masters
            .iter()
            .map(|m| (m.inst.name.clone(), m.current_addr().clone()))
            .collect()
    }

    /// The failover state of a master, and the epoch of its last failover.
    pub fn failover_state(&self, name: &str) -> Option<(FailoverState, u64)> {
        let m = self.master(name)?;
        Some((m.failover_state, m.failover_epoch))
    }

    /// The run id (or address, when unknown) of the replica chosen for promotion in the
    /// current failover of a master.
    pub fn promoted(&self, name: &str) -> Option<String> {
        let r = self.master(name)?.promoted_replica()?;
        Some(r.runid.clone().unwrap_or_else(|| r.addr.name(false)))
    }

    /// Our vote for a master's failover leader: (leader run id, epoch).
    pub fn vote(&self, name: &str) -> Option<(Option<String>, u64)> {
        let m = self.master(name)?;
        Some((m.inst.leader.clone(), m.inst.leader_epoch))
    }

    fn master(&self, name: &str) -> Option<&Master> {
        self.masters.iter().find(|m| m.inst.name == name)
    }

    fn master_index(&self, name: &str) -> Option<usize> {
        self.masters.iter().position(|m| m.inst.name == name)
    }

    /// Takes the actions queued since the last call.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.core.out)
    }

    /// After the configuration is loaded: `+monitor` for each master, as Redis logs at
    /// start.
    pub fn start(&mut self, now: i64) {
        let ah = self.core.announce_hostnames;
        self.core.now = now;
        self.core.previous_time = now;
        for m in &mut self.masters {
            let msg = format!("{} quorum {}", describe(ah, &m.inst, None), m.cfg.quorum);
            let script = m.cfg.notification_script.clone();
            self.core
                .event(Level::Warning, "+monitor", msg, script.as_deref());
            m.inst.link.last_reconn_time = now - self.core.periods.ping - 1;
        }
    }

    /// The periodic timer (Redis' `sentinelTimer`); call it every 50-100 ms.
    pub fn tick(&mut self, now: i64) -> Vec<Action> {
        self.core.now = now;
        self.check_tilt();
        for mi in 0..self.masters.len() {
            self.handle_instance(mi, Which::Master);
            for ri in 0..self.masters[mi].replicas.len() {
                self.handle_instance(mi, Which::Replica(ri));
            }
            for si in 0..self.masters[mi].sentinels.len() {
                self.handle_instance(mi, Which::Sentinel(si));
            }
            if self.masters[mi].failover_state == FailoverState::UpdateConfig {
                self.switch_to_promoted(mi);
            }
        }
        self.take_actions()
    }

    /// Something happened on a connection.
    pub fn handle(&mut self, now: i64, event: Event) -> Vec<Action> {
        let ah = self.core.announce_hostnames;
        self.core.now = now;
        match event {
            Event::Connected { conn, local_ip } => {
                if let Some((mi, which, pubsub)) = self.find_conn(conn) {
                    let link = &mut self.inst_mut(mi, which).link;
                    let c = if pubsub {
                        link.pc.as_mut()
                    } else {
                        link.cc.as_mut()
                    };
                    if let Some(c) = c {
                        c.local_ip = Some(local_ip);
                    }
                }
            }
            Event::Closed { conn, reason } => {
                if let Some((mi, which, pubsub)) = self.find_conn(conn) {
                    let inst = self.inst_mut(mi, which);
                    // The host already closed it: forget it without a Close action.
                    let link = &mut inst.link;
                    if pubsub {
                        link.pc = None;
                    } else {
                        link.cc = None;
                        link.pending_commands = 0;
                    }
                    link.disconnected = true;
                    let desc = describe(ah, inst, None);
                    let channel = if pubsub { "-pubsub-link" } else { "-cmd-link" };
                    self.core
                        .event(Level::Debug, channel, format!("{desc} #{reason}"), None);
                }
            }
            Event::Reply { conn, reply } => {
                if let Some((mi, which, pubsub)) = self.find_conn(conn) {
                    self.on_reply(mi, which, pubsub, reply);
                }
            }
        }
        self.take_actions()
    }

    fn find_conn(&self, conn: ConnId) -> Option<(usize, Which, bool)> {
        let matches = |inst: &Instance| -> Option<bool> {
            if inst.link.cc.as_ref().is_some_and(|c| c.id == conn) {
                Some(false)
            } else if inst.link.pc.as_ref().is_some_and(|c| c.id == conn) {
                Some(true)
            } else {
                None
            }
        };
        for (mi, m) in self.masters.iter().enumerate() {
            if let Some(p) = matches(&m.inst) {
                return Some((mi, Which::Master, p));
            }
            for (i, r) in m.replicas.iter().enumerate() {
                if let Some(p) = matches(r) {
                    return Some((mi, Which::Replica(i), p));
                }
            }
            for (i, s) in m.sentinels.iter().enumerate() {
                if let Some(p) = matches(s) {
                    return Some((mi, Which::Sentinel(i), p));
                }
            }
        }
        None
    }

    fn inst_mut(&mut self, mi: usize, which: Which) -> &mut Instance {
        split(&mut self.masters[mi], which).1
    }

    fn inst(&self, mi: usize, which: Which) -> &Instance {
        let m = &self.masters[mi];
        match which {
            Which::Master => &m.inst,
            Which::Replica(i) => &m.replicas[i],
            Which::Sentinel(i) => &m.sentinels[i],
        }
    }

    fn on_reply(&mut self, mi: usize, which: Which, pubsub: bool, reply: Reply) {
        let now = self.core.now;
        let inst = split(&mut self.masters[mi], which).1;
        let link = &mut inst.link;
        let conn = if pubsub {
            link.pc.as_mut()
        } else {
            link.cc.as_mut()
        };
        let Some(conn) = conn else {
            return;
        };
        let what = match conn.pending.front().copied() {
            // The subscription stays: every message after it is a hello.
            Some(ReplyFor::Hello) if conn.pending.len() == 1 => ReplyFor::Hello,
            Some(w) => {
                conn.pending.pop_front();
                if w != ReplyFor::Hello {
                    link.pending_commands = link.pending_commands.saturating_sub(1);
                }
                w
            }
            None => {
                self.core.ignored_messages += 1;
                return;
            }
        };
        match what {
            ReplyFor::Discard => {}
            ReplyFor::Ping => self.on_ping_reply(mi, which, &reply),
            ReplyFor::Info => match reply {
                Reply::Bulk(b) => {
                    let text = String::from_utf8_lossy(&b).into_owned();
                    self.refresh_info(mi, which, &text);
                }
                _ => self.core.ignored_messages += 1,
            },
            ReplyFor::Publish => {
                if !matches!(reply, Reply::Error(_)) {
                    inst.last_pub_time = now;
                }
            }
            ReplyFor::IsMasterDown => self.on_is_master_down_reply(mi, which, &reply),
            ReplyFor::Hello => {
                inst.link.pc_last_activity = now;
                // An error where the subscription's answer should be (-NOAUTH with a
                // wrong password): the link is useless, so it is dropped and retried,
                // as hiredis drops a connection on an unexpected error reply.
                if matches!(reply, Reply::Error(_)) {
                    close_link(&mut self.core.out, &mut inst.link, Some(true));
                    return;
                }
                if let Reply::Array(items) = &reply {
                    if let [Reply::Bulk(kind), Reply::Bulk(_), Reply::Bulk(payload)] =
                        items.as_slice()
                    {
                        if kind == b"message" {
                            let text = String::from_utf8_lossy(payload).into_owned();
                            if !text.contains(&self.core.myid) {
                                self.process_hello(&text);
                            }
                            return;
                        }
                        if kind == b"subscribe" {
                            return;
                        }
                    }
                }
                self.core.ignored_messages += 1;
            }
        }
    }

    fn on_ping_reply(&mut self, mi: usize, which: Which, reply: &Reply) {
        let now = self.core.now;
        let (cfg, inst) = split(&mut self.masters[mi], which);
        if let Reply::Status(s) | Reply::Error(s) = reply {
            if s.starts_with("PONG") || s.starts_with("LOADING") || s.starts_with("MASTERDOWN") {
                inst.link.last_avail_time = now;
                inst.link.act_ping_time = 0;
                if inst.has(instance::MASTER_REBOOT) && s.starts_with("PONG") {
                    inst.flags &= !instance::MASTER_REBOOT;
                }
            } else if s.starts_with("BUSY")
                && inst.has(instance::S_DOWN)
                && !inst.has(instance::SCRIPT_KILL_SENT)
            {
                let argv = vec![cfg.map_command("SCRIPT"), "KILL".into()];
                send(
                    &mut self.core.out,
                    &mut inst.link,
                    false,
                    ReplyFor::Discard,
                    argv,
                );
                inst.flags |= instance::SCRIPT_KILL_SENT;
            }
        }
        inst.link.last_pong_time = now;
    }

    fn check_tilt(&mut self) {
        let now = self.core.now;
        let delta = now - self.core.previous_time;
        if delta < 0 || delta > self.core.periods.tilt_trigger {
            self.core.tilt = true;
            self.core.tilt_start = now;
            self.core
                .event(Level::Warning, "+tilt", "#tilt mode entered".into(), None);
        }
        self.core.previous_time = now;
    }

    /// One instance's share of the timer (Redis' `sentinelHandleRedisInstance`).
    fn handle_instance(&mut self, mi: usize, which: Which) {
        self.reconnect(mi, which);
        self.send_periodic(mi, which);
        let now = self.core.now;
        if self.core.tilt {
            if now - self.core.tilt_start < self.core.periods.tilt_period {
                return;
            }
            self.core.tilt = false;
            self.core
                .event(Level::Warning, "-tilt", "#tilt mode exited".into(), None);
        }
        self.check_sdown(mi, which);
        if which == Which::Master {
            self.check_odown(mi);
            if self.start_failover_if_needed(mi) {
                self.ask_other_sentinels(mi, true);
            }
            self.failover_state_machine(mi);
            self.ask_other_sentinels(mi, false);
        }
    }

    fn auth_for(&self, mi: usize, which: Which) -> (Option<String>, Option<String>) {
        let m = &self.masters[mi];
        match which {
            Which::Sentinel(_) => match &self.core.sentinel_pass {
                Some(p) => (self.core.sentinel_user.clone(), Some(p.clone())),
                None => (None, self.core.requirepass.clone()),
            },
            _ => (m.cfg.auth_user.clone(), m.cfg.auth_pass.clone()),
        }
    }

    /// Opens the missing connections of an instance, at most once a ping period.
    fn reconnect(&mut self, mi: usize, which: Which) {
        let now = self.core.now;
        let ping_period = self.core.periods.ping;
        let (user, pass) = self.auth_for(mi, which);
        let myid8: String = self.core.myid.chars().take(8).collect();
        let (cfg, inst) = split(&mut self.masters[mi], which);
        if !inst.link.disconnected || inst.addr.port == 0 {
            return;
        }
        if now - inst.link.last_reconn_time < ping_period {
            return;
        }
        inst.link.last_reconn_time = now;
        if self.core.resolve_hostnames {
            // The instance may have moved, or not have resolved before: resolve again.
            if let Some(ip) = (self.core.resolver)(&inst.addr.host) {
                inst.addr.ip = ip;
            }
        }
        if inst.addr.ip == "?" {
            return;
        }
        let core = &mut self.core;
        let auth_argv = pass.map(|p| {
            let mut v = vec![cfg.map_command("AUTH")];
            v.extend(user);
            v.push(p);
            v
        });
        for pubsub in [false, true] {
            if pubsub && inst.kind == Kind::Sentinel {
                break;
            }
            let exists = if pubsub {
                inst.link.pc.is_some()
            } else {
                inst.link.cc.is_some()
            };
            if exists {
                continue;
            }
            core.next_id += 1;
            let id = core.next_id;
            core.out.push(Action::Connect {
                conn: id,
                host: inst.addr.ip.clone(),
                port: inst.addr.port,
            });
            if pubsub {
                inst.link.pc = Some(Conn::new(id));
                inst.link.pc_conn_time = now;
                inst.link.pc_last_activity = now;
            } else {
                inst.link.cc = Some(Conn::new(id));
                inst.link.cc_conn_time = now;
                inst.link.pending_commands = 0;
            }
            let link = &mut inst.link;
            if let Some(a) = &auth_argv {
                send(&mut core.out, link, pubsub, ReplyFor::Discard, a.clone());
            }
            let name = format!("sentinel-{myid8}-{}", if pubsub { "pubsub" } else { "cmd" });
            send(
                &mut core.out,
                link,
                pubsub,
                ReplyFor::Discard,
                vec![cfg.map_command("CLIENT"), "SETNAME".into(), name],
            );
            if pubsub {
                send(
                    &mut core.out,
                    link,
                    true,
                    ReplyFor::Hello,
                    vec![cfg.map_command("SUBSCRIBE"), HELLO_CHANNEL.into()],
                );
            } else {
                send_ping(&mut core.out, cfg, inst, now);
            }
        }
        if inst.link.cc.is_some() && (inst.kind == Kind::Sentinel || inst.link.pc.is_some()) {
            inst.link.disconnected = false;
        }
    }

    /// PING, INFO and the hello message, each on its period.
    fn send_periodic(&mut self, mi: usize, which: Which) {
        let now = self.core.now;
        let periods = self.core.periods.clone();
        let master_flags = self.masters[mi].inst.flags;
        let (cfg, inst) = split(&mut self.masters[mi], which);
        if inst.link.disconnected || inst.link.pending_commands >= MAX_PENDING_COMMANDS {
            return;
        }
        // Redis reads the replicas' INFO every second once the master is down. During a
        // failover Carmine reads it every 100 ms: the promotion and each replica's
        // reconfiguration are seen (and the failover ends) up to a second sooner per
        // step. It only observes sooner; no decision changes.
        let info_period =
            if inst.kind == Kind::Replica && master_flags & instance::FAILOVER_IN_PROGRESS != 0 {
                FAILOVER_INFO_PERIOD.min(periods.info)
            } else if inst.kind == Kind::Replica
                && (master_flags & instance::O_DOWN != 0 || inst.master_link_down_time != 0)
            {
                1000
            } else {
                periods.info
            };
        let info_pending = inst
            .link
            .cc
            .as_ref()
            .is_some_and(|c| c.pending.contains(&ReplyFor::Info));
        let ping_period = inst.down_after.min(periods.ping);
        if inst.kind != Kind::Sentinel
            && !(info_pending && info_period < 1000)
            && (inst.info_refresh == 0 || now - inst.info_refresh > info_period)
        {
            let argv = vec![cfg.map_command("INFO")];
            send(
                &mut self.core.out,
                &mut inst.link,
                false,
                ReplyFor::Info,
                argv,
            );
        }
        if now - inst.link.last_pong_time > ping_period
            && now - inst.link.last_ping_time > ping_period / 2
        {
            send_ping(&mut self.core.out, cfg, inst, now);
        }
        if now - inst.last_pub_time > periods.publish {
            self.send_hello(mi, which);
        }
    }

    /// Publishes our hello through an instance (Redis' `sentinelSendHello`).
    fn send_hello(&mut self, mi: usize, which: Which) {
        let m = &self.masters[mi];
        let inst = self.inst(mi, which);
        if inst.link.disconnected {
            return;
        }
        let local_ip = inst.link.cc.as_ref().and_then(|c| c.local_ip.clone());
        let Some(ip) = self.core.announce_ip.clone().or(local_ip) else {
            return;
        };
        let addr = m.current_addr();
        let hello = Hello {
            ip,
            port: self.core.announce_port(),
            runid: self.core.myid.clone(),
            current_epoch: self.core.current_epoch,
            master_name: m.inst.name.clone(),
            master_ip: addr.announced(self.core.announce_hostnames).to_string(),
            master_port: addr.port,
            master_config_epoch: m.config_epoch,
        };
        let argv = vec![
            m.cfg.map_command("PUBLISH"),
            HELLO_CHANNEL.to_string(),
            hello.to_string(),
        ];
        let inst = split(&mut self.masters[mi], which).1;
        send(
            &mut self.core.out,
            &mut inst.link,
            false,
            ReplyFor::Publish,
            argv,
        );
    }
}

/// A master's settings and one of its instances, borrowed together.
pub(crate) fn split(m: &mut Master, which: Which) -> (&instance::MasterConfig, &mut Instance) {
    let inst = match which {
        Which::Master => &mut m.inst,
        Which::Replica(i) => &mut m.replicas[i],
        Which::Sentinel(i) => &mut m.sentinels[i],
    };
    (&m.cfg, inst)
}

fn send_ping(out: &mut Vec<Action>, cfg: &instance::MasterConfig, inst: &mut Instance, now: i64) {
    if send(
        out,
        &mut inst.link,
        false,
        ReplyFor::Ping,
        vec![cfg.map_command("PING")],
    ) {
        inst.link.last_ping_time = now;
        if inst.link.act_ping_time == 0 {
            inst.link.act_ping_time = now;
        }
    }
}
