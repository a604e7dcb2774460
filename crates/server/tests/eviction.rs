//! maxmemory and eviction, with the counting allocator as in the real binary. One test
//! function, so no other test in this process allocates meanwhile.

use std::io::{Read, Write};
use std::time::Duration;

use carmine_commands::Config;
use carmine_server::{alloc, Server};

#[global_allocator]
static ALLOC: alloc::CountingAlloc = alloc::CountingAlloc;

fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in INFO {section}"))
}

fn config_set(c: &mut redis::Connection, name: &str, value: impl redis::ToRedisArgs) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(c)
        .unwrap_or_else(|e| panic!("CONFIG SET {name}: {e}"));
}

#[test]
fn eviction_policies_keep_memory_under_maxmemory() {
    let config = Config::new();
    config
        .load_text("port 0\nbind 127.0.0.1\nio-threads 2\nsave \"\"\ndir /tmp\ndbfilename carmine-eviction-test.rdb\n")
        .expect("config");
    let server = Server::start_with_memory(config, Some(alloc::allocated_bytes)).expect("start");
    let cl = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port())).expect("client");
    let mut c = cl
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect");
    let base = info_field(&mut c, "memory", "used_memory");
    let max = base + 20 * 1024 * 1024;
    let set = |c: &mut redis::Connection, k: &str, v: &[u8]| {
        redis::cmd("SET").arg(k).arg(v).query::<()>(c)
    };
    let value = vec![b'v'; 1024];

    // allkeys-lru: writing 2x maxmemory keeps used_memory under the limit.
    config_set(&mut c, "maxmemory", max);
    config_set(&mut c, "maxmemory-policy", "allkeys-lru");
    config_set(&mut c, "notify-keyspace-events", "Ee");
    let mut sub = std::net::TcpStream::connect(("127.0.0.1", server.port())).expect("sub");
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sub.write_all(b"SUBSCRIBE __keyevent@0__:evicted\r\n")
        .unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b":1\r\n") {
        let mut chunk = [0u8; 4096];
        let n = sub.read(&mut chunk).expect("subscribe reply");
        assert!(n > 0);
        seen.extend_from_slice(&chunk[..n]);
    }
    for i in 0..40_000 {
        set(&mut c, &format!("lru:{i}"), &value).unwrap();
    }
    // Evictions are published as keyspace events.
    let mut events = Vec::new();
    let first = b"*3\r\n$7\r\nmessage\r\n$22\r\n__keyevent@0__:evicted\r\n$";
    while events.len() < 4096 {
        let mut chunk = [0u8; 4096];
        let n = sub.read(&mut chunk).expect("evicted events");
        assert!(n > 0);
        events.extend_from_slice(&chunk[..n]);
    }
    assert!(
        events.starts_with(first),
        "{}",
        String::from_utf8_lossy(&events[..200])
    );
    config_set(&mut c, "notify-keyspace-events", "");
    drop(sub);
    let used = info_field(&mut c, "memory", "used_memory");
    assert!(used <= max + 1024 * 1024, "used {used} vs max {max}");
    assert!(info_field(&mut c, "stats", "evicted_keys") > 10_000);
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(dbsize < 40_000 && dbsize > 5_000, "{dbsize}");

    // volatile-ttl: only keys with a deadline go; the earliest deadlines first.
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    config_set(&mut c, "maxmemory-policy", "volatile-ttl");
    for i in 0..8_000 {
        set(&mut c, &format!("keep:{i}"), &value).unwrap();
    }
    let mut oom = 0;
    for i in 0..30_000 {
        let r = redis::cmd("SET")
            .arg(format!("tmp:{i}"))
            .arg(&value[..])
            .arg("EX")
            .arg(1000 + i)
            .query::<()>(&mut c);
        if r.is_err() {
            oom += 1;
        }
    }
    let kept: Vec<String> = redis::cmd("KEYS").arg("keep:*").query(&mut c).unwrap();
    assert_eq!(
        kept.len(),
        8_000,
        "keys without a deadline are never evicted under volatile-ttl"
    );
    assert!(oom < 30_000);
    assert!(info_field(&mut c, "memory", "used_memory") <= max + 1024 * 1024);

    // noeviction: writes that need memory fail with OOM; reads and deletes still work.
    config_set(&mut c, "maxmemory-policy", "noeviction");
    config_set(&mut c, "maxmemory", base / 2);
    let e = set(&mut c, "new", b"x").unwrap_err();
    assert_eq!(e.code(), Some("OOM"), "{e}");
    let _: Option<String> = redis::cmd("GET").arg("keep:1").query(&mut c).unwrap();
    let n: i64 = redis::cmd("DEL").arg("keep:1").query(&mut c).unwrap();
    assert_eq!(n, 1);
    config_set(&mut c, "maxmemory", 0);
    set(&mut c, "new", b"x").unwrap();

    // Client-side caching: a key evicted to make room for a command is invalidated for
    // the client that runs it before that command's reply (the eviction comes first).
    let mut reader = std::net::TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    reader
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut ask = |cmd: &str, until: &[u8]| -> String {
        reader
            .write_all(format!("{cmd}\r\n").as_bytes())
            .expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(until) {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    assert!(ask("HELLO 3", b"modules\r\n*0\r\n").starts_with('%'));
    assert_eq!(ask("CLIENT TRACKING ON", b"\r\n"), "+OK\r\n");
    assert_eq!(ask("SETEX volatile-key 10000 x", b"\r\n"), "+OK\r\n");
    assert_eq!(ask("GET volatile-key", b"x\r\n"), "$1\r\nx\r\n");
    let used = info_field(&mut c, "memory", "used_memory")
        - info_field(&mut c, "memory", "mem_not_counted_for_evict");
    config_set(&mut c, "maxmemory-policy", "volatile-random");
    config_set(&mut c, "maxmemory", used + 100 * 1024);
    // 200 KB past the limit: the next command evicts the only volatile key.
    assert_eq!(ask("SETBIT big-key 1600000 0", b"\r\n"), ":0\r\n");
    assert_eq!(
        ask("GETBIT big-key 0", b":0\r\n"),
        ">2\r\n$10\r\ninvalidate\r\n*1\r\n$12\r\nvolatile-key\r\n:0\r\n"
    );
    config_set(&mut c, "maxmemory", 0);
    server.shutdown();
}
