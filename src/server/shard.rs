//! One shard's serving state: the partition replicas it owns, its scan
//! cursors, and the dispatch of one decoded request.
//!
//! Hot path: `ShardState::serve` runs on the shard's executor for every
//! request. It takes no locks (the state is the shard's alone) and calls
//! RocksDB synchronously (memtable writes and point reads are short; see
//! docs/DESIGN.md, "Inside a node").

pub mod replicated;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use markab_shards::log::{
    segment_path, LogConfig, LogError, LogPosition, MutationLog, RecordHeader, RecordLocation,
    Recovery, SegmentInfo,
};

use markab_shards::tuning::Tuning;
use markab_wire::{
    ErrorCode, Gpid, OpError, PartitionRoute, ReplicaAssignment, ReplicaRole, Request, Response,
    ResponseBody, Route, ScanRequest, SCAN_CONTEXT_COMPLETE,
};

use crate::config::TableConfig;
use crate::key;
use crate::metrics::ShardMetrics;
use crate::replication::config::ReplicationSettings;
use crate::replication::core::{Recovery as CoreRecovery, ReplicaCore};
use crate::replication::messages::{Decree, Input, PartitionConfig, Role};
use crate::server::beacon::{MetaRequests, ShardAck};
use crate::server::cursors::CursorTable;
use crate::storage::{
    Partition, RocksEngine, ShardStorage, StorageEngine, StorageLimits, StorageTuning, WriteBatch,
};
use replicated::{ReplicaHost, Replication};

/// The ballot of every record a standalone node writes (replication brings
/// real ballots).
pub const BALLOT_STANDALONE: i64 = 1;

/// Records per scan batch when the request leaves it to the server.
pub const SCAN_BATCH_DEFAULT: usize = 100;

/// How a node learns which replicas it hosts.
#[derive(Debug)]
pub enum NodeMode {
    /// The tables of the config file; partition `p` on shard `p % shards`.
    Standalone { tables: Vec<TableConfig> },
    /// Meta assigns replicas (and their shards) in beacon acks.
    Cluster,
}

/// Where a hosted replica lives on this node, and what beacons report of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostedEntry {
    pub shard: usize,
    pub ballot: i64,
    pub role: ReplicaRole,
    pub decree_prepared: i64,
    pub decree_committed: i64,
    pub decree_applied: i64,
}

impl HostedEntry {
    fn new(shard: usize, ballot: i64, decree_applied: i64, role: ReplicaRole) -> HostedEntry {
        HostedEntry {
            shard,
            ballot,
            role,
            decree_prepared: decree_applied,
            decree_committed: decree_applied,
            decree_applied,
        }
    }
}

/// What every shard of a node knows about the node.
#[derive(Debug)]
pub struct NodeLayout {
    pub mode: NodeMode,
    /// Every shard's listener address, by shard index.
    pub addresses: Vec<std::net::SocketAddr>,
    /// Every replica hosted on this node and its shard. Written only when a
    /// replica is hosted or dropped; read for beacons and for requests a
    /// shard does not host itself — never on the path of a request the
    /// shard serves.
    pub hosted: RwLock<HashMap<Gpid, HostedEntry>>,
    /// Cluster mode: a primary refuses writes while its partition has fewer
    /// members (from meta's beacon acks; 0 = no bound).
    pub replica_count_min_alive: AtomicI32,
    /// Cluster mode: requests replicas make to meta, sent by their own
    /// thread (beacon.rs).
    pub meta_requests: MetaRequests,
    /// Shards that have opened their replicas; beacons start once all have.
    pub shards_ready: AtomicUsize,
    /// When each shard's ticker last ran, on the node's clock: a shard
    /// quiet for too long is wedged (beacon.rs, [`NodeLayout::stalled_shard`]).
    pub shard_ticked_ms: Vec<AtomicU64>,
}

impl NodeLayout {
    pub fn new(mode: NodeMode, addresses: Vec<std::net::SocketAddr>) -> NodeLayout {
        let shard_ticked_ms = addresses.iter().map(|_| AtomicU64::new(0)).collect();
        NodeLayout {
            mode,
            addresses,
            hosted: RwLock::new(HashMap::new()),
            replica_count_min_alive: AtomicI32::new(0),
            meta_requests: MetaRequests::default(),
            shards_ready: AtomicUsize::new(0),
            shard_ticked_ms,
        }
    }

    /// The first shard whose ticker has not run for `limit_ms` at `now_ms`,
    /// with how long it has been quiet (a shard that never ticked yet counts
    /// from its first tick only).
    pub fn stalled_shard(&self, now_ms: u64, limit_ms: u64) -> Option<(usize, u64)> {
        self.shard_ticked_ms
            .iter()
            .enumerate()
            .map(|(shard, ticked)| (shard, ticked.load(Ordering::Relaxed)))
            .filter(|(_, ticked_ms)| *ticked_ms > 0)
            .map(|(shard, ticked_ms)| (shard, now_ms.saturating_sub(ticked_ms)))
            .find(|(_, quiet_ms)| *quiet_ms > limit_ms)
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.mode, NodeMode::Cluster)
    }

    /// The shard that serves `gpid`, or why no shard of this node does.
    pub fn locate(&self, gpid: Gpid) -> Result<usize, OpError> {
        match &self.mode {
            NodeMode::Standalone { tables } => {
                check_standalone_gpid(tables, gpid)?;
                Ok(gpid.partition_index as usize % self.addresses.len())
            }
            NodeMode::Cluster => {
                let hosted = self.hosted.read().expect("hosted registry lock");
                hosted.get(&gpid).map(|entry| entry.shard).ok_or_else(|| {
                    OpError::new(
                        ErrorCode::NotHosted,
                        format!(
                            "partition {}.{} is not hosted on this node; refresh the route from meta",
                            gpid.app_id, gpid.partition_index
                        ),
                    )
                })
            }
        }
    }

    /// Standalone mode: the route of table `name`, the shard address of
    /// every partition. Cluster-mode nodes send clients to meta.
    pub fn route(&self, name: &str) -> Result<Route, OpError> {
        let NodeMode::Standalone { tables } = &self.mode else {
            return Err(OpError::invalid_argument(
                "this node runs in cluster mode: ask meta for routes (markab shell --meta, Client::connect_meta)",
            ));
        };
        let table = tables
            .iter()
            .find(|table| table.name == name)
            .ok_or_else(|| {
                OpError::new(
                    ErrorCode::UnknownTable,
                    format!("table {name:?} does not exist on this node"),
                )
            })?;
        let partitions = (0..table.partition_count as i32)
            .map(|partition_index| PartitionRoute {
                partition_index,
                address: self.addresses[partition_index as usize % self.addresses.len()]
                    .to_string(),
                ballot: BALLOT_STANDALONE,
            })
            .collect();
        Ok(Route {
            table: table.name.clone(),
            app_id: table.app_id,
            partition_count: table.partition_count as i32,
            partitions,
        })
    }

    fn register(&self, gpid: Gpid, entry: HostedEntry) {
        self.hosted
            .write()
            .expect("hosted registry lock")
            .insert(gpid, entry);
    }

    /// Claims `gpid` for `shard` in the registry before the shard opens it,
    /// or says which other shard already hosts it: a node opens a replica
    /// on one shard only (**replica-stays-on-its-shard**; its RocksDB lock
    /// allows one opener).
    fn claim(&self, gpid: Gpid, entry: HostedEntry) -> Result<(), usize> {
        let mut hosted = self.hosted.write().expect("hosted registry lock");
        match hosted.get(&gpid) {
            Some(held) if held.shard != entry.shard => Err(held.shard),
            _ => {
                hosted.insert(gpid, entry);
                Ok(())
            }
        }
    }

    fn unregister(&self, gpid: Gpid) {
        self.hosted
            .write()
            .expect("hosted registry lock")
            .remove(&gpid);
    }
}

/// Checks that `gpid` names a partition of a configured table.
fn check_standalone_gpid(tables: &[TableConfig], gpid: Gpid) -> Result<(), OpError> {
    let table = tables
        .iter()
        .find(|table| table.app_id == gpid.app_id)
        .ok_or_else(|| {
            OpError::new(
                ErrorCode::UnknownTable,
                format!("no table with app_id {} on this node", gpid.app_id),
            )
        })?;
    if gpid.partition_index < 0 || gpid.partition_index as u32 >= table.partition_count {
        return Err(OpError::new(
            ErrorCode::UnknownPartition,
            format!(
                "table {:?} has partitions 0..{}; partition {} is not hosted here",
                table.name, table.partition_count, gpid.partition_index
            ),
        ));
    }
    Ok(())
}

/// What a replica is, stored beside its data as `replica.toml` so a
/// restarted node reopens it (and replays its log) before meta speaks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaMeta {
    pub table: String,
    pub app_id: i32,
    pub partition_index: i32,
    pub partition_count: u32,
    pub shard: usize,
}

/// The directory of replica `gpid`: `<data_dir>/replicas/<app_id>.<partition>`.
pub fn replica_dir(data_dir: &Path, gpid: Gpid) -> PathBuf {
    data_dir
        .join("replicas")
        .join(format!("{}.{}", gpid.app_id, gpid.partition_index))
}

const REPLICA_META_FILE: &str = "replica.toml";

fn storage_error(message: String) -> OpError {
    OpError::new(ErrorCode::StorageError, message)
}

/// Every replica directory under `data_dir` with its metadata.
fn replicas_on_disk(data_dir: &Path) -> Result<Vec<ReplicaMeta>, OpError> {
    let root = data_dir.join("replicas");
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(storage_error(format!(
                "cannot list {}: {error}",
                root.display()
            )))
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| storage_error(format!("cannot list {}: {error}", root.display())))?
            .path()
            .join(REPLICA_META_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // A directory without metadata was never completely created.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(storage_error(format!(
                    "cannot read {}: {error}",
                    path.display()
                )))
            }
        };
        let meta: ReplicaMeta = toml::from_str(&text)
            .map_err(|error| storage_error(format!("{}: {error}", path.display())))?;
        found.push(meta);
    }
    found.sort_by_key(|meta| (meta.app_id, meta.partition_index));
    Ok(found)
}

/// Checks that every key of `request` hashes to `gpid`'s partition.
fn check_keys(request: &Request, gpid: Gpid, partition_count: u32) -> Result<(), OpError> {
    let check = |hash_key: &[u8], sort_key: &[u8]| {
        let index = key::partition_index(key::partition_hash(hash_key, sort_key), partition_count);
        if index as i32 == gpid.partition_index {
            Ok(())
        } else {
            Err(OpError::new(
                ErrorCode::WrongPartition,
                format!(
                    "key hashes to partition {index}, but the request was sent to partition {}",
                    gpid.partition_index
                ),
            ))
        }
    };
    match request {
        Request::Get(key)
        | Request::Del(key)
        | Request::Exist(key)
        | Request::Ttl(key)
        | Request::Set { key, .. }
        | Request::Incr { key, .. } => check(&key.hash_key, &key.sort_key),
        Request::BatchGet { keys } => keys
            .iter()
            .try_for_each(|key| check(&key.hash_key, &key.sort_key)),
        other => match other.hash_key() {
            // Multi-key operations on an empty hash key are rejected by storage.
            Some(hash_key) if !hash_key.is_empty() => check(hash_key, b""),
            _ => Ok(()),
        },
    }
}

/// One partition replica on its shard.
pub struct Replica {
    pub meta: ReplicaMeta,
    /// The replica's directory.
    dir: PathBuf,
    pub partition: Partition<RocksEngine>,
    /// The last decree given to a write (logged, or being logged).
    decree_last: Cell<i64>,
    /// Why this replica stopped serving, if it did (log corruption, a gap in
    /// its decrees, a failed apply). Until it is re-learned from its peers it
    /// answers `STORAGE_ERROR`.
    failure: RefCell<Option<String>>,
    /// Cluster mode: the replica's PacificA core and what the shard keeps
    /// for it (`None` on a standalone node).
    host: Option<ReplicaHost>,
    /// Cluster mode: the table's replica count, from meta (0 until known).
    replica_count: Cell<i32>,
    /// Cluster mode: the ballot last recorded in the replica's ballot file.
    ballot_persisted: Cell<u64>,
}

impl Replica {
    fn fail(&self, gpid: Gpid, reason: String) {
        tracing::error!(app_id = gpid.app_id, partition = gpid.partition_index, %reason, "replica stopped");
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(reason);
        }
    }

    fn check_serving(&self, gpid: Gpid) -> Result<(), OpError> {
        match &*self.failure.borrow() {
            None => Ok(()),
            Some(reason) => Err(OpError::new(
                ErrorCode::StorageError,
                format!(
                    "replica {}.{} is stopped: {reason}",
                    gpid.app_id, gpid.partition_index
                ),
            )),
        }
    }

    /// Why the replica stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Whether the replica stopped.
    pub fn is_failed(&self) -> bool {
        self.failure.borrow().is_some()
    }

    /// The last decree given to a write.
    pub fn decree_last(&self) -> i64 {
        self.decree_last.get()
    }
}

/// A write that is in the log and waits for its sync before it is applied.
struct PendingWrite {
    gpid: Gpid,
    /// The puts and deletes, with their decree set.
    batch: WriteBatch,
    /// The log position just past its record.
    position: LogPosition,
    body: ResponseBody,
    reply: oneshot::Sender<Response>,
}

/// The state one shard serves from.
pub struct ShardState {
    pub shard: usize,
    pub layout: Arc<NodeLayout>,
    data_dir: PathBuf,
    storage: ShardStorage,
    limits: StorageLimits,
    replicas: RefCell<HashMap<Gpid, Rc<Replica>>>,
    cursors: RefCell<CursorTable>,
    log: Rc<MutationLog>,
    /// Logged writes in log order, applied once the log is durable past
    /// them (**apply-after-durable**, **apply-in-log-order**).
    pending: RefCell<VecDeque<PendingWrite>>,
    /// The position just past the last record this shard appended.
    appended: Cell<LogPosition>,
    /// Cluster mode: the replication machinery (`None` when standalone).
    replication: Option<Replication>,
}

/// The directory of shard `shard`'s mutation log.
pub fn log_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join("log").join(format!("shard-{shard}"))
}

fn log_error(error: LogError) -> OpError {
    match error {
        LogError::Busy { .. } => OpError::new(
            ErrorCode::Busy,
            format!("the shard's mutation log is full of unsynced writes: {error}"),
        ),
        other => OpError::new(ErrorCode::StorageError, format!("mutation log: {other}")),
    }
}

/// Opens (creating if needed) the replica described by `meta`.
fn open_replica(
    data_dir: &Path,
    meta: &ReplicaMeta,
    storage: &ShardStorage,
    limits: StorageLimits,
) -> Result<Replica, OpError> {
    let gpid = Gpid {
        app_id: meta.app_id,
        partition_index: meta.partition_index,
    };
    let dir = replica_dir(data_dir, gpid);
    let meta_path = dir.join(REPLICA_META_FILE);
    if !meta_path.exists() {
        std::fs::create_dir_all(&dir)
            .map_err(|error| storage_error(format!("cannot create {}: {error}", dir.display())))?;
        let text = toml::to_string(meta).expect("replica metadata serializes");
        // Write then rename, so a crash never leaves half a metadata file.
        let temporary = dir.join("replica.toml.tmp");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &meta_path))
            .map_err(|error| {
                storage_error(format!("cannot write {}: {error}", meta_path.display()))
            })?;
    }
    let engine = RocksEngine::open(&dir.join("rdb"), storage)?;
    let marker = dir.join(replicated::COPY_MARKER_FILE);
    if marker.exists() {
        // A copy from a primary was being installed when the node stopped:
        // the records are partial. Start empty; the replica learns again.
        crate::storage::copy::clear(&engine)?;
        let mut reset = WriteBatch::new();
        reset.set_decree(0);
        engine.write(&reset)?;
        engine.flush()?;
        std::fs::remove_file(&marker).map_err(|error| {
            storage_error(format!("cannot remove {}: {error}", marker.display()))
        })?;
        tracing::warn!(path = %dir.display(), "dropped a partly installed copy");
    }
    let decree = engine.applied_decree()?;
    Ok(Replica {
        meta: meta.clone(),
        dir: dir.clone(),
        partition: Partition::new(engine, limits),
        decree_last: Cell::new(decree),
        failure: RefCell::new(None),
        host: None,
        replica_count: Cell::new(0),
        ballot_persisted: Cell::new(0),
    })
}

impl ShardState {
    /// Opens every partition replica this shard owns — in standalone mode
    /// the configured tables' partitions `p` with `p % shards == shard`, in
    /// cluster mode the replicas found on disk for this shard — replays the
    /// shard's mutation log above each replica's flushed decree, and opens
    /// the log for new writes.
    pub async fn open(
        shard: usize,
        layout: Arc<NodeLayout>,
        data_dir: &Path,
        tuning: &Tuning,
        settings: ReplicationSettings,
    ) -> Result<ShardState, OpError> {
        let nr_shards = layout.addresses.len();
        if let Some(stale) =
            (nr_shards..nr_shards + 64).find(|other| log_dir(data_dir, *other).exists())
        {
            return Err(storage_error(format!(
                "{} exists: this node last ran with more than {nr_shards} shards; restart it with the same shard count",
                log_dir(data_dir, stale).display()
            )));
        }
        let storage = ShardStorage::new(&StorageTuning {
            block_cache_bytes: tuning.block_cache_bytes as usize,
            write_buffer_bytes: tuning.write_buffer_bytes as usize,
            compaction_threads: tuning.compaction_threads as i32,
            record_cache_bytes: tuning.record_cache_bytes as usize,
        })?;
        let limits = StorageLimits::default();
        let wanted: Vec<ReplicaMeta> = match &layout.mode {
            NodeMode::Standalone { tables } => tables
                .iter()
                .flat_map(|table| {
                    (0..table.partition_count as i32).map(|partition_index| ReplicaMeta {
                        table: table.name.clone(),
                        app_id: table.app_id,
                        partition_index,
                        partition_count: table.partition_count,
                        shard: partition_index as usize % nr_shards,
                    })
                })
                .filter(|meta| meta.shard == shard)
                .collect(),
            NodeMode::Cluster => {
                let on_disk = replicas_on_disk(data_dir)?;
                if let Some(stale) = on_disk.iter().find(|meta| meta.shard >= nr_shards) {
                    return Err(storage_error(format!(
                        "replica {}.{} lives on shard {}, but this node runs {nr_shards} shards; restart it with the same shard count",
                        stale.app_id, stale.partition_index, stale.shard
                    )));
                }
                on_disk
                    .into_iter()
                    .filter(|meta| meta.shard == shard)
                    .collect()
            }
        };
        let replication = layout.is_cluster().then(|| {
            Replication::new(
                layout.addresses[0].to_string(),
                layout.addresses[shard].to_string(),
                settings,
            )
        });
        let mut replicas = HashMap::new();
        for meta in &wanted {
            let gpid = Gpid {
                app_id: meta.app_id,
                partition_index: meta.partition_index,
            };
            let mut replica = open_replica(data_dir, meta, &storage, limits)?;
            if let Some(replication) = &replication {
                replica.host = Some(new_host(gpid, replication)?);
            }
            replicas.insert(gpid, Rc::new(replica));
        }

        let dir = log_dir(data_dir, shard);
        let recovery = replay(&dir, &replicas, replication.as_ref())?;
        for (gpid, replica) in &replicas {
            let (ballot, role) = match &replica.host {
                Some(host) => (host.core.borrow().ballot() as i64, host.wire_role()),
                None => (BALLOT_STANDALONE, ReplicaRole::Primary),
            };
            layout.register(
                *gpid,
                HostedEntry::new(shard, ballot, replica.decree_last.get(), role),
            );
        }
        let config = LogConfig {
            dir,
            segment_bytes: tuning.log_segment_bytes,
            group_commit_window: tuning.log_group_commit_window(),
            batch_bytes_max: tuning.log_batch_bytes_max,
            sync: tuning.log_sync,
        };
        let log = MutationLog::open(config, &recovery)
            .await
            .map_err(log_error)?;
        Ok(ShardState {
            shard,
            layout,
            data_dir: data_dir.to_owned(),
            storage,
            limits,
            replicas: RefCell::new(replicas),
            cursors: RefCell::new(CursorTable::new(
                tuning.scanners_max,
                Duration::from_millis(tuning.scanner_idle_timeout_ms),
            )),
            appended: Cell::new(log.durable()),
            log,
            pending: RefCell::new(VecDeque::new()),
            replication,
        })
    }

    /// How many partition replicas this shard hosts.
    pub fn partition_count(&self) -> usize {
        self.replicas.borrow().len()
    }

    /// The replicas this shard hosts.
    pub fn replicas(&self) -> Vec<(Gpid, Rc<Replica>)> {
        self.replicas
            .borrow()
            .iter()
            .map(|(gpid, replica)| (*gpid, replica.clone()))
            .collect()
    }

    /// The shard's mutation log.
    pub fn log(&self) -> &MutationLog {
        &self.log
    }

    /// Hosts the replica meta assigned (creating it empty if it is new);
    /// nothing happens if it is already hosted.
    pub fn host(&self, assignment: &ReplicaAssignment) -> Result<(), OpError> {
        let gpid = Gpid {
            app_id: assignment.app_id,
            partition_index: assignment.partition_index,
        };
        if self.replicas.borrow().contains_key(&gpid) {
            return Ok(());
        }
        let meta = ReplicaMeta {
            table: assignment.table.clone(),
            app_id: assignment.app_id,
            partition_index: assignment.partition_index,
            partition_count: assignment.partition_count as u32,
            shard: self.shard,
        };
        self.layout
            .claim(
                gpid,
                HostedEntry::new(self.shard, 0, 0, ReplicaRole::Inactive),
            )
            .map_err(|other| {
                OpError::new(
                    ErrorCode::Internal,
                    format!(
                        "replica {}.{} is hosted on shard {other} of this node, not shard {}",
                        gpid.app_id, gpid.partition_index, self.shard
                    ),
                )
            })?;
        let opened = open_replica(&self.data_dir, &meta, &self.storage, self.limits).and_then(
            |mut replica| {
                if let Some(replication) = &self.replication {
                    replica.host = Some(new_host(gpid, replication)?);
                }
                Ok(replica)
            },
        );
        let replica = match opened {
            Ok(replica) => replica,
            Err(error) => {
                self.layout.unregister(gpid);
                return Err(error);
            }
        };
        let (ballot, role) = match &replica.host {
            Some(host) => (host.core.borrow().ballot() as i64, host.wire_role()),
            None => (assignment.ballot, ReplicaRole::Primary),
        };
        self.layout.register(
            gpid,
            HostedEntry::new(self.shard, ballot, replica.decree_last.get(), role),
        );
        self.replicas.borrow_mut().insert(gpid, Rc::new(replica));
        tracing::info!(
            shard = self.shard,
            app_id = gpid.app_id,
            partition = gpid.partition_index,
            "hosting replica"
        );
        Ok(())
    }

    /// Hosts the replica meta assigned if needed and, in cluster mode,
    /// gives its core the configuration.
    pub fn assign(&self, assignment: &ReplicaAssignment) {
        if let Err(error) = self.host(assignment) {
            tracing::error!(%error, "cannot host an assigned replica");
            return;
        }
        if self.replication.is_some() {
            self.on_assignment(assignment);
        }
    }

    /// This shard's part of a beacon ack: configurations first (hosting new
    /// replicas), then the leases meta granted for them
    /// (**configs-before-lease**), then drops.
    pub fn apply_ack(&self, ack: ShardAck) {
        for assignment in &ack.configs {
            self.assign(assignment);
        }
        let until_ms = match ack.lease_ms {
            // Meta without replication grants no leases: each replica is
            // then its partition's only copy.
            0 => u64::MAX,
            lease_ms => ack.sent_ms.saturating_add(lease_ms),
        };
        for (gpid, ballot) in ack.leases {
            let replica = self.replicas.borrow().get(&gpid).cloned();
            if let Some(replica) = replica {
                if replica.host.is_some() {
                    self.feed(gpid, &replica, Input::Lease { ballot, until_ms });
                }
            }
        }
        for gpid in ack.drops {
            if let Err(error) = self.drop_replica(gpid) {
                tracing::error!(%error, "cannot drop a replica");
            }
        }
    }

    /// Stops hosting `gpid` and deletes its data (meta says its table's hold
    /// time is over). Its records left in the log pin nothing.
    pub fn drop_replica(&self, gpid: Gpid) -> Result<(), OpError> {
        let Some(replica) = self.replicas.borrow_mut().remove(&gpid) else {
            return Ok(());
        };
        self.layout.unregister(gpid);
        drop(replica);
        let dir = replica_dir(&self.data_dir, gpid);
        std::fs::remove_dir_all(&dir)
            .map_err(|error| storage_error(format!("cannot delete {}: {error}", dir.display())))?;
        tracing::info!(
            shard = self.shard,
            app_id = gpid.app_id,
            partition = gpid.partition_index,
            "dropped replica"
        );
        Ok(())
    }

    /// Refreshes the shard's gauges (log size, RocksDB memory, replicas).
    pub fn update_gauges(&self, metrics: &ShardMetrics) {
        metrics.log_bytes.set(self.log.total_bytes() as i64);
        metrics.log_segments.set(self.log.segments().len() as i64);
        metrics
            .block_cache_bytes
            .set(self.storage.block_cache_usage_bytes() as i64);
        metrics
            .record_cache_bytes
            .set(self.storage.record_cache_usage_bytes() as i64);
        let (hits, misses) = self.storage.record_cache_lookups();
        metrics.set_record_cache_lookups(hits, misses);
        metrics
            .write_buffer_bytes
            .set(self.storage.write_buffer_usage_bytes() as i64);
        let mut by_role = [0i64; 4];
        for replica in self.replicas.borrow().values() {
            let role = match &replica.host {
                Some(host) => host.wire_role(),
                None => ReplicaRole::Primary,
            };
            by_role[role as usize] += 1;
        }
        for (gauge, count) in metrics.replicas_by_role.iter().zip(by_role) {
            gauge.set(count);
        }
    }

    /// Drops scan cursors idle past their timeout.
    pub fn expire_cursors(&self) -> usize {
        self.cursors.borrow_mut().expire(Instant::now())
    }

    /// Whether this shard hosts `gpid`.
    pub fn hosts(&self, gpid: Gpid) -> bool {
        self.replicas.borrow().contains_key(&gpid)
    }

    fn replica(&self, gpid: Gpid) -> Result<Rc<Replica>, OpError> {
        let replica = self.replicas.borrow().get(&gpid).cloned().ok_or_else(|| {
            OpError::new(
                ErrorCode::NotHosted,
                format!(
                    "partition {}.{} is not hosted on shard {} of this node",
                    gpid.app_id, gpid.partition_index, self.shard
                ),
            )
        })?;
        replica.check_serving(gpid)?;
        Ok(replica)
    }

    /// Serves any request addressed to a partition this shard owns.
    pub async fn serve(&self, gpid: Gpid, request: &Request) -> Response {
        if request.is_write() {
            self.serve_write(gpid, request).await
        } else {
            self.serve_read(gpid, request)
        }
    }

    /// Serves a read (or scanner request) at once, from applied data only.
    pub fn serve_read(&self, gpid: Gpid, request: &Request) -> Response {
        let replica = self.replica(gpid)?;
        check_keys(request, gpid, replica.meta.partition_count)?;
        self.check_replicated_read(&replica)?;
        let partition = &replica.partition;
        let now_epoch_s = key::now_epoch_s();
        match request {
            Request::GetScanner(scan) => self.open_scanner(gpid, partition, scan, now_epoch_s),
            Request::Scan { context_id } => {
                self.continue_scanner(gpid, partition, *context_id, now_epoch_s)
            }
            Request::ClearScanner { context_id } => {
                self.cursors.borrow_mut().clear(*context_id);
                Ok(ResponseBody::Done)
            }
            other => partition.execute(other, now_epoch_s),
        }
    }

    /// Serves a write: prepare it into puts and deletes, give it the next
    /// decree, append it to the log, and once the log is durable past it,
    /// apply it and reply (**ack-after-durable**).
    pub async fn serve_write(&self, gpid: Gpid, request: &Request) -> Response {
        let replica = self.replica(gpid)?;
        check_keys(request, gpid, replica.meta.partition_count)?;
        if replica.host.is_some() {
            return self.serve_replicated_write(gpid, replica, request).await;
        }
        let (mut batch, body) = replica
            .partition
            .prepare_write(request, key::now_epoch_s())?;
        if batch.is_empty() {
            // Nothing to write (a failed check), but the answer may rest on
            // staged writes: give it only once they are durable.
            self.log
                .wait_durable(self.appended.get())
                .await
                .map_err(log_error)?;
            return Ok(body);
        }
        let decree = replica.decree_last.get() + 1;
        batch.set_decree(decree);
        let header = RecordHeader {
            app_id: gpid.app_id,
            partition_index: gpid.partition_index,
            ballot: BALLOT_STANDALONE,
            decree,
        };
        let position = self
            .log
            .append(&header, &batch.encode())
            .map_err(log_error)?;
        replica.decree_last.set(decree);
        replica.partition.stage(decree, &batch);
        self.appended.set(position);
        let (reply, reply_received) = oneshot::channel();
        self.pending.borrow_mut().push_back(PendingWrite {
            gpid,
            batch,
            position,
            body,
            reply,
        });
        match self.log.wait_durable(position).await {
            Ok(()) => self.apply_durable(),
            Err(error) => self.fail_pending(error),
        }
        reply_received.await.unwrap_or_else(|_| {
            Err(OpError::new(
                ErrorCode::Internal,
                "the write was dropped before it was applied",
            ))
        })
    }

    /// Applies, in log order, every pending write the log has made durable,
    /// and sends their replies.
    fn apply_durable(&self) {
        let durable = self.log.durable();
        loop {
            let next = {
                let mut pending = self.pending.borrow_mut();
                match pending.front() {
                    Some(write) if write.position <= durable => pending.pop_front(),
                    _ => None,
                }
            };
            let Some(write) = next else { break };
            let Some(replica) = self.replicas.borrow().get(&write.gpid).cloned() else {
                let _ = write.reply.send(Err(OpError::new(
                    ErrorCode::NotHosted,
                    "the replica was dropped before the write was applied",
                )));
                continue;
            };
            let result = match replica.check_serving(write.gpid) {
                Ok(()) => replica.partition.apply(&write.batch).map(|()| write.body),
                Err(error) => Err(error),
            };
            if let Err(error) = &result {
                let decree = write.batch.decree().unwrap_or_default();
                replica.fail(
                    write.gpid,
                    format!("applying decree {decree} failed: {error}"),
                );
            }
            let _ = write.reply.send(result);
        }
    }

    /// The log failed: every pending write fails with it, and staged state is
    /// forgotten. The log stays failed; the node must restart (and replays).
    fn fail_pending(&self, error: LogError) {
        let error = log_error(error);
        for write in self.pending.borrow_mut().drain(..) {
            let _ = write.reply.send(Err(error.clone()));
        }
        for replica in self.replicas.borrow().values() {
            replica.partition.discard_staged();
        }
    }

    /// Deletes log segments every replica has flushed past; when the log is
    /// still above `log_bytes_max`, flushes the replicas that pin its oldest
    /// segment and tries again. Returns the segments deleted.
    pub fn collect_log_garbage(&self, log_bytes_max: u64) -> Result<usize, OpError> {
        self.release_copy_pins(log_bytes_max);
        let mut removed = self.remove_flushed_segments()?;
        if self.log.total_bytes() > log_bytes_max {
            if let Some(oldest) = self.log.segments().into_iter().next() {
                for ((app_id, partition_index), decree_max) in &oldest.decree_max {
                    let gpid = Gpid {
                        app_id: *app_id,
                        partition_index: *partition_index,
                    };
                    let Some(replica) = self.replicas.borrow().get(&gpid).cloned() else {
                        continue;
                    };
                    let engine = replica.partition.engine();
                    if replica.failure.borrow().is_none() && engine.flushed_decree()? < *decree_max
                    {
                        engine.flush()?;
                    }
                }
            }
            removed += self.remove_flushed_segments()?;
        }
        Ok(removed)
    }

    /// Drops the copy pins (**copy-pins-log**) that no longer serve: the
    /// learner stopped being one (promoted or removed), or this replica is
    /// no longer primary. All of them go when the log holds twice its
    /// bound: disk is bounded first; a learner that still needed the log
    /// then gets a new copy.
    fn release_copy_pins(&self, log_bytes_max: u64) {
        let Some(replication) = &self.replication else {
            return;
        };
        let over = self.log.total_bytes() > log_bytes_max.saturating_mul(2);
        let replicas = self.replicas.borrow();
        replication
            .copy_pins
            .borrow_mut()
            .retain(|(gpid, learner), decree| {
                let serving = replicas
                    .get(gpid)
                    .and_then(|replica| replica.host.as_ref())
                    .is_some_and(|host| {
                        let core = host.core.borrow();
                        core.role() == Role::Primary && core.config().learners.contains(learner)
                    });
                if serving && over {
                    tracing::warn!(
                        app_id = gpid.app_id,
                        partition = gpid.partition_index,
                        decree,
                        "the log is over twice its bound: a copy's learner loses the log it would catch up from"
                    );
                }
                serving && !over
            });
    }

    fn remove_flushed_segments(&self) -> Result<usize, OpError> {
        let mut flushed = HashMap::new();
        for (gpid, replica) in self.replicas.borrow().iter() {
            flushed.insert(
                (gpid.app_id, gpid.partition_index),
                replica.partition.engine().flushed_decree()?,
            );
        }
        if let Some(replication) = &self.replication {
            // A learner catching up after a copy reads this log from the
            // copy's decree on: keep it.
            for ((gpid, _), decree) in replication.copy_pins.borrow().iter() {
                if let Some(flushed) = flushed.get_mut(&(gpid.app_id, gpid.partition_index)) {
                    *flushed = (*flushed).min(*decree as i64);
                }
            }
        }
        // A segment stays while any hosted replica has not flushed past it;
        // records of replicas no longer hosted pin nothing.
        let keep = |segment: &SegmentInfo| {
            segment.decree_max.iter().any(|(stream, decree_max)| {
                flushed
                    .get(stream)
                    .is_some_and(|flushed| flushed < decree_max)
            })
        };
        self.log.remove_segments(&keep).map_err(log_error)
    }

    /// Clean shutdown: syncs the log and flushes every replica, so a restart
    /// has nothing to replay.
    pub async fn close(&self) {
        if let Err(error) = self.log.close().await {
            tracing::warn!(shard = self.shard, %error, "closing the mutation log failed");
        }
        for (gpid, replica) in self.replicas.borrow().iter() {
            if replica.failure.borrow().is_some() {
                continue;
            }
            if let Err(error) = replica.partition.engine().flush() {
                tracing::warn!(app_id = gpid.app_id, partition = gpid.partition_index, %error, "flush at shutdown failed");
            }
        }
    }

    fn batch_size(&self, scan: &ScanRequest) -> usize {
        match scan.batch_size {
            size if size <= 0 => SCAN_BATCH_DEFAULT,
            size => (size as usize).min(self.limits.scan_batch_max),
        }
    }

    fn open_scanner(
        &self,
        gpid: Gpid,
        partition: &Partition<RocksEngine>,
        scan: &ScanRequest,
        now_epoch_s: u32,
    ) -> Response {
        let batch = partition.scan_batch(scan, None, self.batch_size(scan), now_epoch_s)?;
        let context_id = match batch.resume_after {
            None => SCAN_CONTEXT_COMPLETE,
            Some(resume_after) => {
                self.cursors
                    .borrow_mut()
                    .open(gpid, scan.clone(), resume_after, Instant::now())?
            }
        };
        Ok(ResponseBody::Scan {
            records: batch.records,
            count: batch.count,
            context_id,
        })
    }

    fn continue_scanner(
        &self,
        gpid: Gpid,
        partition: &Partition<RocksEngine>,
        context_id: i64,
        now_epoch_s: u32,
    ) -> Response {
        let now = Instant::now();
        let cursor = self.cursors.borrow_mut().take(context_id, gpid, now)?;
        let batch = partition.scan_batch(
            &cursor.request,
            Some(&cursor.resume_after),
            self.batch_size(&cursor.request),
            now_epoch_s,
        )?;
        let context_id = match batch.resume_after {
            None => SCAN_CONTEXT_COMPLETE,
            Some(resume_after) => {
                self.cursors
                    .borrow_mut()
                    .restore(context_id, cursor, resume_after, now);
                context_id
            }
        };
        Ok(ResponseBody::Scan {
            records: batch.records,
            count: batch.count,
            context_id,
        })
    }
}

/// Replays the shard's log into its replicas: every good record above a
/// replica's flushed decree is applied in order (**replay-above-flushed**).
/// A replica whose decrees have a gap, whose record does not decode, or whose
/// records sit in a corrupted stretch of the log stops; the others go on.
fn replay(
    dir: &Path,
    replicas: &HashMap<Gpid, Rc<Replica>>,
    replication: Option<&Replication>,
) -> Result<Recovery, OpError> {
    // Cluster mode: each replica's records, every one in log order (the
    // void rule runs over those at or below the applied decree too:
    // **void-before-cut**), for `ReplicaCore::recover`.
    let mut logged: BTreeMap<Gpid, CoreRecovery> = BTreeMap::new();
    let mut visit = |header: &RecordHeader, payload: &[u8], location: RecordLocation| {
        let gpid = Gpid {
            app_id: header.app_id,
            partition_index: header.partition_index,
        };
        let Some(replica) = replicas.get(&gpid) else {
            return;
        };
        if replica.failure.borrow().is_some() {
            return;
        }
        if replica.host.is_some() {
            match replicated::record_parts(header, payload) {
                Ok((ballot, decree, committed_decree, batch)) => logged
                    .entry(gpid)
                    .or_insert_with(
                        || CoreRecovery::new(replica.decree_last.get().max(0) as Decree),
                    )
                    .push(ballot, decree, committed_decree, batch),
                Err(reason) => replica.fail(
                    gpid,
                    format!(
                        "{reason} at {} offset {}",
                        segment_path(dir, location.segment_index).display(),
                        location.offset
                    ),
                ),
            }
            return;
        }
        let applied = replica.decree_last.get();
        if header.decree <= applied {
            return;
        }
        let at = format!(
            "{} offset {}",
            segment_path(dir, location.segment_index).display(),
            location.offset
        );
        if header.decree != applied + 1 {
            replica.fail(
                gpid,
                format!(
                    "the mutation log jumps from decree {applied} to {} at {at}",
                    header.decree
                ),
            );
            return;
        }
        let result = WriteBatch::decode(payload).and_then(|mut batch| {
            batch.set_decree(header.decree);
            replica.partition.apply(&batch)
        });
        match result {
            Ok(()) => replica.decree_last.set(header.decree),
            Err(error) => replica.fail(
                gpid,
                format!("replaying decree {} from {at}: {error}", header.decree),
            ),
        }
    };
    let recovery = markab_shards::log::recover(dir, &mut visit).map_err(log_error)?;
    if let Some(replication) = replication {
        recover_cores(replicas, logged, replication);
    }
    if let Some(torn) = &recovery.torn_tail {
        tracing::warn!(
            path = %torn.path.display(),
            offset = torn.offset,
            bytes = torn.bytes_dropped,
            reason = %torn.reason,
            "cut a torn tail off the mutation log"
        );
        eprintln!(
            "mutation log: cut a torn tail at {} offset {} ({} bytes: {})",
            torn.path.display(),
            torn.offset,
            torn.bytes_dropped,
            torn.reason
        );
    }
    for corruption in &recovery.corruptions {
        for (app_id, partition_index) in &corruption.streams {
            let gpid = Gpid {
                app_id: *app_id,
                partition_index: *partition_index,
            };
            if let Some(replica) = replicas.get(&gpid) {
                // The corruption is the root cause of any gap replay saw.
                replica.failure.borrow_mut().take();
                replica.fail(
                    gpid,
                    format!(
                        "the mutation log is corrupted at {} offset {}: {}",
                        corruption.path.display(),
                        corruption.offset,
                        corruption.reason
                    ),
                );
            }
        }
    }
    for (gpid, replica) in replicas {
        if let Some(reason) = replica.failure() {
            eprintln!(
                "replica {}.{} stopped: {reason}",
                gpid.app_id, gpid.partition_index
            );
        }
    }
    Ok(recovery)
}

/// A fresh, inactive core for a replica of this node.
fn new_host(gpid: Gpid, replication: &Replication) -> Result<ReplicaHost, OpError> {
    let core = ReplicaCore::new(gpid, replication.me(), replication.settings).map_err(|error| {
        OpError::new(
            ErrorCode::Internal,
            format!("replication settings: {error}"),
        )
    })?;
    Ok(ReplicaHost::new(core))
}

/// Cluster mode: rebuilds each replica's core from its logged records
/// (`ReplicaCore::recover`) and applies the committed ones storage lacks
/// (**replay-above-flushed**). The cores start inactive; meta decides.
fn recover_cores(
    replicas: &HashMap<Gpid, Rc<Replica>>,
    mut logged: BTreeMap<Gpid, CoreRecovery>,
    replication: &Replication,
) {
    for (gpid, replica) in replicas {
        let Some(host) = &replica.host else { continue };
        if replica.failure().is_some() {
            continue;
        }
        let applied = replica.decree_last.get().max(0) as Decree;
        let recovery = logged
            .remove(gpid)
            .unwrap_or_else(|| CoreRecovery::new(applied));
        let persisted = match replicated::persisted_ballot(&replica.dir) {
            Ok(ballot) => ballot,
            Err(reason) => {
                replica.fail(*gpid, reason);
                continue;
            }
        };
        replica.ballot_persisted.set(persisted);
        let (mut core, replay) =
            match recovery.finish(*gpid, replication.me(), replication.settings) {
                Ok(recovered) => recovered,
                Err(error) => {
                    replica.fail(*gpid, format!("replication settings: {error}"));
                    continue;
                }
            };
        for mutation in replay {
            let decree = mutation.decree;
            let result =
                replicated::batch_of(&mutation).and_then(|batch| replica.partition.apply(&batch));
            match result {
                Ok(()) => replica.decree_last.set(decree as i64),
                Err(error) => {
                    replica.fail(*gpid, format!("replaying decree {decree}: {error}"));
                    break;
                }
            }
        }
        if persisted > core.ballot() {
            // The replica accepted `persisted` before it stopped, maybe
            // without logging under it: start there, inactive (a
            // configuration naming nobody), so only a newer configuration
            // gives it a role.
            core.handle(
                Input::Config(PartitionConfig {
                    ballot: persisted,
                    primary: None,
                    secondaries: Vec::new(),
                    learners: Vec::new(),
                }),
                replicated::clock_ms(),
            );
        }
        *host.core.borrow_mut() = core;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageTuning;

    fn storage() -> ShardStorage {
        ShardStorage::new(&StorageTuning {
            block_cache_bytes: 1 << 20,
            write_buffer_bytes: 1 << 20,
            compaction_threads: 1,
            record_cache_bytes: 1 << 20,
        })
        .unwrap()
    }

    fn meta() -> ReplicaMeta {
        ReplicaMeta {
            table: "t".into(),
            app_id: 1,
            partition_index: 0,
            partition_count: 1,
            shard: 0,
        }
    }

    // A replica found with the copy marker (a copy from a primary was being
    // installed when the node stopped) reopens empty at decree 0, marker
    // gone, so it learns again; without the marker its records and decree
    // stay.
    #[test]
    fn a_partly_installed_copy_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage();
        let limits = StorageLimits::default();
        {
            let replica = open_replica(dir.path(), &meta(), &storage, limits).unwrap();
            let mut batch = WriteBatch::new();
            batch.put(b"key".to_vec(), b"value".to_vec());
            batch.set_decree(7);
            replica.partition.apply(&batch).unwrap();
            replica.partition.engine().flush().unwrap();
        }
        {
            let replica = open_replica(dir.path(), &meta(), &storage, limits).unwrap();
            assert_eq!(replica.decree_last(), 7);
            assert!(replica.partition.engine().get(b"key").unwrap().is_some());
            std::fs::write(replica.dir.join(replicated::COPY_MARKER_FILE), b"").unwrap();
        }
        let replica = open_replica(dir.path(), &meta(), &storage, limits).unwrap();
        assert_eq!(replica.decree_last(), 0);
        assert_eq!(replica.partition.engine().get(b"key").unwrap(), None);
        assert!(!replica.dir.join(replicated::COPY_MARKER_FILE).exists());
    }

    // The last accepted ballot survives in the replica's directory.
    #[test]
    fn ballot_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(replicated::persisted_ballot(dir.path()), Ok(0));
        replicated::persist_ballot(dir.path(), 12).unwrap();
        replicated::persist_ballot(dir.path(), 13).unwrap();
        assert_eq!(replicated::persisted_ballot(dir.path()), Ok(13));
        std::fs::write(dir.path().join(replicated::BALLOT_FILE), "x").unwrap();
        assert!(replicated::persisted_ballot(dir.path()).is_err());
    }
}
