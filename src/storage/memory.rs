//! [`MemoryEngine`]: a `BTreeMap` behind a `RefCell`, the engine of the
//! deterministic simulator and of fast tests.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ops::Bound;

use super::{Direction, ScanControl, ScanVisitor, StorageEngine, WriteBatch, WriteOp};
use crate::wire::message::{ErrorCode, OpError};

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
