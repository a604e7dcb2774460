//! The `cmsgpack` library Redis gives scripts (lua-cmsgpack 0.4's behaviour): `pack`,
//! `unpack`, `unpack_one` and `unpack_limit`.
//!
//! Packing follows lua-cmsgpack: a number that is an integer packs as the smallest
//! integer format, any other as a float32 when that loses nothing, else a float64; a
//! table whose keys are exactly 1..n is an array, any other a map in the table's own
//! iteration order; tables nested 16 deep pack as nil (so circular references end).

use mlua::{Lua, MultiValue, Result, Table, Value};

/// lua-cmsgpack's LUACMSGPACK_MAX_NESTING.
const MAX_NESTING: usize = 16;
/// Nesting this deep in input is refused (lua-cmsgpack relies on Lua's C stack).
const MAX_DECODE_DEPTH: usize = 1000;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(mlua::Error::RuntimeError(msg.into()))
}

pub fn install(lua: &Lua) -> Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "pack",
        lua.create_function(|_, args: MultiValue| {
            if args.is_empty() {
                return err("MessagePack pack needs input.");
            }
            let mut out = Vec::new();
            for v in args.iter() {
                pack(v, 0, &mut out)?;
            }
            Ok(mlua::BString::from(out))
        })?,
    )?;
    t.set(
        "unpack",
        lua.create_function(|lua, s: mlua::String| unpack(lua, &s.as_bytes(), 0, 0))?,
    )?;
    t.set(
        "unpack_one",
        lua.create_function(|lua, (s, offset): (mlua::String, Option<i64>)| {
            unpack(lua, &s.as_bytes(), 1, offset.unwrap_or(0))
        })?,
    )?;
    t.set(
        "unpack_limit",
        lua.create_function(
            |lua, (s, limit, offset): (mlua::String, i64, Option<i64>)| {
                unpack(lua, &s.as_bytes(), limit, offset.unwrap_or(0))
            },
        )?,
    )?;
    t.set("_NAME", "cmsgpack")?;
    t.set("_VERSION", "lua-cmsgpack 0.4.0")?;
    Ok(t)
}

fn pack_int(n: i64, out: &mut Vec<u8>) {
    if n >= 0 {
        match n {
            0..=127 => out.push(n as u8),
            128..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
            0x100..=0xffff => {
                out.push(0xcd);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(0xce);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
            _ => {
                out.push(0xcf);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -2_147_483_648 {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn pack_number(n: f64, out: &mut Vec<u8>) {
    // lua-cmsgpack's IS_INT64_EQUIVALENT.
    if (n as i64) as f64 == n && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&n)
    {
        return pack_int(n as i64, out);
    }
    let f = n as f32;
    if f64::from(f) == n {
        out.push(0xca);
        out.extend_from_slice(&f.to_bits().to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&n.to_bits().to_be_bytes());
    }
}

fn pack_bytes(b: &[u8], out: &mut Vec<u8>) {
    let n = b.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

fn header(n: usize, small: u8, mid: u8, out: &mut Vec<u8>) {
    if n <= 15 {
        out.push(small | n as u8);
    } else if n <= 0xffff {
        out.push(mid);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(mid + 1);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// lua-cmsgpack's table_is_an_array: every key a positive integer, and as many keys
/// as the largest.
fn array_len(t: &Table) -> Result<Option<usize>> {
    let (mut count, mut max) = (0usize, 0f64);
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, _) = pair?;
        let n = match k {
            Value::Integer(i) => i as f64,
            Value::Number(n) => n,
            _ => return Ok(None),
        };
        if n <= 0.0 || n.floor() != n || n > f64::from(i32::MAX) {
            return Ok(None);
        }
        max = max.max(n);
        count += 1;
    }
    Ok((max as usize == count).then_some(count))
}

fn pack(v: &Value, level: usize, out: &mut Vec<u8>) -> Result<()> {
    match v {
        Value::String(s) => pack_bytes(&s.as_bytes(), out),
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => pack_int(*i, out),
        Value::Number(n) => pack_number(*n, out),
        Value::Table(t) if level < MAX_NESTING => match array_len(t)? {
            Some(n) => {
                header(n, 0x90, 0xdc, out);
                for i in 1..=n {
                    pack(&t.raw_get::<Value>(i)?, level + 1, out)?;
                }
            }
            None => {
                // Counted, then packed in a second pass: holding every pair at once
                // would run out of Lua reference slots on a big table.
                let count = t.clone().pairs::<Value, Value>().count();
                header(count, 0x80, 0xde, out);
                for pair in t.clone().pairs::<Value, Value>().take(count) {
                    let (k, val) = pair?;
                    pack(&k, level + 1, out)?;
                    pack(&val, level + 1, out)?;
                }
            }
        },
        _ => out.push(0xc0),
    }
    Ok(())
}

/// lua-cmsgpack's mp_unpack_full: `limit` 0 and `offset` 0 decode everything and
/// return the values; otherwise the next offset (-1 at the end) comes first.
fn unpack(lua: &Lua, s: &[u8], limit: i64, offset: i64) -> Result<MultiValue> {
    if offset < 0 || limit < 0 {
        return err(format!(
            "Invalid request to unpack with offset of {offset} and limit of {}.",
            s.len()
        ));
    }
    if offset as usize > s.len() {
        return err(format!(
            "Start offset {offset} greater than input length {}.",
            s.len()
        ));
    }
    let decode_all = limit == 0 && offset == 0;
    let limit = if decode_all { i64::MAX } else { limit };
    let mut cur = Cursor {
        data: s,
        pos: offset as usize,
    };
    let mut values = MultiValue::new();
    let mut count = 0;
    while cur.pos < s.len() && count < limit {
        values.push_back(cur.value(lua, 0)?);
        count += 1;
    }
    if !decode_all {
        let next = if cur.pos == s.len() {
            -1
        } else {
            cur.pos as i64
        };
        values.push_front(Value::Integer(next));
    }
    Ok(values)
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        match self.data.get(self.pos..self.pos.saturating_add(n)) {
            Some(b) if self.pos.checked_add(n).is_some() => {
                self.pos += n;
                Ok(b)
            }
            _ => err("Missing bytes in input."),
        }
    }

    fn uint(&mut self, n: usize) -> Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn value(&mut self, lua: &Lua, depth: usize) -> Result<Value> {
        if depth > MAX_DECODE_DEPTH {
            return err("Bad data format in input.");
        }
        let tag = self.take(1)?[0];
        Ok(match tag {
            0x00..=0x7f => Value::Number(f64::from(tag)),
            0xe0..=0xff => Value::Number(f64::from(tag as i8)),
            0xcc => Value::Number(self.uint(1)? as f64),
            0xcd => Value::Number(self.uint(2)? as f64),
            0xce => Value::Number(self.uint(4)? as f64),
            0xcf => Value::Number(self.uint(8)? as f64),
            0xd0 => Value::Number(f64::from(self.uint(1)? as u8 as i8)),
            0xd1 => Value::Number(f64::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Number(f64::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Number(self.uint(8)? as i64 as f64),
            0xc0 => Value::Nil,
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0xca => Value::Number(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Number(f64::from_bits(self.uint(8)?)),
            0xa0..=0xbf => self.bytes(lua, usize::from(tag & 0x1f))?,
            0xd9 | 0xc4 => {
                let n = self.uint(1)? as usize;
                self.bytes(lua, n)?
            }
            0xda | 0xc5 => {
                let n = self.uint(2)? as usize;
                self.bytes(lua, n)?
            }
            0xdb | 0xc6 => {
                let n = self.uint(4)? as usize;
                self.bytes(lua, n)?
            }
            0x90..=0x9f => self.array(lua, usize::from(tag & 0x0f), depth)?,
            0xdc => {
                let n = self.uint(2)? as usize;
                self.array(lua, n, depth)?
            }
            0xdd => {
                let n = self.uint(4)? as usize;
                self.array(lua, n, depth)?
            }
            0x80..=0x8f => self.map(lua, usize::from(tag & 0x0f), depth)?,
            0xde => {
                let n = self.uint(2)? as usize;
                self.map(lua, n, depth)?
            }
            0xdf => {
                let n = self.uint(4)? as usize;
                self.map(lua, n, depth)?
            }
            _ => return err("Bad data format in input."),
        })
    }

    fn bytes(&mut self, lua: &Lua, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        Ok(Value::String(lua.create_string(b)?))
    }

    fn array(&mut self, lua: &Lua, n: usize, depth: usize) -> Result<Value> {
        // Every element takes a byte at least: a count past the input is missing bytes.
        if n > self.data.len() - self.pos {
            return err("Missing bytes in input.");
        }
        let t = lua.create_table_with_capacity(n, 0)?;
        for i in 1..=n {
            t.raw_set(i, self.value(lua, depth + 1)?)?;
        }
        Ok(Value::Table(t))
    }

    fn map(&mut self, lua: &Lua, n: usize, depth: usize) -> Result<Value> {
        if n > (self.data.len() - self.pos) / 2 {
            return err("Missing bytes in input.");
        }
        let t = lua.create_table_with_capacity(0, n)?;
        for _ in 0..n {
            let k = self.value(lua, depth + 1)?;
            let v = self.value(lua, depth + 1)?;
            // A nil key cannot be set in Lua; lua-cmsgpack skips it too.
            if !matches!(k, Value::Nil) {
                t.raw_set(k, v)?;
            }
        }
        Ok(Value::Table(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(code: &str) -> String {
        let lua = Lua::new();
        lua.globals()
            .set("cmsgpack", install(&lua).expect("lib"))
            .expect("set");
        let s: mlua::String = lua.load(code).eval().expect("runs");
        s.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn packs_as_lua_cmsgpack() {
        assert_eq!(hex("return cmsgpack.pack(0.1)"), "cb3fb999999999999a");
        assert_eq!(hex("return cmsgpack.pack(0.5)"), "ca3f000000");
        assert_eq!(
            hex("return cmsgpack.pack(-1099511627776)"),
            "d3ffffff0000000000"
        );
        assert_eq!(
            hex("return cmsgpack.pack(-1, 200, 70000)"),
            "ffccc8ce00011170"
        );
        assert_eq!(hex("return cmsgpack.pack({1, 'a', true})"), "9301a161c3");
        assert_eq!(hex("return cmsgpack.pack({})"), "90");
    }

    #[test]
    fn round_trips_and_reports_offsets() {
        let lua = Lua::new();
        let lib = install(&lua).expect("lib");
        super::super::sandbox::plain_errors(&lua, &lib).expect("wrap");
        lua.globals().set("cmsgpack", lib).expect("set");
        let ok: bool = lua
            .load(
                r#"
                local big = string.rep('x', 70000)
                local t = cmsgpack.unpack(cmsgpack.pack({a = {1, 2, {b = big}}, n = -3.25}))
                assert(t.a[3].b == big and t.n == -3.25 and t.a[2] == 2)
                local enc = cmsgpack.pack('one', 'two')
                local off, v = cmsgpack.unpack_limit(enc, 1, 0)
                assert(v == 'one' and off == 4)
                off, v = cmsgpack.unpack_one(enc, off)
                assert(v == 'two' and off == -1)
                local ok, e = pcall(cmsgpack.unpack, '\221\255\255\255\255')
                assert(not ok and string.find(e, 'Missing bytes'))
                return true"#,
            )
            .eval()
            .expect("runs");
        assert!(ok);
    }
}
