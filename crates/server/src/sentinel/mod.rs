//! The Sentinel personality: `carmine-server sentinel.conf --sentinel`.
//!
//! The state machine is `carmine-sentinel`'s [`Sentinel`]; this module hosts it. Client
//! connections use the ordinary event loops with Sentinel's own command table (PING,
//! INFO, SENTINEL, pub/sub, AUTH, HELLO, CLIENT, COMMAND, ROLE, SHUTDOWN, ACL) and no
//! keyspace commands. A control thread (`driver`) owns the outgoing connections to the
//! monitored masters, replicas and fellow sentinels, feeds the machine the time and
//! what they answer, and performs its actions: events are logged and published on our
//! own pub/sub, scripts run, and the config file is rewritten in place.

mod driver;
mod scripts;

use std::io::{self, Write};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use carmine_commands::table::{cmd, flags::*, CommandSpec, CommandTable, KeySpec};
use carmine_commands::{Ctx, Shared};
use carmine_resp::ReplyBuf;
use carmine_sentinel::{rewrite_config_text, Action, Reply, Sentinel};
use parking_lot::Mutex;

use crate::log;

/// The commands Redis 7.0 allows in sentinel mode, apart from the ones replaced here.
const ALLOWED: &[&str] = &[
    "ping",
    "auth",
    "hello",
    "client",
    "command",
    "shutdown",
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "acl",
];

const SENTINEL_CLIENT_SUBCOMMANDS: &[&str] = &[
    "caching",
    "getname",
    "getredir",
    "help",
    "id",
    "info",
    "kill",
    "list",
    "no-evict",
    "pause",
    "reply",
    "setname",
    "tracking",
    "trackinginfo",
    "unblock",
    "unpause",
];

fn sentinel_client(ctx: &mut Ctx<'_, '_>) {
    let sub = String::from_utf8_lossy(ctx.arg(1)).to_ascii_lowercase();
    if !SENTINEL_CLIENT_SUBCOMMANDS.contains(&sub.as_str()) {
        return ctx.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CLIENT HELP."
        ));
    }
    carmine_commands::connection::client(ctx);
}

/// The sentinel and what its commands and its driver share.
pub struct SentinelHost {
    pub(crate) machine: Mutex<Sentinel>,
    /// Actions queued by client commands for the driver.
    pending: Mutex<Vec<Action>>,
    waker: OnceLock<mio::Waker>,
    config_path: String,
    pub(crate) scripts: Mutex<scripts::Scripts>,
}

/// Wall-clock milliseconds: Sentinel's TILT mode exists to notice this clock jumping.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl SentinelHost {
    pub(crate) fn of(shared: &Shared) -> Option<&SentinelHost> {
        shared
            .sentinel
            .get()
            .and_then(|s| s.downcast_ref::<SentinelHost>())
    }

    /// Rewrites the config file with the machine's state, atomically (a temporary file
    /// renamed over it, then fsync), keeping the file's other lines and comments.
    pub(crate) fn flush_config(&self, m: &Sentinel) -> io::Result<()> {
        let old = match std::fs::read_to_string(&self.config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let text = rewrite_config_text(&old, &m.config_lines(), Sentinel::config_keys());
        let tmp = format!("{}.tmp-{}", self.config_path, std::process::id());
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.config_path)?;
            Ok(())
        })();
        match &result {
            Ok(()) => log::notice("Sentinel new configuration saved on disk"),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                log::warning(&format!(
                    "WARNING: Sentinel was not able to save the new configuration on disk!!!: {e}"
                ));
            }
        }
        result
    }

    /// Hands actions produced outside the driver (by client commands) to the driver,
    /// saving the config first when they ask for it. False when saving failed.
    fn dispatch(&self, m: &Sentinel, actions: Vec<Action>) -> bool {
        let mut saved = true;
        let mut rest = Vec::new();
        for a in actions {
            if a == Action::FlushConfig {
                saved &= self.flush_config(m).is_ok();
            } else {
                rest.push(a);
            }
        }
        if !rest.is_empty() {
            self.pending.lock().extend(rest);
            if let Some(w) = self.waker.get() {
                let _ = w.wake();
            }
        }
        saved
    }
}

/// Sentinel's command table: the allowed subset of the server's, with Sentinel's own
/// SENTINEL, INFO, ROLE and PUBLISH.
pub fn command_table() -> CommandTable {
    let base = carmine_commands::command_table();
    let kept: Vec<CommandSpec> = base
        .all()
        .iter()
        .filter(|s| ALLOWED.contains(&s.name))
        .cloned()
        .map(|mut s| {
            if s.name == "client" {
                // Redis 7.0's Sentinel has no CLIENT SETINFO (a 7.2 addition).
                s.subcommands = SENTINEL_CLIENT_SUBCOMMANDS;
                s.handler = sentinel_client;
            }
            s
        })
        .collect();
    CommandTable::new(kept).extend(vec![
        CommandSpec {
            subcommands: &[
                "ckquorum",
                "config",
                "debug",
                "failover",
                "flushconfig",
                "get-master-addr-by-name",
                "help",
                "info-cache",
                "is-master-down-by-addr",
                "master",
                "masters",
                "monitor",
                "myid",
                "pending-scripts",
                "remove",
                "replicas",
                "reset",
                "sentinels",
                "set",
                "simulate-failure",
                "slaves",
            ],
            ..cmd(
                "sentinel",
                -2,
                ADMIN | NOSCRIPT | LOADING | STALE,
                KeySpec::None,
                sentinel_command,
                "sentinel",
                "@admin @slow @dangerous",
                "A container for Redis Sentinel commands.",
            )
        },
        cmd(
            "info",
            -1,
            LOADING | STALE,
            KeySpec::None,
            info_command,
            "server",
            "@slow @dangerous",
            "Returns information and statistics about the sentinel.",
        ),
        cmd(
            "role",
            1,
            NOSCRIPT | LOADING | STALE | FAST,
            KeySpec::None,
            role_command,
            "server",
            "@admin @fast @dangerous",
            "Returns the replication role.",
        ),
        cmd(
            "publish",
            3,
            PUBSUB | LOADING | STALE | FAST,
            KeySpec::None,
            publish_command,
            "pubsub",
            "@pubsub @fast",
            "Posts a hello message to the sentinel.",
        ),
    ])
}

pub(crate) fn write_reply(out: &mut ReplyBuf, r: &Reply) {
    match r {
        Reply::Status(s) => out.simple(s),
        Reply::Error(s) => out.error(s),
        Reply::Int(n) => out.int(*n),
        Reply::Bulk(b) => out.bulk(b),
        Reply::Nil => out.null(),
        Reply::NilArray => out.null_array(),
        Reply::Array(items) => {
            out.array(items.len());
            for i in items {
                write_reply(out, i);
            }
        }
        Reply::Map(pairs) => {
            out.map(pairs.len());
            for (k, v) in pairs {
                write_reply(out, k);
                write_reply(out, v);
            }
        }
    }
}

fn args_vec(ctx: &Ctx<'_, '_>) -> Vec<Vec<u8>> {
    (0..ctx.args.len()).map(|i| ctx.arg(i).to_vec()).collect()
}

fn sentinel_command(ctx: &mut Ctx<'_, '_>) {
    let Some(host) = SentinelHost::of(ctx.shared) else {
        return ctx.error("ERR This instance has Sentinel mode disabled");
    };
    if ctx.args.len() == 2 && ctx.is(1, "PENDING-SCRIPTS") {
        let reply = host.scripts.lock().pending_reply();
        return write_reply(ctx.reply, &reply);
    }
    let argv = args_vec(ctx);
    let mut m = host.machine.lock();
    let mut reply = m.command(now_ms(), &argv);
    let actions = m.take_actions();
    if !host.dispatch(&m, actions) && reply == Reply::ok() {
        reply = Reply::err("ERR Failed to save config file. Check server logs.");
    }
    drop(m);
    write_reply(ctx.reply, &reply);
}

fn info_command(ctx: &mut Ctx<'_, '_>) {
    let Some(host) = SentinelHost::of(ctx.shared) else {
        return ctx.error("ERR This instance has Sentinel mode disabled");
    };
    let requested: Vec<String> = (1..ctx.args.len())
        .map(|i| String::from_utf8_lossy(ctx.arg(i)).to_lowercase())
        .collect();
    let every = requested.is_empty()
        || requested
            .iter()
            .any(|s| matches!(s.as_str(), "all" | "default" | "everything"));
    let generic: Vec<String> = if every {
        ["server", "clients", "cpu", "stats"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        requested
            .iter()
            .filter(|s| matches!(s.as_str(), "server" | "clients" | "cpu" | "stats"))
            .cloned()
            .collect()
    };
    let mut text = if generic.is_empty() {
        String::new()
    } else {
        carmine_commands::server::info_text(ctx, &generic)
    };
    if every || requested.iter().any(|s| s == "sentinel") {
        if !text.is_empty() {
            text.push_str("\r\n\r\n");
        }
        let (running, queued) = host.scripts.lock().counts();
        text.push_str(&host.machine.lock().info_section(now_ms(), running, queued));
    }
    ctx.reply.verbatim(text.as_bytes());
}

fn role_command(ctx: &mut Ctx<'_, '_>) {
    let Some(host) = SentinelHost::of(ctx.shared) else {
        return ctx.error("ERR This instance has Sentinel mode disabled");
    };
    let r = host.machine.lock().role();
    write_reply(ctx.reply, &r);
}

fn publish_command(ctx: &mut Ctx<'_, '_>) {
    let Some(host) = SentinelHost::of(ctx.shared) else {
        return ctx.error("ERR This instance has Sentinel mode disabled");
    };
    let (channel, message) = (ctx.arg(1).to_vec(), ctx.arg(2).to_vec());
    let mut m = host.machine.lock();
    let reply = m.publish(now_ms(), &channel, &message);
    let actions = m.take_actions();
    host.dispatch(&m, actions);
    drop(m);
    write_reply(ctx.reply, &reply);
}

/// DNS for `resolve-hostnames yes` (blocking, as Redis' Sentinel resolves).
fn resolve_host(host: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .next()
        .map(|a| a.ip().to_string())
}

/// Builds the sentinel from the config's `sentinel` directives and starts its driver.
/// Errors are fatal at start, as in Redis.
pub fn install(shared: &Arc<Shared>, port: u16) -> io::Result<()> {
    let config_path =
        shared.config.file.read().clone().ok_or_else(|| {
            io::Error::other("Sentinel started without a config file. Exiting...")
        })?;
    if let Err(e) = std::fs::OpenOptions::new().append(true).open(&config_path) {
        return Err(io::Error::other(format!(
            "Sentinel config file {config_path} is not writable: {e}. Exiting..."
        )));
    }
    let directives = shared.config.sentinel_directives.lock().clone();
    let mut machine = Sentinel::new(String::new(), port, fastrand::u64(..));
    machine.set_resolver(resolve_host);
    machine.set_requirepass(shared.config.get("requirepass"));
    let now = now_ms();
    if let Err((i, e)) = machine.configure_all(&directives) {
        return Err(io::Error::other(format!(
            "\n*** FATAL CONFIG FILE ERROR ***\n>>> 'sentinel {}'\n{e}",
            directives.get(i).map(|d| d.join(" ")).unwrap_or_default()
        )));
    }
    let generated = machine.myid().is_empty();
    if generated {
        machine
            .configure(&["myid", &carmine_commands::state::random_hex(40)])
            .map_err(io::Error::other)?;
    }
    let host = Arc::new(SentinelHost {
        machine: Mutex::new(machine),
        pending: Mutex::new(Vec::new()),
        waker: OnceLock::new(),
        config_path,
        scripts: Mutex::new(scripts::Scripts::default()),
    });
    {
        let mut m = host.machine.lock();
        if generated {
            host.flush_config(&m)?;
        }
        log::notice(&format!("Sentinel ID is {}", m.myid()));
        m.start(now);
        let actions = m.take_actions();
        host.pending.lock().extend(actions);
    }
    let _ = shared.sentinel.set(host.clone());
    driver::spawn(shared.clone(), host)
}
