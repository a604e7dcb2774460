//! The codec against real Redis 7.0.15 cluster bus captures.
//!
//! The captures live outside the project, in `/work/shared/vectors/cluster-bus` (one
//! message per `.bin` file, every decoded field in `index.json`; see its README). The
//! project must build and test without them, so when the folder is missing these tests
//! print a note and pass, unless `CARMINE_REQUIRE_VECTORS=1` asks for them.

use carmine_gossip::codec::{
    decode, encode, extension_len, frame_len, kind, next_frame, slot_ranges, Body, Extension,
    Message, NodeId, SlotBits,
};
use serde_json::Value;
use std::path::PathBuf;

/// The vectors folder, or `None` (after saying why) when this checkout has none.
fn vectors_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/cluster-bus");
    if dir.join("index.json").is_file() {
        return Some(dir);
    }
    if std::env::var("CARMINE_REQUIRE_VECTORS").as_deref() == Ok("1") {
        panic!(
            "CARMINE_REQUIRE_VECTORS=1 but {} has no index.json",
            dir.display()
        );
    }
    eprintln!(
        "note: {} not found; skipping the Redis cluster bus vectors",
        dir.display()
    );
    None
}

struct Vector {
    name: String,
    bytes: Vec<u8>,
    meta: Value,
}

fn load() -> Option<Vec<Vector>> {
    let dir = vectors_dir()?;
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    let files = index["files"].as_array().expect("index.json: files[]");
    assert!(!files.is_empty(), "index.json lists no files");
    Some(
        files
            .iter()
            .map(|meta| {
                let name = meta["file"].as_str().expect("files[].file").to_owned();
                let bytes = std::fs::read(dir.join(&name)).expect("read vector file");
                Vector {
                    name,
                    bytes,
                    meta: meta.clone(),
                }
            })
            .collect(),
    )
}

fn uint(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what}: not an unsigned integer: {v}"))
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v}"))
}

fn node(id: &NodeId) -> &str {
    std::str::from_utf8(id).expect("node ids in the captures are ASCII hex")
}

/// `[[start, end], ...]` as in index.json.
fn ranges(bits: &SlotBits) -> Vec<(u64, u64)> {
    slot_ranges(bits)
        .into_iter()
        .map(|(a, b)| (u64::from(a), u64::from(b)))
        .collect()
}

fn json_ranges(v: &Value, what: &str) -> Vec<(u64, u64)> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: not an array"))
        .iter()
        .map(|r| (uint(&r[0], what), uint(&r[1], what)))
        .collect()
}

fn be16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

fn check_header(v: &Vector, m: &Message) {
    let f = &v.name;
    let j = &v.meta["header"];
    let h = &m.header;
    assert_eq!(text(&j["sig"], f), "RCmb", "{f}");
    assert_eq!(uint(&j["totlen"], f), v.bytes.len() as u64, "{f}: totlen");
    assert_eq!(uint(&j["ver"], f), 1, "{f}: ver");
    assert_eq!(u64::from(h.port), uint(&j["port"], f), "{f}: port");
    assert_eq!(u64::from(h.kind), uint(&j["type"], f), "{f}: type");
    assert_eq!(u64::from(h.kind), uint(&v.meta["type"], f), "{f}: type");
    assert_eq!(
        h.current_epoch,
        uint(&j["currentEpoch"], f),
        "{f}: currentEpoch"
    );
    assert_eq!(
        h.config_epoch,
        uint(&j["configEpoch"], f),
        "{f}: configEpoch"
    );
    assert_eq!(h.offset, uint(&j["offset"], f), "{f}: offset");
    assert_eq!(node(&h.sender), text(&j["sender"], f), "{f}: sender");
    assert_eq!(
        ranges(&h.slots),
        json_ranges(&j["myslots"], f),
        "{f}: myslots"
    );
    match &h.slaveof {
        None => assert!(j["slaveof"].is_null(), "{f}: slaveof"),
        Some(id) => assert_eq!(node(id), text(&j["slaveof"], f), "{f}: slaveof"),
    }
    assert_eq!(h.myip, text(&j["myip"], f).as_bytes(), "{f}: myip");
    assert_eq!(u64::from(h.pport), uint(&j["pport"], f), "{f}: pport");
    assert_eq!(u64::from(h.cport), uint(&j["cport"], f), "{f}: cport");
    assert_eq!(u64::from(h.flags), uint(&j["flags"], f), "{f}: flags");
    assert_eq!(u64::from(h.state), uint(&j["state"], f), "{f}: state");
    let mflags: Vec<u64> = j["mflags"]
        .as_array()
        .expect("mflags")
        .iter()
        .map(|x| uint(x, f))
        .collect();
    assert_eq!(
        h.mflags.iter().map(|&x| u64::from(x)).collect::<Vec<_>>(),
        mflags,
        "{f}: mflags"
    );

    // The counts are not Header fields: they come from the body, and are 0 elsewhere.
    let (count, n_ext) = match &m.body {
        Body::Ping { gossip, extensions } => (gossip.len() as u64, extensions.len() as u64),
        _ => (0, 0),
    };
    assert_eq!(count, uint(&j["count"], f), "{f}: count");
    assert_eq!(count, uint(&v.meta["gossip_count"], f), "{f}: gossip_count");
    assert_eq!(n_ext, uint(&j["extensions"], f), "{f}: extensions");
    // And as they sit in the file.
    assert_eq!(be16(&v.bytes, 14), count, "{f}: raw count");
    assert_eq!(be16(&v.bytes, 2214), n_ext, "{f}: raw extensions");

    // The top-level repeats.
    assert_eq!(node(&h.sender), text(&v.meta["sender"], f), "{f}");
    assert_eq!(u64::from(h.port), uint(&v.meta["sender_port"], f), "{f}");
    assert_eq!(u64::from(h.cport), uint(&v.meta["sender_cport"], f), "{f}");
    assert_eq!(h.current_epoch, uint(&v.meta["currentEpoch"], f), "{f}");
    assert_eq!(h.config_epoch, uint(&v.meta["configEpoch"], f), "{f}");
    assert_eq!(u64::from(h.flags), uint(&v.meta["flags"], f), "{f}");
}

fn check_body(v: &Vector, m: &Message) {
    let f = &v.name;
    let j = &v.meta;
    match &m.body {
        Body::Ping { gossip, extensions } => {
            assert!(
                [kind::PING, kind::PONG, kind::MEET].contains(&m.header.kind),
                "{f}"
            );
            let jg = j["gossip"].as_array().expect("gossip[]");
            assert_eq!(gossip.len(), jg.len(), "{f}: gossip entries");
            for (i, (g, e)) in gossip.iter().zip(jg).enumerate() {
                let w = format!("{f}: gossip[{i}]");
                assert_eq!(node(&g.node), text(&e["nodename"], &w), "{w}.nodename");
                assert_eq!(
                    u64::from(g.ping_sent),
                    uint(&e["ping_sent"], &w),
                    "{w}.ping_sent"
                );
                assert_eq!(
                    u64::from(g.pong_received),
                    uint(&e["pong_received"], &w),
                    "{w}.pong_received"
                );
                assert_eq!(g.ip.as_slice(), text(&e["ip"], &w).as_bytes(), "{w}.ip");
                assert_eq!(u64::from(g.port), uint(&e["port"], &w), "{w}.port");
                assert_eq!(u64::from(g.cport), uint(&e["cport"], &w), "{w}.cport");
                assert_eq!(u64::from(g.flags), uint(&e["flags"], &w), "{w}.flags");
                assert_eq!(u64::from(g.pport), uint(&e["pport"], &w), "{w}.pport");
                let raw = 2256 + 104 * i + 102;
                assert_eq!(
                    be16(&v.bytes, raw),
                    uint(&e["notused1"], &w),
                    "{w}.notused1"
                );
            }
            let je = j["ping_extensions"].as_array().expect("ping_extensions[]");
            assert_eq!(extensions.len(), je.len(), "{f}: ping extensions");
            for (i, (x, e)) in extensions.iter().zip(je).enumerate() {
                let w = format!("{f}: ping_extensions[{i}]");
                assert_eq!(
                    extension_len(x) as u64,
                    uint(&e["length"], &w),
                    "{w}.length"
                );
                assert_eq!(uint(&e["unused"], &w), 0, "{w}.unused");
                match (uint(&e["type"], &w), x) {
                    (0, Extension::Hostname(h)) => {
                        assert_eq!(h, text(&e["hostname"], &w).as_bytes(), "{w}.hostname")
                    }
                    (t, x) => panic!("{w}: type {t} decoded as {x:?}"),
                }
            }
        }
        Body::Fail { node: n } => {
            assert_eq!(m.header.kind, kind::FAIL, "{f}");
            assert_eq!(node(n), text(&j["fail"]["nodename"], f), "{f}: fail");
        }
        Body::Publish { channel, message } => {
            assert!(
                [kind::PUBLISH, kind::PUBLISHSHARD].contains(&m.header.kind),
                "{f}"
            );
            let p = &j["publish"];
            assert_eq!(channel.len() as u64, uint(&p["channel_len"], f), "{f}");
            assert_eq!(message.len() as u64, uint(&p["message_len"], f), "{f}");
            assert_eq!(channel, text(&p["channel"], f).as_bytes(), "{f}: channel");
            assert_eq!(message, text(&p["message"], f).as_bytes(), "{f}: message");
        }
        Body::Update {
            config_epoch,
            node: n,
            slots,
        } => {
            assert_eq!(m.header.kind, kind::UPDATE, "{f}");
            let u = &j["update"];
            assert_eq!(*config_epoch, uint(&u["configEpoch"], f), "{f}: update");
            assert_eq!(node(n), text(&u["nodename"], f), "{f}: update");
            assert_eq!(
                ranges(slots),
                json_ranges(&u["slots"], f),
                "{f}: update slots"
            );
        }
        Body::Empty => assert!(
            [
                kind::FAILOVER_AUTH_REQUEST,
                kind::FAILOVER_AUTH_ACK,
                kind::MFSTART
            ]
            .contains(&m.header.kind),
            "{f}"
        ),
        Body::Module { .. } => panic!("{f}: no module message was captured"),
    }
}

#[test]
fn every_vector_decodes_to_its_index_entry_and_reencodes_byte_for_byte() {
    let Some(vectors) = load() else { return };
    for v in &vectors {
        let f = &v.name;
        assert_eq!(uint(&v.meta["size"], f), v.bytes.len() as u64, "{f}: size");
        assert_eq!(
            uint(&v.meta["totlen"], f),
            v.bytes.len() as u64,
            "{f}: totlen"
        );
        assert_eq!(frame_len(&v.bytes), Ok(Some(v.bytes.len())), "{f}");
        let m = decode(&v.bytes).unwrap_or_else(|e| panic!("{f}: {e}"));
        check_header(v, &m);
        check_body(v, &m);
        assert!(encode(&m) == v.bytes, "{f}: re-encoding differs");
    }
    eprintln!("{} Redis 7.0.15 cluster bus vectors passed", vectors.len());
}

/// A small deterministic generator (xorshift64*), so a failure is reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// Feeds `stream` in `chunks` into a buffer, cutting messages off it as they complete.
fn split(stream: &[u8], chunks: &[usize]) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut at = 0;
    for &n in chunks {
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        while let Some(frame) = next_frame(&buf).expect("valid stream") {
            let len = frame.len();
            out.push(frame.to_vec());
            buf.drain(..len);
        }
    }
    assert_eq!(at, stream.len());
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

#[test]
fn concatenated_vectors_split_back_into_the_same_messages() {
    let Some(vectors) = load() else { return };
    let stream: Vec<u8> = vectors.iter().flat_map(|v| v.bytes.clone()).collect();
    let expected: Vec<Message> = vectors
        .iter()
        .map(|v| decode(&v.bytes).expect("decodes"))
        .collect();

    let mut plans: Vec<Vec<usize>> = vec![vec![stream.len()], vec![1; stream.len()]];
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        // Small pieces around the 8-byte prefix, and large ones spanning messages.
        let max = [9, 64, 3000, 10_000][seed as usize % 4];
        let mut left = stream.len();
        let mut plan = Vec::new();
        while left > 0 {
            let n = (1 + rng.below(max)).min(left);
            plan.push(n);
            left -= n;
        }
        plans.push(plan);
    }

    for plan in &plans {
        let frames = split(&stream, plan);
        assert_eq!(frames.len(), vectors.len());
        for ((frame, v), want) in frames.iter().zip(&vectors).zip(&expected) {
            assert!(*frame == v.bytes, "{}: frame bytes differ", v.name);
            assert_eq!(decode(frame).as_ref(), Ok(want), "{}", v.name);
        }
    }
}
