//! `markab log-dump PATH`: prints a segment file or every segment of a log directory, record by
//! record, for operators. Read-only: unlike recovery it never cuts a torn tail.

use std::io::Write;
use std::path::Path;

use super::record::{decode_segment_header, scan_segment, ScanEvent, SEGMENT_HEADER_BYTES};
use super::{parse_segment_file_name, LogError};

/// Prints `path` (a segment file, or a log directory: every `<index:020>.log` in index order)
/// to `out`: per segment its header; per record its offset, `app_id.partition_index`, ballot,
/// decree, payload bytes and `crc ok`; then `BAD`, `TORN TAIL` and `END` lines.
pub fn dump(path: &Path, out: &mut dyn Write) -> Result<(), LogError> {
    let metadata = std::fs::metadata(path).map_err(|error| LogError::io(path, "stat", error))?;
    let files = if metadata.is_dir() {
        let mut indexed = Vec::new();
        let entries =
            std::fs::read_dir(path).map_err(|error| LogError::io(path, "list directory", error))?;
        for entry in entries {
            let entry = entry.map_err(|error| LogError::io(path, "list directory", error))?;
            if let Some(index) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                indexed.push((index, entry.path()));
            }
        }
        indexed.sort();
        indexed.into_iter().map(|(_, file)| file).collect()
    } else {
        vec![path.to_path_buf()]
    };
    let write_error = |error: std::io::Error| LogError::io(Path::new("<output>"), "write", error);
    let count = files.len();
    for (ordinal, file) in files.iter().enumerate() {
        // A lone file is treated as the last segment, so a damaged tail reads as torn.
        let is_last = ordinal + 1 == count;
        dump_segment(file, is_last, out).map_err(|error| match error {
            DumpError::Log(error) => error,
            DumpError::Write(error) => write_error(error),
        })?;
    }
    if count == 0 {
        writeln!(out, "{}: no segment files", path.display()).map_err(write_error)?;
    }
    Ok(())
}

enum DumpError {
    Log(LogError),
    Write(std::io::Error),
}

impl From<std::io::Error> for DumpError {
    fn from(error: std::io::Error) -> Self {
        DumpError::Write(error)
    }
}

fn dump_segment(path: &Path, is_last: bool, out: &mut dyn Write) -> Result<(), DumpError> {
    let data =
        std::fs::read(path).map_err(|error| DumpError::Log(LogError::io(path, "read", error)))?;
    let header = match decode_segment_header(&data) {
        Ok(header) => header,
        Err(reason) => {
            writeln!(out, "segment {}: BAD HEADER: {reason}", path.display())?;
            return Ok(());
        }
    };
    writeln!(
        out,
        "segment {}: index {} start {} file_bytes {}",
        path.display(),
        header.index,
        header.start,
        data.len()
    )?;
    let (mut records, mut bad) = (0u64, 0u64);
    for event in scan_segment(&data, is_last) {
        match event {
            ScanEvent::Record {
                offset,
                bytes,
                header: record,
                payload,
            } => {
                records += 1;
                writeln!(
                    out,
                    "  offset {offset} position {} stream {}.{} ballot {} decree {} payload_bytes {} record_bytes {bytes} crc ok",
                    header.start.0 + offset - SEGMENT_HEADER_BYTES,
                    record.app_id,
                    record.partition_index,
                    record.ballot,
                    record.decree,
                    payload.len(),
                )?;
            }
            ScanEvent::Corruption {
                offset,
                reason,
                id,
                resync_offset,
            } => {
                bad += 1;
                let stream = id.map_or("unknown stream".to_string(), |id| {
                    format!(
                        "stream {}.{} ballot {} decree {}",
                        id.app_id, id.partition_index, id.ballot, id.decree
                    )
                });
                let resync = resync_offset.map_or("no good record follows".to_string(), |at| {
                    format!("resync at offset {at}")
                });
                writeln!(out, "  offset {offset} BAD ({stream}): {reason}; {resync}")?;
            }
            ScanEvent::TornTail {
                offset,
                reason,
                bytes_dropped,
            } => {
                bad += 1;
                writeln!(
                    out,
                    "  offset {offset} TORN TAIL: {reason}; {bytes_dropped} bytes after the last good record"
                )?;
            }
            ScanEvent::End { offset } => {
                writeln!(out, "  offset {offset} END of written data")?;
            }
        }
    }
    writeln!(out, "  {records} records, {bad} bad")?;
    Ok(())
}
