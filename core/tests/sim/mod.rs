//! The deterministic simulator of PacificA replication (docs/replication.md,
//! "Simulator"): the production replica host (`markab_core::host`, the
//! code a node runs: `ReplicaCore`, `Partition`, replay, copies) and the
//! production meta under a seeded network, disk and clock — only the IO is
//! swapped — with invariants checked after every event and the client
//! history checked for linearizability.

pub mod invariants;
pub mod meta;
pub mod model;
pub mod node;
pub mod world;

use markab_core::check::{check_kv_history, CheckResult, KvOperation, Operation};

use world::{sim_key, World};

/// What one seed did, for the summary line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub events: u64,
    pub operations: usize,
    pub completed: usize,
    pub committed: usize,
    pub crashes: u32,
    pub reconfigurations: usize,
    pub final_reads: usize,
    pub promotions: u32,
    /// Learners promoted to secondary.
    pub learner_promotions: u32,
    /// Learners answered from a primary's log.
    pub log_learns: u32,
    /// Copies installed by learners.
    pub checkpoint_installs: u32,
    /// Chunks of copies sent.
    pub copy_chunks: u32,
    /// Meta crashes (each followed by a restart from its store).
    pub meta_crashes: u32,
    /// Nodes paused past their lease.
    pub pauses: u32,
    /// Crashes that tore a log record.
    pub torn_tails: u32,
    /// Ballots that could not be recorded (the node was restarted).
    pub ballot_failures: u32,
    /// Log truncations.
    pub truncations: u32,
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
        crashes: summary.crashes,
        reconfigurations: summary.reconfigurations,
        final_reads: summary.final_reads,
        promotions: summary.promotions,
        learner_promotions: summary.learner_promotions,
        log_learns: summary.log_learns,
        checkpoint_installs: summary.checkpoint_installs,
        copy_chunks: summary.copy_chunks,
        meta_crashes: summary.meta_crashes,
        pauses: summary.pauses,
        torn_tails: summary.torn_tails,
        ballot_failures: summary.ballot_failures,
        truncations: summary.truncations,
        history_hash: invariants::payload_hash(format!("{:?}", summary.history).as_bytes()),
    })
}
