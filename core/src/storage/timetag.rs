//! Timetags: the last-write-wins order of records of duplicated tables
//! (docs/duplication.md, "Timetags").
//!
//! A timetag is `(unix_time_us << 8) | cluster_id`: the wall-clock time a
//! write was made at, in microseconds, and the cluster (1..=127) it was
//! made in, which breaks ties. Two clusters that duplicate a table to each
//! other converge because each applies a shipped record only if its
//! timetag is not older than the one it holds for that key
//! (**dup-last-write-wins**).
//!
//! A record's timetag is kept in a *companion record* written in the same
//! batch as the record itself:
//!
//! ```text
//! companion key   = 0xFF 0xFF ‖ raw key
//! companion value = u32_be(0) ‖ u64_be(timetag) ‖ u8 flags   (bit 0: deleted)
//! ```
//!
//! No raw key of a record starts with `0xFF 0xFF`: a raw key starts with
//! its hash key's length as a big-endian u16, and hash keys are at most
//! [`crate::key::HASH_KEY_BYTES_MAX`] = 0xFFFE bytes. So companion records
//! sort after every record of the partition, outside every hash key's
//! range (which multi_get, sortkey_count, hash scans and point reads use),
//! and full scans stop at [`TIMETAG_KEY_PREFIX`]. The value's zero expire
//! time keeps the TTL compaction filter away from them. A delete leaves
//! its companion behind as a *tombstone* (flag `deleted`), so that an
//! older put shipped later does not bring the key back.
//!
//! ```
//! use markab_core::storage::timetag::{timetag, timetag_cluster_id, timetag_unix_us};
//! let tag = timetag(1_700_000_000_000_000, 2);
//! assert_eq!((timetag_unix_us(tag), timetag_cluster_id(tag)), (1_700_000_000_000_000, 2));
//! assert!(timetag(1_700_000_000_000_000, 3) > tag, "ties go to the higher cluster id");
//! ```

use crate::key::EPOCH_BEGIN_UNIX_S;
use crate::wire::message::OpError;

use super::{storage_error, WriteBatch};

/// A record's place in last-write-wins order: `(unix_time_us << 8) |
/// cluster_id`. 0 is older than every write: it stands for records
/// written before their table was duplicated, which have no companion.
pub type Timetag = u64;

/// The lowest cluster id.
pub const CLUSTER_ID_MIN: u8 = 1;
/// The highest cluster id.
pub const CLUSTER_ID_MAX: u8 = 127;

/// The first bytes of every companion record's key; no record's raw key
/// starts with them. Full scans end here.
pub const TIMETAG_KEY_PREFIX: [u8; 2] = [0xFF, 0xFF];

/// Bytes of a companion record's value.
pub const TIMETAG_VALUE_BYTES: usize = 4 + 8 + 1;

/// Flag bit of a companion value: the record was deleted (a tombstone).
const FLAG_DELETED: u8 = 1;

/// The timetag of a write made at `unix_us` in cluster `cluster_id`.
pub fn timetag(unix_us: u64, cluster_id: u8) -> Timetag {
    (unix_us << 8) | Timetag::from(cluster_id)
}

/// The time part of `tag`, in Unix microseconds.
pub fn timetag_unix_us(tag: Timetag) -> u64 {
    tag >> 8
}

/// The cluster part of `tag`.
pub fn timetag_cluster_id(tag: Timetag) -> u8 {
    tag as u8
}

/// Checks that `cluster_id` is in `1..=127`; the message names the range.
pub fn validate_cluster_id(cluster_id: u8) -> Result<(), String> {
    if (CLUSTER_ID_MIN..=CLUSTER_ID_MAX).contains(&cluster_id) {
        Ok(())
    } else {
        Err(format!(
            "cluster_id ({cluster_id}) is out of range (allowed {CLUSTER_ID_MIN}..={CLUSTER_ID_MAX}); each cluster that duplicates to another needs its own"
        ))
    }
}

/// The timetag of a local write in cluster `cluster_id` at `now_unix_us`
/// to a key whose latest timetag is `held`: newer than `held` whatever
/// the clock says (**local-write-newest**): the time part is
/// `max(now, held's + 1)`.
pub fn next_local_timetag(held: Timetag, now_unix_us: u64, cluster_id: u8) -> Timetag {
    let held_us = timetag_unix_us(held);
    timetag(now_unix_us.max(held_us.saturating_add(1)), cluster_id)
}

/// Unix microseconds at the start of second `now_epoch_s` of the TTL clock
/// (seconds since 2016-01-01): the clock of callers that have only that.
pub fn unix_us_of_epoch_s(now_epoch_s: u32) -> u64 {
    (EPOCH_BEGIN_UNIX_S + u64::from(now_epoch_s)) * 1_000_000
}

/// The companion key holding the timetag of the record under `raw_key`.
pub fn timetag_key(raw_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(TIMETAG_KEY_PREFIX.len() + raw_key.len());
    key.extend_from_slice(&TIMETAG_KEY_PREFIX);
    key.extend_from_slice(raw_key);
    key
}

/// Whether `raw_key` is a companion key.
pub fn is_timetag_key(raw_key: &[u8]) -> bool {
    raw_key.starts_with(&TIMETAG_KEY_PREFIX)
}

/// The raw key a companion key tags; `None` for any other key.
pub fn data_key_of(raw_key: &[u8]) -> Option<&[u8]> {
    raw_key.strip_prefix(&TIMETAG_KEY_PREFIX[..])
}

/// What a companion record says of its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldTimetag {
    pub timetag: Timetag,
    /// The record was deleted: the companion is a tombstone.
    pub deleted: bool,
}

/// A companion record's value.
pub fn encode_timetag_value(held: HeldTimetag) -> Vec<u8> {
    let mut value = Vec::with_capacity(TIMETAG_VALUE_BYTES);
    value.extend_from_slice(&0u32.to_be_bytes());
    value.extend_from_slice(&held.timetag.to_be_bytes());
    value.push(if held.deleted { FLAG_DELETED } else { 0 });
    value
}

/// Decodes a companion record's value; `StorageError` when it is not one.
pub fn decode_timetag_value(value: &[u8]) -> Result<HeldTimetag, OpError> {
    if value.len() != TIMETAG_VALUE_BYTES {
        return Err(storage_error(
            "corrupt timetag record",
            format!(
                "{} bytes where a timetag record has {TIMETAG_VALUE_BYTES}",
                value.len()
            ),
        ));
    }
    let timetag = Timetag::from_be_bytes(value[4..12].try_into().expect("8 bytes"));
    Ok(HeldTimetag {
        timetag,
        deleted: value[12] & FLAG_DELETED != 0,
    })
}

/// Whether the mutation-log payload `payload` is to be shipped to the
/// remote cluster: a local write is; a write received by duplication is
/// never shipped again (**dup-no-loop**), and the empty write has nothing
/// to ship.
pub fn should_ship(payload: &[u8]) -> Result<bool, OpError> {
    if payload.is_empty() {
        return Ok(false);
    }
    let batch = WriteBatch::decode(payload)?;
    Ok(batch.dup_source().is_none() && !batch.is_empty())
}

#[cfg(test)]
#[path = "timetag_tests.rs"]
mod tests;
