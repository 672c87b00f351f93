//! `markab onebox`: a whole local cluster — one meta server and N replica
//! nodes — started and supervised from one command, with no download.
//!
//! On the first start in a directory onebox picks free 127.0.0.1 ports,
//! writes `meta.toml` and `node-<i>.toml` there and starts the children from
//! the running executable (`markab meta --config`, `markab replica
//! --config`). Later starts reuse those files, so ports, node identities and
//! data survive restarts. Once meta lists every node alive, onebox creates
//! table `temp` (when absent), checks that every partition answers, and
//! prints
//!
//! ```text
//! markab onebox ready: meta=127.0.0.1:24601 nodes=3 table=temp dir=/abs/onebox
//! ```
//!
//! With `--metas N` (N > 1) onebox also starts a local etcd (Debian's
//! `etcd-server`) and N metas that keep their state there, one of them
//! the leader (docs/meta.md, "High availability"); the ready line then
//! lists every meta (`meta=a,b,c`).
//!
//! SIGTERM or Ctrl-C stops every child (SIGTERM, then SIGKILL after
//! [`STOP_TIMEOUT`]) and exits 0. See docs/onebox.md.

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most nodes one onebox starts.
pub const NODES_MAX: usize = 64;
/// Most metas one onebox starts.
pub const METAS_MAX: usize = 7;
/// Most shards per onebox node.
pub const SHARDS_PER_NODE_MAX: usize = 64;
/// Default bound on each wait of the start (a child's ready line, the
/// nodes' registration, the table's partitions answering), in seconds.
pub const READY_TIMEOUT_DEFAULT_S: u64 = 60;
/// How long the children get to stop after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most candidate ports tried when picking one free port range.
pub const PORT_PICK_ATTEMPTS_MAX: usize = 1000;
/// Lowest port onebox picks (below the OS's ephemeral range, so outgoing
/// connections do not take a onebox port between restarts).
pub const PORT_PICK_LOW: u16 = 20_000;
/// Most bytes of a child's log kept while looking for its ready line
/// (the unfinished last line); longer lines are cut.
pub const LOG_LINE_BYTES_MAX: usize = 64 * 1024;
/// Most log lines quoted in an error about a child.
pub const LOG_TAIL_LINES_MAX: usize = 8;

/// How often onebox looks at its children and its signal flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often the supervisor checks its children once the cluster is ready.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(200);

pub(crate) const META_READY: &str = "markab meta ready:";
pub(crate) const NODE_READY: &str = "markab replica ready:";
const META_CONFIG: &str = "meta.toml";
/// Where a onebox with several metas keeps its etcd's ports.
const ETCD_CONFIG: &str = "etcd.toml";
/// etcd's line once it serves clients.
const ETCD_READY: &str = "ready to serve client requests";
const PID_FILE: &str = "onebox.pid";
const TUNING_DEFAULT: &str = "\
# Written by markab onebox: modest per-shard budgets so that several nodes
# share one machine. Edit freely; see tuning/default.toml for every key.
block_cache_bytes = 16_777_216
write_buffer_bytes = 16_777_216
compaction_threads = 1
";

/// `markab onebox`: options.
#[derive(Clone, Debug, clap::Args)]
pub struct OneboxArgs {
    /// Directory for configs, data and logs; created when absent. A later
    /// start in the same directory reuses its ports, identities and data.
    #[arg(long, default_value = "onebox")]
    pub dir: PathBuf,
    /// Replica nodes to run (1..=64).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Shards per node (1..=64), used when a node's config is first written.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// The table created when absent.
    #[arg(long, default_value = "temp")]
    pub table: String,
    /// Partition count of that table (a power of two).
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Replica count of that table (1..=--nodes; default 3, or --nodes when
    /// fewer nodes run).
    #[arg(long)]
    pub replicas: Option<i32>,
    /// Bound on each wait of the start, in seconds.
    #[arg(long, default_value_t = READY_TIMEOUT_DEFAULT_S)]
    pub ready_timeout_s: u64,
    /// The cluster's id (1..=127), written into meta's config when it is
    /// first written: two oneboxes that duplicate to each other need
    /// distinct ids (docs/duplication.md).
    #[arg(long, default_value_t = markab_core::meta::settings::CLUSTER_ID_DEFAULT)]
    pub cluster_id: u8,
    /// Meta servers (1..=7). More than one starts a local etcd (Debian's
    /// etcd-server) that keeps meta's state, and a group of metas with one
    /// leader; fixed when the directory is first used.
    #[arg(long, default_value_t = 1)]
    pub metas: usize,
}

/// Why onebox could not start or run the cluster.
#[derive(Debug, thiserror::Error)]
pub enum OneboxError {
    /// A command-line value is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file onebox wrote earlier cannot be read back.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// Another onebox runs in the directory.
    #[error("another markab onebox (pid {pid}) runs in {dir}; stop it first (or delete {dir}/onebox.pid if it is gone)")]
    Busy { dir: PathBuf, pid: i32 },
    /// No free port range was found.
    #[error("no free range of {count} consecutive 127.0.0.1 port(s) found in {attempts} attempts")]
    NoFreePorts { count: usize, attempts: usize },
    /// A child could not be started.
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A child exited before it was ready.
    #[error("{name} exited ({status}) before it was ready; see {}{}", log.display(), quote(tail))]
    ChildExited {
        name: String,
        status: ExitStatus,
        log: PathBuf,
        tail: Vec<String>,
    },
    /// A wait of the start ran past its bound.
    #[error("{what} not done within {timeout_s} s; see {}{}", log.display(), quote(tail))]
    Timeout {
        what: String,
        timeout_s: u64,
        log: PathBuf,
        tail: Vec<String>,
    },
    /// A call to meta or to a node failed.
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: crate::client::ClientError,
    },
}

fn quote(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut text = String::from("; its last lines:");
    for line in lines {
        text.push_str("\n    ");
        text.push_str(line);
    }
    text
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OneboxError + '_ {
    move |source| OneboxError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs onebox until SIGTERM or Ctrl-C; see the module docs. Returns
/// success after a clean stop (also when interrupted during the start), and
/// an error naming the child and its log when the cluster cannot start.
pub fn run(args: OneboxArgs) -> anyhow::Result<ExitCode> {
    validate(&args)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // The first signal asks for a clean stop; a second one while the
        // stop is under way exits at once (the children then get SIGTERM
        // through their parent-death signal).
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .map_err(|source| anyhow::anyhow!("cannot install a signal handler: {source}"))?;
    }
    std::fs::create_dir_all(&args.dir).map_err(io_error(&args.dir))?;
    let dir = args.dir.canonicalize().map_err(io_error(&args.dir))?;
    let _pid_file = PidFile::acquire(&dir)?;
    let layout = Layout::prepare(&dir, &args)?;
    let mut cluster = Cluster {
        children: Vec::new(),
    };
    let outcome = start(&args, &layout, &mut cluster, &stop);
    match outcome {
        Ok(true) => {
            println!(
                "markab onebox ready: meta={} nodes={} table={} dir={}",
                layout.meta_addresses().join(","),
                layout.nodes.len(),
                args.table,
                dir.display()
            );
            let _ = std::io::stdout().flush();
            cluster.supervise(&stop);
            cluster.stop_all();
            println!("markab onebox stopped");
            Ok(ExitCode::SUCCESS)
        }
        Ok(false) => {
            cluster.stop_all();
            println!("markab onebox stopped before it was ready");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            cluster.stop_all();
            Err(error.into())
        }
    }
}

fn validate(args: &OneboxArgs) -> Result<(), OneboxError> {
    let invalid = |message: String| Err(OneboxError::InvalidArgument(message));
    if args.nodes == 0 || args.nodes > NODES_MAX {
        return invalid(format!(
            "--nodes {} is out of range (allowed 1..={NODES_MAX})",
            args.nodes
        ));
    }
    if args.shards == 0 || args.shards > SHARDS_PER_NODE_MAX {
        return invalid(format!(
            "--shards {} is out of range (allowed 1..={SHARDS_PER_NODE_MAX})",
            args.shards
        ));
    }
    if args.metas == 0 || args.metas > METAS_MAX {
        return invalid(format!(
            "--metas {} is out of range (allowed 1..={METAS_MAX})",
            args.metas
        ));
    }
    if args.ready_timeout_s == 0 {
        return invalid("--ready-timeout-s 0: the bound must be at least 1 s".into());
    }
    markab_core::storage::timetag::validate_cluster_id(args.cluster_id)
        .map_err(|message| OneboxError::InvalidArgument(format!("--cluster-id: {message}")))?;
    crate::config::validate_table_name(&args.table)
        .map_err(|message| OneboxError::InvalidArgument(format!("--table: {message}")))?;
    crate::config::validate_partition_count(args.partitions)
        .map_err(|message| OneboxError::InvalidArgument(format!("--partitions: {message}")))?;
    if let Some(replicas) = args.replicas {
        if replicas < 1 || replicas as usize > args.nodes {
            return invalid(format!(
                "--replicas {replicas} is out of range (allowed 1..=--nodes = {}: each replica needs its own node)",
                args.nodes
            ));
        }
    }
    Ok(())
}

/// The table's replica count: `--replicas`, else 3 capped by `--nodes`.
fn replica_count(args: &OneboxArgs) -> i32 {
    args.replicas.unwrap_or_else(|| args.nodes.min(3) as i32)
}

/// A onebox cluster started by a tool (`markab failover-bench`): meta, the
/// nodes and the table, ready; stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct ToolCluster {
    pub layout: Layout,
    cluster: Cluster,
}

impl ToolCluster {
    /// Prepares `args.dir` and starts everything, like `markab onebox`.
    pub(crate) fn start(args: &OneboxArgs) -> Result<ToolCluster, OneboxError> {
        validate(args)?;
        std::fs::create_dir_all(&args.dir).map_err(io_error(&args.dir))?;
        let dir = args.dir.canonicalize().map_err(io_error(&args.dir))?;
        let layout = Layout::prepare(&dir, args)?;
        let mut cluster = Cluster {
            children: Vec::new(),
        };
        let stop = AtomicBool::new(false);
        match start(args, &layout, &mut cluster, &stop) {
            Ok(_) => Ok(ToolCluster { layout, cluster }),
            Err(error) => {
                cluster.stop_all();
                Err(error)
            }
        }
    }

    /// SIGKILLs the node whose id is `node_id` (by the pid onebox started).
    pub(crate) fn kill_node(&mut self, node_id: &str) -> Result<(), OneboxError> {
        let name = &self
            .layout
            .nodes
            .iter()
            .find(|plan| plan.node_id == node_id)
            .ok_or_else(|| OneboxError::InvalidArgument(format!("no node {node_id}")))?
            .name;
        let running = self
            .cluster
            .children
            .iter_mut()
            .find(|running| &running.name == name)
            .ok_or_else(|| OneboxError::InvalidArgument(format!("{name} is not running")))?;
        running.exit_reported = true;
        running.child.kill().map_err(io_error(&running.log))?;
        let _ = running.child.wait();
        Ok(())
    }
}

impl Drop for ToolCluster {
    fn drop(&mut self) {
        self.cluster.stop_all();
    }
}

/// `DIR/onebox.pid`: keeps two oneboxes out of one directory. Removed on drop.
struct PidFile {
    path: PathBuf,
}

impl PidFile {
    fn acquire(dir: &Path) -> Result<PidFile, OneboxError> {
        let path = dir.join(PID_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                if pid > 0 && pid != std::process::id() as i32 && process_exists(pid) {
                    return Err(OneboxError::Busy {
                        dir: dir.to_owned(),
                        pid,
                    });
                }
            }
        }
        std::fs::write(&path, format!("{}\n", std::process::id())).map_err(io_error(&path))?;
        Ok(PidFile { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// One node of the layout: its config file and identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// `node-<i>`: names its config, data directory and log.
    pub name: String,
    pub config_path: PathBuf,
    /// The node's id: `127.0.0.1:<port_base>` (its shard 0 address).
    pub node_id: String,
}

/// One meta of the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaPlan {
    /// `meta` (the only one) or `meta-<i>`: names its config and log.
    pub name: String,
    pub config_path: PathBuf,
    pub address: String,
}

/// The local etcd of a onebox with several metas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdPlan {
    /// Its client address, `127.0.0.1:port`.
    pub client: String,
    /// Its peer address, `127.0.0.1:port`.
    pub peer: String,
    pub data_dir: PathBuf,
}

/// The files of a onebox directory, written on the first start and reused.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
    /// The first meta's config and address.
    pub meta_config: PathBuf,
    pub meta_address: String,
    /// Every meta (one unless `--metas`).
    pub metas: Vec<MetaPlan>,
    /// The etcd that several metas share.
    pub etcd: Option<EtcdPlan>,
    pub nodes: Vec<NodePlan>,
}

impl Layout {
    /// Reads the configs in `dir` and writes the missing ones (meta's, and
    /// those of nodes `0..args.nodes`), on free ports.
    pub fn prepare(dir: &Path, args: &OneboxArgs) -> Result<Layout, OneboxError> {
        for sub in ["logs", "tuning"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io_error(&path))?;
        }
        let tuning = dir.join("tuning").join("default.toml");
        if !tuning.exists() {
            std::fs::write(&tuning, TUNING_DEFAULT).map_err(io_error(&tuning))?;
        }
        let mut picker = PortPicker::new();
        let (metas, etcd) = prepare_metas(dir, args, &mut picker)?;
        let meta_list = metas
            .iter()
            .map(|meta| toml_string(&meta.address))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::with_capacity(args.nodes);
        for index in 0..args.nodes {
            let name = format!("node-{index}");
            let config_path = dir.join(format!("{name}.toml"));
            let node_id = if config_path.exists() {
                let (port_base, shards) = read_node_config(&config_path)?;
                if shards != args.shards {
                    eprintln!(
                        "markab onebox: {} keeps its {shards} shard(s) (--shards {} applies to new nodes only)",
                        config_path.display(),
                        args.shards
                    );
                }
                format!("127.0.0.1:{port_base}")
            } else {
                let port_base = picker.pick(args.shards)?;
                let text = format!(
                    "# Written by markab onebox; reused on every start.\n[node]\ndata_dir = {}\nhost = \"127.0.0.1\"\nport_base = {port_base}\nshards = {}\npin = false\ntuning_dir = \"tuning\"\nmeta = [{}]\n",
                    toml_path(&dir.join(&name))?,
                    args.shards,
                    meta_list
                );
                write_new(&config_path, &text)?;
                format!("127.0.0.1:{port_base}")
            };
            nodes.push(NodePlan {
                name,
                config_path,
                node_id,
            });
        }
        let extra = dir.join(format!("node-{}.toml", args.nodes));
        if extra.exists() {
            eprintln!(
                "markab onebox: {} and any later node configs are not started (--nodes {}); their replicas stay unavailable",
                extra.display(),
                args.nodes
            );
        }
        Ok(Layout {
            dir: dir.to_owned(),
            meta_config: metas[0].config_path.clone(),
            meta_address: metas[0].address.clone(),
            metas,
            etcd,
            nodes,
        })
    }

    /// Every meta's address.
    pub fn meta_addresses(&self) -> Vec<String> {
        self.metas.iter().map(|meta| meta.address.clone()).collect()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }
}

/// The metas' configs (and etcd's ports with several metas): read back
/// when present, written on free ports when not. A directory keeps the
/// meta count it was first started with.
fn prepare_metas(
    dir: &Path,
    args: &OneboxArgs,
    picker: &mut PortPicker,
) -> Result<(Vec<MetaPlan>, Option<EtcdPlan>), OneboxError> {
    let single = dir.join(META_CONFIG);
    let first_of_group = dir.join("meta-0.toml");
    if (args.metas == 1 && first_of_group.exists()) || (args.metas > 1 && single.exists()) {
        let had = if single.exists() {
            "1 meta"
        } else {
            "several metas"
        };
        return Err(OneboxError::InvalidArgument(format!(
            "{} was first started with {had}; --metas {} needs a new --dir",
            dir.display(),
            args.metas
        )));
    }
    let read_or_write = |name: String, picker: &mut PortPicker, body: &dyn Fn(&str) -> String| {
        let config_path = dir.join(format!("{name}.toml"));
        let address = if config_path.exists() {
            read_meta_listen(&config_path)?
        } else {
            let port = picker.pick(1)?;
            let address = format!("127.0.0.1:{port}");
            let text = format!(
                "# Written by markab onebox; reused on every start.\n[meta]\nlisten = {}\n{}cluster_id = {}\n",
                toml_string(&address),
                body(&name),
                args.cluster_id
            );
            write_new(&config_path, &text)?;
            address
        };
        Ok::<_, OneboxError>(MetaPlan {
            name,
            config_path,
            address,
        })
    };
    if args.metas == 1 {
        let data_dir = toml_path(&dir.join("meta"))?;
        let meta = read_or_write("meta".into(), picker, &|_| {
            format!("data_dir = {data_dir}\n")
        })?;
        return Ok((vec![meta], None));
    }
    let etcd_config = dir.join(ETCD_CONFIG);
    let etcd = if etcd_config.exists() {
        let table = read_toml(&etcd_config)?;
        let field = |key: &str| {
            table
                .get(key)
                .and_then(|value| value.as_str())
                .map(str::to_owned)
                .ok_or_else(|| config_error(&etcd_config, &format!("{key} is missing")))
        };
        EtcdPlan {
            client: field("client")?,
            peer: field("peer")?,
            data_dir: dir.join("etcd"),
        }
    } else {
        let port = picker.pick(2)?;
        let plan = EtcdPlan {
            client: format!("127.0.0.1:{port}"),
            peer: format!("127.0.0.1:{}", port + 1),
            data_dir: dir.join("etcd"),
        };
        write_new(
            &etcd_config,
            &format!(
                "# Written by markab onebox; reused on every start.\nclient = {}\npeer = {}\n",
                toml_string(&plan.client),
                toml_string(&plan.peer)
            ),
        )?;
        plan
    };
    let store = format!(
        "store = \"etcd\"\netcd_endpoints = [{}]\netcd_prefix = \"/markab/{}\"\n",
        toml_string(&etcd.client),
        args.cluster_id
    );
    let mut metas = Vec::with_capacity(args.metas);
    for index in 0..args.metas {
        metas.push(read_or_write(format!("meta-{index}"), picker, &|_| {
            store.clone()
        })?);
    }
    Ok((metas, Some(etcd)))
}

/// `text` as a TOML string literal (quoted and escaped).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A path as a TOML string literal; paths that are not UTF-8 cannot be
/// written into a config.
fn toml_path(path: &Path) -> Result<String, OneboxError> {
    path.to_str().map(toml_string).ok_or_else(|| {
        OneboxError::InvalidArgument(format!("{}: --dir must be a UTF-8 path", path.display()))
    })
}

/// Writes `text` to a new file atomically (temporary file, then rename).
fn write_new(path: &Path, text: &str) -> Result<(), OneboxError> {
    let temporary = path.with_extension("toml.tmp");
    std::fs::write(&temporary, text).map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error(path))
}

fn read_toml(path: &Path) -> Result<toml::Table, OneboxError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    text.parse::<toml::Table>()
        .map_err(|error| OneboxError::Config {
            path: path.to_owned(),
            message: error.to_string(),
        })
}

fn config_error(path: &Path, message: &str) -> OneboxError {
    OneboxError::Config {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// `meta.listen` of a meta config.
fn read_meta_listen(path: &Path) -> Result<String, OneboxError> {
    let table = read_toml(path)?;
    table
        .get("meta")
        .and_then(|meta| meta.get("listen"))
        .and_then(|listen| listen.as_str())
        .map(str::to_string)
        .ok_or_else(|| config_error(path, "meta.listen is missing"))
}

/// `(node.port_base, node.shards)` of a node config onebox wrote.
fn read_node_config(path: &Path) -> Result<(u16, usize), OneboxError> {
    let table = read_toml(path)?;
    let node = table
        .get("node")
        .ok_or_else(|| config_error(path, "section [node] is missing"))?;
    let port_base = node
        .get("port_base")
        .and_then(|value| value.as_integer())
        .and_then(|value| u16::try_from(value).ok())
        .filter(|port| *port != 0)
        .ok_or_else(|| config_error(path, "node.port_base must be a port in 1..=65535"))?;
    let shards = node
        .get("shards")
        .and_then(|value| value.as_integer())
        .and_then(|value| usize::try_from(value).ok())
        .filter(|shards| (1..=SHARDS_PER_NODE_MAX).contains(shards))
        .ok_or_else(|| config_error(path, "node.shards must be a count in 1..=64"))?;
    Ok((port_base, shards))
}

/// Picks ranges of free consecutive 127.0.0.1 TCP ports and keeps them bound
/// until dropped, so that two picks never return the same port.
///
/// Candidates lie in [`PORT_PICK_LOW`] up to the start of the OS's ephemeral
/// range (`/proc/sys/net/ipv4/ip_local_port_range`), where the kernel does
/// not hand ports to outgoing connections; when that window is too small,
/// the OS picks the first port (port 0).
///
/// ```
/// let mut picker = markab::onebox::PortPicker::new();
/// let first = picker.pick(2).unwrap();
/// let other = picker.pick(1).unwrap();
/// assert!(other < first || other > first + 1);
/// ```
pub struct PortPicker {
    held: Vec<TcpListener>,
    window: Option<(u16, u16)>,
    seed: u64,
}

impl Default for PortPicker {
    fn default() -> PortPicker {
        PortPicker::new()
    }
}

impl PortPicker {
    /// A picker holding no port yet.
    pub fn new() -> PortPicker {
        let high = ephemeral_low().unwrap_or(32_768);
        let window = (high > PORT_PICK_LOW + 1000).then_some((PORT_PICK_LOW, high));
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        PortPicker {
            held: Vec::new(),
            window,
            seed: hasher.finish(),
        }
    }

    /// The first port of `count` consecutive free ports, all held until the
    /// picker is dropped.
    pub fn pick(&mut self, count: usize) -> Result<u16, OneboxError> {
        assert!(count >= 1);
        for _ in 0..PORT_PICK_ATTEMPTS_MAX {
            let first = match self.window {
                Some((low, high)) => {
                    let span = u64::from(high - low) - count as u64;
                    low + (self.next_random() % span) as u16
                }
                None => match TcpListener::bind(("127.0.0.1", 0)) {
                    Ok(listener) => match listener.local_addr() {
                        Ok(address) => address.port(),
                        Err(_) => continue,
                    },
                    Err(_) => continue,
                },
            };
            if usize::from(first) + count > usize::from(u16::MAX) {
                continue;
            }
            let bound: Result<Vec<TcpListener>, _> = (0..count)
                .map(|offset| TcpListener::bind(("127.0.0.1", first + offset as u16)))
                .collect();
            if let Ok(listeners) = bound {
                self.held.extend(listeners);
                return Ok(first);
            }
        }
        Err(OneboxError::NoFreePorts {
            count,
            attempts: PORT_PICK_ATTEMPTS_MAX,
        })
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: enough to spread candidates; not for security.
        let mut x = self.seed | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        x
    }
}

/// The first port of the OS's ephemeral range, when it can be read.
fn ephemeral_low() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A started child process and where its output goes.
struct Running {
    name: String,
    log: PathBuf,
    child: Child,
    /// Set once its exit has been reported.
    exit_reported: bool,
}

struct Cluster {
    /// etcd (with several metas), the metas, then the nodes (`node-<i>`)
    /// in order.
    children: Vec<Running>,
}

/// Starts meta, the nodes and the table. `Ok(false)`: a stop signal came
/// first.
fn start(
    args: &OneboxArgs,
    layout: &Layout,
    cluster: &mut Cluster,
    stop: &AtomicBool,
) -> Result<bool, OneboxError> {
    let timeout = Duration::from_secs(args.ready_timeout_s);
    let exe = std::env::current_exe().map_err(|source| OneboxError::Spawn {
        name: "markab (current executable)".into(),
        source,
    })?;
    println!(
        "markab onebox: starting meta at {} and {} node(s) in {}",
        layout.meta_addresses().join(","),
        layout.nodes.len(),
        layout.dir.display()
    );
    let _ = std::io::stdout().flush();
    if let Some(etcd) = &layout.etcd {
        let log = layout.log_path("etcd");
        if !spawn_ready(
            cluster,
            etcd_command(etcd)?,
            "etcd",
            &log,
            ETCD_READY,
            timeout,
            stop,
        )? {
            return Ok(false);
        }
    }
    for meta in &layout.metas {
        let log = layout.log_path(&meta.name);
        let command = markab_command(&exe, "meta", &meta.config_path);
        if !spawn_ready(
            cluster, command, &meta.name, &log, META_READY, timeout, stop,
        )? {
            return Ok(false);
        }
    }
    for node in &layout.nodes {
        let log = layout.log_path(&node.name);
        let command = markab_command(&exe, "replica", &node.config_path);
        if !spawn_ready(
            cluster, command, &node.name, &log, NODE_READY, timeout, stop,
        )? {
            return Ok(false);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| OneboxError::Io {
            path: layout.dir.clone(),
            source,
        })?;
    runtime.block_on(admin::prepare_cluster(args, layout, cluster, stop, timeout))
}

/// `markab ROLE --config CONFIG` from the running executable.
fn markab_command(exe: &Path, role: &str, config: &Path) -> Command {
    let mut command = Command::new(exe);
    command.arg(role).arg("--config").arg(config);
    command
}

/// The local etcd of a group of metas: one member, on loopback.
fn etcd_command(plan: &EtcdPlan) -> Result<Command, OneboxError> {
    let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .ok_or_else(|| {
            OneboxError::InvalidArgument(
                "--metas needs etcd (Debian's etcd-server; scripts/setup.sh installs it)".into(),
            )
        })?;
    let mut command = Command::new(binary);
    command
        .arg("--name")
        .arg("onebox")
        .arg("--data-dir")
        .arg(&plan.data_dir)
        .arg("--listen-client-urls")
        .arg(format!("http://{}", plan.client))
        .arg("--advertise-client-urls")
        .arg(format!("http://{}", plan.client))
        .arg("--listen-peer-urls")
        .arg(format!("http://{}", plan.peer))
        .arg("--initial-advertise-peer-urls")
        .arg(format!("http://{}", plan.peer))
        .arg("--initial-cluster")
        .arg(format!("onebox=http://{}", plan.peer));
    Ok(command)
}

/// Spawns one child (`command`, named `name`) and waits for `ready` in
/// its log. `Ok(false)`: stopped.
fn spawn_ready(
    cluster: &mut Cluster,
    mut command: Command,
    name: &str,
    log: &Path,
    ready: &str,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<bool, OneboxError> {
    let name = name.to_owned();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_error(log))?;
    let offset = file.metadata().map_err(io_error(log))?.len();
    let stderr = file.try_clone().map_err(io_error(log))?;
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr)
        // Its own process group: a terminal's Ctrl-C reaches onebox only,
        // and onebox stops the children in order.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child's own
    // process state. PR_SET_PDEATHSIG makes the child receive SIGTERM when
    // the thread that spawned it (onebox's main thread) dies, so a killed
    // onebox leaves no orphans.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| OneboxError::Spawn {
        name: name.clone(),
        source,
    })?;
    println!(
        "markab onebox: started {name} (pid {}), log {}",
        child.id(),
        log.display()
    );
    let _ = std::io::stdout().flush();
    cluster.children.push(Running {
        name: name.clone(),
        log: log.to_owned(),
        child,
        exit_reported: false,
    });
    let running = cluster.children.last_mut().expect("just pushed");
    let mut tail = LogTail::open(log, offset)?;
    let deadline = Instant::now() + timeout;
    loop {
        if tail.poll(ready)? {
            return Ok(true);
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            running.exit_reported = true;
            let _ = tail.poll(ready);
            return Err(OneboxError::ChildExited {
                name,
                status,
                log: log.to_owned(),
                tail: tail.last_lines(),
            });
        }
        if Instant::now() >= deadline {
            return Err(OneboxError::Timeout {
                what: format!("{name}'s ready line ({ready:?})"),
                timeout_s: timeout.as_secs(),
                log: log.to_owned(),
                tail: tail.last_lines(),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Follows a log file from an offset, line by line, with bounded memory.
pub(crate) struct LogTail {
    path: PathBuf,
    file: File,
    partial: Vec<u8>,
    recent: std::collections::VecDeque<String>,
}

impl LogTail {
    pub(crate) fn open(path: &Path, offset: u64) -> Result<LogTail, OneboxError> {
        let mut file = File::open(path).map_err(io_error(path))?;
        file.seek(SeekFrom::Start(offset)).map_err(io_error(path))?;
        Ok(LogTail {
            path: path.to_owned(),
            file,
            partial: Vec::new(),
            recent: std::collections::VecDeque::new(),
        })
    }

    /// Reads what was written since the last poll; returns whether a
    /// complete new line contains `needle`. Keeps the last
    /// [`LOG_TAIL_LINES_MAX`] lines for error messages.
    pub(crate) fn poll(&mut self, needle: &str) -> Result<bool, OneboxError> {
        let mut chunk = [0u8; 8192];
        let mut found = false;
        loop {
            let read = self.file.read(&mut chunk).map_err(io_error(&self.path))?;
            if read == 0 {
                return Ok(found);
            }
            for &byte in &chunk[..read] {
                if byte == b'\n' {
                    let line = String::from_utf8_lossy(&self.partial).into_owned();
                    self.partial.clear();
                    found |= line.contains(needle);
                    if self.recent.len() == LOG_TAIL_LINES_MAX {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(line);
                } else if self.partial.len() < LOG_LINE_BYTES_MAX {
                    self.partial.push(byte);
                }
            }
        }
    }

    pub(crate) fn last_lines(&self) -> Vec<String> {
        self.recent.iter().cloned().collect()
    }
}

impl Cluster {
    /// Watches the children until a stop signal; a child that exits is
    /// reported once on stderr and onebox goes on.
    fn supervise(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.report_exits();
            std::thread::sleep(SUPERVISE_INTERVAL);
        }
    }

    fn report_exits(&mut self) {
        for running in &mut self.children {
            if running.exit_reported {
                continue;
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                running.exit_reported = true;
                eprintln!(
                    "markab onebox: {} (pid {}) exited ({status}); see {}",
                    running.name,
                    running.child.id(),
                    running.log.display()
                );
            }
        }
    }

    /// SIGTERM to the nodes, then to the metas, then to etcd; SIGKILL to
    /// whatever still runs after [`STOP_TIMEOUT`]. Reaps every child.
    fn stop_all(&mut self) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        // Nodes first (they beacon to meta), the metas next, etcd (under
        // the metas) last; they were started in the reverse order.
        let first_node = self
            .children
            .iter()
            .position(|running| running.name.starts_with("node-"))
            .unwrap_or(self.children.len());
        let (infra, nodes) = self.children.split_at_mut(first_node);
        terminate(nodes, deadline);
        let etcd = usize::from(infra.first().is_some_and(|running| running.name == "etcd"));
        let (etcd, metas) = infra.split_at_mut(etcd);
        terminate(metas, deadline);
        terminate(etcd, deadline);
    }
}

/// Sends SIGTERM to every running child of `group`, waits until `deadline`
/// for them to exit, then kills and reaps the stragglers.
fn terminate(group: &mut [Running], deadline: Instant) {
    for running in group.iter_mut() {
        if let Ok(None) = running.child.try_wait() {
            // SAFETY: kill(2) on the pid of a child onebox started and has
            // not reaped yet, so the pid cannot have been reused.
            unsafe {
                libc::kill(running.child.id() as i32, libc::SIGTERM);
            }
        }
    }
    for running in group.iter_mut() {
        loop {
            match running.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!(
                        "markab onebox: {} (pid {}) did not stop within {} s of SIGTERM; killing it",
                        running.name,
                        running.child.id(),
                        STOP_TIMEOUT.as_secs()
                    );
                    let _ = running.child.kill();
                    let _ = running.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }
}

/// The start's calls to meta and to the nodes, through the client library.
pub(crate) mod admin {
    use super::*;
    use crate::client::{Client, ClientError, ClientOptions};
    use crate::wire::CreateTableRequest;

    /// Most probe keys tried to find one hash key per partition (the
    /// expected count is about `n ln n` for `n` partitions).
    const PROBE_KEYS_MAX: u64 = 16 * 1024 * 1024;
    /// Pause between rounds of a wait.
    const RETRY_INTERVAL: Duration = Duration::from_millis(200);

    /// Why a wait stopped early.
    enum Interrupt {
        Stopped,
        Failed(OneboxError),
    }

    /// Waits until meta lists every node alive, creates the table when
    /// absent and waits until each of its partitions answers. `Ok(false)`:
    /// a stop signal came first.
    pub(super) async fn prepare_cluster(
        args: &OneboxArgs,
        layout: &Layout,
        cluster: &mut Cluster,
        stop: &AtomicBool,
        timeout: Duration,
    ) -> Result<bool, OneboxError> {
        match prepare(args, layout, cluster, stop, timeout).await {
            Ok(()) => Ok(true),
            Err(Interrupt::Stopped) => Ok(false),
            Err(Interrupt::Failed(error)) => Err(error),
        }
    }

    async fn prepare(
        args: &OneboxArgs,
        layout: &Layout,
        cluster: &mut Cluster,
        stop: &AtomicBool,
        timeout: Duration,
    ) -> Result<(), Interrupt> {
        let meta_log = layout.log_path("meta");
        let client_error = |what: String| {
            move |source: ClientError| Interrupt::Failed(OneboxError::Client { what, source })
        };
        let client = Client::connect_meta(&layout.meta_addresses(), ClientOptions::default())
            .await
            .map_err(client_error(format!(
                "connect to meta at {}",
                layout.meta_addresses().join(",")
            )))?;

        // Every node registered and alive.
        let deadline = Instant::now() + timeout;
        loop {
            check(cluster, stop)?;
            let last_seen: Vec<String> = match client.list_nodes().await {
                Ok(nodes) => {
                    let alive =
                        |id: &String| nodes.iter().any(|node| &node.node == id && node.alive);
                    if layout.nodes.iter().all(|plan| alive(&plan.node_id)) {
                        break;
                    }
                    nodes
                        .iter()
                        .map(|node| {
                            format!(
                                "meta lists {} alive={} (last beacon {} ms ago)",
                                node.node, node.alive, node.last_beacon_ms_ago
                            )
                        })
                        .collect()
                }
                Err(error) => vec![format!("list_nodes failed: {error}")],
            };
            if Instant::now() >= deadline {
                return Err(Interrupt::Failed(OneboxError::Timeout {
                    what: format!("registration of {} node(s) with meta", layout.nodes.len()),
                    timeout_s: timeout.as_secs(),
                    log: meta_log,
                    tail: last_seen,
                }));
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }

        // The table, created once.
        let tables = client
            .list_tables(false)
            .await
            .map_err(client_error("list tables".into()))?;
        if let Some(table) = tables.iter().find(|table| table.name == args.table) {
            println!(
                "markab onebox: table {} exists (app id {}, {} partitions)",
                table.name, table.app_id, table.partition_count
            );
        } else {
            let request = CreateTableRequest {
                table: args.table.clone(),
                partition_count: args.partitions as i32,
                replica_count: replica_count(args),
                envs: Vec::new(),
                success_if_exist: true,
            };
            let info = client
                .create_table(request)
                .await
                .map_err(client_error(format!("create table {}", args.table)))?;
            println!(
                "markab onebox: created table {} (app id {}, {} partitions, {} replica(s))",
                info.name, info.app_id, info.partition_count, info.replica_count
            );
        }
        let _ = std::io::stdout().flush();

        // Every partition answers.
        let deadline = Instant::now() + timeout;
        let table = client
            .open_table(&args.table)
            .await
            .map_err(client_error(format!("open table {}", args.table)))?;
        let probes = probe_keys(table.partition_count());
        for (partition, hash_key) in probes.iter().enumerate() {
            loop {
                check(cluster, stop)?;
                match table.exist(hash_key.as_bytes(), b"").await {
                    Ok(_) => break,
                    Err(error) if Instant::now() >= deadline => {
                        return Err(Interrupt::Failed(OneboxError::Timeout {
                            what: format!("partition {partition} of table {}", args.table),
                            timeout_s: timeout.as_secs(),
                            log: layout.dir.join("logs"),
                            tail: vec![format!("last answer: {error}")],
                        }));
                    }
                    Err(error) => {
                        tracing::debug!(partition, %error, "partition not served yet");
                        tokio::time::sleep(RETRY_INTERVAL).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Fails when a stop signal came or a child exited.
    fn check(cluster: &mut Cluster, stop: &AtomicBool) -> Result<(), Interrupt> {
        if stop.load(Ordering::Relaxed) {
            return Err(Interrupt::Stopped);
        }
        for running in &mut cluster.children {
            if let Ok(Some(status)) = running.child.try_wait() {
                running.exit_reported = true;
                return Err(Interrupt::Failed(OneboxError::ChildExited {
                    name: running.name.clone(),
                    status,
                    log: running.log.clone(),
                    tail: Vec::new(),
                }));
            }
        }
        Ok(())
    }

    /// One hash key per partition of a table of `partition_count`
    /// partitions, by index.
    pub(crate) fn probe_keys(partition_count: u32) -> Vec<String> {
        let count = partition_count.max(1) as usize;
        let mut keys: Vec<Option<String>> = vec![None; count];
        let mut missing = count;
        let mut candidate = 0u64;
        while missing > 0 && candidate < PROBE_KEYS_MAX {
            let key = format!("onebox-probe-{candidate}");
            let index = crate::key::partition_index(
                crate::key::crc64(key.as_bytes()),
                partition_count.max(1),
            ) as usize;
            if keys[index].is_none() {
                keys[index] = Some(key);
                missing -= 1;
            }
            candidate += 1;
        }
        keys.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> OneboxArgs {
        OneboxArgs {
            dir: dir.to_owned(),
            nodes: 3,
            shards: 2,
            table: "temp".into(),
            partitions: 8,
            replicas: Some(1),
            ready_timeout_s: READY_TIMEOUT_DEFAULT_S,
            cluster_id: 1,
            metas: 1,
        }
    }

    // Proves the first prepare writes meta's and every node's config on
    // distinct free ports, and a later prepare reads the same layout back
    // without rewriting a file.
    #[test]
    fn layout_is_written_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Layout::prepare(dir.path(), &args(dir.path())).unwrap();
        assert_eq!(first.nodes.len(), 3);
        let mut ports: Vec<u16> = vec![first
            .meta_address
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()];
        for node in &first.nodes {
            let (port_base, shards) = read_node_config(&node.config_path).unwrap();
            assert_eq!(shards, 2);
            assert_eq!(node.node_id, format!("127.0.0.1:{port_base}"));
            ports.extend([port_base, port_base + 1]);
            let text = std::fs::read_to_string(&node.config_path).unwrap();
            assert!(
                text.contains(&format!("meta = [{:?}]", first.meta_address)),
                "{text}"
            );
            assert!(text.contains("pin = false"), "{text}");
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "distinct ports: {ports:?}");
        let meta_text = std::fs::read_to_string(&first.meta_config).unwrap();
        let tuning = dir.path().join("tuning/default.toml");
        assert!(tuning.is_file());

        let mut more = args(dir.path());
        more.nodes = 4;
        let second = Layout::prepare(dir.path(), &more).unwrap();
        assert_eq!(second.meta_address, first.meta_address);
        assert_eq!(second.nodes[..3], first.nodes[..]);
        assert_eq!(second.nodes.len(), 4);
        assert_eq!(
            std::fs::read_to_string(&first.meta_config).unwrap(),
            meta_text
        );
    }

    // Proves a config that lost its port is reported with the file and key.
    #[test]
    fn damaged_node_config_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::prepare(dir.path(), &args(dir.path())).unwrap();
        std::fs::write(&layout.nodes[1].config_path, "[node]\nshards = 1\n").unwrap();
        let error = Layout::prepare(dir.path(), &args(dir.path())).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("node-1.toml"), "{message}");
        assert!(message.contains("node.port_base"), "{message}");
    }

    // Proves out-of-range arguments are refused with the flag's name.
    #[test]
    fn validate_rejects_out_of_range_arguments() {
        let dir = Path::new("/nonexistent");
        assert!(validate(&args(dir)).is_ok());
        type Change = fn(&mut OneboxArgs);
        let cases: Vec<(Change, &str)> = vec![
            (|a| a.nodes = 0, "--nodes 0"),
            (|a| a.nodes = NODES_MAX + 1, "--nodes 65"),
            (|a| a.shards = 0, "--shards 0"),
            (|a| a.partitions = 6, "--partitions"),
            (|a| a.replicas = Some(0), "--replicas 0"),
            (|a| a.replicas = Some(4), "--replicas 4"),
            (|a| a.table = "no spaces".into(), "--table"),
            (|a| a.ready_timeout_s = 0, "--ready-timeout-s"),
            (|a| a.cluster_id = 0, "--cluster-id"),
            (|a| a.cluster_id = 128, "--cluster-id"),
        ];
        for (change, needle) in cases {
            let mut bad = args(dir);
            change(&mut bad);
            let message = validate(&bad).unwrap_err().to_string();
            assert!(message.contains(needle), "{message}");
        }
    }

    // Proves the port picker hands out held, non-overlapping ranges.
    #[test]
    fn port_picker_ranges_do_not_overlap() {
        let mut picker = PortPicker::new();
        let mut taken = Vec::new();
        for count in [1usize, 3, 2, 4] {
            let first = picker.pick(count).unwrap();
            for port in first..first + count as u16 {
                assert!(!taken.contains(&port), "port {port} picked twice");
                assert!(
                    TcpListener::bind(("127.0.0.1", port)).is_err(),
                    "port {port} held"
                );
                taken.push(port);
            }
        }
        drop(picker);
        assert!(
            TcpListener::bind(("127.0.0.1", taken[0])).is_ok(),
            "released on drop"
        );
    }

    // Proves the log tail returns only lines written after the offset, keeps
    // an unfinished line until its newline, and bounds what it quotes.
    #[test]
    fn log_tail_follows_new_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "old line\n").unwrap();
        let mut tail = LogTail::open(&path, 9).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"first\nsec").unwrap();
        assert!(tail.poll("first").unwrap());
        assert!(!tail.poll("old line").unwrap(), "nothing before the offset");
        assert!(!tail.poll("sec").unwrap(), "an unfinished line waits");
        file.write_all(b"ond\n").unwrap();
        assert!(tail.poll("second").unwrap(), "completed by its newline");
        assert_eq!(tail.last_lines(), vec!["first", "second"]);
        for index in 0..20 {
            writeln!(file, "line {index}").unwrap();
        }
        assert!(tail.poll("line 7").unwrap());
        let last = tail.last_lines();
        assert_eq!(last.len(), LOG_TAIL_LINES_MAX);
        assert_eq!(last.last().unwrap(), "line 19");
    }

    // Proves a second onebox is refused while the pid file names a live
    // process, and a stale pid file is taken over.
    #[test]
    fn pid_file_keeps_out_a_second_onebox() {
        let dir = tempfile::tempdir().unwrap();
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(dir.path().join(PID_FILE), format!("{}\n", sleeper.id())).unwrap();
        let error = PidFile::acquire(dir.path()).err().expect("refused");
        assert!(matches!(error, OneboxError::Busy { .. }), "{error}");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        let pid_file = PidFile::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(PID_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(pid_file);
        assert!(!dir.path().join(PID_FILE).exists());
    }

    // Proves the probe keys cover every partition exactly once, in order.
    #[test]
    fn probe_keys_cover_every_partition() {
        for count in [1u32, 8, 64] {
            let keys = admin::probe_keys(count);
            assert_eq!(keys.len(), count as usize);
            for (index, key) in keys.iter().enumerate() {
                let partition =
                    crate::key::partition_index(crate::key::crc64(key.as_bytes()), count);
                assert_eq!(partition as usize, index);
            }
        }
    }
}
