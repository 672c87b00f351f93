//! `markab bench`: a YCSB-style benchmark driver for Markab, Redis and
//! etcd, so one driver measures them all. See docs/bench.md.
//!
//! - [`workload`]: YCSB core workloads A–F and the Pegasus profile;
//! - [`driver`]: closed and open loop, service vs response time;
//! - [`target`]: the stores (one [`target::Target`] per connection);
//! - [`report`]: header, table, one JSON line per phase;
//! - [`sweep`]: p99 versus throughput from 10 % to 100 % of peak.

pub mod driver;
pub mod pegasus;
pub mod report;
pub mod sweep;
pub mod target;
pub mod workload;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::client::{Client, ClientOptions};
use driver::{run_phase, DriverConfig, LoopMode, Phase, PhaseResult};
use report::{intervals_text, phase_json, phase_text, Environment, JSON_PREFIX};
use target::{Target, TargetUrl};
use workload::{InsertSequence, Workload, WorkloadName};

/// Which phases to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PhaseChoice {
    /// Insert the records only.
    Load,
    /// Run the workload's mix over records loaded earlier.
    Run,
    /// Load, then run.
    Both,
}

/// Arguments of `markab bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to benchmark: `markab://META[,META]`, `markab-node://ADDR`
    /// (a standalone node), `pegasus://META[,META]` (Markab through
    /// Pegasus's client protocol), `redis://HOST:PORT` or `etcd://HOST:PORT`
    /// (etcd's v3 JSON gateway on its client URL).
    #[arg(long)]
    pub target: String,
    /// Markab table (must exist). Default `temp`.
    #[arg(long, default_value = "temp")]
    pub table: String,
    /// YCSB core workload, or `pegasus` (A's mix over 1 × 500 B). Default a.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: WorkloadName,
    /// Phases to run. Default both.
    #[arg(long, value_enum, default_value = "both")]
    pub phase: PhaseChoice,
    /// Records to load (key numbers 0..N). Default 10,000.
    #[arg(long, default_value_t = 10_000)]
    pub records: u64,
    /// Operations in the run phase. Default 100,000.
    #[arg(long, default_value_t = 100_000)]
    pub operations: u64,
    /// Fields per record. Default 10 (1 for pegasus).
    #[arg(long)]
    pub fields: Option<u32>,
    /// Bytes per field. Default 100 (500 for pegasus).
    #[arg(long)]
    pub field_bytes: Option<u32>,
    /// Connections (one target client each). Default 8.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Requests in flight per connection. Default 4.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Open loop at this many operations per second (all connections
    /// together); closed loop when absent.
    #[arg(long)]
    pub target_rate: Option<f64>,
    /// Stop each phase after this many seconds (sweep: each step's length,
    /// default 10). No cap by default.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Sweep throughput from 10 % to 100 % of the measured peak (needs
    /// --out).
    #[arg(long, requires = "out")]
    pub sweep: bool,
    /// Sweep output prefix: writes PATH.json and PATH.svg.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also append each phase's JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seed of every random choice. Default 1.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the one-second interval series after each phase.
    #[arg(long)]
    pub print_intervals: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    /// The workload these arguments describe, validated.
    pub fn workload(&self) -> anyhow::Result<Workload> {
        let mut workload = Workload::core(self.workload, self.records, self.operations);
        if let Some(fields) = self.fields {
            workload.field_count = fields;
        }
        if let Some(field_bytes) = self.field_bytes {
            workload.field_bytes = field_bytes;
        }
        workload.validate()?;
        Ok(workload)
    }

    fn driver_config(&self, phase: Phase, operations: u64) -> DriverConfig {
        DriverConfig {
            phase,
            mode: match self.target_rate {
                Some(rate_ops_s) => LoopMode::Open { rate_ops_s },
                None => LoopMode::Closed,
            },
            in_flight: self.in_flight,
            operations,
            duration: self.duration_s.map(Duration::from_secs),
            seed: self.seed,
            progress: !self.quiet,
        }
    }
}

/// Runs the benchmark on its own tokio runtime. Exit code 0 when every
/// phase ran (operation errors are reported, not fatal).
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let workload = Arc::new(args.workload()?);
    if args.connections == 0 || args.connections > driver::CONNECTIONS_MAX {
        anyhow::bail!(
            "--connections {} not in 1..={}",
            args.connections,
            driver::CONNECTIONS_MAX
        );
    }
    if args.duration_s == Some(0)
        || args
            .duration_s
            .is_some_and(|s| s > driver::DURATION_MAX.as_secs())
    {
        anyhow::bail!(
            "--duration-s must be in 1..={}",
            driver::DURATION_MAX.as_secs()
        );
    }
    let url = TargetUrl::parse(&args.target)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(run_async(args, url, workload))?;
    Ok(ExitCode::SUCCESS)
}

/// Cluster facts for the header: shards per node, replicas, partitions.
async fn cluster_facts(url: &TargetUrl, table: &str, environment: &mut Environment) {
    let options = ClientOptions::default();
    match url {
        TargetUrl::MarkabMeta(metas) => {
            let Ok(client) = Client::connect_meta(metas, options).await else {
                return;
            };
            if let Ok(description) = client.describe_table(table).await {
                environment.partitions = u32::try_from(description.info.partition_count).ok();
                environment.replicas = u32::try_from(description.info.replica_count).ok();
            }
            if let Ok(nodes) = client.list_nodes().await {
                environment.shards_per_node = nodes
                    .iter()
                    .filter(|node| node.alive)
                    .map(|node| node.shard_addresses.len())
                    .collect();
            }
        }
        TargetUrl::MarkabNode(address) => {
            let Ok(client) = Client::connect(address, options).await else {
                return;
            };
            if let Ok(table) = client.open_table(table).await {
                environment.partitions = Some(table.partition_count());
                environment.replicas = Some(1);
                let shards: BTreeSet<String> = table
                    .route()
                    .partitions
                    .iter()
                    .map(|partition| partition.address.clone())
                    .collect();
                environment.shards_per_node = vec![shards.len()];
            }
        }
        TargetUrl::Redis(_) | TargetUrl::Etcd(_) | TargetUrl::Pegasus(_) => {}
    }
}

fn emit(
    args: &BenchArgs,
    environment: &Environment,
    result: &PhaseResult,
    json_file: &mut Option<std::fs::File>,
) -> anyhow::Result<()> {
    let line = phase_json(environment, result).to_string();
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", phase_text(result))?;
    if args.print_intervals {
        write!(stdout, "{}", intervals_text(result))?;
    }
    writeln!(stdout, "{JSON_PREFIX}{line}")?;
    stdout.flush()?;
    if let (Some(file), Some(path)) = (json_file.as_mut(), args.json.as_ref()) {
        writeln!(file, "{line}").with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

async fn run_async(args: BenchArgs, url: TargetUrl, workload: Arc<Workload>) -> anyhow::Result<()> {
    let mut targets: Vec<Arc<dyn Target>> = Vec::with_capacity(args.connections);
    for connection in 0..args.connections {
        let target = url
            .open(&args.table, args.in_flight)
            .await
            .with_context(|| format!("open connection {connection} to {}", args.target))?;
        targets.push(target);
    }
    let mut environment = Environment::detect(&workload);
    environment.target = args.target.clone();
    environment.table = args.table.clone();
    environment.connections = args.connections;
    environment.in_flight = args.in_flight;
    environment.target_rate_ops_s = args.target_rate;
    cluster_facts(&url, &args.table, &mut environment).await;
    print!("{}", environment.header_text());
    let mut json_file = match &args.json {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("open {}", path.display()))?,
        ),
        None => None,
    };
    if matches!(args.phase, PhaseChoice::Load | PhaseChoice::Both) {
        let config = args.driver_config(Phase::Load, workload.record_count);
        let inserts = Arc::new(InsertSequence::new(0));
        let result = run_phase(&targets, workload.clone(), inserts, &config).await?;
        emit(&args, &environment, &result, &mut json_file)?;
    }
    if matches!(args.phase, PhaseChoice::Run | PhaseChoice::Both) {
        let inserts = Arc::new(InsertSequence::new(workload.record_count));
        let config = args.driver_config(Phase::Run, workload.operation_count);
        if args.sweep {
            let out = args.out.as_ref().context("--sweep needs --out PATH")?;
            let points = sweep::run_sweep(
                &targets,
                workload.clone(),
                inserts,
                &config,
                &environment,
                out,
            )
            .await?;
            let (json_path, svg_path) = sweep::output_paths(out);
            println!(
                "sweep: {} points written to {} and {}",
                points.len(),
                json_path.display(),
                svg_path.display()
            );
        } else {
            let result = run_phase(&targets, workload.clone(), inserts, &config).await?;
            emit(&args, &environment, &result, &mut json_file)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    // Proves the documented defaults and the pegasus field layout.
    #[test]
    fn arguments_have_documented_defaults() {
        let cli = Cli::try_parse_from(["bench", "--target", "redis://h:1"]).unwrap();
        let args = cli.bench;
        assert_eq!(args.table, "temp");
        assert_eq!(args.workload, WorkloadName::A);
        assert_eq!(args.phase, PhaseChoice::Both);
        assert_eq!((args.records, args.operations), (10_000, 100_000));
        assert_eq!((args.connections, args.in_flight), (8, 4));
        let workload = args.workload().unwrap();
        assert_eq!((workload.field_count, workload.field_bytes), (10, 100));
        let cli =
            Cli::try_parse_from(["bench", "--target", "redis://h:1", "--workload", "pegasus"])
                .unwrap();
        let workload = cli.bench.workload().unwrap();
        assert_eq!((workload.field_count, workload.field_bytes), (1, 500));
        assert!(Cli::try_parse_from(["bench", "--target", "x://h:1", "--sweep"]).is_err());
    }

    // Proves bad options fail with an error, not a panic.
    #[test]
    fn bad_options_are_errors() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["bench", "--target", "redis://127.0.0.1:1"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().bench
        };
        assert!(run(parse(&["--records", "0"])).is_err());
        assert!(run(parse(&["--connections", "0"])).is_err());
        assert!(run(parse(&["--duration-s", "0"])).is_err());
        let mut args = parse(&[]);
        args.target = "gopher://h:1".into();
        assert!(run(args).is_err());
    }
}
