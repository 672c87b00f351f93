//! Pegasus's client protocol on a shard's port (docs/thrift.md).
//!
//! A connection whose first four bytes are `THFT` speaks rDSN's Thrift RPC,
//! as Pegasus's Java, Go, Python and Node.js clients do. Each request frame
//! ([`ThftDecoder`]) is decoded into Markab's own [`Request`]
//! ([`thrift::decode_call`]) and goes through the same dispatch as a Markab
//! frame ([`dispatch`]): reads of owned partitions at once, writes and
//! other shards' partitions as tasks. The reply is Markab's response
//! written in Pegasus's vocabulary ([`thrift::encode_data_reply`]):
//! storage outcomes (not found, check failed, incomplete) inside the
//! response with `ERR_OK`, routing outcomes (not hosted, not primary) as
//! rDSN error names that make clients query meta again.
//!
//! A standalone node also answers the query-config RPC for its own tables,
//! so a Pegasus client can use it as its meta.
//!
//! A frame whose header is malformed closes the connection (the stream can
//! no longer be trusted); a readable frame with an unknown RPC or bad
//! arguments gets an error reply and the connection goes on.

use std::net::SocketAddr;
use std::rc::Rc;

use futures::io::ReadHalf;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use markab_wire::frame::FRAME_BODY_BYTES_MAX;
use markab_wire::thrift::{
    self, CallError, PartitionConfiguration, QueryConfigReply, ReplyContext, Rpc, ThftDecoder,
};
use markab_wire::{Envelope, Gpid, Request, Response, Route};

use super::connection::{
    dispatch, read_chunk, ReplySender, ReplyTo, CONNECTION_IN_FLIGHT_MAX, READ_CHUNK_BYTES,
};
use super::ShardServer;

/// Serves a `THFT` connection whose first bytes are `prefix`, until the
/// peer closes it or sends a malformed frame.
pub async fn read_requests(
    server: Rc<ShardServer>,
    mut reader: ReadHalf<TcpStream>,
    prefix: Vec<u8>,
    replies: ReplySender,
) {
    // Bodies up to the absolute frame bound are read whole, so that one
    // over the node's own bound can be answered instead of dropped.
    let mut decoder = ThftDecoder::new(FRAME_BODY_BYTES_MAX);
    decoder.extend(&prefix);
    let in_flight = Rc::new(Semaphore::new(CONNECTION_IN_FLIGHT_MAX));
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => frame,
                Err(error) => {
                    tracing::debug!(%error, "malformed THFT frame; closing the connection");
                    return;
                }
            };
            let call = if frame.body.len() > server.request_bytes_max {
                // The stream is sound (the whole frame was read): refuse
                // this request only, when its name can be read.
                let Some((name, seqid)) = thrift::peek_call(&frame.body) else {
                    return;
                };
                Err(CallError {
                    name: Some(name),
                    seqid,
                    error_name: "ERR_INVALID_DATA",
                    message: format!(
                        "request of {} bytes exceeds this node's bound of {} bytes (tuning key request_bytes_max)",
                        frame.body.len(),
                        server.request_bytes_max
                    ),
                })
            } else {
                thrift::decode_call(&frame.body, now_epoch2016_seconds())
            };
            let call = match call {
                Ok(call) => call,
                Err(error) => {
                    tracing::debug!(
                        rpc = error.name.as_deref().unwrap_or("?"),
                        error = error.error_name,
                        message = %error.message,
                        "THFT request refused"
                    );
                    let Some(name) = error.name else {
                        return;
                    };
                    let reply = thrift::encode_error_reply(&name, error.seqid, error.error_name);
                    let _ = replies.send(reply).await;
                    continue;
                }
            };
            let header = frame.header;
            let gpid = Gpid {
                app_id: header.app_id,
                partition_index: header.partition_index,
            };
            match call.rpc {
                Rpc::Data(request) => {
                    let envelope = Envelope {
                        request_id: 0,
                        timeout_ms: header.timeout_ms,
                        gpid,
                        partition_hash: header.partition_hash,
                        partition_count: 0,
                    };
                    let to = ReplyTo::Thft {
                        name: call.name,
                        seqid: call.seqid,
                    };
                    dispatch(&server, &replies, &in_flight, envelope, request, to, None).await;
                }
                Rpc::QueryConfig { app_name, .. } => {
                    let reply = match server.state.layout.route(&app_name) {
                        Ok(route) => query_config_reply(&route, 1),
                        Err(_) => QueryConfigReply {
                            err: "ERR_OBJECT_NOT_FOUND",
                            app_id: 0,
                            partition_count: 0,
                            partitions: Vec::new(),
                        },
                    };
                    let reply = thrift::encode_query_config_reply(call.seqid, &reply);
                    let _ = replies.send(reply).await;
                }
                Rpc::ListApps { .. } => {
                    let reply =
                        thrift::encode_error_reply(call.name, call.seqid, "ERR_HANDLER_NOT_FOUND");
                    let _ = replies.send(reply).await;
                }
            }
        }
        let Some(bytes_read) = read_chunk(&mut reader, decoder.read_buffer(READ_CHUNK_BYTES)).await
        else {
            return;
        };
        decoder.commit_read(bytes_read);
    }
}

/// The THFT reply to a data request; `None` for the RPCs Pegasus never
/// answers (clear_scanner).
pub fn encode_reply(
    server: &ShardServer,
    name: &str,
    seqid: i32,
    gpid: Gpid,
    request: &Request,
    response: &Response,
) -> Option<Vec<u8>> {
    let context = ReplyContext {
        app_id: gpid.app_id,
        partition_index: gpid.partition_index,
        server: &server.address,
    };
    thrift::encode_data_reply(name, seqid, request, response, &context)
}

/// A query-config answer for `route`: every partition with its primary's
/// shard address (IPv4 only: the rDSN address cannot carry anything else;
/// a partition whose address is not IPv4 is sent without a primary).
pub fn query_config_reply(route: &Route, max_replica_count: i32) -> QueryConfigReply {
    let partitions = route
        .partitions
        .iter()
        .map(|partition| PartitionConfiguration {
            app_id: route.app_id,
            partition_index: partition.partition_index,
            ballot: partition.ballot,
            max_replica_count,
            primary: match partition.address.parse::<SocketAddr>() {
                Ok(SocketAddr::V4(address)) => Some(address),
                _ => None,
            },
            secondaries: Vec::new(),
            last_committed_decree: 0,
        })
        .collect();
    QueryConfigReply {
        err: "ERR_OK",
        app_id: route.app_id,
        partition_count: route.partition_count,
        partitions,
    }
}

/// Seconds since Markab's (and Pegasus's) TTL epoch on the wall clock:
/// what absolute expiry times in Pegasus requests count from.
pub fn now_epoch2016_seconds() -> u32 {
    let unix_s = crate::clock::unix_ms() / 1_000;
    unix_s
        .saturating_sub(markab_core::key::EPOCH_BEGIN_UNIX_S)
        .min(u64::from(u32::MAX)) as u32
}
