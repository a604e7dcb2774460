//! Typed access to collection values for the command families: WRONGTYPE checks, create
//! on first write, delete when a write leaves a collection empty (Redis never keeps empty
//! collections), and the SCAN-family reply.

use carmine_keyspace::{glob_match, Locked};

use crate::Ctx;

pub use carmine_keyspace::typed::{clamp_range, drop_if_empty, Collection};

/// Read access for a command: `Err(())` means WRONGTYPE (the caller replies it).
#[allow(clippy::result_unit_err)]
pub fn read<'l, C: Collection>(l: &'l mut Locked<'_>, key: &[u8]) -> Result<Option<&'l C>, ()> {
    carmine_keyspace::typed::read(l, key).map_err(|_| ())
}

/// Write access for a command, creating the collection when `create`.
#[allow(clippy::result_unit_err)]
pub fn write<'l, C: Collection>(
    l: &'l mut Locked<'_>,
    key: &[u8],
    create: bool,
) -> Result<Option<&'l mut C>, ()> {
    carmine_keyspace::typed::write(l, key, create).map_err(|_| ())
}

/// HLEN, LLEN, SCARD, ZCARD: the size of the collection at argument 1 (0 when missing).
pub fn reply_len<C: Collection>(ctx: &mut Ctx<'_, '_>) {
    let key = ctx.arg(1);
    match read::<C>(ctx.l, key) {
        Err(()) => ctx.wrong_type(),
        Ok(c) => ctx.reply.int(c.map_or(0, C::len) as i64),
    }
}

/// HDEL, SREM, ZREM: removes the members named from argument 2 on, raises `event` when
/// any was there, deletes the collection if it is left empty, replies how many went.
pub fn remove_members<C: Collection>(
    ctx: &mut Ctx<'_, '_>,
    class: u32,
    event: &str,
    remove: fn(&mut C, &[u8]) -> bool,
) {
    let key = ctx.arg(1);
    let n = match write::<C>(ctx.l, key, false) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => 0,
        Ok(Some(c)) => (2..ctx.args.len())
            .filter(|&i| remove(c, ctx.args.get(i).unwrap_or_default()))
            .count(),
    };
    if n > 0 {
        ctx.notify(class, event, key);
    }
    drop_if_empty::<C>(ctx.l, key);
    ctx.reply.int(n as i64);
}

/// HSCAN/SSCAN/ZSCAN options.
pub struct ScanArgs {
    pub cursor: u64,
    pub count: usize,
    pattern: Option<Vec<u8>>,
    novalues: bool,
}

/// Runs one HSCAN/SSCAN/ZSCAN step in Redis' order of checks: the cursor, then the key
/// (missing: an empty, finished scan; another type: WRONGTYPE), then the options. `step`
/// reads the collection and returns (next cursor, items); pairs are flattened as
/// [field, value, ...].
pub fn scan_command<C: Collection>(
    ctx: &mut Ctx<'_, '_>,
    pairs: bool,
    step: impl FnOnce(&C, &ScanArgs) -> (u64, Vec<Vec<u8>>),
) {
    let Some(cursor) = std::str::from_utf8(ctx.arg(2))
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return ctx.error("ERR invalid cursor");
    };
    let key = ctx.arg(1);
    match read::<C>(ctx.l, key) {
        Err(()) => return ctx.wrong_type(),
        Ok(None) => {
            ctx.reply.array(2);
            ctx.reply.bulk(b"0");
            ctx.reply.array(0);
            return;
        }
        Ok(Some(_)) => {}
    }
    let mut args = ScanArgs {
        cursor,
        count: 10,
        pattern: None,
        novalues: false,
    };
    let mut i = 3;
    while i < ctx.args.len() {
        if ctx.is(i, "MATCH") && i + 1 < ctx.args.len() {
            args.pattern = Some(ctx.arg(i + 1).to_vec());
            i += 2;
        } else if ctx.is(i, "COUNT") && i + 1 < ctx.args.len() {
            match ctx.int_arg(i + 1) {
                Some(n) if n >= 1 => args.count = n as usize,
                Some(_) => return ctx.syntax_error(),
                None => return,
            }
            i += 2;
        } else if pairs && ctx.is(0, "HSCAN") && ctx.is(i, "NOVALUES") {
            args.novalues = true;
            i += 1;
        } else {
            return ctx.syntax_error();
        }
    }
    let (next, items) = match read::<C>(ctx.l, key) {
        Ok(Some(c)) => step(c, &args),
        _ => (0, Vec::new()),
    };
    let stride = if pairs { 2 } else { 1 };
    let mut out: Vec<&[u8]> = Vec::new();
    for chunk in items.chunks(stride) {
        if args
            .pattern
            .as_ref()
            .is_none_or(|p| glob_match(p, &chunk[0]))
        {
            out.push(&chunk[0]);
            if pairs && !args.novalues {
                out.push(chunk.get(1).map_or(&[][..], Vec::as_slice));
            }
        }
    }
    ctx.reply.array(2);
    ctx.reply.bulk(next.to_string().as_bytes());
    ctx.reply.array(out.len());
    for b in out {
        ctx.reply.bulk(b);
    }
}
