//! The server's request decoder on arbitrary bytes, fed in two pieces at an arbitrary cut;
//! and the prefetch walk over the same bytes, whose keys and elements must be the ones
//! `first_key` and `first_element` name in the decoder's commands.
#![no_main]
use bytes::BytesMut;
use carmine_resp::{first_element, first_key, peek_first_keys, Args, CommandDecoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = data[0] as usize % data.len();
    let mut dec = CommandDecoder::new(Limits::default());
    let mut args = Args::default();
    let mut buf = BytesMut::new();
    let mut named = Vec::new();
    'feed: for chunk in [&data[1..cut.max(1)], &data[cut.max(1)..]] {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf, &mut args) {
                Ok(true) => {
                    assert!(!args.is_empty());
                    let first: Vec<Vec<u8>> = (0..args.len().min(4))
                        .filter_map(|i| args.get(i))
                        .map(|a| a.to_vec())
                        .collect();
                    let first: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
                    if let Some(key) = first_key(&first) {
                        named.push((key.to_vec(), first_element(&first).map(<[u8]>::to_vec)));
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
    peek_first_keys(&data[1..], usize::MAX, |key, element| {
        peeked.push((key.to_vec(), element.map(<[u8]>::to_vec)))
    });
    assert!(
        named.starts_with(&peeked),
        "peeked {peeked:?}, decoded {named:?}"
    );
});
