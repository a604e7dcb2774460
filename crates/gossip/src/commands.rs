//! CLUSTER subcommands, with Redis 7.0's arities and error texts. What needs the
//! keyspace (counting and listing keys of a slot) comes through [`Keys`].

use carmine_slots::{key_slot, Slot, SLOT_COUNT};

use crate::cluster::{Action, Cluster, Level};
use crate::codec::flag;
use crate::node::NodeIdx;
use crate::Reply;

/// The keyspace as CLUSTER sees it (database 0: the only one in cluster mode).
pub trait Keys {
    fn count_in_slot(&self, slot: Slot) -> usize;
    fn keys_in_slot(&self, slot: Slot, count: usize) -> Vec<Vec<u8>>;
    fn db_size(&self) -> usize;
}

/// (name, arity as Redis' command table gives it: negative = at least).
const SUBCOMMANDS: &[(&str, i32)] = &[
    ("addslots", -3),
    ("addslotsrange", -4),
    ("bumpepoch", 2),
    ("count-failure-reports", 3),
    ("countkeysinslot", 3),
    ("delslots", -3),
    ("delslotsrange", -4),
    ("failover", -2),
    ("flushslots", 2),
    ("forget", 3),
    ("getkeysinslot", 4),
    ("help", 2),
    ("info", 2),
    ("keyslot", 3),
    ("links", 2),
    ("meet", -4),
    ("myid", 2),
    ("nodes", 2),
    ("replicas", 3),
    ("replicate", 3),
    ("reset", -2),
    ("saveconfig", 2),
    ("set-config-epoch", 3),
    ("setslot", -4),
    ("shards", 2),
    ("slaves", 3),
    ("slots", 2),
];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn err(s: impl Into<String>) -> Reply {
    Reply::Error(s.into())
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn slot_arg(b: &[u8]) -> Result<Slot, Reply> {
    match parse_i64(b) {
        Some(v) if (0..SLOT_COUNT as i64).contains(&v) => Ok(v as Slot),
        _ => Err(err("ERR Invalid or out of range slot")),
    }
}

fn help() -> Reply {
    let lines = [
        "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ADDSLOTS <slot> [<slot> ...]",
        "    Assign slots to current node.",
        "ADDSLOTSRANGE <start slot> <end slot> [<start slot> <end slot> ...]",
        "    Assign slots which are between <start-slot> and <end-slot> to current node.",
        "BUMPEPOCH",
        "    Advance the cluster config epoch.",
        "COUNT-FAILURE-REPORTS <node-id>",
        "    Return number of failure reports for <node-id>.",
        "COUNTKEYSINSLOT <slot>",
        "    Return the number of keys in <slot>.",
        "DELSLOTS <slot> [<slot> ...]",
        "    Delete slots information from current node.",
        "DELSLOTSRANGE <start slot> <end slot> [<start slot> <end slot> ...]",
        "    Delete slots information which are between <start-slot> and <end-slot> from current node.",
        "FAILOVER [FORCE|TAKEOVER]",
        "    Promote current replica node to being a master.",
        "FORGET <node-id>",
        "    Remove a node from the cluster.",
        "GETKEYSINSLOT <slot> <count>",
        "    Return key names stored by current node in a slot.",
        "FLUSHSLOTS",
        "    Delete current node own slots information.",
        "INFO",
        "    Return information about the cluster.",
        "KEYSLOT <key>",
        "    Return the hash slot for <key>.",
        "MEET <ip> <port> [<bus-port>]",
        "    Connect nodes into a working cluster.",
        "MYID",
        "    Return the node id.",
        "NODES",
        "    Return cluster configuration seen by node. Output format:",
        "    <id> <ip:port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
        "REPLICATE <node-id>",
        "    Configure current node as replica to <node-id>.",
        "RESET [HARD|SOFT]",
        "    Reset current node (default: soft).",
        "SET-CONFIG-EPOCH <epoch>",
        "    Set config epoch of current node.",
        "SETSLOT <slot> (IMPORTING <node-id>|MIGRATING <node-id>|STABLE|NODE <node-id>)",
        "    Set slot state.",
        "REPLICAS <node-id>",
        "    Return <node-id> replicas.",
        "SAVECONFIG",
        "    Force saving cluster configuration on disk.",
        "SLOTS",
        "    Return information about slots range mappings. Each range is made of:",
        "    start, end, master and replicas IP addresses, ports and ids",
        "SHARDS",
        "    Return information about slot range mappings and the nodes associated with them.",
        "LINKS",
        "    Return information about all network links between this node and its peers.",
        "    Output format is an array where each array element is a map containing attributes of a link",
        "HELP",
        "    Prints this help.",
    ];
    Reply::Array(
        lines
            .iter()
            .map(|l| Reply::Status((*l).to_string()))
            .collect(),
    )
}

impl Cluster {
    fn node_arg(&self, b: &[u8]) -> Option<NodeIdx> {
        self.lookup(b)
    }

    /// Runs `CLUSTER argv[1..]`. The actions (links to open, nodes.conf to write, a
    /// master to follow) are for the driver.
    pub fn command(&mut self, now: u64, argv: &[&[u8]], keys: &dyn Keys) -> (Reply, Vec<Action>) {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        let reply = self.dispatch(now, argv, keys, &mut out);
        self.after_command(&mut out);
        (reply, out)
    }

    fn dispatch(
        &mut self,
        now: u64,
        argv: &[&[u8]],
        keys: &dyn Keys,
        out: &mut Vec<Action>,
    ) -> Reply {
        let Some(sub) = argv.get(1) else {
            return err("ERR wrong number of arguments for 'cluster' command");
        };
        let name = text(sub).to_ascii_lowercase();
        let Some(&(_, arity)) = SUBCOMMANDS.iter().find(|(n, _)| *n == name) else {
            return err(format!(
                "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
                text(sub)
            ));
        };
        let n = argv.len() as i32;
        if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
            return err(format!(
                "ERR wrong number of arguments for 'cluster|{name}' command"
            ));
        }
        let me = self.myself_idx();
        match name.as_str() {
            "help" => help(),
            "myid" => Reply::Bulk(self.my_id().to_vec()),
            "nodes" => Reply::Verbatim(self.nodes_text()),
            "info" => Reply::Verbatim(self.info_text()),
            "slots" => self.slots_reply(),
            "shards" => self.shards_reply(),
            "links" => self.links_reply(),
            "keyslot" => Reply::Int(i64::from(key_slot(argv[2]))),
            "meet" => {
                if n > 5 {
                    return err("ERR wrong number of arguments for 'cluster|meet' command");
                }
                let Some(port) = parse_i64(argv[3]) else {
                    return err(format!(
                        "ERR Invalid TCP base port specified: {}",
                        text(argv[3])
                    ));
                };
                let cport = match argv.get(4) {
                    Some(c) => match parse_i64(c) {
                        Some(c) => c,
                        None => {
                            return err(format!("ERR Invalid TCP bus port specified: {}", text(c)))
                        }
                    },
                    None => port + 10000,
                };
                let ip = text(argv[2]);
                let valid = ip.parse::<std::net::IpAddr>().is_ok()
                    && (1..=65535).contains(&port)
                    && (1..=65535).contains(&cport);
                if !valid {
                    return err(format!(
                        "ERR Invalid node address specified: {}:{}",
                        ip,
                        text(argv[3])
                    ));
                }
                let ip = normalize_ip(&ip);
                self.start_handshake(now, &ip, port as u16, cport as u16);
                Reply::ok()
            }
            "addslots" | "delslots" => {
                let add = name == "addslots";
                let mut slots = Vec::new();
                for a in &argv[2..] {
                    match slot_arg(a) {
                        Ok(s) => slots.push(s),
                        Err(e) => return e,
                    }
                }
                self.change_slots(&slots, add)
            }
            "addslotsrange" | "delslotsrange" => {
                if argv.len() % 2 == 1 {
                    return err(format!(
                        "ERR wrong number of arguments for 'cluster|{name}' command"
                    ));
                }
                let add = name == "addslotsrange";
                let mut slots = Vec::new();
                for pair in argv[2..].chunks(2) {
                    let (a, b) = match (slot_arg(pair[0]), slot_arg(pair[1])) {
                        (Ok(a), Ok(b)) => (a, b),
                        (Err(e), _) | (_, Err(e)) => return e,
                    };
                    if a > b {
                        return err(format!(
                            "ERR start slot number {a} is greater than end slot number {b}"
                        ));
                    }
                    slots.extend(a..=b);
                }
                self.change_slots(&slots, add)
            }
            "flushslots" => {
                if keys.db_size() != 0 {
                    return err("ERR DB must be empty to perform CLUSTER FLUSHSLOTS.");
                }
                for s in 0..SLOT_COUNT as Slot {
                    if self.slot_map().owner(s) == Some(&me) {
                        self.del_slot(s);
                    }
                }
                Reply::ok()
            }
            "setslot" => self.setslot(now, argv, keys, out),
            "bumpepoch" => {
                let bumped = self.bump_epoch();
                let e = self.myself().config_epoch;
                Reply::Status(format!("{} {e}", if bumped { "BUMPED" } else { "STILL" }))
            }
            "set-config-epoch" => {
                let Some(e) = parse_i64(argv[2]) else {
                    return err("ERR value is not an integer or out of range");
                };
                if e < 0 {
                    err(format!("ERR Invalid config epoch specified: {e}"))
                } else if self.node_count() > 1 {
                    err("ERR The user can assign a config epoch only when the node does not know any other node.")
                } else if self.myself().config_epoch != 0 {
                    err("ERR Node config epoch is already non-zero")
                } else {
                    self.set_config_epoch(e as u64);
                    out.push(Action::Log(
                        Level::Warning,
                        format!("configEpoch set to {e} via CLUSTER SET-CONFIG-EPOCH"),
                    ));
                    Reply::ok()
                }
            }
            "countkeysinslot" => match parse_i64(argv[2]) {
                Some(s) if (0..SLOT_COUNT as i64).contains(&s) => {
                    Reply::Int(keys.count_in_slot(s as Slot) as i64)
                }
                _ => err("ERR Invalid slot"),
            },
            "getkeysinslot" => match (parse_i64(argv[2]), parse_i64(argv[3])) {
                (Some(s), Some(c)) if (0..SLOT_COUNT as i64).contains(&s) && c >= 0 => {
                    Reply::Array(
                        keys.keys_in_slot(s as Slot, usize::try_from(c).unwrap_or(usize::MAX))
                            .into_iter()
                            .map(Reply::Bulk)
                            .collect(),
                    )
                }
                _ => err("ERR Invalid slot or number of keys"),
            },
            "forget" => {
                let Some(t) = self.node_arg(argv[2]) else {
                    return err(format!("ERR Unknown node {}", text(argv[2])));
                };
                if t == me {
                    return err("ERR I tried hard but I can't forget myself...");
                }
                if self.myself().is_replica() && self.myself().master == Some(t) {
                    return err("ERR Can't forget my master!");
                }
                self.forget(t, now, out);
                Reply::ok()
            }
            "replicate" => {
                let Some(t) = self.node_arg(argv[2]) else {
                    return err(format!("ERR Unknown node {}", text(argv[2])));
                };
                if t == me {
                    return err("ERR Can't replicate myself");
                }
                if self.node(t).is_some_and(|n| n.is_replica()) {
                    return err("ERR I can only replicate a master, not a replica.");
                }
                if self.myself().is_master()
                    && (self.myself().num_slots != 0 || keys.db_size() != 0)
                {
                    return err(
                        "ERR To set a master the node must be empty and without assigned slots.",
                    );
                }
                self.set_my_master(t, out);
                Reply::ok()
            }
            "replicas" | "slaves" => {
                let Some(t) = self.node_arg(argv[2]) else {
                    return err(format!("ERR Unknown node {}", text(argv[2])));
                };
                if self.node(t).is_some_and(|n| n.is_replica()) {
                    return err("ERR The specified node is not a master");
                }
                Reply::Array(
                    self.replicas_of(t)
                        .into_iter()
                        .map(|r| Reply::Bulk(self.node_line(r, false).into_bytes()))
                        .collect(),
                )
            }
            "count-failure-reports" => {
                let Some(t) = self.node_arg(argv[2]) else {
                    return err(format!("ERR Unknown node {}", text(argv[2])));
                };
                let validity = self.config.node_timeout * 2;
                let count = self.node(t).map_or(0, |n| {
                    n.fail_reports
                        .iter()
                        .filter(|(_, t)| now.saturating_sub(*t) <= validity)
                        .count()
                });
                Reply::Int(count as i64)
            }
            "saveconfig" => {
                out.push(self.save_action(true));
                Reply::ok()
            }
            "reset" => {
                let hard = match argv.get(2).map(|a| text(a).to_ascii_lowercase()) {
                    None => false,
                    Some(a) if a == "hard" => true,
                    Some(a) if a == "soft" => false,
                    Some(_) => return err("ERR syntax error"),
                };
                if n > 3 {
                    return err("ERR wrong number of arguments for 'cluster|reset' command");
                }
                if self.myself().is_master() && keys.db_size() != 0 {
                    return err(
                        "ERR CLUSTER RESET can't be called with master nodes containing keys",
                    );
                }
                self.reset(hard, out);
                Reply::ok()
            }
            "failover" => {
                let mode = match argv.get(2).map(|a| text(a).to_ascii_lowercase()) {
                    None => None,
                    Some(m) if m == "force" || m == "takeover" => Some(m),
                    Some(_) => return err("ERR syntax error"),
                };
                if n > 3 {
                    return err("ERR syntax error");
                }
                match self.start_manual_failover(now, mode.as_deref(), out) {
                    Ok(()) => Reply::ok(),
                    Err(e) => err(e),
                }
            }
            _ => err(format!(
                "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
                text(sub)
            )),
        }
    }

    fn change_slots(&mut self, slots: &[Slot], add: bool) -> Reply {
        let me = self.myself_idx();
        let mut seen = vec![false; SLOT_COUNT];
        for &s in slots {
            let owner = self.slot_map().owner(s).copied();
            if add && owner.is_some() {
                return err(format!("ERR Slot {s} is already busy"));
            }
            if !add && owner.is_none() {
                return err(format!("ERR Slot {s} is already unassigned"));
            }
            if std::mem::replace(&mut seen[s as usize], true) {
                return err(format!("ERR Slot {s} specified multiple times"));
            }
        }
        for &s in slots {
            if add {
                // The slot is ours now: an importing mark on it is over.
                self.mark_slot(s, None, Some(None));
                self.set_slot_owner(s, me);
            } else {
                self.del_slot(s);
            }
        }
        Reply::ok()
    }

    fn setslot(
        &mut self,
        now: u64,
        argv: &[&[u8]],
        keys: &dyn Keys,
        out: &mut Vec<Action>,
    ) -> Reply {
        let me = self.myself_idx();
        if self.myself().is_replica() {
            return err("ERR Please use SETSLOT only with masters.");
        }
        let slot = match slot_arg(argv[2]) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let action = text(argv[3]).to_ascii_lowercase();
        let owner = self.slot_map().owner(slot).copied();
        let target = |c: &Cluster, unknown: &str| -> Result<NodeIdx, Reply> {
            let arg = argv.get(4).copied().unwrap_or_default();
            let Some(t) = c.node_arg(arg) else {
                return Err(err(format!("ERR {unknown} {}", text(arg))));
            };
            if c.node(t).is_some_and(|n| n.has(flag::SLAVE)) {
                return Err(err("ERR Target node is not a master"));
            }
            Ok(t)
        };
        match (action.as_str(), argv.len()) {
            ("migrating", 5) => {
                if owner != Some(me) {
                    return err(format!("ERR I'm not the owner of hash slot {slot}"));
                }
                match target(self, "I don't know about node") {
                    Ok(t) => self.mark_slot(slot, Some(Some(t)), None),
                    Err(e) => return e,
                }
            }
            ("importing", 5) => {
                if owner == Some(me) {
                    return err(format!("ERR I'm already the owner of hash slot {slot}"));
                }
                match target(self, "I don't know about node") {
                    Ok(t) => self.mark_slot(slot, None, Some(Some(t))),
                    Err(e) => return e,
                }
            }
            ("stable", 4) => self.mark_slot(slot, Some(None), Some(None)),
            ("node", 5) => {
                let t = match target(self, "Unknown node") {
                    Ok(t) => t,
                    Err(e) => return e,
                };
                let count = keys.count_in_slot(slot);
                if owner == Some(me) && t != me && count != 0 {
                    return err(format!(
                        "ERR Can't assign hashslot {slot} to a different node while I still hold keys for this hash slot."
                    ));
                }
                let migrating = self
                    .slot_map()
                    .get(slot)
                    .and_then(|i| i.migrating_to)
                    .is_some();
                if count == 0 && migrating {
                    self.mark_slot(slot, Some(None), None);
                }
                let was_mine = owner == Some(me);
                self.set_slot_owner(slot, t);
                if was_mine
                    && t != me
                    && self.myself().num_slots == 0
                    && self.config.allow_replica_migration
                {
                    let id = self
                        .node(t)
                        .map(|n| n.id_str().to_string())
                        .unwrap_or_default();
                    out.push(Action::Log(Level::Warning, format!("Configuration change detected. Reconfiguring myself as a replica of {id}")));
                    self.set_my_master(t, out);
                }
                let importing = self
                    .slot_map()
                    .get(slot)
                    .and_then(|i| i.importing_from)
                    .is_some();
                if t == me && importing {
                    if self.bump_epoch() {
                        out.push(Action::Log(
                            Level::Warning,
                            format!("configEpoch updated after importing slot {slot}"),
                        ));
                    }
                    self.mark_slot(slot, None, Some(None));
                    self.broadcast_pong(now, out);
                }
            }
            _ => {
                return err(
                    "ERR Invalid CLUSTER SETSLOT action or number of arguments. Try CLUSTER HELP",
                )
            }
        }
        Reply::ok()
    }
}

/// `::ffff:1.2.3.4` and friends are stored as Redis stores them: as written, except that
/// IPv4-mapped IPv6 collapses to the IPv4 form.
fn normalize_ip(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        Ok(v4) => v4.to_string(),
        Err(_) => ip.to_string(),
    }
}
