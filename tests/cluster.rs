//! A real cluster — `markab meta` and several `markab replica` nodes as
//! processes — driven through the client library: DDL, data across
//! partitions and nodes, meta and node restarts, drop, recall and the end of
//! a drop's hold time.
//!
//! Each test starts its own cluster; a file-wide lock runs them one at a
//! time so that a two-core machine is not asked to run several clusters at
//! once. Every wait is bounded.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use common::cluster::{wait_for, wait_served, Cluster, ClusterOptions};
use markab::client::{Client, ClientError, ClientOptions, Table};
use markab::server::shard::replica_dir;
use markab::wire::{CreateTableRequest, ErrorCode, Gpid, TableStatus};

/// One cluster at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn create_request(table: &str, partition_count: i32, replica_count: i32) -> CreateTableRequest {
    CreateTableRequest {
        table: table.to_string(),
        partition_count,
        replica_count,
        envs: Vec::new(),
        success_if_exist: false,
    }
}

fn connect(runtime: &tokio::runtime::Runtime, cluster: &Cluster) -> Client {
    runtime
        .block_on(Client::connect_meta(
            &cluster.meta_addresses(),
            ClientOptions::default(),
        ))
        .expect("connect to meta")
}

fn code(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(error) => error
            .code()
            .unwrap_or_else(|| panic!("error without a code: {error}")),
    }
}

/// Writes `count` records `("k<i>", "s") -> "v<i>"`.
fn write_records(runtime: &tokio::runtime::Runtime, table: &Table, count: usize) {
    runtime.block_on(async {
        for index in 0..count {
            let hash_key = format!("k{index}");
            let value = format!("v{index}");
            table
                .set(hash_key.as_bytes(), b"s", value.as_bytes(), 0)
                .await
                .unwrap_or_else(|error| panic!("set {hash_key}: {error}"));
        }
    });
}

/// Whether every record of [`write_records`] reads back; `Err` names the
/// first that does not.
fn read_records(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
    count: usize,
) -> Result<(), String> {
    runtime.block_on(async {
        for index in 0..count {
            let hash_key = format!("k{index}");
            let value = format!("v{index}");
            match table.get(hash_key.as_bytes(), b"s").await {
                Ok(Some(found)) if found == value.as_bytes() => {}
                other => return Err(format!("get {hash_key}: {other:?}")),
            }
        }
        Ok(())
    })
}

/// Waits (bounded) until every record reads back, opening the table anew
/// on each round; returns the last table handle.
fn wait_records(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    name: &str,
    count: usize,
) -> Table {
    wait_for(&format!("records of {name} readable"), || {
        let table = runtime.block_on(client.open_table(name)).ok()?;
        read_records(runtime, &table, count).ok().map(|()| table)
    })
}

// Proves the DDL round trips through meta (create, list, describe,
// set_app_envs, get_app_envs, cluster_info, list_nodes) and that bad input
// gets meta's clear error codes without leaving a partial table behind.
#[test]
fn ddl_round_trips_and_bad_input_errors() {
    let _serial = serial();
    let runtime = common::runtime();
    let cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        ..ClusterOptions::default()
    });
    let client = connect(&runtime, &cluster);

    let mut request = create_request("orders", 4, 1);
    request.envs = vec![("owner".into(), "ops".into())];
    let info = runtime.block_on(client.create_table(request)).unwrap();
    assert_eq!(info.name, "orders");
    assert!(info.app_id >= 1);
    assert_eq!(info.partition_count, 4);
    assert_eq!(info.replica_count, 1);
    assert_eq!(info.status, TableStatus::Available);

    let tables = runtime.block_on(client.list_tables(false)).unwrap();
    assert_eq!(
        tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["orders"]
    );
    let description = runtime.block_on(client.describe_table("orders")).unwrap();
    assert_eq!(description.info.app_id, info.app_id);
    assert_eq!(description.partitions.len(), 4);
    for (index, partition) in description.partitions.iter().enumerate() {
        assert_eq!(partition.partition_index as usize, index);
        assert!(partition.ballot >= 1, "{partition:?}");
        assert!(
            cluster.node_ids.contains(&partition.primary),
            "{partition:?}"
        );
        assert!(partition.secondaries.is_empty(), "{partition:?}");
    }

    runtime
        .block_on(client.set_app_envs("orders", vec![("ttl_days".into(), "7".into())]))
        .unwrap();
    let envs = runtime.block_on(client.get_app_envs("orders")).unwrap();
    assert!(envs.contains(&("owner".into(), "ops".into())), "{envs:?}");
    assert!(envs.contains(&("ttl_days".into(), "7".into())), "{envs:?}");

    let nodes = runtime.block_on(client.list_nodes()).unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    for node in &nodes {
        assert!(node.alive, "{node:?}");
        assert!(cluster.node_ids.contains(&node.node), "{node:?}");
        assert_eq!(node.shard_addresses.first(), Some(&node.node), "{node:?}");
    }
    assert_eq!(nodes.iter().map(|node| node.replica_count).sum::<i32>(), 4);
    let info_pairs = runtime.block_on(client.cluster_info()).unwrap();
    assert!(!info_pairs.is_empty());

    // Bad input: each refused with INVALID_ARGUMENT.
    let long_name = "x".repeat(129);
    for (name, partitions, replicas) in [
        ("bad name", 4, 1),
        ("", 4, 1),
        (long_name.as_str(), 4, 1),
        ("slash/name", 4, 1),
        ("p3", 3, 1),
        ("p0", 0, 1),
        ("pneg", -4, 1),
        ("phuge", 131_072, 1),
        ("rneg", 4, -1),
        ("r6", 4, 6),
    ] {
        let result =
            runtime.block_on(client.create_table(create_request(name, partitions, replicas)));
        assert_eq!(
            code(result),
            ErrorCode::InvalidArgument,
            "create {name:?} partitions={partitions} replicas={replicas}"
        );
    }
    // Duplicates: TABLE_EXISTS, or the existing table with success_if_exist.
    let duplicate = runtime.block_on(client.create_table(create_request("orders", 8, 1)));
    assert_eq!(code(duplicate), ErrorCode::TableExists);
    let mut again = create_request("orders", 8, 1);
    again.success_if_exist = true;
    let existing = runtime.block_on(client.create_table(again)).unwrap();
    assert_eq!(existing.app_id, info.app_id);
    assert_eq!(existing.partition_count, 4);
    // Unknown tables.
    assert_eq!(
        code(runtime.block_on(client.describe_table("nope"))),
        ErrorCode::UnknownTable
    );
    assert_eq!(
        code(runtime.block_on(client.drop_table("nope", None))),
        ErrorCode::UnknownTable
    );
    assert_eq!(
        code(runtime.block_on(client.get_app_envs("nope"))),
        ErrorCode::UnknownTable
    );
    assert_eq!(
        code(runtime.block_on(client.set_app_envs("nope", vec![("a".into(), "b".into())]))),
        ErrorCode::UnknownTable
    );
    assert!(matches!(
        runtime.block_on(client.open_table("nope")),
        Err(ClientError::UnknownTable(_))
    ));
    // Recall of an unknown app id, and of a table that is not dropped.
    assert_eq!(
        code(runtime.block_on(client.recall_table(9_999, ""))),
        ErrorCode::UnknownTable
    );
    assert_eq!(
        code(runtime.block_on(client.recall_table(info.app_id, ""))),
        ErrorCode::InvalidArgument
    );
    // No partial state from the failures.
    let tables = runtime.block_on(client.list_tables(true)).unwrap();
    assert_eq!(tables.len(), 1, "{tables:?}");
    let nodes = runtime.block_on(client.list_nodes()).unwrap();
    assert_eq!(nodes.iter().map(|node| node.replica_count).sum::<i32>(), 4);
    let next = runtime
        .block_on(client.create_table(create_request("orders2", 2, 1)))
        .unwrap();
    assert!(next.app_id > info.app_id, "app ids increase");
}

// Proves data written through a meta-routed client lands on 16 partitions
// spread over all 3 nodes and every record reads back.
#[test]
fn data_spreads_over_partitions_and_nodes() {
    let _serial = serial();
    let runtime = common::runtime();
    let cluster = Cluster::start(ClusterOptions::default());
    let client = connect(&runtime, &cluster);
    runtime
        .block_on(client.create_table(create_request("spread", 16, 1)))
        .unwrap();
    let description = runtime.block_on(client.describe_table("spread")).unwrap();
    let primaries: BTreeSet<&String> = description
        .partitions
        .iter()
        .map(|partition| &partition.primary)
        .collect();
    let all: BTreeSet<&String> = cluster.node_ids.iter().collect();
    assert_eq!(primaries, all, "primaries on every node");
    for node in runtime.block_on(client.list_nodes()).unwrap() {
        // 16 over 3 nodes, fewest-first: 6, 5, 5.
        assert!((5..=6).contains(&node.replica_count), "{node:?}");
    }
    let table = wait_served(&runtime, &client, "spread");
    assert_eq!(table.partition_count(), 16);
    write_records(&runtime, &table, 500);
    read_records(&runtime, &table, 500).unwrap();
    let hit: BTreeSet<u32> = (0..500)
        .map(|index| {
            let key = format!("k{index}");
            markab::key::partition_index(markab::key::crc64(key.as_bytes()), 16)
        })
        .collect();
    assert_eq!(hit.len(), 16, "the records cover every partition");
}

// Proves a meta restart keeps every table, its configuration and its
// routes: the same describe answer, and the data still readable through a
// new client.
#[test]
fn meta_restart_preserves_tables_and_routes() {
    let _serial = serial();
    let runtime = common::runtime();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let client = connect(&runtime, &cluster);
    let mut request = create_request("kept", 8, 1);
    request.envs = vec![("a".into(), "1".into())];
    runtime.block_on(client.create_table(request)).unwrap();
    let table = wait_served(&runtime, &client, "kept");
    write_records(&runtime, &table, 200);
    let before = runtime.block_on(client.describe_table("kept")).unwrap();

    cluster.restart_meta();

    // The old client's cached routes still lead to the data.
    read_records(&runtime, &table, 200).unwrap();
    let client = connect(&runtime, &cluster);
    let after = runtime.block_on(client.describe_table("kept")).unwrap();
    assert_eq!(after, before, "tables and configurations survive");
    let envs = runtime.block_on(client.get_app_envs("kept")).unwrap();
    assert!(envs.contains(&("a".into(), "1".into())), "{envs:?}");
    wait_records(&runtime, &client, "kept", 200);
    // The next table gets a new app id: ids are never reused after restart.
    let next = runtime
        .block_on(client.create_table(create_request("later", 2, 1)))
        .unwrap();
    assert!(next.app_id > before.info.app_id);
}

// Proves a node restarted on its data directory — after a clean stop and
// after SIGKILL — reopens its replicas and serves the data it held.
#[test]
fn node_restart_reopens_replicas_and_keeps_data() {
    let _serial = serial();
    let runtime = common::runtime();
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        ..ClusterOptions::default()
    });
    let client = connect(&runtime, &cluster);
    let info = runtime
        .block_on(client.create_table(create_request("durable", 8, 1)))
        .unwrap();
    let table = wait_served(&runtime, &client, "durable");
    write_records(&runtime, &table, 200);

    cluster.stop_node(0);
    cluster.start_node(0);
    wait_records(&runtime, &client, "durable", 200);

    cluster.kill_node(1);
    cluster.start_node(1);
    let table = wait_records(&runtime, &client, "durable", 200);
    // Writes work again on both nodes.
    write_records(&runtime, &table, 220);
    let description = runtime.block_on(client.describe_table("durable")).unwrap();
    for partition in &description.partitions {
        let node = cluster
            .node_ids
            .iter()
            .position(|id| id == &partition.primary)
            .unwrap();
        let gpid = Gpid {
            app_id: info.app_id,
            partition_index: partition.partition_index,
        };
        let dir = replica_dir(&cluster.node_data_dir(node), gpid);
        assert!(dir.is_dir(), "{} exists", dir.display());
    }
}

// Proves a dropped table disappears at once (open_table fails, list omits
// it, the dropped listing shows it), a recall brings it back with its data,
// and a recall under a name in use is refused.
#[test]
fn drop_hides_table_and_recall_restores_it_with_data() {
    let _serial = serial();
    let runtime = common::runtime();
    let cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        ..ClusterOptions::default()
    });
    let client = connect(&runtime, &cluster);
    let info = runtime
        .block_on(client.create_table(create_request("gone", 4, 1)))
        .unwrap();
    let table = wait_served(&runtime, &client, "gone");
    write_records(&runtime, &table, 100);

    runtime.block_on(client.drop_table("gone", None)).unwrap();
    let fresh = connect(&runtime, &cluster);
    assert!(matches!(
        runtime.block_on(fresh.open_table("gone")),
        Err(ClientError::UnknownTable(_))
    ));
    let listed = runtime.block_on(client.list_tables(false)).unwrap();
    assert!(listed.iter().all(|t| t.name != "gone"), "{listed:?}");
    let dropped = runtime.block_on(client.list_tables(true)).unwrap();
    let entry = dropped
        .iter()
        .find(|t| t.app_id == info.app_id)
        .expect("the dropped table is listed with include_dropped");
    assert_eq!(entry.status, TableStatus::Dropped);
    assert!(entry.drop_expire_s > entry.drop_time_s, "{entry:?}");
    // The replicas' data is kept while the table is held.
    let kept = cluster
        .node_ids
        .iter()
        .enumerate()
        .flat_map(|(node, _)| (0..4).map(move |partition_index| (node, partition_index)))
        .filter(|(node, partition_index)| {
            replica_dir(
                &cluster.node_data_dir(*node),
                Gpid {
                    app_id: info.app_id,
                    partition_index: *partition_index,
                },
            )
            .is_dir()
        })
        .count();
    assert_eq!(kept, 4, "every replica directory is kept");

    // A new table takes the name; recalling under it is refused.
    runtime
        .block_on(client.create_table(create_request("gone", 2, 1)))
        .unwrap();
    let clash = runtime.block_on(client.recall_table(info.app_id, ""));
    assert!(
        matches!(
            code(clash),
            ErrorCode::TableExists | ErrorCode::InvalidArgument
        ),
        "recall under a name in use is refused"
    );
    let recalled = runtime
        .block_on(client.recall_table(info.app_id, "restored"))
        .unwrap();
    assert_eq!(recalled.app_id, info.app_id);
    assert_eq!(recalled.name, "restored");
    assert_eq!(recalled.status, TableStatus::Available);
    wait_records(&runtime, &client, "restored", 100);
}

// Proves that once a drop's hold time (reserve_seconds = 1) is over, meta
// tells the nodes to delete the replicas and their directories disappear;
// the table can no longer be recalled.
#[test]
fn expired_drop_deletes_replica_data() {
    let _serial = serial();
    let runtime = common::runtime();
    let cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        ..ClusterOptions::default()
    });
    let client = connect(&runtime, &cluster);
    let info = runtime
        .block_on(client.create_table(create_request("brief", 4, 1)))
        .unwrap();
    let table = wait_served(&runtime, &client, "brief");
    write_records(&runtime, &table, 50);
    let dirs: Vec<_> = (0..cluster.node_ids.len())
        .flat_map(|node| (0..4).map(move |partition_index| (node, partition_index)))
        .map(|(node, partition_index)| {
            replica_dir(
                &cluster.node_data_dir(node),
                Gpid {
                    app_id: info.app_id,
                    partition_index,
                },
            )
        })
        .filter(|dir| dir.is_dir())
        .collect();
    assert_eq!(dirs.len(), 4, "{dirs:?}");

    runtime
        .block_on(client.drop_table("brief", Some(1)))
        .unwrap();
    wait_for("replica directories deleted after the hold", || {
        dirs.iter().all(|dir| !dir.exists()).then_some(())
    });
    assert!(runtime
        .block_on(client.recall_table(info.app_id, ""))
        .is_err());
}

// Proves a create with no alive node fails with NOT_ENOUGH_NODES and leaves
// nothing behind: no table, and the first create that succeeds later gets
// app id 1.
#[test]
fn create_without_alive_nodes_fails_and_persists_nothing() {
    let _serial = serial();
    let runtime = common::runtime();
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    });
    let client = connect(&runtime, &cluster);
    cluster.kill_node(0);
    wait_for("meta sees the node dead", || {
        cluster
            .list_nodes()
            .iter()
            .all(|node| !node.alive)
            .then_some(())
    });
    let refused = runtime.block_on(client.create_table(create_request("early", 4, 1)));
    assert_eq!(code(refused), ErrorCode::NotEnoughNodes);
    let tables = runtime.block_on(client.list_tables(true)).unwrap();
    assert!(tables.is_empty(), "{tables:?}");
    assert!(matches!(
        runtime.block_on(client.open_table("early")),
        Err(ClientError::UnknownTable(_))
    ));

    cluster.start_node(0);
    let info = runtime
        .block_on(client.create_table(create_request("early", 4, 1)))
        .unwrap();
    assert_eq!(info.app_id, 1, "the failed create used no app id");
    let table = wait_served(&runtime, &client, "early");
    write_records(&runtime, &table, 20);
    read_records(&runtime, &table, 20).unwrap();
}
