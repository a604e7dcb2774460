//! Blocking list pops woken from other connections on other threads.

mod common;

use std::time::{Duration, Instant};

use redis::Commands;

/// Clients registered as blocked (INFO's blocked_clients counts a client once its
/// wait is registered, unlike CLIENT LIST's cmd=, which is set before it blocks).
fn blocked_count(c: &mut redis::Connection) -> usize {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(c)
        .expect("INFO answers");
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("blocked_clients in INFO")
}

#[test]
fn blpop_is_woken_by_a_push_from_another_thread() {
    let server = common::start("io-threads 4");
    let mut waiter = common::raw(&server);
    std::io::Write::write_all(&mut waiter, b"BLPOP jobs 0\r\n").unwrap();
    let mut c = common::client(&server);
    assert!(common::wait_until(5, || blocked_count(&mut c) == 1));
    let _: () = c.rpush("jobs", "j1").unwrap();
    let (got, _) = common::exchange(&mut waiter, b"", |g| g.ends_with(b"j1\r\n"));
    assert_eq!(got, b"*2\r\n$4\r\njobs\r\n$2\r\nj1\r\n");
    assert!(
        !c.exists::<_, bool>("jobs").unwrap(),
        "the popped list is gone"
    );
    server.shutdown();
}

#[test]
fn waiters_are_served_in_the_order_they_blocked() {
    let server = common::start("io-threads 4");
    let mut c = common::client(&server);
    let mut waiters = Vec::new();
    for i in 0..5 {
        let mut w = common::raw(&server);
        std::io::Write::write_all(&mut w, b"BRPOP q 0\r\n").unwrap();
        assert!(common::wait_until(5, || blocked_count(&mut c) == i + 1));
        waiters.push(w);
    }
    for i in 0..5 {
        let _: () = c.lpush("q", format!("m{i}")).unwrap();
    }
    for (i, w) in waiters.iter_mut().enumerate() {
        let want = format!("*2\r\n$1\r\nq\r\n$2\r\nm{i}\r\n");
        let (got, _) = common::exchange(w, b"", |g| g.len() >= want.len());
        assert_eq!(String::from_utf8_lossy(&got), want);
    }
    server.shutdown();
}

#[test]
fn timeouts_multi_wrong_type_and_pipelines() {
    let server = common::start("");
    let mut c = common::client(&server);
    let started = Instant::now();
    let v: Option<(String, String)> = redis::cmd("BLPOP")
        .arg("none")
        .arg("0.2")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Inside MULTI a blocking pop does not block.
    let r: (Option<(String, String)>,) = redis::pipe()
        .atomic()
        .cmd("BLPOP")
        .arg("none")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(r.0, None);
    // A key of another type: an error at once; a blocked client stays blocked if the
    // key becomes another type, and is served when it becomes a list.
    let _: () = c.set("str", "x").unwrap();
    let e = redis::cmd("BLPOP")
        .arg("str")
        .arg(1)
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    let mut w = common::raw(&server);
    std::io::Write::write_all(&mut w, b"BLMOVE src dst LEFT RIGHT 0\r\nGET after\r\n").unwrap();
    assert!(common::wait_until(5, || blocked_count(&mut c) == 1));
    let _: () = c.set("src", "not a list").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        blocked_count(&mut c),
        1,
        "still blocked after the key changed type"
    );
    let _: () = c.del("src").unwrap();
    let _: () = c.set("after", "ok").unwrap();
    let _: () = c.rpush("src", "v").unwrap();
    let (got, _) = common::exchange(&mut w, b"", |g| g.ends_with(b"ok\r\n"));
    assert_eq!(
        got, b"$1\r\nv\r\n$2\r\nok\r\n",
        "served, then the pipelined GET runs"
    );
    assert_eq!(c.lrange::<_, Vec<String>>("dst", 0, -1).unwrap(), ["v"]);
    // A blocked client that disconnects leaves no waiter behind.
    let mut gone = common::raw(&server);
    std::io::Write::write_all(&mut gone, b"BLPOP k2 0\r\n").unwrap();
    assert!(common::wait_until(5, || blocked_count(&mut c) == 1));
    drop(gone);
    assert!(common::wait_until(5, || blocked_count(&mut c) == 0));
    let _: () = c.rpush("k2", "kept").unwrap();
    assert_eq!(c.llen::<_, i64>("k2").unwrap(), 1);
    let m: Option<(String, Vec<String>)> = redis::cmd("BLMPOP")
        .arg(1)
        .arg(2)
        .arg("x")
        .arg("k2")
        .arg("LEFT")
        .query(&mut c)
        .unwrap();
    assert_eq!(m, Some(("k2".to_string(), vec!["kept".to_string()])));
    server.shutdown();
}

#[test]
fn bzpopmin_is_woken_by_zadd() {
    let server = common::start("io-threads 2");
    let mut waiter = common::raw(&server);
    std::io::Write::write_all(&mut waiter, b"BZPOPMIN board 0\r\n").unwrap();
    let mut c = common::client(&server);
    assert!(common::wait_until(5, || {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut c)
            .expect("CLIENT LIST");
        list.contains("cmd=bzpopmin")
    }));
    let _: () = redis::cmd("ZADD")
        .arg("board")
        .arg(5)
        .arg("x")
        .arg(3)
        .arg("y")
        .query(&mut c)
        .unwrap();
    let (got, _) = common::exchange(&mut waiter, b"", |g| g.ends_with(b"3\r\n"));
    assert_eq!(got, b"*3\r\n$5\r\nboard\r\n$1\r\ny\r\n$1\r\n3\r\n");
    server.shutdown();
}

/// CLIENT PAUSE WRITE holds writes (their clients block, pipelines wait behind them)
/// while reads go on; CLIENT UNPAUSE, or the end of the pause, runs them in order.
#[test]
fn client_pause_write_holds_writes_until_unpause() {
    let server = common::start("io-threads 2");
    let mut admin = common::client(&server);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query(&mut admin)
        .expect("pause");
    let mut writer = common::raw(&server);
    std::io::Write::write_all(&mut writer, b"SET k 1\r\nGET k\r\n").unwrap();
    assert!(common::wait_until(5, || blocked_count(&mut admin) == 1));
    let v: Option<String> = admin.get("k").unwrap();
    assert_eq!(v, None, "reads run, the write is held");
    let (got, _) = common::exchange(&mut writer, b"", |g| !g.is_empty());
    assert!(got.is_empty(), "no reply while held: {got:?}");
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut admin)
        .expect("unpause");
    let (got, _) = common::exchange(&mut writer, b"", |g| g.ends_with(b"$1\r\n1\r\n"));
    assert_eq!(got, b"+OK\r\n$1\r\n1\r\n");
    // A pause that ends by itself releases too.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(200)
        .query(&mut admin)
        .expect("pause all");
    let started = Instant::now();
    let (got, _) = common::exchange(&mut writer, b"INCR k\r\n", |g| g.ends_with(b":2\r\n"));
    assert_eq!(got, b":2\r\n");
    assert!(started.elapsed() >= Duration::from_millis(150));
    let err = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10)
        .arg("READS")
        .query::<()>(&mut admin)
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("CLIENT PAUSE mode must be WRITE or ALL"));
    server.shutdown();
}

/// CLIENT UNBLOCK ends another client's block as its timeout would, or with
/// -UNBLOCKED; a client that is not blocked gives 0.
#[test]
fn client_unblock_by_id() {
    let server = common::start("");
    let mut admin = common::client(&server);
    for (reason, want) in [
        ("TIMEOUT", "*-1\r\n"),
        (
            "ERROR",
            "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n",
        ),
    ] {
        let mut blocked = common::raw(&server);
        let (id, _) = common::exchange(&mut blocked, b"CLIENT ID\r\n", |b| b.ends_with(b"\r\n"));
        let id: i64 = String::from_utf8_lossy(&id[1..id.len() - 2])
            .parse()
            .expect("id");
        std::io::Write::write_all(&mut blocked, b"BLPOP nosuchlist 0\r\n").expect("write");
        assert!(
            common::wait_until(5, || {
                redis::cmd("CLIENT")
                    .arg("UNBLOCK")
                    .arg(id)
                    .arg(reason)
                    .query::<i64>(&mut admin)
                    .is_ok_and(|n| n == 1)
            }),
            "the client blocks and is unblocked"
        );
        let (got, _) = common::exchange(&mut blocked, b"", |b| b.ends_with(b"\r\n"));
        assert_eq!(String::from_utf8_lossy(&got), want, "{reason}");
        // Its pipeline goes on.
        let (pong, _) = common::exchange(&mut blocked, b"PING\r\n", |b| b.ends_with(b"\r\n"));
        assert_eq!(pong, b"+PONG\r\n");
        let n: i64 = redis::cmd("CLIENT")
            .arg("UNBLOCK")
            .arg(id)
            .query(&mut admin)
            .expect("unblock");
        assert_eq!(n, 0, "not blocked any more");
    }
    let err = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(1)
        .arg("BOGUS")
        .query::<i64>(&mut admin)
        .expect_err("bad reason");
    assert!(
        err.to_string()
            .contains("reason should be TIMEOUT or ERROR"),
        "{err}"
    );
}

/// Redis serves the clients a write unblocks before it replies to the write, so a client
/// that reads right after its RPUSH sees what they did: here two BRPOPLPUSHes pass the
/// element from list1 to list2 and back (Redis' "Circular BRPOPLPUSH"). On several event
/// loops the writer's reply waits for the woken clients' loops; without that wait the
/// LRANGEs read the element in transit in about half of the rounds.
#[test]
fn a_write_is_answered_after_the_clients_it_woke_have_run() {
    let server = common::start("io-threads 2");
    let mut c = common::client(&server);
    for round in 0..30 {
        let _: () = c.del(&["list1{t}", "list2{t}"]).unwrap();
        let mut first = common::raw(&server);
        std::io::Write::write_all(&mut first, b"BRPOPLPUSH list1{t} list2{t} 0\r\n").unwrap();
        assert!(common::wait_until(5, || blocked_count(&mut c) == 1));
        let mut second = common::raw(&server);
        std::io::Write::write_all(&mut second, b"BRPOPLPUSH list2{t} list1{t} 0\r\n").unwrap();
        assert!(common::wait_until(5, || blocked_count(&mut c) == 2));
        let _: () = c.rpush("list1{t}", "foo").unwrap();
        let list1: Vec<String> = c.lrange("list1{t}", 0, -1).unwrap();
        let list2: Vec<String> = c.lrange("list2{t}", 0, -1).unwrap();
        assert_eq!(
            (list1, list2),
            (vec!["foo".to_string()], vec![]),
            "round {round}"
        );
        for waiter in [&mut first, &mut second] {
            let (got, _) = common::exchange(waiter, b"", |g| g.ends_with(b"foo\r\n"));
            assert_eq!(got, b"$3\r\nfoo\r\n");
        }
    }
    server.shutdown();
}

/// Redis serves the clients a command unblocked before it runs the next command, so a
/// pipelined `RPUSH q x` then `LLEN q` reads 0 when a BLPOP waited on q, and so does an
/// LLEN that another connection sent in the same instant. Before, the pipeline ran on
/// and read 1 (every time with one event loop, where the woken client's retry came
/// after the whole pipeline).
#[test]
fn commands_after_a_push_see_the_clients_it_woke_served() {
    for loops in ["io-threads 1", "io-threads 2"] {
        let server = common::start(loops);
        let mut c = common::client(&server);
        for round in 0..8 {
            let got = with_a_blpop_waiter_on_q(&server, &mut c, |pusher| {
                let (got, _) = common::exchange(
                    pusher,
                    b"RPUSH q x\r\nLLEN q\r\nRPUSH q y\r\nLLEN q\r\n",
                    |g| g.len() >= 16,
                );
                got
            });
            assert_eq!(
                String::from_utf8_lossy(&got),
                ":1\r\n:0\r\n:1\r\n:1\r\n",
                "{loops}, round {round}"
            );
        }
        server.shutdown();
    }
}

/// A client that writes its pipeline and shuts its end (`nc -N`) gets every reply, the
/// commands after a waking write included, before the server closes.
#[test]
fn a_paused_pipeline_runs_to_its_end_after_the_client_shut_its_end() {
    use std::io::{Read, Write};
    let server = common::start("io-threads 2");
    let mut c = common::client(&server);
    for round in 0..6 {
        let got = with_a_blpop_waiter_on_q(&server, &mut c, |pusher| {
            pusher
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            pusher
                .write_all(b"RPUSH q x\r\nLLEN q\r\nPING\r\n")
                .unwrap();
            pusher.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            pusher
                .read_to_end(&mut got)
                .expect("read until the server closes");
            got
        });
        assert_eq!(
            String::from_utf8_lossy(&got),
            ":1\r\n:0\r\n+PONG\r\n",
            "round {round}"
        );
    }
    server.shutdown();
}

/// Blocks a `BLPOP q 0` on a connection of its own, runs `push` on another (which must
/// push `x` first), checks the waiter got `x`, and empties q; returns what `push` read.
fn with_a_blpop_waiter_on_q(
    server: &carmine_server::Server,
    c: &mut redis::Connection,
    push: impl FnOnce(&mut std::net::TcpStream) -> Vec<u8>,
) -> Vec<u8> {
    let mut waiter = common::raw(server);
    std::io::Write::write_all(&mut waiter, b"BLPOP q 0\r\n").expect("write BLPOP");
    assert!(common::wait_until(5, || blocked_count(c) == 1));
    let mut pusher = common::raw(server);
    let got = push(&mut pusher);
    let (popped, _) = common::exchange(&mut waiter, b"", |g| g.ends_with(b"x\r\n"));
    assert_eq!(popped, b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
    let _: () = c.del("q").expect("DEL q");
    got
}
