//! SORT against a running server: patterns that read keys in every table while other
//! event loops write, and what blocked clients, WATCH, transactions and ACLs see of it.
//! Replies byte for byte against Redis are in `differential.rs`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::query;

/// BY and GET patterns name keys spread over every table, so some lie below the tables
/// the command locked: the SORT stops the world for them, while writers on other event
/// loops keep trying. The order and the values read must be the stored ones.
#[test]
fn by_and_get_patterns_read_keys_anywhere_while_others_write() {
    let server = common::start("io-threads 4");
    let mut c = common::client(&server);
    let n = 300;
    for i in 0..n {
        let (w, o) = (format!("w_{i}"), format!("o_{i}"));
        let weight = (n - i).to_string();
        let _: () = query(&mut c, &["MSET", &w, &weight, &o, &format!("v{i}")]);
        let _: () = query(&mut c, &["RPUSH", "ids", &i.to_string()]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let mut w = common::client(&server);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 200_000 {
                    let key = format!("noise:{t}:{}", i % 500);
                    let _: i64 = query(&mut w, &["INCR", &key]);
                    i += 1;
                }
                i
            })
        })
        .collect();
    for _ in 0..20 {
        let sorted: Vec<String> = query(&mut c, &["SORT", "ids", "BY", "w_*", "GET", "o_*"]);
        let expected: Vec<String> = (0..n).rev().map(|i| format!("v{i}")).collect();
        assert_eq!(sorted, expected);
        let stored: i64 = query(
            &mut c,
            &[
                "SORT", "ids", "BY", "w_*", "LIMIT", "0", "3", "STORE", "top",
            ],
        );
        assert_eq!(stored, 3);
        let top: Vec<String> = query(&mut c, &["LRANGE", "top", "0", "-1"]);
        assert_eq!(
            top,
            [
                (n - 1).to_string(),
                (n - 2).to_string(),
                (n - 3).to_string()
            ]
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        assert!(w.join().expect("writer") > 0, "the writers ran");
    }
}

/// SORT ... STORE is a list write: a client blocked on the destination gets its first
/// element, and a transaction watching it is aborted.
#[test]
fn a_stored_sort_wakes_blocked_pops_and_touches_watched_keys() {
    let server = common::start("");
    let mut c = common::client(&server);
    let _: () = query(&mut c, &["RPUSH", "src", "3", "1", "2"]);
    let mut blocked = common::client(&server);
    let popper = std::thread::spawn(move || -> Option<(String, String)> {
        query(&mut blocked, &["BLPOP", "dst", "10"])
    });
    // The pop must be waiting before the SORT runs.
    assert!(common::wait_until(10, || {
        let info: String = query(&mut c, &["INFO", "clients"]);
        info.contains("blocked_clients:1")
    }));
    let stored: i64 = query(&mut c, &["SORT", "src", "STORE", "dst"]);
    assert_eq!(stored, 3);
    assert_eq!(
        popper.join().expect("popper"),
        Some(("dst".to_string(), "1".to_string()))
    );

    let mut watcher = common::client(&server);
    let _: () = query(&mut watcher, &["WATCH", "dst"]);
    let _: i64 = query(&mut c, &["SORT", "src", "DESC", "STORE", "dst"]);
    let _: () = query(&mut watcher, &["MULTI"]);
    let _: () = query(&mut watcher, &["SET", "x", "1"]);
    let exec: Option<Vec<String>> = query(&mut watcher, &["EXEC"]);
    assert_eq!(exec, None, "the watched destination changed");
    let dst: Vec<String> = query(&mut c, &["LRANGE", "dst", "0", "-1"]);
    assert_eq!(dst, ["3", "2", "1"]);
}

/// Inside MULTI a SORT with patterns runs with the rest of the transaction; a user who
/// may not read every key may not use BY or GET patterns (Redis' texts); SAVE and
/// SHUTDOWN are refused inside MULTI and abort it.
#[test]
fn patterns_inside_transactions_and_under_acl() {
    let server = common::start("");
    let mut c = common::client(&server);
    let _: () = query(&mut c, &["RPUSH", "l", "a", "b"]);
    let _: () = query(&mut c, &["MSET", "w_a", "2", "w_b", "1"]);
    let _: () = query(&mut c, &["MULTI"]);
    let _: () = query(&mut c, &["SORT", "l", "BY", "w_*"]);
    let _: () = query(&mut c, &["GET", "w_a"]);
    let exec: (Vec<String>, String) = query(&mut c, &["EXEC"]);
    assert_eq!(
        exec,
        (vec!["b".to_string(), "a".to_string()], "2".to_string())
    );

    let _: () = query(
        &mut c,
        &["ACL", "SETUSER", "limited", "on", ">pw", "~l*", "+@all"],
    );
    let mut limited = common::client(&server);
    let _: () = query(&mut limited, &["AUTH", "limited", "pw"]);
    let plain: Vec<String> = query(&mut limited, &["SORT", "l", "ALPHA"]);
    assert_eq!(plain, ["a", "b"]);
    let by = redis::cmd("SORT")
        .arg("l")
        .arg("BY")
        .arg("w_*")
        .query::<Vec<String>>(&mut limited);
    let err = by.expect_err("BY refused").to_string();
    assert!(
        err.contains("BY option of SORT denied due to insufficient ACL permissions"),
        "{err}"
    );
    let get = redis::cmd("SORT")
        .arg("l")
        .arg("GET")
        .arg("w_*")
        .query::<Vec<String>>(&mut limited);
    let err = get.expect_err("GET refused").to_string();
    assert!(
        err.contains("GET option of SORT denied due to insufficient ACL permissions"),
        "{err}"
    );

    for refused in ["SAVE", "SHUTDOWN"] {
        let _: () = query(&mut c, &["MULTI"]);
        let err = redis::cmd(refused)
            .query::<()>(&mut c)
            .expect_err("refused");
        assert!(
            err.to_string()
                .contains("Command not allowed inside a transaction"),
            "{err}"
        );
        let exec = redis::cmd("EXEC").query::<()>(&mut c).expect_err("aborted");
        assert!(exec.to_string().contains("Transaction discarded"), "{exec}");
    }
    let pong: String = query(&mut c, &["PING"]);
    assert_eq!(pong, "PONG", "the server is still up");
}
