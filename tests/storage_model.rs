//! Model-based test of partition storage: the same seeded random operation
//! sequences drive `Partition<MemoryEngine>`, `Partition<RocksEngine>` and
//! an independent `BTreeMap` model of Pegasus's semantics, with a simulated
//! clock that expires TTLs, and every answer is compared.
//!
//! The model is written from docs/storage.md without reusing any of
//! `Partition`'s logic. A mismatch prints the seed and the operation index;
//! rerun with that seed to replay it exactly.

use std::cell::Cell;
use std::collections::BTreeMap;

use markab::key::{now_epoch_s, HASH_KEY_BYTES_MAX};
use markab::storage::{
    MemoryEngine, Partition, RocksEngine, ShardStorage, StorageEngine, StorageLimits, StorageTuning,
};
use markab::wire::message::{
    CheckAndMutateRequest, CheckAndSetRequest, CheckAndSetResult, CheckType, ErrorCode, Filter,
    FilterType, Key, MultiGetRequest, Mutation, Record, Request, ResponseBody, ScanRange,
    ScanRequest, SortKeyValue,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

const SEEDS: [u64; 4] = [1, 7, 42, 20_260_521];
const OPS_PER_SEED: usize = 2_000;
/// The server bounds the model knows (StorageLimits::default()).
const COUNT_MAX: usize = 3_000;
const BYTES_MAX: usize = 30 << 20;

type Answer = Result<ResponseBody, ErrorCode>;
/// Per batch: records, count, and whether the scan continues after it.
type ScanAnswer = Result<Vec<(Vec<Record>, i64, bool)>, ErrorCode>;

// ---------------------------------------------------------------- the model

/// `(hash_key, sort_key)`.
type ModelKey = (Vec<u8>, Vec<u8>);
/// `(value, expire_ts)`.
type ModelRecord = (Vec<u8>, u32);

/// `(hash_key, sort_key) -> (value, expire_ts)`, expired records included
/// until overwritten or deleted.
#[derive(Default)]
struct Model {
    table: BTreeMap<ModelKey, ModelRecord>,
    /// Point reads that found a record present but expired (coverage).
    expired_reads: Cell<usize>,
}

fn alive(expire_ts: u32, now: u32) -> bool {
    expire_ts == 0 || expire_ts > now
}

fn expire_at(ttl_seconds: u32, now: u32) -> u32 {
    if ttl_seconds == 0 {
        0
    } else {
        now.saturating_add(ttl_seconds)
    }
}

fn filter_passes(filter: &Filter, candidate: &[u8]) -> bool {
    let pattern = &filter.pattern[..];
    if filter.kind == FilterType::NoFilter || pattern.is_empty() {
        return true;
    }
    match filter.kind {
        FilterType::MatchPrefix => {
            candidate.len() >= pattern.len() && &candidate[..pattern.len()] == pattern
        }
        FilterType::MatchPostfix => {
            candidate.len() >= pattern.len()
                && &candidate[candidate.len() - pattern.len()..] == pattern
        }
        _ => (0..=candidate.len().saturating_sub(pattern.len())).any(|at| {
            candidate.len() >= pattern.len() && &candidate[at..at + pattern.len()] == pattern
        }),
    }
}

fn in_sort_range(
    sort_key: &[u8],
    start: &[u8],
    start_inclusive: bool,
    stop: &[u8],
    stop_inclusive: bool,
) -> bool {
    let after_start = if start_inclusive {
        sort_key >= start
    } else {
        sort_key > start
    };
    let before_stop = stop.is_empty()
        || if stop_inclusive {
            sort_key <= stop
        } else {
            sort_key < stop
        };
    after_start && before_stop
}

fn decimal(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn limit(requested: i32, bound: usize) -> usize {
    if requested <= 0 {
        bound
    } else {
        (requested as usize).min(bound)
    }
}

impl Model {
    fn live(&self, hash_key: &[u8], sort_key: &[u8], now: u32) -> Option<(Vec<u8>, u32)> {
        let found = self.table.get(&(hash_key.to_vec(), sort_key.to_vec()));
        if found.is_some_and(|(_, expire_ts)| !alive(*expire_ts, now)) {
            self.expired_reads.set(self.expired_reads.get() + 1);
        }
        found
            .filter(|(_, expire_ts)| alive(*expire_ts, now))
            .cloned()
    }

    fn put(&mut self, hash_key: &[u8], sort_key: &[u8], value: &[u8], expire_ts: u32) {
        self.table.insert(
            (hash_key.to_vec(), sort_key.to_vec()),
            (value.to_vec(), expire_ts),
        );
    }

    fn remove(&mut self, hash_key: &[u8], sort_key: &[u8]) {
        self.table.remove(&(hash_key.to_vec(), sort_key.to_vec()));
    }

    /// Live sort keys and values of `hash_key`, ascending.
    fn row(&self, hash_key: &[u8], now: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.table
            .iter()
            .filter(|((hk, _), (_, expire_ts))| hk == hash_key && alive(*expire_ts, now))
            .map(|((_, sk), (value, _))| (sk.clone(), value.clone()))
            .collect()
    }

    fn check(
        check_type: CheckType,
        operand: &[u8],
        value: Option<&[u8]>,
    ) -> Result<bool, ErrorCode> {
        use CheckType::*;
        let Some(value) = value else {
            return Ok(matches!(
                check_type,
                NoCheck | ValueNotExist | ValueNotExistOrEmpty
            ));
        };
        Ok(match check_type {
            NoCheck | ValueExist => true,
            ValueNotExist => false,
            ValueNotExistOrEmpty => value.is_empty(),
            ValueNotEmpty => !value.is_empty(),
            ValueMatchAnywhere => {
                filter_passes(&Filter::new(FilterType::MatchAnywhere, operand), value)
            }
            ValueMatchPrefix => {
                filter_passes(&Filter::new(FilterType::MatchPrefix, operand), value)
            }
            ValueMatchPostfix => {
                filter_passes(&Filter::new(FilterType::MatchPostfix, operand), value)
            }
            ValueBytesLess => value < operand,
            ValueBytesLessOrEqual => value <= operand,
            ValueBytesEqual => value == operand,
            ValueBytesGreaterOrEqual => value >= operand,
            ValueBytesGreater => value > operand,
            _ => {
                let value = decimal(value).ok_or(ErrorCode::InvalidArgument)?;
                let operand = decimal(operand).ok_or(ErrorCode::InvalidArgument)?;
                match check_type {
                    ValueIntLess => value < operand,
                    ValueIntLessOrEqual => value <= operand,
                    ValueIntEqual => value == operand,
                    ValueIntGreaterOrEqual => value >= operand,
                    _ => value > operand,
                }
            }
        })
    }

    fn check_answer(
        passed: bool,
        return_check_value: bool,
        value: Option<Vec<u8>>,
    ) -> ResponseBody {
        let mut result = CheckAndSetResult {
            set_succeeded: passed,
            ..CheckAndSetResult::default()
        };
        if return_check_value {
            result.check_value_returned = true;
            result.check_value_exist = value.is_some();
            result.check_value = value.unwrap_or_default();
        }
        ResponseBody::CheckAndSet(result)
    }

    fn execute(&mut self, request: &Request, now: u32) -> Answer {
        use ErrorCode::{InvalidArgument, NotFound};
        if request
            .hash_key()
            .is_some_and(|hash_key| hash_key.len() > HASH_KEY_BYTES_MAX)
        {
            return Err(InvalidArgument);
        }
        let multi_needs_hash_key = matches!(
            request,
            Request::MultiGet(_)
                | Request::MultiSet { .. }
                | Request::MultiDel { .. }
                | Request::SortKeyCount { .. }
        );
        if multi_needs_hash_key && request.hash_key().is_some_and(<[u8]>::is_empty) {
            return Err(InvalidArgument);
        }
        match request {
            Request::Get(key) => self
                .live(&key.hash_key, &key.sort_key, now)
                .map(|(value, _)| ResponseBody::Value(value))
                .ok_or(NotFound),
            Request::Set {
                key,
                value,
                ttl_seconds,
            } => {
                self.put(
                    &key.hash_key,
                    &key.sort_key,
                    value,
                    expire_at(*ttl_seconds, now),
                );
                Ok(ResponseBody::Done)
            }
            Request::Del(key) => {
                self.remove(&key.hash_key, &key.sort_key);
                Ok(ResponseBody::Done)
            }
            Request::Exist(key) => Ok(ResponseBody::Exist(
                self.live(&key.hash_key, &key.sort_key, now).is_some(),
            )),
            Request::Ttl(key) => match self.live(&key.hash_key, &key.sort_key, now) {
                None => Err(NotFound),
                Some((_, 0)) => Ok(ResponseBody::Ttl(-1)),
                Some((_, expire_ts)) => Ok(ResponseBody::Ttl((expire_ts - now) as i32)),
            },
            Request::MultiSet {
                hash_key,
                kvs,
                ttl_seconds,
            } => {
                if kvs.is_empty() {
                    return Err(InvalidArgument);
                }
                for kv in kvs {
                    self.put(
                        hash_key,
                        &kv.sort_key,
                        &kv.value,
                        expire_at(*ttl_seconds, now),
                    );
                }
                Ok(ResponseBody::Done)
            }
            Request::MultiDel {
                hash_key,
                sort_keys,
            } => {
                if sort_keys.is_empty() {
                    return Err(InvalidArgument);
                }
                let mut distinct = sort_keys.clone();
                distinct.sort();
                distinct.dedup();
                let existed = distinct
                    .iter()
                    .filter(|sk| self.live(hash_key, sk, now).is_some())
                    .count();
                for sort_key in &distinct {
                    self.remove(hash_key, sort_key);
                }
                Ok(ResponseBody::Count(existed as i64))
            }
            Request::SortKeyCount { hash_key } => {
                Ok(ResponseBody::Count(self.row(hash_key, now).len() as i64))
            }
            Request::MultiGet(request) => Ok(self.multi_get(request, now)),
            Request::Incr {
                key,
                increment,
                ttl_seconds,
            } => {
                let old = self.live(&key.hash_key, &key.sort_key, now);
                let (base, old_expire_ts) = match &old {
                    None => (0, 0),
                    Some((value, expire_ts)) if value.is_empty() => (0, *expire_ts),
                    Some((value, expire_ts)) => {
                        (decimal(value).ok_or(InvalidArgument)?, *expire_ts)
                    }
                };
                let new_value = base.checked_add(*increment).ok_or(InvalidArgument)?;
                let expire_ts = if *ttl_seconds == 0 {
                    old_expire_ts
                } else if *ttl_seconds > 0 {
                    expire_at(*ttl_seconds as u32, now)
                } else {
                    0
                };
                self.put(
                    &key.hash_key,
                    &key.sort_key,
                    new_value.to_string().as_bytes(),
                    expire_ts,
                );
                Ok(ResponseBody::Incr(new_value))
            }
            Request::CheckAndSet(request) => {
                let value = self
                    .live(&request.hash_key, &request.check_sort_key, now)
                    .map(|(value, _)| value);
                let passed =
                    Model::check(request.check_type, &request.check_operand, value.as_deref())?;
                if passed {
                    let expire_ts = expire_at(request.set_ttl_seconds, now);
                    self.put(
                        &request.hash_key,
                        &request.set_sort_key,
                        &request.set_value,
                        expire_ts,
                    );
                }
                Ok(Model::check_answer(
                    passed,
                    request.return_check_value,
                    value,
                ))
            }
            Request::CheckAndMutate(request) => {
                if request.mutations.is_empty() {
                    return Err(InvalidArgument);
                }
                let value = self
                    .live(&request.hash_key, &request.check_sort_key, now)
                    .map(|(value, _)| value);
                let passed =
                    Model::check(request.check_type, &request.check_operand, value.as_deref())?;
                if passed {
                    for mutation in &request.mutations {
                        match mutation {
                            Mutation::Put {
                                sort_key,
                                value,
                                ttl_seconds,
                            } => self.put(
                                &request.hash_key,
                                sort_key,
                                value,
                                expire_at(*ttl_seconds, now),
                            ),
                            Mutation::Delete { sort_key } => {
                                self.remove(&request.hash_key, sort_key)
                            }
                        }
                    }
                }
                Ok(Model::check_answer(
                    passed,
                    request.return_check_value,
                    value,
                ))
            }
            Request::BatchGet { keys } => {
                if keys
                    .iter()
                    .any(|key| key.hash_key.len() > HASH_KEY_BYTES_MAX)
                {
                    return Err(InvalidArgument);
                }
                Ok(ResponseBody::BatchGet(
                    keys.iter()
                        .filter_map(|key| {
                            self.live(&key.hash_key, &key.sort_key, now)
                                .map(|(value, _)| Record {
                                    hash_key: key.hash_key.clone(),
                                    sort_key: key.sort_key.clone(),
                                    value,
                                })
                        })
                        .collect(),
                ))
            }
            _ => Err(InvalidArgument),
        }
    }

    fn multi_get(&self, request: &MultiGetRequest, now: u32) -> ResponseBody {
        let count_limit = limit(request.max_kv_count, COUNT_MAX);
        let bytes_limit = limit(request.max_kv_size, BYTES_MAX);
        let mut candidates: Vec<(Vec<u8>, Vec<u8>)> = if request.sort_keys.is_empty() {
            self.row(&request.hash_key, now)
                .into_iter()
                .filter(|(sk, _)| {
                    in_sort_range(
                        sk,
                        &request.start_sort_key,
                        request.start_inclusive,
                        &request.stop_sort_key,
                        request.stop_inclusive,
                    ) && filter_passes(&request.sort_key_filter, sk)
                })
                .collect()
        } else {
            let mut wanted = request.sort_keys.clone();
            wanted.sort();
            wanted.dedup();
            wanted
                .into_iter()
                .filter_map(|sk| {
                    self.live(&request.hash_key, &sk, now)
                        .map(|(value, _)| (sk, value))
                })
                .collect()
        };
        if request.reverse && request.sort_keys.is_empty() {
            candidates.reverse();
        }
        let mut kvs = Vec::new();
        let mut bytes = 0;
        let mut incomplete = false;
        for (sort_key, value) in candidates {
            if kvs.len() >= count_limit || bytes >= bytes_limit {
                incomplete = true;
                break;
            }
            let value = if request.no_value { Vec::new() } else { value };
            bytes += sort_key.len() + value.len();
            kvs.push(SortKeyValue { sort_key, value });
        }
        kvs.sort();
        ResponseBody::MultiGet { kvs, incomplete }
    }

    fn scan(&self, request: &ScanRequest, batch_size: usize, now: u32) -> ScanAnswer {
        let mut matched: Vec<Record> = self
            .table
            .iter()
            .filter(|(_, (_, expire_ts))| alive(*expire_ts, now))
            .filter(|((hk, sk), _)| match &request.range {
                ScanRange::Full => true,
                ScanRange::Hash {
                    hash_key,
                    start_sort_key,
                    stop_sort_key,
                } => {
                    hk == hash_key
                        && in_sort_range(
                            sk,
                            start_sort_key,
                            request.start_inclusive,
                            stop_sort_key,
                            request.stop_inclusive,
                        )
                }
            })
            .filter(|((hk, sk), _)| {
                filter_passes(&request.hash_key_filter, hk)
                    && filter_passes(&request.sort_key_filter, sk)
            })
            .map(|((hk, sk), (value, _))| Record {
                hash_key: hk.clone(),
                sort_key: sk.clone(),
                value: if request.no_value {
                    Vec::new()
                } else {
                    value.clone()
                },
            })
            .collect();
        if let ScanRange::Hash { hash_key, .. } = &request.range {
            if hash_key.is_empty() || hash_key.len() > HASH_KEY_BYTES_MAX {
                return Err(ErrorCode::InvalidArgument);
            }
        }
        // Raw-key order: hash keys by (length, bytes), then sort keys.
        matched.sort_by(|a, b| {
            (a.hash_key.len(), &a.hash_key, &a.sort_key).cmp(&(
                b.hash_key.len(),
                &b.hash_key,
                &b.sort_key,
            ))
        });
        let batch_size = batch_size.clamp(1, 1_000);
        let mut batches = Vec::new();
        let mut rest = &matched[..];
        loop {
            let take = rest.len().min(batch_size);
            let (batch, tail) = rest.split_at(take);
            let full = take == batch_size;
            let records = if request.only_return_count {
                Vec::new()
            } else {
                batch.to_vec()
            };
            batches.push((records, take as i64, full));
            rest = tail;
            if !full {
                return Ok(batches);
            }
        }
    }
}

// ------------------------------------------------------- the system under test

fn answer<E: StorageEngine>(partition: &Partition<E>, request: &Request, now: u32) -> Answer {
    partition.execute(request, now).map_err(|error| error.code)
}

fn drain<E: StorageEngine>(
    partition: &Partition<E>,
    request: &ScanRequest,
    batch_size: usize,
    now: u32,
) -> ScanAnswer {
    let mut batches = Vec::new();
    let mut resume: Option<Vec<u8>> = None;
    for _ in 0..100_000 {
        let batch = partition
            .scan_batch(request, resume.as_deref(), batch_size, now)
            .map_err(|error| error.code)?;
        let more = batch.resume_after.is_some();
        batches.push((batch.records, batch.count, more));
        if !more {
            return Ok(batches);
        }
        resume = batch.resume_after;
    }
    panic!("scan did not complete");
}

// ------------------------------------------------------------- the generator

struct Generator {
    rng: StdRng,
    hash_keys: Vec<Vec<u8>>,
}

const SORT_KEYS: [&[u8]; 10] = [
    b"", b"a", b"aa", b"ab", b"b", b"\x00", b"\xff", b"ba", b"c", b"a\xff",
];
const VALUES: [&[u8]; 11] = [
    b"",
    b"0",
    b"1",
    b"-5",
    b"42",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"99999999999999999999",
    b"abc",
    b"+7",
    b"0123",
];
const PATTERNS: [&[u8]; 5] = [b"", b"a", b"b", b"\xff", b"ab"];

impl Generator {
    fn new(seed: u64) -> Generator {
        let mut hash_keys: Vec<Vec<u8>> =
            [&b""[..], b"a", b"b", b"ab", b"\x00\xff", b"\xff", b"ba"]
                .iter()
                .map(|key| key.to_vec())
                .collect();
        hash_keys.push(vec![b'L'; 300]);
        Generator {
            rng: StdRng::seed_from_u64(seed),
            hash_keys,
        }
    }

    fn hash_key(&mut self) -> Vec<u8> {
        if self.rng.random_ratio(1, 200) {
            return vec![b'X'; HASH_KEY_BYTES_MAX + 1];
        }
        self.hash_keys.choose(&mut self.rng).unwrap().clone()
    }

    fn sort_key(&mut self) -> Vec<u8> {
        SORT_KEYS.choose(&mut self.rng).unwrap().to_vec()
    }

    fn sort_keys(&mut self, most: usize) -> Vec<Vec<u8>> {
        let count = self.rng.random_range(0..=most);
        (0..count).map(|_| self.sort_key()).collect()
    }

    fn value(&mut self) -> Vec<u8> {
        if self.rng.random_ratio(1, 20) {
            return vec![b'v'; self.rng.random_range(100..400)];
        }
        VALUES.choose(&mut self.rng).unwrap().to_vec()
    }

    fn ttl(&mut self) -> u32 {
        match self.rng.random_range(0..10) {
            0..=3 => 0,
            4..=6 => self.rng.random_range(1..=12),
            _ => self.rng.random_range(100..=5_000),
        }
    }

    fn key(&mut self) -> Key {
        Key {
            hash_key: self.hash_key(),
            sort_key: self.sort_key(),
        }
    }

    fn filter(&mut self) -> Filter {
        let kind = *[
            FilterType::NoFilter,
            FilterType::MatchAnywhere,
            FilterType::MatchPrefix,
            FilterType::MatchPostfix,
        ]
        .choose(&mut self.rng)
        .unwrap();
        Filter::new(kind, *PATTERNS.choose(&mut self.rng).unwrap())
    }

    fn operand(&mut self) -> Vec<u8> {
        if self.rng.random_bool(0.5) {
            self.value()
        } else {
            self.rng.random_range(-10..50).to_string().into_bytes()
        }
    }

    fn check_type(&mut self) -> CheckType {
        CheckType::from_u8(self.rng.random_range(0..18)).unwrap()
    }

    fn multi_get(&mut self) -> MultiGetRequest {
        let by_keys = self.rng.random_ratio(1, 4);
        MultiGetRequest {
            hash_key: self.hash_key(),
            sort_keys: if by_keys {
                self.sort_keys(5)
            } else {
                Vec::new()
            },
            max_kv_count: *[-1, 0, 1, 2, 3, 5, 100].choose(&mut self.rng).unwrap(),
            max_kv_size: *[-1, 0, 1, 4, 10, 1_000].choose(&mut self.rng).unwrap(),
            no_value: self.rng.random_bool(0.3),
            start_sort_key: if self.rng.random_bool(0.3) {
                Vec::new()
            } else {
                self.sort_key()
            },
            stop_sort_key: if self.rng.random_bool(0.3) {
                Vec::new()
            } else {
                self.sort_key()
            },
            start_inclusive: self.rng.random_bool(0.5),
            stop_inclusive: self.rng.random_bool(0.5),
            sort_key_filter: self.filter(),
            reverse: self.rng.random_bool(0.5),
        }
    }

    fn scan(&mut self) -> (ScanRequest, usize) {
        let range = if self.rng.random_bool(0.5) {
            ScanRange::Full
        } else {
            ScanRange::Hash {
                hash_key: self.hash_key(),
                start_sort_key: if self.rng.random_bool(0.3) {
                    Vec::new()
                } else {
                    self.sort_key()
                },
                stop_sort_key: if self.rng.random_bool(0.3) {
                    Vec::new()
                } else {
                    self.sort_key()
                },
            }
        };
        let request = ScanRequest {
            range,
            start_inclusive: self.rng.random_bool(0.5),
            stop_inclusive: self.rng.random_bool(0.5),
            hash_key_filter: self.filter(),
            sort_key_filter: self.filter(),
            batch_size: 0,
            no_value: self.rng.random_bool(0.3),
            only_return_count: self.rng.random_bool(0.2),
        };
        (
            request,
            *[1usize, 2, 3, 7, 1_000].choose(&mut self.rng).unwrap(),
        )
    }

    fn mutation(&mut self) -> Mutation {
        if self.rng.random_bool(0.7) {
            Mutation::Put {
                sort_key: self.sort_key(),
                value: self.value(),
                ttl_seconds: self.ttl(),
            }
        } else {
            Mutation::Delete {
                sort_key: self.sort_key(),
            }
        }
    }

    /// A data request, or `None` for "drain a scan" (generated separately).
    fn request(&mut self) -> Option<Request> {
        Some(match self.rng.random_range(0..100) {
            0..=14 => Request::Set {
                key: self.key(),
                value: self.value(),
                ttl_seconds: self.ttl(),
            },
            15..=19 => Request::Del(self.key()),
            20..=27 => Request::Get(self.key()),
            28..=30 => Request::Exist(self.key()),
            31..=34 => Request::Ttl(self.key()),
            35..=48 => Request::MultiGet(self.multi_get()),
            49..=54 => {
                let hash_key = self.hash_key();
                let count = self.rng.random_range(0..=4);
                let kvs = (0..count)
                    .map(|_| SortKeyValue {
                        sort_key: self.sort_key(),
                        value: self.value(),
                    })
                    .collect();
                Request::MultiSet {
                    hash_key,
                    kvs,
                    ttl_seconds: self.ttl(),
                }
            }
            55..=58 => Request::MultiDel {
                hash_key: self.hash_key(),
                sort_keys: self.sort_keys(4),
            },
            59..=61 => Request::SortKeyCount {
                hash_key: self.hash_key(),
            },
            62..=69 => Request::Incr {
                key: self.key(),
                increment: *[-3, 1, 5, 100, i64::MAX, i64::MIN]
                    .choose(&mut self.rng)
                    .unwrap(),
                ttl_seconds: *[0, 0, 0, 5, -1, 20].choose(&mut self.rng).unwrap(),
            },
            70..=78 => {
                let same = self.rng.random_bool(0.5);
                let check_sort_key = self.sort_key();
                Request::CheckAndSet(CheckAndSetRequest {
                    hash_key: self.hash_key(),
                    set_sort_key: if same {
                        check_sort_key.clone()
                    } else {
                        self.sort_key()
                    },
                    check_sort_key,
                    check_type: self.check_type(),
                    check_operand: self.operand(),
                    set_value: self.value(),
                    set_ttl_seconds: self.ttl(),
                    return_check_value: self.rng.random_bool(0.5),
                })
            }
            79..=84 => {
                let count = self.rng.random_range(0..=3);
                Request::CheckAndMutate(CheckAndMutateRequest {
                    hash_key: self.hash_key(),
                    check_sort_key: self.sort_key(),
                    check_type: self.check_type(),
                    check_operand: self.operand(),
                    mutations: (0..count).map(|_| self.mutation()).collect(),
                    return_check_value: self.rng.random_bool(0.5),
                })
            }
            85..=88 => {
                let count = self.rng.random_range(0..=5);
                Request::BatchGet {
                    keys: (0..count).map(|_| self.key()).collect(),
                }
            }
            _ => return None,
        })
    }
}

// ------------------------------------------------------------------ the test

/// How often the interesting outcomes occurred, so a generator that stops
/// reaching them fails the test instead of silently proving less.
#[derive(Debug, Default)]
struct Coverage {
    values: usize,
    not_found: usize,
    invalid_argument: usize,
    multi_get_incomplete: usize,
    multi_get_complete_non_empty: usize,
    checks_passed: usize,
    checks_failed: usize,
    incr_ok: usize,
    ttl_left: usize,
    expired_reads: usize,
    scans_multi_batch: usize,
    scan_records: usize,
}

impl Coverage {
    fn note(&mut self, answer: &Answer) {
        match answer {
            Ok(ResponseBody::Value(_)) => self.values += 1,
            Ok(ResponseBody::MultiGet {
                incomplete: true, ..
            }) => self.multi_get_incomplete += 1,
            Ok(ResponseBody::MultiGet {
                kvs,
                incomplete: false,
            }) if !kvs.is_empty() => self.multi_get_complete_non_empty += 1,
            Ok(ResponseBody::CheckAndSet(result)) if result.set_succeeded => {
                self.checks_passed += 1
            }
            Ok(ResponseBody::CheckAndSet(_)) => self.checks_failed += 1,
            Ok(ResponseBody::Incr(_)) => self.incr_ok += 1,
            Ok(ResponseBody::Ttl(left)) if *left > 0 => self.ttl_left += 1,
            Err(ErrorCode::NotFound) => self.not_found += 1,
            Err(ErrorCode::InvalidArgument) => self.invalid_argument += 1,
            _ => {}
        }
    }

    fn note_scan(&mut self, answer: &ScanAnswer) {
        if let Ok(batches) = answer {
            if batches.len() > 1 {
                self.scans_multi_batch += 1;
            }
            self.scan_records += batches
                .iter()
                .map(|(records, _, _)| records.len())
                .sum::<usize>();
        }
    }

    fn assert_reached(&self) {
        let counts = [
            self.values,
            self.not_found,
            self.invalid_argument,
            self.multi_get_incomplete,
            self.multi_get_complete_non_empty,
            self.checks_passed,
            self.checks_failed,
            self.incr_ok,
            self.ttl_left,
            self.expired_reads,
            self.scans_multi_batch,
            self.scan_records,
        ];
        assert!(
            counts.iter().all(|count| *count >= 10),
            "weak coverage: {self:?}"
        );
    }
}

fn run_seed(seed: u64, coverage: &mut Coverage) {
    let dir = tempfile::tempdir().unwrap();
    let shard = ShardStorage::new(&StorageTuning::default()).unwrap();
    let rocks = Partition::new(
        RocksEngine::open(dir.path(), &shard).unwrap(),
        StorageLimits::default(),
    );
    let memory = Partition::new(MemoryEngine::new(), StorageLimits::default());
    let mut model = Model::default();
    let mut generator = Generator::new(seed);
    // The simulated clock starts at the wall clock and only runs ahead of
    // it, so RocksDB's wall-clock compaction filter never drops a record
    // the model still considers live.
    let mut now = now_epoch_s();
    for index in 0..OPS_PER_SEED {
        now += generator.rng.random_range(0..=2);
        match generator.request() {
            Some(request) => {
                let expected = model.execute(&request, now);
                let from_memory = answer(&memory, &request, now);
                let from_rocks = answer(&rocks, &request, now);
                assert_eq!(
                    from_memory, expected,
                    "seed {seed} op {index} (memory): {request:?}"
                );
                assert_eq!(
                    from_rocks, expected,
                    "seed {seed} op {index} (rocks): {request:?}"
                );
                coverage.note(&expected);
            }
            None => {
                let (request, batch_size) = generator.scan();
                let expected = model.scan(&request, batch_size, now);
                let from_memory = drain(&memory, &request, batch_size, now);
                let from_rocks = drain(&rocks, &request, batch_size, now);
                assert_eq!(
                    from_memory, expected,
                    "seed {seed} op {index} (memory scan, batch {batch_size}): {request:?}"
                );
                assert_eq!(
                    from_rocks, expected,
                    "seed {seed} op {index} (rocks scan, batch {batch_size}): {request:?}"
                );
                coverage.note_scan(&expected);
            }
        }
    }
    // Everything the model holds, read back through a full scan of each engine.
    let everything = ScanRequest::new(ScanRange::Full);
    let expected = model.scan(&everything, 1_000, now);
    assert_eq!(
        drain(&memory, &everything, 1_000, now),
        expected,
        "seed {seed} final scan (memory)"
    );
    assert_eq!(
        drain(&rocks, &everything, 1_000, now),
        expected,
        "seed {seed} final scan (rocks)"
    );
    coverage.expired_reads += model.expired_reads.get();
}

#[test]
fn partitions_match_the_model_on_random_operations() {
    // Proves both engines answer every operation exactly as the independent model does, over several seeds with expiring TTLs.
    let mut coverage = Coverage::default();
    for seed in SEEDS {
        run_seed(seed, &mut coverage);
    }
    coverage.assert_reached();
    println!("{coverage:?}");
}
