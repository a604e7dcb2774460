//! Lua scripting, Redis 7.0's EVAL family: EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and
//! SCRIPT LOAD / EXISTS / FLUSH, on Lua 5.1 (the version Redis embeds) through `mlua`.
//!
//! A script runs with the world stopped (EVAL is an EXCLUSIVE command), so no client of
//! any event loop sees it half done, whatever keys it touches, declared or not. Its
//! `redis.call`s go through the dispatcher as a session of its own that holds the world
//! (no barrier taken again, nothing blocks), so every command keeps its own checks and
//! records its own effects on the write path.
//!
//! Errors read as Redis 7.0 writes them: a failing `redis.call` or a runtime error
//! becomes `-<code> <message> script: f_<sha>, on @user_script:<line>.`, found by an error
//! handler in Lua, as Redis finds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Instant;

use carmine_resp::{Args, Frame, ReplyBuf};
use mlua::{Lua, LuaOptions, MultiValue, RegistryKey, StdLib, Table, Value};
use parking_lot::Mutex;

use crate::table::{cmd, flags::*, CommandSpec, KeySpec};
use crate::{Ctx, Session, Shared};

mod bit;
mod call;
mod cjson;
mod cmsgpack;
mod sandbox;
mod structlib;

/// The scripts SCRIPT LOAD and EVAL made known, and the Lua state that runs them.
#[derive(Default)]
pub struct Scripts {
    bodies: Mutex<HashMap<String, Vec<u8>>>,
    vm: Mutex<Option<Vm>>,
    /// The script or function running now (one at a time: it holds the world).
    pub running: std::sync::Arc<Running>,
    /// DEBUG SET-DISABLE-DENY-SCRIPTS: scripts may call what Redis refuses them (its
    /// tests use it to watch a running script with CLIENT LIST).
    pub deny_disabled: AtomicBool,
}

/// The script or function that runs now, as the other event loops see it. It holds the
/// world, so they wait for it at the barrier; once it runs past `busy-reply-threshold`
/// they stop waiting and answer -BUSY instead, and take SCRIPT KILL, FUNCTION KILL and
/// SHUTDOWN NOSAVE (Redis' processEventsWhileBlocked, without its re-entrancy: the
/// script's own loop stays with the script, and new connections go to the others).
#[derive(Default)]
pub struct Running {
    active: AtomicBool,
    busy: AtomicBool,
    thread: AtomicUsize,
    /// EVAL-family (SCRIPT KILL stops it) or a function (FUNCTION KILL).
    eval: AtomicBool,
    /// It ran a write command: no KILL stops it then.
    pub(crate) wrote: AtomicBool,
    /// Sent by our master (or replayed from the AOF): never killed.
    from_master: AtomicBool,
    stop: AtomicU8,
    /// `redis.setresp`: the protocol the script's calls reply in (2 at each start).
    resp3: AtomicBool,
    /// The script declared `allow-oom` (or `no-writes`): its calls are never refused
    /// for memory. Set before it starts.
    pub(crate) allow_oom: AtomicBool,
    /// The Unix time in ms the script started at: the time all its calls see.
    started_ms: std::sync::atomic::AtomicU64,
    /// What FUNCTION STATS shows: the name, the command and when it started.
    what: Mutex<Option<RunningScript>>,
}

/// The most memory one Lua state (the scripts', or the functions') may hold.
pub(crate) const LUA_MEMORY_LIMIT: usize = 1 << 30;

/// A Lua state's memory limit set for a while, the previous one restored on drop. The
/// limit binds a script's own code; the server's side of a call (KEYS and ARGV, a
/// command's reply made into Lua values) runs without it, because mlua guards every
/// API call of a limited state with a protected call that allocates a C closure: a
/// third of a small script's time went to those allocations and their collection.
/// Without the limit those calls cannot fail for want of Lua memory.
struct MemoryLimit<'a> {
    lua: &'a Lua,
    previous: Option<usize>,
}

impl<'a> MemoryLimit<'a> {
    fn set(lua: &'a Lua, limit: usize) -> MemoryLimit<'a> {
        MemoryLimit {
            lua,
            previous: lua.set_memory_limit(limit).ok(),
        }
    }
}

impl Drop for MemoryLimit<'_> {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            let _ = self.lua.set_memory_limit(previous);
        }
    }
}

/// How often a busy script's hook answers its own loop's other clients.
const BUSY_SERVE_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

/// A running script's name, the command that runs it, and when it started.
type RunningScript = (String, Vec<Vec<u8>>, Instant);

const STOP_NONE: u8 = 0;
const STOP_KILL: u8 = 1;
const STOP_SHUTDOWN: u8 = 2;
/// A command of the script panicked (see `call::resume_call_panic`).
const STOP_FAILED: u8 = 3;

/// Replies a client gets while a script or a function is busy.
pub const BUSY_EVAL: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
pub const BUSY_FUNCTION: &str =
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";

impl Scripts {
    /// INFO memory's `number_of_cached_scripts`.
    pub fn cached(&self) -> usize {
        self.bodies.lock().len()
    }
}

impl Running {
    fn begin(
        &self,
        thread: usize,
        eval: bool,
        from_master: bool,
        (name, argv): (&str, Vec<Vec<u8>>),
        started: Instant,
    ) {
        {
            // The name's buffer is kept from the last script: one allocation less each.
            let mut what = self.what.lock();
            match what.as_mut() {
                Some(what) => {
                    what.0.clear();
                    what.0.push_str(name);
                    what.1 = argv;
                    what.2 = started;
                }
                None => *what = Some((name.to_string(), argv, started)),
            }
        }
        self.thread.store(thread, Ordering::Relaxed);
        self.eval.store(eval, Ordering::Relaxed);
        self.from_master.store(from_master, Ordering::Relaxed);
        self.wrote.store(false, Ordering::Relaxed);
        self.stop.store(STOP_NONE, Ordering::Relaxed);
        self.busy.store(false, Ordering::Relaxed);
        self.resp3.store(false, Ordering::Relaxed);
        self.started_ms
            .store(carmine_keyspace::now_ms(), Ordering::Relaxed);
        self.active.store(true, Ordering::Release);
    }

    fn end(&self) {
        self.active.store(false, Ordering::Release);
        self.busy.store(false, Ordering::Release);
        // Kept for the next script's name (`describe` reads it only while `active`);
        // the command's arguments go now.
        if let Some(what) = self.what.lock().as_mut() {
            what.1 = Vec::new();
        }
    }

    /// The script chose RESP3 (`redis.setresp(3)`): its calls reply in RESP3, and its
    /// booleans reply as booleans.
    pub fn resp3(&self) -> bool {
        self.resp3.load(Ordering::Relaxed)
    }

    /// A call of the running script skips the OOM refusal: it declared `allow-oom`, or
    /// it wrote already (refusing now would leave it half done, Redis' rule).
    pub fn skips_oom(&self) -> bool {
        self.allow_oom.load(Ordering::Relaxed) || self.wrote.load(Ordering::Relaxed)
    }

    /// An EVAL-family script (not a function) runs now.
    pub fn eval_running(&self) -> bool {
        self.active.load(Ordering::Acquire) && self.eval.load(Ordering::Relaxed)
    }

    /// A script runs past `busy-reply-threshold`: other clients get -BUSY.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// The event loop a busy script runs on (new connections go elsewhere).
    pub fn busy_thread(&self) -> Option<usize> {
        self.busy().then(|| self.thread.load(Ordering::Relaxed))
    }

    /// The -BUSY reply for the script that runs now.
    pub fn busy_error(&self) -> &'static str {
        if self.eval.load(Ordering::Relaxed) {
            BUSY_EVAL
        } else {
            BUSY_FUNCTION
        }
    }

    /// SCRIPT KILL (`eval`) or FUNCTION KILL, with Redis' refusals.
    pub fn kill(&self, eval: bool) -> Result<(), &'static str> {
        if !self.active.load(Ordering::Acquire) {
            return Err("NOTBUSY No scripts in execution right now.");
        }
        if self.from_master.load(Ordering::Relaxed) {
            return Err("UNKILLABLE The busy script was sent by a master instance in the context of replication and cannot be killed.");
        }
        if self.wrote.load(Ordering::Relaxed) {
            return Err("UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.");
        }
        let running_eval = self.eval.load(Ordering::Relaxed);
        if eval && !running_eval {
            return Err(BUSY_FUNCTION);
        }
        if !eval && running_eval {
            return Err(BUSY_EVAL);
        }
        self.stop.store(STOP_KILL, Ordering::Release);
        Ok(())
    }

    /// SHUTDOWN NOSAVE while a script is busy: the script stops where it is; what it
    /// changed is neither propagated nor saved.
    pub fn abandon(&self) {
        self.stop.store(STOP_SHUTDOWN, Ordering::Release);
    }

    /// A command of the script panicked: the script stops at its hook's next check.
    fn fail(&self) {
        self.stop.store(STOP_FAILED, Ordering::Release);
    }

    pub(crate) fn abandoned(&self) -> bool {
        self.stop.load(Ordering::Acquire) == STOP_SHUTDOWN
    }

    /// FUNCTION STATS' `running_script`: name, command and milliseconds so far.
    pub fn describe(&self) -> Option<(String, Vec<Vec<u8>>, u64)> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        self.what
            .lock()
            .as_ref()
            .map(|(name, argv, at)| (name.clone(), argv.clone(), at.elapsed().as_millis() as u64))
    }
}

pub(crate) struct Vm {
    pub(crate) lua: Lua,
    /// Compiled bodies and their shebang flags, by SHA-1, through hashbrown's seeded
    /// hash: SipHash over the 40 digits, twice per EVALSHA, was 1.8% of a loop serving
    /// EVALSHA at -P 16.
    compiled: hashbrown::HashMap<String, (RegistryKey, Option<ScriptFlags>)>,
    /// The globals scripts see (read-only; see `sandbox`).
    pub(crate) env: Table,
    /// The most memory a script's own code may make the state hold.
    pub(crate) memory_limit: usize,
    /// `__carmine_run` and `__carmine_run_alone`, looked up once.
    run: mlua::Function,
    run_alone: mlua::Function,
    /// [`eval_entry`], made once.
    eval_entry: mlua::Function,
    /// [`script_hook`] is the state's hook (FUNCTION LOAD sets its own, a stopped
    /// script leaves a failing one: both clear this).
    pub(crate) hook_installed: AtomicBool,
}

/// What the Lua side defines once per state: the error handler that turns any error
/// into Redis' `{err=..., source=..., line=...}` table (a runtime error's line is in its
/// `user_script:N:` prefix; a failed `redis.call` asks `__carmine_where` for the user
/// script's frame, as Redis' handler finds it past C frames) and the runner calling a
/// script under it. `redis.call` is [`redis_call`], a C function. The `debug` library
/// itself stays out of the sandbox.
const PRELUDE: &str = r#"
local function err_handler(err)
  if type(err) ~= 'table' then
    local text = string.gsub(tostring(err), '^runtime error: ', '')
    text = string.match(text, '^[^\n]*')
    local kind, line = string.match(text, '^user_(%a+):(%d+):')
    err = {err = 'ERR ' .. text}
    if line then
      err['source'] = '@user_' .. kind
      err['line'] = tonumber(line)
    end
  end
  return err
end
__carmine_run = function(f, ...)
  local args = {...}
  local n = select('#', ...)
  return xpcall(function() return f(unpack(args, 1, n)) end, err_handler)
end
-- An EVAL script takes no arguments: no table or closure to make per run.
__carmine_run_alone = function(f)
  return xpcall(f, err_handler)
end
redis = {}
redis.status_reply = function(s)
  if type(s) ~= 'string' then error('wrong number or type of arguments', 0) end
  return {ok = s}
end
redis.error_reply = function(s)
  if type(s) ~= 'string' then error('wrong number or type of arguments', 0) end
  if string.sub(s, 1, 1) == '-' then s = string.sub(s, 2) end
  if not string.find(s, ' ', 1, true) then s = 'ERR ' .. s end
  return {err = s}
end
redis.LOG_DEBUG = 0
redis.LOG_VERBOSE = 1
redis.LOG_NOTICE = 2
redis.LOG_WARNING = 3
redis.REPL_NONE = 0
redis.REPL_AOF = 1
redis.REPL_SLAVE = 2
redis.REPL_REPLICA = 2
redis.REPL_ALL = 3
redis.log = function(level, ...)
  if select('#', ...) == 0 then error('redis.log() requires two arguments or more.', 0) end
  if type(level) ~= 'number' then error('First argument must be a number (log level).', 0) end
  if level < 0 or level > 3 then error('Invalid debug level.', 0) end
  local parts = {}
  for i = 1, select('#', ...) do
    local v = select(i, ...)
    if type(v) == 'string' or type(v) == 'number' then parts[#parts + 1] = tostring(v) end
  end
  __carmine_log(level, table.concat(parts, ' '))
end
redis.replicate_commands = function() return true end
redis.set_repl = function(flags)
  if type(flags) ~= 'number' or flags < 0 or flags > 3 then
    error('Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.', 0)
  end
end
redis.acl_check_cmd = function(...)
  return __carmine_acl_check(...)
end
redis.breakpoint = function() return false end
redis.debug = function() end
"#;

impl Vm {
    pub(crate) fn new(shared: &Shared) -> mlua::Result<Vm> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::default(),
        )?;
        // The innermost frame of the user's script: where a failed redis.call was.
        let locate = lua.create_function(|lua, ()| {
            for level in 1..32 {
                let Some(frame) = lua.inspect_stack(level) else {
                    break;
                };
                let source = frame.source().source.map(|s| s.into_owned());
                if let Some(source) = source.filter(|s| s.starts_with("@user_")) {
                    return Ok((Some(source), Some(frame.curr_line())));
                }
            }
            Ok((None, None))
        })?;
        lua.globals().set("__carmine_where", locate)?;
        lua.globals().set(
            "__carmine_acl_check",
            lua.create_function(|_, args: MultiValue| {
                with_script_context(|cx| acl_check(cx.call.shared, cx.session, &args))
                    .unwrap_or_else(|| {
                        Err(mlua::Error::RuntimeError(
                            "redis.acl_check_cmd is only available while a script runs".into(),
                        ))
                    })
            })?,
        )?;
        let log = shared.log.get().copied();
        lua.globals().set(
            "__carmine_log",
            lua.create_function(move |_, (level, msg): (u8, mlua::String)| {
                if let Some(log) = log {
                    log(level, &msg.to_string_lossy());
                }
                Ok(())
            })?,
        )?;
        lua.load(PRELUDE).set_name("@carmine_prelude").exec()?;
        let redis: Table = lua.globals().get("redis")?;
        // SAFETY: both keep to Lua's C API on the stack they were called with and hold
        // no Rust value that needs dropping across the calls that may raise (see `call`).
        #[allow(unsafe_code)]
        let (call, pcall) = unsafe {
            (
                lua.create_c_function(call::redis_call)?,
                lua.create_c_function(call::redis_pcall)?,
            )
        };
        redis.set("call", call)?;
        redis.set("pcall", pcall)?;
        redis.set(
            "sha1hex",
            lua.create_function(|lua, args: MultiValue| {
                let text = match args.front() {
                    Some(v) if args.len() == 1 => lua.coerce_string(v.clone())?,
                    _ => None,
                };
                match text {
                    Some(s) => Ok(sha1_hex(&s.as_bytes())),
                    None => Err(mlua::Error::RuntimeError(
                        "wrong number of arguments".into(),
                    )),
                }
            })?,
        )?;
        let running = shared.scripts.running.clone();
        redis.set(
            "setresp",
            lua.create_function(move |_, args: MultiValue| {
                let (1, Some(v)) = (args.len(), args.front()) else {
                    return Err(mlua::Error::RuntimeError(
                        "redis.setresp() requires one argument.".into(),
                    ));
                };
                let n = match v {
                    Value::Integer(i) => *i as f64,
                    Value::Number(n) => *n,
                    _ => 0.0,
                };
                if n != 2.0 && n != 3.0 {
                    return Err(mlua::Error::RuntimeError(
                        "RESP version must be 2 or 3.".into(),
                    ));
                }
                running.resp3.store(n == 3.0, Ordering::Relaxed);
                Ok(())
            })?,
        )?;
        let version = crate::server::REDIS_VERSION;
        redis.set("REDIS_VERSION", version)?;
        let num = version
            .split('.')
            .filter_map(|p| p.parse::<i64>().ok())
            .fold(0, |n, p| n * 256 + p);
        redis.set("REDIS_VERSION_NUM", num)?;
        let env = sandbox::install(&lua)?;
        // A script that allocates without bound fails with Lua's "not enough memory"
        // instead of taking the server's memory (Redis sets no such limit).
        lua.set_memory_limit(LUA_MEMORY_LIMIT)?;
        let run = lua.globals().raw_get("__carmine_run")?;
        let run_alone = lua.globals().raw_get("__carmine_run_alone")?;
        // SAFETY: `eval_entry` is called only by `run_with_globals`, as it requires.
        #[allow(unsafe_code)]
        let eval_entry = unsafe { lua.create_c_function(eval_entry)? };
        Ok(Vm {
            lua,
            compiled: hashbrown::HashMap::new(),
            env,
            memory_limit: LUA_MEMORY_LIMIT,
            run,
            run_alone,
            eval_entry,
            hook_installed: AtomicBool::new(false),
        })
    }
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn commands() -> Vec<CommandSpec> {
    let g = "scripting";
    // EXCLUSIVE: a script's commands run with the world stopped. No key spec: the
    // dispatcher locks nothing for the script itself; each call locks its own tables.
    let flags = NOSCRIPT | EXCLUSIVE | MAY_REPLICATE;
    // The _RO forms cannot write: reads, as Redis flags them (a write pause lets them run).
    let read_only_flags = NOSCRIPT | EXCLUSIVE | READONLY;
    vec![
        cmd(
            "eval",
            -3,
            flags,
            KeySpec::None,
            eval,
            g,
            "@slow @scripting",
            "Executes a server-side Lua script.",
        ),
        cmd(
            "evalsha",
            -3,
            flags,
            KeySpec::None,
            evalsha,
            g,
            "@slow @scripting",
            "Executes a server-side Lua script by SHA1 digest.",
        ),
        cmd(
            "eval_ro",
            -3,
            read_only_flags,
            KeySpec::None,
            eval_ro,
            g,
            "@slow @scripting",
            "Executes a read-only server-side Lua script.",
        ),
        cmd(
            "evalsha_ro",
            -3,
            read_only_flags,
            KeySpec::None,
            evalsha_ro,
            g,
            "@slow @scripting",
            "Executes a read-only server-side Lua script by SHA1 digest.",
        ),
        CommandSpec {
            subcommands: &["debug", "exists", "flush", "help", "kill", "load"],
            ..cmd(
                "script",
                -2,
                NOSCRIPT,
                KeySpec::None,
                script,
                g,
                "@slow @scripting",
                "A container for Lua scripts management commands.",
            )
        },
    ]
}

fn eval(ctx: &mut Ctx<'_, '_>) {
    run_script(ctx, false, false);
}

fn evalsha(ctx: &mut Ctx<'_, '_>) {
    run_script(ctx, true, false);
}

fn eval_ro(ctx: &mut Ctx<'_, '_>) {
    run_script(ctx, false, true);
}

fn evalsha_ro(ctx: &mut Ctx<'_, '_>) {
    run_script(ctx, true, true);
}

fn script(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    let scripts = &ctx.shared.scripts;
    match (sub.as_slice(), ctx.args.len()) {
        (b"load", 3) => {
            let body = ctx.arg(2).to_vec();
            let sha = sha1_hex(&body);
            let mut vm = scripts.vm.lock();
            if let Err(e) = compiled(ctx.shared, &mut vm, &sha, &body) {
                return ctx.error(&e);
            }
            scripts.bodies.lock().insert(sha.clone(), body);
            ctx.reply.bulk(sha.as_bytes());
        }
        (b"exists", n) if n >= 3 => {
            let bodies = scripts.bodies.lock();
            let found: Vec<bool> = (2..n)
                .map(|i| bodies.contains_key(&String::from_utf8_lossy(ctx.arg(i)).to_lowercase()))
                .collect();
            drop(bodies);
            ctx.reply.array(found.len());
            for f in found {
                ctx.reply.int(i64::from(f));
            }
        }
        (b"flush", 2 | 3) => {
            if ctx.args.len() == 3 && !ctx.is(2, "ASYNC") && !ctx.is(2, "SYNC") {
                return ctx.error("ERR SCRIPT FLUSH only support SYNC|ASYNC option");
            }
            scripts.bodies.lock().clear();
            *scripts.vm.lock() = None;
            ctx.reply.ok();
        }
        (b"kill", 2) => match scripts.running.kill(true) {
            Ok(()) => ctx.reply.ok(),
            Err(e) => ctx.error(e),
        },
        (b"help", 2) => crate::connection::help_reply(ctx, SCRIPT_HELP),
        _ => ctx.unknown_subcommand(),
    }
}

const SCRIPT_HELP: &[&str] = &[
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache. Very dangerous on replicas.",
    "KILL",
    "    Kill the currently executing Lua script.",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Print this help.",
];

/// The compiled function of `body`, compiling it on first use.
fn compiled<'v>(
    shared: &Shared,
    vm: &'v mut Option<Vm>,
    sha: &str,
    body: &[u8],
) -> Result<&'v mut Vm, String> {
    if vm.is_none() {
        *vm = Some(Vm::new(shared).map_err(|e| format!("ERR Lua scripting is unavailable: {e}"))?);
    }
    let Some(state) = vm.as_mut() else {
        return Err("ERR Lua scripting is unavailable".into());
    };
    if !state.compiled.contains_key(sha) {
        let flags = parse_shebang(body)?;
        // A `#!lua flags=...` first line is Redis' shebang, not Lua: it is blanked (the
        // newline kept, so error line numbers stay right).
        let body: &[u8] = if body.starts_with(b"#!") {
            match body.iter().position(|&c| c == b'\n') {
                Some(nl) => &body[nl..],
                None => b"",
            }
        } else {
            body
        };
        let f = state
            .lua
            .load(body)
            .set_name("@user_script")
            .set_environment(state.env.clone())
            .into_function()
            .map_err(|e| {
                format!(
                    "ERR Error compiling script (new function): {}",
                    lua_message(&e)
                )
            })?;
        let key = state
            .lua
            .create_registry_value(f)
            .map_err(|e| format!("ERR {e}"))?;
        state.compiled.insert(sha.to_string(), (key, flags));
    }
    Ok(state)
}

/// mlua's text for an error, without its traceback.
pub(crate) fn lua_message(e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        other => other.to_string(),
    };
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("runtime error: ")
        .unwrap_or(line)
        .to_string()
}

/// EVAL's and FCALL's `numkeys` (argument 2), checked against what follows it; None
/// once the error reply is written.
pub(crate) fn numkeys_arg(ctx: &mut Ctx<'_, '_>) -> Option<usize> {
    let numkeys = if runs_function(ctx.spec) {
        // FCALL's own wording for a count that is no number.
        match carmine_resp::parse_i64(ctx.arg(2)) {
            Some(n) => n,
            None => {
                ctx.error("ERR Bad number of keys provided");
                return None;
            }
        }
    } else {
        ctx.int_arg(2)?
    };
    if numkeys < 0 {
        ctx.error("ERR Number of keys can't be negative");
        return None;
    }
    if numkeys as usize > ctx.args.len() - 3 {
        ctx.error("ERR Number of keys can't be greater than number of args");
        return None;
    }
    Some(numkeys as usize)
}

/// The session a script's or function's calls run in: its caller's client and
/// database, holding the world. A script our master sent, or the AOF replays, writes as
/// its caller does: no read-only refusal, and (replaying) nothing recorded again.
pub(crate) fn script_session(caller: &Session) -> Session {
    let mut session = Session::new(caller.info.clone(), caller.thread, true);
    session.select(caller.db);
    session.world_held = true;
    session.in_script = true;
    // A script's calls run with its caller's ACL permissions.
    session.user = caller.user.clone();
    session.master_link = caller.master_link;
    session.replaying = caller.replaying;
    // Kept from script to script (see `end_script_session`): a script repeats its calls.
    session
        .script_command_memos
        .clone_from(&caller.script_command_memos);
    session
}

/// What a script's session leaves its caller: the commands its calls named.
pub(crate) fn end_script_session(caller: &mut Session, session: &mut Session) {
    caller.script_command_memos = std::mem::take(&mut session.script_command_memos);
}

fn run_script(ctx: &mut Ctx<'_, '_>, by_sha: bool, read_only: bool) {
    let Some(numkeys) = numkeys_arg(ctx) else {
        return;
    };
    let shared = ctx.shared;
    // Any case, as Redis takes it; a name that is not 40 hex digits is a lookup that
    // fails like any unknown SHA-1. Lowered on the stack: EVALSHA allocates nothing for it.
    let mut lowered = [0u8; 40];
    let owned;
    let sha: &str = match ctx.arg(1) {
        given if by_sha && given.len() == lowered.len() => {
            lowered.copy_from_slice(given);
            lowered.make_ascii_lowercase();
            std::str::from_utf8(&lowered).unwrap_or_default()
        }
        given if by_sha => {
            owned = String::from_utf8_lossy(given).to_ascii_lowercase();
            &owned
        }
        body => {
            owned = sha1_hex(body);
            &owned
        }
    };
    let mut vm_guard = shared.scripts.vm.lock();
    // Compiled already (the common EVALSHA): no body to look up or copy.
    let ready = vm_guard
        .as_ref()
        .is_some_and(|vm| vm.compiled.contains_key(sha));
    if !ready {
        let body = if by_sha {
            match shared.scripts.bodies.lock().get(sha) {
                Some(b) => b.clone(),
                None => return ctx.error("NOSCRIPT No matching script. Please use EVAL."),
            }
        } else {
            ctx.arg(1).to_vec()
        };
        if let Err(e) = compiled(shared, &mut vm_guard, sha, &body) {
            return ctx.error(&e);
        }
        if !by_sha {
            shared.scripts.bodies.lock().insert(sha.to_string(), body);
        }
    }
    let Some(vm) = vm_guard.as_ref() else {
        return ctx.error("ERR Lua scripting is unavailable");
    };
    let Some((compiled_key, flags)) = vm.compiled.get(sha) else {
        return ctx.error("NOSCRIPT No matching script. Please use EVAL.");
    };
    let flags = *flags;
    let read_only = match admit(ctx, flags, read_only) {
        Ok(read_only) => read_only,
        Err(e) => return ctx.error(&e),
    };
    let mut session = script_session(ctx.session);
    let outcome = call_script(
        vm,
        shared,
        ctx.stats,
        &mut session,
        (sha, compiled_key),
        Globals {
            args: ctx.args,
            keys: 3..3 + numkeys,
            argv: 3 + numkeys..ctx.args.len(),
        },
        read_only,
        ctx.started,
    );
    end_script_session(ctx.session, &mut session);
    propagate_effects(shared, &mut session);
    match outcome {
        Ok(reply) => write_lua_reply(ctx.reply, &reply, 0, shared.scripts.running.resp3()),
        Err(message) if session.script_error_counted => ctx.reply.error_uncounted(&message),
        Err(message) => ctx.reply.error(&message),
    }
}

#[allow(clippy::too_many_arguments)]
fn call_script(
    vm: &Vm,
    shared: &Shared,
    stats: &crate::ThreadStats,
    session: &mut Session,
    (sha, compiled): (&str, &RegistryKey),
    globals: Globals<'_>,
    read_only: bool,
    started: Instant,
) -> Result<Value, String> {
    let call = Call {
        shared,
        stats,
        read_only,
        eval: true,
        argv: &[],
        memory_limit: vm.memory_limit,
        started,
    };
    invoke(
        vm,
        ScriptInput::Eval(compiled, globals),
        &call,
        session,
        // Redis names an EVAL script by its SHA-1 alone (its Lua function is f_<sha>,
        // the name it reports skips the prefix).
        sha,
    )
}

/// An EVAL script's KEYS and ARGV: ranges of its command's arguments.
pub(crate) struct Globals<'a> {
    pub args: &'a Args,
    pub keys: std::ops::Range<usize>,
    pub argv: std::ops::Range<usize>,
}

/// What runs: an EVAL script (its compiled body's registry key) with its KEYS and ARGV
/// as globals, or a function with its arguments.
pub(crate) enum ScriptInput<'a> {
    Eval(&'a RegistryKey, Globals<'a>),
    Call(mlua::Function, MultiValue),
}

/// What a script or function changed reaches replicas and the AOF as one unit, even
/// when it then failed (its writes are not undone, as in Redis).
pub(crate) fn propagate_effects(shared: &Shared, session: &mut Session) {
    let effects = std::mem::take(&mut session.script_effects);
    // Stopped by SHUTDOWN NOSAVE: what it did goes with the server, unsaved.
    if shared.scripts.running.abandoned() {
        return;
    }
    if let (Some(p), false) = (shared.propagating(), effects.is_empty()) {
        let ops: Vec<crate::propagate::Op<'_>> = effects
            .into_iter()
            .map(|(db, argv)| crate::propagate::Op {
                db,
                argv: crate::propagate::Argv::Owned(argv),
            })
            .collect();
        p.append(&ops, true);
    }
}

/// What [`eval_entry`] is handed, through a light userdata.
struct EvalEntry<'a> {
    lua: &'a Lua,
    /// The compiled script.
    f: &'a RegistryKey,
    globals: &'a Globals<'a>,
    memory_limit: usize,
}

/// Sets the globals KEYS and ARGV and runs the compiled script under
/// `__carmine_run_alone` (the error handler) through [`eval_entry`], all in one
/// protected call. The globals are pushed with Lua's API (through mlua each string and
/// each table was a reference object of its own, 7% of a small script's time), in the
/// call that runs the script: a protected call of their own cost a `setjmp` and C
/// closures to collect per script. The script is pushed from the registry directly (an
/// mlua `Function` made and dropped for it was 2%).
fn run_with_globals(
    vm: &Vm,
    f: &RegistryKey,
    globals: &Globals<'_>,
    memory_limit: usize,
) -> mlua::Result<(bool, Value)> {
    let entry = EvalEntry {
        lua: &vm.lua,
        f,
        globals,
        memory_limit,
    };
    let handed = mlua::LightUserData(std::ptr::from_ref(&entry).cast_mut().cast());
    vm.eval_entry.call::<(bool, Value)>((handed, &vm.run_alone))
}

/// The C function [`run_with_globals`] calls with an [`EvalEntry`] and
/// `__carmine_run_alone`: sets KEYS and ARGV (without the memory limit, which then binds
/// the script's own code) and returns what the runner returns.
///
/// # Safety
/// Called by Lua only, as a C function, with a light userdata pointing at an
/// [`EvalEntry`] that outlives the call and the runner on `state`'s stack.
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn eval_entry(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    use mlua::ffi;
    unsafe fn push_strings(state: *mut ffi::lua_State, args: &Args, items: std::ops::Range<usize>) {
        ffi::lua_createtable(state, items.len().min(1 << 24) as std::ffi::c_int, 0);
        for (n, i) in items.enumerate() {
            let item = args.get(i).unwrap_or_default();
            ffi::lua_pushlstring(state, item.as_ptr().cast(), item.len());
            ffi::lua_rawseti(state, -2, (n + 1) as ffi::lua_Integer);
        }
    }
    // SAFETY: the caller's contract; a C function has room for LUA_MINSTACK (20) values,
    // and three at a time are used here (a name, a table, a string). Whatever raises in
    // here (a push out of memory, an error escaping the handler) unwinds to the protected
    // call of `run_with_globals` past this frame, which holds only references, ranges
    // and integers. The script's own errors stop at the handler's `xpcall`.
    let entry = &*ffi::lua_touserdata(state, 1).cast::<EvalEntry<'_>>();
    // Raw sets, as the sandbox's protected globals would refuse plain ones.
    ffi::lua_pushstring(state, c"KEYS".as_ptr());
    push_strings(state, entry.globals.args, entry.globals.keys.clone());
    ffi::lua_rawset(state, ffi::LUA_GLOBALSINDEX);
    ffi::lua_pushstring(state, c"ARGV".as_ptr());
    push_strings(state, entry.globals.args, entry.globals.argv.clone());
    ffi::lua_rawset(state, ffi::LUA_GLOBALSINDEX);
    ffi::lua_pushvalue(state, 2);
    // From the registry of the state the key was made in: this one.
    ffi::lua_rawgeti(
        state,
        ffi::LUA_REGISTRYINDEX,
        entry.f.id() as ffi::lua_Integer,
    );
    // Restored by `invoke`'s guard when the script is over.
    let _ = entry.lua.set_memory_limit(entry.memory_limit);
    ffi::lua_call(state, 1, 2);
    2
}

/// A Lua table of strings (KEYS, ARGV).
pub(crate) fn string_table<'a>(
    lua: &Lua,
    items: impl ExactSizeIterator<Item = &'a [u8]>,
) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, item) in items.enumerate() {
        t.raw_set(i + 1, lua.create_string(item)?)?;
    }
    Ok(t)
}

/// What a script's `redis.pcall` needs besides its session.
pub(crate) struct Call<'a> {
    pub shared: &'a Shared,
    pub stats: &'a crate::ThreadStats,
    pub read_only: bool,
    /// EVAL-family (SCRIPT KILL) rather than FCALL (FUNCTION KILL).
    pub eval: bool,
    /// The calling command, which FUNCTION STATS shows for a running function.
    pub argv: &'a [Vec<u8>],
    /// The state's memory limit while the script's code runs (see [`MemoryLimit`]).
    pub memory_limit: usize,
    /// When the calling command started: the script's start for `busy-reply-threshold`.
    pub started: Instant,
}

fn runs_function(spec: &crate::table::CommandSpec) -> bool {
    matches!(spec.name, "fcall" | "fcall_ro")
}

/// The shebang flags of the script an EVAL / EVALSHA names: None for a script without
/// one (or not loaded).
fn named_script_flags(
    shared: &Shared,
    spec: &crate::table::CommandSpec,
    args: &Args,
) -> Option<ScriptFlags> {
    let named = args.get(1).unwrap_or_default();
    match spec.name {
        "eval" => parse_shebang(named).ok().flatten(),
        "evalsha" => {
            let sha = String::from_utf8_lossy(named).to_lowercase();
            let bodies = shared.scripts.bodies.lock();
            bodies
                .get(&sha)
                .and_then(|b| parse_shebang(b).ok().flatten())
        }
        _ => None,
    }
}

/// Whether the script or function this EVAL / EVALSHA / FCALL names counts as a write
/// for Cluster's redirection, as Redis judges it: a script with a shebang (or a function)
/// writes unless it declares `no-writes`; a script without a shebang runs in
/// compatibility mode and is judged by EVAL's own flags (not a write).
pub fn declares_writes(shared: &Shared, spec: &crate::table::CommandSpec, args: &Args) -> bool {
    match spec.name {
        "fcall" => !declares_no_writes(shared, spec, args),
        _ => named_script_flags(shared, spec, args).is_some_and(|f| !f.no_writes),
    }
}

/// Whether the script or function this EVAL / EVALSHA / FCALL names declares
/// `no-writes` (Redis then treats the call as a read: a write pause does not hold it).
/// A script without a shebang, or one not loaded, may write.
pub fn declares_no_writes(shared: &Shared, spec: &crate::table::CommandSpec, args: &Args) -> bool {
    match spec.name {
        "fcall" => shared
            .functions
            .declares_no_writes(&String::from_utf8_lossy(args.get(1).unwrap_or_default())),
        _ => named_script_flags(shared, spec, args).is_some_and(|f| f.no_writes),
    }
}

/// EVAL, EVALSHA, FCALL and their _RO forms: commands that run a script, whose keys
/// are the `numkeys` declared after the script or function name.
pub fn runs_script(spec: &crate::table::CommandSpec) -> bool {
    matches!(
        spec.name,
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
    )
}

/// What the running script's `redis.pcall` and its instruction hook need, lent by
/// [`invoke`] for the run through a thread-local pointer. Both callbacks are made once
/// per Lua state; a callback scoped to each run (`Lua::scope`), with a hook set and
/// removed each time, cost a small script about a fifth of its time (the scoped
/// function's userdata, its teardown and the garbage both leave).
struct ScriptContext<'a> {
    call: &'a Call<'a>,
    session: &'a mut Session,
    started: Instant,
    /// `busy-reply-threshold`, read when the script started.
    busy_after: std::time::Duration,
    last_served: Instant,
    /// The hook was switched to failing every instruction (SCRIPT KILL, SHUTDOWN NOSAVE).
    hook_replaced: bool,
}

thread_local! {
    /// The context of the script this thread runs: null when none runs, and while a
    /// callback holds it.
    static SCRIPT_CONTEXT: std::cell::Cell<*mut ()> =
        const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// Puts a context pointer in place until dropped, then restores the one before.
struct Lent(*mut ());

impl Lent {
    fn new(cx: &mut ScriptContext<'_>) -> Lent {
        let ptr = std::ptr::from_mut(cx).cast::<()>();
        Lent(SCRIPT_CONTEXT.with(|c| c.replace(ptr)))
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        SCRIPT_CONTEXT.with(|c| c.set(self.0));
    }
}

/// Runs `f` with the running script's context, taken out of the thread-local for the
/// time, so that a callback made meanwhile finds none rather than a second `&mut`;
/// None when no script runs on this thread.
fn with_script_context<R>(f: impl FnOnce(&mut ScriptContext<'_>) -> R) -> Option<R> {
    let ptr = SCRIPT_CONTEXT.with(|c| c.replace(std::ptr::null_mut()));
    if ptr.is_null() {
        return None;
    }
    let _back = Lent(ptr);
    // SAFETY: a non-null pointer was put there by `Lent::new` in `invoke`, from a
    // `ScriptContext` on `invoke`'s stack that `invoke` leaves untouched until its
    // `Lent` is dropped, which puts the pointer before it back (null outside a run). So
    // the context is alive, on this thread, and borrowed nowhere else: the pointer was
    // taken out above, and `_back` restores it after `f`, even if `f` panics.
    #[allow(unsafe_code)]
    let cx = unsafe { &mut *ptr.cast::<ScriptContext<'_>>() };
    Some(f(cx))
}

/// Every 100,000 instructions (Redis' period): past `busy-reply-threshold` the script
/// is busy (clients get -BUSY and may send a KILL), and a KILL or a SHUTDOWN NOSAVE is
/// acted on. Returns the message to stop the script with.
fn script_hook_check() -> Option<&'static std::ffi::CStr> {
    with_script_context(|cx| {
        let shared = cx.call.shared;
        let running = &shared.scripts.running;
        if !running.busy() && cx.started.elapsed() >= cx.busy_after {
            if let Some(log) = shared.log.get() {
                log(3, &format!(
                    "Slow script detected: still in execution after {} milliseconds. You can try killing the script using the {} command. Script name is: {}.",
                    cx.started.elapsed().as_millis(),
                    if running.eval.load(Ordering::Relaxed) { "SCRIPT KILL" } else { "FUNCTION KILL" },
                    running.describe().map(|d| d.0).unwrap_or_default()
                ));
            }
            running.busy.store(true, Ordering::Release);
        }
        // Busy: this loop's other clients are answered here, every few ms.
        if running.busy() && cx.last_served.elapsed() >= BUSY_SERVE_EVERY {
            if let Some(serve) = shared.busy_serve.get() {
                serve();
            }
            cx.last_served = Instant::now();
        }
        let why = match running.stop.load(Ordering::Acquire) {
            STOP_KILL => c"Script killed by user with SCRIPT KILL...",
            STOP_SHUTDOWN => c"Script abandoned by SHUTDOWN NOSAVE",
            STOP_FAILED => c"a command of this script failed",
            _ => return None,
        };
        Some(stop_script(cx, why))
    })
    .flatten()
}

/// Records that the script stops for `why`: the hook fails every instruction from now.
fn stop_script(
    cx: &mut ScriptContext<'_>,
    why: &'static std::ffi::CStr,
) -> &'static std::ffi::CStr {
    cx.hook_replaced = true;
    STOP_REASON.with(|r| r.set(Some(why)));
    why
}

thread_local! {
    /// Why the script this thread runs was stopped, for the hook that fails every
    /// instruction from then on.
    static STOP_REASON: std::cell::Cell<Option<&'static std::ffi::CStr>> =
        const { std::cell::Cell::new(None) };
}

/// The scripts' instruction hook, a C hook set with Lua's own API: Lua 5.1 hands a
/// state's hook to every coroutine made from it, so a loop inside a coroutine is busy
/// and killable like any other (mlua's hooks leave other threads alone: a
/// `coroutine.wrap` loop held the world for good). A stop fails this instruction and,
/// through [`script_stopped_hook`], every later one of the thread (as Redis' hook turns
/// to every line), so the script cannot catch it with pcall and carry on; the error
/// handler runs with hooks off, as Lua runs it after a hook's error.
///
/// # Safety
/// Called by Lua only. The check runs and returns before anything can raise.
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn script_hook(state: *mut mlua::lua_State, _: *mut mlua::ffi::lua_Debug) {
    // A panic must not unwind through Lua's C frames. It is kept and resumed once the
    // script is over, as a called command's panic is, and the script stops here: the
    // check serves other clients while the script is busy, and a panic there may have
    // left their state half-changed, so the event loop must not run on.
    let why = match std::panic::catch_unwind(script_hook_check) {
        Ok(why) => why,
        Err(payload) => {
            call::keep_call_panic(payload);
            with_script_context(|cx| {
                cx.call.shared.scripts.running.fail();
                stop_script(cx, c"a command of this script failed")
            })
        }
    };
    if let Some(why) = why {
        mlua::ffi::lua_sethook(
            state,
            Some(script_stopped_hook),
            mlua::ffi::LUA_MASKCOUNT,
            1,
        );
        mlua::ffi::lua_pushstring(state, why.as_ptr());
        mlua::ffi::lua_error(state);
    }
}

/// Every instruction of a stopped script fails.
///
/// # Safety
/// Called by Lua only; nothing here needs dropping.
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn script_stopped_hook(
    state: *mut mlua::lua_State,
    _: *mut mlua::ffi::lua_Debug,
) {
    let why = STOP_REASON
        .with(std::cell::Cell::get)
        .unwrap_or(c"Script stopped");
    mlua::ffi::lua_pushstring(state, why.as_ptr());
    mlua::ffi::lua_error(state);
}

/// Sets [`script_hook`] on the state's main thread (whose hook coroutines made later
/// inherit), or clears its hook.
fn set_script_hook(lua: &Lua, on: bool) {
    // SAFETY: `lua_sethook` neither raises nor allocates.
    #[allow(unsafe_code)]
    let _ = unsafe {
        lua.exec_raw::<()>((), |state| {
            if on {
                mlua::ffi::lua_sethook(state, Some(script_hook), mlua::ffi::LUA_MASKCOUNT, 100_000);
            } else {
                mlua::ffi::lua_sethook(state, None, 0, 0);
            }
        })
    };
}

/// Runs `f(args)` under Redis' error handler with `redis.pcall` bound to `session`; an
/// error comes back as Redis writes it, naming `name` (a script's SHA-1, or a function's name).
pub(crate) fn invoke(
    vm: &Vm,
    input: ScriptInput<'_>,
    call: &Call<'_>,
    session: &mut Session,
    name: &str,
) -> Result<Value, String> {
    let lua = &vm.lua;
    let _unlimited = MemoryLimit::set(lua, 0);
    let fail = |e: mlua::Error| format!("ERR {}", lua_message(&e));
    let running = &call.shared.scripts.running;
    let command = if call.eval {
        Vec::new()
    } else {
        call.argv.to_vec()
    };
    let started = call.started;
    running.begin(
        session.thread,
        call.eval,
        session.master_link || session.replaying,
        (name, command),
        started,
    );
    if !vm.hook_installed.swap(true, Ordering::Relaxed) {
        set_script_hook(lua, true);
    }
    let mut cx = ScriptContext {
        call,
        session,
        started,
        busy_after: std::time::Duration::from_millis(
            call.shared
                .config
                .tunables
                .busy_reply_threshold_ms
                .load(Ordering::Relaxed),
        ),
        last_served: started,
        hook_replaced: false,
    };
    let result = {
        let _lent = Lent::new(&mut cx);
        match input {
            ScriptInput::Eval(f, globals) => run_with_globals(vm, f, &globals, call.memory_limit),
            ScriptInput::Call(f, args) => {
                // A function always gets its KEYS and ARGV tables; EVAL scripts, which
                // take no arguments, run through `eval_entry`.
                let _limited = MemoryLimit::set(lua, call.memory_limit);
                let mut all = MultiValue::new();
                all.push_back(Value::Function(f));
                all.extend(args);
                vm.run.call::<(bool, Value)>(all)
            }
        }
    };
    let session = cx.session;
    if cx.hook_replaced {
        // Stopped: the failing hook goes; the next run installs the usual one.
        set_script_hook(lua, false);
        vm.hook_installed.store(false, Ordering::Relaxed);
    }
    running.end();
    call::release_call_frame();
    call::resume_call_panic();
    // A script that ran the state near its limit (out of memory, say) leaves garbage
    // the next one would trip on: collected now.
    if lua.used_memory() > call.memory_limit / 2 || !matches!(result, Ok((true, _))) {
        let _ = lua.gc_collect();
    }
    let (ok, value) = result.map_err(fail)?;
    if ok {
        return Ok(value);
    }
    // The handler's table: {err=..., source=..., line=...}.
    // A table from the error handler; a plain message when Lua could not run the
    // handler (out of memory), as Redis reports it.
    let t = match value {
        Value::Table(t) => t,
        Value::String(msg) => {
            let msg = msg.to_string_lossy();
            let msg: String = msg.chars().take(100).collect();
            return Err(format!("ERR Error running script {name}, {msg}"));
        }
        _ => {
            return Err(format!(
                "ERR Error running script {name}, execution failure"
            ))
        }
    };
    let err: String = t
        .get::<Option<String>>("err")
        .ok()
        .flatten()
        .unwrap_or_default();
    let source: Option<String> = t.get("source").ok().flatten();
    let line: Option<i64> = t.get("line").ok().flatten();
    session.script_error_counted = matches!(t.raw_get(COUNTED_MARK), Ok(Value::Boolean(true)));
    let err = err.trim_end_matches(['\r', '\n']).to_string();
    Err(match (source, line) {
        (Some(source), Some(line)) => format!("{err} script: {name}, on {source}:{line}."),
        _ => err,
    })
}

/// The field of an error table whose error was counted in INFO errorstats already (the
/// name Redis gives it): a script that returns or raises it does not count it again.
const COUNTED_MARK: &str = "ignore_error_stats_update";
const COUNTED_MARK_C: &std::ffi::CStr = c"ignore_error_stats_update";

/// `redis.acl_check_cmd(...)`: may the script's user run this command?
fn acl_check(shared: &Shared, session: &Session, cmd: &MultiValue) -> mlua::Result<Value> {
    let args = call_args(cmd)?;
    let spec = args
        .get(0)
        .and_then(|name| shared.commands.lookup(name))
        .and_then(|i| shared.commands.get(i));
    match spec {
        Some(spec) if spec.arity_ok(args.len()) => Ok(Value::Boolean(
            session.acl_user(shared).check(spec, &args).is_ok(),
        )),
        Some(_) => Err(mlua::Error::RuntimeError(
            "Wrong number of args calling Redis command from script".into(),
        )),
        None => Err(mlua::Error::RuntimeError(
            "Invalid command passed to redis.acl_check_cmd()".into(),
        )),
    }
}

/// A `redis.call`'s arguments: strings, and numbers as Lua prints them (`%.14g`, as
/// Redis converts them); anything else is refused. Built straight into one buffer.
fn call_args(args: &MultiValue) -> mlua::Result<Args> {
    let mut built = carmine_resp::ArgsBuilder::with_capacity(args.len(), 64);
    for v in args.iter() {
        match v {
            Value::String(s) => built.push(&s.as_bytes()),
            // `%.17g`, as `redis.call` writes numbers (Lua 5.1's are all doubles).
            Value::Integer(i) => built.push(call::number_text(*i as f64).as_bytes()),
            Value::Number(n) => built.push(call::number_text(*n).as_bytes()),
            _ => return Err(not_a_call_argument()),
        }
    }
    Ok(built.finish())
}

fn not_a_call_argument() -> mlua::Error {
    mlua::Error::RuntimeError("Lua redis lib command arguments must be strings or integers".into())
}

/// A script's result as Redis replies it: numbers truncate to integers, nil is a null,
/// `{err=}` and `{ok=}` tables are error and status replies, `{map=}`, `{set=}`,
/// `{double=}`, `{big_number=}` and `{verbatim_string=}` the RESP3 types (written as
/// the client's protocol writes them), other tables arrays up to their first nil.
/// Booleans follow the script's protocol (`redis.setresp`): in RESP2 true is 1 and
/// false a null.
pub(crate) fn write_lua_reply(reply: &mut ReplyBuf, v: &Value, depth: usize, resp3: bool) {
    match v {
        Value::String(s) => reply.bulk(&s.as_bytes()),
        Value::Integer(i) => reply.int(*i),
        Value::Number(n) => reply.int(*n as i64),
        Value::Boolean(b) if resp3 => reply.boolean(*b),
        Value::Boolean(true) => reply.int(1),
        Value::Boolean(false) | Value::Nil => reply.null(),
        Value::Table(t) => {
            if let Ok(Some(err)) = t.raw_get::<Option<mlua::String>>("err") {
                let text = String::from_utf8_lossy(&err.as_bytes()).into_owned();
                let text = text.trim_end_matches(['\r', '\n']);
                if depth == 0 && matches!(t.raw_get(COUNTED_MARK), Ok(Value::Boolean(true))) {
                    return reply.error_uncounted(text);
                }
                return reply.error(text);
            }
            if let Ok(Some(ok)) = t.raw_get::<Option<mlua::String>>("ok") {
                let text = String::from_utf8_lossy(&ok.as_bytes()).replace(['\r', '\n'], " ");
                return reply.simple(&text);
            }
            if depth > 64 {
                return reply.error("ERR reached lua stack limit");
            }
            if let Ok(Some(n)) = t.raw_get::<Option<f64>>("double") {
                return reply.double(n);
            }
            if let Ok(Some(n)) = t.raw_get::<Option<mlua::String>>("big_number") {
                let text = n.as_bytes().to_vec();
                // A line cannot hold CR or LF: Redis replaces them in a big number.
                let text: Vec<u8> = text
                    .into_iter()
                    .map(|c| if c == b'\r' || c == b'\n' { b' ' } else { c })
                    .collect();
                return if reply.resp3 {
                    reply.frame(&Frame::BigNumber(bytes::Bytes::from(text)))
                } else {
                    reply.bulk(&text)
                };
            }
            if let Ok(Some(v)) = t.raw_get::<Option<Table>>("verbatim_string") {
                let text: Vec<u8> = v
                    .raw_get::<Option<mlua::String>>("string")
                    .ok()
                    .flatten()
                    .map(|s| s.as_bytes().to_vec())
                    .unwrap_or_default();
                return reply.verbatim(&text);
            }
            if let Ok(Some(map)) = t.raw_get::<Option<Table>>("map") {
                return write_pairs(reply, &map, true, depth, resp3);
            }
            if let Ok(Some(set)) = t.raw_get::<Option<Table>>("set") {
                return write_pairs(reply, &set, false, depth, resp3);
            }
            let mut len = 0;
            while !matches!(t.raw_get::<Value>(len + 1), Ok(Value::Nil) | Err(_)) {
                len += 1;
            }
            reply.array(len);
            for i in 1..=len {
                let item = t.raw_get::<Value>(i).unwrap_or(Value::Nil);
                write_lua_reply(reply, &item, depth + 1, resp3);
            }
        }
        _ => reply.null(),
    }
}

/// A `{map=...}` (keys and values) or `{set=...}` (keys) table as a map or set reply.
/// Counted first and written in a second pass, never all held at once: each Lua value
/// Rust holds takes a slot of a bounded stack.
fn write_pairs(reply: &mut ReplyBuf, t: &Table, with_values: bool, depth: usize, resp3: bool) {
    let count = t.clone().pairs::<Value, Value>().count();
    if with_values {
        reply.map(count);
    } else {
        reply.set(count);
    }
    for (k, v) in t
        .clone()
        .pairs::<Value, Value>()
        .filter_map(Result::ok)
        .take(count)
    {
        write_lua_reply(reply, &k, depth + 1, resp3);
        if with_values {
            write_lua_reply(reply, &v, depth + 1, resp3);
        }
    }
}

/// What a script's shebang (`#!lua flags=...`) or a function's registration declares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScriptFlags {
    pub no_writes: bool,
    pub allow_oom: bool,
    pub allow_stale: bool,
    pub no_cluster: bool,
    pub allow_cross_slot_keys: bool,
}

impl ScriptFlags {
    /// Sets one flag by its name; false for a name Redis does not know.
    pub fn set(&mut self, name: &str) -> bool {
        match name {
            "no-writes" => self.no_writes = true,
            "allow-oom" => self.allow_oom = true,
            "allow-stale" => self.allow_stale = true,
            "no-cluster" => self.no_cluster = true,
            "allow-cross-slot-keys" => self.allow_cross_slot_keys = true,
            _ => return false,
        }
        true
    }
}

/// A script's shebang, as Redis 7.0 reads it: None for a script without one (Redis'
/// compatibility mode, where each call is judged as it runs), or Redis' error.
pub(crate) fn parse_shebang(body: &[u8]) -> Result<Option<ScriptFlags>, String> {
    let Some(rest) = body.strip_prefix(b"#!") else {
        return Ok(None);
    };
    let Some(end) = rest.iter().position(|&c| c == b'\n') else {
        return Err("ERR Invalid script shebang".into());
    };
    let line = String::from_utf8_lossy(&rest[..end]);
    let mut parts = line.split_whitespace();
    match parts.next() {
        Some("lua") => {}
        Some(engine) => {
            return Err(format!(
                "ERR Unexpected engine in script shebang: #!{engine}"
            ))
        }
        None => return Err("ERR Invalid engine in script shebang".into()),
    }
    let mut flags = ScriptFlags::default();
    for part in parts {
        let Some(list) = part.strip_prefix("flags=") else {
            return Err(format!("ERR Unknown lua shebang option: {part}"));
        };
        for flag in list.split(',').filter(|f| !f.is_empty()) {
            if !flags.set(flag) {
                return Err(format!("ERR Unexpected flag in script shebang: {flag}"));
            }
        }
    }
    Ok(Some(flags))
}

/// Redis' checks before a script or function runs (scriptPrepareForRun): with declared
/// flags the server's state is judged once, up front; without (an EVAL with no
/// shebang) each call is judged as it runs. Returns whether the script runs read-only.
pub(crate) fn admit(
    ctx: &Ctx<'_, '_>,
    flags: Option<ScriptFlags>,
    read_only: bool,
) -> Result<bool, String> {
    let shared = ctx.shared;
    let replica = shared.is_replica.load(Ordering::Relaxed);
    let stale = replica
        && !shared.master_link_up.load(Ordering::Relaxed)
        && !shared.config.get_bool("replica-serve-stale-data");
    let obey = ctx.session.master_link || ctx.session.replaying;
    let Some(flags) = flags else {
        if stale {
            return Err(
                "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."
                    .into(),
            );
        }
        shared
            .scripts
            .running
            .allow_oom
            .store(false, Ordering::Relaxed);
        return Ok(read_only);
    };
    if flags.no_cluster && shared.cluster_mode() {
        return Err("ERR Can not run script on cluster, 'no-cluster' flag is set.".into());
    }
    if stale && !flags.allow_stale {
        return Err("MASTERDOWN Link with MASTER is down, replica-serve-stale-data is set to 'no' and 'allow-stale' flag is not set".into());
    }
    if !flags.no_writes && !obey {
        if replica && shared.config.get_bool("replica-read-only") {
            return Err("READONLY You can't write against a read only replica.".into());
        }
        if shared.persist.last_bgsave_failed.load(Ordering::Relaxed)
            && shared.writes_stopped_by_failed_save()
        {
            return Err("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk. Writable scripts are blocked. Use 'no-writes' flag for read only scripts.".into());
        }
        if let Some(e) = shared.append_only.get().and_then(|a| a.write_error()) {
            return Err(format!("MISCONF Errors writing to the AOF file: {e}"));
        }
        if read_only {
            return Err("ERR Can not execute a script with write flag using *_ro command.".into());
        }
        let min_replicas = shared.min_replicas_to_write.load(Ordering::Relaxed);
        if min_replicas > 0
            && !replica
            && shared
                .propagator
                .get()
                .is_some_and(|p| p.good_replicas() < min_replicas)
        {
            return Err("NOREPLICAS Not enough good replicas to write.".into());
        }
    }
    let maxmemory = shared.config.tunables.maxmemory.load(Ordering::Relaxed);
    if !flags.allow_oom
        && !flags.no_writes
        && !obey
        && maxmemory > 0
        && !shared.perform_evictions(carmine_keyspace::now_ms())
    {
        // What Redis' clients see: its processCommand refuses such a script as a
        // deny-oom command before the script's own check.
        return Err("OOM command not allowed when used memory > 'maxmemory'.".into());
    }
    shared
        .scripts
        .running
        .allow_oom
        .store(flags.allow_oom || flags.no_writes, Ordering::Relaxed);
    Ok(read_only || flags.no_writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` as EVAL would, on a server of its own; `config` lines apply first.
    fn run(
        body: &[u8],
        config: &[(&str, &str)],
        setup: impl FnOnce(&Shared),
    ) -> Result<Value, String> {
        let shared =
            crate::Shared::with_commands(crate::Config::new(), 1, None, crate::command_table());
        for (name, value) in config {
            shared
                .config
                .set(name, &[value.to_string()], true)
                .expect("config");
        }
        setup(&shared);
        run_on(&shared, body)
    }

    fn run_on(shared: &Shared, body: &[u8]) -> Result<Value, String> {
        run_in(shared, &mut None, body, |_| {})
    }

    /// Compiles `body` in `vm` (prepared by `prepare` once compiled) and runs it as a
    /// script's session would.
    fn run_in(
        shared: &Shared,
        vm: &mut Option<Vm>,
        body: &[u8],
        prepare: impl FnOnce(&mut Vm),
    ) -> Result<Value, String> {
        let sha = sha1_hex(body);
        compiled(shared, vm, &sha, body).expect("compiles");
        let state = vm.as_mut().expect("compiled");
        prepare(state);
        let state = &*state;
        let stats = shared.new_thread_stats();
        let info = std::sync::Arc::new(crate::ClientInfo::new(
            1,
            String::new(),
            String::new(),
            -1,
            1,
        ));
        let mut session = Session::new(info, 0, true);
        session.world_held = true;
        session.in_script = true;
        let (key, _) = state.compiled.get(&sha).expect("compiled");
        let args = Args::default();
        call_script(
            state,
            shared,
            &stats,
            &mut session,
            (&sha, key),
            Globals {
                args: &args,
                keys: 0..0,
                argv: 0..0,
            },
            false,
            Instant::now(),
        )
    }

    #[test]
    fn a_script_that_allocates_without_bound_fails_and_the_state_lives_on() {
        let shared =
            crate::Shared::with_commands(crate::Config::new(), 1, None, crate::command_table());
        let mut vm = None;
        let body = b"local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 4096) .. i end";
        let err = run_in(&shared, &mut vm, body, |state| {
            state.memory_limit = 32 << 20;
        })
        .expect_err("out of memory");
        assert!(err.contains("not enough memory"), "{err}");
        let v = run_in(&shared, &mut vm, b"return 'still here'", |_| {}).expect("runs");
        assert!(matches!(v, Value::String(s) if s.as_bytes().as_ref() == b"still here"));
    }

    #[test]
    fn a_panic_serving_clients_while_busy_stops_the_script_and_is_resumed_after_it() {
        fn failing_service() {
            panic!("the busy service failed");
        }
        // Long enough to become busy and reach the service, short enough to end by
        // itself if the panic were swallowed (as it was).
        let body = b"local n = 0 for i = 1, 30000000 do n = n + i end return n";
        let ran = std::panic::catch_unwind(|| {
            run(body, &[("busy-reply-threshold", "0")], |shared| {
                shared
                    .busy_serve
                    .set(failing_service)
                    .expect("no service yet");
            })
        });
        let payload = ran.expect_err("the service's panic is resumed");
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"the busy service failed")
        );
    }

    #[test]
    fn shebangs_read_as_redis_reads_them() {
        assert_eq!(parse_shebang(b"return 1"), Ok(None));
        assert_eq!(
            parse_shebang(b"#!lua\nreturn 1"),
            Ok(Some(ScriptFlags::default()))
        );
        assert_eq!(
            parse_shebang(b"#!lua flags=no-writes,allow-oom\nreturn 1"),
            Ok(Some(ScriptFlags {
                no_writes: true,
                allow_oom: true,
                ..ScriptFlags::default()
            }))
        );
        assert_eq!(
            parse_shebang(b"#!lua flags=\nreturn 1"),
            Ok(Some(ScriptFlags::default()))
        );
        assert_eq!(
            parse_shebang(b"#!not-lua\nreturn 1"),
            Err("ERR Unexpected engine in script shebang: #!not-lua".into())
        );
        assert_eq!(
            parse_shebang(b"#!lua badger=data\n"),
            Err("ERR Unknown lua shebang option: badger=data".into())
        );
        assert_eq!(
            parse_shebang(b"#!lua flags=allow-oom,what?\n"),
            Err("ERR Unexpected flag in script shebang: what?".into())
        );
        assert_eq!(
            parse_shebang(b"#!lua"),
            Err("ERR Invalid script shebang".into())
        );
    }

    /// A `__gc` finalizer that calls a command while a reply is being pushed (a push
    /// may run a collection step) must not disturb that reply: the replies being pushed
    /// are a stack, not one slot.
    #[test]
    fn a_finalizer_calling_redis_during_a_reply_push_leaves_the_reply_whole() {
        let body = br#"
            for i = 1, 2000 do redis.call('rpush', 'l', 'element-' .. i) end
            local calls = 0
            for round = 1, 50 do
                for j = 1, 20 do
                    local p = newproxy(true)
                    getmetatable(p).__gc = function()
                        calls = calls + 1
                        redis.pcall('lrange', 'l', 0, -1)
                        redis.pcall('set', 'x', string.rep('y', 100))
                    end
                end
                local all = redis.call('lrange', 'l', 0, -1)
                if #all ~= 2000 or all[1] ~= 'element-1' or all[2000] ~= 'element-2000' then
                    return {err = 'reply damaged in round ' .. round}
                end
            end
            collectgarbage()
            return calls
        "#;
        match run(body, &[], |_| {}) {
            Ok(Value::Integer(calls)) => assert!(calls > 0, "no finalizer ran"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_carry_the_script_line() {
        // A plain call, and a tail call (`return redis.call(...)`), whose frame Lua
        // keeps because redis.call is a C function.
        for (body, line) in [
            (
                &b"local a = 1\nlocal r = redis.call('incr', 'k')\nreturn r"[..],
                2,
            ),
            (&b"local a = 1\n\nreturn redis.call('incr', 'k')"[..], 3),
        ] {
            let err = run(body, &[], |s| s.keyspace.db(0).set(b"k", b"v")).expect_err("an error");
            let sha = sha1_hex(body);
            assert_eq!(
                err,
                format!(
                    "ERR value is not an integer or out of range script: {sha}, on @user_script:{line}."
                )
            );
        }
        // pcall(redis.call, ...) gets the error table, as in Redis.
        let shared =
            crate::Shared::with_commands(crate::Config::new(), 1, None, crate::command_table());
        shared.keyspace.db(0).set(b"k", b"v");
        let mut vm = None;
        let body =
            b"local ok, e = pcall(redis.call, 'incr', 'k') return tostring(ok) .. '|' .. e.err";
        let v = run_in(&shared, &mut vm, body, |_| {}).expect("runs");
        assert!(
            matches!(&v, Value::String(s) if s.as_bytes().as_ref() == b"false|ERR value is not an integer or out of range"),
            "{v:?}"
        );
    }

    /// A server whose scripts are busy after 50 ms, and a thread that sends SCRIPT KILL
    /// once the script is busy (`first` runs before, on the same `Running`).
    fn busy_script_and_killer(
        first: impl FnOnce(&Running) + Send + 'static,
    ) -> (
        std::sync::Arc<Shared>,
        std::thread::JoinHandle<Result<(), &'static str>>,
    ) {
        let shared =
            crate::Shared::with_commands(crate::Config::new(), 1, None, crate::command_table());
        shared
            .config
            .set("busy-reply-threshold", &["50".to_string()], true)
            .expect("config");
        let running = shared.scripts.running.clone();
        let killer = std::thread::spawn(move || {
            let deadline = Instant::now() + std::time::Duration::from_secs(20);
            while !running.busy() && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            first(&running);
            running.kill(true)
        });
        (shared, killer)
    }

    /// Runs `body` until the killer stops it, on a thread of its own so that a hook
    /// that never fires fails the test instead of hanging it; then checks the error,
    /// and that the state's next script runs as usual.
    fn killed_by_script_kill(
        shared: &std::sync::Arc<Shared>,
        killer: std::thread::JoinHandle<Result<(), &'static str>>,
        body: &'static [u8],
    ) {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let script_shared = shared.clone();
        std::thread::spawn(move || {
            let _ = done_tx.send(run_on(&script_shared, body));
        });
        let err = done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the script was never stopped")
            .expect_err("killed");
        assert_eq!(killer.join().expect("killer"), Ok(()));
        assert_eq!(err, "ERR Script killed by user with SCRIPT KILL...");
        assert!(!shared.scripts.running.busy());
        assert!(matches!(run_on(shared, b"return 7"), Ok(Value::Integer(7))));
    }

    #[test]
    fn a_busy_script_is_stopped_by_script_kill_even_under_pcall() {
        let (shared, killer) = busy_script_and_killer(|running| {
            assert_eq!(
                running.kill(false),
                Err(BUSY_EVAL),
                "FUNCTION KILL of a script"
            );
        });
        assert_eq!(
            shared.scripts.running.kill(true),
            Err("NOTBUSY No scripts in execution right now.")
        );
        let body = b"local f = function() while true do end end while true do pcall(f) end";
        killed_by_script_kill(&shared, killer, body);
    }

    /// A loop inside a coroutine is busy and killable too (the hook reaches every
    /// thread of the state), including when the script catches the coroutine's error.
    #[test]
    fn a_busy_loop_in_a_coroutine_is_stopped_by_script_kill() {
        let (shared, killer) = busy_script_and_killer(|_| {});
        let body = b"while true do pcall(coroutine.wrap(function() while true do end end)) end";
        killed_by_script_kill(&shared, killer, body);
    }
}
