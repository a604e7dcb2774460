//! Typed access to collection values for the command families: WRONGTYPE checks, create
//! on first write, delete when a write leaves a collection empty (Redis never keeps empty
//! collections), and the SCAN-family reply.

use carmine_keyspace::{glob_match, Entry, HashValue, ListValue, Locked, SetValue, Value};

use crate::Ctx;

/// Which collection a command works on.
pub trait Collection: Default {
    fn wrap(self) -> Value;
    fn from_value(v: &Value) -> Option<&Self>;
    fn from_value_mut(v: &mut Value) -> Option<&mut Self>;
    fn is_empty(&self) -> bool;
}

macro_rules! collection {
    ($t:ty, $variant:ident) => {
        impl Collection for $t {
            fn wrap(self) -> Value {
                Value::$variant(Box::new(self))
            }
            fn from_value(v: &Value) -> Option<&Self> {
                match v {
                    Value::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn from_value_mut(v: &mut Value) -> Option<&mut Self> {
                match v {
                    Value::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn is_empty(&self) -> bool {
                <$t>::is_empty(self)
            }
        }
    };
}

collection!(HashValue, Hash);
collection!(ListValue, List);
collection!(SetValue, Set);

/// Read access: `Ok(None)` when the key is missing, `Err(())` for another type.
#[allow(clippy::result_unit_err)]
pub fn read<'l, C: Collection>(l: &'l mut Locked<'_>, key: &[u8]) -> Result<Option<&'l C>, ()> {
    match l.get(key) {
        None => Ok(None),
        Some(e) => C::from_value(&e.value).map(Some).ok_or(()),
    }
}

/// Write access, creating the collection when `create` and the key is missing.
#[allow(clippy::result_unit_err)]
pub fn write<'l, C: Collection>(
    l: &'l mut Locked<'_>,
    key: &[u8],
    create: bool,
) -> Result<Option<&'l mut C>, ()> {
    match l.get(key) {
        None if !create => return Ok(None),
        None => {
            l.insert(key, Entry::new(C::default().wrap()));
        }
        Some(e) if C::from_value(&e.value).is_none() => return Err(()),
        Some(_) => {}
    }
    match l.get_mut(key) {
        Some(e) => Ok(C::from_value_mut(&mut e.value)),
        None => Ok(None),
    }
}

/// Deletes `key` if it holds an empty collection of type `C`.
pub fn drop_if_empty<C: Collection>(l: &mut Locked<'_>, key: &[u8]) {
    let empty = l
        .get(key)
        .and_then(|e| C::from_value(&e.value))
        .is_some_and(C::is_empty);
    if empty {
        l.remove(key);
    }
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
