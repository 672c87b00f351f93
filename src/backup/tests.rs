use std::time::Duration;

use markab_blocks::moto::Moto;
use markab_blocks::{LocalStore, S3Config, S3Credentials, S3Store, StoreOptions};

use super::*;
use crate::storage::{RocksEngine, ShardStorage, StorageEngine, StorageTuning, WriteBatch};

/// Bound on one test's body.
const TEST_BOUND: Duration = Duration::from_secs(120);

fn shard() -> ShardStorage {
    ShardStorage::new(&StorageTuning {
        compaction_threads: 1,
        record_cache_bytes: 0,
        ..StorageTuning::default()
    })
    .unwrap()
}

/// Writes `count` records of 1 KiB, one per decree, from `first`.
fn write_records(engine: &RocksEngine, first: i64, count: i64) {
    for decree in first..first + count {
        let mut batch = WriteBatch::new();
        batch.put(
            format!("key{decree:06}").into_bytes(),
            vec![decree as u8; 1024],
        );
        batch.set_decree(decree);
        engine.write(&batch).unwrap();
    }
}

/// Backs up a replica holding 2,000 records (half flushed, half in its
/// memtable), writing more while the backup runs; restores it into a new
/// directory and opens it: exactly the records up to the backup's decree,
/// with their values.
async fn round_trip(store: &dyn BlockStore) {
    let dir = tempfile::tempdir().unwrap();
    let shard = shard();
    let engine = RocksEngine::open(&dir.path().join("replica"), &shard).unwrap();
    write_records(&engine, 1, 1_000);
    engine.flush().unwrap();
    write_records(&engine, 1_001, 1_000);
    let progress = BackupProgress::default();
    let scratch = dir.path().join("scratch");
    let backup = back_up_partition(
        engine.checkpointer(),
        store,
        "b1/usertable_3/5",
        &scratch,
        3,
        5,
        &progress,
    );
    let writes = async {
        write_records(&engine, 2_001, 200);
    };
    let (manifest, ()) = tokio::join!(backup, writes);
    let manifest = manifest.unwrap();
    assert_eq!((manifest.app_id, manifest.partition_index), (3, 5));
    assert!(manifest.decree >= 2_000, "decree {}", manifest.decree);
    assert!(manifest
        .files
        .iter()
        .any(|file| file.key.ends_with("CURRENT")));
    assert!(manifest.bytes() > 0);
    assert_eq!(
        progress.bytes_done.load(Ordering::Relaxed),
        manifest.bytes()
    );
    assert_eq!(
        progress.bytes_total.load(Ordering::Relaxed),
        manifest.bytes()
    );
    assert_eq!(progress.decree.load(Ordering::Relaxed), manifest.decree);
    let scratch_left = std::fs::read_dir(dir.path().join("scratch"))
        .unwrap()
        .count();
    assert_eq!(scratch_left, 0, "the checkpoint is removed once uploaded");

    let target = dir.path().join("restored");
    let restored = restore_partition(
        store,
        "b1/usertable_3/5",
        &target,
        &BackupProgress::default(),
    )
    .await
    .unwrap();
    assert_eq!(restored, manifest);
    let copy = RocksEngine::open(&target, &shard).unwrap();
    assert_eq!(copy.applied_decree().unwrap(), manifest.decree);
    for decree in 1..=2_200i64 {
        let value = copy.get(format!("key{decree:06}").as_bytes()).unwrap();
        match decree <= manifest.decree {
            true => assert_eq!(value, Some(vec![decree as u8; 1024]), "key{decree}"),
            false => assert_eq!(value, None, "key{decree} is above the decree"),
        }
    }
}

#[tokio::test]
async fn a_partition_round_trips_through_a_directory() {
    let root = tempfile::tempdir().unwrap();
    let store = LocalStore::new(root.path(), StoreOptions::default()).unwrap();
    tokio::time::timeout(TEST_BOUND, round_trip(&store))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_partition_round_trips_through_s3() {
    let moto = Moto::start(&[]);
    moto.create_bucket("backups");
    let store = S3Store::new(
        S3Config {
            endpoint: Some(moto.endpoint()),
            region: "us-east-1".to_owned(),
            bucket: "backups".to_owned(),
            prefix: "cluster".to_owned(),
            credentials: Some(S3Credentials::new("markab", "markab-secret")),
        },
        StoreOptions::default(),
    )
    .unwrap();
    tokio::time::timeout(TEST_BOUND, round_trip(&store))
        .await
        .unwrap();
}

/// A backed-up replica of a few records in a directory store: the store's
/// root, the store and the partition's prefix.
async fn backed_up() -> (tempfile::TempDir, LocalStore, &'static str) {
    let root = tempfile::tempdir().unwrap();
    let store = LocalStore::new(root.path().join("store"), StoreOptions::default()).unwrap();
    let engine = RocksEngine::open(&root.path().join("replica"), &shard()).unwrap();
    write_records(&engine, 1, 100);
    let prefix = "b2/t_1/0";
    back_up_partition(
        engine.checkpointer(),
        &store,
        prefix,
        &root.path().join("scratch"),
        1,
        0,
        &BackupProgress::default(),
    )
    .await
    .unwrap();
    (root, store, prefix)
}

// A flipped byte in one backed-up file fails the restore with an error
// naming the file, and leaves nothing at the target or beside it.
#[tokio::test]
async fn a_flipped_byte_fails_the_restore_naming_the_file() {
    let (root, store, prefix) = backed_up().await;
    let manifest = read_manifest(&store, prefix).await.unwrap();
    let victim = manifest
        .files
        .iter()
        .max_by_key(|file| file.size_bytes)
        .unwrap();
    let path = root.path().join("store").join(&victim.key);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let restores = root.path().join("restores");
    let error = restore_partition(
        &store,
        prefix,
        &restores.join("p0"),
        &BackupProgress::default(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains(&victim.key), "{error}");
    assert!(matches!(
        error,
        BackupError::Store(BlockError::Checksum { .. })
    ));
    assert_eq!(std::fs::read_dir(&restores).unwrap().count(), 0);
}

// Without its manifest (a backup interrupted before its end) a prefix
// holds no backup; a manifest of another format version, or naming files
// outside its prefix, is refused with a clear error; and a restore never
// writes over an existing directory.
#[tokio::test]
async fn incomplete_foreign_or_misplaced_backups_are_refused() {
    let (root, store, prefix) = backed_up().await;
    let manifest_key = format!("{prefix}/{MANIFEST_NAME}");
    let original = store.get_bytes(&manifest_key).await.unwrap();
    let target = root.path().join("restored");

    std::fs::create_dir(&target).unwrap();
    let error = restore_partition(&store, prefix, &target, &BackupProgress::default())
        .await
        .unwrap_err();
    assert!(matches!(error, BackupError::TargetExists { .. }), "{error}");
    std::fs::remove_dir(&target).unwrap();

    let mut manifest: serde_json::Value = serde_json::from_slice(&original).unwrap();
    manifest["format_version"] = 2.into();
    store
        .put_bytes(&manifest_key, serde_json::to_vec(&manifest).unwrap())
        .await
        .unwrap();
    let error = restore_partition(&store, prefix, &target, &BackupProgress::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("format version 2"), "{error}");

    let mut manifest: serde_json::Value = serde_json::from_slice(&original).unwrap();
    manifest["files"][0]["key"] = "elsewhere/CURRENT".into();
    store
        .put_bytes(&manifest_key, serde_json::to_vec(&manifest).unwrap())
        .await
        .unwrap();
    let error = restore_partition(&store, prefix, &target, &BackupProgress::default())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("not under the prefix"),
        "{error}"
    );

    store.delete(&manifest_key).await.unwrap();
    let error = restore_partition(&store, prefix, &target, &BackupProgress::default())
        .await
        .unwrap_err();
    assert!(matches!(error, BackupError::Incomplete { .. }), "{error}");
    assert!(!target.exists());
}
