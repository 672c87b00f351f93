//! A simulated node: one production [`ShardHost`] per shard over [`SimIo`],
//! the simulator's side of [`HostIo`], and the node's disk, which survives
//! crashes: per shard a mutation log that becomes durable by group commits,
//! per replica its flushed storage, ballot file, copy marker and
//! [`ReplicaMeta`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use markab_core::host::dup::DupShipping;
use markab_core::host::registry::NodeRegistry;
use markab_core::host::split::{SplitCopy, SplitCopyState};
use markab_core::host::{AppendError, HostIo, OpenedReplica, ReplicaMeta, ShardHost};
use markab_core::replication::messages::{Ballot, Decree, Mutation, NodeId};
use markab_core::storage::{MemoryDurable, MemoryEngine, MemoryRecords};
use markab_core::wire::message::{BackupReport, Gpid, OpError, PeerRequest, Request, Response};
use rand::rngs::StdRng;
use rand::Rng;

/// Storage time (seconds since 2016) used for every request: no TTLs.
pub const NOW_EPOCH_S: u32 = 1_000;
/// The largest payload of one log record.
const PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// Where a client write's answer goes: (client index, op id).
pub type Waiter = (usize, u64);

/// What a host did outside itself, in order; the world carries each out
/// after the host call that produced it.
#[derive(Debug)]
pub enum Effect {
    Send {
        gpid: Gpid,
        address: String,
        request: PeerRequest,
    },
    ToMeta(Request),
    Reply {
        waiter: Waiter,
        response: Response,
        decree: Option<Decree>,
    },
    /// Something was appended to the log or backlogged.
    Appended,
    LearnQueued,
    CopyQueued,
    Applied {
        gpid: Gpid,
        mutation: Mutation,
    },
    /// A replica's storage was opened at its flushed decree.
    Opened {
        gpid: Gpid,
        decree: Decree,
    },
    /// A replica's copy marker was set or removed; `decree` is its
    /// storage's flushed decree then.
    CopyMarker {
        gpid: Gpid,
        present: bool,
        decree: Decree,
    },
    /// Recording a ballot failed (injected): the replica stops.
    BallotLost {
        gpid: Gpid,
        ballot: Ballot,
    },
    Removed {
        gpid: Gpid,
    },
    /// A split child's staged copy became its replica's storage, at the
    /// parent's fence decree.
    SplitInstalled {
        gpid: Gpid,
        decree: Decree,
    },
}

/// One record of a shard's log.
#[derive(Clone, Debug)]
pub struct LogRecord {
    pub position: u64,
    pub gpid: Gpid,
    pub ballot: i64,
    pub decree: i64,
    pub payload: Vec<u8>,
    /// Half written when the node crashed: its checksum does not match,
    /// so reading the log stops here.
    pub torn: bool,
}

/// A shard's mutation log on the simulated disk. Appends get increasing
/// positions; a group commit makes every record up to a position durable;
/// a crash loses what is not.
#[derive(Debug)]
pub struct SimLog {
    pub records: Vec<LogRecord>,
    next_position: u64,
    /// Every record at or below this position is durable.
    pub durable: u64,
}

impl Default for SimLog {
    fn default() -> SimLog {
        SimLog {
            records: Vec::new(),
            next_position: 1,
            durable: 0,
        }
    }
}

impl SimLog {
    /// The position of the last append (0 when none).
    pub fn newest(&self) -> u64 {
        self.next_position - 1
    }

    fn unsynced_bytes(&self) -> usize {
        self.records
            .iter()
            .rev()
            .take_while(|record| record.position > self.durable)
            .map(|record| record.payload.len())
            .sum()
    }

    /// A group commit up to `upto` finished.
    pub fn sync(&mut self, upto: u64) {
        self.durable = self.durable.max(upto);
    }

    /// Power cut: every unsynced record is lost; with `tear`, a prefix of
    /// them (`keep` records) reached the disk and the next one is torn.
    /// Returns what happened, for the trace.
    pub fn crash(&mut self, tear: Option<usize>) -> Option<String> {
        let unsynced: Vec<usize> = (0..self.records.len())
            .filter(|index| self.records[*index].position > self.durable)
            .collect();
        let first = *unsynced.first()?;
        let lost = self.records.len() - first;
        match tear {
            Some(keep) if keep < lost => {
                let torn_index = first + keep;
                self.records.truncate(torn_index + 1);
                let torn = &mut self.records[torn_index];
                torn.torn = true;
                let cut = torn.payload.len() / 2;
                torn.payload.truncate(cut);
                let kept = torn_index.checked_sub(1).map(|i| self.records[i].position);
                if let Some(position) = kept {
                    self.durable = self.durable.max(position);
                }
                Some(format!(
                    "{lost} unsynced record(s): {keep} kept, the next torn, the rest lost"
                ))
            }
            _ => {
                self.records.truncate(first);
                Some(format!("{lost} unsynced record(s) lost"))
            }
        }
    }

    /// Reading the log at restart: the records before the first torn one;
    /// the torn one and everything after it are cut off the log.
    pub fn read_to_tear(&mut self) -> (Vec<LogRecord>, bool) {
        let tear = self.records.iter().position(|record| record.torn);
        if let Some(index) = tear {
            self.records.truncate(index);
        }
        (self.records.clone(), tear.is_some())
    }
}

/// A replica's files on the simulated disk.
#[derive(Debug)]
pub struct ReplicaDisk {
    pub meta: ReplicaMeta,
    pub storage: MemoryDurable,
    pub ballot: Ballot,
    pub copy_marker: bool,
    /// The decree of the last copy installed (**log-floor**).
    pub log_floor: Decree,
}

/// A node's disk: survives crashes.
#[derive(Debug, Default)]
pub struct Disk {
    /// One log per shard.
    pub logs: Vec<SimLog>,
    pub replicas: BTreeMap<Gpid, ReplicaDisk>,
    /// Replicas set aside (**damaged-replica-set-aside**): their storage
    /// is gone from `replicas`, kept aside for the operator.
    pub set_aside: BTreeSet<Gpid>,
    /// Split children's copies staged until hosted, by shard (each shard
    /// keeps its own, as a node's shards do; made at once: the simulated
    /// checkpoint is a snapshot of the parent's engine).
    pub split_copies: BTreeMap<(usize, Gpid), (SplitCopy, MemoryRecords)>,
}

/// Injected IO faults, shared by every node's IO (one seeded stream).
pub struct IoFaults {
    pub rng: StdRng,
    pub ballot_fail_per_mille: u32,
    /// Faults happen before this time (world clock).
    pub until_ms: u64,
}

/// The simulator's [`HostIo`]: the disk in memory, everything else
/// recorded in the outbox.
pub struct SimIo {
    shard: usize,
    /// The world's clock.
    clock: Rc<Cell<u64>>,
    /// This node's clock is the world's plus this.
    offset_ms: u64,
    disk: Rc<RefCell<Disk>>,
    faults: Rc<RefCell<IoFaults>>,
    log_unsynced_bytes_max: usize,
    pub outbox: Vec<Effect>,
}

impl SimIo {
    pub fn new(
        shard: usize,
        clock: Rc<Cell<u64>>,
        offset_ms: u64,
        disk: Rc<RefCell<Disk>>,
        faults: Rc<RefCell<IoFaults>>,
        log_unsynced_bytes_max: usize,
    ) -> SimIo {
        SimIo {
            shard,
            clock,
            offset_ms,
            disk,
            faults,
            log_unsynced_bytes_max,
            outbox: Vec::new(),
        }
    }
}

impl SimIo {
    fn learn_queued_effect(&mut self) {
        self.outbox.push(Effect::LearnQueued);
    }

    /// The files of replica `gpid` on the disk, to change.
    fn files_mut(&self, gpid: Gpid) -> Result<std::cell::RefMut<'_, ReplicaDisk>, String> {
        std::cell::RefMut::filter_map(self.disk.borrow_mut(), |disk| disk.replicas.get_mut(&gpid))
            .map_err(|_| format!("no files for replica {gpid:?}"))
    }

    /// What `read` says of replica `gpid`'s files (its default when it has none).
    fn files<T: Default>(&self, gpid: Gpid, read: impl FnOnce(&ReplicaDisk) -> T) -> T {
        self.disk
            .borrow()
            .replicas
            .get(&gpid)
            .map_or_else(T::default, read)
    }
}

impl HostIo for SimIo {
    type Engine = MemoryEngine;
    type Position = u64;
    type Waiter = Waiter;

    fn now_ms(&self) -> u64 {
        self.clock.get() + self.offset_ms
    }

    fn now_epoch_s(&self) -> u32 {
        NOW_EPOCH_S
    }

    fn append(
        &mut self,
        gpid: Gpid,
        ballot: Ballot,
        decree: Decree,
        payload: &[u8],
    ) -> Result<u64, AppendError> {
        let mut disk = self.disk.borrow_mut();
        let log = &mut disk.logs[self.shard];
        let unsynced = log.unsynced_bytes();
        if unsynced > 0 && unsynced + payload.len() > self.log_unsynced_bytes_max {
            return Err(AppendError::Busy);
        }
        let position = log.next_position;
        log.next_position += 1;
        log.records.push(LogRecord {
            position,
            gpid,
            ballot: ballot as i64,
            decree: decree as i64,
            payload: payload.to_vec(),
            torn: false,
        });
        Ok(position)
    }

    fn payload_bytes_max(&self) -> usize {
        PAYLOAD_BYTES_MAX
    }

    fn appended(&mut self) {
        self.outbox.push(Effect::Appended);
    }

    fn send(&mut self, gpid: Gpid, address: &str, request: PeerRequest) {
        self.outbox.push(Effect::Send {
            gpid,
            address: address.to_owned(),
            request,
        });
    }

    fn to_meta(&mut self, request: Request) {
        self.outbox.push(Effect::ToMeta(request));
    }

    fn reply(&mut self, waiter: Waiter, response: Response, decree: Option<Decree>) {
        self.outbox.push(Effect::Reply {
            waiter,
            response,
            decree,
        });
    }

    fn open_replica(&mut self, meta: &ReplicaMeta) -> Result<OpenedReplica<MemoryEngine>, OpError> {
        let gpid = meta.gpid();
        let mut disk = self.disk.borrow_mut();
        let replica = disk.replicas.entry(gpid).or_insert_with(|| ReplicaDisk {
            meta: meta.clone(),
            storage: MemoryDurable::new(),
            ballot: 0,
            copy_marker: false,
            log_floor: 0,
        });
        // An installed split copy gets its metadata now, as on a node.
        if replica.meta.table.is_empty() {
            replica.meta = meta.clone();
        }
        let engine = MemoryEngine::open_durable(&replica.storage);
        let decree = replica.storage.decree().max(0) as Decree;
        let copy_marker = replica.copy_marker;
        self.outbox.push(Effect::Opened { gpid, decree });
        Ok(OpenedReplica {
            engine,
            copy_marker,
        })
    }

    fn set_aside_replica(&mut self, gpid: Gpid) -> Result<String, OpError> {
        let mut disk = self.disk.borrow_mut();
        disk.replicas.remove(&gpid);
        disk.set_aside.insert(gpid);
        Ok(format!("the set-aside area of shard {}", self.shard))
    }

    fn was_set_aside(&mut self, gpid: Gpid) -> bool {
        self.disk.borrow().set_aside.contains(&gpid)
    }

    fn remove_replica(&mut self, gpid: Gpid, engine: Self::Engine) -> Result<(), OpError> {
        drop(engine);
        self.disk.borrow_mut().replicas.remove(&gpid);
        self.outbox.push(Effect::Removed { gpid });
        Ok(())
    }

    fn persist_ballot(&mut self, gpid: Gpid, ballot: Ballot) -> Result<(), String> {
        {
            let mut faults = self.faults.borrow_mut();
            let per_mille = faults.ballot_fail_per_mille;
            if self.clock.get() < faults.until_ms && faults.rng.random_range(0..1000) < per_mille {
                self.outbox.push(Effect::BallotLost { gpid, ballot });
                return Err("injected: the ballot file could not be written".to_owned());
            }
        }
        self.files_mut(gpid)?.ballot = ballot;
        Ok(())
    }

    fn persisted_ballot(&mut self, gpid: Gpid) -> Result<Ballot, String> {
        Ok(self.files(gpid, |replica| replica.ballot))
    }

    fn persist_log_floor(&mut self, gpid: Gpid, decree: Decree) -> Result<(), String> {
        self.files_mut(gpid)?.log_floor = decree;
        Ok(())
    }

    fn log_floor(&mut self, gpid: Gpid) -> Result<Decree, String> {
        Ok(self.files(gpid, |replica| replica.log_floor))
    }

    fn set_copy_marker(&mut self, gpid: Gpid, present: bool) -> Result<(), String> {
        let decree = {
            let mut replica = self.files_mut(gpid)?;
            replica.copy_marker = present;
            replica.storage.decree().max(0) as Decree
        };
        self.outbox.push(Effect::CopyMarker {
            gpid,
            present,
            decree,
        });
        Ok(())
    }

    fn update_replica_meta(&mut self, meta: &ReplicaMeta) -> Result<(), String> {
        self.files_mut(meta.gpid())?.meta = meta.clone();
        Ok(())
    }

    fn start_split_copy(
        &mut self,
        _parent: Gpid,
        engine: &MemoryEngine,
        child: &ReplicaMeta,
        epoch: u64,
        decree: Decree,
    ) {
        let copy = match engine.snapshot() {
            Some((records, taken)) if taken >= decree as i64 => (
                SplitCopy {
                    epoch,
                    decree,
                    state: SplitCopyState::Done,
                },
                records,
            ),
            _ => (
                SplitCopy {
                    epoch,
                    decree,
                    state: SplitCopyState::Failed("the parent is below the fence decree".into()),
                },
                MemoryRecords::new(),
            ),
        };
        self.disk
            .borrow_mut()
            .split_copies
            .insert((self.shard, child.gpid()), copy);
    }

    fn split_copy(&mut self, child: Gpid) -> Option<SplitCopy> {
        self.disk
            .borrow()
            .split_copies
            .get(&(self.shard, child))
            .map(|(copy, _)| copy.clone())
    }

    fn keep_split_copies(&mut self, keep: &BTreeSet<(Gpid, u64)>, assigned: &BTreeSet<Gpid>) {
        self.disk
            .borrow_mut()
            .split_copies
            .retain(|(shard, gpid), (copy, _)| {
                *shard != self.shard
                    || keep.contains(&(*gpid, copy.epoch))
                    || assigned.contains(gpid)
            });
    }

    fn install_split_copy(&mut self, gpid: Gpid) -> Result<bool, OpError> {
        let mut disk = self.disk.borrow_mut();
        if disk.replicas.contains_key(&gpid) {
            return Ok(true);
        }
        let ready = disk
            .split_copies
            .get(&(self.shard, gpid))
            .is_some_and(|(copy, _)| copy.state == SplitCopyState::Done);
        if !ready {
            return Ok(false);
        }
        let (copy, records) = disk
            .split_copies
            .remove(&(self.shard, gpid))
            .expect("checked");
        // The metadata is written when the host opens it.
        disk.replicas.insert(
            gpid,
            ReplicaDisk {
                meta: ReplicaMeta {
                    table: String::new(),
                    app_id: gpid.app_id,
                    partition_index: gpid.partition_index,
                    partition_count: 0,
                    shard: self.shard,
                },
                storage: MemoryDurable::with_state(records, copy.decree as i64),
                ballot: 0,
                copy_marker: false,
                log_floor: copy.decree,
            },
        );
        self.outbox.push(Effect::SplitInstalled {
            gpid,
            decree: copy.decree,
        });
        Ok(true)
    }

    fn learn_queued(&mut self) {
        self.learn_queued_effect();
    }

    fn copy_queued(&mut self) {
        self.outbox.push(Effect::CopyQueued);
    }

    fn applied(&mut self, gpid: Gpid, mutation: &Mutation) {
        self.outbox.push(Effect::Applied {
            gpid,
            mutation: mutation.clone(),
        });
    }
}

/// A simulated node.
pub struct SimNode {
    pub id: NodeId,
    pub alive: bool,
    /// Bumped by every restart.
    pub incarnation: u64,
    /// When the current incarnation started, on its clock (acks of older
    /// beacons are ignored).
    pub started_ms: u64,
    /// This node's clock is the world's plus this (clocks of different
    /// machines do not agree; only durations compare).
    pub offset_ms: u64,
    /// Paused (SIGSTOP) until then (world clock): it handles nothing,
    /// everything meant for it waits, and it resumes with its clock jumped
    /// forward.
    pub paused_until_ms: u64,
    /// Shards of the node (fixed for its life).
    pub shards: usize,
    pub registry: Arc<NodeRegistry>,
    /// One host per shard while alive; empty while down.
    pub hosts: Vec<ShardHost<SimIo>>,
    pub disk: Rc<RefCell<Disk>>,
    /// Per shard: a log sync is in flight.
    pub syncing: Vec<bool>,
    /// A supervisor restart is scheduled for this incarnation.
    pub restart_scheduled: bool,
    /// An early beacon (one an ack asked for) is scheduled: as the node's
    /// one beacon thread, it has one next beacon at a time, so acks (some
    /// delivered twice) never multiply its beacons.
    pub early_beacon: bool,
    /// Its partition backups, by (backup id, partition): volatile, like a
    /// real node's jobs.
    pub backup_jobs: BTreeMap<(u64, Gpid), BackupReport>,
    /// Its duplication shipping (volatile, like a real node's shipper).
    pub shipping: DupShipping,
    /// It applied a beacon ack since it started: its shards know their
    /// duplication orders.
    pub acked: bool,
}
