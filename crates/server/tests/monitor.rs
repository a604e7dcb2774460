//! MONITOR: a monitoring client sees the commands other clients run, in order, with
//! Redis' line format; scripts' calls appear as `lua` after the EVAL; a transaction's
//! commands sit between MULTI and EXEC; passwords are redacted; admin commands are not
//! shown.

mod common;

fn lines_until(mon: &mut std::net::TcpStream, count: usize) -> Vec<String> {
    let (got, _) = common::exchange(mon, b"", |b| {
        b.windows(2).filter(|w| w == b"\r\n").count() >= count
    });
    String::from_utf8_lossy(&got)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn monitor_shows_commands_in_order() {
    let server = common::start("");
    let mut mon = common::raw(&server);
    let (ok, _) = common::exchange(&mut mon, b"MONITOR\r\n", |b| b.ends_with(b"\r\n"));
    assert_eq!(ok, b"+OK\r\n");
    let mut c = common::client(&server);
    let _: () = redis::cmd("SET")
        .arg("foo")
        .arg("bar \"q\"")
        .query(&mut c)
        .expect("set");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut c)
        .expect("config");
    let _: Option<String> = redis::cmd("EVAL")
        .arg("redis.call('set', KEYS[1], 'x')")
        .arg(1)
        .arg("k")
        .query(&mut c)
        .expect("eval");
    let _: () = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("n")
        .ignore()
        .query(&mut c)
        .expect("multi");
    let _ = redis::cmd("AUTH").arg("secret").query::<String>(&mut c);
    let lines = lines_until(&mut mon, 7);
    assert_eq!(lines.len(), 7, "{lines:?}");
    let addr_set = &lines[0];
    assert!(
        addr_set.starts_with('+')
            && addr_set.contains(" [0 127.0.0.1:")
            && addr_set.ends_with(r#"] "SET" "foo" "bar \"q\"""#),
        "{addr_set}"
    );
    assert!(
        lines[1].contains(r#""EVAL" "redis.call('set', KEYS[1], 'x')" "1" "k""#),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(r#"[0 lua] "set" "k" "x""#),
        "{}",
        lines[2]
    );
    assert!(lines[3].ends_with(r#""MULTI""#), "{}", lines[3]);
    assert!(lines[4].ends_with(r#""INCR" "n""#), "{}", lines[4]);
    assert!(lines[5].ends_with(r#""EXEC""#), "{}", lines[5]);
    assert!(lines[6].ends_with(r#""AUTH" "(redacted)""#), "{}", lines[6]);
    assert!(
        !lines.iter().any(|l| l.contains("CONFIG")),
        "admin commands are not shown"
    );
}
