//! One client connection on one shard: read frames, serve or forward each
//! request, write the replies back in batches.
//!
//! Data path of one request (docs/DESIGN.md, "Data path"): bytes from the
//! socket go into a `FrameDecoder`; each whole frame's checksum and
//! flatbuffer are verified and decoded. Reads of partitions this shard owns
//! are answered at once. Writes, and requests for other shards' partitions
//! (forwarded over the mesh), run as their own tasks — a write waits for its
//! log sync, and many writes of one connection share one sync. Replies go to
//! a per-connection queue; a writer task sends everything queued with one
//! `write_all`. Replies may leave out of order; clients match request ids.
//!
//! A frame that cannot be decoded gets a `BAD_FRAME` (or `UNKNOWN_KIND`)
//! reply and the connection is closed: after a framing error the byte stream
//! cannot be trusted. A decodable request with bad arguments only gets an
//! error reply.

use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use markab_wire::codec;
use markab_wire::frame::{FrameDecoder, FrameError, MessageKind, FRAME_BODY_BYTES_MAX};
use markab_wire::{Envelope, ErrorCode, OpError, Request, Response};

use crate::metrics::{operation_index, ShardMetrics};
use crate::server::{MeshMessage, ShardServer};

/// Bytes of free buffer offered to each socket `read`.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Requests of one connection running as tasks (writes, forwards) at once;
/// the reader waits when this many are in flight.
pub const CONNECTION_IN_FLIGHT_MAX: u64 = 1024;
/// Reply frames queued for the writer task of one connection.
const REPLY_QUEUE_MAX: usize = 1024;

type ReplySender = Rc<LocalSender<Vec<u8>>>;

/// Serves one connection until the peer closes it, a framing error occurs or
/// the shard stops (the shard's executor then drops this task).
pub async fn serve_connection(server: Rc<ShardServer>, stream: TcpStream) {
    let (reader, writer) = stream.split();
    let (reply_sender, reply_receiver) = local_channel::new_bounded(REPLY_QUEUE_MAX);
    let writer_task = glommio::spawn_local(write_replies(writer, reply_receiver));
    read_requests(server, reader, Rc::new(reply_sender)).await;
    // Every reply sender is gone once the in-flight tasks finish; the writer
    // then drains the queue and closes the socket.
    writer_task.await;
}

/// Sends queued reply frames, coalescing whatever is queued into one write.
async fn write_replies(mut writer: WriteHalf<TcpStream>, replies: LocalReceiver<Vec<u8>>) {
    let mut batch = Vec::new();
    while let Some(frame) = replies.recv().await {
        batch.extend_from_slice(&frame);
        append_queued(&mut batch, &replies);
        if let Err(error) = writer.write_all(&batch).await {
            tracing::debug!(%error, "connection write failed");
            return;
        }
        batch.clear();
    }
    let _ = writer.close().await;
}

/// Appends every frame already waiting in `queue` to `batch`, without
/// waiting: what one socket write sends (replies here, peer messages on a
/// link).
pub fn append_queued(batch: &mut Vec<u8>, queue: &LocalReceiver<Vec<u8>>) {
    while let Some(Some(frame)) = queue.recv().now_or_never() {
        batch.extend_from_slice(&frame);
    }
}

async fn read_requests(
    server: Rc<ShardServer>,
    mut reader: ReadHalf<TcpStream>,
    replies: ReplySender,
) {
    let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
    let in_flight = Rc::new(Semaphore::new(CONNECTION_IN_FLIGHT_MAX));
    loop {
        let bytes_read = match reader.read(decoder.read_buffer(READ_CHUNK_BYTES)).await {
            Ok(0) => return,
            Ok(bytes_read) => bytes_read,
            Err(error) => {
                tracing::debug!(%error, "connection read failed");
                return;
            }
        };
        decoder.commit_read(bytes_read);
        loop {
            let frame = match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => frame,
                Err(error) => {
                    let code = match error {
                        FrameError::UnknownKind(_) => ErrorCode::UnknownKind,
                        _ => ErrorCode::BadFrame,
                    };
                    let error = OpError::new(code, format!("bad frame: {error}"));
                    send_reply(&server, &replies, 0, &Err(error)).await;
                    return;
                }
            };
            if frame.kind != MessageKind::Request {
                let error = OpError::new(
                    ErrorCode::UnknownKind,
                    format!("a node accepts request frames, not {:?}", frame.kind),
                );
                send_reply(&server, &replies, 0, &Err(error)).await;
                return;
            }
            let (envelope, request) = match decode(&server, &replies, &frame.body).await {
                Decoded::Serve(envelope, request) => (envelope, request),
                Decoded::Skip => continue,
                Decoded::Close => return,
            };
            dispatch(&server, &replies, &in_flight, envelope, request, frame.body).await;
        }
    }
}

/// What to do with a received frame body.
enum Decoded {
    /// Serve this request.
    Serve(Envelope, Request),
    /// Already answered (with an error); go on with the next frame.
    Skip,
    /// Already answered (with an error); close the connection.
    Close,
}

/// Decodes a request body, answering the ones that cannot be served.
async fn decode(server: &ShardServer, replies: &ReplySender, body: &[u8]) -> Decoded {
    if body.len() > server.request_bytes_max {
        let request_id = codec::peek_request_id(body).unwrap_or(0);
        let error = OpError::new(
            ErrorCode::RequestTooLarge,
            format!(
                "request of {} bytes exceeds this node's bound of {} bytes (tuning key request_bytes_max)",
                body.len(),
                server.request_bytes_max
            ),
        );
        send_reply(server, replies, request_id, &Err(error)).await;
        // The frame itself was sound, so the stream can still be trusted.
        return Decoded::Skip;
    }
    match codec::decode_request(body) {
        Ok((envelope, request)) => Decoded::Serve(envelope, request),
        Err(error) => {
            let request_id = codec::peek_request_id(body).unwrap_or(0);
            let error = OpError::new(ErrorCode::BadFrame, format!("undecodable request: {error}"));
            send_reply(server, replies, request_id, &Err(error)).await;
            Decoded::Close
        }
    }
}

/// Serves a request: at once when it is a read of an owned partition, as a
/// task otherwise.
async fn dispatch(
    server: &Rc<ShardServer>,
    replies: &ReplySender,
    in_flight: &Rc<Semaphore>,
    envelope: Envelope,
    request: Request,
    body: Vec<u8>,
) {
    if let Request::Peer(peer) = request {
        route_peer(server, envelope.gpid, peer).await;
        return;
    }
    if request.is_meta() {
        let error = OpError::invalid_argument(format!(
            "{} is a meta request; send it to `markab meta`, not to a node",
            request.name()
        ));
        send_reply(server, replies, envelope.request_id, &Err(error)).await;
        return;
    }
    if let Request::QueryRoute { table } = &request {
        let response = server
            .state
            .layout
            .route(table)
            .map(markab_wire::ResponseBody::Route);
        send_reply(server, replies, envelope.request_id, &response).await;
        return;
    }
    // A shard serves what it hosts without touching node-wide state.
    let owner = if server.state.hosts(envelope.gpid) {
        Ok(server.state.shard)
    } else {
        server.state.layout.locate(envelope.gpid)
    };
    let owner = match owner {
        Ok(owner) => owner,
        Err(error) => {
            send_reply(server, replies, envelope.request_id, &Err(error)).await;
            return;
        }
    };
    let local = owner == server.state.shard;
    if local {
        // A route of another partition count than a split left
        // (**route-version**).
        if let Err(error) = server
            .state
            .check_route(envelope.gpid, envelope.partition_count)
        {
            send_reply(server, replies, envelope.request_id, &Err(error)).await;
            return;
        }
    }
    let started = Instant::now();
    if local && !request.is_write() {
        let response = server.state.serve_read(envelope.gpid, &request);
        observe(&server.metrics, &request, started, &response);
        send_reply(server, replies, envelope.request_id, &response).await;
        return;
    }
    let Ok(permit) = in_flight.acquire_static_permit(1).await else {
        return;
    };
    let server = server.clone();
    let replies = replies.clone();
    glommio::spawn_local(async move {
        server.metrics.in_flight.inc();
        if local {
            let response = server.state.serve_write(envelope.gpid, &request).await;
            observe(&server.metrics, &request, started, &response);
            send_reply(&server, &replies, envelope.request_id, &response).await;
        } else {
            match forward(&server, owner, body).await {
                Ok(frame) => {
                    let _ = replies.send(frame).await;
                }
                Err(error) => send_reply(&server, &replies, envelope.request_id, &Err(error)).await,
            }
        }
        server.metrics.in_flight.dec();
        drop(permit);
    })
    .detach();
}

/// Hands a peer message to the shard hosting its partition; nothing is
/// answered, and a message for a partition this node does not host is
/// dropped (its sender resends).
async fn route_peer(server: &ShardServer, gpid: markab_wire::Gpid, peer: markab_wire::PeerRequest) {
    if server.state.hosts(gpid) {
        server.state.on_peer(gpid, peer);
        return;
    }
    match server.state.layout.locate(gpid) {
        Ok(owner) if owner != server.state.shard => {
            let _ = server
                .mesh_senders
                .send_to(
                    owner,
                    MeshMessage::Peer {
                        gpid,
                        request: peer,
                    },
                )
                .await;
        }
        _ => tracing::debug!(
            app_id = gpid.app_id,
            partition = gpid.partition_index,
            "peer message for a partition not hosted here"
        ),
    }
}

async fn send_reply(
    server: &ShardServer,
    replies: &ReplySender,
    request_id: u64,
    response: &Response,
) {
    let frame = server.encode_reply(request_id, response);
    // The writer is gone only when the socket failed; the reply has nowhere to go.
    let _ = replies.send(frame).await;
}

/// Sends a request body to the shard that owns its partition and waits for
/// the encoded reply frame.
async fn forward(server: &ShardServer, owner: usize, body: Vec<u8>) -> Result<Vec<u8>, OpError> {
    let (reply, reply_received) = oneshot::channel();
    let shutting_down = || OpError::new(ErrorCode::ShuttingDown, "the owning shard is stopping");
    server
        .mesh_senders
        .send_to(owner, MeshMessage::Forward { body, reply })
        .await
        .map_err(|_| shutting_down())?;
    reply_received.await.map_err(|_| shutting_down())
}

/// Serves a request forwarded by another shard; returns the reply frame.
pub async fn serve_forwarded(server: &ShardServer, body: &[u8]) -> Vec<u8> {
    let (request_id, response): (u64, Response) = match codec::decode_request(body) {
        Ok((envelope, request)) => {
            // The owner counts forwarded requests; the forwarding shard does not.
            let started = Instant::now();
            let response = match server
                .state
                .check_route(envelope.gpid, envelope.partition_count)
            {
                Ok(()) => server.state.serve(envelope.gpid, &request).await,
                Err(error) => Err(error),
            };
            observe(&server.metrics, &request, started, &response);
            (envelope.request_id, response)
        }
        Err(error) => (0, Err(OpError::new(ErrorCode::BadFrame, error.to_string()))),
    };
    server.encode_reply(request_id, &response)
}

/// Counts a served request in the shard's metrics.
fn observe(metrics: &ShardMetrics, request: &Request, started: Instant, response: &Response) {
    let error = response.as_ref().err().map(|error| error.code);
    metrics.observe(operation_index(request), started.elapsed(), error);
}
