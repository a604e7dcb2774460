//! What instances tell a sentinel: INFO replies (roles, replicas, offsets) and hello
//! messages from fellow sentinels.

use crate::instance::{
    Instance, Kind, FAILOVER_IN_PROGRESS, MASTER_REBOOT, O_DOWN, PROMOTED, RECONF_DONE,
    RECONF_INPROG, RECONF_SENT, S_DOWN,
};
use crate::{
    describe, FailoverState, Hello, Level, Sentinel, Which, SIMFAILURE_CRASH_AFTER_PROMOTION,
};

/// The fields of an INFO reply a sentinel reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct InfoFields {
    pub run_id: Option<String>,
    pub role: Option<Kind>,
    /// `slaveN:` lines of a master: replica addresses.
    pub replicas: Vec<(String, u16)>,
    pub master_link_down_ms: i64,
    pub master_host: Option<String>,
    pub master_port: Option<i64>,
    pub master_link_up: Option<bool>,
    pub slave_priority: Option<i64>,
    pub slave_repl_offset: Option<u64>,
    pub replica_announced: Option<bool>,
}

pub(crate) fn parse_info(text: &str) -> InfoFields {
    let mut f = InfoFields::default();
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "run_id" if value.len() >= 40 => f.run_id = value.get(..40).map(str::to_string),
            "role" => {
                f.role = match value {
                    "master" => Some(Kind::Master),
                    "slave" => Some(Kind::Replica),
                    _ => f.role,
                }
            }
            "master_link_down_since_seconds" => {
                f.master_link_down_ms = value.parse::<i64>().unwrap_or(0).saturating_mul(1000)
            }
            "master_host" => f.master_host = Some(value.to_string()),
            "master_port" => f.master_port = value.parse().ok(),
            "master_link_status" => f.master_link_up = Some(value.eq_ignore_ascii_case("up")),
            "slave_priority" => f.slave_priority = value.parse().ok(),
            "slave_repl_offset" => f.slave_repl_offset = value.parse().ok(),
            "replica_announced" => f.replica_announced = value.parse::<i64>().ok().map(|v| v != 0),
            k if k.len() > 5
                && k.starts_with("slave")
                && k[5..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                if let Some(addr) = replica_line(value) {
                    f.replicas.push(addr);
                }
            }
            _ => {}
        }
    }
    f
}

/// `ip=127.0.0.1,port=6380,state=online,...` (or the old `127.0.0.1,6380,online`).
fn replica_line(value: &str) -> Option<(String, u16)> {
    if value.contains("ip=") {
        let mut ip = None;
        let mut port = None;
        for part in value.split(',') {
            if let Some(v) = part.strip_prefix("ip=") {
                ip = Some(v.to_string());
            } else if let Some(v) = part.strip_prefix("port=") {
                port = v.parse().ok();
            }
        }
        Some((ip?, port?))
    } else {
        let mut parts = value.split(',');
        let ip = parts.next()?.to_string();
        let port = parts.next()?.parse().ok()?;
        Some((ip, port))
    }
}

impl Sentinel {
    /// An INFO reply from a master or replica (Redis' `sentinelRefreshInstanceInfo`).
    pub(crate) fn refresh_info(&mut self, mi: usize, which: Which, text: &str) {
        let ah = self.core.announce_hostnames;
        let now = self.core.now;
        let f = parse_info(text);
        let mut rebooted = false;
        {
            let inst = self.inst_mut(mi, which);
            inst.info = Some(text.to_string());
            inst.master_link_down_time = f.master_link_down_ms;
            if let Some(id) = &f.run_id {
                match &inst.runid {
                    None => inst.runid = Some(id.clone()),
                    Some(old) if old != id => {
                        inst.runid = Some(id.clone());
                        rebooted = true;
                    }
                    _ => {}
                }
            }
        }
        if rebooted {
            let reboot_after = self.masters[mi].cfg.master_reboot_down_after;
            let desc = describe(ah, self.inst(mi, which), Some(&self.masters[mi].inst));
            let script = self.masters[mi].cfg.notification_script.clone();
            self.core
                .event(Level::Notice, "+reboot", desc, script.as_deref());
            let inst = self.inst_mut(mi, which);
            if inst.kind == Kind::Master && reboot_after != 0 {
                inst.flags |= MASTER_REBOOT;
                inst.master_reboot_since = now;
            }
        }
        if which == Which::Master {
            for (ip, port) in &f.replicas {
                let m = &self.masters[mi];
                if !m.replicas.iter().any(|r| r.addr.same(ip, *port)) {
                    self.add_replica(mi, ip, *port);
                    self.core.flush_config();
                }
            }
        }
        let role = f.role;
        {
            let inst = self.inst_mut(mi, which);
            if role == Some(Kind::Replica) {
                if let Some(h) = &f.master_host {
                    if inst
                        .slave_master_host
                        .as_ref()
                        .is_none_or(|old| !old.eq_ignore_ascii_case(h))
                    {
                        inst.slave_master_host = Some(h.clone());
                        inst.slave_conf_change_time = now;
                    }
                }
                if let Some(p) = f.master_port {
                    if inst.slave_master_port != p {
                        inst.slave_master_port = p;
                        inst.slave_conf_change_time = now;
                    }
                }
                if let Some(up) = f.master_link_up {
                    inst.slave_master_link_up = up;
                }
                if let Some(p) = f.slave_priority {
                    inst.slave_priority = p;
                }
                if let Some(o) = f.slave_repl_offset {
                    inst.slave_repl_offset = o;
                }
                if let Some(a) = f.replica_announced {
                    inst.replica_announced = a;
                }
            }
            inst.info_refresh = now;
        }
        let inst = self.inst(mi, which);
        if let Some(r) = role.filter(|r| *r != inst.role_reported) {
            let coherent = r == inst.kind;
            let desc = describe(ah, inst, Some(&self.masters[mi].inst));
            let inst = self.inst_mut(mi, which);
            inst.role_reported = r;
            inst.role_reported_time = now;
            if r == Kind::Replica {
                inst.slave_conf_change_time = now;
            }
            self.core.event(
                Level::Verbose,
                if coherent {
                    "+role-change"
                } else {
                    "-role-change"
                },
                format!(
                    "{desc} new reported role is {}",
                    if r == Kind::Master { "master" } else { "slave" }
                ),
                None,
            );
        }
        if self.core.tilt {
            return;
        }
        let Which::Replica(ri) = which else {
            return;
        };
        match role {
            Some(Kind::Master) => self.replica_reports_master(mi, ri),
            Some(Kind::Replica) => self.replica_reports_replica(mi, ri),
            _ => {}
        }
    }

    fn replica_reports_master(&mut self, mi: usize, ri: usize) {
        let ah = self.core.announce_hostnames;
        let now = self.core.now;
        let m = &self.masters[mi];
        let r = &m.replicas[ri];
        if r.has(PROMOTED)
            && m.inst.has(FAILOVER_IN_PROGRESS)
            && m.failover_state == FailoverState::WaitPromotion
        {
            // The promotion took: our epoch becomes the master's configuration epoch,
            // which makes the other sentinels follow once they see our hello.
            let m = &mut self.masters[mi];
            m.config_epoch = m.failover_epoch;
            m.failover_state = FailoverState::ReconfSlaves;
            m.failover_state_change_time = now;
            self.core.flush_config();
            let m = &self.masters[mi];
            let script = m.cfg.notification_script.clone();
            let desc = describe(ah, &m.replicas[ri], Some(&m.inst));
            self.core
                .event(Level::Warning, "+promoted-slave", desc, script.as_deref());
            if self.core.simfailure & SIMFAILURE_CRASH_AFTER_PROMOTION != 0 {
                self.core.push(crate::Action::Crash);
            }
            let mdesc = describe(ah, &m.inst, None);
            self.core.event(
                Level::Warning,
                "+failover-state-reconf-slaves",
                mdesc,
                script.as_deref(),
            );
            let (from, to) = (m.inst.addr.clone(), m.replicas[ri].addr.clone());
            self.client_reconfig_script(mi, "leader", "start", &from, &to);
            self.force_hello_update(mi);
        } else {
            let wait = self.core.periods.publish * 4;
            if !r.has(PROMOTED)
                && self.master_looks_sane(mi)
                && r.no_down_for(now, wait)
                && now - r.role_reported_time > wait
            {
                let addr = m.inst.addr.clone();
                if self.send_slaveof(mi, Which::Replica(ri), Some(&addr)) {
                    let m = &self.masters[mi];
                    let desc = describe(ah, &m.replicas[ri], Some(&m.inst));
                    self.core
                        .event(Level::Notice, "+convert-to-slave", desc, None);
                }
            }
        }
    }

    fn replica_reports_replica(&mut self, mi: usize, ri: usize) {
        let ah = self.core.announce_hostnames;
        let now = self.core.now;
        let m = &self.masters[mi];
        let r = &m.replicas[ri];
        let points_elsewhere = r.slave_master_port != i64::from(m.inst.addr.port)
            || !r
                .slave_master_host
                .as_ref()
                .is_some_and(|h| m.inst.addr.same(h, m.inst.addr.port));
        if points_elsewhere {
            let wait = m.cfg.failover_timeout;
            if self.master_looks_sane(mi)
                && r.no_down_for(now, wait)
                && now - r.slave_conf_change_time > wait
            {
                let addr = m.inst.addr.clone();
                if self.send_slaveof(mi, Which::Replica(ri), Some(&addr)) {
                    let m = &self.masters[mi];
                    let desc = describe(ah, &m.replicas[ri], Some(&m.inst));
                    self.core
                        .event(Level::Notice, "+fix-slave-config", desc, None);
                }
            }
        }
        let m = &self.masters[mi];
        let r = &m.replicas[ri];
        if r.flags & (RECONF_SENT | RECONF_INPROG) == 0 {
            return;
        }
        let promoted = m.promoted_replica().map(|p| p.addr.clone());
        if r.has(RECONF_SENT) {
            if let (Some(p), Some(h)) = (&promoted, &r.slave_master_host) {
                if p.same(h, r.slave_master_port.clamp(0, 65535) as u16)
                    && r.slave_master_port == i64::from(p.port)
                {
                    let desc = describe(ah, r, Some(&m.inst));
                    let r = &mut self.masters[mi].replicas[ri];
                    r.flags = (r.flags & !RECONF_SENT) | RECONF_INPROG;
                    self.core
                        .event(Level::Notice, "+slave-reconf-inprog", desc, None);
                }
            }
        }
        let m = &self.masters[mi];
        let r = &m.replicas[ri];
        if r.has(RECONF_INPROG) && r.slave_master_link_up {
            let desc = describe(ah, r, Some(&m.inst));
            let r = &mut self.masters[mi].replicas[ri];
            r.flags = (r.flags & !RECONF_INPROG) | RECONF_DONE;
            self.core
                .event(Level::Notice, "+slave-reconf-done", desc, None);
        }
    }

    /// A master we can trust to repoint replicas to: configured as master, reporting
    /// itself master, not down, and heard from recently.
    pub(crate) fn master_looks_sane(&self, mi: usize) -> bool {
        let m = &self.masters[mi].inst;
        m.role_reported == Kind::Master
            && m.flags & (S_DOWN | O_DOWN) == 0
            && self.core.now - m.info_refresh < self.core.periods.info * 2
    }

    /// Adds a replica learned from INFO (or kept across a reset), with `+slave`.
    pub(crate) fn add_replica(&mut self, mi: usize, host: &str, port: u16) {
        let ah = self.core.announce_hostnames;
        let addr = self.core.learned_addr(host, port);
        let r = self
            .core
            .new_replica(addr, self.masters[mi].inst.down_after);
        let m = &mut self.masters[mi];
        let desc = describe(ah, &r, Some(&m.inst));
        m.replicas.push(r);
        self.core.event(Level::Notice, "+slave", desc, None);
    }

    /// A hello from a fellow sentinel, through a master's or replica's pub/sub or sent
    /// to our own PUBLISH (Redis' `sentinelProcessHelloMessage`).
    pub fn process_hello(&mut self, text: &str) {
        let ah = self.core.announce_hostnames;
        let Some(h) = Hello::parse(text) else {
            self.core.ignored_messages += 1;
            return;
        };
        let now = self.core.now;
        let Some(mi) = self.master_index(&h.master_name) else {
            self.core.ignored_messages += 1;
            return;
        };
        let known = self.masters[mi]
            .sentinels
            .iter()
            .position(|s| s.runid.as_deref() == Some(&h.runid) && s.addr.same(&h.ip, h.port));
        let si = match known {
            Some(si) => si,
            None => {
                let removed = self.remove_sentinel_by_runid(mi, &h.runid);
                let mdesc = describe(ah, &self.masters[mi].inst, None);
                if removed > 0 {
                    self.core.event(
                        Level::Notice,
                        "+sentinel-address-switch",
                        format!("{mdesc} ip {} port {} for {}", h.ip, h.port, h.runid),
                        None,
                    );
                } else if let Some(other) = self.masters[mi]
                    .sentinels
                    .iter()
                    .find(|s| s.addr.same(&h.ip, h.port))
                {
                    let desc = describe(ah, other, Some(&self.masters[mi].inst));
                    let obsolete = other.runid.clone().unwrap_or_default();
                    self.core
                        .event(Level::Notice, "+sentinel-invalid-addr", desc, None);
                    for m in 0..self.masters.len() {
                        self.remove_sentinel_by_runid(m, &obsolete);
                    }
                }
                let id = self.core.new_id();
                let addr = self.core.learned_addr(&h.ip, h.port);
                let m = &mut self.masters[mi];
                let mut s = Instance::new(
                    id,
                    Kind::Sentinel,
                    h.runid.clone(),
                    addr,
                    m.inst.down_after,
                    now,
                );
                s.runid = Some(h.runid.clone());
                let desc = describe(ah, &s, Some(&m.inst));
                m.sentinels.push(s);
                if removed == 0 {
                    self.core.event(Level::Notice, "+sentinel", desc, None);
                } else {
                    self.update_sentinel_address_everywhere(&h.runid, &h.ip, h.port);
                }
                self.core.flush_config();
                self.masters[mi].sentinels.len() - 1
            }
        };
        if h.current_epoch > self.core.current_epoch {
            self.core.current_epoch = h.current_epoch;
            self.core.flush_config();
            let script = self.masters[mi].cfg.notification_script.clone();
            self.core.event(
                Level::Warning,
                "+new-epoch",
                h.current_epoch.to_string(),
                script.as_deref(),
            );
        }
        let m = &mut self.masters[mi];
        if m.config_epoch < h.master_config_epoch {
            m.config_epoch = h.master_config_epoch;
            if !m.inst.addr.same(&h.master_ip, h.master_port) {
                let script = m.cfg.notification_script.clone();
                let sdesc = describe(ah, &m.sentinels[si], Some(&m.inst));
                self.core.event(
                    Level::Warning,
                    "+config-update-from",
                    sdesc,
                    script.as_deref(),
                );
                let old = self.masters[mi].inst.addr.clone();
                self.switch_master(mi, &h.master_ip, h.master_port);
                let new = self.masters[mi].inst.addr.clone();
                self.client_reconfig_script(mi, "observer", "start", &old, &new);
            }
        }
        // The reset above keeps the sentinels, so `si` still names the sender.
        if let Some(s) = self.masters[mi].sentinels.get_mut(si) {
            s.last_hello_time = now;
        }
    }

    fn remove_sentinel_by_runid(&mut self, mi: usize, runid: &str) -> usize {
        let m = &mut self.masters[mi];
        let before = m.sentinels.len();
        let mut kept = Vec::with_capacity(before);
        for mut s in m.sentinels.drain(..) {
            if s.runid.as_deref() == Some(runid) {
                crate::close_link(&mut self.core.out, &mut s.link, None);
            } else {
                kept.push(s);
            }
        }
        m.sentinels = kept;
        before - m.sentinels.len()
    }

    fn update_sentinel_address_everywhere(&mut self, runid: &str, host: &str, port: u16) {
        let addr = self.core.learned_addr(host, port);
        for m in &mut self.masters {
            for s in &mut m.sentinels {
                if s.runid.as_deref() == Some(runid) && !s.addr.same(host, port) {
                    s.addr = addr.clone();
                    crate::close_link(&mut self.core.out, &mut s.link, None);
                }
            }
        }
    }

    /// Makes the next tick send hellos for this master everywhere at once.
    pub(crate) fn force_hello_update(&mut self, mi: usize) {
        let p = self.core.periods.publish + 1;
        let m = &mut self.masters[mi];
        for inst in std::iter::once(&mut m.inst)
            .chain(m.replicas.iter_mut())
            .chain(m.sentinels.iter_mut())
        {
            if inst.last_pub_time >= p {
                inst.last_pub_time -= p;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_info() {
        let text = "# Server\r\nrun_id:0123456789012345678901234567890123456789\r\n# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:up\r\nslave_repl_offset:1234\r\nslave_priority:10\r\nreplica_announced:1\r\n";
        let f = parse_info(text);
        assert_eq!(f.role, Some(Kind::Replica));
        assert_eq!(f.master_port, Some(6379));
        assert_eq!(f.master_link_up, Some(true));
        assert_eq!(f.slave_repl_offset, Some(1234));
        assert_eq!(f.slave_priority, Some(10));
        assert_eq!(
            f.run_id.as_deref(),
            Some("0123456789012345678901234567890123456789")
        );
        let m = parse_info("role:master\r\nslave0:ip=10.0.0.2,port=6380,state=online,offset=1,lag=0\r\nslave1:10.0.0.3,6381,online\r\n");
        assert_eq!(
            m.replicas,
            vec![("10.0.0.2".into(), 6380), ("10.0.0.3".into(), 6381)]
        );
    }

    #[test]
    fn odd_info_is_harmless() {
        let f = parse_info(
            "slave0:ip=x\r\nslave:foo\r\nmaster_port:abc\r\nrole:weird\r\nrun_id:short\r\n",
        );
        assert_eq!(f, InfoFields::default());
    }
}
