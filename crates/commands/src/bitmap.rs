//! Bitmaps on strings: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP. Bit 0 is the most
//! significant bit of the first byte, as in Redis.

use carmine_keyspace::notify;
use carmine_keyspace::ops::{self, MAX_STRING};
use carmine_keyspace::{Entry, StrValue, Value};

use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "bitmap";
    vec![
        cmd("setbit", 4, WRITE | DENYOOM, keys(1, 1, 1), setbit, g, "@write @bitmap @slow", "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist."),
        cmd("getbit", 3, READONLY | FAST, keys(1, 1, 1), getbit, g, "@read @bitmap @fast", "Returns a bit value by offset."),
        cmd("bitcount", -2, READONLY, keys(1, 1, 1), bitcount, g, "@read @bitmap @slow", "Counts the number of set bits (population counting) in a string."),
        cmd("bitpos", -3, READONLY, keys(1, 1, 1), bitpos, g, "@read @bitmap @slow", "Finds the first set (1) or clear (0) bit in a string."),
        cmd("bitfield", -2, WRITE | DENYOOM, keys(1, 1, 1), bitfield, g, "@write @bitmap @slow", "Performs arbitrary bitfield integer operations on strings."),
        cmd("bitfield_ro", -2, READONLY | FAST, keys(1, 1, 1), bitfield_ro, g, "@read @bitmap @fast", "Performs arbitrary read-only bitfield integer operations on strings."),
        cmd("bitop", -4, WRITE | DENYOOM, KeySpec::Range { first: 2, last: -1, step: 1 }, bitop, g, "@write @bitmap @slow", "Performs bitwise operations on multiple strings, and stores the result."),
    ]
}

/// Parses a bit offset: 0 ..= 2^32-1 (Redis' 512 MB limit).
fn bit_offset(ctx: &mut Ctx<'_, '_>, i: usize) -> Option<usize> {
    match carmine_resp::parse_i64(ctx.arg(i)) {
        Some(n) if n >= 0 && (n as u64) < (MAX_STRING as u64) * 8 => Some(n as usize),
        _ => {
            ctx.error("ERR bit offset is not an integer or out of range");
            None
        }
    }
}

/// The string at `args[1]` as bytes (empty if missing); None after replying WRONGTYPE.
fn bytes_of(ctx: &mut Ctx<'_, '_>, i: usize) -> Option<Vec<u8>> {
    let key = ctx.arg(i);
    match ops::get_str(ctx.l, key) {
        Ok(v) => Some(v.map(StrValue::to_vec).unwrap_or_default()),
        Err(e) => {
            ctx.keyspace_error(e);
            None
        }
    }
}

fn setbit(ctx: &mut Ctx<'_, '_>) {
    let Some(offset) = bit_offset(ctx, 2) else {
        return;
    };
    let on = match ctx.arg(3) {
        b"1" => true,
        b"0" => false,
        _ => return ctx.error("ERR bit is not an integer or out of range"),
    };
    let key = ctx.arg(1);
    let mask = 0x80u8 >> (offset % 8);
    // Redis writes only when the key is new, grows, or the bit flips: otherwise no
    // dirty count, no notification, no WATCH touch.
    let current = match ops::get_str(ctx.l, key) {
        Err(e) => return ctx.keyspace_error(e),
        Ok(s) => s.map(|s| s.byte(offset / 8)),
    };
    if let Some(Some(b)) = current {
        if (b & mask != 0) == on {
            return ctx.reply.int(i64::from(on));
        }
    }
    if current.is_none() {
        let mut bytes = vec![0u8; offset / 8 + 1];
        if on {
            bytes[offset / 8] |= mask;
        }
        ctx.l
            .insert(key, Entry::new(Value::Str(StrValue::raw(bytes))));
        ctx.notify(notify::STRING, "setbit", key);
        return ctx.reply.int(0);
    }
    let Some(s) = ctx.l.get_mut(key).and_then(|e| e.value.as_str_mut()) else {
        return ctx.wrong_type();
    };
    let byte = s.byte_mut(offset / 8);
    let old = *byte & mask != 0;
    if on {
        *byte |= mask;
    } else {
        *byte &= !mask;
    }
    ctx.notify(notify::STRING, "setbit", key);
    ctx.reply.int(i64::from(old));
}

fn getbit(ctx: &mut Ctx<'_, '_>) {
    let Some(offset) = bit_offset(ctx, 2) else {
        return;
    };
    let key = ctx.arg(1);
    let byte = match ops::get_str(ctx.l, key) {
        Ok(s) => s.and_then(|s| s.byte(offset / 8)),
        Err(e) => return ctx.keyspace_error(e),
    };
    let bit = byte.is_some_and(|b| b & (0x80 >> (offset % 8)) != 0);
    ctx.reply.int(i64::from(bit));
}

/// Resolves a [start, end] range of units (bytes, or bits when `bits`) over a string of
/// `len` bytes with Redis' negative-index rules; None when empty.
fn unit_range(start: i64, end: i64, len: usize, bits: bool) -> Option<(usize, usize)> {
    let total = if bits { len as i64 * 8 } else { len as i64 };
    let mut s = if start < 0 { total + start } else { start };
    let mut e = if end < 0 { total + end } else { end };
    s = s.max(0);
    e = e.min(total - 1);
    if total == 0 || s > e || e < 0 {
        return None;
    }
    Some((s as usize, e as usize))
}

fn bit_at(bytes: &[u8], i: usize) -> bool {
    bytes[i / 8] & (0x80 >> (i % 8)) != 0
}

/// Parses the optional `start end [BYTE|BIT]` of BITCOUNT/BITPOS starting at `first`.
/// Returns (start, end, end_given, bits) or None after replying an error.
fn range_args(ctx: &mut Ctx<'_, '_>, first: usize) -> Option<(i64, i64, bool, bool)> {
    let n = ctx.args.len();
    let mut bits = false;
    let mut last = n;
    if n > first + 2 {
        if ctx.is(n - 1, "BIT") {
            bits = true;
        } else if !ctx.is(n - 1, "BYTE") {
            ctx.syntax_error();
            return None;
        }
        last = n - 1;
    }
    let start = if first < last { ctx.int_arg(first)? } else { 0 };
    let end_given = first + 1 < last;
    let end = if end_given {
        ctx.int_arg(first + 1)?
    } else {
        -1
    };
    if last > first + 2 {
        ctx.syntax_error();
        return None;
    }
    Some((start, end, end_given, bits))
}

/// The units `first..=last` that a BITCOUNT/BITPOS range covers, with the bytes holding
/// them, from byte `base` on: only those are copied out of a big string.
struct Span {
    first: usize,
    last: usize,
    base: usize,
    bytes: Vec<u8>,
}

/// The span of a range over the string at `args[1]`: inner None for an empty range or a
/// missing key; None after replying an error.
fn range_bytes(ctx: &mut Ctx<'_, '_>, start: i64, end: i64, bits: bool) -> Option<Option<Span>> {
    let key = ctx.arg(1);
    let s = match ops::get_str(ctx.l, key) {
        Ok(s) => s,
        Err(e) => {
            ctx.keyspace_error(e);
            return None;
        }
    };
    let Some(s) = s else { return Some(None) };
    let Some((first, last)) = unit_range(start, end, s.len(), bits) else {
        return Some(None);
    };
    let (base, stop) = if bits {
        (first / 8, last / 8 + 1)
    } else {
        (first, last + 1)
    };
    Some(Some(Span {
        first,
        last,
        base,
        bytes: s.range_to_vec(base, stop),
    }))
}

fn bitcount(ctx: &mut Ctx<'_, '_>) {
    if ctx.args.len() == 3 {
        return ctx.syntax_error();
    }
    let Some((start, end, _, bits)) = range_args(ctx, 2) else {
        return;
    };
    let Some(span) = range_bytes(ctx, start, end, bits) else {
        return;
    };
    let count = match span {
        None => 0,
        Some(sp) if bits => (sp.first..=sp.last)
            .filter(|&i| bit_at(&sp.bytes, i - sp.base * 8))
            .count(),
        Some(sp) => sp.bytes.iter().map(|b| b.count_ones() as usize).sum(),
    };
    ctx.reply.int(count as i64);
}

fn bitpos(ctx: &mut Ctx<'_, '_>) {
    let want = match ctx.arg(2) {
        b"1" => true,
        b"0" => false,
        _ => return ctx.error("ERR The bit argument must be 1 or 0."),
    };
    let Some((start, end, end_given, bits)) = range_args(ctx, 3) else {
        return;
    };
    let key = ctx.arg(1);
    // range_bytes reads the key again: this first look raises no second key miss.
    let missing = ctx
        .l
        .without_miss_reports(|l| matches!(ops::get_str(l, key), Ok(None)));
    let Some(span) = range_bytes(ctx, start, end, bits) else {
        return;
    };
    if missing {
        return ctx.reply.int(if want { -1 } else { 0 });
    }
    let Some(sp) = span else {
        return ctx.reply.int(-1);
    };
    let (first_bit, last_bit) = if bits {
        (sp.first, sp.last)
    } else {
        (sp.first * 8, sp.last * 8 + 7)
    };
    match (first_bit..=last_bit).find(|&i| bit_at(&sp.bytes, i - sp.base * 8) == want) {
        Some(i) => ctx.reply.int(i as i64),
        // Looking for a 0 past an all-ones string with no end given: the first bit after
        // it, since the string is conceptually padded with zeros.
        None if !want && !end_given => ctx.reply.int((last_bit + 1) as i64),
        None => ctx.reply.int(-1),
    }
}

fn bitop(ctx: &mut Ctx<'_, '_>) {
    let op = ctx.arg(1).to_ascii_uppercase();
    if !matches!(op.as_slice(), b"AND" | b"OR" | b"XOR" | b"NOT") {
        return ctx.syntax_error();
    }
    if op == b"NOT" && ctx.args.len() != 4 {
        return ctx.error("ERR BITOP NOT must be called with a single source key.");
    }
    let mut sources = Vec::new();
    for i in 3..ctx.args.len() {
        let Some(b) = bytes_of(ctx, i) else { return };
        sources.push(b);
    }
    let len = sources.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = vec![0u8; len];
    for (j, byte) in out.iter_mut().enumerate() {
        let at = |s: &Vec<u8>| s.get(j).copied().unwrap_or(0);
        *byte = match op.as_slice() {
            b"NOT" => !at(&sources[0]),
            b"AND" => sources.iter().fold(0xff, |acc, s| acc & at(s)),
            b"OR" => sources.iter().fold(0, |acc, s| acc | at(s)),
            _ => sources.iter().fold(0, |acc, s| acc ^ at(s)),
        };
    }
    let dst = ctx.arg(2);
    if out.is_empty() {
        if ctx.l.remove(dst).is_some() {
            ctx.notify(notify::GENERIC, "del", dst);
        }
    } else {
        ctx.l
            .insert(dst, Entry::new(Value::Str(StrValue::raw(out))));
        ctx.notify(notify::STRING, "set", dst);
    }
    ctx.reply.int(len as i64);
}

#[derive(Clone, Copy)]
struct FieldType {
    signed: bool,
    bits: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

enum FieldOp {
    Get(FieldType, usize),
    Set(FieldType, usize, i64, Overflow),
    IncrBy(FieldType, usize, i64, Overflow),
}

fn field_type(arg: &[u8]) -> Option<FieldType> {
    let (signed, digits) = match arg.first()?.to_ascii_lowercase() {
        b'i' => (true, &arg[1..]),
        b'u' => (false, &arg[1..]),
        _ => return None,
    };
    let bits: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let ok = if signed {
        (1..=64).contains(&bits)
    } else {
        (1..=63).contains(&bits)
    };
    ok.then_some(FieldType { signed, bits })
}

/// `offset` or `#index` (index * width), as a bit offset.
fn field_offset(arg: &[u8], t: FieldType) -> Option<usize> {
    let (multiply, digits) = match arg.strip_prefix(b"#") {
        Some(rest) => (true, rest),
        None => (false, arg),
    };
    let n = carmine_resp::parse_i64(digits).filter(|n| *n >= 0)? as u64;
    let bit = if multiply {
        n.checked_mul(u64::from(t.bits))?
    } else {
        n
    };
    (bit < (MAX_STRING as u64) * 8).then_some(bit as usize)
}

/// BITFIELD reads and writes bits through the string's byte access, so a big string (in
/// pieces) is neither joined nor copied for a few fields.
fn read_field(s: Option<&StrValue>, offset: usize, t: FieldType) -> i64 {
    let mut v: u64 = 0;
    for i in 0..t.bits as usize {
        let bit = offset + i;
        let set = s
            .and_then(|s| s.byte(bit / 8))
            .is_some_and(|b| b & (0x80 >> (bit % 8)) != 0);
        v = (v << 1) | u64::from(set);
    }
    if t.signed && t.bits < 64 && v & (1 << (t.bits - 1)) != 0 {
        (v | (!0u64 << t.bits)) as i64
    } else {
        v as i64
    }
}

/// Writes the field (`byte_mut` pads the string with zero bytes up to each byte).
fn write_field(s: &mut StrValue, offset: usize, t: FieldType, value: i64) {
    let v = value as u64;
    for i in 0..t.bits as usize {
        let bit = offset + i;
        let on = (v >> (t.bits as usize - 1 - i)) & 1 == 1;
        let mask = 0x80u8 >> (bit % 8);
        let byte = s.byte_mut(bit / 8);
        if on {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
}

/// Runs BITFIELD's operations in order on `s`: their replies, and whether any wrote.
/// Runs the fields' operations; returns the replies and how many writes count as changes
/// (Redis: every write when the string was created or grew, else those that changed
/// the field's value).
fn apply_fields(ops: &[FieldOp], s: &mut StrValue, grown: bool) -> (Vec<Option<i64>>, u64) {
    let mut results = Vec::with_capacity(ops.len());
    let mut changes = 0;
    for op in ops {
        let (t, off) = match *op {
            FieldOp::Get(t, off) | FieldOp::Set(t, off, ..) | FieldOp::IncrBy(t, off, ..) => {
                (t, off)
            }
        };
        let old = read_field(Some(s), off, t);
        let new = match *op {
            FieldOp::Get(..) => {
                results.push(Some(old));
                continue;
            }
            FieldOp::Set(_, _, v, policy) => fit(i128::from(v), t, policy),
            FieldOp::IncrBy(_, _, by, policy) => fit(i128::from(old) + i128::from(by), t, policy),
        };
        match new {
            Some(nv) => {
                write_field(s, off, t, nv);
                if grown || nv != old {
                    changes += 1;
                }
                // SET replies the old value, INCRBY the new one.
                results.push(Some(if matches!(op, FieldOp::Set(..)) {
                    old
                } else {
                    nv
                }));
            }
            None => results.push(None),
        }
    }
    (results, changes)
}

/// `value` fitted into the field under the overflow policy; None when FAIL refuses it.
fn fit(value: i128, t: FieldType, policy: Overflow) -> Option<i64> {
    let (min, max): (i128, i128) = if t.signed {
        (-(1i128 << (t.bits - 1)), (1i128 << (t.bits - 1)) - 1)
    } else {
        (0, (1i128 << t.bits) - 1)
    };
    if (min..=max).contains(&value) {
        return Some(value as i64);
    }
    match policy {
        Overflow::Fail => None,
        Overflow::Sat => Some(if value > max { max } else { min } as i64),
        Overflow::Wrap => {
            let modulus = 1i128 << t.bits;
            let mut w = value.rem_euclid(modulus);
            if t.signed && w > max {
                w -= modulus;
            }
            Some(w as i64)
        }
    }
}

fn parse_field_ops(ctx: &mut Ctx<'_, '_>, read_only: bool) -> Option<Vec<FieldOp>> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut i = 2;
    let bad_type = "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";
    while i < ctx.args.len() {
        let word = ctx.arg(i).to_ascii_uppercase();
        if read_only && word != b"GET" {
            ctx.error("ERR BITFIELD_RO only supports the GET subcommand");
            return None;
        }
        let need = match word.as_slice() {
            b"GET" => 2,
            b"SET" | b"INCRBY" => 3,
            b"OVERFLOW" => 1,
            _ => {
                ctx.syntax_error();
                return None;
            }
        };
        // The subcommand's arguments must all be present.
        if i + need >= ctx.args.len() {
            ctx.syntax_error();
            return None;
        }
        if word == b"OVERFLOW" {
            overflow = if ctx.is(i + 1, "WRAP") {
                Overflow::Wrap
            } else if ctx.is(i + 1, "SAT") {
                Overflow::Sat
            } else if ctx.is(i + 1, "FAIL") {
                Overflow::Fail
            } else {
                ctx.error("ERR Invalid OVERFLOW type specified");
                return None;
            };
            i += 2;
            continue;
        }
        let Some(t) = field_type(ctx.arg(i + 1)) else {
            ctx.error(bad_type);
            return None;
        };
        let Some(offset) = field_offset(ctx.arg(i + 2), t) else {
            ctx.error("ERR bit offset is not an integer or out of range");
            return None;
        };
        let op = match word.as_slice() {
            b"GET" => FieldOp::Get(t, offset),
            _ => {
                let v = ctx.int_arg(i + 3)?;
                if word == b"SET" {
                    FieldOp::Set(t, offset, v, overflow)
                } else {
                    FieldOp::IncrBy(t, offset, v, overflow)
                }
            }
        };
        ops.push(op);
        i += need + 1;
    }
    Some(ops)
}

fn bitfield_generic(ctx: &mut Ctx<'_, '_>, read_only: bool) {
    let Some(ops) = parse_field_ops(ctx, read_only) else {
        return;
    };
    let key = ctx.arg(1);
    let existing = match ops::get_str(ctx.l, key) {
        Ok(s) => s,
        Err(e) => return ctx.keyspace_error(e),
    };
    let writes = ops.iter().any(|o| !matches!(o, FieldOp::Get(..)));
    let results = if !writes {
        ops.iter()
            .map(|op| match *op {
                FieldOp::Get(t, off) => Some(read_field(existing, off, t)),
                _ => None,
            })
            .collect()
    } else {
        // As in Redis, the string first grows (or is created) to cover the farthest bit
        // any write may reach, whether or not an overflow check then refuses the write.
        let farthest = ops
            .iter()
            .filter_map(|op| match *op {
                FieldOp::Set(t, off, ..) | FieldOp::IncrBy(t, off, ..) => {
                    Some(off + t.bits as usize - 1)
                }
                FieldOp::Get(..) => None,
            })
            .max()
            .unwrap_or(0);
        let grown = existing.is_none_or(|s| s.len() <= farthest / 8);
        let created = existing.is_none();
        if created {
            ctx.l
                .insert(key, Entry::new(Value::Str(StrValue::raw(Vec::new()))));
        }
        // Changed in place and counted as Redis counts it (see `apply_fields`).
        let db = ctx.session.db;
        let Some(s) = ctx
            .l
            .table_in(db, key)
            .peek_mut(key)
            .and_then(|e| e.value.as_str_mut())
        else {
            return ctx.wrong_type();
        };
        s.byte_mut(farthest / 8);
        let (results, changes) = apply_fields(&ops, s, grown);
        // Creating the key counted one change already.
        ctx.l
            .touched(key, changes.saturating_sub(u64::from(created)));
        if changes > 0 {
            ctx.notify(notify::STRING, "setbit", key);
        }
        results
    };
    ctx.reply.array(results.len());
    for r in results {
        match r {
            Some(v) => ctx.reply.int(v),
            None => ctx.reply.null(),
        }
    }
}

fn bitfield(ctx: &mut Ctx<'_, '_>) {
    bitfield_generic(ctx, false);
}

fn bitfield_ro(ctx: &mut Ctx<'_, '_>) {
    bitfield_generic(ctx, true);
}

#[cfg(test)]
mod tests {
    use super::unit_range;

    #[test]
    fn ranges() {
        assert_eq!(unit_range(0, -1, 3, false), Some((0, 2)));
        assert_eq!(unit_range(-2, -1, 3, false), Some((1, 2)));
        assert_eq!(unit_range(5, 1, 3, false), None);
        assert_eq!(unit_range(0, -1, 3, true), Some((0, 23)));
        assert_eq!(unit_range(0, 100, 0, false), None);
    }
}
