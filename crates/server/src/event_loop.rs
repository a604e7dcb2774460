//! One event-loop thread: a `mio::Poll`, the connections it owns for their whole life,
//! and a cron at `hz`. Loop 0 also owns the listening sockets and deals accepted
//! connections round-robin to every loop over crossbeam channels, waking the target with
//! its `mio::Waker`.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::{ClientStream, Listener, Peer};
use bytes::{Buf, BytesMut};
use carmine_commands::{
    execute_at, execute_timed, ClientInfo, CommandClock, Session, Shared, ThreadStats,
};
use carmine_keyspace::PREFETCH_MAX;
use carmine_resp::{Args, CommandDecoder, Limits, ReplyBuf};
use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::log;
use crate::reply_buffer::ReplyBufferSize;

const WAKER: Token = Token(usize::MAX - 1);
const FIRST_LISTENER: usize = 1 << 40;
/// Stop executing a client's pipeline once this much output is waiting, and resume when
/// the socket drains: a client that writes but never reads cannot grow memory unbounded.
const OUTPUT_PAUSE: usize = 16 * 1024 * 1024;

/// Rounds of [`EventLoop::resume_paused_pipelines`] in one loop turn.
const PAUSED_PIPELINE_ROUNDS: usize = 16;
const READ_CHUNK: usize = 64 * 1024;
const FAST_EXPIRE_EVERY: Duration = Duration::from_millis(2);
/// Resolution of blocking-command timeouts.
const BLOCKED_SCAN_EVERY: Duration = Duration::from_millis(10);

/// More than 10% of the volatile keys examined were already stale (Redis' threshold).
/// What a loop lends a script it runs, so that the script's Lua hook can answer the
/// loop's other clients once it is busy (past `busy-reply-threshold`): they get -BUSY,
/// or have SCRIPT KILL, FUNCTION KILL and SHUTDOWN NOSAVE carried out (Redis answers
/// them from inside the script the same way). Other loops answer their own clients.
#[derive(Default)]
struct BusyService {
    shared: Option<Arc<Shared>>,
    stats: Option<Arc<ThreadStats>>,
    conns: Vec<Option<Conn>>,
    /// Connections answered meanwhile, to flush once the script is over.
    touched: Vec<usize>,
}

thread_local! {
    static BUSY_SERVICE: std::cell::RefCell<BusyService> = std::cell::RefCell::default();
}

/// EVAL, EVALSHA, FCALL and their read-only forms: the commands that run a script.
fn names_script(args: &Args) -> bool {
    let Some(name) = args.get(0) else {
        return false;
    };
    const SCRIPTS: [&[u8]; 6] = [
        b"eval",
        b"evalsha",
        b"eval_ro",
        b"evalsha_ro",
        b"fcall",
        b"fcall_ro",
    ];
    (4..=10).contains(&name.len()) && SCRIPTS.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// Before a script runs: the loop's other connections go where the script's busy
/// service (`serve_while_busy`) can reach them.
fn lend_connections(conns: &mut Vec<Option<Conn>>) {
    BUSY_SERVICE.with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            b.conns = std::mem::take(conns);
            b.touched.clear();
        }
    });
}

/// After the script: the connections come back; `answered` gets those the busy
/// service answered, to flush (or close) as usual.
fn take_back_connections(conns: &mut Vec<Option<Conn>>, answered: &mut Vec<usize>) {
    let (lent, touched) = BUSY_SERVICE.with(|b| match b.try_borrow_mut() {
        Ok(mut b) => (std::mem::take(&mut b.conns), std::mem::take(&mut b.touched)),
        Err(_) => (Vec::new(), Vec::new()),
    });
    if lent.is_empty() {
        // Not lent (the service was in use): the table never left.
        return;
    }
    // Nothing else may fill the loop's table while it is lent.
    assert!(
        conns.is_empty(),
        "a loop's connections were replaced while lent to a script"
    );
    *conns = lent;
    answered.extend(touched);
}

/// Called by a busy script's Lua hook on its loop's thread: reads what the loop's
/// other clients sent and answers it as a busy server does (the dispatcher refuses all
/// but the commands Redis allows then). A master link, a replica and blocked clients
/// are left alone: what they send waits for the script's end.
pub fn serve_while_busy() {
    BUSY_SERVICE.with(|b| {
        let Ok(mut service) = b.try_borrow_mut() else {
            return;
        };
        let service = &mut *service;
        let (Some(shared), Some(stats)) = (service.shared.clone(), service.stats.clone()) else {
            return;
        };
        let limit = shared
            .config
            .tunables
            .client_query_buffer_limit
            .load(Ordering::Relaxed) as usize;
        let mut buf = [0u8; 16 * 1024];
        let now = carmine_keyspace::now_ms();
        for (t, slot) in service.conns.iter_mut().enumerate() {
            let Some(conn) = slot.as_mut() else { continue };
            if conn.closing
                || conn.session.master_link
                || conn.session.replica_feed
                || conn.session.blocked.is_some()
            {
                continue;
            }
            let mut got = false;
            while conn.rbuf.len() <= limit {
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        conn.closing = true;
                        got = true;
                        break;
                    }
                    Ok(n) => {
                        ThreadStats::add(&stats.net_input, n as u64);
                        conn.rbuf.extend_from_slice(&buf[..n]);
                        got = true;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        conn.closing = true;
                        got = true;
                        break;
                    }
                }
            }
            if !got && conn.rbuf.is_empty() {
                continue;
            }
            while !conn.closing && conn.session.blocked.is_none() {
                match conn.decoder.decode(&mut conn.rbuf, &mut conn.args) {
                    Ok(true) => {
                        execute_at(
                            &shared,
                            &mut conn.session,
                            &stats,
                            &conn.args,
                            &mut conn.reply,
                            now,
                        );
                        if conn.session.close_after_reply {
                            conn.closing = true;
                            // As in `process`: gone before its last reply leaves.
                            shared.clients.remove(conn.session.id());
                        }
                    }
                    Ok(false) => break,
                    Err(e) => {
                        conn.reply.error(&e.to_string());
                        conn.closing = true;
                        conn.rbuf.clear();
                    }
                }
            }
            while !conn.reply.out.is_empty() {
                match conn.stream.write(&conn.reply.out) {
                    Ok(0) => break,
                    Ok(n) => {
                        ThreadStats::add(&stats.net_output, n as u64);
                        conn.reply.out.advance(n);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            service.touched.push(t);
        }
    });
}

/// Volatile keys an active-expiry cycle examines before it may stop (when at most a
/// tenth of them were stale): Redis samples 20 keys per database per round.
const EXPIRE_QUOTA: usize = 200;

fn stale_share_high(examined: usize, removed: usize) -> bool {
    examined > 0 && removed * 10 > examined
}

/// What other threads send a loop.
pub enum LoopMsg {
    /// A connection accepted by loop 0, for this loop to own.
    Adopt(ClientStream),
    /// Encoded bytes (a pub/sub message) for one of this loop's clients.
    Deliver(u64, bytes::Bytes),
    /// A key this client is blocked on was written: retry its blocking command. With the
    /// counter of the loop whose write began the wake-up (see [`WAKE_ORIGIN`]), lowered
    /// once the retry ran.
    Ready(u64, Option<Arc<AtomicUsize>>),
    /// Shard channels this client loses: their slots are no longer served here.
    RevokeShard(u64, Vec<Vec<u8>>),
    /// CONFIG SET port: accept on these TCP sockets instead of the old ones.
    ListenTcp(Vec<Listener>),
}

/// A handle other threads use to reach a loop.
#[derive(Clone)]
pub struct LoopHandle {
    pub sender: Sender<LoopMsg>,
    pub waker: Arc<Waker>,
    /// Set while a wake-up is pending, so a fan-out of 1000 messages costs one wake-up.
    pub wake_pending: Arc<std::sync::atomic::AtomicBool>,
}

impl LoopHandle {
    /// Queues `msg` for the loop and wakes it; false if the loop is gone.
    pub fn send(&self, msg: LoopMsg) -> bool {
        if self.sender.send(msg).is_err() {
            return false;
        }
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
        true
    }
}

struct Conn {
    stream: ClientStream,
    rbuf: BytesMut,
    decoder: CommandDecoder,
    args: Args,
    reply: ReplyBuf,
    session: Session,
    /// WRITABLE interest is registered (output is pending).
    want_write: bool,
    last_active: Instant,
    /// When the output first went over the soft limit.
    soft_limit_since: Option<Instant>,
    closing: bool,
    /// The client shut its end while its pipeline was paused for woken clients: closed
    /// once the paused commands have run (see `EventLoop::serve_input`).
    input_ended: bool,
    /// Listed in the loop's `to_flush` for the before-sleep phase.
    flush_queued: bool,
    reply_size: ReplyBufferSize,
    /// Reads left before this connection's pipeline is peeked for prefetching again.
    prefetch_pause: u8,
}

/// Reads a connection skips before peeking again after a peek that found nothing to
/// prefetch (one key, no elements looked up in a hot value): redis-benchmark's LPUSH, all
/// on one key, spent 5% of its loop peeking.
pub(crate) const PREFETCH_PAUSE: u8 = 7;

pub struct EventLoop {
    id: usize,
    poll: Poll,
    shared: Arc<Shared>,
    stats: Arc<ThreadStats>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    listeners: Vec<Listener>,
    incoming: Receiver<LoopMsg>,
    me: LoopHandle,
    /// Client id -> connection slot, for deliveries.
    by_id: std::collections::HashMap<u64, usize>,
    peers: Vec<LoopHandle>,
    /// Which loop the next accepted connection goes to, shared by the accepting loops.
    next_peer: Arc<std::sync::atomic::AtomicUsize>,
    waker: Arc<Waker>,
    read_buf: Vec<u8>,
    expire_cursor: usize,
    /// The last expiry pass found many stale keys: run fast cycles between polls.
    expire_backlog: bool,
    last_fast_expire: Instant,
    /// When blocked-client deadlines are next scanned, and the nearest one seen.
    next_blocked_scan: Instant,
    nearest_blocked: Option<Instant>,
    ops_sample: (Instant, u64),
    /// Connections with replies written this turn, flushed together before the loop
    /// sleeps (Redis' beforeSleep) instead of one `write` per connection as each ran.
    to_flush: Vec<usize>,
    /// Connections whose input this turn read, to serve once every ready one was read.
    read_this_turn: Vec<ReadInput>,
    /// Connections whose pipelines stopped after a command that woke blocked clients:
    /// they continue once those clients are served (see [`EventLoop::process_at`]).
    paused_for_woken: Vec<usize>,
    /// Wake-ups this loop's writes sent that their loops have not handled yet (see
    /// [`WAKE_ORIGIN`]): its replies, and its clients' next commands, wait for them.
    wakes_pending: Arc<AtomicUsize>,
}

/// A connection whose socket a loop turn read: served after the turn's reads, so that
/// the keys all of them name start loading together (see
/// [`EventLoop::prefetch_first_keys`]).
#[derive(Debug, Clone, Copy)]
struct ReadInput {
    slot: usize,
    /// The client read, in case its slot was freed and taken again before it is served.
    client: u64,
    /// The client closed its end: served, then closed.
    eof: bool,
}

impl EventLoop {
    pub fn new(id: usize, shared: Arc<Shared>) -> io::Result<(EventLoop, LoopHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = shared.new_thread_stats();
        let handle = LoopHandle {
            sender: tx,
            waker: waker.clone(),
            wake_pending: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        Ok((
            EventLoop {
                id,
                poll,
                shared,
                stats,
                conns: Vec::new(),
                free: Vec::new(),
                listeners: Vec::new(),
                incoming: rx,
                me: handle.clone(),
                by_id: std::collections::HashMap::new(),
                peers: Vec::new(),
                next_peer: Arc::default(),
                waker,
                read_buf: vec![0; READ_CHUNK],
                expire_cursor: 0,
                expire_backlog: false,
                last_fast_expire: Instant::now(),
                next_blocked_scan: Instant::now(),
                nearest_blocked: None,
                ops_sample: (Instant::now(), 0),
                to_flush: Vec::new(),
                read_this_turn: Vec::new(),
                paused_for_woken: Vec::new(),
                wakes_pending: Arc::new(AtomicUsize::new(0)),
            },
            handle,
        ))
    }

    /// Gives this loop the listening sockets and the loops to deal connections to.
    pub fn set_listeners(
        &mut self,
        mut listeners: Vec<Listener>,
        peers: Vec<LoopHandle>,
        turn: Arc<std::sync::atomic::AtomicUsize>,
    ) -> io::Result<()> {
        for (i, l) in listeners.iter_mut().enumerate() {
            self.poll
                .registry()
                .register(l, Token(FIRST_LISTENER + i), Interest::READABLE)?;
        }
        self.listeners = listeners;
        self.peers = peers;
        self.next_peer = turn;
        Ok(())
    }

    /// Swaps the TCP listening sockets (CONFIG SET port); the Unix socket stays.
    fn replace_tcp_listeners(&mut self, fresh: Vec<Listener>) {
        let mut kept = Vec::new();
        for mut l in std::mem::take(&mut self.listeners) {
            let _ = self.poll.registry().deregister(&mut l);
            if !matches!(l, Listener::Tcp(_)) {
                kept.push(l);
            }
        }
        kept.extend(fresh);
        for (i, l) in kept.iter_mut().enumerate() {
            if let Err(e) =
                self.poll
                    .registry()
                    .register(l, Token(FIRST_LISTENER + i), Interest::READABLE)
            {
                crate::log::warning(&format!("Could not listen on a new socket: {e}"));
            }
        }
        self.listeners = kept;
    }

    pub fn run(mut self) {
        BUSY_SERVICE.with(|b| {
            let mut b = b.borrow_mut();
            b.shared = Some(self.shared.clone());
            b.stats = Some(self.stats.clone());
        });
        let _ = self.shared.busy_serve.set(serve_while_busy);
        WAKE_ORIGIN.with(|w| *w.borrow_mut() = Some(self.wakes_pending.clone()));
        let mut events = Events::with_capacity(1024);
        let mut next_cron = Instant::now();
        let mut waiting = crate::idle_poll::IdlePoll::new(self.shared.io_threads());
        loop {
            if self.shared.shutdown_requested.load(Ordering::Acquire) {
                self.close_all();
                return;
            }
            let now = carmine_commands::clock::now();
            let mut timeout = next_cron.saturating_duration_since(now);
            if self.expire_backlog {
                timeout = timeout.min(FAST_EXPIRE_EVERY);
            }
            if self.shared.blocking.any() {
                // Scanning every connection for blocked-client deadlines is O(connections):
                // do it at most every BLOCKED_SCAN_EVERY, or when a known deadline is due,
                // not on every wake-up of a busy loop.
                let now = Instant::now();
                if now >= self.next_blocked_scan || self.nearest_blocked.is_some_and(|d| d <= now) {
                    self.nearest_blocked = self.expire_blocked();
                    self.next_blocked_scan = now + BLOCKED_SCAN_EVERY;
                }
                // Wake for the nearest known deadline, and for the next scan, which finds
                // clients that blocked since this one.
                let until = self
                    .nearest_blocked
                    .map_or(self.next_blocked_scan, |d| d.min(self.next_blocked_scan));
                timeout = timeout.min(until.saturating_duration_since(Instant::now()));
            }
            self.before_sleep();
            if !self.paused_for_woken.is_empty() {
                // Pipelines left paused (here, or by a retry the before-sleep phase ran)
                // continue in the next turn, at once.
                timeout = Duration::ZERO;
            }
            let spin = Duration::from_micros(
                self.shared
                    .config
                    .tunables
                    .busy_poll_us
                    .load(Ordering::Relaxed),
            );
            if let Err(e) = waiting.poll(&mut self.poll, &mut events, timeout, spin) {
                if e.kind() != ErrorKind::Interrupted {
                    log::warning(&format!("poll failed: {e}"));
                    return;
                }
            }
            crate::persistence::prepare_heap(&self.shared);
            let mut read = std::mem::take(&mut self.read_this_turn);
            for ev in events.iter() {
                match ev.token() {
                    WAKER => self.on_wake(),
                    Token(t) if t >= FIRST_LISTENER => self.accept(t - FIRST_LISTENER),
                    Token(t) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            read.extend(self.read_input(t, ev.is_read_closed()));
                        }
                        if ev.is_writable() {
                            self.on_writable(t);
                        }
                    }
                }
            }
            self.prefetch_first_keys(&read);
            for input in read.drain(..) {
                self.serve_input(input);
            }
            self.read_this_turn = read;
            self.resume_paused_pipelines();
            crate::persistence::yield_to_snapshot(&self.shared);
            if self.expire_backlog && self.last_fast_expire.elapsed() >= FAST_EXPIRE_EVERY {
                self.fast_expire_cycle();
            }
            if carmine_commands::clock::now() >= next_cron {
                self.cron();
                let hz = self
                    .shared
                    .config
                    .tunables
                    .hz
                    .load(Ordering::Relaxed)
                    .max(1);
                next_cron = Instant::now() + Duration::from_millis(1000 / hz);
            }
        }
    }

    fn on_wake(&mut self) {
        self.me.wake_pending.store(false, Ordering::Release);
        for t in self.drain_inbox() {
            self.queue_flush(t);
        }
        // CLIENT KILL from another thread.
        for t in 0..self.conns.len() {
            if let Some(c) = self.conns[t].as_ref() {
                if c.session.info.killed.load(Ordering::Acquire) {
                    self.close(t);
                }
            }
        }
    }

    /// Handles the messages other threads sent this loop; returns the connections that
    /// got bytes to write.
    fn drain_inbox(&mut self) -> Vec<usize> {
        let mut touched = Vec::new();
        while let Ok(msg) = self.incoming.try_recv() {
            match msg {
                LoopMsg::Adopt(stream) => self.adopt(stream),
                LoopMsg::Deliver(id, bytes) => {
                    let Some(&t) = self.by_id.get(&id) else {
                        continue;
                    };
                    if let Some(c) = self.conns.get_mut(t).and_then(Option::as_mut) {
                        // Counted by the deliver hook for replicas only (the kind and
                        // `replica_feed` are set together, by PSYNC or SYNC).
                        if c.session.replica_feed {
                            let mut order = c.session.info.output_order.lock();
                            order.queued = order.queued.saturating_sub(1);
                            order.loop_holds = true;
                        }
                        c.reply.out.extend_from_slice(&bytes);
                        touched.push(t);
                    }
                }
                LoopMsg::Ready(id, origin) => {
                    if let Some(&t) = self.by_id.get(&id) {
                        // Whom the retry wakes in turn counts against the same write.
                        let own = origin
                            .clone()
                            .map(|o| WAKE_ORIGIN.with(|w| w.replace(Some(o))));
                        self.retry_blocked(t);
                        if let Some(own) = own {
                            WAKE_ORIGIN.with(|w| *w.borrow_mut() = own);
                        }
                    }
                    // Only the hook sends Ready, counting it first; saturating all the
                    // same, as a count wrapped below zero would hold the waking loop's
                    // replies for the whole wait.
                    if let Some(origin) = origin {
                        let _ = origin.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            Some(n.saturating_sub(1))
                        });
                    }
                }
                LoopMsg::ListenTcp(fresh) => self.replace_tcp_listeners(fresh),
                LoopMsg::RevokeShard(id, channels) => {
                    let Some(&t) = self.by_id.get(&id) else {
                        continue;
                    };
                    if let Some(c) = self.conns.get_mut(t).and_then(Option::as_mut) {
                        for ch in &channels {
                            carmine_commands::pubsub::revoke_shard_channel(
                                &self.shared.pubsub,
                                &mut c.session,
                                &mut c.reply,
                                ch,
                            );
                        }
                        touched.push(t);
                    }
                }
            }
        }
        touched
    }

    fn accept(&mut self, which: usize) {
        loop {
            let Some(listener) = self.listeners.get(which) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    ThreadStats::add(&self.stats.connections_received, 1);
                    if let Some(reason) = self.refuse(&peer) {
                        ThreadStats::add(&self.stats.rejected_connections, 1);
                        let mut s = stream;
                        let _ = s.write_all(reason.as_bytes());
                        continue;
                    }
                    let mut target =
                        self.next_peer.fetch_add(1, Ordering::Relaxed) % self.peers.len().max(1);
                    // A busy script keeps its loop: a new client (the one that would
                    // send SCRIPT KILL) goes to another.
                    if self.peers.len() > 1
                        && self.shared.scripts.running.busy_thread() == Some(target)
                    {
                        target = (target + 1) % self.peers.len();
                    }
                    if target == self.id || self.peers.is_empty() {
                        self.adopt(stream);
                    } else {
                        self.peers[target].send(LoopMsg::Adopt(stream));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warning(&format!("accept failed: {e}"));
                    return;
                }
            }
        }
    }

    /// The error line to send to a connection that must be refused, if any.
    fn refuse(&self, peer: &Peer) -> Option<String> {
        let t = &self.shared.config.tunables;
        if self.shared.clients.len() as u64 >= t.maxclients.load(Ordering::Relaxed) {
            return Some("-ERR max number of clients reached\r\n".into());
        }
        let default_bind = self.shared.config.get("bind").as_deref() == Some("* -::*");
        if t.protected_mode.load(Ordering::Relaxed)
            && !t.has_password.load(Ordering::Relaxed)
            && default_bind
            && matches!(peer, Peer::Tcp(addr) if !addr.ip().is_loopback())
        {
            return Some("-DENIED Carmine is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers, you may disable protected mode with CONFIG SET protected-mode no from the loopback interface, set a password, or bind to specific interfaces.\r\n".into());
        }
        None
    }

    fn adopt(&mut self, mut stream: ClientStream) {
        stream.tune(self.shared.config.get_i64("tcp-keepalive"));
        let token = match self.free.pop() {
            Some(t) => t,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(token), Interest::READABLE)
        {
            log::warning(&format!("register failed: {e}"));
            self.free.push(token);
            return;
        }
        let (addr, laddr) =
            stream.addresses(&self.shared.config.get("unixsocket").unwrap_or_default());
        let fd = stream.raw_fd();
        let id = self.shared.clients.next_id();
        let info = Arc::new(ClientInfo::new(id, addr, laddr, fd, self.id));
        info.reply_buffer[0].store(crate::reply_buffer::CHUNK_BYTES as u64, Ordering::Relaxed);
        let waker = self.waker.clone();
        *info.waker.lock() = Some(Arc::new(move || {
            let _ = waker.wake();
        }));
        let me = self.me.clone();
        let weak = Arc::downgrade(&info);
        let stats = self.stats.clone();
        *info.deliver.lock() = Some(Arc::new(move |mut bytes: bytes::Bytes| {
            // Only a replica's stream may be written directly: pub/sub pushes and the
            // like go to the loop without touching the ordering lock.
            let Some(info) = weak
                .upgrade()
                .filter(|i| i.kind.load(Ordering::Relaxed) == ClientInfo::REPLICA)
            else {
                me.send(LoopMsg::Deliver(id, bytes));
                return;
            };
            // Held while writing and while queueing, so deliveries keep their order.
            let mut order = info.output_order.lock();
            if let Some(socket) = order.direct() {
                let n = write_now(socket, &bytes);
                ThreadStats::add(&stats.net_output, n as u64);
                bytes.advance(n);
                if bytes.is_empty() {
                    return;
                }
            }
            // What the socket did not take (or anything while the loop holds bytes)
            // goes through the loop, and everything after it until the loop has it out.
            order.queued += 1;
            me.send(LoopMsg::Deliver(id, bytes));
        }));
        let me = self.me.clone();
        *info.ready.lock() = Some(Arc::new(move || {
            // Counted before it is sent, so a loop that waits for the count to drop
            // cannot miss a wake-up in flight; uncounted if the loop is gone.
            let origin = WAKE_ORIGIN.with(|w| w.borrow().clone());
            if let Some(origin) = &origin {
                origin.fetch_add(1, Ordering::AcqRel);
            }
            if me.send(LoopMsg::Ready(id, origin.clone())) {
                WOKE_BLOCKED_CLIENTS.with(|woke| woke.set(true));
            } else if let Some(origin) = origin {
                origin.fetch_sub(1, Ordering::AcqRel);
            }
        }));
        let me = self.me.clone();
        *info.revoke_shard.lock() = Some(Arc::new(move |channels| {
            me.send(LoopMsg::RevokeShard(id, channels));
        }));
        self.by_id.insert(id, token);
        self.shared.clients.add(info.clone());
        let t = &self.shared.config.tunables;
        let authenticated = !self.shared.auth_required();
        let mut decoder = CommandDecoder::new(Limits {
            max_bulk_len: t.proto_max_bulk_len.load(Ordering::Relaxed),
            ..Limits::default()
        });
        decoder.set_authenticated(authenticated);
        self.conns[token] = Some(Conn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            decoder,
            args: Args::default(),
            reply: ReplyBuf::new(false),
            session: Session::new(info, self.id, authenticated),
            want_write: false,
            last_active: Instant::now(),
            soft_limit_since: None,
            closing: false,
            input_ended: false,
            flush_queued: false,
            reply_size: ReplyBufferSize::new(Instant::now()),
            prefetch_pause: 0,
        });
    }

    /// Reads what connection `t`'s socket holds into its buffer. None if the
    /// connection is gone, or was closed for going over the query buffer limit.
    /// `peer_closed`: the event said the client shut its end down.
    fn read_input(&mut self, t: usize, peer_closed: bool) -> Option<ReadInput> {
        let conn = self.conns.get_mut(t).and_then(Option::as_mut)?;
        let limit = self
            .shared
            .config
            .tunables
            .client_query_buffer_limit
            .load(Ordering::Relaxed) as usize;
        let mut eof = false;
        loop {
            match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    ThreadStats::add(&self.stats.net_input, n as u64);
                    ThreadStats::add(&self.stats.reads, 1);
                    conn.rbuf.extend_from_slice(&self.read_buf[..n]);
                    if conn.rbuf.len() > limit {
                        log::warning("Closing client that reached max query buffer length");
                        self.close(t);
                        return None;
                    }
                    if n < self.read_buf.len() && !peer_closed {
                        // A short read took everything the socket held; data arriving
                        // later raises a new edge, so no extra read() to see WouldBlock.
                        // Not so the end of input when it came with the data: the one
                        // edge reported both, so read on to see it (a client that
                        // wrote its commands and shut its end waits for our close).
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        Some(ReadInput {
            slot: t,
            client: conn.session.id(),
            eof,
        })
    }

    /// Starts loading the entries of the first keys that this turn's connections name
    /// (see `Keyspace::prefetch`), before the first of them runs: at -P 1 each
    /// connection holds one command, which its own pipeline prefetch skips (one lookup
    /// gains nothing from a prefetch just before it), while across the turn's
    /// connections the lookups' cache misses can overlap, as Valkey 8 batches its
    /// clients' lookups. Connections in another database than the first one's wait for
    /// their own lookups, and pipelining ones prefetch their own.
    fn prefetch_first_keys(&self, read: &[ReadInput]) {
        if read.len() < 2 {
            return;
        }
        let mut keys: [&[u8]; PREFETCH_MAX] = [&[]; PREFETCH_MAX];
        let mut n = 0;
        let mut db = None;
        for input in read {
            if n == PREFETCH_MAX {
                break;
            }
            let Some(conn) = self.conns.get(input.slot).and_then(Option::as_ref) else {
                continue;
            };
            // A connection not pausing its pipeline prefetch starts its own keys loading
            // when it runs, its first one included.
            if conn.prefetch_pause == 0
                || conn.decoder.in_progress()
                || *db.get_or_insert(conn.session.db) != conn.session.db
            {
                continue;
            }
            carmine_resp::peek_first_keys(&conn.rbuf, 1, |key, _| {
                keys[n] = key;
                n += 1;
            });
        }
        if let (Some(db), true) = (db, n >= 2) {
            self.shared.keyspace.prefetch(db, &keys[..n], &[]);
        }
    }

    /// Runs what [`EventLoop::read_input`] read for a connection, and closes it once
    /// its replies are written if its client closed its end.
    fn serve_input(&mut self, input: ReadInput) {
        // A command this turn woke blocked clients: they are served before this
        // connection's commands run, as Redis serves them before its next command.
        if WOKE_BLOCKED_CLIENTS.with(std::cell::Cell::get) {
            self.serve_woken_clients();
        }
        let t = input.slot;
        let Some(conn) = self
            .conns
            .get_mut(t)
            .and_then(Option::as_mut)
            .filter(|c| c.session.id() == input.client)
        else {
            return;
        };
        // One reading for the connection: the client's last activity, and the start of
        // the commands it sent (three readings before, 2% of a loop serving EVALSHA at
        // -P 1), from the counter clock commands are timed with.
        let arrived = carmine_commands::clock::now();
        conn.last_active = arrived;
        conn.session.info.touch_at(arrived);
        self.process_at(t, arrived);
        if input.eof {
            // Closed once its replies have left, as a client that wrote its commands and
            // shut its end down reads them until the server closes (Redis writes them
            // in the turn before it reads the end of input). A client gone altogether
            // fails the write, which closes it too.
            // A pipeline paused for woken clients runs its rest first.
            let paused = self.paused_for_woken.contains(&t);
            if let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) {
                if paused {
                    conn.input_ended = true;
                } else {
                    conn.closing = true;
                }
            }
            self.queue_flush(t);
        }
    }

    /// Executes every complete command buffered for connection `t`, then writes.
    fn process(&mut self, t: usize) {
        self.process_at(t, carmine_commands::clock::now());
    }

    /// [`EventLoop::process`] with the first command starting at `at`, a reading just
    /// taken.
    fn process_at(&mut self, t: usize, at: Instant) {
        // Taken out of its slot while its commands run, so that a script's busy
        // service can hold the loop's other connections meanwhile.
        let Some(mut conn) = self.conns.get_mut(t).and_then(Option::take) else {
            return;
        };
        let shared = &*self.shared;
        let now = carmine_commands::wall_ms_at(at);
        let mut answered_while_busy = Vec::new();
        if conn.prefetch_pause > 0 {
            conn.prefetch_pause -= 1;
        } else if !conn.decoder.in_progress()
            && !prefetch_pipeline(&shared.keyspace, conn.session.db, &conn.rbuf)
        {
            conn.prefetch_pause = PREFETCH_PAUSE;
        }
        let mut clock = CommandClock::starting_at(at);
        while !conn.closing && conn.reply.len() < OUTPUT_PAUSE && conn.session.blocked.is_none() {
            match conn.decoder.decode(&mut conn.rbuf, &mut conn.args) {
                Ok(true) => {
                    let script = names_script(&conn.args);
                    if script {
                        lend_connections(&mut self.conns);
                    }
                    execute_timed(
                        shared,
                        &mut conn.session,
                        &self.stats,
                        &conn.args,
                        &mut conn.reply,
                        now,
                        &mut clock,
                    );
                    if script {
                        take_back_connections(&mut self.conns, &mut answered_while_busy);
                    }
                    conn.decoder.set_authenticated(conn.session.authenticated);
                    if conn.session.close_after_reply {
                        conn.closing = true;
                        // Gone for everyone else from now on, before its last reply
                        // leaves: a client that reads QUIT's +OK and then writes on
                        // another loop finds no such client (a tracking redirect to
                        // it is broken), as with Redis, which frees the client before
                        // it reads anyone's next command.
                        self.shared.clients.remove(conn.session.id());
                    }
                    // Redis serves the clients a command unblocked before it runs the
                    // next command (`RPUSH q x` then `LLEN q` reads 0 when a BLPOP
                    // waited on q): the rest of this pipeline waits for them.
                    if !conn.closing
                        && !conn.rbuf.is_empty()
                        && WOKE_BLOCKED_CLIENTS.with(std::cell::Cell::get)
                    {
                        if !self.paused_for_woken.contains(&t) {
                            self.paused_for_woken.push(t);
                        }
                        break;
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    conn.reply.error(&e.to_string());
                    self.shared
                        .errorstats
                        .record(&self.stats, &mut conn.reply.error_codes);
                    log::verbose(&format!(
                        "Protocol error ({e}) from client: {}",
                        conn.session.info.addr
                    ));
                    conn.closing = true;
                    conn.rbuf.clear();
                }
            }
        }
        conn.session
            .info
            .qbuf
            .store(conn.rbuf.len() as u64, Ordering::Relaxed);
        if conn.session.replica_feed {
            let mut closer = conn.session.info.closer.lock();
            if closer.is_none() {
                if let Ok(sock) = conn.stream.shutdown_handle() {
                    *closer = Some(Arc::new(move || {
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                    }));
                }
            }
        }
        if let Some(slot) = self.conns.get_mut(t) {
            *slot = Some(conn);
        }
        self.queue_flush(t);
        for other in answered_while_busy {
            self.queue_flush(other);
        }
    }

    /// Continues the pipelines that stopped behind a command that woke blocked clients,
    /// once those clients are served (here, or by their own loops within
    /// `serve_woken_clients`' bound). A pipeline that wakes more stops again; after a
    /// few rounds the rest waits for the next turn, which polls without sleeping.
    fn resume_paused_pipelines(&mut self) {
        for _ in 0..PAUSED_PIPELINE_ROUNDS {
            if self.paused_for_woken.is_empty() {
                return;
            }
            for t in std::mem::take(&mut self.paused_for_woken) {
                // Whatever the previous one woke is served before this one goes on.
                self.serve_woken_clients();
                self.process(t);
                if !self.paused_for_woken.contains(&t) {
                    if let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) {
                        if std::mem::take(&mut conn.input_ended) {
                            conn.closing = true;
                            self.queue_flush(t);
                        }
                    }
                }
            }
        }
    }

    /// Marks connection `t`'s output for the before-sleep flush.
    fn queue_flush(&mut self, t: usize) {
        if let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) {
            if !conn.flush_queued {
                conn.flush_queued = true;
                self.to_flush.push(t);
            }
        }
    }

    /// The before-sleep phase: writes every reply of this loop turn. A pipelining client
    /// is woken once per turn, with all its replies waiting, rather than once per batch;
    /// its wake-up (an inter-processor interrupt) was a quarter of a loop's time.
    fn before_sleep(&mut self) {
        self.serve_woken_clients();
        // First the AOF: no reply to a write leaves before the file holds it.
        crate::aof::AppendOnly::flush_for_this_thread(&self.shared, !self.to_flush.is_empty());
        // First the replicas' share of this turn's writes (queued to their loops). A
        // replica served by this loop gets its bytes into the kernel before any reply
        // to the writes does, as in Redis, so a master killed (not a machine lost)
        // after a reply has still sent that write towards the replica. A replica on
        // another loop is written by that loop a moment later.
        // (A blocked client served while the inbox is read may write again: a few
        // rounds, bounded.) What the inbox brought is written after the AOF holds those
        // writes too, replicas' connections first.
        let mut touched = Vec::new();
        for _ in 0..4 {
            if !crate::replication::ReplicationStream::flush_feeds(&self.shared) {
                break;
            }
            touched.extend(self.drain_inbox());
        }
        if !touched.is_empty() {
            crate::aof::AppendOnly::flush_for_this_thread(&self.shared, true);
            for t in touched {
                self.flush(t);
            }
        }
        let mut queued = std::mem::take(&mut self.to_flush);
        for &t in &queued {
            if let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) {
                conn.flush_queued = false;
            }
            self.flush(t);
        }
        queued.clear();
        if self.to_flush.is_empty() {
            // Keep the allocation for the next turn.
            self.to_flush = queued;
        }
    }

    /// Before any reply of this turn leaves: the blocked clients that writes woke are
    /// served first, as Redis serves them inside the write's own call, so a client that
    /// reads right after its RPUSH sees what the woken BRPOPLPUSH did with the element
    /// (Redis' "Circular BRPOPLPUSH": two of them passing it back and forth, on other
    /// loops, read empty lists half the time). This loop serves its own woken clients
    /// here and waits for the other loops to serve theirs, which they do when they
    /// handle their messages (as this loop does while it waits, so two waiting loops
    /// serve each other). The wait is bounded: a loop busy elsewhere may let these
    /// replies go first.
    fn serve_woken_clients(&mut self) {
        // Only a loop whose commands woke someone this turn waits; the others' replies
        // owe nothing to those clients.
        if !WOKE_BLOCKED_CLIENTS.with(|woke| woke.replace(false)) {
            return;
        }
        let pending = self.wakes_pending.clone();
        let deadline = Instant::now() + WOKEN_CLIENTS_WAIT;
        loop {
            for t in self.drain_inbox() {
                self.queue_flush(t);
            }
            if pending.load(Ordering::Acquire) == 0 || Instant::now() >= deadline {
                // What this loop's own retries woke is waited for by the same rule.
                WOKE_BLOCKED_CLIENTS.with(|woke| woke.set(false));
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Runs a blocked client's command again; once served, continues its pipeline.
    fn retry_blocked(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        let Some(state) = conn.session.blocked.clone() else {
            return;
        };
        // CLIENT UNBLOCK: end the block as a timeout would, or with an error.
        match conn.session.info.unblock_request.swap(0, Ordering::AcqRel) {
            ClientInfo::UNBLOCK_TIMEOUT => return self.time_out_blocked(t),
            ClientInfo::UNBLOCK_ERROR => {
                carmine_commands::blocking::unblock(&self.shared, &mut conn.session);
                conn.reply
                    .error("UNBLOCKED client unblocked via CLIENT UNBLOCK");
                self.process(t);
                return;
            }
            _ => {}
        }
        let now = carmine_keyspace::now_ms();
        execute_at(
            &self.shared,
            &mut conn.session,
            &self.stats,
            &state.args,
            &mut conn.reply,
            now,
        );
        if conn.session.blocked.is_none() {
            self.process(t);
        }
    }

    /// Times out blocked clients whose deadline passed; returns the nearest deadline left.
    fn expire_blocked(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut nearest: Option<Instant> = None;
        let mut due = Vec::new();
        for (t, c) in self.conns.iter().enumerate() {
            let Some(deadline) = c
                .as_ref()
                .and_then(|c| c.session.blocked.as_ref())
                .and_then(|b| b.deadline)
            else {
                continue;
            };
            if deadline <= now {
                due.push(t);
            } else {
                nearest = Some(nearest.map_or(deadline, |n| n.min(deadline)));
            }
        }
        for t in due {
            self.time_out_blocked(t);
        }
        nearest
    }

    /// Ends a client's block as its timeout does: the timeout reply, then its pipeline.
    fn time_out_blocked(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        let state = conn.session.blocked.as_ref();
        let null_array = state.is_some_and(|b| b.timeout_null_array);
        let rerun = state.filter(|b| b.rerun_on_timeout).map(|b| b.args.clone());
        carmine_commands::blocking::unblock(&self.shared, &mut conn.session);
        if let Some(args) = rerun {
            conn.session.block_timed_out = true;
            execute_at(
                &self.shared,
                &mut conn.session,
                &self.stats,
                &args,
                &mut conn.reply,
                carmine_keyspace::now_ms(),
            );
            conn.session.block_timed_out = false;
        } else if null_array {
            conn.reply.null_array();
        } else {
            conn.reply.null();
        }
        self.process(t);
    }

    fn on_writable(&mut self, t: usize) {
        // Replies of this turn may be among what goes out now, before the before-sleep
        // phase: the AOF must hold their writes first (Redis' fsync-always barrier).
        crate::aof::AppendOnly::flush_for_this_thread(&self.shared, true);
        self.flush(t);
        // Output drained below the pause mark: continue with buffered commands.
        let resume = self
            .conns
            .get(t)
            .and_then(Option::as_ref)
            .is_some_and(|c| !c.closing && c.reply.len() < OUTPUT_PAUSE && !c.rbuf.is_empty());
        if resume {
            self.process(t);
        }
    }

    /// Writes as much pending output as the socket takes; closes the connection when
    /// it was marked closing and is drained, or when it broke an output buffer limit.
    fn flush(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        conn.reply_size.note_pending(conn.reply.out.len());
        while !conn.reply.out.is_empty() {
            match conn.stream.write(&conn.reply.out) {
                Ok(0) => break,
                Ok(n) => {
                    ThreadStats::add(&self.stats.net_output, n as u64);
                    ThreadStats::add(&self.stats.writes, 1);
                    conn.reply.out.advance(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(t);
                    return;
                }
            }
        }
        let pending = conn.reply.out.len();
        conn.session
            .info
            .omem
            .store(pending as u64, Ordering::Relaxed);
        // A replica's stream may be written by the loops that ran its writes once this
        // loop holds nothing more for it (its own replies are never sent: see
        // `execute_timed`).
        if conn.session.replica_feed && !conn.closing {
            let mut order = conn.session.info.output_order.lock();
            order.loop_holds = pending > 0;
            if order.socket.is_none() {
                if let Ok(dup) = conn.stream.shutdown_handle() {
                    order.socket = Some(Box::new(dup));
                }
            }
        }
        if pending == 0 {
            if conn.closing {
                self.close(t);
                return;
            }
            // Give back a large buffer once drained (after a big reply).
            if conn.reply.out.capacity() > 1024 * 1024 {
                conn.reply.out = BytesMut::with_capacity(16 * 1024);
            }
        }
        if self.over_output_limit(t) {
            log::warning("Client closed for overcoming of output buffer limits.");
            self.close(t);
            return;
        }
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return;
        };
        let want = pending > 0;
        if want != conn.want_write {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ = self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(t), interest);
            conn.want_write = want;
        }
    }

    fn over_output_limit(&mut self, t: usize) -> bool {
        let Some(conn) = self.conns.get_mut(t).and_then(Option::as_mut) else {
            return false;
        };
        // Replicas are the replica class, subscribers the pubsub class, everyone else
        // normal.
        let class = if conn.session.replica_feed {
            1
        } else if conn.session.subscriptions() > 0 {
            2
        } else {
            0
        };
        let limit = self.shared.config.tunables.obuf.read()[class];
        let used = conn.reply.out.len() as u64;
        // A replica's hard limit is at least repl-backlog-size, as in Redis: a lower
        // one would let a partial resync succeed and then cut the replica.
        let hard = if class == 1 && limit.hard > 0 {
            limit
                .hard
                .max(self.shared.config.get_i64("repl-backlog-size").max(0) as u64)
        } else {
            limit.hard
        };
        if hard > 0 && used >= hard {
            return true;
        }
        if limit.soft > 0 && used >= limit.soft {
            let since = *conn.soft_limit_since.get_or_insert_with(Instant::now);
            return since.elapsed().as_secs() >= limit.soft_secs;
        }
        conn.soft_limit_since = None;
        false
    }

    fn close(&mut self, t: usize) {
        let Some(mut conn) = self.conns.get_mut(t).and_then(Option::take) else {
            return;
        };
        // No thread writes to the descriptor from here on (one writing now finishes
        // first): it is closed below and its number may be reused.
        conn.session.info.output_order.lock().socket = None;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        conn.session.unwatch_all(&self.shared.keyspace);
        carmine_commands::pubsub::drop_client(&self.shared.pubsub, &mut conn.session);
        self.shared.tracking.disable(&conn.session.info);
        carmine_commands::blocking::unblock(&self.shared, &mut conn.session);
        *conn.session.info.ready.lock() = None;
        *conn.session.info.deliver.lock() = None;
        *conn.session.info.revoke_shard.lock() = None;
        *conn.session.info.closer.lock() = None;
        // Whoever else holds this client's info (a full sync's transfer waiting for the
        // replica to drain its output) sees it gone.
        conn.session.info.killed.store(true, Ordering::Release);
        self.by_id.remove(&conn.session.id());
        self.shared.clients.remove(conn.session.id());
        self.free.push(t);
    }

    fn close_all(&mut self) {
        crate::aof::AppendOnly::flush_for_this_thread(&self.shared, true);
        for t in 0..self.conns.len() {
            self.flush(t);
            self.close(t);
        }
    }

    /// Redis' reply buffer resizing for every connection (see `reply_buffer`); a drained
    /// buffer larger than its size is given back.
    fn resize_reply_buffers(&mut self) {
        let settings = &self.shared.clients.reply_buffers;
        let now = Instant::now();
        for c in self.conns.iter_mut().flatten() {
            let pending = c.reply.out.len();
            c.reply_size.resize(settings, pending, now);
            if pending == 0 && c.reply.out.capacity() > c.reply_size.size {
                c.reply.out = BytesMut::with_capacity(c.reply_size.size);
            }
            let shown = &c.session.info.reply_buffer;
            shown[0].store(c.reply_size.size as u64, Ordering::Relaxed);
            shown[1].store(c.reply_size.peak as u64, Ordering::Relaxed);
        }
    }

    fn cron(&mut self) {
        if self.shared.cron_paused.load(Ordering::Relaxed) {
            return;
        }
        let timeout = self
            .shared
            .config
            .tunables
            .timeout_secs
            .load(Ordering::Relaxed);
        let mut doomed = Vec::new();
        for (t, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            let idle = timeout > 0
                && c.last_active.elapsed().as_secs() > timeout
                && c.session.multi.is_none()
                && !c.session.replica_feed;
            if idle || c.session.info.killed.load(Ordering::Acquire) {
                doomed.push(t);
            }
        }
        for t in doomed {
            self.close(t);
        }
        self.resize_reply_buffers();
        for t in 0..self.conns.len() {
            if self.conns[t]
                .as_ref()
                .is_some_and(|c| c.soft_limit_since.is_some())
                && self.over_output_limit(t)
            {
                self.close(t);
            }
        }
        if self.id == 0 {
            self.cron_global();
        }
    }

    /// Redis' fast expire cycle: while the slow cycle keeps finding more than 10% of the
    /// volatile keys it examines already stale, spend up to 1 ms every 2 ms between polls
    /// reclaiming them, so memory held by dead keys does not wait for the next cron.
    fn fast_expire_cycle(&mut self) {
        self.last_fast_expire = Instant::now();
        if !self.shared.active_expire.load(Ordering::Relaxed) {
            self.expire_backlog = false;
            return;
        }
        let sh = &self.shared;
        // Not while the world is stopped (see cron_global).
        let Some(_turn) = sh.barrier.try_shared(self.id) else {
            return;
        };
        let (examined, removed) = sh.keyspace.active_expire(
            &mut self.expire_cursor,
            Duration::from_millis(1),
            EXPIRE_QUOTA,
            |db, key| {
                if let Some(p) = sh.propagating() {
                    p.append(&[carmine_commands::propagate::del_op(db, key)], false);
                }
            },
        );
        self.expire_backlog = stale_share_high(examined, removed);
    }

    /// Work done once per server, on loop 0: active expiry, the ops/sec sample, and
    /// save points (`save <seconds> <changes>`, BGSAVE SCHEDULE).
    fn cron_global(&mut self) {
        let sh = &self.shared;
        // A busy script holds the world: the periodic work that needs it waits for its
        // end, and this loop answers its clients meanwhile.
        if sh.scripts.running.busy() {
            return;
        }
        crate::persistence::tick(sh);
        crate::aof::AppendOnly::cron(sh);
        sh.migrate_cache.expire_idle();
        sh.pause.tick(sh);
        crate::replication::ReplicationStream::cron(sh);
        if sh.tracking.active() {
            let max = sh.config.get_i64("tracking-table-max-keys").max(0) as usize;
            sh.tracking.limit(sh, max);
        }
        // Not while the world is stopped: a script or a transaction sees no key
        // expire under it.
        let turn = sh.barrier.try_shared(self.id);
        if sh.active_expire.load(Ordering::Relaxed) && turn.is_some() {
            let hz = sh.config.tunables.hz.load(Ordering::Relaxed).max(1);
            // Redis' slow cycle may use 25% of each cron period.
            let budget = Duration::from_micros(250_000 / hz);
            // Each removal reaches the stream under its table's lock, as a DEL.
            let cycle = Instant::now();
            let (examined, removed) = sh.keyspace.active_expire(
                &mut self.expire_cursor,
                budget,
                EXPIRE_QUOTA,
                |db, key| {
                    if let Some(p) = sh.propagating() {
                        p.append(&[carmine_commands::propagate::del_op(db, key)], false);
                    }
                },
            );
            self.expire_backlog = stale_share_high(examined, removed);
            let ms = cycle.elapsed().as_millis() as u64;
            sh.latency.observe(sh, "expire-cycle", ms);
        }
        drop(turn);
        let total = sh.sum(|t| t.total_commands.load(Ordering::Relaxed));
        let (at, prev) = self.ops_sample;
        let secs = at.elapsed().as_secs_f64();
        if secs >= 1.0 {
            sh.ops_per_sec.store(
                ((total.saturating_sub(prev)) as f64 / secs) as u64,
                Ordering::Relaxed,
            );
            self.ops_sample = (Instant::now(), total);
        }
        // Without an allocator figure, re-estimate about once a second (a keyspace walk).
        if sh.used_memory.is_none() && self.ops_sample.0.elapsed().as_millis() < 150 {
            sh.refresh_memory_estimate();
        }
        sh.used_memory();
    }
}

thread_local! {
    /// This thread sent a blocked client a wake-up since its loop's last before-sleep
    /// phase (the `ready` hooks run on the thread of the write that serves the key).
    static WOKE_BLOCKED_CLIENTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The counter a wake-up sent from this thread is counted on: the loop's own
    /// (`EventLoop::wakes_pending`), or while a woken client's retry runs, that of the
    /// loop whose write woke it, so a chain of wake-ups (a BRPOPLPUSH served by a push,
    /// whose own push wakes another client) counts against the write that began it. A
    /// loop waits for its own counter only: wake-ups other loops sent, however many,
    /// never hold its replies. None on threads that are no event loop (the master
    /// link): nobody waits for their wake-ups.
    static WAKE_ORIGIN: std::cell::RefCell<Option<Arc<AtomicUsize>>> =
        const { std::cell::RefCell::new(None) };
}

/// The longest a loop holds a turn's replies for blocked clients that other loops were
/// asked to serve (see `EventLoop::serve_woken_clients`). Waiting loops serve each
/// other's wake-ups, so this bounds only the wait for a loop busy in a long command; 2 ms
/// was too short for a loop merely descheduled on a loaded machine (CI's debug build
/// answered an RPUSH before the BRPOPLPUSH it woke on the other loop had run).
const WOKEN_CLIENTS_WAIT: Duration = Duration::from_millis(10);

/// Writes as much of `bytes` as the (non-blocking) socket takes now; returns how much.
/// An error leaves the rest to the owning loop, which meets the error itself.
fn write_now(socket: &mut (dyn Write + Send + 'static), bytes: &[u8]) -> usize {
    let mut done = 0;
    while done < bytes.len() {
        match socket.write(&bytes[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    done
}

/// Starts loading what the complete commands waiting in `buf` will look up (see
/// `Keyspace::prefetch`), as Valkey 8 batches its dictionary prefetches. The key is each
/// command's first key as `carmine_resp::first_key` guesses it. A key that
/// repeats the one before it is already on its way, and a batch of fewer than two
/// distinct keys gains nothing (the lookups would wait for the same lines at once):
/// throughput.sh's LPUSH and HSET, all on one key, lost 7-9% to prefetching every
/// command's key. False when there was nothing to prefetch.
pub(crate) fn prefetch_pipeline(
    keyspace: &carmine_keyspace::Keyspace,
    db: usize,
    buf: &[u8],
) -> bool {
    let mut keys: [&[u8]; PREFETCH_MAX] = [&[]; PREFETCH_MAX];
    let mut n = 0;
    let mut elements: [(usize, &[u8]); PREFETCH_MAX] = [(0, &[]); PREFETCH_MAX];
    let mut m = 0;
    carmine_resp::peek_first_keys(buf, PREFETCH_MAX, |key, element| {
        if n == 0 || keys[n - 1] != key {
            keys[n] = key;
            n += 1;
        }
        if let Some(element) = element {
            elements[m] = (n - 1, element);
            m += 1;
        }
    });
    // Elements are prefetched for a key that several commands in a row look inside (a
    // hot hash or set): finding out whether a key's value is big enough to gain reads
    // its entry, which for a run of different small hashes cost more than it saved.
    let named = elements;
    let named = &named[..m];
    let mut kept = 0;
    for (i, &(key, element)) in named.iter().enumerate() {
        let repeated =
            (i > 0 && named[i - 1].0 == key) || named.get(i + 1).is_some_and(|next| next.0 == key);
        if repeated {
            elements[kept] = (key, element);
            kept += 1;
        }
    }
    // One lookup gains nothing from a prefetch just before it.
    let worth_it = n >= 2 || kept >= 2;
    if worth_it {
        keyspace.prefetch(db, &keys[..n], &elements[..kept]);
    }
    worth_it
}
