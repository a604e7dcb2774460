//! RDB files for the server: load at start-up, SAVE, BGSAVE, save points, save on
//! shutdown, DUMP/RESTORE payloads. Snapshots never fork: see carmine_rdb::snapshot.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use carmine_commands::persistence::{ReloadOptions, RunningSave};
use carmine_commands::{Persistence, RestoreError, Shared};
use carmine_keyspace::{Keyspace, Value};
use carmine_rdb::{Snapshot, SnapshotStats, WriteOptions};

use carmine_repl::ReplId;

use crate::log;
use crate::replication::ReplicationStream;

pub struct RdbFiles {
    shared: Weak<Shared>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `dir`/`dbfilename`.
pub fn dump_path(shared: &Shared) -> PathBuf {
    let dir = shared.config.get("dir").unwrap_or_default();
    let name = shared
        .config
        .get("dbfilename")
        .unwrap_or_else(|| "dump.rdb".into());
    if dir.is_empty() {
        PathBuf::from(name)
    } else {
        PathBuf::from(dir).join(name)
    }
}

fn options(shared: &Shared) -> (WriteOptions, bool) {
    (
        WriteOptions {
            compress: shared.config.get_bool("rdbcompression"),
        },
        shared.config.get_bool("rdbchecksum"),
    )
}

/// The replication stream's position saved with a snapshot (the RDB's `repl-*` aux
/// fields): a restarted master keeps it as its secondary id, a restarted replica
/// continues its master's stream from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplPoint {
    pub replid: ReplId,
    pub offset: u64,
    pub db: usize,
}

/// Where the stream stands now; the caller stopped the world for the snapshot it begins.
fn repl_point(shared: &Shared) -> Option<ReplPoint> {
    ReplicationStream::of(shared).and_then(|s| s.save_point(shared))
}

pub(crate) fn aux_fields(shared: &Shared, repl: Option<ReplPoint>) -> Vec<(&'static str, Vec<u8>)> {
    let mut aux = vec![
        (
            "redis-ver",
            carmine_commands::server::REDIS_VERSION.as_bytes().to_vec(),
        ),
        ("redis-bits", b"64".to_vec()),
        ("ctime", unix_now().to_string().into_bytes()),
        ("used-mem", shared.used_memory().to_string().into_bytes()),
    ];
    // Without a history worth continuing (a master no replica ever attached to), Redis
    // writes no replication fields either.
    if let Some(p) = repl {
        aux.push(("repl-stream-db", p.db.to_string().into_bytes()));
        aux.push(("repl-id", p.replid.to_string().into_bytes()));
        aux.push(("repl-offset", p.offset.to_string().into_bytes()));
    }
    aux.push(("aof-base", b"0".to_vec()));
    aux
}

/// Streams a begun snapshot into a temp file next to the dump, fsyncs it and renames it
/// over the dump: a crash mid-save leaves the previous dump intact.
fn write_file(
    shared: &Shared,
    snap: Snapshot,
    repl: Option<ReplPoint>,
) -> io::Result<SnapshotStats> {
    let path = dump_path(shared);
    let tmp = path.with_file_name(format!("temp-{}.rdb", std::process::id()));
    let result = (|| {
        let stats = write_snapshot(
            shared,
            snap,
            &tmp,
            &aux_fields(shared, repl),
            shared.config.get_bool("rdb-save-incremental-fsync"),
        )?;
        std::fs::rename(&tmp, &path)?;
        sync_dir_of(&path);
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename or a new file in `path`'s directory durable.
pub(crate) fn sync_dir_of(path: &std::path::Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Writes a begun snapshot as an RDB file at `path` and fsyncs it (the caller renames
/// it into place). An AOF rewrite writes its base the same way.
/// `incremental_fsync`: hand pages to the disk as the file grows (see IncrementalSync).
pub(crate) fn write_snapshot(
    shared: &Shared,
    snap: Snapshot,
    path: &std::path::Path,
    aux: &[(&'static str, Vec<u8>)],
    incremental_fsync: bool,
) -> io::Result<SnapshotStats> {
    let file = IncrementalSync {
        file: std::fs::File::create(path)?,
        written: 0,
        synced: 0,
        enabled: incremental_fsync,
    };
    // 256 KiB per write(2): the kernel does not preempt a thread inside a syscall
    // (PREEMPT_NONE kernels), so smaller writes bound how long the walk can hold a
    // core that a loop wants.
    let mut out = io::BufWriter::with_capacity(256 << 10, file);
    let stats = snap.write_to(&shared.keyspace, &mut out, aux)?;
    out.flush()?;
    let file = out.into_inner().map_err(|e| e.into_error())?.file;
    file.sync_all()?;
    Ok(stats)
}

/// Hands the file's pages to the disk every 4 MiB while a save writes
/// (`rdb-save-incremental-fsync`, as Redis does): without it, the final fsync flushed the
/// whole dump at once, and that burst of writeback took the core from the event loops
/// (the worst write latencies of snapshot.sh came in the save's last moments).
struct IncrementalSync {
    file: std::fs::File,
    written: u64,
    synced: u64,
    enabled: bool,
}

const SYNC_EVERY: u64 = 4 << 20;

impl IncrementalSync {
    #[allow(unsafe_code)]
    fn start_writeback(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (from, len) = (self.synced as i64, (self.written - self.synced) as i64);
            // SAFETY: sync_file_range takes the file's own open descriptor and plain
            // integers; it only starts writeback of that byte range, without waiting.
            let rc = unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    from,
                    len,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        #[cfg(not(target_os = "linux"))]
        self.file.sync_data()?;
        self.synced = self.written;
        Ok(())
    }
}

impl Write for IncrementalSync {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.enabled && self.written - self.synced >= SYNC_EVERY {
            self.start_writeback()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl RdbFiles {
    pub fn install(shared: &Arc<Shared>) {
        let p = &shared.persist;
        p.last_save_unix.store(unix_now(), Ordering::Relaxed);
        p.last_bgsave_secs.store(-1, Ordering::Relaxed);
        let _ = shared.persistence.set(Arc::new(RdbFiles {
            shared: Arc::downgrade(shared),
        }));
    }

    fn begin(shared: &Shared) -> Result<(Snapshot, u64), String> {
        let (opts, checksum) = options(shared);
        let dirty = shared.total_dirty();
        Snapshot::begin(&shared.keyspace, opts, checksum)
            .map(|mut s| {
                s.set_key_delay_us(shared.config.get_i64("rdb-key-save-delay"));
                s.set_functions(carmine_commands::functions::library_codes(shared));
                (s, dirty)
            })
            .ok_or_else(|| "Background save already in progress".to_string())
    }

    fn begin_detached(shared: &Shared) -> (Snapshot, u64) {
        let (opts, checksum) = options(shared);
        let mut s = Snapshot::detached(&shared.keyspace, opts, checksum);
        s.set_key_delay_us(shared.config.get_i64("rdb-key-save-delay"));
        s.set_functions(carmine_commands::functions::library_codes(shared));
        (s, shared.total_dirty())
    }

    fn finished(shared: &Shared, dirty: u64, ok: bool) {
        let p = &shared.persist;
        if ok {
            p.dirty_at_last_save.store(dirty, Ordering::Relaxed);
            p.last_save_unix.store(unix_now(), Ordering::Relaxed);
            p.saves.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Persistence for RdbFiles {
    fn save(&self, shared: &Shared) -> Result<(), String> {
        let repl = repl_point(shared);
        let (snap, dirty) = match Self::begin(shared) {
            Ok(begun) => begun,
            // An AOF rewrite holds the snapshot: the world is stopped for this save, so
            // a walk of the tables as they stand is a point in time too (Redis saves in
            // the foreground while its rewrite child runs).
            Err(_) if shared.aof_rewriting() => Self::begin_detached(shared),
            Err(e) => return Err(e),
        };
        let started = Instant::now();
        let result = write_file(shared, snap, repl);
        Self::finished(shared, dirty, result.is_ok());
        match result {
            Ok(stats) => {
                log::notice(&format!(
                    "DB saved on disk ({} bytes in {:.3} s)",
                    stats.bytes,
                    started.elapsed().as_secs_f64()
                ));
                Ok(())
            }
            Err(e) => {
                log::warning(&format!("Failed saving the DB: {e}"));
                Err(e.to_string())
            }
        }
    }

    fn bgsave(&self, shared: &Shared) -> Result<(), String> {
        let Some(owned) = self.shared.upgrade() else {
            return Err("server is shutting down".into());
        };
        let dirty = shared.total_dirty();
        let repl = repl_point(shared);
        let flushalls = shared.persist.flushalls.load(Ordering::Acquire);
        log::notice("Background saving started (no fork: copy-on-write per slot table)");
        // Registered before BGSAVE replies, so INFO and FLUSHALL find the save at once.
        let register = |snap: &Snapshot| {
            let p = &shared.persist;
            let cancel = snap.cancel_handle();
            let view = snap.progress_view();
            *p.running_bgsave.lock() = Some(RunningSave {
                cancel: cancel.clone(),
                progress: Arc::new(move || {
                    (view.copied_bytes(), view.keys_written(), view.keys_total())
                }),
            });
            // A FLUSHALL that ran since the count was read counted itself first.
            if p.flushalls.load(Ordering::Acquire) != flushalls {
                cancel.store(true, Ordering::Release);
            }
        };
        let spawned = spawn_snapshot_with(
            shared,
            owned,
            "carmine-bgsave",
            register,
            move |owned, snap| {
                let p = &owned.persist;
                let cancel = snap.cancel_handle();
                let progress = snap.progress_view();
                let started = Instant::now();
                let result = write_file(owned, snap, repl);
                *p.running_bgsave.lock() = None;
                p.last_cow_bytes
                    .store(progress.copied_bytes(), Ordering::Relaxed);
                p.last_bgsave_secs
                    .store(started.elapsed().as_secs() as i64, Ordering::Relaxed);
                RdbFiles::finished(owned, dirty, result.is_ok());
                if result.is_err() && cancel.load(Ordering::Acquire) {
                    // Stopped on purpose, as Redis' killed child: not a failed save, so
                    // writes go on (stop-writes-on-bgsave-error looks at failures only).
                    log::notice(
                        "Background saving terminated by FLUSHALL: its walk stopped (no fork)",
                    );
                    return;
                }
                p.last_bgsave_failed
                    .store(result.is_err(), Ordering::Relaxed);
                match result {
                    Ok(stats) => log::notice(&format!(
                        "Background saving terminated with success ({} bytes; at most {} KiB \
                     held in tables copied by writers)",
                        stats.bytes,
                        stats.peak_held >> 10
                    )),
                    Err(e) => log::warning(&format!("Background saving error: {e}")),
                }
            },
        );
        if spawned.is_err() {
            // No walk to unregister itself.
            *shared.persist.running_bgsave.lock() = None;
        }
        spawned
    }

    fn reload(&self, shared: &Shared, options: ReloadOptions) -> Result<(), String> {
        if options.save {
            self.save(shared)?;
        }
        if options.flush {
            for db in 0..shared.keyspace.databases() {
                shared.keyspace.flush_db(db);
            }
        }
        load_rdb(shared, options.flush, options.flush || options.merge).map_err(|e| e.to_string())
    }

    fn dump(&self, value: &Value) -> Vec<u8> {
        let v = carmine_rdb::from_keyspace(value);
        carmine_rdb::dump_payload(&v, WriteOptions { compress: true })
    }

    fn restore(&self, ks: &Keyspace, payload: &[u8]) -> Result<Option<Value>, RestoreError> {
        let body_end = carmine_rdb::verify_payload(payload).map_err(|_| RestoreError::Envelope)?;
        let v =
            carmine_rdb::decode_payload(payload, body_end).map_err(|_| RestoreError::BadData)?;
        Ok(carmine_rdb::to_keyspace(v, ks))
    }

    fn dump_functions(&self, libraries: &[Vec<u8>]) -> Vec<u8> {
        carmine_rdb::dump_functions(libraries)
    }

    fn restore_functions(&self, payload: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
        use carmine_rdb::FunctionsPayloadError as E;
        carmine_rdb::restore_functions(payload).map_err(|e| match e {
            E::Envelope => "ERR payload version or checksum are wrong",
            E::NotAFunction => "ERR given type is not a function",
            E::Truncated(_) => "ERR Bad data format",
        })
    }
}

/// Begins a snapshot now (the caller stops the world, so it is one point in time) and
/// hands it to `job` on a thread of its own that walks in the loops' idle time. Shared by
/// BGSAVE and a replica's full sync; one snapshot runs at a time.
pub(crate) fn spawn_snapshot(
    shared: &Shared,
    owned: Arc<Shared>,
    thread_name: &str,
    job: impl FnOnce(&Arc<Shared>, Snapshot) + Send + 'static,
) -> Result<(), String> {
    spawn_snapshot_with(shared, owned, thread_name, |_| {}, job)
}

/// As [`spawn_snapshot`], calling `on_begin` with the snapshot on the caller's thread
/// once it has begun, before the walk's thread starts.
pub(crate) fn spawn_snapshot_with(
    shared: &Shared,
    owned: Arc<Shared>,
    thread_name: &str,
    on_begin: impl FnOnce(&Snapshot),
    job: impl FnOnce(&Arc<Shared>, Snapshot) + Send + 'static,
) -> Result<(), String> {
    // Before the reply: a client that samples memory right after it does not find this
    // thread's heap growth in its way.
    reserve_heap(shared);
    let (snap, _) = RdbFiles::begin(shared)?;
    on_begin(&snap);
    let epoch = shared.keyspace.snapshot_epoch();
    heap_ready_for(epoch);
    // Past 1/32 of the dataset (at least 4 MiB) of writers' copies, the event loops
    // pause for the walk (see `yield_to_snapshot`).
    let limit = (shared.used_memory() / 32).max(4 << 20);
    let p = &shared.persist;
    p.snapshot_backlog_limit.store(limit, Ordering::Relaxed);
    p.bgsave_in_progress.store(true, Ordering::Release);
    p.current_bgsave_started_ms
        .store(carmine_keyspace::now_ms(), Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            // Whatever happens to the walk, even a panic, the loops stop pausing for it
            // and the next snapshot may start.
            let _over = BgsaveOver(&owned, epoch);
            watch_walk(&owned, &snap);
            walk_in_idle_time();
            job(&owned, snap);
        });
    if let Err(e) = spawned {
        drop(BgsaveOver(shared, epoch));
        return Err(e.to_string());
    }
    Ok(())
}

/// Marks a background save over when dropped: its snapshot ends if it still runs (the
/// walk ends it itself unless it panicked), the loops stop pausing for the walk, and
/// BGSAVE may run again.
struct BgsaveOver<'a>(&'a Shared, u64);

impl Drop for BgsaveOver<'_> {
    fn drop(&mut self) {
        self.0.keyspace.end_snapshot_of(self.1);
        let p = &self.0.persist;
        p.snapshot_backlog_limit.store(0, Ordering::Relaxed);
        p.snapshot_throttled.store(false, Ordering::Relaxed);
        *p.walk_watch.lock() = None;
        p.bgsave_in_progress.store(false, Ordering::Release);
    }
}

/// How the snapshot walk shares a core with the event loops.
///
/// At normal priority the walk ran whole scheduler slices while requests waited
/// (snapshot.sh: 12.9 ms worst write latency). At nice 19 it still ran 2-5 ms past a
/// loop's wakeup (`perf sched timehist`: the loop's scheduling delay equalled the walk's
/// run time), because EEVDF protects the running task's slice and the next 250 Hz tick
/// comes up to 4 ms later. So the walk runs SCHED_IDLE, which the kernel preempts as
/// soon as a normal thread wakes: it gets the loops' idle time and nothing else.
///
/// Writers that reach a table first still capture it themselves, so a slower walk costs
/// memory, never correctness. To bound that memory, once writers' copies hold more than
/// a limit the event loops pause briefly at each wake-up ([`yield_to_snapshot`]) and the
/// walk runs in those pauses, until the copies are down to half. An earlier version put
/// the walk back at normal priority instead: requests then waited up to a tick behind it
/// (perf sched: loop preempted at the timer, 3-5 ms runs of the walk; 8-10 ms worst
/// probe latency), and it needed CAP_SYS_NICE to leave SCHED_IDLE at all.
///
/// Puts the calling thread in SCHED_IDLE, or at nice 19 where that is refused.
#[allow(unsafe_code)]
fn walk_in_idle_time() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 names the
        // calling thread, so only this thread's scheduling changes. gettid and setpriority
        // take no pointers. A failure leaves the policy unchanged.
        unsafe {
            if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
                let tid = libc::gettid();
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
            }
        }
    }
}

/// Registers the calling thread (about to walk `snap`) with the starvation watchdog.
fn watch_walk(shared: &Shared, snap: &carmine_rdb::snapshot::Snapshot) {
    #[cfg(target_os = "linux")]
    let tid = libc_gettid();
    #[cfg(not(target_os = "linux"))]
    let tid = 0;
    *shared.persist.walk_watch.lock() = Some(carmine_commands::persistence::WalkWatch {
        progress: snap.progress_handle(),
        tid,
        last: 0,
        since: std::time::Instant::now(),
        promoted: false,
    });
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn libc_gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// How long the walk may make no progress before the watchdog puts it back at normal
/// priority.
const WALK_STARVED_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The cron's check that a SCHED_IDLE walk is not starved: it only runs when no other
/// thread wants the CPU, so a machine kept busy (by other processes, or by the loops
/// themselves under a read load that leaves no idle time) would never let a BGSAVE or a
/// replica's full sync finish. A walk that has not advanced for
/// [`WALK_STARVED_AFTER`] goes back to normal priority for the rest of its run, as a
/// fork child would run. Found when a CI machine busy with other test binaries kept a
/// test's full sync from finishing for 30 s.
#[allow(unsafe_code)]
pub fn unstarve_walk(shared: &Shared) {
    let mut watch = shared.persist.walk_watch.lock();
    let Some(w) = watch.as_mut() else { return };
    let now = w.progress.load(Ordering::Relaxed);
    if now != w.last {
        w.last = now;
        w.since = std::time::Instant::now();
        return;
    }
    if w.promoted || w.since.elapsed() < WALK_STARVED_AFTER {
        return;
    }
    // A walk slowed on purpose (`rdb-key-save-delay`, a test knob) sleeps, it is not
    // starved.
    if shared.config.get_i64("rdb-key-save-delay") != 0 {
        return;
    }
    w.promoted = true;
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param that outlives the call; `w.tid` names
        // the walk's thread, alive while the watch is registered (its BgsaveOver clears
        // the watch under this lock before the thread ends). A failure changes nothing.
        let moved = unsafe { libc::sched_setscheduler(w.tid, libc::SCHED_OTHER, &param) } == 0;
        if moved {
            log::warning(
                "Snapshot walk starved of CPU for 1 s: it runs at normal priority until it ends",
            );
        } else {
            log::warning(&format!(
                "Snapshot walk starved of CPU for 1 s and could not leave SCHED_IDLE: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
}

/// How long a loop pauses at each wake-up while a snapshot's backlog is over its limit:
/// the most it adds to a request's latency, give or take the timer's slack.
const SNAPSHOT_PAUSE: std::time::Duration = std::time::Duration::from_micros(200);

/// Called by each event loop after handling its events: while writers' copies held by a
/// snapshot are over the limit BGSAVE set (1/32 of the dataset, at least 4 MiB), and
/// until they are down to half, pauses the loop for [`SNAPSHOT_PAUSE`] so the walk,
/// which only gets idle time, can write them out.
pub fn yield_to_snapshot(shared: &Shared) {
    let p = &shared.persist;
    let limit = p.snapshot_backlog_limit.load(Ordering::Relaxed);
    if limit == 0 {
        return;
    }
    let was = p.snapshot_throttled.load(Ordering::Relaxed);
    // Reading the backlog takes the snapshot sink's read lock, a cache line that every
    // loop would otherwise write at every wake-up: while not pausing, look at every
    // BACKLOG_CHECK_EVERY-th wake-up only (microseconds apart under load).
    let skip = !was
        && WAKEUPS_SINCE_CHECK.with(|n| {
            let next = (n.get() + 1) % BACKLOG_CHECK_EVERY;
            n.set(next);
            next != 0
        });
    if skip {
        return;
    }
    let backlog = shared.keyspace.snapshot_backlog();
    let throttled = if backlog > limit {
        true
    } else if backlog <= limit / 2 {
        false
    } else {
        was
    };
    if throttled != was {
        p.snapshot_throttled.store(throttled, Ordering::Relaxed);
    }
    if throttled {
        std::thread::sleep(SNAPSHOT_PAUSE);
    }
}

const BACKLOG_CHECK_EVERY: u32 = 16;

thread_local! {
    /// The snapshot epoch this thread last made room in its heap for.
    static HEAP_READY_FOR: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// When this thread first saw the snapshot it made room for over.
    static HEAP_ROOM_SINCE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    /// Wake-ups since this loop last read the snapshot's backlog.
    static WAKEUPS_SINCE_CHECK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Called by each event loop as it wakes: on its first wake-up in a new snapshot, makes
/// room in the thread's heap for the copies its writers may make, so they do not grow it
/// a page-rounded step at a time (each step an mprotect that waits on the process' mmap
/// lock: see the binary's alloc.rs).
pub fn prepare_heap(shared: &Shared) {
    let epoch = shared.keyspace.snapshot_epoch();
    if HEAP_READY_FOR.get() == epoch {
        return;
    }
    if epoch == 0 {
        give_heap_room_back(shared);
        return;
    }
    heap_ready_for(epoch);
    reserve_heap(shared);
}

/// Records that this thread made heap room for snapshot `epoch` (kept until the snapshot
/// has been over for HEAP_ROOM_KEPT).
fn heap_ready_for(epoch: u64) {
    HEAP_READY_FOR.set(epoch);
    HEAP_ROOM_SINCE.set(None);
}

/// How long after a snapshot a loop keeps the heap room it made for it.
const HEAP_ROOM_KEPT: std::time::Duration = std::time::Duration::from_secs(2);

/// After a snapshot, once HEAP_ROOM_KEPT has passed: the room goes back (glibc may unmap
/// a heap then, which waits on the mmap lock like an mprotect; right at the end it would
/// stall requests that a client still counts as during the snapshot).
fn give_heap_room_back(shared: &Shared) {
    let now = Instant::now();
    let since = HEAP_ROOM_SINCE.get().unwrap_or(now);
    HEAP_ROOM_SINCE.set(Some(since));
    if now.duration_since(since) < HEAP_ROOM_KEPT {
        return;
    }
    HEAP_ROOM_SINCE.set(None);
    HEAP_READY_FOR.set(0);
    if let Some(reserve) = shared.heap_reserve.get() {
        reserve(0);
    }
}

/// An eighth of the dataset: the most snapshot.sh saw writers' copies hold at once.
fn reserve_heap(shared: &Shared) {
    if let Some(reserve) = shared.heap_reserve.get() {
        reserve((shared.used_memory() / 8).min(1 << 30));
    }
}

/// What start-up's load saw besides the keys.
struct StartupLoad<'a> {
    shared: &'a Shared,
    persist: &'a carmine_commands::PersistStats,
    repl_id: Option<ReplId>,
    repl_offset: Option<u64>,
    /// Redis saves -1 here by mistake in some versions: such a file's position is unusable.
    repl_db: Option<usize>,
    /// Keys skipped as expired: a restarted master propagates their DELs.
    expired: Vec<(usize, Vec<u8>)>,
    key_load_delay_us: i64,
    /// Starting as a replica (`replicaof`): expired keys stay until the master's DELs.
    replica: bool,
    /// A library of the file may replace a loaded one of the same name.
    replace_functions: bool,
}

impl carmine_rdb::LoadObserver for StartupLoad<'_> {
    fn progress(&mut self, bytes: usize, keys: u64) {
        self.persist
            .loading_loaded_bytes
            .store(bytes as u64, Ordering::Relaxed);
        self.persist
            .loading_loaded_keys
            .store(keys, Ordering::Relaxed);
    }

    fn expired(&mut self, db: usize, key: &[u8]) {
        self.expired.push((db, key.to_vec()));
    }

    fn key_read(&mut self) {
        carmine_rdb::debug_delay(self.key_load_delay_us, 1);
    }

    fn keep_expired(&self) -> bool {
        self.replica
    }

    fn function(&mut self, code: &[u8]) -> Result<(), String> {
        carmine_commands::functions::load_library(self.shared, code, self.replace_functions)
    }

    fn aux(&mut self, name: &[u8], value: &[u8]) {
        let number = || std::str::from_utf8(value).ok()?.parse::<u64>().ok();
        match name {
            b"repl-id" => self.repl_id = ReplId::parse(value),
            b"repl-offset" => self.repl_offset = number(),
            b"repl-stream-db" => self.repl_db = number().and_then(|n| usize::try_from(n).ok()),
            _ => {}
        }
    }
}

/// Function libraries found while loading keys some other way (an AOF's RDB base, a
/// master's payload, which `inner` observes) are loaded as a start-up load loads them.
pub struct WithFunctions<'a> {
    pub shared: &'a Shared,
    pub inner: &'a mut dyn carmine_rdb::LoadObserver,
}

impl carmine_rdb::LoadObserver for WithFunctions<'_> {
    fn progress(&mut self, bytes: usize, keys: u64) {
        self.inner.progress(bytes, keys)
    }

    fn expired(&mut self, db: usize, key: &[u8]) {
        self.inner.expired(db, key)
    }

    fn aux(&mut self, name: &[u8], value: &[u8]) {
        self.inner.aux(name, value)
    }

    fn key_read(&mut self) {
        self.inner.key_read()
    }

    fn keep_expired(&self) -> bool {
        self.inner.keep_expired()
    }

    fn function(&mut self, code: &[u8]) -> Result<(), String> {
        carmine_commands::functions::load_library(self.shared, code, true)
    }
}

/// Loads the dump at start-up, if there is one.
pub fn load_at_startup(shared: &Shared) -> io::Result<()> {
    load_rdb(shared, true, true)
}

/// Loads the dump file into the dataset. `flush_functions`: the file's libraries
/// replace every loaded one; otherwise they join them, replacing one of the same name
/// only when `replace_functions`.
fn load_rdb(shared: &Shared, flush_functions: bool, replace_functions: bool) -> io::Result<()> {
    let path = dump_path(shared);
    let started = Instant::now();
    let data = match carmine_rdb::DumpFile::open(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("Can't read {}: {e}", path.display()),
            ))
        }
    };
    log::notice(&format!(
        "Loading RDB produced by {} ({} bytes)",
        path.display(),
        data.len()
    ));
    let p = &shared.persist;
    p.loading_total_bytes
        .store(data.len() as u64, Ordering::Relaxed);
    p.loading_loaded_bytes.store(0, Ordering::Relaxed);
    p.loading_loaded_keys.store(0, Ordering::Relaxed);
    p.loading_start_unix.store(unix_now(), Ordering::Relaxed);
    p.loading.store(true, Ordering::Release);
    // The file's libraries replace ours, as its keys replace our keys.
    if flush_functions {
        carmine_commands::functions::flush_libraries(shared);
    }
    let mut seen = StartupLoad {
        shared,
        persist: p,
        repl_id: None,
        repl_offset: None,
        repl_db: None,
        expired: Vec::new(),
        key_load_delay_us: shared.config.get_i64("key-load-delay"),
        replace_functions,
        replica: !shared
            .config
            .get("replicaof")
            .unwrap_or_default()
            .trim()
            .is_empty(),
    };
    let result = carmine_rdb::load_observed(&shared.keyspace, &data, &mut seen);
    p.loading.store(false, Ordering::Release);
    match result {
        Ok(stats) => {
            log::notice(&format!(
                "Done loading RDB, keys loaded: {}, keys expired: {}.",
                stats.keys, stats.expired_skipped
            ));
            p.last_load_keys_loaded.store(stats.keys, Ordering::Relaxed);
            p.last_load_keys_expired
                .store(stats.expired_skipped, Ordering::Relaxed);
            if let (Some(replid), Some(offset), Some(db), Some(stream)) = (
                seen.repl_id,
                seen.repl_offset,
                seen.repl_db,
                ReplicationStream::of(shared),
            ) {
                let point = ReplPoint { replid, offset, db };
                stream.restore_from_snapshot(shared, point, &seen.expired);
            }
            log::notice(&format!(
                "DB loaded from disk: {:.3} seconds",
                started.elapsed().as_secs_f64()
            ));
            // What was loaded is what is on disk.
            shared
                .persist
                .dirty_at_last_save
                .store(shared.total_dirty(), Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "Fatal error loading the DB {}: {e}. Exiting.",
                path.display()
            ),
        )),
    }
}

/// Save points (`save <seconds> <changes>`) and BGSAVE SCHEDULE: called from loop 0's
/// cron, so embedded servers get them too.
pub fn tick(shared: &Shared) {
    unstarve_walk(shared);
    let p = &shared.persist;
    // No save of a dataset still loading (at start-up, or a replica's full sync).
    if p.bgsave_in_progress.load(Ordering::Acquire) || p.loading.load(Ordering::Acquire) {
        return;
    }
    let Some(files) = shared.persistence.get().cloned() else {
        return;
    };
    let changes = p.changes_since_save(shared);
    let since = unix_now().saturating_sub(p.last_save_unix.load(Ordering::Relaxed));
    let points: Vec<u64> = shared
        .config
        .get("save")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let due = points
        .chunks(2)
        .any(|c| matches!(c, [secs, n] if changes >= *n && since >= *secs && changes > 0));
    // After a failed save, wait 5 s before trying again (Redis' retry delay).
    let failed_recently = p.last_bgsave_failed.load(Ordering::Relaxed) && since < 5;
    if (due && !failed_recently) || p.bgsave_scheduled.swap(false, Ordering::AcqRel) {
        let _world = shared.barrier.exclusive();
        let _ = files.bgsave(shared);
    }
}

/// Saves before exit when SHUTDOWN SAVE was asked, or save points are configured and
/// SHUTDOWN NOSAVE was not.
pub fn save_on_shutdown(shared: &Shared, mode: carmine_commands::ShutdownMode) {
    use carmine_commands::ShutdownMode;
    let has_points = !shared
        .config
        .get("save")
        .unwrap_or_default()
        .trim()
        .is_empty();
    let wanted = match mode {
        ShutdownMode::Save => true,
        ShutdownMode::NoSave => false,
        ShutdownMode::Default => has_points,
    };
    let Some(files) = shared.persistence.get().cloned() else {
        return;
    };
    // A dataset still loading (a replica's full sync) is never saved: Redis forces
    // NOSAVE then, and a partial dump would replace a whole one.
    if !wanted || shared.persist.loading.load(Ordering::Acquire) {
        return;
    }
    // A full sync's snapshot would wait for a replica connection no loop drains any
    // more: end those transfers now (Redis kills its child), so the final save does not
    // wait for them.
    for c in shared.clients.snapshot() {
        if c.kind.load(Ordering::Relaxed) == carmine_commands::ClientInfo::REPLICA {
            c.kill();
        }
    }
    // A background save still running holds the snapshot: wait for it (bounded). An AOF
    // rewrite need not end first: the save walks beside it.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while shared.persist.bgsave_in_progress.load(Ordering::Acquire)
        && !shared.aof_rewriting()
        && Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    log::notice("Saving the final RDB snapshot before exiting.");
    // The master link may still apply commands: the snapshot and the offset it saves
    // are taken with the world stopped.
    let _world = shared.barrier.exclusive();
    if let Err(e) = files.save(shared) {
        log::warning(&format!("Error trying to save the DB, can't exit: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A snapshot whose backlog the test sets.
    struct Backlog(AtomicUsize);

    impl carmine_keyspace::SnapshotSink for Backlog {
        fn capture(
            &self,
            _db: usize,
            _slot: carmine_keyspace::Slot,
            _entries: &mut dyn Iterator<Item = (&[u8], &carmine_keyspace::Entry)>,
        ) {
        }

        fn backlog(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    /// Loops pause once writers' copies pass the limit and keep pausing until they are
    /// down to half; with no limit set (no BGSAVE running) they never pause.
    #[test]
    fn loops_pause_for_the_walk_between_the_limit_and_half_of_it() {
        let shared = Shared::new(carmine_commands::Config::new(), 1, None);
        let sink = Arc::new(Backlog(AtomicUsize::new(0)));
        assert!(shared.keyspace.begin_snapshot(sink.clone()).is_some());
        // A loop that is not pausing looks at the backlog every BACKLOG_CHECK_EVERY-th
        // wake-up: give it that many.
        let throttled = |backlog: usize| {
            sink.0.store(backlog, Ordering::Relaxed);
            for _ in 0..BACKLOG_CHECK_EVERY {
                yield_to_snapshot(&shared);
            }
            shared.persist.snapshot_throttled.load(Ordering::Relaxed)
        };
        assert!(!throttled(10_000), "no limit: no BGSAVE of ours");
        shared
            .persist
            .snapshot_backlog_limit
            .store(1000, Ordering::Relaxed);
        assert!(!throttled(1000), "at the limit");
        assert!(throttled(1001), "past it");
        assert!(throttled(700), "still over half");
        assert!(!throttled(500), "down to half");
        assert!(!throttled(900), "under the limit again");
        shared.keyspace.end_snapshot();
        assert_eq!(shared.keyspace.snapshot_backlog(), 0);
    }

    /// A finished background save's cleanup ends its own snapshot, never one begun
    /// since, and stops the loops' pauses.
    #[test]
    fn a_bgsave_cleanup_ends_only_its_own_snapshot() {
        let shared = Shared::new(carmine_commands::Config::new(), 1, None);
        let sink = || -> Arc<dyn carmine_keyspace::SnapshotSink> {
            Arc::new(Backlog(AtomicUsize::new(0)))
        };
        let first = shared.keyspace.begin_snapshot(sink()).expect("begins");
        shared.keyspace.end_snapshot();
        let second = shared.keyspace.begin_snapshot(sink()).expect("begins");
        shared
            .persist
            .snapshot_backlog_limit
            .store(1, Ordering::Relaxed);
        drop(BgsaveOver(&shared, first));
        assert_eq!(
            shared.keyspace.snapshot_epoch(),
            second,
            "the later one runs on"
        );
        assert_eq!(
            shared
                .persist
                .snapshot_backlog_limit
                .load(Ordering::Relaxed),
            0
        );
        drop(BgsaveOver(&shared, second));
        assert!(!shared.keyspace.snapshot_running());
        assert!(!shared.persist.bgsave_in_progress.load(Ordering::Relaxed));
    }
}
