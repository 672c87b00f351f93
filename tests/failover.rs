//! PacificA failover with real processes: `markab meta` and three
//! `markab replica` nodes on 127.0.0.1, a table of three replicas per
//! partition, a bounded write load, and SIGKILL of the node that hosts the
//! most primaries. Writes must resume on the surviving replicas, every
//! acknowledged write must read back afterwards, and the killed node must
//! rejoin when restarted.
//!
//! Every wait is bounded; the load is bounded in time and in requests; only
//! the processes the test started are killed, by pid.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{wait_for, Cluster, ClusterOptions};
use markab::client::{Client, ClientOptions, Table};
use markab::wire::{CreateTableRequest, ErrorCode, PartitionConfig, Request, ResponseBody};

const TABLE: &str = "failover";

/// One cluster at a time: a two-core machine runs one well, not two.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
const PARTITIONS: i32 = 4;
/// Concurrent writers of the load.
const WRITERS: usize = 6;
/// Most writes the whole load makes.
const WRITES_MAX: usize = 40_000;
/// Writes acknowledged after the kill before the load counts as resumed.
const RESUMED_WRITES: usize = 200;

/// Creates the test's table with three replicas per partition.
fn create_table(cluster: &Cluster, partition_count: i32) {
    let created = cluster.meta_call(&Request::CreateTable(CreateTableRequest {
        table: TABLE.to_string(),
        partition_count,
        replica_count: 3,
        envs: Vec::new(),
        success_if_exist: false,
    }));
    assert!(created.is_ok(), "create: {created:?}");
}

fn describe(cluster: &Cluster) -> Vec<PartitionConfig> {
    match cluster.meta_call(&Request::DescribeTable {
        table: TABLE.to_string(),
    }) {
        Ok(ResponseBody::Description(description)) => description.partitions,
        other => panic!("describe_table answered {other:?}"),
    }
}

/// What the load saw: every acknowledged write, and writes acknowledged
/// after the kill.
#[derive(Default)]
struct Load {
    acked: Mutex<BTreeMap<String, String>>,
    failed: AtomicUsize,
    after_kill: AtomicUsize,
    /// Writes started after the kill and acknowledged, by partition.
    after_kill_by_partition: Mutex<BTreeMap<u32, usize>>,
    killed: AtomicBool,
    stop: AtomicBool,
    issued: AtomicUsize,
}

/// One writer: distinct keys, one write at a time, until stopped or the
/// load's bound. A failed write (refused, timed out, unknown outcome) is
/// left out of the acknowledged set.
async fn write_loop(table: Table, writer: usize, load: Arc<Load>) {
    let mut sequence = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        if load.issued.fetch_add(1, Ordering::Relaxed) >= WRITES_MAX {
            return;
        }
        sequence += 1;
        let hash_key = format!("w{writer}-{sequence}");
        let value = format!("value-{writer}-{sequence}");
        let killed_before = load.killed.load(Ordering::Relaxed);
        match table
            .set(hash_key.as_bytes(), b"s", value.as_bytes(), 0)
            .await
        {
            Ok(()) => {
                load.acked.lock().unwrap().insert(hash_key.clone(), value);
                if killed_before {
                    load.after_kill.fetch_add(1, Ordering::Relaxed);
                    let partition = markab::key::partition_index(
                        markab::key::partition_hash(hash_key.as_bytes(), b"s"),
                        PARTITIONS as u32,
                    );
                    *load
                        .after_kill_by_partition
                        .lock()
                        .unwrap()
                        .entry(partition)
                        .or_default() += 1;
                }
            }
            Err(_) => {
                load.failed.fetch_add(1, Ordering::Relaxed);
                // Failover in progress: do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

// SIGKILL of the node hosting the most primaries during a write load:
// writes resume, every acknowledged write reads back, and the restarted node
// comes back alive with its data intact.
#[test]
fn primary_node_sigkill_loses_no_acknowledged_write() {
    let _serial = serial();
    let runtime = common::runtime();
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        shards: 2,
        ..ClusterOptions::default()
    });
    create_table(&cluster, PARTITIONS);
    let client = runtime
        .block_on(Client::connect_meta(
            &cluster.meta_addresses(),
            ClientOptions {
                operation_timeout: Duration::from_secs(3),
                ..ClientOptions::default()
            },
        ))
        .expect("connect to meta");
    let table = runtime.block_on(client.open_table(TABLE)).expect("open");
    // Every partition has three replicas and serves writes.
    wait_for("three replicas per partition", || {
        describe(&cluster)
            .iter()
            .all(|partition| partition.secondaries.len() == 2)
            .then_some(())
    });

    let load = Arc::new(Load::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| runtime.spawn(write_loop(table.clone(), writer, load.clone())))
        .collect();
    wait_for("writes before the kill", || {
        (load.acked.lock().unwrap().len() >= 300).then_some(())
    });

    // The node with the most primaries.
    let partitions = describe(&cluster);
    let victim = (0..cluster.node_ids.len())
        .max_by_key(|index| {
            partitions
                .iter()
                .filter(|partition| partition.primary == cluster.node_ids[*index])
                .count()
        })
        .expect("three nodes");
    let victim_id = cluster.node_ids[victim].clone();
    assert!(
        partitions
            .iter()
            .any(|partition| partition.primary == victim_id),
        "the victim hosts a primary"
    );
    load.killed.store(true, Ordering::Relaxed);
    let killed_at = Instant::now();
    cluster.kill_node(victim);

    wait_for("writes resume on every partition after the kill", || {
        let resumed = load.after_kill_by_partition.lock().unwrap().len() == PARTITIONS as usize;
        (resumed && load.after_kill.load(Ordering::Relaxed) >= RESUMED_WRITES).then_some(())
    });
    let resumed_after = killed_at.elapsed();
    load.stop.store(true, Ordering::Relaxed);
    for writer in writers {
        runtime.block_on(writer).expect("writer task");
    }
    // Meta moved every primary off the dead node.
    let partitions = describe(&cluster);
    assert!(
        partitions
            .iter()
            .all(|partition| partition.primary != victim_id
                && !partition.secondaries.contains(&victim_id)),
        "the dead node left every configuration: {partitions:?}"
    );
    let acked = load.acked.lock().unwrap().clone();
    eprintln!(
        "failover: {} writes acknowledged, {} failed; {} acknowledged after the kill, within {resumed_after:?}",
        acked.len(),
        load.failed.load(Ordering::Relaxed),
        load.after_kill.load(Ordering::Relaxed)
    );
    common::read_back(&runtime, &table, &acked);

    // The killed node restarts: its replicas reopen from its own log, meta
    // takes it back as a learner, it catches up and is promoted.
    cluster.start_node(victim);
    wait_member_everywhere(&cluster, &victim_id);
    common::read_back(&runtime, &table, &acked);

    // Proof that it caught up: with both other nodes killed, one after the
    // other, it is the only replica left, and every acknowledged write
    // still reads back.
    for index in (0..3).filter(|index| *index != victim) {
        kill_and_wait_removed(&mut cluster, index);
    }
    common::read_back(&runtime, &table, &acked);
    // One replica left, fewer than meta's replica_count_min_alive (2):
    // writes are refused, with a clear error.
    let refused = runtime.block_on(table.set(b"after", b"s", b"v", 0));
    match refused {
        Err(error) => assert_eq!(error.code(), Some(ErrorCode::NotEnoughReplicas), "{error}"),
        Ok(()) => panic!("a write with one replica left was accepted"),
    }
}

/// Waits until `node` is the primary or a secondary of every partition.
fn wait_member_everywhere(cluster: &Cluster, node: &str) {
    wait_for(
        "the restarted node is a member of every partition again",
        || {
            describe(cluster)
                .iter()
                .all(|partition| {
                    partition.primary == node || partition.secondaries.iter().any(|s| s == node)
                })
                .then_some(())
        },
    );
}

/// Writes `count` records of `value_bytes` with `tasks` concurrent tasks;
/// returns the acknowledged ones (all of them: no fault is injected).
fn write_many(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
    prefix: &str,
    count: usize,
    value_bytes: usize,
    tasks: usize,
) -> BTreeMap<String, String> {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    runtime.block_on(async {
        let mut handles = Vec::new();
        for task in 0..tasks {
            let table = table.clone();
            let acked = acked.clone();
            let prefix = prefix.to_string();
            handles.push(tokio::spawn(async move {
                for index in (task..count).step_by(tasks) {
                    let hash_key = format!("{prefix}{index}");
                    let mut value = format!("{index}-").repeat(value_bytes / 4 + 1);
                    value.truncate(value_bytes);
                    table
                        .set(hash_key.as_bytes(), b"s", value.as_bytes(), 0)
                        .await
                        .unwrap_or_else(|error| panic!("set {hash_key}: {error}"));
                    acked.lock().unwrap().insert(hash_key, value);
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    });
    let acked = acked.lock().unwrap().clone();
    acked
}

// A node that was down while its partition took more writes than the
// primary's learn cache (1,024 mutations) and log (bounded to 4 MiB here)
// hold learns from a copy of the primary's records: after it rejoins and
// both other nodes are killed, it alone serves every write, old and new.
#[test]
fn node_behind_the_log_learns_from_a_copy() {
    let _serial = serial();
    let runtime = common::runtime();
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        shards: 2,
        tuning: "log_segment_bytes = 1_048_576\nlog_bytes_max = 4_194_304\n".to_string(),
        ..ClusterOptions::default()
    });
    create_table(&cluster, 1);
    wait_for("three replicas", || {
        describe(&cluster)
            .iter()
            .all(|partition| partition.secondaries.len() == 2)
            .then_some(())
    });
    let client = runtime
        .block_on(Client::connect_meta(
            &cluster.meta_addresses(),
            ClientOptions::default(),
        ))
        .expect("connect to meta");
    let table = runtime.block_on(client.open_table(TABLE)).expect("open");
    let mut acked = write_many(&runtime, &table, "early", 200, 100, 4);

    // A secondary goes down; the partition takes 3,000 writes of 4 KiB
    // (12 MiB: three times the primary's log bound).
    let primary = describe(&cluster)[0].primary.clone();
    let behind = (0..3)
        .find(|index| cluster.node_ids[*index] != primary)
        .unwrap();
    cluster.kill_node(behind);
    wait_for("the dead secondary removed", || {
        describe(&cluster)[0]
            .secondaries
            .iter()
            .all(|node| *node != cluster.node_ids[behind])
            .then_some(())
    });
    acked.extend(write_many(&runtime, &table, "late", 3_000, 4096, 16));
    let primary_index = (0..3)
        .find(|index| cluster.node_ids[*index] == primary)
        .unwrap();
    let primary_log = common::dir_bytes(&cluster.node_data_dir(primary_index).join("log"));
    assert!(
        primary_log < 10 << 20,
        "the primary's log ({primary_log} bytes) no longer holds every write"
    );

    cluster.start_node(behind);
    let behind_id = cluster.node_ids[behind].clone();
    wait_member_everywhere(&cluster, &behind_id);
    for index in (0..3).filter(|index| *index != behind) {
        kill_and_wait_removed(&mut cluster, index);
    }
    common::read_back(&runtime, &table, &acked);
}

/// Kills node `index` and waits until meta removed it from every
/// partition: nodes killed one after the other are failures meta handles
/// one at a time, where two of three silent at once would freeze it
/// (docs/meta.md, "Frozen").
fn kill_and_wait_removed(cluster: &mut Cluster, index: usize) {
    let id = cluster.node_ids[index].clone();
    cluster.kill_node(index);
    wait_for("the killed node out of every partition", || {
        describe(cluster)
            .iter()
            .all(|partition| partition.primary != id && !partition.secondaries.contains(&id))
            .then_some(())
    });
}

// `markab failover-bench` runs a round end to end: a fresh cluster, a load,
// a SIGKILL, and a report whose JSON line names the victim, the affected
// partitions and a recovery time for each (measured, not bounded here).
#[test]
fn failover_bench_reports_one_round() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let rounds = dir.path().join("rounds");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_markab"))
        .args(["failover-bench", "--kills", "1", "--partitions", "4"])
        .args(["--warmup-s", "1", "--recovery-timeout-s", "20", "--dir"])
        .arg(&rounds)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn markab failover-bench");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            common::kill_child(&mut child);
            panic!("failover-bench did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "failover-bench failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("FAILOVER_JSON "))
        .unwrap_or_else(|| panic!("no FAILOVER_JSON line in {stdout}"));
    let report: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(report["kills"], 1);
    let round = &report["rounds"][0];
    let affected = round["affected"].as_array().unwrap();
    let recovered = round["recovered_ms"].as_array().unwrap();
    assert!(!affected.is_empty(), "the victim was a primary: {round}");
    assert_eq!(affected.len(), recovered.len());
    assert!(recovered.iter().all(|ms| ms.as_f64().unwrap() > 0.0));
    assert!(report["median_ms"].as_f64().unwrap() > 0.0);
}
