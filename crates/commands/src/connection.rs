//! Connection commands: PING, ECHO, QUIT, RESET, HELLO, AUTH, SELECT, CLIENT.

use std::sync::atomic::Ordering;

use carmine_resp::Args;

use crate::state::{ClientInfo, ReplyMode};
use crate::table::{cmd, flags::*, CommandSpec, KeySpec};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "connection";
    vec![
        cmd(
            "ping",
            -1,
            // Not `stale`, as in Redis: a replica that lost its master answers
            // -MASTERDOWN to PING too when replica-serve-stale-data is no.
            FAST,
            KeySpec::None,
            ping,
            g,
            "@fast @connection",
            "Returns the server's liveliness response.",
        ),
        cmd(
            "echo",
            2,
            FAST,
            KeySpec::None,
            echo,
            g,
            "@fast @connection",
            "Returns the given string.",
        ),
        cmd(
            "quit",
            -1,
            NO_AUTH | NO_QUEUE | FAST | STALE | LOADING,
            KeySpec::None,
            quit,
            g,
            "@fast @connection",
            "Closes the connection.",
        ),
        cmd(
            "reset",
            1,
            NO_AUTH | NO_QUEUE | FAST | STALE | LOADING,
            KeySpec::None,
            reset,
            g,
            "@fast @connection",
            "Resets the connection.",
        ),
        cmd(
            "hello",
            -1,
            NO_AUTH | FAST | STALE | LOADING,
            KeySpec::None,
            hello,
            g,
            "@fast @connection",
            "Handshakes with the Redis server.",
        ),
        cmd(
            "auth",
            -2,
            NO_AUTH | FAST | STALE | LOADING,
            KeySpec::None,
            auth,
            g,
            "@fast @connection",
            "Authenticates the connection.",
        ),
        cmd(
            "select",
            2,
            FAST | LOADING | STALE,
            KeySpec::None,
            select,
            g,
            "@fast @connection",
            "Changes the selected database.",
        ),
        CommandSpec {
            subcommands: &[
                "id",
                "setname",
                "getname",
                "list",
                "info",
                "kill",
                "setinfo",
                "no-evict",
                "reply",
                "unblock",
                "pause",
                "unpause",
                "help",
                "tracking",
                "trackinginfo",
                "getredir",
                "caching",
            ],
            ..cmd(
                "client",
                -2,
                ADMIN | NOSCRIPT | LOADING | STALE,
                KeySpec::None,
                client,
                g,
                "@slow @connection",
                "A container for client connection commands.",
            )
        },
    ]
}

fn ping(ctx: &mut Ctx<'_, '_>) {
    // A RESP2 subscriber gets PING answered as a pub/sub message, as in Redis.
    if !ctx.reply.resp3 && ctx.session.subscriptions() > 0 && ctx.args.len() <= 2 {
        ctx.reply.array(2);
        ctx.reply.bulk(b"pong");
        ctx.reply.bulk(ctx.args.get(1).unwrap_or_default());
        return;
    }
    match ctx.args.len() {
        1 => ctx.reply.simple("PONG"),
        2 => ctx.reply.bulk(ctx.args.get(1).unwrap_or_default()),
        _ => ctx.error("ERR wrong number of arguments for 'ping' command"),
    }
}

fn echo(ctx: &mut Ctx<'_, '_>) {
    ctx.reply.bulk(ctx.args.get(1).unwrap_or_default());
}

fn quit(ctx: &mut Ctx<'_, '_>) {
    ctx.reply.ok();
    ctx.session.close_after_reply = true;
}

fn reset(ctx: &mut Ctx<'_, '_>) {
    let s = &mut *ctx.session;
    s.multi = None;
    s.info.multi.store(-1, Ordering::Relaxed);
    s.unwatch_all(&ctx.shared.keyspace);
    crate::pubsub::drop_client(&ctx.shared.pubsub, s);
    ctx.shared.tracking.disable(&s.info);
    crate::blocking::unblock(ctx.shared, s);
    s.subscriptions();
    s.select(0);
    s.reply_mode = ReplyMode::On;
    s.info.no_evict.store(false, Ordering::Relaxed);
    *s.info.name.lock() = None;
    s.authenticated = !ctx.shared.auth_required();
    s.user = None;
    *s.info.user.lock() = "default".to_string();
    ctx.reply.resp3 = false;
    s.info.resp.store(2, Ordering::Relaxed);
    ctx.reply.simple("RESET");
}

/// The user, if the username/password pair is right and the user is on.
fn check_password(
    ctx: &Ctx<'_, '_>,
    user: &[u8],
    pass: &[u8],
) -> Option<std::sync::Arc<crate::acl::AclUser>> {
    let requirepass = ctx.shared.config.tunables.requirepass.read().clone();
    ctx.shared
        .acl
        .authenticate(user, pass, requirepass.as_deref())
}

/// Compares without an early exit, so timing does not reveal how much of a guess matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn auth(ctx: &mut Ctx<'_, '_>) {
    let (user, pass) = match ctx.args.len() {
        2 => (&b"default"[..], ctx.arg(1)),
        3 => (ctx.arg(1), ctx.arg(2)),
        _ => return ctx.syntax_error(),
    };
    if ctx.args.len() == 2
        && !ctx
            .shared
            .config
            .tunables
            .has_password
            .load(Ordering::Relaxed)
    {
        return ctx.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    }
    if let Some(u) = check_password(ctx, user, pass) {
        ctx.session.set_user(u);
        ctx.reply.ok();
    } else {
        let user = user.to_vec();
        ctx.session.authenticated = false;
        log_failed_auth(ctx, &user);
        ctx.error(WRONGPASS);
    }
}

/// A failed AUTH (or HELLO AUTH) goes to ACL LOG under the user name it tried.
fn log_failed_auth(ctx: &Ctx<'_, '_>, user: &[u8]) {
    let username = String::from_utf8_lossy(user).into_owned();
    let client_info = client_line(ctx, &ctx.session.info);
    crate::acl_log::record(
        ctx.shared,
        crate::acl_log::Event {
            reason: crate::acl_log::Reason::Auth,
            context: crate::acl_log::Context::TopLevel,
            object: ctx.arg(0),
            username: &username,
            client_info,
        },
    );
}

fn hello(ctx: &mut Ctx<'_, '_>) {
    let mut i = 1;
    let mut proto = None;
    if ctx.args.len() >= 2 {
        match carmine_resp::parse_i64(ctx.arg(1)) {
            Some(v) if v == 2 || v == 3 => proto = Some(v),
            Some(_) => return ctx.error("NOPROTO unsupported protocol version"),
            None => return ctx.error("ERR Protocol version is not an integer or out of range"),
        }
        i = 2;
    }
    let mut setname = None;
    while i < ctx.args.len() {
        let more = ctx.args.len() - i - 1;
        if ctx.is(i, "AUTH") && more >= 2 {
            let (user, pass) = (ctx.arg(i + 1).to_vec(), ctx.arg(i + 2).to_vec());
            let Some(u) = check_password(ctx, &user, &pass) else {
                log_failed_auth(ctx, &user);
                return ctx.error(WRONGPASS);
            };
            ctx.session.set_user(u);
            i += 3;
        } else if ctx.is(i, "SETNAME") && more >= 1 {
            let name = ctx.arg(i + 1).to_vec();
            if let Err(e) = valid_name(&name) {
                return ctx.error(e);
            }
            setname = Some(name);
            i += 2;
        } else {
            return ctx.error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                crate::dispatch::printable(ctx.arg(i), 64)
            ));
        }
    }
    if !ctx.session.authenticated && ctx.shared.auth_required() {
        return ctx.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(name) = setname {
        *ctx.session.info.name.lock() = if name.is_empty() { None } else { Some(name) };
    }
    if let Some(p) = proto {
        ctx.reply.resp3 = p == 3;
        ctx.session.info.resp.store(p as u8, Ordering::Relaxed);
    }
    let r = &mut *ctx.reply;
    r.map(7);
    r.bulk(b"server");
    r.bulk(b"redis");
    r.bulk(b"version");
    r.bulk(crate::server::REDIS_VERSION.as_bytes());
    r.bulk(b"proto");
    r.int(if r.resp3 { 3 } else { 2 });
    r.bulk(b"id");
    r.int(ctx.session.id() as i64);
    r.bulk(b"mode");
    r.bulk(b"standalone");
    r.bulk(b"role");
    r.bulk(b"master");
    r.bulk(b"modules");
    r.array(0);
}

fn select(ctx: &mut Ctx<'_, '_>) {
    let Some(n) = ctx.int_arg(1) else { return };
    if n != 0 && ctx.shared.cluster_mode() {
        return ctx.error("ERR SELECT is not allowed in cluster mode");
    }
    if n < 0 || n as usize >= ctx.shared.keyspace.databases() {
        return ctx.error("ERR DB index is out of range");
    }
    ctx.session.select(n as usize);
    ctx.l.select(n as usize);
    ctx.reply.ok();
}

fn valid_name(name: &[u8]) -> Result<(), &'static str> {
    if name.iter().any(|&c| c <= b' ' || c > b'~') {
        Err("ERR Client names cannot contain spaces, newlines or special characters.")
    } else {
        Ok(())
    }
}

/// The bytes of `args` sent as a RESP multi-bulk request.
fn request_len(args: &carmine_resp::Args) -> usize {
    let digits = |n: usize| n.to_string().len();
    3 + digits(args.len())
        + args
            .iter()
            .map(|a| 1 + digits(a.len()) + 2 + a.len() + 2)
            .sum::<usize>()
}

/// One CLIENT LIST / CLIENT INFO line, with Redis 7's field names.
pub fn client_line(ctx: &Ctx<'_, '_>, c: &ClientInfo) -> String {
    let running = (c.id == ctx.session.info.id).then_some((ctx.spec, ctx.args));
    client_info_line(ctx.shared, c, running)
}

/// [`client_line`] for `c`; `running`: the command `c` is in the middle of (its own
/// CLIENT INFO, or an ACL LOG entry made for it), shown as Redis shows it.
pub fn client_info_line(
    shared: &crate::Shared,
    c: &ClientInfo,
    running: Option<(&CommandSpec, &Args)>,
) -> String {
    let name = c.name.lock().clone().unwrap_or_default();
    let lib_name = c.lib_name.lock().clone().unwrap_or_default();
    let lib_ver = c.lib_ver.lock().clone().unwrap_or_default();
    let mut cmd = match c.last_cmd.load(Ordering::Relaxed) {
        0 => "NULL".to_string(),
        n => shared
            .commands
            .get(n as usize - 1)
            .map_or("NULL".to_string(), |s| s.name.to_string()),
    };
    // The client asking is in the middle of its request: Redis shows the subcommand it
    // runs and the request still in its query buffer.
    let mut qbuf = c.qbuf.load(Ordering::Relaxed);
    if let Some((spec, args)) = running {
        if !spec.subcommands.is_empty() && args.len() > 1 {
            cmd = format!(
                "{}|{}",
                spec.name,
                String::from_utf8_lossy(args.get(1).unwrap_or_default()).to_lowercase()
            );
        }
        qbuf = qbuf.max(request_len(args) as u64);
    }
    let multi = c.multi.load(Ordering::Relaxed);
    // Redis' letters, in its order.
    let mut flags = String::new();
    match c.kind.load(Ordering::Relaxed) {
        ClientInfo::REPLICA => flags.push('S'),
        ClientInfo::MASTER => flags.push('M'),
        _ => {}
    }
    if c.subs.iter().any(|n| n.load(Ordering::Relaxed) > 0) {
        flags.push('P');
    }
    if multi >= 0 {
        flags.push('x');
    }
    if c.unblockable.load(Ordering::Relaxed) {
        flags.push('b');
    }
    let tracking = c.tracking.lock().clone();
    if let Some(t) = &tracking {
        flags.push('t');
        if t.broken_redirect {
            flags.push('R');
        }
        if t.bcast {
            flags.push('B');
        }
    }
    if c.no_evict.load(Ordering::Relaxed) {
        flags.push('e');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    format!(
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi={} qbuf={} qbuf-free=0 argv-mem=0 multi-mem=0 rbs={} rbp={} obl=0 oll=0 omem={} tot-mem=0 events=r cmd={} user={} redir={} resp={} lib-name={} lib-ver={}",
        c.id,
        c.addr,
        c.laddr,
        c.fd,
        String::from_utf8_lossy(&name),
        c.created.elapsed().as_secs(),
        c.idle_secs(),
        flags,
        c.db.load(Ordering::Relaxed),
        c.subs[0].load(Ordering::Relaxed),
        c.subs[1].load(Ordering::Relaxed),
        c.subs[2].load(Ordering::Relaxed),
        multi,
        qbuf,
        c.reply_buffer[0].load(Ordering::Relaxed),
        c.reply_buffer[1].load(Ordering::Relaxed),
        c.omem.load(Ordering::Relaxed),
        cmd,
        c.user.lock(),
        tracking.map_or(-1, |t| t.redirect as i64),
        c.resp.load(Ordering::Relaxed),
        String::from_utf8_lossy(&lib_name),
        String::from_utf8_lossy(&lib_ver),
    )
}

const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "GETNAME",
    "    Return the name of the current connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are: ID, TYPE (normal|master|replica|pubsub), ADDR, LADDR, USER, SKIPME (yes|no), MAXAGE.",
    "LIST [TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID <id> ...]",
    "    Return information about client connections.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <LIB-NAME|LIB-VER> <value>",
    "    Set client meta attribute.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "    Unblock the specified blocked client.",
    "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
    "         [OPTIN] [OPTOUT] [NOLOOP]",
    "    Control server assisted client side caching.",
    "TRACKINGINFO",
    "    Report tracking status for the current connection.",
    "GETREDIR",
    "    Return the client ID we are redirecting to when tracking is enabled.",
    "CACHING (YES|NO)",
    "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
    "HELP",
    "    Print this help.",
];

pub fn help_reply(ctx: &mut Ctx<'_, '_>, lines: &[&str]) {
    ctx.reply.array(lines.len());
    for l in lines {
        ctx.reply.simple(l);
    }
}

pub fn client(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    let argc = ctx.args.len();
    let wrong_args = |ctx: &mut Ctx<'_, '_>| {
        let name = String::from_utf8_lossy(&sub).into_owned();
        ctx.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{name}'. Try CLIENT HELP."
        ));
    };
    match (sub.as_slice(), argc) {
        (b"id", 2) => ctx.reply.int(ctx.session.id() as i64),
        (b"getname", 2) => match ctx.session.info.name.lock().clone() {
            Some(n) => ctx.reply.bulk(&n),
            None => ctx.reply.null(),
        },
        (b"setname", 3) => {
            let name = ctx.arg(2).to_vec();
            if let Err(e) = valid_name(&name) {
                return ctx.error(e);
            }
            *ctx.session.info.name.lock() = if name.is_empty() { None } else { Some(name) };
            ctx.reply.ok();
        }
        (b"setinfo", 4) => {
            let value = ctx.arg(3).to_vec();
            if value.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                return ctx.error(&format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(ctx.arg(2))
                ));
            }
            let slot = if ctx.is(2, "LIB-NAME") {
                &ctx.session.info.lib_name
            } else if ctx.is(2, "LIB-VER") {
                &ctx.session.info.lib_ver
            } else {
                return ctx.error(&format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(ctx.arg(2))
                ));
            };
            *slot.lock() = if value.is_empty() { None } else { Some(value) };
            ctx.reply.ok();
        }
        (b"tracking", n) if n >= 3 => crate::tracking::client_tracking(ctx),
        (b"caching", 3) => crate::tracking::client_caching(ctx),
        (b"getredir", 2) => crate::tracking::client_getredir(ctx),
        (b"trackinginfo", 2) => crate::tracking::client_trackinginfo(ctx),
        (b"unblock", 3 | 4) => {
            let Some(id) = ctx.int_arg(2) else { return };
            let how = if argc == 4 {
                if ctx.is(3, "TIMEOUT") {
                    ClientInfo::UNBLOCK_TIMEOUT
                } else if ctx.is(3, "ERROR") {
                    ClientInfo::UNBLOCK_ERROR
                } else {
                    return ctx.error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
                }
            } else {
                ClientInfo::UNBLOCK_TIMEOUT
            };
            let target = u64::try_from(id)
                .ok()
                .and_then(|id| ctx.shared.clients.get(id))
                .filter(|c| c.unblockable.load(Ordering::Acquire));
            match target {
                Some(c) => {
                    // Its own loop ends the block (it owns the connection): ask, and wake it.
                    c.unblock_request.store(how, Ordering::Release);
                    let ready = c.ready.lock().clone();
                    if let Some(r) = ready {
                        r();
                    }
                    ctx.reply.int(1);
                }
                None => ctx.reply.int(0),
            }
        }
        (b"info", 2) => {
            let line = client_line(ctx, &ctx.session.info) + "\n";
            ctx.reply.verbatim(line.as_bytes());
        }
        (b"list", _) => client_list(ctx),
        (b"pause", 3 | 4) => {
            let all = if ctx.args.len() == 4 {
                if ctx.is(3, "WRITE") {
                    false
                } else if ctx.is(3, "ALL") {
                    true
                } else {
                    return ctx.error("ERR CLIENT PAUSE mode must be WRITE or ALL");
                }
            } else {
                true
            };
            let Some(ms) = carmine_resp::parse_i64(ctx.arg(2)) else {
                return ctx.error("ERR timeout is not an integer or out of range");
            };
            if ms < 0 {
                return ctx.error("ERR timeout is negative");
            }
            ctx.shared.pause.pause_clients(
                ctx.shared,
                std::time::Duration::from_millis(ms as u64),
                all,
            );
            ctx.reply.ok();
        }
        (b"unpause", 2) => {
            ctx.shared.pause.unpause_clients(ctx.shared);
            ctx.reply.ok();
        }
        (b"kill", n) if n >= 3 => client_kill(ctx),
        (b"kill", _) => ctx.error("ERR wrong number of arguments for 'client|kill' command"),
        (b"no-evict", 3) => {
            let on = if ctx.is(2, "ON") {
                true
            } else if ctx.is(2, "OFF") {
                false
            } else {
                return ctx.syntax_error();
            };
            ctx.session.info.no_evict.store(on, Ordering::Relaxed);
            ctx.reply.ok();
        }
        (b"reply", 3) => {
            if ctx.is(2, "ON") {
                ctx.session.reply_mode = ReplyMode::On;
                ctx.reply.ok();
            } else if ctx.is(2, "OFF") {
                ctx.session.reply_mode = ReplyMode::Off;
            } else if ctx.is(2, "SKIP") {
                if ctx.session.reply_mode != ReplyMode::Off {
                    ctx.session.reply_mode = ReplyMode::SkipNext;
                }
            } else {
                ctx.syntax_error();
            }
        }
        (b"help", 2) => help_reply(ctx, CLIENT_HELP),
        _ => wrong_args(ctx),
    }
}

fn client_list(ctx: &mut Ctx<'_, '_>) {
    let mut ids: Option<Vec<u64>> = None;
    let mut type_filter: Option<&'static str> = None;
    let mut i = 2;
    while i < ctx.args.len() {
        if ctx.is(i, "TYPE") && i + 1 < ctx.args.len() {
            let t = ctx.arg(i + 1).to_ascii_lowercase();
            match t.as_slice() {
                b"normal" => type_filter = Some("normal"),
                b"master" => type_filter = Some("master"),
                b"replica" | b"slave" => type_filter = Some("replica"),
                b"pubsub" => type_filter = Some("pubsub"),
                _ => {
                    return ctx.error(&format!(
                        "ERR Unknown client type '{}'",
                        String::from_utf8_lossy(&t)
                    ))
                }
            }
            i += 2;
        } else if ctx.is(i, "ID") && i + 1 < ctx.args.len() {
            let mut list = Vec::new();
            for j in i + 1..ctx.args.len() {
                match carmine_resp::parse_i64(ctx.arg(j)) {
                    Some(v) if v > 0 => list.push(v as u64),
                    _ => return ctx.error("ERR Invalid client ID"),
                }
            }
            ids = Some(list);
            i = ctx.args.len();
        } else {
            return ctx.syntax_error();
        }
    }
    let mut out = String::new();
    for c in ctx.shared.clients.snapshot() {
        // A killed client's loop closes it at its next turn; Redis frees another
        // client at once, so it is gone from the list already.
        if c.killed.load(std::sync::atomic::Ordering::Acquire)
            || ids.as_ref().is_some_and(|l| !l.contains(&c.id))
            || type_filter.is_some_and(|t| t != c.client_type())
        {
            continue;
        }
        out.push_str(&client_line(ctx, &c));
        out.push('\n');
    }
    ctx.reply.verbatim(out.as_bytes());
}

fn client_kill(ctx: &mut Ctx<'_, '_>) {
    let me = ctx.session.id();
    if ctx.args.len() == 3 {
        // Old form: CLIENT KILL addr:port.
        let addr = ctx.arg(2).to_vec();
        let found = ctx
            .shared
            .clients
            .snapshot()
            .into_iter()
            .find(|c| c.addr.as_bytes() == addr.as_slice());
        return match found {
            Some(c) => {
                ctx.close_client(&c);
                ctx.reply.ok();
            }
            None => ctx.error("ERR No such client"),
        };
    }
    let (mut id, mut addr, mut laddr, mut skipme, mut maxage) = (None, None, None, true, None);
    let mut type_filter: Option<Vec<u8>> = None;
    let mut user_filter: Option<String> = None;
    let mut i = 2;
    while i + 1 < ctx.args.len() {
        let val = ctx.arg(i + 1).to_vec();
        if ctx.is(i, "ID") {
            match carmine_resp::parse_i64(&val) {
                Some(v) if v > 0 => id = Some(v as u64),
                _ => return ctx.error("ERR client-id should be greater than 0"),
            }
        } else if ctx.is(i, "ADDR") {
            addr = Some(val);
        } else if ctx.is(i, "LADDR") {
            laddr = Some(val);
        } else if ctx.is(i, "TYPE") {
            let t = val.to_ascii_lowercase();
            if !matches!(
                t.as_slice(),
                b"normal" | b"master" | b"replica" | b"slave" | b"pubsub"
            ) {
                return ctx.error(&format!(
                    "ERR Unknown client type '{}'",
                    String::from_utf8_lossy(&val)
                ));
            }
            type_filter = Some(t);
        } else if ctx.is(i, "USER") {
            if ctx.shared.acl.user(&val).is_none() {
                return ctx.error(&format!(
                    "ERR No such user '{}'",
                    String::from_utf8_lossy(&val)
                ));
            }
            user_filter = Some(String::from_utf8_lossy(&val).into_owned());
        } else if ctx.is(i, "SKIPME") {
            if val.eq_ignore_ascii_case(b"yes") {
                skipme = true;
            } else if val.eq_ignore_ascii_case(b"no") {
                skipme = false;
            } else {
                return ctx.syntax_error();
            }
        } else if ctx.is(i, "MAXAGE") {
            match carmine_resp::parse_i64(&val) {
                Some(v) if v >= 0 => maxage = Some(v as u64),
                _ => return ctx.syntax_error(),
            }
        } else {
            return ctx.syntax_error();
        }
        i += 2;
    }
    if i != ctx.args.len() {
        return ctx.syntax_error();
    }
    let mut killed = 0;
    for c in ctx.shared.clients.snapshot() {
        if id.is_some_and(|v| v != c.id)
            || addr
                .as_ref()
                .is_some_and(|a| a.as_slice() != c.addr.as_bytes())
            || laddr
                .as_ref()
                .is_some_and(|a| a.as_slice() != c.laddr.as_bytes())
            || maxage.is_some_and(|m| c.created.elapsed().as_secs() < m)
            || type_filter.as_ref().is_some_and(|t| {
                let t: &[u8] = if t.as_slice() == b"slave" {
                    b"replica"
                } else {
                    t
                };
                t != c.client_type().as_bytes()
            })
            || user_filter.as_ref().is_some_and(|u| *c.user.lock() != *u)
            || (skipme && c.id == me)
        {
            continue;
        }
        ctx.close_client(&c);
        killed += 1;
    }
    ctx.reply.int(killed);
}
