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
    #[error("{node} is not a secondary of the partition")]
    NotSecondary { node: NodeId },
}

/// The configuration after `dead` nodes are gone, or `None` when nothing
/// changes. Dead secondaries are removed; a dead primary is replaced by the
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
    changed(config, primary, secondaries)
}

/// The configuration after the primary `requester` (at `ballot`) asked to
/// remove the secondary `node` it cannot reach.
pub fn on_remove_request(
    config: &PartitionConfig,
    requester: NodeId,
    ballot: Ballot,
    node: NodeId,
) -> Result<PartitionConfig, ReconfigError> {
    if ballot != config.ballot {
        return Err(ReconfigError::StaleBallot {
            got: ballot,
            current: config.ballot,
        });
    }
    if config.primary != Some(requester) {
        return Err(ReconfigError::NotPrimary { node: requester });
    }
    if !config.secondaries.contains(&node) {
        return Err(ReconfigError::NotSecondary { node });
    }
    let secondaries = config
        .secondaries
        .iter()
        .copied()
        .filter(|held| *held != node)
        .collect();
    Ok(changed(config, config.primary, secondaries).expect("a secondary was removed"))
}

/// The configuration after member `node` restarted (its replica lost its
/// volatile state): it leaves the configuration like a dead node, except
/// when it is the only member, which it then keeps as primary under a new
/// ballot — its durable log holds every acknowledged write
/// (invariant **acked-on-every-log**).
pub fn on_member_restarted(
    config: &PartitionConfig,
    reports: &BTreeMap<NodeId, ReplicaReport>,
    node: NodeId,
) -> Option<PartitionConfig> {
    if !config.is_member(node) {
        return None;
    }
    if config.primary == Some(node) && config.secondaries.is_empty() {
        return Some(next(config, Some(node), Vec::new()));
    }
    on_nodes_dead(config, reports, &BTreeSet::from([node]))
}

/// `Some(new config)` at ballot + 1 when membership differs, else `None`.
fn changed(
    config: &PartitionConfig,
    primary: Option<NodeId>,
    secondaries: Vec<NodeId>,
) -> Option<PartitionConfig> {
    if primary == config.primary && secondaries == config.secondaries {
        return None;
    }
    Some(next(config, primary, secondaries))
}

fn next(
    config: &PartitionConfig,
    primary: Option<NodeId>,
    mut secondaries: Vec<NodeId>,
) -> PartitionConfig {
    secondaries.sort();
    secondaries.dedup();
    assert!(primary.is_none_or(|p| !secondaries.contains(&p)));
    let result = PartitionConfig {
        ballot: config.ballot + 1,
        primary,
        secondaries,
    };
    assert!(result.ballot > config.ballot, "ballot-monotonic");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ballot: Ballot, primary: u32, secondaries: &[u32]) -> PartitionConfig {
        PartitionConfig {
            ballot,
            primary: Some(NodeId(primary)),
            secondaries: secondaries.iter().map(|n| NodeId(*n)).collect(),
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

    // A restarted member leaves, except a sole primary, which is reinstated
    // under a new ballot so that it re-prepares its tail.
    #[test]
    fn restarted_member() {
        let reports = BTreeMap::new();
        assert_eq!(
            on_member_restarted(&config(4, 1, &[2, 3]), &reports, NodeId(2)),
            Some(config(5, 1, &[3]))
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
