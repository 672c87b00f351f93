//! The safety invariants the simulator checks after every event
//! (docs/replication.md, "Invariants").

use std::collections::{BTreeMap, BTreeSet};

use markab_core::replication::core::ReplicaCore;
use markab_core::replication::messages::{Ballot, Decree, Mutation, NodeId, Role};

use super::model::PartitionId;

/// A replica instance: node, incarnation (bumped by each restart), partition.
pub type ReplicaKey = (NodeId, u64, PartitionId);

/// FNV-1a of a payload: committed prefixes are compared by it, whatever
/// ballot carried the mutation.
pub fn payload_hash(payload: &[u8]) -> u64 {
    payload.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Default)]
pub struct Invariants {
    /// Per partition, the payload hash of every committed decree (index =
    /// decree - 1), as first applied by any replica.
    committed: BTreeMap<PartitionId, Vec<u64>>,
    /// Who was primary at each (partition, ballot).
    primary_of_ballot: BTreeMap<(PartitionId, Ballot), NodeId>,
    ballots: BTreeMap<ReplicaKey, Ballot>,
    commits: BTreeMap<ReplicaKey, Decree>,
    /// Per partition, the highest decree acknowledged to a client.
    acked: BTreeMap<PartitionId, Decree>,
    /// Per partition and key, the highest decree of a write to the key
    /// acknowledged to a client.
    acked_writes: BTreeMap<(PartitionId, usize), Decree>,
    /// Per split child installed: its parent, the fence decree its copy
    /// was taken at and the keys that moved to it.
    fences: BTreeMap<PartitionId, (PartitionId, Decree, Vec<usize>)>,
}

impl Invariants {
    /// The highest decree acknowledged to a client, per partition.
    pub fn acked(&self) -> BTreeMap<PartitionId, Decree> {
        self.acked.clone()
    }

    /// **backup-holds-acknowledged**: a complete backup's checkpoint of each
    /// partition holds every write acknowledged before the backup began
    /// (`acked_at_start`), and no decree that was never committed.
    pub fn check_backup(
        &self,
        acked_at_start: &BTreeMap<PartitionId, Decree>,
        decrees: &BTreeMap<PartitionId, Decree>,
    ) -> Result<(), String> {
        for (pid, decree) in decrees {
            let acked = acked_at_start.get(pid).copied().unwrap_or(0);
            if *decree < acked {
                return Err(format!(
                    "backup-holds-acknowledged: p{pid}'s checkpoint holds decree {decree}, \
                     but decree {acked} was acknowledged before the backup began"
                ));
            }
            let committed = self.committed.get(pid).map_or(0, |hashes| hashes.len()) as Decree;
            if *decree > committed {
                return Err(format!(
                    "backup-holds-acknowledged: p{pid}'s checkpoint holds decree {decree}, \
                     above the {committed} ever committed"
                ));
            }
        }
        Ok(())
    }

    /// **committed-prefix-agreement**: every replica applies, at each
    /// decree, the payload every other replica applied there.
    pub fn on_apply(
        &mut self,
        pid: PartitionId,
        node: NodeId,
        mutation: &Mutation,
    ) -> Result<(), String> {
        let hashes = self.committed.entry(pid).or_default();
        let hash = payload_hash(&mutation.payload);
        let index = (mutation.decree - 1) as usize;
        match hashes.get(index) {
            Some(known) if *known != hash => Err(format!(
                "committed-prefix-agreement: {node} applied a different payload at p{pid} decree {}",
                mutation.decree
            )),
            Some(_) => Ok(()),
            None if index == hashes.len() => {
                hashes.push(hash);
                Ok(())
            }
            None => Err(format!(
                "apply-once-in-order: {node} applied p{pid} decree {} with only {} committed before",
                mutation.decree,
                hashes.len()
            )),
        }
    }

    /// A learner installed a checkpoint at `decree`: only committed state
    /// may be shipped.
    pub fn on_checkpoint(
        &mut self,
        pid: PartitionId,
        node: NodeId,
        decree: Decree,
    ) -> Result<(), String> {
        let known = self.committed.get(&pid).map_or(0, Vec::len) as Decree;
        if decree > known {
            return Err(format!(
                "checkpoint-committed-only: {node} installed p{pid} at {decree}, only {known} committed"
            ));
        }
        Ok(())
    }

    /// A client was told its write committed at `decree`.
    pub fn on_acked(&mut self, pid: PartitionId, decree: Decree) -> Result<(), String> {
        let known = self
            .committed
            .get(&pid)
            .map_or(0, |hashes| hashes.len() as Decree);
        if decree > known {
            return Err(format!(
                "acked-after-apply: p{pid} decree {decree} acked before any apply"
            ));
        }
        let acked = self.acked.entry(pid).or_default();
        *acked = (*acked).max(decree);
        Ok(())
    }

    /// A client was told its write of key `key_index` committed at
    /// `decree` on partition `pid`: once a child of `pid` was copied at
    /// its fence decree, no write of a key that moved to it is
    /// acknowledged above that decree (**split-fence**).
    pub fn on_acked_write(
        &mut self,
        pid: PartitionId,
        key_index: usize,
        decree: Decree,
    ) -> Result<(), String> {
        for (child, (parent, fence, moved)) in &self.fences {
            if *parent == pid && decree > *fence && moved.contains(&key_index) {
                return Err(format!(
                    "split-fence: p{pid} acknowledged a write of key {key_index} at decree {decree}, above the fence decree {fence} its child p{child} was copied at"
                ));
            }
        }
        let acked = self.acked_writes.entry((pid, key_index)).or_default();
        *acked = (*acked).max(decree);
        Ok(())
    }

    /// Split child `child` of `parent` was installed on `node` from a copy
    /// at the parent's fence decree `decree`; `moved` are the keys it
    /// takes. Its committed prefix is the parent's up to there (its log
    /// goes on from there), the copy holds only committed decrees
    /// (**checkpoint-committed-only**) and every write of a moved key the
    /// parent acknowledged (**copy-covers-fence**), and every member's copy
    /// is at the same decree.
    pub fn on_split_child(
        &mut self,
        child: PartitionId,
        parent: PartitionId,
        node: NodeId,
        decree: Decree,
        moved: Vec<usize>,
    ) -> Result<(), String> {
        for key_index in &moved {
            let acked = self
                .acked_writes
                .get(&(parent, *key_index))
                .copied()
                .unwrap_or(0);
            if acked > decree {
                return Err(format!(
                    "copy-covers-fence: {node} installs p{child} from a copy of p{parent} at decree {decree}, but p{parent} acknowledged a write of key {key_index} at decree {acked}"
                ));
            }
        }
        let from_parent = self.committed.get(&parent).cloned().unwrap_or_default();
        if (from_parent.len() as Decree) < decree {
            return Err(format!(
                "checkpoint-committed-only: {node} installs p{child} from a copy of p{parent} at decree {decree}, only {} committed",
                from_parent.len()
            ));
        }
        let hashes = self.committed.entry(child).or_default();
        if (hashes.len() as Decree) < decree {
            let held = hashes.len();
            hashes.extend_from_slice(&from_parent[held..decree as usize]);
        }
        let fence = self
            .fences
            .entry(child)
            .or_insert((parent, decree, moved))
            .1;
        if fence != decree {
            return Err(format!(
                "copy-covers-fence: {node} installs p{child} from a copy at decree {decree}, another member's copy was at {fence}"
            ));
        }
        Ok(())
    }

    /// The per-step checks over every live replica, each with its node's
    /// clock now.
    pub fn check_step<'a>(
        &mut self,
        replicas: impl Iterator<Item = (ReplicaKey, u64, &'a ReplicaCore)>,
    ) -> Result<(), String> {
        let mut serving: BTreeMap<PartitionId, NodeId> = BTreeMap::new();
        let replicas: Vec<(ReplicaKey, u64, &ReplicaCore)> = replicas.collect();
        for ((node, _, pid), _, core) in &replicas {
            // **secondary-holds-committed**: a secondary of a primary at the
            // same ballot holds (applied, or durable in its window without
            // a gap) every decree that primary committed. A promoted learner
            // must too, from the moment it is a secondary: what it learned
            // reaches where it caught up, and everything committed since
            // needed its ack.
            if core.role() != Role::Secondary {
                continue;
            }
            let Some(primary) = core.config().primary.and_then(|p| {
                replicas
                    .iter()
                    .find(|((n, _, q), _, c)| *n == p && q == pid && c.role() == Role::Primary)
                    .map(|(_, _, c)| *c)
            }) else {
                continue;
            };
            if primary.ballot() == core.ballot()
                && primary.config().secondaries.contains(node)
                && core.last_prepared() < primary.last_committed()
            {
                return Err(format!(
                    "secondary-holds-committed: {node} p{pid} holds up to {} at ballot {} but its primary committed {}",
                    core.last_prepared(),
                    core.ballot(),
                    primary.last_committed()
                ));
            }
        }
        // A replica its host no longer has (meta dropped it after it moved
        // away, or its node is down) starts a new life if it comes back:
        // its ballot and commit point are not the old one's.
        let hosted: BTreeSet<ReplicaKey> = replicas.iter().map(|(key, _, _)| *key).collect();
        self.ballots.retain(|key, _| hosted.contains(key));
        self.commits.retain(|key, _| hosted.contains(key));
        for (key @ (node, _, pid), now_ms, core) in replicas {
            let ballot = core.ballot();
            let last = self.ballots.insert(key, ballot).unwrap_or(0);
            if ballot < last {
                return Err(format!(
                    "ballot-monotonic: {node} p{pid} went from {last} to {ballot}"
                ));
            }
            let committed = core.last_committed();
            let last = self.commits.insert(key, committed).unwrap_or(0);
            // A learner's host cleared storage for a copy: its commit point
            // drops to 0 until the copy is installed (**copy-known-to-core**).
            let copying = core.role() == Role::Learner && core.copying().is_some();
            if committed < last && !(copying && committed == 0) {
                return Err(format!(
                    "commit-monotonic: {node} p{pid} went from {last} to {committed}"
                ));
            }
            if core.role() == Role::Primary {
                let holder = *self.primary_of_ballot.entry((pid, ballot)).or_insert(node);
                if holder != node {
                    return Err(format!(
                        "one-primary-per-ballot: {holder} and {node} are both primary of p{pid} at ballot {ballot}"
                    ));
                }
            }
            if core.is_serving(now_ms) {
                if let Some(other) = serving.insert(pid, node) {
                    return Err(format!(
                        "one-serving-primary: {other} and {node} both serve p{pid} (at {now_ms} ms on {node}'s clock)"
                    ));
                }
                let acked = self.acked.get(&pid).copied().unwrap_or(0);
                if committed < acked {
                    return Err(format!(
                        "acked-never-lost: {node} serves p{pid} with commit point {committed} below acked decree {acked}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Decrees committed so far per partition.
    pub fn committed_counts(&self) -> BTreeMap<PartitionId, usize> {
        self.committed
            .iter()
            .map(|(pid, hashes)| (*pid, hashes.len()))
            .collect()
    }
}
