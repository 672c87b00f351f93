//! The simulated meta server: the production state machine
//! (`markab_core::meta::state::MetaState`) run through the production
//! persist-then-commit steps (`markab_core::meta::step::execute` and
//! `execute_tick`, which meta's server runs too) over an in-memory store — only the I/O is swapped. It
//! hears beacons and primaries' requests as wire requests, answers beacons
//! with wire acks (configurations reach nodes only that way, as in a real
//! cluster), crashes and restarts from its store, and can fail to persist.
//! Nodes are named `sim-<id>:1`; the table is app 1.

use std::collections::BTreeMap;

use markab_core::meta::settings::MetaReplication;
use markab_core::meta::state::{MetaData, MetaSettings, MetaState, MetaTime, StoredPartition};
use markab_core::meta::step::{execute, execute_tick};
use markab_core::meta::store::{MemoryMetaStore, MetaStore};
use markab_core::replication::config::ReplicationSettings;
use markab_core::replication::messages::{Ballot, NodeId, PartitionConfig, Role};
use markab_core::replication::reconfig::ReplicaReport;
use markab_core::wire::message::{
    BeaconAck, CreateTableRequest, Gpid, HostedReplica, NodeBeacon, ReplicaAssignment, ReplicaRole,
    Request, ResponseBody,
};

use super::model::PartitionId;

/// Replicas per partition (the table's replica count).
pub const REPLICAS: usize = 3;
/// The simulated table's app id (the first table meta creates).
pub const APP_ID: i32 = 1;

/// A configuration change: the partition, the configuration it replaces
/// and the new one (already persisted and committed).
pub type Change = (PartitionId, PartitionConfig, PartitionConfig);

/// What one node reports of one replica in its beacon.
pub type Report = (PartitionId, ReplicaReport, Role, u64);

/// The name meta knows node `id` by (its shard 0 address).
pub fn node_name(id: NodeId) -> String {
    format!("sim-{}:1", id.0)
}

fn node_of(name: &str) -> NodeId {
    let digits = name
        .strip_prefix("sim-")
        .and_then(|rest| rest.strip_suffix(":1"))
        .unwrap_or_else(|| panic!("{name} is not a simulated node"));
    NodeId(digits.parse().expect("a node number"))
}

pub struct SimMeta {
    settings: MetaSettings,
    state: MetaState,
    store: MemoryMetaStore,
    /// Down (crashed) until restarted: hears nothing, does nothing.
    up: bool,
    /// The configurations committed so far, in NodeId terms.
    configs: BTreeMap<PartitionId, PartitionConfig>,
    /// Every configuration meta committed, in order.
    pub persisted: Vec<(u64, PartitionId, PartitionConfig)>,
    /// Restarts of meta so far.
    pub restarts: u32,
    /// Changes committed and not yet taken by the world.
    changes: Vec<Change>,
}

impl SimMeta {
    /// Meta with `nodes` registered by a first beacon each and the table
    /// of `partitions` partitions created (placed by meta).
    pub fn new(
        replication: ReplicationSettings,
        nodes: &[NodeId],
        partitions: u32,
        now_ms: u64,
    ) -> SimMeta {
        let settings = MetaSettings {
            meta_address: "sim-meta:1".into(),
            data_dir: "/sim/meta".into(),
            hold_seconds: 3_600,
            node_timeout_ms: 5_000,
            replica_count_default: REPLICAS as i32,
            replica_count_max: 5,
            replication: Some(MetaReplication {
                beacon_interval_ms: replication.beacon_interval_ms,
                lease_ms: replication.lease_ms,
                grace_ms: replication.grace_ms,
                replica_count_min_alive: 2,
                alive_percent_min: 50,
            }),
        };
        let mut meta = SimMeta {
            state: MetaState::new(settings.clone(), MetaData::default()),
            settings,
            store: MemoryMetaStore::default(),
            up: true,
            configs: BTreeMap::new(),
            persisted: Vec::new(),
            restarts: 0,
            changes: Vec::new(),
        };
        for node in nodes {
            meta.on_beacon(*node, 0, &[], now_ms)
                .expect("a first beacon is acknowledged");
        }
        let create = Request::CreateTable(CreateTableRequest {
            table: "sim".into(),
            partition_count: partitions as i32,
            replica_count: REPLICAS as i32,
            envs: Vec::new(),
            success_if_exist: false,
        });
        let created = execute(
            &mut meta.state,
            &mut meta.store,
            &create,
            MetaTime::from(now_ms),
        );
        assert!(
            created.is_ok(),
            "the simulated table is created: {created:?}"
        );
        meta.note_changes(now_ms);
        meta
    }

    /// The current configuration of partition `pid`.
    pub fn config(&self, pid: PartitionId) -> &PartitionConfig {
        &self.configs[&pid]
    }

    pub fn configs(&self) -> &BTreeMap<PartitionId, PartitionConfig> {
        &self.configs
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Meta crashes: its volatile state (the node registry) is lost.
    pub fn crash(&mut self) {
        self.up = false;
    }

    /// Meta restarts from what its store holds.
    pub fn restart(&mut self) {
        let data = self
            .store
            .load()
            .expect("the memory store loads")
            .expect("meta saved its state before it crashed");
        self.state = MetaState::new(self.settings.clone(), data);
        self.up = true;
        self.restarts += 1;
    }

    /// Saving fails (`true`) or works again (`false`).
    pub fn fail_saves(&mut self, failing: bool) {
        self.store.fail_saves = failing;
    }

    /// A beacon from `node`; the configurations the ack carries (with the
    /// lease it grants) unless meta refused it.
    pub fn on_beacon(
        &mut self,
        node: NodeId,
        incarnation: u64,
        reports: &[Report],
        now_ms: u64,
    ) -> Option<(Vec<(PartitionId, PartitionConfig)>, u64)> {
        let name = node_name(node);
        let beacon = NodeBeacon {
            node: name.clone(),
            shard_addresses: vec![name],
            replicas: reports
                .iter()
                .map(|(pid, report, role, applied)| HostedReplica {
                    gpid: gpid(*pid),
                    shard: 0,
                    ballot: report.ballot as i64,
                    decree_applied: *applied as i64,
                    role: wire_role(*role),
                    decree_prepared: report.last_prepared as i64,
                    decree_committed: report.last_committed as i64,
                })
                .collect(),
            incarnation,
        };
        let answer = execute(
            &mut self.state,
            &mut self.store,
            &Request::Beacon(beacon),
            MetaTime::from(now_ms),
        );
        self.note_changes(now_ms);
        let Ok(ResponseBody::BeaconAck(BeaconAck {
            assignments,
            lease_ms,
            ..
        })) = answer
        else {
            return None;
        };
        let configs = assignments
            .iter()
            .map(|assignment| {
                (
                    assignment.partition_index as PartitionId,
                    config_of(assignment),
                )
            })
            .collect();
        Some((configs, lease_ms))
    }

    /// Meta's periodic tick (failure detection, the guardian).
    pub fn on_tick(&mut self, now_ms: u64) {
        // A failed save changes nothing; the next tick tries again.
        let _ = execute_tick(&mut self.state, &mut self.store, MetaTime::from(now_ms));
        self.note_changes(now_ms);
    }

    /// A primary asks to remove (`upgrade` false) or promote learner
    /// `node` of `pid` at `ballot` (the ballot proves who asks); whether
    /// meta honoured it.
    pub fn on_request(
        &mut self,
        pid: PartitionId,
        ballot: Ballot,
        node: NodeId,
        upgrade: bool,
        now_ms: u64,
    ) -> bool {
        let (gpid, ballot, node) = (gpid(pid), ballot as i64, node_name(node));
        let request = if upgrade {
            Request::UpgradeLearner { gpid, ballot, node }
        } else {
            Request::RemoveSecondary { gpid, ballot, node }
        };
        let answer = execute(
            &mut self.state,
            &mut self.store,
            &request,
            MetaTime::from(now_ms),
        );
        self.note_changes(now_ms);
        answer.is_ok()
    }

    /// Records every partition whose committed configuration changed.
    fn note_changes(&mut self, now_ms: u64) {
        let Some(table) = self.state.data().tables.get(&APP_ID) else {
            return;
        };
        for (index, stored) in table.partitions.iter().enumerate() {
            let pid = index as PartitionId;
            let new = stored_config(stored);
            if self.configs.get(&pid) == Some(&new) {
                continue;
            }
            let old = self
                .configs
                .insert(pid, new.clone())
                .unwrap_or(PartitionConfig {
                    ballot: 0,
                    primary: None,
                    secondaries: Vec::new(),
                    learners: Vec::new(),
                });
            assert!(new.ballot > old.ballot, "meta's ballots only grow");
            self.persisted.push((now_ms, pid, new.clone()));
            self.changes.push((pid, old, new));
        }
    }

    /// The changes committed since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }
}

fn gpid(pid: PartitionId) -> Gpid {
    Gpid {
        app_id: APP_ID,
        partition_index: pid as i32,
    }
}

fn wire_role(role: Role) -> ReplicaRole {
    match role {
        Role::Primary => ReplicaRole::Primary,
        Role::Secondary => ReplicaRole::Secondary,
        Role::Learner => ReplicaRole::Learner,
        Role::Inactive => ReplicaRole::Inactive,
    }
}

fn sorted(names: &[String]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = names.iter().map(|name| node_of(name)).collect();
    ids.sort();
    ids
}

fn config_of(assignment: &ReplicaAssignment) -> PartitionConfig {
    PartitionConfig {
        ballot: assignment.ballot as Ballot,
        primary: Some(node_of(&assignment.primary)),
        secondaries: sorted(&assignment.secondaries),
        learners: sorted(&assignment.learners),
    }
}

fn stored_config(stored: &StoredPartition) -> PartitionConfig {
    let names = |places: &[markab_core::meta::state::ReplicaPlace]| -> Vec<String> {
        places.iter().map(|place| place.node.clone()).collect()
    };
    PartitionConfig {
        ballot: stored.ballot as Ballot,
        primary: Some(node_of(&stored.primary.node)),
        secondaries: sorted(&names(&stored.secondaries)),
        learners: sorted(&names(&stored.learners)),
    }
}
