//! Redis' PSYNC2 replication state, sans-IO: no sockets, threads or clocks.
//!
//! A master numbers every byte of its replication stream: `master_repl_offset` is how many
//! bytes the stream has had in this history. A replica that lost its link asks `PSYNC
//! <replid> <offset>`, where `offset` is the first byte it does not have; the master
//! continues from there if the id is its own (or its previous one, up to the point where
//! it changed) and the backlog still holds that byte, and otherwise sends a full snapshot.
//!
//! * [`ReplId`]: the 40-hex-digit replication id (the caller passes the random bytes in).
//! * [`Backlog`]: the stream's latest bytes (`repl-backlog-size`), in chunks, kept
//!   past that size from a pinned offset while a replica receives its snapshot.
//! * [`ReplHistory`]: replid, replid2, `second_replid_offset` and the backlog; the PSYNC
//!   decision ([`ReplHistory::psync`]) and the id changes of a promotion or a
//!   `+CONTINUE <newid>`.
//! * [`PayloadReader`]: a replica's side of the full-sync payload (`$len` or EOF-marked).
//!
//! ```
//! use carmine_repl::{PsyncDecision, ReplHistory, ReplId};
//!
//! let mut master = ReplHistory::new(ReplId::from_random([7; 20]), 1024 * 1024);
//! master.activate_backlog(); // the first replica attached
//! master.feed(b"*1\r\n$4\r\nPING\r\n");
//! let id = master.replid().to_string();
//! // A replica that has the first 4 bytes asks for byte 5 on.
//! match master.psync(id.as_bytes(), b"5") {
//!     PsyncDecision::Continue { from, .. } => {
//!         let held = master.backlog().copy_from(from).unwrap();
//!         assert_eq!(held, b"$4\r\nPING\r\n");
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert!(matches!(master.psync(b"?", b"-1"), PsyncDecision::FullResync { .. }));
//! ```

mod backlog;
mod history;
mod payload;
mod replid;

pub use backlog::Backlog;
pub use history::{FullResyncReason, PsyncDecision, ReplHistory};
pub use payload::{PayloadHeader, PayloadReader};
pub use replid::ReplId;
