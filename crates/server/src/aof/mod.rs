//! The append-only file (Redis 7.0's multi-part AOF) for the server: the write path's
//! effects appended to the current incr file, fsync by `appendfsync`, BGREWRITEAOF
//! from the fork-free snapshot, loading at start-up.
//!
//! The effects reach [`AppendOnly::feed`] from the replication stream's `append`, under
//! the same lock, so the file holds the writes in the order they ran, with its own
//! SELECTs (and without PUBLISH, which Redis does not persist either). The bytes wait in
//! `pending` until an event loop's before-sleep phase writes them: with
//! `appendfsync always`, a loop that appended writes and fsyncs before it sends the
//! turn's replies, and one fsync covers every loop's bytes written before it (group
//! commit: a loop that finds its bytes already covered sends at once). With `everysec`
//! the loop only writes; a background thread fsyncs once a second.
//!
//! A rewrite needs no fork and no rewrite buffer: with the world stopped, new writes are
//! pointed at a new incr file and a snapshot begins at that exact point; the snapshot
//! walk writes the new base, and the manifest then names the base and the new incr file,
//! retiring the old ones.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use carmine_aof::Manifest;
use carmine_commands::propagate::{encode_unit, Argv, Op};
use carmine_commands::Shared;
use parking_lot::Mutex;

use crate::log;

mod load;
mod rewrite;

pub use rewrite::commands;

const OFF: u8 = 0;
const ON: u8 = 1;
/// Switched on at run time: writes go to a temp incr file until the first rewrite ends.
const WAIT_REWRITE: u8 = 2;

/// `appendfsync` as the config's tunables hold it (2 is `no`).
const FSYNC_ALWAYS: u8 = 0;
const FSYNC_EVERYSEC: u8 = 1;

thread_local! {
    /// The AOF byte count just past this thread's last append: what its before-sleep
    /// phase must see written (and, with `always`, fsynced) before replies go out.
    static APPENDED_HERE: Cell<u64> = const { Cell::new(0) };
}

pub struct AppendOnly {
    shared: Weak<Shared>,
    state: AtomicU8,
    policy: AtomicU8,
    pending: Mutex<Pending>,
    files: Mutex<Files>,
    /// Bytes ever appended to `pending`.
    appended: AtomicU64,
    /// Bytes ever written to the file (and fsynced, with `always`).
    durable: AtomicU64,
    /// Bytes ever fsynced.
    synced: AtomicU64,
    rewriting: AtomicBool,
    /// BGREWRITEAOF prepared a rewrite whose switch is on its way.
    starting: AtomicBool,
    rewrite_scheduled: AtomicBool,
    /// Bumped when the AOF is switched off: a rewrite begun before belongs to files no
    /// longer in use and is discarded when it ends (Redis kills its child instead).
    generation: AtomicU64,
    rewrite_started: Mutex<Option<Instant>>,
    last_rewrite_secs: AtomicI64,
    last_rewrite_ok: AtomicBool,
    rewrites: AtomicU64,
    consecutive_failures: AtomicU64,
    write_error: Mutex<Option<String>>,
    /// `write_error` is set: read by every write command, so no lock on the fast path.
    write_failing: AtomicBool,
    fsync_in_progress: AtomicBool,
    /// Since when writes wait for a slow background fsync (see `postpone_for_fsync`).
    postponed_since: Mutex<Option<Instant>>,
    /// INFO's `aof_delayed_fsync`.
    delayed_fsync: AtomicU64,
    /// DEBUG AOF-FLUSH-SLEEP, in microseconds.
    flush_sleep_us: AtomicU64,
    /// Stops the running rewrite's snapshot walk (the AOF switched off: Redis kills its
    /// rewrite child then).
    rewrite_cancel: Mutex<Option<Arc<AtomicBool>>>,
    last_fsync: Mutex<Instant>,
    /// The AOF's size when the last rewrite ended (auto-aof-rewrite-percentage).
    rewrite_base_size: AtomicU64,
    current_size: AtomicU64,
    base_size: AtomicU64,
}

#[derive(Default)]
struct Pending {
    selected: Option<usize>,
    bytes: Vec<u8>,
    last_ts: u64,
}

#[derive(Default)]
struct Files {
    manifest: Manifest,
    /// The incr file writes go to.
    file: Option<Arc<File>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `dir` (the server's working directory after start-up).
fn work_dir(shared: &Shared) -> PathBuf {
    PathBuf::from(shared.config.get("dir").unwrap_or_default())
}

fn aof_dir(shared: &Shared) -> PathBuf {
    work_dir(shared).join(
        shared
            .config
            .get("appenddirname")
            .unwrap_or_else(|| "appendonlydir".into()),
    )
}

fn file_name(shared: &Shared) -> String {
    shared
        .config
        .get("appendfilename")
        .unwrap_or_else(|| "appendonly.aof".into())
}

/// `no-appendfsync-on-rewrite yes`: no fsync while a snapshot writes (a rewrite's
/// base, a BGSAVE, a full sync), so the two do not compete for the disk; Redis' rule,
/// at the same price (up to the snapshot's length of writes not yet on disk).
fn fsync_allowed(shared: &Shared) -> bool {
    !(shared.persist.bgsave_in_progress.load(Ordering::Relaxed)
        && shared.config.get_bool("no-appendfsync-on-rewrite"))
}

fn policy_of(shared: &Shared) -> u8 {
    shared.config.tunables.appendfsync.load(Ordering::Relaxed)
}

impl AppendOnly {
    /// DEBUG LOADAOF's load: the dataset emptied and read back from the files.
    fn reload_files(&self, shared: &Shared) -> Result<(), String> {
        for db in 0..shared.keyspace.databases() {
            shared.keyspace.flush_db(db);
        }
        let mut manifest = Self::read_manifest(shared).map_err(|e| e.to_string())?;
        let history = manifest.take_history();
        if !history.is_empty() {
            let dir = aof_dir(shared);
            for h in &history {
                let _ = std::fs::remove_file(dir.join(&h.name));
            }
            Self::persist_manifest(shared, &manifest).map_err(|e| e.to_string())?;
            self.files.lock().manifest.history.clear();
        }
        self.load_files(shared, &manifest, true)
            .map_err(|e| e.to_string())?;
        log::warning("Append Only File loaded by DEBUG LOADAOF");
        Ok(())
    }

    pub fn install(shared: &Arc<Shared>) -> Arc<AppendOnly> {
        let aof = Arc::new(AppendOnly {
            shared: Arc::downgrade(shared),
            state: AtomicU8::new(OFF),
            policy: AtomicU8::new(policy_of(shared)),
            pending: Mutex::new(Pending::default()),
            files: Mutex::new(Files::default()),
            appended: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            rewriting: AtomicBool::new(false),
            starting: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            rewrite_scheduled: AtomicBool::new(false),
            rewrite_started: Mutex::new(None),
            last_rewrite_secs: AtomicI64::new(-1),
            last_rewrite_ok: AtomicBool::new(true),
            rewrites: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            write_error: Mutex::new(None),
            write_failing: AtomicBool::new(false),
            fsync_in_progress: AtomicBool::new(false),
            postponed_since: Mutex::new(None),
            delayed_fsync: AtomicU64::new(0),
            flush_sleep_us: AtomicU64::new(0),
            rewrite_cancel: Mutex::new(None),
            last_fsync: Mutex::new(Instant::now()),
            rewrite_base_size: AtomicU64::new(0),
            current_size: AtomicU64::new(0),
            base_size: AtomicU64::new(0),
        });
        let _ = shared.append_only.set(aof.clone());
        aof
    }

    pub fn of(shared: &Shared) -> Option<&AppendOnly> {
        crate::replication::ReplicationStream::of(shared).and_then(|s| s.append_only())
    }

    /// True while writes are appended (on, or waiting for the first rewrite).
    pub fn feeding(&self) -> bool {
        self.state.load(Ordering::Acquire) != OFF
    }

    /// Appends one execution unit's effects. Called under the replication stream's
    /// lock, so units arrive in the order they ran.
    pub fn feed(&self, shared: &Shared, ops: &[Op<'_>], wrap: bool) {
        let mut p = self.pending.lock();
        let before = p.bytes.len();
        if shared
            .config
            .tunables
            .aof_timestamps
            .load(Ordering::Relaxed)
        {
            let now = unix_now();
            if now != p.last_ts {
                p.last_ts = now;
                carmine_aof::timestamp_annotation(now, &mut p.bytes);
            }
        }
        let Pending {
            selected, bytes, ..
        } = &mut *p;
        // PUBLISH reaches replicas only, as in Redis.
        let is_publish = |o: &Op<'_>| {
            let name = o.argv.get(0);
            name.eq_ignore_ascii_case(b"publish") || name.eq_ignore_ascii_case(b"spublish")
        };
        if ops.iter().any(is_publish) {
            let kept: Vec<Op<'_>> = ops
                .iter()
                .filter(|o| !is_publish(o))
                .map(|o| Op {
                    db: o.db,
                    argv: Argv::Owned((0..o.argv.len()).map(|i| o.argv.get(i).to_vec()).collect()),
                })
                .collect();
            encode_unit(selected, &kept, wrap, bytes);
        } else {
            encode_unit(selected, ops, wrap, bytes);
        }
        let added = (p.bytes.len() - before) as u64;
        if added == 0 {
            return;
        }
        let end = self.appended.fetch_add(added, Ordering::AcqRel) + added;
        APPENDED_HERE.with(|c| c.set(end));
    }

    /// Before this thread's replies go out: its appended bytes are in the file (and on
    /// disk, with `appendfsync always`).
    ///
    /// `replies_waiting`: with `always`, also every other loop's bytes appended so far.
    /// A reply here may show a write another loop appended and has not fsynced yet (the
    /// write was appended under its table locks, before this loop's read took them); in
    /// Redis, which fsyncs before any reply of the turn, no client sees a write that a
    /// crash could still take back. One fsync covers both loops' bytes.
    pub fn flush_for_this_thread(shared: &Shared, replies_waiting: bool) {
        let Some(aof) = Self::of(shared) else { return };
        let policy = policy_of(shared);
        let mut target = APPENDED_HERE.with(Cell::get);
        if replies_waiting && policy == FSYNC_ALWAYS {
            target = target.max(aof.appended.load(Ordering::Acquire));
        }
        if target <= aof.durable.load(Ordering::Acquire) {
            return;
        }
        aof.policy.store(policy, Ordering::Relaxed);
        if policy == FSYNC_EVERYSEC && aof.postpone_for_fsync() {
            return;
        }
        aof.write_pending(policy == FSYNC_ALWAYS && fsync_allowed(shared));
    }

    /// Redis' rule for a slow disk with `everysec`: while the background fsync runs, a
    /// write(2) to the same file would wait for it, so writes are postponed, up to two
    /// seconds; past that they go ahead and `aof_delayed_fsync` counts it. Meanwhile
    /// replies go out unwritten, the price `everysec` documents.
    fn postpone_for_fsync(&self) -> bool {
        // The fsync thread clears `postponed_since` when it ends.
        if !self.fsync_in_progress.load(Ordering::Acquire) {
            return false;
        }
        let mut since = self.postponed_since.lock();
        match *since {
            None => {
                *since = Some(Instant::now());
                true
            }
            Some(t) if t.elapsed() < Duration::from_secs(2) => true,
            Some(_) => {
                *since = None;
                self.delayed_fsync.fetch_add(1, Ordering::Relaxed);
                log::notice(
                    "Asynchronous AOF fsync is taking too long (disk is busy?). Writing the AOF buffer without waiting for fsync to complete, this may slow down Redis.",
                );
                false
            }
        }
    }

    /// Writes what is pending to the incr file, in order (the files lock is the
    /// writers' turn), and fsyncs it when asked.
    fn write_pending(&self, sync: bool) {
        let files = self.files.lock();
        let (bytes, end) = {
            let mut p = self.pending.lock();
            let bytes = std::mem::take(&mut p.bytes);
            (bytes, self.appended.load(Ordering::Acquire))
        };
        let Some(file) = files.file.clone() else {
            // No file open (switched off): nothing is kept.
            self.durable.fetch_max(end, Ordering::AcqRel);
            return;
        };
        if !bytes.is_empty() {
            let nap = self.flush_sleep_us.load(Ordering::Relaxed);
            if nap > 0 {
                std::thread::sleep(Duration::from_micros(nap));
            }
            if let Err(e) = (&*file).write_all(&bytes) {
                self.write_failed(&e);
                // The bytes stay unwritten: put them back in front of newer ones.
                let mut p = self.pending.lock();
                let newer = std::mem::take(&mut p.bytes);
                p.bytes = bytes;
                p.bytes.extend_from_slice(&newer);
                return;
            }
            self.current_size
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            self.write_recovered();
        }
        if sync && self.synced.load(Ordering::Acquire) < end {
            if let Err(e) = file.sync_data() {
                self.write_failed(&e);
                return;
            }
            self.synced.store(end, Ordering::Release);
        }
        drop(files);
        self.durable.fetch_max(end, Ordering::AcqRel);
        // Hand the buffer's allocation back if nothing was appended meanwhile.
        let mut p = self.pending.lock();
        if p.bytes.is_empty() {
            let mut bytes = bytes;
            bytes.clear();
            if bytes.capacity() <= 1 << 20 {
                p.bytes = bytes;
            }
        }
    }

    fn write_failed(&self, e: &io::Error) {
        let mut err = self.write_error.lock();
        if err.is_none() {
            log::warning(&format!("Error writing to the AOF file: {e}"));
        }
        *err = Some(e.to_string());
        self.write_failing.store(true, Ordering::Release);
        if self.policy.load(Ordering::Relaxed) == FSYNC_ALWAYS {
            // A reply may have promised these bytes were on disk; Redis exits too.
            log::warning(
                "Can't recover from AOF write error when the AOF fsync policy is 'always'. Exiting...",
            );
            std::process::exit(1);
        }
    }

    fn write_recovered(&self) {
        if !self.write_failing.load(Ordering::Acquire) {
            return;
        }
        let mut err = self.write_error.lock();
        self.write_failing.store(false, Ordering::Release);
        if err.take().is_some() {
            log::warning("AOF write error looks solved, Redis can write again.");
        }
    }

    /// `everysec`: fsyncs what was written, off the event loops.
    fn background_fsync(self: &Arc<Self>) {
        if self.fsync_in_progress.swap(true, Ordering::AcqRel) {
            return;
        }
        let file = self.files.lock().file.clone();
        let written = self.durable.load(Ordering::Acquire);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("carmine-aof-fsync".into())
            .spawn(move || {
                let _over = FsyncOver(&me);
                if let Some(f) = file {
                    match f.sync_data() {
                        Ok(()) => {
                            me.synced.fetch_max(written, Ordering::AcqRel);
                        }
                        Err(e) => log::warning(&format!("Fail to fsync the AOF file: {e}")),
                    }
                }
            });
        if spawned.is_err() {
            self.fsync_in_progress.store(false, Ordering::Release);
        }
    }

    fn manifest_path(shared: &Shared) -> PathBuf {
        aof_dir(shared).join(carmine_aof::manifest_name(&file_name(shared)))
    }

    /// Writes the manifest (temp file, fsync, rename, directory fsync).
    fn persist_manifest(shared: &Shared, m: &Manifest) -> io::Result<()> {
        let dir = aof_dir(shared);
        let name = file_name(shared);
        let tmp = dir.join(carmine_aof::temp_manifest_name(&name));
        let path = dir.join(carmine_aof::manifest_name(&name));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(m.to_text().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            crate::persistence::sync_dir_of(&path);
            Ok(())
        })();
        if let Err(e) = &result {
            log::warning(&format!(
                "Can't write the AOF manifest file {}: {e}",
                path.display()
            ));
        }
        result
    }

    fn open_append(path: &Path, truncate: bool) -> io::Result<File> {
        let mut o = OpenOptions::new();
        o.create(true);
        if truncate {
            o.write(true).truncate(true);
        } else {
            o.append(true);
        }
        o.open(path)
    }

    /// CONFIG SET appendonly no: the last writes fsynced, the file closed.
    fn stop(&self) {
        self.write_pending(true);
        self.state.store(OFF, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(cancel) = self.rewrite_cancel.lock().take() {
            // Redis' words, which its tests wait for; there is no child to kill here.
            log::notice("Killing running AOF rewrite child: its snapshot walk stops (no fork)");
            cancel.store(true, Ordering::Release);
        }
        let mut files = self.files.lock();
        if let Some(f) = files.file.take() {
            let _ = f.sync_data();
        }
        drop(files);
        self.rewrite_scheduled.store(false, Ordering::Release);
        *self.pending.lock() = Pending::default();
        *self.write_error.lock() = None;
        self.write_failing.store(false, Ordering::Release);
    }

    /// CONFIG SET appendonly yes: writes go to a temp incr file while the first rewrite
    /// writes the base; the AOF is on when it ends.
    fn switch_on(&self, shared: &Shared) {
        // No file yet: what is written before the rewrite's snapshot begins is in the
        // snapshot, so it is dropped here (the first rewrite opens the temp incr file
        // at the snapshot's point). The manifest on disk stays as the last run left it
        // until that rewrite ends.
        let manifest = Self::read_manifest(shared).unwrap_or_default();
        let mut files = self.files.lock();
        files.manifest = manifest;
        files.file = None;
        drop(files);
        self.pending.lock().selected = None;
        self.state.store(WAIT_REWRITE, Ordering::Release);
        self.rewrite_scheduled.store(true, Ordering::Release);
    }

    /// A replica replaced its dataset with its master's snapshot: the AOF is started
    /// again from a rewrite of the new dataset, as Redis restarts it after a sync.
    /// Called with the world stopped.
    pub fn restart_after_full_sync(shared: &Shared) {
        let Some(aof) = Self::of(shared) else { return };
        if !aof.feeding() {
            return;
        }
        aof.stop();
        aof.switch_on(shared);
        if let Err(e) = aof.start_rewrite(shared) {
            log::warning(&format!(
                "Can't rewrite the append only file after the sync: {e} (scheduled)"
            ));
        }
    }

    /// From loop 0's cron: `appendonly` switched, scheduled and automatic rewrites,
    /// the everysec fsync.
    pub fn cron(shared: &Shared) {
        let Some(stream) = crate::replication::ReplicationStream::of(shared) else {
            return;
        };
        let Some(aof) = stream.append_only_arc() else {
            return;
        };
        // Start-up opens the files itself once the load is done.
        if shared.persist.loading.load(Ordering::Acquire) {
            return;
        }
        aof.policy.store(policy_of(shared), Ordering::Relaxed);
        // CONFIG SET appendonly switches at once (`appendonly_changed`); here only the
        // rewrite it could not start yet, and the file's upkeep.
        if aof.state.load(Ordering::Acquire) == OFF {
            return;
        }
        // Writes appended by threads with no before-sleep (the master link, cron).
        if aof.appended.load(Ordering::Acquire) > aof.durable.load(Ordering::Acquire) {
            aof.write_pending(
                aof.policy.load(Ordering::Relaxed) == FSYNC_ALWAYS && fsync_allowed(shared),
            );
        }
        if aof.policy.load(Ordering::Relaxed) == FSYNC_EVERYSEC
            && fsync_allowed(shared)
            && aof.synced.load(Ordering::Acquire) < aof.durable.load(Ordering::Acquire)
            && aof.last_fsync.lock().elapsed() >= Duration::from_secs(1)
        {
            *aof.last_fsync.lock() = Instant::now();
            aof.background_fsync();
        }
        let busy = shared.persist.bgsave_in_progress.load(Ordering::Acquire);
        if busy || aof.rewriting.load(Ordering::Acquire) || aof.starting.load(Ordering::Acquire) {
            return;
        }
        let auto = || {
            let pct = shared.config.get_i64("auto-aof-rewrite-percentage");
            let min = shared.config.get_i64("auto-aof-rewrite-min-size").max(0) as u64;
            let size = aof.current_size.load(Ordering::Relaxed);
            let base = aof.rewrite_base_size.load(Ordering::Relaxed).max(1);
            pct > 0
                && aof.state.load(Ordering::Acquire) == ON
                && size > min
                && (size.saturating_sub(base)) * 100 / base >= pct as u64
        };
        if aof.rewrite_scheduled.load(Ordering::Acquire) || auto() {
            let started = aof.prepare_rewrite(shared).and_then(|prepared| {
                let _world = shared.barrier.exclusive();
                aof.begin_rewrite(shared, prepared)
            });
            if let Err(e) = started {
                log::warning(&format!(
                    "Can't rewrite append only file in background: {e}"
                ));
            }
        }
    }

    /// At shutdown: everything written and fsynced.
    pub fn shutdown(shared: &Shared) {
        if let Some(aof) = Self::of(shared) {
            if aof.feeding() {
                log::notice("Calling fsync() on the AOF file.");
                aof.write_pending(true);
            }
        }
    }
}

/// Ends a background fsync when dropped, even by a panic's unwinding: writes stop
/// waiting on it and the next fsync may start. A mark left set would have postponed
/// every later fsync for good, the file's data staying in the page cache.
struct FsyncOver<'a>(&'a AppendOnly);

impl Drop for FsyncOver<'_> {
    fn drop(&mut self) {
        *self.0.postponed_since.lock() = None;
        self.0.fsync_in_progress.store(false, Ordering::Release);
    }
}

impl carmine_commands::AppendOnly for AppendOnly {
    fn info(&self, out: &mut String) {
        use std::fmt::Write as _;
        let state = self.state.load(Ordering::Acquire);
        // CONFIG SET appendonly takes effect at the next cron tick; INFO already tells
        // what was asked (Redis switches at once).
        let wanted = self
            .shared
            .upgrade()
            .map_or(state != OFF, |s| s.config.get_bool("appendonly"));
        let rewriting = self.rewriting.load(Ordering::Acquire);
        let current = self
            .rewrite_started
            .lock()
            .map_or(-1, |t| t.elapsed().as_secs() as i64);
        let _ = write!(
            out,
            "aof_enabled:{}\r\naof_rewrite_in_progress:{}\r\naof_rewrite_scheduled:{}\r\n\
             aof_last_rewrite_time_sec:{}\r\naof_current_rewrite_time_sec:{}\r\n\
             aof_last_bgrewrite_status:{}\r\naof_rewrites:{}\r\n\
             aof_rewrites_consecutive_failures:{}\r\naof_last_write_status:{}\r\n\
             aof_last_cow_size:0\r\nmodule_fork_in_progress:0\r\nmodule_fork_last_cow_size:0\r\n",
            u8::from(wanted),
            // Prepared and about to switch counts as in progress: a client waiting for
            // the rewrite to end must not see it as over before it began.
            u8::from(rewriting || self.starting.load(Ordering::Acquire)),
            u8::from(self.rewrite_scheduled.load(Ordering::Acquire) || (wanted && state == OFF)),
            self.last_rewrite_secs.load(Ordering::Relaxed),
            if rewriting { current } else { -1 },
            if self.last_rewrite_ok.load(Ordering::Relaxed) {
                "ok"
            } else {
                "err"
            },
            self.rewrites.load(Ordering::Relaxed),
            self.consecutive_failures.load(Ordering::Relaxed),
            if self.write_failing.load(Ordering::Acquire) {
                "err"
            } else {
                "ok"
            },
        );
        if state != OFF {
            let _ = write!(
                out,
                "aof_current_size:{}\r\naof_base_size:{}\r\naof_pending_rewrite:{}\r\n\
                 aof_buffer_length:{}\r\naof_pending_bio_fsync:{}\r\naof_delayed_fsync:{}\r\n",
                self.current_size.load(Ordering::Relaxed),
                self.base_size.load(Ordering::Relaxed),
                u8::from(self.rewrite_scheduled.load(Ordering::Acquire)),
                self.pending.lock().bytes.len(),
                u8::from(self.fsync_in_progress.load(Ordering::Acquire)),
                self.delayed_fsync.load(Ordering::Relaxed),
            );
        }
    }

    fn write_error(&self) -> Option<String> {
        if !self.write_failing.load(Ordering::Acquire) {
            return None;
        }
        self.write_error.lock().clone()
    }

    fn rewriting(&self) -> bool {
        self.rewriting.load(Ordering::Acquire)
    }

    fn reload(&self, shared: &Shared) -> Result<(), String> {
        if self.feeding() {
            self.write_pending(true);
        }
        // The world is stopped; clients waiting for it are answered -LOADING meanwhile.
        let loading = &shared.persist.loading;
        loading.store(true, Ordering::Release);
        let result = self.reload_files(shared);
        loading.store(false, Ordering::Release);
        result
    }

    fn set_flush_sleep(&self, micros: u64) {
        self.flush_sleep_us.store(micros, Ordering::Relaxed);
    }

    fn appendonly_changed(&self, shared: &Shared) -> Result<(), String> {
        let wanted = shared.config.get_bool("appendonly");
        let state = self.state.load(Ordering::Acquire);
        if !wanted && state != OFF {
            self.stop();
            log::notice("The append only file is switched off (CONFIG SET appendonly no)");
        } else if wanted && state == OFF {
            self.switch_on(shared);
            let me = crate::replication::ReplicationStream::of(shared)
                .and_then(|s| s.append_only_arc().cloned());
            let busy = shared.persist.bgsave_in_progress.load(Ordering::Acquire);
            match me {
                // Another snapshot runs: the cron starts the rewrite when it ends.
                Some(_) if busy => log::warning(
                    "AOF was enabled but there is already another background operation. An AOF background was scheduled to start when possible.",
                ),
                Some(me) => {
                    if let Err(e) = me.start_in_background(shared) {
                        log::warning(&format!(
                            "Redis needs to enable the AOF but can't trigger a background AOF rewrite operation: {e}"
                        ));
                    }
                }
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis' slow-disk rule for `everysec`, without a slow disk: while a background fsync
    /// runs, writes are postponed; after two seconds of that they go ahead once, counted
    /// in `aof_delayed_fsync`; with no fsync running nothing is postponed.
    #[test]
    fn writes_wait_for_a_slow_fsync_up_to_two_seconds_then_go_ahead_counted() {
        let shared = Arc::new(Shared::new(carmine_commands::Config::new(), 1, None));
        let aof = AppendOnly::install(&shared);
        assert!(!aof.postpone_for_fsync(), "no fsync runs: nothing waits");
        aof.fsync_in_progress.store(true, Ordering::Release);
        assert!(
            aof.postpone_for_fsync(),
            "the first write behind a running fsync waits"
        );
        assert!(
            aof.postpone_for_fsync(),
            "and so do the next ones, within two seconds"
        );
        assert_eq!(aof.delayed_fsync.load(Ordering::Relaxed), 0);
        // Two seconds and more since the first postponed write.
        *aof.postponed_since.lock() = Instant::now().checked_sub(Duration::from_millis(2001));
        assert!(
            !aof.postpone_for_fsync(),
            "past two seconds the write goes ahead"
        );
        assert_eq!(aof.delayed_fsync.load(Ordering::Relaxed), 1);
        // The fsync still runs: the wait starts over.
        assert!(aof.postpone_for_fsync());
        assert_eq!(aof.delayed_fsync.load(Ordering::Relaxed), 1);
        // The fsync ends (its thread clears the mark): writes go out at once.
        *aof.postponed_since.lock() = None;
        aof.fsync_in_progress.store(false, Ordering::Release);
        assert!(!aof.postpone_for_fsync());
    }
}
