//! The `struct` library Redis gives scripts (Roberto Ierusalimschy's struct 0.2):
//! `struct.pack(fmt, ...)`, `struct.unpack(fmt, s [, pos])` and `struct.size(fmt)`,
//! with the formats of a 64-bit Linux build (`l`, `L` and `T` are 8 bytes, `i` 4,
//! the largest alignment 8).

use mlua::{Lua, MultiValue, Result, Table, Value};

const MAX_INT_SIZE: usize = 32;
const MAX_ALIGN: usize = 8;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(mlua::Error::RuntimeError(msg.into()))
}

fn arg_error<T>(n: usize, func: &str, msg: &str) -> Result<T> {
    err(format!("bad argument #{n} to '{func}' ({msg})"))
}

#[derive(Clone, Copy)]
struct Header {
    little: bool,
    align: usize,
}

const DEFAULT: Header = Header {
    little: cfg!(target_endian = "little"),
    align: 1,
};

/// A format read one option at a time.
struct Format<'a> {
    fmt: &'a [u8],
    pos: usize,
}

impl Format<'_> {
    fn next_opt(&mut self) -> Option<u8> {
        let c = *self.fmt.get(self.pos)?;
        self.pos += 1;
        Some(c)
    }

    fn number(&mut self, default: usize) -> Result<usize> {
        if !self.fmt.get(self.pos).is_some_and(u8::is_ascii_digit) {
            return Ok(default);
        }
        let mut a: usize = 0;
        while let Some(d) = self.fmt.get(self.pos).filter(|c| c.is_ascii_digit()) {
            a = a
                .checked_mul(10)
                .and_then(|a| a.checked_add(usize::from(d - b'0')))
                .filter(|&a| a <= i32::MAX as usize)
                .ok_or_else(|| mlua::Error::RuntimeError("integral size overflow".into()))?;
            self.pos += 1;
        }
        Ok(a)
    }

    /// The option's size (struct.c's optsize).
    fn size(&mut self, opt: u8) -> Result<usize> {
        Ok(match opt {
            b'B' | b'b' | b'x' => 1,
            b'H' | b'h' => 2,
            b'L' | b'l' | b'T' | b'd' => 8,
            b'f' => 4,
            b'c' => self.number(1)?,
            b'i' | b'I' => {
                let sz = self.number(4)?;
                if sz > MAX_INT_SIZE {
                    return err(format!(
                        "integral size {sz} is larger than limit of {MAX_INT_SIZE}"
                    ));
                }
                sz
            }
            _ => 0,
        })
    }

    /// Endianness, alignment and spaces (struct.c's controloptions).
    fn control(&mut self, opt: u8, h: &mut Header, func: &str) -> Result<()> {
        match opt {
            b' ' => {}
            b'>' => h.little = false,
            b'<' => h.little = true,
            b'!' => {
                let a = self.number(MAX_ALIGN)?;
                if !a.is_power_of_two() {
                    return err(format!("alignment {a} is not a power of 2"));
                }
                h.align = a;
            }
            other => {
                return arg_error(
                    1,
                    func,
                    &format!("invalid format option '{}'", other as char),
                )
            }
        }
        Ok(())
    }
}

fn to_align(len: usize, h: &Header, opt: u8, size: usize) -> usize {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align);
    (size - (len & (size - 1))) & (size - 1)
}

fn number_arg(lua: &Lua, args: &MultiValue, i: usize, func: &str) -> Result<f64> {
    let v = args.get(i - 1).cloned().unwrap_or(Value::Nil);
    match lua.coerce_number(v.clone())? {
        Some(n) => Ok(n),
        None => arg_error(i, func, &format!("number expected, got {}", v.type_name())),
    }
}

fn pack(lua: &Lua, args: MultiValue) -> Result<mlua::BString> {
    let fmt = match args.front() {
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        _ => return arg_error(1, "pack", "string expected"),
    };
    let mut f = Format { fmt: &fmt, pos: 0 };
    let mut h = DEFAULT;
    let mut out: Vec<u8> = Vec::new();
    let mut arg = 2;
    while let Some(opt) = f.next_opt() {
        let mut size = f.size(opt)?;
        let pad = to_align(out.len(), &h, opt, size);
        out.resize(out.len() + pad, 0);
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let n = number_arg(lua, &args, arg, "pack")?;
                arg += 1;
                let mut value = if n < 0.0 { n as i64 as u64 } else { n as u64 };
                let mut bytes = vec![0u8; size];
                for i in 0..size {
                    let at = if h.little { i } else { size - 1 - i };
                    bytes[at] = (value & 0xff) as u8;
                    value = value.checked_shr(8).unwrap_or(0);
                }
                out.extend_from_slice(&bytes);
            }
            b'x' => out.push(0),
            b'f' => {
                let v = number_arg(lua, &args, arg, "pack")? as f32;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                });
            }
            b'd' => {
                let v = number_arg(lua, &args, arg, "pack")?;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                });
            }
            b'c' | b's' => {
                let s = match args.get(arg - 1) {
                    Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => lua
                        .coerce_string(v.clone())?
                        .map(|s| s.as_bytes().to_vec())
                        .unwrap_or_default(),
                    other => {
                        return arg_error(
                            arg,
                            "pack",
                            &format!(
                                "string expected, got {}",
                                other.map_or("no value", Value::type_name)
                            ),
                        )
                    }
                };
                arg += 1;
                if size == 0 {
                    size = s.len();
                }
                if s.len() < size {
                    return arg_error(arg, "pack", "string too short");
                }
                out.extend_from_slice(&s[..size]);
                if opt == b's' {
                    out.push(0);
                }
            }
            other => f.control(other, &mut h, "pack")?,
        }
    }
    Ok(mlua::BString::from(out))
}

fn unpack(lua: &Lua, args: MultiValue) -> Result<MultiValue> {
    let (fmt, data) = match (args.front(), args.get(1)) {
        (Some(Value::String(f)), Some(Value::String(d))) => {
            (f.as_bytes().to_vec(), d.as_bytes().to_vec())
        }
        (Some(Value::String(_)), _) => return arg_error(2, "unpack", "string expected"),
        _ => return arg_error(1, "unpack", "string expected"),
    };
    let start = match args.get(2) {
        None | Some(Value::Nil) => 1.0,
        Some(_) => number_arg(lua, &args, 3, "unpack")?,
    };
    if start < 1.0 {
        return arg_error(3, "unpack", "offset must be 1 or greater");
    }
    let ld = data.len();
    let mut pos = (start as usize).saturating_sub(1);
    let mut f = Format { fmt: &fmt, pos: 0 };
    let mut h = DEFAULT;
    let mut results: Vec<Value> = Vec::new();
    while let Some(opt) = f.next_opt() {
        let mut size = f.size(opt)?;
        pos = pos.saturating_add(to_align(pos, &h, opt, size));
        if size > ld || pos > ld - size {
            return arg_error(2, "unpack", "data string too short");
        }
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let bytes = &data[pos..pos + size];
                let mut l: u64 = 0;
                for i in 0..size {
                    let b = if h.little {
                        bytes[size - 1 - i]
                    } else {
                        bytes[i]
                    };
                    l = l.checked_shl(8).unwrap_or(0) | u64::from(b);
                }
                let v = if opt.is_ascii_lowercase() && size > 0 {
                    let mask = (!0u64).checked_shl((size * 8 - 1) as u32).unwrap_or(0);
                    if l & mask != 0 {
                        l |= mask;
                    }
                    l as i64 as f64
                } else {
                    l as f64
                };
                results.push(Value::Number(v));
            }
            b'x' => {}
            b'f' => {
                let b: [u8; 4] = data[pos..pos + 4].try_into().unwrap_or_default();
                let v = if h.little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                };
                results.push(Value::Number(f64::from(v)));
            }
            b'd' => {
                let b: [u8; 8] = data[pos..pos + 8].try_into().unwrap_or_default();
                let v = if h.little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                };
                results.push(Value::Number(v));
            }
            b'c' => {
                if size == 0 {
                    let Some(Value::Number(n)) = results.pop() else {
                        return err("format 'c0' needs a previous size");
                    };
                    size = if n > 0.0 { n as usize } else { 0 };
                    if size > ld || pos > ld - size {
                        return arg_error(2, "unpack", "data string too short");
                    }
                }
                results.push(Value::String(lua.create_string(&data[pos..pos + size])?));
            }
            b's' => {
                let Some(end) = data[pos..].iter().position(|&b| b == 0) else {
                    return err("unfinished string in data");
                };
                results.push(Value::String(lua.create_string(&data[pos..pos + end])?));
                size = end + 1;
            }
            other => f.control(other, &mut h, "unpack")?,
        }
        pos += size;
    }
    results.push(Value::Number((pos + 1) as f64));
    Ok(results.into_iter().collect())
}

fn size(_: &Lua, fmt: mlua::String) -> Result<i64> {
    let fmt = fmt.as_bytes().to_vec();
    let mut f = Format { fmt: &fmt, pos: 0 };
    let mut h = DEFAULT;
    let mut pos = 0usize;
    while let Some(opt) = f.next_opt() {
        let size = f.size(opt)?;
        pos += to_align(pos, &h, opt, size);
        if opt == b's' {
            return arg_error(1, "size", "option 's' has no fixed size");
        }
        if opt == b'c' && size == 0 {
            return arg_error(1, "size", "option 'c0' has no fixed size");
        }
        if !opt.is_ascii_alphanumeric() {
            f.control(opt, &mut h, "size")?;
        }
        pos += size;
    }
    Ok(pos as i64)
}

pub fn install(lua: &Lua) -> Result<Table> {
    let t = lua.create_table()?;
    t.set("pack", lua.create_function(pack)?)?;
    t.set("unpack", lua.create_function(unpack)?)?;
    t.set("size", lua.create_function(size)?)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks_as_struct_c() {
        let lua = Lua::new();
        let lib = install(&lua).expect("lib");
        super::super::sandbox::plain_errors(&lua, &lib).expect("wrap");
        lua.globals().set("struct", lib).expect("set");
        let ok: bool = lua
            .load(
                r#"
                local s = struct.pack('>I2<i4!4d', 258, -2, 1.5)
                assert(#s == 2 + 4 + 2 + 8)
                assert(string.byte(s, 1) == 1 and string.byte(s, 2) == 2)
                local a, b, c, nxt = struct.unpack('>I2<i4!4d', s)
                assert(a == 258 and b == -2 and c == 1.5 and nxt == 17)
                assert(struct.size('>I2<i4!4d') == 16)
                local p = struct.pack('Bc0s', 3, 'abc', 'zz')
                local str, z = struct.unpack('Bc0s', p)
                assert(str == 'abc' and z == 'zz')
                local ok, e = pcall(struct.unpack, 'i4', 'ab')
                assert(not ok and string.find(e, 'data string too short'))
                local ok2, e2 = pcall(struct.pack, 'q', 1)
                assert(not ok2 and string.find(e2, "invalid format option 'q'"))
                return true"#,
            )
            .eval()
            .expect("runs");
        assert!(ok);
    }
}
