//! MULTI/EXEC/WATCH across connections on different threads.

mod common;

use redis::Commands;

#[test]
fn multi_exec_and_errors() {
    let server = common::start("");
    let mut c = common::client(&server);
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("ctr", 1)
        .incr("ctr", 2)
        .query(&mut c)
        .unwrap();
    assert_eq!((a, b), (1, 3));
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let q: String = redis::cmd("SET").arg("x").arg("1").query(&mut c).unwrap();
    assert_eq!(q, "QUEUED");
    let e = redis::cmd("GET").query::<()>(&mut c).unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");
    let e = redis::cmd("EXEC").query::<()>(&mut c).unwrap_err();
    assert_eq!(e.code(), Some("EXECABORT"), "{e}");
    assert!(!c.exists::<_, bool>("x").unwrap());
    let e = redis::cmd("EXEC").query::<()>(&mut c).unwrap_err();
    assert!(e.to_string().contains("EXEC without MULTI"));
    let e = redis::cmd("DISCARD").query::<()>(&mut c).unwrap_err();
    assert!(e.to_string().contains("DISCARD without MULTI"));
    // Runtime errors inside EXEC do not abort the others.
    let _: () = c.set("s", "text").unwrap();
    let r: Vec<redis::Value> = redis::pipe()
        .atomic()
        .incr("s", 1)
        .set("y", 2)
        .query(&mut c)
        .unwrap_or_default();
    let _ = r;
    assert_eq!(c.get::<_, i64>("y").unwrap(), 2);
    // Whole-database commands inside MULTI run with the world stopped.
    let (n, _): (i64, ()) = redis::pipe()
        .atomic()
        .cmd("DBSIZE")
        .cmd("FLUSHDB")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    server.shutdown();
}

#[test]
fn watch_sees_writes_from_other_connections() {
    let server = common::start("");
    let mut a = common::client(&server);
    let mut b = common::client(&server);
    let _: () = a.set("w", 1).unwrap();
    let _: () = redis::cmd("WATCH").arg("w").query(&mut a).unwrap();
    let _: () = b.set("w", 2).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut a).unwrap();
    let _: () = redis::cmd("SET").arg("w").arg(3).query(&mut a).unwrap();
    let r: Option<Vec<String>> = redis::cmd("EXEC").query(&mut a).unwrap();
    assert_eq!(r, None, "EXEC must fail when a watched key changed");
    assert_eq!(a.get::<_, i64>("w").unwrap(), 2);
    // Unmodified watch succeeds; another key in the same slot does not interfere.
    let _: () = redis::cmd("WATCH").arg("{t}w").query(&mut a).unwrap();
    let _: () = b.set("{t}other", 1).unwrap();
    let r: Option<(String,)> = redis::pipe().atomic().set("{t}w", 9).query(&mut a).unwrap();
    assert!(r.is_some());
    // A watched key that expires counts as modified.
    let _: () = redis::cmd("SET")
        .arg("ttl")
        .arg(1)
        .arg("PX")
        .arg(50)
        .query(&mut a)
        .unwrap();
    let _: () = redis::cmd("WATCH").arg("ttl").query(&mut a).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(120));
    let _: () = redis::cmd("MULTI").query(&mut a).unwrap();
    let _: () = redis::cmd("SET").arg("ttl").arg(3).query(&mut a).unwrap();
    let r: Option<Vec<String>> = redis::cmd("EXEC").query(&mut a).unwrap();
    assert_eq!(r, None);
    // FLUSHALL touches watched keys.
    let _: () = redis::cmd("WATCH").arg("w").query(&mut a).unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut b).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut a).unwrap();
    let _: () = redis::cmd("PING").query(&mut a).unwrap();
    let r: Option<Vec<String>> = redis::cmd("EXEC").query(&mut a).unwrap();
    assert_eq!(r, None);
    server.shutdown();
}

#[test]
fn concurrent_incr_through_transactions_is_exact() {
    let server = common::start("io-threads 4");
    let port = server.port();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let cl = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
                let mut c = cl.get_connection().unwrap();
                for _ in 0..250 {
                    let _: (i64, i64) = redis::pipe()
                        .atomic()
                        .incr("{c}a", 1)
                        .incr("{c}b", 1)
                        .query(&mut c)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = common::client(&server);
    assert_eq!(c.get::<_, i64>("{c}a").unwrap(), 1000);
    assert_eq!(c.get::<_, i64>("{c}b").unwrap(), 1000);
    server.shutdown();
}
