//! Persistence commands: SAVE, BGSAVE, LASTSAVE, DUMP, RESTORE. The RDB format lives in
//! carmine-rdb, which this crate may not depend on; the server installs a
//! [`Persistence`] that does the encoding and the files.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use carmine_keyspace::{notify, Entry, Keyspace, Value};

use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::{Ctx, Shared};

/// What the server provides: files and the RDB codec.
pub trait Persistence: Send + Sync {
    /// Writes a snapshot now (SAVE, SHUTDOWN). Called with the world stopped.
    fn save(&self, shared: &Shared) -> Result<(), String>;
    /// Begins a background snapshot (BGSAVE). Called with the world stopped, so the
    /// snapshot is consistent across tables; the walk runs on its own thread.
    fn bgsave(&self, shared: &Shared) -> Result<(), String>;
    /// DEBUG RELOAD: save, empty every database, load the file back (each step as
    /// `options` says). Called with the world stopped.
    fn reload(&self, shared: &Shared, options: ReloadOptions) -> Result<(), String>;
    /// A DUMP payload.
    fn dump(&self, value: &Value) -> Vec<u8>;
    /// Decodes a RESTORE payload; Ok(None) for an empty collection.
    fn restore(&self, keyspace: &Keyspace, payload: &[u8]) -> Result<Option<Value>, RestoreError>;
    /// FUNCTION DUMP's payload of these libraries' code.
    fn dump_functions(&self, libraries: &[Vec<u8>]) -> Vec<u8>;
    /// The libraries' code in a FUNCTION RESTORE payload, or Redis' error reply.
    fn restore_functions(&self, payload: &[u8]) -> Result<Vec<Vec<u8>>, &'static str>;
}

/// DEBUG RELOAD's options: NOSAVE loads the file as it is, NOFLUSH keeps the dataset
/// and loads into it, MERGE lets what the file holds replace what is there (without it,
/// a function library already loaded fails the load, as in Redis).
#[derive(Clone, Copy, Debug)]
pub struct ReloadOptions {
    pub save: bool,
    pub flush: bool,
    pub merge: bool,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            save: true,
            flush: true,
            merge: false,
        }
    }
}

/// The append-only file, installed by the server: what the commands crate needs of it.
pub trait AppendOnly: Send + Sync {
    /// INFO persistence's `aof_*` lines.
    fn info(&self, out: &mut String);
    /// Why writes are refused (`MISCONF Errors writing to the AOF file: ...`), if they are.
    fn write_error(&self) -> Option<String>;
    /// True while a rewrite's snapshot runs (it is no RDB save to INFO).
    fn rewriting(&self) -> bool;
    /// DEBUG LOADAOF: the AOF written out, the dataset emptied and loaded back from
    /// it. Called with the world stopped.
    fn reload(&self, shared: &Shared) -> Result<(), String>;
    /// DEBUG AOF-FLUSH-SLEEP: each write of the file first sleeps this long.
    fn set_flush_sleep(&self, micros: u64);
    /// CONFIG SET changed `appendonly`: switch now, as Redis does (a rewrite starts).
    /// Errors are Redis' reasons for refusing the change.
    fn appendonly_changed(&self, shared: &Shared) -> Result<(), String>;
}

/// Why a RESTORE payload was refused: its envelope (length, version, checksum), or the
/// value inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreError {
    Envelope,
    BadData,
}

/// Reads a running save's (copied bytes, keys written, keys in all).
pub type SaveProgress = Arc<dyn Fn() -> (u64, u64, u64) + Send + Sync>;

/// A BGSAVE whose walk runs: registered and cleared as one.
pub struct RunningSave {
    /// Its snapshot's cancel flag: FLUSHALL stops the walk, as Redis kills its child.
    pub cancel: Arc<AtomicBool>,
    /// Its progress for INFO: (bytes writers copied for it, keys written, keys at its
    /// start).
    pub progress: SaveProgress,
}

/// INFO persistence counters.
#[derive(Default)]
pub struct PersistStats {
    pub last_save_unix: AtomicU64,
    pub bgsave_in_progress: AtomicBool,
    pub last_bgsave_failed: AtomicBool,
    pub last_bgsave_secs: AtomicI64,
    pub current_bgsave_started_ms: AtomicU64,
    /// The write counter as of the last successful snapshot's start.
    pub dirty_at_last_save: AtomicU64,
    pub saves: AtomicU64,
    /// A BGSAVE SCHEDULE waiting for the running one to end.
    pub bgsave_scheduled: AtomicBool,
    /// The running BGSAVE, registered by the server while its walk runs.
    pub running_bgsave: parking_lot::Mutex<Option<RunningSave>>,
    /// Bytes writers copied for the last BGSAVE (INFO `rdb_last_cow_size`).
    pub last_cow_bytes: AtomicU64,
    /// FLUSHALLs so far: a BGSAVE that began before one and registers its flag only
    /// after it ran sees the count moved and stops.
    pub flushalls: AtomicU64,
    /// A dump is being loaded: commands without the `loading` flag get -LOADING.
    pub loading: AtomicBool,
    /// A replica receives its master's dataset while it serves its old one
    /// (`repl-diskless-load swapdb`): INFO's async_loading.
    pub async_loading: AtomicBool,
    pub loading_start_unix: AtomicU64,
    pub loading_total_bytes: AtomicU64,
    pub loading_loaded_bytes: AtomicU64,
    pub loading_loaded_keys: AtomicU64,
    /// The last load's keys (INFO `rdb_last_load_keys_loaded` / `_expired`).
    pub last_load_keys_loaded: AtomicU64,
    pub last_load_keys_expired: AtomicU64,
    /// Bytes of writers' copies past which event loops pause for a running BGSAVE's walk
    /// (0: none running).
    pub snapshot_backlog_limit: AtomicUsize,
    /// Whether loops are pausing for the walk now (until the copies are down to half).
    pub snapshot_throttled: AtomicBool,
    /// The running snapshot walk, watched so that it cannot starve (see the server's
    /// `persistence::unstarve_walk`).
    pub walk_watch: parking_lot::Mutex<Option<WalkWatch>>,
}

/// A snapshot walk's thread and progress, as its watchdog sees them.
pub struct WalkWatch {
    /// Tables walked so far.
    pub progress: std::sync::Arc<AtomicU64>,
    /// The walking thread's kernel id.
    pub tid: i32,
    /// `progress` when it last moved, and since when it has not.
    pub last: u64,
    pub since: std::time::Instant,
    /// Put back at normal priority already.
    pub promoted: bool,
}

impl PersistStats {
    pub fn changes_since_save(&self, shared: &Shared) -> u64 {
        shared
            .total_dirty()
            .saturating_sub(self.dirty_at_last_save.load(Ordering::Relaxed))
    }
}

pub fn commands() -> Vec<CommandSpec> {
    let g = "server";
    vec![
        cmd(
            "save",
            1,
            ADMIN | NOSCRIPT | EXCLUSIVE | NO_MULTI | NO_ASYNC_LOADING,
            KeySpec::None,
            save,
            g,
            "@admin @slow @dangerous",
            "Synchronously saves the database(s) to disk.",
        ),
        cmd(
            "bgsave",
            -1,
            ADMIN | NOSCRIPT | EXCLUSIVE | NO_ASYNC_LOADING,
            KeySpec::None,
            bgsave,
            g,
            "@admin @slow @dangerous",
            "Asynchronously saves the database(s) to disk.",
        ),
        cmd(
            "lastsave",
            1,
            FAST | STALE | LOADING,
            KeySpec::None,
            lastsave,
            g,
            "@admin @fast @dangerous",
            "Returns the Unix timestamp of the last successful save to disk.",
        ),
        cmd(
            "dump",
            2,
            READONLY,
            keys(1, 1, 1),
            dump,
            "generic",
            "@keyspace @read @slow",
            "Returns a serialized representation of the value stored at a key.",
        ),
        cmd(
            "restore",
            -4,
            WRITE | DENYOOM,
            keys(1, 1, 1),
            restore,
            "generic",
            "@keyspace @write @slow @dangerous",
            "Creates a key from the serialized representation of a value.",
        ),
        // What MIGRATE sends in cluster mode: RESTORE that the target accepts for a
        // slot it is importing without an ASKING first.
        cmd(
            "restore-asking",
            -4,
            WRITE | DENYOOM,
            keys(1, 1, 1),
            restore,
            "server",
            "@keyspace @write @slow @dangerous",
            "An internal command for migrating keys in a cluster.",
        ),
    ]
}

fn persistence(ctx: &mut Ctx<'_, '_>) -> Option<Arc<dyn Persistence>> {
    let p = ctx.shared.persistence.get().cloned();
    if p.is_none() {
        ctx.error("ERR persistence is not available in this embedding");
    }
    p
}

fn save(ctx: &mut Ctx<'_, '_>) {
    let Some(p) = persistence(ctx) else { return };
    // Only an RDB save in progress refuses it, as in Redis: beside an AOF rewrite, SAVE
    // runs (with the world stopped, a walk of its own).
    if ctx
        .shared
        .persist
        .bgsave_in_progress
        .load(Ordering::Acquire)
        && !ctx.shared.aof_rewriting()
    {
        return ctx.error("ERR Background save already in progress");
    }
    match p.save(ctx.shared) {
        Ok(()) => ctx.reply.ok(),
        Err(e) => ctx.error(&format!("ERR {e}")),
    }
}

fn bgsave(ctx: &mut Ctx<'_, '_>) {
    let schedule = match ctx.args.len() {
        1 => false,
        2 if ctx.is(1, "SCHEDULE") => true,
        _ => return ctx.syntax_error(),
    };
    let Some(p) = persistence(ctx) else { return };
    if ctx
        .shared
        .persist
        .bgsave_in_progress
        .load(Ordering::Acquire)
    {
        if schedule {
            ctx.shared
                .persist
                .bgsave_scheduled
                .store(true, Ordering::Release);
            return ctx.reply.simple("Background saving scheduled");
        }
        return ctx.error("ERR Background save already in progress");
    }
    match p.bgsave(ctx.shared) {
        Ok(()) => ctx.reply.simple("Background saving started"),
        Err(e) => ctx.error(&format!("ERR {e}")),
    }
}

fn lastsave(ctx: &mut Ctx<'_, '_>) {
    let t = ctx.shared.persist.last_save_unix.load(Ordering::Relaxed);
    ctx.reply.int(t as i64);
}

fn dump(ctx: &mut Ctx<'_, '_>) {
    let Some(p) = persistence(ctx) else { return };
    let key = ctx.arg(1);
    match ctx.l.get(key) {
        None => ctx.reply.null(),
        Some(e) => {
            let payload = p.dump(&e.value);
            ctx.reply.bulk(&payload);
        }
    }
}

fn restore(ctx: &mut Ctx<'_, '_>) {
    let Some(p) = persistence(ctx) else { return };
    let (mut replace, mut absttl) = (false, false);
    let (mut idle, mut freq): (Option<i64>, Option<i64>) = (None, None);
    let mut i = 4;
    while i < ctx.args.len() {
        let more = i + 1 < ctx.args.len();
        if ctx.is(i, "REPLACE") {
            replace = true;
        } else if ctx.is(i, "ABSTTL") {
            absttl = true;
        } else if ctx.is(i, "IDLETIME") && more && freq.is_none() {
            let Some(v) = ctx.int_arg(i + 1) else { return };
            if v < 0 {
                return ctx.error("ERR Invalid IDLETIME value, must be >= 0");
            }
            idle = Some(v);
            i += 1;
        } else if ctx.is(i, "FREQ") && more && idle.is_none() {
            let Some(v) = ctx.int_arg(i + 1) else { return };
            if !(0..=255).contains(&v) {
                return ctx.error("ERR Invalid FREQ value, must be >= 0 and <= 255");
            }
            freq = Some(v);
            i += 1;
        } else {
            return ctx.syntax_error();
        }
        i += 1;
    }
    let Some(ttl) = ctx.int_arg(2) else { return };
    if ttl < 0 {
        return ctx.error("ERR Invalid TTL value, must be >= 0");
    }
    let key = ctx.arg(1);
    if !replace && ctx.l.exists(key) {
        return ctx.error("BUSYKEY Target key name already exists.");
    }
    let value = match p.restore(&ctx.shared.keyspace, ctx.arg(3)) {
        Ok(v) => v,
        Err(RestoreError::Envelope) => {
            return ctx.error("ERR DUMP payload version or checksum are wrong")
        }
        Err(RestoreError::BadData) => return ctx.error("ERR Bad data format"),
    };
    let now = ctx.l.now();
    let deadline = match (ttl, absttl) {
        (0, _) => 0,
        (t, true) => t as u64,
        (t, false) => now.saturating_add(t as u64),
    };
    // Checked before anything is removed: a bad payload never costs the old value.
    let Some(value) = value else {
        return ctx.error("ERR Bad data format");
    };
    let existed = ctx.l.remove(key).is_some();
    if deadline != 0 && deadline <= now {
        // Already expired: the key ends up deleted, as in Redis.
        if existed {
            ctx.notify(notify::GENERIC, "del", key);
        }
        return ctx.reply.ok();
    }
    ctx.l.insert(key, Entry::with_expiry(value, deadline));
    if ttl != 0 && !absttl && ctx.l.recording_effects() {
        // A relative TTL goes on the stream as the absolute deadline, with ABSTTL.
        let mut argv: Vec<Vec<u8>> = (0..ctx.args.len()).map(|i| ctx.arg(i).to_vec()).collect();
        argv[2] = deadline.to_string().into_bytes();
        argv.push(b"ABSTTL".to_vec());
        ctx.l.propagate_instead(argv);
    }
    if let Some(e) = ctx.l.get_mut(key) {
        let policy_lfu = ctx.shared.keyspace.eviction().policy().is_lfu();
        if let (Some(f), true) = (freq, policy_lfu) {
            e.lru = carmine_keyspace::evict::lfu_restore(f as u8, now);
        } else if let (Some(secs), false) = (idle, policy_lfu) {
            e.lru = ((now / 1000) as u32).saturating_sub(secs.min(u32::MAX as i64) as u32);
        }
    }
    ctx.notify(notify::GENERIC, "restore", key);
    ctx.reply.ok();
}

/// FLUSHALL's part here: a running BGSAVE would write a dataset that no longer is, so its
/// walk stops (Redis kills its RDB child); the failed save leaves the change counter as
/// it was.
pub fn abort_bgsave_for_flushall(shared: &Shared) {
    let p = &shared.persist;
    p.flushalls.fetch_add(1, Ordering::AcqRel);
    if let Some(running) = p.running_bgsave.lock().as_ref() {
        running.cancel.store(true, Ordering::Release);
    }
}
