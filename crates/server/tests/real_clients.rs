//! The real binary driven by real tools: redis-cli, redis-benchmark, redis-py.
//! `cargo xtask test` installs them when missing; run without them, these tests fail with
//! a message saying so rather than passing vacuously.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run `cargo xtask test`, which installs it"
    );
}

use common::Proc;

fn spawn_server(extra: &[&str]) -> Proc {
    spawn_server_with(None, extra)
}

/// Starts the binary on a free port, with a config file first if given; the options
/// that follow override it.
fn spawn_server_with(conf: Option<&std::path::Path>, extra: &[&str]) -> Proc {
    let port = common::free_port();
    let dir = std::env::temp_dir().join(format!("carmine-real-clients-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let mut cmd =
        common::local_server_command(env!("CARGO_BIN_EXE_carmine-server"), conf, port, &dir);
    cmd.args(extra);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("server binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = (0..50).any(|_| match lines.next() {
        Some(Ok(l)) => l.contains("Ready to accept connections"),
        _ => false,
    });
    assert!(ready, "server printed its ready line");
    std::thread::spawn(move || for _ in lines {});
    Proc { child, port }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("20")
        .arg("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_cli_works() {
    require("redis-cli");
    let s = spawn_server(&[]);
    assert_eq!(cli(s.port, &["PING"]), "PONG");
    assert_eq!(cli(s.port, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(s.port, &["GET", "greeting"]), "hello world");
    assert_eq!(cli(s.port, &["INCRBY", "n", "41"]), "41");
    assert_eq!(
        cli(s.port, &["NOSUCHCMD"]),
        "ERR unknown command 'NOSUCHCMD', with args beginning with:"
    );
    let info = cli(s.port, &["INFO", "server"]);
    assert!(info.contains("redis_version:7.0.15"), "{info}");
    // --pipe mass insertion speaks raw RESP and checks the reply count.
    let mut pipe = Command::new("timeout")
        .args(["20", "redis-cli", "-p", &s.port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli --pipe");
    {
        let mut stdin = pipe.stdin.take().expect("stdin");
        for i in 0..5000 {
            let k = format!("mass:{i}");
            let _ = write!(
                stdin,
                "*3\r\n$3\r\nSET\r\n${}\r\n{}\r\n$1\r\nv\r\n",
                k.len(),
                k
            );
        }
    }
    let out = pipe.wait_with_output().expect("pipe finishes");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 5000"), "{text}");
    assert_eq!(cli(s.port, &["DBSIZE"]), "5002");
}

#[test]
fn redis_benchmark_runs_without_errors() {
    require("redis-benchmark");
    let s = spawn_server(&[]);
    let out = Command::new("timeout")
        .args([
            "120",
            "redis-benchmark",
            "-p",
            &s.port.to_string(),
            "-t",
            "set,get,incr,mset",
            "-P",
            "16",
            "-n",
            "20000",
            "-q",
            "--csv",
        ])
        .output()
        .expect("redis-benchmark runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for t in ["SET", "GET", "INCR", "MSET"] {
        assert!(text.contains(&format!("\"{t}")), "missing {t}: {text}");
    }
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let errors = cli(s.port, &["INFO", "stats"]);
    assert!(errors.contains("total_error_replies:0"), "{errors}");
}

#[test]
fn redis_py_works_with_resp2_and_resp3() {
    require("python3");
    let has_redis_py = Command::new("python3")
        .args(["-c", "import redis"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        has_redis_py,
        "redis-py is not installed: run `cargo xtask test`, which installs it"
    );
    let s = spawn_server(&["--requirepass", "pw"]);
    let script = r#"
import sys, redis
port = int(sys.argv[1])
for proto in (2, 3):
    r = redis.Redis(port=port, password="pw", protocol=proto, decode_responses=True, socket_timeout=10)
    assert r.ping()
    r.set("py", "1", ex=100)
    assert r.get("py") == "1"
    assert 0 < r.ttl("py") <= 100
    assert r.incr("ctr") >= 1
    p = r.pipeline()              # MULTI/EXEC
    for i in range(100):
        p.set("k%d" % i, i)
    p.incr("ctr")
    res = p.execute()
    assert res[:100] == [True] * 100, res[:3]
    with r.pipeline() as p:       # WATCH/MULTI/EXEC
        p.watch("ctr")
        v = int(p.get("ctr"))
        p.multi()
        p.set("ctr", v + 10)
        p.execute()
    assert r.mget(["k1", "k2", "nope"]) == ["1", "2", None]
    assert r.config_get("port")["port"] == str(port)
    info = r.info()
    assert info["redis_version"] == "7.0.15"
    assert r.client_setname("py%d" % proto)
    assert r.client_getname() == "py%d" % proto
    assert any(c["name"] == "py%d" % proto for c in r.client_list())
    keys = set(r.scan_iter(match="k1*", count=10))
    assert keys == {"k1"} | {"k1%d" % i for i in range(10)}, keys
    assert r.delete("k1", "k2") == 2
    try:
        r.execute_command("GET")
        raise SystemExit("expected an error")
    except redis.ResponseError as e:
        assert "wrong number of arguments" in str(e)
    # Keyspace notifications through redis-py's PubSub, and HyperLogLog.
    r.config_set("notify-keyspace-events", "KEA")
    assert r.config_get("notify-keyspace-events")["notify-keyspace-events"] == "AKE"
    ps = r.pubsub()
    ps.psubscribe("__keyevent@0__:*")
    assert ps.get_message(timeout=5)["type"] == "psubscribe"
    r.lpush("q%d" % proto, "a")
    r.expire("q%d" % proto, 100)
    got = []
    for _ in range(50):
        m = ps.get_message(timeout=5)
        if m and m["type"] == "pmessage":
            got.append((m["channel"], m["data"]))
        if len(got) == 2:
            break
    assert got == [("__keyevent@0__:lpush", "q%d" % proto), ("__keyevent@0__:expire", "q%d" % proto)], got
    ps.close()
    r.config_set("notify-keyspace-events", "")
    assert r.pfadd("hll%d" % proto, *["e%d" % i for i in range(1000)]) == 1
    assert 980 <= r.pfcount("hll%d" % proto) <= 1020
# Scripts: register_script (EVALSHA, loading on NOSCRIPT) and the Lock built on them.
r = redis.Redis(port=port, password="pw", decode_responses=True, socket_timeout=10)
r.script_flush()
double = r.register_script("return tonumber(ARGV[1]) * 2")
assert double(args=[21]) == 42
import threading
held = []
def worker(n):
    for _ in range(20):
        with r.lock("py-lock", timeout=5, blocking_timeout=10):
            held.append(n)
            v = int(r.get("locked-counter") or 0)
            r.set("locked-counter", v + 1)
            held.remove(n)
            assert not held, held
threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
assert int(r.get("locked-counter")) == 80
lock = r.lock("py-lock2", timeout=1)
assert lock.acquire(blocking=False)
assert lock.extend(5)
assert r.pttl("py-lock2") > 4000
lock.release()
assert r.get("py-lock2") is None
print("redis-py ok")
"#;
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", script, &s.port.to_string()])
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("redis-py ok"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_config_is_refused_with_the_line_number() {
    let dir = std::env::temp_dir().join(format!("carmine-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.conf");
    std::fs::write(&path, "port 7000\n# comment\nno-such-option yes\n").expect("write conf");
    let out = Command::new(env!("CARGO_BIN_EXE_carmine-server"))
        .arg(&path)
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at line 3"), "{err}");
    assert!(err.contains(">>> 'no-such-option yes'"), "{err}");
    assert!(
        err.contains("Bad directive or wrong number of arguments"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Debian's default /etc/redis/redis.conf (Redis 7.0) loads unchanged: it sets 44
/// parameters Carmine does not act on yet, which are accepted with Redis' types and
/// shown by CONFIG GET. Where the server runs (port, dir, log, pid file, foreground) is
/// overridden on the command line, as a test must.
#[test]
fn debians_default_redis_conf_loads() {
    let conf = std::path::Path::new("/etc/redis/redis.conf");
    assert!(
        conf.exists(),
        "{} is missing; run `cargo xtask test`, which installs redis-server",
        conf.display()
    );
    let pid = std::env::temp_dir().join(format!("carmine-debian-conf-{}.pid", std::process::id()));
    let pid = pid.to_string_lossy().into_owned();
    let mut s = spawn_server_with(
        Some(conf),
        &["--daemonize", "no", "--logfile", "", "--pidfile", &pid],
    );
    assert_eq!(cli(s.port, &["PING"]), "PONG");
    assert_eq!(
        cli(s.port, &["CONFIG", "GET", "lazyfree-lazy-user-del"]),
        "lazyfree-lazy-user-del\nno"
    );
    assert_eq!(
        cli(s.port, &["CONFIG", "GET", "slave-read-only"]),
        "slave-read-only\nyes",
        "listed under the legacy name asked for"
    );
    assert!(cli(s.port, &["CONFIG", "SET", "always-show-logo", "yes"])
        .contains("can't set immutable config"),);
    let _ = cli(s.port, &["SHUTDOWN", "NOSAVE"]);
    let _ = s.child.wait();
    let _ = std::fs::remove_file(&pid);
}

#[test]
fn sigterm_and_shutdown_stop_the_server() {
    let mut s = spawn_server(&[]);
    let pid = s.child.id();
    let rc = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(rc.success());
    let exited = common::wait_until(5, || matches!(s.child.try_wait(), Ok(Some(_))));
    assert!(exited, "SIGTERM stops the server");
    let mut s = spawn_server(&[]);
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = sock.write_all(b"SHUTDOWN NOSAVE\r\n");
    let exited = common::wait_until(5, || matches!(s.child.try_wait(), Ok(Some(_))));
    assert!(exited, "SHUTDOWN stops the server");
}
