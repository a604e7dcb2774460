//! SLOWLOG: the commands that ran longer than `slowlog-log-slower-than` microseconds,
//! newest first, at most `slowlog-max-len` of them, with Redis' trimming and redaction.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use carmine_resp::Args;
use parking_lot::Mutex;

use crate::state::Session;
use crate::table::{cmd, flags::*, CommandSpec, KeySpec};
use crate::Ctx;

/// Redis keeps at most this many arguments of a command, the last saying how many more.
const MAX_ARGS: usize = 32;
/// ... and this many bytes of each argument.
const MAX_ARG_BYTES: usize = 128;

struct Entry {
    id: u64,
    unix_secs: u64,
    micros: u64,
    args: Vec<Vec<u8>>,
    peer: String,
    name: Vec<u8>,
}

#[derive(Default)]
pub struct SlowLog {
    entries: Mutex<VecDeque<Entry>>,
    next_id: AtomicU64,
}

impl SlowLog {
    /// Records a command that took `micros`, if the threshold says so (negative: off).
    pub fn observe(&self, shared: &crate::Shared, session: &Session, args: &Args, micros: u64) {
        let t = &shared.config.tunables;
        let threshold = t.slowlog_slower_than.load(Ordering::Relaxed);
        if threshold < 0 || micros < threshold as u64 {
            return;
        }
        let max_len = t.slowlog_max_len.load(Ordering::Relaxed) as usize;
        let entry = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            micros,
            args: logged_args(args),
            peer: session.info.addr.clone(),
            name: session.info.name.lock().clone().unwrap_or_default(),
        };
        let mut entries = self.entries.lock();
        entries.push_front(entry);
        entries.truncate(max_len);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The arguments as the log keeps them: credentials redacted, at most 32 (the last
/// counting the rest), each at most 128 bytes (and a note of how many more).
fn logged_args(args: &Args) -> Vec<Vec<u8>> {
    let hide = crate::monitor::redacted(args);
    let kept = args.len().min(MAX_ARGS);
    (0..kept)
        .map(|j| {
            if kept != args.len() && j == kept - 1 {
                return format!("... ({} more arguments)", args.len() - kept + 1).into_bytes();
            }
            if hide.get(j).copied().unwrap_or(false) {
                return b"(redacted)".to_vec();
            }
            let a = args.get(j).unwrap_or_default();
            if a.len() > MAX_ARG_BYTES {
                let mut s = a[..MAX_ARG_BYTES].to_vec();
                s.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - MAX_ARG_BYTES).as_bytes(),
                );
                s
            } else {
                a.to_vec()
            }
        })
        .collect()
}

pub fn commands() -> Vec<CommandSpec> {
    vec![CommandSpec {
        subcommands: &["get", "len", "reset", "help"],
        since: "2.2.12",
        ..cmd(
            "slowlog",
            -2,
            ADMIN | LOADING | STALE,
            KeySpec::None,
            slowlog,
            "server",
            "@admin @slow @dangerous",
            "A container for slow log commands.",
        )
    }]
}

const SLOWLOG_HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
];

fn slowlog(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    let log = &ctx.shared.slowlog;
    match (sub.as_slice(), ctx.args.len()) {
        (b"help", 2) => crate::connection::help_reply(ctx, SLOWLOG_HELP),
        (b"len", 2) => ctx.reply.int(log.len() as i64),
        (b"reset", 2) => {
            log.entries.lock().clear();
            ctx.reply.ok();
        }
        (b"get", 2 | 3) => {
            let count = if ctx.args.len() == 3 {
                match carmine_resp::parse_i64(ctx.arg(2)) {
                    Some(n) if n >= -1 => n,
                    Some(_) => return ctx.error("ERR count should be greater than or equal to -1"),
                    None => return ctx.error("ERR value is not an integer or out of range"),
                }
            } else {
                10
            };
            let entries = log.entries.lock();
            let n = if count < 0 {
                entries.len()
            } else {
                entries.len().min(count as usize)
            };
            let reply = &mut *ctx.reply;
            reply.array(n);
            for e in entries.iter().take(n) {
                reply.array(6);
                reply.int(e.id as i64);
                reply.int(e.unix_secs as i64);
                reply.int(e.micros as i64);
                reply.array(e.args.len());
                for a in &e.args {
                    reply.bulk(a);
                }
                reply.bulk(e.peer.as_bytes());
                reply.bulk(&e.name);
            }
        }
        _ => ctx.unknown_subcommand(),
    }
}
