//! Parameters a Redis 7.0 redis.conf may set that drive features Carmine does not have
//! yet (replication, Cluster, TLS, active defrag, ...), or that
//! only tune Redis' own machinery (jemalloc, lazyfree, rehashing, process titles).
//!
//! They are accepted so that an existing redis.conf (Debian's default sets 44 of them)
//! loads unchanged: each has Redis' default, its type and range are checked, CONFIG GET
//! shows it and CONFIG SET changes it where Redis allows, but nothing acts on it yet
//! (README: known gaps). A later feature that gives one a meaning moves it to
//! `config::PARAMS`. Defaults are what `CONFIG GET *` of redis-server 7.0.15 prints.
//!
//! Exception not yet moved: the replication parameters below that replication reads
//! (`repl-backlog-size`, `repl-backlog-ttl`, `repl-diskless-sync`, `-delay`,
//! `-max-replicas`, `repl-ping-replica-period`, `repl-timeout`,
//! `replica-serve-stale-data`, `rdb-key-save-delay`, `key-load-delay`) act; README's
//! Replication row lists them.

use crate::config::{p, Kind, ParamSpec};

const COUNT: Kind = Kind::Int {
    min: 0,
    max: i64::MAX,
};
const INT32: Kind = Kind::Int {
    min: 0,
    max: i32::MAX as i64,
};
const POSITIVE32: Kind = Kind::Int {
    min: 1,
    max: i32::MAX as i64,
};
const UINT32: Kind = Kind::Int {
    min: 0,
    max: u32::MAX as i64,
};
/// Test-only delays (microseconds; a negative -N sleeps 1 µs with probability 1/N).
const DELAY: Kind = Kind::Int {
    min: i32::MIN as i64,
    max: i32::MAX as i64,
};
const PORT: Kind = Kind::Int { min: 0, max: 65535 };
const PERCENT: Kind = Kind::Int { min: 1, max: 99 };
const PERCENT0: Kind = Kind::Int { min: 0, max: 100 };
const THOUSAND: Kind = Kind::Int { min: 0, max: 1000 };
/// -1 turns the slow log off.
const SLOWLOG_THRESHOLD: Kind = Kind::Int {
    min: -1,
    max: i64::MAX,
};
const MEMORY: Kind = Kind::Memory {
    max: i64::MAX as u64,
};

const ENDPOINT_TYPES: &[&str] = &["ip", "hostname", "unknown-endpoint"];
const PROPAGATION_ERRORS: &[&str] = &["ignore", "panic", "panic-on-replicas"];
const DISKLESS_LOAD: &[&str] = &["disabled", "on-empty-db", "swapdb"];
const SUPERVISED: &[&str] = &["upstart", "systemd", "auto", "no"];
const SYSLOG_FACILITIES: &[&str] = &[
    "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];
const LOCAL_ONLY: &[&str] = &["no", "yes", "local"];
const OOM_SCORE_ADJ: &[&str] = &["no", "yes", "relative", "absolute"];
const SANITIZE: &[&str] = &["no", "yes", "clients"];
const TLS_AUTH: &[&str] = &["no", "yes", "optional"];

pub static INERT_PARAMS: &[ParamSpec] = &[
    p("active-defrag-cycle-max", "25", PERCENT, true),
    p("active-defrag-cycle-min", "1", PERCENT, true),
    p("active-defrag-ignore-bytes", "104857600", MEMORY, true),
    p("active-defrag-max-scan-fields", "1000", COUNT, true),
    p("active-defrag-threshold-lower", "10", THOUSAND, true),
    p("active-defrag-threshold-upper", "100", THOUSAND, true),
    p("activedefrag", "no", Kind::Bool, true),
    p("activerehashing", "yes", Kind::Bool, true),
    p("always-show-logo", "no", Kind::Bool, false),
    p("aof_rewrite_cpulist", "", Kind::Str, false),
    p("bgsave_cpulist", "", Kind::Str, false),
    p("bind-source-addr", "", Kind::Str, true),
    p("bio_cpulist", "", Kind::Str, false),
    ParamSpec {
        alias: Some("lua-time-limit"),
        ..p("busy-reply-threshold", "5000", COUNT, true)
    },
    p(
        "cluster-allow-pubsubshard-when-down",
        "yes",
        Kind::Bool,
        true,
    ),
    p("cluster-allow-reads-when-down", "no", Kind::Bool, true),
    p("cluster-allow-replica-migration", "yes", Kind::Bool, true),
    p("cluster-announce-bus-port", "0", PORT, true),
    p("cluster-announce-hostname", "", Kind::Str, true),
    p("cluster-announce-ip", "", Kind::Str, true),
    p("cluster-announce-port", "0", PORT, true),
    p("cluster-announce-tls-port", "0", PORT, true),
    p("cluster-config-file", "nodes.conf", Kind::Str, false),
    // Refused rather than ignored until Cluster exists: a server that silently ran
    // standalone would take writes for slots it does not own.
    p("cluster-enabled", "no", Kind::Bool, false),
    p("cluster-link-sendbuf-limit", "0", MEMORY, true),
    p("cluster-migration-barrier", "1", INT32, true),
    p("cluster-node-timeout", "15000", COUNT, true),
    p("cluster-port", "0", PORT, false),
    p(
        "cluster-preferred-endpoint-type",
        "ip",
        Kind::Enum(ENDPOINT_TYPES),
        true,
    ),
    ParamSpec {
        alias: Some("cluster-slave-no-failover"),
        ..p("cluster-replica-no-failover", "no", Kind::Bool, true)
    },
    ParamSpec {
        alias: Some("cluster-slave-validity-factor"),
        ..p("cluster-replica-validity-factor", "10", INT32, true)
    },
    p("cluster-require-full-coverage", "yes", Kind::Bool, true),
    p("crash-memcheck-enabled", "yes", Kind::Bool, true),
    p("disable-thp", "yes", Kind::Bool, false),
    p("dynamic-hz", "yes", Kind::Bool, true),
    p("enable-debug-command", "no", Kind::Enum(LOCAL_ONLY), false),
    p("enable-module-command", "no", Kind::Enum(LOCAL_ONLY), false),
    p(
        "enable-protected-configs",
        "no",
        Kind::Enum(LOCAL_ONLY),
        false,
    ),
    p("ignore-warnings", "", Kind::Str, true),
    p("io-threads-do-reads", "no", Kind::Bool, false),
    p("jemalloc-bg-thread", "yes", Kind::Bool, true),
    p("latency-monitor-threshold", "0", COUNT, true),
    p("latency-tracking", "yes", Kind::Bool, true),
    p(
        "latency-tracking-info-percentiles",
        "50 99 99.9",
        Kind::List,
        true,
    ),
    p("lazyfree-lazy-eviction", "no", Kind::Bool, true),
    p("lazyfree-lazy-expire", "no", Kind::Bool, true),
    p("lazyfree-lazy-server-del", "no", Kind::Bool, true),
    p("lazyfree-lazy-user-del", "no", Kind::Bool, true),
    p("lazyfree-lazy-user-flush", "no", Kind::Bool, true),
    p("list-compress-depth", "0", INT32, true),
    p(
        "loading-process-events-interval-bytes",
        "2097152",
        COUNT,
        true,
    ),
    p("masterauth", "", Kind::Str, true),
    p("masteruser", "", Kind::Str, true),
    p("maxmemory-clients", "0", Kind::MemoryOrPercent, true),
    p("maxmemory-eviction-tenacity", "10", PERCENT0, true),
    ParamSpec {
        alias: Some("min-slaves-max-lag"),
        ..p("min-replicas-max-lag", "10", INT32, true)
    },
    ParamSpec {
        alias: Some("min-slaves-to-write"),
        ..p("min-replicas-to-write", "0", INT32, true)
    },
    p("oom-score-adj", "no", Kind::Enum(OOM_SCORE_ADJ), true),
    p("oom-score-adj-values", "0 200 800", Kind::List, true),
    p(
        "proc-title-template",
        "{title} {listen-addr} {server-mode}",
        Kind::Str,
        true,
    ),
    p(
        "propagation-error-behavior",
        "ignore",
        Kind::Enum(PROPAGATION_ERRORS),
        true,
    ),
    p("rdb-del-sync-files", "no", Kind::Bool, true),
    // Redis' test suites slow a snapshot or a load down per key with these, so that a
    // test can act in the middle of one.
    p("rdb-key-save-delay", "0", DELAY, true),
    p("key-load-delay", "0", DELAY, true),
    p("watchdog-period", "0", INT32, true),
    p("repl-backlog-size", "1048576", MEMORY, true),
    p("repl-backlog-ttl", "3600", INT32, true),
    p("repl-disable-tcp-nodelay", "no", Kind::Bool, true),
    p(
        "repl-diskless-load",
        "disabled",
        Kind::Enum(DISKLESS_LOAD),
        true,
    ),
    p("repl-diskless-sync", "yes", Kind::Bool, true),
    p("repl-diskless-sync-delay", "5", INT32, true),
    p("repl-diskless-sync-max-replicas", "0", INT32, true),
    ParamSpec {
        alias: Some("repl-ping-slave-period"),
        ..p("repl-ping-replica-period", "10", POSITIVE32, true)
    },
    p("repl-timeout", "60", POSITIVE32, true),
    ParamSpec {
        alias: Some("slave-announce-ip"),
        ..p("replica-announce-ip", "", Kind::Str, true)
    },
    ParamSpec {
        alias: Some("slave-announce-port"),
        ..p("replica-announce-port", "0", PORT, true)
    },
    p("replica-announced", "yes", Kind::Bool, true),
    p("replica-ignore-disk-write-errors", "no", Kind::Bool, true),
    ParamSpec {
        alias: Some("slave-ignore-maxmemory"),
        ..p("replica-ignore-maxmemory", "yes", Kind::Bool, true)
    },
    ParamSpec {
        alias: Some("slave-lazy-flush"),
        ..p("replica-lazy-flush", "no", Kind::Bool, true)
    },
    ParamSpec {
        alias: Some("slave-priority"),
        ..p("replica-priority", "100", INT32, true)
    },
    ParamSpec {
        alias: Some("slave-read-only"),
        ..p("replica-read-only", "yes", Kind::Bool, true)
    },
    ParamSpec {
        alias: Some("slave-serve-stale-data"),
        ..p("replica-serve-stale-data", "yes", Kind::Bool, true)
    },
    p("sanitize-dump-payload", "no", Kind::Enum(SANITIZE), true),
    p("server_cpulist", "", Kind::Str, false),
    p("set-proc-title", "yes", Kind::Bool, false),
    p("shutdown-on-sigint", "default", Kind::List, true),
    p("shutdown-on-sigterm", "default", Kind::List, true),
    p("shutdown-timeout", "10", INT32, true),
    p("slowlog-log-slower-than", "10000", SLOWLOG_THRESHOLD, true),
    p("slowlog-max-len", "128", COUNT, true),
    p("socket-mark-id", "0", UINT32, true),
    p("stream-node-max-bytes", "4096", MEMORY, true),
    p("stream-node-max-entries", "100", COUNT, true),
    p("supervised", "no", Kind::Enum(SUPERVISED), false),
    p("syslog-enabled", "no", Kind::Bool, false),
    p(
        "syslog-facility",
        "local0",
        Kind::Enum(SYSLOG_FACILITIES),
        false,
    ),
    p("syslog-ident", "redis", Kind::Str, false),
    p("tls-auth-clients", "yes", Kind::Enum(TLS_AUTH), true),
    p("tls-ca-cert-dir", "", Kind::Str, true),
    p("tls-ca-cert-file", "", Kind::Str, true),
    p("tls-cert-file", "", Kind::Str, true),
    p("tls-ciphers", "", Kind::Str, true),
    p("tls-ciphersuites", "", Kind::Str, true),
    p("tls-client-cert-file", "", Kind::Str, true),
    p("tls-client-key-file", "", Kind::Str, true),
    p("tls-client-key-file-pass", "", Kind::Str, true),
    p("tls-cluster", "no", Kind::Bool, true),
    p("tls-dh-params-file", "", Kind::Str, true),
    p("tls-key-file", "", Kind::Str, true),
    p("tls-key-file-pass", "", Kind::Str, true),
    p("tls-port", "0", PORT, true),
    p("tls-prefer-server-ciphers", "no", Kind::Bool, true),
    p("tls-protocols", "", Kind::Str, true),
    p("tls-replication", "no", Kind::Bool, true),
    p("tls-session-cache-size", "20480", INT32, true),
    p("tls-session-cache-timeout", "300", INT32, true),
    p("tls-session-caching", "yes", Kind::Bool, true),
    p("tracking-table-max-keys", "1000000", COUNT, true),
];
