//! Slot hashing over key lengths 8, 16, 64 and 1024 bytes, with and without hash tags,
//! against the `crc16` crate as a reference point.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn keys(len: usize, tagged: bool) -> Vec<u8> {
    let mut k: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    if tagged && len >= 8 {
        k[1] = b'{';
        k[6] = b'}';
    }
    k
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("key_slot");
    for len in [8usize, 16, 64, 1024] {
        for tagged in [false, true] {
            let key = keys(len, tagged);
            g.throughput(Throughput::Bytes(len as u64));
            let name = if tagged { "tagged" } else { "plain" };
            g.bench_with_input(BenchmarkId::new(name, len), &key, |b, k| {
                b.iter(|| carmine_slots::key_slot(black_box(k)))
            });
        }
        let key = keys(len, false);
        g.bench_with_input(BenchmarkId::new("crc16-crate", len), &key, |b, k| {
            b.iter(|| crc16::State::<crc16::XMODEM>::calculate(black_box(k)) & 16383)
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
