//! The sentinel's control thread: its outgoing connections (non-blocking, on a
//! `mio::Poll` of its own), the timer, and the execution of the machine's actions.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use carmine_commands::propagate::{encode_command, Argv};
use carmine_commands::pubsub::Kind;
use carmine_commands::Shared;
use carmine_resp::{Frame, FrameDecoder, Limits};
use carmine_sentinel::{Action, ConnId, Event, Level, Reply};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{now_ms, SentinelHost};
use crate::log;

const WAKER: Token = Token(usize::MAX);
/// A peer that stops reading gets its connection closed past this much unsent output.
const MAX_OUTPUT: usize = 16 << 20;
/// What a peer may send that does not yet decode to a reply (INFO replies are a few
/// KiB): past it the connection is closed, so a flooding peer cannot grow memory or
/// keep the read loop going.
const MAX_INPUT: usize = 16 << 20;

struct Conn {
    stream: TcpStream,
    connected: bool,
    out: Vec<u8>,
    inbuf: BytesMut,
}

pub fn spawn(shared: Arc<Shared>, host: Arc<SentinelHost>) -> io::Result<()> {
    let poll = Poll::new()?;
    let waker = mio::Waker::new(poll.registry(), WAKER)?;
    let _ = host.waker.set(waker);
    std::thread::Builder::new()
        .name("carmine-sentinel".into())
        .spawn(move || {
            crate::crash::stop_on_panic("Sentinel", move || Driver::new(shared, host, poll).run());
        })?;
    Ok(())
}

struct Driver {
    shared: Arc<Shared>,
    host: Arc<SentinelHost>,
    poll: Poll,
    conns: HashMap<ConnId, Conn>,
    decoder: FrameDecoder,
}

fn to_reply(f: Frame) -> Reply {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match f {
        Frame::Simple(b) => Reply::Status(text(&b)),
        Frame::Error(b) | Frame::BulkError(b) => Reply::Error(text(&b)),
        Frame::Integer(n) => Reply::Int(n),
        Frame::Bulk(b) | Frame::Verbatim(_, b) | Frame::BigNumber(b) => Reply::Bulk(b.to_vec()),
        Frame::NullBulk | Frame::Null => Reply::Nil,
        Frame::NullArray => Reply::NilArray,
        Frame::Boolean(b) => Reply::Int(i64::from(b)),
        Frame::Double(d) => Reply::Bulk(d.to_string().into_bytes()),
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => {
            Reply::Array(v.into_iter().map(to_reply).collect())
        }
        Frame::Map(v) | Frame::Attribute(v) => Reply::Map(
            v.into_iter()
                .map(|(k, v)| (to_reply(k), to_reply(v)))
                .collect(),
        ),
    }
}

impl Driver {
    fn new(shared: Arc<Shared>, host: Arc<SentinelHost>, poll: Poll) -> Driver {
        Driver {
            shared,
            host,
            poll,
            conns: HashMap::new(),
            decoder: FrameDecoder::new(Limits::default()),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_tick = Instant::now();
        while !self.shared.shutdown_requested.load(Ordering::Acquire) {
            let wait = next_tick.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::warning(&format!("Sentinel poll failed: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let mut inputs = Vec::new();
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.on_io(ev.token().0 as ConnId, &mut inputs);
                }
            }
            let mut actions = std::mem::take(&mut *self.host.pending.lock());
            if !inputs.is_empty() {
                let mut m = self.host.machine.lock();
                let now = now_ms();
                for e in inputs {
                    actions.extend(m.handle(now, e));
                }
            }
            if Instant::now() >= next_tick {
                actions.extend(self.host.machine.lock().tick(now_ms()));
                // Redis varies its timer between 10 and 19 Hz so that sentinels started
                // together do not keep asking for votes at the same instant.
                next_tick = Instant::now() + Duration::from_millis(1000 / fastrand::u64(10..20));
                let times = {
                    let m = self.host.machine.lock();
                    super::scripts::ScriptTimes {
                        max_runtime: Duration::from_millis(m.script_max_runtime()),
                        retry_delay: Duration::from_millis(m.script_retry_delay()),
                    }
                };
                self.host.scripts.lock().run(times);
            }
            self.execute(actions);
        }
        for (_, mut c) in self.conns.drain() {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Performs actions; what they cause at once (a refused connection) is fed back.
    fn execute(&mut self, mut actions: Vec<Action>) {
        let mut rounds = 0;
        while !actions.is_empty() && rounds < 16 {
            rounds += 1;
            let mut feedback = Vec::new();
            let mut flush = false;
            for a in actions.drain(..) {
                match a {
                    Action::Connect { conn, host, port } => {
                        if let Err(e) = self.connect(conn, &host, port) {
                            feedback.push(Event::Closed {
                                conn,
                                reason: e.to_string(),
                            });
                        }
                    }
                    Action::Send { conn, argv } => {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            encode_command(&Argv::Owned(argv), &mut c.out);
                            if c.out.len() > MAX_OUTPUT {
                                self.drop_conn(conn);
                                feedback.push(Event::Closed {
                                    conn,
                                    reason: "output buffer limit reached".into(),
                                });
                            } else if c.connected {
                                self.flush_out(conn, &mut feedback);
                            }
                        }
                    }
                    Action::Close { conn } => self.drop_conn(conn),
                    Action::Event {
                        level,
                        channel,
                        message,
                    } => self.event(level, &channel, &message),
                    Action::RunScript { path, args } => {
                        self.host.scripts.lock().schedule(path, args)
                    }
                    Action::FlushConfig => flush = true,
                    Action::Crash => {
                        log::warning("Sentinel CRASH because of SENTINEL simulate-failure");
                        std::process::exit(99);
                    }
                }
            }
            let mut m = self.host.machine.lock();
            if flush {
                let _ = self.host.flush_config(&m);
            }
            let now = now_ms();
            for e in feedback {
                actions.extend(m.handle(now, e));
            }
        }
    }

    fn event(&self, level: Level, channel: &str, message: &str) {
        let text = format!("{channel} {message}");
        match level {
            Level::Debug => log::log(log::Level::Debug, &text),
            Level::Verbose => log::verbose(&text),
            Level::Notice => log::notice(&text),
            Level::Warning => log::warning(&text),
        }
        if level != Level::Debug {
            self.shared
                .pubsub
                .publish(Kind::Channel, channel.as_bytes(), message.as_bytes());
        }
    }

    fn connect(&mut self, conn: ConnId, host: &str, port: u16) -> io::Result<()> {
        let addr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("can't resolve the address"))?;
        let mut stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        self.poll.registry().register(
            &mut stream,
            Token(conn as usize),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.conns.insert(
            conn,
            Conn {
                stream,
                connected: false,
                out: Vec::new(),
                inbuf: BytesMut::new(),
            },
        );
        Ok(())
    }

    fn drop_conn(&mut self, conn: ConnId) {
        if let Some(mut c) = self.conns.remove(&conn) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    fn close_with(&mut self, conn: ConnId, reason: String, inputs: &mut Vec<Event>) {
        self.drop_conn(conn);
        inputs.push(Event::Closed { conn, reason });
    }

    fn flush_out(&mut self, conn: ConnId, inputs: &mut Vec<Event>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => return self.close_with(conn, "connection closed".into(), inputs),
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.close_with(conn, e.to_string(), inputs),
            }
        }
    }

    fn on_io(&mut self, conn: ConnId, inputs: &mut Vec<Event>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.connected {
            if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                return self.close_with(conn, e.to_string(), inputs);
            }
            match c.stream.peer_addr() {
                Ok(_) => {
                    c.connected = true;
                    let local_ip = c
                        .stream
                        .local_addr()
                        .map(|a| a.ip().to_string())
                        .unwrap_or_default();
                    inputs.push(Event::Connected { conn, local_ip });
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.close_with(conn, e.to_string(), inputs),
            }
        }
        self.flush_out(conn, inputs);
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            match c.stream.read(&mut buf) {
                Ok(0) => return self.close_with(conn, "connection closed by peer".into(), inputs),
                Ok(n) => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    if c.inbuf.len() > MAX_INPUT {
                        return self.close_with(conn, "input buffer limit reached".into(), inputs);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.close_with(conn, e.to_string(), inputs),
            }
        }
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            match self.decoder.decode(&mut c.inbuf) {
                Ok(Some(f)) => inputs.push(Event::Reply {
                    conn,
                    reply: to_reply(f),
                }),
                Ok(None) => break,
                Err(e) => return self.close_with(conn, format!("protocol error: {e}"), inputs),
            }
        }
    }
}
