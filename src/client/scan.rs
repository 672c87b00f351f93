//! Scans: server-side cursors walked batch by batch, as a `Stream`.

use std::collections::VecDeque;

use futures::Stream;
use markab_wire::{
    Filter, Record, Request, ResponseBody, ScanRange, ScanRequest, SCAN_CONTEXT_COMPLETE,
};

use super::table::{Table, Target};
use super::{unexpected, ClientError};

/// Largest batch size the client asks for (Pegasus's server bound,
/// `rocksdb_max_iteration_count`).
pub const SCAN_BATCH_SIZE_MAX: i32 = 1000;

/// Options of hash_scan, full_scan and count; they mirror the fields of
/// [`ScanRequest`].
///
/// ```no_run
/// use markab::client::ScanOptions;
/// use markab::wire::{Filter, FilterType};
///
/// let options = ScanOptions {
///     sort_key_filter: Filter::new(FilterType::MatchPrefix, b"order:".to_vec()),
///     no_value: true,
///     ..ScanOptions::default()
/// };
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanOptions {
    /// Whether the start sort key is included (hash scan). Default true.
    pub start_inclusive: bool,
    /// Whether the stop sort key is included (hash scan). Default false.
    pub stop_inclusive: bool,
    /// Filter on hash keys (full scan). Default none.
    pub hash_key_filter: Filter,
    /// Filter on sort keys. Default none.
    pub sort_key_filter: Filter,
    /// Records per batch, capped at [`SCAN_BATCH_SIZE_MAX`]. Default 100.
    pub batch_size: i32,
    /// Return keys only (values empty). Default false.
    pub no_value: bool,
}

impl Default for ScanOptions {
    fn default() -> ScanOptions {
        ScanOptions {
            start_inclusive: true,
            stop_inclusive: false,
            hash_key_filter: Filter::none(),
            sort_key_filter: Filter::none(),
            batch_size: 100,
            no_value: false,
        }
    }
}

impl ScanOptions {
    pub(crate) fn to_request(&self, range: ScanRange, only_return_count: bool) -> ScanRequest {
        ScanRequest {
            range,
            start_inclusive: self.start_inclusive,
            stop_inclusive: self.stop_inclusive,
            hash_key_filter: self.hash_key_filter.clone(),
            sort_key_filter: self.sort_key_filter.clone(),
            batch_size: self.batch_size.min(SCAN_BATCH_SIZE_MAX),
            no_value: self.no_value,
            only_return_count,
        }
    }
}

/// One batch of a scan.
pub(crate) struct ScanBatch {
    pub(crate) records: Vec<Record>,
    /// With `only_return_count`: the records this batch matched.
    pub(crate) count: i64,
}

/// Walks the partitions in `targets` in turn: `GetScanner` opens a cursor on
/// a partition, `Scan` continues it until the node reports it complete.
///
/// A split while it runs (`STALE_ROUTE`): the partition being scanned is
/// scanned again as the partitions its keys went to under the new count,
/// skipping every record at or before the last one returned — partitions
/// keep the storage order, so no record comes twice and none is missed
/// that was there throughout. A count-only scan cannot skip: it fails with
/// `STALE_ROUTE` and [`Table::count`] counts again.
pub(crate) struct ScanCursor {
    table: Table,
    request: ScanRequest,
    /// Partitions to scan, each with the raw key to skip to (records at or
    /// before it were returned already).
    targets: VecDeque<(Target, Option<Vec<u8>>)>,
    /// The partition being scanned, its open cursor, and its skip key.
    open: Option<(Target, i64, Option<Vec<u8>>)>,
    /// The raw key of the last record returned from the partition being
    /// scanned.
    last: Option<Vec<u8>>,
    /// Times the scan was planned again after a split.
    replans: usize,
}

/// Most times one scan plans again after splits.
const SCAN_REPLANS_MAX: usize = 4;

impl ScanCursor {
    pub(crate) fn new(table: Table, request: ScanRequest, targets: Vec<Target>) -> ScanCursor {
        ScanCursor {
            table,
            request,
            targets: targets.into_iter().map(|target| (target, None)).collect(),
            open: None,
            last: None,
            replans: 0,
        }
    }

    /// The next batch, or `None` when every partition is done. After an
    /// error the cursor is finished (its server context, if any, is
    /// cleared).
    pub(crate) async fn next_batch(&mut self) -> Result<Option<ScanBatch>, ClientError> {
        loop {
            let (target, request, skip) = match self.open.take() {
                Some((target, context_id, skip)) => (target, Request::Scan { context_id }, skip),
                None => match self.targets.pop_front() {
                    Some((target, skip)) => {
                        self.last = None;
                        (target, Request::GetScanner(self.request.clone()), skip)
                    }
                    None => return Ok(None),
                },
            };
            let result = self.table.call(target, &request).await;
            let body = match result {
                Ok(body) => body,
                Err(error)
                    if super::table::is_stale_route(&error)
                        && !self.request.only_return_count
                        && self.replans < SCAN_REPLANS_MAX =>
                {
                    self.replans += 1;
                    let skip = match (self.last.take(), skip) {
                        (Some(last), _) => Some(last),
                        (None, skip) => skip,
                    };
                    self.replan(target, skip);
                    continue;
                }
                Err(error) => {
                    self.finish();
                    return Err(error);
                }
            };
            return match body {
                ResponseBody::Scan {
                    mut records,
                    count,
                    context_id,
                } => {
                    if let Some(skip) = &skip {
                        records.retain(|record| {
                            markab_core::key::encode_key(&record.hash_key, &record.sort_key)
                                .is_ok_and(|raw| raw > *skip)
                        });
                    }
                    if let Some(record) = records.last() {
                        self.last =
                            markab_core::key::encode_key(&record.hash_key, &record.sort_key).ok();
                    }
                    if context_id == SCAN_CONTEXT_COMPLETE {
                        self.open = None;
                    } else if context_id >= 0 {
                        self.open = Some((target, context_id, skip));
                    } else {
                        self.finish();
                        return Err(ClientError::Protocol(format!(
                            "scan answered context id {context_id}"
                        )));
                    }
                    Ok(Some(ScanBatch { records, count }))
                }
                other => {
                    self.finish();
                    Err(unexpected(request.name(), &other))
                }
            };
        }
    }

    /// Queues, in place of `target`, the partitions its keys belong to
    /// under the route's count now, each skipping to `skip`.
    fn replan(&mut self, target: Target, skip: Option<Vec<u8>>) {
        if target.keyed {
            // The key's partition is computed again when it is sent.
            self.targets.push_front((target, skip));
            return;
        }
        let count = self.table.partition_count();
        let old = target.partition_count.max(1);
        let successors: Vec<Target> = (0..count)
            .filter(|index| index % old == target.partition_index)
            .map(|partition_index| Target {
                partition_index,
                partition_hash: 0,
                partition_count: count,
                keyed: false,
            })
            .collect();
        for successor in successors.into_iter().rev() {
            self.targets.push_front((successor, skip.clone()));
        }
    }

    /// Stops the scan: no more partitions, and the open cursor is cleared.
    fn finish(&mut self) {
        self.targets.clear();
        self.clear_open();
    }

    /// Sends a best-effort `ClearScanner` for the open cursor, if any, from
    /// a detached task (the node also expires idle cursors).
    fn clear_open(&mut self) {
        let Some((target, context_id, _)) = self.open.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let table = self.table.clone();
        runtime.spawn(async move {
            let request = Request::ClearScanner { context_id };
            if let Err(error) = table.call(target, &request).await {
                tracing::debug!(context_id, %error, "clear_scanner failed");
            }
        });
    }
}

impl Drop for ScanCursor {
    fn drop(&mut self) {
        self.clear_open();
    }
}

struct RecordsState {
    cursor: ScanCursor,
    buffered: VecDeque<Record>,
    /// An error to yield first (a bad argument found before scanning).
    error: Option<ClientError>,
    done: bool,
}

/// The records of `cursor` as a stream; yields `error` (and ends) first
/// when given. Ends after the first error.
pub(crate) fn records(
    cursor: ScanCursor,
    error: Option<ClientError>,
) -> impl Stream<Item = Result<Record, ClientError>> + Send + 'static {
    let state = RecordsState {
        cursor,
        buffered: VecDeque::new(),
        error,
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if let Some(error) = state.error.take() {
            state.done = true;
            state.cursor.finish();
            return Some((Err(error), state));
        }
        loop {
            if let Some(record) = state.buffered.pop_front() {
                return Some((Ok(record), state));
            }
            if state.done {
                return None;
            }
            match state.cursor.next_batch().await {
                Ok(Some(batch)) => state.buffered.extend(batch.records),
                Ok(None) => return None,
                Err(error) => {
                    state.done = true;
                    return Some((Err(error), state));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use markab_wire::FilterType;

    // Proves the options map onto every ScanRequest field and that the batch
    // size is capped at the server's bound.
    #[test]
    fn options_map_to_request() {
        let options = ScanOptions {
            start_inclusive: false,
            stop_inclusive: true,
            hash_key_filter: Filter::new(FilterType::MatchPrefix, b"h".to_vec()),
            sort_key_filter: Filter::new(FilterType::MatchPostfix, b"s".to_vec()),
            batch_size: 5000,
            no_value: true,
        };
        let request = options.to_request(ScanRange::Full, true);
        assert!(!request.start_inclusive);
        assert!(request.stop_inclusive);
        assert_eq!(request.hash_key_filter, options.hash_key_filter);
        assert_eq!(request.sort_key_filter, options.sort_key_filter);
        assert_eq!(request.batch_size, SCAN_BATCH_SIZE_MAX);
        assert!(request.no_value);
        assert!(request.only_return_count);
        assert_eq!(request.range, ScanRange::Full);
    }

    // Proves the defaults are Pegasus's (start inclusive, stop exclusive,
    // batches of 100).
    #[test]
    fn options_defaults() {
        let options = ScanOptions::default();
        assert!(options.start_inclusive);
        assert!(!options.stop_inclusive);
        assert_eq!(options.batch_size, 100);
        assert!(!options.no_value);
    }
}
