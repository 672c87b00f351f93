//! The operator's splits of the table (docs/split.md): requests to meta
//! through its production request path, retried while meta is down or
//! refuses; the split invariants checked after every event; and the end
//! of a seed, by which every split committed or was cancelled.

use markab_core::replication::messages::{Decree, NodeId};
use markab_core::wire::message::{ErrorCode, Gpid, Request, ResponseBody, SplitRequest};
use rand::Rng;

use super::super::model::{Event, PartitionId, SplitPlan, SplitStep};
use super::{partition_of, World};

/// The operator asks again this long after meta was down or refused.
const RETRY_MS: u64 = 200;

impl World {
    /// The operator's split request `step`; its follow-ups by the seed's
    /// plan.
    pub(super) fn operator_split(&mut self, step: SplitStep) -> Result<(), String> {
        let Some((_, plan)) = self.settings.split else {
            return Ok(());
        };
        // Starting is given up once the faults are long over (a table that
        // never was whole); pausing or cancelling once they are over; a
        // paused split is always restarted.
        let give_up_ms = match step {
            SplitStep::Start => self.settings.faults_until_ms + 2_000,
            SplitStep::Pause | SplitStep::Cancel => self.settings.faults_until_ms,
            SplitStep::Restart => u64::MAX,
        };
        if !self.meta.is_up(self.now_ms) {
            if self.now_ms < give_up_ms {
                self.schedule(self.now_ms + RETRY_MS, Event::Split(step));
            }
            return Ok(());
        }
        let table = "sim".to_owned();
        let count = self.meta.partition_count();
        let request = match step {
            SplitStep::Start => SplitRequest::Start {
                table,
                new_count: 2 * count as i32,
            },
            SplitStep::Pause => SplitRequest::Pause { table },
            SplitStep::Restart => SplitRequest::Restart { table },
            SplitStep::Cancel => SplitRequest::Cancel { table },
        };
        let answer = self.meta.split(request, self.now_ms);
        self.announce();
        match answer {
            Ok(_) => {
                self.note(format!("operator: split {step:?} of {count} partitions done"));
                match step {
                    SplitStep::Start => {
                        self.counters.splits_started += 1;
                        let first = self.counters.splits_started == 1;
                        if first && plan == SplitPlan::PauseRestart {
                            let at_ms = self.now_ms + self.rng.random_range(0..=300);
                            self.schedule(at_ms, Event::Split(SplitStep::Pause));
                        }
                        if first && plan == SplitPlan::Cancel {
                            let at_ms = self.now_ms + self.rng.random_range(0..=300);
                            self.schedule(at_ms, Event::Split(SplitStep::Cancel));
                        }
                    }
                    SplitStep::Pause => {
                        self.counters.split_pauses += 1;
                        let at_ms = self.now_ms + self.rng.random_range(50..=1_000);
                        self.schedule(at_ms, Event::Split(SplitStep::Restart));
                    }
                    SplitStep::Restart => {}
                    SplitStep::Cancel => self.counters.splits_cancelled += 1,
                }
            }
            // Out of turn: the split committed before the pause or cancel.
            Err(error)
                if error.code == ErrorCode::InvalidArgument
                    && matches!(step, SplitStep::Pause | SplitStep::Cancel)
                    && self.meta.split_record().is_none() =>
            {
                self.note(format!("operator: split {step:?} refused: {error}"));
            }
            Err(error)
                if matches!(
                    error.code,
                    ErrorCode::Busy
                        | ErrorCode::NotEnoughReplicas
                        | ErrorCode::StorageError
                        | ErrorCode::NotLeader
                ) =>
            {
                self.note(format!("operator: split {step:?} refused: {error}"));
                if self.now_ms < give_up_ms {
                    self.schedule(self.now_ms + RETRY_MS, Event::Split(step));
                }
            }
            Err(error) => {
                return Err(format!(
                    "split-request: meta refused the operator's split {step:?} of {count} partitions: {error}"
                ))
            }
        }
        Ok(())
    }

    /// The split invariants after every event (docs/split.md):
    /// **split-commits-whole** — meta's persisted table has a
    /// configuration for each of its counted partitions, no more, and its
    /// count is the last one or twice it; **count-only-grows** — neither
    /// that count nor any replica's ever decreases. A count that doubled
    /// is a committed split.
    pub(super) fn check_splits(&mut self) -> Result<(), String> {
        if self.settings.split.is_none() {
            return Ok(());
        }
        let last = *self.counts.last().expect("the first count");
        if let Some((count, partitions, splitting)) = self.meta.persisted_table() {
            if count as usize != partitions {
                return Err(format!(
                    "split-commits-whole: meta's store counts {count} partitions of the table but holds {partitions} configurations (splitting: {splitting})"
                ));
            }
            let count = count as u32;
            if count < last {
                return Err(format!(
                    "count-only-grows: meta's store counts {count} partitions after {last}"
                ));
            }
            if count > last {
                if count != 2 * last || splitting {
                    return Err(format!(
                        "split-commits-whole: meta's store went from {last} to {count} partitions (splitting: {splitting})"
                    ));
                }
                self.counts.push(count);
                self.counters.splits_committed += 1;
                self.note(format!("split committed: {last} -> {count} partitions"));
                if self
                    .settings
                    .split
                    .is_some_and(|(_, plan)| plan == SplitPlan::Twice)
                    && !self.second_split
                    && self.now_ms < self.settings.faults_until_ms
                {
                    self.second_split = true;
                    let at_ms = self.now_ms + self.rng.random_range(100..=1_500);
                    self.schedule(at_ms, Event::Split(SplitStep::Start));
                }
            }
        }
        for node in self.nodes.values().filter(|node| node.alive) {
            for host in &node.hosts {
                for (gpid, replica) in host.replicas() {
                    let pid = gpid.partition_index as PartitionId;
                    let count = replica.meta.partition_count;
                    if count == 0 {
                        continue; // not yet told
                    }
                    let held = self.replica_counts.entry((node.id, pid)).or_insert(count);
                    if count < *held {
                        return Err(format!(
                            "count-only-grows: {} p{pid} holds {count} partitions after {held}",
                            node.id
                        ));
                    }
                    *held = count;
                }
            }
        }
        Ok(())
    }

    /// A split child's staged copy of its parent was installed on `node`
    /// at the parent's fence decree: its committed prefix is its parent's
    /// up to there, and it holds every write of its keys the parent
    /// acknowledged (**copy-covers-fence**).
    pub(super) fn on_split_installed(
        &mut self,
        node: NodeId,
        child: Gpid,
        decree: Decree,
    ) -> Result<(), String> {
        let pid = child.partition_index as PartitionId;
        // The split that made it: the first count above its index.
        let Some(count) = self.counts.iter().copied().find(|count| pid < *count) else {
            return Err(format!(
                "split-commits-whole: {node} installs p{pid}, beyond the table's counts {:?}",
                self.counts
            ));
        };
        let parent = pid - count / 2;
        let moved: Vec<usize> = (0..self.settings.keys)
            .filter(|key_index| partition_of(*key_index, count) == pid)
            .collect();
        self.counters.split_copies_installed += 1;
        self.note(format!(
            "{node} installs split child p{pid} of p{parent} from its copy at decree {decree}"
        ));
        self.invariants
            .on_split_child(pid, parent, node, decree, moved)
    }

    /// **split-completes**: every split the operator started committed or
    /// was cancelled by the end (the world ran on past its end while one
    /// was running).
    pub(super) fn check_split_completed(&mut self) -> Result<(), String> {
        let Some(split) = self.meta.split_record().cloned() else {
            return Ok(());
        };
        let query = self.meta.query(
            Request::PartitionSplit(SplitRequest::Query {
                table: "sim".into(),
            }),
            self.now_ms,
        );
        let progress = match query {
            Ok(ResponseBody::Pairs(pairs)) => pairs
                .iter()
                .map(|(key, value)| format!("{key}: {value}"))
                .collect::<Vec<_>>()
                .join("; "),
            other => format!("{other:?}"),
        };
        Err(format!(
            "split-completes: the split to {} partitions (epoch {}) is still {} at {} ms: {progress}",
            split.new_count,
            split.epoch,
            if split.paused { "paused" } else { "running" },
            self.now_ms
        ))
    }
}
