//! Pub/Sub: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, SSUBSCRIBE,
//! SUNSUBSCRIBE, SPUBLISH, PUBSUB CHANNELS/NUMSUB/NUMPAT/SHARDCHANNELS/SHARDNUMSUB.
//!
//! Subscribers may live on any event loop. PUBLISH encodes the message once per protocol
//! and hands it to each subscriber's delivery hook (installed by the server: a channel to
//! the owning loop plus a wake-up). Fan-out for one channel happens under that channel's
//! lock, so every subscriber sees one channel's messages in the same order.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use carmine_keyspace::glob_match;
use carmine_resp::ReplyBuf;
use parking_lot::{Mutex, RwLock};

use crate::state::ClientInfo;
use crate::table::{cmd, flags::*, CommandSpec, KeySpec};
use crate::Ctx;

type Subscribers = Mutex<BTreeMap<u64, Arc<ClientInfo>>>;

/// Who listens to what.
#[derive(Default)]
pub struct PubSub {
    channels: RwLock<HashMap<Vec<u8>, Arc<Subscribers>>>,
    shard_channels: RwLock<HashMap<Vec<u8>, Arc<Subscribers>>>,
    /// Pattern -> subscribers; patterns are matched against every published channel.
    patterns: RwLock<HashMap<Vec<u8>, Arc<Subscribers>>>,
}

/// Which namespace a subscription lives in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Channel,
    Pattern,
    Shard,
}

impl Kind {
    fn subscribe_word(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"subscribe",
            Kind::Pattern => b"psubscribe",
            Kind::Shard => b"ssubscribe",
        }
    }

    fn unsubscribe_word(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"unsubscribe",
            Kind::Pattern => b"punsubscribe",
            Kind::Shard => b"sunsubscribe",
        }
    }
}

impl PubSub {
    fn map(&self, kind: Kind) -> &RwLock<HashMap<Vec<u8>, Arc<Subscribers>>> {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shard_channels,
        }
    }

    fn add(&self, kind: Kind, name: &[u8], client: &Arc<ClientInfo>) {
        let entry = {
            let mut map = self.map(kind).write();
            map.entry(name.to_vec()).or_default().clone()
        };
        entry.lock().insert(client.id, client.clone());
    }

    fn remove(&self, kind: Kind, name: &[u8], id: u64) {
        let mut map = self.map(kind).write();
        if let Some(subs) = map.get(name) {
            let mut s = subs.lock();
            s.remove(&id);
            let empty = s.is_empty();
            drop(s);
            if empty {
                map.remove(name);
            }
        }
    }

    /// Every subscription of client `id`, of each kind (a walk over all subscriptions:
    /// for the rare ACL change that must re-check a user's subscribers).
    pub fn subscriptions_of(&self, id: u64) -> Vec<(Kind, Vec<u8>)> {
        let mut out = Vec::new();
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            let map = self.map(kind).read();
            for (name, subs) in map.iter() {
                if subs.lock().contains_key(&id) {
                    out.push((kind, name.clone()));
                }
            }
        }
        out
    }

    /// Channels (or shard channels) with at least one subscriber, matching `pattern`.
    pub fn active(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
        self.map(kind)
            .read()
            .keys()
            .filter(|c| pattern.is_none_or(|p| glob_match(p, c)))
            .cloned()
            .collect()
    }

    pub fn count(&self, kind: Kind, name: &[u8]) -> usize {
        self.map(kind)
            .read()
            .get(name)
            .map_or(0, |s| s.lock().len())
    }

    /// Shard channels whose slot is in `slots` (sorted), with their subscribers.
    pub fn shard_subscribers_in(
        &self,
        slots: &[carmine_slots::Slot],
    ) -> Vec<(Vec<u8>, Vec<Arc<ClientInfo>>)> {
        let chosen: Vec<(Vec<u8>, Arc<Subscribers>)> = self
            .shard_channels
            .read()
            .iter()
            .filter(|(c, _)| slots.binary_search(&carmine_slots::key_slot(c)).is_ok())
            .map(|(c, s)| (c.clone(), s.clone()))
            .collect();
        chosen
            .into_iter()
            .map(|(c, s)| {
                let clients = s.lock().values().cloned().collect();
                (c, clients)
            })
            .collect()
    }

    pub fn patterns_len(&self) -> usize {
        self.patterns.read().len()
    }

    pub fn channels_len(&self) -> usize {
        self.channels.read().len()
    }

    /// Delivers a message; returns how many clients received it.
    pub fn publish(&self, kind: Kind, channel: &[u8], message: &[u8]) -> usize {
        let mut delivered = 0;
        let encode = |resp3: bool, parts: &[&[u8]]| {
            let size = 16 + parts.iter().map(|p| p.len() + 16).sum::<usize>();
            let mut r = ReplyBuf::with_capacity(resp3, size);
            r.push(parts.len());
            for p in parts {
                r.bulk(p);
            }
            r.out.freeze()
        };
        let word: &[u8] = if kind == Kind::Shard {
            b"smessage"
        } else {
            b"message"
        };
        let direct = self.map(kind).read().get(channel).cloned();
        if let Some(subs) = direct {
            let (m2, m3) = (
                encode(false, &[word, channel, message]),
                encode(true, &[word, channel, message]),
            );
            let subs = subs.lock();
            for c in subs.values() {
                delivered += usize::from(deliver(c, &m2, &m3));
            }
        }
        if kind == Kind::Channel {
            let patterns: Vec<(Vec<u8>, Arc<Subscribers>)> = self
                .patterns
                .read()
                .iter()
                .filter(|(p, _)| glob_match(p, channel))
                .map(|(p, s)| (p.clone(), s.clone()))
                .collect();
            for (p, subs) in patterns {
                let parts: [&[u8]; 4] = [b"pmessage", &p, channel, message];
                let (m2, m3) = (encode(false, &parts), encode(true, &parts));
                let subs = subs.lock();
                for c in subs.values() {
                    delivered += usize::from(deliver(c, &m2, &m3));
                }
            }
        }
        delivered
    }
}

fn deliver(c: &ClientInfo, resp2: &Bytes, resp3: &Bytes) -> bool {
    let msg = if c.resp.load(Ordering::Relaxed) == 3 {
        resp3
    } else {
        resp2
    };
    match c.deliver.lock().as_ref() {
        Some(hook) => {
            hook(msg.clone());
            true
        }
        None => false,
    }
}

pub fn commands() -> Vec<CommandSpec> {
    let g = "pubsub";
    let acl = "@pubsub @slow";
    vec![
        cmd(
            "subscribe",
            -2,
            PUBSUB | NOSCRIPT | LOADING | STALE | REPLY_PER_ARG,
            KeySpec::None,
            subscribe,
            g,
            acl,
            "Listens for messages published to channels.",
        ),
        cmd(
            "unsubscribe",
            -1,
            PUBSUB | NOSCRIPT | LOADING | STALE | REPLY_PER_ARG,
            KeySpec::None,
            unsubscribe,
            g,
            acl,
            "Stops listening to messages posted to channels.",
        ),
        cmd(
            "psubscribe",
            -2,
            PUBSUB | NOSCRIPT | LOADING | STALE | REPLY_PER_ARG,
            KeySpec::None,
            psubscribe,
            g,
            acl,
            "Listens for messages published to channels that match one or more patterns.",
        ),
        cmd(
            "punsubscribe",
            -1,
            PUBSUB | NOSCRIPT | LOADING | STALE | REPLY_PER_ARG,
            KeySpec::None,
            punsubscribe,
            g,
            acl,
            "Stops listening to messages published to channels that match one or more patterns.",
        ),
        cmd(
            "ssubscribe",
            -2,
            PUBSUB | NOSCRIPT | LOADING | STALE | REPLY_PER_ARG,
            KeySpec::None,
            ssubscribe,
            g,
            acl,
            "Listens for messages published to shard channels.",
        ),
        cmd(
            "sunsubscribe",
            -1,
            PUBSUB | NOSCRIPT | LOADING | STALE | REPLY_PER_ARG,
            KeySpec::None,
            sunsubscribe,
            g,
            acl,
            "Stops listening to messages posted to shard channels.",
        ),
        cmd(
            "publish",
            3,
            PUBSUB | LOADING | STALE | FAST | MAY_REPLICATE,
            KeySpec::None,
            publish,
            g,
            "@pubsub @fast",
            "Posts a message to a channel.",
        ),
        cmd(
            "spublish",
            3,
            PUBSUB | LOADING | STALE | FAST | MAY_REPLICATE,
            KeySpec::None,
            spublish,
            g,
            "@pubsub @fast",
            "Post a message to a shard channel",
        ),
        CommandSpec {
            subcommands: &[
                "channels",
                "numsub",
                "numpat",
                "shardchannels",
                "shardnumsub",
                "help",
            ],
            ..cmd(
                "pubsub",
                -2,
                PUBSUB | LOADING | STALE,
                KeySpec::None,
                pubsub,
                g,
                acl,
                "A container for Pub/Sub commands.",
            )
        },
    ]
}

/// Commands a RESP2 client may send while subscribed (Redis' subscriber mode).
pub fn allowed_in_subscriber_mode(name: &str) -> bool {
    matches!(
        name,
        "subscribe"
            | "unsubscribe"
            | "psubscribe"
            | "punsubscribe"
            | "ssubscribe"
            | "sunsubscribe"
            | "ping"
            | "quit"
            | "reset"
    )
}

fn confirm(ctx: &mut Ctx<'_, '_>, word: &[u8], name: Option<&[u8]>) {
    let total = ctx.session.subscriptions();
    ctx.reply.push(3);
    ctx.reply.bulk(word);
    match name {
        Some(n) => ctx.reply.bulk(n),
        None => ctx.reply.null(),
    }
    ctx.reply.int(total as i64);
}

fn subscribe_generic(ctx: &mut Ctx<'_, '_>, kind: Kind) {
    if ctx.session.multi.is_some() && kind != Kind::Shard {
        // Redis allows SUBSCRIBE in MULTI; the confirmation goes into EXEC's reply.
    }
    for i in 1..ctx.args.len() {
        let name = ctx.arg(i).to_vec();
        if ctx.session.subs_mut(kind).insert(name.clone()) {
            ctx.shared.pubsub.add(kind, &name, &ctx.session.info);
        }
        confirm(ctx, kind.subscribe_word(), Some(&name));
    }
}

fn unsubscribe_generic(ctx: &mut Ctx<'_, '_>, kind: Kind) {
    let names: Vec<Vec<u8>> = if ctx.args.len() > 1 {
        (1..ctx.args.len()).map(|i| ctx.arg(i).to_vec()).collect()
    } else {
        ctx.session.subs_mut(kind).iter().cloned().collect()
    };
    if names.is_empty() {
        return confirm(ctx, kind.unsubscribe_word(), None);
    }
    for name in names {
        if ctx.session.subs_mut(kind).remove(&name) {
            ctx.shared.pubsub.remove(kind, &name, ctx.session.id());
        }
        confirm(ctx, kind.unsubscribe_word(), Some(&name));
    }
}

fn subscribe(ctx: &mut Ctx<'_, '_>) {
    subscribe_generic(ctx, Kind::Channel);
}

fn psubscribe(ctx: &mut Ctx<'_, '_>) {
    subscribe_generic(ctx, Kind::Pattern);
}

fn ssubscribe(ctx: &mut Ctx<'_, '_>) {
    subscribe_generic(ctx, Kind::Shard);
}

fn unsubscribe(ctx: &mut Ctx<'_, '_>) {
    unsubscribe_generic(ctx, Kind::Channel);
}

fn punsubscribe(ctx: &mut Ctx<'_, '_>) {
    unsubscribe_generic(ctx, Kind::Pattern);
}

fn sunsubscribe(ctx: &mut Ctx<'_, '_>) {
    unsubscribe_generic(ctx, Kind::Shard);
}

/// A standalone master sends messages on to its replicas, whose subscribers get them too
/// (Redis 7.0 forces PUBLISH and SPUBLISH into the replication stream).
/// Where a message goes beyond this server's subscribers: in cluster mode to the other
/// nodes over the bus (PUBLISH to all, SPUBLISH to the shard), as Redis 7.0 sends it
/// instead of on the replication stream; otherwise to the replicas.
fn replicate(ctx: &mut Ctx<'_, '_>, name: &[u8]) {
    if let Some(bus) = ctx.shared.cluster_publish.get() {
        if !ctx.session.master_link {
            bus(ctx.arg(1), ctx.arg(2), name == b"SPUBLISH");
        }
        ctx.l.propagate_nothing();
        return;
    }
    let argv = vec![name.to_vec(), ctx.arg(1).to_vec(), ctx.arg(2).to_vec()];
    ctx.l.propagate_instead(argv);
}

fn publish(ctx: &mut Ctx<'_, '_>) {
    let n = ctx
        .shared
        .pubsub
        .publish(Kind::Channel, ctx.arg(1), ctx.arg(2));
    replicate(ctx, b"PUBLISH");
    ctx.reply.int(n as i64);
}

fn spublish(ctx: &mut Ctx<'_, '_>) {
    let n = ctx
        .shared
        .pubsub
        .publish(Kind::Shard, ctx.arg(1), ctx.arg(2));
    replicate(ctx, b"SPUBLISH");
    ctx.reply.int(n as i64);
}

const PUBSUB_HELP: &[&str] = &[
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Print this help.",
];

fn pubsub(ctx: &mut Ctx<'_, '_>) {
    let sub = ctx.arg(1).to_ascii_lowercase();
    let ps = &ctx.shared.pubsub;
    match (sub.as_slice(), ctx.args.len()) {
        (b"channels" | b"shardchannels", 2 | 3) => {
            let kind = if sub == b"channels" {
                Kind::Channel
            } else {
                Kind::Shard
            };
            let pattern = ctx.args.get(2).map(<[u8]>::to_vec);
            let list = ps.active(kind, pattern.as_deref());
            ctx.reply.array(list.len());
            for c in list {
                ctx.reply.bulk(&c);
            }
        }
        (b"numsub" | b"shardnumsub", n) => {
            let kind = if sub == b"numsub" {
                Kind::Channel
            } else {
                Kind::Shard
            };
            ctx.reply.map(n - 2);
            for i in 2..n {
                let name = ctx.arg(i).to_vec();
                let count = ps.count(kind, &name);
                ctx.reply.bulk(&name);
                ctx.reply.int(count as i64);
            }
        }
        (b"numpat", 2) => ctx.reply.int(ps.patterns_len() as i64),
        (b"help", 2) => crate::connection::help_reply(ctx, PUBSUB_HELP),
        _ => ctx.unknown_subcommand(),
    }
}

/// On the client's own loop: ends its subscription to a shard channel whose slot this
/// node no longer serves, with the `sunsubscribe` message Redis sends (a push in RESP3),
/// counting what it is still subscribed to. Nothing if it unsubscribed meanwhile.
pub fn revoke_shard_channel(
    ps: &PubSub,
    session: &mut crate::state::Session,
    reply: &mut ReplyBuf,
    channel: &[u8],
) {
    if !session.subs_mut(Kind::Shard).remove(channel) {
        return;
    }
    ps.remove(Kind::Shard, channel, session.id());
    let total = session.subscriptions();
    reply.push(3);
    reply.bulk(Kind::Shard.unsubscribe_word());
    reply.bulk(channel);
    reply.int(total as i64);
}

/// Removes every subscription of a disconnecting client.
pub fn drop_client(ps: &PubSub, session: &mut crate::state::Session) {
    for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
        let names: Vec<Vec<u8>> = session.subs_mut(kind).drain().collect();
        for n in names {
            ps.remove(kind, &n, session.id());
        }
    }
}
