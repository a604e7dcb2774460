//! Differential test: the same deterministic command script against real redis-server and
//! carmine-server, comparing the raw RESP bytes of every reply. `cargo xtask test` installs
//! redis-server; without it this test fails saying so.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(bin: &str, port: u16) -> Proc {
    let dir = std::env::temp_dir().join(format!("carmine-diff-{port}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let spawned = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let proc = match spawned {
        Ok(child) => Proc(child),
        Err(e) => panic!("{bin} starts ({e}); run `cargo xtask test`, which installs redis-server"),
    };
    assert!(
        common::wait_port(port, 10),
        "{bin} did not listen on {port}"
    );
    proc
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{}\r\n", a.len(), a).as_bytes());
    }
    out
}

/// Sends each command and reads one complete reply (parsed only for its length).
fn run_script(port: u16, script: &[Vec<&str>]) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut replies = Vec::new();
    let mut buf = Vec::new();
    for cmd in script {
        s.write_all(&encode(cmd)).expect("write");
        loop {
            if let Some(frame_len) = complete(&buf) {
                replies.push(buf.drain(..frame_len).collect());
                break;
            }
            let mut chunk = [0u8; 65536];
            let n = s.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed during {cmd:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    replies
}

fn complete(buf: &[u8]) -> Option<usize> {
    let mut b = bytes::BytesMut::from(buf);
    let before = b.len();
    match carmine_resp::FrameDecoder::default().decode(&mut b) {
        Ok(Some(_)) => Some(before - b.len()),
        _ => None,
    }
}

fn script() -> Vec<Vec<&'static str>> {
    let lines = [
        // strings and keys
        "SET s hello",
        "GET s",
        "APPEND s _world",
        "STRLEN s",
        "GETRANGE s -5 -1",
        "SETRANGE s 20 !",
        "GET s",
        "INCR n",
        "INCRBY n -10",
        "DECRBY n 3",
        "INCRBYFLOAT f 10.5",
        "INCRBYFLOAT f 0.1",
        "LOLWUT",
        "LOLWUT VERSION 7",
        "LOLWUT VERSION x",
        // long double sums, parses and printing (not a double's)
        "INCRBYFLOAT f3 0.1",
        "INCRBYFLOAT f3 0.2",
        "SET fbig 1.5e300",
        "INCRBYFLOAT fbig 1.25",
        "INCRBYFLOAT fneg -1e-20",
        "INCRBYFLOAT fhex 0x1p-3",
        "INCRBYFLOAT fbad 1e",
        "INCRBYFLOAT fbad 1e5000",
        "INCRBYFLOAT fbad 1e-5000",
        "INCRBYFLOAT f3 inf",
        "SET fden 3.6e-4951",
        "INCRBYFLOAT fden 0",
        "HINCRBYFLOAT hf a 0.1",
        "HINCRBYFLOAT hf a 0.2",
        "HINCRBYFLOAT hf a 1e30",
        "HINCRBYFLOAT hf a -inf",
        "SET n2 12345678901234567890",
        "INCR n2",
        "INCR s",
        "MSET a 1 b 2",
        "MGET a b missing",
        "MSETNX a 1 c 3",
        "SET e v EX 0",
        "SET e v PX 100 NX",
        "SET e w XX GET",
        "GETDEL e",
        "EXISTS a b a zz",
        "TYPE a",
        "TYPE zz",
        "RENAME a a2",
        "RENAME zz q",
        "RENAMENX a2 b",
        "EXPIRE b 100 XX",
        "TTL b",
        "EXPIRE b 100 NX",
        "TTL b",
        "EXPIRE b 50 GT",
        "PERSIST b",
        "TTL b",
        "TTL zz",
        "OBJECT ENCODING n",
        "OBJECT ENCODING s",
        // Encodings around the inline limit and after in-place edits.
        "SET enc22 aaaaaaaaaaaaaaaaaaaaaa",
        "OBJECT ENCODING enc22",
        "SET enc30 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "OBJECT ENCODING enc30",
        "SET enc45 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "OBJECT ENCODING enc45",
        "APPEND enc30 b",
        "OBJECT ENCODING enc30",
        "APPEND encnew1 12345",
        "OBJECT ENCODING encnew1",
        "APPEND encnew2 shorttext",
        "OBJECT ENCODING encnew2",
        "SETRANGE encsr 0 abc",
        "OBJECT ENCODING encsr",
        "SETBIT encbit 7 1",
        "OBJECT ENCODING encbit",
        "BITFIELD encbf SET u8 0 255",
        "OBJECT ENCODING encbf",
        "LCS s s2",
        "SET k1 ohmytext",
        "SET k2 mynewtext",
        "LCS k1 k2",
        "LCS k1 k2 LEN",
        "LCS k1 k2 IDX MINMATCHLEN 2 WITHMATCHLEN",
        "GETEX k1 PERSIST",
        "SETNX k1 x",
        "STRLEN zz",
        "WRONGCMD x",
        "GET",
        "SET a b c d",
        // hashes
        "HSET h f1 v1 f2 v2",
        "HGET h f1",
        "HGET h zz",
        "HSETNX h f1 x",
        "HMGET h f1 zz f2",
        "HLEN h",
        "HINCRBY h n 5",
        "HINCRBY h f1 1",
        "HINCRBYFLOAT h fl 1.5",
        "HSTRLEN h f2",
        "HEXISTS h f2",
        "HDEL h f1 zz",
        "HGET s f",
        "OBJECT ENCODING h",
        // lists
        "RPUSH l a b c d e",
        "LPUSH l z",
        "LRANGE l 0 -1",
        "LRANGE l -2 100",
        "LINDEX l 2",
        "LINDEX l 99",
        "LSET l 0 Z",
        "LSET l 99 x",
        "LINSERT l BEFORE c X",
        "LINSERT l AFTER nope Y",
        "LREM l 0 X",
        "LPOS l d",
        "LPOS l zz",
        "LTRIM l 1 3",
        "LRANGE l 0 -1",
        "LPOP l",
        "RPOP l 5",
        "LPOP l",
        "LLEN l",
        "EXISTS l",
        "RPUSH l2 1 2 3",
        "LMOVE l2 l3 LEFT RIGHT",
        "RPOPLPUSH l2 l3",
        "LRANGE l3 0 -1",
        "LMPOP 2 nope l2 LEFT COUNT 5",
        "LPUSHX nope a",
        "OBJECT ENCODING l3",
        "BLPOP nope 0.01",
        // sets (deterministic replies only)
        "SADD s1 1 2 3",
        "SADD s1 2 4",
        "SCARD s1",
        "SISMEMBER s1 3",
        "SMISMEMBER s1 1 9",
        "SREM s1 1 9",
        "OBJECT ENCODING s1",
        "SADD s2 3 4 x",
        "SINTERCARD 2 s1 s2",
        "SINTERSTORE d s1 s2",
        "SCARD d",
        "SMOVE s2 d x",
        "SCARD d",
        "SDIFFSTORE d2 s1 s2",
        "SPOP zz",
        "SADD s kk",
        // bitmaps
        "SETBIT bm 7 1",
        "SETBIT bm 7 0",
        "SETBIT bm 100 1",
        "GETBIT bm 100",
        "GETBIT bm 1000",
        "BITCOUNT bm",
        "SET bs foobar",
        "BITCOUNT bs",
        "BITCOUNT bs 1 1",
        "BITCOUNT bs 5 30 BIT",
        "BITPOS bs 1",
        "BITPOS bs 0",
        "SET ones \u{ff}",
        "BITPOS ones 0",
        "BITPOS ones 0 0 -1",
        "BITPOS nope 0",
        "BITPOS nope 1",
        // BITFIELD: types, offsets, overflow policies, missing keys, big strings.
        "BITFIELD bf SET i8 0 -100 GET u4 0 INCRBY u2 100 1 GET i16 #1",
        "GET bf",
        "BITFIELD bf OVERFLOW SAT INCRBY i8 0 -100 OVERFLOW WRAP INCRBY u8 8 300",
        "BITFIELD bf OVERFLOW FAIL INCRBY u4 0 100 GET u64 0",
        "BITFIELD bf GET i64 0 SET u63 3 12345678901 GET i64 #0",
        "BITFIELD_RO bf GET u8 0 GET i5 3",
        "BITFIELD bf_missing OVERFLOW FAIL SET u2 0 7",
        "EXISTS bf_missing",
        "BITFIELD bf_missing GET u8 100",
        "EXISTS bf_missing",
        "BITFIELD bf_missing SET u8 #3 7",
        "GET bf_missing",
        "BITFIELD_RO bf SET u8 0 1",
        "BITFIELD bf GET u0 0",
        "BITFIELD bf GET i65 0",
        "BITFIELD bf GET u8 -1",
        "BITFIELD bf OVERFLOW NOPE INCRBY u8 0 1",
        "BITFIELD l GET u8 0",
        "SETRANGE bfbig 70000 x",
        "BITFIELD bfbig SET u16 524280 65535 GET u32 524272 INCRBY i16 #32767 5",
        "GETRANGE bfbig 65534 65537",
        "STRLEN bfbig",
        "BITFIELD bfbig SET u8 800000 1",
        "STRLEN bfbig",
        // Strings past 64 KiB, which Carmine keeps in 64 KiB pieces: edits, reads and
        // ranges that cross pieces.
        "SETBIT big 1048577 1",
        "SETBIT big 524287 1",
        "SETRANGE big 65530 across-the-boundary",
        "APPEND big tail",
        "STRLEN big",
        "GETBIT big 1048577",
        "GETBIT big 524287",
        "GETBIT big 9999999",
        "GETRANGE big 65528 65560",
        "GETRANGE big -8 -1",
        "BITCOUNT big",
        "BITCOUNT big 65530 131080",
        "BITCOUNT big 524280 1048600 BIT",
        "BITPOS big 1",
        "BITPOS big 1 70000",
        "BITPOS big 1 524288 -1 BIT",
        "BITPOS big 0 65530 65540",
        "GET big",
        "SETRANGE big2 200000 x",
        "GETRANGE big2 199990 -1",
        "BITOP OR big3 big big2",
        "STRLEN big3",
        "GETRANGE big3 65528 65560",
        "BITOP AND dest bs ones",
        "BITOP OR dest2 bs bm",
        "BITOP NOT dest3 bs",
        "GET dest3",
        "BITOP NOT d a b",
        "SETBIT bm -1 1",
        "SETBIT bm 1 2",
        "BITCOUNT bs 1",
        // sorted sets
        "ZADD z 1 a 2 b 3 c",
        "ZADD z 1.5 d 0.1 e",
        "ZSCORE z e",
        "ZSCORE z zz",
        "ZCARD z",
        "ZRANK z c",
        "ZREVRANK z c",
        "ZRANK z zz",
        "ZRANGE z 0 -1",
        "ZRANGE z 0 -1 WITHSCORES",
        "ZRANGE z 1 2 REV",
        "ZRANGE z (1 3 BYSCORE",
        "ZRANGE z 3 (1 BYSCORE REV WITHSCORES",
        "ZRANGE z -inf +inf BYSCORE LIMIT 1 2",
        "ZRANGEBYSCORE z 1 2",
        "ZREVRANGEBYSCORE z +inf 1.5 WITHSCORES",
        "ZREVRANGE z 0 1",
        "ZCOUNT z (1 +inf",
        "ZADD z NX 9 a",
        "ZADD z XX CH 9 a",
        "ZADD z GT 5 a",
        "ZADD z LT 5 a",
        "ZADD z INCR 1 a",
        "ZINCRBY z 2.5 b",
        "ZADD z XX NX 1 a",
        "ZADD z GT LT 1 a",
        "ZADD z INCR 1 a 2 b",
        "ZADD z 1",
        "ZADD z abc a",
        "ZMSCORE z a zz b",
        "ZREM z a zz",
        "ZPOPMIN z",
        "ZPOPMAX z 2",
        "ZCARD z",
        "ZADD lex 0 a 0 b 0 c 0 d 0 e",
        "ZRANGEBYLEX lex - +",
        "ZRANGEBYLEX lex [b (e",
        "ZREVRANGEBYLEX lex + [c LIMIT 0 2",
        "ZLEXCOUNT lex (a [d",
        "ZRANGEBYLEX lex b c",
        "ZREMRANGEBYLEX lex [a [b",
        "ZREMRANGEBYRANK lex 0 0",
        "ZRANGE lex 0 -1",
        "ZADD sc 0.1 x 1e20 y -2.25 w 1e-5 v",
        "ZRANGE sc 0 -1 WITHSCORES",
        "ZREMRANGEBYSCORE sc -inf 0",
        "OBJECT ENCODING sc",
        "ZSCORE s a",
        "ZADD s 1 a",
        "ZRANGE z 0 -1 BYLEX WITHSCORES",
        "ZRANGE z 0 1 LIMIT 0 1",
        "ZADD za 1 a 2 b 3 c",
        "ZADD zb 10 b 20 c 30 d",
        "SADD sa c d e",
        "ZUNION 2 za zb WITHSCORES",
        "ZUNION 2 za zb WEIGHTS 2 1 AGGREGATE MAX WITHSCORES",
        "ZINTER 2 za zb WITHSCORES",
        "ZINTER 3 za zb sa AGGREGATE MIN WITHSCORES",
        "ZDIFF 2 za zb WITHSCORES",
        "ZUNIONSTORE zu 3 za zb sa",
        "ZRANGE zu 0 -1 WITHSCORES",
        "ZINTERSTORE zi 2 za zb WEIGHTS 1 0.5",
        "ZRANGE zi 0 -1 WITHSCORES",
        "ZDIFFSTORE zd 2 zb za",
        "ZRANGE zd 0 -1 WITHSCORES",
        "ZINTERCARD 2 za zb",
        "ZINTERCARD 2 za zb LIMIT 1",
        "ZUNION 0 za",
        "LPOP l 1 1",
        "SINTERCARD 1 s1 LIMIT a",
        "LMPOP 1 l2 LEFT COUNT a",
        "HINCRBYFLOAT hinf f +inf",
        "EXISTS hinf",
        "SADD smv1 a b",
        "SADD smv2 a",
        "SMOVE smv1 smv2 a",
        "SMEMBERS smv1",
        "SCARD smv2",
        "ZUNION 2 za",
        "ZUNIONSTORE zu 1 s",
        "ZRANGESTORE zr zb 0 1",
        "ZRANGE zr 0 -1 WITHSCORES",
        "ZRANGESTORE zr zb (10 +inf BYSCORE",
        "ZRANGE zr 0 -1",
        "ZMPOP 2 nope zb MAX COUNT 2",
        "ZMPOP 1 nope MIN",
        "BZPOPMIN nope zb 0.01",
        "BZPOPMAX nope 0.01",
        "BZMPOP 0.01 1 zb MIN COUNT 5",
        "ZINTERSTORE zi 2 nope za",
        "EXISTS zi",
        // geo
        "GEOADD Sicily 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
        "GEOPOS Sicily Palermo nope",
        "GEODIST Sicily Palermo Catania",
        "GEODIST Sicily Palermo Catania km",
        "GEODIST Sicily Palermo nope",
        "GEOHASH Sicily Palermo Catania",
        "ZSCORE Sicily Palermo",
        "GEOADD Sicily 200 100 bad",
        "GEOADD Sicily XX CH 13.583333 37.316667 Palermo",
        "GEOADD Sicily NX 12.758489 38.788135 edge1 17.241510 38.788135 edge2",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 200 km ASC",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 200 km DESC WITHCOORD WITHDIST WITHHASH",
        "GEOSEARCH Sicily FROMMEMBER Catania BYBOX 400 400 km ASC WITHDIST",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 400 km COUNT 2",
        "GEOSEARCHSTORE gs Sicily FROMLONLAT 15 37 BYRADIUS 400 km ASC STOREDIST",
        "ZRANGE gs 0 -1 WITHSCORES",
        "GEORADIUS Sicily 15 37 200 km WITHDIST ASC",
        "GEORADIUSBYMEMBER Sicily Palermo 300 km ASC",
        "GEORADIUS_RO Sicily 15 37 10 m",
        "GEOSEARCH Sicily BYRADIUS 10 km",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 10 parsecs",
        "GEOSEARCH Sicily FROMMEMBER nope BYRADIUS 1 km",
        "GEOADD Sicily XX NX 13.36 38.11 Palermo",
        "GEOSEARCH Sicily FROMLONLAT 15 37 FROMMEMBER Palermo BYBOX 6 6 km",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 3 km BYBOX 3 3 km",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYBOX -1 3 km",
        "GEORADIUS Sicily 15 37 10 km ANY ASC",
        "GEORADIUS Sicily 15 37 10 km COUNT x",
        "GEORADIUSBYMEMBER nogeo Palermo 1 km",
        "GEORADIUSBYMEMBER nogeo Palermo 1 km STORE gdst",
        "GEOSEARCH nogeo FROMMEMBER Palermo BYBOX 1 1 km",
        "GEOSEARCHSTORE gdst nogeo FROMMEMBER Palermo BYBOX 1 1 km",
        "GEOSEARCHSTORE gdst Sicily FROMMEMBER Palermo BYBOX 1 1 km WITHDIST",
        "GEORADIUS Sicily 15 37 200 km STORE gdst WITHDIST",
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYBOX 600 200 km ASC",
        // transactions
        "MULTI",
        "INCR tx",
        "INCR tx",
        "EXEC",
        "MULTI",
        "GET",
        "EXEC",
        "EXEC",
        "DISCARD",
        // HyperLogLog: the strings themselves must match Redis' bytes
        "PFADD h a b c",
        "GET h",
        "PFCOUNT h",
        "GET h",
        "PFADD h a",
        "PFADD h d",
        "GET h",
        "PFADD h2 x y z a",
        "PFCOUNT h h2",
        "PFCOUNT h nope h2",
        "PFMERGE h3 h h2",
        "GET h3",
        "PFCOUNT h3",
        "PFADD hempty",
        "GET hempty",
        "PFADD s x",
        "PFADD z x",
        "PFCOUNT s",
        "PFCOUNT nope",
        "PFMERGE h3 s",
        "PFDEBUG ENCODING h3",
        "PFDEBUG DECODE h3",
        "PFDEBUG TODENSE h3",
        "PFDEBUG ENCODING h3",
        "PFDEBUG DECODE h3",
        "PFDEBUG TODENSE h3",
        "PFDEBUG NOPE h3",
        "PFDEBUG ENCODING nope",
        "PFCOUNT h3",
        "PFMERGE h4 h h3",
        "PFDEBUG ENCODING h4",
        "PFCOUNT h4",
        // introspection with stable replies
        "SELECT 99",
        "ECHO hi",
        "PING",
        "PING x",
        "DBSIZE",
        // SORT and SORT_RO
        "RPUSH sl 3 1 2 10 -1.5 0x10",
        "SORT sl",
        "SORT sl DESC",
        "SORT sl ALPHA",
        "SORT sl ALPHA DESC LIMIT 1 3",
        "SORT sl LIMIT -5 2",
        "SORT sl LIMIT 4 100",
        "SORT sl LIMIT 100 1",
        "SORT sl LIMIT 0 0",
        "SORT sl LIMIT x 1",
        "SORT sl BY nosort",
        "SORT sl BY nosort DESC LIMIT 1 2",
        "MSET sw_3 30 sw_1 10 sw_2 20 sw_10 5 so_1 one so_2 two",
        "HSET sh_1 f 9",
        "HSET sh_2 f 1",
        "SORT sl BY sw_*",
        "SORT sl BY sw_* DESC GET so_* GET # GET nothing",
        "SORT sl BY sh_*->f GET sh_*->f",
        "SORT sl BY sw_* ALPHA",
        "SORT sl BY sw_* STORE sdst",
        "LRANGE sdst 0 -1",
        "SORT sl GET so_* STORE sdst",
        "LRANGE sdst 0 -1",
        "SORT nolist STORE sdst",
        "EXISTS sdst",
        "SORT_RO sl LIMIT 1 2",
        "SORT_RO sl STORE sdst",
        "SADD sset b c a",
        "SORT sset ALPHA",
        "SORT sset BY nosort STORE sdst",
        "LRANGE sdst 0 -1",
        "SORT sset",
        "ZADD sz 1 c 2 b 3 a",
        "SORT sz BY nosort",
        "SORT sz BY nosort DESC LIMIT 0 2",
        "SORT sz ALPHA",
        "SET sstr x",
        "SORT sstr",
        "SORT sl FOO",
        "SORT sl LIMIT 1",
        "COMMAND GETKEYS SORT sl STORE a LIMIT 0 1 STORE b",
        // numkeys errors: one text for any bad count, except the ZINTER family's
        "SINTERCARD a s1",
        "SINTERCARD 0 s1",
        "SINTERCARD 3 s1 s2",
        "LMPOP a l2 LEFT",
        "BLMPOP 0.01 -1 l2 LEFT",
        "ZMPOP a za MIN",
        "BZMPOP 0.01 0 za MIN",
        "ZINTERCARD 0 za",
        "ZINTERCARD a za",
        "ZINTERCARD 3 za zb",
        "ZINTERCARD 2 za zb LIMIT 1 LIMIT 0",
        "ZINTERCARD 1 sstr LIMIT x",
        "ZUNION 0 za",
        "MULTI",
        "SAVE",
        "EXEC",
    ];
    let mut script: Vec<Vec<&'static str>> = lines.iter().map(|l| l.split(' ').collect()).collect();
    // HLLs big enough to show sparse run merging, promotion at hll-sparse-max-bytes, and
    // dense registers, compared by their bytes.
    let elements = |key: &'static str, n: usize| -> Vec<&'static str> {
        let mut cmd = vec!["PFADD", key];
        cmd.extend((0..n).map(|i| &*Box::leak(format!("e{i}").into_boxed_str())));
        cmd
    };
    for (key, n) in [("hmid", 150), ("hbig", 2000)] {
        script.push(elements(key, n));
        script.push(vec!["GET", key]);
        script.push(vec!["PFCOUNT", key]);
        script.push(vec!["PFDEBUG", "ENCODING", key]);
    }
    script.push(vec!["CONFIG", "SET", "hll-sparse-max-bytes", "60"]);
    script.push(elements("hsmall", 40));
    script.push(vec!["PFDEBUG", "ENCODING", "hsmall"]);
    script.push(vec!["GET", "hsmall"]);
    script.push(vec!["PFMERGE", "hmerged", "hmid", "hbig", "hsmall"]);
    script.push(vec!["GET", "hmerged"]);
    script.push(vec!["PFCOUNT", "hmerged", "hmid"]);
    script.push(vec!["CONFIG", "SET", "hll-sparse-max-bytes", "3000"]);
    // ACL: users, selectors, read/write key patterns, DRYRUN's texts, rule errors and
    // how rules read back (GETUSER, LIST).
    let acl: &[&[&str]] = &[
        // One command per user: Redis lists single commands in its command table's
        // hash order, which changes from run to run.
        &["ACL", "SETUSER", "alice", "on", ">pw", "~cached:*", "+get"],
        &["ACL", "GETUSER", "alice"],
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
        &["ACL", "GETUSER", "sel"],
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
        &["ACL", "GETUSER", "rw"],
        &["ACL", "DRYRUN", "rw", "GET", "read1"],
        &["ACL", "DRYRUN", "rw", "SET", "read1", "v"],
        &["ACL", "DRYRUN", "rw", "COPY", "read1", "write1"],
        &["ACL", "DRYRUN", "rw", "COPY", "write1", "read1"],
        &["ACL", "DRYRUN", "rw", "EVAL", "", "1", "read1"],
        &["ACL", "DRYRUN", "rw", "SET", "k"],
        &["ACL", "DRYRUN", "sel", "PING"],
        &["ACL", "DRYRUN", "nobody", "GET", "x"],
        &["ACL", "DRYRUN", "sel", "nocommand"],
        &["ACL", "SETUSER", "bad", "(this-is-invalid)"],
        &["ACL", "SETUSER", "bad", "(~a", "+get"],
        &["ACL", "SETUSER", "bad", "+config|get|x"],
        &["ACL", "SETUSER", "bad", "+nosuchcmd"],
        &["ACL", "SETUSER", "bad", "%X~a"],
        &["ACL", "GETUSER", "bad"],
        &["ACL", "SETUSER", "bob", "+memory|doctor"],
        &["ACL", "GETUSER", "bob"],
        &["ACL", "SETUSER", "bob", "+memory"],
        &["ACL", "GETUSER", "bob"],
        &[
            "ACL",
            "SETUSER",
            "bob",
            "+@all",
            "-memory|doctor",
            "+select|0",
        ],
        &["ACL", "GETUSER", "bob"],
        &["ACL", "SETUSER", "bob", "reset"],
        &["ACL", "GETUSER", "bob"],
        &["ACL", "LIST"],
        &["ACL", "USERS"],
        &["ACL", "HELP", "x"],
        &["ACL", "DELUSER", "alice", "sel", "rw", "bob", "nobody"],
    ];
    script.extend(acl.iter().map(|c| c.to_vec()));
    script
}

fn compare(resp3: bool) {
    let (rp, cp) = (common::free_port(), common::free_port());
    let _redis = start("redis-server", rp);
    let _carmine = start(env!("CARGO_BIN_EXE_carmine-server"), cp);
    let mut script = script();
    if resp3 {
        script.insert(0, vec!["HELLO", "3"]);
    }
    let expected = run_script(rp, &script);
    let got = run_script(cp, &script);
    let mut diffs = Vec::new();
    // HELLO's reply carries the connection id, which differs by nature.
    let skip = usize::from(resp3);
    for (i, cmd) in script.iter().enumerate().skip(skip) {
        if expected[i] != got[i] {
            diffs.push(format!(
                "{}\n    redis:   {:?}\n    carmine: {:?}",
                cmd.join(" "),
                String::from_utf8_lossy(&expected[i]),
                String::from_utf8_lossy(&got[i])
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} replies differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn replies_match_redis_byte_for_byte() {
    compare(false);
}

#[test]
fn resp3_replies_match_redis_byte_for_byte() {
    compare(true);
}

/// Reads RESP frames from `s` until one contains `marker`; returns them (raw bytes).
fn read_until_marker(s: &mut TcpStream, marker: &[u8]) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    while Instant::now() < deadline {
        while let Some(n) = complete(&buf) {
            let frame: Vec<u8> = buf.drain(..n).collect();
            if frame.windows(marker.len()).any(|w| w == marker) {
                return frames;
            }
            frames.push(frame);
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).expect("read notifications");
        assert!(n > 0, "subscriber connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    panic!("no end marker within 20 s; got {} frames", frames.len());
}

/// Every keyspace notification the whole script causes, in order, as a subscriber of
/// `__key*__:*` sees it.
fn notifications(port: u16, classes: &str, script: &[Vec<&str>]) -> Vec<Vec<u8>> {
    let mut sub = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sub.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    run_script(
        port,
        &[vec!["CONFIG", "SET", "notify-keyspace-events", classes]],
    );
    sub.write_all(&encode(&["PSUBSCRIBE", "__key*__:*"]))
        .expect("psubscribe");
    read_until_marker(&mut sub, b"psubscribe");
    run_script(port, script);
    run_script(port, &[vec!["PUBLISH", "__keydone__:end", "end-of-script"]]);
    read_until_marker(&mut sub, b"end-of-script")
}

#[test]
fn keyspace_notifications_match_redis() {
    let (rp, cp) = (common::free_port(), common::free_port());
    let _redis = start("redis-server", rp);
    let _carmine = start(env!("CARGO_BIN_EXE_carmine-server"), cp);
    let script: Vec<Vec<&str>> = script()
        .into_iter()
        // A 100 ms deadline could pass mid-script on a slow machine and add an
        // "expired" event at a time-dependent place.
        .map(|cmd| {
            cmd.into_iter()
                .map(|a| if a == "100" { "100000" } else { a })
                .collect()
        })
        .collect();
    let expected = notifications(rp, "AKEn", &script);
    let got = notifications(cp, "AKEn", &script);
    assert!(
        expected.len() > 200,
        "the script should cause many events, got {}",
        expected.len()
    );
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(
            String::from_utf8_lossy(e),
            String::from_utf8_lossy(g),
            "notification {i} differs (redis first)"
        );
    }
    assert_eq!(expected.len(), got.len(), "number of notifications");
    // Key misses (`m`, which `A` leaves out): every read of an absent key.
    let expected = notifications(rp, "Em", &script);
    let got = notifications(cp, "Em", &script);
    assert!(
        expected.len() > 20,
        "the script should miss keys, got {}",
        expected.len()
    );
    let show = |n: &[Vec<u8>]| {
        n.iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(show(&expected), show(&got), "keymiss events (redis first)");
}

/// INCRBYFLOAT and HINCRBYFLOAT over seeded random operands (long double sums printed
/// with `%.17Lf`), compared byte for byte with Redis.
#[test]
fn float_increments_match_redis() {
    let (rp, cp) = (common::free_port(), common::free_port());
    let _redis = start("redis-server", rp);
    let _carmine = start(env!("CARGO_BIN_EXE_carmine-server"), cp);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let operand = |next: &mut dyn FnMut(u64) -> u64| {
        let sign = if next(2) == 0 { "-" } else { "" };
        let int = next(1_000_000);
        let frac = next(1_000_000_000);
        match next(4) {
            0 => format!("{sign}{int}.{frac:09}"),
            1 => format!("{sign}{int}.{frac}e{}", next(60) as i64 - 30),
            2 => format!("{sign}0.{frac:09}"),
            _ => format!("{sign}{int}"),
        }
    };
    let mut owned: Vec<Vec<String>> = Vec::new();
    for i in 0..400 {
        let key = format!("f{}", i % 7);
        let a = operand(&mut next);
        if i % 2 == 0 {
            owned.push(vec!["INCRBYFLOAT".into(), key, a]);
        } else {
            owned.push(vec![
                "HINCRBYFLOAT".into(),
                format!("h{key}"),
                "x".into(),
                a,
            ]);
        }
    }
    let script: Vec<Vec<&str>> = owned
        .iter()
        .map(|c| c.iter().map(String::as_str).collect())
        .collect();
    let expected = run_script(rp, &script);
    let got = run_script(cp, &script);
    let diffs: Vec<String> = script
        .iter()
        .zip(expected.iter().zip(&got))
        .filter(|(_, (e, g))| e != g)
        .map(|(cmd, (e, g))| {
            format!(
                "{}: redis {:?} carmine {:?}",
                cmd.join(" "),
                String::from_utf8_lossy(e),
                String::from_utf8_lossy(g)
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{} replies differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
