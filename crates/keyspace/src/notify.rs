//! Keyspace notifications (`notify-keyspace-events`): event classes, their flag letters,
//! and the hook through which the keyspace reports events. The keyspace knows which key
//! changed and how; the server behind the hook knows how to publish.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

pub const KEYSPACE: u32 = 1 << 0;
pub const KEYEVENT: u32 = 1 << 1;
pub const GENERIC: u32 = 1 << 2;
pub const STRING: u32 = 1 << 3;
pub const LIST: u32 = 1 << 4;
pub const SET: u32 = 1 << 5;
pub const HASH: u32 = 1 << 6;
pub const ZSET: u32 = 1 << 7;
pub const EXPIRED: u32 = 1 << 8;
pub const EVICTED: u32 = 1 << 9;
pub const STREAM: u32 = 1 << 10;
pub const KEY_MISS: u32 = 1 << 11;
pub const MODULE: u32 = 1 << 12;
pub const NEW: u32 = 1 << 13;
/// `A`: every class except key-miss and new-key events.
pub const ALL: u32 =
    GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

const LETTERS: &[(char, u32)] = &[
    ('g', GENERIC),
    ('$', STRING),
    ('l', LIST),
    ('s', SET),
    ('h', HASH),
    ('z', ZSET),
    ('x', EXPIRED),
    ('e', EVICTED),
    ('t', STREAM),
    ('d', MODULE),
    ('n', NEW),
];

/// Parses a `notify-keyspace-events` value; None on an unknown letter.
pub fn parse_flags(s: &str) -> Option<u32> {
    let mut flags = 0;
    for c in s.chars() {
        flags |= match c {
            'A' => ALL,
            'K' => KEYSPACE,
            'E' => KEYEVENT,
            'm' => KEY_MISS,
            _ => LETTERS.iter().find(|(l, _)| *l == c)?.1,
        };
    }
    Some(flags)
}

/// The canonical text CONFIG GET shows for `flags`.
pub fn flags_to_string(flags: u32) -> String {
    let mut s = String::new();
    // As Redis 7.0 prints it: with `A`, a set `n` is not shown (it still applies).
    if flags & ALL == ALL {
        s.push('A');
    } else {
        s.extend(
            LETTERS
                .iter()
                .filter(|(_, f)| flags & f != 0)
                .map(|(l, _)| *l),
        );
    }
    for (l, f) in [('K', KEYSPACE), ('E', KEYEVENT), ('m', KEY_MISS)] {
        if flags & f != 0 {
            s.push(l);
        }
    }
    s
}

/// Receives events: (database, enabled flags, class, event name, key).
pub type Hook = Arc<dyn Fn(usize, u32, u32, &str, &[u8]) + Send + Sync>;

/// Told of a key that expired or was evicted.
pub type GoneHook = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The enabled classes and where events go.
#[derive(Default)]
pub struct Notifier {
    flags: AtomicU32,
    hook: OnceLock<Hook>,
    /// Told of every key that expires or is evicted, whatever the enabled classes
    /// (client-side caching invalidates it).
    gone: OnceLock<GoneHook>,
}

impl Notifier {
    pub fn set_flags(&self, flags: u32) {
        self.flags.store(flags, Ordering::Relaxed);
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Installs the hook; the first one installed stays.
    pub fn set_hook(&self, hook: Hook) {
        let _ = self.hook.set(hook);
    }

    /// Installs the hook told of expired and evicted keys; the first one stays.
    pub fn set_gone_hook(&self, hook: GoneHook) {
        let _ = self.gone.set(hook);
    }

    /// Reports an event of `class` if that class is enabled (one atomic load otherwise).
    #[inline]
    pub fn notify(&self, db: usize, class: u32, event: &str, key: &[u8]) {
        if class & (EXPIRED | EVICTED) != 0 {
            if let Some(g) = self.gone.get() {
                g(key);
            }
        }
        if !self.wants(class) {
            return;
        }
        if let Some(h) = self.hook.get() {
            h(db, self.flags(), class, event, key);
        }
    }

    /// Whether an event of `class` would reach anyone: the class is on, and `K` or `E`.
    #[inline]
    pub fn wants(&self, class: u32) -> bool {
        let flags = self.flags();
        flags & class != 0 && flags & (KEYSPACE | KEYEVENT) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_as_redis_prints_them() {
        for (input, canonical) in [
            ("", ""),
            ("KEA", "AKE"),
            ("Kg$", "g$K"),
            ("Elshzxetdg$", "AE"),
            ("AKEmn", "AKEm"),
            ("xE", "xE"),
        ] {
            let f = parse_flags(input).expect("valid");
            assert_eq!(flags_to_string(f), canonical, "{input}");
        }
        assert_eq!(parse_flags("KEq"), None);
    }

    #[test]
    fn events_reach_the_hook_only_for_enabled_classes() {
        let n = Notifier::default();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let s = seen.clone();
        n.set_hook(Arc::new(move |db, _, _, ev, key| {
            s.lock().push((db, ev.to_string(), key.to_vec()));
        }));
        n.notify(0, GENERIC, "del", b"k");
        n.set_flags(parse_flags("Kg").expect("valid"));
        n.notify(1, GENERIC, "del", b"k");
        n.notify(1, LIST, "lpush", b"k");
        assert_eq!(*seen.lock(), vec![(1, "del".to_string(), b"k".to_vec())]);
    }
}
