//! Damaged disks with real processes, as `markab chaos` found them:
//! - in a cluster, a replica whose RocksDB files or log records are found
//!   damaged at restart is set aside (moved to `<data_dir>/damaged`), the
//!   node starts without it, and meta replaces it with a fresh copy
//!   (**damaged-replica-set-aside**); before, one damaged replica kept the
//!   whole node down, or stopped for good and held its partition below its
//!   replica count;
//! - a node that cannot open its partitions exits non-zero without a ready
//!   line (it printed "ready" and then exited 0);
//! - a node whose mutation log fails on a full disk stops, non-zero, naming
//!   the cause (fail-stop), instead of running on with every replica of the
//!   shard stopped.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::{wait_for, Cluster, ClusterOptions};
use markab::client::{Client, ClientOptions, Table};
use markab::host::record::mutation_of_record;
use markab_shards::log::{recover, RecordLocation};

const TABLE: &str = "damaged";
const KEYS: usize = 200;

async fn open(cluster: &Cluster) -> Table {
    let client = Client::connect_meta(&cluster.meta_addresses(), ClientOptions::default())
        .await
        .unwrap();
    client.open_table(TABLE).await.unwrap()
}

/// A 3-node cluster (2 shards each) with a 4-partition, 3-replica table
/// holding KEYS keys.
fn loaded_cluster() -> Cluster {
    let cluster = Cluster::start(ClusterOptions::default());
    cluster.create_table(TABLE, 4, 3);
    cluster.wait_full(TABLE, 3);
    common::runtime().block_on(async {
        let table = open(&cluster).await;
        for i in 0..KEYS {
            let key = format!("key{i}");
            table
                .set(key.as_bytes(), b"s", key.as_bytes(), 0)
                .await
                .unwrap();
        }
    });
    cluster
}

/// Every key reads back its value.
fn assert_all_served(cluster: &Cluster) {
    common::runtime().block_on(async {
        let table = open(cluster).await;
        for i in 0..KEYS {
            let key = format!("key{i}");
            let value = table.get(key.as_bytes(), b"s").await.unwrap();
            assert_eq!(value.as_deref(), Some(key.as_bytes()), "{key}");
        }
    });
}

/// The replica directories of `data_dir`, sorted.
fn replica_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("replicas"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

fn damaged_entries(data_dir: &Path) -> Vec<String> {
    match std::fs::read_dir(data_dir.join("damaged")) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The RocksDB MANIFEST of the replica in `replica_dir`.
fn manifest_of(replica_dir: &Path) -> PathBuf {
    std::fs::read_dir(replica_dir.join("rdb"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST-")
        })
        .expect("a MANIFEST")
}

/// Inverts 32 bytes in the middle of `path`.
fn invert_middle(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    let end = (middle + 32).min(bytes.len());
    for byte in &mut bytes[middle..end] {
        *byte = !*byte;
    }
    std::fs::write(path, bytes).unwrap();
}

// A replica whose RocksDB MANIFEST is corrupted is set aside at restart; the
// node serves its other replicas and meta gives it a fresh copy back.
#[test]
fn a_replica_with_corrupted_rocksdb_files_is_set_aside_and_replaced() {
    let mut cluster = loaded_cluster();
    cluster.kill_node(1);
    let data_dir = cluster.node_data_dir(1);
    let victim = replica_dirs(&data_dir)[0].clone();
    invert_middle(&manifest_of(&victim));

    cluster.start_node(1);
    let log = cluster.node_log(1);
    assert!(log.contains("RocksDB files are corrupted"), "{log}");
    assert!(log.contains("the node starts without it"), "{log}");
    let victim_name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let damaged = damaged_entries(&data_dir);
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert!(
        damaged[0].starts_with(&format!("{victim_name}-")),
        "{damaged:?}"
    );
    // Three nodes, three replicas: the copy comes back to node 1 (meta
    // adds it as a learner, which is promoted once it caught up).
    wait_for("a fresh copy of the set-aside replica", || {
        victim.join("replica.toml").exists().then_some(())
    });
    cluster.wait_full(TABLE, 3);
    assert_all_served(&cluster);
}

/// Every record of a shard's log: its location and partition.
fn records(log_dir: &Path) -> Vec<(RecordLocation, i32)> {
    let mut found = Vec::new();
    let mut visit =
        |header: &markab_shards::log::RecordHeader, payload: &[u8], location: RecordLocation| {
            mutation_of_record(header.ballot, header.decree, payload).expect("a log record");
            found.push((location, header.partition_index));
        };
    recover(log_dir, &mut visit).unwrap();
    found
}

// A replica with a corrupted record in the middle of its shard's log is set
// aside at restart in a cluster (a standalone node stops it instead; see
// tests/log_damage.rs); meta gives it a fresh copy back.
#[test]
fn a_replica_whose_log_is_corrupted_is_set_aside_and_replaced() {
    let mut cluster = loaded_cluster();
    cluster.kill_node(2);
    let data_dir = cluster.node_data_dir(2);
    let log_dir = data_dir.join("log/shard-0");
    let all = records(&log_dir);
    assert!(all.len() > 10, "records in {}", log_dir.display());
    let (victim, partition) = all[all.len() / 2];
    let segment = log_dir.join(format!("{:020}.log", victim.segment_index));
    let mut bytes = std::fs::read(&segment).unwrap();
    // Flip a payload byte: length and id stay plausible, the crc fails.
    bytes[victim.offset as usize + 8 + 24 + 2] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    cluster.start_node(2);
    let log = cluster.node_log(2);
    assert!(log.contains("the mutation log is corrupted"), "{log}");
    assert!(log.contains("the node goes on without it"), "{log}");
    let damaged = damaged_entries(&data_dir);
    assert!(
        damaged
            .iter()
            .any(|name| name.starts_with(&format!("1.{partition}-"))),
        "partition {partition} set aside: {damaged:?}"
    );
    let fresh = data_dir.join(format!("replicas/1.{partition}/replica.toml"));
    wait_for("a fresh copy of the set-aside replica", || {
        fresh.exists().then_some(())
    });
    cluster.wait_full(TABLE, 3);
    assert_all_served(&cluster);
}

// A standalone node whose replica cannot be opened (its RocksDB MANIFEST is
// corrupted, and a standalone node holds the only copy) exits non-zero and
// prints no ready line.
#[test]
fn a_node_that_cannot_open_its_partitions_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 1, &[("temp", 1, 2)]);
    let node = common::Node::start(&config);
    assert!(node.terminate().success());
    let replica = replica_dirs(&dir.path().join("data"))[0].clone();
    invert_middle(&manifest_of(&replica));
    let log = dir.path().join("node.log");
    let (mut child, lines) = common::spawn_markab_with("replica", &config, &[], Some(&log));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the node did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status}");
    let stdout: Vec<String> = lines.try_iter().collect();
    assert!(
        !stdout.iter().any(|line| line.contains("ready")),
        "{stdout:?}"
    );
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("cannot open its partitions"), "{stderr}");
    assert!(stderr.contains("RocksDB files are corrupted"), "{stderr}");
}

/// A tmpfs of `bytes` mounted at `path`, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, bytes: u64) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root, as the fault tests do (scripts/test.sh runs as root)"
        );
        SmallDisk(path.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

// A node whose mutation log cannot write (its disk is full) stops with a
// non-zero status naming the failed log.
#[test]
fn a_node_whose_log_fails_on_a_full_disk_stops_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let _disk = SmallDisk::mount(&dir.path().join("data"), 24 * 1024 * 1024);
    let config = common::write_config(dir.path(), 1, &[("temp", 1, 2)]);
    let log = dir.path().join("node.log");
    let mut node = common::Node::start_logged(&config, Some(&log));
    let address = node.address();
    let value = vec![b'v'; 64 * 1024];
    let written = common::runtime().block_on(async move {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("temp").await.unwrap();
        // 24 MiB fill within 400 writes of 64 KiB; bounded either way.
        let mut written = 0;
        for i in 0..1_000 {
            if table
                .set(format!("key{i}").as_bytes(), b"s", &value, 0)
                .await
                .is_err()
            {
                break;
            }
            written += 1;
        }
        written
    });
    assert!(written < 1_000, "the disk never filled");
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.is_running() {
        assert!(Instant::now() < deadline, "the node did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = node.child.wait().unwrap();
    assert!(!status.success(), "{status}");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("mutation log failed"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
}
