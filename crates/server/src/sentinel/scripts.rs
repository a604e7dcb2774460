//! The user scripts a sentinel runs: `notification-script` on warning events and
//! `client-reconfig-script` on failovers, at most 16 at a time and 256 waiting, each
//! killed past `script-max-runtime`; one that exits with 1 or dies by a signal is run
//! again up to 10 times, after `script-retry-delay` doubled at each retry, as Redis
//! runs them.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carmine_sentinel::Reply;

use crate::log;

const MAX_RUNNING: usize = 16;
const MAX_QUEUE: usize = 256;
const MAX_RETRY: u32 = 10;

struct Job {
    argv: Vec<String>,
    child: Option<Child>,
    /// When it started (running), or when it may start again (a retry).
    at: Option<Instant>,
    retry_num: u32,
}

/// Timing the driver takes from the sentinel's `SENTINEL DEBUG` parameters.
#[derive(Clone, Copy)]
pub struct ScriptTimes {
    pub max_runtime: Duration,
    pub retry_delay: Duration,
}

#[derive(Default)]
pub struct Scripts {
    jobs: Vec<Job>,
}

impl Scripts {
    pub fn schedule(&mut self, path: String, args: Vec<String>) {
        if self.jobs.len() >= MAX_QUEUE {
            // Redis drops the oldest job that is not running.
            if let Some(i) = self.jobs.iter().position(|j| j.child.is_none()) {
                self.jobs.remove(i);
            } else {
                return;
            }
        }
        let mut argv = vec![path];
        argv.extend(args);
        self.jobs.push(Job {
            argv,
            child: None,
            at: None,
            retry_num: 0,
        });
    }

    /// Starts what may start, reaps what finished (rescheduling what asked for a
    /// retry), kills what ran too long.
    pub fn run(&mut self, t: ScriptTimes) {
        let now = Instant::now();
        let mut running = self.jobs.iter().filter(|j| j.child.is_some()).count();
        for job in self.jobs.iter_mut().filter(|j| j.child.is_none()) {
            if running >= MAX_RUNNING {
                break;
            }
            if job.at.is_some_and(|at| at > now) {
                continue;
            }
            job.retry_num += 1;
            match Command::new(&job.argv[0])
                .args(&job.argv[1..])
                .stdin(Stdio::null())
                .spawn()
            {
                Ok(c) => {
                    job.child = Some(c);
                    job.at = Some(now);
                    running += 1;
                }
                Err(e) => {
                    log::warning(&format!("-script-error {} 99 0 #{e}", job.argv[0]));
                    job.argv.clear();
                }
            }
        }
        self.jobs.retain_mut(|job| {
            if job.argv.is_empty() {
                return false;
            }
            let Some(child) = job.child.as_mut() else {
                return true;
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    let signal = status.signal().unwrap_or(0);
                    let code = status.code().unwrap_or(0);
                    if (signal != 0 || code == 1) && job.retry_num < MAX_RETRY {
                        job.child = None;
                        let doublings = job.retry_num.saturating_sub(1).min(20);
                        job.at = Some(Instant::now() + t.retry_delay * (1u32 << doublings));
                        return true;
                    }
                    if signal != 0 || code != 0 {
                        log::warning(&format!("-script-error {} {signal} {code}", job.argv[0]));
                    }
                    false
                }
                Ok(None) => {
                    if job.at.is_some_and(|at| at.elapsed() > t.max_runtime) {
                        log::warning(&format!("-script-timeout {} {}", job.argv[0], child.id()));
                        // Killed by a signal: reaped (and maybe retried) next time.
                        let _ = child.kill();
                    }
                    true
                }
                Err(_) => false,
            }
        });
    }

    pub fn counts(&self) -> (usize, usize) {
        let running = self.jobs.iter().filter(|j| j.child.is_some()).count();
        (running, self.jobs.len() - running)
    }

    /// SENTINEL PENDING-SCRIPTS.
    pub fn pending_reply(&self) -> Reply {
        let bulk = |s: String| Reply::Bulk(s.into_bytes());
        let now = Instant::now();
        Reply::Array(
            self.jobs
                .iter()
                .map(|j| {
                    let running = j.child.is_some();
                    let ms = match j.at {
                        Some(at) if running => now.duration_since(at).as_millis() as i64,
                        Some(at) => at.saturating_duration_since(now).as_millis() as i64,
                        None => 0,
                    };
                    Reply::Map(vec![
                        (
                            bulk("argv".into()),
                            Reply::Array(j.argv.iter().cloned().map(bulk).collect()),
                        ),
                        (
                            bulk("flags".into()),
                            bulk(if running { "running" } else { "scheduled" }.into()),
                        ),
                        (
                            bulk("pid".into()),
                            bulk(j.child.as_ref().map_or(0, |c| c.id()).to_string()),
                        ),
                        (
                            bulk(if running { "run-time" } else { "run-delay" }.into()),
                            bulk(ms.to_string()),
                        ),
                        (bulk("retry-num".into()), bulk(j.retry_num.to_string())),
                    ])
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_done(s: &mut Scripts, t: ScriptTimes) {
        for _ in 0..200 {
            s.run(t);
            if s.counts() == (0, 0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("scripts still pending: {:?}", s.counts());
    }

    #[test]
    fn exit_1_is_retried_until_the_limit() {
        let dir = std::env::temp_dir().join(format!("carmine-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("runs");
        let _ = std::fs::remove_file(&log);
        // Through /bin/sh: a script file written and run at once can hit ETXTBSY.
        let mut s = Scripts::default();
        s.schedule(
            "/bin/sh".into(),
            vec!["-c".into(), format!("echo x >> {}; exit 1", log.display())],
        );
        let t = ScriptTimes {
            max_runtime: Duration::from_secs(5),
            retry_delay: Duration::from_millis(1),
        };
        wait_done(&mut s, t);
        let runs = std::fs::read_to_string(&log).expect("ran").lines().count();
        assert_eq!(
            runs, MAX_RETRY as usize,
            "run once and retried up to the limit"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn success_runs_once() {
        let mut s = Scripts::default();
        s.schedule("/bin/true".into(), vec![]);
        let t = ScriptTimes {
            max_runtime: Duration::from_secs(5),
            retry_delay: Duration::from_millis(1),
        };
        wait_done(&mut s, t);
    }
}
