//! Per-shard tuning: `tuning/default.toml` plus optional `tuning/core-<cpu>.toml` overrides.
//!
//! The effective [`Tuning`] of the shard pinned to cpu `c` is: the built-in defaults, overridden
//! by every key set in `default.toml`, overridden by every key set in `core-<c>.toml`. A missing
//! directory or a missing `default.toml` means built-in defaults; a missing `core-<c>.toml` means
//! no override for that cpu. Unknown keys, values of the wrong type and values out of range are
//! errors that name the file, the key, the value and the allowed range.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// One KiB in bytes.
const KIB: i64 = 1 << 10;
/// One MiB in bytes.
const MIB: i64 = 1 << 20;
/// One GiB in bytes.
const GIB: i64 = 1 << 30;
/// One TiB in bytes.
const TIB: i64 = 1 << 40;

/// Name of the file every shard reads.
pub const DEFAULT_FILE_NAME: &str = "default.toml";

/// Smallest and largest port a `listen_port` override may name.
const LISTEN_PORT_RANGE: (i64, i64) = (1, 65_535);

/// Everything that can be wrong with a tuning directory or a tuning value.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    /// A tuning file exists but cannot be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A tuning file is not valid TOML, sets an unknown key or gives a key the wrong type. The
    /// message carries the line and column.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The TOML parser's message, with position.
        message: String,
    },
    /// A key's value is outside its allowed range.
    #[error("{file}: {key} = {value} is out of range (allowed {min}..={max})")]
    OutOfRange {
        /// The file (or `<in-memory tuning>` for [`Tuning::validate`]).
        file: String,
        /// The key.
        key: &'static str,
        /// The value given.
        value: i128,
        /// Smallest allowed value.
        min: i128,
        /// Largest allowed value.
        max: i128,
    },
    /// `listen_port` was set in `default.toml`, which would give every shard the same port.
    #[error("{file}: listen_port may only be set in a core-<cpu>.toml file (each shard needs its own port)")]
    ListenPortInDefault {
        /// The file.
        file: String,
    },
    /// Two per-core files override `listen_port` with the same port.
    #[error("{second_file}: listen_port = {port} is already used by {first_file}")]
    DuplicateListenPort {
        /// The port.
        port: u16,
        /// The first file that set it.
        first_file: String,
        /// The second file that set it.
        second_file: String,
    },
}

/// Static description of one numeric tuning key: its name, default and allowed range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TuningKey {
    /// The key as written in the files.
    pub name: &'static str,
    /// Built-in default.
    pub default: i64,
    /// Smallest allowed value.
    pub min: i64,
    /// Largest allowed value.
    pub max: i64,
    /// What the key controls.
    pub meaning: &'static str,
}

/// Defines every numeric key once: the `Tuning` field, its default, its range, the optional field
/// of the file struct and the code that checks and applies it.
macro_rules! numeric_keys {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:expr, $min:expr, $max:expr; )+) => {
        /// The effective tuning of one shard. All fields are public; `Default` gives the
        /// documented defaults (the same values as `tuning/default.toml`).
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Tuning {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
            /// Whether the mutation log calls fdatasync before acknowledging (default `true`).
            pub log_sync: bool,
            /// Port of this shard's listener, overriding `port_base + shard` (default none;
            /// range 1..=65535; only allowed in `core-<cpu>.toml`).
            pub listen_port: Option<u16>,
        }

        impl Default for Tuning {
            fn default() -> Self {
                Tuning {
                    $( $name: $default as $ty, )+
                    log_sync: true,
                    listen_port: None,
                }
            }
        }

        /// Every numeric key with its default and range, in file order.
        pub const NUMERIC_KEYS: &[TuningKey] = &[
            $( TuningKey {
                name: stringify!($name),
                default: $default,
                min: $min,
                max: $max,
                meaning: concat!($($doc),+),
            }, )+
        ];

        /// One tuning file as written: every key optional, unknown keys rejected.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TuningFile {
            $( $name: Option<i64>, )+
            log_sync: Option<bool>,
            listen_port: Option<i64>,
        }

        impl TuningFile {
            /// Keys this file does not set (listen_port aside).
            #[cfg(test)]
            fn missing_keys(&self) -> Vec<&'static str> {
                let mut missing = Vec::new();
                $( if self.$name.is_none() { missing.push(stringify!($name)); } )+
                if self.log_sync.is_none() { missing.push("log_sync"); }
                missing
            }
        }

        impl Tuning {
            /// A tuning where every key differs from its default (and stays in range), so that
            /// a test can tell which keys a file set.
            #[cfg(test)]
            fn unlike_defaults() -> Tuning {
                let defaults = Tuning::default();
                Tuning {
                    $( $name: if defaults.$name == $min as $ty { $max as $ty } else { $min as $ty }, )+
                    log_sync: !defaults.log_sync,
                    listen_port: None,
                }
            }

            /// Overrides every key `file` sets, after checking its range.
            fn apply(&mut self, file: &TuningFile, label: &str) -> Result<(), TuningError> {
                $(
                    if let Some(value) = file.$name {
                        check_range(label, stringify!($name), i128::from(value), $min, $max)?;
                        // In range, and every range fits the field's type.
                        self.$name = value as $ty;
                    }
                )+
                if let Some(value) = file.log_sync {
                    self.log_sync = value;
                }
                if let Some(value) = file.listen_port {
                    let (min, max) = LISTEN_PORT_RANGE;
                    check_range(label, "listen_port", i128::from(value), min, max)?;
                    self.listen_port = Some(value as u16);
                }
                Ok(())
            }

            /// Checks every value against its range; for tunings built in code. Errors name
            /// the source as `<in-memory tuning>`.
            pub fn validate(&self) -> Result<(), TuningError> {
                const LABEL: &str = "<in-memory tuning>";
                $(
                    // Widening to i128 is lossless for every field type used here.
                    check_range(LABEL, stringify!($name), self.$name as i128, $min, $max)?;
                )+
                if let Some(port) = self.listen_port {
                    let (min, max) = LISTEN_PORT_RANGE;
                    check_range(LABEL, "listen_port", i128::from(port), min, max)?;
                }
                Ok(())
            }
        }
    };
}

numeric_keys! {
    /// Memory glommio pre-registers with io_uring for storage I/O, in bytes (default 8 MiB:
    /// root's memlock limit on the dev box; range 64 KiB..=1 GiB).
    io_memory_bytes: usize = 8 * MIB, 64 * KIB, GIB;
    /// Depth of each io_uring ring of the executor (default 128; range 8..=32768).
    ring_depth: usize = 128, 8, 32_768;
    /// How often a task queue is asked to yield, in milliseconds (default 100; range 1..=10000).
    preempt_timer_ms: u64 = 100, 1, 10_000;
    /// How long the executor spins before parking, in microseconds; 0 turns spinning off
    /// (default 0; range 0..=1000000).
    spin_before_park_us: u64 = 0, 0, 1_000_000;
    /// Capacity of each bounded cross-shard channel, in messages (default 1024;
    /// range 1..=1048576).
    mesh_capacity: usize = 1024, 1, 1_048_576;
    /// Block cache shared by the shard's storage instances, in bytes (default 64 MiB;
    /// range 1 MiB..=1 TiB).
    block_cache_bytes: u64 = 64 * MIB, MIB, TIB;
    /// Write-buffer budget shared by the shard's storage instances, in bytes (default 64 MiB;
    /// range 1 MiB..=1 TiB).
    write_buffer_bytes: u64 = 64 * MIB, MIB, TIB;
    /// Background compaction threads of the shard's storage (default 2; range 1..=64).
    compaction_threads: usize = 2, 1, 64;
    /// Record cache shared by the shard's storage instances: whole hash keys read recently,
    /// in bytes (default 16 MiB; 0 turns it off; range 0..=1 TiB).
    record_cache_bytes: u64 = 16 * MIB, 0, TIB;
    /// Largest request frame accepted, in bytes (default 1 MiB; range 1 KiB..=64 MiB).
    request_bytes_max: usize = MIB, KIB, 64 * MIB;
    /// Most client connections the shard keeps open (default 10000; range 1..=1000000).
    connections_max: usize = 10_000, 1, 1_000_000;
    /// Most open scan cursors on the shard (default 1024; range 1..=1000000).
    scanners_max: usize = 1024, 1, 1_000_000;
    /// Idle time after which a scan cursor expires, in milliseconds (default 60000;
    /// range 100..=86400000).
    scanner_idle_timeout_ms: u64 = 60_000, 100, 86_400_000;
    /// How long the mutation log waits to gather a group commit, in microseconds
    /// (default 200; range 0..=100000).
    log_group_commit_window_us: u64 = 200, 0, 100_000;
    /// Largest batch of log records written by one group commit, in bytes (default 1 MiB;
    /// range 4 KiB..=64 MiB).
    log_batch_bytes_max: usize = MIB, 4 * KIB, 64 * MIB;
    /// Largest mutation-log segment file, header included, in bytes (default 64 MiB;
    /// range 1 MiB..=4 GiB).
    log_segment_bytes: u64 = 64 * MIB, MIB, 4 * GIB;
    /// Log size above which the shard flushes the replicas pinning the oldest segment so it can
    /// be deleted, in bytes (default 1 GiB; range 4 MiB..=1 TiB).
    log_bytes_max: u64 = GIB, 4 * MIB, TIB;
    /// Rate of the shard's copies to learners (replica moves, replicas rebuilt after a
    /// failure), in bytes per second, so a copy does not starve the shard's clients or
    /// the disk (default 64 MiB; range 64 KiB..=4 GiB).
    copy_bytes_per_second: u64 = 64 * MIB, 64 * KIB, 4 * GIB;
    /// Log size up to which a duplication keeps the log from its confirmed decree while
    /// the remote cluster lags, in bytes; past it the duplication fails (an operator
    /// restores the remote table and adds it again) rather than fill the disk (default
    /// 16 GiB; range 4 MiB..=1 TiB).
    dup_log_retain_bytes_max: u64 = 16 * GIB, 4 * MIB, TIB;
}

// Every range must fit the field types on the 64-bit targets Markab supports.
const _: () = assert!(usize::BITS >= 64);

impl Tuning {
    /// `preempt_timer_ms` as a duration.
    pub fn preempt_timer(&self) -> Duration {
        Duration::from_millis(self.preempt_timer_ms)
    }

    /// `spin_before_park_us` as a duration, or `None` when spinning is off.
    pub fn spin_before_park(&self) -> Option<Duration> {
        (self.spin_before_park_us > 0).then(|| Duration::from_micros(self.spin_before_park_us))
    }

    /// `scanner_idle_timeout_ms` as a duration.
    pub fn scanner_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.scanner_idle_timeout_ms)
    }

    /// `log_group_commit_window_us` as a duration.
    pub fn log_group_commit_window(&self) -> Duration {
        Duration::from_micros(self.log_group_commit_window_us)
    }
}

fn check_range(
    file: &str,
    key: &'static str,
    value: i128,
    min: i64,
    max: i64,
) -> Result<(), TuningError> {
    let (min, max) = (i128::from(min), i128::from(max));
    if value < min || value > max {
        return Err(TuningError::OutOfRange {
            file: file.to_string(),
            key,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// Reads and parses one tuning file; `Ok(None)` when it does not exist.
fn read_file(path: &Path) -> Result<Option<TuningFile>, TuningError> {
    let label = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TuningError::Io {
                file: label,
                source,
            })
        }
    };
    parse_file(&text, &label).map(Some)
}

fn parse_file(text: &str, label: &str) -> Result<TuningFile, TuningError> {
    toml::from_str(text).map_err(|error| TuningError::Parse {
        file: label.to_string(),
        message: error.to_string().trim_end().to_string(),
    })
}

/// Path of the per-core override file for `cpu` in `dir`.
pub fn core_file_path(dir: &Path, cpu: usize) -> PathBuf {
    dir.join(format!("core-{cpu}.toml"))
}

/// Loads the effective tuning of every cpu in `cpus`, in the same order: built-in defaults,
/// then `dir/default.toml`, then `dir/core-<cpu>.toml`. A missing directory or file is not an
/// error (built-in defaults, no override). Errors name the file, key, value and allowed range.
pub fn load_tuning(dir: &Path, cpus: &[usize]) -> Result<Vec<Tuning>, TuningError> {
    let default_path = dir.join(DEFAULT_FILE_NAME);
    let mut base = Tuning::default();
    if let Some(file) = read_file(&default_path)? {
        let label = default_path.display().to_string();
        if file.listen_port.is_some() {
            return Err(TuningError::ListenPortInDefault { file: label });
        }
        base.apply(&file, &label)?;
    }

    let mut tunings = Vec::with_capacity(cpus.len());
    let mut ports: Vec<(u16, String)> = Vec::new();
    for &cpu in cpus {
        let path = core_file_path(dir, cpu);
        let mut tuning = base.clone();
        if let Some(file) = read_file(&path)? {
            let label = path.display().to_string();
            tuning.apply(&file, &label)?;
            if let Some(port) = tuning.listen_port {
                if let Some((_, first_file)) = ports.iter().find(|(used, _)| *used == port) {
                    return Err(TuningError::DuplicateListenPort {
                        port,
                        first_file: first_file.clone(),
                        second_file: label,
                    });
                }
                ports.push((port, label));
            }
        }
        tunings.push(tuning);
    }
    Ok(tunings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_TOML: &str = include_str!("../../tuning/default.toml");

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write tuning file");
    }

    // Proves tuning/default.toml sets every key and parses to exactly Tuning::default().
    #[test]
    fn default_file_matches_built_in_defaults() {
        let file = parse_file(DEFAULT_TOML, "tuning/default.toml").expect("parse");
        assert_eq!(file.missing_keys(), Vec::<&str>::new());
        assert!(file.listen_port.is_none());
        // Start from values unlike the defaults so that every key must come from the file.
        let mut tuning = Tuning::unlike_defaults();
        tuning.validate().expect("still in range");
        assert_ne!(tuning, Tuning::default());
        for key in NUMERIC_KEYS {
            assert!(
                key.min <= key.default && key.default <= key.max,
                "{}",
                key.name
            );
        }
        tuning.apply(&file, "tuning/default.toml").expect("apply");
        assert_eq!(tuning, Tuning::default());
        Tuning::default().validate().expect("defaults are in range");
    }

    // Proves the shipped per-core example parses, stays in range and sets a listen port.
    #[test]
    fn core_example_file_is_valid() {
        let text = include_str!("../../tuning/core-1.toml.example");
        let file = parse_file(text, "tuning/core-1.toml.example").expect("parse");
        let mut tuning = Tuning::default();
        tuning
            .apply(&file, "tuning/core-1.toml.example")
            .expect("apply");
        assert_eq!(tuning.listen_port, Some(34901));
        assert_ne!(tuning, Tuning::default());
    }

    // Proves docs/shards.md has a table row for every key with its range.
    #[test]
    fn docs_list_every_key() {
        let docs = include_str!("../../docs/shards.md");
        for key in NUMERIC_KEYS {
            assert!(
                docs.contains(&format!("| `{}` |", key.name)),
                "{}",
                key.name
            );
        }
        for key in ["log_sync", "listen_port"] {
            assert!(docs.contains(&format!("| `{key}` |")), "{key}");
        }
    }

    // Proves a missing directory gives built-in defaults for every cpu.
    #[test]
    fn missing_directory_gives_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tunings = load_tuning(&dir.path().join("absent"), &[0, 3]).expect("load");
        assert_eq!(tunings, vec![Tuning::default(), Tuning::default()]);
    }

    // Proves default.toml overrides built-ins and core-<cpu>.toml overrides default.toml for
    // that cpu only, key by key.
    #[test]
    fn core_files_override_default_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "default.toml",
            "ring_depth = 256\nlog_sync = false\n",
        );
        write(
            dir.path(),
            "core-1.toml",
            "ring_depth = 512\nlisten_port = 34801\nblock_cache_bytes = 2_097_152\n",
        );
        let tunings = load_tuning(dir.path(), &[0, 1]).expect("load");
        assert_eq!(tunings[0].ring_depth, 256);
        assert!(!tunings[0].log_sync);
        assert_eq!(tunings[0].listen_port, None);
        assert_eq!(
            tunings[0].block_cache_bytes,
            Tuning::default().block_cache_bytes
        );
        assert_eq!(tunings[1].ring_depth, 512);
        assert!(!tunings[1].log_sync, "inherited from default.toml");
        assert_eq!(tunings[1].listen_port, Some(34801));
        assert_eq!(tunings[1].block_cache_bytes, 2 * 1024 * 1024);
        assert_eq!(
            tunings[1].io_memory_bytes,
            Tuning::default().io_memory_bytes
        );
    }

    // Proves an out-of-range value names the file, key, value and allowed range.
    #[test]
    fn out_of_range_names_file_key_value_and_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "core-1.toml", "ring_depth = 3\n");
        let error = load_tuning(dir.path(), &[0, 1]).expect_err("out of range");
        let expected = format!(
            "{}: ring_depth = 3 is out of range (allowed 8..=32768)",
            dir.path().join("core-1.toml").display()
        );
        assert_eq!(error.to_string(), expected);

        write(dir.path(), "core-1.toml", "spin_before_park_us = -1\n");
        let error = load_tuning(dir.path(), &[1]).expect_err("negative");
        assert!(
            error.to_string().contains("spin_before_park_us = -1"),
            "{error}"
        );

        write(dir.path(), "core-1.toml", "listen_port = 70000\n");
        let error = load_tuning(dir.path(), &[1]).expect_err("port");
        assert!(error.to_string().contains("(allowed 1..=65535)"), "{error}");
    }

    // Proves unknown keys are rejected with the file name and the key.
    #[test]
    fn unknown_key_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "default.toml", "ring_dept = 64\n");
        let error = load_tuning(dir.path(), &[0]).expect_err("unknown key");
        let message = error.to_string();
        assert!(matches!(error, TuningError::Parse { .. }));
        assert!(message.contains("default.toml"), "{message}");
        assert!(message.contains("ring_dept"), "{message}");
    }

    // Proves TOML syntax errors and wrong value types name the file and the position.
    #[test]
    fn syntax_and_type_errors_name_file_and_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "default.toml",
            "ring_depth = 64\nio_memory_bytes = = 3\n",
        );
        let message = load_tuning(dir.path(), &[0])
            .expect_err("syntax")
            .to_string();
        assert!(message.contains("default.toml"), "{message}");
        assert!(message.contains("line 2"), "{message}");

        write(dir.path(), "default.toml", "ring_depth = \"deep\"\n");
        let message = load_tuning(dir.path(), &[0]).expect_err("type").to_string();
        assert!(message.contains("line 1"), "{message}");
    }

    // Proves listen_port is refused in default.toml and may not repeat across core files.
    #[test]
    fn listen_port_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "default.toml", "listen_port = 34800\n");
        let error = load_tuning(dir.path(), &[0]).expect_err("port in default");
        assert!(matches!(error, TuningError::ListenPortInDefault { .. }));

        std::fs::remove_file(dir.path().join("default.toml")).expect("remove");
        write(dir.path(), "core-0.toml", "listen_port = 34800\n");
        write(dir.path(), "core-1.toml", "listen_port = 34800\n");
        let error = load_tuning(dir.path(), &[0, 1]).expect_err("duplicate port");
        assert!(matches!(
            error,
            TuningError::DuplicateListenPort { port: 34800, .. }
        ));
    }

    // Proves validate() catches out-of-range values set in code.
    #[test]
    fn validate_catches_in_memory_values() {
        let tuning = Tuning {
            mesh_capacity: 0,
            ..Tuning::default()
        };
        let error = tuning.validate().expect_err("zero capacity");
        assert_eq!(
            error.to_string(),
            "<in-memory tuning>: mesh_capacity = 0 is out of range (allowed 1..=1048576)"
        );
    }

    // Proves an unreadable tuning path (a directory where a file should be) is an I/O error
    // naming the file.
    #[test]
    fn unreadable_file_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("default.toml")).expect("mkdir");
        let error = load_tuning(dir.path(), &[0]).expect_err("directory");
        assert!(matches!(error, TuningError::Io { .. }), "{error}");
        assert!(error.to_string().contains("default.toml"), "{error}");
    }
}
