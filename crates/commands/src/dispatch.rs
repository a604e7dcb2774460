//! The dispatcher: look the command up, check arity and auth, queue it inside MULTI, lock
//! the tables of its keys in ascending (db, slot) order, run it, unlock, count it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use carmine_keyspace::{table_id, KeyspaceError, Locked};
use carmine_resp::{Args, ReplyBuf};
use carmine_slots::key_slot;

use crate::propagate::{unit_ops, Op};
use crate::state::{MultiState, ReplyMode, Session, Shared, ThreadStats};
use crate::table::{flags, CommandSpec};

/// Everything a command handler sees.
pub struct Ctx<'a, 'k> {
    pub shared: &'a Shared,
    pub session: &'a mut Session,
    pub stats: &'a ThreadStats,
    pub args: &'a Args,
    pub reply: &'a mut ReplyBuf,
    /// The tables the dispatcher locked for this command (or this transaction).
    pub l: &'a mut Locked<'k>,
    /// True while the world is stopped (an exclusive command or EXEC).
    pub exclusive: bool,
    /// The command's spec (its name for error messages).
    pub spec: &'a CommandSpec,
    /// Running inside EXEC: blocking commands must not block.
    pub in_transaction: bool,
    /// When the command started (the reading that times it).
    pub started: Instant,
}

impl<'a> Ctx<'a, '_> {
    /// Argument `i` (empty if out of range), borrowed from the command rather than
    /// through `self`, so a handler may hold it while it writes through `self.l` and
    /// `self.reply`. An owned handle (`Args::bytes`) moves the read buffer's reference
    /// count up and down, atomically: 1.9% of a loop serving pipelined LPUSHes.
    pub fn arg(&self, i: usize) -> &'a [u8] {
        self.args.get(i).unwrap_or_default()
    }

    /// Argument `i`, compared case-insensitively with an upper-case keyword.
    pub fn is(&self, i: usize, word: &str) -> bool {
        self.arg(i).eq_ignore_ascii_case(word.as_bytes())
    }

    pub fn error(&mut self, msg: &str) {
        self.reply.error(msg);
    }

    pub fn syntax_error(&mut self) {
        self.reply.error("ERR syntax error");
    }

    /// A container command's reply to a subcommand it does not know (or given the wrong
    /// number of arguments), pointing at its HELP as Redis does.
    pub fn unknown_subcommand(&mut self) {
        let msg = format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
            String::from_utf8_lossy(self.arg(1)),
            self.spec.name.to_ascii_uppercase()
        );
        self.reply.error(&msg);
    }

    pub fn keyspace_error(&mut self, e: KeyspaceError) {
        self.reply.error(&e.to_string());
    }

    pub fn wrong_type(&mut self) {
        self.keyspace_error(KeyspaceError::WrongType);
    }

    /// Parses argument `i` as an integer, replying the standard error if it is not one.
    pub fn int_arg(&mut self, i: usize) -> Option<i64> {
        let v = carmine_resp::parse_i64(self.arg(i));
        if v.is_none() {
            self.reply
                .error("ERR value is not an integer or out of range");
        }
        v
    }

    /// Parses argument `i` as an integer within `min..=max`, replying Redis' errors
    /// (`getRangeLongFromObjectOrReply`) when it is not.
    pub fn range_arg(&mut self, i: usize, min: i64, max: i64) -> Option<i64> {
        let v = self.int_arg(i)?;
        if (min..=max).contains(&v) {
            Some(v)
        } else {
            self.error(&format!(
                "ERR value is out of range, value must between {min} and {max}"
            ));
            None
        }
    }

    /// Parses argument `i` as a count of at least 0 (Redis' getPositiveLongFromObjectOrReply):
    /// anything else, a non-number too, gets `value is out of range, must be positive`.
    pub fn positive_arg(&mut self, i: usize) -> Option<usize> {
        match carmine_resp::parse_i64(self.arg(i)) {
            Some(n) if n >= 0 => Some(n as usize),
            _ => {
                self.error("ERR value is out of range, must be positive");
                None
            }
        }
    }

    /// Parses arguments `i` and `j` as integers (a range), replying one error for the
    /// first that is not one.
    pub fn int_pair(&mut self, i: usize, j: usize) -> Option<(i64, i64)> {
        let a = self.int_arg(i)?;
        let b = self.int_arg(j)?;
        Some((a, b))
    }

    /// Parses argument `i` as a float (INCRBYFLOAT, DEBUG SLEEP).
    pub fn float_arg(&mut self, i: usize) -> Option<f64> {
        let v = carmine_keyspace::ops::parse_float(self.arg(i));
        if v.is_none() {
            self.reply.error("ERR value is not a valid float");
        }
        v
    }

    /// Closes client `c`: this connection after its reply, another one now (CLIENT KILL,
    /// ACL DELUSER, a revoked subscription).
    pub fn close_client(&mut self, c: &crate::state::ClientInfo) {
        if c.id == self.session.id() {
            self.session.close_after_reply = true;
        } else {
            c.kill();
        }
    }

    /// Argument `i` as Redis' `long double` (INCRBYFLOAT, HINCRBYFLOAT), or an error
    /// reply.
    pub fn long_double_arg(
        &mut self,
        i: usize,
    ) -> Option<carmine_keyspace::long_double::LongDouble> {
        let v = carmine_keyspace::long_double::LongDouble::parse(self.arg(i));
        if v.is_none() {
            self.reply.error("ERR value is not a valid float");
        }
        v
    }

    /// Reports a keyspace event (notify-keyspace-events) for `key` in the current db.
    #[inline]
    pub fn notify(&self, class: u32, event: &str, key: &[u8]) {
        self.l.notify(class, event, key);
    }

    /// Propagates `argv` instead of the request (see [`Locked::propagate_instead`]); a no-op
    /// unless someone reads the replication stream.
    pub fn propagate_as(&mut self, argv: &[&[u8]]) {
        if self.l.recording_effects() {
            self.l
                .propagate_instead(argv.iter().map(|a| a.to_vec()).collect());
        }
    }

    /// The command's name as Redis prints it in errors (`get`, `client|kill`).
    pub fn name(&self) -> String {
        String::from_utf8_lossy(self.arg(0)).to_lowercase()
    }
}

fn unknown_command(reply: &mut ReplyBuf, args: &Args) {
    let mut msg = String::from("ERR unknown command '");
    msg.push_str(&printable(args.get(0).unwrap_or_default(), 128));
    msg.push_str("', with args beginning with: ");
    for a in args.iter().skip(1) {
        if msg.len() > 1024 {
            break;
        }
        msg.push('\'');
        msg.push_str(&printable(a, 128));
        msg.push_str("' ");
    }
    reply.error(&msg);
}

/// A byte string made safe for an error message (no newlines, bounded length).
pub fn printable(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(max)]);
    s.replace(['\r', '\n'], " ")
}

/// The (db, slot) tables a command touches, appended to `out`.
pub fn plan_tables(
    spec: &CommandSpec,
    args: &Args,
    db: usize,
    idx: &mut Vec<usize>,
    out: &mut Vec<u32>,
) {
    idx.clear();
    spec.key_indexes(args, idx);
    let other = spec.other_db.and_then(|f| f(args));
    for &i in idx.iter() {
        let slot = key_slot(args.get(i).unwrap_or_default());
        out.push(table_id(db, slot));
        if let Some(o) = other {
            out.push(table_id(o, slot));
        }
    }
}

/// Runs one request from a client: dispatch, MULTI queueing, CLIENT REPLY suppression.
pub fn execute(
    shared: &Shared,
    session: &mut Session,
    stats: &ThreadStats,
    args: &Args,
    reply: &mut ReplyBuf,
) {
    execute_at(
        shared,
        session,
        stats,
        args,
        reply,
        carmine_keyspace::now_ms(),
    );
}

/// As [`execute`], with the Unix time in milliseconds the caller read for this batch of
/// commands (an event loop reads the clock once per read, not once per command).
pub fn execute_at(
    shared: &Shared,
    session: &mut Session,
    stats: &ThreadStats,
    args: &Args,
    reply: &mut ReplyBuf,
    now_ms: u64,
) {
    execute_timed(
        shared,
        session,
        stats,
        args,
        reply,
        now_ms,
        &mut CommandClock::default(),
    );
}

/// The clock readings that time commands (INFO commandstats, SLOWLOG, the latency
/// monitor). A connection's pipelined commands run back to back, so the reading that
/// ends one starts the next: half the readings, where `clock_gettime` was 5% of a loop
/// serving pipelined LPUSHes. What runs between two commands (decoding the next one) is
/// counted to the next, well under a microsecond. Keep one per batch of commands that
/// run together; a fresh one reads the clock at the first start.
#[derive(Debug, Default)]
pub struct CommandClock {
    last_end: Option<Instant>,
}

impl CommandClock {
    /// A clock whose first command starts at `at`, a reading just taken (an event loop's
    /// when a connection's bytes came in: the commands they hold start then).
    pub fn starting_at(at: Instant) -> CommandClock {
        CommandClock { last_end: Some(at) }
    }

    /// When the command about to run starts: the previous command's end, if it ended
    /// through this clock and nothing else ran since.
    fn start(&mut self) -> Instant {
        self.last_end.take().unwrap_or_else(crate::clock::now)
    }

    /// Ends the command that ran: the reading also starts the next one.
    fn end(&mut self) -> Instant {
        let now = crate::clock::now();
        self.last_end = Some(now);
        now
    }
}

/// As [`execute_at`], for a batch of commands timed by one [`CommandClock`].
pub fn execute_timed(
    shared: &Shared,
    session: &mut Session,
    stats: &ThreadStats,
    args: &Args,
    reply: &mut ReplyBuf,
    now_ms: u64,
    clock: &mut CommandClock,
) {
    let start_len = reply.len();
    if session.reply_mode == ReplyMode::SkipNext {
        session.reply_mode = ReplyMode::Skipping;
    }
    // A replica reads the stream on this connection: what it sends (REPLCONF ACK) is
    // answered by nothing, as Redis answers its replicas.
    let replica_feed = session.replica_feed;
    let pushed = dispatch(shared, session, stats, args, reply, now_ms, clock);
    shared.errorstats.record(stats, &mut reply.error_codes);
    // ASKING lasts one command (a whole transaction when sent inside MULTI).
    if session.asking
        && session.multi.is_none()
        && !args
            .get(0)
            .is_some_and(|n| n.eq_ignore_ascii_case(b"asking"))
    {
        session.asking = false;
    }
    // Refused or queued commands changed nothing, so marking them applied outside the
    // barrier is safe; the ones that ran were marked under it.
    mark_applied(shared, session);
    if replica_feed {
        reply.out.truncate(start_len);
        return;
    }
    // Subscription confirmations are pushes, which Redis writes whatever CLIENT REPLY
    // says (it sets CLIENT_PUSHING around them): a silenced subscriber still needs them.
    match session.reply_mode {
        ReplyMode::Off if !pushed => reply.out.truncate(start_len),
        ReplyMode::Skipping => {
            if !pushed {
                reply.out.truncate(start_len);
            }
            session.reply_mode = ReplyMode::On;
        }
        _ => {}
    }
}

/// Admits and runs one request. Returns true if what it wrote are pub/sub pushes
/// (SUBSCRIBE and its kin ran), which CLIENT REPLY OFF / SKIP do not silence.
fn dispatch(
    shared: &Shared,
    session: &mut Session,
    stats: &ThreadStats,
    args: &Args,
    reply: &mut ReplyBuf,
    now_ms: u64,
    clock: &mut CommandClock,
) -> bool {
    // Whatever this request turns out to be, the previous command's end no longer
    // starts anything but a command run right now.
    let chained_start = clock.start();
    let Some(idx) = args.get(0).and_then(|n| {
        shared
            .commands
            .lookup_remembered(n, &mut session.command_memo)
    }) else {
        unknown_command(reply, args);
        if let Some(m) = session.multi.as_mut() {
            m.aborted = true;
        }
        return false;
    };
    let Some(spec) = shared.commands.get(idx) else {
        return false;
    };
    session
        .info
        .last_cmd
        .store(idx as u64 + 1, Ordering::Relaxed);
    // Past `tracking-table-max-keys`, keys leave the tracking table before the next
    // command runs (Redis does it in processCommand too), not only in the cron.
    if shared.tracking.active() {
        let max = shared
            .config
            .tunables
            .tracking_table_max_keys
            .load(Ordering::Relaxed) as usize;
        if shared.tracking.over_limit(max) {
            crate::tracking::before_command(session.info.id, reply, || {
                shared.tracking.limit(shared, max)
            });
        }
    }
    if !spec.arity_ok(args.len()) {
        reply.error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
        reject(stats, idx, session);
        return false;
    }
    if !session.authenticated && !spec.has(flags::NO_AUTH) && shared.auth_required() {
        reply.error("NOAUTH Authentication required.");
        reject(stats, idx, session);
        return false;
    }
    if session.multi.is_some() && spec.has(flags::NO_MULTI) {
        reply.error("ERR Command not allowed inside a transaction");
        reject(stats, idx, session);
        return false;
    }
    if !spec.has(flags::NO_AUTH) {
        let context = if session.in_script {
            crate::acl_log::Context::Lua
        } else if session.multi.is_some() {
            crate::acl_log::Context::Multi
        } else {
            crate::acl_log::Context::TopLevel
        };
        if acl_refused(shared, session, spec, args, reply, context) {
            reject(stats, idx, session);
            return false;
        }
    }
    if let Some(err) = crate::cluster::redirect(shared, session, spec, args) {
        // A command a pause held is redirected when it is retried (its slot moved with
        // the failover that ended the pause): it is no longer waiting.
        if session.blocked.as_ref().is_some_and(|b| b.paused) {
            crate::blocking::unblock(shared, session);
        }
        ThreadStats::add(&stats.commands[idx].rejected, 1);
        if spec.name == "exec" {
            // EXEC whose queue cannot run here discards the transaction, as in Redis.
            session.multi = None;
            session.info.multi.store(-1, Ordering::Relaxed);
            session.unwatch_all(&shared.keyspace);
        } else if let Some(m) = session.multi.as_mut() {
            m.aborted = true;
        }
        reply.error(&err);
        return false;
    }
    if shared.persist.loading.load(Ordering::Acquire)
        && !spec.has(flags::LOADING)
        && !session.replaying
    {
        reply.error(LOADING);
        reject(stats, idx, session);
        return false;
    }
    if shared.persist.async_loading.load(Ordering::Acquire)
        && !session.replaying
        && !session.master_link
        && refused_while_async_loading(spec, args)
    {
        reply.error(LOADING);
        reject(stats, idx, session);
        return false;
    }
    if !reply.resp3
        && !session.channels.is_empty()
            | !session.patterns.is_empty()
            | !session.shard_channels.is_empty()
        && !crate::pubsub::allowed_in_subscriber_mode(spec.name)
    {
        reply.error(&format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        ));
        reject(stats, idx, session);
        return false;
    }
    if !session.in_script && !session.master_link && shared.scripts.running.busy() {
        return busy_command(shared, session, stats, idx, args, reply, now_ms);
    }
    // EXEC is judged by what it queued (Redis' processCommand), and every check below
    // comes before queueing, as in Redis.
    let is_exec = spec.name == "exec";
    let queued_any = |session: &Session, pred: &dyn Fn(&CommandSpec) -> bool| {
        is_exec
            && session.multi.as_ref().is_some_and(|m| {
                m.queued
                    .iter()
                    .any(|(i, _)| shared.commands.get(*i).is_some_and(pred))
            })
    };
    // A paused client's MULTI body waits too.
    if !session.master_link && !session.replica_feed && !session.in_script {
        let may_write = |s: &CommandSpec| s.has(flags::WRITE) || s.has(flags::MAY_REPLICATE);
        // A script declaring `no-writes` is a read for the pause, as in Redis. Looked at
        // only while a pause is on: finding a script's flags takes a lock.
        if shared.pause.active()
            && shared.pause.holds(
                (may_write(spec) && !crate::scripting::declares_no_writes(shared, spec, args))
                    || queued_any(session, &may_write),
            )
        {
            shared.pause.hold(shared, session, args);
            return false;
        }
        // Held by a pause that has ended: it runs now.
        if session.blocked.as_ref().is_some_and(|b| b.paused) {
            crate::blocking::unblock(shared, session);
        }
    }
    if !session.master_link {
        let write = spec.has(flags::WRITE) || queued_any(session, &|s| s.has(flags::WRITE));
        if shared.config.tunables.maxmemory.load(Ordering::Relaxed) > 0
            && !(session.in_script && shared.scripts.running.skips_oom())
            && !crate::tracking::before_command(session.info.id, reply, || {
                shared.perform_evictions(now_ms)
            })
            && (spec.denies_oom(args) || queued_any(session, &|s| s.has(flags::DENYOOM)))
        {
            return refuse(shared, session, stats, idx, reply, is_exec, OOM);
        }
        // A master refuses PING too while it cannot persist, as Redis does: that is how
        // Sentinel notices a misconfigured master (its PING replies are not PONG).
        // Evaluated only where it decides: a write skips the name check.
        let refusable =
            || write || (spec.name == "ping" && !shared.is_replica.load(Ordering::Relaxed));
        if shared.persist.last_bgsave_failed.load(Ordering::Relaxed)
            && refusable()
            && shared.writes_stopped_by_failed_save()
        {
            return refuse(shared, session, stats, idx, reply, is_exec, MISCONF);
        }
        if refusable() {
            if let Some(e) = shared.append_only.get().and_then(|a| a.write_error()) {
                let err = format!("MISCONF Errors writing to the AOF file: {e}");
                return refuse(shared, session, stats, idx, reply, is_exec, &err);
            }
        }
        let min_replicas = shared.min_replicas_to_write.load(Ordering::Relaxed);
        if min_replicas > 0
            && write
            && !shared.is_replica.load(Ordering::Relaxed)
            && shared
                .propagator
                .get()
                .is_some_and(|p| p.good_replicas() < min_replicas)
        {
            return refuse(shared, session, stats, idx, reply, is_exec, NOREPLICAS);
        }
        let replica = shared.is_replica.load(Ordering::Relaxed);
        if write && replica && shared.config.get_bool("replica-read-only") {
            return refuse(shared, session, stats, idx, reply, is_exec, READONLY);
        }
        if replica
            && !shared.master_link_up.load(Ordering::Relaxed)
            && !shared.config.get_bool("replica-serve-stale-data")
            && (!spec.has(flags::STALE) || queued_any(session, &|s| !s.has(flags::STALE)))
        {
            return refuse(shared, session, stats, idx, reply, is_exec, MASTERDOWN);
        }
    }
    if let Some(m) = session.multi.as_mut() {
        if !spec.has(flags::NO_QUEUE) {
            m.queued.push((idx, args.clone()));
            session
                .info
                .multi
                .store(m.queued.len() as i64, Ordering::Relaxed);
            reply.simple("QUEUED");
            return false;
        }
    }
    if spec.name == "exec" {
        // EXEC is counted in INFO commandstats as Redis counts it (its own time includes
        // its commands'); its commands are counted each as itself.
        let before = reply.len();
        exec(shared, session, stats, reply, now_ms);
        account(
            shared,
            stats,
            idx,
            args,
            reply,
            before,
            chained_start,
            Instant::now(),
            0,
        );
        if shared.monitors.active() && !session.replaying {
            shared.monitors.feed(session, args);
        }
        return false;
    }
    run(
        shared,
        session,
        stats,
        idx,
        args,
        reply,
        false,
        now_ms,
        None,
        chained_start,
        clock,
    );
    spec.has(flags::REPLY_PER_ARG)
}

thread_local! {
    /// A monotonic reading and the Unix time at it, re-read every 100 ms: a command's
    /// wall time is derived from its own start reading, so it reads the clock once
    /// instead of twice (`perf` put `clock_gettime` at 11% of a loop serving pipelined
    /// GETs, three readings per command).
    /// The Unix time is kept in microseconds: milliseconds truncated at the anchor and
    /// again at the command put a command up to 2 ms behind the clock (a PXAT of now +
    /// 10000 then read a PTTL of 10001).
    static WALL_ANCHOR: std::cell::Cell<Option<(Instant, u64)>> =
        const { std::cell::Cell::new(None) };
}

/// Unix milliseconds at `at` (a reading of this thread's monotonic clock).
pub fn wall_ms_at(at: Instant) -> u64 {
    WALL_ANCHOR.with(|anchor| {
        if let Some((base, micros)) = anchor.get() {
            if let Some(since) = at.checked_duration_since(base) {
                if since < std::time::Duration::from_millis(100) {
                    // In 64 bits: a 128-bit division was 2% of a loop serving SADDs.
                    return (micros + micros_of(since)) / 1000;
                }
            }
        }
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(micros_of)
            .unwrap_or(0);
        anchor.set(Some((at, micros)));
        micros / 1000
    })
}

/// Whole microseconds of `d`, in 64 bits (saturating, past 584,000 years).
fn micros_of(d: std::time::Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

/// Has `locked` raise `keymiss` for this command's reads when anyone listens for it and
/// Redis looks its keys up for reading.
fn report_misses_if_reading(spec: &CommandSpec, args: &Args, locked: &mut Locked<'_>) {
    if locked.notifies(carmine_keyspace::notify::KEY_MISS) && reads_keys_as_redis_reads(spec, args)
    {
        locked.report_misses();
    }
}

/// Whether Redis looks this command's keys up for reading (its read lookups raise
/// `keymiss`): read-only commands, and the writes that read their sources so (their
/// destinations are looked up for writing, which raises none).
fn reads_keys_as_redis_reads(spec: &CommandSpec, args: &Args) -> bool {
    if spec.name == "bitfield" {
        // Only a BITFIELD that only reads looks its key up for reading.
        return crate::key_flags::flags_of_key("bitfield", args, 0).contains(&"RO");
    }
    spec.has(flags::READONLY)
        || matches!(
            spec.name,
            "getdel"
                | "getex"
                | "bitop"
                | "sort"
                | "zinterstore"
                | "zunionstore"
                | "zdiffstore"
                | "zrangestore"
                | "sinterstore"
                | "sunionstore"
                | "sdiffstore"
                | "georadius"
                | "georadiusbymember"
                | "geosearchstore"
                | "pfmerge"
                | "copy"
        )
}

/// Checks the command against the session user's permissions: a refused one gets its
/// -NOPERM, and goes to ACL LOG with where it came from. True when refused.
fn acl_refused(
    shared: &Shared,
    session: &Session,
    spec: &CommandSpec,
    args: &Args,
    reply: &mut ReplyBuf,
    context: crate::acl_log::Context,
) -> bool {
    let Err(denial) = session.acl_user(shared).check(spec, args) else {
        return false;
    };
    let username = session.info.user.lock().clone();
    crate::acl_log::record(
        shared,
        crate::acl_log::Event {
            reason: denial.reason(),
            context,
            object: denial.object(),
            username: &username,
            client_info: crate::connection::client_info_line(
                shared,
                &session.info,
                Some((spec, args)),
            ),
        },
    );
    reply.error(&denial.message());
    true
}

/// At EXEC, each queued command is checked against the user's permissions again (they
/// may have changed since it was queued), as Redis does: a refused one gets its -NOPERM
/// in the EXEC reply, goes to ACL LOG, and does not run. True when refused.
fn refused_at_exec(
    shared: &Shared,
    session: &Session,
    spec: &CommandSpec,
    args: &Args,
    reply: &mut ReplyBuf,
) -> bool {
    if session.master_link || session.replaying || spec.has(flags::NO_AUTH) {
        return false;
    }
    acl_refused(
        shared,
        session,
        spec,
        args,
        reply,
        crate::acl_log::Context::Multi,
    )
}

/// Redis' CMD_NO_ASYNC_LOADING commands, and the CLUSTER subcommands that carry it.
fn refused_while_async_loading(spec: &CommandSpec, args: &Args) -> bool {
    if spec.has(flags::NO_ASYNC_LOADING) {
        return true;
    }
    spec.name == "cluster"
        && args.get(1).is_some_and(|sub| {
            const SUBS: &[&[u8]] = &[
                b"addslots",
                b"addslotsrange",
                b"bumpepoch",
                b"delslots",
                b"delslotsrange",
                b"failover",
                b"flushslots",
                b"forget",
                b"meet",
                b"replicate",
                b"saveconfig",
                b"set-config-epoch",
                b"setslot",
            ];
            SUBS.iter().any(|s| sub.eq_ignore_ascii_case(s))
        })
}

/// Whether a command of `session` stops waiting for the barrier when a script turns
/// busy (or, unless the command runs while loading, a load holds the world): a client's
/// does; a script's own calls, the master link and the AOF wait.
fn gives_up_when_busy<'a>(
    shared: &'a Shared,
    session: &Session,
    refused_while_loading: bool,
) -> impl Fn() -> bool + 'a {
    let client = !session.in_script && !session.master_link && !session.replaying;
    // DEBUG LOADAOF and DEBUG RELOAD load with the world stopped: a client waiting for
    // it meanwhile is answered -LOADING, as Redis answers between loading chunks.
    move || {
        client
            && (shared.scripts.running.busy()
                || refused_while_loading && shared.persist.loading.load(Ordering::Acquire))
    }
}

const LOADING: &str = "LOADING Redis is loading the dataset in memory";

/// A request while a script runs past `busy-reply-threshold`: only what Redis allows
/// then (its CMD_ALLOW_BUSY commands) runs, without waiting for the world; the rest is
/// refused with -BUSY. Returns dispatch's "pushed" answer (false).
fn busy_command(
    shared: &Shared,
    session: &mut Session,
    stats: &ThreadStats,
    idx: usize,
    args: &Args,
    reply: &mut ReplyBuf,
    now_ms: u64,
) -> bool {
    let Some(spec) = shared.commands.get(idx) else {
        return false;
    };
    let running = &shared.scripts.running;
    let sub = args.get(1).map(<[u8]>::to_ascii_lowercase);
    let is_exec = spec.name == "exec";
    if shared.persist.loading.load(Ordering::Acquire) && !spec.has(flags::LOADING) {
        return refuse(shared, session, stats, idx, reply, is_exec, LOADING);
    }
    match (spec.name, sub.as_deref()) {
        ("script", Some(b"kill")) | ("function", Some(b"kill")) if args.len() == 2 => {
            match running.kill(spec.name == "script") {
                Ok(()) => reply.ok(),
                Err(e) => {
                    reply.error(e);
                    reject(stats, idx, session);
                }
            }
            false
        }
        ("function", Some(b"stats")) if args.len() == 2 => {
            crate::functions::stats_reply(shared, reply);
            false
        }
        ("shutdown", _) => {
            let nosave = (1..args.len()).any(|i| {
                args.get(i)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"nosave"))
            });
            if !nosave {
                return refuse(
                    shared,
                    session,
                    stats,
                    idx,
                    reply,
                    false,
                    running.busy_error(),
                );
            }
            running.abandon();
            shared.request_shutdown(crate::ShutdownMode::NoSave);
            session.close_after_reply = true;
            false
        }
        (
            "auth" | "hello" | "quit" | "reset" | "replconf" | "discard" | "multi" | "unwatch"
            | "watch",
            _,
        ) => {
            run(
                shared,
                session,
                stats,
                idx,
                args,
                reply,
                true,
                now_ms,
                None,
                Instant::now(),
                &mut CommandClock::default(),
            );
            false
        }
        _ => refuse(
            shared,
            session,
            stats,
            idx,
            reply,
            is_exec,
            running.busy_error(),
        ),
    }
}

/// EXEC that found a script busy while waiting for the world: the transaction is
/// discarded, as Redis discards an EXEC refused with -BUSY.
fn exec_abort_busy(shared: &Shared, session: &mut Session, reply: &mut ReplyBuf) {
    session.unwatch_all(&shared.keyspace);
    reply.error(&format!(
        "EXECABORT Transaction discarded because of: {}",
        shared.scripts.running.busy_error()
    ));
}

/// On the master link: the command (or the whole MULTI, at EXEC) is applied. Called while
/// the command still holds the barrier, so a snapshot begun with the world stopped
/// reads an offset that matches its data exactly; inside MULTI nothing is applied yet.
fn mark_applied(shared: &Shared, session: &Session) {
    if let (Some(offset), None) = (session.stream_offset_after, &session.multi) {
        shared
            .master_stream_db
            .store(session.db as u64, Ordering::Release);
        shared
            .master_stream_applied
            .store(offset, Ordering::Release);
    }
}

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
const MISCONF: &str = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk. Commands that may modify the data set are disabled, because this instance is configured to report errors during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB error.";
const NOREPLICAS: &str = "NOREPLICAS Not enough good replicas to write.";
const READONLY: &str = "READONLY You can't write against a read only replica.";
const MASTERDOWN: &str =
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.";

/// Refuses a request for the server's state. A refused EXEC discards its transaction
/// (Redis' execCommandAbort); a refused request inside MULTI makes EXEC abort. Returns
/// dispatch's "pushed" answer (false).
fn refuse(
    shared: &Shared,
    session: &mut Session,
    stats: &ThreadStats,
    idx: usize,
    reply: &mut ReplyBuf,
    is_exec: bool,
    err: &str,
) -> bool {
    if is_exec && session.multi.is_some() {
        session.multi = None;
        session.info.multi.store(-1, Ordering::Relaxed);
        session.unwatch_all(&shared.keyspace);
        reply.error(&format!(
            "EXECABORT Transaction discarded because of: {err}"
        ));
    } else {
        reply.error(err);
    }
    reject(stats, idx, session);
    false
}

fn reject(stats: &ThreadStats, idx: usize, session: &mut Session) {
    ThreadStats::add(&stats.commands[idx].rejected, 1);
    if let Some(m) = session.multi.as_mut() {
        m.aborted = true;
    }
}

/// Runs a command outside a transaction: takes the barrier, locks its tables, calls it.
#[allow(clippy::too_many_arguments)]
/// `unit`: inside a transaction run with the world stopped, where the command's effects
/// go (EXEC propagates them together); otherwise they are propagated here, under the
/// command's table locks. `started`: when the command started (see [`CommandClock`]);
/// `clock` ends it.
fn run<'q>(
    shared: &Shared,
    session: &mut Session,
    stats: &ThreadStats,
    idx: usize,
    args: &'q Args,
    reply: &mut ReplyBuf,
    world_stopped: bool,
    now_ms: u64,
    unit: Option<&mut Vec<Op<'q>>>,
    started: Instant,
    clock: &mut CommandClock,
) {
    let Some(spec) = shared.commands.get(idx) else {
        return;
    };
    let world_stopped = world_stopped || session.world_held;
    let monitored = shared.monitors.active() && !session.replaying;
    if monitored && crate::monitor::shown_before(spec) {
        shared.monitors.feed(session, args);
    }
    let before = reply.len();
    let mark = reply.mark();
    let dirty;
    let in_transaction = unit.is_some();
    {
        // A client's command waiting for a script that turns busy meanwhile is answered
        // as a busy server answers it, instead of waiting on.
        let give_up = gives_up_when_busy(shared, session, !spec.has(flags::LOADING));
        let mut _exclusive = None;
        let mut _shared = None;
        if !world_stopped {
            let taken = if spec.needs_world(args) {
                shared
                    .barrier
                    .exclusive_unless(&give_up)
                    .map(|g| _exclusive = Some(g))
            } else {
                shared
                    .barrier
                    .shared_unless(session.thread, &give_up)
                    .map(|g| _shared = Some(g))
            };
            if taken.is_none() {
                busy_command(shared, session, stats, idx, args, reply, now_ms);
                return;
            }
        }
        let db = session.db;
        let mut locked = match spec.keys {
            crate::table::KeySpec::None => Locked::empty_at(&shared.keyspace, db, now_ms),
            crate::table::KeySpec::Range { first, last, step }
                if first == last && spec.other_db.is_none() =>
            {
                let _ = step;
                let key = args.get(first as usize).unwrap_or_default();
                if session.replaying || session.in_script {
                    // The AOF replays at its own time (see the server's aof module); a
                    // script's calls all see the time it started (Redis 7 freezes it, so
                    // no key expires halfway through a script).
                    Locked::lock_key_at(&shared.keyspace, db, key, now_ms)
                } else {
                    Locked::lock_key_at(&shared.keyspace, db, key, wall_ms_at(started))
                }
            }
            _ => {
                let mut idxs = Vec::new();
                let mut ids = Vec::new();
                plan_tables(spec, args, db, &mut idxs, &mut ids);
                Locked::lock_at(&shared.keyspace, db, &mut ids, now_ms)
            }
        };
        if session.master_link {
            locked.never_expire();
        }
        // What the AOF replays is already in the AOF, and reaches no replica.
        let propagator = shared.propagating().filter(|_| !session.replaying);
        if propagator.is_some() || unit.is_some() {
            locked.record_effects();
        }
        // Admission saw the keys of a migrating slot present; MIGRATE may have moved them
        // since. Decided again under the locks, so a write never lands on a key that
        // already left (it would be lost when the slot moves).
        let moved_away = if unit.is_none() {
            crate::cluster::recheck_migrating(shared, session, spec, args, &mut locked)
        } else {
            None
        };
        report_misses_if_reading(spec, args, &mut locked);
        let mut ctx = Ctx {
            shared,
            session,
            stats,
            args,
            reply,
            l: &mut locked,
            exclusive: world_stopped || spec.needs_world(args),
            spec,
            in_transaction: world_stopped,
            started,
        };
        match moved_away {
            Some(err) => ctx.error(&err),
            None => (spec.handler)(&mut ctx),
        }
        dirty = locked.dirty();
        if locked.recording_effects() {
            let effects = locked.take_effects();
            match unit {
                // Only write commands replay as themselves (DEBUG POPULATE changes data
                // but is no write: Redis does not propagate it either).
                Some(unit) => {
                    unit_ops(effects, args, db, dirty > 0 && spec.has(flags::WRITE), unit)
                }
                None if session.in_script => {
                    // A script's effects reach the stream together when it ends, as one
                    // MULTI/EXEC (the world is stopped meanwhile: nothing comes between).
                    let replays = dirty > 0 && spec.has(flags::WRITE);
                    let mut ops = Vec::new();
                    unit_ops(effects, args, db, replays, &mut ops);
                    session.script_effects.extend(ops.into_iter().map(|o| {
                        let argv = (0..o.argv.len()).map(|i| o.argv.get(i).to_vec()).collect();
                        (o.db, argv)
                    }));
                }
                None => {
                    let replays = dirty > 0 && spec.has(flags::WRITE);
                    let wrap = !spec.has(flags::TOUCHES_ARBITRARY_KEYS);
                    // Before the locks go: the stream's order is the tables' order.
                    if let Some(p) = propagator {
                        if effects.ops.is_empty() && !effects.request_replaced {
                            // The common case, the request alone: no list to build.
                            if replays {
                                let argv = crate::propagate::Argv::Request(args);
                                p.append(&[Op { db, argv }], wrap);
                            }
                        } else {
                            let mut ops = Vec::new();
                            unit_ops(effects, args, db, replays, &mut ops);
                            if !ops.is_empty() {
                                p.append(&ops, wrap);
                            }
                        }
                    }
                }
            }
        }
        if !in_transaction {
            mark_applied(shared, session);
        }
    }
    check_one_reply(shared, session, spec, reply, before, mark);
    if monitored && crate::monitor::shown_after(spec) {
        shared.monitors.feed(session, args);
    }
    if shared.tracking.active() || is_flush(spec) {
        track(shared, session, spec, args, dirty, None);
    }
    if dirty > 0 {
        signal_written_keys(shared, spec, args, session.db);
        remember_replica_writes(shared, session, spec, args, session.db);
    }
    // A command that blocked is counted once, when it is served (Redis' calls=1).
    if session.blocked.is_some() && dirty == 0 {
        return;
    }
    let micros = account(
        shared,
        stats,
        idx,
        args,
        reply,
        before,
        started,
        clock.end(),
        dirty,
    );
    slow_log(shared, session, spec, args, micros);
}

/// Offers a command that ran to SLOWLOG: not EXEC (the commands it ran are), not a
/// command that blocked (it is logged when it is served), nor what a script or the AOF
/// runs.
fn slow_log(shared: &Shared, session: &Session, spec: &CommandSpec, args: &Args, micros: u64) {
    if session.blocked.is_some() || session.in_script || session.replaying || spec.name == "exec" {
        return;
    }
    shared.slowlog.observe(shared, session, args, micros);
}

/// On a writable replica, keys its own clients write may get deadlines its master
/// knows nothing of: they are remembered so that the replica expires them itself.
fn remember_replica_writes(
    shared: &Shared,
    session: &Session,
    spec: &CommandSpec,
    args: &Args,
    db: usize,
) {
    // PFCOUNT's cache refresh changes a value but sets no deadline: not a write here.
    if session.master_link || !spec.has(flags::WRITE) || !shared.is_replica.load(Ordering::Relaxed)
    {
        return;
    }
    let mut idx = Vec::new();
    spec.key_indexes(args, &mut idx);
    let mut keys = shared.replica_written_keys.lock();
    for i in idx {
        keys.insert((db, args.get(i).unwrap_or_default().to_vec()));
    }
}

/// Holds a handler to its contract: exactly one reply (none while it blocks, when it
/// turned replies off, or when it shut the server down; one per argument for SUBSCRIBE and its kin). A handler that
/// broke it would desynchronize a pipelining client for the rest of the connection, each
/// later reply read as the answer to the wrong request; in release builds too, its output
/// is replaced by one error and the connection is closed after it.
fn check_one_reply(
    shared: &Shared,
    session: &mut Session,
    spec: &CommandSpec,
    reply: &mut ReplyBuf,
    before: usize,
    mark: carmine_resp::ReplyMark,
) {
    let written = reply.values_since(mark);
    let kept = match written {
        Some(1) => true,
        // A blocked client is answered later; CLIENT REPLY OFF / SKIP answer nothing.
        Some(0) => {
            session.blocked.is_some()
                || session.replica_feed
                || session.master_link
                || matches!(session.reply_mode, ReplyMode::Off | ReplyMode::SkipNext)
                || shared.shutdown_requested.load(Ordering::Acquire)
        }
        Some(_) => spec.has(flags::REPLY_PER_ARG),
        None => false,
    };
    if kept {
        return;
    }
    reply.rewind(before, mark);
    reply.error(&format!(
        "ERR internal error: '{}' wrote {} replies; closing the connection",
        spec.name,
        written.map_or_else(|| "an unfinished".to_string(), |n| n.to_string())
    ));
    session.close_after_reply = true;
}

/// Counts a command that ran (INFO commandstats, LATENCY HISTOGRAM, the latency
/// monitor's `command` / `fast-command` events); returns how long it took (µs).
#[allow(clippy::too_many_arguments)]
fn account(
    shared: &Shared,
    stats: &ThreadStats,
    idx: usize,
    args: &Args,
    reply: &ReplyBuf,
    before: usize,
    started: Instant,
    ended: Instant,
    dirty: u64,
) -> u64 {
    let micros = micros_of(ended.saturating_duration_since(started));
    let spec = shared.commands.get(idx);
    let sub_stat = spec
        .filter(|s| !s.subcommands.is_empty() && args.len() > 1)
        .and_then(|s| {
            let sub = String::from_utf8_lossy(args.get(1).unwrap_or_default()).to_lowercase();
            s.subcommands.contains(&sub.as_str()).then_some(sub)
        })
        .map(|sub| {
            stats
                .subcommands
                .lock()
                .entry((idx, sub.into()))
                .or_default()
                .clone()
        });
    let c = sub_stat.as_deref().unwrap_or(&stats.commands[idx]);
    // This thread's counters: only it writes them (see `ThreadStats::bump`).
    ThreadStats::bump(&c.calls, 1);
    ThreadStats::bump(&c.usec, micros);
    if shared
        .config
        .tunables
        .latency_tracking
        .load(Ordering::Relaxed)
    {
        c.histogram.record(micros);
    }
    ThreadStats::bump(&stats.total_commands, 1);
    if dirty > 0 {
        ThreadStats::bump(&stats.dirty, dirty);
    }
    if reply.out.get(before) == Some(&b'-') {
        ThreadStats::add(&c.failed, 1);
    }
    let event = match spec {
        Some(s) if s.has(flags::FAST) => "fast-command",
        _ => "command",
    };
    shared.latency.observe(shared, event, micros / 1000);
    micros
}

/// EXEC: runs the queued commands atomically.
///
/// Normally the union of every queued command's tables (and the watched keys' tables) is
/// locked in order, the WATCH versions are checked under those locks, and the commands
/// run back to back. If any queued command walks whole databases, the transaction runs
/// with the world stopped instead, each command locking its own tables.
fn exec(
    shared: &Shared,
    session: &mut Session,
    stats: &ThreadStats,
    reply: &mut ReplyBuf,
    now_ms: u64,
) {
    let Some(multi) = session.multi.take() else {
        reply.error("ERR EXEC without MULTI");
        return;
    };
    session.info.multi.store(-1, Ordering::Relaxed);
    let MultiState { queued, aborted } = multi;
    if aborted {
        session.unwatch_all(&shared.keyspace);
        reply.error("EXECABORT Transaction discarded because of previous errors.");
        return;
    }
    // A queued SELECT stops the world too: under it each command locks its own tables in
    // the database it finds selected, where a plan made before the run would have to
    // know which SELECTs succeed (one refused in cluster mode left the plan on another
    // database than the run, and the first lookup broke the lock order: a panic that
    // took its event loop down).
    let stop_world = queued.iter().any(|(i, args)| {
        shared
            .commands
            .get(*i)
            .is_some_and(|s| s.has(flags::WALKS) || s.needs_world(args) || s.name == "select")
    });
    // EXEC runs while loading (Redis' CMD_LOADING); its queued commands were refused
    // when queued.
    let give_up = gives_up_when_busy(shared, session, false);
    if stop_world {
        let _world = match session.world_held {
            true => None,
            false => match shared.barrier.exclusive_unless(&give_up) {
                Some(world) => Some(world),
                None => return exec_abort_busy(shared, session, reply),
            },
        };
        if crate::cluster::slots_migrating(shared) {
            // The world is stopped: what the queue's keys are now, they stay until it ran.
            let mut locked = lock_queue_tables(shared, session, &queued, now_ms);
            if let Some(err) = exec_moved_away(shared, session, &queued, &mut locked) {
                reply.error(&err);
                return;
            }
        }
        let dirty = watched_dirty(shared, session);
        session.unwatch_all(&shared.keyspace);
        if dirty {
            reply.null_array();
            return;
        }
        reply.array(queued.len());
        let mut unit = Vec::new();
        for (idx, args) in &queued {
            let refused = shared
                .commands
                .get(*idx)
                .is_some_and(|spec| refused_at_exec(shared, session, spec, args, reply));
            if refused {
                continue;
            }
            run(
                shared,
                session,
                stats,
                *idx,
                args,
                reply,
                true,
                now_ms,
                Some(&mut unit),
                Instant::now(),
                &mut CommandClock::default(),
            );
        }
        // The world is still stopped: nothing else reached the stream meanwhile.
        if let (Some(p), false, false) = (shared.propagating(), unit.is_empty(), session.replaying)
        {
            p.append(&unit, true);
        }
        mark_applied(shared, session);
        return;
    }
    let _shared = match session.world_held {
        true => None,
        false => match shared.barrier.shared_unless(session.thread, &give_up) {
            Some(turn) => Some(turn),
            None => return exec_abort_busy(shared, session, reply),
        },
    };
    // No SELECT is queued here (see `stop_world`): every command runs in this database.
    let mut ids = queue_tables(shared, &queued, session.db);
    for w in &session.watched {
        ids.push(table_id(w.db, key_slot(&w.key)));
    }
    let mut locked = Locked::lock_at(&shared.keyspace, session.db, &mut ids, now_ms);
    if session.master_link {
        locked.never_expire();
    }
    let propagator = shared.propagating().filter(|_| !session.replaying);
    if propagator.is_some() {
        locked.record_effects();
    }
    if let Some(err) = exec_moved_away(shared, session, &queued, &mut locked) {
        reply.error(&err);
        return;
    }
    let mut unit = Vec::new();
    let dirty = watched_dirty(shared, session);
    session.unwatch_all(&shared.keyspace);
    if dirty {
        reply.null_array();
        return;
    }
    reply.array(queued.len());
    let mut written: Vec<(usize, &Args, usize)> = Vec::new();
    let mut invalidated: Vec<&[u8]> = Vec::new();
    for (idx, args) in &queued {
        let Some(spec) = shared.commands.get(*idx) else {
            continue;
        };
        if refused_at_exec(shared, session, spec, args, reply) {
            continue;
        }
        let started = Instant::now();
        let before = reply.len();
        let mark = reply.mark();
        let dirty_before = locked.dirty();
        let db = session.db;
        locked.select(db);
        report_misses_if_reading(spec, args, &mut locked);
        let mut ctx = Ctx {
            shared,
            session,
            stats,
            args,
            reply,
            l: &mut locked,
            exclusive: false,
            spec,
            in_transaction: true,
            started,
        };
        (spec.handler)(&mut ctx);
        check_one_reply(shared, session, spec, reply, before, mark);
        if shared.monitors.active() && !session.replaying && crate::monitor::shown_after(spec) {
            shared.monitors.feed(session, args);
        }
        let dirty = locked.dirty() - dirty_before;
        if shared.tracking.active() || is_flush(spec) {
            track(shared, session, spec, args, dirty, Some(&mut invalidated));
        }
        if locked.recording_effects() {
            let replays = dirty > 0 && spec.has(flags::WRITE);
            unit_ops(locked.take_effects(), args, db, replays, &mut unit);
        }
        let micros = account(
            shared,
            stats,
            *idx,
            args,
            reply,
            before,
            started,
            Instant::now(),
            dirty,
        );
        slow_log(shared, session, spec, args, micros);
        if dirty > 0 {
            written.push((*idx, args, session.db));
        }
    }
    if let (Some(p), false) = (propagator, unit.is_empty()) {
        p.append(&unit, true);
    }
    mark_applied(shared, session);
    drop(locked);
    if !invalidated.is_empty() {
        let writer = Some(session.id());
        shared
            .tracking
            .invalidate_bcast(shared, &invalidated, writer);
    }
    for (idx, args, db) in written {
        if let Some(spec) = shared.commands.get(idx) {
            signal_written_keys(shared, spec, args, db);
            remember_replica_writes(shared, session, spec, args, db);
        }
    }
}

/// FLUSHALL / FLUSHDB: the tracking table is emptied even with no client tracking now
/// (a client that turned tracking off leaves its keys in it, as in Redis).
fn is_flush(spec: &CommandSpec) -> bool {
    matches!(spec.name, "flushall" | "flushdb")
}

/// Client-side caching after a command: a tracking client's reads are remembered, and
/// the keys a write changed are invalidated for whoever read them (FLUSHALL/FLUSHDB:
/// everything).
fn track<'a>(
    shared: &Shared,
    session: &Session,
    spec: &CommandSpec,
    args: &'a Args,
    dirty: u64,
    batch: Option<&mut Vec<&'a [u8]>>,
) {
    let t = &shared.tracking;
    if session.in_script {
        // Inside a script only the fact that it read counts: Redis then tracks the
        // script's declared keys.
        if spec.has(flags::READONLY) {
            session.info.script_read.store(true, Ordering::Relaxed);
        }
    } else if crate::scripting::runs_script(spec) {
        // EVAL_RO and FCALL_RO too: flagged read-only, they track only if they read.
        if session.info.script_read.swap(false, Ordering::Relaxed) {
            t.remember(&session.info, spec, args);
        } else {
            t.command_done(&session.info, spec);
        }
    } else if spec.has(flags::READONLY) {
        t.remember(&session.info, spec, args);
    } else {
        t.command_done(&session.info, spec);
    }
    // A flush empties the whole tracking table and tells every tracking client, even
    // when there was nothing to delete (Redis' trackingInvalidateKeysOnFlush): keys read
    // while missing are tracked too.
    let flush_args_ok = match args.len() {
        1 => true,
        2 => {
            let mode = args.get(1).unwrap_or_default();
            mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC")
        }
        _ => false,
    };
    if is_flush(spec) && flush_args_ok {
        t.flush(shared);
        return;
    }
    if dirty > 0 {
        let mut idx = Vec::new();
        spec.key_indexes(args, &mut idx);
        let keys = idx.iter().map(|&i| args.get(i).unwrap_or_default());
        let keys: Vec<&[u8]> = keys.collect();
        match batch {
            // Readers are told at once; BCAST clients get a transaction's keys together
            // at EXEC's end.
            Some(b) => {
                t.invalidate_readers(shared, &keys, Some(session.id()));
                b.extend(keys);
            }
            None => t.invalidate(shared, &keys, Some(session.id())),
        }
    }
}

/// Wakes clients blocked on the keys a write command touched (nothing to do, and no
/// lock taken, when no client is blocked).
fn signal_written_keys(shared: &Shared, spec: &CommandSpec, args: &Args, db: usize) {
    if !shared.blocking.any() {
        return;
    }
    // A flush deletes keys it does not name: their stream group readers must learn it.
    match spec.name {
        "flushall" => (0..shared.keyspace.databases()).for_each(|d| shared.blocking.signal_db(d)),
        "flushdb" => shared.blocking.signal_db(db),
        _ => {}
    }
    let mut idx = Vec::new();
    spec.key_indexes(args, &mut idx);
    for i in idx {
        shared.blocking.signal(db, args.get(i).unwrap_or_default());
    }
}

/// The tables of every key EXEC's queue names, in `db` (see [`plan_tables`]).
fn queue_tables(shared: &Shared, queued: &[(usize, Args)], db: usize) -> Vec<u32> {
    let (mut idxs, mut ids) = (Vec::new(), Vec::new());
    for (idx, args) in queued {
        if let Some(spec) = shared.commands.get(*idx) {
            plan_tables(spec, args, db, &mut idxs, &mut ids);
        }
    }
    ids
}

/// The tables of every key EXEC's queue names, locked (recording effects when the stream
/// has readers), for [`exec_moved_away`] on EXEC's path that stops the world.
fn lock_queue_tables<'k>(
    shared: &'k Shared,
    session: &Session,
    queued: &[(usize, Args)],
    now_ms: u64,
) -> Locked<'k> {
    let mut ids = queue_tables(shared, queued, session.db);
    let mut locked = Locked::lock_at(&shared.keyspace, session.db, &mut ids, now_ms);
    if shared.propagating().is_some() && !session.replaying {
        locked.record_effects();
    }
    locked
}

/// Admission routed EXEC on its queue before EXEC held anything; MIGRATE may have moved
/// a queued key since. Decided again under `locked` (every queued key's table), as a
/// single command is: the redirect that discards the transaction instead of running it
/// (Redis' answer to an EXEC it cannot run here), with the DELs of keys the lookups
/// found expired propagated.
fn exec_moved_away(
    shared: &Shared,
    session: &mut Session,
    queued: &[(usize, Args)],
    locked: &mut Locked<'_>,
) -> Option<String> {
    let err = crate::cluster::recheck_migrating_queue(shared, session, queued, &mut |key| {
        locked.exists(key)
    })?;
    if locked.recording_effects() {
        let effects = locked.take_effects();
        if let (Some(p), false) = (shared.propagating(), effects.ops.is_empty()) {
            // Only the effects: the request is not replayed (`dirty` false).
            let (request, mut unit) = (Args::default(), Vec::new());
            unit_ops(effects, &request, session.db, false, &mut unit);
            p.append(&unit, true);
        }
    }
    session.unwatch_all(&shared.keyspace);
    Some(err)
}

/// True if a watched key changed (or its deadline passed) since WATCH.
fn watched_dirty(shared: &Shared, session: &Session) -> bool {
    let now = carmine_keyspace::now_ms();
    session.watched.iter().any(|w| {
        let version = shared
            .keyspace
            .db_ref(w.db)
            .map_or(0, |d| d.watch().version(&w.key));
        version != w.version || (w.expire_at != 0 && w.expire_at <= now)
    })
}
