//! One client connection on one shard: read frames, serve or forward each
//! request, write the replies back in batches.
//!
//! Data path of one request (docs/DESIGN.md, "Data path"): bytes from the
//! socket go into a `FrameDecoder`; each whole frame's checksum and
//! flatbuffer are verified and decoded; the request is served on this shard
//! if it owns the partition, otherwise forwarded over the mesh to the owner
//! and its encoded reply awaited; replies to every request found in one read
//! are written with one `write_all`.
//!
//! A frame that cannot be decoded gets a `BAD_FRAME` (or `UNKNOWN_KIND`)
//! reply and the connection is closed: after a framing error the byte stream
//! cannot be trusted. A decodable request with bad arguments only gets an
//! error reply.

use std::rc::Rc;

use futures::channel::oneshot;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use markab_wire::codec::{self, Encoder};
use markab_wire::frame::{FrameDecoder, FrameError, MessageKind, FRAME_BODY_BYTES_MAX};
use markab_wire::{ErrorCode, OpError, Request, Response};

use crate::server::{MeshMessage, ShardServer};

/// Bytes of free buffer offered to each socket `read`.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What the connection does after a frame.
enum Next {
    Continue,
    Close,
}

/// Serves one connection until the peer closes it, a framing error occurs or
/// the shard stops.
pub async fn serve_connection(server: Rc<ShardServer>, mut stream: TcpStream) {
    let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
    let mut encoder = Encoder::new();
    let mut replies = Vec::new();
    loop {
        // Connections end with the shard: when the shard's main future
        // returns, its executor drops this task.
        let bytes_read = match stream.read(decoder.read_buffer(READ_CHUNK_BYTES)).await {
            Ok(0) => return,
            Ok(bytes_read) => bytes_read,
            Err(error) => {
                tracing::debug!(%error, "connection read failed");
                return;
            }
        };
        decoder.commit_read(bytes_read);
        let mut next = Next::Continue;
        loop {
            match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    if frame.kind != MessageKind::Request {
                        let error = OpError::new(
                            ErrorCode::UnknownKind,
                            format!("a node accepts request frames, not {:?}", frame.kind),
                        );
                        encode_reply(&mut encoder, 0, &Err(error), &mut replies);
                        next = Next::Close;
                        break;
                    }
                    next = handle_frame(&server, &mut encoder, frame.body, &mut replies).await;
                    if matches!(next, Next::Close) {
                        break;
                    }
                }
                Err(error) => {
                    let code = match error {
                        FrameError::UnknownKind(_) => ErrorCode::UnknownKind,
                        _ => ErrorCode::BadFrame,
                    };
                    let error = OpError::new(code, format!("bad frame: {error}"));
                    encode_reply(&mut encoder, 0, &Err(error), &mut replies);
                    next = Next::Close;
                    break;
                }
            }
        }
        if !replies.is_empty() {
            if let Err(error) = stream.write_all(&replies).await {
                tracing::debug!(%error, "connection write failed");
                return;
            }
            replies.clear();
        }
        if matches!(next, Next::Close) {
            let _ = stream.close().await;
            return;
        }
    }
}

/// Serves one request frame body, appending its reply frame to `replies`.
async fn handle_frame(
    server: &ShardServer,
    encoder: &mut Encoder,
    body: Vec<u8>,
    replies: &mut Vec<u8>,
) -> Next {
    if body.len() > server.request_bytes_max {
        let request_id = codec::peek_request_id(&body).unwrap_or(0);
        let error = OpError::new(
            ErrorCode::RequestTooLarge,
            format!(
                "request of {} bytes exceeds this node's bound of {} bytes (tuning key request_bytes_max)",
                body.len(),
                server.request_bytes_max
            ),
        );
        encode_reply(encoder, request_id, &Err(error), replies);
        return Next::Continue;
    }
    let (envelope, request) = match codec::decode_request(&body) {
        Ok(decoded) => decoded,
        Err(error) => {
            let request_id = codec::peek_request_id(&body).unwrap_or(0);
            let error = OpError::new(ErrorCode::BadFrame, format!("undecodable request: {error}"));
            encode_reply(encoder, request_id, &Err(error), replies);
            return Next::Close;
        }
    };
    if let Request::QueryRoute { table } = &request {
        let response = server
            .state
            .layout
            .route(table)
            .map(markab_wire::ResponseBody::Route);
        encode_reply(encoder, envelope.request_id, &response, replies);
        return Next::Continue;
    }
    let owner = server
        .state
        .layout
        .owner_shard(envelope.gpid.partition_index.max(0));
    if owner == server.state.shard || envelope.gpid.partition_index < 0 {
        let response = server.state.serve(envelope.gpid, &request);
        encode_reply(encoder, envelope.request_id, &response, replies);
        return Next::Continue;
    }
    match forward(server, owner, body).await {
        Ok(reply_frame) => replies.extend_from_slice(&reply_frame),
        Err(error) => encode_reply(encoder, envelope.request_id, &Err(error), replies),
    }
    Next::Continue
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
pub fn serve_forwarded(server: &ShardServer, encoder: &mut Encoder, body: &[u8]) -> Vec<u8> {
    let mut reply = Vec::new();
    let (request_id, response): (u64, Response) = match codec::decode_request(body) {
        Ok((envelope, request)) => (
            envelope.request_id,
            server.state.serve(envelope.gpid, &request),
        ),
        Err(error) => (0, Err(OpError::new(ErrorCode::BadFrame, error.to_string()))),
    };
    encode_reply(encoder, request_id, &response, &mut reply);
    reply
}

/// Appends the reply frame for `response`; a response too large to encode is
/// replaced by an `INTERNAL` error naming the problem.
pub fn encode_reply(
    encoder: &mut Encoder,
    request_id: u64,
    response: &Response,
    out: &mut Vec<u8>,
) {
    if let Err(error) = encoder.response_frame(request_id, response, out) {
        let error = OpError::new(
            ErrorCode::Internal,
            format!("cannot encode the reply: {error}"),
        );
        encoder
            .response_frame(request_id, &Err(error), out)
            .expect("a short error reply always encodes");
    }
}
