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
use markab::wire::{Envelope, NodeInfo, Request, Response, ResponseBody};

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
    pub shards: usize,
    /// Meta's `hold_seconds` (its default of 7 days when `None`).
    pub hold_seconds: Option<u64>,
    /// Extra lines for the nodes' `tuning/default.toml`.
    pub tuning: String,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            nodes: 3,
            shards: 1,
            hold_seconds: None,
            tuning: String::new(),
        }
    }
}

/// A running `markab meta`.
pub struct Meta {
    pub child: Child,
    /// `host:port` from its ready line.
    pub address: String,
    stdout_lines: mpsc::Receiver<String>,
}

impl Meta {
    /// Starts `markab meta --config PATH` and waits for its ready line.
    pub fn start(config_path: &Path) -> Meta {
        let (mut child, stdout_lines) = super::spawn_markab("meta", config_path);
        let deadline = Instant::now() + META_START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stdout_lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("markab meta ready: ").nth(1) {
                        let address = rest.split_whitespace().next().unwrap().to_string();
                        return Meta {
                            child,
                            address,
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
    /// Declared last: fields drop in order, so the processes are gone
    /// before their directories are deleted.
    pub dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nodes first (they beacon to meta), then meta; each is killed by
        // its own pid in its Drop.
        self.nodes.clear();
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
        let meta_config = dir.path().join("meta.toml");
        std::fs::write(&meta_config, meta_text).unwrap();
        let mut node_configs = Vec::new();
        let mut node_ids = Vec::new();
        for index in 0..options.nodes {
            let port_base = picker.pick(options.shards).expect("free ports for a node");
            let text = format!(
                "[node]\ndata_dir = {:?}\nhost = \"127.0.0.1\"\nport_base = {port_base}\nshards = {}\npin = false\ntuning_dir = \"tuning\"\nmeta = [{meta_address:?}]\nbeacon_interval_ms = {BEACON_INTERVAL_MS}\n",
                dir.path().join(format!("node-{index}")).display().to_string(),
                options.shards
            );
            let path = dir.path().join(format!("node-{index}.toml"));
            std::fs::write(&path, text).unwrap();
            node_configs.push(path);
            node_ids.push(format!("127.0.0.1:{port_base}"));
        }
        std::fs::create_dir_all(dir.path().join("tuning")).unwrap();
        std::fs::write(
            dir.path().join("tuning/default.toml"),
            format!(
                "block_cache_bytes = 8_388_608\nwrite_buffer_bytes = 8_388_608\ncompaction_threads = 1\n{}",
                options.tuning
            ),
        )
        .unwrap();
        // Release the ports just before the processes bind them.
        drop(picker);
        let meta = Meta::start(&meta_config);
        assert_eq!(meta.address, meta_address, "meta listens where configured");
        let nodes = node_configs
            .iter()
            .map(|path| Some(Node::start(path)))
            .collect();
        let cluster = Cluster {
            meta_config,
            meta_address,
            meta: Some(meta),
            node_configs,
            node_ids,
            nodes,
            dir,
        };
        cluster.wait_nodes_alive(&cluster.node_ids);
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
        let meta = Meta::start(&self.meta_config);
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
        self.nodes[index] = Some(Node::start(&self.node_configs[index]));
        self.wait_nodes_alive(&self.node_ids[index..=index]);
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

/// Sends `request` to meta at `address` on a fresh blocking connection and
/// returns its response; panics on transport errors or after
/// [`META_CALL_TIMEOUT`]. Independent of the client library, so tests can
/// check meta's exact answers.
pub fn meta_call(address: &str, request: &Request) -> Response {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|error| {
        panic!("cannot connect to meta at {address}: {error}");
    });
    stream.set_read_timeout(Some(META_CALL_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(META_CALL_TIMEOUT)).unwrap();
    let envelope = Envelope {
        request_id: 1,
        timeout_ms: META_CALL_TIMEOUT.as_millis() as u32,
        ..Envelope::default()
    };
    let mut frame = Vec::new();
    Encoder::new()
        .request_frame(&envelope, request, &mut frame)
        .unwrap();
    stream.write_all(&frame).unwrap();
    let mut header = [0u8; FRAME_HEADER_BYTES];
    stream.read_exact(&mut header).unwrap();
    let header = decode_header(&header).unwrap();
    let mut body = vec![0u8; header.body_bytes];
    stream.read_exact(&mut body).unwrap();
    header.verify_body(&body).unwrap();
    let (request_id, response) = decode_response(&body).unwrap();
    assert_eq!(request_id, 1);
    response
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
