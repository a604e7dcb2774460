//! The `bit` library Redis gives scripts (LuaBitOp 1.0's API): 32-bit operations on
//! Lua numbers. A number becomes a 32-bit integer as LuaBitOp makes it (rounded to
//! nearest, taken modulo 2^32), and results come back as signed 32-bit numbers.

use mlua::{Lua, MultiValue, Result, Table, Value};

/// LuaBitOp's `tobit`: adding 2^52 + 2^51 puts the integer part, rounded to nearest
/// even, in the low 32 bits of the double.
fn tobit(n: f64) -> i32 {
    (n + 6_755_399_441_055_744.0).to_bits() as u32 as i32
}

fn arg(lua: &Lua, v: &Value, pos: usize, name: &str) -> Result<i32> {
    match lua.coerce_number(v.clone())? {
        Some(n) => Ok(tobit(n)),
        None => Err(mlua::Error::RuntimeError(format!(
            "bad argument #{pos} to '{name}' (number expected, got {})",
            v.type_name()
        ))),
    }
}

fn first(lua: &Lua, args: &MultiValue, name: &str) -> Result<i32> {
    arg(lua, args.front().unwrap_or(&Value::Nil), 1, name)
}

/// Folds every argument with `op` (band, bor, bxor).
fn fold(lua: &Lua, table: &Table, name: &'static str, op: fn(i32, i32) -> i32) -> Result<()> {
    table.set(
        name,
        lua.create_function(move |lua, args: MultiValue| {
            let mut acc = first(lua, &args, name)?;
            for (i, v) in args.iter().enumerate().skip(1) {
                acc = op(acc, arg(lua, v, i + 1, name)?);
            }
            Ok(f64::from(acc))
        })?,
    )
}

/// A shift or rotation: `op(x, n & 31)`.
fn shift(lua: &Lua, table: &Table, name: &'static str, op: fn(u32, u32) -> u32) -> Result<()> {
    table.set(
        name,
        lua.create_function(move |lua, args: MultiValue| {
            let x = first(lua, &args, name)? as u32;
            let n = arg(lua, args.get(1).unwrap_or(&Value::Nil), 2, name)? as u32 & 31;
            Ok(f64::from(op(x, n) as i32))
        })?,
    )
}

pub fn install(lua: &Lua) -> Result<Table> {
    let bit = lua.create_table()?;
    bit.set(
        "tobit",
        lua.create_function(|lua, args: MultiValue| Ok(f64::from(first(lua, &args, "tobit")?)))?,
    )?;
    bit.set(
        "bnot",
        lua.create_function(|lua, args: MultiValue| Ok(f64::from(!first(lua, &args, "bnot")?)))?,
    )?;
    bit.set(
        "bswap",
        lua.create_function(|lua, args: MultiValue| {
            Ok(f64::from(first(lua, &args, "bswap")?.swap_bytes()))
        })?,
    )?;
    bit.set(
        "tohex",
        lua.create_function(|lua, args: MultiValue| {
            let x = first(lua, &args, "tohex")? as u32;
            let n = match args.get(1) {
                None | Some(Value::Nil) => 8,
                Some(v) => arg(lua, v, 2, "tohex")?,
            };
            let upper = n < 0;
            let digits = n.unsigned_abs().min(8) as usize;
            let text = if upper {
                format!("{x:08X}")
            } else {
                format!("{x:08x}")
            };
            Ok(text[8 - digits..].to_string())
        })?,
    )?;
    fold(lua, &bit, "band", |a, b| a & b)?;
    fold(lua, &bit, "bor", |a, b| a | b)?;
    fold(lua, &bit, "bxor", |a, b| a ^ b)?;
    shift(lua, &bit, "lshift", |x, n| x << n)?;
    shift(lua, &bit, "rshift", |x, n| x >> n)?;
    shift(lua, &bit, "arshift", |x, n| ((x as i32) >> n) as u32)?;
    shift(lua, &bit, "rol", |x, n| x.rotate_left(n))?;
    shift(lua, &bit, "ror", |x, n| x.rotate_right(n))?;
    Ok(bit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(code: &str) -> Value {
        let lua = Lua::new();
        let bit = install(&lua).expect("bit");
        lua.globals().set("bit", bit).expect("set");
        match lua.load(code).eval().expect("runs") {
            // Read while the state lives.
            Value::String(s) => Value::Integer(s.to_str().expect("utf8").len() as i64),
            other => other,
        }
    }

    #[test]
    fn operations_match_luabitop() {
        assert_eq!(eval("return bit.tobit(0xffffffff)"), Value::Number(-1.0));
        assert_eq!(eval("return bit.tobit(2^32 + 5)"), Value::Number(5.0));
        assert_eq!(
            eval("return bit.bor(1,2,4,8,16,32,64,128)"),
            Value::Number(255.0)
        );
        assert_eq!(eval("return bit.bxor(1, 2)"), Value::Number(3.0));
        assert_eq!(eval("return bit.band(1)"), Value::Number(1.0));
        assert_eq!(eval("return bit.bnot(0)"), Value::Number(-1.0));
        assert_eq!(
            eval("return bit.lshift(1, 31)"),
            Value::Number(-2147483648.0)
        );
        assert_eq!(eval("return bit.rshift(-1, 28)"), Value::Number(15.0));
        assert_eq!(eval("return bit.arshift(-256, 4)"), Value::Number(-16.0));
        assert_eq!(
            eval("return bit.rol(0x12345678, 12)"),
            Value::Number(1164411171.0)
        );
        assert_eq!(
            eval("return bit.ror(0x12345678, 12)"),
            Value::Number(1736516421.0)
        );
        assert_eq!(
            eval("return bit.bswap(0x12345678)"),
            Value::Number(2018915346.0)
        );
        let hex = |code: &str| -> String {
            let lua = Lua::new();
            lua.globals()
                .set("bit", install(&lua).expect("bit"))
                .expect("set");
            let s: String = lua.load(code).eval().expect("runs");
            s
        };
        assert_eq!(hex("return bit.tohex(1)"), "00000001");
        assert_eq!(hex("return bit.tohex(-1, -4)"), "FFFF");
        assert_eq!(hex("return bit.tohex(0x12345678, 2)"), "78");
    }
}
