//! Server commands: INFO, DBSIZE, FLUSHDB, FLUSHALL, SWAPDB, TIME, COMMAND, CONFIG, DEBUG,
//! MEMORY, SHUTDOWN.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use carmine_keyspace::glob_match;

use crate::connection::help_reply;
use crate::keys::second_arg_key;
use crate::state::{ShutdownMode, ThreadStats};
use crate::table::{cmd, flags::*, CommandSpec, KeySpec, FLAG_NAMES};
use crate::Ctx;

/// The Redis version Carmine is compatible with; clients read it to pick features.
pub const REDIS_VERSION: &str = "7.0.15";

pub fn commands() -> Vec<CommandSpec> {
    let g = "server";
    vec![
        cmd(
            "info",
            -1,
            LOADING | STALE | WALKS,
            KeySpec::None,
            info,
            g,
            "@slow @dangerous",
            "Returns information and statistics about the server.",
        ),
        cmd(
            "dbsize",
            1,
            READONLY | FAST | WALKS,
            KeySpec::None,
            dbsize,
            "server",
            "@keyspace @read @fast",
            "Returns the number of keys in the database.",
        ),
        cmd(
            "flushdb",
            -1,
            WRITE | EXCLUSIVE,
            KeySpec::None,
            flushdb,
            g,
            "@keyspace @write @slow @dangerous",
            "Remove all keys from the current database.",
        ),
        cmd(
            "flushall",
            -1,
            WRITE | EXCLUSIVE,
            KeySpec::None,
            flushall,
            g,
            "@keyspace @write @slow @dangerous",
            "Removes all keys from all databases.",
        ),
        cmd(
            "swapdb",
            3,
            WRITE | FAST | EXCLUSIVE,
            KeySpec::None,
            swapdb,
            g,
            "@keyspace @write @fast @dangerous",
            "Swaps two Redis databases.",
        ),
        cmd(
            "time",
            1,
            LOADING | STALE | FAST,
            KeySpec::None,
            time,
            g,
            "@fast",
            "Returns the server time.",
        ),
        CommandSpec {
            subcommands: &[
                "count",
                "docs",
                "getkeys",
                "getkeysandflags",
                "info",
                "list",
                "help",
            ],
            ..cmd(
                "command",
                -1,
                LOADING | STALE,
                KeySpec::None,
                command,
                g,
                "@slow @connection",
                "Returns detailed information about all commands.",
            )
        },
        CommandSpec {
            subcommands: &["get", "set", "resetstat", "rewrite", "help"],
            ..cmd(
                "config",
                -2,
                ADMIN | NOSCRIPT | LOADING | STALE,
                KeySpec::None,
                config,
                g,
                "@admin @slow @dangerous",
                "A container for server configuration commands.",
            )
        },
        // Not a container in Redis either: its first argument is no subcommand (ACL
        // rules such as `+debug|digest` allow a first argument; COMMAND INFO and INFO
        // commandstats show plain `debug`).
        CommandSpec {
            ..cmd(
                "debug",
                -2,
                // The world stops, as Redis' single thread does: DEBUG SLEEP pauses the
                // whole server and DEBUG RELOAD sees no concurrent write.
                ADMIN | NOSCRIPT | LOADING | STALE | EXCLUSIVE,
                KeySpec::Custom(debug_keys),
                debug,
                g,
                "@admin @slow @dangerous",
                "A container for debugging commands.",
            )
        },
        CommandSpec {
            subcommands: &["doctor", "help", "malloc-stats", "purge", "stats", "usage"],
            ..cmd(
                "memory",
                -2,
                READONLY,
                KeySpec::Custom(second_arg_key),
                memory,
                g,
                "@read @slow",
                "A container for memory diagnostics commands.",
            )
        },
        cmd(
            "shutdown",
            -1,
            ADMIN | NOSCRIPT | LOADING | STALE | NO_MULTI,
            KeySpec::None,
            shutdown,
            g,
            "@admin @slow @dangerous",
            "Synchronously saves the database(s) to disk and shuts down the Redis server.",
        ),
    ]
}

fn debug_keys(args: &carmine_resp::Args, out: &mut Vec<usize>) {
    if args.len() == 3
        && args.get(1).is_some_and(|a| {
            a.eq_ignore_ascii_case(b"object") || a.eq_ignore_ascii_case(b"listpack")
        })
    {
        out.push(2);
    }
}

fn dbsize(ctx: &mut Ctx<'_, '_>) {
    let n = ctx.shared.keyspace.dbsize(ctx.session.db);
    ctx.reply.int(n as i64);
}

/// FLUSHDB / FLUSHALL accept ASYNC or SYNC; both free memory before replying here.
fn flush_mode_ok(ctx: &mut Ctx<'_, '_>) -> bool {
    match ctx.args.len() {
        1 => true,
        2 if ctx.is(1, "ASYNC") || ctx.is(1, "SYNC") => true,
        _ => {
            ctx.syntax_error();
            false
        }
    }
}

fn flushdb(ctx: &mut Ctx<'_, '_>) {
    if flush_mode_ok(ctx) {
        let n = ctx.shared.keyspace.flush_db(ctx.session.db);
        ctx.l.signal_modified(ctx.session.db, b"");
        let _ = n;
        ctx.reply.ok();
    }
}

fn flushall(ctx: &mut Ctx<'_, '_>) {
    if flush_mode_ok(ctx) {
        crate::persistence::abort_bgsave_for_flushall(ctx.shared);
        for db in 0..ctx.shared.keyspace.databases() {
            ctx.shared.keyspace.flush_db(db);
        }
        ctx.l.signal_modified(0, b"");
        ctx.reply.ok();
    }
}

fn swapdb(ctx: &mut Ctx<'_, '_>) {
    let parse = |b: &[u8]| carmine_resp::parse_i64(b);
    let (Some(a), Some(b)) = (parse(ctx.arg(1)), parse(ctx.arg(2))) else {
        return ctx.error("ERR invalid first DB index");
    };
    let n = ctx.shared.keyspace.databases() as i64;
    if a < 0 || a >= n || b < 0 || b >= n {
        return ctx.error("ERR DB index is out of range");
    }
    ctx.shared.keyspace.swap_db(a as usize, b as usize);
    ctx.l.signal_modified(a as usize, b"");
    // A client blocked on a key of either database may find it there now.
    ctx.shared.blocking.signal_db(a as usize);
    ctx.shared.blocking.signal_db(b as usize);
    ctx.reply.ok();
}

fn time(ctx: &mut Ctx<'_, '_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ctx.reply.array(2);
    ctx.reply.bulk(now.as_secs().to_string().as_bytes());
    ctx.reply.bulk(now.subsec_micros().to_string().as_bytes());
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b < 1024.0 {
        format!("{bytes}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2}G", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// Resident set size from /proc (Linux); 0 elsewhere.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// (user, system) CPU seconds of this process, from /proc/self/stat.
fn cpu_seconds() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (ticks(11), ticks(12))
}

/// One command's (or subcommand's) counters, every thread's added together.
pub struct CommandTotals {
    pub usec: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Calls and their durations.
    pub summed: crate::latency::Summed,
}

/// Every command's counters by name (`parent|sub` for a container's subcommands, which
/// are counted on their own), in command-table order.
pub fn command_stats(sh: &crate::Shared) -> Vec<(String, CommandTotals)> {
    let threads = sh.threads.lock().clone();
    let add = |t: &mut CommandTotals, c: &crate::state::CmdStat| {
        t.usec += c.usec.load(Ordering::Relaxed);
        t.rejected += c.rejected.load(Ordering::Relaxed);
        t.failed += c.failed.load(Ordering::Relaxed);
        t.summed.add(c);
    };
    let fresh = || CommandTotals {
        usec: 0,
        rejected: 0,
        failed: 0,
        summed: crate::latency::Summed::new(),
    };
    let mut out = Vec::new();
    for (i, spec) in sh.commands.all().iter().enumerate() {
        let mut total = fresh();
        for t in &threads {
            if let Some(c) = t.commands.get(i) {
                add(&mut total, c);
            }
        }
        out.push((spec.name.to_string(), total));
        let mut subs: BTreeMap<String, CommandTotals> = BTreeMap::new();
        for t in &threads {
            for ((idx, sub), c) in t.subcommands.lock().iter() {
                if *idx == i {
                    add(
                        subs.entry(format!("{}|{sub}", spec.name))
                            .or_insert_with(fresh),
                        c,
                    );
                }
            }
        }
        out.extend(subs);
    }
    out
}

/// INFO's text for these sections (lowercase; empty: the default ones).
pub fn info_text(ctx: &Ctx<'_, '_>, sections: &[String]) -> String {
    let all = sections.iter().any(|s| s == "all" || s == "everything");
    let default = sections.is_empty() || sections.iter().any(|s| s == "default");
    let want = |name: &str| {
        all || sections.iter().any(|s| s == name)
            || (default && name != "commandstats" && name != "latencystats")
    };
    let sh = ctx.shared;
    let mut out = String::new();
    let uptime = sh.facts.started.elapsed().as_secs();
    if want("server") {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\ncarmine_version:{}\r\nredis_mode:{}\r\nos:{} {}\r\narch_bits:{}\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nprocess_supervised:no\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nhz:{}\r\nconfigured_hz:{}\r\nlru_clock:{}\r\nexecutable:{}\r\nconfig_file:{}\r\nio_threads_active:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            if sh.config.sentinel_mode.load(Ordering::Relaxed) {
                "sentinel"
            } else if sh.cluster_mode() {
                "cluster"
            } else {
                "standalone"
            },
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS,
            std::process::id(),
            sh.facts.run_id,
            sh.facts.tcp_port.load(Ordering::Relaxed),
            now_us,
            uptime,
            uptime / 86400,
            sh.config.tunables.hz.load(Ordering::Relaxed),
            sh.config.tunables.hz.load(Ordering::Relaxed),
            sh.keyspace.lru_clock(),
            sh.facts.executable,
            sh.config.file.read().clone().unwrap_or_default(),
            u8::from(sh.io_threads() > 1),
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\nblocked_clients:{}\r\ntracking_clients:{}\r\nclients_in_timeout_table:{}\r\n\r\n",
            sh.clients.len(),
            sh.config.tunables.maxclients.load(Ordering::Relaxed),
            sh.blocking.count(),
            sh.tracking.tracking_clients(),
            sh.blocking.timed_count(),
        );
    }
    if want("memory") {
        let used = sh.used_memory() as u64;
        let peak = sh.peak_memory.load(Ordering::Relaxed).max(used);
        let rss = rss_bytes();
        let maxmem = sh.config.tunables.maxmemory.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{peak}\r\nused_memory_peak_human:{}\r\nmaxmemory:{maxmem}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_fragmentation_ratio:{:.2}\r\nmem_not_counted_for_evict:0\r\nmem_total_replication_buffers:{}\r\nmem_allocator:{}\r\nnumber_of_cached_scripts:{}\r\nnumber_of_functions:{}\r\nnumber_of_libraries:{}\r\nlazyfree_pending_objects:{}\r\nlazyfreed_objects:{}\r\n\r\n",
            human(used),
            human(rss),
            human(peak),
            human(maxmem),
            sh.config.get("maxmemory-policy").unwrap_or_default(),
            if used > 0 { rss as f64 / used as f64 } else { 0.0 },
            sh.propagator.get().map_or(0, |p| p.buffer_bytes()),
            if sh.used_memory.is_some() { "libc-counted" } else { "libc" },
            sh.scripts.cached(),
            sh.functions.counts().1,
            sh.functions.counts().0,
            sh.lazyfree.pending(),
            sh.lazyfree.freed(),
        );
    }
    if want("persistence") {
        let p = &sh.persist;
        let aof_port = sh.append_only.get();
        // An AOF rewrite's snapshot is no RDB save.
        let in_progress = p.bgsave_in_progress.load(Ordering::Relaxed) && !sh.aof_rewriting();
        let mut aof = String::new();
        match aof_port {
            Some(a) => a.info(&mut aof),
            None => aof.push_str(
                "aof_enabled:0\r\naof_rewrite_in_progress:0\r\naof_rewrite_scheduled:0\r\n\
                 aof_last_rewrite_time_sec:-1\r\naof_current_rewrite_time_sec:-1\r\n\
                 aof_last_bgrewrite_status:ok\r\naof_rewrites:0\r\n\
                 aof_rewrites_consecutive_failures:0\r\naof_last_write_status:ok\r\n\
                 aof_last_cow_size:0\r\nmodule_fork_in_progress:0\r\nmodule_fork_last_cow_size:0\r\n",
            ),
        }
        let loading = p.loading.load(Ordering::Relaxed);
        let loading_fields = if loading {
            let total = p.loading_total_bytes.load(Ordering::Relaxed);
            let loaded = p.loading_loaded_bytes.load(Ordering::Relaxed);
            let started = p.loading_start_unix.load(Ordering::Relaxed);
            let elapsed =
                carmine_keyspace::now_ms() / 1000 - started.min(carmine_keyspace::now_ms() / 1000);
            format!(
                "loading_start_time:{started}\r\nloading_total_bytes:{total}\r\nloading_rdb_used_mem:0\r\nloading_loaded_bytes:{loaded}\r\nloading_loaded_perc:{:.2}\r\nloading_eta_seconds:{}\r\nloading_loaded_keys:{}\r\n",
                if total > 0 { loaded as f64 * 100.0 / total as f64 } else { 0.0 },
                (total.saturating_sub(loaded) * elapsed)
                    .checked_div(loaded)
                    .unwrap_or(1),
                p.loading_loaded_keys.load(Ordering::Relaxed),
            )
        } else {
            String::new()
        };
        // No fork: the copy-on-write figures are the bytes writers copied for the
        // running BGSAVE's walk, which is what a forked child would have cost.
        let (cow, keys_done, keys_total) = p
            .running_bgsave
            .lock()
            .as_ref()
            .map_or((0, 0, 0), |running| (running.progress)());
        let cow_fields = format!(
            "current_cow_peak:{cow}\r\ncurrent_cow_size:{cow}\r\ncurrent_cow_size_age:0\r\ncurrent_fork_perc:{:.2}\r\ncurrent_save_keys_processed:{keys_done}\r\ncurrent_save_keys_total:{keys_total}\r\n",
            if keys_total > 0 { keys_done.min(keys_total) as f64 * 100.0 / keys_total as f64 } else { 0.0 },
        );
        let _ = write!(
            out,
            "# Persistence\r\nloading:{}\r\n{}async_loading:{}\r\n{}rdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\nrdb_last_bgsave_time_sec:{}\r\nrdb_current_bgsave_time_sec:{}\r\nrdb_saves:{}\r\nrdb_last_cow_size:{}\r\nrdb_last_load_keys_expired:{}\r\nrdb_last_load_keys_loaded:{}\r\n{}\r\n",
            u8::from(loading),
            loading_fields,
            u8::from(p.async_loading.load(Ordering::Acquire)),
            cow_fields,
            p.changes_since_save(sh),
            u8::from(in_progress),
            p.last_save_unix.load(Ordering::Relaxed),
            if p.last_bgsave_failed.load(Ordering::Relaxed) { "err" } else { "ok" },
            p.last_bgsave_secs.load(Ordering::Relaxed),
            if in_progress {
                (carmine_keyspace::now_ms().saturating_sub(p.current_bgsave_started_ms.load(Ordering::Relaxed)) / 1000) as i64
            } else {
                -1
            },
            p.saves.load(Ordering::Relaxed),
            p.last_cow_bytes.load(Ordering::Relaxed),
            p.last_load_keys_expired.load(Ordering::Relaxed),
            p.last_load_keys_loaded.load(Ordering::Relaxed),
            aof,
        );
    }
    if want("stats") {
        let s = |f: fn(&ThreadStats) -> &std::sync::atomic::AtomicU64| {
            sh.sum(|t| f(t).load(Ordering::Relaxed))
        };
        let syncs = sh.propagator.get().map_or([0; 3], |p| p.sync_counts());
        let (tracked_keys, tracked_items, tracked_prefixes) = sh.tracking.totals();
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nsync_full:{}\r\nsync_partial_ok:{}\r\nsync_partial_err:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\nmigrate_cached_sockets:{}\r\ntracking_total_keys:{}\r\ntracking_total_items:{}\r\ntracking_total_prefixes:{}\r\nunexpected_error_replies:{}\r\ntotal_error_replies:{}\r\ndump_payload_sanitizations:0\r\ntotal_reads_processed:{}\r\ntotal_writes_processed:{}\r\nreply_buffer_shrinks:{}\r\nreply_buffer_expands:{}\r\n\r\n",
            s(|t| &t.connections_received),
            s(|t| &t.total_commands),
            sh.ops_per_sec.load(Ordering::Relaxed),
            s(|t| &t.net_input),
            s(|t| &t.net_output),
            s(|t| &t.rejected_connections),
            syncs[0],
            syncs[1],
            syncs[2],
            sh.keyspace.stats().expired_keys.load(Ordering::Relaxed),
            sh.keyspace.eviction().evicted.load(Ordering::Relaxed),
            s(|t| &t.keyspace_hits),
            s(|t| &t.keyspace_misses),
            sh.pubsub.channels_len(),
            sh.pubsub.patterns_len(),
            sh.migrate_cache.len(),
            tracked_keys,
            tracked_items,
            tracked_prefixes,
            sh.errorstats.unexpected(),
            s(|t| &t.error_replies),
            s(|t| &t.reads),
            s(|t| &t.writes),
            sh.clients.reply_buffers.shrinks.load(Ordering::Relaxed),
            sh.clients.reply_buffers.expands.load(Ordering::Relaxed),
        );
    }
    if want("replication") {
        out.push_str("# Replication\r\n");
        match sh.propagator.get() {
            Some(p) => p.info(&mut out),
            None => out.push_str("role:master\r\nconnected_slaves:0\r\n"),
        }
        out.push_str("\r\n");
    }
    if want("cpu") {
        let (user, sys) = cpu_seconds();
        let _ = write!(
            out,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\n\r\n"
        );
    }
    if want("commandstats") {
        out.push_str("# Commandstats\r\n");
        for (name, t) in command_stats(sh) {
            let calls = t.summed.calls;
            if calls + t.rejected + t.failed == 0 {
                continue;
            }
            let per = if calls > 0 {
                t.usec as f64 / calls as f64
            } else {
                0.0
            };
            let _ = write!(
                out,
                "cmdstat_{name}:calls={calls},usec={},usec_per_call={per:.2},rejected_calls={},failed_calls={}\r\n",
                t.usec, t.rejected, t.failed
            );
        }
        out.push_str("\r\n");
    }
    if want("latencystats") {
        out.push_str("# Latencystats\r\n");
        let percentiles: Vec<f64> = sh
            .config
            .get("latency-tracking-info-percentiles")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        for (name, t) in command_stats(sh) {
            if t.summed.calls > 0 {
                let _ = write!(
                    out,
                    "latency_percentiles_usec_{name}:{}\r\n",
                    t.summed.info_line(&percentiles)
                );
            }
        }
        out.push_str("\r\n");
    }
    if want("errorstats") {
        out.push_str("# Errorstats\r\n");
        sh.errorstats.info(&mut out);
        out.push_str("\r\n");
    }
    if want("cluster") {
        let _ = write!(
            out,
            "# Cluster\r\ncluster_enabled:{}\r\n\r\n",
            u8::from(sh.cluster_mode())
        );
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        for db in 0..sh.keyspace.databases() {
            let (keys, expires) = sh.keyspace.db_counts(db);
            if keys > 0 {
                let _ = write!(out, "db{db}:keys={keys},expires={expires}\r\n");
            }
        }
        out.push_str("\r\n");
    }
    while out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

fn info(ctx: &mut Ctx<'_, '_>) {
    let sections: Vec<String> = (1..ctx.args.len())
        .map(|i| String::from_utf8_lossy(ctx.arg(i)).to_lowercase())
        .collect();
    let text = info_text(ctx, &sections);
    ctx.reply.verbatim(text.as_bytes());
}

fn write_command_info(ctx: &mut Ctx<'_, '_>, spec: &CommandSpec) {
    let r = &mut *ctx.reply;
    r.array(10);
    r.bulk(spec.name.as_bytes());
    r.int(i64::from(spec.arity));
    let mut names: Vec<&str> = FLAG_NAMES
        .iter()
        .filter(|(f, _)| spec.flags & f != 0)
        .map(|(_, n)| *n)
        .collect();
    // A container's keys belong to its subcommands (MEMORY USAGE, OBJECT ...): Redis
    // reports the container itself with no movable keys.
    // Scripts declare their keys by count (no key spec here: each call locks its own).
    if (matches!(spec.keys, KeySpec::Custom(_)) && spec.subcommands.is_empty())
        || crate::scripting::runs_script(spec)
    {
        names.push("movablekeys");
    }
    r.set(names.len());
    for n in names {
        r.simple(n);
    }
    let (first, last, step) = spec.key_range();
    r.int(i64::from(first));
    r.int(i64::from(last));
    r.int(i64::from(step));
    let acl: Vec<&str> = spec.acl.split_whitespace().collect();
    r.set(acl.len());
    for a in acl {
        r.simple(a);
    }
    r.set(0); // tips
              // Key specifications: one begin-search/find-keys pair for fixed positions.
    if first > 0 {
        r.array(1);
        r.map(3);
        r.bulk(b"flags");
        r.set(0);
        r.bulk(b"begin_search");
        r.map(2);
        r.bulk(b"type");
        r.bulk(b"index");
        r.bulk(b"spec");
        r.map(1);
        r.bulk(b"index");
        r.int(i64::from(first));
        r.bulk(b"find_keys");
        r.map(2);
        r.bulk(b"type");
        r.bulk(b"range");
        r.bulk(b"spec");
        r.map(3);
        r.bulk(b"lastkey");
        r.int(if last < 0 {
            i64::from(last)
        } else {
            i64::from(last - first)
        });
        r.bulk(b"keystep");
        r.int(i64::from(step));
        r.bulk(b"limit");
        r.int(0);
    } else {
        r.array(0);
    }
    r.array(spec.subcommands.len());
    for sub in spec.subcommands {
        r.array(10);
        r.bulk(format!("{}|{}", spec.name, sub).as_bytes());
        r.int(-2);
        r.set(0);
        r.int(0);
        r.int(0);
        r.int(0);
        r.set(0);
        r.set(0);
        r.array(0);
        r.array(0);
    }
}

fn write_command_docs(ctx: &mut Ctx<'_, '_>, spec: &CommandSpec) {
    let r = &mut *ctx.reply;
    r.bulk(spec.name.as_bytes());
    r.map(3);
    r.bulk(b"summary");
    r.bulk(spec.summary.as_bytes());
    r.bulk(b"since");
    r.bulk(spec.since.as_bytes());
    r.bulk(b"group");
    r.bulk(spec.group.as_bytes());
}

const COMMAND_HELP: &[&str] = &[
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all commands.",
    "COUNT",
    "    Return the total number of commands in this server.",
    "LIST",
    "    Return a list of all commands in this server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple commands.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple commands.",
    "GETKEYS <full-command>",
    "    Return the keys from a full command.",
    "GETKEYSANDFLAGS <full-command>",
    "    Return the keys and the access flags from a full command.",
    "HELP",
    "    Print this help.",
];

fn command(ctx: &mut Ctx<'_, '_>) {
    let sh = ctx.shared;
    if ctx.args.len() == 1 {
        ctx.reply.array(sh.commands.len());
        for spec in sh.commands.all() {
            write_command_info(ctx, spec);
        }
        return;
    }
    let sub = ctx.arg(1).to_ascii_lowercase();
    match sub.as_slice() {
        b"count" if ctx.args.len() == 2 => ctx.reply.int(sh.commands.len() as i64),
        b"help" if ctx.args.len() == 2 => help_reply(ctx, COMMAND_HELP),
        b"list" => {
            let mut pattern = None;
            let mut category = None;
            if ctx.args.len() == 5 && ctx.is(2, "FILTERBY") && ctx.is(3, "PATTERN") {
                pattern = Some(ctx.arg(4).to_vec());
            } else if ctx.args.len() == 5 && ctx.is(2, "FILTERBY") && ctx.is(3, "ACLCAT") {
                category = Some(format!("@{}", String::from_utf8_lossy(ctx.arg(4))));
            } else if ctx.args.len() == 5 && ctx.is(2, "FILTERBY") && ctx.is(3, "MODULE") {
                // No modules: nothing belongs to any.
                return ctx.reply.array(0);
            } else if ctx.args.len() != 2 {
                return ctx.syntax_error();
            }
            // Subcommands are listed too, as `parent|sub`, as Redis 7.0 lists them.
            let names: Vec<String> = sh
                .commands
                .all()
                .iter()
                .filter(|s| {
                    category
                        .as_ref()
                        .is_none_or(|c| s.acl.split_whitespace().any(|w| w.eq_ignore_ascii_case(c)))
                })
                .flat_map(|s| {
                    std::iter::once(s.name.to_string()).chain(
                        s.subcommands
                            .iter()
                            .map(move |sub| format!("{}|{sub}", s.name)),
                    )
                })
                .filter(|n| pattern.as_ref().is_none_or(|p| glob_match(p, n.as_bytes())))
                .collect();
            ctx.reply.array(names.len());
            for n in names {
                ctx.reply.bulk(n.as_bytes());
            }
        }
        b"info" => {
            if ctx.args.len() == 2 {
                ctx.reply.array(sh.commands.len());
                for spec in sh.commands.all() {
                    write_command_info(ctx, spec);
                }
                return;
            }
            ctx.reply.array(ctx.args.len() - 2);
            for i in 2..ctx.args.len() {
                match sh
                    .commands
                    .lookup(ctx.arg(i))
                    .and_then(|j| sh.commands.get(j))
                {
                    Some(spec) => write_command_info(ctx, spec),
                    None => ctx.reply.null_array(),
                }
            }
        }
        b"docs" => {
            let specs: Vec<&CommandSpec> = if ctx.args.len() == 2 {
                sh.commands.all().iter().collect()
            } else {
                (2..ctx.args.len())
                    .filter_map(|i| {
                        sh.commands
                            .lookup(ctx.arg(i))
                            .and_then(|j| sh.commands.get(j))
                    })
                    .collect()
            };
            ctx.reply.map(specs.len());
            for spec in specs {
                write_command_docs(ctx, spec);
            }
        }
        b"getkeys" | b"getkeysandflags" if ctx.args.len() >= 3 => {
            let with_flags = sub == b"getkeysandflags";
            let inner =
                carmine_resp::Args::from_slices(&ctx.args.iter().skip(2).collect::<Vec<_>>());
            let Some(spec) = sh
                .commands
                .lookup(inner.get(0).unwrap_or_default())
                .and_then(|j| sh.commands.get(j))
            else {
                return ctx.error("ERR Invalid command specified");
            };
            let scripted = crate::scripting::runs_script(spec);
            if matches!(spec.keys, KeySpec::None) && !scripted {
                return ctx.error("ERR The command has no key arguments");
            }
            if !spec.arity_ok(inner.len()) {
                return ctx.error("ERR Invalid number of arguments specified for command");
            }
            let mut idx = Vec::new();
            if scripted {
                // The declared keys (EVAL and FCALL have no key spec: the dispatcher
                // locks nothing for the script itself).
                let numkeys = inner
                    .get(2)
                    .and_then(carmine_resp::parse_i64)
                    .filter(|&n| n >= 0 && (n as usize) <= inner.len() - 3);
                let Some(numkeys) = numkeys else {
                    return ctx.error("ERR Invalid arguments specified for command");
                };
                idx.extend(3..3 + numkeys as usize);
            } else {
                spec.key_indexes(&inner, &mut idx);
                if idx.is_empty() {
                    return ctx.error("ERR Invalid arguments specified for command");
                }
            }
            ctx.reply.array(idx.len());
            for (n, &i) in idx.iter().enumerate() {
                let key = inner.get(i).unwrap_or_default();
                if !with_flags {
                    ctx.reply.bulk(key);
                    continue;
                }
                let flags = crate::key_flags::flags_of_key(spec.name, &inner, n);
                ctx.reply.array(2);
                ctx.reply.bulk(key);
                ctx.reply.array(flags.len());
                for f in flags {
                    ctx.reply.simple(f);
                }
            }
        }
        _ => ctx.unknown_subcommand(),
    }
}

/// DEBUG STRINGMATCH-LEN: the glob matcher over random patterns and subjects, long and
/// full of `*` (Redis' own fuzz of stringmatchlen); it must return, not crash or hang.
fn stringmatch_fuzz() {
    const ALPHABET: &[u8] = b"*?[]^-\\ab";
    let mut rng = fastrand::Rng::new();
    for _ in 0..100_000 {
        let pattern: Vec<u8> = (0..rng.usize(0..64))
            .map(|_| ALPHABET[rng.usize(..ALPHABET.len())])
            .collect();
        let subject: Vec<u8> = (0..rng.usize(0..64))
            .map(|_| ALPHABET[rng.usize(..ALPHABET.len())])
            .collect();
        std::hint::black_box(carmine_keyspace::glob_match(&pattern, &subject));
    }
}

/// DEBUG PROTOCOL <type>: one reply of each RESP type, as Redis' tests use them.
fn debug_protocol(ctx: &mut Ctx<'_, '_>) {
    let kind = ctx.arg(2).to_ascii_lowercase();
    let reply = &mut *ctx.reply;
    match kind.as_slice() {
        b"string" => reply.bulk(b"Hello World"),
        b"integer" => reply.int(12345),
        b"double" => reply.double_text(b"3.141"),
        b"bignum" => {
            let n = b"1234567999999999999999999999999999999";
            if reply.resp3 {
                reply.frame(&carmine_resp::Frame::BigNumber(bytes::Bytes::from_static(n)));
            } else {
                reply.bulk(n);
            }
        }
        b"null" => reply.null(),
        b"array" | b"set" => {
            if kind == b"set" {
                reply.set(3);
            } else {
                reply.array(3);
            }
            for j in 0..3 {
                reply.int(j);
            }
        }
        b"map" => {
            reply.map(3);
            for j in 0..3 {
                reply.int(j);
                reply.boolean(j == 1);
            }
        }
        // An attribute and a push are no replies of their own (a client reads the reply
        // that follows them as the answer): written raw, outside the one-reply count.
        b"attrib" => {
            if reply.resp3 {
                reply.raw(b"|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n");
            }
            reply.bulk(b"Some real reply following the attribute");
        }
        b"push" if !reply.resp3 => ctx.error("ERR RESP2 is not supported by this command"),
        b"push" => {
            reply.raw(b">2\r\n$16\r\nserver-cpu-usage\r\n:42\r\n");
            reply.bulk(b"Some real reply following the push reply");
        }
        b"true" => reply.boolean(true),
        b"false" => reply.boolean(false),
        b"verbatim" => reply.verbatim(b"This is a verbatim\nstring"),
        _ => ctx.error("ERR Wrong protocol type name. Please use one of the following: string|integer|double|bignum|null|array|set|map|attrib|push|verbatim|true|false"),
    }
}

const CONFIG_HELP: &[&str] = &[
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Print this help.",
];

fn config(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    let argc = ctx.args.len();
    let cfg = &ctx.shared.config;
    match sub.as_slice() {
        b"get" if argc >= 3 => {
            let mut pairs: Vec<(&'static str, String)> = Vec::new();
            for i in 2..argc {
                for (k, v) in cfg.matching(ctx.arg(i)) {
                    if !pairs.iter().any(|(n, _)| *n == k) {
                        pairs.push((k, v));
                    }
                }
            }
            ctx.reply.map(pairs.len());
            for (k, v) in pairs {
                ctx.reply.bulk(k.as_bytes());
                ctx.reply.bulk(v.as_bytes());
            }
        }
        b"set" if argc >= 4 && argc.is_multiple_of(2) => {
            let mut changes: Vec<(String, String)> = Vec::new();
            for i in (2..argc).step_by(2) {
                let name = String::from_utf8_lossy(ctx.arg(i)).to_lowercase();
                let value = String::from_utf8_lossy(ctx.arg(i + 1)).into_owned();
                if cfg.get(&name).is_none() {
                    return ctx.error(&format!(
                        "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                    ));
                }
                // The same parameter twice (or under its alias) is refused, as in Redis.
                let canonical = crate::config::canonical_name(&name);
                if changes
                    .iter()
                    .any(|(n, _)| crate::config::canonical_name(n.as_str()) == canonical)
                {
                    return ctx.error(&format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - duplicate parameter"
                    ));
                }
                changes.push((name, value));
            }
            // While loading (async loading too), the parameters Redis marks
            // DENY_LOADING_CONFIG are refused with its loading error.
            let p = &ctx.shared.persist;
            let loading =
                p.loading.load(Ordering::Acquire) || p.async_loading.load(Ordering::Acquire);
            if loading
                && changes.iter().any(|(n, _)| {
                    matches!(
                        crate::config::canonical_name(n.as_str()).as_str(),
                        "appendonly" | "repl-diskless-load" | "dir"
                    )
                })
            {
                return ctx.error("LOADING Redis is loading the dataset in memory");
            }
            // Validate everything first so a failed multi-parameter SET changes nothing.
            let previous: Vec<(String, String)> = changes
                .iter()
                .map(|(n, _)| (n.clone(), cfg.get(n).unwrap_or_default()))
                .collect();
            for (name, value) in &changes {
                let args: Vec<String> = if value.is_empty() {
                    Vec::new()
                } else {
                    value.split_whitespace().map(str::to_string).collect()
                };
                let args = if args.is_empty() && value.is_empty() {
                    vec![String::new()]
                } else {
                    args
                };
                let args = if matches!(
                    name.as_str(),
                    "save" | "bind" | "client-output-buffer-limit"
                ) || !value.contains(' ')
                {
                    args
                } else {
                    vec![value.clone()]
                };
                if let Err(e) = cfg.set(name, &args, false) {
                    for (n, v) in &previous {
                        let _ = cfg.set(
                            n,
                            &v.split_whitespace().map(str::to_string).collect::<Vec<_>>(),
                            true,
                        );
                    }
                    return ctx.error(&format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - {e}"
                    ));
                }
            }
            // A new port or bind address is listened on before anything else applies;
            // if it cannot be bound, every value goes back and the old sockets stay.
            let moved = changes.iter().find(|(n, v)| {
                matches!(n.as_str(), "port" | "bind")
                    && previous.iter().any(|(pn, old)| pn == n && old != v)
            });
            if let (Some((name, _)), Some(rebind)) = (moved, ctx.shared.rebind.get()) {
                if let Err(reason) = rebind() {
                    ctx.shared.log(
                        3, // warning
                        &format!("CONFIG SET {name}: {reason}"),
                    );
                    for (n, v) in &previous {
                        let _ = cfg.set(
                            n,
                            &v.split_whitespace().map(str::to_string).collect::<Vec<_>>(),
                            true,
                        );
                    }
                    let why = if name == "bind" {
                        "Failed to bind to specified addresses."
                    } else {
                        "Unable to listen on this port"
                    };
                    return ctx.error(&format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
                    ));
                }
            }
            ctx.shared.sync_config();
            if changes.iter().any(|(n, _)| n.starts_with("cluster-")) {
                if let Some(apply) = ctx.shared.cluster_config_changed.get() {
                    apply();
                }
            }
            if changes.iter().any(|(n, _)| n == "appendonly") {
                if let Some(aof) = ctx.shared.append_only.get() {
                    if let Err(e) = aof.appendonly_changed(ctx.shared) {
                        return ctx.error(&format!(
                            "ERR CONFIG SET failed (possibly related to argument 'appendonly') - {e}"
                        ));
                    }
                }
            }
            // A lower limit evicts at once, as Redis does when maxmemory is set.
            if changes.iter().any(|(n, _)| n == "maxmemory") {
                ctx.shared.perform_evictions(ctx.l.now());
            }
            ctx.reply.ok();
        }
        b"resetstat" if argc == 2 => {
            for t in ctx.shared.threads.lock().iter() {
                t.reset();
            }
            ctx.shared.errorstats.reset();
            ctx.shared.lazyfree.reset();
            ctx.shared
                .keyspace
                .stats()
                .expired_keys
                .store(0, Ordering::Relaxed);
            ctx.shared.peak_memory.store(0, Ordering::Relaxed);
            if let Some(p) = ctx.shared.propagator.get() {
                p.reset_sync_counts();
            }
            ctx.reply.ok();
        }
        b"rewrite" if argc == 2 => {
            let Some(path) = cfg.file.read().clone() else {
                return ctx.error("ERR The server is running without a config file");
            };
            let tmp = format!("{path}.tmp-{}", std::process::id());
            let mut text = cfg.render();
            // Users go in the config file unless an ACL file keeps them, as in Redis.
            if cfg.get("aclfile").unwrap_or_default().is_empty() {
                for line in crate::acl::user_lines(ctx.shared) {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            let written = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path));
            match written {
                Ok(()) => ctx.reply.ok(),
                Err(e) => ctx.error(&format!("ERR Rewriting config file: {e}")),
            }
        }
        b"help" if argc == 2 => help_reply(ctx, CONFIG_HELP),
        _ => ctx.unknown_subcommand(),
    }
}

const DEBUG_HELP: &[&str] = &[
    "DEBUG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOG <message>",
    "    Write <message> to the server log.",
    "OBJECT <key>",
    "    Show low-level info about the <key> and associated value.",
    "POPULATE <count> [<prefix>] [<size>]",
    "    Create <count> string keys <prefix>:<num> (prefix 'key') with values",
    "    value:<num>, padded with zero bytes or cut to <size> when it is given.",
    "    Keys that exist are left alone; cluster slots are not respected.",
    "RELOAD",
    "    Save the RDB on disk and reload it back to memory.",
    "LOADAOF",
    "    Flush the AOF buffers on disk and reload the AOF in memory.",
    "PAUSE-CRON <0|1>",
    "    Stop periodic cron job processing.",
    "REPLICATE <command> [<arg> ...]",
    "    Send the command to the replicas without running it here (not written to the AOF).",
    "AOF-FLUSH-SLEEP <microsec>",
    "    Server will sleep before flushing the AOF, this is used for testing.",
    "SET-ACTIVE-EXPIRE <0|1>",
    "    Setting it to 0 disables expiring keys in background when they are not accessed.",
    "PROTOCOL <type>",
    "    Reply with a test value of the specified type: string|integer|double|bignum|null|array|set|map|attrib|push|verbatim|true|false.",
    "SET-DISABLE-DENY-SCRIPTS <0|1>",
    "    For testing: let scripts call introspection commands they may not call (CLIENT, CONFIG ...).",
    "DROP-CLUSTER-PACKET-FILTER <packet-type>",
    "    Drop all packets that match the filtered type. Set to -1 allow all packets.",
    "QUICKLIST-PACKED-THRESHOLD <size>",
    "    Sets the threshold for elements to be inserted as plain vs packed nodes (accepted; Carmine's lists have no plain nodes).",
    "REPLYBUFFER PEAK-RESET-TIME <NEVER||RESET|time>",
    "    Sets the time (in milliseconds) to wait between client reply buffer peak resets.",
    "    In case NEVER is provided the last observed peak will never be reset.",
    "    In case RESET is provided the peak reset time will be restored to the default value.",
    "REPLYBUFFER RESIZING <0|1>",
    "    Enable or disable the reply buffer resize cron job.",
    "SLEEP <seconds>",
    "    Stop the server for <seconds>. Decimals allowed.",
    "LISTPACK <key>",
    "    Show low level info about the listpack encoding of <key>.",
    "STRINGMATCH-LEN",
    "    Run a fuzz tester against the glob pattern matcher.",
    "CHANGE-REPL-ID",
    "    Change the replication IDs of the instance.",
    "    Dangerous: should be used only for testing the replication subsystem.",
    "PANIC",
    "    Crash the server simulating a panic.",
    "SEGFAULT",
    "    Crash the server with sigsegv.",
    "HELP",
    "    Print this help.",
];

/// DEBUG SEGFAULT and DEBUG PANIC: the server crashes on purpose (to test crash
/// reports and failover), with a SIGSEGV or a panic, which stops the process with a bug
/// report (the server's `crash` module). Refused unless `enable-debug-command` allows it
/// (`yes`, or `local` from a local connection), as Redis 7 refuses DEBUG: with the
/// default (`no`) no client can crash the server.
fn crash_on_request(ctx: &mut Ctx<'_, '_>, sub: &[u8]) {
    let allowed = match ctx.shared.config.get("enable-debug-command").as_deref() {
        Some("yes") => true,
        Some("local") => {
            // Loopback, or the Unix socket (whose clients' address is its path and 0,
            // the path as configured, relative or not).
            let addr = &ctx.session.info.addr;
            let unix_socket = ctx.shared.config.get("unixsocket").unwrap_or_default();
            addr.starts_with("127.")
                || addr.starts_with("[::1]")
                || (!unix_socket.is_empty() && *addr == format!("{unix_socket}:0"))
        }
        _ => false,
    };
    if !allowed {
        return ctx.error(
            "ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", \
             you can run it from a local connection, otherwise you need to set this option in the \
             configuration file, and then restart the server.",
        );
    }
    if sub == b"segfault" {
        // SAFETY: `raise` sends this thread a signal; SIGSEGV's handler writes the bug
        // report and ends the process.
        #[allow(unsafe_code)]
        unsafe {
            libc::raise(libc::SIGSEGV);
        }
    }
    panic!(
        "DEBUG PANIC called at Unix time {}",
        carmine_keyspace::now_ms() / 1000
    );
}

fn debug(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    match (sub.as_slice(), ctx.args.len()) {
        (b"help", 2) => help_reply(ctx, DEBUG_HELP),
        (b"segfault" | b"panic", 2) => crash_on_request(ctx, sub.as_slice()),
        (b"drop-cluster-packet-filter", 3) => {
            let Some(t) = ctx.int_arg(2) else { return };
            ctx.shared.cluster_drop_filter.store(t, Ordering::Relaxed);
            ctx.reply.ok();
        }
        // Carmine's lists have no "plain" nodes for big elements: the threshold that
        // makes Redis use them is checked as Redis checks it and changes nothing.
        (b"quicklist-packed-threshold", 3) => {
            let size = std::str::from_utf8(ctx.arg(2))
                .ok()
                .and_then(crate::config::parse_memory);
            match size {
                Some(n) if n < (1 << 32) => ctx.reply.ok(),
                _ => ctx.error(
                    "ERR argument must be a memory value bigger than 1 and smaller than 4gb",
                ),
            }
        }
        (b"log", 3) => {
            let line = format!("DEBUG LOG: {}", String::from_utf8_lossy(ctx.arg(2)));
            ctx.shared.log(3, &line);
            ctx.reply.ok();
        }
        (b"sleep", 3) => {
            let Some(secs) = ctx.float_arg(2) else { return };
            if secs > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(secs.min(3600.0)));
            }
            ctx.reply.ok();
        }
        (b"reload", _) => {
            let Some(p) = ctx.shared.persistence.get().cloned() else {
                return ctx.error("ERR persistence is not available in this embedding");
            };
            let mut options = crate::persistence::ReloadOptions::default();
            for i in 2..ctx.args.len() {
                match ctx.arg(i).to_ascii_uppercase().as_slice() {
                    b"MERGE" => options.merge = true,
                    b"NOFLUSH" => options.flush = false,
                    b"NOSAVE" => options.save = false,
                    _ => {
                        return ctx.error(
                            "ERR DEBUG RELOAD only supports the MERGE, NOFLUSH and NOSAVE options.",
                        )
                    }
                }
            }
            match p.reload(ctx.shared, options) {
                Ok(()) => ctx.reply.ok(),
                Err(e) => ctx.error(&format!("ERR Error trying to load the RDB dump: {e}")),
            }
        }
        (b"loadaof", 2) => {
            let Some(a) = ctx.shared.append_only.get().cloned() else {
                return ctx.error("ERR the append-only file is not available in this embedding");
            };
            match a.reload(ctx.shared) {
                Ok(()) => ctx.reply.ok(),
                Err(e) => ctx.error(&format!("ERR Error loading the AOF: {e}")),
            }
        }
        (b"pause-cron", 3) => {
            let Some(v) = ctx.int_arg(2) else { return };
            ctx.shared.cron_paused.store(v != 0, Ordering::Relaxed);
            ctx.reply.ok();
        }
        (b"replicate", n) if n >= 3 => {
            // Straight to the replicas, as Redis' DEBUG REPLICATE: not run here, not in
            // the AOF.
            if let Some(p) = ctx.shared.propagator.get() {
                let argv = (2..n).map(|i| ctx.arg(i).to_vec()).collect();
                p.append_to_replicas(&[crate::propagate::Op {
                    db: ctx.session.db,
                    argv: crate::propagate::Argv::Owned(argv),
                }]);
            }
            ctx.reply.ok();
        }
        (b"aof-flush-sleep", 3) => {
            let Some(us) = ctx.int_arg(2) else { return };
            if let Some(a) = ctx.shared.append_only.get() {
                a.set_flush_sleep(us.max(0) as u64);
            }
            ctx.reply.ok();
        }
        (b"populate", 3..=5) => populate(ctx),
        (b"digest", 2) => {
            let d = crate::digest::dataset_digest(&ctx.shared.keyspace);
            ctx.reply.simple(&crate::digest::hex(&d));
        }
        (b"digest-value", n) if n >= 2 => {
            let db = ctx.session.db;
            ctx.reply.array(n - 2);
            for i in 2..n {
                let key = ctx.arg(i).to_vec();
                let table = ctx
                    .shared
                    .keyspace
                    .lock_table(db, carmine_slots::key_slot(&key));
                // Logically expired keys count too, as in Redis.
                let mut d = [0u8; 20];
                if let Some(entry) = table.peek(&key) {
                    crate::digest::mix_value(&mut d, entry);
                }
                drop(table);
                ctx.reply.simple(&crate::digest::hex(&d));
            }
        }
        (b"replybuffer", 4) => {
            let resizing = &ctx.shared.clients.reply_buffers;
            let value = ctx.arg(3).to_ascii_lowercase();
            match ctx.arg(2).to_ascii_lowercase().as_slice() {
                b"peak-reset-time" => {
                    let ms = match value.as_slice() {
                        b"never" => -1,
                        b"reset" => crate::state::ReplyBufferResizing::DEFAULT_PEAK_RESET_MS,
                        _ => {
                            let Some(ms) = ctx.int_arg(3) else { return };
                            ms
                        }
                    };
                    resizing.peak_reset_ms.store(ms, Ordering::Relaxed);
                }
                b"resizing" => {
                    // Redis reads the flag with atoi: anything not a number is 0.
                    let on = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0);
                    resizing.enabled.store(on != 0, Ordering::Relaxed);
                }
                _ => return ctx.unknown_subcommand(),
            }
            ctx.reply.ok();
        }
        (b"set-active-expire", 3) => {
            let Some(v) = ctx.int_arg(2) else { return };
            ctx.shared.active_expire.store(v != 0, Ordering::Relaxed);
            ctx.reply.ok();
        }
        (b"protocol", 3) => debug_protocol(ctx),
        (b"set-disable-deny-scripts", 3) => {
            let Some(v) = ctx.int_arg(2) else { return };
            ctx.shared
                .scripts
                .deny_disabled
                .store(v != 0, Ordering::Relaxed);
            ctx.reply.ok();
        }
        (b"listpack", 3) => {
            let key = ctx.arg(2);
            let described = ctx
                .l
                .get_untouched(key)
                .map(|e| (e.value.encoding(), e.value.type_name()));
            match described {
                None => ctx.error("ERR no such key"),
                Some((encoding, _)) if encoding != "listpack" => {
                    ctx.error("ERR Not a listpack encoded object.")
                }
                Some((_, kind)) => {
                    // Redis prints the listpack's entries on stdout; the log says what
                    // the key is (Carmine's compact encodings have no listpack bytes).
                    ctx.shared.log(
                        2, // notice
                        &format!(
                            "DEBUG LISTPACK {}: a {kind} in the listpack encoding",
                            crate::dispatch::printable(key, 128)
                        ),
                    );
                    ctx.reply.simple("Listpack structure printed on stdout");
                }
            }
        }
        (b"stringmatch-len", 2) => {
            stringmatch_fuzz();
            ctx.reply
                .simple("Apparently Redis did not crash: test passed");
        }
        (b"change-repl-id", 2) => {
            ctx.shared.log(
                3, // warning
                "Changing replication IDs after receiving DEBUG change-repl-id",
            );
            if let Some(p) = ctx.shared.propagator.get() {
                p.change_replication_id();
            }
            ctx.reply.ok();
        }
        (b"object", 3) => {
            let key = ctx.arg(2);
            let clock = ctx.shared.keyspace.lru_clock();
            // A key whose deadline passed but that expiry has not removed yet is still
            // described (Redis' DEBUG OBJECT looks in the table itself).
            let table = ctx.l.table_in(ctx.session.db, key);
            let Some(e) = table.peek(key) else {
                return ctx.error("ERR no such key");
            };
            let ser_len = e.value.as_str().map_or(0, |s| s.len());
            let line = format!(
                "Value at:{:p} refcount:1 encoding:{} serializedlength:{} lru:{} lru_seconds_idle:{}",
                e as *const _,
                e.value.encoding(),
                ser_len,
                e.lru,
                clock.saturating_sub(e.lru)
            );
            ctx.reply.simple(&line);
        }
        _ => ctx.unknown_subcommand(),
    }
}

/// DEBUG POPULATE count [prefix] [size]: test data, as Redis makes it. Names are cut to
/// 127 bytes as Redis' formatting buffer cuts them.
fn populate(ctx: &mut Ctx<'_, '_>) {
    // Redis answers the same error for a negative number and for no number at all.
    let positive = |arg: &[u8]| carmine_resp::parse_i64(arg).filter(|n| *n >= 0);
    let count = positive(ctx.arg(2));
    let size = if ctx.args.len() == 5 {
        positive(ctx.arg(4))
    } else {
        Some(0)
    };
    let (Some(count), Some(size)) = (count, size) else {
        return ctx.error("ERR value is out of range, must be positive");
    };
    // Bounded as any string is: a huge size would abort the process in the allocator.
    if size as u64
        > ctx
            .shared
            .config
            .tunables
            .proto_max_bulk_len
            .load(Ordering::Relaxed)
    {
        return ctx.error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    }
    let prefix = if ctx.args.len() >= 4 {
        ctx.arg(3)
    } else {
        b"key"
    };
    let db = ctx.shared.keyspace.db(ctx.session.db);
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut digits = itoa::Buffer::new();
    for n in 0..count as u64 {
        let n = digits.format(n);
        key.clear();
        key.extend_from_slice(prefix);
        key.push(b':');
        key.extend_from_slice(n.as_bytes());
        key.truncate(127);
        if db.exists(&key) {
            continue;
        }
        value.clear();
        value.extend_from_slice(b"value:");
        value.extend_from_slice(n.as_bytes());
        if size > 0 {
            value.resize(size as usize, 0);
        }
        db.set(&key, &value);
    }
    ctx.reply.ok();
}

const MEMORY_HELP: &[&str] = &[
    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DOCTOR",
    "    Return memory problems reports.",
    "MALLOC-STATS",
    "    Return internal statistics report from the memory allocator.",
    "PURGE",
    "    Attempt to purge dirty pages for reclamation by the allocator.",
    "STATS",
    "    Return information about the memory usage of the server.",
    "USAGE <key> [SAMPLES <count>]",
    "    Return memory in bytes used by <key> and its value. Nested values are",
    "    sampled up to <count> times (default: 5, 0 means sample all).",
    "HELP",
    "    Print this help.",
];

/// The figures MEMORY STATS and MEMORY DOCTOR work from.
struct MemoryFigures {
    used: u64,
    peak: u64,
    rss: u64,
    replication: u64,
    keys: u64,
}

fn memory_figures(sh: &crate::Shared) -> MemoryFigures {
    let used = sh.used_memory() as u64;
    MemoryFigures {
        used,
        peak: sh.peak_memory.load(Ordering::Relaxed).max(used),
        rss: rss_bytes(),
        replication: sh.propagator.get().map_or(0, |p| p.buffer_bytes()),
        keys: (0..sh.keyspace.databases())
            .map(|db| sh.keyspace.db_counts(db).0 as u64)
            .sum(),
    }
}

/// MEMORY STATS: Redis' field names, for the figures Carmine keeps.
fn memory_stats(ctx: &mut Ctx<'_, '_>) {
    let f = memory_figures(ctx.shared);
    let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    let ints: [(&str, u64); 6] = [
        ("peak.allocated", f.peak),
        ("total.allocated", f.used),
        ("replication.backlog", f.replication),
        ("keys.count", f.keys),
        (
            "keys.bytes-per-key",
            f.used.checked_div(f.keys).unwrap_or(0),
        ),
        ("fragmentation.bytes", f.rss.saturating_sub(f.used)),
    ];
    let reply = &mut *ctx.reply;
    reply.map(ints.len() + 2);
    for (name, v) in ints {
        reply.bulk(name.as_bytes());
        reply.int(v as i64);
    }
    reply.bulk(b"peak.percentage");
    reply.double(ratio(f.used, f.peak) * 100.0);
    reply.bulk(b"fragmentation");
    reply.double(ratio(f.rss, f.used));
}

/// MEMORY DOCTOR: Redis' advice, for what Carmine can see.
fn memory_doctor(sh: &crate::Shared) -> String {
    let f = memory_figures(sh);
    if f.used < 5 * 1024 * 1024 {
        return "Hi Sam, this instance is empty or is using very little memory, my issues detector can't be used in these conditions. Please, leave for your mission on Earth and fill it with some data. The new Sam and I will be back to our programming as soon as I finished rebooting.\n".to_string();
    }
    let mut issues = Vec::new();
    if f.peak > f.used.saturating_mul(3) / 2 {
        issues.push(" * Peak memory: In the past this instance used more than 150% the memory that is currently using. The allocator is normally not able to release memory after a peak, so you can expect to see a big fragmentation ratio, however this is actually harmless and is only due to the memory peak, and if the Redis instance Resident Set Size (RSS) is currently bigger than expected, the memory will be used as soon as you fill the Redis instance with more data.");
    }
    if f.rss > f.used.saturating_mul(14) / 10 && f.rss - f.used > 10 * 1024 * 1024 {
        issues.push(" * High total RSS: This instance has a memory fragmentation and RSS overhead greater than 1.4 (this means that the Resident Set Size of the process is much larger than the memory the server counts as used).");
    }
    if issues.is_empty() {
        return "Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.\n".to_string();
    }
    format!(
        "Sam, I detected a few issues in this Redis instance memory implants:\n\n{}\n\nI'm here to keep you safe, Sam. I want to help you.\n",
        issues.join("\n\n")
    )
}

fn memory(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    match sub.as_slice() {
        b"help" if ctx.args.len() == 2 => help_reply(ctx, MEMORY_HELP),
        b"stats" if ctx.args.len() == 2 => memory_stats(ctx),
        b"doctor" if ctx.args.len() == 2 => {
            let report = memory_doctor(ctx.shared);
            ctx.reply.verbatim(report.as_bytes());
        }
        // The system allocator keeps no report to give, and frees pages itself.
        b"malloc-stats" if ctx.args.len() == 2 => ctx
            .reply
            .bulk(b"Stats not supported for the current allocator"),
        b"purge" if ctx.args.len() == 2 => ctx.reply.ok(),
        b"usage" if ctx.args.len() == 3 || (ctx.args.len() == 5 && ctx.is(3, "SAMPLES")) => {
            if ctx.args.len() == 5 && ctx.int_arg(4).is_none() {
                return;
            }
            let key = ctx.arg(2);
            match ctx.l.get(key) {
                None => ctx.reply.null(),
                Some(e) => {
                    let entry =
                        std::mem::size_of::<(carmine_keyspace::Key, carmine_keyspace::Entry)>() + 1;
                    let total = entry + key.len() + e.value.heap_size();
                    ctx.reply.int(total as i64);
                }
            }
        }
        _ => ctx.unknown_subcommand(),
    }
}

fn shutdown(ctx: &mut Ctx<'_, '_>) {
    let mut mode = ShutdownMode::Default;
    for i in 1..ctx.args.len() {
        if ctx.is(i, "NOSAVE") {
            mode = ShutdownMode::NoSave;
        } else if ctx.is(i, "SAVE") {
            mode = ShutdownMode::Save;
        } else if ctx.is(i, "NOW") || ctx.is(i, "FORCE") {
        } else if ctx.is(i, "ABORT") {
            return ctx.error("ERR No shutdown in progress.");
        } else {
            return ctx.syntax_error();
        }
    }
    ctx.shared.request_shutdown(mode);
    ctx.session.close_after_reply = true;
}
