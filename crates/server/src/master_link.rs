//! The replica side of replication: the link to our master (REPLICAOF / `replicaof`).
//!
//! One thread per link, with blocking reads bounded by timeouts: the handshake (PING,
//! AUTH, REPLCONF listening-port and capa, PSYNC), the full-sync payload (loaded once
//! complete, so the old dataset stays until then), then the master's stream applied as a
//! master session and passed on unchanged to our own replicas, with REPLCONF ACK every
//! second and on GETACK. A broken link is logged and retried every second with a partial
//! resync from where it stopped. (The event loops' `MasterLink` connection role of
//! DESIGN.md is the next step: this thread owns no client connection.)

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use carmine_commands::{execute_timed, ClientInfo, CommandClock, Session, Shared};
use carmine_repl::{PayloadHeader, PayloadReader, ReplId};
use carmine_resp::{Args, CommandDecoder, ReplyBuf};

use crate::failover::Phase;
use crate::log;
use crate::replication::ReplicationStream;

/// Starts the link thread for generation `generation` of the replica role.
pub fn spawn(shared: &Arc<Shared>, host: String, port: u16, generation: u64) {
    let owned = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("carmine-master-link".into())
        .spawn(move || {
            crate::crash::stop_on_panic("The master link", || {
                run(&owned, &host, port, generation);
            });
        });
    if let Err(e) = spawned {
        log::warning(&format!("Can't start the master link thread: {e}"));
    }
}

fn current(shared: &Shared, generation: u64) -> bool {
    ReplicationStream::of(shared).is_some_and(|s| s.link_generation() == generation)
        && !shared.shutdown_requested.load(Ordering::Acquire)
}

fn run(shared: &Arc<Shared>, host: &str, port: u16, generation: u64) {
    while current(shared, generation) {
        // While the world is stopped (DEBUG SLEEP) the link waits too, as it would in
        // Redis' single thread: a master must see a sleeping replica stay away.
        drop(shared.barrier.shared(usize::MAX));
        log::notice(&format!("Connecting to MASTER {host}:{port}"));
        if let Err(e) = sync_and_stream(shared, host, port, generation) {
            if current(shared, generation) {
                log::warning(&format!("Lost the link with MASTER {host}:{port}: {e}"));
            }
        }
        // A link of an older generation (REPLICAOF since) must not mark the new one down.
        if let Some(s) = ReplicationStream::of(shared).filter(|_| current(shared, generation)) {
            s.link_down();
        }
        // Retry once a second, as Redis' replicationCron does; stop at once on a new role.
        for _ in 0..10 {
            if !current(shared, generation) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A blocking connection to the master with line reads for the handshake.
struct Link {
    sock: TcpStream,
    buf: BytesMut,
}

impl Link {
    fn send(&mut self, argv: &[&[u8]]) -> io::Result<()> {
        let mut out = Vec::new();
        out.extend_from_slice(format!("*{}\r\n", argv.len()).as_bytes());
        for a in argv {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.sock.write_all(&out)
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.sock.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the master",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// One line without CRLF; bare newlines (the master's keepalives) are skipped.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            while self.buf.first() == Some(&b'\n') {
                let _ = self.buf.split_to(1);
            }
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line = self.buf.split_to(end + 1).to_vec();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > 64 * 1024 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "protocol line from the master too long",
                ));
            }
            self.fill()?;
        }
    }

    fn command(&mut self, argv: &[&[u8]]) -> io::Result<Vec<u8>> {
        self.send(argv)?;
        self.line()
    }
}

fn protocol_error(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the master");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn sync_and_stream(shared: &Arc<Shared>, host: &str, port: u16, generation: u64) -> io::Result<()> {
    let stream = ReplicationStream::of(shared)
        .ok_or_else(|| io::Error::other("replication is not installed"))?;
    let timeout = Duration::from_secs(shared.config.get_i64("repl-timeout").max(1) as u64);
    let sock = connect(host, port, timeout)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(timeout))?;
    log::notice("MASTER <-> REPLICA sync started");
    let mut link = Link {
        sock,
        buf: BytesMut::new(),
    };
    stream.link_handshake(true);
    match handshake(shared, stream, &mut link) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "Timeout connecting to the MASTER...",
            ));
        }
        Err(e) => return Err(e),
    }
    stream.link_up();
    apply_stream(shared, stream, &mut link, generation)
}

/// PING, AUTH, REPLCONF, PSYNC and, when the master says so, the full sync.
fn handshake(shared: &Arc<Shared>, stream: &ReplicationStream, link: &mut Link) -> io::Result<()> {
    let pong = link.command(&[b"PING"])?;
    // Redis accepts an authentication error here: AUTH comes next.
    if !(pong.starts_with(b"+")
        || pong.starts_with(b"-NOAUTH")
        || pong.starts_with(b"-NOPERM")
        || pong.starts_with(b"-ERR operation not permitted"))
    {
        return Err(protocol_error(format!(
            "Error reply to PING from master: '{}'",
            String::from_utf8_lossy(&pong)
        )));
    }
    log::notice("Master replied to PING, replication can continue...");
    let auth = shared.config.get("masterauth").unwrap_or_default();
    if !auth.is_empty() {
        let user = shared.config.get("masteruser").unwrap_or_default();
        let reply = if user.is_empty() {
            link.command(&[b"AUTH", auth.as_bytes()])?
        } else {
            link.command(&[b"AUTH", user.as_bytes(), auth.as_bytes()])?
        };
        if reply.starts_with(b"-") {
            return Err(protocol_error(format!(
                "Unable to AUTH to MASTER: {}",
                String::from_utf8_lossy(&reply)
            )));
        }
    }
    let announce_port = shared.config.get_i64("replica-announce-port");
    let my_port = if announce_port > 0 {
        announce_port as u64
    } else {
        shared.facts.tcp_port.load(Ordering::Relaxed)
    };
    let reply = link.command(&[
        b"REPLCONF",
        b"listening-port",
        my_port.to_string().as_bytes(),
    ])?;
    if reply.starts_with(b"-") {
        log::notice(&format!(
            "(Non critical) Master does not understand REPLCONF listening-port: {}",
            String::from_utf8_lossy(&reply)
        ));
    }
    let announce_ip = shared.config.get("replica-announce-ip").unwrap_or_default();
    if !announce_ip.is_empty() {
        link.command(&[b"REPLCONF", b"ip-address", announce_ip.as_bytes()])?;
    }
    let reply = link.command(&[
        b"REPLCONF",
        b"capa",
        b"eof",
        b"capa",
        b"psync2",
        b"capa",
        crate::replication::CAPA_STREAM_AFTER_EOF,
    ])?;
    if reply.starts_with(b"-") {
        log::notice(&format!(
            "(Non critical) Master does not understand REPLCONF capa: {}",
            String::from_utf8_lossy(&reply)
        ));
    }
    let (replid, offset) = stream.psync_request();
    match &replid {
        Some(id) => log::notice(&format!(
            "Trying a partial resynchronization (request {id}:{offset})."
        )),
        None => log::notice("Partial resynchronization not possible (no cached master)"),
    }
    let id_text = replid.map_or_else(|| "?".to_string(), |id| id.to_string());
    let offset_text = if replid.is_some() {
        offset.to_string()
    } else {
        "-1".to_string()
    };
    // A master handing its role over asks the target to take it (FAILOVER).
    let failing_over = stream.failover().phase() == Phase::InProgress;
    let reply = if failing_over {
        link.command(&[
            b"PSYNC",
            id_text.as_bytes(),
            offset_text.as_bytes(),
            b"FAILOVER",
        ])?
    } else {
        link.command(&[b"PSYNC", id_text.as_bytes(), offset_text.as_bytes()])?
    };
    let text = String::from_utf8_lossy(&reply).into_owned();
    if failing_over {
        if text.starts_with("+FULLRESYNC") || text.starts_with("+CONTINUE") {
            stream.failover().finished(shared);
        } else {
            stream
                .failover()
                .abort(shared, stream, "Failover target rejected psync request");
            return Err(protocol_error(format!(
                "Failover target rejected psync request: '{text}'"
            )));
        }
    }
    if let Some(rest) = text.strip_prefix("+FULLRESYNC ") {
        let mut parts = rest.split(' ');
        let (Some(id), Some(off)) = (parts.next(), parts.next()) else {
            return Err(protocol_error(format!("Bad +FULLRESYNC reply: '{text}'")));
        };
        let (Some(id), Some(off)) = (ReplId::parse(id.as_bytes()), off.parse::<u64>().ok()) else {
            return Err(protocol_error(format!("Bad +FULLRESYNC reply: '{text}'")));
        };
        log::notice(&format!("Full resync from master: {id}:{off}"));
        full_sync(shared, stream, link, id, off)?;
    } else if let Some(rest) = text.strip_prefix("+CONTINUE") {
        let new_id = ReplId::parse(rest.trim().as_bytes());
        stream.continue_with(new_id);
        log::notice("Successful partial resynchronization with master.");
        log::notice("MASTER <-> REPLICA sync: Master accepted a Partial Resynchronization.");
    } else {
        return Err(protocol_error(format!(
            "Unexpected reply to PSYNC from master: '{text}'"
        )));
    }
    Ok(())
}

/// A `repl-diskless-load swapdb` replica loading its master's dataset beside its own, as
/// Redis loads it into a temporary database: from a master of the same history (the
/// replication id it follows already) the old dataset is served meanwhile, INFO
/// `async_loading:1`, and only the commands Redis refuses then (REPLICAOF, SAVE ...) get
/// -LOADING; from another history the old data must not be served, so it is `loading:1`
/// as a load is. Cleared however the load ends (the old dataset stays if it fails).
struct LoadingFlag<'a> {
    flag: &'a std::sync::atomic::AtomicBool,
}

impl<'a> LoadingFlag<'a> {
    fn raise(flag: &'a std::sync::atomic::AtomicBool) -> LoadingFlag<'a> {
        flag.store(true, Ordering::Release);
        LoadingFlag { flag }
    }
}

impl Drop for LoadingFlag<'_> {
    fn drop(&mut self) {
        self.flag.store(false, Ordering::Release);
    }
}

/// `repl-diskless-load`: whether the payload is parsed as it arrives (Redis' diskless
/// load: `swapdb`, or `on-empty-db` with no keys) rather than received whole into a file
/// first, which keeps the old dataset until the payload is all there. Also whether it
/// loads beside the old dataset (`swapdb`).
fn parse_while_receiving(shared: &Shared) -> (bool, bool) {
    let mode = shared.config.get("repl-diskless-load").unwrap_or_default();
    let swapdb = mode.eq_ignore_ascii_case("swapdb");
    let empty = (0..shared.keyspace.databases()).all(|db| shared.keyspace.dbsize(db) == 0);
    (
        swapdb || (mode.eq_ignore_ascii_case("on-empty-db") && empty),
        swapdb,
    )
}

/// Sleeps per key loaded for `key-load-delay`, read again as the load goes (Redis' tests
/// lower it to end a slowed load quickly).
struct KeyLoadDelay<'a> {
    shared: &'a Shared,
    delay_us: i64,
    keys: u64,
}

impl KeyLoadDelay<'_> {
    fn new(shared: &Shared) -> KeyLoadDelay<'_> {
        KeyLoadDelay {
            shared,
            delay_us: shared.config.get_i64("key-load-delay"),
            keys: 0,
        }
    }
}

impl carmine_rdb::LoadObserver for KeyLoadDelay<'_> {
    fn key_read(&mut self) {
        self.keys += 1;
        if self.delay_us != 0 || self.keys.is_multiple_of(1024) {
            self.delay_us = self.shared.config.get_i64("key-load-delay");
        }
        carmine_rdb::debug_delay(self.delay_us, 1);
    }

    fn keep_expired(&self) -> bool {
        true
    }
}

fn full_sync(
    shared: &Arc<Shared>,
    stream: &ReplicationStream,
    link: &mut Link,
    replid: ReplId,
    offset: u64,
) -> io::Result<()> {
    // From +FULLRESYNC on, ROLE says `sync` (the payload may be slow to start).
    stream.sync_progress(0, None);
    let header = link.line()?;
    let header = PayloadHeader::parse(&header).map_err(protocol_error)?;
    let (to_parser, swapdb) = parse_while_receiving(shared);
    let destination = if to_parser { "parser" } else { "disk" };
    log::notice(&match header {
        PayloadHeader::EofMarked(_) => format!(
            "MASTER <-> REPLICA sync: receiving streamed RDB from master with EOF to {destination}"
        ),
        PayloadHeader::Length(n) => {
            format!("MASTER <-> REPLICA sync: receiving {n} bytes from master to {destination}")
        }
    });
    if to_parser {
        let same_history = stream.replid() == replid;
        if swapdb {
            load_beside_and_swap(shared, stream, link, &header, same_history)?;
        } else {
            load_in_place(shared, stream, link, &header)?;
        }
    } else {
        let tmp = crate::persistence::dump_path(shared).with_file_name(format!(
            "temp-{}.{}.rdb",
            carmine_keyspace::now_ms() / 1000,
            std::process::id()
        ));
        let received = receive_to_file(stream, link, header, &tmp);
        let loaded = received.and_then(|size| {
            let rdb = carmine_rdb::DumpFile::open(&tmp)?;
            Ok((size, rdb))
        });
        // The mapping keeps the file's pages while it is read; the name can go now.
        let _ = std::fs::remove_file(&tmp);
        let (size, rdb) = loaded?;
        log::notice(&format!(
            "MASTER <-> REPLICA sync: Flushing old data ({size} bytes of RDB received)"
        ));
        let _loading = flush_for_load(shared);
        log::notice("MASTER <-> REPLICA sync: Loading DB in memory");
        let loaded = carmine_rdb::load_observed(
            &shared.keyspace,
            &rdb,
            &mut crate::persistence::WithFunctions {
                shared,
                inner: &mut KeyLoadDelay::new(shared),
            },
        );
        if let Err(e) = loaded {
            log::warning(&format!(
                "Failed trying to load the MASTER synchronization DB from socket: {e}"
            ));
            return Err(protocol_error(format!(
                "bad RDB payload from the master: {e}"
            )));
        }
    }
    crate::aof::AppendOnly::restart_after_full_sync(shared);
    stream.reset_after_full_sync(replid, offset);
    log::notice("MASTER <-> REPLICA sync: Finished with success");
    Ok(())
}

/// The whole payload into the file `tmp` (as Redis receives it to disk), the old
/// dataset served meanwhile; returns its size. Memory holds a read's worth at a time.
fn receive_to_file(
    stream: &ReplicationStream,
    link: &mut Link,
    header: PayloadHeader,
    tmp: &std::path::Path,
) -> io::Result<u64> {
    let mut file = io::BufWriter::with_capacity(
        PULL_CHUNK,
        std::fs::File::create(tmp).map_err(|e| {
            log::warning(&format!(
                "Opening the temp file needed for MASTER <-> REPLICA synchronization: {e}"
            ));
            e
        })?,
    );
    let mut reader = PayloadReader::new(header);
    stream.sync_progress(0, reader.expected());
    loop {
        if !link.buf.is_empty() {
            let taken = reader.push(&link.buf);
            let _ = link.buf.split_to(taken);
            file.write_all(&reader.take_settled())?;
        }
        stream.sync_progress(reader.received() as u64, reader.expected());
        if reader.is_complete() {
            break;
        }
        link.fill()?;
    }
    let size = reader.received() as u64;
    let rest = reader
        .into_rdb()
        .ok_or_else(|| protocol_error("incomplete payload".into()))?;
    file.write_all(&rest)?;
    file.flush()?;
    Ok(size)
}

/// Empties the dataset for a load into it, with the world stopped; from then on only the
/// commands allowed while loading run (INFO, PING ...: the others get -LOADING), as Redis
/// answers them between chunks of its load. INFO shows `loading:1` until the guard drops.
fn flush_for_load(shared: &Shared) -> LoadingFlag<'_> {
    let _world = shared.barrier.exclusive();
    let loading = LoadingFlag::raise(&shared.persist.loading);
    for db in 0..shared.keyspace.databases() {
        shared.keyspace.flush_db(db);
    }
    // The master's libraries replace ours with its keys.
    carmine_commands::functions::flush_libraries(shared);
    loading
}

/// Parses the payload as it arrives from the link into `into` (Redis' diskless load: the
/// master's transfer goes at the pace of this load, `key-load-delay` included). The EOF
/// mark of a diskless transfer is checked, and what followed the payload (the stream)
/// stays in the link's buffer.
fn load_from_link(
    stream: &ReplicationStream,
    link: &mut Link,
    header: &PayloadHeader,
    into: &carmine_keyspace::Keyspace,
    observer: &mut dyn carmine_rdb::LoadObserver,
) -> Result<(), String> {
    let limit = match header {
        PayloadHeader::Length(n) => Some(*n),
        PayloadHeader::EofMarked(_) => None,
    };
    let first = link.buf.split().to_vec();
    let mut received = first.len() as u64;
    stream.sync_progress(received, limit);
    let sock = &link.sock;
    let pull = |buf: &mut Vec<u8>| -> io::Result<usize> {
        let old = buf.len();
        buf.resize(old + PULL_CHUNK, 0);
        let read = (&*sock).read(&mut buf[old..]);
        buf.truncate(old + *read.as_ref().unwrap_or(&0));
        let n = read?;
        received += n as u64;
        stream.sync_progress(received, limit);
        Ok(n)
    };
    let rdb_error = |e: carmine_rdb::RdbError| {
        log::warning(&format!(
            "Internal error in RDB reading offset {} -> {}",
            e.offset, e.message
        ));
        e.to_string()
    };
    let mut reader =
        carmine_rdb::Reader::from_input(carmine_rdb::PulledInput::new(first, limit, pull))
            .map_err(rdb_error)?;
    carmine_rdb::load_from(into, &mut reader, observer).map_err(rdb_error)?;
    let end = reader.offset() as u64;
    let mut rest = reader.into_input().rest();
    match header {
        PayloadHeader::Length(n) if end != *n => {
            return Err(format!("the RDB ended at byte {end} of a {n}-byte payload"));
        }
        PayloadHeader::Length(_) => {}
        PayloadHeader::EofMarked(mark) => {
            while rest.len() < mark.len() {
                let mut chunk = [0u8; 64];
                match (&link.sock).read(&mut chunk) {
                    Ok(0) => return Err("connection closed before the EOF mark".into()),
                    Ok(n) => rest.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(format!("reading the EOF mark: {e}")),
                }
            }
            if rest[..mark.len()] != mark[..] {
                log::warning("Replication stream EOF marker is broken");
                return Err("the EOF mark after the payload is broken".into());
            }
            rest.drain(..mark.len());
        }
    }
    link.buf.extend_from_slice(&rest);
    Ok(())
}

/// Bytes asked of the socket at a time while parsing a payload.
const PULL_CHUNK: usize = 64 * 1024;

/// `repl-diskless-load on-empty-db` with no keys: the payload is parsed as it arrives into
/// the (emptied) dataset; a load that fails leaves it empty again.
fn load_in_place(
    shared: &Shared,
    stream: &ReplicationStream,
    link: &mut Link,
    header: &PayloadHeader,
) -> io::Result<()> {
    log::notice("MASTER <-> REPLICA sync: Flushing old data");
    let loading = flush_for_load(shared);
    log::notice("MASTER <-> REPLICA sync: Loading DB in memory");
    let mut observer = crate::persistence::WithFunctions {
        shared,
        inner: &mut KeyLoadDelay::new(shared),
    };
    let loaded = load_from_link(stream, link, header, &shared.keyspace, &mut observer);
    if let Err(e) = loaded {
        log::warning(&format!(
            "Failed trying to load the MASTER synchronization DB from socket: {e}"
        ));
        // No half-loaded dataset stays.
        drop(flush_for_load(shared));
        drop(loading);
        return Err(protocol_error(format!(
            "bad RDB payload from the master: {e}"
        )));
    }
    drop(loading);
    Ok(())
}

/// `repl-diskless-load swapdb`: the payload is parsed as it arrives into a second
/// keyspace while the old dataset stays (served meanwhile when the master is of the same
/// history, see [`LoadingFlag`]), then the two swap with the world stopped for the swap
/// only. The old contents are freed on a thread of their own. A payload that does not
/// load leaves the old dataset in place.
fn load_beside_and_swap(
    shared: &Shared,
    stream: &ReplicationStream,
    link: &mut Link,
    header: &PayloadHeader,
    same_history: bool,
) -> io::Result<()> {
    let flag = if same_history {
        &shared.persist.async_loading
    } else {
        &shared.persist.loading
    };
    let loading = LoadingFlag::raise(flag);
    log::notice("MASTER <-> REPLICA sync: Loading DB in memory");
    let loaded_into = shared.keyspace.sibling();
    shared.apply_encoding_limits(&loaded_into);
    let mut libraries = LibrariesOnly {
        codes: Vec::new(),
        inner: KeyLoadDelay::new(shared),
    };
    let loaded = load_from_link(stream, link, header, &loaded_into, &mut libraries);
    if let Err(e) = loaded {
        log::warning(&format!(
            "Failed trying to load the MASTER synchronization DB from socket, discarding the temporary DB: {e}"
        ));
        log::notice("MASTER <-> REPLICA sync: Discarding temporary DB in background");
        free_in_background(loaded_into);
        return Err(protocol_error(format!(
            "bad RDB payload from the master: {e}"
        )));
    }
    {
        let _world = shared.barrier.exclusive();
        log::notice("MASTER <-> REPLICA sync: Swapping active DB with loaded DB");
        shared.keyspace.swap_contents(&loaded_into);
        // The master's libraries replace ours with its keys.
        carmine_commands::functions::flush_libraries(shared);
        for code in &libraries.codes {
            if let Err(e) = carmine_commands::functions::load_library(shared, code, true) {
                log::warning(&format!(
                    "A function library of the master did not load: {e}"
                ));
            }
        }
        drop(loading);
    }
    log::notice("MASTER <-> REPLICA sync: Discarding old DB in background");
    free_in_background(loaded_into);
    Ok(())
}

/// Frees a dataset on a thread of its own (a big one takes seconds to free).
fn free_in_background(keyspace: carmine_keyspace::Keyspace) {
    let freed = std::thread::Builder::new()
        .name("carmine-free-old-db".into())
        .spawn(move || drop(keyspace));
    if let Err(e) = freed {
        log::warning(&format!("Freeing the old dataset on this thread: {e}"));
    }
}

/// A load observer that keeps the payload's function libraries aside, to install them
/// when the loaded keys take over.
struct LibrariesOnly<'a> {
    codes: Vec<Vec<u8>>,
    inner: KeyLoadDelay<'a>,
}

impl carmine_rdb::LoadObserver for LibrariesOnly<'_> {
    fn key_read(&mut self) {
        self.inner.key_read()
    }

    fn keep_expired(&self) -> bool {
        self.inner.keep_expired()
    }

    fn function(&mut self, code: &[u8]) -> Result<(), String> {
        self.codes.push(code.to_vec());
        Ok(())
    }
}

/// Applies the master's stream until the link breaks or the role changes.
fn apply_stream(
    shared: &Arc<Shared>,
    stream: &ReplicationStream,
    link: &mut Link,
    generation: u64,
) -> io::Result<()> {
    link.sock
        .set_read_timeout(Some(Duration::from_millis(100)))?;
    let timeout = Duration::from_secs(shared.config.get_i64("repl-timeout").max(1) as u64);
    let stats = shared.new_thread_stats();
    let info = Arc::new(ClientInfo::new(
        shared.clients.next_id(),
        link.sock
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        String::new(),
        -1,
        shared.io_threads(),
    ));
    info.kind.store(ClientInfo::MASTER, Ordering::Relaxed);
    // CLIENT KILL closes the link at once, as Redis frees the master client at once: the
    // master sees it gone even while this thread waits (a DEBUG SLEEP stopped the world).
    if let Ok(sock) = link.sock.try_clone() {
        *info.waker.lock() = Some(Arc::new(move || {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }));
    }
    // Listed by CLIENT LIST (flags=M); CLIENT KILL TYPE master cuts the link, which is
    // then retried with a partial resync.
    shared.clients.add(info.clone());
    let _listed = Listed(shared, info.id);
    // The barrier's extra slot: this thread is no event loop.
    let mut session = Session::new(info.clone(), shared.io_threads(), true);
    session.master_link = true;
    // A partial resync continues the stream where it stopped, without a new SELECT:
    // the database the last link had selected still applies (Redis keeps it in its
    // cached master).
    session.select(stream.link_db());
    // The master's offset just past the bytes decoded so far: the dispatcher marks each
    // command applied at it (see `Shared::master_stream_applied`).
    let mut stream_pos = stream.offset();
    let mut decoder = CommandDecoder::new(carmine_resp::Limits::default());
    let mut args = Args::default();
    let mut reply = ReplyBuf::new(false);
    // The unconsumed bytes, kept as they came, to pass on to our replicas verbatim.
    let mut raw: Vec<u8> = link.buf.to_vec();
    let mut last_ack = Instant::now() - Duration::from_secs(1);
    let mut last_io = Instant::now();
    // Read into once: a 64 KiB array on the stack was zeroed before every read, about
    // a hundred commands' worth of the stream each.
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if !current(shared, generation) {
            return Ok(());
        }
        if info.killed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the link was killed (CLIENT KILL)",
            ));
        }
        // Bytes at the front of `raw` applied but not yet passed on: passed on once per
        // read, or before answering a GETACK (whose offset counts the GETACK itself).
        let mut applied = 0usize;
        let mut until_prefetch = 0usize;
        // One wall-clock and one monotonic reading for the read's commands, and one more
        // per command to time it (the end of one starts the next): three readings per
        // command were 15% of a replica applying pipelined LPUSHes.
        let now_ms = carmine_keyspace::now_ms();
        let mut clock = CommandClock::starting_at(Instant::now());
        loop {
            // The stream's keys are as random as the master's clients made them, and a
            // read holds hundreds of commands: the next batch's entries start loading
            // while this one runs, as an event loop does for a pipeline (the replica's
            // SETs spent over half their time waiting for the table and the entry).
            // A batch with nothing to prefetch (LPUSHes to one list) pauses the peeking
            // for a few batches, as an event loop pauses it per connection: peeking every
            // batch was 3% of a replica applying LPUSHes.
            if until_prefetch == 0 && !decoder.in_progress() {
                let worth_it =
                    crate::event_loop::prefetch_pipeline(&shared.keyspace, session.db, &link.buf);
                let batches = if worth_it {
                    1
                } else {
                    1 + usize::from(crate::event_loop::PREFETCH_PAUSE)
                };
                until_prefetch = carmine_keyspace::PREFETCH_MAX * batches;
            }
            until_prefetch = until_prefetch.saturating_sub(1);
            let before = link.buf.len();
            let complete = match decoder.decode(&mut link.buf, &mut args) {
                Ok(complete) => complete,
                Err(e) => {
                    // What was applied before the garbage still moves our offset.
                    pass_on(stream, shared, &mut raw, &mut applied);
                    return Err(protocol_error(format!("bad command from the master: {e}")));
                }
            };
            if !complete {
                break;
            }
            applied += before - link.buf.len();
            stream_pos += (before - link.buf.len()) as u64;
            session.stream_offset_after = Some(stream_pos);
            let getack = args
                .get(0)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"replconf"))
                && args
                    .get(1)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"getack"));
            execute_timed(
                shared,
                &mut session,
                &stats,
                &args,
                &mut reply,
                now_ms,
                &mut clock,
            );
            if reply.out.first() == Some(&b'-') {
                crate::propagated_error::report(
                    shared,
                    crate::propagated_error::Source::Master,
                    &args,
                    &reply.out,
                );
            }
            reply.out.clear();
            // Nothing from the master may block its link (a blocking pop on an empty
            // list replies null on the master too): a wait it started is dropped.
            carmine_commands::blocking::unblock(shared, &mut session);
            if getack {
                pass_on(stream, shared, &mut raw, &mut applied);
                send_ack(link, stream)?;
                last_ack = Instant::now();
                // The ack's write is no command's time.
                clock = CommandClock::starting_at(last_ack);
            }
        }
        // Applied: our offset moves past it, and our replicas get the same bytes.
        pass_on(stream, shared, &mut raw, &mut applied);
        stream.set_link_db(session.db);
        crate::aof::AppendOnly::flush_for_this_thread(shared, false);
        ReplicationStream::flush_feeds(shared);
        if last_ack.elapsed() >= Duration::from_secs(1) {
            send_ack(link, stream)?;
            last_ack = Instant::now();
        }
        match link.sock.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the master",
                ))
            }
            Ok(n) => {
                link.buf.extend_from_slice(&chunk[..n]);
                raw.extend_from_slice(&chunk[..n]);
                last_io = Instant::now();
                stream.link_io();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if last_io.elapsed() > timeout {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "MASTER timeout: no data nor PING received",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Feeds the first `applied` bytes of `raw` to our stream (offset, backlog, replicas).
fn pass_on(stream: &ReplicationStream, shared: &Shared, raw: &mut Vec<u8>, applied: &mut usize) {
    let n = (*applied).min(raw.len());
    if n > 0 {
        stream.feed_raw(&raw[..n], shared);
        raw.drain(..n);
    }
    *applied = 0;
}

/// Takes the link's client out of CLIENT LIST when the link ends.
struct Listed<'a>(&'a Shared, u64);

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.0.clients.remove(self.1);
    }
}

fn send_ack(link: &mut Link, stream: &ReplicationStream) -> io::Result<()> {
    let offset = stream.offset().to_string();
    link.send(&[b"REPLCONF", b"ACK", offset.as_bytes()])
}
