//! Meta's balancer: the function level, the moves in progress, operators'
//! proposals and node removal (docs/balance.md). The plan itself is
//! [`crate::meta::balance`]'s pure function; here it meets meta's state.
//!
//! A move is a sequence of reconfigurations, each persisted by meta before
//! anyone hears of it (a learner added, a replica removed, a primary
//! switched on the primary's request); the moves themselves are volatile.
//! A restarted meta loses them and finishes what the stored configurations
//! show: a partition left with an extra replica loses one.

use std::collections::{BTreeMap, BTreeSet};

use markab_wire::message::{BalancerRequest, ErrorCode, Gpid, ProposedMove, ResponseBody};

use super::{
    MetaData, MetaLevel, MetaState, MetaTime, ReplicaMembers, ReplicaPlace, Step, StoredPartition,
};
use crate::meta::balance::{self, Bounds, Cluster, Move, Node, Partition, Place};
use crate::replication::reconfig;

/// A configuration to persist, by (app id, partition index).
type Change = ((i32, usize), StoredPartition);

/// A primary switch that has not happened this long after it began is
/// given up (the primary could not drain its writes).
pub const SWITCH_TIMEOUT_MS: u64 = 10_000;
/// A replica move whose learner has not caught up this long after it
/// began is given up (its learner is removed like any extra replica).
pub const COPY_TIMEOUT_MS: u64 = 3_600_000;
/// How often a `lively` meta plans.
pub const BALANCE_INTERVAL_MS: u64 = 1_000;
/// How soon, in ms, both ends of a primary switch in progress beacon again
/// (**switch-beacons-soon**).
pub const SWITCH_BEACON_MS: u32 = 10;

/// What a move in progress does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveKind {
    /// The primary on `from` hands its role to the secondary on `to`.
    SwitchPrimary { from: String, to: String },
    /// The replica on `from` moves to `to`'s shard `shard`.
    MoveReplica {
        from: String,
        to: String,
        shard: i32,
    },
}

impl MoveKind {
    fn name(&self) -> &'static str {
        match self {
            MoveKind::SwitchPrimary { .. } => "switch_primary",
            MoveKind::MoveReplica { .. } => "move_replica",
        }
    }

    fn describe(&self) -> String {
        match self {
            MoveKind::SwitchPrimary { from, to } => format!("switch_primary {from} -> {to}"),
            MoveKind::MoveReplica { from, to, shard } => {
                format!("move_replica {from} -> {to} shard {shard}")
            }
        }
    }
}

/// One move in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveMove {
    pub kind: MoveKind,
    /// Meta's monotonic clock when it began.
    pub started_ms: u64,
    /// A replica move added its learner already.
    pub learner_added: bool,
}

/// The balancer's volatile state.
#[derive(Debug, Default)]
pub(super) struct Balancer {
    moves: BTreeMap<Gpid, ActiveMove>,
    /// Finished moves by (kind, result): `ok`, `cancelled`, `timed_out`.
    finished: BTreeMap<(&'static str, &'static str), u64>,
    last_plan_ms: Option<u64>,
    /// Switches meta agreed to: the old primary and when, on meta's
    /// monotonic clock. Until a lease has passed it may still serve at its
    /// old ballot, so no one removes it meanwhile.
    switched: BTreeMap<Gpid, (String, u64)>,
}

impl MetaState {
    /// The moves in progress, by partition.
    pub fn moves(&self) -> &BTreeMap<Gpid, ActiveMove> {
        &self.balancer.moves
    }

    /// Finished moves by (kind, result) since meta started.
    pub fn finished_moves(&self) -> &BTreeMap<(&'static str, &'static str), u64> {
        &self.balancer.finished
    }

    fn finish_move(&mut self, gpid: Gpid, result: &'static str) {
        if let Some(done) = self.balancer.moves.remove(&gpid) {
            *self
                .balancer
                .finished
                .entry((done.kind.name(), result))
                .or_default() += 1;
        }
    }

    /// How soon `node` should beacon again (0: at its usual interval):
    /// [`SWITCH_BEACON_MS`] while it is either end of a primary switch in
    /// progress in `data` (**switch-beacons-soon**). A switch stops its
    /// partition's writes from the moment the primary hears of it until
    /// the new primary serves, and both learn of it only from acks to their
    /// beacons: at the usual 100 ms that left writes waiting ~130 ms.
    pub(super) fn beacon_again_ms(&self, data: &MetaData, node: &str) -> u32 {
        let switching = self.balancer.moves.keys().any(|gpid| {
            let Some(partition) = data
                .tables
                .get(&gpid.app_id)
                .and_then(|table| table.partitions.get(gpid.partition_index as usize))
            else {
                return false;
            };
            self.handoff_target(*gpid, partition)
                .is_some_and(|to| to == node || partition.primary.node == node)
        });
        if switching {
            SWITCH_BEACON_MS
        } else {
            0
        }
    }

    /// The secondary the primary of `partition` should hand its role to:
    /// a switch in progress, or a replica move off the primary whose new
    /// replica is a secondary now.
    pub(super) fn handoff_target(&self, gpid: Gpid, partition: &StoredPartition) -> Option<String> {
        let active = self.balancer.moves.get(&gpid)?;
        let (from, to) = match &active.kind {
            MoveKind::SwitchPrimary { from, to } | MoveKind::MoveReplica { from, to, .. } => {
                (from, to)
            }
        };
        (partition.primary.node == *from && partition.has_secondary(to)).then(|| to.clone())
    }

    /// The primary's `SwitchPrimary`: honoured at the current ballot, from
    /// the current primary, for the secondary a move asked it to hand off
    /// to (`INVALID_ARGUMENT` otherwise: nothing changes).
    pub(super) fn switch_primary(
        &mut self,
        gpid: Gpid,
        ballot: i64,
        node: &str,
        now_ms: u64,
    ) -> Step {
        let asked = self
            .partition(gpid)
            .ok()
            .and_then(|partition| self.handoff_target(gpid, partition));
        if asked.as_deref() != Some(node) {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "switch_primary to {node} in partition {}.{}: no switch to it is in progress",
                    gpid.app_id, gpid.partition_index
                ),
            );
        }
        let step = self.primary_request(
            "switch_primary",
            gpid,
            ballot,
            node,
            reconfig::on_switch_request,
        );
        if step.persist.is_some() {
            let old = self.partition(gpid).expect("switched").primary.node.clone();
            self.balancer.switched.insert(gpid, (old, now_ms));
        }
        step
    }

    /// How long after a switch (or meta's start) the old primary may still
    /// serve under its lease: a lease plus a beacon interval.
    fn switch_wait_ms(&self) -> u64 {
        self.settings.replication.map_or(0, |replication| {
            replication.lease_ms + replication.beacon_interval_ms
        })
    }

    /// Whether `node` may leave `gpid`'s configuration now without two
    /// primaries serving at once: it is not a primary that handed off less
    /// than a lease (plus a beacon interval) ago, and no meta that started
    /// less than that ago could have missed such a switch
    /// (**switch-serves-after-old-primary-steps-down**).
    pub(super) fn may_remove(&self, gpid: Gpid, node: &str, now_ms: u64) -> bool {
        let wait_ms = self.switch_wait_ms();
        let recent_switch = self
            .balancer
            .switched
            .get(&gpid)
            .is_some_and(|(old, at)| old == node && now_ms < at + wait_ms);
        let fresh_meta = self
            .started_ms
            .is_some_and(|started| now_ms < started + wait_ms);
        !recent_switch && !fresh_meta
    }

    /// Whether meta may move `node` out of `partition` by itself: the
    /// node's last beacon reports its replica at the partition's ballot or
    /// newer (it took the configuration, so it knows it is no primary), and
    /// [`MetaState::may_remove`] agrees.
    fn stepped_down(
        &self,
        gpid: Gpid,
        partition: &StoredPartition,
        node: &str,
        now_ms: u64,
    ) -> bool {
        let took_ballot = self.nodes.get(node).is_some_and(|record| {
            record
                .replicas
                .iter()
                .any(|replica| replica.gpid == gpid && replica.ballot >= partition.ballot)
        });
        took_ballot && self.may_remove(gpid, node, now_ms)
    }

    /// Whether every member of `partition` is alive.
    fn healthy(&self, partition: &StoredPartition, now_ms: u64) -> bool {
        partition
            .places()
            .all(|place| self.is_node_alive(&place.node, now_ms))
    }

    /// Advances every move in progress one step, and removes an extra
    /// replica from a partition no move is working on; starts new moves
    /// (evacuating removing nodes always, balancing when `lively`). The
    /// configurations to persist, by (app id, partition index).
    pub(super) fn advance_moves(&mut self, now_ms: u64) -> Vec<((i32, usize), StoredPartition)> {
        if self.settings.replication.is_none() || self.frozen(now_ms).is_some() {
            return Vec::new();
        }
        if self.data.level == MetaLevel::Freezed {
            let gpids: Vec<Gpid> = self.balancer.moves.keys().copied().collect();
            for gpid in gpids {
                self.finish_move(gpid, "cancelled");
            }
            return Vec::new();
        }
        // A switch older than the wait constrains nothing any more: the
        // map stays as small as the switches of one lease.
        let wait_ms = self.switch_wait_ms();
        self.balancer
            .switched
            .retain(|_, (_, at_ms)| now_ms < *at_ms + wait_ms);
        let mut changes = Vec::new();
        let gpids: Vec<Gpid> = self.balancer.moves.keys().copied().collect();
        for gpid in gpids {
            match self.step_move(gpid, now_ms) {
                Ok(Some(change)) => changes.push(change),
                Ok(None) => {}
                Err(result) => self.finish_move(gpid, result),
            }
        }
        changes.extend(self.trim_extra_replicas(now_ms));
        let due = self
            .balancer
            .last_plan_ms
            .is_none_or(|at| now_ms >= at + BALANCE_INTERVAL_MS);
        if due && (self.data.level == MetaLevel::Lively || !self.data.removing_nodes.is_empty()) {
            self.balancer.last_plan_ms = Some(now_ms);
            let lively = self.data.level == MetaLevel::Lively;
            for (gpid, kind) in self.plan_moves(now_ms, lively) {
                self.start_move(gpid, kind, now_ms);
            }
        }
        changes
    }

    fn start_move(&mut self, gpid: Gpid, kind: MoveKind, now_ms: u64) {
        self.balancer.moves.insert(
            gpid,
            ActiveMove {
                kind,
                started_ms: now_ms,
                learner_added: false,
            },
        );
    }

    /// One step of the move of `gpid`: a configuration to persist, nothing
    /// yet, or the move's end (`Err(result)`).
    fn step_move(&mut self, gpid: Gpid, now_ms: u64) -> Result<Option<Change>, &'static str> {
        let active = self.balancer.moves[&gpid].clone();
        let index = gpid.partition_index.max(0) as usize;
        let Ok(partition) = self.partition(gpid) else {
            return Err("cancelled");
        };
        let elapsed_ms = now_ms.saturating_sub(active.started_ms);
        match &active.kind {
            MoveKind::SwitchPrimary { from, to } => {
                if partition.primary.node == *to {
                    return Err("ok");
                }
                if partition.primary.node != *from || !partition.has_secondary(to) {
                    return Err("cancelled");
                }
                if elapsed_ms >= SWITCH_TIMEOUT_MS {
                    return Err("timed_out");
                }
                Ok(None)
            }
            MoveKind::MoveReplica { from, to, shard } => {
                if !partition.holds(to) {
                    if active.learner_added || !partition.holds(from) {
                        return Err("cancelled");
                    }
                    if !partition.learners.is_empty() || !self.healthy(partition, now_ms) {
                        return Ok(None); // wait for the partition to be whole
                    }
                    let Some(record) = self
                        .nodes
                        .get(to)
                        .filter(|record| self.is_alive(record, now_ms))
                    else {
                        return Err("cancelled");
                    };
                    let shard = self.kept_shard(to, gpid).unwrap_or(*shard);
                    let Some(address) = usize::try_from(shard)
                        .ok()
                        .and_then(|at| record.shard_addresses.get(at))
                    else {
                        return Err("cancelled");
                    };
                    let place = ReplicaPlace {
                        node: to.clone(),
                        shard,
                        address: address.clone(),
                    };
                    let mut next = partition.clone();
                    next.ballot += 1;
                    next.learners.push(place);
                    self.balancer
                        .moves
                        .get_mut(&gpid)
                        .expect("a move")
                        .learner_added = true;
                    return Ok(Some(((gpid.app_id, index), next)));
                }
                if partition.has_learner(to) {
                    if elapsed_ms >= COPY_TIMEOUT_MS {
                        return Err("timed_out");
                    }
                    return Ok(None);
                }
                // `to` is a secondary or the primary now.
                if !partition.holds(from) {
                    return Err("ok");
                }
                if partition.primary.node == *from {
                    // The primary hands off to the new replica first
                    // (`handoff_target`); a stuck handoff gives up.
                    if elapsed_ms >= COPY_TIMEOUT_MS {
                        return Err("timed_out");
                    }
                    return Ok(None);
                }
                if !self.stepped_down(gpid, partition, from, now_ms) {
                    return Ok(None); // it may still think it is the primary
                }
                let removed = without(partition, from).expect("a secondary");
                self.finish_move(gpid, "ok");
                Ok(Some(((gpid.app_id, index), removed)))
            }
        }
    }

    /// A partition no move works on, whole and without learners, with
    /// more primary and secondaries than its replica count loses a
    /// secondary: one on a removing node first, else one on the node
    /// holding the most replicas (what a move leaves when meta restarted
    /// in its middle, or an operator's copy).
    fn trim_extra_replicas(&self, now_ms: u64) -> Vec<((i32, usize), StoredPartition)> {
        let loads = self.placed_counts();
        let mut changes = Vec::new();
        for (app_id, table) in &self.data.tables {
            if !table.is_available() || table.restore.is_some() {
                continue;
            }
            for (index, partition) in table.partitions.iter().enumerate() {
                let gpid = Gpid {
                    app_id: *app_id,
                    partition_index: index as i32,
                };
                if self.balancer.moves.contains_key(&gpid)
                    || !partition.learners.is_empty()
                    || partition.secondaries.len() < table.replica_count.max(1) as usize
                    || !self.healthy(partition, now_ms)
                {
                    continue;
                }
                let extra = partition
                    .secondaries
                    .iter()
                    .max_by_key(|place| {
                        (
                            self.data.removing_nodes.contains(&place.node),
                            loads.get(place.node.as_str()).copied().unwrap_or(0),
                            place.node.clone(),
                        )
                    })
                    .expect("more than one member")
                    .node
                    .clone();
                if !self.stepped_down(gpid, partition, &extra, now_ms) {
                    continue;
                }
                let removed = without(partition, &extra).expect("a secondary");
                changes.push(((*app_id, index), removed));
            }
        }
        changes
    }

    /// The plan's view of the cluster: alive nodes, and every partition of
    /// the available tables whose members are all alive (busy when it has
    /// learners or a move in progress).
    fn cluster_view(&self, now_ms: u64) -> (Cluster, Vec<Move>) {
        let nodes: Vec<Node> = self
            .nodes
            .iter()
            .filter(|(_, record)| self.is_alive(record, now_ms))
            .map(|(name, record)| Node {
                name: name.clone(),
                shards: record.shard_addresses.len(),
                removing: self.data.removing_nodes.contains(name),
            })
            .collect();
        let index: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(at, node)| (node.name.as_str(), at))
            .collect();
        let place = |stored: &ReplicaPlace| -> Option<Place> {
            Some(Place {
                node: *index.get(stored.node.as_str())?,
                shard: stored.shard.max(0) as usize,
            })
        };
        let mut partitions = Vec::new();
        for (app_id, table) in &self.data.tables {
            if !table.is_available() || table.restore.is_some() {
                continue;
            }
            for (at, stored) in table.partitions.iter().enumerate() {
                let gpid = Gpid {
                    app_id: *app_id,
                    partition_index: at as i32,
                };
                let Some(primary) = place(&stored.primary) else {
                    continue;
                };
                let Some(secondaries) = stored.secondaries.iter().map(place).collect() else {
                    continue;
                };
                partitions.push(Partition {
                    gpid,
                    primary,
                    secondaries,
                    busy: !stored.learners.is_empty() || self.balancer.moves.contains_key(&gpid),
                });
            }
        }
        let in_flight = self
            .balancer
            .moves
            .iter()
            .filter_map(|(gpid, active)| match &active.kind {
                MoveKind::SwitchPrimary { from, to } => Some(Move::SwitchPrimary {
                    gpid: *gpid,
                    from: *index.get(from.as_str())?,
                    to: *index.get(to.as_str())?,
                }),
                MoveKind::MoveReplica { from, to, shard } => Some(Move::MoveReplica {
                    gpid: *gpid,
                    from: *index.get(from.as_str())?,
                    to: Place {
                        node: *index.get(to.as_str())?,
                        shard: *shard as usize,
                    },
                }),
            })
            .collect();
        (Cluster { nodes, partitions }, in_flight)
    }

    /// The moves of one plan (evacuation only unless `balance`), by node
    /// name.
    fn plan_moves(&self, now_ms: u64, balance: bool) -> Vec<(Gpid, MoveKind)> {
        let Some(replication) = self.settings.replication else {
            return Vec::new();
        };
        let (cluster, in_flight) = self.cluster_view(now_ms);
        let bounds = Bounds {
            moves_max: replication.balance_moves_max,
            copies_per_node_max: replication.balance_copies_per_node_max,
            switches_max: replication.balance_switches_max,
        };
        let name = |node: usize| cluster.nodes[node].name.clone();
        balance::plan(&cluster, &in_flight, bounds, balance)
            .into_iter()
            .map(|one| {
                let kind = match one {
                    Move::SwitchPrimary { from, to, .. } => MoveKind::SwitchPrimary {
                        from: name(from),
                        to: name(to),
                    },
                    Move::MoveReplica { from, to, .. } => MoveKind::MoveReplica {
                        from: name(from),
                        to: name(to.node),
                        shard: to.shard as i32,
                    },
                };
                (one.gpid(), kind)
            })
            .collect()
    }

    // ---- the operator's requests ----

    pub(super) fn balancer_request(&mut self, request: &BalancerRequest, now: MetaTime) -> Step {
        let now_ms = now.monotonic_ms;
        if self.settings.replication.is_none() {
            return Step::error(
                ErrorCode::InvalidArgument,
                "the balancer needs replication (meta config replication = true)",
            );
        }
        match request {
            BalancerRequest::GetLevel => {
                pairs(vec![("level".into(), self.data.level.name().into())])
            }
            BalancerRequest::SetLevel { level } => {
                let Some(level) = MetaLevel::parse(level) else {
                    return Step::error(
                        ErrorCode::InvalidArgument,
                        format!("unknown meta level {level:?}: one of freezed, steady, lively"),
                    );
                };
                let mut next = self.successor();
                next.level = level;
                Step {
                    reply: Ok(ResponseBody::Pairs(vec![(
                        "level".into(),
                        level.name().into(),
                    )])),
                    persist: Some(next),
                }
            }
            BalancerRequest::Balance { apply } => {
                if let Some(refused) = self.refuse_moves(now_ms) {
                    return refused;
                }
                let planned = self.plan_moves(now_ms, true);
                let mut listed = vec![("moves".to_owned(), planned.len().to_string())];
                for (gpid, kind) in planned {
                    listed.push((gpid_name(gpid), kind.describe()));
                    if *apply {
                        self.start_move(gpid, kind, now_ms);
                    }
                }
                pairs(listed)
            }
            BalancerRequest::Propose(proposed) => self.propose(proposed, now_ms),
            BalancerRequest::ListMoves => {
                let mut listed = vec![("moves".to_owned(), self.balancer.moves.len().to_string())];
                for (gpid, active) in &self.balancer.moves {
                    let step = if active.learner_added {
                        ", learner added"
                    } else {
                        ""
                    };
                    listed.push((
                        gpid_name(*gpid),
                        format!(
                            "{} ({} ms{step})",
                            active.kind.describe(),
                            now_ms.saturating_sub(active.started_ms)
                        ),
                    ));
                }
                pairs(listed)
            }
            BalancerRequest::RemoveNode { node, cancel } => self.remove_node(node, *cancel),
        }
    }

    /// Why no move may start now, as the error step.
    fn refuse_moves(&self, now_ms: u64) -> Option<Step> {
        if self.data.level == MetaLevel::Freezed {
            return Some(Step::error(
                ErrorCode::InvalidArgument,
                "meta level is freezed: no move starts (set_meta_level steady or lively first)",
            ));
        }
        self.frozen(now_ms)
            .map(|why| Step::error(ErrorCode::NotEnoughNodes, why))
    }

    fn propose(&mut self, proposed: &ProposedMove, now_ms: u64) -> Step {
        if let Some(refused) = self.refuse_moves(now_ms) {
            return refused;
        }
        let gpid = match proposed {
            ProposedMove::MovePrimary { gpid, .. }
            | ProposedMove::CopyReplica { gpid, .. }
            | ProposedMove::RemoveReplica { gpid, .. } => *gpid,
        };
        let partition = match self.partition(gpid) {
            Ok(partition) => partition,
            Err(error) => return Step::reply(Err(error)),
        };
        let invalid = |message: String| {
            Step::error(
                ErrorCode::InvalidArgument,
                format!("partition {}: {message}", gpid_name(gpid)),
            )
        };
        if self.balancer.moves.contains_key(&gpid) {
            return invalid("a move of it is in progress (see moves)".into());
        }
        if !partition.learners.is_empty() {
            return invalid("it has a learner catching up; try again once it joined".into());
        }
        if !self.healthy(partition, now_ms) {
            return invalid("a member is dead; failure handling comes first".into());
        }
        match proposed {
            ProposedMove::MovePrimary { to, .. } => {
                if !partition.has_secondary(to) {
                    return invalid(format!(
                        "{to} is not a secondary of it (its primary is {}); a primary moves only to a secondary",
                        partition.primary.node
                    ));
                }
                let kind = MoveKind::SwitchPrimary {
                    from: partition.primary.node.clone(),
                    to: to.clone(),
                };
                let described = kind.describe();
                self.start_move(gpid, kind, now_ms);
                pairs(vec![(gpid_name(gpid), described)])
            }
            ProposedMove::CopyReplica { from, to, .. } => {
                if !partition.holds(from) {
                    return invalid(format!("{from} holds no replica of it"));
                }
                if partition.holds(to) {
                    return invalid(format!(
                        "{to} holds a replica of it already; two replicas of a partition never share a node"
                    ));
                }
                let Some(record) = self.nodes.get(to).filter(|r| self.is_alive(r, now_ms)) else {
                    return invalid(format!("{to} is not an alive node"));
                };
                if self.data.removing_nodes.contains(to) {
                    return invalid(format!("{to} is being removed"));
                }
                let shards = record.shard_addresses.len();
                let (load, _) = self.shard_counts(to, shards);
                let shard = (0..shards).min_by_key(|s| (load[*s], *s)).unwrap_or(0);
                let kind = MoveKind::MoveReplica {
                    from: from.clone(),
                    to: to.clone(),
                    shard: shard as i32,
                };
                let described = kind.describe();
                self.start_move(gpid, kind, now_ms);
                pairs(vec![(gpid_name(gpid), described)])
            }
            ProposedMove::RemoveReplica { node, .. } => {
                if partition.primary.node == *node {
                    return invalid(format!(
                        "{node} is its primary; move the primary first (propose move_primary)"
                    ));
                }
                if !partition.has_secondary(node) {
                    return invalid(format!("{node} is not a secondary of it"));
                }
                let removed = without(partition, node).expect("a secondary");
                let mut next = self.successor();
                next.tables
                    .get_mut(&gpid.app_id)
                    .expect("found above")
                    .partitions[gpid.partition_index as usize] = removed;
                Step {
                    reply: Ok(ResponseBody::Pairs(vec![(
                        gpid_name(gpid),
                        format!("removed the replica on {node}"),
                    )])),
                    persist: Some(next),
                }
            }
        }
    }

    fn remove_node(&self, node: &str, cancel: bool) -> Step {
        let placed: BTreeSet<&str> = self.available_places().map(|p| p.node.as_str()).collect();
        if !self.nodes.contains_key(node) && !placed.contains(node) {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!("unknown node {node:?} (see nodes)"),
            );
        }
        let removing = self.data.removing_nodes.contains(node);
        let persist = if removing == cancel {
            let mut next = self.successor();
            if cancel {
                next.removing_nodes.remove(node);
            } else {
                next.removing_nodes.insert(node.to_owned());
            }
            Some(next)
        } else {
            None
        };
        let replicas = self.available_places().filter(|p| p.node == node).count();
        let primaries = self
            .data
            .tables
            .values()
            .filter(|table| table.is_available())
            .flat_map(|table| &table.partitions)
            .filter(|partition| partition.primary.node == node)
            .count();
        Step {
            reply: Ok(ResponseBody::Pairs(vec![
                ("node".into(), node.to_owned()),
                ("removing".into(), (!cancel).to_string()),
                ("replicas".into(), replicas.to_string()),
                ("primaries".into(), primaries.to_string()),
                (
                    "safe_to_stop".into(),
                    (!cancel && replicas == 0).to_string(),
                ),
            ])),
            persist,
        }
    }
}

/// `partition` without its secondary or learner `node`, under ballot + 1.
fn without(partition: &StoredPartition, node: &str) -> Option<StoredPartition> {
    let members = ReplicaMembers::of(partition, &[]);
    let config = reconfig::without_member(&members.config, members.id(node)?)?;
    Some(members.stored(partition, &config, &[]))
}

fn pairs(pairs: Vec<(String, String)>) -> Step {
    Step::reply(Ok(ResponseBody::Pairs(pairs)))
}

fn gpid_name(gpid: Gpid) -> String {
    format!("{}.{}", gpid.app_id, gpid.partition_index)
}

#[cfg(test)]
#[path = "balancer_tests.rs"]
mod tests;
