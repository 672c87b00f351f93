//! Server-side scan cursors of one shard: bounded in number, expired when
//! idle. A cursor keeps the scan's request and the raw key it stopped after;
//! each `scan` call re-seeks from there, so no RocksDB iterator or snapshot is
//! held between calls (a scan sees writes made while it runs; see
//! docs/DESIGN.md, "Scanners").

use std::collections::HashMap;
use std::time::{Duration, Instant};

use markab_wire::{ErrorCode, Gpid, OpError, ScanRequest};

/// One open scan.
#[derive(Clone, Debug)]
pub struct Cursor {
    pub gpid: Gpid,
    pub request: ScanRequest,
    /// The raw storage key the last batch ended at (exclusive resume point).
    pub resume_after: Vec<u8>,
    last_used: Instant,
}

/// A shard's cursor table.
#[derive(Debug)]
pub struct CursorTable {
    cursors: HashMap<i64, Cursor>,
    cursors_max: usize,
    idle_timeout: Duration,
    next_id: i64,
}

impl CursorTable {
    /// A table holding at most `cursors_max` cursors, each dropped after
    /// `idle_timeout` without use.
    pub fn new(cursors_max: usize, idle_timeout: Duration) -> CursorTable {
        assert!(cursors_max > 0);
        CursorTable {
            cursors: HashMap::new(),
            cursors_max,
            idle_timeout,
            next_id: 1,
        }
    }

    /// Stores a new cursor and returns its id, or `Busy` when the table is
    /// full even after dropping idle cursors.
    pub fn open(
        &mut self,
        gpid: Gpid,
        request: ScanRequest,
        resume_after: Vec<u8>,
        now: Instant,
    ) -> Result<i64, OpError> {
        if self.cursors.len() >= self.cursors_max {
            self.expire(now);
        }
        if self.cursors.len() >= self.cursors_max {
            return Err(OpError::new(
                ErrorCode::Busy,
                format!(
                    "this shard already has {} open scanners (tuning key scanners_max); clear or finish some",
                    self.cursors_max
                ),
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        let cursor = Cursor {
            gpid,
            request,
            resume_after,
            last_used: now,
        };
        self.cursors.insert(id, cursor);
        Ok(id)
    }

    /// Takes the cursor out for one batch; the caller puts it back with
    /// [`CursorTable::restore`] if the scan continues.
    pub fn take(&mut self, id: i64, gpid: Gpid, now: Instant) -> Result<Cursor, OpError> {
        let not_found = || {
            OpError::new(
                ErrorCode::ScannerNotFound,
                format!("scanner {id} does not exist (finished, cleared, or idle too long)"),
            )
        };
        let cursor = self.cursors.remove(&id).ok_or_else(not_found)?;
        if now.duration_since(cursor.last_used) > self.idle_timeout {
            return Err(not_found());
        }
        if cursor.gpid != gpid {
            let message = format!(
                "scanner {id} belongs to partition {}.{}, not {}.{}",
                cursor.gpid.app_id, cursor.gpid.partition_index, gpid.app_id, gpid.partition_index
            );
            self.cursors.insert(id, cursor);
            return Err(OpError::invalid_argument(message));
        }
        Ok(cursor)
    }

    /// Puts a cursor back after a batch that did not finish the scan.
    pub fn restore(&mut self, id: i64, mut cursor: Cursor, resume_after: Vec<u8>, now: Instant) {
        cursor.resume_after = resume_after;
        cursor.last_used = now;
        self.cursors.insert(id, cursor);
    }

    /// Drops a cursor; true if it existed.
    pub fn clear(&mut self, id: i64) -> bool {
        self.cursors.remove(&id).is_some()
    }

    /// Drops every cursor idle for longer than the timeout; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.cursors.len();
        let idle_timeout = self.idle_timeout;
        self.cursors
            .retain(|_, cursor| now.duration_since(cursor.last_used) <= idle_timeout);
        before - self.cursors.len()
    }

    pub fn len(&self) -> usize {
        self.cursors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cursors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use markab_wire::ScanRange;

    fn gpid(partition_index: i32) -> Gpid {
        Gpid {
            app_id: 1,
            partition_index,
        }
    }

    // The table refuses new cursors past its bound until idle ones expire.
    #[test]
    fn bounded_and_expiring() {
        let start = Instant::now();
        let mut table = CursorTable::new(2, Duration::from_secs(10));
        let request = ScanRequest::new(ScanRange::Full);
        let a = table
            .open(gpid(0), request.clone(), vec![1], start)
            .unwrap();
        let b = table
            .open(gpid(0), request.clone(), vec![2], start)
            .unwrap();
        assert_ne!(a, b);
        let error = table
            .open(gpid(0), request.clone(), vec![3], start)
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Busy);
        let later = start + Duration::from_secs(11);
        assert!(table.open(gpid(0), request, vec![3], later).is_ok());
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.take(a, gpid(0), later).unwrap_err().code,
            ErrorCode::ScannerNotFound
        );
    }

    // take/restore carries the resume key; the wrong partition is refused and
    // does not lose the cursor; clear removes it.
    #[test]
    fn take_restore_clear() {
        let now = Instant::now();
        let mut table = CursorTable::new(4, Duration::from_secs(10));
        let id = table
            .open(gpid(3), ScanRequest::new(ScanRange::Full), vec![9], now)
            .unwrap();
        assert_eq!(
            table.take(id, gpid(2), now).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let cursor = table.take(id, gpid(3), now).unwrap();
        assert_eq!(cursor.resume_after, vec![9]);
        table.restore(id, cursor, vec![10], now);
        assert_eq!(table.take(id, gpid(3), now).unwrap().resume_after, vec![10]);
        assert!(!table.clear(id));
        assert!(table.is_empty());
    }
}
