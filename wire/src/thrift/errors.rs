//! How Markab's error codes reach Pegasus's clients, and back: either an
//! rDSN error name in front of the reply (RPC level, no response struct),
//! or `ERR_OK` and a storage code (`rocksdb::Status`) in the response's
//! `error` field. The table is in the module documentation of
//! [`super`], "Errors".

use super::call::{ERR_HANDLER_NOT_FOUND, ERR_OK};
use crate::message::ErrorCode;

/// Storage-level codes (`rocksdb::Status`) in a response's `error` field.
pub const STORAGE_OK: i32 = 0;
pub const STORAGE_NOT_FOUND: i32 = 1;
pub const STORAGE_INVALID_ARGUMENT: i32 = 4;
pub const STORAGE_IO_ERROR: i32 = 5;
pub const STORAGE_INCOMPLETE: i32 = 7;
pub const STORAGE_TIMED_OUT: i32 = 9;
pub const STORAGE_TRY_AGAIN: i32 = 13;

/// Pegasus's scan context meaning "no such context" (Markab's
/// `SCAN_CONTEXT_COMPLETE`, -1, is Pegasus's "scan completed" too).
pub const SCAN_CONTEXT_NOT_EXIST: i64 = -2;

/// The rDSN error name for a response whose body does not fit its RPC (a
/// server bug; clients report it as a failure and change nothing).
pub const ERR_UNKNOWN: &str = "ERR_UNKNOWN";

/// How a Markab error code travels to a Pegasus client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcErrorMapping {
    /// RPC-level `ERR_OK` and this storage code in the response's `error`.
    Storage(i32),
    /// This rDSN error name in front of the reply, and no response struct.
    Rpc(&'static str),
}

/// How `code` reaches a Pegasus client (the table in the module
/// documentation).
pub fn rdsn_error(code: ErrorCode) -> RpcErrorMapping {
    use RpcErrorMapping::{Rpc, Storage};
    match code {
        ErrorCode::Ok => Storage(STORAGE_OK),
        ErrorCode::NotFound | ErrorCode::ScannerNotFound => Storage(STORAGE_NOT_FOUND),
        ErrorCode::InvalidArgument => Storage(STORAGE_INVALID_ARGUMENT),
        ErrorCode::StorageError | ErrorCode::Internal => Storage(STORAGE_IO_ERROR),
        ErrorCode::UnknownOutcome => Storage(STORAGE_TIMED_OUT),
        ErrorCode::UnknownTable
        | ErrorCode::UnknownPartition
        | ErrorCode::WrongShard
        | ErrorCode::NotHosted => Rpc("ERR_OBJECT_NOT_FOUND"),
        ErrorCode::NotPrimary | ErrorCode::StaleBallot | ErrorCode::ShuttingDown => {
            Rpc("ERR_INVALID_STATE")
        }
        ErrorCode::NotEnoughReplicas | ErrorCode::NotEnoughNodes => Rpc("ERR_NOT_ENOUGH_MEMBER"),
        ErrorCode::Busy => Rpc("ERR_BUSY"),
        ErrorCode::RequestTooLarge | ErrorCode::BadFrame => Rpc("ERR_INVALID_DATA"),
        ErrorCode::UnknownKind => Rpc(ERR_HANDLER_NOT_FOUND),
        ErrorCode::Timeout => Rpc("ERR_TIMEOUT"),
        ErrorCode::Splitting => Rpc("ERR_SPLITTING"),
        ErrorCode::StaleRoute | ErrorCode::WrongPartition => Rpc("ERR_PARENT_PARTITION_MISUSED"),
        ErrorCode::TableExists => Rpc("ERR_APP_EXIST"),
        ErrorCode::NotLeader => Rpc("ERR_FORWARD_TO_OTHERS"),
    }
}

/// Client side: the Markab code for an rDSN error name in front of a reply
/// (the first code [`rdsn_error`] maps to it; `Internal` for names it never
/// emits).
pub fn error_code_of_rdsn(error_name: &str) -> ErrorCode {
    match error_name {
        ERR_OK => ErrorCode::Ok,
        "ERR_OBJECT_NOT_FOUND" => ErrorCode::NotHosted,
        "ERR_INVALID_STATE" => ErrorCode::NotPrimary,
        "ERR_NOT_ENOUGH_MEMBER" => ErrorCode::NotEnoughReplicas,
        "ERR_BUSY" => ErrorCode::Busy,
        "ERR_INVALID_DATA" => ErrorCode::RequestTooLarge,
        ERR_HANDLER_NOT_FOUND => ErrorCode::UnknownKind,
        "ERR_TIMEOUT" => ErrorCode::Timeout,
        "ERR_SPLITTING" => ErrorCode::Splitting,
        "ERR_PARENT_PARTITION_MISUSED" => ErrorCode::StaleRoute,
        "ERR_APP_EXIST" => ErrorCode::TableExists,
        "ERR_FORWARD_TO_OTHERS" => ErrorCode::NotLeader,
        "ERR_INVALID_PARAMETERS" => ErrorCode::InvalidArgument,
        _ => ErrorCode::Internal,
    }
}

/// Client side: the Markab code for a storage code in a response.
pub fn error_code_of_storage(error: i32) -> ErrorCode {
    match error {
        STORAGE_OK => ErrorCode::Ok,
        STORAGE_NOT_FOUND => ErrorCode::NotFound,
        STORAGE_INVALID_ARGUMENT => ErrorCode::InvalidArgument,
        STORAGE_TIMED_OUT => ErrorCode::UnknownOutcome,
        _ => ErrorCode::StorageError,
    }
}
