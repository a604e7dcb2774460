//! Every command in the table, under random arguments, writes exactly one reply.
//!
//! A second reply would be read by a pipelining client as the answer to its next request,
//! and every reply after it would be off by one for the rest of the connection. The
//! dispatcher enforces the contract in release builds (it replaces a broken handler's
//! output with one "internal error" and closes the connection); this test makes sure no
//! handler ever gets there, by decoding the bytes written and counting frames.

use std::sync::Arc;

use bytes::BytesMut;
use carmine_commands::state::ReplyMode;
use carmine_commands::table::flags;
use carmine_commands::{execute, ClientInfo, Config, Session, Shared, ThreadStats};
use carmine_resp::{Args, Frame, FrameDecoder, ReplyBuf};

/// Keys of every type (made by [`fixtures`]) and missing ones.
const KEYS: &[&str] = &[
    "s", "n", "l", "h", "st", "z", "big", "geo", "missing", "{t}a", "x",
];

/// Numbers around every boundary a count, index, offset or length argument has.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "-2",
    "10",
    "-100",
    "1.5",
    "-0.5",
    "inf",
    "-inf",
    "+inf",
    "nan",
    "x",
    "",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "-9223372036854775807",
    "4294967296",
    "2147483648",
    "(1",
    "[a",
    "-",
    "+",
    "1-1",
    "0-0",
    "2-*",
    "(2-1",
    "18446744073709551615-18446744073709551615",
    "$",
    ">",
];

/// Keywords of Redis 7.0's commands.
const WORDS: &[&str] = &[
    "EX",
    "PX",
    "EXAT",
    "PXAT",
    "NX",
    "XX",
    "GT",
    "LT",
    "CH",
    "INCR",
    "KEEPTTL",
    "GET",
    "PERSIST",
    "WITHSCORES",
    "WITHSCORE",
    "WITHVALUES",
    "LIMIT",
    "BYSCORE",
    "BYLEX",
    "REV",
    "COUNT",
    "MATCH",
    "TYPE",
    "STORE",
    "STOREDIST",
    "WEIGHTS",
    "AGGREGATE",
    "SUM",
    "MIN",
    "MAX",
    "LEFT",
    "RIGHT",
    "BEFORE",
    "AFTER",
    "RANK",
    "MAXLEN",
    "BYTE",
    "BIT",
    "AND",
    "OR",
    "XOR",
    "NOT",
    "OVERFLOW",
    "WRAP",
    "SAT",
    "FAIL",
    "SET",
    "INCRBY",
    "u8",
    "i16",
    "#1",
    "FROMMEMBER",
    "FROMLONLAT",
    "BYRADIUS",
    "BYBOX",
    "ASC",
    "DESC",
    "ANY",
    "WITHCOORD",
    "WITHDIST",
    "WITHHASH",
    "m",
    "km",
    "REPLACE",
    "DB",
    "ABSTTL",
    "IDLETIME",
    "FREQ",
    "LEN",
    "IDX",
    "MINMATCHLEN",
    "WITHMATCHLEN",
    "ID",
    "NAME",
    "SETNAME",
    "GETNAME",
    "LIST",
    "INFO",
    "KILL",
    "REPLY",
    "ON",
    "OFF",
    "SKIP",
    "USAGE",
    "SAMPLES",
    "ENCODING",
    "REFCOUNT",
    "HELP",
    "RESETSTAT",
    "DOCS",
    "GETKEYS",
    "CHANNELS",
    "NUMSUB",
    "NUMPAT",
    "SCHEDULE",
    "ASYNC",
    "SYNC",
    "NOSAVE",
    "SAVE",
    "ABORT",
    "AUTH",
    "SETINFO",
    "LIB-NAME",
    "NO-EVICT",
    "YES",
    "NO",
    "default",
    "*",
    "a*",
    "maxmemory",
    "hz",
    "OBJECT",
    "MAXLEN",
    "MINID",
    "~",
    "=",
    "LIMIT",
    "STREAMS",
    "GROUP",
    "COUNT",
    "BLOCK",
    "NOACK",
    "FORCE",
    "JUSTID",
    "IDLE",
    "RETRYCOUNT",
    "LASTID",
    "MKSTREAM",
    "ENTRIESREAD",
    "FULL",
    "CREATE",
    "SETID",
];

/// The state every case starts from: one key of each type, a big hash and sorted set
/// (past the listpack limits), a geo set.
fn fixtures() -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = [
        // Not FLUSHALL: it walks 16 databases of 16384 tables, 10k times over.
        "DEL s n l h st z big geo {t}a missing x",
        "SET s hello",
        "SET n 42",
        "RPUSH l a b c 1 2 3",
        "HSET h f1 v1 f2 2",
        "SADD st a b c 1",
        "ZADD z 1 a 2 b 3 c",
        "GEOADD geo 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
        "SET {t}a x",
        "XADD x 1-1 f v",
        "XADD x 2-1 f v f2 v2",
        "XGROUP CREATE x g 0",
        "XREADGROUP GROUP g c COUNT 1 STREAMS x >",
    ]
    .iter()
    .map(|l| l.split(' ').map(String::from).collect())
    .collect();
    let mut big = vec!["ZADD".to_string(), "big".to_string()];
    for i in 0..300 {
        big.push(i.to_string());
        big.push(format!("m{i}"));
    }
    out.push(big);
    out
}

fn random_arg(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..10) {
        0..=2 => KEYS[rng.usize(..KEYS.len())].to_string(),
        3..=5 => NUMBERS[rng.usize(..NUMBERS.len())].to_string(),
        6..=8 => WORDS[rng.usize(..WORDS.len())].to_string(),
        _ => ["a", "b", "c", "f1", "m7", "Palermo", "hello", "g"][rng.usize(..8)].to_string(),
    }
}

/// What a case must not run: it sleeps, stops the process, or reloads from no file.
fn excluded(args: &[String]) -> bool {
    let is = |i: usize, w: &str| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(w));
    is(0, "shutdown")
        || is(0, "debug") && (is(1, "sleep") || is(1, "populate") || is(1, "reload"))
        // A config change would leak into later cases (maxmemory 1 refuses every write).
        || is(0, "config") && is(1, "set")
        // So would a pause (CLIENT PAUSE 9223372036854775807 holds every later write).
        || is(0, "client") && is(1, "pause")
}

struct Harness {
    shared: Arc<Shared>,
    stats: Arc<ThreadStats>,
}

impl Harness {
    fn new() -> Harness {
        let shared = Shared::new(Config::new(), 1, None);
        let stats = shared.new_thread_stats();
        Harness { shared, stats }
    }

    fn session(&self, id: u64) -> Session {
        let info = Arc::new(ClientInfo::new(id, String::new(), String::new(), -1, 0));
        Session::new(info, 0, true)
    }

    /// Runs `args` on a fresh session and returns the frames it wrote.
    fn frames(&self, id: u64, args: &[String], resp3: bool) -> (Vec<Frame>, Session) {
        let mut session = self.session(id);
        let mut reply = ReplyBuf::new(resp3);
        execute(
            &self.shared,
            &mut session,
            &self.stats,
            &Args::from_slices(args),
            &mut reply,
        );
        let mut buf = BytesMut::from(&reply.out[..]);
        let decoder = FrameDecoder::new(Default::default());
        let mut frames = Vec::new();
        while !buf.is_empty() {
            match decoder.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                other => panic!("{args:?} wrote bytes that are not RESP: {other:?}"),
            }
        }
        (frames, session)
    }

    fn setup(&self) {
        for line in fixtures() {
            let (frames, _) = self.frames(0, &line, false);
            assert!(
                matches!(frames.as_slice(), [f] if !matches!(f, Frame::Error(_))),
                "fixture {line:?}: {frames:?}"
            );
        }
    }
}

fn check_one_reply(h: &Harness, id: u64, args: &[String], resp3: bool) {
    let (frames, mut session) = h.frames(id, args, resp3);
    let spec = h
        .shared
        .commands
        .lookup(args[0].as_bytes())
        .and_then(|i| h.shared.commands.get(i));
    let per_arg = spec.is_some_and(|s| s.has(flags::REPLY_PER_ARG));
    let ok = match frames.len() {
        1 => true,
        0 => {
            session.blocked.is_some()
                || matches!(session.reply_mode, ReplyMode::Off | ReplyMode::SkipNext)
        }
        _ => per_arg,
    };
    assert!(
        ok,
        "{args:?} (RESP{}) wrote {frames:?}",
        if resp3 { 3 } else { 2 }
    );
    for f in &frames {
        if let Frame::Error(e) = f {
            let text = String::from_utf8_lossy(e);
            assert!(
                !text.contains("internal error"),
                "{args:?}: the dispatcher caught a handler breaking the one-reply rule: {text}"
            );
        }
    }
    session.unwatch_all(&h.shared.keyspace);
}

#[test]
fn every_command_writes_one_reply_under_random_arguments() {
    let h = Harness::new();
    let cases_per_command: usize = std::env::var("ONE_REPLY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut rng = fastrand::Rng::with_seed(0x0c0a_2026_1203);
    let names: Vec<String> = h
        .shared
        .commands
        .all()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    let mut id = 1;
    let mut ran = 0;
    for name in &names {
        // Subcommand containers get their subcommand names as first argument too.
        let subs: Vec<String> = h
            .shared
            .commands
            .lookup(name.as_bytes())
            .and_then(|i| h.shared.commands.get(i))
            .map(|s| s.subcommands.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        // DEBUG is no container, but its first argument picks what it does.
        let subs: Vec<String> = if name == "debug" {
            [
                "sleep",
                "object",
                "set-active-expire",
                "protocol",
                "reload",
                "populate",
                "help",
            ]
            .iter()
            .map(|w| w.to_string())
            .collect()
        } else {
            subs
        };
        for case in 0..cases_per_command {
            let mut args = vec![name.clone()];
            if !subs.is_empty() && case % 4 != 3 {
                args.push(subs[rng.usize(..subs.len())].clone());
            }
            for _ in 0..rng.usize(0..7) {
                args.push(random_arg(&mut rng));
            }
            if excluded(&args) {
                continue;
            }
            h.setup();
            id += 1;
            check_one_reply(&h, id, &args, case % 2 == 1);
            ran += 1;
        }
    }
    assert!(
        ran > names.len() * cases_per_command / 2,
        "ran only {ran} cases"
    );
}

/// The cases of the original report: two bad range arguments answered two errors.
#[test]
fn two_bad_range_arguments_get_one_error() {
    let h = Harness::new();
    h.setup();
    for cmd in [
        "LTRIM l x y",
        "LRANGE l x y",
        "GETRANGE s x y",
        "SUBSTR s x y",
    ] {
        let args: Vec<String> = cmd.split(' ').map(String::from).collect();
        let (frames, _) = h.frames(1, &args, false);
        assert_eq!(
            frames,
            vec![Frame::Error(
                b"ERR value is not an integer or out of range"
                    .to_vec()
                    .into()
            )],
            "{cmd}"
        );
    }
}

/// i64::MIN as a random-member count: Redis refuses it (its negation overflows) instead
/// of building a reply of 2^63 elements.
#[test]
fn random_member_counts_are_range_checked() {
    let h = Harness::new();
    h.setup();
    let min_err = b"ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";
    let cases: &[(&str, &[u8])] = &[
        ("SRANDMEMBER st -9223372036854775808", min_err),
        ("ZRANDMEMBER z -9223372036854775808", min_err),
        ("HRANDFIELD h -9223372036854775808", min_err),
        ("ZRANDMEMBER z -9223372036854775808 WITHSCORES", min_err),
        // Redis checks the count's range before the syntax.
        ("HRANDFIELD h -9223372036854775808 bogus", min_err),
        (
            "HRANDFIELD h x bogus",
            b"ERR value is not an integer or out of range",
        ),
        // Doubled by WITH*: Redis bounds the count to half the range.
        (
            "HRANDFIELD h -9223372036854775807 WITHVALUES",
            b"ERR value is out of range",
        ),
        (
            "ZRANDMEMBER z 4611686018427387904 WITHSCORES",
            b"ERR value is out of range",
        ),
        ("SRANDMEMBER st 1 2", b"ERR syntax error"),
    ];
    for (cmd, want) in cases {
        let args: Vec<String> = cmd.split(' ').map(String::from).collect();
        let (frames, _) = h.frames(1, &args, false);
        assert_eq!(frames, vec![Frame::Error(want.to_vec().into())], "{cmd}");
    }
    // The largest counts Redis accepts are answered at once: all members, or the
    // doubled bound for WITHVALUES.
    for cmd in [
        "SRANDMEMBER st 9223372036854775807",
        "HRANDFIELD h 4611686018427387903 WITHVALUES",
        "ZRANDMEMBER z -3 WITHSCORES",
    ] {
        let args: Vec<String> = cmd.split(' ').map(String::from).collect();
        let (frames, _) = h.frames(1, &args, false);
        let [Frame::Array(items)] = frames.as_slice() else {
            panic!("{cmd}: {frames:?}");
        };
        assert!(!items.is_empty() && items.len() <= 8, "{cmd}: {items:?}");
    }
}

/// DEBUG POPULATE with a value size past proto-max-bulk-len is refused instead of
/// aborting the process in the allocator.
#[test]
fn debug_populate_bounds_the_value_size() {
    let h = Harness::new();
    let args: Vec<String> = "DEBUG POPULATE 1 k 9223372036854775807"
        .split(' ')
        .map(String::from)
        .collect();
    let (frames, _) = h.frames(1, &args, false);
    assert_eq!(
        frames,
        vec![Frame::Error(
            b"ERR string exceeds maximum allowed size (proto-max-bulk-len)"
                .to_vec()
                .into()
        )]
    );
}

/// Pop counts: Redis answers one text for a negative count and for no number at all
/// (checked against redis-server 7.0.15).
#[test]
fn pop_counts_are_positive_longs() {
    let h = Harness::new();
    h.setup();
    for cmd in [
        "LPOP l abc",
        "RPOP l -1",
        "SPOP st x",
        "ZPOPMIN z x",
        "ZPOPMAX z -2",
        "LPOP l 1.5",
    ] {
        let args: Vec<String> = cmd.split(' ').map(String::from).collect();
        let (frames, _) = h.frames(1, &args, false);
        assert_eq!(
            frames,
            vec![Frame::Error(
                b"ERR value is out of range, must be positive"
                    .to_vec()
                    .into()
            )],
            "{cmd}"
        );
    }
}
