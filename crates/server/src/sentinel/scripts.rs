//! The user scripts a sentinel runs: `notification-script` on warning events and
//! `client-reconfig-script` on failovers, at most 16 at a time and 256 waiting, each
//! killed past `script-max-runtime`, as Redis runs them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carmine_sentinel::Reply;

use crate::log;

const MAX_RUNNING: usize = 16;
const MAX_QUEUE: usize = 256;

struct Job {
    argv: Vec<String>,
    child: Option<Child>,
    started: Option<Instant>,
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
            started: None,
        });
    }

    /// Starts what may start, reaps what finished, kills what ran too long.
    pub fn run(&mut self, max_runtime: Duration) {
        let mut running = self.jobs.iter().filter(|j| j.child.is_some()).count();
        for job in self.jobs.iter_mut().filter(|j| j.child.is_none()) {
            if running >= MAX_RUNNING {
                break;
            }
            match Command::new(&job.argv[0])
                .args(&job.argv[1..])
                .stdin(Stdio::null())
                .spawn()
            {
                Ok(c) => {
                    job.child = Some(c);
                    job.started = Some(Instant::now());
                    running += 1;
                }
                Err(e) => {
                    log::warning(&format!("-script-error {} #{e}", job.argv[0]));
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
                    if !status.success() {
                        log::warning(&format!("-script-error {} {status}", job.argv[0]));
                    }
                    false
                }
                Ok(None) => {
                    if job.started.is_some_and(|t| t.elapsed() > max_runtime) {
                        log::warning(&format!("-script-timeout {}", job.argv[0]));
                        let _ = child.kill();
                        let _ = child.wait();
                        return false;
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
        Reply::Array(
            self.jobs
                .iter()
                .map(|j| {
                    let running = j.child.is_some();
                    let ms = j.started.map_or(0, |t| t.elapsed().as_millis() as i64);
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
                        (bulk("retry-num".into()), bulk("0".into())),
                    ])
                })
                .collect(),
        )
    }
}
