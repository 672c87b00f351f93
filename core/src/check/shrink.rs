//! Shrinking a non-linearizable history to a small one that still shows the
//! violation, for reports: greedy delta debugging (Zeller & Hildebrandt's
//! ddmin, removing complements only) with [`check_history`] as the oracle.
//!
//! Simply deleting operations is not enough: deleting the put that wrote a
//! value turns every read of that value into "a read of a value never
//! written", a violation of the sub-history that the full history does not
//! have, and the shrinker would happily report it. So a removed operation is
//! not deleted but *relaxed*: its outcome becomes unknown (it may have taken
//! effect at any time after its invocation, or never). Relaxing only widens
//! what the checker accepts, so a relaxed history that is still
//! `NotLinearizable` proves that the kept operations are inconsistent
//! whatever the removed ones did: the violation is genuine, not an artefact
//! of the cut. Removed operations that provably cannot matter (read-only
//! ones, ones invoked after every kept completion, and for [`KvRegister`]
//! writes of values no kept operation could have observed) are left out, so
//! the shrunk history is small and cheap to check; see [`ShrinkModel`].
//!
//! Starting from a history that [`check_history`] calls `NotLinearizable`,
//! the shrinker tries removing chunks of operations (halves, then quarters,
//! ... down to single operations) and keeps a removal whenever the relaxed
//! remainder is still `NotLinearizable`. A `Linearizable` or `Unknown`
//! (budget exhausted) verdict does not show the violation, so that removal
//! is not kept. It stops when no single operation can be removed (the result
//! is 1-minimal) or after a bounded number of checks, returning the smallest
//! history found. A last phase tries swaps that ddmin cannot make (keeping a
//! relaxed write again so that a read pinning it can go). See
//! docs/linearizability.md, "Counter, set and shrinking".

use std::collections::{BTreeMap, HashSet};

use markab_wire::message::Key;

use super::linearizability::{
    check_history, Budget, CheckResult, KvInput, KvOperation, KvOutput, KvRegister, Model,
    Operation, Value,
};

/// Most checker runs one shrink makes (the first, on the whole history or
/// on each key's sub-history in turn, included); the default bound of
/// [`shrink_history`] and [`shrink_kv_history`].
pub const SHRINK_CHECKS_MAX: usize = 10_000;

/// A history of model `M`'s operations.
type History<M> = Vec<Operation<<M as Model>::Input, <M as Model>::Output>>;

/// A model whose histories can be shrunk: says which removed (relaxed)
/// operations may still matter, so that the others can be left out of the
/// checked history.
pub trait ShrinkModel: Model {
    /// For each of `removed` (operations cut from the history, each to be
    /// checked as an unknown-outcome operation alongside `kept`), whether it
    /// may change the verdict. Returning `false` for an operation is a
    /// promise that `kept` plus the `removed` operations made unknown is
    /// linearizable if and only if it is without that operation. The
    /// default, `true` for all, is always correct but leaves many unknown
    /// operations in the checked history, which the search handles slowly
    /// (a verdict of `Unknown` stops the shrink early).
    fn removed_may_matter(
        kept: &[&Operation<Self::Input, Self::Output>],
        removed: &[&Operation<Self::Input, Self::Output>],
    ) -> Vec<bool> {
        let _ = kept;
        vec![true; removed.len()]
    }
}

/// A removed write matters only if some kept operation could have observed
/// the value it writes: a completed read that returned it, a completed
/// check-and-set or increment whose answer it would explain, or an
/// unknown-outcome check-and-set that it would let fire. Then no observing
/// operation's last preceding write is a left-out one, so deleting the
/// left-out writes from any linearization changes no observation. Any
/// unknown-outcome increment (whose written value depends on what it
/// observed) makes every write matter.
impl ShrinkModel for KvRegister {
    fn removed_may_matter(
        kept: &[&Operation<KvInput, KvOutput>],
        removed: &[&Operation<KvInput, KvOutput>],
    ) -> Vec<bool> {
        let is_incr = |op: &&Operation<KvInput, KvOutput>| matches!(op.input, KvInput::Incr(_));
        let unknown_incr = removed.iter().any(is_incr)
            || kept.iter().any(|op| op.completion.is_none() && is_incr(op));
        if unknown_incr {
            return vec![true; removed.len()];
        }
        // States a kept completed read returned.
        let mut read: HashSet<&Option<Value>> = HashSet::new();
        // Other kept completed operations whose answer depends on the state.
        let mut observers: Vec<(&KvInput, &KvOutput)> = Vec::new();
        // States on which an unknown-outcome check-and-set fires.
        let mut fires_on: HashSet<&Option<Value>> = HashSet::new();
        for op in kept {
            match (&op.input, &op.completion) {
                (KvInput::Get, Some(completion)) => match &completion.output {
                    KvOutput::Get(seen) => {
                        read.insert(seen);
                    }
                    other => observers.push((&op.input, other)),
                },
                (KvInput::CheckAndSet { .. } | KvInput::Incr(_), Some(completion)) => {
                    observers.push((&op.input, &completion.output));
                }
                (KvInput::CheckAndSet { expect, .. }, None) => {
                    fires_on.insert(expect);
                }
                _ => {}
            }
        }
        for op in removed {
            if let KvInput::CheckAndSet { expect, .. } = &op.input {
                fires_on.insert(expect);
            }
        }
        removed
            .iter()
            .map(|op| {
                let written = match &op.input {
                    KvInput::Put(value) => Some(value.clone()),
                    KvInput::CheckAndSet { new, .. } => Some(new.clone()),
                    KvInput::Delete => None,
                    KvInput::Get => return false,
                    KvInput::Incr(_) => return true,
                };
                read.contains(&written)
                    || fires_on.contains(&written)
                    || observers
                        .iter()
                        .any(|(input, output)| KvRegister::step(&written, input).1 == **output)
            })
            .collect()
    }
}

/// The result of a bounded shrink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shrunk<T> {
    /// The smallest history found that the checker calls
    /// `NotLinearizable`, in the input's order: the kept operations as they
    /// were, and the removed ones that may still matter with their outcome
    /// made unknown. The input unchanged when the input does not show a
    /// violation (linearizable, unknown, malformed) or no check was allowed.
    pub history: Vec<T>,
    /// For each operation of `history`, its index in the input.
    pub indices: Vec<usize>,
    /// Checker runs made, at most the bound given.
    pub checks: usize,
    /// Whether `history` is known 1-minimal: it is `NotLinearizable`, and
    /// removing (relaxing) any single kept operation gives a history the
    /// checker does not call `NotLinearizable`. `false` when the bound
    /// stopped the shrink early, or when the input shows no violation.
    pub minimal: bool,
}

/// Shrinks a single-object history that [`check_history`] calls
/// `NotLinearizable` to a 1-minimal one that still is (see the module
/// documentation for how removed operations are relaxed), with at most
/// [`SHRINK_CHECKS_MAX`] checks of `budget` each; if the bound is hit, the
/// smallest violating history found so far.
///
/// A history that does not show a violation (`Linearizable`, `Unknown`
/// within `budget`, or malformed) is returned unchanged.
pub fn shrink_history<M: ShrinkModel>(
    ops: &[Operation<M::Input, M::Output>],
    budget: Budget,
) -> Vec<Operation<M::Input, M::Output>>
where
    M::Input: Clone,
    M::Output: Clone,
{
    shrink_history_bounded::<M>(ops, budget, SHRINK_CHECKS_MAX).history
}

/// [`shrink_history`] with an explicit bound on checker runs, saying which
/// operations were kept, how many checks it made and whether the result is
/// 1-minimal.
pub fn shrink_history_bounded<M: ShrinkModel>(
    ops: &[Operation<M::Input, M::Output>],
    budget: Budget,
    checks_max: usize,
) -> Shrunk<Operation<M::Input, M::Output>>
where
    M::Input: Clone,
    M::Output: Clone,
{
    let mut checks = 0;
    shrink_checked::<M>(ops, budget, &mut checks, checks_max)
        .unwrap_or_else(|| unchanged(ops, checks))
}

/// Shrinks a key-value history: takes the first key (in key order, as
/// `check_kv_history` reports) whose sub-history [`check_history`] calls
/// `NotLinearizable` and shrinks that sub-history as [`shrink_history`]
/// does. The result holds operations of that one key only.
///
/// A history with no such key, or malformed (an output of the wrong kind
/// for its input), is returned unchanged.
pub fn shrink_kv_history(ops: &[KvOperation], budget: Budget) -> Vec<KvOperation> {
    shrink_kv_history_bounded(ops, budget, SHRINK_CHECKS_MAX).history
}

/// [`shrink_kv_history`] with an explicit bound on checker runs (the
/// per-key checks that find the violating key included); `indices` are
/// indices into `ops`.
pub fn shrink_kv_history_bounded(
    ops: &[KvOperation],
    budget: Budget,
    checks_max: usize,
) -> Shrunk<KvOperation> {
    let well_formed = ops.iter().all(|op| {
        op.operation
            .completion
            .as_ref()
            .is_none_or(|completion| op.operation.input.is_answered_by(&completion.output))
    });
    let mut checks = 0;
    if !well_formed {
        return unchanged(ops, checks);
    }
    let mut by_key: BTreeMap<&Key, Vec<usize>> = BTreeMap::new();
    for (index, op) in ops.iter().enumerate() {
        by_key.entry(&op.key).or_default().push(index);
    }
    for (key, key_indices) in by_key {
        let key_ops: Vec<Operation<KvInput, KvOutput>> = key_indices
            .iter()
            .map(|&index| ops[index].operation.clone())
            .collect();
        let Some(shrunk) = shrink_checked::<KvRegister>(&key_ops, budget, &mut checks, checks_max)
        else {
            continue;
        };
        return Shrunk {
            history: shrunk
                .history
                .into_iter()
                .map(|operation| KvOperation {
                    key: key.clone(),
                    operation,
                })
                .collect(),
            indices: shrunk
                .indices
                .iter()
                .map(|&index| key_indices[index])
                .collect(),
            checks,
            minimal: shrunk.minimal,
        };
    }
    unchanged(ops, checks)
}

fn unchanged<T: Clone>(ops: &[T], checks: usize) -> Shrunk<T> {
    Shrunk {
        history: ops.to_vec(),
        indices: (0..ops.len()).collect(),
        checks,
        minimal: false,
    }
}

/// Checks `ops` (counting against `checks_max`) and, if it shows a
/// violation, shrinks it; `None` if no check was left or it shows none.
fn shrink_checked<M: ShrinkModel>(
    ops: &[Operation<M::Input, M::Output>],
    budget: Budget,
    checks: &mut usize,
    checks_max: usize,
) -> Option<Shrunk<Operation<M::Input, M::Output>>>
where
    M::Input: Clone,
    M::Output: Clone,
{
    if *checks >= checks_max {
        return None;
    }
    *checks += 1;
    if !shows_violation(check_history::<M>(ops, budget)) {
        return None;
    }
    let shows = |kept: &[usize]| {
        let (history, _) = relaxed::<M>(ops, kept);
        shows_violation(check_history::<M>(&history, budget))
    };
    let first_chunk = ops.len().div_ceil(2);
    let (mut kept, minimal) = ddmin(
        (0..ops.len()).collect(),
        first_chunk,
        checks,
        checks_max,
        shows,
    );
    if minimal {
        kept = unrelax::<M>(ops, kept, checks, checks_max, shows);
    }
    let (history, indices) = relaxed::<M>(ops, &kept);
    Some(Shrunk {
        history,
        indices,
        checks: *checks,
        minimal,
    })
}

/// The history checked for the kept operations `kept` (ascending indices
/// into `ops`): those operations, and the removed ones that may matter with
/// their outcome made unknown, in `ops`'s order; with each one's index.
///
/// Besides [`ShrinkModel::removed_may_matter`], a removed operation is left
/// out when it is read-only (it changes no state) or invoked after every
/// kept completed operation completed (it can take effect after all of
/// them, where it changes no observation).
fn relaxed<M: ShrinkModel>(
    ops: &[Operation<M::Input, M::Output>],
    kept: &[usize],
) -> (History<M>, Vec<usize>)
where
    M::Input: Clone,
    M::Output: Clone,
{
    let mut is_kept = vec![false; ops.len()];
    for &index in kept {
        is_kept[index] = true;
    }
    let last_completion = kept
        .iter()
        .filter_map(|&index| ops[index].completion.as_ref())
        .map(|completion| completion.complete_ns)
        .max();
    let removed: Vec<usize> = (0..ops.len())
        .filter(|&index| {
            !is_kept[index]
                && !M::is_read_only(&ops[index].input)
                && last_completion.is_some_and(|last| ops[index].invoke_ns <= last)
        })
        .collect();
    let kept_ops: Vec<&Operation<M::Input, M::Output>> =
        kept.iter().map(|&index| &ops[index]).collect();
    let removed_ops: Vec<&Operation<M::Input, M::Output>> =
        removed.iter().map(|&index| &ops[index]).collect();
    let matters = M::removed_may_matter(&kept_ops, &removed_ops);
    let mut included = is_kept;
    for (position, &index) in removed.iter().enumerate() {
        // A model answering with too few flags keeps the rest (safe).
        if matters.get(position).copied().unwrap_or(true) {
            included[index] = true;
        }
    }
    let mut history = Vec::new();
    let mut indices = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        if !included[index] {
            continue;
        }
        let mut op = op.clone();
        if kept.binary_search(&index).is_err() {
            op.completion = None;
        }
        history.push(op);
        indices.push(index);
    }
    (history, indices)
}

/// Improves a 1-minimal `kept` by swaps. ddmin can relax a write while
/// keeping a read that pins it (a put relaxed, the read of its value kept,
/// a later stale read of the same value kept): 1-minimal, but keeping the
/// put and dropping the pinning read is smaller. So for each relaxed
/// operation that completed in `ops`, keep it again (which can only keep
/// the history `NotLinearizable`: a completed operation constrains more
/// than an unknown one) and rerun single-operation removal; take the
/// result if its checked history is strictly smaller and 1-minimal. Each
/// accepted swap shrinks the history, so at most `ops.len()` rounds.
fn unrelax<M: ShrinkModel>(
    ops: &[Operation<M::Input, M::Output>],
    mut kept: Vec<usize>,
    checks: &mut usize,
    checks_max: usize,
    mut shows: impl FnMut(&[usize]) -> bool,
) -> Vec<usize>
where
    M::Input: Clone,
    M::Output: Clone,
{
    for _ in 0..ops.len() {
        let (_, indices) = relaxed::<M>(ops, &kept);
        let size = indices.len();
        let relaxed_completed = indices
            .iter()
            .copied()
            .filter(|index| kept.binary_search(index).is_err() && ops[*index].completion.is_some());
        let mut better = None;
        for index in relaxed_completed {
            let mut candidate = kept.clone();
            if let Err(position) = candidate.binary_search(&index) {
                candidate.insert(position, index);
            }
            let (candidate, minimal) = ddmin(candidate, 1, checks, checks_max, &mut shows);
            if minimal && relaxed::<M>(ops, &candidate).1.len() < size {
                better = Some(candidate);
                break;
            }
        }
        match better {
            Some(candidate) => kept = candidate,
            None => break,
        }
    }
    kept
}

/// Only a proven violation counts; `Unknown` and malformed do not.
fn shows_violation<E>(verdict: Result<CheckResult, E>) -> bool {
    matches!(verdict, Ok(CheckResult::NotLinearizable { .. }))
}

/// Greedy ddmin over `current`, which `shows`, starting from chunks of
/// `first_chunk` operations. A pass tries removing each chunk in turn, last
/// chunk first, keeping every removal whose remainder still `shows` (going
/// backwards tries a read before the writes it read from, so a read is
/// dropped rather than a write relaxed). A pass that removes nothing halves
/// the chunk size; a pass at size 1 that removes nothing proves
/// 1-minimality. Each pass over a non-empty list makes at least one check,
/// and `checks` never exceeds `checks_max`, so the loop is bounded. Returns
/// the smallest list found and whether it is known 1-minimal.
fn ddmin<T: Clone>(
    mut current: Vec<T>,
    first_chunk: usize,
    checks: &mut usize,
    checks_max: usize,
    mut shows: impl FnMut(&[T]) -> bool,
) -> (Vec<T>, bool) {
    let mut chunk = first_chunk.max(1);
    while *checks < checks_max {
        let mut removed = false;
        let mut end = current.len();
        while end > 0 {
            if *checks >= checks_max {
                return (current, false);
            }
            let start = end.saturating_sub(chunk);
            let candidate: Vec<T> = current[..start]
                .iter()
                .chain(&current[end..])
                .cloned()
                .collect();
            *checks += 1;
            if shows(&candidate) {
                current = candidate;
                removed = true;
            }
            end = start;
        }
        if removed {
            chunk = chunk.min(current.len().div_ceil(2)).max(1);
        } else if chunk == 1 {
            return (current, true);
        } else {
            chunk = chunk.div_ceil(2);
        }
    }
    (current, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    type KvOp = Operation<KvInput, KvOutput>;

    fn put(client: u64, invoke_ns: u64, complete_ns: u64, text: &str) -> KvOp {
        Operation::completed(
            client,
            invoke_ns,
            complete_ns,
            KvInput::Put(Value::from(text)),
            KvOutput::Written,
        )
    }

    fn get(client: u64, invoke_ns: u64, complete_ns: u64, seen: Option<&str>) -> KvOp {
        Operation::completed(
            client,
            invoke_ns,
            complete_ns,
            KvInput::Get,
            KvOutput::Get(seen.map(Value::from)),
        )
    }

    fn verdict(history: &[KvOp]) -> CheckResult {
        check_history::<KvRegister>(history, Budget::default()).expect("well-formed history")
    }

    /// `rounds` puts of distinct values, each overlapping its neighbours,
    /// each followed by a read of its value, plus a few unknown puts of
    /// values nobody reads: linearizable. Returns the history and the index
    /// of the read of round `planted`.
    fn busy_history(rounds: u64, planted: u64) -> (Vec<KvOp>, usize) {
        let mut history = Vec::new();
        let mut planted_index = 0;
        for round in 0..rounds {
            let t = 10 * round;
            let client = round % 4;
            history.push(put(client, t, t + 15, &format!("v{round}")));
            if round == planted {
                planted_index = history.len();
            }
            history.push(get(client + 10, t + 16, t + 19, Some(&format!("v{round}"))));
            if round % 40 == 7 {
                history.push(Operation::unknown(
                    client + 20,
                    t + 3,
                    KvInput::Put(Value::from(format!("u{round}").as_str())),
                ));
            }
        }
        (history, planted_index)
    }

    /// `busy_history(100, 60)` with the read of round 60 answering `seen`.
    fn planted(seen: Option<&str>) -> (Vec<KvOp>, usize) {
        let (mut history, planted) = busy_history(100, 60);
        let read = &history[planted];
        history[planted] = get(read.client, read.invoke_ns, 619, seen);
        assert!(matches!(
            verdict(&history),
            CheckResult::NotLinearizable { .. }
        ));
        (history, planted)
    }

    /// Asserts `shrunk` is not linearizable and 1-minimal: making any single
    /// completed operation's outcome unknown makes it linearizable.
    fn assert_one_minimal(shrunk: &[KvOp]) {
        assert!(
            matches!(verdict(shrunk), CheckResult::NotLinearizable { .. }),
            "{shrunk:#?}"
        );
        for relax in 0..shrunk.len() {
            if shrunk[relax].completion.is_none() {
                continue;
            }
            let mut relaxed = shrunk.to_vec();
            relaxed[relax].completion = None;
            assert_eq!(
                verdict(&relaxed),
                CheckResult::Linearizable,
                "relaxing #{relax} of {shrunk:#?}"
            );
        }
    }

    /// Asserts `shrunk` lists operations of `history` by `indices`, each as
    /// it was or with its outcome made unknown.
    fn assert_taken_from(shrunk: &Shrunk<KvOp>, history: &[KvOp]) {
        assert_eq!(shrunk.history.len(), shrunk.indices.len());
        for (op, &index) in shrunk.history.iter().zip(&shrunk.indices) {
            let mut relaxed = history[index].clone();
            relaxed.completion = None;
            assert!(*op == history[index] || *op == relaxed, "#{index}: {op:?}");
        }
    }

    #[test]
    fn planted_stale_read_shrinks_to_a_one_minimal_history() {
        // A read of the initial (absent) value after many completed puts shrinks to that read and one earlier put, 1-minimal.
        let (history, planted) = planted(None);
        let shrunk = shrink_history_bounded::<KvRegister>(&history, Budget::default(), 10_000);
        assert!(shrunk.minimal, "{shrunk:#?}");
        assert_eq!(shrunk.history.len(), 2, "{:#?}", shrunk.history);
        assert_eq!(shrunk.indices[1], planted);
        assert!(matches!(shrunk.history[0].input, KvInput::Put(_)));
        assert_taken_from(&shrunk, &history);
        assert_one_minimal(&shrunk.history);
        assert_eq!(
            shrink_history::<KvRegister>(&history, Budget::default()),
            shrunk.history
        );
    }

    #[test]
    fn planted_read_of_an_old_value_keeps_the_write_it_read() {
        // A read of a value two puts old shrinks to the read, the put of that value and a later put, not to a read of a value "never written" that deleting its put would fabricate.
        let (history, planted) = planted(Some("v58"));
        let shrunk = shrink_history_bounded::<KvRegister>(&history, Budget::default(), 10_000);
        assert!(shrunk.minimal);
        assert_eq!(shrunk.history.len(), 3, "{:#?}", shrunk.history);
        assert!(shrunk.indices.contains(&planted));
        let put_v58 = history
            .iter()
            .position(|op| op.input == KvInput::Put(Value::from("v58")))
            .expect("round 58 put");
        assert!(shrunk.indices.contains(&put_v58), "{:#?}", shrunk.history);
        assert!(shrunk.history.iter().all(|op| op.completion.is_some()));
        assert_taken_from(&shrunk, &history);
        assert_one_minimal(&shrunk.history);
    }

    #[test]
    fn removed_writes_that_matter_stay_as_unknown_outcomes() {
        // Two clients see two concurrent puts in opposite orders: the puts' timing does not matter, so they stay only as unknown outcomes next to the four reads.
        let history = vec![
            put(1, 0, 100, "1"),
            put(2, 0, 100, "2"),
            get(3, 10, 20, Some("1")),
            get(3, 30, 40, Some("2")),
            get(4, 10, 20, Some("2")),
            get(4, 30, 40, Some("1")),
            put(5, 200, 210, "3"),
            get(5, 220, 230, Some("3")),
        ];
        let shrunk = shrink_history_bounded::<KvRegister>(&history, Budget::default(), 10_000);
        assert!(shrunk.minimal);
        assert_eq!(
            shrunk.indices,
            vec![0, 1, 2, 3, 4, 5],
            "{:#?}",
            shrunk.history
        );
        assert!(shrunk.history[..2].iter().all(|op| op.completion.is_none()));
        assert_taken_from(&shrunk, &history);
        assert_one_minimal(&shrunk.history);
    }

    #[test]
    fn linearizable_history_is_returned_unchanged() {
        // A history without a violation comes back as it was, after one check, not marked minimal.
        let (history, _) = busy_history(50, 0);
        assert_eq!(verdict(&history), CheckResult::Linearizable);
        let shrunk = shrink_history_bounded::<KvRegister>(&history, Budget::default(), 10_000);
        assert_eq!(
            shrunk,
            Shrunk {
                history: history.clone(),
                indices: (0..history.len()).collect(),
                checks: 1,
                minimal: false
            }
        );
    }

    #[test]
    fn unknown_verdict_does_not_count_as_a_violation() {
        // With a budget too small for any verdict, nothing shows the violation, so the history comes back unchanged.
        let history = vec![
            put(1, 0, 10, "1"),
            put(1, 20, 30, "2"),
            get(2, 40, 50, None),
        ];
        let tiny = Budget {
            steps_max: 1,
            ..Budget::default()
        };
        assert!(matches!(
            check_history::<KvRegister>(&history, tiny),
            Ok(CheckResult::Unknown(_))
        ));
        assert_eq!(shrink_history::<KvRegister>(&history, tiny), history);
    }

    #[test]
    fn check_bound_is_respected() {
        // A shrink stopped by its check bound makes exactly that many checks and returns a smaller history that still violates.
        let (history, _) = planted(None);
        let full = shrink_history_bounded::<KvRegister>(&history, Budget::default(), 10_000);
        assert!(full.checks > 10 && full.checks < 10_000 && full.minimal);
        for checks_max in [1, 2, 5, 10] {
            let shrunk =
                shrink_history_bounded::<KvRegister>(&history, Budget::default(), checks_max);
            assert_eq!(shrunk.checks, checks_max);
            assert!(!shrunk.minimal);
            assert!(shrunk.history.len() <= history.len());
            assert!(matches!(
                verdict(&shrunk.history),
                CheckResult::NotLinearizable { .. }
            ));
        }
        let shrunk = shrink_history_bounded::<KvRegister>(&history, Budget::default(), 10);
        assert!(
            shrunk.history.len() < history.len() / 4,
            "{}",
            shrunk.history.len()
        );
        let none = shrink_history_bounded::<KvRegister>(&history, Budget::default(), 0);
        assert_eq!((none.checks, none.history.len()), (0, history.len()));
    }

    /// [`KvRegister`] with the default, conservative [`ShrinkModel`].
    struct Conservative;

    impl Model for Conservative {
        type State = Option<Value>;
        type Input = KvInput;
        type Output = KvOutput;

        fn init() -> Self::State {
            None
        }

        fn step(state: &Self::State, input: &Self::Input) -> (Self::State, Self::Output) {
            KvRegister::step(state, input)
        }

        fn is_read_only(input: &Self::Input) -> bool {
            KvRegister::is_read_only(input)
        }
    }

    impl ShrinkModel for Conservative {}

    #[test]
    fn default_shrink_model_keeps_every_removed_write() {
        // With the default relevance every removed write stays as an unknown outcome: the result still violates and keeps the planted read.
        let (mut history, planted) = busy_history(8, 5);
        history[planted].completion = Some(crate::check::Completion {
            complete_ns: 69,
            output: KvOutput::Get(Some(Value::from("v3"))),
        });
        let shrunk = shrink_history_bounded::<Conservative>(&history, Budget::default(), 10_000);
        assert!(shrunk.indices.contains(&planted), "{:#?}", shrunk.history);
        assert!(matches!(
            check_history::<Conservative>(&shrunk.history, Budget::default()),
            Ok(CheckResult::NotLinearizable { .. })
        ));
        let completed = shrunk
            .history
            .iter()
            .filter(|op| op.completion.is_some())
            .count();
        assert!(completed <= 3, "{:#?}", shrunk.history);
        // Every put invoked before the read completed is still there (KvRegister's rule would drop most).
        let puts = shrunk
            .history
            .iter()
            .filter(|op| matches!(op.input, KvInput::Put(_)) && op.invoke_ns <= 69)
            .count();
        assert_eq!(puts, 7, "{:#?}", shrunk.history);
    }

    fn on_key(key: &Key, operation: KvOp) -> KvOperation {
        KvOperation {
            key: key.clone(),
            operation,
        }
    }

    #[test]
    fn kv_history_shrinks_to_the_violating_key() {
        // Among many linearizable keys, the one key with a stale read is found and shrunk to a 1-minimal history on that key only.
        let mut history = Vec::new();
        for k in 0..30u64 {
            let key = Key::new(format!("h{k}"), "s");
            let (key_history, _) = busy_history(10, 0);
            history.extend(key_history.into_iter().map(|op| on_key(&key, op)));
        }
        assert_eq!(
            shrink_kv_history(&history, Budget::default()),
            history,
            "a linearizable history comes back unchanged"
        );
        let bad_key = Key::new("h17", "s");
        history.push(on_key(&bad_key, put(999, 2_000, 2_001, "new")));
        history.push(on_key(&bad_key, get(999, 2_002, 2_003, Some("v9"))));
        let shrunk = shrink_kv_history_bounded(&history, Budget::default(), SHRINK_CHECKS_MAX);
        assert!(shrunk.minimal);
        assert_eq!(shrunk.history.len(), 3, "{:#?}", shrunk.history);
        assert!(shrunk.history.iter().all(|op| op.key == bad_key));
        assert_eq!(shrunk.indices.last(), Some(&(history.len() - 1)));
        for (op, &index) in shrunk.history.iter().zip(&shrunk.indices) {
            assert_eq!(*op, history[index]);
        }
        let key_ops: Vec<KvOp> = shrunk
            .history
            .iter()
            .map(|op| op.operation.clone())
            .collect();
        assert_one_minimal(&key_ops);
        assert!(matches!(
            crate::check::check_kv_history(&shrunk.history),
            Ok(CheckResult::NotLinearizable { .. })
        ));
    }
}
