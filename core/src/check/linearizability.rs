//! A linearizability checker: Wing & Gong's depth-first search (1993) with
//! Lowe's cache of visited configurations (2017), run separately on each key
//! of a key-value history (P-compositionality, Horn & Kroening 2015).
//!
//! A history is a set of [`Operation`]s. Each has an invocation time, and
//! either a completion (time and output) or an unknown outcome (the client
//! timed out or crashed: the operation may have taken effect at any point
//! after its invocation, or never). The history is linearizable when there is
//! a total order of all completed operations and some of the unknown ones
//! that (a) respects real time — if `a` completed strictly before `b` was
//! invoked then `a` comes first — and (b) is a legal sequential execution of
//! the [`Model`], every completed operation returning its recorded output.
//!
//! The search is bounded by a [`Budget`]; when the budget runs out the
//! answer is [`CheckResult::Unknown`], never a guess. The design, the
//! complexity and how the simulator calls this are in
//! docs/linearizability.md.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;

use markab_wire::message::Key;

/// Steps (search-loop iterations) one key may take: the default of
/// [`Budget::steps_max`].
pub const STEPS_MAX_DEFAULT: u64 = 10_000_000;

/// Approximate bytes the visited-configuration cache of one key may hold: the
/// default of [`Budget::cache_bytes_max`] (256 MiB).
pub const CACHE_BYTES_MAX_DEFAULT: usize = 256 << 20;

/// Most operations of the longest partial linearization that an explanation
/// lists (the last ones, those next to the failure).
pub const EXPLANATION_OPERATIONS_MAX: usize = 16;

/// Most concurrent candidate operations that an explanation lists.
pub const EXPLANATION_CANDIDATES_MAX: usize = 8;

/// Bytes a cache entry costs beyond its bitset and its state's inline size:
/// hash-table slot, control byte, boxed-slice header (an estimate).
const CACHE_ENTRY_OVERHEAD_BYTES: usize = 48;

/// A sequential specification: the state machine that operations are
/// checked against. It must be deterministic: `step` on equal states and
/// inputs gives equal results.
pub trait Model {
    /// The model's state; the search caches `(linearized set, state)` pairs,
    /// so states must be hashable and cheap to clone.
    type State: Clone + Eq + Hash + Debug;
    /// What a client asked for.
    type Input: Debug;
    /// What the operation answered.
    type Output: Eq + Debug;

    /// The state before any operation.
    fn init() -> Self::State;

    /// Applies `input` to `state` atomically, giving the next state and the
    /// output the operation returns.
    fn step(state: &Self::State, input: &Self::Input) -> (Self::State, Self::Output);

    /// Whether `input` never changes the state. Unknown-outcome operations
    /// that are read-only constrain nothing and are dropped before the
    /// search. Default: `false` (always safe).
    fn is_read_only(_input: &Self::Input) -> bool {
        false
    }
}

/// How an operation ended, when its client saw it end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion<O> {
    /// When the client received the answer (simulated ns).
    pub complete_ns: u64,
    /// The answer.
    pub output: O,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client (process) that issued it; used only in explanations.
    pub client: u64,
    /// When the client sent it (simulated ns).
    pub invoke_ns: u64,
    /// What it asked for.
    pub input: I,
    /// `None` when the outcome is unknown (timeout, crash): the operation
    /// may have taken effect at any time after `invoke_ns`, or never, and no
    /// output is checked.
    pub completion: Option<Completion<O>>,
}

impl<I, O> Operation<I, O> {
    /// An operation whose client saw its answer `output` at `complete_ns`.
    pub fn completed(client: u64, invoke_ns: u64, complete_ns: u64, input: I, output: O) -> Self {
        Operation {
            client,
            invoke_ns,
            input,
            completion: Some(Completion {
                complete_ns,
                output,
            }),
        }
    }

    /// An operation whose outcome is unknown.
    pub fn unknown(client: u64, invoke_ns: u64, input: I) -> Self {
        Operation {
            client,
            invoke_ns,
            input,
            completion: None,
        }
    }
}

/// Bounds on the work of one check (applied per key by
/// [`check_kv_history_with_budget`]). Default: [`STEPS_MAX_DEFAULT`] steps,
/// [`CACHE_BYTES_MAX_DEFAULT`] cache bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Search-loop iterations (each tries one operation or backtracks once).
    pub steps_max: u64,
    /// Approximate bytes of the visited-configuration cache.
    pub cache_bytes_max: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            steps_max: STEPS_MAX_DEFAULT,
            cache_bytes_max: CACHE_BYTES_MAX_DEFAULT,
        }
    }
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Some legal sequential order explains every completed operation.
    Linearizable,
    /// No order does. `explanation` names the longest partial linearization
    /// found, the operation that could not be placed and the alternatives.
    NotLinearizable { explanation: String },
    /// The budget ran out before a verdict; the message says which bound.
    Unknown(String),
}

/// A history that cannot be checked because it is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// An operation completed before it was invoked.
    #[error(
        "operation #{index} completes at {complete_ns} ns, before its invocation at {invoke_ns} ns"
    )]
    CompleteBeforeInvoke {
        index: usize,
        invoke_ns: u64,
        complete_ns: u64,
    },
    /// A key-value operation's output is of another kind than its input
    /// (say a `Get` answered with `Written`).
    #[error("operation #{index}: output {output} cannot answer input {input}")]
    OutputMismatch {
        index: usize,
        input: String,
        output: String,
    },
}

/// Checks a history of one object (one key) against model `M`.
///
/// Returns an error only for a malformed history; otherwise the verdict,
/// which is [`CheckResult::Unknown`] when `budget` runs out.
///
/// ```
/// use markab_core::check::{check_history, Budget, CheckResult, KvInput, KvOutput, KvRegister, Operation};
/// let history = vec![
///     Operation::completed(1, 0, 10, KvInput::Put("a".into()), KvOutput::Written),
///     Operation::completed(2, 20, 30, KvInput::Get, KvOutput::Get(Some("a".into()))),
/// ];
/// let verdict = check_history::<KvRegister>(&history, Budget::default()).unwrap();
/// assert_eq!(verdict, CheckResult::Linearizable);
/// ```
pub fn check_history<M: Model>(
    ops: &[Operation<M::Input, M::Output>],
    budget: Budget,
) -> Result<CheckResult, HistoryError> {
    let indexed: Vec<Indexed<'_, M>> = ops.iter().enumerate().collect();
    check_indexed::<M>(&indexed, budget)
}

/// Checks a key-value history with the default [`Budget`] per key; see
/// [`check_kv_history_with_budget`].
pub fn check_kv_history(ops: &[KvOperation]) -> Result<CheckResult, HistoryError> {
    check_kv_history_with_budget(ops, Budget::default())
}

/// Checks a key-value history: partitions it by key and checks each key's
/// operations against [`KvRegister`] with its own `budget` (so the total
/// work is bounded by keys × budget).
///
/// The verdict is the first (in key order) `NotLinearizable`, else the
/// first `Unknown`, else `Linearizable`. Explanations name operations by
/// their index in `ops` and start with the key.
pub fn check_kv_history_with_budget(
    ops: &[KvOperation],
    budget: Budget,
) -> Result<CheckResult, HistoryError> {
    let mut by_key: BTreeMap<&Key, Vec<Indexed<'_, KvRegister>>> = BTreeMap::new();
    for (index, op) in ops.iter().enumerate() {
        if let Some(completion) = &op.operation.completion {
            if !op.operation.input.is_answered_by(&completion.output) {
                return Err(HistoryError::OutputMismatch {
                    index,
                    input: format!("{:?}", op.operation.input),
                    output: format!("{:?}", completion.output),
                });
            }
        }
        by_key
            .entry(&op.key)
            .or_default()
            .push((index, &op.operation));
    }
    let mut unknown: Option<String> = None;
    for (key, key_ops) in &by_key {
        match check_indexed::<KvRegister>(key_ops, budget)? {
            CheckResult::Linearizable => {}
            CheckResult::NotLinearizable { explanation } => {
                return Ok(CheckResult::NotLinearizable {
                    explanation: format!("key {}: {explanation}", describe_key(key)),
                });
            }
            CheckResult::Unknown(message) => {
                if unknown.is_none() {
                    unknown = Some(format!("key {}: {message}", describe_key(key)));
                }
            }
        }
    }
    Ok(match unknown {
        Some(message) => CheckResult::Unknown(message),
        None => CheckResult::Linearizable,
    })
}

fn describe_key(key: &Key) -> String {
    format!(
        "{:?}/{:?}",
        Value(key.hash_key.clone()),
        Value(key.sort_key.clone())
    )
}

/// An operation with the index that explanations print for it (its index in
/// the caller's slice).
type Indexed<'a, M> = (
    usize,
    &'a Operation<<M as Model>::Input, <M as Model>::Output>,
);

/// A fixed-size set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BitSet {
    words: Box<[u64]>,
}

impl BitSet {
    fn new(bits: usize) -> Self {
        BitSet {
            words: vec![0; bits.div_ceil(64)].into_boxed_slice(),
        }
    }

    fn insert(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    fn remove(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
    }

    /// The set in a compact, canonical form, given that every index below
    /// `first_absent` is in the set, `first_absent` is not, and `last_present`
    /// is the largest member (if any): the words from the one holding
    /// `first_absent` to the one holding `last_present`. Its size follows the
    /// history's concurrency, not its length.
    fn window_key(&self, first_absent: usize, last_present: Option<usize>) -> CacheKey {
        let window = match last_present {
            Some(last) if last > first_absent => &self.words[first_absent / 64..=last / 64],
            _ => &[],
        };
        CacheKey {
            first_absent,
            window: window.into(),
        }
    }
}

/// A set of linearized operations as [`BitSet::window_key`] encodes it.
#[derive(PartialEq, Eq, Hash)]
struct CacheKey {
    first_absent: usize,
    window: Box<[u64]>,
}

/// What the search knew at the deepest point where it had to backtrack.
struct Failure<S> {
    /// Operations linearized at that point.
    depth: usize,
    /// The last [`EXPLANATION_OPERATIONS_MAX`] of them, in order.
    tail: Vec<usize>,
    /// The model state after them.
    state: S,
    /// The completed operation whose return was reached unlinearized.
    blocking: usize,
    /// Operations that could have been linearized next, other than `blocking`.
    candidates: Vec<usize>,
}

/// The entry list of Wing & Gong: one call entry per operation and one
/// return entry per completed operation, sorted by time, as a circular
/// doubly linked list over indices with a sentinel head, so that an
/// operation's entries can be unlinked ("lifted") and relinked in O(1).
struct EntryList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation of each entry.
    op: Vec<usize>,
    /// Whether each entry is a call (else a return).
    is_call: Vec<bool>,
    call_of_op: Vec<usize>,
    return_of_op: Vec<Option<usize>>,
    head: usize,
}

impl EntryList {
    fn new(invoke_ns: &[u64], complete_ns: &[Option<u64>]) -> Self {
        let ops_count = invoke_ns.len();
        // (time, 0 = call / 1 = return, op): at equal times calls sort before
        // returns, so operations that touch at one instant are concurrent.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ops_count);
        for op in 0..ops_count {
            events.push((invoke_ns[op], 0, op));
            if let Some(complete) = complete_ns[op] {
                events.push((complete, 1, op));
            }
        }
        events.sort_unstable();
        let entries = events.len();
        let head = entries;
        let mut list = EntryList {
            next: vec![0; entries + 1],
            prev: vec![0; entries + 1],
            op: Vec::with_capacity(entries),
            is_call: Vec::with_capacity(entries),
            call_of_op: vec![usize::MAX; ops_count],
            return_of_op: vec![None; ops_count],
            head,
        };
        for (entry, &(_, kind, op)) in events.iter().enumerate() {
            list.op.push(op);
            list.is_call.push(kind == 0);
            if kind == 0 {
                list.call_of_op[op] = entry;
            } else {
                list.return_of_op[op] = Some(entry);
            }
        }
        for node in 0..=entries {
            list.next[node] = (node + 1) % (entries + 1);
            list.prev[node] = (node + entries) % (entries + 1);
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }

    /// Removes `op`'s entries; undone by [`EntryList::unlift`] in LIFO order.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of_op[op]);
        if let Some(ret) = self.return_of_op[op] {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, op: usize) {
        if let Some(ret) = self.return_of_op[op] {
            self.relink(ret);
        }
        self.relink(self.call_of_op[op]);
    }
}

/// The search over one object's operations; `ops[i].0` is the index that
/// explanations print.
fn check_indexed<M: Model>(
    ops_all: &[Indexed<'_, M>],
    budget: Budget,
) -> Result<CheckResult, HistoryError> {
    for &(index, op) in ops_all {
        if let Some(completion) = &op.completion {
            if completion.complete_ns < op.invoke_ns {
                return Err(HistoryError::CompleteBeforeInvoke {
                    index,
                    invoke_ns: op.invoke_ns,
                    complete_ns: completion.complete_ns,
                });
            }
        }
    }
    // An unknown read-only operation may be linearized nowhere; dropping it
    // changes no verdict and shrinks the search.
    let mut ops: Vec<Indexed<'_, M>> = ops_all
        .iter()
        .copied()
        .filter(|(_, op)| op.completion.is_some() || !M::is_read_only(&op.input))
        .collect();
    // Operations numbered in invocation order, so the call entries of the
    // entry list follow operation numbers and the first listed entry is the
    // lowest-numbered operation not yet linearized.
    ops.sort_by_key(|(_, op)| op.invoke_ns);
    let invoke_ns: Vec<u64> = ops.iter().map(|(_, op)| op.invoke_ns).collect();
    let complete_ns: Vec<Option<u64>> = ops
        .iter()
        .map(|(_, op)| op.completion.as_ref().map(|c| c.complete_ns))
        .collect();
    let completed_total = complete_ns.iter().filter(|c| c.is_some()).count();
    let mut list = EntryList::new(&invoke_ns, &complete_ns);

    let cache_entry_bytes_fixed = std::mem::size_of::<M::State>() + CACHE_ENTRY_OVERHEAD_BYTES;
    let mut cache_bytes = 0usize;
    let mut cache: HashSet<(CacheKey, M::State)> = HashSet::new();
    let mut linearized = BitSet::new(ops.len());
    let mut linearized_max: Option<usize> = None;
    let mut state = M::init();
    // (operation, state before it, `linearized_max` before it), one per
    // linearized operation.
    let mut stack: Vec<(usize, M::State, Option<usize>)> = Vec::new();
    let mut completed_linearized = 0usize;
    let mut failure: Option<Failure<M::State>> = None;
    let mut steps = 0u64;
    let mut entry = list.next[list.head];

    loop {
        if completed_linearized == completed_total {
            // Unknown operations left over never took effect (or took effect
            // after everything observed).
            return Ok(CheckResult::Linearizable);
        }
        // Some return entry is still listed, so the scan meets it before
        // wrapping around to the head.
        assert_ne!(entry, list.head, "scan passed every return entry");
        steps += 1;
        if steps > budget.steps_max {
            return Ok(CheckResult::Unknown(format!(
                "step budget of {} exhausted after linearizing up to {} of {} completed operations",
                budget.steps_max,
                failure
                    .as_ref()
                    .map_or(stack.len(), |f| f.depth.max(stack.len())),
                completed_total
            )));
        }
        let op = list.op[entry];
        if list.is_call[entry] {
            let (next_state, output) = M::step(&state, &ops[op].1.input);
            let fits = ops[op]
                .1
                .completion
                .as_ref()
                .is_none_or(|completion| completion.output == output);
            if fits {
                linearized.insert(op);
                list.lift(op);
                let first_absent = match list.next[list.head] {
                    first if first == list.head => ops.len(),
                    first => list.op[first],
                };
                let next_max = linearized_max.max(Some(op));
                let key = linearized.window_key(first_absent, next_max);
                let key_bytes = key.window.len() * 8 + cache_entry_bytes_fixed;
                if cache.insert((key, next_state.clone())) {
                    cache_bytes = cache_bytes.saturating_add(key_bytes);
                    if cache_bytes > budget.cache_bytes_max {
                        return Ok(CheckResult::Unknown(format!(
                            "cache budget of {} bytes exhausted after {} configurations",
                            budget.cache_bytes_max,
                            cache.len()
                        )));
                    }
                    let previous_state = std::mem::replace(&mut state, next_state);
                    stack.push((op, previous_state, linearized_max));
                    linearized_max = next_max;
                    if ops[op].1.completion.is_some() {
                        completed_linearized += 1;
                    }
                    entry = list.next[list.head];
                    continue;
                }
                list.unlift(op);
                linearized.remove(op);
            }
            entry = list.next[entry];
        } else {
            // The return of `op` is reached and `op` is not linearized: no
            // operation listed before it gives a new consistent configuration.
            if failure.as_ref().is_none_or(|f| stack.len() > f.depth) {
                failure = Some(record_failure(&list, &stack, &state, entry));
            }
            let Some((popped, previous_state, previous_max)) = stack.pop() else {
                let failure = failure.expect("a failure is recorded before the stack empties");
                return Ok(CheckResult::NotLinearizable {
                    explanation: explain::<M>(&ops, &failure),
                });
            };
            list.unlift(popped);
            linearized.remove(popped);
            state = previous_state;
            linearized_max = previous_max;
            if ops[popped].1.completion.is_some() {
                completed_linearized -= 1;
            }
            entry = list.next[list.call_of_op[popped]];
        }
    }
}

fn record_failure<S: Clone>(
    list: &EntryList,
    stack: &[(usize, S, Option<usize>)],
    state: &S,
    blocking_entry: usize,
) -> Failure<S> {
    let mut candidates = Vec::new();
    let mut entry = list.next[list.head];
    while entry != blocking_entry && candidates.len() < EXPLANATION_CANDIDATES_MAX {
        if list.is_call[entry] && list.op[entry] != list.op[blocking_entry] {
            candidates.push(list.op[entry]);
        }
        entry = list.next[entry];
    }
    let tail_start = stack.len().saturating_sub(EXPLANATION_OPERATIONS_MAX);
    Failure {
        depth: stack.len(),
        tail: stack[tail_start..].iter().map(|(op, _, _)| *op).collect(),
        state: state.clone(),
        blocking: list.op[blocking_entry],
        candidates,
    }
}

fn describe<I: Debug, O: Debug>(index: usize, op: &Operation<I, O>) -> String {
    match &op.completion {
        Some(completion) => format!(
            "#{index} client {} {:?} [{}..{} ns] -> {:?}",
            op.client, op.input, op.invoke_ns, completion.complete_ns, completion.output
        ),
        None => format!(
            "#{index} client {} {:?} [{}.. ns] outcome unknown",
            op.client, op.input, op.invoke_ns
        ),
    }
}

fn explain<M: Model>(ops: &[Indexed<'_, M>], failure: &Failure<M::State>) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "no linearization exists. The longest partial linearization orders {} operation(s)",
        failure.depth
    );
    if failure.depth > failure.tail.len() {
        let _ = write!(text, " (the last {} shown)", failure.tail.len());
    }
    text.push(':');
    if failure.tail.is_empty() {
        text.push_str(" (none)");
    }
    for &op in &failure.tail {
        let _ = write!(text, "\n  {}", describe(ops[op].0, ops[op].1));
    }
    let blocking = ops[failure.blocking].1;
    let (_, model_output) = M::step(&failure.state, &blocking.input);
    let _ = write!(
        text,
        "\nAfter it the state is {:?}. Operation {} completed, so it must \
         take effect before the search can pass its completion, but from this state the model \
         answers {:?}.",
        failure.state,
        describe(ops[failure.blocking].0, blocking),
        model_output
    );
    if failure.candidates.is_empty() {
        text.push_str(" No other operation could take effect before it.");
    } else {
        text.push_str(
            " The other operations that could take effect first answer differently or lead to \
             configurations already shown to fail:",
        );
        for &op in &failure.candidates {
            let (_, output) = M::step(&failure.state, &ops[op].1.input);
            let _ = write!(
                text,
                "\n  {} (model answers {:?})",
                describe(ops[op].0, ops[op].1),
                output
            );
        }
    }
    text
}

/// A stored value: bytes, shown as an escaped byte string in explanations.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub Vec<u8>);

impl Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value(text.as_bytes().to_vec())
    }
}

impl From<&[u8]> for Value {
    fn from(bytes: &[u8]) -> Self {
        Value(bytes.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Value(bytes)
    }
}

/// Why an `Incr` failed (Pegasus answers `PERR_INVALID_ARGUMENT` to both,
/// and the value is unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum IncrError {
    /// The stored value is not empty and not a decimal i64.
    #[error("stored value is not an integer")]
    NotInteger,
    /// The sum does not fit in an i64.
    #[error("increment overflows i64")]
    Overflow,
}

/// An operation on one key, as the [`KvRegister`] model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvInput {
    /// set: store the value.
    Put(Value),
    /// get: read the value.
    Get,
    /// del: remove the record (succeeds whether or not it exists).
    Delete,
    /// incr: add to the stored decimal integer (missing or empty = 0) and
    /// store the sum in decimal.
    Incr(i64),
    /// check_and_set on the key itself: if the current value equals
    /// `expect` (`None`: the record must not exist), store `new`.
    CheckAndSet { expect: Option<Value>, new: Value },
}

/// What an operation on one key answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// `Put` or `Delete` succeeded.
    Written,
    /// `Get`'s answer (`None`: not found).
    Get(Option<Value>),
    /// `Incr`'s new value or error.
    Incr(Result<i64, IncrError>),
    /// Whether `CheckAndSet`'s check passed (and the value was set).
    CheckAndSet(bool),
}

impl KvInput {
    /// Whether `output` is of the kind this input answers with.
    pub fn is_answered_by(&self, output: &KvOutput) -> bool {
        matches!(
            (self, output),
            (KvInput::Put(_) | KvInput::Delete, KvOutput::Written)
                | (KvInput::Get, KvOutput::Get(_))
                | (KvInput::Incr(_), KvOutput::Incr(_))
                | (KvInput::CheckAndSet { .. }, KvOutput::CheckAndSet(_))
        )
    }
}

/// One operation of a key-value history: the record's key and the operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvOperation {
    /// The record the operation addresses; histories are checked per key.
    pub key: Key,
    /// The operation.
    pub operation: Operation<KvInput, KvOutput>,
}

/// The sequential model of one record: absent or holding a value. TTLs are
/// not modelled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvRegister;

impl KvRegister {
    fn parse_integer(value: &Value) -> Result<i64, IncrError> {
        if value.0.is_empty() {
            return Ok(0);
        }
        std::str::from_utf8(&value.0)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or(IncrError::NotInteger)
    }
}

impl Model for KvRegister {
    type State = Option<Value>;
    type Input = KvInput;
    type Output = KvOutput;

    fn init() -> Self::State {
        None
    }

    fn step(state: &Self::State, input: &Self::Input) -> (Self::State, Self::Output) {
        match input {
            KvInput::Put(value) => (Some(value.clone()), KvOutput::Written),
            KvInput::Get => (state.clone(), KvOutput::Get(state.clone())),
            KvInput::Delete => (None, KvOutput::Written),
            KvInput::Incr(delta) => {
                let base = state.as_ref().map_or(Ok(0), KvRegister::parse_integer);
                match base.and_then(|base| base.checked_add(*delta).ok_or(IncrError::Overflow)) {
                    Ok(sum) => (
                        Some(Value(sum.to_string().into_bytes())),
                        KvOutput::Incr(Ok(sum)),
                    ),
                    Err(error) => (state.clone(), KvOutput::Incr(Err(error))),
                }
            }
            KvInput::CheckAndSet { expect, new } => {
                if state == expect {
                    (Some(new.clone()), KvOutput::CheckAndSet(true))
                } else {
                    (state.clone(), KvOutput::CheckAndSet(false))
                }
            }
        }
    }

    fn is_read_only(input: &Self::Input) -> bool {
        matches!(input, KvInput::Get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    type KvOp = Operation<KvInput, KvOutput>;

    fn value(text: &str) -> Value {
        Value::from(text)
    }

    fn put(client: u64, invoke_ns: u64, complete_ns: u64, text: &str) -> KvOp {
        Operation::completed(
            client,
            invoke_ns,
            complete_ns,
            KvInput::Put(value(text)),
            KvOutput::Written,
        )
    }

    fn get(client: u64, invoke_ns: u64, complete_ns: u64, seen: Option<&str>) -> KvOp {
        Operation::completed(
            client,
            invoke_ns,
            complete_ns,
            KvInput::Get,
            KvOutput::Get(seen.map(value)),
        )
    }

    fn incr(client: u64, invoke_ns: u64, complete_ns: u64, delta: i64, sum: i64) -> KvOp {
        Operation::completed(
            client,
            invoke_ns,
            complete_ns,
            KvInput::Incr(delta),
            KvOutput::Incr(Ok(sum)),
        )
    }

    fn cas(
        client: u64,
        invoke_ns: u64,
        complete_ns: u64,
        expect: Option<&str>,
        new: &str,
        passed: bool,
    ) -> KvOp {
        Operation::completed(
            client,
            invoke_ns,
            complete_ns,
            KvInput::CheckAndSet {
                expect: expect.map(value),
                new: value(new),
            },
            KvOutput::CheckAndSet(passed),
        )
    }

    fn check(history: &[KvOp]) -> CheckResult {
        check_history::<KvRegister>(history, Budget::default()).expect("well-formed history")
    }

    fn assert_linearizable(history: &[KvOp]) {
        assert_eq!(check(history), CheckResult::Linearizable, "{history:#?}");
    }

    fn assert_not_linearizable(history: &[KvOp]) -> String {
        match check(history) {
            CheckResult::NotLinearizable { explanation } => explanation,
            other => panic!("expected NotLinearizable, got {other:?} for {history:#?}"),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        // A history without concurrency whose answers follow the model is accepted.
        assert_linearizable(&[
            get(1, 0, 1, None),
            put(1, 2, 3, "1"),
            get(2, 4, 5, Some("1")),
            cas(1, 6, 7, Some("1"), "2", true),
            cas(2, 8, 9, Some("1"), "3", false),
            get(1, 10, 11, Some("2")),
            Operation::completed(2, 12, 13, KvInput::Delete, KvOutput::Written),
            incr(1, 14, 15, 5, 5),
            incr(2, 16, 17, -7, -2),
            get(1, 18, 19, Some("-2")),
        ]);
    }

    #[test]
    fn empty_history_is_linearizable() {
        // A history with no operations (or only unknown ones) is trivially accepted.
        assert_linearizable(&[]);
        assert_linearizable(&[Operation::unknown(1, 5, KvInput::Put(value("x")))]);
    }

    #[test]
    fn concurrent_puts_may_take_effect_in_either_order() {
        // Two overlapping puts followed by reads seeing either value are both accepted.
        for last in ["1", "2"] {
            assert_linearizable(&[
                put(1, 0, 10, "1"),
                put(2, 5, 15, "2"),
                get(3, 20, 30, Some(last)),
            ]);
        }
    }

    #[test]
    fn read_concurrent_with_put_may_see_old_or_new_value() {
        // A get overlapping a put may return the value before or after it.
        for seen in [None, Some("1")] {
            assert_linearizable(&[put(1, 0, 10, "1"), get(2, 5, 8, seen)]);
        }
    }

    #[test]
    fn operations_touching_at_one_instant_are_concurrent() {
        // An operation invoked at the very nanosecond another completes may precede it.
        assert_linearizable(&[put(1, 0, 10, "1"), get(2, 10, 12, None)]);
    }

    #[test]
    fn unknown_write_that_took_effect_is_linearizable() {
        // A timed-out put whose value a later read observes is accepted.
        assert_linearizable(&[
            put(1, 0, 1, "1"),
            Operation::unknown(2, 2, KvInput::Put(value("2"))),
            get(3, 100, 101, Some("2")),
            get(3, 102, 103, Some("2")),
        ]);
    }

    #[test]
    fn unknown_write_that_did_not_take_effect_is_linearizable() {
        // A timed-out put that no read ever observes is accepted.
        assert_linearizable(&[
            put(1, 0, 1, "1"),
            Operation::unknown(2, 2, KvInput::Put(value("2"))),
            get(3, 100, 101, Some("1")),
            get(3, 102, 103, Some("1")),
        ]);
    }

    #[test]
    fn unknown_write_may_take_effect_long_after_its_invocation() {
        // A timed-out put may take effect after later operations completed, here between two reads.
        assert_linearizable(&[
            Operation::unknown(1, 0, KvInput::Put(value("2"))),
            put(2, 10, 11, "1"),
            get(3, 20, 21, Some("1")),
            get(3, 30, 31, Some("2")),
        ]);
    }

    #[test]
    fn unknown_read_is_ignored() {
        // An unknown-outcome get constrains nothing, whatever output it carries.
        let mut unknown_get = get(2, 0, 1, Some("never written"));
        unknown_get.completion = None;
        assert_linearizable(&[put(1, 0, 1, "1"), unknown_get, get(1, 2, 3, Some("1"))]);
    }

    #[test]
    fn stale_read_after_completed_write_is_rejected() {
        // A read invoked after a put completed must not return the older value.
        let explanation = assert_not_linearizable(&[
            put(1, 0, 10, "1"),
            put(1, 20, 30, "2"),
            get(2, 40, 50, Some("1")),
        ]);
        assert!(explanation.contains("#2 client 2"), "{explanation}");
    }

    #[test]
    fn read_of_value_never_written_is_rejected() {
        // A read returning a value no operation wrote is rejected, even concurrent with writes.
        assert_not_linearizable(&[
            put(1, 0, 10, "1"),
            get(2, 0, 10, Some("3")),
            put(3, 0, 10, "2"),
        ]);
    }

    #[test]
    fn reads_seeing_writes_in_opposite_orders_are_rejected() {
        // The classic: two clients observe two concurrent writes in opposite orders.
        assert_not_linearizable(&[
            put(1, 0, 100, "1"),
            put(2, 0, 100, "2"),
            get(3, 10, 20, Some("1")),
            get(3, 30, 40, Some("2")),
            get(4, 10, 20, Some("2")),
            get(4, 30, 40, Some("1")),
        ]);
    }

    #[test]
    fn lost_increment_is_rejected() {
        // Two concurrent increments by 1 from 0 cannot both answer 1.
        assert_not_linearizable(&[incr(1, 0, 10, 1, 1), incr(2, 0, 10, 1, 1)]);
        assert_linearizable(&[incr(1, 0, 10, 1, 2), incr(2, 0, 10, 1, 1)]);
    }

    #[test]
    fn check_and_set_succeeding_twice_from_one_value_is_rejected() {
        // Two CAS from the same expected value to different new values cannot both succeed.
        assert_not_linearizable(&[
            put(1, 0, 1, "a"),
            cas(2, 10, 20, Some("a"), "b", true),
            cas(3, 10, 20, Some("a"), "c", true),
        ]);
        assert_linearizable(&[
            put(1, 0, 1, "a"),
            cas(2, 10, 20, Some("a"), "b", true),
            cas(3, 10, 20, Some("a"), "c", false),
        ]);
    }

    #[test]
    fn read_of_value_written_after_read_completed_is_rejected() {
        // A read cannot see a write invoked only after the read completed.
        assert_not_linearizable(&[get(1, 0, 10, Some("1")), put(2, 11, 20, "1")]);
        assert_not_linearizable(&[
            get(1, 0, 10, Some("1")),
            Operation::unknown(2, 11, KvInput::Put(value("1"))),
        ]);
    }

    #[test]
    fn incr_follows_pegasus_rules() {
        // Incr treats missing and empty as 0, rejects non-integers and overflow, keeping the value.
        let empty = KvRegister::step(&Some(Value(Vec::new())), &KvInput::Incr(3));
        assert_eq!(empty, (Some(value("3")), KvOutput::Incr(Ok(3))));
        let missing = KvRegister::step(&None, &KvInput::Incr(-4));
        assert_eq!(missing, (Some(value("-4")), KvOutput::Incr(Ok(-4))));
        let text = KvRegister::step(&Some(value("abc")), &KvInput::Incr(1));
        assert_eq!(
            text,
            (
                Some(value("abc")),
                KvOutput::Incr(Err(IncrError::NotInteger))
            )
        );
        let max = Some(Value(i64::MAX.to_string().into_bytes()));
        let overflow = KvRegister::step(&max, &KvInput::Incr(1));
        assert_eq!(
            overflow,
            (max.clone(), KvOutput::Incr(Err(IncrError::Overflow)))
        );
    }

    #[test]
    fn check_and_set_with_no_expected_value_needs_a_missing_record() {
        // CAS expecting None passes only while the record does not exist.
        assert_linearizable(&[
            cas(1, 0, 1, None, "a", true),
            cas(1, 2, 3, None, "b", false),
            get(1, 4, 5, Some("a")),
        ]);
        assert_not_linearizable(&[put(1, 0, 1, "x"), cas(1, 2, 3, None, "a", true)]);
    }

    #[test]
    fn malformed_histories_are_errors() {
        // A completion before the invocation and an output of the wrong kind are reported as errors.
        let backwards = [put(1, 10, 5, "1")];
        assert_eq!(
            check_history::<KvRegister>(&backwards, Budget::default()),
            Err(HistoryError::CompleteBeforeInvoke {
                index: 0,
                invoke_ns: 10,
                complete_ns: 5
            })
        );
        let mismatched = [KvOperation {
            key: Key::new("h", "s"),
            operation: Operation::completed(1, 0, 1, KvInput::Get, KvOutput::Written),
        }];
        assert!(matches!(
            check_kv_history(&mismatched),
            Err(HistoryError::OutputMismatch { index: 0, .. })
        ));
    }

    fn on_key(key: &Key, operation: KvOp) -> KvOperation {
        KvOperation {
            key: key.clone(),
            operation,
        }
    }

    #[test]
    fn histories_are_checked_per_key() {
        // Operations on different keys do not constrain each other, and a violation on one key among many is found and named.
        let mut history = Vec::new();
        for k in 0..50u64 {
            let key = Key::new(format!("h{k}"), "s");
            let base = k * 3;
            history.push(on_key(&key, put(k, base, base + 1, &k.to_string())));
            history.push(on_key(
                &key,
                get(k + 100, base + 2, 1_000, Some(&k.to_string())),
            ));
        }
        assert_eq!(check_kv_history(&history), Ok(CheckResult::Linearizable));

        let bad_key = Key::new("h37", "s");
        history.push(on_key(&bad_key, put(999, 2_000, 2_001, "new")));
        history.push(on_key(&bad_key, get(999, 2_002, 2_003, Some("37"))));
        let bad_index = history.len() - 1;
        match check_kv_history(&history) {
            Ok(CheckResult::NotLinearizable { explanation }) => {
                assert!(
                    explanation.starts_with("key b\"h37\"/b\"s\""),
                    "{explanation}"
                );
                assert!(
                    explanation.contains(&format!("#{bad_index} client 999")),
                    "{explanation}"
                );
            }
            other => panic!("expected NotLinearizable, got {other:?}"),
        }
    }

    #[test]
    fn small_step_budget_gives_unknown() {
        // When the step budget runs out the verdict is Unknown, not a guess.
        let history: Vec<KvOp> = (0..20).map(|i| put(i, 0, 100, "1")).collect();
        let budget = Budget {
            steps_max: 5,
            ..Budget::default()
        };
        let verdict = check_history::<KvRegister>(&history, budget).unwrap();
        assert!(
            matches!(&verdict, CheckResult::Unknown(message) if message.contains("step budget")),
            "{verdict:?}"
        );
    }

    #[test]
    fn small_cache_budget_gives_unknown() {
        // When the cache budget runs out the verdict is Unknown.
        let history: Vec<KvOp> = (0..20).map(|i| put(i, 0, 100, "1")).collect();
        let budget = Budget {
            cache_bytes_max: 1,
            ..Budget::default()
        };
        let verdict = check_history::<KvRegister>(&history, budget).unwrap();
        assert!(
            matches!(&verdict, CheckResult::Unknown(message) if message.contains("cache budget")),
            "{verdict:?}"
        );
    }

    /// Random inputs over a small value domain, so that reads often collide.
    fn random_input(rng: &mut StdRng) -> KvInput {
        let domain = ["1", "2", "3"];
        let pick = |rng: &mut StdRng| value(domain[rng.random_range(0..domain.len())]);
        match rng.random_range(0..10) {
            0..=2 => KvInput::Put(pick(rng)),
            3..=5 => KvInput::Get,
            6 => KvInput::Delete,
            7 => KvInput::Incr(rng.random_range(1..=2)),
            _ => KvInput::CheckAndSet {
                expect: if rng.random_bool(0.3) {
                    None
                } else {
                    Some(pick(rng))
                },
                new: pick(rng),
            },
        }
    }

    /// A history generated from an actual sequential execution: operation
    /// `i` takes effect at `100 * (i + 1)` ns, inside an interval of random
    /// width around that point; a fraction `unknown_probability` of outcomes are
    /// unknown (half of them taking effect). Linearizable by construction.
    fn random_history(
        rng: &mut StdRng,
        ops_count: usize,
        clients: u64,
        spread_ns: u64,
        unknown_probability: f64,
    ) -> Vec<KvOp> {
        let mut state = KvRegister::init();
        let mut history = Vec::with_capacity(ops_count);
        for i in 0..ops_count {
            let point_ns = 100 * (i as u64 + 1) + spread_ns;
            let input = random_input(rng);
            let client = rng.random_range(0..clients);
            let invoke_ns = point_ns - rng.random_range(0..=spread_ns);
            if rng.random_bool(unknown_probability) {
                if rng.random_bool(0.5) {
                    state = KvRegister::step(&state, &input).0;
                }
                history.push(Operation::unknown(client, invoke_ns, input));
            } else {
                let (next, output) = KvRegister::step(&state, &input);
                state = next;
                let complete_ns = point_ns + rng.random_range(0..=spread_ns);
                history.push(Operation::completed(
                    client,
                    invoke_ns,
                    complete_ns,
                    input,
                    output,
                ));
            }
        }
        history
    }

    /// Whether some order of the completed operations and a subset of the
    /// unknown ones respects real time and the model: exhaustive, for
    /// histories of at most 7 operations.
    fn brute_force_linearizable(history: &[KvOp]) -> bool {
        assert!(history.len() <= 7);
        let unknown: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].completion.is_none())
            .collect();
        for subset in 0u32..(1 << unknown.len()) {
            let included: Vec<usize> = (0..history.len())
                .filter(|&i| match unknown.iter().position(|&u| u == i) {
                    Some(bit) => subset & (1 << bit) != 0,
                    None => true,
                })
                .collect();
            let mut order = included.clone();
            if any_permutation_fits(history, &mut order, 0) {
                return true;
            }
        }
        false
    }

    fn any_permutation_fits(history: &[KvOp], order: &mut Vec<usize>, fixed: usize) -> bool {
        if fixed == order.len() {
            return order_fits(history, order);
        }
        for i in fixed..order.len() {
            order.swap(fixed, i);
            if any_permutation_fits(history, order, fixed + 1) {
                return true;
            }
            order.swap(fixed, i);
        }
        false
    }

    fn order_fits(history: &[KvOp], order: &[usize]) -> bool {
        for (position, &later) in order.iter().enumerate() {
            for &earlier in &order[..position] {
                // `later` must not have completed strictly before `earlier` was invoked.
                if let Some(completion) = &history[later].completion {
                    if completion.complete_ns < history[earlier].invoke_ns {
                        return false;
                    }
                }
            }
        }
        let mut state = KvRegister::init();
        for &op in order {
            let (next, output) = KvRegister::step(&state, &history[op].input);
            if let Some(completion) = &history[op].completion {
                if completion.output != output {
                    return false;
                }
            }
            state = next;
        }
        true
    }

    #[test]
    fn random_histories_agree_with_brute_force() {
        // Histories from real sequential executions are accepted, and after corrupting one read the checker agrees with exhaustive search.
        let mut rng = StdRng::seed_from_u64(0x6d61_726b_6162);
        let mut rejected = 0;
        for round in 0..600 {
            let ops_count = rng.random_range(1..=7);
            let history = random_history(&mut rng, ops_count, 3, 250, 0.15);
            assert_eq!(check(&history), CheckResult::Linearizable, "round {round}");
            assert!(brute_force_linearizable(&history), "round {round}");

            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| history[i].input == KvInput::Get && history[i].completion.is_some())
                .collect();
            if reads.is_empty() {
                continue;
            }
            let mut mutated = history.clone();
            let read = reads[rng.random_range(0..reads.len())];
            let completion = mutated[read].completion.as_mut().unwrap();
            let choices = [None, Some(value("1")), Some(value("2")), Some(value("3"))];
            let original = completion.output.clone();
            let replacement = choices
                .iter()
                .cycle()
                .skip(rng.random_range(0..choices.len()))
                .map(|seen| KvOutput::Get(seen.clone()))
                .find(|output| *output != original)
                .unwrap();
            completion.output = replacement;
            let expected = brute_force_linearizable(&mutated);
            let verdict = check(&mutated);
            assert_eq!(
                verdict == CheckResult::Linearizable,
                expected,
                "round {round}: checker {verdict:?}, brute force {expected}, history {mutated:#?}"
            );
            assert!(!matches!(verdict, CheckResult::Unknown(_)), "round {round}");
            if !expected {
                rejected += 1;
            }
        }
        assert!(
            rejected > 50,
            "too few mutations were violations: {rejected}"
        );
    }

    #[test]
    fn big_history_finishes_within_budget() {
        // A 5,000-operation concurrent history on one key is decided within the default budget.
        let mut rng = StdRng::seed_from_u64(7);
        let history = random_history(&mut rng, 5_000, 8, 400, 0.15);
        let started = std::time::Instant::now();
        assert_eq!(check(&history), CheckResult::Linearizable);
        let elapsed = started.elapsed();
        assert!(elapsed.as_secs() < 30, "took {elapsed:?}");
    }
}
