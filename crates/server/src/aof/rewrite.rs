//! Rewriting the AOF without a fork: the new incr file is prepared while the loops run,
//! the switch and the snapshot's start happen with the world stopped, and the snapshot
//! walk writes the new base (an RDB, or commands) that the manifest then names.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use carmine_aof::Manifest;
use carmine_commands::propagate::Argv;
use carmine_commands::table::{cmd, flags::*, CommandSpec, KeySpec};
use carmine_commands::{Ctx, Shared};

use super::{
    aof_dir, file_name, unix_now, work_dir, AppendOnly, FSYNC_ALWAYS, OFF, ON, WAIT_REWRITE,
};
use crate::log;

impl AppendOnly {
    /// A rewrite begun where the world is already stopped (BGREWRITEAOF, a replica's
    /// restart after a sync).
    pub fn start_rewrite(&self, shared: &Shared) -> Result<(), String> {
        let prepared = self.prepare_rewrite(shared)?;
        self.begin_rewrite(shared, prepared)
    }

    /// The slow half of starting a rewrite, done while the loops run where the caller
    /// can: the incr file new writes will go to is created and named in the manifest on
    /// disk (fsyncs). Until the switch it stays empty; a crash meanwhile loads it empty.
    pub(super) fn prepare_rewrite(&self, shared: &Shared) -> Result<PreparedRewrite, String> {
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
    pub(super) fn begin_rewrite(
        &self,
        shared: &Shared,
        prepared: PreparedRewrite,
    ) -> Result<(), String> {
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
                if let Some(aof) = AppendOnly::of(owned) {
                    *aof.rewrite_cancel.lock() = Some(snap.cancel_handle());
                    // Switched off before this thread could be told (`stop` bumps the
                    // generation before it looks for the handle): the walk stops now.
                    if aof.generation.load(Ordering::Acquire) != generation {
                        log::notice(
                            "Killing running AOF rewrite child: its snapshot walk stops (no fork)",
                        );
                        snap.cancel_handle().store(true, Ordering::Release);
                    }
                }
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

    pub(super) fn rewrite_done(
        &self,
        shared: &Shared,
        written: io::Result<()>,
        tmp: &Path,
        generation: u64,
    ) {
        let started = self.rewrite_started.lock().take();
        *self.rewrite_cancel.lock() = None;
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
    pub(super) fn install_rewrite(&self, shared: &Shared, tmp: &Path) -> io::Result<()> {
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
}

/// The base an empty start writes at once (the world is stopped by the caller).
pub(super) fn write_base(shared: &Shared, path: &Path) -> io::Result<()> {
    let mut snap = carmine_rdb::Snapshot::begin(&shared.keyspace, Default::default(), true)
        .ok_or_else(|| io::Error::other("a snapshot is already running"))?;
    snap.set_functions(carmine_commands::functions::library_codes(shared));
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
        let e = match item {
            carmine_rdb::Item::Entry(e) => e,
            // Libraries come first, as Redis' rewrite writes them.
            carmine_rdb::Item::Function(code) => {
                emit(vec![b"FUNCTION".to_vec(), b"LOAD".to_vec(), code], out)?;
                continue;
            }
            _ => continue,
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
            carmine_rdb::Value::Stream(s) => {
                stream_commands(&e.key, &s, &mut |argv| emit(argv, out))?;
                Vec::new()
            }
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

/// The commands that rebuild a stream, as Redis' rewriteStreamObject emits them: an
/// XADD per entry (an emptied stream is made by `XADD key MAXLEN 0 0-1 x y`), XSETID
/// with the counters, then per group XGROUP CREATE with its read counter, and per
/// consumer an XCLAIM ... FORCE for each of its pending entries, or XGROUP
/// CREATECONSUMER when it has none.
fn stream_commands(
    key: &[u8],
    s: &carmine_keyspace::StreamValue,
    emit: &mut dyn FnMut(Vec<Vec<u8>>) -> io::Result<()>,
) -> io::Result<()> {
    use carmine_keyspace::StreamId;
    let id = |id: StreamId| id.to_bytes();
    let word = |w: &str| w.as_bytes().to_vec();
    let num = |n: i64| n.to_string().into_bytes();
    if s.is_empty() {
        emit(vec![
            word("XADD"),
            key.to_vec(),
            word("MAXLEN"),
            word("0"),
            word("0-1"),
            word("x"),
            word("y"),
        ])?;
    } else {
        // In slices, so a big stream is never copied whole.
        let mut from = Some(StreamId::MIN);
        while let Some(start) = from {
            let entries = s.range(start, StreamId::MAX, 1024, false);
            for (at, fields) in &entries {
                let mut argv = Vec::with_capacity(3 + fields.len());
                argv.extend([word("XADD"), key.to_vec(), id(*at)]);
                argv.extend(fields.iter().cloned());
                emit(argv)?;
            }
            from = match entries.last() {
                Some((at, _)) if entries.len() == 1024 => at.next(),
                _ => None,
            };
        }
    }
    emit(vec![
        word("XSETID"),
        key.to_vec(),
        id(s.last_id),
        word("ENTRIESADDED"),
        num(s.entries_added as i64),
        word("MAXDELETEDID"),
        id(s.max_deleted_id),
    ])?;
    for (name, g) in &s.groups {
        emit(vec![
            word("XGROUP"),
            word("CREATE"),
            key.to_vec(),
            name.clone(),
            id(g.last_id),
            word("ENTRIESREAD"),
            num(g.entries_read),
        ])?;
        for (consumer, c) in &g.consumers {
            if c.pending.is_empty() {
                emit(vec![
                    word("XGROUP"),
                    word("CREATECONSUMER"),
                    key.to_vec(),
                    name.clone(),
                    consumer.to_vec(),
                ])?;
                continue;
            }
            for pending in &c.pending {
                let Some(p) = g.pel.get(pending) else {
                    continue;
                };
                emit(vec![
                    word("XCLAIM"),
                    key.to_vec(),
                    name.clone(),
                    consumer.to_vec(),
                    word("0"),
                    id(*pending),
                    word("TIME"),
                    num(p.delivery_time as i64),
                    word("RETRYCOUNT"),
                    num(p.delivery_count as i64),
                    word("JUSTID"),
                    word("FORCE"),
                ])?;
            }
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
    let incremental = shared.config.get_bool("aof-rewrite-incremental-fsync");
    crate::persistence::write_snapshot(shared, snap, path, &aux, incremental).map(|_| ())
}

pub fn commands() -> Vec<CommandSpec> {
    vec![cmd(
        "bgrewriteaof",
        1,
        // Not EXCLUSIVE: the incr file is prepared (fsyncs) while the loops run, and a
        // thread of its own stops the world only for the switch.
        ADMIN | NOSCRIPT | NO_ASYNC_LOADING,
        KeySpec::None,
        bgrewriteaof,
        "server",
        "@admin @slow @dangerous",
        "Asynchronously rewrites the append-only file to disk.",
    )]
}

fn bgrewriteaof(ctx: &mut Ctx<'_, '_>) {
    let aof = crate::replication::ReplicationStream::of(ctx.shared)
        .and_then(|s| s.append_only_arc().cloned());
    let Some(aof) = aof else {
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
    match aof.start_in_background(ctx.shared) {
        Ok(()) => ctx.reply.simple("Background append only file rewriting started"),
        Err(e) if e.contains("already in progress") => {
            ctx.error("ERR Background append only file rewriting already in progress")
        }
        Err(_) => ctx.error(
            "ERR Can't execute an AOF background rewriting. Please check the server logs for more information.",
        ),
    }
}

impl AppendOnly {
    /// Starts a rewrite from a command (which cannot stop the world itself): the incr
    /// file is prepared here, while the loops run, and a thread of its own takes the
    /// barrier for the switch. Until it has, INFO shows the rewrite in progress.
    pub(super) fn start_in_background(self: &Arc<Self>, shared: &Shared) -> Result<(), String> {
        let Some(owned) = self.shared.upgrade() else {
            return Err("server is shutting down".into());
        };
        if self
            .starting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err("Background append only file rewriting already in progress".into());
        }
        let prepared = match self.prepare_rewrite(shared) {
            Ok(p) => p,
            Err(e) => {
                self.starting.store(false, Ordering::Release);
                return Err(e);
            }
        };
        let starter = self.clone();
        let spawned = std::thread::Builder::new()
            .name("carmine-aofrw-start".into())
            .spawn(move || {
                // Even a panic in `begin_rewrite` leaves the next rewrite free to start.
                let _over = LowerOnDrop(&starter.starting);
                let begun = {
                    let _world = owned.barrier.exclusive();
                    starter.begin_rewrite(&owned, prepared)
                };
                if let Err(e) = begun {
                    log::warning(&format!(
                        "Can't rewrite append only file in background: {e}"
                    ));
                    if starter.state.load(Ordering::Acquire) == WAIT_REWRITE {
                        starter.rewrite_scheduled.store(true, Ordering::Release);
                    }
                }
            });
        if let Err(e) = spawned {
            self.starting.store(false, Ordering::Release);
            return Err(e.to_string());
        }
        Ok(())
    }
}

/// An incr file made ready for a rewrite (see `prepare_rewrite`).
pub(super) struct PreparedRewrite {
    state: u8,
    generation: u64,
    /// The file, and the manifest naming it (None while switching on: a temp file).
    incr: Option<(Arc<File>, Option<Manifest>)>,
}

/// Lowers a background job's "in progress" flag when dropped, even by a panic's
/// unwinding, so the flag never outlives its thread.
struct LowerOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for LowerOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command-form base rebuilds what the RDB holds: one command per batch of 64
    /// items, a SELECT per database, PEXPIREAT after a key with a deadline.
    #[test]
    fn an_rdb_reads_back_as_the_commands_that_rebuild_it() {
        let ks = carmine_keyspace::Keyspace::new();
        let items: Vec<Vec<u8>> = (0..70).map(|i| i.to_string().into_bytes()).collect();
        let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        ks.db(0).rpush(b"list", &refs).expect("rpush");
        ks.db(0).set(b"str", b"v");
        assert!(ks.db(0).expire(b"str", std::time::Duration::from_secs(100)));
        ks.db(2).zadd(b"z", f64::INFINITY, b"top").expect("zadd");
        ks.db(2).zadd(b"z", -1.5, b"low").expect("zadd");
        ks.db(2).hset(b"h", b"f", b"v").expect("hset");
        ks.db(2).sadd(b"s", &[b"m"]).expect("sadd");
        let snap = carmine_rdb::Snapshot::begin(&ks, Default::default(), true).expect("begin");
        let mut rdb = Vec::new();
        snap.write_to(&ks, &mut rdb, &[]).expect("rdb");
        let mut out = Vec::new();
        rdb_as_commands(&rdb, &mut out).expect("converted");

        let mut reader = carmine_aof::CommandReader::new(&out, 0);
        let mut argv = Vec::new();
        let mut commands: Vec<Vec<String>> = Vec::new();
        while reader.next_command(&mut argv).expect("valid AOF") {
            commands.push(
                argv.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect(),
            );
        }
        let named = |name: &str| commands.iter().filter(|c| c[0] == name).count();
        assert_eq!(named("SELECT"), 2);
        assert_eq!(named("RPUSH"), 2, "70 items in batches of 64");
        let pushed: usize = commands
            .iter()
            .filter(|c| c[0] == "RPUSH")
            .map(|c| c.len() - 2)
            .sum();
        assert_eq!(pushed, 70);
        let expire_at = commands
            .iter()
            .position(|c| c[0] == "PEXPIREAT")
            .expect("a deadline");
        assert_eq!(commands[expire_at - 1], ["SET", "str", "v"]);
        let zadd = commands.iter().find(|c| c[0] == "ZADD").expect("zadd");
        assert!(
            zadd.contains(&"inf".to_string()) && zadd.contains(&"-1.5".to_string()),
            "{zadd:?}"
        );
        assert_eq!(named("HMSET"), 1);
        assert_eq!(named("SADD"), 1);
    }

    fn commands_of(entries: &[(&[u8], carmine_rdb::Value)]) -> Vec<Vec<String>> {
        use carmine_rdb::write;
        let mut rdb = Vec::new();
        write::put_header(&mut rdb);
        write::put_select_db(&mut rdb, 0, entries.len() as u64, 0);
        for (k, v) in entries {
            write::put_entry(&mut rdb, k, v, 0, Default::default());
        }
        write::put_eof(&mut rdb, 0, false);
        let mut out = Vec::new();
        rdb_as_commands(&rdb, &mut out).expect("converted");
        let mut reader = carmine_aof::CommandReader::new(&out, 0);
        let mut argv = Vec::new();
        let mut commands = Vec::new();
        while reader.next_command(&mut argv).expect("valid AOF") {
            commands.push(
                argv.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect(),
            );
        }
        commands
    }

    /// Streams come back as Redis' rewriteStreamObject writes them.
    #[test]
    fn streams_read_back_as_redis_rewrites_them() {
        use carmine_keyspace::stream::{ConsumerGroup, NodeLimits, ENTRIES_READ_UNKNOWN};
        use carmine_keyspace::{StreamId, StreamValue};
        let limits = NodeLimits::default();
        let mut s = StreamValue::new();
        s.append(StreamId::new(1, 1), &[b"a", b"1", b"b", b"2"], limits);
        s.append(StreamId::new(1, 2), &[b"c", b"3"], limits);
        s.append(StreamId::new(2, 0), &[b"a", b"4", b"b", b"5"], limits);
        assert!(s.delete(StreamId::new(1, 2)));
        let mut g = ConsumerGroup::new(StreamId::new(2, 0), 3);
        let (bob, _) = g.consumer(b"bob", 10);
        g.consumer(b"amy", 11);
        g.deliver(StreamId::new(2, 0), &bob, 1_700_000_000_123);
        g.deliver(StreamId::new(1, 1), &bob, 1_700_000_000_456);
        if let Some(p) = g.pel.get_mut(&StreamId::new(1, 1)) {
            p.delivery_count = 4;
        }
        s.groups.insert(b"workers".to_vec(), g);
        s.groups.insert(
            b"audit".to_vec(),
            ConsumerGroup::new(StreamId::MIN, ENTRIES_READ_UNKNOWN),
        );
        let mut emptied = StreamValue::new();
        emptied.append(StreamId::new(7, 7), &[b"f", b"v"], limits);
        assert!(emptied.delete(StreamId::new(7, 7)));
        let commands = commands_of(&[
            (b"s", carmine_rdb::Value::Stream(Box::new(s))),
            (b"e", carmine_rdb::Value::Stream(Box::new(emptied))),
        ]);
        let want: Vec<Vec<&str>> = vec![
            vec!["SELECT", "0"],
            vec!["XADD", "s", "1-1", "a", "1", "b", "2"],
            vec!["XADD", "s", "2-0", "a", "4", "b", "5"],
            vec![
                "XSETID",
                "s",
                "2-0",
                "ENTRIESADDED",
                "3",
                "MAXDELETEDID",
                "1-2",
            ],
            vec!["XGROUP", "CREATE", "s", "audit", "0-0", "ENTRIESREAD", "-1"],
            vec![
                "XGROUP",
                "CREATE",
                "s",
                "workers",
                "2-0",
                "ENTRIESREAD",
                "3",
            ],
            vec!["XGROUP", "CREATECONSUMER", "s", "workers", "amy"],
            vec![
                "XCLAIM",
                "s",
                "workers",
                "bob",
                "0",
                "1-1",
                "TIME",
                "1700000000456",
                "RETRYCOUNT",
                "4",
                "JUSTID",
                "FORCE",
            ],
            vec![
                "XCLAIM",
                "s",
                "workers",
                "bob",
                "0",
                "2-0",
                "TIME",
                "1700000000123",
                "RETRYCOUNT",
                "1",
                "JUSTID",
                "FORCE",
            ],
            vec!["XADD", "e", "MAXLEN", "0", "0-1", "x", "y"],
            vec![
                "XSETID",
                "e",
                "7-7",
                "ENTRIESADDED",
                "1",
                "MAXDELETEDID",
                "7-7",
            ],
        ];
        assert_eq!(commands, want);
    }
}
