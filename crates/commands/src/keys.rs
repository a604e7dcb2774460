//! Generic key commands: DEL, EXISTS, TYPE, RENAME, COPY, MOVE, KEYS, SCAN, RANDOMKEY,
//! OBJECT, and the EXPIRE / TTL family.

use carmine_keyspace::notify;
use carmine_keyspace::ops::{self, ExpireCondition, Ttl};
use carmine_keyspace::{glob_match, Entry};
use carmine_resp::Args;

use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "generic";
    let wf = "@keyspace @write @fast";
    let ws = "@keyspace @write @slow";
    let rf = "@keyspace @read @fast";
    let rs = "@keyspace @read @slow";
    vec![
        cmd("del", -2, WRITE, keys(1, -1, 1), del, g, ws, "Deletes one or more keys."),
        cmd("unlink", -2, WRITE | FAST, keys(1, -1, 1), del, g, wf, "Asynchronously deletes one or more keys."),
        cmd("exists", -2, READONLY | FAST, keys(1, -1, 1), exists, g, rf, "Determines whether one or more keys exist."),
        cmd("type", 2, READONLY | FAST, keys(1, 1, 1), type_cmd, g, rf, "Determines the type of value stored at a key."),
        cmd("touch", -2, READONLY | FAST, keys(1, -1, 1), exists, g, rf, "Returns the number of existing keys out of those specified after updating the time they were last accessed."),
        cmd("rename", 3, WRITE, keys(1, 2, 1), rename, g, ws, "Renames a key and overwrites the destination."),
        cmd("renamenx", 3, WRITE | FAST, keys(1, 2, 1), renamenx, g, wf, "Renames a key only when the target key name doesn't exist."),
        CommandSpec {
            other_db: Some(copy_db),
            ..cmd("copy", -3, WRITE | DENYOOM, keys(1, 2, 1), copy, g, ws, "Copies the value of a key to a new key.")
        },
        CommandSpec {
            other_db: Some(move_db),
            ..cmd("move", 3, WRITE | FAST, keys(1, 1, 1), move_cmd, g, wf, "Moves a key to another database.")
        },
        cmd("keys", 2, READONLY | WALKS | TOUCHES_ARBITRARY_KEYS, KeySpec::None, keys_cmd, g, "@keyspace @read @slow @dangerous", "Returns all key names that match a pattern."),
        cmd("scan", -2, READONLY | WALKS | TOUCHES_ARBITRARY_KEYS, KeySpec::None, scan, g, rs, "Iterates over the key names in the database."),
        cmd("randomkey", 1, READONLY | WALKS | TOUCHES_ARBITRARY_KEYS, KeySpec::None, randomkey, g, rs, "Returns a random key name from the database."),
        CommandSpec {
            subcommands: &["encoding", "freq", "idletime", "refcount", "help"],
            ..cmd("object", -2, READONLY, KeySpec::Custom(second_arg_key), object, g, rs, "A container for object introspection commands.")
        },
        cmd("expire", -3, WRITE | FAST, keys(1, 1, 1), expire, g, wf, "Sets the expiration time of a key in seconds."),
        cmd("pexpire", -3, WRITE | FAST, keys(1, 1, 1), pexpire, g, wf, "Sets the expiration time of a key in milliseconds."),
        cmd("expireat", -3, WRITE | FAST, keys(1, 1, 1), expireat, g, wf, "Sets the expiration time of a key to a Unix timestamp."),
        cmd("pexpireat", -3, WRITE | FAST, keys(1, 1, 1), pexpireat, g, wf, "Sets the expiration time of a key to a Unix milliseconds timestamp."),
        cmd("ttl", 2, READONLY | FAST, keys(1, 1, 1), ttl, g, rf, "Returns the expiration time in seconds of a key."),
        cmd("pttl", 2, READONLY | FAST, keys(1, 1, 1), pttl, g, rf, "Returns the expiration time in milliseconds of a key."),
        cmd("expiretime", 2, READONLY | FAST, keys(1, 1, 1), expiretime, g, rf, "Returns the expiration time of a key as a Unix timestamp."),
        cmd("pexpiretime", 2, READONLY | FAST, keys(1, 1, 1), pexpiretime, g, rf, "Returns the expiration time of a key as a Unix milliseconds timestamp."),
        cmd("persist", 2, WRITE | FAST, keys(1, 1, 1), persist, g, wf, "Removes the expiration time of a key."),
    ]
}

/// Key position of container commands whose key follows the subcommand (OBJECT, MEMORY,
/// DEBUG OBJECT).
pub fn second_arg_key(args: &Args, out: &mut Vec<usize>) {
    if args.len() >= 3 {
        let sub = args.get(1).unwrap_or_default();
        if !sub.eq_ignore_ascii_case(b"help") {
            out.push(2);
        }
    }
}

fn del(ctx: &mut Ctx<'_, '_>) {
    let unlink = ctx.spec.name == "unlink";
    let mut n = 0;
    for i in 1..ctx.args.len() {
        let key = ctx.arg(i);
        if let Some(entry) = ctx.l.remove(key) {
            ctx.notify(notify::GENERIC, "del", key);
            n += 1;
            if unlink {
                ctx.shared.lazyfree.free(entry);
            }
        }
    }
    ctx.reply.int(n);
}

fn exists(ctx: &mut Ctx<'_, '_>) {
    // TOUCH shares this handler and counts as an access; EXISTS does not.
    let touch = ctx.spec.name == "touch";
    let mut n = 0;
    for i in 1..ctx.args.len() {
        let key = ctx.arg(i);
        let found = if touch {
            ctx.l.exists(key)
        } else {
            ctx.l.get_untouched(key).is_some()
        };
        if found {
            n += 1;
        }
    }
    ctx.reply.int(n);
}

fn type_cmd(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    let t = ctx
        .l
        .get_untouched(key)
        .map_or("none", |e| e.value.type_name());
    ctx.reply.simple(t);
}

/// Moves `src` to `dst`, keeping the deadline. `nx`: fail if `dst` exists.
fn rename_generic(ctx: &mut Ctx<'_, '_>, nx: bool) {
    let (src, dst) = (ctx.arg(1), ctx.arg(2));
    if ctx.l.get(src).is_none() {
        return ctx.error("ERR no such key");
    }
    if src == dst {
        return if nx { ctx.reply.int(0) } else { ctx.reply.ok() };
    }
    if nx && ctx.l.exists(dst) {
        return ctx.reply.int(0);
    }
    let Some(entry) = ctx.l.remove(src) else {
        return ctx.error("ERR no such key");
    };
    ctx.l.insert(dst, entry);
    ctx.notify(notify::GENERIC, "rename_from", src);
    ctx.notify(notify::GENERIC, "rename_to", dst);
    if nx {
        ctx.reply.int(1);
    } else {
        ctx.reply.ok();
    }
}

fn rename(ctx: &mut Ctx<'_, '_>) {
    rename_generic(ctx, false);
}

fn renamenx(ctx: &mut Ctx<'_, '_>) {
    rename_generic(ctx, true);
}

fn db_index(arg: &[u8]) -> Option<usize> {
    carmine_resp::parse_i64(arg).and_then(|n| usize::try_from(n).ok())
}

/// The destination database of COPY: the last `DB n` wins, as in the handler.
fn copy_db(args: &Args) -> Option<usize> {
    (3..args.len().saturating_sub(1))
        .rev()
        .find(|&i| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(b"DB")))
        .and_then(|i| db_index(args.get(i + 1).unwrap_or_default()))
}

fn move_db(args: &Args) -> Option<usize> {
    db_index(args.get(2).unwrap_or_default())
}

fn copy(ctx: &mut Ctx<'_, '_>) {
    let mut dst_db = ctx.session.db;
    let mut replace = false;
    let mut i = 3;
    while i < ctx.args.len() {
        if ctx.is(i, "REPLACE") {
            replace = true;
        } else if ctx.is(i, "DB") && i + 1 < ctx.args.len() {
            let Some(n) = ctx.int_arg(i + 1) else { return };
            if n < 0 || n as usize >= ctx.shared.keyspace.databases() {
                return ctx.error("ERR DB index is out of range");
            }
            dst_db = n as usize;
            i += 1;
        } else {
            return ctx.syntax_error();
        }
        i += 1;
    }
    let (src, dst) = (ctx.arg(1), ctx.arg(2));
    let src_db = ctx.session.db;
    if src == dst && src_db == dst_db {
        return ctx.error("ERR source and destination objects are the same");
    }
    let Some(entry) = ctx.l.get(src).cloned() else {
        return ctx.reply.int(0);
    };
    if ctx.l.get_in(dst_db, dst).is_some() && !replace {
        return ctx.reply.int(0);
    }
    ctx.l.insert_in(dst_db, dst, entry);
    ctx.l.notify_in(dst_db, notify::GENERIC, "copy_to", dst);
    ctx.reply.int(1);
}

fn move_cmd(ctx: &mut Ctx<'_, '_>) {
    let Some(n) = ctx.int_arg(2) else { return };
    if n < 0 || n as usize >= ctx.shared.keyspace.databases() {
        return ctx.error("ERR DB index is out of range");
    }
    let (dst_db, src_db) = (n as usize, ctx.session.db);
    if dst_db == src_db {
        return ctx.error("ERR source and destination objects are the same");
    }
    let key = ctx.arg(1);
    if ctx.l.get(key).is_none() || ctx.l.get_in(dst_db, key).is_some() {
        return ctx.reply.int(0);
    }
    let Some(entry) = ctx.l.remove(key) else {
        return ctx.reply.int(0);
    };
    ctx.l.insert_in(dst_db, key, entry);
    ctx.notify(notify::GENERIC, "move_from", key);
    ctx.l.notify_in(dst_db, notify::GENERIC, "move_to", key);
    ctx.reply.int(1);
}

fn keys_cmd(ctx: &mut Ctx<'_, '_>) {
    let pattern = ctx.arg(1).to_vec();
    let all = pattern == b"*";
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let (next, mut batch) = ctx
            .shared
            .keyspace
            .scan(ctx.session.db, cursor, 4096, |k, _| {
                all || glob_match(&pattern, k)
            });
        out.append(&mut batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    ctx.reply.array(out.len());
    for k in &out {
        ctx.reply.bulk(k);
    }
}

fn scan(ctx: &mut Ctx<'_, '_>) {
    let cursor = match std::str::from_utf8(ctx.arg(1))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(c) => c,
        None => return ctx.error("ERR invalid cursor"),
    };
    let (mut pattern, mut count, mut type_filter) = (None, 10usize, None);
    let mut i = 2;
    while i < ctx.args.len() {
        if i + 1 >= ctx.args.len() {
            return ctx.syntax_error();
        }
        if ctx.is(i, "MATCH") {
            pattern = Some(ctx.arg(i + 1).to_vec());
        } else if ctx.is(i, "COUNT") {
            let Some(n) = ctx.int_arg(i + 1) else { return };
            if n < 1 {
                return ctx.syntax_error();
            }
            count = n as usize;
        } else if ctx.is(i, "TYPE") {
            type_filter = Some(String::from_utf8_lossy(ctx.arg(i + 1)).to_lowercase());
        } else {
            return ctx.syntax_error();
        }
        i += 2;
    }
    let mut expired = Vec::new();
    let (next, keys) = ctx.shared.keyspace.scan_noting_expired(
        ctx.session.db,
        cursor,
        count,
        |k, e: &Entry| {
            pattern.as_ref().is_none_or(|p| glob_match(p, k))
                && type_filter
                    .as_ref()
                    .is_none_or(|t| t == e.value.type_name())
        },
        Some(&mut expired),
    );
    expire_found(ctx, expired);
    ctx.reply.array(2);
    ctx.reply.bulk(next.to_string().as_bytes());
    ctx.reply.array(keys.len());
    for k in &keys {
        ctx.reply.bulk(k);
    }
}

fn randomkey(ctx: &mut Ctx<'_, '_>) {
    let mut expired = Vec::new();
    let key = ctx.shared.keyspace.random_key(ctx.session.db, &mut expired);
    expire_found(ctx, expired);
    match key {
        Some(k) => ctx.reply.bulk(&k),
        None => ctx.reply.null(),
    }
}

/// Expires keys a walk found past their deadline (each reaches the stream as its own
/// DEL, as Redis' lazy expiry sends it). The command declared no keys, so its tables
/// are locked here in ascending order, which keeps the lock order.
fn expire_found(ctx: &mut Ctx<'_, '_>, mut expired: Vec<Vec<u8>>) {
    let db = ctx.session.db;
    expired.sort_by_key(|k| carmine_keyspace::table_id(db, carmine_slots::key_slot(k)));
    for k in &expired {
        let _ = ctx.l.get(k);
    }
}

const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Print this help.",
];

fn object(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    if sub == b"help" && ctx.args.len() == 2 {
        return crate::connection::help_reply(ctx, OBJECT_HELP);
    }
    if ctx.args.len() != 3
        || !matches!(
            sub.as_slice(),
            b"encoding" | b"freq" | b"idletime" | b"refcount"
        )
    {
        return ctx.unknown_subcommand();
    }
    let policy = ctx
        .shared
        .config
        .get("maxmemory-policy")
        .unwrap_or_default();
    let lfu = policy.contains("lfu");
    let key = ctx.arg(2);
    let clock = ctx.shared.keyspace.lru_clock();
    // Read without touching the access clock, as OBJECT does in Redis.
    let table = ctx.l.table_in(ctx.session.db, key);
    let now = carmine_keyspace::now_ms();
    let Some(e) = table.peek(key).filter(|e| !e.is_expired(now)) else {
        return ctx.reply.null();
    };
    match sub.as_slice() {
        b"encoding" => {
            let enc = e.value.encoding();
            ctx.reply.bulk(enc.as_bytes());
        }
        // Redis shares the integers 0-9999 among all keys (unless an LRU or LFU policy
        // needs a clock per value) and reports them with its "shared" refcount.
        b"refcount" => {
            let shared_int = matches!(
                e.value.as_str(),
                Some(carmine_keyspace::StrValue::Int(n)) if (0..10_000).contains(n)
            );
            let per_value_clock =
                ctx.shared.config.get_i64("maxmemory") > 0 && (lfu || policy.contains("lru"));
            ctx.reply.int(if shared_int && !per_value_clock {
                i64::from(i32::MAX)
            } else {
                1
            })
        }
        b"idletime" => {
            if lfu {
                return ctx.error("ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
            }
            let idle = clock.saturating_sub(e.lru);
            ctx.reply.int(i64::from(idle));
        }
        _ => {
            if !lfu {
                return ctx.error("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
            }
            let decay = ctx
                .shared
                .keyspace
                .eviction()
                .lfu_decay_time
                .load(std::sync::atomic::Ordering::Relaxed);
            let freq =
                carmine_keyspace::evict::lfu_decayed(e.lru, carmine_keyspace::now_ms(), decay);
            ctx.reply.int(i64::from(freq));
        }
    }
}

fn expire_generic(ctx: &mut Ctx<'_, '_>, unit: u64, absolute: bool) {
    let mut cond = ExpireCondition::Always;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for i in 3..ctx.args.len() {
        if ctx.is(i, "NX") {
            nx = true;
        } else if ctx.is(i, "XX") {
            xx = true;
        } else if ctx.is(i, "GT") {
            gt = true;
        } else if ctx.is(i, "LT") {
            lt = true;
        } else {
            let opt = String::from_utf8_lossy(ctx.arg(i)).into_owned();
            return ctx.error(&format!("ERR Unsupported option {opt}"));
        }
    }
    if nx && (xx || gt || lt) {
        return ctx.error("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return ctx.error("ERR GT and LT options at the same time are not compatible");
    }
    if nx {
        cond = ExpireCondition::IfNone;
    } else if xx {
        cond = ExpireCondition::IfSome;
    }
    if gt {
        cond = ExpireCondition::Greater;
    } else if lt {
        cond = if xx {
            ExpireCondition::LessIfSome
        } else {
            ExpireCondition::Less
        };
    }
    let Some(n) = ctx.int_arg(2) else { return };
    // The name only for the error: a script's EXPIRE calls made it a fifth of their
    // allocations.
    let invalid = |ctx: &mut Ctx<'_, '_>| {
        let name = ctx.name();
        ctx.error(&format!("ERR invalid expire time in '{name}' command"))
    };
    let Some(ms) = n.checked_mul(unit as i64) else {
        return invalid(ctx);
    };
    let at = if absolute {
        Some(ms)
    } else {
        (ctx.l.now() as i64).checked_add(ms)
    };
    let Some(at) = at else { return invalid(ctx) };
    let key = ctx.arg(1);
    // A deadline at or before now deletes the key (see ops::expire_at).
    let at = at.max(0) as u64;
    let set = ops::expire_at(ctx.l, key, at, cond);
    if set {
        // Propagated as an absolute deadline, or as the DEL it turned into.
        if at <= ctx.l.now() && ctx.l.past_deadline_deletes() {
            ctx.notify(notify::GENERIC, "del", key);
            ctx.propagate_as(&[b"DEL", key]);
        } else {
            ctx.notify(notify::GENERIC, "expire", key);
            let mut at_text = itoa::Buffer::new();
            ctx.propagate_as(&[b"PEXPIREAT", key, at_text.format(at).as_bytes()]);
        }
    }
    ctx.reply.int(i64::from(set));
}

fn expire(ctx: &mut Ctx<'_, '_>) {
    expire_generic(ctx, 1000, false);
}

fn pexpire(ctx: &mut Ctx<'_, '_>) {
    expire_generic(ctx, 1, false);
}

fn expireat(ctx: &mut Ctx<'_, '_>) {
    expire_generic(ctx, 1000, true);
}

fn pexpireat(ctx: &mut Ctx<'_, '_>) {
    expire_generic(ctx, 1, true);
}

fn ttl_generic(ctx: &mut Ctx<'_, '_>, seconds: bool) {
    let key = ctx.arg(1);
    let v = match ops::ttl(ctx.l, key) {
        Ttl::Missing => -2,
        Ttl::Persistent => -1,
        // Rounded to the nearest second, as Redis rounds it.
        Ttl::Millis(ms) if seconds => ms.saturating_add(500) as i64 / 1000,
        Ttl::Millis(ms) => ms as i64,
    };
    ctx.reply.int(v);
}

fn ttl(ctx: &mut Ctx<'_, '_>) {
    ttl_generic(ctx, true);
}

fn pttl(ctx: &mut Ctx<'_, '_>) {
    ttl_generic(ctx, false);
}

fn expiretime_generic(ctx: &mut Ctx<'_, '_>, seconds: bool) {
    let key = ctx.arg(1);
    let v = match ctx.l.get_untouched(key) {
        None => -2,
        Some(e) if e.expire_at() == 0 => -1,
        Some(e) if seconds => (e.expire_at() / 1000) as i64,
        Some(e) => e.expire_at() as i64,
    };
    ctx.reply.int(v);
}

fn expiretime(ctx: &mut Ctx<'_, '_>) {
    expiretime_generic(ctx, true);
}

fn pexpiretime(ctx: &mut Ctx<'_, '_>) {
    expiretime_generic(ctx, false);
}

fn persist(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    let had = ops::persist(ctx.l, key);
    if had {
        ctx.notify(notify::GENERIC, "persist", key);
    }
    ctx.reply.int(i64::from(had));
}
