//! PacificA replication (docs/replication.md).
//!
//! - [`core`]: the sans-IO replica state machine a shard runs per partition
//!   replica (and the simulator under `tests/sim/` runs for proof);
//! - [`messages`]: its inputs, outputs, peer messages and errors;
//! - [`config`]: timing settings with the grace > lease > 2 x beacon check;
//! - [`reconfig`]: meta's pure decisions on membership changes, the guardian.
//!
//! Learning (learners, the guardian) is here and in the simulator; the
//! wiring into the real server comes later.

pub mod config;
pub mod core;
pub mod messages;
pub mod reconfig;
