//! Markab's shard-per-core runtime: machine topology and shard plan, per-shard tuning files,
//! pinned glommio executors joined by a bounded channel mesh, and one listener per shard.
//!
//! This crate knows nothing of replication, tables, partitions or storage engines; it hands each
//! shard a [`ShardContext`] and runs the caller's `serve` future on it. See `docs/shards.md`.
//!
//! ```
//! use markab_shards::{load_tuning, ListenSpec, ShardContext, ShardCount, ShardRuntime, Topology};
//!
//! let topology = Topology::detect()?;
//! let plan = topology.plan(ShardCount::Count(1))?;
//! // A missing tuning directory means built-in defaults.
//! let tunings = load_tuning(std::path::Path::new("no-such-tuning-dir"), &plan.cpus())?;
//! let listen = ListenSpec { host: "127.0.0.1".parse()?, port_base: 0 };
//! let serve = |context: ShardContext<()>| async move {
//!     // A real node accepts on `context.listener` and serves requests until stopped.
//!     context.stop.stopped().await;
//! };
//! let runtime = ShardRuntime::start(&plan, tunings, listen, false, serve)?;
//! println!("shard 0 listens on {}", runtime.addresses()[0]);
//! runtime.stop();
//! runtime.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
pub mod listener;
pub mod log;
pub mod runtime;
pub mod topology;
pub mod tuning;

pub use error::ShardsError;
pub use listener::{bind_listener, configure_stream};
pub use runtime::{
    ListenSpec, Mesh, ShardContext, ShardRuntime, StopHandle, StopSignal, STOP_POLL_INTERVAL_MS,
};
pub use topology::{report, Core, NumaNode, ShardCount, ShardPlan, ShardSlot, Topology};
pub use tuning::{load_tuning, Tuning, TuningError};
