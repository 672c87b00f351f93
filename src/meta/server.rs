//! Meta's I/O layer: a tokio TCP server in front of the [`MetaState`]
//! state machine and a [`MetaStore`].
//!
//! One actor thread owns the state and the store; connections send it
//! requests over a bounded queue and wait for the answer. For a request that
//! changes persistent data the actor writes the store first, commits the
//! state second and answers last (invariant "persist before effect"); when
//! the write fails the state is unchanged and the client gets
//! `STORAGE_ERROR`. A ticker feeds the actor a tick every
//! [`TICK_INTERVAL_MS`], or every half beacon interval with replication on
//! (a tick is where dead members are replaced; the new configuration is
//! stored before it is committed, like any change).
//!
//! Connections read frames with [`FrameDecoder`] and answer in order, one
//! request at a time (meta is not on the data path). A framing error or an
//! undecodable body gets a `BAD_FRAME` reply (request id 0 when unknown) and
//! a closed connection; data requests other than `query_route` get
//! `INVALID_ARGUMENT`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use markab_core::meta::leader::{LeaderGate, Leadership};
use markab_core::meta::state::RemoteFacts;
use markab_core::meta::state::{BackupWork, RestoreSource};
use markab_wire::codec::{self, Encoder};
use markab_wire::frame::{FrameDecoder, FrameError, MessageKind};
use markab_wire::message::{BackupRequest, DupRequest, ErrorCode, OpError, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::meta::state::{MetaData, MetaState, MetaTime};
use crate::meta::store::{MetaStore, MetaStoreError};

/// How often meta's placement metrics (replicas and primaries per node and
/// shard, balancer moves) are brought up to date.
const PLACEMENT_METRICS_INTERVAL_MS: u64 = 1_000;

/// How often the actor gets a tick without replication (drop-hold expiry,
/// forgetting tables).
pub const TICK_INTERVAL_MS: u64 = 500;
/// Most requests waiting for the actor; senders wait when it is full.
pub const ACTOR_QUEUE_MAX: usize = 1_024;
/// Most open client and node connections; further accepts wait.
pub const CONNECTIONS_MAX: usize = 1_024;
/// Largest request body meta accepts (16 MiB: a beacon of a node hosting
/// many replicas fits with a wide margin).
pub const META_REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Bytes read from a socket per read call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

const _: () = assert!(META_REQUEST_BYTES_MAX <= markab_wire::frame::FRAME_BODY_BYTES_MAX);

pub use markab_core::meta::step::{execute_change, execute_step, execute_tick};

mod thft;

/// Both of meta's clocks now (docs/DESIGN.md, "Clocks").
pub fn meta_now() -> MetaTime {
    MetaTime {
        monotonic_ms: crate::clock::monotonic_ms(),
        unix_ms: crate::clock::unix_ms(),
    }
}

enum ActorInput {
    Request {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    Tick,
    /// A restore whose backup's manifest the connection read.
    Restore {
        table: String,
        source: RestoreSource,
        reply: oneshot::Sender<Response>,
    },
    /// A `dup add` whose remote cluster the connection asked.
    AddDup {
        request: Request,
        remote: RemoteFacts,
        reply: oneshot::Sender<Response>,
    },
    /// The outcome of a backup's IO work ([`BackupWork`]).
    BackupWorkDone {
        work: BackupWork,
        outcome: Result<(), String>,
    },
}

/// A handle to the actor thread that owns the state and the store.
#[derive(Clone)]
struct Actor {
    sender: mpsc::Sender<ActorInput>,
}

impl Actor {
    /// Starts the actor thread; it ends when every handle is dropped.
    /// `leadership` carries what the campaign learns (a group's meta);
    /// a sole meta's gate has none.
    fn start(
        mut gate: LeaderGate,
        mut store: Box<dyn MetaStore>,
        mut leadership: Option<watch::Receiver<LeaderNews>>,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<(Actor, std::thread::JoinHandle<()>)> {
        let (sender, mut receiver) = mpsc::channel(ACTOR_QUEUE_MAX);
        // Weak: the actor ends once every connection and the ticker are
        // gone, whatever backup work is still out.
        let results = sender.downgrade();
        let thread = std::thread::Builder::new()
            .name("markab-meta-state".into())
            .spawn(move || {
                let mut placement_observed_ms = None;
                let mut logged: Option<(u64, LoggedBallots)> = None;
                let mut backups = BackupDriver::new(runtime, results);
                while let Some(input) = receiver.blocking_recv() {
                    // Durations on the monotonic clock, the wall clock for
                    // display and hold times (**durations-are-monotonic**).
                    let now = meta_now();
                    if let Some(news) = leadership.as_mut() {
                        if news.has_changed().unwrap_or(false) {
                            let (leadership, members) = news.borrow_and_update().clone();
                            gate.set_leadership(leadership, members);
                        }
                    }
                    match input {
                        ActorInput::Request { request, reply } => {
                            let started = std::time::Instant::now();
                            let response = gate.request(store.as_mut(), &request, now);
                            if let Some(state) = gate.state() {
                                crate::metrics::meta_metrics().observe(
                                    &request,
                                    started.elapsed(),
                                    &response,
                                    state.data(),
                                );
                            }
                            log_term_reconfigurations(&mut logged, &gate, || {
                                describe_request(&request)
                            });
                            // The requester may have gone away; nothing to do then.
                            let _ = reply.send(response);
                        }
                        ActorInput::Tick => {
                            if let Err(error) = gate.tick(store.as_mut(), now) {
                                tracing::error!(%error, "meta store write failed on tick; will retry");
                            }
                            log_term_reconfigurations(&mut logged, &gate, || {
                                "meta's tick (failure, restart, guardian or balancer)".to_owned()
                            });
                            let metrics = crate::metrics::meta_metrics();
                            metrics.observe_leadership(&gate, now.monotonic_ms);
                            let due = placement_observed_ms.is_none_or(|at: u64| {
                                now.monotonic_ms >= at + PLACEMENT_METRICS_INTERVAL_MS
                            });
                            if let Some(state) = gate.state().filter(|_| due) {
                                placement_observed_ms = Some(now.monotonic_ms);
                                metrics.observe_placement(state, now.monotonic_ms);
                            }
                            if let Some(state) = gate.state() {
                                backups.dispatch(state);
                            }
                        }
                        ActorInput::Restore {
                            table,
                            source,
                            reply,
                        } => {
                            let response = match gate.serving_state(store.as_mut(), now) {
                                Ok(state) => {
                                    let step = state.start_restore(&table, source, now);
                                    execute_step(state, store.as_mut(), step, "restore")
                                }
                                Err(error) => Err(error),
                            };
                            gate.after(&response);
                            let _ = reply.send(response);
                        }
                        ActorInput::AddDup {
                            request,
                            remote,
                            reply,
                        } => {
                            let Request::Dup(dup) = &request else {
                                unreachable!("only dup add is sent as AddDup")
                            };
                            let response = match gate.serving_state(store.as_mut(), now) {
                                Ok(state) => {
                                    let step = state.add_dup(dup, remote, now);
                                    execute_step(state, store.as_mut(), step, "dup add")
                                }
                                Err(error) => Err(error),
                            };
                            gate.after(&response);
                            let _ = reply.send(response);
                        }
                        ActorInput::BackupWorkDone { work, outcome } => {
                            backups.running.remove(&work.backup_id());
                            // Work of an earlier term, or of a meta that no
                            // longer leads: the leader finds it again in
                            // the stored data.
                            if let Ok(state) = gate.serving_state(store.as_mut(), now) {
                                if let Err(error) =
                                    backups.finished(state, store.as_mut(), work, outcome, now)
                                {
                                    if matches!(error, MetaStoreError::Fenced { .. }) {
                                        gate.end_term("a backup outcome's save was fenced");
                                    }
                                }
                                if let Some(state) = gate.state() {
                                    backups.dispatch(state);
                                }
                            }
                        }
                    }
                }
            })?;
        Ok((Actor { sender }, thread))
    }

    async fn call(&self, request: Request) -> Response {
        if let Request::Backup(BackupRequest::Restore {
            url,
            backup_id,
            table,
            new_table,
        }) = &request
        {
            let source = restore_source(url, *backup_id, table).await?;
            let table = if new_table.is_empty() {
                table
            } else {
                new_table
            };
            return self
                .input(|reply| ActorInput::Restore {
                    table: table.clone(),
                    source,
                    reply,
                })
                .await;
        }
        if let Request::Dup(DupRequest::Add {
            table,
            remote_metas,
            remote_table,
        }) = &request
        {
            let remote_name = if remote_table.is_empty() {
                table
            } else {
                remote_table
            };
            let remote = remote_facts(remote_metas, remote_name).await?;
            return self
                .input(|reply| ActorInput::AddDup {
                    request,
                    remote,
                    reply,
                })
                .await;
        }
        self.input(|reply| ActorInput::Request { request, reply })
            .await
    }

    async fn input(&self, input: impl FnOnce(oneshot::Sender<Response>) -> ActorInput) -> Response {
        let (reply, answer) = oneshot::channel();
        let stopped = || OpError::new(ErrorCode::ShuttingDown, "meta is shutting down");
        if self.sender.send(input(reply)).await.is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// What the reconfiguration log last saw: meta's data version and each
/// partition's ballot.
struct LoggedBallots {
    version: u64,
    ballots: HashMap<(i32, usize), i64>,
}

impl LoggedBallots {
    fn of(data: &MetaData) -> LoggedBallots {
        let mut logged = LoggedBallots {
            version: data.version,
            ballots: HashMap::new(),
        };
        logged.update(data, |_, _, _| {});
        logged
    }

    /// Records `data`'s ballots, calling `changed(app_id, index, old
    /// ballot)` for each partition whose ballot moved.
    fn update(&mut self, data: &MetaData, mut changed: impl FnMut(i32, usize, i64)) {
        self.version = data.version;
        self.ballots
            .retain(|(app_id, _), _| data.tables.contains_key(app_id));
        for (app_id, table) in &data.tables {
            for (index, partition) in table.partitions.iter().enumerate() {
                let old = self.ballots.insert((*app_id, index), partition.ballot);
                if let Some(old) = old.filter(|old| *old != partition.ballot) {
                    changed(*app_id, index, old);
                }
            }
        }
    }
}

/// Logs every partition configuration that `data` (just committed)
/// changes against what `logged` saw, with `cause`.
fn log_reconfigurations(
    logged: &mut LoggedBallots,
    data: &MetaData,
    cause: impl FnOnce() -> String,
) {
    if data.version == logged.version {
        return;
    }
    let mut cause = Some(cause);
    let mut cause_text = String::new();
    logged.update(data, |app_id, index, old_ballot| {
        if let Some(cause) = cause.take() {
            cause_text = cause();
        }
        let table = &data.tables[&app_id];
        let partition = &table.partitions[index];
        let names = |places: &[markab_core::meta::state::ReplicaPlace]| {
            places
                .iter()
                .map(|place| format!("{}#{}", place.node, place.shard))
                .collect::<Vec<_>>()
                .join(",")
        };
        tracing::info!(
            table = %table.name,
            partition = format!("{app_id}.{index}"),
            ballot = format!("{old_ballot} -> {}", partition.ballot),
            primary = format!("{}#{}", partition.primary.node, partition.primary.shard),
            secondaries = names(&partition.secondaries),
            learners = names(&partition.learners),
            cause = %cause_text,
            "partition reconfigured"
        );
    });
}

/// [`log_reconfigurations`] for the gate's current term; a new term
/// starts its log from what it loaded.
fn log_term_reconfigurations(
    logged: &mut Option<(u64, LoggedBallots)>,
    gate: &LeaderGate,
    cause: impl FnOnce() -> String,
) {
    let Some(state) = gate.state() else {
        return;
    };
    match logged {
        Some((term, ballots)) if *term == gate.terms_started() => {
            log_reconfigurations(ballots, state.data(), cause)
        }
        _ => *logged = Some((gate.terms_started(), LoggedBallots::of(state.data()))),
    }
}

/// What a request that changed meta's data was, for its log.
fn describe_request(request: &Request) -> String {
    match request {
        Request::RemoveSecondary { node, ballot, .. } => {
            format!("remove_secondary of {node} at ballot {ballot}")
        }
        Request::UpgradeLearner { node, ballot, .. } => {
            format!("upgrade_learner of {node} at ballot {ballot}")
        }
        Request::SwitchPrimary { node, ballot, .. } => {
            format!("switch_primary to {node} at ballot {ballot}")
        }
        Request::Beacon(beacon) => format!(
            "beacon of {} (incarnation {})",
            beacon.node, beacon.incarnation
        ),
        other => other.name().to_owned(),
    }
}

/// Serves meta on `listener` until `shutdown` completes, then stops
/// accepting, lets the actor finish and returns.
pub async fn serve(
    listener: TcpListener,
    state: MetaState,
    store: Box<dyn MetaStore>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    serve_gate(listener, LeaderGate::sole(state), store, None, shutdown).await
}

/// What a campaign reports: the leadership and the group's members.
pub type LeaderNews = (Leadership, Vec<String>);

/// Serves meta on `listener` through `gate` until `shutdown` completes:
/// [`serve`] for a meta of a group, whose campaign reports on
/// `leadership`.
pub async fn serve_gate(
    listener: TcpListener,
    gate: LeaderGate,
    store: Box<dyn MetaStore>,
    leadership: Option<watch::Receiver<LeaderNews>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let tick_interval_ms = gate.settings().tick_interval_ms(TICK_INTERVAL_MS);
    let (actor, thread) = Actor::start(gate, store, leadership, tokio::runtime::Handle::current())?;
    let ticker = {
        let actor = actor.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(tick_interval_ms));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if actor.sender.send(ActorInput::Tick).await.is_err() {
                    return;
                }
            }
        })
    };
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let actor = actor.clone();
                tasks.spawn(async move {
                    serve_connection(actor, stream, peer).await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Typically EMFILE; back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Reap finished connection tasks so the set stays bounded.
        while tasks.try_join_next().is_some() {}
    }
    tracing::info!("meta shutting down");
    ticker.abort();
    tasks.shutdown().await;
    drop(actor);
    let _ = ticker.await;
    // Every sender is gone now: the actor drains its queue and ends.
    let joined = tokio::task::spawn_blocking(move || thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        tracing::error!("meta state thread panicked");
    }
    Ok(())
}

/// Before a backup starts: its URL must parse and its store answer (a
/// missing bucket or rejected credentials are the operator's error now,
/// not a failed backup later).
async fn check_backup_store(request: &Request) -> Result<(), OpError> {
    let url = match request {
        Request::Backup(BackupRequest::Start { url, .. }) => url,
        Request::Backup(BackupRequest::AddPolicy(spec)) => &spec.url,
        _ => return Ok(()),
    };
    let invalid = |error: markab_blocks::BlockError| {
        OpError::invalid_argument(format!("backup store {url}: {error}"))
    };
    let store =
        crate::backup::open_store(url, crate::backup::meta_store_options()).map_err(invalid)?;
    store
        .list(crate::backup::PROBE_PREFIX)
        .await
        .map(|_| ())
        .map_err(invalid)
}

/// Bound on each question `dup add` asks the remote cluster's meta.
pub const REMOTE_META_TIMEOUT: Duration = Duration::from_secs(5);

/// What `dup add` must know of the remote cluster before meta's state
/// machine decides (docs/duplication.md, "Control"): its cluster id and the
/// partition count of `table` there. Each question is bounded by
/// [`REMOTE_META_TIMEOUT`].
async fn remote_facts(remote_metas: &[String], table: &str) -> Result<RemoteFacts, OpError> {
    use crate::client::{Client, ClientError, ClientOptions};
    let max = markab_core::meta::state::DUP_REMOTE_METAS_MAX;
    if remote_metas.is_empty() || remote_metas.len() > max {
        return Err(OpError::invalid_argument(format!(
            "dup add needs 1..={max} remote meta addresses, not {}",
            remote_metas.len()
        )));
    }
    let named = remote_metas.join(",");
    let unreachable = |error: ClientError| {
        let code = match &error {
            ClientError::Timeout { .. } => ErrorCode::Timeout,
            ClientError::Server(error) => error.code,
            _ => ErrorCode::InvalidArgument,
        };
        OpError::new(
            code,
            format!("the remote cluster's meta ({named}) did not answer: {error:#}"),
        )
    };
    // Each question bounded: the client's own timeout covers its
    // requests, this one also the connection.
    async fn ask<T>(
        what: &'static str,
        question: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(REMOTE_META_TIMEOUT, question)
            .await
            .unwrap_or(Err(ClientError::Timeout {
                operation: what,
                timeout_ms: REMOTE_META_TIMEOUT.as_millis() as u64,
            }))
    }
    let options = ClientOptions {
        operation_timeout: REMOTE_META_TIMEOUT,
        ..ClientOptions::default()
    };
    let client = ask("connect", Client::connect_meta(remote_metas, options))
        .await
        .map_err(unreachable)?;
    let info = ask("cluster_info", client.cluster_info())
        .await
        .map_err(unreachable)?;
    let cluster_id = info
        .iter()
        .find(|(key, _)| key == "cluster_id")
        .and_then(|(_, value)| value.parse::<u8>().ok())
        .ok_or_else(|| {
            OpError::invalid_argument(format!(
                "the remote cluster's meta ({named}) did not say its cluster_id: is it a Markab meta?"
            ))
        })?;
    let remote_table = match ask("open_table", client.open_table(table)).await {
        Ok(remote_table) => remote_table,
        Err(ClientError::UnknownTable(_)) => {
            return Err(OpError::new(
                ErrorCode::UnknownTable,
                format!(
                    "the remote cluster ({named}) has no table {table:?}: create it there with the same partition count first"
                ),
            ))
        }
        Err(error) => return Err(unreachable(error)),
    };
    Ok(RemoteFacts {
        cluster_id,
        partition_count: remote_table.partition_count() as i32,
    })
}

/// Reads complete backup `backup_id` of `table` at `url` for a restore:
/// its manifest must exist, be of this format and be of that table.
async fn restore_source(url: &str, backup_id: u64, table: &str) -> Result<RestoreSource, OpError> {
    use crate::backup::BackupError;
    let store = crate::backup::open_store(url, crate::backup::meta_store_options())
        .map_err(|error| OpError::invalid_argument(format!("backup store {url}: {error}")))?;
    let manifest = match crate::backup::table::read_backup_manifest(store.as_ref(), backup_id).await
    {
        Ok(manifest) => manifest,
        Err(BackupError::Incomplete { .. }) => {
            return Err(OpError::new(
                ErrorCode::NotFound,
                format!("{url} holds no complete backup {backup_id} (ls_backups lists them)"),
            ))
        }
        Err(error) => {
            return Err(OpError::invalid_argument(format!(
                "backup {backup_id} at {url}: {error}"
            )))
        }
    };
    if manifest.table != table {
        return Err(OpError::invalid_argument(format!(
            "backup {backup_id} is of table {:?}, not {table:?}",
            manifest.table
        )));
    }
    Ok(RestoreSource {
        url: url.to_owned(),
        backup_id,
        source_table: manifest.table,
        source_app_id: manifest.app_id,
        partition_count: manifest.partition_count,
        replica_count: manifest.replica_count,
        envs: manifest.envs.into_iter().collect(),
        partitions: manifest
            .partitions
            .into_iter()
            .map(|partition| (partition.prefix, partition.decree))
            .collect(),
    })
}

/// Runs the backups' IO work ([`MetaState::backup_work`]) on the runtime,
/// one task per backup at a time, and feeds each outcome back to the actor
/// (through a weak sender: work still out never keeps meta from stopping;
/// a restarted meta finds it again in its stored data).
struct BackupDriver {
    runtime: tokio::runtime::Handle,
    results: mpsc::WeakSender<ActorInput>,
    running: std::collections::HashSet<u64>,
}

impl BackupDriver {
    fn new(runtime: tokio::runtime::Handle, results: mpsc::WeakSender<ActorInput>) -> BackupDriver {
        BackupDriver {
            runtime,
            results,
            running: std::collections::HashSet::new(),
        }
    }

    fn dispatch(&mut self, state: &MetaState) {
        for work in state.backup_work() {
            if !self.running.insert(work.backup_id()) {
                continue;
            }
            let results = self.results.clone();
            self.runtime.spawn(async move {
                let outcome = crate::backup::run_meta_work(&work, crate::clock::unix_ms()).await;
                // The actor is gone only when meta stops.
                if let Some(results) = results.upgrade() {
                    let _ = results
                        .send(ActorInput::BackupWorkDone { work, outcome })
                        .await;
                }
            });
        }
    }

    fn finished(
        &mut self,
        state: &mut MetaState,
        store: &mut dyn MetaStore,
        work: BackupWork,
        outcome: Result<(), String>,
        now: MetaTime,
    ) -> Result<(), MetaStoreError> {
        self.running.remove(&work.backup_id());
        let change = match (&work, &outcome) {
            (BackupWork::WriteManifest { backup_id, .. }, _) => {
                state.backup_written(*backup_id, outcome.clone(), now)
            }
            (BackupWork::CleanUp { backup_id, .. }, Ok(())) => state.backup_cleaned(*backup_id),
            (BackupWork::Delete { backup_id, .. }, Ok(())) => state.backup_deleted(*backup_id),
            (
                BackupWork::CleanUp { backup_id, .. } | BackupWork::Delete { backup_id, .. },
                Err(error),
            ) => {
                // Tried again after the next tick.
                tracing::warn!(backup_id, %error, "removing a backup's files failed");
                None
            }
        };
        let result = execute_change(state, store, change, "a backup's IO work finished");
        if let Err(error) = &result {
            tracing::error!(%error, "meta store write failed on a backup's outcome; will retry");
        }
        result
    }
}

/// A connection's first bytes, at least the four that name its protocol
/// (`MRKB` or Pegasus's `THFT`); `None` when the peer closed before that.
async fn read_prefix(stream: &mut TcpStream, peer: SocketAddr) -> Option<Vec<u8>> {
    let mut prefix = vec![0; READ_CHUNK_BYTES];
    let mut filled = 0;
    while filled < markab_wire::thrift::THFT_MAGIC.len() {
        match stream.read(&mut prefix[filled..]).await {
            Ok(0) => return None,
            Ok(bytes_read) => filled += bytes_read,
            Err(error) => {
                tracing::debug!(%peer, %error, "meta connection read failed");
                return None;
            }
        }
    }
    prefix.truncate(filled);
    Some(prefix)
}

async fn serve_connection(actor: Actor, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let Some(prefix) = read_prefix(&mut stream, peer).await else {
        return;
    };
    if prefix.starts_with(&markab_wire::thrift::THFT_MAGIC) {
        thft::serve_connection(&actor, stream, prefix, peer).await;
        return;
    }
    let mut decoder = FrameDecoder::new(META_REQUEST_BYTES_MAX);
    decoder.extend(&prefix);
    let mut encoder = Encoder::new();
    let mut out = Vec::new();
    loop {
        loop {
            let (request_id, response, close) = match decoder.next_frame() {
                Ok(None) => break,
                Err(error) => {
                    let code = match error {
                        FrameError::UnknownKind(_) => ErrorCode::UnknownKind,
                        _ => ErrorCode::BadFrame,
                    };
                    (
                        0,
                        Err(OpError::new(code, format!("bad frame: {error}"))),
                        true,
                    )
                }
                Ok(Some(frame)) if frame.kind != MessageKind::Request => (
                    0,
                    Err(OpError::new(
                        ErrorCode::UnknownKind,
                        format!("meta accepts request frames, not {:?}", frame.kind),
                    )),
                    true,
                ),
                Ok(Some(frame)) => match codec::decode_request(&frame.body) {
                    Err(error) => (
                        codec::peek_request_id(&frame.body).unwrap_or(0),
                        Err(OpError::new(
                            ErrorCode::BadFrame,
                            format!("undecodable request: {error}"),
                        )),
                        true,
                    ),
                    Ok((envelope, request)) => {
                        let response = if let Err(error) = check_backup_store(&request).await {
                            Err(error)
                        } else if request.is_meta() || matches!(request, Request::QueryRoute { .. })
                        {
                            actor.call(request).await
                        } else {
                            Err(OpError::invalid_argument(format!(
                                "meta serves DDL and routing; send data requests ({}) to nodes",
                                request.name()
                            )))
                        };
                        (envelope.request_id, response, false)
                    }
                },
            };
            out.clear();
            if let Err(error) = encoder.response_frame(request_id, &response, &mut out) {
                tracing::error!(%peer, %error, "cannot encode a meta response");
                let fallback = Err(OpError::new(
                    ErrorCode::Internal,
                    format!("meta could not encode its answer: {error}"),
                ));
                out.clear();
                if encoder
                    .response_frame(request_id, &fallback, &mut out)
                    .is_err()
                {
                    return;
                }
            }
            if let Err(error) = stream.write_all(&out).await {
                tracing::debug!(%peer, %error, "meta connection write failed");
                return;
            }
            if close {
                let _ = stream.shutdown().await;
                return;
            }
        }
        let Some(bytes_read) =
            read_chunk(&mut stream, decoder.read_buffer(READ_CHUNK_BYTES), peer).await
        else {
            return;
        };
        decoder.commit_read(bytes_read);
    }
}

/// Reads what `stream` has into `buffer`: `None` once the peer closed the
/// connection or the read failed.
async fn read_chunk(stream: &mut TcpStream, buffer: &mut [u8], peer: SocketAddr) -> Option<usize> {
    match stream.read(buffer).await {
        Ok(0) => None,
        Ok(bytes_read) => Some(bytes_read),
        Err(error) => {
            tracing::debug!(%peer, %error, "meta connection read failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::state::{MetaData, MetaSettings};

    /// The production step (store, then commit, then answer) at a time
    /// given in milliseconds.
    fn execute(
        state: &mut MetaState,
        store: &mut dyn MetaStore,
        request: &Request,
        now_ms: u64,
    ) -> Response {
        markab_core::meta::step::execute(state, store, request, now_ms.into())
    }
    use crate::meta::store::MemoryMetaStore;
    use markab_wire::message::{CreateTableRequest, NodeBeacon, ResponseBody};

    fn state() -> MetaState {
        MetaState::new(
            MetaSettings {
                meta_address: "127.0.0.1:34601".into(),
                data_dir: "/d".into(),
                hold_seconds: 100,
                node_timeout_ms: 5_000,
                replica_count_default: 3,
                replica_count_max: 5,
                replication: None,
                cluster_id: 1,
            },
            MetaData::default(),
        )
    }

    fn beacon() -> Request {
        Request::Beacon(NodeBeacon {
            node: "127.0.0.1:1".into(),
            shard_addresses: vec!["127.0.0.1:1".into()],
            replicas: Vec::new(),
            incarnation: 1,
            backups: Vec::new(),
            splits: Vec::new(),
            dups: Vec::new(),
        })
    }

    fn create(name: &str) -> Request {
        Request::CreateTable(CreateTableRequest {
            table: name.into(),
            partition_count: 4,
            replica_count: 1,
            envs: Vec::new(),
            success_if_exist: false,
        })
    }

    // A failed store write answers STORAGE_ERROR and leaves the state as it
    // was; the same request succeeds once the store works again, and the
    // store then holds exactly the committed state.
    #[test]
    fn failed_save_changes_nothing() {
        let mut state = state();
        let mut store = MemoryMetaStore::default();
        execute(&mut state, &mut store, &beacon(), 1_000).unwrap();
        let before = state.data().clone();

        store.fail_saves = true;
        let error = execute(&mut state, &mut store, &create("t"), 1_000).unwrap_err();
        assert_eq!(error.code, ErrorCode::StorageError);
        assert_eq!(state.data(), &before);
        let missing = execute(
            &mut state,
            &mut store,
            &Request::ListTables {
                include_dropped: true,
            },
            1_000,
        );
        assert_eq!(missing, Ok(ResponseBody::Tables(Vec::new())));

        store.fail_saves = false;
        let created = execute(&mut state, &mut store, &create("t"), 1_000).unwrap();
        let ResponseBody::Table(info) = created else {
            panic!("{created:?}")
        };
        assert_eq!(info.app_id, 1, "the failed create consumed no app id");
        assert_eq!(store.saved.as_ref(), Some(state.data()));
    }

    // A tick that forgets a table persists before it commits, and a failed
    // tick write keeps the table until a later tick succeeds.
    #[test]
    fn tick_persists_before_commit() {
        let mut state = state();
        let mut store = MemoryMetaStore::default();
        execute(&mut state, &mut store, &beacon(), 1_000).unwrap();
        execute(&mut state, &mut store, &create("t"), 1_000).unwrap();
        let drop = Request::DropTable {
            table: "t".into(),
            reserve_seconds: Some(1),
        };
        execute(&mut state, &mut store, &drop, 1_000).unwrap();

        store.fail_saves = true;
        assert!(execute_tick(&mut state, &mut store, 10_000).is_err());
        assert_eq!(state.data().tables.len(), 1);
        store.fail_saves = false;
        execute_tick(&mut state, &mut store, 10_000).unwrap();
        assert!(state.data().tables.is_empty());
        assert_eq!(store.saved.as_ref(), Some(state.data()));
    }
}
