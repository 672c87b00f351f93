//! Mutation log garbage collection with a real node: with 1 MiB segments
//! and a 4 MiB log bound, writing about 24 MiB keeps the log directory near
//! its bound (segments are deleted once every replica has flushed past them,
//! and replicas pinning old segments are made to flush), and every record is
//! still readable afterwards — also after a SIGKILL and restart, which shows
//! that deleted segments were really flushed.

mod common;

use std::time::{Duration, Instant};

use markab::client::{Client, ClientOptions};

const SEGMENT_BYTES: u64 = 1 << 20;
const LOG_BYTES_MAX: u64 = 4 << 20;
const VALUES: usize = 3_000;
const VALUE_BYTES: usize = 8 * 1024;
const WRITERS: usize = 8;

// The log stays bounded under sustained writes, and nothing is lost.
#[test]
fn log_stays_bounded_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = format!("log_segment_bytes = {SEGMENT_BYTES}\nlog_bytes_max = {LOG_BYTES_MAX}\n");
    let config = common::write_config_with(dir.path(), 1, &[("temp", 1, 4)], &tuning);
    let node = common::Node::start(&config);
    let log_dir = dir.path().join("data/log/shard-0");
    let runtime = common::runtime();
    let address = node.address();
    let sampler_dir = log_dir.clone();
    let (stop_sampling, stopped) = std::sync::mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut largest = 0;
        while stopped.recv_timeout(Duration::from_millis(20)).is_err() {
            largest = largest.max(common::dir_bytes(&sampler_dir));
        }
        largest
    });
    runtime.block_on(async {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("temp").await.unwrap();
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let table = table.clone();
            tasks.push(tokio::spawn(async move {
                for i in (writer..VALUES).step_by(WRITERS) {
                    let value = vec![(i % 251) as u8; VALUE_BYTES];
                    table
                        .set(format!("key{i}").as_bytes(), b"s", &value, 0)
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    // Give housekeeping a moment to collect the last segments.
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::dir_bytes(&log_dir) > LOG_BYTES_MAX && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_sampling.send(()).unwrap();
    let largest = sampler.join().unwrap();
    let written = (VALUES * VALUE_BYTES) as u64;
    eprintln!("wrote {written} bytes; largest log directory seen: {largest} bytes");
    // The bound is checked every 50 ms, so the log may overshoot it by what
    // arrives in between; it must stay far below what was written.
    assert!(
        largest < LOG_BYTES_MAX + 8 * SEGMENT_BYTES,
        "log grew to {largest} bytes"
    );
    assert!(
        common::dir_bytes(&log_dir) <= LOG_BYTES_MAX,
        "log did not shrink back under its bound"
    );
    let segments = std::fs::read_dir(&log_dir).unwrap().count();
    assert!(
        segments < VALUES * VALUE_BYTES / SEGMENT_BYTES as usize / 2,
        "{segments} segments left"
    );

    node.kill();
    let node = common::Node::start(&config);
    let address = node.address();
    runtime.block_on(async {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("temp").await.unwrap();
        for i in 0..VALUES {
            let value = table.get(format!("key{i}").as_bytes(), b"s").await.unwrap();
            assert_eq!(value, Some(vec![(i % 251) as u8; VALUE_BYTES]), "key{i}");
        }
    });
    assert!(node.terminate().success());
}
