//! Shipping of duplicated tables (docs/duplication.md, "Shipping"): the
//! node's IO around the sans-IO rules of `markab_core::host::dup`. Each
//! shard hands this node's shipper, every [`SHIP_INTERVAL`], what its
//! primaries of duplicated partitions must ship — the order, the committed
//! decree and a snapshot of the shard's log segments — and the shipper,
//! a thread of its own with a tokio runtime (off every shard's executor),
//! asks [`DupShipping`] for a plan, reads the committed mutations it names
//! from the log files on the blocking pool, and sends the batch to the
//! same partition of the remote table through the remote cluster's metas
//! (`Table::duplicate`), one batch in flight per partition, so the remote
//! applies them in decree order. Each acknowledged batch advances the
//! partition's confirmed decree, which the node reports to meta in its
//! beacons; meta persists it and sends it back in its orders, so a new
//! primary resumes from it. Shipping again from an older confirmed decree
//! is harmless: last-write-wins applies an equal timetag to no effect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use markab_core::host::dup::{DupShipping, ShipBatch, ShipPlan, SHIP_TIMEOUT_MS};
use markab_shards::log::SegmentInfo;
use markab_wire::{DupOrder, DupReport, Gpid};

use crate::client::{Client, ClientOptions, Table};
use crate::clock::monotonic_ms;

/// How often each shard hands its shipping work over.
pub const SHIP_INTERVAL: Duration = Duration::from_millis(100);
/// Work items queued for the shipper at most; a shard's items that do not
/// fit wait for its next round.
const SHIP_QUEUE_MAX: usize = 1024;

/// One partition's shipping work from its shard.
#[derive(Clone, Debug)]
pub struct ShipWork {
    pub order: DupOrder,
    pub committed: i64,
    pub cluster_id: u8,
    /// The shard's log segments that may hold the partition's mutations.
    pub segments: Vec<SegmentInfo>,
}

/// Remote tables by (remote metas, remote table name), opened once.
type Tables = Mutex<HashMap<(String, String), Table>>;

/// The node's shipper: the shards' handle to it.
#[derive(Debug)]
pub struct DupShipper {
    work: tokio::sync::mpsc::Sender<ShipWork>,
    shipping: Arc<Mutex<DupShipping>>,
}

impl DupShipper {
    /// Starts the shipper's thread; it ends when the handle is dropped.
    pub fn start() -> std::io::Result<Arc<DupShipper>> {
        let (work, mut received) = tokio::sync::mpsc::channel::<ShipWork>(SHIP_QUEUE_MAX);
        let shipping: Arc<Mutex<DupShipping>> = Arc::default();
        let shared = shipping.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("markab-dup-ship".into())
            .spawn(move || {
                let tables: Arc<Tables> = Arc::default();
                runtime.block_on(async move {
                    while let Some(work) = received.recv().await {
                        let plan = shared.lock().unwrap().plan(
                            &work.order,
                            work.committed,
                            monotonic_ms(),
                        );
                        if let Some(plan) = plan {
                            let (shared, tables) = (shared.clone(), tables.clone());
                            tokio::spawn(async move {
                                ship(&shared, &tables, plan, work).await;
                            });
                        }
                    }
                });
            })?;
        Ok(Arc::new(DupShipper { work, shipping }))
    }

    /// Hands one partition's work over (dropped when the queue is full:
    /// the shard hands it again next round).
    pub fn offer(&self, work: ShipWork) {
        let _ = self.work.try_send(work);
    }

    /// The confirmed decree this node's shipping reached for `dup_id` and
    /// `gpid` (-1: none).
    pub fn confirmed(&self, dup_id: u64, gpid: Gpid) -> i64 {
        self.shipping.lock().unwrap().confirmed(dup_id, gpid)
    }

    /// The decree above which every member keeps `order`'s partition's
    /// log (`None`: failed here, it pins nothing more).
    pub fn log_retained_from(&self, order: &DupOrder) -> Option<u64> {
        self.shipping.lock().unwrap().log_retained_from(order)
    }

    /// Marks a duplication of `gpid` failed with `message` (its log
    /// outgrew the retention bound); the next beacon tells meta.
    pub fn fail(&self, dup_id: u64, gpid: Gpid, message: String) {
        let mut shipping = self.shipping.lock().unwrap();
        if !shipping.is_failed(dup_id, gpid) {
            tracing::error!(dup_id, app_id = gpid.app_id, partition = gpid.partition_index, %message, "duplication failed");
        }
        shipping.fail(dup_id, gpid, message, monotonic_ms());
    }

    /// The reports of the partitions this node shipped for lately, for
    /// the next beacon.
    pub fn reports(&self) -> Vec<DupReport> {
        self.shipping.lock().unwrap().reports(monotonic_ms())
    }
}

/// Reads and sends `plan`'s batch, and records the outcome.
async fn ship(shipping: &Mutex<DupShipping>, tables: &Tables, plan: ShipPlan, work: ShipWork) {
    let gpid = plan.order.gpid;
    let stream = (gpid.app_id, gpid.partition_index);
    let gather = plan.gather();
    let segments = work.segments;
    let read = tokio::task::spawn_blocking(move || {
        crate::server::shard::read_learned(&segments, stream, gather)
    })
    .await
    .unwrap_or_else(|error| Err(error.to_string()));
    let Some(batch) = shipping
        .lock()
        .unwrap()
        .batch(&plan, read, work.cluster_id, monotonic_ms())
    else {
        return;
    };
    let timeout = Duration::from_millis(SHIP_TIMEOUT_MS);
    let outcome = match tokio::time::timeout(timeout, send(tables, &plan.order, &batch)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    };
    let mut shipping = shipping.lock().unwrap();
    match outcome {
        Ok(()) => shipping.acked(&batch, monotonic_ms()),
        Err(error) => {
            // A stale cached route or a remote that restarted: ask again.
            tables.lock().unwrap().remove(&table_key(&plan.order));
            shipping.refused(&batch, error, monotonic_ms());
        }
    }
}

async fn send(tables: &Tables, order: &DupOrder, batch: &ShipBatch) -> Result<(), String> {
    let table = remote_table(tables, order).await?;
    table
        .duplicate(order.gpid.partition_index as u32, batch.request.clone())
        .await
        .map(|_| ())
        .map_err(|error| format!("{error:#}"))
}

fn table_key(order: &DupOrder) -> (String, String) {
    (order.remote_metas.join(","), order.remote_table.clone())
}

/// The remote table of `order`, opened through the remote metas once and
/// kept.
async fn remote_table(tables: &Tables, order: &DupOrder) -> Result<Table, String> {
    let key = table_key(order);
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
