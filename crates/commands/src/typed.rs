//! Typed access to collection values for the command families: WRONGTYPE checks, create
//! on first write, delete when a write leaves a collection empty (Redis never keeps empty
//! collections), and the SCAN-family reply.

use carmine_keyspace::{glob_match, Locked};

use crate::Ctx;

pub use carmine_keyspace::typed::{drop_if_empty, Collection};

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

/// Replies to an HSCAN/SSCAN: the whole collection in one step (cursor 0), filtered by
/// MATCH, as Redis does for small encodings; COUNT is a hint and may be ignored.
pub fn scan_reply(ctx: &mut Ctx<'_, '_>, items: &[Vec<u8>], pairs: bool) {
    let mut pattern = None;
    let mut novalues = false;
    let mut i = 3;
    while i < ctx.args.len() {
        if ctx.is(i, "MATCH") && i + 1 < ctx.args.len() {
            pattern = Some(ctx.arg(i + 1).to_vec());
            i += 2;
        } else if ctx.is(i, "COUNT") && i + 1 < ctx.args.len() {
            match ctx.int_arg(i + 1) {
                Some(n) if n >= 1 => {}
                Some(_) => return ctx.syntax_error(),
                None => return,
            }
            i += 2;
        } else if pairs && ctx.is(i, "NOVALUES") {
            novalues = true;
            i += 1;
        } else {
            return ctx.syntax_error();
        }
    }
    if std::str::from_utf8(ctx.arg(2))
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .is_none()
    {
        return ctx.error("ERR invalid cursor");
    }
    let step = if pairs { 2 } else { 1 };
    let mut out: Vec<&[u8]> = Vec::new();
    for chunk in items.chunks(step) {
        if pattern.as_ref().is_none_or(|p| glob_match(p, &chunk[0])) {
            out.push(&chunk[0]);
            if pairs && !novalues {
                out.push(chunk.get(1).map_or(&[][..], Vec::as_slice));
            }
        }
    }
    ctx.reply.array(2);
    ctx.reply.bulk(b"0");
    ctx.reply.array(out.len());
    for b in out {
        ctx.reply.bulk(b);
    }
}

/// Resolves Redis' list/range index rules: negative counts from the end; returns the
/// inclusive range clamped to `len`, or None when empty.
pub fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    if s < 0 {
        s = 0;
    }
    if e >= len {
        e = len - 1;
    }
    if s > e || s >= len || e < 0 {
        return None;
    }
    Some((s as usize, e as usize))
}
