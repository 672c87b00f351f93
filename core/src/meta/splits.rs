//! Meta's part of online partition split (docs/split.md): the split record
//! persisted with its table, the orders that fence each parent partition
//! and ask its members for a copy of it as the child, the nodes' reports,
//! and the one persisted step that commits the new partition count.
//!
//! A table of N partitions splits into 2N: partition p's keys are those
//! whose hash is p modulo N, so modulo 2N they are p or p + N, and p + N
//! (the child) starts as a copy of p (the parent) on the same nodes and
//! shards. While the split runs, the parent's primary refuses the keys
//! that will move (**split-fence**): from the decree it fenced at, no write
//! reaches them, so a copy of the parent taken at any applied decree at or
//! above it holds every acknowledged write of the child's keys
//! (**copy-covers-fence**). Meta hears each primary's fence decree, sends
//! it to every member, and each member copies its replica as soon as it
//! applied that decree. Once every member of every parent reports a copy
//! at its parent's fence decree, meta commits, in one persisted step, the
//! count 2N and the children's configurations (each member of the parent a
//! member of the child, in the same role) — never half a table's
//! partitions counted (**split-commits-whole**).

use std::collections::BTreeMap;

use markab_wire::message::{ErrorCode, Gpid, ResponseBody, SplitOrder, SplitReport, SplitRequest};
use serde::{Deserialize, Serialize};

use super::{MetaData, MetaState, MetaTime, ReplicaPlace, Step, StoredPartition, StoredTable};
use crate::table::PARTITION_COUNT_MAX;

/// Beacon interval meta asks of the nodes of a splitting table, so that
/// fences, copies and the commit are heard at once.
pub const SPLIT_BEACON_MS: u32 = 10;

/// A table's split in progress, persisted with the table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSplit {
    /// Twice the table's count.
    pub new_count: i32,
    /// Unique to this start or restart (copies of another epoch are
    /// stale: writes reached the parents' moving keys since).
    pub epoch: u64,
    /// Paused: no fence, no copy; the parents serve every key.
    #[serde(default)]
    pub paused: bool,
    pub started_unix_ms: u64,
}

/// What meta heard of one parent partition in the current epoch
/// (volatile: the nodes report again after a restart).
#[derive(Clone, Debug, Default)]
struct ParentProgress {
    epoch: u64,
    /// The decree the primary fenced at, once committed there.
    fence_decree: Option<i64>,
    /// Nodes with a copy of the child, by the decree it was taken for.
    copies: BTreeMap<String, i64>,
    /// The latest copy failure, by node.
    failures: BTreeMap<String, String>,
}

/// The nodes' reports on splitting partitions, by parent.
#[derive(Debug, Default)]
pub(super) struct SplitProgress {
    parents: BTreeMap<Gpid, ParentProgress>,
}

impl SplitProgress {
    fn parent(&mut self, gpid: Gpid, epoch: u64) -> &mut ParentProgress {
        let progress = self.parents.entry(gpid).or_default();
        if progress.epoch != epoch {
            *progress = ParentProgress {
                epoch,
                ..ParentProgress::default()
            };
        }
        progress
    }
}

impl MetaState {
    pub(super) fn split_request(&mut self, request: &SplitRequest, now: MetaTime) -> Step {
        let (app_id, table) = match self.available(request.table()) {
            Ok((app_id, table)) => (app_id, table.clone()),
            Err(error) => return Step::reply(Err(error)),
        };
        match request {
            SplitRequest::Start { new_count, .. } => {
                self.start_split(app_id, &table, *new_count, now)
            }
            SplitRequest::Query { .. } => {
                Step::reply(Ok(ResponseBody::Pairs(self.describe_split(app_id, &table))))
            }
            SplitRequest::Pause { .. } | SplitRequest::Restart { .. } => {
                let pause = matches!(request, SplitRequest::Pause { .. });
                let Some(split) = &table.split else {
                    return Step::error(
                        ErrorCode::InvalidArgument,
                        format!("table {} is not splitting", table.name),
                    );
                };
                if split.paused == pause {
                    return Step::error(
                        ErrorCode::InvalidArgument,
                        format!(
                            "the split of table {} is {} already",
                            table.name,
                            if pause { "paused" } else { "running" }
                        ),
                    );
                }
                let mut next = self.successor();
                let epoch = next_epoch(&mut next);
                let stored = next.tables.get_mut(&app_id).expect("an available table");
                let split = stored.split.as_mut().expect("checked above");
                split.paused = pause;
                // A restart fences anew: writes reached the moving keys
                // while paused, so earlier copies are stale.
                split.epoch = epoch;
                Step {
                    reply: Ok(ResponseBody::Pairs(vec![
                        ("table".into(), table.name.clone()),
                        (
                            "split".into(),
                            if pause { "paused" } else { "running" }.into(),
                        ),
                    ])),
                    persist: Some(next),
                }
            }
            SplitRequest::Cancel { .. } => {
                if table.split.is_none() {
                    return Step::error(
                        ErrorCode::InvalidArgument,
                        format!("table {} is not splitting", table.name),
                    );
                }
                let mut next = self.successor();
                next.tables
                    .get_mut(&app_id)
                    .expect("an available table")
                    .split = None;
                Step {
                    reply: Ok(ResponseBody::Pairs(vec![
                        ("table".into(), table.name.clone()),
                        ("split".into(), "cancelled".into()),
                        ("partition_count".into(), table.partition_count.to_string()),
                    ])),
                    persist: Some(next),
                }
            }
        }
    }

    fn start_split(
        &mut self,
        app_id: i32,
        table: &StoredTable,
        new_count: i32,
        now: MetaTime,
    ) -> Step {
        let name = &table.name;
        if let Some(split) = &table.split {
            return Step::error(
                ErrorCode::Busy,
                format!(
                    "table {name} is splitting already (to {} partitions{}); partition_split query {name} shows its progress",
                    split.new_count,
                    if split.paused { ", paused" } else { "" }
                ),
            );
        }
        let count = table.partition_count;
        if new_count != count.saturating_mul(2) {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "a split doubles the partitions: table {name} has {count}, so NEW_COUNT must be {}, not {new_count}",
                    count.saturating_mul(2)
                ),
            );
        }
        if new_count as u64 > u64::from(PARTITION_COUNT_MAX) {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!("a table has at most {PARTITION_COUNT_MAX} partitions"),
            );
        }
        if table.restore.is_some() {
            return Step::error(
                ErrorCode::Busy,
                format!("table {name} is being restored; split it once it serves"),
            );
        }
        // Partition p ships to partition p of the remote table: a split
        // here would leave the two tables' counts apart.
        if let Some((id, dup)) = self.data.dups.iter().find(|(_, dup)| dup.app_id == app_id) {
            return Step::error(
                ErrorCode::Busy,
                format!(
                    "table {name} is duplicated to table {} of cluster {} (dup {id}, {}): a split would leave its partition count unlike the remote table's, and duplication ships partition p to partition p; remove its duplications (dup remove), split both tables, then add them again",
                    dup.remote_table,
                    dup.remote_cluster_id,
                    dup.status.name()
                ),
            );
        }
        if let Some((id, _)) = self.data.backups.iter().find(|(_, backup)| {
            backup.status == super::BackupStatus::Running && backup.app_id == app_id
        }) {
            return Step::error(
                ErrorCode::Busy,
                format!("backup {id} of table {name} is running; split once it finished"),
            );
        }
        // Every member copies its parent: a partition short of replicas
        // would give a child short of them too, so a split waits for a
        // healthy table (**split-needs-healthy**).
        let now_ms = now.monotonic_ms;
        for (index, partition) in table.partitions.iter().enumerate() {
            let members = 1 + partition.secondaries.len();
            let primary_alive = self.is_node_alive(&partition.primary.node, now_ms);
            let dead: Vec<&str> = std::iter::once(&partition.primary)
                .chain(&partition.secondaries)
                .filter(|place| !self.is_node_alive(&place.node, now_ms))
                .map(|place| place.node.as_str())
                .collect();
            let short = self.settings.replication.is_some()
                && members < table.replica_count.max(1) as usize;
            if !primary_alive || !dead.is_empty() || short {
                return Step::error(
                    ErrorCode::NotEnoughReplicas,
                    format!(
                        "table {name} is not healthy: partition {index} has {members} of {} replicas{}; a split needs every partition whole, nothing changed",
                        table.replica_count,
                        if dead.is_empty() {
                            String::new()
                        } else {
                            format!(" and {} is dead", dead.join(", "))
                        }
                    ),
                );
            }
        }
        if self.settings.replication.is_some()
            && table
                .partitions
                .iter()
                .any(|partition| !partition.learners.is_empty())
        {
            return Step::error(
                ErrorCode::Busy,
                format!("table {name} has learners catching up; split once they joined"),
            );
        }
        let mut next = self.successor();
        let epoch = next_epoch(&mut next);
        next.tables
            .get_mut(&app_id)
            .expect("an available table")
            .split = Some(TableSplit {
            new_count,
            epoch,
            paused: false,
            started_unix_ms: now.unix_ms,
        });
        Step {
            reply: Ok(ResponseBody::Pairs(vec![
                ("table".into(), name.clone()),
                ("app_id".into(), app_id.to_string()),
                ("partition_count".into(), count.to_string()),
                ("new_count".into(), new_count.to_string()),
                ("split".into(), "running".into()),
            ])),
            persist: Some(next),
        }
    }

    fn describe_split(&self, app_id: i32, table: &StoredTable) -> Vec<(String, String)> {
        let mut rows = vec![
            ("table".to_owned(), table.name.clone()),
            ("app_id".to_owned(), app_id.to_string()),
            (
                "partition_count".to_owned(),
                table.partition_count.to_string(),
            ),
        ];
        let Some(split) = &table.split else {
            rows.push(("split".into(), "none".into()));
            return rows;
        };
        rows.push((
            "split".into(),
            if split.paused { "paused" } else { "running" }.into(),
        ));
        rows.push(("new_count".into(), split.new_count.to_string()));
        rows.push(("started_unix_ms".into(), split.started_unix_ms.to_string()));
        let mut ready = 0;
        for (index, partition) in table.partitions.iter().enumerate() {
            let gpid = Gpid {
                app_id,
                partition_index: index as i32,
            };
            let progress = self
                .split_progress
                .parents
                .get(&gpid)
                .filter(|progress| progress.epoch == split.epoch);
            let members: Vec<&str> = std::iter::once(&partition.primary)
                .chain(&partition.secondaries)
                .map(|place| place.node.as_str())
                .collect();
            let text = match progress {
                _ if split.paused => "paused".to_owned(),
                None => "fencing".to_owned(),
                Some(progress) if progress.fence_decree.is_none() => "fencing".to_owned(),
                Some(progress) => {
                    let fence_decree = progress.fence_decree.expect("checked");
                    let copied = members
                        .iter()
                        .filter(|node| progress.copies.get(**node) == Some(&fence_decree))
                        .count();
                    if copied == members.len() {
                        ready += 1;
                    }
                    let mut text = format!(
                        "fenced at decree {fence_decree}, child {} copied on {copied} of {} members",
                        index as i32 + table.partition_count,
                        members.len()
                    );
                    for (node, failure) in &progress.failures {
                        text.push_str(&format!("; copy on {node} failed: {failure}"));
                    }
                    text
                }
            };
            rows.push((format!("partition {index}"), text));
        }
        rows.insert(
            5,
            (
                "ready".into(),
                format!("{ready}/{}", table.partitions.len()),
            ),
        );
        rows
    }

    /// The split orders of `node` from `data`: one for every partition of a
    /// running split that `node` holds as primary or secondary.
    pub(super) fn split_orders(&self, data: &MetaData, node: &str) -> Vec<SplitOrder> {
        let mut orders = Vec::new();
        for (app_id, table) in &data.tables {
            let Some(split) = table.split.as_ref().filter(|split| !split.paused) else {
                continue;
            };
            if !table.is_available() {
                continue;
            }
            for (index, partition) in table.partitions.iter().enumerate() {
                if partition.primary.node != node && !partition.has_secondary(node) {
                    continue;
                }
                let gpid = Gpid {
                    app_id: *app_id,
                    partition_index: index as i32,
                };
                let fence_decree = self
                    .split_progress
                    .parents
                    .get(&gpid)
                    .filter(|progress| progress.epoch == split.epoch)
                    .and_then(|progress| progress.fence_decree);
                orders.push(SplitOrder {
                    gpid,
                    new_count: split.new_count,
                    epoch: split.epoch,
                    fence_decree: fence_decree.unwrap_or(0),
                    fenced: fence_decree.is_some(),
                });
            }
        }
        orders
    }

    /// Whether `node` holds a replica of a splitting table (it beacons
    /// soon then, **split-beacons-soon**).
    pub(super) fn splitting_on(&self, data: &MetaData, node: &str) -> bool {
        data.tables.values().any(|table| {
            table
                .split
                .as_ref()
                .is_some_and(|split| !split.paused && table.is_available())
                && table
                    .partitions
                    .iter()
                    .any(|partition| partition.holds(node))
        })
    }

    /// Takes in `node`'s split reports: a primary's fence decree (only from
    /// the partition's current primary at its current ballot, and only the
    /// first one heard in an epoch: copies are taken for it) and copies.
    pub(super) fn take_split_reports(
        &mut self,
        data: &MetaData,
        node: &str,
        reports: &[SplitReport],
    ) {
        for report in reports {
            let Some(table) = data.tables.get(&report.gpid.app_id) else {
                continue;
            };
            let Some(split) = table.split.as_ref().filter(|split| !split.paused) else {
                continue;
            };
            let Some(partition) = usize::try_from(report.gpid.partition_index)
                .ok()
                .and_then(|index| table.partitions.get(index))
            else {
                continue;
            };
            if report.epoch != split.epoch {
                continue;
            }
            let progress = self.split_progress.parent(report.gpid, split.epoch);
            if report.fenced
                && progress.fence_decree.is_none()
                && partition.primary.node == node
                && report.ballot == partition.ballot
            {
                progress.fence_decree = Some(report.fence_decree);
            }
            if report.copied {
                progress
                    .copies
                    .insert(node.to_owned(), report.copied_decree);
                progress.failures.remove(node);
            } else {
                progress.copies.remove(node);
            }
            if !report.message.is_empty() {
                progress
                    .failures
                    .insert(node.to_owned(), report.message.clone());
            }
        }
    }

    /// The commit of every split whose parents all have, on every member,
    /// a copy at their fence decree: the new count and the children's
    /// configurations, in `next` (**split-commits-whole**). Returns whether
    /// one committed.
    pub(super) fn commit_splits(&self, next: &mut MetaData) -> bool {
        let mut committed = false;
        for (app_id, table) in next.tables.iter_mut() {
            let Some(split) = table.split.clone().filter(|split| !split.paused) else {
                continue;
            };
            if !table.is_available() {
                continue;
            }
            let ready = table
                .partitions
                .iter()
                .enumerate()
                .all(|(index, partition)| {
                    let gpid = Gpid {
                        app_id: *app_id,
                        partition_index: index as i32,
                    };
                    self.split_progress
                        .parents
                        .get(&gpid)
                        .filter(|progress| progress.epoch == split.epoch)
                        .and_then(|progress| Some((progress, progress.fence_decree?)))
                        .is_some_and(|(progress, fence_decree)| {
                            std::iter::once(&partition.primary)
                                .chain(&partition.secondaries)
                                .all(|place| {
                                    progress.copies.get(&place.node) == Some(&fence_decree)
                                })
                        })
                });
            if !ready {
                continue;
            }
            let children: Vec<StoredPartition> = table
                .partitions
                .iter()
                .map(|parent| StoredPartition {
                    ballot: 1,
                    primary: parent.primary.clone(),
                    secondaries: parent.secondaries.clone(),
                    learners: Vec::<ReplicaPlace>::new(),
                    split_child: true,
                })
                .collect();
            table.partitions.extend(children);
            table.partition_count = split.new_count;
            table.split = None;
            committed = true;
            tracing::info!(
                app_id,
                table = %table.name,
                partitions = split.new_count,
                "split committed"
            );
        }
        committed
    }

    /// Forgets what nodes reported of splits no longer running.
    pub(super) fn prune_split_progress(&mut self) {
        let data = &self.data;
        self.split_progress.parents.retain(|gpid, progress| {
            data.tables
                .get(&gpid.app_id)
                .and_then(|table| table.split.as_ref())
                .is_some_and(|split| split.epoch == progress.epoch)
        });
    }
}

/// A new split epoch in `next`.
fn next_epoch(next: &mut MetaData) -> u64 {
    next.last_split_epoch += 1;
    next.last_split_epoch
}
