//! FAILOVER [TO host port [FORCE]] [TIMEOUT ms] | FAILOVER ABORT: a master hands its role
//! to one of its replicas without losing a write. Writes are held (a client pause) while
//! it waits for a replica to acknowledge the whole stream; then the master becomes that
//! replica's replica and asks it, with `PSYNC <replid> <offset> FAILOVER`, to take over;
//! the replica becomes the master and the old master continues from it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carmine_commands::table::{cmd, flags::*, CommandSpec, KeySpec};
use carmine_commands::{Ctx, Shared};
use parking_lot::Mutex;

use crate::log;
use crate::replication::ReplicationStream;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Phase {
    #[default]
    None,
    /// Writes held; waiting for the target (or any replica) to acknowledge our offset.
    WaitForSync,
    /// We are the target's replica now and ask it to take over.
    InProgress,
}

#[derive(Default)]
pub(crate) struct Failover {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    phase: Phase,
    target: Option<(String, u16)>,
    deadline: Option<Instant>,
    force: bool,
}

impl Failover {
    pub(crate) fn phase(&self) -> Phase {
        self.state.lock().phase
    }

    /// INFO's `master_failover_state`.
    pub(crate) fn info_state(&self) -> &'static str {
        match self.phase() {
            Phase::None => "no-failover",
            Phase::WaitForSync => "waiting-for-sync",
            Phase::InProgress => "failover-in-progress",
        }
    }

    /// The target answered our PSYNC FAILOVER with a sync: the failover is done.
    pub(crate) fn finished(&self, shared: &Shared) {
        let mut st = self.state.lock();
        if st.phase == Phase::InProgress {
            *st = State::default();
            drop(st);
            shared.pause.set_failover(shared, false);
        }
    }

    /// Ends a failover: back to master if we had become the target's replica, writes
    /// released.
    pub(crate) fn abort(&self, shared: &Arc<Shared>, stream: &ReplicationStream, reason: &str) {
        let mut st = self.state.lock();
        if st.phase == Phase::None {
            return;
        }
        match &st.target {
            Some((h, p)) => log::notice(&format!("FAILOVER to {h}:{p} aborted: {reason}")),
            None => log::notice(&format!("FAILOVER to any replica aborted: {reason}")),
        }
        let was_in_progress = st.phase == Phase::InProgress;
        *st = State::default();
        drop(st);
        if was_in_progress {
            stream.set_master(shared, None);
        }
        shared.pause.set_failover(shared, false);
    }

    /// Loop 0's cron: time out, or start the hand-over once the target caught up.
    pub(crate) fn cron(&self, shared: &Arc<Shared>, stream: &ReplicationStream) {
        let mut st = self.state.lock();
        if st.phase != Phase::WaitForSync {
            return;
        }
        if st.deadline.is_some_and(|d| Instant::now() >= d) {
            if st.force {
                if let Some((h, p)) = st.target.clone() {
                    log::notice(&format!(
                        "FAILOVER to {h}:{p} time out exceeded, failing over."
                    ));
                    st.phase = Phase::InProgress;
                    drop(st);
                    stream.set_master(shared, Some((h, p)));
                    return;
                }
            }
            drop(st);
            return self.abort(shared, stream, "Replica never caught up before timeout");
        }
        let Some(target) = stream.caught_up_replica(st.target.as_ref()) else {
            return;
        };
        log::notice(&format!(
            "Failover target {}:{} is synced, failing over.",
            target.0, target.1
        ));
        st.target = Some(target.clone());
        st.phase = Phase::InProgress;
        drop(st);
        stream.set_master(shared, Some(target));
    }
}

pub fn commands() -> Vec<CommandSpec> {
    vec![cmd(
        "failover",
        -1,
        ADMIN | NOSCRIPT | STALE,
        KeySpec::None,
        failover,
        "server",
        "@admin @slow @dangerous",
        "Starts a coordinated failover from a server to one of its replicas.",
    )]
}

fn failover(ctx: &mut Ctx<'_, '_>) {
    let Some(stream) = ReplicationStream::of(ctx.shared) else {
        return ctx.error("ERR replication is not available on this server");
    };
    let Some(shared) = stream.owner() else {
        return ctx.error("ERR server is shutting down");
    };
    let fo = stream.failover();
    if ctx.args.len() == 2 && ctx.is(1, "ABORT") {
        if fo.phase() == Phase::None {
            return ctx.error("ERR No failover in progress.");
        }
        fo.abort(&shared, stream, "Failover manually aborted");
        return ctx.reply.ok();
    }
    let mut timeout_ms = 0i64;
    let mut force = false;
    let mut target: Option<(String, i64)> = None;
    let mut i = 1;
    while i < ctx.args.len() {
        if ctx.is(i, "TIMEOUT") && i + 1 < ctx.args.len() && timeout_ms == 0 {
            let Some(ms) = ctx.int_arg(i + 1) else { return };
            if ms <= 0 {
                return ctx.error("ERR FAILOVER timeout must be greater than 0");
            }
            timeout_ms = ms;
            i += 2;
        } else if ctx.is(i, "TO") && i + 2 < ctx.args.len() && target.is_none() {
            let Some(port) = ctx.int_arg(i + 2) else {
                return;
            };
            target = Some((String::from_utf8_lossy(ctx.arg(i + 1)).into_owned(), port));
            i += 3;
        } else if ctx.is(i, "FORCE") && !force {
            force = true;
            i += 1;
        } else {
            return ctx.syntax_error();
        }
    }
    if fo.phase() != Phase::None {
        return ctx.error("ERR FAILOVER already in progress.");
    }
    if ctx.shared.is_replica.load(Ordering::Acquire) {
        return ctx.error("ERR FAILOVER is not valid when server is a replica.");
    }
    if stream.replica_count() == 0 {
        return ctx.error("ERR FAILOVER requires connected replicas.");
    }
    if force && (timeout_ms == 0 || target.is_none()) {
        return ctx.error(
            "ERR FAILOVER with force option requires both a timeout and target HOST and IP.",
        );
    }
    let target = match target {
        Some((host, port)) => {
            let found = u16::try_from(port)
                .ok()
                .and_then(|p| stream.replica_online(&host, p).map(|online| (p, online)));
            match found {
                None => return ctx.error("ERR FAILOVER target HOST and PORT is not a replica."),
                Some((_, false)) => return ctx.error("ERR FAILOVER target replica is not online."),
                Some((p, true)) => {
                    log::notice(&format!("FAILOVER requested to {host}:{p}."));
                    Some((host, p))
                }
            }
        }
        None => {
            log::notice("FAILOVER requested to any replica.");
            None
        }
    };
    *fo.state.lock() = State {
        phase: Phase::WaitForSync,
        target,
        deadline: (timeout_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(timeout_ms as u64)),
        force,
    };
    ctx.shared.pause.set_failover(ctx.shared, true);
    ctx.reply.ok();
}
