//! The simulated clients: at most one operation outstanding each, routed
//! by the partition count they learned from meta (the route version their
//! requests carry) and sent to the node they believe is primary (both
//! refreshed from meta after a refusal — `STALE_ROUTE`, `SPLITTING` and
//! `WRONG_PARTITION` included — or a timeout), every operation recorded
//! for the linearizability checker; and the final reads through each
//! partition's serving primary under the final count.

use markab_core::check::{KvInput, KvOutput, Value};
use markab_core::replication::messages::NodeId;
use markab_core::wire::message::{
    CheckAndSetRequest, CheckType, ErrorCode, Key, Request, Response, ResponseBody,
};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeMap;

use super::super::model::{Addr, Event, Msg, PartitionId, Recorded, Reply};
use super::{gpid, partition_of, World};

/// A client: at most one operation outstanding.
pub(super) struct SimClient {
    pub(super) route: BTreeMap<PartitionId, NodeId>,
    /// The table's partition count as last learned from meta.
    pub(super) partition_count: u32,
    /// (op id, index in the history).
    pub(super) outstanding: Option<(u64, usize)>,
}

impl World {
    // ---- clients ----

    pub(super) fn client_step(&mut self, client: usize) {
        if self.now_ms + self.settings.client_timeout_ms + 500 > self.settings.end_ms
            || self.clients[client].outstanding.is_some()
        {
            return;
        }
        let key_index = self.rng.random_range(0..self.settings.keys);
        let count = self.clients[client].partition_count;
        let pid = partition_of(key_index, count);
        let route = match self.clients[client].route.get(&pid) {
            Some(node) => Some(*node),
            None => self.meta.config(pid).primary,
        };
        let Some(node) = route else {
            self.schedule(self.now_ms + 50, Event::ClientStep { client });
            return;
        };
        self.clients[client].route.insert(pid, node);
        let (input, request) = self.random_op(key_index);
        let op = self.next_op;
        self.next_op += 1;
        let index = self.history.len();
        let invoke_ns = self.timestamp_ns();
        self.history.push(Recorded {
            client,
            key_index,
            invoke_ns,
            input,
            complete: None,
        });
        self.refused.push(false);
        self.clients[client].outstanding = Some((op, index));
        self.op_partitions.insert(op, (pid, key_index));
        self.send(
            Addr::Client(client),
            Addr::Node(node),
            Msg::Request {
                op,
                gpid: gpid(pid),
                partition_count: count as i32,
                request,
            },
        );
        let timeout_ms = self.now_ms + self.settings.client_timeout_ms;
        self.schedule(timeout_ms, Event::ClientTimeout { client, op });
    }

    fn random_op(&mut self, key_index: usize) -> (KvInput, Request) {
        let key = sim_key(key_index);
        let small = |rng: &mut StdRng| rng.random_range(0..4u32).to_string().into_bytes();
        match self.rng.random_range(0..10) {
            0..=2 => {
                let value = small(&mut self.rng);
                let request = Request::Set {
                    key,
                    value: value.clone(),
                    ttl_seconds: 0,
                };
                (KvInput::Put(Value(value)), request)
            }
            3..=5 => (KvInput::Get, Request::Get(key)),
            6 => (KvInput::Delete, Request::Del(key)),
            7 | 8 => {
                let delta = self.rng.random_range(1..=3);
                let request = Request::Incr {
                    key,
                    increment: delta,
                    ttl_seconds: 0,
                };
                (KvInput::Incr(delta), request)
            }
            _ => {
                let expect = if self.rng.random_bool(0.3) {
                    None
                } else {
                    Some(small(&mut self.rng))
                };
                let new = small(&mut self.rng);
                let request = Request::CheckAndSet(CheckAndSetRequest {
                    hash_key: key.hash_key.clone(),
                    check_sort_key: key.sort_key.clone(),
                    check_type: if expect.is_some() {
                        CheckType::ValueBytesEqual
                    } else {
                        CheckType::ValueNotExist
                    },
                    check_operand: expect.clone().unwrap_or_default(),
                    set_sort_key: key.sort_key,
                    set_value: new.clone(),
                    set_ttl_seconds: 0,
                    return_check_value: false,
                });
                (
                    KvInput::CheckAndSet {
                        expect: expect.map(Value),
                        new: Value(new),
                    },
                    request,
                )
            }
        }
    }

    fn timestamp_ns(&mut self) -> u64 {
        self.history_tick += 1;
        self.now_ms * 1_000_000 + self.history_tick % 1_000_000
    }

    pub(super) fn client_reply(
        &mut self,
        client: usize,
        op: u64,
        reply: Reply,
    ) -> Result<(), String> {
        if self.clients[client]
            .outstanding
            .is_none_or(|(held, _)| held != op)
        {
            return Ok(()); // a late reply to an op already timed out
        }
        match reply {
            Reply::Done(response) => {
                let (_, index) = self.clients[client].outstanding.expect("outstanding");
                let output = to_output(&self.history[index].input, response);
                let output = output.ok_or_else(|| {
                    format!("client {client} op {op}: an answer the model cannot express")
                })?;
                self.client_done(client, Some(output), false);
            }
            Reply::Refused(why) => {
                let (_, index) = self.clients[client].outstanding.expect("outstanding");
                self.refused[index] = true;
                if self.verbose {
                    self.note(format!("client {client} op {op} refused: {why}"));
                }
                self.client_done(client, None, true);
            }
            Reply::Unknown => self.client_done(client, None, true),
        }
        Ok(())
    }

    /// Ends the outstanding op (`output` None = unknown or refused) and
    /// schedules the next; `refresh` drops the cached route.
    pub(super) fn client_done(&mut self, client: usize, output: Option<KvOutput>, refresh: bool) {
        let (_, index) = self.clients[client]
            .outstanding
            .take()
            .expect("outstanding");
        if let Some(output) = output {
            let complete_ns = self.timestamp_ns();
            self.history[index].complete = Some((complete_ns, output));
        }
        if refresh {
            self.clients[client].route.clear();
            self.clients[client].partition_count = self.meta.partition_count();
        }
        let think_ms = if refresh {
            self.rng.random_range(10..=30)
        } else {
            self.rng.random_range(0..=5)
        };
        self.schedule(self.now_ms + think_ms, Event::ClientStep { client });
    }

    /// After the run: every key is read through its partition's serving
    /// primary under the table's final count (a split's children
    /// included), so an acknowledged write that was lost — across a split
    /// too — shows up as a non-linearizable history.
    pub(super) fn final_reads(&mut self) -> Result<usize, String> {
        let mut count = 0;
        let partitions = self.meta.partition_count();
        for key_index in 0..self.settings.keys {
            let pid = partition_of(key_index, partitions);
            let gpid = gpid(pid);
            let mut serving = Vec::new();
            for node in self.nodes.values().filter(|node| node.alive) {
                let Some(shard) = node.registry.shard_of(gpid) else {
                    continue;
                };
                let host = &node.hosts[shard];
                let now_ms = self.now_ms + node.offset_ms;
                if host.replica(gpid).is_some_and(|replica| {
                    !replica.is_failed() && replica.core().is_serving(now_ms)
                }) {
                    serving.push((node.id, shard));
                }
            }
            let [(node, shard)] = serving[..] else {
                continue;
            };
            let response =
                self.nodes[&node].hosts[shard].read(gpid, &Request::Get(sim_key(key_index)));
            let output = to_output(&KvInput::Get, response)
                .ok_or_else(|| format!("final read of key {key_index} failed"))?;
            let invoke_ns = self.timestamp_ns();
            let complete_ns = self.timestamp_ns();
            self.history.push(Recorded {
                client: usize::MAX,
                key_index,
                invoke_ns,
                input: KvInput::Get,
                complete: Some((complete_ns, output)),
            });
            self.refused.push(false);
            count += 1;
        }
        Ok(count)
    }
}

pub fn sim_key(key_index: usize) -> Key {
    Key::new(format!("k{key_index}"), "s")
}

/// The checker's view of a storage answer; `None` for answers the model
/// cannot express (a failure of the run).
fn to_output(input: &KvInput, response: Response) -> Option<KvOutput> {
    match (input, response) {
        (KvInput::Put(_) | KvInput::Delete, Ok(ResponseBody::Done)) => Some(KvOutput::Written),
        (KvInput::Get, Ok(ResponseBody::Value(value))) => Some(KvOutput::Get(Some(Value(value)))),
        (KvInput::Get, Err(error)) if error.code == ErrorCode::NotFound => {
            Some(KvOutput::Get(None))
        }
        (KvInput::Incr(_), Ok(ResponseBody::Incr(value))) => Some(KvOutput::Incr(Ok(value))),
        (KvInput::CheckAndSet { .. }, Ok(ResponseBody::CheckAndSet(result))) => {
            Some(KvOutput::CheckAndSet(result.set_succeeded))
        }
        _ => None,
    }
}
