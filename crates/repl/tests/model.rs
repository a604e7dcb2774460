//! The backlog and the PSYNC decision against a plain model: every byte ever fed kept in a
//! Vec, the id history as a list. Covers wrap-around, appends larger than the ring,
//! resizes, the backlog switched off and on, promotions and full-sync resets.

use carmine_repl::{PsyncDecision, ReplHistory, ReplId};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Feed(Vec<u8>),
    Activate,
    Deactivate,
    Resize(usize),
    Shift(u8),
    ClearId2,
    Reset(u8, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Op::Feed),
        1 => Just(Op::Activate),
        1 => Just(Op::Deactivate),
        1 => (1usize..64).prop_map(Op::Resize),
        1 => (0u8..4).prop_map(Op::Shift),
        1 => Just(Op::ClearId2),
        1 => ((0u8..4), 0u64..1000).prop_map(|(i, o)| Op::Reset(i, o)),
    ]
}

fn id(n: u8) -> ReplId {
    ReplId::from_random([n; 20])
}

/// What the history must know, kept the simplest way.
struct Model {
    /// Every byte since the last reset; byte `i` has offset `base + 1 + i`.
    stream: Vec<u8>,
    base: u64,
    /// Bytes the backlog must hold: the newest `held` of `stream`.
    held: usize,
    size: usize,
    active: bool,
    replid: ReplId,
    replid2: Option<(ReplId, u64)>,
}

impl Model {
    fn master_offset(&self) -> u64 {
        self.base + self.stream.len() as u64
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Feed(b) => {
                self.stream.extend_from_slice(b);
                self.held = if self.active {
                    (self.held + b.len()).min(self.size)
                } else {
                    0
                };
            }
            Op::Activate => self.active = true,
            Op::Deactivate => {
                self.active = false;
                self.held = 0;
            }
            Op::Resize(n) => {
                self.size = *n;
                self.held = self.held.min(*n);
            }
            Op::Shift(n) => {
                if id(*n) != self.replid {
                    self.replid2 = Some((self.replid, self.master_offset() + 1));
                    self.replid = id(*n);
                }
            }
            Op::ClearId2 => self.replid2 = None,
            Op::Reset(n, offset) => {
                self.replid = id(*n);
                self.replid2 = None;
                self.stream.clear();
                self.base = *offset;
                self.held = 0;
            }
        }
    }

    fn expect_continue(&self, asked_id: ReplId, offset: i64) -> bool {
        let id_ok = asked_id == self.replid
            || self
                .replid2
                .is_some_and(|(old, until)| old == asked_id && offset <= until as i64);
        let first = self.master_offset() + 1 - self.held as u64;
        id_ok && self.active && offset >= first as i64 && offset <= self.master_offset() as i64 + 1
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn psync_and_backlog_match_the_model(
        size in 1usize..48,
        ops in proptest::collection::vec(op(), 1..40),
        probes in proptest::collection::vec((0u8..4, -3i64..40), 8),
    ) {
        let mut h = ReplHistory::new(id(0), size);
        let mut m = Model {
            stream: Vec::new(),
            base: 0,
            held: 0,
            size,
            active: false,
            replid: id(0),
            replid2: None,
        };
        for op in &ops {
            match op {
                Op::Feed(b) => h.feed(b),
                Op::Activate => h.activate_backlog(),
                Op::Deactivate => h.deactivate_backlog(),
                Op::Resize(n) => h.resize_backlog(*n),
                Op::Shift(n) => h.shift_replid(id(*n)),
                Op::ClearId2 => h.clear_replid2(),
                Op::Reset(n, o) => h.reset(id(*n), *o),
            }
            m.apply(op);
            prop_assert_eq!(h.master_repl_offset(), m.master_offset());
            prop_assert_eq!(h.backlog().histlen(), m.held);
            prop_assert_eq!(h.replid(), m.replid);
            prop_assert_eq!(
                h.second_replid_offset(),
                m.replid2.map_or(-1, |(_, until)| until as i64)
            );
            // Probe offsets around both ends of what is held, and around the switch.
            let top = m.master_offset() as i64;
            let first = top + 1 - m.held as i64;
            for &(who, delta) in &probes {
                let asked_id = if who == 3 {
                    m.replid2.map_or(id(3), |(old, _)| old)
                } else {
                    id(who)
                };
                for offset in [first - 1 + delta % 3, top + 1 - delta % 3, first + delta] {
                    let text = offset.to_string();
                    let decision = h.psync(asked_id.to_string().as_bytes(), text.as_bytes());
                    let want = m.expect_continue(asked_id, offset);
                    match decision {
                        PsyncDecision::Continue { replid, from } => {
                            prop_assert!(want, "continued {offset} for {asked_id} ({m_replid})",
                                m_replid = m.replid);
                            prop_assert_eq!(replid, m.replid);
                            prop_assert_eq!(from as i64, offset);
                            let held = h.backlog().copy_from(from).expect("covered");
                            let start = (from - m.base - 1) as usize;
                            prop_assert_eq!(held, m.stream[start..].to_vec());
                        }
                        PsyncDecision::FullResync { .. } => {
                            prop_assert!(!want, "refused {offset} for {asked_id}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn full_resync_on_request_and_on_garbage() {
    let mut h = ReplHistory::new(id(0), 16);
    h.activate_backlog();
    h.feed(b"abc");
    let me = h.replid().to_string();
    for (replid, offset) in [
        ("?", "-1"),
        (me.as_str(), "x"),
        (me.as_str(), ""),
        (me.as_str(), "99999999999999999999999"),
        (me.as_str(), "-9223372036854775808"),
        ("", "1"),
    ] {
        assert!(
            matches!(
                h.psync(replid.as_bytes(), offset.as_bytes()),
                PsyncDecision::FullResync { .. }
            ),
            "{replid} {offset}"
        );
    }
}
