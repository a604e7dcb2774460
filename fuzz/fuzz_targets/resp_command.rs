//! The server's request decoder on arbitrary bytes, fed in two pieces at an arbitrary cut.
#![no_main]
use bytes::BytesMut;
use carmine_resp::{Args, CommandDecoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = data[0] as usize % data.len();
    let mut dec = CommandDecoder::new(Limits::default());
    let mut args = Args::default();
    let mut buf = BytesMut::new();
    for chunk in [&data[1..cut.max(1)], &data[cut.max(1)..]] {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf, &mut args) {
                Ok(true) => assert!(!args.is_empty()),
                Ok(false) => break,
                Err(_) => return,
            }
        }
    }
});
