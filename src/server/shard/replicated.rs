//! Cluster mode: the shard as the host of each replica's PacificA core
//! ([`ReplicaCore`], docs/replication.md).
//!
//! The core decides; this module carries out its outputs on the shard:
//! log appends (reporting `LogDurable` once the shard's log syncs past them;
//! a busy log's refusals wait in a backlog), peer messages over
//! [`PeerLinks`], applies to RocksDB, client replies, requests to meta
//! (queued for the node's meta-request thread). Inputs come from client
//! requests, peer messages, this shard's part of each beacon ack
//! (configurations, then per-partition leases) and the shard's ticker.
//!
//! Data path of one write at the primary: `serve_write` prepares the
//! request into a `WriteBatch` (reading staged writes), feeds it to the core
//! as `ClientWrite`; the core's `AppendLog` is appended to the shard's log
//! and staged, its `Send`s go to the secondaries; when the log is durable
//! past it the pump feeds `LogDurable`; each secondary's PrepareAck arrives
//! as a peer message; once durable here and acked by all, the core emits
//! `Apply` (written to RocksDB) and `WriteReply`, which answers the client.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::channel::oneshot;
use markab_shards::log::{read_stream, LogError, LogPosition, RecordHeader};
use markab_wire::{
    ErrorCode, Gpid, OpError, PeerRequest, ReplicaAssignment, ReplicaRole, Request, Response,
    ResponseBody,
};

use crate::replication::config::ReplicationSettings;
use crate::replication::core::ReplicaCore;
use crate::replication::messages::{
    Ballot, Decree, Input, MetaRequest, Mutation, NodeId, Output, PartitionConfig, PeerMessage,
    Role, Token, WriteError,
};
use crate::server::peer::{self, CopyChunk, Incoming, PeerLinks};
use crate::storage::{copy, StorageEngine, WriteBatch};

use super::{Replica, ShardState};

/// Milliseconds on the node's clock for durations (boot time: monotonic,
/// suspend included; [`crate::clock::monotonic_ms`]); the cores' `now_ms`
/// and leases use it.
pub fn clock_ms() -> u64 {
    crate::clock::monotonic_ms()
}

/// Bytes in front of each replicated log record's payload: the primary's
/// commit point when it made the mutation (little-endian u64).
pub const COMMITTED_PREFIX_BYTES: usize = 8;

/// The log payload of a replicated mutation: its commit point, then the
/// encoded write batch (nothing for the empty write).
pub fn log_payload(mutation: &Mutation) -> Vec<u8> {
    let mut payload = Vec::with_capacity(COMMITTED_PREFIX_BYTES + mutation.payload.len());
    payload.extend_from_slice(&mutation.committed_decree.to_le_bytes());
    payload.extend_from_slice(&mutation.payload);
    payload
}

/// A replicated log record's ballot, decree, logged commit point and
/// encoded batch, or why it is malformed.
pub fn record_parts<'a>(
    header: &RecordHeader,
    payload: &'a [u8],
) -> Result<(Ballot, Decree, Decree, &'a [u8]), String> {
    if payload.len() < COMMITTED_PREFIX_BYTES || header.ballot < 0 || header.decree <= 0 {
        return Err(format!(
            "replicated record (ballot {}, decree {}) of {} bytes is malformed",
            header.ballot,
            header.decree,
            payload.len()
        ));
    }
    let (prefix, batch) = payload.split_at(COMMITTED_PREFIX_BYTES);
    let committed_decree = u64::from_le_bytes(prefix.try_into().expect("8 bytes"));
    Ok((
        header.ballot as Ballot,
        header.decree as Decree,
        committed_decree,
        batch,
    ))
}

/// The mutation of a replicated log record, or why it is malformed.
pub fn mutation_of_record(header: &RecordHeader, payload: &[u8]) -> Result<Mutation, String> {
    let (ballot, decree, committed_decree, batch) = record_parts(header, payload)?;
    Ok(Mutation {
        ballot,
        decree,
        committed_decree,
        payload: batch.to_vec(),
    })
}

/// The registry beacons read is refreshed every this many ticker rounds.
const PUBLISH_EVERY_TICKS: u64 = 4;

/// Most payload bytes of mutations one LearnResponse from the log carries;
/// the learner asks again for the rest.
const LEARN_RESPONSE_BYTES_MAX: usize = 512 * 1024;
/// Most log bytes a primary reads (synchronously, on its shard) to answer
/// a learner; a larger gap is sent as a copy instead.
const LEARN_LOG_READ_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes of records per chunk of a copy to a learner.
const COPY_CHUNK_BYTES: usize = 256 * 1024;
/// Rate limit of one shard's copies to learners (bytes per second), so a
/// copy does not starve the shard's clients or the disk.
const COPY_BYTES_PER_SECOND: u64 = 64 * 1024 * 1024;
/// Marker file in a replica directory while a copy is being installed: a
/// replica found with it on open holds a partial copy and starts empty.
pub const COPY_MARKER_FILE: &str = "copy-in-progress";
/// The last ballot the replica accepted (decimal), in its directory. A
/// restarted replica starts at least there, so it never takes part again
/// in a ballot it may have acted under before the restart
/// (**ballot-monotonic** across restarts).
pub const BALLOT_FILE: &str = "ballot";

/// Durably records `ballot` as the replica's last accepted ballot: written
/// to a temporary file, fsynced, renamed over the old one, directory fsynced.
pub fn persist_ballot(dir: &std::path::Path, ballot: Ballot) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = dir.join("ballot.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(ballot.to_string().as_bytes())?;
    file.sync_data()?;
    std::fs::rename(&temporary, dir.join(BALLOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The ballot recorded by [`persist_ballot`] (0 when none was).
pub fn persisted_ballot(dir: &std::path::Path) -> Result<Ballot, String> {
    let path = dir.join(BALLOT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{} holds {text:?}, not a ballot", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Creates `path` and makes it durable: the file synced, then its directory.
fn create_durably(path: &std::path::Path) -> Result<(), String> {
    let file = std::fs::File::create(path)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    file.sync_all()
        .map_err(|error| format!("cannot sync {}: {error}", path.display()))?;
    sync_parent(path)
}

/// Removes `path` and makes the removal durable (its directory synced).
fn remove_durably(path: &std::path::Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(format!("cannot remove {}: {error}", path.display())),
    }
    sync_parent(path)
}

fn sync_parent(path: &std::path::Path) -> Result<(), String> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| format!("cannot sync {}: {error}", dir.display()))
}

/// Chunk 0 of a copy: the marker is made durable first (a crash from here
/// on leaves a replica that starts empty and learns again), then every
/// record is deleted and the applied decree set to 0.
fn start_copy(replica: &Replica) -> Result<(), String> {
    create_durably(&replica.dir.join(COPY_MARKER_FILE))?;
    replica.partition.discard_staged();
    let engine = replica.partition.engine();
    copy::clear(engine).map_err(|error| error.to_string())?;
    let mut reset = WriteBatch::new();
    reset.set_decree(0);
    engine.write(&reset).map_err(|error| error.to_string())
}

/// The last chunk of a copy is written: the applied decree is recorded and
/// flushed with the records, and only then the marker removed.
fn finish_copy(replica: &Replica, decree: Decree) -> Result<(), String> {
    let engine = replica.partition.engine();
    let mut applied = WriteBatch::new();
    applied.set_decree(decree as i64);
    engine.write(&applied).map_err(|error| error.to_string())?;
    engine.flush().map_err(|error| error.to_string())?;
    remove_durably(&replica.dir.join(COPY_MARKER_FILE))
}

/// A copy was abandoned: storage is made empty at decree 0, durably, and
/// the marker removed.
fn empty_storage(replica: &Replica) -> Result<(), String> {
    let engine = replica.partition.engine();
    copy::clear(engine).map_err(|error| error.to_string())?;
    let mut reset = WriteBatch::new();
    reset.set_decree(0);
    engine.write(&reset).map_err(|error| error.to_string())?;
    engine.flush().map_err(|error| error.to_string())?;
    remove_durably(&replica.dir.join(COPY_MARKER_FILE))
}

/// The write batch a mutation carries (the empty write carries none), with
/// the mutation's decree.
pub(super) fn batch_of(mutation: &Mutation) -> Result<WriteBatch, OpError> {
    let mut batch = if mutation.payload.is_empty() {
        WriteBatch::new()
    } else {
        WriteBatch::decode(&mutation.payload)?
    };
    batch.set_decree(mutation.decree as i64);
    Ok(batch)
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

/// A client write waiting for its decree to commit.
pub struct Waiting {
    body: ResponseBody,
    reply: oneshot::Sender<Response>,
}

/// A learner to answer from the log (the core's cache did not reach it).
#[derive(Clone, Copy, Debug)]
struct LearnRead {
    gpid: Gpid,
    to: NodeId,
    ballot: Ballot,
    learner_committed: Decree,
}

/// The committed mutations from `from + 1` on, contiguous and ending at
/// `committed` or once about `bytes_max` of payload is gathered, read from
/// `segments`; `None` when the log no longer holds them all (a copy is
/// needed). With `own_run` (the primary's run as primary began at or below
/// `from`), only records under that ballot or a later one are taken — each
/// is final — and the read stops as soon as it has enough; otherwise every
/// segment is read and a later record of a decree under a higher ballot
/// wins. Blocking: runs on the executor's blocking pool.
fn read_learned(
    segments: &[markab_shards::log::SegmentInfo],
    stream: (i32, i32),
    from: Decree,
    committed: Decree,
    own_run: Option<Ballot>,
    bytes_max: usize,
) -> Result<Option<Vec<Mutation>>, LogError> {
    let mut logged: BTreeMap<Decree, Mutation> = BTreeMap::new();
    let mut gathered_bytes = 0usize;
    for segment in segments {
        read_stream(
            std::slice::from_ref(segment),
            stream,
            from as i64,
            &mut |header, payload| {
                let decree = header.decree as Decree;
                if decree > committed {
                    return;
                }
                if let Some(ballot) = own_run {
                    let enough = gathered_bytes >= bytes_max
                        && logged
                            .last_key_value()
                            .is_some_and(|(last, _)| decree > *last);
                    if (header.ballot as Ballot) < ballot || enough {
                        return;
                    }
                }
                let Ok(mutation) = mutation_of_record(header, payload) else {
                    return;
                };
                // A later record of a decree under a higher ballot wins.
                if logged
                    .get(&decree)
                    .is_none_or(|held| held.ballot <= mutation.ballot)
                {
                    gathered_bytes += mutation.payload.len();
                    logged.insert(decree, mutation);
                }
            },
        )?;
        if own_run.is_some() && gathered_bytes >= bytes_max && contiguous_from(&logged, from) {
            break;
        }
    }
    let mut mutations = Vec::new();
    let mut bytes = 0usize;
    for decree in from + 1..=committed {
        let Some(mutation) = logged.remove(&decree) else {
            return Ok(None);
        };
        bytes += mutation.payload.len();
        mutations.push(mutation);
        if bytes >= bytes_max {
            break;
        }
    }
    Ok(Some(mutations))
}

/// Whether `logged` holds `from + 1` and what follows it without a gap up
/// to its last decree.
fn contiguous_from(logged: &BTreeMap<Decree, Mutation>, from: Decree) -> bool {
    logged
        .keys()
        .enumerate()
        .all(|(index, decree)| *decree == from + 1 + index as Decree)
        && !logged.is_empty()
}

/// A replicated record waiting to be appended to the shard's log.
struct Backlogged {
    gpid: Gpid,
    header: RecordHeader,
    payload: Vec<u8>,
}

/// A copy a learner is receiving.
#[derive(Clone, Copy, Debug)]
struct IncomingCopy {
    ballot: Ballot,
    decree: Decree,
    next_sequence: u64,
}

/// A replica's replication state on its shard.
pub struct ReplicaHost {
    pub core: RefCell<ReplicaCore>,
    waiting: RefCell<HashMap<Token, Waiting>>,
    /// The listener address of each member's shard hosting the partition.
    addresses: RefCell<HashMap<NodeId, String>>,
    /// Learner: the copy being installed, if any.
    incoming: RefCell<Option<IncomingCopy>>,
}

impl ReplicaHost {
    pub fn new(core: ReplicaCore) -> ReplicaHost {
        ReplicaHost {
            core: RefCell::new(core),
            waiting: RefCell::new(HashMap::new()),
            addresses: RefCell::new(HashMap::new()),
            incoming: RefCell::new(None),
        }
    }

    /// Answers every waiting client write `UNKNOWN_OUTCOME`: the replica
    /// stopped, and a write that got a decree may still commit elsewhere.
    pub fn fail_waiting(&self) {
        let waiting: Vec<Waiting> = self.waiting.borrow_mut().drain().map(|(_, w)| w).collect();
        for write in waiting {
            let _ = write.reply.send(Err(OpError::new(
                ErrorCode::UnknownOutcome,
                "the replica stopped before the write's outcome was known",
            )));
        }
    }

    /// The wire role of the replica.
    pub fn wire_role(&self) -> ReplicaRole {
        match self.core.borrow().role() {
            Role::Primary => ReplicaRole::Primary,
            Role::Secondary => ReplicaRole::Secondary,
            Role::Learner => ReplicaRole::Learner,
            Role::Inactive => ReplicaRole::Inactive,
        }
    }
}

/// A shard's replication machinery (cluster mode only).
pub struct Replication {
    /// This node's id as meta knows it (`host:port` of shard 0).
    pub node_name: String,
    /// This shard's listener address (where peers send to its replicas).
    pub shard_address: String,
    pub settings: ReplicationSettings,
    /// Node names interned to the cores' [`NodeId`]s (shard-local).
    names: RefCell<Vec<String>>,
    tokens: Cell<Token>,
    pub links: PeerLinks,
    /// Appends waiting for the log to be durable past them, in log order.
    appended: RefCell<VecDeque<(LogPosition, Gpid, Ballot, Decree)>>,
    /// Records the log refused for being over its pending bound (`BUSY`),
    /// in the order the cores emitted them; the durability pump appends
    /// them as the log drains (**no-lost-append**). While any wait, later
    /// records queue behind them and client writes are refused `BUSY`
    /// before they get a decree, so the queue is bounded by what the cores
    /// already decided (prepare windows, learn responses).
    backlog: RefCell<VecDeque<Backlogged>>,
    /// Wakes the durability pump.
    pump_wake: RefCell<Option<oneshot::Sender<()>>>,
    /// Ticker rounds so far.
    ticks: Cell<u64>,
    /// The batch of the client write being fed, so its `AppendLog` stages
    /// it without decoding the payload again.
    staging: RefCell<Option<WriteBatch>>,
    /// Copies to learners for the copy pump (the ballot they are sent for).
    copies: LearnerJobs<Ballot>,
    /// Learners whose copy started at a decree: log GC keeps this
    /// partition's records above it until the learner caught up from the
    /// log, stopped being a learner, or this replica stopped being primary
    /// (**copy-pins-log**, bounded: see `collect_log_garbage`).
    pub(super) copy_pins: RefCell<HashMap<(Gpid, NodeId), Decree>>,
    /// Learners to answer from the log, for the learn pump.
    learn_reads: LearnerJobs<LearnRead>,
}

/// Work for learners, in order, at most one job per learner of a partition
/// queued or running (a learner's retries start no second one), with the
/// waker of the pump that does it.
struct LearnerJobs<T> {
    queue: RefCell<VecDeque<((Gpid, NodeId), T)>>,
    active: RefCell<HashSet<(Gpid, NodeId)>>,
    wake: RefCell<Option<oneshot::Sender<()>>>,
}

impl<T> LearnerJobs<T> {
    fn new() -> LearnerJobs<T> {
        LearnerJobs {
            queue: RefCell::new(VecDeque::new()),
            active: RefCell::new(HashSet::new()),
            wake: RefCell::new(None),
        }
    }

    /// Queues `job` for learner `to` of `gpid` unless one is queued or
    /// running; whether it was queued.
    fn offer(&self, gpid: Gpid, to: NodeId, job: T) -> bool {
        if !self.active.borrow_mut().insert((gpid, to)) {
            return false;
        }
        self.queue.borrow_mut().push_back(((gpid, to), job));
        if let Some(wake) = self.wake.borrow_mut().take() {
            let _ = wake.send(());
        }
        true
    }

    /// The next job, waiting for one; `None` once the shard stops.
    async fn next(&self) -> Option<((Gpid, NodeId), T)> {
        loop {
            if let Some(job) = self.queue.borrow_mut().pop_front() {
                return Some(job);
            }
            let (wake, woken) = oneshot::channel();
            *self.wake.borrow_mut() = Some(wake);
            woken.await.ok()?;
        }
    }

    /// The job for learner `key` is over.
    fn done(&self, key: (Gpid, NodeId)) {
        self.active.borrow_mut().remove(&key);
    }
}

impl Replication {
    pub fn new(node_name: String, shard_address: String, settings: ReplicationSettings) -> Self {
        Replication {
            node_name,
            shard_address,
            settings,
            names: RefCell::new(Vec::new()),
            tokens: Cell::new(0),
            links: PeerLinks::new(),
            appended: RefCell::new(VecDeque::new()),
            backlog: RefCell::new(VecDeque::new()),
            pump_wake: RefCell::new(None),
            ticks: Cell::new(0),
            staging: RefCell::new(None),
            copies: LearnerJobs::new(),
            copy_pins: RefCell::new(HashMap::new()),
            learn_reads: LearnerJobs::new(),
        }
    }

    /// The [`NodeId`] of node `name`, interning it on first sight.
    pub fn id(&self, name: &str) -> NodeId {
        let mut names = self.names.borrow_mut();
        let index = match names.iter().position(|known| known == name) {
            Some(index) => index,
            None => {
                names.push(name.to_owned());
                names.len() - 1
            }
        };
        NodeId(index as u32)
    }

    fn name(&self, id: NodeId) -> String {
        self.names.borrow()[id.0 as usize].clone()
    }

    /// This node's own id.
    pub fn me(&self) -> NodeId {
        self.id(&self.node_name)
    }
}

impl ShardState {
    fn replication(&self) -> &Replication {
        self.replication
            .as_ref()
            .expect("replicated paths run in cluster mode only")
    }

    /// Feeds `input` to `gpid`'s core and carries out what it decides, in
    /// order — until the replica fails: nothing more happens under a
    /// ballot that could not be persisted, or on storage that failed
    /// (**stop-on-failure**).
    pub(super) fn feed(&self, gpid: Gpid, replica: &Rc<Replica>, input: Input) {
        let Some(host) = &replica.host else { return };
        if replica.is_failed() {
            return;
        }
        let outputs = host.core.borrow_mut().handle(input, clock_ms());
        for output in outputs {
            self.carry_out(gpid, replica, host, output);
            if replica.is_failed() {
                host.fail_waiting();
                return;
            }
        }
    }

    fn carry_out(&self, gpid: Gpid, replica: &Rc<Replica>, host: &ReplicaHost, output: Output) {
        let replication = self.replication();
        match output {
            Output::RoleChanged { role, ballot } => {
                // Before anything happens under the new ballot.
                if ballot > replica.ballot_persisted.get() {
                    let dir = &replica.dir;
                    match persist_ballot(dir, ballot) {
                        Ok(()) => replica.ballot_persisted.set(ballot),
                        Err(error) => replica.fail(
                            gpid,
                            format!(
                                "cannot record ballot {ballot} in {}: {error}",
                                dir.display()
                            ),
                        ),
                    }
                }
                if role == Role::Primary {
                    // A new primary re-stages its tail from the appends that follow.
                    replica.partition.discard_staged();
                }
                let copy_ballot = host.incoming.borrow().map(|copy| copy.ballot);
                if copy_ballot.is_some_and(|copy_ballot| copy_ballot != ballot) {
                    // A copy is sent for one ballot: the core dropped it
                    // with the configuration; storage follows.
                    self.abort_copy(gpid, replica, host, "the ballot changed");
                }
                tracing::info!(
                    app_id = gpid.app_id,
                    partition = gpid.partition_index,
                    ?role,
                    ballot,
                    "replica role changed"
                );
                self.publish(gpid, replica);
            }
            Output::AppendLog(mutation) => {
                let staged = replication.staging.borrow_mut().take();
                if let Some(batch) = staged.filter(|_| !mutation.payload.is_empty()) {
                    replica.partition.stage(mutation.decree as i64, &batch);
                } else if host.core.borrow().role() == Role::Primary && !mutation.payload.is_empty()
                {
                    match WriteBatch::decode(&mutation.payload) {
                        Ok(batch) => replica.partition.stage(mutation.decree as i64, &batch),
                        Err(error) => replica.fail(
                            gpid,
                            format!("decree {} does not decode: {error}", mutation.decree),
                        ),
                    }
                }
                let record = Backlogged {
                    gpid,
                    header: RecordHeader {
                        app_id: gpid.app_id,
                        partition_index: gpid.partition_index,
                        ballot: mutation.ballot as i64,
                        decree: mutation.decree as i64,
                    },
                    payload: log_payload(&mutation),
                };
                self.append_replicated(replica, record);
            }
            Output::Send { to, message } => {
                let request =
                    peer::to_wire(message, &replication.node_name, &replication.shard_address);
                self.send_peer(gpid, host, to, request);
            }
            Output::Apply(mutation) => {
                let result = batch_of(&mutation).and_then(|batch| replica.partition.apply(&batch));
                match result {
                    Ok(()) => replica.decree_last.set(mutation.decree as i64),
                    Err(error) => replica.fail(
                        gpid,
                        format!("applying decree {} failed: {error}", mutation.decree),
                    ),
                }
            }
            Output::WriteReply { token, result } => {
                if let Some(waiting) = host.waiting.borrow_mut().remove(&token) {
                    let response = match result {
                        Ok(_) => match replica.check_serving(gpid) {
                            Ok(()) => Ok(waiting.body),
                            Err(error) => Err(error),
                        },
                        Err(error) => Err(write_error(error)),
                    };
                    let _ = waiting.reply.send(response);
                }
            }
            Output::ReadReply { .. } => {}
            Output::LearnFromStorage {
                to,
                ballot,
                learner_committed,
            } => self.learn_from_storage(gpid, to, ballot, learner_committed),
            Output::ToMeta(request) => {
                let request = match request {
                    MetaRequest::RemoveSecondary { ballot, node } => Request::RemoveSecondary {
                        gpid,
                        ballot: ballot as i64,
                        node: replication.name(node),
                    },
                    MetaRequest::UpgradeLearner { ballot, node } => Request::UpgradeLearner {
                        gpid,
                        ballot: ballot as i64,
                        node: replication.name(node),
                    },
                };
                self.layout.meta_requests.push(request);
            }
        }
    }

    /// Appends a replicated record to the shard's log, or — when the log is
    /// over its pending bound, or earlier records already wait — queues it
    /// for the durability pump (**no-lost-append**: a decree the core
    /// logged is never forgotten; its `LogDurable` comes once it is
    /// durable). Any other log error stops the replica.
    fn append_replicated(&self, replica: &Replica, record: Backlogged) {
        let replication = self.replication();
        if replication.backlog.borrow().is_empty() {
            match self.log.append(&record.header, &record.payload) {
                Ok(position) => {
                    self.note_appended(position, &record);
                    return;
                }
                Err(LogError::Busy { .. }) => {}
                Err(error) => {
                    replica.fail(record.gpid, format!("mutation log: {error}"));
                    return;
                }
            }
        }
        replication.backlog.borrow_mut().push_back(record);
        if let Some(wake) = replication.pump_wake.borrow_mut().take() {
            let _ = wake.send(());
        }
    }

    fn note_appended(&self, position: LogPosition, record: &Backlogged) {
        let replication = self.replication();
        replication.appended.borrow_mut().push_back((
            position,
            record.gpid,
            record.header.ballot as Ballot,
            record.header.decree as Decree,
        ));
        if let Some(wake) = replication.pump_wake.borrow_mut().take() {
            let _ = wake.send(());
        }
    }

    /// Appends queued records, in order, while the log takes them.
    fn drain_backlog(&self) {
        let replication = self.replication();
        loop {
            let appended = {
                let backlog = replication.backlog.borrow();
                let Some(record) = backlog.front() else {
                    return;
                };
                self.log.append(&record.header, &record.payload)
            };
            let record = match appended {
                Err(LogError::Busy { .. }) => return,
                _ => replication
                    .backlog
                    .borrow_mut()
                    .pop_front()
                    .expect("front seen above"),
            };
            match appended {
                Ok(position) => self.note_appended(position, &record),
                Err(error) => {
                    let replica = self.replicas.borrow().get(&record.gpid).cloned();
                    if let Some(replica) = replica {
                        replica.fail(record.gpid, format!("mutation log: {error}"));
                    }
                }
            }
        }
    }

    /// Publishes the replica's role and decrees in the node-wide registry
    /// (what beacons report).
    pub(super) fn publish(&self, gpid: Gpid, replica: &Replica) {
        let Some(host) = &replica.host else { return };
        let (ballot, prepared, committed) = {
            let core = host.core.borrow();
            (
                core.ballot() as i64,
                core.last_prepared() as i64,
                core.last_committed() as i64,
            )
        };
        let role = host.wire_role();
        let mut hosted = self.layout.hosted.write().expect("hosted registry lock");
        if let Some(entry) = hosted.get_mut(&gpid) {
            entry.ballot = ballot;
            entry.role = role;
            entry.decree_prepared = prepared;
            entry.decree_committed = committed;
            entry.decree_applied = replica.decree_last.get();
        }
    }

    /// A client write in cluster mode: refused at once unless this replica
    /// is a serving primary with enough members; otherwise prepared into a
    /// batch, proposed to the core, and answered once committed.
    pub(super) async fn serve_replicated_write(
        &self,
        gpid: Gpid,
        replica: Rc<Replica>,
        request: &Request,
    ) -> Response {
        let host = replica.host.as_ref().expect("cluster-mode replica");
        {
            let core = host.core.borrow();
            core.serving_check(clock_ms())
                .map_err(|error| write_error(error.into()))?;
            let members = core.config().member_count();
            // A table of fewer replicas than the bound needs only all of them.
            let min_alive = (self.layout.replica_count_min_alive.load(Ordering::Relaxed))
                .min(replica.replica_count.get())
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
        }
        let replication = self.replication();
        if !replication.backlog.borrow().is_empty() {
            return Err(OpError::new(
                ErrorCode::Busy,
                "the shard's mutation log is full of unsynced writes: the write was not executed; retry",
            ));
        }
        let (batch, body) = replica
            .partition
            .prepare_write(request, crate::key::now_epoch_s())?;
        // A failed check writes nothing, but its answer may rest on staged
        // writes: the empty write commits only after all of them.
        let payload = if batch.is_empty() {
            Vec::new()
        } else {
            batch.encode()
        };
        let record_bytes = COMMITTED_PREFIX_BYTES + payload.len();
        if record_bytes > self.log.payload_bytes_max() {
            return Err(OpError::new(
                ErrorCode::RequestTooLarge,
                format!(
                    "the write's log record of {record_bytes} bytes exceeds the mutation log's maximum of {} bytes (tuning log_segment_bytes): the write was not executed",
                    self.log.payload_bytes_max()
                ),
            ));
        }
        if !batch.is_empty() {
            *replication.staging.borrow_mut() = Some(batch);
        }
        let token = replication.tokens.get() + 1;
        replication.tokens.set(token);
        let (reply, reply_received) = oneshot::channel();
        host.waiting
            .borrow_mut()
            .insert(token, Waiting { body, reply });
        self.feed(gpid, &replica, Input::ClientWrite { token, payload });
        // Refused writes leave the batch unstaged.
        replication.staging.borrow_mut().take();
        reply_received.await.unwrap_or_else(|_| {
            Err(OpError::new(
                ErrorCode::UnknownOutcome,
                "the replica stopped before the write's outcome was known",
            ))
        })
    }

    /// Whether a read may be served now: only at an activated primary
    /// within its lease.
    pub(super) fn check_replicated_read(&self, replica: &Replica) -> Result<(), OpError> {
        let Some(host) = &replica.host else {
            return Ok(());
        };
        host.core
            .borrow()
            .serving_check(clock_ms())
            .map_err(|error| {
                OpError::new(
                    ErrorCode::NotPrimary,
                    format!("{error}: refresh the route and retry"),
                )
            })
    }

    /// A peer message for `gpid` (dropped when the replica is not hosted
    /// here: the sender's timers resend).
    pub fn on_peer(&self, gpid: Gpid, request: PeerRequest) {
        if self.replication.is_none() {
            return;
        }
        let Some(replica) = self.replicas.borrow().get(&gpid).cloned() else {
            tracing::debug!(
                app_id = gpid.app_id,
                partition = gpid.partition_index,
                "peer message for a replica not hosted here"
            );
            return;
        };
        let Some(host) = &replica.host else { return };
        if replica.failure().is_some() {
            return;
        }
        let from = self.replication().id(&request.from);
        // Learn where the sender's replica listens; no allocation when
        // nothing changed (the common case: every Prepare and ack).
        let known = host.addresses.borrow().get(&from) == Some(&request.from_address);
        if !known && !request.from_address.is_empty() {
            host.addresses
                .borrow_mut()
                .insert(from, request.from_address.clone());
        }
        match peer::from_wire(request) {
            Ok(Incoming::Core(message)) => self.feed(gpid, &replica, Input::Peer { from, message }),
            Ok(Incoming::Chunk(chunk)) => self.on_copy_chunk(gpid, &replica, host, chunk),
            Err(reason) => tracing::warn!(%reason, "dropped a malformed peer message"),
        }
    }

    /// A configuration from meta for a replica this shard hosts.
    pub fn on_assignment(&self, assignment: &ReplicaAssignment) {
        let gpid = Gpid {
            app_id: assignment.app_id,
            partition_index: assignment.partition_index,
        };
        let Some(replica) = self.replicas.borrow().get(&gpid).cloned() else {
            return;
        };
        let Some(host) = &replica.host else { return };
        replica.replica_count.set(assignment.replica_count);
        let replication = self.replication();
        let primary = replication.id(&assignment.primary);
        // Sorted and without duplicates, as configurations are.
        let ids = |names: &[String]| -> Vec<NodeId> {
            let mut ids: Vec<NodeId> = names.iter().map(|name| replication.id(name)).collect();
            ids.sort();
            ids.dedup();
            ids
        };
        let secondaries = ids(&assignment.secondaries);
        let learners = ids(&assignment.learners);
        {
            let mut addresses = host.addresses.borrow_mut();
            let members = std::iter::once(&assignment.primary)
                .chain(&assignment.secondaries)
                .chain(&assignment.learners);
            for (name, address) in members.zip(&assignment.member_addresses) {
                addresses.insert(replication.id(name), address.clone());
            }
        }
        let config = PartitionConfig {
            ballot: assignment.ballot.max(0) as Ballot,
            primary: Some(primary),
            secondaries,
            learners,
        };
        if config.ballot > host.core.borrow().config().ballot {
            self.feed(gpid, &replica, Input::Config(config));
            self.publish(gpid, &replica);
        }
    }

    /// Sends `message` to member `to` of `gpid` (dropped when its address is
    /// unknown: the sender's timers retry).
    fn send_peer(&self, gpid: Gpid, host: &ReplicaHost, to: NodeId, message: PeerRequest) {
        let replication = self.replication();
        match host.addresses.borrow().get(&to) {
            Some(address) => replication.links.send(address, gpid, message),
            None => tracing::debug!(node = %replication.name(to), "no address for a peer"),
        }
    }

    /// Primary: the core's learn cache does not reach back to learner
    /// `to`'s commit point. The log is read for it by the shard's learn
    /// pump, off the executor (one read per learner at a time).
    fn learn_from_storage(
        &self,
        gpid: Gpid,
        to: NodeId,
        ballot: Ballot,
        learner_committed: Decree,
    ) {
        let read = LearnRead {
            gpid,
            to,
            ballot,
            learner_committed,
        };
        self.replication().learn_reads.offer(gpid, to, read);
    }

    /// Answers queued learners from the log, one read at a time; runs until
    /// the shard stops.
    pub async fn learn_pump(self: &ShardState) {
        let reads = &self.replication().learn_reads;
        while let Some((key, job)) = reads.next().await {
            self.answer_from_log(&job).await;
            reads.done(key);
        }
    }

    /// Reads the log for one learner on the executor's blocking pool and
    /// answers it with a `LearnResponse` of at most
    /// [`LEARN_RESPONSE_BYTES_MAX`] (the learner asks again for the rest)
    /// when the log still holds the decrees it misses, else queues a copy.
    /// When the learner's commit point is at or above where this
    /// primary's run began ([`ReplicaCore::primary_since`], as it is after
    /// a copy), the read takes records of this run only and stops once it
    /// has enough, so catching up after a copy costs one short read per
    /// response however long the log; otherwise it reads every segment
    /// above the learner's point, at most [`LEARN_LOG_READ_BYTES_MAX`].
    async fn answer_from_log(&self, job: &LearnRead) {
        let replication = self.replication();
        let Some(replica) = self.replicas.borrow().get(&job.gpid).cloned() else {
            return;
        };
        let Some(host) = &replica.host else { return };
        let (last_committed, since) = {
            let core = host.core.borrow();
            if core.role() != Role::Primary || core.ballot() != job.ballot {
                return;
            }
            (core.last_committed(), core.primary_since())
        };
        let stream = (job.gpid.app_id, job.gpid.partition_index);
        let from = job.learner_committed;
        let segments: Vec<_> = self
            .log
            .segments()
            .into_iter()
            .filter(|segment| {
                segment
                    .decree_max
                    .get(&stream)
                    .is_some_and(|decree_max| *decree_max > from as i64)
            })
            .collect();
        let own_run = since
            .filter(|(_, began_at)| from >= *began_at)
            .map(|(ballot, _)| ballot);
        let to_read: u64 = segments.iter().map(|segment| segment.bytes()).sum();
        let read = if own_run.is_none() && to_read > LEARN_LOG_READ_BYTES_MAX {
            Ok(None)
        } else {
            glommio::executor()
                .spawn_blocking(move || {
                    read_learned(
                        &segments,
                        stream,
                        from,
                        last_committed,
                        own_run,
                        LEARN_RESPONSE_BYTES_MAX,
                    )
                })
                .await
        };
        {
            let core = host.core.borrow();
            if core.role() != Role::Primary || core.ballot() != job.ballot {
                return;
            }
        }
        match read {
            Ok(Some(mutations)) => {
                tracing::info!(app_id = job.gpid.app_id, partition = job.gpid.partition_index, learner = %replication.name(job.to), from = from + 1, mutations = mutations.len(), "learner learns from the log");
                let message = PeerMessage::LearnResponse {
                    ballot: job.ballot,
                    committed_decree: last_committed,
                    mutations,
                };
                let request =
                    peer::to_wire(message, &replication.node_name, &replication.shard_address);
                self.send_peer(job.gpid, host, job.to, request);
            }
            Ok(None) => self.queue_copy(job.gpid, job.to, job.ballot),
            Err(error) => {
                tracing::warn!(%error, "cannot read the log for a learner");
                self.queue_copy(job.gpid, job.to, job.ballot);
            }
        }
    }

    /// Queues a copy of the applied records for learner `to` (one at a
    /// time per learner).
    fn queue_copy(&self, gpid: Gpid, to: NodeId, ballot: Ballot) {
        let replication = self.replication();
        if replication.copies.offer(gpid, to, ballot) {
            tracing::info!(app_id = gpid.app_id, partition = gpid.partition_index, learner = %replication.name(to), "learner needs a copy of the records");
        }
    }

    /// Sends the queued copies to learners, one at a time, in chunks of
    /// [`COPY_CHUNK_BYTES`] paced to [`COPY_BYTES_PER_SECOND`]; runs until
    /// the shard stops. A copy stops early when this replica stops being
    /// the primary at the copy's ballot.
    pub async fn copy_pump(self: &ShardState) {
        let copies = &self.replication().copies;
        while let Some(((gpid, to), ballot)) = copies.next().await {
            if let Err(reason) = self.send_copy(gpid, to, ballot).await {
                tracing::warn!(app_id = gpid.app_id, partition = gpid.partition_index, %reason, "copy to a learner stopped");
            }
            copies.done((gpid, to));
        }
    }

    async fn send_copy(&self, gpid: Gpid, to: NodeId, ballot: Ballot) -> Result<(), String> {
        let replication = self.replication();
        let Some(replica) = self.replicas.borrow().get(&gpid).cloned() else {
            return Err("the replica is gone".to_owned());
        };
        let host = replica.host.as_ref().ok_or("not replicated")?;
        // Applied (= committed at a primary) when the copy starts; the
        // learner applies every later mutation again (see storage::copy),
        // learning them from this log, which keeps them meanwhile.
        let decree = replica.decree_last.get().max(0) as Decree;
        replication
            .copy_pins
            .borrow_mut()
            .insert((gpid, to), decree);
        let started = Instant::now();
        let mut after: Option<Vec<u8>> = None;
        let mut sequence = 0u64;
        let mut bytes_sent = 0u64;
        loop {
            {
                let core = host.core.borrow();
                if core.role() != Role::Primary || core.ballot() != ballot {
                    return Err("no longer the primary at the copy's ballot".to_owned());
                }
            }
            let (batch, next) = copy::export_chunk(
                replica.partition.engine(),
                after.as_deref(),
                COPY_CHUNK_BYTES,
            )
            .map_err(|error| error.to_string())?;
            let last = next.is_none();
            let encoded = batch.encode();
            bytes_sent += encoded.len() as u64;
            let chunk = CopyChunk {
                ballot,
                decree,
                sequence,
                last,
                batch: encoded,
            };
            let request =
                peer::chunk_to_wire(chunk, &replication.node_name, &replication.shard_address);
            self.send_peer(gpid, host, to, request);
            if last {
                tracing::info!(app_id = gpid.app_id, partition = gpid.partition_index, learner = %replication.name(to), decree, chunks = sequence + 1, bytes = bytes_sent, "copy sent");
                return Ok(());
            }
            after = next;
            sequence += 1;
            // Pace to the rate limit.
            let due = std::time::Duration::from_secs_f64(
                bytes_sent as f64 / COPY_BYTES_PER_SECOND as f64,
            );
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                glommio::timer::sleep(wait).await;
            }
        }
    }

    /// Learner: one chunk of a copy from the primary. Chunk 0 makes a
    /// marker file durable, clears the replica's records and tells the core
    /// at once (**copy-known-to-core**: its commit point drops to 0 and it
    /// applies nothing until the copy is installed). Chunks must follow in
    /// order; a lost one empties storage again and tells the core the copy
    /// was aborted (the primary's next copy starts over). The last chunk
    /// makes the copy durable (applied decree, flush, marker removed) and
    /// feeds `CheckpointInstalled`.
    fn on_copy_chunk(
        &self,
        gpid: Gpid,
        replica: &Rc<Replica>,
        host: &ReplicaHost,
        chunk: CopyChunk,
    ) {
        if !host
            .core
            .borrow()
            .accepts_checkpoint(chunk.ballot, chunk.decree)
        {
            return;
        }
        if chunk.sequence == 0 {
            if let Err(reason) = start_copy(replica) {
                replica.fail(gpid, reason);
                return;
            }
            replica.decree_last.set(0);
            *host.incoming.borrow_mut() = Some(IncomingCopy {
                ballot: chunk.ballot,
                decree: chunk.decree,
                next_sequence: 0,
            });
            self.feed(
                gpid,
                replica,
                Input::CopyStarted {
                    ballot: chunk.ballot,
                    decree: chunk.decree,
                },
            );
        }
        let in_order = {
            let mut incoming = host.incoming.borrow_mut();
            match incoming.as_mut() {
                Some(copy)
                    if copy.ballot == chunk.ballot
                        && copy.decree == chunk.decree
                        && copy.next_sequence == chunk.sequence =>
                {
                    copy.next_sequence += 1;
                    true
                }
                _ => false,
            }
        };
        if !in_order {
            if host.incoming.borrow().is_some() {
                self.abort_copy(gpid, replica, host, "a chunk was lost");
            }
            return;
        }
        let engine = replica.partition.engine();
        let written = WriteBatch::decode(&chunk.batch)
            .and_then(|batch| engine.write(&batch))
            .map_err(|error| error.to_string());
        if let Err(reason) = written {
            self.abort_copy(gpid, replica, host, &reason);
            return;
        }
        if !chunk.last {
            return;
        }
        *host.incoming.borrow_mut() = None;
        if let Err(reason) = finish_copy(replica, chunk.decree) {
            replica.fail(gpid, reason);
            return;
        }
        replica.decree_last.set(chunk.decree as i64);
        tracing::info!(
            app_id = gpid.app_id,
            partition = gpid.partition_index,
            decree = chunk.decree,
            "installed a copy from the primary"
        );
        self.feed(
            gpid,
            replica,
            Input::CheckpointInstalled {
                ballot: chunk.ballot,
                decree: chunk.decree,
            },
        );
        self.publish(gpid, replica);
    }

    /// A copy being installed will not complete: storage is emptied again,
    /// durably (so it matches the core's commit point of 0), and the core
    /// is told, so it learns again from scratch.
    fn abort_copy(&self, gpid: Gpid, replica: &Rc<Replica>, host: &ReplicaHost, why: &str) {
        let Some(copy) = host.incoming.borrow_mut().take() else {
            return;
        };
        tracing::warn!(
            app_id = gpid.app_id,
            partition = gpid.partition_index,
            decree = copy.decree,
            why,
            "dropped a copy being installed"
        );
        match empty_storage(replica) {
            Ok(()) => {
                replica.decree_last.set(0);
                self.feed(
                    gpid,
                    replica,
                    Input::CopyAborted {
                        ballot: copy.ballot,
                    },
                );
            }
            Err(reason) => replica.fail(gpid, reason),
        }
    }

    /// The ticker: feeds the time to every core, refreshes the registry
    /// beacons read, and stamps the shard as alive for the beacon thread.
    pub fn tick_replicas(&self) {
        self.layout.shard_ticked_ms[self.shard].store(clock_ms(), Ordering::Relaxed);
        let replication = self.replication();
        let ticks = replication.ticks.get() + 1;
        replication.ticks.set(ticks);
        // Beacons read the registry every beacon interval; refreshing it
        // every few ticks is enough (role changes publish at once).
        let publish = ticks.is_multiple_of(PUBLISH_EVERY_TICKS);
        for (gpid, replica) in self.replicas() {
            if replica.host.is_none() || replica.failure().is_some() {
                continue;
            }
            self.feed(gpid, &replica, Input::Tick);
            if publish {
                self.publish(gpid, &replica);
            }
        }
    }

    /// Reports `LogDurable` for every append the log has made durable; runs
    /// until the shard stops. One pump per shard: each pass waits for the
    /// newest append, which covers every earlier one.
    pub async fn durability_pump(self: &ShardState) {
        let replication = self.replication();
        loop {
            self.drain_backlog();
            let newest = replication
                .appended
                .borrow()
                .back()
                .map(|(position, ..)| *position);
            let Some(newest) = newest else {
                if !replication.backlog.borrow().is_empty() {
                    // Busy with nothing of ours pending: another appender
                    // fills the log; try again shortly.
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                    continue;
                }
                let (wake, woken) = oneshot::channel();
                *replication.pump_wake.borrow_mut() = Some(wake);
                if woken.await.is_err() {
                    return;
                }
                continue;
            };
            if let Err(error) = self.log.wait_durable(newest).await {
                tracing::error!(shard = self.shard, %error, "the mutation log failed; replicas stop");
                for (gpid, replica) in self.replicas() {
                    replica.fail(gpid, format!("mutation log: {error}"));
                }
                return;
            }
            let durable = self.log.durable();
            loop {
                let next = {
                    let mut appended = replication.appended.borrow_mut();
                    match appended.front() {
                        Some((position, ..)) if *position <= durable => appended.pop_front(),
                        _ => None,
                    }
                };
                let Some((_, gpid, ballot, decree)) = next else {
                    break;
                };
                let replica = self.replicas.borrow().get(&gpid).cloned();
                if let Some(replica) = replica {
                    self.feed(gpid, &replica, Input::LogDurable { ballot, decree });
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
