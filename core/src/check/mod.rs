//! Correctness checkers for histories recorded by the simulator and by tests.
//!
//! [`linearizability`] decides whether a concurrent history of operations
//! (each with an invocation time, a completion time or an unknown outcome,
//! an input and an output) could have come from an atomic, sequential
//! execution of a model; see docs/linearizability.md.
//!
//! [`counter`] and [`set`] check the end state of a fault-injection run
//! against what its clients were told (an increment-only counter, a
//! grow-only set); [`shrink`] cuts a non-linearizable history down to a
//! 1-minimal one for reports.

pub mod counter;
pub mod linearizability;
pub mod set;
pub mod shrink;

pub use counter::{check_counter, CounterIncr, CounterReport, CounterViolation, OpRef, Outcome};
pub use linearizability::{
    check_history, check_kv_history, check_kv_history_with_budget, Budget, CheckResult, Completion,
    HistoryError, IncrError, KvInput, KvOperation, KvOutput, KvRegister, Model, Operation, Value,
};
pub use set::{check_set, SetAdd, SetReport, SetViolation};
pub use shrink::{
    shrink_history, shrink_history_bounded, shrink_kv_history, shrink_kv_history_bounded,
    ShrinkModel, Shrunk, SHRINK_CHECKS_MAX,
};
