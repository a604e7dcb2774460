//! Streams, the entries: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM, XSETID, XINFO; and
//! the ID parsing and entry replies the group and read commands share.

use carmine_keyspace::notify;
use carmine_keyspace::stream::{StreamEntry, Trim};
use carmine_keyspace::{Entry, Locked, StreamId, StreamValue, Value};
use carmine_resp::ReplyBuf;

use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "stream";
    vec![
        cmd(
            "xadd",
            -5,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            xadd,
            g,
            "@write @stream @fast",
            "Appends a new message to a stream. Creates the key if it doesn't exist.",
        ),
        cmd(
            "xlen",
            2,
            READONLY | FAST,
            keys(1, 1, 1),
            xlen,
            g,
            "@read @stream @fast",
            "Return the number of messages in a stream.",
        ),
        cmd(
            "xrange",
            -4,
            READONLY,
            keys(1, 1, 1),
            xrange,
            g,
            "@read @stream @slow",
            "Returns the messages from a stream within a range of IDs.",
        ),
        cmd(
            "xrevrange",
            -4,
            READONLY,
            keys(1, 1, 1),
            xrevrange,
            g,
            "@read @stream @slow",
            "Returns the messages from a stream within a range of IDs in reverse order.",
        ),
        cmd(
            "xdel",
            -3,
            WRITE | FAST,
            keys(1, 1, 1),
            xdel,
            g,
            "@write @stream @fast",
            "Returns the number of messages after removing them from a stream.",
        ),
        cmd(
            "xtrim",
            -4,
            WRITE,
            keys(1, 1, 1),
            xtrim,
            g,
            "@write @stream @slow",
            "Deletes messages from the beginning of a stream.",
        ),
        cmd(
            "xsetid",
            -3,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            xsetid,
            g,
            "@write @stream @fast",
            "An internal command for replicating stream values.",
        ),
        CommandSpec {
            subcommands: &["consumers", "groups", "stream", "help"],
            ..cmd(
                "xinfo",
                -2,
                READONLY,
                KeySpec::Custom(crate::keys::second_arg_key),
                xinfo,
                g,
                "@read @stream @slow",
                "A container for stream introspection commands.",
            )
        },
    ]
}

pub(crate) const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

/// Redis' stream ID argument: `ms-seq`, `ms` (the sequence then `missing_seq`), and unless
/// `strict`, `-` and `+`. None for anything else.
pub(crate) fn parse_id(arg: &[u8], missing_seq: u64, strict: bool) -> Option<StreamId> {
    match arg {
        b"-" if !strict => Some(StreamId::MIN),
        b"+" if !strict => Some(StreamId::MAX),
        _ if arg.len() > 127 => None,
        _ => StreamId::parse(arg, missing_seq),
    }
}

/// The time stream commands stamp IDs, deliveries and consumers with. The AOF replays
/// at time 0 (so that nothing expires while it loads); a delivery time or seen-time
/// must still be the wall clock's, as Redis' replay keeps them.
pub(crate) fn clock_ms(ctx: &Ctx<'_, '_>) -> u64 {
    match ctx.l.now() {
        0 => carmine_keyspace::now_ms(),
        now => now,
    }
}

/// Parses argument `i` as a strict ID, replying Redis' error when it is not one.
pub(crate) fn id_arg(ctx: &mut Ctx<'_, '_>, i: usize) -> Option<StreamId> {
    let id = parse_id(ctx.arg(i), 0, true);
    if id.is_none() {
        ctx.error(INVALID_ID);
    }
    id
}

/// A range bound (XRANGE, XPENDING, XAUTOCLAIM): `(` makes it exclusive. Start bounds
/// fill a missing sequence with 0, end bounds with the largest.
pub(crate) fn bound_arg(ctx: &mut Ctx<'_, '_>, i: usize, start: bool) -> Option<StreamId> {
    let arg = ctx.arg(i).to_vec();
    let missing = if start { 0 } else { u64::MAX };
    let exclusive = arg.len() > 1 && arg[0] == b'(';
    let id = if exclusive {
        parse_id(&arg[1..], missing, true)
    } else {
        parse_id(&arg, missing, false)
    };
    let Some(id) = id else {
        ctx.error(INVALID_ID);
        return None;
    };
    if !exclusive {
        return Some(id);
    }
    let stepped = if start { id.next() } else { id.prev() };
    if stepped.is_none() {
        ctx.error(if start {
            "ERR invalid start ID for the interval"
        } else {
            "ERR invalid end ID for the interval"
        });
    }
    stepped
}

/// The stream at `key` for reading: Err for WRONGTYPE.
pub(crate) fn read_stream<'l>(
    l: &'l mut Locked<'_>,
    key: &[u8],
) -> Result<Option<&'l StreamValue>, ()> {
    crate::typed::read::<StreamValue>(l, key)
}

/// The stream at `key` for writing, without counting a change: the caller reports what
/// it changed with `Locked::touched`, or `Locked::changed_unwatched` for what Redis does
/// not report to WATCH (a command that changes nothing must not touch a WATCHed key, nor
/// be propagated).
pub(crate) fn stream_mut<'l>(
    l: &'l mut Locked<'_>,
    key: &[u8],
) -> Result<Option<&'l mut StreamValue>, ()> {
    match l.get(key) {
        None => return Ok(None),
        Some(e) if !matches!(e.value, Value::Stream(_)) => return Err(()),
        Some(_) => {}
    }
    let db = l.db();
    match l.table_in(db, key).peek_mut(key) {
        Some(Entry {
            value: Value::Stream(s),
            ..
        }) => Ok(Some(s)),
        _ => Ok(None),
    }
}

pub(crate) fn reply_id(reply: &mut ReplyBuf, id: StreamId) {
    let mut b = itoa::Buffer::new();
    let ms = b.format(id.ms).len();
    let mut text = [0u8; 41];
    text[..ms].copy_from_slice(b.format(id.ms).as_bytes());
    text[ms] = b'-';
    let seq = b.format(id.seq);
    text[ms + 1..ms + 1 + seq.len()].copy_from_slice(seq.as_bytes());
    reply.bulk(&text[..ms + 1 + seq.len()]);
}

pub(crate) fn reply_entry(reply: &mut ReplyBuf, id: StreamId, fields: &[Vec<u8>]) {
    reply.array(2);
    reply_id(reply, id);
    reply.array(fields.len());
    for f in fields {
        reply.bulk(f);
    }
}

pub(crate) fn reply_entries(reply: &mut ReplyBuf, entries: &[StreamEntry]) {
    reply.array(entries.len());
    for (id, fields) in entries {
        reply_entry(reply, *id, fields);
    }
}

/// Largest total size of an entry's fields and values (Redis' listpack limit).
const MAX_ENTRY_BYTES: usize = 1 << 30;

/// XADD's and XTRIM's options.
struct AddTrimArgs {
    trim: Option<Trim>,
    approx: bool,
    limit: u64,
    /// Index of the MAXLEN/MINID value (rewritten for replicas after an approximate trim).
    trim_value_at: usize,
    no_mkstream: bool,
    /// XADD: the ID given (None for `*`) and whether its sequence was given.
    id: Option<(StreamId, bool)>,
    /// XADD: where the ID argument is.
    id_at: usize,
}

/// Parses `[MAXLEN|MINID [=|~] threshold [LIMIT count]] [NOMKSTREAM] <id>` (XADD) or the
/// trimming options (XTRIM) in Redis' order of checks, replying the error if any.
fn parse_add_trim(ctx: &mut Ctx<'_, '_>, xadd: bool) -> Option<AddTrimArgs> {
    let mut a = AddTrimArgs {
        trim: None,
        approx: false,
        limit: 0,
        trim_value_at: 0,
        no_mkstream: false,
        id: None,
        id_at: 0,
    };
    let argc = ctx.args.len();
    let mut limit_given = false;
    let mut i = 2;
    while i < argc {
        let more = argc - 1 - i;
        if xadd && ctx.arg(i) == b"*" {
            break;
        }
        let maxlen = ctx.is(i, "MAXLEN");
        if (maxlen || ctx.is(i, "MINID")) && more > 0 {
            if a.trim.is_some() {
                ctx.error("ERR syntax error, MAXLEN and MINID options at the same time are not compatible");
                return None;
            }
            a.approx = false;
            let next = ctx.arg(i + 1);
            if more >= 2 && next == b"~" {
                a.approx = true;
                i += 1;
            } else if more >= 2 && next == b"=" {
                i += 1;
            }
            if maxlen {
                let n = ctx.int_arg(i + 1)?;
                if n < 0 {
                    ctx.error("ERR The MAXLEN argument must be >= 0.");
                    return None;
                }
                a.trim = Some(Trim::MaxLen(n as u64));
            } else {
                a.trim = Some(Trim::MinId(id_arg(ctx, i + 1)?));
            }
            i += 1;
            a.trim_value_at = i;
        } else if ctx.is(i, "LIMIT") && more > 0 {
            let n = ctx.int_arg(i + 1)?;
            if n < 0 {
                ctx.error("ERR The LIMIT argument must be >= 0.");
                return None;
            }
            a.limit = n as u64;
            limit_given = true;
            i += 1;
        } else if xadd && ctx.is(i, "NOMKSTREAM") {
            a.no_mkstream = true;
        } else if xadd {
            let arg = ctx.arg(i);
            let (id, seq_given) = match arg.strip_suffix(b"-*") {
                Some(ms) if !ms.is_empty() && !ms.contains(&b'-') => (
                    parse_id(ms, 0, true).map(|id| StreamId::new(id.ms, 0)),
                    false,
                ),
                _ => (parse_id(arg, 0, true), true),
            };
            let Some(id) = id else {
                ctx.error(INVALID_ID);
                return None;
            };
            a.id = Some((id, seq_given));
            break;
        } else {
            ctx.syntax_error();
            return None;
        }
        i += 1;
    }
    a.id_at = i;
    if a.limit > 0 && a.trim.is_none() {
        ctx.error("ERR syntax error, LIMIT cannot be used without specifying a trimming strategy");
        return None;
    }
    if !xadd && a.trim.is_none() {
        ctx.error("ERR syntax error, XTRIM must be called with a trimming strategy");
        return None;
    }
    if ctx.session.master_link {
        // A master's or the AOF's trim was rewritten to be exact: never limit it.
        a.limit = 0;
    } else if limit_given {
        if !a.approx {
            ctx.error("ERR syntax error, LIMIT cannot be used without the special ~ option");
            return None;
        }
    } else if a.approx {
        let per_node = ctx
            .shared
            .keyspace
            .limits()
            .stream_node_max_entries
            .load(std::sync::atomic::Ordering::Relaxed) as u64;
        a.limit = per_node.saturating_mul(100).clamp(1, 1_000_000);
        if per_node == 0 {
            a.limit = 10_000;
        }
    } else {
        a.limit = 0;
    }
    Some(a)
}

/// After an approximate trim, the arguments a replica needs to trim exactly the same:
/// `= <length>` for MAXLEN, `= <first id>` for MINID.
fn exact_trim_args(argv: &mut [Vec<u8>], a: &AddTrimArgs, s: &StreamValue) {
    if a.trim_value_at == 0 || a.trim_value_at >= argv.len() {
        return;
    }
    argv[a.trim_value_at - 1] = b"=".to_vec();
    argv[a.trim_value_at] = match a.trim {
        Some(Trim::MaxLen(_)) => s.len().to_string().into_bytes(),
        // An emptied stream: Redis' edge ID of nothing, which trims everything.
        _ => s
            .first_entry()
            .map_or(StreamId::MAX, |(id, _)| id)
            .to_bytes(),
    };
}

fn xadd(ctx: &mut Ctx<'_, '_>) {
    let Some(a) = parse_add_trim(ctx, true) else {
        return;
    };
    let field_at = a.id_at + 1;
    let argc = ctx.args.len();
    if argc < field_at + 2 || (argc - field_at) % 2 == 1 {
        return ctx.error("ERR wrong number of arguments for 'xadd' command");
    }
    if let Some((id, true)) = a.id {
        if id.is_zero() {
            return ctx.error("ERR The ID specified in XADD must be greater than 0-0");
        }
    }
    let key = ctx.arg(1);
    let now = crate::stream::clock_ms(ctx);
    // One lookup for the last ID and the ID `*` would get.
    let (exists, auto) = match read_stream(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(Some(s)) => (Some(s.last_id), s.next_id(now)),
        Ok(None) => (None, Some(StreamId::new(now, 0))),
    };
    let last = match exists {
        None if a.no_mkstream => return ctx.reply.null(),
        None => StreamId::MIN,
        Some(last) => last,
    };
    if last == StreamId::MAX {
        return ctx
            .error("ERR The stream has exhausted the last possible ID, unable to add more items");
    }
    let id = match a.id {
        Some((id, true)) => Some(id),
        Some((id, false)) if id.ms == last.ms => last.next().filter(|n| n.ms == id.ms),
        Some((id, false)) => Some(id),
        None => auto,
    };
    let Some(id) = id.filter(|id| *id > last) else {
        return ctx.error(
            "ERR The ID specified in XADD is equal or smaller than the target stream top item",
        );
    };
    let size: usize = (field_at..argc).map(|i| ctx.arg(i).len()).sum();
    if size > MAX_ENTRY_BYTES {
        return ctx.error("ERR Elements are too large to be stored");
    }
    let limits = ctx.shared.keyspace.limits().stream_nodes();
    let args = ctx.args;
    let fields: Vec<&[u8]> = (field_at..argc)
        .map(|i| args.get(i).unwrap_or_default())
        .collect();
    let recording = ctx.l.recording_effects();
    if exists.is_none() {
        ctx.l.insert(key, Entry::new(Value::Stream(Box::default())));
    }
    let Some(Entry {
        value: Value::Stream(s),
        ..
    }) = ctx.l.get_mut(key)
    else {
        return ctx.wrong_type();
    };
    s.append(id, &fields, limits);
    let trimmed = match a.trim {
        Some(how) => s.trim(how, a.approx, a.limit),
        None => 0,
    };
    let mut argv: Vec<Vec<u8>> = Vec::new();
    let rewrite_id = !matches!(a.id, Some((_, true)));
    if (a.approx || rewrite_id) && recording {
        argv = ctx.args.iter().map(<[u8]>::to_vec).collect();
        if a.approx {
            exact_trim_args(&mut argv, &a, s);
        }
        if rewrite_id {
            argv[a.id_at] = id.to_bytes();
        }
    }
    reply_id(ctx.reply, id);
    ctx.notify(notify::STREAM, "xadd", key);
    if trimmed > 0 {
        ctx.notify(notify::STREAM, "xtrim", key);
    }
    if !argv.is_empty() {
        let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        ctx.propagate_as(&refs);
    }
}

fn xlen(ctx: &mut Ctx<'_, '_>) {
    crate::typed::reply_len::<StreamValue>(ctx);
}

fn range(ctx: &mut Ctx<'_, '_>, rev: bool) {
    let (start_at, end_at) = if rev { (3, 2) } else { (2, 3) };
    let Some(start) = bound_arg(ctx, start_at, true) else {
        return;
    };
    let Some(end) = bound_arg(ctx, end_at, false) else {
        return;
    };
    let mut count: Option<usize> = None;
    let mut i = 4;
    while i < ctx.args.len() {
        if ctx.is(i, "COUNT") && i + 1 < ctx.args.len() {
            let n = match ctx.int_arg(i + 1) {
                Some(n) => n,
                None => return,
            };
            count = Some(n.max(0) as usize);
            i += 2;
        } else {
            return ctx.syntax_error();
        }
    }
    let key = ctx.arg(1);
    match read_stream(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(None) => ctx.reply.array(0),
        Ok(Some(_)) if count == Some(0) => ctx.reply.null_array(),
        Ok(Some(s)) => {
            let entries = s.range(start, end, count.unwrap_or(0), rev);
            reply_entries(ctx.reply, &entries);
        }
    }
}

fn xrange(ctx: &mut Ctx<'_, '_>) {
    range(ctx, false);
}

fn xrevrange(ctx: &mut Ctx<'_, '_>) {
    range(ctx, true);
}

fn xdel(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read_stream(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => return ctx.reply.int(0),
        Ok(Some(_)) => {}
    }
    let mut ids = Vec::with_capacity(ctx.args.len() - 2);
    for i in 2..ctx.args.len() {
        ids.push(match id_arg(ctx, i) {
            Some(id) => id,
            None => return,
        });
    }
    let deleted = match stream_mut(ctx.l, key) {
        Ok(Some(s)) => ids.iter().filter(|id| s.delete(**id)).count(),
        _ => 0,
    };
    if deleted > 0 {
        ctx.l.touched(key, deleted as u64);
        ctx.notify(notify::STREAM, "xdel", key);
    }
    ctx.reply.int(deleted as i64);
}

fn xtrim(ctx: &mut Ctx<'_, '_>) {
    let Some(a) = parse_add_trim(ctx, false) else {
        return;
    };
    let key = ctx.arg(1);
    let (deleted, argv) = match stream_mut(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => return ctx.reply.int(0),
        Ok(Some(s)) => {
            let deleted = a.trim.map_or(0, |how| s.trim(how, a.approx, a.limit));
            let mut argv: Vec<Vec<u8>> = Vec::new();
            if deleted > 0 && a.approx {
                argv = ctx.args.iter().map(<[u8]>::to_vec).collect();
                exact_trim_args(&mut argv, &a, s);
            }
            (deleted, argv)
        }
    };
    if deleted > 0 {
        ctx.l.touched(key, deleted);
        ctx.notify(notify::STREAM, "xtrim", key);
        if !argv.is_empty() {
            let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
            ctx.propagate_as(&refs);
        }
    }
    ctx.reply.int(deleted as i64);
}

fn xsetid(ctx: &mut Ctx<'_, '_>) {
    let Some(id) = id_arg(ctx, 2) else {
        return;
    };
    let mut entries_added: Option<u64> = None;
    let mut max_deleted = StreamId::MIN;
    let mut i = 3;
    while i < ctx.args.len() {
        let more = i + 1 < ctx.args.len();
        if ctx.is(i, "ENTRIESADDED") && more {
            let n = match ctx.int_arg(i + 1) {
                Some(n) => n,
                None => return,
            };
            if n < 0 {
                return ctx.error("ERR entries_added must be positive");
            }
            entries_added = Some(n as u64);
        } else if ctx.is(i, "MAXDELETEDID") && more {
            let Some(m) = id_arg(ctx, i + 1) else {
                return;
            };
            if id < m {
                return ctx.error("ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id");
            }
            max_deleted = m;
        } else {
            return ctx.syntax_error();
        }
        i += 2;
    }
    let key = ctx.arg(1);
    let s = match stream_mut(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => return ctx.error("ERR no such key"),
        Ok(Some(s)) => s,
    };
    if !s.is_empty() {
        if id < s.last_live_id() {
            return ctx.error(
                "ERR The ID specified in XSETID is smaller than the target stream top item",
            );
        }
        if entries_added.is_some_and(|n| (s.len() as u64) > n) {
            return ctx.error(
                "ERR The entries_added specified in XSETID is smaller than the target stream length",
            );
        }
    }
    s.last_id = id;
    if let Some(n) = entries_added {
        s.entries_added = n;
    }
    if !max_deleted.is_zero() {
        s.max_deleted_id = max_deleted;
    }
    ctx.l.changed_unwatched(1);
    ctx.notify(notify::STREAM, "xsetid", key);
    ctx.reply.ok();
}

const XINFO_HELP: &[&str] = &[
    "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
    "HELP",
    "    Print this help.",
];

/// Checks a container command's subcommand (argument 1) against `subs` (name, arity as
/// Redis declares it), replying Redis' error when it is unknown or has the wrong number
/// of arguments. Returns the subcommand's index in `subs`.
pub(crate) fn subcommand(ctx: &mut Ctx<'_, '_>, subs: &[(&str, i32)]) -> Option<usize> {
    let argc = ctx.args.len() as i32;
    let container = ctx.name();
    let Some(i) = subs.iter().position(|(name, _)| ctx.is(1, name)) else {
        let msg = format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            crate::printable(ctx.arg(1), 128),
            container.to_ascii_uppercase()
        );
        ctx.error(&msg);
        return None;
    };
    let (name, arity) = subs[i];
    if (arity >= 0 && argc != arity) || (arity < 0 && argc < -arity) {
        let msg = format!("ERR wrong number of arguments for '{container}|{name}' command");
        ctx.error(&msg);
        return None;
    }
    Some(i)
}

fn xinfo(ctx: &mut Ctx<'_, '_>) {
    let subs = [("help", 2), ("consumers", 4), ("groups", 3), ("stream", -3)];
    match subcommand(ctx, &subs) {
        None => return,
        Some(0) => return crate::connection::help_reply(ctx, XINFO_HELP),
        Some(_) => {}
    }
    let key = ctx.arg(2);
    let now = crate::stream::clock_ms(ctx);
    let consumers = ctx.is(1, "CONSUMERS") && ctx.args.len() == 4;
    let groups = ctx.is(1, "GROUPS") && ctx.args.len() == 3;
    let stream = ctx.is(1, "STREAM");
    let group_name = ctx.arg(3).to_vec();
    let s = match read_stream(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => return ctx.error("ERR no such key"),
        Ok(Some(s)) => s,
    };
    if consumers {
        let Some(g) = s.groups.get(&group_name) else {
            let msg = format!(
                "NOGROUP No such consumer group '{}' for key name '{}'",
                String::from_utf8_lossy(&group_name),
                String::from_utf8_lossy(key)
            );
            return ctx.reply.error(&msg);
        };
        ctx.reply.array(g.consumers.len());
        for (name, c) in &g.consumers {
            ctx.reply.map(3);
            ctx.reply.bulk(b"name");
            ctx.reply.bulk(name);
            ctx.reply.bulk(b"pending");
            ctx.reply.int(c.pending.len() as i64);
            ctx.reply.bulk(b"idle");
            ctx.reply.int(now.saturating_sub(c.seen_time) as i64);
        }
    } else if groups {
        ctx.reply.array(s.groups.len());
        for (name, g) in &s.groups {
            ctx.reply.map(6);
            ctx.reply.bulk(b"name");
            ctx.reply.bulk(name);
            ctx.reply.bulk(b"consumers");
            ctx.reply.int(g.consumers.len() as i64);
            ctx.reply.bulk(b"pending");
            ctx.reply.int(g.pel.len() as i64);
            ctx.reply.bulk(b"last-delivered-id");
            reply_id(ctx.reply, g.last_id);
            reply_read_counters(ctx.reply, s, g);
        }
    } else if stream {
        xinfo_stream(ctx, key);
    } else {
        ctx.unknown_subcommand();
    }
}

/// A group's `entries-read` and `lag` fields (null when unknown).
fn reply_read_counters(
    reply: &mut ReplyBuf,
    s: &StreamValue,
    g: &carmine_keyspace::stream::ConsumerGroup,
) {
    reply.bulk(b"entries-read");
    if g.entries_read >= 0 {
        reply.int(g.entries_read);
    } else {
        reply.null();
    }
    reply.bulk(b"lag");
    match s.lag(g) {
        Some(lag) => reply.int(lag),
        None => reply.null(),
    }
}

fn xinfo_stream(ctx: &mut Ctx<'_, '_>, key: &[u8]) {
    let optc = ctx.args.len() - 3;
    let mut full = false;
    let mut count = 10usize;
    if optc > 0 {
        if (optc != 1 && optc != 3) || !ctx.is(3, "FULL") || (optc == 3 && !ctx.is(4, "COUNT")) {
            return ctx.unknown_subcommand();
        }
        full = true;
        if optc == 3 {
            let Some(n) = ctx.int_arg(5) else {
                return;
            };
            count = if n < 0 { 10 } else { n as usize };
        }
    }
    let Ok(Some(s)) = read_stream(ctx.l, key) else {
        return ctx.wrong_type();
    };
    let r = &mut *ctx.reply;
    r.map(if full { 9 } else { 10 });
    r.bulk(b"length");
    r.int(s.len() as i64);
    r.bulk(b"radix-tree-keys");
    r.int(s.node_count() as i64);
    r.bulk(b"radix-tree-nodes");
    // Redis counts its radix tree's inner nodes; a B-tree of the same keys has about
    // one node per key plus the path to it.
    r.int(if s.node_count() == 0 {
        1
    } else {
        s.node_count() as i64 * 2
    });
    r.bulk(b"last-generated-id");
    reply_id(r, s.last_id);
    r.bulk(b"max-deleted-entry-id");
    reply_id(r, s.max_deleted_id);
    r.bulk(b"entries-added");
    r.int(s.entries_added as i64);
    r.bulk(b"recorded-first-entry-id");
    reply_id(r, s.first_id);
    if !full {
        r.bulk(b"groups");
        r.int(s.groups.len() as i64);
        r.bulk(b"first-entry");
        match s.first_entry() {
            Some((id, f)) => reply_entry(r, id, &f),
            None => r.null(),
        }
        r.bulk(b"last-entry");
        match s.last_entry() {
            Some((id, f)) => reply_entry(r, id, &f),
            None => r.null(),
        }
        return;
    }
    r.bulk(b"entries");
    reply_entries(r, &s.range(StreamId::MIN, StreamId::MAX, count, false));
    r.bulk(b"groups");
    r.array(s.groups.len());
    let limit = |n: usize| if count == 0 { n } else { n.min(count) };
    for (name, g) in &s.groups {
        r.map(7);
        r.bulk(b"name");
        r.bulk(name);
        r.bulk(b"last-delivered-id");
        reply_id(r, g.last_id);
        reply_read_counters(r, s, g);
        r.bulk(b"pel-count");
        r.int(g.pel.len() as i64);
        r.bulk(b"pending");
        r.array(limit(g.pel.len()));
        for (id, p) in g.pel.iter().take(limit(g.pel.len())) {
            r.array(4);
            reply_id(r, *id);
            r.bulk(&p.consumer);
            r.int(p.delivery_time as i64);
            r.int(p.delivery_count as i64);
        }
        r.bulk(b"consumers");
        r.array(g.consumers.len());
        for (cname, c) in &g.consumers {
            r.map(4);
            r.bulk(b"name");
            r.bulk(cname);
            r.bulk(b"seen-time");
            r.int(c.seen_time as i64);
            r.bulk(b"pel-count");
            r.int(c.pending.len() as i64);
            r.bulk(b"pending");
            r.array(limit(c.pending.len()));
            for id in c.pending.iter().take(limit(c.pending.len())) {
                r.array(3);
                reply_id(r, *id);
                let p = g.pel.get(id);
                r.int(p.map_or(0, |p| p.delivery_time as i64));
                r.int(p.map_or(0, |p| p.delivery_count as i64));
            }
        }
    }
}
