//! The environment scripts and function libraries run in, as Redis 7.0.15 builds it:
//! its libraries (`cjson`, `cmsgpack`, `bit`, `struct`), its `math.random`, only the
//! globals Redis allows, and read-only globals and library tables.
//!
//! Redis marks tables read-only inside its patched Lua; here the same rules come from
//! proxies: a script's globals are an empty table whose reads fall through to the real
//! globals (a missing name is an error, "Script attempted to access nonexistent global
//! variable"), and whose writes fail ("Attempt to modify a readonly table"), as do
//! writes to the library tables, `setmetatable` and `rawset` on any of them.

use std::sync::Arc;

use mlua::{Lua, Result, Table};
use parking_lot::Mutex;

/// The globals a script may use (Redis' allow lists), besides the libraries.
const SANDBOX: &str = r#"
local G = _G
local real_setmetatable, real_rawset = setmetatable, rawset
local real_loadstring, real_setfenv = loadstring, setfenv
local error, tostring, type, pairs = error, tostring, type, pairs
local byte, concat = string.byte, table.concat

local allowed = {}
for name in string.gmatch([[xpcall tostring getfenv setmetatable next assert tonumber
    rawequal collectgarbage getmetatable rawset pcall coroutine type _G select unpack
    gcinfo pairs rawget loadstring ipairs _VERSION setfenv load error newproxy
    string cjson bit cmsgpack math table struct redis]], '%S+') do
  allowed[name] = true
end
for name in pairs(G) do
  if not allowed[name] and string.sub(name, 1, 10) ~= '__carmine_' then G[name] = nil end
end

local readonly = {}
local function deny() error('Attempt to modify a readonly table', 2) end
-- A read-only view of `t`; its metatable, as getmetatable shows it, is read-only too.
local function protect(t, index)
  local proxy, shown = {}, {}
  real_setmetatable(shown, {__index = {}, __newindex = deny, __metatable = false})
  local mt = {__index = index or t, __newindex = deny, __metatable = shown}
  real_setmetatable(proxy, mt)
  readonly[proxy], readonly[shown] = true, true
  return proxy, mt
end

local env
-- Code loaded by a script runs in the script's environment, never in the real one;
-- binary chunks are refused (Redis' Lua cannot load them).
loadstring = function(s, name)
  if type(s) == 'string' and byte(s, 1) == 27 then
    return nil, 'binary chunks are not allowed'
  end
  local f, e = real_loadstring(s, name)
  if f then real_setfenv(f, env) end
  return f, e
end
load = function(reader, name)
  if type(reader) ~= 'function' then return loadstring(reader, name) end
  local parts = {}
  while true do
    local piece = reader()
    if piece == nil or piece == '' then break end
    parts[#parts + 1] = piece
  end
  return loadstring(concat(parts), name)
end
setmetatable = function(t, mt)
  if readonly[t] then deny() end
  return real_setmetatable(t, mt)
end
rawset = function(t, k, v)
  if readonly[t] then deny() end
  return real_rawset(t, k, v)
end

for _, name in pairs({'string', 'math', 'table', 'coroutine', 'cjson', 'bit', 'cmsgpack', 'struct'}) do
  if G[name] then G[name] = protect(G[name]) end
end
__carmine_redis = redis
redis = protect(redis)

real_setmetatable(G, {__index = function(_, name)
  error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
end})
env = protect(G, G)
G._G = env
__carmine_env = env

-- Function libraries run their code once at FUNCTION LOAD with only the library API in
-- sight (redis.register_function, redis.log, the versions), and their functions later
-- with the globals every script has: one environment whose fallback is switched, as
-- Redis switches its globals' __index.
local load_redis = {log = __carmine_redis.log,
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REDIS_VERSION = __carmine_redis.REDIS_VERSION,
  REDIS_VERSION_NUM = __carmine_redis.REDIS_VERSION_NUM}
__carmine_load_redis = load_redis
local missing = getmetatable(G).__index
real_setmetatable(load_redis, {__index = missing})
local library_api = {redis = protect(load_redis)}
real_setmetatable(library_api, {__index = missing})
local library_env, library_mt = protect(G, G)
__carmine_library_env = library_env
__carmine_library_mode = function(loading)
  real_rawset(library_mt, '__index', loading and library_api or G)
end
"#;

/// Redis' 48-bit linear congruential generator (its rand48), so that a seeded
/// `math.random` gives the numbers Redis gives.
struct Rand48 {
    x: u64,
}

impl Rand48 {
    fn seed(seed: i32) -> Rand48 {
        let seed = seed as u32 as u64;
        Rand48 {
            x: ((seed >> 16) << 32) | ((seed & 0xffff) << 16) | 0x330e,
        }
    }

    /// The next 31-bit value.
    fn next(&mut self) -> i32 {
        self.x = (self.x.wrapping_mul(0x5_DEEC_E66D).wrapping_add(0xb)) & 0xffff_ffff_ffff;
        (self.x >> 17) as i32
    }
}

fn install_random(lua: &Lua, math: &Table) -> Result<()> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as i32 ^ d.as_secs() as i32)
        .unwrap_or(0);
    let state = Arc::new(Mutex::new(Rand48::seed(seed)));
    let s = state.clone();
    math.set(
        "random",
        lua.create_function(move |_, args: mlua::Variadic<f64>| {
            const MAX: f64 = i32::MAX as f64;
            let r = f64::from(s.lock().next() % i32::MAX) / MAX;
            match args.as_slice() {
                [] => Ok(r),
                [u] => {
                    if *u < 1.0 {
                        return Err(mlua::Error::RuntimeError(
                            "bad argument #1 to 'random' (interval is empty)".into(),
                        ));
                    }
                    Ok((r * u.floor()).floor() + 1.0)
                }
                [l, u] => {
                    let (l, u) = (l.floor(), u.floor());
                    if l > u {
                        return Err(mlua::Error::RuntimeError(
                            "bad argument #2 to 'random' (interval is empty)".into(),
                        ));
                    }
                    Ok((r * (u - l + 1.0)).floor() + l)
                }
                _ => Err(mlua::Error::RuntimeError(
                    "wrong number of arguments".into(),
                )),
            }
        })?,
    )?;
    math.set(
        "randomseed",
        lua.create_function(move |_, seed: f64| {
            *state.lock() = Rand48::seed(seed as i64 as i32);
            Ok(())
        })?,
    )?;
    Ok(())
}

/// Makes the Rust functions of `lib` raise their errors as plain strings, as the C
/// libraries Redis embeds do (mlua raises them as userdata, which a script that
/// catches them with pcall could not match against).
pub(crate) fn plain_errors(lua: &Lua, lib: &Table) -> Result<()> {
    let wrap: mlua::Function = lua
        .load(
            r#"
            local pcall, error, tostring, gsub, match = pcall, error, tostring, string.gsub, string.match
            local function pass(ok, ...)
              if not ok then
                local text = gsub(tostring((...)), '^runtime error: ', '')
                error(match(text, '^[^\n]*'), 0)
              end
              return ...
            end
            return function(lib)
              for name, f in pairs(lib) do
                if type(f) == 'function' then
                  lib[name] = function(...) return pass(pcall(f, ...)) end
                end
              end
            end"#,
        )
        .set_name("@carmine_sandbox")
        .eval()?;
    wrap.call::<()>(lib.clone())
}

/// Adds the libraries, then locks the environment down; returns the table scripts
/// see as their globals. Called once per Lua state, after the `redis` table exists.
pub fn install(lua: &Lua) -> Result<Table> {
    let g = lua.globals();
    for (name, lib) in [
        ("cjson", super::cjson::install(lua)?),
        ("cmsgpack", super::cmsgpack::install(lua)?),
        ("bit", super::bit::install(lua)?),
        ("struct", super::structlib::install(lua)?),
    ] {
        plain_errors(lua, &lib)?;
        g.set(name, lib)?;
    }
    let math: Table = g.get("math")?;
    install_random(lua, &math)?;
    lua.load(SANDBOX).set_name("@carmine_sandbox").exec()?;
    g.raw_get("__carmine_env")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand48_matches_redis() {
        // Redis: redisSrand48(0) then redisLrand48() twice.
        let mut r = Rand48::seed(0);
        assert_eq!(r.next(), 366_850_414);
        let mut r = Rand48::seed(10);
        let first = r.next();
        assert_eq!(first, Rand48::seed(10).next());
        assert_ne!(first, Rand48::seed(20).next());
    }
}
