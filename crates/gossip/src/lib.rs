//! The Redis Cluster bus, sans-IO.
//!
//! - [`codec`] reads and writes Redis 7.0's binary bus messages byte for byte.
//! - [`Cluster`] is one node's view of the cluster and its protocol: feed it bytes from
//!   its links ([`Cluster::received`]), a timer ([`Cluster::tick`], ten times a second)
//!   and CLUSTER commands ([`Cluster::command`]); it answers with [`Action`]s (connect,
//!   send, close, save nodes.conf, replicate from ...). The clock and the random seed
//!   come from outside, so a test runs many nodes in one process, deterministically.

pub mod cluster;
pub mod codec;
pub mod commands;
mod describe;
pub mod failover;
mod fast_hash;
pub mod node;

pub use cluster::{Action, Cluster, Config, Endpoint, Level, Rng, Stats};
pub use commands::Keys;
pub use node::{LinkId, Node, NodeIdx};

/// A reply to a CLUSTER command, independent of RESP version; the server writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// A verbatim string (`txt`) in RESP3, a bulk string in RESP2: CLUSTER NODES, INFO.
    Verbatim(String),
    Nil,
    Array(Vec<Reply>),
    /// A map in RESP3, a flat array in RESP2: CLUSTER SHARDS, LINKS.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status("OK".into())
    }

    pub fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }
}
