//! The concurrent keyspace: databases of 16384 lazily allocated slot tables, each behind
//! its own lock, plus the WATCH registry and active expiry.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use carmine_slots::{key_slot, Slot, SLOT_COUNT};
use hashbrown::HashMap;
use parking_lot::{Mutex, MutexGuard};

use crate::table::SlotTable;
use crate::value::Entry;

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A table and its lock on their own cache lines: the lock word, the index's header and
/// the counts share the first line, the inline page pointers the second (see
/// `SlotTable`'s field order), and no two tables share a line.
#[repr(align(64))]
struct TableCell(Mutex<SlotTable>);

/// One database: its slot tables and the keys clients WATCH in it.
///
/// The 16384 tables live inline in one array, allocated when the database is first
/// touched: reaching a key's table is one indexed load, not a pointer chase. An empty
/// table allocates nothing, so the array costs 192 bytes per slot (3 MiB per database).
pub struct Db {
    tables: OnceLock<Box<[TableCell]>>,
    watch: WatchRegistry,
}

impl Db {
    fn new() -> Db {
        Db {
            tables: OnceLock::new(),
            watch: WatchRegistry::default(),
        }
    }

    fn cells(&self) -> &[TableCell] {
        self.tables.get_or_init(|| {
            (0..SLOT_COUNT)
                .map(|_| TableCell(Mutex::new(SlotTable::new())))
                .collect()
        })
    }

    /// The table for `slot` (the database's array is allocated on first use).
    #[inline]
    fn table(&self, slot: Slot) -> &Mutex<SlotTable> {
        &self.cells()[slot as usize % SLOT_COUNT].0
    }

    /// The table for `slot` if this database was ever touched.
    fn existing(&self, slot: usize) -> Option<&Mutex<SlotTable>> {
        self.tables.get()?.get(slot).map(|c| &c.0)
    }

    pub fn watch(&self) -> &WatchRegistry {
        &self.watch
    }
}

/// A watched key's (version, number of watchers).
type WatchState = (u64, u32);

/// Versions of watched keys. A write to a key bumps its version only while someone
/// watches it, so the cost for unwatched keys is one relaxed atomic load. Writers and
/// WATCH both hold the key's table lock, which orders them.
#[derive(Default)]
pub struct WatchRegistry {
    watched: AtomicUsize,
    keys: Mutex<HashMap<Box<[u8]>, WatchState>>,
    next_version: AtomicU64,
}

impl WatchRegistry {
    /// Registers one watcher of `key`; returns the key's current version.
    pub fn watch(&self, key: &[u8]) -> u64 {
        let mut keys = self.keys.lock();
        let e = keys.entry(key.into()).or_insert((0, 0));
        e.1 += 1;
        let version = e.0;
        self.watched.store(keys.len(), Ordering::Relaxed);
        version
    }

    pub fn unwatch(&self, key: &[u8]) {
        let mut keys = self.keys.lock();
        if let Some(e) = keys.get_mut(key) {
            e.1 -= 1;
            if e.1 == 0 {
                keys.remove(key);
            }
        }
        self.watched.store(keys.len(), Ordering::Relaxed);
    }

    /// The key's version now (0 for a key nobody watches).
    pub fn version(&self, key: &[u8]) -> u64 {
        self.keys.lock().get(key).map_or(0, |e| e.0)
    }

    #[inline]
    pub fn signal(&self, key: &[u8]) {
        if self.watched.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut keys = self.keys.lock();
        if let Some(e) = keys.get_mut(key) {
            e.0 = self.next_version.fetch_add(1, Ordering::Relaxed) + 1;
        }
    }

    /// The keys someone watches (none allocated when nobody watches).
    pub fn watched_keys(&self) -> Vec<Box<[u8]>> {
        if self.watched.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        self.keys.lock().keys().cloned().collect()
    }
}

/// Counters the keyspace itself maintains.
#[derive(Default, Debug)]
pub struct KeyspaceStats {
    pub expired_keys: AtomicU64,
    pub expired_stale_perc: AtomicU64,
}

/// The most keys one [`Keyspace::prefetch`] looks at.
pub const PREFETCH_MAX: usize = 16;

/// Databases of slot tables, shared by every thread.
///
/// Locking discipline: a caller that holds several tables acquires them in ascending
/// `(db, slot)` order — [`Locked::lock`] does this — so no two callers can deadlock.
pub struct Keyspace {
    dbs: Box<[Db]>,
    stats: KeyspaceStats,
    /// When false (a replica), expired keys read as missing but are not deleted: the
    /// master's DEL keeps the data sets identical.
    expire_deletes: AtomicBool,
    limits: crate::collections::EncodingLimits,
    eviction: crate::evict::EvictionConfig,
    zset_limits: crate::zset::ZSetLimits,
    notifier: crate::notify::Notifier,
    /// The running snapshot's epoch (0: none), the last epoch handed out, and where
    /// tables captured for it go.
    snapshot_epoch: AtomicU64,
    last_epoch: AtomicU64,
    snapshot_sink: parking_lot::RwLock<Option<Arc<dyn SnapshotSink>>>,
}

/// Receives each table of a running snapshot exactly once, as it stood when the
/// snapshot began: either from the snapshot's own walk or from the first writer to lock
/// the table after the snapshot began (the copy in copy-on-write).
///
/// A large table arrives in several calls, a chunk of its entries each (see
/// `SlotTable`'s partial capture); together they hold each of its entries once.
pub trait SnapshotSink: Send + Sync {
    fn capture(&self, db: usize, slot: Slot, entries: &mut dyn Iterator<Item = (&[u8], &Entry)>);

    /// True once the snapshot is over: tables still holding uncaptured chunks drop them.
    fn closed(&self) -> bool {
        false
    }

    /// Bytes of captures waiting to be written out (writers' copies ahead of the walk).
    fn backlog(&self) -> usize {
        0
    }
}

impl Default for Keyspace {
    fn default() -> Self {
        Self::new()
    }
}

/// Packs a (db, slot) pair into one ordered number: db major, slot minor.
#[inline]
pub fn table_id(db: usize, slot: Slot) -> u32 {
    ((db as u32) << 14) | u32::from(slot)
}

/// What [`Keyspace::expire_if_due`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadlineCheck {
    /// No such key, or it has no deadline: nothing more to watch.
    Gone,
    /// Its deadline is still ahead.
    Pending,
    /// Its deadline passed and it was deleted.
    Deleted,
}

impl Keyspace {
    /// A keyspace with Redis' default of 16 databases.
    pub fn new() -> Keyspace {
        Self::with_databases(16)
    }

    pub fn with_databases(n: usize) -> Keyspace {
        Keyspace {
            dbs: (0..n.max(1)).map(|_| Db::new()).collect(),
            stats: KeyspaceStats::default(),
            expire_deletes: AtomicBool::new(true),
            limits: crate::collections::EncodingLimits::default(),
            eviction: crate::evict::EvictionConfig::default(),
            zset_limits: crate::zset::ZSetLimits::default(),
            notifier: crate::notify::Notifier::default(),
            snapshot_epoch: AtomicU64::new(0),
            last_epoch: AtomicU64::new(0),
            snapshot_sink: parking_lot::RwLock::new(None),
        }
    }

    /// Starts a point-in-time snapshot: from now on, every table is handed to `sink` as it
    /// stands before anything changes it. Returns the epoch, or None while another
    /// snapshot runs. For a snapshot consistent across tables (a transaction spans
    /// several), call this while no command runs (the server's exclusive barrier).
    pub fn begin_snapshot(&self, sink: Arc<dyn SnapshotSink>) -> Option<u64> {
        let mut slot = self.snapshot_sink.write();
        if slot.is_some() {
            return None;
        }
        *slot = Some(sink);
        let epoch = self.last_epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.snapshot_epoch.store(epoch, Ordering::Release);
        Some(epoch)
    }

    /// Checks a key's deadline now and deletes the key when it passed, whatever
    /// `expire_deletes` says (a writable replica expires the keys its own clients gave
    /// deadlines to, Redis' expireSlaveKeys).
    pub fn expire_if_due(&self, db: usize, key: &[u8], now_ms: u64) -> DeadlineCheck {
        let Some(d) = self.dbs.get(db) else {
            return DeadlineCheck::Gone;
        };
        let slot = key_slot(key);
        let mut t = d.table(slot).lock();
        match t.peek(key).map(|e| e.expire_at()) {
            None | Some(0) => return DeadlineCheck::Gone,
            Some(at) if at > now_ms => return DeadlineCheck::Pending,
            Some(_) => {}
        }
        self.copy_on_write(db, slot, &mut t);
        t.remove(key);
        drop(t);
        d.watch.signal(key);
        self.stats.expired_keys.fetch_add(1, Ordering::Relaxed);
        DeadlineCheck::Deleted
    }

    /// Stores a key while loading a dump: straight into its table, without the watch
    /// signals, dirty counts and notifications a command's write makes (nobody can be
    /// watching yet). `lru` None: the access clock of a key touched now.
    pub fn load_entry(
        &self,
        db: usize,
        key: &[u8],
        mut entry: Entry,
        lru: Option<u32>,
        now_ms: u64,
    ) {
        let Some(d) = self.dbs.get(db) else { return };
        entry.lru = lru.unwrap_or_else(|| self.access_clock(0, now_ms, true));
        let slot = key_slot(key);
        let mut t = d.table(slot).lock();
        self.copy_on_write(db, slot, &mut t);
        t.insert(key, entry);
    }

    /// Pre-sizes every table of `db` for `keys` keys spread evenly (RDB's RESIZEDB), so
    /// a load does not grow each table a dozen times.
    pub fn reserve_db(&self, db: usize, keys: u64) {
        let Some(d) = self.dbs.get(db) else { return };
        let per_table = (keys as usize).div_ceil(SLOT_COUNT);
        if per_table == 0 {
            return;
        }
        // A little headroom: slots are filled unevenly.
        let per_table = per_table + per_table / 8 + 1;
        for slot in 0..SLOT_COUNT {
            let mut t = d.table(slot as Slot).lock();
            if t.is_empty() {
                t.reserve(per_table);
            }
        }
    }

    /// Captures one table for the running snapshot if no writer did yet (the walk).
    pub fn snapshot_table(&self, db: usize, slot: Slot) {
        if let Some(t) = self.dbs.get(db).and_then(|d| d.existing(slot as usize)) {
            let mut guard = t.lock();
            self.copy_on_write(db, slot, &mut guard);
            // A large table: one chunk per lock, so its writers wait for a chunk at most.
            while guard.capture_next_chunk() {
                drop(guard);
                guard = t.lock();
            }
        }
    }

    /// Hands one table, as it stands, to `sink`, outside any running snapshot: no epoch
    /// is marked and no writer copies anything for it. Only a point in time while the
    /// caller keeps every writer out (a foreground SAVE with the world stopped).
    pub fn visit_table(&self, db: usize, slot: Slot, sink: &dyn SnapshotSink) {
        if let Some(t) = self.dbs.get(db).and_then(|d| d.existing(slot as usize)) {
            sink.capture(db, slot, &mut t.lock().iter());
        }
    }

    /// Ends the running snapshot.
    pub fn end_snapshot(&self) {
        let mut slot = self.snapshot_sink.write();
        self.snapshot_epoch.store(0, Ordering::Release);
        *slot = None;
    }

    /// Ends snapshot `epoch` if it is still the running one (a cleanup that must not end
    /// a snapshot begun since).
    pub fn end_snapshot_of(&self, epoch: u64) {
        let mut slot = self.snapshot_sink.write();
        if self.snapshot_epoch.load(Ordering::Acquire) == epoch {
            self.snapshot_epoch.store(0, Ordering::Release);
            *slot = None;
        }
    }

    /// The running snapshot's epoch (each snapshot gets a new one), or 0 when none runs.
    pub fn snapshot_epoch(&self) -> u64 {
        self.snapshot_epoch.load(Ordering::Acquire)
    }

    /// Bytes the running snapshot holds in captures not yet written out; 0 when none runs.
    pub fn snapshot_backlog(&self) -> usize {
        self.snapshot_sink
            .read()
            .as_ref()
            .map_or(0, |sink| sink.backlog())
    }

    pub fn snapshot_running(&self) -> bool {
        self.snapshot_epoch.load(Ordering::Acquire) != 0
    }

    /// Hands a freshly locked table to the running snapshot first if it was not captured
    /// yet. One atomic load when no snapshot runs.
    #[inline]
    fn copy_on_write(&self, db: usize, slot: Slot, t: &mut SlotTable) {
        let epoch = self.snapshot_epoch.load(Ordering::Acquire);
        if epoch != 0 && t.snapshot_epoch < epoch {
            if let Some(sink) = self.snapshot_sink.read().as_ref() {
                t.start_capture(sink, db, slot);
            }
            t.snapshot_epoch = epoch;
        }
    }

    /// Starts loading what looking `keys` up in `db` will read, so that a pipeline's
    /// lookups overlap their cache misses instead of taking them one after another: each
    /// key's table (the first two lines of its cell: the lock and index header, then the
    /// page pointers), then its index line, then the entry its index points at and its
    /// page's header. At most [`PREFETCH_MAX`] keys are looked at.
    ///
    /// `elements` names elements that commands will look up inside those keys' values
    /// (a key's index in `keys`, and the field or member: HSET's, SADD's ...). Where the
    /// value is a big hash, set or sorted set (split into shards), each element's index
    /// line and then its element start loading, each step for the whole batch at once:
    /// a pipeline of SADDs to one big set took three dependent misses per command.
    ///
    /// The index reads happen under the tables' locks: the tables are taken with
    /// `try_lock` (a table another thread holds, or one this batch already holds, is
    /// skipped rather than waited for), all of them before the first index is read and
    /// released after the last. A locked instruction waits for every load before it, so
    /// taking each lock between two index reads made the reads' misses come one at a
    /// time.
    pub fn prefetch(&self, db: usize, keys: &[&[u8]], elements: &[(usize, &[u8])]) {
        let keys = &keys[..keys.len().min(PREFETCH_MAX)];
        let elements = &elements[..elements.len().min(PREFETCH_MAX)];
        let mut tables: [Option<&Mutex<SlotTable>>; PREFETCH_MAX] = [None; PREFETCH_MAX];
        for (key, table) in keys.iter().zip(tables.iter_mut()) {
            *table = self.existing_table(db, key_slot(key) as usize);
            if let Some(cell) = *table {
                let at: *const Mutex<SlotTable> = cell;
                crate::table::prefetch_line(at);
                crate::table::prefetch_line(at.cast::<u8>().wrapping_add(64));
            }
        }
        let mut held: [Option<MutexGuard<'_, SlotTable>>; PREFETCH_MAX] =
            [const { None }; PREFETCH_MAX];
        for (table, guard) in tables.iter().zip(held.iter_mut()) {
            *guard = table.and_then(Mutex::try_lock);
        }
        let mut hashes = [0u64; PREFETCH_MAX];
        for ((key, guard), hash) in keys.iter().zip(held.iter()).zip(hashes.iter_mut()) {
            if let Some(table) = guard {
                *hash = crate::table::hash_of(key);
                table.prefetch_slot(*hash);
            }
        }
        for (guard, &hash) in held.iter().zip(hashes.iter()).take(keys.len()) {
            if let Some(table) = guard {
                table.prefetch_entry(hash);
            }
        }
        if elements.is_empty() {
            return;
        }
        let mut splits: [Option<&dyn crate::shards::PrefetchElements>; PREFETCH_MAX] =
            [None; PREFETCH_MAX];
        let mut looked_up: Option<(usize, Option<&dyn crate::shards::PrefetchElements>)> = None;
        for (&(k, element), split) in elements.iter().zip(splits.iter_mut()) {
            *split = match looked_up {
                Some((at, found)) if at == k => found,
                _ => {
                    let found = held.get(k).and_then(Option::as_ref).and_then(|table| {
                        table
                            .peek(keys.get(k)?)
                            .and_then(|e| e.value.split_elements())
                    });
                    looked_up = Some((k, found));
                    found
                }
            };
            if let Some(s) = split {
                s.prefetch_slot(element);
            }
        }
        for (&(_, element), split) in elements.iter().zip(splits.iter()) {
            if let Some(s) = split {
                s.prefetch_element(element);
            }
        }
    }

    /// Keyspace notifications: enabled classes and the publishing hook.
    pub fn notifier(&self) -> &crate::notify::Notifier {
        &self.notifier
    }

    /// `zset-max-listpack-entries` / `-value`.
    pub fn zset_limits(&self) -> &crate::zset::ZSetLimits {
        &self.zset_limits
    }

    /// maxmemory policy, sampling and counters.
    pub fn eviction(&self) -> &crate::evict::EvictionConfig {
        &self.eviction
    }

    /// Whether database `db` was ever touched (its table array exists).
    pub(crate) fn db_allocated(&self, db: usize) -> bool {
        self.dbs.get(db).is_some_and(|d| d.tables.get().is_some())
    }

    pub(crate) fn existing_table(&self, db: usize, slot: usize) -> Option<&Mutex<SlotTable>> {
        self.dbs.get(db)?.existing(slot)
    }

    /// The access-clock value for an entry touched now (LRU seconds, or the LFU field).
    #[inline]
    pub(crate) fn access_clock(&self, old: u32, now_ms: u64, fresh: bool) -> u32 {
        let cfg = &self.eviction;
        if !cfg.policy().is_lfu() {
            return (now_ms / 1000) as u32;
        }
        if fresh {
            return crate::evict::lfu_new(now_ms);
        }
        crate::evict::lfu_touch(
            old,
            now_ms,
            cfg.lfu_log_factor.load(Ordering::Relaxed),
            cfg.lfu_decay_time.load(Ordering::Relaxed),
        )
    }

    /// The compact-encoding thresholds (`hash-max-listpack-entries` ...).
    pub fn limits(&self) -> &crate::collections::EncodingLimits {
        &self.limits
    }

    pub fn databases(&self) -> usize {
        self.dbs.len()
    }

    pub fn db_ref(&self, db: usize) -> Option<&Db> {
        self.dbs.get(db)
    }

    pub fn stats(&self) -> &KeyspaceStats {
        &self.stats
    }

    pub fn set_expire_deletes(&self, yes: bool) {
        self.expire_deletes.store(yes, Ordering::Relaxed);
    }

    /// The access clock OBJECT IDLETIME reads: Unix seconds (fits u32 until 2106).
    pub fn lru_clock(&self) -> u32 {
        (now_ms() / 1000) as u32
    }

    /// Locks one table directly (the whole-database walkers use this).
    pub fn lock_table(&self, db: usize, slot: Slot) -> MutexGuard<'_, SlotTable> {
        let db = db.min(self.dbs.len() - 1);
        let mut t = self.dbs[db].table(slot).lock();
        self.copy_on_write(db, slot, &mut t);
        t
    }

    /// Calls `f` on every allocated table of `db`, one lock at a time, in slot order.
    /// Stops early when `f` returns false.
    pub fn for_each_table(&self, db: usize, mut f: impl FnMut(Slot, &mut SlotTable) -> bool) {
        let Some(d) = self.dbs.get(db) else { return };
        for slot in 0..SLOT_COUNT {
            if let Some(t) = d.existing(slot) {
                let mut t = t.lock();
                self.copy_on_write(db, slot as Slot, &mut t);
                if !f(slot as Slot, &mut t) {
                    return;
                }
            }
        }
    }

    /// Number of keys in `db` (including ones expired but not yet reclaimed, as Redis).
    pub fn dbsize(&self, db: usize) -> usize {
        let mut n = 0;
        self.for_each_table(db, |_, t| {
            n += t.len();
            true
        });
        n
    }

    /// (keys, keys with a deadline) for INFO keyspace.
    pub fn db_counts(&self, db: usize) -> (usize, usize) {
        let (mut keys, mut volatile) = (0, 0);
        self.for_each_table(db, |_, t| {
            keys += t.len();
            volatile += t.volatile_len();
            true
        });
        (keys, volatile)
    }

    /// Whether `key` is in `db`'s table at all (expired or not), and if so whether it
    /// is still live at `now_ms`.
    fn presence(&self, db: usize, key: &[u8], now_ms: u64) -> Option<bool> {
        let d = self.dbs.get(db)?;
        let t = d.existing(key_slot(key) as usize)?;
        let t = t.lock();
        t.peek(key).map(|e| !e.is_expired(now_ms))
    }

    /// Empties `db`. A watched key that was there (even expired) counts as modified; one
    /// that was not is untouched, as in Redis. Returns keys removed.
    pub fn flush_db(&self, db: usize) -> usize {
        let Some(d) = self.dbs.get(db) else { return 0 };
        let now = now_ms();
        let touched = self.watched_where(db, |k| self.presence(db, k, now).is_some());
        let mut removed = 0;
        self.for_each_table(db, |_, t| {
            removed += t.len();
            t.clear();
            true
        });
        for k in &touched {
            d.watch.signal(k);
        }
        removed
    }

    /// The keys WATCHed in `db` for which `touched` holds (a whole-database change
    /// touches those it affects).
    fn watched_where(&self, db: usize, touched: impl Fn(&[u8]) -> bool) -> Vec<Box<[u8]>> {
        self.dbs[db]
            .watch
            .watched_keys()
            .into_iter()
            .filter(|k| touched(k))
            .collect()
    }

    /// Swaps the contents of two databases, table by table. Callers that need it atomic
    /// with respect to other commands hold the server's exclusive barrier.
    pub fn swap_db(&self, a: usize, b: usize) -> bool {
        if a >= self.dbs.len() || b >= self.dbs.len() {
            return false;
        }
        if a == b {
            return true;
        }
        let (lo, hi) = (a.min(b), a.max(b));
        // A watched key is touched when it was in its database (even expired), or when
        // the other database brings a live one in its place; an expired key replacing
        // none changes nothing a client could see (Redis' rules).
        let now = now_ms();
        let touched = |db: usize, other: usize| {
            self.watched_where(db, |k| {
                self.presence(db, k, now).is_some() || self.presence(other, k, now) == Some(true)
            })
        };
        let (touched_lo, touched_hi) = (touched(lo, hi), touched(hi, lo));
        for slot in 0..SLOT_COUNT {
            let (x, y) = (self.dbs[lo].existing(slot), self.dbs[hi].existing(slot));
            if x.is_none() && y.is_none() {
                continue;
            }
            let mut tx = self.dbs[lo].table(slot as Slot).lock();
            self.copy_on_write(lo, slot as Slot, &mut tx);
            let mut ty = self.dbs[hi].table(slot as Slot).lock();
            self.copy_on_write(hi, slot as Slot, &mut ty);
            // Chunks still owed belong to the database the table is leaving.
            tx.finish_capture();
            ty.finish_capture();
            std::mem::swap(&mut *tx, &mut *ty);
        }
        for k in &touched_lo {
            self.dbs[lo].watch.signal(k);
        }
        for k in &touched_hi {
            self.dbs[hi].watch.signal(k);
        }
        true
    }

    /// An empty keyspace with this one's databases and expiry rule: where a replica loads
    /// its master's dataset beside the one it serves (`repl-diskless-load swapdb`) before
    /// [`Keyspace::swap_contents`] puts it in place. The caller sets its encoding limits.
    pub fn sibling(&self) -> Keyspace {
        let ks = Keyspace::with_databases(self.dbs.len());
        ks.set_expire_deletes(self.expire_deletes.load(Ordering::Relaxed));
        ks
    }

    /// Puts `other`'s databases in place of this keyspace's, table by table, and leaves
    /// the old contents in `other` (to be dropped off the request path). The caller
    /// holds the world stopped. As SWAPDB: a WATCHed key present before or after is
    /// touched, and a running snapshot of this keyspace first takes what it still needs
    /// of each table, and does not take the new contents again.
    pub fn swap_contents(&self, other: &Keyspace) {
        let now = now_ms();
        let dbs = self.dbs.len().min(other.dbs.len());
        for db in 0..dbs {
            let touched = self.watched_where(db, |k| {
                self.presence(db, k, now).is_some() || other.presence(db, k, now).is_some()
            });
            for slot in 0..SLOT_COUNT {
                let (x, y) = (self.dbs[db].existing(slot), other.dbs[db].existing(slot));
                if x.is_none() && y.is_none() {
                    continue;
                }
                let mut live = self.dbs[db].table(slot as Slot).lock();
                self.copy_on_write(db, slot as Slot, &mut live);
                live.finish_capture();
                let epoch = live.snapshot_epoch;
                let mut loaded = other.dbs[db].table(slot as Slot).lock();
                std::mem::swap(&mut *live, &mut *loaded);
                live.snapshot_epoch = epoch;
            }
            for k in &touched {
                self.dbs[db].watch.signal(k);
            }
        }
    }

    /// One pass of active expiry. Walks tables from `*cursor` (a position over all
    /// databases' slots), removing expired keys, until the whole keyspace was visited,
    /// `budget` is spent, or it examined `quota` volatile keys of which at most a tenth
    /// were stale (Redis' acceptable share of expired keys still in memory: its cycle
    /// samples 20 keys a database and goes on while more than that share expired).
    /// `on_expired(db, key)` sees each removal. Returns the number of volatile keys
    /// examined and removed. The caller adapts: when many of those examined were stale,
    /// it calls again sooner (Redis' fast cycle).
    ///
    /// Without the quota each cycle walked every volatile key: 100k keys with a TTL
    /// cost 2% of a loop's time doing nothing, and 10M would have taken each cycle's
    /// whole budget.
    pub fn active_expire(
        &self,
        cursor: &mut usize,
        budget: Duration,
        quota: usize,
        mut on_expired: impl FnMut(usize, &[u8]),
    ) -> (usize, usize) {
        if !self.expire_deletes.load(Ordering::Relaxed) {
            return (0, 0);
        }
        let start = Instant::now();
        let total = self.dbs.len() * SLOT_COUNT;
        let now = now_ms();
        let (mut examined, mut removed) = (0, 0);
        for step in 0..total {
            let pos = (*cursor + step) % total;
            let (db, slot) = (pos / SLOT_COUNT, pos % SLOT_COUNT);
            if let Some(t) = self.dbs[db].existing(slot) {
                let mut t = t.lock();
                if t.volatile_len() > 0 {
                    self.copy_on_write(db, slot as Slot, &mut t);
                    let (e, r) = t.remove_expired(now, |k| {
                        self.dbs[db].watch.signal(k);
                        self.notifier
                            .notify(db, crate::notify::EXPIRED, "expired", k);
                        on_expired(db, k);
                    });
                    examined += e;
                    removed += r;
                }
            }
            let enough = examined >= quota && removed * 10 <= examined;
            if enough || (step % 64 == 63 && start.elapsed() >= budget) {
                *cursor = (pos + 1) % total;
                self.stats
                    .expired_keys
                    .fetch_add(removed as u64, Ordering::Relaxed);
                return (examined, removed);
            }
        }
        self.stats
            .expired_keys
            .fetch_add(removed as u64, Ordering::Relaxed);
        (examined, removed)
    }

    /// Estimated bytes held by the data set.
    pub fn memory_estimate(&self) -> usize {
        let mut total = 0;
        for db in 0..self.dbs.len() {
            self.for_each_table(db, |_, t| {
                total += t.memory_estimate();
                true
            });
        }
        total
    }

    /// A handle for the typed embedding API on database `db`.
    pub fn db(&self, db: usize) -> crate::DbHandle<'_> {
        crate::DbHandle::new(self, db.min(self.dbs.len() - 1))
    }
}

/// Raises `keymiss` for a read that found no `key`, when `missed` (the command reports
/// misses and this read found nothing). Takes the keyspace, not the `Locked`, so a read
/// can call it while it borrows its table.
#[inline]
fn missed_if(ks: &Keyspace, missed: bool, db: usize, key: &[u8]) {
    if missed {
        ks.notifier
            .notify(db, crate::notify::KEY_MISS, "keymiss", key);
    }
}

/// What [`Locked::get_mut_fitting`] found.
pub(crate) enum Fitting<'e> {
    Missing,
    /// A value the caller's check refused (a WRONGTYPE).
    Refused,
    Found(&'e mut Entry),
}

/// A set of locked tables through which a command (or a transaction) reads and writes.
///
/// Every write goes through here so that WATCH versions are bumped and the dirty counter
/// moves; every read goes through here so that expired keys disappear lazily.
pub struct Locked<'a> {
    ks: &'a Keyspace,
    db: usize,
    now: u64,
    /// The time deadlines are checked against: `now`, or 0 when every key reads as alive
    /// (see [`Locked::never_expire`]).
    alive_at: u64,
    /// The common case, one table, needs no allocation.
    first: Option<(u32, MutexGuard<'a, SlotTable>)>,
    rest: Vec<(u32, MutexGuard<'a, SlotTable>)>,
    dirty: u64,
    /// What to replicate, when someone reads the stream (see [`Locked::record_effects`]).
    effects: Effects,
    /// Reads of absent keys raise `keymiss` (see [`Locked::report_misses`]).
    report_misses: bool,
    /// The slot of the key whose table was found last (see [`SlotMemo`]).
    slot_memo: SlotMemo,
}

/// The last short key a [`Locked`] found the slot of, and that slot. A command finds its
/// key's table four or five times (the lock, lazy expiry, the read, the write), and CRC16
/// of a short key is a chain of dependent table loads: `perf` put it at 5% of a loop
/// serving pipelined LPUSHes. Comparing up to [`SlotMemo::KEY_MAX`] bytes is cheaper.
#[derive(Clone, Copy)]
struct SlotMemo {
    /// `u8::MAX`: nothing remembered yet.
    len: u8,
    key: [u8; SlotMemo::KEY_MAX],
    slot: Slot,
}

thread_local! {
    /// The memo the last [`Locked`] of this thread ended with, which the next one starts
    /// from: commands in a row often name the same key (redis-benchmark's LPUSH and HSET,
    /// a queue's producer), and a memo that lived one command computed CRC16 of it once
    /// a command all the same (2.7% of a loop serving pipelined LPUSHes). A key's slot
    /// never changes, so a memo from any earlier command is right.
    static LAST_SLOT_MEMO: std::cell::Cell<SlotMemo> =
        const { std::cell::Cell::new(SlotMemo::EMPTY) };
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = LAST_SLOT_MEMO.try_with(|m| m.set(self.slot_memo));
    }
}

impl SlotMemo {
    const KEY_MAX: usize = 32;

    const EMPTY: SlotMemo = SlotMemo {
        len: u8::MAX,
        key: [0; SlotMemo::KEY_MAX],
        slot: 0,
    };

    #[inline]
    fn slot_of(&mut self, key: &[u8]) -> Slot {
        if key.len() > Self::KEY_MAX {
            return key_slot(key);
        }
        if usize::from(self.len) == key.len() && self.key[..key.len()] == *key {
            return self.slot;
        }
        let slot = key_slot(key);
        self.key[..key.len()].copy_from_slice(key);
        self.len = key.len() as u8;
        self.slot = slot;
        slot
    }
}

/// A command's effects as they go on the replication stream: the DELs of keys it found
/// expired, then what it did, rewritten where replaying the request would not give the
/// same result (relative TTLs, random picks, floats). Unless the command replaced it, the
/// request itself follows if the command changed anything.
#[derive(Debug, Default)]
pub struct Effects {
    recording: bool,
    /// `(db, argv)` in the order they happened.
    pub ops: Vec<(usize, Vec<Vec<u8>>)>,
    /// The command put its own rewritten form in `ops` (or chose to propagate nothing).
    pub request_replaced: bool,
}

impl<'a> Locked<'a> {
    /// Holds no table yet; tables are locked by [`Locked::lock`] or on demand. The time
    /// is read now; servers that already know it use [`Locked::at`].
    pub fn empty(ks: &'a Keyspace, db: usize) -> Locked<'a> {
        Self::empty_at(ks, db, now_ms())
    }

    /// As [`Locked::empty`], running at `now_ms` (one clock reading per batch of
    /// pipelined commands instead of one per command).
    pub fn empty_at(ks: &'a Keyspace, db: usize, now_ms: u64) -> Locked<'a> {
        Locked {
            ks,
            db: db.min(ks.dbs.len() - 1),
            now: now_ms,
            alive_at: now_ms,
            first: None,
            rest: Vec::new(),
            dirty: 0,
            effects: Effects::default(),
            report_misses: false,
            slot_memo: LAST_SLOT_MEMO
                .try_with(std::cell::Cell::get)
                .unwrap_or(SlotMemo::EMPTY),
        }
    }

    /// Locks the tables named by `ids` (see [`table_id`]), in ascending order.
    pub fn lock(ks: &'a Keyspace, db: usize, ids: &mut [u32]) -> Locked<'a> {
        Self::lock_at(ks, db, ids, now_ms())
    }

    pub fn lock_at(ks: &'a Keyspace, db: usize, ids: &mut [u32], now_ms: u64) -> Locked<'a> {
        let mut l = Self::empty_at(ks, db, now_ms);
        ids.sort_unstable();
        let mut prev = None;
        for &id in ids.iter() {
            if prev == Some(id) {
                continue;
            }
            prev = Some(id);
            l.acquire(id);
        }
        l
    }

    /// Locks the single table holding `key` in `db`.
    pub fn lock_key(ks: &'a Keyspace, db: usize, key: &[u8]) -> Locked<'a> {
        Self::lock_key_at(ks, db, key, now_ms())
    }

    pub fn lock_key_at(ks: &'a Keyspace, db: usize, key: &[u8], now_ms: u64) -> Locked<'a> {
        let mut l = Self::empty_at(ks, db, now_ms);
        let id = table_id(l.db, l.slot_memo.slot_of(key));
        l.acquire(id);
        l
    }

    fn acquire(&mut self, id: u32) {
        let db = (id >> 14) as usize;
        let slot = (id & 0x3fff) as Slot;
        let Some(d) = self.ks.dbs.get(db) else { return };
        let mut guard = d.table(slot).lock();
        self.ks.copy_on_write(db, slot, &mut guard);
        if self.first.is_none() {
            self.first = Some((id, guard));
        } else {
            self.rest.push((id, guard));
        }
    }

    pub fn keyspace(&self) -> &'a Keyspace {
        self.ks
    }

    pub fn db(&self) -> usize {
        self.db
    }

    /// Switches the current database (SELECT inside MULTI).
    pub fn select(&mut self, db: usize) {
        self.db = db.min(self.ks.dbs.len() - 1);
    }

    /// The time this command runs at: one reading for the whole command, as Redis.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// From now on every key reads as alive, whatever its deadline: the commands a
    /// replica gets from its master. The master decided with its own clock that the key
    /// lives (it sends a DEL when it does not), so a write that arrives after the
    /// replica's clock passed the deadline still finds the key, as Redis'
    /// expireIfNeeded answers its master client; otherwise an INCR arriving late would
    /// start the key over, without its deadline, and the replica would diverge.
    pub fn never_expire(&mut self) {
        self.alive_at = 0;
    }

    /// Whether a write that gives a key a deadline already past deletes the key now.
    /// Not on a replica (nor while expiry is held by a pause): as Redis'
    /// checkAlreadyExpired, it keeps the key with its past deadline and waits for the
    /// master's DEL, so a command the stream delivers late cannot diverge the dataset.
    pub fn past_deadline_deletes(&self) -> bool {
        self.ks.expire_deletes.load(Ordering::Relaxed)
    }

    /// Counts `n` changes to `key` (of the current database) made in place through
    /// [`Locked::table_in`]: a WATCH on it is touched and `dirty` grows by `n` (BITFIELD
    /// counts one per field it changed, as Redis).
    pub fn touched(&mut self, key: &[u8], n: u64) {
        if n == 0 {
            return;
        }
        self.ks.dbs[self.db].watch.signal(key);
        self.dirty += n;
    }

    /// Counts `n` changes made in place that Redis does not report to WATCH (a stream
    /// group's pending entries and consumers): `dirty` grows, WATCHed transactions go on.
    pub fn changed_unwatched(&mut self, n: u64) {
        self.dirty += n;
    }

    /// Writes made through this set of locks.
    pub fn dirty(&self) -> u64 {
        self.dirty
    }

    /// Starts recording effects for the replication stream (nobody reads them otherwise,
    /// so by default nothing is allocated for them).
    pub fn record_effects(&mut self) {
        self.effects.recording = true;
    }

    pub fn recording_effects(&self) -> bool {
        self.effects.recording
    }

    /// Takes the effects recorded so far (a transaction takes them command by command).
    pub fn take_effects(&mut self) -> Effects {
        let recording = self.effects.recording;
        let taken = std::mem::take(&mut self.effects);
        self.effects.recording = recording;
        taken
    }

    /// Propagates `argv` on database `db` in addition to the request (Redis'
    /// alsoPropagate).
    pub fn also_propagate(&mut self, db: usize, argv: Vec<Vec<u8>>) {
        if self.effects.recording {
            self.effects.ops.push((db, argv));
        }
    }

    /// Propagates `argv` on the current database instead of the request.
    pub fn propagate_instead(&mut self, argv: Vec<Vec<u8>>) {
        if self.effects.recording {
            self.effects.ops.push((self.db, argv));
            self.effects.request_replaced = true;
        }
    }

    /// Propagates nothing for the request (a write that turned out to change nothing
    /// that a replica must see, or whose effects were recorded piecewise).
    pub fn propagate_nothing(&mut self) {
        self.effects.request_replaced = true;
    }

    /// Reads a key of the current database that the command could not declare (SORT's
    /// BY and GET patterns name keys only its data reveals), through `f`; an expired key
    /// reads as missing and is left for expiry to delete. A table already held, or one past
    /// every table held, is read as `table_in` reads it; any other is locked on its own
    /// for the read. That breaks the ascending lock order, so the caller must hold the
    /// world stopped (no other thread then waits for a table while holding one); the
    /// dispatcher stops it for commands that read undeclared keys.
    pub fn read_undeclared<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
        let db = self.db;
        let id = table_id(db, key_slot(key));
        let now = self.alive_at;
        let mut held = self
            .first
            .iter()
            .map(|(f, _)| *f)
            .chain(self.rest.iter().map(|(r, _)| *r));
        let orderly = held.clone().any(|h| h == id) || held.all(|h| h < id);
        let (ks, report) = (self.ks, self.report_misses);
        if orderly {
            let e = self.table_in(db, key).peek(key);
            let e = e.filter(|e| !e.is_expired(now));
            missed_if(ks, report && e.is_none(), db, key);
            return f(e);
        }
        let slot = (id & 0x3fff) as Slot;
        let guard = self.ks.dbs[db].table(slot).lock();
        let e = guard.peek(key).filter(|e| !e.is_expired(now));
        missed_if(ks, report && e.is_none(), db, key);
        f(e)
    }

    /// The table for `key` in database `db`. A table the dispatcher did not lock is locked
    /// here only if that keeps the ascending (db, slot) lock order: past every table held.
    /// Anything else could deadlock against a thread locking in order, so it stops the
    /// command in release builds too; the command table's key positions make it a bug.
    /// Table `id`, if this command holds it.
    fn held(&self, id: u32) -> Option<&SlotTable> {
        match &self.first {
            Some((f, g)) if *f == id => Some(g),
            _ => self.rest.iter().find(|(r, _)| *r == id).map(|(_, g)| &**g),
        }
    }

    pub fn table_in(&mut self, db: usize, key: &[u8]) -> &mut SlotTable {
        let id = table_id(db, self.slot_memo.slot_of(key));
        if self.held(id).is_none() {
            let highest = self
                .first
                .iter()
                .map(|(f, _)| *f)
                .chain(self.rest.iter().map(|(r, _)| *r))
                .max();
            assert!(
                highest.is_none_or(|h| h < id),
                "table {id} used without being declared, below table {highest:?} already \
                 held: locking it now would break the lock order"
            );
            self.acquire(id);
        }
        if let Some((f, g)) = self.first.as_mut() {
            if *f == id {
                return g;
            }
        }
        for (r, g) in self.rest.iter_mut() {
            if *r == id {
                return g;
            }
        }
        unreachable!("acquired above")
    }

    fn lazy_expire(&mut self, db: usize, key: &[u8]) {
        let now = self.alive_at;
        let deletes = self.ks.expire_deletes.load(Ordering::Relaxed);
        let t = self.table_in(db, key);
        // Most tables hold no key with a deadline: then no extra hash probe at all.
        if t.volatile_len() == 0 || !deletes {
            return;
        }
        if matches!(t.peek(key), Some(e) if e.is_expired(now)) {
            t.remove(key);
            if self.effects.recording {
                self.effects
                    .ops
                    .push((db, vec![b"DEL".to_vec(), key.to_vec()]));
            }
            self.ks.dbs[db].watch.signal(key);
            self.ks.stats.expired_keys.fetch_add(1, Ordering::Relaxed);
            self.ks
                .notifier
                .notify(db, crate::notify::EXPIRED, "expired", key);
        }
    }

    /// Reads `key` in database `db`, expiring it first if its deadline passed.
    pub fn get_in(&mut self, db: usize, key: &[u8]) -> Option<&Entry> {
        self.lazy_expire(db, key);
        let (now, alive_at) = (self.now, self.alive_at);
        let ks = self.ks;
        let report = self.report_misses;
        let Some(e) = self.table_in(db, key).peek_mut(key) else {
            missed_if(ks, report, db, key);
            return None;
        };
        if e.is_expired(alive_at) {
            // A replica keeps it until the master's DEL arrives.
            missed_if(ks, report, db, key);
            return None;
        }
        e.lru = ks.access_clock(e.lru, now, false);
        Some(e)
    }

    pub fn get(&mut self, key: &[u8]) -> Option<&Entry> {
        self.get_in(self.db, key)
    }

    /// As [`Locked::get`], without counting as an access: TTL, TYPE, EXISTS and the
    /// like leave a key's idle time (and LRU/LFU standing) alone, as in Redis.
    pub fn get_untouched(&mut self, key: &[u8]) -> Option<&Entry> {
        let db = self.db;
        self.lazy_expire(db, key);
        let alive_at = self.alive_at;
        let (ks, report) = (self.ks, self.report_misses);
        let found = self
            .table_in(db, key)
            .peek(key)
            .filter(|e| !e.is_expired(alive_at));
        missed_if(ks, report && found.is_none(), db, key);
        found
    }

    /// Mutable access for an in-place write; counts as a modification of `key`.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        let db = self.db;
        self.lazy_expire(db, key);
        let (now, alive_at) = (self.now, self.alive_at);
        let ks = self.ks;
        // A miss changes nothing: no WATCH signal, no dirty count, nothing propagated.
        let at = self.table_in(db, key).live_position(key, alive_at)?;
        self.ks.dbs[db].watch.signal(key);
        self.dirty += 1;
        let e = self.table_in(db, key).entry_mut_at(at);
        e.lru = ks.access_clock(e.lru, now, false);
        Some(e)
    }

    /// Mutable access for an in-place write of a value that `fits` accepts, with one hash
    /// probe for the check and the write (reading the value with [`Locked::get`] and then
    /// writing it with [`Locked::get_mut`] probed twice). A missing key is stored as
    /// `make` gives it, if it gives one. A value `fits` refuses is only touched (its
    /// access time): no WATCH signal, no dirty count.
    pub(crate) fn get_mut_fitting(
        &mut self,
        key: &[u8],
        fits: impl FnOnce(&crate::value::Value) -> bool,
        make: impl FnOnce() -> Option<Entry>,
    ) -> Fitting<'_> {
        let db = self.db;
        self.lazy_expire(db, key);
        let (now, alive_at) = (self.now, self.alive_at);
        let ks = self.ks;
        let at = match self.table_in(db, key).live_position(key, alive_at) {
            Some(at) => {
                if !fits(&self.table_in(db, key).entry_at(at).value) {
                    // Looked up all the same: its access time moves, as Redis' lookup
                    // touches a key before the command checks its type.
                    let e = self.table_in(db, key).entry_mut_at(at);
                    e.lru = ks.access_clock(e.lru, now, false);
                    return Fitting::Refused;
                }
                at
            }
            None => {
                let Some(entry) = make() else {
                    return Fitting::Missing;
                };
                self.insert_in(db, key, entry);
                match self.table_in(db, key).live_position(key, alive_at) {
                    Some(at) => at,
                    None => return Fitting::Missing,
                }
            }
        };
        self.ks.dbs[db].watch.signal(key);
        self.dirty += 1;
        let e = self.table_in(db, key).entry_mut_at(at);
        e.lru = ks.access_clock(e.lru, now, false);
        Fitting::Found(e)
    }

    pub fn exists(&mut self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Stores `entry` under `key` in `db`, replacing any old value and deadline.
    pub fn insert_in(&mut self, db: usize, key: &[u8], mut entry: Entry) -> Option<Entry> {
        self.lazy_expire(db, key);
        entry.lru = self.ks.access_clock(0, self.now, true);
        self.ks.dbs[db].watch.signal(key);
        self.dirty += 1;
        let old = self.table_in(db, key).insert(key, entry);
        if old.is_none() {
            self.ks.notifier.notify(db, crate::notify::NEW, "new", key);
        }
        old
    }

    pub fn insert(&mut self, key: &[u8], entry: Entry) -> Option<Entry> {
        self.insert_in(self.db, key, entry)
    }

    /// Starts loading the entries that lookups of `keys` (in this database, in tables
    /// this command holds) will read, so that a command touching many keys (MSET) waits
    /// for their cache misses together rather than one after another. Keys in tables not
    /// held are skipped: nothing is locked here.
    pub fn prefetch_held<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        // Index lines first, then entries (each reading its index line): the misses of
        // each step overlap. Past a pipeline's worth the first keys' lines may be gone.
        let mut found: [(Option<&SlotTable>, u64); PREFETCH_MAX] = [(None, 0); PREFETCH_MAX];
        let mut keys = keys.peekable();
        while keys.peek().is_some() {
            let mut n = 0;
            // `found` first: a zip that ran out of room would drop the key it took.
            for ((table, hash), key) in found.iter_mut().zip(keys.by_ref()) {
                *table = self.held(table_id(self.db, key_slot(key)));
                *hash = crate::table::hash_of(key);
                if let Some(t) = table {
                    t.prefetch_slot(*hash);
                }
                n += 1;
            }
            for &(table, hash) in &found[..n] {
                if let Some(t) = table {
                    t.prefetch_entry(hash);
                }
            }
        }
    }

    pub fn remove_in(&mut self, db: usize, key: &[u8]) -> Option<Entry> {
        self.lazy_expire(db, key);
        let old = self.table_in(db, key).remove(key)?;
        self.ks.dbs[db].watch.signal(key);
        self.dirty += 1;
        Some(old)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        self.remove_in(self.db, key)
    }

    /// Sets (0 clears) the deadline of a live key; false if the key does not exist.
    pub fn set_expire(&mut self, key: &[u8], at_ms: u64) -> bool {
        let db = self.db;
        self.lazy_expire(db, key);
        if !self.table_in(db, key).set_expire(key, at_ms) {
            return false;
        }
        self.ks.dbs[db].watch.signal(key);
        self.dirty += 1;
        true
    }

    /// Reports a keyspace event for `key` in the current database (a no-op unless the
    /// event's class is enabled in `notify-keyspace-events`).
    #[inline]
    pub fn notify(&self, class: u32, event: &str, key: &[u8]) {
        self.ks.notifier.notify(self.db, class, event, key);
    }

    /// From now on a read that finds no key raises `keymiss` (notify-keyspace-events
    /// `m`), as Redis' read lookups do; writes' lookups raise none.
    pub fn report_misses(&mut self) {
        self.report_misses = true;
    }

    /// Runs `f` with key-miss reports off: a command's second read of a key that Redis
    /// reads once.
    pub fn without_miss_reports<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let was = std::mem::replace(&mut self.report_misses, false);
        let out = f(self);
        self.report_misses = was;
        out
    }

    /// Whether an event of `class` would reach anyone (notify-keyspace-events has the
    /// class and `K` or `E`): for events that cost work to find, such as key misses.
    #[inline]
    pub fn notifies(&self, class: u32) -> bool {
        self.ks.notifier.wants(class)
    }

    /// As [`Locked::notify`], for a key in database `db`.
    #[inline]
    pub fn notify_in(&self, db: usize, class: u32, event: &str, key: &[u8]) {
        self.ks.notifier.notify(db, class, event, key);
    }

    /// Marks `key` modified without changing it (e.g. a command that edits a value it
    /// read through [`Locked::get_mut`] on another database).
    pub fn signal_modified(&mut self, db: usize, key: &[u8]) {
        if let Some(d) = self.ks.dbs.get(db) {
            d.watch.signal(key);
        }
        self.dirty += 1;
    }
}

impl Keyspace {
    /// One SCAN step over `db`. The cursor is the next slot to visit; each visited table
    /// is returned whole, so any key present for the whole scan is returned exactly once,
    /// however tables grow or shrink meanwhile. `count` is a hint, as in Redis. Keys are
    /// offered to `keep` (MATCH / TYPE filters) before being collected.
    pub fn scan(
        &self,
        db: usize,
        cursor: u64,
        count: usize,
        keep: impl FnMut(&[u8], &Entry) -> bool,
    ) -> (u64, Vec<Vec<u8>>) {
        self.scan_noting_expired(db, cursor, count, keep, None)
    }

    /// As [`Keyspace::scan`], also listing in `expired` (in slot order) the keys `keep`
    /// accepts whose deadline has passed: SCAN expires them, as Redis' SCAN does.
    pub fn scan_noting_expired(
        &self,
        db: usize,
        cursor: u64,
        count: usize,
        mut keep: impl FnMut(&[u8], &Entry) -> bool,
        mut expired: Option<&mut Vec<Vec<u8>>>,
    ) -> (u64, Vec<Vec<u8>>) {
        let mut out = Vec::new();
        let Some(d) = self.dbs.get(db) else {
            return (0, out);
        };
        let now = now_ms();
        let mut slot = cursor as usize;
        let mut visited = 0;
        while slot < SLOT_COUNT {
            if let Some(t) = d.existing(slot) {
                let t = t.lock();
                visited += t.len();
                for (k, e) in t.iter() {
                    if !keep(k, e) {
                        continue;
                    }
                    if !e.is_expired(now) {
                        out.push(k.to_vec());
                    } else if let Some(x) = expired.as_deref_mut() {
                        x.push(k.to_vec());
                    }
                }
            }
            slot += 1;
            if visited >= count.max(1) {
                break;
            }
        }
        let next = if slot >= SLOT_COUNT { 0 } else { slot as u64 };
        (next, out)
    }

    /// A random live key of `db`, or None when it is empty. Expired keys the draw came
    /// upon are added to `expired` (RANDOMKEY expires them, as Redis does).
    pub fn random_key(&self, db: usize, expired: &mut Vec<Vec<u8>>) -> Option<Vec<u8>> {
        let d = self.dbs.get(db)?;
        let now = now_ms();
        let start = fastrand::usize(..SLOT_COUNT);
        for step in 0..SLOT_COUNT {
            let slot = (start + step) % SLOT_COUNT;
            let Some(t) = d.existing(slot) else { continue };
            let t = t.lock();
            if t.is_empty() {
                continue;
            }
            // Try a few random positions, then fall back to any live key of this table.
            for _ in 0..4 {
                let n = fastrand::usize(..t.len());
                if let Some(k) = t.nth_key(n) {
                    if t.peek(k).is_some_and(|e| !e.is_expired(now)) {
                        return Some(k.to_vec());
                    }
                    if !expired.iter().any(|x| x == k) {
                        expired.push(k.to_vec());
                    }
                }
            }
            let live = t
                .iter()
                .find(|(_, e)| !e.is_expired(now))
                .map(|(k, _)| k.to_vec());
            if live.is_some() {
                return live;
            }
        }
        None
    }
}
