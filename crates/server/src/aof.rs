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

use carmine_aof::{CommandReader, Manifest, ReadError};
use carmine_commands::propagate::{encode_unit, Argv, Op};
use carmine_commands::table::{cmd, flags::*, CommandSpec, KeySpec};
use carmine_commands::{ClientInfo, Ctx, Session, Shared};
use carmine_resp::{Args, ReplyBuf};
use parking_lot::Mutex;

use crate::log;

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
    fsync_in_progress: AtomicBool,
    /// DEBUG AOF-FLUSH-SLEEP, in microseconds.
    flush_sleep_us: AtomicU64,
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

/// An incr file made ready for a rewrite (see `prepare_rewrite`).
struct PreparedRewrite {
    state: u8,
    generation: u64,
    /// The file, and the manifest naming it (None while switching on: a temp file).
    incr: Option<(Arc<File>, Option<Manifest>)>,
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

fn policy_of(shared: &Shared) -> u8 {
    shared.config.tunables.appendfsync.load(Ordering::Relaxed)
}

impl AppendOnly {
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
            fsync_in_progress: AtomicBool::new(false),
            flush_sleep_us: AtomicU64::new(0),
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
    pub fn flush_for_this_thread(shared: &Shared) {
        let Some(aof) = Self::of(shared) else { return };
        let target = APPENDED_HERE.with(Cell::get);
        if target <= aof.durable.load(Ordering::Acquire) {
            return;
        }
        let policy = policy_of(shared);
        aof.policy.store(policy, Ordering::Relaxed);
        aof.write_pending(policy == FSYNC_ALWAYS);
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
            self.durable.store(end, Ordering::Release);
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
        self.durable.store(end, Ordering::Release);
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
        if self.policy.load(Ordering::Relaxed) == FSYNC_ALWAYS {
            // A reply may have promised these bytes were on disk; Redis exits too.
            log::warning(
                "Can't recover from AOF write error when the AOF fsync policy is 'always'. Exiting...",
            );
            std::process::exit(1);
        }
    }

    fn write_recovered(&self) {
        let mut err = self.write_error.lock();
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
                if let Some(f) = file {
                    match f.sync_data() {
                        Ok(()) => {
                            me.synced.fetch_max(written, Ordering::AcqRel);
                        }
                        Err(e) => log::warning(&format!("Fail to fsync the AOF file: {e}")),
                    }
                }
                me.fsync_in_progress.store(false, Ordering::Release);
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

    /// Loads the AOF at start-up (`appendonly yes`), then opens the incr file writes go
    /// to, writing a base first when there is nothing (as Redis 7 does). Returns whether
    /// any data was loaded.
    pub fn start(shared: &Arc<Shared>) -> io::Result<()> {
        let Some(aof) = Self::of(shared) else {
            return Ok(());
        };
        let dir = aof_dir(shared);
        let name = file_name(shared);
        let mut manifest = Self::read_manifest(shared)?;
        // An old single-file AOF in `dir`: adopted as the base (Redis' upgrade).
        let single = work_dir(shared).join(&name);
        if single.exists()
            && (!dir.is_dir()
                || manifest.is_empty()
                || (manifest.incrs.is_empty()
                    && manifest.base.as_ref().is_some_and(|b| b.name == name)
                    && !dir.join(&name).exists()))
        {
            std::fs::create_dir_all(&dir).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "Can't open or create append-only dir {}: {e}",
                        dir.display()
                    ),
                )
            })?;
            manifest.adopt_single_file(&name);
            Self::persist_manifest(shared, &manifest)?;
            std::fs::rename(&single, dir.join(&name))?;
            log::notice(&format!(
                "Successfully migrated an old-style AOF file ({name}) into the AOF directory ({}).",
                dir.display()
            ));
        }
        let started = Instant::now();
        let loaded = aof.load_files(shared, &manifest, false)?;
        if loaded {
            log::notice(&format!(
                "DB loaded from append only file: {:.3} seconds",
                started.elapsed().as_secs_f64()
            ));
        }
        aof.open_on_start(shared, manifest)
    }

    fn read_manifest(shared: &Shared) -> io::Result<Manifest> {
        let path = Self::manifest_path(shared);
        match std::fs::read(&path) {
            Ok(bytes) => Manifest::parse(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("Fatal AOF manifest file error in {}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!(
                    "Fatal error: can't open the AOF manifest file {} for reading: {e}",
                    path.display()
                ),
            )),
        }
    }

    /// Loads the base and incr files in order. False when there was nothing to load.
    fn load_files(
        &self,
        shared: &Shared,
        manifest: &Manifest,
        world_held: bool,
    ) -> io::Result<bool> {
        let dir = aof_dir(shared);
        let files: Vec<&carmine_aof::AofFile> = manifest.load_order().collect();
        if files.is_empty() {
            return Ok(false);
        }
        let mut total = 0u64;
        for f in &files {
            match std::fs::metadata(dir.join(&f.name)) {
                Ok(m) => total += m.len(),
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("The AOF file {} doesn't exist: {e}", f.name),
                    ))
                }
            }
        }
        if total == 0 {
            return Ok(false);
        }
        // The caller keeps `loading` set until writes are appended again (start-up), or
        // holds the world stopped (DEBUG LOADAOF).
        let p = &shared.persist;
        p.loading_total_bytes.store(total, Ordering::Relaxed);
        p.loading_loaded_bytes.store(0, Ordering::Relaxed);
        p.loading_start_unix.store(unix_now(), Ordering::Relaxed);
        let result = (|| -> io::Result<()> {
            let mut replay = Replay::new(shared, world_held);
            for (i, f) in files.iter().enumerate() {
                let last = i + 1 == files.len();
                let kind = if f.kind == carmine_aof::FileKind::Base {
                    "base"
                } else {
                    "incr"
                };
                let t = Instant::now();
                replay.file(shared, &dir.join(&f.name), &f.name, last)?;
                log::notice(&format!(
                    "DB loaded from {kind} file {}: {:.3} seconds",
                    f.name,
                    t.elapsed().as_secs_f64()
                ));
            }
            Ok(())
        })();
        result?;
        let base = manifest
            .base
            .as_ref()
            .and_then(|b| std::fs::metadata(dir.join(&b.name)).ok())
            .map_or(0, |m| m.len());
        self.current_size.store(total, Ordering::Relaxed);
        self.base_size.store(base, Ordering::Relaxed);
        self.rewrite_base_size.store(base, Ordering::Relaxed);
        p.dirty_at_last_save
            .store(shared.total_dirty(), Ordering::Relaxed);
        Ok(true)
    }

    /// After loading: a base for an empty start, the last incr file opened for appends,
    /// the manifest on disk; then writes are appended.
    fn open_on_start(&self, shared: &Arc<Shared>, mut manifest: Manifest) -> io::Result<()> {
        let dir = aof_dir(shared);
        let name = file_name(shared);
        std::fs::create_dir_all(&dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "Can't open or create append-only dir {}: {e}",
                    dir.display()
                ),
            )
        })?;
        if manifest.is_empty() {
            let base = manifest.new_base(&name, shared.config.get_bool("aof-use-rdb-preamble"));
            let _world = shared.barrier.exclusive();
            write_base(shared, &dir.join(&base))?;
            log::notice(&format!("Creating AOF base file {base} on server start"));
            self.base_size.store(
                std::fs::metadata(dir.join(&base)).map_or(0, |m| m.len()),
                Ordering::Relaxed,
            );
        }
        let created = manifest.incrs.is_empty();
        let incr = manifest.last_incr_or_new(&name);
        let file = Self::open_append(&dir.join(&incr), false).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("Can't open the append-only file {incr}: {e}"),
            )
        })?;
        Self::persist_manifest(shared, &manifest)?;
        log::notice(&format!(
            "{} AOF incr file {incr} on server start",
            if created { "Creating" } else { "Opening" }
        ));
        self.current_size.store(
            manifest
                .load_order()
                .filter_map(|f| std::fs::metadata(dir.join(&f.name)).ok())
                .map(|m| m.len())
                .sum(),
            Ordering::Relaxed,
        );
        let mut files = self.files.lock();
        files.manifest = manifest;
        files.file = Some(Arc::new(file));
        drop(files);
        self.pending.lock().selected = None;
        self.state.store(ON, Ordering::Release);
        Ok(())
    }

    /// A rewrite begun where the world is already stopped (BGREWRITEAOF, a replica's
    /// restart after a sync).
    pub fn start_rewrite(&self, shared: &Shared) -> Result<(), String> {
        let prepared = self.prepare_rewrite(shared)?;
        self.begin_rewrite(shared, prepared)
    }

    /// The slow half of starting a rewrite, done while the loops run where the caller
    /// can: the incr file new writes will go to is created and named in the manifest on
    /// disk (fsyncs). Until the switch it stays empty; a crash meanwhile loads it empty.
    fn prepare_rewrite(&self, shared: &Shared) -> Result<PreparedRewrite, String> {
        if self.rewriting.load(Ordering::Acquire) {
            return Err("Background append only file rewriting already in progress".into());
        }
        let fail = |e: String| {
            self.last_rewrite_ok.store(false, Ordering::Relaxed);
            e
        };
        let dir = aof_dir(shared);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            log::warning(&format!(
                "Can't open or create append-only dir {}: {e}",
                dir.display()
            ));
            return Err(fail(e.to_string()));
        }
        let name = file_name(shared);
        let state = self.state.load(Ordering::Acquire);
        let generation = self.generation.load(Ordering::Acquire);
        if state == OFF {
            return Ok(PreparedRewrite {
                state,
                generation,
                incr: None,
            });
        }
        let (incr_name, next) = if state == WAIT_REWRITE {
            (carmine_aof::temp_incr_name(&name), None)
        } else {
            let mut next = self.files.lock().manifest.clone();
            (next.new_incr(&name), Some(next))
        };
        let file = Self::open_append(&dir.join(&incr_name), true).map_err(|e| {
            log::warning(&format!("Can't open the append-only file {incr_name}: {e}"));
            fail(e.to_string())
        })?;
        if let Some(next) = &next {
            Self::persist_manifest(shared, next).map_err(|e| fail(e.to_string()))?;
        }
        log::notice(&format!(
            "Creating AOF incr file {incr_name} on background rewrite"
        ));
        Ok(PreparedRewrite {
            state,
            generation,
            incr: Some((Arc::new(file), next)),
        })
    }

    /// The switch, with the world stopped: writes go to the prepared incr file from
    /// here on, and the snapshot the new base is written from begins at this point.
    fn begin_rewrite(&self, shared: &Shared, prepared: PreparedRewrite) -> Result<(), String> {
        let Some(owned) = self.shared.upgrade() else {
            return Err("server is shutting down".into());
        };
        if prepared.state != self.state.load(Ordering::Acquire)
            || prepared.generation != self.generation.load(Ordering::Acquire)
        {
            return Err("the AOF was switched meanwhile".into());
        }
        // What is pending belongs to the files before the switch.
        self.write_pending(self.policy.load(Ordering::Relaxed) == FSYNC_ALWAYS);
        if let Some((file, next)) = prepared.incr {
            let mut files = self.files.lock();
            if let Some(next) = next {
                files.manifest = next;
            }
            if let Some(old) = files.file.replace(file) {
                // Everything in it was written; everysec still owes it an fsync, which
                // runs off the loops (Redis hands it to a background thread too).
                let _ = std::thread::Builder::new()
                    .name("carmine-aof-close".into())
                    .spawn(move || {
                        let _ = old.sync_data();
                    });
            }
            drop(files);
            // A new file starts with a SELECT.
            self.pending.lock().selected = None;
        }
        self.rewriting.store(true, Ordering::Release);
        *self.rewrite_started.lock() = Some(Instant::now());
        self.rewrite_scheduled.store(false, Ordering::Release);
        self.rewrites.fetch_add(1, Ordering::Relaxed);
        let tmp = work_dir(shared).join(carmine_aof::temp_rewrite_name(std::process::id()));
        let job_tmp = tmp.clone();
        let generation = prepared.generation;
        let spawned = crate::persistence::spawn_snapshot(
            shared,
            owned,
            "carmine-aofrw",
            move |owned, snap| {
                let written = write_snapshot_base(owned, snap, &job_tmp);
                if let Some(aof) = AppendOnly::of(owned) {
                    aof.rewrite_done(owned, written, &job_tmp, generation);
                }
            },
        );
        if let Err(e) = spawned {
            self.rewriting.store(false, Ordering::Release);
            self.last_rewrite_ok.store(false, Ordering::Relaxed);
            return Err(e);
        }
        log::notice("Background append only file rewriting started (no fork: a snapshot)");
        Ok(())
    }

    fn rewrite_done(&self, shared: &Shared, written: io::Result<()>, tmp: &Path, generation: u64) {
        let started = self.rewrite_started.lock().take();
        if generation != self.generation.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(tmp);
            log::warning("Background AOF rewrite discarded: the AOF was switched off meanwhile");
            if self.state.load(Ordering::Acquire) == WAIT_REWRITE {
                self.rewrite_scheduled.store(true, Ordering::Release);
            }
            self.rewriting.store(false, Ordering::Release);
            return;
        }
        self.last_rewrite_secs.store(
            started.map_or(-1, |t| t.elapsed().as_secs() as i64),
            Ordering::Relaxed,
        );
        let result = written.and_then(|()| {
            log::notice("Background AOF rewrite terminated with success");
            self.install_rewrite(shared, tmp)
        });
        let _ = std::fs::remove_file(tmp);
        match result {
            Ok(()) => {
                self.last_rewrite_ok.store(true, Ordering::Relaxed);
                self.consecutive_failures.store(0, Ordering::Relaxed);
                log::notice("Background AOF rewrite finished successfully");
            }
            Err(e) => {
                self.last_rewrite_ok.store(false, Ordering::Relaxed);
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                log::warning(&format!(
                    "Background AOF rewrite terminated with error: {e}"
                ));
                if self.state.load(Ordering::Acquire) == WAIT_REWRITE {
                    // Try again: the AOF is not on until a rewrite succeeds.
                    self.rewrite_scheduled.store(true, Ordering::Release);
                }
            }
        }
        self.rewriting.store(false, Ordering::Release);
    }

    /// The new base into the directory, the manifest naming it, the old files deleted.
    fn install_rewrite(&self, shared: &Shared, tmp: &Path) -> io::Result<()> {
        let dir = aof_dir(shared);
        let name = file_name(shared);
        let state = self.state.load(Ordering::Acquire);
        // Renames and manifest fsyncs run without the files lock, which the loops' writes
        // take: nothing else changes the manifest while a rewrite runs.
        let mut next = self.files.lock().manifest.clone();
        let base = next.new_base(&name, shared.config.get_bool("aof-use-rdb-preamble"));
        std::fs::rename(tmp, dir.join(&base))?;
        log::notice(&format!(
            "Successfully renamed the temporary AOF base file {} into {base}",
            tmp.display()
        ));
        if state == WAIT_REWRITE {
            let temp_incr = carmine_aof::temp_incr_name(&name);
            let incr = next.new_incr(&name);
            std::fs::rename(dir.join(&temp_incr), dir.join(&incr))?;
            log::notice(&format!(
                "Successfully renamed the temporary AOF incr file {temp_incr} into {incr}"
            ));
        }
        next.retire_rewritten_incrs(state != OFF);
        Self::persist_manifest(shared, &next)?;
        let history = next.take_history();
        if shared.config.get_bool("aof-disable-auto-gc") {
            next.history = history.clone();
        } else {
            for h in &history {
                log::notice(&format!(
                    "Removing the history file {} in the background",
                    h.name
                ));
                let _ = std::fs::remove_file(dir.join(&h.name));
            }
        }
        Self::persist_manifest(shared, &next)?;
        if state != OFF {
            let size: u64 = next
                .load_order()
                .filter_map(|f| std::fs::metadata(dir.join(&f.name)).ok())
                .map(|m| m.len())
                .sum();
            self.current_size.store(size, Ordering::Relaxed);
            self.rewrite_base_size.store(size, Ordering::Relaxed);
            self.base_size.store(
                std::fs::metadata(dir.join(&base)).map_or(0, |m| m.len()),
                Ordering::Relaxed,
            );
        }
        self.files.lock().manifest = next;
        if state == WAIT_REWRITE {
            self.state.store(ON, Ordering::Release);
        }
        Ok(())
    }

    /// CONFIG SET appendonly no: the last writes fsynced, the file closed.
    fn stop(&self) {
        self.write_pending(true);
        self.state.store(OFF, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut files = self.files.lock();
        if let Some(f) = files.file.take() {
            let _ = f.sync_data();
        }
        drop(files);
        self.rewrite_scheduled.store(false, Ordering::Release);
        *self.pending.lock() = Pending::default();
        *self.write_error.lock() = None;
    }

    /// CONFIG SET appendonly yes: writes go to a temp incr file while the first rewrite
    /// writes the base; the AOF is on when it ends.
    fn switch_on(&self, shared: &Shared) {
        let dir = aof_dir(shared);
        let temp = dir.join(carmine_aof::temp_incr_name(&file_name(shared)));
        let opened = std::fs::create_dir_all(&dir).and_then(|()| Self::open_append(&temp, true));
        match opened {
            Ok(f) => {
                // The manifest on disk stays as the last run left it until the rewrite.
                let manifest = Self::read_manifest(shared).unwrap_or_default();
                let mut files = self.files.lock();
                files.manifest = manifest;
                files.file = Some(Arc::new(f));
                drop(files);
                self.pending.lock().selected = None;
                self.state.store(WAIT_REWRITE, Ordering::Release);
                self.rewrite_scheduled.store(true, Ordering::Release);
            }
            Err(e) => log::warning(&format!(
                "Redis needs to enable the AOF but can't open {}: {e}",
                temp.display()
            )),
        }
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
        let wanted = shared.config.get_bool("appendonly");
        let state = aof.state.load(Ordering::Acquire);
        if !wanted && state != OFF {
            let _world = shared.barrier.exclusive();
            aof.stop();
            log::notice("Background append only file rewriting stopped: appendonly is off");
            return;
        }
        if wanted && state == OFF {
            let _world = shared.barrier.exclusive();
            aof.switch_on(shared);
        }
        if aof.state.load(Ordering::Acquire) == OFF {
            return;
        }
        // Writes appended by threads with no before-sleep (the master link, cron).
        if aof.appended.load(Ordering::Acquire) > aof.durable.load(Ordering::Acquire) {
            aof.write_pending(aof.policy.load(Ordering::Relaxed) == FSYNC_ALWAYS);
        }
        if aof.policy.load(Ordering::Relaxed) == FSYNC_EVERYSEC
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
            u8::from(rewriting),
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
            if self.write_error.lock().is_some() {
                "err"
            } else {
                "ok"
            },
        );
        if state != OFF {
            let _ = write!(
                out,
                "aof_current_size:{}\r\naof_base_size:{}\r\naof_pending_rewrite:{}\r\n\
                 aof_buffer_length:{}\r\naof_pending_bio_fsync:{}\r\naof_delayed_fsync:0\r\n",
                self.current_size.load(Ordering::Relaxed),
                self.base_size.load(Ordering::Relaxed),
                u8::from(self.rewrite_scheduled.load(Ordering::Acquire)),
                self.pending.lock().bytes.len(),
                u8::from(self.fsync_in_progress.load(Ordering::Acquire)),
            );
        }
    }

    fn write_error(&self) -> Option<String> {
        self.write_error.lock().clone()
    }

    fn rewriting(&self) -> bool {
        self.rewriting.load(Ordering::Acquire)
    }

    fn reload(&self, shared: &Shared) -> Result<(), String> {
        if self.feeding() {
            self.write_pending(true);
        }
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

    fn set_flush_sleep(&self, micros: u64) {
        self.flush_sleep_us.store(micros, Ordering::Relaxed);
    }
}

/// The base an empty start writes at once (the world is stopped by the caller).
fn write_base(shared: &Shared, path: &Path) -> io::Result<()> {
    let snap = carmine_rdb::Snapshot::begin(&shared.keyspace, Default::default(), true)
        .ok_or_else(|| io::Error::other("a snapshot is already running"))?;
    write_snapshot_base(shared, snap, path)?;
    crate::persistence::sync_dir_of(path);
    Ok(())
}

/// A rewrite's base, fsynced: an RDB marked `aof-base` with `aof-use-rdb-preamble yes`,
/// commands otherwise.
fn write_snapshot_base(
    shared: &Shared,
    snap: carmine_rdb::Snapshot,
    path: &Path,
) -> io::Result<()> {
    if shared.config.get_bool("aof-use-rdb-preamble") {
        return write_rdb_base(shared, snap, path);
    }
    // The snapshot walk writes RDB; it is turned into commands from a file on disk, so a
    // large dataset needs no second copy in memory.
    let rdb = path.with_extension("rdb-tmp");
    let result = write_rdb_base(shared, snap, &rdb).and_then(|()| {
        let data = carmine_rdb::DumpFile::open(&rdb)?;
        let mut out = io::BufWriter::with_capacity(256 << 10, File::create(path)?);
        if shared
            .config
            .tunables
            .aof_timestamps
            .load(Ordering::Relaxed)
        {
            let mut ts = Vec::new();
            carmine_aof::timestamp_annotation(unix_now(), &mut ts);
            out.write_all(&ts)?;
        }
        rdb_as_commands(&data, &mut out)?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    });
    let _ = std::fs::remove_file(&rdb);
    result
}

/// Redis' rewrite batch: at most this many items per RPUSH / SADD / ZADD / HMSET.
const ITEMS_PER_COMMAND: usize = 64;

/// Writes an RDB's keys as the commands that rebuild them (Redis' command-form rewrite:
/// SELECT, then SET / RPUSH / SADD / ZADD / HMSET in batches, then PEXPIREAT).
fn rdb_as_commands(data: &[u8], out: &mut impl Write) -> io::Result<()> {
    use carmine_commands::propagate::encode_command;
    let bad = |e: carmine_rdb::RdbError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut r = carmine_rdb::Reader::new(data).map_err(bad)?;
    let mut db = None;
    let mut buf = Vec::new();
    let mut emit = |argv: Vec<Vec<u8>>, out: &mut dyn Write| -> io::Result<()> {
        buf.clear();
        encode_command(&Argv::Owned(argv), &mut buf);
        out.write_all(&buf)
    };
    let batched = |name: &[u8], key: &[u8], items: Vec<Vec<u8>>, per: usize| -> Vec<Vec<Vec<u8>>> {
        items
            .chunks(ITEMS_PER_COMMAND * per)
            .map(|chunk| {
                let mut argv = vec![name.to_vec(), key.to_vec()];
                argv.extend(chunk.iter().cloned());
                argv
            })
            .collect()
    };
    while let Some(item) = r.next_item().map_err(bad)? {
        let carmine_rdb::Item::Entry(e) = item else {
            continue;
        };
        if db != Some(e.db) {
            emit(vec![b"SELECT".to_vec(), e.db.to_string().into_bytes()], out)?;
            db = Some(e.db);
        }
        let commands = match e.value {
            carmine_rdb::Value::String(v) => vec![vec![b"SET".to_vec(), e.key.clone(), v]],
            carmine_rdb::Value::List(items) => batched(b"RPUSH", &e.key, items, 1),
            carmine_rdb::Value::Set(items) => batched(b"SADD", &e.key, items, 1),
            carmine_rdb::Value::ZSet(items) => batched(
                b"ZADD",
                &e.key,
                items
                    .into_iter()
                    .flat_map(|(m, score)| [score.to_string().into_bytes(), m])
                    .collect(),
                2,
            ),
            carmine_rdb::Value::Hash(fields) => batched(
                b"HMSET",
                &e.key,
                fields.into_iter().flat_map(|(f, v)| [f, v]).collect(),
                2,
            ),
        };
        for argv in commands {
            emit(argv, out)?;
        }
        if let Some(at) = e.expire_ms {
            emit(
                vec![b"PEXPIREAT".to_vec(), e.key, at.to_string().into_bytes()],
                out,
            )?;
        }
    }
    Ok(())
}

/// An RDB base marked `aof-base`, fsynced.
fn write_rdb_base(shared: &Shared, snap: carmine_rdb::Snapshot, path: &Path) -> io::Result<()> {
    let mut aux = crate::persistence::aux_fields(shared, None);
    for (name, value) in &mut aux {
        if *name == "aof-base" {
            *value = b"1".to_vec();
        }
    }
    crate::persistence::write_snapshot(shared, snap, path, &aux).map(|_| ())
}

/// Replays AOF files through the dispatcher, as a session of its own kind.
struct Replay {
    session: Session,
    stats: Arc<carmine_commands::ThreadStats>,
    reply: ReplyBuf,
    loaded_before: u64,
}

impl Replay {
    fn new(shared: &Shared, world_held: bool) -> Replay {
        let info = Arc::new(ClientInfo::new(
            shared.clients.next_id(),
            String::new(),
            String::new(),
            -1,
            shared.io_threads(),
        ));
        let mut session = Session::new(info, shared.io_threads(), true);
        session.master_link = true;
        session.replaying = true;
        session.world_held = world_held;
        Replay {
            session,
            stats: shared.new_thread_stats(),
            reply: ReplyBuf::new(false),
            loaded_before: 0,
        }
    }

    fn file(&mut self, shared: &Shared, path: &Path, name: &str, last: bool) -> io::Result<()> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let data = std::fs::read(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("Fatal error: can't open the append log file {name} for reading: {e}"),
            )
        })?;
        let mut start = 0;
        if carmine_aof::starts_with_rdb(&data) {
            log::notice("Reading RDB base file on AOF loading...");
            let stats = carmine_rdb::load_into(&shared.keyspace, &data).map_err(|e| {
                bad(format!(
                    "Error reading the RDB base file {name}, AOF loading aborted: {e}"
                ))
            })?;
            start = stats.end;
        }
        let mut reader = CommandReader::new(&data, start);
        let mut argv = Vec::new();
        let mut args;
        let mut n = 0u64;
        loop {
            match reader.next_command(&mut argv) {
                Ok(true) => {}
                Ok(false) => break,
                Err(ReadError::Truncated { valid_up_to, .. }) => {
                    if !last {
                        return Err(bad(format!(
                            "Fatal error: the truncated file is not the last file ({name})"
                        )));
                    }
                    if !shared.config.get_bool("aof-load-truncated") {
                        return Err(bad(format!(
                            "Unexpected end of file reading the append only file {name}. You can: \
                             1) Make a backup of your AOF file, then use ./redis-check-aof --fix <filename.manifest>. \
                             2) Alternatively you can set the 'aof-load-truncated' configuration option to yes and restart the server."
                        )));
                    }
                    log::warning(&format!(
                        "!!! Warning: short read while loading the AOF file {name}!!!"
                    ));
                    log::warning(&format!(
                        "!!! Truncating the AOF {name} at offset {valid_up_to} !!!"
                    ));
                    drop(data);
                    OpenOptions::new()
                        .write(true)
                        .open(path)
                        .and_then(|f| f.set_len(valid_up_to as u64))
                        .map_err(|e| bad(format!("Error truncating the AOF file {name}: {e}")))?;
                    log::warning(&format!(
                        "AOF {name} loaded anyway because aof-load-truncated is enabled"
                    ));
                    self.session.multi = None;
                    return Ok(());
                }
                Err(ReadError::Format { offset, reason }) => {
                    return Err(bad(format!(
                        "Bad file format reading the append only file {name} at offset {offset} ({reason}): \
                         make a backup of your AOF file, then use ./redis-check-aof --fix <filename.manifest>"
                    )));
                }
            }
            let cmd_name = argv.first().copied().unwrap_or_default();
            if shared.commands.lookup(cmd_name).is_none() {
                return Err(bad(format!(
                    "Unknown command '{}' reading the append only file {name}",
                    String::from_utf8_lossy(cmd_name)
                )));
            }
            args = Args::from_slices(&argv);
            // At time 0: nothing has expired while loading, as in Redis (a PEXPIREAT in
            // the past sets the deadline; later commands still find the key), and the
            // keys whose deadlines passed go once the server runs. The AOF holds only
            // absolute deadlines, so no command here reads the clock for another reason.
            carmine_commands::execute_at(
                shared,
                &mut self.session,
                &self.stats,
                &args,
                &mut self.reply,
                0,
            );
            self.reply.out.clear();
            n += 1;
            if n.is_multiple_of(1024) {
                shared.persist.loading_loaded_bytes.store(
                    self.loaded_before + reader.offset() as u64,
                    Ordering::Relaxed,
                );
            }
        }
        self.loaded_before += data.len() as u64;
        Ok(())
    }
}

pub fn commands() -> Vec<CommandSpec> {
    vec![cmd(
        "bgrewriteaof",
        1,
        // Not EXCLUSIVE: the incr file is prepared (fsyncs) while the loops run, and a
        // thread of its own stops the world only for the switch.
        ADMIN | NOSCRIPT,
        KeySpec::None,
        bgrewriteaof,
        "server",
        "@admin @slow @dangerous",
        "Asynchronously rewrites the append-only file to disk.",
    )]
}

fn bgrewriteaof(ctx: &mut Ctx<'_, '_>) {
    let Some(stream) = crate::replication::ReplicationStream::of(ctx.shared) else {
        return ctx.error("ERR the append-only file is not available on this server");
    };
    let (Some(aof), Some(owned)) = (stream.append_only_arc().cloned(), stream.owner()) else {
        return ctx.error("ERR the append-only file is not available on this server");
    };
    if aof.rewriting.load(Ordering::Acquire) || aof.starting.load(Ordering::Acquire) {
        return ctx.error("ERR Background append only file rewriting already in progress");
    }
    if ctx
        .shared
        .persist
        .bgsave_in_progress
        .load(Ordering::Acquire)
    {
        aof.rewrite_scheduled.store(true, Ordering::Release);
        aof.consecutive_failures.store(0, Ordering::Relaxed);
        return ctx
            .reply
            .simple("Background append only file rewriting scheduled");
    }
    if aof
        .starting
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return ctx.error("ERR Background append only file rewriting already in progress");
    }
    let prepared = match aof.prepare_rewrite(ctx.shared) {
        Ok(p) => p,
        Err(_) => {
            aof.starting.store(false, Ordering::Release);
            return ctx.error(
                "ERR Can't execute an AOF background rewriting. Please check the server logs for more information.",
            );
        }
    };
    // Shown as scheduled until the switch shows it in progress: never neither.
    aof.rewrite_scheduled.store(true, Ordering::Release);
    let starter = aof.clone();
    let spawned = std::thread::Builder::new()
        .name("carmine-aofrw-start".into())
        .spawn(move || {
            let begun = {
                let _world = owned.barrier.exclusive();
                starter.begin_rewrite(&owned, prepared)
            };
            if let Err(e) = begun {
                starter.rewrite_scheduled.store(false, Ordering::Release);
                log::warning(&format!(
                    "Can't rewrite append only file in background: {e}"
                ));
            }
            starter.starting.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        aof.rewrite_scheduled.store(false, Ordering::Release);
        aof.starting.store(false, Ordering::Release);
        return ctx.error(
            "ERR Can't execute an AOF background rewriting. Please check the server logs for more information.",
        );
    }
    ctx.reply
        .simple("Background append only file rewriting started");
}
