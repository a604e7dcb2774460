//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH. EXEC itself runs in the dispatcher,
//! which owns the locking a transaction needs.

use std::sync::atomic::Ordering;

use crate::state::{MultiState, WatchedKey};
use crate::table::{cmd, flags::*, keys, CommandSpec, KeySpec};
use crate::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let g = "transactions";
    let acl = "@fast @transaction";
    vec![
        cmd(
            "multi",
            1,
            NO_QUEUE | NOSCRIPT | LOADING | STALE | FAST,
            KeySpec::None,
            multi,
            g,
            acl,
            "Starts a transaction.",
        ),
        cmd(
            "exec",
            1,
            NO_QUEUE | NOSCRIPT | LOADING | STALE,
            KeySpec::None,
            exec_outside_dispatcher,
            g,
            "@slow @transaction",
            "Executes all commands in a transaction.",
        ),
        cmd(
            "discard",
            1,
            NO_QUEUE | NOSCRIPT | LOADING | STALE | FAST,
            KeySpec::None,
            discard,
            g,
            acl,
            "Discards a transaction.",
        ),
        cmd(
            "watch",
            -2,
            NO_QUEUE | NOSCRIPT | LOADING | STALE | FAST,
            keys(1, -1, 1),
            watch,
            g,
            acl,
            "Monitors changes to keys to determine the execution of a transaction.",
        ),
        cmd(
            "unwatch",
            1,
            NO_QUEUE | NOSCRIPT | LOADING | STALE | FAST,
            KeySpec::None,
            unwatch,
            g,
            acl,
            "Forgets about watched keys of a transaction.",
        ),
    ]
}

fn multi(ctx: &mut Ctx<'_, '_>) {
    if ctx.session.multi.is_some() {
        return ctx.error("ERR MULTI calls can not be nested");
    }
    ctx.session.multi = Some(MultiState::default());
    ctx.session.info.multi.store(0, Ordering::Relaxed);
    ctx.reply.ok();
}

fn exec_outside_dispatcher(ctx: &mut Ctx<'_, '_>) {
    // The dispatcher intercepts EXEC; reaching this means it was called another way.
    ctx.error("ERR EXEC without MULTI");
}

fn discard(ctx: &mut Ctx<'_, '_>) {
    if ctx.session.multi.take().is_none() {
        return ctx.error("ERR DISCARD without MULTI");
    }
    ctx.session.info.multi.store(-1, Ordering::Relaxed);
    ctx.session.unwatch_all(&ctx.shared.keyspace);
    ctx.reply.ok();
}

fn watch(ctx: &mut Ctx<'_, '_>) {
    if ctx.session.multi.is_some() {
        return ctx.error("ERR WATCH inside MULTI is not allowed");
    }
    let db = ctx.session.db;
    for i in 1..ctx.args.len() {
        let key = ctx.arg(i).to_vec();
        if ctx
            .session
            .watched
            .iter()
            .any(|w| w.db == db && w.key == key)
        {
            continue;
        }
        // The key's table is locked, so no write can slip between these two reads.
        let expire_at = ctx.l.get_untouched(&key).map_or(0, |e| e.expire_at());
        let Some(registry) = ctx.shared.keyspace.db_ref(db) else {
            continue;
        };
        let version = registry.watch().watch(&key);
        ctx.session.watched.push(WatchedKey {
            db,
            key,
            version,
            expire_at,
        });
    }
    ctx.reply.ok();
}

fn unwatch(ctx: &mut Ctx<'_, '_>) {
    ctx.session.unwatch_all(&ctx.shared.keyspace);
    ctx.reply.ok();
}
