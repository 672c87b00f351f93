//! Framing: the 16-byte header in front of every flatbuffers body (sans-IO).
//!
//! Layout (all integers little-endian; see docs/wire.md):
//!
//! | offset | bytes | field                                   |
//! |-------:|------:|-----------------------------------------|
//! | 0      | 4     | magic `b"MRKB"`                         |
//! | 4      | 1     | version (`FRAME_VERSION` = 1)           |
//! | 5      | 1     | kind (1 = request, 2 = response)        |
//! | 6      | 2     | reserved, must be 0                     |
//! | 8      | 4     | body length in bytes                    |
//! | 12     | 4     | crc32 (crc32fast, IEEE) of the body     |
//!
//! [`FrameDecoder`] turns a byte stream into whole, checksum-verified frames;
//! [`decode_header`] serves callers that read the header and then the body
//! themselves. A framing error leaves the stream out of sync: the only safe
//! reaction is to answer `BadFrame` (when possible) and close the connection.

use crate::stream_buffer::StreamBuffer;

/// The first four bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"MRKB";
/// The only frame version this code reads and writes.
pub const FRAME_VERSION: u8 = 1;
/// Size of the fixed frame header.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Absolute bound on a frame body (64 MiB). Peers apply smaller bounds of
/// their own (for example a server's request bound) through
/// [`FrameDecoder::new`] or [`decode_header_bounded`].
pub const FRAME_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

// The body length travels as a u32.
const _: () = assert!(FRAME_BODY_BYTES_MAX <= u32::MAX as usize);

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    /// A `RequestEnvelope` flatbuffer.
    Request = 1,
    /// A `ResponseEnvelope` flatbuffer.
    Response = 2,
}

impl MessageKind {
    /// The kind with this wire value, if any.
    pub fn from_u8(value: u8) -> Option<MessageKind> {
        match value {
            1 => Some(MessageKind::Request),
            2 => Some(MessageKind::Response),
            _ => None,
        }
    }
}

/// Why a frame was rejected. Every variant means the byte stream can no
/// longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic {0:02x?}, expected \"MRKB\"")]
    BadMagic([u8; 4]),
    #[error("unsupported frame version {0}, expected {FRAME_VERSION}")]
    UnsupportedVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("reserved frame header bits are not zero")]
    ReservedNotZero,
    #[error("frame body of {body_bytes} bytes exceeds the bound of {body_bytes_max} bytes")]
    TooLarge {
        body_bytes: usize,
        body_bytes_max: usize,
    },
    #[error("frame body checksum mismatch: header says {expected:#010x}, body has {actual:#010x}")]
    BadChecksum { expected: u32, actual: u32 },
}

/// A decoded, validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: MessageKind,
    /// Length of the body that follows the header.
    pub body_bytes: usize,
    /// crc32 of the body, as sent.
    pub body_crc32: u32,
}

impl FrameHeader {
    /// Checks that `body` is this header's body: its length and its crc32.
    pub fn verify_body(&self, body: &[u8]) -> Result<(), FrameError> {
        if body.len() != self.body_bytes {
            // A length mismatch is a caller bug or a torn stream; report it as
            // a checksum failure of what was actually received.
            return Err(FrameError::BadChecksum {
                expected: self.body_crc32,
                actual: crc32fast::hash(body),
            });
        }
        let actual = crc32fast::hash(body);
        if actual != self.body_crc32 {
            return Err(FrameError::BadChecksum {
                expected: self.body_crc32,
                actual,
            });
        }
        Ok(())
    }
}

/// A whole frame: its kind and its checksum-verified body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: MessageKind,
    pub body: Vec<u8>,
}

/// Appends one frame (header and `body`) to `out`.
///
/// Fails with [`FrameError::TooLarge`] (leaving `out` unchanged) when `body`
/// is longer than [`FRAME_BODY_BYTES_MAX`]: no peer would accept it.
pub fn write_frame(kind: MessageKind, body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if body.len() > FRAME_BODY_BYTES_MAX {
        return Err(FrameError::TooLarge {
            body_bytes: body.len(),
            body_bytes_max: FRAME_BODY_BYTES_MAX,
        });
    }
    out.reserve(FRAME_HEADER_BYTES + body.len());
    out.extend_from_slice(&encode_header(kind, body));
    out.extend_from_slice(body);
    Ok(())
}

/// The header of a frame carrying `body`. `body` must be at most
/// [`FRAME_BODY_BYTES_MAX`] bytes (checked by [`write_frame`]).
fn encode_header(kind: MessageKind, body: &[u8]) -> [u8; FRAME_HEADER_BYTES] {
    debug_assert!(body.len() <= FRAME_BODY_BYTES_MAX);
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&FRAME_MAGIC);
    header[4] = FRAME_VERSION;
    header[5] = kind as u8;
    // header[6..8]: reserved, zero.
    header[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
    header[12..16].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    header
}

/// Decodes and validates a header against the absolute bound
/// [`FRAME_BODY_BYTES_MAX`].
pub fn decode_header(header: &[u8; FRAME_HEADER_BYTES]) -> Result<FrameHeader, FrameError> {
    decode_header_bounded(header, FRAME_BODY_BYTES_MAX)
}

/// Decodes and validates a header, rejecting bodies longer than
/// `body_bytes_max` (itself capped at [`FRAME_BODY_BYTES_MAX`]) from the
/// header alone, before any body byte is read.
pub fn decode_header_bounded(
    header: &[u8; FRAME_HEADER_BYTES],
    body_bytes_max: usize,
) -> Result<FrameHeader, FrameError> {
    let magic = [header[0], header[1], header[2], header[3]];
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if header[4] != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion(header[4]));
    }
    let kind = MessageKind::from_u8(header[5]).ok_or(FrameError::UnknownKind(header[5]))?;
    if header[6] != 0 || header[7] != 0 {
        return Err(FrameError::ReservedNotZero);
    }
    let body_bytes = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    let body_bytes_max = body_bytes_max.min(FRAME_BODY_BYTES_MAX);
    if body_bytes > body_bytes_max {
        return Err(FrameError::TooLarge {
            body_bytes,
            body_bytes_max,
        });
    }
    let body_crc32 = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    Ok(FrameHeader {
        kind,
        body_bytes,
        body_crc32,
    })
}

/// Accumulates bytes from a stream and yields whole, verified frames.
///
/// Feed it with [`extend`](FrameDecoder::extend) (or read straight into
/// [`read_buffer`](FrameDecoder::read_buffer) and
/// [`commit_read`](FrameDecoder::commit_read)), then call
/// [`next_frame`](FrameDecoder::next_frame) until it returns `Ok(None)`.
/// Memory held is what was fed and not yet returned as frames; a body is
/// never reserved before its header has been validated. After the first
/// error the decoder keeps returning that error.
///
/// ```
/// use markab_wire::frame::{write_frame, FrameDecoder, MessageKind, FRAME_BODY_BYTES_MAX};
/// let mut bytes = Vec::new();
/// write_frame(MessageKind::Request, b"hello", &mut bytes).unwrap();
/// let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
/// decoder.extend(&bytes[..7]);
/// assert_eq!(decoder.next_frame().unwrap(), None);
/// decoder.extend(&bytes[7..]);
/// let frame = decoder.next_frame().unwrap().unwrap();
/// assert_eq!(frame.body, b"hello");
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    body_bytes_max: usize,
    buffer: StreamBuffer,
    /// The header of the frame whose body is being awaited.
    pending: Option<FrameHeader>,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that rejects bodies longer than `body_bytes_max`, itself
    /// capped at [`FRAME_BODY_BYTES_MAX`].
    pub fn new(body_bytes_max: usize) -> FrameDecoder {
        FrameDecoder {
            body_bytes_max: body_bytes_max.min(FRAME_BODY_BYTES_MAX),
            buffer: StreamBuffer::default(),
            pending: None,
            failed: None,
        }
    }

    /// The body bound this decoder enforces.
    pub fn body_bytes_max(&self) -> usize {
        self.body_bytes_max
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.buffered_bytes()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend(bytes);
    }

    /// A writable slice of at least `bytes_min` bytes to read into; report
    /// how many were written with [`commit_read`](FrameDecoder::commit_read).
    pub fn read_buffer(&mut self, bytes_min: usize) -> &mut [u8] {
        self.buffer.read_buffer(bytes_min)
    }

    /// Marks `bytes` bytes of the last [`read_buffer`](FrameDecoder::read_buffer)
    /// as received. Counts beyond that slice are clamped to it.
    pub fn commit_read(&mut self, bytes: usize) {
        self.buffer.commit_read(bytes);
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or the
    /// error that makes the stream unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.decode_next() {
            Ok(frame) => Ok(frame),
            Err(error) => {
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    fn decode_next(&mut self) -> Result<Option<Frame>, FrameError> {
        let header = match self.pending {
            Some(header) => header,
            None => {
                let live = self.buffer.live();
                if live.len() < FRAME_HEADER_BYTES {
                    return Ok(None);
                }
                let mut bytes = [0u8; FRAME_HEADER_BYTES];
                bytes.copy_from_slice(&live[..FRAME_HEADER_BYTES]);
                let header = decode_header_bounded(&bytes, self.body_bytes_max)?;
                self.buffer.consume(FRAME_HEADER_BYTES);
                self.pending = Some(header);
                header
            }
        };
        let buffered = self.buffer.buffered_bytes();
        if buffered < header.body_bytes {
            // The header is valid, so its length is within bounds: make room
            // for the rest of the body now rather than by repeated doubling.
            self.buffer.reserve(header.body_bytes - buffered);
            return Ok(None);
        }
        let body = self.buffer.live()[..header.body_bytes].to_vec();
        header.verify_body(&body)?;
        self.buffer.consume(header.body_bytes);
        self.pending = None;
        Ok(Some(Frame {
            kind: header.kind,
            body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_buffer::COMPACT_BYTES_MIN;

    fn frame_bytes(kind: MessageKind, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(kind, body, &mut out).unwrap();
        out
    }

    #[test]
    fn header_layout_matches_the_documented_bytes() {
        // Proves the header is magic, version, kind, reserved, LE length, LE crc32 in that order.
        let bytes = frame_bytes(MessageKind::Response, b"abc");
        assert_eq!(&bytes[0..4], b"MRKB");
        assert_eq!(bytes[4], 1);
        assert_eq!(bytes[5], 2);
        assert_eq!(&bytes[6..8], &[0, 0]);
        assert_eq!(&bytes[8..12], &3u32.to_le_bytes());
        assert_eq!(&bytes[12..16], &crc32fast::hash(b"abc").to_le_bytes());
        assert_eq!(&bytes[16..], b"abc");
    }

    #[test]
    fn frames_split_into_single_bytes_reassemble() {
        // Proves a frame fed one byte per extend call comes out whole, exactly once.
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let bytes = frame_bytes(MessageKind::Request, &body);
        let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
        let mut frames = Vec::new();
        for byte in &bytes {
            decoder.extend(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            vec![Frame {
                kind: MessageKind::Request,
                body
            }]
        );
        assert_eq!(decoder.buffered_bytes(), 0);
    }

    #[test]
    fn several_frames_in_one_buffer_come_out_in_order() {
        // Proves one extend holding several frames (including an empty body) yields them all in order.
        let mut bytes = Vec::new();
        write_frame(MessageKind::Request, b"one", &mut bytes).unwrap();
        write_frame(MessageKind::Response, b"", &mut bytes).unwrap();
        write_frame(MessageKind::Request, &[0xFF; 300], &mut bytes).unwrap();
        bytes.extend_from_slice(&FRAME_MAGIC); // the start of a fourth frame
        let mut decoder = FrameDecoder::new(1024);
        decoder.extend(&bytes);
        let first = decoder.next_frame().unwrap().unwrap();
        let second = decoder.next_frame().unwrap().unwrap();
        let third = decoder.next_frame().unwrap().unwrap();
        assert_eq!(
            (first.kind, first.body.as_slice()),
            (MessageKind::Request, &b"one"[..])
        );
        assert_eq!((second.kind, second.body.len()), (MessageKind::Response, 0));
        assert_eq!(third.body, vec![0xFF; 300]);
        assert_eq!(decoder.next_frame().unwrap(), None);
        assert_eq!(decoder.buffered_bytes(), 4);
    }

    #[test]
    fn read_buffer_and_commit_read_feed_the_decoder() {
        // Proves reading straight into read_buffer in uneven chunks yields the same frames as extend.
        let mut bytes = Vec::new();
        for index in 0..50u32 {
            write_frame(
                MessageKind::Request,
                &index.to_le_bytes().repeat(index as usize),
                &mut bytes,
            )
            .unwrap();
        }
        let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
        let mut offset = 0;
        let mut count = 0u32;
        while offset < bytes.len() {
            let chunk = (bytes.len() - offset).min(7 + offset % 13);
            let target = decoder.read_buffer(chunk);
            target[..chunk].copy_from_slice(&bytes[offset..offset + chunk]);
            decoder.commit_read(chunk);
            offset += chunk;
            while let Some(frame) = decoder.next_frame().unwrap() {
                assert_eq!(frame.body, count.to_le_bytes().repeat(count as usize));
                count += 1;
            }
        }
        assert_eq!(count, 50);
    }

    #[test]
    fn bad_magic_is_rejected_and_sticks() {
        // Proves a wrong magic fails the stream and every later call returns the same error.
        let mut bytes = frame_bytes(MessageKind::Request, b"x");
        bytes[0] = b'X';
        let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
        decoder.extend(&bytes);
        let expected = FrameError::BadMagic(*b"XRKB");
        assert_eq!(decoder.next_frame(), Err(expected.clone()));
        decoder.extend(&frame_bytes(MessageKind::Request, b"y"));
        assert_eq!(decoder.next_frame(), Err(expected));
    }

    #[test]
    fn bad_version_unknown_kind_and_reserved_bits_are_rejected() {
        // Proves each header field check fires from the header alone.
        let good = frame_bytes(MessageKind::Request, b"body");
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header.copy_from_slice(&good[..FRAME_HEADER_BYTES]);

        let mut version = header;
        version[4] = 2;
        assert_eq!(
            decode_header(&version),
            Err(FrameError::UnsupportedVersion(2))
        );

        for kind in [0u8, 3, 255] {
            let mut unknown = header;
            unknown[5] = kind;
            assert_eq!(decode_header(&unknown), Err(FrameError::UnknownKind(kind)));
        }

        for index in [6usize, 7] {
            let mut reserved = header;
            reserved[index] = 0x80;
            assert_eq!(decode_header(&reserved), Err(FrameError::ReservedNotZero));
        }

        let decoded = decode_header(&header).unwrap();
        assert_eq!(decoded.kind, MessageKind::Request);
        assert_eq!(decoded.body_bytes, 4);
        assert_eq!(decoded.verify_body(b"body"), Ok(()));
    }

    #[test]
    fn corrupted_body_fails_the_checksum() {
        // Proves a flipped body bit is caught by the crc32 check, with both checksums reported.
        let mut bytes = frame_bytes(MessageKind::Response, b"payload");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
        decoder.extend(&bytes);
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::BadChecksum {
                expected: crc32fast::hash(b"payload"),
                actual: crc32fast::hash(&bytes[FRAME_HEADER_BYTES..]),
            })
        );
    }

    #[test]
    fn oversized_length_is_rejected_before_the_body_arrives() {
        // Proves a header claiming more than the bound fails at once and reserves nothing for the body.
        let mut header = frame_bytes(MessageKind::Request, b"")[..FRAME_HEADER_BYTES].to_vec();
        header[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&header);
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                body_bytes: u32::MAX as usize,
                body_bytes_max: 1 << 20,
            })
        );
        assert!(decoder.buffer.len_and_capacity().1 < 1 << 20);

        // The decoder's own bound applies too, and is capped at the absolute bound.
        let mut small = FrameDecoder::new(3);
        small.extend(&frame_bytes(MessageKind::Request, b"four"));
        assert!(matches!(
            small.next_frame(),
            Err(FrameError::TooLarge {
                body_bytes: 4,
                body_bytes_max: 3
            })
        ));
        assert_eq!(
            FrameDecoder::new(usize::MAX).body_bytes_max(),
            FRAME_BODY_BYTES_MAX
        );
    }

    #[test]
    fn write_frame_refuses_bodies_over_the_absolute_bound() {
        // Proves an unsendable body is refused and leaves the output untouched.
        let body = vec![0u8; FRAME_BODY_BYTES_MAX + 1];
        let mut out = b"prefix".to_vec();
        assert_eq!(
            write_frame(MessageKind::Request, &body, &mut out),
            Err(FrameError::TooLarge {
                body_bytes: FRAME_BODY_BYTES_MAX + 1,
                body_bytes_max: FRAME_BODY_BYTES_MAX,
            })
        );
        assert_eq!(out, b"prefix");
    }

    #[test]
    fn consumed_bytes_are_compacted_away() {
        // Proves a long-lived decoder does not keep consumed bytes: its buffer stays near one frame.
        let frame = frame_bytes(MessageKind::Request, &[7u8; 1000]);
        let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
        for _ in 0..1000 {
            decoder.extend(&frame[..500]);
            assert_eq!(decoder.next_frame().unwrap(), None);
            decoder.extend(&frame[500..]);
            assert!(decoder.next_frame().unwrap().is_some());
        }
        assert!(decoder.buffer.len_and_capacity().0 <= COMPACT_BYTES_MIN + frame.len());
    }
}
