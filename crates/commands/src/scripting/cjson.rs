//! The `cjson` library Redis gives scripts (lua-cjson 2.1's behaviour): `encode`,
//! `decode`, the settings functions, and `cjson.null`.
//!
//! Encoding follows lua-cjson: a table whose keys are all positive integers is an
//! array (holes are `null`; an excessively sparse one is refused), any other an object
//! in the table's own iteration order; numbers print with `%.14g`; `/` is escaped.
//! Decoding builds tables (arrays from 1), `null` as `cjson.null`.

use std::sync::Arc;

use mlua::{LightUserData, Lua, MultiValue, Result, Table, Value};
use parking_lot::Mutex;

use crate::zset::format_g;

struct Settings {
    sparse_convert: bool,
    sparse_ratio: i64,
    sparse_safe: i64,
    encode_max_depth: i64,
    decode_max_depth: i64,
    /// 0: refuse NaN and Inf; 1: write them; 2: write `null`.
    encode_invalid_numbers: u8,
    decode_invalid_numbers: bool,
    keep_buffer: bool,
    precision: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            encode_invalid_numbers: 0,
            decode_invalid_numbers: true,
            keep_buffer: true,
            precision: 14,
        }
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(mlua::Error::RuntimeError(msg.into()))
}

fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

pub fn install(lua: &Lua) -> Result<Table> {
    let settings = Arc::new(Mutex::new(Settings::default()));
    let cjson = lua.create_table()?;
    let s = settings.clone();
    cjson.set(
        "encode",
        lua.create_function(move |_, args: MultiValue| {
            if args.len() != 1 {
                return err("bad argument #1 to 'encode' (expected 1 argument)");
            }
            let settings = s.lock();
            let mut out = Vec::new();
            encode(&settings, &args[0], 0, &mut out)?;
            Ok(mlua::BString::from(out))
        })?,
    )?;
    let s = settings.clone();
    cjson.set(
        "decode",
        lua.create_function(move |lua, args: MultiValue| {
            let text = match args.front() {
                Some(Value::String(t)) if args.len() == 1 => t.as_bytes().to_vec(),
                Some(v @ (Value::Integer(_) | Value::Number(_))) if args.len() == 1 => lua
                    .coerce_string(v.clone())?
                    .map(|t| t.as_bytes().to_vec())
                    .unwrap_or_default(),
                _ if args.len() != 1 => {
                    return err("bad argument #1 to 'decode' (expected 1 argument)")
                }
                Some(v) => {
                    return err(format!(
                        "bad argument #1 to 'decode' (string expected, got {})",
                        v.type_name()
                    ))
                }
                None => return err("bad argument #1 to 'decode' (string expected, got no value)"),
            };
            if text.len() >= 2 && (text[0] == 0 || text[1] == 0) {
                return err("JSON parser does not support UTF-16 or UTF-32");
            }
            let settings = s.lock();
            let mut parser = Parser {
                text: &text,
                pos: 0,
                depth: 0,
                settings: &settings,
            };
            let value = parser.value(lua)?;
            parser.skip_ws();
            if parser.pos < text.len() {
                let found = parser.token_name();
                return err(format!(
                    "Expected the end but found {found} at character {}",
                    parser.pos + 1
                ));
            }
            Ok(value)
        })?,
    )?;
    cjson.set("null", null())?;
    cjson.set("_NAME", "cjson")?;
    cjson.set("_VERSION", "2.1.0")?;
    setting_functions(lua, &cjson, &settings)?;
    Ok(cjson)
}

/// `encode_max_depth`, `encode_keep_buffer` and the rest: each sets (when given a
/// value) and returns the setting.
fn setting_functions(lua: &Lua, cjson: &Table, settings: &Arc<Mutex<Settings>>) -> Result<()> {
    fn int_arg(v: Option<&Value>, min: i64, max: i64, name: &str) -> Result<Option<i64>> {
        match v {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::Integer(i)) if (min..=max).contains(i) => Ok(Some(*i)),
            Some(Value::Number(n)) if (min as f64..=max as f64).contains(n) => Ok(Some(*n as i64)),
            _ => err(format!(
                "bad argument #1 to '{name}' (expected integer between {min} and {max})"
            )),
        }
    }
    fn bool_arg(v: Option<&Value>, name: &str, with_null: bool) -> Result<Option<u8>> {
        match v {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(u8::from(*b))),
            Some(Value::String(s)) => match s.as_bytes().as_ref() {
                b"off" => Ok(Some(0)),
                b"on" => Ok(Some(1)),
                b"null" if with_null => Ok(Some(2)),
                _ => err(format!("bad argument #1 to '{name}' (invalid option)")),
            },
            _ => err(format!("bad argument #1 to '{name}' (invalid option)")),
        }
    }
    let s = settings.clone();
    cjson.set(
        "encode_max_depth",
        lua.create_function(move |_, args: MultiValue| {
            let mut st = s.lock();
            if let Some(v) = int_arg(args.front(), 1, i64::from(i32::MAX), "encode_max_depth")? {
                st.encode_max_depth = v;
            }
            Ok(st.encode_max_depth)
        })?,
    )?;
    let s = settings.clone();
    cjson.set(
        "decode_max_depth",
        lua.create_function(move |_, args: MultiValue| {
            let mut st = s.lock();
            if let Some(v) = int_arg(args.front(), 1, i64::from(i32::MAX), "decode_max_depth")? {
                st.decode_max_depth = v;
            }
            Ok(st.decode_max_depth)
        })?,
    )?;
    let s = settings.clone();
    cjson.set(
        "encode_number_precision",
        lua.create_function(move |_, args: MultiValue| {
            let mut st = s.lock();
            if let Some(v) = int_arg(args.front(), 1, 14, "encode_number_precision")? {
                st.precision = v;
            }
            Ok(st.precision)
        })?,
    )?;
    let s = settings.clone();
    cjson.set(
        "encode_keep_buffer",
        lua.create_function(move |_, args: MultiValue| {
            let mut st = s.lock();
            if let Some(v) = bool_arg(args.front(), "encode_keep_buffer", false)? {
                st.keep_buffer = v == 1;
            }
            Ok(st.keep_buffer)
        })?,
    )?;
    let s = settings.clone();
    cjson.set(
        "encode_invalid_numbers",
        lua.create_function(move |lua, args: MultiValue| {
            let mut st = s.lock();
            if let Some(v) = bool_arg(args.front(), "encode_invalid_numbers", true)? {
                st.encode_invalid_numbers = v;
            }
            Ok(match st.encode_invalid_numbers {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => Value::String(lua.create_string("null")?),
            })
        })?,
    )?;
    let s = settings.clone();
    cjson.set(
        "decode_invalid_numbers",
        lua.create_function(move |_, args: MultiValue| {
            let mut st = s.lock();
            if let Some(v) = bool_arg(args.front(), "decode_invalid_numbers", false)? {
                st.decode_invalid_numbers = v == 1;
            }
            Ok(st.decode_invalid_numbers)
        })?,
    )?;
    let s = settings.clone();
    cjson.set(
        "encode_sparse_array",
        lua.create_function(move |_, args: MultiValue| {
            let mut st = s.lock();
            if let Some(v) = bool_arg(args.front(), "encode_sparse_array", false)? {
                st.sparse_convert = v == 1;
            }
            if let Some(v) = int_arg(args.get(1), 0, i64::from(i32::MAX), "encode_sparse_array")? {
                st.sparse_ratio = v;
            }
            if let Some(v) = int_arg(args.get(2), 0, i64::from(i32::MAX), "encode_sparse_array")? {
                st.sparse_safe = v;
            }
            Ok((st.sparse_convert, st.sparse_ratio, st.sparse_safe))
        })?,
    )?;
    Ok(())
}

const ESCAPES: [&[u8]; 32] = [
    b"\\u0000", b"\\u0001", b"\\u0002", b"\\u0003", b"\\u0004", b"\\u0005", b"\\u0006", b"\\u0007",
    b"\\b", b"\\t", b"\\n", b"\\u000b", b"\\f", b"\\r", b"\\u000e", b"\\u000f", b"\\u0010",
    b"\\u0011", b"\\u0012", b"\\u0013", b"\\u0014", b"\\u0015", b"\\u0016", b"\\u0017", b"\\u0018",
    b"\\u0019", b"\\u001a", b"\\u001b", b"\\u001c", b"\\u001d", b"\\u001e", b"\\u001f",
];

fn encode_string(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in bytes {
        match b {
            0..=31 => out.extend_from_slice(ESCAPES[b as usize]),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            127 => out.extend_from_slice(b"\\u007f"),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "number",
        other => other.type_name(),
    }
}

fn encode_number(settings: &Settings, n: f64, out: &mut Vec<u8>) -> Result<()> {
    if n.is_nan() || n.is_infinite() {
        match settings.encode_invalid_numbers {
            0 => return err("Cannot serialise number: must not be NaN or Inf"),
            1 if n.is_nan() => {
                out.extend_from_slice(b"nan");
                return Ok(());
            }
            1 => {}
            _ => {
                out.extend_from_slice(b"null");
                return Ok(());
            }
        }
    }
    out.extend_from_slice(format_g(n, settings.precision as usize).as_bytes());
    Ok(())
}

/// A number key that makes a table an array: an integer >= 1.
fn array_index(k: &Value) -> Option<f64> {
    let n = match k {
        Value::Integer(i) => *i as f64,
        Value::Number(n) => *n,
        _ => return None,
    };
    (n.floor() == n && n >= 1.0).then_some(n)
}

fn encode(settings: &Settings, v: &Value, depth: i64, out: &mut Vec<u8>) -> Result<()> {
    match v {
        Value::String(s) => encode_string(&s.as_bytes(), out),
        Value::Integer(i) => encode_number(settings, *i as f64, out)?,
        Value::Number(n) => encode_number(settings, *n, out)?,
        Value::Boolean(true) => out.extend_from_slice(b"true"),
        Value::Boolean(false) => out.extend_from_slice(b"false"),
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        Value::Table(t) => {
            let depth = depth + 1;
            if depth > settings.encode_max_depth {
                return err(format!("Cannot serialise, excessive nesting ({depth})"));
            }
            // Array or object, as lua-cjson decides.
            let (mut max, mut items, mut array) = (0f64, 0f64, true);
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, _) = pair?;
                match array_index(&k) {
                    Some(n) => {
                        max = max.max(n);
                        items += 1.0;
                    }
                    None => {
                        array = false;
                        break;
                    }
                }
            }
            if array
                && settings.sparse_ratio > 0
                && max > items * settings.sparse_ratio as f64
                && max > settings.sparse_safe as f64
            {
                if !settings.sparse_convert {
                    return err("Cannot serialise table: excessively sparse array");
                }
                array = false;
            }
            if array && max > 0.0 {
                out.push(b'[');
                for i in 1..=(max as i64) {
                    if i > 1 {
                        out.push(b',');
                    }
                    encode(settings, &t.raw_get::<Value>(i)?, depth, out)?;
                }
                out.push(b']');
            } else {
                out.push(b'{');
                let mut first = true;
                for pair in t.clone().pairs::<Value, Value>() {
                    let (k, value) = pair?;
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    match &k {
                        Value::String(s) => encode_string(&s.as_bytes(), out),
                        Value::Integer(_) | Value::Number(_) => {
                            out.push(b'"');
                            let n = match k {
                                Value::Integer(i) => i as f64,
                                Value::Number(n) => n,
                                _ => 0.0,
                            };
                            encode_number(settings, n, out)?;
                            out.push(b'"');
                        }
                        other => {
                            return err(format!(
                                "Cannot serialise {}: table key must be a number or string",
                                describe(other)
                            ))
                        }
                    }
                    out.push(b':');
                    encode(settings, &value, depth, out)?;
                }
                out.push(b'}');
            }
        }
        other => {
            return err(format!(
                "Cannot serialise {}: type not supported",
                describe(other)
            ))
        }
    }
    Ok(())
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    depth: i64,
    settings: &'a Settings,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self
            .text
            .get(self.pos)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.pos += 1;
        }
    }

    /// lua-cjson's name for the token at the current position, for error messages.
    fn token_name(&self) -> &'static str {
        match self.text.get(self.pos) {
            None => "T_END",
            Some(b'{') => "T_OBJ_BEGIN",
            Some(b'}') => "T_OBJ_END",
            Some(b'[') => "T_ARR_BEGIN",
            Some(b']') => "T_ARR_END",
            Some(b'"') => "T_STRING",
            Some(b'-' | b'0'..=b'9') => "T_NUMBER",
            Some(b't' | b'f') if self.word_at(b"true") || self.word_at(b"false") => "T_BOOLEAN",
            Some(b'n') if self.word_at(b"null") => "T_NULL",
            Some(b':') => "T_COLON",
            Some(b',') => "T_COMMA",
            _ => "invalid token",
        }
    }

    fn word_at(&self, word: &[u8]) -> bool {
        self.text[self.pos..].starts_with(word)
    }

    fn expected<T>(&self, what: &str) -> Result<T> {
        err(format!(
            "Expected {what} but found {} at character {}",
            self.token_name(),
            self.pos + 1
        ))
    }

    fn descend(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > self.settings.decode_max_depth {
            return err(format!(
                "Found too many nested data structures ({}) at character {}",
                self.depth,
                self.pos + 1
            ));
        }
        Ok(())
    }

    fn value(&mut self, lua: &Lua) -> Result<Value> {
        self.skip_ws();
        match self.text.get(self.pos) {
            Some(b'{') => {
                self.descend()?;
                self.pos += 1;
                let t = lua.create_table()?;
                self.skip_ws();
                if self.text.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Value::Table(t));
                }
                loop {
                    self.skip_ws();
                    if self.text.get(self.pos) != Some(&b'"') {
                        return self.expected("object key string");
                    }
                    let key = self.string()?;
                    self.skip_ws();
                    if self.text.get(self.pos) != Some(&b':') {
                        return self.expected("colon");
                    }
                    self.pos += 1;
                    let v = self.value(lua)?;
                    t.raw_set(lua.create_string(&key)?, v)?;
                    self.skip_ws();
                    match self.text.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return self.expected("comma or object end"),
                    }
                }
                self.depth -= 1;
                Ok(Value::Table(t))
            }
            Some(b'[') => {
                self.descend()?;
                self.pos += 1;
                let t = lua.create_table()?;
                self.skip_ws();
                if self.text.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Value::Table(t));
                }
                let mut i = 1i64;
                loop {
                    let v = self.value(lua)?;
                    t.raw_set(i, v)?;
                    i += 1;
                    self.skip_ws();
                    match self.text.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return self.expected("comma or array end"),
                    }
                }
                self.depth -= 1;
                Ok(Value::Table(t))
            }
            Some(b'"') => Ok(Value::String(lua.create_string(self.string()?)?)),
            Some(b't') if self.word_at(b"true") => {
                self.pos += 4;
                Ok(Value::Boolean(true))
            }
            Some(b'f') if self.word_at(b"false") => {
                self.pos += 5;
                Ok(Value::Boolean(false))
            }
            Some(b'n') if self.word_at(b"null") => {
                self.pos += 4;
                Ok(null())
            }
            Some(b'-' | b'0'..=b'9' | b'i' | b'I' | b'n' | b'N' | b'+') => self.number(),
            _ => self.expected("value"),
        }
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.pos;
        while self
            .text
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.'))
        {
            self.pos += 1;
        }
        let token = std::str::from_utf8(&self.text[start..self.pos]).unwrap_or_default();
        let lower = token.to_ascii_lowercase();
        let invalid = lower.contains("inf") || lower.contains("nan") || lower.contains("0x");
        let parsed = if invalid && !self.settings.decode_invalid_numbers {
            None
        } else if invalid {
            let negative = lower.starts_with('-');
            if lower.contains("nan") {
                Some(f64::NAN)
            } else if lower.contains("inf") {
                Some(if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                })
            } else {
                let digits = lower
                    .trim_start_matches(['-', '+'])
                    .trim_start_matches("0x");
                u64::from_str_radix(digits, 16).ok().map(|v| {
                    if negative {
                        -(v as f64)
                    } else {
                        v as f64
                    }
                })
            }
        } else if token.starts_with('+') {
            None
        } else {
            token.parse::<f64>().ok()
        };
        match parsed {
            Some(n) => Ok(Value::Number(n)),
            None => {
                self.pos = start;
                self.expected("value")
            }
        }
    }

    /// A string token, unescaped (`\uXXXX`, surrogate pairs included, to UTF-8).
    fn string(&mut self) -> Result<Vec<u8>> {
        let start = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.text.get(self.pos) else {
                self.pos = start;
                return err(format!(
                    "Expected value but found unexpected end of string at character {}",
                    start + 1
                ));
            };
            self.pos += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    let Some(&e) = self.text.get(self.pos) else {
                        continue;
                    };
                    self.pos += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let code = self.unicode_escape(start)?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(code.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => {
                            return err(format!(
                                "Expected value but found invalid escape code at character {}",
                                start + 1
                            ))
                        }
                    }
                }
                _ => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.pos..self.pos + 4)?;
        let v = u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?;
        self.pos += 4;
        Some(v)
    }

    fn unicode_escape(&mut self, start: usize) -> Result<char> {
        let bad = || {
            err(format!(
                "Expected value but found invalid unicode escape code at character {}",
                start + 1
            ))
        };
        let Some(high) = self.hex4() else {
            return bad();
        };
        let code = if (0xD800..0xDC00).contains(&high) {
            if !self.word_at(b"\\u") {
                return bad();
            }
            self.pos += 2;
            let Some(low) = self.hex4() else { return bad() };
            if !(0xDC00..0xE000).contains(&low) {
                return bad();
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else if (0xDC00..0xE000).contains(&high) {
            return bad();
        } else {
            high
        };
        match char::from_u32(code) {
            Some(c) => Ok(c),
            None => bad(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_string(code: &str) -> String {
        let lua = Lua::new();
        let lib = install(&lua).expect("cjson");
        super::super::sandbox::plain_errors(&lua, &lib).expect("wrap");
        lua.globals().set("cjson", lib).expect("set");
        let v: mlua::String = lua.load(code).eval().expect("runs");
        v.to_str().expect("utf8").to_string()
    }

    #[test]
    fn encodes_as_lua_cjson() {
        assert_eq!(
            eval_string("return cjson.encode({1,2,3,'x/y'})"),
            r#"[1,2,3,"x\/y"]"#
        );
        assert_eq!(eval_string("return cjson.encode({})"), "{}");
        assert_eq!(eval_string("return cjson.encode({a=0.1})"), r#"{"a":0.1}"#);
        assert_eq!(
            eval_string("return cjson.encode({[1]=1,[3]=3})"),
            "[1,null,3]"
        );
        assert_eq!(eval_string("return cjson.encode(1/3)"), "0.33333333333333");
        assert_eq!(
            eval_string("return cjson.encode('a\\1\"\\127')"),
            r#""a\u0001\"\u007f""#
        );
        assert_eq!(eval_string("return cjson.encode(cjson.null)"), "null");
        let sparse = "local ok, e = pcall(cjson.encode, {[1]=1, [100]=2}) return e";
        assert_eq!(
            eval_string(sparse),
            "Cannot serialise table: excessively sparse array"
        );
        let key = "local t = {} t[false] = 1 local ok, e = pcall(cjson.encode, t) return e";
        assert_eq!(
            eval_string(key),
            "Cannot serialise boolean: table key must be a number or string"
        );
    }

    #[test]
    fn decodes_as_lua_cjson() {
        assert_eq!(
            eval_string(
                r#"return table.concat(cjson.decode("[0.0, -5e3, -1, 0.3e-3, 1023.2, 0e10]"), " ")"#
            ),
            "0 -5000 -1 0.0003 1023.2 0"
        );
        assert_eq!(
            eval_string(
                r#"local t = cjson.decode([[{"a": "\u00e9\ud83d\ude00", "b": [true, null]}]]) return t.a .. tostring(t.b[1]) .. tostring(t.b[2] == cjson.null)"#
            ),
            "é😀truetrue"
        );
        assert_eq!(
            eval_string(r#"local ok, e = pcall(cjson.decode, '{"a": 1,}') return e"#),
            "Expected object key string but found T_OBJ_END at character 9"
        );
        assert_eq!(
            eval_string(r#"local ok, e = pcall(cjson.decode, '[1] x') return e"#),
            "Expected the end but found invalid token at character 5"
        );
        assert_eq!(
            eval_string(
                r#"cjson.decode_max_depth(1) local ok, e = pcall(cjson.decode, '[[1]]') return e"#
            ),
            "Found too many nested data structures (2) at character 2"
        );
    }
}
