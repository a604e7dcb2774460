//! Redis 7.0's key-spec flags per command (COMMAND GETKEYSANDFLAGS): for each command
//! (subcommands as `parent|sub`), one list of flags per key spec, in key-spec order.
//! Generated from Redis 7.0.15's command descriptions (SET and BITFIELD, whose flags depend
//! on their arguments, are worked out in `server.rs`); flags are lower case, as
//! COMMAND GETKEYSANDFLAGS prints them (the access-type flags `RO`, `RW`, `OW` and `RM`
//! stay upper case), in the order Redis' `addReplyFlagsForKeyArgs` prints them.

/// The flags of each key spec of `name` (lower case, `parent|sub` for subcommands);
/// empty for a command without key specs or one Redis 7.0 does not have.
#[rustfmt::skip]
pub fn key_spec_flags(name: &str) -> &'static [&'static [&'static str]] {
    match name {
        "append" => &[&["RW", "insert"]],
        "bitcount" => &[&["RO", "access"]],
        "bitfield" => &[&["RW", "access", "update", "variable_flags"]],
        "bitfield_ro" => &[&["RO", "access"]],
        "bitop" => &[&["OW", "update"], &["RO", "access"]],
        "bitpos" => &[&["RO", "access"]],
        "blmove" => &[&["RW", "access", "delete"], &["RW", "insert"]],
        "blmpop" => &[&["RW", "access", "delete"]],
        "blpop" => &[&["RW", "access", "delete"]],
        "brpop" => &[&["RW", "access", "delete"]],
        "brpoplpush" => &[&["RW", "access", "delete"], &["RW", "insert"]],
        "bzmpop" => &[&["RW", "access", "delete"]],
        "bzpopmax" => &[&["RW", "access", "delete"]],
        "bzpopmin" => &[&["RW", "access", "delete"]],
        "copy" => &[&["RO", "access"], &["OW", "update"]],
        "decr" => &[&["RW", "access", "update"]],
        "decrby" => &[&["RW", "access", "update"]],
        "del" => &[&["RM", "delete"]],
        "dump" => &[&["RO", "access"]],
        "eval" => &[&["RW", "access", "update"]],
        "eval_ro" => &[&["RO", "access"]],
        "evalsha" => &[&["RW", "access", "update"]],
        "evalsha_ro" => &[&["RO", "access"]],
        "exists" => &[&["RO"]],
        "expire" => &[&["RW", "update"]],
        "expireat" => &[&["RW", "update"]],
        "expiretime" => &[&["RO", "access"]],
        "fcall" => &[&["RW", "access", "update"]],
        "fcall_ro" => &[&["RO", "access"]],
        "geoadd" => &[&["RW", "update"]],
        "geodist" => &[&["RO", "access"]],
        "geohash" => &[&["RO", "access"]],
        "geopos" => &[&["RO", "access"]],
        "georadius" => &[&["RO", "access"], &["OW", "update"], &["OW", "update"]],
        "georadius_ro" => &[&["RO", "access"]],
        "georadiusbymember" => &[&["RO", "access"], &["OW", "update"], &["OW", "update"]],
        "georadiusbymember_ro" => &[&["RO", "access"]],
        "geosearch" => &[&["RO", "access"]],
        "geosearchstore" => &[&["OW", "update"], &["RO", "access"]],
        "get" => &[&["RO", "access"]],
        "getbit" => &[&["RO", "access"]],
        "getdel" => &[&["RW", "access", "delete"]],
        "getex" => &[&["RW", "access", "update"]],
        "getrange" => &[&["RO", "access"]],
        "getset" => &[&["RW", "access", "update"]],
        "hdel" => &[&["RW", "delete"]],
        "hexists" => &[&["RO"]],
        "hget" => &[&["RO", "access"]],
        "hgetall" => &[&["RO", "access"]],
        "hincrby" => &[&["RW", "access", "update"]],
        "hincrbyfloat" => &[&["RW", "access", "update"]],
        "hkeys" => &[&["RO", "access"]],
        "hlen" => &[&["RO"]],
        "hmget" => &[&["RO", "access"]],
        "hmset" => &[&["RW", "update"]],
        "hrandfield" => &[&["RO", "access"]],
        "hscan" => &[&["RO", "access"]],
        "hset" => &[&["RW", "update"]],
        "hsetnx" => &[&["RW", "insert"]],
        "hstrlen" => &[&["RO"]],
        "hvals" => &[&["RO", "access"]],
        "incr" => &[&["RW", "access", "update"]],
        "incrby" => &[&["RW", "access", "update"]],
        "incrbyfloat" => &[&["RW", "access", "update"]],
        "lcs" => &[&["RO", "access"]],
        "lindex" => &[&["RO", "access"]],
        "linsert" => &[&["RW", "insert"]],
        "llen" => &[&["RO"]],
        "lmove" => &[&["RW", "access", "delete"], &["RW", "insert"]],
        "lmpop" => &[&["RW", "access", "delete"]],
        "lpop" => &[&["RW", "access", "delete"]],
        "lpos" => &[&["RO", "access"]],
        "lpush" => &[&["RW", "insert"]],
        "lpushx" => &[&["RW", "insert"]],
        "lrange" => &[&["RO", "access"]],
        "lrem" => &[&["RW", "delete"]],
        "lset" => &[&["RW", "update"]],
        "ltrim" => &[&["RW", "delete"]],
        "memory|usage" => &[&["RO"]],
        "mget" => &[&["RO", "access"]],
        "migrate" => &[&["RW", "access", "delete"], &["RW", "access", "delete", "incomplete"]],
        "move" => &[&["RW", "access", "update"]],
        "mset" => &[&["OW", "update"]],
        "msetnx" => &[&["OW", "insert"]],
        "object|encoding" => &[&["RO"]],
        "object|freq" => &[&["RO"]],
        "object|idletime" => &[&["RO"]],
        "object|refcount" => &[&["RO"]],
        "persist" => &[&["RW", "update"]],
        "pexpire" => &[&["RW", "update"]],
        "pexpireat" => &[&["RW", "update"]],
        "pexpiretime" => &[&["RO", "access"]],
        "pfadd" => &[&["RW", "insert"]],
        "pfcount" => &[&["RW", "access"]],
        "pfdebug" => &[&["RW", "access"]],
        "pfmerge" => &[&["RW", "access", "insert"], &["RO", "access"]],
        "psetex" => &[&["OW", "update"]],
        "pttl" => &[&["RO", "access"]],
        "rename" => &[&["RW", "access", "delete"], &["OW", "update"]],
        "renamenx" => &[&["RW", "access", "delete"], &["OW", "insert"]],
        "restore" => &[&["OW", "update"]],
        "restore-asking" => &[&["OW", "update"]],
        "rpop" => &[&["RW", "access", "delete"]],
        "rpoplpush" => &[&["RW", "access", "delete"], &["RW", "insert"]],
        "rpush" => &[&["RW", "insert"]],
        "rpushx" => &[&["RW", "insert"]],
        "sadd" => &[&["RW", "insert"]],
        "scard" => &[&["RO"]],
        "sdiff" => &[&["RO", "access"]],
        "sdiffstore" => &[&["OW", "update"], &["RO", "access"]],
        "set" => &[&["RW", "access", "update", "variable_flags"]],
        "setbit" => &[&["RW", "access", "update"]],
        "setex" => &[&["OW", "update"]],
        "setnx" => &[&["OW", "insert"]],
        "setrange" => &[&["RW", "update"]],
        "sinter" => &[&["RO", "access"]],
        "sintercard" => &[&["RO", "access"]],
        "sinterstore" => &[&["RW", "update"], &["RO", "access"]],
        "sismember" => &[&["RO"]],
        "smembers" => &[&["RO", "access"]],
        "smismember" => &[&["RO", "access"]],
        "smove" => &[&["RW", "access", "delete"], &["RW", "insert"]],
        "sort" => &[&["RO", "access"], &["RO", "access"], &["OW", "update"]],
        "sort_ro" => &[&["RO", "access"], &["RO", "access"]],
        "spop" => &[&["RW", "access", "delete"]],
        "spublish" => &[&["not_key"]],
        "srandmember" => &[&["RO", "access"]],
        "srem" => &[&["RW", "delete"]],
        "sscan" => &[&["RO", "access"]],
        "ssubscribe" => &[&["not_key"]],
        "strlen" => &[&["RO"]],
        "substr" => &[&["RO", "access"]],
        "sunion" => &[&["RO", "access"]],
        "sunionstore" => &[&["OW", "update"], &["RO", "access"]],
        "sunsubscribe" => &[&["not_key"]],
        "touch" => &[&["RO"]],
        "ttl" => &[&["RO", "access"]],
        "type" => &[&["RO"]],
        "unlink" => &[&["RM", "delete"]],
        "watch" => &[&["RO"]],
        "xack" => &[&["RW", "update"]],
        "xadd" => &[&["RW", "update"]],
        "xautoclaim" => &[&["RW", "delete"]],
        "xclaim" => &[&["RW", "update"]],
        "xdel" => &[&["RW", "delete"]],
        "xgroup|create" => &[&["RW", "insert"]],
        "xgroup|createconsumer" => &[&["RW", "insert"]],
        "xgroup|delconsumer" => &[&["RW", "delete"]],
        "xgroup|destroy" => &[&["RW", "delete"]],
        "xgroup|setid" => &[&["RW", "update"]],
        "xinfo|consumers" => &[&["RO", "access"]],
        "xinfo|groups" => &[&["RO", "access"]],
        "xinfo|stream" => &[&["RO", "access"]],
        "xlen" => &[&["RO"]],
        "xpending" => &[&["RO", "access"]],
        "xrange" => &[&["RO", "access"]],
        "xread" => &[&["RO", "access"]],
        "xreadgroup" => &[&["RO", "access"]],
        "xrevrange" => &[&["RO", "access"]],
        "xsetid" => &[&["RW", "update"]],
        "xtrim" => &[&["RW", "delete"]],
        "zadd" => &[&["RW", "update"]],
        "zcard" => &[&["RO"]],
        "zcount" => &[&["RO", "access"]],
        "zdiff" => &[&["RO", "access"]],
        "zdiffstore" => &[&["OW", "update"], &["RO", "access"]],
        "zincrby" => &[&["RW", "access", "update"]],
        "zinter" => &[&["RO", "access"]],
        "zintercard" => &[&["RO", "access"]],
        "zinterstore" => &[&["OW", "update"], &["RO", "access"]],
        "zlexcount" => &[&["RO", "access"]],
        "zmpop" => &[&["RW", "access", "delete"]],
        "zmscore" => &[&["RO", "access"]],
        "zpopmax" => &[&["RW", "access", "delete"]],
        "zpopmin" => &[&["RW", "access", "delete"]],
        "zrandmember" => &[&["RO", "access"]],
        "zrange" => &[&["RO", "access"]],
        "zrangebylex" => &[&["RO", "access"]],
        "zrangebyscore" => &[&["RO", "access"]],
        "zrangestore" => &[&["OW", "update"], &["RO", "access"]],
        "zrank" => &[&["RO", "access"]],
        "zrem" => &[&["RW", "delete"]],
        "zremrangebylex" => &[&["RW", "delete"]],
        "zremrangebyrank" => &[&["RW", "delete"]],
        "zremrangebyscore" => &[&["RW", "delete"]],
        "zrevrange" => &[&["RO", "access"]],
        "zrevrangebylex" => &[&["RO", "access"]],
        "zrevrangebyscore" => &[&["RO", "access"]],
        "zrevrank" => &[&["RO", "access"]],
        "zscan" => &[&["RO", "access"]],
        "zscore" => &[&["RO", "access"]],
        "zunion" => &[&["RO", "access"]],
        "zunionstore" => &[&["OW", "update"], &["RO", "access"]],
        _ => &[],
    }
}

/// The flags of the `n`-th key [`crate::table::CommandSpec::key_indexes`] finds in `args`
/// (COMMAND GETKEYSANDFLAGS, and the ACL's read/write key permissions): those of the
/// command's n-th key spec (the last for keys past them), or what Redis' own key finders
/// work out from the arguments for the commands whose flags depend on them.
pub fn flags_of_key(name: &str, args: &carmine_resp::Args, n: usize) -> &'static [&'static str] {
    match name {
        // Redis looks for GET only past the value (`SET get x` names the key "get").
        "set" if args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"GET")) => {
            &["RW", "access", "update"]
        }
        "set" => &["OW", "update"],
        "bitfield" if bitfield_only_reads(args) => &["RO", "access"],
        "bitfield" => &["RW", "access", "update"],
        "sort" | "sort_ro" if n > 0 => &["OW", "update"],
        "sort" | "sort_ro" => &["RO", "access"],
        "migrate" => &["RW", "access", "delete"],
        _ => {
            let specs = key_spec_flags(name);
            specs
                .get(n.min(specs.len().saturating_sub(1)))
                .copied()
                .unwrap_or(&[])
        }
    }
}

/// BITFIELD only reads when every operation is a complete GET (or OVERFLOW); anything
/// else, a malformed tail included, counts as a write, as in Redis.
fn bitfield_only_reads(args: &carmine_resp::Args) -> bool {
    let mut i = 2;
    while i < args.len() {
        let left = args.len() - i - 1;
        let word = args.get(i).unwrap_or_default();
        if word.eq_ignore_ascii_case(b"GET") && left >= 2 {
            i += 3;
        } else if word.eq_ignore_ascii_case(b"OVERFLOW") && left >= 1 {
            i += 2;
        } else {
            return false;
        }
    }
    true
}

/// ACL permission bits: what a key pattern grants (`%R~`, `%W~`, `~` = both) and what
/// a key's flags need (`access` needs read; `insert`, `delete` and `update` need write;
/// a key with neither, such as EXISTS', needs only to match a pattern).
pub const ACL_READ: u8 = 1;
pub const ACL_WRITE: u8 = 2;
pub const ACL_ALL: u8 = ACL_READ | ACL_WRITE;

pub fn acl_permissions_needed(flags: &[&str]) -> u8 {
    flags.iter().fold(0, |need, f| match *f {
        "access" => need | ACL_READ,
        "insert" | "delete" | "update" => need | ACL_WRITE,
        _ => need,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_spec_flags_match_redis_7_0() {
        let lmove: &[&[&str]] = &[&["RW", "access", "delete"], &["RW", "insert"]];
        assert_eq!(key_spec_flags("lmove"), lmove);
        // SORT's three key specs: the sorted key, BY/GET patterns (unknown), STORE (unknown).
        let sort: &[&[&str]] = &[&["RO", "access"], &["RO", "access"], &["OW", "update"]];
        assert_eq!(key_spec_flags("sort"), sort);
        let get: &[&[&str]] = &[&["RO", "access"]];
        assert_eq!(key_spec_flags("get"), get);
        let set: &[&[&str]] = &[&["RW", "access", "update", "variable_flags"]];
        assert_eq!(key_spec_flags("set"), set);
        assert!(key_spec_flags("no-such-command").is_empty());
        assert!(key_spec_flags("ping").is_empty());
    }

    fn args(words: &[&str]) -> carmine_resp::Args {
        let parts: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        carmine_resp::Args::from_slices(&parts)
    }

    #[test]
    fn set_and_bitfield_flags_follow_their_arguments() {
        let rw: &[&str] = &["RW", "access", "update"];
        let ow: &[&str] = &["OW", "update"];
        let ro: &[&str] = &["RO", "access"];
        assert_eq!(flags_of_key("set", &args(&["set", "k", "v", "GET"]), 0), rw);
        assert_eq!(
            flags_of_key("set", &args(&["set", "k", "v", "ex", "get"]), 0),
            rw
        );
        // A key or value spelled "get" is not the GET option.
        assert_eq!(flags_of_key("set", &args(&["set", "get", "v"]), 0), ow);
        assert_eq!(flags_of_key("set", &args(&["set", "k", "get"]), 0), ow);
        let bf = |w: &[&str]| flags_of_key("bitfield", &args(w), 0);
        assert_eq!(bf(&["bitfield", "k", "get", "u4", "0"]), ro);
        assert_eq!(
            bf(&["bitfield", "k", "overflow", "sat", "get", "u4", "0"]),
            ro
        );
        assert_eq!(
            bf(&["bitfield", "k", "get", "u4", "0", "set", "u4", "0", "1"]),
            rw
        );
        assert_eq!(bf(&["bitfield", "k", "incrby", "u4", "0", "1"]), rw);
        // A truncated GET is a syntax error: assumed to write.
        assert_eq!(bf(&["bitfield", "k", "get", "u4"]), rw);
        assert_eq!(acl_permissions_needed(rw), ACL_ALL);
        assert_eq!(acl_permissions_needed(ow), ACL_WRITE);
        assert_eq!(acl_permissions_needed(ro), ACL_READ);
        assert_eq!(acl_permissions_needed(&["RO"]), 0);
    }
}
