//! Stream consumer groups: XGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM.
//!
//! Their replication follows Redis: a claim or a delivery is propagated as an idempotent
//! `XCLAIM key group consumer 0 id TIME ms RETRYCOUNT n FORCE JUSTID LASTID id`, so a
//! replica ends with the same pending entries whatever it had before.

use std::sync::Arc;

use carmine_keyspace::notify;
use carmine_keyspace::stream::{ConsumerGroup, PendingEntry, ENTRIES_READ_UNKNOWN};
use carmine_keyspace::{StreamId, StreamValue};

use crate::stream::{
    bound_arg, id_arg, parse_id, read_stream, reply_entry, reply_id, stream_mut, INVALID_ID,
};
use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "stream";
    vec![
        CommandSpec {
            subcommands: &["create", "createconsumer", "delconsumer", "destroy", "setid", "help"],
            denyoom_when: Some(creates),
            ..cmd("xgroup", -2, WRITE, KeySpec::Custom(crate::keys::second_arg_key), xgroup, g, "@write @stream @slow", "A container for consumer groups commands.")
        },
        cmd("xack", -4, WRITE | FAST, keys(1, 1, 1), xack, g, "@write @stream @fast", "Returns the number of messages that were successfully acknowledged by the consumer group member of a stream."),
        cmd("xpending", -3, READONLY, keys(1, 1, 1), xpending, g, "@read @stream @slow", "Returns the information and entries from a stream consumer group's pending entries list."),
        cmd("xclaim", -6, WRITE | FAST, keys(1, 1, 1), xclaim, g, "@write @stream @fast", "Changes, or acquires, ownership of a message in a consumer group, as if the message was delivered a consumer group member."),
        cmd("xautoclaim", -6, WRITE | FAST, keys(1, 1, 1), xautoclaim, g, "@write @stream @fast", "Changes, or acquires, ownership of messages in a consumer group, as if the messages were delivered to as consumer group member."),
    ]
}

/// XGROUP CREATE and CREATECONSUMER grow the stream: Redis refuses them under OOM, and
/// lets DESTROY, SETID and DELCONSUMER run.
fn creates(args: &carmine_resp::Args) -> bool {
    let sub = args.get(1).unwrap_or_default();
    sub.eq_ignore_ascii_case(b"create") || sub.eq_ignore_ascii_case(b"createconsumer")
}

fn no_group(ctx: &mut Ctx<'_, '_>, key: &[u8], group: &[u8]) {
    let msg = format!(
        "NOGROUP No such key '{}' or consumer group '{}'",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    );
    ctx.error(&msg);
}

/// Redis' idempotent XCLAIM for a pending entry's state.
pub(crate) fn xclaim_effect(
    key: &[u8],
    group_name: &[u8],
    g_last: StreamId,
    id: StreamId,
    p: &PendingEntry,
) -> Vec<Vec<u8>> {
    vec![
        b"XCLAIM".to_vec(),
        key.to_vec(),
        group_name.to_vec(),
        p.consumer.to_vec(),
        b"0".to_vec(),
        id.to_bytes(),
        b"TIME".to_vec(),
        p.delivery_time.to_string().into_bytes(),
        b"RETRYCOUNT".to_vec(),
        p.delivery_count.to_string().into_bytes(),
        b"FORCE".to_vec(),
        b"JUSTID".to_vec(),
        b"LASTID".to_vec(),
        g_last.to_bytes(),
    ]
}

/// `XGROUP SETID key group id ENTRIESREAD n`: a group's position for replicas.
pub(crate) fn setid_effect(
    key: &[u8],
    group_name: &[u8],
    last_id: StreamId,
    entries_read: i64,
) -> Vec<Vec<u8>> {
    vec![
        b"XGROUP".to_vec(),
        b"SETID".to_vec(),
        key.to_vec(),
        group_name.to_vec(),
        last_id.to_bytes(),
        b"ENTRIESREAD".to_vec(),
        entries_read.to_string().into_bytes(),
    ]
}

const XGROUP_HELP: &[&str] = &[
    "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "HELP",
    "    Print this help.",
];

fn xgroup(ctx: &mut Ctx<'_, '_>) {
    let argc = ctx.args.len();
    let subs = [
        ("help", 2),
        ("create", -5),
        ("setid", -5),
        ("destroy", 4),
        ("createconsumer", 5),
        ("delconsumer", 5),
    ];
    match crate::stream::subcommand(ctx, &subs) {
        None => return,
        Some(0) => return crate::connection::help_reply(ctx, XGROUP_HELP),
        Some(_) => {}
    }
    let create = ctx.is(1, "CREATE");
    let setid = ctx.is(1, "SETID");
    let mut mkstream = false;
    let mut entries_read = ENTRIES_READ_UNKNOWN;
    if argc >= 4 {
        let mut i = 5;
        while i < argc {
            if create && ctx.is(i, "MKSTREAM") {
                mkstream = true;
                i += 1;
            } else if (create || setid) && ctx.is(i, "ENTRIESREAD") && i + 1 < argc {
                let Some(n) = ctx.int_arg(i + 1) else {
                    return;
                };
                if n < 0 && n != ENTRIES_READ_UNKNOWN {
                    return ctx.error("ERR value for ENTRIESREAD must be positive or -1");
                }
                entries_read = n;
                i += 2;
            } else {
                return ctx.unknown_subcommand();
            }
        }
    }
    if argc < 4 {
        return ctx.unknown_subcommand();
    }
    let key = ctx.arg(2);
    let group = ctx.arg(3).to_vec();
    let (exists, has_group, last) = match read_stream(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => (false, false, StreamId::MIN),
        Ok(Some(s)) => (true, s.groups.contains_key(&group), s.last_id),
    };
    if !mkstream {
        if !exists {
            return ctx.error("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.");
        }
        if !has_group && (setid || ctx.is(1, "CREATECONSUMER") || ctx.is(1, "DELCONSUMER")) {
            let msg = format!(
                "NOGROUP No such consumer group '{}' for key name '{}'",
                String::from_utf8_lossy(&group),
                String::from_utf8_lossy(key)
            );
            return ctx.error(&msg);
        }
    }
    let now = crate::stream::clock_ms(ctx);
    if create && (5..=8).contains(&argc) {
        let id = if ctx.arg(4) == b"$" {
            last
        } else {
            match id_arg(ctx, 4) {
                Some(id) => id,
                None => return,
            }
        };
        if has_group {
            return ctx.error("BUSYGROUP Consumer Group name already exists");
        }
        if let Ok(Some(s)) = crate::typed::write::<StreamValue>(ctx.l, key, true) {
            s.groups.insert(group, ConsumerGroup::new(id, entries_read));
        }
        ctx.notify(notify::STREAM, "xgroup-create", key);
        ctx.reply.ok();
    } else if setid && (argc == 5 || argc == 7) {
        let id = if ctx.arg(4) == b"$" {
            last
        } else {
            match parse_id(ctx.arg(4), 0, false) {
                Some(id) => id,
                None => return ctx.error(INVALID_ID),
            }
        };
        if let Ok(Some(s)) = crate::typed::write::<StreamValue>(ctx.l, key, false) {
            if let Some(g) = s.groups.get_mut(&group) {
                g.last_id = id;
                g.entries_read = entries_read;
            }
        }
        ctx.notify(notify::STREAM, "xgroup-setid", key);
        ctx.reply.ok();
    } else if ctx.is(1, "DESTROY") && argc == 4 {
        if !has_group {
            return ctx.reply.int(0);
        }
        if let Ok(Some(s)) = crate::typed::write::<StreamValue>(ctx.l, key, false) {
            s.groups.remove(&group);
        }
        ctx.notify(notify::STREAM, "xgroup-destroy", key);
        ctx.reply.int(1);
    } else if ctx.is(1, "CREATECONSUMER") && argc == 5 {
        let consumer = ctx.arg(4).to_vec();
        let created = match stream_mut(ctx.l, key) {
            Ok(Some(s)) => s
                .groups
                .get_mut(&group)
                .is_some_and(|g| g.consumer(&consumer, now).1),
            _ => false,
        };
        if created {
            ctx.l.changed_unwatched(1);
            ctx.notify(notify::STREAM, "xgroup-createconsumer", key);
        } else {
            ctx.l.propagate_nothing();
        }
        ctx.reply.int(i64::from(created));
    } else if ctx.is(1, "DELCONSUMER") && argc == 5 {
        let consumer = ctx.arg(4).to_vec();
        let pending = match stream_mut(ctx.l, key) {
            Ok(Some(s)) => s
                .groups
                .get_mut(&group)
                .and_then(|g| g.delete_consumer(&consumer)),
            _ => None,
        };
        match pending {
            Some(n) => {
                ctx.l.changed_unwatched(1);
                ctx.notify(notify::STREAM, "xgroup-delconsumer", key);
                ctx.reply.int(n as i64);
            }
            None => {
                ctx.l.propagate_nothing();
                ctx.reply.int(0);
            }
        }
    } else {
        ctx.unknown_subcommand();
    }
}

fn xack(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    let group = ctx.arg(2).to_vec();
    match read_stream(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(Some(s)) if s.groups.contains_key(&group) => {}
        _ => return ctx.reply.int(0),
    }
    let mut ids = Vec::with_capacity(ctx.args.len() - 3);
    for i in 3..ctx.args.len() {
        match id_arg(ctx, i) {
            Some(id) => ids.push(id),
            None => return,
        }
    }
    let acked = match stream_mut(ctx.l, key) {
        Ok(Some(s)) => s
            .groups
            .get_mut(&group)
            .map_or(0, |g| ids.iter().filter(|id| g.ack(**id)).count()),
        _ => 0,
    };
    ctx.l.changed_unwatched(acked as u64);
    ctx.reply.int(acked as i64);
}

fn xpending(ctx: &mut Ctx<'_, '_>) {
    let argc = ctx.args.len();
    if argc != 3 && !(6..=9).contains(&argc) {
        return ctx.syntax_error();
    }
    let mut range = None;
    let mut consumer: Option<Vec<u8>> = None;
    let mut min_idle = 0i64;
    if argc >= 6 {
        let mut at = 3;
        if ctx.is(3, "IDLE") {
            let Some(n) = ctx.int_arg(4) else {
                return;
            };
            min_idle = n;
            if argc < 8 {
                return ctx.syntax_error();
            }
            at += 2;
        }
        let Some(count) = ctx.int_arg(at + 2) else {
            return;
        };
        let Some(start) = bound_arg(ctx, at, true) else {
            return;
        };
        let Some(end) = bound_arg(ctx, at + 1, false) else {
            return;
        };
        if at + 3 < argc {
            consumer = Some(ctx.arg(at + 3).to_vec());
        }
        range = Some((start, end, count.max(0) as usize));
    }
    let key = ctx.arg(1);
    let group = ctx.arg(2).to_vec();
    let now = crate::stream::clock_ms(ctx);
    let s = match read_stream(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(s) => s,
    };
    let Some(g) = s.and_then(|s| s.groups.get(&group)) else {
        return no_group(ctx, key, &group);
    };
    let Some((start, end, count)) = range else {
        ctx.reply.array(4);
        ctx.reply.int(g.pel.len() as i64);
        let (Some(first), Some(last)) = (g.pel.keys().next(), g.pel.keys().next_back()) else {
            ctx.reply.null();
            ctx.reply.null();
            ctx.reply.null_array();
            return;
        };
        reply_id(ctx.reply, *first);
        reply_id(ctx.reply, *last);
        let owners: Vec<_> = g
            .consumers
            .iter()
            .filter(|(_, c)| !c.pending.is_empty())
            .collect();
        ctx.reply.array(owners.len());
        for (name, c) in owners {
            ctx.reply.array(2);
            ctx.reply.bulk(name);
            ctx.reply.bulk(c.pending.len().to_string().as_bytes());
        }
        return;
    };
    let ids: Box<dyn Iterator<Item = &StreamId>> = match &consumer {
        Some(name) => match g.consumers.get(&name[..]) {
            Some(c) => Box::new(c.pending.range(start..=end.max(start))),
            None => return ctx.reply.array(0),
        },
        None => Box::new(g.pel.range(start..=end.max(start)).map(|(id, _)| id)),
    };
    let rows: Vec<(StreamId, &PendingEntry)> = ids
        .filter(|id| **id <= end)
        .filter_map(|id| g.pel.get(id).map(|p| (*id, p)))
        .filter(|(_, p)| min_idle == 0 || idle_ms(now, p) >= min_idle)
        .take(count)
        .collect();
    ctx.reply.array(rows.len());
    for (id, p) in rows {
        ctx.reply.array(4);
        reply_id(ctx.reply, id);
        ctx.reply.bulk(&p.consumer);
        ctx.reply.int(idle_ms(now, p).max(0));
        ctx.reply.int(p.delivery_count as i64);
    }
}

/// Milliseconds since a pending entry's last delivery (negative for one in the future).
fn idle_ms(now: u64, p: &PendingEntry) -> i64 {
    (now as i64).saturating_sub(i64::try_from(p.delivery_time).unwrap_or(i64::MAX))
}

/// Parses an integer option of XCLAIM/XAUTOCLAIM, replying `msg` when it is not one.
fn int_or(ctx: &mut Ctx<'_, '_>, i: usize, msg: &str) -> Option<i64> {
    let v = carmine_resp::parse_i64(ctx.arg(i));
    if v.is_none() {
        ctx.error(&format!("ERR {msg}"));
    }
    v
}

fn xclaim(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    let group = ctx.arg(2).to_vec();
    match read_stream(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(Some(s)) if s.groups.contains_key(&group) => {}
        _ => return no_group(ctx, key, &group),
    }
    let Some(min_idle) = int_or(ctx, 4, "Invalid min-idle-time argument for XCLAIM") else {
        return;
    };
    let min_idle = min_idle.max(0) as u64;
    let argc = ctx.args.len();
    let mut ids = Vec::new();
    let mut j = 5;
    while j < argc {
        match parse_id(ctx.arg(j), 0, true) {
            Some(id) => ids.push(id),
            None => break,
        }
        j += 1;
    }
    let now = crate::stream::clock_ms(ctx);
    let (mut force, mut justid) = (false, false);
    let mut retry: Option<u64> = None;
    let mut delivery: Option<i64> = None;
    let mut last_id = StreamId::MIN;
    while j < argc {
        let more = j + 1 < argc;
        if ctx.is(j, "FORCE") {
            force = true;
        } else if ctx.is(j, "JUSTID") {
            justid = true;
        } else if ctx.is(j, "IDLE") && more {
            j += 1;
            let Some(n) = int_or(ctx, j, "Invalid IDLE option argument for XCLAIM") else {
                return;
            };
            delivery = Some((now as i64).saturating_sub(n));
        } else if ctx.is(j, "TIME") && more {
            j += 1;
            let Some(n) = int_or(ctx, j, "Invalid TIME option argument for XCLAIM") else {
                return;
            };
            delivery = Some(n);
        } else if ctx.is(j, "RETRYCOUNT") && more {
            j += 1;
            let Some(n) = int_or(ctx, j, "Invalid RETRYCOUNT option argument for XCLAIM") else {
                return;
            };
            // Negative: as if not given (Redis counts the delivery then).
            retry = u64::try_from(n).ok();
        } else if ctx.is(j, "LASTID") && more {
            j += 1;
            let Some(id) = id_arg(ctx, j) else {
                return;
            };
            last_id = id;
        } else {
            let msg = format!(
                "ERR Unrecognized XCLAIM option '{}'",
                String::from_utf8_lossy(ctx.arg(j))
            );
            return ctx.error(&msg);
        }
        j += 1;
    }
    let delivery = match delivery {
        Some(t) if t >= 0 && t as u64 <= now => t as u64,
        _ => now,
    };
    let name = ctx.arg(3).to_vec();
    let Ok(Some(s)) = stream_mut(ctx.l, key) else {
        return;
    };
    let mut effects: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut claimed: Vec<(StreamId, Option<Vec<Vec<u8>>>)> = Vec::new();
    let mut created = false;
    let Some(mut g) = s.groups.remove(&group) else {
        return;
    };
    let mut propagate_last_id = false;
    if last_id > g.last_id {
        // Redis moves the position and keeps the read counter, which then no longer
        // matches it (a replica applying an acknowledged XREADGROUP's XCLAIMs reports
        // another lag than its master). Here the counter follows the position: known
        // when no entry was deleted since, else unknown (and estimated when asked).
        g.last_id = last_id;
        g.entries_read = s
            .entries_before_and_at(last_id)
            .map_or(ENTRIES_READ_UNKNOWN, |n| n as i64);
        propagate_last_id = true;
    }
    let mut consumer: Option<Arc<[u8]>> = None;
    for id in ids {
        let fields = s.get(id);
        if fields.is_none() {
            if let Some(p) = g.pel.get(&id) {
                effects.push(xclaim_effect(key, &group, g.last_id, id, p));
                propagate_last_id = false;
                g.ack(id);
            }
            continue;
        }
        // FORCE creates the pending entry; a new one has no owner to check idleness of.
        let forced = force && !g.pel.contains_key(&id);
        if forced {
            g.pel.insert(
                id,
                PendingEntry {
                    consumer: Arc::from(&b""[..]),
                    delivery_time: now,
                    delivery_count: 0,
                },
            );
        }
        let Some(p) = g.pel.get(&id) else {
            continue;
        };
        if !forced && min_idle > 0 && now.saturating_sub(p.delivery_time) < min_idle {
            continue;
        }
        let c = match &consumer {
            Some(c) => c.clone(),
            None => {
                let (c, new) = g.seen(&name, now);
                created |= new;
                consumer = Some(c.clone());
                c
            }
        };
        g.claim(id, &c);
        if let Some(p) = g.pel.get_mut(&id) {
            p.delivery_time = delivery;
            match retry {
                Some(n) => p.delivery_count = n,
                None if !justid => p.delivery_count = p.delivery_count.saturating_add(1),
                None => {}
            }
            effects.push(xclaim_effect(key, &group, g.last_id, id, p));
        }
        propagate_last_id = false;
        claimed.push((id, (!justid).then_some(fields).flatten()));
    }
    if propagate_last_id {
        effects.push(setid_effect(key, &group, g.last_id, g.entries_read));
    }
    s.groups.insert(group, g);
    let changed = effects.len() as u64 + u64::from(created);
    ctx.l.changed_unwatched(changed);
    if created {
        ctx.notify(notify::STREAM, "xgroup-createconsumer", key);
    }
    propagate_effects(ctx, effects);
    ctx.reply.array(claimed.len());
    for (id, fields) in claimed {
        match fields {
            Some(f) => reply_entry(ctx.reply, id, &f),
            None => reply_id(ctx.reply, id),
        }
    }
}

/// Propagates `effects` in place of the request (nothing when there are none).
pub(crate) fn propagate_effects(ctx: &mut Ctx<'_, '_>, effects: Vec<Vec<Vec<u8>>>) {
    let db = ctx.session.db;
    for e in effects {
        ctx.l.also_propagate(db, e);
    }
    ctx.l.propagate_nothing();
}

fn xautoclaim(ctx: &mut Ctx<'_, '_>) {
    let Some(min_idle) = int_or(ctx, 4, "Invalid min-idle-time argument for XAUTOCLAIM") else {
        return;
    };
    let min_idle = min_idle.max(0) as u64;
    let Some(start) = bound_arg(ctx, 5, true) else {
        return;
    };
    let mut count = 100usize;
    let mut justid = false;
    let mut j = 6;
    let argc = ctx.args.len();
    while j < argc {
        if ctx.is(j, "COUNT") && j + 1 < argc {
            let max = i64::MAX / 16;
            match carmine_resp::parse_i64(ctx.arg(j + 1)) {
                Some(n) if (1..=max).contains(&n) => count = n as usize,
                _ => return ctx.error("ERR COUNT must be > 0"),
            }
            j += 1;
        } else if ctx.is(j, "JUSTID") {
            justid = true;
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }
    let key = ctx.arg(1);
    let group = ctx.arg(2).to_vec();
    match read_stream(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(Some(s)) if s.groups.contains_key(&group) => {}
        _ => return no_group(ctx, key, &group),
    }
    let name = ctx.arg(3).to_vec();
    let now = crate::stream::clock_ms(ctx);
    let Ok(Some(s)) = stream_mut(ctx.l, key) else {
        return;
    };
    let Some(out) = s.autoclaim(&group, &name, start, min_idle, count, justid, now) else {
        return;
    };
    let last = s.groups.get(&group).map_or(StreamId::MIN, |g| g.last_id);
    let effects: Vec<Vec<Vec<u8>>> = out
        .dropped
        .iter()
        .chain(&out.changed)
        .map(|(id, p)| xclaim_effect(key, &group, last, *id, p))
        .collect();
    ctx.l
        .changed_unwatched(effects.len() as u64 + u64::from(out.created_consumer));
    if out.created_consumer {
        ctx.notify(notify::STREAM, "xgroup-createconsumer", key);
    }
    propagate_effects(ctx, effects);
    ctx.reply.array(3);
    reply_id(ctx.reply, out.next);
    ctx.reply.array(out.served.len());
    for (id, fields) in out.served {
        match fields {
            Some(f) => reply_entry(ctx.reply, id, &f),
            None => reply_id(ctx.reply, id),
        }
    }
    ctx.reply.array(out.dropped.len());
    for (id, _) in out.dropped {
        reply_id(ctx.reply, id);
    }
}
