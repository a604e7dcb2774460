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
