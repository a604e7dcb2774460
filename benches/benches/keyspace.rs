//! The keyspace under the command path: SET and GET through locked slot tables, a long
//! list used as a queue, and the full dispatcher (lookup, arity, lock, execute, reply)
//! for GET.

use std::sync::Arc;

use carmine_commands::{execute, ClientInfo, Config, Session, Shared};
use carmine_keyspace::Keyspace;
use carmine_resp::{Args, ReplyBuf};
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
    let shared = Shared::new(Config::new(), 1, None);
    let stats = shared.new_thread_stats();
    let info = Arc::new(ClientInfo::new(1, String::new(), String::new(), -1, 0));
    let mut session = Session::new(info, 0, true);
    let mut reply = ReplyBuf::new(false);
    execute(
        &shared,
        &mut session,
        &stats,
        &Args::from_slices(&["SET", "k", "v"]),
        &mut reply,
    );
    let get = Args::from_slices(&["GET", "k"]);
    c.bench_function("dispatch_get", |b| {
        b.iter(|| {
            reply.out.clear();
            execute(&shared, &mut session, &stats, black_box(&get), &mut reply);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
