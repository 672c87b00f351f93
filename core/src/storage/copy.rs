//! Copying a replica's records to a learner: the primary exports its
//! applied records in bounded chunks, the learner clears its own and writes
//! the chunks (docs/replication.md, "Learning").
//!
//! The copy is *fuzzy*: chunks are read from the live engine one after the
//! other, so a record may be newer than the decree `D` the copy starts at.
//! That is safe because every mutation is a batch of idempotent puts and
//! deletes of absolute values: the learner installs the copy as "applied up
//! to `D`" and then applies every mutation above `D` again, which leaves
//! each record exactly as the primary has it.

use super::{ScanControl, StorageEngine, WriteBatch};
use crate::wire::OpError;

/// Records deleted per batch while clearing.
const CLEAR_BATCH_RECORDS: usize = 4096;

/// The records after `after` (exclusive; from the first record when
/// `None`) in key order, up to about `bytes_max` bytes of keys and values
/// (at least one record), as a batch of puts, with the key to resume after
/// (`None` once the last record is in the chunk).
pub fn export_chunk<E: StorageEngine>(
    engine: &E,
    after: Option<&[u8]>,
    bytes_max: usize,
) -> Result<(WriteBatch, Option<Vec<u8>>), OpError> {
    let lower = match after {
        // The smallest key above `after`.
        Some(after) => {
            let mut lower = after.to_vec();
            lower.push(0);
            lower
        }
        None => Vec::new(),
    };
    let mut batch = WriteBatch::new();
    let mut bytes = 0usize;
    let mut last: Option<Vec<u8>> = None;
    let mut more = false;
    engine.scan(
        &lower,
        None,
        super::Direction::Forward,
        &mut |raw_key, raw_value| {
            if bytes >= bytes_max && !batch.is_empty() {
                more = true;
                return Ok(ScanControl::Stop);
            }
            bytes += raw_key.len() + raw_value.len();
            batch.put(raw_key.to_vec(), raw_value.to_vec());
            last = Some(raw_key.to_vec());
            Ok(ScanControl::Continue)
        },
    )?;
    Ok((batch, if more { last } else { None }))
}

/// Deletes every record of `engine` (not its applied decree).
pub fn clear<E: StorageEngine>(engine: &E) -> Result<(), OpError> {
    loop {
        let mut batch = WriteBatch::new();
        engine.scan(&[], None, super::Direction::Forward, &mut |raw_key, _| {
            batch.delete(raw_key.to_vec());
            Ok(match batch.len() >= CLEAR_BATCH_RECORDS {
                true => ScanControl::Stop,
                false => ScanControl::Continue,
            })
        })?;
        if batch.is_empty() {
            return Ok(());
        }
        let full = batch.len() >= CLEAR_BATCH_RECORDS;
        engine.write(&batch)?;
        if !full {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryEngine;

    fn engine_with(count: usize) -> MemoryEngine {
        let engine = MemoryEngine::new();
        let mut batch = WriteBatch::new();
        for index in 0..count {
            batch.put(format!("key{index:05}").into_bytes(), vec![b'v'; 100]);
        }
        engine.write(&batch).unwrap();
        engine
    }

    fn records(engine: &MemoryEngine) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        engine
            .scan(
                &[],
                None,
                crate::storage::Direction::Forward,
                &mut |k, v| {
                    all.push((k.to_vec(), v.to_vec()));
                    Ok(ScanControl::Continue)
                },
            )
            .unwrap();
        all
    }

    // Chunks of about 1 KiB cover every record once, in order, and a
    // cleared learner that writes them holds exactly the source's records.
    #[test]
    fn chunks_copy_every_record_once() {
        let source = engine_with(300);
        let learner = engine_with(50);
        learner
            .write(&{
                let mut batch = WriteBatch::new();
                batch.put(b"zzz-stale".to_vec(), b"old".to_vec());
                batch
            })
            .unwrap();
        clear(&learner).unwrap();
        assert!(records(&learner).is_empty());
        let mut after: Option<Vec<u8>> = None;
        let mut chunks = 0;
        loop {
            let (batch, next) = export_chunk(&source, after.as_deref(), 1024).unwrap();
            assert!(batch.len() <= 10, "bounded chunk of {}", batch.len());
            learner.write(&batch).unwrap();
            chunks += 1;
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert!(chunks >= 30, "{chunks} chunks");
        assert_eq!(records(&learner), records(&source));
    }

    #[test]
    fn clear_removes_more_than_one_batch() {
        let engine = engine_with(CLEAR_BATCH_RECORDS * 2 + 7);
        clear(&engine).unwrap();
        assert!(records(&engine).is_empty());
        let (batch, next) = export_chunk(&engine, None, 1024).unwrap();
        assert!(batch.is_empty() && next.is_none());
    }
}
