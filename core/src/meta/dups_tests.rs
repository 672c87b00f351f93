//! Unit tests of meta's duplications: adding checks what the remote
//! cluster said, orders reach every member, the primaries' reports advance
//! the confirmed decrees (monotonically, throttled), a failure is final
//! until the operator removes the duplication, and bad requests change
//! nothing.

use markab_wire::message::{
    BeaconAck, CreateTableRequest, DupOrder, DupReport, DupRequest, DupStatus as OrderStatus,
    ErrorCode, Gpid, NodeBeacon, OpError, Request, Response, ResponseBody, SplitRequest,
};

use super::*;
use crate::meta::settings::MetaReplication;
use crate::meta::state::{MetaData, MetaSettings, MetaState};

const T0_MS: u64 = 1_700_000_000_000;
const REMOTE: RemoteFacts = RemoteFacts {
    cluster_id: 2,
    partition_count: 4,
};

fn node(index: usize) -> String {
    format!("127.0.0.1:{}", 34_800 + index * 10)
}

fn settings(cluster_id: u8) -> MetaSettings {
    MetaSettings {
        meta_address: "127.0.0.1:34601".into(),
        data_dir: "/var/tmp/meta".into(),
        hold_seconds: 100,
        node_timeout_ms: 5_000,
        replica_count_default: 3,
        replica_count_max: 5,
        replication: Some(MetaReplication::default()),
        cluster_id,
    }
}

fn apply(state: &mut MetaState, request: &Request, now_ms: u64) -> Response {
    let step = state.handle(request, now_ms);
    if let Some(data) = step.persist {
        state.commit(data);
    }
    step.reply
}

fn beacon(index: usize, dups: Vec<DupReport>) -> Request {
    Request::Beacon(NodeBeacon {
        node: node(index),
        shard_addresses: vec![node(index)],
        incarnation: 1,
        dups,
        ..NodeBeacon::default()
    })
}

fn ack(state: &mut MetaState, index: usize, dups: Vec<DupReport>, now_ms: u64) -> BeaconAck {
    match apply(state, &beacon(index, dups), now_ms) {
        Ok(ResponseBody::BeaconAck(ack)) => ack,
        other => panic!("beacon: {other:?}"),
    }
}

/// Three nodes and table "t" of 4 partitions, three replicas each: every
/// node holds every partition, primaries spread.
fn cluster() -> MetaState {
    let mut state = MetaState::new(settings(1), MetaData::default());
    for index in 0..3 {
        apply(&mut state, &beacon(index, Vec::new()), T0_MS).unwrap();
    }
    let create = Request::CreateTable(CreateTableRequest {
        table: "t".into(),
        partition_count: 4,
        replica_count: 3,
        envs: Vec::new(),
        success_if_exist: false,
    });
    apply(&mut state, &create, T0_MS).unwrap();
    state
}

fn add_request(table: &str) -> DupRequest {
    DupRequest::Add {
        table: table.into(),
        remote_metas: vec!["10.0.0.9:34601".into(), "10.0.0.10:34601".into()],
        remote_table: String::new(),
    }
}

fn add(
    state: &mut MetaState,
    request: &DupRequest,
    remote: RemoteFacts,
    now_ms: u64,
) -> Result<u64, OpError> {
    let step = state.add_dup(request, remote, now_ms);
    if let Some(data) = step.persist {
        state.commit(data);
    }
    let pairs = match step.reply? {
        ResponseBody::Pairs(pairs) => pairs,
        other => panic!("add: {other:?}"),
    };
    Ok(pairs
        .iter()
        .find(|(key, _)| key == "dup_id")
        .expect("a dup id")
        .1
        .parse()
        .unwrap())
}

fn dup_call(state: &mut MetaState, request: DupRequest, now_ms: u64) -> Response {
    apply(state, &Request::Dup(request), now_ms)
}

fn gpid(partition_index: i32) -> Gpid {
    Gpid {
        app_id: 1,
        partition_index,
    }
}

/// The node index of partition `index`'s primary.
fn primary_of(state: &MetaState, index: usize) -> usize {
    let primary = &state.data().tables[&1].partitions[index].primary.node;
    (0..3)
        .find(|node_index| node(*node_index) == *primary)
        .unwrap()
}

fn report(dup_id: u64, index: i32, confirmed: i64) -> DupReport {
    DupReport {
        dup_id,
        gpid: gpid(index),
        confirmed_decree: confirmed,
        committed_decree: confirmed + 5,
        lag_ms: 300,
        shipped_records: 10,
        shipped_bytes: 1_000,
        errors: 0,
        failed: false,
        message: String::new(),
    }
}

fn list(state: &mut MetaState, table: &str) -> Vec<(String, String)> {
    match dup_call(
        state,
        DupRequest::List {
            table: table.into(),
        },
        T0_MS,
    ) {
        Ok(ResponseBody::Pairs(rows)) => rows,
        other => panic!("list: {other:?}"),
    }
}

fn row<'a>(rows: &'a [(String, String)], key: &str) -> &'a str {
    &rows
        .iter()
        .find(|(name, _)| name == key)
        .unwrap_or_else(|| panic!("no row {key} in {rows:?}"))
        .1
}

// A new duplication is stored running, its id is the add time, and every
// member of every partition — primary and secondaries — gets an order with
// no confirmed decree yet; acks carry the cluster id.
#[test]
fn add_records_a_running_dup_and_every_member_gets_orders() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS + 5).unwrap();
    assert_eq!(id, T0_MS + 5, "ids are the add time in Unix ms");
    let stored = state.data().dups[&id].clone();
    assert_eq!(
        stored,
        StoredDup {
            app_id: 1,
            remote_metas: vec!["10.0.0.9:34601".into(), "10.0.0.10:34601".into()],
            remote_table: "t".into(),
            remote_cluster_id: 2,
            status: DupStatus::Running,
            created_unix_ms: T0_MS + 5,
            confirmed: BTreeMap::new(),
            fail_message: String::new(),
        }
    );
    for index in 0..3 {
        let ack = ack(&mut state, index, Vec::new(), T0_MS + 10);
        assert_eq!(ack.cluster_id, 1);
        let mut partitions: Vec<i32> = ack
            .dups
            .iter()
            .map(|order| order.gpid.partition_index)
            .collect();
        partitions.sort();
        assert_eq!(partitions, vec![0, 1, 2, 3], "node {index}");
        assert_eq!(
            ack.dups[0],
            DupOrder {
                dup_id: id,
                gpid: ack.dups[0].gpid,
                remote_metas: stored.remote_metas.clone(),
                remote_table: "t".into(),
                remote_cluster_id: 2,
                status: OrderStatus::Running,
                confirmed_decree: DUP_DECREE_NONE,
            }
        );
    }
    let second = add(
        &mut state,
        &DupRequest::Add {
            table: "t".into(),
            remote_metas: vec!["10.0.0.9:34601".into()],
            remote_table: "t_copy".into(),
        },
        REMOTE,
        T0_MS + 5,
    )
    .unwrap();
    assert_eq!(second, id + 1, "ids only grow");
    assert_eq!(state.data().dups[&second].remote_table, "t_copy");
}

// Adds that cannot work are refused with what to do, and change nothing.
#[test]
fn bad_adds_are_refused_and_change_nothing() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let version = state.data().version;
    let facts = |cluster_id, partition_count| RemoteFacts {
        cluster_id,
        partition_count,
    };
    let cases = [
        (
            add_request("nope"),
            REMOTE,
            ErrorCode::UnknownTable,
            "does not exist",
        ),
        (
            add_request("t"),
            facts(3, 8),
            ErrorCode::InvalidArgument,
            "counts must match",
        ),
        (
            add_request("t"),
            facts(1, 4),
            ErrorCode::InvalidArgument,
            "never duplicated to its own cluster",
        ),
        (
            add_request("t"),
            facts(0, 4),
            ErrorCode::InvalidArgument,
            "1..=127",
        ),
        (
            add_request("t"),
            facts(128, 4),
            ErrorCode::InvalidArgument,
            "1..=127",
        ),
        (
            add_request("t"),
            REMOTE,
            ErrorCode::InvalidArgument,
            &format!("already (dup {id}, running)"),
        ),
        (
            DupRequest::Add {
                table: "t".into(),
                remote_metas: Vec::new(),
                remote_table: String::new(),
            },
            facts(3, 4),
            ErrorCode::InvalidArgument,
            "remote meta addresses",
        ),
        (
            DupRequest::Add {
                table: "t".into(),
                remote_metas: vec![String::new()],
                remote_table: String::new(),
            },
            facts(3, 4),
            ErrorCode::InvalidArgument,
            "remote meta address",
        ),
        (
            DupRequest::Add {
                table: "t".into(),
                remote_metas: vec!["10.0.0.9:34601".into()],
                remote_table: "no spaces".into(),
            },
            facts(3, 4),
            ErrorCode::InvalidArgument,
            "remote table",
        ),
        (
            DupRequest::List { table: "t".into() },
            REMOTE,
            ErrorCode::InvalidArgument,
            "dup add request",
        ),
    ];
    for (request, remote, code, text) in cases {
        let step = state.add_dup(&request, remote, T0_MS + 1);
        assert!(step.persist.is_none(), "{request:?}");
        let error = step.reply.expect_err("an error");
        assert_eq!(error.code, code, "{request:?}: {error}");
        assert!(error.message.contains(text), "{request:?}: {error}");
    }
    // Through the request path, an add has not asked the remote cluster.
    let error = dup_call(&mut state, add_request("t"), T0_MS + 1).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(error.message.contains("meta's server"), "{error}");
    assert_eq!(state.data().version, version);
}

// A table that splits is not duplicated, and a duplicated one does not
// split: both sides must keep the same partition count.
#[test]
fn duplication_and_split_exclude_each_other() {
    let mut state = cluster();
    let split = |table: &str| {
        Request::PartitionSplit(SplitRequest::Start {
            table: table.into(),
            new_count: 8,
        })
    };
    apply(&mut state, &split("t"), T0_MS + 1).unwrap();
    let error = add(&mut state, &add_request("t"), REMOTE, T0_MS + 2).unwrap_err();
    assert_eq!(error.code, ErrorCode::Busy);
    assert!(error.message.contains("splitting"), "{error}");
    let cancel = Request::PartitionSplit(SplitRequest::Cancel { table: "t".into() });
    apply(&mut state, &cancel, T0_MS + 3).unwrap();

    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS + 4).unwrap();
    let version = state.data().version;
    let error = apply(&mut state, &split("t"), T0_MS + 5).unwrap_err();
    assert_eq!(error.code, ErrorCode::Busy);
    assert!(
        error.message.contains(&format!("dup {id}"))
            && error.message.contains("partition p to partition p"),
        "{error}"
    );
    assert_eq!(state.data().version, version);
    dup_call(&mut state, DupRequest::Remove { id }, T0_MS + 6).unwrap();
    apply(&mut state, &split("t"), T0_MS + 7).unwrap();
}

// A learner gets orders too: it keeps its log from the confirmed decree
// and tags its writes before it is promoted, and could become primary
// (**dup-log-retained**; the simulator found a learner that truncated its
// log without orders, became primary and failed the duplication).
#[test]
fn learners_get_orders_too() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let mut next = state.data().clone();
    next.version += 1;
    let partition = &mut next.tables.get_mut(&1).unwrap().partitions[0];
    let learner = partition.secondaries.remove(0);
    partition.learners.push(learner.clone());
    partition.ballot += 1;
    state.commit(next);
    let index = (0..3).find(|index| node(*index) == learner.node).unwrap();
    let orders = ack(&mut state, index, Vec::new(), T0_MS + 10).dups;
    assert!(
        orders
            .iter()
            .any(|order| order.dup_id == id && order.gpid == gpid(0)),
        "{orders:?}"
    );
}

// Only the partition's primary is heard; its first report is persisted at
// once and its confirmed decree goes into every member's order; a lower
// one later never lowers it (**dup-confirmed-monotone**).
#[test]
fn the_primarys_reports_advance_the_confirmed_decree() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let primary = primary_of(&state, 0);
    let secondary = (primary + 1) % 3;
    let version = state.data().version;
    ack(&mut state, secondary, vec![report(id, 0, 50)], T0_MS + 10);
    assert_eq!(state.data().version, version, "a secondary is not heard");
    assert!(state.data().dups[&id].confirmed.is_empty());

    ack(&mut state, primary, vec![report(id, 0, 40)], T0_MS + 20);
    assert_eq!(
        state.data().version,
        version + 1,
        "the first report, at once"
    );
    assert_eq!(state.data().dups[&id].confirmed[&0], 40);
    let order = ack(&mut state, secondary, Vec::new(), T0_MS + 30)
        .dups
        .into_iter()
        .find(|order| order.gpid == gpid(0))
        .unwrap();
    assert_eq!(order.confirmed_decree, 40);

    ack(&mut state, primary, vec![report(id, 0, 35)], T0_MS + 3_000);
    assert_eq!(state.data().dups[&id].confirmed[&0], 40);
    assert_eq!(state.tick(T0_MS + 6_000), None, "nothing to persist");
    assert_eq!(state.data().version, version + 1);
}

// A primary that has no start yet proposes its committed decree (a report
// with confirmed -1): the first proposal pins the partition's start and is
// persisted at once, even inside another partition's throttle; a later
// proposal — a new primary that has not heard the pin yet — never moves
// it, and only shipped decrees raise it (**dup-start-pinned**).
#[test]
fn the_first_proposed_start_is_pinned() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let first = primary_of(&state, 1);
    ack(&mut state, first, vec![report(id, 1, 10)], T0_MS + 10);
    let proposal = |committed: i64| DupReport {
        confirmed_decree: -1,
        committed_decree: committed,
        ..report(id, 0, -1)
    };
    let primary = primary_of(&state, 0);
    ack(&mut state, primary, vec![proposal(4)], T0_MS + 20);
    assert_eq!(
        state.data().dups[&id].confirmed.get(&0),
        Some(&4),
        "pinned and persisted at once"
    );
    ack(&mut state, primary, vec![proposal(9)], T0_MS + 3_000);
    assert_eq!(state.tick(T0_MS + 6_000), None, "a proposal moves nothing");
    assert_eq!(state.data().dups[&id].confirmed[&0], 4);
    ack(&mut state, primary, vec![report(id, 0, 6)], T0_MS + 6_100);
    assert_eq!(state.data().dups[&id].confirmed[&0], 6);
}

// Confirmed decrees reach the store at most every 2 s; meanwhile the
// orders carry the persisted one, and a tick persists the heard once due.
#[test]
fn confirmed_decrees_are_persisted_at_most_every_two_seconds() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let primary = primary_of(&state, 1);
    ack(&mut state, primary, vec![report(id, 1, 10)], T0_MS + 10);
    let version = state.data().version;
    let ack_now = ack(&mut state, primary, vec![report(id, 1, 20)], T0_MS + 500);
    assert_eq!(state.data().version, version, "throttled");
    assert_eq!(state.data().dups[&id].confirmed[&1], 10);
    let order = ack_now
        .dups
        .iter()
        .find(|order| order.gpid == gpid(1))
        .unwrap();
    // Orders carry what was persisted, not what was heard: members keep
    // their logs from it, so a meta restart that forgets the heard
    // decree cannot leave a new primary ordered below what its log holds
    // (**dup-orders-persisted**).
    assert_eq!(
        order.confirmed_decree, 10,
        "orders carry what was persisted"
    );
    assert_eq!(state.tick(T0_MS + 1_000), None);
    let change = state.tick(T0_MS + 10 + DUP_CONFIRM_PERSIST_MS).unwrap();
    state.commit(change);
    assert_eq!(state.data().dups[&id].confirmed[&1], 20);
    let order = ack(&mut state, primary, Vec::new(), T0_MS + 2_100)
        .dups
        .into_iter()
        .find(|order| order.gpid == gpid(1))
        .unwrap();
    assert_eq!(order.confirmed_decree, 20);
    assert_eq!(state.tick(T0_MS + 5_000), None);
}

// A failed report fails the duplication for good: no more orders, and
// neither `dup start` nor `dup pause` nor a new add bring it back; the
// operator removes it, then adds it again.
#[test]
fn a_failure_is_final_until_the_operator_removes_the_dup() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let primary = primary_of(&state, 2);
    let failed = DupReport {
        failed: true,
        message: "decree 9 is no longer in the log".into(),
        ..report(id, 2, 8)
    };
    ack(&mut state, primary, vec![failed], T0_MS + 10);
    let stored = &state.data().dups[&id];
    assert_eq!(stored.status, DupStatus::Failed);
    assert!(
        stored.fail_message.contains("partition 2")
            && stored.fail_message.contains("no longer in the log"),
        "{}",
        stored.fail_message
    );
    for index in 0..3 {
        assert!(ack(&mut state, index, Vec::new(), T0_MS + 20)
            .dups
            .is_empty());
    }
    let version = state.data().version;
    for request in [DupRequest::Start { id }, DupRequest::Pause { id }] {
        let error = dup_call(&mut state, request, T0_MS + 30).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(
            error.message.contains(&format!("dup remove {id}"))
                && error.message.contains("restore")
                && error.message.contains("add it again"),
            "{error}"
        );
    }
    let error = add(&mut state, &add_request("t"), REMOTE, T0_MS + 30).unwrap_err();
    assert!(
        error.message.contains(&format!("dup remove {id} first")),
        "{error}"
    );
    ack(&mut state, primary, vec![report(id, 2, 100)], T0_MS + 40);
    assert_eq!(state.data().version, version, "a failed dup hears nothing");

    dup_call(&mut state, DupRequest::Remove { id }, T0_MS + 50).unwrap();
    assert!(state.data().dups.is_empty());
    let again = add(&mut state, &add_request("t"), REMOTE, T0_MS + 60).unwrap();
    assert_eq!(state.data().dups[&again].status, DupStatus::Running);
}

// Pause and start switch the orders' status, each refused when it
// changes nothing; a resumed duplication's first report is persisted at
// once.
#[test]
fn pause_and_start_switch_the_orders() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let primary = primary_of(&state, 0);
    ack(&mut state, primary, vec![report(id, 0, 5)], T0_MS + 10);

    dup_call(&mut state, DupRequest::Pause { id }, T0_MS + 20).unwrap();
    assert_eq!(state.data().dups[&id].status, DupStatus::Paused);
    let orders = ack(&mut state, primary, Vec::new(), T0_MS + 30).dups;
    assert!(!orders.is_empty());
    assert!(orders
        .iter()
        .all(|order| order.status == OrderStatus::Paused));
    let error = dup_call(&mut state, DupRequest::Pause { id }, T0_MS + 40).unwrap_err();
    assert!(error.message.contains("paused already"), "{error}");

    dup_call(&mut state, DupRequest::Start { id }, T0_MS + 50).unwrap();
    let version = state.data().version;
    ack(&mut state, primary, vec![report(id, 0, 6)], T0_MS + 60);
    assert_eq!(state.data().version, version + 1, "at once after a start");
    assert_eq!(state.data().dups[&id].confirmed[&0], 6);
    assert!(ack(&mut state, primary, Vec::new(), T0_MS + 70)
        .dups
        .iter()
        .all(|order| order.status == OrderStatus::Running));
    let error = dup_call(&mut state, DupRequest::Start { id }, T0_MS + 80).unwrap_err();
    assert!(error.message.contains("running already"), "{error}");
}

// Unknown ids are clear errors that change nothing.
#[test]
fn unknown_ids_are_clear_errors() {
    let mut state = cluster();
    add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let version = state.data().version;
    for request in [
        DupRequest::Pause { id: 42 },
        DupRequest::Start { id: 42 },
        DupRequest::Remove { id: 42 },
    ] {
        let error = dup_call(&mut state, request.clone(), T0_MS).unwrap_err();
        assert_eq!(error.code, ErrorCode::NotFound, "{request:?}");
        assert!(
            error.message.contains("no duplication 42") && error.message.contains("dup list"),
            "{error}"
        );
    }
    let error = dup_call(
        &mut state,
        DupRequest::List {
            table: "nope".into(),
        },
        T0_MS,
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::UnknownTable);
    assert_eq!(state.data().version, version);
}

// Dropping a table removes its duplications in the same change; a recall
// does not bring them back.
#[test]
fn dropping_a_table_removes_its_dups() {
    let mut state = cluster();
    add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let drop = Request::DropTable {
        table: "t".into(),
        reserve_seconds: None,
    };
    apply(&mut state, &drop, T0_MS + 1).unwrap();
    assert!(state.data().dups.is_empty());
    assert!(ack(&mut state, 0, Vec::new(), T0_MS + 2).dups.is_empty());
    let recall = Request::RecallTable {
        app_id: 1,
        new_name: String::new(),
    };
    apply(&mut state, &recall, T0_MS + 3).unwrap();
    assert!(state.data().dups.is_empty());
}

// `dup list` shows each duplication and, per partition, what its primary
// last reported: confirmed and committed decrees, lag, shipped records,
// errors, the last message.
#[test]
fn list_shows_progress_per_partition() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let primary = primary_of(&state, 3);
    let noisy = DupReport {
        errors: 2,
        message: "remote primary busy".into(),
        ..report(id, 3, 70)
    };
    ack(&mut state, primary, vec![noisy], T0_MS + 10);
    let rows = list(&mut state, "");
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows, list(&mut state, "t"));
    let summary = row(&rows, &format!("dup {id}"));
    for text in [
        "table=t",
        "remote_cluster_id=2",
        "remote_table=t",
        "remote_metas=10.0.0.9:34601,10.0.0.10:34601",
        "status=running",
    ] {
        assert!(summary.contains(text), "{summary}");
    }
    let partition = row(&rows, &format!("dup {id} partition 3"));
    assert_eq!(
        partition,
        format!(
            "confirmed=70 committed=75 lag_decrees=5 lag_ms=300 shipped_records=10 shipped_bytes=1000 errors=2 primary={} message=remote primary busy",
            node(primary)
        )
    );
    let silent = row(&rows, &format!("dup {id} partition 0"));
    assert!(silent.starts_with("confirmed=none no report"), "{silent}");
}

// Reports that fit no duplication's partition primary are ignored.
#[test]
fn stray_reports_change_nothing() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let primary = primary_of(&state, 0);
    let version = state.data().version;
    let strays = vec![
        report(id + 1, 0, 10),
        DupReport {
            gpid: Gpid {
                app_id: 2,
                partition_index: 0,
            },
            ..report(id, 0, 10)
        },
        report(id, 4, 10),
        report(id, -1, 10),
        // No start to propose: nothing committed yet.
        DupReport {
            committed_decree: DUP_DECREE_NONE,
            ..report(id, 0, DUP_DECREE_NONE)
        },
    ];
    ack(&mut state, primary, strays, T0_MS + 10);
    assert_eq!(state.data().version, version);
    assert!(state.data().dups[&id].confirmed.is_empty());
}

// When the primary moves, the old one is no longer heard, the new one is,
// and its order starts from the confirmed decree.
#[test]
fn reports_follow_the_primary() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let old = primary_of(&state, 0);
    ack(&mut state, old, vec![report(id, 0, 30)], T0_MS + 10);
    let mut next = state.data().clone();
    next.version += 1;
    let partition = &mut next.tables.get_mut(&1).unwrap().partitions[0];
    let new_place = partition.secondaries.remove(0);
    let old_place = std::mem::replace(&mut partition.primary, new_place);
    partition.secondaries.push(old_place);
    partition.ballot += 1;
    state.commit(next);
    let new = primary_of(&state, 0);
    assert_ne!(new, old);
    let order = ack(&mut state, new, Vec::new(), T0_MS + 20)
        .dups
        .into_iter()
        .find(|order| order.gpid == gpid(0))
        .unwrap();
    assert_eq!(order.confirmed_decree, 30);
    ack(&mut state, old, vec![report(id, 0, 90)], T0_MS + 3_000);
    ack(&mut state, new, vec![report(id, 0, 45)], T0_MS + 6_000);
    assert_eq!(state.data().dups[&id].confirmed[&0], 45);
}

// Duplications are persisted with meta's data, a restarted meta orders
// from the stored confirmed decrees and persists the first report at
// once, files written before duplication load, and a duplication of a
// table meta does not have is refused at load.
#[test]
fn dups_survive_in_the_stored_data() {
    let mut state = cluster();
    let id = add(&mut state, &add_request("t"), REMOTE, T0_MS).unwrap();
    let primary = primary_of(&state, 0);
    ack(&mut state, primary, vec![report(id, 0, 12)], T0_MS + 10);
    let json = serde_json::to_string(state.data()).unwrap();
    let loaded: MetaData = serde_json::from_str(&json).unwrap();
    assert_eq!(&loaded, state.data());
    assert_eq!(loaded.last_dup_id, id);
    assert_eq!(loaded.validate(), Ok(()));

    let mut restarted = MetaState::new(settings(1), loaded.clone());
    for index in 0..3 {
        apply(&mut restarted, &beacon(index, Vec::new()), T0_MS + 20).unwrap();
    }
    let order = ack(&mut restarted, primary, Vec::new(), T0_MS + 30)
        .dups
        .into_iter()
        .find(|order| order.gpid == gpid(0))
        .unwrap();
    assert_eq!(order.confirmed_decree, 12);
    let version = restarted.data().version;
    ack(&mut restarted, primary, vec![report(id, 0, 13)], T0_MS + 40);
    assert_eq!(restarted.data().version, version + 1);

    let mut old: serde_json::Value = serde_json::to_value(MetaData::default()).unwrap();
    let object = old.as_object_mut().unwrap();
    object.remove("dups");
    object.remove("last_dup_id");
    let loaded: MetaData = serde_json::from_value(old).unwrap();
    assert!(loaded.dups.is_empty());

    let mut orphan = state.data().clone();
    orphan.tables.clear();
    assert!(orphan.validate().unwrap_err().contains("no table has"));
}

// The cluster id is checked (1..=127, named by its config key) and shown
// by cluster_info.
#[test]
fn the_cluster_id_is_checked_and_shown() {
    assert_eq!(settings(1).validate(), Ok(()));
    assert_eq!(settings(127).validate(), Ok(()));
    for bad in [0, 128] {
        let error = settings(bad).validate().unwrap_err();
        assert!(
            error.contains("[meta] cluster_id") && error.contains("1..=127"),
            "{error}"
        );
    }
    let mut state = MetaState::new(settings(9), MetaData::default());
    let Ok(ResponseBody::Pairs(info)) = apply(&mut state, &Request::ClusterInfo, T0_MS) else {
        panic!("cluster_info failed")
    };
    assert_eq!(row(&info, "cluster_id"), "9");
}
