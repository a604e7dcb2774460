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

fn acl_list(c: &mut redis::Connection) -> Vec<String> {
    redis::cmd("ACL").arg("LIST").query(c).expect("ACL LIST")
}

/// The ACL LIST line of `user`.
fn acl_list_line(c: &mut redis::Connection, user: &str) -> String {
    acl_list(c)
        .into_iter()
        .find(|l| l.starts_with(&format!("user {user} ")))
        .unwrap_or_else(|| panic!("{user} is not in ACL LIST"))
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
    let line = acl_list_line(&mut admin, "alice");
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
    // Redis' DRYRUN names the key (the NOPERM error does not).
    assert_eq!(
        dry,
        "This user has no permissions to access the 'other' key"
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

fn dryrun(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut q = redis::cmd("ACL");
    q.arg("DRYRUN");
    for a in args {
        q.arg(*a);
    }
    match q.query::<redis::Value>(c) {
        Ok(redis::Value::Okay) => "OK".into(),
        Ok(redis::Value::SimpleString(s)) => s,
        Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("ACL DRYRUN {args:?}: {other:?}"),
    }
}

fn getuser_field(c: &mut redis::Connection, user: &str, field: &str) -> redis::Value {
    let v: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(user)
        .query(c)
        .expect("getuser");
    let items: Vec<redis::Value> = match v {
        redis::Value::Array(a) => a,
        redis::Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => panic!("GETUSER {user}: {other:?}"),
    };
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if redis::from_redis_value::<String>(&k).ok().as_deref() == Some(field) {
            return v;
        }
    }
    panic!("GETUSER {user} has no {field}");
}

fn text(v: &redis::Value) -> String {
    redis::from_redis_value(v).expect("string")
}

#[test]
fn selectors_and_read_write_key_permissions() {
    let server = common::start("");
    let mut admin = common::client(&server);
    let mut user = common::client(&server);

    // Each selector allows its own commands on its own keys; the root allows nothing.
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "sel",
            "on",
            "nopass",
            "-@all",
            "(+@write ~write::*)",
            "(+@read",
            "~read::*)",
        ],
    );
    ok(&mut user, &["AUTH", "sel", "x"]);
    assert!(err(&mut user, &["PING"]).contains("'ping' command"));
    ok(&mut user, &["SET", "write::a", "1"]);
    ok(&mut user, &["GET", "read::a"]);
    assert!(err(&mut user, &["GET", "write::a"]).contains("keys"));
    assert!(err(&mut user, &["SET", "read::a", "1"]).contains("keys"));
    let selectors = getuser_field(&mut admin, "sel", "selectors");
    let redis::Value::Array(selectors) = selectors else {
        panic!("selectors: {selectors:?}");
    };
    assert_eq!(selectors.len(), 2);
    let line = acl_list_line(&mut admin, "sel");
    assert!(
        line.ends_with(
            "-@all (~write::* resetchannels -@all +@write) (~read::* resetchannels -@all +@read)"
        ),
        "{line}"
    );
    ok(&mut admin, &["ACL", "SETUSER", "sel", "clearselectors"]);
    assert!(err(&mut user, &["SET", "write::a", "1"]).contains("'set' command"));

    // Selector syntax errors name the whole selector and change nothing.
    let e = err(
        &mut admin,
        &["ACL", "SETUSER", "bad", "on", "(this-is-invalid)"],
    );
    assert!(
        e.contains("modifier '(this-is-invalid)': Syntax error"),
        "{e}"
    );
    let e = err(&mut admin, &["ACL", "SETUSER", "bad", "(~a", "+get"]);
    assert!(
        e.contains("Unmatched parenthesis in acl selector starting at '(~a'."),
        "{e}"
    );
    let none: Option<String> = redis::cmd("ACL")
        .arg("GETUSER")
        .arg("bad")
        .query(&mut admin)
        .expect("getuser");
    assert_eq!(none, None);

    // %R~ reads, %W~ writes; the same pattern given both ways is a plain ~pattern.
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "rw",
            "on",
            "nopass",
            "+@all",
            "%R~read*",
            "%W~write*",
            "%R~both",
            "%W~both",
        ],
    );
    assert_eq!(
        text(&getuser_field(&mut admin, "rw", "keys")),
        "%R~read* %W~write* ~both"
    );
    ok(&mut user, &["AUTH", "rw", "x"]);
    ok(&mut admin, &["SET", "readstr", "v"]);
    ok(&mut user, &["GET", "readstr"]);
    assert!(err(&mut user, &["SET", "readstr", "v"]).contains("keys"));
    ok(&mut user, &["LPUSH", "writelist", "1"]);
    assert!(err(&mut user, &["GET", "writestr"]).contains("keys"));
    ok(&mut user, &["COPY", "readstr", "writestr"]);
    assert!(err(&mut user, &["COPY", "writestr", "readstr"]).contains("keys"));
    // SET reads its key only with GET after the value; BITFIELD writes unless it only GETs.
    ok(&mut user, &["SET", "writestr", "get"]);
    assert!(err(&mut user, &["SET", "writestr", "v", "GET"]).contains("keys"));
    ok(&mut user, &["BITFIELD", "readstr", "GET", "u4", "0"]);
    assert!(err(
        &mut user,
        &["BITFIELD", "readstr", "INCRBY", "u4", "0", "1"]
    )
    .contains("keys"));

    // DRYRUN names what is refused; existence checks need either permission.
    assert_eq!(dryrun(&mut admin, &["rw", "GET", "read1"]), "OK");
    assert_eq!(
        dryrun(
            &mut admin,
            &["rw", "MIGRATE", "h", "1", "", "0", "5000", "AUTH", "KEYS", "KEYS", "read1"]
        ),
        "This user has no permissions to access the 'read1' key"
    );
    assert_eq!(
        dryrun(&mut admin, &["rw", "EVAL", "", "1", "read1"]),
        "This user has no permissions to access the 'read1' key"
    );
    assert_eq!(
        dryrun(&mut admin, &["rw", "EVAL_RO", "", "1", "read1"]),
        "OK"
    );
    assert_eq!(dryrun(&mut admin, &["rw", "EXISTS", "write1"]), "OK");
    assert_eq!(
        dryrun(&mut admin, &["rw", "EXISTS", "nothing"]),
        "This user has no permissions to access the 'nothing' key"
    );
    let e = err(&mut admin, &["ACL", "DRYRUN", "rw", "SET", "k"]);
    assert!(
        e.contains("wrong number of arguments for 'set' command"),
        "{e}"
    );

    // Among selectors that all refuse, ACL LOG names the most specific refusal: the
    // key a later argument holds.
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "logsel",
            "on",
            "nopass",
            "+mget",
            "~key",
            "(+mget ~key ~otherkey)",
        ],
    );
    ok(&mut user, &["AUTH", "logsel", "x"]);
    ok(&mut admin, &["ACL", "LOG", "RESET"]);
    assert!(err(&mut user, &["MGET", "otherkey", "someotherkey"]).contains("keys"));
    let log: Vec<Vec<redis::Value>> = redis::cmd("ACL").arg("LOG").query(&mut admin).expect("log");
    let entry = &log[0];
    let object = entry
        .chunks(2)
        .find(|kv| text(&kv[0]) == "object")
        .map(|kv| text(&kv[1]))
        .expect("object");
    assert_eq!(object, "someotherkey");

    // SORT BY/GET need a selector that may read every key.
    ok(&mut admin, &["RPUSH", "mylist", "1"]);
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "sorter",
            "on",
            "nopass",
            "(+sort ~mylist %W~*)",
        ],
    );
    ok(&mut user, &["AUTH", "sorter", "x"]);
    let e = err(&mut user, &["SORT", "mylist", "BY", "v*"]);
    assert!(
        e.contains("BY option of SORT denied due to insufficient ACL permissions."),
        "{e}"
    );
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "sorter",
            "clearselectors",
            "(+sort ~mylist %R~*)",
        ],
    );
    ok(&mut user, &["SORT", "mylist", "BY", "v*"]);
}

#[test]
fn selectors_from_an_acl_file() {
    let path = common::scratch_dir().join("users.acl");
    std::fs::write(
        &path,
        "user alice on (+get ~rw*)\nuser bob on (+set %W~w*) (+get %R~r*)\n",
    )
    .expect("write acl file");
    let server = common::start(&format!("aclfile {}", path.display()));
    let mut admin = common::client(&server);
    let redis::Value::Array(bob) = getuser_field(&mut admin, "bob", "selectors") else {
        panic!("bob's selectors");
    };
    assert_eq!(bob.len(), 2);
    ok(&mut admin, &["ACL", "SAVE"]);
    let saved = std::fs::read_to_string(&path).expect("read acl file");
    assert!(
        saved.contains("(%W~w* resetchannels -@all +set) (%R~r* resetchannels -@all +get)"),
        "{saved}"
    );
    ok(&mut admin, &["ACL", "LOAD"]);
    let redis::Value::Array(alice) = getuser_field(&mut admin, "alice", "selectors") else {
        panic!("alice's selectors");
    };
    assert_eq!(alice.len(), 1);
}

#[test]
fn command_rules_read_as_redis_describes_them() {
    let server = common::start("");
    let mut admin = common::client(&server);
    let commands =
        |c: &mut redis::Connection, user: &str| text(&getuser_field(c, user, "commands"));
    ok(&mut admin, &["ACL", "SETUSER", "bob", "+memory|doctor"]);
    assert_eq!(commands(&mut admin, "bob"), "-@all +memory|doctor");
    // A whole command takes in its subcommands' rules; a rule that changes nothing
    // is not kept.
    ok(&mut admin, &["ACL", "SETUSER", "bob", "+memory"]);
    assert_eq!(commands(&mut admin, "bob"), "-@all +memory");
    ok(
        &mut admin,
        &["ACL", "SETUSER", "bob", "+@all", "+client|id"],
    );
    assert_eq!(commands(&mut admin, "bob"), "+@all");
    ok(
        &mut admin,
        &["ACL", "SETUSER", "bob", "-@all", "+@read", "-get", "+get"],
    );
    assert_eq!(commands(&mut admin, "bob"), "-@all +@read");
    // A first argument may be allowed for a command without subcommands (DEBUG is one).
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "bob",
            "-@all",
            "+select|0",
            "+debug|digest",
        ],
    );
    assert_eq!(commands(&mut admin, "bob"), "-@all +select|0 +debug|digest");
    for (rule, why) in [
        (
            "+config|get|appendonly",
            "Allowing first-arg of a subcommand is not supported",
        ),
        ("+config|asdf", "Unknown command or category name in ACL"),
        ("-config|asdf", "Unknown command or category name in ACL"),
        ("-select|0", "Unknown command or category name in ACL"),
        ("+get|key1|key2", "Unknown command or category name in ACL"),
        (
            "+no-such-command",
            "Unknown command or category name in ACL",
        ),
    ] {
        let e = err(&mut admin, &["ACL", "SETUSER", "bob", rule]);
        assert!(e.contains(why), "{rule}: {e}");
    }
    let e = err(&mut admin, &["ACL", "HELP", "extra"]);
    assert!(
        e.contains("wrong number of arguments for 'acl|help' command"),
        "{e}"
    );
    let scripting: Vec<String> = redis::cmd("ACL")
        .arg("CAT")
        .arg("scripting")
        .query(&mut admin)
        .expect("cat");
    assert!(
        scripting.iter().any(|c| c == "function|list"),
        "{scripting:?}"
    );
    // A new user has no sanitize-payload flag until `reset` gives it one.
    let list = acl_list(&mut admin);
    assert!(
        list.contains(&"user default on nopass ~* &* +@all".to_string()),
        "{list:?}"
    );
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "hp",
            "on",
            "nopass",
            "resetchannels",
            "&foo",
            "+@all",
        ],
    );
    let list = acl_list(&mut admin);
    assert!(
        list.contains(&"user hp on nopass resetchannels &foo +@all".to_string()),
        "{list:?}"
    );
}

#[test]
fn subscribers_are_closed_when_their_channels_are_revoked() {
    let server = common::start("");
    let mut admin = common::client(&server);
    ok(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "ps",
            "on",
            ">pw",
            "+@all",
            "~*",
            "resetchannels",
            "&keep",
            "&bar:*",
        ],
    );
    let subscribe = |args: &[&str]| {
        let mut c = common::client(&server);
        ok(&mut c, &["AUTH", "ps", "pw"]);
        ok(
            &mut c,
            &["CLIENT", "SETNAME", &args[1].replace(['*', ':'], "")],
        );
        let mut q = redis::cmd(args[0]);
        q.arg(args[1]);
        let _: redis::Value = q.query(&mut c).expect("subscribe");
        c
    };
    let _kept = subscribe(&["SUBSCRIBE", "keep"]);
    let _pattern = subscribe(&["PSUBSCRIBE", "bar:*"]);
    let names = |c: &mut redis::Connection| -> String {
        redis::cmd("CLIENT")
            .arg("LIST")
            .query(c)
            .expect("client list")
    };
    assert!(names(&mut admin).contains("name=bar"));
    // Widening keeps everyone; dropping the pattern closes its subscriber only.
    ok(&mut admin, &["ACL", "SETUSER", "ps", "&more"]);
    assert!(names(&mut admin).contains("name=bar"));
    ok(
        &mut admin,
        &["ACL", "SETUSER", "ps", "resetchannels", "&keep"],
    );
    let list = names(&mut admin);
    assert!(!list.contains("name=bar"), "{list}");
    assert!(list.contains("name=keep"), "{list}");
}

#[test]
fn config_rewrite_keeps_the_users() {
    let dir = common::scratch_dir();
    let conf = dir.join("carmine.conf");
    std::fs::write(
        &conf,
        format!(
            "port 0\nbind 127.0.0.1\nsave \"\"\ndir {}\nuser default on nopass ~* +@all -flushdb\n",
            dir.display()
        ),
    )
    .expect("write config");
    let server = common::start_with_file(&conf);
    let mut c = common::client(&server);
    assert!(err(&mut c, &["FLUSHDB"]).starts_with("NOPERM"));
    ok(
        &mut c,
        &["ACL", "SETUSER", "carol", "on", ">x", "(+get ~c:*)"],
    );
    ok(&mut c, &["CONFIG", "REWRITE"]);
    server.shutdown();
    let text = std::fs::read_to_string(&conf).expect("read config");
    assert!(
        text.contains("user default on nopass ~* resetchannels +@all -flushdb"),
        "{text}"
    );
    assert!(text.contains("(~c:* resetchannels -@all +get)"), "{text}");
    let server = common::start_with_file(&conf);
    let mut c = common::client(&server);
    assert!(err(&mut c, &["FLUSHDB"]).starts_with("NOPERM"));
    ok(&mut c, &["AUTH", "carol", "x"]);
    ok(&mut c, &["GET", "c:1"]);
}
