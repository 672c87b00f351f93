//! The simulated meta server: beacons, leases, failure detection and
//! reconfiguration through `markab::replication::reconfig`, persisting each
//! new configuration (to an in-memory meta log) before anyone hears of it.

use std::collections::{BTreeMap, BTreeSet};

use markab::replication::config::ReplicationSettings;
use markab::replication::messages::{Ballot, NodeId, PartitionConfig};
use markab::replication::reconfig::{self, ReplicaReport};

use super::model::PartitionId;

/// Replicas per partition (the table's replica count).
pub const REPLICAS: usize = 3;

/// What meta knows of one node.
#[derive(Clone, Debug)]
struct NodeRecord {
    last_beacon_ms: u64,
    incarnation: u64,
    dead: bool,
}

/// A configuration change: the partition, the configuration it replaces
/// and the new one (already persisted).
pub type Change = (PartitionId, PartitionConfig, PartitionConfig);

pub struct SimMeta {
    settings: ReplicationSettings,
    configs: BTreeMap<PartitionId, PartitionConfig>,
    /// The persisted meta log: every configuration ever decided, in order.
    pub persisted: Vec<(u64, PartitionId, PartitionConfig)>,
    nodes: BTreeMap<NodeId, NodeRecord>,
    reports: BTreeMap<PartitionId, BTreeMap<NodeId, ReplicaReport>>,
}

impl SimMeta {
    pub fn new(
        settings: ReplicationSettings,
        nodes: &[NodeId],
        configs: BTreeMap<PartitionId, PartitionConfig>,
    ) -> SimMeta {
        let mut meta = SimMeta {
            settings,
            configs: BTreeMap::new(),
            persisted: Vec::new(),
            nodes: nodes
                .iter()
                .map(|node| {
                    let record = NodeRecord {
                        last_beacon_ms: 0,
                        incarnation: 0,
                        dead: false,
                    };
                    (*node, record)
                })
                .collect(),
            reports: BTreeMap::new(),
        };
        for (pid, config) in configs {
            meta.persist(0, pid, config);
        }
        meta
    }

    pub fn config(&self, pid: PartitionId) -> &PartitionConfig {
        &self.configs[&pid]
    }

    pub fn configs(&self) -> &BTreeMap<PartitionId, PartitionConfig> {
        &self.configs
    }

    /// A beacon from `node`; returns the changes it causes and, unless it is
    /// from an older incarnation, the configurations to send back with the
    /// ack (those of every partition the node reports or belongs to).
    pub fn on_beacon(
        &mut self,
        node: NodeId,
        incarnation: u64,
        reports: &[(PartitionId, ReplicaReport)],
        now_ms: u64,
    ) -> (Vec<Change>, Option<Vec<(PartitionId, PartitionConfig)>>) {
        let Some(record) = self.nodes.get_mut(&node) else {
            return (Vec::new(), None);
        };
        if incarnation < record.incarnation {
            return (Vec::new(), None);
        }
        let restarted = incarnation > record.incarnation;
        record.incarnation = incarnation;
        record.last_beacon_ms = now_ms;
        record.dead = false;
        for (pid, report) in reports {
            self.reports.entry(*pid).or_default().insert(node, *report);
        }
        let mut changes = Vec::new();
        if restarted {
            let pids: Vec<PartitionId> = self.configs.keys().copied().collect();
            for pid in pids {
                let reports = self.reports.get(&pid).cloned().unwrap_or_default();
                if let Some(new) =
                    reconfig::on_member_restarted(&self.configs[&pid], &reports, node)
                {
                    changes.push(self.persist(now_ms, pid, new));
                }
            }
        }
        let reported: BTreeSet<PartitionId> = reports.iter().map(|(pid, _)| *pid).collect();
        let configs = self
            .configs
            .iter()
            .filter(|(pid, config)| reported.contains(pid) || config.replicas().contains(&node))
            .map(|(pid, config)| (*pid, config.clone()))
            .collect();
        (changes, Some(configs))
    }

    /// Declares nodes silent for longer than the grace dead and removes or
    /// replaces them; then the guardian adds a learner to every partition
    /// below three replicas.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Change> {
        let mut changes = self.remove_dead(now_ms);
        let alive: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, record)| !record.dead)
            .map(|(node, _)| *node)
            .collect();
        let pids: Vec<PartitionId> = self.configs.keys().copied().collect();
        for pid in pids {
            let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
            for config in self.configs.values() {
                for node in config.replicas() {
                    *load.entry(node).or_default() += 1;
                }
            }
            if let Some(new) = reconfig::guardian(&self.configs[&pid], &alive, &load, REPLICAS) {
                changes.push(self.persist(now_ms, pid, new));
            }
        }
        changes
    }

    fn remove_dead(&mut self, now_ms: u64) -> Vec<Change> {
        let grace_ms = self.settings.grace_ms;
        for record in self.nodes.values_mut() {
            if !record.dead && now_ms > record.last_beacon_ms + grace_ms {
                record.dead = true;
            }
        }
        let dead: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, record)| record.dead)
            .map(|(node, _)| *node)
            .collect();
        let mut changes = Vec::new();
        if dead.is_empty() {
            return changes;
        }
        let pids: Vec<PartitionId> = self.configs.keys().copied().collect();
        for pid in pids {
            let reports = self.reports.get(&pid).cloned().unwrap_or_default();
            if let Some(new) = reconfig::on_nodes_dead(&self.configs[&pid], &reports, &dead) {
                changes.push(self.persist(now_ms, pid, new));
            }
        }
        changes
    }

    /// The primary `requester` asks to remove secondary `node`.
    pub fn on_remove_request(
        &mut self,
        requester: NodeId,
        pid: PartitionId,
        ballot: Ballot,
        node: NodeId,
        now_ms: u64,
    ) -> Option<Change> {
        let config = self.configs.get(&pid)?;
        let new = reconfig::on_remove_request(config, requester, ballot, node).ok()?;
        Some(self.persist(now_ms, pid, new))
    }

    /// The primary `requester` asks to promote learner `node`.
    pub fn on_upgrade_request(
        &mut self,
        requester: NodeId,
        pid: PartitionId,
        ballot: Ballot,
        node: NodeId,
        now_ms: u64,
    ) -> Option<Change> {
        let config = self.configs.get(&pid)?;
        let new = reconfig::on_upgrade_request(config, requester, ballot, node).ok()?;
        Some(self.persist(now_ms, pid, new))
    }

    /// Persists `new` (the meta log), then makes it current.
    fn persist(&mut self, now_ms: u64, pid: PartitionId, new: PartitionConfig) -> Change {
        let old = self.configs.get(&pid).cloned().unwrap_or(PartitionConfig {
            ballot: 0,
            primary: None,
            secondaries: Vec::new(),
            learners: Vec::new(),
        });
        assert!(new.ballot > old.ballot, "meta's ballots only grow");
        self.persisted.push((now_ms, pid, new.clone()));
        self.configs.insert(pid, new.clone());
        (pid, old, new)
    }
}
