//! Pegasus's client protocol: the `THFT` request header and Thrift's binary
//! protocol, both directions, translated to and from Markab's own
//! [`Request`](crate::Request) and [`Response`](crate::Response). Sans-IO:
//! no sockets, no clocks (callers pass the time where TTLs need it).
//!
//! # Layers
//!
//! - [`ThftDecoder`] / [`encode_request_frame`]: request framing (header
//!   v0, 48 bytes; or v1, 16 bytes and a Thrift meta struct), bounded.
//! - [`decode_call`] / [`encode_data_call`]: a call body —
//!   `writeMessageBegin(name, CALL, seqid)`, an args struct whose first
//!   field is the request, STOP — to an [`Rpc`] and back.
//! - [`encode_data_reply`], [`encode_error_reply`],
//!   [`encode_query_config_reply`], [`encode_list_apps_reply`] /
//!   [`decode_reply`], [`reply_to_response`]: replies — i32 length that
//!   counts itself, the rDSN error name, `writeMessageBegin(name + "_ACK",
//!   REPLY, seqid)`, and only for `ERR_OK` the result struct `{0: response}`.
//!   Replies with another error name end after the message header, which
//!   is where Pegasus's Go, Java and Python clients stop reading.
//!
//! rDSN's placeholder types travel raw under a T_STRUCT field (or list
//! element) header: `blob` a binary, `error_code` a string, `gpid` an i64
//! `(partition_index << 32) | (u32)app_id`, `rpc_address` an i64
//! `ipv4 << 32 | port << 16 | 1` (0 = none). Readers also accept T_STRING
//! for blobs and T_I64 for gpids and addresses.
//!
//! # Requests
//!
//! | RPC | args field 1 | Markab request |
//! |---|---|---|
//! | `RPC_RRDB_RRDB_GET` | key blob | `Get` |
//! | `RPC_RRDB_RRDB_PUT` | `update_request` | `Set` (TTL from `expire_ts_seconds`) |
//! | `RPC_RRDB_RRDB_REMOVE` | key blob | `Del` |
//! | `RPC_RRDB_RRDB_TTL` | key blob | `Ttl` (clients implement exist with it; `Exist` is sent as TTL) |
//! | `RPC_RRDB_RRDB_MULTI_GET` | `multi_get_request` | `MultiGet`, every field; absent ones 0/false/empty |
//! | `RPC_RRDB_RRDB_MULTI_PUT` | `multi_put_request` | `MultiSet` with the request's TTL; a kv's own `expire_ts_seconds` is ignored, as Pegasus's server ignores it |
//! | `RPC_RRDB_RRDB_MULTI_REMOVE` | `multi_remove_request` | `MultiDel`; `max_count` (deprecated) ignored |
//! | `RPC_RRDB_RRDB_SORTKEY_COUNT` | hash-key blob | `SortKeyCount` |
//! | `RPC_RRDB_RRDB_INCR` | `incr_request` | `Incr` (`expire_ts_seconds` 0 keep, < 0 clear, > 0 absolute) |
//! | `RPC_RRDB_RRDB_CHECK_AND_SET` | `check_and_set_request` | `CheckAndSet`; without `set_diff_sort_key` the set sort key is the check sort key |
//! | `RPC_RRDB_RRDB_CHECK_AND_MUTATE` | `check_and_mutate_request` | `CheckAndMutate` (`MO_PUT` 0, `MO_DELETE` 1) |
//! | `RPC_RRDB_RRDB_BATCH_GET` | `batch_get_request` | `BatchGet` |
//! | `RPC_RRDB_RRDB_GET_SCANNER` | `get_scanner_request` | `GetScanner` (ranges below); `validate_partition_hash` and `return_expire_ts` ignored |
//! | `RPC_RRDB_RRDB_SCAN` | `scan_request` | `Scan` |
//! | `RPC_RRDB_RRDB_CLEAR_SCANNER` | bare i64 | `ClearScanner`; never answered |
//! | `RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX` | `query_cfg_request` | [`Rpc::QueryConfig`] |
//! | `RPC_CM_LIST_APPS` | `configuration_list_apps_request` | [`Rpc::ListApps`] |
//!
//! A key blob is `u16_be(len hash_key) ‖ hash_key ‖ sort_key`; an empty
//! hash key is legal. A key blob shorter than two bytes or whose length
//! overruns it, an unknown filter type, check type or mutate operation, a
//! list whose element type is not the struct's, or a missing key is
//! answered `ERR_INVALID_PARAMETERS` (Pegasus answers the enum cases with
//! storage error kInvalidArgument inside the response; clients fail the
//! call either way). An unknown RPC name is answered `ERR_HANDLER_NOT_FOUND`.
//! A message header that cannot be read, or one that is not a call, makes
//! [`CallError::name`] `None`: the connection must be closed.
//!
//! # TTLs
//!
//! Pegasus sends absolute expire times, seconds since 2016-01-01 00:00:00
//! UTC ([`PEGASUS_EPOCH_UNIX_SECONDS`]), as i32s that its server stores as
//! u32s; Markab's requests carry relative TTLs. With the caller's
//! `now_epoch2016_seconds`: 0 stays 0 (no TTL); an expire time after now
//! becomes `expire - now`; an expire time at or before now becomes 1 —
//! Markab has no TTL that is already over, so such a record lives until
//! the end of the current second instead of vanishing at once. Incr keeps
//! its own codes: 0 keeps the TTL, a negative value clears it. Clients
//! encode the other way ([`expire_ts_of_ttl_seconds`]).
//!
//! # Scan ranges
//!
//! A get_scanner names full encoded keys. With `full_scan` set it is
//! `ScanRange::Full`. Otherwise, with `P = u16_be(len hk) ‖ hk` the start
//! key's hash-key prefix:
//!
//! - the stop key starts with `P` and has a sort key: `Hash {hk, start
//!   sort key, stop sort key}`;
//! - the stop key lies after every key that starts with `P` and at or
//!   before `P`'s successor (its last byte that is not 0xFF incremented,
//!   the rest cut: what the Java and Go clients send for "to the end of
//!   the hash key"): `Hash` with an empty stop sort key (the inclusive flag
//!   is ignored there);
//! - the stop key is `P` itself or sorts before it: refused
//!   (`ERR_INVALID_PARAMETERS`; no client sends it, and Markab cannot
//!   express the range);
//! - anything else — a range that spans hash keys, or a start key that is
//!   not a key: `ScanRange::Full`. **A cross-hash-key range is served as a
//!   full partition scan**: clients only send such ranges for whole
//!   partitions (pypegasus's unordered scanner sends `[00 00, c3bf c3bf)`
//!   without `full_scan`). Filters, batch size, `no_value` and
//!   `only_return_count` are carried over; inclusive flags as sent.
//!
//! # Responses
//!
//! Data replies take `app_id`, `partition_index` and `server` from
//! [`ReplyContext`]; `decree` is 0. Storage codes: 0 ok, 1 not found
//! (a get or ttl of a missing record, an unknown scanner), 4 invalid
//! argument, 5 I/O error, 7 incomplete (a multi_get cut short), 9 timed
//! out (outcome unknown), 13 try again (a check_and_set or
//! check_and_mutate whose check failed, with its check-value fields). A
//! ttl of a record without TTL is -1. Scan replies carry full encoded
//! keys; `context_id` is Markab's (-1 = complete, Pegasus's value too), -2
//! with error 1 for an unknown scanner (Pegasus's "no context": Java and Go
//! restart the scan from their last key; pypegasus fails the scan), -1
//! with any other error; `kv_count` is written for `only_return_count`
//! and on every batch without records.
//!
//! # Errors
//!
//! [`rdsn_error`] maps every Markab [`ErrorCode`](crate::ErrorCode):
//!
//! | Markab code | Pegasus | client reaction |
//! |---|---|---|
//! | `Ok` | storage 0 | |
//! | `NotFound` | storage 1 kNotFound | value absent (never `ERR_OBJECT_NOT_FOUND`, which re-routes) |
//! | `ScannerNotFound` | storage 1 kNotFound, context -2 | Java/Go restart the scan |
//! | `InvalidArgument` | storage 4 kInvalidArgument | call fails |
//! | `StorageError`, `Internal` | storage 5 kIOError | call fails, no retry, no re-route |
//! | `UnknownOutcome` | storage 9 kTimedOut | call fails like a timeout, not retried (it may have applied) |
//! | `UnknownTable`, `UnknownPartition`, `WrongShard`, `NotHosted` | `ERR_OBJECT_NOT_FOUND` | re-query meta, retry |
//! | `NotPrimary`, `StaleBallot`, `ShuttingDown` | `ERR_INVALID_STATE` | re-query meta |
//! | `NotEnoughReplicas`, `NotEnoughNodes` | `ERR_NOT_ENOUGH_MEMBER` | fail, no re-query |
//! | `Busy` | `ERR_BUSY` | back off |
//! | `RequestTooLarge`, `BadFrame` | `ERR_INVALID_DATA` | fail |
//! | `UnknownKind` | `ERR_HANDLER_NOT_FOUND` | fail |
//! | `Timeout` | `ERR_TIMEOUT` | as a client timeout |
//! | `Splitting` | `ERR_SPLITTING` | retry later, no re-query |
//! | `StaleRoute`, `WrongPartition` | `ERR_PARENT_PARTITION_MISUSED` | drop the table's route, re-query |
//! | `TableExists` | `ERR_APP_EXIST` | |
//! | `NotLeader` | `ERR_FORWARD_TO_OTHERS` | ask another meta |
//!
//! pypegasus 0.0.1.1 knows only the names up to `ERR_META_RESET`: a reply
//! named `ERR_SPLITTING` or `ERR_PARENT_PARTITION_MISUSED` fails in its
//! reader (the Java and Go clients handle both). Every other name above is
//! in its table.

mod binary;
mod call;
mod decode;
mod errors;
mod frame;
mod keys;
mod meta;
mod reply;
mod rrdb;

#[cfg(test)]
mod tests;

pub use binary::{CONTAINER_ELEMENTS_MAX, MESSAGE_NAME_BYTES_MAX, NESTING_DEPTH_MAX};
pub use call::{
    decode_call, encode_data_call, encode_list_apps_call, encode_query_config_call, expects_reply,
    peek_call, Call, CallError, Rpc, ERR_HANDLER_NOT_FOUND, ERR_INVALID_DATA,
    ERR_INVALID_PARAMETERS, ERR_OK, REPLY_NAME_SUFFIX, RPC_BATCH_GET, RPC_CHECK_AND_MUTATE,
    RPC_CHECK_AND_SET, RPC_CLEAR_SCANNER, RPC_GET, RPC_GET_SCANNER, RPC_INCR, RPC_LIST_APPS,
    RPC_MULTI_GET, RPC_MULTI_PUT, RPC_MULTI_REMOVE, RPC_PUT, RPC_QUERY_CONFIG, RPC_REMOVE,
    RPC_SCAN, RPC_SORTKEY_COUNT, RPC_TTL,
};
pub use decode::{decode_reply, reply_to_response, Reply, ReplyResult};
pub use errors::{
    error_code_of_rdsn, error_code_of_storage, rdsn_error, RpcErrorMapping, ERR_UNKNOWN,
    SCAN_CONTEXT_NOT_EXIST, STORAGE_INCOMPLETE, STORAGE_INVALID_ARGUMENT, STORAGE_IO_ERROR,
    STORAGE_NOT_FOUND, STORAGE_OK, STORAGE_TIMED_OUT, STORAGE_TRY_AGAIN,
};
pub use frame::{
    encode_request_frame, reply_frame_len, RequestHeader, ThftDecoder, ThftError, ThftFrame,
    THFT_BODY_BYTES_MAX, THFT_HEADER_V0_BYTES, THFT_HEADER_V1_BYTES, THFT_MAGIC,
    THFT_META_BYTES_MAX, THFT_REPLY_BYTES_MIN,
};
pub use keys::{
    decode_key, encode_key, expire_ts_of_ttl_seconds, incr_expire_ts_of_ttl_seconds,
    incr_ttl_seconds_of_expire_ts, keys_of_scan_range, scan_range_of_keys,
    ttl_seconds_of_expire_ts,
};
pub use meta::{
    gpid_of, parts_of_gpid, rpc_address_of, socket_address_of, AppInfo, AppInfoResult,
    PartitionConfiguration, PartitionConfigurationResult, QueryConfigReply, QueryConfigResult,
    APP_STATUS_AVAILABLE, APP_STATUS_DROPPED, APP_STATUS_INVALID, APP_TYPE,
};
pub use reply::{
    encode_data_reply, encode_error_reply, encode_list_apps_reply, encode_query_config_reply,
    ReplyContext,
};

/// Unix time of Pegasus's expire-time epoch, 2016-01-01 00:00:00 UTC (also
/// Markab's storage epoch).
pub const PEGASUS_EPOCH_UNIX_SECONDS: u64 = 1_451_606_400;
