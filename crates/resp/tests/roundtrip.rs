//! Property tests: encode-then-decode is the identity for any frame and any split point,
//! and the command decoder gives back exactly the arguments that were encoded.

use bytes::{Bytes, BytesMut};
use carmine_resp::{
    encode, first_element, first_key, peek_first_keys, Args, CommandDecoder, Frame, FrameDecoder,
    Limits,
};
use proptest::prelude::*;

fn leaf() -> impl Strategy<Value = Frame> {
    let text = "[a-zA-Z0-9 _:.-]{0,12}".prop_map(|s| Bytes::from(s.into_bytes()));
    let blob = proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from);
    prop_oneof![
        text.clone().prop_map(Frame::Simple),
        text.clone().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        blob.clone().prop_map(Frame::Bulk),
        Just(Frame::NullBulk),
        Just(Frame::NullArray),
        Just(Frame::Null),
        any::<bool>().prop_map(Frame::Boolean),
        any::<f64>()
            .prop_filter("nan never equals itself", |f| !f.is_nan())
            .prop_map(Frame::Double),
        "-?[1-9][0-9]{0,40}".prop_map(|s| Frame::BigNumber(Bytes::from(s.into_bytes()))),
        blob.clone().prop_map(Frame::BulkError),
        blob.prop_map(|b| Frame::Verbatim(*b"txt", b)),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Set),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Push),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Frame::Map),
            proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(Frame::Attribute),
        ]
    })
}

proptest! {
    #[test]
    fn frame_roundtrip_at_any_split(f in frame(), cut_seed in any::<usize>()) {
        let mut wire = BytesMut::new();
        encode(&f, &mut wire);
        let cut = cut_seed % (wire.len() + 1);
        let dec = FrameDecoder::default();
        let mut buf = BytesMut::from(&wire[..cut]);
        let early = dec.decode(&mut buf).unwrap();
        if cut < wire.len() {
            prop_assert!(early.is_none());
            prop_assert_eq!(buf.len(), cut);
            buf.extend_from_slice(&wire[cut..]);
            let got = dec.decode(&mut buf).unwrap();
            prop_assert_eq!(got, Some(f));
        } else {
            prop_assert_eq!(early, Some(f));
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn commands_roundtrip_at_any_split(
        cmds in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..6), 1..5),
        cut_seed in any::<usize>(),
    ) {
        let mut wire = BytesMut::new();
        for c in &cmds {
            encode(&Frame::Array(c.iter().map(|a| Frame::Bulk(Bytes::from(a.clone()))).collect()), &mut wire);
        }
        let cut = cut_seed % (wire.len() + 1);
        let mut dec = CommandDecoder::new(Limits::default());
        let mut args = Args::default();
        let mut buf = BytesMut::new();
        let mut got: Vec<Vec<Vec<u8>>> = Vec::new();
        for chunk in [&wire[..cut], &wire[cut..]] {
            buf.extend_from_slice(chunk);
            while dec.decode(&mut buf, &mut args).unwrap() {
                got.push(args.iter().map(<[u8]>::to_vec).collect());
            }
        }
        prop_assert_eq!(got, cmds);
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut dec = CommandDecoder::new(Limits::default());
        let mut args = Args::default();
        let mut buf = BytesMut::from(&data[..]);
        for _ in 0..400 {
            match dec.decode(&mut buf, &mut args) {
                Ok(true) => continue,
                _ => break,
            }
        }
        let mut buf = BytesMut::from(&data[..]);
        let _ = FrameDecoder::default().decode(&mut buf);
    }

    /// The prefetch walk's keys and elements are the decoded commands' first keys and
    /// elements, command by command,
    /// up to where the input is cut, and arbitrary bytes after them do not disturb it.
    #[test]
    fn peeked_keys_follow_the_decoder(
        cmds in proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..20),
                    // Script calls, whose key is their fourth argument, and commands
                    // that name an element of their key's value.
                    proptest::sample::select(vec![
                        &b"EVALSHA"[..], b"fcall", b"1", b"0", b"HSET", b"sadd", b"ZAdd",
                        b"nx", b"zincrby",
                    ])
                    .prop_map(<[u8]>::to_vec),
                ],
                1..5,
            ),
            1..8,
        ),
        cut_seed in any::<usize>(),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut wire = BytesMut::new();
        for c in &cmds {
            encode(&Frame::Array(c.iter().map(|a| Frame::Bulk(Bytes::from(a.clone()))).collect()), &mut wire);
        }
        let cut = cut_seed % (wire.len() + 1);
        let mut input = wire[..cut].to_vec();
        input.extend_from_slice(&tail);
        let mut dec = CommandDecoder::new(Limits::default());
        let mut args = Args::default();
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut complete = 0;
        while dec.decode(&mut buf, &mut args).unwrap() {
            complete += 1;
        }
        type Peeked = (Vec<u8>, Option<Vec<u8>>);
        let expected: Vec<Peeked> = cmds[..complete]
            .iter()
            .filter_map(|c| {
                let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
                let element = first_element(&args).map(<[u8]>::to_vec);
                first_key(&args).map(|k| (k.to_vec(), element))
            })
            .collect();
        let peeked = |got: &mut Vec<Peeked>, k: &[u8], e: Option<&[u8]>| {
            got.push((k.to_vec(), e.map(<[u8]>::to_vec)))
        };
        let mut got = Vec::new();
        peek_first_keys(&input, 64, |k, e| peeked(&mut got, k, e));
        // Bytes past the cut may complete one more command or look like more; the
        // complete commands' keys come first, in order.
        prop_assert!(got.len() >= expected.len());
        prop_assert_eq!(&got[..expected.len()], &expected[..]);
        let mut only = Vec::new();
        peek_first_keys(&wire[..cut], 64, |k, e| peeked(&mut only, k, e));
        prop_assert_eq!(only, expected);
    }
}

#[test]
fn split_at_every_byte_one_at_a_time() {
    let wire = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*1\r\n$4\r\nPING\r\n";
    let mut dec = CommandDecoder::new(Limits::default());
    let mut args = Args::default();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &b in wire.iter() {
        buf.extend_from_slice(&[b]);
        while dec.decode(&mut buf, &mut args).unwrap() {
            got.push(args.iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
        }
    }
    assert_eq!(
        got,
        vec![
            vec![b"SET".to_vec(), b"key".to_vec(), b"value".to_vec()],
            vec![b"PING".to_vec()]
        ]
    );
}
