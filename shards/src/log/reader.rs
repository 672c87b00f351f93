//! Read-only access to one stream's records in a live log, for a primary
//! that answers a learner from its log (docs/replication.md, "Learning").
//! Unlike recovery it never cuts anything: a damaged or partly written tail
//! simply ends the scan of its segment.

use super::record::{scan_segment, ScanEvent};
use super::{LogError, RecordHeader, SegmentInfo};

/// Calls `visit` with every intact record of `stream` whose decree is above
/// `after`, in log order, reading the given segments (a live log's
/// [`MutationLog::segments`](super::MutationLog::segments)). Segments whose
/// highest decree of the stream is not above `after` are not read.
pub fn read_stream(
    segments: &[SegmentInfo],
    stream: (i32, i32),
    after: i64,
    visit: &mut dyn FnMut(&RecordHeader, &[u8]),
) -> Result<(), LogError> {
    for segment in segments {
        if segment
            .decree_max
            .get(&stream)
            .is_none_or(|decree_max| *decree_max <= after)
        {
            continue;
        }
        let data = std::fs::read(&segment.path)
            .map_err(|error| LogError::io(&segment.path, "read", error))?;
        for event in scan_segment(&data, true) {
            match event {
                ScanEvent::Record {
                    header, payload, ..
                } if header.stream() == stream && header.decree > after => visit(&header, payload),
                ScanEvent::Record { .. } => {}
                // What follows a bad record is not trusted here.
                _ => break,
            }
        }
    }
    Ok(())
}
