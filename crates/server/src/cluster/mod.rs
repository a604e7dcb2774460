//! Cluster mode (`cluster-enabled yes`): hosts `carmine-gossip`'s [`Cluster`] machine.
//!
//! The machine lives behind a mutex shared by the CLUSTER command and the bus driver
//! (`driver`, a control thread with the bus listener and links on its own `mio::Poll`).
//! After every change the host publishes a [`RouteView`] into `Shared::cluster_view`,
//! which admission reads without a lock to answer MOVED / ASK / CLUSTERDOWN.

mod driver;

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use carmine_commands::cluster::{RouteView, NO_OWNER};
use carmine_commands::pubsub::Kind;
use carmine_commands::table::{cmd, flags::*, CommandSpec, KeySpec};
use carmine_commands::{Ctx, Shared};
use carmine_gossip::{Action, Cluster, Config, Endpoint, Keys, Level, NodeIdx, Reply};
use carmine_resp::{Args, ReplyBuf};
use carmine_slots::{key_slot, Slot};
use parking_lot::Mutex;

use crate::log;
use crate::replication::ReplicationStream;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The cluster machine and what its command and its driver share.
pub struct ClusterHost {
    pub(crate) machine: Mutex<Cluster>,
    /// Socket actions queued by CLUSTER commands for the driver.
    pending: Mutex<Vec<Action>>,
    waker: OnceLock<mio::Waker>,
    conf_path: PathBuf,
    /// The machine generation the published view was built from.
    published: AtomicU64,
    shared: Weak<Shared>,
    /// The client port (cluster settings derive from it).
    port: u16,
}

static HOST: OnceLock<Arc<ClusterHost>> = OnceLock::new();

/// The settings the machine reads, from the server's configuration.
/// `cluster-port`, or the client port + 10000 as Redis derives it.
fn bus_port(shared: &Shared, port: u16) -> u16 {
    match shared.config.get_i64("cluster-port") {
        0 => port.wrapping_add(10000),
        p => p as u16,
    }
}

pub(crate) fn machine_config(shared: &Shared, port: u16) -> Config {
    let c = &shared.config;
    let cport = bus_port(shared, port);
    let announce = |name: &str, or: u16| match c.get_i64(name) {
        0 => or,
        p => p as u16,
    };
    Config {
        port: announce("cluster-announce-port", port),
        cport: announce("cluster-announce-bus-port", cport),
        pport: 0,
        node_timeout: c.get_i64("cluster-node-timeout").max(1) as u64,
        announce_ip: c.get("cluster-announce-ip").unwrap_or_default(),
        announce_hostname: c.get("cluster-announce-hostname").unwrap_or_default(),
        require_full_coverage: c.get_bool("cluster-require-full-coverage"),
        replica_no_failover: c.get_bool("cluster-replica-no-failover"),
        allow_replica_migration: c.get_bool("cluster-allow-replica-migration"),
        migration_barrier: c.get_i64("cluster-migration-barrier").max(0) as usize,
        preferred_endpoint: match c.get("cluster-preferred-endpoint-type").as_deref() {
            Some("hostname") => Endpoint::Hostname,
            Some("unknown-endpoint") => Endpoint::Unknown,
            _ => Endpoint::Ip,
        },
    }
}

fn conf_path(shared: &Shared) -> PathBuf {
    let dir = shared.config.get("dir").unwrap_or_default();
    let name = shared
        .config
        .get("cluster-config-file")
        .unwrap_or_else(|| "nodes.conf".into());
    if dir.is_empty() {
        PathBuf::from(name)
    } else {
        PathBuf::from(dir).join(name)
    }
}

impl ClusterHost {
    pub(crate) fn get() -> Option<&'static Arc<ClusterHost>> {
        HOST.get()
    }

    /// Writes nodes.conf atomically: a temporary file renamed over it, fsynced first
    /// when the machine says the save must survive a crash.
    fn save_config(&self, text: &str, fsync: bool) {
        let tmp = self
            .conf_path
            .with_extension(format!("tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            if fsync {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &self.conf_path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            log::warning(&format!(
                "Could not save the cluster config file {}: {e}",
                self.conf_path.display()
            ));
        }
    }

    /// Republishes the routing view if the machine changed since the last one.
    pub(crate) fn publish_view(&self, shared: &Shared, m: &Cluster) {
        let g = m.generation();
        if self.published.swap(g, Ordering::AcqRel) != g {
            shared
                .cluster_view
                .store(Some(Arc::new(build_view(shared, m))));
        }
        // After the view: see `Shared::cluster_lease_ms`.
        let lease = m
            .lease_start()
            .map_or(u64::MAX, |t| t.saturating_add(m.config.node_timeout));
        shared.cluster_lease_ms.store(lease, Ordering::Release);
    }

    /// Performs what the machine asked for: socket actions go to the driver, the rest
    /// happens here.
    pub(crate) fn perform(
        &self,
        shared: &Arc<Shared>,
        actions: Vec<Action>,
        to_driver: &mut Vec<Action>,
    ) {
        for a in actions {
            match a {
                Action::Connect { .. } | Action::Send { .. } | Action::Close { .. } => {
                    to_driver.push(a)
                }
                Action::SaveConfig { text, fsync } => self.save_config(&text, fsync),
                Action::Log(level, text) => match level {
                    Level::Verbose => log::verbose(&text),
                    Level::Notice => log::notice(&text),
                    Level::Warning => log::warning(&text),
                },
                Action::Deliver {
                    channel,
                    message,
                    shard,
                } => {
                    let kind = if shard { Kind::Shard } else { Kind::Channel };
                    shared.pubsub.publish(kind, &channel, &message);
                }
                Action::SetMaster { ip, port } => {
                    if let Some(stream) = ReplicationStream::of(shared) {
                        stream.set_master(shared, Some((ip, port)));
                    }
                }
                Action::BecomeMaster => {
                    if let Some(stream) = ReplicationStream::of(shared) {
                        stream.set_master(shared, None);
                    }
                }
                Action::DeleteSlotKeys(slots) => delete_slot_keys(shared, &slots),
                Action::DropShardChannels(slots) => drop_shard_channels(shared, &slots),
                // The machine ends the pause itself (on promotion of the replica, or
                // at the manual failover's timeout).
                Action::PauseWrites(_) => shared.pause.set_failover(shared, true),
                Action::UnpauseWrites => shared.pause.set_failover(shared, false),
            }
        }
    }

    /// Follows CONFIG SET of the `cluster-*` settings.
    pub(crate) fn refresh_config(&self, shared: &Shared, m: &mut Cluster) {
        let config = machine_config(shared, self.port);
        if config != m.config {
            m.reconfigure(config);
        }
    }

    fn wake(&self) {
        if let Some(w) = self.waker.get() {
            let _ = w.wake();
        }
    }
}

/// Unsubscribes, on their own loops, the clients of shard channels in `slots` (sorted),
/// which this node no longer serves: Redis' `removeChannelsInSlot`.
fn drop_shard_channels(shared: &Shared, slots: &[u16]) {
    let mut by_client: std::collections::HashMap<
        u64,
        (Arc<carmine_commands::ClientInfo>, Vec<Vec<u8>>),
    > = std::collections::HashMap::new();
    for (channel, clients) in shared.pubsub.shard_subscribers_in(slots) {
        for c in clients {
            by_client
                .entry(c.id)
                .or_insert_with(|| (c.clone(), Vec::new()))
                .1
                .push(channel.clone());
        }
    }
    for (client, channels) in by_client.into_values() {
        let hook = client.revoke_shard.lock().clone();
        if let Some(hook) = hook {
            hook(channels);
        }
    }
}

/// The routing view: owners by slot, addresses by index, our marks.
fn build_view(shared: &Shared, m: &Cluster) -> RouteView {
    let mut view = RouteView::empty();
    let mut index: std::collections::HashMap<NodeIdx, u16> = std::collections::HashMap::new();
    let me = m.myself_idx();
    let mut addr_of = |view: &mut RouteView, idx: NodeIdx| -> u16 {
        if let Some(&i) = index.get(&idx) {
            return i;
        }
        let text = m.node(idx).map_or(String::new(), |n| {
            format!("{}:{}", m.preferred_endpoint(n), n.port)
        });
        let i = if idx == me {
            view.addrs[0] = text;
            0
        } else {
            view.addrs.push(text);
            (view.addrs.len() - 1) as u16
        };
        index.insert(idx, i);
        i
    };
    addr_of(&mut view, me);
    view.myself = 0;
    for (a, b, owner) in m.slot_map().owned_ranges() {
        let i = addr_of(&mut view, owner);
        for s in a..=b {
            view.owners[s as usize] = i;
        }
    }
    if m.myself().is_replica() {
        view.my_master = m.myself().master.map(|mm| addr_of(&mut view, mm));
    }
    for (slot, info) in m.slot_map().marked() {
        if let Some(t) = info.migrating_to {
            let i = addr_of(&mut view, t);
            view.migrating.insert(slot, i);
        }
        if info.importing_from.is_some() {
            view.importing.insert(slot);
        }
    }
    debug_assert!(view
        .owners
        .iter()
        .all(|&o| o == NO_OWNER || (o as usize) < view.addrs.len()));
    view.state_ok = m.state_ok();
    view.allow_reads_when_down = shared.config.get_bool("cluster-allow-reads-when-down");
    view.allow_pubsubshard_when_down = shared
        .config
        .get_bool("cluster-allow-pubsubshard-when-down");
    view
}

/// Deletes every key of slots this node lost, as DELs through the command path so
/// replicas and the AOF see them.
fn delete_slot_keys(shared: &Arc<Shared>, slots: &[Slot]) {
    let mut session = crate::internal_session(shared);
    let stats = shared.new_thread_stats();
    let mut reply = ReplyBuf::new(false);
    let mut deleted = 0;
    for &slot in slots {
        let keys: Vec<Vec<u8>> = shared
            .keyspace
            .lock_table(0, slot)
            .keys()
            .map(|k| k.to_vec())
            .collect();
        for k in keys {
            let args = Args::from_slices(&[b"DEL".as_slice(), k.as_slice()]);
            carmine_commands::execute(shared, &mut session, &stats, &args, &mut reply);
            reply.out.clear();
            deleted += 1;
        }
    }
    if deleted > 0 {
        log::warning(&format!(
            "Deleted {deleted} keys from {} slots this node no longer serves",
            slots.len()
        ));
    }
}

/// The keyspace as CLUSTER counts it.
struct KeyspaceKeys<'a>(&'a Shared);

impl Keys for KeyspaceKeys<'_> {
    fn count_in_slot(&self, slot: Slot) -> usize {
        self.0.keyspace.lock_table(0, slot).len()
    }

    fn keys_in_slot(&self, slot: Slot, count: usize) -> Vec<Vec<u8>> {
        self.0
            .keyspace
            .lock_table(0, slot)
            .keys()
            .take(count)
            .map(|k| k.to_vec())
            .collect()
    }

    fn db_size(&self) -> usize {
        self.0.keyspace.dbsize(0)
    }
}

/// Starts cluster mode: loads (or creates) nodes.conf, binds the bus port and starts the
/// driver. Fails, as Redis does, on a nodes.conf it cannot read or a bus port it cannot
/// bind.
pub fn install(
    shared: &Arc<Shared>,
    port: u16,
    bind: &[(String, bool)],
    backlog: i32,
) -> io::Result<()> {
    let config = machine_config(shared, port);
    let bus_port = bus_port(shared, port);
    let path = conf_path(shared);
    let now = now_ms();
    let seed = u64::from_str_radix(&carmine_commands::state::random_hex(16), 16).unwrap_or(now);
    let machine = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            let m = Cluster::load(config, &text, now, seed)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            log::notice(&format!(
                "Node configuration loaded, I'm {}",
                carmine_gossip::codec::node_id_str(&m.my_id())
            ));
            m
        }
        Ok(_) => Cluster::new(config, now, seed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let m = Cluster::new(config, now, seed);
            log::notice(&format!(
                "No cluster configuration found, I'm {}",
                carmine_gossip::codec::node_id_str(&m.my_id())
            ));
            m
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("Can't open {} for reading: {e}", path.display()),
            ))
        }
    };
    let mut listeners = Vec::new();
    for (addr, optional) in bind {
        match crate::listen(addr, bus_port, backlog) {
            Ok(l) => listeners.push(l),
            Err(e) if *optional => log::verbose(&format!(
                "Could not bind optional cluster bus address {addr}: {e}"
            )),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("Could not bind the cluster bus port {addr}:{bus_port}: {e}"),
                ))
            }
        }
    }
    let host = Arc::new(ClusterHost {
        machine: Mutex::new(machine),
        pending: Mutex::new(Vec::new()),
        waker: OnceLock::new(),
        conf_path: path,
        published: AtomicU64::new(0),
        shared: Arc::downgrade(shared),
        port,
    });
    {
        let mut m = host.machine.lock();
        if let Action::SaveConfig { text, fsync } = m.save_action(true) {
            host.save_config(&text, fsync);
        }
        host.publish_view(shared, &m);
        // A replica in nodes.conf replicates its master again after a restart.
        if let Some(master) = m
            .myself()
            .master
            .and_then(|i| m.node(i))
            .filter(|_| m.myself().is_replica())
        {
            host.pending.lock().push(Action::SetMaster {
                ip: master.ip.clone(),
                port: master.port,
            });
        }
    }
    let _ = HOST.set(host.clone());
    let weak = Arc::downgrade(&host);
    let _ = shared.cluster_publish.set(Box::new(
        move |channel: &[u8], message: &[u8], shard: bool| {
            let Some(host) = weak.upgrade() else { return };
            let actions = host.machine.lock().publish(channel, message, shard);
            host.pending.lock().extend(actions);
            host.wake();
        },
    ));
    let (weak_host, weak_shared) = (Arc::downgrade(&host), Arc::downgrade(shared));
    let _ = shared.cluster_config_changed.set(Box::new(move || {
        let (Some(host), Some(shared)) = (weak_host.upgrade(), weak_shared.upgrade()) else {
            return;
        };
        let mut m = host.machine.lock();
        host.refresh_config(&shared, &mut m);
        host.publish_view(&shared, &m);
    }));
    driver::spawn(shared.clone(), host, listeners)
}

pub fn commands() -> Vec<CommandSpec> {
    vec![CommandSpec {
        subcommands: &[
            "addslots",
            "addslotsrange",
            "bumpepoch",
            "count-failure-reports",
            "countkeysinslot",
            "delslots",
            "delslotsrange",
            "failover",
            "flushslots",
            "forget",
            "getkeysinslot",
            "help",
            "info",
            "keyslot",
            "links",
            "meet",
            "myid",
            "nodes",
            "replicas",
            "replicate",
            "reset",
            "saveconfig",
            "set-config-epoch",
            "setslot",
            "shards",
            "slaves",
            "slots",
        ],
        ..cmd(
            "cluster",
            -2,
            LOADING | STALE,
            KeySpec::None,
            cluster,
            "cluster",
            "@slow",
            "A container for Redis Cluster commands.",
        )
    }]
}

fn write_reply(reply: &mut ReplyBuf, r: &Reply) {
    match r {
        Reply::Status(s) => reply.simple(s),
        Reply::Error(e) => reply.error(e),
        Reply::Int(n) => reply.int(*n),
        Reply::Bulk(b) => reply.bulk(b),
        Reply::Verbatim(t) => reply.verbatim(t.as_bytes()),
        Reply::Nil => reply.null(),
        Reply::Array(v) => {
            reply.array(v.len());
            for x in v {
                write_reply(reply, x);
            }
        }
        Reply::Map(v) => {
            reply.map(v.len());
            for (k, x) in v {
                write_reply(reply, k);
                write_reply(reply, x);
            }
        }
    }
}

fn cluster(ctx: &mut Ctx<'_, '_>) {
    let Some(host) = ClusterHost::get() else {
        return ctx.error("ERR This instance has cluster support disabled");
    };
    let Some(shared) = host.shared.upgrade() else {
        return ctx.error("ERR server is shutting down");
    };
    let argv: Vec<&[u8]> = (0..ctx.args.len()).map(|i| ctx.arg(i)).collect();
    // KEYSLOT needs nothing of the machine: the cluster's most frequent client command.
    if argv.len() == 3 && argv[1].eq_ignore_ascii_case(b"keyslot") {
        return ctx.reply.int(i64::from(key_slot(argv[2])));
    }
    let (reply, actions) = {
        let mut m = host.machine.lock();
        let out = m.command(now_ms(), &argv, &KeyspaceKeys(&shared));
        host.publish_view(&shared, &m);
        out
    };
    let mut to_driver = Vec::new();
    host.perform(&shared, actions, &mut to_driver);
    if !to_driver.is_empty() {
        host.pending.lock().extend(to_driver);
        host.wake();
    }
    write_reply(ctx.reply, &reply);
}
