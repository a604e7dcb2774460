//! `redis.call` and `redis.pcall`: a script's commands, as C functions on Lua's own
//! stack. The arguments are read from the stack into one buffer and the reply is pushed
//! back as Lua values directly; through mlua each argument and each value of the reply
//! was a reference object of its own (made, moved to mlua's reference thread, dropped),
//! a fifth of a small script's time.
//!
//! Lua raises errors with `longjmp`, which skips Rust frames without running their
//! destructors. So the Lua API calls that can raise (a number made a string, any push
//! that allocates) run only where no Rust value with a destructor is alive: the
//! command runs in between, in [`run_call`], which leaves its reply decoded in a
//! thread-local ([`CALL_FRAMES`]) that the pushes read through a plain reference.

use std::cell::RefCell;
use std::ffi::{c_char, c_int};
use std::sync::atomic::Ordering;

use bytes::Buf;
use carmine_resp::{Args, ArgsBuilder, Frame, FrameDecoder, ReplyBuf};
use mlua::ffi;

use super::{with_script_context, ScriptContext, COUNTED_MARK_C};
use crate::table::flags::{MAY_REPLICATE, NOSCRIPT, WRITE};

thread_local! {
    /// The reply buffer of a script's calls on this thread, kept between calls (a new
    /// 16 KiB buffer per `redis.call` was a fifth of a small script's time in malloc).
    static CALL_REPLY: RefCell<ReplyBuf> = RefCell::new(ReplyBuf::with_capacity(false, 1024));
    /// The arguments of a script's calls on this thread, their buffers kept between
    /// calls (two allocations a call before, a quarter of a small script's).
    static CALL_ARGS: RefCell<(ArgsBuilder, Args)> = RefCell::new(Default::default());
    /// The replies of the calls being pushed onto a script's stack, decoded. A stack of
    /// boxes: a push may run a collection step and with it a `__gc` finalizer that calls
    /// again (the sandbox has `newproxy`), and that call's reply must not move or drop
    /// the one still being pushed. A call drops its own when its push is done; one whose
    /// push raised goes with the call below it, or at the end of the script
    /// ([`release_call_frame`]).
    static CALL_FRAMES: RefCell<CallFrames> = const {
        RefCell::new(CallFrames { live: Vec::new(), spare: Vec::new() })
    };
    /// A panic of a call's command, caught before it could unwind through Lua's C
    /// frames and resumed once the script is over ([`resume_call_panic`]).
    static CALL_PANIC: RefCell<Option<Box<dyn std::any::Any + Send>>> = const { RefCell::new(None) };
}

/// Keeps a panic caught inside the script (the first one, if several) for
/// [`resume_call_panic`].
pub(super) fn keep_call_panic(payload: Box<dyn std::any::Any + Send>) {
    CALL_PANIC.with(|p| {
        p.borrow_mut().get_or_insert(payload);
    });
}

/// Resumes a panic a call's command raised, now that Lua is no longer on the stack
/// (mlua's callbacks did the same). Until then the script's further calls are refused
/// and its hook stops it (see `run_call`).
pub(super) fn resume_call_panic() {
    if let Some(payload) = CALL_PANIC.with(|p| p.borrow_mut().take()) {
        std::panic::resume_unwind(payload);
    }
}

/// The boxed replies of [`CALL_FRAMES`], and boxes kept for the next calls (a box made
/// and freed per call was an eighth of a small script's allocations).
// Boxed for stable addresses: the vector may grow while a push reads a box.
#[allow(clippy::vec_box)]
struct CallFrames {
    live: Vec<Box<Frame>>,
    spare: Vec<Box<Frame>>,
}

impl CallFrames {
    /// Boxes kept at most.
    const SPARE_MAX: usize = 8;

    /// Boxes `frame` on top; returns where it is and the depth it is at.
    fn push(&mut self, frame: Frame) -> (*const Frame, usize) {
        let boxed = match self.spare.pop() {
            Some(mut spare) => {
                *spare = frame;
                spare
            }
            None => Box::new(frame),
        };
        let depth = self.live.len();
        let at = std::ptr::from_ref(&*boxed);
        self.live.push(boxed);
        (at, depth)
    }

    /// Drops the replies from `depth` up, keeping their boxes.
    fn truncate(&mut self, depth: usize) {
        while self.live.len() > depth {
            let Some(mut boxed) = self.live.pop() else {
                break;
            };
            if self.spare.len() < Self::SPARE_MAX {
                *boxed = Frame::Null;
                self.spare.push(boxed);
            }
        }
    }
}

/// A call reply buffer larger than this after a call is given back.
const CALL_REPLY_KEPT: usize = 64 * 1024;

/// Drops what replies are left (a push that raised) when a script ends.
pub(super) fn release_call_frame() {
    CALL_FRAMES.with(|f| f.borrow_mut().truncate(0));
}

/// `redis.pcall`: runs one command; its reply as a Lua value, an error as an
/// `{err=...}` table.
///
/// # Safety
/// Called by Lua only, as a C function with its arguments on `state`'s stack.
#[allow(unsafe_code)]
pub(super) unsafe extern "C-unwind" fn redis_pcall(state: *mut ffi::lua_State) -> c_int {
    let args = ffi::lua_gettop(state);
    // Every Rust value of the call lives and dies in here.
    let (frame, depth) = run_call(state, args);
    // The arguments go (a call may fill the stack with them: `unpack` of 7,999), so
    // the reply has room.
    ffi::lua_settop(state, 0);
    // SAFETY: `run_call` left the reply boxed in CALL_FRAMES at `depth`; a call made
    // meanwhile (a finalizer) only adds above it and truncates back to its own depth, so
    // the box stays where it is until the truncation below. The pushes may raise, which
    // leaves only this reference behind.
    push_frame(state, &*frame);
    CALL_FRAMES.with(|f| f.borrow_mut().truncate(depth));
    1
}

/// `redis.call`: [`redis_pcall`], then an error reply raised as the script's error with
/// where the script was (`__carmine_where`). A C function, as Redis' is: Lua 5.1 keeps
/// the calling frame for a C function even in a tail call (`return redis.call(...)`),
/// so the error names the script's line; a Lua function there replaced the script's
/// frame and the line was lost.
///
/// # Safety
/// Called by Lua only, as a C function with its arguments on `state`'s stack.
#[allow(unsafe_code)]
pub(super) unsafe extern "C-unwind" fn redis_call(state: *mut ffi::lua_State) -> c_int {
    redis_pcall(state);
    if ffi::lua_type(state, -1) != ffi::LUA_TTABLE {
        return 1;
    }
    ffi::lua_getfield(state, -1, c"err".as_ptr());
    let failed = ffi::lua_type(state, -1) != ffi::LUA_TNIL;
    ffi::lua_settop(state, -2);
    if !failed {
        return 1;
    }
    ffi::lua_getfield(state, ffi::LUA_GLOBALSINDEX, c"__carmine_where".as_ptr());
    ffi::lua_call(state, 0, 2);
    // reply, source, line
    ffi::lua_setfield(state, -3, c"line".as_ptr());
    ffi::lua_setfield(state, -2, c"source".as_ptr());
    ffi::lua_error(state)
}

/// Reads the call's arguments, runs the command and leaves its reply boxed on
/// CALL_FRAMES; returns a pointer to it and the depth it is at. Only Lua API calls that
/// cannot raise are made here.
#[allow(unsafe_code)]
unsafe fn run_call(state: *mut ffi::lua_State, args: c_int) -> (*const Frame, usize) {
    let run = || {
        with_script_context(|cx| {
            if CALL_PANIC.with(|p| p.borrow().is_some()) {
                return Frame::Error("ERR a command of this script failed".into());
            }
            if args == 0 {
                return refused(
                    cx,
                    "ERR Please specify at least one argument for this redis lib call",
                );
            }
            // A call made while another's arguments are in use (none can be: commands
            // do not call Lua) would build its own.
            let mut own = None;
            CALL_ARGS.with(|kept| {
                let mut kept = kept.try_borrow_mut();
                let (built, built_args) = match kept.as_deref_mut() {
                    Ok(pair) => pair,
                    Err(_) => own.insert(Default::default()),
                };
                built_args.clear();
                for i in 1..=args {
                    match ffi::lua_type(state, i) {
                        ffi::LUA_TSTRING => {
                            let mut len = 0;
                            let data = ffi::lua_tolstring(state, i, &mut len);
                            // SAFETY: a string on the stack, which Lua keeps while it is
                            // there; it is copied before anything can change the stack.
                            built.push(std::slice::from_raw_parts(data.cast::<u8>(), len));
                        }
                        // `%.17g`, as Redis 7.0 converts (Lua's own `%.14g` loses digits).
                        ffi::LUA_TNUMBER => push_number(built, ffi::lua_tonumber(state, i)),
                        _ => {
                            // What was pushed goes, for the next call.
                            built.finish_into(built_args);
                            return refused(
                                cx,
                                "ERR Lua redis lib command arguments must be strings or integers",
                            );
                        }
                    }
                }
                built.finish_into(built_args);
                let frame = call_command(cx, built_args);
                built_args.clear();
                frame
            })
        })
    };
    let frame = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Some(frame)) => frame,
        Ok(None) => Frame::Error(
            "ERR redis.call and redis.pcall are only available while a script runs".into(),
        ),
        Err(payload) => {
            keep_call_panic(payload);
            // The script goes no further: its hook fails from the next check on, as
            // for SCRIPT KILL, and its calls are refused meanwhile.
            with_script_context(|cx| cx.call.shared.scripts.running.fail());
            Frame::Error("ERR a command of this script failed".into())
        }
    };
    CALL_FRAMES.with(|f| f.borrow_mut().push(frame))
}

/// A number argument as Redis 7.0 writes it: `%.17g`, which prints a whole number up to
/// 2^53 as an integer.
pub(super) fn number_text(n: f64) -> String {
    match whole_number(n) {
        Some(i) => itoa::Buffer::new().format(i).to_string(),
        None => crate::zset::format_score(n),
    }
}

/// [`number_text`] pushed as an argument, a whole number without an allocation.
fn push_number(built: &mut ArgsBuilder, n: f64) {
    match whole_number(n) {
        Some(i) => built.push(itoa::Buffer::new().format(i).as_bytes()),
        None => built.push(crate::zset::format_score(n).as_bytes()),
    }
}

/// `n` as an integer where `%.17g` prints it as one.
fn whole_number(n: f64) -> Option<i64> {
    const EXACT: f64 = (1u64 << 53) as f64;
    (n.fract() == 0.0 && n.abs() <= EXACT && !(n == 0.0 && n.is_sign_negative()))
        .then_some(n as i64)
}

/// A call the script layer refuses: an error reply counted now (INFO errorstats), as a
/// command's own error is counted where the command wrote it.
fn refused(cx: &mut ScriptContext<'_>, message: &'static str) -> Frame {
    cx.call
        .shared
        .errorstats
        .record_code(cx.call.stats, carmine_resp::error_code(message));
    Frame::Error(message.into())
}

/// Runs one command for the script and decodes its reply.
fn call_command(cx: &mut ScriptContext<'_>, args: &Args) -> Frame {
    let shared = cx.call.shared;
    let stats = cx.call.stats;
    // Remembered in the script's session, where the dispatcher finds it again.
    let name = args.get(0).unwrap_or_default();
    let session = &mut *cx.session;
    let Some(idx) = shared.commands.lookup_remembered_among(
        name,
        &mut session.script_command_memos,
        &mut session.command_memo,
    ) else {
        return refused(cx, "ERR Unknown Redis command called from script");
    };
    let Some(spec) = shared.commands.get(idx) else {
        return refused(cx, "ERR Unknown Redis command called from script");
    };
    // The test hook lifts the refusal only for introspection commands: a script may
    // never start another script, a transaction or a subscription.
    let lifted = shared.scripts.deny_disabled.load(Ordering::Relaxed)
        && matches!(spec.name, "client" | "config" | "debug" | "acl" | "latency");
    if (spec.has(NOSCRIPT) || not_allowed_from_scripts(spec.name, args.get(1))) && !lifted {
        return refused(cx, "ERR This Redis command is not allowed from script");
    }
    if !spec.arity_ok(args.len()) {
        return refused(
            cx,
            "ERR Wrong number of args calling Redis command from script",
        );
    }
    if cx.call.read_only && (spec.has(WRITE) || spec.has(MAY_REPLICATE)) {
        // A rejected call of that command, as INFO commandstats counts it in Redis.
        if let Some(c) = stats.commands.get(idx) {
            crate::ThreadStats::add(&c.rejected, 1);
        }
        return refused(
            cx,
            "ERR Write commands are not allowed from read-only scripts.",
        );
    }
    let mut own_reply = None;
    CALL_REPLY.with(|kept| {
        // A call made while another is being answered (none can be: scripts do not
        // nest) would get a buffer of its own.
        let mut kept = kept.try_borrow_mut();
        let reply = match kept.as_deref_mut() {
            Ok(reply) => reply,
            Err(_) => own_reply.insert(ReplyBuf::new(false)),
        };
        reply.out.clear();
        reply.resp3 = shared.scripts.running.resp3();
        let frozen = shared.scripts.running.started_ms.load(Ordering::Relaxed);
        crate::execute_at(shared, cx.session, stats, args, reply, frozen);
        // A write call that got past the OOM check makes the script one that wrote (no
        // KILL, no OOM refusal from now on), whatever its reply, as in Redis.
        if spec.has(WRITE) && !reply.out.starts_with(b"-OOM") {
            shared.scripts.running.wrote.store(true, Ordering::Relaxed);
        }
        let frame = decode_reply(&mut reply.out);
        reply.error_codes.clear();
        if reply.out.capacity() > CALL_REPLY_KEPT {
            reply.out = bytes::BytesMut::with_capacity(1024);
        }
        frame
    })
}

/// The reply a call wrote. Attributes and pushes are not shown to scripts: the reply
/// follows them.
fn decode_reply(bytes: &mut bytes::BytesMut) -> Frame {
    if let Some(frame) = decode_plain_reply(bytes) {
        return frame;
    }
    let decoder = FrameDecoder::new(carmine_resp::Limits::default());
    loop {
        match decoder.decode(bytes) {
            Ok(Some(Frame::Attribute(_) | Frame::Push(_))) => continue,
            Ok(Some(frame)) => return frame,
            _ => return Frame::Error("ERR the command wrote no reply".into()),
        }
    }
}

/// The commonest replies, an integer, a bulk string or a status that is all of `bytes`, read
/// without the general decoder (which was a tenth of a small script's calls); `None`
/// for anything else, `bytes` untouched then.
fn decode_plain_reply(bytes: &mut bytes::BytesMut) -> Option<Frame> {
    let line_end = bytes.iter().position(|&b| b == b'\r')?;
    if bytes.get(line_end + 1) != Some(&b'\n') {
        return None;
    }
    let (&kind, text) = bytes[..line_end].split_first()?;
    if kind == b'+' && line_end + 2 == bytes.len() {
        bytes.advance(1);
        let status = bytes.split_to(line_end - 1).freeze();
        bytes.clear();
        return Some(Frame::Simple(status));
    }
    let number = std::str::from_utf8(text).ok()?.parse::<i64>().ok()?;
    match kind {
        b':' if line_end + 2 == bytes.len() => {
            bytes.clear();
            Some(Frame::Integer(number))
        }
        b'$' => {
            let len = usize::try_from(number).ok()?;
            let start = line_end + 2;
            let end = start.checked_add(len)?;
            if end.checked_add(2)? != bytes.len() || &bytes[end..] != b"\r\n" {
                return None;
            }
            bytes.advance(start);
            let data = bytes.split_to(len).freeze();
            bytes.clear();
            Some(Frame::Bulk(data))
        }
        _ => None,
    }
}

/// Commands Redis 7.0 refuses in scripts that Carmine's table does not flag NOSCRIPT
/// itself: the blocking ones (a script cannot wait) and some subcommands.
fn not_allowed_from_scripts(name: &str, sub: Option<&[u8]>) -> bool {
    let sub_is =
        |names: &[&[u8]]| sub.is_some_and(|s| names.iter().any(|n| s.eq_ignore_ascii_case(n)));
    match name {
        "blpop" | "brpop" | "brpoplpush" | "blmove" | "bzpopmin" | "bzpopmax" | "wait" => true,
        "client" | "function" | "script" | "acl" | "latency" | "module" => true,
        "cluster" => sub_is(&[b"reset"]),
        "config" => sub_is(&[b"get", b"set", b"resetstat", b"rewrite"]),
        _ => false,
    }
}

#[allow(unsafe_code)]
unsafe fn push_bytes(state: *mut ffi::lua_State, bytes: &[u8]) {
    ffi::lua_pushlstring(state, bytes.as_ptr().cast::<c_char>(), bytes.len());
}

/// Pushes `{[name] = <the value on top>}` in place of the value on top.
#[allow(unsafe_code)]
unsafe fn wrap_single(state: *mut ffi::lua_State, name: &std::ffi::CStr) {
    ffi::lua_createtable(state, 0, 1);
    ffi::lua_insert(state, -2);
    ffi::lua_setfield(state, -2, name.as_ptr());
}

/// Pushes a reply as the Lua value Redis makes of it: RESP2's nulls are false, RESP3's
/// null (a script that chose RESP3) is nil, a status is `{ok=...}`, an error `{err=...}`
/// (marked counted already, as Redis marks every error it converts: the command counted
/// it where it wrote it), attributes left out wherever they are, and
/// the RESP3 types the tables Redis makes of them. May raise (memory, a nil set
/// member); holds nothing that needs dropping.
#[allow(unsafe_code)]
unsafe fn push_frame(state: *mut ffi::lua_State, frame: &Frame) {
    // Room for a table, a key and a value at each level; raises past Lua's limit.
    ffi::luaL_checkstack(state, 4, c"reply nested too deep".as_ptr());
    match frame {
        Frame::Integer(i) => ffi::lua_pushinteger(state, *i as ffi::lua_Integer),
        Frame::Bulk(b) => push_bytes(state, b),
        Frame::NullBulk | Frame::NullArray => ffi::lua_pushboolean(state, 0),
        Frame::Null => ffi::lua_pushnil(state),
        Frame::Simple(s) => {
            ffi::lua_createtable(state, 0, 1);
            push_bytes(state, s.as_ref());
            ffi::lua_setfield(state, -2, c"ok".as_ptr());
        }
        Frame::Error(e) | Frame::BulkError(e) => {
            ffi::lua_createtable(state, 0, 2);
            push_bytes(state, e.as_ref());
            ffi::lua_setfield(state, -2, c"err".as_ptr());
            ffi::lua_pushboolean(state, 1);
            ffi::lua_setfield(state, -2, COUNTED_MARK_C.as_ptr());
        }
        Frame::Set(items) => {
            ffi::lua_createtable(state, 0, items.len().min(1 << 16) as c_int);
            for item in items.iter().filter(|i| !matches!(i, Frame::Attribute(_))) {
                push_frame(state, item);
                ffi::lua_pushboolean(state, 1);
                ffi::lua_rawset(state, -3);
            }
            wrap_single(state, c"set");
        }
        Frame::Array(items) | Frame::Push(items) => {
            ffi::lua_createtable(state, items.len().min(1 << 24) as c_int, 0);
            // Attributes are not shown to scripts, wherever they are.
            let shown = items.iter().filter(|i| !matches!(i, Frame::Attribute(_)));
            for (i, item) in shown.enumerate() {
                push_frame(state, item);
                ffi::lua_rawseti(state, -2, (i + 1) as ffi::lua_Integer);
            }
        }
        Frame::Map(pairs) | Frame::Attribute(pairs) => {
            ffi::lua_createtable(state, 0, pairs.len().min(1 << 16) as c_int);
            for (k, v) in pairs {
                push_frame(state, k);
                push_frame(state, v);
                ffi::lua_rawset(state, -3);
            }
            wrap_single(state, c"map");
        }
        Frame::Boolean(b) => ffi::lua_pushboolean(state, c_int::from(*b)),
        Frame::Double(d) => {
            ffi::lua_pushnumber(state, *d);
            wrap_single(state, c"double");
        }
        Frame::BigNumber(b) => {
            push_bytes(state, b.as_ref());
            wrap_single(state, c"big_number");
        }
        Frame::Verbatim(format, b) => {
            ffi::lua_createtable(state, 0, 2);
            push_bytes(state, format.as_ref());
            ffi::lua_setfield(state, -2, c"format".as_ptr());
            push_bytes(state, b.as_ref());
            ffi::lua_setfield(state, -2, c"string".as_ptr());
            wrap_single(state, c"verbatim_string");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{decode_plain_reply, decode_reply, number_text};

    #[test]
    fn plain_replies_read_as_the_decoder_reads_them() {
        let replies: [&[u8]; 16] = [
            b"+\r\n",
            b"+QUEUED\r\n:1\r\n",
            b":0\r\n",
            b":-9223372036854775808\r\n",
            b":9223372036854775808\r\n",
            b":12a\r\n",
            b"$0\r\n\r\n",
            b"$5\r\nhello\r\n",
            b"$5\r\nhel\r\n\r\n",
            b"$-1\r\n",
            b"$3\r\nabcde\r\n",
            b"+OK\r\n",
            b"-ERR no\r\n",
            b"*1\r\n:1\r\n",
            b"|1\r\n+a\r\n+b\r\n:7\r\n",
            b":1\r\n:2\r\n",
        ];
        for reply in replies {
            let mut fast = bytes::BytesMut::from(reply);
            let mut general = bytes::BytesMut::from(reply);
            let expected = {
                let decoder = carmine_resp::FrameDecoder::new(carmine_resp::Limits::default());
                loop {
                    match decoder.decode(&mut general) {
                        Ok(Some(carmine_resp::Frame::Attribute(_))) => continue,
                        Ok(Some(frame)) => break Some(frame),
                        _ => break None,
                    }
                }
            };
            match decode_plain_reply(&mut fast) {
                Some(frame) => {
                    assert_eq!(Some(frame), expected, "{}", String::from_utf8_lossy(reply));
                    assert!(fast.is_empty());
                }
                None => assert_eq!(&fast[..], reply, "untouched"),
            }
            let mut again = bytes::BytesMut::from(reply);
            if let Some(expected) = expected {
                assert_eq!(decode_reply(&mut again), expected);
            }
        }
    }

    #[test]
    fn numbers_read_as_redis_writes_them() {
        // C's printf("%.17g") for each.
        for (n, text) in [
            (9007199254740991.0, "9007199254740991"),
            (3.0, "3"),
            (-42.0, "-42"),
            (0.1, "0.10000000000000001"),
            (1e20, "1e+20"),
            (1.5e-7, "1.4999999999999999e-07"),
            (-0.0, "-0"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(number_text(n), text, "{n}");
        }
    }
}
