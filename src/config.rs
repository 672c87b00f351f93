//! The node's config file: where it listens, where its data lives, how many
//! shards it runs, and — in standalone mode — which tables it serves.
//!
//! ```toml
//! [node]
//! data_dir = "/var/tmp/markab/node1"   # required
//! host = "127.0.0.1"                    # default 127.0.0.1
//! port_base = 34801                     # shard i listens on port_base + i; 0 = any free port
//! shards = "auto"                       # "auto" (one per core), a count, or a list of cpu ids
//! pin = true                            # pin each shard's executor to its cpu
//! tuning_dir = "tuning"                 # relative to this file; default.toml + core-<cpu>.toml
//! # Cluster mode: meta addresses (and no [[table]]); the node registers with
//! # meta and hosts the replicas meta assigns to it.
//! # meta = ["127.0.0.1:34601"]
//! # beacon_interval_ms = 100
//! # prepare_timeout_ms = 1000          # a secondary silent this long is reported to meta
//! # metrics_listen = "127.0.0.1:9101"  # Prometheus text on /metrics (off when unset)
//! # backup_upload_bytes_per_second = 8388608  # cold backup uploads, 0 = unlimited
//!
//! # Cluster mode: S3 credentials for backup stores (default: the
//! # environment's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
//! # [backup]
//! # s3_access_key_id = "..."
//! # s3_secret_access_key = "..."
//!
//! # Standalone mode: the tables this node serves by itself.
//! [[table]]
//! name = "temp"
//! app_id = 1
//! partition_count = 8
//! ```

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use markab_shards::topology::ShardCount;
use serde::Deserialize;

pub use markab_core::table::{
    validate_partition_count, validate_table_name, PARTITION_COUNT_MAX, TABLE_NAME_BYTES_MAX,
};
/// Default first shard port (shard i listens on `port_base + i`).
pub const PORT_BASE_DEFAULT: u16 = 34_801;

/// Errors loading or validating a config file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
    node: NodeSection,
    #[serde(default, rename = "table")]
    tables: Vec<TableConfig>,
    #[serde(default)]
    backup: crate::backup::BackupSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    data_dir: PathBuf,
    #[serde(default = "default_host")]
    host: IpAddr,
    #[serde(default = "default_port_base")]
    port_base: u16,
    #[serde(default)]
    shards: ShardsSetting,
    #[serde(default = "default_pin")]
    pin: bool,
    tuning_dir: Option<PathBuf>,
    #[serde(default)]
    meta: Vec<String>,
    #[serde(default = "default_beacon_interval_ms")]
    beacon_interval_ms: u64,
    #[serde(default = "default_prepare_timeout_ms")]
    prepare_timeout_ms: u64,
    metrics_listen: Option<std::net::SocketAddr>,
    #[serde(default = "default_backup_upload_bytes_per_second")]
    backup_upload_bytes_per_second: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum ShardsSetting {
    #[default]
    #[serde(skip)]
    Auto,
    Word(String),
    Count(usize),
    Cpus(Vec<usize>),
}

fn default_host() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_port_base() -> u16 {
    PORT_BASE_DEFAULT
}

fn default_pin() -> bool {
    true
}

fn default_beacon_interval_ms() -> u64 {
    BEACON_INTERVAL_MS_DEFAULT
}

fn default_prepare_timeout_ms() -> u64 {
    markab_core::replication::config::PREPARE_TIMEOUT_MS_DEFAULT
}

fn default_backup_upload_bytes_per_second() -> u64 {
    BACKUP_UPLOAD_BYTES_PER_SECOND_DEFAULT
}

/// Default pace of a node's cold backup uploads: 8 MiB/s, at which a
/// YCSB run's p99 during back-to-back backups stayed within the noise of
/// undisturbed runs on a 2-vCPU machine (32 MiB/s cost 2.4-11x there; see
/// docs/BENCHMARKS.md). Machines with headroom raise it.
pub const BACKUP_UPLOAD_BYTES_PER_SECOND_DEFAULT: u64 = 8 * 1024 * 1024;

/// Default interval between a node's beacons to meta.
pub const BEACON_INTERVAL_MS_DEFAULT: u64 = 100;

/// A table served by a standalone node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Letters, digits, `_`, `-` and `.`; at most 128 bytes.
    pub name: String,
    /// Positive and unique on this node.
    pub app_id: i32,
    /// A power of two, at most 65,536.
    pub partition_count: u32,
}

/// A validated node configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub path: PathBuf,
    pub data_dir: PathBuf,
    pub host: IpAddr,
    pub port_base: u16,
    pub shards: ShardCount,
    pub pin: bool,
    pub tuning_dir: PathBuf,
    /// Standalone mode: the tables this node serves by itself.
    pub tables: Vec<TableConfig>,
    /// Cluster mode: meta addresses (`host:port`).
    pub meta: Vec<String>,
    /// Cluster mode: milliseconds between beacons to meta (100..=60,000).
    pub beacon_interval_ms: u64,
    /// Milliseconds a secondary may leave a Prepare unacknowledged before
    /// its primary asks meta to remove it (100..=60,000; default 1,000).
    pub prepare_timeout_ms: u64,
    /// Where to serve Prometheus metrics on `/metrics` (off when unset).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Cluster mode: the node's upload rate for partition backups, in
    /// bytes per second (0 = unlimited; default 8 MiB/s).
    pub backup_upload_bytes_per_second: u64,
    /// S3 credentials of `[backup]`, if given (else the environment's).
    pub backup_credentials: Option<crate::backup::StoreCredentials>,
}

impl NodeConfig {
    /// Whether the node registers with meta (cluster mode) rather than
    /// serving the tables of its config file (standalone mode).
    pub fn is_cluster(&self) -> bool {
        !self.meta.is_empty()
    }
}

impl NodeConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        NodeConfig::parse(path, &text)
    }

    /// Parses and validates `text`; `path` names the file in errors and
    /// anchors the relative `tuning_dir`.
    pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let shards = match file.node.shards {
            ShardsSetting::Auto => ShardCount::Auto,
            ShardsSetting::Word(word) if word == "auto" => ShardCount::Auto,
            ShardsSetting::Word(word) => {
                return Err(invalid(format!(
                    "node.shards = {word:?} is not valid (allowed: \"auto\", a count, or a list of cpu ids)"
                )))
            }
            ShardsSetting::Count(0) => {
                return Err(invalid("node.shards = 0 is out of range (allowed 1..)".into()))
            }
            ShardsSetting::Count(count) => ShardCount::Count(count),
            ShardsSetting::Cpus(cpus) if cpus.is_empty() => {
                return Err(invalid("node.shards = [] names no cpu".into()))
            }
            ShardsSetting::Cpus(cpus) => ShardCount::Cpus(cpus),
        };
        match (file.tables.is_empty(), file.node.meta.is_empty()) {
            (true, true) => {
                return Err(invalid(
                    "declare either node.meta (cluster mode) or [[table]] entries (standalone mode)"
                        .into(),
                ))
            }
            (false, false) => {
                return Err(invalid(
                    "node.meta (cluster mode) and [[table]] entries (standalone mode) exclude each other"
                        .into(),
                ))
            }
            _ => {}
        }
        for address in &file.node.meta {
            if address.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(format!(
                    "node.meta entry {address:?} is not an address like 127.0.0.1:34601"
                )));
            }
        }
        if !(100..=60_000).contains(&file.node.beacon_interval_ms) {
            return Err(invalid(format!(
                "node.beacon_interval_ms = {} is out of range (allowed 100..=60000)",
                file.node.beacon_interval_ms
            )));
        }
        if !(100..=60_000).contains(&file.node.prepare_timeout_ms) {
            return Err(invalid(format!(
                "node.prepare_timeout_ms = {} is out of range (allowed 100..=60000)",
                file.node.prepare_timeout_ms
            )));
        }
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let tuning_dir = base_dir.join(file.node.tuning_dir.unwrap_or_else(|| "tuning".into()));
        let mut names = HashSet::new();
        let mut app_ids = HashSet::new();
        for table in &file.tables {
            validate_table_name(&table.name)
                .map_err(|message| invalid(format!("table {message}")))?;
            if table.app_id <= 0 {
                return Err(invalid(format!(
                    "table {:?}: app_id = {} is out of range (allowed 1..)",
                    table.name, table.app_id
                )));
            }
            validate_partition_count(table.partition_count)
                .map_err(|message| invalid(format!("table {:?}: {message}", table.name)))?;
            if !names.insert(table.name.clone()) {
                return Err(invalid(format!("table {:?} is declared twice", table.name)));
            }
            if !app_ids.insert(table.app_id) {
                return Err(invalid(format!(
                    "app_id {} is used by two tables",
                    table.app_id
                )));
            }
        }
        let backup_credentials = file.backup.credentials().map_err(invalid)?;
        Ok(NodeConfig {
            backup_credentials,
            path: path.to_owned(),
            data_dir: file.node.data_dir,
            host: file.node.host,
            port_base: file.node.port_base,
            shards,
            pin: file.node.pin,
            tuning_dir,
            tables: file.tables,
            meta: file.node.meta,
            beacon_interval_ms: file.node.beacon_interval_ms,
            prepare_timeout_ms: file.node.prepare_timeout_ms,
            metrics_listen: file.node.metrics_listen,
            backup_upload_bytes_per_second: file.node.backup_upload_bytes_per_second,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(Path::new("/etc/markab/node.toml"), text)
    }

    // A full file parses with every field, and defaults fill what is left out.
    #[test]
    fn parses_full_and_minimal_files() {
        let config = parse(
            "[node]\ndata_dir = \"/d\"\nport_base = 0\nshards = [0, 1]\npin = false\ntuning_dir = \"t\"\n\
             [[table]]\nname = \"temp\"\napp_id = 1\npartition_count = 8\n",
        )
        .unwrap();
        assert_eq!(config.shards, ShardCount::Cpus(vec![0, 1]));
        assert_eq!(config.tuning_dir, Path::new("/etc/markab/t"));
        assert_eq!(config.tables.len(), 1);
        assert!(!config.pin);

        let config = parse("[node]\ndata_dir = \"/d\"\nmeta = [\"127.0.0.1:34601\"]\n").unwrap();
        assert!(config.is_cluster());
        assert_eq!(config.shards, ShardCount::Auto);
        assert_eq!(config.port_base, PORT_BASE_DEFAULT);
        assert_eq!(config.tuning_dir, Path::new("/etc/markab/tuning"));
        assert!(config.pin);
        assert_eq!(config.prepare_timeout_ms, 1_000);
        assert_eq!(
            config.backup_upload_bytes_per_second,
            BACKUP_UPLOAD_BYTES_PER_SECOND_DEFAULT
        );
        assert_eq!(config.backup_credentials, None);
        let config = parse(
            "[node]\ndata_dir = \"/d\"\nmeta = [\"127.0.0.1:1\"]\n[backup]\ns3_access_key_id = \"AKIDEXAMPLE\"\ns3_secret_access_key = \"very-secret\"\n",
        )
        .unwrap();
        assert!(config.backup_credentials.is_some());
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("very-secret") && !printed.contains("AKIDEXAMPLE"),
            "{printed}"
        );
        assert_eq!(
            parse("[node]\ndata_dir = \"/d\"\nshards = 2\nmeta = [\"127.0.0.1:1\"]\n")
                .unwrap()
                .shards,
            ShardCount::Count(2)
        );
    }

    // Every validation error names the file and the offending setting.
    #[test]
    fn rejects_bad_settings_with_clear_errors() {
        let cases = [
            ("[node]\ndata_dir = \"/d\"\nshards = 0\n", "node.shards = 0"),
            ("[node]\ndata_dir = \"/d\"\nshards = \"many\"\n", "node.shards = \"many\""),
            ("[node]\ndata_dir = \"/d\"\n", "either node.meta"),
            ("[node]\ndata_dir = \"/d\"\nmeta = [\"nowhere\"]\n", "\"nowhere\""),
            (
                "[node]\ndata_dir = \"/d\"\nmeta = [\"127.0.0.1:1\"]\nbeacon_interval_ms = 5\n",
                "beacon_interval_ms = 5",
            ),
            (
                "[node]\ndata_dir = \"/d\"\nmeta = [\"127.0.0.1:1\"]\nprepare_timeout_ms = 10\n",
                "prepare_timeout_ms = 10",
            ),
            (
                "[node]\ndata_dir = \"/d\"\nmeta = [\"127.0.0.1:1\"]\n[[table]]\nname = \"t\"\napp_id = 1\npartition_count = 8\n",
                "exclude each other",
            ),
            ("[node]\ndata_dir = \"/d\"\nbogus = 1\n", "bogus"),
            (
                "[node]\ndata_dir = \"/d\"\nmeta = [\"127.0.0.1:1\"]\n[backup]\ns3_access_key_id = \"k\"\n",
                "backup.s3_access_key_id and backup.s3_secret_access_key",
            ),
            ("[node]\n", "data_dir"),
            ("[node]\ndata_dir = \"/d\"\n[[table]]\nname = \"a b\"\napp_id = 1\npartition_count = 8\n", "' '"),
            ("[node]\ndata_dir = \"/d\"\n[[table]]\nname = \"t\"\napp_id = 1\npartition_count = 6\n", "power of two"),
            ("[node]\ndata_dir = \"/d\"\n[[table]]\nname = \"t\"\napp_id = 0\npartition_count = 8\n", "app_id = 0"),
            (
                "[node]\ndata_dir = \"/d\"\n[[table]]\nname = \"t\"\napp_id = 1\npartition_count = 8\n\
                 [[table]]\nname = \"t\"\napp_id = 2\npartition_count = 8\n",
                "declared twice",
            ),
            (
                "[node]\ndata_dir = \"/d\"\n[[table]]\nname = \"t\"\napp_id = 1\npartition_count = 8\n\
                 [[table]]\nname = \"u\"\napp_id = 1\npartition_count = 8\n",
                "app_id 1 is used by two tables",
            ),
        ];
        for (text, expected) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.starts_with("/etc/markab/node.toml"), "{message}");
            assert!(
                message.contains(expected),
                "{message:?} should mention {expected:?}"
            );
        }
    }
}
