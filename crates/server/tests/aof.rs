//! The append-only file against a real server: files Redis' tools accept, replay after
//! kill -9 with no acknowledged write lost, rewrites under load, switching at run time,
//! truncated and corrupt files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use carmine_commands::Config;
use carmine_server::Server;

/// An embedded server whose files live in `dir`.
fn start_in(dir: &Path, extra: &str) -> Server {
    try_start_in(dir, extra).expect("server starts")
}

fn try_start_in(dir: &Path, extra: &str) -> Result<Server, String> {
    let config = Config::new();
    config
        .load_text(&format!(
            "port 0\nbind 127.0.0.1\nio-threads 2\nsave \"\"\ndir {}\n{extra}\n",
            dir.display()
        ))
        .expect("test config is valid");
    Server::start(config).map_err(|e| e.to_string())
}

fn aof_dir(dir: &Path) -> PathBuf {
    dir.join("appendonlydir")
}

fn manifest(dir: &Path) -> String {
    std::fs::read_to_string(aof_dir(dir).join("appendonly.aof.manifest")).unwrap_or_default()
}

fn info_field(c: &mut redis::Connection, field: &str) -> Option<String> {
    let text: String = redis::cmd("INFO").arg("persistence").query(c).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

fn wait_rewrite_done(c: &mut redis::Connection) -> bool {
    common::wait_until(30, || {
        info_field(c, "aof_rewrite_in_progress").as_deref() == Some("0")
            && info_field(c, "aof_rewrite_scheduled").as_deref() == Some("0")
    })
}

fn digest(c: &mut redis::Connection) -> String {
    redis::cmd("DEBUG").arg("DIGEST").query(c).expect("digest")
}

fn incr_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(aof_dir(dir))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(".incr.aof"));
    v.sort();
    v
}

fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn writes_survive_a_restart_with_their_databases_and_transactions() {
    let dir = common::scratch_dir();
    let server = start_in(&dir, "appendonly yes\nappendfsync always");
    let mut c = common::client(&server);
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg("1")
        .query(&mut c)
        .expect("set");
    let _: () = redis::cmd("RPUSH")
        .arg("l")
        .arg(&["x", "y", "z"])
        .query(&mut c)
        .expect("rpush");
    let _: () = redis::cmd("SET")
        .arg("ttl")
        .arg("v")
        .arg("EX")
        .arg(1000)
        .query(&mut c)
        .expect("set ex");
    let _: () = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("n")
        .ignore()
        .cmd("INCRBY")
        .arg("n")
        .arg(41)
        .ignore()
        .query(&mut c)
        .expect("multi");
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).expect("select");
    let _: () = redis::cmd("SET")
        .arg("in3")
        .arg("x")
        .query(&mut c)
        .expect("set");
    let _: i64 = redis::cmd("PUBLISH")
        .arg("chan")
        .arg("msg")
        .query(&mut c)
        .expect("publish");
    let before = digest(&mut c);
    drop(c);
    server.shutdown();

    let incr = std::fs::read(&incr_files(&dir)[0]).expect("incr file");
    let text = String::from_utf8_lossy(&incr);
    assert!(text.contains("MULTI") && text.contains("EXEC"), "{text}");
    assert!(
        text.contains("PXAT"),
        "SET EX is written with an absolute deadline: {text}"
    );
    assert!(
        !text.contains("PUBLISH"),
        "PUBLISH is not persisted: {text}"
    );

    let server = start_in(&dir, "appendonly yes");
    let mut c = common::client(&server);
    assert_eq!(digest(&mut c), before);
    let ttl: i64 = redis::cmd("TTL").arg("ttl").query(&mut c).expect("ttl");
    assert!(ttl > 900 && ttl <= 1000, "ttl {ttl}");
    server.shutdown();
}

#[test]
fn redis_check_aof_accepts_our_files_before_and_after_a_rewrite() {
    if !has_tool("redis-check-aof") {
        eprintln!("redis-check-aof not installed: `cargo xtask test` installs it");
        return;
    }
    let dir = common::scratch_dir();
    let server = start_in(&dir, "appendonly yes");
    let mut c = common::client(&server);
    for i in 0..200 {
        let _: () = redis::cmd("HSET")
            .arg(format!("h{}", i % 7))
            .arg(format!("f{i}"))
            .arg(i)
            .query(&mut c)
            .expect("hset");
    }
    let check = || {
        let out = Command::new("redis-check-aof")
            .arg(aof_dir(&dir).join("appendonly.aof.manifest"))
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && text.contains("All AOF files and manifest are valid"),
            "{text}"
        );
    };
    // Written before each reply: the file is complete once the client has its answers.
    check();
    let reply: String = redis::cmd("BGREWRITEAOF").query(&mut c).expect("rewrite");
    assert_eq!(reply, "Background append only file rewriting started");
    assert!(wait_rewrite_done(&mut c));
    assert_eq!(
        info_field(&mut c, "aof_last_bgrewrite_status").as_deref(),
        Some("ok")
    );
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut c)
        .expect("set");
    check();
    assert_eq!(
        manifest(&dir),
        "file appendonly.aof.2.base.rdb seq 2 type b\nfile appendonly.aof.2.incr.aof seq 2 type i\n"
    );
    server.shutdown();
}

#[test]
fn a_rewrite_under_writes_loses_nothing_in_either_base_format() {
    for preamble in ["yes", "no"] {
        let dir = common::scratch_dir();
        let conf = format!("appendonly yes\naof-use-rdb-preamble {preamble}");
        let server = start_in(&dir, &conf);
        let mut c = common::client(&server);
        for i in 0..2000 {
            let _: () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(i)
                .query(&mut c)
                .expect("set");
        }
        let _: () = redis::cmd("ZADD")
            .arg("z")
            .arg(&["1.5", "a", "-2", "b", "inf", "c"])
            .query(&mut c)
            .expect("zadd");
        let _: () = redis::cmd("SADD")
            .arg("s")
            .arg(&["m1", "m2"])
            .query(&mut c)
            .expect("sadd");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let port = server.port();
            std::thread::spawn(move || {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("c");
                let mut w = client.get_connection().expect("conn");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 200_000 {
                    let _: () = redis::cmd("INCR")
                        .arg("counter")
                        .query(&mut w)
                        .expect("incr");
                    let _: () = redis::cmd("RPUSH")
                        .arg("list")
                        .arg(n)
                        .query(&mut w)
                        .expect("rpush");
                    n += 1;
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let _: String = redis::cmd("BGREWRITEAOF").query(&mut c).expect("rewrite");
        assert!(wait_rewrite_done(&mut c), "rewrite ends");
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
        let before = digest(&mut c);
        let base = if preamble == "yes" { "rdb" } else { "aof" };
        assert!(
            manifest(&dir)
                .starts_with(&format!("file appendonly.aof.2.base.{base} seq 2 type b\n")),
            "{}",
            manifest(&dir)
        );
        drop(c);
        server.shutdown();
        let server = start_in(&dir, &conf);
        let mut c = common::client(&server);
        assert_eq!(digest(&mut c), before, "preamble {preamble}");
        server.shutdown();
    }
}

#[test]
fn appendonly_switched_on_and_off_at_run_time() {
    let dir = common::scratch_dir();
    let server = start_in(&dir, "appendonly no");
    let mut c = common::client(&server);
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query(&mut c)
        .expect("set");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query(&mut c)
        .expect("config set");
    assert_eq!(info_field(&mut c, "aof_enabled").as_deref(), Some("1"));
    assert!(wait_rewrite_done(&mut c), "the first rewrite ends");
    let _: () = redis::cmd("SET")
        .arg("during")
        .arg("2")
        .query(&mut c)
        .expect("set");
    assert_eq!(
        manifest(&dir),
        "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("no")
        .query(&mut c)
        .expect("config set");
    assert!(common::wait_until(10, || info_field(
        &mut c,
        "aof_current_size"
    )
    .is_none()));
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("3")
        .query(&mut c)
        .expect("set");
    drop(c);
    server.shutdown();
    let server = start_in(&dir, "appendonly yes");
    let mut c = common::client(&server);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).expect("keys");
    let mut keys = keys;
    keys.sort();
    assert_eq!(
        keys,
        ["before", "during"],
        "what was written while it was on"
    );
    server.shutdown();
}

fn write_incr_only(dir: &Path, body: &[u8]) {
    std::fs::create_dir_all(aof_dir(dir)).expect("dir");
    std::fs::write(aof_dir(dir).join("appendonly.aof.1.incr.aof"), body).expect("incr");
    std::fs::write(
        aof_dir(dir).join("appendonly.aof.manifest"),
        "file appendonly.aof.1.incr.aof seq 1 type i\n",
    )
    .expect("manifest");
}

#[test]
fn a_cut_tail_is_truncated_when_allowed_and_refused_otherwise() {
    let whole = b"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$1\r\n1\r\n".to_vec();
    let mut cut = whole.clone();
    cut.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$3\r\nfo");
    let dir = common::scratch_dir();
    write_incr_only(&dir, &cut);
    let refused = try_start_in(&dir, "appendonly yes\naof-load-truncated no");
    let err = refused.err().expect("refused");
    assert!(err.contains("Unexpected end of file"), "{err}");

    let server = start_in(&dir, "appendonly yes\naof-load-truncated yes");
    let mut c = common::client(&server);
    let v: String = redis::cmd("GET").arg("foo").query(&mut c).expect("get");
    assert_eq!(v, "1");
    let _: i64 = redis::cmd("INCR").arg("foo").query(&mut c).expect("incr");
    drop(c);
    server.shutdown();
    // Cut at the last whole command, then appended to: the file reads clean.
    let server = start_in(&dir, "appendonly yes\naof-load-truncated no");
    let mut c = common::client(&server);
    let v: String = redis::cmd("GET").arg("foo").query(&mut c).expect("get");
    assert_eq!(v, "2");
    server.shutdown();
}

/// A command of the AOF that fails when replayed (an INCR of a non-number) is logged
/// with Redis' words and counted; with `propagation-error-behavior panic` the server
/// stops instead of serving a dataset that differs from what the file recorded.
#[test]
fn a_failing_command_in_the_aof_is_reported_or_stops_the_server() {
    let dir = common::scratch_dir();
    write_incr_only(
        &dir,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nx\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n",
    );
    let server = start_in(&dir, "appendonly yes");
    let mut c = common::client(&server);
    let stats: String = common::query(&mut c, &["INFO", "stats"]);
    assert!(stats.contains("unexpected_error_replies:1\r\n"), "{stats}");
    assert_eq!(common::query::<String>(&mut c, &["GET", "k"]), "x");
    drop(c);
    server.shutdown();

    let port = common::free_port();
    let log = dir.join("panic.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_carmine-server"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "yes"])
        .args(["--propagation-error-behavior", "panic"])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server binary starts");
    let exited = common::wait_until(20, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(exited, "the server stops on the failing command");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("== CRITICAL == This AOF is sending an error to its AOF")
            && text.contains(
                "This AOF panicked sending an error to its AOF after processing the command 'incr'"
            ),
        "{text}"
    );
}

#[test]
fn damage_in_the_middle_is_refused_with_the_file_and_offset() {
    let dir = common::scratch_dir();
    let mut body = b"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$1\r\n1\r\n".to_vec();
    let at = body.len();
    body.extend_from_slice(b"!!!\r\n*2\r\n$4\r\nINCR\r\n$3\r\nfoo\r\n");
    write_incr_only(&dir, &body);
    let err = try_start_in(&dir, "appendonly yes\naof-load-truncated yes")
        .err()
        .expect("refused");
    assert!(
        err.contains("Bad file format")
            && err.contains("appendonly.aof.1.incr.aof")
            && err.contains(&format!("offset {at}")),
        "{err}"
    );
    // And an unknown command is refused, naming it.
    write_incr_only(&dir, b"*1\r\n$7\r\nNOSUCHC\r\n");
    let err = try_start_in(&dir, "appendonly yes").err().expect("refused");
    assert!(err.contains("Unknown command 'NOSUCHC'"), "{err}");
    // A manifest Redis would refuse is refused with Redis' reason.
    std::fs::write(
        aof_dir(&dir).join("appendonly.aof.manifest"),
        "file a seq 1 type x\n",
    )
    .expect("manifest");
    let err = try_start_in(&dir, "appendonly yes").err().expect("refused");
    assert!(err.contains("Unknown AOF file type"), "{err}");
}

#[test]
fn an_old_single_file_aof_is_adopted_as_the_base() {
    let dir = common::scratch_dir();
    std::fs::write(
        dir.join("appendonly.aof"),
        b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$3\r\nold\r\n$3\r\nyes\r\n",
    )
    .expect("old file");
    let server = start_in(&dir, "appendonly yes");
    let mut c = common::client(&server);
    let v: String = redis::cmd("GET").arg("old").query(&mut c).expect("get");
    assert_eq!(v, "yes");
    assert!(!dir.join("appendonly.aof").exists());
    assert_eq!(
        manifest(&dir),
        "file appendonly.aof seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n"
    );
    server.shutdown();
}

#[test]
fn debug_loadaof_reads_back_what_it_wrote() {
    let dir = common::scratch_dir();
    let server = start_in(&dir, "appendonly yes");
    let mut c = common::client(&server);
    for i in 0..100 {
        let _: () = redis::cmd("SADD")
            .arg(format!("s{}", i % 5))
            .arg(i)
            .query(&mut c)
            .expect("sadd");
    }
    let before = digest(&mut c);
    let _: () = redis::cmd("DEBUG")
        .arg("LOADAOF")
        .query(&mut c)
        .expect("loadaof");
    assert_eq!(digest(&mut c), before);
    // Replaying appended nothing.
    let size = std::fs::metadata(&incr_files(&dir)[0])
        .map(|m| m.len())
        .unwrap_or(0);
    let _: () = redis::cmd("DEBUG")
        .arg("LOADAOF")
        .query(&mut c)
        .expect("loadaof");
    assert_eq!(
        std::fs::metadata(&incr_files(&dir)[0])
            .map(|m| m.len())
            .unwrap_or(0),
        size
    );
    server.shutdown();
}

/// While DEBUG LOADAOF replays (the world stopped), other clients are answered -LOADING
/// rather than left waiting, also while a slow script from the file runs, as Redis
/// answers between loading chunks.
#[test]
fn other_clients_get_loading_while_debug_loadaof_replays_a_slow_script() {
    use std::io::Write;
    let dir = common::scratch_dir();
    let server = start_in(
        &dir,
        "appendonly yes\naof-use-rdb-preamble no\nlua-time-limit 1",
    );
    let mut c = common::client(&server);
    let script =
        "redis.call('set',KEYS[1],'y'); for i=1,1500000 do redis.call('ping') end return 'ok'";
    let mut eval = format!(
        "*4\r\n$4\r\neval\r\n${}\r\n{script}\r\n$1\r\n1\r\n$1\r\nx\r\n",
        script.len()
    );
    eval.insert_str(0, "*2\r\n$6\r\nselect\r\n$1\r\n0\r\n");
    let incr = incr_files(&dir);
    assert_eq!(incr.len(), 1, "one incr file: {incr:?}");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&incr[0])
        .and_then(|mut f| f.write_all(eval.as_bytes()))
        .expect("append the script to the incr file");
    let mut loader = common::client(&server);
    let load = std::thread::spawn(move || {
        redis::cmd("DEBUG")
            .arg("LOADAOF")
            .query::<()>(&mut loader)
            .map_err(|e| e.to_string())
    });
    let mut refused = None;
    common::wait_until(20, || match redis::cmd("PING").query::<String>(&mut c) {
        Err(e) => {
            refused = Some((e.code().map(str::to_string), e.to_string()));
            true
        }
        Ok(_) => load.is_finished(),
    });
    let refused = refused.expect("a PING during DEBUG LOADAOF was refused");
    assert_eq!(refused.0.as_deref(), Some("LOADING"), "{}", refused.1);
    assert_eq!(load.join().expect("loader thread"), Ok(()));
    assert_eq!(common::query::<String>(&mut c, &["GET", "x"]), "y");
    assert_eq!(info_field(&mut c, "loading").as_deref(), Some("0"));
    server.shutdown();
}

/// With `appendfsync always`, no client sees a write before the AOF holds it, even a
/// client of another event loop than the writer's: its reply waits for the same flush.
/// The writer's flush is slowed (DEBUG AOF-FLUSH-SLEEP) so that readers on the other
/// loop ask while it is still in progress.
#[test]
fn with_fsync_always_a_read_on_another_loop_waits_for_the_write_to_be_in_the_file() {
    let dir = common::scratch_dir();
    let server = start_in(&dir, "appendonly yes\nappendfsync always");
    let mut admin = common::client(&server);
    // Readers first: with two loops, some of them are served by the other loop than
    // the writer's, whichever that is.
    let mut readers: Vec<redis::Connection> = (0..4).map(|_| common::client(&server)).collect();
    let mut writer = common::client(&server);
    let _: () = redis::cmd("DEBUG")
        .arg("AOF-FLUSH-SLEEP")
        .arg(400_000)
        .query(&mut admin)
        .expect("debug aof-flush-sleep");
    let write = std::thread::spawn(move || {
        redis::cmd("SET")
            .arg("durable-before-seen")
            .arg("v")
            .query::<()>(&mut writer)
            .map_err(|e| e.to_string())
    });
    let incr = incr_files(&dir);
    // Each reader polls on its own thread, so one stuck behind the writer's loop does
    // not keep the others from asking meanwhile.
    let seen: Vec<_> = readers
        .drain(..)
        .map(|mut r| {
            let file = incr[0].clone();
            std::thread::spawn(move || {
                let mut in_file_when_seen = None;
                common::wait_until(20, || {
                    let seen: Option<String> = redis::cmd("GET")
                        .arg("durable-before-seen")
                        .query(&mut r)
                        .expect("get");
                    if seen.is_some() {
                        let text = std::fs::read(&file).unwrap_or_default();
                        in_file_when_seen =
                            Some(text.windows(19).any(|w| w == b"durable-before-seen"));
                    }
                    seen.is_some()
                });
                in_file_when_seen
            })
        })
        .collect();
    assert_eq!(write.join().expect("writer thread"), Ok(()));
    for reader in seen {
        assert_eq!(
            reader.join().expect("reader thread"),
            Some(true),
            "a reader saw the write before the AOF held it"
        );
    }
    let _: () = redis::cmd("DEBUG")
        .arg("AOF-FLUSH-SLEEP")
        .arg(0)
        .query(&mut admin)
        .expect("debug aof-flush-sleep");
    server.shutdown();
}

/// SAVE beside a running AOF rewrite (Redis saves in the foreground while its rewrite
/// child runs): it answers OK, the dump holds the dataset as it stood, and the rewrite
/// goes on to finish.
#[test]
fn save_runs_beside_an_aof_rewrite() {
    let dir = common::scratch_dir();
    let server = start_in(&dir, "appendonly yes");
    let mut c = common::client(&server);
    assert!(wait_rewrite_done(&mut c));
    for i in 0..5 {
        common::query::<()>(&mut c, &["SET", &format!("k{i}"), &format!("v{i}")]);
    }
    // 0.2 s per key: the rewrite's walk outlasts the SAVE below.
    common::query::<()>(&mut c, &["CONFIG", "SET", "rdb-key-save-delay", "200000"]);
    common::query::<String>(&mut c, &["BGREWRITEAOF"]);
    assert_eq!(
        info_field(&mut c, "aof_rewrite_in_progress").as_deref(),
        Some("1")
    );
    common::query::<()>(&mut c, &["CONFIG", "SET", "rdb-key-save-delay", "0"]);
    common::query::<()>(&mut c, &["SET", "k0", "changed"]);
    let saved: Result<String, _> = redis::cmd("SAVE").query(&mut c);
    assert_eq!(saved.map_err(|e| e.to_string()), Ok("OK".to_string()));
    let dump = std::fs::read(dir.join("dump.rdb")).expect("SAVE wrote dump.rdb");
    let ks = carmine_keyspace::Keyspace::new();
    carmine_rdb::load_into(&ks, &dump).expect("the dump loads");
    assert_eq!(ks.db(0).get(b"k0"), Ok(Some(b"changed".to_vec())));
    assert_eq!(ks.db(0).get(b"k4"), Ok(Some(b"v4".to_vec())));
    assert_eq!(ks.db_counts(0).0, 5);
    assert!(wait_rewrite_done(&mut c));
    assert_eq!(
        info_field(&mut c, "aof_last_bgrewrite_status").as_deref(),
        Some("ok")
    );
    server.shutdown();
}

/// CONFIG SET appendonly no stops a running rewrite at once, as Redis kills its rewrite
/// child, instead of letting it walk to the end: the snapshot is free again for a
/// BGSAVE, and no base is installed.
#[test]
fn switching_the_aof_off_stops_a_running_rewrite() {
    let dir = common::scratch_dir();
    let server = start_in(&dir, "appendonly yes");
    let mut c = common::client(&server);
    assert!(wait_rewrite_done(&mut c));
    let manifest_before = manifest(&dir);
    for i in 0..30 {
        common::query::<()>(&mut c, &["SET", &format!("k{i}"), "v"]);
    }
    // Two seconds per key: a minute's walk if nothing stopped it.
    common::query::<()>(&mut c, &["CONFIG", "SET", "rdb-key-save-delay", "2000000"]);
    common::query::<String>(&mut c, &["BGREWRITEAOF"]);
    assert_eq!(
        info_field(&mut c, "aof_rewrite_in_progress").as_deref(),
        Some("1")
    );
    common::query::<()>(&mut c, &["CONFIG", "SET", "appendonly", "no"]);
    common::query::<()>(&mut c, &["CONFIG", "SET", "rdb-key-save-delay", "0"]);
    assert!(
        common::wait_until(20, || info_field(&mut c, "aof_rewrite_in_progress")
            .as_deref()
            == Some("0")),
        "the rewrite went on after the AOF was switched off"
    );
    // The rewrite named its new incr file when it began (as Redis does); no new base.
    let after = manifest(&dir);
    assert!(after.starts_with(&manifest_before), "{after}");
    assert!(!after.contains(".2.base"), "{after}");
    common::query::<String>(&mut c, &["BGSAVE"]);
    assert!(common::wait_until(20, || {
        let text: String = redis::cmd("INFO")
            .arg("persistence")
            .query(&mut c)
            .unwrap_or_default();
        text.contains("rdb_bgsave_in_progress:0") && text.contains("rdb_last_bgsave_status:ok")
    }));
    server.shutdown();
}

/// The server binary, started in `dir` on `port` (kill -9 needs a process of its own).
fn spawn_binary(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_carmine-server"))
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.to_string_lossy(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--io-threads",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server binary starts")
}

/// kill -9 at a random moment under writes from several clients, then restart: every
/// write whose reply a client received is there. `CARMINE_AOF_CRASH_RUNS` sets the
/// number of runs (the acceptance run is 100; CI runs a few).
#[test]
fn kill_9_under_load_loses_no_acknowledged_write() {
    let runs: u64 = std::env::var("CARMINE_AOF_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("CARMINE_AOF_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = common::scratch_dir();
    const WRITERS: usize = 4;
    // Acknowledged per writer: the count of its INCRs answered, across all runs.
    let mut acked = [0u64; WRITERS];
    for run in 0..runs {
        let port = common::free_port();
        let mut child = spawn_binary(&dir, port);
        assert!(common::wait_port(port, 30), "run {run}: server listens");
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
        // What the previous runs acknowledged is all there.
        let mut c = client.get_connection().expect("conn");
        assert!(
            common::wait_until(30, || redis::cmd("PING").query::<String>(&mut c).is_ok()),
            "run {run}: loaded"
        );
        for (w, count) in acked.iter_mut().enumerate() {
            let n = *count;
            let got: Option<u64> = redis::cmd("GET")
                .arg(format!("w{w}"))
                .query(&mut c)
                .expect("get");
            let got = got.unwrap_or(0);
            // One INCR may have been applied and written without its reply arriving.
            assert!(
                got == n || got == n + 1,
                "run {run}: writer {w} acked {n}, found {got}"
            );
            *count = got;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..WRITERS)
            .map(|w| {
                let client = client.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    let Ok(mut c) = client.get_connection() else {
                        return n;
                    };
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    while !stop.load(Ordering::Relaxed) {
                        match redis::cmd("INCR").arg(format!("w{w}")).query::<u64>(&mut c) {
                            Ok(_) => n += 1,
                            Err(_) => break,
                        }
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(20..300)));
        let _ = child.kill();
        let _ = child.wait();
        stop.store(true, Ordering::Relaxed);
        for (w, t) in threads.into_iter().enumerate() {
            acked[w] += t.join().expect("writer");
        }
    }
    // The last run's writes, checked once more.
    let port = common::free_port();
    let mut child = spawn_binary(&dir, port);
    assert!(common::wait_port(port, 30));
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let mut c = client.get_connection().expect("conn");
    assert!(common::wait_until(30, || redis::cmd("PING")
        .query::<String>(&mut c)
        .is_ok()));
    for (w, &n) in acked.iter().enumerate() {
        let got: Option<u64> = redis::cmd("GET")
            .arg(format!("w{w}"))
            .query(&mut c)
            .expect("get");
        let got = got.unwrap_or(0);
        assert!(
            got == n || got == n + 1,
            "writer {w} acked {n}, found {got}"
        );
    }
    assert!(acked.iter().sum::<u64>() > 0, "the writers wrote");
    let _ = child.kill();
    let _ = child.wait();
}

/// Streams survive a rewrite in both base formats: entries, deleted entries' counters,
/// groups with their read counters, pending entries with delivery times and counts,
/// consumers with and without pending entries, an emptied stream.
#[test]
fn streams_survive_a_rewrite_in_either_base_format() {
    for preamble in ["yes", "no"] {
        let dir = common::scratch_dir();
        let conf = format!("appendonly yes\naof-use-rdb-preamble {preamble}");
        let server = start_in(&dir, &conf);
        let mut c = common::client(&server);
        let mut q = |cmd: &mut redis::Cmd| {
            let _: redis::Value = cmd.query(&mut c).expect("stream command");
        };
        for i in 1..=250u64 {
            let mut cmd = redis::cmd("XADD");
            cmd.arg("s").arg(format!("{}-{}", 1000 + i / 4, i % 4));
            if i % 7 == 0 {
                cmd.arg("other").arg(i);
            } else {
                cmd.arg("name").arg(format!("v{i}")).arg("n").arg(i * 1000);
            }
            q(&mut cmd);
        }
        for del in ["1000-1", "1010-2", "1062-2"] {
            q(redis::cmd("XDEL").arg("s").arg(del));
        }
        q(redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("s")
            .arg("g")
            .arg("0"));
        for (who, n) in [("alice", 3), ("bob", 2)] {
            q(redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg(who)
                .arg("COUNT")
                .arg(n)
                .arg("STREAMS")
                .arg("s")
                .arg(">"));
        }
        q(redis::cmd("XCLAIM")
            .arg("s")
            .arg("g")
            .arg("bob")
            .arg("0")
            .arg("1000-2")
            .arg("TIME")
            .arg("1700000000000")
            .arg("RETRYCOUNT")
            .arg(5));
        q(redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg("s")
            .arg("g")
            .arg("idle"));
        q(redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("s")
            .arg("late")
            .arg("$"));
        q(redis::cmd("XADD").arg("e").arg("5-5").arg("f").arg("v"));
        q(redis::cmd("XDEL").arg("e").arg("5-5"));
        q(redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("e")
            .arg("g")
            .arg("$"));
        let before = [
            common::stream_state(&mut c, "s", &[]),
            common::stream_state(&mut c, "e", &[]),
        ];
        let _: String = redis::cmd("BGREWRITEAOF").query(&mut c).expect("rewrite");
        assert!(wait_rewrite_done(&mut c), "rewrite ends");
        assert_eq!(
            info_field(&mut c, "aof_last_bgrewrite_status").as_deref(),
            Some("ok")
        );
        drop(c);
        server.shutdown();
        let server = start_in(&dir, &conf);
        let mut c = common::client(&server);
        let after = [
            common::stream_state(&mut c, "s", &[]),
            common::stream_state(&mut c, "e", &[]),
        ];
        assert_eq!(after, before, "preamble {preamble}");
        server.shutdown();
    }
}
