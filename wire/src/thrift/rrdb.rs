//! Pegasus's rrdb request structs and Markab's [`Request`], both ways.
//!
//! Field numbers and types are those of Pegasus's `idl/rrdb.thrift`. rDSN
//! blobs travel under a T_STRUCT field (or list element) header as a raw
//! binary; readers also take T_STRING there, which carries the same bytes.
//! Absent fields read as Thrift's C++ defaults (0, false, empty), as
//! Pegasus's server reads them: pypegasus omits every field it leaves unset.

use super::binary::{
    vec_for, DecodeResult, Reader, Writer, T_BOOL, T_I32, T_I64, T_LIST, T_STRING, T_STRUCT,
};
use super::call::{begin_call, end_call, Kind};
use super::keys::{
    decode_key, encode_key, expire_ts_of_ttl_seconds, incr_expire_ts_of_ttl_seconds,
    incr_ttl_seconds_of_expire_ts, keys_of_scan_range, scan_range_of_keys,
    ttl_seconds_of_expire_ts,
};
use crate::message::{
    CheckAndMutateRequest, CheckAndSetRequest, CheckType, Filter, FilterType, Key, MultiGetRequest,
    Mutation, OpError, Request, ScanRange, ScanRequest, SortKeyValue,
};

/// Nesting depths of the structs read here: the args struct is depth 1.
const REQUEST_DEPTH: usize = 2;
const ELEMENT_DEPTH: usize = 3;

/// `mutate_operation` values.
const MUTATE_PUT: i32 = 0;
const MUTATE_DELETE: i32 = 1;

// ---- reading requests -------------------------------------------------------------

fn read_key(reader: &mut Reader<'_>) -> DecodeResult<Key> {
    let blob = reader.read_binary()?;
    match decode_key(blob) {
        Some((hash_key, sort_key)) => Ok(Key::new(hash_key, sort_key)),
        None => reader.error(format!(
            "a key of {} bytes whose hash-key length does not fit",
            blob.len()
        )),
    }
}

fn is_blob(ttype: u8) -> bool {
    ttype == T_STRUCT || ttype == T_STRING
}

fn expect_blob(reader: &Reader<'_>, ttype: u8, what: &str) -> DecodeResult<()> {
    if !is_blob(ttype) {
        return reader.error(format!("{what} has Thrift type {ttype}, expected a blob"));
    }
    Ok(())
}

fn expect_struct(reader: &Reader<'_>, ttype: u8, what: &str) -> DecodeResult<()> {
    if ttype != T_STRUCT {
        return reader.error(format!("{what} has Thrift type {ttype}, expected a struct"));
    }
    Ok(())
}

fn read_blob_list(reader: &mut Reader<'_>) -> DecodeResult<Vec<Vec<u8>>> {
    let (element_type, count) = reader.read_list_header()?;
    expect_blob(reader, element_type, "a list element")?;
    let mut blobs = vec_for(count);
    for _ in 0..count {
        blobs.push(reader.read_binary()?.to_vec());
    }
    Ok(blobs)
}

/// Reads a list of structs, each with `element`.
fn read_struct_list<'a, T>(
    reader: &mut Reader<'a>,
    mut element: impl FnMut(&mut Reader<'a>) -> DecodeResult<T>,
) -> DecodeResult<Vec<T>> {
    let (element_type, count) = reader.read_list_header()?;
    expect_struct(reader, element_type, "a list element")?;
    let mut elements = vec_for(count);
    for _ in 0..count {
        elements.push(element(reader)?);
    }
    Ok(elements)
}

fn filter_of(reader: &Reader<'_>, kind: i32, pattern: Vec<u8>) -> DecodeResult<Filter> {
    let kind = match kind {
        0 => FilterType::NoFilter,
        1 => FilterType::MatchAnywhere,
        2 => FilterType::MatchPrefix,
        3 => FilterType::MatchPostfix,
        other => return reader.error(format!("unknown filter type {other}")),
    };
    Ok(Filter { kind, pattern })
}

fn check_type_of(reader: &Reader<'_>, check_type: i32) -> DecodeResult<CheckType> {
    match u8::try_from(check_type).ok().and_then(CheckType::from_u8) {
        Some(check_type) => Ok(check_type),
        None => reader.error(format!("unknown check type {check_type}")),
    }
}

/// The request of a data RPC of `kind`, from its args field of `arg_type`.
pub(crate) fn read_request(
    reader: &mut Reader<'_>,
    kind: Kind,
    arg_type: u8,
    now: u32,
) -> DecodeResult<Request> {
    match kind {
        Kind::Get | Kind::Remove | Kind::Ttl => {
            expect_blob(reader, arg_type, "the key")?;
            let key = read_key(reader)?;
            Ok(match kind {
                Kind::Get => Request::Get(key),
                Kind::Remove => Request::Del(key),
                _ => Request::Ttl(key),
            })
        }
        Kind::SortKeyCount => {
            expect_blob(reader, arg_type, "the hash key")?;
            let hash_key = reader.read_binary()?.to_vec();
            Ok(Request::SortKeyCount { hash_key })
        }
        Kind::ClearScanner => {
            if arg_type != T_I64 {
                return reader.error(format!("the context id has Thrift type {arg_type}"));
            }
            let context_id = reader.read_i64()?;
            Ok(Request::ClearScanner { context_id })
        }
        Kind::Scan => {
            expect_struct(reader, arg_type, "scan_request")?;
            let mut context_id = 0;
            reader.read_struct(REQUEST_DEPTH, |reader, id, ttype| {
                if (id, ttype) == (1, T_I64) {
                    context_id = reader.read_i64()?;
                    return Ok(true);
                }
                Ok(false)
            })?;
            Ok(Request::Scan { context_id })
        }
        _ => {
            expect_struct(reader, arg_type, kind.name())?;
            match kind {
                Kind::Put => read_put(reader, now),
                Kind::MultiGet => read_multi_get(reader),
                Kind::MultiPut => read_multi_put(reader, now),
                Kind::MultiRemove => read_multi_remove(reader),
                Kind::Incr => read_incr(reader, now),
                Kind::CheckAndSet => read_check_and_set(reader, now),
                Kind::CheckAndMutate => read_check_and_mutate(reader, now),
                Kind::BatchGet => read_batch_get(reader),
                Kind::GetScanner => read_get_scanner(reader),
                _ => reader.error(format!("{} is not a data RPC", kind.name())),
            }
        }
    }
}

/// `update_request {1 key, 2 value, 3 expire_ts_seconds}`.
fn read_put(reader: &mut Reader<'_>, now: u32) -> DecodeResult<Request> {
    let mut key = None;
    let mut value = Vec::new();
    let mut expire_ts = 0;
    reader.read_struct(REQUEST_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_blob(t) => key = Some(read_key(reader)?),
            (2, t) if is_blob(t) => value = reader.read_binary()?.to_vec(),
            (3, T_I32) => expire_ts = reader.read_i32()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let Some(key) = key else {
        return reader.error("update_request has no key");
    };
    Ok(Request::Set {
        key,
        value,
        ttl_seconds: ttl_seconds_of_expire_ts(expire_ts, now),
    })
}

/// `multi_get_request {1 hash_key, 2 sort_keys, 3 max_kv_count, 4
/// max_kv_size, 5 no_value, 6 start_sortkey, 7 stop_sortkey, 8
/// start_inclusive, 9 stop_inclusive, 10 sort_key_filter_type, 11
/// sort_key_filter_pattern, 12 reverse}`.
fn read_multi_get(reader: &mut Reader<'_>) -> DecodeResult<Request> {
    let mut request = MultiGetRequest {
        hash_key: Vec::new(),
        sort_keys: Vec::new(),
        max_kv_count: 0,
        max_kv_size: 0,
        no_value: false,
        start_sort_key: Vec::new(),
        stop_sort_key: Vec::new(),
        start_inclusive: false,
        stop_inclusive: false,
        sort_key_filter: Filter::none(),
        reverse: false,
    };
    let mut filter_type = 0;
    let mut filter_pattern = Vec::new();
    reader.read_struct(REQUEST_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_blob(t) => request.hash_key = reader.read_binary()?.to_vec(),
            (2, T_LIST) => request.sort_keys = read_blob_list(reader)?,
            (3, T_I32) => request.max_kv_count = reader.read_i32()?,
            (4, T_I32) => request.max_kv_size = reader.read_i32()?,
            (5, T_BOOL) => request.no_value = reader.read_bool()?,
            (6, t) if is_blob(t) => request.start_sort_key = reader.read_binary()?.to_vec(),
            (7, t) if is_blob(t) => request.stop_sort_key = reader.read_binary()?.to_vec(),
            (8, T_BOOL) => request.start_inclusive = reader.read_bool()?,
            (9, T_BOOL) => request.stop_inclusive = reader.read_bool()?,
            (10, T_I32) => filter_type = reader.read_i32()?,
            (11, t) if is_blob(t) => filter_pattern = reader.read_binary()?.to_vec(),
            (12, T_BOOL) => request.reverse = reader.read_bool()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    request.sort_key_filter = filter_of(reader, filter_type, filter_pattern)?;
    Ok(Request::MultiGet(request))
}

/// `multi_put_request {1 hash_key, 2 kvs list<key_value {1 key, 2 value, 3
/// optional expire_ts_seconds}>, 3 expire_ts_seconds}`. A kv's own expire
/// time is ignored, as Pegasus's server does: the request's applies to all.
fn read_multi_put(reader: &mut Reader<'_>, now: u32) -> DecodeResult<Request> {
    let mut hash_key = Vec::new();
    let mut kvs = Vec::new();
    let mut expire_ts = 0;
    reader.read_struct(REQUEST_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_blob(t) => hash_key = reader.read_binary()?.to_vec(),
            (2, T_LIST) => kvs = read_struct_list(reader, read_key_value)?,
            (3, T_I32) => expire_ts = reader.read_i32()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Request::MultiSet {
        hash_key,
        kvs,
        ttl_seconds: ttl_seconds_of_expire_ts(expire_ts, now),
    })
}

/// A list element `key_value {1 key, 2 value}`.
fn read_key_value(reader: &mut Reader<'_>) -> DecodeResult<SortKeyValue> {
    let (sort_key, value) = read_blob_pair(reader)?;
    Ok(SortKeyValue { sort_key, value })
}

/// A list element of two blobs, fields 1 and 2 (absent ones empty).
fn read_blob_pair(reader: &mut Reader<'_>) -> DecodeResult<(Vec<u8>, Vec<u8>)> {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    reader.read_struct(ELEMENT_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_blob(t) => first = reader.read_binary()?.to_vec(),
            (2, t) if is_blob(t) => second = reader.read_binary()?.to_vec(),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((first, second))
}

/// `multi_remove_request {1 hash_key, 2 sort_keys, 3 max_count}`;
/// `max_count` is deprecated in Pegasus and ignored here too.
fn read_multi_remove(reader: &mut Reader<'_>) -> DecodeResult<Request> {
    let mut hash_key = Vec::new();
    let mut sort_keys = Vec::new();
    reader.read_struct(REQUEST_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_blob(t) => hash_key = reader.read_binary()?.to_vec(),
            (2, T_LIST) => sort_keys = read_blob_list(reader)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Request::MultiDel {
        hash_key,
        sort_keys,
    })
}

/// `incr_request {1 key, 2 increment, 3 expire_ts_seconds}`.
fn read_incr(reader: &mut Reader<'_>, now: u32) -> DecodeResult<Request> {
    let mut key = None;
    let mut increment = 0;
    let mut expire_ts = 0;
    reader.read_struct(REQUEST_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_blob(t) => key = Some(read_key(reader)?),
            (2, T_I64) => increment = reader.read_i64()?,
            (3, T_I32) => expire_ts = reader.read_i32()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let Some(key) = key else {
        return reader.error("incr_request has no key");
    };
    Ok(Request::Incr {
        key,
        increment,
        ttl_seconds: incr_ttl_seconds_of_expire_ts(expire_ts, now),
    })
}

/// `check_and_set_request {1 hash_key, 2 check_sort_key, 3 check_type, 4
/// check_operand, 5 set_diff_sort_key, 6 set_sort_key, 7 set_value, 8
/// set_expire_ts_seconds, 9 return_check_value}`.
fn read_check_and_set(reader: &mut Reader<'_>, now: u32) -> DecodeResult<Request> {
    let mut request = CheckAndSetRequest {
        hash_key: Vec::new(),
        check_sort_key: Vec::new(),
        check_type: CheckType::NoCheck,
        check_operand: Vec::new(),
        set_sort_key: Vec::new(),
        set_value: Vec::new(),
        set_ttl_seconds: 0,
        return_check_value: false,
    };
    let mut check_type = 0;
    let mut set_diff_sort_key = false;
    let mut expire_ts = 0;
    reader.read_struct(REQUEST_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_blob(t) => request.hash_key = reader.read_binary()?.to_vec(),
            (2, t) if is_blob(t) => request.check_sort_key = reader.read_binary()?.to_vec(),
            (3, T_I32) => check_type = reader.read_i32()?,
            (4, t) if is_blob(t) => request.check_operand = reader.read_binary()?.to_vec(),
            (5, T_BOOL) => set_diff_sort_key = reader.read_bool()?,
            (6, t) if is_blob(t) => request.set_sort_key = reader.read_binary()?.to_vec(),
            (7, t) if is_blob(t) => request.set_value = reader.read_binary()?.to_vec(),
            (8, T_I32) => expire_ts = reader.read_i32()?,
            (9, T_BOOL) => request.return_check_value = reader.read_bool()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    request.check_type = check_type_of(reader, check_type)?;
    if !set_diff_sort_key {
        request.set_sort_key = request.check_sort_key.clone();
    }
    request.set_ttl_seconds = ttl_seconds_of_expire_ts(expire_ts, now);
    Ok(Request::CheckAndSet(request))
}

/// `check_and_mutate_request {1 hash_key, 2 check_sort_key, 3 check_type,
/// 4 check_operand, 5 mutate_list list<mutate {1 operation, 2 sort_key, 3
/// value, 4 set_expire_ts_seconds}>, 6 return_check_value}`.
fn read_check_and_mutate(reader: &mut Reader<'_>, now: u32) -> DecodeResult<Request> {
    let mut request = CheckAndMutateRequest {
        hash_key: Vec::new(),
        check_sort_key: Vec::new(),
        check_type: CheckType::NoCheck,
        check_operand: Vec::new(),
        mutations: Vec::new(),
        return_check_value: false,
    };
    let mut check_type = 0;
    reader.read_struct(REQUEST_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_blob(t) => request.hash_key = reader.read_binary()?.to_vec(),
            (2, t) if is_blob(t) => request.check_sort_key = reader.read_binary()?.to_vec(),
            (3, T_I32) => check_type = reader.read_i32()?,
            (4, t) if is_blob(t) => request.check_operand = reader.read_binary()?.to_vec(),
            (5, T_LIST) => {
                request.mutations = read_struct_list(reader, |reader| read_mutate(reader, now))?
            }
            (6, T_BOOL) => request.return_check_value = reader.read_bool()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    request.check_type = check_type_of(reader, check_type)?;
    Ok(Request::CheckAndMutate(request))
}

fn read_mutate(reader: &mut Reader<'_>, now: u32) -> DecodeResult<Mutation> {
    let mut operation = MUTATE_PUT;
    let mut sort_key = Vec::new();
    let mut value = Vec::new();
    let mut expire_ts = 0;
    reader.read_struct(ELEMENT_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, T_I32) => operation = reader.read_i32()?,
            (2, t) if is_blob(t) => sort_key = reader.read_binary()?.to_vec(),
            (3, t) if is_blob(t) => value = reader.read_binary()?.to_vec(),
            (4, T_I32) => expire_ts = reader.read_i32()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    match operation {
        MUTATE_PUT => Ok(Mutation::Put {
            sort_key,
            value,
            ttl_seconds: ttl_seconds_of_expire_ts(expire_ts, now),
        }),
        MUTATE_DELETE => Ok(Mutation::Delete { sort_key }),
        other => reader.error(format!("unknown mutate operation {other}")),
    }
}

/// `batch_get_request {1 keys list<full_key {1 hash_key, 2 sort_key}>}`.
fn read_batch_get(reader: &mut Reader<'_>) -> DecodeResult<Request> {
    let mut keys = Vec::new();
    reader.read_struct(REQUEST_DEPTH, |reader, id, ttype| {
        if (id, ttype) == (1, T_LIST) {
            keys = read_struct_list(reader, read_full_key)?;
            return Ok(true);
        }
        Ok(false)
    })?;
    Ok(Request::BatchGet { keys })
}

/// A list element `full_key {1 hash_key, 2 sort_key}`.
fn read_full_key(reader: &mut Reader<'_>) -> DecodeResult<Key> {
    let (hash_key, sort_key) = read_blob_pair(reader)?;
    Ok(Key { hash_key, sort_key })
}

/// `get_scanner_request {1 start_key, 2 stop_key, 3 start_inclusive, 4
/// stop_inclusive, 5 batch_size, 6 no_value, 7 hash_key_filter_type, 8
/// hash_key_filter_pattern, 9 sort_key_filter_type, 10
/// sort_key_filter_pattern, 11 validate_partition_hash, 12
/// return_expire_ts, 13 full_scan, 14 only_return_count}`. Fields 11 and
/// 12 are ignored: Markab always checks that records belong to the
/// partition, and never returns expire times.
fn read_get_scanner(reader: &mut Reader<'_>) -> DecodeResult<Request> {
    let mut start_key = Vec::new();
    let mut stop_key = Vec::new();
    let mut full_scan = false;
    let mut hash_key_filter = (0, Vec::new());
    let mut sort_key_filter = (0, Vec::new());
    let mut request = ScanRequest::new(ScanRange::Full);
    request.start_inclusive = false;
    request.stop_inclusive = false;
    request.batch_size = 0;
    reader.read_struct(REQUEST_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_blob(t) => start_key = reader.read_binary()?.to_vec(),
            (2, t) if is_blob(t) => stop_key = reader.read_binary()?.to_vec(),
            (3, T_BOOL) => request.start_inclusive = reader.read_bool()?,
            (4, T_BOOL) => request.stop_inclusive = reader.read_bool()?,
            (5, T_I32) => request.batch_size = reader.read_i32()?,
            (6, T_BOOL) => request.no_value = reader.read_bool()?,
            (7, T_I32) => hash_key_filter.0 = reader.read_i32()?,
            (8, t) if is_blob(t) => hash_key_filter.1 = reader.read_binary()?.to_vec(),
            (9, T_I32) => sort_key_filter.0 = reader.read_i32()?,
            (10, t) if is_blob(t) => sort_key_filter.1 = reader.read_binary()?.to_vec(),
            (13, T_BOOL) => full_scan = reader.read_bool()?,
            (14, T_BOOL) => request.only_return_count = reader.read_bool()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    request.hash_key_filter = filter_of(reader, hash_key_filter.0, hash_key_filter.1)?;
    request.sort_key_filter = filter_of(reader, sort_key_filter.0, sort_key_filter.1)?;
    request.range = match scan_range_of_keys(&start_key, &stop_key, full_scan) {
        Ok(range) => range,
        Err(message) => return reader.error(message),
    };
    Ok(Request::GetScanner(request))
}

// ---- writing requests -----------------------------------------------------------

/// Rough bytes of a request's call body, for the writer's first capacity.
fn request_bytes_estimate(request: &Request) -> usize {
    match request {
        Request::Set { key, value, .. } => key.hash_key.len() + key.sort_key.len() + value.len(),
        Request::MultiSet { hash_key, kvs, .. } => {
            hash_key.len()
                + kvs
                    .iter()
                    .map(|kv| kv.sort_key.len() + kv.value.len() + 16)
                    .sum::<usize>()
        }
        _ => 64,
    }
}

/// The call body carrying `request` (module documentation, "Requests").
pub(crate) fn encode_request(
    seqid: i32,
    request: &Request,
    now: u32,
) -> Result<(&'static str, Vec<u8>), OpError> {
    let capacity = request_bytes_estimate(request) + 64;
    let (kind, writer) = match request {
        Request::Get(key) | Request::Del(key) | Request::Ttl(key) | Request::Exist(key) => {
            let kind = match request {
                Request::Get(_) => Kind::Get,
                Request::Del(_) => Kind::Remove,
                _ => Kind::Ttl,
            };
            let mut writer = begin_call(kind.name(), seqid, T_STRUCT, capacity);
            writer.write_binary(&encode_key(&key.hash_key, &key.sort_key));
            (kind, writer)
        }
        Request::SortKeyCount { hash_key } => {
            let mut writer = begin_call(Kind::SortKeyCount.name(), seqid, T_STRUCT, capacity);
            writer.write_binary(hash_key);
            (Kind::SortKeyCount, writer)
        }
        Request::ClearScanner { context_id } => {
            let mut writer = begin_call(Kind::ClearScanner.name(), seqid, T_I64, capacity);
            writer.write_i64(*context_id);
            (Kind::ClearScanner, writer)
        }
        _ => {
            let Some(kind) = struct_kind(request) else {
                return Err(OpError::invalid_argument(format!(
                    "Pegasus has no RPC for {}",
                    request.name()
                )));
            };
            let mut writer = begin_call(kind.name(), seqid, T_STRUCT, capacity);
            write_request_struct(&mut writer, request, now);
            writer.write_stop();
            (kind, writer)
        }
    };
    Ok((kind.name(), end_call(writer)))
}

/// The RPC of a request whose args field is a struct.
fn struct_kind(request: &Request) -> Option<Kind> {
    Some(match request {
        Request::Set { .. } => Kind::Put,
        Request::MultiGet(_) => Kind::MultiGet,
        Request::MultiSet { .. } => Kind::MultiPut,
        Request::MultiDel { .. } => Kind::MultiRemove,
        Request::Incr { .. } => Kind::Incr,
        Request::CheckAndSet(_) => Kind::CheckAndSet,
        Request::CheckAndMutate(_) => Kind::CheckAndMutate,
        Request::BatchGet { .. } => Kind::BatchGet,
        Request::GetScanner(_) => Kind::GetScanner,
        Request::Scan { .. } => Kind::Scan,
        _ => return None,
    })
}

fn write_blob_list(writer: &mut Writer, id: i16, blobs: &[Vec<u8>]) {
    writer.write_field(T_LIST, id);
    writer.write_list(T_STRUCT, blobs.len());
    for blob in blobs {
        writer.write_binary(blob);
    }
}

/// The fields of a request struct (without its STOP); only called for the
/// requests [`struct_kind`] names.
fn write_request_struct(writer: &mut Writer, request: &Request, now: u32) {
    match request {
        Request::Set {
            key,
            value,
            ttl_seconds,
        } => {
            writer.field_blob(1, &encode_key(&key.hash_key, &key.sort_key));
            writer.field_blob(2, value);
            writer.field_i32(3, expire_ts_of_ttl_seconds(*ttl_seconds, now));
        }
        Request::MultiGet(request) => {
            writer.field_blob(1, &request.hash_key);
            write_blob_list(writer, 2, &request.sort_keys);
            writer.field_i32(3, request.max_kv_count);
            writer.field_i32(4, request.max_kv_size);
            writer.field_bool(5, request.no_value);
            writer.field_blob(6, &request.start_sort_key);
            writer.field_blob(7, &request.stop_sort_key);
            writer.field_bool(8, request.start_inclusive);
            writer.field_bool(9, request.stop_inclusive);
            writer.field_i32(10, request.sort_key_filter.kind as i32);
            writer.field_blob(11, &request.sort_key_filter.pattern);
            writer.field_bool(12, request.reverse);
        }
        Request::MultiSet {
            hash_key,
            kvs,
            ttl_seconds,
        } => {
            writer.field_blob(1, hash_key);
            writer.write_field(T_LIST, 2);
            writer.write_list(T_STRUCT, kvs.len());
            for kv in kvs {
                writer.field_blob(1, &kv.sort_key);
                writer.field_blob(2, &kv.value);
                writer.write_stop();
            }
            writer.field_i32(3, expire_ts_of_ttl_seconds(*ttl_seconds, now));
        }
        Request::MultiDel {
            hash_key,
            sort_keys,
        } => {
            writer.field_blob(1, hash_key);
            write_blob_list(writer, 2, sort_keys);
            writer.field_i64(3, 0);
        }
        Request::Incr {
            key,
            increment,
            ttl_seconds,
        } => {
            writer.field_blob(1, &encode_key(&key.hash_key, &key.sort_key));
            writer.field_i64(2, *increment);
            writer.field_i32(3, incr_expire_ts_of_ttl_seconds(*ttl_seconds, now));
        }
        Request::CheckAndSet(request) => {
            writer.field_blob(1, &request.hash_key);
            writer.field_blob(2, &request.check_sort_key);
            writer.field_i32(3, request.check_type as i32);
            writer.field_blob(4, &request.check_operand);
            writer.field_bool(5, request.set_sort_key != request.check_sort_key);
            writer.field_blob(6, &request.set_sort_key);
            writer.field_blob(7, &request.set_value);
            writer.field_i32(8, expire_ts_of_ttl_seconds(request.set_ttl_seconds, now));
            writer.field_bool(9, request.return_check_value);
        }
        Request::CheckAndMutate(request) => {
            writer.field_blob(1, &request.hash_key);
            writer.field_blob(2, &request.check_sort_key);
            writer.field_i32(3, request.check_type as i32);
            writer.field_blob(4, &request.check_operand);
            writer.write_field(T_LIST, 5);
            writer.write_list(T_STRUCT, request.mutations.len());
            for mutation in &request.mutations {
                match mutation {
                    Mutation::Put {
                        sort_key,
                        value,
                        ttl_seconds,
                    } => {
                        writer.field_i32(1, MUTATE_PUT);
                        writer.field_blob(2, sort_key);
                        writer.field_blob(3, value);
                        writer.field_i32(4, expire_ts_of_ttl_seconds(*ttl_seconds, now));
                    }
                    Mutation::Delete { sort_key } => {
                        writer.field_i32(1, MUTATE_DELETE);
                        writer.field_blob(2, sort_key);
                        writer.field_blob(3, &[]);
                        writer.field_i32(4, 0);
                    }
                }
                writer.write_stop();
            }
            writer.field_bool(6, request.return_check_value);
        }
        Request::BatchGet { keys } => {
            writer.write_field(T_LIST, 1);
            writer.write_list(T_STRUCT, keys.len());
            for key in keys {
                writer.field_blob(1, &key.hash_key);
                writer.field_blob(2, &key.sort_key);
                writer.write_stop();
            }
        }
        Request::GetScanner(request) => {
            let (start_key, stop_key, full_scan) = keys_of_scan_range(&request.range);
            writer.field_blob(1, &start_key);
            writer.field_blob(2, &stop_key);
            writer.field_bool(3, request.start_inclusive);
            writer.field_bool(4, request.stop_inclusive);
            writer.field_i32(5, request.batch_size);
            writer.field_bool(6, request.no_value);
            writer.field_i32(7, request.hash_key_filter.kind as i32);
            writer.field_blob(8, &request.hash_key_filter.pattern);
            writer.field_i32(9, request.sort_key_filter.kind as i32);
            writer.field_blob(10, &request.sort_key_filter.pattern);
            if full_scan {
                writer.field_bool(13, true);
            }
            if request.only_return_count {
                writer.field_bool(14, true);
            }
        }
        Request::Scan { context_id } => writer.field_i64(1, *context_id),
        _ => debug_assert!(false, "{} has no request struct", request.name()),
    }
}
