//! Cold backups with real processes: `markab meta` and three `markab
//! replica` nodes (two shards each) on 127.0.0.1, a table of 8 partitions ×
//! 3 replicas under a bounded write load, backed up through meta to a
//! directory and to a local S3 server (moto, started by the test on
//! loopback and killed by pid). The backup's files are then read back
//! with the restore path of one partition (download, checksums, decree)
//! and every record acknowledged before the backup began must be there
//! with its value and TTL (docs/backup.md).
//!
//! Every wait is bounded; the load is bounded in time and in requests; only
//! the processes the test started are killed, by pid.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ClusterOptions};
use markab::backup::table::read_backup_manifest;
use markab::backup::{read_manifest, restore_partition};
use markab::client::{Client, ClientOptions, Table};
use markab::storage::{Partition, RocksEngine, ShardStorage, StorageLimits, StorageTuning};
use markab::wire::{BackupRequest, ErrorCode, Key, Request, ResponseBody};
use markab_blocks::moto::Moto;
use markab_blocks::{BlockStore, StoreOptions};

const TABLE: &str = "backed";
const PARTITIONS: i32 = 8;
/// Concurrent writers of the load.
const WRITERS: usize = 3;
/// Most writes the whole load makes.
const WRITES_MAX: usize = 100_000;
/// Records written before the load starts, half of them with a TTL.
const RECORDS: usize = 2_000;
/// The TTL of the records that have one.
const TTL_SECONDS: u32 = 86_400;
/// Bound on a backup's completion.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(120);
const BUCKET: &str = "markab-backups";
/// Credentials moto accepts (it checks none unless told to).
const ACCESS_KEY: &str = "markab-test-key";
const SECRET_KEY: &str = "markab-test-secret";

/// One cluster at a time: a two-core machine runs one well, not two.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn credentials() -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
    ]
}

fn cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        meta_lines: "replication = true\n".into(),
        meta_env: credentials(),
        node_env: credentials(),
        // A rate limit that makes an upload take a moment, so that the
        // load runs during it.
        node_lines: "backup_upload_bytes_per_second = 8388608\n".into(),
        ..ClusterOptions::default()
    })
}

/// What the load saw.
#[derive(Default)]
struct Load {
    acked: Mutex<BTreeMap<String, String>>,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
    issued: AtomicUsize,
}

fn start_load(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let writers = (0..WRITERS)
        .map(|writer| {
            let (table, load) = (table.clone(), load.clone());
            runtime.spawn(async move {
                let mut sequence = 0u64;
                while !load.stop.load(Ordering::Relaxed)
                    && load.issued.fetch_add(1, Ordering::Relaxed) < WRITES_MAX
                {
                    sequence += 1;
                    let hash_key = format!("load{writer}-{sequence}");
                    let value = format!("v{sequence}");
                    match table
                        .set(hash_key.as_bytes(), b"s", value.as_bytes(), 0)
                        .await
                    {
                        Ok(()) => {
                            load.acked.lock().unwrap().insert(hash_key, value);
                        }
                        Err(error) => {
                            load.errors
                                .lock()
                                .unwrap()
                                .push(format!("{hash_key}: {error}"));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();
    (load, writers)
}

/// Writes the base records: `base-i` → `value-i` (1 KiB), odd ones with a TTL.
fn write_base(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
) -> BTreeMap<String, (String, bool)> {
    let mut written = BTreeMap::new();
    runtime.block_on(async {
        for index in 0..RECORDS {
            let hash_key = format!("base-{index}");
            let value = format!("value-{index}-{}", "x".repeat(1_000));
            let with_ttl = index % 2 == 1;
            table
                .set(
                    hash_key.as_bytes(),
                    b"s",
                    value.as_bytes(),
                    if with_ttl { TTL_SECONDS } else { 0 },
                )
                .await
                .unwrap_or_else(|error| panic!("{hash_key}: {error}"));
            written.insert(hash_key, (value, with_ttl));
        }
    });
    written
}

fn pairs_of(cluster: &Cluster, request: BackupRequest) -> Vec<(String, String)> {
    match cluster.meta_call(&Request::Backup(request.clone())) {
        Ok(ResponseBody::Pairs(pairs)) => pairs,
        other => panic!("{request:?} answered {other:?}"),
    }
}

fn field<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    &pairs
        .iter()
        .find(|(name, _)| name == key)
        .unwrap_or_else(|| panic!("no {key} in {pairs:?}"))
        .1
}

/// Waits (bounded) until backup `id` is no longer running; its last query.
fn wait_finished(cluster: &Cluster, id: u64) -> Vec<(String, String)> {
    let deadline = Instant::now() + BACKUP_TIMEOUT;
    loop {
        let pairs = pairs_of(cluster, BackupRequest::Query { backup_id: id });
        if field(&pairs, "status") != "running" {
            return pairs;
        }
        assert!(
            Instant::now() < deadline,
            "backup {id} still running after {BACKUP_TIMEOUT:?}: {pairs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Backs the table up to `url` under load and checks the result from the
/// store itself: the top-level manifest, each partition's checkpoint
/// downloaded and verified, and every record acknowledged before the
/// backup began present with its value and TTL.
fn back_up_under_load(cluster: &Cluster, url: &str, store: &dyn BlockStore) {
    let runtime = common::runtime();
    cluster.create_table(TABLE, PARTITIONS, 3);
    cluster.wait_full(TABLE, 3);
    let client = runtime
        .block_on(Client::connect_meta(
            &cluster.meta_addresses(),
            ClientOptions::default(),
        ))
        .unwrap();
    let table = runtime.block_on(client.open_table(TABLE)).unwrap();
    let base = write_base(&runtime, &table);
    let (load, writers) = start_load(&runtime, &table);
    std::thread::sleep(Duration::from_millis(500));
    let acked_before: BTreeMap<String, String> = load.acked.lock().unwrap().clone();

    let started = pairs_of(
        cluster,
        BackupRequest::Start {
            table: TABLE.into(),
            url: url.into(),
        },
    );
    let id: u64 = field(&started, "backup_id").parse().unwrap();
    let finished = wait_finished(cluster, id);
    load.stop.store(true, Ordering::Relaxed);
    for writer in writers {
        runtime.block_on(writer).unwrap();
    }
    assert_eq!(field(&finished, "status"), "complete", "{finished:?}");
    assert!(
        load.errors.lock().unwrap().is_empty(),
        "the load saw errors: {:?}",
        load.errors.lock().unwrap()
    );
    let listed = pairs_of(
        cluster,
        BackupRequest::List {
            table: TABLE.into(),
        },
    );
    assert!(
        listed
            .iter()
            .any(|(key, value)| *key == id.to_string() && value.contains("status=complete")),
        "{listed:?}"
    );

    let restored = tempfile::tempdir().unwrap();
    let shard = ShardStorage::new(&StorageTuning {
        compaction_threads: 1,
        record_cache_bytes: 0,
        ..StorageTuning::default()
    })
    .unwrap();
    let mut found = 0;
    runtime.block_on(async {
        let manifest = read_backup_manifest(store, id).await.unwrap();
        assert_eq!(manifest.table, TABLE);
        assert_eq!(manifest.partition_count, PARTITIONS);
        assert!(manifest.finished_unix_ms >= manifest.started_unix_ms);
        let mut partitions = Vec::new();
        for entry in &manifest.partitions {
            // Only the accepted attempt is left under the partition.
            let keys = store
                .list(&format!("{id}/{TABLE}_1/{}", entry.partition_index))
                .await
                .unwrap();
            assert!(
                keys.iter().all(|key| key.key.starts_with(&entry.prefix)),
                "{keys:?}"
            );
            let partition_manifest = read_manifest(store, &entry.prefix).await.unwrap();
            assert_eq!(partition_manifest.files, entry.files);
            let target = restored.path().join(entry.partition_index.to_string());
            let restored = restore_partition(store, &entry.prefix, &target)
                .await
                .unwrap();
            assert_eq!(restored.decree, entry.decree);
            partitions.push(Partition::new(
                RocksEngine::open(&target, &shard).unwrap(),
                StorageLimits::default(),
            ));
        }
        let now_epoch_s = markab::key::now_epoch_s();
        let partition_of = |hash_key: &str| {
            let hash = markab::key::partition_hash(hash_key.as_bytes(), b"s");
            &partitions[markab::key::partition_index(hash, PARTITIONS as u32) as usize]
        };
        let get = |hash_key: &str| {
            let key = Key::new(hash_key.as_bytes(), b"s");
            partition_of(hash_key).execute(&Request::Get(key), now_epoch_s)
        };
        for (hash_key, (value, with_ttl)) in &base {
            assert_eq!(
                get(hash_key),
                Ok(ResponseBody::Value(value.clone().into_bytes())),
                "{hash_key}"
            );
            let key = Key::new(hash_key.as_bytes(), b"s");
            let ttl = partition_of(hash_key).execute(&Request::Ttl(key), now_epoch_s);
            match (with_ttl, ttl) {
                (true, Ok(ResponseBody::Ttl(seconds))) => assert!(
                    seconds > 0 && seconds as u32 <= TTL_SECONDS,
                    "{hash_key}: ttl {seconds}"
                ),
                (false, Ok(ResponseBody::Ttl(seconds))) => {
                    assert_eq!(seconds, -1, "{hash_key} has no TTL")
                }
                (_, other) => panic!("{hash_key}: ttl answered {other:?}"),
            }
            found += 1;
        }
        for (hash_key, value) in &acked_before {
            assert_eq!(
                get(hash_key),
                Ok(ResponseBody::Value(value.clone().into_bytes())),
                "{hash_key} was acknowledged before the backup began"
            );
            found += 1;
        }
    });
    assert_eq!(found, base.len() + acked_before.len());
    assert!(!acked_before.is_empty(), "the load wrote before the backup");

    // The table goes on serving after its backup.
    runtime.block_on(async {
        table.set(b"after", b"s", b"backup", 0).await.unwrap();
        assert_eq!(
            table.get(b"after", b"s").await.unwrap(),
            Some(b"backup".to_vec())
        );
    });
}

#[test]
fn a_table_backs_up_to_a_directory_under_load() {
    let _serial = serial();
    let cluster = cluster();
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}", root.path().display());
    let store = markab_blocks::open(&url, StoreOptions::default()).unwrap();
    back_up_under_load(&cluster, &url, store.as_ref());
}

#[test]
fn a_table_backs_up_to_s3_under_load() {
    let _serial = serial();
    let moto = Moto::start(&[]);
    moto.create_bucket(BUCKET);
    let url = format!(
        "s3://{BUCKET}/cluster-a?endpoint={}&region=us-east-1",
        moto.endpoint()
    );
    let cluster = cluster();
    let store = markab_blocks::S3Store::new(
        markab_blocks::S3Config {
            endpoint: Some(moto.endpoint()),
            region: "us-east-1".into(),
            bucket: BUCKET.into(),
            prefix: "cluster-a".into(),
            credentials: Some(markab_blocks::S3Credentials::new(ACCESS_KEY, SECRET_KEY)),
        },
        StoreOptions::default(),
    )
    .unwrap();
    back_up_under_load(&cluster, &url, &store);
}

// Bad input is a clear error and starts nothing: an unknown table, a
// malformed URL, a store that does not answer, a missing bucket; an
// unknown backup id.
#[test]
fn bad_backup_requests_are_clear_errors() {
    let _serial = serial();
    let moto = Moto::start(&[]);
    let cluster = cluster();
    cluster.create_table(TABLE, 2, 3);
    let root = tempfile::tempdir().unwrap();
    let cases = [
        (
            TABLE.to_owned(),
            "ftp://example.com/x".to_owned(),
            ErrorCode::InvalidArgument,
            "scheme",
        ),
        (
            TABLE.to_owned(),
            "s3://nobucket-here/p?endpoint=http://127.0.0.1:1".to_owned(),
            ErrorCode::InvalidArgument,
            "127.0.0.1:1",
        ),
        (
            TABLE.to_owned(),
            format!("s3://missing-bucket/p?endpoint={}", moto.endpoint()),
            ErrorCode::InvalidArgument,
            "missing-bucket",
        ),
        (
            "nope".to_owned(),
            format!("file://{}", root.path().display()),
            ErrorCode::UnknownTable,
            "nope",
        ),
    ];
    for (table, url, code, text) in cases {
        let started = Instant::now();
        let answer = cluster.meta_call(&Request::Backup(BackupRequest::Start {
            table: table.clone(),
            url: url.clone(),
        }));
        let error = answer.expect_err("an error");
        assert_eq!(error.code, code, "{table} {url}: {error}");
        assert!(error.message.contains(text), "{table} {url}: {error}");
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{url}: answered after {:?}",
            started.elapsed()
        );
    }
    let listed = pairs_of(
        &cluster,
        BackupRequest::List {
            table: String::new(),
        },
    );
    assert!(listed.is_empty(), "nothing started: {listed:?}");
    let error = cluster
        .meta_call(&Request::Backup(BackupRequest::Query { backup_id: 7 }))
        .expect_err("unknown id");
    assert_eq!(error.code, ErrorCode::NotFound);
}
