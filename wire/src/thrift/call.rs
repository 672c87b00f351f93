//! Call bodies: `writeMessageBegin(name, CALL, seqid)`, an args struct whose
//! first field is the request, STOP (sans-IO).
//!
//! The server side ([`decode_call`]) takes the args struct's first field
//! whatever its id, as Pegasus does, and skips any later field. The client
//! side ([`encode_data_call`], [`encode_query_config_call`],
//! [`encode_list_apps_call`]) writes field 1 with every field of the
//! request struct, as the Java and Go clients do.

use super::binary::{
    vec_for, DecodeResult, Reader, Writer, MESSAGE_CALL, MESSAGE_NAME_BYTES_MAX, MESSAGE_ONEWAY,
    T_I32, T_LIST, T_STRING, T_STRUCT,
};
use super::rrdb;
use crate::message::{OpError, Request};

/// Task-code names of the RPCs Markab understands.
pub const RPC_QUERY_CONFIG: &str = "RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX";
pub const RPC_LIST_APPS: &str = "RPC_CM_LIST_APPS";
pub const RPC_GET: &str = "RPC_RRDB_RRDB_GET";
pub const RPC_PUT: &str = "RPC_RRDB_RRDB_PUT";
pub const RPC_REMOVE: &str = "RPC_RRDB_RRDB_REMOVE";
pub const RPC_MULTI_GET: &str = "RPC_RRDB_RRDB_MULTI_GET";
pub const RPC_MULTI_PUT: &str = "RPC_RRDB_RRDB_MULTI_PUT";
pub const RPC_MULTI_REMOVE: &str = "RPC_RRDB_RRDB_MULTI_REMOVE";
pub const RPC_INCR: &str = "RPC_RRDB_RRDB_INCR";
pub const RPC_CHECK_AND_SET: &str = "RPC_RRDB_RRDB_CHECK_AND_SET";
pub const RPC_CHECK_AND_MUTATE: &str = "RPC_RRDB_RRDB_CHECK_AND_MUTATE";
pub const RPC_SORTKEY_COUNT: &str = "RPC_RRDB_RRDB_SORTKEY_COUNT";
pub const RPC_TTL: &str = "RPC_RRDB_RRDB_TTL";
pub const RPC_GET_SCANNER: &str = "RPC_RRDB_RRDB_GET_SCANNER";
pub const RPC_SCAN: &str = "RPC_RRDB_RRDB_SCAN";
pub const RPC_CLEAR_SCANNER: &str = "RPC_RRDB_RRDB_CLEAR_SCANNER";
pub const RPC_BATCH_GET: &str = "RPC_RRDB_RRDB_BATCH_GET";

/// The suffix of every reply's message name.
pub const REPLY_NAME_SUFFIX: &str = "_ACK";

/// rDSN error names this module emits on its own.
pub const ERR_OK: &str = "ERR_OK";
pub const ERR_HANDLER_NOT_FOUND: &str = "ERR_HANDLER_NOT_FOUND";
pub const ERR_INVALID_PARAMETERS: &str = "ERR_INVALID_PARAMETERS";
pub const ERR_INVALID_DATA: &str = "ERR_INVALID_DATA";

/// The RPCs by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    QueryConfig,
    ListApps,
    Get,
    Put,
    Remove,
    MultiGet,
    MultiPut,
    MultiRemove,
    Incr,
    CheckAndSet,
    CheckAndMutate,
    SortKeyCount,
    Ttl,
    GetScanner,
    Scan,
    ClearScanner,
    BatchGet,
}

impl Kind {
    pub(crate) const ALL: [Kind; 17] = [
        Kind::QueryConfig,
        Kind::ListApps,
        Kind::Get,
        Kind::Put,
        Kind::Remove,
        Kind::MultiGet,
        Kind::MultiPut,
        Kind::MultiRemove,
        Kind::Incr,
        Kind::CheckAndSet,
        Kind::CheckAndMutate,
        Kind::SortKeyCount,
        Kind::Ttl,
        Kind::GetScanner,
        Kind::Scan,
        Kind::ClearScanner,
        Kind::BatchGet,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::QueryConfig => RPC_QUERY_CONFIG,
            Kind::ListApps => RPC_LIST_APPS,
            Kind::Get => RPC_GET,
            Kind::Put => RPC_PUT,
            Kind::Remove => RPC_REMOVE,
            Kind::MultiGet => RPC_MULTI_GET,
            Kind::MultiPut => RPC_MULTI_PUT,
            Kind::MultiRemove => RPC_MULTI_REMOVE,
            Kind::Incr => RPC_INCR,
            Kind::CheckAndSet => RPC_CHECK_AND_SET,
            Kind::CheckAndMutate => RPC_CHECK_AND_MUTATE,
            Kind::SortKeyCount => RPC_SORTKEY_COUNT,
            Kind::Ttl => RPC_TTL,
            Kind::GetScanner => RPC_GET_SCANNER,
            Kind::Scan => RPC_SCAN,
            Kind::ClearScanner => RPC_CLEAR_SCANNER,
            Kind::BatchGet => RPC_BATCH_GET,
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|kind| kind.name() == name)
    }
}

/// Whether a call named `name` gets a reply: every RPC but
/// `RPC_RRDB_RRDB_CLEAR_SCANNER`, which Pegasus never answers (clients have
/// no reply handler for it), not even with an error.
pub fn expects_reply(name: &str) -> bool {
    name != RPC_CLEAR_SCANNER
}

/// The RPCs Markab understands, by Pegasus task-code name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rpc {
    /// `RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX` (`query_cfg_request`).
    /// Clients send no indices and expect every partition.
    QueryConfig {
        app_name: String,
        partition_indices: Vec<i32>,
    },
    /// `RPC_CM_LIST_APPS` (`configuration_list_apps_request {1 status}`;
    /// 0 = `AS_INVALID` = every table).
    ListApps { status: i32 },
    /// `RPC_RRDB_RRDB_*`, translated into Markab's request (see the module
    /// documentation for the mapping).
    Data(Request),
}

/// A decoded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The RPC's name (one of the `RPC_*` constants).
    pub name: &'static str,
    pub seqid: i32,
    pub rpc: Rpc,
}

/// Why a body could not be served. `name`/`seqid` are set when the message
/// header was readable, so the server can answer with `error_name`
/// (`ERR_HANDLER_NOT_FOUND` for an unknown name, `ERR_INVALID_PARAMETERS`
/// for bad args); when `name` is `None` the stream is untrustworthy and the
/// server closes the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub name: Option<String>,
    pub seqid: i32,
    pub error_name: &'static str,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.name.as_deref().unwrap_or("?"),
            self.error_name,
            self.message
        )
    }
}

impl std::error::Error for CallError {}

/// The readable message header of a call: its name and seqid.
fn read_call_header<'a>(reader: &mut Reader<'a>) -> Result<(&'a str, i32), CallError> {
    let unreadable = |message: String| CallError {
        name: None,
        seqid: 0,
        error_name: ERR_INVALID_DATA,
        message,
    };
    let begin = reader
        .read_message_begin()
        .map_err(|error| unreadable(error.to_string()))?;
    if begin.kind != MESSAGE_CALL && begin.kind != MESSAGE_ONEWAY {
        return Err(unreadable(format!(
            "message type {} is not a call",
            begin.kind
        )));
    }
    let name = std::str::from_utf8(begin.name)
        .map_err(|_| unreadable("the RPC name is not UTF-8".to_string()))?;
    // Its reply's name (this one and "_ACK") must fit the same bound.
    if name.len() + REPLY_NAME_SUFFIX.len() > MESSAGE_NAME_BYTES_MAX {
        return Err(unreadable(format!(
            "an RPC name of {} bytes has no reply name within {MESSAGE_NAME_BYTES_MAX}",
            name.len()
        )));
    }
    Ok((name, begin.seqid))
}

/// The name and seqid of a call body, when its message header is readable
/// (for answering a call the server will not decode, for example one over
/// its size bound).
pub fn peek_call(body: &[u8]) -> Option<(String, i32)> {
    let (name, seqid) = read_call_header(&mut Reader::new(body)).ok()?;
    Some((name.to_string(), seqid))
}

/// Server side: decodes a call body. TTLs arrive as absolute expire times
/// in seconds since 2016-01-01 and become Markab's relative TTLs against
/// `now_epoch2016_seconds` (module documentation, "TTLs").
///
/// ```
/// use markab_wire::thrift::{decode_call, encode_data_call, Rpc};
/// use markab_wire::{Key, Request};
/// let request = Request::Get(Key::new("h", "s"));
/// let (_, body) = encode_data_call(7, &request, 0).unwrap();
/// let call = decode_call(&body, 0).unwrap();
/// assert_eq!((call.name, call.seqid), ("RPC_RRDB_RRDB_GET", 7));
/// assert_eq!(call.rpc, Rpc::Data(request));
/// ```
pub fn decode_call(body: &[u8], now_epoch2016_seconds: u32) -> Result<Call, CallError> {
    let mut reader = Reader::new(body);
    let (name, seqid) = read_call_header(&mut reader)?;
    let Some(kind) = Kind::from_name(name) else {
        let message = format!("no handler for RPC {name:?}");
        return Err(CallError {
            name: Some(name.to_string()),
            seqid,
            error_name: ERR_HANDLER_NOT_FOUND,
            message,
        });
    };
    let name = kind.name();
    match read_args(&mut reader, kind, now_epoch2016_seconds) {
        Ok(rpc) => Ok(Call { name, seqid, rpc }),
        Err(error) => Err(CallError {
            name: Some(name.to_string()),
            seqid,
            error_name: ERR_INVALID_PARAMETERS,
            message: error.to_string(),
        }),
    }
}

/// The args struct: its first field is the request, whatever its id; later
/// fields are skipped; the struct must end with STOP.
fn read_args(reader: &mut Reader<'_>, kind: Kind, now_epoch2016_seconds: u32) -> DecodeResult<Rpc> {
    let Some((arg_type, _)) = reader.read_field_header()? else {
        return reader.error("the call carries no request");
    };
    let rpc = match kind {
        Kind::QueryConfig => read_query_config_request(reader, arg_type)?,
        Kind::ListApps => read_list_apps_request(reader, arg_type)?,
        _ => Rpc::Data(rrdb::read_request(
            reader,
            kind,
            arg_type,
            now_epoch2016_seconds,
        )?),
    };
    while let Some((field_type, _)) = reader.read_field_header()? {
        reader.skip(field_type, 1)?;
    }
    Ok(rpc)
}

fn expect_type(reader: &Reader<'_>, actual: u8, expected: u8, what: &str) -> DecodeResult<()> {
    if actual != expected {
        return reader.error(format!(
            "{what} has Thrift type {actual}, expected {expected}"
        ));
    }
    Ok(())
}

/// `query_cfg_request {1 app_name string, 2 partition_indices list<i32>}`.
fn read_query_config_request(reader: &mut Reader<'_>, arg_type: u8) -> DecodeResult<Rpc> {
    expect_type(reader, arg_type, T_STRUCT, "query_cfg_request")?;
    let mut app_name = String::new();
    let mut partition_indices = Vec::new();
    reader.read_struct(1, |reader, id, ttype| {
        match (id, ttype) {
            (1, T_STRING) => app_name = reader.read_string()?,
            (2, T_LIST) => {
                let (element_type, count) = reader.read_list_header()?;
                expect_type(reader, element_type, T_I32, "partition_indices element")?;
                partition_indices = vec_for(count);
                for _ in 0..count {
                    partition_indices.push(reader.read_i32()?);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Rpc::QueryConfig {
        app_name,
        partition_indices,
    })
}

/// `configuration_list_apps_request {1 status app_status}`.
fn read_list_apps_request(reader: &mut Reader<'_>, arg_type: u8) -> DecodeResult<Rpc> {
    expect_type(
        reader,
        arg_type,
        T_STRUCT,
        "configuration_list_apps_request",
    )?;
    let mut status = 0;
    reader.read_struct(1, |reader, id, ttype| {
        if (id, ttype) == (1, T_I32) {
            status = reader.read_i32()?;
            return Ok(true);
        }
        Ok(false)
    })?;
    Ok(Rpc::ListApps { status })
}

/// Starts a call body: the message header and the args struct's field 1
/// header of type `arg_type`.
pub(crate) fn begin_call(name: &str, seqid: i32, arg_type: u8, capacity: usize) -> Writer {
    let mut writer = Writer::with_capacity(capacity + name.len() + 24);
    writer.write_message_begin(name, MESSAGE_CALL, seqid);
    writer.write_field(arg_type, 1);
    writer
}

/// Ends a call body: the args struct's STOP.
pub(crate) fn end_call(mut writer: Writer) -> Vec<u8> {
    writer.write_stop();
    writer.bytes
}

/// Client side: the call body of the Pegasus RPC that carries `request`,
/// and that RPC's name. TTLs become absolute expire times against
/// `now_epoch2016_seconds`. `Exist` is sent as `RPC_RRDB_RRDB_TTL`, as
/// Pegasus's clients do; requests Pegasus has no RPC for (routing, meta,
/// replication) are refused with `InvalidArgument`.
pub fn encode_data_call(
    seqid: i32,
    request: &Request,
    now_epoch2016_seconds: u32,
) -> Result<(&'static str, Vec<u8>), OpError> {
    rrdb::encode_request(seqid, request, now_epoch2016_seconds)
}

/// Client side: the call body of `RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX`
/// for every partition of `app_name` (an empty index list, as every client
/// sends).
pub fn encode_query_config_call(seqid: i32, app_name: &str) -> Vec<u8> {
    let mut writer = begin_call(RPC_QUERY_CONFIG, seqid, T_STRUCT, app_name.len() + 16);
    writer.field_string(1, app_name);
    writer.write_field(T_LIST, 2);
    writer.write_list(T_I32, 0);
    writer.write_stop();
    end_call(writer)
}

/// Client side: the call body of `RPC_CM_LIST_APPS` for tables of `status`
/// (0 = every table).
pub fn encode_list_apps_call(seqid: i32, status: i32) -> Vec<u8> {
    let mut writer = begin_call(RPC_LIST_APPS, seqid, T_STRUCT, 16);
    writer.field_i32(1, status);
    writer.write_stop();
    end_call(writer)
}
