//! Shipping of duplicated tables (docs/duplication.md, "Shipping"): each
//! shard hands this node's shipper, every [`SHIP_INTERVAL`], what its
//! primaries of duplicated partitions must ship — the order, the committed
//! decree and a snapshot of the shard's log segments — and the shipper,
//! a thread of its own with a tokio runtime (off every shard's executor),
//! reads the committed mutations after the confirmed decree from the log
//! files, keeps those `timetag::should_ship` passes, and sends them in
//! bounded batches to the same partition of the remote table through the
//! remote cluster's metas (`Table::duplicate`), one batch in flight per
//! partition, so the remote applies them in decree order. Each
//! acknowledged batch advances the partition's confirmed decree, which
//! the node reports to meta in its beacons; meta persists it and sends it
//! back in its orders, so a new primary resumes from it. Shipping again
//! from an older confirmed decree is harmless: last-write-wins applies an
//! equal timetag to no effect.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use markab_core::host::record::LearnedGather;
use markab_core::storage::timetag::should_ship;
use markab_shards::log::SegmentInfo;
use markab_wire::{DupMutation, DupOrder, DupReport, DupStatus, DuplicateRequest, Gpid};

use crate::client::{Client, ClientOptions, Table};
use crate::clock::monotonic_ms;

/// How often each shard hands its shipping work over.
pub const SHIP_INTERVAL: Duration = Duration::from_millis(100);
/// Most payload bytes one shipped batch carries (a batch ends at the
/// first mutation past it): with its encoding, a batch stays well inside
/// the remote nodes' default request bound (`request_bytes_max`, 1 MiB).
pub const SHIP_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Most mutations one shipped batch carries.
pub const SHIP_BATCH_MUTATIONS_MAX: usize = 1024;
/// Work items queued for the shipper at most; a shard's items that do not
/// fit wait for its next round.
const SHIP_QUEUE_MAX: usize = 1024;
/// A partition's progress is reported while this node shipped for it
/// this recently (a primary that lost its place stops reporting).
const REPORT_FRESH_MS: u64 = 5_000;
/// Bound on one batch's round trip to the remote cluster.
const SHIP_TIMEOUT: Duration = Duration::from_secs(10);

/// One partition's shipping work from its shard.
#[derive(Clone, Debug)]
pub struct ShipWork {
    pub order: DupOrder,
    pub committed: i64,
    pub cluster_id: u8,
    /// The shard's log segments that may hold the partition's mutations.
    pub segments: Vec<SegmentInfo>,
}

/// What the shipper knows of one duplicated partition it shipped for.
#[derive(Clone, Debug, Default)]
struct Progress {
    confirmed: i64,
    committed: i64,
    shipped_records: u64,
    shipped_bytes: u64,
    errors: u64,
    failed: bool,
    message: String,
    /// Since when (node clock) the confirmed decree is behind.
    behind_since_ms: Option<u64>,
    /// When this node last worked on it (node clock).
    seen_ms: u64,
    in_flight: bool,
}

type Key = (u64, Gpid);

/// The node's shipper: the shards' handle to it.
#[derive(Debug)]
pub struct DupShipper {
    work: tokio::sync::mpsc::Sender<ShipWork>,
    progress: Arc<Mutex<BTreeMap<Key, Progress>>>,
}

impl DupShipper {
    /// Starts the shipper's thread; it ends when the handle is dropped.
    pub fn start() -> std::io::Result<Arc<DupShipper>> {
        let (work, mut received) = tokio::sync::mpsc::channel::<ShipWork>(SHIP_QUEUE_MAX);
        let progress: Arc<Mutex<BTreeMap<Key, Progress>>> = Arc::default();
        let shared = progress.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("markab-dup-ship".into())
            .spawn(move || {
                let tables: Arc<Mutex<HashMap<(String, String), Table>>> = Arc::default();
                runtime.block_on(async move {
                    while let Some(work) = received.recv().await {
                        let key = (work.order.dup_id, work.order.gpid);
                        let take = {
                            let mut progress = shared.lock().unwrap();
                            let entry = progress.entry(key).or_insert_with(|| Progress {
                                confirmed: -1,
                                ..Progress::default()
                            });
                            entry.seen_ms = monotonic_ms();
                            entry.committed = work.committed;
                            !std::mem::replace(&mut entry.in_flight, true)
                        };
                        if take {
                            let (shared, tables) = (shared.clone(), tables.clone());
                            tokio::spawn(async move {
                                ship_once(&shared, &tables, work).await;
                                if let Some(entry) = shared.lock().unwrap().get_mut(&key) {
                                    entry.in_flight = false;
                                }
                            });
                        }
                    }
                });
            })?;
        Ok(Arc::new(DupShipper { work, progress }))
    }

    /// Hands one partition's work over (dropped when the queue is full:
    /// the shard hands it again next round).
    pub fn offer(&self, work: ShipWork) {
        let _ = self.work.try_send(work);
    }

    /// The confirmed decree this node's shipping reached for `dup_id` and
    /// `gpid` (-1: none).
    pub fn confirmed(&self, dup_id: u64, gpid: Gpid) -> i64 {
        self.progress
            .lock()
            .unwrap()
            .get(&(dup_id, gpid))
            .map_or(-1, |progress| progress.confirmed)
    }

    /// Marks a duplication of `gpid` failed with `message` (its log
    /// outgrew the retention bound); the next beacon tells meta.
    pub fn fail(&self, dup_id: u64, gpid: Gpid, message: String) {
        let mut progress = self.progress.lock().unwrap();
        let entry = progress.entry((dup_id, gpid)).or_insert_with(|| Progress {
            confirmed: -1,
            ..Progress::default()
        });
        entry.seen_ms = monotonic_ms();
        if !entry.failed {
            tracing::error!(dup_id, app_id = gpid.app_id, partition = gpid.partition_index, %message, "duplication failed");
        }
        entry.failed = true;
        entry.message = message;
    }

    /// The reports of the partitions this node shipped for lately, for
    /// the next beacon.
    pub fn reports(&self) -> Vec<DupReport> {
        let now_ms = monotonic_ms();
        self.progress
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, progress)| now_ms.saturating_sub(progress.seen_ms) <= REPORT_FRESH_MS)
            .map(|((dup_id, gpid), progress)| DupReport {
                dup_id: *dup_id,
                gpid: *gpid,
                confirmed_decree: progress.confirmed,
                committed_decree: progress.committed,
                lag_ms: progress
                    .behind_since_ms
                    .map_or(0, |since| now_ms.saturating_sub(since)),
                shipped_records: progress.shipped_records,
                shipped_bytes: progress.shipped_bytes,
                errors: progress.errors,
                failed: progress.failed,
                message: progress.message.clone(),
            })
            .collect()
    }
}

/// Ships the next batch of `work`'s partition, if any, and records the
/// outcome.
async fn ship_once(
    progress: &Mutex<BTreeMap<Key, Progress>>,
    tables: &Mutex<HashMap<(String, String), Table>>,
    work: ShipWork,
) {
    let key = (work.order.dup_id, work.order.gpid);
    let (confirmed, failed) = {
        let mut all = progress.lock().unwrap();
        let entry = all.get_mut(&key).expect("entered before the work");
        entry.confirmed = entry.confirmed.max(work.order.confirmed_decree);
        if entry.confirmed < 0 {
            // A new duplication: ship what commits from now on.
            entry.confirmed = work.committed;
        }
        if entry.confirmed >= work.committed {
            entry.behind_since_ms = None;
        } else if entry.behind_since_ms.is_none() {
            entry.behind_since_ms = Some(monotonic_ms());
        }
        (entry.confirmed, entry.failed)
    };
    if failed || work.order.status != DupStatus::Running || confirmed >= work.committed {
        return;
    }
    let gpid = work.order.gpid;
    let stream = (gpid.app_id, gpid.partition_index);
    let (from, committed) = (confirmed as u64, work.committed as u64);
    let segments = work.segments.clone();
    let read = tokio::task::spawn_blocking(move || {
        crate::server::shard::read_learned(
            &segments,
            stream,
            LearnedGather::new(from, committed, None, SHIP_BATCH_BYTES_MAX),
        )
    })
    .await;
    let mut mutations = match read {
        Ok(Ok(Some(mutations))) if !mutations.is_empty() => mutations,
        Ok(Ok(_)) => {
            let message = format!(
                "the log of partition {}.{} no longer holds decree {}, the next to ship: remove the duplication, restore the remote table from a backup of this one, and add it again",
                gpid.app_id,
                gpid.partition_index,
                confirmed + 1
            );
            record(progress, key, |entry| {
                entry.failed = true;
                entry.message = message;
            });
            return;
        }
        Ok(Err(error)) => {
            record(progress, key, |entry| {
                entry.errors += 1;
                entry.message = format!("reading the log: {error}");
            });
            return;
        }
        Err(error) => {
            record(progress, key, |entry| {
                entry.errors += 1;
                entry.message = format!("reading the log: {error}");
            });
            return;
        }
    };
    mutations.truncate(SHIP_BATCH_MUTATIONS_MAX);
    let last = mutations.last().map_or(confirmed, |m| m.decree as i64);
    let shipped: Vec<DupMutation> = mutations
        .into_iter()
        .filter(|mutation| should_ship(&mutation.payload).unwrap_or(false))
        .map(|mutation| DupMutation {
            decree: mutation.decree as i64,
            payload: mutation.payload,
        })
        .collect();
    let (records, bytes) = (
        shipped.len() as u64,
        shipped.iter().map(|m| m.payload.len() as u64).sum::<u64>(),
    );
    if !shipped.is_empty() {
        let sent = async {
            let table = remote_table(tables, &work.order).await?;
            table
                .duplicate(
                    gpid.partition_index as u32,
                    DuplicateRequest {
                        source_cluster_id: work.cluster_id,
                        dup_id: work.order.dup_id,
                        mutations: shipped,
                    },
                )
                .await
                .map_err(|error| format!("{error:#}"))
        };
        let outcome = match tokio::time::timeout(SHIP_TIMEOUT, sent).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {SHIP_TIMEOUT:?}")),
        };
        if let Err(error) = outcome {
            // A stale cached route or a remote that restarted: ask again.
            tables
                .lock()
                .unwrap()
                .remove(&(work.order.remote_metas.join(","), remote_name(&work.order)));
            record(progress, key, |entry| {
                entry.errors += 1;
                entry.message = format!("shipping to the remote cluster: {error}");
            });
            return;
        }
    }
    record(progress, key, |entry| {
        entry.confirmed = entry.confirmed.max(last);
        entry.shipped_records += records;
        entry.shipped_bytes += bytes;
        entry.message.clear();
        if entry.confirmed >= work.committed {
            entry.behind_since_ms = None;
        }
    });
}

fn record(progress: &Mutex<BTreeMap<Key, Progress>>, key: Key, change: impl FnOnce(&mut Progress)) {
    if let Some(entry) = progress.lock().unwrap().get_mut(&key) {
        change(entry);
    }
}

fn remote_name(order: &DupOrder) -> String {
    order.remote_table.clone()
}

/// The remote table of `order`, opened through the remote metas once and
/// kept.
async fn remote_table(
    tables: &Mutex<HashMap<(String, String), Table>>,
    order: &DupOrder,
) -> Result<Table, String> {
    let key = (order.remote_metas.join(","), remote_name(order));
    if let Some(table) = tables.lock().unwrap().get(&key) {
        return Ok(table.clone());
    }
    let client = Client::connect_meta(&order.remote_metas, ClientOptions::default())
        .await
        .map_err(|error| format!("the remote metas ({}): {error:#}", key.0))?;
    let table = client
        .open_table(&order.remote_table)
        .await
        .map_err(|error| format!("the remote table {:?}: {error:#}", order.remote_table))?;
    tables.lock().unwrap().insert(key, table.clone());
    Ok(table)
}
