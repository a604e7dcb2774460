//! Lazy freeing: UNLINK hands a value that would take long to free (Redis' free effort
//! above 64 allocations) to a background thread, so the command returns at once.
//! INFO's `lazyfree_pending_objects` and `lazyfreed_objects` count them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};

use carmine_keyspace::{Entry, HashValue, LargeSet, ListValue, SetValue, Value};
use parking_lot::Mutex;

/// Values cheaper to free than this are freed by the command itself (Redis'
/// LAZYFREE_THRESHOLD).
const THRESHOLD: usize = 64;

#[derive(Default)]
pub struct LazyFree {
    pending: std::sync::Arc<AtomicU64>,
    freed: std::sync::Arc<AtomicU64>,
    /// The background thread's queue, started on first use.
    tx: Mutex<Option<Sender<Entry>>>,
}

/// About how many allocations freeing `v` takes, as Redis estimates it: one for a
/// compact encoding, one per element of a table or of a long list (each element is an
/// allocation here; Redis counts a quicklist's nodes), a stream's nodes and its groups'
/// pending entries.
pub fn free_effort(v: &Value) -> usize {
    match v {
        Value::Str(_) => 1,
        Value::List(l) => match l {
            ListValue::Deque(_) => l.len(),
            _ => 1,
        },
        Value::Hash(h) => match h {
            HashValue::Packed(_) => 1,
            _ => h.len(),
        },
        Value::Set(s) => match s {
            SetValue::Large(large) if !matches!(**large, LargeSet::Packed(_)) => s.len(),
            _ => 1,
        },
        Value::ZSet(z) => {
            if z.encoding() == "listpack" {
                1
            } else {
                z.len()
            }
        }
        Value::Stream(s) => {
            let groups = s.groups.len();
            let pel = s.groups.values().next().map_or(0, |g| g.pel.len());
            s.node_count() + groups * (1 + pel)
        }
    }
}

impl LazyFree {
    /// Frees `entry` here, or on the background thread when that is worth it.
    pub fn free(&self, entry: Entry) {
        if free_effort(&entry.value) <= THRESHOLD {
            return;
        }
        let mut tx = self.tx.lock();
        if tx.is_none() {
            let (send, recv) = channel::<Entry>();
            let (pending, freed) = (self.pending.clone(), self.freed.clone());
            let started = std::thread::Builder::new()
                .name("lazyfree".into())
                .spawn(move || {
                    for entry in recv {
                        drop(entry);
                        pending.fetch_sub(1, Ordering::AcqRel);
                        freed.fetch_add(1, Ordering::AcqRel);
                    }
                });
            if started.is_err() {
                return; // no thread: freed here, as a small value is
            }
            *tx = Some(send);
        }
        if let Some(send) = tx.as_ref() {
            self.pending.fetch_add(1, Ordering::AcqRel);
            if let Err(returned) = send.send(entry) {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                drop(returned);
            }
        }
    }

    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    pub fn freed(&self) -> u64 {
        self.freed.load(Ordering::Acquire)
    }

    /// CONFIG RESETSTAT.
    pub fn reset(&self) {
        self.freed.store(0, Ordering::Release);
    }
}
