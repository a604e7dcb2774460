//! Lists: LPUSH, RPUSH, LPUSHX, RPUSHX, LPOP, RPOP, LLEN, LRANGE, LINDEX, LSET, LINSERT,
//! LREM, LTRIM, LPOS, LMOVE, RPOPLPUSH, LMPOP. (The blocking forms are not built yet.)

use carmine_keyspace::notify;
use carmine_keyspace::ListValue;
use carmine_resp::Args;

use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::typed::{clamp_range, drop_if_empty, read, reply_len, write};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "list";
    let wf = "@write @list @fast";
    let ws = "@write @list @slow";
    let rs = "@read @list @slow";
    vec![
        cmd(
            "lpush",
            -3,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            lpush,
            g,
            wf,
            "Prepends one or more elements to a list.",
        ),
        cmd(
            "rpush",
            -3,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            rpush,
            g,
            wf,
            "Appends one or more elements to a list.",
        ),
        cmd(
            "lpushx",
            -3,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            lpushx,
            g,
            wf,
            "Prepends one or more elements to a list only when the list exists.",
        ),
        cmd(
            "rpushx",
            -3,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            rpushx,
            g,
            wf,
            "Appends an element to a list only when the list exists.",
        ),
        cmd(
            "lpop",
            -2,
            WRITE | FAST,
            keys(1, 1, 1),
            lpop,
            g,
            wf,
            "Returns the first elements in a list after removing it.",
        ),
        cmd(
            "rpop",
            -2,
            WRITE | FAST,
            keys(1, 1, 1),
            rpop,
            g,
            wf,
            "Returns and removes the last elements of a list.",
        ),
        cmd(
            "llen",
            2,
            READONLY | FAST,
            keys(1, 1, 1),
            llen,
            g,
            "@read @list @fast",
            "Returns the length of a list.",
        ),
        cmd(
            "lrange",
            4,
            READONLY,
            keys(1, 1, 1),
            lrange,
            g,
            rs,
            "Returns a range of elements from a list.",
        ),
        cmd(
            "lindex",
            3,
            READONLY,
            keys(1, 1, 1),
            lindex,
            g,
            rs,
            "Returns an element from a list by its index.",
        ),
        cmd(
            "lset",
            4,
            WRITE | DENYOOM,
            keys(1, 1, 1),
            lset,
            g,
            ws,
            "Sets the value of an element in a list by its index.",
        ),
        cmd(
            "linsert",
            5,
            WRITE | DENYOOM,
            keys(1, 1, 1),
            linsert,
            g,
            ws,
            "Inserts an element before or after another element in a list.",
        ),
        cmd(
            "lrem",
            4,
            WRITE,
            keys(1, 1, 1),
            lrem,
            g,
            ws,
            "Removes elements from a list.",
        ),
        cmd(
            "ltrim",
            4,
            WRITE,
            keys(1, 1, 1),
            ltrim,
            g,
            ws,
            "Removes elements from both ends a list.",
        ),
        cmd(
            "lpos",
            -3,
            READONLY,
            keys(1, 1, 1),
            lpos,
            g,
            rs,
            "Returns the index of matching elements in a list.",
        ),
        cmd(
            "lmove",
            5,
            WRITE | DENYOOM,
            keys(1, 2, 1),
            lmove,
            g,
            ws,
            "Returns an element after popping it from one list and pushing it to another.",
        ),
        cmd(
            "rpoplpush",
            3,
            WRITE | DENYOOM,
            keys(1, 2, 1),
            rpoplpush,
            g,
            ws,
            "Returns the last element of a list after removing and pushing it to another list.",
        ),
        cmd(
            "lmpop",
            -4,
            WRITE,
            KeySpec::Custom(numkeys_at_1),
            lmpop,
            g,
            ws,
            "Returns multiple elements from a list after removing them.",
        ),
    ]
}

/// Key positions of `CMD numkeys key [key ...] ...` (LMPOP, SINTERCARD, ZUNION ...).
/// The `numkeys` argument of LMPOP, BLMPOP, ZMPOP, BZMPOP and SINTERCARD: Redis answers
/// one error for a count that is not a positive integer, whatever is wrong with it.
pub(crate) fn positive_numkeys(ctx: &mut Ctx<'_, '_>, i: usize) -> Option<usize> {
    match carmine_resp::parse_i64(ctx.arg(i)) {
        Some(n) if n > 0 => Some(n as usize),
        _ => {
            ctx.error("ERR numkeys should be greater than 0");
            None
        }
    }
}

pub fn numkeys_at_1(args: &Args, out: &mut Vec<usize>) {
    crate::table::numkeys_keys(args, 1, out);
}

fn push(ctx: &mut Ctx<'_, '_>, front: bool, only_existing: bool) {
    let key = ctx.arg(1);
    let limits = ctx.shared.keyspace.limits();
    match write::<ListValue>(ctx.l, key, !only_existing) {
        Err(()) => ctx.wrong_type(),
        Ok(None) => ctx.reply.int(0),
        Ok(Some(list)) => {
            for i in 2..ctx.args.len() {
                list.push(ctx.args.get(i).unwrap_or_default(), front, limits);
            }
            let n = list.len();
            ctx.notify(notify::LIST, if front { "lpush" } else { "rpush" }, key);
            ctx.reply.int(n as i64);
        }
    }
}

fn lpush(ctx: &mut Ctx<'_, '_>) {
    push(ctx, true, false);
}

fn rpush(ctx: &mut Ctx<'_, '_>) {
    push(ctx, false, false);
}

fn lpushx(ctx: &mut Ctx<'_, '_>) {
    push(ctx, true, true);
}

fn rpushx(ctx: &mut Ctx<'_, '_>) {
    push(ctx, false, true);
}

fn pop(ctx: &mut Ctx<'_, '_>, front: bool) {
    if ctx.args.len() > 3 {
        let name = ctx.name();
        return ctx.error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
    }
    let count = if ctx.args.len() == 3 {
        match ctx.positive_arg(2) {
            Some(n) => Some(n),
            None => return,
        }
    } else {
        None
    };
    let key = ctx.arg(1);
    let popped = match write::<ListValue>(ctx.l, key, false) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => None,
        Ok(Some(list)) => {
            let n = count.unwrap_or(1).min(list.len());
            Some((0..n).filter_map(|_| list.pop(front)).collect::<Vec<_>>())
        }
    };
    if popped.as_ref().is_some_and(|v| !v.is_empty()) {
        ctx.notify(notify::LIST, pop_event(front), key);
    }
    drop_if_empty::<ListValue>(ctx.l, key);
    match (count, popped) {
        (None, Some(v)) => match v.first() {
            Some(e) => ctx.reply.bulk(e),
            None => ctx.reply.null(),
        },
        (None, None) => ctx.reply.null(),
        (Some(_), None) => ctx.reply.null_array(),
        (Some(_), Some(v)) => {
            ctx.reply.array(v.len());
            for e in &v {
                ctx.reply.bulk(e);
            }
        }
    }
}

/// LMPOP/BLMPOP once elements were popped from `key`: the pop event, deletion of an
/// emptied list, and the [key, [elements]] reply.
pub fn finish_mpop(ctx: &mut Ctx<'_, '_>, key: &[u8], left: bool, popped: &[Vec<u8>]) {
    ctx.notify(notify::LIST, pop_event(left), key);
    // [B]LMPOP replays as the pop with the count it took, as Redis 7.0 propagates it.
    let (cmd, n): (&[u8], String) = (
        if left { b"LPOP" } else { b"RPOP" },
        popped.len().to_string(),
    );
    ctx.propagate_as(&[cmd, key, n.as_bytes()]);
    drop_if_empty::<ListValue>(ctx.l, key);
    ctx.reply.array(2);
    ctx.reply.bulk(key);
    ctx.reply.array(popped.len());
    for e in popped {
        ctx.reply.bulk(e);
    }
}

pub fn pop_event(front: bool) -> &'static str {
    if front {
        "lpop"
    } else {
        "rpop"
    }
}

fn lpop(ctx: &mut Ctx<'_, '_>) {
    pop(ctx, true);
}

fn rpop(ctx: &mut Ctx<'_, '_>) {
    pop(ctx, false);
}

fn llen(ctx: &mut Ctx<'_, '_>) {
    reply_len::<ListValue>(ctx);
}

fn lrange(ctx: &mut Ctx<'_, '_>) {
    let Some((start, end)) = ctx.int_pair(2, 3) else {
        return;
    };
    let key = ctx.arg(1);
    let list = match read::<ListValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(l) => l,
    };
    let items = list
        .and_then(|l| clamp_range(start, end, l.len()).map(|(s, e)| l.range(s, e)))
        .unwrap_or_default();
    ctx.reply.array(items.len());
    for e in items {
        ctx.reply.bulk(e);
    }
}

/// A list index (negative from the end) resolved against `len`.
fn resolve_index(index: i64, len: usize) -> Option<usize> {
    let i = if index < 0 { len as i64 + index } else { index };
    (i >= 0 && (i as usize) < len).then_some(i as usize)
}

fn lindex(ctx: &mut Ctx<'_, '_>) {
    let Some(index) = ctx.int_arg(2) else { return };
    let key = ctx.arg(1);
    match read::<ListValue>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(l) => match l.and_then(|l| resolve_index(index, l.len()).and_then(|i| l.get(i))) {
            Some(e) => ctx.reply.bulk(e),
            None => ctx.reply.null(),
        },
    }
}

fn lset(ctx: &mut Ctx<'_, '_>) {
    let Some(index) = ctx.int_arg(2) else { return };
    let key = ctx.arg(1);
    let limits = ctx.shared.keyspace.limits();
    match write::<ListValue>(ctx.l, key, false) {
        Err(()) => ctx.wrong_type(),
        Ok(None) => ctx.error("ERR no such key"),
        Ok(Some(list)) => match resolve_index(index, list.len()) {
            Some(i) => {
                list.set(i, ctx.args.get(3).unwrap_or_default(), limits);
                ctx.notify(notify::LIST, "lset", key);
                ctx.reply.ok();
            }
            None => ctx.error("ERR index out of range"),
        },
    }
}

fn linsert(ctx: &mut Ctx<'_, '_>) {
    let before = if ctx.is(2, "BEFORE") {
        true
    } else if ctx.is(2, "AFTER") {
        false
    } else {
        return ctx.syntax_error();
    };
    let key = ctx.arg(1);
    let limits = ctx.shared.keyspace.limits();
    let (pivot, elem) = (ctx.arg(3), ctx.arg(4));
    match read::<ListValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => return ctx.reply.int(0),
        Ok(Some(_)) => {}
    }
    let Ok(Some(list)) = write::<ListValue>(ctx.l, key, false) else {
        return ctx.reply.int(0);
    };
    let at = list.iter().position(|e| e == pivot);
    match at {
        None => ctx.reply.int(-1),
        Some(i) => {
            list.insert(if before { i } else { i + 1 }, elem, limits);
            let n = list.len();
            ctx.notify(notify::LIST, "linsert", key);
            ctx.reply.int(n as i64);
        }
    }
}

fn lrem(ctx: &mut Ctx<'_, '_>) {
    let Some(count) = ctx.int_arg(2) else { return };
    let key = ctx.arg(1);
    let elem = ctx.arg(3);
    let removed = match write::<ListValue>(ctx.l, key, false) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => 0,
        Ok(Some(list)) => {
            let mut matches: Vec<usize> = list
                .iter()
                .enumerate()
                .filter(|(_, e)| *e == elem)
                .map(|(i, _)| i)
                .collect();
            if count < 0 {
                matches.reverse();
            }
            if count != 0 {
                matches.truncate(count.unsigned_abs() as usize);
            }
            matches.sort_unstable_by(|a, b| b.cmp(a));
            for &i in &matches {
                list.remove(i);
            }
            matches.len()
        }
    };
    if removed > 0 {
        ctx.notify(notify::LIST, "lrem", key);
    }
    drop_if_empty::<ListValue>(ctx.l, key);
    ctx.reply.int(removed as i64);
}

fn ltrim(ctx: &mut Ctx<'_, '_>) {
    let Some((start, end)) = ctx.int_pair(2, 3) else {
        return;
    };
    let key = ctx.arg(1);
    match write::<ListValue>(ctx.l, key, false) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => {}
        Ok(Some(list)) => {
            match clamp_range(start, end, list.len()) {
                Some((s, e)) => list.trim(s, e),
                None => list.trim(1, 0),
            }
            ctx.notify(notify::LIST, "ltrim", key);
        }
    }
    drop_if_empty::<ListValue>(ctx.l, key);
    ctx.reply.ok();
}

fn lpos(ctx: &mut Ctx<'_, '_>) {
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0usize);
    let mut i = 3;
    while i < ctx.args.len() {
        if i + 1 >= ctx.args.len() {
            return ctx.syntax_error();
        }
        let Some(v) = ctx.int_arg(i + 1) else { return };
        if ctx.is(i, "RANK") {
            if v == 0 || v == i64::MIN {
                return ctx.error("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list");
            }
            rank = v;
        } else if ctx.is(i, "COUNT") {
            if v < 0 {
                return ctx.error("ERR COUNT can't be negative");
            }
            count = Some(v as usize);
        } else if ctx.is(i, "MAXLEN") {
            if v < 0 {
                return ctx.error("ERR MAXLEN can't be negative");
            }
            maxlen = v as usize;
        } else {
            return ctx.syntax_error();
        }
        i += 2;
    }
    let key = ctx.arg(1);
    let elem = ctx.arg(2);
    let list = match read::<ListValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(l) => l,
    };
    let mut found = Vec::new();
    if let Some(list) = list {
        let len = list.len();
        let items: Vec<(usize, &[u8])> = if rank > 0 {
            list.iter().enumerate().collect()
        } else {
            let mut v: Vec<(usize, &[u8])> = list.iter().enumerate().collect();
            v.reverse();
            v
        };
        let limit = if maxlen == 0 { len } else { maxlen.min(len) };
        let mut skip = rank.unsigned_abs() - 1;
        let want = match count {
            Some(0) => usize::MAX,
            Some(n) => n,
            None => 1,
        };
        for (i, e) in items.into_iter().take(limit) {
            if e == elem {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                found.push(i as i64);
                if found.len() >= want {
                    break;
                }
            }
        }
    }
    match count {
        None => match found.first() {
            Some(&i) => ctx.reply.int(i),
            None => ctx.reply.null(),
        },
        Some(_) => {
            ctx.reply.array(found.len());
            for i in found {
                ctx.reply.int(i);
            }
        }
    }
}

/// Pops from `src` (left or right) and pushes onto `dst`; replies with the element.
fn move_generic(ctx: &mut Ctx<'_, '_>, from_left: bool, to_left: bool) {
    let (src, dst) = (ctx.arg(1), ctx.arg(2));
    match read::<ListValue>(ctx.l, src) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => return ctx.reply.null(),
        Ok(Some(_)) => {}
    }
    if read::<ListValue>(ctx.l, dst).is_err() {
        return ctx.wrong_type();
    }
    let Ok(Some(list)) = write::<ListValue>(ctx.l, src, false) else {
        return ctx.reply.null();
    };
    let Some(elem) = list.pop(from_left) else {
        return ctx.reply.null();
    };
    let limits = ctx.shared.keyspace.limits();
    if let Ok(Some(d)) = write::<ListValue>(ctx.l, dst, true) {
        d.push(&elem, to_left, limits);
    }
    // Redis' order: the push on the destination, then the pop, then the source's deletion.
    ctx.notify(notify::LIST, if to_left { "lpush" } else { "rpush" }, dst);
    ctx.notify(notify::LIST, pop_event(from_left), src);
    drop_if_empty::<ListValue>(ctx.l, src);
    ctx.reply.bulk(&elem);
}

fn side(ctx: &mut Ctx<'_, '_>, i: usize) -> Option<bool> {
    if ctx.is(i, "LEFT") {
        Some(true)
    } else if ctx.is(i, "RIGHT") {
        Some(false)
    } else {
        ctx.syntax_error();
        None
    }
}

fn lmove(ctx: &mut Ctx<'_, '_>) {
    let Some(from) = side(ctx, 3) else { return };
    let Some(to) = side(ctx, 4) else { return };
    move_generic(ctx, from, to);
}

fn rpoplpush(ctx: &mut Ctx<'_, '_>) {
    move_generic(ctx, false, true);
}

fn lmpop(ctx: &mut Ctx<'_, '_>) {
    let Some(numkeys) = positive_numkeys(ctx, 1) else {
        return;
    };
    let side_at = 2 + numkeys;
    if side_at >= ctx.args.len() {
        return ctx.syntax_error();
    }
    let Some(left) = side(ctx, side_at) else {
        return;
    };
    let mut count = 1usize;
    if ctx.args.len() == side_at + 3 && ctx.is(side_at + 1, "COUNT") {
        match carmine_resp::parse_i64(ctx.arg(side_at + 2)) {
            Some(n) if n > 0 => count = n as usize,
            _ => return ctx.error("ERR count should be greater than 0"),
        }
    } else if ctx.args.len() != side_at + 1 {
        return ctx.syntax_error();
    }
    for i in 2..side_at {
        let key = ctx.arg(i);
        match write::<ListValue>(ctx.l, key, false) {
            Err(()) => return ctx.wrong_type(),
            Ok(None) => continue,
            Ok(Some(list)) => {
                let popped: Vec<Vec<u8>> = (0..count).map_while(|_| list.pop(left)).collect();
                return finish_mpop(ctx, key, left, &popped);
            }
        }
    }
    ctx.reply.null_array();
}
