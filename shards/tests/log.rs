//! The mutation log on real files: concurrent appends, group commit, segment roll, GC, torn
//! tails, mid-segment corruption and dump.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use markab_shards::log::{
    dump, read_stream, recover, LogConfig, LogError, LogPosition, MutationLog, RecordHeader,
    RecordLocation, Recovery,
};

/// Runs `make()` on a fresh glommio executor and returns its output.
fn run<T: Send + 'static, F: Future<Output = T> + 'static>(
    make: impl FnOnce() -> F + Send + 'static,
) -> T {
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(make)
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// One visited record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    header: RecordHeader,
    payload: Vec<u8>,
    location: RecordLocation,
}

fn recover_all(dir: &Path) -> (Recovery, Vec<Seen>) {
    let mut seen = Vec::new();
    let recovery = recover(dir, &mut |header, payload, location| {
        seen.push(Seen {
            header: *header,
            payload: payload.to_vec(),
            location,
        })
    })
    .expect("recover");
    (recovery, seen)
}

fn config(dir: &Path) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.group_commit_window = Duration::from_micros(200);
    config
}

fn header(partition_index: i32, decree: i64) -> RecordHeader {
    RecordHeader {
        app_id: 1,
        partition_index,
        ballot: 3,
        decree,
    }
}

fn payload_of(partition_index: i32, decree: i64, bytes: usize) -> Vec<u8> {
    let seed = format!("p{partition_index}d{decree}-");
    seed.bytes().cycle().take(bytes.max(seed.len())).collect()
}

/// Opens a log after recovering `dir`, runs `writers` tasks each appending `per_writer`
/// records of stream `(1, writer)` with decrees 1.. (continuing after `decree_base`), waits for
/// each to be durable, closes, and returns the stats.
fn write_concurrently(
    config: LogConfig,
    writers: i32,
    per_writer: i64,
    payload_bytes: usize,
) -> markab_shards::log::LogStats {
    run(move || async move {
        let (recovery, _) = recover_all(&config.dir);
        let log = MutationLog::open(config, &recovery).await.expect("open");
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for decree in 1..=per_writer {
                    let payload = payload_of(writer, decree, payload_bytes);
                    let end = log
                        .append(&header(writer, decree), &payload)
                        .expect("append");
                    log.wait_durable(end).await.expect("durable");
                    assert!(log.durable() >= end);
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        log.close().await.expect("close");
        log.stats()
    })
}

/// Checks that `seen` holds every (writer, decree) exactly once with its payload, in position
/// order with contiguous positions.
fn assert_exactly_once(seen: &[Seen], writers: i32, per_writer: i64, payload_bytes: usize) {
    assert_eq!(seen.len() as i64, i64::from(writers) * per_writer);
    let mut next_decree: HashMap<i32, i64> = HashMap::new();
    let mut position = seen[0].location.start;
    for record in seen {
        assert_eq!(record.location.start, position, "positions are contiguous");
        position = record.location.end;
        let expected = next_decree
            .entry(record.header.partition_index)
            .or_insert(1);
        assert_eq!(
            record.header.decree, *expected,
            "decrees in order, once each"
        );
        *expected += 1;
        assert_eq!(
            record.payload,
            payload_of(
                record.header.partition_index,
                record.header.decree,
                payload_bytes
            )
        );
    }
    assert_eq!(next_decree.len() as i32, writers);
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    files.sort();
    files
}

fn flip_byte(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize] ^= 0x5A;
    std::fs::write(path, data).unwrap();
}

// Proves many concurrent writers on a real file come back from recovery exactly once each, in
// position order, with their payloads, and that recovery's end is the durable end.
#[test]
fn concurrent_appends_recover_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let stats = write_concurrently(config(dir.path()), 32, 40, 100);
    assert_eq!(stats.records, 32 * 40);
    let (recovery, seen) = recover_all(dir.path());
    assert_exactly_once(&seen, 32, 40, 100);
    assert_eq!(recovery.end.0, stats.bytes);
    assert!(recovery.torn_tail.is_none() && recovery.corruptions.is_empty());
}

// Proves group commit batches: 64 concurrent writers with sync on need far fewer fdatasyncs
// than records.
#[test]
fn group_commit_shares_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let stats = write_concurrently(config(dir.path()), 64, 20, 200);
    assert_eq!(stats.records, 64 * 20);
    assert!(
        stats.syncs * 8 < stats.records,
        "{} syncs for {} records",
        stats.syncs,
        stats.records
    );
    assert!(stats.batch_records_max >= 8, "{stats:?}");
    assert!(
        stats.window_waits > 0,
        "concurrent writers use the window: {stats:?}"
    );
    let (_, seen) = recover_all(dir.path());
    assert_exactly_once(&seen, 64, 20, 200);
}

// Proves that a lone writer does not wait out the group-commit window: ten
// sequential appends, each waiting for durability, never make a flush wait
// for more appends (the window is only waited while flushes carry more than
// one record), while concurrent writers do use it.
#[test]
fn lone_writer_skips_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let stats = run(move || async move {
        let recovery = recover(&config.dir, &mut |_, _, _| {}).unwrap();
        let log = MutationLog::open(config, &recovery).await.unwrap();
        for decree in 1..=10 {
            let position = log.append(&header(0, decree), b"lone").unwrap();
            log.wait_durable(position).await.unwrap();
        }
        log.close().await.unwrap();
        log.stats()
    });
    assert_eq!(stats.records, 10);
    assert_eq!(stats.batch_records_max, 1);
    assert_eq!(stats.window_waits, 0, "{stats:?}");
}

// Proves that with sync off every record is still written and recovered, and that no
// per-flush fdatasync is issued (only header and close syncs).
#[test]
fn sync_off_still_writes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.sync = false;
    let stats = write_concurrently(config, 8, 50, 64);
    assert!(stats.syncs <= 2, "{stats:?}");
    let (_, seen) = recover_all(dir.path());
    assert_exactly_once(&seen, 8, 50, 64);
}

// Proves a small segment size rolls into several segments, each with the right per-stream
// decree_max, both as the writer reports it and as recovery reads it back.
#[test]
fn segments_roll_with_decree_max() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 64 << 10;
    let segments = run(move || async move {
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .unwrap();
        for decree in 1..=200 {
            for partition in 0..2 {
                let end = log
                    .append(
                        &header(partition, decree),
                        &payload_of(partition, decree, 1000),
                    )
                    .unwrap();
                if decree % 10 == 0 {
                    log.wait_durable(end).await.unwrap();
                }
            }
        }
        log.close().await.unwrap();
        log.segments()
    });
    assert!(segments.len() >= 5, "{} segments", segments.len());
    let (recovery, seen) = recover_all(dir.path());
    assert_eq!(recovery.segments, segments);
    let mut expected: BTreeMap<u64, HashMap<(i32, i32), i64>> = BTreeMap::new();
    for record in &seen {
        let decrees = expected.entry(record.location.segment_index).or_default();
        let max = decrees.entry(record.header.stream()).or_insert(0);
        *max = (*max).max(record.header.decree);
    }
    for segment in &segments {
        assert_eq!(segment.decree_max, expected[&segment.index]);
        assert!(std::fs::metadata(&segment.path).unwrap().len() <= 64 << 10);
    }
    assert_eq!(segments.last().unwrap().decree_max[&(1, 1)], 200);
}

// Proves read_stream reads one stream's records above a decree from a live
// log's segments (sealed and open), in log order, skipping other streams.
#[test]
fn read_stream_reads_one_stream_of_a_live_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 64 << 10;
    let read = run(move || async move {
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .unwrap();
        let mut end = LogPosition::default();
        for decree in 1..=120 {
            for partition in 0..2 {
                end = log
                    .append(
                        &header(partition, decree),
                        &payload_of(partition, decree, 1000),
                    )
                    .unwrap();
            }
        }
        log.wait_durable(end).await.unwrap();
        // Read while the log is open (its last segment is still written to).
        let mut read = Vec::new();
        read_stream(&log.segments(), (1, 1), 90, &mut |header, payload| {
            read.push((header.decree, payload.to_vec()))
        })
        .unwrap();
        log.close().await.unwrap();
        assert!(log.segments().len() >= 3);
        read
    });
    let decrees: Vec<i64> = read.iter().map(|(decree, _)| *decree).collect();
    assert_eq!(decrees, (91..=120).collect::<Vec<_>>());
    for (decree, payload) in &read {
        assert_eq!(payload, &payload_of(1, *decree, 1000));
    }
}

// Proves remove_segments deletes only sealed segments from the oldest, never the open one,
// lowers total_bytes, and leaves a log that recovers cleanly from a later start position.
#[test]
fn remove_segments_deletes_only_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 64 << 10;
    let log_dir = dir.path().to_path_buf();
    let (before, after, removed, open_index) = run(move || async move {
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .unwrap();
        let mut end = LogPosition(0);
        for decree in 1..=300 {
            end = log
                .append(&header(0, decree), &payload_of(0, decree, 1000))
                .unwrap();
        }
        log.wait_durable(end).await.unwrap();
        let segments = log.segments();
        let open_index = segments.last().unwrap().index;
        let before = log.total_bytes();
        // Keep nothing: everything sealed may go, the open segment must stay.
        let removed = log.remove_segments(&|_| false).unwrap();
        let after = log.total_bytes();
        assert_eq!(log.segments().len(), 1);
        assert_eq!(log.segments()[0].index, open_index);
        // Appends keep working after GC.
        let end = log
            .append(&header(0, 301), &payload_of(0, 301, 1000))
            .unwrap();
        log.wait_durable(end).await.unwrap();
        log.close().await.unwrap();
        (before, after, removed, open_index)
    });
    assert!(removed >= 3, "removed {removed}");
    assert!(after < before);
    let files = segment_files(&log_dir);
    assert_eq!(files.len(), 1);
    let (recovery, seen) = recover_all(&log_dir);
    assert_eq!(recovery.segments[0].index, open_index);
    assert!(recovery.segments[0].start.0 > 0);
    assert_eq!(seen.last().unwrap().header.decree, 301);
    assert!(recovery.corruptions.is_empty() && recovery.torn_tail.is_none());
}

// Proves a keep predicate stops deletion at the first segment it keeps.
#[test]
fn remove_segments_stops_at_first_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 64 << 10;
    let removed = run(move || async move {
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .unwrap();
        let mut end = LogPosition(0);
        for decree in 1..=300 {
            end = log
                .append(&header(0, decree), &payload_of(0, decree, 1000))
                .unwrap();
        }
        log.wait_durable(end).await.unwrap();
        // The replica has flushed up to decree 100: segments whose decrees all lie at or below
        // it may go.
        let removed = log
            .remove_segments(&|segment| segment.decree_max[&(1, 0)] > 100)
            .unwrap();
        assert!(log.segments()[0].decree_max[&(1, 0)] > 100);
        log.close().await.unwrap();
        removed
    });
    assert!(removed >= 1);
}

/// Writes `count` records of stream (1, 0) and returns the recovered view.
fn write_simple(dir: &Path, count: i64, payload_bytes: usize) -> Vec<Seen> {
    let config = config(dir);
    run(move || async move {
        let (recovery, _) = recover_all(&config.dir);
        let log = MutationLog::open(config, &recovery).await.unwrap();
        let mut end = LogPosition(0);
        for decree in 1..=count {
            end = log
                .append(&header(0, decree), &payload_of(0, decree, payload_bytes))
                .unwrap();
        }
        log.wait_durable(end).await.unwrap();
        log.close().await.unwrap();
    });
    recover_all(dir).1
}

// Proves a last segment cut in the middle of its last record is a torn tail: recovery cuts
// the file at the last good record, and a second recovery is clean.
#[test]
fn torn_tail_mid_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let seen = write_simple(dir.path(), 20, 300);
    let last = seen.last().unwrap().location;
    let path = segment_files(dir.path()).pop().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(last.offset + 100).unwrap();
    drop(file);
    let (recovery, seen) = recover_all(dir.path());
    assert_eq!(seen.len(), 19);
    let torn = recovery.torn_tail.expect("torn tail");
    assert_eq!(
        (torn.path.clone(), torn.offset, torn.bytes_dropped),
        (path.clone(), last.offset, 100)
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), last.offset);
    assert!(recovery.corruptions.is_empty());
    assert_eq!(recovery.end, last.start);
    let (again, seen_again) = recover_all(dir.path());
    assert!(again.torn_tail.is_none() && again.corruptions.is_empty());
    assert_eq!(seen_again, seen);
}

// Proves garbage appended after the last record is a torn tail cut at the last good record's
// end, and that a new log opened after it continues from there.
#[test]
fn garbage_after_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let seen = write_simple(dir.path(), 10, 50);
    let last = seen.last().unwrap().location;
    let path = segment_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&path).unwrap();
    data.extend_from_slice(&[0xAB; 123]);
    std::fs::write(&path, &data).unwrap();
    let (recovery, seen) = recover_all(dir.path());
    assert_eq!(seen.len(), 10);
    let torn = recovery.torn_tail.expect("torn tail");
    let record_end = last.offset + (last.end.0 - last.start.0);
    assert_eq!(torn.offset, record_end);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), record_end);
    let (again, _) = recover_all(dir.path());
    assert!(again.torn_tail.is_none());
    // A new log continues after the cut in a new segment.
    let seen = write_simple(dir.path(), 5, 50);
    assert_eq!(seen.len(), 15);
    assert_eq!(segment_files(dir.path()).len(), 2);
}

/// Writes 3 streams interleaved into small segments; returns the recovered records.
fn write_three_streams(dir: &Path) -> Vec<Seen> {
    let mut config = config(dir);
    config.segment_bytes = 64 << 10;
    run(move || async move {
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .unwrap();
        let mut end = LogPosition(0);
        for decree in 1..=100 {
            for partition in 0..3 {
                end = log
                    .append(
                        &header(partition, decree),
                        &payload_of(partition, decree, 700),
                    )
                    .unwrap();
            }
        }
        log.wait_durable(end).await.unwrap();
        log.close().await.unwrap();
    });
    recover_all(dir).1
}

// Proves a flipped byte in a record in the middle of an earlier (sealed) segment is reported
// as corruption naming the file and offset and the damaged record's stream, that the other
// streams are not listed, and that records after it are still visited.
#[test]
fn corruption_in_sealed_segment_is_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let seen = write_three_streams(dir.path());
    let victim = seen
        .iter()
        .find(|record| record.location.segment_index == 2 && record.header.partition_index == 1)
        .unwrap()
        .clone();
    let path = segment_files(dir.path())[1].clone();
    flip_byte(&path, victim.location.offset + 40);
    let (recovery, after) = recover_all(dir.path());
    assert_eq!(recovery.corruptions.len(), 1);
    let corruption = &recovery.corruptions[0];
    assert_eq!(corruption.path, path);
    assert_eq!(corruption.offset, victim.location.offset);
    assert_eq!(corruption.streams, vec![(1, 1)]);
    assert!(recovery.torn_tail.is_none());
    assert_eq!(after.len(), seen.len() - 1);
    assert!(!after.contains(&victim));
    // Records of the other streams after the damage are still visited.
    assert!(after.iter().any(|record| record.header.partition_index == 0
        && record.location.start > victim.location.start));
    assert_eq!(after.last().unwrap().header.decree, 100);
}

// Proves damage in the last segment followed by good records is corruption, not a torn tail:
// nothing is cut, the file and offset are named, and a stream whose decree jumps is listed even
// when the bad record's id is not readable.
#[test]
fn corruption_in_last_segment_with_records_after_is_not_torn() {
    let dir = tempfile::tempdir().unwrap();
    let seen = write_three_streams(dir.path());
    let last_index = seen.last().unwrap().location.segment_index;
    let victim = seen
        .iter()
        .filter(|record| record.location.segment_index == last_index)
        .find(|record| record.header.partition_index == 2)
        .unwrap()
        .clone();
    let path = segment_files(dir.path()).pop().unwrap();
    let length_before = std::fs::metadata(&path).unwrap().len();
    // Damage the length field's high byte: bad length, and the id is still readable.
    flip_byte(&path, victim.location.offset + 3);
    let (recovery, after) = recover_all(dir.path());
    assert!(recovery.torn_tail.is_none());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), length_before);
    assert_eq!(recovery.corruptions.len(), 1);
    assert_eq!(recovery.corruptions[0].path, path);
    assert_eq!(recovery.corruptions[0].offset, victim.location.offset);
    assert_eq!(recovery.corruptions[0].streams, vec![(1, 2)]);
    assert_eq!(after.len(), seen.len() - 1);
    assert_eq!(after.last(), seen.last());
}

// Proves the decree-gap rule names a stream even when the damaged record's id is garbage.
#[test]
fn corruption_with_garbled_id_names_stream_by_decree_gap() {
    let dir = tempfile::tempdir().unwrap();
    let seen = write_three_streams(dir.path());
    let victim = seen
        .iter()
        .find(|record| {
            record.location.segment_index == 1
                && record.header.decree == 20
                && record.header.partition_index == 0
        })
        .unwrap()
        .clone();
    let path = segment_files(dir.path())[0].clone();
    // Make app_id negative (implausible) and the crc fail.
    let mut data = std::fs::read(&path).unwrap();
    data[victim.location.offset as usize + 8 + 3] |= 0x80;
    std::fs::write(&path, data).unwrap();
    let (recovery, _) = recover_all(dir.path());
    assert_eq!(recovery.corruptions.len(), 1);
    assert_eq!(recovery.corruptions[0].streams, vec![(1, 0)]);
}

// Proves dump prints the header, every record with crc ok, and marks a damaged record BAD.
#[test]
fn dump_lists_records_and_marks_bad() {
    let dir = tempfile::tempdir().unwrap();
    let seen = write_simple(dir.path(), 6, 40);
    let path = segment_files(dir.path()).pop().unwrap();
    flip_byte(&path, seen[2].location.offset + 35);
    let mut out = Vec::new();
    dump(dir.path(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("index 1 start 0"), "{text}");
    for (ordinal, record) in seen.iter().enumerate() {
        let line = format!("offset {} ", record.location.offset);
        let line = text.lines().find(|l| l.contains(&line)).expect(&line);
        if ordinal == 2 {
            assert!(
                line.contains("BAD (stream 1.0 ballot 3 decree 3)"),
                "{line}"
            );
        } else {
            assert!(line.contains(&format!("stream 1.0 ballot 3 decree {}", ordinal + 1)));
            assert!(
                line.contains("payload_bytes 40") && line.contains("crc ok"),
                "{line}"
            );
        }
    }
    assert!(text.contains("5 records, 1 bad"), "{text}");
}

// Proves append refuses payloads that exceed the segment's room, and that after close appends
// answer Closed.
#[test]
fn append_bounds_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 64 << 10;
    run(move || async move {
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .unwrap();
        let too_big = vec![0u8; 64 << 10];
        assert!(matches!(
            log.append(&header(0, 1), &too_big),
            Err(LogError::RecordTooLarge { .. })
        ));
        let end = log.append(&header(0, 1), b"ok").unwrap();
        log.close().await.unwrap();
        assert!(log.durable() >= end);
        assert!(matches!(
            log.append(&header(0, 2), b"no"),
            Err(LogError::Closed)
        ));
    });
}

// Proves append answers Busy once pending bytes pass PENDING_BATCHES_MAX × batch_bytes_max
// while nothing has been flushed yet.
#[test]
fn append_answers_busy_when_pending_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.batch_bytes_max = 4096;
    let busy = run(move || async move {
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .unwrap();
        let payload = vec![7u8; 1000];
        let mut busy = false;
        // No await in the loop: the group-commit task cannot run, so pending only grows.
        for decree in 1..=100 {
            match log.append(&header(0, decree), &payload) {
                Ok(_) => {}
                Err(LogError::Busy { .. }) => {
                    busy = true;
                    break;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        log.close().await.unwrap();
        busy
    });
    assert!(busy);
}

// Proves an empty last segment whose header never became valid (a crash right after create)
// is deleted by recovery, and that a garbled header on a segment with data is an error naming
// the file.
#[test]
fn bad_headers() {
    let dir = tempfile::tempdir().unwrap();
    write_simple(dir.path(), 3, 10);
    let empty = dir.path().join("00000000000000000002.log");
    std::fs::write(&empty, [0u8; 100]).unwrap();
    let (recovery, seen) = recover_all(dir.path());
    assert_eq!(seen.len(), 3);
    assert_eq!(recovery.removed_segment.unwrap().path, empty);
    assert!(!empty.exists());
    let first = segment_files(dir.path())[0].clone();
    flip_byte(&first, 2);
    let error = recover(dir.path(), &mut |_, _, _| {}).unwrap_err();
    assert!(matches!(&error, LogError::BadSegmentHeader { path, .. } if *path == first));
    assert!(error.to_string().contains("00000000000000000001.log"));
}

// Proves writes shared through Rc from a second task still complete in position order.
#[test]
fn durable_waiters_complete_in_any_wait_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    run(move || async move {
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .unwrap();
        let ends: Vec<LogPosition> = (1..=10)
            .map(|decree| log.append(&header(0, decree), b"x").unwrap())
            .collect();
        let order = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for end in ends.iter().rev().copied() {
            let (log, order) = (log.clone(), order.clone());
            tasks.push(glommio::spawn_local(async move {
                log.wait_durable(end).await.unwrap();
                order.borrow_mut().push(end);
            }));
        }
        for task in tasks {
            task.await;
        }
        assert_eq!(order.borrow().len(), 10);
        assert!(log.durable() >= *ends.last().unwrap());
        log.close().await.unwrap();
    });
}

// Proves every acknowledged record survives when the log is dropped without close (the
// in-process stand-in for a crash): recovery finds all of them.
#[test]
fn acknowledged_records_survive_drop_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    run(move || async move {
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .unwrap();
        for decree in 1..=50 {
            let end = log
                .append(&header(0, decree), &payload_of(0, decree, 500))
                .unwrap();
            log.wait_durable(end).await.unwrap();
        }
        // Appended but never awaited: may or may not survive.
        log.append(&header(0, 51), b"unacknowledged").unwrap();
        drop(log);
    });
    let (recovery, seen) = recover_all(dir.path());
    assert!(seen.len() >= 50);
    assert_exactly_once(&seen[..50], 1, 50, 500);
    assert!(recovery.corruptions.is_empty());
}

// Proves an I/O error is fatal: when the next segment cannot be created (the directory was
// removed), waiters and every later append get Failed.
#[test]
fn io_error_fails_waiters_and_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let mut config = config(&log_dir);
    config.segment_bytes = 64 << 10;
    run(move || async move {
        let log = MutationLog::open(config, &Recovery::default())
            .await
            .unwrap();
        let end = log.append(&header(0, 1), b"first").unwrap();
        log.wait_durable(end).await.unwrap();
        std::fs::remove_dir_all(&log_dir).unwrap();
        let mut end = end;
        for decree in 2..=100 {
            end = log
                .append(&header(0, decree), &payload_of(0, decree, 1000))
                .unwrap();
        }
        let error = log.wait_durable(end).await.unwrap_err();
        assert!(matches!(error, LogError::Failed(_)), "{error}");
        assert!(error.to_string().contains("create segment"), "{error}");
        assert!(matches!(
            log.append(&header(0, 101), b"late"),
            Err(LogError::Failed(_))
        ));
        assert!(log.close().await.is_err());
    });
}
