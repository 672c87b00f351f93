//! Where meta's persistent state lives: the [`MetaStore`] trait and its
//! embedded default, [`FileMetaStore`] (see docs/meta.md, "Persistence").
//!
//! The trait is shaped for a later etcd store as well: `save` is a
//! conditional write that may fail with [`MetaStoreError::Fenced`] when
//! another meta has taken over, after which this meta must stop serving.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::meta::state::MetaData;

pub use markab_core::meta::store::{MemoryMetaStore, MetaStore, MetaStoreError};

/// Name of the state file in meta's data directory.
pub const META_FILE_NAME: &str = "meta.json";
/// Name of the file a save writes before renaming it over [`META_FILE_NAME`].
pub const META_TEMP_FILE_NAME: &str = "meta.json.tmp";
/// Name of the lock file that keeps two metas off one data directory.
pub const META_LOCK_FILE_NAME: &str = "LOCK";
/// Largest state file meta reads (256 MiB): a bound against a wrong file.
pub const META_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// The embedded store: `meta.json` in meta's data directory, replaced
/// atomically (write `meta.json.tmp`, fsync it, rename it over
/// `meta.json`, fsync the directory). Holds an exclusive `flock` on
/// `LOCK` in the directory while open, so two metas never share one.
#[derive(Debug)]
pub struct FileMetaStore {
    dir: PathBuf,
    /// Keeps the lock; released when the store is dropped.
    _lock: File,
}

impl FileMetaStore {
    /// Opens (creating when needed) the store in `dir` and locks it.
    pub fn open(dir: &Path) -> Result<FileMetaStore, MetaStoreError> {
        let io = |operation: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| MetaStoreError::Io {
                path,
                operation,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let lock_path = dir.join(META_LOCK_FILE_NAME);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open lock file", &lock_path))?;
        // SAFETY: flock on a file descriptor this function owns.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            return Err(MetaStoreError::Fenced {
                message: format!(
                    "{} is locked by another process (is another meta running on this data_dir?): {}",
                    lock_path.display(),
                    std::io::Error::last_os_error()
                ),
            });
        }
        Ok(FileMetaStore {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// The state file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(META_FILE_NAME)
    }
}

impl MetaStore for FileMetaStore {
    fn load(&self) -> Result<Option<MetaData>, MetaStoreError> {
        let path = self.path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(MetaStoreError::Io {
                    path,
                    operation: "open",
                    source,
                })
            }
        };
        let length = file
            .metadata()
            .map_err(|source| MetaStoreError::Io {
                path: path.clone(),
                operation: "stat",
                source,
            })?
            .len();
        if length > META_FILE_BYTES_MAX {
            return Err(MetaStoreError::Corrupt {
                path,
                message: format!("{length} bytes exceeds the bound of {META_FILE_BYTES_MAX}"),
            });
        }
        let data: MetaData =
            serde_json::from_reader(std::io::BufReader::new(file)).map_err(|error| {
                MetaStoreError::Corrupt {
                    path: path.clone(),
                    message: error.to_string(),
                }
            })?;
        data.validate()
            .map_err(|message| MetaStoreError::Corrupt { path, message })?;
        Ok(Some(data))
    }

    fn save(&mut self, data: &MetaData) -> Result<(), MetaStoreError> {
        let temp_path = self.dir.join(META_TEMP_FILE_NAME);
        let final_path = self.path();
        let io = |operation: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| MetaStoreError::Io {
                path,
                operation,
                source,
            }
        };
        let bytes = serde_json::to_vec_pretty(data).map_err(|error| MetaStoreError::Corrupt {
            path: temp_path.clone(),
            message: format!("cannot serialize: {error}"),
        })?;
        let mut file = File::create(&temp_path).map_err(io("create", &temp_path))?;
        file.write_all(&bytes).map_err(io("write", &temp_path))?;
        file.sync_all().map_err(io("fsync", &temp_path))?;
        drop(file);
        std::fs::rename(&temp_path, &final_path).map_err(io("rename", &final_path))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("fsync directory", &self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::state::{ReplicaPlace, StoredPartition, StoredTable};

    fn sample() -> MetaData {
        let mut data = MetaData {
            version: 3,
            next_app_id: 3,
            ..MetaData::default()
        };
        data.tables.insert(
            2,
            StoredTable {
                name: "temp".into(),
                partition_count: 1,
                replica_count: 3,
                envs: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
                create_time_s: 100,
                partitions: vec![StoredPartition {
                    ballot: 1,
                    primary: ReplicaPlace {
                        node: "127.0.0.1:1".into(),
                        shard: 0,
                        address: "127.0.0.1:1".into(),
                    },
                    secondaries: Vec::new(),
                    learners: Vec::new(),
                    split_child: false,
                }],
                ..StoredTable::default()
            },
        );
        data
    }

    // A new directory loads as empty; a saved state loads back equal, also
    // after the store is reopened, and no temporary file is left behind.
    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMetaStore::open(dir.path()).unwrap();
        assert!(store.load().unwrap().is_none());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), Some(sample()));
        drop(store);
        let store = FileMetaStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), Some(sample()));
        assert!(!dir.path().join(META_TEMP_FILE_NAME).exists());
    }

    // A second store on the same directory is fenced off by the lock.
    #[test]
    fn second_open_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let _store = FileMetaStore::open(dir.path()).unwrap();
        let error = FileMetaStore::open(dir.path()).unwrap_err();
        assert!(matches!(error, MetaStoreError::Fenced { .. }), "{error}");
    }

    // A truncated or invariant-breaking file is reported as corrupt with its
    // path, and a leftover temporary file from a crashed save is ignored.
    #[test]
    fn corrupt_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMetaStore::open(dir.path()).unwrap();
        store.save(&sample()).unwrap();
        std::fs::write(dir.path().join(META_TEMP_FILE_NAME), b"{\"half").unwrap();
        assert_eq!(store.load().unwrap(), Some(sample()));

        let text = std::fs::read_to_string(store.path()).unwrap();
        std::fs::write(store.path(), &text[..text.len() / 2]).unwrap();
        let error = store.load().unwrap_err();
        assert!(matches!(error, MetaStoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains(META_FILE_NAME), "{error}");

        let mut broken = sample();
        broken.next_app_id = 2; // app id 2 is not below next_app_id
        store.save(&broken).unwrap();
        let error = store.load().unwrap_err();
        assert!(error.to_string().contains("next_app_id"), "{error}");
    }

    // The memory store fails on demand and keeps its last good state.
    #[test]
    fn memory_store_injects_failures() {
        let mut store = MemoryMetaStore::default();
        store.save(&sample()).unwrap();
        store.fail_saves = true;
        assert!(store.save(&MetaData::default()).is_err());
        assert_eq!(store.load().unwrap(), Some(sample()));
    }
}
