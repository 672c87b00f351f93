//! What the driver runs against: a [`Target`] per connection, for Markab
//! (through meta or a standalone node), Redis (a small RESP client) and etcd
//! (its v3 KV API as JSON over HTTP/1.1, the grpc-gateway).
//!
//! Record mapping (docs/bench.md, "Target mappings"): a YCSB record is a
//! key with `field_count` fields. In Markab the key is the hash key and each
//! field a sort key; in Redis the record is a hash; in etcd each field is
//! its own key `key/field`, and a whole record is one range over `key/`. A
//! YCSB scan reads the records following the start key in key order; the
//! targets read the `scan_length` records with consecutive key numbers from
//! the start key number — the same number of records and bytes as YCSB, not
//! the same records.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures::future::{try_join_all, BoxFuture};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use markab_wire::{MultiGetRequest, SortKeyValue};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::client::{Client, ClientError, ClientOptions, Table};

/// Most bytes of one RESP reply the Redis client accepts.
pub const RESP_REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most elements of one RESP array reply.
pub const RESP_ARRAY_ELEMENTS_MAX: usize = 1 << 20;
/// Bound on connecting to a target.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one operation against Redis.
pub const REDIS_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one HTTP request to etcd, from taking a connection to the last
/// byte of the reply.
pub const ETCD_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of one etcd JSON reply.
pub const ETCD_REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most operations in one etcd transaction: etcd's default `--max-txn-ops`.
/// A record with more fields cannot be inserted atomically and is refused.
pub const ETCD_TXN_OPS_MAX: usize = 128;
/// Most HTTP connections one etcd target keeps open: one per request in
/// flight (`--in-flight`, itself at most 256).
pub const ETCD_CONNECTIONS_MAX: usize = 256;

/// Why an operation or a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target URL is malformed or names an unknown scheme.
    #[error("bad target {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The Markab client failed.
    #[error(transparent)]
    Markab(#[from] ClientError),
    /// A read found no record.
    #[error("record not found")]
    NotFound,
    /// Redis answered with an error reply.
    #[error("redis error: {0}")]
    Redis(String),
    /// etcd answered with an error: `code` is the gRPC status name
    /// (`RESOURCE_EXHAUSTED`, ...) or `HTTP_<status>` when it gave none.
    #[error("etcd error {code}: {message}")]
    Etcd { code: String, message: String },
    /// The connection failed or timed out.
    #[error("i/o: {0}")]
    Io(String),
    /// The peer sent something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl TargetError {
    /// The code an error is counted under in reports: Markab's wire code
    /// name, `NOT_FOUND`, `REDIS_<WORD>`, `ETCD_<CODE>` or a transport
    /// class.
    pub fn code(&self) -> String {
        match self {
            TargetError::Markab(error) => match error.code() {
                Some(code) => code.name().to_string(),
                None => match error {
                    ClientError::Connect { .. } => "CONNECT".into(),
                    ClientError::Io(_) => "IO".into(),
                    ClientError::Protocol(_) => "PROTOCOL".into(),
                    ClientError::Closed => "CLOSED".into(),
                    _ => "CLIENT".into(),
                },
            },
            TargetError::NotFound => "NOT_FOUND".into(),
            TargetError::Redis(message) => {
                let word = message.split_whitespace().next().unwrap_or("ERR");
                format!("REDIS_{word}")
            }
            TargetError::Etcd { code, .. } => format!("ETCD_{code}"),
            TargetError::Io(_) => "IO".into(),
            TargetError::Protocol(_) => "PROTOCOL".into(),
            TargetError::BadUrl { .. } => "CONFIG".into(),
        }
    }
}

/// One connection's worth of a store, shared by the connection's in-flight
/// requests. Keys and field names are YCSB's; values are opaque bytes.
pub trait Target: Send + Sync {
    /// Reads `fields` of record `key`; all fields when `fields` is empty.
    /// A missing record is [`TargetError::NotFound`].
    fn read<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<(), TargetError>>;

    /// Writes `fields` of an existing record.
    fn update<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [(Vec<u8>, Vec<u8>)],
    ) -> BoxFuture<'a, Result<(), TargetError>>;

    /// Writes a new record with all its fields. Every target writes a whole
    /// record the way it writes fields (atomically within the record), so
    /// this defaults to [`Target::update`].
    fn insert<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [(Vec<u8>, Vec<u8>)],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        self.update(key, fields)
    }

    /// Reads every field of each record in `keys` (the records a scan
    /// covers, see the module docs). Missing records are not an error.
    fn scan<'a>(&'a self, keys: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), TargetError>>;

    /// Reads all fields of `key`, then writes `fields` (YCSB's
    /// read-modify-write: timed as one operation).
    fn read_modify_write<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [(Vec<u8>, Vec<u8>)],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            self.read(key, &[]).await?;
            self.update(key, fields).await
        })
    }
}

/// A parsed `--target` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetUrl {
    /// `markab://META[,META...]`: a cluster through its meta servers.
    MarkabMeta(Vec<String>),
    /// `markab-node://ADDR`: a standalone node.
    MarkabNode(String),
    /// `redis://HOST:PORT`.
    Redis(String),
    /// `etcd://HOST:PORT`: etcd's v3 KV API over its JSON gateway.
    Etcd(String),
    /// `pegasus://META[,META...]`: a Markab cluster (or a standalone node)
    /// through Pegasus's client protocol.
    Pegasus(Vec<String>),
}

impl TargetUrl {
    /// Parses a target URL.
    pub fn parse(url: &str) -> Result<TargetUrl, TargetError> {
        let bad = |reason: &str| TargetError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected SCHEME://HOST:PORT"))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(bad("no address"));
        }
        let addresses: Vec<String> = rest.split(',').map(|a| a.trim().to_string()).collect();
        if addresses.iter().any(|address| !address.contains(':')) {
            return Err(bad("every address needs HOST:PORT"));
        }
        let single = || {
            if addresses.len() == 1 {
                Ok(addresses[0].clone())
            } else {
                Err(bad("this scheme takes one address"))
            }
        };
        match scheme {
            "markab" => Ok(TargetUrl::MarkabMeta(addresses.clone())),
            "markab-node" => Ok(TargetUrl::MarkabNode(single()?)),
            "redis" => Ok(TargetUrl::Redis(single()?)),
            "etcd" => Ok(TargetUrl::Etcd(single()?)),
            "pegasus" => Ok(TargetUrl::Pegasus(addresses.clone())),
            _ => Err(bad(
                "unknown scheme (markab, markab-node, pegasus, redis or etcd expected)",
            )),
        }
    }

    /// The scheme, as in the URL.
    pub fn scheme(&self) -> &'static str {
        match self {
            TargetUrl::MarkabMeta(_) => "markab",
            TargetUrl::MarkabNode(_) => "markab-node",
            TargetUrl::Redis(_) => "redis",
            TargetUrl::Etcd(_) => "etcd",
            TargetUrl::Pegasus(_) => "pegasus",
        }
    }

    /// Opens one connection's target. `table` is used by Markab only;
    /// `in_flight` sizes Markab's per-connection request bound and etcd's
    /// HTTP connection pool.
    pub async fn open(
        &self,
        table: &str,
        in_flight: usize,
    ) -> Result<Arc<dyn Target>, TargetError> {
        let options = ClientOptions {
            in_flight_max: in_flight.max(1),
            ..ClientOptions::default()
        };
        match self {
            TargetUrl::MarkabMeta(metas) => {
                let client = Client::connect_meta(metas, options).await?;
                Ok(Arc::new(MarkabTarget::open(client, table).await?))
            }
            TargetUrl::MarkabNode(address) => {
                let client = Client::connect(address, options).await?;
                Ok(Arc::new(MarkabTarget::open(client, table).await?))
            }
            TargetUrl::Redis(address) => Ok(Arc::new(RedisTarget::connect(address).await?)),
            TargetUrl::Etcd(address) => {
                Ok(Arc::new(EtcdTarget::connect(address, in_flight).await?))
            }
            TargetUrl::Pegasus(metas) => Ok(Arc::new(
                super::pegasus::PegasusTarget::open(metas, table).await?,
            )),
        }
    }
}

/// Markab: record key → hash key, field name → sort key, field → value.
pub struct MarkabTarget {
    client: Client,
    table: Table,
}

impl MarkabTarget {
    /// Opens `table` on `client`.
    pub async fn open(client: Client, table: &str) -> Result<MarkabTarget, TargetError> {
        let table = client.open_table(table).await?;
        Ok(MarkabTarget { client, table })
    }

    /// The client (for cluster queries in the report header).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The open table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    async fn read_all(&self, key: &[u8]) -> Result<usize, TargetError> {
        Ok(self.table.multi_get(whole_record(key)).await?.kvs.len())
    }

    async fn write(&self, key: &[u8], fields: &[(Vec<u8>, Vec<u8>)]) -> Result<(), TargetError> {
        match fields {
            [] => Err(TargetError::Protocol("a write needs a field".into())),
            [(field, value)] => Ok(self.table.set(key, field, value, 0).await?),
            _ => Ok(self
                .table
                .multi_set(key, sort_key_values(fields), 0)
                .await?),
        }
    }
}

/// A multi_get of every sort key of `key`, without count or size limits: a
/// whole record.
pub(super) fn whole_record(key: &[u8]) -> MultiGetRequest {
    let mut request = MultiGetRequest::range(key.to_vec());
    request.max_kv_count = 0;
    request.max_kv_size = 0;
    request
}

/// A record's fields as sort keys and values.
pub(super) fn sort_key_values(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<SortKeyValue> {
    fields
        .iter()
        .map(|(field, value)| SortKeyValue {
            sort_key: field.clone(),
            value: value.clone(),
        })
        .collect()
}

impl Target for MarkabTarget {
    fn read<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let found = if fields.is_empty() {
                self.read_all(key).await?
            } else {
                self.table
                    .multi_get_sort_keys(key, fields.to_vec())
                    .await?
                    .kvs
                    .len()
            };
            if found == 0 {
                return Err(TargetError::NotFound);
            }
            Ok(())
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [(Vec<u8>, Vec<u8>)],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(self.write(key, fields))
    }

    fn scan<'a>(&'a self, keys: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            try_join_all(keys.iter().map(|key| self.read_all(key))).await?;
            Ok(())
        })
    }
}

/// A RESP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespValue {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<RespValue>>),
}

/// Encodes a command as a RESP array of bulk strings.
pub fn resp_encode(parts: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
}

async fn read_line<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    budget: &mut usize,
) -> Result<Vec<u8>, TargetError> {
    let mut line = Vec::new();
    loop {
        let byte = reader
            .read_u8()
            .await
            .map_err(|error| TargetError::Io(error.to_string()))?;
        if byte == b'\n' && line.last() == Some(&b'\r') {
            line.pop();
            return Ok(line);
        }
        line.push(byte);
        if line.len() > *budget {
            return Err(TargetError::Protocol(
                "RESP line over the reply bound".into(),
            ));
        }
    }
}

fn parse_length(line: &[u8]) -> Result<i64, TargetError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| TargetError::Protocol(format!("bad RESP length {line:?}")))
}

/// Reads one RESP2 reply, spending at most `budget` bytes (see
/// [`RESP_REPLY_BYTES_MAX`]).
pub fn resp_read<'a, R: AsyncReadExt + Unpin + Send>(
    reader: &'a mut R,
    budget: &'a mut usize,
) -> BoxFuture<'a, Result<RespValue, TargetError>> {
    Box::pin(async move {
        let line = read_line(reader, budget).await?;
        *budget = budget.saturating_sub(line.len() + 2);
        let (kind, body) = line
            .split_first()
            .ok_or_else(|| TargetError::Protocol("empty RESP line".into()))?;
        let text = || String::from_utf8_lossy(body).into_owned();
        match kind {
            b'+' => Ok(RespValue::Simple(text())),
            b'-' => Ok(RespValue::Error(text())),
            b':' => Ok(RespValue::Integer(parse_length(body)?)),
            b'$' => {
                let length = parse_length(body)?;
                if length < 0 {
                    return Ok(RespValue::Bulk(None));
                }
                let length = length as usize;
                if length + 2 > *budget {
                    return Err(TargetError::Protocol(format!(
                        "RESP bulk of {length} bytes over the reply bound"
                    )));
                }
                let mut data = vec![0; length + 2];
                reader
                    .read_exact(&mut data)
                    .await
                    .map_err(|error| TargetError::Io(error.to_string()))?;
                *budget -= length + 2;
                if !data.ends_with(b"\r\n") {
                    return Err(TargetError::Protocol("RESP bulk without CRLF".into()));
                }
                data.truncate(length);
                Ok(RespValue::Bulk(Some(data)))
            }
            b'*' => {
                let count = parse_length(body)?;
                if count < 0 {
                    return Ok(RespValue::Array(None));
                }
                if count as usize > RESP_ARRAY_ELEMENTS_MAX {
                    return Err(TargetError::Protocol(format!(
                        "RESP array of {count} elements over {RESP_ARRAY_ELEMENTS_MAX}"
                    )));
                }
                let mut elements = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    elements.push(resp_read(reader, budget).await?);
                }
                Ok(RespValue::Array(Some(elements)))
            }
            other => Err(TargetError::Protocol(format!(
                "unknown RESP type byte {other:#x}"
            ))),
        }
    })
}

type Pending = VecDeque<oneshot::Sender<Result<RespValue, TargetError>>>;

/// Redis over one pipelined connection: a record is a hash (`HSET`,
/// `HGETALL`, `HMGET`); replies are matched to requests in order.
pub struct RedisTarget {
    writer: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    pending: Arc<Mutex<Pending>>,
    reader_task: tokio::task::JoinHandle<()>,
}

impl Drop for RedisTarget {
    fn drop(&mut self) {
        self.reader_task.abort();
    }
}

fn lock_pending(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RedisTarget {
    /// Connects to Redis at `address` (`host:port`).
    pub async fn connect(address: &str) -> Result<RedisTarget, TargetError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| TargetError::Io(format!("connect to {address} timed out")))?
            .map_err(|error| TargetError::Io(format!("connect to {address}: {error}")))?;
        stream
            .set_nodelay(true)
            .map_err(|error| TargetError::Io(error.to_string()))?;
        let (read_half, write_half) = stream.into_split();
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let reader_pending = pending.clone();
        let reader_task = tokio::spawn(async move {
            let mut reader = BufReader::new(read_half);
            loop {
                let mut budget = RESP_REPLY_BYTES_MAX;
                let reply = resp_read(&mut reader, &mut budget).await;
                let failed = reply.is_err();
                let waiter = lock_pending(&reader_pending).pop_front();
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
                if failed {
                    // The stream is out of step: fail everything waiting.
                    for waiter in lock_pending(&reader_pending).drain(..) {
                        let _ = waiter.send(Err(TargetError::Io("connection failed".into())));
                    }
                    return;
                }
            }
        });
        Ok(RedisTarget {
            writer: tokio::sync::Mutex::new(write_half),
            pending,
            reader_task,
        })
    }

    /// Sends `commands` back to back and returns their replies in order.
    pub async fn call_many(&self, commands: &[Vec<u8>]) -> Result<Vec<RespValue>, TargetError> {
        let mut receivers = Vec::with_capacity(commands.len());
        {
            let mut writer = self.writer.lock().await;
            if self.reader_task.is_finished() {
                return Err(TargetError::Io("connection closed".into()));
            }
            let mut bytes = Vec::new();
            for command in commands {
                let (sender, receiver) = oneshot::channel();
                lock_pending(&self.pending).push_back(sender);
                receivers.push(receiver);
                bytes.extend_from_slice(command);
            }
            writer
                .write_all(&bytes)
                .await
                .map_err(|error| TargetError::Io(error.to_string()))?;
        }
        let replies = async {
            let mut replies = Vec::with_capacity(receivers.len());
            for receiver in receivers {
                let reply = receiver
                    .await
                    .map_err(|_| TargetError::Io("connection closed".into()))??;
                if let RespValue::Error(message) = reply {
                    return Err(TargetError::Redis(message));
                }
                replies.push(reply);
            }
            Ok(replies)
        };
        tokio::time::timeout(REDIS_OPERATION_TIMEOUT, replies)
            .await
            .map_err(|_| TargetError::Io("redis operation timed out".into()))?
    }

    async fn call(&self, parts: &[&[u8]]) -> Result<RespValue, TargetError> {
        let mut command = Vec::new();
        resp_encode(parts, &mut command);
        let mut replies = self.call_many(&[command]).await?;
        replies
            .pop()
            .ok_or_else(|| TargetError::Protocol("no reply".into()))
    }

    async fn hset(&self, key: &[u8], fields: &[(Vec<u8>, Vec<u8>)]) -> Result<(), TargetError> {
        let mut parts: Vec<&[u8]> = vec![b"HSET", key];
        for (field, value) in fields {
            parts.push(field);
            parts.push(value);
        }
        match self.call(&parts).await? {
            RespValue::Integer(_) | RespValue::Simple(_) => Ok(()),
            other => Err(TargetError::Protocol(format!("HSET answered {other:?}"))),
        }
    }
}

fn found_fields(reply: &RespValue) -> Result<usize, TargetError> {
    match reply {
        RespValue::Array(Some(elements)) => Ok(elements
            .iter()
            .filter(|element| !matches!(element, RespValue::Bulk(None)))
            .count()),
        RespValue::Array(None) => Ok(0),
        other => Err(TargetError::Protocol(format!(
            "expected an array, got {other:?}"
        ))),
    }
}

impl Target for RedisTarget {
    fn read<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let reply = if fields.is_empty() {
                self.call(&[b"HGETALL", key]).await?
            } else {
                let mut parts: Vec<&[u8]> = vec![b"HMGET", key];
                parts.extend(fields.iter().map(Vec::as_slice));
                self.call(&parts).await?
            };
            if found_fields(&reply)? == 0 {
                return Err(TargetError::NotFound);
            }
            Ok(())
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [(Vec<u8>, Vec<u8>)],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(self.hset(key, fields))
    }

    fn scan<'a>(&'a self, keys: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let commands: Vec<Vec<u8>> = keys
                .iter()
                .map(|key| {
                    let mut command = Vec::new();
                    resp_encode(&[b"HGETALL", key], &mut command);
                    command
                })
                .collect();
            for reply in self.call_many(&commands).await? {
                found_fields(&reply)?;
            }
            Ok(())
        })
    }
}

/// The gRPC status names, by code, that etcd's gateway puts in `"code"`.
const GRPC_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The etcd key of one field: `key/field` (docs/bench.md, "Target
/// mappings").
pub fn etcd_field_key(key: &[u8], field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1 + field.len());
    out.extend_from_slice(key);
    out.push(b'/');
    out.extend_from_slice(field);
    out
}

/// The `[start, end)` range that holds every field of record `key`: from
/// `key/` to `key0` (`/` + 1 = `0`).
pub fn etcd_record_range(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = key.to_vec();
    start.push(b'/');
    let mut end = key.to_vec();
    end.push(b'/' + 1);
    (start, end)
}

/// The error an etcd gateway reply with a non-200 status stands for.
fn etcd_error(status: u16, body: &[u8]) -> TargetError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|value| value.get("code"))
        .and_then(Value::as_u64)
        .and_then(|code| GRPC_CODE_NAMES.get(code as usize))
        .map(|name| name.to_string())
        .unwrap_or_else(|| format!("HTTP_{status}"));
    let message = parsed
        .as_ref()
        .and_then(|value| value.get("message").or_else(|| value.get("error")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    TargetError::Etcd { code, message }
}

/// The number of key-values in one range reply (`kvs` is absent when
/// empty, as protobuf's JSON leaves out empty fields).
fn etcd_range_count(reply: &Value) -> Result<usize, TargetError> {
    match reply.get("kvs") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Array(kvs)) => Ok(kvs.len()),
        Some(other) => Err(TargetError::Protocol(format!(
            "etcd range reply with kvs {other}"
        ))),
    }
}

/// The JSON body of a range over `[start, end)`; a point read when `end`
/// is `None`.
fn etcd_range_body(start: &[u8], end: Option<&[u8]>) -> Value {
    match end {
        Some(end) => json!({"key": BASE64.encode(start), "range_end": BASE64.encode(end)}),
        None => json!({"key": BASE64.encode(start)}),
    }
}

/// etcd through its v3 JSON gateway (`POST /v3/kv/put`, `/v3/kv/range`,
/// `/v3/kv/txn`) over a pool of keep-alive HTTP/1.1 connections, one per
/// request in flight (HTTP/1.1 answers one request at a time per
/// connection, so the pool is what lets `--in-flight` apply).
///
/// A field is the key `key/field`; an insert is one transaction of puts
/// (atomic, one raft entry and one fsync, like Markab's `multi_set` and
/// Redis's `HSET`); an update is one put; a whole-record read is one range
/// over `key/`.
pub struct EtcdTarget {
    address: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    permits: tokio::sync::Semaphore,
}

impl EtcdTarget {
    /// Connects to etcd's client URL at `address` (`host:port`, plain
    /// HTTP) with up to `in_flight` connections (1 to
    /// [`ETCD_CONNECTIONS_MAX`]), and checks that an etcd v3 gateway
    /// answers there.
    pub async fn connect(address: &str, in_flight: usize) -> Result<EtcdTarget, TargetError> {
        let connections = in_flight.clamp(1, ETCD_CONNECTIONS_MAX);
        let target = EtcdTarget {
            address: address.to_string(),
            idle: Mutex::new(Vec::with_capacity(connections)),
            permits: tokio::sync::Semaphore::new(connections),
        };
        let status = target.post("/v3/maintenance/status", &json!({})).await?;
        if status.get("header").is_none() {
            return Err(TargetError::Protocol(format!(
                "{address} is not an etcd v3 gateway: status answered {status}"
            )));
        }
        Ok(target)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<Full<Bytes>>>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn open_connection(&self) -> Result<SendRequest<Full<Bytes>>, TargetError> {
        let address = &self.address;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| TargetError::Io(format!("connect to {address} timed out")))?
            .map_err(|error| TargetError::Io(format!("connect to {address}: {error}")))?;
        stream
            .set_nodelay(true)
            .map_err(|error| TargetError::Io(error.to_string()))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|error| TargetError::Io(format!("HTTP handshake with {address}: {error}")))?;
        // The connection task ends when every sender is dropped or the
        // peer closes; its error then shows on the sender.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Posts `body` to `path` and returns the parsed JSON reply; a non-200
    /// status is [`TargetError::Etcd`].
    async fn post(&self, path: &str, body: &Value) -> Result<Value, TargetError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| TargetError::Io("etcd target closed".into()))?;
        let idle = {
            let mut idle = self.lock_idle();
            std::iter::from_fn(|| idle.pop()).find(|sender| !sender.is_closed())
        };
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, self.address.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|error| TargetError::Protocol(error.to_string()))?;
        let exchange = async {
            let mut sender = match idle {
                Some(sender) => sender,
                None => self.open_connection().await?,
            };
            let io = |error: hyper::Error| TargetError::Io(format!("etcd {path}: {error}"));
            sender.ready().await.map_err(io)?;
            let response = sender.send_request(request).await.map_err(io)?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), ETCD_REPLY_BYTES_MAX)
                .collect()
                .await
                .map_err(|error| TargetError::Io(format!("etcd {path} reply: {error}")))?
                .to_bytes();
            Ok::<_, TargetError>((sender, status, bytes))
        };
        // On a timeout the connection is dropped: its state is unknown.
        let (sender, status, bytes) = tokio::time::timeout(ETCD_OPERATION_TIMEOUT, exchange)
            .await
            .map_err(|_| TargetError::Io(format!("etcd {path} timed out")))??;
        if !sender.is_closed() {
            self.lock_idle().push(sender);
        }
        if status != hyper::StatusCode::OK {
            return Err(etcd_error(status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|error| TargetError::Protocol(format!("etcd {path} reply: {error}")))
    }

    /// Reads every field of `key` with one range; the number found.
    async fn read_all(&self, key: &[u8]) -> Result<usize, TargetError> {
        let (start, end) = etcd_record_range(key);
        let reply = self
            .post("/v3/kv/range", &etcd_range_body(&start, Some(&end)))
            .await?;
        etcd_range_count(&reply)
    }

    /// Reads `fields` of `key` in one transaction of point ranges.
    async fn read_fields(&self, key: &[u8], fields: &[Vec<u8>]) -> Result<usize, TargetError> {
        check_txn_ops(fields.len())?;
        let ranges: Vec<Value> = fields
            .iter()
            .map(|field| {
                json!({"request_range": etcd_range_body(&etcd_field_key(key, field), None)})
            })
            .collect();
        let reply = self
            .post("/v3/kv/txn", &json!({ "success": ranges }))
            .await?;
        let responses = match reply.get("responses") {
            Some(Value::Array(responses)) => responses.as_slice(),
            _ => &[],
        };
        if responses.len() != fields.len() {
            return Err(TargetError::Protocol(format!(
                "etcd txn answered {} of {} ranges",
                responses.len(),
                fields.len()
            )));
        }
        let mut found = 0;
        for response in responses {
            let range = response.get("response_range").ok_or_else(|| {
                TargetError::Protocol(format!("etcd txn response without a range: {response}"))
            })?;
            found += etcd_range_count(range)?;
        }
        Ok(found)
    }

    /// Writes `fields` of `key`: one put for one field, else one
    /// transaction of puts.
    async fn write(&self, key: &[u8], fields: &[(Vec<u8>, Vec<u8>)]) -> Result<(), TargetError> {
        let put = |(field, value): &(Vec<u8>, Vec<u8>)| json!({"key": BASE64.encode(etcd_field_key(key, field)), "value": BASE64.encode(value)});
        match fields {
            [] => Err(TargetError::Protocol("a write needs a field".into())),
            [single] => self.post("/v3/kv/put", &put(single)).await.map(drop),
            _ => {
                check_txn_ops(fields.len())?;
                let puts: Vec<Value> = fields
                    .iter()
                    .map(|field| json!({ "request_put": put(field) }))
                    .collect();
                self.post("/v3/kv/txn", &json!({ "success": puts }))
                    .await
                    .map(drop)
            }
        }
    }
}

fn check_txn_ops(count: usize) -> Result<(), TargetError> {
    if count > ETCD_TXN_OPS_MAX {
        return Err(TargetError::Etcd {
            code: "TOO_MANY_FIELDS".into(),
            message: format!(
                "{count} fields need {count} operations in one transaction; etcd allows \
                 {ETCD_TXN_OPS_MAX} by default"
            ),
        });
    }
    Ok(())
}

impl Target for EtcdTarget {
    fn read<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let found = if fields.is_empty() {
                self.read_all(key).await?
            } else {
                self.read_fields(key, fields).await?
            };
            if found == 0 {
                return Err(TargetError::NotFound);
            }
            Ok(())
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [(Vec<u8>, Vec<u8>)],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(self.write(key, fields))
    }

    fn scan<'a>(&'a self, keys: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            try_join_all(keys.iter().map(|key| self.read_all(key))).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokio::net::TcpListener;

    // Proves URL parsing accepts the four schemes and rejects malformed ones.
    #[test]
    fn parses_target_urls() {
        assert_eq!(
            TargetUrl::parse("markab://a:1,b:2").unwrap(),
            TargetUrl::MarkabMeta(vec!["a:1".into(), "b:2".into()])
        );
        assert_eq!(
            TargetUrl::parse("markab-node://127.0.0.1:5").unwrap(),
            TargetUrl::MarkabNode("127.0.0.1:5".into())
        );
        assert_eq!(
            TargetUrl::parse("redis://h:6379/").unwrap(),
            TargetUrl::Redis("h:6379".into())
        );
        assert_eq!(
            TargetUrl::parse("etcd://h:2379").unwrap(),
            TargetUrl::Etcd("h:2379".into())
        );
        for bad in [
            "h:1",
            "ftp://h:1",
            "redis://",
            "redis://a:1,b:2",
            "markab://host",
        ] {
            assert!(TargetUrl::parse(bad).is_err(), "{bad}");
        }
    }

    // Proves a record's fields map to `key/field` and that the record range
    // holds exactly its own fields, not those of a key it prefixes.
    #[test]
    fn etcd_key_mapping() {
        assert_eq!(
            etcd_field_key(b"user1", b"field0"),
            b"user1/field0".to_vec()
        );
        let (start, end) = etcd_record_range(b"user1");
        assert_eq!(
            (start.as_slice(), end.as_slice()),
            (&b"user1/"[..], &b"user10"[..])
        );
        let inside = |key: &[u8]| start.as_slice() <= key && key < end.as_slice();
        assert!(inside(b"user1/field0"));
        assert!(inside(b"user1/field9"));
        assert!(!inside(b"user10/field0"));
        assert!(!inside(b"user1"));
        assert!(!inside(b"user12/field0"));
    }

    // Proves gateway error replies are counted under their gRPC code name,
    // and under the HTTP status when the body carries no code.
    #[test]
    fn etcd_errors_carry_their_code() {
        let body = br#"{"error":"etcdserver: too many operations in txn request","code":3,"message":"etcdserver: too many operations in txn request"}"#;
        let error = etcd_error(400, body);
        assert_eq!(error.code(), "ETCD_INVALID_ARGUMENT");
        assert!(error.to_string().contains("too many operations"), "{error}");
        assert_eq!(etcd_error(502, b"bad gateway").code(), "ETCD_HTTP_502");
        assert_eq!(check_txn_ops(ETCD_TXN_OPS_MAX).ok(), Some(()));
        assert_eq!(
            check_txn_ops(ETCD_TXN_OPS_MAX + 1).unwrap_err().code(),
            "ETCD_TOO_MANY_FIELDS"
        );
    }

    // Proves opening an etcd target where nobody listens fails with a
    // connect error rather than hanging or panicking.
    #[tokio::test]
    async fn etcd_connect_failure_is_clear() {
        let url = TargetUrl::parse("etcd://127.0.0.1:1").unwrap();
        let error = url.open("t", 1).await.err().unwrap();
        assert!(error.to_string().contains("connect"), "{error}");
        assert_eq!(error.code(), "IO");
    }

    type Store = Arc<Mutex<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>>;

    fn fake_range(store: &Store, request: &Value) -> Value {
        let decode = |name: &str| {
            request
                .get(name)
                .and_then(Value::as_str)
                .map(|text| BASE64.decode(text).unwrap())
        };
        let start = decode("key").unwrap();
        let store = store.lock().unwrap();
        let kvs: Vec<Value> = match decode("range_end") {
            Some(end) => store
                .range(start..end)
                .map(|(k, v)| json!({"key": BASE64.encode(k), "value": BASE64.encode(v)}))
                .collect(),
            None => store
                .get(&start)
                .map(|v| json!({"key": BASE64.encode(&start), "value": BASE64.encode(v)}))
                .into_iter()
                .collect(),
        };
        if kvs.is_empty() {
            json!({"header": {}})
        } else {
            json!({"header": {}, "count": kvs.len().to_string(), "kvs": kvs})
        }
    }

    /// Answers `(status, body)` for one gateway request, like etcd 3.4.
    fn fake_etcd_answer(store: &Store, path: &str, request: &Value) -> (u16, Value) {
        let put = |request: &Value| {
            let field = |name: &str| BASE64.decode(request[name].as_str().unwrap()).unwrap();
            let key = field("key");
            if key.starts_with(b"big") {
                return Err(
                    json!({"error": "etcdserver: request is too large", "code": 3,
                    "message": "etcdserver: request is too large"}),
                );
            }
            store.lock().unwrap().insert(key, field("value"));
            Ok(json!({"header": {}}))
        };
        match path {
            "/v3/maintenance/status" => (200, json!({"header": {}, "version": "3.4.23"})),
            "/v3/kv/put" => match put(request) {
                Ok(reply) => (200, reply),
                Err(error) => (400, error),
            },
            "/v3/kv/range" => (200, fake_range(store, request)),
            "/v3/kv/txn" => {
                let mut responses = Vec::new();
                for op in request["success"].as_array().unwrap() {
                    if let Some(range) = op.get("request_range") {
                        responses.push(json!({"response_range": fake_range(store, range)}));
                    } else {
                        put(&op["request_put"]).unwrap();
                        responses.push(json!({"response_put": {"header": {}}}));
                    }
                }
                (
                    200,
                    json!({"header": {}, "succeeded": true, "responses": responses}),
                )
            }
            _ => (
                404,
                json!({"error": "Not Found", "code": 5, "message": "Not Found"}),
            ),
        }
    }

    /// A minimal etcd JSON gateway over keep-alive HTTP/1.1; returns its
    /// address, its store and a count of accepted connections.
    async fn fake_etcd() -> (String, Store, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::AsyncBufReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let store: Store = Arc::default();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (server_store, server_accepted) = (store.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                server_accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let store = server_store.clone();
                tokio::spawn(async move {
                    let (read_half, mut write_half) = stream.into_split();
                    let mut reader = BufReader::new(read_half);
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = request_line.split_whitespace().nth(1).unwrap().to_string();
                        let mut length = 0;
                        loop {
                            let mut line = String::new();
                            reader.read_line(&mut line).await.unwrap();
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap();
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).await.unwrap();
                        let request: Value = serde_json::from_slice(&body).unwrap();
                        let (status, reply) = fake_etcd_answer(&store, &path, &request);
                        let reply = reply.to_string();
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\n\r\n",
                            reply.len()
                        );
                        write_half.write_all(head.as_bytes()).await.unwrap();
                        write_half.write_all(reply.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (address, store, accepted)
    }

    // Proves the etcd target stores a record as one key per field, reads it
    // back with one range (all fields) or a transaction (some fields),
    // reports a missing record as NOT_FOUND, scans without failing on
    // missing records, counts a gateway error under its gRPC code, and keeps
    // at most `in_flight` pooled connections under 40 concurrent requests.
    #[tokio::test]
    async fn etcd_target_against_fake_gateway() {
        let (address, store, accepted) = fake_etcd().await;
        let target = EtcdTarget::connect(&address, 3).await.unwrap();
        let fields = vec![
            (b"field0".to_vec(), b"v0".to_vec()),
            (b"field1".to_vec(), b"v1".to_vec()),
        ];
        target.insert(b"user1", &fields).await.unwrap();
        assert_eq!(
            store.lock().unwrap().keys().cloned().collect::<Vec<_>>(),
            vec![b"user1/field0".to_vec(), b"user1/field1".to_vec()]
        );
        target.read(b"user1", &[]).await.unwrap();
        target.read(b"user1", &[b"field1".to_vec()]).await.unwrap();
        assert_eq!(
            target
                .read(b"user1", &[b"field7".to_vec()])
                .await
                .unwrap_err()
                .code(),
            "NOT_FOUND"
        );
        assert_eq!(
            target.read(b"user12", &[]).await.unwrap_err().code(),
            "NOT_FOUND"
        );
        target
            .read_modify_write(b"user1", &[(b"field0".to_vec(), b"v2".to_vec())])
            .await
            .unwrap();
        assert_eq!(
            store.lock().unwrap()[&b"user1/field0".to_vec()],
            b"v2".to_vec()
        );
        target
            .scan(&[b"user1".to_vec(), b"user2".to_vec()])
            .await
            .unwrap();
        let error = target.update(b"big", &fields[..1]).await.unwrap_err();
        assert_eq!(error.code(), "ETCD_INVALID_ARGUMENT", "{error}");
        let keys: Vec<Vec<u8>> = (0..40).map(|n| format!("user{n}").into_bytes()).collect();
        try_join_all(keys.iter().map(|key| target.insert(key, &fields)))
            .await
            .unwrap();
        assert_eq!(
            store.lock().unwrap().len(),
            80,
            "user1 was rewritten, not added"
        );
        let opened = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=3).contains(&opened), "{opened} connections");
    }

    // Proves the RESP reader decodes every RESP2 type and enforces its bound.
    #[tokio::test]
    async fn resp_round_trip_and_bounds() {
        let bytes =
            b"+OK\r\n-ERR bad\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\nx\r\n:1\r\n".to_vec();
        let mut reader = std::io::Cursor::new(bytes);
        let mut budget = RESP_REPLY_BYTES_MAX;
        let mut values = Vec::new();
        for _ in 0..6 {
            values.push(resp_read(&mut reader, &mut budget).await.unwrap());
        }
        assert_eq!(
            values,
            vec![
                RespValue::Simple("OK".into()),
                RespValue::Error("ERR bad".into()),
                RespValue::Integer(42),
                RespValue::Bulk(Some(b"abc".to_vec())),
                RespValue::Bulk(None),
                RespValue::Array(Some(vec![
                    RespValue::Bulk(Some(b"x".to_vec())),
                    RespValue::Integer(1)
                ])),
            ]
        );
        let mut reader = std::io::Cursor::new(b"$100\r\n".to_vec());
        let mut budget = 50;
        assert!(matches!(
            resp_read(&mut reader, &mut budget).await,
            Err(TargetError::Protocol(_))
        ));
        let mut encoded = Vec::new();
        resp_encode(&[b"HGETALL", b"k"], &mut encoded);
        assert_eq!(encoded, b"*2\r\n$7\r\nHGETALL\r\n$1\r\nk\r\n".to_vec());
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    /// A minimal in-memory Redis speaking HSET/HGETALL/HMGET, one
    /// connection.
    async fn fake_redis() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read_half, mut write_half) = stream.into_split();
            let mut reader = BufReader::new(read_half);
            let mut data: HashMap<Vec<u8>, Fields> = HashMap::new();
            loop {
                let mut budget = RESP_REPLY_BYTES_MAX;
                let Ok(RespValue::Array(Some(parts))) = resp_read(&mut reader, &mut budget).await
                else {
                    return;
                };
                let parts: Vec<Vec<u8>> = parts
                    .into_iter()
                    .map(|part| match part {
                        RespValue::Bulk(Some(bytes)) => bytes,
                        _ => Vec::new(),
                    })
                    .collect();
                let mut reply = Vec::new();
                match parts[0].as_slice() {
                    b"HSET" => {
                        let entry = data.entry(parts[1].clone()).or_default();
                        for pair in parts[2..].chunks(2) {
                            entry.retain(|(field, _)| field != &pair[0]);
                            entry.push((pair[0].clone(), pair[1].clone()));
                        }
                        reply.extend_from_slice(b":1\r\n");
                    }
                    b"HGETALL" => {
                        let fields = data.get(&parts[1]).cloned().unwrap_or_default();
                        let mut flat: Vec<&[u8]> = Vec::new();
                        for (field, value) in &fields {
                            flat.push(field);
                            flat.push(value);
                        }
                        resp_encode(&flat, &mut reply);
                    }
                    _ => reply.extend_from_slice(b"-ERR unknown command\r\n"),
                }
                write_half.write_all(&reply).await.unwrap();
            }
        });
        address
    }

    // Proves the Redis target writes records as hashes, reads them back,
    // reports a missing record as NOT_FOUND, pipelines a scan, and counts a
    // Redis error reply under its error word.
    #[tokio::test]
    async fn redis_target_against_fake_server() {
        let address = fake_redis().await;
        let target = RedisTarget::connect(&address).await.unwrap();
        let fields = vec![
            (b"field0".to_vec(), b"v0".to_vec()),
            (b"field1".to_vec(), b"v1".to_vec()),
        ];
        target.insert(b"user1", &fields).await.unwrap();
        target.read(b"user1", &[]).await.unwrap();
        let missing = target.read(b"user2", &[]).await.unwrap_err();
        assert_eq!(missing.code(), "NOT_FOUND");
        target
            .read_modify_write(b"user1", &fields[..1])
            .await
            .unwrap();
        target
            .scan(&[b"user1".to_vec(), b"user2".to_vec()])
            .await
            .unwrap();
        let error = target
            .read(b"user1", &[b"field0".to_vec()])
            .await
            .unwrap_err();
        assert_eq!(error.code(), "REDIS_ERR");
    }
}
