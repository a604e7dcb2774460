//! Configuration: redis.conf syntax, `--name value` command-line options, CONFIG GET/SET.
//!
//! Every parameter has a spec (name, default, kind, whether CONFIG SET may change it). The
//! store keeps each value in its canonical text form (what CONFIG GET prints), and the
//! values read on hot paths are mirrored into [`Tunables`] atomics after each change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use carmine_keyspace::glob_match;
use carmine_resp::split_inline_args;
use parking_lot::RwLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    /// A byte count with optional unit (`1gb`, `512mb`, `100k`).
    Memory {
        max: u64,
    },
    /// A byte count, or a percentage of `maxmemory` written `N%` (maxmemory-clients).
    MemoryOrPercent,
    Enum(&'static [&'static str]),
    Str,
    /// `save` points: pairs of seconds and changes, or empty.
    Save,
    ClientOutputBufferLimit,
    /// A list of addresses (`bind`).
    List,
    /// `notify-keyspace-events` class letters, stored in Redis' canonical order.
    KeyspaceEvents,
}

/// How CONFIG GET shows a stored value.
fn display(spec: &ParamSpec, value: &str) -> String {
    match spec.kind {
        Kind::KeyspaceEvents => carmine_keyspace::notify::flags_to_string(
            carmine_keyspace::notify::parse_flags(value).unwrap_or(0),
        ),
        _ => value.to_string(),
    }
}

pub struct ParamSpec {
    pub name: &'static str,
    pub alias: Option<&'static str>,
    pub default: &'static str,
    pub kind: Kind,
    /// CONFIG SET may change it at run time.
    pub mutable: bool,
}

pub(crate) const fn p(
    name: &'static str,
    default: &'static str,
    kind: Kind,
    mutable: bool,
) -> ParamSpec {
    ParamSpec {
        name,
        alias: None,
        default,
        kind,
        mutable,
    }
}

const LOGLEVELS: &[&str] = &["debug", "verbose", "notice", "warning", "nothing"];
const APPENDFSYNC: &[&str] = &["always", "everysec", "no"];
const POLICIES: &[&str] = &[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];
const GB: u64 = 1024 * 1024 * 1024;

/// Every parameter Carmine knows. Parameters that exist for redis.conf compatibility but
/// whose feature is not built yet are marked so in README's known gaps.
pub static PARAMS: &[ParamSpec] = &[
    p("port", "6379", Kind::Int { min: 0, max: 65535 }, true),
    p("bind", "* -::*", Kind::List, true),
    // A Unix domain socket to listen on too, and its permissions (octal; 0 leaves them).
    p("unixsocket", "", Kind::Str, false),
    p("unixsocketperm", "0", Kind::Str, false),
    p("protected-mode", "yes", Kind::Bool, true),
    p("daemonize", "no", Kind::Bool, false),
    // Read by the crash handlers (crates/server/src/crash.rs): CRASH_LOG_ENABLED.
    p("crash-log-enabled", "yes", Kind::Bool, true),
    p("pidfile", "", Kind::Str, false),
    p("logfile", "", Kind::Str, false),
    p("loglevel", "notice", Kind::Enum(LOGLEVELS), true),
    p("dir", "", Kind::Str, true),
    p(
        "databases",
        "16",
        Kind::Int {
            min: 1,
            max: 1 << 16,
        },
        false,
    ),
    p("requirepass", "", Kind::Str, true),
    p(
        "timeout",
        "0",
        Kind::Int {
            min: 0,
            max: i32::MAX as i64,
        },
        true,
    ),
    p(
        "tcp-keepalive",
        "300",
        Kind::Int {
            min: 0,
            max: i32::MAX as i64,
        },
        true,
    ),
    p(
        "tcp-backlog",
        "511",
        Kind::Int {
            min: 0,
            max: i32::MAX as i64,
        },
        false,
    ),
    p(
        "maxclients",
        "10000",
        Kind::Int {
            min: 1,
            max: i32::MAX as i64,
        },
        true,
    ),
    p("hz", "10", Kind::Int { min: 1, max: 500 }, true),
    p("io-threads", "0", Kind::Int { min: 0, max: 128 }, false),
    // Carmine's own: how long (microseconds) a busy event loop polls before it sleeps
    // (0: never); see carmine-server's idle_poll module.
    p(
        "busy-poll-us",
        "50",
        Kind::Int {
            min: 0,
            max: 10_000,
        },
        true,
    ),
    p(
        "proto-max-bulk-len",
        "536870912",
        Kind::Memory {
            max: i64::MAX as u64,
        },
        true,
    ),
    p(
        "client-query-buffer-limit",
        "1073741824",
        Kind::Memory {
            max: i64::MAX as u64,
        },
        true,
    ),
    p(
        "client-output-buffer-limit",
        "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
        Kind::ClientOutputBufferLimit,
        true,
    ),
    // RDB persistence: see carmine-server's persistence module.
    p("save", "3600 1 300 100 60 10000", Kind::Save, true),
    // `host port`: the server starts as a replica of it (REPLICAOF at run time).
    ParamSpec {
        alias: Some("slaveof"),
        ..p("replicaof", "", Kind::List, false)
    },
    p("dbfilename", "dump.rdb", Kind::Str, true),
    p("rdbcompression", "yes", Kind::Bool, true),
    p("rdbchecksum", "yes", Kind::Bool, true),
    p("rdb-save-incremental-fsync", "yes", Kind::Bool, true),
    p("stop-writes-on-bgsave-error", "yes", Kind::Bool, true),
    // The append-only file: see carmine-server's aof module.
    p("appendonly", "no", Kind::Bool, true),
    p("appendfsync", "everysec", Kind::Enum(APPENDFSYNC), true),
    p("appenddirname", "appendonlydir", Kind::Str, false),
    p("appendfilename", "appendonly.aof", Kind::Str, false),
    p("aof-disable-auto-gc", "no", Kind::Bool, true),
    p("aof-load-truncated", "yes", Kind::Bool, true),
    p("aof-rewrite-incremental-fsync", "yes", Kind::Bool, true),
    p("aof-timestamp-enabled", "no", Kind::Bool, true),
    p("aof-use-rdb-preamble", "yes", Kind::Bool, true),
    p("no-appendfsync-on-rewrite", "no", Kind::Bool, true),
    p(
        "auto-aof-rewrite-min-size",
        "67108864",
        Kind::Memory {
            max: i64::MAX as u64,
        },
        true,
    ),
    p(
        "auto-aof-rewrite-percentage",
        "100",
        Kind::Int {
            min: 0,
            max: i32::MAX as i64,
        },
        true,
    ),
    p("maxmemory", "0", Kind::Memory { max: u64::MAX }, true),
    p("maxmemory-policy", "noeviction", Kind::Enum(POLICIES), true),
    p("notify-keyspace-events", "", Kind::KeyspaceEvents, true),
    p(
        "hll-sparse-max-bytes",
        "3000",
        Kind::Memory {
            max: i64::MAX as u64,
        },
        true,
    ),
    p(
        "maxmemory-samples",
        "5",
        Kind::Int { min: 1, max: 64 },
        true,
    ),
    p(
        "active-expire-effort",
        "1",
        Kind::Int { min: 1, max: 10 },
        true,
    ),
    ParamSpec {
        alias: Some("hash-max-ziplist-entries"),
        ..p(
            "hash-max-listpack-entries",
            "128",
            Kind::Int {
                min: 0,
                max: i64::MAX,
            },
            true,
        )
    },
    ParamSpec {
        alias: Some("hash-max-ziplist-value"),
        ..p(
            "hash-max-listpack-value",
            "64",
            Kind::Int {
                min: 0,
                max: i64::MAX,
            },
            true,
        )
    },
    ParamSpec {
        alias: Some("list-max-ziplist-size"),
        ..p(
            "list-max-listpack-size",
            "-2",
            Kind::Int {
                min: i32::MIN as i64,
                max: i32::MAX as i64,
            },
            true,
        )
    },
    p(
        "set-max-intset-entries",
        "512",
        Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        true,
    ),
    p(
        "set-max-listpack-entries",
        "128",
        Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        true,
    ),
    p(
        "set-max-listpack-value",
        "64",
        Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        true,
    ),
    p(
        "lfu-log-factor",
        "10",
        Kind::Int {
            min: 0,
            max: i32::MAX as i64,
        },
        true,
    ),
    p(
        "lfu-decay-time",
        "1",
        Kind::Int {
            min: 0,
            max: i32::MAX as i64,
        },
        true,
    ),
    ParamSpec {
        alias: Some("zset-max-ziplist-entries"),
        ..p(
            "zset-max-listpack-entries",
            "128",
            Kind::Int {
                min: 0,
                max: i64::MAX,
            },
            true,
        )
    },
    ParamSpec {
        alias: Some("zset-max-ziplist-value"),
        ..p(
            "zset-max-listpack-value",
            "64",
            Kind::Int {
                min: 0,
                max: i64::MAX,
            },
            true,
        )
    },
    // ACL (acl.rs, acl_log.rs).
    p(
        "acl-pubsub-default",
        "resetchannels",
        Kind::Enum(&["allchannels", "resetchannels"]),
        true,
    ),
    p("aclfile", "", Kind::Str, false),
    p(
        "acllog-max-len",
        "128",
        Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        true,
    ),
];

/// Every parameter: those Carmine acts on, then those it only accepts.
fn all_params() -> impl Iterator<Item = &'static ParamSpec> {
    PARAMS
        .iter()
        .chain(crate::config_compat::INERT_PARAMS.iter())
}

fn spec(name: &str) -> Option<&'static ParamSpec> {
    let lower = name.to_ascii_lowercase();
    all_params().find(|s| s.name == lower || s.alias == Some(lower.as_str()))
}

/// The parameter's own name, whichever of its names (or legacy alias) is given.
pub fn canonical_name(name: &str) -> String {
    spec(name).map_or_else(|| name.to_ascii_lowercase(), |s| s.name.to_string())
}

/// Parses `1gb`, `512mb`, `100k`, `42` as Redis' memtoull does (k = 1000, kb = 1024).
pub fn parse_memory(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let mul = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => GB,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// Output buffer limits of one client class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObufLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_secs: u64,
}

/// Client classes for output buffer limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientClass {
    Normal = 0,
    Replica = 1,
    Pubsub = 2,
}

fn parse_obuf(value: &str, base: &[ObufLimit; 3]) -> Result<[ObufLimit; 3], String> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    if !parts.len().is_multiple_of(4) || parts.is_empty() {
        return Err("Wrong number of arguments in buffer limit configuration.".into());
    }
    let mut out = *base;
    for chunk in parts.chunks(4) {
        let class = match chunk[0].to_ascii_lowercase().as_str() {
            "normal" => 0,
            "replica" | "slave" => 1,
            "pubsub" => 2,
            _ => {
                return Err("Invalid client class specified in buffer limit configuration.".into())
            }
        };
        let hard = parse_memory(chunk[1]);
        let soft = parse_memory(chunk[2]);
        let secs = chunk[3].parse::<u64>().ok();
        match (hard, soft, secs) {
            (Some(hard), Some(soft), Some(soft_secs)) => {
                out[class] = ObufLimit {
                    hard,
                    soft,
                    soft_secs,
                }
            }
            _ => {
                return Err(
                    "Error in hard, soft or soft_seconds setting in buffer limit configuration."
                        .into(),
                )
            }
        }
    }
    Ok(out)
}

fn format_obuf(l: &[ObufLimit; 3]) -> String {
    format!(
        "normal {} {} {} slave {} {} {} pubsub {} {} {}",
        l[0].hard,
        l[0].soft,
        l[0].soft_secs,
        l[1].hard,
        l[1].soft,
        l[1].soft_secs,
        l[2].hard,
        l[2].soft,
        l[2].soft_secs
    )
}

/// Parameters CONFIG GET lists only when asked by their exact name, as Redis hides them.
const HIDDEN: &[&str] = &[
    "use-exit-on-panic",
    "rdb-key-save-delay",
    "key-load-delay",
    "watchdog-period",
    "loading-process-events-interval-bytes",
];

/// `crash-log-enabled`, for the crash handlers of the server (a fatal signal's bug
/// report, a panic's stack trace), which cannot reach a [`Config`]: a process has one
/// set of signal handlers, so this is the process' setting, written by whichever
/// configuration changed last.
pub static CRASH_LOG_ENABLED: AtomicBool = AtomicBool::new(true);

/// Values read on hot paths, mirrored from the text store.
#[derive(Default)]
pub struct Tunables {
    pub requirepass: RwLock<Option<Vec<u8>>>,
    pub has_password: AtomicBool,
    pub timeout_secs: AtomicU64,
    pub maxclients: AtomicU64,
    pub hz: AtomicU64,
    pub proto_max_bulk_len: AtomicU64,
    pub client_query_buffer_limit: AtomicU64,
    pub obuf: RwLock<[ObufLimit; 3]>,
    pub protected_mode: AtomicBool,
    pub maxmemory: AtomicU64,
    pub hll_sparse_max_bytes: AtomicU64,
    /// `aof-timestamp-enabled`, read on every AOF write.
    pub aof_timestamps: AtomicBool,
    /// `appendfsync`: 0 always, 1 everysec, 2 no (read before each loop's replies).
    pub appendfsync: std::sync::atomic::AtomicU8,
    /// `slowlog-log-slower-than` (microseconds; negative: off) and `slowlog-max-len`.
    pub slowlog_slower_than: std::sync::atomic::AtomicI64,
    pub slowlog_max_len: AtomicU64,
    /// `latency-monitor-threshold` (ms; 0: the monitor is off) and `latency-tracking`.
    pub latency_monitor_threshold: AtomicU64,
    pub latency_tracking: AtomicBool,
    /// `tracking-table-max-keys`, checked before each command while tracking is on.
    pub tracking_table_max_keys: AtomicU64,
    /// `busy-reply-threshold` (ms), read as each script starts.
    pub busy_reply_threshold_ms: AtomicU64,
    /// `busy-poll-us`, read by each event loop before it sleeps.
    pub busy_poll_us: AtomicU64,
}

/// The live configuration.
pub struct Config {
    values: RwLock<BTreeMap<&'static str, String>>,
    pub tunables: Tunables,
    /// Path of the config file the server started with (CONFIG REWRITE target).
    pub file: RwLock<Option<String>>,
    /// Whether a `save` line was loaded yet: the first replaces the default, later ones add.
    save_seen: AtomicBool,
    /// Running as a Sentinel (`--sentinel`): `sentinel ...` directives are accepted.
    pub sentinel_mode: AtomicBool,
    /// The `sentinel ...` directives read (without the leading word), in file order,
    /// for the sentinel to apply.
    pub sentinel_directives: parking_lot::Mutex<Vec<Vec<String>>>,
    /// `user <name> <rules...>` lines, with their line numbers, in order (the ACL users
    /// the server starts with; see `acl::load_at_startup`).
    pub user_lines: parking_lot::Mutex<Vec<(usize, Vec<String>)>>,
}

/// A config-file error: the line number (1-based), the line, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "\n*** FATAL CONFIG FILE ERROR (Carmine {}) ***\nReading the configuration file, at line {}\n>>> '{}'\n{}",
            env!("CARGO_PKG_VERSION"),
            self.line,
            self.text,
            self.reason
        )
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    pub fn new() -> Config {
        let values = all_params()
            .map(|s| (s.name, s.default.to_string()))
            .collect();
        let c = Config {
            values: RwLock::new(values),
            tunables: Tunables::default(),
            file: RwLock::new(None),
            save_seen: AtomicBool::new(false),
            sentinel_mode: AtomicBool::new(false),
            sentinel_directives: parking_lot::Mutex::new(Vec::new()),
            user_lines: parking_lot::Mutex::new(Vec::new()),
        };
        c.apply();
        c
    }

    /// A parameter's value as CONFIG GET shows it.
    pub fn get(&self, name: &str) -> Option<String> {
        let s = spec(name)?;
        self.values.read().get(s.name).map(|v| display(s, v))
    }

    /// A parameter's value as it was set.
    pub fn get_raw(&self, name: &str) -> Option<String> {
        let s = spec(name)?;
        self.values.read().get(s.name).cloned()
    }

    pub fn get_i64(&self, name: &str) -> i64 {
        self.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub fn get_bool(&self, name: &str) -> bool {
        self.get(name).as_deref() == Some("yes")
    }

    /// All (name, value) pairs whose name matches the glob, as CONFIG GET returns them.
    pub fn matching(&self, pattern: &[u8]) -> Vec<(&'static str, String)> {
        let values = self.values.read();
        let lower = pattern.to_ascii_lowercase();
        // Test-only parameters answer an exact name, never a pattern (Redis' hidden ones).
        let is_pattern = lower.iter().any(|c| matches!(c, b'*' | b'?' | b'['));
        let mut out = Vec::new();
        for s in all_params() {
            if is_pattern && HIDDEN.contains(&s.name) {
                continue;
            }
            let value = || {
                values
                    .get(s.name)
                    .map(|v| display(s, v))
                    .unwrap_or_default()
            };
            // Each name that matches is listed under that name, as Redis lists a legacy
            // alias (slave-read-only) beside the current one (replica-read-only).
            for name in std::iter::once(s.name).chain(s.alias) {
                if glob_match(&lower, name.as_bytes()) {
                    out.push((name, value()));
                }
            }
        }
        out
    }

    /// Validates and stores one parameter. `at_startup` allows immutable parameters and
    /// makes `save` lines accumulate, as repeated lines in redis.conf do.
    pub fn set(&self, name: &str, args: &[String], at_startup: bool) -> Result<(), String> {
        let Some(s) = spec(name) else {
            return Err("Bad directive or wrong number of arguments".into());
        };
        if !at_startup && !s.mutable {
            return Err("can't set immutable config".into());
        }
        let joined = args.join(" ");
        let value = match s.kind {
            Kind::Bool => {
                if args.len() != 1 {
                    return Err("wrong number of arguments".into());
                }
                match args[0].to_ascii_lowercase().as_str() {
                    "yes" => "yes".to_string(),
                    "no" => "no".to_string(),
                    _ => return Err("argument must be 'yes' or 'no'".into()),
                }
            }
            Kind::Int { min, max } => {
                if args.len() != 1 {
                    return Err("wrong number of arguments".into());
                }
                let v: i64 = args[0]
                    .parse()
                    .map_err(|_| "argument couldn't be parsed into an integer".to_string())?;
                if v < min || v > max {
                    return Err(format!(
                        "argument must be between {min} and {max} inclusive"
                    ));
                }
                v.to_string()
            }
            Kind::Memory { max } => {
                if args.len() != 1 {
                    return Err("wrong number of arguments".into());
                }
                let v = parse_memory(&args[0]).ok_or("argument must be a memory value")?;
                if v > max {
                    return Err("argument must be a memory value".into());
                }
                v.to_string()
            }
            Kind::MemoryOrPercent => {
                if args.len() != 1 {
                    return Err("wrong number of arguments".into());
                }
                match args[0].strip_suffix('%') {
                    Some(pct) => {
                        let v: u64 = pct.parse().map_err(|_| {
                            "argument must be a memory or percent value".to_string()
                        })?;
                        if v > 100 {
                            return Err("percentage argument must be less or equal to 100".into());
                        }
                        format!("{v}%")
                    }
                    None => parse_memory(&args[0])
                        .ok_or("argument must be a memory or percent value")?
                        .to_string(),
                }
            }
            Kind::Enum(options) => {
                if args.len() != 1 {
                    return Err("wrong number of arguments".into());
                }
                let lower = args[0].to_ascii_lowercase();
                if !options.contains(&lower.as_str()) {
                    return Err("argument(s) must be one of the following: ".to_string()
                        + &options.join(", "));
                }
                lower
            }
            Kind::Str => {
                if args.len() > 1 {
                    return Err("wrong number of arguments".into());
                }
                let v = args.first().cloned().unwrap_or_default();
                if name == "cluster-announce-hostname" {
                    valid_hostname(&v)?;
                }
                v
            }
            Kind::List => joined,
            Kind::KeyspaceEvents => {
                if args.len() > 1 {
                    return Err("wrong number of arguments".into());
                }
                carmine_keyspace::notify::parse_flags(&joined)
                    .ok_or("Invalid event class character. Use 'Ag$lshzxeKEtmdn'.")?;
                // Stored as given: the canonical form Redis shows drops `n` next to `A`.
                joined
            }
            Kind::Save => {
                let parts: Vec<&str> = joined.split_whitespace().collect();
                if !parts.len().is_multiple_of(2) || parts.iter().any(|p| p.parse::<u64>().is_err())
                {
                    return Err("Invalid save parameters".into());
                }
                if at_startup && !parts.is_empty() {
                    let mut values = self.values.write();
                    let cur = values.entry("save").or_default();
                    // The first save line in a file replaces the default; later ones add.
                    if !self.save_seen.swap(true, Ordering::Relaxed) || cur.is_empty() {
                        *cur = parts.join(" ");
                    } else {
                        *cur = format!("{cur} {}", parts.join(" "));
                    }
                    return Ok(());
                }
                parts.join(" ")
            }
            Kind::ClientOutputBufferLimit => {
                let base = *self.tunables.obuf.read();
                format_obuf(&parse_obuf(&joined, &base)?)
            }
        };
        self.values.write().insert(s.name, value);
        self.apply();
        Ok(())
    }

    /// Refreshes [`Tunables`] from the text store (and [`CRASH_LOG_ENABLED`]).
    pub fn apply(&self) {
        let values = self.values.read();
        let get = |n: &str| values.get(n).cloned().unwrap_or_default();
        let num = |n: &str| get(n).parse::<u64>().unwrap_or(0);
        let t = &self.tunables;
        let pass = get("requirepass");
        t.has_password.store(!pass.is_empty(), Ordering::Relaxed);
        *t.requirepass.write() = if pass.is_empty() {
            None
        } else {
            Some(pass.into_bytes())
        };
        t.timeout_secs.store(num("timeout"), Ordering::Relaxed);
        t.maxclients.store(num("maxclients"), Ordering::Relaxed);
        t.hz.store(num("hz").clamp(1, 500), Ordering::Relaxed);
        t.proto_max_bulk_len
            .store(num("proto-max-bulk-len"), Ordering::Relaxed);
        t.client_query_buffer_limit
            .store(num("client-query-buffer-limit"), Ordering::Relaxed);
        t.protected_mode
            .store(get("protected-mode") == "yes", Ordering::Relaxed);
        t.maxmemory.store(num("maxmemory"), Ordering::Relaxed);
        t.hll_sparse_max_bytes
            .store(num("hll-sparse-max-bytes"), Ordering::Relaxed);
        t.aof_timestamps
            .store(get("aof-timestamp-enabled") == "yes", Ordering::Relaxed);
        CRASH_LOG_ENABLED.store(get("crash-log-enabled") != "no", Ordering::Relaxed);
        t.slowlog_slower_than.store(
            get("slowlog-log-slower-than").parse().unwrap_or(10_000),
            Ordering::Relaxed,
        );
        t.slowlog_max_len
            .store(num("slowlog-max-len"), Ordering::Relaxed);
        t.latency_monitor_threshold
            .store(num("latency-monitor-threshold"), Ordering::Relaxed);
        t.latency_tracking
            .store(get("latency-tracking") != "no", Ordering::Relaxed);
        t.tracking_table_max_keys
            .store(num("tracking-table-max-keys"), Ordering::Relaxed);
        t.busy_reply_threshold_ms
            .store(num("busy-reply-threshold"), Ordering::Relaxed);
        t.busy_poll_us.store(num("busy-poll-us"), Ordering::Relaxed);
        t.appendfsync.store(
            match get("appendfsync").as_str() {
                "always" => 0,
                "no" => 2,
                _ => 1,
            },
            Ordering::Relaxed,
        );
        if let Ok(l) = parse_obuf(
            &get("client-output-buffer-limit"),
            &[ObufLimit::default(); 3],
        ) {
            *t.obuf.write() = l;
        }
    }

    /// Loads redis.conf-syntax text. Errors name the line, as Redis does.
    pub fn load_text(&self, text: &str) -> Result<(), ConfigError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| ConfigError {
                line: i + 1,
                text: line.to_string(),
                reason,
            };
            let parts = split_inline_args(line.as_bytes())
                .map_err(|_| err("Unbalanced quotes in configuration line".into()))?;
            let mut parts: Vec<String> = parts
                .into_iter()
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .collect();
            if parts.is_empty() {
                continue;
            }
            let name = parts.remove(0).to_ascii_lowercase();
            if name == "sentinel" {
                if !self.sentinel_mode.load(Ordering::Relaxed) {
                    return Err(err("sentinel directive while not in sentinel mode".into()));
                }
                if !parts.is_empty() {
                    self.sentinel_directives.lock().push(parts);
                }
                continue;
            }
            if name == "user" {
                // `--user "name rules..."` on the command line arrives as one argument.
                if parts.len() == 1 {
                    parts = parts[0].split_whitespace().map(str::to_string).collect();
                }
                if parts.is_empty() {
                    return Err(err("Bad directive or wrong number of arguments".into()));
                }
                self.user_lines.lock().push((i + 1, parts));
                continue;
            }
            if name == "include" {
                let [path] = parts.as_slice() else {
                    return Err(err("Bad directive or wrong number of arguments".into()));
                };
                let inner = std::fs::read_to_string(path).map_err(|e| {
                    err(format!("Fatal error, can't open config file '{path}': {e}"))
                })?;
                self.load_text(&inner)?;
                continue;
            }
            self.set(&name, &parts, true).map_err(err)?;
        }
        Ok(())
    }

    /// Renders the current non-default values as redis.conf lines (CONFIG REWRITE).
    pub fn render(&self) -> String {
        let values = self.values.read();
        let mut out = String::from("# Generated by CONFIG REWRITE\n");
        for s in all_params() {
            if let Some(v) = values.get(s.name) {
                if v != s.default {
                    let quoted = if v.is_empty() {
                        "\"\"".to_string()
                    } else {
                        v.clone()
                    };
                    out.push_str(&format!("{} {}\n", s.name, quoted));
                }
            }
        }
        out
    }
}

/// Turns `carmine-server [file] [--name value ...]` into config-file text, as Redis does:
/// each `--name` starts a line, following words are its arguments (quoted).
pub fn args_to_config_text(args: &[String]) -> (Option<String>, String) {
    let mut file = None;
    let mut rest = args;
    if let Some(first) = args.first() {
        if !first.starts_with("--") {
            file = Some(first.clone());
            rest = &args[1..];
        }
    }
    let mut text = String::new();
    let mut first_line = true;
    for a in rest {
        if let Some(name) = a.strip_prefix("--") {
            if !first_line {
                text.push('\n');
            }
            first_line = false;
            text.push_str(name);
        } else {
            text.push(' ');
            text.push_str(&quote(a));
        }
    }
    text.push('\n');
    (file, text)
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Redis' check of `cluster-announce-hostname` (its isValidAuxString rules).
fn valid_hostname(v: &str) -> Result<(), String> {
    if v.len() >= 256 {
        return Err("Hostnames must be less than 256 characters".into());
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err("Hostnames may only contain alphanumeric characters, hyphens or dots".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("1gb"), Some(GB));
        assert_eq!(parse_memory("100k"), Some(100_000));
        assert_eq!(parse_memory("5MB"), Some(5 * 1024 * 1024));
        assert_eq!(parse_memory("x"), None);
    }

    #[test]
    fn file_errors_name_the_line() {
        let c = Config::new();
        let e = c.load_text("port 7000\n\nbogus-directive 1\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("Bad directive"));
        assert_eq!(c.get("port").as_deref(), Some("7000"));
        assert!(c.load_text("port notanumber").is_err());
    }

    #[test]
    fn command_line_becomes_config_text() {
        let args: Vec<String> = [
            "my.conf",
            "--port",
            "7000",
            "--save",
            "",
            "--bind",
            "127.0.0.1",
            "::1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (file, text) = args_to_config_text(&args);
        assert_eq!(file.as_deref(), Some("my.conf"));
        let c = Config::new();
        c.load_text(&text).unwrap();
        assert_eq!(c.get("port").as_deref(), Some("7000"));
        assert_eq!(c.get("save").as_deref(), Some(""));
        assert_eq!(c.get("bind").as_deref(), Some("127.0.0.1 ::1"));
    }

    #[test]
    fn obuf_partial_update() {
        let c = Config::new();
        c.set(
            "client-output-buffer-limit",
            &["pubsub".into(), "1mb".into(), "0".into(), "0".into()],
            false,
        )
        .unwrap();
        let v = c.get("client-output-buffer-limit").unwrap();
        assert!(v.contains("pubsub 1048576 0 0"), "{v}");
        assert!(v.contains("slave 268435456"), "{v}");
    }
}
