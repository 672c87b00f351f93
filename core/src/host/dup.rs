//! The shipping of duplicated tables, sans IO (docs/duplication.md,
//! "Shipping"): what a node's primaries of duplicated partitions ship,
//! from where, and what they report to meta. The node (or the simulator)
//! does the IO: it reads the log, sends each [`ShipBatch`] to the remote
//! cluster and tells [`DupShipping`] the outcome; time is passed in.
//!
//! Per (duplication, partition): the confirmed decree is the higher of
//! meta's (in the order) and this node's own; -1 in both (a new
//! duplication) starts at the partition's committed decree — it ships
//! what commits from then on. One batch is in flight per partition; a
//! batch is the committed mutations after the confirmed decree, read from
//! the log (at most [`SHIP_BATCH_BYTES_MAX`] of payload, at most
//! [`SHIP_BATCH_MUTATIONS_MAX`] mutations), of which those
//! `timetag::should_ship` passes are sent. A log that no longer holds
//! them fails the duplication; an acknowledged batch confirms its last
//! decree, whether or not it carried that one (a batch with nothing to
//! send confirms at once); a refused or unanswered one is counted and
//! shipped again.

use std::collections::BTreeMap;

use markab_wire::{DupMutation, DupOrder, DupReport, DupStatus, DuplicateRequest, Gpid};

use crate::host::record::LearnedGather;
use crate::replication::messages::{Decree, Mutation};
use crate::storage::timetag::should_ship;

/// Most payload bytes one shipped batch carries (a batch ends at the
/// first mutation past it): with its encoding, a batch stays well inside
/// the remote nodes' default request bound (`request_bytes_max`, 1 MiB).
pub const SHIP_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Most mutations one shipped batch carries.
pub const SHIP_BATCH_MUTATIONS_MAX: usize = 1024;
/// A partition's progress is reported while this node shipped for it
/// this recently (a primary that lost its place stops reporting).
pub const REPORT_FRESH_MS: u64 = 5_000;
/// Bound on one batch's round trip to the remote cluster: a batch
/// unanswered for this long is counted as an error and shipped again.
pub const SHIP_TIMEOUT_MS: u64 = 10_000;

/// (duplication id, partition).
pub type DupKey = (u64, Gpid);

/// One batch to read: the committed mutations of `gpid` after `from` up
/// to `committed` (decrees), for `order`. Made by [`DupShipping::plan`],
/// which marks the partition in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipPlan {
    pub order: DupOrder,
    /// The confirmed decree: the batch starts after it.
    pub from: Decree,
    pub committed: Decree,
    /// Which of this partition's plans it is (a late answer to an older
    /// one does not clear the newer one's in-flight mark).
    pub seq: u64,
}

impl ShipPlan {
    pub fn key(&self) -> DupKey {
        (self.order.dup_id, self.order.gpid)
    }

    /// The gathering of the batch from the partition's log records,
    /// offered in log order (any ballot: the later record of a decree
    /// wins).
    pub fn gather(&self) -> LearnedGather {
        LearnedGather::new(self.from, self.committed, None, SHIP_BATCH_BYTES_MAX)
    }
}

/// A batch to send to partition `gpid.partition_index` of the remote
/// table; its acknowledgement confirms `last`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipBatch {
    pub key: DupKey,
    pub seq: u64,
    /// The confirmed decree it ships after.
    pub from: Decree,
    /// The last decree it covers (the last one read, shipped or not).
    pub last: Decree,
    pub request: DuplicateRequest,
    pub records: u64,
    pub bytes: u64,
}

/// What this node knows of one duplicated partition it shipped for.
#[derive(Clone, Debug, Default)]
struct Progress {
    confirmed: i64,
    committed: i64,
    shipped_records: u64,
    shipped_bytes: u64,
    errors: u64,
    failed: bool,
    message: String,
    /// Since when the confirmed decree is behind.
    behind_since_ms: Option<u64>,
    /// When this node last worked on it.
    seen_ms: u64,
    /// The plan in flight and since when.
    in_flight: Option<(u64, u64)>,
    next_seq: u64,
}

impl Progress {
    /// Nothing confirmed yet (not `Default`: -1, not 0).
    fn fresh() -> Progress {
        Progress {
            confirmed: -1,
            ..Progress::default()
        }
    }

    fn note_behind(&mut self, now_ms: u64) {
        if self.confirmed >= self.committed {
            self.behind_since_ms = None;
        } else if self.behind_since_ms.is_none() {
            self.behind_since_ms = Some(now_ms);
        }
    }

    fn clear_flight(&mut self, seq: u64) {
        if self.in_flight.is_some_and(|(held, _)| held == seq) {
            self.in_flight = None;
        }
    }
}

/// A node's shipping state: every duplicated partition it shipped for.
#[derive(Debug)]
pub struct DupShipping {
    progress: BTreeMap<DupKey, Progress>,
    timeout_ms: u64,
}

impl Default for DupShipping {
    fn default() -> DupShipping {
        DupShipping::new(SHIP_TIMEOUT_MS)
    }
}

impl DupShipping {
    /// Shipping whose batches time out after `timeout_ms` unanswered.
    pub fn new(timeout_ms: u64) -> DupShipping {
        DupShipping {
            progress: BTreeMap::new(),
            timeout_ms,
        }
    }

    /// The next batch to read for `order`'s partition, whose committed
    /// decree is `committed`: `None` when the duplication is paused or
    /// failed, the remote holds everything committed, or a batch is in
    /// flight (unless it timed out: then counted as an error). A plan
    /// marks the partition in flight until [`DupShipping::batch`] finds
    /// nothing to send or the batch is acknowledged or refused.
    pub fn plan(&mut self, order: &DupOrder, committed: i64, now_ms: u64) -> Option<ShipPlan> {
        let timeout_ms = self.timeout_ms;
        let entry = self
            .progress
            .entry((order.dup_id, order.gpid))
            .or_insert_with(Progress::fresh);
        entry.seen_ms = now_ms;
        entry.committed = committed;
        entry.confirmed = entry.confirmed.max(order.confirmed_decree);
        entry.note_behind(now_ms);
        if entry.confirmed < 0 {
            // A new duplication whose start meta has not persisted yet:
            // ship nothing. The report (confirmed -1) proposes this
            // primary's committed decree; meta pins the first proposal it
            // hears and every primary ships from that pin
            // (**dup-start-pinned**). A primary that replaced another
            // before the start was persisted would otherwise start at its
            // own, later committed decree and skip what the first one
            // committed in between. The whole log is kept meanwhile
            // (`log_retained_from`).
            return None;
        }
        if let Some((_, since_ms)) = entry.in_flight {
            if now_ms.saturating_sub(since_ms) < timeout_ms {
                return None;
            }
            entry.in_flight = None;
            entry.errors += 1;
            entry.message = format!(
                "shipping to the remote cluster: no answer within {} ms",
                timeout_ms
            );
        }
        if entry.failed || order.status != DupStatus::Running || entry.confirmed >= committed {
            return None;
        }
        let seq = entry.next_seq;
        entry.next_seq += 1;
        entry.in_flight = Some((seq, now_ms));
        Some(ShipPlan {
            order: order.clone(),
            from: entry.confirmed as Decree,
            committed: committed as Decree,
            seq,
        })
    }

    /// The batch of `plan` from what the log read gave (`Ok(None)`: the
    /// log no longer holds the next decree to ship; `Err`: the read
    /// failed): `None` when there is nothing to send — the outcome is
    /// then recorded here (failed, an error, or the mutations read all
    /// filtered out and confirmed at once) and the partition is no longer
    /// in flight.
    pub fn batch(
        &mut self,
        plan: &ShipPlan,
        read: Result<Option<Vec<Mutation>>, String>,
        cluster_id: u8,
        now_ms: u64,
    ) -> Option<ShipBatch> {
        let key = plan.key();
        let entry = self.progress.get_mut(&key)?;
        let gpid = plan.order.gpid;
        let mut mutations = match read {
            Ok(Some(mutations)) if !mutations.is_empty() => mutations,
            Ok(_) => {
                entry.failed = true;
                entry.message = format!(
                    "the log of partition {}.{} no longer holds decree {}, the next to ship: remove the duplication, restore the remote table from a backup of this one, and add it again",
                    gpid.app_id,
                    gpid.partition_index,
                    plan.from + 1
                );
                entry.clear_flight(plan.seq);
                return None;
            }
            Err(error) => {
                entry.errors += 1;
                entry.message = format!("reading the log: {error}");
                entry.clear_flight(plan.seq);
                return None;
            }
        };
        mutations.truncate(SHIP_BATCH_MUTATIONS_MAX);
        let last = mutations.last().map_or(plan.from, |m| m.decree);
        let shipped: Vec<DupMutation> = mutations
            .into_iter()
            .filter(|mutation| should_ship(&mutation.payload).unwrap_or(false))
            .map(|mutation| DupMutation {
                decree: mutation.decree as i64,
                payload: mutation.payload,
            })
            .collect();
        let records = shipped.len() as u64;
        let bytes = shipped.iter().map(|m| m.payload.len() as u64).sum::<u64>();
        let batch = ShipBatch {
            key,
            seq: plan.seq,
            from: plan.from,
            last,
            request: DuplicateRequest {
                source_cluster_id: cluster_id,
                dup_id: plan.order.dup_id,
                mutations: shipped,
            },
            records,
            bytes,
        };
        if batch.request.mutations.is_empty() {
            // Nothing of it is shipped: confirmed at once.
            self.acked(&batch, now_ms);
            return None;
        }
        Some(batch)
    }

    /// The remote cluster applied `batch`: its last decree is confirmed.
    /// (A late answer to a batch that timed out confirms too: the remote
    /// holds it, and every decree up to its start was confirmed before.)
    pub fn acked(&mut self, batch: &ShipBatch, now_ms: u64) {
        let Some(entry) = self.progress.get_mut(&batch.key) else {
            return;
        };
        if batch.from as i64 > entry.confirmed {
            // Not contiguous with what this node knows to be confirmed
            // (cannot happen: a batch starts at a confirmed decree).
            entry.clear_flight(batch.seq);
            return;
        }
        entry.confirmed = entry.confirmed.max(batch.last as i64);
        entry.shipped_records += batch.records;
        entry.shipped_bytes += batch.bytes;
        entry.message.clear();
        entry.seen_ms = now_ms;
        entry.note_behind(now_ms);
        entry.clear_flight(batch.seq);
    }

    /// The remote cluster refused `batch` or could not be reached: counted,
    /// and shipped again.
    pub fn refused(&mut self, batch: &ShipBatch, error: String, now_ms: u64) {
        let Some(entry) = self.progress.get_mut(&batch.key) else {
            return;
        };
        entry.errors += 1;
        entry.message = format!("shipping to the remote cluster: {error}");
        entry.seen_ms = now_ms;
        entry.clear_flight(batch.seq);
    }

    /// Marks a duplication of `gpid` failed with `message` (its log
    /// outgrew the retention bound); the next beacon tells meta.
    pub fn fail(&mut self, dup_id: u64, gpid: Gpid, message: String, now_ms: u64) {
        let entry = self
            .progress
            .entry((dup_id, gpid))
            .or_insert_with(Progress::fresh);
        entry.seen_ms = now_ms;
        entry.failed = true;
        entry.message = message;
    }

    /// The decree every member's log keeps records above for `order`
    /// (**dup-log-retained**): the confirmed decree meta persisted (the
    /// order's), never this node's own — that one is lost when the node
    /// restarts, and the node then resumes from meta's; `None` once the
    /// duplication failed here (it pins nothing more). A new duplication
    /// (-1) keeps the whole log: its primary starts at a committed decree
    /// meta has not persisted yet, and a member that truncated above it
    /// would lack what it must ship should it become primary.
    pub fn log_retained_from(&self, order: &DupOrder) -> Option<Decree> {
        if self.is_failed(order.dup_id, order.gpid) {
            return None;
        }
        Some(order.confirmed_decree.max(0) as Decree)
    }

    /// Whether the duplication of `gpid` failed here.
    pub fn is_failed(&self, dup_id: u64, gpid: Gpid) -> bool {
        self.progress
            .get(&(dup_id, gpid))
            .is_some_and(|progress| progress.failed)
    }

    /// The confirmed decree this node's shipping reached for `dup_id` and
    /// `gpid` (-1: none).
    pub fn confirmed(&self, dup_id: u64, gpid: Gpid) -> i64 {
        self.progress
            .get(&(dup_id, gpid))
            .map_or(-1, |progress| progress.confirmed)
    }

    /// The reports of the partitions this node shipped for lately, for
    /// the next beacon.
    pub fn reports(&self, now_ms: u64) -> Vec<DupReport> {
        self.progress
            .iter()
            .filter(|(_, progress)| now_ms.saturating_sub(progress.seen_ms) <= REPORT_FRESH_MS)
            .map(|((dup_id, gpid), progress)| DupReport {
                dup_id: *dup_id,
                gpid: *gpid,
                confirmed_decree: progress.confirmed,
                committed_decree: progress.committed,
                lag_ms: progress
                    .behind_since_ms
                    .map_or(0, |since| now_ms.saturating_sub(since)),
                shipped_records: progress.shipped_records,
                shipped_bytes: progress.shipped_bytes,
                errors: progress.errors,
                failed: progress.failed,
                message: progress.message.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::WriteBatch;

    fn gpid() -> Gpid {
        Gpid {
            app_id: 2,
            partition_index: 1,
        }
    }

    fn order(confirmed: i64) -> DupOrder {
        DupOrder {
            dup_id: 7,
            gpid: gpid(),
            remote_metas: vec!["remote:1".into()],
            remote_table: "t".into(),
            remote_cluster_id: 2,
            status: DupStatus::Running,
            confirmed_decree: confirmed,
        }
    }

    /// A local write (shipped) or, with `from_dup`, one received by
    /// duplication (never shipped again).
    fn mutation(decree: Decree, from_dup: bool) -> Mutation {
        let mut batch = WriteBatch::new();
        batch.put(format!("k{decree}").into_bytes(), b"v".to_vec());
        if from_dup {
            batch.set_dup_source(3);
        }
        Mutation {
            ballot: 1,
            decree,
            committed_decree: decree - 1,
            payload: batch.encode(),
        }
    }

    fn local(range: std::ops::RangeInclusive<Decree>) -> Vec<Mutation> {
        range.map(|decree| mutation(decree, false)).collect()
    }

    // A new duplication (meta's order says -1) ships nothing: the
    // primary proposes its committed decree (reported with confirmed -1)
    // and waits for meta to persist a start. When the start meta pinned is
    // below its own committed decree (another primary proposed first), it
    // ships from the pinned start, so nothing between is skipped
    // (**dup-start-pinned**).
    #[test]
    fn a_new_duplication_ships_from_the_start_meta_pinned() {
        let mut shipping = DupShipping::default();
        assert_eq!(shipping.plan(&order(-1), 10, 0), None);
        assert_eq!(shipping.plan(&order(-1), 12, 5), None, "not pinned yet");
        assert_eq!(shipping.confirmed(7, gpid()), -1);
        let report = &shipping.reports(5)[0];
        assert_eq!((report.confirmed_decree, report.committed_decree), (-1, 12));
        let plan = shipping.plan(&order(8), 12, 6).expect("pinned and behind");
        assert_eq!((plan.from, plan.committed), (8, 12));
    }

    #[test]
    fn it_resumes_from_the_higher_of_meta_and_its_own() {
        let mut shipping = DupShipping::default();
        let plan = shipping.plan(&order(4), 9, 0).expect("behind");
        assert_eq!(plan.from, 4);
        let batch = shipping
            .batch(&plan, Ok(Some(local(5..=9))), 1, 1)
            .expect("to send");
        shipping.acked(&batch, 2);
        assert_eq!(shipping.confirmed(7, gpid()), 9);
        // Meta lags behind: its older decree changes nothing.
        assert_eq!(shipping.plan(&order(4), 9, 3), None);
        assert_eq!(shipping.confirmed(7, gpid()), 9);
        // Meta heard more (another primary shipped): resumed from there.
        let plan = shipping.plan(&order(12), 14, 4).expect("behind");
        assert_eq!(plan.from, 12);
    }

    #[test]
    fn one_batch_in_flight_until_acked_and_the_ack_confirms_its_last() {
        let mut shipping = DupShipping::default();
        let plan = shipping.plan(&order(0), 3, 0).expect("behind");
        assert_eq!(shipping.plan(&order(0), 3, 1), None, "in flight");
        let batch = shipping
            .batch(&plan, Ok(Some(local(1..=3))), 1, 1)
            .expect("to send");
        assert_eq!((batch.from, batch.last, batch.records), (0, 3, 3));
        assert_eq!(batch.request.source_cluster_id, 1);
        assert_eq!(batch.request.dup_id, 7);
        assert_eq!(shipping.plan(&order(0), 3, 2), None, "still in flight");
        shipping.acked(&batch, 3);
        let report = &shipping.reports(3)[0];
        assert_eq!(report.confirmed_decree, 3);
        assert_eq!(report.shipped_records, 3);
        assert_eq!(report.lag_ms, 0);
        assert_eq!(shipping.plan(&order(0), 3, 4), None, "caught up");
        assert!(shipping.plan(&order(0), 4, 5).is_some());
    }

    #[test]
    fn a_refused_batch_is_counted_and_shipped_again() {
        let mut shipping = DupShipping::default();
        let plan = shipping.plan(&order(0), 2, 0).expect("behind");
        let batch = shipping
            .batch(&plan, Ok(Some(local(1..=2))), 1, 0)
            .expect("to send");
        shipping.refused(&batch, "busy".into(), 1);
        let report = &shipping.reports(1)[0];
        assert_eq!((report.errors, report.confirmed_decree), (1, 0));
        assert!(report.message.contains("busy"));
        assert!(!report.failed);
        let again = shipping.plan(&order(0), 2, 2).expect("again");
        assert_eq!(again.from, 0);
    }

    #[test]
    fn an_unanswered_batch_times_out_and_a_late_ack_still_confirms() {
        let mut shipping = DupShipping::new(100);
        let plan = shipping.plan(&order(0), 2, 0).expect("behind");
        let batch = shipping
            .batch(&plan, Ok(Some(local(1..=2))), 1, 0)
            .expect("to send");
        assert_eq!(shipping.plan(&order(0), 2, 99), None);
        let again = shipping.plan(&order(0), 2, 100).expect("timed out");
        assert_eq!(shipping.reports(100)[0].errors, 1);
        // The first batch's answer comes late: confirmed, and the second
        // plan stays in flight.
        shipping.acked(&batch, 101);
        assert_eq!(shipping.confirmed(7, gpid()), 2);
        assert_eq!(shipping.plan(&order(0), 3, 102), None, "second in flight");
        let second = shipping
            .batch(&again, Ok(Some(local(1..=2))), 1, 103)
            .expect("to send");
        shipping.acked(&second, 104);
        assert!(shipping.plan(&order(0), 3, 105).is_some());
    }

    #[test]
    fn a_filtered_only_batch_confirms_at_once() {
        let mut shipping = DupShipping::default();
        let plan = shipping.plan(&order(0), 3, 0).expect("behind");
        let mut empty = mutation(2, false);
        empty.payload.clear();
        let read = vec![mutation(1, true), empty, mutation(3, true)];
        assert_eq!(shipping.batch(&plan, Ok(Some(read)), 1, 1), None);
        assert_eq!(shipping.confirmed(7, gpid()), 3);
        assert_eq!(shipping.reports(1)[0].shipped_records, 0);
        assert!(shipping.plan(&order(0), 4, 2).is_some(), "not in flight");
    }

    #[test]
    fn only_what_should_ship_is_sent_and_the_batch_is_bounded() {
        let mut shipping = DupShipping::default();
        let plan = shipping.plan(&order(0), 2_000, 0).expect("behind");
        let mut read = local(1..=2_000);
        read[0] = mutation(1, true);
        let batch = shipping.batch(&plan, Ok(Some(read)), 1, 0).expect("send");
        assert_eq!(batch.last, SHIP_BATCH_MUTATIONS_MAX as Decree);
        assert_eq!(batch.records, SHIP_BATCH_MUTATIONS_MAX as u64 - 1);
        assert_eq!(batch.request.mutations[0].decree, 2);
    }

    #[test]
    fn a_gap_in_the_log_fails_the_duplication() {
        let mut shipping = DupShipping::default();
        let plan = shipping.plan(&order(5), 9, 0).expect("behind");
        assert_eq!(shipping.batch(&plan, Ok(None), 1, 1), None);
        let report = &shipping.reports(1)[0];
        assert!(report.failed);
        assert!(report.message.contains("no longer holds decree 6"));
        assert_eq!(shipping.plan(&order(5), 9, 2), None, "failed");
    }

    #[test]
    fn the_log_is_kept_from_metas_confirmed_decree_and_wholly_before_one() {
        let mut shipping = DupShipping::default();
        // A member that heard of no confirmed decree yet keeps everything.
        assert_eq!(shipping.log_retained_from(&order(-1)), Some(0));
        assert_eq!(shipping.log_retained_from(&order(6)), Some(6));
        let plan = shipping.plan(&order(6), 9, 0).expect("behind");
        let batch = shipping
            .batch(&plan, Ok(Some(local(7..=9))), 1, 0)
            .expect("to send");
        shipping.acked(&batch, 1);
        // Its own confirmed decree is lost in a restart: meta's rules.
        assert_eq!(shipping.confirmed(7, gpid()), 9);
        assert_eq!(shipping.log_retained_from(&order(6)), Some(6));
        shipping.fail(7, gpid(), "retention".into(), 2);
        assert_eq!(shipping.log_retained_from(&order(6)), None);
    }

    #[test]
    fn a_failed_read_is_an_error_and_is_read_again() {
        let mut shipping = DupShipping::default();
        let plan = shipping.plan(&order(0), 1, 0).expect("behind");
        assert_eq!(shipping.batch(&plan, Err("io".into()), 1, 0), None);
        let report = &shipping.reports(0)[0];
        assert_eq!((report.errors, report.failed), (1, false));
        assert!(shipping.plan(&order(0), 1, 1).is_some());
    }

    #[test]
    fn fail_and_pause_stop_shipping_and_reports_go_stale() {
        let mut shipping = DupShipping::default();
        let mut paused = order(0);
        paused.status = DupStatus::Paused;
        assert_eq!(shipping.plan(&paused, 5, 0), None);
        assert_eq!(shipping.reports(0)[0].lag_ms, 0);
        assert_eq!(shipping.reports(30)[0].lag_ms, 30, "behind since 0");
        shipping.fail(7, gpid(), "retention".into(), 40);
        assert!(shipping.is_failed(7, gpid()));
        assert_eq!(shipping.plan(&order(0), 5, 41), None);
        let report = &shipping.reports(41)[0];
        assert!(report.failed && report.message == "retention");
        assert!(shipping.reports(41 + REPORT_FRESH_MS + 1).is_empty());
    }
}
