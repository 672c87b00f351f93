//! Markab's block service: the layer that stores cold-backup files.
//!
//! A [`BlockStore`] holds objects under `/`-separated keys (see [`key`] for the rules). Two stores
//! implement it:
//!
//! * [`LocalStore`]: a local or mounted directory. Every write goes to a temporary name in the
//!   target's own directory, is fsynced, then renamed over the final name (**atomic-publish**: a
//!   reader never sees a partial file under a key).
//! * [`S3Store`]: any S3-compatible object store, through Apache Arrow's `object_store` crate.
//!   Files above [`StoreOptions::multipart_threshold_bytes`] are uploaded in parts.
//!
//! Both compute a CRC-32C while reading or writing a file and return it in a [`FileInfo`];
//! [`BlockStore::get_file`] compares size and checksum against the recorded [`FileInfo`] before the
//! downloaded file takes its final name (**verify-before-publish**). Stores are opened from a URL
//! with [`open`]: `file:///abs/dir` or `s3://bucket/prefix?endpoint=...&region=...`. See
//! `docs/backup.md`.
//!
//! ```
//! use markab_blocks::{open, BlockStore, StoreOptions};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let url = format!("file://{}", dir.path().display());
//! let store = open(&url, StoreOptions::default())?;
//! store.put_bytes("policies/daily/manifest", b"checkpoint 7".to_vec()).await?;
//! assert_eq!(store.get_bytes("policies/daily/manifest").await?, b"checkpoint 7");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod atomic;
pub mod checksum;
pub mod error;
pub mod key;
pub mod local;
pub mod location;
pub mod moto;
pub mod pace;
pub mod retry;
pub mod s3;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use error::BlockError;
pub use local::LocalStore;
pub use location::{parse_url, StoreLocation};
pub use pace::UploadPacer;
pub use retry::RetryPolicy;
pub use s3::{S3Config, S3Credentials, S3Store};

/// One MiB in bytes.
const MIB: u64 = 1 << 20;

/// Files of at least this many bytes are uploaded in parts by [`S3Store`] (default of
/// [`StoreOptions::multipart_threshold_bytes`]).
pub const MULTIPART_THRESHOLD_BYTES_DEFAULT: u64 = 8 * MIB;
/// Default size of one part of a multi-part upload ([`StoreOptions::part_bytes`]).
pub const PART_BYTES_DEFAULT: usize = 8 * MIB as usize;
/// S3 rejects parts smaller than this, except the last one of an upload.
pub const PART_BYTES_MIN: usize = 5 * MIB as usize;
/// Largest part [`StoreOptions::part_bytes`] accepts: bounds the memory of one upload.
pub const PART_BYTES_MAX: usize = 64 * MIB as usize;
/// Parts of one upload in flight at once; with the part being filled, an upload buffers at most
/// `(UPLOAD_PARTS_INFLIGHT_MAX + 1) * part_bytes`.
pub const UPLOAD_PARTS_INFLIGHT_MAX: usize = 2;
/// Files are read and written in chunks of this many bytes; the upload pacer is charged per chunk.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Largest object [`BlockStore::put_bytes`] writes and [`BlockStore::get_bytes`] reads into
/// memory: those two are for manifests, files go through `put_file` / `get_file`.
pub const BYTES_MAX: u64 = 64 * MIB;

const _: () = assert!(PART_BYTES_DEFAULT >= PART_BYTES_MIN);
const _: () = assert!(PART_BYTES_DEFAULT <= PART_BYTES_MAX);
const _: () = assert!(MULTIPART_THRESHOLD_BYTES_DEFAULT >= PART_BYTES_MIN as u64);
const _: () = assert!(MULTIPART_THRESHOLD_BYTES_DEFAULT <= PART_BYTES_MAX as u64);
const _: () = assert!(CHUNK_BYTES <= PART_BYTES_MIN);

/// What a store recorded about one object: its key, its size and the CRC-32C (Castagnoli) of its
/// bytes. A backup's manifest keeps these so that a restore can check every file it downloads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The object's key in its store.
    pub key: String,
    /// The object's length in bytes.
    pub size_bytes: u64,
    /// CRC-32C of the object's bytes.
    pub crc32c: u32,
}

/// One object found by [`BlockStore::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// The object's key in its store.
    pub key: String,
    /// The object's length in bytes.
    pub size_bytes: u64,
}

/// Settings shared by both stores. `Default` gives the values named by the constants above:
/// 8 MiB multi-part threshold and parts, no upload rate limit, [`RetryPolicy::default`], 5 s to
/// connect and 60 s per request.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// [`S3Store`] uploads files of at least this many bytes in parts; smaller ones with one put,
    /// from memory (so at most [`PART_BYTES_MAX`]).
    pub multipart_threshold_bytes: u64,
    /// Size of each part of a multi-part upload, within `PART_BYTES_MIN..=PART_BYTES_MAX`.
    pub part_bytes: usize,
    /// Upload rate limit of `put_file`, shared by all uploads of one store; 0 means unlimited.
    pub upload_bytes_per_second: u64,
    /// Retries of transient failures: bounded attempts, exponential backoff, an overall bound.
    pub retry: RetryPolicy,
    /// [`S3Store`]: bound on establishing one connection.
    pub connect_timeout: Duration,
    /// [`S3Store`]: bound on one request, body included (one part of an upload is one request).
    pub request_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            multipart_threshold_bytes: MULTIPART_THRESHOLD_BYTES_DEFAULT,
            part_bytes: PART_BYTES_DEFAULT,
            upload_bytes_per_second: 0,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl StoreOptions {
    /// Checks the bounds: a part size S3 accepts and that bounds memory, a threshold within
    /// `1..=PART_BYTES_MAX`, non-zero timeouts and a valid retry policy.
    pub fn validate(&self) -> Result<(), BlockError> {
        let invalid = |reason: String| Err(BlockError::InvalidOptions { reason });
        if !(PART_BYTES_MIN..=PART_BYTES_MAX).contains(&self.part_bytes) {
            return invalid(format!(
                "part_bytes {} is outside {PART_BYTES_MIN}..={PART_BYTES_MAX}",
                self.part_bytes
            ));
        }
        // Files below the threshold are uploaded from memory: the bound on it bounds that memory.
        if !(1..=PART_BYTES_MAX as u64).contains(&self.multipart_threshold_bytes) {
            return invalid(format!(
                "multipart_threshold_bytes {} is outside 1..={PART_BYTES_MAX}",
                self.multipart_threshold_bytes
            ));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return invalid("connect_timeout and request_timeout must be non-zero".to_string());
        }
        self.retry.validate()
    }
}

/// Where backups live. Keys follow [`key::validate_key`]; a prefix is matched by whole segments
/// (`list("tables/1")` finds `tables/1/a` but not `tables/10/a`; `""` matches every key).
///
/// Every operation either completes or fails with a [`BlockError`] within a bound set by
/// [`StoreOptions`]: transient failures are retried under [`StoreOptions::retry`], others (not
/// found, rejected credentials, a checksum mismatch) fail at once.
#[async_trait]
pub trait BlockStore: std::fmt::Debug + std::fmt::Display + Send + Sync {
    /// Uploads the local file `local_path` under `key`, reading it in [`CHUNK_BYTES`] chunks,
    /// paced by the upload rate limit, and returns its size and CRC-32C as read.
    async fn put_file(&self, local_path: &Path, key: &str) -> Result<FileInfo, BlockError>;

    /// Downloads `key` to `local_path` through a temporary file in the same directory. With
    /// `expected`, a size or checksum that differs fails with [`BlockError::Checksum`] and leaves
    /// nothing at `local_path`. Returns what was downloaded.
    async fn get_file(
        &self,
        key: &str,
        local_path: &Path,
        expected: Option<&FileInfo>,
    ) -> Result<FileInfo, BlockError>;

    /// Stores `bytes` (at most [`BYTES_MAX`]) under `key` in one write.
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<FileInfo, BlockError>;

    /// Reads the whole object `key` (at most [`BYTES_MAX`]) into memory.
    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, BlockError>;

    /// Every object under `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, BlockError>;

    /// Whether an object is stored under `key`.
    async fn exists(&self, key: &str) -> Result<bool, BlockError>;

    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlockError>;

    /// Removes every object under `prefix` and returns how many there were.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BlockError>;
}

/// Opens the store a URL names (see [`parse_url`]): `file:///abs/dir` gives a [`LocalStore`],
/// `s3://bucket/prefix?endpoint=...&region=...` an [`S3Store`] whose credentials come from
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN` if set).
pub fn open(url: &str, options: StoreOptions) -> Result<Arc<dyn BlockStore>, BlockError> {
    open_with_credentials(url, options, None)
}

/// [`open`], with S3 credentials given (from a config file) instead of read from the
/// environment; a directory store ignores them.
pub fn open_with_credentials(
    url: &str,
    options: StoreOptions,
    credentials: Option<S3Credentials>,
) -> Result<Arc<dyn BlockStore>, BlockError> {
    match parse_url(url)? {
        StoreLocation::Local { root } => Ok(Arc::new(LocalStore::new(root, options)?)),
        StoreLocation::S3(mut config) => {
            if credentials.is_some() {
                config.credentials = credentials;
            }
            Ok(Arc::new(S3Store::new(config, options)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves credentials given to `open_with_credentials` (a config file's) are the ones an S3
    /// store uses: without them and without the environment's, opening fails naming the
    /// variables; with them it opens; a directory store ignores them.
    #[test]
    fn given_credentials_are_used() {
        let url = "s3://bucket/prefix?endpoint=http://127.0.0.1:1";
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            let error = open(url, StoreOptions::default()).unwrap_err();
            assert!(matches!(error, BlockError::Credentials { .. }), "{error}");
        }
        let given = S3Credentials::new("AKIDGIVEN", "given-secret");
        let store = open_with_credentials(url, StoreOptions::default(), Some(given)).unwrap();
        let shown = format!("{store:?} {store}");
        assert!(!shown.contains("given-secret"), "{shown}");
        let dir = tempfile::tempdir().unwrap();
        let local = format!("file://{}", dir.path().display());
        let given = S3Credentials::new("AKIDGIVEN", "given-secret");
        assert!(open_with_credentials(&local, StoreOptions::default(), Some(given)).is_ok());
    }

    /// Proves the option bounds: the defaults pass, and a part below S3's minimum, a threshold
    /// that would buffer more than a part's bound in memory, a zero timeout and zero retry
    /// attempts are refused.
    #[test]
    fn options_are_bounded() {
        assert!(StoreOptions::default().validate().is_ok());
        let refused = [
            StoreOptions {
                part_bytes: PART_BYTES_MIN - 1,
                ..StoreOptions::default()
            },
            StoreOptions {
                multipart_threshold_bytes: PART_BYTES_MAX as u64 + 1,
                ..StoreOptions::default()
            },
            StoreOptions {
                request_timeout: Duration::ZERO,
                ..StoreOptions::default()
            },
            StoreOptions {
                retry: RetryPolicy {
                    attempts_max: 0,
                    ..RetryPolicy::default()
                },
                ..StoreOptions::default()
            },
        ];
        for options in refused {
            let error = options.validate().unwrap_err();
            assert!(
                matches!(error, BlockError::InvalidOptions { .. }),
                "{error}"
            );
        }
    }
}
