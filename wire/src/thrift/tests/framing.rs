//! Request framing: header layouts, the streaming decoder, bounds, and the
//! reply length prefix.

use super::*;

#[test]
fn v0_header_layout_matches_the_documented_bytes() {
    // Proves the 48-byte v0 header: magic, version 0, length 48, zero crcs, body length,
    // app id, partition, timeout, thread hash app_id*7919+pidx, partition hash — big-endian.
    let header = RequestHeader {
        version: 0,
        app_id: 3,
        partition_index: 5,
        timeout_ms: 1000,
        partition_hash: 0x0102_0304_0506_0708,
        is_backup_request: false,
    };
    let bytes = encode_request_frame(&header, b"abc");
    assert_eq!(&bytes[0..4], b"THFT");
    assert_eq!(&bytes[4..8], &0u32.to_be_bytes());
    assert_eq!(&bytes[8..12], &48u32.to_be_bytes());
    assert_eq!(&bytes[12..16], &[0; 4]);
    assert_eq!(&bytes[16..20], &3u32.to_be_bytes());
    assert_eq!(&bytes[20..24], &[0; 4]);
    assert_eq!(&bytes[24..28], &3i32.to_be_bytes());
    assert_eq!(&bytes[28..32], &5i32.to_be_bytes());
    assert_eq!(&bytes[32..36], &1000u32.to_be_bytes());
    assert_eq!(&bytes[36..40], &(3 * 7919 + 5i32).to_be_bytes());
    assert_eq!(&bytes[40..48], &0x0102_0304_0506_0708u64.to_be_bytes());
    assert_eq!(&bytes[48..], b"abc");
    assert_eq!(through_decoder(&header, b"abc").header, header);
}

#[test]
fn v1_header_carries_the_meta_struct() {
    // Proves v1 is magic, version 1, meta length, body length, then a Thrift meta struct that
    // the decoder reads back into every header field, backup flag included.
    let header = RequestHeader {
        version: 1,
        app_id: -2,
        partition_index: 63,
        timeout_ms: 5000,
        partition_hash: u64::MAX - 1,
        is_backup_request: true,
    };
    let bytes = encode_request_frame(&header, b"body");
    assert_eq!(&bytes[0..4], b"THFT");
    assert_eq!(&bytes[4..8], &1u32.to_be_bytes());
    let meta_bytes = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!(&bytes[12..16], &4u32.to_be_bytes());
    // Five fields: three i32 (7 bytes each), an i64 (11), a bool (4), STOP.
    assert_eq!(meta_bytes, 3 * 7 + 11 + 4 + 1);
    assert_eq!(&bytes[16 + meta_bytes..], b"body");
    let frame = through_decoder(&header, b"body");
    assert_eq!(frame.header, header);
    assert_eq!(frame.body, b"body");
}

#[test]
fn v1_meta_defaults_absent_fields_and_skips_unknown_ones() {
    // Proves a v1 meta with only a partition index and an unknown list field decodes, the
    // absent fields defaulting to 0/false; a negative timeout reads as none.
    let mut meta = vec![8, 0, 2, 0, 0, 0, 9]; // 2: partition_index = 9
    meta.extend_from_slice(&[15, 0, 77, 8, 0, 0, 0, 1, 0, 0, 0, 4]); // 77: list<i32> [4]
    meta.extend_from_slice(&[8, 0, 3, 0xFF, 0xFF, 0xFF, 0xFF]); // 3: client_timeout = -1
    meta.push(0);
    let mut bytes = b"THFT".to_vec();
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&2u32.to_be_bytes());
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(b"ok");
    let mut decoder = ThftDecoder::new(1024);
    decoder.extend(&bytes);
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(
        frame.header,
        RequestHeader {
            version: 1,
            partition_index: 9,
            ..RequestHeader::default()
        }
    );
    assert_eq!(frame.body, b"ok");
}

#[test]
fn frames_fed_one_byte_at_a_time_come_out_whole() {
    // Proves both header versions reassemble from single-byte reads, in order, exactly once.
    let mut bytes = Vec::new();
    for index in 0..20u8 {
        let header = RequestHeader {
            version: u32::from(index % 2),
            app_id: i32::from(index),
            ..RequestHeader::default()
        };
        bytes.extend_from_slice(&encode_request_frame(&header, &vec![index; index as usize]));
    }
    let mut decoder = ThftDecoder::new(THFT_BODY_BYTES_MAX);
    let mut frames = Vec::new();
    for byte in &bytes {
        let target = decoder.read_buffer(1);
        target[0] = *byte;
        decoder.commit_read(1);
        while let Some(frame) = decoder.next_frame().unwrap() {
            frames.push(frame);
        }
    }
    assert_eq!(frames.len(), 20);
    for (index, frame) in frames.iter().enumerate() {
        assert_eq!(frame.header.app_id, index as i32);
        assert_eq!(frame.header.version, index as u32 % 2);
        assert_eq!(frame.body, vec![index as u8; index]);
    }
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn bad_magic_fails_after_four_bytes_and_sticks() {
    // Proves a wrong magic is reported as soon as 4 bytes arrived, and every later call
    // returns the same error even after good bytes.
    let mut decoder = ThftDecoder::new(1024);
    decoder.extend(b"MRK");
    assert_eq!(decoder.next_frame(), Ok(None));
    decoder.extend(b"B");
    let expected = ThftError::BadMagic(*b"MRKB");
    assert_eq!(decoder.next_frame(), Err(expected.clone()));
    decoder.extend(&encode_request_frame(&RequestHeader::default(), b"x"));
    assert_eq!(decoder.next_frame(), Err(expected));
}

#[test]
fn unsupported_version_and_bad_v0_length_are_rejected() {
    // Proves versions other than 0 and 1, and a v0 header length other than 48, fail from the
    // header alone.
    let good = encode_request_frame(&RequestHeader::default(), b"x");
    let mut version = good.clone();
    version[4..8].copy_from_slice(&2u32.to_be_bytes());
    let mut decoder = ThftDecoder::new(1024);
    decoder.extend(&version[..8]);
    assert_eq!(decoder.next_frame(), Err(ThftError::UnsupportedVersion(2)));

    let mut length = good;
    length[8..12].copy_from_slice(&47u32.to_be_bytes());
    let mut decoder = ThftDecoder::new(1024);
    decoder.extend(&length);
    assert_eq!(decoder.next_frame(), Err(ThftError::BadHeaderLength(47)));
}

#[test]
fn oversized_lengths_fail_before_the_body_and_reserve_little() {
    // Proves a body over the decoder's bound, and a v1 meta over its bound, fail at the header;
    // a valid header claiming a large body reserves at most 1 MiB ahead of the bytes.
    let mut huge = encode_request_frame(&RequestHeader::default(), b"");
    huge[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut decoder = ThftDecoder::new(1 << 20);
    decoder.extend(&huge);
    assert_eq!(
        decoder.next_frame(),
        Err(ThftError::TooLarge {
            body_bytes: u32::MAX as usize,
            body_bytes_max: 1 << 20,
        })
    );

    let mut meta = encode_request_frame(
        &RequestHeader {
            version: 1,
            ..Default::default()
        },
        b"",
    );
    meta[8..12].copy_from_slice(&(THFT_META_BYTES_MAX as u32 + 1).to_be_bytes());
    let mut decoder = ThftDecoder::new(1024);
    decoder.extend(&meta[..16]);
    assert_eq!(
        decoder.next_frame(),
        Err(ThftError::MetaTooLarge {
            meta_bytes: THFT_META_BYTES_MAX + 1,
            meta_bytes_max: THFT_META_BYTES_MAX,
        })
    );

    let mut claim = encode_request_frame(&RequestHeader::default(), b"");
    claim[16..20].copy_from_slice(&(60u32 << 20).to_be_bytes());
    let mut decoder = ThftDecoder::new(THFT_BODY_BYTES_MAX);
    decoder.extend(&claim);
    assert_eq!(decoder.next_frame(), Ok(None));
    let (_, capacity) = decoder.buffer_bytes();
    assert!(capacity <= 2 << 20, "{capacity}");

    assert_eq!(
        ThftDecoder::new(usize::MAX).body_bytes_max(),
        THFT_BODY_BYTES_MAX
    );
}

#[test]
fn bad_v1_meta_fails_the_stream() {
    // Proves a v1 meta that is not a struct (an unknown field type) is a stream error.
    let mut bytes = b"THFT".to_vec();
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&3u32.to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(&[99, 0, 1]);
    let mut decoder = ThftDecoder::new(1024);
    decoder.extend(&bytes);
    assert!(matches!(decoder.next_frame(), Err(ThftError::BadMeta(_))));
}

#[test]
fn consumed_bytes_are_compacted_away() {
    // Proves a long-lived decoder keeps its buffer near one frame over many frames.
    let frame = encode_request_frame(&RequestHeader::default(), &[7u8; 1000]);
    let mut decoder = ThftDecoder::new(THFT_BODY_BYTES_MAX);
    for _ in 0..1000 {
        decoder.extend(&frame[..500]);
        assert_eq!(decoder.next_frame().unwrap(), None);
        decoder.extend(&frame[500..]);
        assert!(decoder.next_frame().unwrap().is_some());
    }
    assert!(decoder.buffer_bytes().0 <= 64 * 1024 + frame.len());
}

#[test]
fn reply_frame_len_splits_a_stream_and_rejects_bad_lengths() {
    // Proves the reply length counts itself, needs four bytes, and is bounded both ways.
    let reply = encode_error_reply(RPC_GET, 9, "ERR_BUSY");
    let mut stream = reply.clone();
    stream.extend_from_slice(&reply);
    assert_eq!(reply_frame_len(&stream), Ok(Some(reply.len())));
    assert_eq!(reply_frame_len(&stream[..3]), Ok(None));
    assert_eq!(
        reply_frame_len(&3i32.to_be_bytes()),
        Err(ThftError::BadReplyLength(3))
    );
    assert_eq!(
        reply_frame_len(&(-1i32).to_be_bytes()),
        Err(ThftError::BadReplyLength(-1))
    );
    let over = THFT_BODY_BYTES_MAX as i32 + 1;
    assert_eq!(
        reply_frame_len(&over.to_be_bytes()),
        Err(ThftError::BadReplyLength(i64::from(over)))
    );
}
