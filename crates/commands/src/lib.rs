//! Carmine's commands: the command table (name, arity, flags, key positions — what COMMAND
//! INFO reports), the dispatcher that locks a command's slot tables in ascending order and
//! runs it, and one module per command family with Redis' replies and error strings.
//!
//! The crate owns no sockets: a server feeds [`execute`] decoded [`carmine_resp::Args`] and a
//! [`carmine_resp::ReplyBuf`], and writes the buffer out.
//!
//! ```
//! use carmine_commands::{execute, Config, Session, Shared, ClientInfo};
//! use carmine_resp::{Args, ReplyBuf};
//! use std::sync::Arc;
//!
//! let shared = Shared::new(Config::new(), 1, None);
//! let stats = shared.new_thread_stats();
//! let info = Arc::new(ClientInfo::new(1, "127.0.0.1:1".into(), "127.0.0.1:6379".into(), -1, 0));
//! let mut session = Session::new(info, 0, true);
//! let mut reply = ReplyBuf::new(false);
//! execute(&shared, &mut session, &stats, &Args::from_slices(&["SET", "k", "v"]), &mut reply);
//! execute(&shared, &mut session, &stats, &Args::from_slices(&["GET", "k"]), &mut reply);
//! assert_eq!(&reply.out[..], b"+OK\r\n$1\r\nv\r\n");
//! ```

pub mod acl;
pub mod acl_log;
mod barrier;
mod bitmap;
pub mod blocking;
pub mod clock;
pub mod cluster;
pub mod config;
mod config_compat;
pub mod connection;
pub mod digest;
mod dispatch;
pub mod errorstats;
pub mod functions;
mod geo;
mod hash;
mod hyperloglog;
mod key_flags;
mod keys;
pub mod latency;
pub mod lazyfree;
mod lcs;
mod list;
mod lolwut;
pub mod migrate;
pub mod monitor;
pub mod pause;
pub mod persistence;
pub mod propagate;
pub mod pubsub;
pub mod scripting;
pub mod server;
mod set;
pub mod slowlog;
mod sort;
pub mod state;
mod stream;
mod stream_groups;
mod stream_read;
mod string;
pub mod table;
pub mod tracking;
mod transaction;
mod typed;
mod zset;

pub use barrier::Barrier;
pub use config::{args_to_config_text, ClientClass, Config, ConfigError, ObufLimit};
pub use dispatch::{execute, execute_at, execute_timed, printable, wall_ms_at, CommandClock, Ctx};
pub use persistence::{AppendOnly, PersistStats, Persistence, RestoreError};
pub use state::{
    ClientInfo, DeliverHook, OutputOrder, ReplConf, Session, Shared, ShutdownMode, ThreadStats,
};
pub use table::{CommandSpec, CommandTable};

/// Every command Carmine implements.
pub fn command_table() -> CommandTable {
    let mut specs = Vec::new();
    specs.extend(connection::commands());
    specs.extend(server::commands());
    specs.extend(keys::commands());
    specs.extend(string::commands());
    specs.extend(transaction::commands());
    specs.extend(hash::commands());
    specs.extend(list::commands());
    specs.extend(set::commands());
    specs.extend(sort::commands());
    specs.extend(pubsub::commands());
    specs.extend(blocking::commands());
    specs.extend(bitmap::commands());
    specs.extend(zset::commands());
    specs.extend(zset::more_commands());
    specs.extend(geo::commands());
    specs.extend(hyperloglog::commands());
    specs.extend(stream::commands());
    specs.extend(stream_groups::commands());
    specs.extend(stream_read::commands());
    specs.extend(persistence::commands());
    specs.extend(scripting::commands());
    specs.extend(functions::commands());
    specs.extend(acl::commands());
    specs.extend(monitor::commands());
    specs.extend(slowlog::commands());
    specs.extend(latency::commands());
    specs.extend(lolwut::commands());
    specs.extend(cluster::specs());
    specs.extend(migrate::specs());
    CommandTable::new(specs)
}
