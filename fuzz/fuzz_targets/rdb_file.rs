//! The RDB reader and loader on arbitrary bytes: an error or a load, never a panic or a
//! hang. Inputs that start with a valid header go deep quickly. The same bytes read from
//! a connection in pieces (a replica's diskless load, `PulledInput`) give the same items
//! and the same verdict as read from memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The items a reader yields, and whether it reached the end without an error.
fn read_all<I: carmine_rdb::Input>(
    reader: Result<carmine_rdb::Reader<I>, carmine_rdb::RdbError>,
) -> (Vec<carmine_rdb::Item>, bool) {
    let mut items = Vec::new();
    let Ok(mut r) = reader else {
        return (items, false);
    };
    loop {
        match r.next_item() {
            Ok(Some(item)) => items.push(item),
            Ok(None) => return (items, true),
            Err(_) => return (items, false),
        }
    }
}

fn items_in_memory(input: &[u8]) -> (Vec<carmine_rdb::Item>, bool) {
    read_all(carmine_rdb::Reader::new(input))
}

fn items_pulled(input: &[u8], step: usize, announce: bool) -> (Vec<carmine_rdb::Item>, bool) {
    let mut at = 0;
    let pull = |buf: &mut Vec<u8>| -> std::io::Result<usize> {
        let n = step.min(input.len() - at);
        buf.extend_from_slice(&input[at..at + n]);
        at += n;
        Ok(n)
    };
    let limit = announce.then_some(input.len() as u64);
    read_all(carmine_rdb::Reader::from_input(
        carmine_rdb::PulledInput::new(Vec::new(), limit, pull),
    ))
}

fuzz_target!(|data: &[u8]| {
    let mut file = b"REDIS0010".to_vec();
    file.extend_from_slice(data);
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for input in [data, &file[..]] {
        let in_memory = items_in_memory(input);
        // Without a known length the pulled reader may not refuse a count the bytes left
        // cannot hold until the bytes run out: the verdict is the same, not the moment.
        assert_eq!(items_pulled(input, step, true), in_memory);
        assert_eq!(items_pulled(input, step, false).1, in_memory.1);
        let ks = carmine_keyspace::Keyspace::new();
        let _ = carmine_rdb::load_into(&ks, input);
    }
});
