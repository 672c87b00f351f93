//! Server side of replies: `i32 total length (counting itself) ‖ string
//! error_name ‖ writeMessageBegin(name + "_ACK", REPLY, seqid)`, then, only
//! when error_name is `ERR_OK`, the result struct `{0: T_STRUCT =
//! response}` and STOP (sans-IO). Written straight from Markab's
//! [`Response`] ([`encode_data_reply`]) or meta's answers, without copying
//! values into an intermediate struct.

use super::binary::{Writer, MESSAGE_REPLY, T_LIST, T_STRUCT};
use super::call::{Kind, ERR_HANDLER_NOT_FOUND, ERR_OK, REPLY_NAME_SUFFIX};
use super::errors::{
    rdsn_error, RpcErrorMapping, ERR_UNKNOWN, SCAN_CONTEXT_NOT_EXIST, STORAGE_INCOMPLETE,
    STORAGE_OK, STORAGE_TRY_AGAIN,
};
use super::meta::{self, AppInfo, QueryConfigReply};
use crate::message::{
    CheckAndSetResult, ErrorCode, Record, Request, Response, ResponseBody, SortKeyValue,
    SCAN_CONTEXT_COMPLETE,
};

/// Who answers: the values every data response carries.
#[derive(Clone, Copy, Debug)]
pub struct ReplyContext<'a> {
    pub app_id: i32,
    pub partition_index: i32,
    /// The serving replica's `host:port`.
    pub server: &'a str,
}

/// Starts a reply: a length placeholder, the error name, the message header.
fn begin_reply(name: &str, seqid: i32, error_name: &str, capacity: usize) -> Writer {
    let mut writer = Writer::with_capacity(capacity + 2 * name.len() + error_name.len() + 32);
    writer.write_i32(0);
    writer.write_binary(error_name.as_bytes());
    // writeMessageBegin(name + "_ACK", REPLY, seqid), without building the name.
    writer.write_i32((0x8001_0000u32 | u32::from(MESSAGE_REPLY)) as i32);
    let name_bytes = name.len() + REPLY_NAME_SUFFIX.len();
    writer.write_i32(i32::try_from(name_bytes).unwrap_or(i32::MAX));
    writer.bytes.extend_from_slice(name.as_bytes());
    writer.bytes.extend_from_slice(REPLY_NAME_SUFFIX.as_bytes());
    writer.write_i32(seqid);
    writer
}

/// Sets the length prefix (which counts itself).
fn finish_reply(mut writer: Writer) -> Vec<u8> {
    let total = i32::try_from(writer.bytes.len()).unwrap_or(i32::MAX);
    writer.bytes[..4].copy_from_slice(&total.to_be_bytes());
    writer.bytes
}

/// A reply carrying only an rDSN error name (no result struct).
///
/// ```
/// use markab_wire::thrift::{decode_reply, encode_error_reply};
/// let reply = decode_reply(&encode_error_reply("RPC_RRDB_RRDB_GET", 3, "ERR_BUSY")).unwrap();
/// assert_eq!(reply.error_name, "ERR_BUSY");
/// assert_eq!((reply.name.as_str(), reply.seqid, reply.result), ("RPC_RRDB_RRDB_GET_ACK", 3, None));
/// ```
pub fn encode_error_reply(name: &str, seqid: i32, error_name: &str) -> Vec<u8> {
    finish_reply(begin_reply(name, seqid, error_name, 0))
}

/// Writes an `ERR_OK` reply whose response struct `write_response` fills
/// (its fields; the STOPs are added here).
fn encode_ok_reply(
    name: &str,
    seqid: i32,
    capacity: usize,
    write_response: impl FnOnce(&mut Writer),
) -> Vec<u8> {
    let mut writer = begin_reply(name, seqid, ERR_OK, capacity + 16);
    writer.write_field(T_STRUCT, 0);
    write_response(&mut writer);
    writer.write_stop(); // the response struct
    writer.write_stop(); // the result struct
    finish_reply(writer)
}

/// Meta's reply to `RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX`.
pub fn encode_query_config_reply(seqid: i32, reply: &QueryConfigReply) -> Vec<u8> {
    let capacity = 64 + reply.partitions.len() * 80;
    let name = Kind::QueryConfig.name();
    encode_ok_reply(name, seqid, capacity, |writer| {
        meta::write_query_config_response(writer, reply)
    })
}

/// Meta's reply to `RPC_CM_LIST_APPS`: `err` inside the struct.
pub fn encode_list_apps_reply(seqid: i32, err: &'static str, apps: &[AppInfo]) -> Vec<u8> {
    let capacity = 64 + apps.len() * 128;
    encode_ok_reply(Kind::ListApps.name(), seqid, capacity, |writer| {
        meta::write_list_apps_response(writer, err, apps)
    })
}

/// One data reply being written: where it goes, who answers, and the
/// storage code of the response.
struct DataReply<'a> {
    name: &'a str,
    seqid: i32,
    /// The storage-level code (`STORAGE_*`).
    error: i32,
    app_id: i32,
    partition_index: i32,
    server: &'a str,
}

impl DataReply<'_> {
    /// The fields after `error` and the RPC's own: app id and partition at
    /// `app_id_id` and the next id, the decree (0) at `decree_id`, the
    /// server at `server_id`.
    fn write_trailer(
        &self,
        writer: &mut Writer,
        app_id_id: i16,
        decree_id: Option<i16>,
        server_id: i16,
    ) {
        writer.field_i32(app_id_id, self.app_id);
        writer.field_i32(app_id_id + 1, self.partition_index);
        if let Some(decree_id) = decree_id {
            writer.field_i64(decree_id, 0);
        }
        writer.field_string(server_id, self.server);
    }

    /// An `ERR_OK` reply: `error` as field 1, then `fields`.
    fn encode(&self, capacity: usize, fields: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let capacity = capacity + self.server.len() + 48;
        encode_ok_reply(self.name, self.seqid, capacity, |writer| {
            writer.field_i32(1, self.error);
            fields(writer);
        })
    }

    /// `update_response {1 error, 2 app_id, 3 partition_index, 4 decree, 5 server}`.
    fn update(&self) -> Vec<u8> {
        self.encode(0, |writer| self.write_trailer(writer, 2, Some(4), 5))
    }

    /// `read_response {1 error, 2 value, 3 app_id, 4 partition_index, 6 server}`.
    fn read(&self, value: &[u8]) -> Vec<u8> {
        self.encode(value.len(), |writer| {
            writer.field_blob(2, value);
            self.write_trailer(writer, 3, None, 6);
        })
    }

    /// `ttl_response {1 error, 2 ttl_seconds, 3 app_id, 4 partition_index, 6 server}`.
    fn ttl(&self, ttl_seconds: i32) -> Vec<u8> {
        self.encode(0, |writer| {
            writer.field_i32(2, ttl_seconds);
            self.write_trailer(writer, 3, None, 6);
        })
    }

    /// `count_response {1 error, 2 count, 3 app_id, 4 partition_index, 6
    /// server}`; with `decree`, `multi_remove_response` and
    /// `incr_response`, which add `5 decree`.
    fn count(&self, count: i64, decree: bool) -> Vec<u8> {
        self.encode(0, |writer| {
            writer.field_i64(2, count);
            self.write_trailer(writer, 3, decree.then_some(5), 6);
        })
    }

    /// `multi_get_response {1 error, 2 kvs, 3 app_id, 4 partition_index, 6 server}`.
    fn multi_get(&self, kvs: &[SortKeyValue]) -> Vec<u8> {
        let bytes: usize = kvs
            .iter()
            .map(|kv| kv.sort_key.len() + kv.value.len() + 24)
            .sum();
        self.encode(bytes, |writer| {
            writer.write_field(T_LIST, 2);
            writer.write_list(T_STRUCT, kvs.len());
            for kv in kvs {
                writer.field_blob(1, &kv.sort_key);
                writer.field_blob(2, &kv.value);
                writer.write_stop();
            }
            self.write_trailer(writer, 3, None, 6);
        })
    }

    /// `check_and_set_response` / `check_and_mutate_response {1 error, 2
    /// check_value_returned, 3 check_value_exist, 4 check_value, 5 app_id, 6
    /// partition_index, 7 decree, 8 server}`.
    fn check_and_set(&self, result: &CheckAndSetResult) -> Vec<u8> {
        self.encode(result.check_value.len(), |writer| {
            writer.field_bool(2, result.check_value_returned);
            writer.field_bool(3, result.check_value_exist);
            writer.field_blob(4, &result.check_value);
            self.write_trailer(writer, 5, Some(7), 8);
        })
    }

    /// `batch_get_response {1 error, 2 data, 3 app_id, 4 partition_index, 6 server}`.
    fn batch_get(&self, records: &[Record]) -> Vec<u8> {
        self.encode(records_bytes(records), |writer| {
            writer.write_field(T_LIST, 2);
            writer.write_list(T_STRUCT, records.len());
            for record in records {
                writer.field_blob(1, &record.hash_key);
                writer.field_blob(2, &record.sort_key);
                writer.field_blob(3, &record.value);
                writer.write_stop();
            }
            self.write_trailer(writer, 3, None, 6);
        })
    }

    /// `scan_response {1 error, 2 kvs, 3 context_id, 4 app_id, 5
    /// partition_index, 6 server, 7 optional kv_count}`; keys are written as
    /// full encoded keys, in place.
    fn scan(&self, records: &[Record], context_id: i64, kv_count: Option<i32>) -> Vec<u8> {
        self.encode(records_bytes(records), |writer| {
            writer.write_field(T_LIST, 2);
            writer.write_list(T_STRUCT, records.len());
            for record in records {
                writer.write_field(T_STRUCT, 1);
                let hash_key_bytes = record.hash_key.len().min(u16::MAX as usize);
                let key_bytes = 2 + hash_key_bytes + record.sort_key.len();
                writer.write_i32(i32::try_from(key_bytes).unwrap_or(i32::MAX));
                writer
                    .bytes
                    .extend_from_slice(&(hash_key_bytes as u16).to_be_bytes());
                writer
                    .bytes
                    .extend_from_slice(&record.hash_key[..hash_key_bytes]);
                writer.bytes.extend_from_slice(&record.sort_key);
                writer.field_blob(2, &record.value);
                writer.write_stop();
            }
            writer.field_i64(3, context_id);
            self.write_trailer(writer, 4, None, 6);
            if let Some(kv_count) = kv_count {
                writer.field_i32(7, kv_count);
            }
        })
    }
}

/// Bytes a list of records will take, for the writer's first capacity.
fn records_bytes(records: &[Record]) -> usize {
    records
        .iter()
        .map(|record| record.hash_key.len() + record.sort_key.len() + record.value.len() + 24)
        .sum()
}

/// Server side: the bytes of one reply (length prefix included) to the data
/// RPC `name`, given Markab's `response` to `request` (the request the call
/// decoded to). `None` for `RPC_RRDB_RRDB_CLEAR_SCANNER`, which is never
/// answered. An unknown or meta name gets `ERR_HANDLER_NOT_FOUND`; a body
/// that does not fit the RPC (a server bug) gets `ERR_UNKNOWN`.
pub fn encode_data_reply(
    name: &str,
    seqid: i32,
    request: &Request,
    response: &Response,
    context: &ReplyContext,
) -> Option<Vec<u8>> {
    let Some(kind) = Kind::from_name(name) else {
        return Some(encode_error_reply(name, seqid, ERR_HANDLER_NOT_FOUND));
    };
    if kind == Kind::ClearScanner {
        return None;
    }
    let (error, body) = match response {
        Ok(body) => (STORAGE_OK, Some(body)),
        Err(failure) => match rdsn_error(failure.code) {
            RpcErrorMapping::Rpc(error_name) => {
                return Some(encode_error_reply(name, seqid, error_name))
            }
            RpcErrorMapping::Storage(error) => (error, None),
        },
    };
    let reply = DataReply {
        name,
        seqid,
        error,
        app_id: context.app_id,
        partition_index: context.partition_index,
        server: context.server,
    };
    use ResponseBody as Body;
    let bytes = match (kind, body) {
        (Kind::QueryConfig | Kind::ListApps, _) => {
            encode_error_reply(name, seqid, ERR_HANDLER_NOT_FOUND)
        }
        (Kind::Put | Kind::Remove | Kind::MultiPut, None | Some(Body::Done)) => reply.update(),
        (Kind::Get, Some(Body::Value(value))) => reply.read(value),
        (Kind::Get, None) => reply.read(&[]),
        (Kind::Ttl, Some(Body::Ttl(ttl_seconds))) => reply.ttl(*ttl_seconds),
        (Kind::Ttl, None) => reply.ttl(0),
        (Kind::SortKeyCount, Some(Body::Count(count))) => reply.count(*count, false),
        (Kind::SortKeyCount, None) => reply.count(0, false),
        (Kind::MultiRemove, Some(Body::Count(count))) => reply.count(*count, true),
        (Kind::MultiRemove, None) => reply.count(0, true),
        (Kind::Incr, Some(Body::Incr(new_value))) => reply.count(*new_value, true),
        (Kind::Incr, None) => reply.count(0, true),
        (Kind::MultiGet, Some(Body::MultiGet { kvs, incomplete })) => {
            let error = if *incomplete {
                STORAGE_INCOMPLETE
            } else {
                error
            };
            DataReply { error, ..reply }.multi_get(kvs)
        }
        (Kind::MultiGet, None) => reply.multi_get(&[]),
        (Kind::CheckAndSet | Kind::CheckAndMutate, Some(Body::CheckAndSet(result))) => {
            let error = if result.set_succeeded {
                error
            } else {
                STORAGE_TRY_AGAIN
            };
            DataReply { error, ..reply }.check_and_set(result)
        }
        (Kind::CheckAndSet | Kind::CheckAndMutate, None) => {
            reply.check_and_set(&CheckAndSetResult::default())
        }
        (Kind::BatchGet, Some(Body::BatchGet(records))) => reply.batch_get(records),
        (Kind::BatchGet, None) => reply.batch_get(&[]),
        (
            Kind::GetScanner | Kind::Scan,
            Some(Body::Scan {
                records,
                count,
                context_id,
            }),
        ) => {
            // kv_count for only_return_count, and on every batch without
            // records: a counting scanner's later batches cannot be told
            // from an empty batch, and clients read kv_count only when they
            // asked for a count.
            let asked = matches!(request, Request::GetScanner(scan) if scan.only_return_count);
            let kv_count =
                (asked || records.is_empty()).then(|| i32::try_from(*count).unwrap_or(i32::MAX));
            reply.scan(records, *context_id, kv_count)
        }
        (Kind::GetScanner | Kind::Scan, None) => {
            let unknown_scanner =
                matches!(response, Err(failure) if failure.code == ErrorCode::ScannerNotFound);
            let context_id = if unknown_scanner {
                SCAN_CONTEXT_NOT_EXIST
            } else {
                SCAN_CONTEXT_COMPLETE
            };
            reply.scan(&[], context_id, None)
        }
        _ => encode_error_reply(name, seqid, ERR_UNKNOWN),
    };
    Some(bytes)
}
