//! The block service's one error type. Every message names the key, file or URL it is about;
//! none ever carries credentials (the S3 store redacts them from the texts it passes on).

use std::path::PathBuf;

/// Why a block-service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// No object is stored under the key.
    #[error("{store}: no object under key {key:?}")]
    NotFound {
        /// The store, as its `Display` shows it.
        store: String,
        /// The key that was asked for.
        key: String,
    },

    /// The S3 bucket does not exist (or is not visible with these credentials).
    #[error("{store}: bucket {bucket:?} does not exist")]
    BucketNotFound {
        /// The store, as its `Display` shows it.
        store: String,
        /// The bucket's name.
        bucket: String,
    },

    /// What was read differs from what was recorded: a corrupt or truncated object.
    #[error(
        "checksum mismatch for key {key:?}: expected {expected_size_bytes} bytes with crc32c \
         {expected_crc32c:#010x}, got {actual_size_bytes} bytes with crc32c {actual_crc32c:#010x}"
    )]
    Checksum {
        /// The key that was downloaded.
        key: String,
        /// Size recorded in the expected `FileInfo`.
        expected_size_bytes: u64,
        /// CRC-32C recorded in the expected `FileInfo`.
        expected_crc32c: u32,
        /// Size of the bytes read.
        actual_size_bytes: u64,
        /// CRC-32C of the bytes read.
        actual_crc32c: u32,
    },

    /// Credentials are missing, or the store rejected them (or denied the operation).
    #[error("{store}: credentials missing or rejected: {detail}")]
    Credentials {
        /// The store, as its `Display` shows it.
        store: String,
        /// What went wrong, with any credential text redacted.
        detail: String,
    },

    /// A failure that may pass (connection refused or reset, timeout, 5xx, 429) persisted through
    /// every retry the policy allows.
    #[error(
        "{operation} of key {key:?} failed after {attempts} attempts in {elapsed_ms} ms \
         (transient error, retries exhausted): {detail}"
    )]
    Transient {
        /// The operation: `put_file`, `get_bytes`, ...
        operation: &'static str,
        /// The key (or prefix) it was about.
        key: String,
        /// Attempts made, the first included.
        attempts: u32,
        /// Time from the operation's start to the failure.
        elapsed_ms: u64,
        /// The last failure, with any credential text redacted.
        detail: String,
    },

    /// Reading or writing a local file failed.
    #[error("{operation} {path:?}: {source}")]
    Io {
        /// What was being done: `open`, `read`, `rename`, ...
        operation: &'static str,
        /// The local path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The store failed in a way that is neither transient nor one of the cases above.
    #[error("{store}: {operation} of key {key:?} failed: {detail}")]
    Store {
        /// The store, as its `Display` shows it.
        store: String,
        /// The operation: `put_file`, `get_bytes`, ...
        operation: &'static str,
        /// The key (or prefix) it was about.
        key: String,
        /// The store's error, with any credential text redacted.
        detail: String,
    },

    /// A store URL that cannot be used.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, without any user or password part.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A key or prefix that breaks the rules of `key::validate_key`.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// The rule it breaks.
        reason: String,
    },

    /// `put_bytes` or `get_bytes` on an object above `BYTES_MAX`.
    #[error(
        "key {key:?} holds {size_bytes} bytes, more than the {limit_bytes} bytes allowed here"
    )]
    TooLarge {
        /// The key.
        key: String,
        /// The object's size.
        size_bytes: u64,
        /// The bound it exceeds.
        limit_bytes: u64,
    },

    /// `StoreOptions` or `RetryPolicy` outside their bounds.
    #[error("invalid block store options: {reason}")]
    InvalidOptions {
        /// Which bound is broken.
        reason: String,
    },
}

impl BlockError {
    /// Wraps a local IO error with the operation and path it happened on.
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    /// Whether retrying might succeed: a local IO error of a transient kind (see
    /// [`crate::retry::is_transient_io`]). Errors of the S3 store are retried inside
    /// `object_store` and arrive here already classified.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io { source, .. } => crate::retry::is_transient_io(source.kind()),
            _ => false,
        }
    }
}
