//! What flows in and out of a [`ReplicaCore`](super::core::ReplicaCore):
//! identities, mutations, peer messages, inputs, outputs and errors
//! (docs/replication.md, "The core: inputs and outputs").

use std::fmt;

use thiserror::Error;

/// A configuration number; every membership change raises it by one
/// (invariant **ballot-monotonic**).
pub type Ballot = u64;
/// A position in a partition's mutation sequence; 0 means "none yet".
pub type Decree = u64;
/// Chosen by the host for a client request, echoed back in its reply.
pub type Token = u64;

/// A replica node's identity (a small integer; meta maps it to an address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "n{}", self.0)
    }
}

/// A partition's configuration as meta decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionConfig {
    pub ballot: Ballot,
    /// `None` only before the first primary is chosen.
    pub primary: Option<NodeId>,
    /// Sorted, without duplicates, never containing the primary.
    pub secondaries: Vec<NodeId>,
    /// Replicas catching up before they join (docs/replication.md,
    /// "Learning"): sorted, without duplicates, disjoint from the primary
    /// and the secondaries. Their acks count for commit only once the
    /// primary decides they caught up; none of them can become primary.
    pub learners: Vec<NodeId>,
}

impl PartitionConfig {
    /// Whether `node` is the primary or a secondary.
    pub fn is_member(&self, node: NodeId) -> bool {
        self.primary == Some(node) || self.secondaries.contains(&node)
    }

    /// Primary first, then the secondaries.
    pub fn members(&self) -> Vec<NodeId> {
        self.primary
            .iter()
            .copied()
            .chain(self.secondaries.iter().copied())
            .collect()
    }

    /// How many members (primary and secondaries) there are.
    pub fn member_count(&self) -> usize {
        usize::from(self.primary.is_some()) + self.secondaries.len()
    }

    /// Whether `node` is a learner.
    pub fn is_learner(&self, node: NodeId) -> bool {
        self.learners.contains(&node)
    }

    /// Every node that holds a replica: primary, secondaries, learners.
    pub fn replicas(&self) -> Vec<NodeId> {
        let mut all = self.members();
        all.extend(self.learners.iter().copied());
        all
    }

    /// Sorted, duplicate-free lists with the primary, the secondaries and
    /// the learners pairwise disjoint.
    pub fn is_well_formed(&self) -> bool {
        let sorted = |nodes: &[NodeId]| nodes.windows(2).all(|pair| pair[0] < pair[1]);
        sorted(&self.secondaries)
            && sorted(&self.learners)
            && self
                .primary
                .is_none_or(|p| !self.secondaries.contains(&p) && !self.learners.contains(&p))
            && self.learners.iter().all(|l| !self.secondaries.contains(l))
    }
}

/// One replicated write: an encoded `WriteBatch` (empty = the empty write
/// that only carries the commit point) under a ballot and decree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub ballot: Ballot,
    pub decree: Decree,
    /// The primary's commit point when it created (or re-prepared) this
    /// mutation; logged with it, so recovery knows what was committed.
    pub committed_decree: Decree,
    pub payload: Vec<u8>,
}

/// Why a secondary refused a Prepare.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PrepareError {
    #[error("stale ballot: the replica is at ballot {ballot}")]
    StaleBallot { ballot: Ballot },
    #[error("the replica is not a member of the partition")]
    NotMember,
    #[error("another primary holds this ballot")]
    WrongPrimary,
    #[error("decree {decree} is beyond the replica's window")]
    WindowFull { decree: Decree },
}

/// Messages between replicas of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    /// Primary to secondary: log this mutation and ack; everything up to
    /// `committed_decree` is committed.
    Prepare {
        ballot: Ballot,
        mutation: Mutation,
        committed_decree: Decree,
    },
    /// Secondary to primary: `decree` is durable under `ballot` (or why not).
    PrepareAck {
        ballot: Ballot,
        decree: Decree,
        result: Result<(), PrepareError>,
    },
    /// Learner to primary: "I hold, durably, every committed decree up to
    /// `learner_committed`; send me what follows". Sent when the learner
    /// becomes one, after each learned batch is durable, and again every
    /// `learn_retry_ms` without progress. Once the primary counts the
    /// learner as caught up, a request with `learner_committed` at or above
    /// the point where it caught up makes the primary ask meta to promote it.
    LearnRequest {
        ballot: Ballot,
        learner_committed: Decree,
    },
    /// Primary to learner: `mutations` are committed, contiguous, and end
    /// at `committed_decree` (the primary's commit point); they start at or
    /// below the learner's `learner_committed + 1` (empty when nothing is
    /// missing). Built by the core from its cache, or by the host from its
    /// log ([`ReplicaCore::learn_response`](super::core::ReplicaCore::learn_response)).
    LearnResponse {
        ballot: Ballot,
        committed_decree: Decree,
        mutations: Vec<Mutation>,
    },
}

/// Requests from a replica to meta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaRequest {
    /// The primary at `ballot` could not get `node` to ack within the
    /// prepare timeout.
    /// Also used for a caught-up learner, whose acks commit needs too.
    RemoveSecondary { ballot: Ballot, node: NodeId },
    /// The primary at `ballot` counts learner `node`'s acks for commit and
    /// `node` holds every committed decree: promote it to secondary (meta
    /// does so under ballot + 1).
    UpgradeLearner { ballot: Ballot, node: NodeId },
    /// The primary at `ballot`, handing off with no write in flight: make
    /// the secondary `node` the primary (meta does so under ballot + 1,
    /// this replica becoming a secondary).
    SwitchPrimary { ballot: Ballot, node: NodeId },
}

/// Role of a replica, following from the configuration it last accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Primary,
    Secondary,
    /// Catching up before it joins (docs/replication.md, "Learning").
    Learner,
    /// Not serving: not a member, or state unknown since a restart.
    Inactive,
}

/// Why a client write was not (or may not have been) applied.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum WriteError {
    /// Refused before it got a decree: nothing was written.
    #[error("this replica is not the primary")]
    NotPrimary,
    /// Refused before it got a decree: the new primary is still
    /// re-preparing its predecessor's tail.
    #[error("the primary is not activated yet")]
    NotActivated,
    /// Refused before it got a decree: the node's lease from meta expired.
    #[error("the primary's lease expired")]
    LeaseExpired,
    /// Refused before it got a decree: the prepare window is full.
    #[error("busy: {window_max} writes are already in flight")]
    Busy { window_max: usize },
    /// The write got a decree but this replica stopped being the primary
    /// before it committed: it may or may not take effect.
    #[error("outcome unknown: the primary changed while the write was in flight")]
    UnknownOutcome,
}

/// Why a client read was refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("this replica is not the primary")]
    NotPrimary,
    #[error("the primary is not activated yet")]
    NotActivated,
    #[error("the primary's lease expired")]
    LeaseExpired,
}

impl From<ReadError> for WriteError {
    /// A write refused for the reason a read would be: nothing was written.
    fn from(error: ReadError) -> WriteError {
        match error {
            ReadError::NotPrimary => WriteError::NotPrimary,
            ReadError::NotActivated => WriteError::NotActivated,
            ReadError::LeaseExpired => WriteError::LeaseExpired,
        }
    }
}

/// An input to [`ReplicaCore::handle`](super::core::ReplicaCore::handle).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A client write, already turned into an encoded `WriteBatch`.
    ClientWrite { token: Token, payload: Vec<u8> },
    /// A client read; the reply says whether the host may serve it.
    ClientRead { token: Token },
    /// A message from another replica.
    Peer { from: NodeId, message: PeerMessage },
    /// The local log append of (`ballot`, `decree`) is durable.
    LogDurable { ballot: Ballot, decree: Decree },
    /// A configuration from meta.
    Config(PartitionConfig),
    /// Meta's lease: the replica may serve as primary of `ballot` until
    /// `until_ms`. Meta grants it only to the node its committed
    /// configuration names primary at that ballot; the core takes it only
    /// while it is that primary (**lease-per-ballot**).
    Lease { ballot: Ballot, until_ms: u64 },
    /// Learner host: the checkpoint (the primary's applied state at
    /// `decree`) sent for `ballot` is installed in storage, durably, and the
    /// log records at or below `decree` are discarded. Ask
    /// [`ReplicaCore::accepts_checkpoint`](super::core::ReplicaCore::accepts_checkpoint)
    /// before installing; the core ignores one it would not accept.
    CheckpointInstalled { ballot: Ballot, decree: Decree },
    /// Learner host: it received the first chunk of a copy (the
    /// primary's applied state at `decree`, sent for `ballot`) and cleared
    /// its storage to install it. Ask
    /// [`ReplicaCore::accepts_checkpoint`](super::core::ReplicaCore::accepts_checkpoint)
    /// first. The core's commit point drops to 0 (storage holds nothing it
    /// can vouch for) and it applies nothing until `CheckpointInstalled` or
    /// `CopyAborted` (**copy-known-to-core**).
    CopyStarted { ballot: Ballot, decree: Decree },
    /// Learner host: the copy it was installing for `ballot` will not
    /// complete (a chunk was lost) and its storage is empty again, durably.
    CopyAborted { ballot: Ballot },
    /// Meta's balancer asks the primary of `ballot` to hand its role to the
    /// secondary `to` (`None`: the handoff is off). While it hands off, the
    /// primary refuses new writes (`NotPrimary`: nothing written, the
    /// client retries), lets the ones in flight commit, and once none is
    /// left asks meta to switch (`MetaRequest::SwitchPrimary`). Ignored
    /// unless this replica is the primary of `ballot` and `to` a secondary.
    Handoff { ballot: Ballot, to: Option<NodeId> },
    /// Primary host: the secondaries must learn that `decree` committed
    /// even if no write follows (a split's fence decree, which each
    /// member copies its replica at once it applied it). When `decree` is
    /// committed here but above every commit point sent so far, an
    /// activated primary sends the empty write carrying it — the idle
    /// push leaves its own decree's commit unsent, and that decree may be
    /// the one needed. Ignored otherwise.
    PushCommit { decree: Decree },
    /// Time passed.
    Tick,
}

/// An effect the host must carry out, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The replica's role or ballot changed (emitted before the effects of
    /// the change). A host that becomes primary must forget staged writes.
    RoleChanged { role: Role, ballot: Ballot },
    /// Append this mutation to the local log and report `LogDurable`.
    AppendLog(Mutation),
    /// Send a message to another replica of the partition.
    Send { to: NodeId, message: PeerMessage },
    /// Apply this committed mutation to storage; decrees come strictly in
    /// order, each exactly once (invariant **apply-once-in-order**).
    Apply(Mutation),
    /// The outcome of a client write: its decree once applied.
    WriteReply {
        token: Token,
        result: Result<Decree, WriteError>,
    },
    /// Whether a client read may be served from storage now.
    ReadReply {
        token: Token,
        result: Result<(), ReadError>,
    },
    /// A request to meta.
    ToMeta(MetaRequest),
    /// Primary host: the in-memory cache does not reach back to learner
    /// `to`'s `learner_committed`. If the local log still holds every decree
    /// from `learner_committed + 1` to the commit point, send `to` a
    /// `LearnResponse` with them
    /// ([`ReplicaCore::learn_response`](super::core::ReplicaCore::learn_response));
    /// else send a checkpoint of the applied state out of band (the learner
    /// host installs it and feeds `Input::CheckpointInstalled`).
    LearnFromStorage {
        to: NodeId,
        ballot: Ballot,
        learner_committed: Decree,
    },
}
