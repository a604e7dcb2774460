//! The cluster bus control thread: the bus listener, one non-blocking connection per
//! link on a `mio::Poll` of its own, the 10 Hz timer, and the machine's actions.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carmine_commands::Shared;
use carmine_gossip::{Action, LinkId};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::{now_ms, ClusterHost};
use crate::log;
use crate::replication::ReplicationStream;

const WAKER: Token = Token(usize::MAX);
/// Listener tokens count down from here; link tokens are link ids (small numbers).
const LISTENER_BASE: usize = usize::MAX - 1;
/// A peer that stops reading loses its link past this much unsent output (Redis'
/// `cluster-link-sendbuf-limit` is 0, unlimited, by default; some bound is needed).
const MAX_OUTPUT: usize = 64 << 20;
/// Bytes read from one link before the others get their turn.
const READ_BUDGET: usize = 1 << 20;

struct Conn {
    stream: TcpStream,
    connected: bool,
    out: Vec<u8>,
}

pub fn spawn(
    shared: Arc<Shared>,
    host: Arc<ClusterHost>,
    listeners: Vec<TcpListener>,
) -> io::Result<()> {
    let poll = Poll::new()?;
    let waker = mio::Waker::new(poll.registry(), WAKER)?;
    let _ = host.waker.set(waker);
    let mut listeners = listeners;
    for (i, l) in listeners.iter_mut().enumerate() {
        poll.registry()
            .register(l, Token(LISTENER_BASE - i), Interest::READABLE)?;
    }
    std::thread::Builder::new()
        .name("carmine-cluster".into())
        .spawn(move || {
            crate::crash::stop_on_panic("The cluster bus", move || {
                Driver {
                    shared,
                    host,
                    poll,
                    listeners,
                    conns: HashMap::new(),
                    unread: HashSet::new(),
                }
                .run();
            });
        })?;
    Ok(())
}

struct Driver {
    shared: Arc<Shared>,
    host: Arc<ClusterHost>,
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: HashMap<LinkId, Conn>,
    /// Links that had more to read when their turn's budget ran out.
    unread: HashSet<LinkId>,
}

fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        v4 => v4.to_string(),
    }
}

impl Driver {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_tick = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        while !self.shared.shutdown_requested.load(Ordering::Acquire) {
            let wait = if self.unread.is_empty() {
                next_tick.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::warning(&format!("Cluster bus poll failed: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            // Queued work waits while the dataset loads (a restarted replica must load
            // before it asks its master for the rest).
            let mut actions = if self.shared.persist.loading.load(Ordering::Acquire) {
                Vec::new()
            } else {
                std::mem::take(&mut *self.host.pending.lock())
            };
            for link in std::mem::take(&mut self.unread) {
                self.on_io(link, false, &mut buf, &mut actions);
            }
            for ev in events.iter() {
                let t = ev.token().0;
                if t == WAKER.0 {
                    continue;
                }
                if t > LISTENER_BASE - self.listeners.len() && t <= LISTENER_BASE {
                    self.accept(LISTENER_BASE - t, &mut actions);
                } else {
                    self.on_io(t as LinkId, ev.is_writable(), &mut buf, &mut actions);
                }
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + Duration::from_millis(100);
                let offset = self.reported_offset();
                let link_up = self.shared.master_link_up.load(Ordering::Acquire);
                let validity = self
                    .shared
                    .config
                    .get_i64("cluster-replica-validity-factor")
                    .max(0) as u64;
                let ping_period = self
                    .shared
                    .config
                    .get_i64("repl-ping-replica-period")
                    .max(1) as u64;
                let now = now_ms();
                let mut m = self.host.machine.lock();
                self.host.refresh_config(&self.shared, &mut m);
                m.set_repl_offset(offset);
                m.set_master_link(link_up, now);
                m.set_failover_settings(validity, ping_period);
                actions.extend(m.tick(now_ms()));
            }
            self.execute(actions);
        }
        for (_, mut c) in self.conns.drain() {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// The replication offset our bus messages carry. A replica loading a full sync
    /// reports 0, as Redis' does (it has no master client yet): peers show it as
    /// "loading" in CLUSTER SHARDS and leave it out of CLUSTER SLOTS.
    fn reported_offset(&self) -> u64 {
        ReplicationStream::of(&self.shared).map_or(0, |s| {
            if s.sync_in_progress() {
                0
            } else {
                s.offset()
            }
        })
    }

    fn accept(&mut self, i: usize, actions: &mut Vec<Action>) {
        loop {
            let Some(l) = self.listeners.get(i) else {
                return;
            };
            let (mut stream, peer) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warning(&format!("Error accepting cluster node: {e}"));
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let local = stream
                .local_addr()
                .map(|a| ip_text(a.ip()))
                .unwrap_or_default();
            let link = {
                let mut m = self.host.machine.lock();
                m.accept(now_ms(), &ip_text(peer.ip()), &local)
            };
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(link as usize),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.host.machine.lock().link_closed(link);
                continue;
            }
            log::verbose(&format!("Accepting cluster node connection from {peer}"));
            self.conns.insert(
                link,
                Conn {
                    stream,
                    connected: true,
                    out: Vec::new(),
                },
            );
            let _ = actions;
        }
    }

    fn on_io(&mut self, link: LinkId, writable: bool, buf: &mut [u8], actions: &mut Vec<Action>) {
        let Some(c) = self.conns.get_mut(&link) else {
            return;
        };
        if !c.connected && writable {
            match c.stream.take_error() {
                Ok(None) if c.stream.peer_addr().is_ok() => {
                    c.connected = true;
                    self.host.machine.lock().link_connected(link);
                }
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => {
                    self.close(link);
                    return;
                }
            }
        }
        let mut closed = false;
        let mut data = Vec::new();
        if let Some(c) = self.conns.get_mut(&link) {
            loop {
                if data.len() >= READ_BUDGET {
                    // More may be waiting (the poll is edge-triggered): come back to it
                    // after the other links, so one flooding peer neither starves them
                    // nor grows memory.
                    self.unread.insert(link);
                    break;
                }
                match c.stream.read(buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        if !data.is_empty() {
            let filter = self.shared.cluster_drop_filter.load(Ordering::Relaxed);
            // The offset a manual failover's paused master reports must be exact.
            let offset = self.reported_offset();
            let mut m = self.host.machine.lock();
            m.set_repl_offset(offset);
            m.drop_filter = u16::try_from(filter).ok();
            actions.extend(m.received(now_ms(), link, &data));
        }
        if closed {
            self.close(link);
            return;
        }
        if self.flush(link).is_err() {
            self.close(link);
        }
    }

    fn flush(&mut self, link: LinkId) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(&link) else {
            return Ok(());
        };
        if !c.connected {
            return Ok(());
        }
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn close(&mut self, link: LinkId) {
        if let Some(mut c) = self.conns.remove(&link) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        self.host.machine.lock().link_closed(link);
    }

    fn connect(&mut self, link: LinkId, ip: &str, port: u16) -> io::Result<()> {
        let addr: SocketAddr = (ip, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        let mut stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        self.poll.registry().register(
            &mut stream,
            Token(link as usize),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.conns.insert(
            link,
            Conn {
                stream,
                connected: false,
                out: Vec::new(),
            },
        );
        Ok(())
    }

    fn execute(&mut self, actions: Vec<Action>) {
        // The view first: clients a manual failover held resume (UnpauseWrites) routed
        // by the new roles, as Redis re-admits them.
        {
            let m = self.host.machine.lock();
            self.host.publish_view(&self.shared, &m);
        }
        let mut to_driver = Vec::new();
        self.host.perform(&self.shared, actions, &mut to_driver);
        for a in to_driver {
            match a {
                Action::Connect { link, ip, port } => {
                    if let Err(e) = self.connect(link, &ip, port) {
                        log::verbose(&format!(
                            "Unable to connect to Cluster Node [{ip}]:{port} -> {e}"
                        ));
                        self.host.machine.lock().link_closed(link);
                    }
                }
                Action::Send { link, bytes } => {
                    let limit = match self.shared.config.get_i64("cluster-link-sendbuf-limit") {
                        n if n > 0 => (n as usize).min(MAX_OUTPUT),
                        _ => MAX_OUTPUT,
                    };
                    let over = match self.conns.get_mut(&link) {
                        Some(c) => {
                            c.out.extend_from_slice(&bytes);
                            c.out.len() > limit
                        }
                        None => false,
                    };
                    if over {
                        // A peer that stopped reading: its link is rebuilt, as Redis
                        // frees a link past `cluster-link-sendbuf-limit`.
                        self.host.machine.lock().stats.links_buffer_limit_exceeded += 1;
                        log::warning("Freeing cluster link: its send buffer passed cluster-link-sendbuf-limit");
                        self.close(link);
                    } else if self.flush(link).is_err() {
                        self.close(link);
                    }
                }
                Action::Close { link } => {
                    if let Some(mut c) = self.conns.remove(&link) {
                        let _ = self.poll.registry().deregister(&mut c.stream);
                    }
                }
                _ => {}
            }
        }
        let m = self.host.machine.lock();
        self.host.publish_view(&self.shared, &m);
    }
}
