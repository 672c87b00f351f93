//! What the driver runs against: a [`Target`] per connection, for Markab
//! (through meta or a standalone node) and Redis (a small RESP client);
//! etcd is reserved in the URL syntax but not built yet.
//!
//! Record mapping (docs/bench.md, "Target mappings"): a YCSB record is a
//! key with `field_count` fields. In Markab the key is the hash key and each
//! field a sort key; in Redis the record is a hash. A YCSB scan reads the
//! records following the start key in key order; neither store keeps
//! records ordered across hash keys, so both targets read the `scan_length`
//! records with consecutive key numbers from the start key number — the
//! same number of records and bytes as YCSB, not the same records.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{try_join_all, BoxFuture};
use markab_wire::{MultiGetRequest, SortKeyValue};
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

/// Why an operation or a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target URL is malformed or names an unknown scheme.
    #[error("bad target {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The scheme is known but not built yet.
    #[error("unsupported target {0}: not built yet (see docs/bench.md)")]
    Unsupported(String),
    /// The Markab client failed.
    #[error(transparent)]
    Markab(#[from] ClientError),
    /// A read found no record.
    #[error("record not found")]
    NotFound,
    /// Redis answered with an error reply.
    #[error("redis error: {0}")]
    Redis(String),
    /// The connection failed or timed out.
    #[error("i/o: {0}")]
    Io(String),
    /// The peer sent something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl TargetError {
    /// The code an error is counted under in reports: Markab's wire code
    /// name, `NOT_FOUND`, `REDIS_<WORD>` or a transport class.
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
            TargetError::Io(_) => "IO".into(),
            TargetError::Protocol(_) => "PROTOCOL".into(),
            TargetError::BadUrl { .. } | TargetError::Unsupported(_) => "CONFIG".into(),
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

    /// Writes a new record with all its fields.
    fn insert<'a>(
        &'a self,
        key: &'a [u8],
        fields: &'a [(Vec<u8>, Vec<u8>)],
    ) -> BoxFuture<'a, Result<(), TargetError>>;

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
    /// `etcd://HOST:PORT` (not built yet).
    Etcd(String),
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
            _ => Err(bad(
                "unknown scheme (markab, markab-node, redis or etcd expected)",
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
        }
    }

    /// Opens one connection's target. `table` is used by Markab only;
    /// `in_flight` sizes Markab's per-connection request bound.
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
            TargetUrl::Etcd(address) => Err(TargetError::Unsupported(format!("etcd://{address}"))),
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
        let mut request = MultiGetRequest::range(key.to_vec());
        request.max_kv_count = 0;
        request.max_kv_size = 0;
        Ok(self.table.multi_get(request).await?.kvs.len())
    }

    async fn write(&self, key: &[u8], fields: &[(Vec<u8>, Vec<u8>)]) -> Result<(), TargetError> {
        match fields {
            [] => Err(TargetError::Protocol("a write needs a field".into())),
            [(field, value)] => Ok(self.table.set(key, field, value, 0).await?),
            _ => {
                let kvs = fields
                    .iter()
                    .map(|(field, value)| SortKeyValue {
                        sort_key: field.clone(),
                        value: value.clone(),
                    })
                    .collect();
                Ok(self.table.multi_set(key, kvs, 0).await?)
            }
        }
    }
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

    fn insert<'a>(
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

    fn insert<'a>(
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

    // Proves opening an etcd target fails with a clear "unsupported" error.
    #[tokio::test]
    async fn etcd_is_unsupported() {
        let url = TargetUrl::parse("etcd://127.0.0.1:2379").unwrap();
        let error = url.open("t", 1).await.err().unwrap();
        assert!(error.to_string().contains("unsupported target"), "{error}");
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
