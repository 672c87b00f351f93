//! A node's partition backups (docs/backup.md, "On the nodes"): the jobs
//! meta ordered through beacon acks, run one at a time on a thread of their
//! own with its own tokio runtime — never on a shard's executor — and
//! reported in every beacon.
//!
//! A shard that receives an order for a replica it holds as primary hands
//! over a [`Checkpointer`] ([`BackupJobs::submit`]); the job checkpoints on
//! the blocking pool, uploads under a prefix of its own below the order's
//! (**one-attempt-per-prefix**), paced by the node's upload rate limit, and
//! writes the partition's manifest last. The beacon thread passes every
//! ack's orders to [`BackupJobs::keep_ordered`]: a job meta no longer
//! orders (its backup finished or failed, or the primary moved) is
//! cancelled if it still runs and forgotten.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use markab_blocks::{BlockStore, StoreOptions};
use markab_wire::message::{BackupJobState, BackupOrder, BackupReport, Gpid};
use tokio::sync::mpsc;

use super::{back_up_partition, BackupProgress};
use crate::storage::Checkpointer;

/// Jobs waiting for the worker; more are refused (meta orders them again
/// with the next ack).
pub const BACKUP_JOBS_QUEUED_MAX: usize = 1_024;
/// Block stores the worker keeps open, by URL.
const STORES_MAX: usize = 16;

/// One job, as the node reports it.
struct Job {
    ballot: i64,
    state: BackupJobState,
    prefix: String,
    message: String,
    progress: Arc<BackupProgress>,
    /// While it runs.
    abort: Option<tokio::task::AbortHandle>,
}

struct Submission {
    order: BackupOrder,
    prefix: String,
    checkpointer: Checkpointer,
    progress: Arc<BackupProgress>,
}

impl std::fmt::Debug for BackupJobs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let jobs = self.jobs.lock().map(|jobs| jobs.len()).unwrap_or(0);
        formatter
            .debug_struct("BackupJobs")
            .field("node", &self.node)
            .field("jobs", &jobs)
            .finish()
    }
}

/// The node's backup jobs, shared by its shards (which submit them), its
/// beacon thread (which reports and prunes them) and the worker thread.
pub struct BackupJobs {
    jobs: Mutex<BTreeMap<(u64, Gpid), Job>>,
    queue: mpsc::Sender<Submission>,
    /// `<data_dir>/backup-scratch`: checkpoints before upload (on the
    /// replicas' file system, for RocksDB's hard links).
    scratch: PathBuf,
    node: String,
}

impl BackupJobs {
    /// Starts the worker thread. `upload_bytes_per_second` (0: unlimited)
    /// paces every upload of the node: the worker runs one job at a time
    /// and keeps one store per URL.
    pub fn start(
        data_dir: PathBuf,
        node: String,
        upload_bytes_per_second: u64,
    ) -> std::io::Result<Arc<BackupJobs>> {
        let (queue, receiver) = mpsc::channel(BACKUP_JOBS_QUEUED_MAX);
        let jobs = Arc::new(BackupJobs {
            jobs: Mutex::new(BTreeMap::new()),
            queue,
            scratch: data_dir.join("backup-scratch"),
            node,
        });
        // Checkpoints left by a node that died mid-backup.
        if jobs.scratch.exists() {
            if let Err(error) = std::fs::remove_dir_all(&jobs.scratch) {
                tracing::warn!(path = %jobs.scratch.display(), %error, "cannot remove old backup checkpoints");
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(2)
            .build()?;
        let worker = Arc::downgrade(&jobs);
        std::thread::Builder::new()
            .name("markab-backup".into())
            .spawn(move || runtime.block_on(work(worker, receiver, upload_bytes_per_second)))?;
        Ok(jobs)
    }

    /// Takes on `order` with the replica's `checkpointer`, unless the node
    /// already runs or ran it.
    pub fn submit(&self, order: &BackupOrder, checkpointer: Checkpointer) {
        let key = (order.backup_id, order.gpid);
        let mut jobs = self.jobs.lock().expect("backup jobs lock");
        if jobs.contains_key(&key) {
            return;
        }
        let prefix = format!(
            "{}/b{}-{}",
            order.prefix,
            order.ballot,
            attempt_name(&self.node)
        );
        let progress = Arc::new(BackupProgress::default());
        let submission = Submission {
            order: order.clone(),
            prefix: prefix.clone(),
            checkpointer,
            progress: progress.clone(),
        };
        if self.queue.try_send(submission).is_err() {
            tracing::warn!(
                backup_id = order.backup_id,
                "the backup queue is full or stopped; meta orders the job again"
            );
            return;
        }
        jobs.insert(
            key,
            Job {
                ballot: order.ballot,
                state: BackupJobState::Running,
                prefix,
                message: String::new(),
                progress,
                abort: None,
            },
        );
    }

    /// Keeps the jobs meta still orders; cancels and forgets the others.
    pub fn keep_ordered(&self, orders: &[BackupOrder]) {
        let ordered: std::collections::BTreeSet<(u64, Gpid)> = orders
            .iter()
            .map(|order| (order.backup_id, order.gpid))
            .collect();
        let mut jobs = self.jobs.lock().expect("backup jobs lock");
        jobs.retain(|key, job| {
            let keep = ordered.contains(key);
            if !keep {
                if let Some(abort) = job.abort.take() {
                    tracing::info!(
                        backup_id = key.0,
                        partition = format!("{}.{}", key.1.app_id, key.1.partition_index),
                        "backup job no longer ordered; cancelled"
                    );
                    abort.abort();
                }
            }
            keep
        });
    }

    /// Every job's report, for the next beacon.
    pub fn reports(&self) -> Vec<BackupReport> {
        let jobs = self.jobs.lock().expect("backup jobs lock");
        jobs.iter()
            .map(|((backup_id, gpid), job)| BackupReport {
                backup_id: *backup_id,
                gpid: *gpid,
                ballot: job.ballot,
                state: job.state,
                decree: job.progress.decree.load(Ordering::Relaxed),
                bytes_done: job.progress.bytes_done.load(Ordering::Relaxed),
                bytes_total: job.progress.bytes_total.load(Ordering::Relaxed),
                prefix: job.prefix.clone(),
                message: job.message.clone(),
            })
            .collect()
    }

    /// Records a job's start (its abort handle) unless it was forgotten
    /// meanwhile; returns whether it should run.
    fn started(&self, key: (u64, Gpid), abort: tokio::task::AbortHandle) -> bool {
        let mut jobs = self.jobs.lock().expect("backup jobs lock");
        match jobs.get_mut(&key) {
            Some(job) => {
                job.abort = Some(abort);
                true
            }
            None => false,
        }
    }

    fn finished(&self, key: (u64, Gpid), outcome: Result<i64, String>) {
        let mut jobs = self.jobs.lock().expect("backup jobs lock");
        let Some(job) = jobs.get_mut(&key) else {
            return;
        };
        job.abort = None;
        match outcome {
            Ok(decree) => {
                job.state = BackupJobState::Done;
                job.progress.decree.store(decree, Ordering::Relaxed);
            }
            Err(message) => {
                job.state = BackupJobState::Failed;
                job.message = message;
            }
        }
    }
}

/// A key segment naming this node's attempt: its address with `:` made `-`.
fn attempt_name(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The worker: one job at a time, until the node's [`BackupJobs`] is gone.
async fn work(
    jobs: std::sync::Weak<BackupJobs>,
    mut receiver: mpsc::Receiver<Submission>,
    upload_bytes_per_second: u64,
) {
    let mut stores: HashMap<String, Arc<dyn BlockStore>> = HashMap::new();
    while let Some(submission) = receiver.recv().await {
        let Some(owner) = jobs.upgrade() else {
            return;
        };
        let key = (submission.order.backup_id, submission.order.gpid);
        let store = match stores.get(&submission.order.url) {
            Some(store) => Ok(store.clone()),
            None => markab_blocks::open(
                &submission.order.url,
                StoreOptions {
                    upload_bytes_per_second,
                    ..StoreOptions::default()
                },
            )
            .inspect(|store| {
                if stores.len() >= STORES_MAX {
                    stores.clear();
                }
                stores.insert(submission.order.url.clone(), store.clone());
            }),
        };
        let store = match store {
            Ok(store) => store,
            Err(error) => {
                owner.finished(key, Err(error.to_string()));
                continue;
            }
        };
        let scratch = owner.scratch.clone();
        let Submission {
            order,
            prefix,
            checkpointer,
            progress,
        } = submission;
        let task = tokio::spawn(async move {
            back_up_partition(
                checkpointer,
                store.as_ref(),
                &prefix,
                &scratch,
                order.gpid.app_id,
                order.gpid.partition_index,
                &progress,
            )
            .await
        });
        if !owner.started(key, task.abort_handle()) {
            task.abort();
        }
        // The worker holds only a weak reference while a job runs.
        drop(owner);
        let outcome = match task.await {
            Ok(Ok(manifest)) => {
                tracing::info!(
                    backup_id = key.0,
                    partition = format!("{}.{}", key.1.app_id, key.1.partition_index),
                    decree = manifest.decree,
                    bytes = manifest.bytes(),
                    "partition backed up"
                );
                Ok(manifest.decree)
            }
            Ok(Err(error)) => {
                tracing::warn!(backup_id = key.0, %error, "partition backup failed");
                Err(error.to_string())
            }
            Err(join) if join.is_cancelled() => continue,
            Err(join) => Err(format!("the backup job panicked: {join}")),
        };
        if let Some(owner) = jobs.upgrade() {
            owner.finished(key, outcome);
        }
    }
}
