//! Everything a sentinel reads from the network: replies and pub/sub messages from data
//! nodes and peers (INFO text, hellos, vote replies), hellos PUBLISHed to it, and the
//! SENTINEL commands clients send, and `sentinel` config directives, in any order.
//! Nothing may panic.
#![no_main]

use carmine_sentinel::{Action, Event, Reply, Sentinel};
use libfuzzer_sys::fuzz_target;

fn reply_from(kind: u8, data: &[u8]) -> Reply {
    let text = || data.to_vec();
    match kind % 7 {
        0 => Reply::Bulk(text()),
        1 => Reply::Status(String::from_utf8_lossy(data).into_owned()),
        2 => Reply::Error(String::from_utf8_lossy(data).into_owned()),
        3 => Reply::Array(vec![
            Reply::Bulk(b"message".to_vec()),
            Reply::Bulk(b"__sentinel__:hello".to_vec()),
            Reply::Bulk(text()),
        ]),
        4 => Reply::Array(vec![
            Reply::Int(i64::from(data.first().copied().unwrap_or(0)) - 1),
            Reply::Bulk(text()),
            Reply::Int(i64::from_le_bytes({
                let mut b = [0u8; 8];
                for (d, s) in b.iter_mut().zip(data) {
                    *d = *s;
                }
                b
            })),
        ]),
        5 => Reply::Array(data.chunks(3).map(|c| Reply::Bulk(c.to_vec())).collect()),
        _ => Reply::Int(data.len() as i64),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut s = Sentinel::new("f".repeat(40), 26379, 1);
    let _ = s.configure(&["monitor", "mymaster", "127.0.0.1", "6379", "2"]);
    let _ = s.configure(&["known-replica", "mymaster", "127.0.0.1", "6380"]);
    s.start(1_000);
    let mut now = 1_000i64;
    let mut conns = Vec::new();
    let collect = |actions: Vec<Action>, conns: &mut Vec<u64>| {
        for a in actions {
            if let Action::Connect { conn, .. } = a {
                conns.push(conn);
            }
        }
    };
    let a = s.tick(now);
    collect(a, &mut conns);
    for chunk in data.split(|b| *b == 0xff) {
        let Some((&op, rest)) = chunk.split_first() else { continue };
        now += i64::from(op & 0x0f) * 37;
        let conn = conns
            .get(usize::from(op >> 4) % conns.len().max(1))
            .copied()
            .unwrap_or(1);
        let actions = match op % 7 {
            0 => s.tick(now),
            1 => s.handle(now, Event::Connected { conn, local_ip: "127.0.0.1".into() }),
            2 => s.handle(now, Event::Reply { conn, reply: reply_from(op >> 3, rest) }),
            3 => s.handle(now, Event::Closed { conn, reason: String::new() }),
            4 => {
                let _ = s.publish(now, b"__sentinel__:hello", rest);
                s.take_actions()
            }
            5 => {
                let text = String::from_utf8_lossy(rest).into_owned();
                let words: Vec<&str> = text.split(' ').collect();
                let _ = s.configure(&words);
                s.take_actions()
            }
            _ => {
                let argv: Vec<Vec<u8>> = rest.split(|b| *b == b' ').map(<[u8]>::to_vec).collect();
                let mut full = vec![b"SENTINEL".to_vec()];
                full.extend(argv);
                let _ = s.command(now, &full);
                s.take_actions()
            }
        };
        collect(actions, &mut conns);
    }
});
