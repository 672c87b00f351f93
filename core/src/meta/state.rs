//! Meta's logic as a sans-IO state machine (see docs/meta.md).
//!
//! Inputs are requests and ticks, each with the current time supplied by
//! the caller as a [`MetaTime`] (a monotonic clock for every duration, the
//! wall clock for what users see) — the state machine never reads a clock,
//! so a simulator can drive it. Outputs are a [`Step`]: the reply, and
//! for every request that changes persistent data the new [`MetaData`] that
//! must be made durable *before* the reply is sent. Until the caller hands
//! that data back through [`MetaState::commit`], nothing has changed: a failed
//! store write leaves the state exactly as it was (invariant
//! "persist before effect").
//!
//! State is split in two:
//! - persistent ([`MetaData`]): tables, every partition's configuration
//!   `(ballot, primary, secondaries)` with the shard of each replica, the
//!   next app id;
//! - volatile (the node registry): what each node's last beacon said and
//!   when it came. It is rebuilt from beacons after a restart.

use std::collections::{BTreeMap, BTreeSet};

use markab_wire::message::{
    BeaconAck, CreateTableRequest, ErrorCode, Gpid, HostedReplica, NodeBeacon, NodeInfo, OpError,
    PartitionConfig, PartitionRoute, ReplicaAssignment, ReplicaRole, Request, Response,
    ResponseBody, Route, TableDescription, TableInfo, TableStatus,
};
use serde::{Deserialize, Serialize};

use crate::meta::settings::{MetaReplication, HOLD_SECONDS_MAX};
use crate::replication::messages::{Ballot, NodeId, PartitionConfig as ReplicaConfig};
use crate::replication::reconfig::{self, ReconfigError, ReplicaReport};
use crate::table::{validate_partition_count, validate_table_name};

/// Version of the [`MetaData`] layout; a store refuses any other.
pub const META_DATA_FORMAT_VERSION: u32 = 1;
/// Most tables meta keeps, dropped ones (still held) included.
pub const TABLES_MAX: usize = 4_096;
/// Most partitions over all tables meta keeps (2^20).
pub const PARTITIONS_TOTAL_MAX: usize = 1 << 20;
/// Most nodes in the registry; when full, the longest-dead node makes room.
pub const NODES_MAX: usize = 1_024;
/// Most shards one node may report.
pub const SHARDS_PER_NODE_MAX: usize = 1_024;
/// Longest node id or shard address, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 256;
/// Most environment entries per table.
pub const ENVS_PER_TABLE_MAX: usize = 256;
/// Longest environment key, in bytes.
pub const ENV_KEY_BYTES_MAX: usize = 256;
/// Longest environment value, in bytes.
pub const ENV_VALUE_BYTES_MAX: usize = 4_096;

const _: () = assert!(PARTITIONS_TOTAL_MAX >= crate::table::PARTITION_COUNT_MAX as usize);

/// The time of one input, on meta's two clocks (docs/DESIGN.md, "Clocks").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaTime {
    /// Milliseconds on a monotonic clock (the node crate's
    /// `clock::monotonic_ms`, boot time):
    /// beacon silence, grace, meta's own pauses — every duration
    /// (**durations-are-monotonic**). A step of the wall clock never makes
    /// a healthy node look silent.
    pub monotonic_ms: u64,
    /// Unix milliseconds: table create and drop times, hold expiry.
    pub unix_ms: u64,
}

impl From<u64> for MetaTime {
    /// One number for both clocks: for tests and tools in which the wall
    /// clock never steps.
    fn from(ms: u64) -> MetaTime {
        MetaTime {
            monotonic_ms: ms,
            unix_ms: ms,
        }
    }
}

/// Settings the state machine needs (from meta's config file and the server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaSettings {
    /// Meta's own address, as served (reported by cluster_info).
    pub meta_address: String,
    /// Meta's data directory (reported by cluster_info).
    pub data_dir: String,
    /// Default hold time of a dropped table, in seconds.
    pub hold_seconds: u64,
    /// A node is dead once its last beacon is this old.
    pub node_timeout_ms: u64,
    /// Replica count of a create that asks for 0.
    pub replica_count_default: i32,
    /// Largest replica count a create may ask for.
    pub replica_count_max: i32,
    /// PacificA replication; `None` (the default) is today's behaviour:
    /// primaries only, liveness by `node_timeout_ms`, lease 0 in acks, no
    /// reconfiguration.
    pub replication: Option<MetaReplication>,
    /// This cluster's id, 1..=127
    /// ([`crate::meta::settings::CLUSTER_ID_DEFAULT`] unless the
    /// config's `[meta] cluster_id` names another; check it with
    /// [`MetaSettings::validate`]): the timetags of duplicated tables
    /// carry it, and a table is never duplicated to a cluster of the same
    /// id (docs/duplication.md).
    pub cluster_id: u8,
}

impl MetaSettings {
    /// Checks what the state machine relies on that a config file could
    /// get wrong: the cluster id (1..=127). The message names the key.
    pub fn validate(&self) -> Result<(), String> {
        crate::storage::timetag::validate_cluster_id(self.cluster_id)
            .map_err(|message| format!("[meta] {message}"))
    }

    /// A node is dead once its last beacon is this old: `grace_ms` with
    /// replication, else `node_timeout_ms`.
    pub fn dead_after_ms(&self) -> u64 {
        match self.replication {
            Some(replication) => replication.grace_ms,
            None => self.node_timeout_ms,
        }
    }

    /// How often the server should tick the state machine: half a beacon
    /// interval with replication (so failover follows the grace closely),
    /// else `idle_tick_ms`.
    pub fn tick_interval_ms(&self, idle_tick_ms: u64) -> u64 {
        match self.replication {
            Some(replication) => (replication.beacon_interval_ms / 2).max(1),
            None => idle_tick_ms,
        }
    }
}

/// Lifecycle state of a stored table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredStatus {
    #[default]
    Available,
    Dropped,
}

/// One replica's place: node id, shard index on that node, and the shard's
/// address when meta placed it (the route's fallback while the node is unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPlace {
    pub node: String,
    pub shard: i32,
    pub address: String,
}

/// One partition's configuration `(ballot, primary, secondaries)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPartition {
    /// Starts at 1; never decreases.
    pub ballot: i64,
    pub primary: ReplicaPlace,
    /// Empty without replication (meta places primaries only).
    pub secondaries: Vec<ReplicaPlace>,
    /// Replicas catching up before they become secondaries (the guardian
    /// adds them; docs/replication.md, "Learning"). Left out of the stored
    /// JSON when empty, so older files load and look the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<ReplicaPlace>,
    /// Made by a split: its first members host it from their copies of
    /// the parent, never empty (docs/split.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub split_child: bool,
}

impl StoredPartition {
    /// Primary, secondaries, then learners.
    fn places(&self) -> impl Iterator<Item = &ReplicaPlace> {
        std::iter::once(&self.primary)
            .chain(&self.secondaries)
            .chain(&self.learners)
    }

    /// Whether `node` holds a replica of it (learners included).
    fn holds(&self, node: &str) -> bool {
        self.places().any(|place| place.node == node)
    }

    fn has_secondary(&self, node: &str) -> bool {
        self.secondaries.iter().any(|place| place.node == node)
    }

    fn has_learner(&self, node: &str) -> bool {
        self.learners.iter().any(|place| place.node == node)
    }
}

/// A table as meta persists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTable {
    pub name: String,
    pub status: StoredStatus,
    pub partition_count: i32,
    pub replica_count: i32,
    pub envs: BTreeMap<String, String>,
    /// Unix seconds.
    pub create_time_s: u64,
    /// Unix seconds; 0 while available.
    pub drop_time_s: u64,
    /// Unix seconds when the hold ends; 0 while available.
    pub drop_expire_s: u64,
    /// One per partition, by index.
    pub partitions: Vec<StoredPartition>,
    /// While the table is being restored from a backup (docs/backup.md,
    /// "Restore"). Left out of the stored JSON otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<TableRestore>,
    /// While the table splits (docs/split.md). Left out of the stored
    /// JSON otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<TableSplit>,
}

impl StoredTable {
    /// The partitions that serve or may, by index: all but those of a
    /// restore still waiting for their checkpoint, which are neither
    /// assigned nor reconfigured (**restore-before-serve**).
    fn live_partitions(&self) -> impl Iterator<Item = (usize, &StoredPartition)> {
        self.partitions.iter().enumerate().filter(|(index, _)| {
            self.restore.as_ref().is_none_or(|restore| {
                restore
                    .partitions
                    .get(*index)
                    .is_some_and(|partition| partition.done)
            })
        })
    }

    fn info(&self, app_id: i32) -> TableInfo {
        TableInfo {
            app_id,
            name: self.name.clone(),
            status: match self.status {
                StoredStatus::Available => TableStatus::Available,
                StoredStatus::Dropped => TableStatus::Dropped,
            },
            partition_count: self.partition_count,
            replica_count: self.replica_count,
            envs: self
                .envs
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            create_time_s: self.create_time_s,
            drop_time_s: self.drop_time_s,
            drop_expire_s: self.drop_expire_s,
        }
    }

    fn is_available(&self) -> bool {
        self.status == StoredStatus::Available
    }

    /// Dropped and past its hold time at `now_ms`.
    fn hold_expired(&self, now_ms: u64) -> bool {
        self.status == StoredStatus::Dropped && now_ms / 1000 >= self.drop_expire_s
    }
}

/// Meta's persistent state: everything that must survive a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaData {
    /// [`META_DATA_FORMAT_VERSION`].
    pub format_version: u32,
    /// Incremented by every change; a commit must be the next version.
    pub version: u64,
    /// The next app id to hand out (app ids are never reused).
    pub next_app_id: i32,
    /// Tables by app id, dropped ones (until forgotten) included.
    pub tables: BTreeMap<i32, StoredTable>,
    /// The meta function level (docs/balance.md); `steady` in files written
    /// before it existed.
    #[serde(default)]
    pub level: MetaLevel,
    /// Nodes being removed (`remove_node`): their replicas move away and
    /// nothing new is placed on them. Left out of the file when empty.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removing_nodes: BTreeSet<String>,
    /// Cold backups by id: running, complete and failed ones (docs/backup.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backups: BTreeMap<u64, StoredBackup>,
    /// The last backup id handed out (ids only grow).
    #[serde(default)]
    pub last_backup_id: u64,
    /// Backup policies by name (docs/backup.md, "Policies").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backup_policies: BTreeMap<String, StoredPolicy>,
    /// The last split epoch handed out (epochs only grow).
    #[serde(default)]
    pub last_split_epoch: u64,
    /// Duplications to other clusters by id (docs/duplication.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dups: BTreeMap<u64, StoredDup>,
    /// The last duplication id handed out (ids only grow).
    #[serde(default)]
    pub last_dup_id: u64,
}

/// What meta changes by itself besides failure handling (docs/balance.md,
/// "Levels").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaLevel {
    /// Failure handling only: dead members replaced, restarts and the
    /// primaries' requests handled; no learner added, no move.
    Freezed,
    /// Also cures: the guardian adds learners to short partitions, extra
    /// replicas are removed, operators' moves and removals run.
    #[default]
    Steady,
    /// Also balances by itself, continuously.
    Lively,
}

impl MetaLevel {
    pub fn name(self) -> &'static str {
        match self {
            MetaLevel::Freezed => "freezed",
            MetaLevel::Steady => "steady",
            MetaLevel::Lively => "lively",
        }
    }

    pub fn parse(name: &str) -> Option<MetaLevel> {
        [MetaLevel::Freezed, MetaLevel::Steady, MetaLevel::Lively]
            .into_iter()
            .find(|level| level.name() == name)
    }
}

impl Default for MetaData {
    fn default() -> Self {
        MetaData {
            format_version: META_DATA_FORMAT_VERSION,
            version: 0,
            next_app_id: 1,
            tables: BTreeMap::new(),
            level: MetaLevel::Steady,
            removing_nodes: BTreeSet::new(),
            backups: BTreeMap::new(),
            last_backup_id: 0,
            backup_policies: BTreeMap::new(),
            last_split_epoch: 0,
            dups: BTreeMap::new(),
            last_dup_id: 0,
        }
    }
}

impl MetaData {
    /// Checks the invariants a loaded copy must hold; the message says which
    /// one failed.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != META_DATA_FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (expected {META_DATA_FORMAT_VERSION})",
                self.format_version
            ));
        }
        let mut available_names = BTreeSet::new();
        for (app_id, table) in &self.tables {
            if *app_id <= 0 || *app_id >= self.next_app_id {
                return Err(format!(
                    "app_id {app_id} is outside 1..next_app_id ({})",
                    self.next_app_id
                ));
            }
            if table.partitions.len() != table.partition_count.max(0) as usize {
                return Err(format!(
                    "table {:?} (app_id {app_id}) has {} partitions, expected {}",
                    table.name,
                    table.partitions.len(),
                    table.partition_count
                ));
            }
            if table
                .partitions
                .iter()
                .any(|partition| partition.ballot < 1)
            {
                return Err(format!("table {:?} has a ballot below 1", table.name));
            }
            if table.is_available() && !available_names.insert(table.name.as_str()) {
                return Err(format!("two available tables are named {:?}", table.name));
            }
        }
        for (id, dup) in &self.dups {
            if !self.tables.contains_key(&dup.app_id) {
                return Err(format!(
                    "duplication {id} is of app_id {}, which no table has",
                    dup.app_id
                ));
            }
            crate::storage::timetag::validate_cluster_id(dup.remote_cluster_id)
                .map_err(|message| format!("duplication {id}: remote {message}"))?;
        }
        Ok(())
    }
}

/// What the last beacon of a node said.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeRecord {
    shard_addresses: Vec<String>,
    /// Meta's monotonic clock when the last beacon was handled.
    last_beacon_ms: u64,
    /// [`MetaState::paused_total_ms`] then: meta's own pauses since are not
    /// the node's silence.
    paused_total_at_beacon_ms: u64,
    replicas: Vec<HostedReplica>,
    /// The node process's incarnation from its last beacon.
    incarnation: u64,
}

/// The output of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The answer. When `persist` is set it may only be sent after `persist`
    /// was stored and committed; if the store fails, send an error instead.
    pub reply: Response,
    /// New persistent state to store, then hand to [`MetaState::commit`].
    pub persist: Option<MetaData>,
}

impl Step {
    fn reply(reply: Response) -> Step {
        Step {
            reply,
            persist: None,
        }
    }

    fn error(code: ErrorCode, message: impl Into<String>) -> Step {
        Step::reply(Err(OpError::new(code, message)))
    }
}

/// Meta's state machine: persistent [`MetaData`] plus the node registry.
///
/// ```
/// use markab_core::meta::state::{MetaData, MetaSettings, MetaState};
/// use markab_core::wire::message::{CreateTableRequest, NodeBeacon, Request, ResponseBody};
///
/// let settings = MetaSettings {
///     meta_address: "127.0.0.1:34601".into(),
///     data_dir: "/var/tmp/meta".into(),
///     hold_seconds: 604_800,
///     node_timeout_ms: 5_000,
///     replica_count_default: 3,
///     replica_count_max: 5,
///     replication: None,
///     cluster_id: 1,
/// };
/// let mut state = MetaState::new(settings, MetaData::default());
/// let now_ms = 1_700_000_000_000;
/// let beacon = NodeBeacon {
///     node: "127.0.0.1:34801".into(),
///     shard_addresses: vec!["127.0.0.1:34801".into()],
///     replicas: Vec::new(),
///     incarnation: 1,
///     backups: Vec::new(),
///     splits: Vec::new(),
///     dups: Vec::new(),
/// };
/// state.handle(&Request::Beacon(beacon), now_ms).reply.unwrap();
/// let create = Request::CreateTable(CreateTableRequest {
///     table: "temp".into(),
///     partition_count: 8,
///     replica_count: 0,
///     envs: Vec::new(),
///     success_if_exist: false,
/// });
/// let step = state.handle(&create, now_ms);
/// // Store `persist` durably first; only then commit and send the reply.
/// let persist = step.persist.expect("create changes persistent data");
/// state.commit(persist);
/// assert!(matches!(step.reply, Ok(ResponseBody::Table(ref info)) if info.app_id == 1));
/// ```
#[derive(Debug)]
pub struct MetaState {
    settings: MetaSettings,
    data: MetaData,
    nodes: BTreeMap<String, NodeRecord>,
    /// The time of the first request or tick: a member that has not
    /// beaconed since meta started counts as dead only a grace after it.
    started_ms: Option<u64>,
    /// The monotonic time of the last input.
    last_input_ms: Option<u64>,
    /// Total time meta itself was not running (gaps between inputs longer
    /// than [`MetaState::pause_threshold_ms`]) since it started. Not
    /// counted as any node's silence (**meta-pause-not-silence**).
    paused_total_ms: u64,
    /// The last tick at which meta found itself frozen: for a grace after
    /// it, no member is removed as dead (**no-removal-when-frozen**).
    frozen_last_ms: Option<u64>,
    /// The balancer's moves in progress and its counters (volatile: a
    /// restarted meta finishes what the stored configurations show).
    balancer: balancer::Balancer,
    /// The nodes' latest reports on partition backups (volatile).
    backup_progress: backups::BackupProgress,
    /// Restores' progress and outcomes (volatile).
    restore_progress: restores::RestoreProgress,
    /// What nodes reported of running splits (volatile).
    split_progress: splits::SplitProgress,
    /// What primaries reported of duplications (volatile).
    dup_progress: dups::DupProgress,
}

impl MetaState {
    /// A state machine starting from `data` (as loaded from the store, or
    /// `MetaData::default()` for a new cluster) with an empty node registry.
    pub fn new(settings: MetaSettings, data: MetaData) -> MetaState {
        MetaState {
            settings,
            data,
            nodes: BTreeMap::new(),
            started_ms: None,
            last_input_ms: None,
            paused_total_ms: 0,
            frozen_last_ms: None,
            balancer: balancer::Balancer::default(),
            backup_progress: backups::BackupProgress::default(),
            restore_progress: restores::RestoreProgress::default(),
            split_progress: splits::SplitProgress::default(),
            dup_progress: dups::DupProgress::default(),
        }
    }

    /// The committed persistent state.
    pub fn data(&self) -> &MetaData {
        &self.data
    }

    /// The settings.
    pub fn settings(&self) -> &MetaSettings {
        &self.settings
    }

    /// Installs `data` after the store made it durable. It must be the
    /// successor of the committed state (the `persist` of the last step).
    pub fn commit(&mut self, data: MetaData) {
        assert_eq!(
            data.version,
            self.data.version + 1,
            "meta commit out of order: committed version {}, offered {}",
            self.data.version,
            data.version
        );
        assert!(
            data.next_app_id >= self.data.next_app_id,
            "app ids never go back"
        );
        for (app_id, table) in &data.tables {
            let Some(old) = self.data.tables.get(app_id) else {
                continue;
            };
            for (new_partition, old_partition) in table.partitions.iter().zip(&old.partitions) {
                assert!(
                    new_partition.ballot >= old_partition.ballot,
                    "ballot-monotonic: app {app_id} ballot {} would become {}",
                    old_partition.ballot,
                    new_partition.ballot
                );
            }
        }
        self.data = data;
    }

    /// Handles one request at `now`.
    pub fn handle(&mut self, request: &Request, now: impl Into<MetaTime>) -> Step {
        let now = now.into();
        self.observe(now);
        let now_ms = now.monotonic_ms;
        match request {
            Request::CreateTable(create) => self.create_table(create, now),
            Request::DropTable {
                table,
                reserve_seconds,
            } => self.drop_table(table, *reserve_seconds, now.unix_ms),
            Request::RecallTable { app_id, new_name } => {
                self.recall_table(*app_id, new_name, now.unix_ms)
            }
            Request::ListTables { include_dropped } => {
                let tables = self
                    .data
                    .tables
                    .iter()
                    .filter(|(_, table)| {
                        table.is_available()
                            || (*include_dropped && !table.hold_expired(now.unix_ms))
                    })
                    .map(|(app_id, table)| table.info(*app_id))
                    .collect();
                Step::reply(Ok(ResponseBody::Tables(tables)))
            }
            Request::DescribeTable { table } => match self.available(table) {
                Ok((app_id, stored)) => {
                    Step::reply(Ok(ResponseBody::Description(TableDescription {
                        info: stored.info(app_id),
                        partitions: describe_partitions(stored),
                    })))
                }
                Err(error) => Step::reply(Err(error)),
            },
            Request::QueryRoute { table } => match self.available(table) {
                Ok((_, stored)) if stored.restore.is_some() => {
                    let restore = stored.restore.as_ref().expect("checked");
                    Step::error(
                        ErrorCode::Busy,
                        format!(
                            "table {table:?} is being restored ({} of {} partitions done); it serves once all are (query_restore_status {table})",
                            restore.partitions.iter().filter(|p| p.done).count(),
                            restore.partitions.len()
                        ),
                    )
                }
                Ok((app_id, stored)) => Step::reply(Ok(ResponseBody::Route(Route {
                    table: stored.name.clone(),
                    app_id,
                    partition_count: stored.partition_count,
                    partitions: self.routes(stored),
                }))),
                Err(error) => Step::reply(Err(error)),
            },
            Request::ListNodes => Step::reply(Ok(ResponseBody::Nodes(self.node_infos(now_ms)))),
            Request::ClusterInfo => Step::reply(Ok(ResponseBody::Pairs(self.cluster_info(now_ms)))),
            Request::SetAppEnvs { table, envs } => self.set_app_envs(table, envs),
            Request::GetAppEnvs { table } => match self.available(table) {
                Ok((_, stored)) => Step::reply(Ok(ResponseBody::Pairs(
                    stored
                        .envs
                        .iter()
                        .map(|(key, value)| (key.clone(), value.clone()))
                        .collect(),
                ))),
                Err(error) => Step::reply(Err(error)),
            },
            Request::Beacon(beacon) => self.beacon(beacon, now),
            Request::RemoveSecondary { gpid, ballot, node } => {
                self.remove_secondary(*gpid, *ballot, node, now_ms)
            }
            Request::UpgradeLearner { gpid, ballot, node } => {
                self.upgrade_learner(*gpid, *ballot, node)
            }
            Request::SwitchPrimary { gpid, ballot, node } => {
                self.switch_primary(*gpid, *ballot, node, now_ms)
            }
            Request::Balancer(request) => self.balancer_request(request, now),
            Request::Backup(request) => self.backup_request(request, now),
            Request::PartitionSplit(request) => self.split_request(request, now),
            Request::Dup(request) => self.dup_request(request),
            other => Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "meta serves DDL and routing; send data requests ({}) to nodes",
                    other.name()
                ),
            ),
        }
    }

    /// Periodic housekeeping at `now_ms`: proposes forgetting dropped tables
    /// whose hold is over once no alive node reports their replicas (or once
    /// the hold plus the node timeout has passed). Store and commit the
    /// returned data like a step's `persist`.
    ///
    /// With replication on it also gives every partition with a dead member
    /// its next configuration ([`reconfig::on_nodes_dead`], fed with the
    /// members' last beacon reports), and adds a learner to every other
    /// partition below its replica count ([`reconfig::guardian`]); nothing
    /// routes or acks it before the caller stored and committed it.
    pub fn tick(&mut self, now: impl Into<MetaTime>) -> Option<MetaData> {
        let now = now.into();
        self.observe(now);
        let now_ms = now.monotonic_ms;
        if self.frozen(now_ms).is_some() {
            self.frozen_last_ms = Some(now_ms);
        }
        let mut reconfigured = self.reconfigure_dead(now_ms);
        let changed: BTreeSet<(i32, usize)> = reconfigured.iter().map(|(at, _)| *at).collect();
        reconfigured.extend(
            self.guard(now_ms)
                .into_iter()
                .filter(|(at, _)| !changed.contains(at)),
        );
        let changed: BTreeSet<(i32, usize)> = reconfigured.iter().map(|(at, _)| *at).collect();
        reconfigured.extend(
            self.advance_moves(now_ms)
                .into_iter()
                .filter(|(at, _)| !changed.contains(at)),
        );
        reconfigured.extend(self.replace_dead_restorers(now_ms));
        let forget: Vec<i32> = self
            .data
            .tables
            .iter()
            .filter(|(app_id, table)| {
                table.hold_expired(now.unix_ms)
                    && (!self.reported_by_alive_node(**app_id, now_ms)
                        || now.unix_ms
                            >= table
                                .drop_expire_s
                                .saturating_mul(1000)
                                .saturating_add(self.settings.dead_after_ms()))
            })
            .map(|(app_id, _)| *app_id)
            .collect();
        self.prune_split_progress();
        self.prune_dup_progress();
        let mut committing = self.successor();
        let split_committed = self.commit_splits(&mut committing);
        if forget.is_empty()
            && !split_committed
            && reconfigured.is_empty()
            && !self.has_orphaned_backups()
            && !self.policies_due(now.unix_ms)
            && !self.dups_due(now_ms)
        {
            return None;
        }
        let mut seen = BTreeSet::new();
        reconfigured.retain(|(at, _)| seen.insert(*at));
        let mut next = if split_committed {
            committing
        } else {
            self.successor()
        };
        for ((app_id, index), partition) in reconfigured {
            let table = next
                .tables
                .get_mut(&app_id)
                .expect("reconfigured a known table");
            table.partitions[index] = partition;
        }
        for app_id in forget {
            next.tables.remove(&app_id);
        }
        self.fail_orphaned_backups(&mut next, now);
        self.run_policies(&mut next, now);
        self.persist_confirmed(&mut next, now_ms);
        Some(next)
    }

    // ---- Replication: reconfiguration ----

    /// The next configuration of every available partition that has a dead
    /// member, by (app id, partition index). Empty with replication off,
    /// while frozen, and for a grace after meta thawed: nodes cut off
    /// together come back one at a time, as each re-establishes its link
    /// to meta, and one not heard yet was silent through a freeze in which
    /// its silence told nothing (**no-removal-when-frozen**).
    fn reconfigure_dead(&self, now_ms: u64) -> Vec<((i32, usize), StoredPartition)> {
        let thawing = self
            .frozen_last_ms
            .is_some_and(|at_ms| now_ms.saturating_sub(at_ms) < self.settings.dead_after_ms());
        if self.settings.replication.is_none() || thawing || self.frozen(now_ms).is_some() {
            return Vec::new();
        }
        let mut changes = Vec::new();
        for (app_id, table) in &self.data.tables {
            if !table.is_available() {
                continue;
            }
            for (index, partition) in table.live_partitions() {
                let members = ReplicaMembers::of(partition, &[]);
                let dead: BTreeSet<NodeId> = members
                    .names
                    .iter()
                    .enumerate()
                    .filter(|(_, node)| !self.is_node_alive(node, now_ms))
                    .map(|(id, _)| NodeId(id as u32))
                    .collect();
                if dead.is_empty() {
                    continue;
                }
                let gpid = Gpid {
                    app_id: *app_id,
                    partition_index: index as i32,
                };
                let reports = self.reports(&members, gpid);
                if let Some(new) = reconfig::on_nodes_dead(&members.config, &reports, &dead) {
                    changes.push(((*app_id, index), members.stored(partition, &new, &[])));
                }
            }
        }
        changes
    }

    /// With replication on: the partitions whose replica on `node` lost its
    /// state get their next configuration ([`reconfig::on_member_restarted`]:
    /// a sole primary is reinstated under ballot + 1, any other member
    /// becomes a learner). A replica lost its state when the node restarted
    /// (`restarted`: a new incarnation in its beacon), or when it reports
    /// itself inactive at a ballot not below the partition's — a replica
    /// ignores configurations not above the ballot it last accepted (which
    /// it keeps on disk), so only a new ballot brings it back; this also
    /// covers nodes that restarted while meta did. `None` when nothing
    /// changes.
    fn reconfigure_restarted(
        &self,
        node: &str,
        reported: &[HostedReplica],
        restarted: bool,
    ) -> Option<MetaData> {
        self.settings.replication?;
        let lost_state = |gpid: Gpid, ballot: i64| {
            restarted
                || reported.iter().any(|replica| {
                    replica.gpid == gpid
                        && replica.role == ReplicaRole::Inactive
                        && replica.ballot >= ballot
                })
        };
        let mut next: Option<MetaData> = None;
        for (app_id, table) in &self.data.tables {
            if !table.is_available() {
                continue;
            }
            for (index, partition) in table.live_partitions() {
                let members = ReplicaMembers::of(partition, &[]);
                let Some(id) = members.id(node) else { continue };
                let gpid = Gpid {
                    app_id: *app_id,
                    partition_index: index as i32,
                };
                if !lost_state(gpid, partition.ballot) {
                    continue;
                }
                let reports = self.reports(&members, gpid);
                if let Some(new) = reconfig::on_member_restarted(&members.config, &reports, id) {
                    let data = next.get_or_insert_with(|| self.successor());
                    data.tables
                        .get_mut(app_id)
                        .expect("a known table")
                        .partitions[index] = members.stored(partition, &new, &[]);
                }
            }
        }
        next
    }

    /// The guardian: for every available partition with fewer replicas
    /// (primary, secondaries, learners) than its table's replica count, the
    /// configuration adding a learner on the least-loaded alive node that
    /// holds none of it ([`reconfig::guardian`]), on the shard where that
    /// node already keeps a replica of the partition if its last beacon
    /// reports one (**replica-stays-on-its-shard**: a node opens a replica
    /// on one shard only), else on its least-loaded shard. Empty with
    /// replication off or while frozen. Load counts the replicas placed so
    /// far, including learners added in this tick.
    fn guard(&self, now_ms: u64) -> Vec<((i32, usize), StoredPartition)> {
        if self.settings.replication.is_none()
            || self.frozen(now_ms).is_some()
            || self.data.level == MetaLevel::Freezed
        {
            return Vec::new();
        }
        let alive: Vec<&str> = self
            .nodes
            .iter()
            .filter(|(node, record)| {
                self.is_alive(record, now_ms) && !self.data.removing_nodes.contains(*node)
            })
            .map(|(node, _)| node.as_str())
            .collect();
        let mut shard_load: BTreeMap<String, Vec<usize>> = alive
            .iter()
            .map(|node| {
                let shards = self.nodes[*node].shard_addresses.len();
                ((*node).to_owned(), vec![0usize; shards])
            })
            .collect();
        for place in self.available_places() {
            if let Some(count) = shard_load
                .get_mut(&place.node)
                .and_then(|shards| shards.get_mut(place.shard.max(0) as usize))
            {
                *count += 1;
            }
        }
        let mut changes = Vec::new();
        for (app_id, table) in &self.data.tables {
            if !table.is_available() {
                continue;
            }
            let replica_count = table.replica_count.max(1) as usize;
            for (index, partition) in table.live_partitions() {
                if partition.places().count() >= replica_count {
                    continue;
                }
                let members = ReplicaMembers::of(partition, &alive);
                // Alive by a recent beacon only: a member meta has not heard
                // from since it started is not proof of a live primary.
                let alive_ids: BTreeSet<NodeId> =
                    alive.iter().filter_map(|node| members.id(node)).collect();
                let load: BTreeMap<NodeId, usize> = shard_load
                    .iter()
                    .filter_map(|(node, shards)| {
                        Some((members.id(node)?, shards.iter().sum::<usize>()))
                    })
                    .collect();
                let Some(new) =
                    reconfig::guardian(&members.config, &alive_ids, &load, replica_count)
                else {
                    continue;
                };
                let added = new
                    .learners
                    .iter()
                    .find(|id| !members.config.learners.contains(id))
                    .map(|id| members.name(*id).to_owned())
                    .expect("the guardian adds a learner");
                let gpid = Gpid {
                    app_id: *app_id,
                    partition_index: index as i32,
                };
                let kept_on = self
                    .kept_shard(&added, gpid)
                    .and_then(|shard| usize::try_from(shard).ok());
                let shards = shard_load.get_mut(&added).expect("an alive node");
                let shard = match kept_on.filter(|shard| *shard < shards.len()) {
                    Some(shard) => shard,
                    None => {
                        shards
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, count)| **count)
                            .expect("a node has at least one shard")
                            .0
                    }
                };
                shards[shard] += 1;
                let place = ReplicaPlace {
                    address: self.nodes[&added].shard_addresses[shard].clone(),
                    node: added,
                    shard: shard as i32,
                };
                changes.push(((*app_id, index), members.stored(partition, &new, &[place])));
            }
        }
        changes
    }

    /// What the members' last beacons said about `gpid`.
    fn reports(&self, members: &ReplicaMembers, gpid: Gpid) -> BTreeMap<NodeId, ReplicaReport> {
        let mut reports = BTreeMap::new();
        for (id, node) in members.names.iter().enumerate() {
            let Some(record) = self.nodes.get(node) else {
                continue;
            };
            if let Some(replica) = record.replicas.iter().find(|replica| replica.gpid == gpid) {
                reports.insert(
                    NodeId(id as u32),
                    ReplicaReport {
                        ballot: replica.ballot.max(0) as u64,
                        last_prepared: replica.decree_prepared.max(0) as u64,
                        last_committed: replica.decree_committed.max(0) as u64,
                    },
                );
            }
        }
        reports
    }

    /// A primary's request to remove the secondary `node` it cannot reach.
    /// The ballot proves who asks: only the primary of the current ballot
    /// talks to its secondaries at that ballot.
    fn remove_secondary(&self, gpid: Gpid, ballot: i64, node: &str, now_ms: u64) -> Step {
        if !self.may_remove(gpid, node, now_ms) {
            return Step::error(
                ErrorCode::Busy,
                format!(
                    "remove_secondary of {node} in partition {}.{}: it may still serve as the primary it was until a lease ago; ask again later",
                    gpid.app_id, gpid.partition_index
                ),
            );
        }
        if let Some(why) = self.frozen(now_ms) {
            return Step::error(
                ErrorCode::NotEnoughNodes,
                format!(
                    "remove_secondary of {node} in partition {}.{}: {why}",
                    gpid.app_id, gpid.partition_index
                ),
            );
        }
        self.primary_request(
            "remove_secondary",
            gpid,
            ballot,
            node,
            reconfig::on_remove_request,
        )
    }

    /// The primary's request to promote learner `node`, which caught up
    /// (`MetaRequest::UpgradeLearner` of the replica core): honoured only
    /// at the current ballot (which proves the request comes from the
    /// current primary, the only one that talks to learners at it) for a
    /// current learner; `node` becomes a secondary under ballot + 1, `Done`
    /// once persisted. Errors as for `remove_secondary`: `STALE_BALLOT`,
    /// `INVALID_ARGUMENT` (not a learner, or replication off),
    /// `UNKNOWN_TABLE`, `UNKNOWN_PARTITION`.
    pub fn upgrade_learner(&self, gpid: Gpid, ballot: i64, node: &str) -> Step {
        self.primary_request(
            "upgrade_learner",
            gpid,
            ballot,
            node,
            reconfig::on_upgrade_request,
        )
    }

    /// A membership request from a partition's primary about `node`
    /// (`what` names it in errors), decided by `decide(config, requester,
    /// ballot, node)`: `Done` once the new configuration is persisted;
    /// `STALE_BALLOT` when `ballot` is not the current one, `INVALID_ARGUMENT`
    /// for a refusal (or replication off), `UNKNOWN_TABLE` /
    /// `UNKNOWN_PARTITION` for an unknown gpid. Nothing is persisted on an
    /// error.
    fn primary_request(
        &self,
        what: &str,
        gpid: Gpid,
        ballot: i64,
        node: &str,
        decide: fn(&ReplicaConfig, NodeId, Ballot, NodeId) -> Result<ReplicaConfig, ReconfigError>,
    ) -> Step {
        if self.settings.replication.is_none() {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!("{what} needs replication (meta config replication = true)"),
            );
        }
        let partition = match self.partition(gpid) {
            Ok(partition) => partition,
            Err(error) => return Step::reply(Err(error)),
        };
        let members = ReplicaMembers::of(partition, &[node]);
        let requester = members
            .config
            .primary
            .expect("a stored partition has a primary");
        let target = members.id(node).expect("node was added to the members");
        let ballot = Ballot::try_from(ballot).unwrap_or(0);
        match decide(&members.config, requester, ballot, target) {
            Ok(new) => {
                let mut next = self.successor();
                next.tables.get_mut(&gpid.app_id).expect("found above").partitions
                    [gpid.partition_index as usize] = members.stored(partition, &new, &[]);
                Step {
                    reply: Ok(ResponseBody::Done),
                    persist: Some(next),
                }
            }
            Err(ReconfigError::StaleBallot { got, current }) => Step::error(
                ErrorCode::StaleBallot,
                format!(
                    "{what} of {node} in partition {}.{} at ballot {got}: the partition is at ballot {current}",
                    gpid.app_id, gpid.partition_index
                ),
            ),
            Err(error) => Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "{what} in partition {}.{}: {}",
                    gpid.app_id,
                    gpid.partition_index,
                    members.describe(&error)
                ),
            ),
        }
    }

    // ---- Requests that change persistent data ----

    fn create_table(&self, create: &CreateTableRequest, now: MetaTime) -> Step {
        if let Err(message) = validate_table_name(&create.table) {
            return Step::error(ErrorCode::InvalidArgument, format!("table {message}"));
        }
        if let Some((app_id, existing)) = self.find_available(&create.table) {
            if create.success_if_exist {
                return Step::reply(Ok(ResponseBody::Table(existing.info(app_id))));
            }
            return Step::error(
                ErrorCode::TableExists,
                format!("table {:?} already exists (app_id {app_id})", create.table),
            );
        }
        let partition_count = match u32::try_from(create.partition_count) {
            Ok(count) => count,
            Err(_) => {
                return Step::error(
                    ErrorCode::InvalidArgument,
                    format!(
                        "partition_count = {} must be a power of two in 1..={}",
                        create.partition_count,
                        crate::table::PARTITION_COUNT_MAX
                    ),
                )
            }
        };
        if let Err(message) = validate_partition_count(partition_count) {
            return Step::error(ErrorCode::InvalidArgument, message);
        }
        let replica_count = if create.replica_count == 0 {
            self.settings.replica_count_default
        } else {
            create.replica_count
        };
        if !(1..=self.settings.replica_count_max).contains(&replica_count) {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "replica_count = {} is out of range (allowed 1..={}, 0 = the default {})",
                    create.replica_count,
                    self.settings.replica_count_max,
                    self.settings.replica_count_default
                ),
            );
        }
        let envs = match validate_envs(&BTreeMap::new(), &create.envs) {
            Ok(envs) => envs,
            Err(error) => return Step::reply(Err(error)),
        };
        if self.data.tables.len() >= TABLES_MAX {
            return Step::error(
                ErrorCode::Busy,
                format!("meta holds {TABLES_MAX} tables, its maximum; drop some first"),
            );
        }
        let partitions_total: usize = self
            .data
            .tables
            .values()
            .map(|table| table.partitions.len())
            .sum();
        if partitions_total + partition_count as usize > PARTITIONS_TOTAL_MAX {
            return Step::error(
                ErrorCode::Busy,
                format!(
                    "{partition_count} more partitions would exceed meta's maximum of {PARTITIONS_TOTAL_MAX} (now {partitions_total})"
                ),
            );
        }
        if self.data.next_app_id == i32::MAX {
            return Step::error(ErrorCode::Internal, "app ids are exhausted");
        }
        let partitions = match self.place(partition_count as usize, replica_count, now.monotonic_ms)
        {
            Ok(partitions) => partitions,
            Err(error) => return Step::reply(Err(error)),
        };
        let mut next = self.successor();
        let app_id = next.next_app_id;
        next.next_app_id += 1;
        let table = StoredTable {
            name: create.table.clone(),
            status: StoredStatus::Available,
            partition_count: create.partition_count,
            replica_count,
            envs,
            create_time_s: now.unix_ms / 1000,
            drop_time_s: 0,
            drop_expire_s: 0,
            partitions,
            restore: None,
            split: None,
        };
        let info = table.info(app_id);
        next.tables.insert(app_id, table);
        Step {
            reply: Ok(ResponseBody::Table(info)),
            persist: Some(next),
        }
    }

    fn drop_table(&self, name: &str, reserve_seconds: Option<u32>, unix_ms: u64) -> Step {
        let app_id = match self.available(name) {
            Ok((app_id, _)) => app_id,
            Err(error) => return Step::reply(Err(error)),
        };
        let hold_seconds = reserve_seconds
            .map(u64::from)
            .unwrap_or(self.settings.hold_seconds)
            .min(HOLD_SECONDS_MAX);
        let mut next = self.successor();
        // A recalled table is not duplicated again: its remote may have
        // gone on without it.
        next.dups.retain(|_, dup| dup.app_id != app_id);
        let table = next.tables.get_mut(&app_id).expect("found above");
        table.status = StoredStatus::Dropped;
        table.drop_time_s = unix_ms / 1000;
        table.drop_expire_s = table.drop_time_s + hold_seconds;
        Step {
            reply: Ok(ResponseBody::Done),
            persist: Some(next),
        }
    }

    fn recall_table(&self, app_id: i32, new_name: &str, unix_ms: u64) -> Step {
        let Some(table) = self.data.tables.get(&app_id) else {
            return Step::error(
                ErrorCode::UnknownTable,
                format!("no dropped table has app_id {app_id}"),
            );
        };
        if table.is_available() {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "table {:?} (app_id {app_id}) is not dropped; nothing to recall",
                    table.name
                ),
            );
        }
        if table.hold_expired(unix_ms) {
            return Step::error(
                ErrorCode::UnknownTable,
                format!(
                    "table {:?} (app_id {app_id}) can no longer be recalled: its hold ended at unix time {}",
                    table.name, table.drop_expire_s
                ),
            );
        }
        let name = if new_name.is_empty() {
            table.name.clone()
        } else {
            new_name.to_owned()
        };
        if let Err(message) = validate_table_name(&name) {
            return Step::error(ErrorCode::InvalidArgument, format!("new table {message}"));
        }
        if let Some((other_app_id, _)) = self.find_available(&name) {
            return Step::error(
                ErrorCode::TableExists,
                format!(
                    "cannot recall app_id {app_id} as {name:?}: table {name:?} exists (app_id {other_app_id}); give a new name"
                ),
            );
        }
        let mut next = self.successor();
        let table = next.tables.get_mut(&app_id).expect("found above");
        table.name = name;
        table.status = StoredStatus::Available;
        table.drop_time_s = 0;
        table.drop_expire_s = 0;
        let info = table.info(app_id);
        Step {
            reply: Ok(ResponseBody::Table(info)),
            persist: Some(next),
        }
    }

    fn set_app_envs(&self, name: &str, envs: &[(String, String)]) -> Step {
        let (app_id, stored) = match self.available(name) {
            Ok(found) => found,
            Err(error) => return Step::reply(Err(error)),
        };
        if envs.is_empty() {
            return Step::error(
                ErrorCode::InvalidArgument,
                "set_app_envs needs at least one entry",
            );
        }
        let merged = match validate_envs(&stored.envs, envs) {
            Ok(merged) => merged,
            Err(error) => return Step::reply(Err(error)),
        };
        let mut next = self.successor();
        next.tables.get_mut(&app_id).expect("found above").envs = merged;
        Step {
            reply: Ok(ResponseBody::Done),
            persist: Some(next),
        }
    }

    // ---- Beacons ----

    fn beacon(&mut self, beacon: &NodeBeacon, now: MetaTime) -> Step {
        let now_ms = now.monotonic_ms;
        if beacon.node.is_empty() || beacon.node.len() > ADDRESS_BYTES_MAX {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "beacon node id must be 1..={ADDRESS_BYTES_MAX} bytes (host:port of shard 0)"
                ),
            );
        }
        if beacon.shard_addresses.is_empty() || beacon.shard_addresses.len() > SHARDS_PER_NODE_MAX {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "beacon of {} lists {} shard addresses (allowed 1..={SHARDS_PER_NODE_MAX})",
                    beacon.node,
                    beacon.shard_addresses.len()
                ),
            );
        }
        if let Some(bad) = beacon
            .shard_addresses
            .iter()
            .find(|address| address.is_empty() || address.len() > ADDRESS_BYTES_MAX)
        {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!("beacon of {} has a bad shard address {bad:?}", beacon.node),
            );
        }
        if !self.nodes.contains_key(&beacon.node) && self.nodes.len() >= NODES_MAX {
            let oldest_dead = self
                .nodes
                .iter()
                .filter(|(_, record)| !self.is_alive(record, now_ms))
                .min_by_key(|(_, record)| record.last_beacon_ms)
                .map(|(node, _)| node.clone());
            match oldest_dead {
                Some(node) => {
                    self.nodes.remove(&node);
                }
                None => {
                    return Step::error(
                        ErrorCode::Busy,
                        format!("meta tracks {NODES_MAX} alive nodes, its maximum"),
                    )
                }
            }
        }
        // Incarnations grow with every start of a node process. A lower
        // one than meta last heard is a beacon of an earlier process, sent
        // before the restart meta already handled: it is no restart and
        // says nothing current (**restart-once-per-incarnation**) — unless
        // the node has been silent past the grace, which no beacon in
        // flight outlasts (a node whose clock stepped back and whose data
        // directory is new must still be heard).
        if let Some(record) = self.nodes.get(&beacon.node) {
            if beacon.incarnation < record.incarnation && self.is_alive(record, now_ms) {
                return Step::error(
                    ErrorCode::InvalidArgument,
                    format!(
                        "stale beacon of {}: incarnation {} is older than {}, which meta heard from already",
                        beacon.node, beacon.incarnation, record.incarnation
                    ),
                );
            }
        }
        let restarted = self
            .nodes
            .get(&beacon.node)
            .is_some_and(|record| record.incarnation != beacon.incarnation);
        self.nodes.insert(
            beacon.node.clone(),
            NodeRecord {
                shard_addresses: beacon.shard_addresses.clone(),
                last_beacon_ms: now_ms,
                paused_total_at_beacon_ms: self.paused_total_ms,
                replicas: beacon.replicas.clone(),
                incarnation: beacon.incarnation,
            },
        );
        let mut persist = self.reconfigure_restarted(&beacon.node, &beacon.replicas, restarted);
        if !beacon.splits.is_empty() {
            let data = persist.as_ref().unwrap_or(&self.data).clone();
            self.take_split_reports(&data, &beacon.node, &beacon.splits);
            let mut next = persist.clone().unwrap_or_else(|| self.successor());
            if self.commit_splits(&mut next) {
                persist = Some(next);
            }
        }
        if !beacon.dups.is_empty() {
            let mut next = persist.clone().unwrap_or_else(|| self.successor());
            if self.take_dup_reports(&mut next, &beacon.node, &beacon.dups, now_ms) {
                persist = Some(next);
            }
        }
        if !beacon.backups.is_empty() {
            let mut next = persist.clone().unwrap_or_else(|| self.successor());
            let backups = self.take_backup_reports(&mut next, &beacon.node, &beacon.backups, now);
            let restores = self.take_restore_reports(&mut next, &beacon.node, &beacon.backups);
            if backups || restores {
                persist = Some(next);
            }
        }
        // The ack describes the state being persisted, never the one it
        // replaces (**ack-from-persisted**): its assignments carry the
        // leases the node will serve under.
        let data = persist.as_ref().unwrap_or(&self.data);
        let mut step = Step::reply(Ok(ResponseBody::BeaconAck(BeaconAck {
            assignments: self.assignments(data, &beacon.node, &beacon.replicas),
            drops: drops(data, &beacon.node, &beacon.replicas, now.unix_ms),
            lease_ms: self
                .settings
                .replication
                .map_or(0, |replication| replication.lease_ms),
            replica_count_min_alive: self
                .settings
                .replication
                .map_or(0, |replication| replication.replica_count_min_alive),
            beacon_again_ms: if self.splitting_on(data, &beacon.node) {
                splits::SPLIT_BEACON_MS
            } else {
                self.beacon_again_ms(data, &beacon.node)
            },
            backups: self.backup_orders(data, &beacon.node),
            restores: self.restore_orders(data, &beacon.node),
            splits: self.split_orders(data, &beacon.node),
            dups: self.dup_orders(data, &beacon.node),
            cluster_id: self.settings.cluster_id,
        })));
        step.persist = persist;
        step
    }

    /// The configurations `node` must follow, from `data`: every replica of
    /// an available table placed on it (a learner's too), and the current
    /// configuration of every replica it reports that is no longer placed
    /// on it (**replica-told-it-left**), so that a replica meta replaced
    /// while it was silent learns at once that it is no longer primary —
    /// on the shard it reported. The node takes a lease for each assignment
    /// naming it primary, at that ballot (**lease-per-ballot**).
    fn assignments(
        &self,
        data: &MetaData,
        node: &str,
        reported: &[HostedReplica],
    ) -> Vec<ReplicaAssignment> {
        let mut assignments = Vec::new();
        for (app_id, table) in &data.tables {
            if !table.is_available() {
                continue;
            }
            for (index, partition) in table.live_partitions() {
                let gpid = Gpid {
                    app_id: *app_id,
                    partition_index: index as i32,
                };
                let placed = partition.places().find(|place| place.node == node);
                let shard = match placed {
                    Some(place) => place.shard,
                    None => match reported.iter().find(|replica| replica.gpid == gpid) {
                        Some(replica) => replica.shard,
                        None => continue,
                    },
                };
                assignments.push(ReplicaAssignment {
                    table: table.name.clone(),
                    app_id: *app_id,
                    partition_index: index as i32,
                    partition_count: table.partition_count,
                    shard,
                    ballot: partition.ballot,
                    primary: partition.primary.node.clone(),
                    secondaries: partition
                        .secondaries
                        .iter()
                        .map(|secondary| secondary.node.clone())
                        .collect(),
                    member_addresses: partition
                        .places()
                        .map(|member| self.shard_address(member))
                        .collect(),
                    learners: partition
                        .learners
                        .iter()
                        .map(|learner| learner.node.clone())
                        .collect(),
                    replica_count: table.replica_count,
                    handoff_to: self.handoff_target(gpid, partition).unwrap_or_default(),
                    split_child: partition.split_child,
                });
            }
        }
        assignments
    }

    // ---- Placement ----

    /// Places `partition_count` partitions. Without replication: a primary
    /// only. With replication: a primary and `replica_count - 1`
    /// secondaries on distinct alive nodes, as many as there are alive nodes
    /// (the guardian will fill the rest later), refusing `NOT_ENOUGH_NODES`
    /// below `min(replica_count, replica_count_min_alive)`. A partition's
    /// primary goes to the alive node with the fewest primaries (ties: the
    /// fewest replicas, then the lowest node id), each secondary to the
    /// alive node with the fewest replicas (ties: lowest node id) not yet
    /// holding one of the partition; each on that node's shard with the
    /// fewest replicas (ties: lowest shard). Counts include the replicas
    /// placed earlier in the same call.
    fn place(
        &self,
        partition_count: usize,
        replica_count: i32,
        now_ms: u64,
    ) -> Result<Vec<StoredPartition>, OpError> {
        let mut load: BTreeMap<&str, Vec<usize>> = self
            .nodes
            .iter()
            .filter(|(node, record)| {
                self.is_alive(record, now_ms) && !self.data.removing_nodes.contains(*node)
            })
            .map(|(node, record)| (node.as_str(), vec![0usize; record.shard_addresses.len()]))
            .collect();
        if load.is_empty() {
            return Err(OpError::new(
                ErrorCode::NotEnoughNodes,
                format!(
                    "no alive node to place {partition_count} partitions on (a node is alive while its last beacon is younger than {} ms)",
                    self.settings.node_timeout_ms
                ),
            ));
        }
        // Primaries per node: a partition's first replica (its primary) goes
        // to the node with the fewest primaries, so that writes spread.
        let mut primaries: BTreeMap<String, usize> = BTreeMap::new();
        for table in self
            .data
            .tables
            .values()
            .filter(|table| table.is_available())
        {
            for partition in &table.partitions {
                *primaries.entry(partition.primary.node.clone()).or_default() += 1;
                for place in partition.places() {
                    if let Some(shards) = load.get_mut(place.node.as_str()) {
                        if let Some(count) = shards.get_mut(place.shard.max(0) as usize) {
                            *count += 1;
                        }
                    }
                }
            }
        }
        let places_per_partition = match self.settings.replication {
            None => 1,
            Some(replication) => {
                let wanted = replica_count.max(1) as usize;
                let needed = wanted.min(replication.replica_count_min_alive.max(1) as usize);
                if load.len() < needed {
                    return Err(OpError::new(
                        ErrorCode::NotEnoughNodes,
                        format!(
                            "{} alive nodes, but each partition needs at least {needed} replicas on distinct nodes (replica_count {replica_count}, meta replica_count_min_alive {})",
                            load.len(),
                            replication.replica_count_min_alive
                        ),
                    ));
                }
                wanted.min(load.len())
            }
        };
        let mut partitions = Vec::with_capacity(partition_count);
        for _ in 0..partition_count {
            let mut places: Vec<ReplicaPlace> = Vec::with_capacity(places_per_partition);
            for _ in 0..places_per_partition {
                // BTreeMap iterates by node id, and min_by_key keeps the first
                // minimum: ties go to the lowest node id, then the lowest shard.
                let is_primary = places.is_empty();
                let (node, shards) = load
                    .iter_mut()
                    .filter(|(node, _)| !places.iter().any(|place| place.node == **node))
                    .min_by_key(|(node, shards)| {
                        let primary_count = if is_primary {
                            primaries.get(**node).copied().unwrap_or(0)
                        } else {
                            0
                        };
                        (primary_count, shards.iter().sum::<usize>())
                    })
                    .expect("fewer places than alive nodes");
                if is_primary {
                    *primaries.entry((*node).to_owned()).or_default() += 1;
                }
                let (shard, count) = shards
                    .iter_mut()
                    .enumerate()
                    .min_by_key(|(_, count)| **count)
                    .expect("a node has at least one shard");
                *count += 1;
                let address = self.nodes[*node].shard_addresses[shard].clone();
                places.push(ReplicaPlace {
                    node: (*node).to_owned(),
                    shard: shard as i32,
                    address,
                });
            }
            let mut places = places.into_iter();
            let primary = places.next().expect("at least one place per partition");
            let mut secondaries: Vec<ReplicaPlace> = places.collect();
            secondaries.sort_by(|a, b| a.node.cmp(&b.node));
            partitions.push(StoredPartition {
                ballot: 1,
                primary,
                secondaries,
                learners: Vec::new(),
                split_child: false,
            });
        }
        Ok(partitions)
    }

    // ---- Queries ----

    /// Route entries: the primary's shard address from the node registry
    /// while the node is known, else the address recorded at placement (a
    /// dead or not yet re-registered primary still gets its last known
    /// address; the client's retry and refresh handle it).
    fn routes(&self, table: &StoredTable) -> Vec<PartitionRoute> {
        table
            .partitions
            .iter()
            .enumerate()
            .map(|(index, partition)| PartitionRoute {
                partition_index: index as i32,
                address: self.shard_address(&partition.primary),
                ballot: partition.ballot,
            })
            .collect()
    }

    fn shard_address(&self, place: &ReplicaPlace) -> String {
        self.nodes
            .get(&place.node)
            .and_then(|record| record.shard_addresses.get(place.shard.max(0) as usize))
            .cloned()
            .unwrap_or_else(|| place.address.clone())
    }

    /// What `list_nodes` answers: every node meta knows, with its replica
    /// and primary counts in total and per shard.
    pub fn node_infos(&self, now_ms: u64) -> Vec<NodeInfo> {
        let placed = self.placed_counts();
        self.nodes
            .iter()
            .map(|(node, record)| {
                let (shard_replicas, shard_primaries) =
                    self.shard_counts(node, record.shard_addresses.len());
                NodeInfo {
                    node: node.clone(),
                    shard_addresses: record.shard_addresses.clone(),
                    alive: self.is_alive(record, now_ms),
                    replica_count: placed.get(node.as_str()).copied().unwrap_or(0),
                    last_beacon_ms_ago: now_ms.saturating_sub(record.last_beacon_ms),
                    primary_count: shard_primaries.iter().sum(),
                    shard_replica_counts: shard_replicas,
                    shard_primary_counts: shard_primaries,
                    removing: self.data.removing_nodes.contains(node),
                }
            })
            .collect()
    }

    /// Replicas and primaries of available tables placed on each of
    /// `node`'s `shards` shards.
    fn shard_counts(&self, node: &str, shards: usize) -> (Vec<i32>, Vec<i32>) {
        let mut replicas = vec![0; shards];
        let mut primaries = vec![0; shards];
        for partition in self
            .data
            .tables
            .values()
            .filter(|table| table.is_available())
            .flat_map(|table| &table.partitions)
        {
            for place in partition.places().filter(|place| place.node == node) {
                if let Some(count) = usize::try_from(place.shard)
                    .ok()
                    .and_then(|shard| replicas.get_mut(shard))
                {
                    *count += 1;
                }
            }
            if partition.primary.node == node {
                if let Some(count) = usize::try_from(partition.primary.shard)
                    .ok()
                    .and_then(|shard| primaries.get_mut(shard))
                {
                    *count += 1;
                }
            }
        }
        (replicas, primaries)
    }

    /// Replicas of available tables placed per node.
    fn placed_counts(&self) -> BTreeMap<&str, i32> {
        let mut counts = BTreeMap::new();
        for place in self.available_places() {
            *counts.entry(place.node.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// Every replica place of every available table's partitions.
    fn available_places(&self) -> impl Iterator<Item = &ReplicaPlace> {
        self.data
            .tables
            .values()
            .filter(|table| table.is_available())
            .flat_map(|table| &table.partitions)
            .flat_map(StoredPartition::places)
    }

    fn cluster_info(&self, now_ms: u64) -> Vec<(String, String)> {
        let alive = self
            .nodes
            .values()
            .filter(|record| self.is_alive(record, now_ms))
            .count();
        let available: Vec<&StoredTable> = self
            .data
            .tables
            .values()
            .filter(|table| table.is_available())
            .collect();
        let partitions: usize = available.iter().map(|table| table.partitions.len()).sum();
        let pairs = [
            ("meta_address", self.settings.meta_address.clone()),
            ("data_dir", self.settings.data_dir.clone()),
            ("nodes_alive", alive.to_string()),
            ("nodes_total", self.nodes.len().to_string()),
            ("tables", available.len().to_string()),
            (
                "tables_dropped",
                (self.data.tables.len() - available.len()).to_string(),
            ),
            ("partitions", partitions.to_string()),
            ("next_app_id", self.data.next_app_id.to_string()),
            ("hold_seconds", self.settings.hold_seconds.to_string()),
            ("node_timeout_ms", self.settings.node_timeout_ms.to_string()),
            (
                "replica_count_default",
                self.settings.replica_count_default.to_string(),
            ),
            (
                "replica_count_max",
                self.settings.replica_count_max.to_string(),
            ),
            ("metadata_version", self.data.version.to_string()),
            ("cluster_id", self.settings.cluster_id.to_string()),
        ];
        let mut pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        // Only with replication on, so that the switch off answers exactly
        // as before.
        if let Some(replication) = self.settings.replication {
            let frozen = self.frozen(now_ms).is_some();
            for (key, value) in [
                ("replication", "true".to_owned()),
                (
                    "beacon_interval_ms",
                    replication.beacon_interval_ms.to_string(),
                ),
                ("lease_ms", replication.lease_ms.to_string()),
                ("grace_ms", replication.grace_ms.to_string()),
                (
                    "replica_count_min_alive",
                    replication.replica_count_min_alive.to_string(),
                ),
                (
                    "alive_percent_min",
                    replication.alive_percent_min.to_string(),
                ),
                ("frozen", frozen.to_string()),
                ("meta_paused_ms", self.paused_total_ms.to_string()),
            ] {
                pairs.push((key.to_owned(), value));
            }
        }
        pairs
    }

    // ---- Helpers ----

    fn successor(&self) -> MetaData {
        let mut next = self.data.clone();
        next.version += 1;
        next
    }

    /// Meta's bookkeeping of its own time at every input: a gap since the
    /// last input longer than [`MetaState::pause_threshold_ms`] means meta
    /// itself was not running (paused, starved, its machine suspended), so
    /// it heard nothing then; the gap is added to `paused_total_ms` and is
    /// nobody's silence (**meta-pause-not-silence**).
    fn observe(&mut self, now: MetaTime) {
        let now_ms = now.monotonic_ms;
        self.started_ms.get_or_insert(now_ms);
        if let Some(last_ms) = self.last_input_ms {
            let gap_ms = now_ms.saturating_sub(last_ms);
            if gap_ms > self.pause_threshold_ms() {
                self.paused_total_ms += gap_ms;
            }
        }
        self.last_input_ms = Some(self.last_input_ms.unwrap_or(0).max(now_ms));
    }

    /// The longest gap between inputs that is not a pause of meta: one
    /// beacon interval with replication (meta ticks twice in one), else a
    /// quarter of the node timeout.
    fn pause_threshold_ms(&self) -> u64 {
        match self.settings.replication {
            Some(replication) => replication.beacon_interval_ms,
            None => self.settings.node_timeout_ms / 4,
        }
    }

    /// How long meta has heard nothing from a node last heard at
    /// `heard_ms` (when meta's paused total was `paused_at_ms`), meta's own
    /// pauses since left out.
    fn silence_ms(&self, heard_ms: u64, paused_at_ms: u64, now_ms: u64) -> u64 {
        now_ms
            .saturating_sub(heard_ms)
            .saturating_sub(self.paused_total_ms.saturating_sub(paused_at_ms))
    }

    fn is_alive(&self, record: &NodeRecord, now_ms: u64) -> bool {
        self.silence_ms(
            record.last_beacon_ms,
            record.paused_total_at_beacon_ms,
            now_ms,
        ) < self.settings.dead_after_ms()
    }

    /// Whether `node` is alive: its last beacon is younger than the dead
    /// time, or it never beaconed since meta started and meta started less
    /// than the dead time ago (a restarted meta gives every node a chance);
    /// meta's own pauses do not count (**meta-pause-not-silence**).
    fn is_node_alive(&self, node: &str, now_ms: u64) -> bool {
        self.node_silence_ms(node, now_ms) < self.settings.dead_after_ms()
    }

    /// How long meta has not heard from `node` (since it started, for a
    /// node it has not heard from yet), its own pauses left out.
    fn node_silence_ms(&self, node: &str, now_ms: u64) -> u64 {
        match self.nodes.get(node) {
            Some(record) => self.silence_ms(
                record.last_beacon_ms,
                record.paused_total_at_beacon_ms,
                now_ms,
            ),
            None => self.silence_ms(self.started_ms.unwrap_or(now_ms), 0, now_ms),
        }
    }

    /// Why meta is frozen at `now_ms`, or `None`: with replication on,
    /// fewer than `alive_percent_min` percent of the nodes it knows (alive
    /// nodes and nodes holding replicas of available tables) were heard
    /// within half the dead time. Nodes cut off together fall silent within
    /// a beacon interval of each other, not at the same tick: when the
    /// first passes the grace the others are already half-way there and
    /// count as lost, while healthy nodes have beaconed moments ago. So
    /// many at once more likely means meta lost them (it is cut off, or
    /// its pause outlasted its own detection) than that they died, so
    /// frozen, meta removes and replaces no member and adds no learner
    /// (**no-removal-when-frozen**); restarts it hears of are still handled.
    pub fn frozen(&self, now_ms: u64) -> Option<String> {
        let replication = self.settings.replication?;
        let mut known: BTreeSet<&str> = self
            .nodes
            .iter()
            .filter(|(_, record)| self.is_alive(record, now_ms))
            .map(|(node, _)| node.as_str())
            .collect();
        known.extend(self.available_places().map(|place| place.node.as_str()));
        let heard_within_ms = self.settings.dead_after_ms() / 2;
        let alive = known
            .iter()
            .filter(|node| self.node_silence_ms(node, now_ms) < heard_within_ms)
            .count();
        let percent_min = usize::from(replication.alive_percent_min);
        (alive * 100 < percent_min * known.len()).then(|| {
            format!(
                "meta is frozen: {alive} of the {} nodes it knows were heard within {heard_within_ms} ms, fewer than alive_percent_min = {percent_min}%; it removes no member until more nodes beacon",
                known.len()
            )
        })
    }

    fn reported_by_alive_node(&self, app_id: i32, now_ms: u64) -> bool {
        self.nodes.values().any(|record| {
            self.is_alive(record, now_ms)
                && record
                    .replicas
                    .iter()
                    .any(|replica| replica.gpid.app_id == app_id)
        })
    }

    /// The partition `gpid` of an available table; `UNKNOWN_TABLE` or
    /// `UNKNOWN_PARTITION` when there is none.
    fn partition(&self, gpid: Gpid) -> Result<&StoredPartition, OpError> {
        let table = self
            .data
            .tables
            .get(&gpid.app_id)
            .filter(|table| table.is_available())
            .ok_or_else(|| {
                OpError::new(
                    ErrorCode::UnknownTable,
                    format!("no available table has app_id {}", gpid.app_id),
                )
            })?;
        usize::try_from(gpid.partition_index)
            .ok()
            .and_then(|index| table.partitions.get(index))
            .ok_or_else(|| {
                OpError::new(
                    ErrorCode::UnknownPartition,
                    format!(
                        "table {:?} has no partition {} (it has {})",
                        table.name, gpid.partition_index, table.partition_count
                    ),
                )
            })
    }

    /// The shard on which `node`'s last beacon says it keeps a replica of
    /// `gpid`, if it does: a node opens a replica on one shard only
    /// (**replica-stays-on-its-shard**).
    fn kept_shard(&self, node: &str, gpid: Gpid) -> Option<i32> {
        self.nodes
            .get(node)?
            .replicas
            .iter()
            .find(|replica| replica.gpid == gpid)
            .map(|replica| replica.shard)
    }

    fn find_available(&self, name: &str) -> Option<(i32, &StoredTable)> {
        self.data
            .tables
            .iter()
            .find(|(_, table)| table.is_available() && table.name == name)
            .map(|(app_id, table)| (*app_id, table))
    }

    fn available(&self, name: &str) -> Result<(i32, &StoredTable), OpError> {
        self.find_available(name).ok_or_else(|| {
            OpError::new(
                ErrorCode::UnknownTable,
                format!("table {name:?} does not exist"),
            )
        })
    }
}

/// The reported replicas whose data the node must delete, by `data` at
/// `unix_ms`: those of dropped tables past their hold, those of forgotten
/// tables (an app id below `next_app_id` that meta no longer has — app ids
/// are never reused, so such a replica can belong to nothing), and those
/// `node` no longer has a place in while their partition has its whole
/// replica count of primary and secondaries without it (a moved or removed
/// replica: **moved-replica-dropped**; while the partition is short, the
/// data may still save the guardian's learner a full copy).
fn drops(data: &MetaData, node: &str, replicas: &[HostedReplica], unix_ms: u64) -> Vec<Gpid> {
    let mut drops: Vec<Gpid> = replicas
        .iter()
        .map(|replica| replica.gpid)
        .filter(|gpid| match data.tables.get(&gpid.app_id) {
            Some(table) if table.is_available() => usize::try_from(gpid.partition_index)
                .ok()
                .and_then(|index| table.partitions.get(index))
                .is_some_and(|partition| {
                    !partition.holds(node)
                        && 1 + partition.secondaries.len() >= table.replica_count.max(1) as usize
                }),
            Some(table) => table.hold_expired(unix_ms),
            None => gpid.app_id > 0 && gpid.app_id < data.next_app_id,
        })
        .collect();
    drops.sort();
    drops.dedup();
    drops
}

/// A stored partition's members in the terms of
/// [`crate::replication::reconfig`]: node names sorted, `NodeId(i)` is the
/// i-th name, so "lowest node id" there means the lowest name here.
struct ReplicaMembers {
    names: Vec<String>,
    config: ReplicaConfig,
}

impl ReplicaMembers {
    /// The members and learners of `partition`, plus `extra` (nodes a
    /// request or the guardian names that may not be replicas).
    fn of(partition: &StoredPartition, extra: &[&str]) -> ReplicaMembers {
        let mut names: Vec<String> = partition
            .places()
            .map(|place| place.node.clone())
            .chain(extra.iter().map(|node| (*node).to_owned()))
            .collect();
        names.sort();
        names.dedup();
        let id = |node: &str| {
            NodeId(
                names
                    .binary_search_by(|name| name.as_str().cmp(node))
                    .expect("a member") as u32,
            )
        };
        let mut secondaries: Vec<NodeId> = partition
            .secondaries
            .iter()
            .map(|place| id(&place.node))
            .collect();
        secondaries.sort();
        let mut learners: Vec<NodeId> = partition
            .learners
            .iter()
            .map(|place| id(&place.node))
            .collect();
        learners.sort();
        let config = ReplicaConfig {
            ballot: partition.ballot.max(0) as u64,
            primary: Some(id(&partition.primary.node)),
            secondaries,
            learners,
        };
        ReplicaMembers { names, config }
    }

    fn id(&self, node: &str) -> Option<NodeId> {
        self.names
            .binary_search_by(|name| name.as_str().cmp(node))
            .ok()
            .map(|index| NodeId(index as u32))
    }

    fn name(&self, id: NodeId) -> &str {
        &self.names[id.0 as usize]
    }

    /// `new` as a stored partition, every replica keeping the place (shard,
    /// address) it had in `old`; a new one (a learner the guardian adds)
    /// takes its place from `added`.
    fn stored(
        &self,
        old: &StoredPartition,
        new: &ReplicaConfig,
        added: &[ReplicaPlace],
    ) -> StoredPartition {
        let place_of = |id: NodeId| -> ReplicaPlace {
            let node = self.name(id);
            old.places()
                .chain(added)
                .find(|place| place.node == node)
                .cloned()
                .expect("reconfiguration keeps replicas or adds placed ones")
        };
        let primary = place_of(new.primary.expect("reconfiguration keeps a primary"));
        let secondaries = new.secondaries.iter().map(|id| place_of(*id)).collect();
        let learners = new.learners.iter().map(|id| place_of(*id)).collect();
        let ballot = i64::try_from(new.ballot).expect("ballot fits i64");
        assert!(ballot > old.ballot, "ballot-monotonic");
        StoredPartition {
            ballot,
            primary,
            secondaries,
            learners,
            split_child: old.split_child,
        }
    }

    /// `error` with node names instead of ids.
    fn describe(&self, error: &ReconfigError) -> String {
        match error {
            ReconfigError::StaleBallot { got, current } => {
                format!("ballot {got} is stale, the partition is at ballot {current}")
            }
            ReconfigError::NotPrimary { node } => {
                format!("{} is not the partition's primary", self.name(*node))
            }
            ReconfigError::NotSecondary { node } => {
                format!(
                    "{} is neither a secondary nor a learner of the partition",
                    self.name(*node)
                )
            }
            ReconfigError::NotLearner { node } => {
                format!("{} is not a learner of the partition", self.name(*node))
            }
        }
    }
}

fn describe_partitions(table: &StoredTable) -> Vec<PartitionConfig> {
    table
        .partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| PartitionConfig {
            partition_index: index as i32,
            ballot: partition.ballot,
            primary: partition.primary.node.clone(),
            secondaries: partition
                .secondaries
                .iter()
                .map(|place| place.node.clone())
                .collect(),
            learners: partition
                .learners
                .iter()
                .map(|place| place.node.clone())
                .collect(),
        })
        .collect()
}

/// `current` with `updates` inserted or replaced, after checking every entry
/// and the bounds.
fn validate_envs(
    current: &BTreeMap<String, String>,
    updates: &[(String, String)],
) -> Result<BTreeMap<String, String>, OpError> {
    let mut merged = current.clone();
    for (key, value) in updates {
        if key.is_empty() || key.len() > ENV_KEY_BYTES_MAX {
            return Err(OpError::invalid_argument(format!(
                "env key {key:?} must be 1..={ENV_KEY_BYTES_MAX} bytes"
            )));
        }
        if value.len() > ENV_VALUE_BYTES_MAX {
            return Err(OpError::invalid_argument(format!(
                "env {key:?}: value of {} bytes exceeds {ENV_VALUE_BYTES_MAX} bytes",
                value.len()
            )));
        }
        merged.insert(key.clone(), value.clone());
    }
    if merged.len() > ENVS_PER_TABLE_MAX {
        return Err(OpError::invalid_argument(format!(
            "a table may have at most {ENVS_PER_TABLE_MAX} envs ({} requested)",
            merged.len()
        )));
    }
    Ok(merged)
}

#[path = "backups.rs"]
mod backups;
#[path = "dups.rs"]
mod dups;
#[path = "policies.rs"]
mod policies;
#[path = "restores.rs"]
mod restores;
#[path = "splits.rs"]
mod splits;
pub use dups::{
    DupPartitionProgress, DupStatus, RemoteFacts, StoredDup, DUPS_MAX, DUP_CONFIRM_PERSIST_MS,
    DUP_DECREE_NONE, DUP_REMOTE_METAS_MAX,
};
pub use splits::{TableSplit, SPLIT_BEACON_MS};

pub use policies::{StoredPolicy, POLICIES_MAX, POLICY_KEEP_MAX};

pub use restores::{RestoreSource, RestoringPartition, TableRestore};
#[path = "balancer.rs"]
mod balancer;

pub use backups::{
    backup_prefix, partition_prefix, BackupStatus, BackupWork, PartitionBackup, StoredBackup,
    BACKUPS_RUNNING_MAX, BACKUP_RECORDS_MAX, BACKUP_URL_BYTES_MAX,
};

pub use balancer::{ActiveMove, MoveKind};

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
