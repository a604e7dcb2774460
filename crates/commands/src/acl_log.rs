//! ACL LOG: the security events Redis 7.0 records (a command, key or channel refused by
//! a user's permissions, a failed AUTH), newest first, similar events within a minute
//! grouped into one entry with a count, at most `acllog-max-len` entries.

use std::collections::VecDeque;

use carmine_resp::ReplyBuf;
use parking_lot::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Command,
    Key,
    Channel,
    Auth,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::Command => "command",
            Reason::Key => "key",
            Reason::Channel => "channel",
            Reason::Auth => "auth",
        }
    }
}

/// Where the refused command came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    TopLevel,
    Multi,
    Lua,
}

impl Context {
    fn name(self) -> &'static str {
        match self {
            Context::TopLevel => "toplevel",
            Context::Multi => "multi",
            Context::Lua => "lua",
        }
    }
}

struct Entry {
    count: u64,
    reason: Reason,
    context: Context,
    object: Vec<u8>,
    username: String,
    /// When it last happened (Unix ms).
    at_ms: u64,
    client_info: String,
}

/// Events this far apart or closer are one entry (Redis' grouping window).
const GROUPING_MS: u64 = 60_000;
/// How many of the newest entries a new event is compared with.
const SCANNED: usize = 10;

#[derive(Default)]
pub struct AclLog {
    entries: Mutex<VecDeque<Entry>>,
}

/// One event for [`AclLog::record`].
pub struct Event<'a> {
    pub reason: Reason,
    pub context: Context,
    pub object: &'a [u8],
    pub username: &'a str,
    pub client_info: String,
}

/// Records `event` in the server's ACL LOG, now, bounded by `acllog-max-len`.
pub fn record(shared: &crate::Shared, event: Event<'_>) {
    let max_len = shared.config.get_i64("acllog-max-len").max(0) as usize;
    shared
        .acl
        .log
        .record(event, carmine_keyspace::now_ms(), max_len);
}

impl AclLog {
    /// Records an event at `now_ms`: a similar recent one (same reason, context, object
    /// and user, within a minute, among the newest ten) counts it and moves to the front;
    /// otherwise a new entry goes in front and the oldest past `max_len` are dropped.
    pub fn record(&self, event: Event<'_>, now_ms: u64, max_len: usize) {
        let mut entries = self.entries.lock();
        let similar = entries.iter().take(SCANNED).position(|e| {
            e.reason == event.reason
                && e.context == event.context
                && e.at_ms.abs_diff(now_ms) <= GROUPING_MS
                && e.object == event.object
                && e.username == event.username
        });
        match similar.and_then(|i| entries.remove(i)) {
            Some(mut e) => {
                e.count += 1;
                e.at_ms = now_ms;
                e.client_info = event.client_info;
                entries.push_front(e);
            }
            None => {
                entries.push_front(Entry {
                    count: 1,
                    reason: event.reason,
                    context: event.context,
                    object: event.object.to_vec(),
                    username: event.username.to_string(),
                    at_ms: now_ms,
                    client_info: event.client_info,
                });
                entries.truncate(max_len);
            }
        }
    }

    pub fn reset(&self) {
        self.entries.lock().clear();
    }

    /// ACL LOG [count]: the newest `count` entries, each a map of Redis' seven fields.
    pub fn reply(&self, count: usize, now_ms: u64, out: &mut ReplyBuf) {
        let entries = self.entries.lock();
        let n = count.min(entries.len());
        out.array(n);
        for e in entries.iter().take(n) {
            out.map(7);
            out.bulk(b"count");
            out.int(e.count as i64);
            out.bulk(b"reason");
            out.bulk(e.reason.name().as_bytes());
            out.bulk(b"context");
            out.bulk(e.context.name().as_bytes());
            out.bulk(b"object");
            out.bulk(&e.object);
            out.bulk(b"username");
            out.bulk(e.username.as_bytes());
            out.bulk(b"age-seconds");
            out.double(now_ms.saturating_sub(e.at_ms) as f64 / 1000.0);
            out.bulk(b"client-info");
            out.bulk(e.client_info.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(object: &'a [u8], username: &'a str) -> Event<'a> {
        Event {
            reason: Reason::Command,
            context: Context::TopLevel,
            object,
            username,
            client_info: String::new(),
        }
    }

    fn counts(log: &AclLog) -> Vec<(Vec<u8>, u64)> {
        log.entries
            .lock()
            .iter()
            .map(|e| (e.object.clone(), e.count))
            .collect()
    }

    /// Similar events within a minute group, newest first; a minute later, or another
    /// object or user, is a new entry; the oldest go past the maximum length.
    #[test]
    fn events_group_within_a_minute_and_the_log_is_bounded() {
        let log = AclLog::default();
        log.record(event(b"get", "u"), 1_000, 3);
        log.record(event(b"set", "u"), 2_000, 3);
        log.record(event(b"get", "u"), 3_000, 3);
        assert_eq!(
            counts(&log),
            vec![(b"get".to_vec(), 2), (b"set".to_vec(), 1)]
        );
        log.record(event(b"get", "other"), 4_000, 3);
        log.record(event(b"get", "u"), 3_000 + GROUPING_MS + 1, 3);
        assert_eq!(
            counts(&log),
            vec![
                (b"get".to_vec(), 1),
                (b"get".to_vec(), 1),
                (b"get".to_vec(), 2)
            ],
            "the oldest (set) dropped past 3 entries"
        );
        log.reset();
        assert!(counts(&log).is_empty());
    }
}
