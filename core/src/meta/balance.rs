//! The balancer's plan, as a pure function (docs/balance.md): given where
//! every replica of the available tables is, the moves that spread
//! replicas and primaries evenly over the nodes — per table and in total —
//! and over the shards within each node.
//!
//! Nothing here knows meta's state machine, the store or time: meta builds
//! a [`Cluster`], calls [`plan`], and carries the moves out one
//! reconfiguration at a time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use markab_wire::message::Gpid;

/// A replica's place in the plan: node index into [`Cluster::nodes`] and
/// shard on that node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub node: usize,
    pub shard: usize,
}

/// One node the plan may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub shards: usize,
    /// Being removed: every replica leaves it and none arrives.
    pub removing: bool,
}

/// One partition of an available table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub gpid: Gpid,
    pub primary: Place,
    pub secondaries: Vec<Place>,
    /// A move, a learner or a dead member: the plan leaves it alone (its
    /// replicas still count where they are).
    pub busy: bool,
}

impl Partition {
    fn places(&self) -> impl Iterator<Item = &Place> {
        std::iter::once(&self.primary).chain(&self.secondaries)
    }

    fn holds(&self, node: usize) -> bool {
        self.places().any(|place| place.node == node)
    }
}

/// What the plan sees: the nodes (alive ones only) and the partitions of
/// the available tables whose every member is one of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub partitions: Vec<Partition>,
}

/// A move the plan asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Move {
    /// The primary on `from` hands its role to the secondary on `to`.
    SwitchPrimary { gpid: Gpid, from: usize, to: usize },
    /// The replica on `from` moves to `to` (a learner there, promoted once
    /// caught up, then the one on `from` removed; a primary hands its role
    /// to the new replica first).
    MoveReplica { gpid: Gpid, from: usize, to: Place },
}

impl Move {
    pub fn gpid(&self) -> Gpid {
        match self {
            Move::SwitchPrimary { gpid, .. } | Move::MoveReplica { gpid, .. } => *gpid,
        }
    }
}

/// How many moves one plan may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Moves of any kind, those already in flight included.
    pub moves_max: usize,
    /// Replica moves (copies) touching one node, as source or target, those
    /// in flight included.
    pub copies_per_node_max: usize,
    /// Primary switches, those in flight included: each stops its
    /// partition's writes until the new primary serves. A path of switches
    /// longer than this starts only when none runs.
    pub switches_max: usize,
}

/// The moves that bring `cluster` closer to balance, at most what
/// `bounds` allows beyond `in_flight` (moves already running, which the
/// plan does not touch and counts as done). Replicas leave removing nodes first, then
/// replicas are spread per table and in total, then primaries per table
/// and in total — primaries by switches to a secondary, the cheap move.
/// Applying the moves and planning again reaches a fixed point: the
/// counts of replicas and of primaries per node differ by at most one per
/// table and in total, and replicas per shard within a node by at most
/// one, whenever switches can reach it (docs/balance.md, "The plan").
/// Without `balance` it only evacuates removing nodes.
pub fn plan(cluster: &Cluster, in_flight: &[Move], bounds: Bounds, balance: bool) -> Vec<Move> {
    let mut planner = Planner::new(cluster, in_flight, bounds);
    planner.evacuate();
    if balance {
        planner.spread_replicas();
        planner.spread_primaries();
        planner.spread_shards();
        planner.spread_shard_primaries();
    }
    planner.planned
}

/// `cluster` after `moves` completed (for tests, and to reason about
/// fixed points).
pub fn apply(cluster: &Cluster, moves: &[Move]) -> Cluster {
    let mut next = cluster.clone();
    for one in moves {
        apply_one(&mut next, one);
    }
    next
}

fn apply_one(cluster: &mut Cluster, one: &Move) {
    let Some(partition) = cluster
        .partitions
        .iter_mut()
        .find(|partition| partition.gpid == one.gpid())
    else {
        return;
    };
    match *one {
        Move::SwitchPrimary { from, to, .. } => {
            if let Some(at) = partition.secondaries.iter().position(|p| p.node == to) {
                if partition.primary.node == from {
                    std::mem::swap(&mut partition.primary, &mut partition.secondaries[at]);
                }
            }
        }
        Move::MoveReplica { from, to, .. } => {
            if partition.primary.node == from {
                partition.primary = to;
            } else if let Some(place) = partition.secondaries.iter_mut().find(|p| p.node == from) {
                *place = to;
            }
        }
    }
}

struct Planner {
    cluster: Cluster,
    bounds: Bounds,
    /// Moves so far: in flight, then planned.
    moves_count: usize,
    /// Of those, primary switches.
    switches_count: usize,
    /// A path of switches was found that the bounds did not allow.
    switches_blocked: bool,
    copies_per_node: Vec<usize>,
    /// Partitions a move already touches.
    touched: BTreeSet<Gpid>,
    planned: Vec<Move>,
}

impl Planner {
    fn new(cluster: &Cluster, in_flight: &[Move], bounds: Bounds) -> Planner {
        let mut copies_per_node = vec![0; cluster.nodes.len()];
        for one in in_flight {
            if let Move::MoveReplica { from, to, .. } = one {
                for node in [*from, to.node] {
                    if let Some(count) = copies_per_node.get_mut(node) {
                        *count += 1;
                    }
                }
            }
        }
        Planner {
            // Counted as done: a plan that saw the replicas a running move
            // takes away still in place asked for the same move again, on
            // another partition, and the next plans moved both back — two
            // partitions went to and fro between two nodes for minutes.
            cluster: apply(cluster, in_flight),
            bounds,
            moves_count: in_flight.len(),
            switches_count: in_flight
                .iter()
                .filter(|one| matches!(one, Move::SwitchPrimary { .. }))
                .count(),
            switches_blocked: false,
            copies_per_node,
            touched: in_flight.iter().map(Move::gpid).collect(),
            planned: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.moves_count >= self.bounds.moves_max
    }

    fn usable(&self, node: usize) -> bool {
        !self.cluster.nodes[node].removing
    }

    fn free(&self, partition: &Partition) -> bool {
        !partition.busy && !self.touched.contains(&partition.gpid)
    }

    fn copy_allowed(&self, from: usize, to: usize) -> bool {
        !self.full()
            && self.copies_per_node[from] < self.bounds.copies_per_node_max
            && self.copies_per_node[to] < self.bounds.copies_per_node_max
    }

    /// Whether a path of `steps` switches fits the bounds: within
    /// `moves_max`, and within `switches_max` unless no switch runs (a
    /// longer path must still be able to start).
    fn switches_allowed(&self, steps: usize) -> bool {
        self.moves_count + steps <= self.bounds.moves_max
            && (self.switches_count == 0 || self.switches_count + steps <= self.bounds.switches_max)
    }

    fn record(&mut self, one: Move) {
        match one {
            Move::MoveReplica { from, to, .. } => {
                self.copies_per_node[from] += 1;
                self.copies_per_node[to.node] += 1;
            }
            Move::SwitchPrimary { .. } => self.switches_count += 1,
        }
        self.moves_count += 1;
        self.touched.insert(one.gpid());
        apply_one(&mut self.cluster, &one);
        self.planned.push(one);
    }

    /// Replicas per node and per shard, of one table (`app_id`) or all.
    fn shard_counts(&self, app_id: Option<i32>, primaries_only: bool) -> Vec<Vec<usize>> {
        let mut counts: Vec<Vec<usize>> = self
            .cluster
            .nodes
            .iter()
            .map(|node| vec![0; node.shards.max(1)])
            .collect();
        for partition in &self.cluster.partitions {
            if app_id.is_some_and(|app_id| partition.gpid.app_id != app_id) {
                continue;
            }
            let places: Vec<&Place> = if primaries_only {
                vec![&partition.primary]
            } else {
                partition.places().collect()
            };
            for place in places {
                if let Some(count) = counts
                    .get_mut(place.node)
                    .and_then(|shards| shards.get_mut(place.shard))
                {
                    *count += 1;
                }
            }
        }
        counts
    }

    fn node_counts(&self, app_id: Option<i32>, primaries_only: bool) -> Vec<usize> {
        self.shard_counts(app_id, primaries_only)
            .iter()
            .map(|shards| shards.iter().sum())
            .collect()
    }

    fn tables(&self) -> Vec<i32> {
        let tables: BTreeSet<i32> = self
            .cluster
            .partitions
            .iter()
            .map(|partition| partition.gpid.app_id)
            .collect();
        tables.into_iter().collect()
    }

    /// The least-loaded shard of `node` (ties: lowest index).
    fn target_shard(&self, node: usize) -> usize {
        let shards = &self.shard_counts(None, false)[node];
        (0..shards.len())
            .min_by_key(|shard| (shards[*shard], *shard))
            .unwrap_or(0)
    }

    /// Moves the replica of `partition_at` on `from` to `to`'s
    /// least-loaded shard.
    fn move_replica(&mut self, partition_at: usize, from: usize, to: usize) {
        let gpid = self.cluster.partitions[partition_at].gpid;
        let shard = self.target_shard(to);
        self.record(Move::MoveReplica {
            gpid,
            from,
            to: Place { node: to, shard },
        });
    }

    /// A free partition of `app_id` (any table when `None`) with a replica
    /// on `from` and none on `to`: one where `from` holds a secondary
    /// first (a primary's move needs a switch too), then one on `from`'s
    /// busiest shard.
    fn movable(&self, app_id: Option<i32>, from: usize, to: usize) -> Option<usize> {
        let shards = &self.shard_counts(None, false)[from];
        self.cluster
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, partition)| {
                app_id.is_none_or(|app_id| partition.gpid.app_id == app_id)
                    && self.free(partition)
                    && partition.holds(from)
                    && !partition.holds(to)
            })
            .min_by_key(|(_, partition)| {
                let place = partition
                    .places()
                    .find(|place| place.node == from)
                    .expect("it holds from");
                let load = shards.get(place.shard).copied().unwrap_or(0);
                (
                    partition.primary.node == from,
                    std::cmp::Reverse(load),
                    partition.gpid,
                )
            })
            .map(|(at, _)| at)
    }

    /// Every replica on a removing node moves to the usable node with the
    /// fewest replicas of its table, then in total, that holds none of
    /// the partition.
    fn evacuate(&mut self) {
        for at in 0..self.cluster.partitions.len() {
            let partition = &self.cluster.partitions[at];
            if !self.free(partition) {
                continue;
            }
            let Some(from) = partition
                .places()
                .map(|place| place.node)
                .find(|node| !self.usable(*node))
            else {
                continue;
            };
            let app_id = partition.gpid.app_id;
            let per_table = self.node_counts(Some(app_id), false);
            let total = self.node_counts(None, false);
            let target = (0..self.cluster.nodes.len())
                .filter(|node| self.usable(*node) && !partition.holds(*node))
                .min_by_key(|node| (per_table[*node], total[*node], *node));
            if let Some(to) = target {
                if self.copy_allowed(from, to) {
                    self.move_replica(at, from, to);
                }
            }
        }
    }

    /// The usable nodes with the most and the fewest of `counts` (ties: the
    /// busier, resp. idler, in `tie`; then the lowest index).
    fn extremes(&self, counts: &[usize], tie: &[usize]) -> Option<(usize, usize)> {
        let usable: Vec<usize> = (0..counts.len()).filter(|n| self.usable(*n)).collect();
        let most = usable
            .iter()
            .copied()
            .max_by_key(|n| (counts[*n], tie[*n], std::cmp::Reverse(*n)))?;
        let fewest = usable
            .iter()
            .copied()
            .min_by_key(|n| (counts[*n], tie[*n], *n))?;
        Some((most, fewest))
    }

    /// Replicas: per table until every usable node holds within one of
    /// every other, then in total, moving only a table's replica from a
    /// node holding more of that table than the target (which keeps the
    /// per-table spread).
    fn spread_replicas(&mut self) {
        for app_id in self.tables() {
            loop {
                let counts = self.node_counts(Some(app_id), false);
                let total = self.node_counts(None, false);
                let Some((most, fewest)) = self.extremes(&counts, &total) else {
                    break;
                };
                if counts[most] < counts[fewest] + 2 || !self.copy_allowed(most, fewest) {
                    break;
                }
                let Some(at) = self.movable(Some(app_id), most, fewest) else {
                    break;
                };
                self.move_replica(at, most, fewest);
            }
        }
        loop {
            let total = self.node_counts(None, false);
            let Some((most, fewest)) = self.extremes(&total, &total) else {
                break;
            };
            if total[most] < total[fewest] + 2 || !self.copy_allowed(most, fewest) {
                break;
            }
            let candidate = self.tables().into_iter().find_map(|app_id| {
                let counts = self.node_counts(Some(app_id), false);
                if counts[most] > counts[fewest] {
                    self.movable(Some(app_id), most, fewest)
                } else {
                    None
                }
            });
            let Some(at) = candidate else {
                break;
            };
            self.move_replica(at, most, fewest);
        }
    }

    /// Primaries, by switches along a path of partitions (primary on one
    /// node, a secondary on the next): per table, from a node with the
    /// most primaries to one with at least two fewer; then in total, using
    /// only switches that keep every table's spread (from a node with more
    /// of the table's primaries than the next).
    fn spread_primaries(&mut self) {
        for app_id in self.tables() {
            while !self.full() {
                let counts = self.node_counts(Some(app_id), true);
                if !self.switch_path(&counts, |_, _, _| true, Some(app_id)) {
                    break;
                }
            }
        }
        while !self.full() {
            let total = self.node_counts(None, true);
            let per_table: BTreeMap<i32, Vec<usize>> = self
                .tables()
                .into_iter()
                .map(|app_id| (app_id, self.node_counts(Some(app_id), true)))
                .collect();
            let keeps_table_spread = |app_id: i32, from: usize, to: usize| {
                per_table
                    .get(&app_id)
                    .is_some_and(|counts| counts[from] > counts[to])
            };
            // A trade of replicas only where no switch could do: not when
            // switches wait for others to finish.
            if !self.switch_path(&total, keeps_table_spread, None)
                && (self.switches_blocked || !self.swap_primary(&total))
            {
                break;
            }
        }
    }

    /// When no switch reaches: the node with the most primaries in total
    /// and the one with the fewest trade replicas of one table — the first
    /// gives a primary of the table to the second, which gives a secondary
    /// of the table back — so that replica counts stay and one primary
    /// moves. The table must have more primaries on the first node.
    fn swap_primary(&mut self, total: &[usize]) -> bool {
        let Some((most, fewest)) = self.extremes(total, total) else {
            return false;
        };
        if total[most] < total[fewest] + 2
            || self.moves_count + 2 > self.bounds.moves_max
            || self.copies_per_node[most] + 2 > self.bounds.copies_per_node_max
            || self.copies_per_node[fewest] + 2 > self.bounds.copies_per_node_max
        {
            return false;
        }
        for app_id in self.tables() {
            let primaries = self.node_counts(Some(app_id), true);
            if primaries[most] <= primaries[fewest] {
                continue;
            }
            let of_table =
                |partition: &&Partition| partition.gpid.app_id == app_id && self.free(partition);
            let given = self
                .cluster
                .partitions
                .iter()
                .position(|p| of_table(&p) && p.primary.node == most && !p.holds(fewest));
            let taken = self.cluster.partitions.iter().position(|p| {
                of_table(&p)
                    && p.secondaries.iter().any(|place| place.node == fewest)
                    && !p.holds(most)
            });
            if let (Some(given), Some(taken)) = (given, taken) {
                self.move_replica(given, most, fewest);
                self.move_replica(taken, fewest, most);
                return true;
            }
        }
        false
    }

    /// Finds a path of switches from a usable node with the most of
    /// `counts` to one with at least two fewer and records it; `allowed`
    /// filters each step (table, from, to). Whether it found one.
    fn switch_path(
        &mut self,
        counts: &[usize],
        allowed: impl Fn(i32, usize, usize) -> bool,
        app_id: Option<i32>,
    ) -> bool {
        let nodes = self.cluster.nodes.len();
        let Some(most) = (0..nodes)
            .filter(|n| self.usable(*n))
            .map(|n| counts[n])
            .max()
        else {
            return false;
        };
        for start in (0..nodes).filter(|n| self.usable(*n) && counts[*n] == most) {
            // Breadth first over nodes; each edge is a free partition with
            // its primary on the edge's tail and a secondary on its head.
            let mut came_from: Vec<Option<(usize, usize)>> = vec![None; nodes];
            let mut seen = vec![false; nodes];
            seen[start] = true;
            let mut queue = VecDeque::from([start]);
            let mut end = None;
            while let Some(node) = queue.pop_front() {
                if node != start && counts[node] + 2 <= most {
                    end = Some(node);
                    break;
                }
                for (at, partition) in self.cluster.partitions.iter().enumerate() {
                    if partition.primary.node != node
                        || !self.free(partition)
                        || app_id.is_some_and(|app_id| partition.gpid.app_id != app_id)
                    {
                        continue;
                    }
                    for secondary in &partition.secondaries {
                        let next = secondary.node;
                        if seen[next]
                            || !self.usable(next)
                            || !allowed(partition.gpid.app_id, node, next)
                        {
                            continue;
                        }
                        seen[next] = true;
                        came_from[next] = Some((node, at));
                        queue.push_back(next);
                    }
                }
            }
            let Some(end) = end else { continue };
            let mut steps = Vec::new();
            let mut node = end;
            while let Some((previous, at)) = came_from[node] {
                steps.push((at, previous, node));
                node = previous;
            }
            if !self.switches_allowed(steps.len()) {
                self.switches_blocked = true;
                return false;
            }
            for (at, from, to) in steps.into_iter().rev() {
                let gpid = self.cluster.partitions[at].gpid;
                self.record(Move::SwitchPrimary { gpid, from, to });
            }
            return true;
        }
        false
    }

    /// Within each node, replicas per shard: a node whose busiest shard
    /// holds two more than its idlest swaps one replica with another node
    /// — its replica on the busy shard goes to the other node, and one of
    /// the other node's replicas comes to its idle shard — keeping every
    /// node's count.
    fn spread_shards(&mut self) {
        for node in 0..self.cluster.nodes.len() {
            loop {
                if !self.usable(node) || self.full() {
                    break;
                }
                let shards = self.shard_counts(None, false)[node].clone();
                let busy = (0..shards.len()).max_by_key(|s| (shards[*s], std::cmp::Reverse(*s)));
                let idle = (0..shards.len()).min_by_key(|s| (shards[*s], *s));
                let (Some(busy), Some(idle)) = (busy, idle) else {
                    break;
                };
                if shards[busy] < shards[idle] + 2 {
                    break;
                }
                if !self.swap_shard(node, busy, idle) {
                    break;
                }
            }
        }
    }

    /// Within each node, primaries per shard: while a node's busiest shard
    /// holds two primaries more than its idlest, one primary moves from
    /// the busy shard to the idle one along a path of switches among one
    /// table's partitions — the busy shard's primary to a secondary
    /// elsewhere, that place's primary on, … until a partition whose
    /// replica on the idle shard takes the role. Every shard on the way
    /// gives one and takes one, so no node's or table's count changes.
    fn spread_shard_primaries(&mut self) {
        for node in 0..self.cluster.nodes.len() {
            while self.usable(node) {
                let primaries = self.shard_counts(None, true);
                let shards = &primaries[node];
                let busy = (0..shards.len()).max_by_key(|s| (shards[*s], std::cmp::Reverse(*s)));
                let idle = (0..shards.len()).min_by_key(|s| (shards[*s], *s));
                let (Some(busy), Some(idle)) = (busy, idle) else {
                    break;
                };
                if shards[busy] < shards[idle] + 2 {
                    break;
                }
                let from = Place { node, shard: busy };
                let to = Place { node, shard: idle };
                let Some(steps) = self
                    .tables()
                    .into_iter()
                    .find_map(|app_id| self.primary_path(app_id, from, to))
                else {
                    break;
                };
                if !self.switches_allowed(steps.len()) {
                    break;
                }
                for (at, from, to) in steps {
                    let gpid = self.cluster.partitions[at].gpid;
                    self.record(Move::SwitchPrimary { gpid, from, to });
                }
            }
        }
    }

    /// A path of switches among the free partitions of table `app_id` that
    /// moves one primary from place `from` to place `to`: (partition, from
    /// node, to node) in order. Breadth first over places; an edge is a
    /// partition with its primary at the edge's tail and a secondary at its
    /// head.
    fn primary_path(
        &self,
        app_id: i32,
        from: Place,
        to: Place,
    ) -> Option<Vec<(usize, usize, usize)>> {
        let mut came_from: BTreeMap<Place, (Place, usize)> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(place) = queue.pop_front() {
            if place == to {
                let mut steps = Vec::new();
                let mut at = to;
                while let Some((previous, partition)) = came_from.get(&at) {
                    steps.push((*partition, previous.node, at.node));
                    at = *previous;
                }
                steps.reverse();
                return Some(steps);
            }
            for (at, partition) in self.cluster.partitions.iter().enumerate() {
                if partition.gpid.app_id != app_id
                    || partition.primary != place
                    || !self.free(partition)
                {
                    continue;
                }
                for next in &partition.secondaries {
                    if *next != from && self.usable(next.node) && !came_from.contains_key(next) {
                        came_from.insert(*next, (place, at));
                        queue.push_back(*next);
                    }
                }
            }
        }
        None
    }

    /// One swap for [`Planner::spread_shards`]: a replica of `node` on
    /// shard `busy` and a replica of the same table on another node, each
    /// moving to the other's node (to `node`'s shard `idle`).
    fn swap_shard(&mut self, node: usize, busy: usize, idle: usize) -> bool {
        if self.moves_count + 2 > self.bounds.moves_max {
            return false;
        }
        let partitions = &self.cluster.partitions;
        for (at, partition) in partitions.iter().enumerate() {
            if !self.free(partition)
                || !partition
                    .places()
                    .any(|place| place.node == node && place.shard == busy)
            {
                continue;
            }
            for (other_at, other) in partitions.iter().enumerate() {
                if other_at == at
                    || other.gpid.app_id != partition.gpid.app_id
                    || !self.free(other)
                    || other.holds(node)
                {
                    continue;
                }
                let Some(peer) = other
                    .places()
                    .map(|place| place.node)
                    .find(|peer| self.usable(*peer) && !partition.holds(*peer))
                else {
                    continue;
                };
                if !self.copy_allowed(node, peer)
                    || self.copies_per_node[node] + 2 > self.bounds.copies_per_node_max
                    || self.copies_per_node[peer] + 2 > self.bounds.copies_per_node_max
                {
                    return false;
                }
                let peer_shard = other
                    .places()
                    .find(|place| place.node == peer)
                    .expect("found above")
                    .shard;
                let (gpid, other_gpid) = (partition.gpid, other.gpid);
                self.record(Move::MoveReplica {
                    gpid,
                    from: node,
                    to: Place {
                        node: peer,
                        shard: peer_shard,
                    },
                });
                self.record(Move::MoveReplica {
                    gpid: other_gpid,
                    from: peer,
                    to: Place { node, shard: idle },
                });
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
#[path = "balance_tests.rs"]
mod tests;
