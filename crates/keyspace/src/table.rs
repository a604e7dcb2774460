//! The single-owner core: one slot's keys. No locks here; the concurrent [`crate::Keyspace`]
//! wraps each table in a mutex, and an embedder with its own threading model can use
//! tables directly.

use hashbrown::HashMap;

use crate::value::Entry;

/// An owned key: inline up to 22 bytes, boxed beyond.
pub type Key = crate::compact::CompactKey;

/// The keys of one cluster slot in one database.
#[derive(Debug, Default, Clone)]
pub struct SlotTable {
    map: HashMap<Key, Entry>,
    /// How many entries carry a deadline: active expiry skips tables where this is 0.
    volatile: usize,
    /// The last snapshot epoch this table was captured for (see `Keyspace::begin_snapshot`).
    pub(crate) snapshot_epoch: u64,
}

impl SlotTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries with a deadline.
    pub fn volatile_len(&self) -> usize {
        self.volatile
    }

    /// The entry, ignoring deadlines (the caller decides what expired means).
    #[inline]
    pub fn peek(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    /// Mutable access to an entry; the deadline can only be changed through
    /// [`SlotTable::set_expire`].
    #[inline]
    pub fn peek_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.map.get_mut(key)
    }

    /// Inserts or replaces; returns the previous entry.
    pub fn insert(&mut self, key: &[u8], entry: Entry) -> Option<Entry> {
        let new_volatile = entry.expire_at != 0;
        if let Some(slot) = self.map.get_mut(key) {
            let old = std::mem::replace(slot, entry);
            match (old.expire_at != 0, new_volatile) {
                (true, false) => self.volatile -= 1,
                (false, true) => self.volatile += 1,
                _ => {}
            }
            return Some(old);
        }
        if new_volatile {
            self.volatile += 1;
        }
        self.map.insert(key.into(), entry);
        None
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let old = self.map.remove(key)?;
        if old.expire_at != 0 {
            self.volatile -= 1;
        }
        Some(old)
    }

    /// Sets (or with 0 clears) a key's deadline; false if the key is absent.
    pub fn set_expire(&mut self, key: &[u8], at_ms: u64) -> bool {
        let Some(e) = self.map.get_mut(key) else {
            return false;
        };
        match (e.expire_at != 0, at_ms != 0) {
            (true, false) => self.volatile -= 1,
            (false, true) => self.volatile += 1,
            _ => {}
        }
        e.expire_at = at_ms;
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Entry)> {
        self.map.iter().map(|(k, v)| (&**k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.map.keys().map(|k| &**k)
    }

    /// The n-th key in iteration order (RANDOMKEY picks n at random).
    pub fn nth_key(&self, n: usize) -> Option<&[u8]> {
        self.map.keys().nth(n).map(|k| &**k)
    }

    /// Removes every expired entry, calling `on_expired` with each key; returns how many
    /// entries were examined (those with deadlines) and how many were removed.
    pub fn remove_expired(
        &mut self,
        now_ms: u64,
        mut on_expired: impl FnMut(&[u8]),
    ) -> (usize, usize) {
        if self.volatile == 0 {
            return (0, 0);
        }
        let examined = self.volatile;
        let before = self.map.len();
        self.map.retain(|k, e| {
            if e.is_expired(now_ms) {
                on_expired(k);
                false
            } else {
                true
            }
        });
        let removed = before - self.map.len();
        self.volatile -= removed;
        (examined, removed)
    }

    pub fn clear(&mut self) {
        self.map = HashMap::new();
        self.volatile = 0;
    }

    /// Approximate bytes used by this table's keys and values.
    pub fn memory_estimate(&self) -> usize {
        let per_bucket = std::mem::size_of::<(Key, Entry)>() + 1;
        let mut total = self.map.capacity() * per_bucket;
        for (k, e) in &self.map {
            total += k.heap_size() + e.value.heap_size();
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{StrValue, Value};

    fn val(s: &str) -> Value {
        Value::Str(StrValue::from_bytes(s.as_bytes()))
    }

    #[test]
    fn volatile_count_follows_every_change() {
        let mut t = SlotTable::new();
        t.insert(b"a", Entry::with_expiry(val("1"), 100));
        t.insert(b"b", Entry::new(val("2")));
        assert_eq!(t.volatile_len(), 1);
        t.set_expire(b"b", 50);
        assert_eq!(t.volatile_len(), 2);
        t.insert(b"a", Entry::new(val("3")));
        assert_eq!(t.volatile_len(), 1);
        let mut gone = Vec::new();
        assert_eq!(t.remove_expired(60, |k| gone.push(k.to_vec())), (1, 1));
        assert_eq!(gone, vec![b"b".to_vec()]);
        assert_eq!(t.volatile_len(), 0);
        assert_eq!(t.len(), 1);
        t.set_expire(b"a", 10);
        t.remove(b"a");
        assert_eq!(t.volatile_len(), 0);
    }
}
