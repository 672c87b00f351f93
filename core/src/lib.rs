//! Markab's sans-IO core: everything that decides, and nothing that does
//! I/O. The replica core ([`replication`]), meta's state machine and its
//! store seam ([`meta`]), Pegasus's data operations over any ordered
//! key-value engine with an in-memory engine ([`storage`]), key and value
//! encodings ([`key`]), table rules ([`table`]) and the linearizability
//! checker ([`check`]).
//!
//! The crate depends on neither RocksDB, glommio nor tokio, so Cargo itself
//! keeps it free of I/O, and `cargo test -p markab-core` — the unit tests
//! and the deterministic simulator — builds without compiling RocksDB. The
//! node, meta's server, the client and the tools (crate `markab`) depend on
//! it. See docs/DESIGN.md.

pub mod check;
pub mod host;
pub mod key;
pub mod meta;
pub mod replication;
pub mod storage;
pub mod table;
pub mod wall_clock;

pub use markab_wire as wire;
