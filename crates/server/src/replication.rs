//! The master side of replication: the replication stream (the [`Propagator`] the
//! dispatcher appends every execution unit's effects to), the replicas fed from it, and
//! SYNC / PSYNC / REPLCONF.
//!
//! A replica's full sync streams a fork-free snapshot begun with the world stopped, at
//! the stream offset of that instant; the stream bytes that arrive meanwhile wait in the
//! replica's feed (bounded by `client-output-buffer-limit replica`) and follow the
//! payload, then the replica reads the stream live. Everything reaches the replica's
//! connection through its event loop's delivery channel, in the order it was sent.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use carmine_commands::propagate::{encode_command, encode_unit, Argv, Op, Propagator};
use carmine_commands::table::{cmd, flags::*, CommandSpec, KeySpec};
use carmine_commands::{ClientInfo, Ctx, Shared};
use carmine_rdb::Snapshot;
use carmine_repl::{PsyncDecision, ReplHistory, ReplId};
use parking_lot::Mutex;

use crate::failover::{Failover, Phase};
use crate::log;
use crate::persistence::ReplPoint;

/// Bytes of payload in flight to a replica's connection before the snapshot walk waits
/// for it to drain: the walk is held back by a slow replica, never the writers.
const PAYLOAD_IN_FLIGHT: u64 = 2 << 20;
const PAYLOAD_CHUNK: usize = 256 << 10;

/// The capability a Carmine replica announces (Redis ignores capabilities it does not
/// know): it reads an EOF-marked payload to its mark wherever that falls in a read, so
/// the stream written during its sync may follow the mark at once. A Redis replica
/// looks for the mark only at the end of a read, so its master waits for the first
/// REPLCONF ACK (sent once the payload is loaded) and holds that stream until then.
pub(crate) const CAPA_STREAM_AFTER_EOF: &[u8] = b"carmine-eof-stream";

pub struct ReplicationStream {
    /// True once a replica attached: from then on commands record their effects.
    enabled: AtomicBool,
    /// Our role and the link to our master, when we are a replica.
    link: Mutex<LinkState>,
    /// Bumped at each REPLICAOF: a link thread of an older generation stops.
    link_generation: AtomicU64,
    state: Mutex<StreamState>,
    shared: Weak<Shared>,
    sync_full: AtomicU64,
    sync_partial_ok: AtomicU64,
    sync_partial_err: AtomicU64,
    /// Clients blocked in WAIT, woken when a replica acknowledges.
    waiters: Mutex<Vec<Arc<ClientInfo>>>,
    /// Replicas online whose last ACK is at most `min-replicas-max-lag` old.
    good_replicas: AtomicU64,
    /// `outgoing` holds bytes (read without the lock by every loop's before-sleep).
    has_outgoing: AtomicBool,
    /// The database our master's stream last selected, kept across a broken link.
    link_db: AtomicU64,
    failover: Failover,
    /// The append-only file, fed under the same lock as the stream.
    aof: std::sync::OnceLock<Arc<crate::aof::AppendOnly>>,
}

/// The replica role's state, for INFO and ROLE.
#[derive(Default)]
struct LinkState {
    master: Option<(String, u16)>,
    up: bool,
    last_io: Option<Instant>,
    down_since: Option<Instant>,
    sync_in_progress: bool,
    /// Between the connection and PSYNC's reply (ROLE's `handshake`).
    handshake: bool,
    sync_read: u64,
    sync_total: Option<u64>,
    /// A sync with this history's master completed: PSYNC can ask to continue.
    synced: bool,
}

struct StreamState {
    history: ReplHistory,
    /// The database the stream last selected; None forces a SELECT before the next
    /// command (a new replica must see one).
    selected: Option<usize>,
    feeds: Vec<Feed>,
    /// Stream bytes not yet handed to the live replicas (see `flush_feeds`).
    outgoing: Vec<u8>,
    scratch: Vec<u8>,
    last_ping: Instant,
    last_keepalive: Instant,
    /// Since when a master with a backlog has had no replica (`repl-backlog-ttl`).
    no_replicas_since: Option<Instant>,
}

/// One replica reading the stream.
struct Feed {
    info: Arc<ClientInfo>,
    /// Not live yet: the offset of the first stream byte it will need once its snapshot
    /// is out. The bytes wait in the backlog, which keeps them (one copy for every
    /// replica, as Redis 7's shared replication buffer).
    held_from: Option<u64>,
    /// An EOF-marked payload is out: the replica finds the mark only as the last bytes
    /// it read, so the stream waits for its first REPLCONF ACK (as Redis waits).
    awaiting_ack: bool,
    /// Takes the stream right after an EOF-marked payload (see [`CAPA_STREAM_AFTER_EOF`]).
    stream_after_eof: bool,
    /// Acknowledged before the transfer that sent its payload had finished (the last
    /// bytes can reach the replica, and it can load them and answer, before the sending
    /// thread returns): it goes online as soon as the transfer ends, not at its next
    /// acknowledgement a second later.
    acked_early: bool,
    /// Waiting for its snapshot to start (Redis' WAIT_BGSAVE_START).
    waiting: Option<Waiting>,
    /// Gets a newline every second until its payload starts (waiting, or while a
    /// disk-based snapshot is written), so that its link does not time out.
    keepalive: bool,
    ack_offset: u64,
    ack_at: Instant,
    ip: String,
    port: u16,
}

/// A replica that asked for a full sync and waits for its snapshot: at once, or after
/// `repl-diskless-sync-delay`, so that replicas arriving together share one snapshot.
struct Waiting {
    since: Instant,
    /// It asked with PSYNC: `+FULLRESYNC <id> <offset>` goes before the payload.
    psync: bool,
    /// It takes an EOF-marked diskless payload.
    eof: bool,
}

impl Feed {
    fn state(&self) -> &'static str {
        if self.held_from.is_some() {
            "wait_bgsave"
        } else {
            "online"
        }
    }

    /// Waiting for its snapshot, or receiving it (not reading the live stream).
    fn held(&self) -> bool {
        self.held_from.is_some()
    }
}

impl StreamState {
    /// The first stream byte a replica receiving its snapshot still needs: the backlog
    /// keeps everything from there.
    fn refresh_pin(&mut self) {
        let pin = self
            .feeds
            .iter()
            .filter(|f| f.waiting.is_none())
            .filter_map(|f| f.held_from)
            .min();
        self.history.set_pin(pin);
    }

    /// Sends the replica the stream written since its snapshot (from the backlog); from
    /// now on it reads the live stream.
    fn go_online(&mut self, id: u64) {
        let Some(f) = self.feeds.iter_mut().find(|f| f.info.id == id) else {
            return;
        };
        f.awaiting_ack = false;
        if let Some(from) = f.held_from.take() {
            if from <= self.history.master_repl_offset() {
                match self.history.backlog().copy_from(from) {
                    Some(held) => {
                        deliver(&f.info, Bytes::from(held));
                    }
                    // The pin makes this impossible; never send a stream with a hole.
                    None => {
                        log::warning(&format!(
                            "Replica {} lost the stream written during its sync; dropping it",
                            f.info.addr
                        ));
                        f.info.kill();
                    }
                }
            }
        }
        self.refresh_pin();
    }
}

/// A writable replica expires the keys its own clients gave deadlines to (Redis'
/// expireSlaveKeys); the keys of its master's stream wait for the master's DELs.
fn expire_replica_writes(shared: &Shared) {
    let mut written = shared.replica_written_keys.lock();
    if written.is_empty() {
        return;
    }
    if !shared.is_replica.load(Ordering::Relaxed) {
        written.clear();
        return;
    }
    let now = carmine_keyspace::now_ms();
    written.retain(|(db, key)| {
        shared.keyspace.expire_if_due(*db, key, now) == carmine_keyspace::DeadlineCheck::Pending
    });
}

/// Hands bytes to a client's event loop; false once the connection is gone.
fn deliver(info: &ClientInfo, bytes: Bytes) -> bool {
    match info.deliver.lock().as_ref() {
        Some(hook) => {
            hook(bytes);
            true
        }
        None => false,
    }
}

fn random_id() -> ReplId {
    let mut bytes = [0u8; 20];
    for b in &mut bytes {
        *b = fastrand::u8(..);
    }
    ReplId::from_random(bytes)
}

impl ReplicationStream {
    pub fn install(shared: &Arc<Shared>) {
        let size = shared.config.get_i64("repl-backlog-size").max(16 * 1024) as usize;
        let stream = ReplicationStream {
            enabled: AtomicBool::new(false),
            link: Mutex::new(LinkState::default()),
            link_generation: AtomicU64::new(0),
            state: Mutex::new(StreamState {
                history: ReplHistory::new(random_id(), size),
                selected: None,
                feeds: Vec::new(),
                outgoing: Vec::new(),
                scratch: Vec::new(),
                last_ping: Instant::now(),
                last_keepalive: Instant::now(),
                no_replicas_since: None,
            }),
            shared: Arc::downgrade(shared),
            sync_full: AtomicU64::new(0),
            sync_partial_ok: AtomicU64::new(0),
            sync_partial_err: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
            good_replicas: AtomicU64::new(0),
            has_outgoing: AtomicBool::new(false),
            link_db: AtomicU64::new(0),
            failover: Failover::default(),
            aof: std::sync::OnceLock::new(),
        };
        let _ = shared.propagator.set(Arc::new(stream));
    }

    pub(crate) fn of(shared: &Shared) -> Option<&ReplicationStream> {
        shared
            .propagator
            .get()
            .and_then(|p| p.as_any().downcast_ref::<ReplicationStream>())
    }

    /// The cron's part (loop 0): PING the replicas every `repl-ping-replica-period`, so
    /// that they see the link alive and their offsets move, as Redis does.
    pub fn cron(shared: &Shared) {
        let Some(stream) = Self::of(shared) else {
            return;
        };
        expire_replica_writes(shared);
        if let Some(owned) = stream.owner() {
            stream.failover.cron(&owned, stream);
        }
        let period = shared.config.get_i64("repl-ping-replica-period").max(1) as u64;
        let mut st = {
            // While the world is stopped (DEBUG SLEEP, a long EXCLUSIVE command) this
            // loop waits too, as Redis' single thread would: no keepalive, no PING.
            // A busy script's world is waited for no longer: the loop must answer its
            // clients (-BUSY, SCRIPT KILL) meanwhile.
            let Some(_turn) = shared
                .barrier
                .shared_unless(0, || shared.scripts.running.busy())
            else {
                return;
            };
            stream.state.lock()
        };
        // Forget replicas whose connection closed.
        st.feeds.retain(|f| f.info.deliver.lock().is_some());
        stream.refresh_good_replicas(&st, shared);
        // CONFIG SET repl-backlog-size takes effect here, keeping the newest bytes.
        let size = shared.config.get_i64("repl-backlog-size").max(16 * 1024) as usize;
        if st.history.configured_size() != size {
            st.history.resize_backlog(size);
        }
        // Replicas that went away while receiving a snapshot no longer pin the backlog.
        st.refresh_pin();
        // A master without replicas for `repl-backlog-ttl` seconds frees its backlog and
        // starts a new history (Redis: nobody can continue the old one anyway).
        let ttl = shared.config.get_i64("repl-backlog-ttl").max(0) as u64;
        if !st.feeds.is_empty() || shared.is_replica.load(Ordering::Relaxed) {
            st.no_replicas_since = None;
        } else if st.history.backlog_active() {
            let since = *st.no_replicas_since.get_or_insert_with(Instant::now);
            if ttl > 0 && since.elapsed() > Duration::from_secs(ttl) {
                st.history.shift_replid(random_id());
                st.history.clear_replid2();
                st.history.deactivate_backlog();
                stream.enabled.store(false, Ordering::Release);
                st.no_replicas_since = None;
                log::notice(&format!(
                    "Replication backlog freed after {ttl} seconds without connected replicas."
                ));
            }
        }
        if st.last_keepalive.elapsed() >= Duration::from_secs(1) {
            st.last_keepalive = Instant::now();
            for f in st.feeds.iter().filter(|f| f.keepalive) {
                deliver(&f.info, Bytes::from_static(b"\n"));
            }
        }
        let due = Self::due_group(&st, shared).is_some();
        drop(st);
        if due {
            // A snapshot starts with the world stopped (barrier before the stream lock).
            let _world = shared.barrier.exclusive();
            stream.start_waiting_syncs(&mut stream.state.lock(), shared);
        }
        let mut st = stream.state.lock();
        // A replica's stream is its master's, PINGs included: it adds none of its own.
        if !stream.enabled.load(Ordering::Relaxed)
            || shared.is_replica.load(Ordering::Relaxed)
            || st.feeds.is_empty()
            || st.last_ping.elapsed() < Duration::from_secs(period)
        {
            return;
        }
        st.last_ping = Instant::now();
        let mut bytes = Vec::new();
        // No SELECT: PING applies to no database.
        encode_command(&Argv::Owned(vec![b"PING".to_vec()]), &mut bytes);
        stream.feed_locked(&mut st, &bytes, shared);
        stream.flush_outgoing_locked(&mut st);
    }

    /// Encodes one unit (a SELECT first when its database is not the stream's) and feeds
    /// it, under the stream's lock.
    fn encode_and_feed(&self, st: &mut StreamState, shared: &Shared, ops: &[Op<'_>], wrap: bool) {
        let mut bytes = std::mem::take(&mut st.scratch);
        bytes.clear();
        let mut selected = st.selected;
        encode_unit(&mut selected, ops, wrap, &mut bytes);
        st.selected = selected;
        self.feed_locked(st, &bytes, shared);
        st.scratch = bytes;
    }

    /// Appends encoded stream bytes: the backlog, then each replica (live, or held while
    /// its snapshot is sent). A replica whose held bytes pass its output limit is dropped.
    fn feed_locked(&self, st: &mut StreamState, bytes: &[u8], shared: &Shared) {
        st.history.feed(bytes);
        // Read only when some replica's bytes are held (its snapshot is being sent): a
        // lock word every event loop's writes would share otherwise.
        let hard = if st.feeds.iter().any(|f| f.held() && f.waiting.is_none()) {
            match shared.config.tunables.obuf.read()[1].hard {
                0 => 0,
                // At least repl-backlog-size, as for live replicas (see the event loop).
                h => h.max(st.history.configured_size() as u64),
            }
        } else {
            0
        };
        let offset = st.history.master_repl_offset();
        let mut live = false;
        let before = st.feeds.len();
        st.feeds.retain_mut(|f| match f.held_from {
            Some(_) if f.info.deliver.lock().is_none() => false,
            // Its snapshot has not begun: nothing is held for it yet.
            Some(_) if f.waiting.is_some() => true,
            Some(from) => {
                let held = (offset + 1).saturating_sub(from);
                if hard > 0 && held > hard {
                    log::warning(&format!(
                        "Client id={} addr={} closed for overcoming of output buffer limits \
                         (replica waiting for its snapshot).",
                        f.info.id, f.info.addr
                    ));
                    f.info.kill();
                    return false;
                }
                true
            }
            None => {
                live = true;
                true
            }
        });
        if st.feeds.len() != before {
            st.refresh_pin();
        }
        if live {
            // Handed to the live replicas once per loop turn (flush_feeds), not once per
            // command: one allocation and one wake-up of the replica's loop per turn.
            st.outgoing.extend_from_slice(bytes);
            self.has_outgoing.store(true, Ordering::Release);
        }
    }

    /// Hands the stream bytes gathered for the live replicas to their connections.
    /// Hands the stream written since the last call to every replica's event loop;
    /// returns whether there was any.
    fn flush_outgoing_locked(&self, st: &mut StreamState) -> bool {
        self.has_outgoing.store(false, Ordering::Release);
        if st.outgoing.is_empty() {
            return false;
        }
        let bytes = Bytes::from(std::mem::take(&mut st.outgoing));
        st.feeds
            .retain(|f| f.held() || deliver(&f.info, bytes.clone()));
        true
    }

    /// The event loops' before-sleep step (and the master link's, after each batch):
    /// one atomic load when there is nothing to send. True when replicas were handed
    /// new bytes.
    pub fn flush_feeds(shared: &Shared) -> bool {
        let Some(stream) = Self::of(shared) else {
            return false;
        };
        if stream.has_outgoing.load(Ordering::Acquire) {
            let mut st = stream.state.lock();
            return stream.flush_outgoing_locked(&mut st);
        }
        false
    }

    pub(crate) fn link_db(&self) -> usize {
        self.link_db.load(Ordering::Relaxed) as usize
    }

    pub(crate) fn set_link_db(&self, db: usize) {
        self.link_db.store(db as u64, Ordering::Relaxed);
    }

    pub(crate) fn link_generation(&self) -> u64 {
        self.link_generation.load(Ordering::Acquire)
    }

    /// Our replication offset: the bytes of the stream we applied (or produced).
    pub(crate) fn offset(&self) -> u64 {
        self.state.lock().history.master_repl_offset()
    }

    /// The replication id this server's stream carries (a replica's: its master's).
    pub(crate) fn replid(&self) -> ReplId {
        self.state.lock().history.replid()
    }

    /// What PSYNC asks for: our history's id and next byte when we hold one worth
    /// continuing (after a sync, or as a former master), else a full sync.
    pub(crate) fn psync_request(&self) -> (Option<ReplId>, u64) {
        let st = self.state.lock();
        let worth = self.link.lock().synced || st.history.master_repl_offset() > 0;
        let h = &st.history;
        (worth.then_some(h.replid()), h.master_repl_offset() + 1)
    }

    /// `+CONTINUE <id>`: the master's history has a new id from here on.
    pub(crate) fn continue_with(&self, id: Option<ReplId>) {
        // Our history is now our master's (a promoted master demoted again continues
        // without a full sync): a snapshot saves its position from here on.
        self.link.lock().synced = true;
        if let Some(id) = id {
            let mut st = self.state.lock();
            if st.history.replid() != id {
                st.history.shift_replid(id);
                // Our replicas must learn the new id: they reconnect and continue with
                // a partial resync (as Redis disconnects its sub-replicas here).
                Self::disconnect_feeds(&mut st);
            }
        }
    }

    /// Drops every replica's link; each reconnects (our replid2 lets it continue).
    fn disconnect_feeds(st: &mut StreamState) {
        st.outgoing.clear();
        for f in st.feeds.drain(..) {
            f.info.kill();
        }
        st.refresh_pin();
    }

    /// Hands the stream its append-only file (installed once, at start-up).
    pub(crate) fn set_append_only(&self, aof: Arc<crate::aof::AppendOnly>) {
        let _ = self.aof.set(aof);
    }

    pub(crate) fn append_only(&self) -> Option<&crate::aof::AppendOnly> {
        self.aof.get().map(|a| &**a)
    }

    pub(crate) fn append_only_arc(&self) -> Option<&Arc<crate::aof::AppendOnly>> {
        self.aof.get()
    }

    pub(crate) fn owner(&self) -> Option<Arc<Shared>> {
        self.shared.upgrade()
    }

    pub(crate) fn failover(&self) -> &Failover {
        &self.failover
    }

    pub(crate) fn replica_count(&self) -> usize {
        self.state.lock().feeds.len()
    }

    /// Whether the replica listening at host:port is online (None: no such replica).
    pub(crate) fn replica_online(&self, host: &str, port: u16) -> Option<bool> {
        let st = self.state.lock();
        st.feeds
            .iter()
            .find(|f| f.ip == host && f.port == port)
            .map(|f| !f.held())
    }

    /// A replica (the given one, or any) that acknowledged our whole stream.
    pub(crate) fn caught_up_replica(
        &self,
        target: Option<&(String, u16)>,
    ) -> Option<(String, u16)> {
        let st = self.state.lock();
        let offset = st.history.master_repl_offset();
        st.feeds
            .iter()
            .filter(|f| !f.held() && f.ack_offset == offset)
            .find(|f| target.is_none_or(|(h, p)| f.ip == *h && f.port == *p))
            .map(|f| (f.ip.clone(), f.port))
    }

    /// The position a snapshot begun now saves (Redis' rdbPopulateSaveInfo): a master's
    /// own once it keeps a backlog, a replica's master's once it synced. The caller
    /// stopped the world, so the offset matches the snapshot's data exactly.
    pub(crate) fn save_point(&self, shared: &Shared) -> Option<ReplPoint> {
        let st = self.state.lock();
        if shared.is_replica.load(Ordering::Acquire) {
            let synced = self.link.lock().synced;
            synced.then(|| ReplPoint {
                replid: st.history.replid(),
                offset: shared.master_stream_applied.load(Ordering::Acquire),
                db: shared.master_stream_db.load(Ordering::Acquire) as usize,
            })
        } else {
            st.history.backlog_active().then(|| ReplPoint {
                replid: st.history.replid(),
                offset: st.history.master_repl_offset(),
                db: st.selected.unwrap_or(0),
            })
        }
    }

    /// Start-up loaded a snapshot saved at `point`. A replica continues its master's
    /// stream from there; a master keeps it as its secondary id with an empty backlog
    /// past it, so its replicas continue too, then propagates the DELs of the keys the
    /// load found expired (Redis' loadDataFromDisk).
    pub(crate) fn restore_from_snapshot(
        &self,
        shared: &Shared,
        point: ReplPoint,
        expired: &[(usize, Vec<u8>)],
    ) {
        let replica = !shared
            .config
            .get("replicaof")
            .unwrap_or_default()
            .trim()
            .is_empty();
        let mut st = self.state.lock();
        st.history.reset(point.replid, point.offset);
        st.history.activate_backlog();
        if replica {
            self.link.lock().synced = true;
            self.set_link_db(point.db);
            shared
                .master_stream_applied
                .store(point.offset, Ordering::Release);
            shared
                .master_stream_db
                .store(point.db as u64, Ordering::Release);
            return;
        }
        st.history.shift_replid(random_id());
        self.enabled.store(true, Ordering::Release);
        drop(st);
        for (db, key) in expired {
            self.append(&[carmine_commands::propagate::del_op(*db, key)], false);
        }
    }

    /// A full sync loaded: the master's id and offset become ours. Our own replicas
    /// followed the old history, so they must sync again.
    pub(crate) fn reset_after_full_sync(&self, replid: ReplId, offset: u64) {
        // The master selects a database before the first command after a snapshot.
        self.link_db.store(0, Ordering::Relaxed);
        let mut st = self.state.lock();
        st.history.reset(replid, offset);
        if let Some(shared) = self.shared.upgrade() {
            shared
                .master_stream_applied
                .store(offset, Ordering::Release);
            shared.master_stream_db.store(0, Ordering::Release);
        }
        st.history.activate_backlog();
        Self::disconnect_feeds(&mut st);
        self.link.lock().synced = true;
    }

    /// Bytes of the master's stream we applied: our offset, backlog and replicas follow
    /// them unchanged (a chained replica reads exactly what our master sent).
    pub(crate) fn feed_raw(&self, bytes: &[u8], shared: &Shared) {
        let mut st = self.state.lock();
        self.feed_locked(&mut st, bytes, shared);
    }

    pub(crate) fn link_handshake(&self, on: bool) {
        self.link.lock().handshake = on;
    }

    /// A full sync from our master is being received or loaded.
    pub(crate) fn sync_in_progress(&self) -> bool {
        self.link.lock().sync_in_progress
    }

    pub(crate) fn sync_progress(&self, read: u64, total: Option<u64>) {
        let mut l = self.link.lock();
        l.handshake = false;
        l.sync_in_progress = true;
        l.sync_read = read;
        l.sync_total = total;
        l.last_io = Some(Instant::now());
    }

    pub(crate) fn link_up(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.master_link_up.store(true, Ordering::Release);
        }
        let mut l = self.link.lock();
        l.up = true;
        l.handshake = false;
        l.sync_in_progress = false;
        l.down_since = None;
        l.last_io = Some(Instant::now());
    }

    pub(crate) fn link_io(&self) {
        self.link.lock().last_io = Some(Instant::now());
    }

    pub(crate) fn link_down(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.master_link_up.store(false, Ordering::Release);
        }
        let mut l = self.link.lock();
        if l.up || l.down_since.is_none() {
            l.down_since = Some(Instant::now());
        }
        l.up = false;
        l.handshake = false;
        l.sync_in_progress = false;
    }

    /// REPLICAOF host port (Some) or NO ONE (None). Returns false when already a
    /// replica of that master.
    pub(crate) fn set_master(&self, shared: &Arc<Shared>, master: Option<(String, u16)>) -> bool {
        let mut l = self.link.lock();
        if l.master == master {
            return false;
        }
        let was_replica = l.master.is_some();
        *l = LinkState {
            master: master.clone(),
            down_since: Some(Instant::now()),
            synced: l.synced && master.is_some(),
            ..LinkState::default()
        };
        drop(l);
        shared.master_link_up.store(false, Ordering::Release);
        // CONFIG REWRITE keeps the role (Redis rewrites `replicaof` from the live state).
        let value = master
            .as_ref()
            .map_or_else(String::new, |(h, p)| format!("{h} {p}"));
        let _ = shared.config.set("replicaof", &[value], true);
        let generation = self.link_generation.fetch_add(1, Ordering::AcqRel) + 1;
        match master {
            Some((host, port)) => {
                shared.is_replica.store(true, Ordering::Release);
                shared.pause.refresh_expiry(shared);
                log::notice(&format!(
                    "REPLICAOF {host}:{port} enabled (user request from client)"
                ));
                crate::master_link::spawn(shared, host, port, generation);
            }
            None => {
                shared.is_replica.store(false, Ordering::Release);
                shared.pause.refresh_expiry(shared);
                if was_replica {
                    // Our replicas of the old master's history can continue with us.
                    let mut st = self.state.lock();
                    st.history.shift_replid(random_id());
                    st.history.activate_backlog();
                    // They reconnect, learn the new id and continue from the backlog.
                    Self::disconnect_feeds(&mut st);
                    self.enabled.store(true, Ordering::Release);
                    log::notice(&format!(
                        "Setting secondary replication ID to {}, valid up to offset: {}. New replication ID is {}",
                        st.history.replid2(),
                        st.history.second_replid_offset(),
                        st.history.replid()
                    ));
                }
                log::notice("MASTER MODE enabled (user request from client)");
            }
        }
        true
    }

    /// The group of waiting replicas (by payload kind, EOF-marked or not) whose snapshot
    /// is due now, if any.
    fn due_group(st: &StreamState, shared: &Shared) -> Option<bool> {
        if shared.persist.bgsave_in_progress.load(Ordering::Acquire) {
            return None;
        }
        let (since, eof) = st
            .feeds
            .iter()
            .filter_map(|f| f.waiting.as_ref())
            .min_by_key(|w| w.since)
            .map(|w| (w.since, w.eof))?;
        let delay = if eof {
            shared.config.get_i64("repl-diskless-sync-delay").max(0) as u64
        } else {
            0
        };
        let max = shared
            .config
            .get_i64("repl-diskless-sync-max-replicas")
            .max(0) as usize;
        let count = st
            .feeds
            .iter()
            .filter(|f| f.waiting.as_ref().is_some_and(|w| w.eof == eof))
            .count();
        let due = since.elapsed() >= Duration::from_secs(delay) || (max > 0 && count >= max);
        due.then_some(eof)
    }

    /// Starts one snapshot for the replicas waiting for a full sync, when due: at once
    /// without a delay, else once the first has waited `repl-diskless-sync-delay`
    /// seconds or `repl-diskless-sync-max-replicas` have come; never while another
    /// snapshot runs (they wait for it to end). The caller stopped the world, so the
    /// snapshot and the offset it is sent at are one point of the stream. True if one
    /// started.
    fn start_waiting_syncs(&self, st: &mut StreamState, shared: &Shared) -> bool {
        let Some(eof) = Self::due_group(st, shared) else {
            return false;
        };
        let in_group = |f: &Feed| f.waiting.as_ref().is_some_and(|w| w.eof == eof);
        let Some(owned) = self.shared.upgrade() else {
            return false;
        };
        let point = ReplPoint {
            replid: st.history.replid(),
            offset: st.history.master_repl_offset(),
            db: 0,
        };
        // Their replies first, so that no payload byte can precede them.
        let mut targets = Vec::new();
        for f in st.feeds.iter_mut().filter(|f| in_group(f)) {
            if f.waiting.as_ref().is_some_and(|w| w.psync) {
                deliver(
                    &f.info,
                    Bytes::from(format!("+FULLRESYNC {} {}\r\n", point.replid, point.offset)),
                );
            }
            targets.push(f.info.clone());
        }
        let job_targets = targets.clone();
        let started = crate::persistence::spawn_snapshot(
            shared,
            owned,
            "carmine-fullsync",
            move |owned, snap| send_snapshot(owned, snap, &job_targets, point, eof),
        );
        if let Err(e) = started {
            log::warning(&format!("Can't start the snapshot for a full sync: {e}"));
            st.feeds.retain(|f| {
                let drop = in_group(f);
                if drop {
                    f.info.kill();
                }
                !drop
            });
            return false;
        }
        // The stream from here on is held for them, and selects its database anew.
        st.selected = None;
        for f in st.feeds.iter_mut().filter(|f| in_group(f)) {
            f.waiting = None;
            f.held_from = Some(point.offset + 1);
            f.keepalive = !eof;
        }
        // Their bytes from the snapshot's offset on stay in the backlog until they are live.
        st.refresh_pin();
        let ids: Vec<String> = targets.iter().map(|t| t.id.to_string()).collect();
        log::notice(&format!(
            "Starting BGSAVE for SYNC with target: {} (client ids {})",
            if eof { "replicas sockets" } else { "disk" },
            ids.join(" ")
        ));
        true
    }

    /// Recounts the good replicas (cron, and whenever a replica acknowledges).
    fn refresh_good_replicas(&self, st: &StreamState, shared: &Shared) {
        let max_lag = shared.config.get_i64("min-replicas-max-lag").max(0) as u64;
        let good = st
            .feeds
            .iter()
            .filter(|f| !f.held() && f.ack_at.elapsed().as_secs() <= max_lag)
            .count() as u64;
        self.good_replicas.store(good, Ordering::Relaxed);
    }

    /// Runs each WAIT again (through its loop's ready hook); one whose connection is
    /// gone is forgotten.
    fn wake_waiters(&self) {
        self.waiters
            .lock()
            .retain(|c| match c.ready.lock().as_ref() {
                Some(ready) => {
                    ready();
                    true
                }
                None => false,
            });
    }

    /// Replicas whose acknowledged offset reached `offset`.
    fn acked(&self, offset: u64) -> usize {
        let st = self.state.lock();
        st.feeds
            .iter()
            .filter(|f| !f.held() && f.ack_offset >= offset)
            .count()
    }

    fn feed_of(st: &mut StreamState, id: u64) -> Option<&mut Feed> {
        st.feeds.iter_mut().find(|f| f.info.id == id)
    }
}

impl Propagator for ReplicationStream {
    fn change_replication_id(&self) {
        let mut st = self.state.lock();
        st.history.shift_replid(random_id());
        st.history.clear_replid2();
    }

    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed) || self.records_on_replica()
    }

    fn records_on_replica(&self) -> bool {
        self.aof.get().is_some_and(|a| a.feeding())
    }

    fn append(&self, ops: &[Op<'_>], wrap: bool) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut st = self.state.lock();
        if let Some(aof) = self.aof.get().filter(|a| a.feeding()) {
            aof.feed(&shared, ops, wrap);
        }
        // A replica's stream for its own replicas is its master's bytes (feed_raw).
        if !self.enabled.load(Ordering::Relaxed) || shared.is_replica.load(Ordering::Relaxed) {
            return;
        }
        self.encode_and_feed(&mut st, &shared, ops, wrap);
    }

    fn append_to_replicas(&self, ops: &[Op<'_>]) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut st = self.state.lock();
        if !self.enabled.load(Ordering::Relaxed) || shared.is_replica.load(Ordering::Relaxed) {
            return;
        }
        self.encode_and_feed(&mut st, &shared, ops, false);
    }

    fn info(&self, out: &mut String) {
        use std::fmt::Write as _;
        let st = self.state.lock();
        let h = &st.history;
        let l = self.link.lock();
        if let Some((host, port)) = &l.master {
            let since = |t: Option<Instant>| t.map_or(-1, |t| t.elapsed().as_secs() as i64);
            let _ = write!(
                out,
                "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{}\r\n\
                 master_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\n\
                 slave_read_repl_offset:{}\r\nslave_repl_offset:{}\r\n",
                if l.up { "up" } else { "down" },
                since(l.last_io),
                u8::from(l.sync_in_progress),
                h.master_repl_offset(),
                h.master_repl_offset(),
            );
            if l.sync_in_progress {
                let total = l.sync_total.map_or(-1, |t| t as i64);
                let _ = write!(
                    out,
                    "master_sync_total_bytes:{total}\r\nmaster_sync_read_bytes:{}\r\n\
                     master_sync_left_bytes:{}\r\nmaster_sync_last_io_seconds_ago:{}\r\n",
                    l.sync_read,
                    total - l.sync_read as i64,
                    since(l.last_io),
                );
            }
            if !l.up {
                let _ = write!(
                    out,
                    "master_link_down_since_seconds:{}\r\n",
                    since(l.down_since)
                );
            }
            let config = self.shared.upgrade();
            let flag =
                |name: &str| u8::from(config.as_ref().is_none_or(|s| s.config.get_bool(name)));
            let _ = write!(
                out,
                "slave_priority:{}\r\nslave_read_only:{}\r\nreplica_announced:{}\r\n",
                config
                    .as_ref()
                    .map_or(100, |s| s.config.get_i64("replica-priority")),
                flag("replica-read-only"),
                flag("replica-announced"),
            );
        } else {
            out.push_str("role:master\r\n");
        }
        drop(l);
        // A replica CLIENT KILL just marked is gone for INFO, as in Redis (its loop closes
        // the socket a moment later).
        let live: Vec<_> = st
            .feeds
            .iter()
            .filter(|f| !f.info.killed.load(Ordering::Acquire))
            .collect();
        let _ = write!(out, "connected_slaves:{}\r\n", live.len());
        for (i, f) in live.into_iter().enumerate() {
            let _ = write!(
                out,
                "slave{i}:ip={},port={},state={},offset={},lag={}\r\n",
                f.ip,
                f.port,
                f.state(),
                f.ack_offset,
                f.ack_at.elapsed().as_secs()
            );
        }
        let b = h.backlog();
        let _ = write!(
            out,
            "master_failover_state:{}\r\nmaster_replid:{}\r\nmaster_replid2:{}\r\n\
             master_repl_offset:{}\r\nsecond_repl_offset:{}\r\nrepl_backlog_active:{}\r\n\
             repl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{}\r\n",
            self.failover.info_state(),
            h.replid(),
            h.replid2(),
            h.master_repl_offset(),
            h.second_replid_offset(),
            u8::from(h.backlog_active()),
            h.configured_size(),
            if h.backlog_active() { b.first_byte_offset() } else { 0 },
            b.histlen(),
        );
    }

    fn good_replicas(&self) -> u64 {
        self.good_replicas.load(Ordering::Relaxed)
    }

    fn sync_counts(&self) -> [u64; 3] {
        [
            self.sync_full.load(Ordering::Relaxed),
            self.sync_partial_ok.load(Ordering::Relaxed),
            self.sync_partial_err.load(Ordering::Relaxed),
        ]
    }

    fn buffer_bytes(&self) -> u64 {
        let st = self.state.lock();
        if st.history.backlog_active() {
            st.history.backlog().allocated() as u64
        } else {
            0
        }
    }

    fn reset_sync_counts(&self) {
        self.sync_full.store(0, Ordering::Relaxed);
        self.sync_partial_ok.store(0, Ordering::Relaxed);
        self.sync_partial_err.store(0, Ordering::Relaxed);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The replication commands the server adds to the command table.
pub fn commands() -> Vec<CommandSpec> {
    let g = "server";
    vec![
        cmd(
            "sync",
            1,
            ADMIN | NOSCRIPT | EXCLUSIVE | NO_MULTI | NO_ASYNC_LOADING,
            KeySpec::None,
            sync,
            g,
            "@admin @slow @dangerous",
            "Internal command used for replication.",
        ),
        cmd(
            "psync",
            -3,
            ADMIN | NOSCRIPT | EXCLUSIVE | NO_MULTI | NO_ASYNC_LOADING,
            KeySpec::None,
            psync,
            g,
            "@admin @slow @dangerous",
            "An internal command used in replication.",
        ),
        cmd(
            "replicaof",
            3,
            ADMIN | NOSCRIPT | STALE | NO_ASYNC_LOADING,
            KeySpec::None,
            replicaof,
            g,
            "@admin @slow @dangerous",
            "Configures a server as replica of another, or promotes it to a master.",
        ),
        cmd(
            "slaveof",
            3,
            ADMIN | NOSCRIPT | STALE | NO_ASYNC_LOADING,
            KeySpec::None,
            replicaof,
            g,
            "@admin @slow @dangerous",
            "Sets a Redis server as a replica of another, or promotes it to being a master.",
        ),
        cmd(
            "wait",
            3,
            NOSCRIPT,
            KeySpec::None,
            wait,
            g,
            "@slow @connection",
            "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.",
        ),
        cmd(
            "role",
            1,
            NOSCRIPT | LOADING | STALE | FAST,
            KeySpec::None,
            role,
            g,
            "@admin @fast @dangerous",
            "Returns the replication role.",
        ),
        cmd(
            "replconf",
            -1,
            ADMIN | NOSCRIPT | LOADING | STALE,
            KeySpec::None,
            replconf,
            g,
            "@admin @slow @dangerous",
            "An internal command for configuring the replication stream.",
        ),
    ]
}

fn replconf(ctx: &mut Ctx<'_, '_>) {
    if ctx.args.len().is_multiple_of(2) {
        return ctx.syntax_error();
    }
    let mut i = 1;
    while i + 1 < ctx.args.len() {
        let (opt, val) = (ctx.arg(i).to_ascii_lowercase(), ctx.arg(i + 1).to_vec());
        match opt.as_slice() {
            b"listening-port" => {
                let Some(port) = carmine_resp::parse_i64(&val).and_then(|p| u16::try_from(p).ok())
                else {
                    return ctx.error("ERR value is not an integer or out of range");
                };
                ctx.session.replconf.listening_port = port;
            }
            b"ip-address" => {
                ctx.session.replconf.ip_address = Some(String::from_utf8_lossy(&val).into());
            }
            b"capa" => {
                if val.eq_ignore_ascii_case(b"eof") {
                    ctx.session.replconf.capa_eof = true;
                } else if val.eq_ignore_ascii_case(b"psync2") {
                    ctx.session.replconf.capa_psync2 = true;
                } else if val.eq_ignore_ascii_case(CAPA_STREAM_AFTER_EOF) {
                    ctx.session.replconf.capa_stream_after_eof = true;
                }
            }
            b"ack" | b"fack" => {
                // A replica's acknowledgement: no reply, as Redis.
                if let (Some(offset), Some(stream)) = (
                    carmine_resp::parse_i64(&val),
                    ReplicationStream::of(ctx.shared),
                ) {
                    let mut st = stream.state.lock();
                    if let Some(f) = ReplicationStream::feed_of(&mut st, ctx.session.id()) {
                        if opt == b"ack" {
                            f.ack_offset = f.ack_offset.max(offset.max(0) as u64);
                        }
                        f.ack_at = Instant::now();
                        if f.awaiting_ack {
                            // Bytes gathered for the live replicas before this one joins
                            // them were in its held bytes already.
                            let id = f.info.id;
                            stream.flush_outgoing_locked(&mut st);
                            st.go_online(id);
                        } else if f.held_from.is_some() && f.waiting.is_none() {
                            // A replica acknowledges only once it has loaded its payload.
                            f.acked_early = true;
                        }
                    }
                    stream.refresh_good_replicas(&st, ctx.shared);
                    drop(st);
                    stream.wake_waiters();
                }
                return;
            }
            b"getack" => return,
            b"rdb-only" | b"rdb-filter-only" => {}
            _ => {
                let name = String::from_utf8_lossy(&opt).into_owned();
                return ctx.error(&format!("ERR Unrecognized REPLCONF option: {name}"));
            }
        }
        i += 2;
    }
    ctx.reply.ok();
}

/// Parses `host port` (REPLICAOF, `replicaof` in the config file).
pub fn parse_master(host: &[u8], port: &[u8]) -> Option<(String, u16)> {
    let port = carmine_resp::parse_i64(port).and_then(|p| u16::try_from(p).ok())?;
    Some((String::from_utf8_lossy(host).into_owned(), port))
}

fn replicaof(ctx: &mut Ctx<'_, '_>) {
    let Some(stream) = ReplicationStream::of(ctx.shared) else {
        return ctx.error("ERR replication is not available on this server");
    };
    let Some(shared) = stream.shared.upgrade() else {
        return ctx.error("ERR server is shutting down");
    };
    if ctx.shared.cluster_mode() {
        return ctx.error("ERR REPLICAOF not allowed in cluster mode.");
    }
    if stream.failover.phase() != Phase::None {
        return ctx.error("ERR REPLICAOF not allowed while failing over.");
    }
    if ctx.is(1, "NO") && ctx.is(2, "ONE") {
        stream.set_master(&shared, None);
        return ctx.reply.ok();
    }
    if ctx.session.replica_feed {
        return ctx.error("ERR Command is not valid when client is a replica.");
    }
    let Some(master) = parse_master(ctx.arg(1), ctx.arg(2)) else {
        return ctx.error("ERR Invalid master port");
    };
    if stream.set_master(&shared, Some(master)) {
        ctx.reply.ok();
    } else {
        log::notice("REPLICAOF would result into synchronization with the master we are already connected with. No operation performed.");
        ctx.reply.simple("OK Already connected to specified master");
    }
}

/// WAIT numreplicas timeout: blocks until that many replicas acknowledged everything
/// the stream held when it was called (a stricter point than the client's own last
/// write, so never an earlier one), or the timeout, then replies how many did.
fn wait(ctx: &mut Ctx<'_, '_>) {
    let Some(stream) = ReplicationStream::of(ctx.shared) else {
        return ctx.reply.int(0);
    };
    if ctx.shared.is_replica.load(Ordering::Relaxed) {
        return ctx.error("ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.");
    }
    let Some(wanted) = ctx.int_arg(1) else { return };
    let Some(timeout_ms) = ctx.int_arg(2) else {
        return;
    };
    if timeout_ms < 0 {
        return ctx.error("ERR timeout is negative");
    }
    let target = match ctx.session.wait_target {
        Some(t) => t,
        None => stream.offset(),
    };
    let acked = stream.acked(target);
    let first_call = ctx.session.blocked.is_none();
    if acked as i64 >= wanted || ctx.session.block_timed_out || ctx.in_transaction {
        ctx.session.wait_target = None;
        let me = ctx.session.id();
        stream.waiters.lock().retain(|c| c.id != me);
        carmine_commands::blocking::unblock(ctx.shared, ctx.session);
        return ctx.reply.int(acked as i64);
    }
    if first_call {
        ctx.session.wait_target = Some(target);
        stream.waiters.lock().push(ctx.session.info.clone());
        // Ask the replicas where they are now rather than at their next second's ACK.
        if let Some(shared) = stream.shared.upgrade() {
            let mut bytes = Vec::new();
            encode_command(
                &Argv::Owned(vec![
                    b"REPLCONF".to_vec(),
                    b"GETACK".to_vec(),
                    b"*".to_vec(),
                ]),
                &mut bytes,
            );
            stream.feed_raw(&bytes, &shared);
        }
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64));
        carmine_commands::blocking::block_until_ready(ctx, timeout);
    }
}

fn role(ctx: &mut Ctx<'_, '_>) {
    let Some(stream) = ReplicationStream::of(ctx.shared) else {
        ctx.reply.array(3);
        ctx.reply.bulk(b"master");
        ctx.reply.int(0);
        return ctx.reply.array(0);
    };
    let st = stream.state.lock();
    let l = stream.link.lock();
    let offset = st.history.master_repl_offset() as i64;
    match &l.master {
        Some((host, port)) => {
            ctx.reply.array(5);
            ctx.reply.bulk(b"slave");
            ctx.reply.bulk(host.as_bytes());
            ctx.reply.int(i64::from(*port));
            let state: &[u8] = if l.up {
                b"connected"
            } else if l.sync_in_progress {
                b"sync"
            } else if l.handshake {
                b"handshake"
            } else {
                b"connect"
            };
            ctx.reply.bulk(state);
            ctx.reply.int(if l.synced { offset } else { -1 });
        }
        None => {
            ctx.reply.array(3);
            ctx.reply.bulk(b"master");
            ctx.reply.int(offset);
            ctx.reply.array(st.feeds.len());
            for f in &st.feeds {
                ctx.reply.array(3);
                ctx.reply.bulk(f.ip.as_bytes());
                ctx.reply.bulk(f.port.to_string().as_bytes());
                ctx.reply.bulk(f.ack_offset.to_string().as_bytes());
            }
        }
    }
}

fn sync(ctx: &mut Ctx<'_, '_>) {
    attach(ctx, None);
}

fn psync(ctx: &mut Ctx<'_, '_>) {
    let (replid, offset) = (ctx.arg(1).to_vec(), ctx.arg(2).to_vec());
    attach(ctx, Some((replid, offset)));
}

/// SYNC (`psync` None) or PSYNC: continue from the backlog, or send a snapshot and then
/// the stream. Runs with the world stopped (EXCLUSIVE), so the snapshot begins at exactly
/// the stream offset it is announced with.
fn attach(ctx: &mut Ctx<'_, '_>, psync: Option<(Vec<u8>, Vec<u8>)>) {
    if ctx.session.replica_feed {
        return;
    }
    let Some(stream) = ReplicationStream::of(ctx.shared) else {
        return ctx.error("ERR replication is not available on this server");
    };
    // `PSYNC <replid> <offset> FAILOVER`: our master hands its role over to us.
    if ctx.args.len() > 3 && ctx.is(3, "FAILOVER") {
        let asked = String::from_utf8_lossy(ctx.arg(1)).into_owned();
        log::warning(&format!("Failover request received for replid {asked}."));
        if !ctx.shared.is_replica.load(Ordering::Acquire) {
            return ctx.error("ERR PSYNC FAILOVER can't be sent to a master.");
        }
        if asked != stream.state.lock().history.replid().to_string() {
            return ctx.error("ERR PSYNC FAILOVER replid must match my replid.");
        }
        let Some(shared) = stream.owner() else {
            return ctx.error("ERR server is shutting down");
        };
        stream.set_master(&shared, None);
        log::notice(&format!(
            "MASTER MODE enabled (failover request from '{}')",
            ctx.session.info.addr
        ));
    }
    if stream.failover.phase() != Phase::None {
        return ctx.error("NOMASTERLINK Can't SYNC while failing over");
    }
    if ctx.shared.is_replica.load(Ordering::Acquire) && !stream.link.lock().up {
        return ctx.error("NOMASTERLINK Can't SYNC while not connected with my master");
    }
    let info = ctx.session.info.clone();
    let conf = ctx.session.replconf.clone();
    let ip = conf.ip_address.clone().unwrap_or_else(|| {
        info.addr
            .rsplit_once(':')
            .map_or(info.addr.clone(), |(h, _)| h.to_string())
    });
    let who = format!("{ip}:{}", conf.listening_port);
    log::notice(&format!("Replica {who} asks for synchronization"));
    let mut st = stream.state.lock();
    if let Some((replid, offset)) = &psync {
        match st.history.psync(replid, offset) {
            PsyncDecision::Continue { replid, from } => {
                let Some(parts) = st.history.backlog().range_from(from) else {
                    return ctx.error("ERR backlog changed under the lock");
                };
                let mut line = String::from("CONTINUE");
                if conf.capa_psync2 {
                    line.push(' ');
                    line.push_str(&replid.to_string());
                }
                ctx.reply.simple(&line);
                let mut sent = 0;
                for part in parts {
                    ctx.reply.raw(part);
                    sent += part.len();
                }
                // The backlog reply already holds what `outgoing` would send it.
                stream.flush_outgoing_locked(&mut st);
                st.feeds.push(Feed {
                    info,
                    held_from: None,
                    awaiting_ack: false,
                    stream_after_eof: false,
                    acked_early: false,
                    waiting: None,
                    keepalive: false,
                    ack_offset: from.saturating_sub(1),
                    ack_at: Instant::now(),
                    ip,
                    port: conf.listening_port,
                });
                ctx.session.replica_feed = true;
                ctx.session
                    .info
                    .kind
                    .store(ClientInfo::REPLICA, Ordering::Relaxed);
                stream.sync_partial_ok.fetch_add(1, Ordering::Relaxed);
                log::notice(&format!(
                    "Partial resynchronization request from {who} accepted. Sending {sent} \
                     bytes of backlog starting from offset {from}."
                ));
                return;
            }
            PsyncDecision::FullResync { reason } => {
                if replid.as_slice() != b"?" {
                    stream.sync_partial_err.fetch_add(1, Ordering::Relaxed);
                    log::notice(&format!("Partial resynchronization not accepted: {reason}"));
                } else {
                    log::notice(&format!("Full resync requested by replica {who}"));
                }
            }
        }
    }
    // The backlog starts with the first replica: a later one can continue from it.
    if !st.history.backlog_active() {
        st.history.activate_backlog();
        stream.enabled.store(true, Ordering::Release);
    }
    let eof = psync.is_some() && conf.capa_eof && ctx.shared.config.get_bool("repl-diskless-sync");
    st.feeds.push(Feed {
        info,
        held_from: Some(u64::MAX),
        awaiting_ack: false,
        stream_after_eof: conf.capa_stream_after_eof,
        acked_early: false,
        waiting: Some(Waiting {
            since: Instant::now(),
            psync: psync.is_some(),
            eof,
        }),
        keepalive: true,
        ack_offset: 0,
        ack_at: Instant::now(),
        ip,
        port: conf.listening_port,
    });
    ctx.session.replica_feed = true;
    ctx.session
        .info
        .kind
        .store(ClientInfo::REPLICA, Ordering::Relaxed);
    stream.sync_full.fetch_add(1, Ordering::Relaxed);
    // PSYNC stopped the world: the snapshot may start right here. Its reply
    // (+FULLRESYNC) goes out through the same path as the payload, so nothing is
    // written here.
    if !stream.start_waiting_syncs(&mut st, ctx.shared) && eof {
        log::notice("Delay next BGSAVE for diskless SYNC");
    }
}

/// The snapshot thread's work for a full sync: the payload to every replica of the
/// group, then each one's held stream bytes, then its feed goes live.
fn send_snapshot(
    shared: &Arc<Shared>,
    snap: Snapshot,
    targets: &[Arc<ClientInfo>],
    point: ReplPoint,
    eof: bool,
) {
    let aux = crate::persistence::aux_fields(shared, Some(point));
    let results = if eof {
        send_diskless(shared, snap, targets, &aux)
    } else {
        send_from_disk(shared, snap, targets, &aux)
    };
    let Some(stream) = ReplicationStream::of(shared) else {
        return;
    };
    let mut st = stream.state.lock();
    for (info, sent) in targets.iter().zip(results) {
        let who = info.addr.clone();
        match sent {
            Ok(bytes) => {
                if ReplicationStream::feed_of(&mut st, info.id).is_none() {
                    continue;
                }
                if eof {
                    let acked = ReplicationStream::feed_of(&mut st, info.id).is_some_and(|f| {
                        let now = f.acked_early || f.stream_after_eof;
                        f.awaiting_ack = !now;
                        now
                    });
                    log::notice(&format!(
                        "Streamed RDB transfer with replica {who} succeeded (socket, {bytes} \
                         bytes). {}",
                        if acked {
                            "Streaming to it from the snapshot's offset"
                        } else {
                            "Waiting for REPLCONF ACK from replica to enable streaming"
                        }
                    ));
                    if acked {
                        stream.flush_outgoing_locked(&mut st);
                        st.go_online(info.id);
                    }
                } else {
                    stream.flush_outgoing_locked(&mut st);
                    st.go_online(info.id);
                    log::notice(&format!(
                        "Synchronization with replica {who} succeeded ({bytes} bytes of \
                         snapshot)"
                    ));
                }
            }
            Err(e) => {
                log::warning(&format!("Full sync with replica {who} failed: {e}"));
                st.feeds.retain(|f| f.info.id != info.id);
                info.kill();
                st.refresh_pin();
            }
        }
    }
}

/// The same payload to several replicas: one that fails is dropped, the others go on;
/// the walk stops only when none is left.
struct Tee<'a> {
    outs: Vec<(ReplicaWriter<'a>, Option<io::Error>)>,
}

impl<'a> Tee<'a> {
    fn new(shared: &'a Shared, targets: &'a [Arc<ClientInfo>]) -> Self {
        Tee {
            outs: targets
                .iter()
                .map(|i| (ReplicaWriter::new(shared, i), None))
                .collect(),
        }
    }

    /// Replicas still receiving.
    fn alive(&self) -> usize {
        self.outs
            .iter()
            .filter(|(_, failed)| failed.is_none())
            .count()
    }

    fn each(
        &mut self,
        mut op: impl FnMut(&mut ReplicaWriter<'a>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut alive = false;
        for (out, failed) in &mut self.outs {
            if failed.is_none() {
                match op(out) {
                    Ok(()) => alive = true,
                    Err(e) => *failed = Some(e),
                }
            }
        }
        if alive {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "every replica of the transfer failed",
            ))
        }
    }

    /// Each replica's outcome: bytes of payload sent, or its error.
    fn results(self, bytes: io::Result<u64>) -> Vec<io::Result<u64>> {
        let err_text = bytes.as_ref().err().map(|e| e.to_string());
        self.outs
            .into_iter()
            .map(|(_, failed)| match (failed, &bytes, &err_text) {
                (Some(e), _, _) => Err(e),
                (None, Ok(n), _) => Ok(*n),
                (None, Err(_), Some(text)) => Err(io::Error::other(text.clone())),
                (None, Err(_), None) => Err(io::Error::other("transfer failed")),
            })
            .collect()
    }
}

impl Write for Tee<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.each(|out| out.write_all(data))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.each(|out| out.flush())
    }
}

/// `$EOF:<mark>\r\n`, the RDB, then the mark: no length to know ahead, no file.
fn send_diskless(
    shared: &Arc<Shared>,
    snap: Snapshot,
    targets: &[Arc<ClientInfo>],
    aux: &[(&str, Vec<u8>)],
) -> Vec<io::Result<u64>> {
    let mark: String = (0..40)
        .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
        .collect();
    let mut tee = Tee::new(shared, targets);
    let sent = (|| {
        tee.write_all(format!("$EOF:{mark}\r\n").as_bytes())?;
        tee.flush()?;
        let stats = snap.write_to(&shared.keyspace, &mut tee, aux)?;
        tee.write_all(mark.as_bytes())?;
        tee.flush()?;
        Ok(stats.bytes)
    })();
    // Redis' words for its pipe from the fork child (its tests wait for them): here the
    // walk wrote to the replicas itself, and stops as soon as none is left.
    match (&sent, tee.alive()) {
        (_, 0) => log::warning("Diskless rdb transfer, last replica dropped, killing fork child."),
        (Ok(_), alive) => log::notice(&format!(
            "Diskless rdb transfer, done reading from pipe, {alive} replicas still up."
        )),
        (Err(_), _) => {}
    }
    tee.results(sent)
}

/// `$<len>\r\n` and the RDB from a temporary file (SYNC, a replica without `capa eof`,
/// or `repl-diskless-sync no`).
fn send_from_disk(
    shared: &Arc<Shared>,
    snap: Snapshot,
    targets: &[Arc<ClientInfo>],
    aux: &[(&str, Vec<u8>)],
) -> Vec<io::Result<u64>> {
    let dump = crate::persistence::dump_path(shared);
    let tmp = dump.with_file_name(format!(
        "temp-repl-{}-{}.rdb",
        std::process::id(),
        fastrand::u64(..)
    ));
    let written = (|| {
        let mut file = io::BufWriter::with_capacity(PAYLOAD_CHUNK, std::fs::File::create(&tmp)?);
        snap.write_to(&shared.keyspace, &mut file, aux)?;
        file.flush()?;
        drop(file);
        std::fs::read(&tmp)
    })();
    let _ = std::fs::remove_file(&tmp);
    let data = match written {
        Ok(data) => data,
        Err(e) => {
            let text = e.to_string();
            return targets
                .iter()
                .map(|_| Err(io::Error::other(text.clone())))
                .collect();
        }
    };
    if let Some(stream) = ReplicationStream::of(shared) {
        // No more keepalive newlines: the payload starts.
        let mut st = stream.state.lock();
        for f in st.feeds.iter_mut() {
            if targets.iter().any(|t| t.id == f.info.id) {
                f.keepalive = false;
            }
        }
    }
    let mut tee = Tee::new(shared, targets);
    let sent = (|| {
        tee.write_all(format!("${}\r\n", data.len()).as_bytes())?;
        tee.write_all(&data)?;
        tee.flush()?;
        Ok(data.len() as u64)
    })();
    tee.results(sent)
}

/// Sends payload bytes to a replica's connection in chunks, waiting while too much of it
/// is still unwritten there (a slow replica holds back the walk, nothing else).
struct ReplicaWriter<'a> {
    shared: &'a Shared,
    info: &'a ClientInfo,
    buf: Vec<u8>,
}

impl<'a> ReplicaWriter<'a> {
    fn new(shared: &'a Shared, info: &'a ClientInfo) -> Self {
        ReplicaWriter {
            shared,
            info,
            buf: Vec::with_capacity(PAYLOAD_CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        while self.info.omem.load(Ordering::Relaxed) > PAYLOAD_IN_FLIGHT {
            if self.info.killed.load(Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "replica disconnected",
                ));
            }
            // `repl-timeout` without the replica reading anything (read each time: it may
            // change during a long transfer).
            let timeout = self.shared.config.get_i64("repl-timeout").max(1) as u64;
            if started.elapsed() > Duration::from_secs(timeout) {
                log::warning(&format!(
                    "Disconnecting timedout replica (full sync): {}",
                    self.info.addr
                ));
                self.info.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "replica not reading",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(PAYLOAD_CHUNK),
        ));
        if deliver(self.info, chunk) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "replica disconnected",
            ))
        }
    }
}

impl Write for ReplicaWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PAYLOAD_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
