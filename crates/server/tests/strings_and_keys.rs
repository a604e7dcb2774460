//! Strings, keys and expiry through a real client over TCP.

mod common;

use redis::{Commands, RedisResult, Value};

#[test]
fn strings_basic_replies() {
    let server = common::start("");
    let mut c = common::client(&server);
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(c.get::<_, Option<String>>("missing").unwrap(), None);
    assert_eq!(c.incr::<_, _, i64>("n", 5).unwrap(), 5);
    assert_eq!(c.decr::<_, _, i64>("n", 2).unwrap(), 3);
    assert_eq!(c.append::<_, _, i64>("k", "xyz").unwrap(), 4);
    assert_eq!(c.strlen::<_, i64>("k").unwrap(), 4);
    assert_eq!(c.getrange::<_, String>("k", 1, -1).unwrap(), "xyz");
    assert_eq!(c.setrange::<_, _, i64>("k", 6, "!").unwrap(), 7);
    assert_eq!(c.get::<_, Vec<u8>>("k").unwrap(), b"vxyz\0\0!");
    let r: RedisResult<i64> = c.incr("k", 1);
    assert_eq!(r.unwrap_err().to_string(), "An error was signalled by the server - ResponseError: value is not an integer or out of range");
    let f: String = redis::cmd("INCRBYFLOAT")
        .arg("fl")
        .arg("10.5")
        .query(&mut c)
        .unwrap();
    assert_eq!(f, "10.5");
    let f: String = redis::cmd("INCRBYFLOAT")
        .arg("fl")
        .arg("0.1")
        .query(&mut c)
        .unwrap();
    assert_eq!(f, "10.6");
    let _: () = redis::cmd("MSET")
        .arg(&["a", "1", "b", "2"])
        .query(&mut c)
        .unwrap();
    let got: Vec<Option<String>> = c.mget(&["a", "nope", "b"]).unwrap();
    assert_eq!(got, vec![Some("1".into()), None, Some("2".into())]);
    let nx: i64 = redis::cmd("MSETNX")
        .arg(&["a", "9", "c", "3"])
        .query(&mut c)
        .unwrap();
    assert_eq!(nx, 0);
    assert!(!c.exists::<_, bool>("c").unwrap());
    let old: Option<String> = redis::cmd("SET")
        .arg("a")
        .arg("new")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old.as_deref(), Some("1"));
    let nx: Option<String> = redis::cmd("SET")
        .arg("a")
        .arg("x")
        .arg("NX")
        .query(&mut c)
        .unwrap();
    assert_eq!(nx, None);
    let gd: Option<String> = redis::cmd("GETDEL").arg("a").query(&mut c).unwrap();
    assert_eq!(gd.as_deref(), Some("new"));
    assert!(!c.exists::<_, bool>("a").unwrap());
    let e = redis::cmd("SET")
        .arg("a")
        .arg("x")
        .arg("EX")
        .arg("0")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("invalid expire time in 'set' command"),
        "{e}"
    );
    let e = redis::cmd("SET")
        .arg("a")
        .arg("x")
        .arg("BOGUS")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("syntax error"), "{e}");
    let l: String = redis::cmd("LCS").arg("x1").arg("x2").query(&mut c).unwrap();
    assert_eq!(l, "");
    let _: () = c.set("x1", "ohmytext").unwrap();
    let _: () = c.set("x2", "mynewtext").unwrap();
    let l: String = redis::cmd("LCS").arg("x1").arg("x2").query(&mut c).unwrap();
    assert_eq!(l, "mytext");
    let n: i64 = redis::cmd("LCS")
        .arg("x1")
        .arg("x2")
        .arg("LEN")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 6);
    server.shutdown();
}

#[test]
fn keys_rename_copy_move_scan() {
    let server = common::start("");
    let mut c = common::client(&server);
    for i in 0..500 {
        let _: () = c.set(format!("key:{i}"), i).unwrap();
    }
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 500);
    let mut seen = std::collections::HashSet::new();
    let mut cursor = 0u64;
    for _ in 0..100_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("key:1*")
            .arg("COUNT")
            .arg(20)
            .query(&mut c)
            .unwrap();
        seen.extend(keys);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let expected: std::collections::HashSet<String> = (0..500)
        .map(|i| format!("key:{i}"))
        .filter(|k| k.starts_with("key:1"))
        .collect();
    assert_eq!(seen, expected);
    let keys: Vec<String> = c.keys("key:4?").unwrap();
    assert_eq!(keys.len(), 10);
    let _: () = c.rename("key:1", "renamed").unwrap();
    assert!(!c.exists::<_, bool>("key:1").unwrap());
    let e = c.rename::<_, _, ()>("nope", "x").unwrap_err();
    assert!(e.to_string().contains("no such key"));
    assert_eq!(c.rename_nx::<_, _, i64>("renamed", "key:2").unwrap(), 0);
    let copied: i64 = redis::cmd("COPY")
        .arg("renamed")
        .arg("copy")
        .arg("DB")
        .arg(3)
        .query(&mut c)
        .unwrap();
    assert_eq!(copied, 1);
    let moved: i64 = redis::cmd("MOVE")
        .arg("key:3")
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!(moved, 1);
    let _: () = redis::cmd("SELECT").arg(5).query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("key:3").unwrap(), "3");
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("copy").unwrap(), "1");
    let e = redis::cmd("SELECT")
        .arg(16)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("DB index is out of range"));
    let _: () = redis::cmd("SWAPDB").arg(3).arg(0).query(&mut c).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 499);
    let t: String = redis::cmd("TYPE").arg("key:10").query(&mut c).unwrap();
    assert_eq!(t, "string");
    let enc: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg("key:10")
        .query(&mut c)
        .unwrap();
    assert_eq!(enc, "int");
    let rk: Option<String> = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
    assert!(rk.is_some());
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    let rk: Option<String> = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
    assert!(rk.is_none());
    server.shutdown();
}

#[test]
fn expiry_lazy_active_and_options() {
    let server = common::start("hz 50");
    let mut c = common::client(&server);
    let _: () = redis::cmd("SET")
        .arg("e")
        .arg("v")
        .arg("PX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let pttl: i64 = c.pttl("e").unwrap();
    assert!(pttl > 0 && pttl <= 100, "{pttl}");
    assert_eq!(c.ttl::<_, i64>("nokey").unwrap(), -2);
    let _: () = c.set("p", "v").unwrap();
    assert_eq!(c.ttl::<_, i64>("p").unwrap(), -1);
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("p")
            .arg(100)
            .arg("XX")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("p")
            .arg(100)
            .arg("NX")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("p")
            .arg(50)
            .arg("GT")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("p")
            .arg(50)
            .arg("LT")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    let e = redis::cmd("EXPIRE")
        .arg("p")
        .arg(50)
        .arg("NX")
        .arg("XX")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("not compatible"));
    let et: i64 = redis::cmd("EXPIRETIME").arg("p").query(&mut c).unwrap();
    assert!(et > 1_700_000_000);
    assert_eq!(c.persist::<_, i64>("p").unwrap(), 1);
    assert_eq!(c.ttl::<_, i64>("p").unwrap(), -1);
    let v: Option<String> = redis::cmd("GETEX")
        .arg("p")
        .arg("EX")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert_eq!(v.as_deref(), Some("v"));
    assert!(c.ttl::<_, i64>("p").unwrap() > 0);
    // Lazy: read after the deadline.
    assert!(common::wait_until(3, || c
        .get::<_, Option<String>>("e")
        .unwrap()
        .is_none()));
    // Active: keys nobody reads disappear from DBSIZE.
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("t{i}"))
            .arg("v")
            .arg("PX")
            .arg(50)
            .query(&mut c)
            .unwrap();
    }
    assert!(common::wait_until(5, || redis::cmd("DBSIZE")
        .query::<i64>(&mut c)
        .unwrap()
        == 1));
    // Negative EXPIRE deletes.
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("p")
            .arg(-1)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert!(!c.exists::<_, bool>("p").unwrap());
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    let expired: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("expired_keys:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(expired >= 200, "{expired}");
    server.shutdown();
}

#[test]
fn large_values_and_pipelines() {
    let server = common::start("");
    let mut c = common::client(&server);
    let big = vec![b'x'; 100 * 1024 * 1024];
    let _: () = c.set("big", &big[..]).unwrap();
    let back: Vec<u8> = c.get("big").unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back == big);
    let mut p = redis::pipe();
    for i in 0..10_000 {
        p.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
    }
    for i in 0..10_000 {
        p.cmd("GET").arg(format!("p{i}"));
    }
    let got: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(got, (0..10_000).collect::<Vec<i64>>());
    let v: Value = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(v, Value::SimpleString("PONG".into()));
    server.shutdown();
}
