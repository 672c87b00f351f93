//! Key-encoding micro-benchmarks: encode_key, decode_key and crc64 on
//! 16-byte and 100-byte keys (half hash key, half sort key).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use markab::key::{crc64, decode_key, encode_key};

fn key_benches(c: &mut Criterion) {
    for key_bytes in [16usize, 100] {
        let hash_key = vec![b'h'; key_bytes / 2];
        let sort_key = vec![b's'; key_bytes - key_bytes / 2];
        let raw = encode_key(&hash_key, &sort_key).expect("hash key within bounds");
        let mut group = c.benchmark_group(format!("keys/{key_bytes}B"));
        group.throughput(Throughput::Bytes(key_bytes as u64));
        group.bench_function("encode_key", |b| {
            b.iter(|| encode_key(black_box(&hash_key), black_box(&sort_key)))
        });
        group.bench_function("decode_key", |b| b.iter(|| decode_key(black_box(&raw))));
        group.bench_function("crc64", |b| {
            let bytes = [hash_key.as_slice(), sort_key.as_slice()].concat();
            b.iter(|| crc64(black_box(&bytes)))
        });
        group.finish();
    }
}

criterion_group!(benches, key_benches);
criterion_main!(benches);
