//! Replication ids and offsets across promotions, and the master's PSYNC decision.

use crate::{Backlog, ReplId};

/// What a master has of its replication history.
#[derive(Clone, Debug)]
pub struct ReplHistory {
    replid: ReplId,
    /// The id this history had before the last change (promotion, or a master's
    /// `+CONTINUE <newid>`), valid up to `second_replid_offset`.
    replid2: ReplId,
    /// The first offset that `replid2` does not cover, -1 when there is no `replid2`
    /// (INFO's `second_repl_offset`).
    second_replid_offset: i64,
    backlog: Backlog,
    /// Off until a replica first attaches, and again after `repl-backlog-ttl` without
    /// one (INFO's `repl_backlog_active`).
    backlog_active: bool,
}

/// The answer to `PSYNC <replid> <offset>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsyncDecision {
    /// `+CONTINUE <replid>`, then the backlog from `from` on.
    Continue { replid: ReplId, from: u64 },
    /// `+FULLRESYNC <replid> <offset>` and a snapshot (the server fills in the offset the
    /// snapshot starts at).
    FullResync { reason: FullResyncReason },
}

/// Why a partial resync was refused; its Display is the log line's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FullResyncReason {
    /// `PSYNC ? -1`: the replica has nothing (or asked for a full sync).
    Requested,
    /// The replica's id is neither ours nor our previous one below its switch point.
    ReplIdMismatch {
        asked: Vec<u8>,
        ours: ReplId,
        ours2: ReplId,
    },
    /// The offset is not a number.
    BadOffset,
    /// The backlog no longer holds (or does not yet have) the replica's next byte.
    OffsetOutOfRange { asked: i64, first: u64, last: u64 },
    /// No backlog is kept now.
    NoBacklog,
}

impl std::fmt::Display for FullResyncReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FullResyncReason::Requested => write!(f, "full resync requested by the replica"),
            FullResyncReason::ReplIdMismatch { asked, ours, ours2 } => write!(
                f,
                "Replication ID mismatch (Replica asked for '{}', my replication IDs are '{ours}' and '{ours2}')",
                String::from_utf8_lossy(asked)
            ),
            FullResyncReason::BadOffset => write!(f, "the offset is not an integer"),
            FullResyncReason::OffsetOutOfRange { asked, first, last } => write!(
                f,
                "lack of backlog (Replica request was: {asked}, backlog holds {first} to {last})"
            ),
            FullResyncReason::NoBacklog => write!(f, "no backlog"),
        }
    }
}

impl ReplHistory {
    /// A new history at offset 0 with a backlog of `backlog_size` bytes (not yet active).
    pub fn new(replid: ReplId, backlog_size: usize) -> ReplHistory {
        ReplHistory {
            replid,
            replid2: ReplId::NONE,
            second_replid_offset: -1,
            backlog: Backlog::new(backlog_size, 0),
            backlog_active: false,
        }
    }

    pub fn replid(&self) -> ReplId {
        self.replid
    }

    pub fn replid2(&self) -> ReplId {
        self.replid2
    }

    pub fn second_replid_offset(&self) -> i64 {
        self.second_replid_offset
    }

    pub fn master_repl_offset(&self) -> u64 {
        self.backlog.master_repl_offset()
    }

    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    pub fn backlog_active(&self) -> bool {
        self.backlog_active
    }

    /// Starts keeping a backlog (the first replica attached). Bytes fed before were not
    /// kept: a replica can only continue from bytes fed from now on.
    pub fn activate_backlog(&mut self) {
        self.backlog_active = true;
    }

    /// Stops keeping a backlog (`repl-backlog-ttl` passed with no replica).
    pub fn deactivate_backlog(&mut self) {
        self.backlog_active = false;
        self.backlog.clear();
    }

    /// CONFIG SET repl-backlog-size (pinned bytes stay).
    pub fn resize_backlog(&mut self, size: usize) {
        self.backlog.resize(size);
    }

    /// `repl-backlog-size` (INFO's `repl_backlog_size`); more is held while pinned.
    pub fn configured_size(&self) -> usize {
        self.backlog.size()
    }

    /// Keeps every byte from offset `pin` on (a replica will read them once its snapshot
    /// is out); None lets the backlog drop back to its configured size.
    pub fn set_pin(&mut self, pin: Option<u64>) {
        self.backlog.set_pin(pin);
    }

    /// Appends stream bytes: the offset always advances, the backlog keeps them when
    /// active.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.backlog_active {
            self.backlog.append(bytes);
        } else {
            // Advance the offset without keeping the bytes.
            let offset = self.backlog.master_repl_offset() + bytes.len() as u64;
            self.backlog = Backlog::new(self.backlog.size(), offset);
        }
    }

    /// The master's decision on `PSYNC <replid> <offset>`, as Redis' 7.0 rules have it: the
    /// id must be ours, or our previous one with `offset <= second_replid_offset` (the
    /// history they share); the backlog must hold byte `offset`, or `offset` must be the
    /// next byte.
    pub fn psync(&self, replid: &[u8], offset: &[u8]) -> PsyncDecision {
        let full = |reason| PsyncDecision::FullResync { reason };
        if replid == b"?" {
            return full(FullResyncReason::Requested);
        }
        let Some(asked) = std::str::from_utf8(offset)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return full(FullResyncReason::BadOffset);
        };
        let ours = self.replid.matches(replid);
        let ours_before = self.second_replid_offset >= 0
            && self.replid2.matches(replid)
            && asked <= self.second_replid_offset;
        if !ours && !ours_before {
            return full(FullResyncReason::ReplIdMismatch {
                asked: replid.to_vec(),
                ours: self.replid,
                ours2: self.replid2,
            });
        }
        if !self.backlog_active {
            return full(FullResyncReason::NoBacklog);
        }
        match u64::try_from(asked) {
            Ok(from) if self.backlog.covers(from) => PsyncDecision::Continue {
                replid: self.replid,
                from,
            },
            _ => full(FullResyncReason::OffsetOutOfRange {
                asked,
                first: self.backlog.first_byte_offset(),
                last: self.backlog.master_repl_offset(),
            }),
        }
    }

    /// A new id for this history from the next byte on, the old one kept as `replid2`
    /// (a replica promoted to master, or a replica told `+CONTINUE <newid>`): replicas of
    /// the old id can still continue up to here.
    pub fn shift_replid(&mut self, new_id: ReplId) {
        if new_id == self.replid {
            return;
        }
        self.replid2 = self.replid;
        self.second_replid_offset = (self.master_repl_offset() + 1) as i64;
        self.replid = new_id;
    }

    /// Forgets `replid2` (Redis' clearReplicationId2).
    pub fn clear_replid2(&mut self) {
        self.replid2 = ReplId::NONE;
        self.second_replid_offset = -1;
    }

    /// A replica took a full sync: the master's id and the offset its snapshot was taken
    /// at become ours, with an empty backlog from there.
    pub fn reset(&mut self, replid: ReplId, offset: u64) {
        self.replid = replid;
        self.clear_replid2();
        self.backlog = Backlog::new(self.backlog.size(), offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ReplId {
        ReplId::from_random([n; 20])
    }

    #[test]
    fn a_pin_keeps_the_bytes_a_syncing_replica_needs_then_lets_go() {
        let mut h = ReplHistory::new(id(1), 8);
        h.activate_backlog();
        h.feed(b"0123");
        h.set_pin(Some(5));
        for _ in 0..10 {
            h.feed(b"abcd");
        }
        assert_eq!(h.configured_size(), 8);
        assert_eq!(h.backlog().histlen(), 40, "held past the configured size");
        let held = h.backlog().copy_from(5).expect("pinned bytes are kept");
        assert_eq!(held, b"abcd".repeat(10));
        h.set_pin(None);
        assert_eq!(h.backlog().histlen(), 8);
        assert_eq!(h.backlog().first_byte_offset(), h.master_repl_offset() - 7);
    }

    #[test]
    fn continue_needs_the_id_and_a_covered_offset() {
        let mut h = ReplHistory::new(id(1), 16);
        let me = h.replid().to_string();
        h.feed(b"lost");
        h.activate_backlog();
        h.feed(b"kept");
        assert_eq!(h.master_repl_offset(), 8);
        assert!(matches!(
            h.psync(me.as_bytes(), b"5"),
            PsyncDecision::Continue { from: 5, .. }
        ));
        assert!(matches!(
            h.psync(me.as_bytes(), b"9"),
            PsyncDecision::Continue { from: 9, .. }
        ));
        for bad in [&b"4"[..], b"10", b"-1", b"x"] {
            assert!(
                matches!(
                    h.psync(me.as_bytes(), bad),
                    PsyncDecision::FullResync { .. }
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            h.psync(id(2).as_bytes(), b"5"),
            PsyncDecision::FullResync {
                reason: FullResyncReason::ReplIdMismatch { .. }
            }
        ));
    }

    #[test]
    fn a_promoted_replica_serves_the_old_id_up_to_the_switch() {
        let mut h = ReplHistory::new(id(1), 64);
        h.activate_backlog();
        h.feed(b"0123456789");
        let old = h.replid().to_string();
        h.shift_replid(id(2));
        assert_eq!(h.second_replid_offset(), 11);
        h.feed(b"abc");
        // A sibling replica that had all 10 bytes of the old master continues.
        assert_eq!(
            h.psync(old.as_bytes(), b"11"),
            PsyncDecision::Continue {
                replid: id(2),
                from: 11
            }
        );
        // One that claims bytes of the old id past the switch diverged: full resync.
        assert!(matches!(
            h.psync(old.as_bytes(), b"12"),
            PsyncDecision::FullResync { .. }
        ));
        h.clear_replid2();
        assert!(matches!(
            h.psync(old.as_bytes(), b"11"),
            PsyncDecision::FullResync { .. }
        ));
    }

    #[test]
    fn reset_after_a_full_sync() {
        let mut h = ReplHistory::new(id(1), 64);
        h.activate_backlog();
        h.feed(b"xyz");
        h.reset(id(9), 1000);
        assert_eq!(h.master_repl_offset(), 1000);
        assert_eq!(h.second_replid_offset(), -1);
        h.feed(b"ab");
        assert_eq!(
            h.psync(id(9).as_bytes(), b"1001"),
            PsyncDecision::Continue {
                replid: id(9),
                from: 1001
            }
        );
    }
}
