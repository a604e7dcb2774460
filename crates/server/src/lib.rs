//! carmine-server: the composition of Carmine's crates into a Redis-compatible server, and
//! an API to run one inside a Rust program.
//!
//! ```no_run
//! use carmine_server::Server;
//! use carmine_commands::Config;
//!
//! let config = Config::new();
//! config.load_text("port 0\nbind 127.0.0.1\n").unwrap(); // port 0: any free port
//! let server = Server::start(config).unwrap();
//! println!("listening on {}", server.port());
//! server.shutdown();
//! ```

pub mod alloc;
pub mod aof;
mod cluster;
pub mod crash;
mod event_loop;
mod failover;
mod idle_poll;
pub mod log;
mod master_link;
mod net;
pub mod persistence;
mod propagated_error;
pub mod replication;
mod reply_buffer;
pub mod sentinel;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use carmine_commands::{Config, Shared};
use mio::net::TcpListener;

use event_loop::{EventLoop, LoopHandle, LoopMsg};

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    port: u16,
    threads: Vec<JoinHandle<()>>,
    handles: Vec<LoopHandle>,
}

/// How many event loops to run: `io-threads`, or the CPUs this process may use.
fn io_threads(config: &Config) -> usize {
    match config.get_i64("io-threads") {
        n if n > 0 => n as usize,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Parses `bind`: addresses, where a leading `-` marks one that may fail to bind.
pub(crate) fn bind_addresses(config: &Config) -> Vec<(String, bool)> {
    let bind = config.get("bind").unwrap_or_default();
    let mut out: Vec<(String, bool)> = bind
        .split_whitespace()
        .map(|a| match a.strip_prefix('-') {
            Some(rest) => (rest.to_string(), true),
            None => (a.to_string(), false),
        })
        .collect();
    if out.is_empty() {
        out.push(("*".into(), false));
    }
    out
}

pub(crate) fn listen(addr: &str, port: u16, backlog: i32) -> io::Result<TcpListener> {
    let ip: IpAddr = match addr {
        "*" => "0.0.0.0"
            .parse()
            .map_err(|_| io::Error::other("bad address"))?,
        "::*" => "::".parse().map_err(|_| io::Error::other("bad address"))?,
        a => a.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid bind address '{a}'"),
            )
        })?,
    };
    let sa = SocketAddr::new(ip, port);
    let domain = if ip.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if ip.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&sa.into())?;
    sock.listen(backlog.max(1))?;
    Ok(TcpListener::from_std(sock.into()))
}

/// `unixsocket path` (and `unixsocketperm`, octal): a stale socket file left by an
/// earlier run is replaced, as Redis does.
#[cfg(unix)]
fn listen_unix(config: &Config) -> io::Result<Option<net::Listener>> {
    use std::os::unix::fs::PermissionsExt;
    let path = config.get("unixsocket").unwrap_or_default();
    if path.is_empty() {
        return Ok(None);
    }
    let _ = std::fs::remove_file(&path);
    let listener = mio::net::UnixListener::bind(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("Failed opening Unix socket: {e}")))?;
    let perm = config.get("unixsocketperm").unwrap_or_default();
    if let Ok(mode) = u32::from_str_radix(perm.trim(), 8) {
        if mode != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(Some(net::Listener::Unix(listener)))
}

/// A session for commands the server runs itself (the AOF replay, a cluster node
/// deleting the keys of slots it lost): a master link's kind, so nothing refuses them
/// and their replies go nowhere, on the barrier's slot for threads that are no loop.
pub(crate) fn internal_session(shared: &carmine_commands::Shared) -> carmine_commands::Session {
    let info = Arc::new(carmine_commands::ClientInfo::new(
        shared.clients.next_id(),
        String::new(),
        String::new(),
        -1,
        shared.io_threads(),
    ));
    let mut session = carmine_commands::Session::new(info, shared.io_threads(), true);
    session.master_link = true;
    session
}

impl Server {
    /// Binds the configured addresses and starts the event loops. `port 0` picks a free
    /// port (see [`Server::port`]).
    pub fn start(config: Config) -> io::Result<Server> {
        Self::start_with_memory(config, None)
    }

    /// As [`Server::start`], with a function that reports heap bytes in use (the binary
    /// passes its counting allocator's figure).
    pub fn start_with_memory(
        config: Config,
        used_memory: Option<fn() -> usize>,
    ) -> io::Result<Server> {
        Self::start_with_allocator(config, used_memory, None)
    }

    /// As [`Server::start_with_memory`], with a function that makes room for a number of
    /// bytes in the calling thread's heap in a few large steps (see `Shared::heap_reserve`).
    pub fn start_with_allocator(
        config: Config,
        used_memory: Option<fn() -> usize>,
        heap_reserve: Option<fn(usize)>,
    ) -> io::Result<Server> {
        let n = io_threads(&config);
        let mut port = config.get_i64("port") as u16;
        let backlog = config.get_i64("tcp-backlog") as i32;
        let mut listeners = Vec::new();
        for (addr, optional) in bind_addresses(&config) {
            match listen(&addr, port, backlog) {
                Ok(l) => {
                    if port == 0 {
                        port = l.local_addr()?.port();
                    }
                    listeners.push(l);
                }
                Err(e) if optional => {
                    log::verbose(&format!("Could not bind optional address {addr}: {e}"))
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("Could not create server TCP listening socket {addr}:{port}: {e}"),
                    ))
                }
            }
        }
        let mut listeners: Vec<net::Listener> =
            listeners.into_iter().map(net::Listener::Tcp).collect();
        #[cfg(unix)]
        if let Some(l) = listen_unix(&config)? {
            listeners.push(l);
        }
        if listeners.is_empty() {
            return Err(io::Error::other("no address could be bound"));
        }
        let sentinel_mode = config.sentinel_mode.load(Ordering::Relaxed);
        let commands = if sentinel_mode {
            sentinel::command_table()
        } else {
            carmine_commands::command_table()
                .extend(replication::commands())
                .extend(failover::commands())
                .extend(aof::commands())
                .extend(cluster::commands())
        };
        let shared = Shared::with_commands(config, n, used_memory, commands);
        if let Some(reserve) = heap_reserve {
            let _ = shared.heap_reserve.set(reserve);
        }
        let _ = shared.log.set(log::at_level);
        if !sentinel_mode {
            carmine_commands::acl::load_at_startup(&shared).map_err(io::Error::other)?;
        }
        if sentinel_mode {
            shared
                .facts
                .tcp_port
                .store(u64::from(port), Ordering::Relaxed);
            sentinel::install(&shared, port)?;
            return Self::run_loops(shared, n, port, listeners, "sentinel");
        }
        persistence::RdbFiles::install(&shared);
        replication::ReplicationStream::install(&shared);
        let append_only = aof::AppendOnly::install(&shared);
        if let Some(stream) = replication::ReplicationStream::of(&shared) {
            stream.set_append_only(append_only);
        }
        let appendonly = shared.config.get_bool("appendonly");
        // Only a dump to load makes the server refuse data commands (-LOADING) meanwhile.
        let has_dump = !appendonly && persistence::dump_path(&shared).exists();
        shared
            .persist
            .loading
            .store(has_dump || appendonly, Ordering::Release);
        shared
            .facts
            .tcp_port
            .store(u64::from(port), Ordering::Relaxed);
        let cluster_mode = shared.config.get_bool("cluster-enabled");
        if cluster_mode {
            cluster::install(&shared, port, &bind_addresses(&shared.config), backlog)?;
        }
        let mode = if cluster_mode {
            "cluster"
        } else {
            "standalone"
        };
        let server = Self::run_loops(shared, n, port, listeners, mode)?;
        // Clients may connect while the dump loads; they get -LOADING until it is done.
        if has_dump {
            if let Err(e) = persistence::load_at_startup(&server.shared) {
                server
                    .shared
                    .request_shutdown(carmine_commands::ShutdownMode::NoSave);
                server.stop();
                return Err(e);
            }
        }
        // With `appendonly yes` the AOF is the dataset (the dump is not read), as in Redis.
        if appendonly {
            server.shared.persist.loading.store(true, Ordering::Release);
            if let Err(e) = aof::AppendOnly::start(&server.shared) {
                server
                    .shared
                    .request_shutdown(carmine_commands::ShutdownMode::NoSave);
                server.stop();
                return Err(e);
            }
            server
                .shared
                .persist
                .loading
                .store(false, Ordering::Release);
        }
        // `replicaof host port` in the configuration: start as a replica.
        let replicaof = server.shared.config.get("replicaof").unwrap_or_default();
        let parts: Vec<&str> = replicaof.split_whitespace().collect();
        if let [host, port] = parts.as_slice() {
            match replication::parse_master(host.as_bytes(), port.as_bytes()) {
                Some(master) => {
                    if let Some(stream) = replication::ReplicationStream::of(&server.shared) {
                        stream.set_master(&server.shared, Some(master));
                    }
                }
                None => log::warning(&format!("Invalid replicaof '{replicaof}' ignored")),
            }
        }
        Ok(server)
    }

    /// Installs CONFIG SET port / bind: binds every `bind` address on the configured
    /// port, then hands each loop its copies of the new sockets (the old ones close when
    /// dropped).
    fn install_rebind(shared: &Arc<Shared>, handles: &[LoopHandle]) {
        let handles = handles.to_vec();
        let weak = Arc::downgrade(shared);
        let _ = shared.rebind.set(Box::new(move || {
            let shared = weak.upgrade().ok_or("shutting down")?;
            let port = u16::try_from(shared.config.get_i64("port")).map_err(|e| e.to_string())?;
            let backlog = shared.config.get_i64("tcp-backlog") as i32;
            let mut fresh = Vec::new();
            for (addr, optional) in bind_addresses(&shared.config) {
                match listen(&addr, port, backlog) {
                    Ok(l) => fresh.push(net::Listener::Tcp(l)),
                    Err(_) if optional => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            if fresh.is_empty() {
                return Err("no address could be bound".into());
            }
            for h in &handles {
                let copies = fresh
                    .iter()
                    .map(net::Listener::try_clone)
                    .collect::<io::Result<Vec<_>>>()
                    .map_err(|e| e.to_string())?;
                h.send(LoopMsg::ListenTcp(copies));
            }
            shared
                .facts
                .tcp_port
                .store(u64::from(port), Ordering::Relaxed);
            log::notice(&format!("Listening on port {port} (CONFIG SET port)."));
            Ok(())
        }));
    }

    /// Starts the event loops (each accepts) and logs the start-up lines.
    fn run_loops(
        shared: Arc<Shared>,
        n: usize,
        port: u16,
        listeners: Vec<net::Listener>,
        mode: &str,
    ) -> io::Result<Server> {
        let mut loops = Vec::new();
        let mut handles = Vec::new();
        for i in 0..n {
            let (l, h) = EventLoop::new(i, shared.clone())?;
            loops.push(l);
            handles.push(h);
        }
        // Every loop accepts (a connection still goes to the loops in turn), so a loop
        // busy with a long script or command does not keep new clients out.
        let turn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for l in loops.iter_mut().skip(1) {
            let clones = listeners
                .iter()
                .map(net::Listener::try_clone)
                .collect::<io::Result<Vec<_>>>()?;
            l.set_listeners(clones, handles.clone(), turn.clone())?;
        }
        loops[0].set_listeners(listeners, handles.clone(), turn)?;
        Self::install_rebind(&shared, &handles);
        let mut threads = Vec::new();
        for (i, l) in loops.into_iter().enumerate() {
            threads.push(
                std::thread::Builder::new()
                    .name(format!("carmine-io-{i}"))
                    .spawn(move || {
                        crate::crash::stop_on_panic(&format!("Event loop {i}"), move || l.run())
                    })?,
            );
        }
        let server = Server {
            shared,
            port,
            threads,
            handles,
        };
        if server.shared.config.get_bool("always-show-logo") {
            // Redis' start-up banner carries these fields; test harnesses wait for
            // " PID: ", also when the load that follows fails.
            log::notice(&format!(
                "Carmine {} ({mode})    Port: {}    PID: {}",
                env!("CARGO_PKG_VERSION"),
                server.port,
                std::process::id()
            ));
        }
        log::notice(&format!("Running mode={mode}, port={}.", server.port));
        log::notice("Server initialized");
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// True once SHUTDOWN or a signal asked the server to stop.
    pub fn shutdown_requested(&self) -> bool {
        self.shared.shutdown_requested.load(Ordering::Acquire)
    }

    /// Blocks until a shutdown is requested, checking `also_stop` (e.g. a signal flag)
    /// every 10 ms; then stops the loops.
    pub fn wait(self, also_stop: impl Fn() -> bool) {
        while !self.shutdown_requested() {
            if also_stop() {
                self.shared
                    .request_shutdown(carmine_commands::ShutdownMode::Default);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
    }

    /// Requests shutdown and waits for every loop to finish.
    pub fn shutdown(self) {
        self.shared
            .request_shutdown(carmine_commands::ShutdownMode::Default);
        self.stop();
    }

    fn stop(self) {
        for h in &self.handles {
            let _ = h.waker.wake();
        }
        for t in self.threads {
            let _ = t.join();
        }
        let mode = self
            .shared
            .shutdown
            .lock()
            .unwrap_or(carmine_commands::ShutdownMode::Default);
        aof::AppendOnly::shutdown(&self.shared);
        persistence::save_on_shutdown(&self.shared, mode);
    }
}
