//! Meta high availability on etcd, with real processes: a real etcd
//! (Debian's etcd-server 3.4), three `markab meta` with `store = "etcd"`
//! and three nodes of two shards each (docs/meta.md, "High availability").
//!
//! Also the store suite that the file store and the etcd store both pass.
//! Every process is started by the test and killed by its pid.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{wait_for, write_node_config, write_tuning, Meta, BEACON_INTERVAL_MS};
use common::{etcd_healthy, kill_child, runtime, signal, value_of, Node};
use markab::client::{Client, ClientOptions};
use markab::meta::etcd::{EtcdConfig, EtcdLink, EtcdMetaStore};
use markab::meta::state::{MetaData, StoredTable};
use markab::meta::store::{FileMetaStore, MetaStore, MetaStoreError};
use markab::wire::{CreateTableRequest, ErrorCode, Request, ResponseBody};

/// The session TTL of the test metas (etcd runs with a 500 ms election
/// timeout, so its minimum TTL is 1 s).
const SESSION_TTL_S: u64 = 1;
/// Bound on the leader change the tests assert: the session TTL, the
/// campaign's poll, a term's load, and slack for a loaded 2-core machine.
const LEADER_CHANGE_BOUND: Duration = Duration::from_secs(6);

fn etcd_binary() -> PathBuf {
    let path = PathBuf::from("/usr/bin/etcd");
    assert!(
        path.is_file(),
        "etcd is missing: scripts/setup.sh installs Debian's etcd-server"
    );
    path
}

/// A one-member etcd on loopback, killed by its pid on drop.
struct Etcd {
    child: Option<Child>,
    client: String,
    peer: String,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Etcd {
    /// Picks etcd's ports; [`Etcd::spawn`] starts it once the picker has
    /// released them.
    fn plan(dir: &Path, picker: &mut markab::onebox::PortPicker) -> Etcd {
        let port = picker.pick(2).expect("free ports for etcd");
        Etcd {
            child: None,
            client: format!("127.0.0.1:{port}"),
            peer: format!("127.0.0.1:{}", port + 1),
            data_dir: dir.join("etcd"),
            log: dir.join("etcd.log"),
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(etcd_binary())
            .args(["--name", "test", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .arg("--listen-client-urls")
            .arg(format!("http://{}", self.client))
            .arg("--advertise-client-urls")
            .arg(format!("http://{}", self.client))
            .arg("--listen-peer-urls")
            .arg(format!("http://{}", self.peer))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", self.peer))
            .arg("--initial-cluster")
            .arg(format!("test=http://{}", self.peer))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        // Healthy by its own account, not merely accepting connections: a
        // listening socket comes before etcd is ready, and an etcd that
        // exits during its start would otherwise show up later as a meta
        // that cannot reach it.
        wait_for("etcd to serve", || {
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok()?) {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("etcd exited during its start ({status}); its log:\n{log}");
            }
            etcd_healthy(&self.client).then_some(())
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.client.clone()],
            prefix: prefix.to_owned(),
            session_ttl_s: SESSION_TTL_S,
            timeout_ms: 1_000,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// etcd, three metas on it and three nodes of two shards.
struct Group {
    metas: Vec<Option<Meta>>,
    meta_configs: Vec<PathBuf>,
    meta_addresses: Vec<String>,
    nodes: Vec<Option<Node>>,
    node_ids: Vec<String>,
    etcd: Etcd,
    _dir: tempfile::TempDir,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.nodes.clear();
        for meta in &mut self.metas {
            if let Some(meta) = meta.take() {
                meta.kill();
            }
        }
        self.etcd.kill();
    }
}

fn meta_config_text(address: &str, etcd: &str, prefix: &str, cluster_id: u8) -> String {
    format!(
        "[meta]\nlisten = {address:?}\nstore = \"etcd\"\netcd_endpoints = [{etcd:?}]\n\
         etcd_prefix = {prefix:?}\netcd_session_ttl_s = {SESSION_TTL_S}\ncluster_id = {cluster_id}\n\
         beacon_interval_ms = {BEACON_INTERVAL_MS}\nlease_ms = 600\ngrace_ms = 1000\n"
    )
}

impl Group {
    fn start(nodes: usize) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let mut picker = markab::onebox::PortPicker::new();
        let mut etcd = Etcd::plan(dir.path(), &mut picker);
        let mut meta_addresses = Vec::new();
        let mut meta_configs = Vec::new();
        for index in 0..3 {
            let address = format!("127.0.0.1:{}", picker.pick(1).unwrap());
            let path = dir.path().join(format!("meta-{index}.toml"));
            std::fs::write(
                &path,
                meta_config_text(&address, &etcd.client, "/markab/test", 1),
            )
            .unwrap();
            meta_addresses.push(address);
            meta_configs.push(path);
        }
        let mut node_configs = Vec::new();
        let mut node_ids = Vec::new();
        for index in 0..nodes {
            let port_base = picker.pick(2).unwrap();
            let (path, id) =
                write_node_config(dir.path(), index, port_base, 2, &meta_addresses, "");
            node_configs.push(path);
            node_ids.push(id);
        }
        write_tuning(dir.path(), "");
        drop(picker);
        etcd.spawn();
        let metas = meta_configs
            .iter()
            .map(|path| Some(Meta::start(path)))
            .collect();
        let nodes = node_configs
            .iter()
            .enumerate()
            .map(|(index, path)| {
                let log = dir.path().join(format!("node-{index}.log"));
                Some(Node::start_logged_with(path, Some(&log), &[]))
            })
            .collect();
        let group = Group {
            metas,
            meta_configs,
            meta_addresses,
            nodes,
            node_ids,
            etcd,
            _dir: dir,
        };
        group.wait_leader(None);
        wait_for("every node alive at the leader", || {
            let nodes = group.list_nodes()?;
            group
                .node_ids
                .iter()
                .all(|id| nodes.iter().any(|node| &node.node == id && node.alive))
                .then_some(())
        });
        group
    }

    /// `cluster_info` of meta `index`, raw: the leader answers it, a
    /// follower answers NOT_LEADER naming the leader.
    fn cluster_info(&self, index: usize) -> Option<Vec<(String, String)>> {
        match self.ask(index, &Request::ClusterInfo)? {
            Ok(ResponseBody::Pairs(pairs)) => Some(pairs),
            _ => None,
        }
    }

    /// The leader a follower names (`None`: it answered otherwise).
    fn named_leader(&self, index: usize) -> Option<String> {
        match self.ask(index, &Request::ClusterInfo)? {
            Err(error) if error.code == ErrorCode::NotLeader => Some(error.message),
            _ => None,
        }
    }

    fn ask(&self, index: usize, request: &Request) -> Option<markab::wire::Response> {
        let mut connection =
            common::cluster::RawConnection::connect(&self.meta_addresses[index]).ok()?;
        connection.call(Default::default(), request).ok()
    }

    /// Waits until one running meta (other than `not`) says it leads;
    /// returns its index.
    fn wait_leader(&self, not: Option<usize>) -> usize {
        wait_for("a meta leader", || {
            (0..self.metas.len())
                .filter(|index| Some(*index) != not && self.metas[*index].is_some())
                .find(|index| {
                    self.cluster_info(*index)
                        .is_some_and(|pairs| value_of(&pairs, "meta_role") == "leader")
                })
        })
    }

    fn list_nodes(&self) -> Option<Vec<markab::wire::NodeInfo>> {
        let runtime = runtime();
        runtime.block_on(async {
            let client = Client::connect_meta(&self.meta_addresses, options())
                .await
                .ok()?;
            client.list_nodes().await.ok()
        })
    }

    /// A client of the group, through every meta.
    fn client(&self, runtime: &tokio::runtime::Runtime) -> Client {
        runtime
            .block_on(Client::connect_meta(&self.meta_addresses, options()))
            .unwrap()
    }

    fn meta_pid(&self, index: usize) -> u32 {
        self.metas[index].as_ref().unwrap().child.id()
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        meta_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

fn create(name: &str, partitions: i32) -> CreateTableRequest {
    CreateTableRequest {
        table: name.into(),
        partition_count: partitions,
        replica_count: 3,
        envs: Vec::new(),
        success_if_exist: false,
    }
}

/// What a concurrent load of reads and writes saw.
#[derive(Default)]
struct Traffic {
    /// Times of successful operations since the load started, in ms.
    successes: Mutex<Vec<u64>>,
    errors: Mutex<Vec<String>>,
    acked: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Traffic {
    /// The longest gap between successes within `[from_ms, to_ms]`.
    fn longest_gap_ms(&self, from_ms: u64, to_ms: u64) -> u64 {
        let mut times: Vec<u64> = self.successes.lock().unwrap().clone();
        times.sort_unstable();
        let mut last = from_ms;
        let mut longest = 0;
        for time in times.into_iter().filter(|t| *t >= from_ms && *t <= to_ms) {
            longest = longest.max(time - last);
            last = time;
        }
        longest.max(to_ms.saturating_sub(last))
    }
}

/// Four clients, each one write then one read at a time, for as long as
/// the test runs (bounded by `ops_max` each).
fn start_traffic(
    runtime: &tokio::runtime::Runtime,
    table: &markab::client::Table,
    started: Instant,
    ops_max: usize,
) -> Arc<Traffic> {
    let traffic = Arc::new(Traffic::default());
    for worker in 0..4 {
        let (table, traffic) = (table.clone(), traffic.clone());
        runtime.spawn(async move {
            for sequence in 0..ops_max {
                if traffic.stop.load(Ordering::Relaxed) {
                    return;
                }
                let key = format!("k{worker}-{sequence}");
                let now = || started.elapsed().as_millis() as u64;
                match table.set(key.as_bytes(), b"s", b"v", 0).await {
                    Ok(()) => {
                        traffic.successes.lock().unwrap().push(now());
                        traffic.acked.lock().unwrap().push(key.clone());
                    }
                    Err(error) => traffic
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("set {key}: {error}")),
                }
                match table.get(key.as_bytes(), b"s").await {
                    Ok(_) => traffic.successes.lock().unwrap().push(now()),
                    Err(error) => traffic
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("get {key}: {error}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    traffic
}

// The leader meta is SIGKILLed, twice, while clients write and read and DDL
// goes on: a new leader serves DDL within the bound, no table is lost, and
// the clients see no error (the client library retries NOT_LEADER and
// lease gaps within its timeouts). Prints the figures docs/BENCHMARKS.md
// records.
#[test]
fn leader_killed_under_load() {
    let mut group = Group::start(3);
    let runtime = runtime();
    let client = group.client(&runtime);
    runtime
        .block_on(client.create_table(create("data", 8)))
        .unwrap();
    let table = runtime.block_on(client.open_table("data")).unwrap();
    wait_for("the table to answer", || {
        runtime.block_on(table.set(b"probe", b"s", b"v", 0)).ok()
    });
    let started = Instant::now();
    let traffic = start_traffic(&runtime, &table, started, 100_000);
    let mut created = vec!["data".to_owned()];
    let kills: usize = std::env::var("MARKAB_META_KILLS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2);
    // `markab bench` through every meta, at a modest rate, for the whole
    // run: it must report no error either.
    let bench_json = group._dir.path().join("bench.json");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_markab"))
        .arg("bench")
        .arg("--target")
        .arg(format!("markab://{}", group.meta_addresses.join(",")))
        .args(["--table", "data", "--workload", "a", "--records", "1000"])
        .args(["--operations", "10000000", "--target-rate", "300"])
        .arg("--duration-s")
        .arg((6 * kills + 4).to_string())
        .arg("--json")
        .arg(&bench_json)
        .arg("--quiet")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(group._dir.path().join("bench.log")).unwrap())
        .spawn()
        .expect("start markab bench");
    let mut ddl_ms = Vec::new();
    let mut gaps_ms = Vec::new();
    for round in 0..kills {
        std::thread::sleep(Duration::from_millis(1_500));
        let leader = group.wait_leader(None);
        let killed_at = Instant::now();
        let killed_ms = started.elapsed().as_millis() as u64;
        group.metas[leader].take().unwrap().kill();
        // DDL through the client library until it succeeds.
        let name = format!("after{round}");
        loop {
            match runtime.block_on(client.create_table(create(&name, 4))) {
                Ok(_) => break,
                Err(error) => {
                    assert!(
                        killed_at.elapsed() < LEADER_CHANGE_BOUND,
                        "no DDL within {LEADER_CHANGE_BOUND:?} of the leader's kill: {error}"
                    );
                }
            }
        }
        let back = killed_at.elapsed();
        ddl_ms.push(back.as_millis() as u64);
        created.push(name);
        std::thread::sleep(Duration::from_millis(2_000));
        let gap = traffic.longest_gap_ms(killed_ms, started.elapsed().as_millis() as u64);
        gaps_ms.push(gap);
        println!(
            "kill {round}: leader meta-{leader} SIGKILLed; DDL back after {} ms; longest gap in the clients' successes {gap} ms",
            back.as_millis()
        );
        // The killed meta comes back as a follower.
        group.metas[leader] = Some(Meta::start(&group.meta_configs[leader]));
    }
    traffic.stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    let errors = traffic.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "the clients saw errors: {errors:?}");
    wait_bench(&mut bench, Duration::from_secs(6 * kills as u64 + 60));
    let bench_output =
        std::fs::read_to_string(group._dir.path().join("bench.log")).unwrap_or_default();
    let phases: Vec<serde_json::Value> = std::fs::read_to_string(&bench_json)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("bench JSON line"))
        .collect();
    assert_eq!(phases.len(), 2, "bench: {bench_output}");
    for phase in &phases {
        assert_eq!(
            phase["overall"]["errors"],
            serde_json::json!({}),
            "bench {} saw errors: {bench_output}",
            phase["phase"]
        );
    }
    println!(
        "markab bench through the leader changes: {} operations, no error",
        phases[1]["overall"]["count"]
    );
    let tables = runtime.block_on(client.list_tables(false)).unwrap();
    for name in &created {
        assert!(
            tables.iter().any(|table| &table.name == name),
            "{name} lost: {tables:?}"
        );
    }
    // Every acknowledged write reads back.
    let acked = traffic.acked.lock().unwrap().clone();
    for key in acked.iter().step_by(7) {
        let value = runtime.block_on(table.get(key.as_bytes(), b"s")).unwrap();
        assert_eq!(value.as_deref(), Some(&b"v"[..]), "{key}");
    }
    ddl_ms.sort_unstable();
    println!(
        "meta leader kills: {kills}; DDL back median {} ms, worst {} ms; longest data-path gap {} ms; {} operations",
        ddl_ms[ddl_ms.len() / 2],
        ddl_ms.last().unwrap(),
        gaps_ms.iter().max().unwrap(),
        traffic.successes.lock().unwrap().len()
    );
    drop(group.nodes.drain(..));
}

/// Waits (bounded) for `markab bench` to exit 0.
fn wait_bench(bench: &mut Child, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = bench.try_wait().unwrap() {
            assert!(status.success(), "markab bench failed: {status}");
            return;
        }
        if Instant::now() >= deadline {
            kill_child(bench);
            panic!("markab bench did not finish within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// The leader is paused (SIGSTOP) past its session: another meta leads. A
// DDL request sent to the paused leader waits in its socket; once it
// resumes it answers NOT_LEADER (its session ended by its own clock),
// changes nothing, and rejoins as a follower.
#[test]
fn paused_leader_changes_nothing() {
    let group = Group::start(3);
    let leader = group.wait_leader(None);
    signal(group.meta_pid(leader), libc::SIGSTOP);
    let paused_at = Instant::now();
    let successor = group.wait_leader(Some(leader));
    assert!(paused_at.elapsed() < LEADER_CHANGE_BOUND);
    // A request the paused leader will read when it resumes.
    let address = group.meta_addresses[leader].clone();
    let pending = std::thread::spawn(move || {
        let mut connection = common::cluster::RawConnection::connect(&address).unwrap();
        connection.call(
            Default::default(),
            &Request::CreateTable(create("stale", 4)),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    signal(group.meta_pid(leader), libc::SIGCONT);
    let answer = pending.join().unwrap().expect("the resumed meta answers");
    let error = answer.expect_err("a deposed leader serves nothing");
    assert_eq!(error.code, ErrorCode::NotLeader, "{error:?}");
    let info = group.cluster_info(successor).unwrap();
    assert_eq!(value_of(&info, "meta_role"), "leader");
    let tables = group
        .cluster_info(successor)
        .map(|pairs| value_of(&pairs, "tables").to_owned());
    assert_eq!(
        tables.as_deref(),
        Some("0"),
        "the stale create changed nothing"
    );
    wait_for("the resumed meta to follow", || {
        (group.named_leader(leader)? == group.meta_addresses[successor]).then_some(())
    });
}

// etcd restarts: every meta loses it for a moment and recovers without
// help; DDL works again and nothing is lost. Then the leader meta and a
// node die together: after the new leader's wait, the node's primaries
// fail over.
#[test]
fn etcd_restart_and_node_killed_during_leader_change() {
    let mut group = Group::start(3);
    let runtime = runtime();
    let client = group.client(&runtime);
    runtime
        .block_on(client.create_table(create("before", 8)))
        .unwrap();
    group.etcd.kill();
    std::thread::sleep(Duration::from_millis(1_500));
    group.etcd.spawn();
    let restarted = Instant::now();
    wait_for("DDL after etcd's restart", || {
        runtime
            .block_on(client.create_table(create("after", 4)))
            .ok()
    });
    println!(
        "DDL back {} ms after etcd restarted",
        restarted.elapsed().as_millis()
    );
    let tables = runtime.block_on(client.list_tables(false)).unwrap();
    assert_eq!(tables.len(), 2, "{tables:?}");

    // Leader and a primary's node die together.
    let leader = group.wait_leader(None);
    let route = runtime.block_on(client.open_table("before")).unwrap();
    drop(route);
    let victim = 0;
    let victim_id = group.node_ids[victim].clone();
    group.metas[leader].take().unwrap().kill();
    group.nodes[victim].take().unwrap().kill();
    let killed = Instant::now();
    let configs = wait_for("the dead node's replicas replaced", || {
        let answer = runtime.block_on(client.describe_table("before")).ok()?;
        answer
            .partitions
            .iter()
            .all(|partition| {
                !partition.primary.starts_with(&victim_id)
                    && !partition.primary.is_empty()
                    && partition
                        .secondaries
                        .iter()
                        .all(|s| !s.starts_with(&victim_id))
            })
            .then_some(answer.partitions)
    });
    println!(
        "leader meta and node {victim_id} killed: every partition off the node after {} ms",
        killed.elapsed().as_millis()
    );
    assert_eq!(configs.len(), 8);
    let table = runtime.block_on(client.open_table("before")).unwrap();
    wait_for("writes after the failover", || {
        runtime.block_on(table.set(b"x", b"s", b"v", 0)).ok()
    });
}

// A meta with an etcd that does not answer, a prefix holding foreign data,
// another cluster's prefix, or a config that mixes stores: each fails to
// start with an error that says so, within a bound.
#[test]
fn bad_etcd_setups_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut picker = markab::onebox::PortPicker::new();
    let mut etcd = Etcd::plan(dir.path(), &mut picker);
    let silent = format!("127.0.0.1:{}", picker.pick(1).unwrap());
    let address = format!("127.0.0.1:{}", picker.pick(1).unwrap());
    drop(picker);
    etcd.spawn();
    // Foreign data under one prefix, and a cluster 1's prefix.
    let runtime = runtime();
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.client.as_str()], None)
            .await
            .unwrap();
        client.put("/foreign/app/config", "x", None).await.unwrap();
        client
            .put("/taken/cluster", "{\"cluster_id\":1}", None)
            .await
            .unwrap();
    });
    let cases: [(String, &str); 4] = [
        (
            meta_config_text(&address, &silent, "/markab/silent", 1),
            &format!("etcd at {silent} does not answer"),
        ),
        (
            meta_config_text(&address, &etcd.client, "/foreign", 1),
            "holds a key Markab did not write (/foreign/app/config)",
        ),
        (
            meta_config_text(&address, &etcd.client, "/taken", 2),
            "belongs to cluster 1 but this meta is configured with cluster_id = 2",
        ),
        (
            format!(
                "[meta]\nlisten = {address:?}\ndata_dir = \"/tmp/x\"\netcd_endpoints = [{:?}]\n",
                etcd.client
            ),
            "meta.etcd_endpoints is set but meta.store is \"file\"",
        ),
    ];
    for (index, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{index}.toml"));
        std::fs::write(&path, text).unwrap();
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_markab"))
            .arg("meta")
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "case {index} started: {stderr}");
        assert!(stderr.contains(expected), "case {index}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "case {index} took {:?}",
            started.elapsed()
        );
    }
}

fn sample_table(name: &str) -> StoredTable {
    StoredTable {
        name: name.into(),
        partition_count: 1,
        replica_count: 3,
        create_time_s: 100,
        partitions: vec![markab::meta::state::StoredPartition {
            ballot: 1,
            primary: markab::meta::state::ReplicaPlace {
                node: "127.0.0.1:1".into(),
                shard: 0,
                address: "127.0.0.1:1".into(),
            },
            secondaries: Vec::new(),
            learners: Vec::new(),
            split_child: false,
        }],
        ..StoredTable::default()
    }
}

/// The suite both stores pass: nothing loads as `None`; saves replace the
/// whole state (tables added, changed and removed) and load back equal.
fn store_suite(store: &mut dyn MetaStore, reopen: &dyn Fn() -> Box<dyn MetaStore>) {
    assert_eq!(store.begin_term(1).unwrap(), None);
    let mut data = MetaData {
        version: 1,
        next_app_id: 3,
        ..MetaData::default()
    };
    data.tables.insert(1, sample_table("one"));
    data.tables.insert(2, sample_table("two"));
    store.save(&data).unwrap();
    assert_eq!(store.load().unwrap().as_ref(), Some(&data));
    data.version = 2;
    data.tables.remove(&1);
    data.tables.get_mut(&2).unwrap().partitions[0].ballot = 5;
    data.next_app_id = 4;
    data.tables.insert(3, sample_table("three"));
    store.save(&data).unwrap();
    assert_eq!(store.load().unwrap().as_ref(), Some(&data));
    let reopened = reopen();
    assert_eq!(reopened.load().unwrap().as_ref(), Some(&data));
}

#[test]
fn file_store_passes_the_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = FileMetaStore::open(dir.path()).unwrap();
        let path = dir.path().to_owned();
        // The reopened store reads the same file (its lock is the first
        // store's, so it reads without locking).
        store_suite(&mut store, &|| {
            Box::new(ReadOnlyFile(path.join(markab::meta::store::META_FILE_NAME)))
        });
    }
}

/// Reads a file store's state without taking its lock.
struct ReadOnlyFile(PathBuf);

impl MetaStore for ReadOnlyFile {
    fn load(&self) -> Result<Option<MetaData>, MetaStoreError> {
        let bytes = std::fs::read(&self.0).unwrap();
        Ok(Some(serde_json::from_slice(&bytes).unwrap()))
    }

    fn save(&mut self, _: &MetaData) -> Result<(), MetaStoreError> {
        unreachable!("read only")
    }
}

// The etcd store passes the suite, and fences a deposed term: once another
// meta holds the leader key, the old term's delayed save fails with Fenced
// and the state stays as the new leader left it.
#[test]
fn etcd_store_passes_the_store_suite_and_fences() {
    let dir = tempfile::tempdir().unwrap();
    let mut picker = markab::onebox::PortPicker::new();
    let mut etcd = Etcd::plan(dir.path(), &mut picker);
    drop(picker);
    etcd.spawn();
    let runtime = runtime();
    let config = etcd.config("/markab/suite");
    let link = runtime.block_on(EtcdLink::open(config.clone(), 1)).unwrap();
    let mut raw = runtime
        .block_on(etcd_client::Client::connect([etcd.client.as_str()], None))
        .unwrap();
    // Term 1: this test holds the leader key (no lease: it stays).
    let epoch = runtime
        .block_on(raw.put("/markab/suite/leader", "test-a", None))
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut store = EtcdMetaStore::new(link.clone(), runtime.handle().clone());
    std::thread::scope(|scope| {
        // The store blocks on the runtime: run it off the runtime's threads.
        scope
            .spawn(|| {
                assert_eq!(store.begin_term(epoch).unwrap(), None);
                let reopen_link = link.clone();
                let handle = runtime.handle().clone();
                store_suite_at(&mut store, epoch, &move || {
                    Box::new(EtcdMetaStore::new(reopen_link.clone(), handle.clone()))
                });
            })
            .join()
            .unwrap();
    });
    // Another meta takes over: a new leader key, a later epoch.
    runtime
        .block_on(raw.delete("/markab/suite/leader", None))
        .unwrap();
    let later = runtime
        .block_on(raw.put("/markab/suite/leader", "test-b", None))
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert!(later > epoch);
    let mut successor = EtcdMetaStore::new(link.clone(), runtime.handle().clone());
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut data = successor.begin_term(later).unwrap().unwrap();
                data.version += 1;
                data.next_app_id = 10;
                data.tables.insert(9, sample_table("nine"));
                successor.save(&data).unwrap();
                // The deposed term's delayed save.
                let mut stale = data.clone();
                stale.tables.clear();
                stale.version += 1;
                let error = store.save(&stale).unwrap_err();
                assert!(matches!(error, MetaStoreError::Fenced { .. }), "{error}");
                assert!(error.to_string().contains("test-b"), "{error}");
                assert_eq!(successor.load().unwrap(), Some(data));
            })
            .join()
            .unwrap();
    });
}

fn store_suite_at(store: &mut dyn MetaStore, epoch: i64, reopen: &dyn Fn() -> Box<dyn MetaStore>) {
    // `store_suite` begins term 1; an etcd store's term is the leader
    // key's revision, so begin that one instead.
    struct Term<'a>(&'a mut dyn MetaStore, i64);
    impl MetaStore for Term<'_> {
        fn begin_term(&mut self, _: i64) -> Result<Option<MetaData>, MetaStoreError> {
            self.0.begin_term(self.1)
        }
        fn load(&self) -> Result<Option<MetaData>, MetaStoreError> {
            self.0.load()
        }
        fn save(&mut self, data: &MetaData) -> Result<(), MetaStoreError> {
            self.0.save(data)
        }
    }
    store_suite(&mut Term(store, epoch), reopen);
}
