//! Meta's structs: `query_cfg_response` with its `partition_configuration`s
//! and `configuration_list_apps_response` with its `app_info`s, written from
//! what Markab's meta knows and read back in full (field numbers of
//! Pegasus's `idl/dsn.layer2.thrift` and `idl/meta_admin.thrift`).
//!
//! rDSN placeholders inside them: `error_code` is a string, `gpid` an i64
//! `(partition_index << 32) | (u32)app_id`, `rpc_address` an i64
//! `ipv4 << 32 | port << 16 | 1` (0 = none), each under a T_STRUCT field or
//! list-element header. The newer optional `hp_*` fields are not written.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::binary::{
    vec_for, DecodeResult, Reader, Writer, T_BOOL, T_I32, T_I64, T_LIST, T_MAP, T_STRING, T_STRUCT,
};

/// `app_status` values.
pub const APP_STATUS_INVALID: i32 = 0;
pub const APP_STATUS_AVAILABLE: i32 = 1;
pub const APP_STATUS_DROPPED: i32 = 6;

/// The `app_type` of every Markab table.
pub const APP_TYPE: &str = "pegasus";

/// rDSN's type tag of an IPv4 `rpc_address` (its low two bits).
const RPC_ADDRESS_IPV4: u64 = 1;
const RPC_ADDRESS_TYPE_MASK: u64 = 0b11;

/// Depth of the structs inside a meta response (the result struct is 1).
const RESPONSE_DEPTH: usize = 2;
const ELEMENT_DEPTH: usize = 3;

/// One partition as meta describes it to clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionConfiguration {
    pub app_id: i32,
    pub partition_index: i32,
    pub ballot: i64,
    pub max_replica_count: i32,
    /// `None` is written as the invalid address 0.
    pub primary: Option<SocketAddrV4>,
    pub secondaries: Vec<SocketAddrV4>,
    pub last_committed_decree: i64,
}

/// Meta's answer to `RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX`: written with
/// RPC-level `ERR_OK`, the outcome in `err`. `is_stateful` is written true,
/// `last_drops` empty and `partition_flags` 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryConfigReply {
    /// `"ERR_OK"`, `"ERR_OBJECT_NOT_FOUND"` (unknown table) or
    /// `"ERR_FORWARD_TO_OTHERS"` (not the leader: the leader, when known,
    /// is `partitions[0].primary`).
    pub err: &'static str,
    pub app_id: i32,
    pub partition_count: i32,
    pub partitions: Vec<PartitionConfiguration>,
}

/// A table as `RPC_CM_LIST_APPS` lists it. The other `app_info` fields are
/// written with defaults: `status` from `available` (`AS_AVAILABLE` or
/// `AS_DROPPED`), `app_type` "pegasus", `is_stateful` true, the three
/// timestamps 0, `init_partition_count` = `partition_count`; the optional
/// flags are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppInfo {
    pub app_id: i32,
    pub app_name: String,
    pub partition_count: i32,
    pub max_replica_count: i32,
    pub available: bool,
    pub envs: Vec<(String, String)>,
}

/// A `partition_configuration` as read back, every field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionConfigurationResult {
    pub app_id: i32,
    pub partition_index: i32,
    pub ballot: i64,
    pub max_replica_count: i32,
    /// `None` for the invalid address (0) or an address that is not IPv4.
    pub primary: Option<SocketAddrV4>,
    /// IPv4 addresses only: invalid ones are dropped.
    pub secondaries: Vec<SocketAddrV4>,
    pub last_drops: Vec<SocketAddrV4>,
    pub last_committed_decree: i64,
    pub partition_flags: i32,
}

/// A `query_cfg_response` as read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryConfigResult {
    pub err: String,
    pub app_id: i32,
    pub partition_count: i32,
    pub is_stateful: bool,
    pub partitions: Vec<PartitionConfigurationResult>,
}

/// An `app_info` as read back, every field (optional ones as `Option`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppInfoResult {
    pub status: i32,
    pub app_type: String,
    pub app_name: String,
    pub app_id: i32,
    pub partition_count: i32,
    pub envs: Vec<(String, String)>,
    pub is_stateful: bool,
    pub max_replica_count: i32,
    pub expire_second: i64,
    pub create_second: i64,
    pub drop_second: i64,
    pub duplicating: Option<bool>,
    pub init_partition_count: i32,
    pub is_bulk_loading: Option<bool>,
    pub atomic_idempotent: Option<bool>,
}

/// The rDSN `rpc_address` of `address`; 0 for none.
pub fn rpc_address_of(address: Option<SocketAddrV4>) -> u64 {
    match address {
        Some(address) => {
            (u64::from(u32::from(*address.ip())) << 32)
                | (u64::from(address.port()) << 16)
                | RPC_ADDRESS_IPV4
        }
        None => 0,
    }
}

/// The IPv4 address an rDSN `rpc_address` holds; `None` for 0 and for any
/// other type.
pub fn socket_address_of(rpc_address: u64) -> Option<SocketAddrV4> {
    if rpc_address & RPC_ADDRESS_TYPE_MASK != RPC_ADDRESS_IPV4 {
        return None;
    }
    let ip = Ipv4Addr::from((rpc_address >> 32) as u32);
    let port = ((rpc_address >> 16) & 0xFFFF) as u16;
    Some(SocketAddrV4::new(ip, port))
}

/// The rDSN `gpid` of a partition.
pub fn gpid_of(app_id: i32, partition_index: i32) -> i64 {
    (i64::from(partition_index) << 32) | i64::from(app_id as u32)
}

/// `(app_id, partition_index)` of an rDSN `gpid`.
pub fn parts_of_gpid(gpid: i64) -> (i32, i32) {
    ((gpid & 0xFFFF_FFFF) as u32 as i32, (gpid >> 32) as i32)
}

// ---- writing ----------------------------------------------------------------

fn write_address_list(writer: &mut Writer, id: i16, addresses: &[SocketAddrV4]) {
    writer.write_field(T_LIST, id);
    writer.write_list(T_STRUCT, addresses.len());
    for address in addresses {
        writer.write_i64(rpc_address_of(Some(*address)) as i64);
    }
}

/// The fields of a `query_cfg_response` (without its STOP).
pub(crate) fn write_query_config_response(writer: &mut Writer, reply: &QueryConfigReply) {
    writer.write_field(T_STRUCT, 1);
    writer.write_binary(reply.err.as_bytes());
    writer.field_i32(2, reply.app_id);
    writer.field_i32(3, reply.partition_count);
    writer.field_bool(4, true);
    writer.write_field(T_LIST, 5);
    writer.write_list(T_STRUCT, reply.partitions.len());
    for partition in &reply.partitions {
        writer.write_field(T_STRUCT, 1);
        writer.write_i64(gpid_of(partition.app_id, partition.partition_index));
        writer.field_i64(2, partition.ballot);
        writer.field_i32(3, partition.max_replica_count);
        writer.write_field(T_STRUCT, 4);
        writer.write_i64(rpc_address_of(partition.primary) as i64);
        write_address_list(writer, 5, &partition.secondaries);
        write_address_list(writer, 6, &[]);
        writer.field_i64(7, partition.last_committed_decree);
        writer.field_i32(8, 0);
        writer.write_stop();
    }
}

/// The fields of a `configuration_list_apps_response` (without its STOP).
pub(crate) fn write_list_apps_response(writer: &mut Writer, err: &str, apps: &[AppInfo]) {
    writer.write_field(T_STRUCT, 1);
    writer.write_binary(err.as_bytes());
    writer.write_field(T_LIST, 2);
    writer.write_list(T_STRUCT, apps.len());
    for app in apps {
        let status = if app.available {
            APP_STATUS_AVAILABLE
        } else {
            APP_STATUS_DROPPED
        };
        writer.field_i32(1, status);
        writer.field_string(2, APP_TYPE);
        writer.field_string(3, &app.app_name);
        writer.field_i32(4, app.app_id);
        writer.field_i32(5, app.partition_count);
        writer.write_field(T_MAP, 6);
        writer.write_map(T_STRING, T_STRING, app.envs.len());
        for (key, value) in &app.envs {
            writer.write_binary(key.as_bytes());
            writer.write_binary(value.as_bytes());
        }
        writer.field_bool(7, true);
        writer.field_i32(8, app.max_replica_count);
        writer.field_i64(9, 0);
        writer.field_i64(10, 0);
        writer.field_i64(11, 0);
        writer.field_i32(13, app.partition_count);
        writer.write_stop();
    }
}

// ---- reading ----------------------------------------------------------------

fn is_placeholder_i64(ttype: u8) -> bool {
    ttype == T_STRUCT || ttype == T_I64
}

fn is_placeholder_string(ttype: u8) -> bool {
    ttype == T_STRUCT || ttype == T_STRING
}

fn read_address_list(reader: &mut Reader<'_>) -> DecodeResult<Vec<SocketAddrV4>> {
    let (element_type, count) = reader.read_list_header()?;
    if !is_placeholder_i64(element_type) {
        return reader.error(format!("address list of element type {element_type}"));
    }
    let mut addresses = vec_for(count);
    for _ in 0..count {
        if let Some(address) = socket_address_of(reader.read_i64()? as u64) {
            addresses.push(address);
        }
    }
    Ok(addresses)
}

fn read_partition_configuration(
    reader: &mut Reader<'_>,
) -> DecodeResult<PartitionConfigurationResult> {
    let mut partition = PartitionConfigurationResult::default();
    reader.read_struct(ELEMENT_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_placeholder_i64(t) => {
                (partition.app_id, partition.partition_index) = parts_of_gpid(reader.read_i64()?)
            }
            (2, T_I64) => partition.ballot = reader.read_i64()?,
            (3, T_I32) => partition.max_replica_count = reader.read_i32()?,
            (4, t) if is_placeholder_i64(t) => {
                partition.primary = socket_address_of(reader.read_i64()? as u64)
            }
            (5, T_LIST) => partition.secondaries = read_address_list(reader)?,
            (6, T_LIST) => partition.last_drops = read_address_list(reader)?,
            (7, T_I64) => partition.last_committed_decree = reader.read_i64()?,
            (8, T_I32) => partition.partition_flags = reader.read_i32()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(partition)
}

/// A `query_cfg_response` (the struct's fields and STOP).
pub(crate) fn read_query_config_response(
    reader: &mut Reader<'_>,
) -> DecodeResult<QueryConfigResult> {
    let mut result = QueryConfigResult::default();
    reader.read_struct(RESPONSE_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_placeholder_string(t) => result.err = reader.read_string()?,
            (2, T_I32) => result.app_id = reader.read_i32()?,
            (3, T_I32) => result.partition_count = reader.read_i32()?,
            (4, T_BOOL) => result.is_stateful = reader.read_bool()?,
            (5, T_LIST) => {
                let (element_type, count) = reader.read_list_header()?;
                if element_type != T_STRUCT {
                    return reader.error(format!("partition list of element type {element_type}"));
                }
                result.partitions = vec_for(count);
                for _ in 0..count {
                    result
                        .partitions
                        .push(read_partition_configuration(reader)?);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(result)
}

fn read_app_info(reader: &mut Reader<'_>) -> DecodeResult<AppInfoResult> {
    let mut app = AppInfoResult::default();
    reader.read_struct(ELEMENT_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, T_I32) => app.status = reader.read_i32()?,
            (2, T_STRING) => app.app_type = reader.read_string()?,
            (3, T_STRING) => app.app_name = reader.read_string()?,
            (4, T_I32) => app.app_id = reader.read_i32()?,
            (5, T_I32) => app.partition_count = reader.read_i32()?,
            (6, T_MAP) => {
                let (key_type, value_type, count) = reader.read_map_header()?;
                if (key_type, value_type) != (T_STRING, T_STRING) {
                    return reader.error(format!("envs map of types {key_type}/{value_type}"));
                }
                app.envs = vec_for(count);
                for _ in 0..count {
                    let key = reader.read_string()?;
                    let value = reader.read_string()?;
                    app.envs.push((key, value));
                }
            }
            (7, T_BOOL) => app.is_stateful = reader.read_bool()?,
            (8, T_I32) => app.max_replica_count = reader.read_i32()?,
            (9, T_I64) => app.expire_second = reader.read_i64()?,
            (10, T_I64) => app.create_second = reader.read_i64()?,
            (11, T_I64) => app.drop_second = reader.read_i64()?,
            (12, T_BOOL) => app.duplicating = Some(reader.read_bool()?),
            (13, T_I32) => app.init_partition_count = reader.read_i32()?,
            (14, T_BOOL) => app.is_bulk_loading = Some(reader.read_bool()?),
            (15, T_BOOL) => app.atomic_idempotent = Some(reader.read_bool()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(app)
}

/// A `configuration_list_apps_response`: `(err, apps)`.
pub(crate) fn read_list_apps_response(
    reader: &mut Reader<'_>,
) -> DecodeResult<(String, Vec<AppInfoResult>)> {
    let mut err = String::new();
    let mut apps = Vec::new();
    reader.read_struct(RESPONSE_DEPTH, |reader, id, ttype| {
        match (id, ttype) {
            (1, t) if is_placeholder_string(t) => err = reader.read_string()?,
            (2, T_LIST) => {
                let (element_type, count) = reader.read_list_header()?;
                if element_type != T_STRUCT {
                    return reader.error(format!("app list of element type {element_type}"));
                }
                apps = vec_for(count);
                for _ in 0..count {
                    apps.push(read_app_info(reader)?);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((err, apps))
}
