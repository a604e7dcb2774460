//! Strings: GET, SET and its relatives, counters, ranges, LCS.

use carmine_keyspace::notify;
use carmine_keyspace::ops::{self, SetCondition, SetExpiry, SetOptions};
use carmine_keyspace::{Entry, KeyspaceError, StrValue, Value};

use crate::table::{cmd, flags::*, keys, CommandSpec};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "string";
    let rf = "@read @string @fast";
    let wf = "@write @string @fast";
    let ws = "@write @string @slow";
    vec![
        cmd("get", 2, READONLY | FAST, keys(1, 1, 1), get, g, rf, "Returns the string value of a key."),
        cmd("set", -3, WRITE | DENYOOM, keys(1, 1, 1), set, g, ws, "Sets the string value of a key, ignoring its type."),
        cmd("setnx", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), setnx, g, wf, "Set the string value of a key only when the key doesn't exist."),
        cmd("setex", 4, WRITE | DENYOOM, keys(1, 1, 1), setex, g, ws, "Sets the string value and expiration time of a key."),
        cmd("psetex", 4, WRITE | DENYOOM, keys(1, 1, 1), psetex, g, ws, "Sets the string value and expiration time in milliseconds of a key."),
        cmd("getset", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), getset, g, wf, "Returns the previous string value of a key after setting it to a new value."),
        cmd("getdel", 2, WRITE | FAST, keys(1, 1, 1), getdel, g, wf, "Returns the string value of a key after deleting the key."),
        cmd("getex", -2, WRITE | FAST, keys(1, 1, 1), getex, g, wf, "Returns the string value of a key after setting its expiration time."),
        cmd("mget", -2, READONLY | FAST, keys(1, -1, 1), mget, g, rf, "Atomically returns the string values of one or more keys."),
        cmd("mset", -3, WRITE | DENYOOM, keys(1, -1, 2), mset, g, ws, "Atomically creates or modifies the string values of one or more keys."),
        cmd("msetnx", -3, WRITE | DENYOOM, keys(1, -1, 2), msetnx, g, ws, "Atomically modifies the string values of one or more keys only when all keys don't exist."),
        cmd("incr", 2, WRITE | DENYOOM | FAST, keys(1, 1, 1), incr, g, wf, "Increments the integer value of a key by one."),
        cmd("decr", 2, WRITE | DENYOOM | FAST, keys(1, 1, 1), decr, g, wf, "Decrements the integer value of a key by one."),
        cmd("incrby", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), incrby, g, wf, "Increments the integer value of a key by a number."),
        cmd("decrby", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), decrby, g, wf, "Decrements a number from the integer value of a key."),
        cmd("incrbyfloat", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), incrbyfloat, g, wf, "Increment the floating point value of a key by a number."),
        cmd("append", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), append, g, wf, "Appends a string to the value of a key."),
        cmd("strlen", 2, READONLY | FAST, keys(1, 1, 1), strlen, g, rf, "Returns the length of a string value."),
        cmd("getrange", 4, READONLY, keys(1, 1, 1), getrange, g, "@read @string @slow", "Returns a substring of the string stored at a key."),
        cmd("substr", 4, READONLY, keys(1, 1, 1), getrange, g, "@read @string @slow", "Returns a substring from a string value."),
        cmd("setrange", 4, WRITE | DENYOOM, keys(1, 1, 1), setrange, g, ws, "Overwrites a part of a string value with another by an offset."),
        cmd("lcs", -3, READONLY, keys(1, 2, 1), lcs, g, "@read @string @slow", "Finds the longest common substring."),
    ]
}

/// Writes a string value of any encoding as a bulk reply.
#[inline]
fn bulk_str(reply: &mut carmine_resp::ReplyBuf, s: &StrValue) {
    match s {
        StrValue::Int(n) => reply.bulk_int(*n),
        StrValue::Big(p) => reply.bulk_parts(p.len(), p.iter()),
        other => other.with_bytes(|b| reply.bulk(b)),
    }
}

/// Replies with the string at `key`, or null; WRONGTYPE for another type.
fn reply_string(ctx: &mut Ctx<'_, '_>, key: &[u8]) {
    match ctx.l.get(key) {
        None => {
            ctx.stats.hit(false);
            ctx.reply.null();
        }
        Some(e) => {
            ctx.stats.hit(true);
            match &e.value {
                Value::Str(s) => bulk_str(ctx.reply, s),
                #[allow(unreachable_patterns)]
                _ => ctx.wrong_type(),
            }
        }
    }
}

fn get(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    reply_string(ctx, key);
}

/// Turns a relative or absolute expiry argument into Unix milliseconds, or replies with
/// Redis' "invalid expire time" error.
pub fn expire_arg(ctx: &mut Ctx<'_, '_>, i: usize, unit_ms: u64, absolute: bool) -> Option<u64> {
    let n = ctx.int_arg(i)?;
    let invalid = |ctx: &mut Ctx<'_, '_>| {
        let name = ctx.name();
        ctx.error(&format!("ERR invalid expire time in '{name}' command"));
    };
    if n <= 0 {
        invalid(ctx);
        return None;
    }
    let Some(ms) = (n as u64).checked_mul(unit_ms) else {
        invalid(ctx);
        return None;
    };
    let at = if absolute {
        Some(ms)
    } else {
        ctx.l.now().checked_add(ms)
    };
    match at {
        Some(at) if at <= i64::MAX as u64 => Some(at),
        _ => {
            invalid(ctx);
            None
        }
    }
}

/// The deadline (Unix ms) given by an EX/PX/EXAT/PXAT option whose value is argument `i`.
fn expiry_option(ctx: &mut Ctx<'_, '_>, option: &[u8], i: usize) -> Option<u64> {
    let (unit, absolute) = match option {
        b"EX" => (1000, false),
        b"PX" => (1, false),
        b"EXAT" => (1000, true),
        _ => (1, true),
    };
    expire_arg(ctx, i, unit, absolute)
}

fn set(ctx: &mut Ctx<'_, '_>) {
    let mut opts = SetOptions::default();
    let mut i = 3;
    let mut seen_expiry = false;
    while i < ctx.args.len() {
        let has_next = i + 1 < ctx.args.len();
        let a = ctx.arg(i).to_ascii_uppercase();
        match a.as_slice() {
            b"NX" if opts.condition == SetCondition::Always => {
                opts.condition = SetCondition::IfAbsent
            }
            b"XX" if opts.condition == SetCondition::Always => {
                opts.condition = SetCondition::IfPresent
            }
            b"GET" => opts.get = true,
            b"KEEPTTL" if !seen_expiry => {
                opts.expiry = SetExpiry::Keep;
                seen_expiry = true;
            }
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if has_next && !seen_expiry => {
                let Some(at) = expiry_option(ctx, &a, i + 1) else {
                    return;
                };
                opts.expiry = SetExpiry::At(at);
                seen_expiry = true;
                i += 1;
            }
            _ => return ctx.syntax_error(),
        }
        i += 1;
    }
    let (key, value) = (ctx.arg(1), ctx.arg(2));
    let result = ops::set(ctx.l, key, value, &opts);
    if let Ok(out) = &result {
        notify_set(ctx, key, out.written, &opts);
        if out.written {
            propagate_set(ctx, key, value, &opts);
        }
    }
    match result {
        Err(e) => ctx.keyspace_error(e),
        Ok(out) if opts.get => match out.old {
            Some(v) => ctx.reply.bulk(&v),
            None => ctx.reply.null(),
        },
        Ok(out) if out.written => ctx.reply.ok(),
        Ok(_) => ctx.reply.null(),
    }
}

/// What a SET goes on the stream as (Redis 7.0): with a deadline, `SET key value PXAT ms`
/// (a replica that applies it late keeps the same deadline); with GET, without the GETs.
fn propagate_set(ctx: &mut Ctx<'_, '_>, key: &[u8], value: &[u8], opts: &SetOptions) {
    if matches!(opts.expiry, SetExpiry::At(at) if at <= ctx.l.now() && ctx.l.past_deadline_deletes())
    {
        // The deadline had passed and the key is gone here: a replica, which would keep
        // a SET with a past deadline for its master's DEL, gets that DEL now.
        ctx.propagate_as(&[b"DEL", key]);
    } else if let SetExpiry::At(at) = opts.expiry {
        let at = at.to_string();
        ctx.propagate_as(&[b"SET", key, value, b"PXAT", at.as_bytes()]);
    } else if opts.get && ctx.l.recording_effects() {
        let argv: Vec<Vec<u8>> = (0..ctx.args.len())
            .filter(|&i| i < 3 || !ctx.is(i, "GET"))
            .map(|i| ctx.arg(i).to_vec())
            .collect();
        ctx.l.propagate_instead(argv);
    }
}

/// `set`, then `expire` when the write set a deadline (Redis' order).
fn notify_set(ctx: &Ctx<'_, '_>, key: &[u8], written: bool, opts: &SetOptions) {
    if written {
        ctx.notify(notify::STRING, "set", key);
        if matches!(opts.expiry, SetExpiry::At(_)) {
            ctx.notify(notify::GENERIC, "expire", key);
        }
    }
}

fn set_simple(ctx: &mut Ctx<'_, '_>, value_at: usize, opts: SetOptions) -> Option<ops::SetOutcome> {
    let (key, value) = (ctx.arg(1), ctx.arg(value_at));
    match ops::set(ctx.l, key, value, &opts) {
        Ok(o) => {
            notify_set(ctx, key, o.written, &opts);
            Some(o)
        }
        Err(e) => {
            ctx.keyspace_error(e);
            None
        }
    }
}

fn setnx(ctx: &mut Ctx<'_, '_>) {
    let opts = SetOptions {
        condition: SetCondition::IfAbsent,
        ..Default::default()
    };
    if let Some(o) = set_simple(ctx, 2, opts) {
        ctx.reply.int(i64::from(o.written));
    }
}

fn setex_generic(ctx: &mut Ctx<'_, '_>, unit: u64) {
    let Some(at) = expire_arg(ctx, 2, unit, false) else {
        return;
    };
    let opts = SetOptions {
        expiry: SetExpiry::At(at),
        ..Default::default()
    };
    if set_simple(ctx, 3, opts).is_some() {
        let (key, value, at) = (ctx.arg(1), ctx.arg(3), at.to_string());
        ctx.propagate_as(&[b"SET", key, value, b"PXAT", at.as_bytes()]);
        ctx.reply.ok();
    }
}

fn setex(ctx: &mut Ctx<'_, '_>) {
    setex_generic(ctx, 1000);
}

fn psetex(ctx: &mut Ctx<'_, '_>) {
    setex_generic(ctx, 1);
}

fn getset(ctx: &mut Ctx<'_, '_>) {
    let opts = SetOptions {
        get: true,
        ..Default::default()
    };
    if let Some(o) = set_simple(ctx, 2, opts) {
        let (key, value) = (ctx.arg(1), ctx.arg(2));
        ctx.propagate_as(&[b"SET", key, value]);
        match o.old {
            Some(v) => ctx.reply.bulk(&v),
            None => ctx.reply.null(),
        }
    }
}

fn getdel(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match ops::get_str(ctx.l, key) {
        Err(e) => ctx.keyspace_error(e),
        Ok(None) => ctx.reply.null(),
        Ok(Some(s)) => {
            let v = s.to_vec();
            ctx.l.remove(key);
            ctx.notify(notify::GENERIC, "del", key);
            ctx.propagate_as(&[b"DEL", key]);
            ctx.reply.bulk(&v);
        }
    }
}

fn getex(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    // None: leave the deadline; Some(0): PERSIST; Some(t): new deadline.
    let mut new_deadline = None;
    let mut i = 2;
    while i < ctx.args.len() {
        let a = ctx.arg(i).to_ascii_uppercase();
        let has_next = i + 1 < ctx.args.len();
        match a.as_slice() {
            b"PERSIST" if new_deadline.is_none() => new_deadline = Some(0),
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if has_next && new_deadline.is_none() => {
                let Some(at) = expiry_option(ctx, &a, i + 1) else {
                    return;
                };
                new_deadline = Some(at);
                i += 1;
            }
            _ => return ctx.syntax_error(),
        }
        i += 1;
    }
    let v = match ops::get_str(ctx.l, key) {
        Err(e) => return ctx.keyspace_error(e),
        Ok(None) => return ctx.reply.null(),
        Ok(Some(s)) => s.to_vec(),
    };
    // GETEX is never propagated as it is: PERSIST, DEL or PEXPIREAT, or nothing.
    match new_deadline {
        Some(0) if ops::persist(ctx.l, key) => {
            ctx.notify(notify::GENERIC, "persist", key);
            ctx.propagate_as(&[b"PERSIST", key]);
        }
        // PERSIST on a key without a deadline: nothing changes.
        Some(0) => {}
        Some(at) if at <= ctx.l.now() && ctx.l.past_deadline_deletes() => {
            ctx.l.remove(key);
            ctx.notify(notify::GENERIC, "del", key);
            ctx.propagate_as(&[b"DEL", key]);
        }
        Some(at) => {
            ctx.l.set_expire(key, at);
            ctx.notify(notify::GENERIC, "expire", key);
            let at = at.to_string();
            ctx.propagate_as(&[b"PEXPIREAT", key, at.as_bytes()]);
        }
        None => {}
    }
    ctx.reply.bulk(&v);
}

fn mget(ctx: &mut Ctx<'_, '_>) {
    prefetch_keys(ctx, 1);
    ctx.reply.array(ctx.args.len() - 1);
    for i in 1..ctx.args.len() {
        let key = ctx.arg(i);
        match ctx.l.get(key) {
            Some(Entry {
                value: Value::Str(s),
                ..
            }) => {
                ctx.stats.hit(true);
                bulk_str(ctx.reply, s);
            }
            #[allow(unreachable_patterns)]
            Some(_) => ctx.reply.null(),
            None => {
                ctx.stats.hit(false);
                ctx.reply.null();
            }
        }
    }
}

fn mset_pairs_ok(ctx: &mut Ctx<'_, '_>) -> bool {
    if ctx.args.len().is_multiple_of(2) {
        let name = ctx.name();
        ctx.error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return false;
    }
    true
}

fn mset(ctx: &mut Ctx<'_, '_>) {
    if !mset_pairs_ok(ctx) {
        return;
    }
    prefetch_keys(ctx, 2);
    for i in (1..ctx.args.len()).step_by(2) {
        let (k, v) = (ctx.arg(i), ctx.arg(i + 1));
        ctx.l
            .insert(k, Entry::new(Value::Str(StrValue::from_bytes(v))));
        ctx.notify(notify::STRING, "set", k);
    }
    ctx.reply.ok();
}

/// The keys of MGET and MSET (every `step`-th argument from the first) are in as many
/// tables, each lookup a chain of cache misses: started together first. MSET of ten
/// random keys (redis-benchmark's) took 3.0 us of server CPU instead of 3.8-4.1.
fn prefetch_keys(ctx: &mut Ctx<'_, '_>, step: usize) {
    let args = ctx.args;
    // One key has no other miss to wait with.
    if args.len() <= 1 + step {
        return;
    }
    ctx.l
        .prefetch_held((1..args.len()).step_by(step).filter_map(|i| args.get(i)));
}

fn msetnx(ctx: &mut Ctx<'_, '_>) {
    if !mset_pairs_ok(ctx) {
        return;
    }
    prefetch_keys(ctx, 2);
    for i in (1..ctx.args.len()).step_by(2) {
        let k = ctx.arg(i);
        if ctx.l.exists(k) {
            return ctx.reply.int(0);
        }
    }
    for i in (1..ctx.args.len()).step_by(2) {
        let (k, v) = (ctx.arg(i), ctx.arg(i + 1));
        ctx.l
            .insert(k, Entry::new(Value::Str(StrValue::from_bytes(v))));
        ctx.notify(notify::STRING, "set", k);
    }
    ctx.reply.int(1);
}

fn incr_generic(ctx: &mut Ctx<'_, '_>, delta: i64) {
    let key = ctx.arg(1);
    match ops::incr_by(ctx.l, key, delta) {
        Ok(v) => {
            ctx.notify(notify::STRING, "incrby", key);
            ctx.reply.int(v)
        }
        Err(e) => ctx.keyspace_error(e),
    }
}

fn incr(ctx: &mut Ctx<'_, '_>) {
    incr_generic(ctx, 1);
}

fn decr(ctx: &mut Ctx<'_, '_>) {
    incr_generic(ctx, -1);
}

fn incrby(ctx: &mut Ctx<'_, '_>) {
    if let Some(d) = ctx.int_arg(2) {
        incr_generic(ctx, d);
    }
}

fn decrby(ctx: &mut Ctx<'_, '_>) {
    let Some(d) = ctx.int_arg(2) else { return };
    match d.checked_neg() {
        Some(n) => incr_generic(ctx, n),
        None => ctx.error("ERR decrement would overflow"),
    }
}

fn incrbyfloat(ctx: &mut Ctx<'_, '_>) {
    let Some(d) = ctx.long_double_arg(2) else {
        return;
    };
    let key = ctx.arg(1);
    match ops::incr_by_float(ctx.l, key, d) {
        Ok(text) => {
            ctx.notify(notify::STRING, "incrbyfloat", key);
            // The result, not the increment: float arithmetic need not agree on replicas.
            ctx.propagate_as(&[b"SET", key, &text, b"KEEPTTL"]);
            ctx.reply.bulk(&text)
        }
        Err(e) => ctx.keyspace_error(e),
    }
}

fn append(ctx: &mut Ctx<'_, '_>) {
    let (key, data) = (ctx.arg(1), ctx.arg(2));
    match ops::append(ctx.l, key, data) {
        Ok(n) => {
            ctx.notify(notify::STRING, "append", key);
            ctx.reply.int(n as i64)
        }
        Err(e) => ctx.keyspace_error(e),
    }
}

fn strlen(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match ops::get_str(ctx.l, key) {
        Ok(s) => ctx.reply.int(s.map_or(0, |s| s.len() as i64)),
        Err(e) => ctx.keyspace_error(e),
    }
}

fn getrange(ctx: &mut Ctx<'_, '_>) {
    let Some((start, end)) = ctx.int_pair(2, 3) else {
        return;
    };
    let key = ctx.arg(1);
    match ops::get_str(ctx.l, key) {
        Err(e) => ctx.keyspace_error(e),
        Ok(None) => ctx.reply.bulk(b""),
        Ok(Some(s)) => match ops::range_bounds(s.len(), start, end) {
            Some((first, last)) => ctx.reply.bulk(&s.range_to_vec(first, last + 1)),
            None => ctx.reply.bulk(b""),
        },
    }
}

fn setrange(ctx: &mut Ctx<'_, '_>) {
    let Some(offset) = ctx.int_arg(2) else { return };
    if offset < 0 {
        return ctx.error("ERR offset is out of range");
    }
    let (key, data) = (ctx.arg(1), ctx.arg(3));
    match ops::set_range(ctx.l, key, offset as usize, data) {
        Ok(n) => {
            if !data.is_empty() {
                ctx.notify(notify::STRING, "setrange", key);
            }
            ctx.reply.int(n as i64)
        }
        Err(KeyspaceError::StringTooLong) => {
            ctx.error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        }
        Err(e) => ctx.keyspace_error(e),
    }
}

fn lcs(ctx: &mut Ctx<'_, '_>) {
    let (mut want_len, mut want_idx, mut with_len, mut min_len) = (false, false, false, 0i64);
    let mut i = 3;
    while i < ctx.args.len() {
        if ctx.is(i, "LEN") {
            want_len = true;
        } else if ctx.is(i, "IDX") {
            want_idx = true;
        } else if ctx.is(i, "WITHMATCHLEN") {
            with_len = true;
        } else if ctx.is(i, "MINMATCHLEN") && i + 1 < ctx.args.len() {
            let Some(v) = ctx.int_arg(i + 1) else { return };
            min_len = v.max(0);
            i += 1;
        } else {
            return ctx.syntax_error();
        }
        i += 1;
    }
    if want_len && want_idx {
        return ctx.error("ERR If you want both the length and indexes, please just use IDX.");
    }
    let fetch = |ctx: &mut Ctx<'_, '_>, i: usize| -> Result<Vec<u8>, KeyspaceError> {
        let key = ctx.arg(i);
        Ok(ops::get_str(ctx.l, key)?
            .map(|s| s.to_vec())
            .unwrap_or_default())
    };
    let (a, b) = match (fetch(ctx, 1), fetch(ctx, 2)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return ctx.error("ERR The specified keys must contain string values"),
    };
    let cells = (a.len() as u64 + 1)
        .saturating_mul(b.len() as u64 + 1)
        .saturating_mul(4);
    let limit = ctx
        .shared
        .config
        .tunables
        .proto_max_bulk_len
        .load(std::sync::atomic::Ordering::Relaxed);
    if cells > limit {
        return ctx
            .error("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
    }
    let result = crate::lcs::lcs(&a, &b);
    if want_len {
        return ctx.reply.int(result.len as i64);
    }
    if !want_idx {
        return ctx.reply.bulk(&result.text);
    }
    let matches: Vec<_> = result
        .ranges
        .iter()
        .filter(|r| (r.len as i64) >= min_len)
        .collect();
    ctx.reply.map(2);
    ctx.reply.bulk(b"matches");
    ctx.reply.array(matches.len());
    for m in matches {
        ctx.reply.array(if with_len { 3 } else { 2 });
        ctx.reply.array(2);
        ctx.reply.int(m.a_start as i64);
        ctx.reply.int((m.a_start + m.len - 1) as i64);
        ctx.reply.array(2);
        ctx.reply.int(m.b_start as i64);
        ctx.reply.int((m.b_start + m.len - 1) as i64);
        if with_len {
            ctx.reply.int(m.len as i64);
        }
    }
    ctx.reply.bulk(b"len");
    ctx.reply.int(result.len as i64);
}
