//! Hashes: HSET, HGET, HMGET, HMSET, HSETNX, HDEL, HLEN, HSTRLEN, HEXISTS, HKEYS, HVALS,
//! HGETALL, HINCRBY, HINCRBYFLOAT, HRANDFIELD, HSCAN.

use carmine_keyspace::long_double::LongDouble;
use carmine_keyspace::notify;
use carmine_keyspace::{parse_canonical_i64, HashValue};

use crate::table::{cmd, flags::*, keys, CommandSpec};
use crate::typed::{read, remove_members, reply_len, scan_command, write};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "hash";
    let rf = "@read @hash @fast";
    let wf = "@write @hash @fast";
    let rs = "@read @hash @slow";
    vec![
        cmd(
            "hset",
            -4,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            hset,
            g,
            wf,
            "Creates or modifies the value of a field in a hash.",
        ),
        cmd(
            "hmset",
            -4,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            hmset,
            g,
            wf,
            "Sets the values of multiple fields.",
        ),
        cmd(
            "hsetnx",
            4,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            hsetnx,
            g,
            wf,
            "Sets the value of a field in a hash only when the field doesn't exist.",
        ),
        cmd(
            "hget",
            3,
            READONLY | FAST,
            keys(1, 1, 1),
            hget,
            g,
            rf,
            "Returns the value of a field in a hash.",
        ),
        cmd(
            "hmget",
            -3,
            READONLY | FAST,
            keys(1, 1, 1),
            hmget,
            g,
            rf,
            "Returns the values of all fields in a hash.",
        ),
        cmd(
            "hdel",
            -3,
            WRITE | FAST,
            keys(1, 1, 1),
            hdel,
            g,
            wf,
            "Deletes one or more fields and their values from a hash.",
        ),
        cmd(
            "hlen",
            2,
            READONLY | FAST,
            keys(1, 1, 1),
            hlen,
            g,
            rf,
            "Returns the number of fields in a hash.",
        ),
        cmd(
            "hstrlen",
            3,
            READONLY | FAST,
            keys(1, 1, 1),
            hstrlen,
            g,
            rf,
            "Returns the length of the value of a field.",
        ),
        cmd(
            "hexists",
            3,
            READONLY | FAST,
            keys(1, 1, 1),
            hexists,
            g,
            rf,
            "Determines whether a field exists in a hash.",
        ),
        cmd(
            "hkeys",
            2,
            READONLY,
            keys(1, 1, 1),
            hkeys,
            g,
            rs,
            "Returns all fields in a hash.",
        ),
        cmd(
            "hvals",
            2,
            READONLY,
            keys(1, 1, 1),
            hvals,
            g,
            rs,
            "Returns all values in a hash.",
        ),
        cmd(
            "hgetall",
            2,
            READONLY,
            keys(1, 1, 1),
            hgetall,
            g,
            rs,
            "Returns all fields and values in a hash.",
        ),
        cmd(
            "hincrby",
            4,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            hincrby,
            g,
            wf,
            "Increments the integer value of a field in a hash by a number.",
        ),
        cmd(
            "hincrbyfloat",
            4,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            hincrbyfloat,
            g,
            wf,
            "Increments the floating point value of a field by a number.",
        ),
        cmd(
            "hrandfield",
            -2,
            READONLY,
            keys(1, 1, 1),
            hrandfield,
            g,
            rs,
            "Returns one or more random fields from a hash.",
        ),
        cmd(
            "hscan",
            -3,
            READONLY,
            keys(1, 1, 1),
            hscan,
            g,
            rs,
            "Iterates over fields and values of a hash.",
        ),
    ]
}

fn set_pairs(ctx: &mut Ctx<'_, '_>) -> Option<i64> {
    if !ctx.args.len().is_multiple_of(2) {
        let name = ctx.name();
        ctx.error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return None;
    }
    let key = ctx.arg(1);
    let limits = ctx.shared.keyspace.limits();
    let Ok(Some(h)) = write::<HashValue>(ctx.l, key, true) else {
        ctx.wrong_type();
        return None;
    };
    let mut added = 0;
    for i in (2..ctx.args.len()).step_by(2) {
        let (f, v) = (
            ctx.args.get(i).unwrap_or_default(),
            ctx.args.get(i + 1).unwrap_or_default(),
        );
        if h.insert(f, v, limits) {
            added += 1;
        }
    }
    ctx.notify(notify::HASH, "hset", key);
    Some(added)
}

fn hset(ctx: &mut Ctx<'_, '_>) {
    if let Some(n) = set_pairs(ctx) {
        ctx.reply.int(n);
    }
}

fn hmset(ctx: &mut Ctx<'_, '_>) {
    if set_pairs(ctx).is_some() {
        ctx.reply.ok();
    }
}

fn hsetnx(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read::<HashValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(Some(h)) if h.contains(ctx.args.get(2).unwrap_or_default()) => return ctx.reply.int(0),
        Ok(_) => {}
    }
    let limits = ctx.shared.keyspace.limits();
    if let Ok(Some(h)) = write::<HashValue>(ctx.l, key, true) {
        h.insert(
            ctx.args.get(2).unwrap_or_default(),
            ctx.args.get(3).unwrap_or_default(),
            limits,
        );
    }
    ctx.notify(notify::HASH, "hset", key);
    ctx.reply.int(1);
}

fn hget(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read::<HashValue>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(h) => match h.and_then(|h| h.get(ctx.args.get(2).unwrap_or_default())) {
            Some(v) => ctx.reply.bulk(v),
            None => ctx.reply.null(),
        },
    }
}

fn hmget(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read::<HashValue>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(h) => {
            ctx.reply.array(ctx.args.len() - 2);
            for i in 2..ctx.args.len() {
                match h.and_then(|h| h.get(ctx.args.get(i).unwrap_or_default())) {
                    Some(v) => ctx.reply.bulk(v),
                    None => ctx.reply.null(),
                }
            }
        }
    }
}

fn hdel(ctx: &mut Ctx<'_, '_>) {
    remove_members(ctx, notify::HASH, "hdel", HashValue::remove);
}

fn hlen(ctx: &mut Ctx<'_, '_>) {
    reply_len::<HashValue>(ctx);
}

fn hstrlen(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read::<HashValue>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(h) => {
            let n = h
                .and_then(|h| h.get(ctx.args.get(2).unwrap_or_default()))
                .map_or(0, <[u8]>::len);
            ctx.reply.int(n as i64);
        }
    }
}

fn hexists(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read::<HashValue>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(h) => ctx.reply.int(i64::from(
            h.is_some_and(|h| h.contains(ctx.args.get(2).unwrap_or_default())),
        )),
    }
}

/// HKEYS (fields), HVALS (values), HGETALL (map of both).
fn hall(ctx: &mut Ctx<'_, '_>, fields: bool, values: bool) {
    let key = ctx.arg(1);
    let h = match read::<HashValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(h) => h,
    };
    let pairs = h.map(|h| h.pairs()).unwrap_or_default();
    if fields && values {
        ctx.reply.map(pairs.len());
    } else {
        ctx.reply.array(pairs.len());
    }
    for (f, v) in pairs {
        if fields {
            ctx.reply.bulk(f);
        }
        if values {
            ctx.reply.bulk(v);
        }
    }
}

fn hkeys(ctx: &mut Ctx<'_, '_>) {
    hall(ctx, true, false);
}

fn hvals(ctx: &mut Ctx<'_, '_>) {
    hall(ctx, false, true);
}

fn hgetall(ctx: &mut Ctx<'_, '_>) {
    hall(ctx, true, true);
}

/// The number in field `args[2]` of hash `args[1]` for HINCRBY/HINCRBYFLOAT: `Ok(None)`
/// if absent; `Err` after replying WRONGTYPE or `not_number`.
fn current_number<N>(
    ctx: &mut Ctx<'_, '_>,
    parse: fn(&[u8]) -> Option<N>,
    not_number: &str,
) -> Result<Option<N>, ()> {
    let (key, field) = (ctx.arg(1), ctx.arg(2));
    let text = match read::<HashValue>(ctx.l, key) {
        Err(()) => {
            ctx.wrong_type();
            return Err(());
        }
        Ok(h) => h.and_then(|h| h.get(field)).map(<[u8]>::to_vec),
    };
    match text.map(|t| parse(&t)) {
        None => Ok(None),
        Some(Some(n)) => Ok(Some(n)),
        Some(None) => {
            ctx.error(not_number);
            Err(())
        }
    }
}

fn hincrby(ctx: &mut Ctx<'_, '_>) {
    let Some(delta) = ctx.int_arg(3) else { return };
    let (key, field) = (ctx.arg(1), ctx.arg(2));
    let Ok(cur) = current_number(ctx, parse_canonical_i64, "ERR hash value is not an integer")
    else {
        return;
    };
    let cur = cur.unwrap_or(0);
    let Some(next) = cur.checked_add(delta) else {
        return ctx.error("ERR increment or decrement would overflow");
    };
    let limits = ctx.shared.keyspace.limits();
    if let Ok(Some(h)) = write::<HashValue>(ctx.l, key, true) {
        h.insert(field, next.to_string().as_bytes(), limits);
    }
    ctx.notify(notify::HASH, "hincrby", key);
    ctx.reply.int(next);
}

fn hincrbyfloat(ctx: &mut Ctx<'_, '_>) {
    let Some(delta) = ctx.long_double_arg(3) else {
        return;
    };
    if !delta.is_finite() {
        return ctx.error("ERR value is NaN or Infinity");
    }
    let (key, field) = (ctx.arg(1), ctx.arg(2));
    let Ok(cur) = current_number(ctx, LongDouble::parse, "ERR hash value is not a float") else {
        return;
    };
    let next = cur.unwrap_or(LongDouble::ZERO) + delta;
    if !next.is_finite() {
        return ctx.error("ERR increment would produce NaN or Infinity");
    }
    let text = next.to_human();
    let limits = ctx.shared.keyspace.limits();
    if let Ok(Some(h)) = write::<HashValue>(ctx.l, key, true) {
        h.insert(field, &text, limits);
    }
    ctx.notify(notify::HASH, "hincrbyfloat", key);
    ctx.propagate_as(&[b"HSET", key, field, &text]);
    ctx.reply.bulk(&text);
}

/// `key [count [WITH...]]` of HRANDFIELD and ZRANDMEMBER: (count, with the extra word);
/// None after replying an error.
pub fn random_args(ctx: &mut Ctx<'_, '_>, with_word: &str) -> Option<(Option<i64>, bool)> {
    if ctx.args.len() < 3 {
        return Some((None, false));
    }
    // Redis' order: the count's range, then the syntax, then WITH*'s doubled range.
    let count = ctx.range_arg(2, -i64::MAX, i64::MAX)?;
    let with = match ctx.args.len() {
        3 => false,
        4 if ctx.is(3, with_word) => true,
        _ => {
            ctx.syntax_error();
            return None;
        }
    };
    if with && !(-i64::MAX / 2..=i64::MAX / 2).contains(&count) {
        ctx.error("ERR value is out of range");
        return None;
    }
    Some((Some(count), with))
}

fn hrandfield(ctx: &mut Ctx<'_, '_>) {
    let Some((count, with_values)) = random_args(ctx, "WITHVALUES") else {
        return;
    };
    let key = ctx.arg(1);
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = match read::<HashValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(h) => h
            .map(|h| {
                h.pairs()
                    .into_iter()
                    .map(|(f, v)| (f.to_vec(), v.to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let picks = random_picks(pairs.len(), count);
    let Some(picks) = picks else {
        return match pairs.get(fastrand::usize(..pairs.len().max(1))) {
            Some((f, _)) if !pairs.is_empty() => ctx.reply.bulk(f),
            _ => ctx.reply.null(),
        };
    };
    if with_values && ctx.reply.resp3 {
        ctx.reply.array(picks.len());
        for i in picks {
            ctx.reply.array(2);
            ctx.reply.bulk(&pairs[i].0);
            ctx.reply.bulk(&pairs[i].1);
        }
        return;
    }
    // random_args bounds a WITHVALUES count to half the range, so this cannot overflow.
    ctx.reply
        .array(picks.len() * if with_values { 2 } else { 1 });
    for i in picks {
        ctx.reply.bulk(&pairs[i].0);
        if with_values {
            ctx.reply.bulk(&pairs[i].1);
        }
    }
}

/// Indexes for the random-member commands: None for the single-element form; a positive
/// count gives distinct elements (at most all), a negative one allows repeats.
pub fn random_picks(len: usize, count: Option<i64>) -> Option<RandomPicks> {
    let count = count?;
    if len == 0 || count == 0 {
        return Some(RandomPicks::Distinct(Vec::new().into_iter()));
    }
    if count < 0 {
        // Drawn as the reply is written: the count is the client's (Redis caps it only
        // at -LONG_MAX), so nothing the size of the reply is built ahead of it.
        let left = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
        return Some(RandomPicks::Repeats { left, len });
    }
    let mut all: Vec<usize> = (0..len).collect();
    fastrand::shuffle(&mut all);
    all.truncate(usize::try_from(count).unwrap_or(usize::MAX).min(len));
    Some(RandomPicks::Distinct(all.into_iter()))
}

/// The indexes [`random_picks`] chose, in reply order.
pub enum RandomPicks {
    Distinct(std::vec::IntoIter<usize>),
    Repeats { left: usize, len: usize },
}

impl Iterator for RandomPicks {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            RandomPicks::Distinct(it) => it.next(),
            RandomPicks::Repeats { left: 0, .. } => None,
            RandomPicks::Repeats { left, len } => {
                *left -= 1;
                Some(fastrand::usize(..*len))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            RandomPicks::Distinct(it) => it.len(),
            RandomPicks::Repeats { left, .. } => *left,
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for RandomPicks {}

fn hscan(ctx: &mut Ctx<'_, '_>) {
    scan_command::<HashValue>(ctx, true, |h, a| {
        let (next, pairs) = h.scan(a.cursor, a.count);
        let flat = pairs
            .into_iter()
            .flat_map(|(f, v)| [f.to_vec(), v.to_vec()])
            .collect();
        (next, flat)
    });
}
