//! The nemesis: fault kinds, the seeded schedule, and how each fault is
//! injected and healed.
//!
//! A schedule is a pure function of the seed and the options, so a seed
//! replays the same faults at the same offsets. Faults overlap (up to
//! `concurrent_max` at once) under two rules that keep the checkers
//! meaningful: a process is the target of at most one process fault (kill,
//! stop, damaged files) at a time, and a fault that damages a node's files
//! (a torn log tail, a corrupted RocksDB file) runs while no other process
//! fault is active: Markab promises to keep acknowledged writes when one
//! replica's disk loses data, not when every other replica is down too.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::cluster::ChaosCluster;
use super::system::{Cut, Sandbox};
use crate::bench::workload::Random;

/// Every kind of fault, in the order the docs list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL of one node; healed by starting it again.
    KillNode,
    /// SIGKILL of two nodes at once.
    KillNodes,
    /// SIGKILL of meta.
    KillMeta,
    /// SIGSTOP of one node for longer than the lease and the grace; healed
    /// by SIGCONT.
    StopNode,
    /// SIGSTOP of meta.
    StopMeta,
    /// A node cut from every other node, both ways.
    PartitionNodes,
    /// A node cut from meta.
    PartitionMeta,
    /// A node cut from the other nodes and from meta.
    PartitionAll,
    /// One node cannot send to another; the other way works.
    PartitionOneWay,
    /// A node's wall clock steps (forward or back, minutes to days).
    ClockNode,
    /// Meta's wall clock steps.
    ClockMeta,
    /// A node's data file system is full.
    DiskFull,
    /// A node's data disk is throttled to a few writes per second.
    SlowDisk,
    /// A node is killed and the tail of its newest log segment torn
    /// (truncated or overwritten); it restarts on the damaged log.
    TornLog,
    /// A node is killed and one of its RocksDB files corrupted; it restarts
    /// on the damaged file.
    CorruptRocksdb,
}

impl FaultKind {
    pub const ALL: [FaultKind; 15] = [
        FaultKind::KillNode,
        FaultKind::KillNodes,
        FaultKind::KillMeta,
        FaultKind::StopNode,
        FaultKind::StopMeta,
        FaultKind::PartitionNodes,
        FaultKind::PartitionMeta,
        FaultKind::PartitionAll,
        FaultKind::PartitionOneWay,
        FaultKind::ClockNode,
        FaultKind::ClockMeta,
        FaultKind::DiskFull,
        FaultKind::SlowDisk,
        FaultKind::TornLog,
        FaultKind::CorruptRocksdb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillNode => "kill-node",
            FaultKind::KillNodes => "kill-nodes",
            FaultKind::KillMeta => "kill-meta",
            FaultKind::StopNode => "stop-node",
            FaultKind::StopMeta => "stop-meta",
            FaultKind::PartitionNodes => "partition-nodes",
            FaultKind::PartitionMeta => "partition-meta",
            FaultKind::PartitionAll => "partition-all",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::ClockNode => "clock-node",
            FaultKind::ClockMeta => "clock-meta",
            FaultKind::DiskFull => "disk-full",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::TornLog => "torn-log",
            FaultKind::CorruptRocksdb => "corrupt-rocksdb",
        }
    }

    /// Whether it takes a process down or damages its files.
    fn is_process_fault(self) -> bool {
        matches!(
            self,
            FaultKind::KillNode
                | FaultKind::KillNodes
                | FaultKind::KillMeta
                | FaultKind::StopNode
                | FaultKind::StopMeta
                | FaultKind::TornLog
                | FaultKind::CorruptRocksdb
        )
    }

    pub fn damages_files(self) -> bool {
        matches!(self, FaultKind::TornLog | FaultKind::CorruptRocksdb)
    }

    fn targets_meta(self) -> bool {
        matches!(
            self,
            FaultKind::KillMeta | FaultKind::StopMeta | FaultKind::ClockMeta
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub id: usize,
    pub kind: FaultKind,
    /// Milliseconds after the workload starts.
    pub start_ms: u64,
    pub duration_ms: u64,
    /// Node indexes (empty for meta faults; two for kill-nodes and
    /// partition-one-way, the second being the one cut off from the first).
    pub nodes: Vec<usize>,
    /// Clock step in milliseconds; for damage faults a value that picks
    /// where and how the file is damaged.
    pub param: i64,
}

impl Fault {
    pub fn end_ms(&self) -> u64 {
        self.start_ms + self.duration_ms
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} at {:.1}s for {:.1}s",
            self.id,
            self.kind,
            self.start_ms as f64 / 1e3,
            self.duration_ms as f64 / 1e3
        )?;
        if !self.nodes.is_empty() {
            let nodes: Vec<String> = self.nodes.iter().map(|n| format!("node-{n}")).collect();
            write!(f, " on {}", nodes.join(","))?;
        }
        if matches!(self.kind, FaultKind::ClockNode | FaultKind::ClockMeta) {
            write!(f, " step {:+}s", self.param / 1000)?;
        }
        Ok(())
    }
}

/// What a schedule is drawn from.
#[derive(Clone, Debug)]
pub struct ScheduleOptions {
    pub nodes: usize,
    /// Kinds to draw from (all by default).
    pub kinds: Vec<FaultKind>,
    /// Faults in the schedule.
    pub faults: usize,
    /// Most faults active at once.
    pub concurrent_max: usize,
    /// Kinds that must appear at least once (placed first, in order).
    pub required: Vec<FaultKind>,
}

/// Lease and grace of meta's defaults plus margin: a stop shorter than
/// this would not test failover.
const STOP_MS_MIN: u64 = 1_600;

/// Draws the schedule of `seed`.
pub fn schedule(seed: u64, options: &ScheduleOptions) -> Vec<Fault> {
    let mut random = Random::new(seed ^ 0x6368_616f_735f_6e65);
    let mut faults: Vec<Fault> = Vec::new();
    let mut at_ms: u64 = 1_000 + random.below(1_000);
    let mut required = options.required.clone();
    let mut attempts = 0;
    while faults.len() < options.faults && attempts < options.faults * 50 {
        attempts += 1;
        let kind = if let Some(kind) = required.first().copied() {
            kind
        } else {
            options.kinds[random.below(options.kinds.len() as u64) as usize]
        };
        let duration_ms = match kind {
            FaultKind::StopNode | FaultKind::StopMeta => STOP_MS_MIN + random.below(2_400),
            FaultKind::TornLog | FaultKind::CorruptRocksdb => 500 + random.below(1_500),
            _ => 1_000 + random.below(3_000),
        };
        let active: Vec<&Fault> = faults
            .iter()
            .filter(|fault| fault.end_ms() > at_ms)
            .collect();
        let placed = if active.len() >= options.concurrent_max {
            None
        } else {
            place(kind, &active, options.nodes, &mut random)
        };
        match placed {
            Some((nodes, param)) => {
                if required.first() == Some(&kind) {
                    required.remove(0);
                }
                faults.push(Fault {
                    id: faults.len(),
                    kind,
                    start_ms: at_ms,
                    duration_ms,
                    nodes,
                    param,
                });
                at_ms += 300 + random.below(2_500);
            }
            None => at_ms += 200 + random.below(800),
        }
    }
    faults
}

/// Targets for a `kind` fault given the active ones, or `None` when the
/// rules forbid it now.
fn place(
    kind: FaultKind,
    active: &[&Fault],
    nodes: usize,
    random: &mut Random,
) -> Option<(Vec<usize>, i64)> {
    let busy_nodes: BTreeSet<usize> = active
        .iter()
        .filter(|fault| fault.kind.is_process_fault())
        .flat_map(|fault| fault.nodes.iter().copied())
        .collect();
    let meta_busy = active
        .iter()
        .any(|fault| fault.kind.is_process_fault() && fault.kind.targets_meta());
    let any_process_fault = active.iter().any(|fault| fault.kind.is_process_fault());
    let any_damage = active.iter().any(|fault| fault.kind.damages_files());
    if kind.is_process_fault() && any_damage {
        return None;
    }
    if kind.damages_files() && any_process_fault {
        return None;
    }
    // The same node is not twice in one kind of network or disk fault.
    let same_kind_nodes: BTreeSet<usize> = active
        .iter()
        .filter(|fault| fault.kind == kind)
        .flat_map(|fault| fault.nodes.iter().copied())
        .collect();
    let free: Vec<usize> = (0..nodes)
        .filter(|node| !busy_nodes.contains(node) || !kind.is_process_fault())
        .filter(|node| !same_kind_nodes.contains(node))
        .collect();
    let pick = |random: &mut Random, from: &[usize]| from[random.below(from.len() as u64) as usize];
    let step = |random: &mut Random| {
        let magnitude = 60_000 + random.below(2 * 86_400_000) as i64;
        if random.below(2) == 0 {
            magnitude
        } else {
            -magnitude
        }
    };
    match kind {
        FaultKind::KillMeta | FaultKind::StopMeta => (!meta_busy).then(|| (Vec::new(), 0)),
        FaultKind::ClockMeta => Some((Vec::new(), step(random))),
        FaultKind::KillNodes => {
            if free.len() < 2 {
                return None;
            }
            let first = pick(random, &free);
            let rest: Vec<usize> = free.iter().copied().filter(|&n| n != first).collect();
            Some((vec![first, pick(random, &rest)], 0))
        }
        FaultKind::PartitionOneWay => {
            if free.is_empty() || nodes < 2 {
                return None;
            }
            let from = pick(random, &free);
            let others: Vec<usize> = (0..nodes).filter(|&n| n != from).collect();
            Some((vec![from, pick(random, &others)], 0))
        }
        FaultKind::ClockNode => {
            let node = pick(random, &(0..nodes).collect::<Vec<_>>());
            Some((vec![node], step(random)))
        }
        _ => {
            if free.is_empty() {
                return None;
            }
            Some((
                vec![pick(random, &free)],
                random.next_u64() as i64 & i64::MAX,
            ))
        }
    }
}

/// What the nemesis did, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub fault: usize,
    pub kind: FaultKind,
    /// `inject` or `heal`.
    pub action: &'static str,
    /// Milliseconds after the workload started.
    pub at_ms: u64,
    pub detail: String,
}

/// Injects and heals faults on one cluster.
pub struct Nemesis {
    cuts: BTreeSet<(usize, Cut)>,
}

impl Nemesis {
    pub fn new() -> Nemesis {
        Nemesis {
            cuts: BTreeSet::new(),
        }
    }

    /// Injects `fault`; returns what was done.
    pub fn inject(
        &mut self,
        fault: &Fault,
        cluster: &mut ChaosCluster,
        sandbox: &mut Sandbox,
    ) -> anyhow::Result<String> {
        let node = fault.nodes.first().copied();
        match fault.kind {
            FaultKind::KillNode | FaultKind::KillNodes => {
                for &index in &fault.nodes {
                    cluster.kill(Some(index));
                }
                Ok("SIGKILL".into())
            }
            FaultKind::KillMeta => {
                cluster.kill(None);
                Ok("SIGKILL".into())
            }
            FaultKind::StopNode => {
                cluster.signal_stop(node, true);
                Ok("SIGSTOP".into())
            }
            FaultKind::StopMeta => {
                cluster.signal_stop(None, true);
                Ok("SIGSTOP".into())
            }
            FaultKind::PartitionNodes
            | FaultKind::PartitionMeta
            | FaultKind::PartitionAll
            | FaultKind::PartitionOneWay => {
                for cut in cuts_of(fault, cluster) {
                    self.cuts.insert((fault.id, cut));
                }
                self.apply_cuts(sandbox)?;
                Ok(format!("{} nft rule(s) active", self.cuts.len()))
            }
            FaultKind::ClockNode => {
                cluster.set_clock(node, fault.param)?;
                Ok(format!("wall clock offset {} ms", fault.param))
            }
            FaultKind::ClockMeta => {
                cluster.set_clock(None, fault.param)?;
                Ok(format!("wall clock offset {} ms", fault.param))
            }
            FaultKind::DiskFull => {
                let disk = cluster.proc(node).disk.expect("nodes have disks");
                sandbox.fill_disk(disk)?;
                Ok("ballast over all free space".into())
            }
            FaultKind::SlowDisk => {
                let proc = cluster.proc(node);
                let disk = proc.disk.expect("nodes have disks");
                sandbox.throttle_disk(&proc.groups, disk, 20, 256 * 1024)?;
                Ok("writes throttled to 20 IO/s, 256 KiB/s".into())
            }
            FaultKind::TornLog => {
                cluster.kill(node);
                tear_log(&cluster.proc(node).data_dir, fault.param as u64)
            }
            FaultKind::CorruptRocksdb => {
                cluster.kill(node);
                corrupt_rocksdb(&cluster.proc(node).data_dir, fault.param as u64)
            }
        }
    }

    /// Heals `fault`.
    pub fn heal(
        &mut self,
        fault: &Fault,
        cluster: &mut ChaosCluster,
        sandbox: &mut Sandbox,
    ) -> anyhow::Result<String> {
        let node = fault.nodes.first().copied();
        match fault.kind {
            FaultKind::KillNode
            | FaultKind::KillNodes
            | FaultKind::TornLog
            | FaultKind::CorruptRocksdb => {
                for &index in &fault.nodes {
                    cluster.ensure_running(Some(index))?;
                }
                Ok("started again".into())
            }
            FaultKind::KillMeta => {
                cluster.ensure_running(None)?;
                Ok("started again".into())
            }
            FaultKind::StopNode | FaultKind::StopMeta => {
                let target = if fault.kind == FaultKind::StopMeta {
                    None
                } else {
                    node
                };
                cluster.signal_stop(target, false);
                Ok("SIGCONT".into())
            }
            FaultKind::PartitionNodes
            | FaultKind::PartitionMeta
            | FaultKind::PartitionAll
            | FaultKind::PartitionOneWay => {
                self.cuts.retain(|(id, _)| *id != fault.id);
                self.apply_cuts(sandbox)?;
                Ok(format!("{} nft rule(s) left", self.cuts.len()))
            }
            FaultKind::ClockNode => {
                cluster.set_clock(node, 0)?;
                Ok("wall clock offset 0".into())
            }
            FaultKind::ClockMeta => {
                cluster.set_clock(None, 0)?;
                Ok("wall clock offset 0".into())
            }
            FaultKind::DiskFull => {
                let disk = cluster.proc(node).disk.expect("nodes have disks");
                sandbox.free_disk(disk)?;
                // A node that stopped on the full disk starts again.
                if cluster.proc(node).is_running() {
                    Ok("ballast removed".into())
                } else {
                    cluster.ensure_running(node)?;
                    Ok("ballast removed; the node started again".into())
                }
            }
            FaultKind::SlowDisk => {
                let proc = cluster.proc(node);
                let disk = proc.disk.expect("nodes have disks");
                sandbox.throttle_disk(&proc.groups, disk, 0, 0)?;
                Ok("throttle removed".into())
            }
        }
    }

    fn apply_cuts(&self, sandbox: &mut Sandbox) -> anyhow::Result<()> {
        let cuts: BTreeSet<Cut> = self.cuts.iter().map(|(_, cut)| cut.clone()).collect();
        sandbox.set_cuts(&cuts)
    }
}

impl Default for Nemesis {
    fn default() -> Nemesis {
        Nemesis::new()
    }
}

/// The directions of traffic a partition fault drops.
fn cuts_of(fault: &Fault, cluster: &ChaosCluster) -> Vec<Cut> {
    let node = fault.nodes[0];
    let group = |index: usize| cluster.nodes[index].groups.nft_path.clone();
    let others: Vec<usize> = (0..cluster.nodes.len()).filter(|&n| n != node).collect();
    let mut cuts = Vec::new();
    let between_nodes = |cuts: &mut Vec<Cut>| {
        for &other in &others {
            cuts.push(Cut {
                from: group(node),
                ports: cluster.nodes[other].ports.clone(),
            });
            cuts.push(Cut {
                from: group(other),
                ports: cluster.nodes[node].ports.clone(),
            });
        }
    };
    let to_meta = |cuts: &mut Vec<Cut>| {
        cuts.push(Cut {
            from: group(node),
            ports: cluster.meta.ports.clone(),
        });
    };
    match fault.kind {
        FaultKind::PartitionNodes => between_nodes(&mut cuts),
        FaultKind::PartitionMeta => to_meta(&mut cuts),
        FaultKind::PartitionAll => {
            between_nodes(&mut cuts);
            to_meta(&mut cuts);
        }
        FaultKind::PartitionOneWay => cuts.push(Cut {
            from: group(node),
            ports: cluster.nodes[fault.nodes[1]].ports.clone(),
        }),
        _ => {}
    }
    cuts
}

/// Files under `dir` whose name satisfies `wanted`, sorted.
fn files_under(dir: &Path, wanted: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if wanted(&entry.file_name().to_string_lossy()) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Tears the tail of the newest log segment of one of the node's shards:
/// cuts it short or overwrites bytes near its end. `choice` picks the
/// shard, the way and the offset.
pub fn tear_log(data_dir: &Path, choice: u64) -> anyhow::Result<String> {
    let log_dir = data_dir.join("log");
    let mut shards: Vec<PathBuf> = std::fs::read_dir(&log_dir)
        .with_context(|| format!("read {}", log_dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    shards.sort();
    anyhow::ensure!(!shards.is_empty(), "no shard logs in {}", log_dir.display());
    let shard = &shards[(choice % shards.len() as u64) as usize];
    let segments = files_under(shard, &|name| name.ends_with(".log"));
    let segment = segments
        .last()
        .with_context(|| format!("no log segments in {}", shard.display()))?;
    let length = std::fs::metadata(segment)?.len();
    let span = length.clamp(1, 64 * 1024);
    let back = 1 + (choice >> 8) % span;
    let offset = length - back.min(length);
    if (choice >> 4).is_multiple_of(2) {
        let file = std::fs::OpenOptions::new().write(true).open(segment)?;
        file.set_len(offset)?;
        Ok(format!(
            "cut {} from {} bytes to {offset}",
            segment.display(),
            length
        ))
    } else {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(segment)?;
        let garbage: Vec<u8> = (0..back.min(512))
            .map(|i| (choice >> (i % 56)) as u8 ^ 0xa5)
            .collect();
        file.write_all_at(&garbage, offset)?;
        file.sync_all()?;
        Ok(format!(
            "overwrote {} bytes of {} at offset {offset}",
            garbage.len(),
            segment.display()
        ))
    }
}

/// Corrupts one RocksDB file of one of the node's replicas so that opening
/// it finds the damage: an SST file's footer (RocksDB opens every table
/// file at start) or the middle of a MANIFEST. Damage inside an SST's data
/// blocks is found only when those blocks are read, not at restart, and is
/// not injected.
pub fn corrupt_rocksdb(data_dir: &Path, choice: u64) -> anyhow::Result<String> {
    let mut candidates = files_under(data_dir, &|name| name.ends_with(".sst"));
    candidates.extend(files_under(data_dir, &|name| name.starts_with("MANIFEST-")));
    anyhow::ensure!(
        !candidates.is_empty(),
        "no RocksDB files under {}",
        data_dir.display()
    );
    let file_path = &candidates[(choice % candidates.len() as u64) as usize];
    let length = std::fs::metadata(file_path)?.len();
    anyhow::ensure!(length > 0, "{} is empty", file_path.display());
    let is_table = file_path
        .extension()
        .is_some_and(|extension| extension == "sst");
    let (offset, bytes) = if is_table {
        let bytes = length.min(48);
        (length - bytes, bytes)
    } else {
        let offset = (choice >> 8) % length;
        (offset, (length - offset).min(64))
    };
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file_path)?;
    let mut original = vec![0u8; bytes as usize];
    file.read_exact_at(&mut original, offset)?;
    let flipped: Vec<u8> = original.iter().map(|byte| !byte).collect();
    file.write_all_at(&flipped, offset)?;
    file.sync_all()?;
    Ok(format!(
        "inverted {bytes} bytes of {} at offset {offset}",
        file_path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(kinds: Vec<FaultKind>) -> ScheduleOptions {
        ScheduleOptions {
            nodes: 4,
            kinds,
            faults: 40,
            concurrent_max: 2,
            required: Vec::new(),
        }
    }

    // Proves a seed replays the same schedule and another seed draws
    // another.
    #[test]
    fn a_seed_replays_its_schedule() {
        let all = options(FaultKind::ALL.to_vec());
        assert_eq!(schedule(7, &all), schedule(7, &all));
        assert_ne!(schedule(7, &all), schedule(8, &all));
    }

    // Proves the placement rules hold over many seeds: at most
    // concurrent_max faults at once, one process fault per process, and
    // damage faults alone among process faults.
    #[test]
    fn schedules_keep_the_placement_rules() {
        let all = options(FaultKind::ALL.to_vec());
        for seed in 0..200 {
            let faults = schedule(seed, &all);
            assert_eq!(faults.len(), 40, "seed {seed}");
            for fault in &faults {
                let overlapping: Vec<&Fault> = faults
                    .iter()
                    .filter(|other| other.id < fault.id && other.end_ms() > fault.start_ms)
                    .collect();
                assert!(overlapping.len() < 2, "seed {seed}: {fault}");
                for other in &overlapping {
                    if fault.kind.is_process_fault() && other.kind.is_process_fault() {
                        assert!(
                            !fault.kind.damages_files() && !other.kind.damages_files(),
                            "seed {seed}: {fault} with {other}"
                        );
                        let shared = fault.nodes.iter().any(|node| other.nodes.contains(node));
                        assert!(!shared, "seed {seed}: {fault} with {other}");
                        assert!(!(fault.kind.targets_meta() && other.kind.targets_meta()));
                    }
                }
                if matches!(fault.kind, FaultKind::StopNode | FaultKind::StopMeta) {
                    assert!(fault.duration_ms >= STOP_MS_MIN);
                }
            }
        }
    }

    // Proves required kinds are all placed, first, in order.
    #[test]
    fn required_kinds_come_first() {
        let mut every = options(FaultKind::ALL.to_vec());
        every.required = FaultKind::ALL.to_vec();
        every.faults = FaultKind::ALL.len();
        let faults = schedule(3, &every);
        let kinds: Vec<FaultKind> = faults.iter().map(|fault| fault.kind).collect();
        assert_eq!(kinds, FaultKind::ALL.to_vec());
    }

    // Proves tear_log damages the newest segment's tail, both ways.
    #[test]
    fn tear_log_damages_the_newest_segment() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("log/shard-0");
        std::fs::create_dir_all(&shard).unwrap();
        let old = shard.join(format!("{:020}.log", 1));
        let new = shard.join(format!("{:020}.log", 2));
        std::fs::write(&old, vec![7u8; 10_000]).unwrap();
        std::fs::write(&new, vec![7u8; 10_000]).unwrap();
        let cut = tear_log(dir.path(), 0x1000).unwrap();
        assert!(cut.starts_with("cut"), "{cut}");
        assert!(std::fs::metadata(&new).unwrap().len() < 10_000);
        assert_eq!(std::fs::read(&old).unwrap(), vec![7u8; 10_000]);
        std::fs::write(&new, vec![7u8; 10_000]).unwrap();
        let overwritten = tear_log(dir.path(), 0x1010).unwrap();
        assert!(overwritten.starts_with("overwrote"), "{overwritten}");
        assert_ne!(std::fs::read(&new).unwrap(), vec![7u8; 10_000]);
    }

    // Proves corrupt_rocksdb damages an SST file's footer or a MANIFEST.
    #[test]
    fn corrupt_rocksdb_changes_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let rdb = dir.path().join("replica/rdb");
        std::fs::create_dir_all(&rdb).unwrap();
        std::fs::write(rdb.join("MANIFEST-000001"), vec![1u8; 100]).unwrap();
        std::fs::write(rdb.join("000009.sst"), vec![1u8; 1000]).unwrap();
        let what = corrupt_rocksdb(dir.path(), 0x2000).unwrap();
        assert!(what.contains("000009.sst"), "{what}");
        let table = std::fs::read(rdb.join("000009.sst")).unwrap();
        assert_eq!(table[..952], vec![1u8; 952][..], "only the footer changes");
        assert_ne!(table[952..], vec![1u8; 48][..]);
        assert_eq!(
            std::fs::read(rdb.join("MANIFEST-000001")).unwrap(),
            vec![1u8; 100]
        );
        let what = corrupt_rocksdb(dir.path(), 0x2001).unwrap();
        assert!(what.contains("MANIFEST-000001"), "{what}");
        assert_ne!(
            std::fs::read(rdb.join("MANIFEST-000001")).unwrap(),
            vec![1u8; 100]
        );
    }
}
