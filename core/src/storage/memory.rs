//! [`MemoryEngine`]: a `BTreeMap` behind a `RefCell`, the engine of the
//! deterministic simulator and of fast tests.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ops::Bound;

use super::{Direction, ScanControl, ScanVisitor, StorageEngine, WriteBatch, WriteOp};
use crate::wire::message::{ErrorCode, OpError};

/// Every raw record of a [`MemoryEngine`], by raw key.
pub type MemoryRecords = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory ordered engine. Single-threaded (`!Sync`); a write from
/// inside a scan visitor is refused with `Internal` rather than panicking.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    records: RefCell<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// The last decree written; memory has no separate "flushed" state, so
    /// it is also the flushed decree.
    decree: Cell<i64>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> MemoryEngine {
        MemoryEngine::default()
    }

    /// Number of raw records stored (expired ones included).
    pub fn len(&self) -> usize {
        self.records
            .try_borrow()
            .map(|records| records.len())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every raw record and the last decree written: the
    /// in-memory counterpart of a checkpoint (the simulator ships it to a
    /// learner). `None` while a scan visitor holds the records.
    pub fn snapshot(&self) -> Option<(MemoryRecords, i64)> {
        let records = self.records.try_borrow().ok()?;
        Some((records.clone(), self.decree.get()))
    }

    /// An engine holding exactly `records`, with `decree` as its applied
    /// (and flushed) decree: a restored [`MemoryEngine::snapshot`].
    pub fn from_snapshot(records: MemoryRecords, decree: i64) -> MemoryEngine {
        MemoryEngine {
            records: RefCell::new(records),
            decree: Cell::new(decree),
        }
    }
}

fn reentered() -> OpError {
    OpError::new(
        ErrorCode::Internal,
        "memory engine re-entered: a write was attempted from inside a scan visitor",
    )
}

impl StorageEngine for MemoryEngine {
    fn get(&self, raw_key: &[u8]) -> Result<Option<Vec<u8>>, OpError> {
        let records = self.records.try_borrow().map_err(|_| reentered())?;
        Ok(records.get(raw_key).cloned())
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), OpError> {
        let mut records = self.records.try_borrow_mut().map_err(|_| reentered())?;
        for op in batch.ops() {
            match op {
                WriteOp::Put { raw_key, raw_value } => {
                    records.insert(raw_key.clone(), raw_value.clone());
                }
                WriteOp::Delete { raw_key } => {
                    records.remove(raw_key);
                }
            }
        }
        if let Some(decree) = batch.decree() {
            self.decree.set(decree);
        }
        Ok(())
    }

    fn applied_decree(&self) -> Result<i64, OpError> {
        Ok(self.decree.get())
    }

    fn flushed_decree(&self) -> Result<i64, OpError> {
        Ok(self.decree.get())
    }

    fn flush(&self) -> Result<(), OpError> {
        Ok(())
    }

    fn scan(
        &self,
        lower_inclusive: &[u8],
        upper_exclusive: Option<&[u8]>,
        direction: Direction,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), OpError> {
        if upper_exclusive.is_some_and(|upper| upper <= lower_inclusive) {
            return Ok(());
        }
        let records = self.records.try_borrow().map_err(|_| reentered())?;
        let upper = upper_exclusive.map_or(Bound::Unbounded, Bound::Excluded);
        let range = records.range::<[u8], _>((Bound::Included(lower_inclusive), upper));
        let mut step = |(key, value): (&Vec<u8>, &Vec<u8>)| visit(key, value);
        match direction {
            Direction::Forward => {
                for entry in range {
                    if step(entry)? == ScanControl::Stop {
                        break;
                    }
                }
            }
            Direction::Reverse => {
                for entry in range.rev() {
                    if step(entry)? == ScanControl::Stop {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A snapshot restores to an engine with the same records and decree,
    // independent of the original afterwards.
    #[test]
    fn snapshot_round_trips() {
        let engine = MemoryEngine::new();
        let mut batch = WriteBatch::default();
        batch.put(b"k".to_vec(), b"v".to_vec());
        batch.set_decree(7);
        engine.write(&batch).unwrap();
        let (records, decree) = engine.snapshot().unwrap();
        let restored = MemoryEngine::from_snapshot(records, decree);
        let mut delete = WriteBatch::default();
        delete.delete(b"k".to_vec());
        engine.write(&delete).unwrap();
        assert_eq!(restored.get(b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(restored.applied_decree().unwrap(), 7);
        assert_eq!(engine.get(b"k").unwrap(), None);
    }
}
