//! A small script through the full dispatcher: EVALSHA of GET + INCR + EXPIRE on one of
//! 100k keys, the script `benches/scripts/evalsha.sh` runs against redis-server. Measures
//! the per-script cost (KEYS, the Lua call, three `redis.call`s, the reply) without the
//! network.

use carmine_benches::Dispatcher;
use carmine_resp::Args;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

const SCRIPT: &str = "local v = redis.call('get', KEYS[1]) redis.call('incr', KEYS[1]) \
                      redis.call('expire', KEYS[1], 100) return v";

fn bench(c: &mut Criterion) {
    let mut server = Dispatcher::new();
    // `$40\r\n<sha>\r\n`
    let loaded = server.run(&Args::from_slices(&["SCRIPT", "LOAD", SCRIPT]));
    let sha = String::from_utf8_lossy(&loaded[5..45]).into_owned();
    let keys: Vec<String> = (0..100_000).map(|i| format!("key:{i:012}")).collect();
    let mut i = 0usize;
    c.bench_function("evalsha_get_incr_expire", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let args = Args::from_slices(&["EVALSHA", sha.as_str(), "1", keys[i].as_str()]);
            let reply = server.run(black_box(&args));
            assert!(
                !reply.starts_with(b"-"),
                "{:?}",
                String::from_utf8_lossy(reply)
            );
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
