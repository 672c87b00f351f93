//! The simulated world's vocabulary: addresses, messages, events, the
//! simulated log, and the fault settings drawn per seed.

use std::collections::BTreeMap;

use markab_core::check::KvInput;
use markab_core::replication::messages::{
    Ballot, Decree, Mutation, NodeId, PartitionConfig, PeerMessage,
};

use super::meta::Report;
use markab_core::wire::message::{Request, Response};

/// Partition index inside the simulated table.
pub type PartitionId = u32;

/// Who sends and receives messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    Meta,
    Node(NodeId),
    Client(usize),
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
    Peer {
        pid: PartitionId,
        message: PeerMessage,
    },
    Beacon {
        incarnation: u64,
        sent_ms: u64,
        reports: Vec<Report>,
    },
    BeaconAck {
        sent_ms: u64,
        configs: Vec<(PartitionId, PartitionConfig)>,
        lease_ms: u64,
    },
    RemoveSecondary {
        pid: PartitionId,
        ballot: Ballot,
        node: NodeId,
    },
    UpgradeLearner {
        pid: PartitionId,
        ballot: Ballot,
        node: NodeId,
    },
    /// A primary's applied state at `decree`, sent to a learner whose gap
    /// its cache and log do not cover (a real host streams a RocksDB
    /// checkpoint in bounded chunks; here it is one message, delayed by
    /// its size).
    Checkpoint {
        pid: PartitionId,
        ballot: Ballot,
        decree: Decree,
        records: BTreeMap<Vec<u8>, Vec<u8>>,
    },
    Request {
        op: u64,
        pid: PartitionId,
        request: Request,
    },
    Reply {
        op: u64,
        reply: Reply,
    },
}

/// A scheduled happening.
#[derive(Clone, Debug)]
pub enum Event {
    Deliver {
        from: Addr,
        to: Addr,
        msg: Msg,
    },
    Durable {
        node: NodeId,
        incarnation: u64,
        pid: PartitionId,
        ballot: Ballot,
        decree: Decree,
    },
    NodeTick {
        node: NodeId,
        incarnation: u64,
    },
    Beacon {
        node: NodeId,
        incarnation: u64,
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
    /// Meta restarts from its store.
    MetaRestart,
    /// Meta's store saves again.
    StoreHeals,
}

/// One replica's mutation log on a simulated disk: appends become durable
/// in order after a delay; a crash keeps only the durable prefix.
#[derive(Clone, Debug, Default)]
pub struct SimLog {
    /// Records with the time they became (or become) durable.
    pub records: Vec<(Mutation, u64)>,
}

impl SimLog {
    /// Appends `mutation`; returns when it will be durable (never before an
    /// earlier record: the log is a prefix-durable stream).
    pub fn append(&mut self, mutation: Mutation, now_ms: u64, delay_ms: u64) -> u64 {
        let previous = self.records.last().map_or(0, |(_, at)| *at);
        let durable_at_ms = previous.max(now_ms + delay_ms);
        self.records.push((mutation, durable_at_ms));
        durable_at_ms
    }

    /// Power cut at `now_ms`: every record not yet durable is lost.
    pub fn crash(&mut self, now_ms: u64) {
        self.records.retain(|(_, at)| *at <= now_ms);
    }

    /// Forgets every record at or below `decree` (covered by a checkpoint).
    pub fn truncate(&mut self, decree: Decree) {
        self.records
            .retain(|(mutation, _)| mutation.decree > decree);
    }

    /// The committed mutations `from..=to` as recovery would read them (a
    /// later record of a decree replaces one of a lower or equal ballot),
    /// or `None` when some decree is missing (truncated or never logged).
    pub fn read_range(&self, from: Decree, to: Decree) -> Option<Vec<Mutation>> {
        if from > to {
            return Some(Vec::new());
        }
        let mut latest: BTreeMap<Decree, &Mutation> = BTreeMap::new();
        for (mutation, _) in &self.records {
            if mutation.decree < from || mutation.decree > to {
                continue;
            }
            let replaces = latest
                .get(&mutation.decree)
                .is_none_or(|held| held.ballot <= mutation.ballot);
            if replaces {
                latest.insert(mutation.decree, mutation);
            }
        }
        if latest.len() as u64 != to - from + 1 {
            return None;
        }
        Some(latest.into_values().cloned().collect())
    }
}

/// A replica's checkpoint on a simulated disk: its applied state at
/// `decree` (written at once, so always durable).
#[derive(Clone, Debug, Default)]
pub struct SimCheckpoint {
    pub decree: Decree,
    pub records: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Per-seed shape of the world and its faults.
#[derive(Clone, Debug)]
pub struct SimSettings {
    pub partitions: u32,
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
    /// Chance per fault tick that a node checkpoints one replica and drops
    /// its log records below (forcing checkpoint learning), per mille.
    pub compact_per_mille: u32,
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
    pub client_timeout_ms: u64,
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
