//! Deterministic simulation of many cluster nodes in one process: a fake clock, a
//! seeded network that delays, reorders and drops whole messages, and invariants checked
//! as the run goes. `GOSSIP_SIM_LARGE=1` adds the 1,000-node runs (minutes in a debug
//! build); CI runs the smaller ones.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use carmine_gossip::codec::flag;
use carmine_gossip::{Action, Cluster, Config, Keys, LinkId, Reply, Rng};

struct NoKeys;

impl Keys for NoKeys {
    fn count_in_slot(&self, _: u16) -> usize {
        0
    }
    fn keys_in_slot(&self, _: u16, _: usize) -> Vec<Vec<u8>> {
        Vec::new()
    }
    fn db_size(&self) -> usize {
        0
    }
}

enum Ev {
    Deliver {
        to: usize,
        link: LinkId,
        bytes: Vec<u8>,
    },
    Closed {
        to: usize,
        link: LinkId,
    },
}

struct Net {
    nodes: Vec<Cluster>,
    now: u64,
    rng: Rng,
    loss: f64,
    max_delay: u64,
    /// (node, link) -> (peer node, peer link)
    peer: HashMap<(usize, LinkId), (usize, LinkId)>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Ev>,
    seq: u64,
    next_tick: Vec<u64>,
    bytes: u64,
    deleted_keys: usize,
}

const BASE_PORT: u16 = 30000;

impl Net {
    fn new(n: usize, seed: u64, loss: f64, max_delay: u64) -> Net {
        let mut rng = Rng::new(seed);
        let nodes = (0..n)
            .map(|i| {
                let config = Config {
                    port: BASE_PORT + i as u16,
                    cport: BASE_PORT + 10000 + i as u16,
                    node_timeout: 5000,
                    ..Config::default()
                };
                Cluster::new(config, 0, rng.next_u64())
            })
            .collect();
        let next_tick = (0..n).map(|_| rng.below(100) as u64).collect();
        Net {
            nodes,
            now: 0,
            rng,
            loss,
            max_delay,
            peer: HashMap::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            next_tick,
            bytes: 0,
            deleted_keys: 0,
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let id = self.seq as usize;
        self.events.insert(id, ev);
        self.queue.push(Reverse((at, self.seq, id)));
    }

    fn apply(&mut self, from: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Connect { link, ip, port } => {
                    assert_eq!(ip, "127.0.0.1", "node {from} connects to a bad address");
                    let to = (port - BASE_PORT - 10000) as usize;
                    assert!(
                        to < self.nodes.len() && to != from,
                        "node {from} connects to {port}"
                    );
                    let theirs = self.nodes[to].accept(self.now, "127.0.0.1", "127.0.0.1");
                    self.nodes[from].link_connected(link);
                    self.peer.insert((from, link), (to, theirs));
                    self.peer.insert((to, theirs), (from, link));
                }
                Action::Send { link, bytes } => {
                    self.bytes += bytes.len() as u64;
                    let Some(&(to, theirs)) = self.peer.get(&(from, link)) else {
                        continue;
                    };
                    if self.rng.below(1_000_000) < (self.loss * 1_000_000.0) as usize {
                        continue;
                    }
                    let at = self.now + 1 + self.rng.below(self.max_delay as usize) as u64;
                    self.schedule(
                        at,
                        Ev::Deliver {
                            to,
                            link: theirs,
                            bytes,
                        },
                    );
                }
                Action::Close { link } => {
                    if let Some((to, theirs)) = self.peer.remove(&(from, link)) {
                        self.peer.remove(&(to, theirs));
                        let at = self.now + 1;
                        self.schedule(at, Ev::Closed { to, link: theirs });
                    }
                }
                Action::DeleteSlotKeys(s) => self.deleted_keys += s.len(),
                Action::SaveConfig(text) => {
                    // What is written must load back to the same view.
                    let c = &self.nodes[from];
                    let loaded = Cluster::load(c.config.clone(), &text, self.now, 1)
                        .unwrap_or_else(|e| {
                            panic!("node {from} wrote a nodes.conf it cannot load: {e}")
                        });
                    assert_eq!(loaded.my_id(), c.my_id());
                    assert_eq!(loaded.current_epoch, c.current_epoch);
                }
                Action::Deliver { .. }
                | Action::SetMaster { .. }
                | Action::BecomeMaster
                | Action::PauseWrites(_)
                | Action::UnpauseWrites
                | Action::Log(..) => {}
            }
        }
    }

    fn command(&mut self, node: usize, argv: &[&str]) -> Reply {
        let argv: Vec<&[u8]> = std::iter::once("cluster".as_bytes())
            .chain(argv.iter().map(|a| a.as_bytes()))
            .collect();
        let (reply, actions) = self.nodes[node].command(self.now, &argv, &NoKeys);
        self.apply(node, actions);
        reply
    }

    /// Runs the network until `until` (simulated ms).
    fn run_until(&mut self, until: u64) {
        loop {
            let next_ev = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let (tick_node, tick_at) = self
                .next_tick
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| **t)
                .map(|(i, t)| (i, *t))
                .unwrap_or((0, u64::MAX));
            let at = next_ev.unwrap_or(u64::MAX).min(tick_at);
            if at > until {
                self.now = until;
                return;
            }
            self.now = at;
            if next_ev == Some(at) {
                let Some(Reverse((_, _, id))) = self.queue.pop() else {
                    continue;
                };
                let Some(ev) = self.events.remove(&id) else {
                    continue;
                };
                match ev {
                    Ev::Deliver { to, link, bytes } => {
                        if !self.peer.contains_key(&(to, link)) {
                            continue;
                        }
                        let actions = self.nodes[to].received(self.now, link, &bytes);
                        self.apply(to, actions);
                    }
                    Ev::Closed { to, link } => self.nodes[to].link_closed(link),
                }
            } else {
                self.next_tick[tick_node] = at + 100;
                let actions = self.nodes[tick_node].tick(self.now);
                self.apply(tick_node, actions);
            }
        }
    }

    fn converged(&self) -> bool {
        let n = self.nodes.len();
        let ids: Vec<_> = self.nodes.iter().map(|c| c.my_id()).collect();
        self.nodes.iter().all(|c| {
            c.node_count() == n
                && c.nodes()
                    .all(|(_, node)| !node.has(flag::HANDSHAKE | flag::NOADDR))
                && ids.iter().all(|id| c.lookup(id).is_some())
        })
    }

    /// Every node agrees with node 0 on every slot's owner.
    fn slots_agree(&self) -> bool {
        let owner_id =
            |c: &Cluster, s: u16| c.slot_map().owner(s).and_then(|&o| c.node(o)).map(|n| n.id);
        (0..16384u16).step_by(97).chain([0, 16383]).all(|s| {
            let o = owner_id(&self.nodes[0], s);
            o.is_some() && self.nodes.iter().all(|c| owner_id(c, s) == o)
        })
    }

    /// No slot has two masters that both think they own it with the same epoch.
    fn check_invariants(&self) {
        for c in &self.nodes {
            let me = c.myself();
            assert!(me.has(flag::MYSELF));
            assert!(me.is_master() != me.is_replica());
        }
    }

    /// Steps until `done` holds, checking invariants every simulated second.
    fn run_until_true(&mut self, limit: u64, done: impl Fn(&Net) -> bool) -> Option<u64> {
        let start = self.now;
        while self.now - start < limit {
            let next = self.now + 1000;
            self.run_until(next);
            self.check_invariants();
            if done(self) {
                return Some(self.now - start);
            }
        }
        None
    }
}

fn chain_of_meets(n: usize, seed: u64, loss: f64) -> (u64, f64) {
    let mut net = Net::new(n, seed, loss, 30);
    for i in 1..n {
        let port = (BASE_PORT + i as u16 - 1).to_string();
        assert_eq!(net.command(i, &["meet", "127.0.0.1", &port]), Reply::ok());
    }
    // One master owns every slot; the others must learn it.
    assert_eq!(
        net.command(0, &["addslotsrange", "0", "16383"]),
        Reply::ok()
    );
    let limit = 600_000;
    let took = net
        .run_until_true(limit, |net| net.converged() && net.slots_agree())
        .unwrap_or_else(|| {
            let counts: Vec<usize> = net.nodes.iter().map(|c| c.node_count()).collect();
            panic!("{n} nodes (seed {seed}, loss {loss}) did not converge in {limit} ms: known counts {counts:?}")
        });
    // A steady minute for the bus-bytes figure.
    let before = net.bytes;
    let t0 = net.now;
    net.run_until(t0 + 60_000);
    assert!(net.converged(), "a converged cluster fell apart");
    let per_node_per_sec = (net.bytes - before) as f64 / n as f64 / 60.0;
    (took, per_node_per_sec)
}

#[test]
fn ten_nodes_converge_from_a_chain_of_meets() {
    for seed in 1..=4 {
        let (took, _) = chain_of_meets(10, seed, 0.0);
        assert!(took <= 30_000, "seed {seed}: {took} ms");
    }
}

#[test]
fn hundred_nodes_converge_and_agree_on_slots() {
    let (took, bytes) = chain_of_meets(100, 7, 0.0);
    eprintln!(
        "100 nodes: converged in {} s, {:.0} bus bytes per node per second",
        took / 1000,
        bytes
    );
}

#[test]
fn twenty_nodes_converge_with_loss() {
    for seed in 1..=5 {
        let (took, _) = chain_of_meets(20, seed, 0.05);
        eprintln!("20 nodes, 5% loss, seed {seed}: {took} ms");
    }
}

#[test]
fn hundred_nodes_converge_with_loss_and_reordering() {
    let (took, bytes) = chain_of_meets(100, 11, 0.05);
    eprintln!(
        "100 nodes, 5% loss: converged in {} s, {:.0} bus bytes per node per second",
        took / 1000,
        bytes
    );
}

#[test]
fn thousand_nodes_converge() {
    if std::env::var("GOSSIP_SIM_LARGE").is_err() {
        eprintln!("set GOSSIP_SIM_LARGE=1 for the 1,000-node runs");
        return;
    }
    let (took, bytes) = chain_of_meets(1000, 3, 0.0);
    eprintln!(
        "1000 nodes: converged in {} s, {:.0} bus bytes per node per second",
        took / 1000,
        bytes
    );
    let (took, bytes) = chain_of_meets(1000, 5, 0.05);
    eprintln!(
        "1000 nodes, 5% loss: converged in {} s, {:.0} bus bytes per node per second",
        took / 1000,
        bytes
    );
}

#[test]
fn slot_claims_with_newer_epochs_win_everywhere() {
    let mut net = Net::new(6, 42, 0.0, 20);
    // Masters 0 and 1 get distinct epochs as redis-cli gives them; 2 stays at 0 and so
    // collides with the slot-less masters until collision handling separates them.
    for (i, (a, b)) in [(0, 5460), (5461, 10922), (10923, 16383)]
        .iter()
        .enumerate()
    {
        if i < 2 {
            assert_eq!(
                net.command(i, &["set-config-epoch", &(i + 1).to_string()]),
                Reply::ok()
            );
        }
        net.command(i, &["addslotsrange", &a.to_string(), &b.to_string()]);
    }
    for i in 1..6 {
        let port = (BASE_PORT + i as u16 - 1).to_string();
        net.command(i, &["meet", "127.0.0.1", &port]);
    }
    assert_eq!(
        net.command(2, &["set-config-epoch", "9"]),
        Reply::Error("ERR The user can assign a config epoch only when the node does not know any other node.".into())
    );
    net.run_until_true(60_000, |n| n.converged() && n.slots_agree())
        .expect("converge");
    let distinct = |n: &Net| {
        let mut e: Vec<u64> = n.nodes.iter().map(|c| c.myself().config_epoch).collect();
        e.sort();
        e.dedup();
        e.len() == n.nodes.len()
    };
    net.run_until_true(60_000, distinct).unwrap_or_else(|| {
        let epochs: Vec<u64> = net.nodes.iter().map(|c| c.myself().config_epoch).collect();
        panic!("config epochs still collide: {epochs:?}")
    });
    // Node 3 replicates node 0.
    let id0 = String::from_utf8(net.nodes[0].my_id().to_vec()).unwrap_or_default();
    assert_eq!(net.command(3, &["replicate", &id0]), Reply::ok());
    // Move slot 100 from node 0 to node 1 the way redis-cli does.
    let id1 = String::from_utf8(net.nodes[1].my_id().to_vec()).unwrap_or_default();
    assert_eq!(
        net.command(1, &["setslot", "100", "importing", &id0]),
        Reply::ok()
    );
    assert_eq!(
        net.command(0, &["setslot", "100", "migrating", &id1]),
        Reply::ok()
    );
    assert_eq!(
        net.command(1, &["setslot", "100", "node", &id1]),
        Reply::ok()
    );
    assert_eq!(
        net.command(0, &["setslot", "100", "node", &id1]),
        Reply::ok()
    );
    let moved = |n: &Net| {
        n.nodes.iter().all(|c| {
            c.slot_map()
                .owner(100)
                .and_then(|&o| c.node(o))
                .map(|n| n.id)
                == Some(n.nodes[1].my_id())
        })
    };
    net.run_until_true(30_000, moved)
        .expect("slot 100 moved everywhere");
    let replica_view = |n: &Net| {
        n.nodes.iter().all(|c| {
            c.lookup(&n.nodes[3].my_id())
                .and_then(|i| c.node(i))
                .is_some_and(|r| {
                    r.is_replica()
                        && r.master.and_then(|m| c.node(m)).map(|m| m.id)
                            == Some(n.nodes[0].my_id())
                })
        })
    };
    net.run_until_true(30_000, replica_view)
        .expect("the replica seen everywhere");
}
