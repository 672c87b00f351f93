//! Meta's config file (`markab meta --config FILE`).
//!
//! ```toml
//! [meta]
//! listen = "127.0.0.1:34601"      # default; port 0 = any free port
//! data_dir = "/var/tmp/markab/meta" # required; holds meta.json
//! hold_seconds = 604800            # how long a dropped table's data is kept (7 days)
//! node_timeout_ms = 5000           # a node is dead once its last beacon is this old
//! replica_count_default = 3        # replica count of a create that names none
//! replica_count_max = 5            # largest replica count a create may ask for
//! replication = true               # PacificA: place secondaries, grant leases, fail over
//! beacon_interval_ms = 100         # must match the nodes' beacon_interval_ms
//! lease_ms = 600                   # lease granted in every beacon ack (replication only)
//! grace_ms = 800                   # a node is dead after this long without a beacon (replication only)
//! replica_count_min_alive = 2      # create refuses NOT_ENOUGH_NODES below min(this, replica count)
//! alive_percent_min = 50           # below this percent of nodes alive, meta removes no member (frozen)
//! balance_moves_max = 16           # balancer moves in flight at once (1..=4096)
//! balance_copies_per_node_max = 2  # replica moves in flight touching one node (1..=4096)
//! balance_switches_max = 2         # primary switches in flight at once (1..=4096)
//! cluster_id = 1                   # this cluster's id in timetags (1..=127; docs/duplication.md)
//! ```
//!
//! A group of metas with one leader keeps its state in etcd instead of
//! `data_dir` (docs/meta.md, "High availability"):
//!
//! ```toml
//! [meta]
//! store = "etcd"                   # default "file" (then data_dir is required)
//! etcd_endpoints = ["127.0.0.1:2379"]
//! etcd_prefix = "/markab/1"        # default "/markab/<cluster_id>"
//! etcd_session_ttl_s = 2           # a dead leader's successor serves about this long after (1..=60)
//! etcd_timeout_ms = 1000           # bound on each etcd request (100..=10000)
//! advertise = "10.0.0.1:34601"     # the address others reach this meta at (default: listen)
//! ```
//!
//! Every error names the file and the key, and states the allowed range.
//! `grace_ms > lease_ms + beacon_interval_ms` and
//! `lease_ms > 2 x beacon_interval_ms` are checked whether or not
//! replication is on (docs/replication.md, "Timing settings").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default listen address of meta.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:34601";
/// Default hold time of a dropped table's data: 7 days.
pub const HOLD_SECONDS_DEFAULT: u64 = 7 * 24 * 3600;
/// Default node timeout: a node is dead 5 s after its last beacon.
pub const NODE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Smallest node timeout allowed (100 ms).
pub const NODE_TIMEOUT_MS_MIN: u64 = 100;
/// Largest node timeout allowed (10 minutes).
pub const NODE_TIMEOUT_MS_MAX: u64 = 600_000;
/// Default replica count of a new table.
pub const REPLICA_COUNT_DEFAULT: i32 = 3;

pub use markab_core::meta::settings::{
    MetaReplication, ALIVE_PERCENT_MIN_DEFAULT, HOLD_SECONDS_MAX, REPLICATION_TIMING_MS_MAX,
    REPLICA_COUNT_LIMIT, REPLICA_COUNT_MIN_ALIVE_DEFAULT,
};

impl MetaConfig {
    /// The state machine's settings from this file, served at
    /// `meta_address`.
    pub fn settings(&self, meta_address: String) -> crate::meta::state::MetaSettings {
        crate::meta::state::MetaSettings {
            meta_address,
            data_dir: self.store.describe(),
            hold_seconds: self.hold_seconds,
            node_timeout_ms: self.node_timeout_ms,
            replica_count_default: self.replica_count_default,
            replica_count_max: self.replica_count_max,
            replication: self.replication,
            cluster_id: self.cluster_id,
        }
    }
}

/// Where meta's state lives (`[meta] store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// `meta.json` in the data directory: one meta, no failover (the
    /// default).
    File { data_dir: PathBuf },
    /// etcd: a group of metas, one leader (docs/meta.md, "High
    /// availability").
    Etcd(crate::meta::etcd::EtcdConfig),
}

impl StoreConfig {
    /// How the store is shown (`cluster_info`'s `data_dir`, the ready
    /// line).
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::File { data_dir } => data_dir.display().to_string(),
            StoreConfig::Etcd(etcd) => etcd.describe(),
        }
    }
}

/// Errors loading or validating meta's config file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum MetaConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    meta: MetaSection,
    #[serde(default)]
    backup: crate::backup::BackupSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaSection {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    etcd_endpoints: Option<Vec<String>>,
    etcd_prefix: Option<String>,
    etcd_session_ttl_s: Option<u64>,
    etcd_timeout_ms: Option<u64>,
    advertise: Option<String>,
    hold_seconds: Option<u64>,
    node_timeout_ms: Option<u64>,
    replica_count_default: Option<i32>,
    replica_count_max: Option<i32>,
    metrics_listen: Option<SocketAddr>,
    replication: Option<bool>,
    beacon_interval_ms: Option<u64>,
    lease_ms: Option<u64>,
    grace_ms: Option<u64>,
    replica_count_min_alive: Option<i32>,
    alive_percent_min: Option<u8>,
    balance_moves_max: Option<usize>,
    balance_copies_per_node_max: Option<usize>,
    balance_switches_max: Option<usize>,
    cluster_id: Option<u8>,
}

/// A validated meta configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaConfig {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// Where meta listens (default [`LISTEN_DEFAULT`]).
    pub listen: SocketAddr,
    /// Where meta's state lives: `data_dir` (one meta) or etcd (a group).
    pub store: StoreConfig,
    /// The address other metas, nodes and clients are sent to when this
    /// meta leads (default: the listen address).
    pub advertise: Option<String>,
    /// Hold time of a dropped table (default [`HOLD_SECONDS_DEFAULT`]).
    pub hold_seconds: u64,
    /// Beacon age after which a node is dead (default [`NODE_TIMEOUT_MS_DEFAULT`]).
    pub node_timeout_ms: u64,
    /// Replica count of a create that names none (default [`REPLICA_COUNT_DEFAULT`]).
    pub replica_count_default: i32,
    /// Largest replica count a create may ask for (default and bound [`REPLICA_COUNT_LIMIT`]).
    pub replica_count_max: i32,
    /// Where to serve Prometheus metrics on `/metrics` (off when unset).
    pub metrics_listen: Option<SocketAddr>,
    /// PacificA replication (the default); `None` (`replication = false`)
    /// keeps meta placing primaries only, without leases or reconfiguration
    /// (nodes then serve without a lease: each partition has one copy).
    pub replication: Option<MetaReplication>,
    /// S3 credentials of `[backup]`, if given (else the environment's).
    pub backup_credentials: Option<crate::backup::StoreCredentials>,
    /// This cluster's id (1..=127): clusters that duplicate to each
    /// other must have distinct ones.
    pub cluster_id: u8,
}

impl MetaConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<MetaConfig, MetaConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| MetaConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        MetaConfig::parse(path, &text)
    }

    /// Parses and validates `text`; `path` names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<MetaConfig, MetaConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|error| MetaConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        let invalid = |message: String| MetaConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let section = file.meta;
        let listen_text = section.listen.as_deref().unwrap_or(LISTEN_DEFAULT);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(format!(
                "meta.listen = {listen_text:?} is not an address (expected \"ip:port\", e.g. {LISTEN_DEFAULT:?})"
            ))
        })?;
        let hold_seconds = section.hold_seconds.unwrap_or(HOLD_SECONDS_DEFAULT);
        if hold_seconds > HOLD_SECONDS_MAX {
            return Err(invalid(format!(
                "meta.hold_seconds = {hold_seconds} is out of range (allowed 0..={HOLD_SECONDS_MAX})"
            )));
        }
        let node_timeout_ms = section.node_timeout_ms.unwrap_or(NODE_TIMEOUT_MS_DEFAULT);
        if !(NODE_TIMEOUT_MS_MIN..=NODE_TIMEOUT_MS_MAX).contains(&node_timeout_ms) {
            return Err(invalid(format!(
                "meta.node_timeout_ms = {node_timeout_ms} is out of range (allowed {NODE_TIMEOUT_MS_MIN}..={NODE_TIMEOUT_MS_MAX})"
            )));
        }
        let replica_count_max = section.replica_count_max.unwrap_or(REPLICA_COUNT_LIMIT);
        if !(1..=REPLICA_COUNT_LIMIT).contains(&replica_count_max) {
            return Err(invalid(format!(
                "meta.replica_count_max = {replica_count_max} is out of range (allowed 1..={REPLICA_COUNT_LIMIT})"
            )));
        }
        let replica_count_default = section
            .replica_count_default
            .unwrap_or(REPLICA_COUNT_DEFAULT.min(replica_count_max));
        if !(1..=replica_count_max).contains(&replica_count_default) {
            return Err(invalid(format!(
                "meta.replica_count_default = {replica_count_default} is out of range (allowed 1..=meta.replica_count_max = {replica_count_max})"
            )));
        }
        let defaults = MetaReplication::default();
        let timing = MetaReplication {
            beacon_interval_ms: section
                .beacon_interval_ms
                .unwrap_or(defaults.beacon_interval_ms),
            lease_ms: section.lease_ms.unwrap_or(defaults.lease_ms),
            grace_ms: section.grace_ms.unwrap_or(defaults.grace_ms),
            replica_count_min_alive: section
                .replica_count_min_alive
                .unwrap_or(defaults.replica_count_min_alive),
            alive_percent_min: section
                .alive_percent_min
                .unwrap_or(defaults.alive_percent_min),
            balance_moves_max: section
                .balance_moves_max
                .unwrap_or(defaults.balance_moves_max),
            balance_copies_per_node_max: section
                .balance_copies_per_node_max
                .unwrap_or(defaults.balance_copies_per_node_max),
            balance_switches_max: section
                .balance_switches_max
                .unwrap_or(defaults.balance_switches_max),
        };
        timing.validate().map_err(|message| {
            invalid(format!(
                "meta.beacon_interval_ms / meta.lease_ms / meta.grace_ms / meta.replica_count_min_alive / meta.alive_percent_min / meta.balance_moves_max / meta.balance_copies_per_node_max / meta.balance_switches_max: {message}"
            ))
        })?;
        let replication = section.replication.unwrap_or(true).then_some(timing);
        let cluster_id = section
            .cluster_id
            .unwrap_or(markab_core::meta::settings::CLUSTER_ID_DEFAULT);
        markab_core::storage::timetag::validate_cluster_id(cluster_id)
            .map_err(|message| invalid(format!("meta.cluster_id: {message}")))?;
        let store = parse_store(&section, cluster_id).map_err(invalid)?;
        let advertise = match &section.advertise {
            Some(text) => {
                let address: SocketAddr = text.parse().map_err(|_| {
                    invalid(format!(
                        "meta.advertise = {text:?} is not an address (expected \"ip:port\")"
                    ))
                })?;
                if address.ip().is_unspecified() || address.port() == 0 {
                    return Err(invalid(format!(
                        "meta.advertise = {text:?} must name a reachable ip and a port"
                    )));
                }
                Some(address.to_string())
            }
            None => None,
        };
        if matches!(store, StoreConfig::Etcd(_))
            && advertise.is_none()
            && listen.ip().is_unspecified()
        {
            return Err(invalid(format!(
                "meta.listen = {listen} does not name an address other metas can send clients to: set meta.advertise"
            )));
        }
        let backup_credentials =
            file.backup
                .credentials()
                .map_err(|message| MetaConfigError::Invalid {
                    path: path.to_owned(),
                    message,
                })?;
        Ok(MetaConfig {
            backup_credentials,
            path: path.to_owned(),
            listen,
            store,
            advertise,
            hold_seconds,
            node_timeout_ms,
            replica_count_default,
            replica_count_max,
            metrics_listen: section.metrics_listen,
            replication,
            cluster_id,
        })
    }
}

/// `[meta] store` and its keys: `data_dir` for the file store, `etcd_*`
/// for etcd; a file that mixes them is refused.
fn parse_store(section: &MetaSection, cluster_id: u8) -> Result<StoreConfig, String> {
    use crate::meta::etcd::{
        EtcdConfig, ETCD_TIMEOUT_MS_DEFAULT, SESSION_TTL_S_DEFAULT, SESSION_TTL_S_MAX,
    };
    let etcd_keys = [
        ("etcd_endpoints", section.etcd_endpoints.is_some()),
        ("etcd_prefix", section.etcd_prefix.is_some()),
        ("etcd_session_ttl_s", section.etcd_session_ttl_s.is_some()),
        ("etcd_timeout_ms", section.etcd_timeout_ms.is_some()),
    ];
    match section.store.as_deref().unwrap_or("file") {
        "file" => {
            if let Some((key, _)) = etcd_keys.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "meta.{key} is set but meta.store is \"file\": set meta.store = \"etcd\" to keep meta's state in etcd, or remove the etcd keys"
                ));
            }
            let data_dir = section.data_dir.clone().ok_or(
                "meta.data_dir is required with meta.store = \"file\" (the default)".to_owned(),
            )?;
            if data_dir.as_os_str().is_empty() {
                return Err("meta.data_dir is empty".into());
            }
            Ok(StoreConfig::File { data_dir })
        }
        "etcd" => {
            if section.data_dir.is_some() {
                return Err(
                    "meta.data_dir is set but meta.store is \"etcd\": meta keeps its state in etcd then; remove data_dir (or use store = \"file\")".into(),
                );
            }
            let endpoints = section.etcd_endpoints.clone().unwrap_or_default();
            if endpoints.is_empty() || endpoints.len() > 16 {
                return Err(format!(
                    "meta.etcd_endpoints must list 1..=16 etcd client addresses with meta.store = \"etcd\", got {}",
                    endpoints.len()
                ));
            }
            if let Some(bad) = endpoints.iter().find(|e| e.trim().is_empty()) {
                return Err(format!(
                    "meta.etcd_endpoints holds an empty address {bad:?}"
                ));
            }
            let prefix = section
                .etcd_prefix
                .clone()
                .unwrap_or_else(|| format!("/markab/{cluster_id}"));
            let prefix = prefix.trim_end_matches('/').to_owned();
            if !prefix.starts_with('/') || prefix.len() < 2 || prefix.len() > 256 {
                return Err(format!(
                    "meta.etcd_prefix = {prefix:?} must start with '/', name something below the root and be at most 256 bytes"
                ));
            }
            let session_ttl_s = section.etcd_session_ttl_s.unwrap_or(SESSION_TTL_S_DEFAULT);
            if !(1..=SESSION_TTL_S_MAX).contains(&session_ttl_s) {
                return Err(format!(
                    "meta.etcd_session_ttl_s = {session_ttl_s} is out of range (allowed 1..={SESSION_TTL_S_MAX})"
                ));
            }
            let timeout_ms = section.etcd_timeout_ms.unwrap_or(ETCD_TIMEOUT_MS_DEFAULT);
            if !(100..=10_000).contains(&timeout_ms) {
                return Err(format!(
                    "meta.etcd_timeout_ms = {timeout_ms} is out of range (allowed 100..=10000)"
                ));
            }
            Ok(StoreConfig::Etcd(EtcdConfig {
                endpoints,
                prefix,
                session_ttl_s,
                timeout_ms,
            }))
        }
        other => Err(format!(
            "meta.store = {other:?} is not a store (allowed \"file\", \"etcd\")"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MetaConfig, MetaConfigError> {
        MetaConfig::parse(Path::new("/etc/markab/meta.toml"), text)
    }

    fn error_text(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    // A minimal file gets every default, and a full file keeps every value.
    #[test]
    fn parses_minimal_and_full_files() {
        let config = parse("[meta]\ndata_dir = \"/d\"\n").unwrap();
        assert_eq!(config.listen, LISTEN_DEFAULT.parse().unwrap());
        assert_eq!(
            config.store,
            StoreConfig::File {
                data_dir: "/d".into()
            }
        );
        assert_eq!(config.hold_seconds, HOLD_SECONDS_DEFAULT);
        assert_eq!(config.node_timeout_ms, NODE_TIMEOUT_MS_DEFAULT);
        assert_eq!(config.replica_count_default, 3);
        assert_eq!(config.replica_count_max, 5);
        assert_eq!(config.cluster_id, 1);

        let config = parse(
            "[meta]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"/d\"\nhold_seconds = 10\n\
             node_timeout_ms = 700\nreplica_count_default = 1\nreplica_count_max = 3\n\
             cluster_id = 7\n",
        )
        .unwrap();
        assert_eq!(config.cluster_id, 7);
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.hold_seconds, 10);
        assert_eq!(config.node_timeout_ms, 700);
        assert_eq!(config.replica_count_default, 1);
        assert_eq!(config.replica_count_max, 3);
    }

    // Replication is on by default with the default timings;
    // `replication = false` turns it off, and explicit timings are kept.
    #[test]
    fn replication_switch_and_timings() {
        let config = parse("[meta]\ndata_dir = \"/d\"\n").unwrap();
        assert_eq!(config.replication, Some(MetaReplication::default()));
        let config = parse("[meta]\ndata_dir = \"/d\"\nreplication = false\n").unwrap();
        assert_eq!(config.replication, None);
        let config = parse(
            "[meta]\ndata_dir = \"/d\"\nreplication = true\nbeacon_interval_ms = 50\n\
             lease_ms = 300\ngrace_ms = 400\nreplica_count_min_alive = 3\nalive_percent_min = 65\n\
             balance_switches_max = 5\n",
        )
        .unwrap();
        assert_eq!(
            config.replication,
            Some(MetaReplication {
                beacon_interval_ms: 50,
                lease_ms: 300,
                grace_ms: 400,
                replica_count_min_alive: 3,
                alive_percent_min: 65,
                balance_switches_max: 5,
                ..MetaReplication::default()
            })
        );
    }

    // The etcd store: endpoints required, the prefix defaults to the
    // cluster id's and loses a trailing slash.
    #[test]
    fn parses_the_etcd_store() {
        let config = parse(
            "[meta]\nstore = \"etcd\"\netcd_endpoints = [\"127.0.0.1:2379\"]\ncluster_id = 3\n\
             advertise = \"10.0.0.1:34601\"\n",
        )
        .unwrap();
        let StoreConfig::Etcd(etcd) = &config.store else {
            panic!("{:?}", config.store)
        };
        assert_eq!(etcd.prefix, "/markab/3");
        assert_eq!(etcd.session_ttl_s, 2);
        assert_eq!(config.advertise.as_deref(), Some("10.0.0.1:34601"));
        let config = parse(
            "[meta]\nstore = \"etcd\"\netcd_endpoints = [\"e:1\"]\netcd_prefix = \"/x/y/\"\n",
        )
        .unwrap();
        let StoreConfig::Etcd(etcd) = &config.store else {
            panic!("{:?}", config.store)
        };
        assert_eq!(etcd.prefix, "/x/y");
    }

    // A smaller replica_count_max lowers the default replica count with it.
    #[test]
    fn default_replica_count_follows_a_small_max() {
        let config = parse("[meta]\ndata_dir = \"/d\"\nreplica_count_max = 1\n").unwrap();
        assert_eq!(config.replica_count_default, 1);
    }

    // Every bad value is refused with the file, the key and the allowed range.
    #[test]
    fn bad_values_name_file_and_key() {
        let cases = [
            ("[meta]\n", "data_dir"),
            (
                "[meta]\ndata_dir = \"/d\"\nlisten = \"nowhere\"\n",
                "meta.listen",
            ),
            ("[meta]\ndata_dir = \"\"\n", "meta.data_dir"),
            (
                "[meta]\ndata_dir = \"/d\"\nnode_timeout_ms = 5\n",
                "meta.node_timeout_ms",
            ),
            (
                "[meta]\ndata_dir = \"/d\"\nreplica_count_max = 6\n",
                "meta.replica_count_max",
            ),
            (
                "[meta]\ndata_dir = \"/d\"\nreplica_count_default = 0\n",
                "meta.replica_count_default",
            ),
            (
                "[meta]\ndata_dir = \"/d\"\nhold_seconds = 999999999999\n",
                "meta.hold_seconds",
            ),
            ("[meta]\ndata_dir = \"/d\"\nbogus = 1\n", "bogus"),
            (
                "[meta]\ndata_dir = \"/d\"\ncluster_id = 0\n",
                "meta.cluster_id: cluster_id (0) is out of range (allowed 1..=127)",
            ),
            (
                "[meta]\ndata_dir = \"/d\"\ncluster_id = 128\n",
                "meta.cluster_id: cluster_id (128) is out of range",
            ),
            (
                "[meta]\ndata_dir = \"/d\"\nlease_ms = 900\n",
                "grace_ms (800) must be more than lease_ms + beacon_interval_ms (900 + 100)",
            ),
            (
                "[meta]\ndata_dir = \"/d\"\ngrace_ms = 700\n",
                "grace_ms (700) must be more than lease_ms + beacon_interval_ms (600 + 100)",
            ),
            (
                "[meta]\ndata_dir = \"/d\"\nbalance_switches_max = 0\n",
                "balance_switches_max (0) is out of range (allowed 1..=4096)",
            ),
            (
                "[meta]\ndata_dir = \"/d\"\nalive_percent_min = 101\n",
                "alive_percent_min (101) is out of range (allowed 0..=100)",
            ),
            (
                "[meta]\ndata_dir = \"/d\"\nbeacon_interval_ms = 300\n",
                "lease_ms (600) must be more than 2 x beacon_interval_ms (300)",
            ),
            (
                "[meta]\ndata_dir = \"/d\"\nreplication = true\nreplica_count_min_alive = 0\n",
                "replica_count_min_alive",
            ),
            // Stores: a file that mixes them, or half an etcd setup.
            (
                "[meta]\ndata_dir = \"/d\"\netcd_endpoints = [\"127.0.0.1:2379\"]\n",
                "meta.etcd_endpoints is set but meta.store is \"file\"",
            ),
            (
                "[meta]\nstore = \"etcd\"\ndata_dir = \"/d\"\netcd_endpoints = [\"127.0.0.1:2379\"]\n",
                "meta.data_dir is set but meta.store is \"etcd\"",
            ),
            ("[meta]\nstore = \"etcd\"\n", "meta.etcd_endpoints must list"),
            ("[meta]\nstore = \"zookeeper\"\n", "meta.store = \"zookeeper\""),
            (
                "[meta]\nstore = \"etcd\"\netcd_endpoints = [\"e:1\"]\netcd_prefix = \"x\"\n",
                "meta.etcd_prefix",
            ),
            (
                "[meta]\nstore = \"etcd\"\netcd_endpoints = [\"e:1\"]\netcd_session_ttl_s = 0\n",
                "meta.etcd_session_ttl_s = 0 is out of range",
            ),
            (
                "[meta]\nstore = \"etcd\"\netcd_endpoints = [\"e:1\"]\nlisten = \"0.0.0.0:1\"\n",
                "set meta.advertise",
            ),
        ];
        for (text, key) in cases {
            let message = error_text(text);
            assert!(message.contains("/etc/markab/meta.toml"), "{message}");
            assert!(message.contains(key), "{key}: {message}");
        }
    }
}
