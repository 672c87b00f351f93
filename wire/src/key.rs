//! The raw key layout, shared by storage and by Pegasus's client protocol,
//! whose key blobs are raw keys (docs/storage.md, "Key layout"):
//!
//! ```text
//! raw key = u16_be(len(hash_key)) ‖ hash_key ‖ sort_key
//! ```
//!
//! ```
//! use markab_wire::key::{decode_key, encode_key, next_key};
//! let raw = encode_key(b"user", b"name");
//! assert_eq!(raw, b"\x00\x04username");
//! assert_eq!(decode_key(&raw), Some((&b"user"[..], &b"name"[..])));
//! assert_eq!(next_key(b"\x00\x04user"), Some(b"\x00\x04uses".to_vec()));
//! ```

/// Bytes of the hash-key length in front of a raw key.
pub const HASH_KEY_LENGTH_BYTES: usize = 2;

/// The raw key of `(hash_key, sort_key)`. A hash key over 65535 bytes has
/// no raw key; its length is cut here, so callers that take hash keys from
/// users check them first (storage refuses them with `InvalidArgument`).
pub fn encode_key(hash_key: &[u8], sort_key: &[u8]) -> Vec<u8> {
    let hash_key = &hash_key[..hash_key.len().min(u16::MAX as usize)];
    let mut raw = Vec::with_capacity(HASH_KEY_LENGTH_BYTES + hash_key.len() + sort_key.len());
    raw.extend_from_slice(&(hash_key.len() as u16).to_be_bytes());
    raw.extend_from_slice(hash_key);
    raw.extend_from_slice(sort_key);
    raw
}

/// Splits a raw key into `(hash_key, sort_key)`; `None` when it is shorter
/// than its length field says (or than the length field itself).
pub fn decode_key(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let length_bytes: [u8; HASH_KEY_LENGTH_BYTES] =
        raw.get(..HASH_KEY_LENGTH_BYTES)?.try_into().ok()?;
    let hash_key_end = HASH_KEY_LENGTH_BYTES + usize::from(u16::from_be_bytes(length_bytes));
    let hash_key = raw.get(HASH_KEY_LENGTH_BYTES..hash_key_end)?;
    Some((hash_key, &raw[hash_key_end..]))
}

/// The smallest byte string greater than every string that starts with
/// `bytes`: the last byte that is not 0xFF incremented, the rest dropped
/// (Pegasus's "next blob"). `None` when there is none (empty or all 0xFF),
/// which means "unbounded".
pub fn next_key(bytes: &[u8]) -> Option<Vec<u8>> {
    let last = bytes.iter().rposition(|byte| *byte != 0xFF)?;
    let mut next = bytes[..=last].to_vec();
    next[last] += 1;
    Some(next)
}
