//! Backup policies (docs/backup.md, "Policies"), as Pegasus has them: a
//! named schedule — tables, a block store, an interval, a first time of
//! day, how many complete backups to keep — persisted with meta's data and
//! run by meta's tick. A run starts one backup of each of the policy's
//! tables (one that is still backing up from the last run is skipped);
//! once a table has more complete backups of the policy than it keeps,
//! the oldest are deleted, their top-level manifest first, so a backup
//! being deleted is never seen complete (**retention-oldest-first**).
//!
//! Schedules are calendar times, like TTLs: runs fall on `start_time` (a
//! UTC time of day) plus whole `interval_seconds`, on the wall clock. A meta that
//! was down past a run runs once when it is back, not once per missed run.

use std::collections::{BTreeMap, BTreeSet};

use markab_wire::message::{
    BackupPolicyChange, BackupPolicySpec, ErrorCode, OpError, ResponseBody,
};
use serde::{Deserialize, Serialize};

use super::backups::{BackupStatus, BACKUP_URL_BYTES_MAX};
use super::{MetaData, MetaState, MetaTime, Step};
use crate::table::validate_table_name;

/// Policies meta keeps.
pub const POLICIES_MAX: usize = 256;
/// Most tables of one policy.
pub const POLICY_TABLES_MAX: usize = 1_024;
/// Most complete backups a policy keeps per table.
pub const POLICY_KEEP_MAX: u32 = 1_000;
/// Longest interval between runs: a year.
pub const POLICY_INTERVAL_SECONDS_MAX: u64 = 366 * 86_400;

const DAY_MS: u64 = 86_400_000;

/// A backup policy as meta persists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicy {
    /// Table names.
    pub tables: BTreeSet<String>,
    pub url: String,
    pub interval_seconds: u64,
    /// `HH:MM`, UTC.
    pub start_time: String,
    /// Complete backups kept per table.
    pub keep: u32,
    pub enabled: bool,
    /// When the schedule starts counting (Unix ms): creation, or the last
    /// change of `start_time`.
    pub anchor_unix_ms: u64,
    /// The scheduled time of the last run (Unix ms); 0 before the first.
    pub last_run_unix_ms: u64,
}

impl StoredPolicy {
    /// When the next run is due (Unix ms): runs fall on `start_time` plus
    /// whole intervals; the first is the first such time at or after the
    /// anchor (with a daily interval: the next `start_time`), then every
    /// interval after the last run.
    pub fn next_run_unix_ms(&self) -> u64 {
        let interval_ms = self.interval_seconds.max(1).saturating_mul(1000);
        if self.last_run_unix_ms > 0 {
            return self.last_run_unix_ms.saturating_add(interval_ms);
        }
        let minutes = parse_start_time(&self.start_time).unwrap_or(0);
        let anchor = self.anchor_unix_ms;
        let base = anchor - anchor % DAY_MS + minutes * 60_000;
        if base >= anchor {
            base - (base - anchor) / interval_ms * interval_ms
        } else {
            base.saturating_add((anchor - base).div_ceil(interval_ms) * interval_ms)
        }
    }

    /// The scheduled time of the run due at `now_ms`, if one is: the latest
    /// slot at or before it (missed slots are not run one by one).
    fn due_slot(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_run_unix_ms();
        if !self.enabled || now_ms < next {
            return None;
        }
        let interval_ms = self.interval_seconds.max(1).saturating_mul(1000);
        Some(next + (now_ms - next) / interval_ms * interval_ms)
    }
}

/// `HH:MM` as minutes since midnight.
fn parse_start_time(text: &str) -> Option<u64> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: u64 = hours.parse().ok()?;
    let minutes: u64 = minutes.parse().ok()?;
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

fn invalid(message: impl Into<String>) -> OpError {
    OpError::new(ErrorCode::InvalidArgument, message)
}

impl MetaState {
    pub(super) fn add_policy(&self, spec: &BackupPolicySpec, now: MetaTime) -> Step {
        if let Err(message) = validate_table_name(&spec.name) {
            return Step::reply(Err(invalid(format!("policy {message}"))));
        }
        if self.data.backup_policies.contains_key(&spec.name) {
            return Step::reply(Err(invalid(format!(
                "policy {:?} exists already (modify_backup_policy changes it)",
                spec.name
            ))));
        }
        if self.data.backup_policies.len() >= POLICIES_MAX {
            return Step::error(
                ErrorCode::Busy,
                format!("meta keeps {POLICIES_MAX} policies, its maximum"),
            );
        }
        let mut policy = StoredPolicy {
            url: spec.url.clone(),
            enabled: true,
            anchor_unix_ms: now.unix_ms,
            ..StoredPolicy::default()
        };
        let checked = self
            .add_policy_tables(&mut policy, &spec.tables)
            .and_then(|()| check_url(&spec.url))
            .and_then(|()| set_interval(&mut policy, spec.interval_seconds))
            .and_then(|()| set_start_time(&mut policy, &spec.start_time))
            .and_then(|()| set_keep(&mut policy, spec.keep));
        if let Err(error) = checked {
            return Step::reply(Err(error));
        }
        if policy.tables.is_empty() {
            return Step::reply(Err(invalid("a policy needs at least one table")));
        }
        let mut next = self.successor();
        let rows = describe_policy(&spec.name, &policy);
        next.backup_policies.insert(spec.name.clone(), policy);
        Step {
            reply: Ok(ResponseBody::Pairs(rows)),
            persist: Some(next),
        }
    }

    fn add_policy_tables(
        &self,
        policy: &mut StoredPolicy,
        tables: &[String],
    ) -> Result<(), OpError> {
        for table in tables {
            self.available(table)?;
            policy.tables.insert(table.clone());
        }
        if policy.tables.len() > POLICY_TABLES_MAX {
            return Err(invalid(format!(
                "a policy has at most {POLICY_TABLES_MAX} tables"
            )));
        }
        Ok(())
    }

    pub(super) fn modify_policy(&self, change: &BackupPolicyChange, now: MetaTime) -> Step {
        let Some(stored) = self.data.backup_policies.get(&change.name) else {
            return Step::reply(Err(unknown_policy(&change.name)));
        };
        let mut policy = stored.clone();
        let mut checked = self.add_policy_tables(&mut policy, &change.add_tables);
        for table in &change.remove_tables {
            if checked.is_ok() && !policy.tables.remove(table) {
                checked = Err(invalid(format!(
                    "table {table:?} is not in policy {:?}",
                    change.name
                )));
            }
        }
        if change.interval_seconds != 0 {
            checked = checked.and_then(|()| set_interval(&mut policy, change.interval_seconds));
        }
        if !change.start_time.is_empty() {
            checked = checked.and_then(|()| set_start_time(&mut policy, &change.start_time));
            // A new time of day starts the schedule over.
            policy.anchor_unix_ms = now.unix_ms;
            policy.last_run_unix_ms = 0;
        }
        if change.keep != 0 {
            checked = checked.and_then(|()| set_keep(&mut policy, change.keep));
        }
        if let Err(error) = checked {
            return Step::reply(Err(error));
        }
        if policy.tables.is_empty() {
            return Step::reply(Err(invalid("a policy needs at least one table")));
        }
        if policy == *stored {
            return Step::reply(Err(invalid(format!(
                "nothing to change in policy {:?}",
                change.name
            ))));
        }
        let rows = describe_policy(&change.name, &policy);
        let mut next = self.successor();
        next.backup_policies.insert(change.name.clone(), policy);
        Step {
            reply: Ok(ResponseBody::Pairs(rows)),
            persist: Some(next),
        }
    }

    pub(super) fn enable_policy(&self, name: &str, enabled: bool) -> Step {
        let Some(stored) = self.data.backup_policies.get(name) else {
            return Step::reply(Err(unknown_policy(name)));
        };
        let word = if enabled { "enabled" } else { "disabled" };
        if stored.enabled == enabled {
            return Step::reply(Ok(ResponseBody::Pairs(vec![(
                name.to_owned(),
                format!("already {word}"),
            )])));
        }
        let mut next = self.successor();
        next.backup_policies.get_mut(name).expect("checked").enabled = enabled;
        Step {
            reply: Ok(ResponseBody::Pairs(vec![(name.to_owned(), word.into())])),
            persist: Some(next),
        }
    }

    pub(super) fn list_policies(&self) -> Step {
        let rows = self
            .data
            .backup_policies
            .iter()
            .map(|(name, policy)| {
                (
                    name.clone(),
                    format!(
                        "tables={} url={} interval_seconds={} start_time={} keep={} enabled={} next_run_unix_ms={}",
                        policy.tables.iter().cloned().collect::<Vec<_>>().join(","),
                        policy.url,
                        policy.interval_seconds,
                        policy.start_time,
                        policy.keep,
                        policy.enabled,
                        policy.next_run_unix_ms()
                    ),
                )
            })
            .collect();
        Step::reply(Ok(ResponseBody::Pairs(rows)))
    }

    pub(super) fn query_policy(&self, name: &str) -> Step {
        let Some(policy) = self.data.backup_policies.get(name) else {
            return Step::reply(Err(unknown_policy(name)));
        };
        let mut rows = describe_policy(name, policy);
        for (id, backup) in &self.data.backups {
            if backup.policy == name {
                let status = if backup.expired {
                    "deleting"
                } else {
                    backup.status.name()
                };
                rows.push((
                    format!("backup {id}"),
                    format!(
                        "table={} status={status} started_unix_ms={} finished_unix_ms={}",
                        backup.table, backup.started_unix_ms, backup.finished_unix_ms
                    ),
                ));
            }
        }
        Step::reply(Ok(ResponseBody::Pairs(rows)))
    }

    /// Whether a policy's run is due at `now_ms`, or a policy's table has
    /// more complete backups than it keeps.
    pub(super) fn policies_due(&self, now_ms: u64) -> bool {
        self.data
            .backup_policies
            .values()
            .any(|policy| policy.due_slot(now_ms).is_some())
            || !expired_backups(&self.data).is_empty()
    }

    /// In `next`: starts the due runs (one backup per table of the policy,
    /// unless its last one still runs) and marks the backups beyond each
    /// policy's count for deletion.
    pub(super) fn run_policies(&self, next: &mut MetaData, now: MetaTime) {
        let names: Vec<String> = next.backup_policies.keys().cloned().collect();
        for name in names {
            let policy = &next.backup_policies[&name];
            let Some(slot) = policy.due_slot(now.unix_ms) else {
                continue;
            };
            let (tables, url) = (policy.tables.clone(), policy.url.clone());
            for table in &tables {
                let Some((app_id, _)) = next
                    .tables
                    .iter()
                    .find(|(_, stored)| stored.is_available() && stored.name == *table)
                else {
                    tracing::warn!(policy = %name, %table, "a policy's table does not exist; skipped");
                    continue;
                };
                let app_id = *app_id;
                let running = next.backups.values().any(|backup| {
                    backup.app_id == app_id && backup.status == BackupStatus::Running
                });
                if running {
                    tracing::warn!(policy = %name, %table, "the table's last backup still runs; this run skips it");
                    continue;
                }
                match self.new_backup(next, app_id, &url, &name, now) {
                    Ok(id) => {
                        tracing::info!(policy = %name, %table, backup_id = id, "policy backup started")
                    }
                    Err(error) => {
                        tracing::warn!(policy = %name, %table, %error, "policy backup not started")
                    }
                }
            }
            next.backup_policies
                .get_mut(&name)
                .expect("listed")
                .last_run_unix_ms = slot;
        }
        for id in expired_backups(next) {
            next.backups.get_mut(&id).expect("listed").expired = true;
        }
    }
}

/// Complete backups of each policy and table beyond the policy's count,
/// not yet marked: the oldest first.
pub(super) fn expired_backups(data: &MetaData) -> Vec<u64> {
    let mut by_series: BTreeMap<(&str, i32), Vec<u64>> = BTreeMap::new();
    for (id, backup) in &data.backups {
        if backup.status == BackupStatus::Complete && !backup.policy.is_empty() {
            by_series
                .entry((backup.policy.as_str(), backup.app_id))
                .or_default()
                .push(*id);
        }
    }
    let mut expired = Vec::new();
    for ((policy, _), ids) in by_series {
        let Some(stored) = data.backup_policies.get(policy) else {
            continue;
        };
        let keep = stored.keep.max(1) as usize;
        if ids.len() > keep {
            expired.extend(
                ids[..ids.len() - keep]
                    .iter()
                    .filter(|id| !data.backups[id].expired),
            );
        }
    }
    expired
}

fn describe_policy(name: &str, policy: &StoredPolicy) -> Vec<(String, String)> {
    vec![
        ("policy".into(), name.to_owned()),
        (
            "tables".into(),
            policy.tables.iter().cloned().collect::<Vec<_>>().join(","),
        ),
        ("url".into(), policy.url.clone()),
        (
            "interval_seconds".into(),
            policy.interval_seconds.to_string(),
        ),
        ("start_time".into(), policy.start_time.clone()),
        ("keep".into(), policy.keep.to_string()),
        ("enabled".into(), policy.enabled.to_string()),
        (
            "next_run_unix_ms".into(),
            policy.next_run_unix_ms().to_string(),
        ),
    ]
}

fn unknown_policy(name: &str) -> OpError {
    OpError::new(
        ErrorCode::NotFound,
        format!("meta has no backup policy {name:?} (ls_backup_policy lists them)"),
    )
}

fn check_url(url: &str) -> Result<(), OpError> {
    if url.is_empty() || url.len() > BACKUP_URL_BYTES_MAX {
        return Err(invalid(format!(
            "a backup URL must be 1..={BACKUP_URL_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

fn set_interval(policy: &mut StoredPolicy, seconds: u64) -> Result<(), OpError> {
    if !(1..=POLICY_INTERVAL_SECONDS_MAX).contains(&seconds) {
        return Err(invalid(format!(
            "interval_seconds = {seconds} is out of range (allowed 1..={POLICY_INTERVAL_SECONDS_MAX})"
        )));
    }
    policy.interval_seconds = seconds;
    Ok(())
}

fn set_start_time(policy: &mut StoredPolicy, text: &str) -> Result<(), OpError> {
    if parse_start_time(text).is_none() {
        return Err(invalid(format!(
            "start_time {text:?} is not a UTC time of day HH:MM (00:00..=23:59)"
        )));
    }
    policy.start_time = text.to_owned();
    Ok(())
}

fn set_keep(policy: &mut StoredPolicy, keep: u32) -> Result<(), OpError> {
    if !(1..=POLICY_KEEP_MAX).contains(&keep) {
        return Err(invalid(format!(
            "keep = {keep} is out of range (allowed 1..={POLICY_KEEP_MAX})"
        )));
    }
    policy.keep = keep;
    Ok(())
}
