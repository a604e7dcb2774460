//! Reading streams: XREAD and XREADGROUP, blocking or not.
//!
//! A blocked reader registers on its keys like BLPOP does, but as a reader that every
//! write of the key wakes (not only the first waiter: readers do not consume, and a
//! group reader that finds nothing new must not hold up the readers behind it). Its
//! command runs again with `$` replaced by the ID that was last when it blocked, so it
//! is served exactly what came after.

use carmine_keyspace::StreamId;
use carmine_resp::Args;

use crate::blocking::{block_reader, unblock};
use crate::stream::{parse_id, read_stream, stream_mut, INVALID_ID};
use crate::stream_groups::{propagate_effects, setid_effect, xclaim_effect};
use crate::table::{cmd, flags::*, CommandSpec, KeySpec};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "stream";
    vec![
        cmd("xread", -4, READONLY | BLOCKING, KeySpec::Custom(streams_keys), xread, g, "@read @stream @slow @blocking", "Returns messages from multiple streams with IDs greater than the ones requested. Blocks until a message is available otherwise."),
        cmd("xreadgroup", -7, WRITE | BLOCKING, KeySpec::Custom(streams_keys), xreadgroup, g, "@write @stream @slow @blocking", "Returns new or historical messages from a stream for a consumer in a group. Blocks until a message is available otherwise."),
    ]
}

/// Keys of `XREAD ... STREAMS key [key ...] id [id ...]`: the first half of what follows
/// STREAMS (none when the count is odd: the command then fails).
pub fn streams_keys(args: &Args, out: &mut Vec<usize>) {
    let Some(at) = (1..args.len()).find(|&i| {
        args.get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"STREAMS"))
    }) else {
        return;
    };
    let rest = args.len() - at - 1;
    if rest.is_multiple_of(2) {
        out.extend(at + 1..at + 1 + rest / 2);
    }
}

/// Entries served to a blocked reader with no COUNT, as Redis caps them.
const BLOCKED_DEFAULT_COUNT: usize = 1000;

struct ReadArgs {
    block: Option<Option<std::time::Duration>>,
    count: usize,
    streams_at: usize,
    streams: usize,
    group: Option<(Vec<u8>, Vec<u8>)>,
    noack: bool,
}

fn parse(ctx: &mut Ctx<'_, '_>, group_cmd: bool) -> Option<ReadArgs> {
    let mut a = ReadArgs {
        block: None,
        count: 0,
        streams_at: 0,
        streams: 0,
        group: None,
        noack: false,
    };
    let argc = ctx.args.len();
    let mut i = 1;
    while i < argc {
        let more = argc - i - 1;
        if ctx.is(i, "BLOCK") && more > 0 {
            if ctx.session.in_script {
                let msg = format!(
                    "ERR {} command is not allowed with BLOCK option from scripts",
                    String::from_utf8_lossy(ctx.arg(0))
                );
                ctx.error(&msg);
                return None;
            }
            i += 1;
            let ms = match carmine_resp::parse_i64(ctx.arg(i)) {
                Some(ms) => ms,
                None => {
                    ctx.error("ERR timeout is not an integer or out of range");
                    return None;
                }
            };
            if ms < 0 {
                ctx.error("ERR timeout is negative");
                return None;
            }
            if ms > i64::MAX - carmine_keyspace::now_ms() as i64 {
                ctx.error("ERR timeout is out of range");
                return None;
            }
            a.block = Some((ms > 0).then(|| std::time::Duration::from_millis(ms as u64)));
        } else if ctx.is(i, "COUNT") && more > 0 {
            i += 1;
            let n = ctx.int_arg(i)?;
            a.count = n.max(0) as usize;
        } else if ctx.is(i, "STREAMS") && more > 0 {
            a.streams_at = i + 1;
            let n = argc - a.streams_at;
            if !n.is_multiple_of(2) {
                ctx.error("ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.");
                return None;
            }
            a.streams = n / 2;
            break;
        } else if ctx.is(i, "GROUP") && more >= 2 {
            if !group_cmd {
                ctx.error("ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead.");
                return None;
            }
            a.group = Some((ctx.arg(i + 1).to_vec(), ctx.arg(i + 2).to_vec()));
            i += 2;
        } else if ctx.is(i, "NOACK") {
            if !group_cmd {
                ctx.error("ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead.");
                return None;
            }
            a.noack = true;
        } else {
            ctx.syntax_error();
            return None;
        }
        i += 1;
    }
    if a.streams_at == 0 {
        ctx.syntax_error();
        return None;
    }
    if group_cmd && a.group.is_none() {
        ctx.error("ERR Missing GROUP option for XREADGROUP");
        return None;
    }
    Some(a)
}

/// What a key's reader is after: entries above an ID, or (a group's `>`) new entries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    Id(StreamId),
    New,
}

fn xread(ctx: &mut Ctx<'_, '_>) {
    read(ctx, false);
}

fn xreadgroup(ctx: &mut Ctx<'_, '_>) {
    read(ctx, true);
}

fn read(ctx: &mut Ctx<'_, '_>, group_cmd: bool) {
    let retry = ctx.session.blocked.is_some();
    let Some(a) = parse(ctx, group_cmd) else {
        return unblock(ctx.shared, ctx.session);
    };
    let mut afters = Vec::with_capacity(a.streams);
    let mut dollar_at = Vec::new();
    for k in 0..a.streams {
        let key = ctx.arg(a.streams_at + k);
        let id_at = a.streams_at + a.streams + k;
        let s = match read_stream(ctx.l, key) {
            Err(()) => {
                if retry {
                    if group_cmd {
                        unblock(ctx.shared, ctx.session);
                        return ctx.error("UNBLOCKED the stream key no longer exists");
                    }
                    // A key that changed type is waited on, as Redis does.
                    afters.push(After::Id(StreamId::MAX));
                    continue;
                }
                return ctx.wrong_type();
            }
            Ok(s) => s.map(|s| {
                (
                    s.last_id,
                    a.group
                        .as_ref()
                        .is_some_and(|(g, _)| s.groups.contains_key(g)),
                )
            }),
        };
        if let Some((group, _)) = &a.group {
            if !s.is_some_and(|(_, has_group)| has_group) {
                unblock(ctx.shared, ctx.session);
                if retry {
                    if s.is_none() {
                        return ctx.error("UNBLOCKED the stream key no longer exists");
                    }
                    return ctx.error(
                        "NOGROUP the consumer group this client was blocked on no longer exists",
                    );
                }
                let msg = format!(
                    "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(group)
                );
                return ctx.error(&msg);
            }
        }
        let arg = ctx.arg(id_at);
        if arg == b"$" {
            if group_cmd {
                return ctx.error("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.");
            }
            afters.push(After::Id(s.map_or(StreamId::MIN, |(last, _)| last)));
            dollar_at.push(id_at);
        } else if arg == b">" {
            if !group_cmd {
                return ctx.error("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.");
            }
            afters.push(After::New);
        } else {
            match parse_id(arg, 0, true) {
                // Redis reads the largest ID as `>` (its own marker for it).
                Some(StreamId::MAX) if group_cmd => afters.push(After::New),
                Some(id) => afters.push(After::Id(id)),
                None => {
                    unblock(ctx.shared, ctx.session);
                    return ctx.error(INVALID_ID);
                }
            }
        }
    }
    let count = if retry && a.count == 0 {
        BLOCKED_DEFAULT_COUNT
    } else {
        a.count
    };
    // Serve what is there now, key by key.
    let mut served: Vec<(Vec<u8>, Vec<StreamEntryOrGone>)> = Vec::new();
    let mut effects = Vec::new();
    for (k, after) in afters.iter().enumerate() {
        let key = ctx.arg(a.streams_at + k);
        let result = match &a.group {
            None => {
                let After::Id(gt) = *after else { continue };
                match read_stream(ctx.l, key) {
                    Ok(Some(s)) if !s.is_empty() && s.last_live_id() > gt => {
                        gt.next().map(|start| {
                            s.range(start, StreamId::MAX, count, false)
                                .into_iter()
                                .map(|(id, f)| (id, Some(f)))
                                .collect()
                        })
                    }
                    _ => None,
                }
            }
            Some((group, consumer)) => serve_group(
                ctx,
                key,
                group,
                consumer,
                *after,
                count,
                a.noack,
                &mut effects,
            ),
        };
        if let Some(entries) = result {
            served.push((key.to_vec(), entries));
        }
    }
    if group_cmd {
        propagate_effects(ctx, effects);
    }
    if !served.is_empty() {
        // The write that woke this reader woke every reader of its keys already.
        unblock(ctx.shared, ctx.session);
        // RESP3: a map of key to entries; RESP2: an array of [key, entries].
        let resp3 = ctx.reply.resp3;
        if resp3 {
            ctx.reply.map(served.len());
        } else {
            ctx.reply.array(served.len());
        }
        for (key, entries) in served {
            if !resp3 {
                ctx.reply.array(2);
            }
            ctx.reply.bulk(&key);
            ctx.reply.array(entries.len());
            for (id, fields) in entries {
                match fields {
                    Some(f) => crate::stream::reply_entry(ctx.reply, id, &f),
                    None => {
                        ctx.reply.array(2);
                        crate::stream::reply_id(ctx.reply, id);
                        ctx.reply.null_array();
                    }
                }
            }
        }
        return;
    }
    let Some(timeout) = a.block else {
        unblock(ctx.shared, ctx.session);
        return ctx.reply.null_array();
    };
    let keys: Vec<Vec<u8>> = (0..a.streams)
        .map(|k| ctx.arg(a.streams_at + k).to_vec())
        .collect();
    // `$` means "after what is last now": the retry must not move it.
    let mut rewritten = None;
    if !dollar_at.is_empty() {
        let mut argv: Vec<Vec<u8>> = ctx.args.iter().map(<[u8]>::to_vec).collect();
        for &at in &dollar_at {
            if let After::Id(id) = afters[at - a.streams_at - a.streams] {
                argv[at] = id.to_bytes();
            }
        }
        rewritten = Some(Args::from_slices(&argv));
    }
    block_reader(ctx, keys, timeout, rewritten);
}

/// XREADGROUP on one key: a consumer's history (an ID) or new entries (`>`), with the
/// PEL and the group's position updated and their effects recorded for replicas. None
/// when there is nothing to serve (new entries only: a history read always answers).
#[allow(clippy::too_many_arguments)]
fn serve_group(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    group: &[u8],
    consumer: &[u8],
    after: After,
    count: usize,
    noack: bool,
    effects: &mut Vec<Vec<Vec<u8>>>,
) -> Option<Vec<StreamEntryOrGone>> {
    let now = crate::stream::clock_ms(ctx);
    let Ok(Some(s)) = stream_mut(ctx.l, key) else {
        return None;
    };
    let out = match after {
        After::Id(id) => s.read_group_history(group, consumer, id, count, now)?,
        After::New => s.read_group_new(group, consumer, count, noack, now)?,
    };
    if out.created_consumer && noack {
        effects.push(vec![
            b"XGROUP".to_vec(),
            b"CREATECONSUMER".to_vec(),
            key.to_vec(),
            group.to_vec(),
            consumer.to_vec(),
        ]);
    }
    // Each XCLAIM carries the group's position just after its entry, as Redis sends it.
    for (id, p) in &out.changed {
        effects.push(xclaim_effect(key, group, *id, *id, p));
    }
    // After a NOACK read the group's position goes with its read counter; an
    // acknowledged read's goes in its XCLAIMs' LASTID (position only), as Redis sends it.
    if let (true, Some((last, read))) = (noack && !out.served.is_empty(), out.moved_to) {
        effects.push(setid_effect(key, group, last, read));
    }
    ctx.l.changed_unwatched(1);
    if out.created_consumer {
        ctx.l.notify(
            carmine_keyspace::notify::STREAM,
            "xgroup-createconsumer",
            key,
        );
    }
    Some(out.served)
}

/// An entry served, or (None) the ID of a pending entry no longer in the stream.
type StreamEntryOrGone = (StreamId, Option<Vec<Vec<u8>>>);
