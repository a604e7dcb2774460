//! Cluster redirection in admission (MOVED, ASK, TRYAGAIN, CROSSSLOT, CLUSTERDOWN), and
//! the session commands ASKING, READONLY and READWRITE.
//!
//! The server's cluster driver publishes a [`RouteView`] in `Shared::cluster_view`
//! whenever the slot map, the roles or the cluster state change; event loops read it
//! with one atomic load per keyed command and never lock.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use carmine_keyspace::{now_ms, Locked};
use carmine_slots::{key_slot, Slot, SLOT_COUNT};

use crate::dispatch::Ctx;
use carmine_resp::Args;

use crate::state::{Session, Shared};
use crate::table::{cmd, flags::*, CommandSpec, KeySpec};

/// No owner.
pub const NO_OWNER: u16 = u16::MAX;

/// What an event loop needs to route a command, published by the cluster driver.
#[derive(Clone, Debug)]
pub struct RouteView {
    /// Slot -> index in `addrs`, or [`NO_OWNER`].
    pub owners: Box<[u16]>,
    /// `host:port` of each node that owns a slot or is our master (the preferred
    /// endpoint, as MOVED and ASK print it).
    pub addrs: Vec<String>,
    /// This node's index in `addrs` (it has one even without slots).
    pub myself: u16,
    /// The master this node replicates, if it is a replica.
    pub my_master: Option<u16>,
    /// Slots we are moving away, and to whom.
    pub migrating: HashMap<Slot, u16>,
    /// Slots we are receiving.
    pub importing: HashSet<Slot>,
    pub state_ok: bool,
    pub allow_reads_when_down: bool,
    pub allow_pubsubshard_when_down: bool,
}

impl RouteView {
    /// A view where this node owns nothing (a fresh node).
    pub fn empty() -> RouteView {
        RouteView {
            owners: vec![NO_OWNER; SLOT_COUNT].into_boxed_slice(),
            addrs: vec![String::new()],
            myself: 0,
            my_master: None,
            migrating: HashMap::new(),
            importing: HashSet::new(),
            state_ok: false,
            allow_reads_when_down: false,
            allow_pubsubshard_when_down: true,
        }
    }

    pub fn owner(&self, slot: Slot) -> Option<u16> {
        match self.owners.get(slot as usize) {
            Some(&o) if o != NO_OWNER => Some(o),
            _ => None,
        }
    }

    fn addr(&self, i: u16) -> &str {
        self.addrs.get(i as usize).map_or("", |s| s.as_str())
    }
}

fn is_shard_pubsub(name: &str) -> bool {
    matches!(name, "spublish" | "ssubscribe" | "sunsubscribe")
}

/// Scripts name their keys after a count (`EVAL body numkeys key ...`); their specs list
/// none because a script locks what it touches as it runs.
fn is_script(spec: &CommandSpec) -> bool {
    crate::scripting::runs_script(spec)
}

/// The key index of a command that names exactly one key at a fixed place.
fn single_key(spec: &CommandSpec) -> Option<usize> {
    match spec.keys {
        KeySpec::Range { first, last, .. } if first == last && first > 0 && !is_script(spec) => {
            Some(first as usize)
        }
        _ => None,
    }
}

/// The key (or shard channel) arguments of one command.
fn routed_args(spec: &CommandSpec, args: &Args, out: &mut Vec<usize>) {
    if is_script(spec) {
        crate::table::numkeys_keys(args, 2, out);
    } else if is_shard_pubsub(spec.name) {
        let last = if spec.name == "spublish" {
            2
        } else {
            args.len()
        };
        out.extend(1..last.min(args.len()));
    } else {
        spec.key_indexes(args, out);
    }
}

/// Redis' getNodeByQuery: None to run here, or the error to answer with.
pub fn redirect(
    shared: &Shared,
    session: &Session,
    spec: &CommandSpec,
    args: &Args,
) -> Option<String> {
    if !shared.cluster_mode() || session.master_link || session.replaying || session.in_script {
        return None;
    }
    let exec = spec.name == "exec";
    if !exec
        && matches!(spec.keys, KeySpec::None)
        && !is_shard_pubsub(spec.name)
        && !is_script(spec)
    {
        return None;
    }
    // The lease before the view (see `Shared::cluster_lease_ms`).
    let lease = shared.cluster_lease_ms.load(Ordering::Acquire);
    let guard = shared.cluster_view.load();
    let view = guard.as_ref()?;
    // EXEC is judged on its whole queue, any other command on itself.
    let queued: &[(usize, Args)] = if exec {
        &session.multi.as_ref()?.queued
    } else {
        &[]
    };
    let this = (!exec).then_some((spec, args));
    let cmds = this.into_iter().chain(
        queued
            .iter()
            .filter_map(|(i, a)| shared.commands.get(*i).map(|s| (s, a))),
    );
    let mut slot: Option<Slot> = None;
    let mut first_key: Option<&[u8]> = None;
    let mut multiple_keys = false;
    let (mut missing, mut existing) = (0usize, 0usize);
    let mut owner = None;
    let mut migrating = false;
    let mut importing = false;
    let mut write = false;
    let mut shard_pubsub = false;
    // Stays unallocated for the common one-key command.
    let mut idx = Vec::new();
    for (s, a) in cmds {
        let single = single_key(s);
        let keys: &[usize] = match &single {
            Some(i) => std::slice::from_ref(i),
            None => {
                idx.clear();
                routed_args(s, a, &mut idx);
                &idx
            }
        };
        write |= s.has(WRITE) || (is_script(s) && crate::scripting::declares_writes(shared, s, a));
        shard_pubsub |= is_shard_pubsub(s.name);
        for &i in keys {
            let key = a.get(i).unwrap_or_default();
            let ks = key_slot(key);
            match slot {
                None => {
                    slot = Some(ks);
                    first_key = Some(key);
                    owner = view.owner(ks);
                    let Some(n) = owner else {
                        return Some("CLUSTERDOWN Hash slot not served".into());
                    };
                    migrating = n == view.myself && view.migrating.contains_key(&ks);
                    importing = view.importing.contains(&ks);
                }
                Some(first) if first != ks => {
                    return Some("CROSSSLOT Keys in request don't hash to the same slot".into());
                }
                Some(_) => {
                    if first_key != Some(key) {
                        multiple_keys = true;
                    }
                }
            }
            if (migrating || importing) && !is_shard_pubsub(s.name) {
                if Locked::lock_key(&shared.keyspace, 0, key).exists(key) {
                    existing += 1;
                } else {
                    missing += 1;
                }
            }
        }
    }
    let (Some(slot), Some(n)) = (slot, owner) else {
        return None;
    };
    // A master whose write lease ran out (no answer from enough masters for a node
    // timeout) may have lost its slots to a failover it has not learnt of yet (a
    // partition, or this process stopped and resumed): it stops serving them, as
    // Redis' minority side does once its timer marks the others failing. Checking the
    // lease here also covers the moment after a resume, before that timer or the bus
    // has run.
    let lease_lapsed = n == view.myself && lease != u64::MAX && now_ms() > lease;
    if !view.state_ok || lease_lapsed {
        if shard_pubsub {
            if !view.allow_pubsubshard_when_down {
                return Some("CLUSTERDOWN The cluster is down".into());
            }
        } else if !view.allow_reads_when_down {
            return Some("CLUSTERDOWN The cluster is down".into());
        } else if write {
            return Some("CLUSTERDOWN The cluster is down and only accepts read commands".into());
        }
    }
    if (migrating || importing) && spec.name == "migrate" {
        return None;
    }
    if migrating && missing > 0 {
        if existing > 0 {
            return Some("TRYAGAIN Multiple keys request during rehashing of slot".into());
        }
        let to = view.migrating.get(&slot).copied().unwrap_or(NO_OWNER);
        return Some(format!("ASK {slot} {}", view.addr(to)));
    }
    if importing && (session.asking || spec.name == "restore-asking") {
        if multiple_keys && missing > 0 {
            return Some("TRYAGAIN Multiple keys request during rehashing of slot".into());
        }
        return None;
    }
    // A replica serves its master's slots to READONLY clients for reads, and to
    // everyone for shard pub/sub (Redis' getNodeByQuery).
    if (session.cluster_readonly || shard_pubsub) && !write && view.my_master == Some(n) {
        return None;
    }
    if n != view.myself {
        return Some(format!("MOVED {slot} {}", view.addr(n)));
    }
    None
}

/// Under the command's table locks: if its slot is migrating from here and a key it
/// names is gone (MIGRATE moved it after admission), the ASK or TRYAGAIN it now gets.
pub fn recheck_migrating(
    shared: &Shared,
    session: &Session,
    spec: &CommandSpec,
    args: &Args,
    locked: &mut Locked<'_>,
) -> Option<String> {
    recheck_keys(shared, session, [(spec, args)], &mut |key| {
        locked.exists(key)
    })
}

/// [`recheck_migrating`] for the commands EXEC runs, under the locks it took on all their
/// tables (or with the world stopped): admission judged the queue before EXEC held
/// anything, and a write that ran after MIGRATE moved its key would land on a key that
/// already left, lost when the slot moves. `exists` looks a key up under those locks.
pub fn recheck_migrating_queue(
    shared: &Shared,
    session: &Session,
    queued: &[(usize, Args)],
    exists: &mut dyn FnMut(&[u8]) -> bool,
) -> Option<String> {
    let commands = queued
        .iter()
        .filter_map(|(i, a)| shared.commands.get(*i).map(|s| (s, a)));
    recheck_keys(shared, session, commands, exists)
}

/// This node is in cluster mode and moving at least one slot away.
pub fn slots_migrating(shared: &Shared) -> bool {
    shared.cluster_mode()
        && shared
            .cluster_view
            .load()
            .as_ref()
            .is_some_and(|view| !view.migrating.is_empty())
}

fn recheck_keys<'a>(
    shared: &Shared,
    session: &Session,
    commands: impl IntoIterator<Item = (&'a CommandSpec, &'a Args)>,
    exists: &mut dyn FnMut(&[u8]) -> bool,
) -> Option<String> {
    if !shared.cluster_mode() || session.master_link || session.replaying || session.in_script {
        return None;
    }
    let guard = shared.cluster_view.load();
    let view = guard.as_ref()?;
    if view.migrating.is_empty() {
        return None;
    }
    let (mut keys, mut idx) = (Vec::new(), Vec::new());
    for (spec, args) in commands {
        // MIGRATE answers for its own keys (NOKEY); shard channels are not keys here,
        // as admission leaves them out of the lookups.
        if spec.name == "migrate" || is_shard_pubsub(spec.name) {
            continue;
        }
        idx.clear();
        spec.key_indexes(args, &mut idx);
        keys.extend(idx.iter().map(|&i| args.get(i).unwrap_or_default()));
    }
    // Admission refused keys of more than one slot (CROSSSLOT): the first names it.
    let slot = key_slot(keys.first()?);
    let to = *view.migrating.get(&slot)?;
    if view.owner(slot) != Some(view.myself) {
        return None;
    }
    let existing = keys.iter().filter(|key| exists(key)).count();
    if existing == keys.len() {
        None
    } else if existing > 0 {
        Some("TRYAGAIN Multiple keys request during rehashing of slot".into())
    } else {
        Some(format!("ASK {slot} {}", view.addr(to)))
    }
}

pub fn specs() -> Vec<CommandSpec> {
    vec![
        cmd(
            "asking",
            1,
            FAST,
            KeySpec::None,
            asking,
            "cluster",
            "@fast @connection",
            "Sent by cluster clients after an -ASK redirect.",
        ),
        cmd(
            "readonly",
            1,
            FAST | LOADING | STALE,
            KeySpec::None,
            readonly,
            "cluster",
            "@fast @connection",
            "Enables read-only queries for a connection to a Redis Cluster replica node.",
        ),
        cmd(
            "readwrite",
            1,
            FAST | LOADING | STALE,
            KeySpec::None,
            readwrite,
            "cluster",
            "@fast @connection",
            "Enables read-write queries for a connection to a Redis Cluster replica node.",
        ),
    ]
}

fn cluster_enabled(ctx: &mut Ctx<'_, '_>) -> bool {
    if !ctx.shared.cluster_mode() {
        ctx.error("ERR This instance has cluster support disabled");
        return false;
    }
    true
}

fn asking(ctx: &mut Ctx<'_, '_>) {
    if cluster_enabled(ctx) {
        ctx.session.asking = true;
        ctx.reply.ok();
    }
}

fn readonly(ctx: &mut Ctx<'_, '_>) {
    if cluster_enabled(ctx) {
        ctx.session.cluster_readonly = true;
        ctx.reply.ok();
    }
}

fn readwrite(ctx: &mut Ctx<'_, '_>) {
    if cluster_enabled(ctx) {
        ctx.session.cluster_readonly = false;
        ctx.reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use carmine_resp::Args;
    use carmine_slots::{key_slot, SLOT_COUNT};

    use super::{recheck_migrating_queue, RouteView};
    use crate::{ClientInfo, Config, Session, Shared};

    /// A node that owns every slot and is moving `{k}`'s slot to 127.0.0.1:7001.
    fn migrating_node() -> Arc<Shared> {
        let shared = Shared::new(Config::new(), 1, None);
        assert!(shared.cluster_publish.set(Box::new(|_, _, _| {})).is_ok());
        let mut view = RouteView::empty();
        view.addrs = vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()];
        view.owners = vec![0; SLOT_COUNT].into_boxed_slice();
        view.migrating.insert(key_slot(b"{k}"), 1);
        view.state_ok = true;
        shared.cluster_view.store(Some(Arc::new(view)));
        shared
    }

    /// EXEC's queue is judged again under its locks: all its keys gone is ASK, some gone
    /// TRYAGAIN, none gone runs; a queue in a slot that is not migrating looks nothing up.
    #[test]
    fn an_exec_queue_whose_keys_left_a_migrating_slot_is_redirected() {
        let shared = migrating_node();
        let info = Arc::new(ClientInfo::new(1, String::new(), String::new(), -1, 0));
        let session = Session::new(info, 0, true);
        let command = |words: &[&str]| {
            let idx = shared
                .commands
                .lookup(words[0].as_bytes())
                .expect("known command");
            (idx, Args::from_slices(words))
        };
        let queue = vec![
            command(&["SET", "{k}a", "1"]),
            command(&["GET", "{k}b"]),
            command(&["PING"]),
        ];
        let slot = key_slot(b"{k}");
        let asked = recheck_migrating_queue(&shared, &session, &queue, &mut |_| false);
        assert_eq!(asked, Some(format!("ASK {slot} 127.0.0.1:7001")));
        let some_here = recheck_migrating_queue(&shared, &session, &queue, &mut |k| k == b"{k}a");
        assert_eq!(
            some_here.as_deref(),
            Some("TRYAGAIN Multiple keys request during rehashing of slot")
        );
        assert_eq!(
            recheck_migrating_queue(&shared, &session, &queue, &mut |_| true),
            None
        );
        let elsewhere = vec![command(&["SET", "{other}a", "1"])];
        assert_ne!(key_slot(b"{other}"), slot);
        let looked_up = recheck_migrating_queue(&shared, &session, &elsewhere, &mut |_| {
            panic!("a key of a slot not migrating was looked up")
        });
        assert_eq!(looked_up, None);
        // A replica's stream and an AOF replay are never redirected.
        let mut replaying = Session::new(session.info.clone(), 0, true);
        replaying.replaying = true;
        assert_eq!(
            recheck_migrating_queue(&shared, &replaying, &queue, &mut |_| false),
            None
        );
    }
}
