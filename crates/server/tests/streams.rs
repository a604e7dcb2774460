//! Streams through a real client: entries, consumer groups, blocking reads woken from
//! other event loops, and a Carmine replica following a master's group traffic.

mod common;

use std::io::Write;

use redis::Value;

use common::query;

fn blocked_count(c: &mut redis::Connection) -> usize {
    let info: String = query(c, &["INFO", "clients"]);
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("blocked_clients in INFO")
}

/// The IDs of an XRANGE-shaped reply.
fn ids(v: &Value) -> Vec<String> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| match e {
            Value::Array(pair) => match pair.first() {
                Some(Value::BulkString(id)) => Some(String::from_utf8_lossy(id).into_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn entries_are_added_ranged_deleted_and_trimmed() {
    let server = common::start("");
    let mut c = common::client(&server);
    for i in 1..=10 {
        let id: String = query(
            &mut c,
            &["XADD", "s", &format!("{i}-1"), "n", &i.to_string()],
        );
        assert_eq!(id, format!("{i}-1"));
    }
    let err = redis::cmd("XADD")
        .arg(&["s", "5-0", "a", "b"])
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("equal or smaller"), "{err}");
    let auto: String = query(&mut c, &["XADD", "s", "10-*", "n", "x"]);
    assert_eq!(auto, "10-2", "10-* continues the sequence");
    let all: Value = query(&mut c, &["XRANGE", "s", "-", "+"]);
    assert_eq!(ids(&all).len(), 11);
    let rev: Value = query(&mut c, &["XREVRANGE", "s", "+", "(3-1", "COUNT", "3"]);
    assert_eq!(ids(&rev), ["10-2", "10-1", "9-1"]);
    let ex: Value = query(&mut c, &["XRANGE", "s", "(2-1", "(5-1"]);
    assert_eq!(ids(&ex), ["3-1", "4-1"]);
    assert_eq!(
        query::<i64>(&mut c, &["XDEL", "s", "1-1", "2-1", "99-0"]),
        2
    );
    assert_eq!(query::<i64>(&mut c, &["XLEN", "s"]), 9);
    assert_eq!(query::<i64>(&mut c, &["XTRIM", "s", "MAXLEN", "5"]), 4);
    assert_eq!(query::<i64>(&mut c, &["XTRIM", "s", "MINID", "8"]), 1);
    let left: Value = query(&mut c, &["XRANGE", "s", "-", "+"]);
    assert_eq!(ids(&left), ["8-1", "9-1", "10-1", "10-2"]);
    let info: Vec<Value> = query(&mut c, &["XINFO", "STREAM", "s"]);
    let field = |name: &str| {
        info.chunks(2)
            .find(|kv| kv[0] == Value::BulkString(name.as_bytes().to_vec()))
            .map(|kv| kv[1].clone())
    };
    assert_eq!(field("length"), Some(Value::Int(4)));
    assert_eq!(field("entries-added"), Some(Value::Int(11)));
    assert_eq!(
        field("max-deleted-entry-id"),
        Some(Value::BulkString(b"2-1".to_vec())),
        "trimming is not deleting: only XDEL moves it"
    );
    assert_eq!(
        field("recorded-first-entry-id"),
        Some(Value::BulkString(b"8-1".to_vec()))
    );
    // Streams stay when emptied, unlike the other collections.
    assert_eq!(query::<i64>(&mut c, &["XTRIM", "s", "MAXLEN", "0"]), 4);
    assert_eq!(query::<String>(&mut c, &["TYPE", "s"]), "stream");
    let _: () = query(&mut c, &["SET", "str", "x"]);
    let err = redis::cmd("XADD")
        .arg(&["str", "*", "a", "b"])
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    server.shutdown();
}

#[test]
fn every_blocked_reader_is_served_by_one_xadd() {
    let server = common::start("io-threads 4");
    let mut c = common::client(&server);
    let _: String = query(&mut c, &["XADD", "s", "1-0", "f", "v"]);
    let mut readers = Vec::new();
    for i in 0..4 {
        let mut r = common::raw(&server);
        r.write_all(b"XREAD BLOCK 5000 STREAMS s $\r\n").unwrap();
        assert!(common::wait_until(5, || blocked_count(&mut c) == i + 1));
        readers.push(r);
    }
    let _: String = query(&mut c, &["XADD", "s", "2-0", "f", "new"]);
    for r in &mut readers {
        let (got, _) = common::exchange(r, b"", |g| g.ends_with(b"new\r\n"));
        assert_eq!(
            got,
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nf\r\n$3\r\nnew\r\n"
        );
    }
    assert_eq!(blocked_count(&mut c), 0);
    server.shutdown();
}

#[test]
fn blocked_group_readers_each_get_distinct_entries() {
    let server = common::start("io-threads 4");
    let mut c = common::client(&server);
    let _: () = query(&mut c, &["XGROUP", "CREATE", "q", "g", "$", "MKSTREAM"]);
    let mut workers = Vec::new();
    for i in 0..3 {
        let mut w = common::raw(&server);
        let cmd = format!("XREADGROUP GROUP g w{i} COUNT 1 BLOCK 5000 STREAMS q >\r\n");
        w.write_all(cmd.as_bytes()).unwrap();
        assert!(common::wait_until(5, || blocked_count(&mut c) == i + 1));
        workers.push(w);
    }
    for j in 0..3 {
        let _: String = query(&mut c, &["XADD", "q", "*", "job", &format!("job{j}")]);
    }
    let mut got = Vec::new();
    for w in &mut workers {
        let (reply, _) = common::exchange(w, b"", |g| {
            g.windows(3).any(|x| x == b"job") && g.ends_with(b"\r\n") && g.len() > 40
        });
        let text = String::from_utf8_lossy(&reply).into_owned();
        let job = text
            .split("\r\n")
            .find(|l| l.starts_with("job") && l.len() > 3)
            .map(str::to_string)
            .expect("a job in the reply");
        got.push(job);
    }
    got.sort();
    assert_eq!(got, ["job0", "job1", "job2"]);
    let pending: Vec<Value> = query(&mut c, &["XPENDING", "q", "g"]);
    assert_eq!(pending[0], Value::Int(3), "three deliveries pending");
    server.shutdown();
}

#[test]
fn a_reaper_claims_what_a_dead_consumer_left_pending() {
    let server = common::start("");
    let mut c = common::client(&server);
    let _: () = query(&mut c, &["XGROUP", "CREATE", "q", "g", "0", "MKSTREAM"]);
    for i in 0..5 {
        let _: String = query(
            &mut c,
            &["XADD", "q", &format!("{}-0", i + 1), "n", &i.to_string()],
        );
    }
    let _: Value = query(
        &mut c,
        &["XREADGROUP", "GROUP", "g", "dead", "STREAMS", "q", ">"],
    );
    assert_eq!(query::<i64>(&mut c, &["XACK", "q", "g", "1-0"]), 1);
    let _: i64 = query(&mut c, &["XDEL", "q", "2-0"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let reply: Vec<Value> = query(
        &mut c,
        &["XAUTOCLAIM", "q", "g", "reaper", "10", "0", "COUNT", "2"],
    );
    assert_eq!(reply[0], Value::BulkString(b"4-0".to_vec()), "the cursor");
    assert_eq!(ids(&reply[1]), ["3-0"]);
    assert_eq!(
        reply[2],
        Value::Array(vec![Value::BulkString(b"2-0".to_vec())])
    );
    let rest: Vec<Value> = query(
        &mut c,
        &["XAUTOCLAIM", "q", "g", "reaper", "10", "4-0", "JUSTID"],
    );
    assert_eq!(rest[0], Value::BulkString(b"0-0".to_vec()));
    let claimed: Vec<String> = redis::FromRedisValue::from_redis_value(&rest[1]).unwrap();
    assert_eq!(claimed, ["4-0", "5-0"]);
    let mine: Value = query(&mut c, &["XPENDING", "q", "g", "-", "+", "10", "reaper"]);
    assert_eq!(ids(&mine), ["3-0", "4-0", "5-0"]);
    let dead: Value = query(&mut c, &["XPENDING", "q", "g", "-", "+", "10", "dead"]);
    assert_eq!(ids(&dead), Vec::<String>::new());
    server.shutdown();
}

/// A replica receives group traffic as Redis propagates it (XCLAIM, XGROUP SETID ...)
/// and ends with the master's streams, groups and pending entries.
#[test]
fn a_replica_follows_stream_and_group_traffic() {
    let master = common::start("");
    let replica = common::start(&format!("replicaof 127.0.0.1 {}", master.port()));
    let mut m = common::client(&master);
    let mut r = common::client(&replica);
    let _: () = query(&mut m, &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
    for i in 0..200 {
        let _: String = query(
            &mut m,
            &["XADD", "s", "MAXLEN", "~", "150", "*", "i", &i.to_string()],
        );
        if i % 10 == 0 {
            let _: Value = query(
                &mut m,
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    &format!("c{}", i % 3),
                    "COUNT",
                    "4",
                    "STREAMS",
                    "s",
                    ">",
                ],
            );
        }
        if i % 25 == 0 {
            let _: Value = query(
                &mut m,
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "n",
                    "NOACK",
                    "COUNT",
                    "2",
                    "STREAMS",
                    "s",
                    ">",
                ],
            );
            let _: Value = query(
                &mut m,
                &["XAUTOCLAIM", "s", "g", "c9", "0", "0", "COUNT", "3"],
            );
        }
    }
    let pending: Value = query(&mut m, &["XPENDING", "s", "g", "-", "+", "5"]);
    let first = ids(&pending);
    let _: i64 = query(&mut m, &["XACK", "s", "g", &first[0], &first[1]]);
    // XPENDING's idle times differ by the time between the reads: compare its IDs.
    let view = |c: &mut redis::Connection| -> Option<(Value, Vec<String>, Value)> {
        let ask = |c: &mut redis::Connection, args: &[&str]| {
            redis::cmd(args[0]).arg(&args[1..]).query::<Value>(c).ok()
        };
        Some((
            ask(c, &["XRANGE", "s", "-", "+"])?,
            ids(&ask(c, &["XPENDING", "s", "g", "-", "+", "1000"])?),
            ask(c, &["XINFO", "GROUPS", "s"])?,
        ))
    };
    let want = view(&mut m).expect("the master answers");
    // The full sync starts after the 5 s diskless delay; on a CI machine busy with
    // other test binaries a debug build's walk then took seconds more (and, before the
    // walk's starvation guard, never ended): the bound leaves room for it.
    let caught_up = common::wait_until(30, || view(&mut r).as_ref() == Some(&want));
    assert!(
        caught_up,
        "replica has the master's streams and groups:\nmaster {want:?}\nreplica {:?}",
        view(&mut r)
    );
    let (want_pending, got_pending): (Value, Value) = (
        query(&mut m, &["XPENDING", "s", "g"]),
        query(&mut r, &["XPENDING", "s", "g"]),
    );
    assert_eq!(got_pending, want_pending);
    master.shutdown();
    replica.shutdown();
}

/// UNLINK frees a value with many allocations (a stream of 200 nodes, a 1000-field
/// hash) on the background thread, a small one at once; INFO counts the former.
#[test]
fn unlink_frees_big_values_in_the_background() {
    let server = common::start("stream-node-max-entries 5");
    let mut c = common::client(&server);
    let info = |c: &mut redis::Connection, field: &str| -> u64 {
        let text: String = query(c, &["INFO", "memory"]);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .expect("the field is in INFO memory")
    };
    for i in 0..1000 {
        let _: String = query(&mut c, &["XADD", "big", "*", "n", &i.to_string()]);
        let _: i64 = query(&mut c, &["HSET", "wide", &format!("f{i}"), "v"]);
    }
    let _: String = query(&mut c, &["XADD", "small", "*", "a", "b"]);
    let _: () = query(&mut c, &["XGROUP", "CREATE", "small", "g", "$"]);
    assert_eq!(query::<i64>(&mut c, &["UNLINK", "big", "wide", "small"]), 3);
    assert!(common::wait_until(5, || info(
        &mut c,
        "lazyfree_pending_objects"
    ) == 0));
    assert_eq!(
        info(&mut c, "lazyfreed_objects"),
        2,
        "the stream and the hash"
    );
    let _: () = query(&mut c, &["CONFIG", "RESETSTAT"]);
    assert_eq!(info(&mut c, "lazyfreed_objects"), 0);
    server.shutdown();
}

/// A pop waiting behind a stream reader on the same key is still woken by a push (every
/// reader is told of each write, and so is the first waiter that consumes).
#[test]
fn a_pop_blocked_behind_a_stream_reader_is_served() {
    let server = common::start("io-threads 2");
    let mut c = common::client(&server);
    let mut reader = common::raw(&server);
    reader.write_all(b"XREAD BLOCK 0 STREAMS k $\r\n").unwrap();
    assert!(common::wait_until(5, || blocked_count(&mut c) == 1));
    let mut popper = common::raw(&server);
    popper.write_all(b"BLPOP k 0\r\n").unwrap();
    assert!(common::wait_until(5, || blocked_count(&mut c) == 2));
    let _: i64 = query(&mut c, &["LPUSH", "k", "a"]);
    let (got, _) = common::exchange(&mut popper, b"", |g| g.ends_with(b"a\r\n"));
    assert_eq!(got, b"*2\r\n$1\r\nk\r\n$1\r\na\r\n");
    assert!(
        common::wait_until(5, || blocked_count(&mut c) == 1),
        "the reader waits on (the key holds a list)"
    );
    server.shutdown();
}

/// Under OOM, XGROUP CREATE is refused (it grows the stream) and XGROUP DESTROY runs (it
/// frees), as Redis flags them.
#[test]
fn xgroup_create_is_refused_under_oom_and_destroy_is_not() {
    let server = common::start("");
    let mut c = common::client(&server);
    let _: () = query(&mut c, &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
    let value = "x".repeat(1000);
    for i in 0..2000 {
        let _: String = query(
            &mut c,
            &["XADD", "s", "*", "n", &i.to_string(), "v", &value],
        );
    }
    let used = || -> u64 {
        let text: String = query(&mut common::client(&server), &["INFO", "memory"]);
        text.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    };
    assert!(
        common::wait_until(5, || used() > 1_000_000),
        "the stream is counted"
    );
    let _: () = query(&mut c, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let half = (used() / 2).to_string();
    let _: () = query(&mut c, &["CONFIG", "SET", "maxmemory", &half]);
    let err = redis::cmd("XGROUP")
        .arg(&["CREATE", "s", "g2", "$"])
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("OOM"), "{err}");
    assert_eq!(query::<i64>(&mut c, &["XGROUP", "DESTROY", "s", "g"]), 1);
    let _: () = query(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
    server.shutdown();
}
