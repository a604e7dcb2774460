//! maxmemory eviction: sampled approximations of LRU, LFU, TTL and random, as Redis does.
//!
//! Each eviction samples `maxmemory-samples` keys from randomly chosen slot tables and
//! removes the worst candidate under the policy. The access clock (`Entry::lru`) holds
//! Unix seconds under LRU policies; under LFU policies it holds Redis' layout instead: the
//! minutes clock of the last decrement in the high 24 bits and a logarithmic access counter
//! in the low 8.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use carmine_slots::SLOT_COUNT;

use crate::keyspace::Keyspace;
use crate::value::Entry;

/// The eviction policies (`maxmemory-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Policy {
    NoEviction = 0,
    AllKeysLru,
    AllKeysLfu,
    AllKeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl Policy {
    pub fn parse(name: &str) -> Option<Policy> {
        Some(match name {
            "noeviction" => Policy::NoEviction,
            "allkeys-lru" => Policy::AllKeysLru,
            "allkeys-lfu" => Policy::AllKeysLfu,
            "allkeys-random" => Policy::AllKeysRandom,
            "volatile-lru" => Policy::VolatileLru,
            "volatile-lfu" => Policy::VolatileLfu,
            "volatile-random" => Policy::VolatileRandom,
            "volatile-ttl" => Policy::VolatileTtl,
            _ => return None,
        })
    }

    fn from_u8(v: u8) -> Policy {
        match v {
            1 => Policy::AllKeysLru,
            2 => Policy::AllKeysLfu,
            3 => Policy::AllKeysRandom,
            4 => Policy::VolatileLru,
            5 => Policy::VolatileLfu,
            6 => Policy::VolatileRandom,
            7 => Policy::VolatileTtl,
            _ => Policy::NoEviction,
        }
    }

    pub fn is_lfu(self) -> bool {
        matches!(self, Policy::AllKeysLfu | Policy::VolatileLfu)
    }

    fn volatile_only(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }
}

/// Eviction settings and counters, mirrored from the configuration.
#[derive(Debug)]
pub struct EvictionConfig {
    policy: AtomicU8,
    pub samples: AtomicU64,
    pub lfu_log_factor: AtomicU64,
    /// Minutes for the LFU counter to halve... decrement by one (`lfu-decay-time`).
    pub lfu_decay_time: AtomicU64,
    pub evicted: AtomicU64,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            policy: AtomicU8::new(0),
            samples: AtomicU64::new(5),
            lfu_log_factor: AtomicU64::new(10),
            lfu_decay_time: AtomicU64::new(1),
            evicted: AtomicU64::new(0),
        }
    }
}

impl EvictionConfig {
    pub fn policy(&self) -> Policy {
        Policy::from_u8(self.policy.load(Ordering::Relaxed))
    }

    pub fn set_policy(&self, p: Policy) {
        self.policy.store(p as u8, Ordering::Relaxed);
    }
}

/// Initial LFU counter of a new key, so new keys are not evicted at once (Redis: 5).
pub const LFU_INIT: u32 = 5;

fn minutes(now_ms: u64) -> u32 {
    ((now_ms / 60_000) & 0xff_ffff) as u32
}

/// The LFU counter after decay for the minutes elapsed since its last decrement.
pub fn lfu_decayed(field: u32, now_ms: u64, decay_time: u64) -> u32 {
    let counter = field & 0xff;
    if decay_time == 0 {
        return counter;
    }
    let last = field >> 8;
    let now = minutes(now_ms);
    let elapsed = if now >= last {
        now - last
    } else {
        0xff_ffff - last + now
    };
    let periods = u64::from(elapsed) / decay_time;
    counter.saturating_sub(periods.min(255) as u32)
}

/// The access clock field after one access under an LFU policy: decay, then a
/// logarithmic increment (likelier while the counter is small).
pub fn lfu_touch(field: u32, now_ms: u64, log_factor: u64, decay_time: u64) -> u32 {
    let mut counter = lfu_decayed(field, now_ms, decay_time);
    if counter < 255 {
        let base = f64::from(counter.saturating_sub(LFU_INIT));
        let p = 1.0 / (base * log_factor as f64 + 1.0);
        if fastrand::f64() < p {
            counter += 1;
        }
    }
    (minutes(now_ms) << 8) | counter
}

pub fn lfu_new(now_ms: u64) -> u32 {
    (minutes(now_ms) << 8) | LFU_INIT
}

/// The access clock field for a restored LFU counter (RESTORE FREQ, an RDB's FREQ).
pub fn lfu_restore(counter: u8, now_ms: u64) -> u32 {
    (minutes(now_ms) << 8) | u32::from(counter)
}

impl Keyspace {
    /// Removes one key chosen by `policy` from a sample; returns false when nothing can be
    /// evicted (an empty keyspace, or no volatile key under a volatile policy).
    /// `on_evicted(db, key)` runs under the key's table lock.
    pub fn evict_one(&self, now_ms: u64, on_evicted: impl FnOnce(usize, &[u8])) -> bool {
        let cfg = self.eviction();
        let policy = cfg.policy();
        if policy == Policy::NoEviction {
            return false;
        }
        let samples = cfg.samples.load(Ordering::Relaxed).clamp(1, 64) as usize;
        let decay = cfg.lfu_decay_time.load(Ordering::Relaxed);
        // Lower score = better victim.
        let score = |e: &Entry| -> u64 {
            match policy {
                Policy::AllKeysLru | Policy::VolatileLru => u64::from(e.lru),
                Policy::AllKeysLfu | Policy::VolatileLfu => {
                    u64::from(lfu_decayed(e.lru, now_ms, decay))
                }
                Policy::VolatileTtl => e.expire_at(),
                _ => 0,
            }
        };
        let mut best: Option<(u64, usize, Vec<u8>)> = None;
        let mut seen = 0;
        // One random qualifying key of a table, with its score.
        let sample = |db: usize, slot: usize| -> Option<(u64, Vec<u8>)> {
            let t = self.existing_table(db, slot)?;
            let t = t.lock();
            if t.is_empty() || (policy.volatile_only() && t.volatile_len() == 0) {
                return None;
            }
            let pick = fastrand::usize(..t.len());
            let chosen = t
                .iter()
                .skip(pick)
                .chain(t.iter().take(pick))
                .find(|(_, e)| !policy.volatile_only() || e.expire_at() != 0)
                .map(|(k, e)| (score(e), k.to_vec()));
            chosen
        };
        let mut consider = |db: usize, slot: usize| {
            if let Some((s, k)) = sample(db, slot) {
                seen += 1;
                if best.as_ref().is_none_or(|(b, _, _)| s < *b) {
                    best = Some((s, db, k));
                }
            }
            seen
        };
        let dbs: Vec<usize> = (0..self.databases())
            .filter(|&d| self.db_allocated(d))
            .collect();
        if dbs.is_empty() {
            return false;
        }
        // Random probes find samples at once in a dense keyspace ...
        let mut found = 0;
        for _ in 0..samples * 16 {
            if found >= samples {
                break;
            }
            found = consider(
                dbs[fastrand::usize(..dbs.len())],
                fastrand::usize(..SLOT_COUNT),
            );
        }
        // ... and a walk from a random table finds the few keys of a sparse one (50 volatile
        // keys over 16384 tables), ending after one lap.
        if found == 0 {
            let total = dbs.len() * SLOT_COUNT;
            let start = fastrand::usize(..total);
            for step in 0..total {
                if found >= samples {
                    break;
                }
                let pos = (start + step) % total;
                found = consider(dbs[pos / SLOT_COUNT], pos % SLOT_COUNT);
            }
        }
        let Some((_, db, key)) = best else {
            return false;
        };
        let mut l = crate::Locked::lock_key_at(self, db, &key, now_ms);
        if l.remove_in(db, &key).is_some() {
            cfg.evicted.fetch_add(1, Ordering::Relaxed);
            l.notify_in(db, crate::notify::EVICTED, "evicted", &key);
            // Still under the table's lock: the removal reaches the replication stream
            // in the order it happened.
            on_evicted(db, &key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lfu_counter_grows_slowly_and_decays() {
        let now = 10 * 60_000;
        let mut f = lfu_new(now);
        for _ in 0..10_000 {
            f = lfu_touch(f, now, 10, 1);
        }
        let c = f & 0xff;
        // Redis documents ~18 after 1K hits and ~142 after 100K at lfu-log-factor 10.
        assert!((25..100).contains(&c), "logarithmic growth, got {c}");
        // Ten minutes later the counter has decayed by ten.
        assert_eq!(lfu_decayed(f, now + 10 * 60_000, 1), c.saturating_sub(10));
    }

    #[test]
    fn evicts_only_volatile_keys_under_volatile_policies() {
        let ks = Keyspace::new();
        let db = ks.db(0);
        for i in 0..200 {
            db.set(format!("p{i}").as_bytes(), b"v");
        }
        for i in 0..50 {
            db.set(format!("v{i}").as_bytes(), b"v");
            db.expire(
                format!("v{i}").as_bytes(),
                std::time::Duration::from_secs(100 + i),
            );
        }
        ks.eviction().set_policy(Policy::VolatileTtl);
        let mut evicted = 0;
        while ks.evict_one(crate::now_ms(), |_, _| {}) {
            evicted += 1;
            assert!(evicted <= 50);
        }
        assert_eq!(evicted, 50);
        assert_eq!(ks.dbsize(0), 200);
        ks.eviction().set_policy(Policy::AllKeysRandom);
        assert!(ks.evict_one(crate::now_ms(), |_, _| {}));
        assert_eq!(ks.dbsize(0), 199);
    }
}
