//! Markab: a distributed, strongly consistent, low-latency key-value store.
//!
//! The Apache Pegasus design — tables of `(hash_key, sort_key) -> value`
//! records with TTL, hash partitioning, RocksDB underneath — rebuilt as a
//! thread-per-core server. See README.md and docs/DESIGN.md.

pub mod backup;
pub mod bench;
pub mod chaos;
pub mod client;
pub mod clock;
pub mod config;
pub mod dup_lag;
pub mod failover;
pub mod meta;
pub mod metrics;
pub mod onebox;
pub mod redis_proxy;
pub mod server;
pub mod shell;
pub mod storage;

pub use markab_core::{check, host, key, replication, table};
pub use markab_wire as wire;
