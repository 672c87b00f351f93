//! [`RocksEngine`]: one RocksDB instance per partition replica, and
//! [`ShardStorage`]: what the instances of one shard share (block cache,
//! write-buffer budget, background threads). See docs/storage.md, "RocksDB".

use std::path::{Path, PathBuf};

use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Env, Options, ReadOptions,
    SliceTransform, WriteBufferManager, WriteOptions, DB,
};

use super::{
    storage_error, Direction, ScanControl, ScanVisitor, StorageEngine, WriteBatch, WriteOp,
};
use crate::key::{self, HASH_KEY_LENGTH_BYTES};
use crate::wire::message::OpError;

/// Most compaction threads a shard may ask for.
pub const COMPACTION_THREADS_MAX: i32 = 64;
/// Smallest block cache a shard may configure (1 MiB).
pub const BLOCK_CACHE_BYTES_MIN: usize = 1 << 20;
/// Smallest write-buffer budget a shard may configure (1 MiB).
pub const WRITE_BUFFER_BYTES_MIN: usize = 1 << 20;
/// Bloom filter bits per key (about 1% false positives).
const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// Share of a memtable's size given to its hash-key prefix bloom.
const MEMTABLE_PREFIX_BLOOM_RATIO: f64 = 0.05;
/// Bounds of one memtable's size (a quarter of the shard's write-buffer
/// budget, so several replicas share it).
const MEMTABLE_BYTES_MIN: usize = 1 << 20;
const MEMTABLE_BYTES_MAX: usize = 64 << 20;
/// Memtable arena blocks: small, because the write-buffer manager charges
/// every block a memtable allocates against the shard's budget. RocksDB's
/// default (an eighth of the memtable, 8 MiB) let two nearly empty
/// memtables fill a 16 MiB budget and kept every instance flushing.
const ARENA_BLOCK_BYTES: usize = 64 << 10;

/// Per-shard RocksDB resource settings (from the tuning files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageTuning {
    /// LRU block cache shared by the shard's instances (default 64 MiB,
    /// at least [`BLOCK_CACHE_BYTES_MIN`]).
    pub block_cache_bytes: usize,
    /// Memtable budget shared by the shard's instances (default 64 MiB, at
    /// least [`WRITE_BUFFER_BYTES_MIN`]).
    pub write_buffer_bytes: usize,
    /// Background flush/compaction jobs per instance and threads of the
    /// compaction pool (default 2, 1..=[`COMPACTION_THREADS_MAX`]).
    pub compaction_threads: i32,
}

impl Default for StorageTuning {
    fn default() -> StorageTuning {
        StorageTuning {
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            compaction_threads: 2,
        }
    }
}

/// The RocksDB resources one shard's instances share.
///
/// RocksDB's C API only reaches the process-wide default `Env`, so the
/// background thread pools are sized per process (to this shard's
/// `compaction_threads`, plus one high-priority flush thread); each
/// instance is further limited to `compaction_threads` background jobs.
pub struct ShardStorage {
    tuning: StorageTuning,
    block_cache: Cache,
    write_buffer_manager: WriteBufferManager,
    env: Env,
}

impl ShardStorage {
    /// Creates the shard's block cache, write-buffer manager and thread
    /// pools. Fails with `InvalidArgument` on out-of-range tuning and with
    /// `StorageError` when RocksDB cannot create its environment.
    pub fn new(tuning: &StorageTuning) -> Result<ShardStorage, OpError> {
        if tuning.block_cache_bytes < BLOCK_CACHE_BYTES_MIN {
            return Err(OpError::invalid_argument(format!(
                "block_cache_bytes {} is below the minimum of {BLOCK_CACHE_BYTES_MIN}",
                tuning.block_cache_bytes
            )));
        }
        if tuning.write_buffer_bytes < WRITE_BUFFER_BYTES_MIN {
            return Err(OpError::invalid_argument(format!(
                "write_buffer_bytes {} is below the minimum of {WRITE_BUFFER_BYTES_MIN}",
                tuning.write_buffer_bytes
            )));
        }
        if !(1..=COMPACTION_THREADS_MAX).contains(&tuning.compaction_threads) {
            return Err(OpError::invalid_argument(format!(
                "compaction_threads {} is outside 1..={COMPACTION_THREADS_MAX}",
                tuning.compaction_threads
            )));
        }
        let block_cache = Cache::new_lru_cache(tuning.block_cache_bytes);
        let write_buffer_manager =
            WriteBufferManager::new_write_buffer_manager(tuning.write_buffer_bytes, false);
        let mut env =
            Env::new().map_err(|error| storage_error("creating the RocksDB env", error))?;
        env.set_background_threads(tuning.compaction_threads);
        env.set_high_priority_background_threads(1);
        Ok(ShardStorage {
            tuning: *tuning,
            block_cache,
            write_buffer_manager,
            env,
        })
    }

    /// The settings this shard was created with.
    pub fn tuning(&self) -> &StorageTuning {
        &self.tuning
    }

    /// Bytes the shard's memtables use now.
    pub fn write_buffer_usage_bytes(&self) -> usize {
        self.write_buffer_manager.get_usage()
    }

    /// Bytes held by the shard's block cache now.
    pub fn block_cache_usage_bytes(&self) -> usize {
        self.block_cache.get_usage()
    }

    /// One memtable's size: a quarter of the shard's write-buffer budget,
    /// within [`MEMTABLE_BYTES_MIN`]..=[`MEMTABLE_BYTES_MAX`].
    fn memtable_bytes(&self) -> usize {
        (self.tuning.write_buffer_bytes / 4).clamp(MEMTABLE_BYTES_MIN, MEMTABLE_BYTES_MAX)
    }

    /// The options of the small metadata column family (one key).
    fn meta_options(&self) -> Options {
        let mut options = Options::default();
        options.set_write_buffer_size(self.memtable_bytes());
        options.set_arena_block_size(ARENA_BLOCK_BYTES);
        options
    }

    fn options(&self) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.block_cache);
        table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_whole_key_filtering(true);
        // Every read seeks each L0 file: keep their filter and index blocks
        // pinned rather than looked up (and possibly evicted) in the LRU.
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);

        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_env(&self.env);
        options.set_max_background_jobs(self.tuning.compaction_threads);
        options.set_write_buffer_manager(&self.write_buffer_manager);
        options.set_write_buffer_size(self.memtable_bytes());
        options.set_arena_block_size(ARENA_BLOCK_BYTES);
        options.set_block_based_table_factory(&table);
        // lz4 at every level, as Pegasus: zstd at the bottommost level cost
        // about a twelfth of a node's CPU under a write load.
        options.set_compression_type(DBCompressionType::Lz4);
        // A prefix bloom in each memtable: a hash key absent from it skips
        // the skiplist search.
        options.set_memtable_prefix_bloom_ratio(MEMTABLE_PREFIX_BLOOM_RATIO);
        options.set_prefix_extractor(SliceTransform::create(
            "markab.hash_key",
            hash_key_prefix_of,
            Some(has_hash_key_prefix),
        ));
        options.set_compaction_filter("markab.ttl", drop_expired);
        options.create_missing_column_families(true);
        // The data and the applied decree flush together
        // (**flushed-decree-consistent**).
        options.set_atomic_flush(true);
        options
    }
}

/// The prefix extractor: the length field and bytes of the hash key.
fn hash_key_prefix_of(raw_key: &[u8]) -> &[u8] {
    match prefix_len(raw_key) {
        Some(len) => &raw_key[..len],
        None => raw_key,
    }
}

fn has_hash_key_prefix(raw_key: &[u8]) -> bool {
    prefix_len(raw_key).is_some()
}

fn prefix_len(raw_key: &[u8]) -> Option<usize> {
    let length_bytes: [u8; HASH_KEY_LENGTH_BYTES] =
        raw_key.get(..HASH_KEY_LENGTH_BYTES)?.try_into().ok()?;
    let len = HASH_KEY_LENGTH_BYTES + usize::from(u16::from_be_bytes(length_bytes));
    (raw_key.len() >= len).then_some(len)
}

/// The TTL compaction filter: drops records expired by the system clock
/// at the time of compaction; keeps anything it cannot decode.
fn drop_expired(_level: u32, _raw_key: &[u8], raw_value: &[u8]) -> Decision {
    match key::decode_value(raw_value) {
        Some((expire_ts, _)) if key::is_expired(expire_ts, key::now_epoch_s()) => Decision::Remove,
        _ => Decision::Keep,
    }
}

/// The column family holding Markab's per-replica metadata.
const META_CF: &str = "markab_meta";
/// The key of the last applied decree in [`META_CF`] (i64 little-endian).
const APPLIED_DECREE_KEY: &[u8] = b"applied_decree";

/// One RocksDB instance (one partition replica's data). RocksDB's WAL is
/// off: the shard's mutation log is the write-ahead log, and every batch
/// stores its decree in the `markab_meta` column family so a restart knows
/// where to replay from.
pub struct RocksEngine {
    db: DB,
    path: PathBuf,
    write_options: WriteOptions,
}

impl RocksEngine {
    /// Opens (creating if missing) the instance at `path`, sharing the
    /// shard's cache, write-buffer budget and threads.
    pub fn open(path: &Path, shard: &ShardStorage) -> Result<RocksEngine, OpError> {
        let options = shard.options();
        let families = [
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, options.clone()),
            ColumnFamilyDescriptor::new(META_CF, shard.meta_options()),
        ];
        let db = DB::open_cf_descriptors(&options, path, families).map_err(|error| {
            storage_error(&format!("opening RocksDB at {}", path.display()), error)
        })?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        Ok(RocksEngine {
            db,
            path: path.to_path_buf(),
            write_options,
        })
    }

    fn meta_cf(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(META_CF)
            .expect("the meta column family is created at open")
    }

    fn read_decree(&self, tier: rocksdb::ReadTier) -> Result<i64, OpError> {
        let mut read_options = ReadOptions::default();
        read_options.set_read_tier(tier);
        let value = self
            .db
            .get_cf_opt(self.meta_cf(), APPLIED_DECREE_KEY, &read_options)
            .map_err(|error| storage_error("RocksDB get of the applied decree", error))?;
        match value {
            None => Ok(0),
            Some(bytes) => bytes
                .as_slice()
                .try_into()
                .map(i64::from_le_bytes)
                .map_err(|_| {
                    storage_error(
                        "reading the applied decree",
                        format!("{} bytes instead of 8", bytes.len()),
                    )
                }),
        }
    }

    /// Where this instance lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes memtables and compacts every level (running the TTL
    /// compaction filter over all data).
    pub fn compact_all(&self) -> Result<(), OpError> {
        self.flush()?;
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }
}

impl StorageEngine for RocksEngine {
    fn get(&self, raw_key: &[u8]) -> Result<Option<Vec<u8>>, OpError> {
        self.db
            .get(raw_key)
            .map_err(|error| storage_error("RocksDB get", error))
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), OpError> {
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                WriteOp::Put { raw_key, raw_value } => rocks_batch.put(raw_key, raw_value),
                WriteOp::Delete { raw_key } => rocks_batch.delete(raw_key),
            }
        }
        if let Some(decree) = batch.decree() {
            rocks_batch.put_cf(self.meta_cf(), APPLIED_DECREE_KEY, decree.to_le_bytes());
        }
        self.db
            .write_opt(rocks_batch, &self.write_options)
            .map_err(|error| storage_error("RocksDB write", error))
    }

    fn applied_decree(&self) -> Result<i64, OpError> {
        self.read_decree(rocksdb::ReadTier::All)
    }

    fn flushed_decree(&self) -> Result<i64, OpError> {
        // With the WAL off, the persisted tier skips the memtables.
        self.read_decree(rocksdb::ReadTier::Persisted)
    }

    fn flush(&self) -> Result<(), OpError> {
        let default_cf = self
            .db
            .cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .expect("the default column family always exists");
        self.db
            .flush_cfs_opt(
                &[&default_cf, &self.meta_cf()],
                &rocksdb::FlushOptions::default(),
            )
            .map_err(|error| storage_error("flushing RocksDB", error))
    }

    fn scan(
        &self,
        lower_inclusive: &[u8],
        upper_exclusive: Option<&[u8]>,
        direction: Direction,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), OpError> {
        if upper_exclusive.is_some_and(|upper| upper <= lower_inclusive) {
            return Ok(());
        }
        let mut read_options = ReadOptions::default();
        // Prefix (bloom-assisted) seeks only for forward reads inside one
        // hash key; everything else needs total order.
        let within_one_hash_key = direction == Direction::Forward
            && prefix_len(lower_inclusive).is_some_and(|len| {
                let end = key::next_key(&lower_inclusive[..len]);
                match (upper_exclusive, end) {
                    (Some(upper), Some(end)) => upper <= end.as_slice(),
                    _ => false,
                }
            });
        if within_one_hash_key {
            read_options.set_prefix_same_as_start(true);
        } else {
            read_options.set_total_order_seek(true);
        }
        read_options.set_iterate_lower_bound(lower_inclusive.to_vec());
        if let Some(upper) = upper_exclusive {
            read_options.set_iterate_upper_bound(upper.to_vec());
        }
        let mut iterator = self.db.raw_iterator_opt(read_options);
        match direction {
            Direction::Forward => iterator.seek(lower_inclusive),
            Direction::Reverse => match upper_exclusive {
                Some(upper) => {
                    iterator.seek_for_prev(upper);
                    while iterator.key().is_some_and(|key| key >= upper) {
                        iterator.prev();
                    }
                }
                None => iterator.seek_to_last(),
            },
        }
        while let Some((raw_key, raw_value)) = iterator.item() {
            let in_range =
                raw_key >= lower_inclusive && upper_exclusive.is_none_or(|upper| raw_key < upper);
            if !in_range || visit(raw_key, raw_value)? == ScanControl::Stop {
                break;
            }
            match direction {
                Direction::Forward => iterator.next(),
                Direction::Reverse => iterator.prev(),
            }
        }
        iterator
            .status()
            .map_err(|error| storage_error("RocksDB iteration", error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sst_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|extension| extension == "sst")
            })
            .count()
    }

    // Many replicas sharing a small write-buffer budget (onebox's 16 MiB)
    // flush only when their memtables really fill: 8 instances × 1,500
    // writes of 1 KiB (12 MiB in all) make a handful of SST files, not the
    // hundreds RocksDB's default 8 MiB arena blocks caused (every memtable
    // charged a block, the budget was always exceeded, every write flushed).
    #[test]
    fn shared_write_budget_does_not_flush_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let shard = ShardStorage::new(&StorageTuning {
            block_cache_bytes: 16 << 20,
            write_buffer_bytes: 16 << 20,
            compaction_threads: 1,
        })
        .unwrap();
        let engines: Vec<RocksEngine> = (0..8)
            .map(|index| RocksEngine::open(&dir.path().join(index.to_string()), &shard).unwrap())
            .collect();
        for decree in 1..=1_500i64 {
            for engine in &engines {
                let mut batch = WriteBatch::new();
                batch.put(format!("key{decree}").into_bytes(), vec![7u8; 1024]);
                batch.set_decree(decree);
                engine.write(&batch).unwrap();
            }
        }
        let files: usize = (0..8)
            .map(|index| sst_files(&dir.path().join(index.to_string())))
            .sum();
        assert!(files <= 16, "{files} SST files for 12 MiB of writes");
    }
}
