//! Server-wide state shared by every thread, per-connection sessions, and statistics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use carmine_keyspace::Keyspace;
use carmine_resp::Args;
use parking_lot::Mutex;

use crate::barrier::Barrier;
use crate::config::Config;
use crate::table::CommandTable;

/// Per-command counters (INFO commandstats, LATENCY HISTOGRAM).
#[derive(Default)]
pub struct CmdStat {
    pub calls: AtomicU64,
    pub usec: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    /// Call durations (`latency-tracking`).
    pub histogram: crate::latency::Histogram,
}

impl CmdStat {
    fn reset(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.usec.store(0, Ordering::Relaxed);
        self.rejected.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
        self.histogram.reset();
    }
}

/// A thread's counters of container subcommands, by (command index, subcommand).
pub type SubcommandStats = HashMap<(usize, Box<str>), Arc<CmdStat>>;

/// Counters owned by one event-loop thread: only that thread writes them, so increments
/// never contend; INFO sums every thread's.
pub struct ThreadStats {
    pub commands: Box<[CmdStat]>,
    /// Container commands count each subcommand on its own (`config|set`), as Redis 7
    /// does: by (command index, subcommand), created on first use.
    pub subcommands: Mutex<SubcommandStats>,
    pub total_commands: AtomicU64,
    pub keyspace_hits: AtomicU64,
    pub keyspace_misses: AtomicU64,
    pub error_replies: AtomicU64,
    pub net_input: AtomicU64,
    pub net_output: AtomicU64,
    pub connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    /// Keys written (rdb_changes_since_last_save).
    pub dirty: AtomicU64,
}

impl ThreadStats {
    pub fn new(commands: usize) -> ThreadStats {
        ThreadStats {
            commands: (0..commands).map(|_| CmdStat::default()).collect(),
            subcommands: Mutex::new(HashMap::new()),
            total_commands: AtomicU64::new(0),
            keyspace_hits: AtomicU64::new(0),
            keyspace_misses: AtomicU64::new(0),
            error_replies: AtomicU64::new(0),
            net_input: AtomicU64::new(0),
            net_output: AtomicU64::new(0),
            connections_received: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            dirty: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` to a counter that only the owning thread writes, as the counters every
    /// command moves are (its calls and time, its histogram, the totals, the keyspace
    /// hits): a plain load and store, where `add`'s locked read-modify-write cost four
    /// or five locked instructions per command (3% of a loop serving pipelined
    /// EVALSHAs, each running three commands). Readers (INFO) see each value whole. A
    /// RESETSTAT from another thread that lands between the load and the store of a
    /// command running that moment is lost for that counter.
    #[inline]
    pub fn bump(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn hit(&self, found: bool) {
        if found {
            Self::bump(&self.keyspace_hits, 1);
        } else {
            Self::bump(&self.keyspace_misses, 1);
        }
    }

    pub fn reset(&self) {
        for c in self.commands.iter() {
            c.reset();
        }
        self.subcommands.lock().clear();
        for a in [
            &self.total_commands,
            &self.keyspace_hits,
            &self.keyspace_misses,
            &self.error_replies,
            &self.net_input,
            &self.net_output,
            &self.connections_received,
            &self.rejected_connections,
            &self.reads,
            &self.writes,
            &self.dirty,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// What other threads may see and change about a connection (CLIENT LIST / KILL).
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub fd: i32,
    pub thread: usize,
    pub created: Instant,
    pub name: Mutex<Option<Vec<u8>>>,
    pub lib_name: Mutex<Option<Vec<u8>>>,
    pub lib_ver: Mutex<Option<Vec<u8>>>,
    pub db: AtomicU64,
    pub resp: AtomicU8,
    /// Index of the last command in the command table (+1; 0 for none).
    pub last_cmd: AtomicU64,
    /// Milliseconds since `created` of the last interaction.
    pub last_interaction: AtomicU64,
    /// -1 outside MULTI, else the number of queued commands.
    pub multi: AtomicI64,
    pub qbuf: AtomicU64,
    pub omem: AtomicU64,
    pub no_evict: AtomicBool,
    /// The ACL user it authenticated as.
    pub user: Mutex<String>,
    /// CLIENT TRACKING settings (None: off).
    pub tracking: Mutex<Option<crate::tracking::TrackingState>>,
    /// A script this client runs called a read-only command: its declared keys are
    /// tracked when it ends.
    pub script_read: AtomicBool,
    /// Blocked in a command CLIENT UNBLOCK may end (not held by a pause).
    pub unblockable: AtomicBool,
    /// CLIENT UNBLOCK asked: [`ClientInfo::UNBLOCK_TIMEOUT`] or
    /// [`ClientInfo::UNBLOCK_ERROR`] (0: nothing asked).
    pub unblock_request: AtomicU8,
    /// [`ClientInfo::NORMAL`], [`ClientInfo::MASTER`] (our link to our master) or
    /// [`ClientInfo::REPLICA`] (a replica reading our stream).
    pub kind: AtomicU8,
    /// Set by CLIENT KILL; the owning loop closes the connection when it sees it.
    pub killed: AtomicBool,
    /// Wakes the owning event loop (set by the server).
    pub waker: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Shuts the connection down from any thread, for the clients [`ClientInfo::kill`]
    /// must cut at once rather than at their loop's next turn (a replica: CLIENT KILL
    /// TYPE replica inside a MULTI must have cut the link before EXEC answers, as Redis
    /// frees the client there and then). Set by the server.
    pub closer: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Hands already-encoded bytes (pub/sub messages, a replica's stream) to this
    /// client: written to its socket by the calling thread when nothing is ahead of them,
    /// else queued to the owning loop (set by the server).
    pub deliver: Mutex<Option<DeliverHook>>,
    /// What decides whether delivered bytes may go straight to the socket (see
    /// [`OutputOrder`]); shared by the delivering threads and the owning loop.
    pub output_order: Mutex<OutputOrder>,
    /// Tells the owning loop a key this client is blocked on may be ready.
    pub ready: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Asks the owning loop to unsubscribe this client from shard channels whose slot
    /// this node stopped serving ([`crate::pubsub::revoke_shard_channel`] there).
    pub revoke_shard: Mutex<Option<RevokeHook>>,
    /// Subscriptions: channels, patterns, shard channels (CLIENT LIST sub/psub/ssub).
    pub subs: [AtomicU64; 3],
    /// The reply buffer's size and its peak use since the last reset (CLIENT LIST
    /// rbs/rbp), kept by the owning loop.
    pub reply_buffer: [AtomicU64; 2],
}

/// Keeps a client's output in order when threads other than its loop write to its
/// socket: a replica's stream is written by whichever loop ran the writes, before that
/// loop's replies leave (so a master killed right after a reply has still sent the write
/// towards its replicas, as Redis' single thread does), and only when nothing the owning
/// loop holds or was sent for it is still ahead. Read and changed under
/// [`ClientInfo::output_order`], which a direct write holds while it writes.
#[derive(Default)]
pub struct OutputOrder {
    /// A duplicate of the socket's descriptor, set by the owning loop when it allows
    /// direct writes (a replica's connection, once its own replies are out) and dropped
    /// when the connection closes, so a write never reaches a reused descriptor number.
    pub socket: Option<Box<dyn std::io::Write + Send>>,
    /// Deliveries queued to the owning loop and not yet in its output buffer.
    pub queued: u32,
    /// The owning loop's output buffer holds bytes not yet written.
    pub loop_holds: bool,
}

impl OutputOrder {
    /// The socket, when a delivery may be written to it now, ahead of nothing.
    pub fn direct(&mut self) -> Option<&mut (dyn std::io::Write + Send + 'static)> {
        if self.queued == 0 && !self.loop_holds {
            self.socket.as_deref_mut()
        } else {
            None
        }
    }
}

/// How other threads push bytes to a client: set by the server when it adopts a socket.
pub type DeliverHook = Arc<dyn Fn(bytes::Bytes) + Send + Sync>;

/// How the cluster driver hands a client's loop the shard channels it lost.
pub type RevokeHook = Arc<dyn Fn(Vec<Vec<u8>>) + Send + Sync>;

impl ClientInfo {
    pub fn new(id: u64, addr: String, laddr: String, fd: i32, thread: usize) -> ClientInfo {
        ClientInfo {
            id,
            addr,
            laddr,
            fd,
            thread,
            created: Instant::now(),
            name: Mutex::new(None),
            lib_name: Mutex::new(None),
            lib_ver: Mutex::new(None),
            db: AtomicU64::new(0),
            resp: AtomicU8::new(2),
            last_cmd: AtomicU64::new(0),
            last_interaction: AtomicU64::new(0),
            multi: AtomicI64::new(-1),
            qbuf: AtomicU64::new(0),
            omem: AtomicU64::new(0),
            no_evict: AtomicBool::new(false),
            user: Mutex::new("default".to_string()),
            tracking: Mutex::new(None),
            script_read: AtomicBool::new(false),
            unblockable: AtomicBool::new(false),
            unblock_request: AtomicU8::new(0),
            kind: AtomicU8::new(ClientInfo::NORMAL),
            killed: AtomicBool::new(false),
            waker: Mutex::new(None),
            closer: Mutex::new(None),
            deliver: Mutex::new(None),
            output_order: Mutex::new(OutputOrder::default()),
            ready: Mutex::new(None),
            revoke_shard: Mutex::new(None),
            subs: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            reply_buffer: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    pub const NORMAL: u8 = 0;
    pub const UNBLOCK_TIMEOUT: u8 = 1;
    pub const UNBLOCK_ERROR: u8 = 2;
    pub const MASTER: u8 = 1;
    pub const REPLICA: u8 = 2;

    /// CLIENT LIST / KILL's TYPE: `master`, `replica`, `pubsub` or `normal`.
    pub fn client_type(&self) -> &'static str {
        match self.kind.load(Ordering::Relaxed) {
            ClientInfo::MASTER => "master",
            ClientInfo::REPLICA => "replica",
            _ if self.subs.iter().any(|s| s.load(Ordering::Relaxed) > 0) => "pubsub",
            _ => "normal",
        }
    }

    pub fn touch(&self) {
        self.touch_at(Instant::now());
    }

    /// [`ClientInfo::touch`] with a reading the caller took already.
    pub fn touch_at(&self, at: Instant) {
        self.last_interaction.store(
            at.saturating_duration_since(self.created).as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    pub fn idle_secs(&self) -> u64 {
        let now = self.created.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_interaction.load(Ordering::Relaxed)) / 1000
    }

    /// Asks the owning loop to close this connection.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        if let Some(close) = self.closer.lock().as_ref() {
            close();
        }
        if let Some(w) = self.waker.lock().as_ref() {
            w();
        }
    }
}

/// Every connected client.
#[derive(Default)]
pub struct ClientRegistry {
    clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    next_id: AtomicU64,
    pub reply_buffers: ReplyBufferResizing,
}

/// Redis 7's reply buffer resizing: each client's reply buffer shrinks when its peak use
/// stays under half of it and grows (up to 16 KiB) when it fills, judged by the peak
/// since the last reset. The settings DEBUG REPLYBUFFER changes and the counts INFO
/// stats reports (`reply_buffer_shrinks`, `reply_buffer_expands`).
pub struct ReplyBufferResizing {
    pub enabled: AtomicBool,
    /// Milliseconds between resets of a client's peak; negative: never.
    pub peak_reset_ms: AtomicI64,
    pub shrinks: AtomicU64,
    pub expands: AtomicU64,
}

impl ReplyBufferResizing {
    /// Redis' REPLY_BUFFER_DEFAULT_PEAK_RESET_TIME.
    pub const DEFAULT_PEAK_RESET_MS: i64 = 5000;
}

impl Default for ReplyBufferResizing {
    fn default() -> Self {
        ReplyBufferResizing {
            enabled: AtomicBool::new(true),
            peak_reset_ms: AtomicI64::new(Self::DEFAULT_PEAK_RESET_MS),
            shrinks: AtomicU64::new(0),
            expands: AtomicU64::new(0),
        }
    }
}

impl ClientRegistry {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add(&self, info: Arc<ClientInfo>) {
        self.clients.lock().insert(info.id, info);
    }

    pub fn remove(&self, id: u64) {
        self.clients.lock().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.clients.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<Arc<ClientInfo>> {
        self.clients.lock().values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.clients.lock().get(&id).cloned()
    }
}

/// Why and how the server should stop (SHUTDOWN, SIGTERM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    Default,
    Save,
    NoSave,
}

/// Fixed facts about the running server (INFO server).
pub struct ServerFacts {
    pub run_id: String,
    pub started: Instant,
    pub started_unix: u64,
    pub executable: String,
    pub tcp_port: AtomicU64,
}

/// A value on a cache line of its own: written by one thread per command (the master
/// link's applied offset) without invalidating the line that every loop reads per
/// command (`is_replica` and its neighbours).
#[repr(align(128))]
pub struct OwnLine<T>(pub T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// `n` random lowercase hex digits (run ids, a sentinel's id, ACL GENPASS).
pub fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
        .collect()
}

/// State shared by every thread of one server.
pub struct Shared {
    pub keyspace: Keyspace,
    pub config: Config,
    pub commands: CommandTable,
    pub clients: ClientRegistry,
    pub pubsub: Arc<crate::pubsub::PubSub>,
    pub blocking: crate::blocking::Blocking,
    /// CLIENT PAUSE and FAILOVER's write pause.
    pub pause: crate::pause::ClientPause,
    pub barrier: Barrier,
    pub threads: Mutex<Vec<Arc<ThreadStats>>>,
    pub facts: ServerFacts,
    pub shutdown: Mutex<Option<ShutdownMode>>,
    pub shutdown_requested: AtomicBool,
    pub active_expire: AtomicBool,
    /// Bytes in use as the allocator counts them (set by the binary); None: estimate.
    pub used_memory: Option<fn() -> usize>,
    pub peak_memory: AtomicU64,
    /// Makes room for this many more bytes in the calling thread's heap in a few large
    /// steps and keeps it (set by the binary, which knows its allocator); 0 gives it back.
    /// Each event loop calls it when a snapshot starts, before writers' captures grow the
    /// heap a page-rounded step at a time, and with 0 when the snapshot is over.
    pub heap_reserve: std::sync::OnceLock<fn(usize)>,
    /// DEBUG PAUSE-CRON: the event loops' periodic work (client timeouts, active expiry,
    /// save points, the tracking table's trim ...) is skipped while set.
    pub cron_paused: AtomicBool,
    /// Writes a line to the server's log at a Redis level (0 debug, 1 verbose,
    /// 2 notice, 3 warning): `redis.log`, the slow-script warning.
    pub log: std::sync::OnceLock<fn(u8, &str)>,
    /// Answers the calling event loop's other clients while a script it runs is busy
    /// (installed by the server; see scripting's Lua hook).
    pub busy_serve: std::sync::OnceLock<fn()>,
    /// The keyspace's own estimate, refreshed by the cron, when `used_memory` is None.
    pub estimated_memory: AtomicU64,
    /// Writes since start (rdb_changes_since_last_save until persistence exists).
    pub dirty: AtomicU64,
    pub ops_per_sec: AtomicU64,
    /// RDB persistence, installed by the server (none when embedded without files).
    pub persistence: std::sync::OnceLock<Arc<dyn crate::persistence::Persistence>>,
    /// Lua scripts and the state that runs them (EVAL, SCRIPT).
    pub scripts: crate::scripting::Scripts,
    /// UNLINK's background freeing.
    pub lazyfree: crate::lazyfree::LazyFree,
    /// ACL users.
    pub acl: crate::acl::Acl,
    /// Clients in MONITOR mode.
    pub monitors: crate::monitor::Monitors,
    /// SLOWLOG's entries.
    pub slowlog: crate::slowlog::SlowLog,
    /// The latency monitor's events.
    pub latency: crate::latency::Monitor,
    /// INFO errorstats' counts.
    pub errorstats: crate::errorstats::ErrorStats,
    /// Client-side caching: who read which key (CLIENT TRACKING).
    pub tracking: crate::tracking::Tracking,
    /// Function libraries (FUNCTION, FCALL).
    pub functions: crate::functions::Functions,
    /// The append-only file, installed by the server.
    pub append_only: std::sync::OnceLock<Arc<dyn crate::persistence::AppendOnly>>,
    /// The Sentinel this process runs as (`--sentinel`), installed by the server.
    pub sentinel: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
    /// Where each slot is served, published by the cluster driver (`cluster-enabled
    /// yes`); None in standalone mode.
    pub cluster_view: arc_swap::ArcSwapOption<crate::cluster::RouteView>,
    /// Sends a PUBLISH (false) or SPUBLISH (true) to the cluster, installed in cluster
    /// mode.
    #[allow(clippy::type_complexity)]
    pub cluster_publish: std::sync::OnceLock<Box<dyn Fn(&[u8], &[u8], bool) + Send + Sync>>,
    /// Applies CONFIG SET of a `cluster-*` setting at once (a peer must see a new
    /// announced hostname in our next message), installed in cluster mode.
    #[allow(clippy::type_complexity)]
    pub cluster_config_changed: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Listens on the configured port and bind addresses (after CONFIG SET port or
    /// bind), installed by the server: Err with the reason when they cannot be bound (the
    /// old sockets then stay).
    #[allow(clippy::type_complexity)]
    pub rebind: std::sync::OnceLock<Box<dyn Fn() -> Result<(), String> + Send + Sync>>,
    /// DEBUG DROP-CLUSTER-PACKET-FILTER: the bus message type to drop, -1 none.
    pub cluster_drop_filter: AtomicI64,
    /// Until when (unix ms) this cluster master may serve its slots: a node timeout
    /// after it last heard from enough masters to make a majority with itself
    /// (`u64::MAX`: no limit, it is not a master with slots or needs no one). Stored
    /// by the cluster driver after the view it was computed with, so a reader that
    /// loads it first and the view second never pairs a renewed lease with slots the
    /// same messages took away.
    pub cluster_lease_ms: AtomicU64,
    /// MIGRATE's connections to its targets, kept between calls.
    pub migrate_cache: crate::migrate::MigrateCache,
    /// The replication stream's writer, installed by the server.
    pub propagator: std::sync::OnceLock<Arc<dyn crate::propagate::Propagator>>,
    /// This server replicates a master (REPLICAOF): clients' writes are refused while
    /// `replica-read-only` says so.
    pub is_replica: AtomicBool,
    /// On a replica: the link to the master is up (else `replica-serve-stale-data no`
    /// refuses data commands with -MASTERDOWN).
    pub master_link_up: AtomicBool,
    /// On a replica: the master's stream offset up to which commands are applied to the
    /// keyspace, stored under the barrier as each command (or a whole MULTI) completes,
    /// so that a snapshot begun with the world stopped saves the exact offset its data
    /// reflects (the RDB's `repl-offset`, from which a restarted replica continues).
    pub master_stream_applied: OwnLine<AtomicU64>,
    /// The database the master's stream had selected at that offset.
    pub master_stream_db: OwnLine<AtomicU64>,
    /// On a writable replica: keys its own clients wrote, which it expires itself when
    /// they got deadlines (see `expire_replica_writes`).
    pub replica_written_keys: Mutex<std::collections::HashSet<(usize, Vec<u8>)>>,
    /// `min-replicas-to-write`, 0 when it or `min-replicas-max-lag` is 0 (off).
    pub min_replicas_to_write: AtomicU64,
    pub persist: crate::persistence::PersistStats,
    /// Signalled when a new thread's stats should be created.
    io_threads: usize,
}

impl Shared {
    /// Cluster mode (`cluster-enabled yes`): its bus hook is installed. One atomic load,
    /// so standalone servers pay nothing more on the request path.
    pub fn cluster_mode(&self) -> bool {
        self.cluster_publish.get().is_some()
    }

    /// Whether a new connection must authenticate first (NOAUTH until it does).
    pub fn auth_required(&self) -> bool {
        self.acl
            .auth_required(self.config.tunables.has_password.load(Ordering::Relaxed))
    }

    /// Builds the shared state for a server with `io_threads` event loops.
    pub fn new(
        config: Config,
        io_threads: usize,
        used_memory: Option<fn() -> usize>,
    ) -> Arc<Shared> {
        Self::with_commands(config, io_threads, used_memory, crate::command_table())
    }

    /// As [`Shared::new`], with the command table the server extended.
    pub fn with_commands(
        config: Config,
        io_threads: usize,
        used_memory: Option<fn() -> usize>,
        commands: CommandTable,
    ) -> Arc<Shared> {
        let databases = config.get_i64("databases").max(1) as usize;
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let run_id = random_hex(40);
        let shared = Arc::new(Shared {
            keyspace: Keyspace::with_databases(databases),
            config,
            commands,
            clients: ClientRegistry::default(),
            pubsub: Arc::new(crate::pubsub::PubSub::default()),
            blocking: crate::blocking::Blocking::default(),
            pause: crate::pause::ClientPause::default(),
            barrier: Barrier::new(io_threads),
            threads: Mutex::new(Vec::new()),
            facts: ServerFacts {
                run_id,
                started: Instant::now(),
                started_unix: now_unix,
                executable: std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                tcp_port: AtomicU64::new(0),
            },
            shutdown: Mutex::new(None),
            shutdown_requested: AtomicBool::new(false),
            active_expire: AtomicBool::new(true),
            used_memory,
            peak_memory: AtomicU64::new(0),
            heap_reserve: std::sync::OnceLock::new(),
            cron_paused: AtomicBool::new(false),
            log: std::sync::OnceLock::new(),
            busy_serve: std::sync::OnceLock::new(),
            estimated_memory: AtomicU64::new(0),
            dirty: AtomicU64::new(0),
            ops_per_sec: AtomicU64::new(0),
            persistence: std::sync::OnceLock::new(),
            scripts: crate::scripting::Scripts::default(),
            lazyfree: crate::lazyfree::LazyFree::default(),
            acl: crate::acl::Acl::default(),
            monitors: crate::monitor::Monitors::default(),
            slowlog: crate::slowlog::SlowLog::default(),
            latency: crate::latency::Monitor::default(),
            errorstats: crate::errorstats::ErrorStats::default(),
            tracking: crate::tracking::Tracking::default(),
            functions: crate::functions::Functions::default(),
            append_only: std::sync::OnceLock::new(),
            sentinel: std::sync::OnceLock::new(),
            cluster_view: arc_swap::ArcSwapOption::empty(),
            migrate_cache: crate::migrate::MigrateCache::default(),
            cluster_publish: std::sync::OnceLock::new(),
            cluster_drop_filter: AtomicI64::new(-1),
            cluster_lease_ms: AtomicU64::new(u64::MAX),
            cluster_config_changed: std::sync::OnceLock::new(),
            rebind: std::sync::OnceLock::new(),
            propagator: std::sync::OnceLock::new(),
            is_replica: AtomicBool::new(false),
            master_link_up: AtomicBool::new(false),
            master_stream_applied: OwnLine(AtomicU64::new(0)),
            master_stream_db: OwnLine(AtomicU64::new(0)),
            replica_written_keys: Mutex::new(std::collections::HashSet::new()),
            min_replicas_to_write: AtomicU64::new(0),
            persist: crate::persistence::PersistStats::default(),
            io_threads,
        });
        shared.sync_config();
        let pubsub = shared.pubsub.clone();
        shared
            .keyspace
            .notifier()
            .set_hook(Arc::new(move |db, flags, _class, event, key| {
                publish_keyspace_event(&pubsub, db, flags, event, key)
            }));
        // Expired and evicted keys are changes for client-side caching.
        let weak = Arc::downgrade(&shared);
        shared
            .keyspace
            .notifier()
            .set_gone_hook(Arc::new(move |key| {
                if let Some(s) = weak.upgrade().filter(|s| s.tracking.active()) {
                    s.tracking.invalidate(&s, &[key], None);
                }
            }));
        shared
    }

    /// True while an AOF rewrite runs (its walk holds the keyspace's snapshot).
    pub fn aof_rewriting(&self) -> bool {
        self.append_only.get().is_some_and(|a| a.rewriting())
    }

    /// The configuration's encoding thresholds (`hash-max-listpack-entries` ...) into
    /// `ks`: this server's keyspace, or one a replica loads beside it.
    pub fn apply_encoding_limits(&self, ks: &carmine_keyspace::Keyspace) {
        let l = ks.limits();
        let c = &self.config;
        let u = |name: &str| c.get_i64(name).max(0) as usize;
        l.hash_max_listpack_entries
            .store(u("hash-max-listpack-entries"), Ordering::Relaxed);
        l.hash_max_listpack_value
            .store(u("hash-max-listpack-value"), Ordering::Relaxed);
        l.list_max_listpack_size
            .store(c.get_i64("list-max-listpack-size"), Ordering::Relaxed);
        l.set_max_intset_entries
            .store(u("set-max-intset-entries"), Ordering::Relaxed);
        l.set_max_listpack_entries
            .store(u("set-max-listpack-entries"), Ordering::Relaxed);
        l.set_max_listpack_value
            .store(u("set-max-listpack-value"), Ordering::Relaxed);
        l.stream_node_max_bytes
            .store(u("stream-node-max-bytes"), Ordering::Relaxed);
        l.stream_node_max_entries
            .store(u("stream-node-max-entries"), Ordering::Relaxed);
        let z = ks.zset_limits();
        z.max_entries
            .store(u("zset-max-listpack-entries"), Ordering::Relaxed);
        z.max_value
            .store(u("zset-max-listpack-value"), Ordering::Relaxed);
    }

    /// Copies the configuration values the keyspace reads (encoding thresholds) into it.
    pub fn sync_config(&self) {
        self.apply_encoding_limits(&self.keyspace);
        let c = &self.config;
        let (min_replicas, max_lag) = (
            c.get_i64("min-replicas-to-write").max(0) as u64,
            c.get_i64("min-replicas-max-lag"),
        );
        self.min_replicas_to_write.store(
            if max_lag > 0 { min_replicas } else { 0 },
            Ordering::Relaxed,
        );
        let e = self.keyspace.eviction();
        let policy = c.get("maxmemory-policy").unwrap_or_default();
        e.set_policy(
            carmine_keyspace::Policy::parse(&policy)
                .unwrap_or(carmine_keyspace::Policy::NoEviction),
        );
        self.keyspace.notifier().set_flags(
            carmine_keyspace::notify::parse_flags(
                &c.get_raw("notify-keyspace-events").unwrap_or_default(),
            )
            .unwrap_or(0),
        );
        e.samples.store(
            c.get_i64("maxmemory-samples").max(1) as u64,
            Ordering::Relaxed,
        );
        e.lfu_log_factor
            .store(c.get_i64("lfu-log-factor").max(0) as u64, Ordering::Relaxed);
        e.lfu_decay_time
            .store(c.get_i64("lfu-decay-time").max(0) as u64, Ordering::Relaxed);
    }

    /// Evicts keys while memory is over `maxmemory`. Returns false if still over the limit
    /// (nothing evictable, or the per-command eviction budget ran out).
    pub fn perform_evictions(&self, now_ms: u64) -> bool {
        let max = self.config.tunables.maxmemory.load(Ordering::Relaxed);
        if max == 0 {
            return true;
        }
        // Bounded, so one command never stalls for long; later commands continue.
        for _ in 0..10_000 {
            if self.used_memory() as u64 <= max {
                return true;
            }
            let evicted = self.keyspace.evict_one(now_ms, |db, key| {
                if let Some(p) = self.propagating() {
                    p.append(&[crate::propagate::del_op(db, key)], false);
                }
            });
            if !evicted {
                return false;
            }
        }
        self.used_memory() as u64 <= max
    }

    /// Recomputes the estimate `used_memory` reports when no allocator figure is given
    /// (an embedded server); the event loop calls this from its cron.
    pub fn refresh_memory_estimate(&self) {
        if self.used_memory.is_none() {
            self.estimated_memory
                .store(self.keyspace.memory_estimate() as u64, Ordering::Relaxed);
        }
    }

    /// The propagator, when anyone reads the stream.
    pub fn propagating(&self) -> Option<&dyn crate::propagate::Propagator> {
        // A replica's stream is its master's bytes, passed on by the link: commands record
        // nothing there (a writable replica's own writes stay local, as in Redis).
        self.propagator.get().map(|p| &**p).filter(|p| {
            p.enabled() && (!self.is_replica.load(Ordering::Relaxed) || p.records_on_replica())
        })
    }

    pub fn io_threads(&self) -> usize {
        self.io_threads
    }

    /// Registers a new event loop's counters.
    pub fn new_thread_stats(&self) -> Arc<ThreadStats> {
        let s = Arc::new(ThreadStats::new(self.commands.len()));
        self.threads.lock().push(s.clone());
        s
    }

    /// Sums one counter over every thread.
    /// Writes since start, all threads together.
    pub fn total_dirty(&self) -> u64 {
        self.sum(|t| t.dirty.load(Ordering::Relaxed))
    }

    pub fn sum(&self, f: impl Fn(&ThreadStats) -> u64) -> u64 {
        self.threads.lock().iter().map(|t| f(t)).sum()
    }

    pub fn used_memory(&self) -> usize {
        let used = match self.used_memory {
            Some(f) => f(),
            None => self.estimated_memory.load(Ordering::Relaxed) as usize,
        };
        self.peak_memory.fetch_max(used as u64, Ordering::Relaxed);
        used
    }

    /// After a failed save, whether writes are refused with MISCONF: Redis'
    /// `stop-writes-on-bgsave-error` with save points configured.
    pub fn writes_stopped_by_failed_save(&self) -> bool {
        self.config.get_bool("stop-writes-on-bgsave-error")
            && !self
                .config
                .get("save")
                .unwrap_or_default()
                .trim()
                .is_empty()
    }

    /// A line in the server's log (nowhere when the server installed no logger).
    pub fn log(&self, level: u8, msg: &str) {
        if let Some(log) = self.log.get() {
            log(level, msg);
        }
    }

    pub fn request_shutdown(&self, mode: ShutdownMode) {
        *self.shutdown.lock() = Some(mode);
        self.shutdown_requested.store(true, Ordering::Release);
    }
}

/// CLIENT REPLY state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// Suppress the next command's reply only.
    SkipNext,
    /// Suppressing the current command's reply (after SKIP).
    Skipping,
}

/// A WATCHed key and what it looked like when watched.
#[derive(Clone, Debug)]
pub struct WatchedKey {
    pub db: usize,
    pub key: Vec<u8>,
    pub version: u64,
    /// The key's deadline at WATCH time (0 if none or absent): if that deadline passes
    /// before EXEC, the key expired, which counts as a modification.
    pub expire_at: u64,
}

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct MultiState {
    pub queued: Vec<(usize, Args)>,
    /// A command failed to queue (unknown, wrong arity): EXEC replies EXECABORT.
    pub aborted: bool,
}

/// One connection's state.
pub struct Session {
    pub info: Arc<ClientInfo>,
    pub thread: usize,
    pub db: usize,
    pub authenticated: bool,
    /// In MONITOR mode: it is sent every command the server runs.
    pub monitoring: bool,
    /// The ACL user after AUTH; None: the default user.
    pub user: Option<Arc<crate::acl::AclUser>>,
    pub multi: Option<MultiState>,
    pub watched: Vec<WatchedKey>,
    pub reply_mode: ReplyMode,
    /// Set by QUIT, CLIENT KILL of self, protocol errors: close once replies are written.
    pub close_after_reply: bool,
    pub channels: HashSet<Vec<u8>>,
    pub patterns: HashSet<Vec<u8>>,
    pub shard_channels: HashSet<Vec<u8>>,
    /// Set while a blocking command waits (BLPOP ...): the connection runs nothing else.
    pub blocked: Option<crate::blocking::BlockState>,
    /// A replica fed the replication stream (after SYNC / PSYNC): what it sends gets no
    /// reply, and it is not an idle client.
    pub replica_feed: bool,
    /// What a replica told us with REPLCONF before PSYNC.
    pub replconf: ReplConf,
    /// The session that applies our master's stream: no read-only, OOM or MISCONF
    /// refusal, and its replies go nowhere.
    pub master_link: bool,
    /// The session that replays the AOF at start-up: a master link's session that is
    /// not refused while the server loads.
    pub replaying: bool,
    /// Its caller holds the world stopped (DEBUG LOADAOF replays under it): commands
    /// run without taking the barrier.
    pub world_held: bool,
    /// Runs a script's `redis.call`s: never held by a client pause (the script was
    /// admitted as a whole).
    pub in_script: bool,
    /// A script's effects so far (database, command), propagated as one unit at its end.
    pub script_effects: Vec<(usize, Vec<Vec<u8>>)>,
    /// The error a script ended with was a command's, counted in INFO errorstats
    /// already where that command wrote it.
    pub script_error_counted: bool,
    /// On the master link: the master's stream offset just past the command being
    /// applied (see `Shared::master_stream_applied`).
    pub stream_offset_after: Option<u64>,
    /// Set while a blocked command runs once more at its deadline (WAIT).
    pub block_timed_out: bool,
    /// The stream offset a WAIT waits for replicas to acknowledge.
    pub wait_target: Option<u64>,
    /// ASKING was sent: the next command may touch a slot this node is importing.
    pub asking: bool,
    /// READONLY: reads of our master's slots are served here instead of redirected.
    pub cluster_readonly: bool,
    /// The command this connection named last.
    pub command_memo: crate::table::CommandMemo,
    /// The commands this connection's scripts called lately (see `script_session`).
    pub script_command_memos: crate::table::CommandMemos,
}

/// A replica's REPLCONF announcements.
#[derive(Clone, Debug, Default)]
pub struct ReplConf {
    pub listening_port: u16,
    pub ip_address: Option<String>,
    /// `capa eof`: it reads a diskless, EOF-marked payload.
    pub capa_eof: bool,
    /// `capa psync2`: it understands `+CONTINUE <replid>`.
    pub capa_psync2: bool,
    /// A Carmine replica (`capa carmine-eof-stream`): it finds an EOF mark followed in
    /// the same read by the stream, so its master need not wait for its first ACK.
    pub capa_stream_after_eof: bool,
}

impl Session {
    pub fn new(info: Arc<ClientInfo>, thread: usize, authenticated: bool) -> Session {
        Session {
            info,
            thread,
            db: 0,
            authenticated,
            monitoring: false,
            user: None,
            multi: None,
            watched: Vec::new(),
            reply_mode: ReplyMode::On,
            close_after_reply: false,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            shard_channels: HashSet::new(),
            blocked: None,
            replica_feed: false,
            replconf: ReplConf::default(),
            master_link: false,
            replaying: false,
            world_held: false,
            in_script: false,
            script_effects: Vec::new(),
            script_error_counted: false,
            stream_offset_after: None,
            block_timed_out: false,
            wait_target: None,
            asking: false,
            cluster_readonly: false,
            command_memo: Default::default(),
            script_command_memos: Default::default(),
        }
    }

    pub fn subs_mut(&mut self, kind: crate::pubsub::Kind) -> &mut HashSet<Vec<u8>> {
        use crate::pubsub::Kind;
        let (set, i) = match kind {
            Kind::Channel => (&mut self.channels, 0),
            Kind::Pattern => (&mut self.patterns, 1),
            Kind::Shard => (&mut self.shard_channels, 2),
        };
        // Published for CLIENT LIST before the caller changes the set; refreshed by
        // `subscriptions` after.
        self.info.subs[i].store(set.len() as u64, Ordering::Relaxed);
        set
    }

    /// Total subscriptions; a RESP2 client with any is in subscriber mode.
    pub fn subscriptions(&self) -> usize {
        self.info.subs[0].store(self.channels.len() as u64, Ordering::Relaxed);
        self.info.subs[1].store(self.patterns.len() as u64, Ordering::Relaxed);
        self.info.subs[2].store(self.shard_channels.len() as u64, Ordering::Relaxed);
        self.channels.len() + self.patterns.len() + self.shard_channels.len()
    }

    /// The ACL user this connection runs as.
    pub fn acl_user<'a>(&'a self, shared: &'a Shared) -> &'a Arc<crate::acl::AclUser> {
        self.user
            .as_ref()
            .unwrap_or_else(|| shared.acl.default_user())
    }

    pub fn user_name(&self) -> String {
        self.user
            .as_ref()
            .map_or_else(|| "default".to_string(), |u| u.name.clone())
    }

    /// Authenticated as `user` (AUTH, HELLO AUTH).
    pub fn set_user(&mut self, user: Arc<crate::acl::AclUser>) {
        *self.info.user.lock() = user.name.clone();
        self.authenticated = true;
        self.user = Some(user);
    }

    pub fn id(&self) -> u64 {
        self.info.id
    }

    pub fn select(&mut self, db: usize) {
        self.db = db;
        self.info.db.store(db as u64, Ordering::Relaxed);
    }

    /// Drops every WATCH (EXEC, DISCARD, UNWATCH, RESET, disconnect).
    pub fn unwatch_all(&mut self, ks: &Keyspace) {
        for w in self.watched.drain(..) {
            if let Some(db) = ks.db_ref(w.db) {
                db.watch().unwatch(&w.key);
            }
        }
    }
}

/// Publishes one keyspace event on `__keyspace@<db>__:<key>` (message: the event) and
/// `__keyevent@<db>__:<event>` (message: the key), as the flags ask.
fn publish_keyspace_event(
    pubsub: &crate::pubsub::PubSub,
    db: usize,
    flags: u32,
    event: &str,
    key: &[u8],
) {
    use crate::pubsub::Kind;
    use carmine_keyspace::notify::{KEYEVENT, KEYSPACE};
    if flags & KEYSPACE != 0 {
        let mut channel = format!("__keyspace@{db}__:").into_bytes();
        channel.extend_from_slice(key);
        pubsub.publish(Kind::Channel, &channel, event.as_bytes());
    }
    if flags & KEYEVENT != 0 {
        let channel = format!("__keyevent@{db}__:{event}");
        pubsub.publish(Kind::Channel, channel.as_bytes(), key);
    }
}
