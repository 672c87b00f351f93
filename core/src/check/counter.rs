//! A counter checker: a key that clients only increment (Pegasus `incr`
//! with positive deltas), starting absent (= 0), read once at the end after
//! every fault has healed.
//!
//! It checks what a counter must satisfy whatever the interleaving, in time
//! linear in the history (after sorting), so it stays cheap on histories far
//! too concurrent for the linearizability search:
//!
//! - the final value lies between the sum of the acknowledged deltas and the
//!   sum of the acknowledged and unknown ones (failed increments are definite
//!   non-effects), and is at least every value an increment returned;
//! - no two acknowledged increments returned the same value;
//! - each returned value lies in `[its own delta, acknowledged + unknown sum]`;
//! - real time: if acknowledged `a` completed strictly before acknowledged
//!   `b` was invoked, `b` returned at least `a`'s value plus `b`'s delta.
//!
//! See docs/linearizability.md, "Counter, set and shrinking".

use std::fmt;

/// How an operation ended as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome<T> {
    /// The operation succeeded and answered this.
    Ok(T),
    /// The operation failed with an error that guarantees it took no effect
    /// (rejected before it was logged).
    Failed,
    /// The client does not know (timeout, crash, an error that does not
    /// rule out an effect): it may or may not have taken effect.
    Unknown,
}

/// One increment of the counter key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterIncr {
    /// The client (process) that issued it; used only in reports.
    pub client: u64,
    /// When the client sent it (ns, the harness's single clock).
    pub invoke_ns: u64,
    /// When the client saw it end; `None` when it never did. Acknowledged
    /// increments must have one (the real-time check needs it).
    pub complete_ns: Option<u64>,
    /// The amount added; must be positive.
    pub delta: i64,
    /// `Ok(value)`: the new value the increment returned.
    pub outcome: Outcome<i64>,
}

/// Names one increment of a history in a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpRef {
    /// The index of the increment in the checked slice.
    pub index: usize,
    /// Its client.
    pub client: u64,
    /// When it was invoked.
    pub invoke_ns: u64,
    /// When it completed, if it did.
    pub complete_ns: Option<u64>,
}

impl OpRef {
    fn of(index: usize, op: &CounterIncr) -> Self {
        OpRef {
            index,
            client: op.client,
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns,
        }
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.complete_ns {
            Some(complete_ns) => write!(
                f,
                "#{} client {} [{}..{} ns]",
                self.index, self.client, self.invoke_ns, complete_ns
            ),
            None => write!(
                f,
                "#{} client {} [{}.. ns]",
                self.index, self.client, self.invoke_ns
            ),
        }
    }
}

/// One way a counter history is inconsistent with a correct counter, or
/// (see [`CounterViolation::is_harness_error`]) one way the history itself
/// is malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterViolation {
    /// The final value is below the sum of acknowledged deltas: an
    /// acknowledged increment was lost.
    FinalBelowAcknowledged {
        final_value: i64,
        acknowledged_sum: i64,
    },
    /// The final value is above the sum of acknowledged and unknown deltas:
    /// an increment took effect twice, or a failed one took effect.
    FinalAboveAttempted {
        final_value: i64,
        attempted_sum: i64,
        /// The sum of the failed increments' deltas, for the explanation.
        failed_sum: i64,
    },
    /// The final value is below a value an acknowledged increment returned:
    /// the counter went backwards (an acknowledged state was lost). Only the
    /// largest such returned value is reported.
    FinalBelowReturned {
        final_value: i64,
        op: OpRef,
        value: i64,
    },
    /// Several acknowledged increments returned the same value; with
    /// positive deltas each must see a different state.
    DuplicateReturn { value: i64, ops: Vec<OpRef> },
    /// An acknowledged increment returned a value below its own delta (the
    /// counter starts at 0 and only grows) or above the sum of acknowledged
    /// and unknown deltas.
    ReturnOutOfRange {
        op: OpRef,
        delta: i64,
        value: i64,
        attempted_sum: i64,
    },
    /// `earlier` completed strictly before `later` was invoked, so `later`
    /// took effect on a state of at least `earlier_value`, yet it returned
    /// less than `earlier_value + later_delta`. Reported once per `later`,
    /// against the preceding increment with the largest value.
    RealTimeOrder {
        earlier: OpRef,
        earlier_value: i64,
        later: OpRef,
        later_delta: i64,
        later_value: i64,
    },
    /// Harness error: a delta that is not positive. The increment is
    /// otherwise ignored (not counted, not summed).
    InvalidDelta { op: OpRef, delta: i64 },
    /// Harness error: an increment completes before its invocation. It is
    /// left out of the real-time check.
    CompletesBeforeInvoke { op: OpRef },
    /// Harness error: an acknowledged increment without a completion time.
    /// It is left out of the real-time check.
    AcknowledgedWithoutCompletion { op: OpRef },
}

impl CounterViolation {
    /// Whether this reports a malformed history (a bug in the harness)
    /// rather than a misbehaving store.
    pub fn is_harness_error(&self) -> bool {
        matches!(
            self,
            CounterViolation::InvalidDelta { .. }
                | CounterViolation::CompletesBeforeInvoke { .. }
                | CounterViolation::AcknowledgedWithoutCompletion { .. }
        )
    }
}

impl fmt::Display for CounterViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CounterViolation::FinalBelowAcknowledged {
                final_value,
                acknowledged_sum,
            } => write!(
                f,
                "final value {final_value} is below {acknowledged_sum}, the sum of acknowledged \
                 increments: an acknowledged increment was lost"
            ),
            CounterViolation::FinalAboveAttempted {
                final_value,
                attempted_sum,
                failed_sum,
            } => write!(
                f,
                "final value {final_value} is above {attempted_sum}, the sum of acknowledged and \
                 unknown increments: an increment took effect twice or a failed one (failed \
                 deltas sum to {failed_sum}) took effect"
            ),
            CounterViolation::FinalBelowReturned {
                final_value,
                op,
                value,
            } => write!(
                f,
                "final value {final_value} is below {value}, returned by acknowledged increment \
                 {op}: the counter went backwards"
            ),
            CounterViolation::DuplicateReturn { value, ops } => {
                write!(
                    f,
                    "{} acknowledged increments returned the same value {value}:",
                    ops.len()
                )?;
                for (position, op) in ops.iter().enumerate() {
                    let separator = if position == 0 { " " } else { ", " };
                    write!(f, "{separator}{op}")?;
                }
                Ok(())
            }
            CounterViolation::ReturnOutOfRange {
                op,
                delta,
                value,
                attempted_sum,
            } => write!(
                f,
                "increment {op} by {delta} returned {value}, outside [{delta}, {attempted_sum}] \
                 (its own delta up to the sum of acknowledged and unknown increments)"
            ),
            CounterViolation::RealTimeOrder {
                earlier,
                earlier_value,
                later,
                later_delta,
                later_value,
            } => write!(
                f,
                "increment {earlier} returned {earlier_value} and completed before increment \
                 {later} by {later_delta} was invoked, which returned {later_value} (at least {} \
                 expected)",
                i128::from(*earlier_value) + i128::from(*later_delta)
            ),
            CounterViolation::InvalidDelta { op, delta } => write!(
                f,
                "harness error: increment {op} has delta {delta}, not positive; ignored"
            ),
            CounterViolation::CompletesBeforeInvoke { op } => write!(
                f,
                "harness error: increment {op} completes before its invocation"
            ),
            CounterViolation::AcknowledgedWithoutCompletion { op } => write!(
                f,
                "harness error: increment {op} is acknowledged but has no completion time"
            ),
        }
    }
}

/// What [`check_counter`] found. Counts and sums leave out increments with
/// an invalid (non-positive) delta; sums saturate at the i64 bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterReport {
    /// Increments that answered `Ok`.
    pub acknowledged: u64,
    /// Increments that failed without effect.
    pub failed: u64,
    /// Increments whose outcome is unknown.
    pub unknown: u64,
    /// Sum of the acknowledged deltas: the least the final value may be.
    pub acknowledged_sum: i64,
    /// Sum of the acknowledged and unknown deltas: the most the final value
    /// may be.
    pub attempted_sum: i64,
    /// The final value checked.
    pub final_value: i64,
    /// Everything wrong, harness errors first; empty when the history is
    /// consistent with a correct counter.
    pub violations: Vec<CounterViolation>,
}

impl CounterReport {
    /// Whether no violation was found.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

fn saturate(sum: i128) -> i64 {
    i64::try_from(sum).unwrap_or(if sum < 0 { i64::MIN } else { i64::MAX })
}

/// Checks a history of increments of one counter key against the final
/// value read after every fault healed (an absent key reads as 0).
///
/// ```
/// use markab_core::check::{check_counter, CounterIncr, Outcome};
/// let ops = [
///     CounterIncr { client: 1, invoke_ns: 0, complete_ns: Some(10), delta: 1, outcome: Outcome::Ok(1) },
///     CounterIncr { client: 2, invoke_ns: 20, complete_ns: None, delta: 1, outcome: Outcome::Unknown },
/// ];
/// assert!(check_counter(&ops, 1).is_ok());
/// assert!(check_counter(&ops, 2).is_ok());
/// assert!(!check_counter(&ops, 0).is_ok());
/// ```
pub fn check_counter(ops: &[CounterIncr], final_value: i64) -> CounterReport {
    let mut harness_errors = Vec::new();
    let (mut acknowledged, mut failed, mut unknown) = (0u64, 0u64, 0u64);
    let (mut acknowledged_sum, mut attempted_sum, mut failed_sum) = (0i128, 0i128, 0i128);
    // Acknowledged increments with a valid delta: (index, returned value).
    let mut returned: Vec<(usize, i64)> = Vec::new();
    // Those of them with a usable interval, for the real-time check.
    let mut timed: Vec<usize> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        if op.delta <= 0 {
            harness_errors.push(CounterViolation::InvalidDelta {
                op: OpRef::of(index, op),
                delta: op.delta,
            });
            continue;
        }
        let ordered = match op.complete_ns {
            Some(complete_ns) if complete_ns < op.invoke_ns => {
                harness_errors.push(CounterViolation::CompletesBeforeInvoke {
                    op: OpRef::of(index, op),
                });
                false
            }
            Some(_) => true,
            None => false,
        };
        let delta = i128::from(op.delta);
        match op.outcome {
            Outcome::Ok(value) => {
                acknowledged += 1;
                acknowledged_sum += delta;
                attempted_sum += delta;
                returned.push((index, value));
                if op.complete_ns.is_none() {
                    harness_errors.push(CounterViolation::AcknowledgedWithoutCompletion {
                        op: OpRef::of(index, op),
                    });
                } else if ordered {
                    timed.push(index);
                }
            }
            Outcome::Failed => {
                failed += 1;
                failed_sum += delta;
            }
            Outcome::Unknown => {
                unknown += 1;
                attempted_sum += delta;
            }
        }
    }

    let mut violations = harness_errors;
    let final_wide = i128::from(final_value);
    if final_wide < acknowledged_sum {
        violations.push(CounterViolation::FinalBelowAcknowledged {
            final_value,
            acknowledged_sum: saturate(acknowledged_sum),
        });
    }
    if final_wide > attempted_sum {
        violations.push(CounterViolation::FinalAboveAttempted {
            final_value,
            attempted_sum: saturate(attempted_sum),
            failed_sum: saturate(failed_sum),
        });
    }
    // The largest returned value (the first such increment on ties).
    let largest = returned
        .iter()
        .copied()
        .reduce(|best, next| if next.1 > best.1 { next } else { best });
    if let Some((index, value)) = largest {
        if value > final_value {
            violations.push(CounterViolation::FinalBelowReturned {
                final_value,
                op: OpRef::of(index, &ops[index]),
                value,
            });
        }
    }

    let mut by_value = returned.clone();
    by_value.sort_unstable_by_key(|&(index, value)| (value, index));
    for group in by_value.chunk_by(|a, b| a.1 == b.1) {
        if group.len() > 1 {
            violations.push(CounterViolation::DuplicateReturn {
                value: group[0].1,
                ops: group
                    .iter()
                    .map(|&(index, _)| OpRef::of(index, &ops[index]))
                    .collect(),
            });
        }
    }

    for &(index, value) in &returned {
        let op = &ops[index];
        if value < op.delta || i128::from(value) > attempted_sum {
            violations.push(CounterViolation::ReturnOutOfRange {
                op: OpRef::of(index, op),
                delta: op.delta,
                value,
                attempted_sum: saturate(attempted_sum),
            });
        }
    }

    violations.extend(real_time_violations(ops, &timed));

    CounterReport {
        acknowledged,
        failed,
        unknown,
        acknowledged_sum: saturate(acknowledged_sum),
        attempted_sum: saturate(attempted_sum),
        final_value,
        violations,
    }
}

/// The real-time check over acknowledged increments `timed` (indices into
/// `ops`, each with a completion no earlier than its invocation): a sweep in
/// invocation order keeping the largest value returned by the increments
/// completed strictly before the current invocation. O(n log n).
fn real_time_violations(ops: &[CounterIncr], timed: &[usize]) -> Vec<CounterViolation> {
    let value_of = |index: usize| match ops[index].outcome {
        Outcome::Ok(value) => value,
        // `timed` holds acknowledged increments only.
        Outcome::Failed | Outcome::Unknown => i64::MIN,
    };
    let complete_of = |index: usize| ops[index].complete_ns.unwrap_or(u64::MAX);
    let mut by_invoke = timed.to_vec();
    by_invoke.sort_unstable_by_key(|&index| (ops[index].invoke_ns, index));
    let mut by_complete = timed.to_vec();
    by_complete.sort_unstable_by_key(|&index| (complete_of(index), index));

    let mut violations = Vec::new();
    let mut completed = by_complete.iter().copied().peekable();
    // The completed increment with the largest value so far.
    let mut best: Option<usize> = None;
    for &later in &by_invoke {
        let invoke_ns = ops[later].invoke_ns;
        while let Some(earlier) = completed.next_if(|&index| complete_of(index) < invoke_ns) {
            if best.is_none_or(|best| value_of(earlier) > value_of(best)) {
                best = Some(earlier);
            }
        }
        let Some(earlier) = best else { continue };
        let later_value = value_of(later);
        let floor = i128::from(value_of(earlier)) + i128::from(ops[later].delta);
        if i128::from(later_value) < floor {
            violations.push(CounterViolation::RealTimeOrder {
                earlier: OpRef::of(earlier, &ops[earlier]),
                earlier_value: value_of(earlier),
                later: OpRef::of(later, &ops[later]),
                later_delta: ops[later].delta,
                later_value,
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(client: u64, invoke_ns: u64, complete_ns: u64, value: i64) -> CounterIncr {
        CounterIncr {
            client,
            invoke_ns,
            complete_ns: Some(complete_ns),
            delta: 1,
            outcome: Outcome::Ok(value),
        }
    }

    fn unknown(client: u64, invoke_ns: u64, delta: i64) -> CounterIncr {
        CounterIncr {
            client,
            invoke_ns,
            complete_ns: None,
            delta,
            outcome: Outcome::Unknown,
        }
    }

    fn failed(client: u64, invoke_ns: u64, complete_ns: u64, delta: i64) -> CounterIncr {
        CounterIncr {
            client,
            invoke_ns,
            complete_ns: Some(complete_ns),
            delta,
            outcome: Outcome::Failed,
        }
    }

    /// Concurrent increments by 1 from three clients, answered 1..=6 in an
    /// order consistent with real time, plus a failed one.
    fn good_history() -> Vec<CounterIncr> {
        vec![
            acked(1, 0, 10, 2),
            acked(2, 5, 12, 1),
            acked(3, 8, 30, 4),
            acked(1, 11, 20, 3),
            acked(2, 21, 40, 6),
            acked(1, 25, 35, 5),
            failed(3, 31, 33, 1),
        ]
    }

    #[test]
    fn consistent_history_passes() {
        // A concurrent history whose answers fit some order and whose final value equals the acknowledged sum passes, with correct counts.
        let report = check_counter(&good_history(), 6);
        assert_eq!(report.violations, vec![], "{report:#?}");
        assert_eq!(
            (report.acknowledged, report.failed, report.unknown),
            (6, 1, 0)
        );
        assert_eq!((report.acknowledged_sum, report.attempted_sum), (6, 6));
        assert_eq!(report.final_value, 6);
    }

    #[test]
    fn lost_acknowledged_increment_is_flagged() {
        // A final value below the sum of acknowledged deltas is a lost increment (and lies below returned values).
        let report = check_counter(&good_history(), 5);
        assert!(
            report
                .violations
                .contains(&CounterViolation::FinalBelowAcknowledged {
                    final_value: 5,
                    acknowledged_sum: 6
                }),
            "{report:#?}"
        );
        assert!(report.violations.iter().any(|v| matches!(
            v,
            CounterViolation::FinalBelowReturned { value: 6, op, .. } if op.index == 4
        )));
    }

    #[test]
    fn final_above_attempted_is_flagged() {
        // A final value above acknowledged + unknown deltas is flagged, which also reveals a failed increment that took effect.
        let report = check_counter(&good_history(), 7);
        assert_eq!(
            report.violations,
            vec![CounterViolation::FinalAboveAttempted {
                final_value: 7,
                attempted_sum: 6,
                failed_sum: 1
            }]
        );
        let line = report.violations[0].to_string();
        assert!(line.contains("above 6"), "{line}");
    }

    #[test]
    fn duplicate_returned_value_is_flagged() {
        // Two concurrent acknowledged increments returning the same value are flagged, naming both.
        let ops = [acked(1, 0, 10, 1), acked(2, 0, 10, 1), unknown(3, 0, 1)];
        let report = check_counter(&ops, 2);
        let duplicates: Vec<&CounterViolation> = report
            .violations
            .iter()
            .filter(|v| matches!(v, CounterViolation::DuplicateReturn { .. }))
            .collect();
        assert_eq!(duplicates.len(), 1, "{report:#?}");
        match duplicates[0] {
            CounterViolation::DuplicateReturn { value, ops } => {
                assert_eq!(*value, 1);
                let indices: Vec<usize> = ops.iter().map(|op| op.index).collect();
                assert_eq!(indices, vec![0, 1]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let line = duplicates[0].to_string();
        assert!(
            line.contains("#0 client 1") && line.contains("#1 client 2"),
            "{line}"
        );
    }

    #[test]
    fn returned_value_out_of_range_is_flagged() {
        // A returned value below the increment's own delta, or above every attempted delta, is flagged.
        let mut small = acked(1, 0, 10, 2);
        small.delta = 3;
        let ops = [small, acked(2, 20, 30, 9)];
        let report = check_counter(&ops, 4);
        let out_of_range: Vec<(usize, i64)> = report
            .violations
            .iter()
            .filter_map(|v| match v {
                CounterViolation::ReturnOutOfRange { op, value, .. } => Some((op.index, *value)),
                _ => None,
            })
            .collect();
        assert_eq!(out_of_range, vec![(0, 2), (1, 9)], "{report:#?}");
    }

    #[test]
    fn real_time_order_violation_is_flagged() {
        // An increment invoked after another completed must return more than it; here it returns less.
        let ops = [acked(1, 0, 10, 2), acked(2, 20, 30, 1)];
        let report = check_counter(&ops, 2);
        assert_eq!(
            report.violations,
            vec![CounterViolation::RealTimeOrder {
                earlier: OpRef {
                    index: 0,
                    client: 1,
                    invoke_ns: 0,
                    complete_ns: Some(10)
                },
                earlier_value: 2,
                later: OpRef {
                    index: 1,
                    client: 2,
                    invoke_ns: 20,
                    complete_ns: Some(30)
                },
                later_delta: 1,
                later_value: 1,
            }]
        );
        let line = report.violations[0].to_string();
        assert!(line.contains("at least 3 expected"), "{line}");
        // The same answers are fine when the two increments overlap.
        let overlapping = [acked(1, 0, 25, 2), acked(2, 20, 30, 1)];
        assert!(check_counter(&overlapping, 2).is_ok());
    }

    #[test]
    fn real_time_check_accounts_for_the_later_delta() {
        // After an increment returned 5, a later increment by 3 must return at least 8, not merely more than 5.
        let mut later = acked(2, 20, 30, 7);
        later.delta = 3;
        let mut ops = vec![acked(1, 0, 10, 5), later, unknown(3, 0, 10)];
        assert!(check_counter(&ops, 8)
            .violations
            .iter()
            .any(|v| matches!(v, CounterViolation::RealTimeOrder { later_value: 7, .. })));
        ops[1].outcome = Outcome::Ok(8);
        assert!(check_counter(&ops, 8).is_ok());
    }

    #[test]
    fn unknowns_widen_the_upper_bound() {
        // Unknown increments may or may not have taken effect: any final value between the acknowledged and attempted sums passes.
        let ops = [acked(1, 0, 10, 1), unknown(2, 0, 5), unknown(3, 0, 2)];
        for final_value in 1..=8 {
            let report = check_counter(&ops, final_value);
            assert!(report.is_ok(), "final {final_value}: {report:#?}");
            assert_eq!((report.acknowledged_sum, report.attempted_sum), (1, 8));
        }
        assert!(!check_counter(&ops, 9).is_ok());
        assert!(!check_counter(&ops, 0).is_ok());
        // An acknowledged increment may return a value only an unknown one explains.
        let ops = [acked(1, 20, 30, 6), unknown(2, 0, 5)];
        assert!(check_counter(&ops, 6).is_ok());
    }

    #[test]
    fn harness_errors_are_reported() {
        // Non-positive deltas, inverted intervals and acknowledged increments without completion are reported as harness errors.
        let mut zero = acked(1, 0, 10, 1);
        zero.delta = 0;
        let backwards = acked(2, 50, 40, 1);
        let mut no_completion = acked(3, 60, 70, 2);
        no_completion.complete_ns = None;
        let report = check_counter(&[zero, backwards, no_completion], 2);
        let harness: Vec<&CounterViolation> = report
            .violations
            .iter()
            .filter(|v| v.is_harness_error())
            .collect();
        assert_eq!(harness.len(), 3, "{report:#?}");
        assert!(matches!(
            harness[0],
            CounterViolation::InvalidDelta { delta: 0, .. }
        ));
        assert_eq!(
            report.acknowledged, 2,
            "the invalid increment is not counted"
        );
        assert!(harness[2].to_string().starts_with("harness error"));
    }
}
