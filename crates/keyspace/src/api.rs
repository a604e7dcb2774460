//! The typed embedding API: what a Rust program calls instead of sending commands.

use std::time::Duration;

use crate::error::KeyspaceError;
use crate::keyspace::{Keyspace, Locked};
use crate::ops::{self, ExpireCondition, SetOptions, SetOutcome, Ttl};
use crate::pattern::glob_match;

/// Typed access to one database of a [`Keyspace`]. Cheap to create; every call locks only
/// the table(s) of the keys it touches, so handles are used freely from many threads.
#[derive(Clone, Copy)]
pub struct DbHandle<'a> {
    ks: &'a Keyspace,
    db: usize,
}

impl<'a> DbHandle<'a> {
    pub(crate) fn new(ks: &'a Keyspace, db: usize) -> Self {
        DbHandle { ks, db }
    }

    fn lock(&self, key: &[u8]) -> Locked<'a> {
        Locked::lock_key(self.ks, self.db, key)
    }

    /// The string at `key`; WRONGTYPE if the key holds another type.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(ops::get_str(&mut l, key)?.map(|s| s.to_vec()))
    }

    /// Plain SET: stores the value and clears any deadline.
    pub fn set(&self, key: &[u8], value: &[u8]) {
        let mut l = self.lock(key);
        // A plain SET (no GET option) cannot fail.
        let _ = ops::set(&mut l, key, value, &SetOptions::default());
    }

    /// SET with NX/XX, EX/PX/EXAT/PXAT/KEEPTTL and GET, as [`SetOptions`] describes.
    pub fn set_with(
        &self,
        key: &[u8],
        value: &[u8],
        opts: SetOptions,
    ) -> Result<SetOutcome, KeyspaceError> {
        let mut l = self.lock(key);
        ops::set(&mut l, key, value, &opts)
    }

    /// Deletes keys; returns how many existed.
    pub fn del(&self, keys: &[&[u8]]) -> usize {
        keys.iter()
            .filter(|k| self.lock(k).remove(k).is_some())
            .count()
    }

    pub fn exists(&self, key: &[u8]) -> bool {
        self.lock(key).exists(key)
    }

    /// TYPE of a key ("string", ...), or None.
    pub fn type_of(&self, key: &[u8]) -> Option<&'static str> {
        self.lock(key).get(key).map(|e| e.value.type_name())
    }

    /// Sets a time to live; false if the key does not exist.
    pub fn expire(&self, key: &[u8], ttl: Duration) -> bool {
        let mut l = self.lock(key);
        let at = l.now().saturating_add(ttl.as_millis() as u64);
        ops::expire_at(&mut l, key, at, ExpireCondition::Always)
    }

    /// Removes a deadline; true if there was one.
    pub fn persist(&self, key: &[u8]) -> bool {
        let mut l = self.lock(key);
        match l.get(key) {
            Some(e) if e.expire_at() != 0 => l.set_expire(key, 0),
            _ => false,
        }
    }

    pub fn ttl(&self, key: &[u8]) -> Ttl {
        ops::ttl(&mut self.lock(key), key)
    }

    pub fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, KeyspaceError> {
        ops::incr_by(&mut self.lock(key), key, delta)
    }

    pub fn incr_by_float(&self, key: &[u8], delta: f64) -> Result<f64, KeyspaceError> {
        let text = ops::incr_by_float(&mut self.lock(key), key, delta)?;
        Ok(ops::parse_float(&text).unwrap_or(f64::NAN))
    }

    pub fn append(&self, key: &[u8], data: &[u8]) -> Result<usize, KeyspaceError> {
        ops::append(&mut self.lock(key), key, data)
    }

    pub fn strlen(&self, key: &[u8]) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(ops::get_str(&mut l, key)?.map_or(0, |s| s.len()))
    }

    /// One SCAN step: `(next_cursor, keys)`; next cursor 0 means done.
    pub fn scan(&self, cursor: u64, pattern: Option<&[u8]>, count: usize) -> (u64, Vec<Vec<u8>>) {
        self.ks.scan(self.db, cursor, count, |k, _| {
            pattern.is_none_or(|p| glob_match(p, k))
        })
    }

    /// Every key matching `pattern` (KEYS).
    pub fn keys(&self, pattern: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, mut batch) = self.scan(cursor, Some(pattern), 1000);
            out.append(&mut batch);
            if next == 0 {
                return out;
            }
            cursor = next;
        }
    }

    pub fn dbsize(&self) -> usize {
        self.ks.dbsize(self.db)
    }

    pub fn flush(&self) -> usize {
        self.ks.flush_db(self.db)
    }
}
