//! The S3 store against a real S3 server: moto (`moto[server]==5.2.5`, installed by
//! `scripts/setup.sh` into `.moto-venv/` at the repository root). Each test starts its own
//! `moto_server` on a free loopback port, waits (bounded) until it answers, creates its bucket
//! with a plain HTTP `PUT /bucket`, and kills the server by pid when it ends ([`Moto`]'s `Drop`).
//! Every test body runs under [`TEST_BOUND`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;

use markab_blocks::moto::Moto;
use markab_blocks::{
    BlockError, BlockStore, RetryPolicy, S3Config, S3Credentials, S3Store, StoreOptions,
};

/// Bound on one test's body, moto's start included.
const TEST_BOUND: Duration = Duration::from_secs(90);
const MIB: usize = 1 << 20;
const ACCESS_KEY_ID: &str = "AKIAMARKABTESTKEY";
const SECRET_ACCESS_KEY: &str = "markab-test-secret-do-not-print";

/// Small bounds so that failures show quickly: 5 MiB parts (S3's minimum) from 5 MiB on, 3
/// attempts with 50 ms backoff doubling to 200 ms, no retry after 5 s.
fn test_options() -> StoreOptions {
    StoreOptions {
        multipart_threshold_bytes: 5 * MIB as u64,
        part_bytes: 5 * MIB,
        retry: RetryPolicy {
            attempts_max: 3,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            elapsed_max: Duration::from_secs(5),
        },
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(20),
        ..StoreOptions::default()
    }
}

fn store(moto: &Moto, bucket: &str, options: StoreOptions) -> S3Store {
    let config = S3Config {
        endpoint: Some(moto.endpoint()),
        region: "us-east-1".to_string(),
        bucket: bucket.to_string(),
        prefix: "cluster-a".to_string(),
        credentials: Some(S3Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY)),
    };
    S3Store::new(config, options).unwrap()
}

/// object_store's own client for `bucket`, to look at what the store wrote (the ETag of a
/// multi-part object ends in `-<parts>`).
fn raw_s3(moto: &Moto, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id(ACCESS_KEY_ID)
        .with_secret_access_key(SECRET_ACCESS_KEY)
        .build()
        .unwrap()
}

/// Writes `size_bytes` of a non-repeating-looking pattern to `path` and returns them.
fn write_file(path: &Path, size_bytes: usize) -> Vec<u8> {
    let bytes: Vec<u8> = (0..size_bytes)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_BOUND, body)
        .await
        .expect("test body exceeded its bound");
}

/// Proves round trips through a real S3 server: put_bytes/get_bytes, a 1 MiB file with one put
/// and a 12 MiB file in three parts (5 + 5 + 2 MiB; the object's ETag ends in `-3`, S3's mark of
/// a multi-part object), each downloaded with its recorded FileInfo and byte-identical.
#[tokio::test]
async fn small_and_multipart_round_trips() {
    bounded(async {
        let moto = Moto::start(&[]);
        moto.create_bucket("round-trip");
        let store = store(&moto, "round-trip", test_options());
        let (_dir, dir) = scratch();

        let manifest = store
            .put_bytes("m/manifest", b"{\"files\":2}".to_vec())
            .await
            .unwrap();
        assert_eq!(manifest.size_bytes, 11);
        assert_eq!(
            store.get_bytes("m/manifest").await.unwrap(),
            b"{\"files\":2}"
        );

        for (key, size_bytes, parts) in [
            ("t/1/small.sst", MIB, None),
            ("t/1/big.sst", 12 * MIB, Some(3)),
        ] {
            let source = dir.join("source");
            let bytes = write_file(&source, size_bytes);
            let put = store.put_file(&source, key).await.unwrap();
            assert_eq!(put.size_bytes, size_bytes as u64, "{key}");
            assert_eq!(put.key, key);

            let target = dir.join("restored").join(key);
            let got = store.get_file(key, &target, Some(&put)).await.unwrap();
            assert_eq!(got, put, "{key}");
            assert!(
                std::fs::read(&target).unwrap() == bytes,
                "{key}: bytes differ"
            );

            let etag = raw_s3(&moto, "round-trip")
                .head(&object_store::path::Path::from(format!("cluster-a/{key}")))
                .await
                .unwrap()
                .e_tag
                .unwrap_or_else(|| panic!("{key}: no ETag"));
            match parts {
                Some(parts) => assert!(etag.contains(&format!("-{parts}")), "{key}: {etag}"),
                None => assert!(!etag.contains('-'), "{key}: {etag}"),
            }
        }
        assert!(store.exists("t/1/big.sst").await.unwrap());
        assert!(!store.exists("t/1/nothing").await.unwrap());
        let error = store.get_bytes("t/1/nothing").await.unwrap_err();
        assert!(matches!(error, BlockError::NotFound { .. }), "{error}");
        assert!(error.to_string().contains("t/1/nothing"), "{error}");
    })
    .await;
}

/// Proves list matches whole segments under the store's prefix and reports sizes, and that
/// delete_prefix removes exactly the keys under its prefix (and delete of a missing key is fine).
#[tokio::test]
async fn list_and_delete_prefix() {
    bounded(async {
        let moto = Moto::start(&[]);
        moto.create_bucket("listing");
        let store = store(&moto, "listing", test_options());
        for key in ["t/1/b", "t/1/a", "t/1/sub/c", "t/10/a", "u"] {
            store.put_bytes(key, key.as_bytes().to_vec()).await.unwrap();
        }
        let keys = |entries: Vec<markab_blocks::ListEntry>| -> Vec<String> {
            entries.into_iter().map(|entry| entry.key).collect()
        };
        assert_eq!(
            keys(store.list("t/1").await.unwrap()),
            ["t/1/a", "t/1/b", "t/1/sub/c"]
        );
        let all = store.list("").await.unwrap();
        assert_eq!(
            keys(all.clone()),
            ["t/1/a", "t/1/b", "t/1/sub/c", "t/10/a", "u"]
        );
        assert_eq!(all[2].size_bytes, 9);

        store.delete("t/1/b").await.unwrap();
        store.delete("t/1/b").await.unwrap();
        assert_eq!(store.delete_prefix("t/1").await.unwrap(), 2);
        assert_eq!(keys(store.list("").await.unwrap()), ["t/10/a", "u"]);
        assert_eq!(store.delete_prefix("").await.unwrap(), 2);
        assert_eq!(store.list("").await.unwrap(), []);
    })
    .await;
}

/// Proves a flipped byte is detected: the object is overwritten with one byte changed, and
/// get_file with the FileInfo recorded at upload fails with a checksum error naming the key,
/// leaving nothing at the target path.
#[tokio::test]
async fn flipped_byte_is_detected() {
    bounded(async {
        let moto = Moto::start(&[]);
        moto.create_bucket("corruption");
        let store = store(&moto, "corruption", test_options());
        let (_dir, dir) = scratch();
        let source = dir.join("source");
        write_file(&source, 6 * MIB);
        let info = store.put_file(&source, "t/1/000007.sst").await.unwrap();

        let mut stored = store.get_bytes("t/1/000007.sst").await.unwrap();
        stored[3 * MIB] ^= 0x01;
        store.put_bytes("t/1/000007.sst", stored).await.unwrap();

        let target = dir.join("restored.sst");
        let error = store
            .get_file("t/1/000007.sst", &target, Some(&info))
            .await
            .unwrap_err();
        assert!(matches!(error, BlockError::Checksum { .. }), "{error}");
        assert!(error.to_string().contains("\"t/1/000007.sst\""), "{error}");
        assert!(!target.exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary file left behind"
        );
    })
    .await;
}

/// Proves rejected credentials give a clear Credentials error quickly, with neither the key id
/// nor the secret in the message. moto checks credentials once `INITIAL_NO_AUTH_ACTION_COUNT=0`
/// turns its IAM authentication on; ours are unknown to it (403 InvalidAccessKeyId).
#[tokio::test]
async fn wrong_credentials_fail_fast() {
    bounded(async {
        let moto = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
        let store = store(&moto, "locked", test_options());
        let (_dir, dir) = scratch();
        let source = dir.join("source");
        write_file(&source, 1000);

        let started = Instant::now();
        let errors = [
            store
                .put_bytes("m/manifest", b"x".to_vec())
                .await
                .unwrap_err(),
            store.put_file(&source, "t/1/f").await.unwrap_err(),
            store.get_bytes("m/manifest").await.unwrap_err(),
            store.list("").await.unwrap_err(),
        ];
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        for error in errors {
            let text = error.to_string();
            assert!(matches!(error, BlockError::Credentials { .. }), "{text}");
            assert!(text.contains("InvalidAccessKeyId"), "{text}");
            assert!(
                !text.contains(ACCESS_KEY_ID) && !text.contains(SECRET_ACCESS_KEY),
                "{text}"
            );
            let debug = format!("{error:?}");
            assert!(
                !debug.contains(ACCESS_KEY_ID) && !debug.contains(SECRET_ACCESS_KEY),
                "{debug}"
            );
        }
    })
    .await;
}

/// Proves a missing bucket is its own clear error, on reads and on writes.
#[tokio::test]
async fn missing_bucket_is_a_clear_error() {
    bounded(async {
        let moto = Moto::start(&[]);
        let store = store(&moto, "no-such-bucket", test_options());
        for error in [
            store
                .put_bytes("m/manifest", b"x".to_vec())
                .await
                .unwrap_err(),
            store.get_bytes("m/manifest").await.unwrap_err(),
        ] {
            assert!(
                matches!(error, BlockError::BucketNotFound { .. }),
                "{error}"
            );
            assert!(error.to_string().contains("\"no-such-bucket\""), "{error}");
        }
    })
    .await;
}

/// Proves a server that goes away fails uploads with a Transient error within a bound, never a
/// hang: the server is killed while a paced 12 MiB multi-part upload is under way (the upload
/// fails, its abort is attempted), and a later upload to the dead server fails after its bounded
/// retries. (moto keeps objects in memory, so what a restarted server lists says nothing.)
#[tokio::test]
async fn stopped_server_fails_within_bounds() {
    bounded(async {
        let mut moto = Moto::start(&[]);
        moto.create_bucket("outage");
        let options = StoreOptions {
            upload_bytes_per_second: 4 * MIB as u64,
            ..test_options()
        };
        let store = store(&moto, "outage", options);
        let (_dir, dir) = scratch();
        let source = dir.join("source");
        write_file(&source, 12 * MIB);

        let started = Instant::now();
        let upload = store.put_file(&source, "t/1/big.sst");
        tokio::pin!(upload);
        tokio::select! {
            result = &mut upload => panic!("a 3 s paced upload ended after 1.5 s: {result:?}"),
            () = tokio::time::sleep(Duration::from_millis(1500)) => {}
        }
        moto.kill();
        let error = upload.await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
        assert!(matches!(error, BlockError::Transient { .. }), "{error}");
        assert!(error.to_string().contains("t/1/big.sst"), "{error}");

        let started = Instant::now();
        let error = store
            .put_bytes("m/manifest", b"x".to_vec())
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        assert!(
            matches!(error, BlockError::Transient { attempts: 3, .. }),
            "{error}"
        );
    })
    .await;
}
