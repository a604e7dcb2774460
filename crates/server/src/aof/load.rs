//! Loading the AOF: at start-up (upgrading an old single file, creating the first base
//! and incr file) and for DEBUG LOADAOF. Commands replay through the dispatcher as a
//! session of their own kind.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use carmine_aof::{CommandReader, Manifest, ReadError};
use carmine_commands::{Session, Shared};
use carmine_resp::{Args, ReplyBuf};

use super::rewrite::write_base;
use super::{aof_dir, file_name, unix_now, work_dir, AppendOnly, ON};
use crate::log;

impl AppendOnly {
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
            create_aof_dir(&dir)?;
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

    pub(super) fn read_manifest(shared: &Shared) -> io::Result<Manifest> {
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
    pub(super) fn load_files(
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
    pub(super) fn open_on_start(
        &self,
        shared: &Arc<Shared>,
        mut manifest: Manifest,
    ) -> io::Result<()> {
        let dir = aof_dir(shared);
        let name = file_name(shared);
        create_aof_dir(&dir)?;
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
        let mut session = crate::internal_session(shared);
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
            struct Quiet;
            impl carmine_rdb::LoadObserver for Quiet {}
            let mut with_functions = crate::persistence::WithFunctions {
                shared,
                inner: &mut Quiet,
            };
            let stats = carmine_rdb::load_observed(&shared.keyspace, &data, &mut with_functions)
                .map_err(|e| {
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
            // absolute deadlines; stream commands, which stamp deliveries and consumers,
            // read the wall clock when they see time 0 (`stream::clock_ms`).
            carmine_commands::execute_at(
                shared,
                &mut self.session,
                &self.stats,
                &args,
                &mut self.reply,
                0,
            );
            if self.reply.out.first() == Some(&b'-') {
                crate::propagated_error::report(
                    shared,
                    crate::propagated_error::Source::AppendOnlyFile,
                    &args,
                    &self.reply.out,
                );
            }
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

/// `appenddirname`, created if missing, with Redis' message when it cannot be.
fn create_aof_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "Can't open or create append-only dir {}: {e}",
                dir.display()
            ),
        )
    })
}
