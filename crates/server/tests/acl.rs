//! ACL users against a real server: AUTH with a username, command, key and channel
//! permissions (NOPERM), disabled users, the default user switched off, and deleted
//! users' connections closed.

mod common;

fn cmd(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut q = redis::cmd(args[0]);
    for a in &args[1..] {
        q.arg(*a);
    }
    q.query(c)
}

fn ok(c: &mut redis::Connection, args: &[&str]) {
    let r = cmd(c, args);
    assert!(r.is_ok(), "{args:?}: {r:?}");
}

fn err(c: &mut redis::Connection, args: &[&str]) -> String {
    match cmd(c, args) {
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
        Err(e) => format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or("")),
    }
}

#[test]
fn users_permissions_and_auth() {
    let server = common::start("");
    let mut admin = common::client(&server);
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">wonderland",
            "~cached:*",
            "+get",
            "+set",
            "+acl|whoami",
        ],
    );
    ok(&mut admin, &["SET", "other", "1"]);
    let mut alice = common::client(&server);
    assert!(err(&mut alice, &["AUTH", "alice", "wrong"]).starts_with("WRONGPASS"));
    ok(&mut alice, &["AUTH", "alice", "wonderland"]);
    let who: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query(&mut alice)
        .expect("whoami");
    assert_eq!(who, "alice");
    ok(&mut alice, &["SET", "cached:1", "v"]);
    let v: String = redis::cmd("GET")
        .arg("cached:1")
        .query(&mut alice)
        .expect("get");
    assert_eq!(v, "v");
    assert_eq!(
        err(&mut alice, &["GET", "other"]),
        "NOPERM this user has no permissions to access one of the keys used as arguments"
    );
    assert_eq!(
        err(&mut alice, &["DEL", "cached:1"]),
        "NOPERM this user has no permissions to run the 'del' command"
    );
    // Changes apply to connections already authenticated.
    ok(&mut admin, &["ACL", "SETUSER", "alice", "+del"]);
    ok(&mut alice, &["DEL", "cached:1"]);
    let list: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query(&mut admin)
        .expect("list");
    let line = list
        .iter()
        .find(|l| l.starts_with("user alice "))
        .expect("alice listed");
    assert!(
        line.contains(" on ")
            && line.contains("~cached:*")
            && line.contains("-@all +get +set +acl|whoami +del"),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "#{}",
            carmine_commands::acl::sha256_hex(b"wonderland")
        )),
        "{line}"
    );
    let dry: String = redis::cmd("ACL")
        .arg("DRYRUN")
        .arg("alice")
        .arg("GET")
        .arg("other")
        .query(&mut admin)
        .expect("dryrun");
    assert!(
        dry.contains("no permissions to access one of the keys"),
        "{dry}"
    );
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut admin)
        .expect("list");
    assert!(clients.contains("user=alice"), "{clients}");
    // A disabled user cannot authenticate.
    ok(&mut admin, &["ACL", "SETUSER", "alice", "off"]);
    let mut again = common::client(&server);
    assert!(err(&mut again, &["AUTH", "alice", "wonderland"]).starts_with("WRONGPASS"));
    // Deleting a user closes its connections.
    let n: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg("alice")
        .query(&mut admin)
        .expect("deluser");
    assert_eq!(n, 1);
    assert!(
        common::wait_until(5, || cmd(&mut alice, &["PING"]).is_err()),
        "alice's connection is closed"
    );
    assert!(err(&mut admin, &["ACL", "DELUSER", "default"]).contains("cannot be removed"));
    assert!(err(&mut admin, &["ACL", "SETUSER", "x", "bogus"])
        .contains("Error in ACL SETUSER modifier 'bogus'"));
}

#[test]
fn channels_and_the_default_user() {
    let server = common::start("");
    let mut admin = common::client(&server);
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "bob",
            "on",
            "nopass",
            "~*",
            "resetchannels",
            "&news.*",
            "+@all",
        ],
    );
    let mut bob = common::client(&server);
    ok(&mut bob, &["AUTH", "bob", "anything"]);
    ok(&mut bob, &["PUBLISH", "news.today", "hi"]);
    assert_eq!(
        err(&mut bob, &["PUBLISH", "gossip", "hi"]),
        "NOPERM this user has no permissions to access one of the channels used as arguments"
    );
    // With the default user off, a new connection must authenticate.
    ok(&mut admin, &["ACL", "SETUSER", "default", "off"]);
    let mut anon = common::client(&server);
    assert!(err(&mut anon, &["PING"]).starts_with("NOAUTH"));
    ok(&mut anon, &["AUTH", "bob", "x"]);
    ok(&mut anon, &["PING"]);
    ok(&mut bob, &["ACL", "SETUSER", "default", "on"]);
    let mut anon = common::client(&server);
    ok(&mut anon, &["PING"]);
}

/// ACL LOG entries as Redis 7.0 records them: (newest first) the field, grouped count,
/// reason, context (toplevel, multi, lua), object and user, failed AUTHs, RESET, the
/// count argument and `acllog-max-len`.
#[test]
fn acl_log_records_refusals_and_failed_auth() {
    use std::collections::HashMap;
    let server = common::start("");
    let mut admin = common::client(&server);
    let log =
        |c: &mut redis::Connection, count: Option<&str>| -> Vec<HashMap<String, redis::Value>> {
            let mut q = redis::cmd("ACL");
            q.arg("LOG");
            if let Some(n) = count {
                q.arg(n);
            }
            q.query(c).expect("ACL LOG")
        };
    let text = |e: &HashMap<String, redis::Value>, f: &str| -> String {
        redis::from_redis_value(e.get(f).unwrap_or_else(|| panic!("field {f}"))).expect(f)
    };
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "antirez",
            ">foo",
            "on",
            "+set",
            "~object:1234",
            "+eval",
            "+multi",
            "+exec",
            "resetchannels",
            "+publish",
        ],
    );
    let mut user = common::client(&server);
    ok(&mut user, &["AUTH", "antirez", "foo"]);
    for _ in 0..3 {
        assert!(err(&mut user, &["GET", "foo"]).starts_with("NOPERM"));
    }
    let entries = log(&mut admin, None);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(text(e, "username"), "antirez");
    assert_eq!(text(e, "context"), "toplevel");
    assert_eq!(text(e, "reason"), "command");
    assert_eq!(text(e, "object"), "get");
    assert_eq!(
        redis::from_redis_value::<i64>(&e["count"]).expect("count"),
        3
    );
    assert!(
        text(e, "client-info").contains("user=antirez"),
        "{}",
        text(e, "client-info")
    );
    let age: f64 = redis::from_redis_value(&e["age-seconds"]).expect("age");
    assert!((0.0..60.0).contains(&age));

    err(&mut user, &["SET", "somekeynotallowed", "1234"]);
    let e = &log(&mut admin, None)[0];
    assert_eq!(
        (text(e, "reason"), text(e, "object")),
        ("key".into(), "somekeynotallowed".into())
    );
    err(&mut user, &["PUBLISH", "somechannelnotallowed", "nullmsg"]);
    let e = &log(&mut admin, None)[0];
    assert_eq!(
        (text(e, "reason"), text(e, "object")),
        ("channel".into(), "somechannelnotallowed".into())
    );

    ok(&mut user, &["MULTI"]);
    err(&mut user, &["INCR", "foo"]);
    let _ = cmd(&mut user, &["EXEC"]);
    let e = &log(&mut admin, None)[0];
    assert_eq!(
        (text(e, "context"), text(e, "object")),
        ("multi".into(), "incr".into())
    );
    // Permissions taken away between queueing and EXEC: checked again at EXEC.
    ok(&mut admin, &["ACL", "SETUSER", "antirez", "+incr"]);
    ok(&mut user, &["MULTI"]);
    ok(&mut user, &["INCR", "object:1234"]);
    ok(&mut admin, &["ACL", "SETUSER", "antirez", "-incr"]);
    let exec = cmd(&mut user, &["EXEC"]);
    assert!(format!("{exec:?}").contains("NOPERM"), "{exec:?}");
    assert_eq!(
        cmd(&mut admin, &["EXISTS", "object:1234"]).expect("exists"),
        redis::Value::Int(0),
        "the refused command did not run"
    );
    let e = &log(&mut admin, None)[0];
    assert_eq!(
        (text(e, "context"), text(e, "object")),
        ("multi".into(), "incr".into())
    );
    let _ = cmd(&mut user, &["EVAL", "redis.call('incr','foo')", "0"]);
    let e = &log(&mut admin, None)[0];
    assert_eq!(
        (text(e, "context"), text(e, "object")),
        ("lua".into(), "incr".into())
    );
    assert_eq!(log(&mut admin, Some("2")).len(), 2);

    let mut stranger = common::client(&server);
    err(&mut stranger, &["AUTH", "antirez", "wrong-password"]);
    let e = &log(&mut admin, None)[0];
    assert_eq!(
        (
            text(e, "reason"),
            text(e, "object"),
            text(e, "username"),
            text(e, "context")
        ),
        (
            "auth".into(),
            "AUTH".into(),
            "antirez".into(),
            "toplevel".into()
        )
    );

    ok(&mut admin, &["ACL", "LOG", "RESET"]);
    assert!(log(&mut admin, None).is_empty());
    ok(&mut admin, &["CONFIG", "SET", "acllog-max-len", "5"]);
    for j in 0..10 {
        err(&mut user, &["SET", &format!("obj:{j}"), "123"]);
    }
    assert_eq!(log(&mut admin, Some("100")).len(), 5);
}

/// Users from redis.conf's `user` lines; users from `aclfile`, ACL LOAD replacing them
/// (a file with a bad line changes nothing, and names the line), ACL SAVE writing them
/// back; the two sources together are refused at start-up, as in Redis.
#[test]
fn users_from_config_lines_and_from_an_acl_file() {
    let server = common::start("user alice on >pw +@all ~*");
    let mut alice = common::client(&server);
    ok(&mut alice, &["AUTH", "alice", "pw"]);
    ok(&mut alice, &["SET", "k", "v"]);
    server.shutdown();

    let dir = common::scratch_dir();
    let file = dir.join("users.acl");
    std::fs::write(
        &file,
        "user default on nopass ~* &* +@all\n\nuser bob on >secret ~bob:* +get\n",
    )
    .expect("write the ACL file");
    let server = common::start(&format!("aclfile {}", file.display()));
    let mut admin = common::client(&server);
    let mut bob = common::client(&server);
    ok(&mut bob, &["AUTH", "bob", "secret"]);
    assert!(err(&mut bob, &["SET", "bob:1", "x"]).starts_with("NOPERM"));
    std::fs::write(
        &file,
        "user default on nopass ~* &* +@all\nuser carol on >x +@all ~*\n",
    )
    .expect("rewrite the ACL file");
    ok(&mut admin, &["ACL", "LOAD"]);
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query(&mut admin)
        .expect("users");
    assert_eq!(users, ["carol", "default"]);
    // bob's connection held a user that is gone: closed.
    assert!(cmd(&mut bob, &["PING"]).is_err());
    ok(
        &mut admin,
        &["ACL", "SETUSER", "dave", "on", "nopass", "+ping"],
    );
    ok(&mut admin, &["ACL", "SAVE"]);
    let saved = std::fs::read_to_string(&file).expect("saved");
    assert!(
        saved.lines().any(|l| l.starts_with("user dave on nopass")),
        "{saved}"
    );
    assert_eq!(saved.lines().count(), 3, "{saved}");
    std::fs::write(
        &file,
        "user default on nopass ~* +@all\nuser x foo\nnot a user line\n",
    )
    .expect("write a bad ACL file");
    let e = err(&mut admin, &["ACL", "LOAD"]);
    assert!(e.contains(":2: Error in applying operation 'foo'"), "{e}");
    assert!(e.contains(":3: should start with user keyword"), "{e}");
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query(&mut admin)
        .expect("users");
    assert_eq!(users, ["carol", "dave", "default"], "nothing changed");
    server.shutdown();

    let config = carmine_commands::Config::new();
    config
        .load_text(&format!(
            "port 0\nbind 127.0.0.1\nsave \"\"\naclfile {}\nuser eve on nopass\n",
            file.display()
        ))
        .expect("the text parses");
    let refused = carmine_server::Server::start(config)
        .err()
        .map(|e| e.to_string());
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("not both")),
        "{refused:?}"
    );
}
