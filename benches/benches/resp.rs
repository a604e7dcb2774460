//! Request decoding and reply encoding.

use bytes::BytesMut;
use carmine_resp::{Args, CommandDecoder, Limits, ReplyBuf};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let one = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000001234\r\n$3\r\nxyz\r\n";
    let pipeline: Vec<u8> = one.repeat(16);
    let mut g = c.benchmark_group("resp");
    g.throughput(Throughput::Elements(16));
    g.bench_function("decode_16_set_commands", |b| {
        let mut dec = CommandDecoder::new(Limits::default());
        let mut args = Args::default();
        b.iter(|| {
            let mut buf = BytesMut::from(&pipeline[..]);
            let mut n = 0;
            while dec.decode(&mut buf, &mut args).unwrap_or(false) {
                n += args.len();
            }
            black_box(n)
        })
    });
    g.bench_function("encode_16_bulk_replies", |b| {
        let mut r = ReplyBuf::new(false);
        b.iter(|| {
            r.out.clear();
            for _ in 0..16 {
                r.bulk(black_box(b"value-of-some-length"));
            }
            black_box(r.out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
