//! Carmine's keyspace: every database split into 16384 slot tables (one per Redis Cluster
//! slot, allocated on first use), each behind its own `parking_lot` mutex, with lazy and
//! active expiry and a typed API for programs that embed it.
//!
//! Two layers:
//! * [`SlotTable`] — a single-owner table of one slot's keys (`&mut self`, no locks).
//! * [`Keyspace`] — the concurrent whole: databases of tables, WATCH versions, active
//!   expiry, SCAN. [`Locked`] is a set of locked tables a command works through;
//!   [`DbHandle`] is the typed API on top.
//!
//! ```
//! use std::time::Duration;
//! use carmine_keyspace::{Keyspace, SetOptions, SetCondition, Ttl};
//!
//! let ks = Keyspace::new();
//! let db = ks.db(0);
//! db.set(b"greeting", b"hello");
//! assert_eq!(db.get(b"greeting").unwrap(), Some(b"hello".to_vec()));
//! assert_eq!(db.incr_by(b"visits", 5).unwrap(), 5);
//! assert!(db.expire(b"visits", Duration::from_secs(60)));
//! assert!(matches!(db.ttl(b"visits"), Ttl::Millis(ms) if ms <= 60_000));
//! let nx = SetOptions { condition: SetCondition::IfAbsent, ..Default::default() };
//! assert!(!db.set_with(b"greeting", b"bye", nx).unwrap().written);
//! assert_eq!(db.del(&[b"greeting", b"nope"]), 1);
//!
//! // Hashes, lists and sets, with compact encodings while small.
//! assert!(db.hset(b"user:1", b"name", b"ada").unwrap());
//! assert_eq!(db.hget(b"user:1", b"name").unwrap(), Some(b"ada".to_vec()));
//! assert_eq!(db.rpush(b"queue", &[b"a", b"b"]).unwrap(), 2);
//! assert_eq!(db.lpop(b"queue").unwrap(), Some(b"a".to_vec()));
//! assert_eq!(db.sadd(b"tags", &[b"x", b"y", b"x"]).unwrap(), 2);
//! assert_eq!(db.get(b"tags"), Err(carmine_keyspace::KeyspaceError::WrongType));
//!
//! // Handles are Copy and the keyspace is Sync: share it between threads.
//! std::thread::scope(|s| {
//!     for _ in 0..4 {
//!         s.spawn(|| for _ in 0..1000 { ks.db(0).incr_by(b"hits", 1).unwrap(); });
//!     }
//! });
//! assert_eq!(db.get(b"hits").unwrap(), Some(b"4000".to_vec()));
//! ```

mod api;
pub mod collections;
mod compact;
mod error;
pub mod evict;
pub mod hll;
mod int_set;
mod keyspace;
mod list_node;
pub mod long_double;
mod node_list;
pub mod notify;
pub mod ops;
mod packed;
mod packed_zset;
mod pattern;
mod pieces;
mod position_index;
mod rank_tree;
mod shard_map;
mod shards;
pub mod stream;
mod stream_api;
mod table;
pub mod typed;
mod value;
mod zset;

pub use api::{DbHandle, FieldValue};
/// Slot numbering, for snapshot sinks and table walkers.
pub use carmine_slots::{Slot, SLOT_COUNT};
pub use collections::{EncodingLimits, HashValue, LargeHash, LargeSet, ListValue, SetValue};
pub use compact::CompactKey;
pub use error::KeyspaceError;
pub use evict::{EvictionConfig, Policy};
pub use keyspace::{
    now_ms, table_id, Db, DeadlineCheck, Effects, Keyspace, KeyspaceStats, Locked, SnapshotSink,
    WatchRegistry, PREFETCH_MAX,
};
pub use ops::{ExpireCondition, SetCondition, SetExpiry, SetOptions, SetOutcome, Ttl};
pub use packed::Packed;
pub use packed_zset::Upsert;
pub use pattern::glob_match;
pub use pieces::{Pieces, PIECE};
pub use stream::{StreamId, StreamValue};
pub use table::{Key, SlotTable, CHUNK};
pub use value::{parse_canonical_i64, Entry, StrValue, Value, EMBSTR_MAX, INLINE_STR, SHARE_AT};
pub use zset::{ZSetLimits, ZSetValue};
