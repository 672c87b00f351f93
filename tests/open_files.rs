//! A node started under a low open-files limit (1024 is the usual default
//! soft limit of a login shell or a systemd service) raises it to the hard
//! limit itself: each replica's RocksDB instance holds a dozen or more
//! descriptors, so one shard of 64 replicas would otherwise run out, and
//! its replicas would stop with "Too many open files". Its own test binary:
//! the test lowers its own process's limit, which its children inherit.

mod common;

use common::runtime;
use markab::client::{Client, ClientOptions};

/// The soft limit the node is started under.
const SOFT_LIMIT: u64 = 256;

/// `(soft, hard)` "Max open files" of process `pid`, from /proc.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

/// The soft limit of this test process (inherited by the nodes it starts)
/// becomes [`SOFT_LIMIT`], its hard limit at least `HARD_LIMIT_MIN` — room
/// for 128 replicas (scripts/test.sh runs as root, who may raise it).
fn lower_soft_limit() {
    const HARD_LIMIT_MIN: u64 = 4_096;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = SOFT_LIMIT;
        limit.rlim_max = limit.rlim_max.max(HARD_LIMIT_MIN);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit),
            0,
            "cannot set the open-files limits to {SOFT_LIMIT} (soft) and {} (hard): run as root",
            limit.rlim_max
        );
    }
}

/// A standalone node of `shards` shards serving 64 partitions per shard,
/// started under [`SOFT_LIMIT`]: it raised its soft limit to the hard one
/// and serves a write and a read in every partition.
fn node_serves_every_partition(shards: usize) {
    let partitions = 64 * shards as u32;
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), shards, &[("wide", 1, partitions)]);
    let node = common::Node::start(&config);
    let (soft, hard) = open_files_limits(node.child.id());
    assert_eq!(soft, hard, "the node raised its soft limit to the hard one");

    let address = node.address();
    runtime().block_on(async move {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("wide").await.unwrap();
        assert_eq!(table.partition_count(), partitions);
        let keys = 10 * partitions;
        for index in 0..keys {
            let hash_key = format!("h{index}");
            table
                .set(hash_key.as_bytes(), b"s", &index.to_le_bytes(), 0)
                .await
                .unwrap_or_else(|error| panic!("set {hash_key}: {error}"));
        }
        for index in 0..keys {
            let hash_key = format!("h{index}");
            let value = table.get(hash_key.as_bytes(), b"s").await.unwrap();
            assert_eq!(value, Some(index.to_le_bytes().to_vec()), "{hash_key}");
        }
    });
    assert!(node.terminate().success());
}

// Proves a node whose inherited soft limit is far below what 64 replicas
// on a shard need raises it to the hard limit and serves every partition,
// with one shard and with two.
#[test]
fn a_node_raises_its_open_files_limit() {
    lower_soft_limit();
    node_serves_every_partition(1);
    node_serves_every_partition(2);
}
