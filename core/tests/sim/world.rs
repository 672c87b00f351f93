//! The deterministic discrete-event world: one seeded RNG, a simulated
//! clock, a network with delay, drop, reorder and link cuts, nodes running
//! the production replica host ([`ShardHost`], one per shard) over
//! [`SimIo`], crashing (losing unsynced log records, sometimes tearing one)
//! and restarting from their disks, the simulated meta, and clients
//! recording a history. Every event is followed by the invariant checks of
//! `invariants.rs`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use markab_core::host::registry::{split_ack, NodeRegistry};
use markab_core::host::{CopyJob, ShardHost};
use markab_core::meta::state::{BackupStatus, BackupWork};
use markab_core::replication::config::ReplicationSettings;
use markab_core::replication::messages::{Decree, NodeId, PartitionConfig};
use markab_core::storage::{StorageEngine, StorageLimits};
use markab_core::wire::message::{
    BackupJobState, BackupOrder, BackupReport, ErrorCode, Gpid, NodeBeacon, Request, Response,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::invariants::Invariants;
use super::meta::{parse_meta_address, GroupCounters, MetaAnswer, SimMeta, APP_ID, REPLICAS};
use super::model::{
    node_name, parse_address, shard_address, Addr, Event, Msg, PartitionId, Recorded, Reply,
    SimSettings, SplitPlan, SplitStep,
};
use super::node::{Disk, Effect, IoFaults, SimIo, SimLog, SimNode};

mod client;
mod dup;
mod meta_group;
mod split;

pub use client::sim_key;
use client::SimClient;
use dup::{new_shipping, DupWorld, DUP_EXTRA_MS};

/// Interval of replica ticks.
const NODE_TICK_MS: u64 = 5;
/// Interval of meta's failure detection.
const META_TICK_MS: u64 = 20;
/// Interval of fault decisions.
const FAULT_TICK_MS: u64 = 100;
/// Interval at which the simulated etcd ends sessions and elects.
const ETCD_TICK_MS: u64 = 10;
/// Longest one way between a meta and etcd.
const ETCD_DELAY_MAX_MS: u64 = 20;
/// A node that heard nothing from the meta it beacons for this long tries
/// the next one.
const META_SWITCH_MS: u64 = 500;
/// Lines of trace kept for a failure report.
const TRACE_LINES_MAX: usize = 60;
/// Longest a partition may stay short of its replicas at the end, beyond
/// a grace and three learn retries (each lost message costs one).
const RESTORE_MS: u64 = 1_000;
/// Hard bound on events per seed (a runaway loop is a failure).
const EVENTS_MAX: u64 = 2_000_000;
/// Most shards of a node.
const SHARDS_MAX: usize = 3;
/// Longest the world runs on, fault-free, past its end while a split is
/// still running (**split-completes**).
const SPLIT_EXTRA_MS: u64 = 10_000;

/// What one seed's run produced.
pub struct RunSummary {
    pub events: u64,
    pub history: Vec<Recorded>,
    pub committed: BTreeMap<PartitionId, usize>,
    pub reconfigurations: usize,
    pub final_reads: usize,
    pub counters: Counters,
}

/// What happened in a run, counted (summed over seeds for the summary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub crashes: u32,
    /// Times a partition's primary moved to another node.
    pub promotions: u32,
    /// Learners promoted to secondary.
    pub learner_promotions: u32,
    /// Learners answered from the primary's log.
    pub log_learns: u32,
    /// Copies installed by learners.
    pub checkpoint_installs: u32,
    /// Chunks of copies sent.
    pub copy_chunks: u32,
    /// Meta crashes (each followed by a restart from its store).
    pub meta_crashes: u32,
    /// Nodes paused past their lease.
    pub pauses: u32,
    /// Crashes that tore a log record.
    pub torn_tails: u32,
    /// Ballots that could not be recorded (each stops its replica; the
    /// node is restarted).
    pub ballot_failures: u32,
    /// Log truncations.
    pub truncations: u32,
    /// Balancer moves done: primary switches and replica moves.
    pub switches_done: u64,
    pub replica_moves_done: u64,
    /// Backups that completed (each checked **backup-holds-acknowledged**).
    pub backups_completed: u64,
    /// Splits meta started, committed (the count doubled) and cancelled;
    /// pauses of running splits.
    pub splits_started: u32,
    pub splits_committed: u32,
    pub splits_cancelled: u32,
    pub split_pauses: u32,
    /// Split children installed from a staged copy of their parent.
    pub split_copies_installed: u32,
    /// Duplications added, failed (accepted: `dup list` shows them
    /// failed), never started before the clients wrote, and converged
    /// (**dup-converges** checked).
    pub dups_added: u32,
    pub dups_failed: u32,
    /// Duplications that failed with a primary whose log was truncated
    /// past the decree to ship without a copy (a known gap, counted).
    pub dups_failed_gap: u32,
    pub dups_unstarted: u32,
    pub dups_converged: u32,
    /// The meta group's counters (docs/meta-ha.md, "In the simulator").
    pub meta_group: GroupCounters,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.crashes += other.crashes;
        self.promotions += other.promotions;
        self.learner_promotions += other.learner_promotions;
        self.log_learns += other.log_learns;
        self.checkpoint_installs += other.checkpoint_installs;
        self.copy_chunks += other.copy_chunks;
        self.meta_crashes += other.meta_crashes;
        self.pauses += other.pauses;
        self.torn_tails += other.torn_tails;
        self.ballot_failures += other.ballot_failures;
        self.truncations += other.truncations;
        self.switches_done += other.switches_done;
        self.replica_moves_done += other.replica_moves_done;
        self.backups_completed += other.backups_completed;
        self.splits_started += other.splits_started;
        self.splits_committed += other.splits_committed;
        self.splits_cancelled += other.splits_cancelled;
        self.split_pauses += other.split_pauses;
        self.split_copies_installed += other.split_copies_installed;
        self.dups_added += other.dups_added;
        self.dups_failed += other.dups_failed;
        self.dups_failed_gap += other.dups_failed_gap;
        self.dups_unstarted += other.dups_unstarted;
        self.dups_converged += other.dups_converged;
        self.meta_group.add(&other.meta_group);
    }
}

pub struct World {
    rng: StdRng,
    now_ms: u64,
    /// The world's clock as the nodes' IO reads it.
    clock: Rc<Cell<u64>>,
    faults: Rc<RefCell<IoFaults>>,
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
    /// The partition and key of each op sent.
    op_partitions: BTreeMap<u64, (PartitionId, usize)>,
    invariants: Invariants,
    /// The decree each replica's storage holds, as its effects tell it
    /// (**apply-once-in-order** per replica).
    applied: BTreeMap<(NodeId, Gpid), Decree>,
    trace: VecDeque<String>,
    verbose: bool,
    counters: Counters,
    /// When a node last restarted or resumed from a pause, or meta last
    /// restarted: the end of the last disruption **replica-count-restored**
    /// counts from.
    last_restart_ms: u64,
    /// Sub-millisecond order of history timestamps.
    history_tick: u64,
    /// The backup asked for, once meta took it.
    backup: Option<u64>,
    /// Every backup meta started, with the decrees acknowledged to clients
    /// by then.
    acked_at_start: BTreeMap<u64, BTreeMap<PartitionId, Decree>>,
    /// The table's partition counts so far: the first, then each one a
    /// split committed.
    counts: Vec<u32>,
    /// The second split of a `Twice` plan was asked for.
    second_split: bool,
    /// The partition count each node's replica last held
    /// (**count-only-grows**; forgotten when the replica is removed).
    replica_counts: BTreeMap<(NodeId, PartitionId), u32>,
    /// The duplication and the remote cluster, in a seed that duplicates.
    dup: Option<DupWorld>,
    /// The meta group's own draws (pauses, crashes, etcd's delays), apart
    /// from the world's so that a seed with a sole meta runs as before.
    meta_rng: StdRng,
    /// Per node: the meta it beacons to, and when it last heard from one.
    meta_routes: BTreeMap<NodeId, (usize, u64)>,
    /// etcd's order of what campaigns learn, and per meta the latest
    /// taken (older answers arriving late are stale).
    campaign_seq: u64,
    campaign_seen: Vec<u64>,
    /// Per term: which process of each node ran when it began (`None`:
    /// the node was down), for **leader-waits-out-leases**.
    term_nodes: BTreeMap<i64, BTreeMap<NodeId, Option<u64>>>,
    /// Early member changes of terms judged safe.
    early_safe: u32,
}

impl World {
    pub fn new(seed: u64, verbose: bool) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes_count = rng.random_range(3..=4u32);
        let mut settings = SimSettings {
            partitions: rng.random_range(1..=2),
            lively: false,
            backup_at_ms: None,
            backup_policy: false,
            split: None,
            dup: false,
            clients: rng.random_range(2..=4),
            keys: rng.random_range(2..=6),
            faults_until_ms: 8_000,
            end_ms: 11_000,
            drop_per_mille: [0, 10, 50][rng.random_range(0..3)],
            delay_max_ms: rng.random_range(1..=10),
            crash_per_mille: [0, 50, 150][rng.random_range(0..3)],
            cut_per_mille: [0, 50, 150][rng.random_range(0..3)],
            truncate_per_mille: 0,
            meta_crash_per_mille: 0,
            store_fail_per_mille: 0,
            pause_per_mille: 0,
            duplicate_per_mille: 0,
            torn_per_mille: 0,
            ballot_fail_per_mille: 0,
            log_unsynced_bytes_max: usize::MAX,
            sync_delay_max_ms: 4,
            copy_chunk_bytes: markab_core::host::COPY_CHUNK_BYTES,
            client_timeout_ms: 1_000,
            metas: 1,
            session_ttl_ms: 0,
            meta_pause_per_mille: 0,
        };
        let replication = if rng.random_bool(0.5) {
            ReplicationSettings::default()
        } else {
            random_settings(&mut rng)
        };
        settings.truncate_per_mille = [0, 100, 300][rng.random_range(0..3)];
        settings.meta_crash_per_mille = [0, 20, 60][rng.random_range(0..3)];
        settings.store_fail_per_mille = [0, 20, 60][rng.random_range(0..3)];
        settings.pause_per_mille = [0, 20, 50][rng.random_range(0..3)];
        settings.duplicate_per_mille = [0, 10, 50][rng.random_range(0..3)];
        settings.torn_per_mille = [0, 300, 1000][rng.random_range(0..3)];
        settings.ballot_fail_per_mille = [0, 0, 5, 20][rng.random_range(0..4)];
        settings.log_unsynced_bytes_max = [usize::MAX, 512, 128][rng.random_range(0..3)];
        settings.sync_delay_max_ms = [1, 4, 20][rng.random_range(0..3)];
        settings.copy_chunk_bytes = [settings.copy_chunk_bytes, 64, 1][rng.random_range(0..3)];
        // Drawn apart from the world's RNG, so that a seed's other draws
        // (and its whole run when not lively) stay what they were.
        settings.lively = StdRng::seed_from_u64(seed ^ 0x6c69_7665_6c79).random_bool(0.5);
        // Likewise for the backup: half the seeds ask for one while the
        // faults go on.
        let mut backup_rng = StdRng::seed_from_u64(seed ^ 0x6261_636b_7570);
        settings.backup_at_ms = backup_rng
            .random_bool(0.5)
            .then(|| backup_rng.random_range(500..6_000));
        // A quarter of the others run a backup policy instead.
        settings.backup_policy = settings.backup_at_ms.is_none()
            && StdRng::seed_from_u64(seed ^ 0x706f_6c69_6379).random_bool(0.5);
        // In two seeds of five an operator splits the table while the
        // faults go on (drawn apart too).
        let mut split_rng = StdRng::seed_from_u64(seed ^ 0x0073_706c_6974);
        settings.split = split_rng.random_bool(0.4).then(|| {
            let at_ms = split_rng.random_range(300..6_000);
            let plan = match split_rng.random_range(0..20) {
                0..=8 => SplitPlan::Once,
                9..=12 => SplitPlan::PauseRestart,
                13..=15 => SplitPlan::Cancel,
                _ => SplitPlan::Twice,
            };
            (at_ms, plan)
        });
        // In half the seeds that do not split, an operator duplicates the
        // table to a remote cluster from the start (drawn apart too).
        settings.dup = settings.split.is_none()
            && StdRng::seed_from_u64(seed ^ 0x0064_7570_6c69).random_bool(0.5);
        // Half the seeds run a group of three metas sharing the store
        // through etcd (`MARKAB_SIM_META_GROUP=1` or `0`: all or none); drawn
        // apart too, as are the group's faults and etcd's delays.
        let mut meta_rng = StdRng::seed_from_u64(seed ^ 0x6d65_7461_6772);
        let group = meta_rng.random_bool(0.5);
        settings.session_ttl_ms = [1_000, 1_500, 2_000][meta_rng.random_range(0..3)];
        settings.meta_pause_per_mille = [0, 20, 50][meta_rng.random_range(0..3)];
        let group = match std::env::var("MARKAB_SIM_META_GROUP").as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            _ => group,
        };
        if group {
            settings.metas = 3;
        } else {
            settings.session_ttl_ms = 0;
            settings.meta_pause_per_mille = 0;
        }
        replication.validate().expect("drawn settings are valid");
        let ids: Vec<NodeId> = (1..=nodes_count).map(NodeId).collect();
        let shapes: Vec<(NodeId, usize, u64)> = ids
            .iter()
            .map(|id| {
                let shards = rng.random_range(1..=SHARDS_MAX);
                let offset_ms = rng.random_range(0..100_000);
                (*id, shards, offset_ms)
            })
            .collect();
        let faults = IoFaults {
            rng: StdRng::seed_from_u64(rng.random()),
            ballot_fail_per_mille: settings.ballot_fail_per_mille,
            until_ms: settings.faults_until_ms,
        };
        let nodes: BTreeMap<NodeId, SimNode> = shapes
            .iter()
            .map(|(id, shards, offset_ms)| {
                let disk = Disk {
                    logs: (0..*shards).map(|_| SimLog::default()).collect(),
                    replicas: BTreeMap::new(),
                    set_aside: Default::default(),
                    split_copies: BTreeMap::new(),
                };
                let node = SimNode {
                    id: *id,
                    alive: false,
                    incarnation: 0,
                    started_ms: 0,
                    offset_ms: *offset_ms,
                    paused_until_ms: 0,
                    shards: *shards,
                    registry: Arc::new(NodeRegistry::new()),
                    hosts: Vec::new(),
                    disk: Rc::new(RefCell::new(disk)),
                    syncing: vec![false; *shards],
                    restart_scheduled: false,
                    early_beacon: false,
                    backup_jobs: BTreeMap::new(),
                    shipping: new_shipping(),
                    acked: false,
                };
                (*id, node)
            })
            .collect();
        // The production meta places the table on the nodes' shards; nodes
        // host their replicas when their first beacon ack names them.
        let placement: Vec<(NodeId, usize)> = shapes
            .iter()
            .map(|(id, shards, _)| (*id, *shards))
            .collect();
        let mut meta = SimMeta::new(
            replication,
            &placement,
            settings.partitions,
            settings.lively,
            (settings.metas > 1).then_some((settings.metas, settings.session_ttl_ms)),
            0,
        );
        meta.take_changes();
        let clients = (0..settings.clients)
            .map(|_| SimClient {
                route: BTreeMap::new(),
                partition_count: settings.partitions,
                outstanding: None,
            })
            .collect();
        let partitions = settings.partitions;
        let settings_metas = settings.metas;
        let mut world = World {
            rng,
            now_ms: 0,
            clock: Rc::new(Cell::new(0)),
            faults: Rc::new(RefCell::new(faults)),
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
            op_partitions: BTreeMap::new(),
            invariants: Invariants::default(),
            applied: BTreeMap::new(),
            trace: VecDeque::new(),
            verbose,
            counters: Counters::default(),
            last_restart_ms: 0,
            history_tick: 0,
            backup: None,
            acked_at_start: BTreeMap::new(),
            counts: vec![partitions],
            second_split: false,
            replica_counts: BTreeMap::new(),
            dup: None,
            meta_rng,
            meta_routes: ids.iter().map(|id| (*id, (0, 0))).collect(),
            campaign_seq: 0,
            campaign_seen: vec![0; settings_metas],
            term_nodes: BTreeMap::new(),
            early_safe: 0,
        };
        if world.settings.dup {
            world.dup = Some(DupWorld::new(partitions));
            world.schedule(0, Event::DupAdd);
        }
        world.note(format!(
            "settings {:?} {:?} nodes (id, shards, clock offset) {shapes:?}",
            world.settings, world.replication
        ));
        for id in ids {
            world.boot(id).expect("an empty node boots");
        }
        world.schedule(0, Event::MetaTick);
        if world.meta.is_group() {
            world.schedule(0, Event::EtcdTick);
            for meta in 0..world.meta.count() {
                world.schedule(0, Event::MetaKeepalive { meta, life: 0 });
            }
        }
        if let Some(at_ms) = world.settings.backup_at_ms {
            world.schedule(at_ms, Event::BackupStart);
        }
        if world.settings.backup_policy {
            world.meta.add_policy(2, 1, 0);
        }
        if let Some((at_ms, _)) = world.settings.split {
            world.schedule(at_ms, Event::Split(SplitStep::Start));
        }
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
            // A split still running at the end runs on, without faults,
            // until it completes (bounded: **split-completes**).
            // So does a duplication until every partition's remote holds
            // its committed decree (bounded: **dup-converges**).
            if at_ms > self.settings.end_ms
                && (self.meta.split_record().is_none()
                    || at_ms > self.settings.end_ms + SPLIT_EXTRA_MS)
                && (at_ms > self.settings.end_ms + DUP_EXTRA_MS || self.dup_caught_up())
            {
                break;
            }
            assert!(at_ms >= self.now_ms, "the clock never goes back");
            self.now_ms = at_ms;
            self.clock.set(at_ms);
            events += 1;
            if events > EVENTS_MAX {
                return Err(self.failure("more than EVENTS_MAX events".into()));
            }
            if let Err(violation) = self.step(event).and_then(|()| self.check()) {
                return Err(self.failure(violation));
            }
        }
        if let Err(violation) = self.check_split_completed() {
            return Err(self.failure(violation));
        }
        if let Err(violation) = self.check_replica_counts() {
            return Err(self.failure(violation));
        }
        if let Err(violation) = self.check_backup_completed() {
            return Err(self.failure(violation));
        }
        if let Err(violation) = self.check_dup_converged() {
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
            reconfigurations: self.meta.persisted.len(),
            final_reads,
            counters: Counters {
                switches_done: self.meta.moves_finished("switch_primary", "ok"),
                replica_moves_done: self.meta.moves_finished("move_replica", "ok"),
                meta_group: GroupCounters {
                    early_changes_safe: self.early_safe,
                    ..self.meta.group_counters()
                },
                ..self.counters
            },
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
    /// A node whose replica stopped on a failed ballot write was restarted
    /// by its supervisor, so it counts too.
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
            if short_since_ms + allowed_ms < self.now_ms.max(self.settings.end_ms) {
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

    /// `node`'s clock now.
    fn node_now(&self, node: NodeId) -> u64 {
        self.now_ms + self.nodes[&node].offset_ms
    }

    fn check(&mut self) -> Result<(), String> {
        let mut replicas = Vec::new();
        for node in self.nodes.values().filter(|node| node.alive) {
            let now_ms = self.now_ms + node.offset_ms;
            for host in &node.hosts {
                for (gpid, replica) in host.replicas() {
                    // A stopped replica does nothing more (and is restarted
                    // with its node).
                    if replica.is_failed() {
                        continue;
                    }
                    let pid = gpid.partition_index as PartitionId;
                    let core = replica.core();
                    if replica.applied() != core.last_committed() {
                        return Err(format!(
                            "host-applied-matches-core: {} p{pid} applied {} but the core committed {}",
                            node.id,
                            replica.applied(),
                            core.last_committed()
                        ));
                    }
                    replicas.push(((node.id, node.incarnation, pid), now_ms, core));
                }
            }
        }
        self.invariants.check_step(replicas.into_iter())?;
        self.check_meta_group()?;
        self.check_splits()?;
        self.check_dups()
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
        let mut delay_ms = self.rng.random_range(1..=self.settings.delay_max_ms);
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
            | Event::LogSync { node, .. }
            | Event::LearnRead { node, .. }
            | Event::CopyStart { node, .. }
            | Event::CopyStep { node, .. }
            | Event::NodeTick { node, .. }
            | Event::Beacon { node, .. }
            | Event::SupervisorRestart { node, .. } => *node,
            Event::Deliver {
                to: Addr::Meta(meta),
                ..
            }
            | Event::MetaKeepalive { meta, .. }
            | Event::Campaign { meta, .. } => return self.meta.paused_until(*meta, self.now_ms),
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
            Event::LogSync {
                node,
                incarnation,
                shard,
                upto,
            } => {
                if self.is_current(node, incarnation) {
                    self.log_synced(node, shard, upto)?;
                }
                Ok(())
            }
            Event::LearnRead {
                node,
                incarnation,
                shard,
            } => {
                if self.is_current(node, incarnation) {
                    self.learn_read(node, shard)?;
                }
                Ok(())
            }
            Event::CopyStart {
                node,
                incarnation,
                shard,
            } => {
                if !self.is_current(node, incarnation) {
                    return Ok(());
                }
                if let Some(job) = self.with_host(node, shard, |host| host.next_copy())? {
                    self.note(format!(
                        "{node} p{} copies its records at decree {} to node #{}",
                        job.gpid.partition_index, job.decree, job.to.0
                    ));
                    let at_ms = self.now_ms + self.rng.random_range(1..=5);
                    self.schedule(
                        at_ms,
                        Event::CopyStep {
                            node,
                            incarnation,
                            shard,
                            job,
                        },
                    );
                }
                Ok(())
            }
            Event::CopyStep {
                node,
                incarnation,
                shard,
                job,
            } => {
                if self.is_current(node, incarnation) {
                    self.copy_step(node, incarnation, shard, job)?;
                }
                Ok(())
            }
            Event::NodeTick { node, incarnation } => {
                if !self.is_current(node, incarnation) {
                    return Ok(());
                }
                for shard in 0..self.nodes[&node].shards {
                    self.with_host(node, shard, |host| host.tick())?;
                }
                if self.dup.is_some() {
                    self.ship(node)?;
                }
                self.schedule(
                    self.now_ms + NODE_TICK_MS,
                    Event::NodeTick { node, incarnation },
                );
                Ok(())
            }
            Event::Beacon {
                node,
                incarnation,
                early,
            } => {
                if !self.is_current(node, incarnation) {
                    return Ok(());
                }
                if early {
                    self.nodes.get_mut(&node).expect("node").early_beacon = false;
                }
                let held = &self.nodes[&node];
                let beacon = NodeBeacon {
                    node: node_name(node),
                    shard_addresses: (0..held.shards)
                        .map(|shard| shard_address(node, shard))
                        .collect(),
                    replicas: held.registry.beacon_replicas(),
                    incarnation,
                    backups: held.backup_jobs.values().cloned().collect(),
                    splits: held.registry.split_reports(),
                    dups: held.shipping.reports(self.node_now(node)),
                };
                let sent_ms = self.node_now(node);
                let meta = self.meta_target(node);
                self.send(
                    Addr::Node(node),
                    Addr::Meta(meta),
                    Msg::Beacon { sent_ms, beacon },
                );
                if !early {
                    let next = self.now_ms + self.replication.beacon_interval_ms;
                    self.schedule(
                        next,
                        Event::Beacon {
                            node,
                            incarnation,
                            early: false,
                        },
                    );
                }
                Ok(())
            }
            Event::MetaTick => {
                self.meta.on_tick(self.now_ms);
                self.announce();
                self.schedule(self.now_ms + META_TICK_MS, Event::MetaTick);
                self.backup_io()
            }
            Event::BackupStart => {
                let started = if self.meta.is_up(self.now_ms) {
                    self.meta.start_backup(self.now_ms)
                } else {
                    None
                };
                match started {
                    Some(id) => {
                        self.note(format!("backup {id} starts"));
                        self.backup = Some(id);
                        self.acked_at_start.insert(id, self.invariants.acked());
                    }
                    // Meta is down or refused: the operator asks again.
                    None => self.schedule(self.now_ms + 200, Event::BackupStart),
                }
                Ok(())
            }
            Event::FaultTick => self.fault_tick(),
            Event::ClientStep { client } => {
                // Writes before the duplication started are not shipped:
                // the clients wait for it (a while).
                if self.dup.as_ref().is_some_and(|dup| !dup.started)
                    && self.now_ms < self.settings.faults_until_ms
                {
                    self.schedule(self.now_ms + 50, Event::ClientStep { client });
                    return Ok(());
                }
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
            Event::Restart { node } => self.boot(node),
            Event::SupervisorRestart { node, incarnation } => {
                if !self.is_current(node, incarnation) {
                    return Ok(());
                }
                self.note(format!("the supervisor restarts {node}"));
                self.crash(node);
                self.boot(node)
            }
            Event::MetaRestart { meta } => {
                self.meta.restart(meta);
                // A later pause's end may already be recorded: keep it.
                self.last_restart_ms = self.last_restart_ms.max(self.now_ms);
                if self.meta.is_group() {
                    self.note(format!("meta {meta} restarts; it campaigns again"));
                    let life = self.meta.life(meta);
                    self.schedule(self.now_ms, Event::MetaKeepalive { meta, life });
                } else {
                    self.note("meta restarts from its store".into());
                }
                Ok(())
            }
            Event::MetaKeepalive { meta, life } => {
                self.meta_keepalive(meta, life);
                Ok(())
            }
            Event::EtcdKeepalive {
                meta,
                sent_ms,
                life,
            } => {
                self.etcd_keepalive(meta, sent_ms, life);
                Ok(())
            }
            Event::Campaign {
                meta,
                life,
                seq,
                leadership,
            } => {
                self.campaign(meta, life, seq, leadership);
                Ok(())
            }
            Event::EtcdTick => {
                if let Some(elected) = self.meta.etcd_expire(self.now_ms) {
                    self.notify_election(elected);
                }
                self.schedule(self.now_ms + ETCD_TICK_MS, Event::EtcdTick);
                Ok(())
            }
            Event::StoreHeals => {
                self.meta.fail_saves(false);
                self.note("meta's store saves again".into());
                Ok(())
            }
            Event::Split(step) => self.operator_split(step),
            Event::DupAdd => self.operator_dup_add(),
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
            Addr::Meta(meta) => {
                self.meta_receive(meta, from, msg);
                self.backup_io()
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
            Addr::Remote => {
                self.remote_receive(from, msg);
                Ok(())
            }
        }
    }

    fn meta_receive(&mut self, meta: usize, from: Addr, msg: Msg) {
        if !self.meta.meta_up(meta) {
            return; // a crashed meta hears nothing
        }
        match msg {
            Msg::Beacon { sent_ms, beacon } => {
                let acked = self.meta.on_beacon(meta, &beacon, self.now_ms);
                self.announce();
                match acked {
                    MetaAnswer::Served(Some(ack)) => {
                        self.send(Addr::Meta(meta), from, Msg::BeaconAck { sent_ms, ack });
                    }
                    MetaAnswer::Served(None) => {}
                    MetaAnswer::NotLeader(leader) => {
                        self.send(Addr::Meta(meta), from, Msg::NotLeader { leader });
                    }
                }
            }
            Msg::ToMeta(request) => {
                let answer = self.meta.on_request(meta, &request, self.now_ms);
                let honoured = matches!(answer, MetaAnswer::Served(Some(())));
                if honoured && matches!(request, Request::UpgradeLearner { .. }) {
                    self.counters.learner_promotions += 1;
                }
                self.note(format!("meta {meta} hears {request:?}: {answer:?}"));
                self.announce();
                if let MetaAnswer::NotLeader(leader) = answer {
                    self.send(Addr::Meta(meta), from, Msg::NotLeader { leader });
                }
            }
            _ => {}
        }
    }

    /// Notes every configuration meta committed since the last call. Nodes
    /// hear of them in their next beacon ack, as in a real cluster.
    fn announce(&mut self) {
        for (pid, old, new) in self.meta.take_changes() {
            if old.ballot > 0 && new.primary != old.primary {
                self.counters.promotions += 1;
            }
            self.note(format!("meta p{pid}: {old:?} -> {new:?}"));
        }
    }

    fn node_receive(&mut self, node: NodeId, from: Addr, msg: Msg) -> Result<(), String> {
        match msg {
            Msg::Peer {
                gpid,
                address,
                request,
            } => {
                let shard = match parse_address(&address) {
                    Some((to, shard)) if to == node && shard < self.nodes[&node].shards => shard,
                    _ => return Ok(()), // nobody listens there
                };
                self.with_host(node, shard, |host| host.on_peer(gpid, request))
            }
            Msg::BeaconAck { sent_ms, ack } => {
                let held = &self.nodes[&node];
                if sent_ms < held.started_ms {
                    return Ok(()); // an ack of the previous life's beacon
                }
                let again_ms = u64::from(ack.beacon_again_ms);
                if again_ms > 0
                    && again_ms < self.replication.beacon_interval_ms
                    && !held.early_beacon
                {
                    // As the node's beacon thread does: the next beacon
                    // `again_ms` after this one's send time.
                    let delay = (sent_ms + again_ms).saturating_sub(self.node_now(node));
                    let incarnation = held.incarnation;
                    self.nodes.get_mut(&node).expect("node").early_beacon = true;
                    self.schedule(
                        self.now_ms + delay,
                        Event::Beacon {
                            node,
                            incarnation,
                            early: true,
                        },
                    );
                }
                self.take_backup_orders(node, &ack.backups)?;
                let held = &self.nodes[&node];
                let parts = split_ack(&held.registry, held.shards, &node_name(node), ack, sent_ms);
                for (shard, part) in parts.into_iter().enumerate() {
                    self.with_host(node, shard, |host| host.apply_ack(part))?;
                }
                self.nodes.get_mut(&node).expect("node").acked = true;
                if let Addr::Meta(meta) = from {
                    self.meta_routes.insert(node, (meta, self.now_ms));
                }
                Ok(())
            }
            Msg::NotLeader { leader } => {
                self.redirected(node, from, &leader);
                Ok(())
            }
            Msg::Request {
                op,
                gpid,
                partition_count,
                request,
            } => {
                let Addr::Client(client) = from else {
                    return Ok(());
                };
                self.client_request(node, client, op, gpid, partition_count, request)
            }
            Msg::DupAck {
                incarnation,
                batch,
                result,
            } => {
                self.dup_acked(node, incarnation, &batch, result);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A client's request at `node`: to the shard hosting the partition,
    /// which checks the route version first, as the node's connection does
    /// (`STALE_ROUTE`).
    fn client_request(
        &mut self,
        node: NodeId,
        client: usize,
        op: u64,
        gpid: Gpid,
        partition_count: i32,
        request: Request,
    ) -> Result<(), String> {
        let Some(shard) = self.nodes[&node].registry.shard_of(gpid) else {
            let reply = Reply::Refused(format!("{node} does not host p{}", gpid.partition_index));
            self.send(
                Addr::Node(node),
                Addr::Client(client),
                Msg::Reply { op, reply },
            );
            return Ok(());
        };
        if let Err(error) = self.nodes[&node].hosts[shard].check_route(gpid, partition_count) {
            let reply = reply_of(Err(error));
            self.send(
                Addr::Node(node),
                Addr::Client(client),
                Msg::Reply { op, reply },
            );
            return Ok(());
        }
        if request.is_write() {
            return self.with_host(node, shard, |host| {
                host.client_write(gpid, &request, (client, op))
            });
        }
        let response = self.nodes[&node].hosts[shard].read(gpid, &request);
        let reply = reply_of(response);
        self.send(
            Addr::Node(node),
            Addr::Client(client),
            Msg::Reply { op, reply },
        );
        Ok(())
    }

    // ---- the hosts ----

    /// Calls `call` on `node`'s host of `shard`, then carries out what the
    /// host did outside itself.
    /// A node's part of backups, as the production node does it: jobs meta
    /// no longer orders are forgotten; an ordered partition whose replica
    /// here is a serving primary is checkpointed at its applied decree
    /// (uploads are instant here: the store is not simulated).
    fn take_backup_orders(&mut self, node: NodeId, orders: &[BackupOrder]) -> Result<(), String> {
        let held = self.nodes.get_mut(&node).expect("node");
        held.backup_jobs.retain(|(backup_id, gpid), _| {
            orders
                .iter()
                .any(|order| order.backup_id == *backup_id && order.gpid == *gpid)
        });
        for order in orders {
            let held = &self.nodes[&node];
            if held
                .backup_jobs
                .contains_key(&(order.backup_id, order.gpid))
            {
                continue;
            }
            let Some(shard) = held.registry.shard_of(order.gpid) else {
                continue;
            };
            let applied = self.with_host(node, shard, |host| {
                host.serving_replica(order.gpid)
                    .map(|replica| replica.applied())
            })?;
            let Some(decree) = applied else { continue };
            self.note(format!(
                "{node} backs up p{} at decree {decree}",
                order.gpid.partition_index
            ));
            let report = BackupReport {
                backup_id: order.backup_id,
                gpid: order.gpid,
                ballot: order.ballot,
                state: BackupJobState::Done,
                decree: decree as i64,
                prefix: format!("{}/b{}-sim{}", order.prefix, order.ballot, node.0),
                ..BackupReport::default()
            };
            self.nodes
                .get_mut(&node)
                .expect("node")
                .backup_jobs
                .insert((order.backup_id, order.gpid), report);
        }
        Ok(())
    }

    /// **backup-completes**: a backup asked for during the faults is
    /// complete after the quiet period that follows them (it never fails:
    /// the simulated store does not); a policy has completed a backup, and
    /// keeps no more complete ones than its count (1).
    fn check_backup_completed(&self) -> Result<(), String> {
        if self.settings.backup_policy {
            let complete = self
                .meta
                .backups()
                .values()
                .filter(|backup| backup.status == BackupStatus::Complete && !backup.expired)
                .count();
            return match complete {
                1 => Ok(()),
                count => Err(format!(
                    "backup-completes: the policy keeps 1 complete backup, meta lists {count}"
                )),
            };
        }
        if self.settings.backup_at_ms.is_none() {
            return Ok(());
        }
        let Some(id) = self.backup else {
            return Err("backup-completes: meta never took the backup".into());
        };
        match self.meta.backup(id).map(|backup| backup.status) {
            Some(BackupStatus::Complete) => Ok(()),
            other => Err(format!(
                "backup-completes: backup {id} is {other:?} at the end of the run"
            )),
        }
    }

    /// Meta's IO work for backups, done at once: a backup meta just started
    /// (by request or by its policy's tick) notes the decrees acknowledged
    /// by then; one whose partitions are all in is checked
    /// (**backup-holds-acknowledged**) and its manifest "written"; failed
    /// and expired ones are "removed".
    fn backup_io(&mut self) -> Result<(), String> {
        if !self.meta.is_up(self.now_ms) {
            return Ok(());
        }
        let started: Vec<u64> = self
            .meta
            .backups()
            .keys()
            .filter(|id| !self.acked_at_start.contains_key(id))
            .copied()
            .collect();
        for id in started {
            self.acked_at_start.insert(id, self.invariants.acked());
        }
        for work in self.meta.backup_work(self.now_ms) {
            if let BackupWork::WriteManifest { backup_id, backup } = &work {
                let decrees: BTreeMap<PartitionId, Decree> = backup
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(index, done)| {
                        let decree = done.as_ref().map_or(0, |done| done.decree);
                        (index as PartitionId, decree.max(0) as Decree)
                    })
                    .collect();
                self.invariants
                    .check_backup(&self.acked_at_start[backup_id], &decrees)?;
                self.note(format!(
                    "backup {backup_id} complete at decrees {decrees:?}"
                ));
                self.counters.backups_completed += 1;
            }
            self.meta.backup_work_done(&work, self.now_ms);
        }
        Ok(())
    }

    fn with_host<R>(
        &mut self,
        node: NodeId,
        shard: usize,
        call: impl FnOnce(&mut ShardHost<SimIo>) -> R,
    ) -> Result<R, String> {
        let host = &mut self.nodes.get_mut(&node).expect("node").hosts[shard];
        let result = call(host);
        let effects = std::mem::take(&mut host.io_mut().outbox);
        self.carry_out(node, shard, effects)?;
        Ok(result)
    }

    fn carry_out(
        &mut self,
        node: NodeId,
        shard: usize,
        effects: Vec<Effect>,
    ) -> Result<(), String> {
        let incarnation = self.nodes[&node].incarnation;
        for effect in effects {
            match effect {
                Effect::Send {
                    gpid,
                    address,
                    request,
                } => {
                    let Some((to, _)) = parse_address(&address) else {
                        return Err(format!("{node} sends to a bad address {address:?}"));
                    };
                    let msg = Msg::Peer {
                        gpid,
                        address,
                        request,
                    };
                    self.send(Addr::Node(node), Addr::Node(to), msg);
                }
                Effect::ToMeta(request) => {
                    let meta = self.meta_target(node);
                    self.note(format!("{node} asks meta {meta} {request:?}"));
                    self.send(Addr::Node(node), Addr::Meta(meta), Msg::ToMeta(request));
                }
                Effect::Reply {
                    waiter: (client, op),
                    response,
                    decree,
                } => {
                    if let (Ok(_), Some(decree)) = (&response, decree) {
                        let (pid, key_index) = self.op_partitions[&op];
                        self.invariants.on_acked(pid, decree)?;
                        self.invariants.on_acked_write(pid, key_index, decree)?;
                    }
                    let reply = reply_of(response);
                    self.send(
                        Addr::Node(node),
                        Addr::Client(client),
                        Msg::Reply { op, reply },
                    );
                }
                Effect::Appended => {
                    if !self.nodes[&node].syncing[shard] {
                        self.start_sync(node, shard);
                    }
                }
                Effect::LearnQueued => {
                    let at_ms = self.now_ms + self.rng.random_range(1..=5);
                    self.schedule(
                        at_ms,
                        Event::LearnRead {
                            node,
                            incarnation,
                            shard,
                        },
                    );
                }
                Effect::CopyQueued => {
                    let at_ms = self.now_ms + self.rng.random_range(1..=5);
                    self.schedule(
                        at_ms,
                        Event::CopyStart {
                            node,
                            incarnation,
                            shard,
                        },
                    );
                }
                Effect::Applied { gpid, mutation } => {
                    let pid = gpid.partition_index as PartitionId;
                    let held = self.applied.entry((node, gpid)).or_insert(0);
                    if mutation.decree != *held + 1 {
                        return Err(format!(
                            "apply-once-in-order: {node} p{pid} applied {} after {}",
                            mutation.decree, held
                        ));
                    }
                    *held = mutation.decree;
                    self.invariants.on_apply(pid, node, &mutation)?;
                }
                Effect::Opened { gpid, decree } => {
                    self.applied.insert((node, gpid), decree);
                    self.note(format!(
                        "{node} opens p{} on shard {shard} at flushed decree {decree}",
                        gpid.partition_index
                    ));
                }
                Effect::CopyMarker {
                    gpid,
                    present,
                    decree,
                } => {
                    let pid = gpid.partition_index as PartitionId;
                    if present {
                        // The copy's first chunk empties storage.
                        self.applied.insert((node, gpid), 0);
                        self.note(format!("{node} p{pid} starts installing a copy"));
                        continue;
                    }
                    self.applied.insert((node, gpid), decree);
                    if decree > 0 {
                        self.counters.checkpoint_installs += 1;
                        self.invariants.on_checkpoint(pid, node, decree)?;
                        self.note(format!("{node} p{pid} installed a copy at {decree}"));
                    } else {
                        self.note(format!("{node} p{pid} has an empty storage again"));
                    }
                }
                Effect::BallotLost { gpid, ballot } => {
                    self.counters.ballot_failures += 1;
                    let held = self.nodes.get_mut(&node).expect("node");
                    let first = !held.restart_scheduled;
                    held.restart_scheduled = true;
                    self.note(format!(
                        "{node} p{} cannot record ballot {ballot}: the replica stops",
                        gpid.partition_index
                    ));
                    if first {
                        let at_ms = self.now_ms + self.rng.random_range(100..=1_500);
                        self.schedule(at_ms, Event::SupervisorRestart { node, incarnation });
                    }
                }
                Effect::SplitInstalled { gpid, decree } => {
                    self.on_split_installed(node, gpid, decree)?;
                }
                Effect::Removed { gpid } => {
                    self.applied.remove(&(node, gpid));
                    self.replica_counts
                        .remove(&(node, gpid.partition_index as PartitionId));
                    self.note(format!("{node} removes p{}", gpid.partition_index));
                }
            }
        }
        Ok(())
    }

    /// A group commit of `shard`'s log starts, covering every record
    /// appended so far.
    fn start_sync(&mut self, node: NodeId, shard: usize) {
        let held = self.nodes.get_mut(&node).expect("node");
        let upto = held.disk.borrow().logs[shard].newest();
        held.syncing[shard] = true;
        let incarnation = held.incarnation;
        let at_ms = self.now_ms + self.rng.random_range(1..=self.settings.sync_delay_max_ms);
        self.schedule(
            at_ms,
            Event::LogSync {
                node,
                incarnation,
                shard,
                upto,
            },
        );
    }

    /// A group commit finished: the host hears the log is durable up to
    /// `upto` and appends what it backlogged; the next sync starts if more
    /// waits.
    fn log_synced(&mut self, node: NodeId, shard: usize, upto: u64) -> Result<(), String> {
        let held = self.nodes.get_mut(&node).expect("node");
        held.syncing[shard] = false;
        held.disk.borrow_mut().logs[shard].sync(upto);
        self.with_host(node, shard, |host| {
            host.log_durable(upto);
            host.drain_backlog();
        })?;
        let held = &self.nodes[&node];
        let (newest, durable) = {
            let disk = held.disk.borrow();
            (disk.logs[shard].newest(), disk.logs[shard].durable)
        };
        let waiting = newest > durable || held.hosts[shard].backlog_waiting();
        if waiting && !held.syncing[shard] {
            self.start_sync(node, shard);
        }
        Ok(())
    }

    /// The learn-read pool: the next learner of `shard` is answered from
    /// the shard's log (its partition's records, in log order).
    fn learn_read(&mut self, node: NodeId, shard: usize) -> Result<(), String> {
        let held = self.nodes.get_mut(&node).expect("node");
        let host = &mut held.hosts[shard];
        let Some(job) = host.next_learn_read() else {
            return Ok(());
        };
        // `None` when the log cannot answer: no longer the primary at the
        // job's ballot (the host drops the job), or the learner is below the
        // log floor (the host sends a copy) — as on a node.
        let read = host.learn_plan(&job).and_then(|plan| {
            let mut gather = plan.gather();
            let disk = held.disk.borrow();
            for record in &disk.logs[shard].records {
                if record.gpid != job.gpid || record.torn {
                    continue;
                }
                gather.offer(record.ballot, record.decree, &record.payload);
                if gather.enough() {
                    break;
                }
            }
            gather.finish()
        });
        let source = match &read {
            Some(mutations) => {
                self.counters.log_learns += 1;
                format!("the log ({} mutations)", mutations.len())
            }
            None => "nothing: the log cannot answer, a copy follows".to_owned(),
        };
        self.note(format!(
            "{node} p{}: node #{} above {} learns from {source}",
            job.gpid.partition_index, job.to.0, job.learner_committed
        ));
        self.with_host(node, shard, |host| host.answer_learner(job, Ok(read)))
    }

    /// The copy pool sends one chunk of `job`, then schedules the next.
    fn copy_step(
        &mut self,
        node: NodeId,
        incarnation: u64,
        shard: usize,
        mut job: CopyJob,
    ) -> Result<(), String> {
        let bytes = self.settings.copy_chunk_bytes;
        let stepped = self.with_host(node, shard, |host| host.copy_step_bytes(&mut job, bytes))?;
        if stepped.is_ok() {
            self.counters.copy_chunks += 1;
        }
        match stepped {
            Ok(false) => {
                let at_ms = self.now_ms + self.rng.random_range(1..=5);
                self.schedule(
                    at_ms,
                    Event::CopyStep {
                        node,
                        incarnation,
                        shard,
                        job,
                    },
                );
                Ok(())
            }
            done => {
                if let Err(why) = done {
                    self.note(format!(
                        "{node} p{} stops a copy: {why}",
                        job.gpid.partition_index
                    ));
                }
                self.with_host(node, shard, |host| host.copy_done(&job))
            }
        }
    }

    // ---- faults ----

    fn fault_tick(&mut self) -> Result<(), String> {
        if self.now_ms >= self.settings.faults_until_ms {
            return Ok(());
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
            self.counters.crashes += 1;
            self.crash(node);
            let back_ms = self.now_ms + self.rng.random_range(100..=1_500);
            self.schedule(back_ms, Event::Restart { node });
        }
        if self.meta.is_group() {
            self.meta_group_faults();
        } else if self.meta.meta_up(0)
            && self.rng.random_range(0..1000) < self.settings.meta_crash_per_mille
        {
            self.meta.crash(0);
            self.counters.meta_crashes += 1;
            let back_ms = self.now_ms + self.rng.random_range(100..=1_500);
            self.note(format!("meta crashes until {back_ms} ms"));
            self.schedule(back_ms, Event::MetaRestart { meta: 0 });
        }
        let running: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|node| node.alive && node.paused_until_ms <= self.now_ms)
            .map(|node| node.id)
            .collect();
        if !running.is_empty() && self.rng.random_range(0..1000) < self.settings.pause_per_mille {
            let node = running[self.rng.random_range(0..running.len())];
            let until_ms =
                self.now_ms + self.replication.grace_ms + self.rng.random_range(0..=1_500);
            self.nodes.get_mut(&node).expect("node").paused_until_ms = until_ms;
            self.last_restart_ms = self.last_restart_ms.max(until_ms);
            self.counters.pauses += 1;
            self.note(format!("pause {node} until {until_ms} ms"));
        }
        if self.rng.random_range(0..1000) < self.settings.store_fail_per_mille {
            self.meta.fail_saves(true);
            let heal_ms = self.now_ms + self.rng.random_range(100..=800);
            self.note(format!("meta's store fails its saves until {heal_ms} ms"));
            self.schedule(heal_ms, Event::StoreHeals);
        }
        if !running.is_empty() && self.rng.random_range(0..1000) < self.settings.truncate_per_mille
        {
            // Log truncation is the node's own work: a paused node does none.
            let node = running[self.rng.random_range(0..running.len())];
            self.truncate_log(node)?;
        }
        if self.rng.random_range(0..1000) < self.settings.cut_per_mille {
            let mut ends: Vec<Addr> = (0..self.meta.count()).map(Addr::Meta).collect();
            ends.extend(self.nodes.keys().map(|id| Addr::Node(*id)));
            let a = ends[self.rng.random_range(0..ends.len())];
            let b = ends[self.rng.random_range(0..ends.len())];
            if a != b {
                let until_ms = self.now_ms + self.rng.random_range(100..=1_500);
                self.note(format!("cut {a:?} <-> {b:?} until {until_ms} ms"));
                self.cuts.insert(Self::link(a, b), until_ms);
            }
        }
        Ok(())
    }

    /// `node` flushes one replica's storage on a shard and truncates the
    /// shard's log as the node's log GC does: each hosted partition's
    /// records at or below both its flushed decree and its learners' copy
    /// pins go, and records of partitions not hosted pin nothing — so a
    /// learner further behind needs a copy.
    fn truncate_log(&mut self, node: NodeId) -> Result<(), String> {
        let shard = self.rng.random_range(0..self.nodes[&node].shards);
        let held = self.nodes.get_mut(&node).expect("node");
        let host = &mut held.hosts[shard];
        let serving: Vec<Gpid> = host
            .replicas()
            .filter(|(_, replica)| !replica.is_failed())
            .map(|(gpid, _)| gpid)
            .collect();
        let flushed = if serving.is_empty() {
            None
        } else {
            let gpid = serving[self.rng.random_range(0..serving.len())];
            let engine = host.replica(gpid).expect("hosted").partition.engine();
            engine
                .flush()
                .map_err(|error| format!("{node} cannot flush: {error}"))?;
            Some((gpid, engine.flushed_decree().unwrap_or(0)))
        };
        host.release_copy_pins(false);
        let mut bounds: BTreeMap<Gpid, Decree> = BTreeMap::new();
        for (gpid, replica) in host.replicas() {
            let flushed = replica.partition.engine().flushed_decree().unwrap_or(0);
            bounds.insert(gpid, flushed.max(0) as Decree);
        }
        for (gpid, pin) in host.copy_pins() {
            if let Some(bound) = bounds.get_mut(&gpid) {
                *bound = (*bound).min(pin);
            }
        }
        // A duplication ships from its confirmed decree on: the log keeps
        // it, and all of it while no confirmed decree is known
        // (**dup-log-retained**, `DupShipping::log_retained_from`; the
        // simulated log never reaches the retention bound).
        for order in host.dup_orders() {
            let Some(retained) = held.shipping.log_retained_from(order) else {
                continue;
            };
            if let Some(bound) = bounds.get_mut(&order.gpid) {
                *bound = (*bound).min(retained);
            }
        }
        // Until its first ack since it started, a node does not know which
        // of its replicas are duplicated: it keeps their whole logs
        // (**dup-log-retained-at-start**).
        if self.dup.is_some() && !held.acked {
            bounds.values_mut().for_each(|bound| *bound = 0);
        }
        let orders: Vec<(i32, i64)> = host
            .dup_orders()
            .iter()
            .map(|order| (order.gpid.partition_index, order.confirmed_decree))
            .collect();
        let dropped = {
            let mut disk = held.disk.borrow_mut();
            let log = &mut disk.logs[shard];
            let before = log.records.len();
            log.records.retain(|record| {
                bounds
                    .get(&record.gpid)
                    .is_some_and(|bound| record.decree as Decree > *bound)
            });
            before - log.records.len()
        };
        self.counters.truncations += 1;
        self.note(format!(
            "{node} shard {shard} flushes {flushed:?}, truncates its log below {bounds:?}: {dropped} records dropped (dup orders {orders:?})"
        ));
        Ok(())
    }

    /// Power cut: the hosts and everything in memory are gone; each log
    /// loses its unsynced records, or keeps some and tears the next.
    fn crash(&mut self, node: NodeId) {
        let tear_chance = self.settings.torn_per_mille;
        let held = self.nodes.get_mut(&node).expect("node");
        held.alive = false;
        held.paused_until_ms = 0;
        held.hosts.clear();
        held.registry = Arc::new(NodeRegistry::new());
        held.syncing = vec![false; held.shards];
        held.restart_scheduled = false;
        held.early_beacon = false;
        held.backup_jobs.clear();
        held.shipping = new_shipping();
        held.acked = false;
        let mut lines = Vec::new();
        let mut torn = 0;
        {
            let mut disk = held.disk.borrow_mut();
            for (shard, log) in disk.logs.iter_mut().enumerate() {
                let unsynced = log
                    .records
                    .iter()
                    .filter(|record| record.position > log.durable)
                    .count();
                let tear = (unsynced > 0 && self.rng.random_range(0..1000) < tear_chance)
                    .then(|| self.rng.random_range(0..unsynced));
                torn += u32::from(tear.is_some());
                if let Some(line) = log.crash(tear) {
                    lines.push(format!("shard {shard}: {line}"));
                }
            }
        }
        self.counters.torn_tails += torn;
        self.applied.retain(|(held, _), _| *held != node);
        self.note(format!("crash {node}: {}", lines.join("; ")));
    }

    /// Starts `node` from its disk: a registry and one host per shard; each
    /// shard opens its replicas, replays its log up to a torn record, and
    /// finishes replay.
    fn boot(&mut self, node: NodeId) -> Result<(), String> {
        let now_ms = self.now_ms;
        let replication = self.replication;
        let clock = self.clock.clone();
        let faults = self.faults.clone();
        let unsynced_max = self.settings.log_unsynced_bytes_max;
        let held = self.nodes.get_mut(&node).expect("node");
        if held.alive {
            return Ok(());
        }
        if now_ms > 0 {
            held.incarnation += 1;
        }
        held.alive = true;
        held.started_ms = now_ms + held.offset_ms;
        let incarnation = held.incarnation;
        let registry = Arc::new(NodeRegistry::new());
        held.registry = registry.clone();
        let mut hosts = Vec::new();
        let mut cut = Vec::new();
        for shard in 0..held.shards {
            let io = SimIo::new(
                shard,
                clock.clone(),
                held.offset_ms,
                held.disk.clone(),
                faults.clone(),
                unsynced_max,
            );
            let mut host = ShardHost::new(
                io,
                shard,
                node_name(node),
                shard_address(node, shard),
                replication,
                registry.clone(),
                StorageLimits::default(),
            );
            let metas: Vec<_> = held
                .disk
                .borrow()
                .replicas
                .values()
                .filter(|replica| replica.meta.shard == shard)
                .map(|replica| replica.meta.clone())
                .collect();
            for meta in metas {
                host.open(&meta)
                    .map_err(|error| format!("{node} cannot open {meta:?}: {error}"))?;
            }
            let (records, torn) = held.disk.borrow_mut().logs[shard].read_to_tear();
            if torn {
                cut.push(shard);
            }
            for record in records {
                host.replay_record(
                    record.gpid,
                    record.ballot,
                    record.decree,
                    &record.payload,
                    || format!("position {} of shard {shard}'s log", record.position),
                );
            }
            host.finish_replay();
            hosts.push(host);
        }
        held.hosts = hosts;
        if now_ms > 0 {
            self.last_restart_ms = self.last_restart_ms.max(now_ms);
        }
        self.note(format!(
            "start {node} (incarnation {incarnation}); torn tails cut on shards {cut:?}"
        ));
        for shard in 0..self.nodes[&node].shards {
            self.with_host(node, shard, |_| ())?;
        }
        self.schedule(now_ms, Event::NodeTick { node, incarnation });
        self.schedule(
            now_ms,
            Event::Beacon {
                node,
                incarnation,
                early: false,
            },
        );
        Ok(())
    }
}

/// The partition of key `key_index` in a table of `count` partitions, by
/// its hash, as the client library routes it.
pub(super) fn partition_of(key_index: usize, count: u32) -> PartitionId {
    let key = sim_key(key_index);
    let hash = markab_core::key::partition_hash(&key.hash_key, &key.sort_key);
    markab_core::key::partition_index(hash, count)
}

/// The partition `pid` of the simulated table.
pub(super) fn gpid(pid: PartitionId) -> Gpid {
    Gpid {
        app_id: APP_ID,
        partition_index: pid as i32,
    }
}

/// What the client is told of a response: a refusal the node gives
/// before executing anything, an unknown outcome, or the answer.
fn reply_of(response: Response) -> Reply {
    let Err(error) = &response else {
        return Reply::Done(response);
    };
    match error.code {
        ErrorCode::UnknownOutcome => Reply::Unknown,
        ErrorCode::NotPrimary
        | ErrorCode::Busy
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::NotHosted
        | ErrorCode::StorageError
        | ErrorCode::WrongPartition
        | ErrorCode::StaleRoute
        | ErrorCode::Splitting
        | ErrorCode::RequestTooLarge => Reply::Refused(error.to_string()),
        _ => Reply::Done(response),
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
