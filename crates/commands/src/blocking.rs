//! Blocking list commands: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, and the registry of
//! clients blocked on keys.
//!
//! A blocked client registers in a FIFO per (db, key) while it holds the key's table lock,
//! so a push on another thread (which needs the same lock) cannot slip between its empty
//! check and its registration. After any write, the dispatcher signals the written keys:
//! the first waiter of each key is told to retry (through its loop's channel). A waiter
//! that is served unregisters, and its own write signals the next one, so clients are
//! served in the order they blocked, whichever threads they live on.

use carmine_keyspace::notify;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use carmine_keyspace::ListValue;
use carmine_resp::Args;
use parking_lot::Mutex;

use crate::state::ClientInfo;
use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::typed::{drop_if_empty, write};
use crate::Ctx;

/// Waiters of one key, in the order they blocked; `true` marks a stream reader, which
/// every write of the key wakes (readers do not consume what they are served).
type WaitQueue = VecDeque<(Arc<ClientInfo>, bool)>;

/// Clients blocked on keys.
#[derive(Default)]
pub struct Blocking {
    blocked: AtomicUsize,
    /// Of those, the ones with a deadline (INFO's clients_in_timeout_table).
    timed: AtomicUsize,
    queues: Mutex<HashMap<(usize, Vec<u8>), WaitQueue>>,
}

/// What a blocked client waits for.
#[derive(Clone, Debug)]
pub struct BlockState {
    pub db: usize,
    pub keys: Vec<Vec<u8>>,
    pub deadline: Option<Instant>,
    /// The command to run again when a key is ready.
    pub args: Args,
    /// Reply on timeout: a null array (BLPOP, BLMPOP) or a null bulk (BLMOVE).
    pub timeout_null_array: bool,
    /// On timeout, run the command once more with [`crate::Session::block_timed_out`]
    /// set, to reply what it has (WAIT's count), instead of a null.
    pub rerun_on_timeout: bool,
    /// Held by a client pause, not by a key: runs again when the pause ends.
    pub paused: bool,
    /// A stream reader (XREAD, XREADGROUP): woken by every write of its keys.
    pub reader: bool,
}

impl Blocking {
    pub fn any(&self) -> bool {
        self.blocked.load(Ordering::Acquire) > 0
    }

    /// Clients blocked right now (INFO's blocked_clients).
    pub fn count(&self) -> usize {
        self.blocked.load(Ordering::Acquire)
    }

    /// Blocked clients waiting with a timeout.
    pub fn timed_count(&self) -> usize {
        self.timed.load(Ordering::Acquire)
    }

    pub(crate) fn add(&self, state: &BlockState, client: &Arc<ClientInfo>) {
        let mut q = self.queues.lock();
        for k in &state.keys {
            let queue = q.entry((state.db, k.clone())).or_default();
            if !queue.iter().any(|(c, _)| c.id == client.id) {
                queue.push_back((client.clone(), state.reader));
            }
        }
        self.blocked.fetch_add(1, Ordering::AcqRel);
        if state.deadline.is_some() {
            self.timed.fetch_add(1, Ordering::AcqRel);
        }
        // A client held by a pause is not "blocked" for CLIENT UNBLOCK.
        client.unblockable.store(!state.paused, Ordering::Release);
    }

    /// Unregisters a client from every key it waited on.
    pub fn remove(&self, state: &BlockState, id: u64) {
        let mut q = self.queues.lock();
        for k in &state.keys {
            let slot = (state.db, k.clone());
            if let Some(queue) = q.get_mut(&slot) {
                queue.retain(|(c, _)| c.id != id);
                if queue.is_empty() {
                    q.remove(&slot);
                }
            }
        }
        self.blocked.fetch_sub(1, Ordering::AcqRel);
        if state.deadline.is_some() {
            self.timed.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A whole database changed under its keys (SWAPDB): the first waiter of each of its
    /// keys retries (and blocks again if its key is still not ready).
    pub fn signal_db(&self, db: usize) {
        if !self.any() {
            return;
        }
        let woken: Vec<Arc<ClientInfo>> = self
            .queues
            .lock()
            .iter()
            .filter(|((d, _), _)| *d == db)
            .flat_map(|(_, q)| to_wake(q))
            .collect();
        for c in woken {
            if let Some(hook) = c.ready.lock().as_ref() {
                hook();
            }
        }
    }

    /// A key was written: tell its first waiter to retry, and every stream reader.
    pub fn signal(&self, db: usize, key: &[u8]) {
        if !self.any() {
            return;
        }
        let woken: Vec<Arc<ClientInfo>> = self
            .queues
            .lock()
            .get(&(db, key.to_vec()))
            .map(to_wake)
            .unwrap_or_default();
        for c in woken {
            if let Some(hook) = c.ready.lock().as_ref() {
                hook();
            }
        }
    }
}

/// Who a write of a key wakes: every stream reader, and the first of the others (a pop
/// or move consumes, so its waiters are served one at a time, in order).
fn to_wake(q: &WaitQueue) -> Vec<Arc<ClientInfo>> {
    let first_other = q.iter().position(|(_, reader)| !reader);
    q.iter()
        .enumerate()
        .filter(|(i, (_, reader))| *reader || Some(*i) == first_other)
        .map(|(_, (c, _))| c.clone())
        .collect()
}

pub fn commands() -> Vec<CommandSpec> {
    let g = "list";
    let acl = "@write @list @slow @blocking";
    vec![
        cmd("blpop", -3, WRITE | BLOCKING, keys(1, -2, 1), blpop, g, acl, "Removes and returns the first element in a list. Blocks until an element is available otherwise."),
        cmd("brpop", -3, WRITE | BLOCKING, keys(1, -2, 1), brpop, g, acl, "Removes and returns the last element in a list. Blocks until an element is available otherwise."),
        cmd("brpoplpush", 4, WRITE | DENYOOM | BLOCKING, keys(1, 2, 1), brpoplpush, g, acl, "Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise."),
        cmd("blmove", 6, WRITE | DENYOOM | BLOCKING, keys(1, 2, 1), blmove, g, acl, "Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise."),
        cmd("blmpop", -5, WRITE | BLOCKING, KeySpec::Custom(timeout_numkeys_keys), blmpop, g, acl, "Pops the first element from one of multiple lists. Blocks until an element is available otherwise."),
    ]
}

/// Key positions of `CMD timeout numkeys key ...` (BLMPOP, BZMPOP).
pub(crate) fn timeout_numkeys_keys(args: &Args, out: &mut Vec<usize>) {
    crate::table::numkeys_keys(args, 2, out);
}

/// Parses a blocking timeout (seconds, decimals allowed); replies the error if bad.
pub(crate) fn timeout_arg(ctx: &mut Ctx<'_, '_>, i: usize) -> Option<Option<Duration>> {
    let v = carmine_keyspace::ops::parse_float(ctx.arg(i));
    match v {
        None => {
            ctx.error("ERR timeout is not a float or out of range");
            None
        }
        Some(t) if t < 0.0 => {
            ctx.error("ERR timeout is negative");
            None
        }
        Some(t) if t > 1e9 => {
            ctx.error("ERR timeout is out of range");
            None
        }
        // 0 means wait forever.
        Some(t) => Some((t > 0.0).then(|| Duration::from_secs_f64(t))),
    }
}

/// Registers the client as blocked (or, inside a transaction, replies the timeout value
/// at once, as Redis does).
pub(crate) fn block(
    ctx: &mut Ctx<'_, '_>,
    keys: Vec<Vec<u8>>,
    timeout: Option<Duration>,
    null_array: bool,
) {
    if ctx.in_transaction {
        return if null_array {
            ctx.reply.null_array()
        } else {
            ctx.reply.null()
        };
    }
    if ctx.session.blocked.is_some() {
        return; // a retry that found nothing: stay blocked, reply later
    }
    let state = BlockState {
        db: ctx.session.db,
        keys,
        deadline: timeout.map(|t| Instant::now() + t),
        args: ctx.args.clone(),
        timeout_null_array: null_array,
        rerun_on_timeout: false,
        paused: false,
        reader: false,
    };
    ctx.shared.blocking.add(&state, &ctx.session.info);
    ctx.session.blocked = Some(state);
}

/// Blocks a stream reader (XREAD, XREADGROUP) on `keys`, to run `args` (the command
/// with `$` resolved) when one is written; inside a transaction, replies a null array
/// at once, as a timeout would.
pub(crate) fn block_reader(
    ctx: &mut Ctx<'_, '_>,
    keys: Vec<Vec<u8>>,
    timeout: Option<Duration>,
    args: Option<Args>,
) {
    if ctx.in_transaction {
        return ctx.reply.null_array();
    }
    if ctx.session.blocked.is_some() {
        return;
    }
    let state = BlockState {
        db: ctx.session.db,
        keys,
        deadline: timeout.map(|t| Instant::now() + t),
        args: args.unwrap_or_else(|| ctx.args.clone()),
        timeout_null_array: true,
        rerun_on_timeout: false,
        paused: false,
        reader: true,
    };
    ctx.shared.blocking.add(&state, &ctx.session.info);
    ctx.session.blocked = Some(state);
}

/// Blocks the client on no key (WAIT): whoever can serve it calls its `ready` hook, and
/// at the deadline the command runs once more with `block_timed_out` set.
pub fn block_until_ready(ctx: &mut Ctx<'_, '_>, timeout: Option<Duration>) {
    if ctx.session.blocked.is_some() {
        return;
    }
    let state = BlockState {
        db: ctx.session.db,
        keys: Vec::new(),
        deadline: timeout.map(|t| Instant::now() + t),
        args: ctx.args.clone(),
        timeout_null_array: false,
        rerun_on_timeout: true,
        paused: false,
        reader: false,
    };
    ctx.shared.blocking.add(&state, &ctx.session.info);
    ctx.session.blocked = Some(state);
}

/// Called when a blocked client is served (or times out, or disconnects).
pub fn unblock(shared: &crate::Shared, session: &mut crate::Session) {
    session.info.unblockable.store(false, Ordering::Release);
    if let Some(state) = session.blocked.take() {
        shared.blocking.remove(&state, session.id());
    }
}

/// BLPOP/BRPOP: the first non-empty list among the keys, else block.
fn bpop(ctx: &mut Ctx<'_, '_>, front: bool) {
    let last = ctx.args.len() - 1;
    let Some(timeout) = timeout_arg(ctx, last) else {
        return unblock(ctx.shared, ctx.session);
    };
    for i in 1..last {
        let key = ctx.arg(i);
        match write::<ListValue>(ctx.l, key, false) {
            // Already blocked: a key that became another type is waited on, as in Redis.
            Err(()) if ctx.session.blocked.is_some() => {}
            Err(()) => {
                unblock(ctx.shared, ctx.session);
                return ctx.wrong_type();
            }
            Ok(Some(list)) => {
                if let Some(elem) = list.pop(front) {
                    ctx.notify(notify::LIST, crate::list::pop_event(front), key);
                    // A served BLPOP/BRPOP replays as the pop it did: a replica never blocks.
                    ctx.propagate_as(&[if front { b"LPOP" } else { b"RPOP" }, key]);
                    drop_if_empty::<ListValue>(ctx.l, key);
                    unblock(ctx.shared, ctx.session);
                    ctx.reply.array(2);
                    ctx.reply.bulk(key);
                    ctx.reply.bulk(&elem);
                    return;
                }
            }
            Ok(None) => {}
        }
    }
    let keys = (1..last).map(|i| ctx.arg(i).to_vec()).collect();
    block(ctx, keys, timeout, true);
}

fn blpop(ctx: &mut Ctx<'_, '_>) {
    bpop(ctx, true);
}

fn brpop(ctx: &mut Ctx<'_, '_>) {
    bpop(ctx, false);
}

fn bmove(ctx: &mut Ctx<'_, '_>, from_left: bool, to_left: bool, timeout_at: usize) {
    let Some(timeout) = timeout_arg(ctx, timeout_at) else {
        return unblock(ctx.shared, ctx.session);
    };
    let (src, dst) = (ctx.arg(1), ctx.arg(2));
    let retry = ctx.session.blocked.is_some();
    // Redis' order: the source decides whether to wait (whatever the destination is);
    // once there is an element, a destination that is no list fails the command (and
    // a waiting client with it) and the element stays where it was.
    let waiting = match crate::typed::read::<ListValue>(ctx.l, src) {
        Err(()) if retry => true,
        Err(()) => {
            unblock(ctx.shared, ctx.session);
            return ctx.wrong_type();
        }
        Ok(list) => list.is_none_or(|l| l.is_empty()),
    };
    if waiting {
        return block(ctx, vec![src.to_vec()], timeout, false);
    }
    if crate::typed::read::<ListValue>(ctx.l, dst).is_err() {
        unblock(ctx.shared, ctx.session);
        if retry {
            // The element stays: the next client waiting on the source may take it.
            ctx.shared.blocking.signal(ctx.session.db, src);
        }
        return ctx.wrong_type();
    }
    let Some(elem) = write::<ListValue>(ctx.l, src, false)
        .ok()
        .flatten()
        .and_then(|list| list.pop(from_left))
    else {
        return block(ctx, vec![src.to_vec()], timeout, false);
    };
    let limits = ctx.shared.keyspace.limits();
    if let Ok(Some(d)) = write::<ListValue>(ctx.l, dst, true) {
        d.push(&elem, to_left, limits);
    }
    ctx.notify(notify::LIST, if to_left { "lpush" } else { "rpush" }, dst);
    ctx.notify(notify::LIST, crate::list::pop_event(from_left), src);
    if timeout_at == 3 {
        ctx.propagate_as(&[b"RPOPLPUSH", src, dst]);
    } else {
        let (from, to) = (ctx.arg(3).to_vec(), ctx.arg(4).to_vec());
        ctx.propagate_as(&[b"LMOVE", src, dst, &from, &to]);
    }
    drop_if_empty::<ListValue>(ctx.l, src);
    unblock(ctx.shared, ctx.session);
    ctx.reply.bulk(&elem);
}

fn brpoplpush(ctx: &mut Ctx<'_, '_>) {
    bmove(ctx, false, true, 3);
}

fn blmove(ctx: &mut Ctx<'_, '_>) {
    let side = |ctx: &Ctx<'_, '_>, i: usize| {
        if ctx.is(i, "LEFT") {
            Some(true)
        } else if ctx.is(i, "RIGHT") {
            Some(false)
        } else {
            None
        }
    };
    let (Some(from), Some(to)) = (side(ctx, 3), side(ctx, 4)) else {
        unblock(ctx.shared, ctx.session);
        return ctx.syntax_error();
    };
    bmove(ctx, from, to, 5);
}

fn blmpop(ctx: &mut Ctx<'_, '_>) {
    let Some(timeout) = timeout_arg(ctx, 1) else {
        return unblock(ctx.shared, ctx.session);
    };
    let Some(numkeys) = crate::list::positive_numkeys(ctx, 2) else {
        return unblock(ctx.shared, ctx.session);
    };
    let side_at = 3 + numkeys;
    let left = if ctx.is(side_at, "LEFT") {
        true
    } else if ctx.is(side_at, "RIGHT") {
        false
    } else {
        unblock(ctx.shared, ctx.session);
        return ctx.syntax_error();
    };
    let mut count = 1usize;
    if ctx.args.len() == side_at + 3 && ctx.is(side_at + 1, "COUNT") {
        match carmine_resp::parse_i64(ctx.arg(side_at + 2)) {
            Some(n) if n > 0 => count = n as usize,
            _ => {
                unblock(ctx.shared, ctx.session);
                return ctx.error("ERR count should be greater than 0");
            }
        }
    } else if ctx.args.len() != side_at + 1 {
        unblock(ctx.shared, ctx.session);
        return ctx.syntax_error();
    }
    for i in 3..side_at {
        let key = ctx.arg(i);
        match write::<ListValue>(ctx.l, key, false) {
            Err(()) if ctx.session.blocked.is_some() => {}
            Err(()) => {
                unblock(ctx.shared, ctx.session);
                return ctx.wrong_type();
            }
            Ok(Some(list)) if !list.is_empty() => {
                let popped: Vec<Vec<u8>> = (0..count).map_while(|_| list.pop(left)).collect();
                unblock(ctx.shared, ctx.session);
                return crate::list::finish_mpop(ctx, key, left, &popped);
            }
            _ => {}
        }
    }
    let keys = (3..side_at).map(|i| ctx.arg(i).to_vec()).collect();
    block(ctx, keys, timeout, true);
}
