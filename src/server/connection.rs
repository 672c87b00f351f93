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
//!
//! The first four bytes of a connection choose its protocol: `MRKB` is
//! Markab's own framing, `THFT` Pegasus's client protocol ([`super::thft`],
//! docs/thrift.md). Both share the dispatch below; only decoding and reply
//! encoding differ.

use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use markab_wire::codec;
use markab_wire::frame::{
    FrameDecoder, FrameError, MessageKind, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES,
};
use markab_wire::thrift::THFT_MAGIC;
use markab_wire::{Envelope, ErrorCode, Gpid, OpError, Request, Response};

use crate::metrics::{operation_index, ShardMetrics};
use crate::server::{MeshMessage, ShardServer};

/// Bytes of free buffer offered to each socket `read`.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Requests of one connection running as tasks (writes, forwards) at once;
/// the reader waits when this many are in flight.
pub const CONNECTION_IN_FLIGHT_MAX: u64 = 1024;
/// Reply frames queued for the writer task of one connection.
const REPLY_QUEUE_MAX: usize = 1024;

pub type ReplySender = Rc<LocalSender<Vec<u8>>>;

/// Serves one connection until the peer closes it, a framing error occurs or
/// the shard stops (the shard's executor then drops this task).
pub async fn serve_connection(server: Rc<ShardServer>, stream: TcpStream) {
    let (mut reader, writer) = stream.split();
    let (reply_sender, reply_receiver) = local_channel::new_bounded(REPLY_QUEUE_MAX);
    let writer_task = glommio::spawn_local(write_replies(writer, reply_receiver));
    let replies = Rc::new(reply_sender);
    match read_prefix(&mut reader).await {
        Some(prefix) if prefix.starts_with(&THFT_MAGIC) => {
            super::thft::read_requests(server, reader, prefix, replies).await;
        }
        Some(prefix) => read_requests(server, reader, prefix, replies).await,
        None => drop(replies),
    }
    // Every reply sender is gone once the in-flight tasks finish; the writer
    // then drains the queue and closes the socket.
    writer_task.await;
}

/// Bytes that tell the protocols apart.
const PROTOCOL_MAGIC_BYTES: usize = 4;

/// A connection's first bytes, at least the [`PROTOCOL_MAGIC_BYTES`] that
/// name its protocol; `None` when the peer closed (or failed) before that.
async fn read_prefix(reader: &mut ReadHalf<TcpStream>) -> Option<Vec<u8>> {
    let mut prefix = vec![0; READ_CHUNK_BYTES];
    let mut filled = 0;
    while filled < PROTOCOL_MAGIC_BYTES {
        match reader.read(&mut prefix[filled..]).await {
            Ok(0) => return None,
            Ok(bytes_read) => filled += bytes_read,
            Err(error) => {
                tracing::debug!(%error, "connection read failed");
                return None;
            }
        }
    }
    prefix.truncate(filled);
    Some(prefix)
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
    prefix: Vec<u8>,
    replies: ReplySender,
) {
    let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
    decoder.extend(&prefix);
    let in_flight = Rc::new(Semaphore::new(CONNECTION_IN_FLIGHT_MAX));
    loop {
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
            let to = ReplyTo::Markab {
                request_id: envelope.request_id,
            };
            dispatch(
                &server,
                &replies,
                &in_flight,
                envelope,
                request,
                to,
                Some(frame.body),
            )
            .await;
        }
        let Some(bytes_read) = read_chunk(&mut reader, decoder.read_buffer(READ_CHUNK_BYTES)).await
        else {
            return;
        };
        decoder.commit_read(bytes_read);
    }
}

/// Reads what `reader` has into `buffer`: `None` once the peer closed the
/// connection or the read failed.
pub async fn read_chunk(reader: &mut ReadHalf<TcpStream>, buffer: &mut [u8]) -> Option<usize> {
    match reader.read(buffer).await {
        Ok(0) => None,
        Ok(bytes_read) => Some(bytes_read),
        Err(error) => {
            tracing::debug!(%error, "connection read failed");
            None
        }
    }
}

/// Where and in which protocol a request's reply goes.
#[derive(Clone, Debug)]
pub enum ReplyTo {
    /// A Markab response frame carrying the request's id.
    Markab { request_id: u64 },
    /// A Pegasus reply to the RPC `name` with the client's `seqid`.
    Thft { name: &'static str, seqid: i32 },
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
/// task otherwise. `body` is the request's Markab body when it came as one
/// (forwarded as it is); a request from another protocol is encoded for the
/// mesh only when it must be forwarded.
pub async fn dispatch(
    server: &Rc<ShardServer>,
    replies: &ReplySender,
    in_flight: &Rc<Semaphore>,
    envelope: Envelope,
    request: Request,
    to: ReplyTo,
    body: Option<Vec<u8>>,
) {
    let gpid = envelope.gpid;
    if let Request::Peer(peer) = request {
        route_peer(server, gpid, peer).await;
        return;
    }
    if request.is_meta() {
        let error = OpError::invalid_argument(format!(
            "{} is a meta request; send it to `markab meta`, not to a node",
            request.name()
        ));
        answer(server, replies, &to, gpid, &request, &Err(error)).await;
        return;
    }
    if let Request::QueryRoute { table } = &request {
        let response = server
            .state
            .layout
            .route(table)
            .map(markab_wire::ResponseBody::Route);
        answer(server, replies, &to, gpid, &request, &response).await;
        return;
    }
    // A shard serves what it hosts without touching node-wide state.
    let owner = if server.state.hosts(gpid) {
        Ok(server.state.shard)
    } else {
        server.state.layout.locate(gpid)
    };
    let owner = match owner {
        Ok(owner) => owner,
        Err(error) => {
            answer(server, replies, &to, gpid, &request, &Err(error)).await;
            return;
        }
    };
    let local = owner == server.state.shard;
    if local {
        // A route of another partition count than a split left
        // (**route-version**).
        if let Err(error) = server.state.check_route(gpid, envelope.partition_count) {
            answer(server, replies, &to, gpid, &request, &Err(error)).await;
            return;
        }
    }
    let started = Instant::now();
    if local && !request.is_write() {
        let response = server.state.serve_read(gpid, &request);
        observe(&server.metrics, &request, started, &response);
        answer(server, replies, &to, gpid, &request, &response).await;
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
            let response = server.state.serve_write(gpid, &request).await;
            observe(&server.metrics, &request, started, &response);
            answer(&server, &replies, &to, gpid, &request, &response).await;
        } else {
            let body = body.unwrap_or_else(|| server.encode_request_body(&envelope, &request));
            match (forward(&server, owner, body).await, &to) {
                (Ok(frame), ReplyTo::Markab { .. }) => {
                    let _ = replies.send(frame).await;
                }
                (Ok(frame), ReplyTo::Thft { .. }) => {
                    let response = decode_reply_frame(&frame);
                    answer(&server, &replies, &to, gpid, &request, &response).await;
                }
                (Err(error), _) => {
                    answer(&server, &replies, &to, gpid, &request, &Err(error)).await;
                }
            }
        }
        server.metrics.in_flight.dec();
        drop(permit);
    })
    .detach();
}

/// The response inside a Markab reply frame another shard encoded.
fn decode_reply_frame(frame: &[u8]) -> Response {
    let body = frame.get(FRAME_HEADER_BYTES..).unwrap_or_default();
    match codec::decode_response(body) {
        Ok((_, response)) => response,
        Err(error) => Err(OpError::new(
            ErrorCode::Internal,
            format!("undecodable reply from the owning shard: {error}"),
        )),
    }
}

/// Sends `response` to `request` in the connection's protocol.
pub async fn answer(
    server: &ShardServer,
    replies: &ReplySender,
    to: &ReplyTo,
    gpid: Gpid,
    request: &Request,
    response: &Response,
) {
    match to {
        ReplyTo::Markab { request_id } => send_reply(server, replies, *request_id, response).await,
        ReplyTo::Thft { name, seqid } => {
            if let Some(frame) =
                super::thft::encode_reply(server, name, *seqid, gpid, request, response)
            {
                let _ = replies.send(frame).await;
            }
        }
    }
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
