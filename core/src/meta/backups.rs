//! Meta's part of cold backups (docs/backup.md, "Backups"): the record of
//! every backup, persisted with meta's data; the orders that send each
//! partition's backup to the node holding its primary; the nodes' reports;
//! and the work left to meta's IO side — writing a finished backup's
//! manifest, removing a failed one's files — whose outcome comes back as
//! an input like any other.
//!
//! A backup is complete only once its top-level manifest is written, after
//! every partition's (**manifest-last**); until then it is `running`, and a
//! backup that fails is `failed` and its files are removed, never listed as
//! complete (**failed-backup-never-complete**). A partition's backup runs at
//! whichever node holds its primary when meta hears from it: a primary that
//! moves (a failover, a switch) leaves its attempt behind and the new
//! primary starts its own under a prefix of its own, so two attempts never
//! mix their files (**one-attempt-per-prefix**).

use std::collections::BTreeMap;

use markab_wire::message::{
    BackupJobState, BackupOrder, BackupReport, BackupRequest, ErrorCode, Gpid, OpError,
    ResponseBody,
};
use serde::{Deserialize, Serialize};

use super::{MetaData, MetaState, MetaTime, Step};

/// Backups running at once, over every table.
pub const BACKUPS_RUNNING_MAX: usize = 16;
/// Backup records meta keeps; a new one makes it forget the oldest
/// finished one beyond this.
pub const BACKUP_RECORDS_MAX: usize = 1_000;
/// Longest accepted block store URL, in bytes.
pub const BACKUP_URL_BYTES_MAX: usize = 4_096;
/// Longest failure reason kept in a record, in bytes.
const REASON_BYTES_MAX: usize = 1_024;

/// Where a backup stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    /// Partitions uploading, or all uploaded and the manifest not yet
    /// written.
    #[default]
    Running,
    /// The manifest is written: the backup can be restored.
    Complete,
    /// Given up; its files are removed (`cleaned` once they are).
    Failed,
}

impl BackupStatus {
    pub fn name(self) -> &'static str {
        match self {
            BackupStatus::Running => "running",
            BackupStatus::Complete => "complete",
            BackupStatus::Failed => "failed",
        }
    }
}

/// One partition's finished upload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionBackup {
    /// The checkpoint holds every mutation up to this decree.
    pub decree: i64,
    /// The attempt's prefix: its files and its partition manifest.
    pub prefix: String,
    pub bytes: u64,
}

/// A backup as meta persists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBackup {
    pub table: String,
    pub app_id: i32,
    /// The block store (docs/backup.md, "URLs").
    pub url: String,
    pub partition_count: i32,
    /// The table's replica count (a restore's default).
    #[serde(default)]
    pub replica_count: i32,
    /// The table's envs when the backup began.
    pub envs: BTreeMap<String, String>,
    pub started_unix_ms: u64,
    /// 0 while running.
    pub finished_unix_ms: u64,
    pub status: BackupStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Failed: its files are removed.
    #[serde(default)]
    pub cleaned: bool,
    /// One per partition, by index: its upload once done.
    pub partitions: Vec<Option<PartitionBackup>>,
    /// The policy that started it (empty: an operator's `backup`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
    /// Complete, and beyond its policy's count: being deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

impl StoredBackup {
    fn done_count(&self) -> usize {
        self.partitions.iter().flatten().count()
    }

    /// Finished and, if it failed, cleaned up: nothing left to do.
    fn settled(&self) -> bool {
        match self.status {
            BackupStatus::Running => false,
            BackupStatus::Complete => true,
            BackupStatus::Failed => self.cleaned,
        }
    }
}

/// The key prefix of a backup in its block store.
pub fn backup_prefix(backup_id: u64) -> String {
    backup_id.to_string()
}

/// The key prefix of one partition of a backup (Pegasus's layout:
/// `<backup_id>/<table>_<app_id>/<partition>`).
pub fn partition_prefix(backup_id: u64, table: &str, app_id: i32, partition_index: i32) -> String {
    format!("{backup_id}/{table}_{app_id}/{partition_index}")
}

/// What meta's IO side has to do for the backups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupWork {
    /// Every partition is uploaded: write the backup's manifest (from the
    /// record and the partitions' manifests), remove other attempts' files,
    /// then report with [`MetaState::backup_written`].
    WriteManifest {
        backup_id: u64,
        backup: StoredBackup,
    },
    /// The backup failed: remove everything under its prefix, then report
    /// with [`MetaState::backup_cleaned`].
    CleanUp { backup_id: u64, url: String },
    /// The backup is beyond its policy's count: remove its manifest, then
    /// everything under its prefix, then report with
    /// [`MetaState::backup_deleted`].
    Delete { backup_id: u64, url: String },
}

impl BackupWork {
    pub fn backup_id(&self) -> u64 {
        match self {
            BackupWork::WriteManifest { backup_id, .. }
            | BackupWork::CleanUp { backup_id, .. }
            | BackupWork::Delete { backup_id, .. } => *backup_id,
        }
    }
}

/// The latest report heard of each partition backup, by (backup, index):
/// volatile, for progress only.
#[derive(Debug, Default)]
pub(super) struct BackupProgress {
    reports: BTreeMap<(u64, i32), (String, BackupReport)>,
}

impl MetaState {
    pub(super) fn backup_request(&mut self, request: &BackupRequest, now: MetaTime) -> Step {
        match request {
            BackupRequest::Start { table, url } => self.start_backup(table, url, now),
            BackupRequest::List { table } => {
                let rows = self
                    .data
                    .backups
                    .iter()
                    .filter(|(_, backup)| table.is_empty() || backup.table == *table)
                    .map(|(id, backup)| {
                        (
                            id.to_string(),
                            format!(
                                "table={} status={} partitions={}/{} started_unix_ms={} finished_unix_ms={} url={}",
                                backup.table,
                                if backup.expired { "deleting" } else { backup.status.name() },
                                backup.done_count(),
                                backup.partition_count,
                                backup.started_unix_ms,
                                backup.finished_unix_ms,
                                backup.url
                            ),
                        )
                    })
                    .collect();
                Step::reply(Ok(ResponseBody::Pairs(rows)))
            }
            BackupRequest::Restore { .. } => Step::error(
                ErrorCode::InvalidArgument,
                "a restore reads its backup's manifest first: send it to meta's server",
            ),
            BackupRequest::QueryRestore { table } => self.restore_status(table),
            BackupRequest::CancelRestore { table } => self.cancel_restore(table),
            BackupRequest::AddPolicy(spec) => self.add_policy(spec, now),
            BackupRequest::ListPolicies => self.list_policies(),
            BackupRequest::QueryPolicy { name } => self.query_policy(name),
            BackupRequest::ModifyPolicy(change) => self.modify_policy(change, now),
            BackupRequest::EnablePolicy { name } => self.enable_policy(name, true),
            BackupRequest::DisablePolicy { name } => self.enable_policy(name, false),
            BackupRequest::Query { backup_id } => match self.data.backups.get(backup_id) {
                None => Step::error(
                    ErrorCode::NotFound,
                    format!("meta knows no backup {backup_id} (ls_backups lists them)"),
                ),
                Some(backup) => Step::reply(Ok(ResponseBody::Pairs(
                    self.describe_backup(*backup_id, backup),
                ))),
            },
        }
    }

    fn start_backup(&mut self, table: &str, url: &str, now: MetaTime) -> Step {
        let app_id = match self.available(table) {
            Ok((app_id, _)) => app_id,
            Err(error) => return Step::reply(Err(error)),
        };
        if url.is_empty() || url.len() > BACKUP_URL_BYTES_MAX {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!("a backup URL must be 1..={BACKUP_URL_BYTES_MAX} bytes"),
            );
        }
        if let Some((id, _)) =
            self.data.backups.iter().find(|(_, backup)| {
                backup.status == BackupStatus::Running && backup.app_id == app_id
            })
        {
            return Step::error(
                ErrorCode::Busy,
                format!("backup {id} of table {table} is running; one at a time per table"),
            );
        }
        let mut next = self.successor();
        let backup_id = match self.new_backup(&mut next, app_id, url, "", now) {
            Ok(backup_id) => backup_id,
            Err(error) => return Step::reply(Err(error)),
        };
        let partitions = next.backups[&backup_id].partition_count;
        Step {
            reply: Ok(ResponseBody::Pairs(vec![
                ("backup_id".into(), backup_id.to_string()),
                ("table".into(), table.to_owned()),
                ("app_id".into(), app_id.to_string()),
                ("partitions".into(), partitions.to_string()),
                ("url".into(), url.to_owned()),
            ])),
            persist: Some(next),
        }
    }

    /// Records a new running backup of table `app_id` of `next` to `url`
    /// (by `policy`, or an operator when empty); its id.
    pub(super) fn new_backup(
        &self,
        next: &mut MetaData,
        app_id: i32,
        url: &str,
        policy: &str,
        now: MetaTime,
    ) -> Result<u64, OpError> {
        if url.is_empty() || url.len() > BACKUP_URL_BYTES_MAX {
            return Err(OpError::new(
                ErrorCode::InvalidArgument,
                format!("a backup URL must be 1..={BACKUP_URL_BYTES_MAX} bytes"),
            ));
        }
        let running = next
            .backups
            .values()
            .filter(|backup| backup.status == BackupStatus::Running)
            .count();
        if running >= BACKUPS_RUNNING_MAX {
            return Err(OpError::new(
                ErrorCode::Busy,
                format!("{running} backups are running, the most meta runs at once"),
            ));
        }
        if next.backups.len() >= BACKUP_RECORDS_MAX {
            let oldest_settled = next
                .backups
                .iter()
                .find(|(_, backup)| backup.settled())
                .map(|(id, _)| *id);
            match oldest_settled {
                Some(id) => {
                    next.backups.remove(&id);
                }
                None => {
                    return Err(OpError::new(
                        ErrorCode::Busy,
                        format!(
                            "meta keeps {BACKUP_RECORDS_MAX} backup records, none of them finished"
                        ),
                    ))
                }
            }
        }
        let stored = next.tables.get(&app_id).expect("an available table");
        if stored.split.is_some() {
            return Err(OpError::new(
                ErrorCode::Busy,
                format!(
                    "table {} is splitting; back it up once the split committed or was cancelled",
                    stored.name
                ),
            ));
        }
        let backup = StoredBackup {
            table: stored.name.clone(),
            app_id,
            url: url.to_owned(),
            partition_count: stored.partition_count,
            replica_count: stored.replica_count,
            envs: stored.envs.clone(),
            started_unix_ms: now.unix_ms,
            finished_unix_ms: 0,
            status: BackupStatus::Running,
            reason: String::new(),
            cleaned: false,
            partitions: vec![None; stored.partition_count.max(0) as usize],
            policy: policy.to_owned(),
            expired: false,
        };
        // Ids are the start time in Unix ms, as Pegasus's are, made unique
        // and increasing: a key prefix no other backup of this meta uses.
        let backup_id = now.unix_ms.max(next.last_backup_id + 1);
        next.last_backup_id = backup_id;
        next.backups.insert(backup_id, backup);
        Ok(backup_id)
    }

    fn describe_backup(&self, backup_id: u64, backup: &StoredBackup) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = vec![
            ("backup_id".into(), backup_id.to_string()),
            ("table".into(), backup.table.clone()),
            ("app_id".into(), backup.app_id.to_string()),
            ("url".into(), backup.url.clone()),
            ("status".into(), backup.status.name().into()),
            (
                "partitions_done".into(),
                format!("{}/{}", backup.done_count(), backup.partition_count),
            ),
            ("started_unix_ms".into(), backup.started_unix_ms.to_string()),
            (
                "finished_unix_ms".into(),
                backup.finished_unix_ms.to_string(),
            ),
        ];
        if !backup.reason.is_empty() {
            rows.push(("reason".into(), backup.reason.clone()));
        }
        if backup.status == BackupStatus::Failed {
            rows.push(("files_removed".into(), backup.cleaned.to_string()));
        }
        for (index, partition) in backup.partitions.iter().enumerate() {
            let text = match partition {
                Some(done) => format!(
                    "done decree={} bytes={} prefix={}",
                    done.decree, done.bytes, done.prefix
                ),
                None if backup.status != BackupStatus::Running => "not uploaded".into(),
                None => match self.backup_progress.reports.get(&(backup_id, index as i32)) {
                    Some((node, report)) if report.state == BackupJobState::Running => {
                        let percent = (report.bytes_done * 100)
                            .checked_div(report.bytes_total)
                            .unwrap_or(0);
                        format!(
                            "uploading {percent}% ({}/{} bytes) on {node}",
                            report.bytes_done, report.bytes_total
                        )
                    }
                    _ => "waiting for its primary".into(),
                },
            };
            rows.push((format!("partition {index}"), text));
        }
        rows
    }

    /// The partitions `node` is to back up, from `data`: every partition of
    /// a running backup, not yet uploaded, whose primary is on `node`.
    pub(super) fn backup_orders(&self, data: &MetaData, node: &str) -> Vec<BackupOrder> {
        let mut orders = Vec::new();
        for (backup_id, backup) in &data.backups {
            if backup.status != BackupStatus::Running {
                continue;
            }
            let Some(table) = data
                .tables
                .get(&backup.app_id)
                .filter(|table| table.is_available())
            else {
                continue;
            };
            for (index, done) in backup.partitions.iter().enumerate() {
                let Some(partition) = table.partitions.get(index) else {
                    continue;
                };
                if done.is_some() || partition.primary.node != node {
                    continue;
                }
                orders.push(BackupOrder {
                    backup_id: *backup_id,
                    gpid: Gpid {
                        app_id: backup.app_id,
                        partition_index: index as i32,
                    },
                    ballot: partition.ballot,
                    url: backup.url.clone(),
                    prefix: partition_prefix(
                        *backup_id,
                        &backup.table,
                        backup.app_id,
                        index as i32,
                    ),
                });
            }
        }
        orders
    }

    /// Takes in `node`'s backup reports: progress kept, a finished upload
    /// recorded in `next`, a failed one failing its backup. Returns whether
    /// `next` changed.
    pub(super) fn take_backup_reports(
        &mut self,
        next: &mut MetaData,
        node: &str,
        reports: &[BackupReport],
        now: MetaTime,
    ) -> bool {
        let mut changed = false;
        for report in reports.iter().filter(|report| !report.restore) {
            let index = report.gpid.partition_index;
            let Some(backup) = next.backups.get_mut(&report.backup_id) else {
                continue;
            };
            if backup.status != BackupStatus::Running
                || backup.app_id != report.gpid.app_id
                || index < 0
                || index >= backup.partition_count
                || backup.partitions[index as usize].is_some()
            {
                continue;
            }
            self.backup_progress
                .reports
                .insert((report.backup_id, index), (node.to_owned(), report.clone()));
            match report.state {
                BackupJobState::Running => {}
                BackupJobState::Done => {
                    let expected =
                        partition_prefix(report.backup_id, &backup.table, backup.app_id, index);
                    if !report.prefix.starts_with(&format!("{expected}/")) {
                        tracing::warn!(
                            backup_id = report.backup_id,
                            partition = index,
                            %node,
                            prefix = %report.prefix,
                            "a finished partition backup outside its partition's prefix; ignored"
                        );
                        continue;
                    }
                    backup.partitions[index as usize] = Some(PartitionBackup {
                        decree: report.decree,
                        prefix: report.prefix.clone(),
                        bytes: report.bytes_total,
                    });
                    changed = true;
                }
                BackupJobState::Failed => {
                    fail(
                        backup,
                        format!("partition {index} on {node}: {}", report.message),
                        now,
                    );
                    changed = true;
                }
            }
        }
        self.backup_progress.reports.retain(|(backup_id, _), _| {
            next.backups
                .get(backup_id)
                .is_some_and(|backup| backup.status == BackupStatus::Running)
        });
        changed
    }

    /// Whether a running backup's table is no longer available.
    pub(super) fn has_orphaned_backups(&self) -> bool {
        self.data
            .backups
            .values()
            .any(|backup| orphaned(&self.data, backup))
    }

    /// Fails, in `next`, every running backup whose table is no longer
    /// available there.
    pub(super) fn fail_orphaned_backups(&self, next: &mut MetaData, now: MetaTime) {
        let orphans: Vec<u64> = next
            .backups
            .iter()
            .filter(|(_, backup)| orphaned(next, backup))
            .map(|(id, _)| *id)
            .collect();
        for id in orphans {
            let backup = next.backups.get_mut(&id).expect("listed just now");
            fail(backup, "its table was dropped".into(), now);
        }
    }

    /// What meta's IO side has to do now for the backups (it runs each at
    /// most once at a time and reports the outcome).
    pub fn backup_work(&self) -> Vec<BackupWork> {
        self.data
            .backups
            .iter()
            .filter_map(|(backup_id, backup)| match backup.status {
                BackupStatus::Running if backup.done_count() == backup.partitions.len() => {
                    Some(BackupWork::WriteManifest {
                        backup_id: *backup_id,
                        backup: backup.clone(),
                    })
                }
                BackupStatus::Failed if !backup.cleaned => Some(BackupWork::CleanUp {
                    backup_id: *backup_id,
                    url: backup.url.clone(),
                }),
                BackupStatus::Complete if backup.expired => Some(BackupWork::Delete {
                    backup_id: *backup_id,
                    url: backup.url.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The outcome of writing `backup_id`'s manifest: the data to store and
    /// commit (none when nothing changes).
    pub fn backup_written(
        &self,
        backup_id: u64,
        outcome: Result<(), String>,
        now: impl Into<MetaTime>,
    ) -> Option<MetaData> {
        let now = now.into();
        let backup = self.data.backups.get(&backup_id)?;
        if backup.status != BackupStatus::Running {
            return None;
        }
        let mut next = self.successor();
        let backup = next.backups.get_mut(&backup_id)?;
        match outcome {
            Ok(()) => {
                backup.status = BackupStatus::Complete;
                backup.finished_unix_ms = now.unix_ms;
            }
            Err(reason) => fail(backup, format!("writing its manifest: {reason}"), now),
        }
        // In the same change, so that no committed state lists more
        // complete backups of a policy than it keeps.
        for id in super::policies::expired_backups(&next) {
            next.backups.get_mut(&id).expect("listed").expired = true;
        }
        Some(next)
    }

    /// An expired backup's files are deleted: its record goes (the data to
    /// store and commit).
    pub fn backup_deleted(&self, backup_id: u64) -> Option<MetaData> {
        let backup = self.data.backups.get(&backup_id)?;
        if !backup.expired {
            return None;
        }
        let mut next = self.successor();
        next.backups.remove(&backup_id);
        Some(next)
    }

    /// A failed backup's files are removed: the data to store and commit.
    pub fn backup_cleaned(&self, backup_id: u64) -> Option<MetaData> {
        let backup = self.data.backups.get(&backup_id)?;
        if backup.status != BackupStatus::Failed || backup.cleaned {
            return None;
        }
        let mut next = self.successor();
        next.backups.get_mut(&backup_id)?.cleaned = true;
        Some(next)
    }
}

/// A running backup whose table is not available in `data`.
fn orphaned(data: &MetaData, backup: &StoredBackup) -> bool {
    backup.status == BackupStatus::Running
        && !data
            .tables
            .get(&backup.app_id)
            .is_some_and(|table| table.is_available())
}

fn fail(backup: &mut StoredBackup, mut reason: String, now: MetaTime) {
    if reason.len() > REASON_BYTES_MAX {
        let mut end = REASON_BYTES_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    tracing::warn!(table = %backup.table, %reason, "backup failed");
    backup.status = BackupStatus::Failed;
    backup.reason = reason;
    backup.finished_unix_ms = now.unix_ms;
}

#[cfg(test)]
#[path = "backups_tests.rs"]
mod tests;
