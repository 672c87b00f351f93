//! A simulated replica node: the real `ReplicaCore` and `Partition` over
//! `MemoryEngine` per hosted partition, plus per-replica simulated logs
//! that survive crashes up to their durable prefix.

use std::collections::BTreeMap;

use markab_core::replication::core::ReplicaCore;
use markab_core::replication::messages::{Ballot, NodeId, Token};
use markab_core::storage::{MemoryEngine, Partition};
use markab_core::wire::message::{Request, ResponseBody};

use super::model::{PartitionId, SimCheckpoint, SimLog};

/// A client request waiting for its replica's answer.
pub struct Pending {
    pub client: usize,
    pub op: u64,
    /// Writes: the reply to send once applied.
    pub body: Option<ResponseBody>,
    /// Reads: the request to execute once allowed.
    pub read: Option<Request>,
}

/// One partition replica hosted on a node.
pub struct Hosted {
    pub core: ReplicaCore,
    pub partition: Partition<MemoryEngine>,
    /// The last decree applied to `partition`.
    pub applied: u64,
    pub pending: BTreeMap<Token, Pending>,
}

pub struct SimNode {
    pub id: NodeId,
    pub alive: bool,
    /// Bumped by every restart.
    pub incarnation: u64,
    /// When the current incarnation started (acks of older beacons are ignored).
    pub started_ms: u64,
    pub replicas: BTreeMap<PartitionId, Hosted>,
    /// The disk: survives crashes (durable prefix only).
    pub logs: BTreeMap<PartitionId, SimLog>,
    /// The disk: each replica's last checkpoint (its log holds nothing at
    /// or below it).
    pub checkpoints: BTreeMap<PartitionId, SimCheckpoint>,
    /// The disk: each replica's ballot file — the last ballot it accepted,
    /// made durable before anything happens under it, as the node does.
    pub ballots: BTreeMap<PartitionId, Ballot>,
    pub next_token: Token,
    /// Paused (SIGSTOP) until then: it handles nothing, everything meant
    /// for it waits, and it resumes with its clock jumped forward.
    pub paused_until_ms: u64,
}
