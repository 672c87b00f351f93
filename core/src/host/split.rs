//! The host's part of online partition split (docs/split.md): meta's split
//! orders fence the parents' primaries (**split-fence**), each member
//! copies its parent as the child once it applied the parent's fence
//! decree (through [`HostIo::start_split_copy`], off the shard), and every
//! replica's report goes to the registry for the beacons. After the commit
//! the parent's assignment carries the doubled count: it refuses the moved
//! keys from then on, and its storage drops them.

use std::collections::{BTreeMap, BTreeSet};

use markab_wire::{ErrorCode, Gpid, OpError, ReplicaAssignment, Request, SplitOrder, SplitReport};

use super::{check_keys, feed, HostIo, HostedReplica, ReplicaMeta, ShardHost};
use crate::replication::messages::{Ballot, Decree, Input, Role};
use crate::storage::StorageEngine;

/// Where a staged copy of a split child stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitCopyState {
    Running,
    Done,
    Failed(String),
}

/// A split child's copy on this node, staged until the child is hosted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitCopy {
    pub epoch: u64,
    /// The parent's fence decree it was taken for: the child starts there.
    pub decree: Decree,
    pub state: SplitCopyState,
}

/// A parent replica's part in a running split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SplitFence {
    pub(super) order: SplitOrder,
    /// Primary: the ballot it fenced under and the last decree it had
    /// given out then — every write of a moved key is at or below it.
    pub(super) fenced_at: Option<(Ballot, Decree)>,
}

/// The child partition of `parent` in a split to `new_count`.
pub fn child_of(parent: Gpid, new_count: i32) -> Gpid {
    Gpid {
        app_id: parent.app_id,
        partition_index: parent.partition_index + new_count / 2,
    }
}

/// Refuses `request` at a fenced parent when one of its keys moves to the
/// child (**split-fence**): retried by clients until the child serves.
pub(super) fn check_fence<I: HostIo>(
    replica: &HostedReplica<I>,
    gpid: Gpid,
    request: &Request,
) -> Result<(), OpError> {
    let Some(fence) = &replica.split else {
        return Ok(());
    };
    check_keys(request, gpid, fence.order.new_count.max(1) as u32).map_err(|_| {
        OpError::new(
            ErrorCode::Splitting,
            format!(
                "partition {}.{} is splitting into {} partitions and this key moves to partition {}: retry shortly",
                gpid.app_id,
                gpid.partition_index,
                fence.order.new_count,
                child_of(gpid, fence.order.new_count).partition_index
            ),
        )
    })
}

impl<I: HostIo> ShardHost<I> {
    /// Takes this shard's split orders (after the ack's configurations,
    /// before its leases, so that a new primary is fenced before it
    /// serves), starts the copies that are due, drops staged copies no
    /// longer wanted (`assignments`: the ack's, whose children are kept
    /// for hosting) and publishes the reports.
    ///
    /// An order for a parent that already holds the split's count is from
    /// before the commit (an ack come late) and is ignored: that parent
    /// dropped the moved keys, so a copy of it is no copy of the child
    /// (**copy-covers-fence**).
    pub fn apply_split_orders(&mut self, orders: &[SplitOrder], assignments: &[ReplicaAssignment]) {
        let replicas = &self.replicas;
        let orders: Vec<&SplitOrder> = orders
            .iter()
            .filter(|order| {
                replicas.get(&order.gpid).is_some_and(|replica| {
                    order.new_count > 0 && order.new_count as u32 > replica.meta.partition_count
                })
            })
            .collect();
        let by_parent: BTreeMap<Gpid, &SplitOrder> =
            orders.iter().map(|order| (order.gpid, *order)).collect();
        for (gpid, replica) in self.replicas.iter_mut() {
            match by_parent.get(gpid) {
                Some(order) => {
                    let same = replica
                        .split
                        .as_ref()
                        .is_some_and(|fence| fence.order.epoch == order.epoch);
                    if same {
                        let fence = replica.split.as_mut().expect("checked");
                        fence.order = (*order).clone();
                    } else {
                        replica.split = Some(SplitFence {
                            order: (*order).clone(),
                            fenced_at: None,
                        });
                    }
                }
                None => replica.split = None,
            }
        }
        let keep: BTreeSet<(Gpid, u64)> = orders
            .iter()
            .map(|order| (child_of(order.gpid, order.new_count), order.epoch))
            .collect();
        let assigned: BTreeSet<Gpid> = assignments
            .iter()
            .map(|assignment| Gpid {
                app_id: assignment.app_id,
                partition_index: assignment.partition_index,
            })
            .collect();
        self.shared.io.keep_split_copies(&keep, &assigned);
        self.split_step();
    }

    /// Fences primaries, starts due copies and publishes every parent's
    /// report; run at each ack and every few ticks.
    pub(super) fn split_step(&mut self) {
        let shared = &mut self.shared;
        let mut reports = Vec::new();
        for (gpid, replica) in self.replicas.iter_mut() {
            let Some(fence) = replica.split.as_mut() else {
                continue;
            };
            let core = &replica.core;
            let serving = replica.failure.is_none();
            if serving && core.role() == Role::Primary {
                if fence
                    .fenced_at
                    .is_none_or(|(ballot, _)| ballot != core.ballot())
                {
                    fence.fenced_at = Some((core.ballot(), core.last_prepared()));
                }
            } else {
                fence.fenced_at = None;
            }
            let order = fence.order.clone();
            let child = child_of(*gpid, order.new_count);
            let (fenced, fence_decree) = match fence.fenced_at {
                Some((_, decree)) if core.last_committed() >= decree => (true, decree as i64),
                _ => (false, 0),
            };
            if fenced {
                // Every member copies once it applied the fence decree: an
                // idle primary's secondaries must hear of its commit even
                // if no write follows (**fence-commit-pushed**).
                let push = Input::PushCommit {
                    decree: fence_decree as Decree,
                };
                feed(shared, *gpid, replica, push);
            }
            let core = &replica.core;
            let serving = replica.failure.is_none();
            let member = matches!(core.role(), Role::Primary | Role::Secondary);
            let wanted = order.fence_decree;
            let mut copy = shared.io.split_copy(child);
            let fresh = copy
                .as_ref()
                .is_some_and(|copy| copy.epoch == order.epoch && copy.decree as i64 == wanted);
            if order.fenced && !fresh && serving && member && replica.applied as i64 >= wanted {
                let meta = ReplicaMeta {
                    table: replica.meta.table.clone(),
                    app_id: child.app_id,
                    partition_index: child.partition_index,
                    partition_count: order.new_count as u32,
                    shard: replica.meta.shard,
                };
                shared.io.start_split_copy(
                    *gpid,
                    replica.partition.engine(),
                    &meta,
                    order.epoch,
                    wanted as Decree,
                );
                copy = shared.io.split_copy(child);
            }
            let (copied, message) = match copy {
                Some(copy)
                    if order.fenced
                        && copy.epoch == order.epoch
                        && copy.decree as i64 == wanted =>
                {
                    match copy.state {
                        SplitCopyState::Done => (true, String::new()),
                        SplitCopyState::Running => (false, String::new()),
                        SplitCopyState::Failed(reason) => (false, reason),
                    }
                }
                _ => (false, String::new()),
            };
            reports.push(SplitReport {
                gpid: *gpid,
                epoch: order.epoch,
                ballot: core.ballot() as i64,
                fence_decree,
                fenced,
                copied_decree: if copied { wanted } else { 0 },
                copied,
                message,
            });
        }
        shared.registry.set_split_reports(shared.shard, reports);
    }

    /// Whether split child `gpid` may be hosted as a member: its storage
    /// is there (a staged copy installed now, or from before). A child is
    /// never created empty as a primary or secondary (**no-empty-member**).
    pub(super) fn split_child_ready(&mut self, gpid: Gpid) -> Result<bool, OpError> {
        self.shared.io.install_split_copy(gpid)
    }
}

/// Points `replica`'s storage at its partition's count: full scans skip,
/// and the engine drops, the records of keys that belong to another
/// partition (a split's parent or child), **split-owned-only**.
pub(super) fn set_owner<I: HostIo>(replica: &HostedReplica<I>) {
    let meta = &replica.meta;
    replica
        .partition
        .set_owner(meta.partition_count, meta.partition_index.max(0) as u32);
    if let Err(error) = replica
        .partition
        .engine()
        .drop_foreign(meta.partition_count, meta.partition_index.max(0) as u32)
    {
        tracing::warn!(%error, "cannot drop the records of moved keys");
    }
}
