//! Sets: SADD, SREM, SISMEMBER, SMISMEMBER, SMEMBERS, SCARD, SPOP, SRANDMEMBER, SMOVE,
//! SINTER, SINTERCARD, SINTERSTORE, SUNION, SUNIONSTORE, SDIFF, SDIFFSTORE, SSCAN.

use carmine_keyspace::notify;
use std::collections::HashSet;

use carmine_keyspace::{Entry, SetValue};

use crate::hash::random_picks;
use crate::list::numkeys_at_1;
use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::typed::{
    drop_if_empty, read, remove_members, reply_len, scan_command, write, Collection,
};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "set";
    let wf = "@write @set @fast";
    let ws = "@write @set @slow";
    let rf = "@read @set @fast";
    let rs = "@read @set @slow";
    vec![
        cmd(
            "sadd",
            -3,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            sadd,
            g,
            wf,
            "Adds one or more members to a set.",
        ),
        cmd(
            "srem",
            -3,
            WRITE | FAST,
            keys(1, 1, 1),
            srem,
            g,
            wf,
            "Removes one or more members from a set.",
        ),
        cmd(
            "sismember",
            3,
            READONLY | FAST,
            keys(1, 1, 1),
            sismember,
            g,
            rf,
            "Determines whether a member belongs to a set.",
        ),
        cmd(
            "smismember",
            -3,
            READONLY | FAST,
            keys(1, 1, 1),
            smismember,
            g,
            rf,
            "Determines whether multiple members belong to a set.",
        ),
        cmd(
            "smembers",
            2,
            READONLY,
            keys(1, 1, 1),
            smembers,
            g,
            rs,
            "Returns all members of a set.",
        ),
        cmd(
            "scard",
            2,
            READONLY | FAST,
            keys(1, 1, 1),
            scard,
            g,
            rf,
            "Returns the number of members in a set.",
        ),
        cmd(
            "spop",
            -2,
            WRITE | FAST,
            keys(1, 1, 1),
            spop,
            g,
            wf,
            "Returns one or more random members from a set after removing them.",
        ),
        cmd(
            "srandmember",
            -2,
            READONLY,
            keys(1, 1, 1),
            srandmember,
            g,
            rs,
            "Get one or multiple random members from a set.",
        ),
        cmd(
            "smove",
            4,
            WRITE | FAST,
            keys(1, 2, 1),
            smove,
            g,
            wf,
            "Moves a member from one set to another.",
        ),
        cmd(
            "sinter",
            -2,
            READONLY,
            keys(1, -1, 1),
            sinter,
            g,
            rs,
            "Returns the intersect of multiple sets.",
        ),
        cmd(
            "sintercard",
            -3,
            READONLY,
            KeySpec::Custom(numkeys_at_1),
            sintercard,
            g,
            rs,
            "Returns the number of members of the intersect of multiple sets.",
        ),
        cmd(
            "sinterstore",
            -3,
            WRITE | DENYOOM,
            keys(1, -1, 1),
            sinterstore,
            g,
            ws,
            "Stores the intersect of multiple sets in a key.",
        ),
        cmd(
            "sunion",
            -2,
            READONLY,
            keys(1, -1, 1),
            sunion,
            g,
            rs,
            "Returns the union of multiple sets.",
        ),
        cmd(
            "sunionstore",
            -3,
            WRITE | DENYOOM,
            keys(1, -1, 1),
            sunionstore,
            g,
            ws,
            "Stores the union of multiple sets in a key.",
        ),
        cmd(
            "sdiff",
            -2,
            READONLY,
            keys(1, -1, 1),
            sdiff,
            g,
            rs,
            "Returns the difference of multiple sets.",
        ),
        cmd(
            "sdiffstore",
            -3,
            WRITE | DENYOOM,
            keys(1, -1, 1),
            sdiffstore,
            g,
            ws,
            "Stores the difference of multiple sets in a key.",
        ),
        cmd(
            "sscan",
            -3,
            READONLY,
            keys(1, 1, 1),
            sscan,
            g,
            rs,
            "Iterates over members of a set.",
        ),
    ]
}

fn sadd(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    let limits = ctx.shared.keyspace.limits();
    match write::<SetValue>(ctx.l, key, true) {
        Ok(Some(s)) => {
            let n = (2..ctx.args.len())
                .filter(|&i| s.insert(ctx.args.get(i).unwrap_or_default(), limits))
                .count();
            if n > 0 {
                ctx.notify(notify::SET, "sadd", key);
            }
            ctx.reply.int(n as i64);
        }
        _ => ctx.wrong_type(),
    }
}

fn srem(ctx: &mut Ctx<'_, '_>) {
    remove_members(ctx, notify::SET, "srem", SetValue::remove);
}

fn sismember(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read::<SetValue>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(s) => ctx.reply.int(i64::from(
            s.is_some_and(|s| s.contains(ctx.args.get(2).unwrap_or_default())),
        )),
    }
}

fn smismember(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read::<SetValue>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(s) => {
            ctx.reply.array(ctx.args.len() - 2);
            for i in 2..ctx.args.len() {
                let yes = s.is_some_and(|s| s.contains(ctx.args.get(i).unwrap_or_default()));
                ctx.reply.int(i64::from(yes));
            }
        }
    }
}

fn reply_members(ctx: &mut Ctx<'_, '_>, members: &[Vec<u8>]) {
    ctx.reply.set(members.len());
    for m in members {
        ctx.reply.bulk(m);
    }
}

fn smembers(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read::<SetValue>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(s) => {
            let m = s.map(SetValue::members).unwrap_or_default();
            reply_members(ctx, &m);
        }
    }
}

fn scard(ctx: &mut Ctx<'_, '_>) {
    reply_len::<SetValue>(ctx);
}

/// SPOP's optional count (at least 0).
fn count_arg(ctx: &mut Ctx<'_, '_>) -> Result<Option<i64>, ()> {
    match ctx.args.len() {
        2 => Ok(None),
        3 => ctx.positive_arg(2).map(|n| Some(n as i64)).ok_or(()),
        _ => {
            ctx.syntax_error();
            Err(())
        }
    }
}

fn spop(ctx: &mut Ctx<'_, '_>) {
    let Ok(count) = count_arg(ctx) else { return };
    let key = ctx.arg(1);
    let mut took_all = false;
    let popped: Option<Vec<Vec<u8>>> = match write::<SetValue>(ctx.l, key, false) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => None,
        Ok(Some(s)) => {
            let n = count.map_or(1, |c| c as usize).min(s.len());
            took_all = count.is_some() && n == s.len();
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                if let Some(m) = s.random() {
                    s.remove(&m);
                    out.push(m);
                }
            }
            Some(out)
        }
    };
    if let Some(v) = popped.as_ref().filter(|v| !v.is_empty()) {
        ctx.notify(notify::SET, "spop", key);
        // Random picks replay as what was picked: the whole set as DEL, else SREMs of
        // at most 1024 members, as Redis 7.0 propagates them.
        if took_all {
            ctx.propagate_as(&[b"DEL", key]);
        } else if ctx.l.recording_effects() {
            let db = ctx.l.db();
            for batch in v.chunks(1024) {
                let mut argv = vec![b"SREM".to_vec(), key.to_vec()];
                argv.extend(batch.iter().cloned());
                ctx.l.also_propagate(db, argv);
            }
            ctx.l.propagate_nothing();
        }
    }
    drop_if_empty::<SetValue>(ctx.l, key);
    match (count, popped) {
        (None, Some(v)) => match v.first() {
            Some(m) => ctx.reply.bulk(m),
            None => ctx.reply.null(),
        },
        (None, None) => ctx.reply.null(),
        (Some(_), v) => reply_members(ctx, &v.unwrap_or_default()),
    }
}

fn srandmember(ctx: &mut Ctx<'_, '_>) {
    let count = match ctx.args.len() {
        2 => None,
        3 => match ctx.range_arg(2, -i64::MAX, i64::MAX) {
            Some(n) => Some(n),
            None => return,
        },
        _ => return ctx.syntax_error(),
    };
    let key = ctx.arg(1);
    let members = match read::<SetValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(s) => s.map(SetValue::members).unwrap_or_default(),
    };
    match random_picks(members.len(), count) {
        None => match members.get(fastrand::usize(..members.len().max(1))) {
            Some(m) => ctx.reply.bulk(m),
            None => ctx.reply.null(),
        },
        Some(picks) => {
            ctx.reply.array(picks.len());
            for i in picks {
                ctx.reply.bulk(&members[i]);
            }
        }
    }
}

fn smove(ctx: &mut Ctx<'_, '_>) {
    let (src, dst, m) = (ctx.arg(1), ctx.arg(2), ctx.arg(3));
    // Redis' order: a missing source answers 0 before any type check.
    let is_member = match read::<SetValue>(ctx.l, src) {
        Ok(None) => return ctx.reply.int(0),
        Err(()) => return ctx.wrong_type(),
        Ok(Some(s)) => s.contains(m),
    };
    let dst_has = match read::<SetValue>(ctx.l, dst) {
        Err(()) => return ctx.wrong_type(),
        Ok(d) => d.is_some_and(|d| d.contains(m)),
    };
    if src == dst || !is_member {
        return ctx.reply.int(i64::from(is_member));
    }
    if let Ok(Some(s)) = write::<SetValue>(ctx.l, src, false) {
        s.remove(m);
    }
    ctx.notify(notify::SET, "srem", src);
    drop_if_empty::<SetValue>(ctx.l, src);
    // A destination that already has the member is not touched (a WATCH on it holds).
    if !dst_has {
        let limits = ctx.shared.keyspace.limits();
        if let Ok(Some(d)) = write::<SetValue>(ctx.l, dst, true) {
            d.insert(m, limits);
            ctx.notify(notify::SET, "sadd", dst);
        }
    }
    ctx.reply.int(1);
}

/// The members of the sets at `keys`, or Err after replying WRONGTYPE. Missing keys are
/// empty sets.
fn load_sets(ctx: &mut Ctx<'_, '_>, keys: &[usize]) -> Result<Vec<HashSet<Vec<u8>>>, ()> {
    let mut out = Vec::with_capacity(keys.len());
    for &i in keys {
        let key = ctx.arg(i);
        match read::<SetValue>(ctx.l, key) {
            Err(()) => {
                ctx.wrong_type();
                return Err(());
            }
            Ok(s) => out.push(
                s.map(|s| s.members().into_iter().collect())
                    .unwrap_or_default(),
            ),
        }
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Op {
    Inter,
    Union,
    Diff,
}

fn combine(sets: Vec<HashSet<Vec<u8>>>, op: Op) -> Vec<Vec<u8>> {
    let mut it = sets.into_iter();
    let Some(mut acc) = it.next() else {
        return Vec::new();
    };
    for s in it {
        match op {
            Op::Inter => acc.retain(|m| s.contains(m)),
            Op::Union => acc.extend(s),
            Op::Diff => acc.retain(|m| !s.contains(m)),
        }
    }
    acc.into_iter().collect()
}

fn algebra(ctx: &mut Ctx<'_, '_>, op: Op) {
    let keys: Vec<usize> = (1..ctx.args.len()).collect();
    if let Ok(sets) = load_sets(ctx, &keys) {
        let result = combine(sets, op);
        reply_members(ctx, &result);
    }
}

fn algebra_store(ctx: &mut Ctx<'_, '_>, op: Op) {
    let keys: Vec<usize> = (2..ctx.args.len()).collect();
    let Ok(sets) = load_sets(ctx, &keys) else {
        return;
    };
    let result = combine(sets, op);
    let dst = ctx.arg(1);
    let n = result.len();
    if result.is_empty() {
        if ctx.l.remove(dst).is_some() {
            ctx.notify(notify::GENERIC, "del", dst);
        }
    } else {
        let limits = ctx.shared.keyspace.limits();
        let mut s = SetValue::default();
        for m in &result {
            s.insert(m, limits);
        }
        ctx.l.insert(dst, Entry::new(s.wrap()));
        let event = match op {
            Op::Inter => "sinterstore",
            Op::Union => "sunionstore",
            Op::Diff => "sdiffstore",
        };
        ctx.notify(notify::SET, event, dst);
    }
    ctx.reply.int(n as i64);
}

fn sinter(ctx: &mut Ctx<'_, '_>) {
    algebra(ctx, Op::Inter);
}

fn sunion(ctx: &mut Ctx<'_, '_>) {
    algebra(ctx, Op::Union);
}

fn sdiff(ctx: &mut Ctx<'_, '_>) {
    algebra(ctx, Op::Diff);
}

fn sinterstore(ctx: &mut Ctx<'_, '_>) {
    algebra_store(ctx, Op::Inter);
}

fn sunionstore(ctx: &mut Ctx<'_, '_>) {
    algebra_store(ctx, Op::Union);
}

fn sdiffstore(ctx: &mut Ctx<'_, '_>) {
    algebra_store(ctx, Op::Diff);
}

fn sintercard(ctx: &mut Ctx<'_, '_>) {
    let Some(numkeys) = crate::list::positive_numkeys(ctx, 1) else {
        return;
    };
    if 2 + numkeys > ctx.args.len() {
        return ctx.error("ERR Number of keys can't be greater than number of args");
    }
    let mut limit = 0usize;
    let rest = 2 + numkeys;
    if ctx.args.len() == rest + 2 && ctx.is(rest, "LIMIT") {
        match carmine_resp::parse_i64(ctx.arg(rest + 1)) {
            Some(n) if n >= 0 => limit = n as usize,
            _ => return ctx.error("ERR LIMIT can't be negative"),
        }
    } else if ctx.args.len() != rest {
        return ctx.syntax_error();
    }
    let keys: Vec<usize> = (2..rest).collect();
    if let Ok(sets) = load_sets(ctx, &keys) {
        let n = combine(sets, Op::Inter).len();
        let n = if limit > 0 { n.min(limit) } else { n };
        ctx.reply.int(n as i64);
    }
}

fn sscan(ctx: &mut Ctx<'_, '_>) {
    scan_command::<SetValue>(ctx, false, |s, a| s.scan(a.cursor, a.count));
}
