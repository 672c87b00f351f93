//! The simulated world's vocabulary: addresses, messages, events and the
//! fault settings drawn per seed.

use markab_core::check::KvInput;
use markab_core::host::dup::ShipBatch;
use markab_core::host::CopyJob;
use markab_core::meta::leader::Leadership;
use markab_core::replication::messages::NodeId;
use markab_core::wire::message::{BeaconAck, Gpid, NodeBeacon, PeerRequest, Request, Response};

/// Partition index inside the simulated table.
pub type PartitionId = u32;

/// Who sends and receives messages (link cuts are between these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    /// Meta `i` of the group (`Meta(0)`: the sole meta).
    Meta(usize),
    Node(NodeId),
    Client(usize),
    /// The remote cluster a duplication ships to (docs/duplication.md).
    Remote,
}

/// What a client is told about its request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Executed: the storage layer's answer.
    Done(Response),
    /// Definitely not executed (not primary, lease, busy, ...).
    Refused(String),
    /// May or may not take effect.
    Unknown,
}

/// Everything that travels on the simulated network.
#[derive(Clone, Debug)]
pub enum Msg {
    /// A replica-to-replica message for the shard listening at `address`.
    Peer {
        gpid: Gpid,
        address: String,
        request: PeerRequest,
    },
    Beacon {
        /// When the node sent it, on its own clock (leases count from it).
        sent_ms: u64,
        beacon: NodeBeacon,
    },
    BeaconAck {
        sent_ms: u64,
        ack: BeaconAck,
    },
    /// A primary's request to meta (remove a secondary, promote a learner).
    ToMeta(Request),
    /// A meta that does not serve answers a beacon or a request: the
    /// leader's address, empty when it knows none.
    NotLeader {
        leader: String,
    },
    Request {
        op: u64,
        gpid: Gpid,
        /// The route version: the partition count the client routed by.
        partition_count: i32,
        request: Request,
    },
    Reply {
        op: u64,
        reply: Reply,
    },
    /// A primary's shipped batch to the remote cluster.
    Duplicate {
        incarnation: u64,
        batch: Box<ShipBatch>,
    },
    /// The remote cluster's answer to a batch (its mutations left out).
    DupAck {
        incarnation: u64,
        batch: Box<ShipBatch>,
        result: Result<(), String>,
    },
}

/// A scheduled happening. Node events carry the incarnation they belong
/// to: a restarted node ignores its previous life's.
#[derive(Clone, Debug)]
pub enum Event {
    Deliver {
        from: Addr,
        to: Addr,
        msg: Msg,
    },
    /// A group commit of shard `shard`'s log finishes: every record up to
    /// position `upto` is durable.
    LogSync {
        node: NodeId,
        incarnation: u64,
        shard: usize,
        upto: u64,
    },
    /// The node's learn-read pool takes the next learner of `shard`.
    LearnRead {
        node: NodeId,
        incarnation: u64,
        shard: usize,
    },
    /// The node's copy pool takes the next copy of `shard`.
    CopyStart {
        node: NodeId,
        incarnation: u64,
        shard: usize,
    },
    /// The next chunk of a copy.
    CopyStep {
        node: NodeId,
        incarnation: u64,
        shard: usize,
        job: CopyJob,
    },
    NodeTick {
        node: NodeId,
        incarnation: u64,
    },
    Beacon {
        node: NodeId,
        incarnation: u64,
        /// One beacon an ack asked for sooner (**switch-beacons-soon**):
        /// it schedules no next one (the regular beacons go on).
        early: bool,
    },
    MetaTick,
    FaultTick,
    ClientStep {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        op: u64,
    },
    Restart {
        node: NodeId,
    },
    /// A replica of the node stopped (its ballot could not be recorded):
    /// the supervisor restarts the process.
    SupervisorRestart {
        node: NodeId,
        incarnation: u64,
    },
    /// Meta `meta` restarts (a sole meta from its store).
    MetaRestart {
        meta: usize,
    },
    /// Meta `meta` of a group sends its etcd session a keepalive (its
    /// life: a restarted meta ignores its previous life's).
    MetaKeepalive {
        meta: usize,
        life: u64,
    },
    /// The keepalive meta `meta` sent at `sent_ms` reaches etcd.
    EtcdKeepalive {
        meta: usize,
        sent_ms: u64,
        life: u64,
    },
    /// What meta `meta`'s campaign learns from etcd (a keepalive's answer
    /// or the election's watch), in etcd's order `seq`.
    Campaign {
        meta: usize,
        life: u64,
        seq: u64,
        leadership: Leadership,
    },
    /// etcd ends the sessions whose time is up and elects a leader.
    EtcdTick,
    /// An operator asks meta for a backup of the table (docs/backup.md).
    BackupStart,
    /// Meta's store saves again.
    StoreHeals,
    /// An operator asks meta to start, pause, restart or cancel a split
    /// of the table (docs/split.md).
    Split(SplitStep),
    /// An operator adds a duplication of the table to the remote cluster.
    DupAdd,
}

/// An operator's split request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitStep {
    Start,
    Pause,
    Restart,
    Cancel,
}

/// What the operator does with splits in a seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitPlan {
    /// Starts a split to twice the count.
    Once,
    /// Starts one, pauses it and restarts it.
    PauseRestart,
    /// Starts one and cancels it (too late if it committed first).
    Cancel,
    /// Starts one and, once it committed, another.
    Twice,
}

/// Per-seed shape of the world and its faults.
#[derive(Clone, Debug)]
pub struct SimSettings {
    pub partitions: u32,
    /// Meta balances by itself (level `lively`): primary switches and
    /// replica moves run among the faults.
    pub lively: bool,
    /// When an operator asks for a backup of the table, if one does.
    pub backup_at_ms: Option<u64>,
    /// Instead, a backup policy runs from the start (every 2 s, keeping 1).
    pub backup_policy: bool,
    /// When an operator starts a split of the table, if one does, and
    /// what else it does with it.
    pub split: Option<(u64, SplitPlan)>,
    /// An operator duplicates the table to a remote cluster at the start
    /// (never in a seed that splits: meta refuses to split a duplicated
    /// table).
    pub dup: bool,
    pub clients: usize,
    pub keys: usize,
    /// Faults (crashes, cuts, drops) happen before this time.
    pub faults_until_ms: u64,
    /// The run ends here (quiet period after the faults).
    pub end_ms: u64,
    pub drop_per_mille: u32,
    pub delay_max_ms: u64,
    /// Chance per fault tick (100 ms) of a crash, per mille.
    pub crash_per_mille: u32,
    /// Chance per fault tick of cutting a link, per mille.
    pub cut_per_mille: u32,
    /// Chance per fault tick that a node flushes one replica's storage and
    /// truncates a shard's log below what storage and copies need (forcing
    /// copies to learners), per mille.
    pub truncate_per_mille: u32,
    /// Chance per fault tick that meta crashes (and restarts from its store
    /// 100–1,500 ms later), per mille.
    pub meta_crash_per_mille: u32,
    /// Chance per fault tick that meta's store starts failing its saves for
    /// 100–800 ms, per mille.
    pub store_fail_per_mille: u32,
    /// Chance per fault tick that a node is paused past its lease (the
    /// grace plus 0–1,500 ms), per mille.
    pub pause_per_mille: u32,
    /// Chance that a delivered message is delivered a second time, later,
    /// per mille.
    pub duplicate_per_mille: u32,
    /// Chance that a crash keeps a prefix of the unsynced log records and
    /// tears the next one, per mille.
    pub torn_per_mille: u32,
    /// Chance that recording a replica's ballot fails (the replica stops
    /// and the node is restarted 100–1,500 ms later), per mille of writes.
    pub ballot_fail_per_mille: u32,
    /// Most unsynced bytes a shard's log takes before refusing appends
    /// (`Busy`: the host backlogs them).
    pub log_unsynced_bytes_max: usize,
    /// Longest group-commit delay of a log sync.
    pub sync_delay_max_ms: u64,
    /// Bytes of records per chunk of a copy to a learner.
    pub copy_chunk_bytes: usize,
    pub client_timeout_ms: u64,
    /// Metas: 1 (a sole meta) or a group sharing the store through etcd.
    pub metas: usize,
    /// A group's etcd session TTL.
    pub session_ttl_ms: u64,
    /// Chance per fault tick that a group's leader meta is paused past its
    /// session (the TTL plus 0–1,000 ms), per mille.
    pub meta_pause_per_mille: u32,
}

/// One recorded client operation before it is handed to the checker.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub client: usize,
    pub key_index: usize,
    pub invoke_ns: u64,
    pub input: KvInput,
    pub complete: Option<(u64, markab_core::check::KvOutput)>,
}

/// The name meta knows node `id` by (its shard 0 address).
pub fn node_name(id: NodeId) -> String {
    shard_address(id, 0)
}

/// The listener address of shard `shard` of node `id`.
pub fn shard_address(id: NodeId, shard: usize) -> String {
    format!("sim-{}:{}", id.0, shard + 1)
}

/// The node and shard listening at `address`, if it is a simulated one.
pub fn parse_address(address: &str) -> Option<(NodeId, usize)> {
    let (node, port) = address.strip_prefix("sim-")?.split_once(':')?;
    let port: usize = port.parse().ok()?;
    Some((NodeId(node.parse().ok()?), port.checked_sub(1)?))
}
