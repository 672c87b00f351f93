//! Client side of replies: any reply frame back into [`Reply`] with every
//! field of its Pegasus response struct ([`decode_reply`]), and a data
//! reply into Markab's [`Response`] ([`reply_to_response`]).

use super::binary::{
    vec_for, DecodeResult, Reader, MESSAGE_REPLY, T_BOOL, T_I32, T_I64, T_LIST, T_STRING, T_STRUCT,
};
use super::call::{Kind, ERR_OK, REPLY_NAME_SUFFIX};
use super::errors::{
    error_code_of_rdsn, error_code_of_storage, STORAGE_INCOMPLETE, STORAGE_NOT_FOUND, STORAGE_OK,
    STORAGE_TRY_AGAIN,
};
use super::frame::{ThftError, THFT_REPLY_BYTES_MIN};
use super::keys::decode_key;
use super::meta::{self, AppInfoResult, QueryConfigResult};
use crate::message::{
    CheckAndSetResult, ErrorCode, OpError, Record, Request, Response, ResponseBody, SortKeyValue,
};

/// A decoded reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The rDSN error name in front of the reply; `ERR_OK` or an RPC-level
    /// failure (then `result` is `None`).
    pub error_name: String,
    /// The message name (the RPC's name and `_ACK`).
    pub name: String,
    pub seqid: i32,
    pub result: Option<ReplyResult>,
}

/// A Pegasus response struct, every field. `error` is the storage-level
/// code (`STORAGE_*`); `decree` is 0 in Markab's replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyResult {
    /// `update_response`: put, remove, multi_put.
    Update {
        error: i32,
        app_id: i32,
        partition_index: i32,
        decree: i64,
        server: String,
    },
    /// `read_response`: get.
    Read {
        error: i32,
        value: Vec<u8>,
        app_id: i32,
        partition_index: i32,
        server: String,
    },
    /// `ttl_response`: ttl (-1 = no TTL).
    Ttl {
        error: i32,
        ttl_seconds: i32,
        app_id: i32,
        partition_index: i32,
        server: String,
    },
    /// `count_response`: sortkey_count.
    Count {
        error: i32,
        count: i64,
        app_id: i32,
        partition_index: i32,
        server: String,
    },
    /// `multi_get_response`: `(sort_key, value)` pairs ascending.
    MultiGet {
        error: i32,
        kvs: Vec<(Vec<u8>, Vec<u8>)>,
        app_id: i32,
        partition_index: i32,
        server: String,
    },
    /// `multi_remove_response`.
    MultiRemove {
        error: i32,
        count: i64,
        app_id: i32,
        partition_index: i32,
        decree: i64,
        server: String,
    },
    /// `incr_response`.
    Incr {
        error: i32,
        new_value: i64,
        app_id: i32,
        partition_index: i32,
        decree: i64,
        server: String,
    },
    /// `check_and_set_response` and `check_and_mutate_response` (the same
    /// fields).
    CheckAndSet {
        error: i32,
        check_value_returned: bool,
        check_value_exist: bool,
        check_value: Vec<u8>,
        app_id: i32,
        partition_index: i32,
        decree: i64,
        server: String,
    },
    /// `batch_get_response`.
    BatchGet {
        error: i32,
        data: Vec<Record>,
        app_id: i32,
        partition_index: i32,
        server: String,
    },
    /// `scan_response`: get_scanner and scan. Keys are full encoded keys.
    Scan {
        error: i32,
        kvs: Vec<(Vec<u8>, Vec<u8>)>,
        context_id: i64,
        app_id: i32,
        partition_index: i32,
        server: String,
        kv_count: Option<i32>,
    },
    /// `query_cfg_response`.
    QueryConfig(QueryConfigResult),
    /// `configuration_list_apps_response`.
    ListApps {
        err: String,
        apps: Vec<AppInfoResult>,
    },
}

/// Depth of a response struct inside the result struct.
const RESPONSE_DEPTH: usize = 2;
const ELEMENT_DEPTH: usize = 3;

fn is_blob(ttype: u8) -> bool {
    ttype == T_STRUCT || ttype == T_STRING
}

/// The fields most data responses share; each reader fills what it has.
#[derive(Default)]
struct Fields {
    error: i32,
    app_id: i32,
    partition_index: i32,
    decree: i64,
    server: String,
}

/// Reads a list of `key_value` structs as `(key, value)` pairs (an
/// optional expire time, field 3, is skipped).
fn read_key_values(reader: &mut Reader<'_>) -> DecodeResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let (element_type, count) = reader.read_list_header()?;
    if element_type != T_STRUCT {
        return reader.error(format!("kvs of element type {element_type}"));
    }
    let mut kvs = vec_for(count);
    for _ in 0..count {
        let mut kv = (Vec::new(), Vec::new());
        reader.read_struct(ELEMENT_DEPTH, |reader, id, ttype| {
            match (id, ttype) {
                (1, t) if is_blob(t) => kv.0 = reader.read_binary()?.to_vec(),
                (2, t) if is_blob(t) => kv.1 = reader.read_binary()?.to_vec(),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        kvs.push(kv);
    }
    Ok(kvs)
}

fn read_full_data(reader: &mut Reader<'_>) -> DecodeResult<Vec<Record>> {
    let (element_type, count) = reader.read_list_header()?;
    if element_type != T_STRUCT {
        return reader.error(format!("data of element type {element_type}"));
    }
    let mut records = vec_for(count);
    for _ in 0..count {
        let mut record = Record::default();
        reader.read_struct(ELEMENT_DEPTH, |reader, id, ttype| {
            match (id, ttype) {
                (1, t) if is_blob(t) => record.hash_key = reader.read_binary()?.to_vec(),
                (2, t) if is_blob(t) => record.sort_key = reader.read_binary()?.to_vec(),
                (3, t) if is_blob(t) => record.value = reader.read_binary()?.to_vec(),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Field ids of the shared trailer in one response struct.
struct Layout {
    app_id: i16,
    partition_index: i16,
    decree: Option<i16>,
    server: i16,
}

const LAYOUT_UPDATE: Layout = Layout {
    app_id: 2,
    partition_index: 3,
    decree: Some(4),
    server: 5,
};
const LAYOUT_READ: Layout = Layout {
    app_id: 3,
    partition_index: 4,
    decree: None,
    server: 6,
};
const LAYOUT_WRITE: Layout = Layout {
    app_id: 3,
    partition_index: 4,
    decree: Some(5),
    server: 6,
};
const LAYOUT_CHECK_AND_SET: Layout = Layout {
    app_id: 5,
    partition_index: 6,
    decree: Some(7),
    server: 8,
};
const LAYOUT_SCAN: Layout = Layout {
    app_id: 4,
    partition_index: 5,
    decree: None,
    server: 6,
};

/// Reads a response struct: `error` (field 1) and the trailer per `layout`
/// into the returned fields, anything else through `other`.
fn read_response<'a>(
    reader: &mut Reader<'a>,
    layout: &Layout,
    mut other: impl FnMut(&mut Reader<'a>, i16, u8) -> DecodeResult<bool>,
) -> DecodeResult<Fields> {
    let mut fields = Fields::default();
    reader.read_struct(RESPONSE_DEPTH, |reader, id, ttype| {
        if id == 1 && ttype == T_I32 {
            fields.error = reader.read_i32()?;
        } else if id == layout.app_id && ttype == T_I32 {
            fields.app_id = reader.read_i32()?;
        } else if id == layout.partition_index && ttype == T_I32 {
            fields.partition_index = reader.read_i32()?;
        } else if Some(id) == layout.decree && ttype == T_I64 {
            fields.decree = reader.read_i64()?;
        } else if id == layout.server && ttype == T_STRING {
            fields.server = reader.read_string()?;
        } else {
            return other(reader, id, ttype);
        }
        Ok(true)
    })?;
    Ok(fields)
}

/// A response whose only field beyond the shared ones is field 2 of
/// `ttype`, read by `read`.
fn read_with_field_2<'a, T: Default>(
    reader: &mut Reader<'a>,
    layout: &Layout,
    ttype: u8,
    read: impl Fn(&mut Reader<'a>) -> DecodeResult<T>,
) -> DecodeResult<(Fields, T)> {
    let mut value = T::default();
    let fields = read_response(reader, layout, |reader, id, actual| {
        let matches = actual == ttype || (ttype == T_STRUCT && is_blob(actual));
        if id == 2 && matches {
            value = read(reader)?;
            return Ok(true);
        }
        Ok(false)
    })?;
    Ok((fields, value))
}

fn read_blob(reader: &mut Reader<'_>) -> DecodeResult<Vec<u8>> {
    Ok(reader.read_binary()?.to_vec())
}

fn read_check_and_set(reader: &mut Reader<'_>) -> DecodeResult<ReplyResult> {
    let mut returned = false;
    let mut exist = false;
    let mut check_value = Vec::new();
    let f = read_response(reader, &LAYOUT_CHECK_AND_SET, |reader, id, ttype| {
        match (id, ttype) {
            (2, T_BOOL) => returned = reader.read_bool()?,
            (3, T_BOOL) => exist = reader.read_bool()?,
            (4, t) if is_blob(t) => check_value = read_blob(reader)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(ReplyResult::CheckAndSet {
        error: f.error,
        check_value_returned: returned,
        check_value_exist: exist,
        check_value,
        app_id: f.app_id,
        partition_index: f.partition_index,
        decree: f.decree,
        server: f.server,
    })
}

fn read_scan(reader: &mut Reader<'_>) -> DecodeResult<ReplyResult> {
    let mut kvs = Vec::new();
    let mut context_id = 0;
    let mut kv_count = None;
    let f = read_response(reader, &LAYOUT_SCAN, |reader, id, ttype| {
        match (id, ttype) {
            (2, T_LIST) => kvs = read_key_values(reader)?,
            (3, T_I64) => context_id = reader.read_i64()?,
            (7, T_I32) => kv_count = Some(reader.read_i32()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(ReplyResult::Scan {
        error: f.error,
        kvs,
        context_id,
        app_id: f.app_id,
        partition_index: f.partition_index,
        server: f.server,
        kv_count,
    })
}

/// The response struct of an `ERR_OK` reply to an RPC of `kind`.
fn read_result(reader: &mut Reader<'_>, kind: Kind) -> DecodeResult<ReplyResult> {
    Ok(match kind {
        Kind::Put | Kind::Remove | Kind::MultiPut => {
            let f = read_response(reader, &LAYOUT_UPDATE, |_, _, _| Ok(false))?;
            ReplyResult::Update {
                error: f.error,
                app_id: f.app_id,
                partition_index: f.partition_index,
                decree: f.decree,
                server: f.server,
            }
        }
        Kind::Get => {
            let (f, value) = read_with_field_2(reader, &LAYOUT_READ, T_STRUCT, read_blob)?;
            ReplyResult::Read {
                error: f.error,
                value,
                app_id: f.app_id,
                partition_index: f.partition_index,
                server: f.server,
            }
        }
        Kind::Ttl => {
            let (f, ttl_seconds) =
                read_with_field_2(reader, &LAYOUT_READ, T_I32, |reader| reader.read_i32())?;
            ReplyResult::Ttl {
                error: f.error,
                ttl_seconds,
                app_id: f.app_id,
                partition_index: f.partition_index,
                server: f.server,
            }
        }
        Kind::SortKeyCount => {
            let (f, count) =
                read_with_field_2(reader, &LAYOUT_READ, T_I64, |reader| reader.read_i64())?;
            ReplyResult::Count {
                error: f.error,
                count,
                app_id: f.app_id,
                partition_index: f.partition_index,
                server: f.server,
            }
        }
        Kind::MultiRemove => {
            let (f, count) =
                read_with_field_2(reader, &LAYOUT_WRITE, T_I64, |reader| reader.read_i64())?;
            ReplyResult::MultiRemove {
                error: f.error,
                count,
                app_id: f.app_id,
                partition_index: f.partition_index,
                decree: f.decree,
                server: f.server,
            }
        }
        Kind::Incr => {
            let (f, new_value) =
                read_with_field_2(reader, &LAYOUT_WRITE, T_I64, |reader| reader.read_i64())?;
            ReplyResult::Incr {
                error: f.error,
                new_value,
                app_id: f.app_id,
                partition_index: f.partition_index,
                decree: f.decree,
                server: f.server,
            }
        }
        Kind::MultiGet => {
            let (f, kvs) = read_with_field_2(reader, &LAYOUT_READ, T_LIST, read_key_values)?;
            ReplyResult::MultiGet {
                error: f.error,
                kvs,
                app_id: f.app_id,
                partition_index: f.partition_index,
                server: f.server,
            }
        }
        Kind::BatchGet => {
            let (f, data) = read_with_field_2(reader, &LAYOUT_READ, T_LIST, read_full_data)?;
            ReplyResult::BatchGet {
                error: f.error,
                data,
                app_id: f.app_id,
                partition_index: f.partition_index,
                server: f.server,
            }
        }
        Kind::CheckAndSet | Kind::CheckAndMutate => read_check_and_set(reader)?,
        Kind::GetScanner | Kind::Scan => read_scan(reader)?,
        Kind::QueryConfig => ReplyResult::QueryConfig(meta::read_query_config_response(reader)?),
        Kind::ListApps => {
            let (err, apps) = meta::read_list_apps_response(reader)?;
            ReplyResult::ListApps { err, apps }
        }
        Kind::ClearScanner => return reader.error("clear_scanner is never answered"),
    })
}

/// Client side: decodes a whole reply frame, its 4-byte length prefix
/// included (split a stream with [`super::reply_frame_len`]). Data and meta
/// replies of every RPC in this module decode; the result is `None` when
/// the error name is not `ERR_OK`.
pub fn decode_reply(frame: &[u8]) -> Result<Reply, ThftError> {
    if frame.len() < THFT_REPLY_BYTES_MIN {
        return Err(ThftError::BadReplyLength(frame.len() as i64));
    }
    let mut length = [0u8; 4];
    length.copy_from_slice(&frame[..4]);
    let total = i32::from_be_bytes(length);
    if usize::try_from(total).ok() != Some(frame.len()) {
        return Err(ThftError::BadReply(format!(
            "length prefix {total} but a frame of {} bytes",
            frame.len()
        )));
    }
    let bad = |error: super::binary::DecodeError| ThftError::BadReply(error.to_string());
    let mut reader = Reader::new(&frame[4..]);
    let error_name = reader.read_string().map_err(bad)?;
    let begin = reader.read_message_begin().map_err(bad)?;
    let name = std::str::from_utf8(begin.name)
        .map_err(|_| ThftError::BadReply("the reply name is not UTF-8".into()))?
        .to_string();
    let mut reply = Reply {
        error_name,
        name,
        seqid: begin.seqid,
        result: None,
    };
    if reply.error_name != ERR_OK {
        return Ok(reply);
    }
    if begin.kind != MESSAGE_REPLY {
        return Err(ThftError::BadReply(format!(
            "message type {} is not a reply",
            begin.kind
        )));
    }
    let kind = reply
        .name
        .strip_suffix(REPLY_NAME_SUFFIX)
        .and_then(Kind::from_name)
        .ok_or_else(|| ThftError::BadReply(format!("unknown reply {:?}", reply.name)))?;
    let mut result = None;
    reader
        .read_struct(1, |reader, id, ttype| {
            if (id, ttype) == (0, T_STRUCT) {
                result = Some(read_result(reader, kind)?);
                return Ok(true);
            }
            Ok(false)
        })
        .map_err(bad)?;
    if result.is_none() {
        return Err(ThftError::BadReply(
            "an ERR_OK reply without a result".into(),
        ));
    }
    reply.result = result;
    Ok(reply)
}

// ---- back to Markab's responses ------------------------------------------------------

fn storage_failure(error: i32) -> OpError {
    OpError::new(
        error_code_of_storage(error),
        format!("storage error {error}"),
    )
}

fn unexpected(reply: &Reply) -> OpError {
    OpError::new(
        ErrorCode::Internal,
        format!("unexpected {} reply {:?}", reply.name, reply.result),
    )
}

/// Client side: Markab's [`Response`] to `request` from the reply to the
/// call [`super::encode_data_call`] made for it. An RPC-level error becomes
/// [`error_code_of_rdsn`]'s code, a storage error [`error_code_of_storage`]'s
/// (with the RPC's own meanings first: kNotFound is `ScannerNotFound` for a
/// scan, kIncomplete an incomplete multi_get, kTryAgain a failed check).
pub fn reply_to_response(request: &Request, reply: &Reply) -> Response {
    if reply.error_name != ERR_OK {
        return Err(OpError::new(
            error_code_of_rdsn(&reply.error_name),
            reply.error_name.clone(),
        ));
    }
    let Some(result) = &reply.result else {
        return Err(unexpected(reply));
    };
    match (request, result) {
        (Request::Get(_), ReplyResult::Read { error, value, .. }) => match *error {
            STORAGE_OK => Ok(ResponseBody::Value(value.clone())),
            error => Err(storage_failure(error)),
        },
        (
            Request::Set { .. } | Request::Del(_) | Request::MultiSet { .. },
            ReplyResult::Update { error, .. },
        ) => match *error {
            STORAGE_OK => Ok(ResponseBody::Done),
            error => Err(storage_failure(error)),
        },
        (Request::Exist(_), ReplyResult::Ttl { error, .. }) => match *error {
            STORAGE_OK => Ok(ResponseBody::Exist(true)),
            STORAGE_NOT_FOUND => Ok(ResponseBody::Exist(false)),
            error => Err(storage_failure(error)),
        },
        (
            Request::Ttl(_),
            ReplyResult::Ttl {
                error, ttl_seconds, ..
            },
        ) => match *error {
            STORAGE_OK => Ok(ResponseBody::Ttl(*ttl_seconds)),
            error => Err(storage_failure(error)),
        },
        (Request::MultiGet(_), ReplyResult::MultiGet { error, kvs, .. }) => {
            let incomplete = match *error {
                STORAGE_OK => false,
                STORAGE_INCOMPLETE => true,
                error => return Err(storage_failure(error)),
            };
            let kvs = kvs
                .iter()
                .map(|(sort_key, value)| SortKeyValue {
                    sort_key: sort_key.clone(),
                    value: value.clone(),
                })
                .collect();
            Ok(ResponseBody::MultiGet { kvs, incomplete })
        }
        (Request::MultiDel { .. }, ReplyResult::MultiRemove { error, count, .. })
        | (Request::SortKeyCount { .. }, ReplyResult::Count { error, count, .. }) => match *error {
            STORAGE_OK => Ok(ResponseBody::Count(*count)),
            error => Err(storage_failure(error)),
        },
        (
            Request::Incr { .. },
            ReplyResult::Incr {
                error, new_value, ..
            },
        ) => match *error {
            STORAGE_OK => Ok(ResponseBody::Incr(*new_value)),
            error => Err(storage_failure(error)),
        },
        (
            Request::CheckAndSet(_) | Request::CheckAndMutate(_),
            ReplyResult::CheckAndSet {
                error,
                check_value_returned,
                check_value_exist,
                check_value,
                ..
            },
        ) => {
            let set_succeeded = match *error {
                STORAGE_OK => true,
                STORAGE_TRY_AGAIN => false,
                error => return Err(storage_failure(error)),
            };
            Ok(ResponseBody::CheckAndSet(CheckAndSetResult {
                set_succeeded,
                check_value_returned: *check_value_returned,
                check_value_exist: *check_value_exist,
                check_value: check_value.clone(),
            }))
        }
        (Request::BatchGet { .. }, ReplyResult::BatchGet { error, data, .. }) => match *error {
            STORAGE_OK => Ok(ResponseBody::BatchGet(data.clone())),
            error => Err(storage_failure(error)),
        },
        (
            Request::GetScanner(_) | Request::Scan { .. },
            ReplyResult::Scan {
                error,
                kvs,
                context_id,
                kv_count,
                ..
            },
        ) => match *error {
            STORAGE_OK => {
                let mut records = Vec::with_capacity(kvs.len());
                for (key, value) in kvs {
                    let Some((hash_key, sort_key)) = decode_key(key) else {
                        return Err(unexpected(reply));
                    };
                    records.push(Record {
                        hash_key: hash_key.to_vec(),
                        sort_key: sort_key.to_vec(),
                        value: value.clone(),
                    });
                }
                let count = kv_count.map_or(records.len() as i64, i64::from);
                Ok(ResponseBody::Scan {
                    records,
                    count,
                    context_id: *context_id,
                })
            }
            STORAGE_NOT_FOUND if matches!(request, Request::Scan { .. }) => Err(OpError::new(
                ErrorCode::ScannerNotFound,
                "the scanner context does not exist",
            )),
            error => Err(storage_failure(error)),
        },
        _ => Err(unexpected(reply)),
    }
}
