//! The replica node (`markab replica`): one pinned glommio executor per
//! shard, each owning its listener, its partition replicas (one RocksDB
//! each) and its scan cursors; requests for another shard's partitions are
//! forwarded over the bounded channel mesh.
//!
//! In this standalone mode the node serves the tables listed in its config
//! file, every partition with one replica; partition `p` lives on shard
//! `p % shards`.

pub mod beacon;
pub mod connection;
pub mod cursors;
pub mod dup;
pub mod peer;
pub mod shard;
pub mod thft;

use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use futures::channel::oneshot;
use futures::StreamExt;
use glommio::channels::channel_mesh::{Receivers, Senders};
use markab_shards::runtime::{ListenSpec, ShardContext, ShardRuntime, StopSignal};
use markab_shards::topology::Topology;
use markab_shards::tuning::load_tuning;

use crate::config::NodeConfig;
use crate::config::TableConfig;
use crate::metrics::{NodeMetrics, ShardMetrics};
use crate::replication::config::ReplicationSettings;
use crate::server::shard::{NodeLayout, NodeMode, ShardState};
use markab_wire::codec::Encoder;
use markab_wire::{Envelope, ErrorCode, Gpid, OpError, Request, Response};

/// How often each shard compares its log's size with `log_bytes_max`.
const LOG_SIZE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Every this many size checks (500 ms) a shard also drops idle scan cursors
/// and deletes log segments every replica has flushed past.
const HOUSEKEEPING_EVERY_ROUNDS: u64 = 10;
/// How often each shard feeds the lease and the time to its replica cores
/// (their timers: Prepare resend, idle commit push, prepare timeout).
const REPLICA_TICK_INTERVAL: Duration = Duration::from_millis(10);

/// A message between shards.
pub enum MeshMessage {
    /// A request body for a partition the receiving shard owns; the reply
    /// frame goes back on `reply`.
    Forward {
        body: Vec<u8>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// Cluster mode: a peer message for a replica the receiving shard hosts.
    Peer {
        gpid: Gpid,
        request: markab_wire::PeerRequest,
    },
}

/// What a shard's connection tasks share.
pub struct ShardServer {
    pub state: ShardState,
    /// The shard's one reply encoder (its builder is reused by every
    /// request; borrowed only while encoding, never across an await).
    encoder: RefCell<Encoder>,
    pub metrics: Rc<ShardMetrics>,
    pub mesh_senders: Senders<MeshMessage>,
    pub stop: StopSignal,
    pub request_bytes_max: usize,
    /// The shard's listener address, as replies name their server.
    pub address: String,
}

impl ShardServer {
    /// The reply frame for `response`; a response too large to encode is
    /// replaced by an `INTERNAL` error naming the problem.
    pub fn encode_reply(&self, request_id: u64, response: &Response) -> Vec<u8> {
        let mut encoder = self.encoder.borrow_mut();
        let mut frame = Vec::new();
        if let Err(error) = encoder.response_frame(request_id, response, &mut frame) {
            let error = OpError::new(
                ErrorCode::Internal,
                format!("cannot encode the reply: {error}"),
            );
            encoder
                .response_frame(request_id, &Err(error), &mut frame)
                .expect("a short error reply always encodes");
        }
        frame
    }

    /// The Markab body of a request (what the mesh forwards to the owning
    /// shard), for requests that came in another protocol. A request too
    /// large to encode yields an empty body, which the owner answers with
    /// `BAD_FRAME`.
    pub fn encode_request_body(&self, envelope: &Envelope, request: &Request) -> Vec<u8> {
        let mut encoder = self.encoder.borrow_mut();
        let mut frame = Vec::new();
        match encoder.request_frame(envelope, request, &mut frame) {
            Ok(()) => frame.split_off(markab_wire::frame::FRAME_HEADER_BYTES),
            Err(_) => Vec::new(),
        }
    }
}

/// An open-files limit below which a node warns at start. Each replica's
/// RocksDB instance holds a dozen or more descriptors (its lock, info log,
/// manifest and directories, and every table file it has open), each
/// connection one: 64 replicas on a node already need over a thousand.
pub const OPEN_FILES_WANTED: u64 = 16_384;

/// Raises the process's soft open-files limit to its hard limit (login
/// shells and systemd services start at a soft 1024); warns when even the
/// hard limit is below [`OPEN_FILES_WANTED`].
fn raise_open_files_limit() {
    match rlimit::utils::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < OPEN_FILES_WANTED => tracing::warn!(
            limit,
            wanted = OPEN_FILES_WANTED,
            "the open-files limit is low for a node (each replica holds a dozen or more files open): raise the hard limit (ulimit -Hn, or LimitNOFILE= in a systemd unit)"
        ),
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
    }
}

/// Runs a standalone node until SIGTERM or Ctrl-C, then shuts it down
/// cleanly. Prints one `ready` line on stdout once every shard listens.
pub fn run_node(config: NodeConfig) -> anyhow::Result<()> {
    crate::backup::set_store_credentials(config.backup_credentials.clone());
    raise_open_files_limit();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    // Grows with every start (the node's replicas lost their place in
    // their configurations), so meta tells a restart from a late beacon.
    let incarnation = {
        let wall_clock_ns = markab_core::wall_clock::unix_ms().saturating_mul(1_000_000);
        shard::io::next_incarnation(&config.data_dir, wall_clock_ns).map_err(anyhow::Error::msg)?
    };
    let topology = Topology::detect().context("cannot read the CPU topology")?;
    let plan = topology
        .plan(config.shards.clone())
        .with_context(|| format!("{}: node.shards", config.path.display()))?;
    let cpus: Vec<usize> = plan.slots.iter().map(|slot| slot.cpu).collect();
    let tunings = load_tuning(&config.tuning_dir, &cpus)?;
    let metrics = NodeMetrics::new();
    let metrics_address = match config.metrics_listen {
        Some(address) => Some(crate::metrics::serve(metrics.registry.clone(), address)?),
        None => None,
    };
    // The cores use the window and timer settings; the lease a node serves
    // under is what meta grants (meta checks grace > lease > 2 x beacon at
    // its start), so the local lease and grace only need to validate.
    let defaults = ReplicationSettings::default();
    let lease_ms = defaults.lease_ms.max(2 * config.beacon_interval_ms + 1);
    let replication = ReplicationSettings {
        beacon_interval_ms: config.beacon_interval_ms,
        lease_ms,
        grace_ms: defaults
            .grace_ms
            .max(lease_ms + config.beacon_interval_ms + 1),
        prepare_timeout_ms: config.prepare_timeout_ms,
        ..defaults
    };
    replication
        .validate()
        .with_context(|| format!("{}: replication settings", config.path.display()))?;
    // One bounded channel per shard for its part of every beacon ack.
    let (ack_senders, ack_receivers): (Vec<_>, Vec<_>) = plan
        .slots
        .iter()
        .map(|_| futures::channel::mpsc::channel(beacon::SHARD_ACKS_MAX))
        .unzip();
    let node = Arc::new(NodeSettings {
        metrics,
        tables: config.tables.clone(),
        meta: config.meta.clone(),
        replication,
        data_dir: config.data_dir.clone(),
        layout: OnceLock::new(),
        ack_receivers: std::sync::Mutex::new(ack_receivers.into_iter().map(Some).collect()),
        failure: std::sync::Mutex::new(None),
    });
    let node_for_exit = node.clone();
    let node_for_beacons = node.clone();
    let listen = ListenSpec {
        host: config.host,
        port_base: config.port_base,
    };
    let runtime = ShardRuntime::start(&plan, tunings, listen, config.pin, move |context| {
        let node = node.clone();
        async move { shard_main(context, node).await }
    })?;
    let stop = runtime.stop_handle();
    let beacon_threads = if config.meta.is_empty() {
        Vec::new()
    } else {
        // Every shard builds the same layout; the first one to start
        // publishes it.
        let layout = loop {
            if let Some(layout) = node_for_beacons.layout.get() {
                break layout.clone();
            }
            if stop.is_stopped() {
                break Arc::new(NodeLayout::new(NodeMode::Cluster, Vec::new()));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(node_id) = layout.addresses.first() {
            let jobs = crate::backup::node::BackupJobs::start(
                config.data_dir.clone(),
                node_id.to_string(),
                config.backup_upload_bytes_per_second,
                Some(node_for_beacons.metrics.clone()),
            )
            .context("cannot start the backup worker")?;
            let _ = layout.backup_jobs.set(jobs);
            let shipper = dup::DupShipper::start().context("cannot start the dup shipper")?;
            let _ = layout.dup_shipper.set(shipper);
        }
        beacon::start(
            layout,
            config.meta.clone(),
            Duration::from_millis(config.beacon_interval_ms),
            incarnation,
            ack_senders,
            stop.clone(),
        )
        .context("cannot start the beacon threads")?
    };
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("cannot install signal handlers")?;
    let signal_handle = signals.handle();
    let stop_on_signal = stop.clone();
    let signal_thread = std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "stopping");
            stop_on_signal.stop();
        }
    });
    // Ready once every shard opened its partitions (a shard that cannot
    // stops the node, which then prints no ready line).
    let shard_count = runtime.addresses().len();
    loop {
        let opened = node_for_exit
            .layout
            .get()
            .map_or(0, |layout| layout.shards_ready.load(Ordering::Acquire));
        if opened >= shard_count || stop.is_stopped() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let addresses: Vec<String> = runtime.addresses().iter().map(|a| a.to_string()).collect();
    let metrics_note = metrics_address
        .map(|address| format!(" metrics=http://{address}/metrics"))
        .unwrap_or_default();
    if !stop.is_stopped() {
        println!(
            "markab replica ready: {} shard(s) at {} data_dir={}{metrics_note}",
            addresses.len(),
            addresses.join(","),
            config.data_dir.display()
        );
        let _ = std::io::stdout().flush();
    }
    let result = runtime.join();
    // Every shard returned: stop the beacon threads too (a shard that failed
    // to open ends the runtime without a signal).
    stop.stop();
    for thread in beacon_threads {
        let _ = thread.join();
    }
    signal_handle.close();
    let _ = signal_thread.join();
    result?;
    // A shard that could not open, or whose log failed, stopped the node:
    // that is a failure, and the exit status says so.
    if let Some(reason) = node_for_exit.failure.lock().expect("failure lock").take() {
        anyhow::bail!("the node stopped: {reason}");
    }
    println!("markab replica stopped");
    Ok(())
}

/// What every shard gets from the node's config.
struct NodeSettings {
    metrics: Arc<NodeMetrics>,
    tables: Vec<TableConfig>,
    meta: Vec<String>,
    /// The replica cores' settings (cluster mode).
    replication: ReplicationSettings,
    data_dir: PathBuf,
    layout: OnceLock<Arc<NodeLayout>>,
    /// Cluster mode: each shard's end of its beacon-ack channel, taken by
    /// the shard at start.
    ack_receivers:
        std::sync::Mutex<Vec<Option<futures::channel::mpsc::Receiver<beacon::ShardAck>>>>,
    /// Why a shard stopped the node (the first reason), if one did.
    failure: std::sync::Mutex<Option<String>>,
}

impl NodeSettings {
    /// Records why the node must stop (the first reason wins).
    fn fail(&self, reason: String) {
        let mut failure = self.failure.lock().expect("failure lock");
        if failure.is_none() {
            *failure = Some(reason);
        }
    }
}

/// The life of one shard: open its partitions, then accept connections and
/// serve forwarded requests until stopped.
async fn shard_main(context: ShardContext<MeshMessage>, node: Arc<NodeSettings>) {
    let ShardContext {
        shard,
        tuning,
        listener,
        addresses,
        mesh,
        stop,
        ..
    } = context;
    let mode = if node.meta.is_empty() {
        NodeMode::Standalone {
            tables: node.tables.clone(),
        }
    } else {
        NodeMode::Cluster
    };
    // One layout for the whole node (its hosted registry is node-wide);
    // every shard sees the same addresses, so the first one builds it.
    let layout = node
        .layout
        .get_or_init(|| Arc::new(NodeLayout::new(mode, addresses)))
        .clone();
    let state =
        match ShardState::open(shard, layout, &node.data_dir, &tuning, node.replication).await {
            Ok(state) => state,
            Err(error) => {
                // The node cannot serve without its partitions. Returning from a
                // shard stops every shard (see `ShardRuntime::start`).
                eprintln!("shard {shard}: cannot open partitions: {error}");
                node.fail(format!("shard {shard} cannot open its partitions: {error}"));
                return;
            }
        };
    state.layout.shards_ready.fetch_add(1, Ordering::AcqRel);
    tracing::info!(shard, partitions = state.partition_count(), "shard serving");
    let acks = node.ack_receivers.lock().expect("ack receivers lock")[shard].take();
    let (mesh_senders, mesh_receivers) = (mesh.senders, mesh.receivers);
    let metrics = Rc::new(node.metrics.shard(shard));
    let flush_metrics = metrics.clone();
    state
        .log()
        .set_flush_observer(Box::new(move |sample| flush_metrics.observe_flush(sample)));
    let address = state.layout.addresses[shard].to_string();
    let server = Rc::new(ShardServer {
        address,
        encoder: RefCell::new(Encoder::new()),
        metrics,
        state,
        mesh_senders,
        stop: stop.clone(),
        request_bytes_max: tuning.request_bytes_max,
    });
    spawn_mesh_receivers(server.clone(), mesh_receivers);
    // Standalone or cluster, a shard runs the same replica host: the
    // durability pump and the ticker always; learners only come in a
    // cluster, but their pumps cost nothing while idle.
    // A failed write of durable state — the log (a full or failing disk),
    // a replica's ballot, copy marker or log floor — fails the replicas
    // that needed it, which then serve nothing until the node restarts on
    // a good disk: the node stops (fail-stop), non-zero, naming the cause
    // (**disk-failure-stops-the-node**). Otherwise a sole primary that
    // cannot record its ballot would be reinstated by meta, ballot after
    // ballot, and never serve again.
    let (log_failed_sender, log_failed) = futures::channel::oneshot::channel::<()>();
    let pump = server.clone();
    glommio::spawn_local(async move { pump.state.durability_pump().await }).detach();
    let watcher = server.clone();
    let watcher_node = node.clone();
    glommio::spawn_local(async move {
        if let Some(reason) = watcher.state.disk_failed().await {
            let shard = watcher.state.shard();
            eprintln!("shard {shard}: {reason}; the node stops");
            watcher_node.fail(format!("shard {shard}: {reason}"));
            let _ = log_failed_sender.send(());
        }
    })
    .detach();
    let mut log_failed = log_failed;
    // Copies and log reads for learners are background work: a task
    // queue of their own with a tenth of the default shares, so they
    // yield to requests under contention (reads run on the blocking
    // pool; a copy exports 256 KiB at a time, paced).
    let background = glommio::executor().create_task_queue(
        glommio::Shares::Static(BACKGROUND_SHARES),
        glommio::Latency::NotImportant,
        "learners",
    );
    let copies = server.clone();
    spawn_background(background, async move { copies.state.copy_pump().await });
    let reads = server.clone();
    spawn_background(background, async move { reads.state.learn_pump().await });
    let ticker = server.clone();
    glommio::spawn_local(async move {
        while !ticker.stop.is_stopped() {
            glommio::timer::sleep(REPLICA_TICK_INTERVAL).await;
            ticker.state.tick_replicas();
        }
    })
    .detach();
    // Shipping work for duplications goes to the node's shipper thread;
    // this only gathers it, in the background queue.
    let shipping = server.clone();
    spawn_background(background, async move {
        while !shipping.stop.is_stopped() {
            glommio::timer::sleep(dup::SHIP_INTERVAL).await;
            shipping.state.offer_dup_work();
        }
    });
    if let Some(mut acks) = acks {
        let applier = server.clone();
        glommio::spawn_local(async move {
            while let Some(ack) = acks.next().await {
                applier.state.apply_ack(ack);
            }
        })
        .detach();
    }
    let housekeeper = server.clone();
    let log_bytes_max = tuning.log_bytes_max;
    glommio::spawn_local(async move {
        let mut rounds: u64 = 0;
        while !housekeeper.stop.is_stopped() {
            glommio::timer::sleep(LOG_SIZE_CHECK_INTERVAL).await;
            rounds += 1;
            let full_round = rounds.is_multiple_of(HOUSEKEEPING_EVERY_ROUNDS);
            if full_round {
                housekeeper.state.expire_cursors();
                housekeeper.state.update_gauges(&housekeeper.metrics);
            }
            // The size check is cheap; the flushed-decree pass runs when the
            // log is over its bound, and every full round.
            if full_round || housekeeper.state.log().total_bytes() > log_bytes_max {
                if let Err(error) = housekeeper.state.collect_log_garbage(log_bytes_max) {
                    tracing::warn!(shard, %error, "mutation log garbage collection failed");
                }
            }
        }
    })
    .detach();

    let connections_max = tuning.connections_max;
    let open_connections = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let stopping = futures::future::select(Box::pin(server.stop.stopped()), &mut log_failed);
        let accepted = futures::future::select(Box::pin(listener.accept()), stopping).await;
        let stream = match accepted {
            futures::future::Either::Left((Ok(stream), _)) => stream,
            futures::future::Either::Left((Err(error), _)) => {
                tracing::warn!(shard, %error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
            futures::future::Either::Right(_) => break,
        };
        if open_connections.get() >= connections_max {
            tracing::warn!(shard, connections_max, "refusing connection: too many open");
            drop(stream);
            continue;
        }
        if let Err(error) = markab_shards::listener::configure_stream(&stream) {
            tracing::debug!(shard, %error, "cannot configure accepted connection");
            continue;
        }
        open_connections.set(open_connections.get() + 1);
        let server = server.clone();
        let open_connections = open_connections.clone();
        glommio::spawn_local(async move {
            connection::serve_connection(server, stream).await;
            open_connections.set(open_connections.get() - 1);
        })
        .detach();
    }
    server.mesh_senders.close();
    server.state.close().await;
    tracing::info!(shard, "shard stopped");
}

/// Shares of the task queue that runs copies and log reads for learners
/// (a tenth of the default 1,000 that requests run with).
const BACKGROUND_SHARES: usize = 100;

/// Runs `task` in the background task queue `queue`.
fn spawn_background(
    queue: glommio::TaskQueueHandle,
    task: impl std::future::Future<Output = ()> + 'static,
) {
    match glommio::spawn_local_into(task, queue) {
        Ok(handle) => {
            handle.detach();
        }
        Err(error) => tracing::error!(%error, "cannot start a background task"),
    }
}

/// One task per peer shard, serving the requests it forwards here.
fn spawn_mesh_receivers(server: Rc<ShardServer>, mut receivers: Receivers<MeshMessage>) {
    for (_peer, mut stream) in receivers.streams() {
        let server = server.clone();
        glommio::spawn_local(async move {
            while let Some(message) = stream.next().await {
                match message {
                    MeshMessage::Peer { gpid, request } => server.state.on_peer(gpid, request),
                    MeshMessage::Forward { body, reply } => {
                        let server = server.clone();
                        // Each request runs as its own task so writes share log syncs.
                        glommio::spawn_local(async move {
                            let frame = connection::serve_forwarded(&server, &body).await;
                            // The asking connection may be gone; nothing to do then.
                            let _ = reply.send(frame);
                        })
                        .detach();
                    }
                }
            }
        })
        .detach();
    }
}
