//! `markab failover-bench`: measures how long partitions stop accepting
//! writes when a node hosting primaries dies.
//!
//! Each round starts a fresh onebox cluster (meta and `--nodes` nodes as
//! child processes, a table of `--replicas` replicas) in `DIR/round-<i>`,
//! runs a write load on every partition (`--writers` writers per
//! partition, each writing one key of its partition again and again),
//! SIGKILLs the node that hosts the most primaries, and records for every
//! partition whose primary it was the time from the kill until a write
//! *started after the kill* is acknowledged. The round's failover time is
//! the slowest affected partition's; the report gives every round and the
//! median and worst over rounds, then one JSON line.
//!
//! What the figure includes: meta's grace period (a node is declared dead
//! `grace_ms` after its last beacon), the new configuration's persistence
//! and delivery in the next beacon ack, the new primary's re-prepare of its
//! tail, and the client's route refresh (at most one per 100 ms per table)
//! and retry backoff — i.e. what an application sees. Measured, never
//! asserted: see docs/replication.md, "Failover time".

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{Client, ClientOptions, Table};
use crate::onebox::{OneboxArgs, ToolCluster, READY_TIMEOUT_DEFAULT_S};

/// `markab failover-bench`: options.
#[derive(Clone, Debug, clap::Args)]
pub struct FailoverArgs {
    /// Directory for the rounds' clusters (`DIR/round-<i>`); must not exist
    /// or be empty, and is kept for inspection.
    #[arg(long, default_value = "failover-bench")]
    pub dir: PathBuf,
    /// Rounds: fresh cluster, load, one SIGKILL, measurement.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Shards per node.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Partitions of the table (a power of two).
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Replicas per partition.
    #[arg(long, default_value_t = 3)]
    pub replicas: i32,
    /// Concurrent writers per partition.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Seconds of load before the kill.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// Longest wait for every affected partition to accept writes again,
    /// in seconds; a round that exceeds it is reported as failed.
    #[arg(long, default_value_t = 30)]
    pub recovery_timeout_s: u64,
}

/// Per-operation timeout of the load's client: short, so that a write
/// caught by the failover gives way to a fresh one soon.
const WRITE_TIMEOUT: Duration = Duration::from_millis(250);
const TABLE: &str = "failover";

/// One round's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Round {
    pub round: usize,
    pub victim: String,
    /// Partitions whose primary was on the victim.
    pub affected: Vec<u32>,
    /// Milliseconds from the kill until each affected partition
    /// acknowledged a write started after the kill (same order).
    pub recovered_ms: Vec<f64>,
    /// The slowest affected partition (the round's failover time).
    pub failover_ms: f64,
}

/// Runs the rounds and prints the report.
pub fn run(args: FailoverArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.kills >= 1, "--kills must be at least 1");
    anyhow::ensure!(
        args.nodes >= 2 && args.replicas >= 2 && args.replicas as usize <= args.nodes,
        "failover needs --nodes >= --replicas >= 2"
    );
    anyhow::ensure!(args.writers >= 1, "--writers must be at least 1");
    if args.dir.exists() {
        let empty = std::fs::read_dir(&args.dir)
            .with_context(|| format!("cannot read {}", args.dir.display()))?
            .next()
            .is_none();
        anyhow::ensure!(
            empty,
            "{} exists and is not empty; name a fresh --dir",
            args.dir.display()
        );
    }
    let mut rounds = Vec::with_capacity(args.kills);
    for round in 0..args.kills {
        let result = run_round(&args, round)?;
        println!(
            "round {round}: killed {} (primary of partitions {:?}); writes resumed after {:.0} ms (per partition: {})",
            result.victim,
            result.affected,
            result.failover_ms,
            result
                .recovered_ms
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        rounds.push(result);
    }
    let mut times: Vec<f64> = rounds.iter().map(|round| round.failover_ms).collect();
    times.sort_by(f64::total_cmp);
    let median = median(&times);
    let worst = *times.last().expect("at least one round");
    println!(
        "failover over {} kills: median {median:.0} ms, worst {worst:.0} ms (nodes {}, replicas {}, partitions {})",
        rounds.len(),
        args.nodes,
        args.replicas,
        args.partitions
    );
    let json = serde_json::json!({
        "kills": rounds.len(),
        "nodes": args.nodes,
        "shards": args.shards,
        "replicas": args.replicas,
        "partitions": args.partitions,
        "median_ms": median,
        "worst_ms": worst,
        "rounds": rounds,
    });
    println!("FAILOVER_JSON {json}");
    Ok(())
}

/// The median of sorted `values`.
pub fn median(values: &[f64]) -> f64 {
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn run_round(args: &FailoverArgs, round: usize) -> anyhow::Result<Round> {
    let onebox = OneboxArgs {
        dir: args.dir.join(format!("round-{round}")),
        nodes: args.nodes,
        shards: args.shards,
        table: TABLE.to_string(),
        partitions: args.partitions,
        replicas: Some(args.replicas),
        ready_timeout_s: READY_TIMEOUT_DEFAULT_S,
        cluster_id: markab_core::meta::settings::CLUSTER_ID_DEFAULT,
        metas: 1,
    };
    let mut cluster = ToolCluster::start(&onebox)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(args, &mut cluster, round));
    drop(cluster);
    result
}

/// Acknowledged writes per partition: (started, acknowledged).
type Acks = Vec<Mutex<Vec<(Instant, Instant)>>>;

async fn measure(
    args: &FailoverArgs,
    cluster: &mut ToolCluster,
    round: usize,
) -> anyhow::Result<Round> {
    let meta = vec![cluster.layout.meta_address.clone()];
    let client = Client::connect_meta(
        &meta,
        ClientOptions {
            operation_timeout: WRITE_TIMEOUT,
            ..ClientOptions::default()
        },
    )
    .await?;
    let table = client.open_table(TABLE).await?;
    // Every partition with its full replica count before the load.
    let deadline = Instant::now() + Duration::from_secs(READY_TIMEOUT_DEFAULT_S);
    loop {
        let description = client.describe_table(TABLE).await?;
        if description
            .partitions
            .iter()
            .all(|partition| partition.secondaries.len() + 1 == args.replicas as usize)
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "round {round}: partitions did not get {} replicas",
            args.replicas
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = crate::onebox::admin::probe_keys(args.partitions);
    let acks: Arc<Acks> = Arc::new(
        (0..args.partitions)
            .map(|_| Mutex::new(Vec::new()))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (partition, key) in keys.iter().enumerate() {
        for writer in 0..args.writers {
            writers.push(tokio::spawn(write_loop(
                table.clone(),
                key.clone(),
                format!("w{writer}"),
                partition,
                acks.clone(),
                stop.clone(),
            )));
        }
    }
    tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;

    let description = client.describe_table(TABLE).await?;
    let victim = cluster
        .layout
        .nodes
        .iter()
        .map(|plan| plan.node_id.clone())
        .max_by_key(|node| {
            description
                .partitions
                .iter()
                .filter(|partition| &partition.primary == node)
                .count()
        })
        .context("no nodes")?;
    let affected: Vec<u32> = description
        .partitions
        .iter()
        .filter(|partition| partition.primary == victim)
        .map(|partition| partition.partition_index as u32)
        .collect();
    let killed_at = Instant::now();
    cluster.kill_node(&victim)?;

    let deadline = killed_at + Duration::from_secs(args.recovery_timeout_s);
    let mut recovered_ms = vec![None; affected.len()];
    loop {
        for (slot, partition) in recovered_ms.iter_mut().zip(&affected) {
            if slot.is_none() {
                *slot = acks[*partition as usize]
                    .lock()
                    .expect("acks lock")
                    .iter()
                    .filter(|(started, _)| *started >= killed_at)
                    .map(|(_, acked)| acked.duration_since(killed_at).as_secs_f64() * 1000.0)
                    .reduce(f64::min);
            }
        }
        if recovered_ms.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() >= deadline {
            stop.store(true, Ordering::Relaxed);
            anyhow::bail!(
                "round {round}: partitions {:?} did not accept writes within {} s of killing {victim}",
                affected
                    .iter()
                    .zip(&recovered_ms)
                    .filter(|(_, slot)| slot.is_none())
                    .map(|(partition, _)| *partition)
                    .collect::<Vec<_>>(),
                args.recovery_timeout_s
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.await;
    }
    let recovered_ms: Vec<f64> = recovered_ms.into_iter().map(Option::unwrap).collect();
    let failover_ms = recovered_ms.iter().copied().fold(0.0, f64::max);
    Ok(Round {
        round,
        victim,
        affected,
        recovered_ms,
        failover_ms,
    })
}

async fn write_loop(
    table: Table,
    hash_key: String,
    sort_key: String,
    partition: usize,
    acks: Arc<Acks>,
    stop: Arc<AtomicBool>,
) {
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        sequence += 1;
        let started = Instant::now();
        let value = sequence.to_string();
        match table
            .set(
                hash_key.as_bytes(),
                sort_key.as_bytes(),
                value.as_bytes(),
                0,
            )
            .await
        {
            Ok(_) => acks[partition]
                .lock()
                .expect("acks lock")
                .push((started, Instant::now())),
            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        assert!(median(&[]).is_nan());
    }
}
