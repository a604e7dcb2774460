//! What goes in and out of the state machine: replies from the instances it watches,
//! the actions it asks its host to perform, and the timing parameters.

/// A reply as a RESP client sees it. Used both for what instances answer and for what
/// the `SENTINEL` command answers a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// A nil bulk string.
    Nil,
    /// A nil array (`*-1`).
    NilArray,
    Array(Vec<Reply>),
    /// Field/value pairs: a map in RESP3, a flat array in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub fn bulk(s: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(s.as_ref().to_vec())
    }

    pub fn ok() -> Reply {
        Reply::Status("OK".into())
    }

    pub fn err(s: impl Into<String>) -> Reply {
        Reply::Error(s.into())
    }

    /// The text of a status, error or bulk reply.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Status(s) | Reply::Error(s) => Some(s),
            Reply::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// Log levels of events, as Redis names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Verbose,
    Notice,
    Warning,
}

/// One outgoing connection the machine asked for; ids are never reused.
pub type ConnId = u64;

/// What the host must do for the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `host:port`; report `Event::Connected` or `Event::Closed`.
    /// Commands sent before it is up are queued by the host and written once it is.
    Connect {
        conn: ConnId,
        host: String,
        port: u16,
    },
    /// Write one command on a connection.
    Send { conn: ConnId, argv: Vec<Vec<u8>> },
    /// Close a connection; no more events are expected for it.
    Close { conn: ConnId },
    /// Log `"<channel> <message>"` at `level` and, unless it is a debug event, publish
    /// `message` on this sentinel's pub/sub channel `channel`.
    Event {
        level: Level,
        channel: String,
        message: String,
    },
    /// Run a user script (notification or client-reconfig script) with these arguments.
    RunScript { path: String, args: Vec<String> },
    /// Rewrite the config file with the current state (see `Sentinel::config_lines`).
    FlushConfig,
    /// `SENTINEL SIMULATE-FAILURE`: exit the process now (Redis exits with status 99).
    Crash,
}

/// What the host reports to the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The connection is up; `local_ip` is this end's address (announced in hellos).
    Connected { conn: ConnId, local_ip: String },
    /// A reply, or a pub/sub message, read from the connection, in order.
    Reply { conn: ConnId, reply: Reply },
    /// The connection failed or was closed by the peer.
    Closed { conn: ConnId, reason: String },
}

/// Sentinel's timing parameters, in milliseconds (`SENTINEL DEBUG` changes them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Periods {
    pub info: i64,
    pub ping: i64,
    pub ask: i64,
    pub publish: i64,
    pub default_down_after: i64,
    pub default_failover_timeout: i64,
    pub tilt_trigger: i64,
    pub tilt_period: i64,
    pub slave_reconf_timeout: i64,
    pub min_link_reconnect: i64,
    pub election_timeout: i64,
    pub script_max_runtime: i64,
    pub script_retry_delay: i64,
}

impl Default for Periods {
    fn default() -> Periods {
        Periods {
            info: 10_000,
            ping: 1_000,
            ask: 1_000,
            publish: 2_000,
            default_down_after: 30_000,
            default_failover_timeout: 180_000,
            tilt_trigger: 2_000,
            tilt_period: 30_000,
            slave_reconf_timeout: 10_000,
            min_link_reconnect: 15_000,
            election_timeout: 10_000,
            script_max_runtime: 60_000,
            script_retry_delay: 30_000,
        }
    }
}

impl Periods {
    /// The names `SENTINEL DEBUG` shows and sets, in Redis' order.
    pub const NAMES: [&'static str; 13] = [
        "info-period",
        "ping-period",
        "ask-period",
        "publish-period",
        "default-down-after",
        "default-failover-timeout",
        "tilt-trigger",
        "tilt-period",
        "slave-reconf-timeout",
        "min-link-reconnect-period",
        "election-timeout",
        "script-max-runtime",
        "script-retry-delay",
    ];

    pub fn get_mut(&mut self, name: &str) -> Option<&mut i64> {
        Some(match name.to_ascii_lowercase().as_str() {
            "info-period" => &mut self.info,
            "ping-period" => &mut self.ping,
            "ask-period" => &mut self.ask,
            "publish-period" => &mut self.publish,
            "default-down-after" => &mut self.default_down_after,
            "default-failover-timeout" => &mut self.default_failover_timeout,
            "tilt-trigger" => &mut self.tilt_trigger,
            "tilt-period" => &mut self.tilt_period,
            "slave-reconf-timeout" => &mut self.slave_reconf_timeout,
            "min-link-reconnect-period" => &mut self.min_link_reconnect,
            "election-timeout" => &mut self.election_timeout,
            "script-max-runtime" => &mut self.script_max_runtime,
            "script-retry-delay" => &mut self.script_retry_delay,
            _ => return None,
        })
    }

    pub fn get(&self, name: &str) -> Option<i64> {
        self.clone().get_mut(name).map(|v| *v)
    }
}

/// An instance's address: the host as configured or learned (a name or an IP), the IP
/// it resolved to (`?` when it could not be resolved yet), and the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub host: String,
    pub ip: String,
    pub port: u16,
}

impl Addr {
    /// An address given as an IP (or taken as is).
    pub fn literal(host: &str, port: u16) -> Addr {
        Addr {
            host: host.to_string(),
            ip: host.to_string(),
            port,
        }
    }

    /// The same instance as `host:port`, where `host` is a name or an IP (Redis compares
    /// either).
    pub fn same(&self, host: &str, port: u16) -> bool {
        self.port == port
            && (self.host.eq_ignore_ascii_case(host) || self.ip.eq_ignore_ascii_case(host))
    }

    pub fn matches(&self, other: &Addr) -> bool {
        self.port == other.port
            && (self.host.eq_ignore_ascii_case(&other.host)
                || self.ip.eq_ignore_ascii_case(&other.ip))
    }

    /// What clients and peers are told: the host name with `announce-hostnames yes`,
    /// else the IP.
    pub fn announced(&self, hostnames: bool) -> &str {
        if hostnames {
            &self.host
        } else {
            &self.ip
        }
    }

    /// `ip:port` (`[ip]:port` for IPv6), a replica's name.
    pub fn name(&self, hostnames: bool) -> String {
        let h = self.announced(hostnames);
        if h.contains(':') {
            format!("[{h}]:{}", self.port)
        } else {
            format!("{h}:{}", self.port)
        }
    }
}
