//! Sorted sets: ZADD, ZINCRBY, ZREM, ZCARD, ZSCORE, ZMSCORE, ZRANK, ZREVRANK, ZCOUNT,
//! ZLEXCOUNT, ZRANGE (BYSCORE/BYLEX/REV/LIMIT/WITHSCORES), ZREVRANGE, ZRANGEBYSCORE,
//! ZREVRANGEBYSCORE, ZRANGEBYLEX, ZREVRANGEBYLEX, ZREMRANGEBYRANK/SCORE/LEX, ZPOPMIN,
//! ZPOPMAX, ZRANDMEMBER, ZSCAN.

use carmine_keyspace::notify;
use carmine_keyspace::ops::parse_float;
use carmine_keyspace::{Upsert, ZSetValue};

use crate::hash::random_picks;
use crate::table::{cmd, flags::*, keys, CommandSpec};
use crate::typed::{drop_if_empty, read, remove_members, reply_len, scan_command, write};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "sorted-set";
    let wf = "@write @sortedset @fast";
    let ws = "@write @sortedset @slow";
    let rf = "@read @sortedset @fast";
    let rs = "@read @sortedset @slow";
    vec![
        cmd(
            "zadd",
            -4,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            zadd,
            g,
            wf,
            "Adds one or more members to a sorted set, or updates their scores.",
        ),
        cmd(
            "zincrby",
            4,
            WRITE | DENYOOM | FAST,
            keys(1, 1, 1),
            zincrby,
            g,
            wf,
            "Increments the score of a member in a sorted set.",
        ),
        cmd(
            "zrem",
            -3,
            WRITE | FAST,
            keys(1, 1, 1),
            zrem,
            g,
            wf,
            "Removes one or more members from a sorted set.",
        ),
        cmd(
            "zcard",
            2,
            READONLY | FAST,
            keys(1, 1, 1),
            zcard,
            g,
            rf,
            "Returns the number of members in a sorted set.",
        ),
        cmd(
            "zscore",
            3,
            READONLY | FAST,
            keys(1, 1, 1),
            zscore,
            g,
            rf,
            "Returns the score of a member in a sorted set.",
        ),
        cmd(
            "zmscore",
            -3,
            READONLY | FAST,
            keys(1, 1, 1),
            zmscore,
            g,
            rf,
            "Returns the score of one or more members in a sorted set.",
        ),
        cmd(
            "zrank",
            -3,
            READONLY | FAST,
            keys(1, 1, 1),
            zrank,
            g,
            rf,
            "Returns the index of a member in a sorted set ordered by ascending scores.",
        ),
        cmd(
            "zrevrank",
            -3,
            READONLY | FAST,
            keys(1, 1, 1),
            zrevrank,
            g,
            rf,
            "Returns the index of a member in a sorted set ordered by descending scores.",
        ),
        cmd(
            "zcount",
            4,
            READONLY | FAST,
            keys(1, 1, 1),
            zcount,
            g,
            rf,
            "Returns the count of members in a sorted set that have scores within a range.",
        ),
        cmd(
            "zlexcount",
            4,
            READONLY | FAST,
            keys(1, 1, 1),
            zlexcount,
            g,
            rf,
            "Returns the number of members in a sorted set within a lexicographical range.",
        ),
        cmd(
            "zrange",
            -4,
            READONLY,
            keys(1, 1, 1),
            zrange,
            g,
            rs,
            "Returns members in a sorted set within a range of indexes.",
        ),
        cmd(
            "zrevrange",
            -4,
            READONLY,
            keys(1, 1, 1),
            zrevrange,
            g,
            rs,
            "Returns members in a sorted set within a range of indexes in reverse order.",
        ),
        cmd(
            "zrangebyscore",
            -4,
            READONLY,
            keys(1, 1, 1),
            zrangebyscore,
            g,
            rs,
            "Returns members in a sorted set within a range of scores.",
        ),
        cmd(
            "zrevrangebyscore",
            -4,
            READONLY,
            keys(1, 1, 1),
            zrevrangebyscore,
            g,
            rs,
            "Returns members in a sorted set within a range of scores in reverse order.",
        ),
        cmd(
            "zrangebylex",
            -4,
            READONLY,
            keys(1, 1, 1),
            zrangebylex,
            g,
            rs,
            "Returns members in a sorted set within a lexicographical range.",
        ),
        cmd(
            "zrevrangebylex",
            -4,
            READONLY,
            keys(1, 1, 1),
            zrevrangebylex,
            g,
            rs,
            "Returns members in a sorted set within a lexicographical range in reverse order.",
        ),
        cmd(
            "zremrangebyrank",
            4,
            WRITE,
            keys(1, 1, 1),
            zremrangebyrank,
            g,
            ws,
            "Removes members in a sorted set within a range of indexes.",
        ),
        cmd(
            "zremrangebyscore",
            4,
            WRITE,
            keys(1, 1, 1),
            zremrangebyscore,
            g,
            ws,
            "Removes members in a sorted set within a range of scores.",
        ),
        cmd(
            "zremrangebylex",
            4,
            WRITE,
            keys(1, 1, 1),
            zremrangebylex,
            g,
            ws,
            "Removes members in a sorted set within a lexicographical range.",
        ),
        cmd(
            "zpopmin",
            -2,
            WRITE | FAST,
            keys(1, 1, 1),
            zpopmin,
            g,
            wf,
            "Returns the lowest-scoring members from a sorted set after removing them.",
        ),
        cmd(
            "zpopmax",
            -2,
            WRITE | FAST,
            keys(1, 1, 1),
            zpopmax,
            g,
            wf,
            "Returns the highest-scoring members from a sorted set after removing them.",
        ),
        cmd(
            "zrandmember",
            -2,
            READONLY,
            keys(1, 1, 1),
            zrandmember,
            g,
            rs,
            "Returns one or more random members from a sorted set.",
        ),
        cmd(
            "zscan",
            -3,
            READONLY,
            keys(1, 1, 1),
            zscan,
            g,
            rs,
            "Iterates over members and scores of a sorted set.",
        ),
    ]
}

/// A score as Redis 7.0 prints it (`%.17g`; `inf`, `-inf`).
pub fn format_score(v: f64) -> String {
    format_g(v, 17)
}

/// C's `%.<precision>g` (precision 1 to 17): `nan`, `inf`, `-inf`, `-0` included.
pub fn format_g(v: f64, precision: usize) -> String {
    let precision = precision.clamp(1, 17);
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{v:.*e}", precision - 1);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= precision as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{v:.decimals$}"))
    }
}

/// Writes a score: a bulk string in RESP2, a double in RESP3.
fn reply_score(ctx: &mut Ctx<'_, '_>, v: f64) {
    ctx.reply.double_text(format_score(v).as_bytes());
}

fn score_arg(ctx: &mut Ctx<'_, '_>, i: usize) -> Option<f64> {
    let v = parse_float(ctx.arg(i));
    if v.is_none() {
        ctx.error("ERR value is not a valid float");
    }
    v
}

fn zadd(ctx: &mut Ctx<'_, '_>) {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < ctx.args.len() {
        let a = ctx.arg(i).to_ascii_uppercase();
        match a.as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            b"CH" => ch = true,
            b"INCR" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let pairs = ctx.args.len() - i;
    if pairs == 0 || !pairs.is_multiple_of(2) {
        return ctx.syntax_error();
    }
    if nx && xx {
        return ctx.error("ERR XX and NX options at the same time are not compatible");
    }
    if ((gt || lt) && nx) || (gt && lt) {
        return ctx.error("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if incr && pairs != 2 {
        return ctx.error("ERR INCR option supports a single increment-element pair");
    }
    let mut scores = Vec::with_capacity(pairs / 2);
    for j in (i..ctx.args.len()).step_by(2) {
        let Some(s) = score_arg(ctx, j) else { return };
        scores.push(s);
    }
    let key = ctx.arg(1);
    let limits = ctx.shared.keyspace.zset_limits();
    let Ok(Some(z)) = write::<ZSetValue>(ctx.l, key, !xx) else {
        return match read::<ZSetValue>(ctx.l, key) {
            Err(()) => ctx.wrong_type(),
            Ok(_) if incr => ctx.reply.null(),
            Ok(_) => ctx.reply.int(0),
        };
    };
    let (mut added, mut changed) = (0, 0);
    let mut incr_result = None;
    let plain = !(incr || nx || xx || gt || lt);
    for (n, j) in (i..ctx.args.len()).step_by(2).enumerate() {
        let member = ctx.args.get(j + 1).unwrap_or_default();
        if plain {
            // No flag reads the current score: one pass sets it and says what changed.
            match z.upsert(member, scores[n], limits) {
                Upsert::Added => added += 1,
                Upsert::Rescored => changed += 1,
                Upsert::Unchanged | Upsert::Full => {}
            }
            continue;
        }
        let cur = z.score(member);
        let mut score = scores[n];
        if incr {
            score += cur.unwrap_or(0.0);
            if score.is_nan() {
                drop_if_empty::<ZSetValue>(ctx.l, key);
                return ctx.error("ERR resulting score is not a number (NaN)");
            }
        }
        let allowed = match cur {
            None => !xx,
            Some(c) => !nx && (!gt || score > c) && (!lt || score < c),
        };
        if !allowed {
            continue;
        }
        if z.insert(member, score, limits) {
            added += 1;
        } else if cur != Some(score) {
            changed += 1;
        }
        incr_result = Some(score);
    }
    if added + changed > 0 {
        ctx.notify(notify::ZSET, if incr { "zincr" } else { "zadd" }, key);
    }
    drop_if_empty::<ZSetValue>(ctx.l, key);
    if incr {
        match incr_result {
            Some(s) => reply_score(ctx, s),
            None => ctx.reply.null(),
        }
    } else {
        ctx.reply.int(if ch { added + changed } else { added });
    }
}

fn zincrby(ctx: &mut Ctx<'_, '_>) {
    let Some(delta) = score_arg(ctx, 2) else {
        return;
    };
    let key = ctx.arg(1);
    let member = ctx.arg(3);
    let limits = ctx.shared.keyspace.zset_limits();
    let Ok(Some(z)) = write::<ZSetValue>(ctx.l, key, true) else {
        return ctx.wrong_type();
    };
    let score = z.score(member).unwrap_or(0.0) + delta;
    if score.is_nan() {
        drop_if_empty::<ZSetValue>(ctx.l, key);
        return ctx.error("ERR resulting score is not a number (NaN)");
    }
    z.insert(member, score, limits);
    ctx.notify(notify::ZSET, "zincr", key);
    reply_score(ctx, score);
}

fn zrem(ctx: &mut Ctx<'_, '_>) {
    remove_members(ctx, notify::ZSET, "zrem", ZSetValue::remove);
}

fn zcard(ctx: &mut Ctx<'_, '_>) {
    reply_len::<ZSetValue>(ctx);
}

fn zscore(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read::<ZSetValue>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(z) => match z.and_then(|z| z.score(ctx.args.get(2).unwrap_or_default())) {
            Some(s) => reply_score(ctx, s),
            None => ctx.reply.null(),
        },
    }
}

fn zmscore(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    let scores: Vec<Option<f64>> = match read::<ZSetValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(z) => (2..ctx.args.len())
            .map(|i| z.and_then(|z| z.score(ctx.args.get(i).unwrap_or_default())))
            .collect(),
    };
    ctx.reply.array(scores.len());
    for s in scores {
        match s {
            Some(s) => reply_score(ctx, s),
            None => ctx.reply.null(),
        }
    }
}

fn rank_generic(ctx: &mut Ctx<'_, '_>, rev: bool) {
    let with_score = match ctx.args.len() {
        3 => false,
        4 if ctx.is(3, "WITHSCORE") => true,
        _ => return ctx.syntax_error(),
    };
    let key = ctx.arg(1);
    let member = ctx.arg(2);
    let found = match read::<ZSetValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(z) => z.and_then(|z| {
            let r = z.rank(member)?;
            let r = if rev { z.len() - 1 - r } else { r };
            Some((r, z.score(member).unwrap_or(0.0)))
        }),
    };
    match found {
        None if with_score => ctx.reply.null_array(),
        None => ctx.reply.null(),
        Some((r, s)) if with_score => {
            ctx.reply.array(2);
            ctx.reply.int(r as i64);
            reply_score(ctx, s);
        }
        Some((r, _)) => ctx.reply.int(r as i64),
    }
}

fn zrank(ctx: &mut Ctx<'_, '_>) {
    rank_generic(ctx, false);
}

fn zrevrank(ctx: &mut Ctx<'_, '_>) {
    rank_generic(ctx, true);
}

/// A score bound: value and whether it is exclusive (`(1.5`).
fn score_bound(arg: &[u8]) -> Option<(f64, bool)> {
    match arg.strip_prefix(b"(") {
        Some(rest) => parse_float(rest).map(|v| (v, true)),
        None => parse_float(arg).map(|v| (v, false)),
    }
}

/// A lex bound: None for `-`/`+` (unbounded), else (bytes, exclusive).
enum Lex {
    Min,
    Max,
    Value(Vec<u8>, bool),
}

fn lex_bound(arg: &[u8]) -> Option<Lex> {
    match arg.first() {
        Some(b'-') if arg.len() == 1 => Some(Lex::Min),
        Some(b'+') if arg.len() == 1 => Some(Lex::Max),
        Some(b'[') => Some(Lex::Value(arg[1..].to_vec(), false)),
        Some(b'(') => Some(Lex::Value(arg[1..].to_vec(), true)),
        _ => None,
    }
}

/// The ascending rank range [lo, hi) of elements with score within the bounds.
fn score_span(z: &ZSetValue, min: (f64, bool), max: (f64, bool)) -> (usize, usize) {
    let lo = z.count_prefix(&|s, _| if min.1 { s <= min.0 } else { s < min.0 });
    let hi = z.count_prefix(&|s, _| if max.1 { s < max.0 } else { s <= max.0 });
    (lo, hi.max(lo))
}

/// The ascending rank range [lo, hi) of members within lex bounds.
fn lex_span(z: &ZSetValue, min: &Lex, max: &Lex) -> (usize, usize) {
    let lo = match min {
        Lex::Min => 0,
        Lex::Max => z.len(),
        Lex::Value(v, excl) => z.count_prefix(&|_, m| if *excl { m <= &v[..] } else { m < &v[..] }),
    };
    let hi = match max {
        Lex::Min => 0,
        Lex::Max => z.len(),
        Lex::Value(v, excl) => z.count_prefix(&|_, m| if *excl { m < &v[..] } else { m <= &v[..] }),
    };
    (lo, hi.max(lo))
}

#[derive(Clone, Copy, PartialEq)]
enum By {
    Rank,
    Score,
    Lex,
}

struct RangeQuery {
    by: By,
    rev: bool,
    with_scores: bool,
    limit: Option<(i64, i64)>,
    /// Index of the min/start argument; max/stop follows.
    first: usize,
}

impl RangeQuery {
    /// Ascending, no options, bounds at arguments 2 and 3 (ZCOUNT, ZREMRANGEBY* ...).
    fn plain(by: By) -> RangeQuery {
        RangeQuery {
            by,
            rev: false,
            with_scores: false,
            limit: None,
            first: 2,
        }
    }
}

/// Range bounds, parsed before the set is read.
enum Bounds {
    Rank(i64, i64),
    Score((f64, bool), (f64, bool)),
    Lex(Lex, Lex),
}

/// Parses the min/max (or start/stop) arguments; replies the error and returns None if bad.
fn parse_bounds(ctx: &mut Ctx<'_, '_>, q: &RangeQuery) -> Option<Bounds> {
    let (a, b) = (ctx.arg(q.first).to_vec(), ctx.arg(q.first + 1).to_vec());
    // For REV the arguments come as (max, min) in score and lex modes.
    let (lo_arg, hi_arg) = if q.rev && q.by != By::Rank {
        (b, a)
    } else {
        (a, b)
    };
    match q.by {
        By::Rank => match (
            carmine_resp::parse_i64(&lo_arg),
            carmine_resp::parse_i64(&hi_arg),
        ) {
            (Some(start), Some(stop)) => Some(Bounds::Rank(start, stop)),
            _ => {
                ctx.error("ERR value is not an integer or out of range");
                None
            }
        },
        By::Score => match (score_bound(&lo_arg), score_bound(&hi_arg)) {
            (Some(min), Some(max)) => Some(Bounds::Score(min, max)),
            _ => {
                ctx.error("ERR min or max is not a float");
                None
            }
        },
        By::Lex => match (lex_bound(&lo_arg), lex_bound(&hi_arg)) {
            (Some(min), Some(max)) => Some(Bounds::Lex(min, max)),
            _ => {
                ctx.error("ERR min or max not valid string range item");
                None
            }
        },
    }
}

/// The elements a query selects, in reply order: O(log n) to find the span, then one
/// select per element returned.
fn select(z: Option<&ZSetValue>, bounds: &Bounds, q: &RangeQuery) -> Vec<(f64, Vec<u8>)> {
    let Some(z) = z else { return Vec::new() };
    let span = match bounds {
        Bounds::Rank(start, stop) => match crate::typed::clamp_range(*start, *stop, z.len()) {
            None => (0, 0),
            Some((s, e)) if q.rev => (z.len() - 1 - e, z.len() - s),
            Some((s, e)) => (s, e + 1),
        },
        Bounds::Score(min, max) => score_span(z, *min, *max),
        Bounds::Lex(min, max) => lex_span(z, min, max),
    };
    let mut ranks: Box<dyn Iterator<Item = usize>> = if q.rev {
        Box::new((span.0..span.1).rev())
    } else {
        Box::new(span.0..span.1)
    };
    if let Some((offset, count)) = q.limit {
        if offset < 0 {
            return Vec::new();
        }
        ranks = Box::new(ranks.skip(offset as usize));
        if count >= 0 {
            ranks = Box::new(ranks.take(count as usize));
        }
    }
    ranks
        .filter_map(|r| z.get(r).map(|(s, m)| (s, m.to_vec())))
        .collect()
}

/// Reads the set at `args[1]` and selects; None after replying an error.
fn run_query(ctx: &mut Ctx<'_, '_>, q: &RangeQuery) -> Option<Vec<(f64, Vec<u8>)>> {
    let bounds = parse_bounds(ctx, q)?;
    let key = ctx.arg(1);
    match read::<ZSetValue>(ctx.l, key) {
        Err(()) => {
            ctx.wrong_type();
            None
        }
        Ok(z) => Some(select(z, &bounds, q)),
    }
}

pub(crate) fn reply_elements(ctx: &mut Ctx<'_, '_>, items: &[(f64, Vec<u8>)], with_scores: bool) {
    if with_scores && ctx.reply.resp3 {
        ctx.reply.array(items.len());
        for (s, m) in items {
            ctx.reply.array(2);
            ctx.reply.bulk(m);
            reply_score(ctx, *s);
        }
        return;
    }
    ctx.reply
        .array(items.len() * if with_scores { 2 } else { 1 });
    for (s, m) in items {
        ctx.reply.bulk(m);
        if with_scores {
            reply_score(ctx, *s);
        }
    }
}

/// Parses trailing options from `from`: WITHSCORES, LIMIT, and (for ZRANGE) BYSCORE,
/// BYLEX, REV.
fn parse_options(ctx: &mut Ctx<'_, '_>, q: &mut RangeQuery, from: usize, zrange: bool) -> bool {
    let mut i = from;
    while i < ctx.args.len() {
        // ZRANGE takes WITHSCORES in any mode (BYLEX then gets its own error below);
        // ZRANGEBYLEX does not know the word at all.
        if ctx.is(i, "WITHSCORES") && (zrange || q.by != By::Lex) {
            q.with_scores = true;
        } else if ctx.is(i, "LIMIT") && i + 2 < ctx.args.len() {
            let Some((o, c)) = ctx.int_pair(i + 1, i + 2) else {
                return false;
            };
            q.limit = Some((o, c));
            i += 2;
        } else if zrange && ctx.is(i, "BYSCORE") {
            q.by = By::Score;
        } else if zrange && ctx.is(i, "BYLEX") {
            q.by = By::Lex;
        } else if zrange && ctx.is(i, "REV") {
            q.rev = true;
        } else {
            ctx.syntax_error();
            return false;
        }
        i += 1;
    }
    if q.limit.is_some() && q.by == By::Rank {
        ctx.error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
        return false;
    }
    if q.by == By::Lex && q.with_scores {
        ctx.error("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
        return false;
    }
    true
}

fn range_command(ctx: &mut Ctx<'_, '_>, by: By, rev: bool, zrange: bool) {
    let mut q = RangeQuery {
        by,
        rev,
        with_scores: false,
        limit: None,
        first: 2,
    };
    // BYLEX mode rejects WITHSCORES only once known, so parse BYLEX/BYSCORE/REV first.
    if zrange {
        for i in 4..ctx.args.len() {
            if ctx.is(i, "BYLEX") {
                q.by = By::Lex;
            }
        }
    }
    if !parse_options(ctx, &mut q, 4, zrange) {
        return;
    }
    if let Some(items) = run_query(ctx, &q) {
        reply_elements(ctx, &items, q.with_scores);
    }
}

fn zrange(ctx: &mut Ctx<'_, '_>) {
    range_command(ctx, By::Rank, false, true);
}

fn zrevrange(ctx: &mut Ctx<'_, '_>) {
    range_command(ctx, By::Rank, true, false);
}

fn zrangebyscore(ctx: &mut Ctx<'_, '_>) {
    range_command(ctx, By::Score, false, false);
}

fn zrevrangebyscore(ctx: &mut Ctx<'_, '_>) {
    range_command(ctx, By::Score, true, false);
}

fn zrangebylex(ctx: &mut Ctx<'_, '_>) {
    range_command(ctx, By::Lex, false, false);
}

fn zrevrangebylex(ctx: &mut Ctx<'_, '_>) {
    range_command(ctx, By::Lex, true, false);
}

fn count_generic(ctx: &mut Ctx<'_, '_>, by: By) {
    let q = RangeQuery::plain(by);
    let Some(bounds) = parse_bounds(ctx, &q) else {
        return;
    };
    let key = ctx.arg(1);
    match read::<ZSetValue>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(None) => ctx.reply.int(0),
        Ok(Some(z)) => {
            // Counting needs only the span, not the elements.
            let (lo, hi) = match &bounds {
                Bounds::Score(min, max) => score_span(z, *min, *max),
                Bounds::Lex(min, max) => lex_span(z, min, max),
                Bounds::Rank(..) => (0, 0),
            };
            ctx.reply.int((hi - lo) as i64);
        }
    }
}

fn zcount(ctx: &mut Ctx<'_, '_>) {
    count_generic(ctx, By::Score);
}

fn zlexcount(ctx: &mut Ctx<'_, '_>) {
    count_generic(ctx, By::Lex);
}

fn remrange(ctx: &mut Ctx<'_, '_>, by: By) {
    let q = RangeQuery::plain(by);
    let Some(items) = run_query(ctx, &q) else {
        return;
    };
    let key = ctx.arg(1);
    if let Ok(Some(z)) = write::<ZSetValue>(ctx.l, key, false) {
        for (_, m) in &items {
            z.remove(m);
        }
    }
    if !items.is_empty() {
        let event = match by {
            By::Rank => "zremrangebyrank",
            By::Score => "zremrangebyscore",
            By::Lex => "zremrangebylex",
        };
        ctx.notify(notify::ZSET, event, key);
    }
    drop_if_empty::<ZSetValue>(ctx.l, key);
    ctx.reply.int(items.len() as i64);
}

fn zremrangebyrank(ctx: &mut Ctx<'_, '_>) {
    remrange(ctx, By::Rank);
}

fn zremrangebyscore(ctx: &mut Ctx<'_, '_>) {
    remrange(ctx, By::Score);
}

fn zremrangebylex(ctx: &mut Ctx<'_, '_>) {
    remrange(ctx, By::Lex);
}

fn pop_generic(ctx: &mut Ctx<'_, '_>, max: bool) {
    let count = match ctx.args.len() {
        2 => None,
        3 => match ctx.positive_arg(2) {
            Some(n) => Some(n),
            None => return,
        },
        _ => return ctx.syntax_error(),
    };
    let key = ctx.arg(1);
    let popped: Vec<(f64, Vec<u8>)> = match write::<ZSetValue>(ctx.l, key, false) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => Vec::new(),
        Ok(Some(z)) => {
            let n = count.unwrap_or(1).min(z.len());
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let rank = if max { z.len() - 1 } else { 0 };
                let Some((s, m)) = z.get(rank).map(|(s, m)| (s, m.to_vec())) else {
                    break;
                };
                z.remove(&m);
                out.push((s, m));
            }
            out
        }
    };
    if !popped.is_empty() {
        ctx.notify(notify::ZSET, pop_event(max), key);
    }
    drop_if_empty::<ZSetValue>(ctx.l, key);
    // Without COUNT, RESP3 replies one flat pair, like RESP2.
    if count.is_none() && ctx.reply.resp3 {
        ctx.reply.array(popped.len() * 2);
        for (s, m) in &popped {
            ctx.reply.bulk(m);
            reply_score(ctx, *s);
        }
        return;
    }
    reply_elements(ctx, &popped, true);
}

fn pop_event(max: bool) -> &'static str {
    if max {
        "zpopmax"
    } else {
        "zpopmin"
    }
}

fn zpopmin(ctx: &mut Ctx<'_, '_>) {
    pop_generic(ctx, false);
}

fn zpopmax(ctx: &mut Ctx<'_, '_>) {
    pop_generic(ctx, true);
}

fn zrandmember(ctx: &mut Ctx<'_, '_>) {
    let Some((count, with_scores)) = crate::hash::random_args(ctx, "WITHSCORES") else {
        return;
    };
    let key = ctx.arg(1);
    let all: Vec<(f64, Vec<u8>)> = match read::<ZSetValue>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(z) => z
            .map(|z| z.range(0, z.len()).map(|(s, m)| (s, m.to_vec())).collect())
            .unwrap_or_default(),
    };
    match random_picks(all.len(), count) {
        None => match all.get(fastrand::usize(..all.len().max(1))) {
            Some((_, m)) => ctx.reply.bulk(m),
            None => ctx.reply.null(),
        },
        Some(picks) => {
            let items: Vec<(f64, Vec<u8>)> = picks.into_iter().map(|i| all[i].clone()).collect();
            reply_elements(ctx, &items, with_scores);
        }
    }
}

fn zscan(ctx: &mut Ctx<'_, '_>) {
    scan_command::<ZSetValue>(ctx, true, |z, a| {
        let (next, items) = z.scan(a.cursor, a.count);
        let flat = items
            .into_iter()
            .flat_map(|(m, s)| [m.to_vec(), format_score(s).into_bytes()])
            .collect();
        (next, flat)
    });
}

#[cfg(test)]
mod tests {
    use super::format_score;

    #[test]
    fn scores_print_like_printf_g17() {
        assert_eq!(format_score(1.0), "1");
        assert_eq!(format_score(1.5), "1.5");
        assert_eq!(format_score(0.1), "0.10000000000000001");
        assert_eq!(format_score(-2.25), "-2.25");
        assert_eq!(format_score(1e20), "1e+20");
        assert_eq!(format_score(1e-5), "1.0000000000000001e-05");
        assert_eq!(format_score(123456789.0), "123456789");
        assert_eq!(format_score(f64::INFINITY), "inf");
        assert_eq!(format_score(1e16), "10000000000000000");
        assert_eq!(format_score(1e17), "1e+17");
    }
}

// ------------------------------------------------------------------ multi-key operations

/// Key positions of `CMD dest numkeys key ...` (ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE).
pub fn dest_numkeys_keys(args: &carmine_resp::Args, out: &mut Vec<usize>) {
    out.push(1);
    crate::table::numkeys_keys(args, 2, out);
}

pub fn more_commands() -> Vec<CommandSpec> {
    use crate::list::numkeys_at_1;
    use crate::table::KeySpec;
    let g = "sorted-set";
    let ws = "@write @sortedset @slow";
    let rs = "@read @sortedset @slow";
    let bl = "@write @sortedset @slow @blocking";
    vec![
        cmd("zunion", -3, READONLY, KeySpec::Custom(numkeys_at_1), zunion, g, rs, "Returns the union of multiple sorted sets."),
        cmd("zinter", -3, READONLY, KeySpec::Custom(numkeys_at_1), zinter, g, rs, "Returns the intersect of multiple sorted sets."),
        cmd("zdiff", -3, READONLY, KeySpec::Custom(numkeys_at_1), zdiff, g, rs, "Returns the difference between multiple sorted sets."),
        cmd("zunionstore", -4, WRITE | DENYOOM, KeySpec::Custom(dest_numkeys_keys), zunionstore, g, ws, "Stores the union of multiple sorted sets in a key."),
        cmd("zinterstore", -4, WRITE | DENYOOM, KeySpec::Custom(dest_numkeys_keys), zinterstore, g, ws, "Stores the intersect of multiple sorted sets in a key."),
        cmd("zdiffstore", -4, WRITE | DENYOOM, KeySpec::Custom(dest_numkeys_keys), zdiffstore, g, ws, "Stores the difference of multiple sorted sets in a key."),
        cmd("zintercard", -3, READONLY, KeySpec::Custom(numkeys_at_1), zintercard, g, rs, "Returns the number of members of the intersect of multiple sorted sets."),
        cmd("zrangestore", -5, WRITE | DENYOOM, keys(1, 2, 1), zrangestore, g, ws, "Stores a range of members from sorted set in a key."),
        cmd("zmpop", -4, WRITE, KeySpec::Custom(numkeys_at_1), zmpop, g, ws, "Returns the highest- or lowest-scoring members from one or more sorted sets after removing them."),
        cmd("bzpopmin", -3, WRITE | FAST | BLOCKING, keys(1, -2, 1), bzpopmin, g, bl, "Removes and returns the member with the lowest score from one or more sorted sets. Blocks until a member is available otherwise."),
        cmd("bzpopmax", -3, WRITE | FAST | BLOCKING, keys(1, -2, 1), bzpopmax, g, bl, "Removes and returns the member with the highest score from one or more sorted sets. Blocks until a member available otherwise."),
        cmd("bzmpop", -5, WRITE | BLOCKING, KeySpec::Custom(crate::blocking::timeout_numkeys_keys), bzmpop, g, bl, "Removes and returns a member by score from one or more sorted sets. Blocks until a member is available otherwise."),
    ]
}

/// Elements as commands return them: (score, member), in order.
type Scored = Vec<(f64, Vec<u8>)>;
/// An input of a multi-key operation: (member, score).
type Members = Vec<(Vec<u8>, f64)>;

#[derive(Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// Reads the input of a multi-key operation: a sorted set, or a plain set whose members
/// all score 1 (as Redis allows). Err after replying WRONGTYPE.
fn load_input(ctx: &mut Ctx<'_, '_>, i: usize) -> Result<Option<Members>, ()> {
    let key = ctx.arg(i);
    if let Ok(z) = read::<ZSetValue>(ctx.l, key) {
        return Ok(z.map(|z| z.range(0, z.len()).map(|(s, m)| (m.to_vec(), s)).collect()));
    }
    match read::<carmine_keyspace::SetValue>(ctx.l, key) {
        Ok(s) => Ok(s.map(|s| s.members().into_iter().map(|m| (m, 1.0)).collect())),
        Err(()) => {
            ctx.wrong_type();
            Err(())
        }
    }
}

/// Parses `numkeys key ... [WEIGHTS ...] [AGGREGATE ...] [WITHSCORES]` starting at `at`
/// and computes the result, sorted by (score, member). None after replying an error.
fn combine(
    ctx: &mut Ctx<'_, '_>,
    op: SetOp,
    at: usize,
    allow_withscores: bool,
) -> Option<(Scored, bool)> {
    let numkeys = match carmine_resp::parse_i64(ctx.arg(at)) {
        Some(n) if n > 0 => n as usize,
        Some(_) => {
            let name = ctx.name();
            ctx.error(&format!(
                "ERR at least 1 input key is needed for '{name}' command"
            ));
            return None;
        }
        None => {
            ctx.error("ERR value is not an integer or out of range");
            return None;
        }
    };
    let first = at + 1;
    if first + numkeys > ctx.args.len() {
        ctx.syntax_error();
        return None;
    }
    let mut weights = vec![1.0; numkeys];
    let mut aggregate = Aggregate::Sum;
    let mut with_scores = false;
    let mut i = first + numkeys;
    while i < ctx.args.len() {
        if op != SetOp::Diff && ctx.is(i, "WEIGHTS") && i + numkeys < ctx.args.len() {
            for (w, j) in weights.iter_mut().zip(i + 1..) {
                match parse_float(ctx.arg(j)) {
                    Some(v) => *w = v,
                    None => {
                        ctx.error("ERR weight value is not a float");
                        return None;
                    }
                }
            }
            i += numkeys + 1;
        } else if op != SetOp::Diff && ctx.is(i, "AGGREGATE") && i + 1 < ctx.args.len() {
            aggregate = if ctx.is(i + 1, "SUM") {
                Aggregate::Sum
            } else if ctx.is(i + 1, "MIN") {
                Aggregate::Min
            } else if ctx.is(i + 1, "MAX") {
                Aggregate::Max
            } else {
                ctx.syntax_error();
                return None;
            };
            i += 2;
        } else if allow_withscores && ctx.is(i, "WITHSCORES") {
            with_scores = true;
            i += 1;
        } else {
            ctx.syntax_error();
            return None;
        }
    }
    let mut inputs = Vec::with_capacity(numkeys);
    for k in first..first + numkeys {
        inputs.push(load_input(ctx, k).ok()?);
    }
    let agg = |a: f64, b: f64| -> f64 {
        let v = match aggregate {
            Aggregate::Sum => a + b,
            Aggregate::Min => a.min(b),
            Aggregate::Max => a.max(b),
        };
        if v.is_nan() {
            0.0
        } else {
            v
        }
    };
    let weigh = |s: f64, w: f64| -> f64 {
        let v = s * w;
        if v.is_nan() {
            0.0
        } else {
            v
        }
    };
    let mut acc: std::collections::HashMap<Vec<u8>, f64> = std::collections::HashMap::new();
    match op {
        SetOp::Union => {
            for (input, w) in inputs.iter().zip(&weights) {
                for (m, s) in input.iter().flatten() {
                    let v = weigh(*s, *w);
                    acc.entry(m.clone())
                        .and_modify(|a| *a = agg(*a, v))
                        .or_insert(v);
                }
            }
        }
        SetOp::Inter => {
            if let Some(Some(first_set)) = inputs.first() {
                'members: for (m, s) in first_set {
                    let mut v = weigh(*s, weights[0]);
                    for (input, w) in inputs.iter().zip(&weights).skip(1) {
                        match input
                            .as_ref()
                            .and_then(|set| set.iter().find(|(x, _)| x == m))
                        {
                            Some((_, s2)) => v = agg(v, weigh(*s2, *w)),
                            None => continue 'members,
                        }
                    }
                    acc.insert(m.clone(), v);
                }
            }
        }
        SetOp::Diff => {
            if let Some(Some(first_set)) = inputs.first() {
                let others: std::collections::HashSet<&Vec<u8>> = inputs
                    .iter()
                    .skip(1)
                    .flatten()
                    .flatten()
                    .map(|(m, _)| m)
                    .collect();
                for (m, s) in first_set {
                    if !others.contains(m) {
                        acc.insert(m.clone(), *s);
                    }
                }
            }
        }
    }
    let mut out: Vec<(f64, Vec<u8>)> = acc.into_iter().map(|(m, s)| (s, m)).collect();
    out.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.1.cmp(&b.1))
    });
    Some((out, with_scores))
}

fn store(ctx: &mut Ctx<'_, '_>, items: &[(f64, Vec<u8>)], event: &str) {
    let dst = ctx.arg(1);
    if items.is_empty() {
        if ctx.l.remove(dst).is_some() {
            ctx.notify(notify::GENERIC, "del", dst);
        }
    } else {
        let limits = ctx.shared.keyspace.zset_limits();
        let mut z = ZSetValue::default();
        for (s, m) in items {
            z.insert(m, *s, limits);
        }
        ctx.l.insert(
            dst,
            carmine_keyspace::Entry::new(carmine_keyspace::Value::ZSet(z)),
        );
        ctx.notify(notify::ZSET, event, dst);
    }
    ctx.reply.int(items.len() as i64);
}

fn zunion(ctx: &mut Ctx<'_, '_>) {
    if let Some((items, ws)) = combine(ctx, SetOp::Union, 1, true) {
        reply_elements(ctx, &items, ws);
    }
}

fn zinter(ctx: &mut Ctx<'_, '_>) {
    if let Some((items, ws)) = combine(ctx, SetOp::Inter, 1, true) {
        reply_elements(ctx, &items, ws);
    }
}

fn zdiff(ctx: &mut Ctx<'_, '_>) {
    if let Some((items, ws)) = combine(ctx, SetOp::Diff, 1, true) {
        reply_elements(ctx, &items, ws);
    }
}

fn zunionstore(ctx: &mut Ctx<'_, '_>) {
    if let Some((items, _)) = combine(ctx, SetOp::Union, 2, false) {
        store(ctx, &items, "zunionstore");
    }
}

fn zinterstore(ctx: &mut Ctx<'_, '_>) {
    if let Some((items, _)) = combine(ctx, SetOp::Inter, 2, false) {
        store(ctx, &items, "zinterstore");
    }
}

fn zdiffstore(ctx: &mut Ctx<'_, '_>) {
    if let Some((items, _)) = combine(ctx, SetOp::Diff, 2, false) {
        store(ctx, &items, "zdiffstore");
    }
}

fn zintercard(ctx: &mut Ctx<'_, '_>) {
    // Redis 7.0 parses ZINTERCARD as the other ZINTER/ZUNION/ZDIFF commands: the count,
    // then the keys' types, then the options (LIMIT, as often as given).
    let numkeys = match carmine_resp::parse_i64(ctx.arg(1)) {
        Some(n) if n > 0 => n as usize,
        Some(_) => return ctx.error("ERR at least 1 input key is needed for 'zintercard' command"),
        None => return ctx.error("ERR value is not an integer or out of range"),
    };
    let rest = 2 + numkeys;
    if rest > ctx.args.len() {
        return ctx.syntax_error();
    }
    let mut inputs = Vec::with_capacity(numkeys);
    for k in 2..rest {
        let Ok(input) = load_input(ctx, k) else {
            return;
        };
        inputs.push(input.unwrap_or_default());
    }
    let mut limit = 0usize;
    let mut j = rest;
    while j < ctx.args.len() {
        if j + 1 < ctx.args.len() && ctx.is(j, "LIMIT") {
            match carmine_resp::parse_i64(ctx.arg(j + 1)) {
                Some(n) if n >= 0 => limit = n as usize,
                _ => return ctx.error("ERR LIMIT can't be negative"),
            }
            j += 2;
        } else {
            return ctx.syntax_error();
        }
    }
    let Some((first, others)) = inputs.split_first() else {
        return ctx.reply.int(0);
    };
    let others: Vec<std::collections::HashSet<&Vec<u8>>> = others
        .iter()
        .map(|set| set.iter().map(|(m, _)| m).collect())
        .collect();
    let mut n = first
        .iter()
        .filter(|(m, _)| others.iter().all(|o| o.contains(m)))
        .count();
    if limit > 0 {
        n = n.min(limit);
    }
    ctx.reply.int(n as i64);
}

fn zrangestore(ctx: &mut Ctx<'_, '_>) {
    let mut q = RangeQuery {
        by: By::Rank,
        rev: false,
        with_scores: false,
        limit: None,
        first: 3,
    };
    if !parse_options(ctx, &mut q, 5, true) {
        return;
    }
    if q.with_scores {
        return ctx.syntax_error();
    }
    let Some(bounds) = parse_bounds(ctx, &q) else {
        return;
    };
    let src = ctx.arg(2);
    let items = match read::<ZSetValue>(ctx.l, src) {
        Err(()) => return ctx.wrong_type(),
        Ok(z) => select(z, &bounds, &q),
    };
    store(ctx, &items, "zrangestore");
}

/// Pops up to `count` members from the set at `key`; None if the key holds no sorted set.
fn pop_from(
    ctx: &mut Ctx<'_, '_>,
    key: &[u8],
    max: bool,
    count: usize,
) -> Result<Option<Scored>, ()> {
    let popped = match write::<ZSetValue>(ctx.l, key, false)? {
        None => return Ok(None),
        Some(z) if z.is_empty() => return Ok(None),
        Some(z) => {
            let mut out = Vec::new();
            for _ in 0..count.min(z.len()) {
                let rank = if max { z.len() - 1 } else { 0 };
                let Some((s, m)) = z.get(rank).map(|(s, m)| (s, m.to_vec())) else {
                    break;
                };
                z.remove(&m);
                out.push((s, m));
            }
            out
        }
    };
    ctx.notify(notify::ZSET, pop_event(max), key);
    drop_if_empty::<ZSetValue>(ctx.l, key);
    Ok(Some(popped))
}

/// `... MIN|MAX [COUNT n]` after the keys of ZMPOP/BZMPOP.
fn mpop_options(ctx: &mut Ctx<'_, '_>, at: usize) -> Option<(bool, usize)> {
    let max = if ctx.is(at, "MIN") {
        false
    } else if ctx.is(at, "MAX") {
        true
    } else {
        ctx.syntax_error();
        return None;
    };
    let mut count = 1;
    if ctx.args.len() == at + 3 && ctx.is(at + 1, "COUNT") {
        match carmine_resp::parse_i64(ctx.arg(at + 2)) {
            Some(n) if n > 0 => count = n as usize,
            _ => {
                ctx.error("ERR count should be greater than 0");
                return None;
            }
        }
    } else if ctx.args.len() != at + 1 {
        ctx.syntax_error();
        return None;
    }
    Some((max, count))
}

fn reply_mpop(ctx: &mut Ctx<'_, '_>, key: &[u8], items: &[(f64, Vec<u8>)], max: bool) {
    let n = items.len().to_string();
    ctx.propagate_as(&[zpop_name(max), key, n.as_bytes()]);
    ctx.reply.array(2);
    ctx.reply.bulk(key);
    ctx.reply.array(items.len());
    for (s, m) in items {
        ctx.reply.array(2);
        ctx.reply.bulk(m);
        reply_score(ctx, *s);
    }
}

fn zmpop(ctx: &mut Ctx<'_, '_>) {
    let Some(numkeys) = crate::list::positive_numkeys(ctx, 1) else {
        return;
    };
    if 2 + numkeys >= ctx.args.len() {
        return ctx.syntax_error();
    }
    let Some((max, count)) = mpop_options(ctx, 2 + numkeys) else {
        return;
    };
    for i in 2..2 + numkeys {
        let key = ctx.arg(i);
        match pop_from(ctx, key, max, count) {
            Err(()) => return ctx.wrong_type(),
            Ok(Some(items)) => return reply_mpop(ctx, key, &items, max),
            Ok(None) => {}
        }
    }
    ctx.reply.null_array();
}

fn bzpop(ctx: &mut Ctx<'_, '_>, max: bool) {
    let last = ctx.args.len() - 1;
    let Some(timeout) = crate::blocking::timeout_arg(ctx, last) else {
        return crate::blocking::unblock(ctx.shared, ctx.session);
    };
    for i in 1..last {
        let key = ctx.arg(i);
        match pop_from(ctx, key, max, 1) {
            Err(()) if ctx.session.blocked.is_some() => {}
            Err(()) => {
                crate::blocking::unblock(ctx.shared, ctx.session);
                return ctx.wrong_type();
            }
            Ok(Some(items)) => {
                crate::blocking::unblock(ctx.shared, ctx.session);
                let Some((s, m)) = items.first() else {
                    return ctx.reply.null_array();
                };
                ctx.propagate_as(&[zpop_name(max), key]);
                ctx.reply.array(3);
                ctx.reply.bulk(key);
                ctx.reply.bulk(m);
                return reply_score(ctx, *s);
            }
            Ok(None) => {}
        }
    }
    let keys = (1..last).map(|i| ctx.arg(i).to_vec()).collect();
    crate::blocking::block(ctx, keys, timeout, true);
}

fn zpop_name(max: bool) -> &'static [u8] {
    if max {
        b"ZPOPMAX"
    } else {
        b"ZPOPMIN"
    }
}

fn bzpopmin(ctx: &mut Ctx<'_, '_>) {
    bzpop(ctx, false);
}

fn bzpopmax(ctx: &mut Ctx<'_, '_>) {
    bzpop(ctx, true);
}

fn bzmpop(ctx: &mut Ctx<'_, '_>) {
    let Some(timeout) = crate::blocking::timeout_arg(ctx, 1) else {
        return crate::blocking::unblock(ctx.shared, ctx.session);
    };
    let Some(numkeys) = crate::list::positive_numkeys(ctx, 2) else {
        return crate::blocking::unblock(ctx.shared, ctx.session);
    };
    if 3 + numkeys >= ctx.args.len() {
        crate::blocking::unblock(ctx.shared, ctx.session);
        return ctx.syntax_error();
    }
    let Some((max, count)) = mpop_options(ctx, 3 + numkeys) else {
        return crate::blocking::unblock(ctx.shared, ctx.session);
    };
    for i in 3..3 + numkeys {
        let key = ctx.arg(i);
        match pop_from(ctx, key, max, count) {
            Err(()) if ctx.session.blocked.is_some() => {}
            Err(()) => {
                crate::blocking::unblock(ctx.shared, ctx.session);
                return ctx.wrong_type();
            }
            Ok(Some(items)) => {
                crate::blocking::unblock(ctx.shared, ctx.session);
                return reply_mpop(ctx, key, &items, max);
            }
            Ok(None) => {}
        }
    }
    let keys = (3..3 + numkeys).map(|i| ctx.arg(i).to_vec()).collect();
    crate::blocking::block(ctx, keys, timeout, true);
}
