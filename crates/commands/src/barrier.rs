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

    /// The event-loop threads this barrier serves.
    pub fn threads(&self) -> usize {
        self.locks.len() - 1
    }

    /// `shared`, unless `give_up` turns true while the world is stopped (a script ran
    /// past `busy-reply-threshold`: the caller answers -BUSY instead of waiting).
    pub fn shared_unless(
        &self,
        thread: usize,
        give_up: impl Fn() -> bool,
    ) -> Option<RwLockReadGuard<'_, ()>> {
        let lock = &self.locks[thread.min(self.locks.len() - 1)].0;
        if let Some(guard) = lock.try_read() {
            return Some(guard);
        }
        loop {
            if let Some(guard) = lock.try_read_for(GIVE_UP_CHECK) {
                return Some(guard);
            }
            if give_up() {
                return None;
            }
        }
    }

    /// `exclusive`, unless `give_up` turns true meanwhile; the locks taken so far are
    /// released then.
    pub fn exclusive_unless(&self, give_up: impl Fn() -> bool) -> Option<Exclusive<'_>> {
        let mut guards = Vec::with_capacity(self.locks.len());
        for lock in self.locks.iter() {
            loop {
                if let Some(guard) = lock.0.try_write_for(GIVE_UP_CHECK) {
                    guards.push(guard);
                    break;
                }
                if give_up() {
                    return None;
                }
            }
        }
        Some(Exclusive { _guards: guards })
    }

    /// `shared` if the world is not stopped now (background work that may skip a turn).
    pub fn try_shared(&self, thread: usize) -> Option<RwLockReadGuard<'_, ()>> {
        self.locks[thread.min(self.locks.len() - 1)].0.try_read()
    }
}

/// How often a waiter for the barrier asks whether to give up.
const GIVE_UP_CHECK: std::time::Duration = std::time::Duration::from_millis(2);
