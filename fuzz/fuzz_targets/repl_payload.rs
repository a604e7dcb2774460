//! What a peer sends during replication, decoded by carmine-repl: the full-sync payload's
//! header line and body fed in arbitrary splits (a replica reading its master), and
//! PSYNC's id and offset (a master deciding). Nothing may panic; a reader never takes
//! more bytes than it was given, and a `$len` payload never holds more than its length;
//! handing the settled bytes over as they arrive gives the same payload.
#![no_main]
use carmine_repl::{PayloadHeader, PayloadReader, PsyncDecision, ReplHistory, ReplId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(header) = PayloadHeader::parse(head) {
        let mut reader = PayloadReader::new(header.clone());
        // The same payload written out as it settles (a replica receiving to a file).
        let mut spilling = PayloadReader::new(header);
        let mut spilled = Vec::new();
        let step = usize::from(rest.first().copied().unwrap_or(1)).max(1);
        for chunk in rest.chunks(step) {
            let taken = reader.push(chunk);
            assert!(taken <= chunk.len());
            assert_eq!(spilling.push(chunk), taken);
            spilled.extend(spilling.take_settled());
        }
        if let Some(len) = reader.expected() {
            assert!(reader.received() as u64 <= len);
        }
        assert_eq!(spilling.received(), reader.received());
        if let (Some(whole), Some(tail)) = (reader.into_rdb(), spilling.into_rdb()) {
            spilled.extend(tail);
            assert_eq!(spilled, whole);
        }
    }
    let mut history = ReplHistory::new(ReplId::from_random([1; 20]), 64);
    history.activate_backlog();
    history.feed(rest);
    let (id, offset) = head.split_at(head.len() / 2);
    if let PsyncDecision::Continue { from, .. } = history.psync(id, offset) {
        assert!(history.backlog().range_from(from).is_some());
    }
});
