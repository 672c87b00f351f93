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
pub mod etcd;
pub mod server;
pub mod store;

pub use markab_core::meta::state;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use markab_core::meta::leader::{LeaderGate, Leadership};

use crate::meta::config::{MetaConfig, StoreConfig};
use crate::meta::etcd::{EtcdLink, EtcdMetaStore};
use crate::meta::state::MetaState;
use crate::meta::store::{FileMetaStore, MetaStore};

/// Arguments of `markab meta`.
#[derive(Clone, Debug, clap::Args)]
pub struct MetaArgs {
    /// The meta server's TOML config file (`[meta]` listen, data_dir, ...).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Runs the meta server until SIGTERM or Ctrl-C, on its own tokio runtime.
/// Prints `markab meta ready: <address> data_dir=<store>` on stdout once it
/// listens (a group's meta: once it reached etcd; it may still be a
/// follower). Returns exit code 0 after a clean stop.
pub fn run(args: MetaArgs) -> anyhow::Result<ExitCode> {
    let config = MetaConfig::load(&args.config)?;
    crate::backup::set_store_credentials(config.backup_credentials.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("markab-meta")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve_until_signal(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_until_signal(config: MetaConfig) -> anyhow::Result<()> {
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
    let advertised = config
        .advertise
        .clone()
        .unwrap_or_else(|| address.to_string());
    let settings = config.settings(advertised.clone());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    // The store, and for a group the campaign: both before the ready line,
    // so a wrong prefix or a silent etcd fails the start.
    let (gate, store, news, link): (LeaderGate, Box<dyn MetaStore>, _, _) = match &config.store {
        StoreConfig::File { data_dir } => {
            let store = FileMetaStore::open(data_dir)?;
            let data = store.load()?.unwrap_or_default();
            tracing::info!(
                tables = data.tables.len(),
                next_app_id = data.next_app_id,
                version = data.version,
                "meta state loaded"
            );
            let gate = LeaderGate::sole(MetaState::new(settings, data));
            (gate, Box::new(store), None, None)
        }
        StoreConfig::Etcd(etcd) => {
            let link = EtcdLink::open(etcd.clone(), config.cluster_id)
                .await
                .with_context(|| format!("{}: meta.store = \"etcd\"", config.path.display()))?;
            let store = EtcdMetaStore::new(link.clone(), tokio::runtime::Handle::current());
            let gate = LeaderGate::new(settings, Leadership::Follower { leader: None });
            let (sender, receiver) =
                tokio::sync::watch::channel((Leadership::Follower { leader: None }, Vec::new()));
            let campaign = tokio::spawn(etcd::campaign(
                link.clone(),
                advertised.clone(),
                move |leadership, members| {
                    let _ = sender.send((leadership, members));
                },
            ));
            (
                gate,
                Box::new(store),
                Some(receiver),
                Some((link, campaign)),
            )
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
    crate::metrics::meta_metrics().observe_leadership(&gate, crate::clock::monotonic_ms());
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "markab meta ready: {address} data_dir={}{metrics_note}",
            config.store.describe()
        )
        .and_then(|()| stdout.flush())
        .context("cannot write the ready line")?;
    }
    let served = server::serve_gate(listener, gate, store, news, shutdown)
        .await
        .context("meta server failed");
    if let Some((link, campaign)) = link {
        // Hand leadership over at once instead of after the session TTL.
        campaign.abort();
        etcd::resign(&link, &advertised).await;
    }
    served
}
