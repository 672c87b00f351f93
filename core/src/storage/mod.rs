//! Storage: the raw ordered key-value engine seam, its in-memory engine,
//! and Pegasus's data operations on one partition replica ([`Partition`]),
//! written once over any [`StorageEngine`]. The RocksDB engine is the node
//! crate's (`markab::storage::RocksEngine`).
//!
//! See docs/storage.md for byte layouts, TTL rules and operation semantics.
//!
//! ```
//! use markab_core::storage::{MemoryEngine, Partition, StorageLimits};
//! use markab_core::wire::message::{Key, Request, ResponseBody};
//! let partition = Partition::new(MemoryEngine::new(), StorageLimits::default());
//! let set = Request::Set { key: Key::new("h", "s"), value: b"v".to_vec(), ttl_seconds: 0 };
//! assert_eq!(partition.execute(&set, 1_000), Ok(ResponseBody::Done));
//! let get = Request::Get(Key::new("h", "s"));
//! assert_eq!(partition.execute(&get, 1_000), Ok(ResponseBody::Value(b"v".to_vec())));
//! ```

pub mod copy;
mod memory;
mod partition;
mod scan;
pub mod timetag;

pub use memory::{MemoryDurable, MemoryEngine, MemoryRecords};
pub use partition::Partition;

use crate::wire::message::{ErrorCode, OpError, Record};

/// What a scan visitor wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanControl {
    /// Visit the next record.
    Continue,
    /// End the scan here.
    Stop,
}

/// Which way a scan walks its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Ascending raw-key order.
    Forward,
    /// Descending raw-key order.
    Reverse,
}

/// A visitor called with each `(raw_key, raw_value)` of a scan.
pub type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ScanControl, OpError> + 'a;

/// A raw ordered byte-key store: the seam between Pegasus's operations and
/// the engine underneath (RocksDB in production, [`MemoryEngine`] in the
/// simulator). Keys order bytewise. Engines are used from one thread (a
/// shard) and take `&self`.
pub trait StorageEngine {
    /// The raw value stored under `raw_key`, if any.
    fn get(&self, raw_key: &[u8]) -> Result<Option<Vec<u8>>, OpError>;

    /// Applies every operation of `batch`, in order, atomically: all or none.
    fn write(&self, batch: &WriteBatch) -> Result<(), OpError>;

    /// Calls `visit` with each record whose key is in
    /// `[lower_inclusive, upper_exclusive)` (`None` = unbounded above), in
    /// `direction` order, until the range ends, `visit` returns
    /// [`ScanControl::Stop`], or `visit` fails (its error is returned).
    /// `visit` must not write to the same engine.
    fn scan(
        &self,
        lower_inclusive: &[u8],
        upper_exclusive: Option<&[u8]>,
        direction: Direction,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), OpError>;

    /// The decree of the last batch written with one (0 if none): what the
    /// engine holds, flushed or not.
    fn applied_decree(&self) -> Result<i64, OpError>;

    /// The decree of the last batch that is durable in the engine itself
    /// (for RocksDB with its WAL off: flushed to SST files). After a crash
    /// the engine comes back with exactly this decree applied
    /// (**flushed-decree-consistent**).
    fn flushed_decree(&self) -> Result<i64, OpError>;

    /// Makes everything written so far durable in the engine itself.
    fn flush(&self) -> Result<(), OpError>;

    /// The engine holds partition `index` of `count` (after a split it may
    /// still hold records of keys now another partition's): it drops the
    /// records of other partitions' keys — RocksDB in a background
    /// compaction, which its compaction filter also does from then on.
    /// Cheap when there is nothing to drop since the last call for the
    /// same count.
    fn drop_foreign(&self, count: u32, index: u32) -> Result<(), OpError>;
}

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        raw_key: Vec<u8>,
        raw_value: Vec<u8>,
    },
    Delete {
        raw_key: Vec<u8>,
    },
}

/// An ordered list of puts and deletes applied atomically by
/// [`StorageEngine::write`]; a later operation on the same key wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
    /// The decree this batch applies, stored atomically with it
    /// (**decree-with-data**); `None` for batches outside the log.
    decree: Option<i64>,
    /// The cluster this batch's writes came from by duplication; `None`
    /// for local writes. Travels in the log payload, so that a shipper
    /// never ships it back (**dup-no-loop**).
    dup_source: Option<u8>,
}

/// Tags of a [`WriteBatch`]'s encoded operations.
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// The first word of the payload of a batch received by duplication, in
/// place of the operation count (which no batch reaches).
const DUP_SOURCE_MARK: u32 = u32::MAX;

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Appends a put of `raw_value` under `raw_key`.
    pub fn put(&mut self, raw_key: Vec<u8>, raw_value: Vec<u8>) {
        self.ops.push(WriteOp::Put { raw_key, raw_value });
    }

    /// Appends a delete of `raw_key`.
    pub fn delete(&mut self, raw_key: Vec<u8>) {
        self.ops.push(WriteOp::Delete { raw_key });
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Marks the batch as applying `decree`.
    pub fn set_decree(&mut self, decree: i64) {
        self.decree = Some(decree);
    }

    /// The decree the batch applies, if any.
    pub fn decree(&self) -> Option<i64> {
        self.decree
    }

    /// Marks the batch as received by duplication from cluster
    /// `cluster_id`.
    pub fn set_dup_source(&mut self, cluster_id: u8) {
        self.dup_source = Some(cluster_id);
    }

    /// The cluster the batch came from by duplication; `None` for a local
    /// write.
    pub fn dup_source(&self) -> Option<u8> {
        self.dup_source
    }

    /// The mutation-log payload of this batch (its decree travels in the
    /// record header): `u32 count`, then per operation `u8 tag` (1 put,
    /// 2 delete), `u32 key length`, key, and for puts `u32 value length`,
    /// value; integers little-endian. Values carry absolute expire times,
    /// so replaying a payload twice gives the same state. A batch received
    /// by duplication starts with `u32 0xFFFF_FFFF` and `u8` the source
    /// cluster id, then the rest as above.
    pub fn encode(&self) -> Vec<u8> {
        let bytes: usize = self
            .ops
            .iter()
            .map(|op| match op {
                WriteOp::Put { raw_key, raw_value } => 9 + raw_key.len() + raw_value.len(),
                WriteOp::Delete { raw_key } => 5 + raw_key.len(),
            })
            .sum();
        let mut out = Vec::with_capacity(9 + bytes);
        if let Some(cluster_id) = self.dup_source {
            out.extend_from_slice(&DUP_SOURCE_MARK.to_le_bytes());
            out.push(cluster_id);
        }
        out.extend_from_slice(&(self.ops.len() as u32).to_le_bytes());
        for op in &self.ops {
            match op {
                WriteOp::Put { raw_key, raw_value } => {
                    out.push(OP_PUT);
                    out.extend_from_slice(&(raw_key.len() as u32).to_le_bytes());
                    out.extend_from_slice(raw_key);
                    out.extend_from_slice(&(raw_value.len() as u32).to_le_bytes());
                    out.extend_from_slice(raw_value);
                }
                WriteOp::Delete { raw_key } => {
                    out.push(OP_DELETE);
                    out.extend_from_slice(&(raw_key.len() as u32).to_le_bytes());
                    out.extend_from_slice(raw_key);
                }
            }
        }
        out
    }

    /// Decodes a payload written by [`WriteBatch::encode`].
    pub fn decode(mut payload: &[u8]) -> Result<WriteBatch, OpError> {
        fn take<'a>(payload: &mut &'a [u8], bytes: usize) -> Result<&'a [u8], OpError> {
            if payload.len() < bytes {
                return Err(storage_error("decoding a log payload", "it is truncated"));
            }
            let (head, tail) = payload.split_at(bytes);
            *payload = tail;
            Ok(head)
        }
        fn take_u32(payload: &mut &[u8]) -> Result<usize, OpError> {
            let bytes = take(payload, 4)?;
            Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
        }
        let mut batch = WriteBatch::new();
        let mut count = take_u32(&mut payload)?;
        if count == DUP_SOURCE_MARK as usize {
            batch.set_dup_source(take(&mut payload, 1)?[0]);
            count = take_u32(&mut payload)?;
        }
        for _ in 0..count {
            let tag = take(&mut payload, 1)?[0];
            let key_bytes = take_u32(&mut payload)?;
            let raw_key = take(&mut payload, key_bytes)?.to_vec();
            match tag {
                OP_PUT => {
                    let value_bytes = take_u32(&mut payload)?;
                    let raw_value = take(&mut payload, value_bytes)?.to_vec();
                    batch.put(raw_key, raw_value);
                }
                OP_DELETE => batch.delete(raw_key),
                other => {
                    return Err(storage_error(
                        "decoding a log payload",
                        format!("unknown operation tag {other}"),
                    ))
                }
            }
        }
        if !payload.is_empty() {
            return Err(storage_error(
                "decoding a log payload",
                format!("{} bytes follow the last operation", payload.len()),
            ));
        }
        Ok(batch)
    }
}

/// Server-side bounds on the work of one request. Defaults are Pegasus's
/// (pegasus.md §1.2) where Pegasus has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageLimits {
    /// Most records one multi_get returns (default 3,000, Pegasus's
    /// `rocksdb_multi_get_max_iteration_count`). Requests asking for more,
    /// or for `<= 0`, get this.
    pub multi_get_count_max: usize,
    /// Most key+value bytes one multi_get returns (default 30 MiB, Pegasus's
    /// `rocksdb_multi_get_max_iteration_size`).
    pub multi_get_bytes_max: usize,
    /// Most records a range multi_get examines (matching or not, live or
    /// expired) before answering `incomplete` (default 30,000).
    pub multi_get_examined_max: usize,
    /// Most records one scan batch returns (default 1,000, Pegasus's
    /// `rocksdb_max_iteration_count`); larger batch sizes are capped.
    pub scan_batch_max: usize,
    /// Most records one scan batch examines (matching or not) before it
    /// returns early with a resume key (default 10,000), so a filter that
    /// matches nothing cannot pin the shard.
    pub scan_examined_max: usize,
    /// Most records one sortkey_count examines; past it the answer is -1,
    /// as Pegasus answers when its iteration limit is hit (default 1,000,000).
    pub sortkey_count_examined_max: usize,
}

impl Default for StorageLimits {
    fn default() -> StorageLimits {
        StorageLimits {
            multi_get_count_max: 3_000,
            multi_get_bytes_max: 30 << 20,
            multi_get_examined_max: 30_000,
            scan_batch_max: 1_000,
            scan_examined_max: 10_000,
            sortkey_count_examined_max: 1_000_000,
        }
    }
}

/// One batch of a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanBatch {
    /// The matching records of this batch in engine order (empty with
    /// `only_return_count`).
    pub records: Vec<Record>,
    /// How many records this batch matched.
    pub count: i64,
    /// The raw key to continue after; `None` = the scan is complete.
    pub resume_after: Option<Vec<u8>>,
}

/// A `StorageError` naming what failed.
pub fn storage_error(what: &str, detail: impl std::fmt::Display) -> OpError {
    OpError::new(ErrorCode::StorageError, format!("{what}: {detail}"))
}
