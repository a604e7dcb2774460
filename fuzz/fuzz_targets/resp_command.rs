//! The server's request decoder on arbitrary bytes, fed in two pieces at an arbitrary cut;
//! and the prefetch walk over the same bytes, whose keys must be the decoder's.
#![no_main]
use bytes::BytesMut;
use carmine_resp::{peek_first_keys, Args, CommandDecoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = data[0] as usize % data.len();
    let mut dec = CommandDecoder::new(Limits::default());
    let mut args = Args::default();
    let mut buf = BytesMut::new();
    let mut second_args = Vec::new();
    'feed: for chunk in [&data[1..cut.max(1)], &data[cut.max(1)..]] {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf, &mut args) {
                Ok(true) => {
                    assert!(!args.is_empty());
                    if let Some(key) = args.get(1) {
                        second_args.push(key.to_vec());
                    }
                }
                Ok(false) => break,
                Err(_) => break 'feed,
            }
        }
    }
    // The walk stops where the decoder might not (inline commands, long ones), never
    // later, and never reports a key the decoder would not see in the same place.
    let mut peeked = Vec::new();
    peek_first_keys(&data[1..], usize::MAX, |key| peeked.push(key.to_vec()));
    assert!(
        second_args.starts_with(&peeked),
        "peeked {peeked:?}, decoded {second_args:?}"
    );
});
