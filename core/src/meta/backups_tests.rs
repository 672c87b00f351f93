//! Unit tests of meta's backups: orders follow the primaries, reports
//! finish or fail a backup, the manifest's outcome completes it, failures
//! are cleaned up, and bad requests change nothing.

use markab_wire::message::{
    BackupJobState, BackupPolicyChange, BackupPolicySpec, BackupReport, BackupRequest,
    CreateTableRequest, ErrorCode, Gpid, NodeBeacon, Request, Response, ResponseBody,
};

use markab_wire::message::RestoreOrder;

use super::*;
use crate::meta::state::{MetaData, MetaSettings, MetaState, RestoreSource, StoredPolicy};

const T0_MS: u64 = 1_700_000_000_000;
const URL: &str = "file:///var/backups/markab";

fn node(index: usize) -> String {
    format!("127.0.0.1:{}", 34_800 + index * 10)
}

fn apply(state: &mut MetaState, request: &Request, now_ms: u64) -> Response {
    let step = state.handle(request, now_ms);
    if let Some(data) = step.persist {
        state.commit(data);
    }
    step.reply
}

fn beacon(index: usize, backups: Vec<BackupReport>) -> Request {
    Request::Beacon(NodeBeacon {
        node: node(index),
        shard_addresses: vec![node(index)],
        replicas: Vec::new(),
        incarnation: 1,
        backups,
        splits: Vec::new(),
        dups: Vec::new(),
    })
}

fn orders(state: &mut MetaState, index: usize, now_ms: u64) -> Vec<BackupOrder> {
    match apply(state, &beacon(index, Vec::new()), now_ms) {
        Ok(ResponseBody::BeaconAck(ack)) => ack.backups,
        other => panic!("beacon: {other:?}"),
    }
}

/// Two nodes and table "t" of 4 partitions, one replica each: primaries
/// spread over both nodes.
fn cluster() -> MetaState {
    let settings = MetaSettings {
        meta_address: "127.0.0.1:34601".into(),
        data_dir: "/var/tmp/meta".into(),
        hold_seconds: 100,
        node_timeout_ms: 5_000,
        replica_count_default: 1,
        replica_count_max: 5,
        replication: None,
        cluster_id: 1,
    };
    let mut state = MetaState::new(settings, MetaData::default());
    for index in 0..2 {
        apply(&mut state, &beacon(index, Vec::new()), T0_MS).unwrap();
    }
    let create = Request::CreateTable(CreateTableRequest {
        table: "t".into(),
        partition_count: 4,
        replica_count: 1,
        envs: vec![("rocksdb.usage_scenario".into(), "normal".into())],
        success_if_exist: false,
    });
    apply(&mut state, &create, T0_MS).unwrap();
    state
}

fn start(state: &mut MetaState, table: &str, now_ms: u64) -> Result<u64, markab_wire::OpError> {
    let request = Request::Backup(BackupRequest::Start {
        table: table.into(),
        url: URL.into(),
    });
    let pairs = match apply(state, &request, now_ms)? {
        ResponseBody::Pairs(pairs) => pairs,
        other => panic!("start: {other:?}"),
    };
    Ok(pairs
        .iter()
        .find(|(key, _)| key == "backup_id")
        .expect("a backup id")
        .1
        .parse()
        .unwrap())
}

fn report(order: &BackupOrder, state: BackupJobState, attempt: &str) -> BackupReport {
    BackupReport {
        backup_id: order.backup_id,
        gpid: order.gpid,
        ballot: order.ballot,
        state,
        decree: 100 + i64::from(order.gpid.partition_index),
        bytes_done: 10,
        bytes_total: 10,
        prefix: format!("{}/{attempt}", order.prefix),
        message: if state == BackupJobState::Failed {
            "store unreachable".into()
        } else {
            String::new()
        },
        restore: false,
    }
}

// Every partition is ordered once, to the node of its primary, under
// Pegasus's layout; finished reports are persisted; once all are in, the
// manifest is the only work left, and its success completes the backup
// with the decrees and envs it recorded.
#[test]
fn orders_go_to_primaries_and_reports_complete_the_backup() {
    let mut state = cluster();
    let id = start(&mut state, "t", T0_MS + 5).unwrap();
    assert_eq!(id, T0_MS + 5, "ids are the start time in Unix ms");
    let mut all = Vec::new();
    for index in 0..2 {
        let mine = orders(&mut state, index, T0_MS + 10);
        for order in &mine {
            let partition =
                &state.data().tables[&1].partitions[order.gpid.partition_index as usize];
            assert_eq!(partition.primary.node, node(index));
            assert_eq!(order.ballot, partition.ballot);
            assert_eq!(
                order.prefix,
                format!("{id}/t_1/{}", order.gpid.partition_index)
            );
            assert_eq!(order.url, URL);
        }
        all.extend(mine.into_iter().map(|order| (index, order)));
    }
    let mut indexes: Vec<i32> = all.iter().map(|(_, o)| o.gpid.partition_index).collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1, 2, 3]);
    assert!(state.backup_work().is_empty(), "nothing for meta's IO yet");

    // Progress only: nothing persisted.
    let (first_node, first) = all[0].clone();
    let version = state.data().version;
    let running = BackupReport {
        bytes_done: 4,
        ..report(&first, BackupJobState::Running, "a")
    };
    apply(&mut state, &beacon(first_node, vec![running]), T0_MS + 20).unwrap();
    assert_eq!(state.data().version, version);
    let query = Request::Backup(BackupRequest::Query { backup_id: id });
    let Ok(ResponseBody::Pairs(rows)) = apply(&mut state, &query, T0_MS + 20) else {
        panic!("query failed")
    };
    let row = format!("partition {}", first.gpid.partition_index);
    let text = &rows.iter().find(|(key, _)| *key == row).unwrap().1;
    assert!(text.starts_with("uploading 40% (4/10 bytes)"), "{text}");

    for (index, order) in &all {
        apply(
            &mut state,
            &beacon(*index, vec![report(order, BackupJobState::Done, "a")]),
            T0_MS + 30,
        )
        .unwrap();
    }
    assert!(orders(&mut state, 0, T0_MS + 40).is_empty());
    assert!(orders(&mut state, 1, T0_MS + 40).is_empty());
    let work = state.backup_work();
    let [BackupWork::WriteManifest { backup_id, backup }] = work.as_slice() else {
        panic!("{work:?}")
    };
    assert_eq!(*backup_id, id);
    assert_eq!(backup.envs["rocksdb.usage_scenario"], "normal");
    for (index, done) in backup.partitions.iter().enumerate() {
        let done = done.as_ref().unwrap();
        assert_eq!(done.decree, 100 + index as i64);
        assert_eq!(done.prefix, format!("{id}/t_1/{index}/a"));
    }
    let listed = Request::Backup(BackupRequest::List { table: "t".into() });
    let Ok(ResponseBody::Pairs(rows)) = apply(&mut state, &listed, T0_MS + 40) else {
        panic!("list failed")
    };
    assert!(
        rows[0].1.contains("status=running partitions=4/4"),
        "{rows:?}"
    );

    let change = state.backup_written(id, Ok(()), T0_MS + 50).unwrap();
    state.commit(change);
    let stored = &state.data().backups[&id];
    assert_eq!(stored.status, BackupStatus::Complete);
    assert_eq!(stored.finished_unix_ms, T0_MS + 50);
    assert!(state.backup_work().is_empty());
    assert!(
        state.backup_written(id, Ok(()), T0_MS + 60).is_none(),
        "once"
    );
}

// A failed partition fails the backup at once: no more orders, its files
// are to be removed, and once they are nothing is left to do; it is never
// listed complete, and a late success report changes nothing.
#[test]
fn a_failed_partition_fails_the_backup_and_its_files_go() {
    let mut state = cluster();
    let id = start(&mut state, "t", T0_MS).unwrap();
    let order = orders(&mut state, 0, T0_MS)[0].clone();
    apply(
        &mut state,
        &beacon(0, vec![report(&order, BackupJobState::Failed, "a")]),
        T0_MS + 1,
    )
    .unwrap();
    let stored = &state.data().backups[&id];
    assert_eq!(stored.status, BackupStatus::Failed);
    assert!(
        stored.reason.contains("store unreachable"),
        "{}",
        stored.reason
    );
    assert!(orders(&mut state, 0, T0_MS + 2).is_empty());
    assert!(orders(&mut state, 1, T0_MS + 2).is_empty());
    assert_eq!(
        state.backup_work(),
        vec![BackupWork::CleanUp {
            backup_id: id,
            url: URL.into()
        }]
    );
    apply(
        &mut state,
        &beacon(0, vec![report(&order, BackupJobState::Done, "b")]),
        T0_MS + 3,
    )
    .unwrap();
    assert_eq!(state.data().backups[&id].status, BackupStatus::Failed);
    let change = state.backup_cleaned(id).unwrap();
    state.commit(change);
    assert!(state.data().backups[&id].cleaned);
    assert!(state.backup_work().is_empty());

    // A failed manifest write fails a backup the same way.
    let id = start(&mut state, "t", T0_MS + 10).unwrap();
    for index in 0..2 {
        let reports = orders(&mut state, index, T0_MS + 11)
            .iter()
            .map(|order| report(order, BackupJobState::Done, "a"))
            .collect();
        apply(&mut state, &beacon(index, reports), T0_MS + 12).unwrap();
    }
    let change = state
        .backup_written(id, Err("store unreachable".into()), T0_MS + 13)
        .unwrap();
    state.commit(change);
    let stored = &state.data().backups[&id];
    assert_eq!(stored.status, BackupStatus::Failed);
    assert!(
        stored.reason.starts_with("writing its manifest"),
        "{}",
        stored.reason
    );
}

// A backup whose table is dropped fails on the next tick.
#[test]
fn dropping_the_table_fails_its_backup() {
    let mut state = cluster();
    let id = start(&mut state, "t", T0_MS).unwrap();
    let drop = Request::DropTable {
        table: "t".into(),
        reserve_seconds: None,
    };
    apply(&mut state, &drop, T0_MS + 1).unwrap();
    assert!(orders(&mut state, 0, T0_MS + 2).is_empty());
    let change = state.tick(T0_MS + 3).expect("the tick fails the backup");
    state.commit(change);
    let stored = &state.data().backups[&id];
    assert_eq!(stored.status, BackupStatus::Failed);
    assert_eq!(stored.reason, "its table was dropped");
}

// Reports that do not fit a running backup's partition are ignored, a
// finished upload outside the partition's prefix is not taken, and bad
// requests are clear errors that change nothing.
#[test]
fn bad_reports_and_requests_change_nothing() {
    let mut state = cluster();
    let id = start(&mut state, "t", T0_MS).unwrap();
    let order = orders(&mut state, 0, T0_MS)[0].clone();
    let version = state.data().version;
    let strays = vec![
        BackupReport {
            backup_id: id + 1,
            ..report(&order, BackupJobState::Done, "a")
        },
        BackupReport {
            gpid: Gpid {
                app_id: 2,
                partition_index: 0,
            },
            ..report(&order, BackupJobState::Done, "a")
        },
        BackupReport {
            gpid: Gpid {
                app_id: 1,
                partition_index: 4,
            },
            ..report(&order, BackupJobState::Done, "a")
        },
        BackupReport {
            prefix: format!("{id}/t_1/9/a"),
            ..report(&order, BackupJobState::Done, "a")
        },
        BackupReport {
            prefix: order.prefix.clone(),
            ..report(&order, BackupJobState::Done, "a")
        },
    ];
    apply(&mut state, &beacon(0, strays), T0_MS + 1).unwrap();
    assert_eq!(state.data().version, version);

    let cases = [
        (
            BackupRequest::Start {
                table: "nope".into(),
                url: URL.into(),
            },
            ErrorCode::UnknownTable,
            "does not exist",
        ),
        (
            BackupRequest::Start {
                table: "t".into(),
                url: URL.into(),
            },
            ErrorCode::Busy,
            "is running",
        ),
        (
            BackupRequest::Start {
                table: "t".into(),
                url: String::new(),
            },
            ErrorCode::InvalidArgument,
            "URL",
        ),
        (
            BackupRequest::Query { backup_id: 42 },
            ErrorCode::NotFound,
            "no backup 42",
        ),
    ];
    for (request, code, text) in cases {
        let error =
            apply(&mut state, &Request::Backup(request.clone()), T0_MS + 2).expect_err("an error");
        assert_eq!(error.code, code, "{request:?}: {error}");
        assert!(error.message.contains(text), "{request:?}: {error}");
    }
    assert_eq!(state.data().version, version);
}

// Backups are persisted with meta's data, and files written before they
// existed still load.
#[test]
fn backups_survive_in_the_stored_data() {
    let mut state = cluster();
    let id = start(&mut state, "t", T0_MS).unwrap();
    let json = serde_json::to_string(state.data()).unwrap();
    let loaded: MetaData = serde_json::from_str(&json).unwrap();
    assert_eq!(&loaded, state.data());
    assert_eq!(loaded.last_backup_id, id);

    let mut old: serde_json::Value = serde_json::to_value(MetaData::default()).unwrap();
    let object = old.as_object_mut().unwrap();
    object.remove("backups");
    object.remove("last_backup_id");
    let loaded: MetaData = serde_json::from_value(old).unwrap();
    assert!(loaded.backups.is_empty());
}

fn source(partitions: i32) -> RestoreSource {
    RestoreSource {
        url: URL.into(),
        backup_id: 77,
        source_table: "t".into(),
        source_app_id: 1,
        partition_count: partitions,
        replica_count: 1,
        envs: vec![("rocksdb.usage_scenario".into(), "normal".into())],
        partitions: (0..partitions)
            .map(|index| (format!("77/t_1/{index}/b1-n"), 10 + i64::from(index)))
            .collect(),
    }
}

fn restore_orders(state: &mut MetaState, index: usize, now_ms: u64) -> Vec<RestoreOrder> {
    match apply(state, &beacon(index, Vec::new()), now_ms) {
        Ok(ResponseBody::BeaconAck(ack)) => {
            assert!(
                ack.assignments.iter().all(|a| a.table != "r"),
                "no partition of a table being restored is assigned before it is installed"
            );
            ack.restores
        }
        other => panic!("beacon: {other:?}"),
    }
}

fn restore_report(order: &RestoreOrder, state: BackupJobState) -> BackupReport {
    BackupReport {
        backup_id: order.backup_id,
        gpid: order.gpid,
        state,
        decree: order.decree,
        bytes_done: 5,
        bytes_total: 10,
        prefix: order.prefix.clone(),
        message: if state == BackupJobState::Failed {
            "checksum of 000009.sst differs".into()
        } else {
            String::new()
        },
        restore: true,
        ..BackupReport::default()
    }
}

fn route_of(state: &mut MetaState, table: &str, now_ms: u64) -> markab_wire::Response {
    apply(
        state,
        &Request::QueryRoute {
            table: table.into(),
        },
        now_ms,
    )
}

fn restore_query(state: &mut MetaState, table: &str) -> Vec<(String, String)> {
    let request = Request::Backup(BackupRequest::QueryRestore {
        table: table.into(),
    });
    match apply(state, &request, T0_MS) {
        Ok(ResponseBody::Pairs(pairs)) => pairs,
        other => panic!("query_restore_status: {other:?}"),
    }
}

// A restored table starts as primaries only, with its envs, neither routed
// nor assigned; each primary's node is ordered its partition's checkpoint;
// an installed partition is assigned from then on, and the table routes
// once every one is.
#[test]
fn a_restore_serves_only_once_every_partition_is_installed() {
    let mut state = cluster();
    let step = state.start_restore("r", source(4), T0_MS);
    state.commit(step.persist.expect("a new table"));
    let (app_id, table) = state
        .data()
        .tables
        .iter()
        .find(|(_, table)| table.name == "r")
        .map(|(id, table)| (*id, table.clone()))
        .unwrap();
    assert_eq!(table.envs["rocksdb.usage_scenario"], "normal");
    assert!(table.partitions.iter().all(|p| p.secondaries.is_empty()));
    let error = route_of(&mut state, "r", T0_MS).expect_err("not routed yet");
    assert_eq!(error.code, ErrorCode::Busy);
    assert!(error.message.contains("0 of 4"), "{error}");

    let mut orders = Vec::new();
    for index in 0..2 {
        for order in restore_orders(&mut state, index, T0_MS + 1) {
            let partition = &table.partitions[order.gpid.partition_index as usize];
            assert_eq!(partition.primary.node, node(index));
            assert_eq!(order.shard, partition.primary.shard);
            assert_eq!(order.gpid.app_id, app_id);
            assert_eq!(order.table, "r");
            assert_eq!(order.partition_count, 4);
            assert_eq!(
                order.prefix,
                format!("77/t_1/{}/b1-n", order.gpid.partition_index)
            );
            assert_eq!(order.decree, 10 + i64::from(order.gpid.partition_index));
            orders.push((index, order));
        }
    }
    assert_eq!(orders.len(), 4);
    let (first_node, first) = orders[0].clone();
    apply(
        &mut state,
        &beacon(
            first_node,
            vec![restore_report(&first, BackupJobState::Running)],
        ),
        T0_MS + 2,
    )
    .unwrap();
    let rows = restore_query(&mut state, "r");
    let row = format!("partition {}", first.gpid.partition_index);
    let text = &rows.iter().find(|(key, _)| *key == row).unwrap().1;
    assert!(text.starts_with("downloading 50%"), "{text}");

    for (at, (index, order)) in orders.iter().enumerate() {
        let ack = match apply(
            &mut state,
            &beacon(*index, vec![restore_report(order, BackupJobState::Done)]),
            T0_MS + 3,
        ) {
            Ok(ResponseBody::BeaconAck(ack)) => ack,
            other => panic!("{other:?}"),
        };
        assert!(
            ack.assignments
                .iter()
                .any(|a| a.table == "r" && a.partition_index == order.gpid.partition_index),
            "an installed partition is assigned"
        );
        assert!(ack.restores.iter().all(|o| o.gpid != order.gpid));
        if at + 1 < orders.len() {
            assert!(route_of(&mut state, "r", T0_MS + 3).is_err());
        }
    }
    assert!(matches!(
        route_of(&mut state, "r", T0_MS + 4),
        Ok(ResponseBody::Route(_))
    ));
    assert!(state.data().tables[&app_id].restore.is_none());
    let rows = restore_query(&mut state, "r");
    assert!(rows[1].1.starts_with("serving"), "{rows:?}");
}

// A failed partition or a cancel removes the table at once (no half
// table) and says why; bad requests change nothing.
#[test]
fn a_failed_or_cancelled_restore_leaves_no_table() {
    let mut state = cluster();
    let step = state.start_restore("r", source(2), T0_MS);
    state.commit(step.persist.unwrap());
    let order = restore_orders(&mut state, 0, T0_MS)
        .into_iter()
        .chain(restore_orders(&mut state, 1, T0_MS))
        .next()
        .unwrap();
    let owner = (0..2)
        .find(|index| {
            state.data().tables.values().any(|t| {
                t.name == "r"
                    && t.partitions[order.gpid.partition_index as usize]
                        .primary
                        .node
                        == node(*index)
            })
        })
        .unwrap();
    apply(
        &mut state,
        &beacon(owner, vec![restore_report(&order, BackupJobState::Failed)]),
        T0_MS + 1,
    )
    .unwrap();
    assert!(state.data().tables.values().all(|t| t.name != "r"));
    let rows = restore_query(&mut state, "r");
    assert!(rows[1].1.contains("checksum of 000009.sst"), "{rows:?}");

    let step = state.start_restore("r", source(2), T0_MS + 2);
    state.commit(step.persist.unwrap());
    let version = state.data().version;
    let existing = state.start_restore("r", source(2), T0_MS + 3);
    assert_eq!(existing.reply.unwrap_err().code, ErrorCode::TableExists);
    let not_restoring = Request::Backup(BackupRequest::CancelRestore { table: "t".into() });
    let error = apply(&mut state, &not_restoring, T0_MS + 3).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    let unknown = Request::Backup(BackupRequest::CancelRestore { table: "zz".into() });
    assert_eq!(
        apply(&mut state, &unknown, T0_MS + 3).unwrap_err().code,
        ErrorCode::UnknownTable
    );
    let mismatched = RestoreSource {
        partition_count: 4,
        ..source(2)
    };
    assert_eq!(
        state
            .start_restore("q", mismatched, T0_MS + 3)
            .reply
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(state.data().version, version);

    let cancel = Request::Backup(BackupRequest::CancelRestore { table: "r".into() });
    apply(&mut state, &cancel, T0_MS + 4).unwrap();
    assert!(state.data().tables.values().all(|t| t.name != "r"));
    assert!(restore_orders(&mut state, 0, T0_MS + 5).is_empty());
    assert!(restore_orders(&mut state, 1, T0_MS + 5).is_empty());
    let rows = restore_query(&mut state, "r");
    assert!(rows[1].1.starts_with("cancelled"), "{rows:?}");
}

// The partitions a dead node was restoring move to a live node under a
// new ballot, and are ordered there.
#[test]
fn a_dead_restorer_hands_its_partitions_on() {
    let mut state = cluster();
    let step = state.start_restore("r", source(4), T0_MS);
    state.commit(step.persist.unwrap());
    // Only node 1 beacons on, and meta ticks.
    let mut now_ms = T0_MS;
    let mut moved = false;
    while now_ms < T0_MS + 20_000 && !moved {
        now_ms += 250;
        apply(&mut state, &beacon(1, Vec::new()), now_ms).unwrap();
        if let Some(change) = state.tick(now_ms) {
            state.commit(change);
            moved = true;
        }
    }
    assert!(moved, "the dead node's partitions move");
    let later = now_ms;
    let table = state
        .data()
        .tables
        .values()
        .find(|t| t.name == "r")
        .unwrap();
    assert!(table.partitions.iter().all(|p| p.primary.node == node(1)));
    assert_eq!(restore_orders(&mut state, 1, later + 1).len(), 4);
}

fn policy_request(request: BackupRequest) -> Request {
    Request::Backup(request)
}

fn add_policy(state: &mut MetaState, name: &str, start_time: &str, interval: u64, keep: u32) {
    let request = policy_request(BackupRequest::AddPolicy(BackupPolicySpec {
        name: name.into(),
        tables: vec!["t".into()],
        url: URL.into(),
        interval_seconds: interval,
        start_time: start_time.into(),
        keep,
    }));
    apply(state, &request, T0_MS).unwrap();
}

/// Finishes every running backup: every partition reported done by its
/// primary, then the manifest written.
fn finish_running(state: &mut MetaState, now_ms: u64) {
    let keep = state
        .data()
        .backup_policies
        .values()
        .map(|policy| policy.keep as usize)
        .min()
        .unwrap_or(usize::MAX);
    for index in 0..2 {
        let reports: Vec<BackupReport> = orders(state, index, now_ms)
            .iter()
            .map(|order| report(order, BackupJobState::Done, "a"))
            .collect();
        apply(state, &beacon(index, reports), now_ms).unwrap();
    }
    for work in state.backup_work() {
        if let BackupWork::WriteManifest { backup_id, .. } = work {
            let change = state.backup_written(backup_id, Ok(()), now_ms).unwrap();
            state.commit(change);
            assert!(
                complete_ids(state).len() <= keep,
                "never more complete than kept"
            );
        }
    }
}

fn tick(state: &mut MetaState, now_ms: u64) {
    if let Some(change) = state.tick(now_ms) {
        state.commit(change);
    }
}

fn complete_ids(state: &MetaState) -> Vec<u64> {
    state
        .data()
        .backups
        .iter()
        .filter(|(_, backup)| backup.status == BackupStatus::Complete && !backup.expired)
        .map(|(id, _)| *id)
        .collect()
}

// A policy runs first at its time of day, then every interval; each run
// backs its table up once; beyond its count the oldest complete backups
// are deleted (their files first, then their records); a slow run is not
// doubled, missed runs are run once, and a disabled policy does not run.
#[test]
fn a_policy_runs_on_schedule_and_keeps_its_count() {
    let mut state = cluster();
    // T0 is 22:13:20 UTC: the first run is at 22:14:00, 40 s later.
    add_policy(&mut state, "p", "22:14", 60, 2);
    let policy = &state.data().backup_policies["p"];
    assert_eq!(policy.next_run_unix_ms(), T0_MS + 40_000);
    tick(&mut state, T0_MS + 39_000);
    assert!(state.data().backups.is_empty());
    tick(&mut state, T0_MS + 40_000);
    assert_eq!(state.data().backups.len(), 1);
    let first = *state.data().backups.keys().next().unwrap();
    assert_eq!(state.data().backups[&first].policy, "p");
    // Still running at the next slot: that run skips the table.
    tick(&mut state, T0_MS + 100_000);
    assert_eq!(state.data().backups.len(), 1);
    finish_running(&mut state, T0_MS + 101_000);
    for run in 1..=3u64 {
        tick(&mut state, T0_MS + 100_000 + run * 60_000);
        finish_running(&mut state, T0_MS + 101_000 + run * 60_000);
    }
    // Four complete backups, two kept: the two oldest are being deleted,
    // marked as each newer one completed.
    let ids: Vec<u64> = state.data().backups.keys().copied().collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(complete_ids(&state), ids[2..].to_vec());
    let work = state.backup_work();
    assert_eq!(
        work,
        ids[..2]
            .iter()
            .map(|id| BackupWork::Delete {
                backup_id: *id,
                url: URL.into()
            })
            .collect::<Vec<_>>()
    );
    for id in &ids[..2] {
        let change = state.backup_deleted(*id).unwrap();
        state.commit(change);
    }
    assert_eq!(
        state.data().backups.keys().copied().collect::<Vec<_>>(),
        ids[2..].to_vec()
    );

    // Down for ten intervals: one run, not ten.
    let before = state.data().backups.len();
    tick(&mut state, T0_MS + 1_000_000);
    assert_eq!(state.data().backups.len(), before + 1);
    tick(&mut state, T0_MS + 1_000_500);
    assert_eq!(state.data().backups.len(), before + 1);
    finish_running(&mut state, T0_MS + 1_001_000);

    // Disabled: no run.
    let disable = policy_request(BackupRequest::DisablePolicy { name: "p".into() });
    apply(&mut state, &disable, T0_MS + 1_002_000).unwrap();
    let count = state.data().backups.len();
    tick(&mut state, T0_MS + 2_000_000);
    assert_eq!(
        state
            .data()
            .backups
            .values()
            .filter(|b| b.status == BackupStatus::Running)
            .count(),
        0
    );
    assert!(state.data().backups.len() <= count);
    let enable = policy_request(BackupRequest::EnablePolicy { name: "p".into() });
    apply(&mut state, &enable, T0_MS + 2_000_000).unwrap();
    tick(&mut state, T0_MS + 2_000_100);
    assert!(state
        .data()
        .backups
        .values()
        .any(|b| b.status == BackupStatus::Running));
}

// Runs fall on the start time plus whole intervals: the first is the
// first such time after the policy's creation.
#[test]
fn a_policy_first_runs_on_its_grid() {
    // T0 is 22:13:20 UTC.
    let policy = |start: &str, interval: u64| StoredPolicy {
        start_time: start.into(),
        interval_seconds: interval,
        anchor_unix_ms: T0_MS,
        enabled: true,
        ..StoredPolicy::default()
    };
    assert_eq!(policy("22:14", 86_400).next_run_unix_ms(), T0_MS + 40_000);
    assert_eq!(
        policy("22:13", 86_400).next_run_unix_ms(),
        T0_MS - 20_000 + 86_400_000
    );
    assert_eq!(policy("00:00", 30).next_run_unix_ms(), T0_MS + 10_000);
    assert_eq!(policy("23:00", 600).next_run_unix_ms(), T0_MS + 400_000);
    let ran = StoredPolicy {
        last_run_unix_ms: T0_MS,
        ..policy("00:00", 30)
    };
    assert_eq!(ran.next_run_unix_ms(), T0_MS + 30_000);
}

// Policies are listed, queried, changed, and persisted with meta's data;
// bad requests are clear errors that change nothing.
#[test]
fn policies_are_managed_and_persisted() {
    let mut state = cluster();
    add_policy(&mut state, "p", "01:30", 3_600, 3);
    let Ok(ResponseBody::Pairs(rows)) = apply(
        &mut state,
        &policy_request(BackupRequest::ListPolicies),
        T0_MS,
    ) else {
        panic!("list")
    };
    assert_eq!(rows[0].0, "p");
    assert!(
        rows[0].1.contains("tables=t") && rows[0].1.contains("keep=3"),
        "{rows:?}"
    );
    let modify = policy_request(BackupRequest::ModifyPolicy(BackupPolicyChange {
        name: "p".into(),
        interval_seconds: 60,
        keep: 5,
        ..BackupPolicyChange::default()
    }));
    apply(&mut state, &modify, T0_MS).unwrap();
    let policy = &state.data().backup_policies["p"];
    assert_eq!((policy.interval_seconds, policy.keep), (60, 5));
    let json = serde_json::to_string(state.data()).unwrap();
    let loaded: MetaData = serde_json::from_str(&json).unwrap();
    assert_eq!(loaded.backup_policies, state.data().backup_policies);

    let version = state.data().version;
    let spec = |name: &str, table: &str, start: &str, interval: u64, keep: u32| {
        policy_request(BackupRequest::AddPolicy(BackupPolicySpec {
            name: name.into(),
            tables: vec![table.into()],
            url: URL.into(),
            interval_seconds: interval,
            start_time: start.into(),
            keep,
        }))
    };
    let cases = [
        (
            spec("p", "t", "01:00", 60, 1),
            ErrorCode::InvalidArgument,
            "exists already",
        ),
        (
            spec("q", "nope", "01:00", 60, 1),
            ErrorCode::UnknownTable,
            "nope",
        ),
        (
            spec("q", "t", "24:00", 60, 1),
            ErrorCode::InvalidArgument,
            "HH:MM",
        ),
        (
            spec("q", "t", "1:00", 60, 1),
            ErrorCode::InvalidArgument,
            "HH:MM",
        ),
        (
            spec("q", "t", "01:00", 0, 1),
            ErrorCode::InvalidArgument,
            "interval_seconds",
        ),
        (
            spec("q", "t", "01:00", 60, 0),
            ErrorCode::InvalidArgument,
            "keep",
        ),
        (
            spec("bad name", "t", "01:00", 60, 1),
            ErrorCode::InvalidArgument,
            "policy name",
        ),
        (
            policy_request(BackupRequest::ModifyPolicy(BackupPolicyChange {
                name: "p".into(),
                remove_tables: vec!["t".into()],
                ..BackupPolicyChange::default()
            })),
            ErrorCode::InvalidArgument,
            "at least one table",
        ),
        (
            policy_request(BackupRequest::ModifyPolicy(BackupPolicyChange {
                name: "p".into(),
                ..BackupPolicyChange::default()
            })),
            ErrorCode::InvalidArgument,
            "nothing to change",
        ),
        (
            policy_request(BackupRequest::EnablePolicy { name: "zz".into() }),
            ErrorCode::NotFound,
            "no backup policy",
        ),
    ];
    for (request, code, text) in cases {
        let error = apply(&mut state, &request, T0_MS).expect_err("an error");
        assert_eq!(error.code, code, "{request:?}: {error}");
        assert!(error.message.contains(text), "{request:?}: {error}");
    }
    assert_eq!(state.data().version, version);
}
