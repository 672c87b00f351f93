//! Duplication in the simulator (docs/duplication.md, "Simulator"): an
//! operator adds a duplication of the table to a simulated remote cluster
//! through meta's production state machine; each node ships with the
//! production [`DupShipping`] from its simulated log over the simulated
//! network; the remote cluster is one production `Partition` per
//! partition index, applying batches with `Partition::duplicate`. The
//! duplication invariants are checked after every event, and at the end
//! the remote table must hold what the source's final reads return.

use std::collections::BTreeMap;

use markab_core::host::dup::{DupShipping, ShipBatch, SHIP_BATCH_MUTATIONS_MAX};
use markab_core::meta::state::DupStatus;
use markab_core::replication::messages::{Decree, NodeId};
use markab_core::storage::{MemoryEngine, Partition, StorageLimits, WriteBatch};
use markab_core::wire::message::{DupRequest, ErrorCode, Request, ResponseBody};

use super::super::model::{parse_address, Addr, Event, Msg, PartitionId};
use super::super::node::NOW_EPOCH_S;
use super::{gpid, partition_of, sim_key, World};

/// The operator asks again this long after meta was down or refused.
const RETRY_MS: u64 = 200;
/// A shipped batch unanswered this long is shipped again.
pub(super) const SHIP_TIMEOUT_MS: u64 = 500;
/// Longest the world runs on, fault-free, past its end until every
/// partition's remote holds its committed decree (**dup-converges**).
pub(super) const DUP_EXTRA_MS: u64 = 10_000;

/// A node's shipping, new (at boot).
pub(super) fn new_shipping() -> DupShipping {
    DupShipping::new(SHIP_TIMEOUT_MS)
}

/// The simulated remote cluster and what the checks remember.
pub(super) struct DupWorld {
    /// The duplication's id, once meta added it.
    pub id: Option<u64>,
    /// The remote table: one partition per partition index.
    remotes: Vec<Partition<MemoryEngine>>,
    /// Per remote partition, the decree ranges `(from, last]` it applied
    /// (keyed by `from`, the highest `last` kept), and those a shipper
    /// confirmed without sending, the simulator having checked they hold
    /// nothing to ship (empty writes).
    applied: Vec<BTreeMap<Decree, Decree>>,
    /// Meta's persisted confirmed decree per partition, as last seen.
    persisted: BTreeMap<i32, i64>,
    /// The first confirmed decree meta persisted per partition: where
    /// shipping started.
    first: BTreeMap<i32, i64>,
    /// Every partition's start is persisted: clients may write (writes
    /// before the start are not shipped).
    pub started: bool,
    /// Why meta marked it failed, if it did.
    pub failed: Option<String>,
}

impl DupWorld {
    pub fn new(partitions: u32) -> DupWorld {
        let remotes = (0..partitions)
            .map(|index| {
                let partition = Partition::new(MemoryEngine::new(), StorageLimits::default());
                partition.set_owner(partitions, index);
                partition
            })
            .collect();
        DupWorld {
            id: None,
            remotes,
            applied: vec![BTreeMap::new(); partitions as usize],
            persisted: BTreeMap::new(),
            first: BTreeMap::new(),
            started: false,
            failed: None,
        }
    }

    /// How far the remote partition `index` holds every decree from
    /// `start` on.
    fn reach(&self, index: usize, start: i64) -> i64 {
        let mut reach = start;
        for (from, last) in &self.applied[index] {
            if *from as i64 > reach {
                break;
            }
            reach = reach.max(*last as i64);
        }
        reach
    }
}

impl World {
    /// The operator's `dup add`, retried while meta is down or refuses.
    pub(super) fn operator_dup_add(&mut self) -> Result<(), String> {
        if !self.meta.is_up(self.now_ms) {
            self.schedule(self.now_ms + RETRY_MS, Event::DupAdd);
            return Ok(());
        }
        let answer = self.meta.add_dup(self.now_ms);
        match answer {
            Ok(ResponseBody::Pairs(pairs)) => {
                let id = pairs
                    .iter()
                    .find(|(key, _)| key == "dup_id")
                    .and_then(|(_, id)| id.parse().ok())
                    .ok_or("dup add answered no id")?;
                self.note(format!("operator: dup {id} added"));
                self.counters.dups_added += 1;
                self.dup.as_mut().expect("a dup seed").id = Some(id);
                Ok(())
            }
            Err(error) if matches!(error.code, ErrorCode::StorageError | ErrorCode::NotLeader) => {
                self.note(format!("operator: dup add refused: {error}"));
                self.schedule(self.now_ms + RETRY_MS, Event::DupAdd);
                Ok(())
            }
            other => Err(format!("dup-add: meta answered {other:?}")),
        }
    }

    /// A node's shipping round (each tick): every order its primaries
    /// ship gets a plan; the batch is read from the shard's log, as the
    /// learners are answered, and sent to the remote cluster.
    pub(super) fn ship(&mut self, node: NodeId) -> Result<(), String> {
        let now_ms = self.node_now(node);
        let mut sends = Vec::new();
        let mut skipped = Vec::new();
        let held = self.nodes.get_mut(&node).expect("node");
        for shard in 0..held.shards {
            let (work, cluster_id) = held.hosts[shard].dup_shipping();
            for (order, committed) in work {
                let Some(plan) = held.shipping.plan(&order, committed as i64, now_ms) else {
                    continue;
                };
                let read = {
                    let mut gather = plan.gather();
                    let disk = held.disk.borrow();
                    for record in &disk.logs[shard].records {
                        if record.gpid == order.gpid && !record.torn {
                            gather.offer(record.ballot, record.decree, &record.payload);
                        }
                    }
                    gather.finish()
                };
                // Judged apart from the shipper: the first write of the
                // batch that has something to ship, and its last decree.
                let judged = read.as_ref().map(|mutations| {
                    let mutations = &mutations[..mutations.len().min(SHIP_BATCH_MUTATIONS_MAX)];
                    let write = mutations
                        .iter()
                        .find(|mutation| {
                            !mutation.payload.is_empty()
                                && WriteBatch::decode(&mutation.payload)
                                    .map_or(true, |batch| !batch.is_empty())
                        })
                        .map(|mutation| mutation.decree);
                    (write, mutations.last().map(|mutation| mutation.decree))
                });
                let key = (order.dup_id, order.gpid);
                match held.shipping.batch(&plan, Ok(read), cluster_id, now_ms) {
                    Some(batch) => sends.push(batch),
                    None => {
                        let confirmed = held.shipping.confirmed(key.0, key.1);
                        if confirmed > plan.from as i64 {
                            // Confirmed without sending: nothing in it to ship.
                            if let Some((Some(write), _)) = judged {
                                return Err(format!(
                                    "dup-confirmed-held: {node} confirmed p{} up to {confirmed} without shipping, but decree {write} holds a write",
                                    order.gpid.partition_index
                                ));
                            }
                            skipped.push((
                                order.gpid.partition_index as usize,
                                plan.from,
                                confirmed as Decree,
                            ));
                        }
                    }
                }
            }
        }
        let incarnation = held.incarnation;
        if let Some(dup) = self.dup.as_mut() {
            for (index, from, last) in skipped {
                let held = dup.applied[index].entry(from).or_insert(last);
                *held = (*held).max(last);
            }
        }
        for batch in sends {
            self.send(
                Addr::Node(node),
                Addr::Remote,
                Msg::Duplicate {
                    incarnation,
                    batch: Box::new(batch),
                },
            );
        }
        Ok(())
    }

    /// The remote cluster applies a batch and answers.
    pub(super) fn remote_receive(&mut self, from: Addr, msg: Msg) {
        let Msg::Duplicate { incarnation, batch } = msg else {
            return;
        };
        let Some(dup) = self.dup.as_mut() else {
            return;
        };
        let index = batch.key.1.partition_index as usize;
        let result = match dup.remotes.get(index) {
            Some(remote) => remote.duplicate(&batch.request).map(|_| ()),
            None => Err(markab_core::wire::message::OpError::invalid_argument(
                "no such partition",
            )),
        };
        let result = match result {
            Ok(()) => {
                let last = dup.applied[index].entry(batch.from).or_insert(batch.last);
                *last = (*last).max(batch.last);
                Ok(())
            }
            Err(error) => Err(error.message),
        };
        let mut answer = *batch;
        answer.request.mutations.clear();
        self.send(
            Addr::Remote,
            from,
            Msg::DupAck {
                incarnation,
                batch: Box::new(answer),
                result,
            },
        );
    }

    /// The remote cluster's answer reaches the node that shipped.
    pub(super) fn dup_acked(
        &mut self,
        node: NodeId,
        incarnation: u64,
        batch: &ShipBatch,
        result: Result<(), String>,
    ) {
        let now_ms = self.node_now(node);
        let held = self.nodes.get_mut(&node).expect("node");
        if held.incarnation != incarnation {
            return; // the answer to the previous life's batch
        }
        match result {
            Ok(()) => held.shipping.acked(batch, now_ms),
            Err(error) => held.shipping.refused(batch, error, now_ms),
        }
    }

    /// The duplication invariants after every event, on what meta's store
    /// saved: **dup-confirmed-monotone** — no partition's confirmed decree
    /// ever decreases (meta's crashes included); **dup-confirmed-held** —
    /// the remote partition applied every decree from where shipping
    /// started up to it.
    pub(super) fn check_dups(&mut self) -> Result<(), String> {
        let Some(dup) = self.dup.as_mut() else {
            return Ok(());
        };
        let Some(id) = dup.id else {
            return Ok(());
        };
        let Some(stored) = self.meta.persisted_dups().and_then(|dups| dups.get(&id)) else {
            return Ok(());
        };
        if stored.status == DupStatus::Failed && dup.failed.is_none() {
            dup.failed = Some(stored.fail_message.clone());
            let stored = stored.clone();
            // Legitimate when the failing primary's log starts above the
            // decree to ship because it installed a copy there; otherwise
            // its log was truncated past it (a known gap: a replica meta
            // does not list as a member gets no orders and keeps no log).
            let message = stored.fail_message.clone();
            let failing = message
                .strip_prefix("partition ")
                .and_then(|rest| rest.split_once(" on "))
                .and_then(|(index, rest)| {
                    let index: i32 = index.parse().ok()?;
                    let (name, _) = rest.split_once(": ")?;
                    let (node, _) = parse_address(name)?;
                    Some((index, node))
                });
            let copied = failing.is_some_and(|(index, node)| {
                let confirmed = stored.confirmed.get(&index).copied().unwrap_or(-1);
                self.nodes[&node]
                    .disk
                    .borrow()
                    .replicas
                    .get(&gpid(index as PartitionId))
                    .is_some_and(|replica| replica.log_floor as i64 > confirmed)
            });
            if copied {
                self.counters.dups_failed += 1;
            } else {
                self.counters.dups_failed_gap += 1;
            }
            let line = format!("dup {id} failed (after a copy: {copied}): {message}");
            self.note(line);
            return Ok(());
        }
        if stored.confirmed == dup.persisted {
            return Ok(());
        }
        for (index, confirmed) in &stored.confirmed {
            if let Some(before) = dup.persisted.get(index) {
                if confirmed < before {
                    return Err(format!(
                        "dup-confirmed-monotone: meta's store holds confirmed decree {confirmed} of p{index} after {before}"
                    ));
                }
            }
            let start = *dup.first.entry(*index).or_insert(*confirmed);
            let reach = dup.reach(*index as usize, start);
            if *confirmed > reach {
                return Err(format!(
                    "dup-confirmed-held: meta's store confirms decree {confirmed} of p{index}, but the remote applied only up to {reach} from {start} (ranges {:?})",
                    dup.applied[*index as usize]
                ));
            }
        }
        for index in dup.persisted.keys() {
            if !stored.confirmed.contains_key(index) {
                return Err(format!(
                    "dup-confirmed-monotone: meta's store lost the confirmed decree of p{index}"
                ));
            }
        }
        dup.persisted = stored.confirmed.clone();
        let partitions = self.meta.partition_count() as i32;
        if !dup.started && (0..partitions).all(|index| dup.persisted.contains_key(&index)) {
            dup.started = true;
            let line = format!("dup {id} started at {:?}", dup.persisted);
            self.note(line);
        }
        Ok(())
    }

    /// Whether every partition's serving primary has shipped up to its
    /// committed decree (or the duplication failed): the end may come.
    pub(super) fn dup_caught_up(&self) -> bool {
        let Some(dup) = self.dup.as_ref() else {
            return true;
        };
        let Some(id) = dup.id else {
            return true;
        };
        if dup.failed.is_some() {
            return true;
        }
        let partitions = self.meta.partition_count();
        (0..partitions).all(|pid| {
            let gpid = gpid(pid);
            self.nodes.values().filter(|node| node.alive).any(|node| {
                let Some(shard) = node.registry.shard_of(gpid) else {
                    return false;
                };
                let now_ms = self.now_ms + node.offset_ms;
                node.hosts[shard].replica(gpid).is_some_and(|replica| {
                    let core = replica.core();
                    !replica.is_failed()
                        && core.is_serving(now_ms)
                        && node.shipping.confirmed(id, gpid) >= core.last_committed() as i64
                })
            })
        })
    }

    /// **dup-converges**: at the end, the remote table holds, for every
    /// key, what the source's final read returns. A duplication that
    /// failed is accepted only when `dup list` shows it failed with a
    /// message; one that never started before the clients wrote is
    /// counted and not compared.
    pub(super) fn check_dup_converged(&mut self) -> Result<(), String> {
        let Some(dup) = self.dup.as_ref() else {
            return Ok(());
        };
        let Some(id) = dup.id else {
            return Err("dup-add: the duplication was never added".into());
        };
        if dup.failed.is_some() {
            let list = self.meta.query(
                Request::Dup(DupRequest::List {
                    table: "sim".into(),
                }),
                self.now_ms,
            );
            let shown = match &list {
                Ok(ResponseBody::Pairs(pairs)) => pairs.iter().any(|(key, value)| {
                    key == &format!("dup {id}")
                        && value.contains("status=failed")
                        && value.contains("fail_message=")
                }),
                _ => false,
            };
            if !shown {
                return Err(format!(
                    "dup-converges: dup {id} failed but dup list shows {list:?}"
                ));
            }
            return Ok(());
        }
        if !dup.started {
            self.counters.dups_unstarted += 1;
            return Ok(());
        }
        if !self.dup_caught_up() {
            return Err(format!(
                "dup-converges: the remote is still behind {DUP_EXTRA_MS} ms past the end (confirmed {:?})",
                dup.persisted
            ));
        }
        let partitions = self.meta.partition_count();
        for key_index in 0..self.settings.keys {
            let pid: PartitionId = partition_of(key_index, partitions);
            let gpid = gpid(pid);
            let mut serving = Vec::new();
            for node in self.nodes.values().filter(|node| node.alive) {
                let Some(shard) = node.registry.shard_of(gpid) else {
                    continue;
                };
                let now_ms = self.now_ms + node.offset_ms;
                if node.hosts[shard].replica(gpid).is_some_and(|replica| {
                    !replica.is_failed() && replica.core().is_serving(now_ms)
                }) {
                    serving.push((node.id, shard));
                }
            }
            let [(node, shard)] = serving[..] else {
                continue;
            };
            let get = Request::Get(sim_key(key_index));
            let source = self.nodes[&node].hosts[shard].read(gpid, &get);
            let remote = dup.remotes[pid as usize].execute(&get, NOW_EPOCH_S);
            let same = match (&source, &remote) {
                (Ok(ResponseBody::Value(a)), Ok(ResponseBody::Value(b))) => a == b,
                (Err(a), Err(b)) => a.code == ErrorCode::NotFound && b.code == ErrorCode::NotFound,
                _ => false,
            };
            if !same {
                return Err(format!(
                    "dup-converges: key {key_index} (p{pid}) reads {source:?} at the source but {remote:?} at the remote"
                ));
            }
        }
        self.counters.dups_converged += 1;
        Ok(())
    }
}
