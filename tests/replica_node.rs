//! End to end: a real `markab replica` process with 2 shards on 127.0.0.1,
//! driven through the Rust client for every operation, including TTL expiry,
//! scans across both shards, forwarding between shards, clean shutdown on
//! SIGTERM and data surviving a restart.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use markab::client::{Client, ClientOptions, ScanOptions};
use markab::wire::{
    CheckAndMutateRequest, CheckAndSetRequest, CheckType, ErrorCode, Filter, FilterType, Key,
    MultiGetRequest, Mutation, SortKeyValue,
};

use common::runtime;

// Every data operation gives Pegasus's answer through the client against a
// real two-shard node, and the node stops cleanly on SIGTERM.
#[test]
fn every_operation_through_a_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 2, &[("temp", 1, 8), ("other", 2, 4)]);
    let node = common::Node::start(&config);
    assert_eq!(node.addresses.len(), 2);
    let address = node.address();
    runtime().block_on(async move {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("temp").await.unwrap();
        assert_eq!(table.partition_count(), 8);
        let Err(missing) = client.open_table("nope").await else {
            panic!("table nope should not exist");
        };
        assert!(missing.to_string().contains("nope"), "{missing}");

        // set / get / exist / ttl / del, with binary keys and an empty hash key.
        table.set(b"h\x00\xff", b"s", b"v1", 0).await.unwrap();
        assert_eq!(
            table.get(b"h\x00\xff", b"s").await.unwrap(),
            Some(b"v1".to_vec())
        );
        assert!(table.exist(b"h\x00\xff", b"s").await.unwrap());
        assert_eq!(table.ttl(b"h\x00\xff", b"s").await.unwrap(), Some(-1));
        table.set(b"", b"only-sort-key", b"e", 0).await.unwrap();
        assert_eq!(
            table.get(b"", b"only-sort-key").await.unwrap(),
            Some(b"e".to_vec())
        );
        table.del(b"h\x00\xff", b"s").await.unwrap();
        assert_eq!(table.get(b"h\x00\xff", b"s").await.unwrap(), None);
        assert!(!table.exist(b"h\x00\xff", b"s").await.unwrap());
        assert_eq!(table.ttl(b"h\x00\xff", b"s").await.unwrap(), None);

        // multi_set / multi_get (set and range) / sortkey_count / multi_del.
        let kvs: Vec<SortKeyValue> = (0..10)
            .map(|i| SortKeyValue {
                sort_key: format!("k{i:02}").into_bytes(),
                value: format!("v{i}").into_bytes(),
            })
            .collect();
        table.multi_set(b"row", kvs.clone(), 0).await.unwrap();
        assert_eq!(table.sortkey_count(b"row").await.unwrap(), 10);
        let got = table
            .multi_get_sort_keys(
                b"row",
                vec![b"k03".to_vec(), b"k01".to_vec(), b"zz".to_vec()],
            )
            .await
            .unwrap();
        assert_eq!(got.kvs, vec![kvs[1].clone(), kvs[3].clone()]);
        let mut range = MultiGetRequest::range(b"row".to_vec());
        range.start_sort_key = b"k02".to_vec();
        range.stop_sort_key = b"k06".to_vec();
        range.stop_inclusive = true;
        range.max_kv_count = 3;
        range.reverse = true;
        let got = table.multi_get(range).await.unwrap();
        assert_eq!(got.kvs, kvs[4..7].to_vec());
        assert!(got.incomplete, "a count limit cut the range short");
        let mut filtered = MultiGetRequest::range(b"row".to_vec());
        filtered.sort_key_filter = Filter::new(FilterType::MatchPostfix, b"7".to_vec());
        filtered.no_value = true;
        let got = table.multi_get(filtered).await.unwrap();
        assert_eq!(got.kvs.len(), 1);
        assert_eq!(got.kvs[0].sort_key, b"k07".to_vec());
        assert!(got.kvs[0].value.is_empty());
        assert!(!got.incomplete);
        let deleted = table
            .multi_del(
                b"row",
                vec![b"k00".to_vec(), b"k01".to_vec(), b"absent".to_vec()],
            )
            .await
            .unwrap();
        assert_eq!(deleted, 2);
        assert_eq!(table.sortkey_count(b"row").await.unwrap(), 8);

        // incr: missing base 0, non-integer and overflow are invalid arguments.
        assert_eq!(table.incr(b"counter", b"c", 5, 0).await.unwrap(), 5);
        assert_eq!(table.incr(b"counter", b"c", -7, 0).await.unwrap(), -2);
        table.set(b"counter", b"text", b"abc", 0).await.unwrap();
        let error = table.incr(b"counter", b"text", 1, 0).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::InvalidArgument));
        table
            .set(b"counter", b"max", i64::MAX.to_string().as_bytes(), 0)
            .await
            .unwrap();
        let error = table.incr(b"counter", b"max", 1, 0).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::InvalidArgument));

        // check_and_set and check_and_mutate.
        let cas = |check_type, operand: &[u8], value: &[u8]| CheckAndSetRequest {
            hash_key: b"cas".to_vec(),
            check_sort_key: b"c".to_vec(),
            check_type,
            check_operand: operand.to_vec(),
            set_sort_key: b"c".to_vec(),
            set_value: value.to_vec(),
            set_ttl_seconds: 0,
            return_check_value: true,
        };
        let result = table
            .check_and_set(cas(CheckType::ValueNotExist, b"", b"1"))
            .await
            .unwrap();
        assert!(result.set_succeeded && !result.check_value_exist);
        let result = table
            .check_and_set(cas(CheckType::ValueNotExist, b"", b"2"))
            .await
            .unwrap();
        assert!(!result.set_succeeded);
        assert_eq!(result.check_value, b"1".to_vec());
        let result = table
            .check_and_set(cas(CheckType::ValueIntLess, b"5", b"9"))
            .await
            .unwrap();
        assert!(result.set_succeeded, "1 < 5");
        assert_eq!(table.get(b"cas", b"c").await.unwrap(), Some(b"9".to_vec()));
        let result = table
            .check_and_mutate(CheckAndMutateRequest {
                hash_key: b"cas".to_vec(),
                check_sort_key: b"c".to_vec(),
                check_type: CheckType::ValueBytesEqual,
                check_operand: b"9".to_vec(),
                mutations: vec![
                    Mutation::Put {
                        sort_key: b"m1".to_vec(),
                        value: b"x".to_vec(),
                        ttl_seconds: 0,
                    },
                    Mutation::Delete {
                        sort_key: b"c".to_vec(),
                    },
                ],
                return_check_value: false,
            })
            .await
            .unwrap();
        assert!(result.set_succeeded);
        assert_eq!(table.get(b"cas", b"c").await.unwrap(), None);
        assert_eq!(table.get(b"cas", b"m1").await.unwrap(), Some(b"x".to_vec()));

        // batch_get across partitions (and so across shards), in request order.
        for i in 0..20 {
            let hash_key = format!("user{i}");
            table
                .set(hash_key.as_bytes(), b"name", hash_key.as_bytes(), 0)
                .await
                .unwrap();
        }
        let keys: Vec<Key> = (0..22)
            .rev()
            .map(|i| Key::new(format!("user{i}"), "name"))
            .collect();
        let records = table.batch_get(keys).await.unwrap();
        let names: Vec<String> = records
            .iter()
            .map(|record| String::from_utf8(record.value.clone()).unwrap())
            .collect();
        let expected: Vec<String> = (0..20).rev().map(|i| format!("user{i}")).collect();
        assert_eq!(names, expected);

        // hash_scan in small batches, ordered.
        let options = ScanOptions {
            batch_size: 3,
            ..ScanOptions::default()
        };
        let scanned: Vec<Vec<u8>> = table
            .hash_scan(b"row", b"", b"", options.clone())
            .map(|record| record.unwrap().sort_key)
            .collect()
            .await;
        let expected: Vec<Vec<u8>> = (2..10).map(|i| format!("k{i:02}").into_bytes()).collect();
        assert_eq!(scanned, expected);

        // full_scan sees every hash key on both shards; count agrees.
        let hash_keys: BTreeSet<Vec<u8>> = table
            .full_scan(options.clone())
            .map(|record| record.unwrap().hash_key)
            .collect()
            .await;
        for i in 0..20 {
            assert!(hash_keys.contains(format!("user{i}").as_bytes()));
        }
        let total = table.count(ScanOptions::default()).await.unwrap();
        let all: Vec<_> = table.full_scan(ScanOptions::default()).collect().await;
        assert_eq!(total as usize, all.len());
        let filtered = ScanOptions {
            hash_key_filter: Filter::new(FilterType::MatchPrefix, b"user1".to_vec()),
            ..ScanOptions::default()
        };
        let users: Vec<_> = table.full_scan(filtered).collect().await;
        assert_eq!(users.len(), 11, "user1 and user10..user19");

        // TTL: a record with a 1 s TTL is visible, then gone everywhere.
        table.set(b"ttl", b"short", b"v", 1).await.unwrap();
        table.set(b"ttl", b"long", b"v", 3600).await.unwrap();
        let left = table.ttl(b"ttl", b"long").await.unwrap().unwrap();
        assert!((3590..=3600).contains(&left), "{left}");
        assert_eq!(
            table.get(b"ttl", b"short").await.unwrap(),
            Some(b"v".to_vec())
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(table.get(b"ttl", b"short").await.unwrap(), None);
        assert!(!table.exist(b"ttl", b"short").await.unwrap());
        assert_eq!(table.sortkey_count(b"ttl").await.unwrap(), 1);
        let in_scan: Vec<_> = table
            .hash_scan(b"ttl", b"", b"", ScanOptions::default())
            .map(|record| record.unwrap().sort_key)
            .collect()
            .await;
        assert_eq!(in_scan, vec![b"long".to_vec()]);

        // A second table is independent.
        let other = client.open_table("other").await.unwrap();
        assert_eq!(other.partition_count(), 4);
        assert_eq!(other.get(b"row", b"k05").await.unwrap(), None);
    });
    let status = node.terminate();
    assert!(status.success(), "clean shutdown on SIGTERM: {status:?}");
}

// Data written before a clean shutdown is served again after a restart on
// the same data directory.
#[test]
fn data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), 2, &[("temp", 1, 4)]);
    let node = common::Node::start(&config);
    let address = node.address();
    runtime().block_on(async move {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("temp").await.unwrap();
        for i in 0..50 {
            let key = format!("key{i}");
            table
                .set(key.as_bytes(), b"s", key.as_bytes(), 0)
                .await
                .unwrap();
        }
    });
    assert!(node.terminate().success());
    let node = common::Node::start(&config);
    let address = node.address();
    runtime().block_on(async move {
        let client = Client::connect(&address, ClientOptions::default())
            .await
            .unwrap();
        let table = client.open_table("temp").await.unwrap();
        for i in 0..50 {
            let key = format!("key{i}");
            assert_eq!(
                table.get(key.as_bytes(), b"s").await.unwrap(),
                Some(key.into_bytes())
            );
        }
    });
    assert!(node.terminate().success());
}
