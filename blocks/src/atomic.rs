//! **atomic-publish**: a local file appears under its final name whole or not at all.
//!
//! A [`TempFile`] is created next to its target (same directory, so the rename never crosses a
//! file system) under a name starting with [`TEMP_MARKER`]. [`TempFile::publish`] fsyncs it,
//! renames it over the target and fsyncs the directory, so the name survives a crash too. A
//! `TempFile` dropped before `publish` (an error, a checksum mismatch, a cancelled future) removes
//! its file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;

use crate::key::TEMP_MARKER;
use crate::BlockError;

/// Makes temporary names unique within the process; the pid makes them unique across processes.
static TEMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A file being written under a temporary name, published by [`TempFile::publish`].
pub(crate) struct TempFile {
    target: PathBuf,
    path: PathBuf,
    file: Option<tokio::fs::File>,
}

impl TempFile {
    /// Creates the temporary file for `target`, and `target`'s directory if it is missing.
    pub(crate) async fn create(target: &Path) -> Result<Self, BlockError> {
        let (Some(directory), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(BlockError::io(
                "create temporary file for",
                target,
                std::io::ErrorKind::InvalidInput.into(),
            ));
        };
        tokio::fs::create_dir_all(directory)
            .await
            .map_err(|error| BlockError::io("create directory", directory, error))?;
        let sequence = TEMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let temporary_name = format!(
            "{TEMP_MARKER}{}.{}.{sequence}",
            name.to_string_lossy(),
            std::process::id()
        );
        let path = directory.join(temporary_name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|error| BlockError::io("create", &path, error))?;
        Ok(Self {
            target: target.to_path_buf(),
            path,
            file: Some(file),
        })
    }

    /// Appends `bytes`.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> Result<(), BlockError> {
        let Some(file) = self.file.as_mut() else {
            return Err(BlockError::io("write", &self.path, closed()));
        };
        file.write_all(bytes)
            .await
            .map_err(|error| BlockError::io("write", &self.path, error))
    }

    /// Fsyncs the file, renames it over the target and fsyncs the target's directory.
    pub(crate) async fn publish(mut self) -> Result<(), BlockError> {
        let Some(mut file) = self.file.take() else {
            return Err(BlockError::io("publish", &self.path, closed()));
        };
        file.flush()
            .await
            .map_err(|error| BlockError::io("flush", &self.path, error))?;
        file.sync_all()
            .await
            .map_err(|error| BlockError::io("fsync", &self.path, error))?;
        drop(file);
        tokio::fs::rename(&self.path, &self.target)
            .await
            .map_err(|error| BlockError::io("rename into place", &self.target, error))?;
        // From here on the temporary name no longer exists: Drop has nothing to remove.
        self.path.clear();
        sync_directory(&self.target).await
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            // An unlink is cheap enough to do inline; failing to remove leaves a name the stores
            // never list and a later `delete_prefix` removes with its directory.
            if let Err(error) = std::fs::remove_file(&self.path) {
                tracing::debug!(path = ?self.path, %error, "could not remove a temporary file");
            }
        }
    }
}

fn closed() -> std::io::Error {
    std::io::Error::other("temporary file already closed")
}

/// Fsyncs the directory holding `path`, making a rename into it durable.
async fn sync_directory(path: &Path) -> Result<(), BlockError> {
    let Some(directory) = path.parent() else {
        return Ok(());
    };
    let directory = directory.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&directory)
            .and_then(|handle| handle.sync_all())
            .map_err(|error| BlockError::io("fsync directory", &directory, error))
    })
    .await
    .map_err(|error| BlockError::io("fsync directory", path, std::io::Error::other(error)))?
}
