//! [`LocalStore`]: backups in a local or mounted directory.
//!
//! Key `a/b/c` is the file `<root>/a/b/c`. Writes follow **atomic-publish** (see `atomic.rs`):
//! temporary name in the same directory, fsync, rename, fsync of the directory. Names starting
//! with [`TEMP_MARKER`], symbolic links and names that are not valid keys are never listed.
//! Every operation runs under [`with_retries`], which retries IO errors of a transient kind (a
//! network mount whose server is away) and fails at once on any other.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::AsyncReadExt;

use crate::atomic::TempFile;
use crate::checksum::{verify, Summer};
use crate::key::{is_under, validate_key, validate_prefix, TEMP_MARKER};
use crate::pace::UploadPacer;
use crate::retry::with_retries;
use crate::{BlockError, BlockStore, FileInfo, ListEntry, StoreOptions, BYTES_MAX, CHUNK_BYTES};

/// A block store rooted at an absolute directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    options: StoreOptions,
    pacer: UploadPacer,
}

impl LocalStore {
    /// A store rooted at `root`, which must be absolute; it is created if missing.
    pub fn new(root: impl Into<PathBuf>, options: StoreOptions) -> Result<Self, BlockError> {
        let root = root.into();
        options.validate()?;
        if !root.is_absolute() {
            return Err(BlockError::InvalidOptions {
                reason: format!("local store root {root:?} is not an absolute path"),
            });
        }
        std::fs::create_dir_all(&root)
            .map_err(|error| BlockError::io("create store root", &root, error))?;
        let pacer = UploadPacer::new(options.upload_bytes_per_second);
        Ok(Self {
            root,
            options,
            pacer,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key` (which has passed [`validate_key`]).
    fn path_of(&self, key: &str) -> PathBuf {
        key.split('/')
            .fold(self.root.clone(), |path, segment| path.join(segment))
    }

    fn not_found(&self, key: &str) -> BlockError {
        BlockError::NotFound {
            store: self.to_string(),
            key: key.to_string(),
        }
    }

    /// Opens the file of `key` for reading, mapping a missing file to [`BlockError::NotFound`].
    async fn open_key(&self, key: &str) -> Result<(tokio::fs::File, u64), BlockError> {
        let path = self.path_of(key);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.not_found(key))
            }
            Err(error) => return Err(BlockError::io("open", path, error)),
        };
        let metadata = file
            .metadata()
            .await
            .map_err(|error| BlockError::io("stat", &path, error))?;
        if !metadata.is_file() {
            return Err(self.not_found(key));
        }
        Ok((file, metadata.len()))
    }

    async fn put_file_once(&self, local_path: &Path, key: &str) -> Result<FileInfo, BlockError> {
        let mut source = tokio::fs::File::open(local_path)
            .await
            .map_err(|error| BlockError::io("open", local_path, error))?;
        let mut temporary = TempFile::create(&self.path_of(key)).await?;
        let mut summer = Summer::new();
        let mut chunk = vec![0; CHUNK_BYTES];
        loop {
            let length = source
                .read(&mut chunk)
                .await
                .map_err(|error| BlockError::io("read", local_path, error))?;
            if length == 0 {
                break;
            }
            self.pacer.pace(length as u64).await;
            summer.update(&chunk[..length]);
            temporary.write_all(&chunk[..length]).await?;
        }
        temporary.publish().await?;
        Ok(summer.finish(key))
    }

    async fn get_file_once(
        &self,
        key: &str,
        local_path: &Path,
        expected: Option<&FileInfo>,
    ) -> Result<FileInfo, BlockError> {
        let (mut source, _) = self.open_key(key).await?;
        let source_path = self.path_of(key);
        let mut temporary = TempFile::create(local_path).await?;
        let mut summer = Summer::new();
        let mut chunk = vec![0; CHUNK_BYTES];
        loop {
            let length = source
                .read(&mut chunk)
                .await
                .map_err(|error| BlockError::io("read", &source_path, error))?;
            if length == 0 {
                break;
            }
            summer.update(&chunk[..length]);
            temporary.write_all(&chunk[..length]).await?;
        }
        let info = summer.finish(key);
        if let Some(expected) = expected {
            verify(&info, expected)?;
        }
        temporary.publish().await?;
        Ok(info)
    }

    async fn put_bytes_once(&self, key: &str, bytes: &[u8]) -> Result<(), BlockError> {
        let mut temporary = TempFile::create(&self.path_of(key)).await?;
        temporary.write_all(bytes).await?;
        temporary.publish().await
    }

    async fn get_bytes_once(&self, key: &str) -> Result<Vec<u8>, BlockError> {
        let (mut source, size_bytes) = self.open_key(key).await?;
        if size_bytes > BYTES_MAX {
            return Err(BlockError::TooLarge {
                key: key.to_string(),
                size_bytes,
                limit_bytes: BYTES_MAX,
            });
        }
        let mut bytes = Vec::with_capacity(size_bytes as usize);
        // Bounded even if the file grows while it is read.
        (&mut source)
            .take(BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|error| BlockError::io("read", self.path_of(key), error))?;
        if bytes.len() as u64 > BYTES_MAX {
            return Err(BlockError::TooLarge {
                key: key.to_string(),
                size_bytes: bytes.len() as u64,
                limit_bytes: BYTES_MAX,
            });
        }
        Ok(bytes)
    }

    async fn list_once(&self, prefix: &str) -> Result<Vec<ListEntry>, BlockError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || walk(&root, &prefix))
            .await
            .map_err(|error| BlockError::io("list", &self.root, std::io::Error::other(error)))?
    }

    async fn delete_once(&self, key: &str) -> Result<(), BlockError> {
        let path = self.path_of(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(BlockError::io("remove", path, error)),
        }
        self.prune_empty_parents(&path).await;
        Ok(())
    }

    /// Removes the directories above `path` that are now empty, up to (not including) the root.
    async fn prune_empty_parents(&self, path: &Path) {
        let mut directory = path.parent();
        while let Some(current) = directory {
            if current == self.root || !current.starts_with(&self.root) {
                break;
            }
            // Fails (and stops) at the first directory that is not empty.
            if tokio::fs::remove_dir(current).await.is_err() {
                break;
            }
            directory = current.parent();
        }
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "file://{}", self.root.display())
    }
}

#[async_trait]
impl BlockStore for LocalStore {
    async fn put_file(&self, local_path: &Path, key: &str) -> Result<FileInfo, BlockError> {
        validate_key(key)?;
        with_retries(&self.options.retry, "put_file", key, || {
            self.put_file_once(local_path, key)
        })
        .await
    }

    async fn get_file(
        &self,
        key: &str,
        local_path: &Path,
        expected: Option<&FileInfo>,
    ) -> Result<FileInfo, BlockError> {
        validate_key(key)?;
        with_retries(&self.options.retry, "get_file", key, || {
            self.get_file_once(key, local_path, expected)
        })
        .await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<FileInfo, BlockError> {
        validate_key(key)?;
        check_bytes_size(key, bytes.len())?;
        with_retries(&self.options.retry, "put_bytes", key, || {
            self.put_bytes_once(key, &bytes)
        })
        .await?;
        let mut summer = Summer::new();
        summer.update(&bytes);
        Ok(summer.finish(key))
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, BlockError> {
        validate_key(key)?;
        with_retries(&self.options.retry, "get_bytes", key, || {
            self.get_bytes_once(key)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, BlockError> {
        let prefix = validate_prefix(prefix)?;
        with_retries(&self.options.retry, "list", prefix, || {
            self.list_once(prefix)
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool, BlockError> {
        validate_key(key)?;
        let path = self.path_of(key);
        with_retries(&self.options.retry, "exists", key, || async {
            match tokio::fs::symlink_metadata(&path).await {
                Ok(metadata) => Ok(metadata.is_file()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(error) => Err(BlockError::io("stat", &path, error)),
            }
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), BlockError> {
        validate_key(key)?;
        with_retries(&self.options.retry, "delete", key, || self.delete_once(key)).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BlockError> {
        let prefix = validate_prefix(prefix)?;
        let entries = self.list(prefix).await?;
        for entry in &entries {
            self.delete(&entry.key).await?;
        }
        Ok(entries.len() as u64)
    }
}

/// Checks the [`BYTES_MAX`] bound of `put_bytes`.
pub(crate) fn check_bytes_size(key: &str, size_bytes: usize) -> Result<(), BlockError> {
    if size_bytes as u64 > BYTES_MAX {
        return Err(BlockError::TooLarge {
            key: key.to_string(),
            size_bytes: size_bytes as u64,
            limit_bytes: BYTES_MAX,
        });
    }
    Ok(())
}

/// Every regular file under `root/prefix` whose relative path is a valid key, sorted. Runs on a
/// blocking thread.
fn walk(root: &Path, prefix: &str) -> Result<Vec<ListEntry>, BlockError> {
    let mut entries = Vec::new();
    // Directories still to read, as (path, key of the directory).
    let mut pending = vec![(root.to_path_buf(), String::new())];
    if !prefix.is_empty() {
        let start = prefix
            .split('/')
            .fold(root.to_path_buf(), |path, segment| path.join(segment));
        pending = vec![(start, prefix.to_string())];
    }
    while let Some((directory, directory_key)) = pending.pop() {
        let reader = match std::fs::read_dir(&directory) {
            Ok(reader) => reader,
            // A missing prefix, or a prefix that names a file: nothing under it.
            Err(error)
                if error.kind() == std::io::ErrorKind::NotFound
                    || error.kind() == std::io::ErrorKind::NotADirectory =>
            {
                continue
            }
            Err(error) => return Err(BlockError::io("read directory", directory, error)),
        };
        for entry in reader {
            let entry =
                entry.map_err(|error| BlockError::io("read directory", &directory, error))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with(TEMP_MARKER) {
                continue;
            }
            let key = if directory_key.is_empty() {
                name
            } else {
                format!("{directory_key}/{name}")
            };
            if validate_key(&key).is_err() {
                continue;
            }
            let metadata = entry
                .metadata()
                .map_err(|error| BlockError::io("stat", entry.path(), error))?;
            if metadata.is_dir() {
                pending.push((entry.path(), key));
            } else if metadata.is_file() {
                debug_assert!(is_under(&key, prefix));
                entries.push(ListEntry {
                    key,
                    size_bytes: metadata.len(),
                });
            }
        }
    }
    entries.sort_by(|left, right| left.key.cmp(&right.key));
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(root: &Path) -> LocalStore {
        LocalStore::new(root.join("store"), StoreOptions::default()).unwrap()
    }

    fn write_file(path: &Path, size_bytes: usize) -> Vec<u8> {
        let bytes: Vec<u8> = (0..size_bytes).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(path, &bytes).unwrap();
        bytes
    }

    /// Proves put_file / get_file keep a file's bytes, size and CRC-32C over several chunks, that
    /// put_bytes / get_bytes round-trip, and that a missing key is NotFound naming the key.
    #[tokio::test]
    async fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let source = dir.path().join("source.sst");
        let bytes = write_file(&source, 3 * CHUNK_BYTES + 17);

        let put = store
            .put_file(&source, "tables/1/p0/000001.sst")
            .await
            .unwrap();
        assert_eq!(put.size_bytes, bytes.len() as u64);
        assert_eq!(put.crc32c, crate::checksum::crc32c(&bytes));

        let target = dir.path().join("restore/deep/000001.sst");
        let got = store
            .get_file("tables/1/p0/000001.sst", &target, Some(&put))
            .await
            .unwrap();
        assert_eq!(got, put);
        assert_eq!(std::fs::read(&target).unwrap(), bytes);

        let info = store.put_bytes("manifest", b"m".to_vec()).await.unwrap();
        assert_eq!(info.size_bytes, 1);
        assert_eq!(store.get_bytes("manifest").await.unwrap(), b"m");
        assert!(store.exists("manifest").await.unwrap());

        let error = store.get_bytes("missing/key").await.unwrap_err();
        assert!(matches!(error, BlockError::NotFound { .. }), "{error}");
        assert!(error.to_string().contains("missing/key"), "{error}");
        let error = store
            .get_file("missing/key", &dir.path().join("x"), None)
            .await
            .unwrap_err();
        assert!(matches!(error, BlockError::NotFound { .. }), "{error}");
        assert!(!store.exists("missing/key").await.unwrap());
    }

    /// Proves list matches prefixes by whole segments and sorts, that delete of a missing key is
    /// not an error, and that delete_prefix removes exactly the keys under the prefix and the
    /// directories it emptied.
    #[tokio::test]
    async fn list_delete_and_delete_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        for key in ["t/1/b", "t/1/a", "t/1/sub/c", "t/10/a", "u"] {
            store.put_bytes(key, key.as_bytes().to_vec()).await.unwrap();
        }
        let keys = |entries: Vec<ListEntry>| -> Vec<String> {
            entries.into_iter().map(|entry| entry.key).collect()
        };
        assert_eq!(
            keys(store.list("t/1").await.unwrap()),
            ["t/1/a", "t/1/b", "t/1/sub/c"]
        );
        assert_eq!(
            keys(store.list("t/1/").await.unwrap()),
            keys(store.list("t/1").await.unwrap())
        );
        assert_eq!(store.list("").await.unwrap().len(), 5);
        assert_eq!(store.list("t/1/sub/c").await.unwrap(), []);
        assert_eq!(store.list("nothing").await.unwrap(), []);
        assert_eq!(store.list("t").await.unwrap()[0].size_bytes, 5);

        store.delete("t/1/b").await.unwrap();
        store.delete("t/1/b").await.unwrap();
        assert_eq!(store.delete_prefix("t/1").await.unwrap(), 2);
        assert_eq!(keys(store.list("").await.unwrap()), ["t/10/a", "u"]);
        assert!(!store.root().join("t/1").exists());
        assert!(store.list("../x").await.is_err());
    }

    /// Proves a flipped byte in a stored file is detected by get_file with the recorded FileInfo:
    /// the error is a checksum mismatch naming the key, and nothing is left at the target path.
    #[tokio::test]
    async fn flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let source = dir.path().join("source");
        write_file(&source, CHUNK_BYTES + 5);
        let info = store.put_file(&source, "t/1/f").await.unwrap();

        let stored = store.root().join("t/1/f");
        let mut bytes = std::fs::read(&stored).unwrap();
        bytes[CHUNK_BYTES / 2] ^= 0x10;
        std::fs::write(&stored, &bytes).unwrap();

        let target = dir.path().join("restored");
        let error = store
            .get_file("t/1/f", &target, Some(&info))
            .await
            .unwrap_err();
        assert!(matches!(error, BlockError::Checksum { .. }), "{error}");
        assert!(error.to_string().contains("\"t/1/f\""), "{error}");
        assert!(!target.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "temporary file left"
        );

        // Without an expected FileInfo the download succeeds and reports what it read.
        let got = store.get_file("t/1/f", &target, None).await.unwrap();
        assert_eq!(got.size_bytes, info.size_bytes);
        assert_ne!(got.crc32c, info.crc32c);
    }

    /// Proves atomic-publish: while a paced put_file is half done, the key does not exist (only a
    /// temporary name that list hides); a put_file cancelled half way leaves the old version
    /// whole and no temporary file; a finished one replaces it.
    #[tokio::test]
    async fn writes_are_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            upload_bytes_per_second: 4 * CHUNK_BYTES as u64,
            ..StoreOptions::default()
        };
        let store = LocalStore::new(dir.path().join("store"), options).unwrap();
        let source = dir.path().join("source");
        let bytes = write_file(&source, 8 * CHUNK_BYTES);

        let put = store.put_file(&source, "a/f");
        tokio::pin!(put);
        let half_way = tokio::time::sleep(std::time::Duration::from_millis(700));
        tokio::select! {
            _ = &mut put => panic!("a paced 2 s upload finished in 0.7 s"),
            _ = half_way => {}
        }
        assert!(!store.exists("a/f").await.unwrap());
        assert_eq!(store.list("").await.unwrap(), []);
        let names: Vec<String> = std::fs::read_dir(store.root().join("a"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with(TEMP_MARKER), "{names:?}");
        let info = put.await.unwrap();
        assert_eq!(std::fs::read(store.root().join("a/f")).unwrap(), bytes);
        assert_eq!(info.size_bytes, bytes.len() as u64);

        // Overwrite with other bytes but drop the future half way: the old version stays.
        std::fs::write(&source, vec![7u8; 8 * CHUNK_BYTES]).unwrap();
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(700),
            store.put_file(&source, "a/f"),
        )
        .await;
        assert!(cancelled.is_err());
        assert_eq!(std::fs::read(store.root().join("a/f")).unwrap(), bytes);
        assert_eq!(
            std::fs::read_dir(store.root().join("a")).unwrap().count(),
            1
        );
    }

    /// Proves the bounds are enforced: invalid keys, a relative root, put_bytes above BYTES_MAX
    /// and get_bytes of a file above it.
    #[tokio::test]
    async fn bounds_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        for key in ["", "/a", "a/../b", ".markab-tmp.x"] {
            let error = store.put_bytes(key, vec![]).await.unwrap_err();
            assert!(matches!(error, BlockError::InvalidKey { .. }), "{error}");
        }
        assert!(LocalStore::new("relative/dir", StoreOptions::default()).is_err());
        let error = store
            .put_bytes("big", vec![0; BYTES_MAX as usize + 1])
            .await
            .unwrap_err();
        assert!(matches!(error, BlockError::TooLarge { .. }), "{error}");
        let big = std::fs::File::create(store.root().join("big")).unwrap();
        big.set_len(BYTES_MAX + 1).unwrap();
        let error = store.get_bytes("big").await.unwrap_err();
        assert!(matches!(error, BlockError::TooLarge { .. }), "{error}");
    }
}
