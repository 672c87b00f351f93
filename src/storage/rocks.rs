//! [`RocksEngine`]: one RocksDB instance per partition replica, and
//! [`ShardStorage`]: what the instances of one shard share (block cache,
//! write-buffer budget, background threads). See docs/storage.md, "RocksDB".

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

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
/// Share of a memtable's size given to its hash-key prefix bloom, for
/// each of a shard's first [`FULL_BLOOM_INSTANCES`] open instances.
const MEMTABLE_PREFIX_BLOOM_RATIO: f64 = 0.05;
/// Open instances of a shard up to which each memtable gets the whole
/// prefix bloom; an instance opened when `k` are open gets
/// `FULL_BLOOM_INSTANCES / k` of it. The bloom is allocated up front and
/// charged to the shard's write-buffer budget: at the whole ratio, 64
/// replicas on one shard (0.8 MiB each with the default budget) left no
/// room for data, and the shard flushed nearly empty memtables without
/// end — thousands of table files, until the node ran out of descriptors.
const FULL_BLOOM_INSTANCES: usize = 4;
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
    /// Record cache shared by the shard's instances: whole hash keys read
    /// recently (default 16 MiB; 0 turns it off). See [`RecordCache`].
    pub record_cache_bytes: usize,
}

impl Default for StorageTuning {
    fn default() -> StorageTuning {
        StorageTuning {
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            compaction_threads: 2,
            record_cache_bytes: 16 << 20,
        }
    }
}

/// Whole hash keys read recently, shared by one shard's instances and
/// keyed by instance and hash key: a read of a whole hash key (what a
/// `multi_get` with no sort keys, a YCSB read, does) is served from here
/// without creating a RocksDB iterator, which is most of such a read's CPU.
///
/// **record-cache-coherent**: an entry holds exactly the raw records RocksDB
/// holds for its hash key. Every write of an instance goes through
/// [`RocksEngine::write`], which, after the RocksDB write, bumps the
/// instance's generation and drops the entries of every hash key it touched,
/// under the cache lock; a read fills an entry only if the instance's
/// generation did not move while it read RocksDB. Expiry is not cached: the
/// raw records keep their expiry time and readers judge it at read time, as
/// they do for records read from RocksDB.
struct RecordCache {
    entries: LruCache<Vec<u8>, Arc<CachedHashKey>>,
    bytes: usize,
    budget: usize,
    hits: u64,
    misses: u64,
}

/// The raw records of one hash key, in key order, in one buffer (one
/// allocation per hash key, not two per record): record `i`'s key ends at
/// `ends[i].0` and its value at `ends[i].1`, each starting where the one
/// before it ended.
#[derive(Default)]
struct CachedHashKey {
    data: Vec<u8>,
    ends: Vec<(usize, usize)>,
    bytes: usize,
}

impl CachedHashKey {
    fn push(&mut self, raw_key: &[u8], raw_value: &[u8]) {
        self.data.extend_from_slice(raw_key);
        let key_end = self.data.len();
        self.data.extend_from_slice(raw_value);
        self.ends.push((key_end, self.data.len()));
    }

    /// Sets `bytes` to what the entry holds in memory: its buffers'
    /// capacities (growth may leave up to half unused), not only their
    /// lengths.
    fn seal(mut self) -> CachedHashKey {
        self.bytes = self.data.capacity() + self.ends.capacity() * CACHE_RECORD_OVERHEAD_BYTES;
        self
    }

    /// The records, as `(raw key, raw value)`, in key order.
    fn records(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(key_end, value_end)| {
            let record = (&self.data[start..key_end], &self.data[key_end..value_end]);
            start = value_end;
            record
        })
    }
}

/// Fixed cost charged per cached hash key (the LRU's node, the entry's
/// buffers' headers), and per record (its two ends), on top of the bytes.
const CACHE_ENTRY_OVERHEAD_BYTES: usize = 144;
const CACHE_RECORD_OVERHEAD_BYTES: usize = std::mem::size_of::<(usize, usize)>();

impl RecordCache {
    fn new(budget: usize) -> RecordCache {
        RecordCache {
            entries: LruCache::unbounded(),
            bytes: 0,
            budget,
            hits: 0,
            misses: 0,
        }
    }

    /// The largest hash key worth caching: an eighth of the budget.
    fn entry_bytes_max(&self) -> usize {
        self.budget / 8
    }

    fn insert(&mut self, key: Vec<u8>, entry: CachedHashKey) {
        let charge = entry.bytes + key.len() + CACHE_ENTRY_OVERHEAD_BYTES;
        if charge > self.entry_bytes_max() {
            return;
        }
        self.remove(&key);
        self.bytes += charge;
        self.entries.put(key, Arc::new(entry));
        while self.bytes > self.budget {
            let Some((key, evicted)) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= evicted.bytes + key.len() + CACHE_ENTRY_OVERHEAD_BYTES;
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(removed) = self.entries.pop(key) {
            self.bytes -= removed.bytes + key.len() + CACHE_ENTRY_OVERHEAD_BYTES;
        }
    }
}

/// The cache key of `hash_key_prefix` in instance `instance`.
fn cache_key(instance: u64, hash_key_prefix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + hash_key_prefix.len());
    key.extend_from_slice(&instance.to_be_bytes());
    key.extend_from_slice(hash_key_prefix);
    key
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
    record_cache: Option<Arc<Mutex<RecordCache>>>,
    next_instance: AtomicU64,
    /// Instances open now (each holds a clone and counts itself out).
    open_instances: Arc<AtomicUsize>,
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
        let record_cache = (tuning.record_cache_bytes > 0)
            .then(|| Arc::new(Mutex::new(RecordCache::new(tuning.record_cache_bytes))));
        Ok(ShardStorage {
            tuning: *tuning,
            block_cache,
            write_buffer_manager,
            env,
            record_cache,
            next_instance: AtomicU64::new(0),
            open_instances: Arc::default(),
        })
    }

    /// Bytes held by the shard's record cache now.
    pub fn record_cache_usage_bytes(&self) -> usize {
        self.record_cache
            .as_ref()
            .map_or(0, |cache| lock(cache).bytes)
    }

    /// Whole-hash-key reads the shard's record cache served and did not
    /// serve, since the shard started: `(hits, misses)`.
    pub fn record_cache_lookups(&self) -> (u64, u64) {
        self.record_cache.as_ref().map_or((0, 0), |cache| {
            let cache = lock(cache);
            (cache.hits, cache.misses)
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

    /// The prefix bloom's share of a memtable for an instance opened now
    /// (see [`FULL_BLOOM_INSTANCES`]).
    fn prefix_bloom_ratio(&self) -> f64 {
        let opening = self.open_instances.load(Ordering::Relaxed) + 1;
        MEMTABLE_PREFIX_BLOOM_RATIO * (FULL_BLOOM_INSTANCES as f64 / opening as f64).min(1.0)
    }

    fn options(&self, owner: &Arc<AtomicU64>) -> Options {
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
        // No compression at L0 and L1, lz4 below: flushes and the L0 -> L1
        // compactions rewrite the newest data most often, and compressing
        // it cost about a thirteenth of a node's CPU under durable inserts
        // (docs/BENCHMARKS.md, "Where a node's CPU goes"); zstd at the
        // bottommost level cost about a twelfth.
        options.set_compression_type(DBCompressionType::Lz4);
        options.set_compression_per_level(&COMPRESSION_PER_LEVEL);
        // A prefix bloom in each memtable: a hash key absent from it skips
        // the skiplist search.
        options.set_memtable_prefix_bloom_ratio(self.prefix_bloom_ratio());
        options.set_prefix_extractor(SliceTransform::create(
            "markab.hash_key",
            hash_key_prefix_of,
            Some(has_hash_key_prefix),
        ));
        // Expired records, and after a split the records of keys another
        // partition owns now (**split-owned-only**).
        let owner = owner.clone();
        options.set_compaction_filter("markab.ttl", move |level, raw_key, raw_value| {
            if is_foreign(owner.load(Ordering::Relaxed), raw_key) {
                Decision::Remove
            } else {
                drop_expired(level, raw_key, raw_value)
            }
        });
        options.create_missing_column_families(true);
        // The data and the applied decree flush together
        // (**flushed-decree-consistent**).
        options.set_atomic_flush(true);
        options
    }
}

/// Compression by level (levels past the list use its last entry).
const COMPRESSION_PER_LEVEL: [DBCompressionType; 7] = [
    DBCompressionType::None,
    DBCompressionType::None,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
];

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

/// Whether `raw_key` belongs to another partition than `owner` (count in
/// the high half, index in the low half; count 0 = owns every key).
fn is_foreign(owner: u64, raw_key: &[u8]) -> bool {
    let count = (owner >> 32) as u32;
    if count == 0 {
        return false;
    }
    key::decode_key(raw_key).is_some_and(|(hash_key, sort_key)| {
        key::partition_index(key::partition_hash(hash_key, sort_key), count) != owner as u32
    })
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
/// The partition count whose foreign records were last compacted away.
const CLEANED_COUNT_KEY: &[u8] = b"split_cleaned_count";

/// One RocksDB instance (one partition replica's data). RocksDB's WAL is
/// off: the shard's mutation log is the write-ahead log, and every batch
/// stores its decree in the `markab_meta` column family so a restart knows
/// where to replay from.
pub struct RocksEngine {
    /// Shared only with [`Checkpointer`]s, which take checkpoints off the
    /// shard thread.
    db: Arc<DB>,
    path: PathBuf,
    write_options: WriteOptions,
    record_cache: Option<Arc<Mutex<RecordCache>>>,
    /// This instance's number in the shard's record cache.
    instance: u64,
    /// The shard's count of open instances, this one included.
    open_instances: Arc<AtomicUsize>,
    /// Bumped by every write, under the record cache's lock.
    generation: AtomicU64,
    /// The partition this instance owns keys of, for its compaction
    /// filter: count in the high half, index in the low (0 = every key).
    owner: Arc<AtomicU64>,
}

fn lock(cache: &Mutex<RecordCache>) -> MutexGuard<'_, RecordCache> {
    // The cache holds no invariant a panic elsewhere could break halfway.
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for RocksEngine {
    fn drop(&mut self) {
        self.open_instances.fetch_sub(1, Ordering::Relaxed);
        let Some(cache) = &self.record_cache else {
            return;
        };
        let prefix = self.instance.to_be_bytes();
        let mut cache = lock(cache);
        let mine: Vec<Vec<u8>> = cache
            .entries
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(key, _)| key.clone())
            .collect();
        for key in mine {
            cache.remove(&key);
        }
    }
}

/// Takes consistent checkpoints of one instance without stopping its
/// writes: RocksDB flushes the memtables (atomically across the data and
/// `markab_meta` families, so the checkpoint's applied decree matches its
/// records), hard-links the table files and copies the rest into a new
/// directory. Blocking: run it off the shard thread.
pub struct Checkpointer {
    db: Arc<DB>,
    path: PathBuf,
}

impl Checkpointer {
    /// Writes a checkpoint into `dir` (which must not exist; its parent
    /// must, on the instance's file system for the hard links) and returns
    /// the decree it holds every mutation up to, read from the checkpoint
    /// itself.
    pub fn create(&self, dir: &Path) -> Result<i64, OpError> {
        if dir.exists() {
            return Err(storage_error(
                &format!("checkpoint of {}", self.path.display()),
                format!("{} exists already", dir.display()),
            ));
        }
        let what = || {
            format!(
                "checkpoint of {} into {}",
                self.path.display(),
                dir.display()
            )
        };
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(dir))
            .map_err(|error| storage_error(&what(), error))?;
        checkpoint_decree(dir).map_err(|error| storage_error(&what(), error.message))
    }
}

/// Sets the applied decree of the closed instance (a checkpoint) at `dir`
/// to `decree`: a split child starts at its parent's fence decree on every
/// member, whatever decree each member's copy was taken at above it
/// (docs/split.md, **copy-covers-fence**). Durable when it returns.
pub fn set_checkpoint_decree(dir: &Path, decree: i64) -> Result<(), OpError> {
    let what = || format!("setting the decree of {}", dir.display());
    let mut options = Options::default();
    options.set_atomic_flush(true);
    let db = DB::open_cf(
        &options,
        dir,
        [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, META_CF],
    )
    .map_err(|error| storage_error(&what(), error))?;
    let meta = db
        .cf_handle(META_CF)
        .ok_or_else(|| storage_error(&what(), "no markab_meta family"))?;
    db.put_cf(meta, APPLIED_DECREE_KEY, decree.to_le_bytes())
        .and_then(|()| db.flush_cf(meta))
        .map_err(|error| storage_error(&what(), error))?;
    Ok(())
}

/// The applied decree stored in the checkpoint (or instance) at `dir`,
/// opened read-only.
pub fn checkpoint_decree(dir: &Path) -> Result<i64, OpError> {
    let options = Options::default();
    let db = DB::open_cf_for_read_only(
        &options,
        dir,
        [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, META_CF],
        false,
    )
    .map_err(|error| storage_error(&format!("opening {} read-only", dir.display()), error))?;
    let meta = db
        .cf_handle(META_CF)
        .ok_or_else(|| storage_error(&format!("{}", dir.display()), "no markab_meta family"))?;
    let value = db
        .get_cf(meta, APPLIED_DECREE_KEY)
        .map_err(|error| storage_error("reading the applied decree", error))?;
    decree_from(value)
}

/// The applied decree stored as `value` (none: 0).
fn decree_from(value: Option<Vec<u8>>) -> Result<i64, OpError> {
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

/// How the message of an error opening an instance whose files RocksDB
/// found corrupted begins (see [`is_corrupted`]).
const CORRUPTED: &str = "RocksDB files are corrupted";

/// Whether `error` came from [`RocksEngine::open`] finding the instance's
/// files corrupted (a checksum mismatch, a damaged MANIFEST or table file):
/// its data cannot be trusted, and another replica must replace it.
pub fn is_corrupted(error: &OpError) -> bool {
    error.code == markab_wire::ErrorCode::StorageError && error.message.starts_with(CORRUPTED)
}

impl RocksEngine {
    /// Opens (creating if missing) the instance at `path`, sharing the
    /// shard's cache, write-buffer budget and threads.
    pub fn open(path: &Path, shard: &ShardStorage) -> Result<RocksEngine, OpError> {
        let owner = Arc::new(AtomicU64::new(0));
        let options = shard.options(&owner);
        let families = [
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, options.clone()),
            ColumnFamilyDescriptor::new(META_CF, shard.meta_options()),
        ];
        let db = DB::open_cf_descriptors(&options, path, families).map_err(|error| {
            let what = if error.kind() == rocksdb::ErrorKind::Corruption {
                format!("{CORRUPTED} at {}", path.display())
            } else {
                format!("opening RocksDB at {}", path.display())
            };
            storage_error(&what, error)
        })?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        Ok(RocksEngine {
            db: Arc::new(db),
            path: path.to_path_buf(),
            write_options,
            record_cache: shard.record_cache.clone(),
            instance: shard.next_instance.fetch_add(1, Ordering::Relaxed),
            open_instances: {
                shard.open_instances.fetch_add(1, Ordering::Relaxed);
                shard.open_instances.clone()
            },
            generation: AtomicU64::new(0),
            owner,
        })
    }

    /// The hash-key prefix when `[lower, upper)` is exactly one whole hash
    /// key read forward: what the record cache serves.
    fn whole_hash_key<'a>(
        lower: &'a [u8],
        upper: Option<&[u8]>,
        direction: Direction,
    ) -> Option<&'a [u8]> {
        let whole = direction == Direction::Forward
            && prefix_len(lower) == Some(lower.len())
            && upper.is_some_and(|upper| key::is_next_key(lower, upper));
        whole.then_some(lower)
    }

    /// Reads a whole hash key through the record cache.
    fn scan_cached(
        &self,
        cache: &Mutex<RecordCache>,
        hash_key_prefix: &[u8],
        upper: &[u8],
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), OpError> {
        let key = cache_key(self.instance, hash_key_prefix);
        let (cached, generation) = {
            let mut cache = lock(cache);
            let cached = cache.entries.get(key.as_slice()).cloned();
            match cached {
                Some(_) => cache.hits += 1,
                None => cache.misses += 1,
            }
            (cached, self.generation.load(Ordering::Relaxed))
        };
        if let Some(cached) = cached {
            for (raw_key, raw_value) in cached.records() {
                if visit(raw_key, raw_value)? == ScanControl::Stop {
                    break;
                }
            }
            return Ok(());
        }
        let mut entry = CachedHashKey::default();
        let mut whole = true;
        self.scan_rocks(
            hash_key_prefix,
            Some(upper),
            Direction::Forward,
            &mut |raw_key, raw_value| {
                let control = visit(raw_key, raw_value)?;
                if control == ScanControl::Stop {
                    whole = false;
                } else {
                    entry.push(raw_key, raw_value);
                }
                Ok(control)
            },
        )?;
        if whole {
            let mut cache = lock(cache);
            if self.generation.load(Ordering::Relaxed) == generation {
                cache.insert(key, entry.seal());
            }
        }
        Ok(())
    }

    fn scan_rocks(
        &self,
        lower_inclusive: &[u8],
        upper_exclusive: Option<&[u8]>,
        direction: Direction,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), OpError> {
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
        decree_from(value)
    }

    /// Where this instance lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that takes checkpoints of this instance from any thread
    /// (it keeps the instance's RocksDB open while it lives).
    pub fn checkpointer(&self) -> Checkpointer {
        Checkpointer {
            db: self.db.clone(),
            path: self.path.clone(),
        }
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
        let written = self
            .db
            .write_opt(rocks_batch, &self.write_options)
            .map_err(|error| storage_error("RocksDB write", error));
        // Whether or not the write went through (**record-cache-coherent**).
        if let Some(cache) = &self.record_cache {
            let mut cache = lock(cache);
            self.generation.fetch_add(1, Ordering::Relaxed);
            if !cache.entries.is_empty() {
                // A batch usually writes one hash key: drop each run once.
                let mut last: Option<&[u8]> = None;
                for op in batch.ops() {
                    let raw_key = match op {
                        WriteOp::Put { raw_key, .. } | WriteOp::Delete { raw_key } => raw_key,
                    };
                    let Some(len) = prefix_len(raw_key) else {
                        continue;
                    };
                    let prefix = &raw_key[..len];
                    if last != Some(prefix) {
                        cache.remove(&cache_key(self.instance, prefix));
                        last = Some(prefix);
                    }
                }
            }
        }
        written
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

    fn drop_foreign(&self, count: u32, index: u32) -> Result<(), OpError> {
        self.owner.store(
            (u64::from(count) << 32) | u64::from(index),
            Ordering::Relaxed,
        );
        if count == 0 {
            return Ok(());
        }
        let cleaned = self
            .db
            .get_cf(self.meta_cf(), CLEANED_COUNT_KEY)
            .map_err(|error| storage_error("reading the cleaned count", error))?;
        let count_bytes = count.to_le_bytes();
        match cleaned.as_deref() {
            Some(held) if held == &count_bytes[..] => return Ok(()),
            // First open since this record exists: no split left records
            // of other partitions here; from now on a change of count does.
            None => {
                let mut options = WriteOptions::default();
                options.disable_wal(true);
                return self
                    .db
                    .put_cf_opt(self.meta_cf(), CLEANED_COUNT_KEY, count_bytes, &options)
                    .map_err(|error| storage_error("recording the cleaned count", error));
            }
            Some(_) => {}
        }
        // A full compaction runs the filter over every record, on a thread
        // of its own (RocksDB's background threads do the work): the
        // shard goes on serving. Recorded once done, so it runs once per
        // split (a restart before it ends runs it again).
        let db = self.db.clone();
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("markab-split-clean".into())
            .spawn(move || {
                db.compact_range::<&[u8], &[u8]>(None, None);
                let meta = db.cf_handle(META_CF).expect("the meta family exists");
                let mut options = WriteOptions::default();
                options.disable_wal(true);
                if let Err(error) =
                    db.put_cf_opt(meta, CLEANED_COUNT_KEY, count.to_le_bytes(), &options)
                {
                    tracing::warn!(path = %path.display(), %error, "cannot record a split clean-up");
                } else {
                    tracing::info!(path = %path.display(), partitions = count, "dropped the records of moved keys");
                }
            })
            .map_err(|error| storage_error("starting a split clean-up", error))?;
        Ok(())
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
        if let (Some(cache), Some(prefix), Some(upper)) = (
            &self.record_cache,
            Self::whole_hash_key(lower_inclusive, upper_exclusive, direction),
            upper_exclusive,
        ) {
            return self.scan_cached(cache, prefix, upper, visit);
        }
        self.scan_rocks(lower_inclusive, upper_exclusive, direction, visit)
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

    /// `count` instances of `shard`, in `dir/0`, `dir/1`, ...
    fn open_engines(dir: &Path, shard: &ShardStorage, count: usize) -> Vec<RocksEngine> {
        (0..count)
            .map(|index| RocksEngine::open(&dir.join(index.to_string()), shard).unwrap())
            .collect()
    }

    /// Writes `count` records of 1 KiB to each engine, one batch per
    /// record, taking turns.
    fn write_kib_records(engines: &[RocksEngine], count: i64) {
        for decree in 1..=count {
            for engine in engines {
                let mut batch = WriteBatch::new();
                batch.put(format!("key{decree}").into_bytes(), vec![7u8; 1024]);
                batch.set_decree(decree);
                engine.write(&batch).unwrap();
            }
        }
    }

    /// SST files of the instances `open_engines` opened in `dir`.
    fn sst_files_of(dir: &Path, count: usize) -> usize {
        (0..count)
            .map(|index| sst_files(&dir.join(index.to_string())))
            .sum()
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
            record_cache_bytes: 0,
        })
        .unwrap();
        let engines = open_engines(dir.path(), &shard, 8);
        write_kib_records(&engines, 1_500);
        let files = sst_files_of(dir.path(), engines.len());
        assert!(files <= 16, "{files} SST files for 12 MiB of writes");
    }

    // Sixty-four replicas on one shard with the default 64 MiB budget:
    // their memtables' up-front allocations (prefix blooms, arena blocks)
    // leave most of the budget for data, and 6.4 MiB of writes flush
    // (nearly) nothing. At a whole prefix bloom each the allocations alone
    // filled the budget and every write flushed.
    #[test]
    fn many_replicas_on_one_shard_leave_room_in_the_write_budget() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = StorageTuning {
            compaction_threads: 1,
            record_cache_bytes: 0,
            ..StorageTuning::default()
        };
        let shard = ShardStorage::new(&tuning).unwrap();
        let engines = open_engines(dir.path(), &shard, 64);
        let usage = shard.write_buffer_usage_bytes();
        assert!(
            usage < tuning.write_buffer_bytes / 2,
            "{usage} of {} bytes charged before any write",
            tuning.write_buffer_bytes
        );
        write_kib_records(&engines, 100);
        let files = sst_files_of(dir.path(), engines.len());
        assert!(files <= 8, "{files} SST files for 6.4 MiB of writes");
        drop(engines);
        assert_eq!(shard.open_instances.load(Ordering::Relaxed), 0);
    }

    fn shard(record_cache_bytes: usize) -> ShardStorage {
        ShardStorage::new(&StorageTuning {
            block_cache_bytes: 1 << 20,
            write_buffer_bytes: 1 << 20,
            compaction_threads: 1,
            record_cache_bytes,
        })
        .unwrap()
    }

    fn raw(hash_key: &str, sort_key: &str) -> Vec<u8> {
        key::encode_key(hash_key.as_bytes(), sort_key.as_bytes()).unwrap()
    }

    /// Every record of `hash_key`, read the way a whole-hash-key
    /// `multi_get` reads it.
    fn read_whole(engine: &RocksEngine, hash_key: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let lower = key::hash_key_prefix(hash_key.as_bytes()).unwrap();
        let upper = key::next_key(&lower).unwrap();
        let mut records = Vec::new();
        engine
            .scan(&lower, Some(&upper), Direction::Forward, &mut |k, v| {
                records.push((k.to_vec(), v.to_vec()));
                Ok(ScanControl::Continue)
            })
            .unwrap();
        records
    }

    fn write(engine: &RocksEngine, ops: &[(&str, &str, Option<&str>)]) {
        let mut batch = WriteBatch::new();
        for (hash_key, sort_key, value) in ops {
            match value {
                Some(value) => batch.put(raw(hash_key, sort_key), value.as_bytes().to_vec()),
                None => batch.delete(raw(hash_key, sort_key)),
            }
        }
        engine.write(&batch).unwrap();
    }

    // record-cache-coherent: after every kind of write, a cached instance
    // reads exactly what an uncached one reads, for the written hash key and
    // for its neighbours.
    #[test]
    fn record_cache_follows_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let (cached_shard, plain_shard) = (shard(1 << 20), shard(0));
        let cached = RocksEngine::open(&dir.path().join("cached"), &cached_shard).unwrap();
        let plain = RocksEngine::open(&dir.path().join("plain"), &plain_shard).unwrap();
        let steps: Vec<Vec<(&str, &str, Option<&str>)>> = vec![
            vec![
                ("h", "a", Some("1")),
                ("h", "b", Some("2")),
                ("h2", "a", Some("x")),
            ],
            vec![("h", "a", Some("1b"))],
            vec![("h", "c", Some("3"))],
            vec![("h", "b", None)],
            vec![("h", "", Some("empty sort key"))],
            vec![("h", "a", None), ("h", "c", None), ("h", "", None)],
            vec![("h2", "b", Some("y")), ("h", "z", Some("back"))],
        ];
        for step in &steps {
            for engine in [&cached, &plain] {
                write(engine, step);
            }
            for hash_key in ["h", "h2", "h3"] {
                // Twice: the first read may fill the cache, the second hits it.
                for _ in 0..2 {
                    assert_eq!(read_whole(&cached, hash_key), read_whole(&plain, hash_key));
                }
            }
        }
        assert!(cached_shard.record_cache_usage_bytes() > 0);
        assert_eq!(plain_shard.record_cache_usage_bytes(), 0);
        let (hits, misses) = cached_shard.record_cache_lookups();
        assert_eq!(hits + misses, (steps.len() * 3 * 2) as u64);
        assert!(hits >= (steps.len() * 3) as u64, "every second read hits");
        assert_eq!(plain_shard.record_cache_lookups(), (0, 0));
        drop(cached);
        assert_eq!(
            cached_shard.record_cache_usage_bytes(),
            0,
            "a dropped instance's entries go"
        );
    }

    // A read that a write overtakes does not fill the cache with what it
    // read, and a read cut short by its visitor fills nothing.
    #[test]
    fn record_cache_skips_overtaken_and_partial_reads() {
        let dir = tempfile::tempdir().unwrap();
        let shard = shard(1 << 20);
        let engine = RocksEngine::open(dir.path(), &shard).unwrap();
        write(&engine, &[("h", "a", Some("1")), ("h", "b", Some("2"))]);
        let lower = key::hash_key_prefix(b"h").unwrap();
        let upper = key::next_key(&lower).unwrap();
        engine
            .scan(&lower, Some(&upper), Direction::Forward, &mut |_, _| {
                Ok(ScanControl::Stop)
            })
            .unwrap();
        assert_eq!(
            shard.record_cache_usage_bytes(),
            0,
            "a partial read is not cached"
        );
        // A write lands between the read's start and its end (the engine
        // contract forbids it from a visitor; a generation bump stands in).
        let generation_before = engine.generation.load(Ordering::Relaxed);
        engine
            .scan(&lower, Some(&upper), Direction::Forward, &mut |_, _| {
                engine.generation.fetch_add(1, Ordering::Relaxed);
                Ok(ScanControl::Continue)
            })
            .unwrap();
        assert!(engine.generation.load(Ordering::Relaxed) > generation_before);
        assert_eq!(
            shard.record_cache_usage_bytes(),
            0,
            "an overtaken read is not cached"
        );
        assert_eq!(read_whole(&engine, "h").len(), 2);
        assert!(shard.record_cache_usage_bytes() > 0);
    }

    // The cache stays within its budget, and a hash key bigger than an
    // eighth of it is never cached.
    #[test]
    fn record_cache_stays_within_budget() {
        let dir = tempfile::tempdir().unwrap();
        let budget = 64 << 10;
        let shard = shard(budget);
        let engine = RocksEngine::open(dir.path(), &shard).unwrap();
        let value = "v".repeat(1000);
        for index in 0..200 {
            let hash_key = format!("h{index}");
            write(&engine, &[(hash_key.as_str(), "s", Some(value.as_str()))]);
            assert_eq!(read_whole(&engine, &hash_key).len(), 1);
            assert!(shard.record_cache_usage_bytes() <= budget);
        }
        assert!(shard.record_cache_usage_bytes() > budget / 2);
        let big = "b".repeat(budget / 8);
        write(&engine, &[("big", "s", Some(big.as_str()))]);
        let before = shard.record_cache_usage_bytes();
        assert_eq!(read_whole(&engine, "big").len(), 1);
        assert_eq!(shard.record_cache_usage_bytes(), before, "too big to cache");
    }

    // A checkpoint holds every record up to its decree — memtable ones
    // included — and says so; taking it from another thread does not stop
    // writes, and the source goes on unchanged. A directory that exists is
    // refused.
    #[test]
    fn a_checkpoint_holds_its_decree_and_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let shard = ShardStorage::new(&StorageTuning {
            compaction_threads: 1,
            ..StorageTuning::default()
        })
        .unwrap();
        let engine = RocksEngine::open(&dir.path().join("source"), &shard).unwrap();
        write_kib_records(std::slice::from_ref(&engine), 500);
        let checkpointer = engine.checkpointer();
        let target = dir.path().join("checkpoint");
        let taken = std::thread::spawn({
            let target = target.clone();
            move || checkpointer.create(&target)
        });
        // Writes while the checkpoint is taken.
        for decree in 501..=1_000 {
            let mut batch = WriteBatch::new();
            batch.put(format!("key{decree}").into_bytes(), vec![8u8; 1024]);
            batch.set_decree(decree);
            engine.write(&batch).unwrap();
        }
        let decree = taken.join().unwrap().unwrap();
        assert!((500..=1_000).contains(&decree), "decree {decree}");
        assert_eq!(checkpoint_decree(&target).unwrap(), decree);
        let copy = RocksEngine::open(&target, &shard).unwrap();
        assert_eq!(copy.applied_decree().unwrap(), decree);
        for index in 1..=1_000i64 {
            let present = copy
                .get(format!("key{index}").as_bytes())
                .unwrap()
                .is_some();
            assert_eq!(present, index <= decree, "key{index} at decree {decree}");
        }
        assert_eq!(engine.applied_decree().unwrap(), 1_000);
        let error = engine.checkpointer().create(&target).unwrap_err();
        assert!(error.message.contains("exists already"), "{error}");
    }
}
