//! THFT request framing and reply splitting (sans-IO).
//!
//! Requests (all integers big-endian):
//!
//! | version | layout |
//! |---|---|
//! | 0 | `"THFT"`, u32 0, u32 48 (header length), u32 header crc (ignored), u32 body length, u32 body crc (ignored), i32 app_id, i32 partition_index, u32 timeout_ms, i32 thread_hash (ignored), u64 partition_hash; then the body |
//! | 1 | `"THFT"`, u32 1, u32 meta length, u32 body length; then a Thrift struct `{1 app_id i32, 2 partition_index i32, 3 client_timeout i32, 4 partition_hash i64, 5 is_backup_request bool}` of meta length bytes; then the body |
//!
//! Replies: an i32 total length that counts itself, then the rest (see
//! [`super::reply`]). [`ThftDecoder`] turns a byte stream into request
//! frames; [`reply_frame_len`] splits a reply stream. Any framing error
//! leaves the stream out of sync: the connection must be closed.

use super::binary::{Reader, Writer, T_BOOL, T_I32, T_I64};
use crate::frame::FRAME_BODY_BYTES_MAX;
use crate::stream_buffer::StreamBuffer;

/// The first four bytes of every request.
pub const THFT_MAGIC: [u8; 4] = *b"THFT";
/// Size of a version-0 request header.
pub const THFT_HEADER_V0_BYTES: usize = 48;
/// Size of the fixed part of a version-1 request header (the meta struct
/// follows it).
pub const THFT_HEADER_V1_BYTES: usize = 16;
/// Bound on a version-1 meta struct: its five fields take 37 bytes.
pub const THFT_META_BYTES_MAX: usize = 1024;
/// Absolute bound on a request body and on a whole reply frame (64 MiB,
/// Markab's frame bound). Servers apply smaller bounds of their own
/// through [`ThftDecoder::new`].
pub const THFT_BODY_BYTES_MAX: usize = FRAME_BODY_BYTES_MAX;
/// The smallest reply frame: its length and an empty error name.
pub const THFT_REPLY_BYTES_MIN: usize = 8;

// Body lengths travel as u32, reply lengths as i32.
const _: () = assert!(THFT_BODY_BYTES_MAX <= i32::MAX as usize);
const _: () = assert!(THFT_META_BYTES_MAX >= 64);

/// Most bytes a decoder reserves ahead for a body it awaits: a header alone
/// does not make it hold a large buffer; beyond this the buffer grows with
/// the bytes that arrive.
const DECODER_RESERVE_BYTES_MAX: usize = 1024 * 1024;

/// rDSN's thread hash of a gpid, which version-0 headers carry.
const THREAD_HASH_MULTIPLIER: i32 = 7919;

/// What a request header says (v0: 48 bytes; v1: 16 bytes + Thrift
/// request-meta struct).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestHeader {
    /// 0 or 1; [`encode_request_frame`] writes version 1 for 1 and version 0
    /// for anything else.
    pub version: u32,
    pub app_id: i32,
    pub partition_index: i32,
    /// The client's timeout (0 = none).
    pub timeout_ms: u32,
    /// CRC64 of the request's hash key; 0 when the client did not send one.
    pub partition_hash: u64,
    /// A read sent to a secondary (version 1 only).
    pub is_backup_request: bool,
}

/// One request: its header and its Thrift body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThftFrame {
    pub header: RequestHeader,
    pub body: Vec<u8>,
}

/// Why a THFT stream (or a reply frame) was rejected. Every variant means
/// the stream can no longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ThftError {
    #[error("bad request magic {0:02x?}, expected \"THFT\"")]
    BadMagic([u8; 4]),
    #[error("unsupported THFT header version {0}, expected 0 or 1")]
    UnsupportedVersion(u32),
    #[error("THFT v0 header length {0}, expected 48")]
    BadHeaderLength(u32),
    #[error("THFT body of {body_bytes} bytes exceeds the bound of {body_bytes_max} bytes")]
    TooLarge {
        body_bytes: usize,
        body_bytes_max: usize,
    },
    #[error("THFT request meta of {meta_bytes} bytes exceeds the bound of {meta_bytes_max} bytes")]
    MetaTooLarge {
        meta_bytes: usize,
        meta_bytes_max: usize,
    },
    #[error("THFT request meta is not a valid struct: {0}")]
    BadMeta(String),
    #[error("reply length {0} out of bounds")]
    BadReplyLength(i64),
    #[error("malformed reply: {0}")]
    BadReply(String),
}

/// Client side: a whole request (header v0 or v1 per `header.version`,
/// then `body`).
///
/// ```
/// use markab_wire::thrift::{encode_request_frame, RequestHeader, ThftDecoder};
/// let header = RequestHeader { version: 1, app_id: 2, partition_index: 3, ..Default::default() };
/// let bytes = encode_request_frame(&header, b"body");
/// let mut decoder = ThftDecoder::new(1024);
/// decoder.extend(&bytes);
/// let frame = decoder.next_frame().unwrap().unwrap();
/// assert_eq!((frame.header, frame.body.as_slice()), (header, &b"body"[..]));
/// ```
pub fn encode_request_frame(header: &RequestHeader, body: &[u8]) -> Vec<u8> {
    // Bodies over 4 GiB cannot be framed; no caller holds one and every
    // decoder refuses anything over THFT_BODY_BYTES_MAX anyway.
    let body_bytes = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(THFT_HEADER_V0_BYTES + body.len());
    out.extend_from_slice(&THFT_MAGIC);
    if header.version == 1 {
        let meta = encode_meta(header);
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&body_bytes.to_be_bytes());
        out.extend_from_slice(&meta);
    } else {
        let thread_hash = header
            .app_id
            .wrapping_mul(THREAD_HASH_MULTIPLIER)
            .wrapping_add(header.partition_index);
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&(THFT_HEADER_V0_BYTES as u32).to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // header crc: not checked
        out.extend_from_slice(&body_bytes.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // body crc: not checked
        out.extend_from_slice(&header.app_id.to_be_bytes());
        out.extend_from_slice(&header.partition_index.to_be_bytes());
        out.extend_from_slice(&header.timeout_ms.to_be_bytes());
        out.extend_from_slice(&thread_hash.to_be_bytes());
        out.extend_from_slice(&header.partition_hash.to_be_bytes());
        debug_assert_eq!(out.len(), THFT_HEADER_V0_BYTES);
    }
    out.extend_from_slice(body);
    out
}

/// The version-1 request meta struct, every field written.
fn encode_meta(header: &RequestHeader) -> Vec<u8> {
    let mut writer = Writer::with_capacity(40);
    writer.field_i32(1, header.app_id);
    writer.field_i32(2, header.partition_index);
    writer.field_i32(3, i32::try_from(header.timeout_ms).unwrap_or(i32::MAX));
    writer.field_i64(4, header.partition_hash as i64);
    writer.field_bool(5, header.is_backup_request);
    writer.write_stop();
    writer.bytes
}

/// Reads a version-1 meta struct into `header`; absent fields keep their
/// defaults, unknown ones are skipped.
fn decode_meta(meta: &[u8], header: &mut RequestHeader) -> Result<(), ThftError> {
    let mut reader = Reader::new(meta);
    reader
        .read_struct(1, |reader, id, ttype| {
            match (id, ttype) {
                (1, T_I32) => header.app_id = reader.read_i32()?,
                (2, T_I32) => header.partition_index = reader.read_i32()?,
                // A negative timeout means none.
                (3, T_I32) => header.timeout_ms = u32::try_from(reader.read_i32()?).unwrap_or(0),
                (4, T_I64) => header.partition_hash = reader.read_i64()? as u64,
                (5, T_BOOL) => header.is_backup_request = reader.read_bool()?,
                _ => return Ok(false),
            }
            Ok(true)
        })
        .map_err(|error| ThftError::BadMeta(error.to_string()))
}

fn be_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_be_bytes(word)
}

fn be_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_be_bytes(word)
}

/// A validated header whose meta and body are awaited.
#[derive(Clone, Copy, Debug)]
struct Pending {
    header: RequestHeader,
    meta_bytes: usize,
    body_bytes: usize,
}

/// Streaming request decoder, the same shape as
/// [`crate::frame::FrameDecoder`]: feed it with
/// [`extend`](ThftDecoder::extend) or
/// [`read_buffer`](ThftDecoder::read_buffer) +
/// [`commit_read`](ThftDecoder::commit_read), then call
/// [`next_frame`](ThftDecoder::next_frame) until it returns `Ok(None)`.
///
/// The magic is checked as soon as four bytes arrived; lengths are checked
/// against their bounds from the header alone, before any body byte is
/// buffered for them. Memory held is what was fed and not yet returned,
/// plus at most 1 MiB reserved ahead for an awaited body.
/// After the first error the decoder keeps returning that error.
#[derive(Debug)]
pub struct ThftDecoder {
    body_bytes_max: usize,
    buffer: StreamBuffer,
    pending: Option<Pending>,
    failed: Option<ThftError>,
}

impl ThftDecoder {
    /// A decoder that rejects bodies longer than `body_bytes_max`, itself
    /// capped at [`THFT_BODY_BYTES_MAX`].
    pub fn new(body_bytes_max: usize) -> ThftDecoder {
        ThftDecoder {
            body_bytes_max: body_bytes_max.min(THFT_BODY_BYTES_MAX),
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
    /// how many were written with [`commit_read`](ThftDecoder::commit_read).
    pub fn read_buffer(&mut self, bytes_min: usize) -> &mut [u8] {
        self.buffer.read_buffer(bytes_min)
    }

    /// Marks `bytes` bytes of the last [`read_buffer`](ThftDecoder::read_buffer)
    /// as received. Counts beyond that slice are clamped to it.
    pub fn commit_read(&mut self, bytes: usize) {
        self.buffer.commit_read(bytes);
    }

    /// The next whole request, `Ok(None)` when more bytes are needed, or the
    /// error that makes the stream unusable.
    pub fn next_frame(&mut self) -> Result<Option<ThftFrame>, ThftError> {
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

    /// The buffer's length and capacity (tests check what it holds).
    #[cfg(test)]
    pub(crate) fn buffer_bytes(&self) -> (usize, usize) {
        self.buffer.len_and_capacity()
    }

    /// Validates the fixed header at the front of the buffer, if whole.
    fn decode_header(&mut self) -> Result<Option<Pending>, ThftError> {
        let live = self.buffer.live();
        if live.len() < 4 {
            return Ok(None);
        }
        let magic = [live[0], live[1], live[2], live[3]];
        if magic != THFT_MAGIC {
            return Err(ThftError::BadMagic(magic));
        }
        if live.len() < 8 {
            return Ok(None);
        }
        let version = be_u32(live, 4);
        let (pending, header_bytes) = match version {
            0 => {
                if live.len() < THFT_HEADER_V0_BYTES {
                    return Ok(None);
                }
                let header_length = be_u32(live, 8);
                if header_length as usize != THFT_HEADER_V0_BYTES {
                    return Err(ThftError::BadHeaderLength(header_length));
                }
                let body_bytes = be_u32(live, 16) as usize;
                let header = RequestHeader {
                    version: 0,
                    app_id: be_u32(live, 24) as i32,
                    partition_index: be_u32(live, 28) as i32,
                    timeout_ms: be_u32(live, 32),
                    // 36..40: thread hash, recomputed by servers, ignored.
                    partition_hash: be_u64(live, 40),
                    is_backup_request: false,
                };
                let pending = Pending {
                    header,
                    meta_bytes: 0,
                    body_bytes,
                };
                (pending, THFT_HEADER_V0_BYTES)
            }
            1 => {
                if live.len() < THFT_HEADER_V1_BYTES {
                    return Ok(None);
                }
                let meta_bytes = be_u32(live, 8) as usize;
                if meta_bytes > THFT_META_BYTES_MAX {
                    return Err(ThftError::MetaTooLarge {
                        meta_bytes,
                        meta_bytes_max: THFT_META_BYTES_MAX,
                    });
                }
                let header = RequestHeader {
                    version: 1,
                    ..RequestHeader::default()
                };
                let pending = Pending {
                    header,
                    meta_bytes,
                    body_bytes: be_u32(live, 12) as usize,
                };
                (pending, THFT_HEADER_V1_BYTES)
            }
            other => return Err(ThftError::UnsupportedVersion(other)),
        };
        if pending.body_bytes > self.body_bytes_max {
            return Err(ThftError::TooLarge {
                body_bytes: pending.body_bytes,
                body_bytes_max: self.body_bytes_max,
            });
        }
        self.buffer.consume(header_bytes);
        Ok(Some(pending))
    }

    fn decode_next(&mut self) -> Result<Option<ThftFrame>, ThftError> {
        let pending = match self.pending {
            Some(pending) => pending,
            None => match self.decode_header()? {
                Some(pending) => {
                    self.pending = Some(pending);
                    pending
                }
                None => return Ok(None),
            },
        };
        // Both lengths are within their bounds, so this cannot overflow.
        let rest_bytes = pending.meta_bytes + pending.body_bytes;
        let buffered = self.buffer.buffered_bytes();
        if buffered < rest_bytes {
            // Make room for (the start of) the rest now rather than by
            // repeated doubling.
            self.buffer
                .reserve((rest_bytes - buffered).min(DECODER_RESERVE_BYTES_MAX));
            return Ok(None);
        }
        let mut header = pending.header;
        let (meta, rest) = self.buffer.live().split_at(pending.meta_bytes);
        if !meta.is_empty() {
            decode_meta(meta, &mut header)?;
        }
        let body = rest[..pending.body_bytes].to_vec();
        self.buffer.consume(rest_bytes);
        self.pending = None;
        Ok(Some(ThftFrame { header, body }))
    }
}

/// Client side: the length of the reply frame at the front of `buffer`
/// (its length prefix included), `Ok(None)` when fewer than four bytes are
/// there, or an error when the length is below [`THFT_REPLY_BYTES_MIN`] or
/// above [`THFT_BODY_BYTES_MAX`].
///
/// ```
/// use markab_wire::thrift::{encode_error_reply, reply_frame_len};
/// let reply = encode_error_reply("RPC_RRDB_RRDB_GET", 1, "ERR_BUSY");
/// assert_eq!(reply_frame_len(&reply[..3]), Ok(None));
/// assert_eq!(reply_frame_len(&reply), Ok(Some(reply.len())));
/// ```
pub fn reply_frame_len(buffer: &[u8]) -> Result<Option<usize>, ThftError> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let total = be_u32(buffer, 0) as i32;
    match usize::try_from(total) {
        Ok(total) if (THFT_REPLY_BYTES_MIN..=THFT_BODY_BYTES_MAX).contains(&total) => {
            Ok(Some(total))
        }
        _ => Err(ThftError::BadReplyLength(i64::from(total))),
    }
}
