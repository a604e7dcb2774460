//! The keyspace under the command path: SET and GET through locked slot tables, a
//! pipeline's 16 GETs and 16 SISMEMBERs of one big set with and without
//! `Keyspace::prefetch`, a long list used as a queue,
//! the full dispatcher (lookup, arity, lock, execute, reply) for GET, and sorted-set
//! commands on a 100k-member set through the dispatcher.

use carmine_benches::Dispatcher;
use carmine_keyspace::Keyspace;
use carmine_resp::Args;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let ks = Keyspace::new();
    let db = ks.db(0);
    for i in 0..100_000 {
        db.set(format!("key:{i:012}").as_bytes(), b"0123456789abcdef");
    }
    let mut i = 0u64;
    c.bench_function("keyspace_get", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            black_box(db.get(format!("key:{i:012}").as_bytes()).ok())
        })
    });
    c.bench_function("keyspace_set", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            db.set(format!("key:{i:012}").as_bytes(), b"fedcba9876543210");
        })
    });
    // A pipeline's worth of GETs of random keys among 1M (far more than the caches hold),
    // looked up one after another, or after prefetching the batch as the event loop does.
    let big = Keyspace::new();
    let big_db = big.db(0);
    let names: Vec<Vec<u8>> = (0..1_000_000)
        .map(|i| format!("key:{i:012}").into_bytes())
        .collect();
    for name in &names {
        big_db.set(name, b"0123456789abcdef");
    }
    let mut pick = 1u64;
    let names = &names;
    let mut batch = move || {
        let mut keys: [&[u8]; 16] = [&[]; 16];
        for key in keys.iter_mut() {
            pick = pick
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *key = &names[(pick >> 33) as usize % names.len()];
        }
        keys
    };
    let mut pipeline = |name: &str, prefetch: bool| {
        c.bench_function(name, |b| {
            b.iter(|| {
                let keys = batch();
                if prefetch {
                    big.prefetch(0, &keys, &[]);
                }
                for key in keys {
                    black_box(big_db.get(key).ok());
                }
            })
        });
    };
    pipeline("pipeline_16_gets", false);
    pipeline("pipeline_16_gets_prefetched", true);
    // A pipeline of 16 SISMEMBERs of random members of one 1M-member set (its index and
    // elements far past the caches), one after another or after prefetching their
    // elements as the event loop does for a pipeline's SADDs, HSETs, ZADDs ...
    for chunk in names.chunks(1000) {
        let members: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        big_db.sadd(b"big-set", &members).expect("set");
    }
    let mut members_pipeline = |name: &str, prefetch: bool| {
        c.bench_function(name, |b| {
            b.iter(|| {
                let members = batch();
                if prefetch {
                    let elements: Vec<(usize, &[u8])> = members.iter().map(|m| (0, *m)).collect();
                    big.prefetch(0, &[b"big-set"], &elements);
                }
                for member in members {
                    black_box(big_db.sismember(b"big-set", member).ok());
                }
            })
        });
    };
    members_pipeline("pipeline_16_sismember", false);
    members_pipeline("pipeline_16_sismember_prefetched", true);
    // A long list used as a queue, as redis-benchmark's LPUSH/LPOP use "mylist".
    for i in 0..100_000u32 {
        db.rpush(b"queue", &[&i.to_le_bytes()]).expect("list");
    }
    c.bench_function("keyspace_list_push_pop", |b| {
        b.iter(|| {
            db.lpush(b"queue", &[b"x"]).expect("list");
            black_box(db.rpop(b"queue").expect("list"))
        })
    });
    // The clock every command is timed with (carmine_commands::clock) against the
    // system's.
    c.bench_function("clock_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    c.bench_function("clock_command_now", |b| {
        b.iter(|| black_box(carmine_commands::clock::now()))
    });
    let mut server = Dispatcher::new();
    server.run(&Args::from_slices(&["SET", "k", "v"]));
    let get = Args::from_slices(&["GET", "k"]);
    c.bench_function("dispatch_get", |b| {
        b.iter(|| {
            server.run(black_box(&get));
        })
    });
    // A leaderboard: re-scores, ranks and a top-ten window on 100k members.
    for i in 0..100_000u32 {
        let (score, member) = (((i * 7919) % 100_000).to_string(), format!("player:{i}"));
        server.run(&Args::from_slices(&[
            "ZADD",
            "board",
            score.as_str(),
            member.as_str(),
        ]));
    }
    let mut z = 0u32;
    let mut zset_bench = |name: &str, args: &dyn Fn(u32) -> Args| {
        c.bench_function(name, |b| {
            b.iter(|| {
                z = (z + 7919) % 100_000;
                server.run(&args(z));
            })
        });
    };
    zset_bench("zset_zadd_rescore", &|z| {
        let score = ((z * 31) % 100_000).to_string();
        Args::from_slices(&["ZADD", "board", score.as_str(), &format!("player:{z}")])
    });
    // A small sorted set (packed, 100 members of 128) re-scored.
    zset_bench("zset_zadd_rescore_packed", &|z| {
        let score = ((z * 31) % 1000).to_string();
        Args::from_slices(&["ZADD", "small", score.as_str(), &format!("m:{}", z % 100)])
    });
    zset_bench("zset_zrank", &|z| {
        Args::from_slices(&["ZRANK", "board", &format!("player:{z}")])
    });
    zset_bench("zset_zrange_10", &|z| {
        let (start, stop) = (z.to_string(), (z + 9).to_string());
        Args::from_slices(&["ZRANGE", "board", start.as_str(), stop.as_str()])
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
