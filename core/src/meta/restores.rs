//! Meta's part of restoring a table from a backup (docs/backup.md,
//! "Restore"): a new table whose partitions start as primaries only, each
//! withheld from routes and assignments until the node of its primary has
//! downloaded, checked and installed the partition's checkpoint; the
//! replicas then reach the table's replica count by the learning path
//! like any short partition; the table routes only once every partition
//! is restored (**restore-before-serve**). A failed or cancelled restore
//! removes the table altogether — meta forgets it at once and the nodes
//! delete what they installed — so no half table is left
//! (**no-half-table**).

use std::collections::BTreeMap;

use markab_wire::message::{
    BackupJobState, BackupReport, CreateTableRequest, ErrorCode, Gpid, ResponseBody, RestoreOrder,
};
use serde::{Deserialize, Serialize};

use super::{MetaData, MetaState, MetaTime, Step};

/// Restore outcomes meta remembers for `query_restore_status` (volatile).
const RESTORE_OUTCOMES_MAX: usize = 256;

/// One partition of a table being restored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoringPartition {
    /// The checkpoint's prefix in the store.
    pub prefix: String,
    /// The decree the checkpoint holds.
    pub decree: i64,
    /// Installed and hosted by its primary.
    pub done: bool,
}

/// Where a table being restored comes from, persisted with it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRestore {
    pub url: String,
    pub backup_id: u64,
    pub source_table: String,
    pub source_app_id: i32,
    pub started_unix_ms: u64,
    /// By partition index.
    pub partitions: Vec<RestoringPartition>,
}

/// What meta's IO layer read from a backup's manifest, for a restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreSource {
    pub url: String,
    pub backup_id: u64,
    pub source_table: String,
    pub source_app_id: i32,
    pub partition_count: i32,
    pub replica_count: i32,
    pub envs: Vec<(String, String)>,
    /// Each partition's checkpoint prefix and decree, by index.
    pub partitions: Vec<(String, i64)>,
}

/// Restore progress and outcomes (volatile).
#[derive(Debug, Default)]
pub(super) struct RestoreProgress {
    /// The latest report of each partition, by (app id, index).
    reports: BTreeMap<(i32, i32), (String, BackupReport)>,
    /// How the last restores of each table name ended, when they failed or
    /// were cancelled.
    outcomes: BTreeMap<String, String>,
}

impl MetaState {
    /// Creates table `new_table` from `source`: placed like a new table,
    /// primaries only, each partition waiting for its checkpoint.
    pub fn start_restore(
        &mut self,
        new_table: &str,
        source: RestoreSource,
        now: impl Into<MetaTime>,
    ) -> Step {
        let now = now.into();
        self.observe(now);
        if source.partitions.len() != source.partition_count.max(0) as usize {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "backup {} lists {} partitions for a partition count of {}",
                    source.backup_id,
                    source.partitions.len(),
                    source.partition_count
                ),
            );
        }
        let replica_count = source
            .replica_count
            .clamp(1, self.settings.replica_count_max);
        let create = CreateTableRequest {
            table: new_table.to_owned(),
            partition_count: source.partition_count,
            replica_count,
            envs: source.envs.clone(),
            success_if_exist: false,
        };
        let mut step = self.create_table(&create, now);
        let Some(next) = step.persist.as_mut() else {
            return step;
        };
        let app_id = next.next_app_id - 1;
        let table = next.tables.get_mut(&app_id).expect("just created");
        for partition in &mut table.partitions {
            partition.secondaries.clear();
            partition.learners.clear();
        }
        table.restore = Some(TableRestore {
            url: source.url.clone(),
            backup_id: source.backup_id,
            source_table: source.source_table.clone(),
            source_app_id: source.source_app_id,
            started_unix_ms: now.unix_ms,
            partitions: source
                .partitions
                .iter()
                .map(|(prefix, decree)| RestoringPartition {
                    prefix: prefix.clone(),
                    decree: *decree,
                    done: false,
                })
                .collect(),
        });
        self.restore_progress.outcomes.remove(new_table);
        step.reply = Ok(ResponseBody::Pairs(vec![
            ("table".into(), new_table.to_owned()),
            ("app_id".into(), app_id.to_string()),
            ("partitions".into(), source.partition_count.to_string()),
            ("replica_count".into(), replica_count.to_string()),
            ("backup_id".into(), source.backup_id.to_string()),
            ("from_table".into(), source.source_table),
        ]));
        step
    }

    /// `query_restore_status`: the restore of `table`, per partition.
    pub(super) fn restore_status(&self, table: &str) -> Step {
        let Some((app_id, stored)) = self.find_available(table) else {
            return match self.restore_progress.outcomes.get(table) {
                Some(outcome) => Step::reply(Ok(ResponseBody::Pairs(vec![
                    ("table".into(), table.to_owned()),
                    ("status".into(), outcome.clone()),
                ]))),
                None => Step::error(
                    ErrorCode::UnknownTable,
                    format!("table {table:?} does not exist and no restore of it is known"),
                ),
            };
        };
        let Some(restore) = &stored.restore else {
            return Step::reply(Ok(ResponseBody::Pairs(vec![
                ("table".into(), table.to_owned()),
                ("status".into(), "serving (no restore in progress)".into()),
            ])));
        };
        let done = restore.partitions.iter().filter(|p| p.done).count();
        let mut rows: Vec<(String, String)> = vec![
            ("table".into(), table.to_owned()),
            ("app_id".into(), app_id.to_string()),
            ("status".into(), "restoring".into()),
            ("backup_id".into(), restore.backup_id.to_string()),
            ("from_table".into(), restore.source_table.clone()),
            ("url".into(), restore.url.clone()),
            (
                "partitions_done".into(),
                format!("{done}/{}", restore.partitions.len()),
            ),
        ];
        for (index, partition) in restore.partitions.iter().enumerate() {
            let text = if partition.done {
                format!("restored decree={}", partition.decree)
            } else {
                match self.restore_progress.reports.get(&(app_id, index as i32)) {
                    Some((node, report)) => {
                        let percent = (report.bytes_done * 100)
                            .checked_div(report.bytes_total)
                            .unwrap_or(0);
                        format!(
                            "downloading {percent}% ({}/{} bytes) on {node}",
                            report.bytes_done, report.bytes_total
                        )
                    }
                    None => "waiting for its node".into(),
                }
            };
            rows.push((format!("partition {index}"), text));
        }
        Step::reply(Ok(ResponseBody::Pairs(rows)))
    }

    /// `cancel_restore`: the table being restored is removed at once; its
    /// nodes delete what they installed when they hear of it.
    pub(super) fn cancel_restore(&mut self, table: &str) -> Step {
        let Some((app_id, stored)) = self.find_available(table) else {
            return Step::error(
                ErrorCode::UnknownTable,
                format!("table {table:?} does not exist"),
            );
        };
        if stored.restore.is_none() {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!("table {table:?} is not being restored (drop it to remove it)"),
            );
        }
        let mut next = self.successor();
        next.tables.remove(&app_id);
        self.remember_restore_outcome(table, "cancelled: the table was removed".into());
        Step {
            reply: Ok(ResponseBody::Pairs(vec![
                ("table".into(), table.to_owned()),
                ("status".into(), "cancelled: the table was removed".into()),
            ])),
            persist: Some(next),
        }
    }

    fn remember_restore_outcome(&mut self, table: &str, outcome: String) {
        if self.restore_progress.outcomes.len() >= RESTORE_OUTCOMES_MAX {
            self.restore_progress.outcomes.pop_first();
        }
        self.restore_progress
            .outcomes
            .insert(table.to_owned(), outcome);
    }

    /// The partitions `node` is to restore, from `data`: every partition of
    /// a table being restored, not yet installed, whose primary is on
    /// `node`.
    pub(super) fn restore_orders(&self, data: &MetaData, node: &str) -> Vec<RestoreOrder> {
        let mut orders = Vec::new();
        for (app_id, table) in &data.tables {
            let Some(restore) = table.restore.as_ref().filter(|_| table.is_available()) else {
                continue;
            };
            for (index, (partition, restoring)) in
                table.partitions.iter().zip(&restore.partitions).enumerate()
            {
                if restoring.done || partition.primary.node != node {
                    continue;
                }
                orders.push(RestoreOrder {
                    backup_id: restore.backup_id,
                    gpid: Gpid {
                        app_id: *app_id,
                        partition_index: index as i32,
                    },
                    shard: partition.primary.shard,
                    table: table.name.clone(),
                    partition_count: table.partition_count,
                    url: restore.url.clone(),
                    prefix: restoring.prefix.clone(),
                    decree: restoring.decree,
                });
            }
        }
        orders
    }

    /// Takes in `node`'s restore reports: progress kept, an installed
    /// partition recorded in `next` (the table serves once all are), a
    /// failed one removing the table. Returns whether `next` changed.
    pub(super) fn take_restore_reports(
        &mut self,
        next: &mut MetaData,
        node: &str,
        reports: &[BackupReport],
    ) -> bool {
        let mut changed = false;
        for report in reports.iter().filter(|report| report.restore) {
            let (app_id, index) = (report.gpid.app_id, report.gpid.partition_index);
            let Some(table) = next.tables.get_mut(&app_id) else {
                continue;
            };
            let Some(restore) = table.restore.as_mut() else {
                continue;
            };
            let fits = restore.backup_id == report.backup_id
                && table
                    .partitions
                    .get(index.max(0) as usize)
                    .is_some_and(|partition| index >= 0 && partition.primary.node == node);
            if !fits || restore.partitions[index as usize].done {
                continue;
            }
            self.restore_progress
                .reports
                .insert((app_id, index), (node.to_owned(), report.clone()));
            match report.state {
                BackupJobState::Running => {}
                BackupJobState::Done => {
                    restore.partitions[index as usize].done = true;
                    if restore.partitions.iter().all(|partition| partition.done) {
                        tracing::info!(table = %table.name, "restore complete: the table serves");
                        table.restore = None;
                    }
                    changed = true;
                }
                BackupJobState::Failed => {
                    let name = table.name.clone();
                    let outcome = format!(
                        "failed: partition {index} on {node}: {}; the table was removed",
                        report.message
                    );
                    tracing::warn!(table = %name, %outcome, "restore failed");
                    next.tables.remove(&app_id);
                    self.remember_restore_outcome(&name, outcome);
                    changed = true;
                }
            }
        }
        self.restore_progress.reports.retain(|(app_id, _), _| {
            next.tables
                .get(app_id)
                .is_some_and(|table| table.restore.is_some())
        });
        changed
    }

    /// Partitions of tables being restored whose primary node is dead,
    /// moved to an alive node (nothing serves them yet, so this is no
    /// reconfiguration anyone acts on): the restore starts over there.
    pub(super) fn replace_dead_restorers(
        &self,
        now_ms: u64,
    ) -> Vec<((i32, usize), super::StoredPartition)> {
        let mut changes = Vec::new();
        for (app_id, table) in &self.data.tables {
            let Some(restore) = table.restore.as_ref().filter(|_| table.is_available()) else {
                continue;
            };
            for (index, (partition, restoring)) in
                table.partitions.iter().zip(&restore.partitions).enumerate()
            {
                if restoring.done || self.is_node_alive(&partition.primary.node, now_ms) {
                    continue;
                }
                let Ok(mut placed) = self.place(1, 1, now_ms) else {
                    continue;
                };
                let Some(mut moved) = placed.pop() else {
                    continue;
                };
                moved.ballot = partition.ballot + 1;
                moved.secondaries.clear();
                moved.learners.clear();
                tracing::info!(
                    table = %table.name,
                    partition = index,
                    from = %partition.primary.node,
                    to = %moved.primary.node,
                    "the node restoring a partition is dead; another restores it"
                );
                changes.push(((*app_id, index), moved));
            }
        }
        changes
    }
}
