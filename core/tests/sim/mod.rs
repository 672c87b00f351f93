//! The deterministic simulator of PacificA replication (docs/replication.md,
//! "Simulator"): the production replica host (`markab_core::host`, the
//! code a node runs: `ReplicaCore`, `Partition`, replay, copies) and the
//! production meta under a seeded network, disk and clock — only the IO is
//! swapped — with invariants checked after every event and the client
//! history checked for linearizability.

pub mod etcd;
pub mod invariants;
pub mod meta;
pub mod model;
pub mod node;
pub mod world;

use markab_core::check::{check_kv_history, CheckResult, KvOperation, Operation};

use world::{sim_key, Counters, World};

/// What one seed did, for the summary line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub events: u64,
    pub operations: usize,
    pub completed: usize,
    pub committed: usize,
    pub reconfigurations: usize,
    pub final_reads: usize,
    pub counters: Counters,
    /// A hash of the whole recorded history: equal runs give equal hashes.
    pub history_hash: u64,
}

/// Runs one seed; `Err` names the violated invariant (or the
/// non-linearizable operations) with a trace tail.
pub fn run_seed(seed: u64, verbose: bool) -> Result<SeedReport, String> {
    let summary = World::new(seed, verbose).run()?;
    let operations: Vec<KvOperation> = summary
        .history
        .iter()
        .map(|op| KvOperation {
            key: sim_key(op.key_index),
            operation: match &op.complete {
                Some((complete_ns, output)) => Operation::completed(
                    op.client as u64,
                    op.invoke_ns,
                    *complete_ns,
                    op.input.clone(),
                    output.clone(),
                ),
                None => Operation::unknown(op.client as u64, op.invoke_ns, op.input.clone()),
            },
        })
        .collect();
    let verdict = check_kv_history(&operations).map_err(|e| format!("malformed history: {e}"))?;
    // An inconclusive verdict is a failure, not a pass: the run proved
    // nothing (the checker's budget bounds the search; a seed that exhausts
    // it needs a smaller history or a larger budget).
    match verdict {
        CheckResult::Linearizable => {}
        CheckResult::Unknown(reason) => {
            return Err(format!("linearizability check inconclusive: {reason}"))
        }
        CheckResult::NotLinearizable { explanation } => {
            return Err(format!("linearizability: {explanation}"))
        }
    }
    Ok(SeedReport {
        events: summary.events,
        operations: operations.len(),
        completed: summary
            .history
            .iter()
            .filter(|op| op.complete.is_some())
            .count(),
        committed: summary.committed.values().sum(),
        reconfigurations: summary.reconfigurations,
        final_reads: summary.final_reads,
        counters: summary.counters,
        history_hash: invariants::payload_hash(format!("{:?}", summary.history).as_bytes()),
    })
}
