//! Correctness checkers for histories recorded by the simulator and by tests.
//!
//! [`linearizability`] decides whether a concurrent history of operations
//! (each with an invocation time, a completion time or an unknown outcome,
//! an input and an output) could have come from an atomic, sequential
//! execution of a model; see docs/linearizability.md.

pub mod linearizability;

pub use linearizability::{
    check_history, check_kv_history, check_kv_history_with_budget, Budget, CheckResult, Completion,
    HistoryError, IncrError, KvInput, KvOperation, KvOutput, KvRegister, Model, Operation, Value,
};
