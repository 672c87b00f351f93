//! A table's backup as a whole (docs/backup.md, "Backups"): the top-level
//! manifest meta writes once every partition is uploaded — written last,
//! so that its presence alone says the backup is complete
//! (**manifest-last**) — and the removal of a failed backup's files.
//!
//! Layout under the store's root (Pegasus's, with a manifest per level):
//! `<backup_id>/<table>_<app_id>/<partition>/<attempt>/…` holds one
//! partition's checkpoint and its `partition_manifest.json`;
//! `<backup_id>/backup_manifest.json` the whole backup's.

use std::collections::BTreeMap;

use markab_blocks::{BlockError, BlockStore, FileInfo};
use markab_core::meta::state::{backup_prefix, partition_prefix, StoredBackup};
use serde::{Deserialize, Serialize};

use super::{decode_manifest, read_manifest, BackupError, FORMAT_VERSION};

/// The top-level manifest's key under a backup's prefix.
pub const BACKUP_MANIFEST_NAME: &str = "backup_manifest.json";
/// Largest top-level manifest read back (a table of 65,536 partitions of a
/// few dozen files each fits).
pub const BACKUP_MANIFEST_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One partition in a backup's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    pub partition_index: i32,
    /// The checkpoint holds every mutation up to this decree.
    pub decree: i64,
    /// Where its files and partition manifest are.
    pub prefix: String,
    pub files: Vec<FileInfo>,
}

/// What a complete backup holds: its top-level manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// [`FORMAT_VERSION`] of the build that wrote it.
    pub format_version: u32,
    pub backup_id: u64,
    pub table: String,
    pub app_id: i32,
    pub partition_count: i32,
    pub replica_count: i32,
    pub envs: BTreeMap<String, String>,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    /// One per partition, by index.
    pub partitions: Vec<PartitionEntry>,
}

impl BackupManifest {
    pub fn bytes(&self) -> u64 {
        self.partitions
            .iter()
            .flat_map(|partition| &partition.files)
            .map(|file| file.size_bytes)
            .sum()
    }
}

/// The top-level manifest's key.
pub fn backup_manifest_key(backup_id: u64) -> String {
    format!("{}/{BACKUP_MANIFEST_NAME}", backup_prefix(backup_id))
}

/// Completes backup `backup_id` as meta recorded it: reads every
/// partition's manifest (checking it is the one meta accepted), removes
/// the files of every other attempt, and writes the top-level manifest,
/// last. Returns the manifest written.
pub async fn write_backup_manifest(
    store: &dyn BlockStore,
    backup_id: u64,
    backup: &StoredBackup,
    finished_unix_ms: u64,
) -> Result<BackupManifest, BackupError> {
    let mut partitions = Vec::with_capacity(backup.partitions.len());
    for (index, done) in backup.partitions.iter().enumerate() {
        let index = index as i32;
        let done = done.as_ref().ok_or_else(|| BackupError::Incomplete {
            prefix: partition_prefix(backup_id, &backup.table, backup.app_id, index),
        })?;
        let manifest = read_manifest(store, &done.prefix).await?;
        if manifest.decree != done.decree
            || manifest.app_id != backup.app_id
            || manifest.partition_index != index
        {
            return Err(BackupError::BadManifest {
                prefix: done.prefix.clone(),
                reason: format!(
                    "it holds partition {}.{} at decree {}, meta recorded {}.{index} at decree {}",
                    manifest.app_id,
                    manifest.partition_index,
                    manifest.decree,
                    backup.app_id,
                    done.decree
                ),
            });
        }
        // Other attempts (a primary that moved mid-upload) are not part of
        // the backup.
        let partition = partition_prefix(backup_id, &backup.table, backup.app_id, index);
        let kept = format!("{}/", done.prefix);
        for entry in store.list(&partition).await? {
            if !entry.key.starts_with(&kept) {
                store.delete(&entry.key).await?;
            }
        }
        partitions.push(PartitionEntry {
            partition_index: index,
            decree: manifest.decree,
            prefix: done.prefix.clone(),
            files: manifest.files,
        });
    }
    let manifest = BackupManifest {
        format_version: FORMAT_VERSION,
        backup_id,
        table: backup.table.clone(),
        app_id: backup.app_id,
        partition_count: backup.partition_count,
        replica_count: backup.replica_count,
        envs: backup.envs.clone(),
        started_unix_ms: backup.started_unix_ms,
        finished_unix_ms,
        partitions,
    };
    let encoded = serde_json::to_vec_pretty(&manifest).expect("a manifest always serializes");
    store
        .put_bytes(&backup_manifest_key(backup_id), encoded)
        .await?;
    Ok(manifest)
}

/// Removes every file of backup `backup_id`; returns how many.
pub async fn remove_backup(store: &dyn BlockStore, backup_id: u64) -> Result<u64, BlockError> {
    store.delete_prefix(&backup_prefix(backup_id)).await
}

/// Reads and checks the top-level manifest of backup `backup_id`: a backup
/// without one is not complete.
pub async fn read_backup_manifest(
    store: &dyn BlockStore,
    backup_id: u64,
) -> Result<BackupManifest, BackupError> {
    let key = backup_manifest_key(backup_id);
    let bytes = match store.get_bytes(&key).await {
        Err(BlockError::NotFound { .. }) => {
            return Err(BackupError::Incomplete {
                prefix: backup_prefix(backup_id),
            })
        }
        other => other?,
    };
    let bad = |reason: String| BackupError::BadManifest {
        prefix: backup_prefix(backup_id),
        reason,
    };
    if bytes.len() > BACKUP_MANIFEST_BYTES_MAX {
        return Err(bad(format!("{} bytes", bytes.len())));
    }
    let manifest: BackupManifest = decode_manifest(&bytes).map_err(bad)?;
    if manifest.backup_id != backup_id
        || manifest.partitions.len() != manifest.partition_count.max(0) as usize
        || manifest
            .partitions
            .iter()
            .enumerate()
            .any(|(index, partition)| partition.partition_index != index as i32)
    {
        return Err(bad(
            "its id or partitions do not match its partition count".into()
        ));
    }
    Ok(manifest)
}
