//! Deterministic simulation of Sentinel groups: 3-7 sentinels watching a master and its
//! replicas, in one process with a fake clock and seeded randomness. Messages are
//! delayed (and so reordered across connections), connections are reset at random (the
//! TCP form of a lost message), sentinels are partitioned from each other and from the
//! master, and clocks jump. Invariants are checked at every step:
//! - never two sentinels elected leader in one epoch;
//! - never two different replicas selected for promotion in one epoch;
//! - once faults stop and a majority can talk, a failover completes: every sentinel
//!   names the same new master, and that node is a master;
//! - a sentinel whose clock jumps enters TILT.
//!
//! `SENTINEL_SIM_SEEDS=5000 cargo test -p carmine-sentinel --release --test simulation`
//! runs the long version; CI runs a short seeded one.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use carmine_sentinel::{Action, ConnId, Event, Level, Reply, Sentinel};

const NAME: &str = "mymaster";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
enum Endpoint {
    Sentinel(usize),
    Node(usize),
}

#[derive(Debug)]
enum Delivery {
    /// An event for a sentinel's own connection.
    ToSentinel(usize, Event),
    /// A command arriving at the far end of a sentinel's connection.
    Command(usize, ConnId, Vec<Vec<u8>>),
}

struct Node {
    up: bool,
    runid: String,
    /// None: master; Some(i): replica of node i.
    master_of: Option<usize>,
    offset: u64,
    /// Connections (sentinel, conn) subscribed to the hello channel.
    subscribers: Vec<(usize, ConnId)>,
    /// Connections inside MULTI, with their queued commands.
    multi: HashMap<(usize, ConnId), Vec<Vec<Vec<u8>>>>,
}

struct Conn {
    target: Endpoint,
    /// Deliveries on one connection keep their order (TCP); this is the last one's time.
    last: i64,
    open: bool,
}

struct World {
    rng: Rng,
    now: i64,
    seq: u64,
    queue: BinaryHeap<Reverse<(i64, u64, usize)>>,
    deliveries: HashMap<usize, Delivery>,
    sentinels: Vec<Sentinel>,
    skew: Vec<i64>,
    nodes: Vec<Node>,
    conns: HashMap<(usize, ConnId), Conn>,
    /// Pairs that cannot talk.
    cut: HashSet<(Endpoint, Endpoint)>,
    faults: bool,
    /// epoch -> leader run id, from +elected-leader.
    leaders: BTreeMap<u64, String>,
    /// epoch -> replica selected for promotion.
    selected: BTreeMap<u64, String>,
    tilts: Vec<bool>,
}

fn node_addr(i: usize) -> (String, u16) {
    (format!("10.0.0.{}", i + 1), 6379)
}

fn sentinel_addr(i: usize) -> (String, u16) {
    (format!("10.0.1.{}", i + 1), 26379)
}

fn bulk(s: impl AsRef<[u8]>) -> Reply {
    Reply::Bulk(s.as_ref().to_vec())
}

impl World {
    fn new(seed: u64, sentinels: usize, replicas: usize) -> World {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut nodes = Vec::new();
        for i in 0..=replicas {
            nodes.push(Node {
                up: true,
                runid: format!("{:040x}", 0xaaaa_0000 + i as u64),
                master_of: if i == 0 { None } else { Some(0) },
                offset: 1000,
                subscribers: Vec::new(),
                multi: HashMap::new(),
            });
        }
        let quorum = (sentinels / 2 + 1).to_string();
        let mut list = Vec::new();
        for i in 0..sentinels {
            let id = format!(
                "{:040x}",
                0x5e00_0000 + i as u64 * 7919 + (rng.next() % 1000)
            );
            let mut s = Sentinel::new(id, 26379, rng.next());
            let (h, p) = node_addr(0);
            for d in [
                vec!["monitor", NAME, &h, &p.to_string(), &quorum],
                vec!["down-after-milliseconds", NAME, "2000"],
                vec!["failover-timeout", NAME, "6000"],
            ] {
                s.configure(&d).expect("config");
            }
            list.push(s);
        }
        let n = list.len();
        let mut w = World {
            rng,
            now: 1_000_000,
            seq: 0,
            queue: BinaryHeap::new(),
            deliveries: HashMap::new(),
            sentinels: list,
            skew: vec![0; n],
            nodes,
            conns: HashMap::new(),
            cut: HashSet::new(),
            faults: false,
            leaders: BTreeMap::new(),
            selected: BTreeMap::new(),
            tilts: vec![false; n],
        };
        for i in 0..n {
            let now = w.clock(i);
            w.sentinels[i].start(now);
            let a = w.sentinels[i].take_actions();
            w.perform(i, a);
        }
        w
    }

    fn clock(&self, s: usize) -> i64 {
        self.now + self.skew[s]
    }

    fn schedule(&mut self, at: i64, d: Delivery) {
        self.seq += 1;
        let key = self.seq as usize;
        self.deliveries.insert(key, d);
        self.queue.push(Reverse((at, self.seq, key)));
    }

    fn latency(&mut self) -> i64 {
        if self.faults && self.rng.chance(20) {
            200 + self.rng.below(1300) as i64
        } else {
            1 + self.rng.below(30) as i64
        }
    }

    fn can_talk(&self, a: Endpoint, b: Endpoint) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    fn reachable(&self, s: usize, t: Endpoint) -> bool {
        let up = match t {
            Endpoint::Node(i) => self.nodes[i].up,
            Endpoint::Sentinel(_) => true,
        };
        up && self.can_talk(Endpoint::Sentinel(s), t)
    }

    /// Sends over a connection in order; a broken one is reported closed instead.
    fn over(&mut self, s: usize, conn: ConnId, make: Delivery) {
        let lat = self.latency();
        let reset = self.faults && self.rng.chance(3);
        let Some(c) = self.conns.get_mut(&(s, conn)) else {
            return;
        };
        if !c.open {
            return;
        }
        let at = (self.now + lat).max(c.last);
        c.last = at;
        let target = c.target;
        if reset || !self.reachable(s, target) {
            if let Some(c) = self.conns.get_mut(&(s, conn)) {
                c.open = false;
            }
            self.drop_subscriber(s, conn);
            self.schedule(
                at + 5,
                Delivery::ToSentinel(
                    s,
                    Event::Closed {
                        conn,
                        reason: "reset".into(),
                    },
                ),
            );
            return;
        }
        self.schedule(at, make);
    }

    fn drop_subscriber(&mut self, s: usize, conn: ConnId) {
        for n in &mut self.nodes {
            n.subscribers.retain(|x| *x != (s, conn));
            n.multi.remove(&(s, conn));
        }
    }

    fn reply(&mut self, s: usize, conn: ConnId, reply: Reply) {
        self.over(
            s,
            conn,
            Delivery::ToSentinel(s, Event::Reply { conn, reply }),
        );
    }

    fn perform(&mut self, s: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Connect { conn, host, port } => {
                    let target = (0..self.nodes.len())
                        .find(|&i| node_addr(i) == (host.clone(), port))
                        .map(Endpoint::Node)
                        .or_else(|| {
                            (0..self.sentinels.len())
                                .find(|&i| sentinel_addr(i) == (host.clone(), port))
                                .map(Endpoint::Sentinel)
                        });
                    let lat = self.latency();
                    let at = self.now + lat;
                    match target.filter(|t| self.reachable(s, *t)) {
                        Some(t) => {
                            self.conns.insert(
                                (s, conn),
                                Conn {
                                    target: t,
                                    last: at,
                                    open: true,
                                },
                            );
                            let local_ip = sentinel_addr(s).0;
                            self.schedule(
                                at,
                                Delivery::ToSentinel(s, Event::Connected { conn, local_ip }),
                            );
                        }
                        None => {
                            self.conns.insert(
                                (s, conn),
                                Conn {
                                    target: target.unwrap_or(Endpoint::Node(usize::MAX)),
                                    last: at,
                                    open: false,
                                },
                            );
                            self.schedule(
                                at,
                                Delivery::ToSentinel(
                                    s,
                                    Event::Closed {
                                        conn,
                                        reason: "refused".into(),
                                    },
                                ),
                            );
                        }
                    }
                }
                Action::Send { conn, argv } => self.over(s, conn, Delivery::Command(s, conn, argv)),
                Action::Close { conn } => {
                    if let Some(c) = self.conns.get_mut(&(s, conn)) {
                        c.open = false;
                    }
                    self.drop_subscriber(s, conn);
                }
                Action::Event { channel, .. } => self.on_event(s, &channel),
                Action::RunScript { .. } | Action::FlushConfig | Action::Crash => {}
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }

    fn on_event(&mut self, s: usize, channel: &str) {
        let id = self.sentinels[s].myid().to_string();
        let epoch = self.sentinels[s].failover_state(NAME).map_or(0, |(_, e)| e);
        match channel {
            "+elected-leader" => {
                let prev = self.leaders.entry(epoch).or_insert(id.clone());
                assert_eq!(*prev, id, "two leaders elected in epoch {epoch}");
            }
            "+tilt" => self.tilts[s] = true,
            _ => {}
        }
    }

    fn info(&self, i: usize) -> String {
        let n = &self.nodes[i];
        let mut t = format!("# Server\r\nrun_id:{}\r\n# Replication\r\n", n.runid);
        match n.master_of {
            None => {
                t.push_str("role:master\r\n");
                let mut k = 0;
                for (j, r) in self.nodes.iter().enumerate() {
                    if r.up && r.master_of == Some(i) {
                        let (h, p) = node_addr(j);
                        t.push_str(&format!(
                            "slave{k}:ip={h},port={p},state=online,offset={},lag=0\r\n",
                            r.offset
                        ));
                        k += 1;
                    }
                }
                t.push_str(&format!("master_repl_offset:{}\r\n", n.offset));
            }
            Some(m) => {
                let (h, p) = node_addr(m);
                let up = self.nodes[m].up && self.nodes[m].master_of.is_none();
                t.push_str(&format!(
                    "role:slave\r\nmaster_host:{h}\r\nmaster_port:{p}\r\nmaster_link_status:{}\r\nmaster_link_down_since_seconds:{}\r\nslave_repl_offset:{}\r\nslave_priority:100\r\nreplica_announced:1\r\n",
                    if up { "up" } else { "down" },
                    if up { -1 } else { 5 },
                    n.offset
                ));
            }
        }
        t
    }

    fn node_command(&mut self, i: usize, s: usize, conn: ConnId, argv: Vec<Vec<u8>>) {
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
        if let Some(q) = self.nodes[i].multi.get_mut(&(s, conn)) {
            if name != "EXEC" {
                q.push(argv);
                return self.reply(s, conn, Reply::Status("QUEUED".into()));
            }
        }
        let r = match name.as_str() {
            "MULTI" => {
                self.nodes[i].multi.insert((s, conn), Vec::new());
                Reply::Status("OK".into())
            }
            "EXEC" => {
                let q = self.nodes[i].multi.remove(&(s, conn)).unwrap_or_default();
                let mut out = Vec::new();
                for c in q {
                    out.push(self.apply(i, &c));
                }
                Reply::Array(out)
            }
            "SUBSCRIBE" => {
                self.nodes[i].subscribers.push((s, conn));
                Reply::Array(vec![bulk("subscribe"), bulk(&argv[1]), Reply::Int(1)])
            }
            "PUBLISH" => {
                let subs = self.nodes[i].subscribers.clone();
                for (t, c) in &subs {
                    let msg = Reply::Array(vec![bulk("message"), bulk(&argv[1]), bulk(&argv[2])]);
                    self.reply(*t, *c, msg);
                }
                Reply::Int(subs.len() as i64)
            }
            _ => self.apply(i, &argv),
        };
        self.reply(s, conn, r);
    }

    fn apply(&mut self, i: usize, argv: &[Vec<u8>]) -> Reply {
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
        match name.as_str() {
            "PING" => Reply::Status("PONG".into()),
            "INFO" => bulk(self.info(i)),
            "SLAVEOF" | "REPLICAOF" => {
                let host = String::from_utf8_lossy(&argv[1]).into_owned();
                let port = String::from_utf8_lossy(&argv[2]).into_owned();
                if host.eq_ignore_ascii_case("no") {
                    self.nodes[i].master_of = None;
                } else if let Some(m) = (0..self.nodes.len())
                    .find(|&j| node_addr(j) == (host.clone(), port.parse().unwrap_or(0)))
                {
                    self.nodes[i].master_of = Some(m);
                    self.nodes[i].offset = self.nodes[m].offset;
                }
                Reply::Status("OK".into())
            }
            _ => Reply::Status("OK".into()),
        }
    }

    fn sentinel_command(&mut self, t: usize, s: usize, conn: ConnId, argv: Vec<Vec<u8>>) {
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
        let now = self.clock(t);
        let r = match name.as_str() {
            "SENTINEL" => self.sentinels[t].command(now, &argv),
            "PUBLISH" => self.sentinels[t].publish(now, &argv[1], &argv[2]),
            "PING" => Reply::Status("PONG".into()),
            _ => Reply::Status("OK".into()),
        };
        let a = self.sentinels[t].take_actions();
        self.perform(t, a);
        self.reply(s, conn, r);
    }

    fn step_until(&mut self, until: i64, check_selected: bool) {
        let mut next_tick = vec![self.now; self.sentinels.len()];
        while self.now < until {
            let soonest_tick = *next_tick.iter().min().unwrap_or(&until);
            let soonest_msg = self.queue.peek().map_or(i64::MAX, |Reverse((t, _, _))| *t);
            self.now = soonest_tick.min(soonest_msg).min(until).max(self.now);
            if soonest_msg <= soonest_tick && soonest_msg <= until {
                let Some(Reverse((_, _, key))) = self.queue.pop() else {
                    break;
                };
                let Some(d) = self.deliveries.remove(&key) else {
                    continue;
                };
                match d {
                    Delivery::ToSentinel(s, e) => {
                        let now = self.clock(s);
                        let a = self.sentinels[s].handle(now, e);
                        self.perform(s, a);
                    }
                    Delivery::Command(s, conn, argv) => {
                        let Some(c) = self.conns.get(&(s, conn)) else {
                            continue;
                        };
                        if !c.open {
                            continue;
                        }
                        match c.target {
                            Endpoint::Node(i) if self.nodes[i].up => {
                                self.node_command(i, s, conn, argv)
                            }
                            Endpoint::Sentinel(t) => self.sentinel_command(t, s, conn, argv),
                            _ => {}
                        }
                    }
                }
            } else {
                for (s, next) in next_tick.iter_mut().enumerate() {
                    if *next <= self.now {
                        let now = self.clock(s);
                        let a = self.sentinels[s].tick(now);
                        self.perform(s, a);
                        *next = self.now + 50 + self.rng.below(50) as i64;
                    }
                }
            }
            if check_selected {
                self.check_promotions();
            }
        }
    }

    /// At most one replica is chosen for promotion in any epoch, across all sentinels.
    fn check_promotions(&mut self) {
        for s in 0..self.sentinels.len() {
            if let Some((state, epoch)) = self.sentinels[s].failover_state(NAME) {
                if state >= carmine_sentinel::FailoverState::SendSlaveofNoOne {
                    if let Some(p) = self.sentinels[s].promoted(NAME) {
                        let prev = self.selected.entry(epoch).or_insert(p.clone());
                        assert_eq!(*prev, p, "two replicas promoted in epoch {epoch}");
                    }
                }
            }
        }
    }

    fn kill_node(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.nodes[i].subscribers.clear();
        let dead: Vec<(usize, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open && c.target == Endpoint::Node(i))
            .map(|(k, _)| *k)
            .collect();
        for (s, conn) in dead {
            if let Some(c) = self.conns.get_mut(&(s, conn)) {
                c.open = false;
            }
            let at = self.now + 1;
            self.schedule(
                at,
                Delivery::ToSentinel(
                    s,
                    Event::Closed {
                        conn,
                        reason: "killed".into(),
                    },
                ),
            );
        }
    }

    fn addr_seen_by(&self, s: usize) -> Option<(String, u16)> {
        self.sentinels[s]
            .masters()
            .into_iter()
            .find(|(n, _)| n == NAME)
            .map(|(_, a)| (a.host, a.port))
    }
}

fn seeds() -> u64 {
    std::env::var("SENTINEL_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

fn run_failover(seed: u64) {
    let mut rng = Rng(seed.wrapping_add(17) | 1);
    let sentinels = 3 + rng.below(5) as usize;
    let replicas = 1 + rng.below(3) as usize;
    let mut w = World::new(seed, sentinels, replicas);
    let start = w.now;
    w.step_until(start + 15_000, true);
    // Everyone found everyone before the trouble starts.
    for s in 0..sentinels {
        let now = w.clock(s);
        let r = w.sentinels[s].command(
            now,
            &[
                b"SENTINEL".to_vec(),
                b"MASTER".to_vec(),
                NAME.as_bytes().to_vec(),
            ],
        );
        let Reply::Map(fields) = r else {
            panic!("seed {seed}: SENTINEL MASTER {r:?}")
        };
        let get = |k: &str| {
            fields
                .iter()
                .find(|(f, _)| *f == bulk(k))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("num-other-sentinels"),
            Some(bulk((sentinels - 1).to_string())),
            "seed {seed}"
        );
        assert_eq!(
            get("num-slaves"),
            Some(bulk(replicas.to_string())),
            "seed {seed}"
        );
    }
    // Faults on, the master dies, and one partition comes and goes.
    w.faults = true;
    w.kill_node(0);
    let minority = rng.below((sentinels as u64 - 1) / 2 + 1) as usize;
    let cut_from_master = rng.chance(500);
    let t0 = w.now;
    if minority > 0 {
        for a in 0..minority {
            for b in minority..sentinels {
                w.cut.insert((Endpoint::Sentinel(a), Endpoint::Sentinel(b)));
            }
            if cut_from_master {
                for n in 0..=replicas {
                    w.cut.insert((Endpoint::Sentinel(a), Endpoint::Node(n)));
                }
            }
        }
    }
    w.step_until(t0 + 4_000 + rng.below(8_000) as i64, true);
    w.cut.clear();
    w.faults = false;
    // Long enough for an aborted election to be retried (2 x failover-timeout).
    let t1 = w.now;
    w.step_until(t1 + 45_000, true);
    let addrs: Vec<_> = (0..sentinels).map(|s| w.addr_seen_by(s)).collect();
    let first = addrs[0].clone().expect("master known");
    assert!(
        addrs.iter().all(|a| a.as_ref() == Some(&first)),
        "seed {seed}: sentinels disagree: {addrs:?}"
    );
    let new = (0..w.nodes.len())
        .find(|&i| node_addr(i) == first)
        .expect("a known node");
    assert_ne!(
        new, 0,
        "seed {seed}: no failover happened (sentinels={sentinels} replicas={replicas})"
    );
    assert_eq!(
        w.nodes[new].master_of, None,
        "seed {seed}: the named master is not a master"
    );
    // The invariants above were exercised: someone was elected and promoted a replica.
    assert!(
        !w.leaders.is_empty() && !w.selected.is_empty(),
        "seed {seed}: no election seen"
    );
    // Only one node believes it is a master among the live ones, and every live replica
    // follows it.
    for (i, n) in w.nodes.iter().enumerate() {
        if n.up && i != new {
            assert_eq!(
                n.master_of,
                Some(new),
                "seed {seed}: node {i} does not follow the new master"
            );
        }
    }
}

#[test]
fn failover_is_safe_and_completes_under_faults() {
    for seed in 1..=seeds() {
        run_failover(seed);
    }
}

#[test]
fn clock_jump_enters_tilt() {
    for seed in 1..=10 {
        let mut w = World::new(seed, 3, 1);
        let t = w.now;
        w.step_until(t + 5_000, false);
        assert!(
            !w.tilts.iter().any(|x| *x),
            "seed {seed}: tilt without a jump"
        );
        let jump = if seed % 2 == 0 { 10_000 } else { -10_000 };
        w.skew[1] += jump;
        let t = w.now;
        w.step_until(t + 500, false);
        assert!(
            w.tilts[1],
            "seed {seed}: no TILT after a {jump} ms clock jump"
        );
        assert!(w.sentinels[1].in_tilt());
        assert!(!w.tilts[0] && !w.tilts[2], "seed {seed}: others tilted");
        // TILT ends after the tilt period (30 s) and the sentinel acts again.
        let t = w.now;
        w.step_until(t + 31_000, false);
        assert!(!w.sentinels[1].in_tilt(), "seed {seed}: still in TILT");
    }
}

#[test]
fn garbage_from_peers_is_ignored_and_counted() {
    let mut w = World::new(3, 3, 1);
    let t = w.now;
    w.step_until(t + 3_000, false);
    let s = &mut w.sentinels[0];
    let before = s.ignored_messages();
    for bad in [
        "",
        "1,2,3",
        "127.0.0.1,notaport,x,1,mymaster,1.2.3.4,1,1",
        "a,1,b,1,unknown-master,1.2.3.4,1,1",
    ] {
        let r = s.publish(0, b"__sentinel__:hello", bad.as_bytes());
        assert_eq!(r, Reply::Int(1));
    }
    assert_eq!(s.ignored_messages(), before + 4);
    let _ = Level::Debug;
}
