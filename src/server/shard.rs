//! One shard's serving state: the partition replicas it owns, its scan
//! cursors, and the dispatch of one decoded request.
//!
//! Hot path: `ShardState::serve` runs on the shard's executor for every
//! request. It takes no locks (the state is the shard's alone) and calls
//! RocksDB synchronously (memtable writes and point reads are short; see
//! docs/DESIGN.md, "Inside a node").

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use markab_shards::tuning::Tuning;
use markab_wire::{
    ErrorCode, Gpid, OpError, PartitionRoute, Request, Response, ResponseBody, Route, ScanRequest,
    SCAN_CONTEXT_COMPLETE,
};

use crate::config::TableConfig;
use crate::key;
use crate::server::cursors::CursorTable;
use crate::storage::{Partition, RocksEngine, ShardStorage, StorageLimits, StorageTuning};

/// Records per scan batch when the request leaves it to the server.
pub const SCAN_BATCH_DEFAULT: usize = 100;

/// What every shard of a node knows about the node.
#[derive(Debug)]
pub struct NodeLayout {
    pub tables: Vec<TableConfig>,
    /// Every shard's listener address, by shard index.
    pub addresses: Vec<std::net::SocketAddr>,
}

impl NodeLayout {
    /// The shard that owns partition `partition_index` (of any table).
    pub fn owner_shard(&self, partition_index: i32) -> usize {
        partition_index as usize % self.addresses.len()
    }

    pub fn table_by_id(&self, app_id: i32) -> Option<&TableConfig> {
        self.tables.iter().find(|table| table.app_id == app_id)
    }

    /// The route of table `name`: the shard address of every partition.
    pub fn route(&self, name: &str) -> Result<Route, OpError> {
        let table = self
            .tables
            .iter()
            .find(|table| table.name == name)
            .ok_or_else(|| {
                OpError::new(
                    ErrorCode::UnknownTable,
                    format!("table {name:?} does not exist on this node"),
                )
            })?;
        let partitions = (0..table.partition_count as i32)
            .map(|partition_index| PartitionRoute {
                partition_index,
                address: self.addresses[self.owner_shard(partition_index)].to_string(),
                ballot: 1,
            })
            .collect();
        Ok(Route {
            table: table.name.clone(),
            app_id: table.app_id,
            partition_count: table.partition_count as i32,
            partitions,
        })
    }

    /// Checks that `gpid` names a hosted partition; the error says what is wrong.
    pub fn check_gpid(&self, gpid: Gpid) -> Result<&TableConfig, OpError> {
        let table = self.table_by_id(gpid.app_id).ok_or_else(|| {
            OpError::new(
                ErrorCode::UnknownTable,
                format!("no table with app_id {} on this node", gpid.app_id),
            )
        })?;
        if gpid.partition_index < 0 || gpid.partition_index as u32 >= table.partition_count {
            return Err(OpError::new(
                ErrorCode::UnknownPartition,
                format!(
                    "table {:?} has partitions 0..{}; partition {} is not hosted here",
                    table.name, table.partition_count, gpid.partition_index
                ),
            ));
        }
        Ok(table)
    }
}

/// Checks that every key of `request` hashes to `gpid`'s partition.
fn check_keys(request: &Request, gpid: Gpid, partition_count: u32) -> Result<(), OpError> {
    let check = |hash_key: &[u8], sort_key: &[u8]| {
        let index = key::partition_index(key::partition_hash(hash_key, sort_key), partition_count);
        if index as i32 == gpid.partition_index {
            Ok(())
        } else {
            Err(OpError::new(
                ErrorCode::WrongPartition,
                format!(
                    "key hashes to partition {index}, but the request was sent to partition {}",
                    gpid.partition_index
                ),
            ))
        }
    };
    match request {
        Request::Get(key)
        | Request::Del(key)
        | Request::Exist(key)
        | Request::Ttl(key)
        | Request::Set { key, .. }
        | Request::Incr { key, .. } => check(&key.hash_key, &key.sort_key),
        Request::BatchGet { keys } => keys
            .iter()
            .try_for_each(|key| check(&key.hash_key, &key.sort_key)),
        other => match other.hash_key() {
            // Multi-key operations on an empty hash key are rejected by storage.
            Some(hash_key) if !hash_key.is_empty() => check(hash_key, b""),
            _ => Ok(()),
        },
    }
}

/// The state one shard serves from.
pub struct ShardState {
    pub shard: usize,
    pub layout: Arc<NodeLayout>,
    partitions: HashMap<Gpid, Partition<RocksEngine>>,
    cursors: RefCell<CursorTable>,
    scan_batch_max: usize,
}

impl ShardState {
    /// Opens (creating if needed) every partition replica this shard owns,
    /// under `data_dir/<table>.<app_id>/<partition>`.
    pub fn open(
        shard: usize,
        layout: Arc<NodeLayout>,
        data_dir: &Path,
        tuning: &Tuning,
    ) -> Result<ShardState, OpError> {
        let storage = ShardStorage::new(&StorageTuning {
            block_cache_bytes: tuning.block_cache_bytes as usize,
            write_buffer_bytes: tuning.write_buffer_bytes as usize,
            compaction_threads: tuning.compaction_threads as i32,
        })?;
        let limits = StorageLimits::default();
        let scan_batch_max = limits.scan_batch_max;
        let mut partitions = HashMap::new();
        for table in &layout.tables {
            for partition_index in 0..table.partition_count as i32 {
                if layout.owner_shard(partition_index) != shard {
                    continue;
                }
                let path = data_dir
                    .join(format!("{}.{}", table.name, table.app_id))
                    .join(partition_index.to_string());
                std::fs::create_dir_all(&path).map_err(|error| {
                    OpError::new(
                        ErrorCode::StorageError,
                        format!("cannot create {}: {error}", path.display()),
                    )
                })?;
                let engine = RocksEngine::open(&path, &storage)?;
                let gpid = Gpid {
                    app_id: table.app_id,
                    partition_index,
                };
                partitions.insert(gpid, Partition::new(engine, limits));
            }
        }
        Ok(ShardState {
            shard,
            layout,
            partitions,
            cursors: RefCell::new(CursorTable::new(
                tuning.scanners_max,
                Duration::from_millis(tuning.scanner_idle_timeout_ms),
            )),
            scan_batch_max,
        })
    }

    /// How many partition replicas this shard hosts.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// Drops scan cursors idle past their timeout.
    pub fn expire_cursors(&self) -> usize {
        self.cursors.borrow_mut().expire(Instant::now())
    }

    /// Serves one request addressed to a partition this shard owns (the
    /// caller has checked ownership with [`NodeLayout::owner_shard`]).
    pub fn serve(&self, gpid: Gpid, request: &Request) -> Response {
        let table = self.layout.check_gpid(gpid)?;
        check_keys(request, gpid, table.partition_count)?;
        let partition = self.partitions.get(&gpid).ok_or_else(|| {
            OpError::new(
                ErrorCode::Internal,
                format!(
                    "shard {} was asked for partition {}.{} it does not own",
                    self.shard, gpid.app_id, gpid.partition_index
                ),
            )
        })?;
        let now_epoch_s = key::now_epoch_s();
        match request {
            Request::GetScanner(scan) => self.open_scanner(gpid, partition, scan, now_epoch_s),
            Request::Scan { context_id } => {
                self.continue_scanner(gpid, partition, *context_id, now_epoch_s)
            }
            Request::ClearScanner { context_id } => {
                self.cursors.borrow_mut().clear(*context_id);
                Ok(ResponseBody::Done)
            }
            other => partition.execute(other, now_epoch_s),
        }
    }

    fn batch_size(&self, scan: &ScanRequest) -> usize {
        match scan.batch_size {
            size if size <= 0 => SCAN_BATCH_DEFAULT,
            size => (size as usize).min(self.scan_batch_max),
        }
    }

    fn open_scanner(
        &self,
        gpid: Gpid,
        partition: &Partition<RocksEngine>,
        scan: &ScanRequest,
        now_epoch_s: u32,
    ) -> Response {
        let batch = partition.scan_batch(scan, None, self.batch_size(scan), now_epoch_s)?;
        let context_id = match batch.resume_after {
            None => SCAN_CONTEXT_COMPLETE,
            Some(resume_after) => {
                self.cursors
                    .borrow_mut()
                    .open(gpid, scan.clone(), resume_after, Instant::now())?
            }
        };
        Ok(ResponseBody::Scan {
            records: batch.records,
            count: batch.count,
            context_id,
        })
    }

    fn continue_scanner(
        &self,
        gpid: Gpid,
        partition: &Partition<RocksEngine>,
        context_id: i64,
        now_epoch_s: u32,
    ) -> Response {
        let now = Instant::now();
        let cursor = self.cursors.borrow_mut().take(context_id, gpid, now)?;
        let batch = partition.scan_batch(
            &cursor.request,
            Some(&cursor.resume_after),
            self.batch_size(&cursor.request),
            now_epoch_s,
        )?;
        let context_id = match batch.resume_after {
            None => SCAN_CONTEXT_COMPLETE,
            Some(resume_after) => {
                self.cursors
                    .borrow_mut()
                    .restore(context_id, cursor, resume_after, now);
                context_id
            }
        };
        Ok(ResponseBody::Scan {
            records: batch.records,
            count: batch.count,
            context_id,
        })
    }
}
