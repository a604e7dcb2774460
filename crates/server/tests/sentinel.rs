//! Sentinel, with real processes: Carmine data nodes watched by a mixed quorum of two
//! Redis sentinels (Debian's redis-server --sentinel) and one Carmine sentinel, which
//! must agree, elect one leader and fail over together; and a Carmine sentinel's
//! command surface and config file, across a restart. `cargo xtask test` installs
//! redis-server.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Proc;

const CARMINE: &str = env!("CARGO_BIN_EXE_carmine-server");

fn spawn(bin: &str, conf: &Path, sentinel: bool, port: u16) -> Proc {
    let mut cmd = Command::new(bin);
    cmd.arg(conf);
    if sentinel {
        cmd.arg("--sentinel");
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} starts ({e}); run `cargo xtask test`"));
    assert!(common::wait_port(port, 10), "{bin} listens on {port}");
    Proc { child, port }
}

fn write_conf(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("config written");
    path
}

fn data_node(dir: &Path, replica_of: Option<u16>) -> Proc {
    let port = common::free_port();
    let mut lines = vec![
        format!("port {port}"),
        "bind 127.0.0.1".into(),
        "save \"\"".into(),
        format!("dir {}", dir.display()),
    ];
    if let Some(m) = replica_of {
        lines.push(format!("replicaof 127.0.0.1 {m}"));
    }
    let conf = write_conf(dir, &format!("node-{port}.conf"), &lines);
    spawn(CARMINE, &conf, false, port)
}

fn sentinel(bin: &str, dir: &Path, master: u16, quorum: u32) -> (Proc, PathBuf) {
    let port = common::free_port();
    let sdir = dir.join(format!("sentinel-{port}"));
    std::fs::create_dir_all(&sdir).expect("dir");
    let conf = write_conf(
        &sdir,
        "sentinel.conf",
        &[
            format!("port {port}"),
            "bind 127.0.0.1".into(),
            format!("dir {}", sdir.display()),
            format!("sentinel monitor mymaster 127.0.0.1 {master} {quorum}"),
            "sentinel down-after-milliseconds mymaster 1000".into(),
            "sentinel failover-timeout mymaster 6000".into(),
        ],
    );
    (spawn(bin, &conf, true, port), conf)
}

fn connect(port: u16) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connects");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c
}

fn master_state(port: u16) -> HashMap<String, String> {
    let mut c = connect(port);
    redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg("mymaster")
        .query(&mut c)
        .unwrap_or_default()
}

fn master_port_seen_by(port: u16) -> Option<u16> {
    let mut c = connect(port);
    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg("mymaster")
        .query(&mut c)
        .ok()?;
    addr.map(|(_, p)| p)
}

fn info_field(port: u16, field: &str) -> Option<String> {
    let mut c = connect(port);
    let text: String = redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

#[test]
fn mixed_quorum_of_redis_and_carmine_sentinels_fails_over() {
    let dir = common::scratch_dir();
    let mut master = data_node(&dir, None);
    let replicas = [
        data_node(&dir, Some(master.port)),
        data_node(&dir, Some(master.port)),
    ];
    for r in &replicas {
        assert!(
            common::wait_until(20, || info_field(r.port, "master_link_status").as_deref()
                == Some("up")),
            "replica {} linked",
            r.port
        );
    }
    let sentinels = [
        sentinel("redis-server", &dir, master.port, 2).0,
        sentinel("redis-server", &dir, master.port, 2).0,
        sentinel(CARMINE, &dir, master.port, 2).0,
    ];
    for s in &sentinels {
        assert!(
            common::wait_until(30, || {
                let st = master_state(s.port);
                st.get("num-other-sentinels").map(String::as_str) == Some("2")
                    && st.get("num-slaves").map(String::as_str) == Some("2")
            }),
            "sentinel {} found the other sentinels and the replicas: {:?}",
            s.port,
            master_state(s.port)
        );
    }
    let old = master.port;
    master.kill();
    let replica_ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    for s in &sentinels {
        assert!(
            common::wait_until(40, || master_port_seen_by(s.port)
                .is_some_and(|p| replica_ports.contains(&p))),
            "sentinel {} switched from {old}: {:?}",
            s.port,
            master_state(s.port)
        );
    }
    let seen: Vec<Option<u16>> = sentinels
        .iter()
        .map(|s| master_port_seen_by(s.port))
        .collect();
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "all agree: {seen:?}");
    let new = seen[0].expect("new master");
    assert_eq!(info_field(new, "role").as_deref(), Some("master"));
    let other = replica_ports
        .iter()
        .find(|p| **p != new)
        .copied()
        .expect("other replica");
    assert!(
        common::wait_until(30, || info_field(other, "master_port")
            == Some(new.to_string())),
        "the other replica follows the new master"
    );
}

#[test]
fn carmine_sentinel_commands_and_config_survive_a_restart() {
    let dir = common::scratch_dir();
    let master = data_node(&dir, None);
    let replica = data_node(&dir, Some(master.port));
    let (mut s, conf) = sentinel(CARMINE, &dir, master.port, 2);
    let mut c = connect(s.port);
    let info: String = redis::cmd("INFO").query(&mut c).expect("info");
    assert!(info.contains("redis_mode:sentinel"), "{info}");
    assert!(info.contains("# Sentinel\r\nsentinel_masters:1"), "{info}");
    let err = redis::cmd("GET")
        .arg("k")
        .query::<String>(&mut c)
        .expect_err("no data commands");
    assert!(err.to_string().contains("unknown command"), "{err}");
    let role: (String, Vec<String>) = redis::cmd("ROLE").query(&mut c).expect("role");
    assert_eq!(role, ("sentinel".to_string(), vec!["mymaster".to_string()]));
    // One sentinel cannot reach a quorum of two, nor a majority of more.
    let err = redis::cmd("SENTINEL")
        .arg("CKQUORUM")
        .arg("mymaster")
        .query::<String>(&mut c)
        .expect_err("no quorum");
    let text = err.to_string();
    assert!(
        text.contains("NOQUORUM")
            && text.contains(
                "1 usable Sentinels. Not enough available Sentinels to reach the specified quorum"
            ),
        "{err}"
    );
    assert!(
        common::wait_until(20, || master_state(s.port)
            .get("num-slaves")
            .map(String::as_str)
            == Some("1")),
        "the replica is discovered from the master's INFO"
    );
    let ok: String = redis::cmd("SENTINEL")
        .arg("SET")
        .arg("mymaster")
        .arg("quorum")
        .arg("1")
        .query(&mut c)
        .expect("set");
    assert_eq!(ok, "OK");
    let myid: String = redis::cmd("SENTINEL")
        .arg("MYID")
        .query(&mut c)
        .expect("myid");
    assert_eq!(myid.len(), 40);
    let text = std::fs::read_to_string(&conf).expect("config");
    assert!(text.contains(&format!("sentinel myid {myid}")), "{text}");
    assert!(
        text.contains(&format!(
            "sentinel monitor mymaster 127.0.0.1 {} 1",
            master.port
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sentinel known-replica mymaster 127.0.0.1 {}",
            replica.port
        )),
        "{text}"
    );
    // The lines the user wrote stay where they were.
    assert!(text.starts_with(&format!("port {}\n", s.port)), "{text}");
    s.kill();
    let port = s.port;
    let s2 = spawn(CARMINE, &conf, true, port);
    let mut c = connect(s2.port);
    let again: String = redis::cmd("SENTINEL")
        .arg("MYID")
        .query(&mut c)
        .expect("myid");
    assert_eq!(again, myid, "the run id survives a restart");
    let st = master_state(s2.port);
    assert_eq!(st.get("quorum").map(String::as_str), Some("1"));
    assert_eq!(
        st.get("num-slaves").map(String::as_str),
        Some("1"),
        "{st:?}"
    );
    let err = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg("nosuch")
        .query::<String>(&mut c)
        .expect_err("unknown master");
    assert!(
        err.to_string().contains("No such master with that name"),
        "{err}"
    );
}

/// The same questions to a Carmine sentinel and a Redis sentinel watching the same
/// master: the same fields, errors and shapes (values that depend on timing aside).
#[test]
fn replies_match_redis_sentinel() {
    let dir = common::scratch_dir();
    let master = data_node(&dir, None);
    let (ours, _) = sentinel(CARMINE, &dir, master.port, 2);
    let (theirs, _) = sentinel("redis-server", &dir, master.port, 2);
    let ask = |port: u16, args: &[&str]| -> redis::Value {
        let mut c = connect(port);
        let mut q = redis::cmd(args[0]);
        for a in &args[1..] {
            q.arg(*a);
        }
        match q.query::<redis::Value>(&mut c) {
            Ok(v) => v,
            Err(e) => redis::Value::SimpleString(format!(
                "error: {} {}",
                e.code().unwrap_or(""),
                e.detail().unwrap_or("")
            )),
        }
    };
    fn keys(v: &redis::Value) -> Vec<String> {
        match v {
            redis::Value::Array(items) => items
                .iter()
                .step_by(2)
                .map(|k| match k {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect(),
            redis::Value::Map(pairs) => pairs
                .iter()
                .map(|(k, _)| match k {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect(),
            other => vec![format!("{other:?}")],
        }
    }
    for s in [ours.port, theirs.port] {
        assert!(
            common::wait_until(10, || master_state(s).contains_key("role-reported")),
            "sentinel {s} reached the master"
        );
    }
    // CKQUORUM below counts the sentinels each one knows: both must have heard the
    // other's hello (every 2 s on the master) first, or the replies depend on who was
    // quicker (a CI run once caught ours before Redis' first hello).
    for s in [ours.port, theirs.port] {
        assert!(
            common::wait_until(20, || {
                master_state(s)
                    .get("num-other-sentinels")
                    .is_some_and(|n| n == "1")
            }),
            "sentinel {s} discovered the other one"
        );
    }
    // Field names and order of an instance, and of the timing parameters.
    for q in [
        &["SENTINEL", "MASTER", "mymaster"][..],
        &["SENTINEL", "DEBUG"][..],
        &["SENTINEL", "CONFIG", "GET", "*"][..],
    ] {
        let ours_keys = keys(&ask(ours.port, q));
        assert!(ours_keys.len() >= 6, "{q:?}: {ours_keys:?}");
        assert_eq!(ours_keys, keys(&ask(theirs.port, q)), "{q:?}");
    }
    // Whole replies that do not depend on timing or identity.
    for q in [
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"][..],
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "nosuch"][..],
        &["SENTINEL", "MASTER", "nosuch"][..],
        &["SENTINEL", "CKQUORUM", "mymaster"][..],
        &[
            "SENTINEL",
            "IS-MASTER-DOWN-BY-ADDR",
            "127.0.0.1",
            "1",
            "0",
            "*",
        ][..],
        &["SENTINEL", "SET", "mymaster", "nosuchoption", "1"][..],
        &["SENTINEL", "SET", "mymaster", "quorum", "0"][..],
        &["SENTINEL", "SET", "mymaster"][..],
        &["SENTINEL", "MONITOR", "x", "not-an-ip", "1", "1"][..],
        &["SENTINEL", "MONITOR", "mymaster", "127.0.0.1", "1", "1"][..],
        &["SENTINEL", "DEBUG", "ping-period", "-1"][..],
        &["SENTINEL", "CONFIG", "SET", "nosuch", "1"][..],
        &["SENTINEL", "SIMULATE-FAILURE", "bogus"][..],
        &["SENTINEL", "NOSUCH"][..],
        &["SENTINEL", "FAILOVER", "mymaster"][..],
        &["SENTINEL", "REPLICAS", "mymaster"][..],
        &["PUBLISH", "other", "x"][..],
        &["ROLE"][..],
        &["GET", "k"][..],
    ] {
        let (a, b) = (ask(ours.port, q), ask(theirs.port, q));
        // Redis names its own binary in unknown-command errors; compare up to that.
        let norm = |v: redis::Value| format!("{v:?}").replace("redis-server", "server");
        assert_eq!(norm(a), norm(b), "{q:?}");
    }
}
