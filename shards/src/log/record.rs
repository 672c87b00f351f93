//! Byte formats of the mutation log: the segment header and the record, and the pure scanner
//! that walks a segment's bytes. `docs/log.md` is the specification; the names here follow it.
//!
//! Record (little-endian): `length u32` (bytes after the crc field: the 24-byte id plus the
//! payload), `crc32 u32` (crc32fast over those bytes), `app_id i32`, `partition_index i32`,
//! `ballot i64`, `decree i64`, payload. A length of 0 where a record would start marks the end
//! of written data (zero padding up to the next block).

use std::fmt;

/// Bytes of a segment header: one DMA block. Records start at this file offset.
pub const SEGMENT_HEADER_BYTES: u64 = 4096;

/// Magic bytes that open every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"MRKBLOG\0";

/// Segment format version written by this code and the only one it reads.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;

/// Bytes of the header fields covered by the header crc (magic, version, index, start).
const SEGMENT_HEADER_CRC_COVERED_BYTES: usize = 8 + 4 + 8 + 8;

/// Bytes of the `length` and `crc32` fields in front of every record.
pub const RECORD_PREFIX_BYTES: usize = 8;

/// Bytes of a record's id: app_id, partition_index, ballot, decree.
pub const RECORD_ID_BYTES: usize = 24;

/// Bytes of a record with an empty payload.
pub const RECORD_OVERHEAD_BYTES: usize = RECORD_PREFIX_BYTES + RECORD_ID_BYTES;

/// Largest payload a record may carry (64 MiB); a length field above
/// `RECORD_ID_BYTES + RECORD_PAYLOAD_BYTES_MAX` is a bad record.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 20;

const _: () = assert!(RECORD_ID_BYTES + RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(SEGMENT_HEADER_CRC_COVERED_BYTES + 4 <= SEGMENT_HEADER_BYTES as usize);

/// A byte offset across the whole log: a segment's start position plus the offset of a byte
/// within that segment minus the header. Positions count record bytes only, so they are
/// contiguous across segments; the first record of a fresh log starts at position 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition(pub u64);

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The identity of a record: which replica stream (app_id, partition_index) it belongs to and
/// its ballot and decree. The log does not interpret these values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordHeader {
    /// Table id.
    pub app_id: i32,
    /// Partition index within the table.
    pub partition_index: i32,
    /// Ballot under which the mutation was prepared.
    pub ballot: i64,
    /// Decree (sequence number) of the mutation in its stream.
    pub decree: i64,
}

impl RecordHeader {
    /// The stream this record belongs to: `(app_id, partition_index)`.
    pub fn stream(&self) -> (i32, i32) {
        (self.app_id, self.partition_index)
    }

    /// Whether the id looks like one Markab writes: ids, ballots and decrees are never negative.
    /// Used to name the stream of a record whose crc failed.
    pub fn is_plausible(&self) -> bool {
        self.app_id >= 0 && self.partition_index >= 0 && self.ballot >= 0 && self.decree >= 0
    }
}

/// Bytes of the encoded record carrying `payload_bytes` of payload.
pub fn record_bytes(payload_bytes: usize) -> usize {
    RECORD_OVERHEAD_BYTES + payload_bytes
}

/// Appends the encoded record to `out`. The caller has checked
/// `payload.len() <= RECORD_PAYLOAD_BYTES_MAX`.
pub fn encode_record(header: &RecordHeader, payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX);
    let length = (RECORD_ID_BYTES + payload.len()) as u32;
    let start = out.len();
    out.reserve(record_bytes(payload.len()));
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&header.app_id.to_le_bytes());
    out.extend_from_slice(&header.partition_index.to_le_bytes());
    out.extend_from_slice(&header.ballot.to_le_bytes());
    out.extend_from_slice(&header.decree.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + RECORD_PREFIX_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why the bytes at an offset are not a good record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadRecord {
    /// Fewer than 8 bytes remain and they are not all zero.
    TruncatedPrefix {
        /// Bytes remaining.
        bytes_remaining: usize,
    },
    /// The length field is 1..=23 or above the payload bound.
    BadLength {
        /// The length field.
        length: u32,
    },
    /// The length field runs past the end of the file.
    Truncated {
        /// The length field.
        length: u32,
        /// Bytes remaining after the prefix.
        bytes_remaining: usize,
    },
    /// The crc over id and payload does not match.
    CrcMismatch {
        /// The crc stored in the record.
        stored: u32,
        /// The crc of the bytes found.
        computed: u32,
    },
    /// A zero length (end-of-data marker) followed by bytes that are not all zero.
    DataAfterEnd,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRecord::TruncatedPrefix { bytes_remaining } => {
                write!(
                    f,
                    "truncated record prefix ({bytes_remaining} non-zero bytes at end of file)"
                )
            }
            BadRecord::BadLength { length } => write!(
                f,
                "bad length {length} (allowed {RECORD_ID_BYTES}..={})",
                RECORD_ID_BYTES + RECORD_PAYLOAD_BYTES_MAX
            ),
            BadRecord::Truncated {
                length,
                bytes_remaining,
            } => write!(
                f,
                "truncated record: length {length} but only {bytes_remaining} bytes remain"
            ),
            BadRecord::CrcMismatch { stored, computed } => write!(
                f,
                "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            BadRecord::DataAfterEnd => write!(f, "non-zero bytes after the end-of-data marker"),
        }
    }
}

/// What [`decode_record`] found at an offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A good record; `next` is the offset just past it.
    Record {
        /// The record's id.
        header: RecordHeader,
        /// The record's payload.
        payload: &'a [u8],
        /// Offset just past the record.
        next: usize,
    },
    /// Zero length and only zero bytes up to the end: no more data.
    End,
    /// Not a good record.
    Bad(BadRecord),
}

fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the 24-byte id at `at` (the caller checked that 24 bytes exist).
fn read_id(data: &[u8], at: usize) -> RecordHeader {
    RecordHeader {
        app_id: read_u32(data, at) as i32,
        partition_index: read_u32(data, at + 4) as i32,
        ballot: read_u64(data, at + 8) as i64,
        decree: read_u64(data, at + 16) as i64,
    }
}

/// Whether `length` is an allowed record length field.
fn length_in_bounds(length: u32) -> bool {
    let length = length as usize;
    (RECORD_ID_BYTES..=RECORD_ID_BYTES + RECORD_PAYLOAD_BYTES_MAX).contains(&length)
}

/// Decodes the record starting at `offset` of `data` (a whole segment file, or any buffer).
pub fn decode_record(data: &[u8], offset: usize) -> Decoded<'_> {
    let rest = &data[offset.min(data.len())..];
    if rest.len() < RECORD_PREFIX_BYTES {
        if rest.iter().all(|&b| b == 0) {
            return Decoded::End;
        }
        return Decoded::Bad(BadRecord::TruncatedPrefix {
            bytes_remaining: rest.len(),
        });
    }
    let length = read_u32(rest, 0);
    if length == 0 {
        if rest.iter().all(|&b| b == 0) {
            return Decoded::End;
        }
        return Decoded::Bad(BadRecord::DataAfterEnd);
    }
    if !length_in_bounds(length) {
        return Decoded::Bad(BadRecord::BadLength { length });
    }
    let body_end = RECORD_PREFIX_BYTES + length as usize;
    if body_end > rest.len() {
        return Decoded::Bad(BadRecord::Truncated {
            length,
            bytes_remaining: rest.len() - RECORD_PREFIX_BYTES,
        });
    }
    let stored = read_u32(rest, 4);
    let body = &rest[RECORD_PREFIX_BYTES..body_end];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Decoded::Bad(BadRecord::CrcMismatch { stored, computed });
    }
    Decoded::Record {
        header: read_id(body, 0),
        payload: &body[RECORD_ID_BYTES..],
        next: offset + body_end,
    }
}

/// The id stored at `offset` when it fits in `data` and looks plausible; names the stream of a
/// bad record.
pub fn plausible_id_at(data: &[u8], offset: usize) -> Option<RecordHeader> {
    let at = offset.checked_add(RECORD_PREFIX_BYTES)?;
    if at + RECORD_ID_BYTES > data.len() {
        return None;
    }
    let id = read_id(data, at);
    id.is_plausible().then_some(id)
}

/// The first offset at or after `from` where a good record starts, scanning byte by byte.
/// A candidate must have a length in bounds, fit in `data`, be followed by the end of data or
/// something that could start a record, and pass its crc.
pub fn find_next_record(data: &[u8], from: usize) -> Option<usize> {
    let last_start = data.len().checked_sub(RECORD_OVERHEAD_BYTES)?;
    (from..=last_start).find(|&at| {
        let length = read_u32(data, at);
        if !length_in_bounds(length) {
            return false;
        }
        let end = at + RECORD_PREFIX_BYTES + length as usize;
        if end > data.len() {
            return false;
        }
        // Cheap filter before the crc: what follows must be the end, a zero length or a
        // length in bounds.
        if end + 4 <= data.len() {
            let following = read_u32(data, end);
            if following != 0 && !length_in_bounds(following) {
                return false;
            }
        }
        crc32fast::hash(&data[at + RECORD_PREFIX_BYTES..end]) == read_u32(data, at + 4)
    })
}

/// The decoded fixed fields of a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Segment index (the file name's number).
    pub index: u64,
    /// Global position of the segment's first record.
    pub start: LogPosition,
}

/// Encodes a segment header into a full block of `SEGMENT_HEADER_BYTES` bytes.
pub fn encode_segment_header(header: &SegmentHeader) -> Vec<u8> {
    let mut block = vec![0u8; SEGMENT_HEADER_BYTES as usize];
    block[0..8].copy_from_slice(&SEGMENT_MAGIC);
    block[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    block[12..20].copy_from_slice(&header.index.to_le_bytes());
    block[20..28].copy_from_slice(&header.start.0.to_le_bytes());
    let crc = crc32fast::hash(&block[..SEGMENT_HEADER_CRC_COVERED_BYTES]);
    block[28..32].copy_from_slice(&crc.to_le_bytes());
    block
}

/// Decodes the header at the start of `data`; the error says what is wrong.
pub fn decode_segment_header(data: &[u8]) -> Result<SegmentHeader, String> {
    if data.len() < SEGMENT_HEADER_BYTES as usize {
        return Err(format!(
            "file has {} bytes, shorter than the {SEGMENT_HEADER_BYTES}-byte header",
            data.len()
        ));
    }
    if data[0..8] != SEGMENT_MAGIC {
        return Err(format!("bad magic {:02x?}", &data[0..8]));
    }
    let stored = read_u32(data, SEGMENT_HEADER_CRC_COVERED_BYTES);
    let computed = crc32fast::hash(&data[..SEGMENT_HEADER_CRC_COVERED_BYTES]);
    if stored != computed {
        return Err(format!(
            "header crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let version = read_u32(data, 8);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads only {SEGMENT_FORMAT_VERSION}"
        ));
    }
    Ok(SegmentHeader {
        index: read_u64(data, 12),
        start: LogPosition(read_u64(data, 20)),
    })
}

/// One thing the scanner found in a segment's records area, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEvent<'a> {
    /// A good record at file offset `offset`.
    Record {
        /// File offset of the record's length field.
        offset: u64,
        /// Encoded bytes of the record.
        bytes: u64,
        /// The record's id.
        header: RecordHeader,
        /// The record's payload.
        payload: &'a [u8],
    },
    /// A bad record followed by a good one (or in a sealed segment): corruption. Scanning
    /// resumes at `resync_offset` when there is one.
    Corruption {
        /// File offset of the bad record.
        offset: u64,
        /// What is wrong.
        reason: BadRecord,
        /// The bad record's id, when it fits and looks plausible.
        id: Option<RecordHeader>,
        /// Offset of the next good record, if any.
        resync_offset: Option<u64>,
    },
    /// A bad record in the last segment with no good record after it: a write torn by a crash.
    TornTail {
        /// File offset of the bad record (= end of the last good record).
        offset: u64,
        /// What is wrong.
        reason: BadRecord,
        /// Bytes from `offset` to the end of the file.
        bytes_dropped: u64,
    },
    /// The end of written data (zero length and zero padding, or the end of the file).
    End {
        /// File offset of the end.
        offset: u64,
    },
}

/// Walks the records area of a segment (`data` is the whole file, header included) and returns
/// what it finds, in order. `is_last` says whether this is the log's last segment, the only one
/// whose tail may be torn by a crash.
pub fn scan_segment(data: &[u8], is_last: bool) -> Vec<ScanEvent<'_>> {
    let mut events = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    loop {
        match decode_record(data, offset) {
            Decoded::Record {
                header,
                payload,
                next,
            } => {
                events.push(ScanEvent::Record {
                    offset: offset as u64,
                    bytes: (next - offset) as u64,
                    header,
                    payload,
                });
                offset = next;
            }
            Decoded::End => {
                events.push(ScanEvent::End {
                    offset: offset.min(data.len()) as u64,
                });
                return events;
            }
            Decoded::Bad(reason) => {
                let resync = find_next_record(data, offset + 1);
                if is_last && resync.is_none() {
                    events.push(ScanEvent::TornTail {
                        offset: offset as u64,
                        reason,
                        bytes_dropped: (data.len() - offset) as u64,
                    });
                    return events;
                }
                events.push(ScanEvent::Corruption {
                    offset: offset as u64,
                    reason,
                    id: plausible_id_at(data, offset),
                    resync_offset: resync.map(|at| at as u64),
                });
                match resync {
                    Some(at) => offset = at,
                    None => return events,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(decree: i64) -> RecordHeader {
        RecordHeader {
            app_id: 3,
            partition_index: 7,
            ballot: 2,
            decree,
        }
    }

    // Proves a record decodes back to the same id and payload and that its length field counts
    // the id plus the payload.
    #[test]
    fn record_round_trips() {
        let mut out = Vec::new();
        encode_record(&header(42), b"hello", &mut out);
        assert_eq!(out.len(), record_bytes(5));
        assert_eq!(read_u32(&out, 0) as usize, RECORD_ID_BYTES + 5);
        match decode_record(&out, 0) {
            Decoded::Record {
                header: decoded,
                payload,
                next,
            } => {
                assert_eq!(decoded, header(42));
                assert_eq!(payload, b"hello");
                assert_eq!(next, out.len());
            }
            other => panic!("expected a record, got {other:?}"),
        }
    }

    // Proves that flipping any single byte of a record (prefix, id or payload) is detected.
    #[test]
    fn every_flipped_byte_is_detected() {
        let mut good = Vec::new();
        encode_record(&header(9), b"some payload bytes", &mut good);
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(
                matches!(decode_record(&bad, 0), Decoded::Bad(_)),
                "flip at byte {at} went unnoticed"
            );
        }
    }

    // Proves zero bytes read as the end of data and non-zero bytes after a zero length do not.
    #[test]
    fn zero_length_is_end_only_before_zero_padding() {
        assert_eq!(decode_record(&[0u8; 100], 0), Decoded::End);
        assert_eq!(decode_record(&[0u8; 3], 0), Decoded::End);
        let mut data = vec![0u8; 100];
        data[60] = 1;
        assert_eq!(
            decode_record(&data, 0),
            Decoded::Bad(BadRecord::DataAfterEnd)
        );
        assert!(matches!(
            decode_record(&[1, 0, 0], 0),
            Decoded::Bad(BadRecord::TruncatedPrefix { .. })
        ));
    }

    // Proves lengths below the id size, above the payload bound, or past the end are bad.
    #[test]
    fn length_bounds_are_checked() {
        let mut data = vec![0u8; 64];
        data[0] = 5;
        assert_eq!(
            decode_record(&data, 0),
            Decoded::Bad(BadRecord::BadLength { length: 5 })
        );
        let too_long = (RECORD_ID_BYTES + RECORD_PAYLOAD_BYTES_MAX + 1) as u32;
        data[0..4].copy_from_slice(&too_long.to_le_bytes());
        assert!(matches!(
            decode_record(&data, 0),
            Decoded::Bad(BadRecord::BadLength { .. })
        ));
        data[0..4].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(
            decode_record(&data, 0),
            Decoded::Bad(BadRecord::Truncated { length: 100, .. })
        ));
    }

    // Proves a segment header round-trips and that a flipped byte or a short file is rejected.
    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let written = SegmentHeader {
            index: 17,
            start: LogPosition(123_456),
        };
        let block = encode_segment_header(&written);
        assert_eq!(block.len(), SEGMENT_HEADER_BYTES as usize);
        assert_eq!(decode_segment_header(&block), Ok(written));
        for at in 0..32 {
            let mut bad = block.clone();
            bad[at] ^= 1;
            assert!(decode_segment_header(&bad).is_err(), "flip at {at}");
        }
        assert!(decode_segment_header(&block[..100]).is_err());
    }

    // Proves the resync search skips garbage and finds the next good record.
    #[test]
    fn find_next_record_skips_garbage() {
        let mut data = vec![0xAB; 37];
        let at = data.len();
        encode_record(&header(1), b"x", &mut data);
        assert_eq!(find_next_record(&data, 0), Some(at));
        assert_eq!(find_next_record(&data, at + 1), None);
    }

    // Proves the scanner reports a torn tail in the last segment but corruption with a resync
    // point when a good record follows the damage, and corruption in a sealed segment.
    #[test]
    fn scan_tells_torn_tail_from_corruption() {
        let mut data = encode_segment_header(&SegmentHeader {
            index: 1,
            start: LogPosition(0),
        });
        let first = data.len();
        encode_record(&header(1), b"one", &mut data);
        let second = data.len();
        encode_record(&header(2), b"two", &mut data);
        let third = data.len();
        encode_record(&header(3), b"three", &mut data);
        let mut torn = data.clone();
        torn.truncate(third + 10);
        let events = scan_segment(&torn, true);
        assert_eq!(events.len(), 3);
        assert!(matches!(
            events[2],
            ScanEvent::TornTail { offset, bytes_dropped: 10, .. } if offset == third as u64
        ));
        let events = scan_segment(&torn, false);
        assert!(matches!(
            events[2],
            ScanEvent::Corruption {
                resync_offset: None,
                ..
            }
        ));

        let mut middle = data.clone();
        middle[second + 20] ^= 0xFF;
        let events = scan_segment(&middle, true);
        assert!(matches!(events[0], ScanEvent::Record { offset, .. } if offset == first as u64));
        assert!(matches!(
            events[1],
            ScanEvent::Corruption { offset, resync_offset: Some(r), .. }
                if offset == second as u64 && r == third as u64
        ));
        assert!(matches!(events[2], ScanEvent::Record { header, .. } if header.decree == 3));
        assert!(matches!(events[3], ScanEvent::End { .. }));
    }
}
