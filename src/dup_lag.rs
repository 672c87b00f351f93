//! `markab dup-lag`: measures a duplication's lag as a user sees it — the
//! time from a write's acknowledgement by the source cluster to its
//! visibility in the remote one (docs/duplication.md). It writes probe
//! records to the source table one at a time, every `--interval-ms`, and
//! polls the remote table for each until it holds it; prints the lag's
//! percentiles. Run it while a load runs to see the lag under that load.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{Client, ClientOptions};

/// `markab dup-lag`: options.
#[derive(Clone, Debug, clap::Args)]
pub struct DupLagArgs {
    /// The source cluster's meta addresses (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub from: Vec<String>,
    /// The remote cluster's meta addresses (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// The duplicated table.
    #[arg(long, default_value = "usertable")]
    pub table: String,
    /// The remote table (default: the same name).
    #[arg(long)]
    pub remote_table: Option<String>,
    /// Probe records to write (1..=100000).
    #[arg(long, default_value_t = 200)]
    pub probes: usize,
    /// Pause between two probes, in ms.
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    /// Longest wait for one probe to show up in the remote cluster, in
    /// seconds; a probe that exceeds it fails the run.
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
}

/// How often the remote table is read while a probe is awaited.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

pub fn run(args: DupLagArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(
        (1..=100_000).contains(&args.probes),
        "--probes {} is out of range (allowed 1..=100000)",
        args.probes
    );
    anyhow::ensure!(args.timeout_s >= 1, "--timeout-s must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(measure(args))
}

async fn measure(args: DupLagArgs) -> anyhow::Result<std::process::ExitCode> {
    let open = |metas: Vec<String>, table: String| async move {
        let client = Client::connect_meta(&metas, ClientOptions::default())
            .await
            .with_context(|| format!("cannot reach meta at {}", metas.join(",")))?;
        client
            .open_table(&table)
            .await
            .with_context(|| format!("cannot open table {table} at {}", metas.join(",")))
    };
    let remote_name = args.remote_table.clone().unwrap_or(args.table.clone());
    let source = open(args.from.clone(), args.table.clone()).await?;
    let remote = open(args.to.clone(), remote_name).await?;
    let run_id = std::process::id();
    let timeout = Duration::from_secs(args.timeout_s);
    let mut lags_us: Vec<u64> = Vec::with_capacity(args.probes);
    for probe in 0..args.probes {
        let hash_key = format!("dup-lag-{run_id}-{probe}");
        let value = probe.to_string();
        source
            .set(hash_key.as_bytes(), b"", value.as_bytes(), 0)
            .await
            .with_context(|| format!("probe {probe}: the source refused it"))?;
        let acked = Instant::now();
        loop {
            let got = remote.get(hash_key.as_bytes(), b"").await.ok().flatten();
            if got.as_deref() == Some(value.as_bytes()) {
                lags_us.push(acked.elapsed().as_micros() as u64);
                break;
            }
            anyhow::ensure!(
                acked.elapsed() < timeout,
                "probe {probe} did not reach the remote cluster within {timeout:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    lags_us.sort_unstable();
    let at = |fraction: f64| {
        let rank = ((fraction * lags_us.len() as f64).ceil() as usize).clamp(1, lags_us.len());
        lags_us[rank - 1] as f64 / 1000.0
    };
    println!(
        "dup lag over {} probes (ack in the source to visible in the remote): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lags_us.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(std::process::ExitCode::SUCCESS)
}
