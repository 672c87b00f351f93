//! Thrift's binary protocol (TBinaryProtocol), bounded, for the handful of
//! structs Pegasus's clients exchange (sans-IO).
//!
//! Every integer is big-endian. A string or binary is an i32 length and the
//! bytes; a field header is its type byte and an i16 id (type 0 = STOP ends
//! the struct); a list is the element type byte and an i32 count; a map the
//! key and value type bytes and an i32 count. Message headers are written
//! strict (`0x8001_0000 | type`, name, seqid) and read either way.
//!
//! [`Reader`] never trusts a length: a string longer than what is left, a
//! negative length, a list that claims more elements than the remaining
//! bytes could hold, or nesting deeper than [`NESTING_DEPTH_MAX`] is an
//! error before anything is allocated, so any input costs at most its own
//! size in memory and time proportional to its length.

/// Field and element types of the binary protocol.
pub const T_STOP: u8 = 0;
pub const T_BOOL: u8 = 2;
pub const T_BYTE: u8 = 3;
pub const T_DOUBLE: u8 = 4;
pub const T_I16: u8 = 6;
pub const T_I32: u8 = 8;
pub const T_I64: u8 = 10;
pub const T_STRING: u8 = 11;
pub const T_STRUCT: u8 = 12;
pub const T_MAP: u8 = 13;
pub const T_SET: u8 = 14;
pub const T_LIST: u8 = 15;

/// Message types.
pub const MESSAGE_CALL: u8 = 1;
pub const MESSAGE_REPLY: u8 = 2;
pub const MESSAGE_ONEWAY: u8 = 4;

/// The version word of a strict message header (`| type` in the low byte).
const STRICT_VERSION_1: u32 = 0x8001_0000;
const STRICT_VERSION_MASK: u32 = 0xffff_0000;

/// Deepest nesting of structs, lists, sets and maps read or skipped.
/// Pegasus's own structs nest at most four deep (args, request, list,
/// element); the rest of the bound is room for fields we do not know.
pub const NESTING_DEPTH_MAX: usize = 16;

/// Longest message (RPC) name accepted. rDSN keeps 47 bytes of it; the
/// longest name Pegasus defines is well under 64.
pub const MESSAGE_NAME_BYTES_MAX: usize = 256;

/// Most elements one list, set or map may claim, whatever the bytes left.
pub const CONTAINER_ELEMENTS_MAX: usize = 1 << 22;

/// Most elements reserved ahead for a list before they are read: a claimed
/// count reserves at most this many, so memory follows the elements that
/// actually arrive, not what a header says.
pub const PREALLOCATE_ELEMENTS_MAX: usize = 1024;

/// An empty vector with room for `count` elements, at most
/// [`PREALLOCATE_ELEMENTS_MAX`].
pub fn vec_for<T>(count: usize) -> Vec<T> {
    Vec::with_capacity(count.min(PREALLOCATE_ELEMENTS_MAX))
}

/// Why bytes could not be read as the expected Thrift value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// What was wrong, for logs and error replies.
    pub message: String,
    /// Byte offset in the decoded buffer where it was noticed.
    pub offset: usize,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

pub type DecodeResult<T> = Result<T, DecodeError>;

/// A message header as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageBegin<'a> {
    pub name: &'a [u8],
    pub kind: u8,
    pub seqid: i32,
}

/// The fewest bytes one value of `ttype` takes on the wire; `None` for a
/// byte that is not a type.
fn value_bytes_min(ttype: u8) -> Option<usize> {
    match ttype {
        T_BOOL | T_BYTE => Some(1),
        T_I16 => Some(2),
        T_I32 => Some(4),
        T_I64 | T_DOUBLE => Some(8),
        T_STRING => Some(4),
        T_STRUCT => Some(1),
        T_MAP => Some(6),
        T_SET | T_LIST => Some(5),
        _ => None,
    }
}

/// A cursor over a received buffer.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub fn error<T>(&self, message: impl Into<String>) -> DecodeResult<T> {
        Err(DecodeError {
            message: message.into(),
            offset: self.position,
        })
    }

    /// The next `count` bytes.
    pub fn take(&mut self, count: usize) -> DecodeResult<&'a [u8]> {
        if count > self.remaining() {
            return self.error(format!("{count} bytes needed, {} left", self.remaining()));
        }
        let taken = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(taken)
    }

    fn take_array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    pub fn read_byte(&mut self) -> DecodeResult<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    /// Any non-zero byte is true, as Thrift's readers take it.
    pub fn read_bool(&mut self) -> DecodeResult<bool> {
        Ok(self.read_byte()? != 0)
    }

    pub fn read_i16(&mut self) -> DecodeResult<i16> {
        Ok(i16::from_be_bytes(self.take_array()?))
    }

    pub fn read_i32(&mut self) -> DecodeResult<i32> {
        Ok(i32::from_be_bytes(self.take_array()?))
    }

    pub fn read_i64(&mut self) -> DecodeResult<i64> {
        Ok(i64::from_be_bytes(self.take_array()?))
    }

    /// A length-prefixed byte string (Thrift binary, or an rDSN blob).
    pub fn read_binary(&mut self) -> DecodeResult<&'a [u8]> {
        let length = self.read_i32()?;
        let Ok(length) = usize::try_from(length) else {
            return self.error(format!("negative length {length}"));
        };
        self.take(length)
    }

    /// A string that must be UTF-8.
    pub fn read_string(&mut self) -> DecodeResult<String> {
        let bytes = self.read_binary()?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_string()),
            Err(_) => self.error("string is not UTF-8"),
        }
    }

    /// The next field's `(type, id)`, or `None` at the struct's STOP.
    pub fn read_field_header(&mut self) -> DecodeResult<Option<(u8, i16)>> {
        let ttype = self.read_byte()?;
        if ttype == T_STOP {
            return Ok(None);
        }
        let id = self.read_i16()?;
        Ok(Some((ttype, id)))
    }

    /// A container's element count, checked against the remaining bytes
    /// (each element takes at least `element_bytes_min`) and
    /// [`CONTAINER_ELEMENTS_MAX`].
    fn read_count(&mut self, element_bytes_min: usize) -> DecodeResult<usize> {
        let count = self.read_i32()?;
        let Ok(count) = usize::try_from(count) else {
            return self.error(format!("negative element count {count}"));
        };
        if count > CONTAINER_ELEMENTS_MAX {
            return self.error(format!(
                "{count} elements exceed the bound of {CONTAINER_ELEMENTS_MAX}"
            ));
        }
        if count.saturating_mul(element_bytes_min) > self.remaining() {
            return self.error(format!(
                "{count} elements cannot fit in the {} bytes left",
                self.remaining()
            ));
        }
        Ok(count)
    }

    /// A list (or set) header: `(element type, count)`.
    pub fn read_list_header(&mut self) -> DecodeResult<(u8, usize)> {
        let element_type = self.read_byte()?;
        let Some(element_bytes_min) = value_bytes_min(element_type) else {
            return self.error(format!("unknown list element type {element_type}"));
        };
        let count = self.read_count(element_bytes_min)?;
        Ok((element_type, count))
    }

    /// A map header: `(key type, value type, count)`.
    pub fn read_map_header(&mut self) -> DecodeResult<(u8, u8, usize)> {
        let key_type = self.read_byte()?;
        let value_type = self.read_byte()?;
        let (Some(key_bytes_min), Some(value_bytes_min)) =
            (value_bytes_min(key_type), value_bytes_min(value_type))
        else {
            return self.error(format!("unknown map types {key_type}/{value_type}"));
        };
        let count = self.read_count(key_bytes_min + value_bytes_min)?;
        Ok((key_type, value_type, count))
    }

    /// A message header, strict (version word first) or not (name first).
    pub fn read_message_begin(&mut self) -> DecodeResult<MessageBegin<'a>> {
        let word = self.read_i32()?;
        let (name_length, kind) = if word < 0 {
            let word = word as u32;
            if word & STRICT_VERSION_MASK != STRICT_VERSION_1 {
                return self.error(format!("bad message version word {word:#010x}"));
            }
            ((self.read_i32()?), (word & 0xff) as u8)
        } else {
            (word, 0)
        };
        let Ok(name_length) = usize::try_from(name_length) else {
            return self.error(format!("negative message name length {name_length}"));
        };
        if name_length > MESSAGE_NAME_BYTES_MAX {
            return self.error(format!(
                "message name of {name_length} bytes exceeds {MESSAGE_NAME_BYTES_MAX}"
            ));
        }
        let name = self.take(name_length)?;
        let kind = if word < 0 { kind } else { self.read_byte()? };
        let seqid = self.read_i32()?;
        Ok(MessageBegin { name, kind, seqid })
    }

    /// Skips one value of `ttype` found at nesting `depth`.
    pub fn skip(&mut self, ttype: u8, depth: usize) -> DecodeResult<()> {
        if depth > NESTING_DEPTH_MAX {
            return self.error(format!("nesting deeper than {NESTING_DEPTH_MAX}"));
        }
        match ttype {
            T_BOOL | T_BYTE => self.take(1).map(drop),
            T_I16 => self.take(2).map(drop),
            T_I32 => self.take(4).map(drop),
            T_I64 | T_DOUBLE => self.take(8).map(drop),
            T_STRING => self.read_binary().map(drop),
            T_STRUCT => {
                while let Some((field_type, _)) = self.read_field_header()? {
                    self.skip(field_type, depth + 1)?;
                }
                Ok(())
            }
            T_MAP => {
                let (key_type, value_type, count) = self.read_map_header()?;
                for _ in 0..count {
                    self.skip(key_type, depth + 1)?;
                    self.skip(value_type, depth + 1)?;
                }
                Ok(())
            }
            T_SET | T_LIST => {
                let (element_type, count) = self.read_list_header()?;
                for _ in 0..count {
                    self.skip(element_type, depth + 1)?;
                }
                Ok(())
            }
            _ => self.error(format!("unknown field type {ttype}")),
        }
    }

    /// Reads a struct's fields up to its STOP: `field` gets each one's
    /// reader, id and type and returns whether it read the value; values it
    /// leaves are skipped (unknown ids, or a known id with another type, as
    /// Thrift's generated readers do).
    pub fn read_struct(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Reader<'a>, i16, u8) -> DecodeResult<bool>,
    ) -> DecodeResult<()> {
        if depth > NESTING_DEPTH_MAX {
            return self.error(format!("nesting deeper than {NESTING_DEPTH_MAX}"));
        }
        while let Some((field_type, id)) = self.read_field_header()? {
            if !field(self, id, field_type)? {
                self.skip(field_type, depth + 1)?;
            }
        }
        Ok(())
    }
}

/// Builds binary-protocol bytes.
#[derive(Debug, Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            bytes: Vec::with_capacity(capacity),
        }
    }

    pub fn write_byte(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub fn write_bool(&mut self, value: bool) {
        self.bytes.push(u8::from(value));
    }

    pub fn write_i16(&mut self, value: i16) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn write_i32(&mut self, value: i32) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn write_i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    /// A length-prefixed byte string. Thrift lengths are i32: a slice over
    /// 2 GiB cannot be expressed and is cut at `i32::MAX` bytes (no caller
    /// holds one: every frame is bounded far below).
    pub fn write_binary(&mut self, bytes: &[u8]) {
        let length = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.write_i32(length);
        self.bytes.extend_from_slice(&bytes[..length as usize]);
    }

    pub fn write_field(&mut self, ttype: u8, id: i16) {
        self.write_byte(ttype);
        self.write_i16(id);
    }

    pub fn write_stop(&mut self) {
        self.write_byte(T_STOP);
    }

    /// A list header; counts over `i32::MAX` are cut like binaries (no
    /// caller holds such a list).
    pub fn write_list(&mut self, element_type: u8, count: usize) {
        self.write_byte(element_type);
        self.write_i32(i32::try_from(count).unwrap_or(i32::MAX));
    }

    pub fn write_map(&mut self, key_type: u8, value_type: u8, count: usize) {
        self.write_byte(key_type);
        self.write_byte(value_type);
        self.write_i32(i32::try_from(count).unwrap_or(i32::MAX));
    }

    /// A strict message header.
    pub fn write_message_begin(&mut self, name: &str, kind: u8, seqid: i32) {
        self.write_i32((STRICT_VERSION_1 | u32::from(kind)) as i32);
        self.write_binary(name.as_bytes());
        self.write_i32(seqid);
    }

    /// Shorthands for a field and its value.
    pub fn field_i32(&mut self, id: i16, value: i32) {
        self.write_field(T_I32, id);
        self.write_i32(value);
    }

    pub fn field_i64(&mut self, id: i16, value: i64) {
        self.write_field(T_I64, id);
        self.write_i64(value);
    }

    pub fn field_bool(&mut self, id: i16, value: bool) {
        self.write_field(T_BOOL, id);
        self.write_bool(value);
    }

    pub fn field_string(&mut self, id: i16, value: &str) {
        self.write_field(T_STRING, id);
        self.write_binary(value.as_bytes());
    }

    /// An rDSN blob field: a T_STRUCT header over a raw binary.
    pub fn field_blob(&mut self, id: i16, value: &[u8]) {
        self.write_field(T_STRUCT, id);
        self.write_binary(value);
    }
}
