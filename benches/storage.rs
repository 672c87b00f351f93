//! Partition set/get benchmarks with 100-byte values, on RocksDB (in a
//! temporary directory, WAL on, default write options) and on the
//! in-memory engine for comparison. Keys cycle over 100,000 sort keys of
//! 1,000 hash keys so gets hit records written by the set benchmark.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use markab::key::now_epoch_s;
use markab::storage::{
    MemoryEngine, Partition, RocksEngine, ShardStorage, StorageEngine, StorageLimits, StorageTuning,
};
use markab::wire::message::{Key, Request};

const KEYS_COUNT: u64 = 100_000;
const VALUE_BYTES: usize = 100;

fn key(index: u64) -> Key {
    let index = index % KEYS_COUNT;
    Key::new(
        format!("user{:06}", index / 100),
        format!("field{:03}", index % 100),
    )
}

fn bench_partition<E: StorageEngine>(c: &mut Criterion, name: &str, partition: &Partition<E>) {
    let now = now_epoch_s();
    let value = vec![b'v'; VALUE_BYTES];
    for index in 0..KEYS_COUNT {
        let request = Request::Set {
            key: key(index),
            value: value.clone(),
            ttl_seconds: 0,
        };
        partition.execute(&request, now).expect("preload set");
    }
    let mut group = c.benchmark_group(format!("storage/{name}"));
    let mut next: u64 = 0;
    group.bench_function("set_100B", |b| {
        b.iter(|| {
            next = next.wrapping_add(7_919);
            let request = Request::Set {
                key: key(next),
                value: value.clone(),
                ttl_seconds: 0,
            };
            black_box(partition.execute(&request, now))
        })
    });
    group.bench_function("get_100B", |b| {
        b.iter(|| {
            next = next.wrapping_add(7_919);
            black_box(partition.execute(&Request::Get(key(next)), now))
        })
    });
    group.finish();
}

fn storage_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let shard = ShardStorage::new(&StorageTuning::default()).expect("shard storage");
    let rocks = Partition::new(
        RocksEngine::open(dir.path(), &shard).expect("open RocksDB"),
        StorageLimits::default(),
    );
    bench_partition(c, "rocks", &rocks);
    let memory = Partition::new(MemoryEngine::new(), StorageLimits::default());
    bench_partition(c, "memory", &memory);
}

criterion_group!(benches, storage_benches);
criterion_main!(benches);
