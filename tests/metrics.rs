//! Prometheus metrics of a real node: after writes and reads through the
//! client, `/metrics` (served on the port from the node's config) shows the
//! per-operation counters, error counts, latency histograms, log fsync and
//! batch histograms, RocksDB memory gauges and replica counts.

mod common;

use std::time::{Duration, Instant};

use common::{sample, scrape};
use markab::client::{Client, ClientOptions};

// Counters, histograms and gauges reflect what the node did.
#[test]
fn node_metrics_reflect_requests() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 1, &[("temp", 1, 4)]);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("[node]\n", "[node]\nmetrics_listen = \"127.0.0.1:0\"\n");
    std::fs::write(&config, text).unwrap();
    let node = common::Node::start(&config);
    let metrics_address = node
        .metrics_address
        .clone()
        .expect("ready line names the metrics address");
    let address = node.address();
    common::runtime().block_on(async move {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("temp").await.unwrap();
        for i in 0..20 {
            table
                .set(format!("k{i}").as_bytes(), b"s", b"v", 0)
                .await
                .unwrap();
        }
        for i in 0..25 {
            let _ = table.get(format!("k{i}").as_bytes(), b"s").await.unwrap();
        }
    });
    // Gauges refresh every 500 ms.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = scrape(&metrics_address);
        if text.contains("markab_replicas{role=\"primary\",shard=\"0\"} 4")
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "markab_requests_total{op=\"set\",shard=\"0\"}"),
        20.0
    );
    assert_eq!(
        sample(&text, "markab_requests_total{op=\"get\",shard=\"0\"}"),
        25.0
    );
    // k20..k24 were never written: five NOT_FOUND answers.
    assert_eq!(
        sample(
            &text,
            "markab_request_errors_total{code=\"NOT_FOUND\",op=\"get\",shard=\"0\"}"
        ),
        5.0
    );
    assert_eq!(
        sample(
            &text,
            "markab_request_latency_seconds_count{op=\"set\",shard=\"0\"}"
        ),
        20.0
    );
    assert!(sample(&text, "markab_log_fsync_seconds_count{shard=\"0\"}") >= 1.0);
    assert!(sample(&text, "markab_log_flush_records_sum{shard=\"0\"}") >= 20.0);
    assert!(sample(&text, "markab_log_bytes{shard=\"0\"}") > 0.0);
    assert!(text.contains("markab_rocksdb_block_cache_bytes{shard=\"0\"}"));
    assert!(text.contains("markab_record_cache_bytes{shard=\"0\"}"));
    assert!(text.contains("markab_record_cache_lookups_total{"));
    assert!(text.contains("markab_rocksdb_write_buffer_bytes{shard=\"0\"}"));
    assert_eq!(
        sample(&text, "markab_replicas{role=\"primary\",shard=\"0\"}"),
        4.0
    );
    assert!(node.terminate().success());
}
