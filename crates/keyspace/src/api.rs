//! The typed embedding API: what a Rust program calls instead of sending commands.

use std::time::Duration;

use crate::collections::{HashValue, ListValue, SetValue};
use crate::error::KeyspaceError;
use crate::keyspace::{Keyspace, Locked};
use crate::ops::{self, ExpireCondition, SetOptions, SetOutcome, Ttl};
use crate::pattern::glob_match;
use crate::typed::{drop_if_empty, read, write};
use crate::zset::ZSetValue;

/// A hash field and its value, as HGETALL returns them.
pub type FieldValue = (Vec<u8>, Vec<u8>);

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

    pub(crate) fn lock(&self, key: &[u8]) -> Locked<'a> {
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
        ops::persist(&mut self.lock(key), key)
    }

    pub fn ttl(&self, key: &[u8]) -> Ttl {
        ops::ttl(&mut self.lock(key), key)
    }

    pub fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, KeyspaceError> {
        ops::incr_by(&mut self.lock(key), key, delta)
    }

    pub fn incr_by_float(&self, key: &[u8], delta: f64) -> Result<f64, KeyspaceError> {
        let delta = crate::long_double::LongDouble::from_f64(delta);
        let text = ops::incr_by_float(&mut self.lock(key), key, delta)?;
        Ok(crate::long_double::LongDouble::parse(&text).map_or(f64::NAN, |v| v.to_f64()))
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

    // ------------------------------------------------------------ hashes

    /// HSET of one field; true if the field is new.
    pub fn hset(&self, key: &[u8], field: &[u8], value: &[u8]) -> Result<bool, KeyspaceError> {
        let mut l = self.lock(key);
        let limits = self.ks.limits();
        Ok(write::<HashValue>(&mut l, key, true)?.is_some_and(|h| h.insert(field, value, limits)))
    }

    pub fn hget(&self, key: &[u8], field: &[u8]) -> Result<Option<Vec<u8>>, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<HashValue>(&mut l, key)?
            .and_then(|h| h.get(field))
            .map(<[u8]>::to_vec))
    }

    /// Removes fields; returns how many existed. An emptied hash is deleted.
    pub fn hdel(&self, key: &[u8], fields: &[&[u8]]) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        let n = match write::<HashValue>(&mut l, key, false)? {
            Some(h) => fields.iter().filter(|f| h.remove(f)).count(),
            None => 0,
        };
        drop_if_empty::<HashValue>(&mut l, key);
        Ok(n)
    }

    pub fn hgetall(&self, key: &[u8]) -> Result<Vec<FieldValue>, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<HashValue>(&mut l, key)?
            .map(|h| {
                h.pairs()
                    .into_iter()
                    .map(|(f, v)| (f.to_vec(), v.to_vec()))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn hlen(&self, key: &[u8]) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<HashValue>(&mut l, key)?.map_or(0, HashValue::len))
    }

    /// HINCRBY: the field as an integer plus `delta`.
    pub fn hincr_by(&self, key: &[u8], field: &[u8], delta: i64) -> Result<i64, KeyspaceError> {
        let mut l = self.lock(key);
        let cur = match read::<HashValue>(&mut l, key)?.and_then(|h| h.get(field)) {
            None => 0,
            Some(v) => crate::value::parse_canonical_i64(v).ok_or(KeyspaceError::NotInteger)?,
        };
        let next = cur.checked_add(delta).ok_or(KeyspaceError::Overflow)?;
        let limits = self.ks.limits();
        if let Some(h) = write::<HashValue>(&mut l, key, true)? {
            h.insert(field, next.to_string().as_bytes(), limits);
        }
        Ok(next)
    }

    // ------------------------------------------------------------ lists

    fn push(&self, key: &[u8], items: &[&[u8]], front: bool) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        let limits = self.ks.limits();
        let Some(list) = write::<ListValue>(&mut l, key, true)? else {
            return Ok(0);
        };
        for item in items {
            list.push(item, front, limits);
        }
        Ok(list.len())
    }

    /// LPUSH; returns the new length.
    pub fn lpush(&self, key: &[u8], items: &[&[u8]]) -> Result<usize, KeyspaceError> {
        self.push(key, items, true)
    }

    /// RPUSH; returns the new length.
    pub fn rpush(&self, key: &[u8], items: &[&[u8]]) -> Result<usize, KeyspaceError> {
        self.push(key, items, false)
    }

    fn pop(&self, key: &[u8], front: bool) -> Result<Option<Vec<u8>>, KeyspaceError> {
        let mut l = self.lock(key);
        let v = write::<ListValue>(&mut l, key, false)?.and_then(|list| list.pop(front));
        drop_if_empty::<ListValue>(&mut l, key);
        Ok(v)
    }

    pub fn lpop(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KeyspaceError> {
        self.pop(key, true)
    }

    pub fn rpop(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KeyspaceError> {
        self.pop(key, false)
    }

    pub fn llen(&self, key: &[u8]) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<ListValue>(&mut l, key)?.map_or(0, ListValue::len))
    }

    /// LRANGE with Redis' index rules (negative from the end, inclusive).
    pub fn lrange(&self, key: &[u8], start: i64, end: i64) -> Result<Vec<Vec<u8>>, KeyspaceError> {
        let mut l = self.lock(key);
        let Some(list) = read::<ListValue>(&mut l, key)? else {
            return Ok(Vec::new());
        };
        let Some((s, e)) = crate::typed::clamp_range(start, end, list.len()) else {
            return Ok(Vec::new());
        };
        Ok(list.range(s, e).into_iter().map(<[u8]>::to_vec).collect())
    }

    // ------------------------------------------------------------ sets

    /// SADD; returns how many members were new.
    pub fn sadd(&self, key: &[u8], members: &[&[u8]]) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        let limits = self.ks.limits();
        Ok(match write::<SetValue>(&mut l, key, true)? {
            Some(s) => members.iter().filter(|m| s.insert(m, limits)).count(),
            None => 0,
        })
    }

    /// SREM; returns how many members existed. An emptied set is deleted.
    pub fn srem(&self, key: &[u8], members: &[&[u8]]) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        let n = match write::<SetValue>(&mut l, key, false)? {
            Some(s) => members.iter().filter(|m| s.remove(m)).count(),
            None => 0,
        };
        drop_if_empty::<SetValue>(&mut l, key);
        Ok(n)
    }

    pub fn sismember(&self, key: &[u8], member: &[u8]) -> Result<bool, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<SetValue>(&mut l, key)?.is_some_and(|s| s.contains(member)))
    }

    pub fn smembers(&self, key: &[u8]) -> Result<Vec<Vec<u8>>, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<SetValue>(&mut l, key)?
            .map(SetValue::members)
            .unwrap_or_default())
    }

    pub fn scard(&self, key: &[u8]) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<SetValue>(&mut l, key)?.map_or(0, SetValue::len))
    }

    // ------------------------------------------------------------ sorted sets

    /// ZADD of one member; true if it is new (an existing member is re-scored).
    pub fn zadd(&self, key: &[u8], score: f64, member: &[u8]) -> Result<bool, KeyspaceError> {
        if score.is_nan() {
            return Err(KeyspaceError::NotFloat);
        }
        let mut l = self.lock(key);
        let limits = self.ks.zset_limits();
        Ok(write::<ZSetValue>(&mut l, key, true)?.is_some_and(|z| z.insert(member, score, limits)))
    }

    /// ZINCRBY: the member's new score.
    pub fn zincr_by(&self, key: &[u8], delta: f64, member: &[u8]) -> Result<f64, KeyspaceError> {
        let mut l = self.lock(key);
        let limits = self.ks.zset_limits();
        let Some(z) = write::<ZSetValue>(&mut l, key, true)? else {
            return Err(KeyspaceError::WrongType);
        };
        let score = z.score(member).unwrap_or(0.0) + delta;
        if score.is_nan() {
            drop_if_empty::<ZSetValue>(&mut l, key);
            return Err(KeyspaceError::NanOrInfinity);
        }
        z.insert(member, score, limits);
        Ok(score)
    }

    pub fn zscore(&self, key: &[u8], member: &[u8]) -> Result<Option<f64>, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<ZSetValue>(&mut l, key)?.and_then(|z| z.score(member)))
    }

    /// 0-based rank in ascending score order.
    pub fn zrank(&self, key: &[u8], member: &[u8]) -> Result<Option<usize>, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<ZSetValue>(&mut l, key)?.and_then(|z| z.rank(member)))
    }

    pub fn zrem(&self, key: &[u8], member: &[u8]) -> Result<bool, KeyspaceError> {
        let mut l = self.lock(key);
        let removed = write::<ZSetValue>(&mut l, key, false)?.is_some_and(|z| z.remove(member));
        drop_if_empty::<ZSetValue>(&mut l, key);
        Ok(removed)
    }

    pub fn zcard(&self, key: &[u8]) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<ZSetValue>(&mut l, key)?.map_or(0, ZSetValue::len))
    }

    /// Members with ranks `start..=end` (negative from the end), with scores; `rev` counts
    /// ranks from the highest score (ZREVRANGE).
    pub fn zrange(
        &self,
        key: &[u8],
        start: i64,
        end: i64,
        rev: bool,
    ) -> Result<Vec<(Vec<u8>, f64)>, KeyspaceError> {
        let mut l = self.lock(key);
        let Some(z) = read::<ZSetValue>(&mut l, key)? else {
            return Ok(Vec::new());
        };
        let Some((s, e)) = crate::typed::clamp_range(start, end, z.len()) else {
            return Ok(Vec::new());
        };
        let (len, pair) = (z.len(), |(sc, m): (f64, &[u8])| (m.to_vec(), sc));
        Ok(if rev {
            let mut out: Vec<_> = z.range(len - 1 - e, len - s).map(pair).collect();
            out.reverse();
            out
        } else {
            z.range(s, e + 1).map(pair).collect()
        })
    }

    /// Members with `min <= score <= max`, ascending.
    pub fn zrange_by_score(
        &self,
        key: &[u8],
        min: f64,
        max: f64,
    ) -> Result<Vec<(Vec<u8>, f64)>, KeyspaceError> {
        let mut l = self.lock(key);
        let Some(z) = read::<ZSetValue>(&mut l, key)? else {
            return Ok(Vec::new());
        };
        let lo = z.count_prefix(&|s, _| s < min);
        let hi = z.count_prefix(&|s, _| s <= max).max(lo);
        Ok(z.range(lo, hi).map(|(s, m)| (m.to_vec(), s)).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::{SetExpiry, SetOptions};
    use crate::Keyspace;

    /// Each command starts from the slot memo the one before it on its thread ended with
    /// (the memo outlives its `Locked`): keys of one length in other slots, and a key
    /// named again after another, must each land in their own slot's table.
    #[test]
    fn keys_written_one_after_another_land_in_their_own_slots() {
        let ks = Keyspace::new();
        let db = ks.db(0);
        let keys: [&[u8]; 5] = [
            b"key:1",
            b"key:2",
            b"key:1",
            b"kez:1",
            b"a-key-longer-than-the-memo-holds:1",
        ];
        assert_ne!(
            carmine_slots::key_slot(keys[0]),
            carmine_slots::key_slot(keys[1])
        );
        for (n, key) in keys.iter().enumerate() {
            db.set(key, format!("v{n}").as_bytes());
        }
        for key in [keys[0], keys[1], keys[3], keys[4]] {
            let slot = carmine_slots::key_slot(key);
            assert!(
                ks.lock_table(0, slot).peek(key).is_some(),
                "{key:?} not in slot {slot}"
            );
            let total: usize = (0..carmine_slots::SLOT_COUNT as u16)
                .map(|s| ks.lock_table(0, s).peek(key).map_or(0, |_| 1))
                .sum();
            assert_eq!(total, 1, "{key:?} is in {total} tables");
        }
        assert_eq!(db.get(keys[0]).expect("get").as_deref(), Some(&b"v2"[..]));
    }

    /// A deadline already past deletes at once on a master; a replica (no expiry
    /// deletions) keeps the key until its master's DEL, as Redis' checkAlreadyExpired,
    /// or a SET the stream delivers a little late would leave the replica one key short.
    #[test]
    fn a_past_deadline_deletes_only_where_expiry_deletes() {
        let ks = Keyspace::new();
        let db = ks.db(0);
        let past = SetOptions {
            expiry: SetExpiry::At(1),
            ..Default::default()
        };
        db.set_with(b"k", b"v", past).expect("set");
        assert_eq!(ks.dbsize(0), 0, "a master deletes it at once");
        ks.set_expire_deletes(false);
        db.set_with(b"k", b"v", past).expect("set");
        assert_eq!(ks.dbsize(0), 1, "a replica keeps it for its master's DEL");
        db.set(b"p", b"v");
        assert!(db.expire(b"p", std::time::Duration::ZERO));
        assert_eq!(ks.dbsize(0), 2, "EXPIRE into the past keeps it too");
        ks.set_expire_deletes(true);
        db.set(b"q", b"v");
        assert!(db.expire(b"q", std::time::Duration::ZERO));
        assert_eq!(ks.dbsize(0), 2, "once expiry deletes, EXPIRE deletes");
    }

    #[test]
    fn zrange_counts_ranks_from_either_end() {
        let ks = Keyspace::new();
        let db = ks.db(0);
        // Past the packed form, so ranks come from the tree.
        for i in 0..500u32 {
            db.zadd(b"z", f64::from(i), format!("m{i:03}").as_bytes())
                .expect("zset");
        }
        let names = |v: Vec<(Vec<u8>, f64)>| -> Vec<String> {
            v.into_iter()
                .map(|(m, _)| String::from_utf8_lossy(&m).into_owned())
                .collect()
        };
        let top = db.zrange(b"z", 0, 2, true).expect("zset");
        assert_eq!(names(top), ["m499", "m498", "m497"]);
        let bottom = db.zrange(b"z", -2, -1, true).expect("zset");
        assert_eq!(names(bottom), ["m001", "m000"]);
        let middle = db.zrange(b"z", 10, 12, false).expect("zset");
        assert_eq!(
            middle,
            [
                (b"m010".to_vec(), 10.0),
                (b"m011".to_vec(), 11.0),
                (b"m012".to_vec(), 12.0)
            ]
        );
        assert_eq!(db.zrange(b"z", 600, 700, true).expect("zset"), []);
        assert_eq!(db.zrange(b"z", 0, -1, true).expect("zset").len(), 500);
    }
}
