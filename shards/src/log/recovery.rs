//! Recovery: read every segment once at shard start (blocking `std::fs`, before serving),
//! verify headers and records, visit every good record in position order, cut a torn tail and
//! report mid-segment corruption with the streams it affects. Rules: `docs/log.md`, "Recovery".

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::record::{
    decode_segment_header, scan_segment, LogPosition, RecordHeader, ScanEvent, SEGMENT_HEADER_BYTES,
};
use super::{parse_segment_file_name, segment_path, sync_dir, LogError, SegmentInfo};

/// Where a visited record lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLocation {
    /// Index of the segment holding it.
    pub segment_index: u64,
    /// File offset of its length field.
    pub offset: u64,
    /// Position of its first byte.
    pub start: LogPosition,
    /// Position just past it.
    pub end: LogPosition,
}

/// A torn tail that recovery cut off the last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment.
    pub path: PathBuf,
    /// File offset of the cut (= end of the last good record); the file now ends here.
    pub offset: u64,
    /// Bytes removed.
    pub bytes_dropped: u64,
    /// What was wrong with the first dropped bytes.
    pub reason: String,
}

/// Damage in the middle of a segment: records may be lost, so the named streams must stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The segment file.
    pub path: PathBuf,
    /// File offset of the bad record.
    pub offset: u64,
    /// What is wrong, and where scanning resumed.
    pub reason: String,
    /// Streams `(app_id, partition_index)` affected: the bad record's own stream when its id
    /// looked plausible, and every stream whose next decree after the damage is not its last
    /// decree before it plus one. Sorted.
    pub streams: Vec<(i32, i32)>,
}

/// An invalid last segment holding no records (created just before a crash) that recovery
/// deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedSegment {
    /// The deleted file.
    pub path: PathBuf,
    /// Why its header was invalid.
    pub reason: String,
}

/// What [`recover`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The log directory.
    pub dir: PathBuf,
    /// Every remaining segment in index order, with records and decrees of its good records.
    pub segments: Vec<SegmentInfo>,
    /// The torn tail cut from the last segment, if any.
    pub torn_tail: Option<TornTail>,
    /// Mid-segment corruption, in log order.
    pub corruptions: Vec<Corruption>,
    /// An empty last segment with an invalid header that was deleted.
    pub removed_segment: Option<RemovedSegment>,
    /// Position just past the last good record (0 for an empty log); new records start here.
    pub end: LogPosition,
}

impl Recovery {
    /// Index the next segment gets: one past the last, or 1 for an empty log.
    pub fn next_segment_index(&self) -> u64 {
        self.segments.last().map_or(1, |segment| segment.index + 1)
    }
}

/// Streams whose next decree must be checked after one corruption.
struct GapCheck {
    corruption: usize,
    last_decree: HashMap<(i32, i32), i64>,
}

/// Lists the segment files of `dir` in index order; a missing directory is an empty log.
fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(LogError::io(dir, "list directory", error)),
    };
    let mut indexes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| LogError::io(dir, "list directory", error))?;
        if let Some(index) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            indexes.push(index);
        }
    }
    indexes.sort_unstable();
    for pair in indexes.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(LogError::MissingSegment {
                dir: dir.to_path_buf(),
                index: pair[0] + 1,
                first: pair[0],
                last: pair[1],
            });
        }
    }
    Ok(indexes)
}

/// Recovers the log in `dir`: verifies every segment, calls `visit` for every good record in
/// position order, cuts a torn tail of the last segment (the file is truncated), reports
/// mid-segment corruption and resumes after it, and deletes an empty last segment whose header
/// never became valid. Blocking; run once at shard start before serving.
///
/// Errors: a segment (other than an empty last one) with a missing or garbled header, a gap in
/// the segment indexes, or an I/O error; each names the file.
pub fn recover(
    dir: &Path,
    visit: &mut dyn FnMut(&RecordHeader, &[u8], RecordLocation),
) -> Result<Recovery, LogError> {
    let indexes = list_segments(dir)?;
    let mut recovery = Recovery {
        dir: dir.to_path_buf(),
        ..Recovery::default()
    };
    let mut last_decree: HashMap<(i32, i32), i64> = HashMap::new();
    let mut gap_checks: Vec<GapCheck> = Vec::new();
    let mut previous_end: Option<LogPosition> = None;
    let mut previous_damaged = false;
    for (ordinal, &index) in indexes.iter().enumerate() {
        let is_last = ordinal + 1 == indexes.len();
        let path = segment_path(dir, index);
        let data = std::fs::read(&path).map_err(|error| LogError::io(&path, "read", error))?;
        let header = match decode_segment_header(&data) {
            Ok(header) => header,
            Err(reason) => {
                let header_end = data.len().min(SEGMENT_HEADER_BYTES as usize);
                if is_last && data[header_end..].iter().all(|&b| b == 0) {
                    std::fs::remove_file(&path)
                        .map_err(|error| LogError::io(&path, "remove empty segment", error))?;
                    sync_dir(dir)?;
                    recovery.removed_segment = Some(RemovedSegment { path, reason });
                    break;
                }
                return Err(LogError::BadSegmentHeader { path, reason });
            }
        };
        if header.index != index {
            return Err(LogError::BadSegmentHeader {
                path,
                reason: format!("header names segment {}", header.index),
            });
        }
        if let Some(end) = previous_end {
            let follows = if previous_damaged {
                header.start >= end
            } else {
                header.start == end
            };
            if !follows {
                return Err(LogError::BadSegmentHeader {
                    path,
                    reason: format!(
                        "start position {} does not follow the previous segment's end {end}",
                        header.start
                    ),
                });
            }
        }
        let mut info = SegmentInfo {
            index,
            path: path.clone(),
            start: header.start,
            end: header.start,
            records: 0,
            decree_max: HashMap::new(),
        };
        let position_of = |offset: u64| LogPosition(header.start.0 + offset - SEGMENT_HEADER_BYTES);
        let mut damaged = false;
        let mut cut_at = None;
        for event in scan_segment(&data, is_last) {
            match event {
                ScanEvent::Record {
                    offset,
                    bytes,
                    header: record,
                    payload,
                } => {
                    let location = RecordLocation {
                        segment_index: index,
                        offset,
                        start: position_of(offset),
                        end: position_of(offset + bytes),
                    };
                    let stream = record.stream();
                    gap_checks.retain_mut(|check| match check.last_decree.remove(&stream) {
                        Some(last) => {
                            if record.decree != last + 1 {
                                recovery.corruptions[check.corruption].streams.push(stream);
                            }
                            !check.last_decree.is_empty()
                        }
                        None => true,
                    });
                    last_decree.insert(stream, record.decree);
                    info.note_record(&record, location.end);
                    visit(&record, payload, location);
                }
                ScanEvent::Corruption {
                    offset,
                    reason,
                    id,
                    resync_offset,
                } => {
                    damaged = true;
                    let resumed = match resync_offset {
                        Some(at) => format!("; resumed at offset {at}"),
                        None => "; no good record follows in this segment".to_string(),
                    };
                    recovery.corruptions.push(Corruption {
                        path: path.clone(),
                        offset,
                        reason: format!("{reason}{resumed}"),
                        streams: id.map(|id| id.stream()).into_iter().collect(),
                    });
                    if !last_decree.is_empty() {
                        gap_checks.push(GapCheck {
                            corruption: recovery.corruptions.len() - 1,
                            last_decree: last_decree.clone(),
                        });
                    }
                }
                ScanEvent::TornTail {
                    offset,
                    reason,
                    bytes_dropped,
                } => {
                    cut_at = Some(offset);
                    recovery.torn_tail = Some(TornTail {
                        path: path.clone(),
                        offset,
                        bytes_dropped,
                        reason: reason.to_string(),
                    });
                }
                ScanEvent::End { .. } => {}
            }
        }
        if let Some(offset) = cut_at {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|error| LogError::io(&path, "open to cut torn tail", error))?;
            file.set_len(offset)
                .and_then(|()| file.sync_all())
                .map_err(|error| LogError::io(&path, "cut torn tail", error))?;
        }
        previous_end = Some(info.end);
        previous_damaged = damaged;
        recovery.end = info.end;
        recovery.segments.push(info);
    }
    for corruption in &mut recovery.corruptions {
        corruption.streams.sort_unstable();
        corruption.streams.dedup();
    }
    Ok(recovery)
}
