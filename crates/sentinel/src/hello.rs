//! The hello message sentinels publish on `__sentinel__:hello` every two seconds:
//! `ip,port,runid,current_epoch,master_name,master_ip,master_port,master_config_epoch`.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub ip: String,
    pub port: u16,
    pub runid: String,
    pub current_epoch: u64,
    pub master_name: String,
    pub master_ip: String,
    pub master_port: u16,
    pub master_config_epoch: u64,
}

impl fmt::Display for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{},{},{},{},{}",
            self.ip,
            self.port,
            self.runid,
            self.current_epoch,
            self.master_name,
            self.master_ip,
            self.master_port,
            self.master_config_epoch
        )
    }
}

impl Hello {
    /// Parses a hello; `None` for anything that is not exactly eight well-formed fields
    /// (Redis reads numbers with atoi and would take "12abc" as 12; a hello that is not
    /// what a sentinel writes is ignored here instead).
    pub fn parse(text: &str) -> Option<Hello> {
        let parts: Vec<&str> = text.split(',').collect();
        let [ip, port, runid, epoch, name, mip, mport, cepoch] = parts.as_slice() else {
            return None;
        };
        if ip.is_empty() || runid.is_empty() || name.is_empty() || mip.is_empty() {
            return None;
        }
        Some(Hello {
            ip: ip.to_string(),
            port: port.parse().ok()?,
            runid: runid.to_string(),
            current_epoch: epoch.parse().ok()?,
            master_name: name.to_string(),
            master_ip: mip.to_string(),
            master_port: mport.parse().ok()?,
            master_config_epoch: cepoch.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn redis_format() {
        let text =
            "127.0.0.1,26379,9c6b4a2ba0e0a6bb5d3d9e9a8f39d7d8c5a3a1c0,3,mymaster,127.0.0.1,6380,3";
        let h = Hello::parse(text).expect("valid hello");
        assert_eq!(h.port, 26379);
        assert_eq!(h.master_port, 6380);
        assert_eq!(h.current_epoch, 3);
        assert_eq!(h.to_string(), text);
    }

    #[test]
    fn malformed_refused() {
        for bad in [
            "",
            "a,b",
            "127.0.0.1,x,id,1,m,127.0.0.1,1,1",
            "127.0.0.1,1,id,1,m,127.0.0.1,1,1,extra",
            "127.0.0.1,70000,id,1,m,127.0.0.1,1,1",
            "127.0.0.1,1,id,-1,m,127.0.0.1,1,1",
        ] {
            assert_eq!(Hello::parse(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(ip in "[0-9a-f.:]{1,20}", port: u16, runid in "[0-9a-f]{40}",
                      e: u64, name in "[a-zA-Z0-9_-]{1,12}", mport: u16, ce: u64) {
            let h = Hello { ip: ip.clone(), port, runid, current_epoch: e, master_name: name,
                            master_ip: ip, master_port: mport, master_config_epoch: ce };
            prop_assert_eq!(Hello::parse(&h.to_string()), Some(h));
        }

        #[test]
        fn never_panics(text in ".{0,200}") {
            let _ = Hello::parse(&text);
        }
    }
}
