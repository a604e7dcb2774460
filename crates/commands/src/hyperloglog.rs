//! HyperLogLog: PFADD, PFCOUNT, PFMERGE, PFDEBUG, on strings in Redis' HLL byte layout
//! (see carmine_keyspace::hll).

use carmine_keyspace::notify;
use std::sync::atomic::Ordering;

use carmine_keyspace::hll::{self, Corrupt};
use carmine_keyspace::{ops, Entry, StrValue, Value};

use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::Ctx;

const NOT_HLL: &str = "WRONGTYPE Key is not a valid HyperLogLog string value.";
const CORRUPT: &str = "INVALIDOBJ Corrupted HLL object detected";

pub fn commands() -> Vec<CommandSpec> {
    let g = "hyperloglog";
    vec![
        cmd("pfadd", -2, WRITE | DENYOOM | FAST, keys(1, 1, 1), pfadd, g, "@write @hyperloglog @fast", "Adds elements to a HyperLogLog key. Creates the key if it doesn't exist."),
        cmd("pfcount", -2, READONLY | MAY_REPLICATE, keys(1, -1, 1), pfcount, g, "@read @hyperloglog @slow", "Returns the approximated cardinality of the set(s) observed by the HyperLogLog key(s)."),
        cmd("pfmerge", -2, WRITE | DENYOOM, keys(1, -1, 1), pfmerge, g, "@write @hyperloglog @slow", "Merges one or more HyperLogLog values into a single key."),
        cmd("pfdebug", 3, WRITE | DENYOOM | ADMIN, keys(2, 2, 1), pfdebug, g, "@write @hyperloglog @admin @slow @dangerous", "Internal commands for debugging HyperLogLog values."),
        cmd("pfselftest", 1, ADMIN, KeySpec::None, pfselftest, g, "@hyperloglog @admin @slow @dangerous", "An internal command for testing HyperLogLog values."),
    ]
}

fn sparse_max(ctx: &Ctx<'_, '_>) -> usize {
    ctx.shared
        .config
        .tunables
        .hll_sparse_max_bytes
        .load(Ordering::Relaxed) as usize
}

/// Checks the value at `key`: Ok(false) when missing, Ok(true) when a valid HLL; replies
/// and returns Err otherwise.
fn check(ctx: &mut Ctx<'_, '_>, key: &[u8]) -> Result<bool, ()> {
    match ops::get_str(ctx.l, key) {
        Ok(None) => Ok(false),
        Ok(Some(v)) if v.as_bytes().is_some_and(hll::is_hll) => Ok(true),
        Ok(Some(_)) => {
            ctx.error(NOT_HLL);
            Err(())
        }
        Err(e) => {
            ctx.keyspace_error(e);
            Err(())
        }
    }
}

/// The HLL string at `key` for an in-place edit, without counting it as a write yet:
/// PFADD of elements already counted, or PFCOUNT with a fresh cache, changes nothing.
fn hll_bytes<'l>(ctx: &'l mut Ctx<'_, '_>, key: &[u8]) -> Option<&'l mut Vec<u8>> {
    let db = ctx.l.db();
    let e = ctx.l.table_in(db, key).peek_mut(key)?;
    Some(e.value.as_str_mut()?.make_raw())
}

fn create(ctx: &mut Ctx<'_, '_>, key: &[u8]) {
    ctx.l.insert(
        key,
        Entry::new(Value::Str(StrValue::raw(hll::new_sparse()))),
    );
}

fn pfadd(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    let Ok(exists) = check(ctx, key) else {
        return;
    };
    let mut updated = !exists;
    if !exists {
        create(ctx, key);
    }
    let max_bytes = sparse_max(ctx);
    let args = ctx.args;
    let Some(s) = hll_bytes(ctx, key) else {
        return ctx.error(CORRUPT);
    };
    for i in 2..args.len() {
        match hll::add(s, args.get(i).unwrap_or_default(), max_bytes) {
            Ok(changed) => updated |= changed,
            Err(Corrupt) => return ctx.error(CORRUPT),
        }
    }
    if updated {
        hll::invalidate_cache(s);
        let db = ctx.l.db();
        ctx.l.signal_modified(db, key);
        ctx.notify(notify::STRING, "pfadd", key);
    }
    ctx.reply.int(i64::from(updated));
}

/// The register-wise maximum of the HLLs at arguments 1.. (missing keys count as
/// empty), and whether any of them is dense; None after replying an error.
fn merge_args(ctx: &mut Ctx<'_, '_>) -> Option<(Vec<u8>, bool)> {
    let mut max = vec![0u8; hll::REGISTERS];
    let mut dense = false;
    for i in 1..ctx.args.len() {
        let key = ctx.arg(i);
        match check(ctx, key) {
            Err(()) => return None,
            Ok(false) => continue,
            Ok(true) => {}
        }
        let merged = ops::get_str(ctx.l, key)
            .ok()
            .flatten()
            .and_then(StrValue::as_bytes)
            .map(|s| {
                dense |= hll::is_dense(s);
                hll::merge_into(&mut max, s)
            });
        if merged != Some(Ok(())) {
            ctx.error(CORRUPT);
            return None;
        }
    }
    Some((max, dense))
}

fn pfcount(ctx: &mut Ctx<'_, '_>) {
    if ctx.args.len() > 2 {
        if let Some((max, _)) = merge_args(ctx) {
            ctx.reply.int(hll::count_registers(&max) as i64);
        }
        return;
    }
    let key = ctx.arg(1);
    match check(ctx, key) {
        Err(()) => return,
        Ok(false) => return ctx.reply.int(0),
        Ok(true) => {}
    }
    let Some(s) = hll_bytes(ctx, key) else {
        return ctx.error(CORRUPT);
    };
    if let Some(n) = hll::cached_count(s) {
        return ctx.reply.int(n as i64);
    }
    let Ok(n) = hll::count(s) else {
        return ctx.error(CORRUPT);
    };
    // The cache lives in the string, so refreshing it is a write (Redis propagates it).
    hll::set_cached_count(s, n);
    let db = ctx.l.db();
    ctx.l.signal_modified(db, key);
    ctx.reply.int(n as i64);
}

fn pfmerge(ctx: &mut Ctx<'_, '_>) {
    let Some((max, dense)) = merge_args(ctx) else {
        return;
    };
    let key = ctx.arg(1);
    if ops::get_str(ctx.l, key).ok().flatten().is_none() {
        create(ctx, key);
    }
    let max_bytes = sparse_max(ctx);
    let Some(s) = hll_bytes(ctx, key) else {
        return ctx.error(CORRUPT);
    };
    if dense && hll::to_dense(s).is_err() {
        return ctx.error(CORRUPT);
    }
    for (i, &v) in max.iter().enumerate() {
        if v != 0 && hll::set_register(s, i, v, max_bytes).is_err() {
            return ctx.error(CORRUPT);
        }
    }
    hll::invalidate_cache(s);
    let db = ctx.l.db();
    ctx.l.signal_modified(db, key);
    // Redis reports a merge as a mass PFADD.
    ctx.notify(notify::STRING, "pfadd", key);
    ctx.reply.ok();
}

fn pfselftest(ctx: &mut Ctx<'_, '_>) {
    match carmine_keyspace::hll::self_test(fastrand::u64(..)) {
        Ok(()) => ctx.reply.ok(),
        Err(e) => ctx.error(&e),
    }
}

fn pfdebug(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    let key = ctx.arg(2);
    match check(ctx, key) {
        Err(()) => return,
        Ok(false) => return ctx.error("ERR The specified key does not exist"),
        Ok(true) => {}
    }
    let Some(s) = hll_bytes(ctx, key) else {
        return ctx.error(CORRUPT);
    };
    let was_sparse = !hll::is_dense(s);
    match sub.as_slice() {
        b"getreg" | b"todense" => {
            if hll::to_dense(s).is_err() {
                return ctx.error(CORRUPT);
            }
            let regs = hll::registers(s).unwrap_or_default();
            if was_sparse {
                let db = ctx.l.db();
                ctx.l.signal_modified(db, key);
            }
            if sub == b"todense" {
                return ctx.reply.int(i64::from(was_sparse));
            }
            ctx.reply.array(regs.len());
            for r in regs {
                ctx.reply.int(i64::from(r));
            }
        }
        b"decode" => {
            if !was_sparse {
                return ctx.error("ERR HLL encoding is not sparse");
            }
            match hll::decode_sparse(s) {
                Ok(text) => ctx.reply.simple(&text),
                Err(Corrupt) => ctx.error(CORRUPT),
            }
        }
        b"encoding" => ctx
            .reply
            .simple(if was_sparse { "sparse" } else { "dense" }),
        _ => {
            let msg = format!(
                "ERR Unknown PFDEBUG subcommand '{}'",
                crate::printable(ctx.arg(1), 128)
            );
            ctx.error(&msg);
        }
    }
}
