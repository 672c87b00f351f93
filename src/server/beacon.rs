//! Cluster mode: shard 0's beacons to meta. Every `beacon_interval` the node
//! reports its id, its shard addresses and the replicas it hosts; meta's ack
//! lists every replica the node must host (hosted here if missing, on the
//! shard meta chose) and those whose data it must delete.

use std::rc::Rc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use markab_wire::codec::{decode_response, Encoder};
use markab_wire::frame::{FrameDecoder, MessageKind, FRAME_BODY_BYTES_MAX};
use std::sync::atomic::Ordering;

use markab_wire::{
    BeaconAck, Envelope, Gpid, HostedReplica, NodeBeacon, Request, Response, ResponseBody,
};

use crate::server::shard::replicated::clock_ms;

use crate::server::{MeshMessage, ShardServer};

/// How long meta has to answer one beacon.
const BEACON_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a connection attempt to one meta address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends beacons until the node stops; applies every ack.
pub async fn beacon_loop(server: Rc<ShardServer>, metas: Vec<String>, interval: Duration) {
    let node = server.state.layout.addresses[0].to_string();
    let shard_addresses: Vec<String> = server
        .state
        .layout
        .addresses
        .iter()
        .map(|address| address.to_string())
        .collect();
    // Differs after every restart, so meta knows the replicas' volatile
    // state (their place in the configuration) was lost.
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64);
    let mut connection: Option<TcpStream> = None;
    let mut meta_index = 0;
    let mut encoder = Encoder::new();
    let mut request_id: u64 = 0;
    while !server.stop.is_stopped() {
        let beacon = NodeBeacon {
            node: node.clone(),
            shard_addresses: shard_addresses.clone(),
            replicas: hosted_replicas(&server),
            incarnation,
        };
        if connection.is_none() {
            let address = &metas[meta_index % metas.len()];
            match connect(address).await {
                Ok(stream) => connection = Some(stream),
                Err(error) => {
                    tracing::warn!(meta = %address, %error, "cannot reach meta");
                    meta_index += 1;
                }
            }
        }
        if let Some(stream) = connection.as_mut() {
            request_id += 1;
            // The lease counts from the beacon's send time.
            let sent_ms = clock_ms();
            let exchange = glommio::timer::timeout(BEACON_TIMEOUT, async {
                call(stream, &mut encoder, request_id, &Request::Beacon(beacon))
                    .await
                    .map_err(glommio::GlommioError::IoError)
            })
            .await;
            match exchange {
                Ok(Ok(ResponseBody::BeaconAck(ack))) => {
                    let layout = &server.state.layout;
                    let lease_until = match ack.lease_ms {
                        // Meta without replication grants no leases: a
                        // replica is then its partition's only copy.
                        0 => u64::MAX,
                        lease_ms => sent_ms.saturating_add(lease_ms),
                    };
                    layout.lease_until_ms.store(lease_until, Ordering::Relaxed);
                    layout
                        .replica_count_min_alive
                        .store(ack.replica_count_min_alive, Ordering::Relaxed);
                    apply_ack(&server, ack).await;
                    let requests: Vec<Request> = std::mem::take(
                        &mut *layout
                            .meta_requests
                            .lock()
                            .expect("meta request queue lock"),
                    );
                    for request in requests {
                        request_id += 1;
                        let answer = glommio::timer::timeout(BEACON_TIMEOUT, async {
                            call(stream, &mut encoder, request_id, &request)
                                .await
                                .map_err(glommio::GlommioError::IoError)
                        })
                        .await;
                        tracing::info!(request = ?request, answer = ?answer, "request to meta");
                    }
                }
                Ok(other) => {
                    tracing::warn!(answer = ?other, "meta did not acknowledge the beacon");
                    connection = None;
                    meta_index += 1;
                }
                Err(error) => {
                    tracing::warn!(%error, "beacon to meta failed");
                    connection = None;
                    meta_index += 1;
                }
            }
        }
        glommio::timer::sleep(interval).await;
    }
}

async fn connect(address: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(address, CONNECT_TIMEOUT)
        .await
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    stream
        .set_nodelay(true)
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(stream)
}

/// The replicas this node hosts, from the node-wide registry.
fn hosted_replicas(server: &ShardServer) -> Vec<HostedReplica> {
    let hosted = server
        .state
        .layout
        .hosted
        .read()
        .expect("hosted registry lock");
    let mut replicas: Vec<HostedReplica> = hosted
        .iter()
        .map(|(gpid, entry)| HostedReplica {
            gpid: *gpid,
            shard: entry.shard as i32,
            ballot: entry.ballot,
            decree_applied: entry.decree_applied,
            role: entry.role,
            decree_prepared: entry.decree_prepared,
            decree_committed: entry.decree_committed,
        })
        .collect();
    replicas.sort();
    replicas
}

/// Sends one request to meta and reads its answer.
async fn call(
    stream: &mut TcpStream,
    encoder: &mut Encoder,
    request_id: u64,
    request: &Request,
) -> std::io::Result<Response> {
    fn failed(message: impl Into<String>) -> std::io::Error {
        std::io::Error::other(message.into())
    }
    let envelope = Envelope {
        request_id,
        timeout_ms: BEACON_TIMEOUT.as_millis() as u32,
        ..Envelope::default()
    };
    let mut frame = Vec::new();
    encoder
        .request_frame(&envelope, request, &mut frame)
        .map_err(|error| failed(error.to_string()))?;
    stream.write_all(&frame).await?;
    let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
    loop {
        if let Some(frame) = decoder
            .next_frame()
            .map_err(|error| failed(error.to_string()))?
        {
            if frame.kind != MessageKind::Response {
                return Err(failed("meta sent a non-response frame"));
            }
            let (id, response) =
                decode_response(&frame.body).map_err(|error| failed(error.to_string()))?;
            if id != request_id {
                continue;
            }
            return Ok(response);
        }
        let bytes_read = stream.read(decoder.read_buffer(4096)).await?;
        if bytes_read == 0 {
            return Err(failed("meta closed the connection"));
        }
        decoder.commit_read(bytes_read);
    }
}

/// Hosts what meta assigned and is not hosted yet; drops what meta says to.
async fn apply_ack(server: &Rc<ShardServer>, ack: BeaconAck) {
    let nr_shards = server.state.layout.addresses.len();
    for assignment in ack.assignments {
        let gpid = Gpid {
            app_id: assignment.app_id,
            partition_index: assignment.partition_index,
        };
        // Skip what the replica already follows (a core ignores
        // configurations whose ballot is not above its own).
        let current = server
            .state
            .layout
            .hosted
            .read()
            .expect("hosted registry lock")
            .get(&gpid)
            .map(|entry| entry.ballot);
        if current.is_some_and(|ballot| ballot >= assignment.ballot) {
            continue;
        }
        let shard = assignment.shard as usize;
        if assignment.shard < 0 || shard >= nr_shards {
            tracing::error!(
                shard = assignment.shard,
                nr_shards,
                "meta assigned a replica to a shard this node does not have"
            );
            continue;
        }
        if shard == server.state.shard {
            server.state.assign(&assignment);
        } else if server
            .mesh_senders
            .send_to(shard, MeshMessage::Host(assignment))
            .await
            .is_err()
        {
            return;
        }
    }
    for gpid in ack.drops {
        let shard = server
            .state
            .layout
            .hosted
            .read()
            .expect("hosted registry lock")
            .get(&gpid)
            .map(|entry| entry.shard);
        match shard {
            None => continue,
            Some(shard) if shard == server.state.shard => {
                if let Err(error) = server.state.drop_replica(gpid) {
                    tracing::error!(%error, "cannot drop a replica");
                }
            }
            Some(shard) => {
                if server
                    .mesh_senders
                    .send_to(shard, MeshMessage::Drop(gpid))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}
