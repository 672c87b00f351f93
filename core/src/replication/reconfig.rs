//! Meta's reconfiguration decisions for one partition, as pure functions
//! (docs/replication.md, "Reconfiguration"). Meta persists the returned
//! configuration before anyone hears of it; these functions know nothing
//! of storage, networks or the simulator.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::messages::{Ballot, Decree, NodeId, PartitionConfig};

/// What a replica last told meta about itself (carried by beacons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaReport {
    pub ballot: Ballot,
    pub last_prepared: Decree,
    pub last_committed: Decree,
}

/// Why a reconfiguration request was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReconfigError {
    #[error("request at ballot {got} but the partition is at ballot {current}")]
    StaleBallot { got: Ballot, current: Ballot },
    #[error("{node} is not the partition's primary")]
    NotPrimary { node: NodeId },
    #[error("{node} is neither a secondary nor a learner of the partition")]
    NotSecondary { node: NodeId },
    #[error("{node} is not a learner of the partition")]
    NotLearner { node: NodeId },
}

/// The configuration after `dead` nodes are gone, or `None` when nothing
/// changes. Dead secondaries and learners are removed (a learner never
/// becomes primary: it may miss committed decrees); a dead primary is replaced by the
/// live secondary with the highest prepared decree (ties: highest committed,
/// then lowest node id; a secondary without a report counts as 0, 0). A
/// dead primary with no live secondary stays: the partition waits for it.
/// Any change raises the ballot by exactly one.
pub fn on_nodes_dead(
    config: &PartitionConfig,
    reports: &BTreeMap<NodeId, ReplicaReport>,
    dead: &BTreeSet<NodeId>,
) -> Option<PartitionConfig> {
    let live: Vec<NodeId> = config
        .secondaries
        .iter()
        .copied()
        .filter(|node| !dead.contains(node))
        .collect();
    let primary_dead = config.primary.is_some_and(|p| dead.contains(&p));
    let (primary, secondaries) = if primary_dead && !live.is_empty() {
        let best = *live
            .iter()
            .max_by_key(|node| {
                let report = reports.get(node).copied().unwrap_or(ReplicaReport {
                    ballot: 0,
                    last_prepared: 0,
                    last_committed: 0,
                });
                (
                    report.last_prepared,
                    report.last_committed,
                    std::cmp::Reverse(**node),
                )
            })
            .expect("live is not empty");
        let rest = live.into_iter().filter(|node| *node != best).collect();
        (Some(best), rest)
    } else {
        (config.primary, live)
    };
    let learners = config
        .learners
        .iter()
        .copied()
        .filter(|node| !dead.contains(node))
        .collect();
    changed(config, primary, secondaries, learners)
}

/// Whether a membership request made at `ballot` by `requester` may be
/// honoured: only the primary of the current ballot talks to the other
/// replicas at that ballot.
fn check_primary_request(
    config: &PartitionConfig,
    requester: NodeId,
    ballot: Ballot,
) -> Result<(), ReconfigError> {
    if ballot != config.ballot {
        return Err(ReconfigError::StaleBallot {
            got: ballot,
            current: config.ballot,
        });
    }
    if config.primary != Some(requester) {
        return Err(ReconfigError::NotPrimary { node: requester });
    }
    Ok(())
}

/// The configuration after the primary `requester` (at `ballot`) asked to
/// remove the secondary (or caught-up learner) `node` it cannot reach.
pub fn on_remove_request(
    config: &PartitionConfig,
    requester: NodeId,
    ballot: Ballot,
    node: NodeId,
) -> Result<PartitionConfig, ReconfigError> {
    check_primary_request(config, requester, ballot)?;
    without_member(config, node).ok_or(ReconfigError::NotSecondary { node })
}

/// The configuration without the secondary or learner `node`, under
/// ballot + 1; `None` when `node` is neither (a primary is never removed
/// so: it hands its role over or is replaced first).
pub fn without_member(config: &PartitionConfig, node: NodeId) -> Option<PartitionConfig> {
    if !config.secondaries.contains(&node) && !config.learners.contains(&node) {
        return None;
    }
    let without = |nodes: &[NodeId]| nodes.iter().copied().filter(|held| *held != node).collect();
    changed(
        config,
        config.primary,
        without(&config.secondaries),
        without(&config.learners),
    )
}

/// The configuration after the primary `requester` (at `ballot`) asked to
/// promote learner `node`, which caught up: `node` becomes a secondary under
/// ballot + 1 (docs/replication.md, "Learning").
pub fn on_upgrade_request(
    config: &PartitionConfig,
    requester: NodeId,
    ballot: Ballot,
    node: NodeId,
) -> Result<PartitionConfig, ReconfigError> {
    check_primary_request(config, requester, ballot)?;
    if !config.learners.contains(&node) {
        return Err(ReconfigError::NotLearner { node });
    }
    let mut secondaries = config.secondaries.clone();
    secondaries.push(node);
    let learners = config
        .learners
        .iter()
        .copied()
        .filter(|held| *held != node)
        .collect();
    Ok(next(config, config.primary, secondaries, learners))
}

/// The configuration after the primary `requester` (at `ballot`), handing
/// off with no write in flight, asked to make the secondary `node` the
/// primary: `node` becomes primary and `requester` a secondary under
/// ballot + 1. Any secondary holds every committed decree
/// (**commit-needs-all**), and the new primary serves only once every
/// secondary — the old primary among them — took the new ballot.
pub fn on_switch_request(
    config: &PartitionConfig,
    requester: NodeId,
    ballot: Ballot,
    node: NodeId,
) -> Result<PartitionConfig, ReconfigError> {
    check_primary_request(config, requester, ballot)?;
    if !config.secondaries.contains(&node) {
        return Err(ReconfigError::NotSecondary { node });
    }
    let mut secondaries: Vec<NodeId> = config
        .secondaries
        .iter()
        .copied()
        .filter(|held| *held != node)
        .collect();
    secondaries.push(requester);
    Ok(next(
        config,
        Some(node),
        secondaries,
        config.learners.clone(),
    ))
}

/// The guardian: when the partition has fewer than `replica_count` replicas
/// (primary, secondaries and learners) and its primary is alive, the
/// configuration adding one learner on the alive node with the lowest
/// `load` (replicas it holds; missing = 0; ties: lowest node id) that holds
/// no replica of the partition yet, under ballot + 1. `None` when the
/// partition is full, has no live primary, or no node is free.
pub fn guardian(
    config: &PartitionConfig,
    alive: &BTreeSet<NodeId>,
    load: &BTreeMap<NodeId, usize>,
    replica_count: usize,
) -> Option<PartitionConfig> {
    let primary = config.primary?;
    if !alive.contains(&primary) {
        return None;
    }
    let replicas = config.replicas();
    if replicas.len() >= replica_count {
        return None;
    }
    let chosen = alive
        .iter()
        .copied()
        .filter(|node| !replicas.contains(node))
        .min_by_key(|node| (load.get(node).copied().unwrap_or(0), *node))?;
    let mut learners = config.learners.clone();
    learners.push(chosen);
    Some(next(
        config,
        config.primary,
        config.secondaries.clone(),
        learners,
    ))
}

/// The configuration after replica `node` restarted (its replica lost its
/// volatile state): it leaves its place like a dead node and comes back as
/// a learner, which catches up from its own log first and then from the
/// primary (no full copy when the primary's cache or log still reaches its
/// commit point) — except when it is the only member, which it then keeps
/// as primary under a new ballot: its durable log holds every acknowledged
/// write (invariant **acked-on-every-log**). A restarted learner stays a
/// learner under ballot + 1 (so that its recovered replica, which may have
/// logged the old ballot, accepts the configuration).
pub fn on_member_restarted(
    config: &PartitionConfig,
    reports: &BTreeMap<NodeId, ReplicaReport>,
    node: NodeId,
) -> Option<PartitionConfig> {
    if !config.replicas().contains(&node) {
        return None;
    }
    if config.primary == Some(node) && config.secondaries.is_empty() {
        return Some(next(
            config,
            Some(node),
            Vec::new(),
            config.learners.clone(),
        ));
    }
    let without = on_nodes_dead(config, reports, &BTreeSet::from([node]))?;
    let mut learners = without.learners.clone();
    learners.push(node);
    Some(next(config, without.primary, without.secondaries, learners))
}

/// `Some(new config)` at ballot + 1 when membership differs, else `None`.
fn changed(
    config: &PartitionConfig,
    primary: Option<NodeId>,
    secondaries: Vec<NodeId>,
    learners: Vec<NodeId>,
) -> Option<PartitionConfig> {
    if primary == config.primary && secondaries == config.secondaries && learners == config.learners
    {
        return None;
    }
    Some(next(config, primary, secondaries, learners))
}

fn next(
    config: &PartitionConfig,
    primary: Option<NodeId>,
    mut secondaries: Vec<NodeId>,
    mut learners: Vec<NodeId>,
) -> PartitionConfig {
    secondaries.sort();
    secondaries.dedup();
    learners.sort();
    learners.dedup();
    let result = PartitionConfig {
        ballot: config.ballot + 1,
        primary,
        secondaries,
        learners,
    };
    assert!(result.is_well_formed());
    assert!(result.ballot > config.ballot, "ballot-monotonic");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ballot: Ballot, primary: u32, secondaries: &[u32]) -> PartitionConfig {
        with_learners(ballot, primary, secondaries, &[])
    }

    fn with_learners(
        ballot: Ballot,
        primary: u32,
        secondaries: &[u32],
        learners: &[u32],
    ) -> PartitionConfig {
        PartitionConfig {
            ballot,
            primary: Some(NodeId(primary)),
            secondaries: secondaries.iter().map(|n| NodeId(*n)).collect(),
            learners: learners.iter().map(|n| NodeId(*n)).collect(),
        }
    }

    fn report(prepared: Decree, committed: Decree) -> ReplicaReport {
        ReplicaReport {
            ballot: 1,
            last_prepared: prepared,
            last_committed: committed,
        }
    }

    fn dead(nodes: &[u32]) -> BTreeSet<NodeId> {
        nodes.iter().map(|n| NodeId(*n)).collect()
    }

    // A dead secondary is removed under ballot + 1; the primary stays.
    #[test]
    fn dead_secondary_is_removed() {
        let new = on_nodes_dead(&config(4, 1, &[2, 3]), &BTreeMap::new(), &dead(&[3]));
        assert_eq!(new, Some(config(5, 1, &[2])));
    }

    // No dead member means no change (and no ballot bump).
    #[test]
    fn no_dead_member_no_change() {
        assert_eq!(
            on_nodes_dead(&config(4, 1, &[2, 3]), &BTreeMap::new(), &dead(&[9])),
            None
        );
    }

    // A dead primary is replaced by the secondary with the most prepared
    // mutations, even if another has committed more.
    #[test]
    fn dead_primary_replaced_by_most_prepared() {
        let reports = BTreeMap::from([(NodeId(2), report(10, 9)), (NodeId(3), report(12, 5))]);
        let new = on_nodes_dead(&config(4, 1, &[2, 3]), &reports, &dead(&[1]));
        assert_eq!(new, Some(config(5, 3, &[2])));
    }

    // Ties on prepared go to the higher committed, then the lower node id.
    #[test]
    fn ties_break_on_committed_then_lowest_id() {
        let reports = BTreeMap::from([(NodeId(2), report(10, 8)), (NodeId(3), report(10, 9))]);
        let new = on_nodes_dead(&config(4, 1, &[2, 3]), &reports, &dead(&[1]));
        assert_eq!(new, Some(config(5, 3, &[2])));
        let reports = BTreeMap::from([(NodeId(2), report(10, 9)), (NodeId(3), report(10, 9))]);
        let new = on_nodes_dead(&config(4, 1, &[2, 3]), &reports, &dead(&[1]));
        assert_eq!(new, Some(config(5, 2, &[3])));
    }

    // Primary and one secondary dead: the survivor becomes the sole primary.
    #[test]
    fn primary_and_secondary_dead() {
        let new = on_nodes_dead(&config(4, 1, &[2, 3]), &BTreeMap::new(), &dead(&[1, 2]));
        assert_eq!(new, Some(config(5, 3, &[])));
    }

    // A dead sole primary is kept: there is nobody to hand the partition to.
    #[test]
    fn dead_sole_primary_kept() {
        assert_eq!(
            on_nodes_dead(&config(4, 1, &[]), &BTreeMap::new(), &dead(&[1])),
            None
        );
        let new = on_nodes_dead(&config(4, 1, &[2]), &BTreeMap::new(), &dead(&[1, 2]));
        assert_eq!(new, Some(config(5, 1, &[])));
    }

    // The primary's removal request is honoured only at the current ballot,
    // from the primary, for a secondary.
    #[test]
    fn remove_request_checks() {
        let current = config(4, 1, &[2, 3]);
        assert_eq!(
            on_remove_request(&current, NodeId(1), 4, NodeId(3)),
            Ok(config(5, 1, &[2]))
        );
        assert_eq!(
            on_remove_request(&current, NodeId(1), 3, NodeId(3)),
            Err(ReconfigError::StaleBallot { got: 3, current: 4 })
        );
        assert_eq!(
            on_remove_request(&current, NodeId(2), 4, NodeId(3)),
            Err(ReconfigError::NotPrimary { node: NodeId(2) })
        );
        assert_eq!(
            on_remove_request(&current, NodeId(1), 4, NodeId(7)),
            Err(ReconfigError::NotSecondary { node: NodeId(7) })
        );
    }

    // A restarted member comes back as a learner, except a sole primary,
    // which is reinstated under a new ballot so that it re-prepares its
    // tail; a restarted primary with secondaries is replaced first.
    #[test]
    fn restarted_member() {
        let reports = BTreeMap::new();
        assert_eq!(
            on_member_restarted(&config(4, 1, &[2, 3]), &reports, NodeId(2)),
            Some(with_learners(5, 1, &[3], &[2]))
        );
        assert_eq!(
            on_member_restarted(&config(4, 1, &[2, 3]), &reports, NodeId(1)),
            Some(with_learners(5, 2, &[3], &[1]))
        );
        assert_eq!(
            on_member_restarted(&with_learners(4, 1, &[2], &[3]), &reports, NodeId(3)),
            Some(with_learners(5, 1, &[2], &[3]))
        );
        assert_eq!(
            on_member_restarted(&config(4, 1, &[]), &reports, NodeId(1)),
            Some(config(5, 1, &[]))
        );
        assert_eq!(
            on_member_restarted(&config(4, 1, &[2]), &reports, NodeId(9)),
            None
        );
    }

    // Dead learners are removed; a dead primary is never replaced by a
    // learner (it may miss committed decrees).
    #[test]
    fn dead_learners_removed_never_promoted() {
        let current = with_learners(4, 1, &[2], &[3]);
        assert_eq!(
            on_nodes_dead(&current, &BTreeMap::new(), &dead(&[3])),
            Some(config(5, 1, &[2]))
        );
        assert_eq!(
            on_nodes_dead(&current, &BTreeMap::new(), &dead(&[1])),
            Some(with_learners(5, 2, &[], &[3]))
        );
        let sole = with_learners(4, 1, &[], &[3]);
        assert_eq!(on_nodes_dead(&sole, &BTreeMap::new(), &dead(&[1])), None);
    }

    // The guardian adds one learner on the least-loaded alive non-member
    // (ties: lowest id), only below the replica count and with a live
    // primary.
    #[test]
    fn guardian_adds_least_loaded_learner() {
        let alive = dead(&[1, 2, 3, 4, 5]);
        let load = BTreeMap::from([(NodeId(3), 4), (NodeId(4), 1), (NodeId(5), 1)]);
        assert_eq!(
            guardian(&config(4, 1, &[2]), &alive, &load, 3),
            Some(with_learners(5, 1, &[2], &[4]))
        );
        assert_eq!(guardian(&config(4, 1, &[2, 3]), &alive, &load, 3), None);
        assert_eq!(
            guardian(&with_learners(4, 1, &[2], &[4]), &alive, &load, 3),
            None
        );
        assert_eq!(
            guardian(&config(4, 1, &[2]), &dead(&[2, 3]), &load, 3),
            None
        );
        assert_eq!(guardian(&config(4, 1, &[]), &dead(&[1]), &load, 3), None);
    }

    // The upgrade is honoured only from the primary at the current ballot
    // for a learner; the learner becomes a secondary under ballot + 1.
    #[test]
    fn upgrade_request_checks() {
        let current = with_learners(4, 1, &[3], &[2]);
        assert_eq!(
            on_upgrade_request(&current, NodeId(1), 4, NodeId(2)),
            Ok(config(5, 1, &[2, 3]))
        );
        assert_eq!(
            on_upgrade_request(&current, NodeId(1), 3, NodeId(2)),
            Err(ReconfigError::StaleBallot { got: 3, current: 4 })
        );
        assert_eq!(
            on_upgrade_request(&current, NodeId(3), 4, NodeId(2)),
            Err(ReconfigError::NotPrimary { node: NodeId(3) })
        );
        assert_eq!(
            on_upgrade_request(&current, NodeId(1), 4, NodeId(3)),
            Err(ReconfigError::NotLearner { node: NodeId(3) })
        );
        // A caught-up learner can also be removed.
        assert_eq!(
            on_remove_request(&current, NodeId(1), 4, NodeId(2)),
            Ok(config(5, 1, &[3]))
        );
    }

    // No decision ever lowers the ballot.
    #[test]
    fn ballots_only_grow() {
        let start = config(7, 1, &[2, 3]);
        for dead_set in [dead(&[1]), dead(&[2]), dead(&[1, 2, 3]), dead(&[2, 3])] {
            if let Some(new) = on_nodes_dead(&start, &BTreeMap::new(), &dead_set) {
                assert_eq!(new.ballot, 8);
            }
        }
    }
}
