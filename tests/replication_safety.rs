//! Replication safety with real processes: faults the unit tests and the
//! simulator cannot reach because they live in the node, meta, their clocks
//! and sockets (docs/replication.md, "Safety findings"). Every cluster here
//! runs nodes of two shards each.
//!
//! Every wait is bounded; loads are bounded in time and requests; only the
//! processes the test started are signalled or killed, by pid.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{wait_for, Cluster, ClusterOptions, RawConnection};
use markab::client::{Client, ClientError, ClientOptions, Table};
use markab::wire::{ErrorCode, Gpid, Key, PartitionConfig, Request, ResponseBody};

/// One cluster at a time: a two-core machine runs one well, not two.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Meta's grace (its default): a node silent this long is dead.
const GRACE: Duration = Duration::from_millis(800);

fn connect(runtime: &tokio::runtime::Runtime, cluster: &Cluster) -> Client {
    let options = ClientOptions {
        operation_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    runtime
        .block_on(Client::connect_meta(&cluster.meta_addresses(), options))
        .expect("connect to meta")
}

fn open(runtime: &tokio::runtime::Runtime, client: &Client, table: &str) -> Table {
    wait_for(&format!("open {table}"), || {
        runtime.block_on(client.open_table(table)).ok()
    })
}

/// Sets `key` to `value`, retrying refusals (the write was not executed)
/// until it is acknowledged; bounded.
fn set_acknowledged(runtime: &tokio::runtime::Runtime, table: &Table, key: &[u8], value: &[u8]) {
    wait_for(&format!("set {key:?}"), || {
        runtime.block_on(table.set(key, b"s", value, 0)).ok()
    });
}

fn ballots(partitions: &[PartitionConfig]) -> Vec<i64> {
    partitions
        .iter()
        .map(|partition| partition.ballot)
        .collect()
}

/// Node logs must show no replica opened twice (its RocksDB lock held by
/// the node itself) and no assignment it could not host.
fn assert_no_hosting_errors(cluster: &Cluster) {
    for index in 0..cluster.node_ids.len() {
        let log = cluster.node_log(index);
        for needle in ["lock hold", "cannot host an assigned replica"] {
            let line = log.lines().find(|line| line.contains(needle));
            assert!(line.is_none(), "node {index} logged {line:?}");
        }
    }
}

// A primary replaced while its node was paused past the grace never serves
// a read again (**lease-per-ballot**, **replica-told-it-left**). Four nodes
// of two shards, one partition of three replicas: the primary's node is
// paused 2.5 s; meta makes another replica primary and adds the fourth
// node; a write through a fresh client sets v2. A client pinned to the old
// primary's address — it never refreshes its route — then reads for 3 s
// from the moment the node resumes: no read may return v1. (Before, the
// resumed node's first beacon renewed a node-wide lease that kept the old
// replica serving; on four nodes nothing ever told it otherwise.)
#[test]
fn a_replaced_primary_serves_no_stale_read() {
    let _serial = serial();
    let runtime = common::runtime();
    let cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        ..ClusterOptions::default()
    });
    cluster.create_table("stale", 1, 3);
    let before = cluster.wait_full("stale", 3);
    let client = connect(&runtime, &cluster);
    let table = open(&runtime, &client, "stale");
    set_acknowledged(&runtime, &table, b"k", b"v1");
    let gpid = Gpid {
        app_id: table.app_id(),
        partition_index: 0,
    };
    let old_primary = cluster.node_index(&before[0].primary);
    let old_address = table.route().partitions[0].address.clone();
    let mut pinned = RawConnection::connect(&old_address).unwrap();
    let get = Request::Get(Key::new(b"k".to_vec(), b"s".to_vec()));
    assert_eq!(
        pinned.call(gpid, &get).unwrap(),
        Ok(ResponseBody::Value(b"v1".to_vec())),
        "the pinned client reads from the primary"
    );

    // Let the primary push its commit point (an empty write 20 ms after
    // the last one): a Prepare still to send when the node resumes would
    // meet the new ballot at once and demote it, which hid the bug from the
    // first attempt to reproduce it. Paused while idle, nothing but meta
    // can tell it.
    std::thread::sleep(Duration::from_millis(300));
    let paused_at = Instant::now();
    common::signal(cluster.node_pid(old_primary), libc::SIGSTOP);
    let after = wait_for("a new primary", || {
        let partitions = cluster.describe("stale");
        (partitions[0].primary != before[0].primary).then_some(partitions)
    });
    assert!(after[0].ballot > before[0].ballot);
    let fresh = connect(&runtime, &cluster);
    let fresh_table = open(&runtime, &fresh, "stale");
    set_acknowledged(&runtime, &fresh_table, b"k", b"v2");
    std::thread::sleep(Duration::from_millis(2_500).saturating_sub(paused_at.elapsed()));
    common::signal(cluster.node_pid(old_primary), libc::SIGCONT);

    let reading_until = Instant::now() + Duration::from_secs(3);
    let (mut served, mut refused) = (0usize, 0usize);
    while Instant::now() < reading_until {
        match pinned.call(gpid, &get) {
            Ok(Ok(ResponseBody::Value(value))) => {
                assert_ne!(
                    value,
                    b"v1".to_vec(),
                    "stale read from the replaced primary"
                );
                served += 1;
            }
            Ok(Err(error)) => {
                assert!(
                    matches!(
                        error.code,
                        ErrorCode::NotPrimary | ErrorCode::NotHosted | ErrorCode::StorageError
                    ),
                    "{error:?}"
                );
                refused += 1;
            }
            Ok(other) => panic!("get answered {other:?}"),
            Err(_) => {
                // The node closed the connection: reconnect, stay pinned.
                std::thread::sleep(Duration::from_millis(20));
                if let Ok(again) = RawConnection::connect(&old_address) {
                    pinned = again;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        refused > 0,
        "the pinned client read nothing ({served} served)"
    );
    let got = runtime.block_on(fresh_table.get(b"k", b"s")).unwrap();
    assert_eq!(got.as_deref(), Some(&b"v2"[..]));
}

/// The path of Debian's libfaketime (package `faketime`).
fn libfaketime() -> std::path::PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.exists());
    found.expect("libfaketime.so.1 is installed (scripts/setup.sh installs faketime)")
}

// Faults of meta itself reconfigure no healthy node, on nodes of two
// shards each (**durations-are-monotonic**, **meta-pause-not-silence**,
// **no-removal-when-frozen**, **replica-stays-on-its-shard**):
// - meta's wall clock steps forward 30 s, back 60 s, and forward again
//   (libfaketime; its monotonic clocks are left alone, as NTP leaves them):
//   no ballot changes, every node stays alive;
// - meta is paused (SIGSTOP) 2.5 s, three grace periods: no ballot changes;
// - meta is cut off from every node for 3 s (each node reaches meta
//   through a proxy the test cuts): meta freezes, no ballot changes;
// and afterwards writes succeed, every partition has three replicas and no
// node logged a replica it could not host. (Before: a clock step or a pause
// made meta remove every node; every partition dropped to one replica and,
// on nodes of two shards, learners were placed on shards other than the
// one holding the replica and could never be hosted.)
#[test]
fn faults_of_meta_reconfigure_no_healthy_node() {
    let _serial = serial();
    let runtime = common::runtime();
    let scratch = tempfile::tempdir().unwrap();
    let offset_file = scratch.path().join("faketime");
    std::fs::write(&offset_file, "+0s\n").unwrap();
    let env = |key: &str, value: String| (key.to_owned(), value);
    let cluster = Cluster::start(ClusterOptions {
        proxies: true,
        meta_env: vec![
            env("LD_PRELOAD", libfaketime().display().to_string()),
            env("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
            env("FAKETIME_TIMESTAMP_FILE", offset_file.display().to_string()),
            env("FAKETIME_NO_CACHE", "1".into()),
        ],
        ..ClusterOptions::default()
    });
    cluster.create_table("metafaults", 8, 3);
    let before = ballots(&cluster.wait_full("metafaults", 3));
    let client = connect(&runtime, &cluster);
    let table = open(&runtime, &client, "metafaults");
    set_acknowledged(&runtime, &table, b"before", b"1");
    // Polls meta for `span`: no ballot may change, and (unless meta cannot
    // hear the nodes) every node stays alive.
    let steady = |span: Duration, nodes_heard: bool, what: &str| {
        let until = Instant::now() + span;
        while Instant::now() < until {
            assert_eq!(
                ballots(&cluster.describe("metafaults")),
                before,
                "{what} reconfigured a partition"
            );
            if nodes_heard {
                let nodes = cluster.list_nodes();
                assert!(nodes.iter().all(|node| node.alive), "{what}: {nodes:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    for offset in ["+30s", "-30s", "+0s"] {
        std::fs::write(&offset_file, format!("{offset}\n")).unwrap();
        steady(Duration::from_millis(1_500), true, "a wall-clock step");
    }

    cluster.pause_meta(Duration::from_millis(2_500));
    steady(Duration::from_millis(1_500), true, "a pause of meta");

    for proxy in &cluster.proxies {
        proxy.cut();
    }
    steady(
        Duration::from_secs(3),
        false,
        "meta cut off from every node",
    );
    let Ok(ResponseBody::Pairs(info)) = cluster.meta_call(&Request::ClusterInfo) else {
        panic!("cluster_info failed")
    };
    assert!(
        info.contains(&("frozen".to_owned(), "true".to_owned())),
        "{info:?}"
    );
    for proxy in &cluster.proxies {
        proxy.heal();
    }
    cluster.wait_nodes_alive(&cluster.node_ids);
    steady(Duration::from_millis(1_000), true, "the heal");

    set_acknowledged(&runtime, &table, b"after", b"2");
    let got = runtime.block_on(table.get(b"before", b"s")).unwrap();
    assert_eq!(got.as_deref(), Some(&b"1"[..]));
    cluster.wait_full("metafaults", 3);
    assert_no_hosting_errors(&cluster);
}

// A node cut off from meta past the grace loses its places, and comes back
// as a learner of every partition on the shard where it still keeps the
// replica (**replica-stays-on-its-shard**): every partition returns to
// three replicas and the node logs no replica it could not host. Three
// nodes of two shards, eight partitions. (Before: meta's guardian put the
// learner on the node's least-loaded shard; a node then tried to open a
// replica it already had open on its other shard — "lock hold by current
// process" ten times a second — and half the partitions stayed short of a
// replica for good.)
#[test]
fn a_node_cut_off_from_meta_rejoins_on_its_own_shards() {
    let _serial = serial();
    let runtime = common::runtime();
    let cluster = Cluster::start(ClusterOptions {
        proxies: true,
        ..ClusterOptions::default()
    });
    // A table placed first and dropped later makes each node's original
    // shard choices differ from the ones an empty node would get: one
    // partition on shard 0 of every node, so "rejoin" starts on shard 1.
    cluster.create_table("first", 1, 3);
    cluster.create_table("rejoin", 8, 3);
    cluster.wait_full("rejoin", 3);
    let dropped = cluster.meta_call(&Request::DropTable {
        table: "first".into(),
        reserve_seconds: None,
    });
    assert!(dropped.is_ok(), "{dropped:?}");
    let client = connect(&runtime, &cluster);
    let table = open(&runtime, &client, "rejoin");
    for index in 0..32u32 {
        let key = format!("k{index}");
        set_acknowledged(&runtime, &table, key.as_bytes(), key.as_bytes());
    }
    let cut = 2;
    cluster.proxies[cut].cut();
    let cut_id = cluster.node_ids[cut].clone();
    wait_for("the cut node out of every partition", || {
        cluster
            .describe("rejoin")
            .iter()
            .all(|partition| {
                partition.primary != cut_id
                    && !partition.secondaries.contains(&cut_id)
                    && !partition.learners.contains(&cut_id)
            })
            .then_some(())
    });
    cluster.proxies[cut].heal();
    let partitions = cluster.wait_full("rejoin", 3);
    assert!(partitions
        .iter()
        .all(|partition| partition.secondaries.contains(&cut_id) || partition.primary == cut_id));
    assert_no_hosting_errors(&cluster);
    for index in 0..32u32 {
        let key = format!("k{index}");
        let got = runtime.block_on(table.get(key.as_bytes(), b"s")).unwrap();
        assert_eq!(got.as_deref(), Some(key.as_bytes()));
    }
}

// Beacons never wait behind other work (**beacons-never-wait**): meta
// holds every request but beacons for 3 s (a proxy between the primary's
// node and meta holds them, like a meta slow to answer them) while the
// primary asks meta to remove a secondary that was paused past the prepare
// timeout (400 ms here, below meta's grace, so that the primary asks
// before meta declares the paused node dead). The primary's node must stay alive in meta's eyes throughout.
// (Before, shard 0 sent queued requests to meta between two beacons on the
// same connection, each waiting up to 3 s for its answer: the node missed
// its beacons for the whole wait and meta declared it dead.)
#[test]
fn beacons_do_not_wait_for_slow_meta_requests() {
    let _serial = serial();
    let runtime = common::runtime();
    let cluster = Cluster::start(ClusterOptions {
        proxies: true,
        node_lines: "prepare_timeout_ms = 400\n".into(),
        ..ClusterOptions::default()
    });
    cluster.create_table("slowmeta", 1, 3);
    let before = cluster.wait_full("slowmeta", 3);
    let primary = cluster.node_index(&before[0].primary);
    let secondary = cluster.node_index(&before[0].secondaries[0]);
    let client = connect(&runtime, &cluster);
    let table = open(&runtime, &client, "slowmeta");
    set_acknowledged(&runtime, &table, b"k", b"v");
    cluster.proxies[primary].hold_requests(Duration::from_secs(3));

    // A write load, so that the primary has Prepares the paused secondary
    // leaves unacknowledged past the prepare timeout.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (table, stop) = (table.clone(), stop.clone());
        runtime.spawn(async move {
            let mut written = 0u32;
            while !stop.load(Ordering::Relaxed) && written < 20_000 {
                let _ = table.set(b"load", b"s", &written.to_le_bytes(), 0).await;
                written += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    common::signal(cluster.node_pid(secondary), libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(600));
    common::signal(cluster.node_pid(secondary), libc::SIGCONT);
    let watching_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watching_until {
        let nodes = cluster.list_nodes();
        let node = nodes
            .iter()
            .find(|node| node.node == cluster.node_ids[primary])
            .expect("the primary's node is listed");
        assert!(
            node.alive && node.last_beacon_ms_ago < GRACE.as_millis() as u64,
            "the primary's node missed its beacons: {node:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(writer).unwrap();
    assert!(
        cluster.proxies[primary].held() > 0,
        "the primary asked meta nothing: the fault never happened"
    );
    assert_eq!(cluster.describe("slowmeta")[0].primary, before[0].primary);
}

// A log append refused for being over the log's pending bound is retried,
// never dropped (**no-lost-append**): with 4 KiB log batches (32 KiB may
// wait), 16 writers of 6 KiB values push the shard's log past its bound on
// every replica. Every write is acknowledged (a `BUSY` refusal is retried:
// it was not executed), none times out or ends unknown, and no member is
// removed. (Before, a refused append was dropped: its decree never became
// durable, the partition's prepare window filled and every later write
// was refused until an unrelated ballot change, and a secondary hit by it
// never acked and was removed.)
#[test]
fn a_busy_log_loses_no_append() {
    let _serial = serial();
    let runtime = common::runtime();
    let cluster = Cluster::start(ClusterOptions {
        tuning: "log_batch_bytes_max = 4096\n".into(),
        ..ClusterOptions::default()
    });
    cluster.create_table("busylog", 1, 3);
    let before = cluster.wait_full("busylog", 3);
    let client = connect(&runtime, &cluster);
    let table = open(&runtime, &client, "busylog");
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let value = vec![b'x'; 6 * 1024];
    let writers: Vec<_> = (0..16u32)
        .map(|writer| {
            let (table, value) = (table.clone(), value.clone());
            let (acknowledged, busy, failures) =
                (acknowledged.clone(), busy.clone(), failures.clone());
            runtime.spawn(async move {
                for sequence in 0..40u32 {
                    let key = format!("w{writer}-{sequence}");
                    loop {
                        match table.set(key.as_bytes(), b"s", &value, 0).await {
                            Ok(()) => {
                                acknowledged.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(ClientError::Server(error)) if error.code == ErrorCode::Busy => {
                                busy.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(error) => {
                                *failures
                                    .lock()
                                    .unwrap()
                                    .entry(format!("{error}"))
                                    .or_default() += 1;
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        runtime.block_on(writer).unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "writes failed: {failures:?}");
    assert_eq!(acknowledged.load(Ordering::Relaxed), 16 * 40);
    let after = cluster.describe("busylog");
    assert_eq!(after[0].ballot, before[0].ballot, "a member was removed");
    set_acknowledged(&runtime, &table, b"still", b"writable");
    println!(
        "busy log: {} writes acknowledged, {} BUSY refusals retried",
        acknowledged.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed)
    );
}

// A primary that cannot record a new ballot stops, its node stops with a
// non-zero status naming the ballot (**stop-on-failure**,
// **disk-failure-stops-the-node**), and meta fails it over: on four nodes
// of two shards, the primary's ballot file is made unwritable (a directory
// squats its temporary name), a secondary is killed so that meta moves the
// partition to the next ballot; the primary cannot record it, and meta
// makes the remaining secondary primary; the acknowledged write is read
// back through it. (Before, the stopped primary kept its role in beacons
// and answered `STORAGE_ERROR` until its node restarted; then its node ran
// on with the replica stopped, and a sole primary stopped so was
// reinstated by meta ballot after ballot, never to serve again.)
#[test]
fn a_primary_that_cannot_record_its_ballot_is_failed_over() {
    let _serial = serial();
    let runtime = common::runtime();
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        ..ClusterOptions::default()
    });
    cluster.create_table("stuck", 1, 3);
    let before = cluster.wait_full("stuck", 3);
    let client = connect(&runtime, &cluster);
    let table = open(&runtime, &client, "stuck");
    set_acknowledged(&runtime, &table, b"k", b"v1");
    let gpid = Gpid {
        app_id: table.app_id(),
        partition_index: 0,
    };
    let primary = cluster.node_index(&before[0].primary);
    let squatter = markab::server::shard::replica_dir(&cluster.node_data_dir(primary), gpid)
        .join("ballot.tmp");
    std::fs::create_dir_all(&squatter).unwrap();
    let secondary = cluster.node_index(&before[0].secondaries[0]);
    cluster.kill_node(secondary);
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let partitions = cluster.describe("stuck");
        if partitions[0].primary != before[0].primary && !partitions[0].primary.is_empty() {
            break partitions;
        }
        assert!(
            Instant::now() < deadline,
            "no new primary: {partitions:?}\n--- old primary's log ---\n{}",
            cluster.node_log(primary)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(after[0].ballot > before[0].ballot + 1, "{after:?}");
    assert!(
        cluster.node_log(primary).contains("cannot record ballot"),
        "the old primary stopped on its ballot file"
    );
    let mut old = cluster.nodes[primary]
        .take()
        .expect("the old primary's process");
    let status = wait_for("the old primary's node to stop", || {
        old.child.try_wait().unwrap()
    });
    assert!(!status.success(), "{status}");
    assert!(
        cluster.node_log(primary).contains("the node stopped"),
        "{}",
        cluster.node_log(primary)
    );
    let fresh = connect(&runtime, &cluster);
    let fresh_table = open(&runtime, &fresh, "stuck");
    let got = wait_for("a read through the new primary", || {
        runtime.block_on(fresh_table.get(b"k", b"s")).ok()
    });
    assert_eq!(got.as_deref(), Some(&b"v1"[..]));
}
