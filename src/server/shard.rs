//! One shard's serving state: the replica host ([`markab_core::host`]) of
//! the partition replicas it owns over the node's IO (`io.rs`), its scan
//! cursors, the dispatch of one decoded request, and the pumps that carry
//! the host's asynchronous work: log durability, learners' log reads and
//! copies.
//!
//! Hot path: `ShardState::serve` runs on the shard's executor for every
//! request. It takes no locks (the state is the shard's alone) and calls
//! RocksDB synchronously (memtable writes and point reads are short; see
//! docs/DESIGN.md, "Inside a node"). A standalone node runs the same host,
//! each replica its partition's only member: one write path.

pub mod io;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use markab_core::host::record::LearnedGather;
use markab_core::host::registry::{NodeRegistry, ShardAck};
use markab_core::host::{LearnPlan, ReplicaMeta, ShardHost};
use markab_shards::log::{
    read_stream, segment_path, LogConfig, LogError, MutationLog, SegmentInfo,
};
use markab_shards::tuning::Tuning;
use markab_wire::{
    ErrorCode, Gpid, OpError, PartitionRoute, PeerRequest, ReplicaAssignment, Request, Response,
    ResponseBody, Route, ScanRequest, SCAN_CONTEXT_COMPLETE,
};

use crate::config::TableConfig;
use crate::key;
use crate::metrics::ShardMetrics;
use crate::replication::config::ReplicationSettings;
use crate::replication::messages::Mutation;
use crate::server::beacon::MetaRequests;
use crate::server::cursors::CursorTable;
use crate::server::peer::PeerLinks;
use crate::storage::{
    Partition, RocksEngine, ShardStorage, StorageEngine, StorageLimits, StorageTuning,
};
use io::split_copies_on_disk;
pub use io::{persist_log_floor, replica_dir, NodeIo, Wakes, BALLOT_FILE, COPY_MARKER_FILE};

/// Records per scan batch when the request leaves it to the server.
pub const SCAN_BATCH_DEFAULT: usize = 100;
/// Most log bytes a primary reads (on the blocking pool) to answer a
/// learner below its own run; a larger gap is sent as a copy instead.
const LEARN_LOG_READ_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// How a node learns which replicas it hosts.
#[derive(Debug)]
pub enum NodeMode {
    /// The tables of the config file; partition `p` on shard `p % shards`,
    /// each replica its partition's only member.
    Standalone { tables: Vec<TableConfig> },
    /// Meta assigns replicas (and their shards) in beacon acks.
    Cluster,
}

/// What every shard of a node knows about the node.
#[derive(Debug)]
pub struct NodeLayout {
    pub mode: NodeMode,
    /// Every shard's listener address, by shard index.
    pub addresses: Vec<std::net::SocketAddr>,
    /// Every replica hosted on this node and its shard, and meta's write
    /// bound (shared by the shards' hosts; read by beacons).
    pub registry: Arc<NodeRegistry>,
    /// Cluster mode: requests replicas make to meta, sent by their own
    /// thread (beacon.rs).
    pub meta_requests: MetaRequests,
    /// Shards that have opened their replicas; beacons start once all have.
    pub shards_ready: AtomicUsize,
    /// When each shard's ticker last ran, on the node's clock: a shard
    /// quiet for too long is wedged (beacon.rs, [`NodeLayout::stalled_shard`]).
    pub shard_ticked_ms: Vec<AtomicU64>,
    /// Cluster mode: the node's partition backups, once started.
    pub backup_jobs: std::sync::OnceLock<Arc<crate::backup::node::BackupJobs>>,
    /// Cluster mode: the node's shipper of duplicated tables, once started.
    pub dup_shipper: std::sync::OnceLock<Arc<crate::server::dup::DupShipper>>,
}

impl NodeLayout {
    pub fn new(mode: NodeMode, addresses: Vec<std::net::SocketAddr>) -> NodeLayout {
        let shard_ticked_ms = addresses.iter().map(|_| AtomicU64::new(0)).collect();
        NodeLayout {
            mode,
            addresses,
            registry: Arc::new(NodeRegistry::new()),
            meta_requests: MetaRequests::default(),
            shards_ready: AtomicUsize::new(0),
            shard_ticked_ms,
            backup_jobs: std::sync::OnceLock::new(),
            dup_shipper: std::sync::OnceLock::new(),
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
        if let NodeMode::Standalone { tables } = &self.mode {
            // Known before the owning shard has opened its replicas.
            check_standalone_gpid(tables, gpid)?;
            return Ok(gpid.partition_index as usize % self.addresses.len());
        }
        self.registry.shard_of(gpid).ok_or_else(|| {
            OpError::new(
                ErrorCode::NotHosted,
                format!(
                    "partition {}.{} is not hosted on this node; refresh the route from meta",
                    gpid.app_id, gpid.partition_index
                ),
            )
        })
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
            .map(|partition_index| {
                let gpid = Gpid {
                    app_id: table.app_id,
                    partition_index,
                };
                PartitionRoute {
                    partition_index,
                    address: self.addresses[partition_index as usize % self.addresses.len()]
                        .to_string(),
                    ballot: self.registry.entry(gpid).map_or(0, |entry| entry.ballot),
                }
            })
            .collect();
        Ok(Route {
            table: table.name.clone(),
            app_id: table.app_id,
            partition_count: table.partition_count as i32,
            partitions,
        })
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

/// The state one shard serves from.
pub struct ShardState {
    pub shard: usize,
    pub layout: Arc<NodeLayout>,
    /// The shard's replicas and their host. Borrowed only for synchronous
    /// steps, never across an await.
    host: RefCell<ShardHost<NodeIo>>,
    log: Rc<MutationLog>,
    limits: StorageLimits,
    cursors: RefCell<CursorTable>,
    wakes: Rc<Wakes>,
    /// The pace of the shard's copies to learners (tuning
    /// `copy_bytes_per_second`).
    copy_bytes_per_second: u64,
    /// Log size past which a duplication pins it no more and fails
    /// (tuning `dup_log_retain_bytes_max`).
    dup_retain_bytes_max: u64,
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

impl ShardState {
    /// Opens every partition replica this shard owns — in standalone mode
    /// the configured tables' partitions `p` with `p % shards == shard`, in
    /// cluster mode the replicas found on disk for this shard — replays the
    /// shard's mutation log into them, and opens the log for new writes. A
    /// standalone node's replicas then serve as their partitions' only
    /// members.
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
            return Err(io::storage_error(format!(
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
                let on_disk = io::replicas_on_disk(data_dir)?;
                if let Some(stale) = on_disk.iter().find(|meta| meta.shard >= nr_shards) {
                    return Err(io::storage_error(format!(
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
        // Dropped replicas whose deletion a stop or crash cut short.
        let dropping = io::dropping_dir(data_dir, shard);
        match std::fs::remove_dir_all(&dropping) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(io::storage_error(format!(
                    "cannot delete {}: {error}",
                    dropping.display()
                )))
            }
        }
        let dir = log_dir(data_dir, shard);
        let config = LogConfig {
            dir: dir.clone(),
            segment_bytes: tuning.log_segment_bytes,
            group_commit_window: tuning.log_group_commit_window(),
            batch_bytes_max: tuning.log_batch_bytes_max,
            sync: tuning.log_sync,
        };
        // The log opens where replay of its files ends; the host has no
        // log until then (nothing is appended during replay).
        let wakes = Rc::new(Wakes::default());
        let mut host = ShardHost::new(
            NodeIo {
                data_dir: data_dir.to_owned(),
                storage,
                log: None,
                links: PeerLinks::new(),
                layout: layout.clone(),
                wakes: wakes.clone(),
                shard,
                dropping: Rc::default(),
                split_copies: Rc::new(RefCell::new(split_copies_on_disk(data_dir, shard))),
            },
            shard,
            layout.addresses[0].to_string(),
            layout.addresses[shard].to_string(),
            settings,
            layout.registry.clone(),
            limits,
        );
        for meta in &wanted {
            match host.open(meta) {
                Ok(()) => {}
                // One replica's damaged files must not keep the node's other
                // replicas down: it is set aside, this node reports it no
                // more, and meta re-replicates it from its other members
                // (**damaged-replica-set-aside**).
                Err(error) if layout.is_cluster() && crate::storage::is_corrupted(&error) => {
                    let moved = host.set_aside_replica(meta.gpid(), &error.to_string())?;
                    say_set_aside(meta.gpid(), &error.to_string(), &moved, "starts");
                }
                Err(error) => return Err(error),
            }
        }
        let recovery = replay(&dir, layout.is_cluster(), &mut host)?;
        let log = MutationLog::open(config, &recovery)
            .await
            .map_err(log_error)?;
        host.io_mut().log = Some(log.clone());
        if !layout.is_cluster() {
            let gpids: Vec<Gpid> = host.replicas().map(|(gpid, _)| gpid).collect();
            for gpid in gpids {
                host.serve_alone(gpid);
            }
            // Each new primary re-logged its uncommitted tail under its
            // ballot and serves once that is durable: wait for it, so that
            // a standalone node is ready to serve when it says so.
            while let Some(newest) = host.newest_appended() {
                log.wait_durable(newest).await.map_err(log_error)?;
                host.log_durable(log.durable());
            }
        }
        Ok(ShardState {
            shard,
            layout,
            host: RefCell::new(host),
            log,
            limits,
            cursors: RefCell::new(CursorTable::new(
                tuning.scanners_max,
                Duration::from_millis(tuning.scanner_idle_timeout_ms),
            )),
            wakes,
            copy_bytes_per_second: tuning.copy_bytes_per_second,
            dup_retain_bytes_max: tuning.dup_log_retain_bytes_max,
        })
    }

    /// How many partition replicas this shard hosts.
    pub fn partition_count(&self) -> usize {
        self.host.borrow().replica_count()
    }

    /// The shard's replica host, for a synchronous look or step (never held
    /// across an await).
    pub fn host(&self) -> std::cell::RefMut<'_, ShardHost<NodeIo>> {
        self.host.borrow_mut()
    }

    /// Resolves with the first failed write of the shard's durable state
    /// (its log; a replica's ballot, copy marker or log floor); `None` if
    /// the shard stops first.
    pub async fn disk_failed(&self) -> Option<String> {
        loop {
            if let Some(reason) = self.wakes.disk_failure.borrow().clone() {
                return Some(reason);
            }
            if !self.wakes.disk.wait().await {
                return None;
            }
        }
    }

    /// The shard's index on its node.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// The shard's mutation log.
    pub fn log(&self) -> &MutationLog {
        &self.log
    }

    /// Hosts the replica meta assigned if needed and gives its core the
    /// configuration.
    pub fn assign(&self, assignment: &ReplicaAssignment) {
        let mut host = self.host.borrow_mut();
        if let Err(error) = host.host(assignment) {
            tracing::error!(%error, "cannot host an assigned replica");
            return;
        }
        host.on_assignment(assignment);
    }

    /// This shard's part of a beacon ack. Its backup orders go to the
    /// node's backup jobs with a checkpointer of the replica, when the
    /// replica is this partition's serving primary; restored replicas
    /// waiting for this shard are hosted.
    pub fn apply_ack(&self, mut ack: ShardAck) {
        let orders = std::mem::take(&mut ack.backups);
        let mut host = self.host.borrow_mut();
        host.apply_ack(ack);
        let Some(jobs) = self.layout.backup_jobs.get() else {
            return;
        };
        for order in jobs.take_installed(self.shard, self.layout.addresses.len()) {
            // Hosted inactive at ballot 0: meta's assignment, once it hears
            // the partition is restored, makes it the primary.
            let assignment = ReplicaAssignment {
                table: order.table.clone(),
                app_id: order.gpid.app_id,
                partition_index: order.gpid.partition_index,
                partition_count: order.partition_count,
                shard: self.shard as i32,
                ..ReplicaAssignment::default()
            };
            let outcome = host.host(&assignment).map_err(|error| error.to_string());
            jobs.hosted(&order, outcome);
        }
        for order in &orders {
            // Only a primary that serves: its applied data holds every
            // acknowledged write (**backup-holds-acknowledged**); another
            // waits for the next ack.
            if let Some(replica) = host.serving_replica(order.gpid) {
                jobs.submit(order, replica.partition.engine().checkpointer());
            }
        }
    }

    /// Stops hosting `gpid` and deletes its data.
    pub fn drop_replica(&self, gpid: Gpid) -> Result<(), OpError> {
        self.host.borrow_mut().drop_replica(gpid)
    }

    /// A peer message for `gpid`.
    pub fn on_peer(&self, gpid: Gpid, request: PeerRequest) {
        self.host.borrow_mut().on_peer(gpid, request);
    }

    /// The ticker: feeds the time to every core and stamps the shard as
    /// alive for the beacon thread.
    pub fn tick_replicas(&self) {
        self.layout.shard_ticked_ms[self.shard]
            .store(crate::clock::monotonic_ms(), Ordering::Relaxed);
        self.host.borrow_mut().tick();
    }

    /// Refreshes the shard's gauges (log size, RocksDB memory, replicas).
    pub fn update_gauges(&self, metrics: &ShardMetrics) {
        metrics.log_bytes.set(self.log.total_bytes() as i64);
        metrics.log_segments.set(self.log.segments().len() as i64);
        let host = self.host.borrow();
        let storage = &host.io().storage;
        metrics
            .block_cache_bytes
            .set(storage.block_cache_usage_bytes() as i64);
        metrics
            .record_cache_bytes
            .set(storage.record_cache_usage_bytes() as i64);
        let (hits, misses) = storage.record_cache_lookups();
        metrics.set_record_cache_lookups(hits, misses);
        metrics
            .write_buffer_bytes
            .set(storage.write_buffer_usage_bytes() as i64);
        let mut by_role = [0i64; 4];
        for (_, replica) in host.replicas() {
            by_role[replica.wire_role() as usize] += 1;
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
        self.host.borrow().hosts(gpid)
    }

    /// Refuses a request routed for another partition count than the
    /// replica's (`STALE_ROUTE`: a split changed it).
    pub fn check_route(&self, gpid: Gpid, partition_count: i32) -> Result<(), OpError> {
        self.host.borrow().check_route(gpid, partition_count)
    }

    /// Serves any request addressed to a partition this shard owns.
    pub async fn serve(&self, gpid: Gpid, request: &Request) -> Response {
        if request.is_write() {
            self.serve_write(gpid, request).await
        } else {
            self.serve_read(gpid, request)
        }
    }

    /// Serves a read (or scanner request) at once, from applied data only,
    /// at a serving primary.
    pub fn serve_read(&self, gpid: Gpid, request: &Request) -> Response {
        let host = self.host.borrow();
        let partition = host.readable(gpid, request)?;
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

    /// Serves a write: the host proposes it to the replica's core and
    /// answers once it is committed — durable in every member's log and
    /// applied (**ack-after-durable**) — or refused.
    pub async fn serve_write(&self, gpid: Gpid, request: &Request) -> Response {
        let (reply, reply_received) = oneshot::channel();
        self.host.borrow_mut().client_write(gpid, request, reply);
        reply_received.await.unwrap_or_else(|_| {
            Err(OpError::new(
                ErrorCode::UnknownOutcome,
                "the replica stopped before the write's outcome was known",
            ))
        })
    }

    /// Deletes log segments every replica has flushed past; when the log is
    /// still above `log_bytes_max`, flushes the replicas that pin its oldest
    /// segment and tries again. Returns the segments deleted. Copy pins
    /// (**copy-pins-log**) that no longer serve are dropped first, all of
    /// them when the log holds twice its bound.
    pub fn collect_log_garbage(&self, log_bytes_max: u64) -> Result<usize, OpError> {
        let over_twice = self.log.total_bytes() > log_bytes_max.saturating_mul(2);
        self.host.borrow_mut().release_copy_pins(over_twice);
        let mut removed = self.remove_flushed_segments()?;
        if self.log.total_bytes() > log_bytes_max {
            if let Some(oldest) = self.log.segments().into_iter().next() {
                let host = self.host.borrow();
                for ((app_id, partition_index), decree_max) in &oldest.decree_max {
                    let gpid = Gpid {
                        app_id: *app_id,
                        partition_index: *partition_index,
                    };
                    let Some(replica) = host.replica(gpid) else {
                        continue;
                    };
                    let engine = replica.partition.engine();
                    if !replica.is_failed() && engine.flushed_decree()? < *decree_max {
                        engine.flush()?;
                    }
                }
            }
            removed += self.remove_flushed_segments()?;
        }
        Ok(removed)
    }

    /// Hands the shipper what this shard's primaries of duplicated
    /// partitions must ship (docs/duplication.md, "Shipping").
    pub fn offer_dup_work(&self) {
        let Some(shipper) = self.layout.dup_shipper.get() else {
            return;
        };
        let (shipping, cluster_id) = self.host.borrow().dup_shipping();
        if shipping.is_empty() {
            return;
        }
        let segments = self.log.segments();
        for (order, committed) in shipping {
            let after = order
                .confirmed_decree
                .max(shipper.confirmed(order.dup_id, order.gpid));
            let segments = segments_above(&segments, order.gpid, after);
            shipper.offer(crate::server::dup::ShipWork {
                order,
                committed: committed as i64,
                cluster_id,
                segments,
            });
        }
    }

    fn remove_flushed_segments(&self) -> Result<usize, OpError> {
        let mut flushed = HashMap::new();
        {
            let host = self.host.borrow();
            for (gpid, replica) in host.replicas() {
                flushed.insert(
                    (gpid.app_id, gpid.partition_index),
                    replica.partition.engine().flushed_decree()?,
                );
            }
            // A learner catching up after a copy reads this log from the
            // copy's decree on: keep it.
            for (gpid, decree) in host.copy_pins() {
                if let Some(flushed) = flushed.get_mut(&(gpid.app_id, gpid.partition_index)) {
                    *flushed = (*flushed).min(decree as i64);
                }
            }
            // Until its first beacon ack since it started, the node does
            // not know which replicas are duplicated: it keeps every log
            // whole (**dup-log-retained-at-start**).
            if self.layout.is_cluster() && !host.acked_once() {
                return Ok(0);
            }
            // A duplication ships from meta's confirmed decree on: keep it
            // (**dup-log-retained**), up to the retention bound, past which
            // the duplication fails and pins nothing more.
            let over_bound = self.log.total_bytes() > self.dup_retain_bytes_max;
            for order in host.dup_orders() {
                let stream = (order.gpid.app_id, order.gpid.partition_index);
                let retained = match self.layout.dup_shipper.get() {
                    Some(shipper) => shipper.log_retained_from(order),
                    None => Some(order.confirmed_decree.max(0) as u64),
                };
                let (Some(retained), Some(flushed)) = (retained, flushed.get_mut(&stream)) else {
                    continue;
                };
                let retained = retained as i64;
                if retained >= *flushed {
                    continue;
                }
                if over_bound {
                    if let Some(shipper) = self.layout.dup_shipper.get() {
                        shipper.fail(
                            order.dup_id,
                            order.gpid,
                            format!(
                                "the mutation log of shard {} outgrew dup_log_retain_bytes_max ({} bytes) while partition {}.{} waited for the remote cluster at decree {retained}: remove the duplication, restore the remote table from a backup of this one, and add it again",
                                self.shard, self.dup_retain_bytes_max, order.gpid.app_id, order.gpid.partition_index
                            ),
                        );
                    }
                    continue;
                }
                *flushed = retained;
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
        let host = self.host.borrow();
        for (gpid, replica) in host.replicas() {
            if replica.is_failed() {
                continue;
            }
            if let Err(error) = replica.partition.engine().flush() {
                tracing::warn!(app_id = gpid.app_id, partition = gpid.partition_index, %error, "flush at shutdown failed");
            }
        }
    }

    // ---- the pumps ----

    /// Reports to the host how far the log is durable, and appends its
    /// backlog as the log drains; runs until the shard stops. Each pass
    /// waits for the newest append, which covers every earlier one.
    /// Returns why the log failed, if it did (every replica has stopped).
    pub async fn durability_pump(&self) -> Option<String> {
        loop {
            let (newest, backlog) = {
                let mut host = self.host.borrow_mut();
                host.drain_backlog();
                (host.newest_appended(), host.backlog_waiting())
            };
            let Some(newest) = newest else {
                if backlog {
                    // Busy with nothing of ours pending: another appender
                    // fills the log; try again shortly.
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                if !self.wakes.durability.wait().await {
                    return None;
                }
                continue;
            };
            if let Err(error) = self.log.wait_durable(newest).await {
                tracing::error!(shard = self.shard, %error, "the mutation log failed; replicas stop");
                self.host.borrow_mut().log_failed(&error.to_string());
                self.wakes
                    .disk_failed(&format!("the mutation log failed: {error}"));
                return Some(error.to_string());
            }
            self.host.borrow_mut().log_durable(self.log.durable());
        }
    }

    /// Answers learners from the log, one read at a time, on the executor's
    /// blocking pool; runs until the shard stops.
    pub async fn learn_pump(&self) {
        loop {
            let next = {
                let mut host = self.host.borrow_mut();
                host.next_learn_read()
                    .map(|job| (job, host.learn_plan(&job)))
            };
            let Some((job, plan)) = next else {
                if !self.wakes.learn.wait().await {
                    return;
                }
                continue;
            };
            let read = match plan {
                Some(plan) => self.read_for_learner(job.gpid, plan).await,
                None => Ok(None),
            };
            self.host.borrow_mut().answer_learner(job, read);
        }
    }

    /// The committed mutations a learner misses, read from the log's
    /// segments that hold them; `Ok(None)` when the log no longer holds
    /// them all, or when reading them would cost more than
    /// [`LEARN_LOG_READ_BYTES_MAX`] below the primary's own run (a copy is
    /// cheaper then).
    async fn read_for_learner(
        &self,
        gpid: Gpid,
        plan: LearnPlan,
    ) -> Result<Option<Vec<Mutation>>, String> {
        let stream = (gpid.app_id, gpid.partition_index);
        let segments = segments_above(&self.log.segments(), gpid, plan.from as i64);
        let to_read: u64 = segments.iter().map(|segment| segment.bytes()).sum();
        if plan.own_run.is_none() && to_read > LEARN_LOG_READ_BYTES_MAX {
            return Ok(None);
        }
        glommio::executor()
            .spawn_blocking(move || read_learned(&segments, stream, plan.gather()))
            .await
            .map_err(|error| error.to_string())
    }

    /// Sends the queued copies to learners, one at a time, chunk by chunk
    /// paced to the tuning's `copy_bytes_per_second`; runs until the shard
    /// stops.
    pub async fn copy_pump(&self) {
        loop {
            let next = self.host.borrow_mut().next_copy();
            let Some(mut job) = next else {
                if !self.wakes.copy.wait().await {
                    return;
                }
                continue;
            };
            let started = Instant::now();
            loop {
                let step = self.host.borrow_mut().copy_step(&mut job);
                match step {
                    Ok(false) => {}
                    Ok(true) => break,
                    Err(reason) => {
                        tracing::warn!(app_id = job.gpid.app_id, partition = job.gpid.partition_index, %reason, "copy to a learner stopped");
                        break;
                    }
                }
                let due = Duration::from_secs_f64(
                    job.bytes_sent as f64 / self.copy_bytes_per_second as f64,
                );
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    glommio::timer::sleep(wait).await;
                }
            }
            self.host.borrow_mut().copy_done(&job);
        }
    }

    // ---- scanners ----

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

/// Those of `segments` that hold records of `gpid` above decree `after`.
fn segments_above(segments: &[SegmentInfo], gpid: Gpid, after: i64) -> Vec<SegmentInfo> {
    let stream = (gpid.app_id, gpid.partition_index);
    segments
        .iter()
        .filter(|segment| {
            segment
                .decree_max
                .get(&stream)
                .is_some_and(|decree_max| *decree_max > after)
        })
        .cloned()
        .collect()
}

/// The mutations `gather` takes from `stream`'s records in `segments`,
/// read in log order; stops early once it has enough. Blocking.
pub fn read_learned(
    segments: &[SegmentInfo],
    stream: (i32, i32),
    mut gather: LearnedGather,
) -> Result<Option<Vec<Mutation>>, String> {
    for segment in segments {
        read_stream(
            std::slice::from_ref(segment),
            stream,
            0,
            &mut |header, payload| gather.offer(header.ballot, header.decree, payload),
        )
        .map_err(|error| error.to_string())?;
        if gather.enough() {
            break;
        }
    }
    Ok(gather.finish())
}

/// Tells the operator that replica `gpid`, damaged for `reason`, was set
/// aside to `moved`; the node `then` (starts, goes on) without it.
fn say_set_aside(gpid: Gpid, reason: &str, moved: &str, then: &str) {
    eprintln!(
        "replica {}.{}: {reason}; its directory was moved to {moved} and the node {then} without it",
        gpid.app_id, gpid.partition_index
    );
}

/// Replays the shard's log into its host's replicas: every record, in log
/// order; the host rebuilds each core and applies what storage lacks
/// (**replay-above-flushed**, **void-before-cut**). A replica whose record
/// does not decode stops; one whose records sit in a corrupted stretch of
/// the log is set aside in a cluster and stops on a standalone node; the
/// others go on.
fn replay(
    dir: &Path,
    cluster: bool,
    host: &mut ShardHost<NodeIo>,
) -> Result<markab_shards::log::Recovery, OpError> {
    let recovery = markab_shards::log::recover(dir, &mut |header, payload, location| {
        let gpid = Gpid {
            app_id: header.app_id,
            partition_index: header.partition_index,
        };
        host.replay_record(gpid, header.ballot, header.decree, payload, || {
            format!(
                "{} offset {}",
                segment_path(dir, location.segment_index).display(),
                location.offset
            )
        });
    })
    .map_err(log_error)?;
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
    // A replica whose records sit in a corrupted stretch of the log has
    // lost mutations it may have acknowledged. In a cluster it is set aside
    // like one whose RocksDB files are damaged, and meta re-replicates it
    // from its other members (**damaged-replica-set-aside**); a standalone
    // node holds the only copy, so the replica stops, naming the damage,
    // for the operator.
    let mut damaged: Vec<(Gpid, String)> = Vec::new();
    for corruption in &recovery.corruptions {
        for (app_id, partition_index) in &corruption.streams {
            let gpid = Gpid {
                app_id: *app_id,
                partition_index: *partition_index,
            };
            if damaged.iter().any(|(seen, _)| *seen == gpid) {
                continue;
            }
            damaged.push((
                gpid,
                format!(
                    "the mutation log is corrupted at {} offset {}: {}",
                    corruption.path.display(),
                    corruption.offset,
                    corruption.reason
                ),
            ));
        }
    }
    for (gpid, reason) in damaged {
        if !host.replicas().any(|(hosted, _)| hosted == gpid) {
            continue;
        }
        if !cluster {
            host.stop_replica(gpid, reason);
            continue;
        }
        let moved = host.set_aside_replica(gpid, &reason)?;
        say_set_aside(gpid, &reason, &moved, "goes on");
    }
    host.finish_replay();
    for (gpid, replica) in host.replicas() {
        if let Some(reason) = replica.failure() {
            eprintln!(
                "replica {}.{} stopped: {reason}",
                gpid.app_id, gpid.partition_index
            );
        }
    }
    Ok(recovery)
}

#[cfg(test)]
mod host_tests;
