//! RDB: snapshotting a keyspace to bytes, loading those bytes back, and CRC-64 and LZF
//! throughput (`cargo bench -p carmine-benches --bench rdb`).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use carmine_keyspace::Keyspace;
use carmine_rdb::{crc64, load_into, lzf, Snapshot, WriteOptions};

const KEYS: usize = 100_000;

fn filled() -> Keyspace {
    let ks = Keyspace::new();
    let db = ks.db(0);
    for i in 0..KEYS {
        db.set(
            format!("key:{i:012}").as_bytes(),
            format!("value-{i:010}-xxxxxxxx").as_bytes(),
        );
    }
    ks
}

fn snapshot_bytes(ks: &Keyspace) -> Vec<u8> {
    let snap = Snapshot::begin(ks, WriteOptions::default(), true).expect("no other snapshot");
    let mut out = Vec::new();
    snap.write_to(ks, &mut out, &[]).expect("in memory");
    out
}

fn rdb(c: &mut Criterion) {
    let ks = filled();
    let file = snapshot_bytes(&ks);
    let mut g = c.benchmark_group("rdb");
    g.sample_size(10);
    g.throughput(Throughput::Elements(KEYS as u64));
    g.bench_function("snapshot_100k_keys", |b| b.iter(|| snapshot_bytes(&ks)));
    g.bench_function("load_100k_keys", |b| {
        b.iter_batched(
            Keyspace::new,
            |fresh| {
                load_into(&fresh, &file).expect("valid");
                fresh
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let data: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8 % 16)
        .collect();
    let mut g = c.benchmark_group("codecs");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("crc64_1mb", |b| b.iter(|| crc64::crc64(0, &data)));
    g.bench_function("lzf_compress_1mb", |b| {
        b.iter(|| lzf::compress(&data, data.len()))
    });
    let packed = lzf::compress(&data, data.len()).expect("compressible");
    g.bench_function("lzf_decompress_1mb", |b| {
        b.iter(|| lzf::decompress(&packed, data.len()))
    });
    g.finish();

    // What a snapshot of typical small values does: try LZF on each 100-byte value
    // (printable, mostly incompressible, like ../shared/bench's values) and give up.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = fastrand::Rng::with_seed(12345);
    let values: Vec<Vec<u8>> = (0..10_000)
        .map(|_| (0..100).map(|_| ALPHABET[rng.usize(..64)]).collect())
        .collect();
    let mut g = c.benchmark_group("codecs");
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("lzf_try_10k_100b_values", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            values
                .iter()
                .filter(|v| lzf::compress_into(v, v.len() - 4, &mut out))
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, rdb);
criterion_main!(benches);
