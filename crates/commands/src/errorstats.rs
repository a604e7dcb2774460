//! INFO errorstats: how many error replies of each code (the first word of the message)
//! the server sent, as Redis counts them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::state::ThreadStats;

/// Redis stops tracking new codes past this many distinct ones (a client sending junk
/// could otherwise grow the table without bound).
const MAX_CODES: usize = 128;

#[derive(Default)]
pub struct ErrorStats {
    counts: Mutex<BTreeMap<Box<str>, u64>>,
    /// INFO's `unexpected_error_replies`: errors a replica's commands from its master got
    /// (each a sign the replica diverged).
    unexpected: std::sync::atomic::AtomicU64,
}

impl ErrorStats {
    pub fn count_unexpected(&self) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unexpected(&self) -> u64 {
        self.unexpected.load(Ordering::Relaxed)
    }

    /// Counts the error replies `codes` names (taken from a reply buffer) in the
    /// errorstats table and in the thread's `total_error_replies`.
    pub fn record(&self, stats: &ThreadStats, codes: &mut Vec<Box<str>>) {
        if codes.is_empty() {
            return;
        }
        stats
            .error_replies
            .fetch_add(codes.len() as u64, Ordering::Relaxed);
        let mut counts = self.counts.lock();
        for code in codes.drain(..) {
            bump(&mut counts, &code);
        }
    }

    /// Counts one error with this code that no reply buffer carries (a script's call
    /// refused before any command ran).
    pub fn record_code(&self, stats: &ThreadStats, code: &str) {
        stats.error_replies.fetch_add(1, Ordering::Relaxed);
        bump(&mut self.counts.lock(), code);
    }

    pub fn reset(&self) {
        self.counts.lock().clear();
        self.unexpected.store(0, Ordering::Relaxed);
    }

    /// The `errorstat_<code>:count=<n>` lines, in code order.
    pub fn info(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (code, n) in self.counts.lock().iter() {
            let _ = write!(out, "errorstat_{code}:count={n}\r\n");
        }
    }
}

fn bump(counts: &mut BTreeMap<Box<str>, u64>, code: &str) {
    let tracked = counts.len();
    match counts.get_mut(code) {
        Some(n) => *n += 1,
        None if tracked < MAX_CODES => {
            counts.insert(code.into(), 1);
        }
        None => {}
    }
}
