//! Redis 7.0 functions: FUNCTION LOAD [REPLACE] / DELETE / FLUSH / LIST / STATS and
//! FCALL / FCALL_RO, on a Lua state of their own (Redis keeps scripts and functions
//! apart too: SCRIPT FLUSH leaves libraries alone).
//!
//! A library is Lua code under a `#!lua name=<library>` line; loading runs it once,
//! and each `redis.register_function(name, callback)` (or the table form with
//! `function_name`, `callback`, `flags`) adds a function. FCALL runs one like EVAL runs a
//! script: with the world stopped, its `redis.call`s through the dispatcher, its effects
//! propagated as one unit. FUNCTION LOAD, DELETE and FLUSH reach replicas and the AOF as
//! they were sent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use mlua::{Function, MultiValue, RegistryKey, Table, Value};
use parking_lot::Mutex;

use crate::scripting::{
    invoke, numkeys_arg, script_session, string_table, write_lua_reply, Call, Vm,
};
use crate::table::{cmd, flags::*, CommandSpec, KeySpec};
use crate::{Ctx, Shared};

/// The loaded libraries and the state that runs them.
#[derive(Default)]
pub struct Functions {
    inner: Mutex<Option<Loaded>>,
    /// Libraries and functions loaded, for FUNCTION STATS while a function runs (and
    /// holds `inner`).
    libraries: AtomicUsize,
    functions: AtomicUsize,
}

impl Functions {
    /// Whether function `name` was registered with the `no-writes` flag. While a function
    /// runs (and holds the libraries) the answer is "it may write": never waits.
    pub fn declares_no_writes(&self, name: &str) -> bool {
        let Some(guard) = self.inner.try_lock() else {
            return false;
        };
        guard.as_ref().is_some_and(|l| {
            l.libraries.values().any(|lib| {
                lib.functions
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .is_some_and(|(_, f)| f.flags.iter().any(|x| x == "no-writes"))
            })
        })
    }

    /// INFO memory's `number_of_libraries` and `number_of_functions`.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.libraries.load(Ordering::Relaxed),
            self.functions.load(Ordering::Relaxed),
        )
    }

    fn count(&self, loaded: Option<&Loaded>) {
        let (libs, funcs) = loaded.map_or((0, 0), |l| {
            (
                l.libraries.len(),
                l.libraries.values().map(|lib| lib.functions.len()).sum(),
            )
        });
        self.libraries.store(libs, Ordering::Relaxed);
        self.functions.store(funcs, Ordering::Relaxed);
    }
}

/// FUNCTION STATS: the function or script running now, and what is loaded.
pub(crate) fn stats_reply(shared: &Shared, reply: &mut carmine_resp::ReplyBuf) {
    if shared.scripts.running.eval_running() {
        return reply.error(crate::scripting::BUSY_EVAL);
    }
    reply.map(2);
    reply.bulk(b"running_script");
    match shared.scripts.running.describe() {
        Some((name, argv, ms)) => {
            reply.map(3);
            reply.bulk(b"name");
            reply.bulk(name.as_bytes());
            reply.bulk(b"command");
            reply.array(argv.len());
            for a in &argv {
                reply.bulk(a);
            }
            reply.bulk(b"duration_ms");
            reply.int(ms as i64);
        }
        None => reply.null(),
    }
    reply.bulk(b"engines");
    reply.map(1);
    reply.bulk(b"LUA");
    reply.map(2);
    reply.bulk(b"libraries_count");
    reply.int(shared.functions.libraries.load(Ordering::Relaxed) as i64);
    reply.bulk(b"functions_count");
    reply.int(shared.functions.functions.load(Ordering::Relaxed) as i64);
}

struct Loaded {
    vm: Vm,
    libraries: BTreeMap<String, Library>,
}

struct Library {
    code: Vec<u8>,
    functions: BTreeMap<String, Registered>,
}

struct Registered {
    callback: RegistryKey,
    description: Option<Vec<u8>>,
    flags: Vec<String>,
}

/// FUNCTION LOAD stops a library's code that runs longer than this (Redis' limit).
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

const NAME_ERROR: &str = "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";

const FLAG_NAMES: &[&str] = &[
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];

pub fn commands() -> Vec<CommandSpec> {
    let g = "scripting";
    vec![
        CommandSpec {
            subcommands: &[
                "delete", "dump", "flush", "help", "kill", "list", "load", "restore", "stats",
            ],
            ..cmd(
                "function",
                -2,
                NOSCRIPT | EXCLUSIVE | MAY_REPLICATE,
                KeySpec::None,
                function,
                g,
                "@slow @scripting",
                "A container for function commands.",
            )
        },
        cmd(
            "fcall",
            -3,
            NOSCRIPT | EXCLUSIVE | MAY_REPLICATE,
            KeySpec::None,
            fcall,
            g,
            "@slow @scripting",
            "Invokes a function.",
        ),
        cmd(
            "fcall_ro",
            -3,
            NOSCRIPT | EXCLUSIVE | READONLY,
            KeySpec::None,
            fcall_ro,
            g,
            "@slow @scripting",
            "Invokes a read-only function.",
        ),
    ]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `#!lua name=<library>`: the engine and the library's name.
fn parse_header(code: &[u8]) -> Result<(String, usize), String> {
    let end = code.iter().position(|&b| b == b'\n').unwrap_or(code.len());
    let line = String::from_utf8_lossy(&code[..end]);
    let Some(rest) = line.strip_prefix("#!") else {
        return Err("ERR Missing library metadata".into());
    };
    let engine = rest.split(' ').next().unwrap_or_default();
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(format!("ERR Engine '{engine}' not found"));
    }
    let mut name = None;
    for part in rest[engine.len()..].split_whitespace() {
        match part.strip_prefix("name=") {
            Some(_) if name.is_some() => {
                return Err(
                    "ERR Invalid metadata value, name argument was given multiple times".into(),
                )
            }
            // Quotes are the shell's (Redis splits the line as arguments).
            Some(n) => name = Some(n.trim_matches(|c| c == '"' || c == '\'').to_string()),
            None => return Err(format!("ERR Invalid metadata value given: {part}")),
        }
    }
    let name = name.ok_or("ERR Library name was not given")?;
    if !valid_name(&name) {
        return Err(format!("ERR {NAME_ERROR}"));
    }
    Ok((name, end))
}

impl Loaded {
    fn new(shared: &Shared) -> Result<Loaded, String> {
        Ok(Loaded {
            vm: Vm::new(shared).map_err(|e| format!("ERR Lua is unavailable: {e}"))?,
            libraries: BTreeMap::new(),
        })
    }

    /// Runs a library's code once, collecting what it registers.
    fn load(&mut self, name: &str, code: &[u8], body_start: usize) -> Result<Library, String> {
        let lua = &self.vm.lua;
        let fail = |e: mlua::Error| {
            format!(
                "ERR Error registering functions: {}",
                crate::scripting::lua_message(&e)
            )
        };
        // The shebang line stays, blanked, so that line numbers match the code sent.
        let mut body = code.to_vec();
        for b in &mut body[..body_start] {
            *b = b' ';
        }
        let library_env: Table = lua
            .globals()
            .raw_get("__carmine_library_env")
            .map_err(fail)?;
        let chunk = lua
            .load(&body[..])
            .set_name("@user_function")
            .set_environment(library_env)
            .into_function()
            .map_err(|e| {
                format!(
                    "ERR Error compiling function: {}",
                    crate::scripting::lua_message(&e)
                )
            })?;
        let redis: Table = lua
            .globals()
            .raw_get("__carmine_load_redis")
            .map_err(fail)?;
        let mode: Function = lua
            .globals()
            .raw_get("__carmine_library_mode")
            .map_err(fail)?;
        let mut registered: BTreeMap<String, Registered> = BTreeMap::new();
        let mut problem: Option<String> = None;
        let ran = lua.scope(|scope| {
            let register = scope.create_function_mut(|lua, args: MultiValue| {
                let refuse = |problem: &mut Option<String>, e: &str| {
                    let e = format!("ERR {e}");
                    problem.get_or_insert(e.clone());
                    Err(mlua::Error::RuntimeError(e))
                };
                let (fname, callback, description, flags) = match register_args(args) {
                    Ok(v) => v,
                    Err(e) => return refuse(&mut problem, &e),
                };
                if !valid_name(&fname) {
                    return refuse(&mut problem, NAME_ERROR);
                }
                if registered.contains_key(&fname) {
                    return refuse(&mut problem, "Function already exists in the library");
                }
                let key = lua.create_registry_value(callback)?;
                registered.insert(
                    fname,
                    Registered {
                        callback: key,
                        description,
                        flags,
                    },
                );
                Ok(())
            })?;
            redis.raw_set("register_function", register)?;
            mode.call::<()>(true)?;
            let started = std::time::Instant::now();
            lua.set_hook(
                mlua::HookTriggers::new().every_nth_instruction(100_000),
                move |_, _| {
                    if started.elapsed() > LOAD_TIMEOUT {
                        return Err(mlua::Error::RuntimeError("FUNCTION LOAD timeout".into()));
                    }
                    Ok(mlua::VmState::Continue)
                },
            );
            let ran = chunk.call::<()>(());
            lua.remove_hook();
            self.vm.hook_installed.store(false, Ordering::Relaxed);
            ran
        });
        let _ = mode.call::<()>(false);
        // A library that kept a reference to this table finds, at run time, a
        // register_function that refuses (Redis checks its load context the same way).
        // Written in Lua so that the error names the caller's line, as Redis' does.
        let outside_load = lua
            .load(
                "return function()
                   local source, line = __carmine_where()
                   error({err = 'ERR redis.register_function can only be called on FUNCTION LOAD command',
                          source = source, line = line}, 0)
                 end",
            )
            .eval::<mlua::Function>();
        let _ = match outside_load {
            Ok(f) => redis.raw_set("register_function", f),
            Err(_) => redis.raw_set("register_function", Value::Nil),
        };
        if let Some(p) = problem {
            return Err(p);
        }
        ran.map_err(fail)?;
        if registered.is_empty() {
            return Err("ERR No functions registered".into());
        }
        for fname in registered.keys() {
            let taken = self
                .libraries
                .iter()
                .any(|(lib, l)| lib != name && l.functions.contains_key(fname));
            if taken {
                return Err(format!("ERR Function {fname} already exists"));
            }
        }
        Ok(Library {
            code: code.to_vec(),
            functions: registered,
        })
    }
}

/// `register_function(name, callback)` or `register_function{function_name=...,
/// callback=..., description=..., flags={...}}`, with Redis' complaints.
type Registration = (String, Function, Option<Vec<u8>>, Vec<String>);

fn register_args(args: MultiValue) -> Result<Registration, String> {
    match args.len() {
        1 => {
            let Some(Value::Table(t)) = args.front() else {
                return Err("calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).".into());
            };
            let (mut name, mut callback, mut description, mut flags) =
                (None, None, None, Vec::new());
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, v) = pair.map_err(|e| e.to_string())?;
                let Value::String(key) = k else {
                    return Err(
                        "named argument key given to redis.register_function is not a string"
                            .into(),
                    );
                };
                match key.to_string_lossy().to_ascii_lowercase().as_str() {
                    "function_name" => match v {
                        Value::String(s) => name = Some(s.to_string_lossy()),
                        _ => return Err("function_name argument given to redis.register_function must be a string".into()),
                    },
                    "description" => match v {
                        Value::String(s) => description = Some(s.as_bytes().to_vec()),
                        _ => return Err("description argument given to redis.register_function must be a string".into()),
                    },
                    "callback" => match v {
                        Value::Function(f) => callback = Some(f),
                        _ => return Err("callback argument given to redis.register_function must be a function".into()),
                    },
                    "flags" => {
                        let Value::Table(list) = v else {
                            return Err("flags argument to redis.register_function must be a table representing function flags".into());
                        };
                        for flag in list.sequence_values::<Value>() {
                            let flag = match flag {
                                Ok(Value::String(f)) => f.to_string_lossy(),
                                _ => return Err("unknown flag given".into()),
                            };
                            if !FLAG_NAMES.contains(&flag.as_str()) {
                                return Err("unknown flag given".into());
                            }
                            flags.push(flag);
                        }
                    }
                    _ => return Err("unknown argument given to redis.register_function".into()),
                }
            }
            let name = name.ok_or("redis.register_function must get a function name argument")?;
            let callback =
                callback.ok_or("redis.register_function must get a callback argument")?;
            Ok((name, callback, description, flags))
        }
        2 => {
            let mut it = args.into_iter();
            let name = match it.next() {
                Some(Value::String(s)) => s.to_string_lossy(),
                _ => {
                    return Err("first argument to redis.register_function must be a string".into())
                }
            };
            match it.next() {
                Some(Value::Function(f)) => Ok((name, f, None, Vec::new())),
                _ => Err("second argument to redis.register_function must be a function".into()),
            }
        }
        _ => Err("wrong number of arguments to redis.register_function".into()),
    }
}

fn function(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    let argc = ctx.args.len();
    let shared = ctx.shared;
    // FUNCTION LOAD and RESTORE grow memory: refused past maxmemory, as Redis'
    // deny-oom subcommands are.
    if matches!(sub.as_slice(), b"load" | b"restore")
        && shared.config.tunables.maxmemory.load(Ordering::Relaxed) > 0
        && !shared.perform_evictions(carmine_keyspace::now_ms())
    {
        return ctx.error("OOM command not allowed when used memory > 'maxmemory'.");
    }
    let mut guard = shared.functions.inner.lock();
    match (sub.as_slice(), argc) {
        (b"load", 3..) => {
            let mut replace = false;
            for i in 2..argc - 1 {
                if ctx.is(i, "REPLACE") {
                    replace = true;
                } else {
                    return ctx.error(&format!(
                        "ERR Unknown option given: {}",
                        String::from_utf8_lossy(ctx.arg(i))
                    ));
                }
            }
            let code = ctx.arg(argc - 1).to_vec();
            match load_into(shared, &mut guard, &code, replace) {
                Ok(name) => {
                    propagate_request(ctx);
                    ctx.reply.bulk(name.as_bytes());
                }
                Err(e) => ctx.error(&e),
            }
        }
        (b"dump", 2) => {
            let codes = codes_of(guard.as_ref());
            let Some(p) = shared.persistence.get() else {
                return ctx.error("ERR persistence is not available in this embedding");
            };
            ctx.reply.bulk(&p.dump_functions(&codes));
        }
        (b"restore", 3 | 4) => {
            let policy = if argc == 4 {
                match ctx.arg(3).to_ascii_uppercase().as_slice() {
                    b"FLUSH" => Restore::Flush,
                    b"APPEND" => Restore::Append,
                    b"REPLACE" => Restore::Replace,
                    _ => {
                        return ctx.error(
                            "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
                        )
                    }
                }
            } else {
                Restore::Append
            };
            let Some(p) = shared.persistence.get() else {
                return ctx.error("ERR persistence is not available in this embedding");
            };
            let libraries = match p.restore_functions(ctx.arg(2)) {
                Ok(l) => l,
                Err(e) => return ctx.error(e),
            };
            match restore(shared, &mut guard, &libraries, policy) {
                Ok(()) => {
                    propagate_request(ctx);
                    ctx.reply.ok();
                }
                Err(e) => ctx.error(&e),
            }
        }
        (b"delete", 3) => {
            let name = String::from_utf8_lossy(ctx.arg(2)).into_owned();
            match guard.as_mut().and_then(|l| l.libraries.remove(&name)) {
                Some(_) => {
                    shared.functions.count(guard.as_ref());
                    propagate_request(ctx);
                    ctx.reply.ok();
                }
                None => ctx.error("ERR Library not found"),
            }
        }
        (b"flush", 2 | 3) => {
            if argc == 3 && !ctx.is(2, "ASYNC") && !ctx.is(2, "SYNC") {
                return ctx.error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
            }
            *guard = None;
            shared.functions.count(None);
            propagate_request(ctx);
            ctx.reply.ok();
        }
        (b"list", _) => list(ctx, guard.as_ref()),
        (b"stats", 2) => stats_reply(shared, ctx.reply),
        (b"kill", 2) => match shared.scripts.running.kill(false) {
            Ok(()) => ctx.reply.ok(),
            Err(e) => ctx.error(e),
        },
        (b"help", 2) => crate::connection::help_reply(ctx, FUNCTION_HELP),
        _ => ctx.unknown_subcommand(),
    }
}

const FUNCTION_HELP: &[&str] = &[
    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOAD [REPLACE] <FUNCTION CODE>",
    "    Create a new library with the given library name and code.",
    "DELETE <LIBRARY NAME>",
    "    Delete the given library.",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return general information on all the libraries.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries.",
    "DUMP",
    "    Return a serialized payload representing the current libraries.",
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
    "    Restore the libraries represented by the given payload (APPEND by default).",
    "STATS",
    "    Return information about the current function running.",
    "KILL",
    "    Kill the current running function.",
    "HELP",
    "    Print this help.",
];

/// What FUNCTION RESTORE does with the libraries there are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Restore {
    Flush,
    Append,
    Replace,
}

/// Loads one library's code (FUNCTION LOAD): its name, or Redis' error.
fn load_into(
    shared: &Shared,
    guard: &mut Option<Loaded>,
    code: &[u8],
    replace: bool,
) -> Result<String, String> {
    let (name, body_start) = parse_header(code)?;
    if guard.is_none() {
        *guard = Some(Loaded::new(shared)?);
    }
    let Some(loaded) = guard.as_mut() else {
        return Err("ERR Lua is unavailable".into());
    };
    if !replace && loaded.libraries.contains_key(&name) {
        return Err(format!("ERR Library '{name}' already exists"));
    }
    let lib = loaded.load(&name, code, body_start)?;
    loaded.libraries.insert(name.clone(), lib);
    shared.functions.count(Some(loaded));
    Ok(name)
}

/// FUNCTION RESTORE: all the libraries load, or none does (what was replaced comes
/// back).
fn restore(
    shared: &Shared,
    guard: &mut Option<Loaded>,
    libraries: &[Vec<u8>],
    policy: Restore,
) -> Result<(), String> {
    let previous = match policy {
        Restore::Flush => guard.take(),
        _ => None,
    };
    let mut added: Vec<String> = Vec::new();
    let mut replaced: Vec<(String, Library)> = Vec::new();
    let mut outcome = Ok(());
    for code in libraries {
        let name = match parse_header(code) {
            Ok((name, _)) => name,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        let existing = guard.as_mut().and_then(|l| l.libraries.remove(&name));
        if let Some(old) = existing {
            if policy == Restore::Append {
                if let Some(l) = guard.as_mut() {
                    l.libraries.insert(name.clone(), old);
                }
                outcome = Err(format!("ERR Library {name} already exists"));
                break;
            }
            replaced.push((name.clone(), old));
        }
        match load_into(shared, guard, code, false) {
            Ok(name) => added.push(name),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    if outcome.is_err() {
        if policy == Restore::Flush {
            *guard = previous;
        } else if let Some(l) = guard.as_mut() {
            for name in added {
                l.libraries.remove(&name);
            }
            l.libraries.extend(replaced);
        }
    }
    shared.functions.count(guard.as_ref());
    outcome
}

/// Every library's code, for a snapshot (RDB, AOF base, full sync): call it while no
/// command runs, with the snapshot's keys.
pub fn library_codes(shared: &Shared) -> Vec<Vec<u8>> {
    codes_of(shared.functions.inner.lock().as_ref())
}

fn codes_of(loaded: Option<&Loaded>) -> Vec<Vec<u8>> {
    loaded
        .map(|l| l.libraries.values().map(|lib| lib.code.clone()).collect())
        .unwrap_or_default()
}

/// A library read from an RDB file or a master's payload (replacing one of its name).
/// Loads a library found in a file; `replace`: one of that name already loaded gives
/// way (else the load fails with Redis' "already exists").
pub fn load_library(shared: &Shared, code: &[u8], replace: bool) -> Result<(), String> {
    let mut guard = shared.functions.inner.lock();
    load_into(shared, &mut guard, code, replace).map(|_| ())
}

/// Drops every library (before a full load replaces the dataset).
pub fn flush_libraries(shared: &Shared) {
    *shared.functions.inner.lock() = None;
    shared.functions.count(None);
}

/// FUNCTION LOAD, DELETE and FLUSH reach replicas and the AOF as they were sent.
fn propagate_request(ctx: &mut Ctx<'_, '_>) {
    let argv: Vec<Vec<u8>> = ctx.args.iter().map(<[u8]>::to_vec).collect();
    let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    ctx.propagate_as(&refs);
}

fn list(ctx: &mut Ctx<'_, '_>, loaded: Option<&Loaded>) {
    let (mut pattern, mut with_code) = (None, false);
    let mut i = 2;
    while i < ctx.args.len() {
        if ctx.is(i, "WITHCODE") && !with_code {
            with_code = true;
            i += 1;
        } else if ctx.is(i, "LIBRARYNAME") && pattern.is_none() {
            if i + 1 >= ctx.args.len() {
                return ctx.error("ERR library name argument was not given");
            }
            pattern = Some(ctx.arg(i + 1).to_vec());
            i += 2;
        } else {
            return ctx.error(&format!(
                "ERR Unknown argument {}",
                String::from_utf8_lossy(ctx.arg(i))
            ));
        }
    }
    let libs: Vec<(&String, &Library)> = loaded
        .map(|l| {
            l.libraries
                .iter()
                .filter(|(name, _)| {
                    pattern
                        .as_ref()
                        .is_none_or(|p| carmine_keyspace::glob_match(p, name.as_bytes()))
                })
                .collect()
        })
        .unwrap_or_default();
    ctx.reply.array(libs.len());
    for (name, lib) in libs {
        ctx.reply.map(if with_code { 4 } else { 3 });
        ctx.reply.bulk(b"library_name");
        ctx.reply.bulk(name.as_bytes());
        ctx.reply.bulk(b"engine");
        ctx.reply.bulk(b"LUA");
        ctx.reply.bulk(b"functions");
        ctx.reply.array(lib.functions.len());
        for (fname, f) in &lib.functions {
            ctx.reply.map(3);
            ctx.reply.bulk(b"name");
            ctx.reply.bulk(fname.as_bytes());
            ctx.reply.bulk(b"description");
            match &f.description {
                Some(d) => ctx.reply.bulk(d),
                None => ctx.reply.null(),
            }
            ctx.reply.bulk(b"flags");
            ctx.reply.set(f.flags.len());
            for flag in &f.flags {
                ctx.reply.bulk(flag.as_bytes());
            }
        }
        if with_code {
            ctx.reply.bulk(b"library_code");
            ctx.reply.bulk(&lib.code);
        }
    }
}

fn fcall(ctx: &mut Ctx<'_, '_>) {
    run_function(ctx, false);
}

fn fcall_ro(ctx: &mut Ctx<'_, '_>) {
    run_function(ctx, true);
}

fn run_function(ctx: &mut Ctx<'_, '_>, read_only: bool) {
    let Some(numkeys) = numkeys_arg(ctx) else {
        return;
    };
    let shared = ctx.shared;
    let guard = shared.functions.inner.lock();
    let fname = String::from_utf8_lossy(ctx.arg(1)).into_owned();
    let found = guard.as_ref().and_then(|l| {
        l.libraries
            .values()
            .find_map(|lib| {
                lib.functions.get(&fname).or_else(|| {
                    lib.functions
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case(&fname))
                        .map(|(_, f)| f)
                })
            })
            .map(|f| (l, f))
    });
    let Some((loaded, registered)) = found else {
        return ctx.error("ERR Function not found");
    };
    let mut flags = crate::scripting::ScriptFlags::default();
    for f in &registered.flags {
        flags.set(f);
    }
    let read_only = match crate::scripting::admit(ctx, Some(flags), read_only) {
        Ok(read_only) => read_only,
        Err(e) => return ctx.error(&e),
    };
    let lua = &loaded.vm.lua;
    let fail = |e: mlua::Error| format!("ERR {}", crate::scripting::lua_message(&e));
    let prepared = (|| -> Result<(Function, MultiValue), String> {
        let f: Function = lua.registry_value(&registered.callback).map_err(fail)?;
        let keys: Vec<Vec<u8>> = (3..3 + numkeys).map(|i| ctx.arg(i).to_vec()).collect();
        let argv: Vec<Vec<u8>> = (3 + numkeys..ctx.args.len())
            .map(|i| ctx.arg(i).to_vec())
            .collect();
        let mut args = MultiValue::new();
        args.push_back(Value::Table(
            string_table(lua, keys.iter().map(Vec::as_slice)).map_err(fail)?,
        ));
        args.push_back(Value::Table(
            string_table(lua, argv.iter().map(Vec::as_slice)).map_err(fail)?,
        ));
        Ok((f, args))
    })();
    let (f, args) = match prepared {
        Ok(p) => p,
        Err(e) => return ctx.error(&e),
    };
    let mut session = script_session(ctx.session);
    let argv: Vec<Vec<u8>> = ctx.args.iter().map(<[u8]>::to_vec).collect();
    let call = Call {
        shared,
        stats: ctx.stats,
        read_only,
        eval: false,
        argv: &argv,
        memory_limit: crate::scripting::LUA_MEMORY_LIMIT,
        started: ctx.started,
    };
    let outcome = invoke(
        &loaded.vm,
        crate::scripting::ScriptInput::Call(f, args),
        &call,
        &mut session,
        &fname,
    );
    crate::scripting::end_script_session(ctx.session, &mut session);
    crate::scripting::propagate_effects(shared, &mut session);
    match outcome {
        Ok(v) => write_lua_reply(ctx.reply, &v, 0, shared.scripts.running.resp3()),
        Err(e) if session.script_error_counted => ctx.reply.error_uncounted(&e),
        Err(e) => ctx.reply.error(&e),
    }
}
