//! The write path's spine: each command's effects, in the order they happened, appended
//! to one replication stream while the command still holds its table locks.
//!
//! The dispatcher collects an execution unit's effects (one command, or a whole EXEC) and
//! hands them to the [`Propagator`] the server installed in [`crate::Shared`]. Two writes
//! to the same key hold the same table lock, so the order they reach the stream is the
//! order they ran; writes to different tables may interleave, as they commute. The
//! propagator numbers the bytes (the replication offset) and feeds the backlog, the
//! replicas and (later) the AOF; nothing here sees a socket.

use carmine_resp::Args;

/// One command on the stream: the request's own arguments, or a rewritten form.
pub enum Argv<'a> {
    Request(&'a Args),
    Owned(Vec<Vec<u8>>),
}

impl Argv<'_> {
    pub fn len(&self) -> usize {
        match self {
            Argv::Request(a) => a.len(),
            Argv::Owned(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> &[u8] {
        match self {
            Argv::Request(a) => a.get(i).unwrap_or_default(),
            Argv::Owned(v) => v.get(i).map_or(&[][..], Vec::as_slice),
        }
    }
}

/// One effect: a command and the database it applies to.
pub struct Op<'a> {
    pub db: usize,
    pub argv: Argv<'a>,
}

/// `DEL key` on `db`: what expiry and eviction propagate.
pub fn del_op(db: usize, key: &[u8]) -> Op<'static> {
    Op {
        db,
        argv: Argv::Owned(vec![b"DEL".to_vec(), key.to_vec()]),
    }
}

/// Turns what a command recorded into stream ops: its effects, then the request itself
/// if it changed anything and did not replace it.
pub fn unit_ops<'a>(
    effects: carmine_keyspace::Effects,
    request: &'a Args,
    db: usize,
    dirty: bool,
    out: &mut Vec<Op<'a>>,
) {
    out.extend(effects.ops.into_iter().map(|(db, argv)| Op {
        db,
        argv: Argv::Owned(argv),
    }));
    if dirty && !effects.request_replaced {
        out.push(Op {
            db,
            argv: Argv::Request(request),
        });
    }
}

/// The stream's writer, installed by the server. Called with the unit's table locks held.
pub trait Propagator: Send + Sync + std::any::Any {
    /// True when anyone reads the stream (a replica, the backlog, the AOF): commands only
    /// record effects then.
    fn enabled(&self) -> bool;

    /// Appends one execution unit. `wrap`: put it inside MULTI ... EXEC, as Redis 7.0
    /// does for a unit of more than one command (a transaction, or a command plus the
    /// DELs of keys it found expired).
    fn append(&self, ops: &[Op<'_>], wrap: bool);

    /// Appends one unit for the replicas only, not the AOF (DEBUG REPLICATE, which tests
    /// use to send a replica a command its master never ran).
    fn append_to_replicas(&self, ops: &[Op<'_>]) {
        let _ = ops;
    }

    /// True when a replica records its own effects too (its AOF): a replica's stream
    /// for its replicas is its master's bytes, but its AOF holds what it applied.
    fn records_on_replica(&self) -> bool {
        false
    }

    /// Replicas online whose last ACK is within `min-replicas-max-lag` (for
    /// `min-replicas-to-write`).
    fn good_replicas(&self) -> u64;

    /// INFO stats' `sync_full`, `sync_partial_ok`, `sync_partial_err`.
    fn sync_counts(&self) -> [u64; 3];

    /// Bytes held for replicas: the backlog, grown while a replica receiving its snapshot
    /// needs more (INFO's `mem_total_replication_buffers`).
    fn buffer_bytes(&self) -> u64 {
        0
    }

    /// DEBUG CHANGE-REPL-ID: a new replication id, and no second one (Redis'
    /// changeReplicationId + clearReplicationId2).
    fn change_replication_id(&self) {}

    /// CONFIG RESETSTAT: the sync counters start again from 0.
    fn reset_sync_counts(&self);

    /// INFO's `# Replication` section body (the lines after the header).
    fn info(&self, out: &mut String);

    /// The server's own type behind the port (its replication commands reach it here).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The stream's encoder: what one unit adds to the stream, given the database the stream
/// last selected (updated). Redis emits SELECT before a command for another database than
/// the last one, MULTI on the first command's database and EXEC on the last's.
pub fn encode_unit(selected: &mut Option<usize>, ops: &[Op<'_>], wrap: bool, out: &mut Vec<u8>) {
    let Some(first) = ops.first() else {
        return;
    };
    let wrap = wrap && ops.len() > 1;
    if wrap {
        encode_in(
            selected,
            first.db,
            &Argv::Owned(vec![b"MULTI".to_vec()]),
            out,
        );
    }
    for op in ops {
        encode_in(selected, op.db, &op.argv, out);
    }
    if wrap {
        let last = ops.last().map_or(first.db, |o| o.db);
        encode_in(selected, last, &Argv::Owned(vec![b"EXEC".to_vec()]), out);
    }
}

fn encode_in(selected: &mut Option<usize>, db: usize, argv: &Argv<'_>, out: &mut Vec<u8>) {
    if *selected != Some(db) {
        let n = db.to_string();
        encode_command(&Argv::Owned(vec![b"SELECT".to_vec(), n.into_bytes()]), out);
        *selected = Some(db);
    }
    encode_command(argv, out);
}

/// `*N\r\n$len\r\narg\r\n...`: the form replicas and the AOF read.
pub fn encode_command(argv: &Argv<'_>, out: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(n.format(argv.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for i in 0..argv.len() {
        let a = argv.get(i);
        out.push(b'$');
        out.extend_from_slice(n.format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(words: &[&str]) -> Argv<'static> {
        Argv::Owned(words.iter().map(|w| w.as_bytes().to_vec()).collect())
    }

    #[test]
    fn select_multi_exec_as_redis_emits_them() {
        let mut selected = None;
        let mut out = Vec::new();
        let args = Args::from_slices(&["SET", "a", "1"]);
        encode_unit(
            &mut selected,
            &[Op {
                db: 0,
                argv: Argv::Request(&args),
            }],
            true,
            &mut out,
        );
        assert_eq!(
            out,
            b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n"
        );
        out.clear();
        encode_unit(
            &mut selected,
            &[
                Op {
                    db: 0,
                    argv: owned(&["DEL", "x"]),
                },
                Op {
                    db: 2,
                    argv: owned(&["INCR", "y"]),
                },
            ],
            true,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap_or_default();
        assert_eq!(
            text,
            "*1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nDEL\r\n$1\r\nx\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n\
             *2\r\n$4\r\nINCR\r\n$1\r\ny\r\n*1\r\n$4\r\nEXEC\r\n"
        );
        assert_eq!(selected, Some(2));
    }
}
