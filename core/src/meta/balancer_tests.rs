//! Unit tests of meta's balancer: levels, operators' requests and their
//! bad input, and moves carried out step by step against beacons that
//! follow every configuration at once.

use markab_wire::message::{HostedReplica, NodeBeacon, OpError, ReplicaRole, Request, Response};

use super::*;
use crate::meta::settings::MetaReplication;
use crate::meta::state::{MetaData, MetaSettings, MetaState};

const T0_MS: u64 = 1_700_000_000_000;
const STEP_MS: u64 = 50;

fn node(index: usize) -> String {
    format!("127.0.0.1:{}", 34_800 + index * 10)
}

fn state() -> MetaState {
    let settings = MetaSettings {
        meta_address: "127.0.0.1:34601".into(),
        data_dir: "/var/tmp/meta".into(),
        hold_seconds: 100,
        node_timeout_ms: 5_000,
        replica_count_default: 3,
        replica_count_max: 5,
        replication: Some(MetaReplication::default()),
        cluster_id: 1,
    };
    MetaState::new(settings, MetaData::default())
}

/// Handles `request` and commits its persist at once.
fn apply(state: &mut MetaState, request: &Request, now_ms: u64) -> Response {
    let step = state.handle(request, now_ms);
    if let Some(data) = step.persist {
        state.commit(data);
    }
    step.reply
}

/// Node `index`'s beacon with `shards` shards, reporting every replica
/// meta places on it at the partition's current ballot, in its role — a
/// node that takes every configuration at once.
fn beacon(state: &MetaState, index: usize, shards: usize) -> Request {
    let name = node(index);
    let mut replicas = Vec::new();
    for (app_id, table) in &state.data().tables {
        for (at, partition) in table.partitions.iter().enumerate() {
            let Some(place) = partition.places().find(|place| place.node == name) else {
                continue;
            };
            let role = if partition.primary.node == name {
                ReplicaRole::Primary
            } else if partition.has_learner(&name) {
                ReplicaRole::Learner
            } else {
                ReplicaRole::Secondary
            };
            replicas.push(HostedReplica {
                gpid: Gpid {
                    app_id: *app_id,
                    partition_index: at as i32,
                },
                shard: place.shard,
                ballot: partition.ballot,
                decree_applied: 0,
                role,
                decree_prepared: 0,
                decree_committed: 0,
            });
        }
    }
    let base = 34_800 + index * 10;
    Request::Beacon(NodeBeacon {
        node: name,
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

/// Meta runs from `from_ms` to `to_ms`: the alive `nodes` (index, shards)
/// beacon every 100 ms, meta ticks every 50 ms and every change is
/// committed. Returns the time reached.
fn run(state: &mut MetaState, nodes: &[(usize, usize)], from_ms: u64, to_ms: u64) -> u64 {
    let mut at_ms = from_ms;
    while at_ms < to_ms {
        if (at_ms - T0_MS).is_multiple_of(100) {
            for (index, shards) in nodes {
                let request = beacon(state, *index, *shards);
                apply(state, &request, at_ms).expect("a beacon is acked");
            }
        }
        if let Some(next) = state.tick(at_ms) {
            state.commit(next);
        }
        at_ms += STEP_MS;
    }
    at_ms
}

/// A cluster of `nodes` (index, shards) with table "t" of `partitions`
/// partitions of three replicas, run past meta's start-up lease.
fn cluster(nodes: &[(usize, usize)], partitions: i32) -> (MetaState, u64) {
    let mut state = state();
    for (index, shards) in nodes {
        let request = beacon(&state, *index, *shards);
        apply(&mut state, &request, T0_MS).unwrap();
    }
    let create = Request::CreateTable(markab_wire::message::CreateTableRequest {
        table: "t".into(),
        partition_count: partitions,
        replica_count: 3,
        envs: Vec::new(),
        success_if_exist: false,
    });
    apply(&mut state, &create, T0_MS).unwrap();
    let now_ms = run(&mut state, nodes, T0_MS, T0_MS + 1_000);
    (state, now_ms)
}

/// The ack of node `index`'s beacon that reports a replica of `reported`
/// (besides what meta places on it) as an inactive one at ballot 1.
fn ack_reporting(
    state: &mut MetaState,
    index: usize,
    shards: usize,
    reported: Gpid,
    now_ms: u64,
) -> markab_wire::message::BeaconAck {
    let Request::Beacon(mut beacon) = beacon(state, index, shards) else {
        unreachable!("beacon builds a beacon")
    };
    beacon.replicas.retain(|replica| replica.gpid != reported);
    beacon.replicas.push(HostedReplica {
        gpid: reported,
        shard: 0,
        ballot: 1,
        decree_applied: 0,
        role: ReplicaRole::Inactive,
        decree_prepared: 0,
        decree_committed: 0,
    });
    match apply(state, &Request::Beacon(beacon), now_ms) {
        Ok(ResponseBody::BeaconAck(ack)) => ack,
        other => panic!("{other:?}"),
    }
}

/// What the partitions' primaries would ask of meta now: a primary asked
/// to hand off sends its switch request (as if nothing were in flight),
/// and one with a learner asks for its promotion (as if it caught up).
fn cooperate(state: &mut MetaState, now_ms: u64) {
    let partitions = state.data().tables[&1].partitions.clone();
    for (index, partition) in partitions.iter().enumerate() {
        let gpid = gpid(index as i32);
        let request = if let Some(to) = state.handoff_target(gpid, partition) {
            Request::SwitchPrimary {
                gpid,
                ballot: partition.ballot,
                node: to,
            }
        } else if let Some(learner) = partition.learners.first() {
            Request::UpgradeLearner {
                gpid,
                ballot: partition.ballot,
                node: learner.node.clone(),
            }
        } else {
            continue;
        };
        apply(state, &request, now_ms).expect("meta honours the primary's request");
    }
}

fn balancer(request: BalancerRequest) -> Request {
    Request::Balancer(request)
}

fn gpid(partition_index: i32) -> Gpid {
    Gpid {
        app_id: 1,
        partition_index,
    }
}

fn error_of(response: Response) -> OpError {
    response.expect_err("an error")
}

fn pairs_of(response: Response) -> Vec<(String, String)> {
    match response {
        Ok(ResponseBody::Pairs(pairs)) => pairs,
        other => panic!("pairs expected, got {other:?}"),
    }
}

fn partition(state: &MetaState, index: usize) -> StoredPartition {
    state.data().tables[&1].partitions[index].clone()
}

// The level starts steady, is persisted when set, and an unknown name is
// refused with nothing changed.
#[test]
fn levels_are_set_and_unknown_ones_refused() {
    let (mut state, now_ms) = cluster(&[(0, 1), (1, 1), (2, 1)], 1);
    let got = pairs_of(apply(
        &mut state,
        &balancer(BalancerRequest::GetLevel),
        now_ms,
    ));
    assert_eq!(got, vec![("level".to_owned(), "steady".to_owned())]);
    let version = state.data().version;
    let step = state.handle(
        &balancer(BalancerRequest::SetLevel {
            level: "busy".into(),
        }),
        now_ms,
    );
    assert!(step.persist.is_none());
    let error = error_of(step.reply);
    assert_eq!(error.code, ErrorCode::InvalidArgument);
    assert!(
        error.message.contains("freezed, steady, lively"),
        "{}",
        error.message
    );
    assert_eq!(state.data().version, version);
    apply(
        &mut state,
        &balancer(BalancerRequest::SetLevel {
            level: "lively".into(),
        }),
        now_ms,
    )
    .unwrap();
    assert_eq!(state.data().level, MetaLevel::Lively);
}

// Every move that breaks a placement rule, names an unknown partition or
// node, or races a failure or a level that forbids it is refused with a
// clear error, and nothing changes: no persist, no move.
#[test]
fn bad_proposals_change_nothing() {
    let nodes = [(0, 1), (1, 1), (2, 1), (3, 1)];
    let (mut state, now_ms) = cluster(&nodes, 1);
    let p = partition(&state, 0);
    let primary = p.primary.node.clone();
    let secondary = p.secondaries[0].node.clone();
    let outsider = (0..4)
        .map(node)
        .find(|name| !p.holds(name))
        .expect("four nodes, three replicas");
    let propose = |proposed: ProposedMove| balancer(BalancerRequest::Propose(proposed));
    let cases = [
        (
            propose(ProposedMove::MovePrimary {
                gpid: Gpid {
                    app_id: 9,
                    partition_index: 0,
                },
                to: secondary.clone(),
            }),
            ErrorCode::UnknownTable,
            "app_id 9",
        ),
        (
            propose(ProposedMove::MovePrimary {
                gpid: gpid(4),
                to: secondary.clone(),
            }),
            ErrorCode::UnknownPartition,
            "no partition 4",
        ),
        (
            propose(ProposedMove::MovePrimary {
                gpid: gpid(0),
                to: outsider.clone(),
            }),
            ErrorCode::InvalidArgument,
            "not a secondary",
        ),
        (
            propose(ProposedMove::CopyReplica {
                gpid: gpid(0),
                from: primary.clone(),
                to: secondary.clone(),
            }),
            ErrorCode::InvalidArgument,
            "never share a node",
        ),
        (
            propose(ProposedMove::CopyReplica {
                gpid: gpid(0),
                from: outsider.clone(),
                to: secondary.clone(),
            }),
            ErrorCode::InvalidArgument,
            "holds no replica",
        ),
        (
            propose(ProposedMove::CopyReplica {
                gpid: gpid(0),
                from: secondary.clone(),
                to: "127.0.0.1:1".into(),
            }),
            ErrorCode::InvalidArgument,
            "not an alive node",
        ),
        (
            propose(ProposedMove::RemoveReplica {
                gpid: gpid(0),
                node: primary.clone(),
            }),
            ErrorCode::InvalidArgument,
            "is its primary",
        ),
        (
            propose(ProposedMove::RemoveReplica {
                gpid: gpid(0),
                node: outsider.clone(),
            }),
            ErrorCode::InvalidArgument,
            "not a secondary",
        ),
        (
            balancer(BalancerRequest::RemoveNode {
                node: "127.0.0.1:1".into(),
                cancel: false,
            }),
            ErrorCode::InvalidArgument,
            "unknown node",
        ),
    ];
    let version = state.data().version;
    for (request, code, says) in cases {
        let step = state.handle(&request, now_ms);
        assert!(step.persist.is_none(), "{request:?}");
        let error = error_of(step.reply);
        assert_eq!(error.code, code, "{request:?}: {}", error.message);
        assert!(
            error.message.contains(says),
            "{request:?}: {}",
            error.message
        );
    }
    assert!(state.moves().is_empty());
    assert_eq!(state.data().version, version);

    // Freezed: no proposal, no balance.
    apply(
        &mut state,
        &balancer(BalancerRequest::SetLevel {
            level: "freezed".into(),
        }),
        now_ms,
    )
    .unwrap();
    for request in [
        propose(ProposedMove::MovePrimary {
            gpid: gpid(0),
            to: secondary.clone(),
        }),
        balancer(BalancerRequest::Balance { apply: true }),
    ] {
        let error = error_of(state.handle(&request, now_ms).reply);
        assert!(error.message.contains("freezed"), "{}", error.message);
    }
    apply(
        &mut state,
        &balancer(BalancerRequest::SetLevel {
            level: "steady".into(),
        }),
        now_ms,
    )
    .unwrap();

    // A move racing a failure: the outsider falls silent past the grace;
    // a copy onto it is refused, and so is any move of a partition with a
    // dead member.
    let alive: Vec<(usize, usize)> = nodes
        .iter()
        .copied()
        .filter(|(index, _)| node(*index) != outsider)
        .collect();
    let now_ms = run(&mut state, &alive, now_ms, now_ms + 1_500);
    let error = error_of(
        state
            .handle(
                &propose(ProposedMove::CopyReplica {
                    gpid: gpid(0),
                    from: secondary.clone(),
                    to: outsider.clone(),
                }),
                now_ms,
            )
            .reply,
    );
    assert!(
        error.message.contains("not an alive node"),
        "{}",
        error.message
    );
    assert!(state.moves().is_empty());
}

// A primary switch: meta asks the primary to hand off in its assignment;
// it refuses a switch request nobody asked for, and honours the one the
// primary sends at the current ballot: the target becomes primary, the
// old one a secondary, under ballot + 1. A stale ballot is refused.
#[test]
fn a_primary_switch_goes_through_the_handoff() {
    let nodes = [(0, 1), (1, 1), (2, 1)];
    let (mut state, now_ms) = cluster(&nodes, 1);
    let before = partition(&state, 0);
    let from = before.primary.node.clone();
    let to = before.secondaries[0].node.clone();
    let other = before.secondaries[1].node.clone();
    let switch = |ballot: i64, node: &str| Request::SwitchPrimary {
        gpid: gpid(0),
        ballot,
        node: node.to_owned(),
    };
    let error = error_of(state.handle(&switch(before.ballot, &to), now_ms).reply);
    assert!(error.message.contains("no switch"), "{}", error.message);

    apply(
        &mut state,
        &balancer(BalancerRequest::Propose(ProposedMove::MovePrimary {
            gpid: gpid(0),
            to: to.clone(),
        })),
        now_ms,
    )
    .unwrap();
    let ack_of = |state: &mut MetaState, name: &str| {
        let index = (0..3).find(|i| node(*i) == name).unwrap();
        let request = beacon(state, index, 1);
        match apply(state, &request, now_ms) {
            Ok(ResponseBody::BeaconAck(ack)) => ack,
            other => panic!("{other:?}"),
        }
    };
    let ack = ack_of(&mut state, &from);
    assert_eq!(ack.assignments[0].handoff_to, to);
    // Both ends of the switch beacon again soon (**switch-beacons-soon**),
    // the third member at its usual interval.
    assert_eq!(ack.beacon_again_ms, SWITCH_BEACON_MS);
    assert_eq!(ack_of(&mut state, &to).beacon_again_ms, SWITCH_BEACON_MS);
    assert_eq!(ack_of(&mut state, &other).beacon_again_ms, 0);
    let moves = pairs_of(apply(
        &mut state,
        &balancer(BalancerRequest::ListMoves),
        now_ms,
    ));
    assert!(moves[1].1.contains("switch_primary"), "{moves:?}");

    for (request, code) in [
        (switch(before.ballot - 1, &to), ErrorCode::StaleBallot),
        (switch(before.ballot, &other), ErrorCode::InvalidArgument),
    ] {
        let step = state.handle(&request, now_ms);
        assert!(step.persist.is_none());
        assert_eq!(error_of(step.reply).code, code);
    }
    assert_eq!(
        apply(&mut state, &switch(before.ballot, &to), now_ms),
        Ok(ResponseBody::Done)
    );
    let after = partition(&state, 0);
    assert_eq!(after.ballot, before.ballot + 1);
    assert_eq!(after.primary.node, to);
    let ack = ack_of(&mut state, &to);
    assert_eq!(ack.beacon_again_ms, 0, "the switch is done");
    assert_eq!(ack.assignments[0].primary, to);
    assert!(after.has_secondary(&from) && after.has_secondary(&other));
    // The old primary may still serve under its lease for a while: no
    // removal of it is honoured before then.
    let step = state.handle(
        &Request::RemoveSecondary {
            gpid: gpid(0),
            ballot: after.ballot,
            node: from.clone(),
        },
        now_ms + 10,
    );
    assert_eq!(error_of(step.reply).code, ErrorCode::Busy);
    run(&mut state, &nodes, now_ms + 50, now_ms + 500);
    assert!(state.moves().is_empty(), "the switch finished");
    assert_eq!(state.finished_moves()[&("switch_primary", "ok")], 1);
}

// A replica move: a learner on the target, promoted on the primary's
// request, then the source removed once it took the configuration.
#[test]
fn a_replica_move_adds_promotes_and_removes() {
    let nodes = [(0, 1), (1, 1), (2, 1), (3, 2)];
    let (mut state, now_ms) = cluster(&nodes, 1);
    let before = partition(&state, 0);
    let from = before.secondaries[0].node.clone();
    let to = (0..4).map(node).find(|name| !before.holds(name)).unwrap();
    apply(
        &mut state,
        &balancer(BalancerRequest::Propose(ProposedMove::CopyReplica {
            gpid: gpid(0),
            from: from.clone(),
            to: to.clone(),
        })),
        now_ms,
    )
    .unwrap();
    let now_ms = run(&mut state, &nodes, now_ms, now_ms + 200);
    let learning = partition(&state, 0);
    assert!(learning.has_learner(&to), "{learning:?}");
    assert!(learning.has_secondary(&from));
    // The primary asks for the promotion once the learner caught up.
    apply(
        &mut state,
        &Request::UpgradeLearner {
            gpid: gpid(0),
            ballot: learning.ballot,
            node: to.clone(),
        },
        now_ms,
    )
    .unwrap();
    run(&mut state, &nodes, now_ms, now_ms + 500);
    let after = partition(&state, 0);
    assert!(after.has_secondary(&to));
    assert!(!after.holds(&from), "{after:?}");
    assert_eq!(after.secondaries.len(), 2);
    assert_eq!(state.finished_moves()[&("move_replica", "ok")], 1);
    // The source still reports its replica: the partition is whole
    // without it, so it is told to drop the data (**moved-replica-dropped**).
    let index = (0..4).find(|i| node(*i) == from).unwrap();
    let acked = ack_reporting(&mut state, index, 1, gpid(0), now_ms + 600);
    assert_eq!(acked.drops, vec![gpid(0)]);
}

// A replica removed from a partition that is then short is not dropped:
// its data may spare the guardian's learner a full copy (on three nodes
// the guardian adds it back on the same node).
#[test]
fn a_replica_of_a_short_partition_is_kept() {
    let nodes = [(0, 1), (1, 1), (2, 1)];
    let (mut state, now_ms) = cluster(&nodes, 1);
    let removed = partition(&state, 0).secondaries[0].node.clone();
    apply(
        &mut state,
        &balancer(BalancerRequest::Propose(ProposedMove::RemoveReplica {
            gpid: gpid(0),
            node: removed.clone(),
        })),
        now_ms,
    )
    .unwrap();
    assert!(!partition(&state, 0).holds(&removed));
    let index = (0..3).find(|i| node(*i) == removed).unwrap();
    let acked = ack_reporting(&mut state, index, 1, gpid(0), now_ms);
    assert!(acked.drops.is_empty(), "{acked:?}");
}

// remove_node keeps new replicas off the node and moves its own away; it
// reports them until none is left, then that the node is safe to stop.
// `-c` takes it back.
#[test]
fn a_removed_node_is_emptied() {
    let nodes = [(0, 2), (1, 2), (2, 2), (3, 2)];
    let (mut state, now_ms) = cluster(&nodes, 8);
    let removed = node(0);
    let remove = |cancel: bool| {
        balancer(BalancerRequest::RemoveNode {
            node: node(0),
            cancel,
        })
    };
    let answer = pairs_of(apply(&mut state, &remove(false), now_ms));
    assert!(answer.contains(&("safe_to_stop".to_owned(), "false".to_owned())));
    assert!(state.data().removing_nodes.contains(&removed));
    let mut at_ms = now_ms;
    for _ in 0..200 {
        at_ms = run(&mut state, &nodes, at_ms, at_ms + 100);
        cooperate(&mut state, at_ms);
        let answer = pairs_of(apply(&mut state, &remove(false), at_ms));
        if answer.contains(&("safe_to_stop".to_owned(), "true".to_owned())) {
            break;
        }
    }
    let answer = pairs_of(apply(&mut state, &remove(false), at_ms));
    assert!(
        answer.contains(&("safe_to_stop".to_owned(), "true".to_owned())),
        "{answer:?}"
    );
    for partition in &state.data().tables[&1].partitions {
        assert!(!partition.holds(&removed));
        assert_eq!(partition.secondaries.len(), 2);
    }
    let infos = match apply(&mut state, &Request::ListNodes, at_ms) {
        Ok(ResponseBody::Nodes(infos)) => infos,
        other => panic!("{other:?}"),
    };
    let info = infos.iter().find(|info| info.node == removed).unwrap();
    assert!(info.removing);
    assert_eq!(info.replica_count, 0);
    let kept: i32 = infos.iter().map(|info| info.replica_count).sum();
    assert_eq!(kept, 24);
    for info in &infos {
        assert_eq!(
            info.shard_replica_counts.iter().sum::<i32>(),
            info.replica_count
        );
    }
    apply(&mut state, &remove(true), at_ms).unwrap();
    assert!(state.data().removing_nodes.is_empty());
}

// Lively: a node that joins a balanced cluster receives its share, and
// primaries spread (run until the plan moves nothing).
#[test]
fn a_lively_meta_gives_a_new_node_its_share() {
    let three = [(0, 2), (1, 2), (2, 2)];
    let (mut state, now_ms) = cluster(&three, 16);
    apply(
        &mut state,
        &balancer(BalancerRequest::SetLevel {
            level: "lively".into(),
        }),
        now_ms,
    )
    .unwrap();
    let four = [(0, 2), (1, 2), (2, 2), (3, 2)];
    let mut at_ms = now_ms;
    for _ in 0..400 {
        at_ms = run(&mut state, &four, at_ms, at_ms + 100);
        cooperate(&mut state, at_ms);
        if state.moves().is_empty() {
            let planned = pairs_of(apply(
                &mut state,
                &balancer(BalancerRequest::Balance { apply: false }),
                at_ms,
            ));
            if planned[0].1 == "0" {
                break;
            }
        }
    }
    let infos = match apply(&mut state, &Request::ListNodes, at_ms) {
        Ok(ResponseBody::Nodes(infos)) => infos,
        other => panic!("{other:?}"),
    };
    let replicas: Vec<i32> = infos.iter().map(|info| info.replica_count).collect();
    let primaries: Vec<i32> = infos.iter().map(|info| info.primary_count).collect();
    // 48 replicas and 16 primaries over 4 nodes: 12 and 4 each.
    assert_eq!(replicas, vec![12; 4], "{infos:?}");
    assert_eq!(primaries, vec![4; 4], "{infos:?}");
    for info in &infos {
        let shards = &info.shard_replica_counts;
        assert!(shards.iter().max().unwrap() - shards.iter().min().unwrap() <= 1);
    }
}
