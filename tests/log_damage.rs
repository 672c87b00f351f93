//! Damaged mutation logs with real processes. A node is SIGKILLed after a
//! write load (so its replicas hold nothing flushed and everything comes
//! back from the log), its log file is damaged, and it is restarted:
//! - a torn tail (garbage after the last record, or a cut inside the last
//!   record) is cut at the last good record and the node serves everything
//!   that was durable before it;
//! - a corrupted record in the middle of a segment stops that record's
//!   replica with an error naming the file and offset, while the node's
//!   other replicas serve all their data.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use markab::client::{Client, ClientOptions};
use markab::host::record::mutation_of_record;
use markab::key;
use markab::storage::{WriteBatch, WriteOp};
use markab::wire::ErrorCode;
use markab_shards::log::{recover, RecordLocation};

const KEYS: usize = 300;
const PARTITIONS: u32 = 8;

/// Writes KEYS keys (`key{i}` → `value{i}`), then SIGKILLs the node.
fn write_and_kill(dir: &Path) -> PathBuf {
    let config = common::write_config(dir, 1, &[("temp", 1, PARTITIONS)]);
    let node = common::Node::start(&config);
    let address = node.address();
    common::runtime().block_on(async move {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("temp").await.unwrap();
        for i in 0..KEYS {
            table
                .set(
                    format!("key{i}").as_bytes(),
                    b"s",
                    format!("value{i}").as_bytes(),
                    0,
                )
                .await
                .unwrap();
        }
    });
    node.kill();
    config
}

/// Every record of the shard's log: (location, partition, the key it sets).
fn records(log_dir: &Path) -> Vec<(RecordLocation, i32, String)> {
    let mut found = Vec::new();
    let mut visit =
        |header: &markab_shards::log::RecordHeader, payload: &[u8], location: RecordLocation| {
            let mutation =
                mutation_of_record(header.ballot, header.decree, payload).expect("a log record");
            let batch = WriteBatch::decode(&mutation.payload).unwrap();
            let WriteOp::Put { raw_key, .. } = &batch.ops()[0] else {
                panic!("a set record")
            };
            let (hash_key, _) = key::decode_key(raw_key).unwrap();
            found.push((
                location,
                header.partition_index,
                String::from_utf8(hash_key.to_vec()).unwrap(),
            ));
        };
    recover(log_dir, &mut visit).unwrap();
    found
}

fn last_segment(log_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(log_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

/// What reading one key gave: the value (None = not found) or the error.
type ReadResult = Result<Option<String>, (ErrorCode, String)>;

/// Reads every key; returns key → Ok(value or None) or the error code.
fn read_all(config: &Path) -> (common::Node, HashMap<String, ReadResult>) {
    let node = common::Node::start(config);
    let address = node.address();
    let results = common::runtime().block_on(async move {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("temp").await.unwrap();
        let mut results = HashMap::new();
        for i in 0..KEYS {
            let key = format!("key{i}");
            let result = match table.get(key.as_bytes(), b"s").await {
                Ok(value) => Ok(value.map(|value| String::from_utf8(value).unwrap())),
                Err(error) => Err((error.code().unwrap(), error.to_string())),
            };
            results.insert(key, result);
        }
        results
    });
    (node, results)
}

// Garbage after the last record is cut off; every acknowledged write is served.
#[test]
fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_and_kill(dir.path());
    let log_dir = dir.path().join("data/log/shard-0");
    let segment = last_segment(&log_dir);
    let (last, _, _) = records(&log_dir).last().unwrap().clone();
    let end_offset = last.offset + (last.end.0 - last.start.0);
    // A half-written record: bytes that are neither a record nor padding.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.resize(bytes.len().max(end_offset as usize + 100), 0);
    bytes[end_offset as usize..end_offset as usize + 100].fill(0x5a);
    std::fs::write(&segment, &bytes).unwrap();
    let (node, results) = read_all(&config);
    for i in 0..KEYS {
        assert_eq!(
            results[&format!("key{i}")],
            Ok(Some(format!("value{i}"))),
            "key{i}"
        );
    }
    assert!(node.terminate().success());
    // The cut is permanent: a second restart is clean and still complete.
    let (node, results) = read_all(&config);
    assert!(results.values().all(|result| matches!(result, Ok(Some(_)))));
    assert!(node.terminate().success());
}

// A cut inside the last record loses exactly that record; the node starts.
#[test]
fn a_torn_last_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_and_kill(dir.path());
    let log_dir = dir.path().join("data/log/shard-0");
    let all = records(&log_dir);
    let (last, _, torn_key) = all.last().unwrap().clone();
    let segment = last_segment(&log_dir);
    let cut = last.offset + (last.end.0 - last.start.0) / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let (node, results) = read_all(&config);
    for i in 0..KEYS {
        let key = format!("key{i}");
        if key == torn_key {
            assert_eq!(results[&key], Ok(None), "the torn record is gone");
        } else {
            assert_eq!(results[&key], Ok(Some(format!("value{i}"))), "{key}");
        }
    }
    assert!(node.terminate().success());
}

// A corrupted record mid-segment stops its replica, naming file and offset;
// the other replicas serve everything.
#[test]
fn mid_segment_corruption_stops_only_its_replica() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_and_kill(dir.path());
    let log_dir = dir.path().join("data/log/shard-0");
    let all = records(&log_dir);
    let (victim, victim_partition, _) = all[all.len() / 2].clone();
    let segment = log_dir.join(format!("{:020}.log", victim.segment_index));
    let mut bytes = std::fs::read(&segment).unwrap();
    // Flip a payload byte: length and id stay plausible, the crc fails.
    let payload_offset = victim.offset as usize + 8 + 24 + 2;
    bytes[payload_offset] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let (node, results) = read_all(&config);
    let mut stopped = 0;
    for i in 0..KEYS {
        let key = format!("key{i}");
        let partition =
            key::partition_index(key::partition_hash(key.as_bytes(), b"s"), PARTITIONS) as i32;
        if partition == victim_partition {
            let Err((code, message)) = &results[&key] else {
                panic!(
                    "{key} of the corrupted replica was served: {:?}",
                    results[&key]
                )
            };
            assert_eq!(*code, ErrorCode::StorageError);
            assert!(
                message.contains(&segment.display().to_string()),
                "{message}"
            );
            assert!(
                message.contains(&format!("offset {}", victim.offset)),
                "{message}"
            );
            stopped += 1;
        } else {
            assert_eq!(results[&key], Ok(Some(format!("value{i}"))), "{key}");
        }
    }
    assert!(stopped > 0);
    assert!(node.terminate().success());
}
