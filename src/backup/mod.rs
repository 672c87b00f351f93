//! Cold backup of one partition replica, and its restore (docs/backup.md,
//! "Backup of a partition"): a consistent RocksDB checkpoint of the replica,
//! taken without stopping its writes, uploaded file by file to a block store
//! with each file's size and CRC-32C in a per-partition manifest written
//! last; and the way back — the manifest read, every file downloaded and
//! checked against it, the checkpoint published under its final name only
//! once whole.
//!
//! Key layout under a partition's prefix (`<backup>/<table>_<app_id>/<index>`
//! in a table's backup): the checkpoint's files by name, then
//! [`MANIFEST_NAME`]. A prefix without the manifest holds no complete
//! backup (**manifest-last**).

pub mod node;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use markab_blocks::{BlockError, BlockStore, FileInfo};
use serde::{Deserialize, Serialize};

use crate::storage::{checkpoint_decree, Checkpointer};

/// The manifest's key under a partition's prefix.
pub const MANIFEST_NAME: &str = "partition_manifest.json";
/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Most files one partition's checkpoint may hold (a RocksDB instance has
/// a few dozen): bounds the manifest and the work of one restore.
pub const CHECKPOINT_FILES_MAX: usize = 100_000;

/// What a complete backup of one partition holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionManifest {
    /// [`FORMAT_VERSION`] of the build that wrote it.
    pub format_version: u32,
    pub app_id: i32,
    pub partition_index: i32,
    /// The checkpoint holds every mutation up to this decree.
    pub decree: i64,
    /// The checkpoint's files, by name, as uploaded (keys under the prefix).
    pub files: Vec<FileInfo>,
    /// Wall-clock times, for display.
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
}

impl PartitionManifest {
    /// Bytes of all the files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|file| file.size_bytes).sum()
    }
}

/// S3 credentials from a config file's `[backup]` section (meta's and a
/// node's): used instead of the environment's. Never printed: `Debug`
/// shows the key id's first four characters only.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl std::fmt::Debug for StoreCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = self.access_key_id.chars().take(4).collect();
        write!(formatter, "StoreCredentials({shown}…, <redacted>)")
    }
}

/// The `[backup]` section of a config file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    s3_access_key_id: Option<String>,
    s3_secret_access_key: Option<String>,
    s3_session_token: Option<String>,
}

impl std::fmt::Debug for BackupSection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("BackupSection(<redacted>)")
    }
}

impl BackupSection {
    /// The credentials it gives, if any; the error names what is missing.
    pub fn credentials(&self) -> Result<Option<StoreCredentials>, String> {
        match (&self.s3_access_key_id, &self.s3_secret_access_key) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(Some(StoreCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: self.s3_session_token.clone(),
                }))
            }
            (None, None) if self.s3_session_token.is_none() => Ok(None),
            _ => Err(
                "backup.s3_access_key_id and backup.s3_secret_access_key are set together, both non-empty (backup.s3_session_token only with them)"
                    .into(),
            ),
        }
    }
}

static CREDENTIALS: std::sync::OnceLock<Option<StoreCredentials>> = std::sync::OnceLock::new();

/// Sets this process's S3 credentials from its config file, once at start;
/// without them, stores read `AWS_ACCESS_KEY_ID` and the rest from the
/// environment.
pub fn set_store_credentials(credentials: Option<StoreCredentials>) {
    let _ = CREDENTIALS.set(credentials);
}

/// Opens the block store at `url` with this process's credentials.
pub fn open_store(
    url: &str,
    options: markab_blocks::StoreOptions,
) -> Result<std::sync::Arc<dyn BlockStore>, BlockError> {
    let credentials = CREDENTIALS.get().cloned().flatten().map(|given| {
        let credentials =
            markab_blocks::S3Credentials::new(given.access_key_id, given.secret_access_key);
        match given.session_token {
            Some(token) => credentials.with_session_token(token),
            None => credentials,
        }
    });
    markab_blocks::open_with_credentials(url, options, credentials)
}

/// A prefix nothing is stored under: listing it checks that a store
/// answers and accepts the credentials.
pub const PROBE_PREFIX: &str = "markab-probe";

/// How meta opens block stores: the defaults (it writes only manifests).
pub fn meta_store_options() -> markab_blocks::StoreOptions {
    markab_blocks::StoreOptions::default()
}

/// Runs one piece of meta's backup work against its block store; the
/// error says what failed.
pub async fn run_meta_work(
    work: &markab_core::meta::state::BackupWork,
    unix_ms: u64,
) -> Result<(), String> {
    use markab_core::meta::state::BackupWork;
    let url = match work {
        BackupWork::WriteManifest { backup, .. } => &backup.url,
        BackupWork::CleanUp { url, .. } | BackupWork::Delete { url, .. } => url,
    };
    let store =
        markab_blocks::open(url, meta_store_options()).map_err(|error| error.to_string())?;
    match work {
        BackupWork::WriteManifest { backup_id, backup } => {
            let manifest =
                table::write_backup_manifest(store.as_ref(), *backup_id, backup, unix_ms)
                    .await
                    .map_err(|error| error.to_string())?;
            tracing::info!(
                backup_id,
                table = %backup.table,
                partitions = manifest.partitions.len(),
                bytes = manifest.bytes(),
                "backup complete: its manifest is written"
            );
            Ok(())
        }
        BackupWork::CleanUp { backup_id, .. } => {
            let removed = table::remove_backup(store.as_ref(), *backup_id)
                .await
                .map_err(|error| error.to_string())?;
            tracing::info!(backup_id, removed, "a failed backup's files are removed");
            Ok(())
        }
        BackupWork::Delete { backup_id, .. } => {
            // The manifest first: a backup half deleted is never complete.
            store
                .delete(&table::backup_manifest_key(*backup_id))
                .await
                .map_err(|error| error.to_string())?;
            let removed = table::remove_backup(store.as_ref(), *backup_id)
                .await
                .map_err(|error| error.to_string())?;
            tracing::info!(
                backup_id,
                removed,
                "a backup beyond its policy's count is deleted"
            );
            Ok(())
        }
    }
}

/// A partition backup's progress, updated as it goes (read by beacons).
#[derive(Debug, Default)]
pub struct BackupProgress {
    /// The checkpoint's decree, once taken.
    pub decree: AtomicI64,
    /// Bytes of the files uploaded so far.
    pub bytes_done: AtomicU64,
    /// Bytes of all the checkpoint's files, once taken.
    pub bytes_total: AtomicU64,
}

/// Why a partition's backup or restore failed; each names what it was at.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Store(#[from] BlockError),
    #[error("{what}: {error}")]
    Io {
        what: String,
        #[source]
        error: std::io::Error,
    },
    #[error("no complete backup under {prefix}: its manifest {MANIFEST_NAME} is missing")]
    Incomplete { prefix: String },
    #[error("the manifest under {prefix} is not valid: {reason}")]
    BadManifest { prefix: String, reason: String },
    #[error("{path} exists already: a restore writes a new directory")]
    TargetExists { path: PathBuf },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |error| BackupError::Io { what, error }
}

/// A scratch directory name unique within this process.
fn unique(parent: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    parent.join(format!(
        "{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn unix_ms() -> u64 {
    crate::clock::unix_ms()
}

/// Removes a scratch directory when dropped (on success and on failure).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(error) = std::fs::remove_dir_all(&self.0) {
                tracing::warn!(path = %self.0.display(), %error, "could not remove a backup scratch directory");
            }
        }
    }
}

/// Backs up one partition replica: a checkpoint in a new directory under
/// `scratch` (which must be on the replica's file system, for the hard
/// links; removed afterwards whatever happens), taken on the blocking pool;
/// its files uploaded under `prefix` by `store` (paced by the store's upload
/// rate limit); then the manifest. Writes to the replica go on meanwhile.
pub async fn back_up_partition(
    checkpointer: Checkpointer,
    store: &dyn BlockStore,
    prefix: &str,
    scratch: &Path,
    app_id: i32,
    partition_index: i32,
    progress: &BackupProgress,
) -> Result<PartitionManifest, BackupError> {
    let started_unix_ms = unix_ms();
    std::fs::create_dir_all(scratch).map_err(io(format!("creating {}", scratch.display())))?;
    let dir = Scratch(unique(scratch, "checkpoint"));
    let decree = {
        let dir = dir.0.clone();
        tokio::task::spawn_blocking(move || checkpointer.create(&dir))
            .await
            .map_err(|error| BackupError::Checkpoint(error.to_string()))?
            .map_err(|error| BackupError::Checkpoint(error.message))?
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir.0).map_err(io(format!("listing {}", dir.0.display())))? {
        let entry = entry.map_err(io(format!("listing {}", dir.0.display())))?;
        let kind = entry
            .file_type()
            .map_err(io("reading a checkpoint entry"))?;
        if !kind.is_file() {
            return Err(BackupError::Checkpoint(format!(
                "{} is not a plain file",
                entry.path().display()
            )));
        }
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    if names.len() > CHECKPOINT_FILES_MAX {
        return Err(BackupError::Checkpoint(format!(
            "{} files, more than {CHECKPOINT_FILES_MAX}",
            names.len()
        )));
    }
    names.sort();
    let mut bytes_total = 0;
    for name in &names {
        let path = dir.0.join(name);
        let metadata =
            std::fs::metadata(&path).map_err(io(format!("reading {}", path.display())))?;
        bytes_total += metadata.len();
    }
    progress.decree.store(decree, Ordering::Relaxed);
    progress.bytes_total.store(bytes_total, Ordering::Relaxed);
    let mut files = Vec::with_capacity(names.len());
    for name in &names {
        let info = store
            .put_file(&dir.0.join(name), &format!("{prefix}/{name}"))
            .await?;
        progress
            .bytes_done
            .fetch_add(info.size_bytes, Ordering::Relaxed);
        files.push(info);
    }
    let manifest = PartitionManifest {
        format_version: FORMAT_VERSION,
        app_id,
        partition_index,
        decree,
        files,
        started_unix_ms,
        finished_unix_ms: unix_ms(),
    };
    let encoded = serde_json::to_vec_pretty(&manifest).expect("a manifest always serializes");
    store
        .put_bytes(&format!("{prefix}/{MANIFEST_NAME}"), encoded)
        .await?;
    Ok(manifest)
}

/// Decodes a manifest of this build's [`FORMAT_VERSION`]: the version is
/// read first, so that another format says so rather than fail on a field
/// it lacks.
pub(crate) fn decode_manifest<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
    if version.format_version != FORMAT_VERSION {
        return Err(format!(
            "format version {}; this build reads version {FORMAT_VERSION}",
            version.format_version
        ));
    }
    serde_json::from_slice(bytes).map_err(|error| error.to_string())
}

/// Reads and checks the manifest of the partition backup under `prefix`.
pub async fn read_manifest(
    store: &dyn BlockStore,
    prefix: &str,
) -> Result<PartitionManifest, BackupError> {
    let bytes = match store.get_bytes(&format!("{prefix}/{MANIFEST_NAME}")).await {
        Err(BlockError::NotFound { .. }) => {
            return Err(BackupError::Incomplete {
                prefix: prefix.to_owned(),
            })
        }
        other => other?,
    };
    let bad = |reason: String| BackupError::BadManifest {
        prefix: prefix.to_owned(),
        reason,
    };
    let manifest: PartitionManifest = decode_manifest(&bytes).map_err(bad)?;
    if manifest.files.len() > CHECKPOINT_FILES_MAX {
        return Err(bad(format!("{} files", manifest.files.len())));
    }
    for file in &manifest.files {
        let name = file.key.strip_prefix(&format!("{prefix}/")).unwrap_or("");
        if name.is_empty() || name.contains('/') || name == MANIFEST_NAME {
            return Err(bad(format!(
                "file key {} is not under the prefix",
                file.key
            )));
        }
    }
    Ok(manifest)
}

/// Restores the partition backup under `prefix` into `target` (a new
/// directory): every file downloaded into a scratch directory beside it and
/// checked against the manifest (a file whose size or checksum differs
/// fails the restore, naming it), the decree read back from the files, and
/// only then the directory renamed to `target`. Nothing is left at `target`
/// on failure.
pub async fn restore_partition(
    store: &dyn BlockStore,
    prefix: &str,
    target: &Path,
    progress: &BackupProgress,
) -> Result<PartitionManifest, BackupError> {
    if target.exists() {
        return Err(BackupError::TargetExists {
            path: target.to_owned(),
        });
    }
    let manifest = read_manifest(store, prefix).await?;
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    let staging = Scratch(unique(parent, "restoring"));
    std::fs::create_dir(&staging.0).map_err(io(format!("creating {}", staging.0.display())))?;
    progress.decree.store(manifest.decree, Ordering::Relaxed);
    progress
        .bytes_total
        .store(manifest.bytes(), Ordering::Relaxed);
    for file in &manifest.files {
        let name = &file.key[prefix.len() + 1..];
        store
            .get_file(&file.key, &staging.0.join(name), Some(file))
            .await?;
        progress
            .bytes_done
            .fetch_add(file.size_bytes, Ordering::Relaxed);
    }
    let decree = {
        let staging = staging.0.clone();
        tokio::task::spawn_blocking(move || checkpoint_decree(&staging))
            .await
            .map_err(|error| BackupError::Checkpoint(error.to_string()))?
            .map_err(|error| BackupError::Checkpoint(error.message))?
    };
    if decree != manifest.decree {
        return Err(BackupError::BadManifest {
            prefix: prefix.to_owned(),
            reason: format!(
                "the files hold decree {decree}, the manifest says {}",
                manifest.decree
            ),
        });
    }
    std::fs::rename(&staging.0, target).map_err(io(format!(
        "renaming {} to {}",
        staging.0.display(),
        target.display()
    )))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests;
