//! MONITOR: every command the server runs, as Redis shows it to monitoring clients
//! (`+<unix time.micros> [<db> <client addr>|lua] "arg" ...`), credentials redacted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use carmine_resp::Args;
use parking_lot::Mutex;

use crate::dispatch::Ctx;
use crate::state::{ClientInfo, Session};
use crate::table::{cmd, flags::*, CommandSpec, KeySpec};

#[derive(Default)]
pub struct Monitors {
    count: AtomicUsize,
    clients: Mutex<Vec<Weak<ClientInfo>>>,
}

impl Monitors {
    /// Cheap enough for every command: one relaxed load.
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    fn add(&self, c: &Arc<ClientInfo>) {
        let mut list = self.clients.lock();
        list.push(Arc::downgrade(c));
        self.count.store(list.len(), Ordering::Relaxed);
    }

    /// Sends one command line to every monitor (not to the client that ran it).
    pub fn feed(&self, session: &Session, args: &Args) {
        let line = format_line(session, args);
        let bytes = bytes::Bytes::from(line);
        let mut list = self.clients.lock();
        list.retain(|w| {
            let Some(c) = w.upgrade() else {
                return false;
            };
            if c.killed.load(Ordering::Relaxed) {
                return false;
            }
            if c.id != session.info.id {
                if let Some(d) = c.deliver.lock().as_ref() {
                    d(bytes.clone());
                }
            }
            true
        });
        self.count.store(list.len(), Ordering::Relaxed);
    }
}

/// Arguments Redis replaces with `(redacted)` in MONITOR and SLOWLOG: passwords of AUTH,
/// HELLO ... AUTH and MIGRATE ... AUTH/AUTH2, ACL SETUSER's rules, secrets CONFIG SET.
pub(crate) fn redacted(args: &Args) -> Vec<bool> {
    let n = args.len();
    let mut hide = vec![false; n];
    let name = args.get(0).unwrap_or_default().to_ascii_lowercase();
    match name.as_slice() {
        b"auth" => hide.iter_mut().skip(1).for_each(|h| *h = true),
        b"acl"
            if args
                .get(1)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"SETUSER")) =>
        {
            hide.iter_mut().skip(2).for_each(|h| *h = true)
        }
        b"config" if args.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"SET")) => {
            let mut i = 2;
            while i + 1 < n {
                let name = args.get(i).unwrap_or_default().to_ascii_lowercase();
                if matches!(
                    name.as_slice(),
                    b"masterauth" | b"masteruser" | b"requirepass"
                ) {
                    hide[i + 1] = true;
                }
                i += 2;
            }
        }
        b"hello" | b"migrate" => {
            let mut i = 1;
            while i < n {
                let a = args.get(i).unwrap_or_default();
                if a.eq_ignore_ascii_case(b"AUTH") {
                    let count = if name == b"hello" { 2 } else { 1 };
                    for h in hide.iter_mut().skip(i + 1).take(count) {
                        *h = true;
                    }
                    i += count;
                } else if a.eq_ignore_ascii_case(b"AUTH2") {
                    for h in hide.iter_mut().skip(i + 1).take(2) {
                        *h = true;
                    }
                    i += 2;
                }
                i += 1;
            }
        }
        _ => {}
    }
    hide
}

/// Redis' `sdscatrepr`: a quoted string with C escapes.
pub fn quoted(out: &mut String, b: &[u8]) {
    out.push('"');
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            7 => out.push_str("\\a"),
            8 => out.push_str("\\b"),
            c if c.is_ascii_graphic() || c == b' ' => out.push(c as char),
            c => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push('"');
}

fn format_line(session: &Session, args: &Args) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let origin = if session.in_script {
        "lua".to_string()
    } else {
        session.info.addr.clone()
    };
    let mut s = format!(
        "+{}.{:06} [{} {}] ",
        now.as_secs(),
        now.subsec_micros(),
        session.db,
        origin
    );
    let hide = redacted(args);
    for (i, hidden) in hide.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        if *hidden {
            s.push_str("\"(redacted)\"");
        } else {
            quoted(&mut s, args.get(i).unwrap_or_default());
        }
    }
    s.push_str("\r\n");
    s
}

/// Whether a command is shown to monitors after it ran: not administrative ones
/// (too dangerous to show), and not scripts, which are shown as they start.
pub fn shown_after(spec: &CommandSpec) -> bool {
    !spec.has(ADMIN) && !shown_before(spec)
}

pub fn shown_before(spec: &CommandSpec) -> bool {
    crate::scripting::runs_script(spec)
}

pub fn commands() -> Vec<CommandSpec> {
    vec![cmd(
        "monitor",
        1,
        ADMIN | NOSCRIPT | LOADING | STALE,
        KeySpec::None,
        monitor,
        "server",
        "@admin @slow @dangerous",
        "Listens for all requests received by the server in real-time.",
    )]
}

fn monitor(ctx: &mut Ctx<'_, '_>) {
    if ctx.session.monitoring {
        return ctx.reply.ok();
    }
    ctx.session.monitoring = true;
    ctx.shared.monitors.add(&ctx.session.info);
    ctx.reply.ok();
}
