//! The general RESP2/RESP3 frame decoder: never panics, and whatever it decodes
//! re-encodes to a frame that decodes to the same value.
#![no_main]
use bytes::BytesMut;
use carmine_resp::{encode, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dec = FrameDecoder::default();
    let mut buf = BytesMut::from(data);
    if let Ok(Some(frame)) = dec.decode(&mut buf) {
        let mut again = BytesMut::new();
        encode(&frame, &mut again);
        let back = dec.decode(&mut again).expect("re-encoded frame decodes").expect("complete");
        // NaN doubles never compare equal; compare encodings instead.
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        encode(&frame, &mut a);
        encode(&back, &mut b);
        assert_eq!(a, b);
    }
});
