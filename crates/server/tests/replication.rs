//! Replication with the real thing: Debian's redis-server (7.0) as a replica of a Carmine
//! master. It must load the fork-free snapshot, follow the stream through writes made
//! during the sync by several threads on several event loops, and continue with a
//! partial resync after its link is cut. `cargo xtask test` installs redis-server.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's redis-server on a free port, with DEBUG allowed and `extra` arguments.
fn redis_server(extra: &[&str]) -> (Proc, u16) {
    let port = common::free_port();
    let dir = common::scratch_dir();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--enable-debug-command", "yes"])
        .args(extra)
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server starts ({e}); run `cargo xtask test`"));
    assert!(
        common::wait_port(port, 10),
        "redis-server listens on {port}"
    );
    (Proc(child), port)
}

fn redis_replica(master_port: u16, diskless_load: &str) -> (Proc, u16) {
    let master_port = master_port.to_string();
    redis_server(&[
        "--repl-diskless-load",
        diskless_load,
        "--replicaof",
        "127.0.0.1",
        &master_port,
    ])
}

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connects")
}

/// The replica holds the master's dataset (more than `min_keys` keys), key by key and by
/// Redis' own DEBUG DIGEST, which Carmine computes too.
fn same_data(master: &mut redis::Connection, replica: &mut redis::Connection, min_keys: usize) {
    let want = dataset(master);
    assert!(want.len() > min_keys, "{} keys", want.len());
    assert_eq!(
        dataset(replica),
        want,
        "replica equals master after the full sync"
    );
    assert_eq!(digest(replica), digest(master), "DEBUG DIGEST agrees");
}

fn digest(c: &mut redis::Connection) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query(c)
        .expect("debug digest")
}

fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let text: String = redis::cmd("INFO").arg(section).query(c).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// Waits (60 s at most) until the replica's link to its master is up.
fn link_up(replica: &mut redis::Connection) -> bool {
    common::wait_until(60, || {
        info_field(replica, "replication", "master_link_status").as_deref() == Some("up")
    })
}

/// Waits until the replica's link is up and it has applied every byte the master wrote.
fn wait_caught_up(master: &mut redis::Connection, replica: &mut redis::Connection) -> bool {
    common::wait_until(60, || {
        let target = info_field(master, "replication", "master_repl_offset");
        let link = info_field(replica, "replication", "master_link_status");
        let applied = info_field(replica, "replication", "slave_repl_offset");
        link.as_deref() == Some("up") && target.is_some() && target == applied
    })
}

/// Every key of databases 0-2 with its type and value (collections sorted where their
/// order is not part of the value) and whether it has a deadline.
fn dataset(c: &mut redis::Connection) -> BTreeMap<(u8, Vec<u8>), String> {
    let mut out = BTreeMap::new();
    for db in 0..3u8 {
        let _: () = redis::cmd("SELECT").arg(db).query(c).expect("select");
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query(c)
                .expect("scan");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
        }
        let meta: Vec<redis::Value> = pipe.query(c).expect("types");
        let mut reads = redis::pipe();
        let mut kinds = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let kind = match &meta[2 * i] {
                redis::Value::SimpleString(s) => s.clone(),
                other => format!("{other:?}"),
            };
            match kind.as_str() {
                "string" => reads.cmd("GET").arg(k),
                "list" => reads.cmd("LRANGE").arg(k).arg(0).arg(-1),
                "hash" => reads.cmd("HGETALL").arg(k),
                "set" => reads.cmd("SMEMBERS").arg(k),
                _ => reads.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
            };
            kinds.push(kind);
        }
        let values: Vec<redis::Value> = reads.query(c).expect("values");
        for (i, k) in keys.into_iter().enumerate() {
            let has_ttl = !matches!(meta[2 * i + 1], redis::Value::Int(-1));
            let mut shown = match &values[i] {
                redis::Value::Array(items) => {
                    let mut parts: Vec<String> = items.iter().map(|v| format!("{v:?}")).collect();
                    if kinds[i] == "set" || kinds[i] == "hash" {
                        if kinds[i] == "hash" {
                            let mut pairs: Vec<String> =
                                parts.chunks(2).map(|p| p.join("=")).collect();
                            pairs.sort();
                            parts = pairs;
                        } else {
                            parts.sort();
                        }
                    }
                    parts.join(",")
                }
                other => format!("{other:?}"),
            };
            shown = format!("{} {shown} ttl={has_ttl}", kinds[i]);
            out.insert((db, k), shown);
        }
    }
    let _: () = redis::cmd("SELECT").arg(0).query(c).expect("select");
    out
}

/// Writes of every kind from `threads` clients until `stop`, spread over 2 databases.
fn writers(port: u16, threads: usize, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..threads)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = connect(port);
                let mut rng = fastrand::Rng::with_seed(t as u64 + 7);
                let mut n = 0u64;
                let until = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    let mut p = redis::pipe();
                    p.cmd("SELECT").arg(rng.u8(0..2));
                    for _ in 0..50 {
                        let k = format!("w{}", rng.u32(0..2000));
                        match rng.u8(0..9) {
                            0 => p.cmd("SET").arg(&k).arg(rng.u64(..)),
                            1 => p.cmd("INCR").arg(format!("ctr{}", rng.u8(0..20))),
                            2 => p.cmd("RPUSH").arg(format!("l{k}")).arg(n),
                            3 => p.cmd("HSET").arg(format!("h{k}")).arg(rng.u8(..)).arg(n),
                            4 => p.cmd("SADD").arg(format!("s{k}")).arg(rng.u16(..)),
                            5 => p
                                .cmd("ZADD")
                                .arg(format!("z{k}"))
                                .arg(rng.u16(..))
                                .arg(rng.u8(..)),
                            6 => p.cmd("DEL").arg(&k),
                            7 => p.cmd("EXPIRE").arg(format!("l{k}")).arg(1000),
                            _ => p.cmd("SPOP").arg(format!("s{k}")),
                        };
                        n += 1;
                    }
                    let _: Vec<redis::Value> = p.query(&mut c).expect("writes");
                }
                n
            })
        })
        .collect()
}

/// After the replica's link was cut: half a second of writes from two threads, then the
/// replica must catch up through exactly one partial resync (and one full sync in all)
/// and equal the master.
fn writes_then_one_partial_resync(
    master_port: u16,
    master: &mut redis::Connection,
    replica: &mut redis::Connection,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let after = writers(master_port, 2, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for h in after {
        h.join().expect("writer");
    }
    assert!(wait_caught_up(master, replica), "caught up after the cut");
    assert_eq!(
        info_field(master, "stats", "sync_full").as_deref(),
        Some("1")
    );
    assert_eq!(
        info_field(master, "stats", "sync_partial_ok").as_deref(),
        Some("1")
    );
    assert_eq!(
        dataset(replica),
        dataset(master),
        "equal after the partial resync"
    );
}

fn populate(c: &mut redis::Connection, keys: usize) {
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(keys)
        .arg("key")
        .arg(16)
        .query(c)
        .expect("populate");
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("RPUSH")
            .arg(format!("list{i}"))
            .arg(i)
            .arg("b")
            .arg("c");
        p.cmd("HSET")
            .arg(format!("hash{i}"))
            .arg("f")
            .arg(i)
            .arg("g")
            .arg("v");
        p.cmd("SADD").arg(format!("set{i}")).arg(i).arg("m");
        p.cmd("ZADD")
            .arg(format!("zset{i}"))
            .arg(i)
            .arg("m")
            .arg(1.5)
            .arg("n");
    }
    // Values past the listpack limits, and a deadline.
    for i in 0..300 {
        p.cmd("HSET").arg("bighash").arg(i).arg(i);
        p.cmd("ZADD").arg("bigzset").arg(i).arg(i);
        p.cmd("RPUSH").arg("biglist").arg(i);
    }
    p.cmd("SET").arg("withttl").arg("v").arg("EX").arg(1000);
    p.cmd("SELECT")
        .arg(1)
        .cmd("SET")
        .arg("in-db-1")
        .arg("x")
        .cmd("SELECT")
        .arg(0);
    let _: Vec<redis::Value> = p.query(c).expect("populate collections");
}

#[test]
fn redis_replica_of_a_carmine_master_converges_and_resyncs_partially() {
    let server = common::start("io-threads 2\nrepl-backlog-size 64mb\nrepl-diskless-sync-delay 0");
    let mut master = connect(server.port());
    populate(&mut master, 100_000);

    let stop = Arc::new(AtomicBool::new(false));
    let during = writers(server.port(), 2, stop.clone());
    let (_replica_proc, replica_port) = redis_replica(server.port(), "disabled");
    let mut replica = connect(replica_port);
    assert!(link_up(&mut replica), "the replica finished its full sync");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let written: u64 = during.into_iter().map(|h| h.join().expect("writer")).sum();
    assert!(written > 0);
    assert!(
        wait_caught_up(&mut master, &mut replica),
        "the replica caught up"
    );
    same_data(&mut master, &mut replica, 100_000);

    // Cut the link; the replica reconnects and continues from the backlog.
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut replica)
        .expect("client kill");
    writes_then_one_partial_resync(server.port(), &mut master, &mut replica);
    let started = Instant::now();
    server.shutdown();
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A replica that loads from disk gets the `$len` payload (SYNC's form) when it cannot
/// read an EOF-marked one: `repl-diskless-sync no` on the master.
#[test]
fn redis_replica_with_a_disk_based_full_sync() {
    let server = common::start("repl-diskless-sync no");
    let mut master = connect(server.port());
    populate(&mut master, 10_000);
    let (_replica_proc, replica_port) = redis_replica(server.port(), "disabled");
    let mut replica = connect(replica_port);
    for i in 0..1000 {
        let _: () = redis::cmd("SET")
            .arg(format!("after{i}"))
            .arg(i)
            .query(&mut master)
            .expect("set");
    }
    assert!(wait_caught_up(&mut master, &mut replica), "caught up");
    assert_eq!(dataset(&mut replica), dataset(&mut master));
    server.shutdown();
}

fn redis_master() -> (Proc, u16) {
    // No 5 s wait for more replicas before the snapshot; room in the backlog for the
    // writes made while the link is down.
    redis_server(&[
        "--repl-diskless-sync-delay",
        "0",
        "--repl-backlog-size",
        "64mb",
    ])
}

/// Fills a Redis master without DEBUG (which Redis 7 disables by default).
fn fill_redis(c: &mut redis::Connection, strings: usize) {
    for chunk in (0..strings).collect::<Vec<_>>().chunks(1000) {
        let mut cmd = redis::cmd("MSET");
        for i in chunk {
            cmd.arg(format!("key:{i}")).arg(format!("value:{i}"));
        }
        let _: () = cmd.query(c).expect("mset");
    }
    let mut p = redis::pipe();
    for i in 0..500 {
        p.cmd("RPUSH").arg(format!("list{i}")).arg(i).arg("b");
        p.cmd("HSET").arg(format!("hash{i}")).arg("f").arg(i);
        p.cmd("SADD").arg(format!("set{i}")).arg(i).arg("m");
        p.cmd("ZADD").arg(format!("zset{i}")).arg(i).arg("m");
    }
    p.cmd("SET").arg("withttl").arg("v").arg("EX").arg(1000);
    p.cmd("SELECT")
        .arg(2)
        .cmd("SET")
        .arg("in-db-2")
        .arg("x")
        .cmd("SELECT")
        .arg(0);
    let _: Vec<redis::Value> = p.query(c).expect("fill");
}

#[test]
fn carmine_replica_of_a_redis_master_converges_and_resyncs_partially() {
    let (_master_proc, master_port) = redis_master();
    let mut master = connect(master_port);
    fill_redis(&mut master, 50_000);
    let server = common::start(&format!("replicaof 127.0.0.1 {master_port}"));
    let mut replica = connect(server.port());
    let stop = Arc::new(AtomicBool::new(false));
    let during = writers(master_port, 2, stop.clone());
    assert!(link_up(&mut replica), "the replica finished its full sync");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for h in during {
        h.join().expect("writer");
    }
    assert!(wait_caught_up(&mut master, &mut replica), "caught up");
    same_data(&mut master, &mut replica, 50_000);
    let values = |c: &mut redis::Connection| -> Vec<String> {
        redis::cmd("DEBUG")
            .arg("DIGEST-VALUE")
            .arg("key:1")
            .arg("list7")
            .arg("hash7")
            .arg("set7")
            .arg("zset7")
            .arg("withttl")
            .arg("missing")
            .query(c)
            .expect("digest-value")
    };
    assert_eq!(values(&mut replica), values(&mut master));

    // A replica refuses clients' writes.
    let refused = redis::cmd("SET").arg("x").arg(1).query::<()>(&mut replica);
    let text = format!("{refused:?}");
    assert!(
        text.contains("ReadOnly") && text.contains("read only replica"),
        "{text}"
    );

    // WAIT on the master counts this replica's acknowledgement.
    let _: () = redis::cmd("SET")
        .arg("acked")
        .arg(1)
        .query(&mut master)
        .expect("set");
    let n: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut master)
        .expect("wait");
    assert_eq!(n, 1);

    // Cut the link from our side; it comes back with a partial resync.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut replica)
        .expect("client kill");
    assert_eq!(killed, 1);
    writes_then_one_partial_resync(master_port, &mut master, &mut replica);

    // Promoted, it takes writes and is a master with the old history as replid2.
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut replica)
        .expect("promote");
    let _: () = redis::cmd("SET")
        .arg("x")
        .arg(1)
        .query(&mut replica)
        .expect("writable");
    assert_eq!(
        info_field(&mut replica, "replication", "role").as_deref(),
        Some("master")
    );
    let old = info_field(&mut master, "replication", "master_replid");
    assert_eq!(
        info_field(&mut replica, "replication", "master_replid2"),
        old
    );
    server.shutdown();
}

/// A chain Redis -> Carmine -> Redis: the middle replica passes its master's stream on
/// unchanged, so the last one converges too and its offset equals the first's.
#[test]
fn chained_replication_through_carmine() {
    let (_master_proc, master_port) = redis_master();
    let mut master = connect(master_port);
    fill_redis(&mut master, 5_000);
    let middle = common::start(&format!(
        "replicaof 127.0.0.1 {master_port}\nrepl-diskless-sync-delay 0"
    ));
    let mut mid = connect(middle.port());
    assert!(
        wait_caught_up(&mut master, &mut mid),
        "the middle replica caught up"
    );
    let (_leaf_proc, leaf_port) = redis_replica(middle.port(), "disabled");
    let mut leaf = connect(leaf_port);
    for i in 0..2000 {
        let _: () = redis::cmd("INCR")
            .arg(format!("c{}", i % 7))
            .query(&mut master)
            .expect("incr");
    }
    assert!(wait_caught_up(&mut master, &mut mid), "middle caught up");
    assert!(wait_caught_up(&mut mid, &mut leaf), "leaf caught up");
    assert_eq!(
        info_field(&mut leaf, "replication", "slave_repl_offset"),
        info_field(&mut master, "replication", "master_repl_offset"),
        "the chain keeps the master's offsets"
    );
    assert_eq!(dataset(&mut leaf), dataset(&mut master));
    middle.shutdown();
}

/// A TCP proxy between a replica and its master that cuts the link after a seeded
/// random number of bytes from the master, connection after connection: cuts fall in
/// the handshake, the payload and the stream. Returns the port and a switch that makes
/// later connections last.
fn cutting_proxy(
    master_port: u16,
    seed: u64,
    max_bytes: u64,
) -> (u16, Arc<AtomicBool>, Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let calm = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (calm2, cuts2) = (calm.clone(), cuts.clone());
    std::thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(seed);
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            let replica = match listener.accept() {
                Ok((s, _)) => s,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            let _ = replica.set_nonblocking(false);
            let Ok(master) = TcpStream::connect(("127.0.0.1", master_port)) else {
                continue;
            };
            // Half the cuts inside a first payload, half later: in a payload or the stream.
            let budget = if calm2.load(Ordering::Relaxed) {
                u64::MAX
            } else if rng.bool() {
                rng.u64(0..max_bytes)
            } else {
                rng.u64(max_bytes..4 * max_bytes)
            };
            let (mut m_read, mut r_write) = (
                master.try_clone().expect("clone"),
                replica.try_clone().expect("clone"),
            );
            let (mut r_read, mut m_write) = (replica, master);
            let cuts3 = cuts2.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut sent = 0u64;
                while let Ok(n) = m_read.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let n = (n as u64).min(budget - sent) as usize;
                    if r_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n as u64;
                    if sent >= budget {
                        cuts3.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                let _ = m_read.shutdown(Shutdown::Both);
                let _ = r_write.shutdown(Shutdown::Both);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = r_read.read(&mut buf) {
                    if n == 0 || m_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = r_read.shutdown(Shutdown::Both);
                let _ = m_write.shutdown(Shutdown::Both);
            });
        }
    });
    (port, calm, cuts)
}

/// The link between a Carmine master (io-threads 2, two writer threads all along) and a
/// Carmine replica is cut at random points of full syncs and of the stream; afterwards
/// the replica equals the master exactly. 12 cuts here; CARMINE_LONG_TESTS=1 makes 100.
#[test]
fn link_cut_at_random_points_then_the_replica_equals_the_master() {
    let cuts_wanted: u64 = if std::env::var("CARMINE_LONG_TESTS").is_ok() {
        100
    } else {
        12
    };
    let master_server =
        common::start("io-threads 2\nrepl-backlog-size 4mb\nrepl-diskless-sync-delay 0");
    let mut master = connect(master_server.port());
    populate(&mut master, 20_000);
    let (proxy_port, calm, cuts) = cutting_proxy(master_server.port(), 0x5eed, 1_500_000);
    let replica_server = common::start(&format!("replicaof 127.0.0.1 {proxy_port}"));
    let mut replica = connect(replica_server.port());
    let stop = Arc::new(AtomicBool::new(false));
    let during = writers(master_server.port(), 2, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(300);
    while cuts.load(Ordering::Relaxed) < cuts_wanted && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        cuts.load(Ordering::Relaxed) >= cuts_wanted,
        "the proxy cut the link"
    );
    calm.store(true, Ordering::Relaxed);
    // Kill the last cut-prone connection, so the replica reconnects through a calm one.
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut replica)
        .expect("client kill");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for h in during {
        h.join().expect("writer");
    }
    assert!(
        wait_caught_up(&mut master, &mut replica),
        "caught up after the cuts"
    );
    let full = info_field(&mut master, "stats", "sync_full");
    let partial = info_field(&mut master, "stats", "sync_partial_ok");
    assert_eq!(
        dataset(&mut replica),
        dataset(&mut master),
        "equal after {full:?} full and {partial:?} partial syncs"
    );
    replica_server.shutdown();
    master_server.shutdown();
}

/// After a partial resync the stream goes on without a new SELECT: the replica must keep
/// applying to the database its link had selected (the psync2 suite's failure: writes
/// in db 9 landed in db 0 after a cut).
#[test]
fn partial_resync_keeps_the_selected_database() {
    let (_master_proc, master_port) = redis_master();
    let mut master = connect(master_port);
    let _: () = redis::cmd("SELECT")
        .arg(9)
        .query(&mut master)
        .expect("select");
    let server = common::start(&format!("replicaof 127.0.0.1 {master_port}"));
    let mut replica = connect(server.port());
    let _: () = redis::cmd("SET")
        .arg("x")
        .arg(0)
        .query(&mut master)
        .expect("set");
    assert!(wait_caught_up(&mut master, &mut replica), "first sync");
    for _ in 0..5 {
        for _ in 0..200 {
            let _: i64 = redis::cmd("INCR")
                .arg("x")
                .query(&mut master)
                .expect("incr");
        }
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("master")
            .query(&mut replica)
            .expect("kill");
        for _ in 0..200 {
            let _: i64 = redis::cmd("INCR")
                .arg("x")
                .query(&mut master)
                .expect("incr");
        }
        assert!(wait_caught_up(&mut master, &mut replica), "caught up");
    }
    assert!(info_field(&mut master, "stats", "sync_partial_ok").is_some_and(|n| n != "0"));
    let _: () = redis::cmd("SELECT")
        .arg(9)
        .query(&mut replica)
        .expect("select");
    let x: i64 = redis::cmd("GET").arg("x").query(&mut replica).expect("get");
    assert_eq!(x, 2000);
    let _: () = redis::cmd("SELECT")
        .arg(0)
        .query(&mut replica)
        .expect("select");
    let n: i64 = redis::cmd("DBSIZE").query(&mut replica).expect("dbsize");
    assert_eq!(n, 0, "nothing applied to db 0");
    server.shutdown();
}

/// A Carmine server with its files in `dir`, on `port`, with save points (so shutdown
/// saves) and `extra` config lines.
fn carmine_in(dir: &std::path::Path, port: u16, extra: &str) -> carmine_server::Server {
    let config = carmine_commands::Config::new();
    config
        .load_text(&format!(
            "port {port}\nbind 127.0.0.1\nio-threads 2\nsave \"3600 1\"\ndir {}\n{extra}\n",
            dir.display()
        ))
        .expect("test config is valid");
    carmine_server::Server::start(config).expect("server starts")
}

/// Redis' psync2-master-restart: a master that restarts from its own dump keeps its old
/// replication id as the secondary one and its offset, so its replica continues with a
/// partial resync; the keys the load finds expired reach the replica as DELs.
#[test]
fn a_restarted_master_continues_its_replicas_from_the_dump() {
    let dir = common::scratch_dir();
    let port = common::free_port();
    let server = carmine_in(&dir, port, "repl-diskless-sync-delay 0");
    let mut master = connect(port);
    let (_replica_proc, replica_port) = redis_replica(port, "disabled");
    let mut replica = connect(replica_port);
    let _: () = redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .query(&mut master)
        .expect("no active expiry");
    for i in 0..300 {
        let _: () = redis::cmd("SELECT")
            .arg(i % 4)
            .query(&mut master)
            .expect("select");
        let _: () = redis::cmd("SET")
            .arg(format!("short{i}"))
            .arg("v")
            .arg("PX")
            .arg(50)
            .query(&mut master)
            .expect("set px");
        let _: i64 = redis::cmd("INCR")
            .arg(format!("kept{}", i % 10))
            .query(&mut master)
            .expect("incr");
    }
    assert!(wait_caught_up(&mut master, &mut replica), "first sync");
    let old_id = info_field(&mut master, "replication", "master_replid").expect("replid");
    let offset: u64 = info_field(&mut master, "replication", "master_repl_offset")
        .and_then(|o| o.parse().ok())
        .expect("offset");
    std::thread::sleep(Duration::from_millis(100));
    server.shutdown();
    let server = carmine_in(&dir, port, "repl-diskless-sync-delay 0");
    let mut master = connect(port);
    assert_eq!(
        info_field(&mut master, "persistence", "rdb_last_load_keys_expired").as_deref(),
        Some("300")
    );
    assert_eq!(
        info_field(&mut master, "replication", "master_replid2").as_deref(),
        Some(old_id.as_str())
    );
    assert_eq!(
        info_field(&mut master, "replication", "second_repl_offset"),
        Some((offset + 1).to_string())
    );
    let histlen: u64 = info_field(&mut master, "replication", "repl_backlog_histlen")
        .and_then(|o| o.parse().ok())
        .expect("histlen");
    assert!(histlen > 0, "the expired keys' DELs are in the backlog");
    assert_eq!(
        info_field(&mut master, "replication", "master_repl_offset"),
        Some((offset + histlen).to_string())
    );
    assert!(wait_caught_up(&mut master, &mut replica), "resynced");
    assert_eq!(
        info_field(&mut master, "stats", "sync_partial_ok").as_deref(),
        Some("1")
    );
    assert_eq!(
        info_field(&mut master, "stats", "sync_full").as_deref(),
        Some("0")
    );
    assert_eq!(digest(&mut replica), digest(&mut master));
    server.shutdown();
}

/// A Carmine replica restarted from its dump continues its master's stream where the
/// dump left it: a partial resync, and every INCR applied exactly once.
#[test]
fn a_restarted_replica_continues_from_its_dump() {
    let (_master_proc, master_port) = redis_master();
    let mut master = connect(master_port);
    let dir = common::scratch_dir();
    let port = common::free_port();
    let replicaof = format!("replicaof 127.0.0.1 {master_port}");
    let server = carmine_in(&dir, port, &replicaof);
    let mut replica = connect(port);
    let incr = |c: &mut redis::Connection, n: usize| {
        for i in 0..n {
            let _: i64 = redis::cmd("INCR")
                .arg(format!("n{}", i % 5))
                .query(c)
                .expect("incr");
        }
    };
    incr(&mut master, 500);
    assert!(wait_caught_up(&mut master, &mut replica), "first sync");
    // Writes keep coming while the replica saves and stops.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = writers(master_port, 2, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    server.shutdown();
    incr(&mut master, 500);
    let server = carmine_in(&dir, port, &replicaof);
    let mut replica = connect(port);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for w in busy {
        let _ = w.join();
    }
    incr(&mut master, 100);
    assert!(wait_caught_up(&mut master, &mut replica), "resynced");
    assert_eq!(
        info_field(&mut master, "stats", "sync_full").as_deref(),
        Some("1"),
        "only the first sync was a full one"
    );
    assert_eq!(
        info_field(&mut master, "stats", "sync_partial_ok").as_deref(),
        Some("1")
    );
    assert_eq!(dataset(&mut replica), dataset(&mut master));
    assert_eq!(digest(&mut replica), digest(&mut master));
    server.shutdown();
}

/// Replicas that ask for a full sync within `repl-diskless-sync-delay` share one
/// snapshot: both are told the same offset, though a write came between them, and the
/// one waiting gets newlines to keep its link alive meanwhile.
#[test]
fn replicas_arriving_together_share_one_snapshot() {
    let server = common::start("repl-diskless-sync-delay 2\nrepl-diskless-sync-max-replicas 3");
    let mut c = common::client(&server);
    let ask = |s: &mut std::net::TcpStream| {
        let (got, closed) =
            common::exchange(s, b"REPLCONF capa eof capa psync2\r\nPSYNC ? -1\r\n", |b| {
                b.starts_with(b"+OK\r\n")
            });
        assert!(!closed && got.starts_with(b"+OK\r\n"), "{got:?}");
    };
    let mut first = common::raw(&server);
    ask(&mut first);
    let _: () = redis::cmd("SET")
        .arg("between")
        .arg("1")
        .query(&mut c)
        .expect("set");
    let mut second = common::raw(&server);
    ask(&mut second);
    let fullresync = |s: &mut std::net::TcpStream| {
        let (got, _) = common::exchange(s, b"", |b| {
            b.windows(2).any(|w| w == b"\r\n") && b.contains(&b'$')
        });
        let text = String::from_utf8_lossy(&got).into_owned();
        let line = text
            .trim_start_matches('\n')
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        (line, got)
    };
    let (line1, got1) = fullresync(&mut first);
    let (line2, _) = fullresync(&mut second);
    assert!(line1.starts_with("+FULLRESYNC "), "{line1:?}");
    assert_eq!(line1, line2, "one snapshot, one offset");
    assert!(
        got1.starts_with(b"\n"),
        "keepalive newlines while waiting: {got1:?}"
    );
    let stats: String = redis::cmd("INFO").arg("stats").query(&mut c).expect("info");
    assert!(stats.contains("sync_full:2"), "{stats}");
    server.shutdown();
}

fn role_of(c: &mut redis::Connection) -> String {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(c).expect("role");
    match role.first() {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("ROLE: {other:?}"),
    }
}

/// FAILOVER hands the master role to a Carmine replica, then from there to a Debian
/// redis-server replica: each time writes are held until the target caught up, the old
/// master continues from the new one with a partial resync, and no write is lost.
#[test]
fn failover_to_a_carmine_replica_then_to_a_redis_replica() {
    let a = common::start("repl-diskless-sync-delay 0");
    let mut ca = connect(a.port());
    let b = common::start(&format!(
        "replicaof 127.0.0.1 {}\nrepl-diskless-sync-delay 0",
        a.port()
    ));
    let mut cb = connect(b.port());
    let stop = Arc::new(AtomicBool::new(false));
    let load = writers(a.port(), 1, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    assert!(link_up(&mut cb), "B synced");
    assert!(
        common::wait_until(20, || {
            let text: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut ca)
                .unwrap_or_default();
            text.contains("state=online")
        }),
        "A sees B online"
    );
    let err = redis::cmd("FAILOVER")
        .arg("TO")
        .arg("127.0.0.1")
        .arg(1)
        .query::<()>(&mut ca)
        .unwrap_err();
    assert!(err.to_string().contains("is not a replica"), "{err}");
    let _: () = redis::cmd("FAILOVER")
        .arg("TO")
        .arg("127.0.0.1")
        .arg(b.port())
        .query(&mut ca)
        .expect("failover to B");
    assert!(common::wait_until(20, || {
        info_field(&mut ca, "replication", "master_failover_state").as_deref()
            == Some("no-failover")
    }));
    stop.store(true, Ordering::Relaxed);
    // The writer's held commands ran against a replica: READONLY, as in Redis.
    for w in load {
        let _ = w.join();
    }
    assert_eq!(role_of(&mut ca), "slave");
    assert_eq!(role_of(&mut cb), "master");
    assert!(wait_caught_up(&mut cb, &mut ca), "A follows B");
    assert_eq!(
        info_field(&mut cb, "stats", "sync_partial_ok").as_deref(),
        Some("1")
    );
    assert_eq!(digest(&mut ca), digest(&mut cb));

    let (_c_proc, c_port) = redis_replica(b.port(), "disabled");
    let mut cc = connect(c_port);
    let _: i64 = redis::cmd("INCR")
        .arg("after")
        .query(&mut cb)
        .expect("incr");
    assert!(wait_caught_up(&mut cb, &mut cc), "C synced");
    let _: () = redis::cmd("FAILOVER")
        .arg("TO")
        .arg("127.0.0.1")
        .arg(c_port)
        .arg("TIMEOUT")
        .arg(10_000)
        .query(&mut cb)
        .expect("failover to C");
    assert!(common::wait_until(20, || {
        info_field(&mut cb, "replication", "master_failover_state").as_deref()
            == Some("no-failover")
            && role_of(&mut cc) == "master"
    }));
    assert_eq!(role_of(&mut cb), "slave");
    assert!(wait_caught_up(&mut cc, &mut cb), "B follows C");
    assert_eq!(digest(&mut cb), digest(&mut cc));
    b.shutdown();
    a.shutdown();
}

/// A writable replica expires the keys its own clients gave deadlines to (its master
/// never sends DELs for them), but not its master's keys, which wait for the master.
#[test]
fn a_writable_replica_expires_its_own_keys_only() {
    let master = common::start("repl-diskless-sync-delay 0");
    let mut m = connect(master.port());
    let replica = common::start(&format!(
        "replicaof 127.0.0.1 {}\nreplica-read-only no",
        master.port()
    ));
    let mut r = connect(replica.port());
    let _: () = redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .query(&mut m)
        .expect("no active expiry on the master");
    assert!(wait_caught_up(&mut m, &mut r), "synced");
    let _: () = redis::cmd("SET")
        .arg("masters")
        .arg(1)
        .arg("PX")
        .arg(1000)
        .query(&mut m)
        .expect("set");
    assert!(wait_caught_up(&mut m, &mut r), "the master's key arrived");
    let _: () = redis::cmd("SET")
        .arg("own")
        .arg(1)
        .arg("PX")
        .arg(6000)
        .query(&mut r)
        .expect("set on the replica");
    let dbsize =
        |c: &mut redis::Connection| -> i64 { redis::cmd("DBSIZE").query(c).expect("dbsize") };
    // Six seconds of margin before the replica's own key expires: CI runs this debug
    // build beside a dozen other servers on two cores, and a 2 s margin once ran out.
    // The replica may still be applying the stream it has acknowledged when CI's two
    // cores are busy: both keys must be there, within a bounded wait.
    assert!(
        common::wait_until(3, || dbsize(&mut r) == 2),
        "both keys are on the replica"
    );
    assert!(
        common::wait_until(30, || dbsize(&mut r) == 1),
        "the replica's own key expired"
    );
    assert!(
        common::wait_until(10, || {
            let exists: i64 = redis::cmd("EXISTS")
                .arg("masters")
                .query(&mut r)
                .expect("exists");
            exists == 0
        }),
        "the master's expired key reads as missing"
    );
    assert_eq!(
        dbsize(&mut r),
        1,
        "but the replica keeps it for its master's DEL"
    );
    // The live role is what CONFIG GET (and CONFIG REWRITE) report.
    let replicaof = |c: &mut redis::Connection| -> Vec<String> {
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("replicaof")
            .query(c)
            .expect("config get")
    };
    assert_eq!(
        replicaof(&mut r),
        vec![
            "replicaof".to_string(),
            format!("127.0.0.1 {}", master.port())
        ]
    );
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut r)
        .expect("no one");
    assert_eq!(
        replicaof(&mut r),
        vec!["replicaof".to_string(), String::new()]
    );
    replica.shutdown();
    master.shutdown();
}

/// The stream written while a replica receives its snapshot waits in the backlog, which
/// grows past `repl-backlog-size` for it (one copy for every replica, as Redis 7's
/// shared replication buffer) and shrinks back once the replica is live.
#[test]
fn the_backlog_holds_the_stream_written_during_a_slow_snapshot() {
    let master = common::start("repl-diskless-sync-delay 0\nrepl-backlog-size 16384");
    let mut m = connect(master.port());
    // 400 keys at 5 ms each: a two-second snapshot.
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(400)
        .query(&mut m)
        .expect("populate");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(5000)
        .query(&mut m)
        .expect("slow snapshot");
    let replica = common::start(&format!("replicaof 127.0.0.1 {}", master.port()));
    let mut r = connect(replica.port());
    assert!(
        common::wait_until(10, || {
            info_field(&mut m, "persistence", "rdb_bgsave_in_progress").as_deref() == Some("1")
        }),
        "the snapshot runs"
    );
    let big = "v".repeat(1000);
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("during{i}"))
            .arg(&big)
            .query(&mut m)
            .expect("set");
    }
    let histlen: u64 = info_field(&mut m, "replication", "repl_backlog_histlen")
        .and_then(|v| v.parse().ok())
        .expect("histlen");
    assert!(
        histlen > 200_000,
        "the backlog outgrew its 16 KiB: {histlen}"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(0)
        .query(&mut m)
        .expect("fast again");
    assert!(wait_caught_up(&mut m, &mut r), "the replica caught up");
    assert_eq!(dataset(&mut r), dataset(&mut m));
    assert!(
        common::wait_until(10, || {
            info_field(&mut m, "memory", "mem_total_replication_buffers")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|v| v <= 2 * 16384)
        }),
        "the backlog shrank back"
    );
    replica.shutdown();
    master.shutdown();
}

/// What scripts and functions change reaches a Debian redis-server replica as Redis
/// would have sent it: the libraries with the full sync's RDB and with later FUNCTION
/// LOADs, a script's writes (a random value and a counter included) as one transaction,
/// and the two datasets agree by DEBUG DIGEST.
#[test]
fn scripts_and_functions_reach_a_redis_replica_identically() {
    let server = common::start("repl-diskless-sync-delay 0");
    let mut master = connect(server.port());
    let library = |name: &str| {
        format!(
            "#!lua name={name}\nredis.register_function('{name}_bump', function(keys, args) \
             redis.call('hincrby', keys[1], args[1], 1) return redis.call('lpush', keys[2], args[1]) end)"
        )
    };
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(library("before"))
        .query(&mut master)
        .expect("load");
    let _: i64 = redis::cmd("FCALL")
        .arg("before_bump")
        .arg(2)
        .arg("h")
        .arg("l")
        .arg("a")
        .query(&mut master)
        .expect("fcall");
    let (_replica_proc, replica_port) = redis_replica(server.port(), "disabled");
    let mut replica = connect(replica_port);
    assert!(link_up(&mut replica), "the replica finished its full sync");
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(library("after"))
        .query(&mut master)
        .expect("load");
    for i in 0..50 {
        let _: i64 = redis::cmd("FCALL")
            .arg(if i % 2 == 0 {
                "before_bump"
            } else {
                "after_bump"
            })
            .arg(2)
            .arg("h")
            .arg("l")
            .arg(format!("f{}", i % 7))
            .query(&mut master)
            .expect("fcall");
        let _: redis::Value = redis::cmd("EVAL")
            .arg("redis.call('set', KEYS[1], tostring(math.random())) redis.call('incrby', KEYS[2], ARGV[1]) \
                  redis.call('sadd', KEYS[3], redis.call('get', KEYS[1])) return redis.call('get', KEYS[1])")
            .arg(3)
            .arg("r")
            .arg("n")
            .arg("s")
            .arg(i)
            .query(&mut master)
            .expect("eval");
    }
    assert!(
        wait_caught_up(&mut master, &mut replica),
        "the replica caught up"
    );
    same_data(&mut master, &mut replica, 3);
    let libraries = |c: &mut redis::Connection| -> Vec<String> {
        let listed: Vec<redis::Value> = redis::cmd("FUNCTION").arg("LIST").query(c).expect("list");
        let mut names: Vec<String> = listed
            .iter()
            .filter_map(|lib| match lib {
                redis::Value::Array(fields) | redis::Value::Set(fields) => fields
                    .windows(2)
                    .find(|w| matches!(&w[0], redis::Value::BulkString(k) if k == b"library_name"))
                    .and_then(|w| match &w[1] {
                        redis::Value::BulkString(v) => {
                            Some(String::from_utf8_lossy(v).into_owned())
                        }
                        _ => None,
                    }),
                redis::Value::Map(pairs) => pairs.iter().find_map(|(k, v)| match (k, v) {
                    (redis::Value::BulkString(k), redis::Value::BulkString(v))
                        if k == b"library_name" =>
                    {
                        Some(String::from_utf8_lossy(v).into_owned())
                    }
                    _ => None,
                }),
                _ => None,
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        libraries(&mut replica),
        vec!["after".to_string(), "before".to_string()]
    );
    assert_eq!(libraries(&mut replica), libraries(&mut master));
    server.shutdown();
}

/// Every stream of `keys` as `common::stream_state` shows it, less the groups' read
/// counters: Redis 7.0 propagates an acknowledged XREADGROUP as XCLAIMs whose LASTID
/// moves a group's position without its counter, so a Redis replica's `entries-read`
/// and `lag` differ from its master's whichever server the master is.
fn streams_view(c: &mut redis::Connection, keys: &[String]) -> Vec<redis::Value> {
    keys.iter()
        .map(|k| common::stream_state(c, k, &["entries-read", "lag"]))
        .collect()
}

/// A Redis replica of a Carmine master converges on streams under XADD, XREADGROUP, XACK,
/// XAUTOCLAIM and trimming load: through the full sync (our RDB's streams) and the
/// stream of effects after it (Redis' XCLAIM / XGROUP SETID forms).
#[test]
fn redis_replica_converges_on_streams_under_group_load() {
    let server = common::start("io-threads 2\nrepl-diskless-sync-delay 0");
    let keys: Vec<String> = (0..4).map(|i| format!("stream:{i}")).collect();
    let load = |port: u16, rounds: usize, seed: u64| {
        let keys = keys.clone();
        std::thread::spawn(move || {
            let mut c = connect(port);
            let mut rng = fastrand::Rng::with_seed(seed);
            for i in 0..rounds {
                let key = &keys[rng.usize(..keys.len())];
                let consumer = format!("c{}", rng.u8(..3));
                let mut p = redis::pipe();
                p.cmd("XADD")
                    .arg(key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(500)
                    .arg("*")
                    .arg("n")
                    .arg(i)
                    .arg("who")
                    .arg(seed);
                p.cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg(&consumer)
                    .arg("COUNT")
                    .arg(2)
                    .arg("STREAMS")
                    .arg(key)
                    .arg(">");
                if i % 3 == 0 {
                    p.cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg("g2")
                        .arg("quick")
                        .arg("NOACK")
                        .arg("STREAMS")
                        .arg(key)
                        .arg(">");
                }
                if i % 7 == 0 {
                    p.cmd("XAUTOCLAIM")
                        .arg(key)
                        .arg("g")
                        .arg("reaper")
                        .arg(0)
                        .arg("0")
                        .arg("COUNT")
                        .arg(3);
                }
                if i % 5 == 0 {
                    p.cmd("XDEL").arg(key).arg(format!("{}-0", i));
                }
                let _: Vec<redis::Value> = p.query(&mut c).expect("stream load");
                let pending: Vec<Vec<redis::Value>> = redis::cmd("XPENDING")
                    .arg(key)
                    .arg("g")
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .query(&mut c)
                    .expect("xpending");
                if let Some(redis::Value::BulkString(id)) = pending.first().and_then(|e| e.first())
                {
                    let _: i64 = redis::cmd("XACK")
                        .arg(key)
                        .arg("g")
                        .arg(id.as_slice())
                        .query(&mut c)
                        .expect("xack");
                }
            }
        })
    };
    let mut master = connect(server.port());
    for k in &keys {
        for g in ["g", "g2"] {
            let _: () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(k)
                .arg(g)
                .arg("$")
                .arg("MKSTREAM")
                .query(&mut master)
                .expect("xgroup create");
        }
    }
    load(server.port(), 3000, 1)
        .join()
        .expect("load before the sync");
    let during = [load(server.port(), 2000, 2), load(server.port(), 2000, 3)];
    let (_replica_proc, replica_port) = redis_replica(server.port(), "disabled");
    let mut replica = connect(replica_port);
    assert!(link_up(&mut replica), "the replica finished its full sync");
    for h in during {
        h.join().expect("load during the sync");
    }
    assert!(
        wait_caught_up(&mut master, &mut replica),
        "the replica caught up"
    );
    let want = streams_view(&mut master, &keys);
    assert!(
        want.iter()
            .all(|v| matches!(v, redis::Value::Array(a) if !a.is_empty())),
        "every stream is there"
    );
    let got = streams_view(&mut replica, &keys);
    // One line per value, so that a difference is shown where it is.
    fn flat(v: &redis::Value, out: &mut Vec<String>) {
        match v {
            redis::Value::Array(a) => a.iter().for_each(|x| flat(x, out)),
            redis::Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
            other => out.push(format!("{other:?}")),
        }
    }
    let (mut w, mut g) = (Vec::new(), Vec::new());
    want.iter().for_each(|v| flat(v, &mut w));
    got.iter().for_each(|v| flat(v, &mut g));
    if let Some(at) = (0..w.len().max(g.len())).find(|&i| w.get(i) != g.get(i)) {
        let from = at.saturating_sub(8);
        panic!(
            "the replica differs at line {at}: master {:?}, replica {:?}",
            &w[from..(at + 2).min(w.len())],
            &g[from..(at + 2).min(g.len())]
        );
    }
    server.shutdown();
}

/// `repl-diskless-load swapdb`, a master the replica never followed (another history):
/// while its dataset arrives the replica is loading (INFO loading:1, -LOADING to
/// requests), as Redis is; if the master goes away meanwhile, the old dataset stays and
/// is served again.
#[test]
fn a_swapdb_replica_keeps_its_data_when_the_sync_breaks() {
    let master = common::start("repl-diskless-sync-delay 0\nrdb-key-save-delay 20000");
    let mut m = connect(master.port());
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(i)
            .arg("v")
            .query(&mut m)
            .expect("set");
    }
    let replica = common::start("repl-diskless-load swapdb");
    let mut r = connect(replica.port());
    let _: () = redis::cmd("SET")
        .arg("old")
        .arg("kept")
        .query(&mut r)
        .expect("set");
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(master.port())
        .query(&mut r)
        .expect("replicaof");
    assert!(
        common::wait_until(10, || info_field(&mut r, "persistence", "loading")
            .as_deref()
            == Some("1")),
        "the replica loads"
    );
    assert_eq!(
        info_field(&mut r, "persistence", "async_loading").as_deref(),
        Some("0")
    );
    master.shutdown();
    assert!(
        common::wait_until(10, || info_field(&mut r, "persistence", "loading")
            .as_deref()
            == Some("0")),
        "the broken sync ends"
    );
    let old: Option<String> = redis::cmd("GET").arg("old").query(&mut r).expect("served");
    assert_eq!(old.as_deref(), Some("kept"), "the old dataset stays");
    replica.shutdown();
}

/// A diskless-loading replica parses the payload as it arrives (Redis' diskless load),
/// so a slow load (`key-load-delay`) holds back the master's transfer instead of the
/// replica taking the whole payload into memory first: while it loads, most of the
/// payload is still unsent and the master's transfer still runs. Lowering the delay
/// finishes the sync with the master's exact dataset.
#[test]
fn a_diskless_load_paces_the_masters_transfer() {
    let master = common::start("repl-diskless-sync-delay 0\nrdbcompression no");
    let mut m = connect(master.port());
    // About 40 MB of payload: far more than the sockets' buffers hold.
    common::query::<()>(&mut m, &["DEBUG", "POPULATE", "40000", "key", "1000"]);
    let replica = common::start("repl-diskless-load swapdb\nkey-load-delay 100");
    let mut r = connect(replica.port());
    common::query::<()>(
        &mut r,
        &["REPLICAOF", "127.0.0.1", &master.port().to_string()],
    );
    assert!(
        common::wait_until(20, || info_field(&mut r, "persistence", "loading")
            .as_deref()
            == Some("1")),
        "the replica loads"
    );
    std::thread::sleep(Duration::from_millis(300));
    let read: u64 = info_field(&mut r, "replication", "master_sync_read_bytes")
        .and_then(|v| v.parse().ok())
        .expect("master_sync_read_bytes while loading");
    assert!(
        read < 20_000_000,
        "{read} bytes of a 40 MB payload received while loading it"
    );
    assert_eq!(
        info_field(&mut m, "persistence", "rdb_bgsave_in_progress").as_deref(),
        Some("1"),
        "the master's transfer waits for the replica"
    );
    common::query::<()>(&mut r, &["CONFIG", "SET", "key-load-delay", "0"]);
    common::query::<()>(&mut m, &["SET", "after", "sync"]);
    assert!(wait_caught_up(&mut m, &mut r), "synced");
    assert_eq!(common::query::<i64>(&mut r, &["DBSIZE"]), 40001);
    assert_eq!(digest(&mut m), digest(&mut r));
}

/// A command the master sent before a key's deadline, applied by the replica after its
/// own clock passed it, still finds the key (Redis' replica never expires a key for its
/// master's commands): the INCR below makes 2 of the old value and keeps the deadline,
/// so the key stays logically expired, instead of starting over at 1 with no deadline.
/// DEBUG REPLICATE sends the late INCR.
#[test]
fn a_late_command_from_the_master_finds_a_key_past_its_deadline() {
    let master = common::start("repl-diskless-sync-delay 0");
    let mut m = connect(master.port());
    let replica = common::start(&format!("replicaof 127.0.0.1 {}", master.port()));
    let mut r = connect(replica.port());
    common::query::<()>(&mut m, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    assert!(wait_caught_up(&mut m, &mut r), "synced");
    common::query::<()>(&mut m, &["SET", "k", "1", "PX", "100"]);
    assert!(wait_caught_up(&mut m, &mut r), "the key arrived");
    std::thread::sleep(Duration::from_millis(150));
    common::query::<()>(&mut m, &["DEBUG", "REPLICATE", "INCR", "k"]);
    assert!(wait_caught_up(&mut m, &mut r), "the INCR arrived");
    assert_eq!(common::query::<i64>(&mut r, &["EXISTS", "k"]), 0);
    let object: String = common::query(&mut r, &["DEBUG", "OBJECT", "k"]);
    assert!(object.contains("encoding:int"), "{object}");
    assert_eq!(
        info_field(&mut r, "stats", "unexpected_error_replies").as_deref(),
        Some("0")
    );
}

/// A command from the master that fails on the replica is counted (INFO
/// `unexpected_error_replies`), and the link goes on.
#[test]
fn a_failing_command_from_the_master_is_counted_and_the_link_goes_on() {
    let master = common::start("repl-diskless-sync-delay 0");
    let mut m = connect(master.port());
    let replica = common::start(&format!("replicaof 127.0.0.1 {}", master.port()));
    let mut r = connect(replica.port());
    assert!(wait_caught_up(&mut m, &mut r), "synced");
    common::query::<()>(&mut m, &["DEBUG", "REPLICATE", "fake-command-1"]);
    common::query::<()>(&mut m, &["SET", "after", "1"]);
    assert!(wait_caught_up(&mut m, &mut r), "caught up");
    assert_eq!(
        info_field(&mut r, "stats", "unexpected_error_replies").as_deref(),
        Some("1")
    );
    assert_eq!(common::query::<String>(&mut r, &["GET", "after"]), "1");
    // Neither ran on the master.
    assert_eq!(
        info_field(&mut m, "stats", "unexpected_error_replies").as_deref(),
        Some("0")
    );
}

/// `propagation-error-behavior panic` (what Redis' own test configuration sets): a
/// read-only replica stops, with Redis' words in its log, rather than go on with a
/// dataset that may differ from its master's. A writable replica only logs it.
#[test]
fn a_replica_told_to_panic_stops_on_an_error_from_its_master() {
    let master = common::start("repl-diskless-sync-delay 0");
    let mut m = connect(master.port());
    let spawn_replica = |read_only: &str| {
        let port = common::free_port();
        let dir = common::scratch_dir();
        let log = dir.join("replica.log");
        let child = Command::new(env!("CARGO_BIN_EXE_carmine-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--propagation-error-behavior", "panic"])
            .args(["--replica-read-only", read_only])
            .args(["--replicaof", "127.0.0.1", &master.port().to_string()])
            .arg("--logfile")
            .arg(&log)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("carmine-server starts");
        assert!(common::wait_port(port, 10), "the replica listens");
        (Proc(child), port, log)
    };
    let (mut writable, writable_port, _) = spawn_replica("no");
    let (mut read_only, read_only_port, log) = spawn_replica("yes");
    for port in [writable_port, read_only_port] {
        let mut r = connect(port);
        assert!(wait_caught_up(&mut m, &mut r), "synced");
    }
    common::query::<()>(&mut m, &["DEBUG", "REPLICATE", "fake-command-1"]);
    let exited = common::wait_until(10, || matches!(read_only.0.try_wait(), Ok(Some(_))));
    assert!(exited, "the read-only replica stops");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("== CRITICAL == This replica is sending an error to its master")
            && text.contains("This replica panicked sending an error to its master"),
        "{text}"
    );
    common::query::<()>(&mut m, &["SET", "after", "1"]);
    let mut w = connect(writable_port);
    assert!(
        wait_caught_up(&mut m, &mut w),
        "the writable replica goes on"
    );
    assert!(matches!(writable.0.try_wait(), Ok(None)));
}

/// `repl-diskless-load swapdb`, as Redis: a replica receiving a dataset of another
/// history (a master it never followed) is `loading` and serves nothing meanwhile; one
/// receiving a new copy of the history it follows keeps serving the old dataset
/// (`async_loading`) but refuses, with -LOADING, what Redis refuses then (REPLICAOF,
/// SAVE, CONFIG SET appendonly ...). A transfer that fails leaves the old dataset.
#[test]
fn swapdb_full_sync_loads_or_loads_async_by_history() {
    let master = common::start("repl-diskless-sync-delay 0\nrdbcompression no");
    let mut m = connect(master.port());
    let replica = common::start("repl-diskless-load swapdb");
    let mut r = connect(replica.port());
    for i in 0..300 {
        common::query::<()>(&mut m, &["SET", &format!("m{i}"), "v"]);
    }
    common::query::<()>(&mut r, &["SET", "mykey", "myvalue"]);
    // 10 ms per key: three seconds of transfer.
    common::query::<()>(&mut m, &["CONFIG", "SET", "rdb-key-save-delay", "10000"]);
    common::query::<()>(
        &mut r,
        &["REPLICAOF", "127.0.0.1", &master.port().to_string()],
    );
    let info = |c: &mut redis::Connection, f: &str| info_field(c, "persistence", f);
    assert!(
        common::wait_until(10, || info(&mut r, "loading").as_deref() == Some("1")),
        "another history: loading"
    );
    assert_eq!(info(&mut r, "async_loading").as_deref(), Some("0"));
    let refused = redis::cmd("GET").arg("mykey").query::<String>(&mut r);
    assert_eq!(
        refused.map_err(|e| e.code().map(str::to_string)),
        Err(Some("LOADING".into()))
    );
    common::query::<i64>(&mut m, &["CLIENT", "KILL", "TYPE", "replica"]);
    assert!(common::wait_until(10, || info(&mut r, "loading")
        .as_deref()
        == Some("0")));
    assert_eq!(
        common::query::<String>(&mut r, &["GET", "mykey"]),
        "myvalue"
    );

    // The same history again: the next sync completes, then one more is forced.
    common::query::<()>(&mut m, &["CONFIG", "SET", "rdb-key-save-delay", "0"]);
    assert!(wait_caught_up(&mut m, &mut r), "synced");
    assert_eq!(common::query::<i64>(&mut r, &["DBSIZE"]), 300);
    common::query::<()>(&mut m, &["CONFIG", "SET", "rdb-key-save-delay", "10000"]);
    common::query::<()>(&mut m, &["CONFIG", "SET", "repl-backlog-size", "16384"]);
    let big = "x".repeat(4096);
    for i in 0..10 {
        common::query::<()>(&mut m, &["SET", &format!("fill{i}"), &big]);
    }
    assert!(wait_caught_up(&mut m, &mut r));
    // The replica's offset drops out of the backlog while it is away.
    common::query::<i64>(&mut m, &["CLIENT", "KILL", "TYPE", "replica"]);
    for i in 0..10 {
        common::query::<()>(&mut m, &["SET", &format!("fill{i}"), &big]);
    }
    assert!(
        common::wait_until(10, || info(&mut r, "async_loading").as_deref() == Some("1")),
        "the same history: async loading"
    );
    assert_eq!(info(&mut r, "loading").as_deref(), Some("0"));
    assert_eq!(common::query::<String>(&mut r, &["GET", "m1"]), "v");
    for args in [
        &["CONFIG", "SET", "appendonly", "no"][..],
        &["REPLICAOF", "NO", "ONE"][..],
        &["SAVE"][..],
    ] {
        let refused = redis::cmd(args[0]).arg(&args[1..]).query::<String>(&mut r);
        assert_eq!(
            refused.map_err(|e| e.code().map(str::to_string)),
            Err(Some("LOADING".into())),
            "{args:?}"
        );
    }
    // The received payload loads beside the old dataset (3 ms per key here), which
    // serves until the swap: no request of the whole sync gets -LOADING.
    common::query::<()>(&mut r, &["CONFIG", "SET", "key-load-delay", "3000"]);
    common::query::<()>(&mut m, &["CONFIG", "SET", "rdb-key-save-delay", "0"]);
    common::query::<()>(&mut m, &["SET", "after-sync", "1"]);
    let mut served = 0;
    let synced = common::wait_until(60, || {
        let got = redis::cmd("GET").arg("m1").query::<Option<String>>(&mut r);
        assert_eq!(
            got.map_err(|e| e.to_string()),
            Ok(Some("v".into())),
            "served meanwhile"
        );
        served += 1;
        common::query::<Option<String>>(&mut r, &["GET", "after-sync"]).is_some()
    });
    assert!(synced, "synced again");
    assert!(served > 1);
    assert!(wait_caught_up(&mut m, &mut r));
    assert_eq!(
        common::query::<i64>(&mut r, &["DBSIZE"]),
        common::query::<i64>(&mut m, &["DBSIZE"])
    );
    assert_eq!(digest(&mut r), digest(&mut m));
}

/// A reply to a write leaves only once the write is in the kernel towards every live
/// replica, whichever event loop serves that replica: a master killed (`kill -9`) right
/// after a reply has still sent the write to its replica (Redis writes its replicas
/// before its clients in `beforeSleep`). Writers on both of the master's event loops
/// pipeline INCRs of their own counters; the master is killed at a random moment, and
/// the replica must hold at least every value a writer saw acknowledged. Before the
/// writer's loop wrote replicas' bytes itself, a replica on the other loop got them a
/// moment after the reply, and most rounds lost some.
#[test]
fn a_master_killed_right_after_a_reply_has_sent_the_write_to_its_replica() {
    let rounds: u64 = std::env::var("CARMINE_KILL_AFTER_REPLY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut rng = fastrand::Rng::with_seed(0x5eed_0001);
    for round in 0..rounds {
        let port = common::free_port();
        let dir = common::scratch_dir();
        let mut master = common::Proc {
            child: Command::new(env!("CARGO_BIN_EXE_carmine-server"))
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--io-threads", "2", "--save", "", "--appendonly", "no"])
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(dir.join("log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("carmine-server starts"),
            port,
        };
        assert!(common::wait_port(port, 10), "master listens");
        let replica = common::start(&format!("replicaof 127.0.0.1 {port}"));
        let mut rc = common::client(&replica);
        assert!(link_up(&mut rc), "round {round}: the replica syncs");
        let writers = 6;
        let acked: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
            (0..writers)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        );
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let acked = acked.clone();
                std::thread::spawn(move || {
                    let Ok(mut c) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
                    else {
                        return;
                    };
                    let until = Instant::now() + Duration::from_secs(30);
                    while Instant::now() < until {
                        let mut p = redis::pipe();
                        for _ in 0..8 {
                            p.cmd("INCR").arg(format!("counter{w}"));
                        }
                        match p.query::<Vec<u64>>(&mut c) {
                            Ok(values) => {
                                let last = values.last().copied().unwrap_or(0);
                                acked[w].fetch_max(last, Ordering::Relaxed);
                            }
                            // The master is gone.
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(150..400)));
        master.kill();
        for h in handles {
            h.join().expect("writer thread");
        }
        let want: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        assert!(
            want.iter().all(|&n| n > 0),
            "round {round}: every writer wrote"
        );
        // What reached the replica's socket is applied within moments.
        let mut have = Vec::new();
        let settled = common::wait_until(5, || {
            have = (0..writers)
                .map(|w| {
                    redis::cmd("GET")
                        .arg(format!("counter{w}"))
                        .query::<Option<u64>>(&mut rc)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                })
                .collect();
            have.iter().zip(&want).all(|(h, w)| h >= w)
        });
        assert!(
            settled,
            "round {round}: acknowledged {want:?}, the replica holds {have:?}; {}\nthe master's log:\n{}",
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut rc)
                .unwrap_or_default(),
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        replica.shutdown();
    }
}
