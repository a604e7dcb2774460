//! Client-side caching (CLIENT TRACKING) against a real server: RESP3 push
//! invalidations, redirection to a RESP2 subscriber, BCAST prefixes, NOLOOP, OPTIN with
//! CACHING, FLUSHALL, and the argument errors.

mod common;

use std::net::TcpStream;

fn send(s: &mut TcpStream, cmd: &str) -> String {
    let (got, _) = common::exchange(s, format!("{cmd}\r\n").as_bytes(), |b| b.ends_with(b"\r\n"));
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads what arrives within a short wait (a push may take a loop turn to travel).
fn pending(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .expect("timeout");
    let (got, _) = common::exchange(s, b"", |b| b.ends_with(b"\r\n") && b.len() > 20);
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    String::from_utf8_lossy(&got).into_owned()
}

fn resp3(server: &carmine_server::Server) -> TcpStream {
    let mut s = common::raw(server);
    let hello = send(&mut s, "HELLO 3");
    assert!(hello.starts_with('%'), "{hello}");
    // HELLO's map is several lines long: drain it.
    let _ = pending(&mut s);
    s
}

#[test]
fn invalidations_reach_the_reader() {
    let server = common::start("");
    let mut reader = resp3(&server);
    let mut writer = common::client(&server);
    assert_eq!(send(&mut reader, "CLIENT TRACKING ON"), "+OK\r\n");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("1")
        .query(&mut writer)
        .expect("set");
    assert_eq!(send(&mut reader, "GET k"), "$1\r\n1\r\n");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("2")
        .query(&mut writer)
        .expect("set");
    assert_eq!(
        pending(&mut reader),
        ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
    );
    // Once told, the reader is forgotten until it reads again.
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("3")
        .query(&mut writer)
        .expect("set");
    assert_eq!(pending(&mut reader), "");
    // Its own writes invalidate too, after the reply, unless NOLOOP.
    assert_eq!(send(&mut reader, "GET k"), "$1\r\n3\r\n");
    let own = send(&mut reader, "SET k 4");
    let own = own + &pending(&mut reader);
    assert_eq!(own, "+OK\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
    assert_eq!(send(&mut reader, "CLIENT TRACKING ON NOLOOP"), "+OK\r\n");
    assert_eq!(send(&mut reader, "GET k"), "$1\r\n4\r\n");
    assert_eq!(send(&mut reader, "SET k 5"), "+OK\r\n");
    assert_eq!(pending(&mut reader), "");
    // FLUSHALL: everything, as a null.
    assert_eq!(send(&mut reader, "GET k"), "$1\r\n5\r\n");
    let _: () = redis::cmd("FLUSHALL").query(&mut writer).expect("flushall");
    assert_eq!(pending(&mut reader), ">2\r\n$10\r\ninvalidate\r\n_\r\n");
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut writer)
        .expect("info");
    assert!(info.contains("tracking_clients:1"), "{info}");
}

#[test]
fn redirect_bcast_and_optin() {
    let server = common::start("");
    let mut sub = common::raw(&server);
    let id = send(&mut sub, "CLIENT ID");
    let id = id.trim_start_matches(':').trim();
    let subscribed = send(&mut sub, "SUBSCRIBE __redis__:invalidate");
    assert!(subscribed.contains("subscribe"), "{subscribed}");
    let mut reader = common::raw(&server);
    assert_eq!(
        send(&mut reader, &format!("CLIENT TRACKING ON REDIRECT {id}")),
        "+OK\r\n"
    );
    assert_eq!(send(&mut reader, "CLIENT GETREDIR"), format!(":{id}\r\n"));
    assert_eq!(send(&mut reader, "GET a"), "$-1\r\n");
    let mut writer = common::client(&server);
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg("1")
        .query(&mut writer)
        .expect("set");
    assert_eq!(
        pending(&mut sub),
        "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\na\r\n"
    );
    // BCAST: every change under the prefixes, read or not.
    let mut bcast = resp3(&server);
    assert_eq!(
        send(
            &mut bcast,
            "CLIENT TRACKING ON BCAST PREFIX user: PREFIX acct:"
        ),
        "+OK\r\n"
    );
    let _: () = redis::cmd("SET")
        .arg("user:1")
        .arg("x")
        .query(&mut writer)
        .expect("set");
    let _: () = redis::cmd("SET")
        .arg("other")
        .arg("x")
        .query(&mut writer)
        .expect("set");
    assert_eq!(
        pending(&mut bcast),
        ">2\r\n$10\r\ninvalidate\r\n*1\r\n$6\r\nuser:1\r\n"
    );
    let info = send(&mut bcast, "CLIENT TRACKINGINFO");
    let info = info + &pending(&mut bcast);
    assert!(
        info.contains("bcast") && info.contains("user:") && info.contains("acct:"),
        "{info}"
    );
    // OPTIN: only reads right after CLIENT CACHING YES are tracked.
    let mut optin = resp3(&server);
    assert_eq!(send(&mut optin, "CLIENT TRACKING ON OPTIN"), "+OK\r\n");
    assert_eq!(send(&mut optin, "GET x"), "_\r\n");
    let _: () = redis::cmd("SET")
        .arg("x")
        .arg("1")
        .query(&mut writer)
        .expect("set");
    assert_eq!(pending(&mut optin), "");
    assert_eq!(send(&mut optin, "CLIENT CACHING YES"), "+OK\r\n");
    assert_eq!(send(&mut optin, "GET x"), "$1\r\n1\r\n");
    let _: () = redis::cmd("SET")
        .arg("x")
        .arg("2")
        .query(&mut writer)
        .expect("set");
    assert_eq!(
        pending(&mut optin),
        ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nx\r\n"
    );
    // The errors Redis gives.
    for (cmd, err) in [
        ("CLIENT TRACKING ON PREFIX p", "-ERR PREFIX option requires BCAST mode to be enabled\r\n"),
        ("CLIENT TRACKING ON OPTIN OPTOUT", "-ERR You can't use both OPTIN and OPTOUT\r\n"),
        ("CLIENT TRACKING ON BCAST OPTIN", "-ERR OPTIN and OPTOUT are not compatible with BCAST\r\n"),
        ("CLIENT TRACKING ON REDIRECT 999999", "-ERR The client ID you want redirect to does not exist\r\n"),
        ("CLIENT CACHING YES", "-ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled\r\n"),
        ("CLIENT TRACKING ON BCAST PREFIX ab PREFIX a", "-ERR Prefix 'ab' overlaps with another provided prefix 'a'. Prefixes for a single client must not overlap.\r\n"),
    ] {
        let mut c = common::raw(&server);
        assert_eq!(send(&mut c, cmd), err, "{cmd}");
    }
    let mut off = common::raw(&server);
    assert_eq!(send(&mut off, "CLIENT GETREDIR"), ":-1\r\n");
}

/// Past `tracking-table-max-keys`, the next command trims the table first, and the
/// invalidation for the client running it comes before that command's reply (Redis'
/// regression #11715: here the command is queued in MULTI). DEBUG PAUSE-CRON keeps the
/// cron from trimming it earlier.
#[test]
fn the_table_limit_is_applied_before_the_next_command_and_told_first() {
    let server = common::start("enable-debug-command yes");
    let mut admin = common::client(&server);
    common::query::<()>(
        &mut admin,
        &["CONFIG", "SET", "tracking-table-max-keys", "2"],
    );
    common::query::<()>(&mut admin, &["DEBUG", "PAUSE-CRON", "1"]);
    let mut reader = resp3(&server);
    assert_eq!(send(&mut reader, "CLIENT TRACKING ON"), "+OK\r\n");
    let (got, _) = common::exchange(&mut reader, b"MGET 1{t} 2{t}\r\n", |b| {
        b.ends_with(b"_\r\n_\r\n")
    });
    assert_eq!(String::from_utf8_lossy(&got), "*2\r\n_\r\n_\r\n");
    assert_eq!(send(&mut reader, "MULTI"), "+OK\r\n");
    common::query::<()>(
        &mut admin,
        &["CONFIG", "SET", "tracking-table-max-keys", "1"],
    );
    let (got, _) = common::exchange(&mut reader, b"PING\r\n", |b| b.ends_with(b"+QUEUED\r\n"));
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(
        got.starts_with(">2\r\n$10\r\ninvalidate\r\n*1\r\n$4\r\n") && got.ends_with("+QUEUED\r\n"),
        "{got:?}"
    );
    let (got, _) = common::exchange(&mut reader, b"EXEC\r\n", |b| b.ends_with(b"+PONG\r\n"));
    assert_eq!(String::from_utf8_lossy(&got), "*1\r\n+PONG\r\n");
    common::query::<()>(&mut admin, &["DEBUG", "PAUSE-CRON", "0"]);
}

/// A client that read QUIT's +OK is gone for every other client's next command, on any
/// event loop: a write right after it tells a tracking client whose invalidations went
/// there that its redirect is broken (Redis' "tracking redir broken" test). Before, the
/// quitting connection stayed registered until its loop had written the +OK, so a write
/// on another loop could still send it the invalidation, and the tracking client heard
/// nothing.
#[test]
fn a_redirect_to_a_client_that_quit_is_broken_at_once() {
    let server = common::start("");
    let mut writer = common::client(&server);
    for round in 0..15 {
        let mut target = common::raw(&server);
        let id = send(&mut target, "CLIENT ID");
        let id = id.trim_start_matches(':').trim();
        let mut reader = resp3(&server);
        assert_eq!(
            send(&mut reader, &format!("CLIENT TRACKING ON REDIRECT {id}")),
            "+OK\r\n"
        );
        assert_eq!(send(&mut reader, &format!("GET k{round}")), "_\r\n");
        assert_eq!(send(&mut target, "QUIT"), "+OK\r\n");
        let _: () = redis::cmd("SET")
            .arg(format!("k{round}"))
            .arg(round)
            .query(&mut writer)
            .expect("set");
        let got = pending(&mut reader);
        assert!(
            got.contains("tracking-redir-broken"),
            "round {round}: the reader got {got:?}"
        );
    }
}
