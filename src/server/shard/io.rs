//! The node's side of the replica host ([`markab_core::host`]): its
//! [`HostIo`] over glommio — the shard's mutation log, peer links, RocksDB,
//! the replica's files, the meta-request queue, and the wakers of the
//! shard's pumps.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use futures::channel::oneshot;
use markab_core::host::split::{SplitCopy, SplitCopyState};
use markab_core::host::{AppendError, HostIo, OpenedReplica, ReplicaMeta};
use markab_shards::log::{LogError, LogPosition, MutationLog, RecordHeader};
use markab_wire::{ErrorCode, Gpid, OpError, PeerRequest, Request, Response};

use super::NodeLayout;
use crate::replication::messages::{Ballot, Decree};
use crate::server::peer::PeerLinks;
use crate::storage::{RocksEngine, ShardStorage};

/// Marker file in a replica directory while a copy is being installed: a
/// replica found with it on open holds a partial copy and starts empty.
pub const COPY_MARKER_FILE: &str = "copy-in-progress";
/// The last ballot the replica accepted (decimal), in its directory. A
/// restarted replica starts at least there, so it never takes part again
/// in a ballot it may have acted under before the restart
/// (**ballot-monotonic** across restarts).
pub const BALLOT_FILE: &str = "ballot";
/// The decree of the last copy the replica installed (decimal), in its
/// directory: its log holds no authoritative record at or below it
/// (**log-floor**).
pub const LOG_FLOOR_FILE: &str = "log-floor";
const REPLICA_META_FILE: &str = "replica.toml";

/// The directory of replica `gpid`: `<data_dir>/replicas/<app_id>.<partition>`.
pub fn replica_dir(data_dir: &Path, gpid: Gpid) -> PathBuf {
    data_dir
        .join("replicas")
        .join(format!("{}.{}", gpid.app_id, gpid.partition_index))
}

/// Where replicas whose data was found damaged are moved:
/// `<data_dir>/damaged/<app_id>.<partition>-<unix ms>` (kept for the
/// operator; nothing reads them again).
pub const DAMAGED_DIR: &str = "damaged";

/// Where a dropped replica's directory goes, once its storage is closed,
/// to be deleted: `<data_dir>/dropping/shard-<n>/<app_id>.<partition>-<unix ms>`.
/// A shard empties its own at start (a deletion a crash cut short).
pub const DROPPING_DIR: &str = "dropping";

/// Shard `shard`'s part of [`DROPPING_DIR`].
pub fn dropping_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(DROPPING_DIR).join(format!("shard-{shard}"))
}

/// Moves replica `gpid`'s directory into `into` as
/// `<app_id>.<partition>-<unix ms>`, fsyncing both parents, and returns
/// where it went.
fn move_replica_dir(data_dir: &Path, gpid: Gpid, into: &Path) -> std::io::Result<PathBuf> {
    let to = into.join(format!(
        "{}.{}-{}",
        gpid.app_id,
        gpid.partition_index,
        crate::clock::unix_ms()
    ));
    std::fs::create_dir_all(into)?;
    std::fs::rename(replica_dir(data_dir, gpid), &to)?;
    std::fs::File::open(data_dir.join("replicas"))?.sync_all()?;
    std::fs::File::open(into)?.sync_all()?;
    Ok(to)
}

/// Closes a dropped replica's storage, moves its directory into `parking`
/// and deletes it there. Runs off the shard thread.
fn delete_replica(
    engine: RocksEngine,
    data_dir: &Path,
    gpid: Gpid,
    parking: &Path,
) -> Result<(), String> {
    // Closing flushes what RocksDB holds in memory (its WAL is off) and
    // waits for its flushes and compactions to end.
    drop(engine);
    let parked = move_replica_dir(data_dir, gpid, parking).map_err(|error| {
        format!(
            "cannot move {} into {}: {error}",
            replica_dir(data_dir, gpid).display(),
            parking.display()
        )
    })?;
    std::fs::remove_dir_all(&parked)
        .map_err(|error| format!("cannot delete {}: {error}", parked.display()))
}

pub(super) fn storage_error(message: String) -> OpError {
    OpError::new(ErrorCode::StorageError, message)
}

/// Every replica directory under `data_dir` with its metadata.
pub(super) fn replicas_on_disk(data_dir: &Path) -> Result<Vec<ReplicaMeta>, OpError> {
    let root = data_dir.join("replicas");
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(storage_error(format!(
                "cannot list {}: {error}",
                root.display()
            )))
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| storage_error(format!("cannot list {}: {error}", root.display())))?
            .path()
            .join(REPLICA_META_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // A directory without metadata was never completely created.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(storage_error(format!(
                    "cannot read {}: {error}",
                    path.display()
                )))
            }
        };
        let meta: ReplicaMeta = toml::from_str(&text)
            .map_err(|error| storage_error(format!("{}: {error}", path.display())))?;
        found.push(meta);
    }
    found.sort_by_key(|meta| (meta.app_id, meta.partition_index));
    Ok(found)
}

/// Writes `meta` as the replica's metadata file in `dir` (created if
/// needed): written then renamed, so a crash never leaves half of one.
fn write_replica_meta(dir: &Path, meta: &ReplicaMeta) -> Result<(), OpError> {
    let meta_path = dir.join(REPLICA_META_FILE);
    std::fs::create_dir_all(dir)
        .map_err(|error| storage_error(format!("cannot create {}: {error}", dir.display())))?;
    let text = toml::to_string(meta).expect("replica metadata serializes");
    let temporary = dir.join("replica.toml.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &meta_path))
        .map_err(|error| storage_error(format!("cannot write {}: {error}", meta_path.display())))
}

/// Deletes a staged split copy on a thread of its own (a checkpoint's
/// hard links: quick, but never on the shard).
fn remove_staged(dir: PathBuf) {
    std::thread::spawn(move || {
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %dir.display(), %error, "cannot delete a split copy");
            }
        }
    });
}

/// Durably records `decree` as the log floor of the replica in `dir`: its
/// log holds no authoritative record at or below it (a restored or copied
/// checkpoint's decree).
pub fn persist_log_floor(dir: &Path, decree: Decree) -> std::io::Result<()> {
    persist_number(dir, LOG_FLOOR_FILE, decree)
}

/// Durably records `ballot` as the replica's last accepted ballot.
pub fn persist_ballot(dir: &Path, ballot: Ballot) -> std::io::Result<()> {
    persist_number(dir, BALLOT_FILE, ballot)
}

/// The ballot recorded by [`persist_ballot`] (0 when none was).
pub fn persisted_ballot(dir: &Path) -> Result<Ballot, String> {
    persisted_number(dir, BALLOT_FILE)
}

/// Durably records `value` in file `name` of `dir`: written to a temporary
/// file, fsynced, renamed over the old one, directory fsynced.
fn persist_number(dir: &Path, name: &str, value: u64) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(value.to_string().as_bytes())?;
    file.sync_data()?;
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// File in a node's data directory holding its last incarnation.
const INCARNATION_FILE: &str = "incarnation";

/// The incarnation of a node process starting on `data_dir`, recorded
/// there durably before the node beacons: the wall clock in nanoseconds,
/// but always above the last one recorded, so that incarnations grow with
/// every start even when the wall clock stepped back
/// (**restart-once-per-incarnation**, docs/meta.md: meta takes a lower one
/// for a stale beacon of an earlier process).
pub fn next_incarnation(data_dir: &Path, wall_clock_ns: u64) -> Result<u64, String> {
    let last = persisted_number(data_dir, INCARNATION_FILE)?;
    let next = wall_clock_ns.max(last.saturating_add(1));
    persist_number(data_dir, INCARNATION_FILE, next).map_err(|error| {
        format!(
            "cannot record the incarnation in {}: {error}",
            data_dir.join(INCARNATION_FILE).display()
        )
    })?;
    Ok(next)
}

/// The number recorded by [`persist_number`] (0 when none was).
fn persisted_number(dir: &Path, name: &str) -> Result<u64, String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{} holds {text:?}, not a number", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Creates `path` and makes it durable: the file synced, then its directory.
fn create_durably(path: &Path) -> Result<(), String> {
    let file = std::fs::File::create(path)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    file.sync_all()
        .map_err(|error| format!("cannot sync {}: {error}", path.display()))?;
    sync_parent(path)
}

/// Removes `path` and makes the removal durable (its directory synced).
fn remove_durably(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(format!("cannot remove {}: {error}", path.display())),
    }
    sync_parent(path)
}

fn sync_parent(path: &Path) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| format!("cannot sync {}: {error}", dir.display()))
}

/// Wakes one waiting pump (a later wake before it waits again is merged).
#[derive(Default)]
pub struct Wake(RefCell<Option<oneshot::Sender<()>>>);

impl Wake {
    pub fn wake(&self) {
        if let Some(wake) = self.0.borrow_mut().take() {
            let _ = wake.send(());
        }
    }

    /// Waits for the next [`Wake::wake`]; `false` once nothing can wake it.
    pub async fn wait(&self) -> bool {
        let (wake, woken) = oneshot::channel();
        *self.0.borrow_mut() = Some(wake);
        woken.await.is_ok()
    }
}

/// The wakers of a shard's pumps.
#[derive(Default)]
pub struct Wakes {
    pub durability: Wake,
    pub learn: Wake,
    pub copy: Wake,
    /// Woken when a write of durable state failed (see [`Wakes::disk_failed`]).
    pub disk: Wake,
    /// The first failed write of durable state: the shard's log, a
    /// replica's ballot, copy marker or log floor.
    pub disk_failure: RefCell<Option<String>>,
}

impl Wakes {
    /// Records that a write of durable state failed (the first reason is
    /// kept) and wakes the watcher, which stops the node
    /// (**disk-failure-stops-the-node**).
    pub fn disk_failed(&self, reason: &str) {
        self.disk_failure
            .borrow_mut()
            .get_or_insert_with(|| reason.to_string());
        self.disk.wake();
    }
}

/// A node shard's IO for its replica host.
pub struct NodeIo {
    pub(super) data_dir: PathBuf,
    pub(super) storage: ShardStorage,
    /// The shard's log, once replay of its files is over.
    pub(super) log: Option<Rc<MutationLog>>,
    pub(super) links: PeerLinks,
    pub(super) layout: Arc<NodeLayout>,
    pub(super) wakes: Rc<Wakes>,
    /// The shard's number (names its part of [`DROPPING_DIR`]).
    pub(super) shard: usize,
    /// Dropped replicas whose storage is still being closed and deleted.
    pub(super) dropping: Rc<RefCell<HashSet<Gpid>>>,
    /// Split children's copies this shard made or is making, staged in
    /// [`split_dir`] until hosted.
    pub(super) split_copies: Rc<RefCell<BTreeMap<Gpid, SplitCopy>>>,
}

/// Where shard `shard` stages split children's copies:
/// `<data_dir>/split/shard-<n>/<app_id>.<partition>-e<epoch>-d<decree>/`,
/// holding the checkpoint in `rdb/` and, once it is complete,
/// [`SPLIT_DONE_FILE`].
pub fn split_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join("split").join(format!("shard-{shard}"))
}

/// Written last into a staged copy's directory: the copy is whole.
const SPLIT_DONE_FILE: &str = "done";

fn staged_copy_dir(data_dir: &Path, shard: usize, child: Gpid, copy: &SplitCopy) -> PathBuf {
    split_dir(data_dir, shard).join(format!(
        "{}.{}-e{}-d{}",
        child.app_id, child.partition_index, copy.epoch, copy.decree
    ))
}

/// The finished copies staged on disk for shard `shard`; unfinished ones
/// (a crash cut them short) are deleted.
pub(super) fn split_copies_on_disk(data_dir: &Path, shard: usize) -> BTreeMap<Gpid, SplitCopy> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(split_dir(data_dir, shard)) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let parsed = (|| {
            let (gpid, rest) = name.split_once("-e")?;
            let (epoch, decree) = rest.split_once("-d")?;
            let (app_id, partition_index) = gpid.split_once('.')?;
            Some((
                Gpid {
                    app_id: app_id.parse().ok()?,
                    partition_index: partition_index.parse().ok()?,
                },
                SplitCopy {
                    epoch: epoch.parse().ok()?,
                    decree: decree.parse().ok()?,
                    state: SplitCopyState::Done,
                },
            ))
        })();
        match parsed {
            Some((gpid, copy)) if path.join(SPLIT_DONE_FILE).exists() => {
                found.insert(gpid, copy);
            }
            _ => {
                if let Err(error) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), %error, "cannot delete an unfinished split copy");
                }
            }
        }
    }
    found
}

/// Takes the checkpoint of a split child's copy into `dir` and sets its
/// decree to the parent's fence decree. Runs off the shard thread.
fn make_split_copy(
    checkpointer: crate::storage::Checkpointer,
    dir: &Path,
    decree: Decree,
) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|error| format!("cannot clear {}: {error}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let rdb = dir.join("rdb");
    let taken = checkpointer.create(&rdb).map_err(|error| error.message)?;
    // The parent applied the fence decree before the copy started.
    if taken < decree as i64 {
        return Err(format!(
            "the checkpoint holds decree {taken}, below the fence decree {decree}"
        ));
    }
    crate::storage::set_checkpoint_decree(&rdb, decree as i64).map_err(|error| error.message)?;
    create_durably(&dir.join(SPLIT_DONE_FILE))?;
    sync_parent(dir)
}

impl HostIo for NodeIo {
    type Engine = RocksEngine;
    type Position = LogPosition;
    type Waiter = oneshot::Sender<Response>;

    fn now_ms(&self) -> u64 {
        crate::clock::monotonic_ms()
    }

    fn now_epoch_s(&self) -> u32 {
        crate::key::now_epoch_s()
    }

    fn now_unix_us(&self) -> u64 {
        markab_core::wall_clock::unix_us()
    }

    fn append(
        &mut self,
        gpid: Gpid,
        ballot: Ballot,
        decree: Decree,
        payload: &[u8],
    ) -> Result<LogPosition, AppendError> {
        let header = RecordHeader {
            app_id: gpid.app_id,
            partition_index: gpid.partition_index,
            ballot: ballot as i64,
            decree: decree as i64,
        };
        let Some(log) = &self.log else {
            return Err(AppendError::Failed("the log is not open yet".to_owned()));
        };
        log.append(&header, payload).map_err(|error| match error {
            LogError::Busy { .. } => AppendError::Busy,
            other => AppendError::Failed(other.to_string()),
        })
    }

    fn payload_bytes_max(&self) -> usize {
        self.log.as_ref().map_or(0, |log| log.payload_bytes_max())
    }

    fn appended(&mut self) {
        self.wakes.durability.wake();
    }

    fn send(&mut self, gpid: Gpid, address: &str, request: PeerRequest) {
        self.links.send(address, gpid, request);
    }

    fn to_meta(&mut self, request: Request) {
        self.layout.meta_requests.push(request);
    }

    fn reply(&mut self, waiter: Self::Waiter, response: Response, _decree: Option<Decree>) {
        let _ = waiter.send(response);
    }

    fn open_replica(&mut self, meta: &ReplicaMeta) -> Result<OpenedReplica<RocksEngine>, OpError> {
        if self.dropping.borrow().contains(&meta.gpid()) {
            return Err(OpError::new(
                ErrorCode::Busy,
                format!(
                    "replica {}.{} was just dropped here and its data is still being deleted; it is hosted again once that is done",
                    meta.app_id, meta.partition_index
                ),
            ));
        }
        let dir = replica_dir(&self.data_dir, meta.gpid());
        if !dir.join(REPLICA_META_FILE).exists() {
            write_replica_meta(&dir, meta)?;
        }
        let engine = RocksEngine::open(&dir.join("rdb"), &self.storage)?;
        Ok(OpenedReplica {
            engine,
            copy_marker: dir.join(COPY_MARKER_FILE).exists(),
        })
    }

    /// Moves the directory out of `<data_dir>/replicas` into
    /// [`DAMAGED_DIR`] (`<app_id>.<partition>-<unix ms>`), fsyncing both
    /// parents, so the node does not open it again.
    fn set_aside_replica(&mut self, gpid: Gpid) -> Result<String, OpError> {
        let damaged = self.data_dir.join(DAMAGED_DIR);
        let to = move_replica_dir(&self.data_dir, gpid, &damaged).map_err(|error| {
            storage_error(format!(
                "cannot move {} into {}: {error}",
                replica_dir(&self.data_dir, gpid).display(),
                damaged.display()
            ))
        })?;
        Ok(to.display().to_string())
    }

    fn was_set_aside(&mut self, gpid: Gpid) -> bool {
        let prefix = format!("{}.{}-", gpid.app_id, gpid.partition_index);
        std::fs::read_dir(self.data_dir.join(DAMAGED_DIR)).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        })
    }

    /// Closing a RocksDB instance can take seconds (it flushes and waits
    /// for its compactions), deleting its files more: both run on the
    /// executor's blocking pool, never on the shard thread, whose other
    /// replicas keep answering their primaries meanwhile
    /// (**drop-off-the-shard**).
    fn remove_replica(&mut self, gpid: Gpid, engine: RocksEngine) -> Result<(), OpError> {
        let data_dir = self.data_dir.clone();
        let parking = dropping_dir(&self.data_dir, self.shard);
        self.dropping.borrow_mut().insert(gpid);
        let dropping = self.dropping.clone();
        glommio::spawn_local(async move {
            let deleted = glommio::executor()
                .spawn_blocking(move || delete_replica(engine, &data_dir, gpid, &parking))
                .await;
            if let Err(reason) = deleted {
                tracing::error!(app_id = gpid.app_id, partition = gpid.partition_index, %reason, "a dropped replica's data could not be deleted");
            }
            dropping.borrow_mut().remove(&gpid);
        })
        .detach();
        Ok(())
    }

    fn persist_ballot(&mut self, gpid: Gpid, ballot: Ballot) -> Result<(), String> {
        let dir = replica_dir(&self.data_dir, gpid);
        persist_ballot(&dir, ballot).map_err(|error| {
            let reason = format!("in {}: {error}", dir.display());
            self.wakes
                .disk_failed(&format!("cannot record ballot {ballot} {reason}"));
            reason
        })
    }

    fn persisted_ballot(&mut self, gpid: Gpid) -> Result<Ballot, String> {
        persisted_ballot(&replica_dir(&self.data_dir, gpid))
    }

    fn set_copy_marker(&mut self, gpid: Gpid, present: bool) -> Result<(), String> {
        let marker = replica_dir(&self.data_dir, gpid).join(COPY_MARKER_FILE);
        let done = if present {
            create_durably(&marker)
        } else {
            remove_durably(&marker)
        };
        if let Err(reason) = &done {
            self.wakes.disk_failed(reason);
        }
        done
    }

    fn persist_log_floor(&mut self, gpid: Gpid, decree: Decree) -> Result<(), String> {
        let dir = replica_dir(&self.data_dir, gpid);
        persist_number(&dir, LOG_FLOOR_FILE, decree).map_err(|error| {
            let reason = format!("cannot record the log floor in {}: {error}", dir.display());
            self.wakes.disk_failed(&reason);
            reason
        })
    }

    fn log_floor(&mut self, gpid: Gpid) -> Result<Decree, String> {
        persisted_number(&replica_dir(&self.data_dir, gpid), LOG_FLOOR_FILE)
    }

    fn update_replica_meta(&mut self, meta: &ReplicaMeta) -> Result<(), String> {
        let dir = replica_dir(&self.data_dir, meta.gpid());
        write_replica_meta(&dir, meta).map_err(|error| error.message)
    }

    /// The checkpoint (RocksDB's, hard links) and the decree rewrite run on
    /// the executor's blocking pool; the shard goes on serving.
    fn start_split_copy(
        &mut self,
        parent: Gpid,
        engine: &RocksEngine,
        child: &ReplicaMeta,
        epoch: u64,
        decree: Decree,
    ) {
        let copy = SplitCopy {
            epoch,
            decree,
            state: SplitCopyState::Running,
        };
        let gpid = child.gpid();
        let dir = staged_copy_dir(&self.data_dir, self.shard, gpid, &copy);
        if let Some(old) = self.split_copies.borrow_mut().insert(gpid, copy.clone()) {
            if old.state != SplitCopyState::Running {
                remove_staged(staged_copy_dir(&self.data_dir, self.shard, gpid, &old));
            }
        }
        let checkpointer = engine.checkpointer();
        let copies = self.split_copies.clone();
        tracing::info!(
            parent = ?parent,
            child = ?gpid,
            epoch,
            decree,
            "copying a splitting partition as its child"
        );
        glommio::spawn_local(async move {
            let job_dir = dir.clone();
            let made = glommio::executor()
                .spawn_blocking(move || make_split_copy(checkpointer, &job_dir, decree))
                .await;
            let mut copies = copies.borrow_mut();
            match copies.get_mut(&gpid) {
                Some(held) if held.epoch == epoch && held.decree == decree => match made {
                    Ok(()) => held.state = SplitCopyState::Done,
                    Err(reason) => {
                        tracing::error!(child = ?gpid, %reason, "a split copy failed");
                        held.state = SplitCopyState::Failed(reason);
                        remove_staged(dir);
                    }
                },
                // No longer wanted while it ran.
                _ => remove_staged(dir),
            }
        })
        .detach();
    }

    fn split_copy(&mut self, child: Gpid) -> Option<SplitCopy> {
        self.split_copies.borrow().get(&child).cloned()
    }

    fn keep_split_copies(&mut self, keep: &BTreeSet<(Gpid, u64)>, assigned: &BTreeSet<Gpid>) {
        let mut copies = self.split_copies.borrow_mut();
        let stale: Vec<Gpid> = copies
            .iter()
            .filter(|(gpid, copy)| {
                !keep.contains(&(**gpid, copy.epoch)) && !assigned.contains(gpid)
            })
            .map(|(gpid, _)| *gpid)
            .collect();
        for gpid in stale {
            let copy = copies.remove(&gpid).expect("listed above");
            // A running copy removes itself when it ends.
            if copy.state != SplitCopyState::Running {
                remove_staged(staged_copy_dir(&self.data_dir, self.shard, gpid, &copy));
            }
        }
    }

    fn install_split_copy(&mut self, gpid: Gpid) -> Result<bool, OpError> {
        let dir = replica_dir(&self.data_dir, gpid);
        if dir.join(REPLICA_META_FILE).exists() {
            return Ok(true);
        }
        let copy = match self.split_copies.borrow().get(&gpid) {
            Some(copy) if copy.state == SplitCopyState::Done => copy.clone(),
            _ => return Ok(false),
        };
        let staged = staged_copy_dir(&self.data_dir, self.shard, gpid, &copy);
        let installed = (|| -> std::io::Result<()> {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(staged.join("rdb"), dir.join("rdb"))?;
            persist_log_floor(&dir, copy.decree)?;
            std::fs::File::open(&dir)?.sync_all()?;
            std::fs::remove_dir_all(&staged)
        })();
        installed.map_err(|error| {
            storage_error(format!(
                "cannot install the split copy {} as {}: {error}",
                staged.display(),
                dir.display()
            ))
        })?;
        self.split_copies.borrow_mut().remove(&gpid);
        tracing::info!(child = ?gpid, decree = copy.decree, "installed a split child's copy");
        Ok(true)
    }

    fn learn_queued(&mut self) {
        self.wakes.learn.wake();
    }

    fn copy_queued(&mut self) {
        self.wakes.copy.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Incarnations grow with every start, even when the wall clock stepped
    // back (**restart-once-per-incarnation**), and are durable.
    #[test]
    fn incarnations_grow_even_when_the_clock_steps_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = next_incarnation(dir.path(), 5_000).unwrap();
        assert_eq!(first, 5_000);
        let stepped_back = next_incarnation(dir.path(), 1_000).unwrap();
        assert_eq!(stepped_back, 5_001);
        assert_eq!(next_incarnation(dir.path(), 9_000).unwrap(), 9_000);
        std::fs::write(dir.path().join(INCARNATION_FILE), "garbage").unwrap();
        let error = next_incarnation(dir.path(), 10_000).unwrap_err();
        assert!(error.contains("not a number"), "{error}");
    }
}
