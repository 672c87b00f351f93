//! The simulated meta server: the production state machine
//! (`markab_core::meta::state::MetaState`) run through the production
//! persist-then-commit steps (`markab_core::meta::step::execute` and
//! `execute_tick`, which meta's server runs too) over an in-memory store — only the I/O is swapped. It
//! hears beacons and primaries' requests as wire requests, answers beacons
//! with wire acks (configurations reach nodes only that way, as in a real
//! cluster), crashes and restarts from its store, and can fail to persist.
//! Nodes are named `sim-<id>:1` (their shard 0 address; shard `s` listens
//! at `sim-<id>:<s+1>`); the table is app 1.

use std::collections::BTreeMap;

use markab_core::meta::settings::MetaReplication;
use markab_core::meta::state::{
    BackupWork, MetaData, MetaSettings, MetaState, MetaTime, RemoteFacts, StoredBackup, StoredDup,
    StoredPartition, StoredTable, TableSplit,
};
use markab_core::meta::step::{execute, execute_change, execute_step, execute_tick};
use markab_core::meta::store::{MemoryMetaStore, MetaStore};
use markab_core::replication::config::ReplicationSettings;
use markab_core::replication::messages::{Ballot, NodeId, PartitionConfig};
use markab_core::wire::message::{
    BackupPolicySpec, BackupRequest, BalancerRequest, BeaconAck, CreateTableRequest, DupRequest,
    NodeBeacon, Request, Response, ResponseBody, SplitRequest,
};

use super::model::{node_name, parse_address, shard_address, PartitionId};

/// The simulated remote cluster a duplication ships to: its meta's
/// address and cluster id (this cluster's is 1).
pub const REMOTE_META: &str = "remote-meta:1";
pub const REMOTE_CLUSTER_ID: u8 = 2;

/// Replicas per partition (the table's replica count).
pub const REPLICAS: usize = 3;
/// The simulated table's app id (the first table meta creates).
pub const APP_ID: i32 = 1;
/// Where the simulated backups go (the world keeps them in memory).
pub const SIM_BACKUP_URL: &str = "file:///sim/backups";

/// A configuration change: the partition, the configuration it replaces
/// and the new one (already persisted and committed).
pub type Change = (PartitionId, PartitionConfig, PartitionConfig);

fn node_of(name: &str) -> NodeId {
    match parse_address(name) {
        Some((node, 0)) => node,
        _ => panic!("{name} is not a simulated node"),
    }
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
    /// Balancer moves finished by the states lost in meta's crashes.
    moves_before: BTreeMap<(&'static str, &'static str), u64>,
}

impl SimMeta {
    /// Meta with `nodes` (each with its shard count) registered by a first
    /// beacon each and the table of `partitions` partitions created (placed
    /// by meta, on shards).
    pub fn new(
        replication: ReplicationSettings,
        nodes: &[(NodeId, usize)],
        partitions: u32,
        lively: bool,
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
                ..MetaReplication::default()
            }),
            cluster_id: 1,
        };
        let mut meta = SimMeta {
            state: MetaState::new(settings.clone(), MetaData::default()),
            settings,
            store: MemoryMetaStore::default(),
            up: true,
            configs: BTreeMap::new(),
            persisted: Vec::new(),
            restarts: 0,
            moves_before: BTreeMap::new(),
            changes: Vec::new(),
        };
        for (node, shards) in nodes {
            let beacon = NodeBeacon {
                node: node_name(*node),
                shard_addresses: (0..*shards)
                    .map(|shard| shard_address(*node, shard))
                    .collect(),
                replicas: Vec::new(),
                incarnation: 0,
                backups: Vec::new(),
                splits: Vec::new(),
                dups: Vec::new(),
            };
            meta.on_beacon(&beacon, now_ms)
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
        if lively {
            let level = Request::Balancer(BalancerRequest::SetLevel {
                level: "lively".into(),
            });
            let set = execute(
                &mut meta.state,
                &mut meta.store,
                &level,
                MetaTime::from(now_ms),
            );
            assert!(set.is_ok(), "the level is set: {set:?}");
        }
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
        // The balancer's counters are volatile: keep what the lost state
        // counted.
        for (key, count) in self.state.finished_moves() {
            *self.moves_before.entry(*key).or_default() += count;
        }
        self.state = MetaState::new(self.settings.clone(), data);
        self.up = true;
        self.restarts += 1;
    }

    /// Balancer moves that finished with `result` over the whole run, by
    /// kind (`switch_primary`, `move_replica`).
    pub fn moves_finished(&self, kind: &str, result: &str) -> u64 {
        let count = |moves: &BTreeMap<(&'static str, &'static str), u64>| {
            moves.get(&(kind, result)).copied().unwrap_or(0)
        };
        count(&self.moves_before) + count(self.state.finished_moves())
    }

    /// Saving fails (`true`) or works again (`false`).
    pub fn fail_saves(&mut self, failing: bool) {
        self.store.fail_saves = failing;
    }

    /// A beacon; meta's ack unless it refused it.
    pub fn on_beacon(&mut self, beacon: &NodeBeacon, now_ms: u64) -> Option<BeaconAck> {
        let answer = execute(
            &mut self.state,
            &mut self.store,
            &Request::Beacon(beacon.clone()),
            MetaTime::from(now_ms),
        );
        self.note_changes(now_ms);
        match answer {
            Ok(ResponseBody::BeaconAck(ack)) => Some(ack),
            _ => None,
        }
    }

    /// Meta's periodic tick (failure detection, the guardian).
    pub fn on_tick(&mut self, now_ms: u64) {
        // A failed save changes nothing; the next tick tries again.
        let _ = execute_tick(&mut self.state, &mut self.store, MetaTime::from(now_ms));
        self.note_changes(now_ms);
    }

    /// A primary's request (remove a secondary, promote a learner; its
    /// ballot proves who asks); whether meta honoured it.
    pub fn on_request(&mut self, request: &Request, now_ms: u64) -> bool {
        let answer = execute(
            &mut self.state,
            &mut self.store,
            request,
            MetaTime::from(now_ms),
        );
        self.note_changes(now_ms);
        answer.is_ok()
    }

    /// Starts a backup of the table (the production request); its id.
    pub fn start_backup(&mut self, now_ms: u64) -> Option<u64> {
        let request = Request::Backup(BackupRequest::Start {
            table: "sim".into(),
            url: SIM_BACKUP_URL.into(),
        });
        let answer = execute(
            &mut self.state,
            &mut self.store,
            &request,
            MetaTime::from(now_ms),
        );
        match answer {
            Ok(ResponseBody::Pairs(pairs)) => pairs
                .iter()
                .find(|(key, _)| key == "backup_id")
                .and_then(|(_, id)| id.parse().ok()),
            _ => None,
        }
    }

    /// Adds the policy `sim`: the table every `interval_seconds` from
    /// 00:00, keeping `keep` (the production request).
    pub fn add_policy(&mut self, interval_seconds: u64, keep: u32, now_ms: u64) {
        let request = Request::Backup(BackupRequest::AddPolicy(BackupPolicySpec {
            name: "sim".into(),
            tables: vec!["sim".into()],
            url: SIM_BACKUP_URL.into(),
            interval_seconds,
            start_time: "00:00".into(),
            keep,
        }));
        let added = execute(
            &mut self.state,
            &mut self.store,
            &request,
            MetaTime::from(now_ms),
        );
        assert!(added.is_ok(), "the policy is added: {added:?}");
    }

    /// An operator's split request (the production request path).
    pub fn split(&mut self, request: SplitRequest, now_ms: u64) -> Response {
        let answer = execute(
            &mut self.state,
            &mut self.store,
            &Request::PartitionSplit(request),
            MetaTime::from(now_ms),
        );
        self.note_changes(now_ms);
        answer
    }

    /// An operator's `dup add` of the table to table `sim` of the
    /// simulated remote cluster (cluster id 2, as many partitions): the
    /// production state machine's add, with the facts meta's server
    /// would have asked the remote cluster for (docs/duplication.md).
    pub fn add_dup(&mut self, now_ms: u64) -> Response {
        let request = DupRequest::Add {
            table: "sim".into(),
            remote_metas: vec![REMOTE_META.into()],
            remote_table: "sim".into(),
        };
        let remote = RemoteFacts {
            cluster_id: REMOTE_CLUSTER_ID,
            partition_count: self.table().partition_count,
        };
        let now = MetaTime::from(now_ms);
        let step = self.state.add_dup(&request, remote, now);
        let answer = execute_step(&mut self.state, &mut self.store, step, "dup");
        self.note_changes(now_ms);
        answer
    }

    /// An operator's other dup request (the production request path).
    pub fn dup(&mut self, request: DupRequest, now_ms: u64) -> Response {
        let answer = execute(
            &mut self.state,
            &mut self.store,
            &Request::Dup(request),
            MetaTime::from(now_ms),
        );
        self.note_changes(now_ms);
        answer
    }

    /// The duplications as meta's store last saved them.
    pub fn persisted_dups(&self) -> Option<&BTreeMap<u64, StoredDup>> {
        self.store.saved.as_ref().map(|data| &data.dups)
    }

    /// The table as meta holds it now (committed: persisted first).
    fn table(&self) -> &StoredTable {
        &self.state.data().tables[&APP_ID]
    }

    /// The table's partition count, as a client learns it from meta.
    pub fn partition_count(&self) -> u32 {
        self.table().partition_count as u32
    }

    /// The table's split record, if a split is running or paused.
    pub fn split_record(&self) -> Option<&TableSplit> {
        self.table().split.as_ref()
    }

    /// The table as meta's store last saved it: its partition count, the
    /// partitions it has configurations for and whether it splits.
    pub fn persisted_table(&self) -> Option<(i32, usize, bool)> {
        let table = self.store.saved.as_ref()?.tables.get(&APP_ID)?;
        Some((
            table.partition_count,
            table.partitions.len(),
            table.split.is_some(),
        ))
    }

    /// Every backup meta records, by id.
    pub fn backups(&self) -> &BTreeMap<u64, StoredBackup> {
        &self.state.data().backups
    }

    /// What meta's IO layer has to do for its backups now.
    pub fn backup_work(&self) -> Vec<BackupWork> {
        self.state.backup_work()
    }

    /// A backup as meta records it.
    pub fn backup(&self, id: u64) -> Option<&StoredBackup> {
        self.state.data().backups.get(&id)
    }

    /// The outcome of `work`, through the production persist-then-commit
    /// step (a failed save changes nothing; the work comes again).
    pub fn backup_work_done(&mut self, work: &BackupWork, now_ms: u64) {
        let change = match work {
            BackupWork::WriteManifest { backup_id, .. } => {
                self.state.backup_written(*backup_id, Ok(()), now_ms)
            }
            BackupWork::CleanUp { backup_id, .. } => self.state.backup_cleaned(*backup_id),
            BackupWork::Delete { backup_id, .. } => self.state.backup_deleted(*backup_id),
        };
        let _ = execute_change(&mut self.state, &mut self.store, change, "sim backup work");
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

fn sorted(names: &[String]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = names.iter().map(|name| node_of(name)).collect();
    ids.sort();
    ids
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
