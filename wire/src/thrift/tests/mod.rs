//! Tests of the THFT codec, one file per concern; shared fixtures here.

mod binary;
mod errors;
mod framing;
mod golden;
mod robustness;
mod round_trip;
mod scan_range;

use super::*;
use crate::message::{
    CheckAndMutateRequest, CheckAndSetRequest, CheckType, Filter, FilterType, Key, MultiGetRequest,
    Mutation, Request, ScanRange, ScanRequest, SortKeyValue,
};

/// A "now" in seconds since 2016 around the year 2025.
pub(super) const NOW: u32 = 300_000_000;

/// Frames `body` under `header`, feeds it to a decoder and returns the one
/// frame that comes out.
pub(super) fn through_decoder(header: &RequestHeader, body: &[u8]) -> ThftFrame {
    let bytes = encode_request_frame(header, body);
    let mut decoder = ThftDecoder::new(THFT_BODY_BYTES_MAX);
    decoder.extend(&bytes);
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.buffered_bytes(), 0);
    frame
}

/// A multi_get with every field off its default.
pub(super) fn multi_get_everything() -> MultiGetRequest {
    MultiGetRequest {
        hash_key: b"user\x00\xff".to_vec(),
        sort_keys: Vec::new(),
        max_kv_count: 17,
        max_kv_size: 4096,
        no_value: true,
        start_sort_key: b"a".to_vec(),
        stop_sort_key: b"m".to_vec(),
        start_inclusive: false,
        stop_inclusive: true,
        sort_key_filter: Filter::new(FilterType::MatchPostfix, "x"),
        reverse: true,
    }
}

fn scan(range: ScanRange) -> ScanRequest {
    ScanRequest {
        range,
        start_inclusive: true,
        stop_inclusive: false,
        hash_key_filter: Filter::new(FilterType::MatchPrefix, "h"),
        sort_key_filter: Filter::new(FilterType::MatchAnywhere, "s"),
        batch_size: 250,
        no_value: true,
        only_return_count: false,
    }
}

/// Every data request shape the mapping covers (TTLs relative to [`NOW`]).
pub(super) fn every_data_request() -> Vec<Request> {
    let key = Key::new("hk", "sk");
    let mut counting = scan(ScanRange::Full);
    counting.only_return_count = true;
    counting.hash_key_filter = Filter::none();
    vec![
        Request::Get(key.clone()),
        Request::Get(Key::new("", "only a sort key")),
        Request::Get(Key::new(vec![0xFF; 300], Vec::new())),
        Request::Del(key.clone()),
        Request::Ttl(key.clone()),
        Request::Set {
            key: key.clone(),
            value: b"value".to_vec(),
            ttl_seconds: 0,
        },
        Request::Set {
            key: key.clone(),
            value: vec![0u8; 3000],
            ttl_seconds: 86_400,
        },
        Request::MultiGet(multi_get_everything()),
        Request::MultiGet(MultiGetRequest::range("hk")),
        Request::MultiGet(MultiGetRequest {
            sort_keys: vec![b"a".to_vec(), Vec::new(), b"zz".to_vec()],
            ..MultiGetRequest::range("hk")
        }),
        Request::MultiSet {
            hash_key: b"hk".to_vec(),
            kvs: vec![
                SortKeyValue {
                    sort_key: b"a".to_vec(),
                    value: b"1".to_vec(),
                },
                SortKeyValue {
                    sort_key: Vec::new(),
                    value: Vec::new(),
                },
            ],
            ttl_seconds: 3600,
        },
        Request::MultiDel {
            hash_key: b"hk".to_vec(),
            sort_keys: vec![b"a".to_vec(), b"b".to_vec()],
        },
        Request::SortKeyCount {
            hash_key: b"hk".to_vec(),
        },
        Request::Incr {
            key: key.clone(),
            increment: -5,
            ttl_seconds: 0,
        },
        Request::Incr {
            key: key.clone(),
            increment: i64::MAX,
            ttl_seconds: 10,
        },
        Request::Incr {
            key: key.clone(),
            increment: 1,
            ttl_seconds: -1,
        },
        Request::CheckAndSet(CheckAndSetRequest {
            hash_key: b"hk".to_vec(),
            check_sort_key: b"c".to_vec(),
            check_type: CheckType::ValueIntGreater,
            check_operand: b"10".to_vec(),
            set_sort_key: b"c".to_vec(),
            set_value: b"11".to_vec(),
            set_ttl_seconds: 0,
            return_check_value: true,
        }),
        Request::CheckAndSet(CheckAndSetRequest {
            hash_key: b"hk".to_vec(),
            check_sort_key: b"c".to_vec(),
            check_type: CheckType::ValueNotExist,
            check_operand: Vec::new(),
            set_sort_key: b"other".to_vec(),
            set_value: b"v".to_vec(),
            set_ttl_seconds: 600,
            return_check_value: false,
        }),
        Request::CheckAndMutate(CheckAndMutateRequest {
            hash_key: b"hk".to_vec(),
            check_sort_key: b"c".to_vec(),
            check_type: CheckType::ValueBytesEqual,
            check_operand: b"x".to_vec(),
            mutations: vec![
                Mutation::Put {
                    sort_key: b"p".to_vec(),
                    value: b"pv".to_vec(),
                    ttl_seconds: 30,
                },
                Mutation::Delete {
                    sort_key: b"d".to_vec(),
                },
                Mutation::Put {
                    sort_key: b"q".to_vec(),
                    value: Vec::new(),
                    ttl_seconds: 0,
                },
            ],
            return_check_value: true,
        }),
        Request::BatchGet {
            keys: vec![key.clone(), Key::new("other", ""), Key::new("", "x")],
        },
        Request::GetScanner(scan(ScanRange::Hash {
            hash_key: b"hk".to_vec(),
            start_sort_key: b"a".to_vec(),
            stop_sort_key: b"z".to_vec(),
        })),
        Request::GetScanner(scan(ScanRange::Hash {
            hash_key: b"hk".to_vec(),
            start_sort_key: Vec::new(),
            stop_sort_key: Vec::new(),
        })),
        Request::GetScanner(scan(ScanRange::Hash {
            hash_key: vec![b'a', 0xFF, 0xFF],
            start_sort_key: b"s".to_vec(),
            stop_sort_key: Vec::new(),
        })),
        Request::GetScanner(scan(ScanRange::Full)),
        Request::GetScanner(counting),
        Request::Scan { context_id: 7 },
        Request::ClearScanner { context_id: 7 },
    ]
}

/// A small seeded xorshift generator: reproducible inputs without a crate.
pub(super) struct XorShift(u64);

impl XorShift {
    pub(super) fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..bound` (`bound` > 0).
    pub(super) fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}
