//! The bounded binary-protocol reader: lengths, counts and nesting are
//! checked before anything is trusted.

use crate::thrift::binary::*;

fn list_claiming(element_type: u8, count: i32, tail: &[u8]) -> Vec<u8> {
    let mut bytes = vec![element_type];
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes.extend_from_slice(tail);
    bytes
}

#[test]
fn negative_and_overrunning_lengths_are_errors() {
    // Proves a binary with a negative length, or one longer than what is left, is refused.
    let mut negative = Reader::new(&[0xFF, 0xFF, 0xFF, 0xFE, 1, 2]);
    assert!(negative
        .read_binary()
        .unwrap_err()
        .message
        .contains("negative"));
    let mut overrun = Reader::new(&[0, 0, 0, 9, 1, 2]);
    assert!(overrun.read_binary().is_err());
    let mut exact = Reader::new(&[0, 0, 0, 2, 1, 2]);
    assert_eq!(exact.read_binary().unwrap(), &[1, 2]);
    assert_eq!(exact.remaining(), 0);
}

#[test]
fn list_counts_are_bounded_by_the_bytes_left() {
    // Proves a list header claiming more elements than the remaining bytes can hold (at each
    // type's minimum size), a negative count, or an unknown element type is refused.
    assert!(Reader::new(&list_claiming(T_I64, 2, &[0; 15]))
        .read_list_header()
        .is_err());
    assert_eq!(
        Reader::new(&list_claiming(T_I64, 2, &[0; 16])).read_list_header(),
        Ok((T_I64, 2))
    );
    assert!(Reader::new(&list_claiming(T_STRUCT, i32::MAX, &[0; 64]))
        .read_list_header()
        .is_err());
    assert!(Reader::new(&list_claiming(T_I32, -1, &[]))
        .read_list_header()
        .is_err());
    assert!(Reader::new(&list_claiming(99, 0, &[]))
        .read_list_header()
        .is_err());
    let mut map = vec![T_STRING, T_STRING];
    map.extend_from_slice(&3i32.to_be_bytes());
    map.extend_from_slice(&[0; 23]); // 3 pairs need 24 bytes
    assert!(Reader::new(&map).read_map_header().is_err());
}

#[test]
fn skipping_is_bounded_in_depth() {
    // Proves skipping nested structs stops at NESTING_DEPTH_MAX and succeeds just below it.
    let nested = |depth: usize| {
        let mut bytes = Vec::new();
        for _ in 0..depth {
            bytes.extend_from_slice(&[T_STRUCT, 0, 1]);
        }
        bytes.extend(std::iter::repeat_n(T_STOP, depth + 1));
        bytes
    };
    let deep = nested(NESTING_DEPTH_MAX + 2);
    assert!(Reader::new(&deep).skip(T_STRUCT, 1).is_err());
    let shallow = nested(NESTING_DEPTH_MAX - 2);
    let mut reader = Reader::new(&shallow);
    assert_eq!(reader.skip(T_STRUCT, 1), Ok(()));
    assert_eq!(reader.remaining(), 0);
}

#[test]
fn message_headers_read_strict_and_non_strict() {
    // Proves both message header forms decode to the same name, type and seqid, and that a
    // bad version word or an overlong name is refused.
    let mut writer = Writer::default();
    writer.write_message_begin("RPC_X", MESSAGE_CALL, 42);
    let strict = writer.bytes;
    let mut loose = 5i32.to_be_bytes().to_vec();
    loose.extend_from_slice(b"RPC_X");
    loose.push(MESSAGE_ONEWAY);
    loose.extend_from_slice(&42i32.to_be_bytes());
    let read_strict = Reader::new(&strict).read_message_begin().unwrap();
    assert_eq!(
        (read_strict.name, read_strict.kind, read_strict.seqid),
        (&b"RPC_X"[..], MESSAGE_CALL, 42)
    );
    let read_loose = Reader::new(&loose).read_message_begin().unwrap();
    assert_eq!(
        (read_loose.name, read_loose.kind, read_loose.seqid),
        (&b"RPC_X"[..], MESSAGE_ONEWAY, 42)
    );
    let mut bad_version = strict.clone();
    bad_version[1] = 0x02;
    assert!(Reader::new(&bad_version).read_message_begin().is_err());
    let mut long = (MESSAGE_NAME_BYTES_MAX as i32 + 1).to_be_bytes().to_vec();
    long.extend(std::iter::repeat_n(b'A', MESSAGE_NAME_BYTES_MAX + 1));
    long.extend_from_slice(&[1, 0, 0, 0, 0]);
    assert!(Reader::new(&long).read_message_begin().is_err());
}

#[test]
fn claimed_counts_reserve_little() {
    // Proves a list claiming a million elements reserves room for at most
    // PREALLOCATE_ELEMENTS_MAX of them before any arrives.
    let reserved: Vec<Vec<u8>> = vec_for(1_000_000);
    assert_eq!(reserved.capacity(), PREALLOCATE_ELEMENTS_MAX);
}
