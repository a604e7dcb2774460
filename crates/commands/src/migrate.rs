//! MIGRATE: moves keys to another server as DUMP payloads restored there
//! (RESTORE-ASKING in cluster mode, so the target accepts them for a slot it imports).
//! Like Redis, the command blocks its caller while it talks to the target (bounded by
//! the timeout), and keeps one connection per target for the next call: `redis-cli
//! --cluster reshard` migrates a slot in batches of keys.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use carmine_resp::{Args, Frame, FrameDecoder, Limits};
use parking_lot::Mutex;

use crate::dispatch::Ctx;
use crate::propagate::{encode_command, Argv};
use crate::table::{cmd, flags::*, CommandSpec, KeySpec};

/// Redis closes cached MIGRATE connections idle for 10 s.
const CACHE_IDLE: Duration = Duration::from_secs(10);

struct Cached {
    stream: TcpStream,
    db: Option<i64>,
    used: Instant,
}

/// Connections kept between MIGRATE calls, by `host:port`.
#[derive(Default)]
pub struct MigrateCache {
    conns: Mutex<HashMap<String, Cached>>,
}

impl MigrateCache {
    /// Drops connections idle past Redis' limit (called from the server's cron).
    pub fn expire_idle(&self) {
        self.conns
            .lock()
            .retain(|_, c| c.used.elapsed() < CACHE_IDLE);
    }

    /// INFO's `migrate_cached_sockets`.
    pub fn len(&self) -> usize {
        self.conns.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn specs() -> Vec<CommandSpec> {
    vec![cmd(
        "migrate",
        -6,
        WRITE | MOVABLEKEYS,
        KeySpec::Custom(migrate_keys),
        migrate,
        "generic",
        "@keyspace @write @slow @dangerous",
        "Atomically transfers a key from one Redis instance to another.",
    )]
}

/// The key is argument 3, or, when that is empty, every argument after KEYS (as Redis'
/// own key finder reads them).
fn migrate_keys(args: &Args, out: &mut Vec<usize>) {
    // The KEYS option, found past the options that take values (a password may be
    // spelled "KEYS"); with a key in the key position as well, it is a syntax error that
    // MIGRATE itself reports, so no keys.
    let mut i = 6;
    while i < args.len() {
        let word = args.get(i).unwrap_or_default();
        if word.eq_ignore_ascii_case(b"keys") {
            if args.get(3).is_some_and(|k| k.is_empty()) {
                out.extend(i + 1..args.len());
            }
            return;
        }
        if word.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if word.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        }
        i += 1;
    }
    if args.len() > 3 {
        out.push(3);
    }
}

struct Options {
    copy: bool,
    replace: bool,
    auth: Option<Vec<Vec<u8>>>,
    keys: Vec<Vec<u8>>,
}

fn parse(ctx: &mut Ctx<'_, '_>) -> Option<Options> {
    let mut o = Options {
        copy: false,
        replace: false,
        auth: None,
        keys: Vec::new(),
    };
    let mut i = 6;
    let n = ctx.args.len();
    while i < n {
        if ctx.is(i, "COPY") {
            o.copy = true;
        } else if ctx.is(i, "REPLACE") {
            o.replace = true;
        } else if ctx.is(i, "AUTH") && i + 1 < n {
            o.auth = Some(vec![ctx.arg(i + 1).to_vec()]);
            i += 1;
        } else if ctx.is(i, "AUTH2") && i + 2 < n {
            o.auth = Some(vec![ctx.arg(i + 1).to_vec(), ctx.arg(i + 2).to_vec()]);
            i += 2;
        } else if ctx.is(i, "KEYS") {
            if !ctx.arg(3).is_empty() {
                ctx.error("ERR When using MIGRATE KEYS option, the key argument must be set to the empty string");
                return None;
            }
            o.keys = (i + 1..n).map(|k| ctx.arg(k).to_vec()).collect();
            break;
        } else {
            ctx.syntax_error();
            return None;
        }
        i += 1;
    }
    if o.keys.is_empty() {
        o.keys.push(ctx.arg(3).to_vec());
    }
    Some(o)
}

fn connect(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

/// Reads `n` replies, each within the deadline.
fn read_replies(
    stream: &mut TcpStream,
    n: usize,
    deadline: Instant,
) -> std::io::Result<Vec<Frame>> {
    let decoder = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut out = Vec::with_capacity(n);
    let mut chunk = [0u8; 16 * 1024];
    while out.len() < n {
        match decoder.decode(&mut buf) {
            Ok(Some(f)) => {
                out.push(f);
                continue;
            }
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::other(format!("{e:?}"))),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let r = stream.read(&mut chunk)?;
        if r == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..r]);
    }
    Ok(out)
}

fn migrate(ctx: &mut Ctx<'_, '_>) {
    let Some(p) = ctx.shared.persistence.get().cloned() else {
        return ctx.error("ERR persistence is not available in this embedding");
    };
    let Some(opts) = parse(ctx) else { return };
    let (Some(db), Some(timeout)) = (ctx.int_arg(4), ctx.int_arg(5)) else {
        return;
    };
    let timeout = Duration::from_millis(if timeout <= 0 { 1000 } else { timeout as u64 });
    let now = ctx.l.now();
    // What exists now; missing keys are skipped (NOKEY when none is left).
    let mut found: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
    for k in &opts.keys {
        if let Some(e) = ctx.l.get(k) {
            let ttl = match e.expire_at() {
                0 => 0,
                at => at.saturating_sub(now).max(1),
            };
            found.push((k.clone(), p.dump(&e.value), ttl));
        }
    }
    if found.is_empty() {
        ctx.l.propagate_nothing();
        return ctx.reply.simple("NOKEY");
    }
    let host = String::from_utf8_lossy(ctx.arg(1)).into_owned();
    let port = String::from_utf8_lossy(ctx.arg(2)).into_owned();
    let target = format!("{host}:{port}");
    let cluster = ctx.shared.cluster_mode();
    let restore: &[u8] = if cluster {
        b"RESTORE-ASKING"
    } else {
        b"RESTORE"
    };
    let cache = &ctx.shared.migrate_cache;
    let mut conns = cache.conns.lock();
    let mut conn = match conns.remove(&target) {
        Some(c) => c,
        None => match connect(&target, timeout) {
            Ok(stream) => Cached {
                stream,
                db: None,
                used: Instant::now(),
            },
            Err(_) => {
                ctx.l.propagate_nothing();
                return ctx.error("IOERR error or timeout connecting to the client");
            }
        },
    };
    drop(conns);
    let mut out = Vec::new();
    let mut expect = 0;
    let mut auth_at = None;
    if let Some(a) = &opts.auth {
        let mut argv = vec![b"AUTH".to_vec()];
        argv.extend(a.iter().cloned());
        encode_command(&Argv::Owned(argv), &mut out);
        auth_at = Some(expect);
        expect += 1;
    }
    let select_at = if conn.db != Some(db) {
        let argv = vec![b"SELECT".to_vec(), db.to_string().into_bytes()];
        encode_command(&Argv::Owned(argv), &mut out);
        expect += 1;
        Some(expect - 1)
    } else {
        None
    };
    let first_restore = expect;
    for (k, payload, ttl) in &found {
        let mut argv = vec![
            restore.to_vec(),
            k.clone(),
            ttl.to_string().into_bytes(),
            payload.clone(),
        ];
        if opts.replace {
            argv.push(b"REPLACE".to_vec());
        }
        encode_command(&Argv::Owned(argv), &mut out);
        expect += 1;
    }
    let deadline = Instant::now() + timeout;
    let sent = conn
        .stream
        .set_write_timeout(Some(timeout))
        .and_then(|_| conn.stream.write_all(&out));
    if sent.is_err() {
        ctx.l.propagate_nothing();
        return ctx.error("IOERR error or timeout writing to target instance");
    }
    let replies = match read_replies(&mut conn.stream, expect, deadline) {
        Ok(r) => r,
        Err(_) => {
            ctx.l.propagate_nothing();
            return ctx.error("IOERR error or timeout reading to target instance");
        }
    };
    let error_of = |f: &Frame| match f {
        Frame::Error(e) | Frame::BulkError(e) => Some(String::from_utf8_lossy(e).into_owned()),
        _ => None,
    };
    let mut first_error = None;
    for at in [auth_at, select_at].into_iter().flatten() {
        if let Some(e) = replies.get(at).and_then(error_of) {
            first_error.get_or_insert(e);
        }
    }
    if select_at.is_some() && first_error.is_none() {
        conn.db = Some(db);
    }
    let mut deleted: Vec<Vec<u8>> = Vec::new();
    if first_error.is_none() {
        for (i, (k, _, _)) in found.iter().enumerate() {
            match replies.get(first_restore + i).and_then(error_of) {
                Some(e) => {
                    first_error.get_or_insert(e);
                }
                None if !opts.copy && ctx.l.remove(k).is_some() => {
                    ctx.notify(carmine_keyspace::notify::GENERIC, "del", k);
                    deleted.push(k.clone());
                }
                None => {}
            }
        }
    }
    conn.used = Instant::now();
    cache.conns.lock().insert(target, conn);
    // The keys left this server: replicas and the AOF see them deleted.
    if deleted.is_empty() {
        ctx.l.propagate_nothing();
    } else {
        let mut argv = vec![b"DEL".to_vec()];
        argv.extend(deleted);
        ctx.l.propagate_instead(argv);
    }
    match first_error {
        Some(e) => ctx.error(&format!("ERR Target instance replied with error: {e}")),
        None => ctx.reply.ok(),
    }
}
