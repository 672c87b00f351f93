//! A node's partition backups and restores (docs/backup.md, "On the
//! nodes"): the jobs meta ordered through beacon acks, run on a thread of
//! their own with its own tokio runtime — never on a shard's
//! executor — and reported in every beacon.
//!
//! Jobs run at most [`BACKUP_JOBS_CONCURRENT`] at a time.
//!
//! Backup: a shard that receives an order for a replica it holds as
//! primary hands over a [`Checkpointer`] ([`BackupJobs::submit`]); the job
//! checkpoints on the blocking pool, uploads under a prefix of its own
//! below the order's (**one-attempt-per-prefix**), paced by the node's
//! upload rate limit, and writes the partition's manifest last.
//!
//! Restore: the beacon thread submits each restore order
//! ([`BackupJobs::submit_restore`]); the job downloads the checkpoint into
//! the replica's directory (checked file by file against its manifest, and
//! its decree against the order's), records the checkpoint's decree as the
//! replica's log floor, and waits for the order's shard, which hosts the
//! replica at its next ack ([`BackupJobs::take_installed`]); only then is
//! the job done (**restore-before-serve**).
//!
//! The beacon thread passes every ack's orders to
//! [`BackupJobs::keep_ordered`]: a job meta no longer orders (its backup
//! finished or failed, the primary moved, the restore was cancelled) is
//! cancelled if it still runs and forgotten; a restored checkpoint no
//! shard hosted yet is deleted with it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use markab_blocks::{BlockStore, StoreOptions};
use markab_wire::message::{BackupJobState, BackupOrder, BackupReport, Gpid, RestoreOrder};
use tokio::sync::mpsc;

use super::{back_up_partition, restore_partition, BackupError, BackupProgress};
use crate::server::shard::{persist_log_floor, replica_dir};
use crate::storage::Checkpointer;

/// Jobs waiting for the worker; more are refused (meta orders them again
/// with the next ack).
pub const BACKUP_JOBS_QUEUED_MAX: usize = 1_024;
/// Jobs a node runs at once: two, so that one partition's checkpoint
/// overlaps another's upload; the uploads share the node's rate limit.
pub const BACKUP_JOBS_CONCURRENT: usize = 2;
/// Block stores the worker keeps open, by URL.
const STORES_MAX: usize = 16;
/// The file a hosted replica's directory always has (the host writes it).
const REPLICA_META_FILE: &str = "replica.toml";

/// A job's identity: restore or backup, backup id, partition.
type JobKey = (bool, u64, Gpid);

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// A restore's checkpoint is in the replica's directory; its shard has
    /// not hosted it yet.
    Installed,
    Done,
    Failed,
}

/// One job, as the node reports it.
struct Job {
    ballot: i64,
    phase: Phase,
    prefix: String,
    message: String,
    progress: Arc<BackupProgress>,
    /// While it runs.
    abort: Option<tokio::task::AbortHandle>,
    /// A restore's order.
    restore: Option<RestoreOrder>,
}

enum Work {
    Backup {
        order: BackupOrder,
        prefix: String,
        checkpointer: Checkpointer,
    },
    Restore {
        order: RestoreOrder,
    },
}

struct Submission {
    key: JobKey,
    url: String,
    work: Work,
    progress: Arc<BackupProgress>,
}

/// The node's backup and restore jobs, shared by its shards (which submit
/// backups and host restored replicas), its beacon thread (which submits
/// restores, reports and prunes) and the worker thread.
pub struct BackupJobs {
    jobs: Mutex<BTreeMap<JobKey, Job>>,
    queue: mpsc::Sender<Submission>,
    data_dir: PathBuf,
    /// `<data_dir>/backup-scratch`: checkpoints before upload (on the
    /// replicas' file system, for RocksDB's hard links).
    scratch: PathBuf,
    node: String,
    metrics: Option<Arc<crate::metrics::NodeMetrics>>,
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

impl BackupJobs {
    /// Starts the worker thread. `upload_bytes_per_second` (0: unlimited)
    /// paces every upload of the node: the worker keeps one store per URL,
    /// whose uploads share the pace.
    pub fn start(
        data_dir: PathBuf,
        node: String,
        upload_bytes_per_second: u64,
        metrics: Option<Arc<crate::metrics::NodeMetrics>>,
    ) -> std::io::Result<Arc<BackupJobs>> {
        let (queue, receiver) = mpsc::channel(BACKUP_JOBS_QUEUED_MAX);
        let jobs = Arc::new(BackupJobs {
            jobs: Mutex::new(BTreeMap::new()),
            queue,
            scratch: data_dir.join("backup-scratch"),
            data_dir,
            node,
            metrics,
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

    /// Takes on backup `order` with the replica's `checkpointer`, unless the
    /// node already runs or ran it.
    pub fn submit(&self, order: &BackupOrder, checkpointer: Checkpointer) {
        let prefix = format!(
            "{}/b{}-{}",
            order.prefix,
            order.ballot,
            attempt_name(&self.node)
        );
        self.enqueue(
            (false, order.backup_id, order.gpid),
            order.ballot,
            prefix.clone(),
            order.url.clone(),
            None,
            |progress| Submission {
                key: (false, order.backup_id, order.gpid),
                url: order.url.clone(),
                work: Work::Backup {
                    order: order.clone(),
                    prefix,
                    checkpointer,
                },
                progress,
            },
        );
    }

    /// Takes on restore `order`, unless the node already runs or ran it.
    pub fn submit_restore(&self, order: &RestoreOrder) {
        let key = (true, order.backup_id, order.gpid);
        self.enqueue(
            key,
            0,
            order.prefix.clone(),
            order.url.clone(),
            Some(order.clone()),
            |progress| Submission {
                key,
                url: order.url.clone(),
                work: Work::Restore {
                    order: order.clone(),
                },
                progress,
            },
        );
    }

    fn enqueue(
        &self,
        key: JobKey,
        ballot: i64,
        prefix: String,
        url: String,
        restore: Option<RestoreOrder>,
        submission: impl FnOnce(Arc<BackupProgress>) -> Submission,
    ) {
        let mut jobs = self.jobs.lock().expect("backup jobs lock");
        if jobs.contains_key(&key) {
            return;
        }
        let progress = Arc::new(BackupProgress::default());
        if self.queue.try_send(submission(progress.clone())).is_err() {
            tracing::warn!(backup_id = key.1, %url, "the backup queue is full or stopped; meta orders the job again");
            return;
        }
        jobs.insert(
            key,
            Job {
                ballot,
                phase: Phase::Running,
                prefix,
                message: String::new(),
                progress,
                abort: None,
                restore,
            },
        );
    }

    /// Keeps the jobs meta still orders; cancels and forgets the others,
    /// deleting a restored checkpoint no shard hosted.
    pub fn keep_ordered(&self, backups: &[BackupOrder], restores: &[RestoreOrder]) {
        let ordered: BTreeSet<JobKey> = backups
            .iter()
            .map(|order| (false, order.backup_id, order.gpid))
            .chain(
                restores
                    .iter()
                    .map(|order| (true, order.backup_id, order.gpid)),
            )
            .collect();
        let mut jobs = self.jobs.lock().expect("backup jobs lock");
        jobs.retain(|key, job| {
            if ordered.contains(key) {
                return true;
            }
            if let Some(abort) = job.abort.take() {
                tracing::info!(
                    backup_id = key.1,
                    partition = format!("{}.{}", key.2.app_id, key.2.partition_index),
                    restore = key.0,
                    "job no longer ordered; cancelled"
                );
                abort.abort();
            }
            if key.0 && job.phase != Phase::Done {
                remove_unhosted(&replica_dir(&self.data_dir, key.2));
            }
            false
        });
    }

    /// The restored replicas waiting for shard `shard` of `shards` to host
    /// them (an order naming a shard the node lacks goes to shard 0); they
    /// are then the shard's, and [`BackupJobs::hosted`] says how hosting
    /// went.
    pub fn take_installed(&self, shard: usize, shards: usize) -> Vec<RestoreOrder> {
        let mut jobs = self.jobs.lock().expect("backup jobs lock");
        let mut taken = Vec::new();
        for job in jobs.values_mut() {
            let Some(order) = job.restore.as_ref() else {
                continue;
            };
            let wanted = usize::try_from(order.shard)
                .ok()
                .filter(|wanted| *wanted < shards)
                .unwrap_or(0);
            if job.phase == Phase::Installed && wanted == shard {
                // Reported as running until hosted.
                job.phase = Phase::Running;
                taken.push(order.clone());
            }
        }
        taken
    }

    /// How hosting a restored replica went.
    pub fn hosted(&self, order: &RestoreOrder, outcome: Result<(), String>) {
        self.finished(
            (true, order.backup_id, order.gpid),
            outcome.map(|()| Phase::Done),
        );
    }

    /// Every job's report, for the next beacon.
    pub fn reports(&self) -> Vec<BackupReport> {
        let jobs = self.jobs.lock().expect("backup jobs lock");
        jobs.iter()
            .map(|((restore, backup_id, gpid), job)| BackupReport {
                backup_id: *backup_id,
                gpid: *gpid,
                ballot: job.ballot,
                state: match job.phase {
                    Phase::Running | Phase::Installed => BackupJobState::Running,
                    Phase::Done => BackupJobState::Done,
                    Phase::Failed => BackupJobState::Failed,
                },
                decree: job.progress.decree.load(Ordering::Relaxed),
                bytes_done: job.progress.bytes_done.load(Ordering::Relaxed),
                bytes_total: job.progress.bytes_total.load(Ordering::Relaxed),
                prefix: job.prefix.clone(),
                message: job.message.clone(),
                restore: *restore,
            })
            .collect()
    }

    /// Records a job's start (its abort handle); one forgotten meanwhile
    /// is aborted at once (it then ends as cancelled).
    fn started(&self, key: JobKey, abort: tokio::task::AbortHandle) {
        let mut jobs = self.jobs.lock().expect("backup jobs lock");
        match jobs.get_mut(&key) {
            Some(job) => job.abort = Some(abort),
            None => abort.abort(),
        }
    }

    fn finished(&self, key: JobKey, outcome: Result<Phase, String>) {
        let mut jobs = self.jobs.lock().expect("backup jobs lock");
        let Some(job) = jobs.get_mut(&key) else {
            if key.0 && outcome == Ok(Phase::Installed) {
                // Cancelled while it downloaded.
                remove_unhosted(&replica_dir(&self.data_dir, key.2));
            }
            return;
        };
        job.abort = None;
        let bytes = job.progress.bytes_done.load(Ordering::Relaxed);
        match outcome {
            Ok(phase) => job.phase = phase,
            Err(message) => {
                job.phase = Phase::Failed;
                job.message = message;
            }
        }
        let finished = matches!(job.phase, Phase::Done | Phase::Failed);
        if let Some(metrics) = self.metrics.as_ref().filter(|_| finished) {
            metrics.observe_backup_job(key.0, job.phase == Phase::Done, bytes);
        }
    }
}

/// Deletes a replica directory no shard hosts (one without the replica's
/// metadata file, which hosting writes).
fn remove_unhosted(dir: &Path) {
    if dir.exists() && !dir.join(REPLICA_META_FILE).exists() {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {
                tracing::info!(path = %dir.display(), "removed a restored checkpoint no longer wanted")
            }
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "cannot remove a restored checkpoint")
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

/// Restores `order` into the replica's directory under `data_dir`: a
/// replica already hosted there (a node that restarted after hosting it)
/// counts as installed; anything else there is a leftover and goes first.
async fn restore(
    store: &dyn BlockStore,
    data_dir: &Path,
    order: &RestoreOrder,
    progress: &BackupProgress,
) -> Result<(), BackupError> {
    let dir = replica_dir(data_dir, order.gpid);
    if dir.join(REPLICA_META_FILE).exists() {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|error| BackupError::Io {
            what: format!("removing the leftover {}", dir.display()),
            error,
        })?;
    }
    let manifest = restore_partition(store, &order.prefix, &dir.join("rdb"), progress).await?;
    if manifest.decree != order.decree {
        remove_unhosted(&dir);
        return Err(BackupError::BadManifest {
            prefix: order.prefix.clone(),
            reason: format!(
                "its checkpoint holds decree {}, the backup's manifest says {}",
                manifest.decree, order.decree
            ),
        });
    }
    persist_log_floor(&dir, order.decree.max(0) as u64).map_err(|error| BackupError::Io {
        what: format!("recording the log floor in {}", dir.display()),
        error,
    })?;
    Ok(())
}

/// The worker: at most [`BACKUP_JOBS_CONCURRENT`] jobs at a time, until the
/// node's [`BackupJobs`] is gone.
async fn work(
    jobs: std::sync::Weak<BackupJobs>,
    mut receiver: mpsc::Receiver<Submission>,
    upload_bytes_per_second: u64,
) {
    let mut stores: HashMap<String, Arc<dyn BlockStore>> = HashMap::new();
    let mut running: tokio::task::JoinSet<Result<Phase, BackupError>> = tokio::task::JoinSet::new();
    let mut keys: HashMap<tokio::task::Id, JobKey> = HashMap::new();
    loop {
        tokio::select! {
            submission = receiver.recv(), if running.len() < BACKUP_JOBS_CONCURRENT => {
                let Some(submission) = submission else {
                    return;
                };
                let Some(owner) = jobs.upgrade() else {
                    return;
                };
                let key = submission.key;
                let store = match stores.get(&submission.url) {
                    Some(store) => Ok(store.clone()),
                    None => crate::backup::open_store(
                        &submission.url,
                        StoreOptions {
                            upload_bytes_per_second,
                            ..StoreOptions::default()
                        },
                    )
                    .inspect(|store| {
                        if stores.len() >= STORES_MAX {
                            stores.clear();
                        }
                        stores.insert(submission.url.clone(), store.clone());
                    }),
                };
                match store {
                    Ok(store) => {
                        let task = start_job(&mut running, &owner, store, submission);
                        keys.insert(task.id(), key);
                        owner.started(key, task);
                    }
                    Err(error) => owner.finished(key, Err(error.to_string())),
                }
            }
            Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                let (id, outcome) = match joined {
                    Ok((id, Ok(phase))) => (id, Ok(phase)),
                    Ok((id, Err(error))) => (id, Err(error.to_string())),
                    Err(join) if join.is_cancelled() => {
                        if let (Some(key), Some(owner)) = (keys.remove(&join.id()), jobs.upgrade()) {
                            if key.0 {
                                remove_unhosted(&replica_dir(&owner.data_dir, key.2));
                            }
                        }
                        continue;
                    }
                    Err(join) => (join.id(), Err(format!("the job panicked: {join}"))),
                };
                let Some(key) = keys.remove(&id) else { continue };
                if let Err(error) = &outcome {
                    tracing::warn!(backup_id = key.1, restore = key.0, %error, "partition job failed");
                }
                if let Some(owner) = jobs.upgrade() {
                    owner.finished(key, outcome);
                }
            }
        }
    }
}

/// Spawns one job into `running`; its abort handle.
fn start_job(
    running: &mut tokio::task::JoinSet<Result<Phase, BackupError>>,
    owner: &BackupJobs,
    store: Arc<dyn BlockStore>,
    submission: Submission,
) -> tokio::task::AbortHandle {
    let scratch = owner.scratch.clone();
    let data_dir = owner.data_dir.clone();
    let progress = submission.progress;
    match submission.work {
        Work::Backup {
            order,
            prefix,
            checkpointer,
        } => running.spawn(async move {
            let manifest = back_up_partition(
                checkpointer,
                store.as_ref(),
                &prefix,
                &scratch,
                order.gpid.app_id,
                order.gpid.partition_index,
                &progress,
            )
            .await?;
            tracing::info!(
                backup_id = order.backup_id,
                partition = format!("{}.{}", order.gpid.app_id, order.gpid.partition_index),
                decree = manifest.decree,
                bytes = manifest.bytes(),
                "partition backed up"
            );
            Ok(Phase::Done)
        }),
        Work::Restore { order } => running.spawn(async move {
            restore(store.as_ref(), &data_dir, &order, &progress).await?;
            tracing::info!(
                backup_id = order.backup_id,
                partition = format!("{}.{}", order.gpid.app_id, order.gpid.partition_index),
                decree = order.decree,
                "partition restored; its shard hosts it next"
            );
            Ok(Phase::Installed)
        }),
    }
}
