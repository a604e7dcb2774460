//! A small script through the full dispatcher: EVALSHA of GET + INCR + EXPIRE on one of
//! 100k keys, the script `benches/scripts/evalsha.sh` runs against redis-server. Measures
//! the per-script cost (KEYS, the Lua call, three `redis.call`s, the reply) without the
//! network.

use std::sync::Arc;

use carmine_commands::{execute, ClientInfo, Config, Session, Shared};
use carmine_resp::{Args, ReplyBuf};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

const SCRIPT: &str = "local v = redis.call('get', KEYS[1]) redis.call('incr', KEYS[1]) \
                      redis.call('expire', KEYS[1], 100) return v";

fn bench(c: &mut Criterion) {
    let shared = Shared::new(Config::new(), 1, None);
    let stats = shared.new_thread_stats();
    let info = Arc::new(ClientInfo::new(1, String::new(), String::new(), -1, 0));
    let mut session = Session::new(info, 0, true);
    let mut reply = ReplyBuf::new(false);
    execute(
        &shared,
        &mut session,
        &stats,
        &Args::from_slices(&["SCRIPT", "LOAD", SCRIPT]),
        &mut reply,
    );
    // `$40\r\n<sha>\r\n`
    let sha = String::from_utf8_lossy(&reply.out[5..45]).into_owned();
    let keys: Vec<String> = (0..100_000).map(|i| format!("key:{i:012}")).collect();
    let mut i = 0usize;
    c.bench_function("evalsha_get_incr_expire", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            reply.out.clear();
            let args = Args::from_slices(&["EVALSHA", sha.as_str(), "1", keys[i].as_str()]);
            execute(&shared, &mut session, &stats, black_box(&args), &mut reply);
            assert!(
                !reply.out.starts_with(b"-"),
                "{:?}",
                String::from_utf8_lossy(&reply.out)
            );
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
