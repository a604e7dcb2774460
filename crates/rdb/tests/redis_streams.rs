//! Streams between Carmine's RDB code and Debian's Redis 7.0: files Carmine writes pass
//! `redis-check-rdb` (which validates streams deeply) and load into `redis-server` with
//! the same entries, counters, groups and pending entries; Carmine's DUMP payloads
//! restore into Redis with `sanitize-dump-payload yes`; what Redis writes, files and
//! payloads, reads back in Carmine. Skipped, with a note, where the binaries are absent
//! (`cargo xtask test` installs them).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carmine_keyspace::stream::{ConsumerGroup, NodeLimits, ENTRIES_READ_UNKNOWN};
use carmine_keyspace::{StreamId, StreamValue};
use carmine_rdb::{dump_payload, restore_payload, write, Item, Reader, Value, WriteOptions};

fn have(binary: &str) -> bool {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("note: {binary} is not installed; skipping the Redis stream interop checks");
    }
    found
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("carmine-rdb-streams-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// A reply, as much of RESP2 as these checks need.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Reply::Bulk(Some(b)) => b.clone(),
            Reply::Status(s) => s.clone().into_bytes(),
            other => panic!("not a string: {other:?}"),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(a) => a,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    /// The value under `key` in a flat [key, value, ...] array.
    fn field(&self, key: &str) -> &Reply {
        self.items()
            .chunks(2)
            .find(|p| p[0].text() == key)
            .map(|p| &p[1])
            .unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }
}

struct Redis {
    child: Child,
    conn: BufReader<UnixStream>,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    /// redis-server on a Unix socket in `dir`, loading `dir/dump.rdb` if there is one.
    fn start(dir: &Path) -> Redis {
        let sock = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            if let Ok(s) = UnixStream::connect(&sock) {
                break s;
            }
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut r = Redis {
            child,
            conn: BufReader::new(stream),
        };
        // Wait for the dump to load.
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Reply::Error(e) = r.call(&[b"PING"]) {
            assert!(e.starts_with("LOADING"), "{e}");
            assert!(Instant::now() < deadline, "still loading");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn call(&mut self, args: &[&[u8]]) -> Reply {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.conn.get_mut().write_all(&out).expect("send");
        self.read_reply()
    }

    fn ok(&mut self, args: &[&[u8]]) -> Reply {
        let r = self.call(args);
        if let Reply::Error(e) = &r {
            panic!("{:?}: {e}", String::from_utf8_lossy(args[0]));
        }
        r
    }

    fn read_reply(&mut self) -> Reply {
        let mut line = String::new();
        self.conn.read_line(&mut line).expect("reply");
        let (kind, rest) = line.trim_end().split_at(1);
        match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().expect("integer")),
            "$" => {
                let n: i64 = rest.parse().expect("length");
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut b = vec![0; n as usize + 2];
                self.conn.read_exact(&mut b).expect("bulk");
                b.truncate(n as usize);
                Reply::Bulk(Some(b))
            }
            "*" => {
                let n: i64 = rest.parse().expect("count");
                Reply::Array((0..n.max(0)).map(|_| self.read_reply()).collect())
            }
            other => panic!("unexpected reply type {other:?}"),
        }
    }
}

fn id(ms: u64, seq: u64) -> StreamId {
    StreamId::new(ms, seq)
}

/// 330 entries over four nodes with deleted ones, integer and long (compressible)
/// values, entries of other fields; a group with pending entries of two consumers and
/// an idle consumer, a group of unknown read counter; and an emptied stream with a group.
fn streams() -> Vec<(&'static [u8], StreamValue)> {
    let limits = NodeLimits::default();
    let mut s = StreamValue::new();
    // Past 4 KiB: the listpack's 32-bit string length, and an LZF string.
    let long = "abc".repeat(1700).into_bytes();
    for i in 0..330u64 {
        let at = id(1_700_000_000_000 + i / 4, i % 4);
        let n = (i as i64 * 7919 - 1_000_000).to_string().into_bytes();
        match i % 11 {
            5 => s.append(at, &[b"other", b"x", b"more", &n], limits),
            9 => s.append(at, &[b"name", &long, b"n", &n], limits),
            _ => s.append(
                at,
                &[b"name", format!("item-{i}").as_bytes(), b"n", &n],
                limits,
            ),
        }
    }
    for i in (3..330u64).step_by(17) {
        assert!(s.delete(id(1_700_000_000_000 + i / 4, i % 4)));
    }
    let mut g = ConsumerGroup::new(id(1_700_000_000_020, 0), 81);
    let (alice, _) = g.consumer(b"alice", 1_800_000_000_000);
    let (bob, _) = g.consumer(b"bob", 1_800_000_000_100);
    g.consumer(b"idle", 1_800_000_000_200);
    g.deliver(id(1_700_000_000_000, 0), &alice, 1_800_000_001_000);
    g.deliver(id(1_700_000_000_000, 1), &bob, 1_800_000_002_000);
    g.deliver(id(1_700_000_000_019, 3), &alice, 1_800_000_003_000);
    if let Some(p) = g.pel.get_mut(&id(1_700_000_000_000, 1)) {
        p.delivery_count = 7;
    }
    s.groups.insert(b"workers".to_vec(), g);
    s.groups.insert(
        b"unknown".to_vec(),
        ConsumerGroup::new(id(1_700_000_000_050, 0), ENTRIES_READ_UNKNOWN),
    );

    let mut e = StreamValue::new();
    e.append(id(9, 9), &[b"a", b"b"], limits);
    assert!(e.delete(id(9, 9)));
    e.groups
        .insert(b"g".to_vec(), ConsumerGroup::new(id(9, 9), 1));

    // About 68,000 elements in the first node: past the listpack header's 16-bit count.
    let mut wide = StreamValue::new();
    for i in 1..=101u64 {
        let pairs: Vec<Vec<u8>> = (0..450)
            .flat_map(|j| {
                [
                    format!("f{}-{j}", i % 2).into_bytes(),
                    j.to_string().into_bytes(),
                ]
            })
            .collect();
        let refs: Vec<&[u8]> = pairs.iter().map(Vec::as_slice).collect();
        wide.append(id(i, 0), &refs, limits);
    }
    vec![(&b"s"[..], s), (&b"emptied"[..], e), (&b"wide"[..], wide)]
}

fn write_file(path: &Path, keys: &[(&[u8], StreamValue)], compress: bool) {
    let mut f = Vec::new();
    write::put_header(&mut f);
    write::put_aux(&mut f, "redis-ver", b"7.0.15");
    write::put_select_db(&mut f, 0, keys.len() as u64, 0);
    for (k, s) in keys {
        let v = Value::Stream(Box::new(s.clone()));
        write::put_entry(&mut f, k, &v, 0, WriteOptions { compress });
    }
    let crc = carmine_rdb::crc64::crc64(0, &f);
    write::put_eof(&mut f, crc, true);
    std::fs::write(path, f).expect("write the dump");
}

fn check_rdb(path: &Path) {
    let out = Command::new("redis-check-rdb")
        .arg(path)
        .output()
        .expect("redis-check-rdb runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("RDB looks OK"),
        "{text}"
    );
}

fn id_text(id: StreamId) -> String {
    id.to_string()
}

/// Redis holds `key` as `s` has it: entries, counters, groups, pending entries.
fn assert_redis_has(r: &mut Redis, key: &[u8], s: &StreamValue) {
    let range = r.ok(&[b"XRANGE", key, b"-", b"+"]);
    let got: Vec<(String, Vec<Vec<u8>>)> = range
        .items()
        .iter()
        .map(|e| {
            let e = e.items();
            (e[0].text(), e[1].items().iter().map(Reply::bytes).collect())
        })
        .collect();
    let want: Vec<(String, Vec<Vec<u8>>)> = s
        .entries()
        .into_iter()
        .map(|(id, f)| (id_text(id), f))
        .collect();
    assert_eq!(got, want);
    let info = r.ok(&[b"XINFO", b"STREAM", key]);
    assert_eq!(info.field("length").int(), s.len() as i64);
    assert_eq!(info.field("last-generated-id").text(), id_text(s.last_id));
    assert_eq!(
        info.field("max-deleted-entry-id").text(),
        id_text(s.max_deleted_id)
    );
    assert_eq!(info.field("entries-added").int(), s.entries_added as i64);
    assert_eq!(
        info.field("recorded-first-entry-id").text(),
        id_text(s.first_id)
    );
    let groups = r.ok(&[b"XINFO", b"GROUPS", key]);
    assert_eq!(groups.items().len(), s.groups.len());
    for (g, (name, group)) in groups.items().iter().zip(&s.groups) {
        assert_eq!(g.field("name").bytes(), *name);
        assert_eq!(g.field("last-delivered-id").text(), id_text(group.last_id));
        assert_eq!(g.field("consumers").int(), group.consumers.len() as i64);
        assert_eq!(g.field("pending").int(), group.pel.len() as i64);
        let read = g.field("entries-read");
        if group.entries_read == ENTRIES_READ_UNKNOWN {
            assert_eq!(*read, Reply::Bulk(None));
        } else {
            assert_eq!(read.int(), group.entries_read);
        }
        let pending = r.ok(&[b"XPENDING", key, name, b"-", b"+", b"1000"]);
        let got: Vec<(String, Vec<u8>, i64)> = pending
            .items()
            .iter()
            .map(|p| {
                let p = p.items();
                (p[0].text(), p[1].bytes(), p[3].int())
            })
            .collect();
        let want: Vec<(String, Vec<u8>, i64)> = group
            .pel
            .iter()
            .map(|(id, p)| (id_text(*id), p.consumer.to_vec(), p.delivery_count as i64))
            .collect();
        assert_eq!(got, want);
        let consumers = r.ok(&[b"XINFO", b"CONSUMERS", key, name]);
        let got: Vec<(Vec<u8>, i64)> = consumers
            .items()
            .iter()
            .map(|c| (c.field("name").bytes(), c.field("pending").int()))
            .collect();
        let want: Vec<(Vec<u8>, i64)> = group
            .consumers
            .iter()
            .map(|(n, c)| (n.to_vec(), c.pending.len() as i64))
            .collect();
        assert_eq!(got, want);
    }
}

/// Everything a file carries of a stream, node layout aside.
fn assert_same(a: &StreamValue, b: &StreamValue) {
    assert_eq!(a.entries(), b.entries());
    assert_eq!(
        (a.last_id, a.first_id, a.max_deleted_id, a.entries_added),
        (b.last_id, b.first_id, b.max_deleted_id, b.entries_added)
    );
    assert_eq!(a.groups, b.groups);
}

fn as_stream(v: Value) -> StreamValue {
    match v {
        Value::Stream(s) => *s,
        other => panic!("not a stream: {other:?}"),
    }
}

#[test]
fn carmine_stream_files_pass_redis_check_rdb_and_load_into_redis() {
    if !have("redis-server") || !have("redis-check-rdb") {
        return;
    }
    let keys = streams();
    for compress in [false, true] {
        let dir = scratch(if compress { "compressed" } else { "plain" });
        write_file(&dir.join("dump.rdb"), &keys, compress);
        check_rdb(&dir.join("dump.rdb"));
        let mut r = Redis::start(&dir);
        for (k, s) in &keys {
            assert_redis_has(&mut r, k, s);
        }
        // Redis writes the streams back (its own node layout, its own file), and
        // Carmine reads them as they were.
        r.ok(&[b"SAVE"]);
        drop(r);
        let data = std::fs::read(dir.join("dump.rdb")).expect("Redis' dump");
        let mut reader = Reader::new(&data).expect("header");
        let mut found = 0;
        while let Some(item) = reader.next_item().expect("Redis' dump reads") {
            if let Item::Entry(e) = item {
                let (_, s) = keys
                    .iter()
                    .find(|(k, _)| *k == &e.key[..])
                    .expect("a key written");
                assert_same(s, &as_stream(e.value));
                found += 1;
            }
        }
        assert_eq!(found, keys.len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn stream_payloads_move_between_redis_and_carmine() {
    if !have("redis-server") {
        return;
    }
    let dir = scratch("payloads");
    let mut r = Redis::start(&dir);
    // Redis checks every RESTORE payload as deeply as it can.
    r.ok(&[b"CONFIG", b"SET", b"sanitize-dump-payload", b"yes"]);
    for (k, s) in streams() {
        for compress in [false, true] {
            let ours = dump_payload(
                &Value::Stream(Box::new(s.clone())),
                WriteOptions { compress },
            );
            r.ok(&[b"RESTORE", k, b"0", &ours, b"REPLACE"]);
            assert_redis_has(&mut r, k, &s);
            let theirs = r.ok(&[b"DUMP", k]).bytes();
            assert_same(
                &s,
                &as_stream(restore_payload(&theirs).expect("Redis' payload")),
            );
        }
    }
    // A stream Redis built itself, in nodes of 3 entries with tombstones (one the
    // master entry of its node), groups and consumers.
    r.ok(&[b"CONFIG", b"SET", b"stream-node-max-entries", b"3"]);
    for i in 1..=20u64 {
        let ms = i.to_string();
        let fields: Vec<&[u8]> = if i % 4 == 0 {
            vec![b"other", ms.as_bytes()]
        } else {
            vec![b"f", ms.as_bytes(), b"g", b"-12345"]
        };
        let mut argv: Vec<&[u8]> = vec![b"XADD", b"r", format!("{i}-1").leak().as_bytes()];
        argv.extend(fields);
        r.ok(&argv);
    }
    for del in ["4-1", "7-1", "8-1", "9-1"] {
        r.ok(&[b"XDEL", b"r", del.as_bytes()]);
    }
    r.ok(&[b"XGROUP", b"CREATE", b"r", b"g", b"0"]);
    r.ok(&[
        b"XREADGROUP",
        b"GROUP",
        b"g",
        b"c1",
        b"COUNT",
        b"3",
        b"STREAMS",
        b"r",
        b">",
    ]);
    r.ok(&[
        b"XREADGROUP",
        b"GROUP",
        b"g",
        b"c2",
        b"COUNT",
        b"2",
        b"STREAMS",
        b"r",
        b">",
    ]);
    r.ok(&[b"XGROUP", b"CREATECONSUMER", b"r", b"g", b"c3"]);
    r.ok(&[b"XGROUP", b"CREATE", b"r", b"h", b"$"]);
    let theirs = r.ok(&[b"DUMP", b"r"]).bytes();
    let s = as_stream(restore_payload(&theirs).expect("Redis' payload"));
    assert_eq!(s.len(), 16);
    assert_eq!(s.node_count(), 6, "Redis' nodes, kept");
    assert_redis_has(&mut r, b"r", &s);
    let ours = dump_payload(&Value::Stream(Box::new(s.clone())), WriteOptions::default());
    r.ok(&[b"RESTORE", b"r2", b"0", &ours]);
    assert_redis_has(&mut r, b"r2", &s);
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}
