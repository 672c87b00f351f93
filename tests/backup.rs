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
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ClusterOptions};
use common::load::start_load;
use markab::backup::read_manifest;
use markab::backup::table::read_backup_manifest;
use markab::client::{Client, ClientOptions, Table};
use markab::wire::{BackupRequest, ErrorCode, Request, ResponseBody};
use markab_blocks::moto::Moto;
use markab_blocks::{BlockStore, StoreOptions};

const TABLE: &str = "backed";
/// The table a backup is restored as.
const RESTORED: &str = "restored";
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
        meta_lines: "replication = true\nmetrics_listen = \"127.0.0.1:0\"\n".into(),
        meta_env: credentials(),
        node_env: credentials(),
        // A rate limit that makes an upload take a moment, so that the
        // load runs during it.
        node_lines: "backup_upload_bytes_per_second = 8388608\nmetrics_listen = \"127.0.0.1:0\"\n"
            .into(),
        ..ClusterOptions::default()
    })
}

/// `length` characters that do not compress, from `seed` (xorshift).
fn noise(seed: u64, length: usize) -> String {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

/// Creates [`TABLE`] ([`PARTITIONS`] × 3 replicas), waits until every
/// partition has its replicas, and opens it through meta.
fn new_table(cluster: &Cluster, runtime: &tokio::runtime::Runtime) -> (Client, Table) {
    cluster.create_table(TABLE, PARTITIONS, 3);
    cluster.wait_full(TABLE, 3);
    let client = runtime
        .block_on(Client::connect_meta(
            &cluster.meta_addresses(),
            ClientOptions::default(),
        ))
        .unwrap();
    let table = runtime.block_on(client.open_table(TABLE)).unwrap();
    (client, table)
}

/// Writes the base records: `base-i` → `value-i-<noise>` (1 KiB that does
/// not compress), odd ones with a TTL.
fn write_base(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
) -> BTreeMap<String, (String, bool)> {
    let mut written = BTreeMap::new();
    runtime.block_on(async {
        for index in 0..RECORDS {
            let hash_key = format!("base-{index}");
            let value = format!("value-{index}-{}", noise(index as u64, 1_000));
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

/// Restores backup `id` of [`TABLE`] at `url` as `table` and waits
/// (bounded) until it serves.
fn restore(cluster: &Cluster, url: &str, id: u64, table: &str) {
    let started = pairs_of(
        cluster,
        BackupRequest::Restore {
            url: url.into(),
            backup_id: id,
            table: TABLE.into(),
            new_table: table.into(),
        },
    );
    assert_eq!(field(&started, "partitions"), PARTITIONS.to_string());
    restore_status_until(cluster, table, "serving", |status| {
        let now = field(status, "status");
        if now.starts_with("serving") {
            return true;
        }
        assert_eq!(now, "restoring", "{status:?}");
        false
    });
}

/// Polls `query_restore_status` of `table` (bounded) until `done` holds of
/// its answer, and returns that answer; `what` names the wait.
fn restore_status_until(
    cluster: &Cluster,
    table: &str,
    what: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + BACKUP_TIMEOUT;
    loop {
        let status = pairs_of(
            cluster,
            BackupRequest::QueryRestore {
                table: table.into(),
            },
        );
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "restore of {table}: not {what} after {BACKUP_TIMEOUT:?}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Backs the table up to `url` under load and checks the result from the
/// store itself: the top-level manifest, each partition's checkpoint
/// downloaded and verified, and every record acknowledged before the
/// backup began present with its value and TTL.
fn back_up_under_load(cluster: &Cluster, url: &str, store: &dyn BlockStore) {
    let runtime = common::runtime();
    let (client, table) = new_table(cluster, &runtime);
    let base = write_base(&runtime, &table);
    let (load, writers) = start_load(&runtime, &table, WRITERS, WRITES_MAX, "load");
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

    runtime.block_on(async {
        let manifest = read_backup_manifest(store, id).await.unwrap();
        assert_eq!(manifest.table, TABLE);
        assert_eq!(manifest.partition_count, PARTITIONS);
        assert_eq!(manifest.replica_count, 3);
        assert!(manifest.finished_unix_ms >= manifest.started_unix_ms);
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
            assert_eq!(partition_manifest.decree, entry.decree);
        }
    });

    // Meta's and the nodes' metrics count the backup: complete at meta,
    // one upload per partition over the nodes.
    let meta_metrics = cluster
        .meta
        .as_ref()
        .unwrap()
        .metrics_address
        .clone()
        .unwrap();
    common::wait_for_metrics(&meta_metrics, |text| {
        common::sample(text, "markab_meta_backups{status=\"complete\"}") >= 1.0
    });
    let uploads: f64 = cluster
        .nodes
        .iter()
        .flatten()
        .map(|node| {
            // A node that finished no job has no such line.
            let text = common::scrape(node.metrics_address.as_ref().unwrap());
            text.lines()
                .filter(|line| {
                    line.starts_with("markab_backup_jobs_total{kind=\"backup\",result=\"done\"}")
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum();
    assert!(
        uploads >= f64::from(PARTITIONS),
        "{uploads} partition uploads"
    );

    // Restored as a new table: it serves once every partition is in, every
    // record acknowledged before the backup began is there with its TTL,
    // and it reaches 3 replicas by learning.
    restore(cluster, url, id, RESTORED);
    cluster.wait_full(RESTORED, 3);
    let restored = runtime.block_on(client.open_table(RESTORED)).unwrap();
    runtime.block_on(async {
        for (hash_key, (value, with_ttl)) in &base {
            assert_eq!(
                restored.get(hash_key.as_bytes(), b"s").await.unwrap(),
                Some(value.clone().into_bytes()),
                "{hash_key}"
            );
            let ttl = restored.ttl(hash_key.as_bytes(), b"s").await.unwrap();
            match with_ttl {
                true => assert!(
                    ttl.is_some_and(|seconds| seconds > 0 && seconds as u32 <= TTL_SECONDS),
                    "{hash_key}: ttl {ttl:?}"
                ),
                false => assert_eq!(ttl, Some(-1), "{hash_key} has no TTL"),
            }
        }
        for (hash_key, value) in &acked_before {
            assert_eq!(
                restored.get(hash_key.as_bytes(), b"s").await.unwrap(),
                Some(value.clone().into_bytes()),
                "{hash_key} was acknowledged before the backup began"
            );
        }
        restored
            .set(b"new", b"s", b"after-restore", 0)
            .await
            .unwrap();
        assert_eq!(
            restored.get(b"new", b"s").await.unwrap(),
            Some(b"after-restore".to_vec())
        );
    });
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
// malformed URL, a store that does not answer, a missing bucket, rejected
// credentials; an unknown backup id.
#[test]
fn bad_backup_requests_are_clear_errors() {
    let _serial = serial();
    let moto = Moto::start(&[]);
    // Authentication on: the test's key is not one moto knows.
    let locked = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
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
        (
            TABLE.to_owned(),
            format!("s3://locked/p?endpoint={}", locked.endpoint()),
            ErrorCode::InvalidArgument,
            "InvalidAccessKeyId",
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

/// Backs [`TABLE`] up to `url` with no load and waits until it finishes;
/// its id and last query.
fn back_up(cluster: &Cluster, url: &str) -> (u64, Vec<(String, String)>) {
    let started = pairs_of(
        cluster,
        BackupRequest::Start {
            table: TABLE.into(),
            url: url.into(),
        },
    );
    let id: u64 = field(&started, "backup_id").parse().unwrap();
    (id, wait_finished(cluster, id))
}

/// Waits (bounded) until no node holds a replica directory of `app_id`.
fn wait_no_replicas_of(cluster: &Cluster, app_id: i32, nodes: usize) {
    let deadline = Instant::now() + BACKUP_TIMEOUT;
    loop {
        let left: Vec<String> = (0..nodes)
            .flat_map(|index| {
                std::fs::read_dir(cluster.node_data_dir(index).join("replicas"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(&format!("{app_id}.")))
                    .collect::<Vec<_>>()
            })
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas of app {app_id} still on the nodes: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// A byte flipped in a backed-up file fails the restore with an error
// naming the file, and leaves no table behind (nor its replicas on the
// nodes); bad restore requests are clear errors that change nothing.
#[test]
fn a_damaged_backup_restores_nothing() {
    let _serial = serial();
    let cluster = cluster();
    let runtime = common::runtime();
    let (_client, table) = new_table(&cluster, &runtime);
    write_base(&runtime, &table);
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}", root.path().display());
    let (id, finished) = back_up(&cluster, &url);
    assert_eq!(field(&finished, "status"), "complete", "{finished:?}");

    let restore_request = |backup_id: u64, table: &str, url: &str, new_table: &str| {
        Request::Backup(BackupRequest::Restore {
            url: url.into(),
            backup_id,
            table: table.into(),
            new_table: new_table.into(),
        })
    };
    let foreign = id + 1;
    std::fs::create_dir_all(root.path().join(foreign.to_string())).unwrap();
    std::fs::write(
        root.path().join(format!("{foreign}/backup_manifest.json")),
        br#"{"format_version": 99}"#,
    )
    .unwrap();
    let version_before = cluster.list_nodes();
    let cases = [
        (
            restore_request(id + 7, TABLE, &url, RESTORED),
            ErrorCode::NotFound,
            "no complete backup",
        ),
        (
            restore_request(id, "other", &url, RESTORED),
            ErrorCode::InvalidArgument,
            "is of table",
        ),
        (
            restore_request(id, TABLE, &url, TABLE),
            ErrorCode::TableExists,
            "already exists",
        ),
        (
            restore_request(id, TABLE, "file://relative/dir", RESTORED),
            ErrorCode::InvalidArgument,
            "file://",
        ),
        (
            restore_request(foreign, TABLE, &url, RESTORED),
            ErrorCode::InvalidArgument,
            "format version 99",
        ),
    ];
    for (request, code, text) in cases {
        let error = cluster.meta_call(&request).expect_err("an error");
        assert_eq!(error.code, code, "{request:?}: {error}");
        assert!(error.message.contains(text), "{request:?}: {error}");
    }
    assert_eq!(version_before.len(), cluster.list_nodes().len());
    let tables = match cluster.meta_call(&Request::ListTables {
        include_dropped: true,
    }) {
        Ok(ResponseBody::Tables(tables)) => tables,
        other => panic!("{other:?}"),
    };
    assert_eq!(tables.len(), 1, "nothing was created: {tables:?}");

    // Flip one byte in the middle of the largest file of the backup.
    let manifest = runtime
        .block_on(read_backup_manifest(
            markab_blocks::open(&url, StoreOptions::default())
                .unwrap()
                .as_ref(),
            id,
        ))
        .unwrap();
    let damaged = manifest
        .partitions
        .iter()
        .flat_map(|partition| &partition.files)
        .max_by_key(|file| file.size_bytes)
        .unwrap()
        .clone();
    let path = root.path().join(&damaged.key);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let started = pairs_of(
        &cluster,
        BackupRequest::Restore {
            url: url.clone(),
            backup_id: id,
            table: TABLE.into(),
            new_table: RESTORED.into(),
        },
    );
    let app_id: i32 = field(&started, "app_id").parse().unwrap();
    let status = restore_status_until(&cluster, RESTORED, "failed", |status| {
        field(status, "status").starts_with("failed")
    });
    let reason = field(&status, "status");
    assert!(reason.contains(&damaged.key), "{reason}");
    assert!(reason.contains("the table was removed"), "{reason}");
    let error = cluster
        .meta_call(&Request::QueryRoute {
            table: RESTORED.into(),
        })
        .expect_err("no table");
    assert_eq!(error.code, ErrorCode::UnknownTable);
    wait_no_replicas_of(&cluster, app_id, 3);
}

// A node killed in the middle of a backup: its partitions' primaries move
// and the new primaries finish the backup, which restores whole.
#[test]
fn a_backup_survives_a_killed_node() {
    let _serial = serial();
    let mut cluster = Cluster::start(ClusterOptions {
        meta_lines: "replication = true\n".into(),
        // Slow uploads: the kill lands while they run.
        node_lines: "backup_upload_bytes_per_second = 262144\n".into(),
        ..ClusterOptions::default()
    });
    let runtime = common::runtime();
    let (client, table) = new_table(&cluster, &runtime);
    let partitions = cluster.describe(TABLE);
    let base = write_base(&runtime, &table);
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}", root.path().display());
    let started = pairs_of(
        &cluster,
        BackupRequest::Start {
            table: TABLE.into(),
            url: url.clone(),
        },
    );
    let id: u64 = field(&started, "backup_id").parse().unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let running = pairs_of(&cluster, BackupRequest::Query { backup_id: id });
    assert_eq!(field(&running, "status"), "running", "{running:?}");
    let victim = cluster.node_index(&partitions[0].primary);
    cluster.kill_node(victim);
    let finished = wait_finished(&cluster, id);
    assert_eq!(field(&finished, "status"), "complete", "{finished:?}");
    cluster.start_node(victim);

    restore(&cluster, &url, id, RESTORED);
    let restored = runtime.block_on(client.open_table(RESTORED)).unwrap();
    runtime.block_on(async {
        for (hash_key, (value, _)) in &base {
            assert_eq!(
                restored.get(hash_key.as_bytes(), b"s").await.unwrap(),
                Some(value.clone().into_bytes()),
                "{hash_key}"
            );
        }
    });
}

// The object store stopped in the middle of a backup: the uploads retry,
// then give up; the backup fails within a bound and is never listed
// complete.
#[test]
fn a_stopped_store_fails_the_backup_cleanly() {
    let _serial = serial();
    let mut moto = Moto::start(&[]);
    moto.create_bucket(BUCKET);
    let url = format!(
        "s3://{BUCKET}/cluster-a?endpoint={}&region=us-east-1",
        moto.endpoint()
    );
    let cluster = Cluster::start(ClusterOptions {
        meta_lines: "replication = true\n".into(),
        meta_env: credentials(),
        node_env: credentials(),
        node_lines: "backup_upload_bytes_per_second = 262144\n".into(),
        ..ClusterOptions::default()
    });
    let runtime = common::runtime();
    let (_client, table) = new_table(&cluster, &runtime);
    write_base(&runtime, &table);
    let started = pairs_of(
        &cluster,
        BackupRequest::Start {
            table: TABLE.into(),
            url: url.clone(),
        },
    );
    let id: u64 = field(&started, "backup_id").parse().unwrap();
    std::thread::sleep(Duration::from_millis(1_000));
    let running = pairs_of(&cluster, BackupRequest::Query { backup_id: id });
    assert_eq!(field(&running, "status"), "running", "{running:?}");
    moto.kill();
    let finished = wait_finished(&cluster, id);
    assert_eq!(field(&finished, "status"), "failed", "{finished:?}");
    let reason = field(&finished, "reason");
    assert!(reason.contains("partition"), "{reason}");
    let listed = pairs_of(
        &cluster,
        BackupRequest::List {
            table: TABLE.into(),
        },
    );
    assert!(
        listed.iter().all(|(_, value)| !value.contains("complete")),
        "{listed:?}"
    );
}

/// The ids of the backups meta lists for policy `name`, with their status.
fn policy_backups(cluster: &Cluster, name: &str) -> Vec<(u64, String)> {
    pairs_of(cluster, BackupRequest::QueryPolicy { name: name.into() })
        .into_iter()
        .filter_map(|(key, value)| {
            let id = key.strip_prefix("backup ")?.parse().ok()?;
            let status = value.split("status=").nth(1)?.split(' ').next()?.to_owned();
            Some((id, status))
        })
        .collect()
}

/// The backups with a top-level manifest in the directory store at `root`.
fn manifests_in(root: &std::path::Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().join("backup_manifest.json").exists())
        .filter_map(|entry| entry.file_name().to_string_lossy().parse().ok())
        .collect();
    ids.sort();
    ids
}

// A policy with a short interval and a count of 2 backs its table up on
// schedule, deletes the older backups (files and records), and goes on
// after a meta restart.
#[test]
fn a_policy_backs_up_on_schedule_and_keeps_two() {
    let _serial = serial();
    let mut cluster = cluster();
    let runtime = common::runtime();
    cluster.create_table(TABLE, 4, 3);
    cluster.wait_full(TABLE, 3);
    let client = runtime
        .block_on(Client::connect_meta(
            &cluster.meta_addresses(),
            ClientOptions::default(),
        ))
        .unwrap();
    let table = runtime.block_on(client.open_table(TABLE)).unwrap();
    runtime.block_on(async {
        for index in 0..200 {
            let key = format!("k{index}");
            table.set(key.as_bytes(), b"s", b"v", 0).await.unwrap();
        }
    });
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}", root.path().display());
    pairs_of(
        &cluster,
        BackupRequest::AddPolicy(markab::wire::BackupPolicySpec {
            name: "often".into(),
            tables: vec![TABLE.into()],
            url: url.clone(),
            interval_seconds: 3,
            start_time: "00:00".into(),
            keep: 2,
        }),
    );

    // At least three runs complete; only the last two are kept.
    let deadline = Instant::now() + BACKUP_TIMEOUT;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let listed = policy_backups(&cluster, "often");
        seen.extend(listed.iter().map(|(id, _)| *id));
        let complete: Vec<u64> = listed
            .iter()
            .filter(|(_, status)| status == "complete")
            .map(|(id, _)| *id)
            .collect();
        assert!(
            complete.len() <= 2 || listed.iter().any(|(_, s)| s == "deleting"),
            "{listed:?}"
        );
        let manifests = manifests_in(root.path());
        if seen.len() >= 4 && complete.len() == 2 && manifests == complete {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the policy did not keep two: {listed:?}, manifests {manifests:?}, seen {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let oldest = *seen.iter().next().unwrap();
    assert!(
        !root.path().join(oldest.to_string()).exists(),
        "the oldest backup's files are gone"
    );

    // Meta restarts: the policy is still there and runs again.
    cluster.restart_meta();
    let listed = pairs_of(&cluster, BackupRequest::ListPolicies);
    assert_eq!(listed[0].0, "often", "{listed:?}");
    let newest = *seen.iter().last().unwrap();
    let deadline = Instant::now() + BACKUP_TIMEOUT;
    loop {
        let listed = policy_backups(&cluster, "often");
        if listed
            .iter()
            .any(|(id, status)| *id > newest && status == "complete")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no run after the restart: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    pairs_of(
        &cluster,
        BackupRequest::DisablePolicy {
            name: "often".into(),
        },
    );
}

// A restore cancelled while one node is stopped (SIGSTOP): the table goes
// at once, and once the node is back no replica of it is left on any node
// — neither the partitions the other nodes installed and host, nor what the
// stopped node was ordered.
#[test]
fn a_cancelled_restore_leaves_nothing_behind() {
    let _serial = serial();
    let cluster = cluster();
    let runtime = common::runtime();
    let (_client, table) = new_table(&cluster, &runtime);
    write_base(&runtime, &table);
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}", root.path().display());
    let (id, finished) = back_up(&cluster, &url);
    assert_eq!(field(&finished, "status"), "complete", "{finished:?}");

    let stopped = cluster.node_pid(0);
    common::signal(stopped, libc::SIGSTOP);
    let started = pairs_of(
        &cluster,
        BackupRequest::Restore {
            url: url.clone(),
            backup_id: id,
            table: TABLE.into(),
            new_table: RESTORED.into(),
        },
    );
    let app_id: i32 = field(&started, "app_id").parse().unwrap();
    // The other nodes install their partitions; node 0's wait.
    restore_status_until(&cluster, RESTORED, "partly restored", |status| {
        status
            .iter()
            .any(|(_, value)| value.starts_with("restored"))
    });
    let cancelled = pairs_of(
        &cluster,
        BackupRequest::CancelRestore {
            table: RESTORED.into(),
        },
    );
    assert!(
        field(&cancelled, "status").starts_with("cancelled"),
        "{cancelled:?}"
    );
    common::signal(stopped, libc::SIGCONT);
    let error = cluster
        .meta_call(&Request::QueryRoute {
            table: RESTORED.into(),
        })
        .expect_err("no table");
    assert_eq!(error.code, ErrorCode::UnknownTable);
    wait_no_replicas_of(&cluster, app_id, 3);
    // The table backed up is untouched.
    assert_eq!(
        runtime
            .block_on(table.get(b"base-0", b"s"))
            .unwrap()
            .map(|value| value.starts_with(b"value-0-")),
        Some(true)
    );
}
