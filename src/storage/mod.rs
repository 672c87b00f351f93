//! Storage: Pegasus's data operations over any ordered key-value engine
//! and the in-memory engine (`markab_core::storage`, re-exported here), and
//! the RocksDB engine the node runs ([`RocksEngine`], [`ShardStorage`]).
//!
//! See docs/storage.md for byte layouts, TTL rules and operation semantics.

mod rocks;

#[cfg(test)]
mod partition_tests;

pub use markab_core::storage::*;
pub use rocks::{
    checkpoint_decree, is_corrupted, set_checkpoint_decree, Checkpointer, RocksEngine,
    ShardStorage, StorageTuning,
};
