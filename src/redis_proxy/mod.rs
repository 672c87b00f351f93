//! `markab redis-proxy`: serves the Redis protocol (RESP2) over one Markab
//! table, so Redis clients and tools work unchanged.
//!
//! * [`resp`]: the sans-IO RESP2 parser (arrays and inline commands) and
//!   reply encoder;
//! * [`commands`]: the command table and the mapping of Redis strings and
//!   hashes onto `(hash_key, sort_key)` records;
//! * [`server`]: the tokio TCP server (pipelining, many connections).
//!
//! docs/redis.md has the mapping, the supported commands and options, the
//! error shapes, atomicity and TTL granularity.
//!
//! ```text
//! markab redis-proxy --node 127.0.0.1:34801 --table temp --listen 127.0.0.1:6380
//! redis-cli -p 6380 set greeting hello
//! ```

pub mod commands;
pub mod resp;
pub mod server;

use std::process::ExitCode;
use std::time::Duration;

use crate::client::{Client, ClientError, ClientOptions};

/// Where the proxy listens unless `--listen` says otherwise (one above
/// Redis's own 6379, so both can run side by side).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:6380";
/// Operation timeout unless `--timeout-ms` says otherwise.
pub const TIMEOUT_MS_DEFAULT: u64 = 5000;
/// How long shutdown waits for in-flight work after SIGTERM / Ctrl-C.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Arguments of `markab redis-proxy`.
#[derive(clap::Args, Debug, Clone)]
pub struct RedisProxyArgs {
    /// `host:port` of the cluster's meta servers, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "node",
        conflicts_with = "node"
    )]
    pub meta: Vec<String>,
    /// `host:port` of a standalone node (any of its shards).
    #[arg(long)]
    pub node: Option<String>,
    /// The Markab table Redis keys live in.
    #[arg(long)]
    pub table: String,
    /// `host:port` to serve RESP on (port 0 picks a free port; the ready
    /// line prints the real one). Default 127.0.0.1:6380.
    #[arg(long, default_value = LISTEN_DEFAULT)]
    pub listen: String,
    /// Bound on each Markab operation in milliseconds. Default 5000.
    #[arg(long, default_value_t = TIMEOUT_MS_DEFAULT)]
    pub timeout_ms: u64,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("give exactly one of --meta and --node")]
    Target,
    #[error("cannot reach Markab")]
    Connect(#[source] ClientError),
    #[error("cannot open table {table:?}")]
    OpenTable {
        table: String,
        #[source]
        source: ClientError,
    },
    #[error("cannot listen on {address}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the tokio runtime")]
    Runtime(#[source] std::io::Error),
}

/// Runs the proxy until SIGTERM or Ctrl-C (then exits 0). Prints
/// `markab redis-proxy ready: <listen addr> table=<T>` on stdout once
/// listening.
pub fn run(args: RedisProxyArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ProxyError::Runtime)?;
    let result = runtime.block_on(run_async(args));
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn run_async(args: RedisProxyArgs) -> Result<(), ProxyError> {
    let options = ClientOptions {
        operation_timeout: Duration::from_millis(args.timeout_ms),
        ..ClientOptions::default()
    };
    let client = match (&args.node, args.meta.is_empty()) {
        (Some(node), true) => Client::connect(node, options).await,
        (None, false) => Client::connect_meta(&args.meta, options).await,
        _ => return Err(ProxyError::Target),
    }
    .map_err(ProxyError::Connect)?;
    let table = client
        .open_table(&args.table)
        .await
        .map_err(|source| ProxyError::OpenTable {
            table: args.table.clone(),
            source,
        })?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| ProxyError::Listen {
            address: args.listen.clone(),
            source,
        })?;
    let address = listener.local_addr().map_err(|source| ProxyError::Listen {
        address: args.listen.clone(),
        source,
    })?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ProxyError::Runtime)?;
    println!("markab redis-proxy ready: {address} table={}", args.table);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    server::serve(listener, table, shutdown).await;
    Ok(())
}
