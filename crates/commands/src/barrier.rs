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

/// Held while the world is stopped. The first few guards are kept inline: a server
/// with one or two event loops stops the world (every script does) without an
/// allocation.
pub struct Exclusive<'a> {
    _first: [Option<RwLockWriteGuard<'a, ()>>; INLINE_GUARDS],
    _rest: Vec<RwLockWriteGuard<'a, ()>>,
}

const INLINE_GUARDS: usize = 4;

impl<'a> Exclusive<'a> {
    fn new(guards: impl Iterator<Item = RwLockWriteGuard<'a, ()>>) -> Exclusive<'a> {
        let mut exclusive = Exclusive {
            _first: Default::default(),
            _rest: Vec::new(),
        };
        for guard in guards {
            exclusive.push(guard);
        }
        exclusive
    }

    fn push(&mut self, guard: RwLockWriteGuard<'a, ()>) {
        match self._first.iter_mut().find(|g| g.is_none()) {
            Some(slot) => *slot = Some(guard),
            None => self._rest.push(guard),
        }
    }

    /// How many locks are held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self._first.iter().flatten().count() + self._rest.len()
    }
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
        Exclusive::new(self.locks.iter().map(|l| l.0.write()))
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
        let mut guards = Exclusive::new(std::iter::empty());
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
        Some(guards)
    }

    /// `shared` if the world is not stopped now (background work that may skip a turn).
    pub fn try_shared(&self, thread: usize) -> Option<RwLockReadGuard<'_, ()>> {
        self.locks[thread.min(self.locks.len() - 1)].0.try_read()
    }
}

/// How often a waiter for the barrier asks whether to give up.
const GIVE_UP_CHECK: std::time::Duration = std::time::Duration::from_millis(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_world_holds_every_lock_and_frees_them_all() {
        for threads in [0, 1, 2, 3, 4, 8] {
            let barrier = Barrier::new(threads);
            let all = threads + 1;
            for unless in [false, true] {
                let exclusive = if unless {
                    barrier
                        .exclusive_unless(|| false)
                        .expect("nothing holds it")
                } else {
                    barrier.exclusive()
                };
                assert_eq!(exclusive.held(), all);
                for t in 0..all {
                    assert!(barrier.try_shared(t).is_none(), "{threads} loops, lock {t}");
                }
                drop(exclusive);
                for t in 0..all {
                    assert!(barrier.try_shared(t).is_some(), "{threads} loops, lock {t}");
                }
            }
        }
    }
}
