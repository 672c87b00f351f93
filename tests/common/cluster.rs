//! Cluster harness: a real `markab meta` and N real `markab replica` nodes in
//! cluster mode, from configs generated in a temporary directory.
//!
//! Every port is picked free up front (`markab::onebox::PortPicker`), so a
//! restarted meta or node comes back on the same address with the same
//! identity. Processes are stopped or killed only by the pids this harness
//! started.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use markab::wire::codec::{decode_response, Encoder};
use markab::wire::frame::{decode_header, FRAME_HEADER_BYTES};
use markab::wire::{
    CreateTableRequest, Envelope, Gpid, NodeInfo, PartitionConfig, Request, Response, ResponseBody,
};

use super::proxy::FaultProxy;
use super::Node;

/// How long meta may take to print its ready line.
pub const META_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one raw call to meta.
pub const META_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waits for the cluster to converge (nodes alive, replicas open).
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Beacon interval of the harness's nodes (faster than the default 1000 ms
/// so that tests converge quickly).
pub const BEACON_INTERVAL_MS: u64 = 200;
/// Node timeout of the harness's meta.
pub const NODE_TIMEOUT_MS: u64 = 3_000;

/// Settings of a harness cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// How many of the nodes start with the cluster (all when `None`); the
    /// others have their configs and ports and start with
    /// [`Cluster::start_node`], like nodes added to a running cluster.
    pub started: Option<usize>,
    /// Shards per node: 2 by default, since a node's default is one shard
    /// per core and bugs that need several shards per node stayed hidden
    /// behind one.
    pub shards: usize,
    /// Meta's `hold_seconds` (its default of 7 days when `None`).
    pub hold_seconds: Option<u64>,
    /// Extra lines for the nodes' `tuning/default.toml`.
    pub tuning: String,
    /// Extra lines for meta's `[meta]` section.
    pub meta_lines: String,
    /// Extra lines for the nodes' `[node]` section.
    pub node_lines: String,
    /// Extra environment variables of the meta process.
    pub meta_env: Vec<(String, String)>,
    /// Extra environment variables of the node processes.
    pub node_env: Vec<(String, String)>,
    /// Each node reaches meta through a [`FaultProxy`] of its own, so the
    /// test can cut it off from meta or hold meta's requests.
    pub proxies: bool,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            nodes: 3,
            started: None,
            shards: 2,
            hold_seconds: None,
            tuning: String::new(),
            meta_lines: String::new(),
            node_lines: String::new(),
            meta_env: Vec::new(),
            node_env: Vec::new(),
            proxies: false,
        }
    }
}

/// A running `markab meta`.
pub struct Meta {
    pub child: Child,
    /// `host:port` from its ready line.
    pub address: String,
    /// `host:port` of its `/metrics`, when its config asks for them.
    pub metrics_address: Option<String>,
    stdout_lines: mpsc::Receiver<String>,
}

impl Meta {
    /// Starts `markab meta --config PATH` and waits for its ready line.
    pub fn start(config_path: &Path) -> Meta {
        Meta::start_with(config_path, &[])
    }

    /// [`Meta::start`] with extra environment variables.
    pub fn start_with(config_path: &Path, env: &[(String, String)]) -> Meta {
        let (mut child, stdout_lines) = super::spawn_markab_with("meta", config_path, env, None);
        let deadline = Instant::now() + META_START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stdout_lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("markab meta ready: ").nth(1) {
                        let address = rest.split_whitespace().next().unwrap().to_string();
                        let metrics_address = rest
                            .split(" metrics=http://")
                            .nth(1)
                            .and_then(|url| url.split('/').next())
                            .map(str::to_owned);
                        return Meta {
                            child,
                            address,
                            metrics_address,
                            stdout_lines,
                        };
                    }
                }
                Err(_) => {
                    let status = child.try_wait();
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("meta printed no ready line within {META_START_TIMEOUT:?} (process: {status:?})");
                }
            }
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        super::terminate_child(&mut self.child, "meta")
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL meta");
        self.child.wait().expect("reap meta");
    }

    /// Lines meta printed on stdout so far (after its ready line).
    pub fn drain_stdout(&self) -> Vec<String> {
        self.stdout_lines.try_iter().collect()
    }
}

impl Drop for Meta {
    fn drop(&mut self) {
        super::kill_child(&mut self.child);
    }
}

/// A meta and its nodes, all real processes, in one temporary directory.
/// Dropping it kills the processes first, then deletes the directory.
pub struct Cluster {
    pub meta_config: PathBuf,
    /// `127.0.0.1:<port>`, stable across meta restarts.
    pub meta_address: String,
    pub meta: Option<Meta>,
    pub node_configs: Vec<PathBuf>,
    /// Each node's id (`127.0.0.1:<port_base>`), stable across restarts.
    pub node_ids: Vec<String>,
    pub nodes: Vec<Option<Node>>,
    /// With [`ClusterOptions::proxies`]: node `i` reaches meta through
    /// `proxies[i]`.
    pub proxies: Vec<FaultProxy>,
    /// Meta's extra environment (kept for restarts).
    meta_env: Vec<(String, String)>,
    /// The nodes' extra environment (kept for restarts).
    node_env: Vec<(String, String)>,
    /// Declared last: fields drop in order, so the processes are gone
    /// before their directories are deleted.
    pub dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nodes first (they beacon to meta), then meta; each is killed by
        // its own pid in its Drop.
        self.nodes.clear();
        self.proxies.clear();
        self.meta = None;
    }
}

impl Cluster {
    /// Starts meta and `options.nodes` nodes and waits until meta lists
    /// every node alive.
    pub fn start(options: ClusterOptions) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut picker = markab::onebox::PortPicker::new();
        let meta_port = picker.pick(1).expect("a free port for meta");
        let meta_address = format!("127.0.0.1:{meta_port}");
        let mut meta_text = format!(
            "[meta]\nlisten = {meta_address:?}\ndata_dir = {:?}\nnode_timeout_ms = {NODE_TIMEOUT_MS}\n",
            dir.path().join("meta").display().to_string()
        );
        if let Some(hold_seconds) = options.hold_seconds {
            meta_text.push_str(&format!("hold_seconds = {hold_seconds}\n"));
        }
        meta_text.push_str(&options.meta_lines);
        let meta_config = dir.path().join("meta.toml");
        std::fs::write(&meta_config, meta_text).unwrap();
        let mut node_configs = Vec::new();
        let mut node_ids = Vec::new();
        let mut proxy_addresses = Vec::new();
        for index in 0..options.nodes {
            let port_base = picker.pick(options.shards).expect("free ports for a node");
            let node_meta = if options.proxies {
                let port = picker.pick(1).expect("a free port for a proxy");
                proxy_addresses.push(format!("127.0.0.1:{port}"));
                format!("127.0.0.1:{port}")
            } else {
                meta_address.clone()
            };
            let (path, id) = write_node_config(
                dir.path(),
                index,
                port_base,
                options.shards,
                &[node_meta],
                &options.node_lines,
            );
            node_configs.push(path);
            node_ids.push(id);
        }
        write_tuning(dir.path(), &options.tuning);
        // Release the ports just before the processes bind them.
        drop(picker);
        let meta = Meta::start_with(&meta_config, &options.meta_env);
        assert_eq!(meta.address, meta_address, "meta listens where configured");
        let proxies = proxy_addresses
            .iter()
            .map(|address| FaultProxy::start(address, &meta_address))
            .collect();
        let started = options.started.unwrap_or(options.nodes);
        let nodes = (0..options.nodes)
            .map(|index| {
                let log = dir.path().join(format!("node-{index}.log"));
                (index < started).then(|| {
                    Node::start_logged_with(&node_configs[index], Some(&log), &options.node_env)
                })
            })
            .collect();
        let cluster = Cluster {
            meta_config,
            meta_address,
            meta: Some(meta),
            node_configs,
            node_ids,
            nodes,
            proxies,
            meta_env: options.meta_env,
            node_env: options.node_env,
            dir,
        };
        cluster.wait_nodes_alive(&cluster.node_ids[..started]);
        cluster
    }

    /// The data directory of node `index`.
    pub fn node_data_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("node-{index}"))
    }

    /// Meta's address as a one-element list, for `Client::connect_meta`.
    pub fn meta_addresses(&self) -> Vec<String> {
        vec![self.meta_address.clone()]
    }

    /// Stops meta with SIGTERM (bounded) and starts it again on the same
    /// config; waits until it lists every running node alive.
    pub fn restart_meta(&mut self) {
        if let Some(meta) = self.meta.take() {
            assert!(meta.terminate().success(), "meta exits 0 on SIGTERM");
        }
        let meta = Meta::start_with(&self.meta_config, &self.meta_env);
        assert_eq!(meta.address, self.meta_address);
        self.meta = Some(meta);
        let running: Vec<String> = self
            .nodes
            .iter()
            .zip(&self.node_ids)
            .filter(|(node, _)| node.is_some())
            .map(|(_, id)| id.clone())
            .collect();
        self.wait_nodes_alive(&running);
    }

    /// Kills node `index` with SIGKILL.
    pub fn kill_node(&mut self, index: usize) {
        self.nodes[index].take().expect("node running").kill();
    }

    /// Stops node `index` with SIGTERM (bounded); asserts a clean exit.
    pub fn stop_node(&mut self, index: usize) {
        let node = self.nodes[index].take().expect("node running");
        assert!(node.terminate().success(), "node exits 0 on SIGTERM");
    }

    /// Starts node `index` again on its config and waits until meta lists it
    /// alive.
    pub fn start_node(&mut self, index: usize) {
        assert!(self.nodes[index].is_none(), "node {index} already runs");
        let log = self.node_log_path(index);
        self.nodes[index] = Some(Node::start_logged_with(
            &self.node_configs[index],
            Some(&log),
            &self.node_env,
        ));
        self.wait_nodes_alive(&self.node_ids[index..=index]);
    }

    /// Where node `index` writes its log (stderr).
    pub fn node_log_path(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("node-{index}.log"))
    }

    /// What node `index` logged so far.
    pub fn node_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.node_log_path(index)).unwrap_or_default()
    }

    /// Pauses meta (SIGSTOP) for `pause`, then resumes it (SIGCONT).
    pub fn pause_meta(&self, pause: Duration) {
        let pid = self.meta.as_ref().expect("meta running").child.id();
        super::signal(pid, libc::SIGSTOP);
        std::thread::sleep(pause);
        super::signal(pid, libc::SIGCONT);
    }

    /// The pid of node `index` (for SIGSTOP / SIGCONT).
    pub fn node_pid(&self, index: usize) -> u32 {
        self.nodes[index].as_ref().expect("node running").child.id()
    }

    /// The configuration of every partition of `table` (raw call).
    pub fn describe(&self, table: &str) -> Vec<PartitionConfig> {
        match self.meta_call(&Request::DescribeTable {
            table: table.to_owned(),
        }) {
            Ok(ResponseBody::Description(description)) => description.partitions,
            other => panic!("describe_table {table} answered {other:?}"),
        }
    }

    /// Creates `table` with `partitions` partitions of `replicas` replicas.
    pub fn create_table(&self, table: &str, partitions: i32, replicas: i32) {
        let created = self.meta_call(&Request::CreateTable(CreateTableRequest {
            table: table.to_owned(),
            partition_count: partitions,
            replica_count: replicas,
            envs: Vec::new(),
            success_if_exist: false,
        }));
        assert!(created.is_ok(), "create {table}: {created:?}");
    }

    /// Waits (bounded) until every partition of `table` has a primary,
    /// `replicas - 1` secondaries and no learner.
    pub fn wait_full(&self, table: &str, replicas: usize) -> Vec<PartitionConfig> {
        wait_for(
            &format!("every partition of {table} at {replicas} replicas"),
            || {
                let partitions = self.describe(table);
                partitions
                    .iter()
                    .all(|partition| {
                        !partition.primary.is_empty()
                            && partition.secondaries.len() + 1 == replicas
                            && partition.learners.is_empty()
                    })
                    .then_some(partitions)
            },
        )
    }

    /// The index of node `id` (`host:port_base`).
    pub fn node_index(&self, id: &str) -> usize {
        self.node_ids
            .iter()
            .position(|known| known == id)
            .unwrap_or_else(|| panic!("{id} is not a node of this cluster"))
    }

    /// Waits (bounded by [`CONVERGE_TIMEOUT`]) until meta lists every node
    /// of `ids` alive.
    pub fn wait_nodes_alive(&self, ids: &[String]) {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            let nodes = self.list_nodes();
            let alive = |id: &String| nodes.iter().any(|node| &node.node == id && node.alive);
            if ids.iter().all(alive) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {ids:?} not all alive within {CONVERGE_TIMEOUT:?}; meta lists {nodes:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The nodes meta lists (raw call).
    pub fn list_nodes(&self) -> Vec<NodeInfo> {
        match self.meta_call(&Request::ListNodes) {
            Ok(ResponseBody::Nodes(nodes)) => nodes,
            other => panic!("list_nodes answered {other:?}"),
        }
    }

    /// One raw request to meta on a fresh connection (see [`meta_call`]).
    pub fn meta_call(&self, request: &Request) -> Response {
        meta_call(&self.meta_address, request)
    }
}

/// Writes `DIR/node-<index>.toml`: a cluster node on 127.0.0.1 with
/// `shards` shards from `port_base`, data in `DIR/node-<index>`, beaconing
/// to `metas` every [`BEACON_INTERVAL_MS`], plus `extra` lines. Returns the
/// config's path and the node's id (its shard 0 address).
pub fn write_node_config(
    dir: &Path,
    index: usize,
    port_base: u16,
    shards: usize,
    metas: &[String],
    extra: &str,
) -> (PathBuf, String) {
    let metas = metas
        .iter()
        .map(|address| format!("{address:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[node]\ndata_dir = {:?}\nhost = \"127.0.0.1\"\nport_base = {port_base}\nshards = {shards}\npin = false\ntuning_dir = \"tuning\"\nmeta = [{metas}]\nbeacon_interval_ms = {BEACON_INTERVAL_MS}\n{extra}",
        dir.join(format!("node-{index}")).display().to_string(),
    );
    let path = dir.join(format!("node-{index}.toml"));
    std::fs::write(&path, text).unwrap();
    (path, format!("127.0.0.1:{port_base}"))
}

/// Writes the nodes' `DIR/tuning/default.toml`: small per-shard budgets so
/// that several nodes share the machine, plus `extra` lines.
pub fn write_tuning(dir: &Path, extra: &str) {
    std::fs::create_dir_all(dir.join("tuning")).unwrap();
    std::fs::write(
        dir.join("tuning/default.toml"),
        format!(
            "block_cache_bytes = 8_388_608\nwrite_buffer_bytes = 8_388_608\ncompaction_threads = 1\n{extra}"
        ),
    )
    .unwrap();
}

/// Sends `request` to meta at `address` on a fresh blocking connection and
/// returns its response; panics on transport errors or after
/// [`META_CALL_TIMEOUT`]. Independent of the client library, so tests can
/// check meta's exact answers.
pub fn meta_call(address: &str, request: &Request) -> Response {
    let mut connection = RawConnection::connect(address).unwrap_or_else(|error| {
        panic!("cannot connect to meta at {address}: {error}");
    });
    connection
        .call(Gpid::default(), request)
        .unwrap_or_else(|error| panic!("call to meta at {address}: {error}"))
}

/// One blocking connection to a node's shard or to meta, sending raw
/// requests in the envelope the test chooses — a client pinned to one
/// address, that never refreshes its route.
pub struct RawConnection {
    stream: TcpStream,
    request_id: u64,
}

impl RawConnection {
    /// Connects to `address`; calls time out after [`META_CALL_TIMEOUT`].
    pub fn connect(address: &str) -> std::io::Result<RawConnection> {
        let stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(META_CALL_TIMEOUT))?;
        stream.set_write_timeout(Some(META_CALL_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RawConnection {
            stream,
            request_id: 0,
        })
    }

    /// Sends `request` for partition `gpid` and reads its response.
    pub fn call(&mut self, gpid: Gpid, request: &Request) -> std::io::Result<Response> {
        self.request_id += 1;
        let envelope = Envelope {
            request_id: self.request_id,
            timeout_ms: META_CALL_TIMEOUT.as_millis() as u32,
            gpid,
            partition_hash: 0,
            partition_count: 0,
        };
        let mut frame = Vec::new();
        Encoder::new()
            .request_frame(&envelope, request, &mut frame)
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        self.stream.write_all(&frame)?;
        loop {
            let mut header = [0u8; FRAME_HEADER_BYTES];
            self.stream.read_exact(&mut header)?;
            let header =
                decode_header(&header).map_err(|error| std::io::Error::other(error.to_string()))?;
            let mut body = vec![0u8; header.body_bytes];
            self.stream.read_exact(&mut body)?;
            header
                .verify_body(&body)
                .map_err(|error| std::io::Error::other(error.to_string()))?;
            let (request_id, response) =
                decode_response(&body).map_err(|error| std::io::Error::other(error.to_string()))?;
            if request_id == self.request_id {
                return Ok(response);
            }
        }
    }
}

/// Waits (bounded) until every partition of table `name` answers a read
/// (its replica is open on its node): meta's configuration can name a
/// primary before its node has opened the replica. Returns the table.
pub fn wait_served(
    runtime: &tokio::runtime::Runtime,
    client: &markab::client::Client,
    name: &str,
) -> markab::client::Table {
    wait_for(&format!("every partition of {name} served"), || {
        let table = runtime.block_on(client.open_table(name)).ok()?;
        let count = table.partition_count();
        let mut missing: std::collections::BTreeSet<u32> = (0..count).collect();
        let mut candidate = 0u64;
        while !missing.is_empty() {
            let key = format!("probe{candidate}");
            candidate += 1;
            let partition = markab::key::partition_index(markab::key::crc64(key.as_bytes()), count);
            if missing.remove(&partition) {
                runtime.block_on(table.exist(key.as_bytes(), b"s")).ok()?;
            }
        }
        Some(table)
    })
}

/// Waits (bounded by [`CONVERGE_TIMEOUT`]) until `check` returns `Some`,
/// polling every 100 ms; panics naming `what` on timeout.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not done within {CONVERGE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
