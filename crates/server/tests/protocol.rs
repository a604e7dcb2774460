//! The wire: inline commands, RESP3, malformed input, limits, connection management.

mod common;

use std::io::Write;

#[test]
fn inline_commands_and_resp3() {
    let server = common::start("");
    let mut s = common::raw(&server);
    let (got, _) = common::exchange(&mut s, b"SET \"a b\" 'c d'\r\nGET \"a b\"\r\n", |g| {
        g.ends_with(b"c d\r\n")
    });
    assert_eq!(got, b"+OK\r\n$3\r\nc d\r\n");
    let (got, _) = common::exchange(&mut s, b"HELLO 3\r\n", |g| g.ends_with(b"*0\r\n"));
    assert!(
        got.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let (got, _) = common::exchange(
        &mut s,
        b"GET nothing\r\nINCRBYFLOAT f 1.5\r\nCONFIG GET port\r\n",
        |g| g.ends_with(b"\r\n") && g.starts_with(b"_\r\n") && g.len() > 20,
    );
    assert!(
        got.starts_with(b"_\r\n$3\r\n1.5\r\n%1\r\n$4\r\nport\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let (got, _) = common::exchange(&mut s, b"HELLO 4\r\n", |g| g.ends_with(b"\r\n"));
    assert_eq!(got, b"-NOPROTO unsupported protocol version\r\n");
    server.shutdown();
}

#[test]
fn malformed_input_gets_error_and_close() {
    let server = common::start("");
    let cases: [(&[u8], &str); 5] = [
        (
            b"*1\r\n$10737418240\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*abc\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n*1\r\n",
            "-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        (
            b"SET \"unterminated\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            b"*1\r\n$4\r\nPING\r\n*1\r\n+x\r\n",
            "+PONG\r\n-ERR Protocol error: expected '$', got '+'\r\n",
        ),
    ];
    for (input, expected) in cases {
        let mut s = common::raw(&server);
        let (got, closed) = common::exchange(&mut s, input, |g| {
            g.ends_with(b"\r\n") && g.len() >= expected.len()
        });
        assert_eq!(String::from_utf8_lossy(&got), expected);
        assert!(
            closed || common::closed(&mut s),
            "connection must close after a protocol error"
        );
    }
    // A million nested arrays: refused at the second header, no recursion, no hang.
    let mut s = common::raw(&server);
    let nested = b"*1\r\n".repeat(1_000_000);
    let _ = s.write_all(&nested[..4096]);
    let (got, _) = common::exchange(&mut s, &nested[4096..8192], |g| g.ends_with(b"\r\n"));
    assert!(String::from_utf8_lossy(&got).contains("Protocol error"));
    // Random bytes never crash the server.
    let mut seed = 0x1234_5678_u64;
    for _ in 0..50 {
        let mut s = common::raw(&server);
        s.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let junk: Vec<u8> = (0..2000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = s.write_all(&junk);
        let _ = common::closed(&mut s);
    }
    let mut c = common::client(&server);
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    server.shutdown();
}

#[test]
fn query_buffer_limit_closes_the_connection() {
    let server = common::start("client-query-buffer-limit 1mb");
    let mut s = common::raw(&server);
    let _ = s.write_all(b"*2\r\n$4\r\nECHO\r\n$10000000\r\n");
    let chunk = vec![b'a'; 256 * 1024];
    for _ in 0..8 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    assert!(common::closed(&mut s));
    server.shutdown();
}

#[test]
fn output_buffer_limit_disconnects_a_client_that_does_not_read() {
    let server = common::start("client-output-buffer-limit normal 1mb 0 0");
    let mut c = common::client(&server);
    let _: () = redis::cmd("SET")
        .arg("v")
        .arg(vec![b'z'; 512 * 1024])
        .query(&mut c)
        .unwrap();
    let mut s = common::raw(&server);
    s.set_write_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let cmds = b"*2\r\n$3\r\nGET\r\n$1\r\nv\r\n".repeat(200);
    let _ = s.write_all(&cmds);
    assert!(
        common::wait_until(5, || server.shared().clients.len() == 1),
        "the non-reading client is disconnected"
    );
    server.shutdown();
}

#[test]
fn auth_and_client_commands() {
    let server = common::start("requirepass secret");
    let mut s = common::raw(&server);
    let (got, _) = common::exchange(&mut s, b"GET a\r\n", |g| g.ends_with(b"\r\n"));
    assert_eq!(got, b"-NOAUTH Authentication required.\r\n");
    let (got, _) = common::exchange(&mut s, b"AUTH wrong\r\n", |g| g.ends_with(b"\r\n"));
    assert_eq!(
        got,
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    let (got, _) = common::exchange(
        &mut s,
        b"AUTH secret\r\nCLIENT SETNAME me\r\nCLIENT GETNAME\r\n",
        |g| g.ends_with(b"me\r\n"),
    );
    assert_eq!(got, b"+OK\r\n+OK\r\n$2\r\nme\r\n");
    let cl = redis::Client::open(format!("redis://:secret@127.0.0.1:{}/", server.port())).unwrap();
    let mut c = cl.get_connection().unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains("name=me"));
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut c)
        .unwrap();
    assert_eq!(killed, 1);
    assert!(common::closed(&mut s));
    server.shutdown();
}

#[test]
fn client_reply_off_and_skip() {
    let server = common::start("");
    let mut s = common::raw(&server);
    let (got, _) = common::exchange(
        &mut s,
        b"CLIENT REPLY SKIP
SET a 1
GET a
CLIENT REPLY OFF
GET a
CLIENT REPLY ON
GET a
",
        |g| g.ends_with(b"+OK\r\n$1\r\n1\r\n"),
    );
    assert_eq!(got, b"$1\r\n1\r\n+OK\r\n$1\r\n1\r\n");
    server.shutdown();
}

#[test]
fn thousands_of_idle_connections() {
    let server = common::start("");
    let conns: Vec<_> = (0..2000).map(|_| common::raw(&server)).collect();
    assert!(common::wait_until(10, || server.shared().clients.len() == 2000));
    let mut c = common::client(&server);
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    drop(conns);
    assert!(common::wait_until(10, || server.shared().clients.len() == 1));
    server.shutdown();
}

#[test]
fn idle_timeout_closes_clients() {
    let server = common::start("timeout 1");
    let mut s = common::raw(&server);
    assert!(common::wait_until(5, || server.shared().clients.is_empty()));
    assert!(common::closed(&mut s));
    server.shutdown();
}

#[test]
fn commands_introspection() {
    let server = common::start("");
    let mut c = common::client(&server);
    let n: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(n > 60);
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, vec!["a", "b"]);
    let info: Vec<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("get")
        .query(&mut c)
        .unwrap();
    assert_eq!(info.len(), 1);
    let _: () = c_set(&mut c);
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    assert!(stats.contains("cmdstat_set:calls=1"), "{stats}");
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("daemonize")
        .arg("yes")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("immutable"), "{e}");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg("500")
        .query(&mut c)
        .unwrap();
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclient*")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, vec!["maxclients", "500"]);
    let dbg: String = redis::cmd("DEBUG")
        .arg("OBJECT")
        .arg("k")
        .query(&mut c)
        .unwrap();
    assert!(dbg.contains("encoding:embstr"), "{dbg}");
    debug_populate(&mut c);
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("k")
        .query(&mut c)
        .unwrap();
    assert!(usage > 0);
    server.shutdown();
}

/// DEBUG POPULATE as Redis 7.0 does it: `prefix:n` keys with `value:n`, padded with
/// zero bytes or cut to the size, existing keys untouched, negatives refused.
fn debug_populate(c: &mut redis::Connection) {
    let populate = |c: &mut redis::Connection, args: &[&str]| -> redis::RedisResult<String> {
        redis::cmd("DEBUG").arg("POPULATE").arg(args).query(c)
    };
    let get = |c: &mut redis::Connection, key: &str| -> Option<Vec<u8>> {
        redis::cmd("GET").arg(key).query(c).expect("GET")
    };
    let _: () = redis::cmd("SET")
        .arg("pop:1")
        .arg("mine")
        .query(c)
        .expect("SET");
    assert_eq!(populate(c, &["4", "pop"]).expect("ok"), "OK");
    assert_eq!(get(c, "pop:1"), Some(b"mine".to_vec()), "left alone");
    assert_eq!(get(c, "pop:3"), Some(b"value:3".to_vec()));
    assert_eq!(get(c, "pop:4"), None, "count keys from 0");
    assert_eq!(populate(c, &["3", "padded", "10"]).expect("ok"), "OK");
    assert_eq!(get(c, "padded:2"), Some(b"value:2\0\0\0".to_vec()));
    assert_eq!(populate(c, &["2", "cut", "3"]).expect("ok"), "OK");
    assert_eq!(get(c, "cut:1"), Some(b"val".to_vec()));
    assert_eq!(populate(c, &["2"]).expect("ok"), "OK");
    assert_eq!(get(c, "key:1"), Some(b"value:1".to_vec()));
    let err = populate(c, &["-1"]).expect_err("negative");
    assert!(format!("{err}").contains("must be positive"), "{err}");
    let err = populate(c, &["x"]).expect_err("not a number");
    assert!(format!("{err}").contains("must be positive"), "{err}");
    let err = populate(c, &["1", "p", "-2"]).expect_err("negative size");
    assert!(format!("{err}").contains("must be positive"), "{err}");
}

fn c_set(c: &mut redis::Connection) {
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(c)
        .expect("SET succeeds");
}

/// `unixsocket`: clients connect through the socket file too, and CLIENT LIST shows
/// them as `path:0`, as Redis does.
#[cfg(unix)]
#[test]
fn clients_connect_over_the_unix_socket() {
    use std::io::{Read, Write};
    let path = common::scratch_dir().join("carmine.sock");
    let server = common::start(&format!(
        "unixsocket {}\nunixsocketperm 700",
        path.display()
    ));
    let mut s = std::os::unix::net::UnixStream::connect(&path).expect("connects over the socket");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"SET via unix\r\nGET via\r\nCLIENT INFO\r\n")
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"\r\n") || got.iter().filter(|&&b| b == b'\n').count() < 5 {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("+OK\r\n$4\r\nunix\r\n"), "{text}");
    assert!(
        text.contains(&format!("addr={}:0", path.display())),
        "{text}"
    );
    let mut tcp = common::client(&server);
    let v: String = redis::cmd("GET").arg("via").query(&mut tcp).expect("get");
    assert_eq!(v, "unix");
    server.shutdown();
}

/// A loop turn reads every ready connection before it runs any: clients that write
/// together (one of them in another database, some closing their end right after)
/// still get every reply in order, each from its own database, before the close.
#[test]
fn connections_ready_together_each_get_their_replies() {
    let server = common::start("io-threads 1");
    let mut other_db = common::raw(&server);
    let (got, _) = common::exchange(&mut other_db, b"SELECT 1\r\n", |g| g.ends_with(b"\r\n"));
    assert_eq!(got, b"+OK\r\n");
    let mut conns: Vec<std::net::TcpStream> = (0..6).map(|_| common::raw(&server)).collect();
    conns.push(other_db);
    // Everyone's commands go out before anyone reads, so one turn finds several ready.
    for (i, s) in conns.iter_mut().enumerate() {
        let cmds = format!(
            "*3\r\n$3\r\nSET\r\n$4\r\nkey{i}\r\n$2\r\nv{i}\r\n*2\r\n$4\r\nINCR\r\n$4\r\nctr{i}\r\n*2\r\n$3\r\nGET\r\n$4\r\nkey{i}\r\n"
        );
        s.write_all(cmds.as_bytes()).expect("write");
        if i % 2 == 1 {
            s.shutdown(std::net::Shutdown::Write).expect("half-close");
        }
    }
    for (i, mut s) in conns.into_iter().enumerate() {
        let want = format!("+OK\r\n:1\r\n$2\r\nv{i}\r\n");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut eof = false;
        while std::time::Instant::now() < deadline && got.len() < want.len() {
            match std::io::Read::read(&mut s, &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("client {i}: {e}"),
            }
        }
        assert_eq!(String::from_utf8_lossy(&got), want, "client {i}");
        assert!(!eof, "client {i} closed before its replies");
        if i % 2 == 1 {
            assert!(
                common::closed(&mut s),
                "client {i} half-closed: the server closes it"
            );
        }
    }
    // The client in database 1 wrote there, the others in database 0.
    let mut c = common::raw(&server);
    let (got, _) = common::exchange(&mut c, b"DBSIZE\r\nSELECT 1\r\nDBSIZE\r\n", |g| {
        g.ends_with(b"+OK\r\n:2\r\n")
    });
    assert_eq!(got, b":12\r\n+OK\r\n:2\r\n");
    server.shutdown();
}

/// A command name of any length is only an unknown command. A 255-byte one sent first on
/// a connection (whose command memo is empty, and reads as 255 bytes long then) indexed
/// past the memo and took the server down (found by the `command_args` fuzz target).
#[test]
fn command_names_of_any_length_are_unknown_commands() {
    let server = common::start("");
    for len in [15, 16, 17, 254, 255, 256, 1000] {
        // A raw connection, the name its first command (a client library may send its
        // own commands first).
        let mut s = common::raw(&server);
        let name = "a".repeat(len);
        let request = format!("*2\r\n${len}\r\n{name}\r\n$1\r\nx\r\nPING\r\n");
        let (got, closed) =
            common::exchange(&mut s, request.as_bytes(), |g| g.ends_with(b"+PONG\r\n"));
        let got = String::from_utf8_lossy(&got);
        assert!(!closed, "{len}: closed after {got:?}");
        assert!(
            got.starts_with("-ERR unknown command") && got.ends_with("+PONG\r\n"),
            "{len}: {got:?}"
        );
    }
    let mut c = common::client(&server);
    let pong: String = redis::cmd("PING").query(&mut c).expect("still serving");
    assert_eq!(pong, "PONG");
    server.shutdown();
}
