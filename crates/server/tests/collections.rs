//! Hashes, lists and sets through a real client: replies, WRONGTYPE, encodings.

mod common;

use std::collections::{HashMap, HashSet};

use redis::Commands;

fn encoding(c: &mut redis::Connection, key: &str) -> String {
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query(c)
        .expect("OBJECT ENCODING answers")
}

#[test]
fn hashes() {
    let server = common::start("hash-max-listpack-entries 4");
    let mut c = common::client(&server);
    assert_eq!(
        redis::cmd("HSET")
            .arg("h")
            .arg(&["a", "1", "b", "2"])
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    assert_eq!(
        redis::cmd("HSET")
            .arg("h")
            .arg(&["a", "3"])
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(c.hget::<_, _, String>("h", "a").unwrap(), "3");
    assert_eq!(c.hget::<_, _, Option<String>>("h", "zz").unwrap(), None);
    assert_eq!(encoding(&mut c, "h"), "listpack");
    let all: HashMap<String, String> = c.hgetall("h").unwrap();
    assert_eq!(
        all,
        HashMap::from([("a".into(), "3".into()), ("b".into(), "2".into())])
    );
    assert_eq!(c.hincr::<_, _, _, i64>("h", "b", 5).unwrap(), 7);
    let e = c
        .hincr::<_, _, _, i64>("h", "zz", 1)
        .map(|_| ())
        .and_then(|_| c.hset::<_, _, _, ()>("h", "s", "x"))
        .and_then(|_| c.hincr::<_, _, _, i64>("h", "s", 1).map(|_| ()))
        .unwrap_err();
    assert!(
        e.to_string().contains("hash value is not an integer"),
        "{e}"
    );
    for i in 0..10 {
        let _: () = c.hset("h", format!("f{i}"), i).unwrap();
    }
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    assert_eq!(c.hlen::<_, i64>("h").unwrap(), 14);
    assert_eq!(c.hdel::<_, _, i64>("h", &["a", "b", "nope"]).unwrap(), 2);
    let keys: Vec<String> = c.hkeys("h").unwrap();
    assert_eq!(keys.len(), 12);
    let vals: Vec<Option<String>> = redis::cmd("HMGET")
        .arg("h")
        .arg(&["f1", "nope"])
        .query(&mut c)
        .unwrap();
    assert_eq!(vals, vec![Some("1".into()), None]);
    // A hashtable is scanned COUNT (default 10) fields at a time.
    let mut cursor = "0".to_string();
    let mut items = Vec::new();
    for step in 0.. {
        let (next, got): (String, Vec<String>) = redis::cmd("HSCAN")
            .arg("h")
            .arg(&cursor)
            .arg("MATCH")
            .arg("f1*")
            .query(&mut c)
            .unwrap();
        items.extend(got);
        cursor = next;
        if cursor == "0" {
            assert_eq!(step, 1, "12 fields take two steps of 10");
            break;
        }
        assert!(step < 5);
    }
    assert_eq!(items, vec!["f1".to_string(), "1".to_string()]);
    let rf: Vec<String> = redis::cmd("HRANDFIELD")
        .arg("h")
        .arg(-20)
        .query(&mut c)
        .unwrap();
    assert_eq!(rf.len(), 20);
    let _: () = c.set("str", "x").unwrap();
    let e = c.hget::<_, _, String>("str", "a").unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    let e = c.get::<_, String>("h").unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    // Deleting every field deletes the key.
    let _: () = c.hset("tmp", "x", 1).unwrap();
    let _: () = c.hdel("tmp", "x").unwrap();
    assert!(!c.exists::<_, bool>("tmp").unwrap());
    server.shutdown();
}

#[test]
fn lists() {
    let server = common::start("list-max-listpack-size 4");
    let mut c = common::client(&server);
    assert_eq!(c.rpush::<_, _, i64>("l", &["a", "b", "c"]).unwrap(), 3);
    assert_eq!(c.lpush::<_, _, i64>("l", "z").unwrap(), 4);
    // Redis 7.0 names every list "quicklist" (the small one is one listpack node).
    assert_eq!(encoding(&mut c, "l"), "quicklist");
    assert_eq!(
        c.lrange::<_, Vec<String>>("l", 0, -1).unwrap(),
        ["z", "a", "b", "c"]
    );
    assert_eq!(c.rpush::<_, _, i64>("l", "d").unwrap(), 5);
    assert_eq!(encoding(&mut c, "l"), "quicklist");
    assert_eq!(c.lindex::<_, String>("l", -1).unwrap(), "d");
    let _: () = c.lset("l", 1, "A").unwrap();
    let e = c.lset::<_, _, ()>("l", 99, "x").unwrap_err();
    assert!(e.to_string().contains("index out of range"));
    assert_eq!(c.linsert_before::<_, _, _, i64>("l", "b", "B").unwrap(), 6);
    assert_eq!(
        c.linsert_after::<_, _, _, i64>("l", "nope", "x").unwrap(),
        -1
    );
    assert_eq!(
        c.lrange::<_, Vec<String>>("l", 0, -1).unwrap(),
        ["z", "A", "B", "b", "c", "d"]
    );
    assert_eq!(c.lpop::<_, String>("l", None).unwrap(), "z");
    let popped: Vec<String> = c.rpop("l", std::num::NonZeroUsize::new(2)).unwrap();
    assert_eq!(popped, ["d", "c"]);
    let _: () = c.rpush("l", &["b", "x", "b"]).unwrap();
    assert_eq!(c.lrem::<_, _, i64>("l", -1, "b").unwrap(), 1);
    assert_eq!(
        c.lrange::<_, Vec<String>>("l", 0, -1).unwrap(),
        ["A", "B", "b", "b", "x"]
    );
    let pos: Vec<i64> = redis::cmd("LPOS")
        .arg("l")
        .arg("b")
        .arg("COUNT")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(pos, [2, 3]);
    let _: () = c.ltrim("l", 1, -2).unwrap();
    assert_eq!(
        c.lrange::<_, Vec<String>>("l", 0, -1).unwrap(),
        ["B", "b", "b"]
    );
    let moved: String = redis::cmd("LMOVE")
        .arg("l")
        .arg("other")
        .arg("LEFT")
        .arg("RIGHT")
        .query(&mut c)
        .unwrap();
    assert_eq!(moved, "B");
    let m: (String, Vec<String>) = redis::cmd("LMPOP")
        .arg(2)
        .arg("missing")
        .arg("l")
        .arg("RIGHT")
        .arg("COUNT")
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!(m, ("l".to_string(), vec!["b".to_string(), "b".to_string()]));
    assert!(
        !c.exists::<_, bool>("l").unwrap(),
        "an emptied list is deleted"
    );
    let none: Option<String> = c.lpop("l", None).unwrap();
    assert_eq!(none, None);
    assert_eq!(c.lpush_exists::<_, _, i64>("nolist", "x").unwrap(), 0);
    server.shutdown();
}

#[test]
fn sets() {
    let server = common::start("set-max-intset-entries 4\nset-max-listpack-entries 4");
    let mut c = common::client(&server);
    assert_eq!(c.sadd::<_, _, i64>("s", &[1, 2, 3]).unwrap(), 3);
    assert_eq!(encoding(&mut c, "s"), "intset");
    assert_eq!(c.sadd::<_, _, i64>("s", "x").unwrap(), 1);
    // Stored packed, reported with Redis 7.0's name.
    assert_eq!(encoding(&mut c, "s"), "hashtable");
    assert_eq!(c.sadd::<_, _, i64>("s", &["y", "z"]).unwrap(), 2);
    assert_eq!(encoding(&mut c, "s"), "hashtable");
    assert!(c.sismember::<_, _, bool>("s", 2).unwrap());
    assert_eq!(c.scard::<_, i64>("s").unwrap(), 6);
    let _: () = c.sadd("t", &["x", "2", "q"]).unwrap();
    let inter: HashSet<String> = c.sinter(&["s", "t"]).unwrap();
    assert_eq!(inter, HashSet::from(["x".to_string(), "2".to_string()]));
    let union: HashSet<String> = c.sunion(&["s", "t"]).unwrap();
    assert_eq!(union.len(), 7);
    let diff: HashSet<String> = c.sdiff(&["t", "s"]).unwrap();
    assert_eq!(diff, HashSet::from(["q".to_string()]));
    assert_eq!(
        redis::cmd("SINTERCARD")
            .arg(2)
            .arg("s")
            .arg("t")
            .arg("LIMIT")
            .arg(1)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(c.sinterstore::<_, _, i64>("dst", &["s", "t"]).unwrap(), 2);
    assert!(c.smove::<_, _, _, bool>("t", "dst", "q").unwrap());
    assert_eq!(c.scard::<_, i64>("dst").unwrap(), 3);
    let popped: Vec<String> = redis::cmd("SPOP").arg("dst").arg(10).query(&mut c).unwrap();
    assert_eq!(popped.len(), 3);
    assert!(!c.exists::<_, bool>("dst").unwrap());
    let m: Vec<bool> = redis::cmd("SMISMEMBER")
        .arg("s")
        .arg(1)
        .arg(99)
        .query(&mut c)
        .unwrap();
    assert_eq!(m, [true, false]);
    let r: Vec<String> = c.srandmember_multiple("s", 3).unwrap();
    assert_eq!(r.iter().collect::<HashSet<_>>().len(), 3);
    let e = c
        .sadd::<_, _, i64>("s", "x")
        .map(|_| ())
        .and_then(|_| c.lpush::<_, _, ()>("s", "x"))
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    server.shutdown();
}

#[test]
fn sorted_sets_large_and_small() {
    let server = common::start("zset-max-listpack-entries 16");
    let mut c = common::client(&server);
    for i in 0..2000 {
        let _: () = c.zadd("big", format!("m{i:05}"), (i * 7) % 2000).unwrap();
    }
    assert_eq!(encoding(&mut c, "big"), "skiplist");
    assert_eq!(c.zcard::<_, i64>("big").unwrap(), 2000);
    // Scores are a permutation of 0..2000, so rank == score.
    for i in (0..2000).step_by(97) {
        let member = format!("m{i:05}");
        let score: f64 = c.zscore("big", &member).unwrap();
        let rank: i64 = c.zrank("big", &member).unwrap();
        assert_eq!(rank as f64, score);
        let rev: i64 = c.zrevrank("big", &member).unwrap();
        assert_eq!(rev, 1999 - rank);
    }
    let top: Vec<(String, f64)> = c.zrevrange_withscores("big", 0, 2).unwrap();
    assert_eq!(
        top.iter().map(|t| t.1).collect::<Vec<_>>(),
        [1999.0, 1998.0, 1997.0]
    );
    assert_eq!(c.zcount::<_, _, _, i64>("big", 100, "(200").unwrap(), 100);
    let removed: i64 = redis::cmd("ZREMRANGEBYSCORE")
        .arg("big")
        .arg(0)
        .arg(999)
        .query(&mut c)
        .unwrap();
    assert_eq!(removed, 1000);
    let first: Vec<(String, f64)> = c.zrange_withscores("big", 0, 0).unwrap();
    assert_eq!(first[0].1, 1000.0);
    let _: () = c.zadd("small", "a", 1).unwrap();
    assert_eq!(encoding(&mut c, "small"), "listpack");
    let _: () = c.set("str", "x").unwrap();
    let e = c.zadd::<_, _, _, i64>("str", "a", 1).unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    server.shutdown();
}

/// HSCAN/SSCAN/ZSCAN walk large collections a COUNT-sized step at a time, and return
/// every member present for the whole scan even while others come and go.
#[test]
fn incremental_scans_of_large_collections() {
    let server = common::start("io-threads 2");
    let mut c = common::client(&server);
    for i in 0..1000 {
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg("h")
            .arg(format!("f{i}"))
            .arg(i)
            .ignore()
            .cmd("SADD")
            .arg("s")
            .arg(format!("m{i}"))
            .ignore()
            .cmd("ZADD")
            .arg("z")
            .arg(i)
            .arg(format!("m{i}"))
            .ignore()
            .query(&mut c)
            .unwrap();
    }
    for (cmd, key, prefix) in [
        ("HSCAN", "h", "f"),
        ("SSCAN", "s", "m"),
        ("ZSCAN", "z", "m"),
    ] {
        let mut cursor = 0u64;
        let mut seen = std::collections::HashSet::new();
        let mut calls = 0;
        loop {
            let (next, items): (u64, Vec<String>) = redis::cmd(cmd)
                .arg(key)
                .arg(cursor)
                .arg("COUNT")
                .arg(10)
                .query(&mut c)
                .unwrap();
            let stride = if cmd == "SSCAN" { 1 } else { 2 };
            assert!(
                items.len() / stride <= 10,
                "{cmd} returned {} items",
                items.len()
            );
            seen.extend(items.into_iter().step_by(stride));
            // Churn: members 0..100 leave, new ones arrive, between steps.
            if calls < 100 {
                let gone = format!("{prefix}{calls}");
                let _: () = match cmd {
                    "HSCAN" => redis::cmd("HDEL")
                        .arg(key)
                        .arg(&gone)
                        .query(&mut c)
                        .unwrap(),
                    "SSCAN" => redis::cmd("SREM")
                        .arg(key)
                        .arg(&gone)
                        .query(&mut c)
                        .unwrap(),
                    _ => redis::cmd("ZREM")
                        .arg(key)
                        .arg(&gone)
                        .query(&mut c)
                        .unwrap(),
                };
                let _: () = match cmd {
                    "HSCAN" => redis::cmd("HSET")
                        .arg(key)
                        .arg(format!("new{calls}"))
                        .arg(1)
                        .query(&mut c)
                        .unwrap(),
                    "SSCAN" => redis::cmd("SADD")
                        .arg(key)
                        .arg(format!("new{calls}"))
                        .query(&mut c)
                        .unwrap(),
                    _ => redis::cmd("ZADD")
                        .arg(key)
                        .arg(1)
                        .arg(format!("new{calls}"))
                        .query(&mut c)
                        .unwrap(),
                };
            }
            calls += 1;
            cursor = next;
            if cursor == 0 {
                break;
            }
            assert!(calls < 1000, "{cmd} must finish");
        }
        assert!(calls >= 90, "{cmd} should take many steps, took {calls}");
        for i in 100..1000 {
            assert!(
                seen.contains(&format!("{prefix}{i}")),
                "{cmd} missed {prefix}{i}"
            );
        }
    }
    // MATCH filters what a step returns; a missing key is an empty, finished scan.
    let (_, items): (u64, Vec<String>) = redis::cmd("SSCAN")
        .arg("s")
        .arg(0)
        .arg("MATCH")
        .arg("m99*")
        .arg("COUNT")
        .arg(2000)
        .query(&mut c)
        .unwrap();
    let mut items = items;
    items.sort();
    assert_eq!(
        items,
        ["m990", "m991", "m992", "m993", "m994", "m995", "m996", "m997", "m998", "m999"]
    );
    let (cursor, items): (u64, Vec<String>) = redis::cmd("HSCAN")
        .arg("nope")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!((cursor, items.len()), (0, 0));
    server.shutdown();
}
