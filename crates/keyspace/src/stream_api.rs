//! The typed embedding API for streams: XADD, XLEN, XRANGE, XGROUP CREATE, XREADGROUP,
//! XACK and XAUTOCLAIM as calls on a [`DbHandle`].
//!
//! ```
//! use carmine_keyspace::{Keyspace, StreamId};
//!
//! let ks = Keyspace::new();
//! let db = ks.db(0);
//! let id = db.xadd(b"events", &[b"kind", b"signup"]).unwrap();
//! db.xgroup_create(b"events", b"mailers", StreamId::MIN).unwrap();
//! let got = db.xreadgroup(b"events", b"mailers", b"worker-1", 10).unwrap();
//! assert_eq!(got, vec![(id, vec![b"kind".to_vec(), b"signup".to_vec()])]);
//! assert_eq!(db.xack(b"events", b"mailers", &[id]).unwrap(), 1);
//! ```

use crate::api::DbHandle;
use crate::error::KeyspaceError;
use crate::stream::{ConsumerGroup, StreamEntry, StreamId, StreamValue, ENTRIES_READ_UNKNOWN};
use crate::typed::{read, write};

impl DbHandle<'_> {
    /// Appends an entry with an ID generated from the clock (`XADD key * ...`); `fields`
    /// is `[field, value, ...]` (an even, non-zero count).
    pub fn xadd(&self, key: &[u8], fields: &[&[u8]]) -> Result<StreamId, KeyspaceError> {
        if fields.is_empty() || !fields.len().is_multiple_of(2) {
            return Err(KeyspaceError::StreamFieldCount);
        }
        let mut l = self.lock(key);
        let now = l.now();
        let limits = l.keyspace().limits().stream_nodes();
        let s = write::<StreamValue>(&mut l, key, true)?.ok_or(KeyspaceError::WrongType)?;
        let id = s.next_id(now).ok_or(KeyspaceError::StreamIdExhausted)?;
        s.append(id, fields, limits);
        Ok(id)
    }

    /// Entries in the stream (0 when the key is missing).
    pub fn xlen(&self, key: &[u8]) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<StreamValue>(&mut l, key)?.map_or(0, StreamValue::len))
    }

    /// Entries with IDs in `start..=end`, at most `count` (0: all).
    pub fn xrange(
        &self,
        key: &[u8],
        start: StreamId,
        end: StreamId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, KeyspaceError> {
        let mut l = self.lock(key);
        Ok(read::<StreamValue>(&mut l, key)?
            .map(|s| s.range(start, end, count, false))
            .unwrap_or_default())
    }

    /// Creates consumer group `group` positioned after `after`, creating the stream when
    /// missing (`XGROUP CREATE ... MKSTREAM`). False if the group exists.
    pub fn xgroup_create(
        &self,
        key: &[u8],
        group: &[u8],
        after: StreamId,
    ) -> Result<bool, KeyspaceError> {
        let mut l = self.lock(key);
        let s = write::<StreamValue>(&mut l, key, true)?.ok_or(KeyspaceError::WrongType)?;
        if s.groups.contains_key(group) {
            return Ok(false);
        }
        s.groups.insert(
            group.to_vec(),
            ConsumerGroup::new(after, ENTRIES_READ_UNKNOWN),
        );
        Ok(true)
    }

    /// Delivers up to `count` (0: all) new entries to `consumer` of `group`, pending
    /// until acknowledged (`XREADGROUP GROUP group consumer COUNT n STREAMS key >`).
    pub fn xreadgroup(
        &self,
        key: &[u8],
        group: &[u8],
        consumer: &[u8],
        count: usize,
    ) -> Result<Vec<StreamEntry>, KeyspaceError> {
        let mut l = self.lock(key);
        let now = l.now();
        let s = write::<StreamValue>(&mut l, key, false)?.ok_or(KeyspaceError::NoGroup)?;
        if !s.groups.contains_key(group) {
            return Err(KeyspaceError::NoGroup);
        }
        Ok(s.read_group_new(group, consumer, count, false, now)
            .map(|out| entries_of(out.served))
            .unwrap_or_default())
    }

    /// Acknowledges entries of `group`; returns how many were pending.
    pub fn xack(&self, key: &[u8], group: &[u8], ids: &[StreamId]) -> Result<usize, KeyspaceError> {
        let mut l = self.lock(key);
        let Some(s) = write::<StreamValue>(&mut l, key, false)? else {
            return Ok(0);
        };
        Ok(s.groups
            .get_mut(group)
            .map_or(0, |g| ids.iter().filter(|id| g.ack(**id)).count()))
    }

    /// Gives `consumer` up to `count` entries of `group` that stayed pending at least
    /// `min_idle_ms` (`XAUTOCLAIM key group consumer min-idle 0 COUNT count`): a reaper
    /// takes over a dead worker's entries with it.
    pub fn xautoclaim(
        &self,
        key: &[u8],
        group: &[u8],
        consumer: &[u8],
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<StreamEntry>, KeyspaceError> {
        let mut l = self.lock(key);
        let now = l.now();
        let s = write::<StreamValue>(&mut l, key, false)?.ok_or(KeyspaceError::NoGroup)?;
        let out = s
            .autoclaim(
                group,
                consumer,
                StreamId::MIN,
                min_idle_ms,
                count.max(1),
                false,
                now,
            )
            .ok_or(KeyspaceError::NoGroup)?;
        Ok(entries_of(out.served))
    }
}

fn entries_of(served: Vec<(StreamId, Option<Vec<Vec<u8>>>)>) -> Vec<StreamEntry> {
    served
        .into_iter()
        .filter_map(|(id, f)| f.map(|f| (id, f)))
        .collect()
}
