//! Tests of timetags: their layout, the batch marker of duplicated writes,
//! local writes newer than what they replace, last-write-wins of shipped
//! writes with tombstones, reads that never see companion records, and a
//! property test of two clusters converging under concurrent writes.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::key::{encode_key, encode_value, HASH_KEY_BYTES_MAX};
use crate::storage::{MemoryEngine, Partition, StorageLimits, WriteOp};
use crate::wire::message::{
    CheckAndSetRequest, CheckType, DupMutation, DuplicateRequest, ErrorCode, Key, MultiGetRequest,
    Request, Response, ResponseBody, ScanRange, ScanRequest, SortKeyValue,
};

/// 2024-01-01 in Unix microseconds.
const T0_US: u64 = 1_704_067_200_000_000;

fn tagged(cluster_id: u8) -> Partition<MemoryEngine> {
    let partition = Partition::new(MemoryEngine::new(), StorageLimits::default());
    partition.set_timetags(Some(cluster_id));
    partition
}

fn epoch_s(unix_us: u64) -> u32 {
    (unix_us / 1_000_000 - EPOCH_BEGIN_UNIX_S) as u32
}

fn set(hash_key: &str, sort_key: &str, value: &str) -> Request {
    Request::Set {
        key: Key::new(hash_key, sort_key),
        value: value.as_bytes().to_vec(),
        ttl_seconds: 0,
    }
}

fn del(hash_key: &str, sort_key: &str) -> Request {
    Request::Del(Key::new(hash_key, sort_key))
}

/// Prepares and applies a local write at `unix_us`; its log payload.
fn write(partition: &Partition<MemoryEngine>, request: &Request, unix_us: u64) -> Vec<u8> {
    let (batch, _) = partition
        .prepare_tagged_write(request, epoch_s(unix_us), unix_us)
        .unwrap();
    partition.apply(&batch).unwrap();
    batch.encode()
}

fn ship(
    partition: &Partition<MemoryEngine>,
    source_cluster_id: u8,
    payloads: &[Vec<u8>],
) -> Response {
    partition.duplicate(&DuplicateRequest {
        source_cluster_id,
        dup_id: 7,
        mutations: payloads
            .iter()
            .enumerate()
            .map(|(index, payload)| DupMutation {
                decree: index as i64 + 1,
                payload: payload.clone(),
            })
            .collect(),
    })
}

fn get(partition: &Partition<MemoryEngine>, hash_key: &str, sort_key: &str) -> Option<String> {
    match partition.execute(&Request::Get(Key::new(hash_key, sort_key)), epoch_s(T0_US)) {
        Ok(ResponseBody::Value(value)) => Some(String::from_utf8(value).unwrap()),
        Err(error) if error.code == ErrorCode::NotFound => None,
        other => panic!("get: {other:?}"),
    }
}

fn held(partition: &Partition<MemoryEngine>, hash_key: &str, sort_key: &str) -> Timetag {
    partition
        .held_timetag(&encode_key(hash_key.as_bytes(), sort_key.as_bytes()).unwrap())
        .unwrap()
}

// The timetag packs the time over the cluster id, so ties of time go to
// the higher cluster id; companion keys and values round-trip; no raw key
// of a record can start with the companion prefix.
#[test]
fn timetags_and_companion_records_have_their_layout() {
    let tag = timetag(T0_US, 3);
    assert_eq!(tag, (T0_US << 8) | 3);
    assert_eq!((timetag_unix_us(tag), timetag_cluster_id(tag)), (T0_US, 3));
    assert!(timetag(T0_US, 4) > tag && timetag(T0_US + 1, 1) > timetag(T0_US, 127));
    assert!(
        timetag(0, 1) > 0,
        "an untagged record is older than any write"
    );
    assert_eq!(next_local_timetag(0, T0_US, 1), timetag(T0_US, 1));
    assert_eq!(
        next_local_timetag(timetag(T0_US + 5, 2), T0_US, 1),
        timetag(T0_US + 6, 1),
        "a clock behind the held timetag still writes a newer one"
    );
    assert_eq!(validate_cluster_id(1), Ok(()));
    assert_eq!(validate_cluster_id(127), Ok(()));
    for bad in [0, 128, 255] {
        assert!(validate_cluster_id(bad).unwrap_err().contains("1..=127"));
    }

    let raw_key = encode_key(b"h", b"s").unwrap();
    let key = timetag_key(&raw_key);
    assert_eq!(key, b"\xff\xff\x00\x01hs");
    assert!(is_timetag_key(&key) && !is_timetag_key(&raw_key));
    assert_eq!(data_key_of(&key), Some(raw_key.as_slice()));
    assert_eq!(data_key_of(&raw_key), None);
    for deleted in [false, true] {
        let held = HeldTimetag {
            timetag: tag,
            deleted,
        };
        let value = encode_timetag_value(held);
        assert_eq!(value.len(), TIMETAG_VALUE_BYTES);
        assert_eq!(
            crate::key::decode_value(&value).map(|(expire_ts, _)| expire_ts),
            Some(0),
            "no expire time: the TTL compaction filter keeps it"
        );
        assert_eq!(decode_timetag_value(&value), Ok(held));
    }
    let error = decode_timetag_value(b"\x00\x00\x00\x00").unwrap_err();
    assert_eq!(error.code, ErrorCode::StorageError);

    let longest = encode_key(&vec![0xFF; HASH_KEY_BYTES_MAX], &[0xFF; 8]).unwrap();
    assert!(longest < TIMETAG_KEY_PREFIX.to_vec() && !is_timetag_key(&longest));
}

// A batch received by duplication keeps its source cluster through its log
// payload, payloads written before the marker existed still decode, and
// only local, non-empty writes are shipped (**dup-no-loop**).
#[test]
fn a_received_batch_is_marked_and_never_shipped() {
    let mut batch = WriteBatch::new();
    batch.put(b"\x00\x01hs".to_vec(), encode_value(0, b"v"));
    batch.delete(b"\x00\x01ht".to_vec());
    let local = batch.encode();
    assert_eq!(
        &local[..4],
        &2u32.to_le_bytes(),
        "the old layout, unchanged"
    );
    assert_eq!(WriteBatch::decode(&local).unwrap(), batch);
    assert_eq!(should_ship(&local), Ok(true));

    batch.set_dup_source(2);
    let received = batch.encode();
    assert_eq!(&received[..5], &[0xFF, 0xFF, 0xFF, 0xFF, 2]);
    let decoded = WriteBatch::decode(&received).unwrap();
    assert_eq!(decoded.dup_source(), Some(2));
    assert_eq!(decoded, batch);
    assert_eq!(should_ship(&received), Ok(false));
    assert_eq!(should_ship(&[]), Ok(false), "the empty write");
    assert_eq!(should_ship(&WriteBatch::new().encode()), Ok(false));
    assert!(WriteBatch::decode(&received[..4]).is_err());
    assert!(should_ship(&[1, 2, 3]).is_err());
}

// On a duplicated table each write stores each record's timetag, newer
// than the one it replaces even when the clock went back or a staged
// write not yet applied holds the newest (**local-write-newest**); a
// table that is not duplicated writes no timetags.
#[test]
fn a_local_write_is_newer_than_what_it_replaces() {
    let plain = Partition::new(MemoryEngine::new(), StorageLimits::default());
    let (batch, _) = plain
        .prepare_tagged_write(&set("h", "s", "v"), epoch_s(T0_US), T0_US)
        .unwrap();
    assert_eq!(batch.len(), 1, "no companion without duplication");

    let partition = tagged(1);
    write(&partition, &set("h", "s", "v1"), T0_US);
    assert_eq!(held(&partition, "h", "s"), timetag(T0_US, 1));
    write(&partition, &set("h", "s", "v2"), T0_US - 5_000_000);
    assert_eq!(
        held(&partition, "h", "s"),
        timetag(T0_US + 1, 1),
        "the clock stepped back 5 s"
    );

    // A staged write counts: the next one is newer still.
    let (staged, _) = partition
        .prepare_tagged_write(&del("h", "s"), epoch_s(T0_US), T0_US)
        .unwrap();
    partition.stage(9, &staged);
    assert_eq!(held(&partition, "h", "s"), timetag(T0_US + 2, 1));
    let (next, _) = partition
        .prepare_tagged_write(&set("h", "s", "v3"), epoch_s(T0_US), T0_US)
        .unwrap();
    let companion = next
        .ops()
        .iter()
        .find_map(|op| match op {
            WriteOp::Put { raw_key, raw_value } if is_timetag_key(raw_key) => {
                Some(decode_timetag_value(raw_value).unwrap())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(
        companion,
        HeldTimetag {
            timetag: timetag(T0_US + 3, 1),
            deleted: false
        }
    );

    // One companion per key, as the batch leaves it; the delete of a
    // check_and_mutate's put leaves a tombstone.
    let mutate = Request::CheckAndMutate(crate::wire::message::CheckAndMutateRequest {
        hash_key: b"m".to_vec(),
        check_sort_key: b"a".to_vec(),
        check_type: CheckType::NoCheck,
        check_operand: Vec::new(),
        mutations: vec![
            crate::wire::message::Mutation::Put {
                sort_key: b"a".to_vec(),
                value: b"x".to_vec(),
                ttl_seconds: 0,
            },
            crate::wire::message::Mutation::Delete {
                sort_key: b"a".to_vec(),
            },
        ],
        return_check_value: false,
    });
    let (batch, _) = partition
        .prepare_tagged_write(&mutate, epoch_s(T0_US), T0_US)
        .unwrap();
    let companions: Vec<HeldTimetag> = batch
        .ops()
        .iter()
        .filter_map(|op| match op {
            WriteOp::Put { raw_key, raw_value } if is_timetag_key(raw_key) => {
                Some(decode_timetag_value(raw_value).unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        companions,
        vec![HeldTimetag {
            timetag: timetag(T0_US, 1),
            deleted: true
        }]
    );

    // A failed check writes nothing, not even a timetag.
    let check = Request::CheckAndSet(CheckAndSetRequest {
        hash_key: b"h".to_vec(),
        check_sort_key: b"nothing".to_vec(),
        check_type: CheckType::ValueExist,
        check_operand: Vec::new(),
        set_sort_key: b"s".to_vec(),
        set_value: b"no".to_vec(),
        set_ttl_seconds: 0,
        return_check_value: false,
    });
    let (batch, _) = partition
        .prepare_tagged_write(&check, epoch_s(T0_US), T0_US)
        .unwrap();
    assert!(batch.is_empty());

    partition.set_timetags(None);
    let (batch, _) = partition
        .prepare_tagged_write(&set("h", "s", "v4"), epoch_s(T0_US), T0_US)
        .unwrap();
    assert_eq!(batch.len(), 1, "tagging stops with the duplication");
}

// A shipped record is applied iff its timetag is not older than the one
// held: an older one is dropped, a newer or the same one applied, ties of
// time broken by the cluster id (**dup-last-write-wins**).
#[test]
fn a_shipped_write_wins_only_if_it_is_not_older() {
    let here = tagged(2);
    let there = tagged(1);
    write(&here, &set("h", "s", "here"), T0_US + 10);

    let older = write(&there, &set("h", "s", "older"), T0_US);
    assert_eq!(ship(&here, 1, &[older]), Ok(ResponseBody::Count(0)));
    assert_eq!(get(&here, "h", "s").as_deref(), Some("here"));

    let same_time = tagged(1);
    let tie = write(&same_time, &set("h", "s", "tie"), T0_US + 10);
    assert_eq!(
        ship(&here, 1, &[tie]),
        Ok(ResponseBody::Count(0)),
        "cluster 2 wins a tie against cluster 1"
    );

    let newer = write(&there, &set("h", "s", "newer"), T0_US + 20);
    assert_eq!(
        ship(&here, 1, std::slice::from_ref(&newer)),
        Ok(ResponseBody::Count(1))
    );
    assert_eq!(get(&here, "h", "s").as_deref(), Some("newer"));
    assert_eq!(held(&here, "h", "s"), timetag(T0_US + 20, 1));
    let records = here.engine().snapshot().unwrap().0;
    assert_eq!(
        ship(&here, 1, &[newer]),
        Ok(ResponseBody::Count(1)),
        "shipped again: applied again"
    );
    assert_eq!(here.engine().snapshot().unwrap().0, records, "to no effect");

    // A later local write there goes past what it received.
    write(&here, &set("h", "s", "local"), T0_US);
    assert_eq!(held(&here, "h", "s"), timetag(T0_US + 21, 2));
}

// A shipped delete leaves a tombstone: an older put shipped after it does
// not bring the key back, a newer one does.
#[test]
fn a_tombstone_keeps_an_older_put_out() {
    let a = tagged(1);
    let b = tagged(2);
    let old_put = write(&a, &set("h", "s", "old"), T0_US);
    let delete = write(&b, &del("h", "s"), T0_US + 100);
    assert_eq!(ship(&a, 2, &[delete]), Ok(ResponseBody::Count(1)));
    assert_eq!(get(&a, "h", "s"), None);
    assert_eq!(ship(&b, 1, &[old_put]), Ok(ResponseBody::Count(0)));
    assert_eq!(get(&b, "h", "s"), None);
    assert_eq!(
        a.engine().snapshot().unwrap().0,
        b.engine().snapshot().unwrap().0
    );
    let newer_put = write(&a, &set("h", "s", "new"), T0_US + 50);
    assert_eq!(
        held(&a, "h", "s"),
        timetag(T0_US + 101, 1),
        "newer than the tombstone"
    );
    assert_eq!(ship(&b, 1, &[newer_put]), Ok(ResponseBody::Count(1)));
    assert_eq!(get(&b, "h", "s").as_deref(), Some("new"));
}

// What a partition applies from a shipment is marked with the source
// cluster (so its shipper skips it), records written before duplication
// are older than any tagged write, echoes are skipped, and keys of another
// partition or payloads that do not decode refuse the whole request.
#[test]
fn shipped_batches_are_marked_checked_and_never_echoed() {
    let partition = tagged(2);
    let source = tagged(1);
    let payload = write(&source, &set("h", "a", "1"), T0_US);
    let (batch, body) = partition
        .prepare_duplicate(&DuplicateRequest {
            source_cluster_id: 1,
            dup_id: 7,
            mutations: vec![DupMutation {
                decree: 5,
                payload: payload.clone(),
            }],
        })
        .unwrap();
    assert_eq!(body, ResponseBody::Count(1));
    assert_eq!(batch.dup_source(), Some(1));
    assert_eq!(should_ship(&batch.encode()), Ok(false));
    partition.apply(&batch).unwrap();
    assert_eq!(
        ship(&partition, 1, &[batch.encode()]),
        Ok(ResponseBody::Count(0)),
        "an echo is skipped"
    );

    // Untagged: applied where nothing tagged is held, never over a tag.
    let mut untagged = WriteBatch::new();
    untagged.put(encode_key(b"h", b"a").unwrap(), encode_value(0, b"old"));
    untagged.put(encode_key(b"h", b"b").unwrap(), encode_value(0, b"old"));
    assert_eq!(
        ship(&partition, 1, &[untagged.encode(), Vec::new()]),
        Ok(ResponseBody::Count(1))
    );
    assert_eq!(get(&partition, "h", "a").as_deref(), Some("1"));
    assert_eq!(get(&partition, "h", "b").as_deref(), Some("old"));
    assert_eq!(held(&partition, "h", "b"), timetag(0, 1));

    let version = partition.engine().snapshot().unwrap().0;
    let count = 4;
    let index = crate::key::partition_index(crate::key::crc64(b"h"), count);
    partition.set_owner(count, (index + 1) % count);
    let error = ship(&partition, 1, &[payload]).unwrap_err();
    assert_eq!(error.code, ErrorCode::WrongPartition, "{error}");
    partition.set_owner(count, index);
    let error = ship(&partition, 1, &[vec![1, 2, 3]]).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument, "{error}");
    assert!(error.message.contains("decree 1"), "{error}");
    let error = ship(&partition, 0, &[]).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArgument, "{error}");
    assert_eq!(partition.engine().snapshot().unwrap().0, version);
}

/// Every read a client can make of hash keys `h0..h2`, sort keys
/// `s0..s3`: full and hash scans (filtered, counted), sortkey_count,
/// multi_get (range, reverse, by sort keys), batch_get and point reads.
fn every_read(partition: &Partition<MemoryEngine>) -> Vec<String> {
    let now = epoch_s(T0_US);
    let mut answers = Vec::new();
    let mut scans = vec![ScanRequest::new(ScanRange::Full)];
    let mut prefixed = ScanRequest::new(ScanRange::Full);
    prefixed.hash_key_filter = crate::wire::message::Filter::new(
        crate::wire::message::FilterType::MatchPrefix,
        b"h".to_vec(),
    );
    scans.push(prefixed);
    let mut counted = ScanRequest::new(ScanRange::Full);
    counted.only_return_count = true;
    scans.push(counted);
    for hash_key in ["h0", "h1", "h2"] {
        scans.push(ScanRequest::new(ScanRange::Hash {
            hash_key: hash_key.into(),
            start_sort_key: Vec::new(),
            stop_sort_key: Vec::new(),
        }));
        answers.push(format!(
            "{:?}",
            partition.execute(
                &Request::SortKeyCount {
                    hash_key: hash_key.into()
                },
                now
            )
        ));
        let mut range = MultiGetRequest::range(hash_key);
        answers.push(format!(
            "{:?}",
            partition.execute(&Request::MultiGet(range.clone()), now)
        ));
        range.reverse = true;
        answers.push(format!(
            "{:?}",
            partition.execute(&Request::MultiGet(range.clone()), now)
        ));
        range.sort_keys = vec![b"s0".to_vec(), b"s3".to_vec()];
        answers.push(format!(
            "{:?}",
            partition.execute(&Request::MultiGet(range), now)
        ));
        for sort_key in ["s0", "s1", "s2", "s3"] {
            let key = Key::new(hash_key, sort_key);
            for request in [Request::Get(key.clone()), Request::Exist(key)] {
                answers.push(format!("{:?}", partition.execute(&request, now)));
            }
        }
    }
    for scan in scans {
        // Small batches: resumption must not reach the companions either.
        let mut resume: Option<Vec<u8>> = None;
        loop {
            let batch = partition
                .scan_batch(&scan, resume.as_deref(), 2, now)
                .unwrap();
            answers.push(format!("{:?} {}", batch.records, batch.count));
            match batch.resume_after {
                Some(key) => resume = Some(key),
                None => break,
            }
        }
    }
    answers.push(format!(
        "{:?}",
        partition.execute(
            &Request::BatchGet {
                keys: vec![Key::new("h0", "s0"), Key::new("h2", "s3")],
            },
            now
        )
    ));
    answers
}

// Companion records are invisible: a duplicated partition answers every
// read exactly as one that is not duplicated and took the same writes.
#[test]
fn reads_never_see_companion_records() {
    let tagged = tagged(1);
    let plain = Partition::new(MemoryEngine::new(), StorageLimits::default());
    let writes = [
        set("h0", "s0", "a"),
        set("h0", "s1", "b"),
        Request::MultiSet {
            hash_key: b"h1".to_vec(),
            kvs: ["s0", "s1", "s2", "s3"]
                .iter()
                .map(|sort_key| SortKeyValue {
                    sort_key: sort_key.as_bytes().to_vec(),
                    value: b"m".to_vec(),
                })
                .collect(),
            ttl_seconds: 0,
        },
        del("h0", "s1"),
        del("h2", "s3"),
        set("h2", "s0", "z"),
        Request::MultiDel {
            hash_key: b"h1".to_vec(),
            sort_keys: vec![b"s1".to_vec(), b"s9".to_vec()],
        },
    ];
    for (index, request) in writes.iter().enumerate() {
        write(&tagged, request, T0_US + index as u64);
        write(&plain, request, T0_US + index as u64);
    }
    let companions = tagged
        .engine()
        .snapshot()
        .unwrap()
        .0
        .keys()
        .filter(|key| is_timetag_key(key))
        .count();
    assert_eq!(
        companions, 9,
        "one per key ever written, tombstones included"
    );
    assert_eq!(every_read(&tagged), every_read(&plain));
}

/// One cluster of the convergence test: its partition, its clock skew,
/// its mutation log and how much of it was shipped.
struct Cluster {
    id: u8,
    skew_us: i64,
    partition: Partition<MemoryEngine>,
    log: Vec<Vec<u8>>,
    shipped: usize,
}

fn random_request(rng: &mut StdRng) -> Request {
    let hash_key = format!("h{}", rng.random_range(0..2));
    let sort_key = |rng: &mut StdRng| format!("s{}", rng.random_range(0..3));
    let value = |rng: &mut StdRng| rng.random_range(-50i64..50).to_string();
    match rng.random_range(0..6) {
        0 | 1 => {
            let sort_key = sort_key(rng);
            set(&hash_key, &sort_key, &value(rng))
        }
        2 => del(&hash_key, &sort_key(rng)),
        3 => Request::MultiSet {
            hash_key: hash_key.into_bytes(),
            kvs: (0..rng.random_range(1..4))
                .map(|_| SortKeyValue {
                    sort_key: sort_key(rng).into_bytes(),
                    value: value(rng).into_bytes(),
                })
                .collect(),
            ttl_seconds: 0,
        },
        4 => Request::MultiDel {
            hash_key: hash_key.into_bytes(),
            sort_keys: (0..rng.random_range(1..3))
                .map(|_| sort_key(rng).into_bytes())
                .collect(),
        },
        _ => Request::Incr {
            key: Key::new(hash_key, sort_key(rng)),
            increment: rng.random_range(-3..4),
            ttl_seconds: 0,
        },
    }
}

/// Every write of the history, by raw key: its timetag and what it left
/// (the raw value, or `None` for a delete).
type Model = BTreeMap<Vec<u8>, Vec<(Timetag, Option<Vec<u8>>)>>;

fn record_local_write(model: &mut Model, batch: &WriteBatch) {
    let mut values: BTreeMap<&[u8], Option<Vec<u8>>> = BTreeMap::new();
    let mut tags: BTreeMap<&[u8], Timetag> = BTreeMap::new();
    for op in batch.ops() {
        match op {
            WriteOp::Put { raw_key, raw_value } => match data_key_of(raw_key) {
                Some(data_key) => {
                    tags.insert(data_key, decode_timetag_value(raw_value).unwrap().timetag);
                }
                None => {
                    values.insert(raw_key, Some(raw_value.clone()));
                }
            },
            WriteOp::Delete { raw_key } => {
                values.insert(raw_key, None);
            }
        }
    }
    assert_eq!(values.len(), tags.len(), "one timetag per record written");
    for (raw_key, value) in values {
        model
            .entry(raw_key.to_vec())
            .or_default()
            .push((tags[raw_key], value));
    }
}

/// Ships up to `most` of `from`'s unshipped log to `to` (leaving them
/// unconfirmed, to be shipped again, when `lost`).
fn ship_some(from: &mut Cluster, to: &mut Cluster, most: usize, lost: bool) {
    let end = from.shipped.saturating_add(most).min(from.log.len());
    let mutations: Vec<DupMutation> = (from.shipped..end)
        .filter(|index| should_ship(&from.log[*index]).unwrap())
        .map(|index| DupMutation {
            decree: index as i64 + 1,
            payload: from.log[index].clone(),
        })
        .collect();
    if !lost {
        from.shipped = end;
    }
    if mutations.is_empty() {
        return;
    }
    let request = DuplicateRequest {
        source_cluster_id: from.id,
        dup_id: 1,
        mutations,
    };
    let (batch, _) = to.partition.prepare_duplicate(&request).unwrap();
    if batch.is_empty() {
        return;
    }
    assert_eq!(batch.dup_source(), Some(from.id));
    to.partition.apply(&batch).unwrap();
    to.log.push(batch.encode());
}

// Two clusters duplicating one table to each other, each with its own
// clock skew, take random conflicting writes and deletes on a few keys and
// exchange their mutation streams in random interleavings, batches lost
// and shipped again: in the end both hold exactly the same records, and
// every key holds what the write with the largest timetag left
// (**dup-last-write-wins**, **local-write-newest**, **dup-no-loop**).
#[test]
fn two_clusters_converge_on_the_newest_write() {
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut clusters: Vec<Cluster> = (1..=2u8)
            .map(|id| Cluster {
                id,
                skew_us: rng.random_range(-3_000_000i64..=3_000_000),
                partition: tagged(id),
                log: Vec::new(),
                shipped: 0,
            })
            .collect();
        let mut model = Model::new();
        let mut now_us = T0_US;
        for _ in 0..rng.random_range(20..80) {
            if rng.random_bool(0.7) {
                now_us += rng.random_range(0..3_000);
            }
            let index = rng.random_range(0..2);
            if rng.random_bool(0.6) {
                let cluster = &mut clusters[index];
                let unix_us = now_us.saturating_add_signed(cluster.skew_us);
                let request = random_request(&mut rng);
                let Ok((batch, _)) =
                    cluster
                        .partition
                        .prepare_tagged_write(&request, epoch_s(unix_us), unix_us)
                else {
                    continue; // An incr of a value that is no number.
                };
                if batch.is_empty() {
                    continue;
                }
                cluster.partition.apply(&batch).unwrap();
                record_local_write(&mut model, &batch);
                cluster.log.push(batch.encode());
            } else {
                let (first, second) = clusters.split_at_mut(1);
                let (from, to) = if index == 0 {
                    (&mut first[0], &mut second[0])
                } else {
                    (&mut second[0], &mut first[0])
                };
                let most = rng.random_range(1..5);
                ship_some(from, to, most, rng.random_bool(0.2));
            }
        }
        while clusters
            .iter()
            .any(|cluster| cluster.shipped < cluster.log.len())
        {
            let (first, second) = clusters.split_at_mut(1);
            ship_some(&mut first[0], &mut second[0], usize::MAX, false);
            ship_some(&mut second[0], &mut first[0], usize::MAX, false);
        }
        let a = clusters[0].partition.engine().snapshot().unwrap().0;
        let b = clusters[1].partition.engine().snapshot().unwrap().0;
        assert_eq!(a, b, "seed {seed}: the clusters diverged");
        for (raw_key, writes) in &model {
            let (tag, value) = writes.iter().max_by_key(|(tag, _)| *tag).unwrap();
            assert_eq!(
                a.get(raw_key),
                value.as_ref(),
                "seed {seed}: key {raw_key:?} does not hold its newest write"
            );
            let companion = decode_timetag_value(&a[&timetag_key(raw_key)]).unwrap();
            assert_eq!(companion.timetag, *tag, "seed {seed}");
            assert_eq!(companion.deleted, value.is_none(), "seed {seed}");
        }
        let data_keys = a.keys().filter(|key| !is_timetag_key(key)).count();
        assert!(data_keys <= model.len(), "seed {seed}: a key nobody wrote");
    }
}
