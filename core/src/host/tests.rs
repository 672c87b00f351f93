//! The replica host over an in-memory [`HostIo`] — one or two nodes of one
//! shard each, their peer messages delivered by hand and every log append
//! durable at once — mostly its part of splits.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use markab_wire::{
    BeaconAck, ErrorCode, Gpid, Key, OpError, PeerRequest, ReplicaAssignment, Request, Response,
    SplitOrder,
};

use super::split::{SplitCopy, SplitCopyState};
use super::*;
use crate::host::registry::{split_ack, NodeRegistry, PrimaryGrant, ShardAck};
use crate::host::{AppendError, OpenedReplica, ReplicaMeta};
use crate::replication::config::ReplicationSettings;
use crate::replication::messages::Mutation;
use crate::storage::{MemoryDurable, MemoryEngine, MemoryRecords, StorageLimits};

const PARENT: Gpid = Gpid {
    app_id: 1,
    partition_index: 0,
};
const CHILD: Gpid = Gpid {
    app_id: 1,
    partition_index: 1,
};
const LEASE_MS: u64 = 1_000_000;

/// One node's IO: its replicas' storage, the peer messages and replies it
/// sent, and its staged split copies (made at once).
#[derive(Default)]
struct TestIo {
    clock: Rc<Cell<u64>>,
    next_position: u64,
    sent: Vec<(String, Gpid, PeerRequest)>,
    replies: Vec<(u64, Response)>,
    replicas: BTreeMap<Gpid, (ReplicaMeta, MemoryDurable)>,
    copies: BTreeMap<Gpid, (SplitCopy, MemoryRecords)>,
}

impl HostIo for TestIo {
    type Engine = MemoryEngine;
    type Position = u64;
    type Waiter = u64;

    fn now_ms(&self) -> u64 {
        self.clock.get()
    }

    fn now_epoch_s(&self) -> u32 {
        1_000
    }

    fn append(&mut self, _: Gpid, _: Ballot, _: Decree, _: &[u8]) -> Result<u64, AppendError> {
        self.next_position += 1;
        Ok(self.next_position)
    }

    fn payload_bytes_max(&self) -> usize {
        1 << 20
    }

    fn appended(&mut self) {}

    fn send(&mut self, gpid: Gpid, address: &str, request: PeerRequest) {
        self.sent.push((address.to_owned(), gpid, request));
    }

    fn to_meta(&mut self, _: Request) {}

    fn reply(&mut self, waiter: u64, response: Response, _: Option<Decree>) {
        self.replies.push((waiter, response));
    }

    fn open_replica(&mut self, meta: &ReplicaMeta) -> Result<OpenedReplica<MemoryEngine>, OpError> {
        let (_, durable) = self
            .replicas
            .entry(meta.gpid())
            .or_insert_with(|| (meta.clone(), MemoryDurable::new()));
        Ok(OpenedReplica {
            engine: MemoryEngine::open_durable(durable),
            copy_marker: false,
        })
    }

    fn remove_replica(&mut self, gpid: Gpid, _: MemoryEngine) -> Result<(), OpError> {
        self.replicas.remove(&gpid);
        Ok(())
    }

    fn set_aside_replica(&mut self, gpid: Gpid) -> Result<String, OpError> {
        self.replicas.remove(&gpid);
        Ok("aside".into())
    }

    fn was_set_aside(&mut self, _: Gpid) -> bool {
        false
    }

    fn persist_ballot(&mut self, _: Gpid, _: Ballot) -> Result<(), String> {
        Ok(())
    }

    fn persisted_ballot(&mut self, _: Gpid) -> Result<Ballot, String> {
        Ok(0)
    }

    fn set_copy_marker(&mut self, _: Gpid, _: bool) -> Result<(), String> {
        Ok(())
    }

    fn persist_log_floor(&mut self, _: Gpid, _: Decree) -> Result<(), String> {
        Ok(())
    }

    fn log_floor(&mut self, _: Gpid) -> Result<Decree, String> {
        Ok(0)
    }

    fn learn_queued(&mut self) {}

    fn copy_queued(&mut self) {}

    fn applied(&mut self, _: Gpid, _: &Mutation) {}

    fn update_replica_meta(&mut self, meta: &ReplicaMeta) -> Result<(), String> {
        if let Some((held, _)) = self.replicas.get_mut(&meta.gpid()) {
            *held = meta.clone();
        }
        Ok(())
    }

    fn start_split_copy(
        &mut self,
        _: Gpid,
        engine: &MemoryEngine,
        child: &ReplicaMeta,
        epoch: u64,
        decree: Decree,
    ) {
        let (records, _) = engine.snapshot().expect("no scan runs");
        let copy = SplitCopy {
            epoch,
            decree,
            state: SplitCopyState::Done,
        };
        self.copies.insert(child.gpid(), (copy, records));
    }

    fn split_copy(&mut self, child: Gpid) -> Option<SplitCopy> {
        self.copies.get(&child).map(|(copy, _)| copy.clone())
    }

    fn keep_split_copies(&mut self, keep: &BTreeSet<(Gpid, u64)>, assigned: &BTreeSet<Gpid>) {
        self.copies.retain(|gpid, (copy, _)| {
            keep.contains(&(*gpid, copy.epoch)) || assigned.contains(gpid)
        });
    }

    fn install_split_copy(&mut self, gpid: Gpid) -> Result<bool, OpError> {
        if self.replicas.contains_key(&gpid) {
            return Ok(true);
        }
        let Some((copy, records)) = self.copies.remove(&gpid) else {
            return Ok(false);
        };
        let meta = ReplicaMeta {
            table: "t".into(),
            app_id: gpid.app_id,
            partition_index: gpid.partition_index,
            partition_count: 0,
            shard: 0,
        };
        let durable = MemoryDurable::with_state(records, copy.decree as i64);
        self.replicas.insert(gpid, (meta, durable));
        Ok(true)
    }
}

/// Nodes `n1`, `n2`, ... of one shard each, at addresses of their names.
struct Cluster {
    clock: Rc<Cell<u64>>,
    hosts: Vec<ShardHost<TestIo>>,
    registries: Vec<Arc<NodeRegistry>>,
    next_waiter: u64,
}

fn name(node: usize) -> String {
    format!("n{}", node + 1)
}

impl Cluster {
    fn new(nodes: usize, start_ms: u64) -> Cluster {
        let clock = Rc::new(Cell::new(start_ms));
        let settings = ReplicationSettings::default();
        let registries: Vec<Arc<NodeRegistry>> =
            (0..nodes).map(|_| Arc::new(NodeRegistry::new())).collect();
        let hosts = (0..nodes)
            .map(|node| {
                let io = TestIo {
                    clock: clock.clone(),
                    ..TestIo::default()
                };
                ShardHost::new(
                    io,
                    0,
                    name(node),
                    name(node),
                    settings,
                    registries[node].clone(),
                    StorageLimits::default(),
                )
            })
            .collect();
        Cluster {
            clock,
            hosts,
            registries,
            next_waiter: 0,
        }
    }

    /// Lets `ms` pass, ticking every host every 10 ms, and settles.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.clock.set(self.clock.get() + 10);
            for host in &mut self.hosts {
                host.tick();
            }
            self.settle();
        }
    }

    /// Makes every append durable and delivers every peer message, until
    /// nothing is left to do.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for host in &mut self.hosts {
                if let Some(position) = host.newest_appended() {
                    host.log_durable(position);
                    moved = true;
                }
            }
            let mut mail = Vec::new();
            for host in &mut self.hosts {
                mail.append(&mut host.io_mut().sent);
            }
            for (address, gpid, request) in mail {
                moved = true;
                let to = self
                    .hosts
                    .iter()
                    .position(|host| host.shared.shard_address == address)
                    .expect("a known node");
                self.hosts[to].on_peer(gpid, request);
            }
            if !moved {
                return;
            }
        }
    }

    /// Node `node`'s beacon ack from meta (through `split_ack`, as the
    /// node's beacon thread hands it on): `assignments` with a lease for
    /// those naming the node primary, and `splits`.
    fn ack(&mut self, node: usize, assignments: &[ReplicaAssignment], splits: &[SplitOrder]) {
        let sent_ms = self.clock.get();
        self.ack_sent_at(node, assignments, splits, sent_ms);
    }

    /// Node `node`'s ack, as [`Cluster::ack`], of a beacon it sent at
    /// `sent_ms`.
    fn ack_sent_at(
        &mut self,
        node: usize,
        assignments: &[ReplicaAssignment],
        splits: &[SplitOrder],
        sent_ms: u64,
    ) {
        let ack = BeaconAck {
            assignments: assignments.to_vec(),
            lease_ms: LEASE_MS,
            splits: splits.to_vec(),
            ..BeaconAck::default()
        };
        let mut parts = split_ack(&self.registries[node], 1, &name(node), ack, sent_ms);
        let mut part: ShardAck = parts.remove(0);
        part.leases = assignments
            .iter()
            .filter(|assignment| assignment.primary == name(node))
            .map(|assignment| PrimaryGrant {
                gpid: Gpid {
                    app_id: assignment.app_id,
                    partition_index: assignment.partition_index,
                },
                ballot: assignment.ballot as Ballot,
                handoff_to: String::new(),
            })
            .collect();
        self.hosts[node].apply_ack(part);
        self.settle();
    }

    /// Writes `key` := `value` at node `node`'s replica of `gpid`; its
    /// answer once settled.
    fn set(&mut self, node: usize, gpid: Gpid, key: &Key, value: &[u8]) -> Response {
        self.next_waiter += 1;
        let waiter = self.next_waiter;
        let request = Request::Set {
            key: key.clone(),
            value: value.to_vec(),
            ttl_seconds: 0,
        };
        self.hosts[node].client_write(gpid, &request, waiter);
        self.settle();
        let replies = &mut self.hosts[node].io_mut().replies;
        let at = replies
            .iter()
            .position(|(held, _)| *held == waiter)
            .expect("the write was answered");
        replies.remove(at).1
    }

    fn replica(&self, node: usize, gpid: Gpid) -> &HostedReplica<TestIo> {
        self.hosts[node].replica(gpid).expect("hosted")
    }
}

/// Meta's assignment of `gpid` at `ballot` in a table of `count`
/// partitions: `primary` and `secondaries` (node indexes).
fn assignment(
    gpid: Gpid,
    count: i32,
    ballot: i64,
    primary: usize,
    secondaries: &[usize],
) -> ReplicaAssignment {
    let members: Vec<usize> = std::iter::once(primary)
        .chain(secondaries.iter().copied())
        .collect();
    ReplicaAssignment {
        table: "t".into(),
        app_id: gpid.app_id,
        partition_index: gpid.partition_index,
        partition_count: count,
        shard: 0,
        ballot,
        primary: name(primary),
        secondaries: secondaries.iter().map(|node| name(*node)).collect(),
        member_addresses: members.iter().map(|node| name(*node)).collect(),
        learners: Vec::new(),
        replica_count: members.len() as i32,
        handoff_to: String::new(),
        split_child: gpid.partition_index >= count / 2 && count > 1,
    }
}

/// The order splitting partition 0 of a table of one partition.
fn order(epoch: u64, fence_decree: Option<i64>) -> SplitOrder {
    SplitOrder {
        gpid: PARENT,
        new_count: 2,
        epoch,
        fence_decree: fence_decree.unwrap_or(0),
        fenced: fence_decree.is_some(),
    }
}

/// A key of partition `index` of two.
fn key_of(index: u32) -> Key {
    (0..)
        .map(|n| Key::new(format!("k{n}"), "s"))
        .find(|key| {
            let hash = crate::key::partition_hash(&key.hash_key, &key.sort_key);
            crate::key::partition_index(hash, 2) == index
        })
        .expect("some key")
}

/// The fence decree the parent's primary on `node` reports, once fenced.
fn fence_reported(cluster: &Cluster, node: usize) -> Option<i64> {
    cluster.registries[node]
        .split_reports()
        .iter()
        .find(|report| report.gpid == PARENT && report.fenced)
        .map(|report| report.fence_decree)
}

// An idle primary fenced at the decree of its idle commit push — whose
// own commit no Prepare carries — still gets its secondary to apply the
// fence decree, so that the secondary copies its replica too
// (**fence-commit-pushed**). Before, the secondary stayed one decree
// short until a client wrote again, and the split never committed.
#[test]
fn an_idle_fenced_primary_s_secondary_applies_the_fence_decree() {
    let mut cluster = Cluster::new(2, 0);
    let config = assignment(PARENT, 1, 1, 0, &[1]);
    cluster.ack(1, std::slice::from_ref(&config), &[]);
    cluster.ack(0, std::slice::from_ref(&config), &[]);
    cluster.run(100);
    let written = cluster.set(0, PARENT, &key_of(1), b"v");
    assert!(written.is_ok(), "{written:?}");
    // The idle push carries the write's commit; its own commit stays
    // unsent.
    cluster.run(200);
    let primary = cluster.replica(0, PARENT).core().last_committed();
    assert_eq!(cluster.replica(1, PARENT).applied() + 1, primary);
    cluster.ack(1, std::slice::from_ref(&config), &[order(1, None)]);
    cluster.ack(0, std::slice::from_ref(&config), &[order(1, None)]);
    let fence = fence_reported(&cluster, 0).expect("the primary fenced");
    assert_eq!(fence, primary as i64);
    cluster.ack(1, std::slice::from_ref(&config), &[order(1, Some(fence))]);
    cluster.ack(0, std::slice::from_ref(&config), &[order(1, Some(fence))]);
    cluster.run(200);
    assert!(
        cluster.replica(1, PARENT).applied() as i64 >= fence,
        "the secondary applied {}, below the fence decree {fence}",
        cluster.replica(1, PARENT).applied()
    );
    let copy = cluster.hosts[1].io_mut().split_copy(CHILD);
    assert_eq!(copy.map(|copy| copy.decree as i64), Some(fence));
}

// A parent that heard of the commit (the doubled count) keeps it when an
// ack from before the commit comes late: it never takes its child's keys
// again (**count-only-grows**). Before, the late ack set the count back
// and the parent accepted a write of a key its child serves.
#[test]
fn a_late_ack_never_lowers_a_replica_s_partition_count() {
    let mut cluster = Cluster::new(1, 0);
    let before = assignment(PARENT, 1, 1, 0, &[]);
    cluster.ack(0, std::slice::from_ref(&before), &[]);
    cluster.run(100);
    let after = assignment(PARENT, 2, 1, 0, &[]);
    cluster.ack(0, std::slice::from_ref(&after), &[]);
    assert_eq!(cluster.replica(0, PARENT).meta.partition_count, 2);
    cluster.ack(0, std::slice::from_ref(&before), &[]);
    assert_eq!(cluster.replica(0, PARENT).meta.partition_count, 2);
    let moved = cluster.set(0, PARENT, &key_of(1), b"v");
    assert_eq!(
        moved.map_err(|error| error.code),
        Err(ErrorCode::WrongPartition)
    );
    assert!(cluster.set(0, PARENT, &key_of(0), b"v").is_ok());
}

// A split order from before the commit, in an ack that comes late, finds
// the parent holding the doubled count, its storage rid of the moved
// keys: the parent takes no copy for the child from it (such a copy,
// marked at the fence decree, would lack the child's keys:
// **copy-covers-fence**) and reports nothing of that split. Before, it
// took one and staged it for as long as the child was assigned.
#[test]
fn a_late_split_order_takes_no_copy_once_the_parent_holds_the_new_count() {
    let mut cluster = Cluster::new(1, 0);
    let before = assignment(PARENT, 1, 1, 0, &[]);
    cluster.ack(0, std::slice::from_ref(&before), &[]);
    cluster.run(100);
    assert!(cluster.set(0, PARENT, &key_of(1), b"v").is_ok());
    cluster.ack(0, std::slice::from_ref(&before), &[order(1, None)]);
    let fence = fence_reported(&cluster, 0).expect("the primary fenced");
    cluster.ack(0, std::slice::from_ref(&before), &[order(1, Some(fence))]);
    let copy = cluster.hosts[0].io_mut().split_copy(CHILD);
    assert_eq!(copy.map(|copy| copy.decree as i64), Some(fence));
    // The commit: the child is installed from the copy, the parent holds
    // two partitions and drops the moved keys.
    let committed = [
        assignment(PARENT, 2, 1, 0, &[]),
        assignment(CHILD, 2, 1, 0, &[]),
    ];
    cluster.ack(0, &committed, &[]);
    assert!(cluster.hosts[0].io_mut().split_copy(CHILD).is_none());
    assert_eq!(cluster.replica(0, CHILD).applied() as i64, fence);
    // The late ack from before the commit.
    cluster.ack(0, std::slice::from_ref(&before), &[order(1, Some(fence))]);
    cluster.run(100);
    let copy = cluster.hosts[0].io_mut().split_copy(CHILD);
    assert!(
        copy.is_none(),
        "a copy was taken from the split parent: {copy:?}"
    );
    assert!(
        cluster.registries[0].split_reports().is_empty(),
        "the parent reports a split it holds committed: {:?}",
        cluster.registries[0].split_reports()
    );
}

// An ack from before the split began, come late (delivered twice, or
// from a meta that had not heard of the split), carries no order for the
// parent: the fenced primary stays fenced in its epoch, refusing the
// moved keys (**split-fence**). Before, it unfenced, took a write of a
// moved key above the fence decree meta had already heard, and fenced
// again higher; the members copied at the first fence decree, and the
// child lost that acknowledged write (**copy-covers-fence**).
#[test]
fn a_late_ack_without_the_order_keeps_the_parent_fenced() {
    let mut cluster = Cluster::new(1, 0);
    let config = assignment(PARENT, 1, 1, 0, &[]);
    cluster.ack(0, std::slice::from_ref(&config), &[]);
    cluster.run(100);
    let late_sent_ms = cluster.clock.get();
    assert!(cluster.set(0, PARENT, &key_of(1), b"v").is_ok());
    cluster.run(100);
    cluster.ack(0, std::slice::from_ref(&config), &[order(1, None)]);
    let fence = fence_reported(&cluster, 0).expect("the primary fenced");
    cluster.run(100);
    // The ack of a beacon sent before the split began.
    cluster.ack_sent_at(0, std::slice::from_ref(&config), &[], late_sent_ms);
    let moved = cluster.set(0, PARENT, &key_of(1), b"w");
    assert_eq!(moved.map_err(|error| error.code), Err(ErrorCode::Splitting));
    assert_eq!(fence_reported(&cluster, 0), Some(fence));
}

// An ack from before meta took a replica off a node, come late (delivered
// twice), names the node a member again at the older ballot: the node
// does not host the replica again (**acks-in-order**). Before, it hosted
// it empty, as a secondary the primary of that ballot still counted
// (**secondary-holds-committed**).
#[test]
fn a_late_ack_does_not_host_again_a_replica_that_left() {
    let mut cluster = Cluster::new(2, 0);
    let first = assignment(PARENT, 1, 1, 0, &[1]);
    cluster.ack(1, std::slice::from_ref(&first), &[]);
    cluster.ack(0, std::slice::from_ref(&first), &[]);
    cluster.run(100);
    let late_sent_ms = cluster.clock.get();
    assert!(cluster.set(0, PARENT, &key_of(0), b"v").is_ok());
    cluster.run(100);
    let second = assignment(PARENT, 1, 2, 0, &[]);
    cluster.ack(1, std::slice::from_ref(&second), &[]);
    // Meta drops the replica n2 still reports.
    let ack = BeaconAck {
        drops: vec![PARENT],
        lease_ms: LEASE_MS,
        ..BeaconAck::default()
    };
    let sent_ms = cluster.clock.get();
    let part = split_ack(&cluster.registries[1], 1, &name(1), ack, sent_ms).remove(0);
    cluster.hosts[1].apply_ack(part);
    assert!(cluster.hosts[1].replica(PARENT).is_none(), "n2 left");
    cluster.ack_sent_at(1, std::slice::from_ref(&first), &[], late_sent_ms);
    let again = cluster.hosts[1].replica(PARENT).map(|replica| {
        (
            replica.core().role(),
            replica.core().ballot(),
            replica.applied(),
        )
    });
    assert!(again.is_none(), "n2 hosts the replica again: {again:?}");
}
