//! The `markab` command: node, shell and operator tools.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use markab::config::NodeConfig;
use markab_shards::topology::{ShardCount, Topology};

/// mimalloc keeps a heap per thread, which suits one executor per core: an
/// allocation on a shard's thread never takes a lock shared with another
/// shard, and small blocks are recycled from thread-local free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "markab",
    version,
    about = "Markab: a strongly consistent, low-latency key-value store (Pegasus, shard per core)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a replica node. In standalone mode it serves the tables listed in
    /// its config file. Stops cleanly on SIGTERM or Ctrl-C.
    Replica {
        /// The node's TOML config file (see tuning/standalone.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the meta server. Stops cleanly on SIGTERM or Ctrl-C.
    Meta(markab::meta::MetaArgs),
    /// Start a whole local cluster (one meta, N nodes) as child processes;
    /// keeps its data in DIR across restarts. Stops on SIGTERM or Ctrl-C.
    Onebox(markab::onebox::OneboxArgs),
    /// Serve the Redis protocol (RESP2) over a Markab table, so Redis
    /// clients and tools work unchanged.
    RedisProxy(markab::redis_proxy::RedisProxyArgs),
    /// YCSB-style benchmark against Markab, Redis or etcd.
    Bench(markab::bench::BenchArgs),
    /// Measure failover: fresh local clusters under a write load, SIGKILL
    /// of the node hosting the most primaries, time until every affected
    /// partition accepts writes again (median and worst over the kills).
    FailoverBench(markab::failover::FailoverArgs),
    /// Measure a duplication's lag: probe writes to the source cluster,
    /// each timed from its acknowledgement until the remote cluster shows
    /// it (p50, p99, max).
    DupLag(markab::dup_lag::DupLagArgs),
    /// Fault injection on a real local cluster: meta and N
    /// nodes as processes, clients recording a history, a seeded nemesis
    /// (kills, stops, partitions, clock steps, full and slow disks,
    /// damaged files), then checkers. Needs root. See docs/chaos.md.
    Chaos(markab::chaos::ChaosArgs),
    /// Interactive data shell (or one command with -e).
    Shell(markab::shell::ShellArgs),
    /// Print a mutation log's segments and records (gpid, ballot, decree,
    /// sizes, crc status) for operators. PATH is a segment file or a shard's
    /// log directory (<data_dir>/log/shard-N).
    LogDump {
        /// A segment file or a log directory.
        path: PathBuf,
    },
    /// Print CPU cores, NUMA nodes and the shard plan.
    Topology {
        /// "auto" (one shard per core), a shard count, or a comma-separated
        /// list of cpu ids.
        #[arg(long, default_value = "auto")]
        shards: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MARKAB_LOG")
                // glommio logs its io_uring poll-ring probe on virtio disks
                // at error level; it only means "no IOPOLL here". Meta's
                // reconfigurations are logged at info.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "warn,glommio::reactor=off,markab::meta::server=info",
                    )
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Replica { .. } | Command::Meta(_)) {
        if let Err(error) = markab::clock::follow_offset_file_from_env() {
            eprintln!("error: cannot start the wall clock offset thread: {error}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Replica { config } => NodeConfig::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(markab::server::run_node)
            .map(|()| ExitCode::SUCCESS),
        Command::Shell(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")
            .and_then(|runtime| runtime.block_on(markab::shell::run(args))),
        Command::Meta(args) => markab::meta::run(args),
        Command::Onebox(args) => markab::onebox::run(args),
        Command::Bench(args) => markab::bench::run(args),
        Command::Chaos(args) => markab::chaos::run(args),
        Command::FailoverBench(args) => markab::failover::run(args).map(|()| ExitCode::SUCCESS),
        Command::DupLag(args) => markab::dup_lag::run(args),
        Command::RedisProxy(args) => markab::redis_proxy::run(args),
        Command::Topology { shards } => topology(&shards),
        Command::LogDump { path } => log_dump(&path),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn log_dump(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    markab_shards::log::dump(path, &mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}

fn topology(shards: &str) -> anyhow::Result<ExitCode> {
    let count = parse_shard_count(shards)?;
    let topology = Topology::detect().context("cannot read the CPU topology")?;
    let plan = topology.plan(count)?;
    print!("{}", markab_shards::topology::report(&topology, &plan));
    Ok(ExitCode::SUCCESS)
}

fn parse_shard_count(text: &str) -> anyhow::Result<ShardCount> {
    if text == "auto" {
        return Ok(ShardCount::Auto);
    }
    if text.contains(',') {
        let cpus = text
            .split(',')
            .map(|cpu| cpu.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("--shards {text:?}: expected cpu ids like 0,1"))?;
        return Ok(ShardCount::Cpus(cpus));
    }
    let count: usize = text
        .parse()
        .with_context(|| format!("--shards {text:?}: expected \"auto\", a count or cpu ids"))?;
    anyhow::ensure!(count > 0, "--shards 0: at least one shard is needed");
    Ok(ShardCount::Count(count))
}
