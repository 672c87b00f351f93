//! The error type of the shard runtime: topology, planning, binding and executor failures.

use std::net::SocketAddr;

use crate::tuning::TuningError;

/// Everything that can go wrong while detecting the machine, planning shards or running
/// executors. Every message names the thing that failed (a cpu, a shard, an address).
#[derive(Debug, thiserror::Error)]
pub enum ShardsError {
    /// hwloc could not build the machine's topology.
    #[error("cannot detect the CPU topology with hwloc: {reason}")]
    TopologyDetect {
        /// hwloc's own description of the failure.
        reason: String,
    },
    /// `sched_getaffinity` failed.
    #[error("cannot read this process's CPU affinity (sched_getaffinity): {source}")]
    Affinity {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A topology (detected or given) is unusable: no cores, a core without cpus, a cpu in two
    /// cores, a core on an unknown NUMA node.
    #[error("invalid topology: {reason}")]
    InvalidTopology {
        /// What is wrong with it.
        reason: String,
    },
    /// A plan asked for zero shards.
    #[error("a node needs at least one shard (0 requested)")]
    ZeroShards,
    /// A plan asked for more shards than this process has cpus.
    #[error(
        "{requested} shards requested but this process may only use {cpus} cpus \
         on {cores} cores (available cpus: {available})"
    )]
    TooManyShards {
        /// Shards requested.
        requested: usize,
        /// Usable cores.
        cores: usize,
        /// Usable cpus (hardware threads).
        cpus: usize,
        /// The usable cpu ids, as a list.
        available: String,
    },
    /// An explicit cpu list named a cpu that this process may not use or that does not exist.
    #[error("cpu {cpu} is not available to this process (available cpus: {available})")]
    UnknownCpu {
        /// The cpu that was asked for.
        cpu: usize,
        /// The usable cpu ids, as a list.
        available: String,
    },
    /// An explicit cpu list named a cpu twice.
    #[error("cpu {cpu} is listed twice; each shard needs its own cpu")]
    DuplicateCpu {
        /// The repeated cpu.
        cpu: usize,
    },
    /// The number of tunings given to the runtime does not match the plan.
    #[error("{tunings} tunings given for a plan of {shards} shards; need one per shard")]
    TuningCount {
        /// Tunings given.
        tunings: usize,
        /// Shards in the plan.
        shards: usize,
    },
    /// A tuning given to the runtime is invalid.
    #[error(transparent)]
    Tuning(#[from] TuningError),
    /// A listener could not be created or bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `port_base + shard` does not fit in a port number.
    #[error("shard {shard} would listen on port {port_base} + {shard}, which is above 65535")]
    PortOverflow {
        /// The shard.
        shard: usize,
        /// The base port of the node.
        port_base: u16,
    },
    /// The executor thread of a shard could not be created.
    #[error("cannot start the executor of shard {shard} (cpu {cpu:?}): {reason}")]
    Spawn {
        /// The shard.
        shard: usize,
        /// The cpu it was to be pinned to (None when unpinned).
        cpu: Option<usize>,
        /// glommio's description of the failure.
        reason: String,
    },
    /// A shard could not join the channel mesh.
    #[error("shard {shard} cannot join the channel mesh: {reason}")]
    Mesh {
        /// The shard.
        shard: usize,
        /// What went wrong.
        reason: String,
    },
    /// A shard did not report that it was listening within the start timeout.
    #[error("shard {shard} did not start listening within {timeout_ms} ms")]
    StartTimeout {
        /// The first shard that had not reported.
        shard: usize,
        /// The timeout.
        timeout_ms: u64,
    },
    /// A shard stopped before it reported that it was listening (another shard failed, or its
    /// executor could not be built).
    #[error("shard {shard} stopped before it started listening: {reason}")]
    StartAborted {
        /// The shard.
        shard: usize,
        /// Why.
        reason: String,
    },
    /// A shard's executor panicked.
    #[error("shard {shard} panicked: {message}")]
    ShardPanicked {
        /// The shard.
        shard: usize,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// A shard's executor ended with an error.
    #[error("shard {shard} failed: {reason}")]
    ShardFailed {
        /// The shard.
        shard: usize,
        /// glommio's description of the failure.
        reason: String,
    },
}
