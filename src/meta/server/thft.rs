//! Pegasus's client protocol on meta's port (docs/thrift.md).
//!
//! Pegasus clients ask meta where a table's partitions are
//! (`RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX`) and then talk to the
//! primaries' shards. Meta answers from the same actor as Markab's own
//! `query_route`: every partition with its primary's shard address. A meta
//! that does not lead answers `ERR_FORWARD_TO_OTHERS` with the leader's
//! address as the first partition's primary, which is where Pegasus
//! clients look for it. Requests are answered in order, one at a time, as
//! on Markab's own meta connections.

use std::net::{SocketAddr, SocketAddrV4};

use markab_wire::message::{ErrorCode, Request, ResponseBody, TableStatus};
use markab_wire::thrift::{
    self, AppInfo, CallError, PartitionConfiguration, QueryConfigReply, Rpc, RpcErrorMapping,
    ThftDecoder,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{read_chunk, Actor, META_REQUEST_BYTES_MAX, READ_CHUNK_BYTES};
use crate::server::thft::{now_epoch2016_seconds, query_config_reply};

/// Pegasus's `app_status::AS_AVAILABLE`: list_apps with it lists only
/// available tables; any other status lists dropped ones too.
const APP_STATUS_AVAILABLE: i32 = 1;

/// Serves a `THFT` connection whose first bytes are `prefix`.
pub(super) async fn serve_connection(
    actor: &Actor,
    mut stream: TcpStream,
    prefix: Vec<u8>,
    peer: SocketAddr,
) {
    let mut decoder = ThftDecoder::new(META_REQUEST_BYTES_MAX);
    decoder.extend(&prefix);
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => frame,
                Err(error) => {
                    tracing::debug!(%peer, %error, "malformed THFT frame; closing the connection");
                    return;
                }
            };
            let reply = match thrift::decode_call(&frame.body, now_epoch2016_seconds()) {
                Ok(call) => answer(actor, call).await,
                Err(CallError {
                    name: Some(name),
                    seqid,
                    error_name,
                    message,
                }) => {
                    tracing::debug!(%peer, rpc = %name, error = error_name, %message, "THFT request refused");
                    thrift::encode_error_reply(&name, seqid, error_name)
                }
                Err(CallError { message, .. }) => {
                    tracing::debug!(%peer, %message, "undecodable THFT request; closing the connection");
                    return;
                }
            };
            if let Err(error) = stream.write_all(&reply).await {
                tracing::debug!(%peer, %error, "meta connection write failed");
                return;
            }
        }
        let Some(bytes_read) =
            read_chunk(&mut stream, decoder.read_buffer(READ_CHUNK_BYTES), peer).await
        else {
            return;
        };
        decoder.commit_read(bytes_read);
    }
}

/// The reply to one call.
async fn answer(actor: &Actor, call: thrift::Call) -> Vec<u8> {
    match call.rpc {
        Rpc::QueryConfig { app_name, .. } => {
            let reply = query_config(actor, app_name).await;
            thrift::encode_query_config_reply(call.seqid, &reply)
        }
        Rpc::ListApps { status } => {
            let request = Request::ListTables {
                include_dropped: status != APP_STATUS_AVAILABLE,
            };
            match actor.call(request).await {
                Ok(ResponseBody::Tables(tables)) => {
                    let apps: Vec<AppInfo> = tables
                        .into_iter()
                        .map(|table| AppInfo {
                            app_id: table.app_id,
                            app_name: table.name,
                            partition_count: table.partition_count,
                            max_replica_count: table.replica_count,
                            available: table.status == TableStatus::Available,
                            envs: table.envs,
                        })
                        .collect();
                    thrift::encode_list_apps_reply(call.seqid, "ERR_OK", &apps)
                }
                Err(error) => {
                    thrift::encode_list_apps_reply(call.seqid, meta_error_name(error.code), &[])
                }
                Ok(_) => thrift::encode_list_apps_reply(call.seqid, "ERR_INVALID_STATE", &[]),
            }
        }
        Rpc::Data(request) => {
            tracing::debug!(rpc = %call.name, request = request.name(), "a data RPC sent to meta");
            thrift::encode_error_reply(call.name, call.seqid, "ERR_HANDLER_NOT_FOUND")
        }
    }
}

/// Where `table`'s partitions are, in Pegasus's form.
async fn query_config(actor: &Actor, table: String) -> QueryConfigReply {
    let failed = |err: &'static str| QueryConfigReply {
        err,
        app_id: 0,
        partition_count: 0,
        partitions: Vec::new(),
    };
    let route = match actor
        .call(Request::QueryRoute {
            table: table.clone(),
        })
        .await
    {
        Ok(ResponseBody::Route(route)) => route,
        Ok(_) => return failed("ERR_INVALID_STATE"),
        Err(error) if error.code == ErrorCode::NotLeader => {
            let mut reply = failed("ERR_FORWARD_TO_OTHERS");
            if let Some(leader) = ipv4_of(&error.message).await {
                reply.partitions.push(PartitionConfiguration {
                    app_id: 0,
                    partition_index: 0,
                    ballot: 0,
                    max_replica_count: 0,
                    primary: Some(leader),
                    secondaries: Vec::new(),
                    last_committed_decree: 0,
                });
            }
            return reply;
        }
        Err(error) => return failed(meta_error_name(error.code)),
    };
    let replica_count = match actor.call(Request::DescribeTable { table }).await {
        Ok(ResponseBody::Description(description)) => description.info.replica_count,
        _ => 0,
    };
    query_config_reply(&route, replica_count)
}

/// The rDSN error name for a meta-level failure: the data path's mapping
/// ([`thrift::rdsn_error`]) where it names one; meta has no storage codes,
/// so a bad argument is `ERR_INVALID_PARAMETERS` and anything else
/// storage-level `ERR_INVALID_STATE`.
fn meta_error_name(code: ErrorCode) -> &'static str {
    match thrift::rdsn_error(code) {
        RpcErrorMapping::Rpc(name) => name,
        RpcErrorMapping::Storage(_) if code == ErrorCode::InvalidArgument => {
            "ERR_INVALID_PARAMETERS"
        }
        RpcErrorMapping::Storage(_) => "ERR_INVALID_STATE",
    }
}

/// The IPv4 address of `host:port` (resolved when it names a host).
async fn ipv4_of(address: &str) -> Option<SocketAddrV4> {
    if address.is_empty() {
        return None;
    }
    let resolved = tokio::net::lookup_host(address).await.ok()?;
    resolved.into_iter().find_map(|address| match address {
        SocketAddr::V4(v4) => Some(v4),
        SocketAddr::V6(_) => None,
    })
}
