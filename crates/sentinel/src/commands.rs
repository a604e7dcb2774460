//! The sentinel's command surface: `SENTINEL <subcommand>`, the `# Sentinel` INFO
//! section, ROLE, and the PUBLISH through which fellow sentinels send hellos.

use crate::instance::{Instance, Kind, FAILOVER_IN_PROGRESS, FORCE_FAILOVER, O_DOWN, S_DOWN};
use crate::types::Periods;
use crate::{
    describe, Level, Reply, Sentinel, HELLO_CHANNEL, SIMFAILURE_CRASH_AFTER_ELECTION,
    SIMFAILURE_CRASH_AFTER_PROMOTION,
};

const HELP: &[&str] = &[
    "SENTINEL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CKQUORUM <master-name>",
    "    Check if the current Sentinel configuration is able to reach the quorum",
    "    needed to failover a master and the majority needed to authorize the",
    "    failover.",
    "CONFIG SET <param> <value>",
    "    Set a global Sentinel configuration parameter.",
    "CONFIG GET <param>",
    "    Get global Sentinel configuration parameter.",
    "DEBUG [<param> <value> ...]",
    "    Show a list of configurable time parameters and their values (milliseconds).",
    "    Or update current configurable parameters values (one or more).",
    "GET-MASTER-ADDR-BY-NAME <master-name>",
    "    Return the ip and port number of the master with that name.",
    "FAILOVER <master-name>",
    "    Manually failover a master node without asking for agreement from other",
    "    Sentinels",
    "FLUSHCONFIG",
    "    Force Sentinel to rewrite its configuration on disk, including the current",
    "    Sentinel state.",
    "INFO-CACHE <master-name>",
    "    Return last cached INFO output from masters and all its replicas.",
    "IS-MASTER-DOWN-BY-ADDR <ip> <port> <current-epoch> <runid>",
    "    Check if the master specified by ip:port is down from current Sentinel's",
    "    point of view.",
    "MASTER <master-name>",
    "    Show the state and info of the specified master.",
    "MASTERS",
    "    Show a list of monitored masters and their state.",
    "MONITOR <name> <ip> <port> <quorum>",
    "    Start monitoring a new master with the specified name, ip, port and quorum.",
    "MYID",
    "    Return the ID of the Sentinel instance.",
    "PENDING-SCRIPTS",
    "    Get pending scripts information.",
    "REMOVE <master-name>",
    "    Remove master from Sentinel's monitor list.",
    "REPLICAS <master-name>",
    "    Show a list of replicas for this master and their state.",
    "RESET <pattern>",
    "    Reset masters for specific master name matching this pattern.",
    "SENTINELS <master-name>",
    "    Show a list of Sentinel instances for this master and their state.",
    "SET <master-name> <option> <value> [<option> <value> ...]",
    "    Set configuration parameters for certain masters.",
    "SIMULATE-FAILURE [CRASH-AFTER-ELECTION] [CRASH-AFTER-PROMOTION] [HELP]",
    "    Simulate a Sentinel crash.",
    "HELP",
    "    Print this help.",
];

/// Each subcommand's arity, as Redis 7.0's command table gives it (negative: at least).
const ARITY: &[(&str, i32)] = &[
    ("ckquorum", 3),
    ("config", -3),
    ("debug", -2),
    ("failover", 3),
    ("flushconfig", 2),
    ("get-master-addr-by-name", 3),
    ("help", 2),
    ("info-cache", -3),
    ("is-master-down-by-addr", 6),
    ("master", 3),
    ("masters", 2),
    ("monitor", 6),
    ("myid", 2),
    ("pending-scripts", 2),
    ("remove", 3),
    ("replicas", 3),
    ("reset", 3),
    ("sentinels", 3),
    ("set", -5),
    ("simulate-failure", -3),
    ("slaves", 3),
];

fn bulk(s: impl ToString) -> Reply {
    Reply::Bulk(s.to_string().into_bytes())
}

fn arity(sub: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for 'sentinel|{}' command",
        sub.to_ascii_lowercase()
    ))
}

/// Redis' glob matching (`*`, `?`, `[...]`, `\`), case-sensitive.
pub(crate) fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&c, tail)) = text.split_first() else {
                return false;
            };
            let (negate, mut p) = match rest.first() {
                Some(b'^') => (true, &rest[1..]),
                _ => (false, rest),
            };
            let mut matched = false;
            loop {
                match p {
                    [] => return false,
                    [b']', after @ ..] => {
                        p = after;
                        break;
                    }
                    [b'\\', e, after @ ..] => {
                        matched |= *e == c;
                        p = after;
                    }
                    [a, b'-', z, after @ ..] if *z != b']' => {
                        let (lo, hi) = if a <= z { (*a, *z) } else { (*z, *a) };
                        matched |= (lo..=hi).contains(&c);
                        p = after;
                    }
                    [a, after @ ..] => {
                        matched |= *a == c;
                        p = after;
                    }
                }
            }
            matched != negate && glob(p, tail)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob(&rest[1..], &text[1..])
        }
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

impl Sentinel {
    fn instance_reply(&self, inst: &Instance, master: Option<&crate::instance::Master>) -> Reply {
        let now = self.core.now;
        let mut f: Vec<(Reply, Reply)> = Vec::new();
        let mut put = |k: &str, v: Reply| f.push((bulk(k), v));
        put("name", bulk(&inst.name));
        put(
            "ip",
            bulk(inst.addr.announced(self.core.announce_hostnames)),
        );
        put("port", bulk(inst.addr.port));
        put("runid", bulk(inst.runid.as_deref().unwrap_or("")));
        put("flags", bulk(inst.flags_text()));
        put("link-pending-commands", bulk(inst.link.pending_commands));
        put("link-refcount", bulk(1));
        if let Some(m) = master.filter(|m| m.inst.has(FAILOVER_IN_PROGRESS)) {
            put("failover-state", bulk(m.failover_state.name()));
        }
        let ping_sent = if inst.link.act_ping_time != 0 {
            now - inst.link.act_ping_time
        } else {
            0
        };
        put("last-ping-sent", bulk(ping_sent));
        put("last-ok-ping-reply", bulk(now - inst.link.last_avail_time));
        put("last-ping-reply", bulk(now - inst.link.last_pong_time));
        if inst.has(S_DOWN) {
            put("s-down-time", bulk(now - inst.s_down_since));
        }
        if inst.has(O_DOWN) {
            put("o-down-time", bulk(now - inst.o_down_since));
        }
        put("down-after-milliseconds", bulk(inst.down_after));
        if inst.kind != Kind::Sentinel {
            let refresh = if inst.info_refresh != 0 {
                now - inst.info_refresh
            } else {
                0
            };
            put("info-refresh", bulk(refresh));
            put(
                "role-reported",
                bulk(if inst.role_reported == Kind::Master {
                    "master"
                } else {
                    "slave"
                }),
            );
            put("role-reported-time", bulk(now - inst.role_reported_time));
        }
        if let Some(m) = master {
            put("config-epoch", bulk(m.config_epoch));
            put("num-slaves", bulk(m.replicas.len()));
            put("num-other-sentinels", bulk(m.sentinels.len()));
            put("quorum", bulk(m.cfg.quorum));
            put("failover-timeout", bulk(m.cfg.failover_timeout));
            put("parallel-syncs", bulk(m.cfg.parallel_syncs));
            if let Some(s) = &m.cfg.notification_script {
                put("notification-script", bulk(s));
            }
            if let Some(s) = &m.cfg.client_reconfig_script {
                put("client-reconfig-script", bulk(s));
            }
        }
        if inst.kind == Kind::Replica {
            put("master-link-down-time", bulk(inst.master_link_down_time));
            put(
                "master-link-status",
                bulk(if inst.slave_master_link_up {
                    "ok"
                } else {
                    "err"
                }),
            );
            put(
                "master-host",
                bulk(inst.slave_master_host.as_deref().unwrap_or("?")),
            );
            put("master-port", bulk(inst.slave_master_port));
            put("slave-priority", bulk(inst.slave_priority));
            put("slave-repl-offset", bulk(inst.slave_repl_offset));
            put("replica-announced", bulk(u8::from(inst.replica_announced)));
        }
        if inst.kind == Kind::Sentinel {
            put("last-hello-message", bulk(now - inst.last_hello_time));
            put("voted-leader", bulk(inst.leader.as_deref().unwrap_or("?")));
            put("voted-leader-epoch", bulk(inst.leader_epoch));
        }
        Reply::Map(f)
    }

    fn master_or_err(&self, name: &[u8]) -> Result<usize, Reply> {
        let name = String::from_utf8_lossy(name);
        self.master_index(&name)
            .ok_or_else(|| Reply::err("ERR No such master with that name"))
    }

    /// `SENTINEL <subcommand> ...` (`argv[0]` is "SENTINEL"). Changes that must be
    /// saved queue `Action::FlushConfig`: the host saves before it sends the reply.
    pub fn command(&mut self, now: i64, argv: &[Vec<u8>]) -> Reply {
        let ah = self.core.announce_hostnames;
        self.core.now = now;
        let Some(sub) = argv.get(1) else {
            return Reply::err("ERR wrong number of arguments for 'sentinel' command");
        };
        let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
        let argc = argv.len();
        let text = |i: usize| String::from_utf8_lossy(&argv[i]).into_owned();
        match ARITY.iter().find(|(n, _)| *n == sub) {
            None => {
                return Reply::err(format!(
                    "ERR unknown subcommand '{}'. Try SENTINEL HELP.",
                    String::from_utf8_lossy(&argv[1])
                        .chars()
                        .take(128)
                        .collect::<String>()
                ))
            }
            Some((_, a))
                if (*a >= 0 && argc != *a as usize) || argc < a.unsigned_abs() as usize =>
            {
                return arity(&sub)
            }
            _ => {}
        }
        match sub.as_str() {
            "help" if argc == 2 => {
                Reply::Array(HELP.iter().map(|l| Reply::Status(l.to_string())).collect())
            }
            "masters" => {
                if argc != 2 {
                    return arity(&sub);
                }
                Reply::Array(
                    self.masters
                        .iter()
                        .map(|m| self.instance_reply(&m.inst, Some(m)))
                        .collect(),
                )
            }
            "master" => {
                if argc != 3 {
                    return arity(&sub);
                }
                match self.master_or_err(&argv[2]) {
                    Ok(mi) => self.instance_reply(&self.masters[mi].inst, Some(&self.masters[mi])),
                    Err(e) => e,
                }
            }
            "slaves" | "replicas" | "sentinels" => {
                if argc != 3 {
                    return arity(&sub);
                }
                match self.master_or_err(&argv[2]) {
                    Ok(mi) => {
                        let m = &self.masters[mi];
                        let list = if sub == "sentinels" {
                            &m.sentinels
                        } else {
                            &m.replicas
                        };
                        Reply::Array(
                            list.iter()
                                .filter(|i| i.kind != Kind::Replica || i.replica_announced)
                                .map(|i| self.instance_reply(i, None))
                                .collect(),
                        )
                    }
                    Err(e) => e,
                }
            }
            "myid" if argc == 2 => bulk(&self.core.myid),
            "is-master-down-by-addr" => {
                if argc != 6 {
                    return arity(&sub);
                }
                let port = text(3).parse::<i64>();
                let epoch = text(4).parse::<i64>();
                let (Ok(port), Ok(epoch)) = (port, epoch) else {
                    return Reply::err("ERR value is not an integer or out of range");
                };
                self.is_master_down_by_addr(&text(2), port, epoch, &text(5))
            }
            "reset" => {
                if argc != 3 {
                    return arity(&sub);
                }
                let mut n = 0;
                for mi in 0..self.masters.len() {
                    if glob(&argv[2], self.masters[mi].inst.name.as_bytes()) {
                        self.reset_master(mi, false, true);
                        n += 1;
                    }
                }
                if n > 0 {
                    self.core.flush_config();
                }
                Reply::Int(n)
            }
            "get-master-addr-by-name" => {
                if argc != 3 {
                    return arity(&sub);
                }
                match self.master(&text(2)) {
                    None => Reply::NilArray,
                    Some(m) => {
                        let a = m.current_addr();
                        let host = a.announced(self.core.announce_hostnames);
                        Reply::Array(vec![bulk(host), bulk(a.port)])
                    }
                }
            }
            "failover" => {
                if argc != 3 {
                    return arity(&sub);
                }
                let mi = match self.master_or_err(&argv[2]) {
                    Ok(mi) => mi,
                    Err(e) => return e,
                };
                if self.masters[mi].inst.has(FAILOVER_IN_PROGRESS) {
                    return Reply::err("INPROG Failover already in progress");
                }
                if self.select_replica(mi).is_none() {
                    return Reply::err("NOGOODSLAVE No suitable replica to promote");
                }
                let name = self.masters[mi].inst.name.clone();
                self.core.event(
                    Level::Debug,
                    "+user-failover",
                    format!("Executing user requested FAILOVER of '{name}'"),
                    None,
                );
                self.start_failover(mi);
                self.masters[mi].inst.flags |= FORCE_FAILOVER;
                Reply::ok()
            }
            "pending-scripts" => {
                if argc != 2 {
                    return arity(&sub);
                }
                Reply::Array(Vec::new())
            }
            "monitor" => {
                if argc != 6 {
                    return arity(&sub);
                }
                let Ok(quorum) = text(5).parse::<i64>() else {
                    return Reply::err("ERR Invalid quorum");
                };
                let Ok(port) = text(4).parse::<i64>() else {
                    return Reply::err("ERR Invalid port");
                };
                if quorum <= 0 {
                    return Reply::err("ERR Quorum must be 1 or greater.");
                }
                let host = text(3);
                if !self.core.resolve_hostnames && host.parse::<std::net::IpAddr>().is_err() {
                    return Reply::err("ERR Invalid IP address or hostname specified");
                }
                let quorum = u32::try_from(quorum).unwrap_or(u32::MAX);
                match self.add_master(&text(2), &host, port, quorum) {
                    Err(e) => Reply::err(format!("ERR {e}")),
                    Ok(mi) => {
                        self.core.flush_config();
                        let m = &mut self.masters[mi];
                        m.inst.link.last_reconn_time = now - self.core.periods.ping - 1;
                        let msg =
                            format!("{} quorum {}", describe(ah, &m.inst, None), m.cfg.quorum);
                        self.core.event(Level::Warning, "+monitor", msg, None);
                        Reply::ok()
                    }
                }
            }
            "flushconfig" => {
                if argc != 2 {
                    return arity(&sub);
                }
                self.core.flush_config();
                Reply::ok()
            }
            "remove" => {
                if argc != 3 {
                    return arity(&sub);
                }
                match self.master_or_err(&argv[2]) {
                    Err(e) => e,
                    Ok(mi) => {
                        let desc = describe(ah, &self.masters[mi].inst, None);
                        let script = self.masters[mi].cfg.notification_script.clone();
                        self.core
                            .event(Level::Warning, "-monitor", desc, script.as_deref());
                        self.reset_master(mi, false, false);
                        let mut m = self.masters.remove(mi);
                        crate::close_link(&mut self.core.out, &mut m.inst.link, None);
                        self.core.flush_config();
                        Reply::ok()
                    }
                }
            }
            "ckquorum" => {
                if argc != 3 {
                    return arity(&sub);
                }
                match self.master_or_err(&argv[2]) {
                    Err(e) => e,
                    Ok(mi) => self.ckquorum(mi),
                }
            }
            "set" => {
                if argc < 3 {
                    return arity(&sub);
                }
                self.set_command(argv)
            }
            "config" => {
                if argc < 3 {
                    return arity(&sub);
                }
                let op = text(2).to_ascii_lowercase();
                if op == "set" && argc == 5 {
                    self.config_set(&text(3), &text(4))
                } else if op == "get" && argc == 4 {
                    self.config_get(&argv[3])
                } else {
                    Reply::err(
                        "ERR Only SENTINEL CONFIG GET <option> / SET <option> <value> are supported.",
                    )
                }
            }
            "info-cache" => self.info_cache(&argv[2..]),
            "simulate-failure" => {
                let mut flags = 0;
                for a in &argv[2..] {
                    match String::from_utf8_lossy(a).to_ascii_lowercase().as_str() {
                        "crash-after-election" => flags |= SIMFAILURE_CRASH_AFTER_ELECTION,
                        "crash-after-promotion" => flags |= SIMFAILURE_CRASH_AFTER_PROMOTION,
                        "help" => {
                            return Reply::Array(vec![
                                bulk("crash-after-election"),
                                bulk("crash-after-promotion"),
                            ])
                        }
                        _ => return Reply::err("ERR Unknown failure simulation specified"),
                    }
                }
                self.core.simfailure = flags;
                Reply::ok()
            }
            "debug" => {
                if argc == 2 {
                    let p = &self.core.periods;
                    Reply::Map(
                        Periods::NAMES
                            .iter()
                            .map(|n| {
                                (
                                    bulk(n.to_ascii_uppercase()),
                                    bulk(p.get(n).unwrap_or_default()),
                                )
                            })
                            .collect(),
                    )
                } else {
                    self.debug_set(argv)
                }
            }
            _ => Reply::err(format!(
                "ERR unknown subcommand '{}'. Try SENTINEL HELP.",
                String::from_utf8_lossy(&argv[1])
                    .chars()
                    .take(128)
                    .collect::<String>()
            )),
        }
    }

    fn is_master_down_by_addr(&mut self, ip: &str, port: i64, epoch: i64, runid: &str) -> Reply {
        let asked = u16::try_from(port)
            .ok()
            .map(|p| self.core.learned_addr(ip, p));
        let mi = self
            .masters
            .iter()
            .position(|m| asked.as_ref().is_some_and(|a| m.inst.addr.matches(a)));
        let mut down = 0;
        let mut leader = None;
        let mut leader_epoch = 0;
        if let Some(mi) = mi {
            if !self.core.tilt && self.masters[mi].inst.has(S_DOWN) {
                down = 1;
            }
            if runid != "*" {
                let (l, e) = self.vote_leader(mi, u64::try_from(epoch).unwrap_or(0), runid);
                leader = l;
                leader_epoch = e;
            }
        }
        Reply::Array(vec![
            Reply::Int(down),
            bulk(leader.as_deref().unwrap_or("*")),
            Reply::Int(i64::try_from(leader_epoch).unwrap_or(i64::MAX)),
        ])
    }

    fn ckquorum(&self, mi: usize) -> Reply {
        let m = &self.masters[mi];
        let voters = m.sentinels.len() + 1;
        let usable = 1 + m
            .sentinels
            .iter()
            .filter(|s| s.flags & (S_DOWN | O_DOWN) == 0)
            .count();
        let no_quorum = usable < m.cfg.quorum as usize;
        let no_auth = usable < voters / 2 + 1;
        if !no_quorum && !no_auth {
            return Reply::Status(format!(
                "OK {usable} usable Sentinels. Quorum and failover authorization can be reached"
            ));
        }
        let mut e = format!("NOQUORUM {usable} usable Sentinels. ");
        if no_quorum {
            e.push_str(
                "Not enough available Sentinels to reach the specified quorum for this master",
            );
        }
        if no_auth {
            if no_quorum {
                e.push_str(". ");
            }
            e.push_str(
                "Not enough available Sentinels to reach the majority and authorize a failover",
            );
        }
        Reply::Error(e)
    }

    fn set_command(&mut self, argv: &[Vec<u8>]) -> Reply {
        let ah = self.core.announce_hostnames;
        let mi = match self.master_or_err(&argv[2]) {
            Ok(mi) => mi,
            Err(e) => return e,
        };
        let text = |i: usize| String::from_utf8_lossy(&argv[i]).into_owned();
        let mut changes = 0;
        let mut j = 3;
        let mut result = Reply::ok();
        while j < argv.len() {
            let option = text(j).to_ascii_lowercase();
            let more = argv.len() - 1 - j;
            let start = j;
            let mut redacted = false;
            let bad = |i: usize| {
                Reply::err(format!(
                    "ERR Invalid argument '{}' for SENTINEL SET '{}'",
                    text(i),
                    text(start)
                ))
            };
            let positive = |i: usize, min: i64| text(i).parse::<i64>().ok().filter(|v| *v >= min);
            match option.as_str() {
                "down-after-milliseconds" | "failover-timeout" | "parallel-syncs" | "quorum"
                    if more > 0 =>
                {
                    j += 1;
                    let Some(v) = positive(j, 1) else {
                        result = bad(j);
                        break;
                    };
                    match option.as_str() {
                        "down-after-milliseconds" => self.set_down_after(mi, v),
                        "failover-timeout" => self.masters[mi].cfg.failover_timeout = v,
                        "parallel-syncs" => self.masters[mi].cfg.parallel_syncs = v,
                        _ => self.masters[mi].cfg.quorum = u32::try_from(v).unwrap_or(u32::MAX),
                    }
                }
                "master-reboot-down-after-period" if more > 0 => {
                    j += 1;
                    let Some(v) = positive(j, 0) else {
                        result = bad(j);
                        break;
                    };
                    self.masters[mi].cfg.master_reboot_down_after = v;
                }
                "notification-script" | "client-reconfig-script" if more > 0 => {
                    j += 1;
                    let value = text(j);
                    if self.core.deny_scripts_reconfig {
                        result = Reply::err("ERR Reconfiguration of scripts path is denied for security reasons. Check the deny-scripts-reconfig configuration directive in your Sentinel configuration");
                        break;
                    }
                    if !value.is_empty() && !crate::config::script_usable(&value) {
                        result = Reply::err(if option == "notification-script" {
                            "ERR Notification script seems non existing or non executable"
                        } else {
                            "ERR Client reconfiguration script seems non existing or non executable"
                        });
                        break;
                    }
                    let v = Some(value).filter(|v| !v.is_empty());
                    if option == "notification-script" {
                        self.masters[mi].cfg.notification_script = v;
                    } else {
                        self.masters[mi].cfg.client_reconfig_script = v;
                    }
                }
                "auth-pass" | "auth-user" if more > 0 => {
                    j += 1;
                    let v = Some(text(j)).filter(|v| !v.is_empty());
                    if option == "auth-pass" {
                        self.masters[mi].cfg.auth_pass = v;
                        redacted = true;
                    } else {
                        self.masters[mi].cfg.auth_user = v;
                    }
                    self.drop_master_connections(mi);
                }
                "rename-command" if more > 1 => {
                    let (from, to) = (text(j + 1), text(j + 2));
                    j += 2;
                    if from.is_empty() || to.is_empty() {
                        result = bad(if to.is_empty() { j } else { j - 1 });
                        break;
                    }
                    let cfg = &mut self.masters[mi].cfg;
                    cfg.renamed.retain(|(f, _)| !f.eq_ignore_ascii_case(&from));
                    if !from.eq_ignore_ascii_case(&to) {
                        cfg.renamed.push((from, to));
                    }
                }
                _ => {
                    result = Reply::err(format!(
                        "ERR Unknown option or number of arguments for SENTINEL SET '{}'",
                        text(j)
                    ));
                    break;
                }
            }
            changes += 1;
            let desc = describe(ah, &self.masters[mi].inst, None);
            let script = self.masters[mi].cfg.notification_script.clone();
            let msg = match j - start + 1 {
                2 => format!(
                    "{desc} {} {}",
                    text(start),
                    if redacted {
                        "******".into()
                    } else {
                        text(start + 1)
                    }
                ),
                3 => format!(
                    "{desc} {} {} {}",
                    text(start),
                    text(start + 1),
                    text(start + 2)
                ),
                _ => format!("{desc} {}", text(start)),
            };
            self.core
                .event(Level::Warning, "+set", msg, script.as_deref());
            j += 1;
        }
        if changes > 0 {
            self.core.flush_config();
        }
        result
    }

    fn drop_master_connections(&mut self, mi: usize) {
        let out = &mut self.core.out;
        let m = &mut self.masters[mi];
        crate::close_link(out, &mut m.inst.link, None);
        for r in &mut m.replicas {
            crate::close_link(out, &mut r.link, None);
        }
    }

    fn config_set(&mut self, option: &str, value: &str) -> Reply {
        let bad = || {
            Reply::err(format!(
                "ERR Invalid value '{value}' to SENTINEL CONFIG SET '{option}'"
            ))
        };
        let yes_no = |v: &str| match v.to_ascii_lowercase().as_str() {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        };
        let mut drop_conns = false;
        match option.to_ascii_lowercase().as_str() {
            "resolve-hostnames" => match yes_no(value) {
                Some(v) => self.core.resolve_hostnames = v,
                None => return bad(),
            },
            "announce-hostnames" => match yes_no(value) {
                Some(v) => self.core.announce_hostnames = v,
                None => return bad(),
            },
            "announce-ip" => {
                self.core.announce_ip = Some(value.to_string()).filter(|v| !v.is_empty())
            }
            "announce-port" => match value.parse::<u16>() {
                Ok(p) => self.core.announce_port = p,
                Err(_) => return bad(),
            },
            "sentinel-user" => {
                self.core.sentinel_user = Some(value.to_string()).filter(|v| !v.is_empty());
                drop_conns = true;
            }
            "sentinel-pass" => {
                self.core.sentinel_pass = Some(value.to_string()).filter(|v| !v.is_empty());
                drop_conns = true;
            }
            _ => {
                return Reply::err(format!(
                    "ERR Invalid argument '{option}' to SENTINEL CONFIG SET"
                ))
            }
        }
        self.core.flush_config();
        if drop_conns {
            let out = &mut self.core.out;
            for m in &mut self.masters {
                for s in &mut m.sentinels {
                    crate::close_link(out, &mut s.link, None);
                }
            }
        }
        Reply::ok()
    }

    fn config_get(&self, pattern: &[u8]) -> Reply {
        let c = &self.core;
        let yn = |b: bool| if b { "yes" } else { "no" };
        let all = [
            ("resolve-hostnames", yn(c.resolve_hostnames).to_string()),
            ("announce-hostnames", yn(c.announce_hostnames).to_string()),
            ("announce-ip", c.announce_ip.clone().unwrap_or_default()),
            ("announce-port", c.announce_port.to_string()),
            ("sentinel-user", c.sentinel_user.clone().unwrap_or_default()),
            ("sentinel-pass", c.sentinel_pass.clone().unwrap_or_default()),
        ];
        let lower = pattern.to_ascii_lowercase();
        Reply::Map(
            all.into_iter()
                .filter(|(k, _)| glob(&lower, k.as_bytes()))
                .map(|(k, v)| (bulk(k), bulk(v)))
                .collect(),
        )
    }

    fn debug_set(&mut self, argv: &[Vec<u8>]) -> Reply {
        let mut j = 2;
        let mut periods = self.core.periods.clone();
        while j < argv.len() {
            let option = String::from_utf8_lossy(&argv[j]).into_owned();
            let more = argv.len() - 1 - j;
            let Some(slot) = periods.get_mut(&option).filter(|_| more > 0) else {
                return Reply::err(format!(
                    "ERR Unknown option or number of arguments for SENTINEL DEBUG '{option}'"
                ));
            };
            j += 1;
            let value = String::from_utf8_lossy(&argv[j]).into_owned();
            match value.parse::<i64>() {
                Ok(v) if v > 0 => *slot = v,
                _ => {
                    return Reply::err(format!(
                        "ERR Invalid argument '{value}' for SENTINEL DEBUG '{option}'"
                    ))
                }
            }
            j += 1;
        }
        self.core.periods = periods;
        Reply::ok()
    }

    fn info_cache(&self, names: &[Vec<u8>]) -> Reply {
        let now = self.core.now;
        let selected: Vec<&crate::instance::Master> = if names.is_empty() {
            self.masters.iter().collect()
        } else {
            self.masters
                .iter()
                .filter(|m| names.iter().any(|n| n == m.inst.name.as_bytes()))
                .collect()
        };
        let entry = |i: &Instance| {
            let age = if i.info_refresh != 0 {
                now - i.info_refresh
            } else {
                0
            };
            Reply::Array(vec![
                Reply::Int(age),
                i.info.as_ref().map_or(Reply::Nil, bulk),
            ])
        };
        let mut out = Vec::new();
        for m in selected {
            out.push(bulk(&m.inst.name));
            let mut list = vec![entry(&m.inst)];
            list.extend(m.replicas.iter().map(entry));
            out.push(Reply::Array(list));
        }
        Reply::Array(out)
    }

    /// The `# Sentinel` section of INFO (without a trailing blank line).
    pub fn info_section(&self, now: i64, running_scripts: usize, queued_scripts: usize) -> String {
        let c = &self.core;
        let mut s = format!(
            "# Sentinel\r\nsentinel_masters:{}\r\nsentinel_tilt:{}\r\nsentinel_tilt_since_seconds:{}\r\nsentinel_running_scripts:{}\r\nsentinel_scripts_queue_length:{}\r\nsentinel_simulate_failure_flags:{}\r\n",
            self.masters.len(),
            u8::from(c.tilt),
            if c.tilt { (now - c.tilt_start) / 1000 } else { -1 },
            running_scripts,
            queued_scripts,
            c.simfailure,
        );
        for (i, m) in self.masters.iter().enumerate() {
            let status = if m.inst.has(O_DOWN) {
                "odown"
            } else if m.inst.has(S_DOWN) {
                "sdown"
            } else {
                "ok"
            };
            s.push_str(&format!(
                "master{i}:name={},status={status},address={}:{},slaves={},sentinels={}\r\n",
                m.inst.name,
                m.inst.addr.announced(c.announce_hostnames),
                m.inst.addr.port,
                m.replicas.len(),
                m.sentinels.len() + 1
            ));
        }
        s
    }

    /// ROLE on a sentinel: `sentinel` and the names of the monitored masters.
    pub fn role(&self) -> Reply {
        Reply::Array(vec![
            bulk("sentinel"),
            Reply::Array(self.masters.iter().map(|m| bulk(&m.inst.name)).collect()),
        ])
    }

    /// PUBLISH on a sentinel: only hellos are accepted, and processed at once.
    pub fn publish(&mut self, now: i64, channel: &[u8], message: &[u8]) -> Reply {
        self.core.now = now;
        if channel != HELLO_CHANNEL.as_bytes() {
            return Reply::err("ERR Only HELLO messages are accepted by Sentinel instances.");
        }
        let text = String::from_utf8_lossy(message).into_owned();
        self.process_hello(&text);
        Reply::Int(1)
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_like_redis() {
        assert!(glob(b"*", b"mymaster"));
        assert!(glob(b"my*", b"mymaster"));
        assert!(glob(b"m?master", b"mymaster"));
        assert!(glob(b"[a-z]ymaster", b"mymaster"));
        assert!(!glob(b"[^m]ymaster", b"mymaster"));
        assert!(!glob(b"other", b"mymaster"));
        assert!(glob(b"announce-*", b"announce-ip"));
    }
}
