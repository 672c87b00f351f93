//! The deterministic discrete-event world: one seeded RNG, a simulated
//! clock, a network with delay, drop, reorder and link cuts, nodes that
//! crash (losing unsynced log bytes) and restart, the simulated meta, and
//! clients recording a history. Every event is followed by the invariant
//! checks of `invariants.rs`.

use std::collections::{BTreeMap, VecDeque};

use markab_core::replication::config::ReplicationSettings;
use markab_core::replication::core::ReplicaCore;
use markab_core::replication::messages::{
    Ballot, Decree, Input, MetaRequest, NodeId, Output, PartitionConfig, Role, WriteError,
};
use markab_core::replication::reconfig::ReplicaReport;
use markab_core::storage::{MemoryEngine, Partition, StorageLimits, WriteBatch};
use markab_core::wire::message::{Gpid, Request};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::invariants::Invariants;
use super::meta::{SimMeta, REPLICAS};
use super::model::{Addr, Event, Msg, PartitionId, Recorded, Reply, SimCheckpoint, SimSettings};
use super::node::{Hosted, Pending, SimNode};

mod client;

pub use client::sim_key;
use client::SimClient;

/// Storage time (seconds since 2016) used for every request: no TTLs.
const NOW_EPOCH_S: u32 = 1_000;
/// Interval of replica ticks.
const NODE_TICK_MS: u64 = 5;
/// Interval of meta's failure detection.
const META_TICK_MS: u64 = 20;
/// Interval of fault decisions.
const FAULT_TICK_MS: u64 = 100;
/// Lines of trace kept for a failure report.
const TRACE_LINES_MAX: usize = 60;
/// Longest a partition may stay short of its replicas at the end, beyond
/// a grace and three learn retries (each lost message costs one).
const RESTORE_MS: u64 = 1_000;
/// Hard bound on events per seed (a runaway loop is a failure).
const EVENTS_MAX: u64 = 2_000_000;

/// What one seed's run produced.
pub struct RunSummary {
    pub events: u64,
    pub history: Vec<Recorded>,
    pub committed: BTreeMap<PartitionId, usize>,
    pub crashes: u32,
    pub reconfigurations: usize,
    pub final_reads: usize,
    /// Times a partition's primary moved to another node.
    pub promotions: u32,
    /// Learners promoted to secondary.
    pub learner_promotions: u32,
    /// Learners answered from the primary's log (`LearnFromStorage`).
    pub log_learns: u32,
    /// Checkpoints installed by learners.
    pub checkpoint_installs: u32,
    /// Meta crashes (each followed by a restart from its store).
    pub meta_crashes: u32,
    /// Nodes paused past their lease.
    pub pauses: u32,
}

pub struct World {
    rng: StdRng,
    now_ms: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    settings: SimSettings,
    replication: ReplicationSettings,
    nodes: BTreeMap<NodeId, SimNode>,
    meta: SimMeta,
    clients: Vec<SimClient>,
    cuts: BTreeMap<(Addr, Addr), u64>,
    history: Vec<Recorded>,
    /// History entries that were refused (never executed): left out.
    refused: Vec<bool>,
    next_op: u64,
    invariants: Invariants,
    trace: VecDeque<String>,
    verbose: bool,
    crashes: u32,
    /// When a node last restarted or resumed from a pause, or meta last
    /// restarted: the end of the last disruption **replica-count-restored**
    /// counts from.
    last_restart_ms: u64,
    promotions: u32,
    /// The node that last became primary of each partition.
    last_primary: BTreeMap<PartitionId, NodeId>,
    learner_promotions: u32,
    log_learns: u32,
    checkpoint_installs: u32,
    /// Sub-millisecond order of history timestamps.
    history_tick: u64,
    /// Meta crashes so far (each followed by a restart from its store).
    meta_crashes: u32,
    /// Nodes paused past their lease so far.
    pauses: u32,
}

impl World {
    pub fn new(seed: u64, verbose: bool) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes_count = rng.random_range(3..=4u32);
        let settings = SimSettings {
            partitions: rng.random_range(1..=2),
            clients: rng.random_range(2..=4),
            keys: rng.random_range(2..=6),
            faults_until_ms: 8_000,
            end_ms: 11_000,
            drop_per_mille: [0, 10, 50][rng.random_range(0..3)],
            delay_max_ms: rng.random_range(1..=10),
            crash_per_mille: [0, 50, 150][rng.random_range(0..3)],
            cut_per_mille: [0, 50, 150][rng.random_range(0..3)],
            compact_per_mille: 0,
            meta_crash_per_mille: 0,
            store_fail_per_mille: 0,
            pause_per_mille: 0,
            duplicate_per_mille: 0,
            client_timeout_ms: 1_000,
        };
        let replication = if rng.random_bool(0.5) {
            ReplicationSettings::default()
        } else {
            random_settings(&mut rng)
        };
        let mut settings = settings;
        settings.compact_per_mille = [0, 100, 300][rng.random_range(0..3)];
        settings.meta_crash_per_mille = [0, 20, 60][rng.random_range(0..3)];
        settings.store_fail_per_mille = [0, 20, 60][rng.random_range(0..3)];
        settings.pause_per_mille = [0, 20, 50][rng.random_range(0..3)];
        settings.duplicate_per_mille = [0, 10, 50][rng.random_range(0..3)];
        replication.validate().expect("drawn settings are valid");
        let ids: Vec<NodeId> = (1..=nodes_count).map(NodeId).collect();
        let nodes: BTreeMap<NodeId, SimNode> = ids
            .iter()
            .map(|id| {
                let node = SimNode {
                    id: *id,
                    alive: true,
                    incarnation: 0,
                    started_ms: 0,
                    replicas: BTreeMap::new(),
                    logs: BTreeMap::new(),
                    checkpoints: BTreeMap::new(),
                    ballots: BTreeMap::new(),
                    next_token: 1,
                    paused_until_ms: 0,
                };
                (*id, node)
            })
            .collect();
        // The production meta places the table; nodes host their replicas
        // when their first beacon ack names them.
        let mut meta = SimMeta::new(replication, &ids, settings.partitions, 0);
        meta.take_changes();
        let last_primary = meta
            .configs()
            .iter()
            .filter_map(|(pid, config)| Some((*pid, config.primary?)))
            .collect();
        let clients = (0..settings.clients)
            .map(|_| SimClient {
                route: BTreeMap::new(),
                outstanding: None,
            })
            .collect();
        let mut world = World {
            rng,
            now_ms: 0,
            seq: 0,
            events: BTreeMap::new(),
            settings,
            replication,
            nodes,
            meta,
            clients,
            cuts: BTreeMap::new(),
            history: Vec::new(),
            refused: Vec::new(),
            next_op: 1,
            invariants: Invariants::default(),
            trace: VecDeque::new(),
            verbose,
            crashes: 0,
            last_restart_ms: 0,
            promotions: 0,
            last_primary,
            learner_promotions: 0,
            log_learns: 0,
            checkpoint_installs: 0,
            history_tick: 0,
            meta_crashes: 0,
            pauses: 0,
        };
        world.note(format!(
            "settings {:?} {:?}",
            world.settings, world.replication
        ));
        for id in ids {
            world.schedule(
                0,
                Event::NodeTick {
                    node: id,
                    incarnation: 0,
                },
            );
            world.schedule(
                0,
                Event::Beacon {
                    node: id,
                    incarnation: 0,
                },
            );
        }
        world.schedule(0, Event::MetaTick);
        world.schedule(FAULT_TICK_MS, Event::FaultTick);
        for client in 0..world.settings.clients {
            world.schedule(1, Event::ClientStep { client });
        }
        world
    }

    /// Runs to the end; `Err` carries the violated invariant and the trace tail.
    pub fn run(mut self) -> Result<RunSummary, String> {
        let mut events = 0u64;
        while let Some(((at_ms, _), event)) = self.events.pop_first() {
            if at_ms > self.settings.end_ms {
                break;
            }
            assert!(at_ms >= self.now_ms, "the clock never goes back");
            self.now_ms = at_ms;
            events += 1;
            if events > EVENTS_MAX {
                return Err(self.failure("more than EVENTS_MAX events".into()));
            }
            if let Err(violation) = self.step(event).and_then(|()| self.check()) {
                return Err(self.failure(violation));
            }
        }
        if let Err(violation) = self.check_replica_counts() {
            return Err(self.failure(violation));
        }
        let final_reads = match self.final_reads() {
            Ok(count) => count,
            Err(violation) => return Err(self.failure(violation)),
        };
        let history = self
            .history
            .iter()
            .zip(self.refused.iter())
            .filter(|(_, refused)| !**refused)
            .map(|(op, _)| op.clone())
            .collect();
        Ok(RunSummary {
            events,
            history,
            committed: self.invariants.committed_counts(),
            crashes: self.crashes,
            reconfigurations: self.meta.persisted.len(),
            final_reads,
            promotions: self.promotions,
            learner_promotions: self.learner_promotions,
            log_learns: self.log_learns,
            checkpoint_installs: self.checkpoint_installs,
            meta_crashes: self.meta_crashes,
            pauses: self.pauses,
        })
    }

    /// **replica-count-restored**: at the end of the quiet period, with at
    /// least three nodes alive, no partition has been short of a primary
    /// and two secondaries (learners not counted) since before
    /// `RESTORE_MS` + grace + 3 learn retries ago (counting from the last
    /// restart at the earliest): the guardian re-added what crashes and
    /// removals took, and the learners were promoted. (Drops go on in the
    /// quiet period, so a node with a tight grace may still be declared
    /// dead near the end, and each lost learning message costs a retry.)
    fn check_replica_counts(&self) -> Result<(), String> {
        let alive = self.nodes.values().filter(|node| node.alive).count();
        if alive < REPLICAS {
            return Ok(());
        }
        let full = |config: &PartitionConfig| {
            config.primary.is_some()
                && config.secondaries.len() + 1 == REPLICAS
                && config.learners.is_empty()
        };
        for (pid, config) in self.meta.configs() {
            if full(config) {
                continue;
            }
            // When the current shortage began: the change right after the
            // last full configuration (or the start).
            let mut short_since_ms = 0;
            for (at_ms, changed, config) in self.meta.persisted.iter().rev() {
                if changed != pid {
                    continue;
                }
                if full(config) {
                    break;
                }
                short_since_ms = *at_ms;
            }
            let allowed_ms =
                RESTORE_MS + self.replication.grace_ms + 3 * self.replication.learn_retry_ms;
            let short_since_ms = short_since_ms.max(self.last_restart_ms);
            if short_since_ms + allowed_ms < self.settings.end_ms {
                return Err(format!(
                    "replica-count-restored: p{pid} short since {short_since_ms} ms, ends at {config:?} with {alive} nodes alive"
                ));
            }
        }
        Ok(())
    }

    fn failure(&self, violation: String) -> String {
        let tail: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        format!("{violation}\n--- trace tail ---\n{}", tail.join("\n"))
    }

    fn note(&mut self, line: String) {
        let line = format!("{:>6} ms  {line}", self.now_ms);
        if self.verbose {
            println!("{line}");
        }
        if self.trace.len() == TRACE_LINES_MAX {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.seq += 1;
        self.events.insert((at_ms, self.seq), event);
    }

    fn check(&mut self) -> Result<(), String> {
        for node in self.nodes.values().filter(|node| node.alive) {
            for (pid, hosted) in &node.replicas {
                if hosted.applied != hosted.core.last_committed() {
                    return Err(format!(
                        "host-applied-matches-core: {} p{pid} applied {} but the core committed {}",
                        node.id,
                        hosted.applied,
                        hosted.core.last_committed()
                    ));
                }
            }
        }
        let now_ms = self.now_ms;
        let replicas = self
            .nodes
            .values()
            .filter(|node| node.alive)
            .flat_map(|node| {
                node.replicas
                    .iter()
                    .map(move |(pid, hosted)| ((node.id, node.incarnation, *pid), &hosted.core))
            });
        self.invariants.check_step(now_ms, replicas)
    }

    // ---- network ----

    fn link(a: Addr, b: Addr) -> (Addr, Addr) {
        if a <= b {
            (a, b)
        } else {
            (b, a)
        }
    }

    fn send(&mut self, from: Addr, to: Addr, msg: Msg) {
        self.send_after(from, to, msg, 0);
    }

    /// [`World::send`] with `extra_ms` more delay (a large transfer).
    fn send_after(&mut self, from: Addr, to: Addr, msg: Msg, extra_ms: u64) {
        let cut = self
            .cuts
            .get(&Self::link(from, to))
            .is_some_and(|until| *until > self.now_ms);
        let dropped = self.rng.random_range(0..1000) < self.settings.drop_per_mille;
        if cut || dropped {
            if self.verbose {
                self.note(format!("drop {from:?} -> {to:?} {msg:?}"));
            }
            return;
        }
        let mut delay_ms = extra_ms + self.rng.random_range(1..=self.settings.delay_max_ms);
        if self.rng.random_range(0..100) < 5 {
            delay_ms += self.rng.random_range(0..50);
        }
        let between_servers = !matches!(from, Addr::Client(_)) && !matches!(to, Addr::Client(_));
        if between_servers && self.rng.random_range(0..1000) < self.settings.duplicate_per_mille {
            // Delivered twice, the copy up to 100 ms later: replicas and
            // meta resend, and must take anything twice. (A client's
            // request is never duplicated: it travels on one TCP
            // connection, and the client retries only what provably did
            // not execute.)
            let again_ms = delay_ms + self.rng.random_range(1..=100);
            let copy = Event::Deliver {
                from,
                to,
                msg: msg.clone(),
            };
            self.schedule(self.now_ms + again_ms, copy);
        }
        self.schedule(self.now_ms + delay_ms, Event::Deliver { from, to, msg });
    }

    /// The node `event` is handled by, if one is paused now: the event
    /// waits until it resumes.
    fn paused_target(&self, event: &Event) -> Option<u64> {
        let node = match event {
            Event::Deliver {
                to: Addr::Node(node),
                ..
            }
            | Event::Durable { node, .. }
            | Event::NodeTick { node, .. }
            | Event::Beacon { node, .. } => *node,
            _ => return None,
        };
        let until_ms = self.nodes[&node].paused_until_ms;
        (until_ms > self.now_ms).then_some(until_ms)
    }

    // ---- events ----

    fn step(&mut self, event: Event) -> Result<(), String> {
        if let Some(until_ms) = self.paused_target(&event) {
            self.schedule(until_ms, event);
            return Ok(());
        }
        match event {
            Event::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Event::Durable {
                node,
                incarnation,
                pid,
                ballot,
                decree,
            } => {
                if self.is_current(node, incarnation) {
                    self.feed(node, pid, Input::LogDurable { ballot, decree })?;
                }
                Ok(())
            }
            Event::NodeTick { node, incarnation } => {
                if !self.is_current(node, incarnation) {
                    return Ok(());
                }
                let pids: Vec<PartitionId> = self.nodes[&node].replicas.keys().copied().collect();
                for pid in pids {
                    self.feed(node, pid, Input::Tick)?;
                }
                self.schedule(
                    self.now_ms + NODE_TICK_MS,
                    Event::NodeTick { node, incarnation },
                );
                Ok(())
            }
            Event::Beacon { node, incarnation } => {
                if !self.is_current(node, incarnation) {
                    return Ok(());
                }
                let reports = self.nodes[&node]
                    .replicas
                    .iter()
                    .map(|(pid, hosted)| {
                        let report = ReplicaReport {
                            ballot: hosted.core.ballot(),
                            last_prepared: hosted.core.last_prepared(),
                            last_committed: hosted.core.last_committed(),
                        };
                        (*pid, report, hosted.core.role(), hosted.applied)
                    })
                    .collect();
                let sent_ms = self.now_ms;
                self.send(
                    Addr::Node(node),
                    Addr::Meta,
                    Msg::Beacon {
                        incarnation,
                        sent_ms,
                        reports,
                    },
                );
                let next = self.now_ms + self.replication.beacon_interval_ms;
                self.schedule(next, Event::Beacon { node, incarnation });
                Ok(())
            }
            Event::MetaTick => {
                if self.meta.is_up() {
                    self.meta.on_tick(self.now_ms);
                    self.announce();
                }
                self.schedule(self.now_ms + META_TICK_MS, Event::MetaTick);
                Ok(())
            }
            Event::FaultTick => {
                self.fault_tick();
                Ok(())
            }
            Event::ClientStep { client } => {
                self.client_step(client);
                Ok(())
            }
            Event::ClientTimeout { client, op } => {
                if self.clients[client]
                    .outstanding
                    .is_some_and(|(held, _)| held == op)
                {
                    self.note(format!("client {client} op {op} timed out"));
                    self.client_done(client, None, true);
                }
                Ok(())
            }
            Event::Restart { node } => self.restart(node),
            Event::MetaRestart => {
                self.meta.restart();
                self.last_restart_ms = self.now_ms;
                self.note("meta restarts from its store".into());
                Ok(())
            }
            Event::StoreHeals => {
                self.meta.fail_saves(false);
                self.note("meta's store saves again".into());
                Ok(())
            }
        }
    }

    fn is_current(&self, node: NodeId, incarnation: u64) -> bool {
        let held = &self.nodes[&node];
        held.alive && held.incarnation == incarnation
    }

    fn deliver(&mut self, from: Addr, to: Addr, msg: Msg) -> Result<(), String> {
        if self.verbose {
            self.note(format!("deliver {from:?} -> {to:?} {msg:?}"));
        }
        match to {
            Addr::Meta => {
                self.meta_receive(from, msg);
                Ok(())
            }
            Addr::Client(client) => match msg {
                Msg::Reply { op, reply } => self.client_reply(client, op, reply),
                _ => Ok(()),
            },
            Addr::Node(node) => {
                if !self.nodes[&node].alive {
                    return Ok(());
                }
                self.node_receive(node, from, msg)
            }
        }
    }

    fn meta_receive(&mut self, from: Addr, msg: Msg) {
        let Addr::Node(node) = from else { return };
        if !self.meta.is_up() {
            return; // a crashed meta hears nothing
        }
        match msg {
            Msg::Beacon {
                incarnation,
                sent_ms,
                reports,
            } => {
                let acked = self
                    .meta
                    .on_beacon(node, incarnation, &reports, self.now_ms);
                self.announce();
                if let Some((configs, lease_ms)) = acked {
                    let ack = Msg::BeaconAck {
                        sent_ms,
                        configs,
                        lease_ms,
                    };
                    self.send(Addr::Meta, from, ack);
                }
            }
            Msg::RemoveSecondary {
                pid,
                ballot,
                node: removed,
            } => {
                self.meta
                    .on_request(pid, ballot, removed, false, self.now_ms);
                self.announce();
            }
            Msg::UpgradeLearner {
                pid,
                ballot,
                node: learner,
            } => {
                if self
                    .meta
                    .on_request(pid, ballot, learner, true, self.now_ms)
                {
                    self.learner_promotions += 1;
                }
                self.announce();
            }
            _ => {}
        }
    }

    /// Notes every configuration meta committed since the last call. Nodes
    /// hear of them in their next beacon ack, as in a real cluster.
    fn announce(&mut self) {
        for (pid, old, new) in self.meta.take_changes() {
            self.note(format!("meta p{pid}: {old:?} -> {new:?}"));
        }
    }

    fn node_receive(&mut self, node: NodeId, from: Addr, msg: Msg) -> Result<(), String> {
        match msg {
            Msg::Peer { pid, message } => {
                let Addr::Node(sender) = from else {
                    return Ok(());
                };
                self.feed(
                    node,
                    pid,
                    Input::Peer {
                        from: sender,
                        message,
                    },
                )
            }
            Msg::BeaconAck {
                sent_ms,
                configs,
                lease_ms,
            } => {
                if sent_ms < self.nodes[&node].started_ms {
                    return Ok(());
                }
                // Configurations first, then the leases: one per partition
                // whose configuration names this node primary, for that
                // ballot (**lease-per-ballot**).
                let until_ms = sent_ms + lease_ms;
                for (pid, config) in configs {
                    self.ensure_hosted(node, pid, &config);
                    let lease = (config.primary == Some(node)).then_some(config.ballot);
                    self.feed(node, pid, Input::Config(config))?;
                    if let Some(ballot) = lease {
                        self.feed(node, pid, Input::Lease { ballot, until_ms })?;
                    }
                }
                Ok(())
            }
            Msg::Request { op, pid, request } => {
                let Addr::Client(client) = from else {
                    return Ok(());
                };
                self.client_request(node, client, op, pid, request)
            }
            Msg::Checkpoint {
                pid,
                ballot,
                decree,
                records,
            } => self.install_checkpoint(node, pid, ballot, decree, records),
            _ => Ok(()),
        }
    }

    /// A node named in a configuration it hosts no replica for (a learner
    /// the guardian placed there) starts an empty one.
    fn ensure_hosted(&mut self, node: NodeId, pid: PartitionId, config: &PartitionConfig) {
        let replication = self.replication;
        let held = self.nodes.get_mut(&node).expect("node");
        if held.replicas.contains_key(&pid) || !config.replicas().contains(&node) {
            return;
        }
        let core = ReplicaCore::new(gpid(pid), node, replication).expect("settings");
        held.replicas.insert(pid, hosted(core));
        held.logs.entry(pid).or_default();
        self.note(format!("{node} p{pid} hosts a new replica"));
    }

    /// Learner host: installs a primary's checkpoint (durably: the sim
    /// disk keeps it, and the log below it is dropped), then tells the core.
    fn install_checkpoint(
        &mut self,
        node: NodeId,
        pid: PartitionId,
        ballot: Ballot,
        decree: Decree,
        records: BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> Result<(), String> {
        let held = self.nodes.get_mut(&node).expect("node");
        let Some(hosted) = held.replicas.get_mut(&pid) else {
            return Ok(());
        };
        if !hosted.core.accepts_checkpoint(ballot, decree) {
            return Ok(());
        }
        hosted.partition = Partition::new(
            MemoryEngine::from_snapshot(records.clone(), decree as i64),
            StorageLimits::default(),
        );
        hosted.applied = decree;
        held.checkpoints
            .insert(pid, SimCheckpoint { decree, records });
        held.logs.get_mut(&pid).expect("log").truncate(decree);
        self.checkpoint_installs += 1;
        self.invariants.on_checkpoint(pid, node, decree)?;
        self.note(format!("{node} p{pid} installed a checkpoint at {decree}"));
        self.feed(node, pid, Input::CheckpointInstalled { ballot, decree })
    }

    /// Primary host: answers a learner its cache could not from the log
    /// when the log still holds every decree it misses, else with a
    /// checkpoint of the applied state.
    fn learn_from_storage(
        &mut self,
        node: NodeId,
        pid: PartitionId,
        to: NodeId,
        ballot: Ballot,
        learner_committed: Decree,
    ) -> Result<(), String> {
        let held = &self.nodes[&node];
        let hosted = &held.replicas[&pid];
        let committed = hosted.core.last_committed();
        let from_log = held.logs[&pid].read_range(learner_committed + 1, committed);
        let msg = match from_log {
            Some(mutations) => {
                self.log_learns += 1;
                Msg::Peer {
                    pid,
                    message: hosted.core.learn_response(mutations),
                }
            }
            None => {
                let (records, _) = hosted
                    .partition
                    .engine()
                    .snapshot()
                    .ok_or("snapshot during a scan")?;
                Msg::Checkpoint {
                    pid,
                    ballot,
                    decree: committed,
                    records,
                }
            }
        };
        let extra_ms = match &msg {
            // Streamed in bounded, rate-limited chunks: 1 ms per 16 records.
            Msg::Checkpoint { records, .. } => records.len() as u64 / 16,
            _ => 0,
        };
        let source = if matches!(msg, Msg::Checkpoint { .. }) {
            "checkpoint"
        } else {
            "log"
        };
        self.note(format!(
            "{node} p{pid}: {to} learns from the {source} above {learner_committed}"
        ));
        self.send_after(Addr::Node(node), Addr::Node(to), msg, extra_ms);
        Ok(())
    }

    fn client_request(
        &mut self,
        node: NodeId,
        client: usize,
        op: u64,
        pid: PartitionId,
        request: Request,
    ) -> Result<(), String> {
        let to = Addr::Client(client);
        let held = self.nodes.get_mut(&node).expect("node");
        let token = held.next_token;
        held.next_token += 1;
        let Some(hosted) = held.replicas.get_mut(&pid) else {
            self.send(
                Addr::Node(node),
                to,
                Msg::Reply {
                    op,
                    reply: Reply::Refused("no replica".into()),
                },
            );
            return Ok(());
        };
        if request.is_write() {
            let (batch, body) = match hosted.partition.prepare_write(&request, NOW_EPOCH_S) {
                Ok(prepared) => prepared,
                Err(error) => {
                    self.send(
                        Addr::Node(node),
                        to,
                        Msg::Reply {
                            op,
                            reply: Reply::Done(Err(error)),
                        },
                    );
                    return Ok(());
                }
            };
            let pending = Pending {
                client,
                op,
                body: Some(body),
                read: None,
            };
            hosted.pending.insert(token, pending);
            self.feed(
                node,
                pid,
                Input::ClientWrite {
                    token,
                    payload: batch.encode(),
                },
            )
        } else {
            let pending = Pending {
                client,
                op,
                body: None,
                read: Some(request),
            };
            hosted.pending.insert(token, pending);
            self.feed(node, pid, Input::ClientRead { token })
        }
    }

    /// Feeds one input to a hosted replica and carries out its outputs.
    fn feed(&mut self, node: NodeId, pid: PartitionId, input: Input) -> Result<(), String> {
        let now_ms = self.now_ms;
        let Some(hosted) = self
            .nodes
            .get_mut(&node)
            .and_then(|n| n.replicas.get_mut(&pid))
        else {
            return Ok(()); // not hosted here (no learning yet)
        };
        let outputs = hosted.core.handle(input, now_ms);
        for output in outputs {
            self.carry_out(node, pid, output)?;
        }
        Ok(())
    }

    fn carry_out(&mut self, node: NodeId, pid: PartitionId, output: Output) -> Result<(), String> {
        let now_ms = self.now_ms;
        let delay_ms = self.rng.random_range(1..=4);
        let held = self.nodes.get_mut(&node).expect("node");
        let incarnation = held.incarnation;
        let hosted = held.replicas.get_mut(&pid).expect("hosted");
        match output {
            Output::RoleChanged { role, ballot } => {
                // The ballot file: durable before anything happens under
                // the new ballot, so a restarted replica never takes part
                // again in a ballot it may have acted under.
                let persisted = held.ballots.entry(pid).or_insert(0);
                *persisted = (*persisted).max(ballot);
                if role == Role::Primary {
                    hosted.partition.discard_staged();
                    // A primary kept under a new ballot (a learner added or
                    // promoted) is not a primary change.
                    if ballot > 1 && self.last_primary.insert(pid, node) != Some(node) {
                        self.promotions += 1;
                    }
                }
                self.note(format!("{node} p{pid} becomes {role:?} at ballot {ballot}"));
            }
            Output::AppendLog(mutation) => {
                if hosted.core.role() == Role::Primary && !mutation.payload.is_empty() {
                    let batch = WriteBatch::decode(&mutation.payload)
                        .map_err(|e| format!("{node} cannot decode its own payload: {e:?}"))?;
                    hosted.partition.stage(mutation.decree as i64, &batch);
                }
                let (ballot, decree) = (mutation.ballot, mutation.decree);
                let log = held.logs.get_mut(&pid).expect("log");
                let durable_at_ms = log.append(mutation, now_ms, delay_ms);
                self.schedule(
                    durable_at_ms,
                    Event::Durable {
                        node,
                        incarnation,
                        pid,
                        ballot,
                        decree,
                    },
                );
            }
            Output::Send { to, message } => {
                self.send(Addr::Node(node), Addr::Node(to), Msg::Peer { pid, message });
            }
            Output::Apply(mutation) => {
                if mutation.decree != hosted.applied + 1 {
                    return Err(format!(
                        "apply-once-in-order: {node} p{pid} applied {} after {}",
                        mutation.decree, hosted.applied
                    ));
                }
                apply(&hosted.partition, &mutation)?;
                hosted.applied = mutation.decree;
                self.invariants.on_apply(pid, node, &mutation)?;
            }
            Output::WriteReply { token, result } => {
                let Some(pending) = hosted.pending.remove(&token) else {
                    return Err(format!("{node} p{pid} replied to unknown token {token}"));
                };
                let reply = match result {
                    Ok(decree) => {
                        self.invariants.on_acked(pid, decree)?;
                        Reply::Done(Ok(pending.body.expect("write body")))
                    }
                    Err(WriteError::UnknownOutcome) => Reply::Unknown,
                    Err(error) => Reply::Refused(error.to_string()),
                };
                let msg = Msg::Reply {
                    op: pending.op,
                    reply,
                };
                self.send(Addr::Node(node), Addr::Client(pending.client), msg);
            }
            Output::ReadReply { token, result } => {
                let Some(pending) = hosted.pending.remove(&token) else {
                    return Err(format!("{node} p{pid} answered unknown read token {token}"));
                };
                let reply = match result {
                    Ok(()) => {
                        let request = pending.read.expect("read request");
                        Reply::Done(hosted.partition.execute(&request, NOW_EPOCH_S))
                    }
                    Err(error) => Reply::Refused(error.to_string()),
                };
                let msg = Msg::Reply {
                    op: pending.op,
                    reply,
                };
                self.send(Addr::Node(node), Addr::Client(pending.client), msg);
            }
            Output::LearnFromStorage {
                to,
                ballot,
                learner_committed,
            } => {
                self.learn_from_storage(node, pid, to, ballot, learner_committed)?;
            }
            Output::ToMeta(MetaRequest::UpgradeLearner {
                ballot,
                node: learner,
            }) => {
                self.note(format!("{node} p{pid} asks meta to promote {learner}"));
                self.send(
                    Addr::Node(node),
                    Addr::Meta,
                    Msg::UpgradeLearner {
                        pid,
                        ballot,
                        node: learner,
                    },
                );
            }
            Output::ToMeta(MetaRequest::RemoveSecondary {
                ballot,
                node: removed,
            }) => {
                self.note(format!("{node} p{pid} asks meta to remove {removed}"));
                self.send(
                    Addr::Node(node),
                    Addr::Meta,
                    Msg::RemoveSecondary {
                        pid,
                        ballot,
                        node: removed,
                    },
                );
            }
        }
        Ok(())
    }

    // ---- faults ----

    fn fault_tick(&mut self) {
        if self.now_ms >= self.settings.faults_until_ms {
            return;
        }
        self.schedule(self.now_ms + FAULT_TICK_MS, Event::FaultTick);
        let down = self.nodes.values().filter(|node| !node.alive).count() as u32;
        // A second simultaneous crash is rarer than the first.
        let crash_per_mille = self.settings.crash_per_mille / (1 + 3 * down);
        let alive: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.alive)
            .map(|n| n.id)
            .collect();
        if down < 2 && self.rng.random_range(0..1000) < crash_per_mille {
            let node = alive[self.rng.random_range(0..alive.len())];
            self.crash(node);
            let back_ms = self.now_ms + self.rng.random_range(100..=1_500);
            self.schedule(back_ms, Event::Restart { node });
        }
        if self.meta.is_up() && self.rng.random_range(0..1000) < self.settings.meta_crash_per_mille
        {
            self.meta.crash();
            self.meta_crashes += 1;
            let back_ms = self.now_ms + self.rng.random_range(100..=1_500);
            self.note(format!("meta crashes until {back_ms} ms"));
            self.schedule(back_ms, Event::MetaRestart);
        }
        let running: Vec<NodeId> = alive
            .iter()
            .copied()
            .filter(|node| self.nodes[node].paused_until_ms <= self.now_ms)
            .collect();
        if !running.is_empty() && self.rng.random_range(0..1000) < self.settings.pause_per_mille {
            let node = running[self.rng.random_range(0..running.len())];
            let until_ms =
                self.now_ms + self.replication.grace_ms + self.rng.random_range(0..=1_500);
            self.nodes.get_mut(&node).expect("node").paused_until_ms = until_ms;
            self.last_restart_ms = self.last_restart_ms.max(until_ms);
            self.pauses += 1;
            self.note(format!("pause {node} until {until_ms} ms"));
        }
        if self.rng.random_range(0..1000) < self.settings.store_fail_per_mille {
            self.meta.fail_saves(true);
            let heal_ms = self.now_ms + self.rng.random_range(100..=800);
            self.note(format!("meta's store fails its saves until {heal_ms} ms"));
            self.schedule(heal_ms, Event::StoreHeals);
        }
        if !running.is_empty() && self.rng.random_range(0..1000) < self.settings.compact_per_mille {
            // Log truncation is the node's own work: a paused node does none.
            let node = running[self.rng.random_range(0..running.len())];
            self.compact(node);
        }
        if self.rng.random_range(0..1000) < self.settings.cut_per_mille {
            let mut ends: Vec<Addr> = vec![Addr::Meta];
            ends.extend(self.nodes.keys().map(|id| Addr::Node(*id)));
            let a = ends[self.rng.random_range(0..ends.len())];
            let b = ends[self.rng.random_range(0..ends.len())];
            if a != b {
                let until_ms = self.now_ms + self.rng.random_range(100..=1_500);
                self.note(format!("cut {a:?} <-> {b:?} until {until_ms} ms"));
                self.cuts.insert(Self::link(a, b), until_ms);
            }
        }
    }

    /// `node` checkpoints one of its replicas at its applied decree and
    /// forgets the log records at or below it (log truncation), so that a
    /// learner further behind needs a checkpoint.
    fn compact(&mut self, node: NodeId) {
        let held = self.nodes.get_mut(&node).expect("node");
        let pids: Vec<PartitionId> = held.replicas.keys().copied().collect();
        if pids.is_empty() {
            return;
        }
        let pid = pids[self.rng.random_range(0..pids.len())];
        let hosted = &held.replicas[&pid];
        let decree = hosted.applied;
        let Some((records, _)) = hosted.partition.engine().snapshot() else {
            return;
        };
        if decree == 0 {
            return;
        }
        held.checkpoints
            .insert(pid, SimCheckpoint { decree, records });
        held.logs.get_mut(&pid).expect("log").truncate(decree);
        self.note(format!(
            "{node} p{pid} checkpoints at {decree}, log truncated"
        ));
    }

    fn crash(&mut self, node: NodeId) {
        self.crashes += 1;
        let now_ms = self.now_ms;
        let held = self.nodes.get_mut(&node).expect("node");
        held.alive = false;
        held.paused_until_ms = 0;
        held.replicas.clear();
        for log in held.logs.values_mut() {
            log.crash(now_ms);
        }
        self.note(format!("crash {node}"));
    }

    fn restart(&mut self, node: NodeId) -> Result<(), String> {
        let now_ms = self.now_ms;
        let replication = self.replication;
        let held = self.nodes.get_mut(&node).expect("node");
        held.alive = true;
        held.incarnation += 1;
        held.started_ms = now_ms;
        self.last_restart_ms = now_ms;
        let incarnation = held.incarnation;
        let mut replays = Vec::new();
        for (pid, log) in &held.logs {
            let records = log.records.iter().map(|(mutation, _)| mutation.clone());
            let (engine, applied) = match held.checkpoints.get(pid) {
                Some(checkpoint) => (
                    MemoryEngine::from_snapshot(
                        checkpoint.records.clone(),
                        checkpoint.decree as i64,
                    ),
                    checkpoint.decree,
                ),
                None => (MemoryEngine::new(), 0),
            };
            let (mut core, replay) =
                ReplicaCore::recover(gpid(*pid), node, replication, applied, records)
                    .map_err(|e| format!("recover: {e}"))?;
            let persisted = held.ballots.get(pid).copied().unwrap_or(0);
            if persisted > core.ballot() {
                // As the node does: start at the persisted ballot, inactive
                // (a configuration naming nobody), so that only a newer
                // configuration gives the replica a role.
                core.handle(
                    Input::Config(PartitionConfig {
                        ballot: persisted,
                        primary: None,
                        secondaries: Vec::new(),
                        learners: Vec::new(),
                    }),
                    now_ms,
                );
            }
            let mut hosted = hosted(core);
            hosted.partition = Partition::new(engine, StorageLimits::default());
            hosted.applied = applied;
            for mutation in &replay {
                apply(&hosted.partition, mutation)?;
                hosted.applied = mutation.decree;
            }
            held.replicas.insert(*pid, hosted);
            replays.push((*pid, replay));
        }
        for (pid, replay) in replays {
            for mutation in &replay {
                self.invariants.on_apply(pid, node, mutation)?;
            }
        }
        self.note(format!("restart {node} (incarnation {incarnation})"));
        self.schedule(now_ms, Event::NodeTick { node, incarnation });
        self.schedule(now_ms, Event::Beacon { node, incarnation });
        Ok(())
    }
}

/// Valid but unusual timings: short beacons, leases and windows.
fn random_settings(rng: &mut StdRng) -> ReplicationSettings {
    let beacon_interval_ms = rng.random_range(20..=100);
    let lease_ms = 2 * beacon_interval_ms + rng.random_range(1..=300);
    let prepare_resend_ms = rng.random_range(10..=50);
    ReplicationSettings {
        beacon_interval_ms,
        lease_ms,
        grace_ms: lease_ms + beacon_interval_ms + rng.random_range(1..=300),
        prepare_window_max: rng.random_range(2..=64),
        idle_commit_push_ms: rng.random_range(5..=30),
        prepare_resend_ms,
        prepare_timeout_ms: prepare_resend_ms + rng.random_range(50..=400),
        learn_cache_max: rng.random_range(1..=32),
        learn_retry_ms: rng.random_range(50..=500),
    }
}

fn gpid(pid: PartitionId) -> Gpid {
    Gpid {
        app_id: 1,
        partition_index: pid as i32,
    }
}

fn hosted(core: ReplicaCore) -> Hosted {
    Hosted {
        core,
        partition: Partition::new(MemoryEngine::new(), StorageLimits::default()),
        applied: 0,
        pending: BTreeMap::new(),
    }
}

fn apply(
    partition: &Partition<MemoryEngine>,
    mutation: &markab_core::replication::messages::Mutation,
) -> Result<(), String> {
    if mutation.payload.is_empty() {
        return Ok(());
    }
    let mut batch = WriteBatch::decode(&mutation.payload).map_err(|e| format!("decode: {e:?}"))?;
    batch.set_decree(mutation.decree as i64);
    partition.apply(&batch).map_err(|e| format!("apply: {e:?}"))
}
