//! The replica host: one shard's replicas, each a PacificA core
//! ([`ReplicaCore`], docs/replication.md) over a [`Partition`], and
//! everything between them and the world — carried out through [`HostIo`].
//!
//! The core decides; the host carries out its outputs: log appends
//! (reporting `LogDurable` once the shard's log is durable past them; a
//! busy log's refusals wait in a backlog), peer messages, applies to
//! storage, client replies, requests to meta. Inputs come from client
//! requests, peer messages, this shard's part of each beacon ack
//! (configurations, then per-partition leases, then drops) and the shard's
//! ticker. Learning from the log and copies to learners are queued as jobs
//! the IO side runs at its own pace (a blocking pool and a rate limit on a
//! node, events in the simulator).
//!
//! The node runs this code over glommio, its mutation log and RocksDB; the
//! deterministic simulator runs the same code over an in-memory log,
//! network and [`crate::storage::MemoryEngine`]. A standalone node is a
//! one-member cluster of the same host ([`ShardHost::serve_alone`]): one
//! write path.
//!
//! Data path of one write at the primary: [`ShardHost::client_write`]
//! prepares the request into a `WriteBatch` (reading staged writes) and
//! feeds it to the core as `ClientWrite`; the core's `AppendLog` is
//! appended to the shard's log and staged, its `Send`s go to the
//! secondaries; when the log is durable past it [`ShardHost::log_durable`]
//! feeds `LogDurable`; each secondary's PrepareAck arrives as a peer
//! message; once durable here and acked by all, the core emits `Apply`
//! (written to storage) and `WriteReply`, which answers the client.
//!
//! Decrees, one name each: *prepared* (the core's last prepared),
//! *committed* (the core's commit point), *applied* (what storage holds),
//! *logged* (in the log, durable or not).

pub mod dup;
pub mod peer_wire;
pub mod record;
pub mod registry;
pub mod split;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::Arc;

use markab_wire::{
    DupOrder, ErrorCode, Gpid, OpError, PeerRequest, ReplicaAssignment, ReplicaRole, Request,
    Response, ResponseBody,
};

use crate::key;
use crate::replication::config::ReplicationSettings;
use crate::replication::core::{Recovery, ReplicaCore};
use crate::replication::messages::{
    Ballot, Decree, Input, MetaRequest, Mutation, NodeId, Output, PartitionConfig, PeerMessage,
    Role, Token, WriteError,
};
use crate::storage::{copy, Partition, StorageEngine, StorageLimits, WriteBatch};
use peer_wire::{CopyChunk, Incoming};
use record::{batch_of, log_payload, COMMITTED_PREFIX_BYTES};
use registry::{HostedEntry, NodeRegistry, ShardAck};
use split::{SplitCopy, SplitFence};

/// The registry beacons read is refreshed every this many ticks.
const PUBLISH_EVERY_TICKS: u64 = 4;
/// Most payload bytes of mutations one LearnResponse from the log carries;
/// the learner asks again for the rest.
pub const LEARN_RESPONSE_BYTES_MAX: usize = 512 * 1024;
/// Bytes of records per chunk of a copy to a learner.
pub const COPY_CHUNK_BYTES: usize = 256 * 1024;

/// What a replica is, stored beside its data so that a restarted node
/// reopens it (and replays its log) before meta speaks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaMeta {
    pub table: String,
    pub app_id: i32,
    pub partition_index: i32,
    pub partition_count: u32,
    pub shard: usize,
}

impl ReplicaMeta {
    pub fn gpid(&self) -> Gpid {
        Gpid {
            app_id: self.app_id,
            partition_index: self.partition_index,
        }
    }
}

/// Why the shard's log did not take a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// Over its bound of unsynced bytes: try again once it drained.
    Busy,
    /// The log failed; the replica stops.
    Failed(String),
}

/// A replica's storage as opened.
pub struct OpenedReplica<E> {
    pub engine: E,
    /// The copy marker was found: a copy from a primary was being
    /// installed when the node stopped, so the records are partial.
    pub copy_marker: bool,
}

/// Everything the host does outside itself. The node implements it with
/// glommio, its mutation log, peer links, RocksDB and files; the simulator
/// with its in-memory world.
pub trait HostIo {
    type Engine: StorageEngine;
    /// A position in the shard's log; later appends have larger ones.
    type Position: Copy + Ord + Debug;
    /// Where a client write's answer goes.
    type Waiter;

    /// Milliseconds on a monotonic clock (durations, leases).
    fn now_ms(&self) -> u64;
    /// Seconds of wall-clock time in storage's epoch (TTLs).
    fn now_epoch_s(&self) -> u32;
    /// Wall-clock time in Unix microseconds: the clock of writes — their
    /// TTLs' second and, on a duplicated table, their timetags
    /// (docs/duplication.md). By default the start of the second
    /// [`HostIo::now_epoch_s`] gives.
    fn now_unix_us(&self) -> u64 {
        crate::storage::timetag::unix_us_of_epoch_s(self.now_epoch_s())
    }

    /// Appends a record of `gpid` to the shard's log.
    fn append(
        &mut self,
        gpid: Gpid,
        ballot: Ballot,
        decree: Decree,
        payload: &[u8],
    ) -> Result<Self::Position, AppendError>;
    /// The largest payload one log record may have.
    fn payload_bytes_max(&self) -> usize;
    /// Something was appended or backlogged: the durability side should
    /// call [`ShardHost::log_durable`] once the log is durable past it.
    fn appended(&mut self);

    /// Sends a peer message for `gpid` to the shard listening at `address`.
    fn send(&mut self, gpid: Gpid, address: &str, request: PeerRequest);
    /// Queues a request to meta.
    fn to_meta(&mut self, request: Request);
    /// Answers a client write; `decree` is the decree it committed at.
    fn reply(&mut self, waiter: Self::Waiter, response: Response, decree: Option<Decree>);

    /// Opens (creating if needed) the storage of the replica `meta`.
    fn open_replica(&mut self, meta: &ReplicaMeta) -> Result<OpenedReplica<Self::Engine>, OpError>;
    /// Closes `engine` and deletes the dropped replica's storage and files.
    /// May finish in the background (closing a storage engine can flush
    /// and wait for its background work): until it has, `open_replica` of
    /// `gpid` fails.
    fn remove_replica(&mut self, gpid: Gpid, engine: Self::Engine) -> Result<(), OpError>;
    /// Moves replica `gpid`'s storage and files out of the way, kept for
    /// the operator: its data is damaged (**damaged-replica-set-aside**).
    /// Returns where they went.
    fn set_aside_replica(&mut self, gpid: Gpid) -> Result<String, OpError>;
    /// Whether this node set replica `gpid` aside and holds it no more.
    fn was_set_aside(&mut self, gpid: Gpid) -> bool;
    /// Durably records `ballot` as `gpid`'s last accepted ballot.
    fn persist_ballot(&mut self, gpid: Gpid, ballot: Ballot) -> Result<(), String>;
    /// The ballot last recorded (0 when none was).
    fn persisted_ballot(&mut self, gpid: Gpid) -> Result<Ballot, String>;
    /// Makes the copy marker of `gpid` present or absent, durably.
    fn set_copy_marker(&mut self, gpid: Gpid, present: bool) -> Result<(), String>;
    /// Durably records `gpid`'s log floor: the decree of the last copy it
    /// installed (**log-floor**).
    fn persist_log_floor(&mut self, gpid: Gpid, decree: Decree) -> Result<(), String>;
    /// The log floor recorded (0 when none was).
    fn log_floor(&mut self, gpid: Gpid) -> Result<Decree, String>;

    /// A learner waits to be answered from the log.
    fn learn_queued(&mut self);
    /// A learner waits for a copy.
    fn copy_queued(&mut self);

    /// A mutation was applied to `gpid`'s storage (for observers).
    fn applied(&mut self, _gpid: Gpid, _mutation: &Mutation) {}

    /// Records `meta` (its partition count changed in a split) beside the
    /// replica's data.
    fn update_replica_meta(&mut self, meta: &ReplicaMeta) -> Result<(), String>;
    /// Starts copying the storage `engine` of replica `parent`, which
    /// applied `decree`, as the split child `child` of split `epoch`
    /// (docs/split.md): off the shard, a consistent copy whose applied
    /// decree is set to `decree`, staged until the child is hosted. A
    /// staged copy of `child` from another epoch or decree is replaced.
    fn start_split_copy(
        &mut self,
        parent: Gpid,
        engine: &Self::Engine,
        child: &ReplicaMeta,
        epoch: u64,
        decree: Decree,
    );
    /// The staged (or running) copy of split child `child`, if any.
    fn split_copy(&mut self, child: Gpid) -> Option<SplitCopy>;
    /// Deletes the staged copies but those of `keep` (child, epoch) and of
    /// the children in `assigned` (meta assigned them: they are hosted
    /// from their copies).
    fn keep_split_copies(&mut self, keep: &BTreeSet<(Gpid, u64)>, assigned: &BTreeSet<Gpid>);
    /// Makes a finished staged copy of `gpid` the replica's storage, if
    /// there is one and the replica has none yet. Whether the replica has
    /// storage now (installed, or from before).
    fn install_split_copy(&mut self, gpid: Gpid) -> Result<bool, OpError>;
}

/// A client write waiting for its decree to commit.
struct Waiting<W> {
    body: ResponseBody,
    waiter: W,
}

/// A copy a learner is receiving.
#[derive(Clone, Copy, Debug)]
struct IncomingCopy {
    ballot: Ballot,
    decree: Decree,
    next_sequence: u64,
}

/// One partition replica on its shard.
pub struct HostedReplica<I: HostIo> {
    pub meta: ReplicaMeta,
    pub partition: Partition<I::Engine>,
    core: ReplicaCore,
    /// The decree storage holds.
    applied: Decree,
    /// Why this replica stopped serving, if it did (log corruption, a gap,
    /// a failed apply or ballot write). Until it is re-learned it answers
    /// `STORAGE_ERROR`.
    failure: Option<String>,
    /// By token: a stopped replica answers them in the order they came.
    waiting: BTreeMap<Token, Waiting<I::Waiter>>,
    /// The listener address of each member's shard hosting the partition.
    addresses: HashMap<NodeId, String>,
    /// Learner: the copy being installed, if any.
    incoming: Option<IncomingCopy>,
    /// The table's replica count, from meta (0 until known).
    replica_count: i32,
    /// The ballot last recorded in the replica's ballot file.
    ballot_persisted: Ballot,
    /// The decree of the last copy installed: the replica's log holds no
    /// authoritative record at or below it (**log-floor**).
    log_floor: Decree,
    /// Stopped: the newest ballot meta named it in (it acts on none).
    ballot_heard: Ballot,
    /// Its partition is splitting (meta's order).
    split: Option<SplitFence>,
}

impl<I: HostIo> HostedReplica<I> {
    pub fn core(&self) -> &ReplicaCore {
        &self.core
    }

    /// The decree storage holds.
    pub fn applied(&self) -> Decree {
        self.applied
    }

    /// Why the replica stopped, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    pub fn is_failed(&self) -> bool {
        self.failure.is_some()
    }

    /// The wire role of the replica.
    pub fn wire_role(&self) -> ReplicaRole {
        match self.core.role() {
            Role::Primary => ReplicaRole::Primary,
            Role::Secondary => ReplicaRole::Secondary,
            Role::Learner => ReplicaRole::Learner,
            Role::Inactive => ReplicaRole::Inactive,
        }
    }

    fn check_serving(&self) -> Result<(), OpError> {
        match &self.failure {
            None => Ok(()),
            Some(reason) => Err(OpError::new(
                ErrorCode::StorageError,
                format!(
                    "replica {}.{} is stopped: {reason}",
                    self.meta.app_id, self.meta.partition_index
                ),
            )),
        }
    }
}

/// A learner to answer from the log (the core's cache did not reach it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnRead {
    pub gpid: Gpid,
    pub to: NodeId,
    pub ballot: Ballot,
    pub learner_committed: Decree,
}

/// What to read from the log for a [`LearnRead`]: feed the partition's
/// records to a [`record::LearnedGather`] built from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnPlan {
    pub from: Decree,
    pub committed: Decree,
    /// The primary's run began at or below `from`: records under this
    /// ballot or later only, and reading may stop early.
    pub own_run: Option<Ballot>,
}

impl LearnPlan {
    pub fn gather(&self) -> record::LearnedGather {
        record::LearnedGather::new(
            self.from,
            self.committed,
            self.own_run,
            LEARN_RESPONSE_BYTES_MAX,
        )
    }
}

/// A copy of a primary's records being sent to a learner, one chunk per
/// [`ShardHost::copy_step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyJob {
    pub gpid: Gpid,
    pub to: NodeId,
    pub ballot: Ballot,
    /// The decree the copy starts at (applied when it started).
    pub decree: Decree,
    /// The learner's commit point in the request the copy answers.
    pub learner_committed: Decree,
    after: Option<Vec<u8>>,
    sequence: u64,
    /// Bytes sent so far (for the IO side's pacing).
    pub bytes_sent: u64,
}

/// Work for learners, in order, at most one job per learner of a partition
/// queued or running (a learner's retries start no second one).
struct LearnerJobs<T> {
    queue: VecDeque<((Gpid, NodeId), T)>,
    active: BTreeSet<(Gpid, NodeId)>,
}

impl<T> LearnerJobs<T> {
    fn new() -> LearnerJobs<T> {
        LearnerJobs {
            queue: VecDeque::new(),
            active: BTreeSet::new(),
        }
    }

    /// Queues `job` unless one for the same learner is queued or running.
    fn offer(&mut self, gpid: Gpid, to: NodeId, job: T) -> bool {
        if !self.active.insert((gpid, to)) {
            return false;
        }
        self.queue.push_back(((gpid, to), job));
        true
    }

    fn done(&mut self, key: (Gpid, NodeId)) {
        self.active.remove(&key);
    }
}

/// A record waiting to be appended to the shard's log.
struct Backlogged {
    gpid: Gpid,
    ballot: Ballot,
    decree: Decree,
    payload: Vec<u8>,
}

/// Everything of the host but its replicas.
struct Shared<I: HostIo> {
    io: I,
    shard: usize,
    /// This node's id as meta knows it.
    node_name: String,
    /// This shard's listener address (where peers send to its replicas).
    shard_address: String,
    settings: ReplicationSettings,
    registry: Arc<NodeRegistry>,
    limits: StorageLimits,
    /// Node names interned to the cores' [`NodeId`]s (shard-local); this
    /// node's own is the first.
    names: Vec<String>,
    tokens: Token,
    /// Appends waiting for the log to be durable past them, in log order.
    appended: VecDeque<(I::Position, Gpid, Ballot, Decree)>,
    /// Records the log refused for being over its bound (`BUSY`), in the
    /// order the cores emitted them, appended as the log drains
    /// (**no-lost-append**). While any wait, later records queue behind
    /// them and client writes are refused `BUSY` before they get a decree,
    /// so the queue is bounded by what the cores already decided.
    backlog: VecDeque<Backlogged>,
    ticks: u64,
    /// The batch of the client write being fed, so its `AppendLog` stages
    /// it without decoding the payload again.
    staging: Option<WriteBatch>,
    /// A copy's ballot and the learner commit point it answers.
    copies: LearnerJobs<(Ballot, Decree)>,
    learn_reads: LearnerJobs<LearnRead>,
    /// Learners whose copy started at a decree: log truncation keeps this
    /// partition's records above it until the learner caught up, stopped
    /// being a learner, or this replica stopped being primary
    /// (**copy-pins-log**).
    copy_pins: BTreeMap<(Gpid, NodeId), Decree>,
    /// Each replica's logged records while the shard replays its log.
    replaying: BTreeMap<Gpid, Recovery>,
    /// The last ballot at which an assignment was refused per partition
    /// (**no-empty-member**), so each refusal is logged once.
    refused: BTreeMap<Gpid, i64>,
    /// When the beacon of the newest ack taken was sent (node clock): an
    /// older ack is stale (**acks-in-order**).
    ack_sent_ms: u64,
    /// The duplication orders of this shard's replicas in the newest ack,
    /// and meta's cluster id (docs/duplication.md).
    dup_orders: Vec<DupOrder>,
    cluster_id: u8,
    /// Whether an ack was taken since the shard started.
    acked_once: bool,
}

impl<I: HostIo> Shared<I> {
    /// The [`NodeId`] of node `name`, interning it on first sight.
    fn id(&mut self, name: &str) -> NodeId {
        let index = match self.names.iter().position(|known| known == name) {
            Some(index) => index,
            None => {
                self.names.push(name.to_owned());
                self.names.len() - 1
            }
        };
        NodeId(index as u32)
    }

    fn name(&self, id: NodeId) -> &str {
        &self.names[id.0 as usize]
    }

    /// This node's own id: its name is interned first.
    fn me(&self) -> NodeId {
        NodeId(0)
    }
}

/// One shard's replicas and their host.
pub struct ShardHost<I: HostIo> {
    shared: Shared<I>,
    replicas: BTreeMap<Gpid, HostedReplica<I>>,
}

/// The error a client gets for a write the core refused or lost.
fn write_error(error: WriteError) -> OpError {
    match error {
        WriteError::NotPrimary | WriteError::NotActivated | WriteError::LeaseExpired => {
            OpError::new(
                ErrorCode::NotPrimary,
                format!("{error}: the write was not executed; refresh the route and retry"),
            )
        }
        WriteError::Busy { .. } => OpError::new(ErrorCode::Busy, error.to_string()),
        WriteError::UnknownOutcome => OpError::new(ErrorCode::UnknownOutcome, error.to_string()),
    }
}

fn not_hosted(gpid: Gpid, shard: usize) -> OpError {
    OpError::new(
        ErrorCode::NotHosted,
        format!(
            "partition {}.{} is not hosted on shard {shard} of this node",
            gpid.app_id, gpid.partition_index
        ),
    )
}

/// Checks that every key of `request` hashes to `gpid`'s partition.
pub fn check_keys(request: &Request, gpid: Gpid, partition_count: u32) -> Result<(), OpError> {
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

impl<I: HostIo> ShardHost<I> {
    /// A host of no replicas yet for shard `shard` of node `node_name`.
    pub fn new(
        io: I,
        shard: usize,
        node_name: String,
        shard_address: String,
        settings: ReplicationSettings,
        registry: Arc<NodeRegistry>,
        limits: StorageLimits,
    ) -> ShardHost<I> {
        let names = vec![node_name.clone()];
        ShardHost {
            shared: Shared {
                io,
                shard,
                node_name,
                shard_address,
                settings,
                registry,
                limits,
                names,
                tokens: 0,
                appended: VecDeque::new(),
                backlog: VecDeque::new(),
                ticks: 0,
                staging: None,
                copies: LearnerJobs::new(),
                learn_reads: LearnerJobs::new(),
                copy_pins: BTreeMap::new(),
                replaying: BTreeMap::new(),
                refused: BTreeMap::new(),
                ack_sent_ms: 0,
                dup_orders: Vec::new(),
                cluster_id: 0,
                acked_once: false,
            },
            replicas: BTreeMap::new(),
        }
    }

    pub fn io(&self) -> &I {
        &self.shared.io
    }

    pub fn io_mut(&mut self) -> &mut I {
        &mut self.shared.io
    }

    /// The [`NodeId`] this host knows node `name` by.
    pub fn node_id(&mut self, name: &str) -> NodeId {
        self.shared.id(name)
    }

    pub fn hosts(&self, gpid: Gpid) -> bool {
        self.replicas.contains_key(&gpid)
    }

    pub fn replica(&self, gpid: Gpid) -> Option<&HostedReplica<I>> {
        self.replicas.get(&gpid)
    }

    pub fn replicas(&self) -> impl Iterator<Item = (Gpid, &HostedReplica<I>)> {
        self.replicas.iter().map(|(gpid, replica)| (*gpid, replica))
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// The learners' copy pins (**copy-pins-log**): log truncation keeps
    /// each partition's records above the decree.
    pub fn copy_pins(&self) -> impl Iterator<Item = (Gpid, Decree)> + '_ {
        self.shared
            .copy_pins
            .iter()
            .map(|((gpid, _), decree)| (*gpid, *decree))
    }

    // ---- opening, replay, hosting ----

    /// Opens replica `meta` at start, before the log is replayed
    /// ([`ShardHost::replay_record`], then [`ShardHost::finish_replay`]).
    pub fn open(&mut self, meta: &ReplicaMeta) -> Result<(), OpError> {
        let gpid = meta.gpid();
        let replica = open_replica(&mut self.shared, meta)?;
        self.shared
            .replaying
            .insert(gpid, Recovery::new(replica.applied));
        self.replicas.insert(gpid, replica);
        Ok(())
    }

    /// One record of the shard's log, in log order, during replay; `at`
    /// says where it is for an error. Records of replicas not hosted are
    /// ignored.
    pub fn replay_record(
        &mut self,
        gpid: Gpid,
        ballot: i64,
        decree: i64,
        payload: &[u8],
        at: impl FnOnce() -> String,
    ) {
        let Some(replica) = self.replicas.get_mut(&gpid) else {
            return;
        };
        if replica.failure.is_some() {
            return;
        }
        match record::mutation_of_record(ballot, decree, payload) {
            Ok(mutation) => {
                if let Some(recovery) = self.shared.replaying.get_mut(&gpid) {
                    recovery.push(
                        mutation.ballot,
                        mutation.decree,
                        mutation.committed_decree,
                        &mutation.payload,
                    );
                }
            }
            Err(reason) => fail(
                &mut self.shared,
                gpid,
                replica,
                format!("{reason} at {}", at()),
            ),
        }
    }

    /// Stops replica `gpid` for `reason`, replacing any earlier reason (a
    /// corruption found by replay is the root cause of what it saw).
    pub fn stop_replica(&mut self, gpid: Gpid, reason: String) {
        if let Some(replica) = self.replicas.get_mut(&gpid) {
            replica.failure = None;
            fail(&mut self.shared, gpid, replica, reason);
        }
    }

    /// Replay is over: each replica's core is rebuilt from its records
    /// (**void-before-cut**), the committed mutations storage lacks are
    /// applied (**replay-above-flushed**), and it starts inactive at least
    /// at its persisted ballot; the replicas are registered for beacons.
    pub fn finish_replay(&mut self) {
        let replaying = std::mem::take(&mut self.shared.replaying);
        for (gpid, recovery) in replaying {
            if let Some(replica) = self.replicas.get_mut(&gpid) {
                recover(&mut self.shared, gpid, replica, recovery);
            }
        }
        for (gpid, replica) in &self.replicas {
            self.shared
                .registry
                .register(*gpid, entry_of(self.shared.shard, replica));
        }
    }

    /// Hosts the replica meta assigned (creating it empty if it is new);
    /// nothing happens if it is already hosted.
    pub fn host(&mut self, assignment: &ReplicaAssignment) -> Result<(), OpError> {
        let gpid = Gpid {
            app_id: assignment.app_id,
            partition_index: assignment.partition_index,
        };
        if self.replicas.contains_key(&gpid) {
            return Ok(());
        }
        // **no-empty-member**: a replica this node set aside (its data was
        // damaged) and is now named primary or secondary of is one it lost
        // data of: created empty, it would serve, or acknowledge as, a
        // member with none of the partition's data. Only a learner starts
        // it again (meta makes a restarted member that lost its replica a
        // learner; a sole primary that lost it leaves the partition
        // unavailable, its data in the set-aside directory, for the
        // operator).
        let me = &self.shared.node_name;
        let named_member =
            assignment.primary == *me || assignment.secondaries.iter().any(|name| name == me);
        if named_member && self.shared.io.was_set_aside(gpid) {
            return Err(OpError::new(
                ErrorCode::NotHosted,
                format!(
                    "replica {}.{} was set aside on this node (its data was damaged) and meta names the node {} at ballot {}: only a learner starts it again",
                    gpid.app_id,
                    gpid.partition_index,
                    if assignment.primary == *me { "primary" } else { "a secondary" },
                    assignment.ballot
                ),
            ));
        }
        // **no-empty-member** for split children: named primary or
        // secondary, a node hosts one only from its copy of the parent.
        if named_member && assignment.split_child && !self.split_child_ready(gpid)? {
            return Err(OpError::new(
                ErrorCode::NotHosted,
                format!(
                    "partition {}.{} is a split child and this node has no copy of its parent for it: only a learner starts it empty",
                    gpid.app_id, gpid.partition_index
                ),
            ));
        }
        let shard = self.shared.shard;
        let meta = ReplicaMeta {
            table: assignment.table.clone(),
            app_id: assignment.app_id,
            partition_index: assignment.partition_index,
            partition_count: assignment.partition_count as u32,
            shard,
        };
        self.shared
            .registry
            .claim(gpid, HostedEntry::new(shard, 0, 0, ReplicaRole::Inactive))
            .map_err(|other| {
                OpError::new(
                    ErrorCode::Internal,
                    format!(
                        "replica {}.{} is hosted on shard {other} of this node, not shard {shard}",
                        gpid.app_id, gpid.partition_index
                    ),
                )
            })?;
        let mut replica = match open_replica(&mut self.shared, &meta) {
            Ok(replica) => replica,
            Err(error) => {
                self.shared.registry.unregister(gpid);
                return Err(error);
            }
        };
        let recovery = Recovery::new(replica.applied);
        recover(&mut self.shared, gpid, &mut replica, recovery);
        self.shared
            .registry
            .register(gpid, entry_of(shard, &replica));
        self.replicas.insert(gpid, replica);
        tracing::info!(
            shard,
            app_id = gpid.app_id,
            partition = gpid.partition_index,
            "hosting replica"
        );
        Ok(())
    }

    /// Makes replica `gpid` its partition's only member, for good: a
    /// configuration naming this node primary at the next ballot and a
    /// lease that does not expire. A standalone node serves every replica
    /// so — a one-member cluster, on the one write path.
    pub fn serve_alone(&mut self, gpid: Gpid) {
        let me = self.shared.me();
        let Some(replica) = self.replicas.get_mut(&gpid) else {
            return;
        };
        let ballot = replica.core.ballot().max(replica.ballot_persisted) + 1;
        let config = PartitionConfig {
            ballot,
            primary: Some(me),
            secondaries: Vec::new(),
            learners: Vec::new(),
        };
        feed(&mut self.shared, gpid, replica, Input::Config(config));
        feed(
            &mut self.shared,
            gpid,
            replica,
            Input::Lease {
                ballot,
                until_ms: u64::MAX,
            },
        );
        publish(&self.shared, gpid, replica);
    }

    /// Sets replica `gpid` aside: its data is damaged (damaged RocksDB
    /// files found when it opened, or its records in a corrupted stretch of
    /// the log found at replay), so the host stops hosting it, if it did,
    /// without reporting it again, and its storage moves out of the way;
    /// meta replaces it with a fresh copy (**damaged-replica-set-aside**).
    /// Waiting writes fail. Returns where the storage went.
    pub fn set_aside_replica(&mut self, gpid: Gpid, reason: &str) -> Result<String, OpError> {
        self.shared.replaying.remove(&gpid);
        if let Some(mut replica) = self.replicas.remove(&gpid) {
            self.shared.registry.unregister(gpid);
            fail_waiting(&mut self.shared, &mut replica);
        }
        let moved = self.shared.io.set_aside_replica(gpid)?;
        tracing::error!(
            shard = self.shared.shard,
            app_id = gpid.app_id,
            partition = gpid.partition_index,
            %reason,
            moved_to = %moved,
            "replica data is damaged; set aside"
        );
        Ok(moved)
    }

    /// Stops hosting `gpid` and deletes its data (meta says its table's
    /// hold time is over). Its records left in the log pin nothing.
    pub fn drop_replica(&mut self, gpid: Gpid) -> Result<(), OpError> {
        let Some(mut replica) = self.replicas.remove(&gpid) else {
            return Ok(());
        };
        self.shared.registry.unregister(gpid);
        fail_waiting(&mut self.shared, &mut replica);
        self.shared
            .io
            .remove_replica(gpid, replica.partition.into_engine())?;
        tracing::info!(
            shard = self.shared.shard,
            app_id = gpid.app_id,
            partition = gpid.partition_index,
            "dropped replica"
        );
        Ok(())
    }

    // ---- meta ----

    /// This shard's part of a beacon ack: configurations first (hosting new
    /// replicas), then the leases meta granted for them
    /// (**configs-before-lease**), then drops.
    ///
    /// An ack of a beacon sent before that of the newest ack taken
    /// (delivered late, or twice) is ignored: everything it says, the
    /// newer one superseded (**acks-in-order**). Taken, it would host
    /// again, empty, a replica meta dropped since, as a member at the old
    /// ballot; and, from before a split began, its missing order would
    /// unfence a fenced primary in its epoch, which would then take
    /// writes of moved keys above the fence decree meta already holds
    /// (**split-fence**, **copy-covers-fence**).
    /// Tags the writes of every replica a duplication order names with
    /// this cluster's id, and of no other (docs/duplication.md,
    /// "Timetags"). Every ack repeats the orders of every running or paused
    /// duplication, so a replica hosted by this ack is tagged by the next;
    /// an ack without a valid cluster id tags nothing.
    fn apply_dup_orders(&mut self, orders: &[DupOrder], cluster_id: u8) {
        let valid = crate::storage::timetag::validate_cluster_id(cluster_id).is_ok();
        let duplicated: BTreeSet<Gpid> = orders.iter().map(|order| order.gpid).collect();
        for (gpid, replica) in self.replicas.iter_mut() {
            let tags = (valid && duplicated.contains(gpid)).then_some(cluster_id);
            replica.partition.set_timetags(tags);
        }
        self.shared.dup_orders = if valid { orders.to_vec() } else { Vec::new() };
        self.shared.cluster_id = cluster_id;
    }

    /// What the primaries of this shard ship (docs/duplication.md): each
    /// duplication order of a replica that is its partition's serving
    /// primary, with the partition's committed decree; and meta's cluster
    /// id. Every order, whatever the role, is in [`ShardHost::dup_orders`]
    /// (members keep their logs from its confirmed decree).
    pub fn dup_shipping(&self) -> (Vec<(DupOrder, Decree)>, u8) {
        let now_ms = self.shared.io.now_ms();
        let shipping = self
            .shared
            .dup_orders
            .iter()
            .filter_map(|order| {
                let replica = self.replicas.get(&order.gpid)?;
                let core = replica.core();
                (core.role() == Role::Primary && !replica.is_failed() && core.is_serving(now_ms))
                    .then(|| (order.clone(), core.last_committed()))
            })
            .collect();
        (shipping, self.shared.cluster_id)
    }

    /// Whether this shard took a beacon ack since it started.
    pub fn acked_once(&self) -> bool {
        self.shared.acked_once
    }

    /// The duplication orders of this shard's replicas in the newest ack.
    pub fn dup_orders(&self) -> &[DupOrder] {
        &self.shared.dup_orders
    }

    pub fn apply_ack(&mut self, ack: ShardAck) {
        if ack.sent_ms < self.shared.ack_sent_ms {
            return;
        }
        self.shared.ack_sent_ms = ack.sent_ms;
        self.shared.acked_once = true;
        for assignment in &ack.configs {
            if let Err(error) = self.host(assignment) {
                let gpid = Gpid {
                    app_id: assignment.app_id,
                    partition_index: assignment.partition_index,
                };
                // Every ack repeats the assignment: say it once per ballot.
                if self.shared.refused.insert(gpid, assignment.ballot) != Some(assignment.ballot) {
                    tracing::error!(%error, "cannot host an assigned replica");
                }
                continue;
            }
            self.on_assignment(assignment);
        }
        // Fenced before any lease of this ack lets a new primary serve.
        self.apply_split_orders(&ack.splits, &ack.configs);
        self.apply_dup_orders(&ack.dups, ack.cluster_id);
        let until_ms = match ack.lease_ms {
            // Meta without replication grants no leases: each replica is
            // then its partition's only copy.
            0 => u64::MAX,
            lease_ms => ack.sent_ms.saturating_add(lease_ms),
        };
        for grant in ack.leases {
            let (gpid, ballot) = (grant.gpid, grant.ballot);
            if let Some(replica) = self.replicas.get_mut(&gpid) {
                feed(
                    &mut self.shared,
                    gpid,
                    replica,
                    Input::Lease { ballot, until_ms },
                );
                // The balancer's handoff rides on every ack like the lease
                // (one lost ack only delays it, and its end is heard as
                // soon as meta gives it up); the core takes it only as the
                // primary of that ballot.
                let to = (!grant.handoff_to.is_empty()).then(|| self.shared.id(&grant.handoff_to));
                feed(
                    &mut self.shared,
                    gpid,
                    replica,
                    Input::Handoff { ballot, to },
                );
            }
        }
        for gpid in ack.drops {
            if let Err(error) = self.drop_replica(gpid) {
                tracing::error!(%error, "cannot drop a replica");
            }
        }
    }

    /// A configuration from meta for a replica this shard hosts.
    pub fn on_assignment(&mut self, assignment: &ReplicaAssignment) {
        let gpid = Gpid {
            app_id: assignment.app_id,
            partition_index: assignment.partition_index,
        };
        let shared = &mut self.shared;
        let Some(replica) = self.replicas.get_mut(&gpid) else {
            return;
        };
        replica.replica_count = assignment.replica_count;
        // A committed split doubled the count: the moved keys are refused
        // from now on and the storage drops them (**split-owned-only**).
        // The count only grows (**count-only-grows**): an ack from before
        // the commit, late or delivered twice, must not make the parent
        // take its child's keys again.
        if assignment.partition_count > 0
            && assignment.partition_count as u32 > replica.meta.partition_count
        {
            replica.meta.partition_count = assignment.partition_count as u32;
            if let Err(error) = shared.io.update_replica_meta(&replica.meta) {
                tracing::error!(%error, "cannot record a replica's new partition count");
            }
            split::set_owner(replica);
            publish(shared, gpid, replica);
        }
        let primary = shared.id(&assignment.primary);
        // Sorted and without duplicates, as configurations are.
        let mut ids = |names: &[String]| -> Vec<NodeId> {
            let mut ids: Vec<NodeId> = names.iter().map(|name| shared.id(name)).collect();
            ids.sort();
            ids.dedup();
            ids
        };
        let secondaries = ids(&assignment.secondaries);
        let learners = ids(&assignment.learners);
        let members = std::iter::once(&assignment.primary)
            .chain(&assignment.secondaries)
            .chain(&assignment.learners);
        for (name, address) in members.zip(&assignment.member_addresses) {
            let id = shared.id(name);
            replica.addresses.insert(id, address.clone());
        }
        let config = PartitionConfig {
            ballot: assignment.ballot.max(0) as Ballot,
            primary: Some(primary),
            secondaries,
            learners,
        };
        if replica.failure.is_some() {
            // Stopped, it acts on no configuration, but reports the newest
            // one that still counts on it — as primary or secondary — so
            // that meta moves its place (**stopped-reports-inactive**). One
            // that made it a learner is not reported again: meta would
            // only name it a learner once more, at every beacon.
            let me = shared.me();
            if config.primary == Some(me) || config.secondaries.contains(&me) {
                replica.ballot_heard = replica.ballot_heard.max(config.ballot);
                publish(shared, gpid, replica);
            }
            return;
        }
        if config.ballot > replica.core.config().ballot {
            feed(shared, gpid, replica, Input::Config(config));
            publish(shared, gpid, replica);
        }
    }

    // ---- clients ----

    /// A client write: refused at once (answered through `waiter`) unless
    /// this replica is a serving primary with enough members and the log
    /// takes writes; otherwise prepared into a batch, proposed to the core,
    /// and answered once committed.
    pub fn client_write(&mut self, gpid: Gpid, request: &Request, waiter: I::Waiter) {
        let shared = &mut self.shared;
        let Some(replica) = self.replicas.get_mut(&gpid) else {
            let error = not_hosted(gpid, shared.shard);
            shared.io.reply(waiter, Err(error), None);
            return;
        };
        let prepared = prepare_client_write(shared, gpid, replica, request);
        let (payload, body) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                shared.io.reply(waiter, Err(error), None);
                return;
            }
        };
        let token = shared.tokens + 1;
        shared.tokens = token;
        replica.waiting.insert(token, Waiting { body, waiter });
        feed(shared, gpid, replica, Input::ClientWrite { token, payload });
        // Refused writes leave the batch unstaged.
        shared.staging = None;
    }

    /// The partition to read `request` from: only at an activated primary
    /// within its lease, on a replica that serves, for keys of the
    /// partition.
    pub fn readable(
        &self,
        gpid: Gpid,
        request: &Request,
    ) -> Result<&Partition<I::Engine>, OpError> {
        let replica = self
            .replicas
            .get(&gpid)
            .ok_or_else(|| not_hosted(gpid, self.shared.shard))?;
        replica.check_serving()?;
        check_keys(request, gpid, replica.meta.partition_count)?;
        split::check_fence(replica, gpid, request)?;
        replica
            .core
            .serving_check(self.shared.io.now_ms())
            .map_err(|error| {
                OpError::new(
                    ErrorCode::NotPrimary,
                    format!("{error}: refresh the route and retry"),
                )
            })?;
        Ok(&replica.partition)
    }

    /// The replica of `gpid` if it is a primary that serves reads now
    /// (activated, within its lease, not stopped): its applied data holds
    /// every acknowledged write, so it is what a backup checkpoints
    /// (**backup-holds-acknowledged**).
    pub fn serving_replica(&self, gpid: Gpid) -> Option<&HostedReplica<I>> {
        let replica = self.replicas.get(&gpid)?;
        replica.check_serving().ok()?;
        replica.core.serving_check(self.shared.io.now_ms()).ok()?;
        Some(replica)
    }

    /// Serves a point read or a multi-key read (not a scanner request).
    pub fn read(&self, gpid: Gpid, request: &Request) -> Response {
        let partition = self.readable(gpid, request)?;
        partition.execute(request, self.shared.io.now_epoch_s())
    }

    // ---- peers ----

    /// A peer message for `gpid` (dropped when the replica is not hosted
    /// here: the sender's timers resend).
    pub fn on_peer(&mut self, gpid: Gpid, request: PeerRequest) {
        let shared = &mut self.shared;
        let Some(replica) = self.replicas.get_mut(&gpid) else {
            tracing::debug!(
                app_id = gpid.app_id,
                partition = gpid.partition_index,
                "peer message for a replica not hosted here"
            );
            return;
        };
        if replica.failure.is_some() {
            return;
        }
        let from = shared.id(&request.from);
        // Learn where the sender's replica listens; no allocation when
        // nothing changed (the common case: every Prepare and ack).
        let known = replica.addresses.get(&from) == Some(&request.from_address);
        if !known && !request.from_address.is_empty() {
            replica.addresses.insert(from, request.from_address.clone());
        }
        match peer_wire::from_wire(request) {
            Ok(Incoming::Core(message)) => {
                feed(shared, gpid, replica, Input::Peer { from, message })
            }
            Ok(Incoming::Chunk(chunk)) => on_copy_chunk(shared, gpid, replica, chunk),
            Err(reason) => tracing::warn!(%reason, "dropped a malformed peer message"),
        }
    }

    // ---- time ----

    /// The ticker: feeds the time to every core and refreshes the registry
    /// beacons read.
    pub fn tick(&mut self) {
        let shared = &mut self.shared;
        shared.ticks += 1;
        // Beacons read the registry every beacon interval; refreshing it
        // every few ticks is enough (role changes publish at once).
        let publish_now = shared.ticks.is_multiple_of(PUBLISH_EVERY_TICKS);
        let mut splitting = false;
        for (gpid, replica) in self.replicas.iter_mut() {
            splitting |= replica.split.is_some();
            if replica.failure.is_some() {
                continue;
            }
            feed(shared, *gpid, replica, Input::Tick);
            if publish_now {
                publish(shared, *gpid, replica);
            }
        }
        if splitting && publish_now {
            self.split_step();
        }
    }

    /// Checks the route a client sent by (`partition_count`, 0 = none)
    /// against the replica's: a client holding another count than a
    /// split left gets `STALE_ROUTE` and refreshes.
    pub fn check_route(&self, gpid: Gpid, partition_count: i32) -> Result<(), OpError> {
        let Some(replica) = self.replicas.get(&gpid) else {
            return Ok(());
        };
        let count = replica.meta.partition_count;
        if partition_count <= 0 || partition_count as u32 == count {
            return Ok(());
        }
        Err(OpError::new(
            ErrorCode::StaleRoute,
            format!(
                "the request was routed for {partition_count} partitions, but partition {}.{} {} {count}: refresh the route and resend",
                gpid.app_id,
                gpid.partition_index,
                if (partition_count as u32) < count { "now belongs to a table of" } else { "has not heard yet of its table's" },
            ),
        ))
    }

    // ---- the log ----

    /// Appends backlogged records, in order, while the log takes them.
    pub fn drain_backlog(&mut self) {
        let shared = &mut self.shared;
        while let Some(record) = shared.backlog.front() {
            let appended =
                shared
                    .io
                    .append(record.gpid, record.ballot, record.decree, &record.payload);
            if appended == Err(AppendError::Busy) {
                return;
            }
            let record = shared.backlog.pop_front().expect("front seen above");
            match appended {
                Ok(position) => note_appended(shared, position, &record),
                Err(error) => {
                    if let Some(replica) = self.replicas.get_mut(&record.gpid) {
                        let reason = format!("mutation log: {error:?}");
                        fail(shared, record.gpid, replica, reason);
                    }
                }
            }
        }
    }

    /// The position of the newest append not yet reported durable.
    pub fn newest_appended(&self) -> Option<I::Position> {
        self.shared.appended.back().map(|(position, ..)| *position)
    }

    /// Whether records wait for the log to take them.
    pub fn backlog_waiting(&self) -> bool {
        !self.shared.backlog.is_empty()
    }

    /// The log is durable up to `durable`: every append at or below it is
    /// reported to its core (`LogDurable`), in log order.
    pub fn log_durable(&mut self, durable: I::Position) {
        while let Some((position, ..)) = self.shared.appended.front() {
            if *position > durable {
                break;
            }
            let (_, gpid, ballot, decree) =
                self.shared.appended.pop_front().expect("front seen above");
            if let Some(replica) = self.replicas.get_mut(&gpid) {
                feed(
                    &mut self.shared,
                    gpid,
                    replica,
                    Input::LogDurable { ballot, decree },
                );
            }
        }
    }

    /// The log failed: every replica stops (the node must restart, and
    /// replays).
    pub fn log_failed(&mut self, reason: &str) {
        self.shared.appended.clear();
        for (gpid, replica) in self.replicas.iter_mut() {
            fail(
                &mut self.shared,
                *gpid,
                replica,
                format!("mutation log: {reason}"),
            );
        }
    }

    /// Drops the copy pins (**copy-pins-log**) that no longer serve: the
    /// learner stopped being one, or this replica is no longer primary.
    /// With `all`, every pin goes (the log is over twice its bound: disk is
    /// bounded first; a learner that still needed the log gets a new copy).
    pub fn release_copy_pins(&mut self, all: bool) {
        let replicas = &self.replicas;
        self.shared.copy_pins.retain(|(gpid, learner), decree| {
            let serving = replicas.get(gpid).is_some_and(|replica| {
                replica.core.role() == Role::Primary
                    && replica.core.config().learners.contains(learner)
            });
            if serving && all {
                tracing::warn!(
                    app_id = gpid.app_id,
                    partition = gpid.partition_index,
                    decree,
                    "the log is over twice its bound: a copy's learner loses the log it would catch up from"
                );
            }
            serving && !all
        });
    }

    // ---- learners ----

    /// The next learner to answer from the log, if any waits.
    pub fn next_learn_read(&mut self) -> Option<LearnRead> {
        self.shared
            .learn_reads
            .queue
            .pop_front()
            .map(|(_, job)| job)
    }

    /// What to read for `job`; `None` when the log cannot answer it: this
    /// replica is no longer the primary at the job's ballot (the job is
    /// dropped), or the learner is below the decree of a copy this replica
    /// installed, where its log holds no authoritative records — maybe its
    /// own older, never-committed ones (**log-floor**: the learner gets a
    /// copy). When the learner's commit point is at
    /// or above where this primary's run began
    /// ([`ReplicaCore::primary_since`], as it is after a copy), the read
    /// takes records of this run only and stops once it has enough, so
    /// catching up after a copy costs one short read per response.
    pub fn learn_plan(&self, job: &LearnRead) -> Option<LearnPlan> {
        let replica = self.replicas.get(&job.gpid)?;
        let core = &replica.core;
        if core.role() != Role::Primary || core.ballot() != job.ballot {
            return None;
        }
        let from = job.learner_committed;
        if from < replica.log_floor {
            return None;
        }
        let own_run = core
            .primary_since()
            .filter(|(_, began_at)| from >= *began_at)
            .map(|(ballot, _)| ballot);
        Some(LearnPlan {
            from,
            committed: core.last_committed(),
            own_run,
        })
    }

    /// Answers learner `job` with what the log read gave (`Ok(None)`: the
    /// log no longer holds what it misses, so it gets a copy), if this
    /// replica is still the primary at the job's ballot; the job is over.
    pub fn answer_learner(&mut self, job: LearnRead, read: Result<Option<Vec<Mutation>>, String>) {
        self.shared.learn_reads.done((job.gpid, job.to));
        let shared = &mut self.shared;
        let Some(replica) = self.replicas.get_mut(&job.gpid) else {
            return;
        };
        let core = &replica.core;
        if core.role() != Role::Primary || core.ballot() != job.ballot {
            return;
        }
        let mutations = match read {
            Ok(Some(mutations)) => mutations,
            Ok(None) => return queue_copy(shared, &job),
            Err(error) => {
                tracing::warn!(%error, "cannot read the log for a learner");
                return queue_copy(shared, &job);
            }
        };
        tracing::info!(app_id = job.gpid.app_id, partition = job.gpid.partition_index, learner = %shared.name(job.to), from = job.learner_committed + 1, mutations = mutations.len(), "learner learns from the log");
        let message = PeerMessage::LearnResponse {
            ballot: job.ballot,
            committed_decree: core.last_committed(),
            mutations,
        };
        let request = peer_wire::to_wire(message, &shared.node_name, &shared.shard_address);
        send_peer(shared, job.gpid, replica, job.to, request);
    }

    /// The next copy to send, if any waits: its start is recorded as a copy
    /// pin (the learner catches up from the log above it).
    pub fn next_copy(&mut self) -> Option<CopyJob> {
        loop {
            let ((gpid, to), (ballot, learner_committed)) = self.shared.copies.queue.pop_front()?;
            let Some(replica) = self
                .replicas
                .get(&gpid)
                .filter(|replica| !replica.core.learns_from_stream(to))
            else {
                // Gone, or the learner moved past the request the copy
                // answers (it would refuse it: **copy-answers-its-request**).
                self.shared.copies.done((gpid, to));
                continue;
            };
            // Applied (= committed at a primary) when the copy starts; the
            // learner applies every later mutation again (see
            // storage::copy), learning them from this log, which keeps
            // them meanwhile.
            let decree = replica.applied;
            self.shared.copy_pins.insert((gpid, to), decree);
            return Some(CopyJob {
                gpid,
                to,
                ballot,
                decree,
                learner_committed,
                after: None,
                sequence: 0,
                bytes_sent: 0,
            });
        }
    }

    /// Sends the next chunk of `job` (at most [`COPY_CHUNK_BYTES`] of
    /// records); `Ok(true)` once the last one is sent. Fails when this
    /// replica stopped being the primary at the copy's ballot.
    pub fn copy_step(&mut self, job: &mut CopyJob) -> Result<bool, String> {
        self.copy_step_bytes(job, COPY_CHUNK_BYTES)
    }

    /// [`ShardHost::copy_step`] with chunks of at most `bytes_max` bytes of
    /// records (at least one record each).
    pub fn copy_step_bytes(&mut self, job: &mut CopyJob, bytes_max: usize) -> Result<bool, String> {
        let shared = &mut self.shared;
        let replica = self
            .replicas
            .get_mut(&job.gpid)
            .ok_or("the replica is gone")?;
        if replica.core.role() != Role::Primary || replica.core.ballot() != job.ballot {
            return Err("no longer the primary at the copy's ballot".to_owned());
        }
        let (batch, next) =
            copy::export_chunk(replica.partition.engine(), job.after.as_deref(), bytes_max)
                .map_err(|error| error.to_string())?;
        let last = next.is_none();
        let encoded = batch.encode();
        job.bytes_sent += encoded.len() as u64;
        let chunk = CopyChunk {
            ballot: job.ballot,
            decree: job.decree,
            learner_committed: job.learner_committed,
            sequence: job.sequence,
            last,
            batch: encoded,
        };
        let request = peer_wire::chunk_to_wire(chunk, &shared.node_name, &shared.shard_address);
        send_peer(shared, job.gpid, replica, job.to, request);
        if last {
            tracing::info!(app_id = job.gpid.app_id, partition = job.gpid.partition_index, learner = %shared.name(job.to), decree = job.decree, chunks = job.sequence + 1, bytes = job.bytes_sent, "copy sent");
        }
        job.after = next;
        job.sequence += 1;
        Ok(last)
    }

    /// The copy `job` is over (sent or stopped).
    pub fn copy_done(&mut self, job: &CopyJob) {
        self.shared.copies.done((job.gpid, job.to));
    }
}

// ---- what the host does for one replica ----

/// What beacons report of `replica`. A stopped replica reports itself
/// inactive at its ballot (**stopped-reports-inactive**): meta then treats
/// it as having lost its state and moves its place — a primary's to a
/// secondary — instead of keeping a member that serves nothing.
fn entry_of<I: HostIo>(shard: usize, replica: &HostedReplica<I>) -> HostedEntry {
    let (ballot, role) = match replica.failure {
        // At the newest ballot it heard of, so that meta, whose ballot may
        // have moved on since the replica stopped, sees it (meta counts an
        // inactive report only at the partition's ballot or above).
        Some(_) => (
            replica.core.ballot().max(replica.ballot_heard),
            ReplicaRole::Inactive,
        ),
        None => (replica.core.ballot(), replica.wire_role()),
    };
    HostedEntry {
        shard,
        ballot: ballot as i64,
        role,
        decree_prepared: replica.core.last_prepared() as i64,
        decree_committed: replica.core.last_committed() as i64,
        decree_applied: replica.applied as i64,
        partition_count: replica.meta.partition_count as i32,
    }
}

/// Opens replica `meta`'s storage with a fresh, inactive core. A replica
/// found with the copy marker holds a partial copy: it starts empty at
/// decree 0 (durably, marker removed) and learns again.
fn open_replica<I: HostIo>(
    shared: &mut Shared<I>,
    meta: &ReplicaMeta,
) -> Result<HostedReplica<I>, OpError> {
    let gpid = meta.gpid();
    let opened = shared.io.open_replica(meta)?;
    let engine = opened.engine;
    if opened.copy_marker {
        empty_storage(&engine)?;
        shared
            .io
            .set_copy_marker(gpid, false)
            .map_err(|reason| OpError::new(ErrorCode::StorageError, reason))?;
        tracing::warn!(
            app_id = gpid.app_id,
            partition = gpid.partition_index,
            "dropped a partly installed copy"
        );
    }
    let applied = engine.applied_decree()?.max(0) as Decree;
    let me = shared.me();
    let core = ReplicaCore::new(gpid, me, shared.settings).map_err(|error| {
        OpError::new(
            ErrorCode::Internal,
            format!("replication settings: {error}"),
        )
    })?;
    Ok(HostedReplica {
        meta: meta.clone(),
        partition: Partition::new(engine, shared.limits),
        core,
        applied,
        failure: None,
        waiting: BTreeMap::new(),
        addresses: HashMap::new(),
        incoming: None,
        replica_count: 0,
        ballot_persisted: 0,
        log_floor: 0,
        ballot_heard: 0,
        split: None,
    })
    .inspect(split::set_owner)
}

/// Rebuilds `replica`'s core from its logged records and applies the
/// committed ones storage lacks; it starts inactive, at least at its
/// persisted ballot (**ballot-monotonic** across restarts), so that only a
/// newer configuration gives it a role.
fn recover<I: HostIo>(
    shared: &mut Shared<I>,
    gpid: Gpid,
    replica: &mut HostedReplica<I>,
    recovery: Recovery,
) {
    if replica.failure.is_some() {
        return;
    }
    let persisted = match shared.io.persisted_ballot(gpid) {
        Ok(ballot) => ballot,
        Err(reason) => return fail(shared, gpid, replica, reason),
    };
    replica.ballot_persisted = persisted;
    match shared.io.log_floor(gpid) {
        Ok(floor) => replica.log_floor = floor,
        Err(reason) => return fail(shared, gpid, replica, reason),
    }
    let me = shared.me();
    let (mut core, replay) = match recovery.finish(gpid, me, shared.settings) {
        Ok(recovered) => recovered,
        Err(error) => {
            return fail(
                shared,
                gpid,
                replica,
                format!("replication settings: {error}"),
            )
        }
    };
    for mutation in replay {
        let decree = mutation.decree;
        match batch_of(&mutation).and_then(|batch| replica.partition.apply(&batch)) {
            Ok(()) => {
                replica.applied = decree;
                shared.io.applied(gpid, &mutation);
            }
            Err(error) => {
                return fail(
                    shared,
                    gpid,
                    replica,
                    format!("replaying decree {decree}: {error}"),
                )
            }
        }
    }
    if persisted > core.ballot() {
        // The replica accepted `persisted` before it stopped, maybe
        // without logging under it.
        core.handle(
            Input::Config(PartitionConfig {
                ballot: persisted,
                primary: None,
                secondaries: Vec::new(),
                learners: Vec::new(),
            }),
            shared.io.now_ms(),
        );
    }
    replica.core = core;
}

/// Stops `replica` for `reason` (the first reason stays) and answers its
/// waiting writes: nothing more happens under a ballot that could not be
/// persisted, or on storage that failed (**stop-on-failure**).
fn fail<I: HostIo>(
    shared: &mut Shared<I>,
    gpid: Gpid,
    replica: &mut HostedReplica<I>,
    reason: String,
) {
    tracing::error!(app_id = gpid.app_id, partition = gpid.partition_index, %reason, "replica stopped");
    if replica.failure.is_none() {
        replica.failure = Some(reason);
    }
    fail_waiting(shared, replica);
    publish(shared, gpid, replica);
}

/// Answers every waiting client write `UNKNOWN_OUTCOME`: a write that got
/// a decree may still commit elsewhere.
fn fail_waiting<I: HostIo>(shared: &mut Shared<I>, replica: &mut HostedReplica<I>) {
    for (_, waiting) in std::mem::take(&mut replica.waiting) {
        let error = OpError::new(
            ErrorCode::UnknownOutcome,
            "the replica stopped before the write's outcome was known",
        );
        shared.io.reply(waiting.waiter, Err(error), None);
    }
}

/// Feeds `input` to the replica's core and carries out what it decides, in
/// order — until the replica fails (**stop-on-failure**).
fn feed<I: HostIo>(
    shared: &mut Shared<I>,
    gpid: Gpid,
    replica: &mut HostedReplica<I>,
    input: Input,
) {
    if replica.failure.is_some() {
        return;
    }
    let outputs = replica.core.handle(input, shared.io.now_ms());
    for output in outputs {
        carry_out(shared, gpid, replica, output);
        if replica.failure.is_some() {
            return;
        }
    }
}

fn carry_out<I: HostIo>(
    shared: &mut Shared<I>,
    gpid: Gpid,
    replica: &mut HostedReplica<I>,
    output: Output,
) {
    match output {
        Output::RoleChanged { role, ballot } => {
            // Before anything happens under the new ballot.
            if ballot > replica.ballot_persisted {
                match shared.io.persist_ballot(gpid, ballot) {
                    Ok(()) => replica.ballot_persisted = ballot,
                    Err(error) => {
                        return fail(
                            shared,
                            gpid,
                            replica,
                            format!("cannot record ballot {ballot}: {error}"),
                        )
                    }
                }
            }
            if role == Role::Primary {
                // A new primary re-stages its tail from the appends that follow.
                replica.partition.discard_staged();
            }
            if replica.incoming.is_some_and(|copy| copy.ballot != ballot) {
                // A copy is sent for one ballot: the core dropped it with
                // the configuration; storage follows.
                abort_copy(shared, gpid, replica, "the ballot changed");
            }
            tracing::info!(
                app_id = gpid.app_id,
                partition = gpid.partition_index,
                ?role,
                ballot,
                "replica role changed"
            );
            publish(shared, gpid, replica);
        }
        Output::AppendLog(mutation) => {
            let staged = shared.staging.take();
            if let Some(batch) = staged.filter(|_| !mutation.payload.is_empty()) {
                replica.partition.stage(mutation.decree as i64, &batch);
            } else if replica.core.role() == Role::Primary && !mutation.payload.is_empty() {
                match WriteBatch::decode(&mutation.payload) {
                    Ok(batch) => replica.partition.stage(mutation.decree as i64, &batch),
                    Err(error) => {
                        return fail(
                            shared,
                            gpid,
                            replica,
                            format!("decree {} does not decode: {error}", mutation.decree),
                        )
                    }
                }
            }
            let record = Backlogged {
                gpid,
                ballot: mutation.ballot,
                decree: mutation.decree,
                payload: log_payload(&mutation),
            };
            append_record(shared, replica, record);
        }
        Output::Send { to, message } => {
            let request = peer_wire::to_wire(message, &shared.node_name, &shared.shard_address);
            send_peer(shared, gpid, replica, to, request);
        }
        Output::Apply(mutation) => {
            match batch_of(&mutation).and_then(|batch| replica.partition.apply(&batch)) {
                Ok(()) => {
                    replica.applied = mutation.decree;
                    shared.io.applied(gpid, &mutation);
                }
                Err(error) => fail(
                    shared,
                    gpid,
                    replica,
                    format!("applying decree {} failed: {error}", mutation.decree),
                ),
            }
        }
        Output::WriteReply { token, result } => {
            if let Some(waiting) = replica.waiting.remove(&token) {
                let (response, decree) = match result {
                    Ok(decree) => match replica.check_serving() {
                        Ok(()) => (Ok(waiting.body), Some(decree)),
                        Err(error) => (Err(error), None),
                    },
                    Err(error) => (Err(write_error(error)), None),
                };
                shared.io.reply(waiting.waiter, response, decree);
            }
        }
        Output::ReadReply { .. } => {}
        Output::LearnFromStorage {
            to,
            ballot,
            learner_committed,
        } => {
            // Read off the request path, one read per learner at a time.
            let read = LearnRead {
                gpid,
                to,
                ballot,
                learner_committed,
            };
            if shared.learn_reads.offer(gpid, to, read) {
                shared.io.learn_queued();
            }
        }
        Output::ToMeta(request) => {
            let request = match request {
                MetaRequest::RemoveSecondary { ballot, node } => Request::RemoveSecondary {
                    gpid,
                    ballot: ballot as i64,
                    node: shared.name(node).to_owned(),
                },
                MetaRequest::UpgradeLearner { ballot, node } => Request::UpgradeLearner {
                    gpid,
                    ballot: ballot as i64,
                    node: shared.name(node).to_owned(),
                },
                MetaRequest::SwitchPrimary { ballot, node } => Request::SwitchPrimary {
                    gpid,
                    ballot: ballot as i64,
                    node: shared.name(node).to_owned(),
                },
            };
            if let Request::RemoveSecondary { node, ballot, .. } = &request {
                // Rare, and the start of a reconfiguration: worth a line.
                tracing::warn!(app_id = gpid.app_id, partition = gpid.partition_index, ballot, member = %node, "asks meta to remove a member that left Prepares unacknowledged");
            }
            shared.io.to_meta(request);
        }
    }
}

/// Refuses a client write before it gets a decree, or gives its log
/// payload and the answer it gets once committed.
fn prepare_client_write<I: HostIo>(
    shared: &mut Shared<I>,
    gpid: Gpid,
    replica: &HostedReplica<I>,
    request: &Request,
) -> Result<(Vec<u8>, ResponseBody), OpError> {
    replica.check_serving()?;
    check_keys(request, gpid, replica.meta.partition_count)?;
    split::check_fence(replica, gpid, request)?;
    replica
        .core
        .serving_check(shared.io.now_ms())
        .map_err(|error| write_error(error.into()))?;
    let members = replica.core.config().member_count();
    // A table of fewer replicas than the bound needs only all of them.
    let min_alive = shared
        .registry
        .replica_count_min_alive()
        .min(replica.replica_count)
        .max(0) as usize;
    if members < min_alive {
        return Err(OpError::new(
            ErrorCode::NotEnoughReplicas,
            format!(
                "partition {}.{} has {members} alive replica(s), fewer than meta's replica_count_min_alive {min_alive}: writes are refused until it recovers",
                gpid.app_id, gpid.partition_index
            ),
        ));
    }
    if !shared.backlog.is_empty() {
        return Err(OpError::new(
            ErrorCode::Busy,
            "the shard's mutation log is full of unsynced writes: the write was not executed; retry",
        ));
    }
    // One read of the wall clock serves the TTLs and the timetags.
    let now_unix_us = shared.io.now_unix_us();
    let (batch, body) = replica.partition.prepare_tagged_write(
        request,
        crate::key::epoch_s_of_unix_us(now_unix_us),
        now_unix_us,
    )?;
    // A failed check writes nothing, but its answer may rest on staged
    // writes: the empty write commits only after all of them.
    let payload = if batch.is_empty() {
        Vec::new()
    } else {
        batch.encode()
    };
    let record_bytes = COMMITTED_PREFIX_BYTES + payload.len();
    let bytes_max = shared.io.payload_bytes_max();
    if record_bytes > bytes_max {
        return Err(OpError::new(
            ErrorCode::RequestTooLarge,
            format!(
                "the write's log record of {record_bytes} bytes exceeds the mutation log's maximum of {bytes_max} bytes (tuning log_segment_bytes): the write was not executed"
            ),
        ));
    }
    if !batch.is_empty() {
        shared.staging = Some(batch);
    }
    Ok((payload, body))
}

/// Appends a record to the shard's log, or — when the log is over its
/// bound, or earlier records already wait — backlogs it
/// (**no-lost-append**: a decree the core logged is never forgotten; its
/// `LogDurable` comes once it is durable). Any other log error stops the
/// replica.
fn append_record<I: HostIo>(
    shared: &mut Shared<I>,
    replica: &mut HostedReplica<I>,
    record: Backlogged,
) {
    if shared.backlog.is_empty() {
        match shared
            .io
            .append(record.gpid, record.ballot, record.decree, &record.payload)
        {
            Ok(position) => return note_appended(shared, position, &record),
            Err(AppendError::Busy) => {}
            Err(AppendError::Failed(error)) => {
                return fail(
                    shared,
                    record.gpid,
                    replica,
                    format!("mutation log: {error}"),
                )
            }
        }
    }
    shared.backlog.push_back(record);
    shared.io.appended();
}

fn note_appended<I: HostIo>(shared: &mut Shared<I>, position: I::Position, record: &Backlogged) {
    shared
        .appended
        .push_back((position, record.gpid, record.ballot, record.decree));
    shared.io.appended();
}

/// Publishes the replica's role and decrees in the node-wide registry
/// (what beacons report).
fn publish<I: HostIo>(shared: &Shared<I>, gpid: Gpid, replica: &HostedReplica<I>) {
    let entry = entry_of(shared.shard, replica);
    shared.registry.publish(gpid, |held| *held = entry);
}

/// Sends `request` to member `to` of `gpid` (dropped when its address is
/// unknown: the sender's timers retry).
fn send_peer<I: HostIo>(
    shared: &mut Shared<I>,
    gpid: Gpid,
    replica: &HostedReplica<I>,
    to: NodeId,
    request: PeerRequest,
) {
    match replica.addresses.get(&to) {
        Some(address) => shared.io.send(gpid, address, request),
        None => tracing::debug!(node = %shared.name(to), "no address for a peer"),
    }
}

/// Queues a copy of the applied records for learner `to` (one at a time
/// per learner).
fn queue_copy<I: HostIo>(shared: &mut Shared<I>, job: &LearnRead) {
    let LearnRead { gpid, to, .. } = *job;
    if shared
        .copies
        .offer(gpid, to, (job.ballot, job.learner_committed))
    {
        tracing::info!(app_id = gpid.app_id, partition = gpid.partition_index, learner = %shared.name(to), "learner needs a copy of the records");
        shared.io.copy_queued();
    }
}

/// Deletes every record of storage and sets its applied decree to 0.
fn clear_storage<E: StorageEngine>(engine: &E) -> Result<(), OpError> {
    copy::clear(engine)?;
    let mut reset = WriteBatch::new();
    reset.set_decree(0);
    engine.write(&reset)
}

/// Makes storage empty at decree 0, durably.
fn empty_storage<E: StorageEngine>(engine: &E) -> Result<(), OpError> {
    clear_storage(engine)?;
    engine.flush()
}

/// Learner: one chunk of a copy from the primary. Chunk 0 makes the copy
/// marker durable, clears the replica's records and tells the core at once
/// (**copy-known-to-core**: its commit point drops to 0 and it applies
/// nothing until the copy is installed). Chunks must follow in order; a
/// lost one empties storage again and tells the core the copy was aborted
/// (the primary's next copy starts over). The last chunk makes the copy
/// durable (applied decree, flush, marker removed) and feeds
/// `CheckpointInstalled`.
fn on_copy_chunk<I: HostIo>(
    shared: &mut Shared<I>,
    gpid: Gpid,
    replica: &mut HostedReplica<I>,
    chunk: CopyChunk,
) {
    if !replica.core.accepts_checkpoint(chunk.ballot, chunk.decree) {
        return;
    }
    if chunk.sequence == 0 {
        let core = &replica.core;
        if !core.accepts_copy(chunk.ballot, chunk.decree, chunk.learner_committed) {
            tracing::info!(
                app_id = gpid.app_id,
                partition = gpid.partition_index,
                asked_at = chunk.learner_committed,
                holds = core.last_committed(),
                "ignored a copy answering an older learn request"
            );
            return;
        }
        let started = shared.io.set_copy_marker(gpid, true).and_then(|()| {
            replica.partition.discard_staged();
            clear_storage(replica.partition.engine()).map_err(|error| error.to_string())
        });
        if let Err(reason) = started {
            return fail(shared, gpid, replica, reason);
        }
        replica.applied = 0;
        replica.incoming = Some(IncomingCopy {
            ballot: chunk.ballot,
            decree: chunk.decree,
            next_sequence: 0,
        });
        let started = Input::CopyStarted {
            ballot: chunk.ballot,
            decree: chunk.decree,
        };
        feed(shared, gpid, replica, started);
    }
    let in_order = match replica.incoming.as_mut() {
        Some(copy)
            if copy.ballot == chunk.ballot
                && copy.decree == chunk.decree
                && copy.next_sequence == chunk.sequence =>
        {
            copy.next_sequence += 1;
            true
        }
        _ => false,
    };
    if !in_order {
        abort_copy(shared, gpid, replica, "a chunk was lost");
        return;
    }
    let engine = replica.partition.engine();
    let written = WriteBatch::decode(&chunk.batch)
        .and_then(|batch| engine.write(&batch))
        .map_err(|error| error.to_string());
    if let Err(reason) = written {
        abort_copy(shared, gpid, replica, &reason);
        return;
    }
    if !chunk.last {
        return;
    }
    replica.incoming = None;
    let finished = {
        let mut applied = WriteBatch::new();
        applied.set_decree(chunk.decree as i64);
        engine
            .write(&applied)
            .and_then(|()| engine.flush())
            .map_err(|error| error.to_string())
            .and_then(|()| shared.io.persist_log_floor(gpid, chunk.decree))
            .and_then(|()| shared.io.set_copy_marker(gpid, false))
    };
    if let Err(reason) = finished {
        return fail(shared, gpid, replica, reason);
    }
    replica.applied = chunk.decree;
    replica.log_floor = chunk.decree;
    tracing::info!(
        app_id = gpid.app_id,
        partition = gpid.partition_index,
        decree = chunk.decree,
        "installed a copy from the primary"
    );
    let installed = Input::CheckpointInstalled {
        ballot: chunk.ballot,
        decree: chunk.decree,
    };
    feed(shared, gpid, replica, installed);
    publish(shared, gpid, replica);
}

/// A copy being installed will not complete: storage is emptied again,
/// durably (so it matches the core's commit point of 0), the marker goes,
/// and the core is told, so it learns again from scratch.
fn abort_copy<I: HostIo>(
    shared: &mut Shared<I>,
    gpid: Gpid,
    replica: &mut HostedReplica<I>,
    why: &str,
) {
    let Some(copy) = replica.incoming.take() else {
        return;
    };
    tracing::warn!(
        app_id = gpid.app_id,
        partition = gpid.partition_index,
        decree = copy.decree,
        why,
        "dropped a copy being installed"
    );
    let emptied = empty_storage(replica.partition.engine())
        .map_err(|error| error.to_string())
        .and_then(|()| shared.io.set_copy_marker(gpid, false));
    match emptied {
        Ok(()) => {
            replica.applied = 0;
            let aborted = Input::CopyAborted {
                ballot: copy.ballot,
            };
            feed(shared, gpid, replica, aborted);
        }
        Err(reason) => fail(shared, gpid, replica, reason),
    }
}

#[cfg(test)]
mod tests;
