//! [`MemoryEngine`]: a `BTreeMap` behind a `RefCell`, the engine of the
//! deterministic simulator and of fast tests.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use super::{Direction, ScanControl, ScanVisitor, StorageEngine, WriteBatch, WriteOp};
use crate::wire::message::{ErrorCode, OpError};

/// Every raw record of a [`MemoryEngine`], by raw key.
pub type MemoryRecords = BTreeMap<Vec<u8>, Vec<u8>>;

/// The durable part of a [`MemoryEngine`] opened with
/// [`MemoryEngine::open_durable`]: the records and decree as of its last
/// flush. A simulated disk keeps this handle; after a simulated crash the
/// engine reopened from it holds exactly its flushed state
/// (**flushed-decree-consistent**).
#[derive(Clone, Debug, Default)]
pub struct MemoryDurable {
    flushed: Arc<Mutex<(MemoryRecords, i64)>>,
}

impl MemoryDurable {
    /// An empty durable state (no records, decree 0).
    pub fn new() -> MemoryDurable {
        MemoryDurable::default()
    }

    /// A durable state holding `records` at `decree` (a copy installed).
    pub fn with_state(records: MemoryRecords, decree: i64) -> MemoryDurable {
        MemoryDurable {
            flushed: Arc::new(Mutex::new((records, decree))),
        }
    }

    /// The decree of the last flush.
    pub fn decree(&self) -> i64 {
        self.lock().1
    }

    /// A copy of the flushed records and decree.
    pub fn state(&self) -> (MemoryRecords, i64) {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (MemoryRecords, i64)> {
        self.flushed.lock().expect("memory durable state lock")
    }
}

/// An in-memory ordered engine. Single-threaded (`!Sync`); a write from
/// inside a scan visitor is refused with `Internal` rather than panicking.
///
/// A plain engine ([`MemoryEngine::new`]) has no separate flushed state:
/// its flushed decree is its applied decree. One opened with
/// [`MemoryEngine::open_durable`] keeps one, as a disk-backed engine with
/// its write-ahead log off does: [`StorageEngine::flush`] makes what was
/// written durable in the [`MemoryDurable`] handle, and the flushed decree
/// trails the applied one until then.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    records: RefCell<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// The last decree written.
    decree: Cell<i64>,
    /// The durable state, for an engine opened with one.
    durable: Option<MemoryDurable>,
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
            durable: None,
        }
    }

    /// An engine holding exactly `durable`'s flushed records and decree,
    /// flushing into it from now on (a reopened engine after a crash).
    pub fn open_durable(durable: &MemoryDurable) -> MemoryEngine {
        let (records, decree) = durable.state();
        MemoryEngine {
            records: RefCell::new(records),
            decree: Cell::new(decree),
            durable: Some(durable.clone()),
        }
    }

    /// The durable state handle, for an engine opened with one.
    pub fn durable(&self) -> Option<&MemoryDurable> {
        self.durable.as_ref()
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
        Ok(match &self.durable {
            Some(durable) => durable.decree(),
            None => self.decree.get(),
        })
    }

    fn drop_foreign(&self, count: u32, index: u32) -> Result<(), OpError> {
        if count == 0 {
            return Ok(());
        }
        let mut records = self.records.try_borrow_mut().map_err(|_| reentered())?;
        records.retain(|raw_key, _| {
            crate::key::decode_key(raw_key).is_none_or(|(hash_key, sort_key)| {
                crate::key::partition_index(crate::key::partition_hash(hash_key, sort_key), count)
                    == index
            })
        });
        Ok(())
    }

    fn flush(&self) -> Result<(), OpError> {
        if let Some(durable) = &self.durable {
            let records = self.records.try_borrow().map_err(|_| reentered())?;
            *durable.lock() = (records.clone(), self.decree.get());
        }
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

    // An engine with a durable state loses what it did not flush when it is
    // reopened from that state, and keeps what it did.
    #[test]
    fn a_reopened_durable_engine_holds_its_flushed_state() {
        let durable = MemoryDurable::new();
        let engine = MemoryEngine::open_durable(&durable);
        let write = |key: &[u8], decree: i64| {
            let mut batch = WriteBatch::default();
            batch.put(key.to_vec(), b"v".to_vec());
            batch.set_decree(decree);
            engine.write(&batch).unwrap();
        };
        write(b"a", 1);
        assert_eq!(
            (
                engine.applied_decree().unwrap(),
                engine.flushed_decree().unwrap()
            ),
            (1, 0)
        );
        engine.flush().unwrap();
        write(b"b", 2);
        assert_eq!(engine.flushed_decree().unwrap(), 1);
        drop(engine);
        let reopened = MemoryEngine::open_durable(&durable);
        assert_eq!(reopened.applied_decree().unwrap(), 1);
        assert_eq!(reopened.get(b"a").unwrap(), Some(b"v".to_vec()));
        assert_eq!(reopened.get(b"b").unwrap(), None);
    }
}
