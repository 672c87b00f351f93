//! Balancing with real processes: `markab meta` and `markab replica` nodes
//! (two shards each) on 127.0.0.1, a table of 32 partitions × 3 replicas,
//! and a bounded write load through the client library while meta moves
//! primaries and replicas. Every acknowledged write must read back, the
//! load must see no error (the client retries the short `NOT_PRIMARY`
//! bursts of a handoff itself), and meta must reach the ±1 spread per node
//! and per shard (docs/balance.md).
//!
//! Every wait is bounded; the load is bounded in time and in requests; only
//! the processes the test started are killed, by pid.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ClusterOptions};
use common::load::start_load;
use markab::client::{Client, ClientOptions, Table};
use markab::wire::{BalancerRequest, NodeInfo, Request, ResponseBody};

const TABLE: &str = "balance";
const PARTITIONS: i32 = 32;
/// Concurrent writers of the load.
const WRITERS: usize = 4;
/// Most writes the whole load makes.
const WRITES_MAX: usize = 200_000;
/// Bound on the wait for a balanced cluster.
const BALANCE_TIMEOUT: Duration = Duration::from_secs(180);

/// One cluster at a time: a two-core machine runs one well, not two.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stops the load and checks it: no error, and every acknowledged write
/// reads back.
fn finish_load(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
    load: &common::load::Load,
    writers: Vec<tokio::task::JoinHandle<()>>,
) -> usize {
    // The load goes on until it made some progress (a balance can be over
    // in moments), bounded.
    common::cluster::wait_for("100 acknowledged writes", || {
        (load.acked.lock().unwrap().len() >= 100).then_some(())
    });
    load.stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for writer in writers {
            writer.await.expect("a writer");
        }
    });
    let errors = load.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} writes failed, first: {:?}",
        errors.len(),
        errors.first()
    );
    let acked = load.acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "the load made progress: {} writes",
        acked.len()
    );
    common::read_back(runtime, table, &acked);
    acked.len()
}

fn balancer(cluster: &Cluster, request: BalancerRequest) -> Vec<(String, String)> {
    match cluster.meta_call(&Request::Balancer(request)) {
        Ok(ResponseBody::Pairs(pairs)) => pairs,
        other => panic!("balancer answered {other:?}"),
    }
}

fn spread(values: impl Iterator<Item = i32> + Clone) -> i32 {
    values.clone().max().unwrap_or(0) - values.min().unwrap_or(0)
}

/// Whether the alive, not removing nodes carry replicas and primaries
/// within one of each other, each its replicas over its shards within
/// one, with no move in progress. (Primaries per shard are best effort:
/// switches move them between shards only where a partition sits on
/// different shards on different nodes; docs/balance.md.)
fn balanced(nodes: &[NodeInfo], moves: &[(String, String)]) -> bool {
    let usable: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|node| node.alive && !node.removing)
        .collect();
    moves.first().is_some_and(|(_, count)| count == "0")
        && spread(usable.iter().map(|node| node.replica_count)) <= 1
        && spread(usable.iter().map(|node| node.primary_count)) <= 1
        && usable
            .iter()
            .all(|node| spread(node.shard_replica_counts.iter().copied()) <= 1)
}

/// Waits (bounded) until `done` holds of meta's node list and moves.
fn wait_balanced(
    cluster: &Cluster,
    what: &str,
    done: impl Fn(&[NodeInfo], &[(String, String)]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let nodes = cluster.list_nodes();
        let moves = balancer(cluster, BalancerRequest::ListMoves);
        if done(&nodes, &moves) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < BALANCE_TIMEOUT,
            "{what} not reached within {BALANCE_TIMEOUT:?}: nodes {nodes:?}, moves {moves:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn open(runtime: &tokio::runtime::Runtime, cluster: &Cluster) -> Table {
    let client = runtime
        .block_on(Client::connect_meta(
            &cluster.meta_addresses(),
            ClientOptions::default(),
        ))
        .expect("connect");
    runtime.block_on(client.open_table(TABLE)).expect("open")
}

// Three nodes hold the table; two more join under a write load and meta,
// set lively, moves primaries and replicas onto them until every node and
// shard holds within one of the others — no write fails, none is lost.
// Meta's metrics count the moves.
#[test]
fn joined_nodes_get_their_share_under_load() {
    let _serial = serial();
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 5,
        started: Some(3),
        meta_lines: "metrics_listen = \"127.0.0.1:0\"\n".into(),
        ..ClusterOptions::default()
    });
    cluster.create_table(TABLE, PARTITIONS, 3);
    cluster.wait_full(TABLE, 3);
    let runtime = common::runtime();
    let table = open(&runtime, &cluster);
    let (load, writers) = start_load(&runtime, &table, WRITERS, WRITES_MAX, "w");
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_node(3);
    cluster.start_node(4);
    let level = balancer(
        &cluster,
        BalancerRequest::SetLevel {
            level: "lively".into(),
        },
    );
    assert_eq!(level, vec![("level".to_owned(), "lively".to_owned())]);
    let took = wait_balanced(&cluster, "a balanced cluster of five", |nodes, moves| {
        nodes.iter().filter(|node| node.alive).count() == 5 && balanced(nodes, moves)
    });
    let nodes = cluster.list_nodes();
    for node in &nodes {
        // 96 replicas and 32 primaries over five nodes.
        assert!((19..=20).contains(&node.replica_count), "{node:?}");
        assert!((6..=7).contains(&node.primary_count), "{node:?}");
    }
    // Meta's metrics count the moves, and come to show each node's counts
    // (they are brought up to date once a second).
    let metrics_address = cluster
        .meta
        .as_ref()
        .unwrap()
        .metrics_address
        .clone()
        .expect("meta serves metrics");
    let text = common::wait_for_metrics(&metrics_address, |text| {
        common::sample(text, "markab_meta_balancer_moves_in_progress") == 0.0
            && nodes.iter().all(|node| {
                let replicas = common::sample(
                    text,
                    &format!("markab_meta_node_replicas{{node=\"{}\"}}", node.node),
                );
                replicas == f64::from(node.replica_count)
            })
    });
    let moves = common::sample(
        &text,
        "markab_meta_balancer_moves_total{kind=\"move_replica\",result=\"ok\"}",
    );
    assert!(
        moves >= 30.0,
        "two nodes got some 38 replicas by moves: {moves}"
    );
    let acked = finish_load(&runtime, &table, &load, writers);
    eprintln!("balanced in {took:?} under {acked} acknowledged writes");
}

// After the whole cluster restarts, primaries sit where the restarts left
// them; one `balance` round at a time (the default level, steady, moves
// nothing by itself) spreads them again under load.
#[test]
fn balance_spreads_primaries_after_a_whole_cluster_restart() {
    let _serial = serial();
    let mut cluster = Cluster::start(ClusterOptions::default());
    cluster.create_table(TABLE, PARTITIONS, 3);
    cluster.wait_full(TABLE, 3);
    for index in 0..3 {
        cluster.kill_node(index);
    }
    for index in 0..3 {
        cluster.start_node(index);
    }
    cluster.wait_full(TABLE, 3);
    let runtime = common::runtime();
    let table = open(&runtime, &cluster);
    let (load, writers) = start_load(&runtime, &table, WRITERS, WRITES_MAX, "w");
    wait_balanced(
        &cluster,
        "primaries spread by balance rounds",
        |nodes, moves| {
            if balanced(nodes, moves) {
                return true;
            }
            if moves.first().is_some_and(|(_, count)| count == "0") {
                balancer(&cluster, BalancerRequest::Balance { apply: true });
            }
            false
        },
    );
    for node in cluster.list_nodes() {
        assert!((10..=11).contains(&node.primary_count), "{node:?}");
        assert_eq!(node.replica_count, PARTITIONS, "{node:?}");
    }
    finish_load(&runtime, &table, &load, writers);
}

// remove_node empties a node under load: meta moves its replicas to the
// others and then reports it safe to stop; stopped, it takes nothing with
// it.
#[test]
fn remove_node_empties_a_node_under_load() {
    let _serial = serial();
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        ..ClusterOptions::default()
    });
    cluster.create_table(TABLE, PARTITIONS, 3);
    cluster.wait_full(TABLE, 3);
    let runtime = common::runtime();
    let table = open(&runtime, &cluster);
    let (load, writers) = start_load(&runtime, &table, WRITERS, WRITES_MAX, "w");
    let leaving = cluster.node_ids[0].clone();
    let remove = BalancerRequest::RemoveNode {
        node: leaving.clone(),
        cancel: false,
    };
    let answer = balancer(&cluster, remove.clone());
    assert!(
        answer.contains(&("removing".to_owned(), "true".to_owned())),
        "{answer:?}"
    );
    wait_balanced(&cluster, "the removed node emptied", |_, moves| {
        moves.first().is_some_and(|(_, count)| count == "0")
            && balancer(&cluster, remove.clone())
                .contains(&("safe_to_stop".to_owned(), "true".to_owned()))
    });
    // Its data goes too, once every partition is whole without it
    // (**moved-replica-dropped**).
    let replicas_dir = cluster.node_data_dir(0).join("replicas");
    common::cluster::wait_for("the removed node's replicas deleted", || {
        let left = std::fs::read_dir(&replicas_dir)
            .map(|entries| entries.count())
            .unwrap_or(0);
        (left == 0).then_some(())
    });
    cluster.stop_node(0);
    for partition in cluster.wait_full(TABLE, 3) {
        assert_ne!(partition.primary, leaving);
        assert!(!partition.secondaries.contains(&leaving));
    }
    finish_load(&runtime, &table, &load, writers);
}
