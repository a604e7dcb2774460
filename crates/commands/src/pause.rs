//! Client pauses: CLIENT PAUSE / CLIENT UNPAUSE and FAILOVER's write pause.
//!
//! A command that a pause holds blocks its client without a reply (its pipeline waits
//! behind it) until the pause ends; then it runs as if it had just arrived. Replicas
//! reading the stream and the link applying our master's stream are never paused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use carmine_resp::Args;
use parking_lot::Mutex;

use crate::blocking::BlockState;
use crate::state::{ClientInfo, Session, Shared};

#[derive(Default)]
pub struct ClientPause {
    /// Any pause on: the one load an unpaused server pays per command.
    active: AtomicBool,
    state: Mutex<PauseState>,
    /// Clients holding a paused command, retried when the pause ends.
    waiters: Mutex<Vec<Arc<ClientInfo>>>,
}

#[derive(Default)]
struct PauseState {
    /// CLIENT PAUSE: until when, and whether reads wait too (ALL) or only writes.
    client: Option<(Instant, bool)>,
    /// FAILOVER waits for a replica to catch up with writes held.
    failover: bool,
}

impl ClientPause {
    /// CLIENT PAUSE: a pause already on keeps its later end and its stricter kind
    /// (Redis: ALL is never weakened to WRITE by a second PAUSE).
    pub fn pause_clients(&self, shared: &Shared, duration: Duration, all: bool) {
        let until = Instant::now() + duration;
        let mut st = self.state.lock();
        st.client = Some(match st.client {
            Some((end, was_all)) => (end.max(until), was_all || all),
            None => (until, all),
        });
        self.active.store(true, Ordering::Release);
        drop(st);
        self.refresh_expiry(shared);
    }

    /// CLIENT UNPAUSE.
    pub fn unpause_clients(&self, shared: &Shared) {
        self.state.lock().client = None;
        self.refresh(shared);
    }

    /// FAILOVER's write pause, on while it waits for a replica and until it ends.
    pub fn set_failover(&self, shared: &Shared, on: bool) {
        self.state.lock().failover = on;
        if on {
            self.active.store(true, Ordering::Release);
            self.refresh_expiry(shared);
        } else {
            self.refresh(shared);
        }
    }

    /// True if a command (a write, or one that reads only) must wait now.
    /// Whether any pause is on (one atomic load: the request path asks this first).
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub fn holds(&self, write: bool) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        let st = self.state.lock();
        let client = st
            .client
            .is_some_and(|(end, all)| Instant::now() < end && (all || write));
        client || (st.failover && write)
    }

    /// Loop 0's cron: a CLIENT PAUSE whose time is up ends.
    pub fn tick(&self, shared: &Shared) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let expired = {
            let mut st = self.state.lock();
            let expired = st.client.is_some_and(|(end, _)| Instant::now() >= end);
            if expired {
                st.client = None;
            }
            expired
        };
        if expired {
            self.refresh(shared);
        }
    }

    /// Turns the fast flag off and retries the held commands once nothing pauses.
    fn refresh(&self, shared: &Shared) {
        let st = self.state.lock();
        if st.client.is_some() || st.failover {
            return;
        }
        self.active.store(false, Ordering::Release);
        drop(st);
        self.refresh_expiry(shared);
        self.release_waiters();
    }

    /// Whether expiry may delete keys now (on access or from the cron): not while paused,
    /// as in Redis (a deletion is a write the pause must hold), and never on a replica
    /// (its master's DELs do). Called whenever either changes.
    pub fn refresh_expiry(&self, shared: &Shared) {
        let deletes = !self.holds(true) && !shared.is_replica.load(Ordering::Acquire);
        shared.keyspace.set_expire_deletes(deletes);
    }

    /// Holds the session's command until the pause ends (no reply now).
    pub(crate) fn hold(&self, shared: &Shared, session: &mut Session, args: &Args) {
        if session.blocked.is_none() {
            let state = BlockState {
                db: session.db,
                keys: Vec::new(),
                deadline: None,
                args: args.clone(),
                timeout_null_array: false,
                rerun_on_timeout: false,
                paused: true,
                reader: false,
            };
            shared.blocking.add(&state, &session.info);
            session.blocked = Some(state);
        }
        let mut waiters = self.waiters.lock();
        if !waiters.iter().any(|c| c.id == session.info.id) {
            waiters.push(session.info.clone());
        }
        drop(waiters);
        // The pause may have ended between the check and the registration.
        if !self.active.load(Ordering::Acquire) {
            self.release_waiters();
        }
    }

    fn release_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for c in waiters {
            if let Some(ready) = c.ready.lock().as_ref() {
                ready();
            }
        }
    }
}
