//! Client-side caching (CLIENT TRACKING): the server remembers which clients read which
//! keys and tells them when those keys change, in RESP3 push messages or, redirected,
//! on `__redis__:invalidate`; BCAST mode reports every change under a client's
//! prefixes. As Redis 7.0's tracking, without the table's size limit
//! (`tracking-table-max-keys`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use carmine_resp::{Args, ReplyBuf};
use parking_lot::Mutex;

use crate::dispatch::Ctx;
use crate::state::ClientInfo;
use crate::table::CommandSpec;

/// A client's tracking settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackingState {
    /// Client id the invalidations go to (0: this connection).
    pub redirect: u64,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    pub prefixes: Vec<Vec<u8>>,
    /// CLIENT CACHING yes/no was given for the next command.
    pub caching: bool,
    /// The redirect target went away.
    pub broken_redirect: bool,
}

#[derive(Default)]
pub struct Tracking {
    /// Clients with tracking on; 0 keeps every hook to one load.
    clients: AtomicUsize,
    /// Key -> ids of the clients that read it since it last changed.
    table: Mutex<HashMap<Vec<u8>, Vec<u64>>>,
    /// The table's length, kept under its lock, read without it: the check made before
    /// every command while tracking is on (see [`Tracking::over_limit`]).
    keys: AtomicUsize,
    /// BCAST clients (their prefixes are in their state).
    bcast: Mutex<Vec<Arc<ClientInfo>>>,
}

const CHANNEL: &[u8] = b"__redis__:invalidate";

fn message(keys: Option<&[&[u8]]>, resp3: bool) -> Bytes {
    let size = 48 + keys.map_or(0, |k| k.iter().map(|k| k.len() + 16).sum());
    let mut r = ReplyBuf::with_capacity(resp3, size);
    if resp3 {
        r.push(2);
        r.bulk(b"invalidate");
    } else {
        r.array(3);
        r.bulk(b"message");
        r.bulk(CHANNEL);
    }
    match keys {
        Some(keys) => {
            r.array(keys.len());
            for k in keys {
                r.bulk(k);
            }
        }
        None => r.null(),
    }
    r.out.freeze()
}

impl Tracking {
    pub fn active(&self) -> bool {
        self.clients.load(Ordering::Relaxed) > 0
    }

    pub fn tracking_clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// INFO's tracking_total_keys / items / prefixes.
    pub fn totals(&self) -> (usize, usize, usize) {
        let t = self.table.lock();
        let items = t.values().map(Vec::len).sum();
        let prefixes = self
            .bcast
            .lock()
            .iter()
            .map(|c| {
                c.tracking
                    .lock()
                    .as_ref()
                    .map_or(0, |s| s.prefixes.len().max(1))
            })
            .sum();
        (t.len(), items, prefixes)
    }

    /// Sends one invalidation to a tracking client (or where it redirects).
    fn send(&self, shared: &crate::Shared, target: &ClientInfo, key: Option<&[&[u8]]>) {
        let redirect = target.tracking.lock().as_ref().map_or(0, |s| s.redirect);
        let (to, redirected) = if redirect != 0 {
            match shared.clients.get(redirect) {
                Some(c) => (c, true),
                None => {
                    if let Some(s) = target.tracking.lock().as_mut() {
                        s.broken_redirect = true;
                    }
                    if target.resp.load(Ordering::Relaxed) == 3 {
                        let mut r = ReplyBuf::with_capacity(true, 64);
                        r.push(2);
                        r.bulk(b"tracking-redir-broken");
                        r.int(redirect as i64);
                        if let Some(d) = target.deliver.lock().as_ref() {
                            d(r.out.freeze());
                        }
                    }
                    return;
                }
            }
        } else {
            match shared.clients.get(target.id) {
                Some(c) => (c, false),
                None => return,
            }
        };
        let resp3 = to.resp.load(Ordering::Relaxed) == 3;
        let subscribed = to.subs.iter().any(|s| s.load(Ordering::Relaxed) > 0);
        if !(resp3 || (redirected && subscribed)) {
            // RESP2 has no push messages on the same connection.
            return;
        }
        let hook = to.deliver.lock().clone();
        if let Some(d) = hook {
            d(message(key, resp3));
        }
    }

    /// After a read-only command of a tracking client: remember the keys it read.
    pub fn remember(&self, info: &ClientInfo, spec: &CommandSpec, args: &Args) {
        let mut state = info.tracking.lock();
        let Some(s) = state.as_mut() else {
            return;
        };
        let caching = std::mem::take(&mut s.caching);
        if s.bcast || (s.optin && !caching) || (s.optout && caching) {
            return;
        }
        drop(state);
        let mut idx = Vec::new();
        if crate::scripting::runs_script(spec) {
            // EVAL/FCALL: the declared keys (the table gives scripts no key positions,
            // as they run with the world stopped).
            crate::table::numkeys_keys(args, 2, &mut idx);
        } else {
            spec.key_indexes(args, &mut idx);
        }
        if idx.is_empty() {
            return;
        }
        let mut t = self.table.lock();
        for i in idx {
            let ids = t
                .entry(args.get(i).unwrap_or_default().to_vec())
                .or_default();
            if !ids.contains(&info.id) {
                ids.push(info.id);
            }
        }
        self.keys.store(t.len(), Ordering::Relaxed);
    }

    /// Clears a pending CLIENT CACHING once the command it was for has run.
    pub fn command_done(&self, info: &ClientInfo, spec: &CommandSpec) {
        if spec.name != "client" {
            if let Some(s) = info.tracking.lock().as_mut() {
                s.caching = false;
            }
        }
    }

    /// Keys changed (`writer`: the client that changed them, for NOLOOP). Readers get
    /// one message per key; a BCAST client gets the keys under its prefixes in one
    /// message (Redis sends what a loop turn changed together).
    pub fn invalidate(&self, shared: &crate::Shared, keys: &[&[u8]], writer: Option<u64>) {
        self.invalidate_readers(shared, keys, writer);
        self.invalidate_bcast(shared, keys, writer);
    }

    /// The clients that read these keys are told, one message per key, at once (a key
    /// read again later in the same transaction is tracked again).
    pub fn invalidate_readers(&self, shared: &crate::Shared, keys: &[&[u8]], writer: Option<u64>) {
        for key in keys {
            let ids = {
                let mut t = self.table.lock();
                let ids = t.remove(*key);
                self.keys.store(t.len(), Ordering::Relaxed);
                ids
            };
            for id in ids.unwrap_or_default() {
                let Some(c) = shared.clients.get(id) else {
                    continue;
                };
                let skip = match c.tracking.lock().as_ref() {
                    None => true,
                    Some(s) => s.bcast || (s.noloop && writer == Some(id)),
                };
                if skip {
                    continue;
                }
                // The thread-local first: it is unset on every write's path.
                let kept = OWN_PUSHES.with(|own| match &mut *own.borrow_mut() {
                    Some((own_id, bytes)) if *own_id == id && self.writes_to_itself(&c) => {
                        bytes.extend_from_slice(&message(Some(&[key]), true));
                        true
                    }
                    _ => false,
                });
                if !kept {
                    self.send(shared, &c, Some(&[key]));
                }
            }
        }
    }

    /// A client whose invalidations come on its own connection: not redirected, RESP3.
    fn writes_to_itself(&self, c: &ClientInfo) -> bool {
        let redirect = c.tracking.lock().as_ref().map_or(0, |s| s.redirect);
        redirect == 0 && c.resp.load(Ordering::Relaxed) == 3
    }

    /// BCAST clients are told of the keys under their prefixes, one message per prefix.
    pub fn invalidate_bcast(&self, shared: &crate::Shared, keys: &[&[u8]], writer: Option<u64>) {
        let bcast: Vec<Arc<ClientInfo>> = self.bcast.lock().clone();
        for c in bcast {
            // One message per prefix, prefixes in byte order, as Redis groups them.
            let mut prefixes = match c.tracking.lock().as_ref() {
                Some(s) if s.bcast && !(s.noloop && writer == Some(c.id)) => s.prefixes.clone(),
                _ => continue,
            };
            if prefixes.is_empty() {
                prefixes.push(Vec::new());
            }
            prefixes.sort();
            for p in &prefixes {
                let hits: Vec<&[u8]> = keys.iter().copied().filter(|k| k.starts_with(p)).collect();
                if !hits.is_empty() {
                    self.send(shared, &c, Some(&hits));
                }
            }
        }
    }

    /// Whether the table holds more keys than `max` (0: no limit). One atomic load.
    pub fn over_limit(&self, max: usize) -> bool {
        max != 0 && self.keys.load(Ordering::Relaxed) > max
    }

    /// `tracking-table-max-keys` (0: no limit): past it, keys are dropped from the table
    /// (and their readers told, as if they changed), at most 100 a call, as Redis'
    /// cron does.
    pub fn limit(&self, shared: &crate::Shared, max: usize) {
        if max == 0 {
            return;
        }
        let victims: Vec<Vec<u8>> = {
            let t = self.table.lock();
            let over = t.len().saturating_sub(max).min(100);
            t.keys().take(over).cloned().collect()
        };
        for key in victims {
            self.invalidate_readers(shared, &[&key], None);
        }
    }

    /// FLUSHDB / FLUSHALL: every tracking client is told that everything changed.
    pub fn flush(&self, shared: &crate::Shared) {
        let mut t = self.table.lock();
        t.clear();
        self.keys.store(0, Ordering::Relaxed);
        drop(t);
        for c in shared.clients.snapshot() {
            if c.tracking.lock().is_some() {
                self.send(shared, &c, None);
            }
        }
    }

    fn enable(&self, info: &Arc<ClientInfo>, state: TrackingState) {
        let mut cur = info.tracking.lock();
        if cur.is_none() {
            self.clients.fetch_add(1, Ordering::Relaxed);
        }
        let bcast = state.bcast;
        *cur = Some(state);
        drop(cur);
        let mut b = self.bcast.lock();
        b.retain(|c| c.id != info.id);
        if bcast {
            b.push(info.clone());
        }
    }

    /// Tracking off (CLIENT TRACKING OFF, RESET, or the connection closing).
    pub fn disable(&self, info: &ClientInfo) {
        if info.tracking.lock().take().is_some() {
            self.clients.fetch_sub(1, Ordering::Relaxed);
        }
        self.bcast.lock().retain(|c| c.id != info.id);
    }
}

thread_local! {
    /// While set (see [`before_command`]): the client about to run a command on this
    /// thread, and the invalidation messages for it collected meanwhile.
    static OWN_PUSHES: std::cell::RefCell<Option<(u64, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, the work done for client `id` before its command (the tracking table's
/// trim, evictions), and writes the invalidations it causes for that client into
/// `reply`, ahead of the command's own reply, as Redis sends them. Without this they
/// would reach the client after the reply, through its loop's queue.
pub fn before_command<R>(id: u64, reply: &mut ReplyBuf, f: impl FnOnce() -> R) -> R {
    let outer = OWN_PUSHES.with(|own| own.borrow_mut().replace((id, Vec::new())));
    let result = f();
    let collected = OWN_PUSHES.with(|own| std::mem::replace(&mut *own.borrow_mut(), outer));
    if let Some((_, bytes)) = collected {
        reply.out.extend_from_slice(&bytes);
    }
    result
}

fn overlap(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN] [OPTOUT] [NOLOOP].
pub fn client_tracking(ctx: &mut Ctx<'_, '_>) {
    let on = if ctx.is(2, "ON") {
        true
    } else if ctx.is(2, "OFF") {
        false
    } else {
        return ctx.syntax_error();
    };
    let mut st = TrackingState::default();
    let mut redirect_given = false;
    let mut i = 3;
    while i < ctx.args.len() {
        let more = ctx.args.len() - i - 1;
        if ctx.is(i, "REDIRECT") && more > 0 {
            i += 1;
            if redirect_given {
                return ctx.error("ERR A client can only redirect to a single other client");
            }
            let Some(id) = ctx.int_arg(i) else { return };
            redirect_given = true;
            st.redirect = id.max(0) as u64;
        } else if ctx.is(i, "BCAST") {
            st.bcast = true;
        } else if ctx.is(i, "OPTIN") {
            st.optin = true;
        } else if ctx.is(i, "OPTOUT") {
            st.optout = true;
        } else if ctx.is(i, "NOLOOP") {
            st.noloop = true;
        } else if ctx.is(i, "PREFIX") && more > 0 {
            i += 1;
            st.prefixes.push(ctx.arg(i).to_vec());
        } else {
            return ctx.syntax_error();
        }
        i += 1;
    }
    let info = ctx.session.info.clone();
    let tracking = &ctx.shared.tracking;
    if !on {
        tracking.disable(&info);
        return ctx.reply.ok();
    }
    if !st.bcast && !st.prefixes.is_empty() {
        return ctx.error("ERR PREFIX option requires BCAST mode to be enabled");
    }
    let current = info.tracking.lock().clone();
    if let Some(cur) = &current {
        if cur.bcast != st.bcast {
            return ctx.error("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.");
        }
    }
    if st.bcast && (st.optin || st.optout) {
        return ctx.error("ERR OPTIN and OPTOUT are not compatible with BCAST");
    }
    if st.optin && st.optout {
        return ctx.error("ERR You can't use both OPTIN and OPTOUT");
    }
    if let Some(cur) = &current {
        if (st.optin && cur.optout) || (st.optout && cur.optin) {
            return ctx.error("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.");
        }
    }
    if st.bcast {
        let existing = current
            .as_ref()
            .map(|c| c.prefixes.clone())
            .unwrap_or_default();
        for (i, p) in st.prefixes.iter().enumerate() {
            if let Some(e) = existing.iter().find(|e| overlap(e, p) && *e != p) {
                return ctx.error(&format!(
                    "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(e)
                ));
            }
            if let Some(o) = st.prefixes[i + 1..].iter().find(|o| overlap(p, o)) {
                return ctx.error(&format!(
                    "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(o)
                ));
            }
        }
        // Prefixes add up while BCAST stays on, as in Redis.
        for e in existing {
            if !st.prefixes.contains(&e) {
                st.prefixes.push(e);
            }
        }
    }
    if st.redirect != 0 && ctx.shared.clients.get(st.redirect).is_none() {
        return ctx.error("ERR The client ID you want redirect to does not exist");
    }
    tracking.enable(&info, st);
    ctx.reply.ok();
}

/// CLIENT CACHING YES|NO.
pub fn client_caching(ctx: &mut Ctx<'_, '_>) {
    let mut state = ctx.session.info.tracking.lock();
    let Some(s) = state.as_mut().filter(|s| s.optin || s.optout) else {
        drop(state);
        return ctx.error("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled");
    };
    if ctx
        .args
        .get(2)
        .is_some_and(|a| a.eq_ignore_ascii_case(b"YES"))
    {
        if !s.optin {
            drop(state);
            return ctx.error(
                "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            );
        }
    } else if ctx
        .args
        .get(2)
        .is_some_and(|a| a.eq_ignore_ascii_case(b"NO"))
    {
        if !s.optout {
            drop(state);
            return ctx.error(
                "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            );
        }
    } else {
        drop(state);
        return ctx.syntax_error();
    }
    s.caching = true;
    drop(state);
    ctx.reply.ok();
}

/// CLIENT GETREDIR: the redirect id, 0 without one, -1 when not tracking.
pub fn client_getredir(ctx: &mut Ctx<'_, '_>) {
    let r = ctx
        .session
        .info
        .tracking
        .lock()
        .as_ref()
        .map_or(-1, |s| s.redirect as i64);
    ctx.reply.int(r);
}

/// CLIENT TRACKINGINFO.
pub fn client_trackinginfo(ctx: &mut Ctx<'_, '_>) {
    let state = ctx.session.info.tracking.lock().clone();
    let mut flags: Vec<&str> = Vec::new();
    match &state {
        None => flags.push("off"),
        Some(s) => {
            flags.push("on");
            if s.bcast {
                flags.push("bcast");
            }
            if s.optin {
                flags.push("optin");
                if s.caching {
                    flags.push("caching-yes");
                }
            }
            if s.optout {
                flags.push("optout");
                if s.caching {
                    flags.push("caching-no");
                }
            }
            if s.noloop {
                flags.push("noloop");
            }
            if s.broken_redirect {
                flags.push("broken_redirect");
            }
        }
    }
    let r = &mut *ctx.reply;
    r.map(3);
    r.bulk(b"flags");
    r.set(flags.len());
    for f in flags {
        r.bulk(f.as_bytes());
    }
    r.bulk(b"redirect");
    r.int(state.as_ref().map_or(-1, |s| s.redirect as i64));
    r.bulk(b"prefixes");
    // BCAST without prefixes has the empty prefix, which Redis lists.
    let prefixes = match state {
        Some(s) if s.bcast && s.prefixes.is_empty() => vec![Vec::new()],
        Some(s) => s.prefixes,
        None => Vec::new(),
    };
    r.array(prefixes.len());
    for p in prefixes {
        r.bulk(&p);
    }
}
