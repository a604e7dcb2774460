//! The fork-free snapshot: RDB bytes for the keyspace exactly as it stood when the
//! snapshot began, written while writers keep going.
//!
//! [`Snapshot::begin`] registers a sink with the keyspace. From then on, before any thread
//! changes a table position that the snapshot has not captured yet, the chunk of 32
//! positions holding it is serialized into the sink as it stands (see the keyspace's
//! `SlotTable` partial capture). [`Snapshot::write_to`] walks every table in (db, slot)
//! order, captures the chunks nobody touched, and writes out whatever writers captured at
//! each step. Memory held beyond the dataset: writers' copies not yet written, which the
//! server bounds by pausing its event loops past a limit (`Keyspace::snapshot_backlog`).

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use carmine_keyspace::{CompactKey, Keyspace, Slot, SnapshotSink, SLOT_COUNT};
use parking_lot::Mutex;

use crate::crc64::crc64;
use crate::write::{self, WriteOptions};

/// A table (or a chunk of one) as it stood at the snapshot's start: RDB bytes, and
/// copies of large values to serialize later (a long list's copy shares its nodes, so
/// taking it costs microseconds for the walk and for writers alike).
///
/// Whoever gets to a table first serializes it on the spot, under the table's lock: for
/// a writer that costs microseconds once per chunk, and the held copy is compact RDB
/// bytes rather than cloned values (clones reached 1.3x peak memory). The walk does the
/// same, except for values large enough that serializing them (LZF included) would hold
/// the lock much longer than copying them: it clones those and serializes them after
/// unlocking, streaming them out in SPILL_AT pieces.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    later: Vec<(CompactKey, carmine_keyspace::Entry)>,
    /// What this counts in `Collector::held`: a writer's bytes, until written.
    held: usize,
    /// Keys in it (for `rdb-key-save-delay`).
    keys: usize,
}

/// A value the walk copies rather than serializes under its table's lock: a string of
/// more than SHARE_AT bytes (kept in shared pieces), or a collection of more than this
/// many elements.
const LARGE_COLLECTION: usize = 1024;

fn serialize_after_unlock(v: &carmine_keyspace::Value) -> bool {
    let limit = match v {
        carmine_keyspace::Value::Str(_) => carmine_keyspace::SHARE_AT,
        _ => LARGE_COLLECTION,
    };
    v.size_hint() > limit
}

struct Collector {
    opts: WriteOptions,
    /// The walk's thread: it leaves large values for after the unlock.
    walker: std::sync::OnceLock<std::thread::ThreadId>,
    /// Captured tables (or chunks of a large one) not yet written, with their database.
    /// The keyspace marks them captured under the table's lock, so each entry arrives
    /// exactly once.
    queue: Mutex<Vec<(usize, Captured)>>,
    /// Bytes in `queue` (and set aside for later databases): copies made by writers.
    held: AtomicUsize,
    /// The most `held` ever reached.
    peak_held: AtomicUsize,
    /// Every byte writers copied for this snapshot, written since or not: the analogue
    /// of a forked child's copy-on-write size (INFO `current_cow_size`).
    copied: AtomicUsize,
    /// Keys written to the file so far (INFO `current_save_keys_processed`).
    keys_written: std::sync::atomic::AtomicU64,
    /// Set when the walk is over: large tables drop chunks they still owe.
    closed: std::sync::atomic::AtomicBool,
}

impl SnapshotSink for Collector {
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn backlog(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn capture(
        &self,
        db: usize,
        _slot: Slot,
        entries: &mut dyn Iterator<Item = (&[u8], &carmine_keyspace::Entry)>,
    ) {
        let walker = self.walker.get() == Some(&std::thread::current().id());
        let mut captured = Captured::default();
        // Keys already expired are saved too, as Redis saves them: whoever loads the
        // file decides (a restarted master drops them and propagates their DELs, so its
        // replicas, which never expire keys themselves, drop them as well).
        for (k, e) in entries {
            captured.keys += 1;
            // A writer copies a large value when its storage is shared (long lists, huge
            // hashes, sets and sorted sets, big strings): the copy holds pointers. Others
            // it serializes now, which costs no more than a deep copy would and holds
            // compact bytes.
            if serialize_after_unlock(&e.value) && (walker || e.value.clone_is_shallow()) {
                captured.later.push((CompactKey::new(k), e.clone()));
                continue;
            }
            // Writing into a Vec cannot fail, and keeping the bytes spills nothing.
            let _ = write::put_keyspace_entry(
                &mut captured.bytes,
                k,
                &e.value,
                e.expire_at(),
                self.opts,
                &mut |_| Ok(()),
            );
        }
        if captured.bytes.is_empty() && captured.later.is_empty() {
            return;
        }
        // The walk writes its own captures out at once; writers' copies wait for it.
        let held = if walker {
            0
        } else {
            // Growth by doubling leaves up to half the capacity unused.
            captured.bytes.shrink_to_fit();
            captured.bytes.capacity()
        };
        captured.held = held;
        // Counted before it is queued: the walk may write it (and subtract) at once.
        let now = self.held.fetch_add(held, Ordering::Relaxed) + held;
        self.peak_held.fetch_max(now, Ordering::Relaxed);
        self.copied.fetch_add(held, Ordering::Relaxed);
        self.queue.lock().push((db, captured));
    }
}

/// Captures the queue has room for from the start (64 KiB of entries).
const QUEUE_START: usize = 1024;

/// Counts of what a snapshot wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStats {
    pub bytes: u64,
    /// Peak bytes held by tables captured ahead of the walk.
    pub peak_held: usize,
}

/// A running snapshot's progress (INFO persistence's `current_save_*` and COW fields).
#[derive(Clone)]
pub struct SnapshotProgress {
    collector: Arc<Collector>,
    keys_total: u64,
}

impl SnapshotProgress {
    /// Bytes writers copied for the snapshot so far (what a fork would have copied on
    /// write).
    pub fn copied_bytes(&self) -> u64 {
        self.collector.copied.load(Ordering::Relaxed) as u64
    }

    pub fn keys_written(&self) -> u64 {
        self.collector.keys_written.load(Ordering::Relaxed)
    }

    /// Keys in the databases when the snapshot began.
    pub fn keys_total(&self) -> u64 {
        self.keys_total
    }
}

/// A snapshot in progress (see the module docs).
pub struct Snapshot {
    collector: Arc<Collector>,
    /// Redis' `rdb-key-save-delay`: the walk sleeps this many microseconds per key it
    /// writes (a negative -N: 1 µs with probability 1/N). Tests use it to act mid-save.
    key_delay_us: i64,
    /// (keys, keys with deadlines) per database at the start: RESIZEDB hints.
    counts: Vec<(usize, usize)>,
    checksum: bool,
    /// Function libraries' code, written before the databases.
    functions: Vec<Vec<u8>>,
    /// Registered with the keyspace (writers copy for it), or detached: a walk of the
    /// tables as they stand, for a caller that keeps writers out meanwhile.
    registered: bool,
    /// Set from another thread to stop the walk at its next table (an AOF rewrite
    /// abandoned when the AOF is switched off).
    cancelled: Arc<std::sync::atomic::AtomicBool>,
    /// Tables walked so far: read by a watchdog that checks the walk advances.
    progress: Arc<std::sync::atomic::AtomicU64>,
}

impl Snapshot {
    /// Begins a snapshot of `ks` now; None if another is running. For consistency across
    /// tables, call it while no command runs.
    pub fn begin(ks: &Keyspace, opts: WriteOptions, checksum: bool) -> Option<Snapshot> {
        let snapshot = Self::new(ks, opts, checksum, true);
        ks.begin_snapshot(snapshot.collector.clone())?;
        Some(snapshot)
    }

    /// A snapshot that works while another one runs (a SAVE during an AOF rewrite): it
    /// does not register with the keyspace, so writers copy nothing for it, and its walk
    /// reads each table as it stands. It is a point in time only if the caller keeps
    /// every writer out until `write_to` returns (the world stopped).
    pub fn detached(ks: &Keyspace, opts: WriteOptions, checksum: bool) -> Snapshot {
        Self::new(ks, opts, checksum, false)
    }

    fn new(ks: &Keyspace, opts: WriteOptions, checksum: bool, registered: bool) -> Snapshot {
        let counts = (0..ks.databases()).map(|db| ks.db_counts(db)).collect();
        let collector = Arc::new(Collector {
            opts,
            walker: std::sync::OnceLock::new(),
            queue: Mutex::new(Vec::with_capacity(QUEUE_START)),
            held: AtomicUsize::new(0),
            peak_held: AtomicUsize::new(0),
            copied: AtomicUsize::new(0),
            keys_written: std::sync::atomic::AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        Snapshot {
            collector,
            key_delay_us: 0,
            counts,
            checksum,
            functions: Vec::new(),
            registered,
            cancelled: Arc::default(),
            progress: Arc::default(),
        }
    }

    /// The function libraries to write (taken with the keys' point in time: call it
    /// right after `begin`, while no command runs).
    pub fn set_functions(&mut self, libraries: Vec<Vec<u8>>) {
        self.functions = libraries;
    }

    /// A counter of the tables walked, for a watchdog on another thread.
    pub fn progress_handle(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.progress.clone()
    }

    /// A flag that stops the walk at its next table when set: `write_to` then fails
    /// with `ErrorKind::Interrupted`.
    pub fn cancel_handle(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.cancelled.clone()
    }

    /// How far the walk got, readable from another thread while it runs.
    pub fn progress_view(&self) -> SnapshotProgress {
        SnapshotProgress {
            collector: self.collector.clone(),
            keys_total: self.counts.iter().map(|&(keys, _)| keys as u64).sum(),
        }
    }

    /// Slows the walk down per key (see `key_delay_us`).
    pub fn set_key_delay_us(&mut self, us: i64) {
        self.key_delay_us = us;
    }

    /// Streams the whole file: header, `aux` fields, every database, EOF and checksum.
    /// `ks` is the keyspace the snapshot began on. The snapshot ends (writers stop
    /// copying) when this returns, error or not.
    pub fn write_to(
        mut self,
        ks: &Keyspace,
        out: &mut dyn Write,
        aux: &[(&str, Vec<u8>)],
    ) -> io::Result<SnapshotStats> {
        let result = self.walk(ks, out, aux);
        self.collector.closed.store(true, Ordering::Release);
        if self.registered {
            ks.end_snapshot();
        }
        result
    }

    fn walk(
        &mut self,
        ks: &Keyspace,
        out: &mut dyn Write,
        aux: &[(&str, Vec<u8>)],
    ) -> io::Result<SnapshotStats> {
        let mut w = CrcWriter {
            inner: out,
            crc: 0,
            bytes: 0,
        };
        let _ = self.collector.walker.set(std::thread::current().id());
        let mut stats = SnapshotStats::default();
        let mut head = Vec::new();
        write::put_header(&mut head);
        for (k, v) in aux {
            write::put_aux(&mut head, k, v);
        }
        for code in &self.functions {
            write::put_function(&mut head, code);
        }
        w.write_all(&head)?;
        // Within a database the order of tables is free, so whatever writers captured is
        // written at the walk's next step rather than held until the walk reaches its
        // slot: held memory stays small even while the walk runs at low priority.
        let mut later: HashMap<usize, Vec<Captured>> = HashMap::new();
        // One buffer for the whole walk: allocating it per table made a mapping per table
        // once it was past malloc's mmap threshold.
        let mut scratch = Vec::with_capacity(SPILL_AT * 2);
        let mut ready = Vec::with_capacity(QUEUE_START);
        for (db, &(keys, expires)) in self.counts.iter().enumerate() {
            let mut started = false;
            let mut emit = |w: &mut CrcWriter<'_>, captured: Captured| -> io::Result<()> {
                if captured.bytes.is_empty() && captured.later.is_empty() {
                    return Ok(());
                }
                if !started {
                    let mut sel = Vec::new();
                    write::put_select_db(&mut sel, db, keys as u64, expires as u64);
                    w.write_all(&sel)?;
                    started = true;
                }
                self.write_captured(w, captured, &mut scratch)
            };
            for captured in later.remove(&db).unwrap_or_default() {
                emit(&mut w, captured)?;
            }
            for slot in 0..SLOT_COUNT as Slot {
                if self.cancelled.load(Ordering::Acquire) {
                    return Err(io::Error::new(
                        io::ErrorKind::Interrupted,
                        "the snapshot was cancelled",
                    ));
                }
                self.progress.fetch_add(1, Ordering::Relaxed);
                if self.registered {
                    ks.snapshot_table(db, slot);
                } else {
                    ks.visit_table(db, slot, &*self.collector);
                }
                // Swapped with a drained spare, so both keep their capacity: a queue
                // rebuilt from empty at each table grew (past malloc's mmap threshold: by
                // mremap, which waits for the process' mmap lock) on writers' threads.
                std::mem::swap(&mut *self.collector.queue.lock(), &mut ready);
                for (d, captured) in ready.drain(..) {
                    if d == db {
                        emit(&mut w, captured)?;
                    } else {
                        later.entry(d).or_default().push(captured);
                    }
                }
            }
        }
        let mut tail = Vec::new();
        write::put_eof(&mut tail, w.crc, self.checksum);
        w.inner.write_all(&tail)?;
        w.bytes += tail.len() as u64;
        w.inner.flush()?;
        stats.bytes = w.bytes;
        stats.peak_held = self.collector.peak_held.load(Ordering::Relaxed);
        Ok(stats)
    }
}

/// Bytes of a value being streamed that are passed on to the output at once.
const SPILL_AT: usize = 64 << 10;

impl Snapshot {
    fn write_captured(
        &self,
        w: &mut CrcWriter<'_>,
        captured: Captured,
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        self.collector
            .held
            .fetch_sub(captured.held, Ordering::Relaxed);
        if !captured.bytes.is_empty() {
            w.write_all(&captured.bytes)?;
        }
        // Large values the walk copied go out as they are serialized, in pieces of
        // SPILL_AT bytes: never a second whole copy of one in memory.
        buf.clear();
        let mut spill = |buf: &mut Vec<u8>| -> io::Result<()> {
            if buf.len() >= SPILL_AT {
                w.write_all(buf)?;
                buf.clear();
            }
            Ok(())
        };
        for (k, e) in &captured.later {
            write::put_keyspace_entry(
                buf,
                k.as_bytes(),
                &e.value,
                e.expire_at(),
                self.collector.opts,
                &mut spill,
            )?;
            spill(buf)?;
        }
        w.write_all(buf)?;
        self.collector
            .keys_written
            .fetch_add(captured.keys as u64, Ordering::Relaxed);
        debug_delay(self.key_delay_us, captured.keys);
        Ok(())
    }
}

/// Sleeps `us` microseconds per key, or with `us` = -N, 1 µs per key with probability
/// 1/N (Redis' debugDelay).
pub fn debug_delay(us: i64, keys: usize) {
    let total = match us {
        0 => 0,
        n if n > 0 => (n as u64).saturating_mul(keys as u64),
        n => (0..keys)
            .filter(|_| fastrand::u64(..n.unsigned_abs()) == 0)
            .count() as u64,
    };
    if total > 0 {
        std::thread::sleep(std::time::Duration::from_micros(total));
    }
}

struct CrcWriter<'a> {
    inner: &'a mut dyn Write,
    crc: u64,
    bytes: u64,
}

impl Write for CrcWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc64(self.crc, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a load found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    pub keys: u64,
    pub expired_skipped: u64,
    /// Where the RDB ended (past EOF and checksum): an old AOF's command tail follows.
    pub end: usize,
}

/// What a load reports while it runs. Every method has a do-nothing default.
pub trait LoadObserver {
    /// Every 1024 keys: bytes read, keys loaded.
    fn progress(&mut self, _bytes: usize, _keys: u64) {}
    /// A key skipped because it had expired (a master restarting propagates its DEL).
    fn expired(&mut self, _db: usize, _key: &[u8]) {}
    /// An auxiliary field (`repl-id`, `repl-offset` ...). They precede the keys.
    fn aux(&mut self, _name: &[u8], _value: &[u8]) {}
    /// A function library's code. A load that has nowhere to put libraries refuses
    /// the file rather than drop them.
    fn function(&mut self, _code: &[u8]) -> Result<(), String> {
        Err("function libraries cannot be loaded here".into())
    }
    /// After each key read (Redis' `key-load-delay` sleeps here).
    fn key_read(&mut self) {}
    /// Keep keys whose deadline passed (a replica loads them: its master's DELs remove
    /// them, as in Redis, where only a master drops them while loading).
    fn keep_expired(&self) -> bool {
        false
    }
}

struct Progress<'a>(&'a mut dyn FnMut(usize, u64));

impl LoadObserver for Progress<'_> {
    fn progress(&mut self, bytes: usize, keys: u64) {
        (self.0)(bytes, keys)
    }
}

/// Loads an RDB file's keys into `ks` (keys already expired are skipped, as a master
/// does). Stops at the first error, naming its offset.
pub fn load_into(ks: &Keyspace, data: &[u8]) -> Result<LoadStats, crate::RdbError> {
    load_with_progress(ks, data, &mut |_, _| {})
}

/// As [`load_into`], calling `progress(bytes read, keys loaded)` every 1024 keys.
pub fn load_with_progress(
    ks: &Keyspace,
    data: &[u8],
    progress: &mut dyn FnMut(usize, u64),
) -> Result<LoadStats, crate::RdbError> {
    load_observed(ks, data, &mut Progress(progress))
}

/// As [`load_into`], telling `observer` about progress, expired keys and aux fields.
pub fn load_observed(
    ks: &Keyspace,
    data: &[u8],
    observer: &mut dyn LoadObserver,
) -> Result<LoadStats, crate::RdbError> {
    load_from(ks, &mut crate::Reader::new(data)?, observer)
}

/// Keys announced by a RESIZEDB of an input without a known length that are reserved
/// ahead (the tables grow past it as keys arrive).
const UNBOUNDED_RESIZE_KEYS: u64 = 1 << 22;

/// As [`load_observed`], from any input: a replica loads its master's payload with a
/// [`crate::PulledInput`] while it arrives. The reader is left just past the RDB's end.
pub fn load_from<I: crate::Input>(
    ks: &Keyspace,
    r: &mut crate::Reader<I>,
    observer: &mut dyn LoadObserver,
) -> Result<LoadStats, crate::RdbError> {
    let now = carmine_keyspace::now_ms();
    let mut stats = LoadStats::default();
    // Parsing and inserting overlap: this thread decodes the file while another builds
    // values and fills tables, batch by batch through a short queue.
    // Values are built on this thread too, so the decoder's buffers are freed by the
    // thread that allocated them (cross-thread frees are slow in glibc's malloc).
    type Batch = Vec<(usize, CompactKey, carmine_keyspace::Entry, Option<u32>)>;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for batch in rx {
                for (db, key, entry, lru) in batch {
                    ks.load_entry(db, key.as_bytes(), entry, lru, now);
                }
            }
        });
        let mut batch = Vec::with_capacity(1024);
        loop {
            let at = r.offset();
            let Some(item) = r.next_item()? else { break };
            let e = match item {
                crate::Item::Entry(e) => e,
                crate::Item::ResizeDb { db, keys, .. } => {
                    // A hint from the file: capped, so a hostile file cannot make us
                    // reserve more than its own size could fill.
                    let cap = r.left().map_or(UNBOUNDED_RESIZE_KEYS, |left| {
                        (r.offset() as u64).saturating_add(left) / 4
                    });
                    ks.reserve_db(db, keys.min(cap));
                    continue;
                }
                crate::Item::Aux(name, value) => {
                    observer.aux(&name, &value);
                    continue;
                }
                crate::Item::Function(code) => {
                    observer
                        .function(&code)
                        .map_err(|message| crate::RdbError {
                            offset: at,
                            message: format!("cannot load a function library: {message}"),
                        })?;
                    continue;
                }
            };
            if e.db >= ks.databases() {
                return Err(crate::RdbError {
                    offset: at,
                    message: format!(
                        "database {} out of range (databases is {})",
                        e.db,
                        ks.databases()
                    ),
                });
            }
            observer.key_read();
            let deadline = e.expire_ms.unwrap_or(0);
            if deadline != 0 && deadline <= now && !observer.keep_expired() {
                stats.expired_skipped += 1;
                observer.expired(e.db, &e.key);
                continue;
            }
            let lru = e.freq.map(|f| carmine_keyspace::evict::lfu_restore(f, now));
            let Some(value) = crate::to_keyspace(e.value, ks) else {
                continue;
            };
            let entry = carmine_keyspace::Entry::with_expiry(value, deadline);
            batch.push((e.db, CompactKey::new(&e.key), entry, lru));
            stats.keys += 1;
            if batch.len() == 1024 {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(1024));
                if tx.send(full).is_err() {
                    break;
                }
                observer.progress(r.offset(), stats.keys);
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        stats.end = r.offset();
        Ok(stats)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_is_point_in_time_under_concurrent_writes() {
        let ks = Arc::new(Keyspace::new());
        let db = ks.db(0);
        for i in 0..20_000 {
            db.set(format!("k{i}").as_bytes(), format!("v{i}").as_bytes());
        }
        db.rpush(b"list", &[b"a", b"b"]).expect("list");
        ks.db(3).set(b"other-db", b"x");
        let expected: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..20_000)
            .map(|i| {
                let k = format!("k{i}").into_bytes();
                let v = db.get(&k).expect("string");
                (k, v)
            })
            .collect();
        let snap = Snapshot::begin(&ks, WriteOptions::default(), true).expect("begin");
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut file = Vec::new();
        std::thread::scope(|s| {
            for t in 0..4 {
                let ks = &ks;
                let stop = &stop;
                s.spawn(move || {
                    let db = ks.db(0);
                    let mut i = t;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let k = format!("k{}", i % 20_000);
                        match i % 4 {
                            0 => db.set(k.as_bytes(), b"changed"),
                            1 => {
                                db.del(&[k.as_bytes()]);
                            }
                            2 => {
                                db.del(&[k.as_bytes()]);
                                let _ = db.sadd(k.as_bytes(), &[b"now a set"]);
                            }
                            _ => {
                                db.expire(k.as_bytes(), std::time::Duration::from_millis(1));
                            }
                        }
                        db.set(format!("new{i}").as_bytes(), b"after the start");
                        i += 4;
                    }
                });
            }
            file = {
                let mut out = Vec::new();
                snap.write_to(&ks, &mut out, &[("redis-ver", b"7.0.15".to_vec())])
                    .expect("written");
                out
            };
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let loaded = Keyspace::new();
        let stats = load_into(&loaded, &file).expect("loads");
        assert_eq!(stats.keys, 20_002);
        let ldb = loaded.db(0);
        for (k, v) in &expected {
            assert_eq!(&ldb.get(k).expect("a string, as at the start"), v);
        }
        assert_eq!(ldb.lrange(b"list", 0, -1).expect("list").len(), 2);
        assert_eq!(
            loaded.db(3).get(b"other-db").expect("str"),
            Some(b"x".to_vec())
        );
        assert_eq!(
            ldb.get(b"new0").expect("str"),
            None,
            "written after the start"
        );
        assert!(!ks.snapshot_running());
    }

    /// A replica's swap of its loaded dataset (Keyspace::swap_contents) during a
    /// snapshot: the snapshot holds the old contents exactly, the keyspace the new ones,
    /// the old ones end up in the sibling, and a WATCHed key is touched.
    #[test]
    fn swapping_in_a_loaded_keyspace_during_a_snapshot_keeps_it_point_in_time() {
        let ks = Keyspace::new();
        for i in 0..3000 {
            ks.db(0).set(format!("old{i}").as_bytes(), b"o");
        }
        ks.db(2).set(b"shared-name", b"old");
        let loaded = ks.sibling();
        for i in 0..500 {
            loaded.db(0).set(format!("new{i}").as_bytes(), b"n");
        }
        loaded.db(2).set(b"shared-name", b"new");
        let watched = ks.db_ref(2).expect("db 2").watch().watch(b"shared-name");
        let snap = Snapshot::begin(&ks, WriteOptions::default(), true).expect("begin");
        ks.swap_contents(&loaded);
        // A write after the swap does not reach the snapshot either.
        ks.db(0).set(b"new1", b"written after");
        let mut file = Vec::new();
        snap.write_to(&ks, &mut file, &[]).expect("written");
        let read = Keyspace::new();
        let stats = load_into(&read, &file).expect("loads");
        assert_eq!(stats.keys, 3001, "the old contents, each key once");
        assert_eq!(
            read.db(2).get(b"shared-name").expect("str"),
            Some(b"old".to_vec())
        );
        assert_eq!(read.db(0).get(b"new1").expect("str"), None);
        assert_eq!(ks.db_counts(0).0, 500);
        assert_eq!(
            ks.db(2).get(b"shared-name").expect("str"),
            Some(b"new".to_vec())
        );
        assert_eq!(loaded.db_counts(0).0, 3000, "the old contents, to be freed");
        assert_ne!(
            ks.db_ref(2).expect("db 2").watch().version(b"shared-name"),
            watched,
            "the WATCHed key was touched"
        );
    }

    /// Whole-database operations during a snapshot (FLUSHDB, SWAPDB, active expiry)
    /// capture the tables they touch first, like any writer.
    #[test]
    fn flush_swap_and_expiry_during_a_snapshot_do_not_leak_into_it() {
        let ks = Keyspace::new();
        for i in 0..2000 {
            ks.db(0).set(format!("a{i}").as_bytes(), b"zero");
            ks.db(1).set(format!("b{i}").as_bytes(), b"one");
        }
        ks.db(0)
            .set_with(
                b"soon",
                b"gone",
                carmine_keyspace::SetOptions {
                    expiry: carmine_keyspace::SetExpiry::At(carmine_keyspace::now_ms() + 30),
                    ..Default::default()
                },
            )
            .expect("set");
        let snap = Snapshot::begin(&ks, WriteOptions::default(), true).expect("begin");
        ks.flush_db(1);
        assert!(ks.swap_db(0, 1));
        std::thread::sleep(std::time::Duration::from_millis(40));
        let mut cursor = 0;
        ks.active_expire(
            &mut cursor,
            std::time::Duration::from_secs(1),
            usize::MAX,
            |_, _| {},
        );
        let mut file = Vec::new();
        snap.write_to(&ks, &mut file, &[]).expect("written");
        // The file holds db 0 as it was, "soon" included (it expired after the start)...
        let mut r = crate::Reader::new(&file).expect("header");
        let mut in_db0 = 0;
        while let Some(item) = r.next_item().expect("valid") {
            if matches!(item, crate::Item::Entry(ref e) if e.db == 0) {
                in_db0 += 1;
            }
        }
        assert_eq!(in_db0, 2001);
        // ...and a load now skips it, being past its deadline.
        let loaded = Keyspace::new();
        load_into(&loaded, &file).expect("loads");
        assert_eq!(loaded.dbsize(0), 2000);
        assert_eq!(loaded.dbsize(1), 2000);
        assert_eq!(loaded.db(1).get(b"b7").expect("str"), Some(b"one".to_vec()));
        assert_eq!(
            loaded.db(0).get(b"a7").expect("str"),
            Some(b"zero".to_vec())
        );
    }

    /// The backlog is the bytes writers' copies hold: growing as writers capture tables
    /// ahead of the walk, back to zero once the walk has written them; the stats report
    /// the peak.
    #[test]
    fn the_backlog_counts_writers_copies_until_written() {
        let ks = Keyspace::new();
        for i in 0..5000 {
            ks.db(0).set(format!("k{i}").as_bytes(), &[b'v'; 40]);
        }
        let uncompressed = WriteOptions { compress: false };
        let snap = Snapshot::begin(&ks, uncompressed, true).expect("begin");
        // Writers (this thread, before the walk starts) capture a few hundred tables.
        for i in 0..300 {
            ks.db(0).set(format!("k{i}").as_bytes(), b"after");
        }
        let backlog = ks.snapshot_backlog();
        // Each touched key's table chunk was copied, the key's own 40-byte value included.
        assert!(
            backlog > 300 * 40,
            "copies of the touched chunks: {backlog}"
        );
        let collector = snap.collector.clone();
        let mut file = Vec::new();
        let stats = snap.write_to(&ks, &mut file, &[]).expect("written");
        assert_eq!(
            stats.peak_held, backlog,
            "nothing captured after the writers"
        );
        assert_eq!(collector.backlog(), 0, "every copy written and uncounted");
        assert_eq!(ks.snapshot_backlog(), 0, "the snapshot is over");
        let loaded = Keyspace::new();
        load_into(&loaded, &file).expect("loads");
        assert_eq!(
            loaded.db(0).get(b"k7").expect("str"),
            Some(vec![b'v'; 40]),
            "as at the start"
        );
    }

    /// A slot made huge by a hash tag is captured a chunk at a time: writers to it during
    /// the snapshot copy at most a chunk each, and the file still holds the table exactly
    /// as it stood at the start, under edits, deletes (which move entries between
    /// chunks), appends and expiry.
    #[test]
    fn a_huge_table_is_captured_in_chunks_point_in_time() {
        let ks = Arc::new(Keyspace::new());
        let db = ks.db(0);
        let n = (10 * carmine_keyspace::CHUNK + 7).max(10_247);
        let key = |i: usize| format!("{{tag}}:{i}").into_bytes();
        for i in 0..n {
            db.set(&key(i), format!("v{i}").as_bytes());
        }
        db.set(b"elsewhere", b"x");
        let snap = Snapshot::begin(&ks, WriteOptions { compress: false }, true).expect("begin");
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut file = Vec::new();
        std::thread::scope(|s| {
            for t in 0..3 {
                let (ks, stop) = (&ks, &stop);
                s.spawn(move || {
                    let db = ks.db(0);
                    let mut i = t * 977;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let k = key(i % n);
                        match i % 4 {
                            0 => db.set(&k, b"changed"),
                            1 => {
                                db.del(&[k.as_slice()]);
                            }
                            2 => db.set(&key(n + i), b"appended after the start"),
                            _ => {
                                db.expire(&k, std::time::Duration::from_millis(1));
                            }
                        }
                        i += 7;
                    }
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            snap.write_to(&ks, &mut file, &[]).expect("written");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let loaded = Keyspace::new();
        let stats = load_into(&loaded, &file).expect("loads");
        assert_eq!(stats.keys, n as u64 + 1, "every key of the start, once");
        let ldb = loaded.db(0);
        for i in 0..n {
            assert_eq!(
                ldb.get(&key(i)).expect("a string"),
                Some(format!("v{i}").into_bytes()),
                "key {i} as at the start"
            );
        }
        assert_eq!(ldb.get(&key(n + 2)).expect("str"), None, "appended later");
    }

    /// Big strings are written from their pieces, compressed or plain: compressible ones,
    /// incompressible ones (literal runs, then plain), one whose last piece is too short to
    /// compress, and one that compresses only in part.
    #[test]
    fn big_strings_round_trip_from_their_pieces() {
        let piece = carmine_keyspace::PIECE;
        // xorshift: bytes LZF finds no repeats in.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..3 * piece + 2)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        let pattern: Vec<u8> = (0..3 * piece + 1).map(|i| (i % 7) as u8).collect();
        let mut half = random[..2 * piece].to_vec();
        half.extend_from_slice(&pattern[..2 * piece + 3]);
        let values = [random, pattern, half];
        for compress in [true, false] {
            let ks = Arc::new(Keyspace::new());
            let db = ks.db(0);
            for (i, v) in values.iter().enumerate() {
                db.set(format!("big{i}").as_bytes(), v);
            }
            let mut file = Vec::new();
            Snapshot::begin(&ks, WriteOptions { compress }, true)
                .expect("begin")
                .write_to(&ks, &mut file, &[])
                .expect("written");
            let loaded = Keyspace::new();
            load_into(&loaded, &file).expect("loads");
            for (i, v) in values.iter().enumerate() {
                let got = loaded.db(0).get(format!("big{i}").as_bytes()).expect("str");
                assert_eq!(got.as_ref(), Some(v), "big{i}, compress {compress}");
            }
            if compress {
                // The pattern compresses: the file is far smaller than the values.
                let total: usize = values.iter().map(Vec::len).sum();
                assert!(file.len() < total - values[1].len() / 2);
            }
        }
    }

    /// Values too large to serialize under their table's lock are copied by the walk and
    /// written after unlocking, next to small values of the same tables that it
    /// serializes in place; writers that change them first serialize them whole.
    #[test]
    fn large_values_survive_the_walk_and_writers_alike() {
        let ks = Arc::new(Keyspace::new());
        let db = ks.db(0);
        let big_text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let items: Vec<Vec<u8>> = (0..3_000)
            .map(|i| format!("item-{i}").into_bytes())
            .collect();
        let item_refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        // Two of each: the walk meets one of a pair, writers change the other first.
        for side in ["walk", "writer"] {
            db.set(format!("{{{side}}}:big").as_bytes(), &big_text);
            db.rpush(format!("{{{side}}}:list").as_bytes(), &item_refs)
                .expect("list");
            db.sadd(format!("{{{side}}}:set").as_bytes(), &item_refs[..2_000])
                .expect("set");
            for i in 0..1_500 {
                db.hset(
                    format!("{{{side}}}:hash").as_bytes(),
                    &items[i],
                    &items[i + 1],
                )
                .expect("hash");
            }
            // Past the score map's split: a clone shares tree nodes and score shards.
            for (i, item) in items.iter().cycle().take(9_000).enumerate() {
                let member = [item.as_slice(), &(i / 3_000).to_le_bytes()].concat();
                db.zadd(format!("{{{side}}}:zset").as_bytes(), i as f64, &member)
                    .expect("zset");
            }
            for i in 0..100 {
                db.set(format!("{{{side}}}:small{i}").as_bytes(), b"small");
            }
        }
        let zset_before = db.zrange(b"{writer}:zset", 0, -1, false).expect("zset");
        assert_eq!(zset_before.len(), 9_000);
        let snap = Snapshot::begin(&ks, WriteOptions { compress: true }, true).expect("begin");
        // Writers' changes, each capturing its table first.
        db.append(b"{writer}:big", b"more").expect("append");
        db.rpush(b"{writer}:list", &[b"later"]).expect("list");
        db.sadd(b"{writer}:set", &[b"later"]).expect("set");
        db.hset(b"{writer}:hash", b"later", b"x").expect("hash");
        db.zadd(b"{writer}:zset", -1.0, b"later").expect("zset");
        db.zadd(b"{writer}:zset", 1e9, &zset_before[0].0)
            .expect("zset");
        let mut file = Vec::new();
        snap.write_to(&ks, &mut file, &[]).expect("written");
        db.append(b"{walk}:big", b"after the walk").expect("append");
        db.zadd(b"{walk}:zset", -1.0, b"after the walk")
            .expect("zset");

        let loaded = Keyspace::new();
        let stats = load_into(&loaded, &file).expect("loads");
        assert_eq!(stats.keys, 2 * 105);
        let ldb = loaded.db(0);
        for side in ["walk", "writer"] {
            let key = |name: &str| format!("{{{side}}}:{name}").into_bytes();
            assert_eq!(
                ldb.get(&key("big")).expect("str"),
                Some(big_text.clone()),
                "{side}"
            );
            assert_eq!(
                ldb.lrange(&key("list"), 0, -1).expect("list"),
                items,
                "{side}"
            );
            let mut members = ldb.smembers(&key("set")).expect("set");
            members.sort();
            let mut want = items[..2_000].to_vec();
            want.sort();
            assert_eq!(members, want, "{side}");
            assert_eq!(ldb.hlen(&key("hash")).expect("hash"), 1_500, "{side}");
            assert_eq!(
                ldb.zrange(&key("zset"), 0, -1, false).expect("zset"),
                zset_before,
                "{side}"
            );
            for i in 0..100 {
                assert_eq!(
                    ldb.get(&key(&format!("small{i}"))).expect("str"),
                    Some(b"small".to_vec())
                );
            }
        }
    }
}
