//! The values inside requests that need more than a copy: key blobs, TTLs
//! (absolute 2016-epoch seconds on the wire, relative in Markab), and
//! get_scanner key ranges (full encoded keys on the wire, a `ScanRange` in
//! Markab). The rules are in the module documentation of [`super`].

pub use crate::key::{decode_key, encode_key};
use crate::key::{next_key, HASH_KEY_LENGTH_BYTES};
use crate::message::ScanRange;

// ---- TTLs ----------------------------------------------------------------

/// Markab's relative TTL for a Pegasus `expire_ts_seconds` of a put,
/// multi_put, check_and_set or check_and_mutate put. The i32 on the wire is
/// read as the u32 Pegasus's server stores; 0 = no TTL. An expire time at or
/// before `now_epoch2016_seconds` becomes a TTL of 1: the record expires at
/// the end of the current second instead of at once (Markab has no TTL that
/// is already over).
pub fn ttl_seconds_of_expire_ts(expire_ts_seconds: i32, now_epoch2016_seconds: u32) -> u32 {
    let expire_ts = expire_ts_seconds as u32;
    if expire_ts == 0 {
        0
    } else if expire_ts <= now_epoch2016_seconds {
        1
    } else {
        expire_ts - now_epoch2016_seconds
    }
}

/// The Pegasus `expire_ts_seconds` for Markab's relative TTL (0 = none);
/// saturates at `u32::MAX`, written as the i32 with the same bits.
pub fn expire_ts_of_ttl_seconds(ttl_seconds: u32, now_epoch2016_seconds: u32) -> i32 {
    if ttl_seconds == 0 {
        0
    } else {
        now_epoch2016_seconds.saturating_add(ttl_seconds) as i32
    }
}

/// Markab's incr TTL for an incr's `expire_ts_seconds`: 0 keeps the old
/// TTL, < 0 clears it, > 0 is absolute (at or before now: 1, as for puts).
pub fn incr_ttl_seconds_of_expire_ts(expire_ts_seconds: i32, now_epoch2016_seconds: u32) -> i32 {
    match expire_ts_seconds {
        0 => 0,
        ..0 => -1,
        _ => {
            // Positive, so the difference fits in an i32.
            let expire_ts = expire_ts_seconds as u32;
            if expire_ts <= now_epoch2016_seconds {
                1
            } else {
                (expire_ts - now_epoch2016_seconds) as i32
            }
        }
    }
}

/// The incr `expire_ts_seconds` for Markab's incr TTL (saturating at
/// `i32::MAX`, the latest time an incr can set).
pub fn incr_expire_ts_of_ttl_seconds(ttl_seconds: i32, now_epoch2016_seconds: u32) -> i32 {
    match ttl_seconds {
        0 => 0,
        ..0 => -1,
        _ => i32::try_from(now_epoch2016_seconds.saturating_add(ttl_seconds as u32))
            .unwrap_or(i32::MAX),
    }
}

// ---- scan ranges -------------------------------------------------------------

/// The Markab range of a get_scanner's `[start_key, stop_key]` (full
/// encoded keys). See the module documentation, "Scan ranges".
pub fn scan_range_of_keys(
    start_key: &[u8],
    stop_key: &[u8],
    full_scan: bool,
) -> Result<ScanRange, String> {
    if full_scan {
        return Ok(ScanRange::Full);
    }
    let Some((hash_key, start_sort_key)) = decode_key(start_key) else {
        return Ok(ScanRange::Full);
    };
    let prefix = &start_key[..HASH_KEY_LENGTH_BYTES + hash_key.len()];
    if stop_key.starts_with(prefix) {
        let stop_sort_key = &stop_key[prefix.len()..];
        if stop_sort_key.is_empty() {
            return Err("a stop key at the hash key's first record is not supported".into());
        }
        return Ok(ScanRange::Hash {
            hash_key: hash_key.to_vec(),
            start_sort_key: start_sort_key.to_vec(),
            stop_sort_key: stop_sort_key.to_vec(),
        });
    }
    if stop_key < prefix {
        return Err("the stop key sorts before the start key's hash key".into());
    }
    // A hash key's prefix is at most 65536 bytes and its length bytes are
    // never both 0xFF, so it has a successor.
    match next_key(prefix) {
        Some(successor) if stop_key <= successor.as_slice() => Ok(ScanRange::Hash {
            hash_key: hash_key.to_vec(),
            start_sort_key: start_sort_key.to_vec(),
            stop_sort_key: Vec::new(),
        }),
        _ => Ok(ScanRange::Full),
    }
}

/// The `(start_key, stop_key, full_scan)` a Pegasus client sends for
/// `range`: a hash key's end is the successor of its prefix, a full scan is
/// `[00 00, FF FF]` with `full_scan` set.
pub fn keys_of_scan_range(range: &ScanRange) -> (Vec<u8>, Vec<u8>, bool) {
    match range {
        ScanRange::Hash {
            hash_key,
            start_sort_key,
            stop_sort_key,
        } => {
            let start_key = encode_key(hash_key, start_sort_key);
            let stop_key = if stop_sort_key.is_empty() {
                let prefix = encode_key(hash_key, &[]);
                next_key(&prefix).unwrap_or(prefix)
            } else {
                encode_key(hash_key, stop_sort_key)
            };
            (start_key, stop_key, false)
        }
        ScanRange::Full => (vec![0, 0], vec![0xFF, 0xFF], true),
    }
}
