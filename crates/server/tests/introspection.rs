//! Introspection against a running server: SLOWLOG, LATENCY, INFO errorstats and
//! commandstats per subcommand, COMMAND GETKEYSANDFLAGS, and WATCH across FLUSHDB and
//! SWAPDB, as Redis 7.0 answers them.

mod common;

use redis::Value;

use common::query;

fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let info: String = query(c, &["INFO", section]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
}

/// Entries are newest first, trimmed to 32 arguments and 128 bytes each, with
/// credentials redacted; the length bound holds; RESET empties it.
#[test]
fn slowlog_keeps_trimmed_redacted_entries() {
    let server = common::start("slowlog-log-slower-than 0\nslowlog-max-len 5");
    let mut c = common::client(&server);
    let _: () = query(&mut c, &["CLIENT", "SETNAME", "probe"]);
    let _: () = query(&mut c, &["SLOWLOG", "RESET"]);
    let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    let mut sadd = vec!["SADD", "s"];
    sadd.extend(many.iter().map(String::as_str));
    let _: i64 = query(&mut c, &sadd);
    let long = "A".repeat(130);
    let _: () = query(&mut c, &["SET", "k", &long]);
    let _: () = query(&mut c, &["CONFIG", "SET", "masterauth", "secret"]);
    let entries: Vec<Value> = query(&mut c, &["SLOWLOG", "GET", "-1"]);
    assert!(entries.len() <= 5, "slowlog-max-len holds");
    let args_of = |e: &Value| -> Vec<String> {
        let Value::Array(fields) = e else {
            panic!("entry {e:?}")
        };
        assert_eq!(fields.len(), 6, "id, time, duration, args, peer, name");
        redis::from_redis_value(&fields[3]).expect("args")
    };
    let newest = args_of(&entries[0]);
    assert_eq!(newest, ["CONFIG", "SET", "masterauth", "(redacted)"]);
    let set = args_of(&entries[1]);
    assert_eq!(set[2], format!("{}... (2 more bytes)", "A".repeat(128)));
    let sadd_logged = args_of(&entries[2]);
    assert_eq!(sadd_logged.len(), 32);
    assert_eq!(sadd_logged[31], "... (11 more arguments)");
    let Value::Array(fields) = &entries[0] else {
        unreachable!()
    };
    let name: String = redis::from_redis_value(&fields[5]).expect("name");
    assert_eq!(name, "probe");
    let err = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-2)
        .query::<Value>(&mut c);
    assert!(err
        .expect_err("count below -1")
        .to_string()
        .contains("count should be greater than or equal to -1"));
    let _: () = query(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]);
    let _: () = query(&mut c, &["SLOWLOG", "RESET"]);
    let _: () = query(&mut c, &["SET", "x", "1"]);
    let len: i64 = query(&mut c, &["SLOWLOG", "LEN"]);
    assert_eq!(len, 0, "a negative threshold turns the log off");
}

/// Each error reply counts once under its code; a script passing on the error of a
/// command it called does not count it again; subcommands have their own stats and
/// latency histograms.
#[test]
fn errorstats_commandstats_and_latency_histograms() {
    let server = common::start("");
    let mut c = common::client(&server);
    let _: () = query(&mut c, &["CONFIG", "RESETSTAT"]);
    let _: () = query(&mut c, &["SET", "str", "x"]);
    let _ = redis::cmd("LPUSH")
        .arg("str")
        .arg("a")
        .query::<Value>(&mut c);
    let _ = redis::cmd("EVAL")
        .arg("return redis.call('lpush', KEYS[1], 'a')")
        .arg(1)
        .arg("str")
        .query::<Value>(&mut c);
    let _ = redis::cmd("EVAL")
        .arg("return redis.error_reply('MY_CODE custom')")
        .arg(0)
        .query::<Value>(&mut c);
    assert_eq!(
        info_field(&mut c, "errorstats", "errorstat_WRONGTYPE").as_deref(),
        Some("count=2")
    );
    assert_eq!(
        info_field(&mut c, "errorstats", "errorstat_MY_CODE").as_deref(),
        Some("count=1")
    );
    assert_eq!(
        info_field(&mut c, "stats", "total_error_replies").as_deref(),
        Some("3")
    );
    let _: i64 = query(&mut c, &["CLIENT", "ID"]);
    let stat = info_field(&mut c, "commandstats", "cmdstat_client|id").expect("per subcommand");
    assert!(stat.starts_with("calls=1,"), "{stat}");
    let histo: Vec<Value> = query(&mut c, &["LATENCY", "HISTOGRAM", "client"]);
    assert_eq!(histo.len(), 2, "one entry: client|id");
    let name: String = redis::from_redis_value(&histo[0]).expect("name");
    assert_eq!(name, "client|id");
    let unknown: Vec<Value> = query(&mut c, &["LATENCY", "HISTOGRAM", "nosuchcommand"]);
    assert!(unknown.is_empty());
    let latency =
        info_field(&mut c, "latencystats", "latency_percentiles_usec_set").expect("latencystats");
    assert!(latency.starts_with("p50="), "{latency}");
}

/// The latency monitor records a slow command at or above its threshold.
#[test]
fn latency_monitor_records_slow_commands() {
    let server = common::start("enable-debug-command yes");
    let mut c = common::client(&server);
    let _: () = query(
        &mut c,
        &["CONFIG", "SET", "latency-monitor-threshold", "50"],
    );
    let _: () = query(&mut c, &["DEBUG", "SLEEP", "0.1"]);
    let latest: Vec<Vec<Value>> = query(&mut c, &["LATENCY", "LATEST"]);
    let event: String = redis::from_redis_value(&latest[0][0]).expect("event");
    assert_eq!(event, "command");
    let ms: i64 = redis::from_redis_value(&latest[0][2]).expect("latency");
    assert!(ms >= 100, "{ms}");
    let history: Vec<Vec<i64>> = query(&mut c, &["LATENCY", "HISTORY", "command"]);
    assert_eq!(history.len(), 1);
    let reset: i64 = query(&mut c, &["LATENCY", "RESET"]);
    assert_eq!(reset, 1);
    let latest: Vec<Value> = query(&mut c, &["LATENCY", "LATEST"]);
    assert!(latest.is_empty());
}

/// COMMAND GETKEYSANDFLAGS reports Redis 7.0's key-spec flags, and those that depend
/// on the arguments.
#[test]
fn getkeysandflags_reports_key_spec_flags() {
    let server = common::start("");
    let mut c = common::client(&server);
    let flags = |c: &mut redis::Connection, args: &[&str]| -> Vec<(String, Vec<String>)> {
        let mut full = vec!["COMMAND", "GETKEYSANDFLAGS"];
        full.extend_from_slice(args);
        query(c, &full)
    };
    let kv = |k: &str, f: &[&str]| (k.to_string(), f.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        flags(&mut c, &["SET", "k1", "v1"]),
        [kv("k1", &["OW", "update"])]
    );
    assert_eq!(
        flags(&mut c, &["SET", "k1", "v1", "GET"]),
        [kv("k1", &["RW", "access", "update"])]
    );
    assert_eq!(
        flags(&mut c, &["LMOVE", "k1", "k2", "LEFT", "RIGHT"]),
        [
            kv("k1", &["RW", "access", "delete"]),
            kv("k2", &["RW", "insert"])
        ]
    );
    assert_eq!(
        flags(&mut c, &["SORT", "k1", "STORE", "k2"]),
        [kv("k1", &["RO", "access"]), kv("k2", &["OW", "update"])]
    );
    let none: Vec<String> = query(&mut c, &["COMMAND", "GETKEYS", "EVAL", "return 1", "0"]);
    assert!(none.is_empty());
}

/// FLUSHDB and SWAPDB touch only the watched keys that were there, or that the swap
/// brings in alive (Redis 7.0's rules).
#[test]
fn watch_sees_only_keys_that_flush_or_swap_changed() {
    let server = common::start("");
    let mut c = common::client(&server);
    let exec_after = |c: &mut redis::Connection| -> Option<Vec<String>> {
        let _: () = query(c, &["MULTI"]);
        let _: () = query(c, &["PING"]);
        query(c, &["EXEC"])
    };
    let _: () = query(&mut c, &["WATCH", "absent"]);
    let _: () = query(&mut c, &["FLUSHDB"]);
    assert_eq!(exec_after(&mut c), Some(vec!["PONG".to_string()]));
    let _: () = query(&mut c, &["SET", "present", "1"]);
    let _: () = query(&mut c, &["WATCH", "present"]);
    let _: () = query(&mut c, &["FLUSHDB"]);
    assert_eq!(exec_after(&mut c), None, "a key that was there is touched");
    let _: () = query(&mut c, &["SELECT", "1"]);
    let _: () = query(&mut c, &["SET", "moved", "1"]);
    let _: () = query(&mut c, &["SELECT", "0"]);
    let _: () = query(&mut c, &["WATCH", "moved"]);
    let _: () = query(&mut c, &["SWAPDB", "0", "1"]);
    assert_eq!(exec_after(&mut c), None, "the swap brought a live key in");
    let _: () = query(&mut c, &["WATCH", "neither"]);
    let _: () = query(&mut c, &["SWAPDB", "0", "1"]);
    assert_eq!(exec_after(&mut c), Some(vec!["PONG".to_string()]));
}

/// SETBIT and BITFIELD count a change only when they create or grow the string or
/// change a value (rdb_changes_since_last_save), as Redis counts them.
#[test]
fn bit_writes_count_only_real_changes() {
    let server = common::start("");
    let mut c = common::client(&server);
    let changes = |c: &mut redis::Connection| -> i64 {
        info_field(c, "persistence", "rdb_changes_since_last_save")
            .and_then(|v| v.parse().ok())
            .expect("rdb_changes_since_last_save")
    };
    let start = changes(&mut c);
    let _: i64 = query(&mut c, &["SETBIT", "b", "0", "0"]);
    let _: Vec<i64> = query(&mut c, &["BITFIELD", "f", "SET", "i5", "0", "0"]);
    assert_eq!(changes(&mut c), start + 2, "created: one change each");
    let _: i64 = query(&mut c, &["SETBIT", "b", "0", "0"]);
    let _: Vec<i64> = query(&mut c, &["BITFIELD", "f", "SET", "i5", "0", "0"]);
    assert_eq!(changes(&mut c), start + 2, "same values: no change");
    let _: i64 = query(&mut c, &["SETBIT", "b", "0", "1"]);
    let _: Vec<i64> = query(
        &mut c,
        &[
            "BITFIELD", "f", "SET", "i5", "0", "1", "SET", "i5", "5", "1",
        ],
    );
    assert_eq!(changes(&mut c), start + 5, "one bit, two fields");
    let _: i64 = query(&mut c, &["SETBIT", "b", "90", "0"]);
    assert_eq!(changes(&mut c), start + 6, "growing the string is a change");
}

/// MEMORY STATS reports Redis' field names with the server's own figures; DOCTOR,
/// MALLOC-STATS and PURGE answer.
#[test]
fn memory_stats_and_doctor_answer() {
    let server = common::start("");
    let mut c = common::client(&server);
    for i in 0..100 {
        let _: () = query(&mut c, &["SET", &format!("k{i}"), "v"]);
    }
    let stats: std::collections::HashMap<String, Value> = query(&mut c, &["MEMORY", "STATS"]);
    let keys: i64 = redis::from_redis_value(&stats["keys.count"]).expect("keys.count");
    assert_eq!(keys, 100);
    // An embedded server estimates its memory from the cron: wait for the first figure.
    let figures = |c: &mut redis::Connection| -> (i64, i64) {
        let stats: std::collections::HashMap<String, Value> = query(c, &["MEMORY", "STATS"]);
        let get = |k: &str| -> i64 { redis::from_redis_value(&stats[k]).expect(k) };
        (get("total.allocated"), get("peak.allocated"))
    };
    assert!(
        common::wait_until(10, || figures(&mut c).0 > 0),
        "memory is counted"
    );
    let (total, peak) = figures(&mut c);
    assert!(peak >= total, "{total} {peak}");
    let doctor: String = query(&mut c, &["MEMORY", "DOCTOR"]);
    assert!(doctor.starts_with("Hi Sam"), "{doctor}");
    let _: () = query(&mut c, &["MEMORY", "PURGE"]);
    let malloc: String = query(&mut c, &["MEMORY", "MALLOC-STATS"]);
    assert!(!malloc.is_empty());
}

/// CONFIG SET port listens on the new port at once and stops listening on the old one;
/// a port that cannot be bound is refused with Redis' error and changes nothing.
#[test]
fn config_set_port_moves_the_listener() {
    let server = common::start("");
    let mut c = common::client(&server);
    let before: Vec<String> = common::query(&mut c, &["CONFIG", "GET", "port"]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("a busy port");
    let busy_port = busy.local_addr().expect("its address").port().to_string();
    let err = redis::cmd("CONFIG")
        .arg(&["SET", "port", &busy_port])
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string().contains("Unable to listen on this port"),
        "{err}"
    );
    let port: Vec<String> = common::query(&mut c, &["CONFIG", "GET", "port"]);
    assert_eq!(port, before, "rolled back");
    let fresh = common::free_port();
    let _: () = common::query(&mut c, &["CONFIG", "SET", "port", &fresh.to_string()]);
    let mut moved = redis::Client::open(format!("redis://127.0.0.1:{fresh}/"))
        .and_then(|cl| cl.get_connection_with_timeout(std::time::Duration::from_secs(5)))
        .expect("the new port accepts");
    assert_eq!(common::query::<String>(&mut moved, &["PING"]), "PONG");
    assert!(
        common::wait_until(5, || std::net::TcpStream::connect((
            "127.0.0.1",
            server.port()
        ))
        .is_err()),
        "the old port is closed"
    );
    // The connection made before the move is still served.
    assert_eq!(common::query::<String>(&mut c, &["PING"]), "PONG");
    server.shutdown();
}

/// DEBUG LISTPACK, STRINGMATCH-LEN and CHANGE-REPL-ID as Redis' tests call them.
#[test]
fn debug_listpack_stringmatch_and_change_repl_id() {
    let server = common::start("enable-debug-command yes");
    let mut c = common::client(&server);
    let _: i64 = query(&mut c, &["HSET", "small", "f", "v"]);
    let _: () = query(&mut c, &["SET", "str", "v"]);
    let listpack: String = query(&mut c, &["DEBUG", "LISTPACK", "small"]);
    assert_eq!(listpack, "Listpack structure printed on stdout");
    let e = redis::cmd("DEBUG")
        .arg("LISTPACK")
        .arg("str")
        .query::<String>(&mut c)
        .expect_err("a string is no listpack");
    assert!(
        e.to_string().contains("Not a listpack encoded object."),
        "{e}"
    );
    let e = redis::cmd("DEBUG")
        .arg("LISTPACK")
        .arg("nope")
        .query::<String>(&mut c)
        .expect_err("no such key");
    assert!(e.to_string().contains("no such key"), "{e}");
    let fuzz: String = query(&mut c, &["DEBUG", "STRINGMATCH-LEN"]);
    assert_eq!(fuzz, "Apparently Redis did not crash: test passed");
    let before = info_field(&mut c, "replication", "master_replid").expect("replid");
    let _: () = query(&mut c, &["DEBUG", "CHANGE-REPL-ID"]);
    let after = info_field(&mut c, "replication", "master_replid").expect("replid");
    assert_ne!(before, after);
    assert_eq!(after.len(), 40);
    let second = info_field(&mut c, "replication", "second_repl_offset").expect("offset");
    assert_eq!(second, "-1");
}

/// A client's reply buffer (CLIENT LIST `rbs`) is sized as Redis 7 sizes it: an idle
/// client's shrinks to 1 KiB once its peak resets, one that keeps filling it doubles up
/// to 16 KiB; INFO stats counts both; DEBUG REPLYBUFFER RESIZING 0 stops it.
#[test]
fn reply_buffers_shrink_when_idle_and_grow_when_full() {
    let server = common::start("");
    let mut admin = common::client(&server);
    let mut tc = common::client(&server);
    query::<()>(&mut tc, &["CLIENT", "SETNAME", "tc"]);
    let field = |admin: &mut redis::Connection, name: &str| -> u64 {
        let list: String = query(admin, &["CLIENT", "LIST"]);
        list.lines()
            .find(|l| l.contains(" name=tc "))
            .and_then(|l| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix(&format!("{name}=")))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(u64::MAX)
    };
    assert_eq!(field(&mut admin, "rbs"), 16384);
    query::<()>(
        &mut admin,
        &["DEBUG", "REPLYBUFFER", "PEAK-RESET-TIME", "100"],
    );
    assert!(
        common::wait_until(5, || field(&mut admin, "rbs") == 1024),
        "the idle client's buffer shrinks: rbs={}",
        field(&mut admin, "rbs")
    );
    query::<()>(&mut admin, &["SET", "big", &"x".repeat(32768)]);
    query::<()>(
        &mut admin,
        &["DEBUG", "REPLYBUFFER", "PEAK-RESET-TIME", "never"],
    );
    assert!(
        common::wait_until(10, || {
            query::<String>(&mut tc, &["GET", "big"]);
            field(&mut admin, "rbs") == 16384
        }),
        "the busy client's buffer grows: rbs={}",
        field(&mut admin, "rbs")
    );
    query::<String>(&mut tc, &["GET", "big"]);
    assert!(
        common::wait_until(5, || field(&mut admin, "rbp") == 16384),
        "the peak fills the buffer: rbp={}",
        field(&mut admin, "rbp")
    );
    let shrinks: u64 = info_field(&mut admin, "stats", "reply_buffer_shrinks")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let expands: u64 = info_field(&mut admin, "stats", "reply_buffer_expands")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(shrinks >= 1 && expands >= 4, "{shrinks} {expands}");
    // Resizing off: the idle buffer stays as it is.
    query::<()>(&mut admin, &["DEBUG", "REPLYBUFFER", "RESIZING", "0"]);
    query::<()>(
        &mut admin,
        &["DEBUG", "REPLYBUFFER", "PEAK-RESET-TIME", "reset"],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(field(&mut admin, "rbs"), 16384);
    let refused = redis::cmd("DEBUG")
        .arg(&["REPLYBUFFER", "nonsense", "1"])
        .query::<()>(&mut admin);
    assert!(refused.is_err());
}
