//! Duplication control with real processes (docs/duplication.md): two
//! clusters on 127.0.0.1 — `markab meta` and `markab replica` nodes of two
//! shards each — with distinct cluster ids. `dup add` asks the remote
//! cluster's meta for its id and the remote table's partition count; every
//! bad request is refused with a clear error and changes nothing; the
//! duplications meta records survive a restart of meta; the shell drives
//! the same commands.
//!
//! Every wait is bounded; only the processes the test started are killed,
//! by pid.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ClusterOptions};
use common::value_of;
use markab::client::{Client, ClientError, ClientOptions, Table};
use markab::wire::{
    DupMutation, DupRequest, DuplicateRequest, ErrorCode, Key, Request, ResponseBody, SplitRequest,
};
use markab_core::key::{partition_hash, partition_index, EPOCH_BEGIN_UNIX_S};
use markab_core::storage::{MemoryEngine, Partition, StorageLimits};

const TABLE: &str = "dup";

/// One pair of clusters at a time: a two-core machine runs one well.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cluster of `nodes` nodes whose meta has cluster id `cluster_id`.
fn cluster(nodes: usize, cluster_id: u8) -> Cluster {
    Cluster::start(ClusterOptions {
        nodes,
        meta_lines: format!("cluster_id = {cluster_id}\n"),
        ..ClusterOptions::default()
    })
}

fn dup(
    cluster: &Cluster,
    request: DupRequest,
) -> Result<Vec<(String, String)>, (ErrorCode, String)> {
    match cluster.meta_call(&Request::Dup(request)) {
        Ok(ResponseBody::Pairs(pairs)) => Ok(pairs),
        Ok(other) => panic!("dup answered {other:?}"),
        Err(error) => Err((error.code, error.message)),
    }
}

fn add(table: &str, remote: &Cluster, remote_table: &str) -> DupRequest {
    DupRequest::Add {
        table: table.into(),
        remote_metas: remote.meta_addresses(),
        remote_table: remote_table.into(),
    }
}

fn list(cluster: &Cluster) -> Vec<(String, String)> {
    dup(
        cluster,
        DupRequest::List {
            table: String::new(),
        },
    )
    .expect("dup list")
}

/// `request` is refused with `code` and a message that says `needle`, and
/// meta's duplications are what they were.
fn refused(cluster: &Cluster, request: DupRequest, code: ErrorCode, needle: &str) {
    let before = list(cluster);
    match dup(cluster, request.clone()) {
        Err((got, message)) => {
            assert_eq!(got, code, "{request:?}: {message}");
            assert!(
                message.contains(needle),
                "{request:?}: {message:?} does not say {needle:?}"
            );
        }
        Ok(pairs) => panic!("{request:?} was accepted: {pairs:?}"),
    }
    assert_eq!(list(cluster), before, "{request:?} changed nothing");
}

/// The status `dup list` shows for duplication `id`.
fn status_of(cluster: &Cluster, id: &str) -> String {
    let pairs = list(cluster);
    let summary = value_of(&pairs, &format!("dup {id}"));
    summary
        .split(' ')
        .find_map(|field| field.strip_prefix("status="))
        .unwrap_or_else(|| panic!("no status in {summary:?}"))
        .to_owned()
}

/// `TABLE` of `cluster`, opened through its meta.
fn open_table(runtime: &tokio::runtime::Runtime, cluster: &Cluster) -> Table {
    let client = runtime
        .block_on(Client::connect_meta(
            &cluster.meta_addresses(),
            ClientOptions::default(),
        ))
        .expect("connect");
    runtime.block_on(client.open_table(TABLE)).expect("open")
}

/// The value of `hash_key`/`s` in `table`.
fn read(runtime: &tokio::runtime::Runtime, table: &Table, hash_key: &str) -> Option<String> {
    runtime
        .block_on(table.get(hash_key.as_bytes(), b"s"))
        .expect("get")
        .map(|value| String::from_utf8(value).unwrap())
}

/// The partition of `hash_key`/`s` among `count`.
fn partition_of(hash_key: &str, count: u32) -> u32 {
    partition_index(partition_hash(hash_key.as_bytes(), b"s"), count)
}

/// Waits (bounded) until the primary of each of `partitions` partitions
/// of `cluster`'s duplications reported: shipping runs.
fn wait_reporting(cluster: &Cluster, partitions: i32) {
    common::cluster::wait_for("every partition reports", || {
        let rows = partition_rows(cluster);
        (rows.len() == partitions as usize && rows.iter().all(|row| row.contains_key("committed")))
            .then_some(())
    });
}

/// Runs `markab shell --meta META -e LINE`; returns its exit success and
/// its output.
fn shell(cluster: &Cluster, line: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_markab"))
        .arg("shell")
        .args(["--meta", &cluster.meta_addresses().join(",")])
        .args(["-e", line])
        .output()
        .expect("run the shell");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

// Every bad dup request is refused with a clear error and changes
// nothing: an unknown local table, a remote table that does not exist or
// has another partition count, a remote cluster that does not answer, a
// table duplicated to its own cluster, bad ids and actions out of turn.
#[test]
fn bad_dup_requests_are_refused_and_change_nothing() {
    let _serial = serial();
    let local = cluster(3, 1);
    let remote = cluster(1, 2);
    local.create_table(TABLE, 4, 3);
    remote.create_table(TABLE, 4, 1);
    remote.create_table("eight", 8, 1);
    local.wait_full(TABLE, 3);

    refused(
        &local,
        add("nosuch", &remote, TABLE),
        ErrorCode::UnknownTable,
        "nosuch",
    );
    refused(
        &local,
        add(TABLE, &remote, "missing"),
        ErrorCode::UnknownTable,
        "has no table \"missing\"",
    );
    refused(
        &local,
        add(TABLE, &remote, "eight"),
        ErrorCode::InvalidArgument,
        "partition",
    );
    refused(
        &local,
        add(TABLE, &local, TABLE),
        ErrorCode::InvalidArgument,
        "cluster",
    );
    // Nothing listens there: refused within the bound on asking it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    refused(
        &local,
        DupRequest::Add {
            table: TABLE.into(),
            remote_metas: vec![format!("127.0.0.1:{port}")],
            remote_table: String::new(),
        },
        ErrorCode::InvalidArgument,
        "did not answer",
    );
    assert!(
        started.elapsed() < markab::meta::server::REMOTE_META_TIMEOUT * 3 + Duration::from_secs(5),
        "an unreachable remote is refused within the bound: {:?}",
        started.elapsed()
    );
    refused(
        &local,
        DupRequest::Add {
            table: TABLE.into(),
            remote_metas: Vec::new(),
            remote_table: String::new(),
        },
        ErrorCode::InvalidArgument,
        "remote meta addresses",
    );
    for request in [
        DupRequest::Pause { id: 42 },
        DupRequest::Start { id: 42 },
        DupRequest::Remove { id: 42 },
    ] {
        refused(&local, request, ErrorCode::NotFound, "no duplication 42");
    }
    assert!(list(&local).is_empty(), "no duplication was added");

    // Through the shell: a clear message and a failing exit status.
    let (ok, text) = shell(&local, "dup add nosuch 127.0.0.1:1");
    assert!(!ok, "{text}");
    assert!(text.contains("nosuch") || text.contains("answer"), "{text}");
    let (ok, text) = shell(&local, "dup pause x");
    assert!(!ok && text.contains("ID must be a number"), "{text}");
}

// A duplication is added, listed, paused, resumed and removed; a second
// one of the same table to the same remote table is refused; a duplicated
// table does not split; meta keeps the duplication and its status across
// a restart.
#[test]
fn duplications_are_managed_and_survive_a_meta_restart() {
    let _serial = serial();
    let mut local = cluster(3, 1);
    let remote = cluster(1, 2);
    local.create_table(TABLE, 4, 3);
    remote.create_table(TABLE, 4, 1);
    local.wait_full(TABLE, 3);

    let (ok, text) = shell(
        &local,
        &format!("dup add {TABLE} {}", remote.meta_addresses().join(",")),
    );
    assert!(ok, "{text}");
    assert!(text.contains("dup_id"), "{text}");
    let pairs = list(&local);
    let (key, summary) = pairs
        .iter()
        .find(|(key, _)| key.starts_with("dup ") && !key.contains("partition"))
        .cloned()
        .unwrap_or_else(|| panic!("dup list shows the duplication: {pairs:?}"));
    let id = key.trim_start_matches("dup ").to_owned();
    assert!(summary.contains("remote_cluster_id=2"), "{summary}");
    assert!(
        summary.contains(&format!("remote_table={TABLE}")),
        "{summary}"
    );
    assert_eq!(status_of(&local, &id), "running");
    let id_number: u64 = id.parse().expect("a numeric id");

    refused(
        &local,
        add(TABLE, &remote, TABLE),
        ErrorCode::InvalidArgument,
        "already",
    );
    match local.meta_call(&Request::PartitionSplit(SplitRequest::Start {
        table: TABLE.into(),
        new_count: 8,
    })) {
        Err(error) => assert_eq!(error.code, ErrorCode::Busy, "{}", error.message),
        Ok(other) => panic!("a duplicated table split: {other:?}"),
    }

    dup(&local, DupRequest::Pause { id: id_number }).expect("pause");
    assert_eq!(status_of(&local, &id), "paused");
    refused(
        &local,
        DupRequest::Pause { id: id_number },
        ErrorCode::InvalidArgument,
        "paused",
    );
    local.restart_meta();
    assert_eq!(status_of(&local, &id), "paused", "the status survives");
    let (ok, text) = shell(&local, &format!("dup start {id}"));
    assert!(ok, "{text}");
    assert_eq!(status_of(&local, &id), "running");
    local.restart_meta();
    assert_eq!(status_of(&local, &id), "running");

    let (ok, text) = shell(&local, &format!("dup remove {id}"));
    assert!(ok && text.contains("removed"), "{text}");
    assert!(list(&local).is_empty());
    refused(
        &local,
        DupRequest::Remove { id: id_number },
        ErrorCode::NotFound,
        "no duplication",
    );
}

/// A source cluster's partition, in memory, tagging its writes with
/// `cluster_id`: what a shipping primary reads from its log.
struct Source {
    partition: Partition<MemoryEngine>,
    cluster_id: u8,
    decree: i64,
}

impl Source {
    fn new(cluster_id: u8) -> Source {
        let partition = Partition::new(MemoryEngine::new(), StorageLimits::default());
        partition.set_timetags(Some(cluster_id));
        Source {
            partition,
            cluster_id,
            decree: 0,
        }
    }

    /// Sets `hash_key`/`s` to `value` at `unix_us`; the mutation to ship.
    fn set(&mut self, hash_key: &str, value: &str, unix_us: u64) -> DupMutation {
        let request = Request::Set {
            key: Key::new(hash_key, "s"),
            value: value.as_bytes().to_vec(),
            ttl_seconds: 0,
        };
        let epoch_s = (unix_us / 1_000_000 - EPOCH_BEGIN_UNIX_S) as u32;
        let (batch, _) = self
            .partition
            .prepare_tagged_write(&request, epoch_s, unix_us)
            .expect("prepare");
        self.partition.apply(&batch).expect("apply");
        self.decree += 1;
        DupMutation {
            decree: self.decree,
            payload: batch.encode(),
        }
    }

    fn request(&self, mutations: Vec<DupMutation>) -> DuplicateRequest {
        DuplicateRequest {
            source_cluster_id: self.cluster_id,
            dup_id: 1,
            mutations,
        }
    }
}

fn now_unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

// Mutations shipped from another cluster apply on a real three-replica
// cluster as ordinary writes, partition p to partition p: every record
// reads back; the same batch shipped again changes nothing; an older
// write of a key loses to the newer one it holds and a newer one wins
// (**dup-last-write-wins**); a batch sent to a partition that does not
// own its keys is refused.
#[test]
fn shipped_mutations_apply_by_last_write_wins() {
    let _serial = serial();
    const PARTITIONS: u32 = 4;
    const KEYS: usize = 40;
    let remote = cluster(3, 2);
    remote.create_table(TABLE, PARTITIONS as i32, 3);
    remote.wait_full(TABLE, 3);
    let runtime = common::runtime();
    let table = open_table(&runtime, &remote);
    let partition_of = |hash_key: &str| partition_of(hash_key, PARTITIONS);
    let get = |hash_key: &str| read(&runtime, &table, hash_key);

    let mut source = Source::new(1);
    let now = now_unix_us();
    let mut by_partition: Vec<Vec<DupMutation>> = vec![Vec::new(); PARTITIONS as usize];
    for key in 0..KEYS {
        let hash_key = format!("k{key}");
        let mutation = source.set(&hash_key, &format!("v{key}"), now);
        by_partition[partition_of(&hash_key) as usize].push(mutation);
    }
    let mut applied = 0;
    for (index, mutations) in by_partition.iter().enumerate() {
        applied += runtime
            .block_on(table.duplicate(index as u32, source.request(mutations.clone())))
            .expect("duplicate");
    }
    assert!(applied >= KEYS as i64, "{applied} records applied");
    for key in 0..KEYS {
        assert_eq!(get(&format!("k{key}")), Some(format!("v{key}")));
    }
    // Shipped again (a new primary resuming from an older confirmed
    // decree): nothing changes.
    for (index, mutations) in by_partition.iter().enumerate() {
        runtime
            .block_on(table.duplicate(index as u32, source.request(mutations.clone())))
            .expect("duplicate again");
    }
    for key in 0..KEYS {
        assert_eq!(get(&format!("k{key}")), Some(format!("v{key}")));
    }

    // Another cluster's older write of k0 loses; a newer one of k1 wins.
    let mut other = Source::new(3);
    let older = other.set("k0", "older", now - 10_000_000);
    let newer = other.set("k1", "newer", now + 1_000_000);
    for (hash_key, mutation) in [("k0", older), ("k1", newer)] {
        runtime
            .block_on(table.duplicate(partition_of(hash_key), other.request(vec![mutation])))
            .expect("duplicate");
    }
    assert_eq!(get("k0"), Some("v0".into()), "the older write lost");
    assert_eq!(get("k1"), Some("newer".into()), "the newer write won");

    // A key shipped to a partition that does not own it.
    let stray = source.set("k2", "stray", now + 2_000_000);
    let wrong = (partition_of("k2") + 1) % PARTITIONS;
    match runtime.block_on(table.duplicate(wrong, source.request(vec![stray]))) {
        Err(ClientError::Server(error)) => {
            assert_eq!(error.code, ErrorCode::WrongPartition, "{}", error.message)
        }
        other => panic!("a stray key was accepted: {other:?}"),
    }
    assert_eq!(get("k2"), Some("v2".into()), "nothing of it applied");
    match runtime.block_on(table.duplicate(PARTITIONS, source.request(Vec::new()))) {
        Err(ClientError::Server(error)) => assert_eq!(error.code, ErrorCode::InvalidArgument),
        other => panic!("partition {PARTITIONS} of {PARTITIONS}: {other:?}"),
    }
}

// Once a table is duplicated, its local writes carry timetags of this
// cluster's clock (**local-write-newest**): a write shipped from another
// cluster that is older than a local write loses to it, one that is
// newer wins. Before the nodes tagged their writes, a local write held
// no timetag and any shipped write replaced it.
#[test]
fn local_writes_of_a_duplicated_table_are_tagged() {
    let _serial = serial();
    const PARTITIONS: u32 = 4;
    let local = cluster(3, 1);
    let remote = cluster(1, 2);
    local.create_table(TABLE, PARTITIONS as i32, 3);
    remote.create_table(TABLE, PARTITIONS as i32, 1);
    local.wait_full(TABLE, 3);
    dup(&local, add(TABLE, &remote, TABLE)).expect("dup add");
    let runtime = common::runtime();
    let table = open_table(&runtime, &local);
    let partition_of = |hash_key: &str| partition_of(hash_key, PARTITIONS);
    let get = |hash_key: &str| read(&runtime, &table, hash_key);
    // Writes of another cluster, made a second before each local write
    // and shipped after it.
    let mut other = Source::new(3);
    let mut write_then_ship_older = |hash_key: &str| {
        let before = now_unix_us() - 1_000_000;
        runtime
            .block_on(table.set(hash_key.as_bytes(), b"s", b"local", 0))
            .expect("set");
        let older = other.set(hash_key, "shipped", before);
        runtime
            .block_on(table.duplicate(partition_of(hash_key), other.request(vec![older])))
            .expect("duplicate");
    };
    // The orders reach every member with its next beacons: once a key of
    // every partition kept its local value, every key written from then
    // on keeps it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut tagged = std::collections::BTreeSet::new();
    let mut probe = 0;
    while tagged.len() < PARTITIONS as usize {
        let hash_key = format!("probe-{probe}");
        write_then_ship_older(&hash_key);
        if get(&hash_key).as_deref() == Some("local") {
            tagged.insert(partition_of(&hash_key));
        }
        assert!(
            Instant::now() < deadline,
            "local writes were never tagged on partitions other than {tagged:?}: an older shipped write still replaces them"
        );
        probe += 1;
    }
    for key in 0..40 {
        let hash_key = format!("k{key}");
        write_then_ship_older(&hash_key);
        assert_eq!(get(&hash_key).as_deref(), Some("local"), "{hash_key}");
    }
    // A newer shipped write still wins over a local one.
    let newer = other.set("k0", "newer", now_unix_us() + 1_000_000);
    runtime
        .block_on(table.duplicate(partition_of("k0"), other.request(vec![newer])))
        .expect("duplicate");
    assert_eq!(get("k0").as_deref(), Some("newer"));
}

/// Every `dup {id} partition {i}` row of `dup list`, as key=value fields.
fn partition_rows(cluster: &Cluster) -> Vec<BTreeMap<String, String>> {
    list(cluster)
        .into_iter()
        .filter(|(key, _)| key.contains(" partition "))
        .map(|(_, text)| {
            text.split(' ')
                .filter_map(|field| field.split_once('='))
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect()
        })
        .collect()
}

/// Waits (bounded) until every acknowledged write of `acked` reads back
/// from `table`.
fn wait_all_arrive(
    runtime: &tokio::runtime::Runtime,
    table: &markab::client::Table,
    acked: &BTreeMap<String, String>,
    bound: Duration,
    context: &dyn Fn() -> String,
) -> Duration {
    let started = Instant::now();
    let mut missing: Vec<&String> = acked.keys().collect();
    while !missing.is_empty() {
        missing.retain(|hash_key| {
            let got = runtime
                .block_on(table.get(hash_key.as_bytes(), b"s"))
                .ok()
                .flatten();
            got.as_deref() != Some(acked[*hash_key].as_bytes())
        });
        assert!(
            started.elapsed() < bound,
            "{} acknowledged writes never reached the remote cluster within {bound:?}, first {:?}; {}",
            missing.len(),
            missing.first(),
            context()
        );
        if !missing.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    started.elapsed()
}

// One-way duplication under a write load: every write acknowledged by
// cluster A appears in cluster B, and once the writes stop `dup list`
// shows every partition confirmed up to its committed decree (lag zero),
// with what was shipped.
#[test]
fn one_way_duplication_ships_every_acknowledged_write() {
    let _serial = serial();
    const PARTITIONS: i32 = 4;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let pair = Pair::start(ClusterOptions {
        meta_lines: format!("metrics_listen = {metrics_address:?}\n"),
        ..ClusterOptions::default()
    });
    let (local, runtime, source, target) = (&pair.local, &pair.runtime, &pair.source, &pair.target);
    let id = pair.id;
    let (load, writers) = common::load::start_load(runtime, source, 3, 3_000, "w");
    std::thread::sleep(Duration::from_secs(3));
    load.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runtime.block_on(async {
        for writer in writers {
            writer.await.expect("a writer");
        }
    });
    let errors = load.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "local writes failed: {errors:?}");
    let acked = load.acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "the load made progress: {}",
        acked.len()
    );
    let took = wait_all_arrive(runtime, target, &acked, Duration::from_secs(60), &|| {
        format!("{:?}", list(local))
    });
    // The lag drops to zero once the writes stopped.
    let rows = common::cluster::wait_for("the lag drops to zero", || {
        let rows = partition_rows(local);
        rows.iter()
            .all(|row| {
                row.get("lag_decrees").map(String::as_str) == Some("0")
                    && row.get("lag_ms").map(String::as_str) == Some("0")
            })
            .then_some(rows)
    });
    let shipped: u64 = rows
        .iter()
        .map(|row| row["shipped_records"].parse::<u64>().unwrap())
        .sum();
    assert!(
        shipped >= acked.len() as u64,
        "{shipped} records shipped for {} writes",
        acked.len()
    );
    // Meta's /metrics shows the same (refreshed once a second).
    common::cluster::wait_for("meta's metrics show the shipping", || {
        let text = common::scrape(&metrics_address);
        let sum = |metric: &str| -> f64 {
            (0..PARTITIONS)
                .map(|partition| {
                    common::sample(
                        &text,
                        &format!(
                            "markab_meta_{metric}{{dup_id=\"{id}\",partition=\"{partition}\",table=\"{TABLE}\"}}"
                        ),
                    )
                })
                .sum()
        };
        let (shipped_metric, lag) = (sum("dup_shipped_records"), sum("dup_lag_decrees"));
        (shipped_metric >= acked.len() as f64
            && lag == 0.0
            && common::sample(&text, "markab_meta_dups{status=\"running\"}") == 1.0)
            .then_some(())
    });
    eprintln!(
        "one-way: {} acknowledged writes, all in the remote {took:?} after the load stopped; {shipped} records shipped",
        acked.len()
    );
}

/// A duplicated pair: A (3 nodes, cluster id 1) duplicating `TABLE` to B
/// (`remote_nodes` nodes, cluster id 2), every partition reporting; with
/// A's and B's table handles and the duplication's id.
struct Pair {
    local: Cluster,
    remote: Cluster,
    runtime: tokio::runtime::Runtime,
    source: markab::client::Table,
    target: markab::client::Table,
    id: u64,
}

impl Pair {
    fn start(options: ClusterOptions) -> Pair {
        const PARTITIONS: i32 = 4;
        let local = Cluster::start(ClusterOptions {
            meta_lines: format!("cluster_id = 1\n{}", options.meta_lines),
            ..options
        });
        let remote = cluster(1, 2);
        local.create_table(TABLE, PARTITIONS, 3);
        remote.create_table(TABLE, PARTITIONS, 1);
        local.wait_full(TABLE, 3);
        remote.wait_full(TABLE, 1);
        let added = dup(&local, add(TABLE, &remote, TABLE)).expect("dup add");
        let id = value_of(&added, "dup_id").parse().unwrap();
        wait_reporting(&local, PARTITIONS);
        let runtime = common::runtime();
        let (source, target) = (open_table(&runtime, &local), open_table(&runtime, &remote));
        Pair {
            local,
            remote,
            runtime,
            source,
            target,
            id,
        }
    }

    /// Writes `count` keys `<prefix>N` to A one at a time; the acknowledged
    /// ones.
    fn write(&self, prefix: &str, count: usize) -> BTreeMap<String, String> {
        let mut acked = BTreeMap::new();
        self.runtime.block_on(async {
            for n in 0..count {
                let (hash_key, value) = (format!("{prefix}{n}"), format!("value-{n}"));
                if self
                    .source
                    .set(hash_key.as_bytes(), b"s", value.as_bytes(), 0)
                    .await
                    .is_ok()
                {
                    acked.insert(hash_key, value);
                }
            }
        });
        acked
    }
}

// A duplication under a write load survives the SIGKILL of a node of A
// that holds primaries (their new primaries resume from the confirmed
// decree) and a stop of cluster B's node for thirty seconds (A keeps
// accepting writes, then catches up): every write A acknowledged reaches
// B.
#[test]
fn duplication_survives_a_killed_primary_and_a_stopped_remote() {
    let _serial = serial();
    let mut pair = Pair::start(ClusterOptions::default());
    let (load, writers) = common::load::start_load(&pair.runtime, &pair.source, 3, 60_000, "w");
    std::thread::sleep(Duration::from_secs(2));
    pair.local.kill_node(0);
    std::thread::sleep(Duration::from_secs(4));
    pair.remote.stop_node(0);
    let stopped = load.acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(30));
    let during = load.acked.lock().unwrap().len() - stopped;
    assert!(
        during >= 50,
        "A kept accepting writes while B was stopped: {during} ({} acknowledged, errors {:?})",
        load.acked.lock().unwrap().len(),
        load.errors.lock().unwrap().last()
    );
    pair.remote.start_node(0);
    pair.remote.wait_full(TABLE, 1);
    std::thread::sleep(Duration::from_secs(1));
    load.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pair.runtime.block_on(async {
        for writer in writers {
            writer.await.expect("a writer");
        }
    });
    let acked = load.acked.lock().unwrap().clone();
    let took = wait_all_arrive(
        &pair.runtime,
        &pair.target,
        &acked,
        Duration::from_secs(90),
        &|| format!("{:?}", list(&pair.local)),
    );
    eprintln!(
        "faults: {} acknowledged writes ({during} while B was stopped, {} failed at the kill), all in B {took:?} after the load stopped",
        acked.len(),
        load.errors.lock().unwrap().len()
    );
    pair.local.start_node(0);
}

// Pause stops shipping (writes made meanwhile stay away from B), start
// resumes it from the confirmed decree (they arrive), and remove ends it
// (later writes never arrive).
#[test]
fn pause_start_and_remove_while_shipping() {
    let _serial = serial();
    let pair = Pair::start(ClusterOptions::default());
    let before = pair.write("before-", 50);
    wait_all_arrive(
        &pair.runtime,
        &pair.target,
        &before,
        Duration::from_secs(30),
        &|| format!("{:?}", list(&pair.local)),
    );
    dup(&pair.local, DupRequest::Pause { id: pair.id }).expect("pause");
    // The orders reach the primaries with their next beacons.
    std::thread::sleep(Duration::from_secs(1));
    let paused = pair.write("paused-", 50);
    std::thread::sleep(Duration::from_secs(2));
    let arrived = paused
        .keys()
        .filter(|hash_key| {
            pair.runtime
                .block_on(pair.target.get(hash_key.as_bytes(), b"s"))
                .unwrap()
                .is_some()
        })
        .count();
    assert_eq!(arrived, 0, "writes made while paused were shipped");
    dup(&pair.local, DupRequest::Start { id: pair.id }).expect("start");
    wait_all_arrive(
        &pair.runtime,
        &pair.target,
        &paused,
        Duration::from_secs(30),
        &|| format!("{:?}", list(&pair.local)),
    );
    dup(&pair.local, DupRequest::Remove { id: pair.id }).expect("remove");
    std::thread::sleep(Duration::from_secs(1));
    let after = pair.write("after-", 50);
    std::thread::sleep(Duration::from_secs(2));
    for hash_key in after.keys() {
        assert_eq!(
            pair.runtime
                .block_on(pair.target.get(hash_key.as_bytes(), b"s"))
                .unwrap(),
            None,
            "{hash_key} was shipped after the duplication was removed"
        );
    }
}

// With B stopped and a small retention bound, A's log does not grow past
// the bound for the duplication's sake: the duplication is marked failed
// with a message that says how to recover.
#[test]
fn retention_bound_fails_the_duplication_instead_of_filling_the_disk() {
    let _serial = serial();
    const BOUND: u64 = 4 * 1024 * 1024;
    let mut pair = Pair::start(ClusterOptions {
        tuning: format!(
            "log_segment_bytes = 1048576\nlog_bytes_max = {BOUND}\ndup_log_retain_bytes_max = {BOUND}\n"
        ),
        ..ClusterOptions::default()
    });
    pair.remote.stop_node(0);
    let value = vec![b'x'; 8 * 1024];
    let status = |pair: &Pair| status_of(&pair.local, &pair.id.to_string());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0u64;
    while status(&pair) != "failed" {
        pair.runtime.block_on(async {
            for _ in 0..200 {
                n += 1;
                let _ = pair
                    .source
                    .set(format!("big-{n}").as_bytes(), b"s", &value, 0)
                    .await;
            }
        });
        assert!(
            Instant::now() < deadline,
            "the duplication never failed; {n} writes of 8 KiB made"
        );
    }
    let pairs = list(&pair.local);
    let summary = value_of(&pairs, &format!("dup {}", pair.id));
    assert!(
        summary.contains("dup_log_retain_bytes_max") && summary.contains("restore"),
        "{summary}"
    );
    // Failed, it pins nothing: the logs go back under their bound.
    common::cluster::wait_for("the logs shrink below twice the bound", || {
        let total: u64 = (0..3)
            .map(|node| dir_bytes(&pair.local.node_data_dir(node).join("log")))
            .max()
            .unwrap();
        (total < 3 * BOUND * 2).then_some(())
    });
    pair.remote.start_node(0);
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

// Master-master: A duplicates to B and B to A; both take conflicting
// writes to the same keys at once. Once both are idle, every key holds
// the same value in both clusters (last-write-wins on timetags, ties to
// the larger cluster id), one of the values written, and nothing loops:
// each cluster ships only its own writes.
#[test]
fn two_clusters_duplicating_to_each_other_converge() {
    let _serial = serial();
    const PARTITIONS: i32 = 4;
    const KEYS: usize = 60;
    const ROUNDS: usize = 8;
    let a = cluster(3, 1);
    let b = cluster(1, 2);
    a.create_table(TABLE, PARTITIONS, 3);
    b.create_table(TABLE, PARTITIONS, 1);
    a.wait_full(TABLE, 3);
    b.wait_full(TABLE, 1);
    dup(&a, add(TABLE, &b, TABLE)).expect("dup add A -> B");
    dup(&b, add(TABLE, &a, TABLE)).expect("dup add B -> A");
    for cluster in [&a, &b] {
        wait_reporting(cluster, PARTITIONS);
    }
    let runtime = common::runtime();
    let (table_a, table_b) = (open_table(&runtime, &a), open_table(&runtime, &b));
    // Both clusters write every key in every round, at once.
    runtime.block_on(async {
        for round in 0..ROUNDS {
            let writes = (0..KEYS).flat_map(|key| {
                [("A", &table_a), ("B", &table_b)].map(|(side, table)| async move {
                    let hash_key = format!("k{key}");
                    table
                        .set(
                            hash_key.as_bytes(),
                            b"s",
                            format!("{side}-{round}").as_bytes(),
                            0,
                        )
                        .await
                        .expect("set")
                })
            });
            futures::future::join_all(writes).await;
        }
    });
    // Converged: both lags at zero and every key equal on both sides.
    let read_all = |table: &markab::client::Table| -> Vec<Option<String>> {
        (0..KEYS)
            .map(|key| {
                runtime
                    .block_on(table.get(format!("k{key}").as_bytes(), b"s"))
                    .expect("get")
                    .map(|value| String::from_utf8(value).unwrap())
            })
            .collect()
    };
    let values = common::cluster::wait_for("both clusters converge", || {
        let idle = [&a, &b].iter().all(|cluster| {
            partition_rows(cluster)
                .iter()
                .all(|row| row.get("lag_decrees").map(String::as_str) == Some("0"))
        });
        let (in_a, in_b) = (read_all(&table_a), read_all(&table_b));
        (idle && in_a == in_b).then_some(in_a)
    });
    let last_round = format!("-{}", ROUNDS - 1);
    for (key, value) in values.iter().enumerate() {
        let value = value.as_deref().unwrap_or_else(|| panic!("k{key} is gone"));
        assert!(
            value == format!("A{last_round}") || value == format!("B{last_round}"),
            "k{key} holds {value:?}, not a write of the last round"
        );
    }
    let from_a = values
        .iter()
        .filter(|value| value.as_deref().is_some_and(|v| v.starts_with('A')))
        .count();
    eprintln!(
        "master-master: {KEYS} keys converged, {from_a} to A's write and {} to B's",
        KEYS - from_a
    );
}
