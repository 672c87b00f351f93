//! What every shard of a node shares: the registry of hosted replicas
//! (what beacons report, where a request for a replica goes) and meta's
//! write bound, and the split of meta's beacon ack into one part per shard.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::RwLock;

use markab_wire::{
    BackupOrder, BeaconAck, DupOrder, Gpid, HostedReplica, ReplicaAssignment, ReplicaRole,
    SplitOrder, SplitReport,
};

use crate::replication::messages::Ballot;

/// Where a hosted replica lives on its node, and what beacons report of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostedEntry {
    pub shard: usize,
    pub ballot: i64,
    pub role: ReplicaRole,
    pub decree_prepared: i64,
    pub decree_committed: i64,
    pub decree_applied: i64,
    /// Its table's partition count as the replica knows it (0 = not yet).
    pub partition_count: i32,
}

impl HostedEntry {
    pub fn new(shard: usize, ballot: i64, decree_applied: i64, role: ReplicaRole) -> HostedEntry {
        HostedEntry {
            shard,
            ballot,
            role,
            decree_prepared: decree_applied,
            decree_committed: decree_applied,
            decree_applied,
            partition_count: 0,
        }
    }
}

/// The node-wide registry of hosted replicas. Written only when a replica
/// is hosted, dropped or changes role (and every few ticks); read for
/// beacons and for requests a shard does not host itself — never on the
/// path of a request the shard serves.
#[derive(Debug, Default)]
pub struct NodeRegistry {
    hosted: RwLock<BTreeMap<Gpid, HostedEntry>>,
    /// A primary refuses writes while its partition has fewer members (from
    /// meta's beacon acks; 0 = no bound).
    replica_count_min_alive: AtomicI32,
    /// Each shard's reports on its parents of splitting tables.
    split_reports: RwLock<BTreeMap<usize, Vec<SplitReport>>>,
}

impl NodeRegistry {
    pub fn new() -> NodeRegistry {
        NodeRegistry::default()
    }

    /// The shard hosting `gpid`, if one does.
    pub fn shard_of(&self, gpid: Gpid) -> Option<usize> {
        self.read().get(&gpid).map(|entry| entry.shard)
    }

    /// What the registry holds for `gpid`.
    pub fn entry(&self, gpid: Gpid) -> Option<HostedEntry> {
        self.read().get(&gpid).copied()
    }

    /// Claims `gpid` for `entry.shard` before the shard opens it, or says
    /// which other shard already hosts it: a node opens a replica on one
    /// shard only (**replica-stays-on-its-shard**).
    pub fn claim(&self, gpid: Gpid, entry: HostedEntry) -> Result<(), usize> {
        let mut hosted = self.write();
        match hosted.get(&gpid) {
            Some(held) if held.shard != entry.shard => Err(held.shard),
            _ => {
                hosted.insert(gpid, entry);
                Ok(())
            }
        }
    }

    pub fn register(&self, gpid: Gpid, entry: HostedEntry) {
        self.write().insert(gpid, entry);
    }

    pub fn unregister(&self, gpid: Gpid) {
        self.write().remove(&gpid);
    }

    /// Updates what beacons report of `gpid` (nothing when not hosted).
    pub fn publish(&self, gpid: Gpid, update: impl FnOnce(&mut HostedEntry)) {
        if let Some(entry) = self.write().get_mut(&gpid) {
            update(entry);
        }
    }

    pub fn replica_count_min_alive(&self) -> i32 {
        self.replica_count_min_alive.load(Ordering::Relaxed)
    }

    pub fn set_replica_count_min_alive(&self, count: i32) {
        self.replica_count_min_alive.store(count, Ordering::Relaxed);
    }

    /// Replaces shard `shard`'s split reports.
    pub fn set_split_reports(&self, shard: usize, reports: Vec<SplitReport>) {
        let mut all = self.split_reports.write().expect("split reports lock");
        if reports.is_empty() {
            all.remove(&shard);
        } else {
            all.insert(shard, reports);
        }
    }

    /// Every shard's split reports, for a beacon.
    pub fn split_reports(&self) -> Vec<SplitReport> {
        self.split_reports
            .read()
            .expect("split reports lock")
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    /// The replicas this node hosts, as a beacon reports them, in gpid order.
    pub fn beacon_replicas(&self) -> Vec<HostedReplica> {
        self.read()
            .iter()
            .map(|(gpid, entry)| HostedReplica {
                gpid: *gpid,
                shard: entry.shard as i32,
                ballot: entry.ballot,
                decree_applied: entry.decree_applied,
                role: entry.role,
                decree_prepared: entry.decree_prepared,
                decree_committed: entry.decree_committed,
            })
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Gpid, HostedEntry>> {
        self.hosted.read().expect("hosted registry lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Gpid, HostedEntry>> {
        self.hosted.write().expect("hosted registry lock")
    }
}

/// What meta tells the node as the primary of a partition at a ballot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryGrant {
    pub gpid: Gpid,
    pub ballot: Ballot,
    /// The secondary to hand the role to (the balancer's primary switch);
    /// empty when none, which also ends a handoff meta gave up.
    pub handoff_to: String,
}

/// One shard's part of a beacon ack, applied in this order: configurations,
/// then leases (**configs-before-lease**), then drops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardAck {
    /// When the beacon was sent, on the node's clock: leases count from it.
    pub sent_ms: u64,
    /// How long a lease lasts from `sent_ms` (0: meta grants no leases, a
    /// replica is then its partition's only copy and serves without one).
    pub lease_ms: u64,
    /// Assignments to host or to follow: not hosted yet, or newer than what
    /// the hosted registry shows.
    pub configs: Vec<ReplicaAssignment>,
    /// Partitions meta's committed configuration names this node primary
    /// of: the lease at that ballot (**lease-per-ballot**) and the
    /// balancer's handoff, repeated in every ack whether or not the
    /// configuration is new.
    pub leases: Vec<PrimaryGrant>,
    /// Replicas whose data meta says to delete.
    pub drops: Vec<Gpid>,
    /// Partition backups meta orders of this shard's replicas (taken by
    /// the node's IO, which runs them off the shard).
    pub backups: Vec<BackupOrder>,
    /// Split orders for this shard's parent replicas (docs/split.md).
    pub splits: Vec<SplitOrder>,
    /// Duplication orders for this shard's replicas (docs/duplication.md):
    /// a replica with one tags its writes.
    pub dups: Vec<DupOrder>,
    /// Meta's cluster id, the tag of this cluster's writes.
    pub cluster_id: u8,
}

/// Splits `ack` into one part for each of `shards` shards, and records
/// meta's write bound. A replica the node already hosts goes to the shard
/// that hosts it, whatever shard meta named (**replica-stays-on-its-shard**);
/// a new one to meta's shard, if the node has it. An assignment that does
/// not name this node (meta telling a replica it left,
/// **replica-told-it-left**) only ever reaches a hosted replica.
pub fn split_ack(
    registry: &NodeRegistry,
    shards: usize,
    node: &str,
    ack: BeaconAck,
    sent_ms: u64,
) -> Vec<ShardAck> {
    registry.set_replica_count_min_alive(ack.replica_count_min_alive);
    let mut parts: Vec<ShardAck> = (0..shards)
        .map(|_| ShardAck {
            sent_ms,
            lease_ms: ack.lease_ms,
            cluster_id: ack.cluster_id,
            ..ShardAck::default()
        })
        .collect();
    let hosted = registry.read();
    for assignment in ack.assignments {
        let gpid = Gpid {
            app_id: assignment.app_id,
            partition_index: assignment.partition_index,
        };
        let names_node = assignment.primary == node
            || assignment.secondaries.iter().any(|name| name == node)
            || assignment.learners.iter().any(|name| name == node);
        let (shard, ballot_hosted, count_hosted) = match hosted.get(&gpid) {
            Some(entry) => {
                if entry.shard as i32 != assignment.shard && names_node {
                    tracing::warn!(
                        app_id = gpid.app_id,
                        partition = gpid.partition_index,
                        hosted_on = entry.shard,
                        meta_says = assignment.shard,
                        "meta named another shard for a replica this node hosts; it stays where it is"
                    );
                }
                (entry.shard, Some(entry.ballot), entry.partition_count)
            }
            None if !names_node => continue,
            None => match usize::try_from(assignment.shard) {
                Ok(shard) if shard < shards => (shard, None, 0),
                _ => {
                    tracing::error!(
                        shard = assignment.shard,
                        shards,
                        "meta assigned a replica to a shard this node does not have"
                    );
                    continue;
                }
            },
        };
        let part = &mut parts[shard];
        if assignment.primary == node {
            part.leases.push(PrimaryGrant {
                gpid,
                ballot: assignment.ballot.max(0) as Ballot,
                handoff_to: assignment.handoff_to.clone(),
            });
        }
        // A new ballot, or a split's new count at the same ballot (a
        // count only grows: **count-only-grows**).
        let recount = count_hosted > 0 && count_hosted < assignment.partition_count;
        if recount || ballot_hosted.is_none_or(|ballot| ballot < assignment.ballot) {
            part.configs.push(assignment);
        }
    }
    for gpid in ack.drops {
        if let Some(entry) = hosted.get(&gpid) {
            parts[entry.shard].drops.push(gpid);
        }
    }
    for order in ack.backups {
        if let Some(entry) = hosted.get(&order.gpid) {
            parts[entry.shard].backups.push(order);
        }
    }
    for order in ack.splits {
        if let Some(entry) = hosted.get(&order.gpid) {
            parts[entry.shard].splits.push(order);
        }
    }
    for order in ack.dups {
        if let Some(entry) = hosted.get(&order.gpid) {
            parts[entry.shard].dups.push(order);
        }
    }
    parts
}
