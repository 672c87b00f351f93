//! The meta server (`markab meta --config FILE`): tables, nodes, partition
//! configurations and routing. See docs/meta.md.
//!
//! - [`config`]: the config file.
//! - [`state`]: the sans-IO state machine (requests, beacons, ticks in;
//!   replies and state to persist out).
//! - [`store`]: where the persistent state lives ([`store::MetaStore`],
//!   [`store::FileMetaStore`]).
//! - [`server`]: the tokio TCP server and the actor that owns the state.

pub mod config;
pub mod server;
pub mod store;

pub use markab_core::meta::state;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::meta::config::MetaConfig;
use crate::meta::state::{MetaData, MetaState};
use crate::meta::store::{FileMetaStore, MetaStore};

/// Arguments of `markab meta`.
#[derive(Clone, Debug, clap::Args)]
pub struct MetaArgs {
    /// The meta server's TOML config file (`[meta]` listen, data_dir, ...).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Runs the meta server until SIGTERM or Ctrl-C, on its own tokio runtime.
/// Prints `markab meta ready: <address> data_dir=<dir>` on stdout once it
/// listens. Returns exit code 0 after a clean stop.
pub fn run(args: MetaArgs) -> anyhow::Result<ExitCode> {
    let config = MetaConfig::load(&args.config)?;
    crate::backup::set_store_credentials(config.backup_credentials.clone());
    let store = FileMetaStore::open(&config.data_dir)?;
    let data = store.load()?.unwrap_or_default();
    tracing::info!(
        tables = data.tables.len(),
        next_app_id = data.next_app_id,
        version = data.version,
        "meta state loaded"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("markab-meta")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve_until_signal(config, store, data))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_until_signal(
    config: MetaConfig,
    store: FileMetaStore,
    data: MetaData,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "{}: cannot listen on {}",
                config.path.display(),
                config.listen
            )
        })?;
    let address = listener.local_addr().context("listener address")?;
    let settings = config.settings(address.to_string());
    let state = MetaState::new(settings, data);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    let metrics_note = match config.metrics_listen {
        Some(listen) => {
            let bound =
                crate::metrics::serve(crate::metrics::meta_metrics().registry.clone(), listen)?;
            format!(" metrics=http://{bound}/metrics")
        }
        None => String::new(),
    };
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "markab meta ready: {address} data_dir={}{metrics_note}",
            config.data_dir.display()
        )
        .and_then(|()| stdout.flush())
        .context("cannot write the ready line")?;
    }
    server::serve(listener, state, Box::new(store), shutdown)
        .await
        .context("meta server failed")
}
