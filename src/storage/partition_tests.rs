//! Focused tests of the tricky corners of [`Partition`] semantics, run on
//! both engines where the engine matters. The broad model-based test is
//! tests/storage_model.rs.

use super::*;
use crate::key::{self, encode_key, encode_value};
use crate::wire::message::{
    CheckAndMutateRequest, CheckAndSetRequest, CheckAndSetResult, CheckType, ErrorCode, Filter,
    FilterType, Key, MultiGetRequest, Mutation, Record, Request, Response, ResponseBody, ScanRange,
    ScanRequest, SortKeyValue,
};

const NOW: u32 = 1_000_000;

fn memory() -> Partition<MemoryEngine> {
    Partition::new(MemoryEngine::new(), StorageLimits::default())
}

fn rocks(dir: &tempfile::TempDir) -> Partition<RocksEngine> {
    let shard = ShardStorage::new(&StorageTuning::default()).unwrap();
    Partition::new(
        RocksEngine::open(dir.path(), &shard).unwrap(),
        StorageLimits::default(),
    )
}

fn set<E: StorageEngine>(
    partition: &Partition<E>,
    hash_key: &str,
    sort_key: &str,
    value: &str,
    ttl_seconds: u32,
) {
    let request = Request::Set {
        key: Key::new(hash_key, sort_key),
        value: value.into(),
        ttl_seconds,
    };
    assert_eq!(partition.execute(&request, NOW), Ok(ResponseBody::Done));
}

fn error_code(response: Response) -> ErrorCode {
    response.expect_err("expected an error").code
}

fn sort_keys(response: Response) -> (Vec<String>, bool) {
    match response {
        Ok(ResponseBody::MultiGet { kvs, incomplete }) => (
            kvs.into_iter()
                .map(|kv| String::from_utf8(kv.sort_key).unwrap())
                .collect(),
            incomplete,
        ),
        other => panic!("not a multi_get answer: {other:?}"),
    }
}

fn range(hash_key: &str, max_kv_count: i32) -> MultiGetRequest {
    MultiGetRequest {
        max_kv_count,
        ..MultiGetRequest::range(hash_key)
    }
}

#[test]
fn incomplete_only_when_a_limit_cuts_the_range() {
    // Proves `incomplete` is false when the range ends exactly at the count limit and true when records remain.
    let partition = memory();
    for sort_key in ["a", "b", "c"] {
        set(&partition, "h", sort_key, "v", 0);
    }
    let exact = partition.execute(&Request::MultiGet(range("h", 3)), NOW);
    assert_eq!(
        sort_keys(exact),
        (vec!["a".into(), "b".into(), "c".into()], false)
    );
    let cut = partition.execute(&Request::MultiGet(range("h", 2)), NOW);
    assert_eq!(sort_keys(cut), (vec!["a".into(), "b".into()], true));
    // An expired record after the limit does not count as "more".
    set(&partition, "h", "d", "v", 1);
    let later = partition.execute(&Request::MultiGet(range("h", 3)), NOW + 5);
    assert_eq!(
        sort_keys(later),
        (vec!["a".into(), "b".into(), "c".into()], false)
    );
    // A byte limit includes the record that crosses it, then cuts.
    let bytes = MultiGetRequest {
        max_kv_size: 3,
        ..range("h", 0)
    };
    assert_eq!(
        sort_keys(partition.execute(&Request::MultiGet(bytes), NOW)),
        (vec!["a".into(), "b".into()], true)
    );
}

#[test]
fn reverse_with_limit_returns_the_last_records_ascending() {
    // Proves a reverse range read with a limit picks the records at the end of the range and presents them ascending.
    let dir = tempfile::tempdir().unwrap();
    let on_rocks = rocks(&dir);
    let on_memory = memory();
    for sort_key in ["a", "b", "c", "d", "e"] {
        set(&on_rocks, "h", sort_key, "v", 0);
        set(&on_memory, "h", sort_key, "v", 0);
    }
    set(&on_rocks, "i", "a", "v", 0);
    set(&on_memory, "i", "a", "v", 0);
    let request = MultiGetRequest {
        reverse: true,
        stop_sort_key: b"e".to_vec(),
        ..range("h", 2)
    };
    let expected = (vec!["c".to_string(), "d".to_string()], true);
    assert_eq!(
        sort_keys(on_rocks.execute(&Request::MultiGet(request.clone()), NOW)),
        expected
    );
    assert_eq!(
        sort_keys(on_memory.execute(&Request::MultiGet(request), NOW)),
        expected
    );
    let whole = MultiGetRequest {
        reverse: true,
        ..range("h", 2)
    };
    let expected = (vec!["d".to_string(), "e".to_string()], true);
    assert_eq!(
        sort_keys(on_rocks.execute(&Request::MultiGet(whole.clone()), NOW)),
        expected
    );
    assert_eq!(
        sort_keys(on_memory.execute(&Request::MultiGet(whole), NOW)),
        expected
    );
}

#[test]
fn range_ends_filters_and_empty_ranges() {
    // Proves inclusive/exclusive ends, prefix-filter narrowing, postfix filters and empty ranges.
    let partition = memory();
    for sort_key in ["", "a", "ab", "abc", "b", "ba"] {
        set(&partition, "h", sort_key, "v", 0);
    }
    let read =
        |request: MultiGetRequest| sort_keys(partition.execute(&Request::MultiGet(request), NOW)).0;
    let both = MultiGetRequest {
        start_sort_key: b"a".to_vec(),
        stop_sort_key: b"b".to_vec(),
        start_inclusive: true,
        stop_inclusive: true,
        ..range("h", 0)
    };
    assert_eq!(read(both.clone()), ["a", "ab", "abc", "b"]);
    let neither = MultiGetRequest {
        start_inclusive: false,
        stop_inclusive: false,
        ..both.clone()
    };
    assert_eq!(read(neither), ["ab", "abc"]);
    let exclusive_empty_start = MultiGetRequest {
        start_inclusive: false,
        ..range("h", 0)
    };
    assert_eq!(read(exclusive_empty_start), ["a", "ab", "abc", "b", "ba"]);
    let prefix = MultiGetRequest {
        sort_key_filter: Filter::new(FilterType::MatchPrefix, "ab"),
        ..range("h", 0)
    };
    assert_eq!(read(prefix), ["ab", "abc"]);
    let postfix = MultiGetRequest {
        sort_key_filter: Filter::new(FilterType::MatchPostfix, "a"),
        no_value: true,
        ..range("h", 0)
    };
    assert_eq!(read(postfix), ["a", "ba"]);
    let backwards = MultiGetRequest {
        start_sort_key: b"b".to_vec(),
        stop_sort_key: b"a".to_vec(),
        ..range("h", 0)
    };
    assert_eq!(
        sort_keys(partition.execute(&Request::MultiGet(backwards), NOW)),
        (vec![], false)
    );
    let point = MultiGetRequest {
        start_sort_key: b"a".to_vec(),
        stop_sort_key: b"a".to_vec(),
        ..both
    };
    assert_eq!(read(point.clone()), ["a"]);
    let half_open_point = MultiGetRequest {
        stop_inclusive: false,
        ..point
    };
    assert!(read(half_open_point).is_empty());
}

#[test]
fn multi_get_by_sort_keys_returns_found_ones_ascending() {
    // Proves point multi_get dedups, skips missing and expired keys, sorts ascending and honours no_value.
    let partition = memory();
    set(&partition, "h", "b", "vb", 0);
    set(&partition, "h", "a", "va", 0);
    set(&partition, "h", "x", "vx", 1);
    let request = MultiGetRequest {
        sort_keys: vec![
            b"b".to_vec(),
            b"x".to_vec(),
            b"missing".to_vec(),
            b"a".to_vec(),
            b"b".to_vec(),
        ],
        no_value: true,
        ..MultiGetRequest::range("h")
    };
    let expected = vec![
        SortKeyValue {
            sort_key: b"a".to_vec(),
            value: Vec::new(),
        },
        SortKeyValue {
            sort_key: b"b".to_vec(),
            value: Vec::new(),
        },
    ];
    assert_eq!(
        partition.execute(&Request::MultiGet(request), NOW + 2),
        Ok(ResponseBody::MultiGet {
            kvs: expected,
            incomplete: false
        })
    );
}

#[test]
fn multi_operations_reject_empty_hash_keys_and_lists() {
    // Proves the InvalidArgument rules for empty hash keys, empty lists and over-long hash keys.
    let partition = memory();
    let long = vec![b'x'; key::HASH_KEY_BYTES_MAX + 1];
    let cases = [
        Request::MultiGet(MultiGetRequest::range("")),
        Request::MultiSet {
            hash_key: Vec::new(),
            kvs: vec![SortKeyValue::default()],
            ttl_seconds: 0,
        },
        Request::MultiSet {
            hash_key: b"h".to_vec(),
            kvs: Vec::new(),
            ttl_seconds: 0,
        },
        Request::MultiDel {
            hash_key: Vec::new(),
            sort_keys: vec![Vec::new()],
        },
        Request::MultiDel {
            hash_key: b"h".to_vec(),
            sort_keys: Vec::new(),
        },
        Request::SortKeyCount {
            hash_key: Vec::new(),
        },
        Request::Get(Key::new(long.clone(), "s")),
        Request::Set {
            key: Key::new(long, "s"),
            value: Vec::new(),
            ttl_seconds: 0,
        },
        Request::Scan { context_id: 1 },
    ];
    for request in cases {
        assert_eq!(
            error_code(partition.execute(&request, NOW)),
            ErrorCode::InvalidArgument,
            "{request:?}"
        );
    }
    // Single-record operations accept an empty hash key.
    set(&partition, "", "s", "v", 0);
    assert_eq!(
        partition.execute(&Request::Get(Key::new("", "s")), NOW),
        Ok(ResponseBody::Value(b"v".to_vec()))
    );
}

#[test]
fn ttl_exist_get_and_multi_del_follow_expiry() {
    // Proves ttl answers -1 / seconds left / NotFound, and exist, get and multi_del ignore expired records.
    let partition = memory();
    set(&partition, "h", "forever", "v", 0);
    set(&partition, "h", "short", "v", 10);
    let ttl = |sort_key: &str, now| partition.execute(&Request::Ttl(Key::new("h", sort_key)), now);
    assert_eq!(ttl("forever", NOW), Ok(ResponseBody::Ttl(-1)));
    assert_eq!(ttl("short", NOW + 3), Ok(ResponseBody::Ttl(7)));
    assert_eq!(error_code(ttl("short", NOW + 10)), ErrorCode::NotFound);
    assert_eq!(error_code(ttl("missing", NOW)), ErrorCode::NotFound);
    let exist = Request::Exist(Key::new("h", "short"));
    assert_eq!(
        partition.execute(&exist, NOW + 9),
        Ok(ResponseBody::Exist(true))
    );
    assert_eq!(
        partition.execute(&exist, NOW + 10),
        Ok(ResponseBody::Exist(false))
    );
    assert_eq!(
        error_code(partition.execute(&Request::Get(Key::new("h", "short")), NOW + 11)),
        ErrorCode::NotFound
    );
    let count = Request::SortKeyCount {
        hash_key: b"h".to_vec(),
    };
    assert_eq!(partition.execute(&count, NOW), Ok(ResponseBody::Count(2)));
    assert_eq!(
        partition.execute(&count, NOW + 10),
        Ok(ResponseBody::Count(1))
    );
    let multi_del = Request::MultiDel {
        hash_key: b"h".to_vec(),
        sort_keys: vec![
            b"forever".to_vec(),
            b"short".to_vec(),
            b"forever".to_vec(),
            b"none".to_vec(),
        ],
    };
    assert_eq!(
        partition.execute(&multi_del, NOW + 10),
        Ok(ResponseBody::Count(1))
    );
    assert_eq!(partition.execute(&count, NOW), Ok(ResponseBody::Count(0)));
}

#[test]
fn incr_ttl_and_parse_rules() {
    // Proves incr's base value, TTL keep/set/clear rules, expired-base reset and InvalidArgument cases.
    let partition = memory();
    let incr = |sort_key: &str, increment: i64, ttl_seconds: i32, now: u32| {
        partition.execute(
            &Request::Incr {
                key: Key::new("h", sort_key),
                increment,
                ttl_seconds,
            },
            now,
        )
    };
    let ttl =
        |sort_key: &str, now: u32| partition.execute(&Request::Ttl(Key::new("h", sort_key)), now);
    assert_eq!(incr("n", 5, 0, NOW), Ok(ResponseBody::Incr(5)));
    assert_eq!(ttl("n", NOW), Ok(ResponseBody::Ttl(-1)));
    assert_eq!(incr("n", -7, 100, NOW), Ok(ResponseBody::Incr(-2)));
    assert_eq!(ttl("n", NOW), Ok(ResponseBody::Ttl(100)));
    assert_eq!(incr("n", 1, 0, NOW + 50), Ok(ResponseBody::Incr(-1)));
    assert_eq!(
        ttl("n", NOW + 50),
        Ok(ResponseBody::Ttl(50)),
        "ttl 0 keeps the old TTL"
    );
    assert_eq!(incr("n", 1, -1, NOW + 50), Ok(ResponseBody::Incr(0)));
    assert_eq!(
        ttl("n", NOW + 50),
        Ok(ResponseBody::Ttl(-1)),
        "ttl < 0 clears the TTL"
    );
    set(&partition, "h", "old", "41", 5);
    assert_eq!(
        incr("old", 1, 0, NOW + 5),
        Ok(ResponseBody::Incr(1)),
        "expired base is 0"
    );
    assert_eq!(
        ttl("old", NOW + 5),
        Ok(ResponseBody::Ttl(-1)),
        "expired old TTL is not kept"
    );
    set(&partition, "h", "empty", "", 0);
    assert_eq!(incr("empty", 3, 0, NOW), Ok(ResponseBody::Incr(3)));
    set(&partition, "h", "text", "12a", 0);
    assert_eq!(
        error_code(incr("text", 1, 0, NOW)),
        ErrorCode::InvalidArgument
    );
    set(&partition, "h", "big", &i64::MAX.to_string(), 0);
    assert_eq!(
        error_code(incr("big", 1, 0, NOW)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        partition.execute(&Request::Get(Key::new("h", "big")), NOW),
        Ok(ResponseBody::Value(i64::MAX.to_string().into_bytes())),
        "a failed incr writes nothing"
    );
}

fn check_and_set(check_type: CheckType, operand: &str) -> CheckAndSetRequest {
    CheckAndSetRequest {
        hash_key: b"h".to_vec(),
        check_sort_key: b"c".to_vec(),
        check_type,
        check_operand: operand.into(),
        set_sort_key: b"s".to_vec(),
        set_value: b"set".to_vec(),
        set_ttl_seconds: 0,
        return_check_value: true,
    }
}

/// The outcome of one check on a fresh partition whose check value is `value`.
fn check_outcome(
    check_type: CheckType,
    operand: &str,
    value: Option<&str>,
) -> Result<bool, ErrorCode> {
    let partition = memory();
    if let Some(value) = value {
        set(&partition, "h", "c", value, 0);
    }
    let response = partition.execute(
        &Request::CheckAndSet(check_and_set(check_type, operand)),
        NOW,
    );
    let stored = partition.execute(&Request::Exist(Key::new("h", "s")), NOW);
    match response {
        Ok(ResponseBody::CheckAndSet(result)) => {
            assert_eq!(stored, Ok(ResponseBody::Exist(result.set_succeeded)));
            assert!(result.check_value_returned);
            assert_eq!(result.check_value_exist, value.is_some());
            assert_eq!(result.check_value, value.unwrap_or("").as_bytes());
            Ok(result.set_succeeded)
        }
        Ok(other) => panic!("unexpected answer {other:?}"),
        Err(error) => {
            assert_eq!(stored, Ok(ResponseBody::Exist(false)));
            Err(error.code)
        }
    }
}

/// One check case: type, operand, stored value (None = missing), outcome.
type CheckCase = (
    CheckType,
    &'static str,
    Option<&'static str>,
    Result<bool, ErrorCode>,
);

#[test]
fn every_check_type_on_missing_empty_and_present_values() {
    // Proves all 18 check types against a missing value, an empty value and present values, including int parse errors.
    use CheckType::*;
    let invalid = Err(ErrorCode::InvalidArgument);
    let table: Vec<CheckCase> = vec![
        (NoCheck, "", None, Ok(true)),
        (ValueNotExist, "", None, Ok(true)),
        (ValueNotExist, "", Some(""), Ok(false)),
        (ValueNotExistOrEmpty, "", None, Ok(true)),
        (ValueNotExistOrEmpty, "", Some(""), Ok(true)),
        (ValueNotExistOrEmpty, "", Some("x"), Ok(false)),
        (ValueExist, "", None, Ok(false)),
        (ValueExist, "", Some(""), Ok(true)),
        (ValueNotEmpty, "", Some(""), Ok(false)),
        (ValueNotEmpty, "", Some("x"), Ok(true)),
        (ValueNotEmpty, "", None, Ok(false)),
        (ValueMatchAnywhere, "bc", Some("abcd"), Ok(true)),
        (ValueMatchAnywhere, "bd", Some("abcd"), Ok(false)),
        (ValueMatchAnywhere, "", Some(""), Ok(true)),
        (ValueMatchAnywhere, "", None, Ok(false)),
        (ValueMatchPrefix, "ab", Some("abcd"), Ok(true)),
        (ValueMatchPrefix, "bc", Some("abcd"), Ok(false)),
        (ValueMatchPostfix, "cd", Some("abcd"), Ok(true)),
        (ValueMatchPostfix, "bc", Some("abcd"), Ok(false)),
        (ValueMatchPostfix, "cd", None, Ok(false)),
        (ValueBytesLess, "b", Some("a"), Ok(true)),
        (ValueBytesLess, "a", Some("a"), Ok(false)),
        (ValueBytesLessOrEqual, "a", Some("a"), Ok(true)),
        (ValueBytesLessOrEqual, "a", Some("b"), Ok(false)),
        (ValueBytesEqual, "ab", Some("ab"), Ok(true)),
        (ValueBytesEqual, "a", Some("ab"), Ok(false)),
        (ValueBytesEqual, "", None, Ok(false)),
        (ValueBytesGreaterOrEqual, "ab", Some("ab"), Ok(true)),
        (ValueBytesGreaterOrEqual, "b", Some("ab"), Ok(false)),
        (ValueBytesGreater, "a", Some("ab"), Ok(true)),
        (ValueBytesGreater, "ab", Some("ab"), Ok(false)),
        (ValueIntLess, "10", Some("9"), Ok(true)),
        (ValueIntLess, "9", Some("10"), Ok(false)),
        (ValueIntLessOrEqual, "-3", Some("-3"), Ok(true)),
        (ValueIntLessOrEqual, "-4", Some("-3"), Ok(false)),
        (ValueIntEqual, "7", Some("7"), Ok(true)),
        (ValueIntEqual, "8", Some("7"), Ok(false)),
        (ValueIntGreaterOrEqual, "7", Some("7"), Ok(true)),
        (ValueIntGreaterOrEqual, "8", Some("7"), Ok(false)),
        (ValueIntGreater, "9", Some("10"), Ok(true)),
        (ValueIntGreater, "10", Some("10"), Ok(false)),
        (ValueIntGreater, "1", None, Ok(false)),
        (ValueIntGreater, "zz", None, Ok(false)),
        (ValueIntEqual, "1", Some("one"), invalid),
        (ValueIntEqual, "one", Some("1"), invalid),
        (ValueIntEqual, "1", Some(""), invalid),
        (ValueIntLess, "1", Some("99999999999999999999"), invalid),
    ];
    for (check_type, operand, value, expected) in table {
        assert_eq!(
            check_outcome(check_type, operand, value),
            expected,
            "{check_type:?} operand {operand:?} value {value:?}"
        );
    }
}

#[test]
fn check_treats_expired_as_missing_and_can_hide_check_value() {
    // Proves an expired check record reads as missing and that return_check_value=false leaves the fields empty.
    let partition = memory();
    set(&partition, "h", "c", "old", 5);
    let request = CheckAndSetRequest {
        return_check_value: false,
        ..check_and_set(CheckType::ValueNotExist, "")
    };
    assert_eq!(
        partition.execute(&Request::CheckAndSet(request), NOW + 5),
        Ok(ResponseBody::CheckAndSet(CheckAndSetResult {
            set_succeeded: true,
            ..CheckAndSetResult::default()
        }))
    );
}

#[test]
fn check_and_mutate_applies_all_mutations_or_none() {
    // Proves check_and_mutate applies every put and delete when the check passes, none when it fails, and rejects an empty list.
    let partition = memory();
    set(&partition, "h", "c", "1", 0);
    set(&partition, "h", "gone", "v", 0);
    let request = |check_type| CheckAndMutateRequest {
        hash_key: b"h".to_vec(),
        check_sort_key: b"c".to_vec(),
        check_type,
        check_operand: b"1".to_vec(),
        mutations: vec![
            Mutation::Put {
                sort_key: b"new".to_vec(),
                value: b"n".to_vec(),
                ttl_seconds: 30,
            },
            Mutation::Delete {
                sort_key: b"gone".to_vec(),
            },
            Mutation::Put {
                sort_key: b"c".to_vec(),
                value: b"2".to_vec(),
                ttl_seconds: 0,
            },
        ],
        return_check_value: true,
    };
    let failed = partition.execute(
        &Request::CheckAndMutate(request(CheckType::ValueIntGreater)),
        NOW,
    );
    assert!(
        matches!(failed, Ok(ResponseBody::CheckAndSet(ref result)) if !result.set_succeeded && result.check_value == b"1")
    );
    let count = Request::SortKeyCount {
        hash_key: b"h".to_vec(),
    };
    assert_eq!(partition.execute(&count, NOW), Ok(ResponseBody::Count(2)));
    let passed = partition.execute(
        &Request::CheckAndMutate(request(CheckType::ValueIntEqual)),
        NOW,
    );
    assert!(matches!(passed, Ok(ResponseBody::CheckAndSet(ref result)) if result.set_succeeded));
    assert_eq!(
        partition.execute(&Request::Get(Key::new("h", "c")), NOW),
        Ok(ResponseBody::Value(b"2".to_vec()))
    );
    assert_eq!(
        partition.execute(&Request::Ttl(Key::new("h", "new")), NOW),
        Ok(ResponseBody::Ttl(30))
    );
    assert_eq!(
        partition.execute(&Request::Exist(Key::new("h", "gone")), NOW),
        Ok(ResponseBody::Exist(false))
    );
    let empty = CheckAndMutateRequest {
        mutations: Vec::new(),
        ..request(CheckType::NoCheck)
    };
    assert_eq!(
        error_code(partition.execute(&Request::CheckAndMutate(empty), NOW)),
        ErrorCode::InvalidArgument
    );
}

#[test]
fn batch_get_returns_existing_records_in_request_order() {
    // Proves batch_get keeps request order across hash keys and skips missing and expired keys.
    let partition = memory();
    set(&partition, "b", "1", "vb", 0);
    set(&partition, "a", "2", "va", 0);
    set(&partition, "a", "3", "old", 1);
    let keys = vec![
        Key::new("b", "1"),
        Key::new("a", "3"),
        Key::new("z", "9"),
        Key::new("a", "2"),
    ];
    let Ok(ResponseBody::BatchGet(records)) =
        partition.execute(&Request::BatchGet { keys }, NOW + 1)
    else {
        panic!("batch_get failed");
    };
    let found: Vec<_> = records
        .iter()
        .map(|record| (record.hash_key.clone(), record.value.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (b"b".to_vec(), b"vb".to_vec()),
            (b"a".to_vec(), b"va".to_vec())
        ]
    );
}

fn drain<E: StorageEngine>(
    partition: &Partition<E>,
    request: &ScanRequest,
    batch_size: usize,
) -> (Vec<Record>, i64, usize) {
    let mut resume: Option<Vec<u8>> = None;
    let mut records = Vec::new();
    let mut count = 0;
    for batches in 1..=1_000 {
        let batch = partition
            .scan_batch(request, resume.as_deref(), batch_size, NOW)
            .unwrap();
        records.extend(batch.records);
        count += batch.count;
        resume = batch.resume_after;
        if resume.is_none() {
            return (records, count, batches);
        }
    }
    panic!("scan did not finish in 1,000 batches");
}

#[test]
fn scans_resume_filter_and_bound_examined_records() {
    // Proves full scans walk raw-key order across batches, hash-key prefix filters narrow them, and the examined bound returns early.
    let dir = tempfile::tempdir().unwrap();
    let partition = rocks(&dir);
    for hash_key in ["b", "a", "ab", "ba", ""] {
        for sort_key in ["1", "2"] {
            set(&partition, hash_key, sort_key, "v", 0);
        }
    }
    let full = ScanRequest::new(ScanRange::Full);
    let (records, count, batches) = drain(&partition, &full, 3);
    let order: Vec<String> = records
        .iter()
        .map(|record| {
            format!(
                "{}/{}",
                String::from_utf8_lossy(&record.hash_key),
                String::from_utf8_lossy(&record.sort_key)
            )
        })
        .collect();
    assert_eq!(
        order,
        ["/1", "/2", "a/1", "a/2", "b/1", "b/2", "ab/1", "ab/2", "ba/1", "ba/2"]
    );
    assert_eq!((count, batches), (10, 4));
    let prefix = ScanRequest {
        hash_key_filter: Filter::new(FilterType::MatchPrefix, "b"),
        sort_key_filter: Filter::new(FilterType::MatchPostfix, "2"),
        only_return_count: true,
        ..ScanRequest::new(ScanRange::Full)
    };
    let (records, count, _) = drain(&partition, &prefix, 100);
    assert!(records.is_empty());
    assert_eq!(count, 2);
    let hash = ScanRequest {
        stop_inclusive: true,
        no_value: true,
        ..ScanRequest::new(ScanRange::Hash {
            hash_key: b"ab".to_vec(),
            start_sort_key: b"1".to_vec(),
            stop_sort_key: b"2".to_vec(),
        })
    };
    let (records, _, _) = drain(&partition, &hash, 100);
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .all(|record| record.hash_key == b"ab" && record.value.is_empty()));

    let narrow = Partition::new(
        MemoryEngine::new(),
        StorageLimits {
            scan_examined_max: 4,
            ..StorageLimits::default()
        },
    );
    for sort_key in ["1", "2", "3", "4", "5", "6", "7", "8", "9"] {
        set(&narrow, "h", sort_key, "v", 0);
    }
    let only_nine = ScanRequest {
        sort_key_filter: Filter::new(FilterType::MatchPostfix, "9"),
        ..ScanRequest::new(ScanRange::Full)
    };
    let first = narrow.scan_batch(&only_nine, None, 100, NOW).unwrap();
    assert_eq!(first.count, 0);
    assert_eq!(first.resume_after, Some(encode_key(b"h", b"4").unwrap()));
    let (records, _, batches) = drain(&narrow, &only_nine, 100);
    assert_eq!((records.len(), batches), (1, 3));
}

#[test]
fn sortkey_count_answers_minus_one_past_its_bound() {
    // Proves sortkey_count gives Pegasus's -1 when its examined bound is hit.
    let partition = Partition::new(
        MemoryEngine::new(),
        StorageLimits {
            sortkey_count_examined_max: 2,
            ..StorageLimits::default()
        },
    );
    set(&partition, "h", "1", "v", 0);
    set(&partition, "h", "2", "v", 0);
    let count = Request::SortKeyCount {
        hash_key: b"h".to_vec(),
    };
    assert_eq!(partition.execute(&count, NOW), Ok(ResponseBody::Count(2)));
    set(&partition, "h", "3", "v", 0);
    assert_eq!(partition.execute(&count, NOW), Ok(ResponseBody::Count(-1)));
}

#[test]
fn compaction_filter_drops_expired_records() {
    // Proves the RocksDB TTL compaction filter physically removes a record expired by the wall clock and keeps live ones.
    let dir = tempfile::tempdir().unwrap();
    let partition = rocks(&dir);
    let expired_key = encode_key(b"h", b"expired").unwrap();
    let live_key = encode_key(b"h", b"live").unwrap();
    let mut batch = WriteBatch::new();
    batch.put(expired_key.clone(), encode_value(1, b"old"));
    batch.put(
        live_key.clone(),
        encode_value(key::now_epoch_s() + 3_600, b"new"),
    );
    partition.engine().write(&batch).unwrap();
    assert!(partition.engine().get(&expired_key).unwrap().is_some());
    partition.engine().compact_all().unwrap();
    assert_eq!(partition.engine().get(&expired_key).unwrap(), None);
    assert!(partition.engine().get(&live_key).unwrap().is_some());
}

#[test]
fn rocks_engine_persists_across_reopen_and_rejects_bad_tuning() {
    // Proves data written through RocksEngine survives closing and reopening, and ShardStorage validates its tuning.
    let dir = tempfile::tempdir().unwrap();
    {
        let partition = rocks(&dir);
        set(&partition, "h", "s", "v", 0);
    }
    let partition = rocks(&dir);
    assert_eq!(
        partition.execute(&Request::Get(Key::new("h", "s")), NOW),
        Ok(ResponseBody::Value(b"v".to_vec()))
    );
    for tuning in [
        StorageTuning {
            compaction_threads: 0,
            ..StorageTuning::default()
        },
        StorageTuning {
            block_cache_bytes: 1,
            ..StorageTuning::default()
        },
        StorageTuning {
            write_buffer_bytes: 0,
            ..StorageTuning::default()
        },
    ] {
        let error = ShardStorage::new(&tuning)
            .err()
            .expect("bad tuning accepted");
        assert_eq!(error.code, ErrorCode::InvalidArgument);
    }
}

#[test]
fn engines_scan_reverse_within_bounds_and_refuse_reentry() {
    // Proves both engines honour [lower, upper) in both directions, and the memory engine refuses a write from a visitor.
    let dir = tempfile::tempdir().unwrap();
    let shard = ShardStorage::new(&StorageTuning::default()).unwrap();
    let rocks_engine = RocksEngine::open(dir.path(), &shard).unwrap();
    let memory_engine = MemoryEngine::new();
    let mut batch = WriteBatch::new();
    for key in [
        &b"\x00\x01a1"[..],
        b"\x00\x01a2",
        b"\x00\x01b1",
        b"\x00\x02aa",
    ] {
        batch.put(key.to_vec(), b"v".to_vec());
    }
    batch.delete(b"\x00\x01a2".to_vec());
    let engines: [&dyn StorageEngine; 2] = [&rocks_engine, &memory_engine];
    for engine in engines {
        engine.write(&batch).unwrap();
        for (direction, expected) in [
            (
                Direction::Forward,
                vec![b"\x00\x01a1".to_vec(), b"\x00\x01b1".to_vec()],
            ),
            (
                Direction::Reverse,
                vec![b"\x00\x01b1".to_vec(), b"\x00\x01a1".to_vec()],
            ),
        ] {
            let mut seen = Vec::new();
            engine
                .scan(
                    b"\x00\x01",
                    Some(&b"\x00\x02aa"[..]),
                    direction,
                    &mut |key, _| {
                        seen.push(key.to_vec());
                        Ok(ScanControl::Continue)
                    },
                )
                .unwrap();
            assert_eq!(seen, expected);
        }
        let mut all = 0;
        engine
            .scan(b"", None, Direction::Reverse, &mut |_, _| {
                all += 1;
                Ok(ScanControl::Continue)
            })
            .unwrap();
        assert_eq!(all, 3);
    }
    let error = memory_engine
        .scan(b"", None, Direction::Forward, &mut |_, _| {
            memory_engine.write(&WriteBatch::new())?;
            Ok(ScanControl::Stop)
        })
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Internal);
}

fn incr_request(hash_key: &str, sort_key: &str, increment: i64) -> Request {
    Request::Incr {
        key: Key::new(hash_key, sort_key),
        increment,
        ttl_seconds: 0,
    }
}

// Staged writes are invisible to reads but seen by the next prepare, so two
// incrs staged back to back count from each other; applying a batch makes
// it readable and forgets what it staged.
#[test]
fn prepares_see_staged_writes_and_reads_do_not() {
    let partition = memory();
    let get = Request::Get(Key::new("h", "counter"));
    let (mut first, body) = partition
        .prepare_write(&incr_request("h", "counter", 5), NOW)
        .unwrap();
    assert_eq!(body, ResponseBody::Incr(5));
    first.set_decree(1);
    partition.stage(1, &first);
    assert_eq!(
        error_code(partition.execute(&get, NOW)),
        ErrorCode::NotFound
    );
    let (mut second, body) = partition
        .prepare_write(&incr_request("h", "counter", 2), NOW)
        .unwrap();
    assert_eq!(
        body,
        ResponseBody::Incr(7),
        "the second incr counts from the staged 5"
    );
    second.set_decree(2);
    partition.stage(2, &second);
    partition.apply(&first).unwrap();
    assert_eq!(
        partition.execute(&get, NOW),
        Ok(ResponseBody::Value(b"5".to_vec()))
    );
    // The key is still staged by decree 2: the next prepare sees 7, not 5.
    let (_, body) = partition
        .prepare_write(&incr_request("h", "counter", 1), NOW)
        .unwrap();
    assert_eq!(body, ResponseBody::Incr(8));
    partition.apply(&second).unwrap();
    assert_eq!(partition.engine().applied_decree().unwrap(), 2);
    assert_eq!(
        partition.execute(&get, NOW),
        Ok(ResponseBody::Value(b"7".to_vec()))
    );
    // A staged delete makes the key missing for checks.
    let (mut delete, _) = partition
        .prepare_write(&Request::Del(Key::new("h", "counter")), NOW)
        .unwrap();
    delete.set_decree(3);
    partition.stage(3, &delete);
    let check = Request::CheckAndSet(CheckAndSetRequest {
        hash_key: b"h".to_vec(),
        check_sort_key: b"counter".to_vec(),
        check_type: CheckType::ValueNotExist,
        check_operand: Vec::new(),
        set_sort_key: b"counter".to_vec(),
        set_value: b"fresh".to_vec(),
        set_ttl_seconds: 0,
        return_check_value: false,
    });
    let (batch, body) = partition.prepare_write(&check, NOW).unwrap();
    assert!(!batch.is_empty());
    assert!(matches!(
        body,
        ResponseBody::CheckAndSet(CheckAndSetResult {
            set_succeeded: true,
            ..
        })
    ));
    partition.discard_staged();
    let (batch, _) = partition.prepare_write(&check, NOW).unwrap();
    assert!(
        batch.is_empty(),
        "after discarding, the applied 7 fails the not-exist check"
    );
}

// Write batches survive the log payload encoding exactly, and damaged
// payloads are refused with an error rather than a panic.
#[test]
fn write_batch_payload_round_trips_and_rejects_damage() {
    let mut batch = WriteBatch::new();
    batch.put(encode_key(b"h", b"s").unwrap(), encode_value(7, b"value"));
    batch.delete(encode_key(b"", b"\x00\xff").unwrap());
    batch.put(Vec::new(), Vec::new());
    let payload = batch.encode();
    assert_eq!(WriteBatch::decode(&payload).unwrap(), batch);
    assert_eq!(
        WriteBatch::decode(&WriteBatch::new().encode()).unwrap(),
        WriteBatch::new()
    );
    for cut in 0..payload.len() {
        assert!(WriteBatch::decode(&payload[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = payload.clone();
    trailing.push(0);
    assert!(WriteBatch::decode(&trailing).is_err());
    let mut bad_tag = payload;
    bad_tag[4] = 9;
    assert!(WriteBatch::decode(&bad_tag).is_err());
}

// RocksDB stores the decree with the batch; the flushed decree trails the
// applied one until a flush, and a reopened instance has its decree.
#[test]
fn rocks_decree_is_flushed_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let partition = rocks(&dir);
        let mut first = WriteBatch::new();
        first.put(encode_key(b"h", b"a").unwrap(), encode_value(0, b"1"));
        first.set_decree(1);
        partition.apply(&first).unwrap();
        let engine = partition.engine();
        assert_eq!(
            (
                engine.applied_decree().unwrap(),
                engine.flushed_decree().unwrap()
            ),
            (1, 0)
        );
        engine.flush().unwrap();
        assert_eq!(engine.flushed_decree().unwrap(), 1);
        let mut second = WriteBatch::new();
        second.put(encode_key(b"h", b"b").unwrap(), encode_value(0, b"2"));
        second.set_decree(2);
        partition.apply(&second).unwrap();
        assert_eq!(
            (
                engine.applied_decree().unwrap(),
                engine.flushed_decree().unwrap()
            ),
            (2, 1)
        );
    }
    // RocksDB flushes its memtables when it closes cleanly, so a reopened
    // instance has both batches and their decree. (Losing the unflushed
    // ones on a crash is proved with real processes in tests/crash_recovery.rs.)
    let partition = rocks(&dir);
    assert_eq!(partition.engine().flushed_decree().unwrap(), 2);
    let get = |sort_key: &str| partition.execute(&Request::Get(Key::new("h", sort_key)), NOW);
    assert_eq!(get("a"), Ok(ResponseBody::Value(b"1".to_vec())));
    assert_eq!(get("b"), Ok(ResponseBody::Value(b"2".to_vec())));
}
