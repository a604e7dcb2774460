//! Shared helpers: an embedded server on a free port, clients, and a raw socket.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use carmine_commands::Config;
use carmine_server::Server;

/// Starts an embedded server on 127.0.0.1 and a free port, with extra config lines.
pub fn start(extra: &str) -> Server {
    let config = Config::new();
    config
        .load_text(&format!(
            "port 0\nbind 127.0.0.1\nio-threads 2\nsave \"\"\ndir {}\n{extra}\n",
            scratch_dir().display()
        ))
        .expect("test config is valid");
    Server::start(config).expect("server starts")
}

/// Starts an embedded server from a config file, which CONFIG REWRITE then rewrites.
pub fn start_with_file(path: &std::path::Path) -> Server {
    let config = Config::new();
    let text = std::fs::read_to_string(path).expect("read the config file");
    config.load_text(&text).expect("config file is valid");
    *config.file.write() = Some(path.display().to_string());
    Server::start(config).expect("server starts")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits (at most `secs`) until something accepts connections on `port`.
pub fn wait_port(port: u16, secs: u64) -> bool {
    wait_until(secs, || TcpStream::connect(("127.0.0.1", port)).is_ok())
}

/// A fresh empty directory for one server's files.
pub fn scratch_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("carmine-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub fn client(server: &Server) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port())).expect("client");
    let con = c
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connects");
    con.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    con
}

pub fn raw(server: &Server) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", server.port())).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Sends bytes and reads until `until` returns true on what arrived or the peer closes.
pub fn exchange(s: &mut TcpStream, send: &[u8], until: impl Fn(&[u8]) -> bool) -> (Vec<u8>, bool) {
    s.write_all(send).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if until(&got) {
                    return (got, false);
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return (got, false)
            }
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// True once the peer has closed the connection (reads EOF or reset) within 5 s.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

/// Polls `cond` every 20 ms for at most `secs`.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The command line of a server process a test starts (`bin`: carmine-server or
/// redis-server): `conf` first if given, then listening on 127.0.0.1:`port`, no
/// snapshots, files in `dir`; the caller adds its own options after these.
pub fn local_server_command(
    bin: impl AsRef<std::ffi::OsStr>,
    conf: Option<&std::path::Path>,
    port: u16,
    dir: &std::path::Path,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    if let Some(conf) = conf {
        cmd.arg(conf);
    }
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ])
    .arg("--dir")
    .arg(dir);
    cmd
}

/// A server process a test started; killed when dropped.
pub struct Proc {
    pub child: std::process::Child,
    pub port: u16,
}

impl Proc {
    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `args` as one command and converts its reply; panics naming the command if the
/// server answers an error.
pub fn query<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// `XINFO STREAM key FULL COUNT 0` (everything), less what differs between two servers
/// holding the same stream: the radix tree's shape (an encoding) and the consumers' seen
/// and active times (a consumer rebuilt by a replica or a replay is seen when it is).
/// Nil when the key holds no stream. Fields named in `skip` are left out too.
pub fn stream_state(c: &mut redis::Connection, key: &str, skip: &[&str]) -> redis::Value {
    fn strip(v: redis::Value, skip: &[&str]) -> redis::Value {
        let redis::Value::Array(items) = v else {
            return v;
        };
        let is_map = items.len() % 2 == 0
            && items
                .iter()
                .step_by(2)
                .all(|k| matches!(k, redis::Value::BulkString(_)));
        if !is_map {
            return redis::Value::Array(items.into_iter().map(|v| strip(v, skip)).collect());
        }
        let mut out = Vec::new();
        for pair in items.chunks(2) {
            let redis::Value::BulkString(k) = &pair[0] else {
                continue;
            };
            let skipped = k.starts_with(b"radix-tree")
                || k == b"seen-time"
                || k == b"active-time"
                || skip.iter().any(|s| s.as_bytes() == k.as_slice());
            if skipped {
                continue;
            }
            out.push(pair[0].clone());
            out.push(strip(pair[1].clone(), skip));
        }
        redis::Value::Array(out)
    }
    strip(
        redis::cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .arg("FULL")
            .arg("COUNT")
            .arg(0)
            .query(c)
            .unwrap_or(redis::Value::Nil),
        skip,
    )
}
