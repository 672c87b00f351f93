//! Meta's part of duplication between clusters (docs/duplication.md): the
//! record of every duplication, persisted with meta's data; the orders
//! that tell each partition's members to tag their writes and keep their
//! logs, and its primary to ship; and the primaries' reports, whose
//! confirmed decrees meta keeps.
//!
//! A duplication ships every committed mutation of a table to the same
//! table of another cluster, partition p to partition p: both tables must
//! have the same partition count, which is why a duplicated table does not
//! split. The confirmed decree of a partition is the last decree the
//! remote cluster holds; the partition's primary (whichever node holds it)
//! ships from the next one. Meta never lowers it (**dup-confirmed-monotone**):
//! a lower one is a report of a primary that lost its place, or of an
//! earlier attempt.
//!
//! Meta cannot reach the remote cluster from this state machine: its
//! server asks the remote meta for its cluster id and the remote table's
//! partition count first, and hands them to [`MetaState::add_dup`].

use std::collections::BTreeMap;

use markab_wire::message::{
    DupOrder, DupReport, DupRequest, DupStatus as OrderStatus, ErrorCode, Gpid, OpError,
    ResponseBody,
};
use serde::{Deserialize, Serialize};

use super::{MetaData, MetaState, MetaTime, Step, ADDRESS_BYTES_MAX};
use crate::storage::timetag::validate_cluster_id;
use crate::table::validate_table_name;

/// Duplications meta keeps, over every table.
pub const DUPS_MAX: usize = 1_024;
/// Most meta addresses a duplication names for its remote cluster.
pub const DUP_REMOTE_METAS_MAX: usize = 16;
/// Confirmed decrees are persisted at most this often per duplication
/// (and at once for its first report since it started or resumed, or
/// since meta started): a lost one only costs some mutations shipped
/// again, which last-write-wins applies to no effect.
pub const DUP_CONFIRM_PERSIST_MS: u64 = 2_000;
/// The confirmed decree of an order for a partition meta heard nothing of
/// yet: its primary starts at its own last prepared decree and reports it.
pub const DUP_DECREE_NONE: i64 = -1;
/// Longest failure message kept in a record, in bytes.
const MESSAGE_BYTES_MAX: usize = 1_024;

/// Where a duplication stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DupStatus {
    /// The primaries ship.
    #[default]
    Running,
    /// Nothing ships; the members keep their logs from the confirmed
    /// decrees.
    Paused,
    /// A primary reported it cannot go on (its log no longer holds the
    /// mutations to ship, the remote refuses them). Meta never restarts it:
    /// the remote table misses writes, so the operator removes it, restores
    /// the remote table's data and adds it again.
    Failed,
}

impl DupStatus {
    pub fn name(self) -> &'static str {
        match self {
            DupStatus::Running => "running",
            DupStatus::Paused => "paused",
            DupStatus::Failed => "failed",
        }
    }
}

/// A duplication as meta persists it (by id in [`MetaData::dups`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDup {
    /// The duplicated table.
    pub app_id: i32,
    /// The remote cluster's meta addresses.
    pub remote_metas: Vec<String>,
    pub remote_table: String,
    pub remote_cluster_id: u8,
    pub status: DupStatus,
    pub created_unix_ms: u64,
    /// The last decree the remote cluster holds, by partition index;
    /// absent until the partition's primary first reported one. Never
    /// lowered (**dup-confirmed-monotone**).
    #[serde(default)]
    pub confirmed: BTreeMap<i32, i64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fail_message: String,
}

/// What meta's server learned from the remote cluster before it asks the
/// state machine to add a duplication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteFacts {
    /// The remote meta's cluster id (its `cluster_info`'s `cluster_id`).
    pub cluster_id: u8,
    /// The remote table's partition count (its route's).
    pub partition_count: i32,
}

/// What meta heard of one duplication since it started or resumed
/// (volatile: the primaries report again after a restart of meta).
#[derive(Debug, Default)]
struct DupHeard {
    /// When meta last proposed to persist its confirmed decrees
    /// (monotonic ms); `None` since it started or resumed.
    persisted_ms: Option<u64>,
    /// The highest confirmed decree heard, by partition index.
    confirmed: BTreeMap<i32, i64>,
    /// The latest report of each partition's primary, and who sent it.
    reports: BTreeMap<i32, (String, DupReport)>,
}

/// The primaries' reports on duplications, by duplication id.
#[derive(Debug, Default)]
pub(super) struct DupProgress {
    dups: BTreeMap<u64, DupHeard>,
}

impl MetaState {
    pub(super) fn dup_request(&mut self, request: &DupRequest) -> Step {
        match request {
            DupRequest::Add { .. } => Step::error(
                ErrorCode::InvalidArgument,
                "dup add asks the remote cluster for its id and the remote table first: send it to meta's server",
            ),
            DupRequest::List { table } => self.list_dups(table),
            DupRequest::Pause { id } => self.set_dup_status(*id, DupStatus::Paused),
            DupRequest::Start { id } => self.set_dup_status(*id, DupStatus::Running),
            DupRequest::Remove { id } => self.remove_dup(*id),
        }
    }

    /// Adds a duplication of `request`'s table (a [`DupRequest::Add`]) to
    /// the remote cluster its server asked first (`remote`). Refused, with
    /// nothing changed: an unknown local table, a remote table of another
    /// partition count (partition p ships to partition p), the remote
    /// cluster being this one (same cluster id), a duplication of the
    /// same table to the same remote table already there, a table being
    /// restored or split, bad remote metas or table name.
    pub fn add_dup(
        &mut self,
        request: &DupRequest,
        remote: RemoteFacts,
        now: impl Into<MetaTime>,
    ) -> Step {
        let now = now.into();
        self.observe(now);
        let DupRequest::Add {
            table,
            remote_metas,
            remote_table,
        } = request
        else {
            return Step::error(
                ErrorCode::InvalidArgument,
                "add_dup takes a dup add request",
            );
        };
        let (app_id, stored) = match self.available(table) {
            Ok((app_id, stored)) => (app_id, stored),
            Err(error) => return Step::reply(Err(error)),
        };
        let remote_table = if remote_table.is_empty() {
            table.clone()
        } else {
            remote_table.clone()
        };
        if let Err(message) = validate_table_name(&remote_table) {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!("remote table {message}"),
            );
        }
        if remote_metas.is_empty() || remote_metas.len() > DUP_REMOTE_METAS_MAX {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "dup add needs 1..={DUP_REMOTE_METAS_MAX} remote meta addresses, not {}",
                    remote_metas.len()
                ),
            );
        }
        if let Some(bad) = remote_metas
            .iter()
            .find(|meta| meta.is_empty() || meta.len() > ADDRESS_BYTES_MAX)
        {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!("remote meta address {bad:?} must be 1..={ADDRESS_BYTES_MAX} bytes"),
            );
        }
        if let Err(message) = validate_cluster_id(remote.cluster_id) {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!("the remote cluster's {message}"),
            );
        }
        let own = self.settings.cluster_id;
        if remote.cluster_id == own {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "the remote cluster has this cluster's id {own}: a table is never duplicated to its own cluster, and two clusters that duplicate to each other need distinct ids ([meta] cluster_id)"
                ),
            );
        }
        if remote.partition_count != stored.partition_count {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "table {table} has {} partitions but remote table {remote_table} has {}: partition p ships to partition p, so the counts must match; create the remote table with {} partitions",
                    stored.partition_count, remote.partition_count, stored.partition_count
                ),
            );
        }
        if stored.restore.is_some() {
            return Step::error(
                ErrorCode::Busy,
                format!("table {table} is being restored; duplicate it once it serves"),
            );
        }
        if stored.split.is_some() {
            return Step::error(
                ErrorCode::Busy,
                format!(
                    "table {table} is splitting; duplicate it once the split committed or was cancelled (and the remote table has as many partitions)"
                ),
            );
        }
        if let Some((id, dup)) = self.data.dups.iter().find(|(_, dup)| {
            dup.app_id == app_id
                && dup.remote_cluster_id == remote.cluster_id
                && dup.remote_table == remote_table
        }) {
            let hint = if dup.status == DupStatus::Failed {
                format!("; it failed: dup remove {id} first")
            } else {
                String::new()
            };
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "table {table} is duplicated to table {remote_table} of cluster {} already (dup {id}, {}){hint}",
                    remote.cluster_id,
                    dup.status.name()
                ),
            );
        }
        if self.data.dups.len() >= DUPS_MAX {
            return Step::error(
                ErrorCode::Busy,
                format!("meta keeps {DUPS_MAX} duplications, its maximum; remove some first"),
            );
        }
        let mut next = self.successor();
        // Ids are the add time in Unix ms, as Pegasus's are in seconds,
        // made unique and increasing.
        let id = now.unix_ms.max(next.last_dup_id + 1);
        next.last_dup_id = id;
        next.dups.insert(
            id,
            StoredDup {
                app_id,
                remote_metas: remote_metas.clone(),
                remote_table: remote_table.clone(),
                remote_cluster_id: remote.cluster_id,
                status: DupStatus::Running,
                created_unix_ms: now.unix_ms,
                confirmed: BTreeMap::new(),
                fail_message: String::new(),
            },
        );
        Step {
            reply: Ok(ResponseBody::Pairs(vec![
                ("dup_id".into(), id.to_string()),
                ("table".into(), table.clone()),
                ("app_id".into(), app_id.to_string()),
                ("remote_table".into(), remote_table),
                ("remote_cluster_id".into(), remote.cluster_id.to_string()),
                ("status".into(), DupStatus::Running.name().into()),
            ])),
            persist: Some(next),
        }
    }

    fn list_dups(&self, table: &str) -> Step {
        let app_id = if table.is_empty() {
            None
        } else {
            match self.available(table) {
                Ok((app_id, _)) => Some(app_id),
                Err(error) => return Step::reply(Err(error)),
            }
        };
        let mut rows = Vec::new();
        for (id, dup) in &self.data.dups {
            if app_id.is_some_and(|app_id| app_id != dup.app_id) {
                continue;
            }
            let stored = self.data.tables.get(&dup.app_id);
            let mut summary = format!(
                "table={} app_id={} remote_cluster_id={} remote_table={} remote_metas={} status={} created_unix_ms={}",
                stored.map_or("?", |table| table.name.as_str()),
                dup.app_id,
                dup.remote_cluster_id,
                dup.remote_table,
                dup.remote_metas.join(","),
                dup.status.name(),
                dup.created_unix_ms
            );
            if !dup.fail_message.is_empty() {
                summary.push_str(&format!(" fail_message={}", dup.fail_message));
            }
            rows.push((format!("dup {id}"), summary));
            let heard = self.dup_progress.dups.get(id);
            let partitions = stored.map_or(0, |table| table.partition_count.max(0));
            for index in 0..partitions {
                let confirmed = confirmed_of(dup, heard, index);
                let confirmed_text = if confirmed == DUP_DECREE_NONE {
                    "none".to_owned()
                } else {
                    confirmed.to_string()
                };
                let text = match heard.and_then(|heard| heard.reports.get(&index)) {
                    Some((node, report)) => format!(
                        "confirmed={confirmed_text} committed={} lag_decrees={} lag_ms={} shipped_records={} shipped_bytes={} errors={} primary={node} message={}",
                        report.committed_decree,
                        report
                            .committed_decree
                            .saturating_sub(confirmed.max(0))
                            .max(0),
                        report.lag_ms,
                        report.shipped_records,
                        report.shipped_bytes,
                        report.errors,
                        report.message
                    ),
                    None => format!(
                        "confirmed={confirmed_text} no report from its primary since meta started"
                    ),
                };
                rows.push((format!("dup {id} partition {index}"), text));
            }
        }
        Step::reply(Ok(ResponseBody::Pairs(rows)))
    }

    fn set_dup_status(&mut self, id: u64, status: DupStatus) -> Step {
        let dup = match self.dup(id) {
            Ok(dup) => dup,
            Err(error) => return Step::reply(Err(error)),
        };
        if dup.status == DupStatus::Failed {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!(
                    "dup {id} failed ({}); meta never {} a failed duplication: the remote table misses writes. Remove it (dup remove {id}), restore the remote table's data from a backup of this table, then add it again",
                    dup.fail_message,
                    if status == DupStatus::Running { "restarts" } else { "pauses" }
                ),
            );
        }
        if dup.status == status {
            return Step::error(
                ErrorCode::InvalidArgument,
                format!("dup {id} is {} already", status.name()),
            );
        }
        let mut next = self.successor();
        next.dups.get_mut(&id).expect("found above").status = status;
        // Its first report after it resumes is persisted at once.
        if let Some(heard) = self.dup_progress.dups.get_mut(&id) {
            heard.persisted_ms = None;
        }
        Step {
            reply: Ok(ResponseBody::Pairs(vec![
                ("dup_id".into(), id.to_string()),
                ("status".into(), status.name().into()),
            ])),
            persist: Some(next),
        }
    }

    fn remove_dup(&mut self, id: u64) -> Step {
        if let Err(error) = self.dup(id) {
            return Step::reply(Err(error));
        }
        let mut next = self.successor();
        next.dups.remove(&id);
        Step {
            reply: Ok(ResponseBody::Pairs(vec![
                ("dup_id".into(), id.to_string()),
                ("status".into(), "removed".into()),
            ])),
            persist: Some(next),
        }
    }

    /// Duplication `id`; `NOT_FOUND` when meta knows none.
    fn dup(&self, id: u64) -> Result<&StoredDup, OpError> {
        self.data.dups.get(&id).ok_or_else(|| {
            OpError::new(
                ErrorCode::NotFound,
                format!("meta knows no duplication {id} (dup list shows them)"),
            )
        })
    }

    /// The duplication orders of `node` from `data`: one for every
    /// partition of a running or paused duplication that `node` holds as
    /// primary or secondary, with the confirmed decree to ship after (or
    /// [`DUP_DECREE_NONE`]).
    pub(super) fn dup_orders(&self, data: &MetaData, node: &str) -> Vec<DupOrder> {
        let mut orders = Vec::new();
        for (id, dup) in &data.dups {
            let status = match dup.status {
                DupStatus::Running => OrderStatus::Running,
                DupStatus::Paused => OrderStatus::Paused,
                DupStatus::Failed => continue,
            };
            let Some(table) = data
                .tables
                .get(&dup.app_id)
                .filter(|table| table.is_available())
            else {
                continue;
            };
            for (index, partition) in table.partitions.iter().enumerate() {
                // Learners too: they keep their logs and could be primary.
                if partition.primary.node != node
                    && !partition.has_secondary(node)
                    && !partition.has_learner(node)
                {
                    continue;
                }
                orders.push(DupOrder {
                    dup_id: *id,
                    gpid: Gpid {
                        app_id: dup.app_id,
                        partition_index: index as i32,
                    },
                    remote_metas: dup.remote_metas.clone(),
                    remote_table: dup.remote_table.clone(),
                    remote_cluster_id: dup.remote_cluster_id,
                    status,
                    // The persisted decree, not the heard one: members keep
                    // their logs from it, and a restart of meta forgets
                    // the heard one (**dup-orders-persisted**).
                    confirmed_decree: confirmed_of(dup, None, index as i32),
                });
            }
        }
        orders
    }

    /// Takes in `node`'s duplication reports: only a partition's current
    /// primary's count, for a running or paused duplication. Confirmed
    /// decrees only grow (**dup-confirmed-monotone**) and reach `next` at
    /// most every [`DUP_CONFIRM_PERSIST_MS`] (at once for the first since
    /// the duplication started or resumed); a failed report fails the
    /// duplication in `next`. Returns whether `next` changed.
    pub(super) fn take_dup_reports(
        &mut self,
        next: &mut MetaData,
        node: &str,
        reports: &[DupReport],
        now_ms: u64,
    ) -> bool {
        let mut changed = false;
        for report in reports {
            let Some(dup) = next.dups.get_mut(&report.dup_id) else {
                continue;
            };
            if dup.status == DupStatus::Failed || dup.app_id != report.gpid.app_id {
                continue;
            }
            let index = report.gpid.partition_index;
            let is_primary = next
                .tables
                .get(&dup.app_id)
                .filter(|table| table.is_available())
                .and_then(|table| {
                    usize::try_from(index)
                        .ok()
                        .and_then(|i| table.partitions.get(i))
                })
                .is_some_and(|partition| partition.primary.node == node);
            if !is_primary {
                continue;
            }
            let heard = self.dup_progress.dups.entry(report.dup_id).or_default();
            heard
                .reports
                .insert(index, (node.to_owned(), report.clone()));
            if report.failed {
                let mut message = format!("partition {index} on {node}: {}", report.message);
                truncate(&mut message, MESSAGE_BYTES_MAX);
                tracing::warn!(dup_id = report.dup_id, %message, "duplication failed");
                dup.status = DupStatus::Failed;
                dup.fail_message = message;
                changed = true;
                continue;
            }
            if report.confirmed_decree < 0 {
                // A proposed start (the primary's committed decree): the
                // first one pins the partition's start; later ones, from
                // primaries that have not heard the pin, move nothing
                // (**dup-start-pinned**).
                if confirmed_of(dup, Some(heard), index) < 0 && report.committed_decree >= 0 {
                    heard.confirmed.insert(index, report.committed_decree);
                }
            } else if report.confirmed_decree > confirmed_of(dup, Some(heard), index) {
                heard.confirmed.insert(index, report.confirmed_decree);
            }
        }
        self.persist_confirmed(next, now_ms) || changed
    }

    /// Whether a duplication has confirmed decrees to persist now.
    pub(super) fn dups_due(&self, now_ms: u64) -> bool {
        self.data.dups.iter().any(|(id, dup)| {
            self.dup_progress
                .dups
                .get(id)
                .is_some_and(|heard| due(dup, heard, now_ms))
        })
    }

    /// Writes into `next` the confirmed decrees heard above the stored
    /// ones of every duplication that is due (never lower:
    /// **dup-confirmed-monotone**). Returns whether `next` changed.
    pub(super) fn persist_confirmed(&mut self, next: &mut MetaData, now_ms: u64) -> bool {
        let mut changed = false;
        for (id, dup) in next.dups.iter_mut() {
            let Some(heard) = self.dup_progress.dups.get_mut(id) else {
                continue;
            };
            if !due(dup, heard, now_ms) {
                continue;
            }
            for (index, decree) in &heard.confirmed {
                let stored = dup.confirmed.entry(*index).or_insert(*decree);
                *stored = (*stored).max(*decree);
            }
            heard.persisted_ms = Some(now_ms);
            changed = true;
        }
        changed
    }

    /// Forgets what was heard of duplications no longer running or
    /// paused.
    pub(super) fn prune_dup_progress(&mut self) {
        let data = &self.data;
        self.dup_progress.dups.retain(|id, _| {
            data.dups
                .get(id)
                .is_some_and(|dup| dup.status != DupStatus::Failed)
        });
    }
}

/// The confirmed decree of partition `index` of `dup`: the highest stored
/// or heard, [`DUP_DECREE_NONE`] when there is none.
/// One duplicated partition as meta knows it, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DupPartitionProgress {
    pub dup_id: u64,
    pub table: String,
    pub status: DupStatus,
    pub partition_index: i32,
    /// The highest confirmed decree heard or stored (-1: none).
    pub confirmed: i64,
    /// The latest report of the partition's primary since meta started.
    pub report: Option<DupReport>,
}

impl MetaState {
    /// Every partition of every duplication, with its confirmed decree and
    /// its primary's latest report.
    pub fn dup_progress(&self) -> Vec<DupPartitionProgress> {
        let mut all = Vec::new();
        for (id, dup) in &self.data.dups {
            let stored = self.data.tables.get(&dup.app_id);
            let heard = self.dup_progress.dups.get(id);
            for index in 0..stored.map_or(0, |table| table.partition_count.max(0)) {
                all.push(DupPartitionProgress {
                    dup_id: *id,
                    table: stored.map_or_else(String::new, |table| table.name.clone()),
                    status: dup.status,
                    partition_index: index,
                    confirmed: confirmed_of(dup, heard, index),
                    report: heard
                        .and_then(|heard| heard.reports.get(&index))
                        .map(|(_, report)| report.clone()),
                });
            }
        }
        all
    }
}

fn confirmed_of(dup: &StoredDup, heard: Option<&DupHeard>, index: i32) -> i64 {
    let stored = dup.confirmed.get(&index).copied();
    let heard = heard.and_then(|heard| heard.confirmed.get(&index).copied());
    stored.max(heard).unwrap_or(DUP_DECREE_NONE)
}

/// Whether `heard` holds a confirmed decree above `dup`'s stored one, and
/// the throttle lets it be persisted at `now_ms`.
fn due(dup: &StoredDup, heard: &DupHeard, now_ms: u64) -> bool {
    if dup.status == DupStatus::Failed {
        return false;
    }
    let ahead = heard.confirmed.iter().any(|(index, decree)| {
        dup.confirmed
            .get(index)
            .is_none_or(|stored| decree > stored)
    });
    // A start just pinned is persisted at once: its primary ships nothing
    // until its order carries it (**dup-start-pinned**).
    let pinned = heard
        .confirmed
        .keys()
        .any(|index| !dup.confirmed.contains_key(index));
    pinned
        || ahead
            && heard
                .persisted_ms
                .is_none_or(|at_ms| now_ms.saturating_sub(at_ms) >= DUP_CONFIRM_PERSIST_MS)
}

fn truncate(text: &mut String, bytes_max: usize) {
    if text.len() > bytes_max {
        let mut end = bytes_max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
#[path = "dups_tests.rs"]
mod tests;
