//! Pub/Sub across connections and event loops.

mod common;

use std::io::Write;

fn subscribe(server: &carmine_server::Server, cmd: &[u8]) -> std::net::TcpStream {
    let mut s = common::raw(server);
    let (got, _) = common::exchange(&mut s, cmd, |g| g.ends_with(b":1\r\n"));
    assert!(
        got.ends_with(b":1\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s
}

#[test]
fn fan_out_to_a_thousand_subscribers() {
    let server = common::start("io-threads 4");
    let mut subs: Vec<_> = (0..1000)
        .map(|_| subscribe(&server, b"SUBSCRIBE news\r\n"))
        .collect();
    let mut c = common::client(&server);
    let n: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hello")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1000);
    for s in subs.iter_mut() {
        let (got, _) = common::exchange(s, b"", |g| g.ends_with(b"hello\r\n"));
        assert_eq!(got, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n");
    }
    let numsub: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("news")
        .query(&mut c)
        .unwrap();
    assert_eq!(numsub.len(), 2);
    drop(subs);
    assert!(common::wait_until(5, || redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query::<Vec<String>>(&mut c)
        .unwrap()
        .is_empty()));
    server.shutdown();
}

#[test]
fn order_patterns_resp3_and_subscriber_mode() {
    let server = common::start("io-threads 2");
    let mut sub = subscribe(&server, b"SUBSCRIBE a\r\n");
    // In RESP2 subscriber mode only (un)subscribe, PING, QUIT, RESET are allowed.
    let (got, _) = common::exchange(&mut sub, b"GET x\r\nPING\r\n", |g| {
        g.ends_with(b"pong\r\n$0\r\n\r\n")
    });
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("-ERR Can't execute 'get'"), "{text}");
    let mut psub = common::raw(&server);
    let (got, _) = common::exchange(&mut psub, b"HELLO 3\r\nPSUBSCRIBE a*\r\n", |g| {
        g.ends_with(b":1\r\n")
    });
    assert!(
        got.ends_with(b">3\r\n$10\r\npsubscribe\r\n$2\r\na*\r\n:1\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let mut c = common::client(&server);
    for i in 0..100 {
        let n: i64 = redis::cmd("PUBLISH").arg("a").arg(i).query(&mut c).unwrap();
        assert_eq!(n, 2);
    }
    let expected: Vec<u8> = (0..100)
        .flat_map(|i: i32| {
            let m = i.to_string();
            format!("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n${}\r\n{m}\r\n", m.len()).into_bytes()
        })
        .collect();
    let (got, _) = common::exchange(&mut sub, b"", |g| g.len() >= expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
        "in publish order"
    );
    let (got, _) = common::exchange(&mut psub, b"", |g| g.ends_with(b"$2\r\n99\r\n"));
    assert!(
        got.starts_with(b">4\r\n$8\r\npmessage\r\n$2\r\na*\r\n$1\r\na\r\n$1\r\n0\r\n"),
        "{}",
        String::from_utf8_lossy(&got[..80.min(got.len())])
    );
    let numpat: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut c).unwrap();
    assert_eq!(numpat, 1);
    let (got, _) = common::exchange(&mut sub, b"UNSUBSCRIBE\r\nGET x\r\n", |g| {
        g.ends_with(b"$-1\r\n")
    });
    assert_eq!(got, b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n$-1\r\n");
    server.shutdown();
}

#[test]
fn slow_subscriber_is_disconnected_not_buffered_forever() {
    let server = common::start("client-output-buffer-limit pubsub 256kb 0 0");
    let slow = subscribe(&server, b"SUBSCRIBE flood\r\n");
    let mut c = common::client(&server);
    let payload = vec![b'p'; 64 * 1024];
    let mut last = 1;
    for _ in 0..200 {
        last = redis::cmd("PUBLISH")
            .arg("flood")
            .arg(&payload[..])
            .query::<i64>(&mut c)
            .unwrap();
        if last == 0 {
            break;
        }
    }
    assert!(
        common::wait_until(5, || server.shared().clients.len() == 1),
        "the subscriber that never reads is dropped"
    );
    let n: i64 = redis::cmd("PUBLISH")
        .arg("flood")
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0);
    let _ = last;
    drop(slow);
    let _ = std::io::stdout().flush();
    server.shutdown();
}

/// Events raised outside the command that caused them: active expiry, and blocking pops served from another connection.
#[test]
fn expired_and_blocking_pop_notifications() {
    let server = common::start("io-threads 2\nnotify-keyspace-events KExeEl$g");
    let mut sub = subscribe(&server, b"SUBSCRIBE __keyevent@0__:expired\r\n");
    let mut c = common::client(&server);
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(30)
        .query(&mut c)
        .unwrap();
    // Nobody reads the key: the active expiry cycle must find it.
    let (got, _) = common::exchange(&mut sub, b"", |g| g.ends_with(b"short\r\n"));
    assert_eq!(
        got,
        b"*3\r\n$7\r\nmessage\r\n$22\r\n__keyevent@0__:expired\r\n$5\r\nshort\r\n"
    );

    let mut pops = subscribe(&server, b"PSUBSCRIBE __keyspace@0__:queue\r\n");
    let mut blocked = common::raw(&server);
    blocked.write_all(b"BLPOP queue 5\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let _: i64 = redis::cmd("RPUSH")
        .arg("queue")
        .arg("job")
        .query(&mut c)
        .unwrap();
    let (got, _) = common::exchange(&mut blocked, b"", |g| g.ends_with(b"job\r\n"));
    assert!(got.ends_with(b"$3\r\njob\r\n"));
    let (got, _) = common::exchange(&mut pops, b"", |g| g.ends_with(b"$3\r\ndel\r\n"));
    let text = String::from_utf8_lossy(&got);
    let events: Vec<&str> = ["rpush", "lpop", "del"]
        .into_iter()
        .filter(|e| text.contains(&format!("\r\n{e}\r\n")))
        .collect();
    assert_eq!(events, ["rpush", "lpop", "del"], "{text}");
    assert!(text.find("rpush") < text.find("lpop") && text.find("lpop") < text.find("del"));

    server.shutdown();
}

/// Redis writes pub/sub pushes (subscription confirmations and messages) whatever CLIENT
/// REPLY says; a silenced RESP3 subscriber used to wait forever for its confirmation.
#[test]
fn pushes_reach_a_subscriber_with_replies_off() {
    let server = common::start("io-threads 2");
    for (hello, word) in [(&b"HELLO 3\r\n"[..], ">"), (&b""[..], "*")] {
        let mut sub = common::raw(&server);
        if !hello.is_empty() {
            let (got, _) = common::exchange(&mut sub, hello, |g| g.ends_with(b"*0\r\n"));
            assert!(got.starts_with(b"%"), "{}", String::from_utf8_lossy(&got));
        }
        let want = format!("{word}3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n{word}3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:2\r\n");
        let (got, _) = common::exchange(
            &mut sub,
            b"CLIENT REPLY OFF\r\nSUBSCRIBE news\r\nPSUBSCRIBE n*\r\n",
            |g| g.len() >= want.len(),
        );
        assert_eq!(String::from_utf8_lossy(&got), want);
        let mut c = common::client(&server);
        let n: i64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg("hi")
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 2);
        let want = format!("{word}3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n{word}4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
        let (got, _) = common::exchange(&mut sub, b"", |g| g.len() >= want.len());
        assert_eq!(String::from_utf8_lossy(&got), want);
        if word == "*" {
            // RESP2 subscriber mode refuses CLIENT.
            continue;
        }
        // CLIENT REPLY SKIP silences the next reply, but not a push.
        let want = format!("{word}3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:1\r\n");
        let (got, _) = common::exchange(
            &mut sub,
            b"CLIENT REPLY ON\r\nCLIENT REPLY SKIP\r\nUNSUBSCRIBE news\r\n",
            |g| g.ends_with(b"news\r\n:1\r\n"),
        );
        assert_eq!(String::from_utf8_lossy(&got), format!("+OK\r\n{want}"));
    }
    server.shutdown();
}

/// A pipelined request after a command with two bad range arguments gets its own reply:
/// the command answers one error, not two.
#[test]
fn bad_range_arguments_do_not_shift_pipelined_replies() {
    let server = common::start("");
    let mut s = common::raw(&server);
    let (got, _) = common::exchange(
        &mut s,
        b"LRANGE l x y\r\nLTRIM l x y\r\nGETRANGE s x y\r\nSUBSTR s x y\r\nPING\r\n",
        |g| g.ends_with(b"+PONG\r\n"),
    );
    let err = "-ERR value is not an integer or out of range\r\n";
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("{err}{err}{err}{err}+PONG\r\n")
    );
    server.shutdown();
}
