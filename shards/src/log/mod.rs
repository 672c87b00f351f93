//! The shard's durable mutation log: one log per shard, shared by every replica the shard owns.
//!
//! A record is an id ([`RecordHeader`]: app_id, partition_index, ballot, decree) plus opaque
//! payload bytes; the log knows nothing of tables, storage engines or replication. Records are
//! written by one group-commit task through glommio DMA files (O_DIRECT over io_uring) into
//! segment files `<dir>/<index:020>.log`; many appends share one write and one fdatasync.
//!
//! - [`recover`] (blocking `std::fs`, run once at shard start) verifies every segment, visits
//!   every good record in order, cuts a torn tail and reports mid-segment corruption.
//! - [`MutationLog`] (lives on one glommio executor) appends, group-commits, rolls segments and
//!   deletes sealed segments on request.
//! - [`dump`] prints segments and records for operators.
//!
//! Formats, recovery rules and the group-commit contract are specified in `docs/log.md`.

mod dump;
pub mod reader;
pub mod record;
mod recovery;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use dump::dump;
pub use reader::read_stream;
pub use record::{LogPosition, RecordHeader, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES};
pub use recovery::{recover, Corruption, RecordLocation, Recovery, RemovedSegment, TornTail};
pub use writer::{FlushObserver, FlushSample, LogStats, MutationLog, PENDING_BATCHES_MAX};

/// Smallest allowed `segment_bytes` (64 KiB); tuning allows 1 MiB and up, tests go lower.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;

/// Largest allowed `segment_bytes` (4 GiB).
pub const SEGMENT_BYTES_MAX: u64 = 4 << 30;

/// Extension of segment file names.
pub const SEGMENT_EXTENSION: &str = "log";

/// Path of segment `index` in `dir`: `<dir>/<index:020>.log`.
pub fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:020}.{SEGMENT_EXTENSION}"))
}

/// The segment index named by a file name `<index:020>.log`, or `None` for other names.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How a [`MutationLog`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Directory holding the segment files (created if missing).
    pub dir: PathBuf,
    /// Largest segment file, header included (tuning `log_segment_bytes`, default 64 MiB;
    /// allowed [`SEGMENT_BYTES_MIN`]..=[`SEGMENT_BYTES_MAX`]). A record that does not fit in
    /// the rest of a segment starts the next one.
    pub segment_bytes: u64,
    /// How long the group-commit task waits for more appends once one is pending, unless the
    /// batch is already full (tuning `log_group_commit_window_us`, default 200 µs; zero writes
    /// as soon as something is pending).
    pub group_commit_window: Duration,
    /// Most record bytes written by one flush (tuning `log_batch_bytes_max`, default 1 MiB); a
    /// single larger record is written alone. Pending bytes are bounded by
    /// [`PENDING_BATCHES_MAX`] times this.
    pub batch_bytes_max: usize,
    /// Whether every flush ends with fdatasync before appends are acknowledged (tuning
    /// `log_sync`, default `true`). `false` acknowledges once the write reached the device
    /// queue: acknowledged writes since the last sync can be lost on power failure.
    pub sync: bool,
}

impl LogConfig {
    /// The defaults of the tuning files for a log in `dir`: 64 MiB segments, 200 µs window,
    /// 1 MiB batches, sync on.
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            group_commit_window: Duration::from_micros(200),
            batch_bytes_max: 1 << 20,
            sync: true,
        }
    }

    /// Checks the bounds; the error names the field.
    pub fn validate(&self) -> Result<(), LogError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(LogError::Config(format!(
                "segment_bytes = {} is out of range ({SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX})",
                self.segment_bytes
            )));
        }
        if self.batch_bytes_max == 0 {
            return Err(LogError::Config("batch_bytes_max must be positive".into()));
        }
        Ok(())
    }
}

/// One segment: where it is, which positions it holds and the highest decree of every stream
/// in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment index (file name number), starting at 1.
    pub index: u64,
    /// Path of the file.
    pub path: PathBuf,
    /// Position of the first record.
    pub start: LogPosition,
    /// Position just past the last record.
    pub end: LogPosition,
    /// Records in the segment.
    pub records: u64,
    /// Highest decree per stream `(app_id, partition_index)` among the segment's records.
    pub decree_max: HashMap<(i32, i32), i64>,
}

impl SegmentInfo {
    /// Bytes the segment occupies: header plus records (zero padding aside).
    pub fn bytes(&self) -> u64 {
        SEGMENT_HEADER_BYTES + (self.end.0 - self.start.0)
    }

    pub(crate) fn note_record(&mut self, header: &RecordHeader, end: LogPosition) {
        self.records += 1;
        self.end = end;
        let decree = self
            .decree_max
            .entry(header.stream())
            .or_insert(header.decree);
        *decree = (*decree).max(header.decree);
    }
}

/// Everything that can go wrong in the log. Messages name the file (and offset) involved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("{path}: {operation}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The OS error.
        message: String,
    },
    /// A segment header is missing or garbled.
    #[error("{path}: bad segment header: {reason}")]
    BadSegmentHeader {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The segment indexes in the directory are not consecutive.
    #[error("{dir}: segment {index} is missing (segments {first}..={last} exist around it)")]
    MissingSegment {
        /// The log directory.
        dir: PathBuf,
        /// The missing index.
        index: u64,
        /// The segment before the gap.
        first: u64,
        /// The segment after the gap.
        last: u64,
    },
    /// A configuration value is out of bounds.
    #[error("invalid log configuration: {0}")]
    Config(String),
    /// Too many bytes are waiting to be written; retry after some complete.
    #[error("mutation log busy: {pending_bytes} bytes pending (max {pending_bytes_max})")]
    Busy {
        /// Bytes pending.
        pending_bytes: usize,
        /// The bound.
        pending_bytes_max: usize,
    },
    /// The record is larger than a record or a segment may hold.
    #[error("record payload of {payload_bytes} bytes exceeds the maximum of {payload_bytes_max}")]
    RecordTooLarge {
        /// Payload bytes offered.
        payload_bytes: usize,
        /// Largest payload this log accepts.
        payload_bytes_max: usize,
    },
    /// A write or sync failed earlier; the log accepts nothing more.
    #[error("mutation log failed: {0}")]
    Failed(String),
    /// The log was closed.
    #[error("mutation log is closed")]
    Closed,
}

impl LogError {
    pub(crate) fn io(path: &Path, operation: &'static str, error: impl std::fmt::Display) -> Self {
        LogError::Io {
            path: path.to_path_buf(),
            operation,
            message: error.to_string(),
        }
    }
}

/// Syncs directory `dir` so that created or removed entries are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(|error| LogError::io(dir, "sync directory", error))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves segment file names round-trip and that other names are ignored.
    #[test]
    fn segment_file_names_round_trip() {
        let path = segment_path(Path::new("/x"), 42);
        assert_eq!(path, Path::new("/x/00000000000000000042.log"));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_segment_file_name(name), Some(42));
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004a.log"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.txt"), None);
    }

    // Proves the configuration bounds are enforced.
    #[test]
    fn config_bounds() {
        let mut config = LogConfig::new("/x");
        assert!(config.validate().is_ok());
        config.segment_bytes = SEGMENT_BYTES_MIN - 1;
        assert!(matches!(config.validate(), Err(LogError::Config(_))));
        config.segment_bytes = SEGMENT_BYTES_MIN;
        config.batch_bytes_max = 0;
        assert!(matches!(config.validate(), Err(LogError::Config(_))));
    }
}
