//! RDB compatibility with Debian's redis-server 7.0, both ways: a corpus of dumps Redis
//! writes (every type, small and large encodings, compressed and not, expiries, two
//! databases) loads into Carmine with identical contents; Carmine's dumps pass
//! redis-check-rdb and load into Redis; DUMP payloads move between the two.
//! `cargo xtask test` installs redis-server and redis-tools.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carmine_commands::Config;
use carmine_server::Server;

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("carmine-rdb-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn redis(dir: &Path, extra: &[&str]) -> Redis {
    let port = common::free_port();
    let child = common::local_server_command("redis-server", None, port, dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts (cargo xtask test installs it)");
    assert!(
        common::wait_port(port, 20),
        "redis-server did not listen on {port}"
    );
    Redis(child, port)
}

/// Carmine's config for files in `dir`, saving only when asked.
fn carmine_config(dir: &Path) -> Config {
    let config = Config::new();
    config
        .load_text(&format!(
            "port 0\nbind 127.0.0.1\nsave \"\"\ndir {}\n",
            dir.display()
        ))
        .expect("config");
    config
}

fn carmine(dir: &Path) -> Server {
    Server::start(carmine_config(dir)).expect("carmine starts and loads the dump")
}

fn conn(port: u16) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let con = c
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect");
    con.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    con
}

/// Every type in small and large encodings, integers, compressible and random strings,
/// deadlines, and a second database.
fn populate(c: &mut redis::Connection) {
    let q = |c: &mut redis::Connection, cmd: &mut redis::Cmd| {
        let _: redis::Value = cmd.query(c).expect("populate");
    };
    q(c, redis::cmd("SET").arg("str:small").arg("hello"));
    q(c, redis::cmd("SET").arg("str:int").arg("-123456"));
    q(
        c,
        redis::cmd("SET")
            .arg("str:bigint")
            .arg("9223372036854775807"),
    );
    q(
        c,
        redis::cmd("SET")
            .arg("str:compressible")
            .arg("abcd".repeat(10_000)),
    );
    let random: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    q(c, redis::cmd("SET").arg("str:random").arg(random));
    q(c, redis::cmd("SET").arg("str:empty").arg(""));
    // Past 64 KiB Carmine keeps strings in pieces and writes them piece by piece.
    let big_random: Vec<u8> = (0..200_002u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    q(c, redis::cmd("SET").arg("str:big-random").arg(&big_random));
    q(
        c,
        redis::cmd("SET")
            .arg("str:big-pattern")
            .arg("wxyz".repeat(70_000)),
    );
    q(
        c,
        redis::cmd("APPEND")
            .arg("str:big-pattern")
            .arg(&big_random[..5000]),
    );
    q(
        c,
        redis::cmd("SETRANGE")
            .arg("str:big-pattern")
            .arg(65_530)
            .arg("across"),
    );
    q(
        c,
        redis::cmd("SETBIT").arg("str:bitmap").arg(8_000_003).arg(1),
    );
    q(c, redis::cmd("SETBIT").arg("str:bitmap").arg(7).arg(1));
    q(
        c,
        redis::cmd("SET")
            .arg("str:ttl")
            .arg("v")
            .arg("PX")
            .arg(900_000),
    );
    q(
        c,
        redis::cmd("RPUSH")
            .arg("list:small")
            .arg(&["a", "1", "-5", "bb"]),
    );
    let big: Vec<String> = (0..3000)
        .map(|i| {
            if i % 2 == 0 {
                i.to_string()
            } else {
                format!("item-{i}-xxxxxxxx")
            }
        })
        .collect();
    q(c, redis::cmd("RPUSH").arg("list:large").arg(&big));
    q(
        c,
        redis::cmd("HSET")
            .arg("hash:small")
            .arg(&["f", "v", "n", "42"]),
    );
    for i in 0..600 {
        q(
            c,
            redis::cmd("HSET")
                .arg("hash:large")
                .arg(format!("field:{i}"))
                .arg(format!("value-{i}")),
        );
    }
    q(
        c,
        redis::cmd("HSET")
            .arg("hash:longvalue")
            .arg("f")
            .arg("x".repeat(200)),
    );
    q(
        c,
        redis::cmd("SADD")
            .arg("set:ints")
            .arg(&["1", "-2", "300000", "70000000000"]),
    );
    q(c, redis::cmd("SADD").arg("set:small").arg(&["a", "b", "c"]));
    let members: Vec<String> = (0..700).map(|i| format!("m{i}")).collect();
    q(c, redis::cmd("SADD").arg("set:large").arg(&members));
    q(
        c,
        redis::cmd("ZADD")
            .arg("zset:small")
            .arg(&["1", "a", "2.5", "b", "-inf", "c"]),
    );
    for i in 0..300 {
        q(
            c,
            redis::cmd("ZADD")
                .arg("zset:large")
                .arg(f64::from(i) * 0.1)
                .arg(format!("member-{i}")),
        );
    }
    q(c, redis::cmd("PFADD").arg("hll").arg(&["x", "y", "z"]));
    q(c, redis::cmd("HSET").arg("ttl:hash").arg("f").arg("v"));
    q(c, redis::cmd("PEXPIRE").arg("ttl:hash").arg(600_000));
    q(c, redis::cmd("SELECT").arg(1));
    q(c, redis::cmd("SET").arg("db1:key").arg("in db 1"));
    q(c, redis::cmd("RPUSH").arg("db1:list").arg(&["p", "q"]));
    q(c, redis::cmd("SELECT").arg(0));
}

/// (db, key) -> (type, canonical contents, has a deadline).
type Contents = BTreeMap<(u8, Vec<u8>), (String, Vec<Vec<u8>>, bool)>;

fn contents(port: u16) -> Contents {
    let mut out = BTreeMap::new();
    for db in 0..2u8 {
        let mut c = conn(port);
        let _: () = redis::cmd("SELECT").arg(db).query(&mut c).expect("select");
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c).expect("keys");
        for k in keys {
            let t: String = redis::cmd("TYPE").arg(&k).query(&mut c).expect("type");
            let mut v: Vec<Vec<u8>> = match t.as_str() {
                "string" => vec![redis::cmd("GET").arg(&k).query(&mut c).expect("get")],
                "list" => redis::cmd("LRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query(&mut c)
                    .expect("lrange"),
                "hash" => redis::cmd("HGETALL")
                    .arg(&k)
                    .query(&mut c)
                    .expect("hgetall"),
                "set" => redis::cmd("SMEMBERS")
                    .arg(&k)
                    .query(&mut c)
                    .expect("smembers"),
                "zset" => redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(&mut c)
                    .expect("zrange"),
                other => panic!("unexpected type {other}"),
            };
            if t == "hash" {
                let mut pairs: Vec<Vec<u8>> = v.chunks(2).map(|p| p.concat()).collect();
                pairs.sort();
                v = pairs;
            } else if t == "set" {
                v.sort();
            }
            let pttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).expect("pttl");
            out.insert((db, k), (t, v, pttl > 0));
        }
    }
    out
}

/// Polls INFO persistence until `done` holds (returning that INFO), failing after `secs`.
fn wait_for_persistence(
    c: &mut redis::Connection,
    secs: u64,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query(c)
            .expect("info");
        if done(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "not done within {secs} s: {info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn save(port: u16) {
    let mut c = conn(port);
    let ok: String = redis::cmd("SAVE").query(&mut c).expect("SAVE");
    assert_eq!(ok, "OK");
}

fn check_rdb(path: &Path) {
    let out = Command::new("redis-check-rdb")
        .arg(path)
        .output()
        .expect("redis-check-rdb runs (cargo xtask test installs redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("RDB looks OK"),
        "{text}"
    );
}

#[test]
fn redis_dumps_load_into_carmine_and_back() {
    for (name, config) in [
        ("compressed", vec!["--rdbcompression", "yes"]),
        ("plain", vec!["--rdbcompression", "no"]),
        // Every list node small, hashes and zsets forced out of listpack.
        (
            "encodings",
            vec![
                "--list-max-listpack-size",
                "4",
                "--hash-max-listpack-entries",
                "2",
                "--zset-max-listpack-entries",
                "2",
                "--set-max-intset-entries",
                "2",
            ],
        ),
    ] {
        let rdir = scratch(&format!("redis-{name}"));
        let r = redis(&rdir, &config);
        populate(&mut conn(r.1));
        let expected = contents(r.1);
        // The same commands on Carmine build the same contents.
        let fresh = carmine(&scratch(&format!("carmine-fresh-{name}")));
        populate(&mut conn(fresh.port()));
        assert_eq!(
            contents(fresh.port()),
            expected,
            "{name}: Carmine ran populate as Redis does"
        );
        fresh.shutdown();
        save(r.1);
        drop(r);
        check_rdb(&rdir.join("dump.rdb"));

        // Redis' dump into Carmine.
        let cdir = scratch(&format!("carmine-{name}"));
        std::fs::copy(rdir.join("dump.rdb"), cdir.join("dump.rdb")).expect("copy");
        let c = carmine(&cdir);
        assert_eq!(
            contents(c.port()),
            expected,
            "{name}: Carmine loaded Redis' dump"
        );

        // Carmine's dump into Redis.
        save(c.port());
        c.shutdown();
        check_rdb(&cdir.join("dump.rdb"));
        let back = redis(&cdir, &[]);
        assert_eq!(
            contents(back.1),
            expected,
            "{name}: Redis loaded Carmine's dump"
        );
    }
}

#[test]
fn dump_payloads_move_between_redis_and_carmine() {
    let rdir = scratch("dump-redis");
    let r = redis(&rdir, &[]);
    let mut rc = conn(r.1);
    populate(&mut rc);
    let cdir = scratch("dump-carmine");
    let c = carmine(&cdir);
    let mut cc = conn(c.port());
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut rc).expect("keys");
    for k in &keys {
        let payload: Vec<u8> = redis::cmd("DUMP").arg(k).query(&mut rc).expect("dump");
        let _: () = redis::cmd("RESTORE")
            .arg(k)
            .arg(0)
            .arg(&payload)
            .query(&mut cc)
            .expect("restore into carmine");
        // And back: Carmine's payload of the same key restores into Redis.
        let ours: Vec<u8> = redis::cmd("DUMP")
            .arg(k)
            .query(&mut cc)
            .expect("carmine dump");
        let _: () = redis::cmd("RESTORE")
            .arg(k)
            .arg(0)
            .arg(&ours)
            .arg("REPLACE")
            .query(&mut rc)
            .expect("restore into redis");
    }
    let mut a = contents(r.1);
    let mut b = contents(c.port());
    // Deadlines are not part of a DUMP payload.
    a.retain(|k, _| k.0 == 0);
    b.retain(|k, _| k.0 == 0);
    for v in a.values_mut().chain(b.values_mut()) {
        v.2 = false;
    }
    assert_eq!(a, b);
    // A damaged payload is refused with Redis' error.
    let mut payload: Vec<u8> = redis::cmd("DUMP")
        .arg("str:small")
        .query(&mut cc)
        .expect("dump");
    payload[1] ^= 0x40;
    let err = redis::cmd("RESTORE")
        .arg("bad")
        .arg(0)
        .arg(&payload)
        .query::<()>(&mut cc)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("DUMP payload version or checksum are wrong"),
        "{err}"
    );
    let err = redis::cmd("RESTORE")
        .arg("str:small")
        .arg(0)
        .arg(&payload)
        .query::<()>(&mut cc)
        .unwrap_err();
    assert!(err.to_string().contains("BUSYKEY"), "{err}");
    c.shutdown();
}

#[test]
fn corrupt_dump_is_refused_at_start_up_with_its_offset() {
    let dir = scratch("corrupt");
    let c = carmine(&dir);
    let mut cc = conn(c.port());
    populate(&mut cc);
    save(c.port());
    c.shutdown();
    let path = dir.join("dump.rdb");
    let mut data = std::fs::read(&path).expect("dump");
    let n = data.len();
    data.truncate(n / 2);
    std::fs::write(&path, &data).expect("write");
    let err = match Server::start(carmine_config(&dir)) {
        Ok(s) => {
            s.shutdown();
            panic!("a truncated dump must not load");
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("at offset"), "{err}");
}

/// FLUSHALL stops a running BGSAVE (Redis kills its child): the save does not finish,
/// is not counted as failed (writes go on), and leaves the change counter as it was.
#[test]
fn flushall_stops_a_running_bgsave() {
    let dir = scratch("flushall-bgsave");
    let c = carmine(&dir);
    let mut cc = conn(c.port());
    for i in 0..2000 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut cc)
            .expect("set");
    }
    // 2000 keys at 2 ms each: a 4-second walk unless something stops it.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg("2000")
        .query(&mut cc)
        .expect("config set");
    let started: String = redis::cmd("BGSAVE").query(&mut cc).expect("bgsave");
    assert_eq!(started, "Background saving started");
    let running: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut cc)
        .expect("info");
    assert!(running.contains("rdb_bgsave_in_progress:1"), "{running}");
    // The walk's progress, as a forked child's would be reported.
    assert!(
        running.contains("current_save_keys_total:2000"),
        "{running}"
    );
    assert!(running.contains("current_cow_size:"), "{running}");
    let _: () = redis::cmd("FLUSHALL").query(&mut cc).expect("flushall");
    // Within 3 s, where the walk alone takes 4.
    let info = wait_for_persistence(&mut cc, 3, |info| info.contains("rdb_bgsave_in_progress:0"));
    assert!(info.contains("rdb_last_bgsave_status:ok"), "{info}");
    let changes: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("rdb_changes_since_last_save:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("rdb_changes_since_last_save");
    assert!(
        changes >= 2000,
        "the stopped save reset the counter: {changes}"
    );
    assert!(
        !dir.join("dump.rdb").exists(),
        "a stopped save wrote the dump"
    );
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut cc)
        .expect("still writable");
    c.shutdown();
}

#[test]
fn debug_reload_and_bgsave_keep_every_key() {
    let dir = scratch("reload");
    let c = carmine(&dir);
    let mut cc = conn(c.port());
    populate(&mut cc);
    let before = contents(c.port());
    let ok: String = redis::cmd("DEBUG")
        .arg("RELOAD")
        .query(&mut cc)
        .expect("reload");
    assert_eq!(ok, "OK");
    assert_eq!(contents(c.port()), before);
    let started: String = redis::cmd("BGSAVE").query(&mut cc).expect("bgsave");
    assert_eq!(started, "Background saving started");
    // Writes during the background save land in memory, not in the snapshot.
    for i in 0..1000 {
        let _: () = redis::cmd("SET")
            .arg(format!("during:{i}"))
            .arg(i)
            .query(&mut cc)
            .expect("set");
    }
    let info = wait_for_persistence(&mut cc, 30, |info| {
        info.contains("rdb_bgsave_in_progress:0")
    });
    assert!(info.contains("rdb_last_bgsave_status:ok"), "{info}");
    c.shutdown();
    check_rdb(&dir.join("dump.rdb"));
    let r = redis(&dir, &[]);
    let loaded = contents(r.1);
    // The snapshot began before BGSAVE replied: nothing written after it is in the file.
    assert_eq!(
        loaded.len(),
        before.len(),
        "the dump holds exactly the state at BGSAVE"
    );
    for (k, v) in &before {
        assert_eq!(loaded.get(k), Some(v), "{}", String::from_utf8_lossy(&k.1));
    }
}

#[test]
fn data_commands_get_loading_while_a_dump_loads() {
    let dir = scratch("loading");
    let c = carmine(&dir);
    let mut cc = conn(c.port());
    let p = &c.shared().persist;
    p.loading_total_bytes
        .store(1000, std::sync::atomic::Ordering::Relaxed);
    p.loading_loaded_bytes
        .store(250, std::sync::atomic::Ordering::Relaxed);
    p.loading.store(true, std::sync::atomic::Ordering::Release);
    let err = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut cc)
        .unwrap_err();
    // The client maps the "-LOADING" prefix to its busy-loading kind.
    assert_eq!(err.kind(), redis::ErrorKind::BusyLoadingError, "{err}");
    // As in Redis, PING is refused too; INFO (flagged `loading`) answers.
    let err = redis::cmd("PING").query::<String>(&mut cc).unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::BusyLoadingError, "{err}");
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut cc)
        .expect("INFO");
    assert!(
        info.contains("loading:1") && info.contains("loading_loaded_perc:25.00"),
        "{info}"
    );
    p.loading.store(false, std::sync::atomic::Ordering::Release);
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query(&mut cc)
        .expect("GET after loading");
    assert_eq!(v, None);
    c.shutdown();
}

#[test]
fn save_points_trigger_a_background_save() {
    let dir = scratch("savepoints");
    let config = carmine_config(&dir);
    config.load_text("save 1 1").expect("save point");
    let c = Server::start(config).expect("starts");
    let mut cc = conn(c.port());
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut cc)
        .expect("set");
    wait_for_persistence(&mut cc, 10, |info| {
        info.contains("rdb_changes_since_last_save:0") && info.contains("rdb_saves:1")
    });
    assert!(dir.join("dump.rdb").exists());
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("save")
        .arg("")
        .query(&mut cc)
        .expect("config");
    c.shutdown();
}

/// Streams Redis built (nodes of 3 entries with tombstones, entries of other fields,
/// groups with pending entries, an idle consumer, a group of unknown read counter, an
/// emptied stream with a group).
fn populate_streams(c: &mut redis::Connection) {
    let q = |c: &mut redis::Connection, cmd: &mut redis::Cmd| {
        let _: redis::Value = cmd.query(c).expect("populate streams");
    };
    q(
        c,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("stream-node-max-entries")
            .arg(3),
    );
    for i in 1..=40u64 {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("stream").arg(format!("{}-{}", 1000 + i / 3, i % 3));
        if i % 5 == 0 {
            cmd.arg("other").arg(i).arg("more").arg("x".repeat(100));
        } else {
            cmd.arg("name")
                .arg(format!("item-{i}"))
                .arg("n")
                .arg(i * 1000);
        }
        q(c, &mut cmd);
    }
    for i in [4u64, 6, 7, 8, 22, 40] {
        q(
            c,
            redis::cmd("XDEL")
                .arg("stream")
                .arg(format!("{}-{}", 1000 + i / 3, i % 3)),
        );
    }
    q(
        c,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream")
            .arg("workers")
            .arg("0"),
    );
    for (consumer, count) in [("alice", 3), ("bob", 2), ("alice", 1)] {
        q(
            c,
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("workers")
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg("stream")
                .arg(">"),
        );
    }
    q(
        c,
        redis::cmd("XACK")
            .arg("stream")
            .arg("workers")
            .arg("1000-1"),
    );
    q(
        c,
        redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg("stream")
            .arg("workers")
            .arg("idle"),
    );
    q(
        c,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream")
            .arg("tail")
            .arg("$"),
    );
    q(
        c,
        redis::cmd("XADD")
            .arg("emptied")
            .arg("5-5")
            .arg("f")
            .arg("v"),
    );
    q(c, redis::cmd("XDEL").arg("emptied").arg("5-5"));
    q(
        c,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("emptied")
            .arg("g")
            .arg("$"),
    );
}

/// `XINFO STREAM key FULL` from Redis, less the radix tree's shape (Carmine writes its
/// own nodes): entries, counters, groups, PELs with delivery times and counts, consumers
/// with their seen times.
fn stream_state(c: &mut redis::Connection, key: &str) -> Vec<redis::Value> {
    let full: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .arg("FULL")
        .query(c)
        .expect("XINFO STREAM FULL");
    full.chunks(2)
        .filter(|p| !matches!(&p[0], redis::Value::BulkString(k) if k.starts_with(b"radix-tree")))
        .flat_map(|p| p.to_vec())
        .collect()
}

#[test]
fn streams_move_between_redis_and_carmine() {
    let keys = ["stream", "emptied"];
    let rdir = scratch("streams-redis");
    let r = redis(&rdir, &[]);
    let mut rc = conn(r.1);
    populate_streams(&mut rc);
    let expected: Vec<_> = keys.iter().map(|k| stream_state(&mut rc, k)).collect();
    save(r.1);

    // Redis' dump into Carmine, and Carmine's dump of it into Redis.
    let cdir = scratch("streams-carmine");
    std::fs::copy(rdir.join("dump.rdb"), cdir.join("dump.rdb")).expect("copy");
    let c = carmine(&cdir);
    save(c.port());
    let mut cc = conn(c.port());
    let payloads: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            redis::cmd("DUMP")
                .arg(k)
                .query(&mut cc)
                .expect("carmine dump")
        })
        .collect();
    check_rdb(&cdir.join("dump.rdb"));
    let back = redis(&cdir, &[]);
    let mut bc = conn(back.1);
    for (k, want) in keys.iter().zip(&expected) {
        assert_eq!(
            &stream_state(&mut bc, k),
            want,
            "{k}: Redis loaded Carmine's dump"
        );
    }
    drop(back);

    // Payloads: Carmine's DUMP restores into Redis, checked deeply; Redis' into Carmine.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("sanitize-dump-payload")
        .arg("yes")
        .query(&mut rc)
        .expect("config");
    for ((k, want), ours) in keys.iter().zip(&expected).zip(&payloads) {
        let _: () = redis::cmd("RESTORE")
            .arg(k)
            .arg(0)
            .arg(ours)
            .arg("REPLACE")
            .query(&mut rc)
            .expect("restore Carmine's payload into redis");
        assert_eq!(&stream_state(&mut rc, k), want, "{k}: Carmine's payload");
        let theirs: Vec<u8> = redis::cmd("DUMP").arg(k).query(&mut rc).expect("dump");
        let _: () = redis::cmd("RESTORE")
            .arg(format!("{k}:copy"))
            .arg(0)
            .arg(&theirs)
            .query(&mut cc)
            .expect("restore Redis' payload into carmine");
        let again: Vec<u8> = redis::cmd("DUMP")
            .arg(format!("{k}:copy"))
            .query(&mut cc)
            .expect("dump");
        let _: () = redis::cmd("RESTORE")
            .arg(k)
            .arg(0)
            .arg(&again)
            .arg("REPLACE")
            .query(&mut rc)
            .expect("restore into redis");
        assert_eq!(
            &stream_state(&mut rc, k),
            want,
            "{k}: through RESTORE in Carmine"
        );
    }
    c.shutdown();
}
