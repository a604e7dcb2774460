//! The command table: what COMMAND INFO reports, and what the dispatcher needs to lock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use carmine_resp::Args;

use crate::Ctx;

/// A command implementation. It reads its arguments from `ctx.args`, works through the
/// tables the dispatcher locked in `ctx.l`, and writes exactly one reply to `ctx.reply`.
pub type Handler = fn(&mut Ctx<'_, '_>);

/// Command flags (the names COMMAND INFO prints are in [`FLAG_NAMES`]).
pub mod flags {
    pub const WRITE: u32 = 1;
    pub const READONLY: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const FAST: u32 = 1 << 9;
    pub const NO_AUTH: u32 = 1 << 10;
    pub const MOVABLEKEYS: u32 = 1 << 11;
    /// Reads, but may put something in the replication stream (PFCOUNT's cache,
    /// PUBLISH in a cluster): a write pause holds it too.
    pub const MAY_REPLICATE: u32 = 1 << 12;
    /// Not queued inside MULTI (MULTI, EXEC, DISCARD, WATCH, UNWATCH, QUIT, RESET).
    pub const NO_QUEUE: u32 = 1 << 20;
    /// Walks every table of a database (KEYS, SCAN, DBSIZE ...): inside MULTI it makes
    /// EXEC run exclusively, since it cannot take table locks out of order.
    pub const WALKS: u32 = 1 << 21;
    /// Changes whole databases (FLUSHALL, SWAPDB): runs with the world stopped.
    pub const EXCLUSIVE: u32 = 1 << 22;
    /// Writes one reply per argument (SUBSCRIBE and its kin), at least one: every other
    /// command writes exactly one (none while it blocks), which the dispatcher checks.
    pub const REPLY_PER_ARG: u32 = 1 << 23;
    /// May touch keys it does not name (SCAN, KEYS, RANDOMKEY: the lazy expiry of what
    /// they walk): its effects are not wrapped in MULTI/EXEC, as Redis 7.0 does not.
    pub const TOUCHES_ARBITRARY_KEYS: u32 = 1 << 24;
    /// Refused inside MULTI (SAVE, SHUTDOWN, SYNC, PSYNC), which it aborts.
    pub const NO_MULTI: u32 = 1 << 25;
    /// Refused with -LOADING while a replica loads its master's dataset beside the old
    /// one (`async_loading`: REPLICAOF, SAVE, SYNC ...), as in Redis.
    pub const NO_ASYNC_LOADING: u32 = 1 << 26;
}

pub const FLAG_NAMES: &[(u32, &str)] = &[
    (flags::WRITE, "write"),
    (flags::READONLY, "readonly"),
    (flags::DENYOOM, "denyoom"),
    (flags::ADMIN, "admin"),
    (flags::PUBSUB, "pubsub"),
    (flags::NOSCRIPT, "noscript"),
    (flags::BLOCKING, "blocking"),
    (flags::LOADING, "loading"),
    (flags::STALE, "stale"),
    (flags::FAST, "fast"),
    (flags::NO_AUTH, "no_auth"),
    (flags::MOVABLEKEYS, "movablekeys"),
    (flags::MAY_REPLICATE, "may_replicate"),
    (flags::NO_ASYNC_LOADING, "no_async_loading"),
    (flags::NO_MULTI, "no_multi"),
];

/// Where a command's keys are.
#[derive(Clone, Copy)]
pub enum KeySpec {
    None,
    /// COMMAND INFO's first/last/step (last negative counts from the end).
    Range {
        first: i32,
        last: i32,
        step: i32,
    },
    /// Keys found by looking at the arguments (subcommands, numkeys ...).
    Custom(fn(&Args, &mut Vec<usize>)),
}

#[derive(Clone)]
pub struct CommandSpec {
    /// Lower-case name; container subcommands are `parent|sub` in COMMAND output.
    pub name: &'static str,
    /// Positive: exact argument count; negative: at least that many.
    pub arity: i32,
    pub flags: u32,
    pub keys: KeySpec,
    /// For commands that also touch another database (MOVE, COPY ... DB n).
    pub other_db: Option<fn(&Args) -> Option<usize>>,
    pub handler: Handler,
    pub group: &'static str,
    pub summary: &'static str,
    pub since: &'static str,
    pub acl: &'static str,
    /// `acl` as bits of [`ACL_CATEGORIES`].
    pub acl_bits: u32,
    /// Subcommand names, for COMMAND INFO of container commands.
    pub subcommands: &'static [&'static str],
    /// For commands that read keys they cannot declare when some arguments are given
    /// (SORT's BY and GET patterns): true when these arguments need the world stopped.
    pub world_when: Option<fn(&Args) -> bool>,
    /// For a container whose subcommands differ: true when these arguments name one that
    /// is refused under OOM (Redis flags XGROUP CREATE, not XGROUP DESTROY).
    pub denyoom_when: Option<fn(&Args) -> bool>,
}

impl CommandSpec {
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Whether this call runs with the world stopped: the command always does
    /// (EXCLUSIVE), or these arguments make it read undeclared keys.
    pub fn needs_world(&self, args: &Args) -> bool {
        self.has(flags::EXCLUSIVE) || self.world_when.is_some_and(|f| f(args))
    }

    /// Whether this call is refused under OOM: the command is DENYOOM, or these arguments
    /// name a subcommand that is.
    pub fn denies_oom(&self, args: &Args) -> bool {
        self.has(flags::DENYOOM) || self.denyoom_when.is_some_and(|f| f(args))
    }

    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        (a >= 0 && argc == a as usize) || (a < 0 && argc >= (-a) as usize)
    }

    /// Appends the indexes of the key arguments in `args` to `out`.
    pub fn key_indexes(&self, args: &Args, out: &mut Vec<usize>) {
        match self.keys {
            KeySpec::None => {}
            KeySpec::Range { first, last, step } => {
                let argc = args.len() as i32;
                let last = if last < 0 { argc + last } else { last };
                let mut i = first;
                while i <= last && i < argc && step > 0 {
                    out.push(i as usize);
                    i += step;
                }
            }
            KeySpec::Custom(f) => f(args, out),
        }
    }

    /// (first, last, step) as COMMAND INFO reports them.
    pub fn key_range(&self) -> (i32, i32, i32) {
        match self.keys {
            KeySpec::None => (0, 0, 0),
            KeySpec::Range { first, last, step } => (first, last, step),
            KeySpec::Custom(_) => (0, 0, 0),
        }
    }
}

/// FNV-1a: command names are short, so a simple hash beats SipHash on the hot path.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf29ce484222325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        self.0 = h;
    }
}

pub struct CommandTable {
    specs: Vec<CommandSpec>,
    by_name: HashMap<&'static [u8], usize, BuildHasherDefault<Fnv>>,
}

impl CommandTable {
    pub fn new(specs: Vec<CommandSpec>) -> CommandTable {
        let by_name = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_bytes(), i))
            .collect();
        CommandTable { specs, by_name }
    }

    /// Adds commands that need the server's machinery (replication, later Cluster and
    /// Sentinel); the commands crate cannot name them. A name already present is replaced.
    pub fn extend(self, extra: Vec<CommandSpec>) -> CommandTable {
        let mut specs = self.specs;
        for spec in extra {
            match specs.iter_mut().find(|s| s.name == spec.name) {
                Some(old) => *old = spec,
                None => specs.push(spec),
            }
        }
        CommandTable::new(specs)
    }

    /// Case-insensitive lookup without allocating.
    pub fn lookup(&self, name: &[u8]) -> Option<usize> {
        let mut buf = [0u8; 32];
        if name.len() > buf.len() {
            return None;
        }
        for (d, s) in buf.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        self.by_name.get(&buf[..name.len()]).copied()
    }

    /// As [`CommandTable::lookup`], answering from `memo` when `name` is, byte for byte,
    /// the name it found last: a pipeline repeats its command, and lowering, hashing and
    /// comparing the name was 2.6% of a loop serving pipelined INCRs.
    #[inline]
    pub fn lookup_remembered(&self, name: &[u8], memo: &mut CommandMemo) -> Option<usize> {
        if memo.names(name) {
            return Some(memo.idx);
        }
        let idx = self.lookup(name)?;
        if name.len() <= CommandMemo::NAME_MAX {
            memo.name[..name.len()].copy_from_slice(name);
            memo.len = name.len() as u8;
            memo.idx = idx;
        }
        Some(idx)
    }

    /// As [`CommandTable::lookup_remembered`] with several names remembered in `memos`
    /// (a script's calls go round a few commands, which one memo would miss each time);
    /// `last` is left remembering `name`, as [`CommandTable::lookup_remembered`] leaves it.
    pub fn lookup_remembered_among(
        &self,
        name: &[u8],
        memos: &mut CommandMemos,
        last: &mut CommandMemo,
    ) -> Option<usize> {
        if let Some(memo) = memos.entries.iter().find(|m| m.names(name)) {
            last.clone_from(memo);
            return Some(memo.idx);
        }
        let idx = self.lookup_remembered(name, last)?;
        if last.names(name) {
            let at = memos.next % memos.entries.len();
            memos.entries[at].clone_from(last);
            memos.next = at + 1;
        }
        Some(idx)
    }

    pub fn get(&self, i: usize) -> Option<&CommandSpec> {
        self.specs.get(i)
    }

    pub fn all(&self) -> &[CommandSpec] {
        &self.specs
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

/// The command a connection named last, as it spelled it (see
/// [`CommandTable::lookup_remembered`]). The table does not change once the server runs,
/// so an index found stays right.
#[derive(Clone, Debug)]
pub struct CommandMemo {
    /// `u8::MAX`: nothing remembered.
    len: u8,
    name: [u8; CommandMemo::NAME_MAX],
    idx: usize,
}

impl CommandMemo {
    const NAME_MAX: usize = 16;

    /// It remembers `name`, byte for byte. `len` reads u8::MAX when nothing is
    /// remembered, a length a client's name can have too: only names that fit are
    /// compared (a 255-byte name indexed past the array and took the server down).
    fn names(&self, name: &[u8]) -> bool {
        usize::from(self.len) == name.len()
            && self.name.get(..name.len()).is_some_and(|kept| kept == name)
    }
}

/// A few [`CommandMemo`]s, the oldest replaced first.
#[derive(Clone, Debug, Default)]
pub struct CommandMemos {
    entries: [CommandMemo; 4],
    next: usize,
}

impl Default for CommandMemo {
    fn default() -> Self {
        CommandMemo {
            len: u8::MAX,
            name: [0; CommandMemo::NAME_MAX],
            idx: 0,
        }
    }
}

/// Redis 7.0's ACL categories; bit `i` of [`CommandSpec::acl_bits`] is category `i`.
pub const ACL_CATEGORIES: &[&str] = &[
    "@keyspace",
    "@read",
    "@write",
    "@set",
    "@sortedset",
    "@list",
    "@hash",
    "@string",
    "@bitmap",
    "@hyperloglog",
    "@geo",
    "@stream",
    "@pubsub",
    "@admin",
    "@fast",
    "@slow",
    "@blocking",
    "@dangerous",
    "@connection",
    "@transaction",
    "@scripting",
];

/// The bit of a category in [`ACL_CATEGORIES`] (0 if it is not one of them).
pub fn acl_category_bit(category: &str) -> u32 {
    ACL_CATEGORIES
        .iter()
        .position(|c| *c == category)
        .map_or(0, |i| 1 << i)
}

/// The categories of a space-separated `@cat` list as bits, at compile time: the ACL
/// tests a command's categories before every command of a restricted user.
const fn acl_bits_of(acl: &str) -> u32 {
    let text = acl.as_bytes();
    let mut bits = 0;
    let mut start = 0;
    while start < text.len() {
        let mut end = start;
        while end < text.len() && text[end] != b' ' {
            end += 1;
        }
        let mut c = 0;
        while c < ACL_CATEGORIES.len() {
            let name = ACL_CATEGORIES[c].as_bytes();
            if name.len() == end - start {
                let mut i = 0;
                while i < name.len() && name[i] == text[start + i] {
                    i += 1;
                }
                if i == name.len() {
                    bits |= 1 << c;
                }
            }
            c += 1;
        }
        start = end + 1;
    }
    bits
}

/// Builds a spec; the family modules list their commands with it.
#[allow(clippy::too_many_arguments)]
pub const fn cmd(
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: KeySpec,
    handler: Handler,
    group: &'static str,
    acl: &'static str,
    summary: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
        other_db: None,
        handler,
        group,
        summary,
        since: "1.0.0",
        acl,
        acl_bits: acl_bits_of(acl),
        subcommands: &[],
        world_when: None,
        denyoom_when: None,
    }
}

/// Appends the key indexes of a `... numkeys key [key ...]` command: the count is argument
/// `count_at`, the keys follow it. A bad count yields no keys (the command then errors).
pub fn numkeys_keys(args: &Args, count_at: usize, out: &mut Vec<usize>) {
    let n = args
        .get(count_at)
        .and_then(carmine_resp::parse_i64)
        .filter(|n| *n > 0)
        .unwrap_or(0) as usize;
    let first = count_at + 1;
    out.extend(first..(first + n).min(args.len()));
}

pub const fn keys(first: i32, last: i32, step: i32) -> KeySpec {
    KeySpec::Range { first, last, step }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_among_several_memos_answers_as_a_fresh_one() {
        let table = crate::command_table();
        let mut memos = CommandMemos::default();
        let mut last = CommandMemo::default();
        // More names than memos, going round, in several spellings; unknown and
        // over-long names too.
        // 255 bytes: the length an empty memo's `len` reads as.
        let names: [&[u8]; 10] = [
            &[b'a'; 255],
            b"get",
            b"INCR",
            b"expire",
            b"GET",
            b"hset",
            b"lpush",
            b"nosuchcommand",
            b"client-no-evict-nonexistent-name",
            b"",
        ];
        for round in 0..5 {
            for name in names.iter().cycle().skip(round).take(names.len()) {
                let found = table.lookup_remembered_among(name, &mut memos, &mut last);
                assert_eq!(
                    found,
                    table.lookup(name),
                    "{:?}",
                    String::from_utf8_lossy(name)
                );
                if found.is_some() && name.len() <= CommandMemo::NAME_MAX {
                    // The session's own memo answers the dispatcher's lookup next.
                    assert!(last.names(name));
                }
            }
        }
    }

    #[test]
    fn a_remembered_lookup_answers_as_a_fresh_one() {
        let table = crate::command_table();
        let mut memo = CommandMemo::default();
        for name in [
            // Asked of an empty memo, whose `len` reads 255.
            &[b'a'; 255][..],
            &b"GET"[..],
            b"GET",
            b"get",
            b"Set",
            b"nosuchcommand",
            b"set",
            b"",
            b"a-command-name-longer-than-the-memo",
            b"INCR",
            b"incr",
        ] {
            assert_eq!(
                table.lookup_remembered(name, &mut memo),
                table.lookup(name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }
}
