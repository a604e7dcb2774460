//! The `sentinel ...` lines of the config file: reading them, writing the state back
//! (so a restarted sentinel remembers what it learned), and Redis' in-place rewrite.

use crate::instance::{FailoverState, Instance, Kind, Master, MasterConfig};
use crate::Sentinel;

/// One line of the rewritten config: its key (`sentinel monitor`, `port`, ...) and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigLine {
    pub key: String,
    pub text: String,
}

fn line(key: &str, text: String) -> ConfigLine {
    ConfigLine {
        key: key.to_string(),
        text,
    }
}

fn yes_no(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

impl Sentinel {
    /// Applies one `sentinel` directive of the config file (the words after
    /// `sentinel`). Errors carry Redis' messages.
    pub fn configure(&mut self, argv: &[&str]) -> Result<(), String> {
        let now = self.core.now;
        let Some(first) = argv.first() else {
            return Err("Unrecognized sentinel configuration statement.".into());
        };
        let name = first.to_ascii_lowercase();
        let argc = argv.len();
        let master = |s: &mut Sentinel, n: &str| -> Result<usize, String> {
            s.master_index(n)
                .ok_or_else(|| "No such master with specified name.".to_string())
        };
        let ms = |v: &str| v.parse::<i64>().unwrap_or(0);
        match (name.as_str(), argc) {
            ("monitor", 5) => {
                let quorum = argv[4].parse::<i64>().unwrap_or(0);
                if quorum <= 0 {
                    return Err("Quorum must be 1 or greater.".into());
                }
                self.add_master(
                    argv[1],
                    argv[2],
                    argv[3].parse().unwrap_or(-1),
                    quorum as u32,
                )?;
            }
            ("down-after-milliseconds", 3) => {
                let mi = master(self, argv[1])?;
                let v = ms(argv[2]);
                if v <= 0 {
                    return Err("negative or zero time parameter.".into());
                }
                self.set_down_after(mi, v);
            }
            ("failover-timeout", 3) => {
                let mi = master(self, argv[1])?;
                let v = ms(argv[2]);
                if v <= 0 {
                    return Err("negative or zero time parameter.".into());
                }
                self.masters[mi].cfg.failover_timeout = v;
            }
            ("parallel-syncs", 3) => {
                let mi = master(self, argv[1])?;
                self.masters[mi].cfg.parallel_syncs = ms(argv[2]);
            }
            ("notification-script", 3) | ("client-reconfig-script", 3) => {
                let mi = master(self, argv[1])?;
                if !executable(argv[2]) {
                    return Err(if name == "notification-script" {
                        "Notification script seems non existing or non executable.".into()
                    } else {
                        "Client reconfiguration script seems non existing or non executable.".into()
                    });
                }
                let cfg = &mut self.masters[mi].cfg;
                if name == "notification-script" {
                    cfg.notification_script = Some(argv[2].to_string());
                } else {
                    cfg.client_reconfig_script = Some(argv[2].to_string());
                }
            }
            ("auth-pass", 3) => {
                let mi = master(self, argv[1])?;
                self.masters[mi].cfg.auth_pass = Some(argv[2].to_string());
            }
            ("auth-user", 3) => {
                let mi = master(self, argv[1])?;
                self.masters[mi].cfg.auth_user = Some(argv[2].to_string());
            }
            ("current-epoch", 2) => {
                let e = argv[1].parse::<u64>().unwrap_or(0);
                self.core.current_epoch = self.core.current_epoch.max(e);
            }
            ("myid", 2) => {
                if argv[1].len() != 40 {
                    return Err("Malformed Sentinel id in myid option.".into());
                }
                self.core.myid = argv[1].to_string();
            }
            ("config-epoch", 3) => {
                let mi = master(self, argv[1])?;
                let e = argv[2].parse::<u64>().unwrap_or(0);
                self.masters[mi].config_epoch = e;
                self.core.current_epoch = self.core.current_epoch.max(e);
            }
            ("leader-epoch", 3) => {
                let mi = master(self, argv[1])?;
                self.masters[mi].inst.leader_epoch = argv[2].parse::<u64>().unwrap_or(0);
            }
            ("known-slave", 4) | ("known-replica", 4) => {
                let mi = master(self, argv[1])?;
                let port = parse_port(argv[3])?;
                let addr = self.core.make_addr(argv[2], port, false)?;
                if self.masters[mi]
                    .replicas
                    .iter()
                    .any(|r| r.addr.matches(&addr))
                {
                    return Err("Duplicate hostname and port for replica.".into());
                }
                let r = self
                    .core
                    .new_replica(addr, self.masters[mi].inst.down_after);
                self.masters[mi].replicas.push(r);
            }
            ("known-sentinel", 4) => {} // the old form without a run id is ignored
            ("known-sentinel", 5) => {
                let mi = master(self, argv[1])?;
                let port = parse_port(argv[3])?;
                let addr = self.core.make_addr(argv[2], port, false)?;
                if self.masters[mi]
                    .sentinels
                    .iter()
                    .any(|s| s.runid.as_deref() == Some(argv[4]))
                {
                    return Err("Duplicate runid for sentinel.".into());
                }
                let id = self.core.new_id();
                let m = &mut self.masters[mi];
                let mut s = Instance::new(
                    id,
                    Kind::Sentinel,
                    argv[4].to_string(),
                    addr,
                    m.inst.down_after,
                    now,
                );
                s.runid = Some(argv[4].to_string());
                m.sentinels.push(s);
            }
            ("rename-command", 4) => {
                let mi = master(self, argv[1])?;
                let cfg = &mut self.masters[mi].cfg;
                if cfg
                    .renamed
                    .iter()
                    .any(|(f, _)| f.eq_ignore_ascii_case(argv[2]))
                {
                    return Err("Same command renamed multiple times with rename-command.".into());
                }
                cfg.renamed.push((argv[2].to_string(), argv[3].to_string()));
            }
            ("announce-ip", 2) => {
                if !argv[1].is_empty() {
                    self.core.announce_ip = Some(argv[1].to_string());
                }
            }
            ("announce-port", 2) => {
                self.core.announce_port = argv[1].parse().unwrap_or(0);
            }
            ("deny-scripts-reconfig", 2) => {
                self.core.deny_scripts_reconfig = yes_no(argv[1])
                    .ok_or("Please specify yes or no for the deny-scripts-reconfig options.")?;
            }
            ("sentinel-user", 2) => {
                if !argv[1].is_empty() {
                    self.core.sentinel_user = Some(argv[1].to_string());
                }
            }
            ("sentinel-pass", 2) => {
                if !argv[1].is_empty() {
                    self.core.sentinel_pass = Some(argv[1].to_string());
                }
            }
            ("resolve-hostnames", 2) => {
                self.core.resolve_hostnames = yes_no(argv[1])
                    .ok_or("Please specify yes or no for the resolve-hostnames option.")?;
            }
            ("announce-hostnames", 2) => {
                self.core.announce_hostnames = yes_no(argv[1])
                    .ok_or("Please specify yes or no for the announce-hostnames option.")?;
            }
            ("master-reboot-down-after-period", 3) => {
                let mi = master(self, argv[1])?;
                let v = ms(argv[2]);
                if v < 0 {
                    return Err("negative time parameter.".into());
                }
                self.masters[mi].cfg.master_reboot_down_after = v;
            }
            _ => return Err("Unrecognized sentinel configuration statement.".into()),
        }
        Ok(())
    }

    /// Applies a whole config's `sentinel` directives in Redis' order: the ones that
    /// change how addresses are read first, then `monitor`, then the rest. Returns the
    /// first error with the directive's index.
    pub fn configure_all(&mut self, directives: &[Vec<String>]) -> Result<(), (usize, String)> {
        let pre = |d: &Vec<String>| {
            d.first().is_some_and(|n| {
                n.eq_ignore_ascii_case("resolve-hostnames")
                    || n.eq_ignore_ascii_case("announce-hostnames")
            })
        };
        let monitor =
            |d: &Vec<String>| d.first().is_some_and(|n| n.eq_ignore_ascii_case("monitor"));
        for pass in 0..3 {
            for (i, d) in directives.iter().enumerate() {
                let this = match pass {
                    0 => pre(d),
                    1 => monitor(d),
                    _ => !pre(d) && !monitor(d),
                };
                if this {
                    let argv: Vec<&str> = d.iter().map(String::as_str).collect();
                    self.configure(&argv).map_err(|e| (i, e))?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn add_master(
        &mut self,
        name: &str,
        host: &str,
        port: i64,
        quorum: u32,
    ) -> Result<usize, String> {
        let port = u16::try_from(port).map_err(|_| "Invalid port number.".to_string())?;
        let addr = self.core.make_addr(host, port, false)?;
        if self.master_index(name).is_some() {
            return Err("Duplicate master name.".into());
        }
        let now = self.core.now;
        let id = self.core.new_id();
        let down_after = self.core.periods.default_down_after;
        let inst = Instance::new(id, Kind::Master, name.to_string(), addr, down_after, now);
        self.masters.push(Master {
            inst,
            cfg: MasterConfig {
                quorum,
                parallel_syncs: 1,
                failover_timeout: self.core.periods.default_failover_timeout,
                master_reboot_down_after: 0,
                auth_pass: None,
                auth_user: None,
                notification_script: None,
                client_reconfig_script: None,
                renamed: Vec::new(),
            },
            config_epoch: 0,
            failover_epoch: 0,
            failover_state: FailoverState::None,
            failover_state_change_time: 0,
            failover_start_time: 0,
            failover_delay_logged: 0,
            promoted: None,
            replicas: Vec::new(),
            sentinels: Vec::new(),
        });
        Ok(self.masters.len() - 1)
    }

    pub(crate) fn set_down_after(&mut self, mi: usize, v: i64) {
        let m = &mut self.masters[mi];
        m.inst.down_after = v;
        for i in m.replicas.iter_mut().chain(m.sentinels.iter_mut()) {
            i.down_after = v;
        }
    }

    /// The state to persist, as Redis' `rewriteConfigSentinelOption` writes it. Keys
    /// listed in [`Sentinel::config_keys`] that have no line here are removed from the
    /// file.
    pub fn config_lines(&self) -> Vec<ConfigLine> {
        let c = &self.core;
        let ah = c.announce_hostnames;
        let mut out = vec![line("sentinel myid", format!("sentinel myid {}", c.myid))];
        if !c.deny_scripts_reconfig {
            out.push(line(
                "sentinel deny-scripts-reconfig",
                "sentinel deny-scripts-reconfig no".into(),
            ));
        }
        if c.resolve_hostnames {
            out.push(line(
                "sentinel resolve-hostnames",
                "sentinel resolve-hostnames yes".into(),
            ));
        }
        if c.announce_hostnames {
            out.push(line(
                "sentinel announce-hostnames",
                "sentinel announce-hostnames yes".into(),
            ));
        }
        for m in &self.masters {
            let n = &m.inst.name;
            let addr = m.current_addr();
            out.push(line(
                "sentinel monitor",
                format!(
                    "sentinel monitor {n} {} {} {}",
                    addr.announced(ah),
                    addr.port,
                    m.cfg.quorum
                ),
            ));
            if m.inst.down_after != c.periods.default_down_after {
                out.push(line(
                    "sentinel down-after-milliseconds",
                    format!("sentinel down-after-milliseconds {n} {}", m.inst.down_after),
                ));
            }
            if m.cfg.failover_timeout != c.periods.default_failover_timeout {
                out.push(line(
                    "sentinel failover-timeout",
                    format!("sentinel failover-timeout {n} {}", m.cfg.failover_timeout),
                ));
            }
            if m.cfg.parallel_syncs != 1 {
                out.push(line(
                    "sentinel parallel-syncs",
                    format!("sentinel parallel-syncs {n} {}", m.cfg.parallel_syncs),
                ));
            }
            for (key, v) in [
                ("notification-script", &m.cfg.notification_script),
                ("client-reconfig-script", &m.cfg.client_reconfig_script),
                ("auth-pass", &m.cfg.auth_pass),
                ("auth-user", &m.cfg.auth_user),
            ] {
                if let Some(v) = v {
                    out.push(line(
                        &format!("sentinel {key}"),
                        format!("sentinel {key} {n} {v}"),
                    ));
                }
            }
            if m.cfg.master_reboot_down_after != 0 {
                out.push(line(
                    "sentinel master-reboot-down-after-period",
                    format!(
                        "sentinel master-reboot-down-after-period {n} {}",
                        m.cfg.master_reboot_down_after
                    ),
                ));
            }
            out.push(line(
                "sentinel config-epoch",
                format!("sentinel config-epoch {n} {}", m.config_epoch),
            ));
            out.push(line(
                "sentinel leader-epoch",
                format!("sentinel leader-epoch {n} {}", m.inst.leader_epoch),
            ));
            for r in &m.replicas {
                // Mid-failover the promoted replica is announced as the master: remember
                // the old master's address in its place.
                let a = if r.addr == *addr {
                    &m.inst.addr
                } else {
                    &r.addr
                };
                out.push(line(
                    "sentinel known-replica",
                    format!("sentinel known-replica {n} {} {}", a.announced(ah), a.port),
                ));
            }
            for s in &m.sentinels {
                if let Some(id) = &s.runid {
                    out.push(line(
                        "sentinel known-sentinel",
                        format!(
                            "sentinel known-sentinel {n} {} {} {id}",
                            s.addr.announced(ah),
                            s.addr.port
                        ),
                    ));
                }
            }
            for (from, to) in &m.cfg.renamed {
                out.push(line(
                    "sentinel rename-command",
                    format!("sentinel rename-command {n} {from} {to}"),
                ));
            }
        }
        out.push(line(
            "sentinel current-epoch",
            format!("sentinel current-epoch {}", c.current_epoch),
        ));
        if let Some(ip) = &c.announce_ip {
            out.push(line(
                "sentinel announce-ip",
                format!("sentinel announce-ip {}", quote_if_needed(ip)),
            ));
        }
        if c.announce_port != 0 {
            out.push(line(
                "sentinel announce-port",
                format!("sentinel announce-port {}", c.announce_port),
            ));
        }
        if let Some(u) = &c.sentinel_user {
            out.push(line(
                "sentinel sentinel-user",
                format!("sentinel sentinel-user {u}"),
            ));
        }
        if let Some(p) = &c.sentinel_pass {
            out.push(line(
                "sentinel sentinel-pass",
                format!("sentinel sentinel-pass {p}"),
            ));
        }
        out
    }

    /// Every key this sentinel writes: old lines with these keys that the new state
    /// does not replace are dropped.
    pub fn config_keys() -> &'static [&'static str] {
        &[
            "sentinel myid",
            "sentinel deny-scripts-reconfig",
            "sentinel resolve-hostnames",
            "sentinel announce-hostnames",
            "sentinel monitor",
            "sentinel down-after-milliseconds",
            "sentinel failover-timeout",
            "sentinel parallel-syncs",
            "sentinel notification-script",
            "sentinel client-reconfig-script",
            "sentinel auth-pass",
            "sentinel auth-user",
            "sentinel master-reboot-down-after-period",
            "sentinel config-epoch",
            "sentinel leader-epoch",
            "sentinel known-replica",
            "sentinel known-slave",
            "sentinel known-sentinel",
            "sentinel rename-command",
            "sentinel current-epoch",
            "sentinel announce-ip",
            "sentinel announce-port",
            "sentinel sentinel-user",
            "sentinel sentinel-pass",
        ]
    }
}

fn quote_if_needed(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\'')
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .map_err(|_| "Invalid port number.".to_string())
}

fn executable(path: &str) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        std::path::Path::new(path).is_file()
    }
}

pub(crate) fn script_usable(path: &str) -> bool {
    executable(path)
}

/// The key of a config line as Redis' rewrite matches them: the directive, lowercased,
/// and for `sentinel` lines the sub-directive too (`known-slave` counts as
/// `known-replica`). None for blank lines and comments.
fn line_key(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    let first = words.next()?;
    if first.starts_with('#') {
        return None;
    }
    let first = first.to_ascii_lowercase();
    if first == "sentinel" {
        let second = words.next().unwrap_or("").to_ascii_lowercase();
        let second = if second == "known-slave" {
            "known-replica".to_string()
        } else {
            second
        };
        Some(format!("sentinel {second}"))
    } else {
        Some(first)
    }
}

const SIGNATURE: &str = "# Generated by CONFIG REWRITE";

/// Redis' in-place config rewrite: each new line takes the place of the next old line
/// with its key, so comments and the order of the file survive; new lines without an
/// old place go at the end (after the signature comment, written once); old lines whose key is in
/// `managed` and that no new line took are dropped. Other lines stay as they are.
pub fn rewrite_config_text(old: &str, new: &[ConfigLine], managed: &[&str]) -> String {
    // The signature comment stays where it is; it is added only the first time.
    let has_signature = old.lines().any(|l| l.trim() == SIGNATURE);
    let mut lines: Vec<Option<String>> = old.lines().map(|l| Some(l.to_string())).collect();
    let keys: Vec<Option<String>> = lines
        .iter()
        .map(|l| l.as_deref().and_then(line_key))
        .collect();
    let mut used = vec![false; lines.len()];
    let mut appended = Vec::new();
    for n in new {
        let key = n.key.to_ascii_lowercase();
        let slot = (0..lines.len()).find(|&i| !used[i] && keys[i].as_deref() == Some(key.as_str()));
        match slot {
            Some(i) => {
                lines[i] = Some(n.text.clone());
                used[i] = true;
            }
            None => appended.push(n.text.clone()),
        }
    }
    let managed: Vec<String> = managed.iter().map(|k| k.to_ascii_lowercase()).collect();
    for i in 0..lines.len() {
        if !used[i] && keys[i].as_ref().is_some_and(|k| managed.contains(k)) {
            lines[i] = None;
        }
    }
    let mut out: Vec<String> = lines.into_iter().flatten().collect();
    if !appended.is_empty() {
        if !has_signature {
            out.push(SIGNATURE.to_string());
        }
        out.extend(appended);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_order_and_comments() {
        let old = "# comment\nsentinel down-after-milliseconds m 20000\nport 1\nsentinel monitor m 127.0.0.1 1 2\nsentinel known-slave m 127.0.0.1 9 \n";
        let new = vec![
            line(
                "sentinel monitor",
                "sentinel monitor m 127.0.0.1 1 2".into(),
            ),
            line(
                "sentinel down-after-milliseconds",
                "sentinel down-after-milliseconds m 20000".into(),
            ),
            line("sentinel myid", "sentinel myid abc".into()),
        ];
        let text = rewrite_config_text(old, &new, Sentinel::config_keys());
        assert_eq!(
            text,
            "# comment\nsentinel down-after-milliseconds m 20000\nport 1\nsentinel monitor m 127.0.0.1 1 2\n# Generated by CONFIG REWRITE\nsentinel myid abc\n"
        );
        // A second rewrite with the same state changes nothing.
        assert_eq!(
            rewrite_config_text(&text, &new, Sentinel::config_keys()),
            text
        );
    }

    #[test]
    fn state_survives_a_restart() {
        let mut s = Sentinel::new("a".repeat(40), 26379, 1);
        s.configure(&["monitor", "m", "127.0.0.1", "6379", "2"])
            .expect("monitor");
        s.configure(&["down-after-milliseconds", "m", "2000"])
            .expect("down-after");
        s.configure(&["known-replica", "m", "127.0.0.1", "6380"])
            .expect("replica");
        s.configure(&["known-sentinel", "m", "127.0.0.1", "26380", &"b".repeat(40)])
            .expect("sentinel");
        s.configure(&["current-epoch", "7"]).expect("epoch");
        let text = rewrite_config_text("", &s.config_lines(), Sentinel::config_keys());
        let mut t = Sentinel::new("c".repeat(40), 26379, 1);
        let directives: Vec<Vec<String>> = text
            .lines()
            .filter_map(|l| l.strip_prefix("sentinel "))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect();
        t.configure_all(&directives).expect("reload");
        assert_eq!(t.myid(), s.myid());
        assert_eq!(t.current_epoch(), 7);
        assert_eq!(t.config_lines(), s.config_lines());
    }

    #[test]
    fn config_errors_are_redis_errors() {
        let mut s = Sentinel::new("a".repeat(40), 26379, 1);
        assert_eq!(
            s.configure(&["monitor", "m", "127.0.0.1", "6379", "0"]),
            Err("Quorum must be 1 or greater.".into())
        );
        assert_eq!(
            s.configure(&["monitor", "m", "not-an-ip", "6379", "1"]),
            Err("Can't resolve instance hostname.".into())
        );
        assert_eq!(
            s.configure(&["down-after-milliseconds", "x", "1"]),
            Err("No such master with specified name.".into())
        );
        assert_eq!(
            s.configure(&["bogus"]),
            Err("Unrecognized sentinel configuration statement.".into())
        );
    }
}
