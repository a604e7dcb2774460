//! The Redis Cluster bus codec: cutting a byte stream into messages and decoding them
//! never panics, whatever decodes survives encode -> decode unchanged, and a node fed the
//! bytes on a link never panics.
#![no_main]
use carmine_gossip::codec::{decode, encode, encoded_len, next_frame};
use carmine_gossip::{Cluster, Config};
use libfuzzer_sys::fuzz_target;

fn check(frame: &[u8]) {
    if let Ok(m) = decode(frame) {
        let bytes = encode(&m);
        assert_eq!(bytes.len(), encoded_len(&m));
        assert_eq!(decode(&bytes).as_ref(), Ok(&m));
        // Encoding is canonical: a second round gives the same bytes.
        assert_eq!(encode(&m), bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    // As a link reads it: whole frames off the front until one is incomplete or the
    // stream is bad (where a real link would close).
    let mut rest = data;
    while let Ok(Some(frame)) = next_frame(rest) {
        check(frame);
        rest = rest.get(frame.len()..).unwrap_or_default();
    }
    // And the input as one message, so that lengths disagreeing with totlen get there.
    check(data);
    // And what a node does with it: an inbound link that sends these bytes, then the
    // timer. Nothing a peer sends may panic the machine.
    let mut node = Cluster::new(Config::default(), 1_000_000, 7);
    let link = node.accept(1_000_000, "127.0.0.1", "127.0.0.1");
    let _ = node.received(1_000_001, link, data);
    let _ = node.tick(1_000_200);
});
