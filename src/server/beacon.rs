//! Cluster mode: the node's beacons to meta, on threads of their own.
//!
//! Whether meta believes a node alive depends on its beacons alone, so
//! nothing a shard does may delay them (**beacons-never-wait**): a
//! dedicated thread sends a beacon every `beacon_interval` over its own
//! connection (blocking sockets with bounded timeouts), built from the
//! node-wide hosted registry, and splits each ack by shard into a
//! [`ShardAck`] handed to that shard over a bounded channel. A shard busy
//! with synchronous work (a flush, a ballot fsync, a copy) only applies its
//! part later; a full channel drops the part (every ack repeats the node's
//! whole assignment, so the next one carries it again). Requests replicas
//! make to meta (`RemoveSecondary`, `UpgradeLearner`) go out on a second
//! thread and connection, so a slow answer never holds up a beacon.
//!
//! A shard that has not ticked for [`SHARD_STALL_MS`] is wedged: the node
//! then withholds its beacons, so that meta fails its partitions over
//! rather than wait on them forever.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use markab_shards::runtime::StopHandle;
use markab_wire::codec::{decode_response, Encoder};
use markab_wire::frame::{FrameDecoder, MessageKind, FRAME_BODY_BYTES_MAX};
use markab_wire::{Envelope, ErrorCode, NodeBeacon, Request, Response, ResponseBody};

use crate::clock::monotonic_ms;
use crate::server::shard::NodeLayout;
pub use markab_core::host::registry::{split_ack, ShardAck};

/// How long meta has to answer one beacon or request.
const META_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a connection attempt to one meta address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A shard that has not ticked for this long is wedged: the node stops
/// beaconing (10 s: far beyond any synchronous step a shard takes).
pub const SHARD_STALL_MS: u64 = 10_000;
/// Acks waiting for one shard; more are dropped (the next one repeats them).
pub const SHARD_ACKS_MAX: usize = 4;
/// Requests to meta waiting to be sent; more are dropped (replicas repeat
/// theirs on timers).
pub const META_REQUESTS_MAX: usize = 1_024;

/// The requests replicas make to meta, sent by their own thread.
#[derive(Debug, Default)]
pub struct MetaRequests {
    queue: Mutex<VecDeque<Request>>,
    ready: Condvar,
}

impl MetaRequests {
    /// Queues `request`; dropped when [`META_REQUESTS_MAX`] are waiting (a
    /// replica repeats its requests on its timers).
    pub fn push(&self, request: Request) {
        let mut queue = self.queue.lock().expect("meta request queue lock");
        if queue.len() >= META_REQUESTS_MAX {
            tracing::warn!(request = request.name(), "meta request queue full; dropped");
            return;
        }
        queue.push_back(request);
        self.ready.notify_one();
    }

    /// The next request, waiting at most `wait`.
    fn pop(&self, wait: Duration) -> Option<Request> {
        let queue = self.queue.lock().expect("meta request queue lock");
        let (mut queue, _) = self
            .ready
            .wait_timeout_while(queue, wait, |queue| queue.is_empty())
            .expect("meta request queue lock");
        queue.pop_front()
    }
}

/// Starts the beacon thread and the meta-request thread; both end once
/// `stop` is set. The beacon thread waits until every shard has opened its
/// replicas, so that its first beacon reports them all.
pub fn start(
    layout: Arc<NodeLayout>,
    metas: Vec<String>,
    interval: Duration,
    incarnation: u64,
    shard_acks: Vec<mpsc::Sender<ShardAck>>,
    stop: StopHandle,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let requests = {
        let (layout, metas, stop) = (layout.clone(), metas.clone(), stop.clone());
        std::thread::Builder::new()
            .name("markab-meta-requests".into())
            .spawn(move || request_loop(&layout, &metas, &stop))?
    };
    let beacons = std::thread::Builder::new()
        .name("markab-beacon".into())
        .spawn(move || beacon_loop(&layout, &metas, interval, incarnation, shard_acks, &stop))?;
    Ok(vec![beacons, requests])
}

/// One connection to meta, reconnecting to the next address on failure,
/// or to the leader a follower of a meta group named.
struct MetaLink {
    metas: Vec<String>,
    index: usize,
    /// The leader a follower named (`NOT_LEADER`): the next connection's.
    leader: Option<String>,
    stream: Option<TcpStream>,
    encoder: Encoder,
    decoder: FrameDecoder,
    request_id: u64,
}

impl MetaLink {
    fn new(metas: &[String]) -> MetaLink {
        MetaLink {
            metas: metas.to_vec(),
            index: 0,
            leader: None,
            stream: None,
            encoder: Encoder::new(),
            decoder: FrameDecoder::new(FRAME_BODY_BYTES_MAX),
            request_id: 0,
        }
    }

    /// Sends `request` and waits (bounded) for its answer; on any failure
    /// the connection is dropped and the next call tries the next address.
    /// A follower's `NOT_LEADER` naming the leader sends the request there
    /// at once (one hop).
    fn call(&mut self, request: &Request) -> std::io::Result<Response> {
        let answer = self.call_once(request)?;
        match answer {
            Err(error) if error.code == ErrorCode::NotLeader => {
                self.stream = None;
                if error.message.is_empty() {
                    self.index += 1;
                    return Ok(Err(error));
                }
                self.leader = Some(error.message);
                self.call_once(request)
            }
            answer => Ok(answer),
        }
    }

    fn call_once(&mut self, request: &Request) -> std::io::Result<Response> {
        if self.stream.is_none() {
            let address = match self.leader.take() {
                Some(leader) => leader,
                None => self.metas[self.index % self.metas.len()].clone(),
            };
            match connect(&address) {
                Ok(stream) => self.stream = Some(stream),
                Err(error) => {
                    self.index += 1;
                    return Err(std::io::Error::other(format!(
                        "cannot reach meta at {address}: {error}"
                    )));
                }
            }
            self.decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
        }
        self.request_id += 1;
        let result = self.exchange(request);
        if result.is_err() {
            self.stream = None;
            self.index += 1;
        }
        result
    }

    fn exchange(&mut self, request: &Request) -> std::io::Result<Response> {
        let failed = |message: String| std::io::Error::other(message);
        let stream = self.stream.as_mut().expect("connected above");
        let envelope = Envelope {
            request_id: self.request_id,
            timeout_ms: META_CALL_TIMEOUT.as_millis() as u32,
            ..Envelope::default()
        };
        let mut frame = Vec::new();
        self.encoder
            .request_frame(&envelope, request, &mut frame)
            .map_err(|error| failed(error.to_string()))?;
        stream.write_all(&frame)?;
        let deadline_ms = monotonic_ms() + META_CALL_TIMEOUT.as_millis() as u64;
        loop {
            if let Some(frame) = self
                .decoder
                .next_frame()
                .map_err(|error| failed(error.to_string()))?
            {
                if frame.kind != MessageKind::Response {
                    return Err(failed("meta sent a non-response frame".into()));
                }
                let (id, response) =
                    decode_response(&frame.body).map_err(|error| failed(error.to_string()))?;
                if id == self.request_id {
                    return Ok(response);
                }
                continue; // the late answer to an earlier, timed-out call
            }
            let left_ms = deadline_ms.saturating_sub(monotonic_ms());
            if left_ms == 0 {
                return Err(failed(format!(
                    "meta did not answer within {META_CALL_TIMEOUT:?}"
                )));
            }
            stream.set_read_timeout(Some(Duration::from_millis(left_ms)))?;
            let bytes_read = stream.read(self.decoder.read_buffer(4096))?;
            if bytes_read == 0 {
                return Err(failed("meta closed the connection".into()));
            }
            self.decoder.commit_read(bytes_read);
        }
    }
}

fn connect(address: &str) -> std::io::Result<TcpStream> {
    let resolved: Vec<SocketAddr> = address.to_socket_addrs()?.collect();
    let mut last_error = std::io::Error::other(format!("{address} resolves to nothing"));
    for candidate in resolved {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(META_CALL_TIMEOUT))?;
                return Ok(stream);
            }
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

fn beacon_loop(
    layout: &NodeLayout,
    metas: &[String],
    interval: Duration,
    incarnation: u64,
    mut shard_acks: Vec<mpsc::Sender<ShardAck>>,
    stop: &StopHandle,
) {
    while layout.shards_ready.load(Ordering::Acquire) < layout.addresses.len() {
        if stop.is_stopped() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let node = layout.addresses[0].to_string();
    let shard_addresses: Vec<String> = layout.addresses.iter().map(|a| a.to_string()).collect();
    let mut link = MetaLink::new(metas);
    let interval_ms = interval.as_millis() as u64;
    let mut next_ms = monotonic_ms();
    while !stop.is_stopped() {
        let now_ms = monotonic_ms();
        if now_ms < next_ms {
            std::thread::sleep(Duration::from_millis((next_ms - now_ms).min(20)));
            continue;
        }
        next_ms = now_ms + interval_ms;
        if let Some((shard, quiet_ms)) = layout.stalled_shard(now_ms, SHARD_STALL_MS) {
            tracing::error!(
                shard,
                quiet_ms,
                "a shard is wedged: withholding beacons so that meta fails its partitions over"
            );
            continue;
        }
        let beacon = NodeBeacon {
            node: node.clone(),
            shard_addresses: shard_addresses.clone(),
            replicas: layout.registry.beacon_replicas(),
            incarnation,
            backups: layout
                .backup_jobs
                .get()
                .map(|jobs| jobs.reports())
                .unwrap_or_default(),
            splits: layout.registry.split_reports(),
            dups: layout
                .dup_shipper
                .get()
                .map(|shipper| shipper.reports())
                .unwrap_or_default(),
        };
        // The lease counts from the beacon's send time.
        let sent_ms = monotonic_ms();
        match link.call(&Request::Beacon(beacon)) {
            Ok(Ok(ResponseBody::BeaconAck(ack))) => {
                next_ms = next_beacon_ms(sent_ms, interval_ms, ack.beacon_again_ms);
                if let Some(jobs) = layout.backup_jobs.get() {
                    jobs.keep_ordered(&ack.backups, &ack.restores);
                    for order in &ack.restores {
                        jobs.submit_restore(order);
                    }
                }
                let shards = layout.addresses.len();
                for (shard, part) in split_ack(&layout.registry, shards, &node, ack, sent_ms)
                    .into_iter()
                    .enumerate()
                {
                    if let Err(error) = shard_acks[shard].try_send(part) {
                        if error.is_full() {
                            tracing::debug!(
                                shard,
                                "shard busy: its part of a beacon ack waits for the next one"
                            );
                        }
                    }
                }
            }
            Ok(other) => tracing::warn!(answer = ?other, "meta did not acknowledge the beacon"),
            Err(error) => tracing::warn!(%error, "beacon to meta failed"),
        }
    }
}

/// When to send the beacon after one sent at `sent_ms`: after the usual
/// interval, or sooner when meta's ack asked (`again_ms`, 0 = not asked;
/// **switch-beacons-soon**).
fn next_beacon_ms(sent_ms: u64, interval_ms: u64, again_ms: u32) -> u64 {
    match again_ms {
        0 => sent_ms + interval_ms,
        again_ms => sent_ms + interval_ms.min(u64::from(again_ms)),
    }
}

/// Sends the requests replicas queue for meta, one at a time, on a
/// connection of their own.
fn request_loop(layout: &NodeLayout, metas: &[String], stop: &StopHandle) {
    let mut link = MetaLink::new(metas);
    while !stop.is_stopped() {
        let Some(request) = layout.meta_requests.pop(Duration::from_millis(100)) else {
            continue;
        };
        match link.call(&request) {
            Ok(Ok(_)) => tracing::info!(request = ?request, "meta accepted a request"),
            Ok(Err(error)) if error.code == ErrorCode::StaleBallot => {
                tracing::debug!(%error, "meta refused a stale request")
            }
            Ok(Err(error)) => {
                tracing::info!(request = request.name(), %error, "meta refused a request")
            }
            Err(error) => {
                tracing::warn!(request = request.name(), %error, "request to meta failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Meta's ask for an early beacon shortens the wait, never lengthens it.
    #[test]
    fn an_ack_may_ask_for_the_next_beacon_sooner() {
        assert_eq!(next_beacon_ms(1_000, 100, 0), 1_100);
        assert_eq!(next_beacon_ms(1_000, 100, 10), 1_010);
        assert_eq!(next_beacon_ms(1_000, 100, 500), 1_100);
        assert_eq!(next_beacon_ms(1_000, 5, 10), 1_005);
    }
}
