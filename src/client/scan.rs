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
pub(crate) struct ScanCursor {
    table: Table,
    request: ScanRequest,
    targets: VecDeque<Target>,
    /// The partition being scanned and its open cursor, if any.
    open: Option<(Target, i64)>,
}

impl ScanCursor {
    pub(crate) fn new(table: Table, request: ScanRequest, targets: Vec<Target>) -> ScanCursor {
        ScanCursor {
            table,
            request,
            targets: targets.into(),
            open: None,
        }
    }

    /// The next batch, or `None` when every partition is done. After an
    /// error the cursor is finished (its server context, if any, is
    /// cleared).
    pub(crate) async fn next_batch(&mut self) -> Result<Option<ScanBatch>, ClientError> {
        let (target, request) = match self.open {
            Some((target, context_id)) => (target, Request::Scan { context_id }),
            None => match self.targets.pop_front() {
                Some(target) => (target, Request::GetScanner(self.request.clone())),
                None => return Ok(None),
            },
        };
        let result = self.table.call(target, &request).await;
        let body = match result {
            Ok(body) => body,
            Err(error) => {
                self.finish();
                return Err(error);
            }
        };
        match body {
            ResponseBody::Scan {
                records,
                count,
                context_id,
            } => {
                if context_id == SCAN_CONTEXT_COMPLETE {
                    self.open = None;
                } else if context_id >= 0 {
                    self.open = Some((target, context_id));
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
        let Some((target, context_id)) = self.open.take() else {
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
