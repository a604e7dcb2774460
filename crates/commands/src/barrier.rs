//! The exclusive barrier: how a command that must see no concurrent command (FLUSHALL,
//! SWAPDB, a MULTI that walks the whole keyspace) stops the world without making every
//! ordinary command touch a shared cache line.
//!
//! Each event-loop thread has its own read-write lock on its own cache line. An ordinary
//! command takes its thread's lock for reading (uncontended: only that thread reads it).
//! An exclusive command takes every thread's lock for writing, in index order, which waits
//! for each thread's current command to finish and keeps new ones out.

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[repr(align(128))]
#[derive(Default)]
struct PaddedLock(RwLock<()>);

pub struct Barrier {
    locks: Box<[PaddedLock]>,
}

/// Held while the world is stopped.
pub struct Exclusive<'a> {
    _guards: Vec<RwLockWriteGuard<'a, ()>>,
}

impl Barrier {
    /// One lock per event-loop thread, plus one shared by every other caller.
    pub fn new(threads: usize) -> Barrier {
        Barrier {
            locks: (0..threads + 1).map(|_| PaddedLock::default()).collect(),
        }
    }

    pub fn shared(&self, thread: usize) -> RwLockReadGuard<'_, ()> {
        let i = thread.min(self.locks.len() - 1);
        self.locks[i].0.read()
    }

    pub fn exclusive(&self) -> Exclusive<'_> {
        Exclusive {
            _guards: self.locks.iter().map(|l| l.0.write()).collect(),
        }
    }
}
