//! Pegasus's key and value encodings, partition hashing and TTL clock.
//!
//! Byte layouts are specified in docs/storage.md ("Key layout", "Value
//! layout"); they are Pegasus's (`pegasus_key_schema.h`, value schema v0) so
//! that data and routing stay interoperable:
//!
//! ```text
//! raw key   = u16_be(len(hash_key)) ‖ hash_key ‖ sort_key
//! raw value = u32_be(expire_ts)     ‖ user_data          (expire_ts 0 = no TTL)
//! ```
//!
//! ```
//! use markab_core::key::{decode_key, encode_key};
//! let raw = encode_key(b"user", b"name").unwrap();
//! assert_eq!(raw, b"\x00\x04username");
//! assert_eq!(decode_key(&raw), Some((&b"user"[..], &b"name"[..])));
//! ```

pub use markab_wire::key::{decode_key, next_key, HASH_KEY_LENGTH_BYTES};

use crate::wire::message::OpError;

/// Pegasus's CRC-64: reflected, normal polynomial 0xad93d23594c93659
/// (reflected 0x9a6c9329ac4bc9b5), init and final xor all ones.
const CRC64_PEGASUS: crc::Algorithm<u64> = crc::Algorithm {
    width: 64,
    poly: 0xad93_d235_94c9_3659,
    init: !0,
    refin: true,
    refout: true,
    xorout: !0,
    check: 0xae8b_1486_0a79_9888,
    residue: 0,
};

/// Slice-by-16 tables (32 KiB): hash keys are hashed on every request.
static CRC64: crc::Crc<u64, crc::Table<16>> = crc::Crc::<u64, crc::Table<16>>::new(&CRC64_PEGASUS);

/// The longest hash key, in bytes: its length is a big-endian u16 and
/// Pegasus reserves 0xFFFF, so hash keys must be shorter than 64 KiB.
pub const HASH_KEY_BYTES_MAX: usize = 65534;

/// Bytes of the expire-time header at the start of every raw value.
pub const VALUE_HEADER_BYTES: usize = 4;

/// Unix time of Markab's (and Pegasus's) TTL epoch: 2016-01-01 00:00:00 UTC.
pub const EPOCH_BEGIN_UNIX_S: u64 = 1_451_606_400;

const _: () = assert!(HASH_KEY_BYTES_MAX < u16::MAX as usize);

/// Pegasus's CRC-64 of `bytes`.
///
/// ```
/// assert_eq!(markab_core::key::crc64(b"123456789"), 0xae8b14860a799888);
/// ```
pub fn crc64(bytes: &[u8]) -> u64 {
    CRC64.checksum(bytes)
}

/// The partition hash of a record: crc64 of the hash key, or of the sort
/// key when the hash key is empty (Pegasus's `pegasus_key_hash`).
pub fn partition_hash(hash_key: &[u8], sort_key: &[u8]) -> u64 {
    if hash_key.is_empty() {
        crc64(sort_key)
    } else {
        crc64(hash_key)
    }
}

/// The partition that owns `partition_hash`: unsigned modulo the partition
/// count. A partition count of 0 (invalid) maps everything to partition 0
/// instead of dividing by zero.
pub fn partition_index(partition_hash: u64, partition_count: u32) -> u32 {
    if partition_count == 0 {
        return 0;
    }
    (partition_hash % u64::from(partition_count)) as u32
}

/// Checks that `hash_key` fits the key encoding (at most
/// [`HASH_KEY_BYTES_MAX`] bytes).
pub fn check_hash_key(hash_key: &[u8]) -> Result<(), OpError> {
    if hash_key.len() > HASH_KEY_BYTES_MAX {
        return Err(OpError::invalid_argument(format!(
            "hash key of {} bytes exceeds the maximum of {} bytes",
            hash_key.len(),
            HASH_KEY_BYTES_MAX
        )));
    }
    Ok(())
}

/// The raw storage key of `(hash_key, sort_key)`:
/// `u16_be(len(hash_key)) ‖ hash_key ‖ sort_key`.
/// Fails with `InvalidArgument` when the hash key is too long.
pub fn encode_key(hash_key: &[u8], sort_key: &[u8]) -> Result<Vec<u8>, OpError> {
    check_hash_key(hash_key)?;
    Ok(markab_wire::key::encode_key(hash_key, sort_key))
}

/// The raw-key prefix shared by every record of `hash_key` (its length
/// field and bytes). Fails with `InvalidArgument` when the hash key is too
/// long.
pub fn hash_key_prefix(hash_key: &[u8]) -> Result<Vec<u8>, OpError> {
    encode_key(hash_key, &[])
}

/// Whether `candidate == next_key(bytes)`, without building it.
pub fn is_next_key(bytes: &[u8], candidate: &[u8]) -> bool {
    match bytes.iter().rposition(|byte| *byte != 0xFF) {
        Some(last) => {
            candidate.len() == last + 1
                && candidate[..last] == bytes[..last]
                && candidate[last] == bytes[last] + 1
        }
        None => false,
    }
}

/// Seconds since [`EPOCH_BEGIN_UNIX_S`] by the wall clock
/// ([`crate::wall_clock`]; 0 before it, saturating at `u32::MAX`).
pub fn now_epoch_s() -> u32 {
    epoch_s_of_unix_us(crate::wall_clock::unix_us())
}

/// The second of storage's epoch that Unix time `unix_us` falls in.
pub fn epoch_s_of_unix_us(unix_us: u64) -> u32 {
    let unix_s = unix_us / 1_000_000;
    u32::try_from(unix_s.saturating_sub(EPOCH_BEGIN_UNIX_S)).unwrap_or(u32::MAX)
}

/// The raw value of a record: `u32_be(expire_ts) ‖ user_data`.
pub fn encode_value(expire_ts: u32, user_data: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(VALUE_HEADER_BYTES + user_data.len());
    raw.extend_from_slice(&expire_ts.to_be_bytes());
    raw.extend_from_slice(user_data);
    raw
}

/// Splits a raw value into `(expire_ts, user_data)`; `None` when it is
/// shorter than its header.
pub fn decode_value(raw: &[u8]) -> Option<(u32, &[u8])> {
    let header: [u8; VALUE_HEADER_BYTES] = raw.get(..VALUE_HEADER_BYTES)?.try_into().ok()?;
    Some((u32::from_be_bytes(header), &raw[VALUE_HEADER_BYTES..]))
}

/// Whether a record with `expire_ts` is expired at `now_epoch_s`:
/// `expire_ts > 0 && expire_ts <= now_epoch_s`.
pub fn is_expired(expire_ts: u32, now_epoch_s: u32) -> bool {
    expire_ts > 0 && expire_ts <= now_epoch_s
}

/// The expire time of a record written at `now_epoch_s` with a TTL of
/// `ttl_seconds`; 0 (no TTL) when `ttl_seconds` is 0. Saturates at
/// `u32::MAX`.
pub fn expire_ts_for_ttl(ttl_seconds: u32, now_epoch_s: u32) -> u32 {
    if ttl_seconds == 0 {
        0
    } else {
        now_epoch_s.saturating_add(ttl_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::ErrorCode;

    #[test]
    fn crc64_matches_pegasus_vectors() {
        // Proves the CRC-64 variant against the published Pegasus test vectors.
        assert_eq!(crc64(b"123456789"), 0xae8b_1486_0a79_9888);
        assert_eq!(crc64(b"a"), 0x8c2f_8445_b4cb_fc3c);
        assert_eq!(crc64(b""), 0);
    }

    #[test]
    fn partition_hash_falls_back_to_sort_key() {
        // Proves an empty hash key hashes the sort key and a non-empty one ignores it.
        assert_eq!(partition_hash(b"", b"a"), crc64(b"a"));
        assert_eq!(partition_hash(b"h", b"a"), crc64(b"h"));
        assert_eq!(partition_hash(b"h", b"b"), crc64(b"h"));
    }

    #[test]
    fn partition_index_is_unsigned_modulo() {
        // Proves the index is the unsigned remainder, including for hashes above i64::MAX.
        assert_eq!(partition_index(u64::MAX, 8), 7);
        assert_eq!(partition_index(0xae8b_1486_0a79_9888, 16), 8);
        assert_eq!(partition_index(5, 0), 0);
    }

    #[test]
    fn key_round_trips_and_rejects_long_hash_keys() {
        // Proves encode/decode are inverse, the layout is Pegasus's, and the hash-key bound is enforced.
        let raw = encode_key(b"hk", b"sk").unwrap();
        assert_eq!(raw, b"\x00\x02hksk");
        assert_eq!(decode_key(&raw), Some((&b"hk"[..], &b"sk"[..])));
        assert_eq!(decode_key(b"\x00\x00"), Some((&b""[..], &b""[..])));
        assert_eq!(decode_key(b"\x00"), None);
        assert_eq!(decode_key(b"\x00\x05abc"), None);
        let longest = vec![7u8; HASH_KEY_BYTES_MAX];
        let raw = encode_key(&longest, b"s").unwrap();
        assert_eq!(decode_key(&raw), Some((&longest[..], &b"s"[..])));
        let error = encode_key(&vec![7u8; HASH_KEY_BYTES_MAX + 1], b"").unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(error.message.contains("65535") && error.message.contains("65534"));
        assert_eq!(hash_key_prefix(b"abc").unwrap(), b"\x00\x03abc");
    }

    #[test]
    fn next_key_increments_last_non_ff_byte() {
        // Proves Pegasus's "next blob": increment the last non-0xFF byte, truncate, None when unbounded.
        assert_eq!(next_key(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(next_key(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(next_key(b"\xff\xff"), None);
        assert_eq!(next_key(b""), None);
    }

    #[test]
    fn is_next_key_agrees_with_next_key() {
        let samples: [&[u8]; 7] = [b"", b"a", b"ab", b"a\xff\xff", b"\xff\xff", b"ac", b"b"];
        for bytes in samples {
            for candidate in samples {
                assert_eq!(
                    is_next_key(bytes, candidate),
                    next_key(bytes).as_deref() == Some(candidate),
                    "{bytes:?} {candidate:?}"
                );
            }
        }
    }

    #[test]
    fn value_header_and_ttl_rules() {
        // Proves the v0 value layout, the expiry predicate and the TTL-to-expire-time rule.
        let raw = encode_value(0x0102_0304, b"data");
        assert_eq!(raw, b"\x01\x02\x03\x04data");
        assert_eq!(decode_value(&raw), Some((0x0102_0304, &b"data"[..])));
        assert_eq!(decode_value(b"\x00\x00\x00"), None);
        assert!(!is_expired(0, 100));
        assert!(is_expired(100, 100));
        assert!(!is_expired(101, 100));
        assert_eq!(expire_ts_for_ttl(0, 100), 0);
        assert_eq!(expire_ts_for_ttl(5, 100), 105);
        assert_eq!(expire_ts_for_ttl(u32::MAX, 100), u32::MAX);
    }

    #[test]
    fn clock_counts_from_2016() {
        // Proves the TTL clock is seconds since 2016-01-01 (later than 2025-01-01 today).
        let since_2016_s = now_epoch_s();
        assert!(since_2016_s > (1_735_689_600 - EPOCH_BEGIN_UNIX_S) as u32);
    }
}
