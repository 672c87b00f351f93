//! Scan ranges: full encoded start/stop keys to Markab's `ScanRange`.

use super::*;

fn hash(hash_key: &[u8], start: &[u8], stop: &[u8]) -> ScanRange {
    ScanRange::Hash {
        hash_key: hash_key.to_vec(),
        start_sort_key: start.to_vec(),
        stop_sort_key: stop.to_vec(),
    }
}

#[test]
fn a_range_inside_one_hash_key_is_a_hash_scan() {
    // Proves start and stop keys of the same hash key give a hash scan of their sort keys.
    assert_eq!(
        scan_range_of_keys(b"\x00\x02hka", b"\x00\x02hkz", false),
        Ok(hash(b"hk", b"a", b"z"))
    );
    assert_eq!(
        scan_range_of_keys(b"\x00\x02hk", b"\x00\x02hk\x00", false),
        Ok(hash(b"hk", b"", b"\x00"))
    );
}

#[test]
fn the_successor_of_the_hash_key_means_its_end() {
    // Proves the stop keys clients send for "to the end of the hash key" — the Java/old-Go
    // successor of the whole prefix, the new-Go successor within the hash key, and the
    // successor of hash key + sort-key prefix — give a hash scan with an empty stop.
    assert_eq!(
        scan_range_of_keys(b"\x00\x02hka", b"\x00\x02hl", false),
        Ok(hash(b"hk", b"a", b""))
    );
    assert_eq!(
        scan_range_of_keys(b"\x00\x02h\xff", b"\x00\x02i", false),
        Ok(hash(b"h\xff", b"", b""))
    );
    assert_eq!(
        scan_range_of_keys(b"\x00\x02\xff\xff", b"\x00\x03", false),
        Ok(hash(b"\xff\xff", b"", b""))
    );
    // Between the hash key's records and its successor nothing else sorts.
    assert_eq!(
        scan_range_of_keys(b"\x00\x02hk", b"\x00\x02hk\xff\xff\xff", false),
        Ok(hash(b"hk", b"", b"\xff\xff\xff"))
    );
    // A prefix filter's stop key: the successor of hk ‖ "ab" stays inside the hash key.
    assert_eq!(
        scan_range_of_keys(b"\x00\x02hkab", b"\x00\x02hkac", false),
        Ok(hash(b"hk", b"ab", b"ac"))
    );
    let (start, stop, full) = keys_of_scan_range(&hash(b"hk", b"a", b""));
    assert_eq!(
        (start.as_slice(), stop.as_slice(), full),
        (&b"\x00\x02hka"[..], &b"\x00\x02hl"[..], false)
    );
}

#[test]
fn ranges_across_hash_keys_are_full_scans() {
    // Proves full_scan, a range reaching past the hash key's successor, pypegasus's unordered
    // scanner range and a start key that is not a key all become full scans.
    assert_eq!(
        scan_range_of_keys(b"\x00\x02hka", b"\x00\x02hkz", true),
        Ok(ScanRange::Full)
    );
    assert_eq!(
        scan_range_of_keys(b"\x00\x02hka", b"\x00\x02hm", false),
        Ok(ScanRange::Full)
    );
    assert_eq!(
        scan_range_of_keys(b"\x00\x00", "\u{ff}\u{ff}".as_bytes(), false),
        Ok(ScanRange::Full)
    );
    assert_eq!(
        scan_range_of_keys(b"", b"\xff\xff", false),
        Ok(ScanRange::Full)
    );
    assert_eq!(
        scan_range_of_keys(b"\x00\x09ab", b"\x00\x02hk", false),
        Ok(ScanRange::Full)
    );
    assert_eq!(
        keys_of_scan_range(&ScanRange::Full),
        (vec![0, 0], vec![0xFF, 0xFF], true)
    );
}

#[test]
fn ranges_markab_cannot_express_are_refused() {
    // Proves a stop key at the hash key's first record, or before the hash key, is an error
    // (and reaches clients as ERR_INVALID_PARAMETERS).
    assert!(scan_range_of_keys(b"\x00\x02hka", b"\x00\x02hk", false).is_err());
    assert!(scan_range_of_keys(b"\x00\x02hka", b"\x00\x02ha", false).is_err());
    assert!(scan_range_of_keys(b"\x00\x02hka", b"", false).is_err());
}
