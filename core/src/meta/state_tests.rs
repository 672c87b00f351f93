//! Unit tests of the meta state machine: no I/O, time passed in.

use super::*;
use markab_wire::message::{Key, ReplicaRole};

const NODE_TIMEOUT_MS: u64 = 5_000;
const HOLD_SECONDS: u64 = 100;
/// A start time well past the epoch, in Unix milliseconds.
const T0_MS: u64 = 1_700_000_000_000;

fn settings() -> MetaSettings {
    MetaSettings {
        meta_address: "127.0.0.1:34601".into(),
        data_dir: "/var/tmp/meta".into(),
        hold_seconds: HOLD_SECONDS,
        node_timeout_ms: NODE_TIMEOUT_MS,
        replica_count_default: 3,
        replica_count_max: 5,
        replication: None,
        cluster_id: 1,
    }
}

fn new_state() -> MetaState {
    MetaState::new(settings(), MetaData::default())
}

fn node_id(index: usize) -> String {
    format!("127.0.0.1:{}", 34_800 + index * 10)
}

fn node_beacon(index: usize, shards: usize, replicas: Vec<HostedReplica>) -> Request {
    let base = 34_800 + index * 10;
    Request::Beacon(NodeBeacon {
        node: node_id(index),
        shard_addresses: (0..shards)
            .map(|shard| format!("127.0.0.1:{}", base + shard))
            .collect(),
        replicas,
        incarnation: 1,
        backups: Vec::new(),
        splits: Vec::new(),
        dups: Vec::new(),
    })
}

/// Handles `request` and commits its persist at once (a store that never fails).
fn apply(state: &mut MetaState, request: &Request, now_ms: u64) -> Response {
    let step = state.handle(request, now_ms);
    if let Some(data) = step.persist {
        state.commit(data);
    }
    step.reply
}

fn create_request(name: &str, partition_count: i32) -> CreateTableRequest {
    CreateTableRequest {
        table: name.into(),
        partition_count,
        replica_count: 0,
        envs: Vec::new(),
        success_if_exist: false,
    }
}

fn create(state: &mut MetaState, name: &str, partition_count: i32, now_ms: u64) -> TableInfo {
    match apply(
        state,
        &Request::CreateTable(create_request(name, partition_count)),
        now_ms,
    ) {
        Ok(ResponseBody::Table(info)) => info,
        other => panic!("create {name}: {other:?}"),
    }
}

fn error_of(response: Response) -> OpError {
    response.expect_err("expected an error")
}

fn list(state: &mut MetaState, include_dropped: bool, now_ms: u64) -> Vec<TableInfo> {
    match apply(state, &Request::ListTables { include_dropped }, now_ms) {
        Ok(ResponseBody::Tables(tables)) => tables,
        other => panic!("list: {other:?}"),
    }
}

fn beacon_ack(state: &mut MetaState, request: &Request, now_ms: u64) -> BeaconAck {
    match apply(state, request, now_ms) {
        Ok(ResponseBody::BeaconAck(ack)) => ack,
        other => panic!("beacon: {other:?}"),
    }
}

fn hosted(app_id: i32, partition_index: i32) -> HostedReplica {
    HostedReplica {
        gpid: Gpid {
            app_id,
            partition_index,
        },
        shard: 0,
        ballot: 1,
        decree_applied: 0,
        role: ReplicaRole::Primary,
        decree_prepared: 0,
        decree_committed: 0,
    }
}

// Create, list, describe, drop, list with dropped, recall and describe again
// round-trip: ids increase from 1, a dropped table leaves list and route at
// once, and a recall brings back the same app id and configurations.
#[test]
fn ddl_round_trip() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 2, Vec::new()), T0_MS).unwrap();
    let first = create(&mut state, "first", 4, T0_MS);
    let second = create(&mut state, "second", 8, T0_MS);
    assert_eq!((first.app_id, second.app_id), (1, 2));
    assert_eq!(first.replica_count, 3, "0 asks for the default");
    assert_eq!(first.create_time_s, T0_MS / 1000);
    assert_eq!(
        list(&mut state, false, T0_MS),
        vec![first.clone(), second.clone()]
    );

    let describe = Request::DescribeTable {
        table: "second".into(),
    };
    let Ok(ResponseBody::Description(description)) = apply(&mut state, &describe, T0_MS) else {
        panic!("describe failed")
    };
    assert_eq!(description.info, second);
    assert_eq!(description.partitions.len(), 8);
    for (index, partition) in description.partitions.iter().enumerate() {
        assert_eq!(partition.partition_index, index as i32);
        assert_eq!(partition.ballot, 1);
        assert_eq!(partition.primary, node_id(0));
        assert!(partition.secondaries.is_empty());
    }

    let drop = Request::DropTable {
        table: "second".into(),
        reserve_seconds: None,
    };
    assert_eq!(
        apply(&mut state, &drop, T0_MS + 1_000),
        Ok(ResponseBody::Done)
    );
    assert_eq!(list(&mut state, false, T0_MS + 1_000), vec![first.clone()]);
    let dropped = list(&mut state, true, T0_MS + 1_000);
    assert_eq!(dropped.len(), 2);
    assert_eq!(dropped[1].status, TableStatus::Dropped);
    assert_eq!(dropped[1].drop_time_s, T0_MS / 1000 + 1);
    assert_eq!(dropped[1].drop_expire_s, T0_MS / 1000 + 1 + HOLD_SECONDS);
    let route = Request::QueryRoute {
        table: "second".into(),
    };
    assert_eq!(
        error_of(apply(&mut state, &route, T0_MS + 1_000)).code,
        ErrorCode::UnknownTable
    );
    assert_eq!(
        error_of(apply(&mut state, &describe, T0_MS + 1_000)).code,
        ErrorCode::UnknownTable
    );

    let recall = Request::RecallTable {
        app_id: 2,
        new_name: String::new(),
    };
    let Ok(ResponseBody::Table(recalled)) = apply(&mut state, &recall, T0_MS + 2_000) else {
        panic!("recall failed")
    };
    assert_eq!(recalled, second, "recall restores the table as it was");
    let Ok(ResponseBody::Description(again)) = apply(&mut state, &describe, T0_MS + 2_000) else {
        panic!("describe after recall failed")
    };
    assert_eq!(again, description);
}

// Recall under a new name works, and a table dropped again can be recalled
// under the old name once that name is free.
#[test]
fn recall_under_a_new_name() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS).unwrap();
    create(&mut state, "t", 2, T0_MS);
    apply(
        &mut state,
        &Request::DropTable {
            table: "t".into(),
            reserve_seconds: None,
        },
        T0_MS,
    )
    .unwrap();
    create(&mut state, "t", 2, T0_MS);
    let recall = Request::RecallTable {
        app_id: 1,
        new_name: "t_old".into(),
    };
    let Ok(ResponseBody::Table(info)) = apply(&mut state, &recall, T0_MS) else {
        panic!("recall failed")
    };
    assert_eq!((info.app_id, info.name.as_str()), (1, "t_old"));
    let names: Vec<String> = list(&mut state, false, T0_MS)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["t_old".to_owned(), "t".to_owned()]);
}

// Envs given at create time and set later are merged (insert or replace)
// and read back sorted by key; they survive in describe's info.
#[test]
fn envs_round_trip() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS).unwrap();
    let mut request = create_request("t", 1);
    request.envs = vec![("b".into(), "1".into())];
    apply(&mut state, &Request::CreateTable(request), T0_MS).unwrap();
    let set = Request::SetAppEnvs {
        table: "t".into(),
        envs: vec![("a".into(), "x".into()), ("b".into(), "2".into())],
    };
    assert_eq!(apply(&mut state, &set, T0_MS), Ok(ResponseBody::Done));
    let get = Request::GetAppEnvs { table: "t".into() };
    let expected = vec![
        ("a".to_owned(), "x".to_owned()),
        ("b".to_owned(), "2".to_owned()),
    ];
    assert_eq!(
        apply(&mut state, &get, T0_MS),
        Ok(ResponseBody::Pairs(expected.clone()))
    );
    assert_eq!(list(&mut state, false, T0_MS)[0].envs, expected);
}

// 64 partitions over 3 alive nodes of 2 shards each are spread evenly:
// per node and per shard, the largest and smallest counts differ by at most 1,
// and a second table keeps the whole cluster even.
#[test]
fn placement_spreads_evenly() {
    let mut state = new_state();
    for node in 0..3 {
        apply(&mut state, &node_beacon(node, 2, Vec::new()), T0_MS).unwrap();
    }
    for (name, partition_count) in [("a", 64), ("b", 16)] {
        create(&mut state, name, partition_count, T0_MS);
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        let mut per_shard: BTreeMap<(String, i32), usize> = BTreeMap::new();
        for table in state.data().tables.values() {
            for partition in &table.partitions {
                *per_node.entry(partition.primary.node.clone()).or_default() += 1;
                *per_shard
                    .entry((partition.primary.node.clone(), partition.primary.shard))
                    .or_default() += 1;
            }
        }
        assert_eq!(per_node.len(), 3);
        assert_eq!(per_shard.len(), 6);
        let spread =
            |counts: Vec<usize>| counts.iter().max().unwrap() - counts.iter().min().unwrap();
        assert!(
            spread(per_node.values().copied().collect()) <= 1,
            "{per_node:?}"
        );
        assert!(
            spread(per_shard.values().copied().collect()) <= 1,
            "{per_shard:?}"
        );
    }
    // Ties go to the lowest node id and shard: partition 0 of "a" is on node 0, shard 0.
    let first = &state.data().tables[&1].partitions[0].primary;
    assert_eq!((first.node.as_str(), first.shard), (node_id(0).as_str(), 0));
}

// Placement skips dead nodes, and with no alive node a create fails with
// NOT_ENOUGH_NODES and persists nothing.
#[test]
fn placement_uses_alive_nodes_only() {
    let mut state = new_state();
    let step = state.handle(&Request::CreateTable(create_request("t", 4)), T0_MS);
    assert_eq!(
        step.reply.clone().unwrap_err().code,
        ErrorCode::NotEnoughNodes
    );
    assert!(step.persist.is_none());

    apply(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS).unwrap();
    quiet_until(&mut state, T0_MS + NODE_TIMEOUT_MS);
    apply(
        &mut state,
        &node_beacon(1, 1, Vec::new()),
        T0_MS + NODE_TIMEOUT_MS,
    )
    .unwrap();
    // Node 0 is now exactly node_timeout_ms old: dead.
    create(&mut state, "t", 4, T0_MS + NODE_TIMEOUT_MS);
    for partition in &state.data().tables[&1].partitions {
        assert_eq!(partition.primary.node, node_id(1));
    }
    let later = T0_MS + 3 * NODE_TIMEOUT_MS;
    quiet_until(&mut state, later);
    let step = state.handle(&Request::CreateTable(create_request("u", 4)), later);
    assert_eq!(step.reply.unwrap_err().code, ErrorCode::NotEnoughNodes);
    assert!(step.persist.is_none());
    assert_eq!(
        state.data().next_app_id,
        2,
        "a failed create consumes no app id"
    );
}

// Every bad input gets a clear error with the right code, and none of them
// proposes a change.
#[test]
fn validation_errors() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS).unwrap();
    create(&mut state, "taken", 2, T0_MS);
    apply(
        &mut state,
        &Request::DropTable {
            table: "taken".into(),
            reserve_seconds: Some(10),
        },
        T0_MS,
    )
    .unwrap();
    create(&mut state, "taken", 2, T0_MS);
    let with = |change: fn(&mut CreateTableRequest)| {
        let mut request = create_request("fresh", 4);
        change(&mut request);
        Request::CreateTable(request)
    };
    let cases: Vec<(Request, ErrorCode, &str)> = vec![
        (
            with(|r| r.table = String::new()),
            ErrorCode::InvalidArgument,
            "1..=128 bytes",
        ),
        (
            with(|r| r.table = "a b".into()),
            ErrorCode::InvalidArgument,
            "contains ' '",
        ),
        (
            with(|r| r.table = "x".repeat(129)),
            ErrorCode::InvalidArgument,
            "1..=128 bytes",
        ),
        (
            with(|r| r.partition_count = 3),
            ErrorCode::InvalidArgument,
            "power of two",
        ),
        (
            with(|r| r.partition_count = 0),
            ErrorCode::InvalidArgument,
            "power of two",
        ),
        (
            with(|r| r.partition_count = -4),
            ErrorCode::InvalidArgument,
            "partition_count = -4",
        ),
        (
            with(|r| r.partition_count = 131_072),
            ErrorCode::InvalidArgument,
            "power of two",
        ),
        (
            with(|r| r.replica_count = 6),
            ErrorCode::InvalidArgument,
            "replica_count = 6",
        ),
        (
            with(|r| r.replica_count = -1),
            ErrorCode::InvalidArgument,
            "replica_count = -1",
        ),
        (
            with(|r| r.envs = vec![(String::new(), "v".into())]),
            ErrorCode::InvalidArgument,
            "env key",
        ),
        (
            with(|r| r.table = "taken".into()),
            ErrorCode::TableExists,
            "already exists",
        ),
        (
            Request::DropTable {
                table: "nope".into(),
                reserve_seconds: None,
            },
            ErrorCode::UnknownTable,
            "\"nope\"",
        ),
        (
            Request::DescribeTable {
                table: "nope".into(),
            },
            ErrorCode::UnknownTable,
            "does not exist",
        ),
        (
            Request::QueryRoute {
                table: "nope".into(),
            },
            ErrorCode::UnknownTable,
            "does not exist",
        ),
        (
            Request::GetAppEnvs {
                table: "nope".into(),
            },
            ErrorCode::UnknownTable,
            "does not exist",
        ),
        (
            Request::SetAppEnvs {
                table: "nope".into(),
                envs: vec![("k".into(), "v".into())],
            },
            ErrorCode::UnknownTable,
            "does not exist",
        ),
        (
            Request::SetAppEnvs {
                table: "taken".into(),
                envs: Vec::new(),
            },
            ErrorCode::InvalidArgument,
            "at least one",
        ),
        (
            Request::RecallTable {
                app_id: 99,
                new_name: String::new(),
            },
            ErrorCode::UnknownTable,
            "app_id 99",
        ),
        (
            Request::RecallTable {
                app_id: 2,
                new_name: String::new(),
            },
            ErrorCode::InvalidArgument,
            "not dropped",
        ),
        (
            Request::RecallTable {
                app_id: 1,
                new_name: String::new(),
            },
            ErrorCode::TableExists,
            "exists",
        ),
        (
            Request::RecallTable {
                app_id: 1,
                new_name: "bad name".into(),
            },
            ErrorCode::InvalidArgument,
            "contains ' '",
        ),
        (
            Request::Get(Key::new("h", "s")),
            ErrorCode::InvalidArgument,
            "send data requests",
        ),
        (
            Request::Beacon(NodeBeacon::default()),
            ErrorCode::InvalidArgument,
            "node id",
        ),
        (
            Request::Beacon(NodeBeacon {
                node: "n:1".into(),
                ..NodeBeacon::default()
            }),
            ErrorCode::InvalidArgument,
            "shard addresses",
        ),
    ];
    let before = state.data().clone();
    for (request, code, text) in cases {
        let step = state.handle(&request, T0_MS);
        assert!(step.persist.is_none(), "{request:?} proposed a change");
        let error = step.reply.expect_err("expected an error");
        assert_eq!(error.code, code, "{request:?}: {error}");
        assert!(error.message.contains(text), "{request:?}: {error}");
    }
    assert_eq!(state.data(), &before);

    // After the hold, the recall of app 1 fails as expired.
    let recall = Request::RecallTable {
        app_id: 1,
        new_name: "again".into(),
    };
    let error = error_of(apply(&mut state, &recall, T0_MS + 10_000));
    assert_eq!(error.code, ErrorCode::UnknownTable);
    assert!(error.message.contains("no longer be recalled"), "{error}");
}

// success_if_exist answers with the existing table and changes nothing.
#[test]
fn success_if_exist_returns_the_existing_table() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS).unwrap();
    let info = create(&mut state, "t", 2, T0_MS);
    let mut request = create_request("t", 8);
    request.success_if_exist = true;
    let step = state.handle(&Request::CreateTable(request), T0_MS);
    assert!(step.persist.is_none());
    assert_eq!(step.reply, Ok(ResponseBody::Table(info)));
}

// A step whose persist is not committed changes nothing: the reply is
// computed, yet list, route and the next app id are as before.
#[test]
fn uncommitted_step_changes_nothing() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS).unwrap();
    let before = state.data().clone();
    let step = state.handle(&Request::CreateTable(create_request("t", 4)), T0_MS);
    assert!(step.reply.is_ok());
    assert!(step.persist.is_some());
    assert_eq!(state.data(), &before);
    assert!(list(&mut state, true, T0_MS).is_empty());
    assert_eq!(create(&mut state, "t", 4, T0_MS).app_id, 1);
}

// Beacon acks carry the node's assignments; after a drop they stop; after
// the hold the node is told to drop the replicas it reports; once no alive
// node reports them the tick forgets the table, and a later report of a
// forgotten app id is still answered with a drop.
#[test]
fn drop_hold_expiry_and_forgetting() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 2, Vec::new()), T0_MS).unwrap();
    let info = create(&mut state, "t", 4, T0_MS);
    let ack = beacon_ack(&mut state, &node_beacon(0, 2, Vec::new()), T0_MS);
    assert_eq!(ack.assignments.len(), 4);
    assert!(ack.drops.is_empty());
    for (index, assignment) in ack.assignments.iter().enumerate() {
        assert_eq!(assignment.table, "t");
        assert_eq!(assignment.app_id, info.app_id);
        assert_eq!(assignment.partition_index, index as i32);
        assert_eq!(assignment.partition_count, 4);
        assert_eq!(assignment.shard, (index % 2) as i32);
        assert_eq!(assignment.ballot, 1);
    }
    let reported: Vec<HostedReplica> = (0..4).map(|index| hosted(1, index)).collect();

    let drop = Request::DropTable {
        table: "t".into(),
        reserve_seconds: Some(10),
    };
    apply(&mut state, &drop, T0_MS).unwrap();
    let ack = beacon_ack(
        &mut state,
        &node_beacon(0, 2, reported.clone()),
        T0_MS + 1_000,
    );
    assert!(ack.assignments.is_empty(), "a dropped table is not served");
    assert!(ack.drops.is_empty(), "its data is held");
    assert!(state.tick(T0_MS + 1_000).is_none());

    let expired_ms = T0_MS + 10_000;
    let ack = beacon_ack(&mut state, &node_beacon(0, 2, reported.clone()), expired_ms);
    let gpids: Vec<Gpid> = reported.iter().map(|replica| replica.gpid).collect();
    assert_eq!(ack.drops, gpids);
    assert!(
        state.tick(expired_ms).is_none(),
        "an alive node still reports the replicas"
    );

    // The node deleted them and says so: the table is forgotten.
    apply(&mut state, &node_beacon(0, 2, Vec::new()), expired_ms + 500).unwrap();
    let forgotten = state.tick(expired_ms + 500).expect("forget proposal");
    assert!(forgotten.tables.is_empty());
    state.commit(forgotten);
    assert!(list(&mut state, true, expired_ms + 500).is_empty());

    // A node that was away reports the old replicas: still told to drop them.
    let ack = beacon_ack(&mut state, &node_beacon(1, 1, reported), expired_ms + 600);
    assert_eq!(ack.drops, gpids);
    // An app id meta never handed out is left alone.
    let ack = beacon_ack(
        &mut state,
        &node_beacon(1, 1, vec![hosted(77, 0)]),
        expired_ms + 700,
    );
    assert!(ack.drops.is_empty());
}

// A dropped table is forgotten after its hold plus the node timeout even
// while a node still reports its replicas.
#[test]
fn forgetting_has_a_deadline() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS).unwrap();
    create(&mut state, "t", 1, T0_MS);
    apply(
        &mut state,
        &Request::DropTable {
            table: "t".into(),
            reserve_seconds: Some(0),
        },
        T0_MS,
    )
    .unwrap();
    let deadline = T0_MS + NODE_TIMEOUT_MS;
    apply(
        &mut state,
        &node_beacon(0, 1, vec![hosted(1, 0)]),
        deadline - 1,
    )
    .unwrap();
    assert!(state.tick(deadline - 1).is_none());
    assert!(state.tick(deadline).is_some());
}

// Routes name each partition's primary shard address from the registry,
// fall back to the address recorded at placement while the node is
// unknown (after a meta restart), and follow a node's new addresses.
#[test]
fn route_answers_primary_shard_addresses() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 2, Vec::new()), T0_MS).unwrap();
    apply(&mut state, &node_beacon(1, 2, Vec::new()), T0_MS).unwrap();
    create(&mut state, "t", 4, T0_MS);
    let route_request = Request::QueryRoute { table: "t".into() };
    let Ok(ResponseBody::Route(route)) = apply(&mut state, &route_request, T0_MS) else {
        panic!("route failed")
    };
    assert_eq!(
        (route.table.as_str(), route.app_id, route.partition_count),
        ("t", 1, 4)
    );
    let addresses: Vec<&str> = route
        .partitions
        .iter()
        .map(|p| p.address.as_str())
        .collect();
    // Round robin over nodes by load, shards by load within a node.
    assert_eq!(
        addresses,
        vec![
            "127.0.0.1:34800",
            "127.0.0.1:34810",
            "127.0.0.1:34801",
            "127.0.0.1:34811"
        ]
    );
    assert!(route.partitions.iter().all(|p| p.ballot == 1));

    let mut restarted = MetaState::new(settings(), state.data().clone());
    let Ok(ResponseBody::Route(after_restart)) = apply(&mut restarted, &route_request, T0_MS)
    else {
        panic!("route failed")
    };
    assert_eq!(
        after_restart, route,
        "last known addresses survive a restart"
    );

    let moved = Request::Beacon(NodeBeacon {
        node: node_id(0),
        shard_addresses: vec![node_id(0), "127.0.0.1:40000".into()],
        replicas: Vec::new(),
        incarnation: 1,
        backups: Vec::new(),
        splits: Vec::new(),
        dups: Vec::new(),
    });
    apply(&mut restarted, &moved, T0_MS).unwrap();
    let Ok(ResponseBody::Route(moved_route)) = apply(&mut restarted, &route_request, T0_MS) else {
        panic!("route failed")
    };
    assert_eq!(moved_route.partitions[2].address, "127.0.0.1:40000");
}

// A node is alive while its last beacon is younger than node_timeout_ms;
// list_nodes and cluster_info report it so.
#[test]
fn node_liveness_by_timeout() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 2, Vec::new()), T0_MS).unwrap();
    quiet_until(&mut state, T0_MS + 2_000);
    apply(&mut state, &node_beacon(1, 1, Vec::new()), T0_MS + 2_000).unwrap();
    create(&mut state, "t", 4, T0_MS + 2_000);
    quiet_until(&mut state, T0_MS + NODE_TIMEOUT_MS - 1);
    let nodes = |state: &mut MetaState, now_ms| match apply(state, &Request::ListNodes, now_ms) {
        Ok(ResponseBody::Nodes(nodes)) => nodes,
        other => panic!("{other:?}"),
    };
    let listed = nodes(&mut state, T0_MS + NODE_TIMEOUT_MS - 1);
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|node| node.alive));
    assert_eq!(listed[0].shard_addresses.len(), 2);
    assert_eq!(listed[0].replica_count + listed[1].replica_count, 4);
    assert_eq!(listed[1].last_beacon_ms_ago, NODE_TIMEOUT_MS - 1 - 2_000);

    let listed = nodes(&mut state, T0_MS + NODE_TIMEOUT_MS);
    assert!(!listed[0].alive);
    assert!(listed[1].alive);
    let Ok(ResponseBody::Pairs(info)) =
        apply(&mut state, &Request::ClusterInfo, T0_MS + NODE_TIMEOUT_MS)
    else {
        panic!("cluster_info failed")
    };
    let value = |key: &str| {
        info.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(value("nodes_alive"), "1");
    assert_eq!(value("nodes_total"), "2");
    assert_eq!(value("tables"), "1");
    assert_eq!(value("partitions"), "4");
    assert_eq!(value("meta_address"), "127.0.0.1:34601");
    assert_eq!(value("hold_seconds"), HOLD_SECONDS.to_string());
    assert_eq!(value("node_timeout_ms"), NODE_TIMEOUT_MS.to_string());
}

// Commits must come in order: a stale persist (not the next version) is
// refused by assertion, so a lost or reordered store write cannot be applied.
#[test]
#[should_panic(expected = "meta commit out of order")]
fn stale_commit_is_refused() {
    let mut state = new_state();
    apply(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS).unwrap();
    let first = state.handle(&Request::CreateTable(create_request("a", 1)), T0_MS);
    let second = state.handle(&Request::CreateTable(create_request("b", 1)), T0_MS);
    state.commit(first.persist.unwrap());
    state.commit(second.persist.unwrap());
}

// ---- Replication (meta config `replication = true`) ----

const GRACE_MS: u64 = 800;
const LEASE_MS: u64 = 600;

fn replicated_state() -> MetaState {
    let settings = MetaSettings {
        replication: Some(MetaReplication {
            beacon_interval_ms: 100,
            lease_ms: LEASE_MS,
            grace_ms: GRACE_MS,
            replica_count_min_alive: 2,
            alive_percent_min: 50,
            ..MetaReplication::default()
        }),
        ..settings()
    };
    MetaState::new(settings, MetaData::default())
}

/// A replica report of partition `app_id`.0 as the core would send it.
fn report(app_id: i32, role: ReplicaRole, prepared: i64, committed: i64) -> HostedReplica {
    HostedReplica {
        role,
        decree_prepared: prepared,
        decree_committed: committed,
        decree_applied: committed,
        ..hosted(app_id, 0)
    }
}

fn describe(state: &mut MetaState, table: &str, now_ms: u64) -> Vec<PartitionConfig> {
    match apply(
        state,
        &Request::DescribeTable {
            table: table.into(),
        },
        now_ms,
    ) {
        Ok(ResponseBody::Description(description)) => description.partitions,
        other => panic!("describe: {other:?}"),
    }
}

fn route(state: &mut MetaState, table: &str, now_ms: u64) -> Route {
    match apply(
        state,
        &Request::QueryRoute {
            table: table.into(),
        },
        now_ms,
    ) {
        Ok(ResponseBody::Route(route)) => route,
        other => panic!("route: {other:?}"),
    }
}

/// Three nodes with one shard each and a one-partition, three-replica table
/// "t" (app id 1): primary node 0, secondaries nodes 1 and 2.
fn three_replica_cluster() -> MetaState {
    let mut state = replicated_state();
    for node in 0..3 {
        apply(&mut state, &node_beacon(node, 1, Vec::new()), T0_MS).unwrap();
    }
    create(&mut state, "t", 1, T0_MS);
    let partition = &state.data().tables[&1].partitions[0];
    assert_eq!(partition.primary.node, node_id(0));
    assert_eq!(partition.secondaries.len(), 2);
    state
}

// With replication, every partition gets a primary and replica_count - 1
// secondaries on distinct nodes, spread evenly over nodes and shards, and
// describe_table and the beacon acks carry the whole configuration.
#[test]
fn replicated_placement_uses_distinct_nodes() {
    let mut state = replicated_state();
    for node in 0..4 {
        apply(&mut state, &node_beacon(node, 2, Vec::new()), T0_MS).unwrap();
    }
    create(&mut state, "t", 8, T0_MS);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_shard: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for partition in &state.data().tables[&1].partitions {
        assert_eq!(partition.ballot, 1);
        let mut nodes: Vec<&str> = std::iter::once(&partition.primary)
            .chain(&partition.secondaries)
            .map(|place| place.node.as_str())
            .collect();
        assert_eq!(nodes.len(), 3);
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), 3, "replicas on distinct nodes");
        for place in std::iter::once(&partition.primary).chain(&partition.secondaries) {
            *per_node.entry(place.node.clone()).or_default() += 1;
            *per_shard
                .entry((place.node.clone(), place.shard))
                .or_default() += 1;
        }
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![6; 4]);
    assert_eq!(per_shard.values().copied().collect::<Vec<_>>(), vec![3; 8]);

    let described = describe(&mut state, "t", T0_MS);
    let stored = &state.data().tables[&1].partitions[0];
    assert_eq!(described[0].primary, stored.primary.node);
    assert_eq!(
        described[0].secondaries,
        stored
            .secondaries
            .iter()
            .map(|place| place.node.clone())
            .collect::<Vec<_>>()
    );
    let ack = beacon_ack(&mut state, &node_beacon(0, 2, Vec::new()), T0_MS);
    assert_eq!(ack.assignments.len(), 6);
    for assignment in &ack.assignments {
        let partition = &described[assignment.partition_index as usize];
        assert_eq!(assignment.primary, partition.primary);
        assert_eq!(assignment.secondaries, partition.secondaries);
    }
}

// With fewer alive nodes than the replica count, placement puts what it can
// (and describe_table shows it); below min(replica count,
// replica_count_min_alive) it refuses NOT_ENOUGH_NODES and persists nothing.
#[test]
fn replicated_placement_with_few_nodes() {
    let mut state = replicated_state();
    apply(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS).unwrap();
    let step = state.handle(&Request::CreateTable(create_request("t", 2)), T0_MS);
    assert_eq!(error_of(step.reply).code, ErrorCode::NotEnoughNodes);
    assert!(step.persist.is_none());
    let single = CreateTableRequest {
        replica_count: 1,
        ..create_request("single", 2)
    };
    apply(&mut state, &Request::CreateTable(single), T0_MS).unwrap();

    apply(&mut state, &node_beacon(1, 1, Vec::new()), T0_MS).unwrap();
    create(&mut state, "t", 2, T0_MS);
    for partition in describe(&mut state, "t", T0_MS) {
        assert_eq!(partition.secondaries.len(), 1);
        assert_ne!(partition.primary, partition.secondaries[0]);
    }
}

// A dead primary is replaced by the secondary that prepared the most, under
// ballot + 1; the new configuration shows in no route, describe or ack
// until the tick's data is committed (persist before effect).
#[test]
fn dead_primary_promotes_most_prepared_secondary() {
    let mut state = three_replica_cluster();
    let beacons = |state: &mut MetaState, now_ms| {
        apply(
            state,
            &node_beacon(1, 1, vec![report(1, ReplicaRole::Secondary, 10, 9)]),
            now_ms,
        )
        .unwrap();
        apply(
            state,
            &node_beacon(2, 1, vec![report(1, ReplicaRole::Secondary, 12, 5)]),
            now_ms,
        )
        .unwrap();
    };
    running_until(&mut state, T0_MS + GRACE_MS - 1, beacons);
    assert_eq!(
        state.tick(T0_MS + GRACE_MS - 1),
        None,
        "alive within the grace"
    );
    beacons(&mut state, T0_MS + GRACE_MS);
    let next = state.tick(T0_MS + GRACE_MS).expect("the primary is dead");
    // Not yet committed: everything still shows ballot 1 with node 0 primary.
    assert_eq!(describe(&mut state, "t", T0_MS + GRACE_MS)[0].ballot, 1);
    assert_eq!(
        route(&mut state, "t", T0_MS + GRACE_MS).partitions[0].address,
        "127.0.0.1:34800"
    );
    let ack = beacon_ack(&mut state, &node_beacon(2, 1, Vec::new()), T0_MS + GRACE_MS);
    assert_eq!(ack.assignments[0].ballot, 1);

    state.commit(next);
    let described = describe(&mut state, "t", T0_MS + GRACE_MS);
    assert_eq!(described[0].ballot, 2);
    assert_eq!(described[0].primary, node_id(2));
    assert_eq!(described[0].secondaries, vec![node_id(1)]);
    assert_eq!(
        route(&mut state, "t", T0_MS + GRACE_MS).partitions[0].address,
        "127.0.0.1:34820"
    );
    let ack = beacon_ack(&mut state, &node_beacon(1, 1, Vec::new()), T0_MS + GRACE_MS);
    assert_eq!(ack.assignments[0].ballot, 2);
    assert_eq!(ack.assignments[0].primary, node_id(2));
    // Nothing further changes while the survivors keep beaconing.
    assert_eq!(state.tick(T0_MS + GRACE_MS + 1), None);
}

// A dead secondary is removed under ballot + 1; the primary stays, and a
// member that never beaconed since meta started is dead only a grace after
// meta's start.
#[test]
fn dead_secondary_is_removed() {
    let mut state = three_replica_cluster();
    let data = state.data().clone();
    let mut restarted = MetaState::new(state.settings().clone(), data);
    let later_ms = T0_MS + 10_000;
    for node in 0..2 {
        apply(&mut restarted, &node_beacon(node, 1, Vec::new()), later_ms).unwrap();
    }
    beaconing_until(
        &mut restarted,
        &[(0, Vec::new()), (1, Vec::new())],
        later_ms + GRACE_MS - 1,
    );
    assert_eq!(restarted.tick(later_ms + GRACE_MS - 1), None);
    for node in 0..2 {
        apply(
            &mut restarted,
            &node_beacon(node, 1, Vec::new()),
            later_ms + GRACE_MS,
        )
        .unwrap();
    }
    let next = restarted.tick(later_ms + GRACE_MS).expect("node 2 is dead");
    restarted.commit(next);
    let partition = &restarted.data().tables[&1].partitions[0];
    assert_eq!(partition.ballot, 2);
    assert_eq!(partition.primary.node, node_id(0));
    assert_eq!(partition.secondaries.len(), 1);
    assert_eq!(partition.secondaries[0].node, node_id(1));

    // The original state sees it the same way once node 2 goes silent.
    beaconing_until(
        &mut state,
        &[(0, Vec::new()), (1, Vec::new())],
        T0_MS + GRACE_MS,
    );
    for node in 0..2 {
        apply(
            &mut state,
            &node_beacon(node, 1, Vec::new()),
            T0_MS + GRACE_MS,
        )
        .unwrap();
    }
    let next = state.tick(T0_MS + GRACE_MS).expect("node 2 is dead");
    assert_eq!(next.tables[&1].partitions[0], *partition);
}

// RemoveSecondary at the current ballot removes the secondary under ballot
// + 1; a stale ballot gets STALE_BALLOT, a non-secondary INVALID_ARGUMENT,
// an unknown partition UNKNOWN_PARTITION, all persisting nothing.
#[test]
fn remove_secondary_requests() {
    let mut state = three_replica_cluster();
    let remove = |ballot: i64, node: String, partition_index: i32| Request::RemoveSecondary {
        gpid: Gpid {
            app_id: 1,
            partition_index,
        },
        ballot,
        node,
    };
    // A meta that started less than a lease ago removes no one: it cannot
    // know whether the member handed off a primary role just before.
    let step = state.handle(&remove(1, node_id(1), 0), T0_MS);
    assert_eq!(error_of(step.reply).code, ErrorCode::Busy);
    let nodes: Vec<(usize, Vec<HostedReplica>)> = (0..3).map(|n| (n, Vec::new())).collect();
    beaconing_until(&mut state, &nodes, T0_MS + 800);
    for (request, code) in [
        (remove(0, node_id(1), 0), ErrorCode::StaleBallot),
        (remove(2, node_id(1), 0), ErrorCode::StaleBallot),
        (remove(1, node_id(0), 0), ErrorCode::InvalidArgument),
        (remove(1, node_id(7), 0), ErrorCode::InvalidArgument),
        (remove(1, node_id(1), 1), ErrorCode::UnknownPartition),
    ] {
        let step = state.handle(&request, T0_MS + 800);
        assert!(step.persist.is_none(), "{request:?}");
        assert_eq!(error_of(step.reply).code, code, "{request:?}");
    }
    assert_eq!(
        apply(&mut state, &remove(1, node_id(1), 0), T0_MS + 800),
        Ok(ResponseBody::Done)
    );
    let partition = &state.data().tables[&1].partitions[0];
    assert_eq!(partition.ballot, 2);
    assert_eq!(partition.primary.node, node_id(0));
    assert_eq!(partition.secondaries.len(), 1);
    assert_eq!(partition.secondaries[0].node, node_id(2));
    // The same request again is stale now.
    let error = error_of(apply(&mut state, &remove(1, node_id(1), 0), T0_MS + 800));
    assert_eq!(error.code, ErrorCode::StaleBallot);
    assert!(error.message.contains("ballot 2"), "{}", error.message);
}

/// Applies a tick's change at once (a store that never fails).
fn tick_commit(state: &mut MetaState, now_ms: u64) -> bool {
    match state.tick(now_ms) {
        Some(data) => {
            state.commit(data);
            true
        }
        None => false,
    }
}

// The guardian: once a dead secondary is removed, the next tick adds a
// learner on the least-loaded alive node (ballot + 1, persisted before it
// shows), which gets an assignment; upgrade_learner from the primary's
// ballot makes it a secondary under ballot + 1.
#[test]
fn guardian_adds_learner_and_upgrade_promotes_it() {
    let mut state = three_replica_cluster();
    // Nodes 3 (two shards) and 4 join; node 4 already holds a replica of
    // another table, so node 3 is the least loaded.
    let alive = |state: &mut MetaState, now_ms| {
        for node in [0, 1, 3, 4] {
            let shards = if node == 3 { 2 } else { 1 };
            apply(state, &node_beacon(node, shards, Vec::new()), now_ms).unwrap();
        }
    };
    alive(&mut state, T0_MS);
    let single = CreateTableRequest {
        replica_count: 1,
        ..create_request("one", 1)
    };
    apply(&mut state, &Request::CreateTable(single), T0_MS).unwrap();
    assert_eq!(
        state.data().tables[&2].partitions[0].primary.node,
        node_id(3),
        "the new table lands on an empty node"
    );
    apply(&mut state, &node_beacon(4, 1, Vec::new()), T0_MS).unwrap();
    // Full partitions: the guardian does nothing.
    assert_eq!(state.tick(T0_MS + 1), None);

    running_until(&mut state, T0_MS + GRACE_MS, alive);
    alive(&mut state, T0_MS + GRACE_MS);
    assert!(tick_commit(&mut state, T0_MS + GRACE_MS), "node 2 is dead");
    let partition = state.data().tables[&1].partitions[0].clone();
    assert_eq!(partition.ballot, 2);
    assert!(partition.learners.is_empty());
    // Node 3 holds one replica (table "one"), node 4 none: node 4 it is.
    let next = state.tick(T0_MS + GRACE_MS + 1).expect("one replica short");
    assert_eq!(
        state.data().tables[&1].partitions[0].ballot,
        2,
        "not in effect before commit"
    );
    state.commit(next);
    let partition = state.data().tables[&1].partitions[0].clone();
    assert_eq!(partition.ballot, 3);
    assert_eq!(partition.secondaries.len(), 1);
    assert_eq!(
        partition.learners,
        vec![ReplicaPlace {
            node: node_id(4),
            shard: 0,
            address: "127.0.0.1:34840".into(),
        }]
    );
    let ack = beacon_ack(&mut state, &node_beacon(4, 1, Vec::new()), T0_MS + GRACE_MS);
    assert_eq!(ack.assignments.len(), 1);
    assert_eq!(ack.assignments[0].ballot, 3);
    assert_eq!(ack.assignments[0].primary, node_id(0));
    assert!(!ack.assignments[0].secondaries.contains(&node_id(4)));
    // Three replicas again: nothing more to add.
    assert_eq!(state.tick(T0_MS + GRACE_MS + 2), None);

    let gpid = Gpid {
        app_id: 1,
        partition_index: 0,
    };
    for (ballot, node, code) in [
        (2, node_id(4), ErrorCode::StaleBallot),
        (3, node_id(1), ErrorCode::InvalidArgument),
        (3, node_id(9), ErrorCode::InvalidArgument),
    ] {
        let step = state.upgrade_learner(gpid, ballot, &node);
        assert!(step.persist.is_none());
        assert_eq!(error_of(step.reply).code, code, "{ballot} {node}");
    }
    let unknown = Gpid {
        app_id: 1,
        partition_index: 5,
    };
    assert_eq!(
        error_of(state.upgrade_learner(unknown, 3, &node_id(4)).reply).code,
        ErrorCode::UnknownPartition
    );
    let step = state.upgrade_learner(gpid, 3, &node_id(4));
    assert_eq!(step.reply, Ok(ResponseBody::Done));
    state.commit(step.persist.expect("persisted"));
    let partition = &state.data().tables[&1].partitions[0];
    assert_eq!(partition.ballot, 4);
    assert!(partition.learners.is_empty());
    let secondaries: Vec<&str> = partition
        .secondaries
        .iter()
        .map(|place| place.node.as_str())
        .collect();
    assert_eq!(secondaries, vec![node_id(1), node_id(4)]);
    assert_eq!(partition.secondaries[1].address, "127.0.0.1:34840");
}

// A dead learner is removed like a dead secondary; with replication off
// the guardian never runs and upgrade_learner is refused.
#[test]
fn dead_learner_removed_switch_off_refuses_upgrade() {
    let mut state = three_replica_cluster();
    running_until(&mut state, T0_MS + GRACE_MS, |state, at_ms| {
        for node in [0, 1, 3] {
            apply(state, &node_beacon(node, 1, Vec::new()), at_ms).unwrap();
        }
    });
    for node in [0, 1, 3] {
        apply(
            &mut state,
            &node_beacon(node, 1, Vec::new()),
            T0_MS + GRACE_MS,
        )
        .unwrap();
    }
    assert!(tick_commit(&mut state, T0_MS + GRACE_MS));
    assert!(tick_commit(&mut state, T0_MS + GRACE_MS + 1));
    assert_eq!(
        state.data().tables[&1].partitions[0].learners[0].node,
        node_id(3)
    );
    running_until(&mut state, T0_MS + 2 * GRACE_MS, |state, at_ms| {
        for node in [0, 1] {
            apply(state, &node_beacon(node, 1, Vec::new()), at_ms).unwrap();
        }
    });
    for node in [0, 1] {
        apply(
            &mut state,
            &node_beacon(node, 1, Vec::new()),
            T0_MS + 2 * GRACE_MS,
        )
        .unwrap();
    }
    assert!(tick_commit(&mut state, T0_MS + 2 * GRACE_MS));
    let partition = &state.data().tables[&1].partitions[0];
    assert_eq!(partition.ballot, 4);
    assert!(partition.learners.is_empty());
    // No alive node is free now: nothing more.
    assert_eq!(state.tick(T0_MS + 2 * GRACE_MS + 1), None);

    let mut off = new_state();
    apply(&mut off, &node_beacon(0, 1, Vec::new()), T0_MS).unwrap();
    create(&mut off, "t", 1, T0_MS);
    apply(&mut off, &node_beacon(1, 1, Vec::new()), T0_MS).unwrap();
    assert_eq!(off.tick(T0_MS + 1), None);
    let gpid = Gpid {
        app_id: 1,
        partition_index: 0,
    };
    assert_eq!(
        error_of(off.upgrade_learner(gpid, 1, &node_id(1)).reply).code,
        ErrorCode::InvalidArgument
    );
}

// Stored partitions without learners serialize as before (no `learners`
// key) and old JSON without the key loads with none.
#[test]
fn learners_are_optional_in_stored_json() {
    let partition = StoredPartition {
        ballot: 1,
        primary: ReplicaPlace::default(),
        secondaries: Vec::new(),
        learners: Vec::new(),
        split_child: false,
    };
    let json = serde_json::to_string(&partition).unwrap();
    assert!(!json.contains("learners"), "{json}");
    let loaded: StoredPartition = serde_json::from_str(&json).unwrap();
    assert_eq!(loaded, partition);
}

// Every beacon ack grants the configured lease with replication on.
#[test]
fn beacon_acks_carry_the_lease() {
    let mut state = replicated_state();
    let ack = beacon_ack(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS);
    assert_eq!(ack.lease_ms, LEASE_MS);
    let Ok(ResponseBody::Pairs(info)) = apply(&mut state, &Request::ClusterInfo, T0_MS) else {
        panic!("cluster_info failed")
    };
    assert!(info.contains(&("replication".to_owned(), "true".to_owned())));
    assert!(info.contains(&("grace_ms".to_owned(), GRACE_MS.to_string())));
}

// With the switch off, meta behaves as before replication: primaries only
// even for three replicas, lease 0, no secondaries in acks, no
// reconfiguration of a dead primary, RemoveSecondary refused, liveness by
// node_timeout_ms, and cluster_info without replication keys.
#[test]
fn switch_off_keeps_todays_behaviour() {
    let mut state = new_state();
    for node in 0..3 {
        apply(&mut state, &node_beacon(node, 1, Vec::new()), T0_MS).unwrap();
    }
    create(&mut state, "t", 4, T0_MS);
    for partition in &state.data().tables[&1].partitions {
        assert_eq!(partition.ballot, 1);
        assert!(partition.secondaries.is_empty());
    }
    let ack = beacon_ack(&mut state, &node_beacon(0, 1, Vec::new()), T0_MS);
    assert_eq!(ack.lease_ms, 0);
    assert!(ack
        .assignments
        .iter()
        .all(|assignment| assignment.secondaries.is_empty() && assignment.primary == node_id(0)));
    let before = state.data().clone();
    assert_eq!(state.tick(T0_MS + NODE_TIMEOUT_MS * 10), None);
    assert_eq!(state.data(), &before);
    let step = state.handle(
        &Request::RemoveSecondary {
            gpid: Gpid {
                app_id: 1,
                partition_index: 0,
            },
            ballot: 1,
            node: node_id(1),
        },
        T0_MS,
    );
    assert!(step.persist.is_none());
    assert_eq!(error_of(step.reply).code, ErrorCode::InvalidArgument);
    let Ok(ResponseBody::Pairs(info)) = apply(&mut state, &Request::ClusterInfo, T0_MS) else {
        panic!("cluster_info failed")
    };
    assert_eq!(info.len(), 14);
    assert!(info.iter().all(|(key, _)| key != "replication"));
    // Liveness still follows node_timeout_ms, not the grace.
    let Ok(ResponseBody::Nodes(nodes)) = apply(&mut state, &Request::ListNodes, T0_MS + GRACE_MS)
    else {
        panic!("list_nodes failed")
    };
    assert!(nodes.iter().all(|node| node.alive));
}

// A persisted configuration with a lower ballot than the committed one is
// refused by assertion (ballot-monotonic).
#[test]
#[should_panic(expected = "ballot-monotonic")]
fn lower_ballot_commit_is_refused() {
    let mut state = three_replica_cluster();
    let mut next = state.data().clone();
    next.version += 1;
    next.tables.get_mut(&1).unwrap().partitions[0].ballot = 0;
    state.commit(next);
}

/// Node `node`'s beacon with incarnation `incarnation` reporting `replicas`.
fn beacon_of(node: usize, incarnation: u64, replicas: Vec<HostedReplica>) -> Request {
    let Request::Beacon(mut beacon) = node_beacon(node, 1, replicas) else {
        unreachable!("node_beacon builds a beacon")
    };
    beacon.incarnation = incarnation;
    Request::Beacon(beacon)
}

// A replica that lost its state comes back only through a new ballot: a new
// incarnation in a node's beacon, or — after a meta restart, when meta knows
// no incarnation — a member reporting itself inactive at a ballot not below
// the partition's, makes meta persist ballot + 1 with that node a learner
// (a restarted primary is replaced first). An inactive report at an older
// ballot (the replica has not heard of the configuration yet) changes
// nothing.
#[test]
fn restarted_members_get_a_new_ballot() {
    let mut state = three_replica_cluster();
    let secondary = state.data().tables[&1].partitions[0].secondaries[0]
        .node
        .clone();
    let index = (0..3).find(|i| node_id(*i) == secondary).unwrap();
    // Same incarnation, inactive at an older ballot: nothing.
    let stale = HostedReplica {
        ballot: 0,
        ..report(1, ReplicaRole::Inactive, 0, 0)
    };
    let step = state.handle(&beacon_of(index, 1, vec![stale]), T0_MS + 10);
    assert_eq!(step.persist, None);
    // A new incarnation: the secondary becomes a learner under ballot 2.
    let step = state.handle(&beacon_of(index, 2, Vec::new()), T0_MS + 20);
    let next = step.persist.expect("a restart reconfigures");
    let partition = &next.tables[&1].partitions[0];
    assert_eq!(partition.ballot, 2);
    assert!(partition
        .learners
        .iter()
        .any(|place| place.node == secondary));
    assert!(partition
        .secondaries
        .iter()
        .all(|place| place.node != secondary));
    state.commit(next);

    // Meta restarts (no incarnations known); the primary reports itself
    // inactive at the partition's ballot: it lost its state.
    let data = state.data().clone();
    let mut restarted = MetaState::new(state.settings().clone(), data);
    let lost = HostedReplica {
        ballot: 2,
        ..report(1, ReplicaRole::Inactive, 0, 0)
    };
    let step = restarted.handle(&beacon_of(0, 7, vec![lost]), T0_MS + 30);
    let next = step
        .persist
        .expect("an inactive member at the current ballot");
    let partition = &next.tables[&1].partitions[0];
    assert_eq!(partition.ballot, 3);
    assert_ne!(partition.primary.node, node_id(0));
    assert!(partition
        .learners
        .iter()
        .any(|place| place.node == node_id(0)));
}

// A beacon of an earlier incarnation of a node that meta hears after one
// of its restart (it was in flight when the old process died, or took
// another, slower connection) is stale: it is not another restart, changes
// nothing and gets an error (**restart-once-per-incarnation**). Meta used to
// take any change of incarnation for a restart, so the late beacon
// reconfigured the partition a second time (the simulator found it: a
// reinstated sole primary was reinstated again while serving).
#[test]
fn a_late_beacon_of_an_earlier_incarnation_is_no_restart() {
    let mut state = three_replica_cluster();
    let secondary = state.data().tables[&1].partitions[0].secondaries[0]
        .node
        .clone();
    let index = (0..3).find(|i| node_id(*i) == secondary).unwrap();
    let step = state.handle(&beacon_of(index, 2, Vec::new()), T0_MS + 20);
    state.commit(step.persist.expect("a restart reconfigures"));
    let version = state.data().version;
    let late = state.handle(&beacon_of(index, 1, Vec::new()), T0_MS + 30);
    assert_eq!(late.persist, None, "a stale beacon reconfigures nothing");
    let error = error_of(late.reply);
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(error.message.contains("incarnation"), "{}", error.message);
    // The current incarnation goes on as before, without another restart.
    let step = state.handle(&beacon_of(index, 2, Vec::new()), T0_MS + 40);
    assert_eq!(step.persist, None);
    assert_eq!(state.data().version, version);
    // A node silent past the grace that comes back with a lower
    // incarnation (its clock stepped back, its data directory was new) is
    // a restart after all: a beacon is never that late.
    let mut at_ms = T0_MS + 40;
    while at_ms < T0_MS + 2_000 {
        at_ms += TICK_MS;
        if let Some(next) = state.tick(at_ms) {
            state.commit(next);
        }
    }
    let step = state.handle(&beacon_of(index, 1, Vec::new()), at_ms + TICK_MS);
    step.reply
        .expect("a long-silent node with a lower incarnation is heard");
}

/// Meta's tick period with replication (half the beacon interval).
const TICK_MS: u64 = 50;

/// Meta keeps running until `to_ms`: it ticks every [`TICK_MS`] after its
/// last input, and nothing changes meanwhile. (A gap between inputs longer
/// than a beacon interval is meta's own pause, which counts as no node's
/// silence: tests that let time pass must let meta run through it.)
fn quiet_until(state: &mut MetaState, to_ms: u64) {
    let mut at_ms = state.last_input_ms.expect("meta has run") + TICK_MS;
    while at_ms < to_ms {
        assert_eq!(state.tick(at_ms), None, "a change at {at_ms}");
        at_ms += TICK_MS;
    }
}

/// Meta runs from its last input until `to_ms` while `nodes` beacon every
/// 100 ms with `replicas` (the same reports each time); no tick changes
/// anything.
fn beaconing_until(state: &mut MetaState, nodes: &[(usize, Vec<HostedReplica>)], to_ms: u64) {
    let beacons = |state: &mut MetaState, at_ms| {
        for (node, replicas) in nodes {
            apply(state, &node_beacon(*node, 1, replicas.clone()), at_ms).unwrap();
        }
    };
    run_until(state, to_ms, T0_MS, beacons);
}

/// Meta runs from its last input until `to_ms`, `beacons` sent at its
/// first tick and every 100 ms after; no tick changes anything.
fn running_until(state: &mut MetaState, to_ms: u64, beacons: impl FnMut(&mut MetaState, u64)) {
    let first_ms = state.last_input_ms.expect("meta has run") + TICK_MS;
    run_until(state, to_ms, first_ms, beacons);
}

/// Meta ticks every [`TICK_MS`] from its last input until `to_ms`;
/// `beacons` are sent at every tick a multiple of 100 ms from `phase_ms`.
fn run_until(
    state: &mut MetaState,
    to_ms: u64,
    phase_ms: u64,
    mut beacons: impl FnMut(&mut MetaState, u64),
) {
    let mut at_ms = state.last_input_ms.expect("meta has run") + TICK_MS;
    while at_ms < to_ms {
        if (at_ms - phase_ms).is_multiple_of(100) {
            beacons(state, at_ms);
        }
        assert_eq!(state.tick(at_ms), None, "a change at {at_ms}");
        at_ms += TICK_MS;
    }
}

// A primary meta replaced while its node was silent hears of it in the
// node's next beacon ack (**replica-told-it-left**). On four nodes, node 0
// (primary of the only partition) falls silent past the grace: node 1 or 2
// becomes primary and the guardian adds node 3. When node 0 beacons again,
// still reporting itself primary at ballot 1, its ack carries the current
// configuration of that partition — which names another primary — on the
// shard it reported, so the node demotes the replica and no lease keeps it
// serving. (Meta used to list only what is placed on the node, so nothing
// ever told the old primary; on three nodes the window was a beacon
// interval, on four it did not end.)
#[test]
fn replaced_primary_is_told_its_current_configuration() {
    let mut state = replicated_state();
    for node in 0..4 {
        apply(&mut state, &node_beacon(node, 1, Vec::new()), T0_MS).unwrap();
    }
    create(&mut state, "t", 1, T0_MS);
    let partition = state.data().tables[&1].partitions[0].clone();
    assert_eq!(partition.primary.node, node_id(0));
    let others: Vec<usize> = (1..4).collect();
    let survivors: Vec<(usize, Vec<HostedReplica>)> =
        others.iter().map(|node| (*node, Vec::new())).collect();
    beaconing_until(&mut state, &survivors, T0_MS + GRACE_MS);
    for node in &others {
        apply(
            &mut state,
            &node_beacon(*node, 1, Vec::new()),
            T0_MS + GRACE_MS,
        )
        .unwrap();
    }
    assert!(tick_commit(&mut state, T0_MS + GRACE_MS), "node 0 is dead");
    assert!(
        tick_commit(&mut state, T0_MS + GRACE_MS + TICK_MS),
        "a learner"
    );
    let partition = state.data().tables[&1].partitions[0].clone();
    assert_eq!(partition.ballot, 3);
    assert_ne!(partition.primary.node, node_id(0));
    assert!(partition.places().all(|place| place.node != node_id(0)));

    let stale = HostedReplica {
        shard: 0,
        ..report(1, ReplicaRole::Primary, 4, 4)
    };
    let ack = beacon_ack(
        &mut state,
        &node_beacon(0, 1, vec![stale]),
        T0_MS + GRACE_MS + 2 * TICK_MS,
    );
    assert_eq!(ack.assignments.len(), 1, "{ack:?}");
    let told = &ack.assignments[0];
    assert_eq!((told.app_id, told.partition_index), (1, 0));
    assert_eq!(told.ballot, 3);
    assert_eq!(told.primary, partition.primary.node);
    assert_eq!(told.shard, 0, "on the shard the node reported");
    assert!(!told.secondaries.contains(&node_id(0)));
    assert!(!told.learners.contains(&node_id(0)));
    // A node that reports nothing of the partition hears nothing of it.
    let ack = beacon_ack(
        &mut state,
        &node_beacon(0, 1, Vec::new()),
        T0_MS + GRACE_MS + 2 * TICK_MS,
    );
    assert!(ack.assignments.is_empty());
}

// The ack of a beacon that makes meta reconfigure (a restart) describes the
// configuration being persisted, not the one it replaces
// (**ack-from-persisted**): the restarted primary's ack names it a learner
// under ballot 2, never primary at ballot 1 — a lease taken from the old
// assignment could have made it serve beside the new primary.
#[test]
fn ack_of_a_reconfiguring_beacon_describes_the_new_state() {
    let mut state = three_replica_cluster();
    let step = state.handle(&beacon_of(0, 2, Vec::new()), T0_MS + 10);
    let next = step.persist.clone().expect("a restart reconfigures");
    let Ok(ResponseBody::BeaconAck(ack)) = &step.reply else {
        panic!("{:?}", step.reply)
    };
    assert_eq!(ack.assignments.len(), 1);
    let assignment = &ack.assignments[0];
    assert_eq!(assignment.ballot, 2);
    assert_ne!(assignment.primary, node_id(0));
    assert_eq!(assignment.learners, vec![node_id(0)]);
    assert_eq!(
        assignment.primary,
        next.tables[&1].partitions[0].primary.node
    );
    assert_eq!(
        state.data().tables[&1].partitions[0].ballot,
        1,
        "not committed yet"
    );
}

// Meta's failure detector measures silence on the monotonic clock only
// (**durations-are-monotonic**): a forward step of the wall clock (NTP, a
// VM migration) between beacons makes no healthy node look dead, while
// the wall clock still decides create times and hold expiry.
#[test]
fn a_wall_clock_step_reconfigures_nothing() {
    let mut state = three_replica_cluster();
    let step_ms = 60_000;
    let at = |monotonic_ms: u64, stepped: bool| MetaTime {
        monotonic_ms,
        unix_ms: monotonic_ms + if stepped { step_ms } else { 0 },
    };
    let mut now_ms = T0_MS;
    while now_ms < T0_MS + 3 * GRACE_MS {
        now_ms += TICK_MS;
        let stepped = now_ms > T0_MS + GRACE_MS;
        if (now_ms - T0_MS).is_multiple_of(100) {
            for node in 0..3 {
                let beacon = node_beacon(node, 1, Vec::new());
                let step = state.handle(&beacon, at(now_ms, stepped));
                assert!(step.persist.is_none());
            }
        }
        assert_eq!(state.tick(at(now_ms, stepped)), None, "at {now_ms}");
    }
    let step = state.handle(
        &Request::CreateTable(create_request("later", 1)),
        at(now_ms, true),
    );
    let Ok(ResponseBody::Table(info)) = step.reply else {
        panic!("{:?}", step.reply)
    };
    assert_eq!(info.create_time_s, (now_ms + step_ms) / 1000);
}

// The guardian puts a learner on the shard where its node already keeps a
// replica of the partition (**replica-stays-on-its-shard**): a node opens a
// replica on one shard only, and a learner assigned to another shard
// could never be hosted (RocksDB's lock is held by the first) — the
// partition stayed short of a replica for good.
#[test]
fn guardian_keeps_a_replica_on_the_shard_its_node_reports() {
    let mut state = three_replica_cluster();
    // Node 3 has two shards and still keeps the partition's replica on
    // shard 1 (from an earlier membership); its shard 0 is emptier.
    let kept = HostedReplica {
        shard: 1,
        ..report(1, ReplicaRole::Inactive, 0, 0)
    };
    let beacon_3 = |replicas: Vec<HostedReplica>| {
        let Request::Beacon(mut beacon) = node_beacon(3, 2, replicas) else {
            unreachable!()
        };
        beacon.incarnation = 1;
        Request::Beacon(beacon)
    };
    apply(&mut state, &beacon_3(vec![kept.clone()]), T0_MS).unwrap();
    let mut now_ms = T0_MS;
    while now_ms < T0_MS + GRACE_MS {
        now_ms += TICK_MS;
        if (now_ms - T0_MS).is_multiple_of(100) {
            for node in [0, 1] {
                apply(&mut state, &node_beacon(node, 1, Vec::new()), now_ms).unwrap();
            }
            apply(&mut state, &beacon_3(vec![kept.clone()]), now_ms).unwrap();
        }
        let changed = tick_commit(&mut state, now_ms);
        assert_eq!(changed, now_ms == T0_MS + GRACE_MS, "at {now_ms}");
    }
    let next = state
        .tick(now_ms + TICK_MS)
        .expect("a learner for node 2's place");
    let partition = &next.tables[&1].partitions[0];
    assert_eq!(
        partition.learners,
        vec![ReplicaPlace {
            node: node_id(3),
            shard: 1,
            address: "127.0.0.1:34831".into(),
        }]
    );
}

// When most nodes fall silent at once — meta cut off from them — meta is
// frozen (**no-removal-when-frozen**): it removes and replaces no member,
// adds no learner and refuses RemoveSecondary, and cluster_info says so.
// A single silent node of three is still removed.
#[test]
fn meta_freezes_when_most_nodes_fall_silent() {
    let mut state = three_replica_cluster();
    let mut now_ms = T0_MS;
    while now_ms < T0_MS + 5 * GRACE_MS {
        now_ms += TICK_MS;
        assert_eq!(state.tick(now_ms), None, "frozen at {now_ms}");
    }
    assert!(state.frozen(now_ms).is_some());
    let Ok(ResponseBody::Pairs(info)) = apply(&mut state, &Request::ClusterInfo, now_ms) else {
        panic!("cluster_info failed")
    };
    assert!(info.contains(&("frozen".to_owned(), "true".to_owned())));
    let remove = Request::RemoveSecondary {
        gpid: Gpid {
            app_id: 1,
            partition_index: 0,
        },
        ballot: 1,
        node: node_id(1),
    };
    let step = state.handle(&remove, now_ms);
    assert!(step.persist.is_none());
    let error = error_of(step.reply);
    assert_eq!(error.code, ErrorCode::NotEnoughNodes);
    assert!(error.message.contains("frozen"), "{}", error.message);

    // The cut heals: every node beacons, nothing was removed, meta thaws.
    now_ms += TICK_MS;
    for node in 0..3 {
        apply(&mut state, &node_beacon(node, 1, Vec::new()), now_ms).unwrap();
    }
    assert_eq!(state.frozen(now_ms), None);
    assert_eq!(state.data().tables[&1].partitions[0].ballot, 1);

    // Cut off again, the nodes' last beacons 150 ms apart (their beacon
    // phases differ): node 0 passes the grace first and finds the others
    // already half-way there, so meta is frozen rather than remove node 0
    // alone (counting them alive until their own grace, it did).
    let cut_from = now_ms + TICK_MS;
    beaconing_until(
        &mut state,
        &[(1, Vec::new()), (2, Vec::new())],
        cut_from + 150,
    );
    while now_ms < cut_from + 3 * GRACE_MS {
        now_ms += TICK_MS;
        if now_ms < cut_from + 150 {
            continue;
        }
        assert_eq!(state.tick(now_ms), None, "staggered cut at {now_ms}");
    }
    for node in 0..3 {
        apply(&mut state, &node_beacon(node, 1, Vec::new()), now_ms).unwrap();
    }
    assert_eq!(state.data().tables[&1].partitions[0].ballot, 1);

    // One node of three falls silent: that is a failure, handled.
    let survivors = vec![(0, Vec::new()), (1, Vec::new())];
    let silent_from = now_ms;
    beaconing_until(&mut state, &survivors, silent_from + GRACE_MS);
    for (node, _) in &survivors {
        let beacon = node_beacon(*node, 1, Vec::new());
        apply(&mut state, &beacon, silent_from + GRACE_MS).unwrap();
    }
    let next = state
        .tick(silent_from + GRACE_MS)
        .expect("node 2 is removed");
    assert_eq!(next.tables[&1].partitions[0].secondaries.len(), 1);
}

// Nodes cut off from meta together come back one at a time: their
// connections to meta are re-established at different moments. Meta thaws
// as soon as enough of them beacon; a node not yet heard then was silent
// through the freeze, when meta could not tell its silence from meta's own
// isolation, so it gets one grace from the thaw before it counts as dead
// (**no-removal-when-frozen**). A node still silent a grace after the thaw
// is removed.
#[test]
fn a_node_silent_through_a_freeze_gets_a_grace_after_the_thaw() {
    let mut state = three_replica_cluster();
    let mut now_ms = T0_MS;
    while now_ms < T0_MS + 5 * GRACE_MS {
        now_ms += TICK_MS;
        assert_eq!(state.tick(now_ms), None, "frozen at {now_ms}");
    }
    assert!(state.frozen(now_ms).is_some());
    // Nodes 0 and 1 are heard again; node 2's link to meta is still down.
    let frozen_last_ms = now_ms;
    now_ms += TICK_MS;
    while now_ms < frozen_last_ms + GRACE_MS {
        if (now_ms - frozen_last_ms - TICK_MS).is_multiple_of(100) {
            for node in [0, 1] {
                apply(&mut state, &node_beacon(node, 1, Vec::new()), now_ms).unwrap();
            }
        }
        assert!(state.frozen(now_ms).is_none(), "thawed at {now_ms}");
        assert_eq!(state.tick(now_ms), None, "node 2 removed at {now_ms}");
        now_ms += TICK_MS;
    }
    for node in [0, 1] {
        apply(&mut state, &node_beacon(node, 1, Vec::new()), now_ms).unwrap();
    }
    let next = state
        .tick(now_ms)
        .expect("node 2, silent a grace after the thaw, is removed");
    assert_eq!(next.tables[&1].partitions[0].secondaries.len(), 1);
}

// Time meta itself did not run is nobody's silence
// (**meta-pause-not-silence**): meta paused (SIGSTOP, starved, suspended)
// for 2.5 s, then resumed, sees every node as alive — their beacons were
// waiting in its sockets — and reconfigures nothing; a node that stays
// silent after the pause is dead a grace of meta's running time later.
#[test]
fn a_pause_of_meta_is_no_node_s_silence() {
    let mut state = three_replica_cluster();
    beaconing_until(
        &mut state,
        &[(0, Vec::new()), (1, Vec::new()), (2, Vec::new())],
        T0_MS + 1_000,
    );
    let resumed_ms = T0_MS + 3_500;
    assert_eq!(
        state.tick(resumed_ms),
        None,
        "nobody is dead after the pause"
    );
    assert!(state.frozen(resumed_ms).is_none());
    let Ok(ResponseBody::Nodes(nodes)) = apply(&mut state, &Request::ListNodes, resumed_ms) else {
        panic!("list_nodes failed")
    };
    assert!(nodes.iter().all(|node| node.alive), "{nodes:?}");
    // Nodes 0 and 1 beacon again; node 2 stays silent. It was silent 50 ms
    // before the pause (its last beacon at +900, meta's last input at
    // +950), so it is dead 750 ms of meta's running time after the resume.
    let mut at_ms = resumed_ms;
    let dead_at_ms = loop {
        at_ms += TICK_MS;
        assert!(
            at_ms < resumed_ms + 2 * GRACE_MS,
            "node 2 never declared dead"
        );
        if (at_ms - T0_MS).is_multiple_of(100) {
            for node in [0, 1] {
                apply(&mut state, &node_beacon(node, 1, Vec::new()), at_ms).unwrap();
            }
        }
        if state.tick(at_ms).is_some() {
            break at_ms;
        }
    };
    assert_eq!(dead_at_ms, resumed_ms + GRACE_MS - 50);
}
