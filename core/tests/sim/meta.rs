//! The simulated meta server: the production state machine
//! (`markab_core::meta::state::MetaState`) behind the production gate
//! (`markab_core::meta::leader::LeaderGate`, which runs the production
//! persist-then-commit steps of `markab_core::meta::step`, as meta's
//! server does) over an in-memory store — only the I/O is swapped. It
//! hears beacons and primaries' requests as wire requests, answers beacons
//! with wire acks (configurations reach nodes only that way, as in a real
//! cluster), crashes and restarts from its store, and can fail to persist.
//! Per seed it is one sole meta, or a group of metas sharing the store
//! through a simulated etcd (`etcd.rs`): one leads a term at a time, the
//! others answer `NOT_LEADER`, and the store fences every save of a
//! deposed term (docs/meta-ha.md, "In the simulator").
//! Nodes are named `sim-<id>:1` (their shard 0 address; shard `s` listens
//! at `sim-<id>:<s+1>`); the table is app 1.

use std::collections::BTreeMap;

use markab_core::meta::leader::{LeaderGate, Leadership};
use markab_core::meta::settings::MetaReplication;
use markab_core::meta::state::{
    BackupWork, MetaData, MetaSettings, MetaState, MetaTime, RemoteFacts, StoredBackup, StoredDup,
    StoredPartition, StoredTable, TableSplit,
};
use markab_core::meta::step::{execute_change, execute_step};
use markab_core::meta::store::{MemoryMetaStore, MetaStore, MetaStoreError};
use markab_core::replication::config::ReplicationSettings;
use markab_core::replication::messages::{Ballot, NodeId, PartitionConfig};
use markab_core::wire::message::{
    BackupPolicySpec, BackupRequest, BalancerRequest, BeaconAck, CreateTableRequest, DupRequest,
    ErrorCode, NodeBeacon, OpError, Request, Response, ResponseBody, SplitRequest,
};

use super::etcd::Etcd;
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

/// What a meta answered a node's beacon or request.
#[derive(Debug)]
pub enum MetaAnswer<T> {
    /// Served: the answer (`None` when meta refused it).
    Served(Option<T>),
    /// `NOT_LEADER`: the leader's address, empty when unknown.
    NotLeader(String),
}

/// A configuration change a term made early: before `lease_ms +
/// beacon_interval_ms` from its first input, it removed or replaced
/// `nodes` (the world judges whether their processes may hold a lease of
/// an earlier term: **leader-waits-out-leases**).
#[derive(Clone, Debug)]
pub struct EarlyChange {
    pub at_ms: u64,
    pub epoch: i64,
    pub term_start_ms: u64,
    pub pid: PartitionId,
    pub old: PartitionConfig,
    pub new: PartitionConfig,
    pub nodes: Vec<NodeId>,
}

/// Why an input reached meta: a primary's own request (its ballot proves
/// it asks), a node's beacon (what it says of its own replicas), or
/// anything else (ticks, operators).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    ByPrimary,
    ByNode(NodeId),
    Other,
}

/// What the store wrapper saw: saves fenced, and saves of a deposed term
/// that landed (each a violation of **deposed-leader-fenced**).
#[derive(Debug, Default)]
struct StoreAudit {
    /// The epoch etcd's leader key holds now (0 for a sole meta).
    leader_epoch: i64,
    fenced: u64,
    landed_deposed: Vec<String>,
}

/// One meta's handle on the shared store: it begins its own terms (the
/// epoch its saves carry), and the fencing rule is the store's own
/// (`MemoryMetaStore::fenced_below_epoch`), as etcd's compare would be.
struct TermStore<'a> {
    store: &'a mut MemoryMetaStore,
    epoch: &'a mut i64,
    audit: &'a mut StoreAudit,
}

impl MetaStore for TermStore<'_> {
    fn begin_term(&mut self, epoch: i64) -> Result<Option<MetaData>, MetaStoreError> {
        *self.epoch = epoch;
        self.store.load()
    }

    fn load(&self) -> Result<Option<MetaData>, MetaStoreError> {
        self.store.load()
    }

    fn save(&mut self, data: &MetaData) -> Result<(), MetaStoreError> {
        self.store.term_epoch = *self.epoch;
        let result = self.store.save(data);
        match &result {
            Err(MetaStoreError::Fenced { .. }) => self.audit.fenced += 1,
            Ok(()) if *self.epoch < self.audit.leader_epoch => {
                self.audit.landed_deposed.push(format!(
                    "deposed-leader-fenced: a save of term {} landed while term {} leads",
                    self.epoch, self.audit.leader_epoch
                ));
            }
            _ => {}
        }
        result
    }
}

/// One meta process: the production gate over its state machine.
struct MetaProc {
    address: String,
    gate: LeaderGate,
    /// The epoch of the term this process began in the store.
    store_epoch: i64,
    /// Down (crashed) until restarted: hears nothing, does nothing.
    up: bool,
    /// Bumped by each restart: events of a previous life are ignored.
    life: u64,
    /// Paused (SIGSTOP) until then: everything meant for it waits.
    paused_until_ms: u64,
    /// It was stopped in the middle of an input, after reading its clock:
    /// its first input after the pause runs with this reading.
    stale_ms: Option<u64>,
    /// The balancer counters of its term as of its last input, and the
    /// term they belong to (counted by `terms_started`).
    seen_moves: BTreeMap<(&'static str, &'static str), u64>,
    moves_term: u64,
    /// Terms started as of its last input.
    seen_terms: u64,
}

/// Counters of the meta group (summed over seeds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCounters {
    /// Seeds that ran a group of metas.
    pub groups: u32,
    /// Leader keys won after the first.
    pub leader_changes: u32,
    /// Terms the gates started (state machines loaded).
    pub terms: u32,
    /// Saves the store fenced (**deposed-leader-fenced**).
    pub fenced_saves: u64,
    /// `NOT_LEADER` answers to nodes.
    pub not_leader: u64,
    /// Pauses of the leader meta past its session, and those that stopped
    /// it in the middle of an input.
    pub leader_pauses: u32,
    pub stale_inputs: u32,
    /// Crashes of the leader meta.
    pub leader_crashes: u32,
    /// Early member changes of a term, all judged safe (their node's
    /// process had stopped since the term began).
    pub early_changes_safe: u32,
    /// Early member changes at the primary's request or the member's own
    /// node's report.
    pub early_changes_asked: u32,
}

impl GroupCounters {
    pub fn add(&mut self, other: &GroupCounters) {
        self.groups += other.groups;
        self.leader_changes += other.leader_changes;
        self.terms += other.terms;
        self.fenced_saves += other.fenced_saves;
        self.not_leader += other.not_leader;
        self.leader_pauses += other.leader_pauses;
        self.stale_inputs += other.stale_inputs;
        self.leader_crashes += other.leader_crashes;
        self.early_changes_safe += other.early_changes_safe;
        self.early_changes_asked += other.early_changes_asked;
    }
}

pub struct SimMeta {
    settings: MetaSettings,
    metas: Vec<MetaProc>,
    /// The store every meta shares.
    store: MemoryMetaStore,
    audit: StoreAudit,
    /// The etcd of a group; `None` for a sole meta.
    etcd: Option<Etcd>,
    /// The configurations committed so far, in NodeId terms.
    configs: BTreeMap<PartitionId, PartitionConfig>,
    /// Every configuration meta committed, in order.
    pub persisted: Vec<(u64, PartitionId, PartitionConfig)>,
    /// Restarts of meta so far.
    pub restarts: u32,
    /// Changes committed and not yet taken by the world.
    changes: Vec<Change>,
    /// Balancer moves finished by the states lost (crashes, ended terms).
    moves_before: BTreeMap<(&'static str, &'static str), u64>,
    /// When each term had its first input (meta's clock).
    term_starts: BTreeMap<i64, u64>,
    /// Terms started and not yet taken by the world.
    new_terms: Vec<i64>,
    /// Early member changes not yet taken by the world.
    early: Vec<EarlyChange>,
    lease_ms: u64,
    beacon_interval_ms: u64,
    pub group: GroupCounters,
    /// A committed configuration whose ballot did not grow.
    shrunk: Option<String>,
}

impl SimMeta {
    /// Meta with `nodes` (each with its shard count) registered by a first
    /// beacon each and the table of `partitions` partitions created (placed
    /// by meta, on shards). `group`: a group of that many metas sharing
    /// the store through an etcd whose sessions live `ttl_ms`; meta 0
    /// leads first. `None`: one sole meta.
    pub fn new(
        replication: ReplicationSettings,
        nodes: &[(NodeId, usize)],
        partitions: u32,
        lively: bool,
        group: Option<(usize, u64)>,
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
        let (metas, etcd) = match group {
            None => {
                let gate = LeaderGate::sole(MetaState::new(settings.clone(), MetaData::default()));
                (
                    vec![MetaProc::new(settings.meta_address.clone(), gate)],
                    None,
                )
            }
            Some((count, ttl_ms)) => {
                let etcd = Etcd::new(count, ttl_ms, now_ms);
                let addresses: Vec<String> = (0..count).map(meta_address).collect();
                let metas = (0..count)
                    .map(|meta| {
                        let settings = MetaSettings {
                            meta_address: addresses[meta].clone(),
                            ..settings.clone()
                        };
                        let leadership = etcd.leadership(meta, 0, None, &addresses);
                        let mut gate = LeaderGate::new(settings, leadership.clone());
                        gate.set_leadership(leadership, addresses.clone());
                        MetaProc::new(addresses[meta].clone(), gate)
                    })
                    .collect();
                (metas, Some(etcd))
            }
        };
        let mut meta = SimMeta {
            settings,
            metas,
            store: MemoryMetaStore::default(),
            audit: StoreAudit::default(),
            etcd,
            configs: BTreeMap::new(),
            persisted: Vec::new(),
            restarts: 0,
            moves_before: BTreeMap::new(),
            changes: Vec::new(),
            term_starts: BTreeMap::new(),
            new_terms: Vec::new(),
            early: Vec::new(),
            lease_ms: replication.lease_ms,
            beacon_interval_ms: replication.beacon_interval_ms,
            group: GroupCounters::default(),
            shrunk: None,
        };
        if let Some((_, epoch)) = meta.etcd.as_ref().and_then(Etcd::leader) {
            meta.elected(epoch);
            meta.group.groups = 1;
            meta.group.leader_changes = 0;
        }
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
            let acked = meta.on_beacon(0, &beacon, now_ms);
            assert!(
                matches!(acked, MetaAnswer::Served(Some(_))),
                "a first beacon is acknowledged: {acked:?}"
            );
        }
        let create = Request::CreateTable(CreateTableRequest {
            table: "sim".into(),
            partition_count: partitions as i32,
            replica_count: REPLICAS as i32,
            envs: Vec::new(),
            success_if_exist: false,
        });
        let created = meta.operator(&create, now_ms);
        assert!(
            created.is_ok(),
            "the simulated table is created: {created:?}"
        );
        if lively {
            let level = Request::Balancer(BalancerRequest::SetLevel {
                level: "lively".into(),
            });
            let set = meta.operator(&level, now_ms);
            assert!(set.is_ok(), "the level is set: {set:?}");
        }
        meta.note_changes(now_ms, None, Asked::Other);
        meta
    }

    /// The number of metas (1: a sole meta).
    pub fn count(&self) -> usize {
        self.metas.len()
    }

    /// Whether the metas form a group (share an etcd).
    pub fn is_group(&self) -> bool {
        self.etcd.is_some()
    }

    /// The current configuration of partition `pid`.
    pub fn config(&self, pid: PartitionId) -> &PartitionConfig {
        &self.configs[&pid]
    }

    pub fn configs(&self) -> &BTreeMap<PartitionId, PartitionConfig> {
        &self.configs
    }

    /// Whether meta `meta` runs (is not crashed).
    pub fn meta_up(&self, meta: usize) -> bool {
        self.metas[meta].up
    }

    /// Whether meta `meta` is paused at `now_ms` (until when).
    pub fn paused_until(&self, meta: usize, now_ms: u64) -> Option<u64> {
        let until_ms = self.metas[meta].paused_until_ms;
        (until_ms > now_ms).then_some(until_ms)
    }

    /// The life (restart count) of meta `meta`.
    pub fn life(&self, meta: usize) -> u64 {
        self.metas[meta].life
    }

    /// The meta that serves at `now_ms` and can take an input now (up and
    /// not paused), if any: where an operator's request lands.
    pub fn serving(&self, now_ms: u64) -> Option<usize> {
        self.metas.iter().position(|proc| {
            proc.up
                && proc.paused_until_ms <= now_ms
                && proc.gate.leadership().serving(now_ms).is_some()
        })
    }

    /// Some meta takes an operator's request now.
    pub fn is_up(&self, now_ms: u64) -> bool {
        self.serving(now_ms).is_some()
    }

    /// Meta `meta` crashes: its volatile state (the node registry, its
    /// term) is lost; its etcd session lives on until it expires.
    pub fn crash(&mut self, meta: usize) {
        self.keep_moves(meta, true);
        let proc = &mut self.metas[meta];
        proc.up = false;
        proc.paused_until_ms = 0;
        proc.stale_ms = None;
    }

    /// Meta `meta` restarts: a sole meta from what the store holds; a
    /// group's as a follower that knows no leader yet (its campaign
    /// starts again).
    pub fn restart(&mut self, meta: usize) {
        let settings = MetaSettings {
            meta_address: self.metas[meta].address.clone(),
            ..self.settings.clone()
        };
        let gate = if self.etcd.is_some() {
            let members = self.metas.iter().map(|proc| proc.address.clone()).collect();
            let mut gate = LeaderGate::new(settings, Leadership::Follower { leader: None });
            gate.set_leadership(Leadership::Follower { leader: None }, members);
            gate
        } else {
            let data = self
                .store
                .load()
                .expect("the memory store loads")
                .expect("meta saved its state before it crashed");
            LeaderGate::sole(MetaState::new(settings, data))
        };
        let life = self.metas[meta].life + 1;
        let address = self.metas[meta].address.clone();
        self.metas[meta] = MetaProc {
            life,
            ..MetaProc::new(address, gate)
        };
        self.restarts += 1;
    }

    /// Meta `meta` is stopped until `until_ms`; `mid_input`: in the middle
    /// of an input, after reading its clock at `now_ms`.
    pub fn pause(&mut self, meta: usize, now_ms: u64, until_ms: u64, mid_input: bool) {
        let proc = &mut self.metas[meta];
        proc.paused_until_ms = until_ms;
        proc.stale_ms = mid_input.then_some(now_ms);
        self.group.leader_pauses += 1;
    }

    /// The holder of etcd's leader key.
    pub fn etcd_leader(&self) -> Option<(usize, i64)> {
        self.etcd.as_ref().and_then(Etcd::leader)
    }

    pub fn ttl_ms(&self) -> u64 {
        self.etcd.as_ref().map_or(0, |etcd| etcd.ttl_ms)
    }

    /// A keepalive of `meta` sent at `sent_ms` reaches etcd at `now_ms`;
    /// what its campaign learns from the answer, and the new leader if an
    /// election happened.
    pub fn etcd_keepalive(
        &mut self,
        meta: usize,
        life: u64,
        sent_ms: u64,
        now_ms: u64,
    ) -> (Leadership, Option<(usize, i64)>) {
        let etcd = self.etcd.as_mut().expect("a group");
        let elected = etcd.keepalive(meta, life, sent_ms, now_ms);
        if let Some((_, epoch)) = elected {
            self.elected(epoch);
        }
        (self.leadership_of(meta, life, Some(sent_ms)), elected)
    }

    /// etcd ends the sessions whose time is up; the new leader, if one was
    /// elected.
    pub fn etcd_expire(&mut self, now_ms: u64) -> Option<(usize, i64)> {
        let elected = self.etcd.as_mut()?.expire(now_ms);
        if let Some((_, epoch)) = elected {
            self.elected(epoch);
        }
        elected
    }

    /// A new leader key at `epoch`: the store fences every earlier term.
    fn elected(&mut self, epoch: i64) {
        self.store.fenced_below_epoch = epoch;
        self.audit.leader_epoch = epoch;
        self.group.leader_changes += 1;
    }

    /// What life `life` of `meta`'s campaign learns now (`sent_ms`: the
    /// keepalive it answers).
    pub fn leadership_of(&self, meta: usize, life: u64, sent_ms: Option<u64>) -> Leadership {
        let addresses: Vec<String> = self.metas.iter().map(|proc| proc.address.clone()).collect();
        self.etcd
            .as_ref()
            .expect("a group")
            .leadership(meta, life, sent_ms, &addresses)
    }

    /// The campaign of `meta` tells its gate.
    pub fn set_leadership(&mut self, meta: usize, leadership: Leadership) {
        self.keep_moves(meta, false);
        let members = self.metas.iter().map(|proc| proc.address.clone()).collect();
        self.metas[meta].gate.set_leadership(leadership, members);
        self.keep_moves(meta, false);
    }

    /// **one-serving-meta**: at most one meta serves now, and it holds
    /// etcd's leader key at the epoch it serves; and no save of a deposed
    /// term landed (**deposed-leader-fenced**).
    pub fn check(&self, now_ms: u64) -> Result<(), String> {
        if let Some(violation) = self.audit.landed_deposed.first() {
            return Err(violation.clone());
        }
        if let Some(violation) = &self.shrunk {
            return Err(violation.clone());
        }
        let Some(etcd) = &self.etcd else {
            return Ok(());
        };
        let serving: Vec<(usize, i64)> = self
            .metas
            .iter()
            .enumerate()
            .filter(|(_, proc)| proc.up)
            .filter_map(|(meta, proc)| {
                proc.gate
                    .leadership()
                    .serving(now_ms)
                    .map(|epoch| (meta, epoch))
            })
            .collect();
        if serving.len() > 1 {
            return Err(format!(
                "one-serving-meta: metas (index, epoch) {serving:?} all serve at {now_ms} ms"
            ));
        }
        if let Some(&(meta, epoch)) = serving.first() {
            if etcd.leader() != Some((meta, epoch)) {
                return Err(format!(
                    "one-serving-meta: meta {meta} serves term {epoch} at {now_ms} ms, but etcd's leader key is {:?}",
                    etcd.leader()
                ));
            }
        }
        Ok(())
    }

    /// Balancer moves that finished with `result` over the whole run, by
    /// kind (`switch_primary`, `move_replica`).
    pub fn moves_finished(&self, kind: &str, result: &str) -> u64 {
        let count = |moves: &BTreeMap<(&'static str, &'static str), u64>| {
            moves.get(&(kind, result)).copied().unwrap_or(0)
        };
        count(&self.moves_before)
            + self
                .metas
                .iter()
                .filter(|proc| proc.up)
                .filter_map(|proc| proc.gate.state())
                .map(|state| count(state.finished_moves()))
                .sum::<u64>()
    }

    /// The counters of the group, with the store's.
    pub fn group_counters(&self) -> GroupCounters {
        GroupCounters {
            fenced_saves: self.audit.fenced,
            ..self.group
        }
    }

    /// Saving fails (`true`) or works again (`false`).
    pub fn fail_saves(&mut self, failing: bool) {
        self.store.fail_saves = failing;
    }

    /// Keeps the balancer counters of `meta`'s term when the term is gone
    /// (or goes now: `ending`).
    fn keep_moves(&mut self, meta: usize, ending: bool) {
        let proc = &mut self.metas[meta];
        let term = proc.gate.terms_started();
        if ending || term != proc.moves_term || proc.gate.state().is_none() {
            for (key, count) in std::mem::take(&mut proc.seen_moves) {
                *self.moves_before.entry(key).or_default() += count;
            }
        }
        proc.moves_term = term;
        if !ending {
            proc.seen_moves = proc
                .gate
                .state()
                .map(|state| state.finished_moves().clone())
                .unwrap_or_default();
        }
    }

    /// Runs one input on meta `meta` through its gate over the shared
    /// store, at its clock (a stale reading once after a pause that
    /// stopped it mid-input), then notes what changed.
    fn input<R>(
        &mut self,
        meta: usize,
        now_ms: u64,
        asked: Asked,
        call: impl FnOnce(&mut LeaderGate, &mut dyn MetaStore, MetaTime) -> R,
    ) -> R {
        let proc = &mut self.metas[meta];
        let clock_ms = match proc.stale_ms.take() {
            Some(stale_ms) => {
                self.group.stale_inputs += 1;
                stale_ms
            }
            None => now_ms,
        };
        let mut store = TermStore {
            store: &mut self.store,
            epoch: &mut proc.store_epoch,
            audit: &mut self.audit,
        };
        let result = call(&mut proc.gate, &mut store, MetaTime::from(clock_ms));
        if proc.gate.terms_started() > proc.seen_terms {
            proc.seen_terms = proc.gate.terms_started();
            if let Some(epoch) = proc.gate.epoch() {
                self.term_starts.insert(epoch, clock_ms);
                self.new_terms.push(epoch);
                self.group.terms += 1;
            }
        }
        let epoch = self.metas[meta].gate.epoch();
        self.keep_moves(meta, false);
        self.note_changes(now_ms, epoch.map(|epoch| (epoch, clock_ms)), asked);
        result
    }

    /// A request through meta `meta`'s gate (the production path:
    /// `LeaderGate::request`).
    fn request(&mut self, meta: usize, request: &Request, now_ms: u64, asked: Asked) -> Response {
        self.input(meta, now_ms, asked, |gate, store, now| {
            gate.request(store, request, now)
        })
    }

    /// An operator's request, to the meta that serves (as the operator's
    /// tool follows redirects); `NOT_LEADER` when none does now.
    fn operator(&mut self, request: &Request, now_ms: u64) -> Response {
        match self.serving(now_ms) {
            Some(meta) => self.request(meta, request, now_ms, Asked::Other),
            None => Err(OpError::new(ErrorCode::NotLeader, String::new())),
        }
    }

    /// A beacon to meta `meta`: its ack, a refusal, or `NOT_LEADER`.
    pub fn on_beacon(
        &mut self,
        meta: usize,
        beacon: &NodeBeacon,
        now_ms: u64,
    ) -> MetaAnswer<BeaconAck> {
        let asked = Asked::ByNode(node_of(&beacon.node));
        let answer = self.request(meta, &Request::Beacon(beacon.clone()), now_ms, asked);
        match answer {
            Ok(ResponseBody::BeaconAck(ack)) => MetaAnswer::Served(Some(ack)),
            Err(error) if error.code == ErrorCode::NotLeader => {
                self.group.not_leader += 1;
                MetaAnswer::NotLeader(error.message)
            }
            _ => MetaAnswer::Served(None),
        }
    }

    /// Meta's periodic tick (failure detection, the guardian) on every
    /// meta that runs: a follower's does nothing.
    pub fn on_tick(&mut self, now_ms: u64) {
        for meta in 0..self.metas.len() {
            let proc = &self.metas[meta];
            if !proc.up || proc.paused_until_ms > now_ms {
                continue;
            }
            // A failed save changes nothing; the next tick tries again.
            self.input(meta, now_ms, Asked::Other, |gate, store, now| {
                let _ = gate.tick(store, now);
            });
        }
    }

    /// A primary's request (remove a secondary, promote a learner; its
    /// ballot proves who asks) to meta `meta`: whether meta honoured it,
    /// or `NOT_LEADER`.
    pub fn on_request(&mut self, meta: usize, request: &Request, now_ms: u64) -> MetaAnswer<()> {
        match self.request(meta, request, now_ms, Asked::ByPrimary) {
            Ok(_) => MetaAnswer::Served(Some(())),
            Err(error) if error.code == ErrorCode::NotLeader => {
                self.group.not_leader += 1;
                MetaAnswer::NotLeader(error.message)
            }
            Err(_) => MetaAnswer::Served(None),
        }
    }

    /// Starts a backup of the table (the production request); its id.
    pub fn start_backup(&mut self, now_ms: u64) -> Option<u64> {
        let request = Request::Backup(BackupRequest::Start {
            table: "sim".into(),
            url: SIM_BACKUP_URL.into(),
        });
        match self.operator(&request, now_ms) {
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
        let added = self.operator(&request, now_ms);
        assert!(added.is_ok(), "the policy is added: {added:?}");
    }

    /// An operator's split request (the production request path).
    pub fn split(&mut self, request: SplitRequest, now_ms: u64) -> Response {
        self.operator(&Request::PartitionSplit(request), now_ms)
    }

    /// An operator's query that only reads: from the meta that serves, or,
    /// when none does now, from a state machine loaded from the store (as
    /// a meta about to serve would load it).
    pub fn query(&mut self, request: Request, now_ms: u64) -> Response {
        if self.serving(now_ms).is_some() {
            return self.operator(&request, now_ms);
        }
        let data = self.store.saved.clone().unwrap_or_default();
        let mut state = MetaState::new(self.settings.clone(), data);
        let step = state.handle(&request, MetaTime::from(now_ms));
        assert!(step.persist.is_none(), "a query changes nothing");
        step.reply
    }

    /// An operator's `dup add` of the table to table `sim` of the
    /// simulated remote cluster (cluster id 2, as many partitions): the
    /// production state machine's add, with the facts meta's server
    /// would have asked the remote cluster for (docs/duplication.md).
    pub fn add_dup(&mut self, now_ms: u64) -> Response {
        let Some(meta) = self.serving(now_ms) else {
            return Err(OpError::new(ErrorCode::NotLeader, String::new()));
        };
        let request = DupRequest::Add {
            table: "sim".into(),
            remote_metas: vec![REMOTE_META.into()],
            remote_table: "sim".into(),
        };
        let remote = RemoteFacts {
            cluster_id: REMOTE_CLUSTER_ID,
            partition_count: self.table().partition_count,
        };
        self.input(meta, now_ms, Asked::Other, |gate, store, now| {
            let state = gate.serving_state(store, now)?;
            let step = state.add_dup(&request, remote, now);
            let answer = execute_step(state, store, step, "dup");
            gate.after(&answer);
            answer
        })
    }

    /// The duplications as meta's store last saved them.
    pub fn persisted_dups(&self) -> Option<&BTreeMap<u64, StoredDup>> {
        self.store.saved.as_ref().map(|data| &data.dups)
    }

    /// The table as meta committed it last (persisted first, so as the
    /// store holds it).
    fn table(&self) -> &StoredTable {
        &self.committed().tables[&APP_ID]
    }

    /// What meta committed last: the store's data (every commit follows
    /// its save, and a deposed term's saves are fenced).
    fn committed(&self) -> &MetaData {
        self.store.saved.as_ref().expect("meta saved the table")
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
        &self.committed().backups
    }

    /// What the serving meta's IO layer has to do for its backups now.
    pub fn backup_work(&mut self, now_ms: u64) -> Vec<BackupWork> {
        let Some(meta) = self.serving(now_ms) else {
            return Vec::new();
        };
        self.input(meta, now_ms, Asked::Other, |gate, store, now| {
            gate.serving_state(store, now)
                .map(|state| state.backup_work())
                .unwrap_or_default()
        })
    }

    /// A backup as meta records it.
    pub fn backup(&self, id: u64) -> Option<&StoredBackup> {
        self.committed().backups.get(&id)
    }

    /// The outcome of `work`, through the production persist-then-commit
    /// step on the serving meta (a failed save changes nothing; the work
    /// comes again).
    pub fn backup_work_done(&mut self, work: &BackupWork, now_ms: u64) {
        let Some(meta) = self.serving(now_ms) else {
            return;
        };
        self.input(meta, now_ms, Asked::Other, |gate, store, now| {
            let Ok(state) = gate.serving_state(store, now) else {
                return;
            };
            let change = match work {
                BackupWork::WriteManifest { backup_id, .. } => {
                    state.backup_written(*backup_id, Ok(()), now.monotonic_ms)
                }
                BackupWork::CleanUp { backup_id, .. } => state.backup_cleaned(*backup_id),
                BackupWork::Delete { backup_id, .. } => state.backup_deleted(*backup_id),
            };
            if let Err(MetaStoreError::Fenced { .. }) =
                execute_change(state, store, change, "sim backup work")
            {
                gate.end_term("a backup's save was fenced");
            }
        })
    }

    /// Terms started since the last call (the world notes who runs then).
    pub fn take_new_terms(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.new_terms)
    }

    /// Early member changes since the last call.
    pub fn take_early_changes(&mut self) -> Vec<EarlyChange> {
        std::mem::take(&mut self.early)
    }

    /// Records every partition whose committed configuration changed; an
    /// input of term `term` (epoch, meta's clock) that removed or replaced
    /// a member within `lease_ms + beacon_interval_ms` of the term's first
    /// input is noted for the world to judge (**leader-waits-out-leases**),
    /// unless its primary asked for it or the member's own node reported
    /// it in its beacon (a replica that stopped serving, a restart); a
    /// group's first term follows no leader and is not judged.
    fn note_changes(&mut self, now_ms: u64, term: Option<(i64, u64)>, asked: Asked) {
        let Some(table) = self
            .store
            .saved
            .as_ref()
            .and_then(|data| data.tables.get(&APP_ID))
        else {
            return;
        };
        let wait_ms = self.lease_ms + self.beacon_interval_ms;
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
            if new.ballot <= old.ballot && self.shrunk.is_none() {
                self.shrunk = Some(format!(
                    "meta-ballots-grow: p{pid} went from {old:?} to {new:?}"
                ));
            }
            self.persisted.push((now_ms, pid, new.clone()));
            if let (Some((epoch, clock_ms)), true) = (term, self.etcd.is_some()) {
                let start_ms = self.term_starts.get(&epoch).copied().unwrap_or(clock_ms);
                let all = removed_or_replaced(&old, &new);
                let early = epoch > 1 && clock_ms < start_ms + wait_ms;
                let nodes: Vec<NodeId> = all
                    .iter()
                    .copied()
                    .filter(|node| match asked {
                        Asked::ByPrimary => false,
                        Asked::ByNode(reporter) => *node != reporter,
                        Asked::Other => true,
                    })
                    .collect();
                if early && !all.is_empty() && nodes.is_empty() {
                    self.group.early_changes_asked += 1;
                }
                if early && !nodes.is_empty() {
                    self.early.push(EarlyChange {
                        at_ms: clock_ms,
                        epoch,
                        term_start_ms: start_ms,
                        pid,
                        old: old.clone(),
                        new: new.clone(),
                        nodes,
                    });
                }
            }
            self.changes.push((pid, old, new));
        }
    }

    /// The changes committed since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }
}

impl MetaProc {
    fn new(address: String, gate: LeaderGate) -> MetaProc {
        let seen_terms = gate.terms_started();
        MetaProc {
            address,
            moves_term: seen_terms,
            gate,
            store_epoch: 0,
            up: true,
            life: 0,
            paused_until_ms: 0,
            stale_ms: None,
            seen_moves: BTreeMap::new(),
            seen_terms,
        }
    }
}

/// The address of meta `meta` of a group.
pub fn meta_address(meta: usize) -> String {
    format!("sim-meta-{meta}:1")
}

/// The meta of a group at `address`, if it names one.
pub fn parse_meta_address(address: &str) -> Option<usize> {
    address
        .strip_prefix("sim-meta-")?
        .strip_suffix(":1")?
        .parse()
        .ok()
}

/// The members (primary and secondaries) of `old` that `new` removes, and
/// `old`'s primary when `new` has another.
fn removed_or_replaced(old: &PartitionConfig, new: &PartitionConfig) -> Vec<NodeId> {
    let members = |config: &PartitionConfig| -> Vec<NodeId> {
        config
            .primary
            .iter()
            .chain(config.secondaries.iter())
            .copied()
            .collect()
    };
    let kept = members(new);
    let mut nodes: Vec<NodeId> = members(old)
        .into_iter()
        .filter(|node| !kept.contains(node))
        .collect();
    if let Some(primary) = old.primary {
        if new.primary != Some(primary) && !nodes.contains(&primary) {
            nodes.push(primary);
        }
    }
    nodes
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
