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

// Proves a node whose inherited soft limit is far below what 64 replicas on
// one shard need raises it to the hard limit and serves every partition.
#[test]
fn a_node_raises_its_open_files_limit() {
    let (_, hard) = open_files_limits(std::process::id());
    if hard != "unlimited" && hard.parse::<u64>().unwrap() < 4096 {
        // Nothing to raise to; the node warns at start instead.
        eprintln!("skipped: the hard open-files limit is {hard}");
        return;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = SOFT_LIMIT;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }

    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 1, &[("wide", 1, 64)]);
    let node = common::Node::start(&config);
    let (soft, node_hard) = open_files_limits(node.child.id());
    assert_eq!(
        soft, node_hard,
        "the node raised its soft limit to the hard one"
    );

    let address = node.address();
    runtime().block_on(async move {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("wide").await.unwrap();
        assert_eq!(table.partition_count(), 64);
        for index in 0..640u32 {
            let hash_key = format!("h{index}");
            table
                .set(hash_key.as_bytes(), b"s", &index.to_le_bytes(), 0)
                .await
                .unwrap_or_else(|error| panic!("set {hash_key}: {error}"));
        }
        for index in 0..640u32 {
            let hash_key = format!("h{index}");
            let value = table.get(hash_key.as_bytes(), b"s").await.unwrap();
            assert_eq!(value, Some(index.to_le_bytes().to_vec()), "{hash_key}");
        }
    });
    assert!(node.terminate().success());
}
