//! `markab chaos`: a fault-injection run against a real
//! cluster on this machine (docs/chaos.md).
//!
//! Each round starts meta and N nodes as separate processes in
//! `DIR/round-<i>-seed-<s>`, runs clients that record a history through the
//! client library, lets the nemesis inject the seed's schedule of faults,
//! heals everything, waits until every partition has its full replica
//! count again, reads every key a last time and checks the history:
//! per-key linearizability of registers and counters, the counters' bounds
//! and distinct returns, the sets' acknowledged elements, no lost
//! acknowledged write, recovery within the bound. An inconclusive check is
//! a failure. The round's report (`report.txt`, `report.json`, the history
//! in `history.jsonl`) stays in its directory; a round that fails keeps its
//! whole directory, and the run stops there.

pub mod cluster;
pub mod nemesis;
pub mod report;
pub mod system;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{Client, ClientOptions};
use crate::wire::CreateTableRequest;
use cluster::ChaosCluster;
use nemesis::{Event, FaultKind, Nemesis, ScheduleOptions};
use system::Sandbox;
use workload::{History, WorkloadOptions};

/// The table every round writes.
pub const TABLE: &str = "chaos";

/// Set by SIGINT or SIGTERM: the round in progress stops, its processes
/// are killed and everything the harness made is removed.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// `markab chaos`: options.
#[derive(Clone, Debug, clap::Args)]
pub struct ChaosArgs {
    /// Directory of the rounds (`DIR/round-<i>-seed-<s>`); a passing
    /// round's cluster data is removed, its report kept.
    #[arg(long, default_value = "chaos")]
    pub dir: PathBuf,
    /// First seed; round i uses seed + i. Replaying a seed replays its
    /// schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Rounds to run (each a fresh cluster).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Soak: run rounds with a fresh seed each until SECONDS have passed
    /// (then finish the round in progress) or a round fails.
    #[arg(long, value_name = "SECONDS")]
    pub soak_s: Option<u64>,
    /// Nodes per cluster (4 or more lets meta re-replicate while one is
    /// down).
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Shards per node; `alternate` (the default) gives odd rounds 1 and
    /// even rounds 2.
    #[arg(long, default_value = "alternate")]
    pub shards: String,
    /// Partitions of the table.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Faults per round.
    #[arg(long, default_value_t = 10)]
    pub faults: usize,
    /// Most faults active at once.
    #[arg(long, default_value_t = 2)]
    pub concurrent: usize,
    /// Fault kinds to draw from (comma-separated; all by default).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<FaultKind>,
    /// Place every kind of --kinds once per run (over the rounds, in
    /// order) before drawing at random.
    #[arg(long)]
    pub every_kind: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Target operations per second over all clients.
    #[arg(long, default_value_t = 300)]
    pub rate: u64,
    /// Longest wait, after healing, for every partition to have its full
    /// replica count again, in seconds; longer is a failure.
    #[arg(long, default_value_t = 60)]
    pub recovery_timeout_s: u64,
}

pub fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    system::check_capabilities()?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // SAFETY: the handler only stores to an atomic flag.
        unsafe {
            signal_hook::low_level::register(signal, || INTERRUPTED.store(true, Ordering::Relaxed))
        }
        .context("install a signal handler")?;
    }
    anyhow::ensure!(args.nodes >= 3, "--nodes must be at least 3");
    anyhow::ensure!(args.faults >= 1, "--faults must be at least 1");
    anyhow::ensure!(
        args.clients >= 1 && args.rate >= 1,
        "--clients and --rate must be positive"
    );
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let kinds = if args.kinds.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.kinds.clone()
    };
    let started = Instant::now();
    let mut summary = report::RunSummary::default();
    let mut required: Vec<FaultKind> = if args.every_kind {
        kinds.clone()
    } else {
        Vec::new()
    };
    let mut round = 0;
    let seed_base = match args.soak_s {
        // A soak draws fresh seeds from the time unless --seed was given.
        Some(_) if args.seed == 1 => crate::clock::unix_ms(),
        _ => args.seed,
    };
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
        let more = match args.soak_s {
            Some(seconds) => started.elapsed() < Duration::from_secs(seconds),
            None => round < args.rounds,
        };
        if !more {
            break;
        }
        let seed = seed_base.wrapping_add(round as u64);
        let shards = match args.shards.as_str() {
            "alternate" => 1 + round % 2,
            count => count
                .parse()
                .context("--shards is a count or \"alternate\"")?,
        };
        let take = required.len().min(args.faults);
        let schedule_options = ScheduleOptions {
            nodes: args.nodes,
            kinds: kinds.clone(),
            faults: args.faults,
            concurrent_max: args.concurrent.max(1),
            required: required.drain(..take).collect(),
        };
        let round_dir = dir.join(format!("round-{round}-seed-{seed}"));
        println!(
            "markab chaos: round {round}, seed {seed}, {} nodes x {shards} shard(s), {}",
            args.nodes,
            round_dir.display()
        );
        let outcome = match run_round(&args, round, seed, shards, &schedule_options, &round_dir) {
            Ok(outcome) => outcome,
            Err(_) if INTERRUPTED.load(Ordering::Relaxed) => {
                println!("markab chaos: interrupted in round {round}; cleaned up");
                break;
            }
            Err(error) => return Err(error),
        };
        print!("{}", outcome.text);
        summary.add(&outcome);
        let failed = !outcome.violations.is_empty();
        if !failed {
            // Keep the reports, drop the data.
            for sub in ["meta", "disks"] {
                let _ = std::fs::remove_dir_all(round_dir.join(sub));
            }
            for index in 0..args.nodes {
                let _ = std::fs::remove_dir_all(round_dir.join(format!("node-{index}")));
            }
        }
        round += 1;
        if failed {
            println!(
                "markab chaos: round {} (seed {seed}) FAILED; evidence kept in {}",
                round - 1,
                round_dir.display()
            );
            break;
        }
    }
    let text = summary.text();
    print!("{text}");
    std::fs::write(dir.join("summary.txt"), &text)?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(if summary.failed_rounds > 0 {
        ExitCode::FAILURE
    } else if INTERRUPTED.load(Ordering::Relaxed) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether a disk-full fault on `node` is injected and not healed.
fn disk_full_active(schedule: &[nemesis::Fault], events: &[Event], node: usize) -> bool {
    schedule.iter().any(|fault| {
        fault.kind == FaultKind::DiskFull
            && fault.nodes[0] == node
            && events
                .iter()
                .any(|event| event.fault == fault.id && event.action == "inject")
            && !events
                .iter()
                .any(|event| event.fault == fault.id && event.action == "heal")
    })
}

/// Reaps processes that exited by themselves. A node that stops on its
/// own full disk (its mutation log failed: the documented fail-stop) is an
/// event: it starts again when the fault heals, or at once if the fault
/// healed while it was shutting down. Any other exit is a crash.
fn reap(
    cluster: &mut ChaosCluster,
    schedule: &[nemesis::Fault],
    events: &mut Vec<Event>,
    crashes: &mut Vec<String>,
    origin: Instant,
) {
    for (target, detail) in cluster.reap_exits() {
        let now_ms = origin.elapsed().as_millis() as u64;
        let injected = |fault: &nemesis::Fault| {
            events
                .iter()
                .any(|event| event.fault == fault.id && event.action == "inject")
        };
        let healed = |fault: &nemesis::Fault| {
            events
                .iter()
                .any(|event| event.fault == fault.id && event.action == "heal")
        };
        // The disk-full fault on this node that is active, else one healed
        // in the last ten seconds (a node takes a while to shut down).
        let on_node = |fault: &&nemesis::Fault| {
            fault.kind == FaultKind::DiskFull
                && target.is_some_and(|node| fault.nodes[0] == node)
                && injected(fault)
        };
        let disk_full = schedule
            .iter()
            .filter(on_node)
            .find(|fault| !healed(fault))
            .or_else(|| {
                schedule
                    .iter()
                    .filter(on_node)
                    .find(|fault| now_ms < fault.end_ms() + 10_000)
            });
        let fail_stop =
            detail.contains("the node stopped") && detail.contains("No space left on device");
        match disk_full {
            Some(fault) if fail_stop => {
                let mut text =
                    "the node stopped: a write of its durable state failed on the full disk (fail-stop)"
                        .to_string();
                if healed(fault) {
                    match cluster.ensure_running(target) {
                        Ok(()) => text.push_str("; started again"),
                        Err(error) => {
                            crashes.push(format!("restart after the full disk: {error:#}"))
                        }
                    }
                }
                events.push(Event {
                    fault: fault.id,
                    kind: fault.kind,
                    action: "exit",
                    at_ms: now_ms,
                    detail: text,
                });
            }
            _ => crashes.push(detail),
        }
    }
}

/// Runs one round in `round_dir`.
pub fn run_round(
    args: &ChaosArgs,
    round: usize,
    seed: u64,
    shards: usize,
    schedule_options: &ScheduleOptions,
    round_dir: &Path,
) -> anyhow::Result<report::RoundReport> {
    std::fs::create_dir_all(round_dir)?;
    let schedule = nemesis::schedule(seed, schedule_options);
    let mut sandbox = Sandbox::new(round)?;
    let mut cluster = ChaosCluster::start(round_dir, &mut sandbox, args.nodes, shards)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client_options = ClientOptions {
        operation_timeout: Duration::from_millis(1_000),
        connect_timeout: Duration::from_millis(500),
        meta_timeout: Duration::from_millis(1_000),
        ..ClientOptions::default()
    };
    let metas = vec![cluster.meta_address.clone()];
    let replicas = 3.min(args.nodes) as i32;
    let (client, table) = runtime.block_on(async {
        let client = Client::connect_meta(&metas, client_options).await?;
        client
            .create_table(CreateTableRequest {
                table: TABLE.into(),
                partition_count: args.partitions as i32,
                replica_count: replicas,
                envs: vec![],
                success_if_exist: true,
            })
            .await?;
        let table = client.open_table(TABLE).await?;
        anyhow::Ok((client, table))
    })?;
    // The table is whole before the first fault.
    if let Err(last) = report::wait_full(&runtime, &client, replicas, Duration::from_secs(60)) {
        anyhow::bail!(
            "the table did not get its full replica count at the start; meta said:\n{last}"
        );
    }

    let history: History = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let clients = runtime.spawn(workload::run_clients(
        table.clone(),
        WorkloadOptions {
            clients: args.clients,
            rate: args.rate,
            seed,
        },
        origin,
        history.clone(),
        stop.clone(),
    ));

    // The nemesis: inject and heal at the schedule's offsets.
    let mut steps: Vec<(u64, bool, usize)> = Vec::new();
    for fault in &schedule {
        steps.push((fault.start_ms, true, fault.id));
        steps.push((fault.end_ms(), false, fault.id));
    }
    steps.sort();
    let mut nemesis = Nemesis::new();
    let mut events: Vec<Event> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut crashes: Vec<String> = Vec::new();
    let mut skipped: Vec<usize> = Vec::new();
    for (at_ms, inject, id) in steps {
        while (origin.elapsed().as_millis() as u64) < at_ms {
            interrupted()?;
            reap(&mut cluster, &schedule, &mut events, &mut crashes, origin);
            std::thread::sleep(Duration::from_millis(10));
        }
        reap(&mut cluster, &schedule, &mut events, &mut crashes, origin);
        let fault = &schedule[id];
        if !inject && skipped.contains(&id) {
            continue;
        }
        if inject && fault.kind.damages_files() {
            // A damaged disk is one replica's fault: it is injected only
            // while every partition has all its replicas.
            if let Err(last) =
                report::wait_full(&runtime, &client, replicas, Duration::from_secs(10))
            {
                skipped.push(id);
                events.push(Event {
                    fault: id,
                    kind: fault.kind,
                    action: "skip",
                    at_ms: origin.elapsed().as_millis() as u64,
                    detail: format!(
                        "not injected: the table was not at its full replica count within 10 s ({} bytes of state in the report)",
                        last.len()
                    ),
                });
                continue;
            }
        }
        let result = if inject {
            nemesis.inject(fault, &mut cluster, &mut sandbox)
        } else {
            nemesis.heal(fault, &mut cluster, &mut sandbox)
        };
        let detail = match result {
            Ok(detail) => detail,
            // A node cannot start while its disk is full (it stops, naming
            // the cause): the disk-full fault's heal starts it.
            Err(error)
                if !inject
                    && format!("{error:#}").contains("No space left on device")
                    && fault
                        .nodes
                        .iter()
                        .any(|node| disk_full_active(&schedule, &events, *node)) =>
            {
                "the node cannot start on its full disk (fail-stop); it starts when that fault heals"
                    .to_string()
            }
            Err(error) => {
                let text = format!(
                    "{} of {fault}: {error:#}",
                    if inject { "inject" } else { "heal" }
                );
                errors.push(text.clone());
                text
            }
        };
        events.push(Event {
            fault: id,
            kind: fault.kind,
            action: if inject { "inject" } else { "heal" },
            at_ms: origin.elapsed().as_millis() as u64,
            detail,
        });
    }
    // Load goes on a little after the last heal, then stops.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        reap(&mut cluster, &schedule, &mut events, &mut crashes, origin);
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = runtime.block_on(clients);
    let workload_end_ms = origin.elapsed().as_millis() as u64;

    // Heal whatever is left (every fault healed on schedule; a process
    // that stopped itself is started again here).
    reap(&mut cluster, &schedule, &mut events, &mut crashes, origin);
    for index in 0..args.nodes {
        if let Err(error) = cluster.ensure_running(Some(index)) {
            errors.push(format!("restart node-{index} after the faults: {error:#}"));
        }
    }
    if let Err(error) = cluster.ensure_running(None) {
        errors.push(format!("restart meta after the faults: {error:#}"));
    }
    let healed_at = Instant::now();
    let recovered = report::wait_full(
        &runtime,
        &client,
        replicas,
        Duration::from_secs(args.recovery_timeout_s),
    );
    let recovery_ms = match recovered {
        Ok(()) => Some(healed_at.elapsed().as_millis() as u64),
        Err(last) => {
            std::fs::write(round_dir.join("not-recovered.txt"), last)?;
            None
        }
    };
    let reads_deadline = Instant::now() + Duration::from_secs(30);
    let reads_complete = runtime.block_on(workload::final_reads(
        &table,
        origin,
        &history,
        reads_deadline,
    ));
    reap(&mut cluster, &schedule, &mut events, &mut crashes, origin);
    cluster.kill_all();
    drop(cluster);
    drop(sandbox);
    let history = std::mem::take(&mut *history.lock().expect("history lock"));
    let input = report::RoundInput {
        round,
        seed,
        nodes: args.nodes,
        shards,
        schedule,
        events,
        history,
        workload_end_ms,
        recovery_ms,
        recovery_timeout_s: args.recovery_timeout_s,
        reads_complete,
        nemesis_errors: errors,
        crashes,
    };
    report::analyze(&input, round_dir)
}
