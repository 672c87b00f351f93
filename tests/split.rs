//! Online partition split with real processes (docs/split.md): `markab
//! meta` and three `markab replica` nodes of two shards each on 127.0.0.1,
//! a table of 8 partitions × 3 replicas split to 16 and then 32 while
//! `markab bench` runs workload A through meta, writers of the client
//! library record every acknowledged write, and a Redis client writes
//! through `markab redis-proxy`. Nothing the users see may fail; every
//! acknowledged write reads back; a full scan returns each record once;
//! count, sortkey_count and multi_get agree with what was written. Then a
//! split through a SIGKILLed node and a meta restart, and every bad request
//! refused with nothing changed.
//!
//! Every wait is bounded; the loads are bounded in time and requests; only
//! the processes the test started are killed, by pid.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{wait_for, Cluster, ClusterOptions};
use common::load::{start_load, Load};
use common::value_of;
use futures::StreamExt;
use markab::client::{Client, ClientOptions, ScanOptions, Table};
use markab::wire::{ErrorCode, MultiGetRequest, Request, ResponseBody, SortKeyValue, SplitRequest};

const TABLE: &str = "split";
/// Concurrent writers of the client-library load.
const WRITERS: usize = 3;
/// Most writes that load makes.
const WRITES_MAX: usize = 100_000;
/// Hash keys written with several sort keys before the split.
const WIDE_KEYS: usize = 40;
/// Sort keys of each of them.
const WIDE_SORT_KEYS: usize = 5;
/// Bound on one split, from its start to its commit.
const SPLIT_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on one RESP reply through the proxy.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// One cluster at a time: a two-core machine runs one well, not two.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn split(cluster: &Cluster, request: SplitRequest) -> Result<Vec<(String, String)>, String> {
    match cluster.meta_call(&Request::PartitionSplit(request)) {
        Ok(ResponseBody::Pairs(pairs)) => Ok(pairs),
        Ok(other) => panic!("partition_split answered {other:?}"),
        Err(error) => Err(format!("{}: {}", error.code, error.message)),
    }
}

fn split_refused(cluster: &Cluster, request: SplitRequest, code: ErrorCode, needle: &str) {
    match cluster.meta_call(&Request::PartitionSplit(request.clone())) {
        Err(error) => {
            assert_eq!(error.code, code, "{request:?}: {}", error.message);
            assert!(
                error.message.contains(needle),
                "{request:?}: {:?} does not say {needle:?}",
                error.message
            );
        }
        Ok(other) => panic!("{request:?} was accepted: {other:?}"),
    }
}

/// Starts a split of `TABLE` to `new_count` and waits (bounded) until meta
/// committed it and every partition of the new count has its replicas;
/// returns how long the commit took.
fn split_to(cluster: &Cluster, new_count: i32, replicas: usize) -> Duration {
    let started = Instant::now();
    let answer = split(
        cluster,
        SplitRequest::Start {
            table: TABLE.into(),
            new_count,
        },
    )
    .expect("the split starts");
    assert_eq!(value_of(&answer, "split"), "running");
    let took = wait_committed(cluster, new_count, started);
    cluster.wait_full(TABLE, replicas);
    took
}

fn wait_committed(cluster: &Cluster, new_count: i32, started: Instant) -> Duration {
    loop {
        let query = split(
            cluster,
            SplitRequest::Query {
                table: TABLE.into(),
            },
        )
        .expect("query");
        if value_of(&query, "split") == "none" {
            assert_eq!(
                value_of(&query, "partition_count"),
                new_count.to_string(),
                "{query:?}"
            );
            assert_eq!(cluster.describe(TABLE).len(), new_count as usize);
            return started.elapsed();
        }
        assert!(
            started.elapsed() < SPLIT_TIMEOUT,
            "the split to {new_count} did not commit within {SPLIT_TIMEOUT:?}: {query:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client(runtime: &tokio::runtime::Runtime, cluster: &Cluster) -> Client {
    runtime
        .block_on(Client::connect_meta(
            &cluster.meta_addresses(),
            ClientOptions::default(),
        ))
        .expect("connect")
}

/// Writes `WIDE_KEYS` hash keys of `WIDE_SORT_KEYS` sort keys each.
fn write_wide(runtime: &tokio::runtime::Runtime, table: &Table) -> BTreeMap<String, Vec<String>> {
    let mut wide = BTreeMap::new();
    runtime.block_on(async {
        for key in 0..WIDE_KEYS {
            let hash_key = format!("wide-{key}");
            let kvs: Vec<SortKeyValue> = (0..WIDE_SORT_KEYS)
                .map(|sort| SortKeyValue {
                    sort_key: format!("s{sort}").into_bytes(),
                    value: format!("w{key}-{sort}").into_bytes(),
                })
                .collect();
            table
                .multi_set(hash_key.as_bytes(), kvs, 0)
                .await
                .expect("multi_set");
            wide.insert(
                hash_key,
                (0..WIDE_SORT_KEYS)
                    .map(|sort| format!("w{key}-{sort}"))
                    .collect(),
            );
        }
    });
    wide
}

/// sortkey_count and multi_get of every wide hash key give what was
/// written.
fn check_wide(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
    wide: &BTreeMap<String, Vec<String>>,
) {
    runtime.block_on(async {
        for (hash_key, values) in wide {
            let count = table
                .sortkey_count(hash_key.as_bytes())
                .await
                .expect("sortkey_count");
            assert_eq!(count, values.len() as i64, "sortkey_count {hash_key}");
            let got = table
                .multi_get(MultiGetRequest::range(hash_key.as_bytes().to_vec()))
                .await
                .expect("multi_get");
            assert!(!got.incomplete, "{hash_key}");
            let got: Vec<String> = got
                .kvs
                .iter()
                .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
                .collect();
            assert_eq!(&got, values, "multi_get {hash_key}");
        }
    });
}

/// A full scan returns every record exactly once; returns them.
fn scan_once(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
) -> BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>> {
    runtime.block_on(async {
        let stream = table.full_scan(ScanOptions::default());
        futures::pin_mut!(stream);
        let mut seen = BTreeMap::new();
        while let Some(record) = stream.next().await {
            let record = record.expect("full scan");
            let key = (record.hash_key.clone(), record.sort_key.clone());
            assert!(
                seen.insert(key, record.value).is_none(),
                "full scan returned {:?}/{:?} twice",
                String::from_utf8_lossy(&record.hash_key),
                String::from_utf8_lossy(&record.sort_key)
            );
        }
        seen
    })
}

/// What the client-library load wrote: the acknowledged writes, and the
/// keys of writes that failed (their outcome unknown).
struct Written {
    acked: BTreeMap<String, String>,
    failed: BTreeSet<String>,
}

/// Stops the client-library load and checks it: every acknowledged write
/// reads back, and no write failed unless `failures_allowed` (a node was
/// killed under the load: a write in flight to it, or sent to its
/// partitions before meta moved them, fails with an unknown outcome, as in
/// any failover).
fn finish_load(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
    load: &Load,
    writers: Vec<tokio::task::JoinHandle<()>>,
    failures_allowed: bool,
) -> Written {
    load.stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for writer in writers {
            writer.await.expect("a writer");
        }
    });
    let errors = load.errors.lock().unwrap().clone();
    assert!(
        failures_allowed || errors.is_empty(),
        "{} writes failed, first: {:?}",
        errors.len(),
        errors.first()
    );
    for error in &errors {
        assert!(
            !error.contains("SPLITTING")
                && !error.contains("STALE_ROUTE")
                && !error.contains("WRONG_PARTITION"),
            "a split error reached the user: {error}"
        );
    }
    let acked = load.acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "the load made progress: {}",
        acked.len()
    );
    common::read_back(runtime, table, &acked);
    let failed = errors
        .iter()
        .filter_map(|error| error.split_once(':').map(|(key, _)| key.to_owned()))
        .collect();
    Written { acked, failed }
}

/// `markab bench` (workload A through meta), killed by pid on drop.
struct Bench {
    child: Child,
    json: std::path::PathBuf,
}

impl Bench {
    fn start(cluster: &Cluster, dir: &std::path::Path, seconds: u64) -> Bench {
        let json = dir.join("bench.jsonl");
        let child = Command::new(env!("CARGO_BIN_EXE_markab"))
            .arg("bench")
            .args(["--target", &format!("markab://{}", cluster.meta_address)])
            .args(["--table", TABLE, "--workload", "a"])
            .args(["--records", "2000", "--operations", "1000000"])
            .args(["--connections", "2", "--in-flight", "2"])
            .args(["--target-rate", "400"])
            .args(["--duration-s", &seconds.to_string()])
            .args(["--seed", "7", "--quiet"])
            .args(["--json", json.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn markab bench");
        Bench { child, json }
    }

    /// Waits (bounded) for its exit; asserts every phase ran without an
    /// error. Returns the operations of its run phase.
    fn finish(mut self, bound: Duration) -> u64 {
        let deadline = Instant::now() + bound;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "bench still runs after {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "bench exited {status}");
        let text = std::fs::read_to_string(&self.json).expect("bench wrote its json");
        let phases: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(phases.len(), 2, "load and run: {text}");
        for phase in &phases {
            assert_eq!(
                phase["overall"]["errors"],
                serde_json::json!({}),
                "bench saw errors: {phase}"
            );
        }
        phases[1]["overall"]["count"].as_u64().unwrap()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        common::kill_child(&mut self.child);
    }
}

/// `markab redis-proxy` in front of meta, and a writer through it (SET then
/// GET of its own keys), killed by pid on drop.
struct RedisWriter {
    proxy: Child,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<BTreeMap<String, String>, String>>>,
}

impl RedisWriter {
    fn start(cluster: &Cluster) -> RedisWriter {
        let mut proxy = Command::new(env!("CARGO_BIN_EXE_markab"))
            .arg("redis-proxy")
            .args(["--meta", &cluster.meta_address, "--table", TABLE])
            .args(["--listen", "127.0.0.1:0", "--timeout-ms", "10000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn markab redis-proxy");
        let mut lines = BufReader::new(proxy.stdout.take().unwrap()).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("the proxy prints its ready line")
                .unwrap();
            if let Some(rest) = line.strip_prefix("markab redis-proxy ready: ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || redis_writes(&address, &stop))
        };
        RedisWriter {
            proxy,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the writer; returns what it wrote (each SET read back by a GET
    /// at once), or its first error.
    fn finish(mut self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        let written = self
            .thread
            .take()
            .unwrap()
            .join()
            .expect("the redis writer")
            .unwrap_or_else(|error| panic!("through the redis proxy: {error}"));
        assert!(
            written.len() >= 20,
            "redis writes made progress: {}",
            written.len()
        );
        written
    }
}

impl Drop for RedisWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        common::kill_child(&mut self.proxy);
    }
}

fn redis_writes(address: &str, stop: &AtomicBool) -> Result<BTreeMap<String, String>, String> {
    let stream = TcpStream::connect(address).map_err(|error| error.to_string())?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut written = BTreeMap::new();
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) && sequence < 20_000 {
        sequence += 1;
        let key = format!("redis-{sequence}");
        let value = format!("v{sequence}");
        let reply = resp_call(&mut writer, &mut reader, &["SET", &key, &value])?;
        if reply != "+OK" {
            return Err(format!("SET {key}: {reply}"));
        }
        let reply = resp_call(&mut writer, &mut reader, &["GET", &key])?;
        if reply != value {
            return Err(format!("GET {key} after its SET: {reply}"));
        }
        written.insert(key, value);
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(written)
}

/// Sends one command; returns a simple reply as `+TEXT`/`-ERR`, a bulk
/// string as its text (`(nil)` for none).
fn resp_call(
    writer: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    arguments: &[&str],
) -> Result<String, String> {
    let mut frame = format!("*{}\r\n", arguments.len());
    for argument in arguments {
        frame.push_str(&format!("${}\r\n{argument}\r\n", argument.len()));
    }
    writer
        .write_all(frame.as_bytes())
        .map_err(|error| error.to_string())?;
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|error| format!("{arguments:?}: {error}"))?;
    let line = line.trim_end().to_owned();
    match line.as_bytes().first() {
        Some(b'$') => {
            let length: i64 = line[1..].parse().map_err(|_| line.clone())?;
            if length < 0 {
                return Ok("(nil)".into());
            }
            let mut body = vec![0u8; length as usize + 2];
            reader
                .read_exact(&mut body)
                .map_err(|error| error.to_string())?;
            body.truncate(length as usize);
            String::from_utf8(body).map_err(|error| error.to_string())
        }
        _ => Ok(line),
    }
}

// 8 → 16 → 32 under three loads at once: `markab bench` workload A, the
// client library's writers and a Redis client through the proxy. None of
// them sees an error; afterwards every acknowledged write reads back, a
// full scan returns each record once and only those, and count,
// sortkey_count and multi_get agree with what was written.
#[test]
fn split_twice_under_load_loses_nothing() {
    let _serial = serial();
    let cluster = Cluster::start(ClusterOptions::default());
    cluster.create_table(TABLE, 8, 3);
    cluster.wait_full(TABLE, 3);
    let runtime = common::runtime();
    let client = client(&runtime, &cluster);
    let table = runtime.block_on(client.open_table(TABLE)).expect("open");
    let wide = write_wide(&runtime, &table);

    let bench_dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&cluster, bench_dir.path(), 25);
    let redis = RedisWriter::start(&cluster);
    let (load, writers) = start_load(&runtime, &table, WRITERS, WRITES_MAX, "w");
    // Every load runs before the first split starts.
    wait_for("writes before the split", || {
        (load.acked.lock().unwrap().len() >= 200).then_some(())
    });
    let first = split_to(&cluster, 16, 3);
    // Reads across the switch on the table opened under 8 partitions.
    check_wide(&runtime, &table, &wide);
    let second = split_to(&cluster, 32, 3);
    std::thread::sleep(Duration::from_secs(1));

    let acked = finish_load(&runtime, &table, &load, writers, false).acked;
    let redis_written = redis.finish();
    let bench_operations = bench.finish(Duration::from_secs(90));
    assert_eq!(table.partition_count(), 32, "the client followed the route");
    check_wide(&runtime, &table, &wide);

    // A fresh client sees the same: the records the proxy wrote (sort key
    // empty), the writers' and the wide ones, each once.
    let fresh = runtime
        .block_on(client.open_table(TABLE))
        .expect("open again");
    let records = scan_once(&runtime, &fresh);
    for (hash_key, value) in &acked {
        assert_eq!(
            records.get(&(hash_key.clone().into_bytes(), b"s".to_vec())),
            Some(&value.clone().into_bytes()),
            "{hash_key} in the full scan"
        );
    }
    for (key, value) in &redis_written {
        assert_eq!(
            records.get(&(key.clone().into_bytes(), Vec::new())),
            Some(&value.clone().into_bytes()),
            "{key} (written through the proxy) in the full scan"
        );
    }
    for (hash_key, values) in &wide {
        for (sort, value) in values.iter().enumerate() {
            assert_eq!(
                records.get(&(
                    hash_key.clone().into_bytes(),
                    format!("s{sort}").into_bytes()
                )),
                Some(&value.clone().into_bytes())
            );
        }
    }
    let count = runtime
        .block_on(fresh.count(ScanOptions::default()))
        .expect("count");
    assert_eq!(count, records.len() as i64, "count agrees with the scan");
    // The bench's records are the rest: its keys only.
    let others: BTreeSet<&[u8]> = records
        .keys()
        .map(|(hash_key, _)| hash_key.as_slice())
        .filter(|hash_key| !hash_key.starts_with(b"w") && !hash_key.starts_with(b"redis-"))
        .collect();
    assert!(!others.is_empty(), "the bench's records are there");
    eprintln!(
        "split 8→16 in {first:?}, 16→32 in {second:?}; {} acknowledged writes, {} through the proxy, {bench_operations} bench operations, {} records",
        acked.len(),
        redis_written.len(),
        records.len()
    );
}

// A node SIGKILLed right after a split starts: the split commits without
// it once meta dropped it from the parents (their copies on the live
// members suffice), the children come back to three replicas when it
// returns. Then meta restarts in the middle of the next split, which
// goes on from meta's persisted record. No acknowledged write is lost.
#[test]
fn split_through_a_killed_node_and_a_meta_restart() {
    let _serial = serial();
    let mut cluster = Cluster::start(ClusterOptions::default());
    cluster.create_table(TABLE, 8, 3);
    cluster.wait_full(TABLE, 3);
    let runtime = common::runtime();
    let client = client(&runtime, &cluster);
    let table = runtime.block_on(client.open_table(TABLE)).expect("open");
    let (load, writers) = start_load(&runtime, &table, WRITERS, WRITES_MAX, "w");
    wait_for("writes before the split", || {
        (load.acked.lock().unwrap().len() >= 200).then_some(())
    });

    let started = Instant::now();
    split(
        &cluster,
        SplitRequest::Start {
            table: TABLE.into(),
            new_count: 16,
        },
    )
    .expect("the split starts");
    cluster.kill_node(2);
    wait_committed(&cluster, 16, started);
    cluster.start_node(2);
    cluster.wait_full(TABLE, 3);

    let started = Instant::now();
    split(
        &cluster,
        SplitRequest::Start {
            table: TABLE.into(),
            new_count: 32,
        },
    )
    .expect("the second split starts");
    cluster.restart_meta();
    wait_committed(&cluster, 32, started);
    cluster.wait_full(TABLE, 3);

    let written = finish_load(&runtime, &table, &load, writers, true);
    let fresh = runtime
        .block_on(client.open_table(TABLE))
        .expect("open again");
    let records = scan_once(&runtime, &fresh);
    // Every acknowledged write is there once; anything else is a write
    // whose outcome the load did not learn.
    for (hash_key, value) in &written.acked {
        assert_eq!(
            records.get(&(hash_key.clone().into_bytes(), b"s".to_vec())),
            Some(&value.clone().into_bytes()),
            "the scan holds acknowledged write {hash_key}"
        );
    }
    for (hash_key, _) in records.keys() {
        let hash_key = String::from_utf8_lossy(hash_key).into_owned();
        assert!(
            written.acked.contains_key(&hash_key) || written.failed.contains(&hash_key),
            "the scan returned {hash_key}, which nobody wrote"
        );
    }
    eprintln!(
        "through a kill and a meta restart: {} acknowledged writes, {} with an unknown outcome",
        written.acked.len(),
        written.failed.len()
    );
}

// Every bad request is refused with a clear error and changes nothing:
// a count that is not twice the current, an unknown table, a second start
// while splitting, pause/restart/cancel out of turn, and a start while a
// node is dead. A cancel before the commit leaves the table as it was.
#[test]
fn bad_split_requests_are_refused_and_change_nothing() {
    let _serial = serial();
    let mut cluster = Cluster::start(ClusterOptions::default());
    cluster.create_table(TABLE, 4, 3);
    cluster.wait_full(TABLE, 3);
    let runtime = common::runtime();
    let client = client(&runtime, &cluster);
    let table = runtime.block_on(client.open_table(TABLE)).expect("open");
    let mut written = BTreeMap::new();
    runtime.block_on(async {
        for key in 0..100 {
            let (hash_key, value) = (format!("k{key}"), format!("v{key}"));
            table
                .set(hash_key.as_bytes(), b"s", value.as_bytes(), 0)
                .await
                .unwrap();
            written.insert(hash_key, value);
        }
    });
    let start = |new_count| SplitRequest::Start {
        table: TABLE.into(),
        new_count,
    };
    split_refused(
        &cluster,
        start(6),
        ErrorCode::InvalidArgument,
        "NEW_COUNT must be 8",
    );
    split_refused(
        &cluster,
        start(4),
        ErrorCode::InvalidArgument,
        "NEW_COUNT must be 8",
    );
    split_refused(
        &cluster,
        SplitRequest::Start {
            table: "nosuch".into(),
            new_count: 8,
        },
        ErrorCode::UnknownTable,
        "nosuch",
    );
    for request in [
        SplitRequest::Pause {
            table: TABLE.into(),
        },
        SplitRequest::Restart {
            table: TABLE.into(),
        },
        SplitRequest::Cancel {
            table: TABLE.into(),
        },
    ] {
        split_refused(
            &cluster,
            request,
            ErrorCode::InvalidArgument,
            "is not splitting",
        );
    }

    // Paused at once, the split holds; a second start is refused; a
    // cancel leaves the table as it was.
    split(&cluster, start(8)).expect("a split starts");
    split(
        &cluster,
        SplitRequest::Pause {
            table: TABLE.into(),
        },
    )
    .expect("pause");
    split_refused(&cluster, start(8), ErrorCode::Busy, "splitting already");
    let cancelled = split(
        &cluster,
        SplitRequest::Cancel {
            table: TABLE.into(),
        },
    )
    .expect("cancel");
    assert_eq!(value_of(&cancelled, "split"), "cancelled");
    assert_eq!(cluster.describe(TABLE).len(), 4);
    common::read_back(&runtime, &table, &written);

    // A dead node: refused until the table is whole again.
    cluster.kill_node(1);
    let dead = cluster.node_ids[1].clone();
    wait_for("meta sees the node dead", || {
        cluster
            .list_nodes()
            .iter()
            .any(|node| node.node == dead && !node.alive)
            .then_some(())
    });
    match cluster.meta_call(&Request::PartitionSplit(start(8))) {
        Err(error) => {
            assert!(
                matches!(error.code, ErrorCode::NotEnoughReplicas),
                "{error:?}"
            );
            assert!(error.message.contains("nothing changed"), "{error:?}");
        }
        Ok(other) => panic!("a split with a dead node was accepted: {other:?}"),
    }
    let query = split(
        &cluster,
        SplitRequest::Query {
            table: TABLE.into(),
        },
    )
    .expect("query");
    assert_eq!(value_of(&query, "split"), "none");
    assert_eq!(value_of(&query, "partition_count"), "4");
    common::read_back(&runtime, &table, &written);

    // Whole again, the same table splits.
    cluster.start_node(1);
    cluster.wait_full(TABLE, 3);
    split_to(&cluster, 8, 3);
    common::read_back(&runtime, &table, &written);
    let records = scan_once(&runtime, &table);
    assert_eq!(records.len(), written.len());
}
